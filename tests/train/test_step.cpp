// The shared training step: one Adam step on a finite loss at the given rate, nothing on a
// non-finite one, and the loss parts reported.
#include <gtest/gtest.h>

#include <cmath>

#include "posekd/train/fused_adam.h"
#include "posekd/train/step.h"

namespace {
using namespace posekd::train;

TEST(Step, AFiniteLossStepsAdamAtTheGivenRate) {
  torch::manual_seed(0);
  auto w = torch::randn({4, 3}).requires_grad_(true);
  auto w_ref = w.detach().clone().requires_grad_(true);
  auto x = torch::randn({5, 3});
  torch::optim::Adam opt({w}, torch::optim::AdamOptions(1.0)), ref({w_ref}, torch::optim::AdamOptions(1.0));
  const StepOutcome r = train_step(
      opt,
      [&] {
        auto l = (x.matmul(w.t())).pow(2).sum();
        return LossParts{l, l.detach() * 0.5, l.detach() * 0.25};
      },
      StepOptions{2e-3});
  EXPECT_TRUE(r.finite);
  EXPECT_FALSE(r.stop);
  EXPECT_NEAR(r.student, r.loss * 0.5, 1e-9);
  EXPECT_NEAR(r.distill, r.loss * 0.25, 1e-9);
  // The reference: the same gradient, LibTorch's own Adam at 2e-3.
  (x.matmul(w_ref.t())).pow(2).sum().backward();
  static_cast<torch::optim::AdamOptions&>(ref.param_groups()[0].options()).lr(2e-3);
  ref.step();
  EXPECT_TRUE(torch::allclose(w, w_ref, 1e-6, 1e-7));
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamOptions&>(opt.param_groups()[0].options()).lr(), 2e-3);
}

TEST(Step, ANonFiniteLossStepsNothing) {
  auto w = torch::ones({3}).requires_grad_(true);
  torch::optim::Adam opt({w}, torch::optim::AdamOptions(0.1));
  const StepOutcome r = train_step(opt, [&] {
    auto l = (w * std::nan("")).sum();
    return LossParts{l, l.detach(), torch::zeros({})};
  });
  EXPECT_FALSE(r.finite);
  EXPECT_TRUE(torch::equal(w, torch::ones({3})));
  EXPECT_TRUE(opt.state().empty());  // no Adam state was created
  // A stop request is passed through.
  StepOptions so;
  so.stop_requested = true;
  const StepOutcome s = train_step(
      opt,
      [&] {
        auto l = (w * w).sum();
        return LossParts{l, l.detach(), torch::zeros({})};
      },
      so);
  EXPECT_TRUE(s.finite);
  EXPECT_TRUE(s.stop);
  EXPECT_FALSE(torch::equal(w, torch::ones({3})));
}

}  // namespace
