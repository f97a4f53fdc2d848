// Synchronised BatchNorm (torch.nn.SyncBatchNorm's arithmetic) over a posekd::Collective: the
// batch statistics of a training forward are those of the global batch (every rank's shard), and
// backward all-reduces the per-channel sums of grad and grad * x_hat, so each rank gets exactly its
// slice of the whole-batch BatchNorm gradient. Weight and bias gradients stay this rank's sums, as
// for any other parameter: the gradient averaging over ranks (train::GradSync) combines them.
//
// Statistics: each rank computes its shard's count, mean and biased variance (LibTorch's BatchNorm
// kernel, double accumulation). One all-reduce (sum) gathers every rank's triple (a [world, 1 + 2C]
// f64 table, zero except for the rank's own row). Every rank then combines them in the same order
// (Chan's parallel formula in f64), so the global mean and variance and the running statistics are
// identical on every rank.
#pragma once
#include <torch/torch.h>

#include "posekd/core/collective.h"

namespace posekd::ai8x {

// Global batch statistics of x (dims: all but 1) over the ranks: mean, biased variance (both f32,
// [C]) and the global element count per channel.
struct GlobalBatchStats {
  torch::Tensor mean, var;
  double count = 0;
};
GlobalBatchStats global_batch_stats(const torch::Tensor& x, Collective& group);

// Training-mode BatchNorm of x [N, C, ...] with the global batch statistics: y = (x - mean) /
// sqrt(var + eps) * weight + bias, differentiable in x, weight and bias. Updates bn's running_mean,
// running_var (unbiased global variance) and num_batches_tracked as torch's BatchNorm does, with
// bn's momentum (cumulative average when it has none).
torch::Tensor sync_batch_norm(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, Collective& group);

}  // namespace posekd::ai8x
