// ai8x QATv2 quantization-aware layers (ai8x.md 2.2-2.7) as one LibTorch module, ai8x::Layer.
//
// One class covers FusedConv2dBNReLU, FusedMaxPoolConv2dBNReLU, FusedConv2dReLU,
// FusedMaxPoolConv2dReLU, Conv2d (optionally wide, no activation) and MaxPool2d alone; the
// factory functions below build the LayerSpec of each. State (names, dtypes, shapes, order) is
// exactly ai8x's: output_shift f32[1], activation_threshold f32[], final_scale f32[],
// weight_bits i64[1], bias_bits i64[1], quantize_activation bool[1], clamp_activation bool[1],
// adjust_output_shift bool[1], shift_quantile f32[1] (all non-trainable parameters), then
// op.weight, op.bias, then bn.* until fuse_bn(). The forward reads the flags from these tensors
// on every call, so loading a state dict is all "update_model" needs.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "posekd/ai8x/device.h"
#include "posekd/core/collective.h"

namespace posekd::ai8x {

struct LayerSpec {
  int64_t in_channels = 0, out_channels = 0;  // out_channels == 0: pooling only (no op)
  int64_t kernel_size = 3, padding = 1, stride = 1;
  int64_t pool_size = 0, pool_stride = 0;  // 0 = no pooling (max pooling before the conv)
  bool batchnorm = false;                  // affine BatchNorm2d(eps 1e-5, momentum 0.05)
  bool relu = false;
  bool wide = false;  // 32-bit output (no activation, no output shift)
  bool bias = true;
  bool has_op() const { return out_channels > 0; }
  bool has_pool() const { return pool_size > 0; }
};

LayerSpec fused_conv2d_bn_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t stride = 1);
LayerSpec fused_maxpool_conv2d_bn_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t pool_size = 2,
                                       int64_t pool_stride = 2);
LayerSpec fused_conv2d_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t stride = 1);
LayerSpec fused_maxpool_conv2d_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t pool_size = 2,
                                    int64_t pool_stride = 2);
LayerSpec conv2d(int64_t cin, int64_t cout, int64_t k, int64_t padding, bool wide = false);
LayerSpec max_pool2d(int64_t pool_size, int64_t pool_stride);

// Checks the ai8x.Conv2d constructor limits (ai8x.md 2.7); throws posekd::Error naming `what`.
void check_spec(const LayerSpec& spec, const std::string& what);

// Per-batch activation statistics recorded during calibration (ai8x.md 3.3).
struct HistogramBatch {
  torch::Tensor counts;  // f32[2048] histc
  float lo = 0, hi = 0;
};

class Layer : public torch::nn::Module {
 public:
  explicit Layer(const LayerSpec& spec, const Device& device = {});

  torch::Tensor forward(const torch::Tensor& x);

  const LayerSpec& spec() const { return spec_; }
  const Device& device() const { return device_; }
  void set_device(const Device& d) { device_ = d; }

  // init_module(weight_bits, bias_bits = weight_bits, quantize_activation, clamp_activation =
  // quantize_activation, shift_quantile). Legal: (0, false) = float mode, or (1|2|4|8, true).
  void init_module(int weight_bits, bool quantize_activation, double shift_quantile = 1.0);
  // Folds the BN into op.weight / op.bias and removes the bn submodule (its keys leave the state).
  void fuse_bn();

  bool has_bn() const { return static_cast<bool>(bn_); }
  bool quantized() const;  // weight_bits != 0
  torch::Tensor& weight() { return op_->weight; }
  torch::Tensor& bias() { return op_->bias; }
  torch::nn::BatchNorm2d& bn() { return bn_; }

  // The output shift the QAT forward would use now: computed from |[W,b]| if
  // adjust_output_shift, else the stored output_shift.
  int current_output_shift() const;

  // Data-parallel training (nullptr: per-process statistics). With a group of more than one rank,
  // a training forward normalises with the global batch's BatchNorm statistics (sync_batch_norm.h).
  void set_sync_bn(Collective* group) { sync_bn_ = group; }
  Collective* sync_bn() const { return sync_bn_; }

  // Calibration: while enabled, every forward records a histogram of its output. With a group, it
  // is the histogram of the global batch (every rank's shard: min/max and counts all-reduced), the
  // same on every rank and the same as one process's on the whole batch.
  void set_calibration(bool on, Collective* group = nullptr);
  const std::vector<HistogramBatch>& calibration_batches() const { return hist_; }
  void clear_calibration() { hist_.clear(); }

  // ai8x state (registered parameters, requires_grad = false).
  torch::Tensor output_shift, activation_threshold, final_scale, weight_bits, bias_bits, quantize_activation,
      clamp_activation, adjust_output_shift, shift_quantile;

 private:
  void record(const torch::Tensor& y);

  LayerSpec spec_;
  Device device_;
  torch::nn::Conv2d op_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
  bool calibrating_ = false;
  std::vector<HistogramBatch> hist_;
  Collective* sync_bn_ = nullptr;      // not owned
  Collective* calib_group_ = nullptr;  // not owned
};

}  // namespace posekd::ai8x
