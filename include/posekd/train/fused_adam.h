// One Adam step in a single pass per parameter tensor.
//
// torch::optim::Adam::step runs ~8 tensor operations per parameter (mul_, add_, mul_, addcmul_,
// sqrt, div, add_, addcdiv_). For the students' ~230 small tensors the per-operation dispatch
// costs more than the arithmetic (docs/performance.md). This computes the same update, element by
// element, on the optimizer's own state (step, exp_avg, exp_avg_sq), so checkpoints, snapshot_adam
// and restore_adam see exactly what Adam::step would have left, up to float rounding order.
#pragma once
#include <torch/optim/adam.h>

namespace posekd::train {

// Equivalent to opt.step() for float32 CPU parameters without amsgrad, in any dense layout whose
// gradient has the parameter's strides (contiguous or channels-last; moments in another layout are
// copied into the parameter's first); anything else falls back to opt.step().
void fused_adam_step(torch::optim::Adam& opt);

// Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)). The next backward then
// hands its gradient buffers over instead of filling zeros and adding into them: the same values
// (0 + g == g exactly), two passes fewer per parameter.
void clear_grads(torch::optim::Optimizer& opt);

}  // namespace posekd::train
