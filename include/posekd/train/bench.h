// `posekd bench`: the figures of docs/performance.md measured in one run, each next to the
// machine's convolution peak measured in the same run.
#pragma once
#include <string>
#include <vector>

namespace posekd::train {

struct BenchOptions {
  int threads = 0;        // 0 = all cores
  double seconds = 3.0;   // minimum time per figure
  std::string arch = "seed";
  bool quick = false;     // fewer repetitions (tests)
  std::string work_dir;   // scratch folder for generated JPEGs ("" = a temp dir)
};

struct BenchFigure {
  std::string name;
  double value = 0;       // in `unit`
  std::string unit;       // "img/s", "samples/s", "GFLOP/s", "h"
  double gflops = 0;      // achieved GFLOP/s where meaningful (0 otherwise)
  double fraction_of_peak = 0;
};

struct BenchReport {
  int threads = 0;
  double conv_peak_gflops = 0;
  std::vector<BenchFigure> figures;
  std::string text() const;  // a markdown table
};

BenchReport run_bench(const BenchOptions& o);

}  // namespace posekd::train
