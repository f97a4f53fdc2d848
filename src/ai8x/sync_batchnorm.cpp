#include "posekd/ai8x/sync_batchnorm.h"

#include <cstdint>
#include <vector>

#include "posekd/core/bf16_norm.h"
#include "posekd/core/error.h"

namespace posekd::ai8x {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> reduce_dims_of(const torch::Tensor& x) {
  std::vector<int64_t> d;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (i != 1) d.push_back(i);
  return d;
}

// [C] -> [1, C, 1, ...] broadcasting against x.
torch::Tensor per_channel(const torch::Tensor& v, const torch::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = v.numel();
  return v.view(shape);
}

Collective* group_of(AutogradContext* ctx) {
  return reinterpret_cast<Collective*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
}

// y = (x - mean) / sqrt(var + eps) * w + b with given (global) statistics; backward reduces over the group.
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& mean, const torch::Tensor& var,
                               double eps, double count, Collective* group) {
    const torch::Tensor invstd = (var + eps).rsqrt();
    const torch::Tensor w = weight.defined() ? weight : torch::ones_like(mean);
    const torch::Tensor b = bias.defined() ? bias : torch::zeros_like(mean);
    const torch::Tensor scale = w * invstd;
    const torch::Tensor shift = b - mean * scale;
    ctx->save_for_backward({x, w, mean, var, invstd});
    ctx->saved_data["count"] = count;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
    ctx->saved_data["has_weight"] = weight.defined();
    ctx->saved_data["has_bias"] = bias.defined();
    return torch::addcmul(per_channel(shift, x), x, per_channel(scale, x));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1], &mean = saved[2], &var = saved[3], &invstd = saved[4];
    const double count = ctx->saved_data["count"].toDouble();
    const torch::Tensor g = grads[0].contiguous(x.suggest_memory_format());
    // This rank's sum(g) and sum(g * x_hat) in one pass: LibTorch's inference-mode BatchNorm backward
    // with the global statistics as its "running" ones.
    const double eps = ctx->saved_data["eps"].toDouble();
    auto [unused, sum_dy_xhat, sum_dy] =
        torch::native_batch_norm_backward(g, x, w, mean, var, {}, {}, /*train=*/false, eps, {false, true, true});
    (void)unused;
    std::vector<torch::Tensor> sums{torch::cat({sum_dy, sum_dy_xhat}).to(torch::kDouble)};
    group_of(ctx)->allreduce_sum(sums);
    const int64_t c = mean.numel();
    const torch::Tensor mean_dy = (sums[0].narrow(0, 0, c) / count).to(x.scalar_type());
    const torch::Tensor mean_dy_xhat = (sums[0].narrow(0, c, c) / count).to(x.scalar_type());
    // grad_x = w invstd (g - mean_dy - x_hat mean_dy_xhat) = k1 g + k2 x + k3, per channel (2 passes).
    const torch::Tensor k1 = w * invstd;
    const torch::Tensor k2 = -k1 * invstd * mean_dy_xhat;
    const torch::Tensor k3 = -k1 * (mean_dy - invstd * mean_dy_xhat * mean);
    torch::Tensor gx = torch::addcmul(per_channel(k3, x), g, per_channel(k1, x));
    gx.addcmul_(x, per_channel(k2, x));
    torch::Tensor gw = ctx->saved_data["has_weight"].toBool() ? sum_dy_xhat : torch::Tensor();
    torch::Tensor gb = ctx->saved_data["has_bias"].toBool() ? sum_dy : torch::Tensor();
    return {gx, gw, gb, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

GlobalBatchStats global_batch_stats(const torch::Tensor& x, Collective& group) {
  torch::NoGradGuard ng;
  if (x.dim() < 2) throw Error("sync batchnorm: the input needs a channel dimension");
  const int world = group.world_size(), rank = group.rank();
  const int64_t c = x.size(1);
  const double n = static_cast<double>(x.numel() / c);
  // This shard's mean and biased variance from LibTorch's training BatchNorm kernel (per-channel
  // loops, double accumulation; much faster than var_mean over dims 0, 2, 3 of NCHW; its normalised
  // output is not used): var = 1 / invstd^2 - eps.
  constexpr double kStatsEps = 1e-5;
  auto [unused, mean, invstd] = torch::native_batch_norm(x.detach(), {}, {}, {}, {}, /*training=*/true, 0.0, kStatsEps);
  (void)unused;
  const torch::Tensor var = (invstd.to(torch::kDouble).pow(-2) - kStatsEps).clamp_min(0);
  // Every rank's (count, mean, biased variance): an all-gather as one all-reduce of a zero table.
  torch::Tensor table = torch::zeros({world, 1 + 2 * c}, torch::kDouble);
  table[rank][0] = n;
  table[rank].narrow(0, 1, c).copy_(mean);
  table[rank].narrow(0, 1 + c, c).copy_(var);
  std::vector<torch::Tensor> t{table};
  group.allreduce_sum(t);
  table = t[0];
  const torch::Tensor counts = table.narrow(1, 0, 1);  // [W, 1]
  const torch::Tensor means = table.narrow(1, 1, c), vars = table.narrow(1, 1 + c, c);
  const double total = counts.sum().item<double>();
  if (!(total > 0)) throw Error("sync batchnorm: the global batch is empty");
  const torch::Tensor gmean = (counts * means).sum(0) / total;
  const torch::Tensor m2 = (counts * vars).sum(0) + (counts * (means - gmean).pow(2)).sum(0);
  GlobalBatchStats s;
  s.mean = gmean.to(x.scalar_type());
  s.var = (m2 / total).to(x.scalar_type());
  s.count = total;
  return s;
}

torch::Tensor sync_batch_norm(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, Collective& group) {
  const GlobalBatchStats s = global_batch_stats(x, group);
  const auto& o = bn.options;
  if (o.track_running_stats()) {
    torch::NoGradGuard ng;
    const double m = count_batch_and_momentum(bn);
    const double unbias = s.count > 1 ? s.count / (s.count - 1) : 1.0;
    bn.running_mean.mul_(1 - m).add_(s.mean, m);
    bn.running_var.mul_(1 - m).add_(s.var * unbias, m);
  }
  return SyncBatchNormFunction::apply(x, o.affine() ? bn.weight : torch::Tensor(),
                                      o.affine() ? bn.bias : torch::Tensor(), s.mean, s.var, o.eps(), s.count, &group);
}

}  // namespace posekd::ai8x
