// batch_norm_bf16: oneDNN's training-mode BatchNorm (+ fused ReLU) on bf16 channels-last data. Its
// result must be LibTorch's fp32 batch_norm (+ relu) on the same bf16 values rounded once to bf16,
// its gradients the fp32 ones within bf16 rounding, its running statistics LibTorch's.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "posekd/core/bf16_conv.h"
#include "posekd/core/bf16_norm.h"
#include "posekd/core/error.h"

// (its own namespace: the tests of a module share unity translation units)
namespace bf16_norm_test {

using posekd::batch_norm_bf16;

bool skip_no_bf16() { return !posekd::conv2d_bf16_supported(); }

// Student-like shapes (C a multiple of 16: oneDNN's jit kernels) and odd ones (C = 19, 38, 3:
// LibTorch's BatchNorm, as oneDNN 2.6.3 has no jit kernel for them; N = 1; odd H and W; N*H*W = 3).
const std::vector<std::vector<int64_t>> kShapes = {{2, 32, 8, 8}, {3, 64, 5, 7}, {8, 96, 16, 16}, {1, 128, 3, 5},
                                                   {1, 16, 1, 3}, {1, 19, 7, 9}, {2, 38, 9, 5},   {4, 3, 3, 5}};

// bf16 activations with a per-channel offset and scale (as after a convolution), fp32 parameters.
struct Case {
  torch::Tensor x, w, b, rm, rv, gy;  // x: bf16 NCHW; gy: fp32 holding bf16 values
};
Case make_case(const std::vector<int64_t>& s, int seed) {
  torch::manual_seed(seed);
  const int64_t c = s[1];
  Case k;
  k.x = (torch::randn(s) * (torch::rand({1, c, 1, 1}) * 3 + 0.1) + torch::randn({1, c, 1, 1}) * 2).to(torch::kBFloat16);
  k.w = torch::randn({c});  // negative scales too
  k.b = torch::randn({c}) * 0.5;
  k.rm = torch::randn({c});
  k.rv = torch::rand({c}) + 0.5;
  k.gy = torch::randn(s).to(torch::kBFloat16).to(torch::kFloat);
  return k;
}

// One bf16 ulp of each element of `ref` (fp32): 2^(floor(log2 |ref|) - 7).
torch::Tensor bf16_ulp(const torch::Tensor& ref) {
  return torch::exp2(torch::floor(torch::log2(ref.abs().clamp_min(1e-30))) - 7);
}

// max over elements of |a - ref| / |ref|, and relative error of the whole tensor (L2)
double max_rel(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a.to(torch::kFloat) - ref).abs() / ref.abs().clamp_min(1e-30)).max().item<double>();
}
double norm_rel(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a.to(torch::kFloat) - ref).norm() / ref.norm()).item<double>();
}

struct Result {
  torch::Tensor y, gx, gw, gb, rm, rv;
};

// One training step's forward and backward: batch_norm_bf16 (bf = true) or LibTorch in fp32 on the
// same bf16 values. `x_cl`: the input channels-last.
Result run(const Case& k, bool bf, bool relu, bool x_cl, double momentum = 0.1, int steps = 1) {
  Result r;
  r.rm = k.rm.clone();
  r.rv = k.rv.clone();
  auto x = bf ? k.x.clone() : k.x.to(torch::kFloat);
  if (x_cl) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  x.requires_grad_(true);
  auto w = k.w.clone().requires_grad_(true), b = k.b.clone().requires_grad_(true);
  for (int i = 0; i < steps; ++i) {
    if (bf) {
      r.y = batch_norm_bf16(x, w, b, r.rm, r.rv, momentum, 1e-5, relu);
    } else {
      r.y = torch::batch_norm(x, w, b, r.rm, r.rv, /*training=*/true, momentum, 1e-5, /*cudnn_enabled=*/false);
      if (relu) r.y = torch::relu(r.y);
    }
  }
  (r.y.to(torch::kFloat) * k.gy).sum().backward();
  r.gx = x.grad();
  r.gw = w.grad();
  r.gb = b.grad();
  return r;
}

TEST(Bf16Norm, UsesJitKernelsForTheStudentsShapes) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  for (int64_t c : {16, 32, 64, 96, 128})
    for (bool relu : {false, true}) {
      const auto info = posekd::batch_norm_bf16_impl_info({8, c, 16, 16}, 1e-5, relu);
      const auto split = info.find("; backward: ");
      ASSERT_EQ(info.rfind("forward: ", 0), 0u) << info;
      ASSERT_NE(split, std::string::npos) << info;
      EXPECT_NE(info.substr(0, split).find("jit"), std::string::npos) << info;  // e.g. bnorm_jit:avx512_core_bf16
      EXPECT_NE(info.substr(split).find("jit"), std::string::npos) << info;
      EXPECT_EQ(info.find("ref"), std::string::npos) << info;
    }
  // No jit kernel for C % 16 != 0 in oneDNN 2.6.3: LibTorch runs those.
  for (int64_t c : {3, 19, 38})
    EXPECT_EQ(posekd::batch_norm_bf16_impl_info({2, c, 4, 4}, 1e-5, true).rfind("LibTorch", 0), 0u);
}

