// `posekd demo`: the whole pipeline on synthetic people, from nothing: data, a teacher trained from
// scratch, a MAX78000 student distilled from it with QAT, a student trained on the same budget
// without the teacher, COCO AP for all of them (float, QAT, int8 in the chip's arithmetic), the
// ai8x-synthesis export, prediction pictures and results.csv/results.png.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace posekd::train {

struct DemoOptions {
  std::string out = "demo-out";
  bool quick = false;   // ~2 minutes (used by the test suite)
  int threads = 0;      // 0 = all cores
  std::uint64_t seed = 1;
  bool quiet = false;   // no per-batch lines on the console
};

struct DemoRow {
  std::string model;
  std::array<double, 10> stats{};  // pycocotools' 10 numbers
};

struct DemoResult {
  std::vector<DemoRow> rows;
  std::string table_markdown;
  bool export_fits = false;
  double seconds = 0;
};

DemoResult run_demo(const DemoOptions& o);

}  // namespace posekd::train
