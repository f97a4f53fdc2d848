#include "posekd/core/omp_wait.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "posekd/core/threads.h"

namespace posekd {

std::optional<CpuTimes> parse_proc_stat(const std::string& text) {
  std::istringstream in(text);
  std::string label;
  if (!(in >> label) || label != "cpu") return std::nullopt;
  std::uint64_t f[8] = {};  // user nice system idle iowait irq softirq steal
  int got = 0;
  for (; got < 8 && (in >> f[got]); ++got) {
  }
  if (got < 4) return std::nullopt;  // very old kernels stop after idle
  CpuTimes t;
  t.busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
  t.total = t.busy + f[3] + f[4];
  return t;
}

double busy_cores(const CpuTimes& before, const CpuTimes& after, int ncores) {
  if (after.total <= before.total || after.busy < before.busy) return 0.0;
  const double frac = static_cast<double>(after.busy - before.busy) / static_cast<double>(after.total - before.total);
  return frac * ncores;
}

OmpWaitChoice choose_omp_wait(double busy_other_cores) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", busy_other_cores);
  if (busy_other_cores < kIdleBusyCores)
    return {"GOMP_SPINCOUNT", "10000", std::string("set by posekd: the cores were idle at start, ") + buf + " busy"};
  return {"OMP_WAIT_POLICY", "PASSIVE",
          std::string("set by posekd: other programs kept ") + buf + " cores busy at start"};
}

namespace {
std::optional<CpuTimes> read_proc_stat() {
  std::ifstream f("/proc/stat");
  if (!f) return std::nullopt;
  std::string line;
  std::getline(f, line);
  return parse_proc_stat(line);
}
}  // namespace

std::optional<OmpWaitChoice> decide_omp_wait(int sample_ms) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return std::nullopt;
  const auto a = read_proc_stat();
  std::this_thread::sleep_for(std::chrono::milliseconds(sample_ms));
  const auto b = read_proc_stat();
  if (!a || !b) return OmpWaitChoice{"OMP_WAIT_POLICY", "PASSIVE", "set by posekd: /proc/stat unreadable"};
  return choose_omp_wait(busy_cores(*a, *b, hardware_threads()));
}

std::string omp_wait_description() {
  const char* reason = std::getenv(kOmpWaitReasonEnv);
  std::string out;
  for (const char* name : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}) {
    if (const char* v = std::getenv(name)) {
      if (!out.empty()) out += ", ";
      out += std::string(name) + "=" + v;
    }
  }
  if (out.empty()) return "libgomp defaults";
  return out + " (" + (reason ? std::string(reason) : std::string("set by the user")) + ")";
}

}  // namespace posekd
