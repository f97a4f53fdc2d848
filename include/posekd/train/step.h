// The one optimisation step every training loop and benchmark of posekd runs: the student's
// distillation trainer, the teacher trainer, `posekd bench` and bench/bench_train.cpp.
#pragma once
#include <torch/torch.h>

#include <functional>

#include "posekd/train/loss.h"

namespace posekd::train {

class Distributed;
class GradSync;

struct StepOutcome {
  double loss = 0, student = 0, distill = 0;  // the loss and its two parts (averaged over ranks)
  bool finite = true;                         // false: no rank stepped (a rank's loss was NaN/Inf)
  bool stop = false;                          // some rank asked to stop (agreed over ranks)
};

struct StepOptions {
  double lr = -1;               // set every parameter group's rate first (-1: keep the optimizer's)
  GradSync* sync = nullptr;     // data-parallel: gradients are all-reduced while backward runs
  Distributed* dist = nullptr;  // data-parallel: loss, finiteness and stop requests agreed over ranks
  bool stop_requested = false;  // this rank's wish to stop after this step
};

// Clears the gradients, runs `forward_loss` (forward pass and loss), backward, then (data-parallel)
// finishes the gradient all-reduce and agrees on the loss; if the loss is finite on every rank, sets
// the learning rate and takes a fused Adam step. On a non-finite loss nothing is stepped.
StepOutcome train_step(torch::optim::Adam& optimizer, const std::function<LossParts()>& forward_loss,
                       const StepOptions& options = {});

// Sets the learning rate of every parameter group.
void set_learning_rate(torch::optim::Adam& optimizer, double lr);

}  // namespace posekd::train
