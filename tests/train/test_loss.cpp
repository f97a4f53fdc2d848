#include <gtest/gtest.h>
#include <torch/torch.h>

#include "posekd/train/loss.h"

using namespace posekd::train;

TEST(Loss, L2IsHalfSumOfSquaresPerBatchElement) {
  auto p = torch::tensor({1.f, 2.f, 3.f, 4.f}).view({2, 1, 1, 2});
  auto t = torch::tensor({0.f, 0.f, 1.f, 1.f}).view({2, 1, 1, 2});
  // diffs 1,2,2,3 -> squares 1+4+4+9 = 18; /2 /B(2) = 4.5
  EXPECT_FLOAT_EQ(l2_loss(p, t, {}).item<float>(), 4.5f);
  auto m = torch::tensor({1.f, 0.f, 0.f, 1.f}).view({2, 1, 1, 2});
  // masked: 1 + 9 = 10 -> 2.5
  EXPECT_FLOAT_EQ(l2_loss(p, t, m).item<float>(), 2.5f);
}

TEST(Loss, WeightsStudentAndDistillLikeTheSeed) {
  torch::manual_seed(0);
  auto h = torch::randn({2, 19, 4, 4}, torch::requires_grad());
  auto p = torch::randn({2, 38, 4, 4}, torch::requires_grad());
  auto gh = torch::rand({2, 19, 4, 4}), gp = torch::rand({2, 38, 4, 4});
  auto th = torch::rand({2, 19, 4, 4}), tp = torch::rand({2, 38, 4, 4});
  auto mask = torch::ones({2, 1, 4, 4});
  mask.index_put_({0, 0, 1, 1}, 0.f);
  auto parts = pose_loss(h, p, gh, gp, mask, th, tp, {0.3, 0.7});
  double s = ((h - gh) * mask).pow(2).sum().item<double>() / 4 + ((p - gp) * mask).pow(2).sum().item<double>() / 4;
  double d = (h - th).pow(2).sum().item<double>() / 4 + (p - tp).pow(2).sum().item<double>() / 4;
  EXPECT_NEAR(parts.student.item<double>(), s, 1e-4 * s);
  EXPECT_NEAR(parts.distill.item<double>(), d, 1e-4 * d);
  EXPECT_NEAR(parts.total.item<double>(), 0.3 * s + 0.7 * d, 1e-4 * s);
  parts.total.backward();
  // d total / d h = 0.3 * (h-gh)*mask^2 + 0.7 * (h-th), divided by B (the /2 cancels the square's 2)
  auto expect = (0.3 * (h - gh) * mask * mask + 0.7 * (h - th)) / 2.0;
  EXPECT_TRUE(torch::allclose(h.grad(), expect.detach(), 1e-5, 1e-6));
  // the masked cell gets only the distillation gradient
  EXPECT_NEAR(h.grad()[0][3][1][1].item<float>(), (0.7 * (h - th) / 2.0)[0][3][1][1].item<float>(), 1e-6);
}

TEST(Loss, WithoutTeacherIsTheStudentLoss) {
  auto h = torch::ones({1, 19, 2, 2}), p = torch::ones({1, 38, 2, 2});
  auto parts = pose_loss(h, p, torch::zeros_like(h), torch::zeros_like(p), {}, {}, {}, {0.3, 0.7});
  EXPECT_FLOAT_EQ(parts.total.item<float>(), (19 * 4 + 38 * 4) / 2.0f);
  EXPECT_FLOAT_EQ(parts.distill.item<float>(), 0.f);
}
