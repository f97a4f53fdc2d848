// fused_adam_step: the same update and the same optimizer state as torch::optim::Adam::step.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "posekd/train/adam_state.h"
#include "posekd/train/fused_adam.h"

namespace {

std::vector<torch::Tensor> fused_test_params() {
  torch::manual_seed(5);
  return {torch::randn({64, 32, 3, 3}).requires_grad_(), torch::randn({64}).requires_grad_(),
          torch::randn({1}).requires_grad_(), torch::randn({7, 5}).requires_grad_()};
}

void train_steps(std::vector<torch::Tensor>& params, torch::optim::AdamOptions o, bool fused, int steps) {
  torch::optim::Adam opt(params, o);
  for (int s = 0; s < steps; ++s) {
    torch::manual_seed(100 + s);
    for (size_t i = 0; i < params.size(); ++i) {
      if (i == 2 && s == 0) {  // a parameter without a gradient at the first step gets no state then
        params[i].mutable_grad() = torch::Tensor();
        continue;
      }
      // the same values whatever the parameter's layout (randn_like would fill memory order)
      params[i].mutable_grad() =
          (torch::randn(params[i].sizes()) * (s + 1)).contiguous(params[i].suggest_memory_format());
    }
    if (fused)
      posekd::train::fused_adam_step(opt);
    else
      opt.step();
  }
  auto snap = posekd::train::snapshot_adam(opt, params);
  EXPECT_EQ(snap.state.size(), params.size());
  for (auto& [idx, slot] : snap.state) EXPECT_EQ(slot.step, idx == 2 ? steps - 1 : steps) << idx;
}

TEST(FusedAdam, MatchesAdamStepIncludingState) {
  for (double wd : {0.0, 0.01}) {
    auto a = fused_test_params(), b = fused_test_params();
    auto o = torch::optim::AdamOptions(1e-3).weight_decay(wd);
    train_steps(a, o, false, 5);
    train_steps(b, o, true, 5);
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-6, 1e-7))
          << "param " << i << " wd " << wd << ": max diff " << (a[i] - b[i]).abs().max().item<float>();
  }
}

TEST(FusedAdam, StateRoundTripsThroughSnapshotAndRestore) {
  auto a = fused_test_params();
  torch::optim::Adam opt(a, torch::optim::AdamOptions(2e-3));
  for (auto& p : a) p.mutable_grad() = torch::ones_like(p);
  posekd::train::fused_adam_step(opt);
  auto snap = posekd::train::snapshot_adam(opt, a);
  ASSERT_EQ(snap.state.size(), a.size());
  // After one step from zero moments: exp_avg = 0.1 g, exp_avg_sq = 0.001 g^2.
  EXPECT_TRUE(torch::allclose(snap.state.at(0).exp_avg, torch::full_like(a[0], 0.1f)));
  EXPECT_TRUE(torch::allclose(snap.state.at(0).exp_avg_sq, torch::full_like(a[0], 0.001f)));
  torch::optim::Adam again(a, torch::optim::AdamOptions(2e-3));
  posekd::train::restore_adam(again, a, snap, "test");
  auto back = posekd::train::snapshot_adam(again, a);
  EXPECT_TRUE(torch::equal(back.state.at(3).exp_avg, snap.state.at(3).exp_avg));
}

TEST(FusedAdam, ChannelsLastParametersAndRestoredMoments) {
  // train-teacher's bf16 weights are channels-last: the fused step must give Adam::step's values
  // there too, including after restoring contiguous moments from a checkpoint.
  auto a = fused_test_params(), b = fused_test_params();
  {
    torch::NoGradGuard ng;
    b[0].set_data(b[0].contiguous(at::MemoryFormat::ChannelsLast));
  }
  ASSERT_FALSE(b[0].is_contiguous());
  auto o = torch::optim::AdamOptions(1e-3);
  train_steps(a, o, false, 3);
  train_steps(b, o, true, 3);
  EXPECT_TRUE(b[0].is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::allclose(a[0], b[0], 1e-6, 1e-7)) << (a[0] - b[0]).abs().max().item<float>();

  torch::optim::Adam ref(a, o), fused(b, o);
  for (auto* opt : {&ref, &fused}) {
    auto& ps = opt == &ref ? a : b;
    for (auto& p : ps) p.mutable_grad() = torch::ones_like(p);
    opt->step();
  }
  auto snap = posekd::train::snapshot_adam(fused, b);
  torch::optim::Adam again(b, o);
  posekd::train::restore_adam(again, b, snap, "test");
  for (auto& p : a) p.mutable_grad() = torch::full_like(p, 0.5f);
  for (auto& p : b) p.mutable_grad() = torch::full_like(p, 0.5f).contiguous(p.suggest_memory_format());
  ref.step();
  posekd::train::fused_adam_step(again);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-6, 1e-7)) << i << ": " << (a[i] - b[i]).abs().max().item<float>();
  auto after = posekd::train::snapshot_adam(again, b);
  EXPECT_TRUE(after.state.at(0).exp_avg.is_contiguous(at::MemoryFormat::ChannelsLast));
}

}  // namespace