TEST(Bf16Norm, ForwardIsFp32ReferenceRoundedToBf16) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  for (const auto& s : kShapes) {
    for (bool relu : {false, true}) {
      SCOPED_TRACE(c10::str(s, " relu ", relu));
      auto k = make_case(s, 11);
      auto ref = run(k, false, relu, false), got = run(k, true, relu, true);
      ASSERT_EQ(got.y.scalar_type(), torch::kBFloat16);
      ASSERT_EQ(got.y.sizes(), ref.y.sizes());
      EXPECT_TRUE(got.y.is_contiguous(at::MemoryFormat::ChannelsLast));
      // One bf16 rounding of the result, plus the fp32 rounding of the two computations (relative
      // to the terms of gamma * x_hat + beta, which can cancel).
      auto y = got.y.to(torch::kFloat);
      auto err = (y - ref.y).abs();
      auto tol = bf16_ulp(ref.y) + 1e-6 * (k.b.abs().view({1, -1, 1, 1}) + 10 * k.w.abs().view({1, -1, 1, 1}));
      EXPECT_TRUE((err <= tol).all().item<bool>())
          << "max err " << err.max().item<float>() << " max rel " << max_rel(y, ref.y);
      if (relu) EXPECT_GE(y.min().item<float>(), 0.f);
      // Running statistics: LibTorch's update, unbiased variance.
      EXPECT_LT(max_rel(got.rm, ref.rm), 1e-5);
      EXPECT_LT(max_rel(got.rv, ref.rv), 1e-5);
    }
  }
}

// max |a - ref| relative to max |ref|
double max_err_rel(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a.to(torch::kFloat) - ref).abs().max() / ref.abs().max()).item<double>();
}

// Gradients against fp32 autograd on the same bf16 input and the same (bf16-exact) output gradient.
// x: the fp32 input gradient rounded once to bf16, so per element within half a bf16 ulp of the
// reference (measured: at most 0.5 ulp) plus the difference of the two fp32 computations, which
// cancel (g - mean(g) - x_hat * mean(g * x_hat)) and so are bounded relative to the largest element
// (measured: < 2e-8 of it; bound 1e-6); the L2 error is that rounding's, ~1.7e-3 (measured
// 1.2e-3-2.2e-3, bound 3e-3). weight, bias: fp32 sums over N*H*W in another order, measured
// < 1e-6 of the largest element (bound 1e-5).
TEST(Bf16Norm, GradientsMatchFp32Reference) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  for (const auto& s : kShapes) {
    for (bool relu : {false, true}) {
      SCOPED_TRACE(c10::str(s, " relu ", relu));
      auto k = make_case(s, 12);
      auto ref = run(k, false, relu, false), got = run(k, true, relu, true);
      ASSERT_EQ(got.gx.scalar_type(), torch::kBFloat16);
      EXPECT_TRUE(got.gx.is_contiguous(at::MemoryFormat::ChannelsLast));
      ASSERT_EQ(got.gw.scalar_type(), torch::kFloat);
      ASSERT_EQ(got.gb.scalar_type(), torch::kFloat);
      auto gx = got.gx.to(torch::kFloat);
      auto err = (gx - ref.gx).abs();
      const double scale = ref.gx.abs().max().item<double>();
      EXPECT_TRUE((err <= bf16_ulp(ref.gx) / 2 + 1e-6 * scale).all().item<bool>())
          << "max err / ulp " << (err / bf16_ulp(ref.gx)).max().item<double>() << ", max (err - ulp / 2) / max |ref| "
          << ((err - bf16_ulp(ref.gx) / 2) / scale).max().item<double>();
      EXPECT_LT(norm_rel(gx, ref.gx), 3e-3);
      EXPECT_LT(max_err_rel(got.gw, ref.gw), 1e-5);
      EXPECT_LT(max_err_rel(got.gb, ref.gb), 1e-5);
    }
  }
}

TEST(Bf16Norm, NchwInputGivesTheSameResultAndAnNchwGradient) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  for (const auto& s : {kShapes[0], kShapes[5]}) {  // oneDNN's kernel and LibTorch's (C = 19)
    SCOPED_TRACE(c10::str(s));
    auto k = make_case(s, 13);
    auto cl = run(k, true, true, true), nchw = run(k, true, true, false);
    EXPECT_TRUE(cl.y.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(nchw.y.is_contiguous(at::MemoryFormat::ChannelsLast));  // the result is channels-last always
    EXPECT_TRUE(torch::equal(cl.y, nchw.y));
    EXPECT_TRUE(nchw.gx.is_contiguous());  // x's own layout (the conversion is differentiated)
    EXPECT_EQ(nchw.gx.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(cl.gx, nchw.gx));
    EXPECT_TRUE(torch::equal(cl.gw, nchw.gw));
    EXPECT_TRUE(torch::equal(cl.gb, nchw.gb));
    EXPECT_TRUE(torch::equal(cl.rm, nchw.rm));
    EXPECT_TRUE(torch::equal(cl.rv, nchw.rv));
  }
}

