// Adam state in PyTorch's own layout (optimizer.state_dict()): per-parameter index state plus one param group.
// Indices run over ALL model parameters in registration order, as in Python, including the ai8x
// non-trainable scalars (they simply never get state). This lets posekd resume a seed checkpoint
// written by Python and lets Python resume ours.
#pragma once
#include <torch/optim/adam.h>

#include <cstdint>
#include <map>
#include <vector>

namespace posekd::train {

struct AdamSlot {
  double step = 0;  // Python 1.13 stores a float tensor
  torch::Tensor exp_avg, exp_avg_sq;
};

struct AdamSnapshot {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool amsgrad = false;
  std::int64_t num_params = 0;             // length of param_groups[0]['params']
  std::map<std::int64_t, AdamSlot> state;  // by parameter index
};

// Reads the state of `opt` for `params` (the list the optimizer was built from, in order).
AdamSnapshot snapshot_adam(const torch::optim::Adam& opt, const std::vector<torch::Tensor>& params);

// Writes `snap` into `opt` (hyper-parameters of group 0 and per-parameter state). Throws posekd::Error
// when the parameter count or a state tensor's shape disagrees (a foreign checkpoint).
void restore_adam(torch::optim::Adam& opt, const std::vector<torch::Tensor>& params, const AdamSnapshot& snap,
                  const std::string& source);

}  // namespace posekd::train
