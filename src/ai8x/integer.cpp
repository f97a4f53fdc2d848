#include "posekd/ai8x/integer.h"

#include <cmath>

#include "posekd/core/error.h"

namespace posekd::ai8x {

namespace F = torch::nn::functional;

IntegerLayer integer_layer(const StateDict& q, const std::string& name, const LayerSpec& spec,
                           const std::string& what) {
  IntegerLayer l;
  l.name = name;
  l.spec = spec;
  if (!spec.has_op()) return l;
  int bits = 8;
  if (const auto* wb = find_or_null(q, name + ".weight_bits"))
    if (wb->item<double>() != 0) bits = static_cast<int>(wb->item<double>());
  const auto& w = find(q, name + ".op.weight", what);
  if (w.size(0) != spec.out_channels || w.size(1) != spec.in_channels || w.size(2) != spec.kernel_size)
    throw Error(what + ": '" + name + ".op.weight' has shape " + c10::str(w.sizes()) +
                ", which does not match the layer");
  if ((w != w.round()).any().item<bool>())
    throw Error(what + ": '" + name + ".op.weight' is not integer valued (not quantized?)");
  l.weight = w.to(torch::kLong);
  const double lim = std::ldexp(1.0, bits - 1);
  if (l.weight.min().item<int64_t>() < -lim || l.weight.max().item<int64_t>() > lim - 1)
    throw Error(what + ": '" + name + ".op.weight' exceeds " + std::to_string(bits) + "-bit range");
  if (spec.bias) {
    const auto& b = find(q, name + ".op.bias", what);
    l.bias8 = torch::floor(b.to(torch::kDouble) / std::ldexp(1.0, bits - 1)).to(torch::kLong);
    if (l.bias8.numel() && (l.bias8.min().item<int64_t>() < -128 || l.bias8.max().item<int64_t>() > 127))
      throw Error(what + ": '" + name + ".op.bias' exceeds the 8-bit bias range");
  }
  const auto& os = find(q, name + ".output_shift", what);
  if (os.numel() != 1) throw Error(what + ": '" + name + ".output_shift' must have one element");
  l.shift = static_cast<int>(os.item<double>()) + (8 - bits);
  if (l.shift < -15 || l.shift > 15)
    throw Error(what + ": '" + name + "' has output shift " + std::to_string(l.shift) + " outside [-15, 15]");
  if (const auto* fs = find_or_null(q, name + ".final_scale")) l.final_scale = static_cast<int>(fs->item<double>());
  return l;
}

torch::Tensor integer_layer_forward(const IntegerLayer& l, const torch::Tensor& input) {
  torch::NoGradGuard ng;
  auto x = input.to(torch::kDouble);
  if (l.spec.has_pool()) x = F::max_pool2d(x, F::MaxPool2dFuncOptions(l.spec.pool_size).stride(l.spec.pool_stride));
  if (!l.spec.has_op()) return x.to(torch::kLong);
  auto acc =
      F::conv2d(x, l.weight.to(torch::kDouble), F::Conv2dFuncOptions().stride(l.spec.stride).padding(l.spec.padding))
          .to(torch::kLong);
  if (l.bias8.defined()) acc = acc + (l.bias8 * 128).view({1, -1, 1, 1});
  if (l.spec.wide) return acc;
  // v = floor(0.5 + acc * 2^s / 128) = (acc*2^max(s,0) + 64*2^k) >> (7 + k), k = max(-s, 0)
  const int up = std::max(l.shift, 0), k = std::max(-l.shift, 0);
  auto v = torch::bitwise_right_shift(acc * (int64_t{1} << up) + (int64_t{64} << k), 7 + k);
  v = v.clamp(-128, 127);
  if (l.spec.relu) v = v.clamp_min(0);
  return v;
}

IntegerOutputs integer_forward(const std::vector<IntegerLayer>& trunk, const std::vector<IntegerLayer>& head_a,
                               const std::vector<IntegerLayer>& head_b, const torch::Tensor& x, bool keep) {
  IntegerOutputs out;
  auto t = x.to(torch::kLong);
  auto note = [&](const IntegerLayer& l, const torch::Tensor& v) {
    if (!keep) return;
    out.activations[l.name] = l.spec.wide ? (v * (int64_t{1} << std::max(l.final_scale, 0))) : v.to(torch::kChar);
  };
  for (const auto& l : trunk) {
    t = integer_layer_forward(l, t);
    note(l, t);
  }
  auto head = [&](const std::vector<IntegerLayer>& layers) {
    auto h = t;
    for (const auto& l : layers) {
      h = integer_layer_forward(l, h);
      note(l, h);
    }
    const int fs = layers.empty() ? 0 : layers.back().final_scale;
    return h.to(torch::kDouble) * std::ldexp(1.0, fs);
  };
  out.heat = head(head_a);
  out.paf = head(head_b);
  return out;
}

torch::Tensor integer_output_to_float(const torch::Tensor& v, bool wide) {
  return v.to(torch::kDouble) / (wide ? 16384.0 : 128.0);
}

}  // namespace posekd::ai8x
