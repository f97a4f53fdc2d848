#include "posekd/core/precision.h"

#include <cpuid.h>

#include <fstream>
#include <set>
#include <sstream>

#include "posekd/core/error.h"

namespace posekd {

namespace {

std::string trim_ws(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

CpuFeatures features_from_flags(const std::set<std::string>& fl, std::string model) {
  CpuFeatures f;
  auto has = [&](const char* n) { return fl.count(n) > 0; };
  f.amx_bf16 = has("amx_bf16") && has("amx_tile");
  f.avx512_bf16 = has("avx512_bf16");
  f.avx512_core = has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512dq");
  f.model = std::move(model);
  return f;
}

// CPUID fallback (no /proc/cpuinfo): leaf 7 subleaf 0/1, and XCR0 for the OS-enabled state.
CpuFeatures features_from_cpuid() {
  std::set<std::string> fl;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27))) {  // OSXSAVE
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const bool avx512_os = (lo & 0xe6) == 0xe6;           // opmask, ZMM hi/lo, YMM, XMM
    const bool amx_os = (lo & (3u << 17)) == (3u << 17);  // XTILECFG, XTILEDATA
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      if (avx512_os) {
        if (b & (1u << 16)) fl.insert("avx512f");
        if (b & (1u << 17)) fl.insert("avx512dq");
        if (b & (1u << 30)) fl.insert("avx512bw");
        if (b & (1u << 31)) fl.insert("avx512vl");
      }
      if (amx_os) {
        if (d & (1u << 22)) fl.insert("amx_bf16");
        if (d & (1u << 24)) fl.insert("amx_tile");
      }
    }
    if (avx512_os && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) fl.insert("avx512_bf16");
  }
  return features_from_flags(fl, "");
}

thread_local Precision t_compute_precision = Precision::fp32;

}  // namespace

const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

std::string CpuFeatures::flags() const {
  std::string s;
  if (amx_bf16) s += "amx_bf16";
  if (avx512_bf16) s += std::string(s.empty() ? "" : " ") + "avx512_bf16";
  if (!s.empty()) return s;
  return avx512_core ? "avx512 without bf16 units (bf16 emulated)" : "no avx512 (no bf16)";
}

CpuFeatures cpu_features_from_cpuinfo(const std::string& text) {
  std::istringstream in(text);
  std::string line, model;
  std::set<std::string> fl;
  bool have_flags = false;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = trim_ws(line.substr(0, colon)), val = trim_ws(line.substr(colon + 1));
    if (key == "model name" && model.empty()) model = val;
    if (key == "flags" && !have_flags) {
      std::istringstream fs(val);
      std::string w;
      while (fs >> w) fl.insert(w);
      have_flags = true;
    }
    if (have_flags && !model.empty()) break;
  }
  return features_from_flags(fl, model);
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    std::ifstream in("/proc/cpuinfo");
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      if (ss.str().find("flags") != std::string::npos) return cpu_features_from_cpuinfo(ss.str());
    }
    return features_from_cpuid();
  }();
  return f;
}

Precision resolve_precision(const std::string& choice, const CpuFeatures& f, const std::string& what) {
  if (choice == "fp32") return Precision::fp32;
  if (choice == "auto") return f.bf16_units() ? Precision::bf16 : Precision::fp32;
  if (choice == "bf16") {
    if (!f.bf16_units() && !f.avx512_core)
      throw Error(what +
                  " bf16: this CPU has neither bf16 units (amx_bf16, avx512_bf16) nor AVX-512 "
                  "BW/VL/DQ to emulate them; use fp32");
    return Precision::bf16;
  }
  throw Error(what + ": unknown precision '" + choice + "' (expected auto, fp32 or bf16)");
}

Precision resolve_precision(const std::string& choice, const std::string& what) {
  return resolve_precision(choice, cpu_features(), what);
}

std::string describe_precision(Precision p, const std::string& choice, const CpuFeatures& f) {
  std::string s = std::string("precision ") + precision_name(p) + " (" + choice;
  if (!f.model.empty()) s += "; " + f.model;
  s += "; " + f.flags();
  if (p == Precision::bf16 && !f.bf16_units()) s += "; bf16 emulated, slower than fp32";
  return s + ")";
}

std::string describe_precision(Precision p, const std::string& choice) {
  return describe_precision(p, choice, cpu_features());
}

Precision compute_precision() { return t_compute_precision; }

PrecisionScope::PrecisionScope(Precision p) : previous_(t_compute_precision) { t_compute_precision = p; }
PrecisionScope::~PrecisionScope() { t_compute_precision = previous_; }

}  // namespace posekd
