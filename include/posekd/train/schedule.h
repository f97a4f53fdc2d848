// Learning-rate schedules as one pure function of the batch number, so that a resume anywhere (in a
// warm-up, across the QAT switch) continues exactly.
//
// A run has one phase, or two when QAT switches on at batch q: float [0, q) and QAT [q, total).
// Each phase starts with a linear warm-up ((i+1)/warmup of its base rate over its first `warmup`
// batches), then follows its shape from the base rate down to base * end_factor at total. The float
// phase's curve is the whole run's, cut at the switch (decaying it to the end factor by the switch
// starved short runs: the student's float AP at 440 of 1100 batches fell from 0.031 with a constant
// rate to 0.001), and the QAT phase restarts at its own rate:
//   constant  base throughout (end_factor unused)
//   cosine    base * (end + (1 - end) * (1 + cos(pi t)) / 2), t from 0 to 1 over the phase
//   step      base, times sqrt(end) from 80% of the phase and times end from 95% (MMPose-like steps)
// The float phase's base is `lr`; the QAT phase's is `qat_lr` with its own `qat_warmup`.
#pragma once
#include <cstdint>
#include <string>

namespace posekd::train {

struct LrSchedule {
  std::string kind = "cosine";  // constant | cosine | step
  double lr = 1e-3;
  std::int64_t warmup = 0;
  double end_factor = 0.05;
  std::int64_t total = 1;       // batches in the run
  std::int64_t qat_start = -1;  // first QAT batch; -1 = no QAT phase
  double qat_lr = 1e-4;
  std::int64_t qat_warmup = 0;

  // The rate of batch `batch` (0-based: the batch about to run).
  double at(std::int64_t batch) const;
  // Throws posekd::Error naming the flag when a field is out of range.
  void validate(const std::string& who) const;
  std::string describe() const;  // one line for logs
};

}  // namespace posekd::train
