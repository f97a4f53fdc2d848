// max_pool2d_nonoverlapping against LibTorch's max_pool2d: values, gradients, ties, NaN, layouts.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "posekd/core/max_pool.h"

namespace max_pool_test {

namespace F = torch::nn::functional;

struct PoolRun {
  torch::Tensor y, gx;
};

// forward with grad, backward with gradient g; LibTorch's (ref) or posekd's
PoolRun pool_run(const torch::Tensor& x0, int64_t k, const torch::Tensor& g, bool ref) {
  auto x = x0.clone().requires_grad_(true);
  auto y = ref ? F::max_pool2d(x, F::MaxPool2dFuncOptions(k).stride(k)) : posekd::max_pool2d_nonoverlapping(x, k);
  y.backward(g);
  return {y.detach(), x.grad()};
}

TEST(MaxPool, ValuesAndGradientsEqualLibTorchs) {
  torch::manual_seed(4);
  struct Case {
    std::vector<int64_t> sizes;
    int64_t k;
  };
  for (auto dtype : {torch::kBFloat16, torch::kFloat}) {
    for (const Case& c : {Case{{2, 64, 16, 16}, 2}, Case{{1, 19, 9, 7}, 2}, Case{{3, 5, 10, 11}, 3},
                          Case{{2, 3, 4, 4}, 4}, Case{{1, 16, 5, 5}, 1}}) {
      for (bool cl : {true, false}) {
        // few distinct values: many ties (the first maximum in scan order takes the gradient)
        for (int levels : {7, 100000}) {
          auto x = (torch::randint(0, levels, c.sizes) / static_cast<double>(levels)).to(dtype);
          x = x.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
          const std::vector<int64_t> ys{c.sizes[0], c.sizes[1], c.sizes[2] / c.k, c.sizes[3] / c.k};
          auto g = torch::randn(ys).to(dtype);
          const PoolRun a = pool_run(x, c.k, g, true), b = pool_run(x, c.k, g, false);
          EXPECT_EQ(b.y.scalar_type(), dtype);
          EXPECT_TRUE(b.y.is_contiguous(at::MemoryFormat::ChannelsLast));
          EXPECT_TRUE(a.y.equal(b.y)) << c.sizes << " k " << c.k;
          EXPECT_EQ(b.gx.scalar_type(), dtype);
          EXPECT_TRUE(
              b.gx.is_contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));  // x's layout
          EXPECT_TRUE(a.gx.equal(b.gx)) << c.sizes << " k " << c.k << " levels " << levels;
          // one input element per window gets the window's gradient, the rest 0
          EXPECT_EQ(b.gx.ne(0).sum().item<int64_t>(), g.ne(0).sum().item<int64_t>());
        }
      }
    }
  }
}

TEST(MaxPool, TiesGoToTheFirstMaximumAndNanWins) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // one channel, 2x2 windows side by side: [1 1; 0 1] | [0 nan; nan 2] | [-inf -inf; -inf -inf]
  auto x = torch::tensor({1.f, 1.f, 0.f, nan, -inf, -inf, 0.f, 1.f, nan, 2.f, -inf, -inf}).view({1, 1, 2, 6});
  auto g = torch::tensor({10.f, 20.f, 30.f}).view({1, 1, 1, 3});
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const PoolRun a = pool_run(x.to(dtype), 2, g.to(dtype), true), b = pool_run(x.to(dtype), 2, g.to(dtype), false);
    EXPECT_TRUE(a.gx.equal(b.gx));
    auto gx = b.gx.to(torch::kFloat).contiguous().view({2, 6});
    EXPECT_EQ(gx[0][0].item<float>(), 10.f);  // the first of the tied 1s
    EXPECT_EQ(gx[1][2].item<float>(), 20.f);  // the last NaN (scan order: row 0 then row 1)
    EXPECT_EQ(gx[0][4].item<float>(), 30.f);  // all -inf: the first element
    EXPECT_EQ(gx.ne(0).sum().item<int64_t>(), 3);
    auto y = b.y.to(torch::kFloat).flatten();
    EXPECT_EQ(y[0].item<float>(), 1.f);
    EXPECT_TRUE(std::isnan(y[1].item<float>()));
    EXPECT_EQ(y[2].item<float>(), -inf);
  }
}

TEST(MaxPool, WithoutGradientAndBadInput) {
  auto x = torch::randn({2, 8, 6, 6}).to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
  {
    torch::NoGradGuard ng;
    EXPECT_TRUE(posekd::max_pool2d_nonoverlapping(x, 2).equal(F::max_pool2d(x, F::MaxPool2dFuncOptions(2).stride(2))));
  }
  EXPECT_THROW(posekd::max_pool2d_nonoverlapping(torch::zeros({8, 6, 6}), 2), std::exception);
  EXPECT_THROW(posekd::max_pool2d_nonoverlapping(torch::zeros({1, 8, 6, 6}, torch::kDouble), 2), std::exception);
  EXPECT_THROW(posekd::max_pool2d_nonoverlapping(x, 0), std::exception);
  EXPECT_THROW(posekd::max_pool2d_nonoverlapping(x, 17), std::exception);
  EXPECT_THROW(posekd::max_pool2d_nonoverlapping(x, 7), std::exception);  // larger than the input
}

}  // namespace max_pool_test
