// Hand-computed checks of the ai8x primitives (ai8x.md 2.1, 2.6) and the data fold.
#include <gtest/gtest.h>

#include "posekd/ai8x/quantizers.h"

using namespace posekd::ai8x;

TEST(Quantizers, QnRoundsHalfUpOnTheGrid) {
  auto x = torch::tensor({0.0f, 1.0f / 256, -1.0f / 256, 0.3f, -0.3f, 0.99f});
  auto q = quantize_value(x, 8);
  // floor(x*128+0.5)/128: 0, 1/128 (half up), 0 (-0.5+0.5=0), 38/128, -38/128, 127/128
  auto want = torch::tensor({0.0f, 1.0f / 128, 0.0f, 38.0f / 128, -38.0f / 128, 127.0f / 128});
  EXPECT_TRUE(q.equal(want));
  // simulate forms
  EXPECT_TRUE(quantize_simulate_value(torch::tensor({191.0f, 192.0f, -64.0f}), 8)
                  .equal(torch::tensor({1.0f, 2.0f, 0.0f})));
  EXPECT_TRUE(quantize_simulate_value(torch::tensor({2.5f, -2.5f}), 1).equal(torch::tensor({3.0f, -2.0f})));
  EXPECT_TRUE(quantize_simulate_value(torch::tensor({0.25f}), 0).equal(torch::tensor({1.0f})));
}

TEST(Quantizers, SteHasIdentityGradientAndClampMasks) {
  auto x = torch::tensor({0.3f, -2.0f, 0.5f}, torch::requires_grad());
  quantize_ste(x, 8).sum().backward();
  EXPECT_TRUE(x.grad().equal(torch::ones({3})));
  // fused: in_scale 2 (grad x2), relu, clamp [-1,127/128], out_scale 4
  auto y = torch::tensor({0.2f, -0.1f, 0.6f, 127.0f / 256}, torch::requires_grad());
  auto out = quantize_clamp_ste(y, 2.0, 8, kActLo, kActHi, true, 4.0);
  // 0.4 -> floor(51.7)/128 = 51/128 ; relu(-0.2)=0 ; 1.2 -> clamped 127/128 ; 127/128 exactly
  auto want = torch::tensor({51.0f / 128, 0.0f, 127.0f / 128, 127.0f / 128}) * 4;
  EXPECT_TRUE(out.equal(want));
  out.sum().backward();
  EXPECT_TRUE(y.grad().equal(torch::tensor({8.0f, 0.0f, 0.0f, 8.0f})));
}

TEST(Quantizers, OutputShiftAndQuantiles) {
  EXPECT_EQ(output_shift_from_limit(1.0f), 0);
  EXPECT_EQ(output_shift_from_limit(0.5f), -1);
  EXPECT_EQ(output_shift_from_limit(0.5000001f), 0);
  EXPECT_EQ(output_shift_from_limit(3.0f), 2);
  EXPECT_EQ(output_shift_from_limit(1e-9f), -15);
  EXPECT_EQ(output_shift_from_limit(1e9f), 15);
  auto w = torch::tensor({0.1f, -0.3f, 0.2f, 0.05f});
  auto b = torch::tensor({0.26f});
  EXPECT_EQ(output_shift_from_params(w, b, 1.0), -1);  // max 0.3 -> ceil(log2 .3) = -1
  auto v = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f});
  EXPECT_FLOAT_EQ(ersatz_quantile(v, 1.0).item<float>(), 4.0f);
  EXPECT_FLOAT_EQ(torch_quantile(v, 0.5).item<float>(), 2.5f);
  // ersatz, N=4, q=0.5: xp = 1/8,3/8,5/8,7/8 -> count 2 -> i=1, g=0.5*3-1=0.5 -> 2.5
  EXPECT_FLOAT_EQ(ersatz_quantile(v, 0.5).item<float>(), 2.5f);
  // q=0.9: count 4 -> clamp(4,1,3)-1 = 2, g = 2.7-2 = 0.7 -> 3.7
  EXPECT_NEAR(ersatz_quantile(v, 0.9).item<float>(), 3.7f, 1e-6);
  EXPECT_NEAR(torch_quantile(v, 0.9).item<float>(), 3.7f, 1e-6);
  // q=0.1: count 0 -> i=0, g=0.3 -> 1.3 (torch.quantile gives 1.3 as well)
  EXPECT_NEAR(ersatz_quantile(v, 0.1).item<float>(), 1.3f, 1e-6);
  auto v5 = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f});
  // N=5, q=0.05: xp_0 = 0.1 > q -> count 0 -> i=0, g=0.2 -> 1.2; torch: 0.05*4 = 0.2 -> 1.2
  // q=0.3: xp = .1,.3 -> count 2, i=1, g=1.2-1=0.2 -> 2.2 ; torch: 1.2 -> 2.2
  EXPECT_NEAR(ersatz_quantile(v5, 0.3).item<float>(), 2.2f, 1e-6);
}

TEST(Quantizers, BnFoldMatchesBnForward) {
  torch::manual_seed(3);
  auto w = torch::randn({4, 3, 3, 3});
  auto b = torch::randn({4});
  auto g = torch::rand({4}) + 0.5, be = torch::randn({4});
  auto m = torch::randn({4}), v = torch::rand({4}) + 0.2;
  auto x = torch::randn({2, 3, 8, 8});
  auto ref = torch::batch_norm(torch::conv2d(x, w, b, 1, 1), g, be, m, v, false, 0.0, 1e-5, false);
  auto f = fold_bn(w, b, g, be, m, v, 1e-5);
  auto got = torch::conv2d(x, f.weight, f.bias, 1, 1);
  EXPECT_LT((got - ref).abs().max().item<double>(), 1e-4);
}

TEST(Quantizers, FoldPutsPhaseMajorChannels) {
  auto x = torch::arange(2 * 3 * 4 * 4).reshape({2, 3, 4, 4}).to(torch::kFloat);
  auto y = fold(x, 2);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 12, 2, 2}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int c = 0; c < 3; ++c) {
        auto want = x.index({torch::indexing::Slice(), c, torch::indexing::Slice(i, 4, 2),
                             torch::indexing::Slice(j, 4, 2)});
        EXPECT_TRUE(y.select(1, (i * 2 + j) * 3 + c).equal(want));
      }
}
