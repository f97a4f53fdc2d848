// `posekd train`: the seed's distillation loop with its defects fixed (spec/seed-pipeline.md):
// all persons, OpenPose-18 targets, crowd masks, real ai8x QAT at the policy's batch, atomic
// checkpoints with exact resume, SIGINT/SIGTERM handled, counted bad samples and NaN steps.
#pragma once
#include <cstdint>
#include <string>

#include "posekd/train/config.h"

namespace posekd::train {

struct TrainResult {
  std::int64_t batches_done = 0;     // batch counter at exit
  std::int64_t batches_run = 0;      // batches run by this invocation
  double last_loss = 0;
  bool interrupted = false;          // stopped by a signal (checkpoint written)
  double last_val_ap = -1;           // the last validation AP (-1: none)
  std::string output_dir;
};

// Runs (or resumes) training. Throws posekd::Error on bad configuration or input.
TrainResult run_training(const TrainConfig& cfg);

// Installs SIGINT/SIGTERM handlers that ask the running training to stop after the current batch.
void install_stop_handlers();
// For tests: request a stop as a signal would.
void request_stop();

}  // namespace posekd::train
