// `posekd demo`: the whole pipeline on synthetic people, from nothing: data, a teacher trained from
// scratch, a MAX78000 student distilled from it with QAT, a student trained on the same budget
// without the teacher, COCO AP for all of them (float, QAT, int8 in the chip's arithmetic), the
// ai8x-synthesis export, prediction pictures and results.csv/results.png.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "posekd/data/augment.h"
#include "posekd/data/synth.h"

namespace posekd::train {

// What the demo spends its minutes on. demo_budget() gives the presets; a field of DemoOptions'
// overrides that is > 0 (>= 0 for teacher_stages) replaces the preset's value.
struct DemoBudget {
  int train_images = 0, val_images = 0;
  int teacher_batches = 0, student_batches = 0;
  int teacher_batch = 0, student_batch = 0;  // images per batch
  double teacher_lr = 0, student_lr = 0;     // Adam
  double student_qat_lr = 0;                 // Adam learning rate after the QAT switch
  int teacher_warmup = 0;                    // teacher lr warm-up batches (then cosine decay)
  int teacher_stages = -1;                   // teacher refinement stages
  double qat_fraction = 0;                   // QAT switches on at this fraction of the student batches
};

// The preset: full (<= 10 minutes on 2 cores) or quick (<= 2 minutes, used by the tests). With
// `hard` (--hard-data, the accuracy benchmark) the full preset draws 6,000 training images and
// trains the teacher 2,400 batches: the hard people need more data and steps (docs/accuracy.md).
DemoBudget demo_budget(bool quick, bool hard = false);

// The demo's synthetic people: easier than `posekd synth`'s defaults (1-2 larger people, little
// clutter, no crowds), so that minutes of CPU training learn something measurable.
data::SynthConfig demo_synth_config(int images, std::uint64_t seed);

struct DemoOptions {
  std::string out = "demo-out";
  bool quick = false;              // ~2 minutes (used by the test suite)
  int threads = 0;                 // 0 = all cores
  std::string precision = "auto";  // teacher and students (core/precision.h)
  std::uint64_t seed = 1;
  bool quiet = false;         // no per-batch lines on the console
  bool hard_data = false;     // `posekd synth`'s default (hard) data instead of demo_synth_config
  bool teacher_only = false;  // stop after training and evaluating the teacher (for tuning)
  // The demo trains without augmentation unless asked (--augment): on its short budget, train's
  // default augmentation gave weaker students (docs/accuracy.md).
  bool no_augment = true;
  data::AugmentConfig augment{true};  // with --augment: teacher and students (train's defaults)
  DemoBudget overrides;               // fields > 0 replace the preset's
};

struct DemoRow {
  std::string model;
  std::array<double, 10> stats{};  // pycocotools' 10 numbers
};

struct DemoResult {
  DemoBudget budget;          // what was run
  std::vector<DemoRow> rows;  // teacher, KD float/QAT/int8, no-teacher float/QAT/int8
  std::string table_markdown;
  bool export_fits = false;
  double teacher_first_loss = 0, teacher_last_loss = 0;
  // wall seconds: data, teacher, student KD, student without teacher, evaluation, export+pictures
  std::array<double, 6> step_seconds{};
  double seconds = 0;
};

DemoResult run_demo(const DemoOptions& o);

}  // namespace posekd::train
