// conv2d_bf16: bf16 operands, fp32 destination. On 8-bit-grid operands it must equal the fp32
// convolution bit for bit (what the QAT phase relies on); on general data it is within bf16 input
// rounding; its gradients match fp32 autograd within bf16 tolerance.
#include <gtest/gtest.h>

#include <cstdlib>

#include "posekd/core/bf16_conv.h"
#include "posekd/core/precision.h"

using namespace posekd;
namespace F = torch::nn::functional;

namespace {

struct Geo {
  int64_t n, cin, cout, h, w, k, stride, pad, dil, groups;
  bool bias;
};

// Values k/128 with k in [-128, 127]: exact in bf16 (8 significant bits).
torch::Tensor grid8(std::vector<int64_t> shape) { return torch::randint(-128, 128, shape, torch::kFloat) / 128.0; }

torch::Tensor ref_conv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, const Geo& g) {
  return F::conv2d(x, w,
                   F::Conv2dFuncOptions().bias(b).stride(g.stride).padding(g.pad).dilation(g.dil).groups(g.groups));
}

torch::Tensor bf_conv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, const Geo& g) {
  return conv2d_bf16(x, w, b, {g.stride, g.stride}, {g.pad, g.pad}, {g.dil, g.dil}, g.groups);
}

const std::vector<Geo> kGeos = {
    {2, 64, 64, 16, 16, 3, 1, 1, 1, 1, true},    // a student trunk layer
    {2, 128, 96, 9, 11, 3, 2, 1, 1, 1, true},    // stride 2, odd sizes
    {1, 12, 32, 20, 20, 3, 1, 1, 1, 1, false},   // folded input, no bias
    {2, 64, 57, 8, 8, 1, 1, 0, 1, 1, true},      // 1x1 head
    {1, 32, 32, 17, 17, 3, 1, 2, 2, 32, false},  // depthwise, dilated (teacher)
    {1, 48, 24, 10, 10, 3, 1, 0, 1, 2, true},    // grouped, no padding
};

bool skip_no_bf16() { return !conv2d_bf16_supported(); }

}  // namespace

TEST(Bf16Conv, EqualsFp32BitForBitOnEightBitGrids) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  torch::manual_seed(3);
  for (const auto& g : kGeos) {
    auto x = grid8({g.n, g.cin, g.h, g.w});
    auto w = grid8({g.cout, g.cin / g.groups, g.k, g.k});
    auto b = g.bias ? grid8({g.cout}) : torch::Tensor();
    auto ref = ref_conv(x, w, b, g);
    for (bool cl : {false, true}) {
      auto xi = cl ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
      auto y = bf_conv(xi, w, b, g);
      ASSERT_EQ(y.scalar_type(), torch::kFloat);
      ASSERT_EQ(y.sizes(), ref.sizes());
      EXPECT_EQ(y.suggest_memory_format(), cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
      EXPECT_TRUE(torch::equal(y, ref)) << "cin " << g.cin << " groups " << g.groups << " cl " << cl << " max diff "
                                        << (y - ref).abs().max().item<float>();
    }
  }
}

TEST(Bf16Conv, GeneralDataWithinBf16InputRounding) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  torch::manual_seed(4);
  for (const auto& g : kGeos) {
    auto x = torch::randn({g.n, g.cin, g.h, g.w});
    auto w = torch::randn({g.cout, g.cin / g.groups, g.k, g.k}) * 0.1;
    auto b = g.bias ? torch::randn({g.cout}) : torch::Tensor();
    auto ref = ref_conv(x, w, b, g);
    auto y = bf_conv(x, w, b, g);
    // Same inputs rounded to bf16 first, then fp32: only the summation order differs.
    auto ref_rounded =
        ref_conv(x.to(torch::kBFloat16).to(torch::kFloat), w.to(torch::kBFloat16).to(torch::kFloat), b, g);
    EXPECT_LT(((y - ref_rounded).norm() / ref_rounded.norm()).item<double>(), 1e-5);
    const double rel = ((y - ref).norm() / ref.norm()).item<double>();
    EXPECT_LT(rel, 1e-2);
    EXPECT_GT(rel, 0.0);  // inputs were rounded: not the fp32 result
  }
}

