// Training-mode BatchNorm2d (optionally fused with a ReLU) on bf16 activations, with oneDNN.
//
// What LibTorch's mixed-type BatchNorm (bf16 data, fp32 parameters and statistics) followed by a
// ReLU computes in a training step, in one oneDNN primitive per direction: the forward
// (`batch_normalization_forward`, forward_training, scale and shift, the ReLU fused) reads the bf16
// input once for the statistics and once to normalise it, and keeps the ReLU's mask as a bit per
// element (its workspace); the backward (`batch_normalization_backward`) applies that mask and
// gives the input gradient in bf16 and the scale and shift gradients in fp32. Statistics and
// accumulators are fp32 throughout; only the result and the input gradient are rounded to bf16.
//
// Layout: channels-last. An NCHW input is converted first (a copy, differentiable), the result is
// always channels-last.
//
// oneDNN 2.6.3 has jit kernels for this only when C is a multiple of 16 (the student's 32, 64, 96,
// 128); for other channel counts it would run plain C++ about ten times slower than LibTorch, so
// those run LibTorch's batch_norm (+ relu) instead, same contract (batch_norm_bf16_impl_info says
// which). Speed (2 threads, AMX Xeon, batch 8, forward + backward, medians of 3 runs): BN + ReLU
// faster than LibTorch's BatchNorm followed by relu, 1.4-1.7x at 64x64, 1.3-1.5x at 32x32,
// 1.2-1.3x at 16x16; BN alone about as fast as LibTorch's (0.9-1.1x).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace posekd {

// relu?(weight * (x - mean) / sqrt(var + eps) + bias) with the batch's mean and biased variance
// per channel (over N, H, W). x: 4-D bf16 [N, C, H, W], N*H*W > 1. weight, bias: fp32 [C] (either
// may be undefined: 1 and 0, as for affine=false). running_mean, running_var: fp32 [C] buffers,
// updated in place outside autograd as LibTorch's training-mode batch_norm does
// (running = (1 - momentum) * running + momentum * batch statistic, the variance unbiased:
// * n / (n - 1)); either may be undefined (not tracked). Result: bf16, channels-last. Gradients:
// x in bf16 (in x's layout), weight and bias in fp32. posekd::Error on bad input (dimensions,
// dtypes, channel counts) or when the CPU cannot run it (batch_norm_bf16_supported()).
torch::Tensor batch_norm_bf16(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor running_mean, torch::Tensor running_var, double momentum, double eps,
                              bool relu);

// The same for a training-mode BatchNorm2d module: its affine parameters and running statistics
// (when it has them), its eps and momentum, and one step counted in its num_batches_tracked.
torch::Tensor batch_norm_bf16(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, bool relu);

// Counts one training step in bn.num_batches_tracked and returns the factor LibTorch's training
// BatchNorm gives its running statistics for it: bn's momentum, or the cumulative average 1/count
// when it has none. Call only when bn tracks running statistics. (Shared with SyncBN.)
double count_batch_and_momentum(torch::nn::BatchNorm2dImpl& bn);

// True when oneDNN can run it here (the condition of conv2d_bf16_supported(): AVX-512 BW/VL/DQ).
bool batch_norm_bf16_supported();

// The oneDNN implementations chosen for an input of `sizes` (N, C, H, W):
// "forward: <impl>; backward: <impl>" (impl_info_str(), e.g. "bnorm_jit:avx512_core_bf16"), or
// "LibTorch (...)" where batch_norm_bf16 runs LibTorch's. For tests and benchmarks.
std::string batch_norm_bf16_impl_info(const std::vector<int64_t>& sizes, double eps, bool relu);

}  // namespace posekd
