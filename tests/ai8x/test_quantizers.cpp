// Hand-computed checks of the ai8x primitives (ai8x.md 2.1, 2.6) and the data fold.
#include <gtest/gtest.h>

#include "posekd/ai8x/quantizers.h"
#include "posekd/core/bf16_conv.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

using namespace posekd::ai8x;

TEST(Quantizers, QnRoundsHalfUpOnTheGrid) {
  auto x = torch::tensor({0.0f, 1.0f / 256, -1.0f / 256, 0.3f, -0.3f, 0.99f});
  auto q = quantize_value(x, 8);
  // floor(x*128+0.5)/128: 0, 1/128 (half up), 0 (-0.5+0.5=0), 38/128, -38/128, 127/128
  auto want = torch::tensor({0.0f, 1.0f / 128, 0.0f, 38.0f / 128, -38.0f / 128, 127.0f / 128});
  EXPECT_TRUE(q.equal(want));
  // simulate forms
  EXPECT_TRUE(
      quantize_simulate_value(torch::tensor({191.0f, 192.0f, -64.0f}), 8).equal(torch::tensor({1.0f, 2.0f, 0.0f})));
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

// The AVX-512, AVX2 and portable kernels behind quantize_clamp_ste give the same bits, and all equal
// the formula written with plain tensor operations, on values chosen to hit every edge: exact
// half-way points, the clamp bounds, zero and negative zero, huge values, infinities, NaN, and
// lengths that leave a tail after the 8- and 16-wide loops.
TEST(Quantizers, FusedKernelsAgreeBitForBitWithTheFormula) {
  using posekd::ai8x::kernels::QuantIsa;
  std::vector<float> v;
  for (int k = -300; k <= 300; ++k) v.push_back(static_cast<float>(k) / 256.0f);  // half-way points at 8 bits
  for (float e : {0.0f, -0.0f, 1.0f, -1.0f, 127.0f / 128, 0.99999f, -1.00001f, 3e38f, -3e38f, 8388608.0f, -8388609.0f,
                  1e-30f, -1e-30f, 32767.99f, 32768.0f, 40000.0f, -40000.0f})
    v.push_back(e);
  auto rnd = torch::randn({1000}, torch::TensorOptions().dtype(torch::kFloat)) * 3;
  for (int64_t i = 0; i < rnd.numel(); ++i) v.push_back(rnd[i].item<float>());
  const auto finite = torch::tensor(v);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  auto special = v;
  special.insert(special.end(), {inf, -inf, nan, -nan, nan});

  struct Case {
    float in_scale, lo, hi;
    int bits;
    bool relu;
    float out_scale;
  };
  const Case cases[] = {{2.0f, -1.0f, 127.0f / 128, 8, true, 4.0f},
                        {0.25f, -1.0f, 127.0f / 128, 8, false, 1.0f},
                        {1.0f, -32768.0f, 32768.0f, 15, false, 1.0f},
                        {8.0f, -inf, inf, 8, true, 0.5f},
                        {1.0f, -1.0f, 1.0f - 1.0f / 8, 4, false, 1.0f}};
  std::string compared;
  for (QuantIsa isa : {QuantIsa::avx2, QuantIsa::avx512})
    if (posekd::ai8x::kernels::quant_isa_supported(isa))
      compared += std::string(" ") + posekd::ai8x::kernels::quant_isa_name(isa);
  for (const auto& c : cases) {
    const float mul = std::ldexp(1.0f, c.bits - 1);
    for (QuantIsa isa : {QuantIsa::avx2, QuantIsa::avx512}) {
      if (!posekd::ai8x::kernels::quant_isa_supported(isa)) continue;
      // short lengths from an odd offset (tails and unaligned loads), then the whole vector
      for (size_t len : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{15}, size_t{16}, size_t{17},
                         size_t{19}, size_t{33}, special.size() - 1}) {
        const float* x = special.data() + 1;
        std::vector<float> ya(len), yb(len);
        std::vector<std::uint8_t> ma(len), mb(len);
        posekd::ai8x::kernels::quant_clamp_kernel(x, ya.data(), ma.data(), len, c.in_scale, mul, c.lo, c.hi, c.relu,
                                                  c.out_scale, isa);
        posekd::ai8x::kernels::quant_clamp_kernel(x, yb.data(), mb.data(), len, c.in_scale, mul, c.lo, c.hi, c.relu,
                                                  c.out_scale, QuantIsa::scalar);
        for (size_t i = 0; i < len; ++i) {
          ASSERT_EQ(std::memcmp(&ya[i], &yb[i], 4) == 0 || (std::isnan(ya[i]) && std::isnan(yb[i])), true)
              << "x=" << x[i] << " " << ya[i] << " vs " << yb[i];
          ASSERT_EQ(ma[i], mb[i]) << "x=" << x[i];
        }
        std::vector<float> g(len), ga(len), gb(len);
        for (size_t i = 0; i < len; ++i) g[i] = x[(i * 7) % len];
        posekd::ai8x::kernels::masked_scale_kernel(g.data(), ma.data(), ga.data(), len, c.in_scale * c.out_scale, isa);
        posekd::ai8x::kernels::masked_scale_kernel(g.data(), ma.data(), gb.data(), len, c.in_scale * c.out_scale,
                                                   QuantIsa::scalar);
        for (size_t i = 0; i < len; ++i) {
          ASSERT_TRUE(std::memcmp(&ga[i], &gb[i], 4) == 0 || (std::isnan(ga[i]) && std::isnan(gb[i]))) << i;
          if (!ma[i]) ASSERT_EQ(ga[i], 0.0f);
        }
        // bf16 forms (8-bit grids with a finite clamp, as the QAT layers use them): the bf16 result is
        // the float result exactly, and the gradient from bf16 bits is the float kernel's on their values.
        if (c.bits > 8 || std::isinf(c.lo) || std::isinf(c.hi)) continue;
        for (QuantIsa vec : {isa, QuantIsa::scalar}) {
          std::vector<std::uint16_t> yh(len), gh(len);
          std::vector<std::uint8_t> mh(len);
          posekd::ai8x::kernels::quant_clamp_kernel(x, yh.data(), mh.data(), len, c.in_scale, mul, c.lo, c.hi, c.relu,
                                                    c.out_scale, vec);
          std::vector<float> gr(len), gc(len), gd(len);
          for (size_t i = 0; i < len; ++i) {
            const std::uint32_t bits = static_cast<std::uint32_t>(yh[i]) << 16;
            float back;
            std::memcpy(&back, &bits, 4);
            ASSERT_TRUE(std::memcmp(&back, &ya[i], 4) == 0 || (std::isnan(back) && std::isnan(ya[i])))
                << "x=" << x[i] << " bf16 " << back << " vs " << ya[i];
            ASSERT_EQ(mh[i], ma[i]);
            std::uint32_t gbits;
            std::memcpy(&gbits, &g[i], 4);
            gh[i] = static_cast<std::uint16_t>(gbits >> 16);
            gbits = static_cast<std::uint32_t>(gh[i]) << 16;
            std::memcpy(&gr[i], &gbits, 4);
          }
          posekd::ai8x::kernels::masked_scale_kernel(gh.data(), ma.data(), gc.data(), len, c.in_scale * c.out_scale,
                                                     vec);
          posekd::ai8x::kernels::masked_scale_kernel(gr.data(), ma.data(), gd.data(), len, c.in_scale * c.out_scale,
                                                     QuantIsa::scalar);
          for (size_t i = 0; i < len; ++i)
            ASSERT_TRUE(std::memcmp(&gc[i], &gd[i], 4) == 0 || (std::isnan(gc[i]) && std::isnan(gd[i]))) << i;
        }
      }
    }
    // the formula on the finite values, with tensor operations
    auto xs = finite * c.in_scale;
    auto pass = torch::ones_like(xs, torch::kBool);
    if (c.relu) {
      pass = xs > 0;
      xs = xs.clamp_min(0);
    }
    auto q = xs.mul(mul).add(0.5).floor().div(mul);
    auto inside = q.ge(c.lo).logical_and(q.le(c.hi));
    auto want = q.clamp(c.lo, c.hi).mul(c.out_scale);
    auto want_mask = pass.logical_and(inside);
    auto xg = finite.clone().requires_grad_(true);
    auto got = quantize_clamp_ste(xg, c.in_scale, c.bits, c.lo, c.hi, c.relu, c.out_scale);
    EXPECT_TRUE(got.equal(want)) << "bits " << c.bits << " relu " << c.relu;
    got.sum().backward();
    auto want_grad = torch::where(want_mask, torch::full_like(xs, c.in_scale * c.out_scale), torch::zeros_like(xs));
    EXPECT_TRUE(xg.grad().equal(want_grad)) << "bits " << c.bits << " relu " << c.relu;
  }
  std::printf("kernels compared with the scalar loop:%s\n",
              compared.empty() ? " none (this CPU has neither AVX2 nor AVX-512)" : compared.c_str());
}

