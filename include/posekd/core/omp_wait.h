// How LibTorch's OpenMP (libgomp) threads wait between parallel regions, chosen at start-up.
//
// A step of the student runs hundreds of short parallel regions. Between them libgomp's threads
// either spin (fast hand-over, but a spinning thread holds its core) or sleep on a futex (a
// wake-up per region). Measured on 2 cores (docs/performance.md): on an idle machine a short spin
// (GOMP_SPINCOUNT=10000) trains the seed student ~15% faster than sleeping; with another job on
// the cores, sleeping (OMP_WAIT_POLICY=PASSIVE) is 1.5x faster than the short spin and 10x faster
// than libgomp's default long spin. libgomp reads these variables when it is loaded, so the
// program decides before anything else and re-executes itself once (src/cli/main.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace posekd {

// Aggregate CPU time from the first ("cpu ") line of /proc/stat, in clock ticks.
struct CpuTimes {
  std::uint64_t busy = 0;   // user + nice + system + irq + softirq + steal
  std::uint64_t total = 0;  // busy + idle + iowait
};
std::optional<CpuTimes> parse_proc_stat(const std::string& text);
// Cores kept busy between two samples (0 .. ncores).
double busy_cores(const CpuTimes& before, const CpuTimes& after, int ncores);

struct OmpWaitChoice {
  std::string name, value;  // the environment variable to set
  std::string reason;       // for the logs
};
// The rule: below this many busy cores (other programs) the machine counts as idle.
constexpr double kIdleBusyCores = 0.25;
OmpWaitChoice choose_omp_wait(double busy_other_cores);

// The environment decides if the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT (nullopt). Otherwise
// /proc/stat is sampled for `sample_ms` (nothing else of ours runs meanwhile, so what is busy is
// someone else) and the choice is returned; without /proc/stat: passive.
std::optional<OmpWaitChoice> decide_omp_wait(int sample_ms = 100);
// Environment variable the program sets, with the reason, for logs after the re-execution.
constexpr const char* kOmpWaitReasonEnv = "POSEKD_OMP_WAIT";
// One line for logs: what libgomp was given and why ("OMP_WAIT_POLICY=PASSIVE (set by posekd: ...)",
// "GOMP_SPINCOUNT=500 (set by the user)", "libgomp defaults").
std::string omp_wait_description();

}  // namespace posekd