TEST(Bf16Conv, GradientsMatchFp32Autograd) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  // Both forms of the weight gradient (oneDNN's primitive, the im2col matmul), then the timed choice.
  for (const char* form : {"onednn", "matmul", ""}) {
    SCOPED_TRACE(form);
    if (*form)
      setenv("POSEKD_BF16_WGRAD", form, 1);
    else
      unsetenv("POSEKD_BF16_WGRAD");
    torch::manual_seed(5);
    for (const auto& g : kGeos) {
      for (bool cl : {false, true}) {
        auto x0 = torch::randn({g.n, g.cin, g.h, g.w});
        if (cl) x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
        auto w0 = torch::randn({g.cout, g.cin / g.groups, g.k, g.k}) * 0.1;
        auto b0 = g.bias ? torch::randn({g.cout}) : torch::Tensor();
        auto gy = torch::randn_like(ref_conv(x0, w0, b0, g));
        auto run = [&](bool bf) {
          auto x = x0.clone().requires_grad_(true);
          auto w = w0.clone().requires_grad_(true);
          auto b = b0.defined() ? b0.clone().requires_grad_(true) : torch::Tensor();
          auto y = bf ? bf_conv(x, w, b, g) : ref_conv(x, w, b, g);
          (y * gy).sum().backward();
          return std::vector<torch::Tensor>{x.grad(), w.grad(), b.defined() ? b.grad() : torch::Tensor()};
        };
        auto r = run(false), m = run(true);
        EXPECT_EQ(m[0].scalar_type(), torch::kFloat);
        EXPECT_EQ(m[0].suggest_memory_format(), cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
        for (int i = 0; i < 3; ++i) {
          if (!r[i].defined()) continue;
          ASSERT_TRUE(m[i].defined());
          const double rel = ((m[i] - r[i]).norm() / r[i].norm()).item<double>();
          EXPECT_LT(rel, 2e-2) << "grad " << i << " cin " << g.cin << " groups " << g.groups;
        }
      }
    }
  }
  unsetenv("POSEKD_BF16_WGRAD");
}