// The student's activations are channels-last: the fused kernel keeps that layout (no copy) and
// gives the same values and gradients as on the NCHW tensor.
TEST(Quantizers, FusedKernelKeepsChannelsLastAndAgreesWithNchw) {
  auto x = torch::randn({2, 5, 3, 4});
  auto a = x.clone().requires_grad_(true);
  auto b = x.contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  ASSERT_FALSE(b.is_contiguous());
  auto ya = quantize_clamp_ste(a, 2.0, 8, kActLo, kActHi, true, 1.0);
  auto yb = quantize_clamp_ste(b, 2.0, 8, kActLo, kActHi, true, 1.0);
  EXPECT_TRUE(yb.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(ya.equal(yb));
  auto w = torch::randn({2, 5, 3, 4});  // a weighting, so the incoming gradient is not uniform
  (ya * w).sum().backward();
  (yb * w).sum().backward();
  EXPECT_TRUE(a.grad().equal(b.grad()));
  EXPECT_GT(a.grad().abs().sum().item<float>(), 0.0f);
}

TEST(Quantizers, Bf16ResultHoldsTheGridExactly) {
  // The QAT layers' bf16 hand-over (mixed precision): the same values as the fp32 result, in bf16,
  // channels-last kept; a bf16 incoming gradient gives the fp32 gradient of its values.
  auto x = (torch::randn({2, 6, 5, 4}) * 2).contiguous(at::MemoryFormat::ChannelsLast);
  auto a = x.clone().requires_grad_(true), b = x.clone().requires_grad_(true);
  auto ya = quantize_clamp_ste(a, 0.5, 8, kActLo, kActHi, true, 2.0);
  auto yb = quantize_clamp_ste(b, 0.5, 8, kActLo, kActHi, true, 2.0, /*bf16_out=*/true);
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(yb.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(ya.equal(yb.to(torch::kFloat)));
  EXPECT_GT(ya.abs().sum().item<float>(), 0.0f);
  auto w = torch::randn({2, 6, 5, 4}).to(torch::kBFloat16);  // values exact in bf16 and in fp32
  ya.backward(w.to(torch::kFloat));
  yb.backward(w);
  EXPECT_EQ(b.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(a.grad().equal(b.grad()));
  EXPECT_GT(a.grad().abs().sum().item<float>(), 0.0f);
  // wider grids do not fit bf16's 8 significant bits
  EXPECT_THROW(quantize_clamp_ste(x, 1.0, 16, -1.0, 1.0, false, 1.0, true), std::exception);
}

TEST(Quantizers, ConvQuantizeClampBf16EqualsTheTwoOpsApart) {
  // The bf16 QAT layer as one autograd node: the same result and the same x, w, b gradients, bit for
  // bit, as conv2d_bf16 followed by quantize_clamp_ste with a bf16 result.
  if (!posekd::conv2d_bf16_supported()) GTEST_SKIP() << "this CPU cannot run oneDNN bf16 convolutions";
  torch::manual_seed(3);
  struct Case {
    int64_t stride, padding;
    bool relu, channels_last;
    double in_scale, out_scale;
  };
  for (const Case& c :
       {Case{1, 1, true, true, 1.0, 0.5}, Case{2, 0, false, true, 1.0, 2.0}, Case{1, 1, true, false, 2.0, 1.0}}) {
    auto fmt = c.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    // 8-bit grids, as in the QAT phase: activations k/128 in [-1, 127/128], weights k/128, bias fine-grained
    auto x0 = (torch::randint(-128, 128, {2, 24, 9, 7}) / 128.0).to(torch::kBFloat16).contiguous(fmt);
    auto w0 = torch::randint(-128, 128, {19, 24, 3, 3}) / 128.0 / 8.0;
    auto b0 = torch::randint(-1024, 1024, {19}) / 1024.0;
    auto xa = x0.clone().requires_grad_(true), wa = w0.clone().requires_grad_(true),
         ba = b0.clone().requires_grad_(true);
    auto xb = x0.clone().requires_grad_(true), wb = w0.clone().requires_grad_(true),
         bb = b0.clone().requires_grad_(true);
    auto ya = quantize_clamp_ste(
        posekd::conv2d_bf16(xa, wa, ba, {c.stride, c.stride}, {c.padding, c.padding}, {1, 1}, 1, false), c.in_scale, 8,
        kActLo, kActHi, c.relu, c.out_scale, /*bf16_out=*/true);
    auto yb =
        conv2d_quantize_clamp_bf16(xb, wb, bb, c.stride, c.padding, c.in_scale, 8, kActLo, kActHi, c.relu, c.out_scale);
    EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(yb.is_contiguous(at::MemoryFormat::ChannelsLast), c.channels_last);
    EXPECT_TRUE(ya.equal(yb));
    auto v = yb.to(torch::kFloat) * (1.0 / c.out_scale);
    auto clamped = v.eq(kActLo).logical_or(v.eq(kActHi));
    EXPECT_GT(clamped.sum().item<int64_t>(), 0);  // some outputs clamp: their gradient is masked
    EXPECT_GT(clamped.logical_not().logical_and(v.ne(0.0)).sum().item<int64_t>(), 0);
    auto g = torch::randn(ya.sizes()).to(torch::kBFloat16).contiguous(fmt);
    ya.backward(g);
    yb.backward(g);
    EXPECT_EQ(xb.grad().scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(xa.grad().equal(xb.grad()));
    EXPECT_TRUE(wa.grad().equal(wb.grad()));
    EXPECT_TRUE(ba.grad().equal(bb.grad()));
    EXPECT_GT(wb.grad().abs().sum().item<float>(), 0.0f);
    EXPECT_GT(bb.grad().abs().sum().item<float>(), 0.0f);
  }
  {  // the graph kept (retain_graph): a second backward adds the same gradients again
    auto x = (torch::randint(-128, 128, {1, 8, 6, 6}) / 128.0).to(torch::kBFloat16).requires_grad_(true);
    auto w = (torch::randint(-128, 128, {4, 8, 3, 3}) / 1024.0).requires_grad_(true);
    auto y = conv2d_quantize_clamp_bf16(x, w, torch::Tensor(), 1, 1, 1.0, 8, kActLo, kActHi, true, 1.0);
    auto g = torch::ones_like(y);
    y.backward(g, {}, /*retain_graph=*/true);
    const auto once = w.grad().clone();
    y.backward(g);
    EXPECT_GT(once.abs().sum().item<float>(), 0.0f);
    EXPECT_TRUE(w.grad().equal(once * 2));
  }
  auto x = torch::zeros({1, 4, 5, 5});
  EXPECT_THROW(conv2d_quantize_clamp_bf16(x, torch::zeros({4, 4, 3, 3}), torch::zeros({4}), 1, 1, 1.0, 16, -1.0, 1.0,
                                          false, 1.0),
               std::exception);
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
  EXPECT_EQ(output_shift_from_params(w, b, 1.0), -1);                      // max 0.3 -> ceil(log2 .3) = -1
  EXPECT_EQ(output_shift_from_params(w, torch::tensor({-0.6f}), 1.0), 0);  // the bias's |-0.6| wins
  EXPECT_EQ(output_shift_from_params(w * 5, torch::Tensor(), 1.0), 1);     // no bias: max 1.5
  EXPECT_EQ(output_shift_from_params(w.t().contiguous().view({2, 2}).t(), b, 1.0), -1);  // strided
  // NaN as ai8x's float32 tensor max gives it: a NaN weight -> os 15 (log2 of NaN), a NaN bias is
  // lost in the max with the weights' (std::max keeps its first argument).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(output_shift_from_params(torch::tensor({0.1f, nan}), b, 1.0), 15);
  EXPECT_EQ(output_shift_from_params(w, torch::tensor({nan}), 1.0), -1);
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
        auto want =
            x.index({torch::indexing::Slice(), c, torch::indexing::Slice(i, 4, 2), torch::indexing::Slice(j, 4, 2)});
        EXPECT_TRUE(y.select(1, (i * 2 + j) * 3 + c).equal(want));
      }
}