TEST(Bf16Norm, RunningStatisticsFollowLibTorchOverSteps) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  // Five steps on the same batch with the student's momentum (0.05) and another; unbiased variance
  // (n / (n - 1), large for N*H*W = 3).
  for (const auto& s : {kShapes[1], kShapes[4], kShapes[6]})
    for (double momentum : {0.05, 0.3}) {
      SCOPED_TRACE(c10::str(s, " momentum ", momentum));
      auto k = make_case(s, 14);
      auto ref = run(k, false, false, false, momentum, 5), got = run(k, true, false, true, momentum, 5);
      EXPECT_LT(max_rel(got.rm, ref.rm), 1e-5);
      EXPECT_LT(max_rel(got.rv, ref.rv), 1e-5);
      EXPECT_GT(max_rel(got.rv, k.rv), 1e-2);  // (they did move)
    }
}

TEST(Bf16Norm, PartialGradientsAffineFalseAndNoRunningStats) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  auto k = make_case({2, 32, 6, 6}, 15);
  // Only the weight wants a gradient (a frozen input).
  auto w = k.w.clone().requires_grad_(true);
  auto y = batch_norm_bf16(k.x, w, k.b, {}, {}, 0.1, 1e-5, true);
  (y.to(torch::kFloat) * k.gy).sum().backward();
  ASSERT_TRUE(w.grad().defined());
  auto wr = k.w.clone().requires_grad_(true);
  auto yr = torch::relu(torch::batch_norm(k.x.to(torch::kFloat), wr, k.b, {}, {}, true, 0.1, 1e-5, false));
  (yr * k.gy).sum().backward();
  EXPECT_LT(max_err_rel(w.grad(), wr.grad()), 1e-5);
  // affine=false, running statistics not tracked: weight 1, bias 0.
  auto x = k.x.clone().requires_grad_(true);
  auto y2 = batch_norm_bf16(x, {}, {}, {}, {}, 0.1, 1e-5, false);
  auto ref = torch::batch_norm(k.x.to(torch::kFloat), {}, {}, {}, {}, true, 0.1, 1e-5, false);
  EXPECT_TRUE(((y2.to(torch::kFloat) - ref).abs() <= bf16_ulp(ref) + 1e-6).all().item<bool>());
  y2.to(torch::kFloat).sum().backward();  // d/dx sum(x_hat) = 0
  EXPECT_LT(x.grad().to(torch::kFloat).abs().max().item<float>(), 1e-4);
  // Without autograd (no grad mode): the same result, the running statistics still updated.
  torch::NoGradGuard no_grad;
  auto rm = k.rm.clone(), rv = k.rv.clone();
  auto y3 = batch_norm_bf16(k.x, k.w, k.b, rm, rv, 0.1, 1e-5, true);
  EXPECT_FALSE(y3.requires_grad());
  EXPECT_TRUE(torch::equal(y3, y));
  EXPECT_FALSE(torch::equal(rm, k.rm));
}

TEST(Bf16Norm, RejectsBadInput) {
  auto x = torch::randn({2, 8, 4, 4}).to(torch::kBFloat16);
  auto p = torch::ones({8}), q = torch::zeros({8});
  auto bad = [&](const torch::Tensor& xx, const torch::Tensor& w, const torch::Tensor& rm) {
    EXPECT_THROW(batch_norm_bf16(xx, w, q, rm, p.clone(), 0.1, 1e-5, true), posekd::Error);
  };
  bad(torch::randn({8, 4, 4}).to(torch::kBFloat16), p, q.clone());     // 3-D
  bad(torch::randn({2, 8, 4, 4}), p, q.clone());                       // fp32 input
  bad(torch::randn({2, 8, 4, 4}).to(torch::kHalf), p, q.clone());      // fp16 input
  bad(x, torch::ones({9}), q.clone());                                 // weight of 9 channels
  bad(x, p.to(torch::kBFloat16), q.clone());                           // bf16 weight
  bad(x, torch::ones({8, 1}), q.clone());                              // 2-D weight
  bad(x, p, torch::zeros({7}));                                        // running mean of 7
  bad(x, p, torch::zeros({8}, torch::kDouble));                        // fp64 running mean
  bad(torch::randn({1, 8, 1, 1}).to(torch::kBFloat16), p, q.clone());  // one value per channel
  EXPECT_THROW(batch_norm_bf16(x, p, torch::zeros({4}), {}, {}, 0.1, 1e-5, false), posekd::Error);  // bias of 4
  EXPECT_THROW(batch_norm_bf16(x, p, q, {}, torch::ones({3}), 0.1, 1e-5, false), posekd::Error);    // running var
  EXPECT_THROW(batch_norm_bf16(x, p, q, {}, {}, 0.1, 0.0, false), posekd::Error);                   // eps 0
  try {
    batch_norm_bf16(x, torch::ones({9}), q, {}, {}, 0.1, 1e-5, false);
    ADD_FAILURE() << "no exception";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[8]"), std::string::npos) << e.what();
  }
}

}  // namespace bf16_norm_test
