// `posekd bench --precision bf16`: the bf16 figures next to the same figures in fp32, measured in
// one run: conv peak (fp32 NCHW / NHWC, bf16 NHWC with a bf16 or an fp32 destination), the teacher
// forward at 368, the student's float and QAT training steps under train::AmpGuard, and the
// projected seed job. docs/performance.md.
#pragma once
#include <string>
#include <vector>

#include "posekd/core/precision.h"

namespace posekd::train {

struct PrecisionBenchOptions {
  int threads = 0;       // 0 = all cores
  double seconds = 3.0;  // minimum time per figure
  std::string arch = "seed";
  bool quick = false;       // short run (tests)
  std::string profile_dir;  // "": no profile; else Chrome traces of 5 bf16 float and QAT steps go here
};

struct PrecisionBenchRow {
  std::string name;
  std::string unit;  // "GFLOP/s", "img/s", "h"
  double fp32 = 0;   // the figure computed in fp32
  double bf16 = 0;   // the same figure in bf16 (mixed precision for training steps)
};

struct PrecisionBenchReport {
  int threads = 0;
  std::vector<PrecisionBenchRow> rows;
  std::string text() const;  // a markdown table with the bf16 / fp32 ratio
};

// Needs a CPU that can run oneDNN's bf16 convolutions (posekd::Error otherwise).
PrecisionBenchReport run_precision_bench(const PrecisionBenchOptions& o);

}  // namespace posekd::train
