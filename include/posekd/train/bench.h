// `posekd bench`: the figures of docs/performance.md measured in one run, each next to the
// machine's convolution peak measured in the same run.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace posekd::model {
class Student;
}
namespace at {
class Tensor;
}

namespace posekd::train {

// Runs f repeatedly for at least `seconds` after one warm-up call (and at least `min_calls`
// times); returns seconds per call. What every figure of `posekd bench` is timed with.
double seconds_per_call(const std::function<void()>& f, double seconds, int min_calls = 3);

// Fuses the student's BatchNorms and calibrates its QAT phase (ai8x's default policy) on two
// passes of `batch`: the QAT state the benchmark's QAT steps run in.
void fuse_and_calibrate_on(model::Student& student, const at::Tensor& batch);

struct BenchOptions {
  int threads = 0;       // 0 = all cores
  double seconds = 3.0;  // minimum time per figure
  std::string arch = "seed";
  bool quick = false;       // fewer repetitions (tests)
  std::string work_dir;     // scratch folder for generated JPEGs ("" = a temp dir)
  std::string profile_dir;  // "": no profile; else Chrome traces of 5 float and 5 QAT steps go here
};

// One operator's share of a profiled run: time in the operator itself (children excluded), time
// including its children, and the number of calls.
struct OpTime {
  std::string name;
  double self_us = 0, total_us = 0;
  long long calls = 0;
};
// Self times from a Chrome trace (LibTorch's RecordProfile output), largest first.
std::vector<OpTime> self_times_from_trace(const std::string& trace_json);

struct BenchFigure {
  std::string name;
  double value = 0;   // in `unit`
  std::string unit;   // "img/s", "samples/s", "GFLOP/s", "h"
  double gflops = 0;  // achieved GFLOP/s where meaningful (0 otherwise)
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
