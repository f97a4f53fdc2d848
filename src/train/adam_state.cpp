#include "posekd/train/adam_state.h"

#include <c10/util/string_utils.h>
#include <fmt/format.h>

#include "posekd/core/error.h"

namespace posekd::train {
namespace {

std::string key_of(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

}  // namespace

AdamSnapshot snapshot_adam(const torch::optim::Adam& opt, const std::vector<torch::Tensor>& params) {
  AdamSnapshot s;
  const auto& o = static_cast<const torch::optim::AdamOptions&>(opt.param_groups().at(0).options());
  s.lr = o.lr();
  s.beta1 = std::get<0>(o.betas());
  s.beta2 = std::get<1>(o.betas());
  s.eps = o.eps();
  s.weight_decay = o.weight_decay();
  s.amsgrad = o.amsgrad();
  s.num_params = static_cast<std::int64_t>(params.size());
  const auto& st = opt.state();
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = st.find(key_of(params[i]));
    if (it == st.end()) continue;
    const auto& a = static_cast<const torch::optim::AdamParamState&>(*it->second);
    s.state[static_cast<std::int64_t>(i)] =
        AdamSlot{static_cast<double>(a.step()), a.exp_avg().detach().clone(), a.exp_avg_sq().detach().clone()};
  }
  return s;
}

void restore_adam(torch::optim::Adam& opt, const std::vector<torch::Tensor>& params, const AdamSnapshot& snap,
                  const std::string& source) {
  if (snap.num_params != static_cast<std::int64_t>(params.size()))
    fail_file(source,
              fmt::format("optimizer state is for {} parameters, the model has {}", snap.num_params, params.size()));
  auto& o = static_cast<torch::optim::AdamOptions&>(opt.param_groups().at(0).options());
  o.lr(snap.lr).betas({snap.beta1, snap.beta2}).eps(snap.eps).weight_decay(snap.weight_decay).amsgrad(snap.amsgrad);
  auto& st = opt.state();
  st.clear();
  for (const auto& [idx, slot] : snap.state) {
    if (idx < 0 || idx >= static_cast<std::int64_t>(params.size()))
      fail_file(source, fmt::format("optimizer state names parameter {} of {}", idx, params.size()));
    const auto& p = params[static_cast<size_t>(idx)];
    if (!slot.exp_avg.defined() || slot.exp_avg.sizes() != p.sizes() || slot.exp_avg_sq.sizes() != p.sizes())
      fail_file(source, fmt::format("optimizer state of parameter {} has the wrong shape", idx));
    auto a = std::make_unique<torch::optim::AdamParamState>();
    a->step(static_cast<int64_t>(slot.step));
    a->exp_avg(slot.exp_avg.to(p.options()).clone());
    a->exp_avg_sq(slot.exp_avg_sq.to(p.options()).clone());
    st[key_of(p)] = std::move(a);
  }
}

}  // namespace posekd::train
