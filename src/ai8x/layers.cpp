#include "posekd/ai8x/layers.h"

#include <cmath>
#include <limits>

#include "posekd/ai8x/quantizers.h"
#include "posekd/ai8x/sync_batchnorm.h"
#include "posekd/core/bf16_conv.h"
#include "posekd/core/bf16_norm.h"
#include "posekd/core/error.h"
#include "posekd/core/max_pool.h"
#include "posekd/core/precision.h"

namespace posekd::ai8x {

namespace F = torch::nn::functional;

LayerSpec fused_conv2d_bn_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t stride) {
  LayerSpec s;
  s.in_channels = cin, s.out_channels = cout, s.kernel_size = k, s.padding = padding;
  s.stride = stride, s.batchnorm = true, s.relu = true;
  return s;
}

LayerSpec fused_maxpool_conv2d_bn_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t pool_size,
                                       int64_t pool_stride) {
  auto s = fused_conv2d_bn_relu(cin, cout, k, padding);
  s.pool_size = pool_size, s.pool_stride = pool_stride;
  return s;
}

LayerSpec fused_conv2d_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t stride) {
  auto s = fused_conv2d_bn_relu(cin, cout, k, padding, stride);
  s.batchnorm = false;
  return s;
}

LayerSpec fused_maxpool_conv2d_relu(int64_t cin, int64_t cout, int64_t k, int64_t padding, int64_t pool_size,
                                    int64_t pool_stride) {
  auto s = fused_maxpool_conv2d_bn_relu(cin, cout, k, padding, pool_size, pool_stride);
  s.batchnorm = false;
  return s;
}

LayerSpec conv2d(int64_t cin, int64_t cout, int64_t k, int64_t padding, bool wide) {
  LayerSpec s;
  s.in_channels = cin, s.out_channels = cout, s.kernel_size = k, s.padding = padding;
  s.wide = wide;
  return s;
}

LayerSpec max_pool2d(int64_t pool_size, int64_t pool_stride) {
  LayerSpec s;
  s.pool_size = pool_size, s.pool_stride = pool_stride;
  return s;
}

void check_spec(const LayerSpec& s, const std::string& what) {
  auto bad = [&](const std::string& m) { throw Error(what + ": " + m); };
  if (!s.has_op() && !s.has_pool()) bad("layer has neither a convolution nor pooling");
  if (s.has_pool()) {
    if (s.pool_size < 1 || s.pool_size > 16) bad("pool_size must be 1..16");
    if (s.pool_stride < 1 || s.pool_stride > 16) bad("pool_stride must be 1..16");
  }
  if (!s.has_op()) return;
  if (s.in_channels < 1) bad("in_channels must be positive");
  if (s.kernel_size != 1 && s.kernel_size != 3) bad("kernel_size must be 1 or 3");
  if (s.padding < 0 || s.padding > 2) bad("padding must be 0..2");
  if (s.has_pool() && s.stride != 1) bad("a pooled convolution must have stride 1");
  if (s.stride < 1 || s.stride > 3) bad("stride must be 1..3");
  if (s.wide && s.relu) bad("a wide (32-bit) layer cannot have an activation");
  if (s.batchnorm && !s.bias) bad("batchnorm requires bias=True");
}

