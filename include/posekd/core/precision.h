// Compute precision: fp32 everywhere, or bf16 convolutions where the CPU has bf16 matrix units.
//
// `--precision auto|fp32|bf16`. auto picks bf16 only when the CPU has bf16 units (Intel AMX
// `amx_bf16`, or `avx512_bf16` on Intel and AMD Zen 4): there oneDNN runs bf16 convolutions several
// times faster than fp32. Where bf16 would only be emulated (AVX-512 without the bf16 instructions)
// it is slower than fp32, so auto never picks it; an explicit `bf16` is still allowed there (for
// correctness checks) and needs AVX-512 BW/VL/DQ, which oneDNN's bf16 path requires.
//
// The precision in effect for the student's convolutions is thread-local (PrecisionScope); the
// teacher carries its own (TeacherOptions::precision). Integer inference and export never look at it.
#pragma once
#include <string>

namespace posekd {

enum class Precision { fp32, bf16 };

// "fp32" / "bf16".
const char* precision_name(Precision p);

// The CPU features the precision choice depends on.
struct CpuFeatures {
  bool amx_bf16 = false;     // Intel AMX bf16 tiles (amx_bf16 + amx_tile)
  bool avx512_bf16 = false;  // AVX512-BF16 dot products (vdpbf16ps)
  bool avx512_core = false;  // avx512f + bw + vl + dq: what oneDNN needs to run bf16 at all (emulated)
  std::string model;         // CPU model name ("" if unknown)
  bool bf16_units() const { return amx_bf16 || avx512_bf16; }
  // "amx_bf16 avx512_bf16", "avx512 (bf16 emulated)" or "no avx512" (the relevant flags, for logs).
  std::string flags() const;
};

// Parses /proc/cpuinfo text (the first processor's "flags" and "model name" lines).
CpuFeatures cpu_features_from_cpuinfo(const std::string& text);
// This machine's features: /proc/cpuinfo, or CPUID when it cannot be read. Computed once.
const CpuFeatures& cpu_features();

// The precision a choice resolves to on a CPU with features `f`:
//   "fp32" -> fp32; "bf16" -> bf16 (posekd::Error if the CPU lacks AVX-512 BW/VL/DQ);
//   "auto" -> bf16 iff f.bf16_units(), else fp32.
// Anything else -> posekd::Error naming the flag and the accepted values. `what` names the flag.
Precision resolve_precision(const std::string& choice, const CpuFeatures& f, const std::string& what = "--precision");
Precision resolve_precision(const std::string& choice, const std::string& what = "--precision");

// One line for logs: "precision bf16 (auto; Intel(R) Xeon(R) ..., amx_bf16 avx512_bf16)".
std::string describe_precision(Precision p, const std::string& choice, const CpuFeatures& f);
std::string describe_precision(Precision p, const std::string& choice);

// Thread-local precision of the student's convolutions (ai8x::Layer reads it). fp32 by default.
Precision compute_precision();
// Sets the thread's compute precision for its lifetime, restores the previous one on exit.
class PrecisionScope {
 public:
  explicit PrecisionScope(Precision p);
  ~PrecisionScope();
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  Precision previous_;
};

}  // namespace posekd