TEST(Bf16Conv, Bf16ResultAndBf16InputGradient) {
  // bf16_out: the fp32-destination result rounded once to bf16; a bf16 input gets a bf16 gradient
  // (the fp32 one rounded), the weight and bias gradients stay fp32 and unchanged.
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  // Deterministic algorithms: oneDNN's first backward implementation, not the fastest of a timing
  // (the two runs below use different primitives, which could time differently).
  const bool det = at::globalContext().deterministicAlgorithms();
  at::globalContext().setDeterministicAlgorithms(true, false);
  torch::manual_seed(6);
  for (const auto& g : kGeos) {
    auto x0 = torch::randn({g.n, g.cin, g.h, g.w}).to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
    auto w0 = torch::randn({g.cout, g.cin / g.groups, g.k, g.k}) * 0.1;
    auto b0 = g.bias ? torch::randn({g.cout}) : torch::Tensor();
    auto run = [&](bool bf16_out) {
      auto x = x0.clone().requires_grad_(true);
      auto w = w0.clone().requires_grad_(true);
      auto b = b0.defined() ? b0.clone().requires_grad_(true) : torch::Tensor();
      auto y = conv2d_bf16(x, w, b, {g.stride, g.stride}, {g.pad, g.pad}, {g.dil, g.dil}, g.groups, bf16_out);
      auto gy = torch::ones_like(y, y.options().dtype(torch::kFloat)).cumsum(1).remainder(5).sub(2);
      (y.to(torch::kFloat) * gy).sum().backward();
      return std::vector<torch::Tensor>{y, x.grad(), w.grad(), b.defined() ? b.grad() : torch::Tensor()};
    };
    auto f = run(false), h = run(true);
    ASSERT_EQ(f[0].scalar_type(), torch::kFloat);
    ASSERT_EQ(h[0].scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(h[0].is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(torch::equal(h[0], f[0].to(torch::kBFloat16))) << "cin " << g.cin << " groups " << g.groups;
    EXPECT_EQ(f[1].scalar_type(), torch::kBFloat16);  // the input's dtype
    EXPECT_TRUE(torch::equal(f[1], h[1]));
    EXPECT_GT(f[1].to(torch::kFloat).abs().sum().item<double>(), 0.0);
    for (int i = 2; i < 4; ++i)
      if (f[i].defined()) {
        EXPECT_EQ(f[i].scalar_type(), torch::kFloat);
        EXPECT_TRUE(torch::equal(f[i], h[i])) << "grad " << i;
      }
  }
  at::globalContext().setDeterministicAlgorithms(det, false);
}

TEST(Bf16Conv, RejectsBadShapes) {
  auto x = torch::zeros({1, 8, 4, 4});
  EXPECT_THROW(conv2d_bf16(x, torch::zeros({4, 3, 3, 3}), {}), std::exception);
  EXPECT_THROW(conv2d_bf16(torch::zeros({8, 4, 4}), torch::zeros({4, 8, 3, 3}), {}), std::exception);
  if (skip_no_bf16()) return;
  EXPECT_THROW(conv2d_bf16(torch::zeros({1, 8, 2, 2}), torch::zeros({4, 8, 3, 3}), {}), std::exception);
}

TEST(Bf16Conv, InferenceWithFusedActivation) {
  if (skip_no_bf16()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  // Deterministic algorithms: oneDNN's first backward implementation, not the fastest of a timing
  // (the two runs below use different primitives, which could time differently).
  const bool det = at::globalContext().deterministicAlgorithms();
  at::globalContext().setDeterministicAlgorithms(true, false);
  torch::manual_seed(6);
  for (const auto& g : kGeos) {
    auto x = torch::randn({g.n, g.cin, g.h, g.w}).to(torch::kBFloat16);
    auto w = (torch::randn({g.cout, g.cin / g.groups, g.k, g.k}) * 0.1).to(torch::kBFloat16);
    auto b = g.bias ? torch::randn({g.cout}) : torch::Tensor();
    // Reference: the same bf16 operands in fp32, then the activation.
    auto ref = ref_conv(x.to(torch::kFloat), w.to(torch::kFloat), b, g);
    for (FusedAct act : {FusedAct::none, FusedAct::relu, FusedAct::elu}) {
      auto want = act == FusedAct::relu ? torch::relu(ref) : act == FusedAct::elu ? torch::elu(ref) : ref;
      auto y = conv2d_bf16_inference(x, w, b, {g.stride, g.stride}, {g.pad, g.pad}, {g.dil, g.dil}, g.groups, act);
      ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
      ASSERT_EQ(y.sizes(), want.sizes());
      EXPECT_EQ(y.suggest_memory_format(), at::MemoryFormat::ChannelsLast);
      // One bf16 rounding of the result: at most 2^-8 relative per element.
      auto err = (y.to(torch::kFloat) - want).abs();
      EXPECT_TRUE((err <= want.abs() * std::ldexp(1.0, -8) + 1e-6).all().item<bool>())
          << "groups " << g.groups << " act " << static_cast<int>(act) << " max err " << err.max().item<float>();
      if (act == FusedAct::relu) EXPECT_GE(y.min().item<float>(), 0.f);
    }
  }
  EXPECT_THROW(conv2d_bf16_inference(torch::zeros({1, 8, 4, 4}), torch::zeros({4, 8, 3, 3}, torch::kBFloat16), {},
                                     {1, 1}, {1, 1}, {1, 1}, 1, FusedAct::none),
               std::exception);  // fp32 input
}