Layer::Layer(const LayerSpec& spec, const Device& device) : spec_(spec), device_(device) {
  check_spec(spec, "ai8x layer");
  auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  output_shift = register_parameter("output_shift", torch::zeros({1}, f32), false);
  activation_threshold = register_parameter("activation_threshold", torch::zeros({}, f32), false);
  final_scale = register_parameter("final_scale", torch::zeros({}, f32), false);
  weight_bits = register_parameter("weight_bits", torch::zeros({1}, torch::kLong), false);
  bias_bits = register_parameter("bias_bits", torch::zeros({1}, torch::kLong), false);
  quantize_activation = register_parameter("quantize_activation", torch::zeros({1}, torch::kBool), false);
  clamp_activation = register_parameter("clamp_activation", torch::zeros({1}, torch::kBool), false);
  adjust_output_shift = register_parameter("adjust_output_shift", torch::zeros({1}, torch::kBool), false);
  shift_quantile = register_parameter("shift_quantile", torch::ones({1}, f32), false);
  if (spec.has_op()) {
    op_ = register_module(
        "op", torch::nn::Conv2d(torch::nn::Conv2dOptions(spec.in_channels, spec.out_channels, spec.kernel_size)
                                    .stride(spec.stride)
                                    .padding(spec.padding)
                                    .bias(spec.bias)));
    if (spec.batchnorm) {
      bn_ = register_module(
          "bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(spec.out_channels).eps(1e-5).momentum(0.05)));
    }
  }
}

bool Layer::quantized() const { return weight_bits.item<int64_t>() != 0; }

void Layer::init_module(int wb, bool qa, double q) {
  const bool float_mode = wb == 0 && !qa;
  const bool quant_mode = (wb == 1 || wb == 2 || wb == 4 || wb == 8) && qa;
  if (!float_mode && !quant_mode) {
    throw Error("ai8x layer: illegal init_module(weight_bits=" + std::to_string(wb) +
                ", quantize_activation=" + (qa ? "true" : "false") + "); use (0, false) or (1|2|4|8, true)");
  }
  torch::NoGradGuard ng;
  weight_bits.fill_(wb);
  bias_bits.fill_(wb);
  quantize_activation.fill_(qa);
  clamp_activation.fill_(qa);  // float mode: the constructor value, False for every Conv2d
  adjust_output_shift.fill_(quant_mode && !device_.simulate);
  shift_quantile.fill_(q);
}

void Layer::fuse_bn() {
  if (!bn_) return;
  torch::NoGradGuard ng;
  auto folded =
      fold_bn(op_->weight, op_->bias, bn_->weight, bn_->bias, bn_->running_mean, bn_->running_var, bn_->options.eps());
  op_->weight.copy_(folded.weight);
  op_->bias.copy_(folded.bias);
  unregister_module("bn");
  bn_ = nullptr;
}

int Layer::current_output_shift() const {
  if (!spec_.has_op()) return 0;
  if (adjust_output_shift.item<bool>()) {
    return output_shift_from_params(op_->weight, op_->bias, shift_quantile.item<float>());
  }
  return static_cast<int>(output_shift.item<float>());
}

void Layer::set_calibration(bool on, Collective* group) {
  calibrating_ = on;
  calib_group_ = on && group != nullptr && group->world_size() > 1 ? group : nullptr;
  if (!on) return;
  hist_.clear();
}

void Layer::record(const torch::Tensor& y) {
  torch::NoGradGuard ng;
  auto yd = y.detach();
  HistogramBatch hb;
  if (calib_group_ == nullptr) {
    hb.lo = yd.min().item<float>();
    hb.hi = yd.max().item<float>();
    hb.counts = torch::histc(yd, 2048, hb.lo, hb.hi).to(torch::kCPU);
  } else {  // the global batch's range, each shard's counts in it, summed: the whole batch's histc
    std::vector<torch::Tensor> range{torch::stack({-yd.min(), yd.max()}).to(torch::kCPU)};
    calib_group_->allreduce_max(range);
    hb.lo = -range[0][0].item<float>();
    hb.hi = range[0][1].item<float>();
    std::vector<torch::Tensor> counts{torch::histc(yd, 2048, hb.lo, hb.hi).to(torch::kCPU, torch::kDouble)};
    calib_group_->allreduce_sum(counts);
    hb.counts = counts[0].to(torch::kFloat);
  }
  hist_.push_back(std::move(hb));
}

torch::Tensor Layer::forward(const torch::Tensor& input) {
  torch::Tensor x = input;
  const bool bf16 = !device_.simulate && compute_precision() == Precision::bf16;
  if (spec_.has_pool()) {
    // Under bf16, non-overlapping windows (the students' 2x2/2): posekd's pool with a one-byte index
    // (core/max_pool.h; same values and gradients as LibTorch's, a fraction of its memory traffic).
    x = bf16 && spec_.pool_size == spec_.pool_stride
            ? max_pool2d_nonoverlapping(x, spec_.pool_size)
            : F::max_pool2d(x, F::MaxPool2dFuncOptions(spec_.pool_size).stride(spec_.pool_stride));
  }
  if (!spec_.has_op()) return x;

  const int64_t wb = weight_bits.item<int64_t>();
  const int64_t bb = bias_bits.item<int64_t>();
  const bool qa = quantize_activation.item<bool>();
  const bool ca = clamp_activation.item<bool>();
  const bool adj = adjust_output_shift.item<bool>();
  const double thr = activation_threshold.item<float>();
  const double fs = final_scale.item<float>();
  const bool sim = device_.simulate;

  int os = adj ? output_shift_from_params(op_->weight, op_->bias, shift_quantile.item<float>())
               : static_cast<int>(output_shift.item<float>());
  const double ws = adj ? std::ldexp(1.0, -os) : 1.0;
  double eff = os;
  if (!sim) eff = std::min(15.0, std::max(-15.0, os - thr));

  const torch::Tensor& w = op_->weight;
  const torch::Tensor& b = op_->bias;
  torch::Tensor wq, bq;
  if (sim) {
    wq = wb ? quantize_simulate_ste(ws == 1.0 ? w : w * ws, static_cast<int>(wb) - 7) : (ws == 1.0 ? w : w * ws);
    if (b.defined()) {
      bq = bb ? quantize_simulate_ste(ws == 1.0 ? b : b * ws, 2 * (static_cast<int>(wb) - 8) + 1)
              : (ws == 1.0 ? b : b * ws);
    }
  } else {
    wq = wb ? quantize_clamp_ste(w, ws, static_cast<int>(wb), -1.0, param_clamp_hi(static_cast<int>(wb)), false, 1.0)
            : (ws == 1.0 ? w : w * ws);
    if (b.defined()) {
      bq = bb ? quantize_clamp_ste(b, ws, static_cast<int>(bb), -1.0, param_clamp_hi(static_cast<int>(bb)), false, 1.0)
              : (ws == 1.0 ? b : b * ws);
    }
  }

  // Mixed precision (PrecisionScope bf16): bf16 operands, fp32 accumulator and result. In the QAT
  // phase weights and activations sit on 8-bit grids, exact in bf16, so the result is the fp32 one
  // bit for bit. The simulate (integer) mode always stays fp32.
  // In the float phase a BatchNorm layer's result is rounded to bf16 (as PyTorch's autocast does):
  // BatchNorm runs on it with fp32 parameters, statistics and accumulators (LibTorch's mixed-type
  // kernel), the activation follows in bf16, and the next convolution takes it as it is. That
  // halves the memory traffic of the element-wise steps, the float phase's largest cost after the
  // convolutions. Not while calibrating (the recorded statistics stay fp32) nor with SyncBN.
  const bool sync = bn_ && sync_bn_ != nullptr && bn_->is_training() && sync_bn_->world_size() > 1;
  const bool bf16_out = bf16 && bn_ && !spec_.wide && !qa && !calibrating_ && !sync;
  const double lo = ca ? (spec_.wide ? -kWideClamp : kActLo) : -std::numeric_limits<double>::infinity();
  const double hi = ca ? (spec_.wide ? kWideClamp : kActHi) : std::numeric_limits<double>::infinity();
  const double out_scale = std::ldexp(1.0, static_cast<int>(fs));
  // Under bf16 a non-wide, clamped QAT layer's 8-bit result is handed on as bf16 (exact; no cast in the
  // next convolution), and the convolution and its quantizer are one autograd node, so the gradient
  // between them stays bf16. The wide heads stay fp32.
  const bool qat_bf16 = bf16 && qa && ca && !spec_.wide && !calibrating_;
  if (qat_bf16 && !bn_) {
    return conv2d_quantize_clamp_bf16(x, wq, bq, spec_.stride, spec_.padding, std::ldexp(1.0, static_cast<int>(eff)), 8,
                                      lo, hi, spec_.relu, out_scale);
  }
  torch::Tensor y =
      bf16 ? conv2d_bf16(x, wq, bq, {spec_.stride, spec_.stride}, {spec_.padding, spec_.padding}, {1, 1}, 1, bf16_out)
           : F::conv2d(x, wq, F::Conv2dFuncOptions().bias(bq).stride(spec_.stride).padding(spec_.padding));
  // bf16 float phase in training: oneDNN's BatchNorm with the ReLU fused (core/bf16_norm.h; 1.2-1.7x
  // LibTorch's BatchNorm followed by relu on the student's shapes). ReLU commutes with the positive
  // scale below, so it runs first.
  bool relu_done = false;
  if (bn_ && bf16_out && bn_->is_training()) {
    y = batch_norm_bf16(y, *bn_, spec_.relu);
    relu_done = spec_.relu;
  } else if (bn_) {
    y = sync ? sync_batch_norm(y, *bn_, *sync_bn_) : bn_->forward(y);
  }

  if (sim) {
    if (!spec_.wide) {
      y = floor_ste(y * std::ldexp(1.0, os));
      if (spec_.relu) y = torch::relu(y);
      if (qa) y = quantize_simulate_ste(y, 8);
      y = y.clamp(-128.0, 127.0);
    } else {
      if (qa) y = quantize_simulate_ste(y, 8 - static_cast<int>(wb) + 1);
      y = y.clamp(-536870912.0, 536870911.0);
    }
    if (fs != 0) y = y * out_scale;
  } else if (qa) {
    y = quantize_clamp_ste(y, spec_.wide ? 1.0 : std::ldexp(1.0, static_cast<int>(eff)), spec_.wide ? kWideBits : 8, lo,
                           hi, spec_.relu, out_scale, qat_bf16);
  } else {
    if (!spec_.wide && eff != 0) y = y * std::ldexp(1.0, static_cast<int>(eff));
    if (spec_.relu && !relu_done) y = torch::relu(y);
    if (ca) y = spec_.wide ? y.clamp(-kWideClamp, kWideClamp) : y.clamp(kActLo, kActHi);
    if (fs != 0) y = y * out_scale;
  }
  if (calibrating_) record(y);
  return y;
}

}  // namespace posekd::ai8x
