#include "posekd/train/fused_adam.h"

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>

#include <cmath>
#include <memory>

namespace posekd::train {

namespace {

// Same sizes and the same element order in memory (strides of size-1 dimensions do not matter:
// a [C,1,3,3] or [O,I,1,1] weight is both contiguous and channels-last).
bool same_layout(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}

}  // namespace

void fused_adam_step(torch::optim::Adam& opt) {
  // The fast path covers what posekd trains; the rest keeps LibTorch's implementation.
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    if (o.amsgrad()) return (void)opt.step();
    // Any dense layout works (channels-last weights too) as long as the gradient has the same strides:
    // the update is element by element over the storage.
    for (auto& p : group.params())
      if (p.grad().defined() && (p.scalar_type() != torch::kFloat || !p.is_cpu() || !p.is_non_overlapping_and_dense() ||
                                 !same_layout(p.grad(), p) || p.grad().scalar_type() != torch::kFloat))
        return (void)opt.step();
  }
  torch::NoGradGuard ng;
  auto& state = opt.state();
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state.find(key);
      if (it == state.end()) {  // as Adam::step: zero moments, step 0
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step(0);
        s->exp_avg(torch::zeros_like(p, at::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, at::MemoryFormat::Preserve));
        it = state.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
      // Moments restored from a checkpoint are contiguous: give them the parameter's layout.
      if (!same_layout(s.exp_avg(), p)) s.exp_avg(torch::empty_like(p).copy_(s.exp_avg()));
      if (!same_layout(s.exp_avg_sq(), p)) s.exp_avg_sq(torch::empty_like(p).copy_(s.exp_avg_sq()));
      s.step(s.step() + 1);
      const double bc1 = 1 - std::pow(beta1, static_cast<double>(s.step()));
      const double bc2 = 1 - std::pow(beta2, static_cast<double>(s.step()));
      // The constants in float, as the tensor operations of Adam::step use them.
      const float b1 = static_cast<float>(beta1), a1 = static_cast<float>(1 - beta1);
      const float b2 = static_cast<float>(beta2), a2 = static_cast<float>(1 - beta2);
      const float sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
      const float eps = static_cast<float>(o.eps());
      const float neg_step = static_cast<float>(-o.lr() / bc1);
      const float wd = static_cast<float>(o.weight_decay());
      float* pp = p.data_ptr<float>();
      const float* gp = p.grad().data_ptr<float>();
      float* mp = s.exp_avg().data_ptr<float>();
      float* vp = s.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), 32768, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const float g = wd != 0.0f ? gp[i] + wd * pp[i] : gp[i];
          const float m = mp[i] * b1 + a1 * g;
          const float v = vp[i] * b2 + a2 * g * g;
          mp[i] = m;
          vp[i] = v;
          pp[i] += neg_step * (m / (std::sqrt(v) / sqrt_bc2 + eps));
        }
      });
    }
  }
}

void clear_grads(torch::optim::Optimizer& opt) {
  for (auto& group : opt.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) p.mutable_grad().reset();
}

}  // namespace posekd::train
