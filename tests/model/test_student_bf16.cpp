// The students in mixed precision (PrecisionScope bf16: ai8x convolutions with bf16 operands and an
// fp32 destination) against fp32:
// - QAT forward on the Python ai8x fixture: bit for bit equal to ai8x's (= the fp32 forward),
//   gradients close;
// - the QAT layers of a seed student calibrated here, with LibTorch's bf16 conv2d (bf16
//   destination): flipped outputs counted;
// - float phase (seeded random seed student): outputs and gradients close to fp32;
// - ai85pose: the bf16 QAT forward still equals the integer (MAX78000) inference exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "posekd/ai8x/calibration.h"
#include "posekd/ai8x/quantizers.h"
#include "posekd/ai8x/simulate.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/bf16_conv.h"
#include "posekd/core/precision.h"
#include "posekd/model/student.h"
#include "test_util.h"

using namespace posekd;
using namespace posekd::ai8x;

namespace {

namespace Fb = torch::nn::functional;

double bf16_max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  auto m = b.abs().max().item<double>();
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() / std::max(m, 1e-30);
}

double bf16_norm_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kDouble) - b.to(torch::kDouble)).norm() / b.to(torch::kDouble).norm()).item<double>();
}

const c10::impl::GenericDict& bf16_fixture(const std::string& name) {
  static std::map<std::string, c10::impl::GenericDict> cache;
  auto it = cache.find(name);
  if (it == cache.end())
    it = cache.emplace(name, read_tensor_dict(posekd::testing::fixture_path("ai8x/" + name).string())).first;
  return it->second;
}

// The seed student in the Python QAT state of student_qat.pt.
std::shared_ptr<model::Student> seed_qat_student() {
  auto s = model::make_student("seed");
  s->fuse_bn();
  load_state_dict(*s, to_state_dict(dict_dict(bf16_fixture("student_qat.pt"), "state_dict")));
  s->train(true);
  return s;
}

// Values on the 8-bit input grid (what the network's input and QAT activations hold).
torch::Tensor grid_tensor(std::vector<int64_t> shape) {
  return torch::randint(-128, 128, shape).to(torch::kFloat) / 128;
}

// A seed student with seeded random weights, fused and calibrated by posekd (ai8x's defaults) on
// grid inputs: a QAT state that needs no Python fixture. Returns the student and a fresh input.
std::pair<std::shared_ptr<model::Student>, torch::Tensor> generated_seed_qat_student() {
  torch::manual_seed(11);
  auto s = model::make_student("seed");
  int n = 0;
  QatPolicy policy;
  policy.start_epoch = 1;
  model::fuse_and_calibrate(
      *s,
      [&]() -> std::optional<torch::Tensor> {
        if (n++ == 2) return std::nullopt;
        return grid_tensor({2, 3, 128, 128});
      },
      policy);
  s->train(true);
  return {s, grid_tensor({2, 3, 128, 128})};
}

// One ai8x QAT layer (training mode, not simulate) written out, with the conv either fp32 or
// LibTorch's bf16 conv2d (bf16 operands, bf16 destination as AMP would run it).
torch::Tensor qat_layer_by_hand(Layer& l, torch::Tensor x, bool bf16_destination) {
  const auto& sp = l.spec();
  if (sp.has_pool()) x = Fb::max_pool2d(x, Fb::MaxPool2dFuncOptions(sp.pool_size).stride(sp.pool_stride));
  if (!sp.has_op()) return x;
  const int os = l.current_output_shift();
  const double ws = std::ldexp(1.0, -os);
  const int wb = static_cast<int>(l.weight_bits.item<int64_t>());
  auto wq = quantize_clamp_ste(l.weight().detach(), ws, wb, -1.0, param_clamp_hi(wb), false, 1.0);
  auto bq = quantize_clamp_ste(l.bias().detach(), ws, wb, -1.0, param_clamp_hi(wb), false, 1.0);
  torch::Tensor y;
  if (bf16_destination) {
    y = Fb::conv2d(x.to(torch::kBFloat16), wq.to(torch::kBFloat16),
                   Fb::Conv2dFuncOptions().bias(bq.to(torch::kBFloat16)).stride(sp.stride).padding(sp.padding))
            .to(torch::kFloat);
  } else {
    y = Fb::conv2d(x, wq, Fb::Conv2dFuncOptions().bias(bq).stride(sp.stride).padding(sp.padding));
  }
  const double thr = l.activation_threshold.item<float>();
  const double fs = l.final_scale.item<float>();
  const double eff = std::min(15.0, std::max(-15.0, os - thr));
  return quantize_clamp_ste(y, sp.wide ? 1.0 : std::ldexp(1.0, static_cast<int>(eff)), sp.wide ? kWideBits : 8,
                            sp.wide ? -kWideClamp : kActLo, sp.wide ? kWideClamp : kActHi, sp.relu,
                            std::ldexp(1.0, static_cast<int>(fs)));
}

TEST(StudentBf16, SeedQatForwardIsBitExactAndGradientsClose) {
  if (!conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  POSEKD_REQUIRE_FIXTURE(qpath, "ai8x/student_qat.pt");
  const auto& q = bf16_fixture("student_qat.pt");
  auto s = seed_qat_student();
  model::StudentOutput out;
  {
    PrecisionScope bf(Precision::bf16);
    s->zero_grad();
    out = s->forward(dict_tensor(q, "input"));
  }
  EXPECT_TRUE(out.heat.equal(dict_tensor(q, "train/heat"))) << "bf16 QAT heatmaps differ from ai8x";
  EXPECT_TRUE(out.paf.equal(dict_tensor(q, "train/paf"))) << "bf16 QAT PAFs differ from ai8x";
  ((out.heat * dict_tensor(q, "grad_heat")).sum() + (out.paf * dict_tensor(q, "grad_paf")).sum()).backward();
  // Gradients flow through bf16 convolutions: compare with ai8x's fp32 gradients in norm.
  auto grads = dict_dict(q, "grads");
  double worst = 0;
  int n = 0;
  for (const auto& kv : s->named_parameters()) {
    if (!kv.value().requires_grad()) continue;
    ASSERT_TRUE(kv.value().grad().defined()) << kv.key();
    EXPECT_EQ(kv.value().grad().scalar_type(), torch::kFloat);
    const double e = bf16_norm_rel(kv.value().grad(), dict_tensor(grads, kv.key()));
    EXPECT_LT(e, 3e-2) << kv.key();
    worst = std::max(worst, e);
    ++n;
  }
  EXPECT_EQ(n, 30);
  std::printf("seed QAT, bf16 convolutions: outputs bit-exact, worst gradient relative error %.2e\n", worst);
  RecordProperty("qat_bf16_worst_grad_rel_err", std::to_string(worst));
}

TEST(StudentBf16, QatLayersWithABf16DestinationFlipOutputs) {
  // Per layer of the seed student in its ai8x QAT state, each fed its fp32 input: the fp32 conv,
  // conv2d_bf16 (fp32 destination) and LibTorch's bf16 conv2d (bf16 destination).
  if (!conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  auto [s, input] = generated_seed_qat_student();
  s->eval();
  torch::NoGradGuard ng;
  auto layers = s->layers();
  auto prev = s->producers();
  std::vector<torch::Tensor> outs(layers.size());
  int64_t total = 0, flips = 0, flips_fp32dst = 0;
  double max_steps = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    torch::Tensor x = prev[i].empty() ? input : outs[prev[i][0]];
    outs[i] = layers[i]->forward(x);
    auto by_hand = qat_layer_by_hand(*layers[i], x, false);
    ASSERT_TRUE(by_hand.equal(outs[i])) << s->layer_names()[i] << ": the hand-written QAT layer is not ai8x's";
    torch::Tensor mixed;
    {
      PrecisionScope bf(Precision::bf16);
      mixed = layers[i]->forward(x);
    }
    auto bf16dst = qat_layer_by_hand(*layers[i], x, true);
    const int64_t f = (bf16dst != outs[i]).sum().item<int64_t>();
    const int64_t f32 = (mixed != outs[i]).sum().item<int64_t>();
    const double step = std::ldexp(1.0, -7) * std::ldexp(1.0, static_cast<int>(layers[i]->final_scale.item<float>()));
    const double steps =
        (bf16dst - outs[i]).abs().max().item<double>() / (layers[i]->spec().wide ? std::ldexp(1.0, -14) : step);
    std::printf("  %-10s %8lld outputs: bf16 destination flips %6lld (%.2f%%, max %.0f steps); fp32 destination %lld\n",
                s->layer_names()[i].c_str(), static_cast<long long>(outs[i].numel()), static_cast<long long>(f),
                100.0 * f / outs[i].numel(), steps, static_cast<long long>(f32));
    total += outs[i].numel();
    flips += f;
    flips_fp32dst += f32;
    max_steps = std::max(max_steps, steps);
  }
  std::printf(
      "seed QAT layers: %lld of %lld outputs flip with a bf16 destination (%.2f%%), max %.0f steps; "
      "%lld with conv2d_bf16's fp32 destination\n",
      static_cast<long long>(flips), static_cast<long long>(total), 100.0 * flips / total, max_steps,
      static_cast<long long>(flips_fp32dst));
  RecordProperty("bf16_destination_flips", std::to_string(flips));
  RecordProperty("outputs", std::to_string(total));
  EXPECT_EQ(flips_fp32dst, 0);
}

TEST(StudentBf16, SeedFloatPhaseCloseToFp32) {
  if (!conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  // The seed student with seeded random weights (as ai8x's float fixture has), a grid input and
  // random output gradients.
  torch::manual_seed(12);
  auto proto = model::make_student("seed");
  const auto weights = state_dict(*proto);
  const torch::Tensor input = grid_tensor({4, 3, 128, 128});
  const torch::Tensor grad_heat = torch::randn({4, 19, 16, 16}), grad_paf = torch::randn({4, 38, 16, 16});
  auto run = [&](Precision p) {
    auto s = model::make_student("seed");
    load_state_dict(*s, weights);
    s->train(true);  // BatchNorm trains: NCHW, fp32 statistics
    PrecisionScope scope(p);
    auto out = s->forward(input);
    ((out.heat * grad_heat).sum() + (out.paf * grad_paf).sum()).backward();
    std::vector<std::pair<std::string, torch::Tensor>> r{{"heat", out.heat.detach()}, {"paf", out.paf.detach()}};
    for (const auto& kv : s->named_parameters()) {
      // the conv bias in front of a training BatchNorm has a zero gradient (fp32 noise): skipped
      const bool bias_before_bn = kv.key().find(".op.bias") != std::string::npos &&
                                  s->named_parameters().contains(kv.key().substr(0, kv.key().find('.')) + ".bn.weight");
      if (kv.value().requires_grad() && !bias_before_bn) r.emplace_back(kv.key() + ".grad", kv.value().grad());
    }
    for (const auto& kv : s->named_buffers())
      if (kv.key().find("running_") != std::string::npos) r.emplace_back(kv.key(), kv.value().clone());
    return r;
  };
  auto r32 = run(Precision::fp32), r16 = run(Precision::bf16);
  ASSERT_EQ(r32.size(), r16.size());
  EXPECT_EQ(r16[0].second.scalar_type(), torch::kFloat);
  double worst_out = std::max(bf16_norm_rel(r16[0].second, r32[0].second), bf16_norm_rel(r16[1].second, r32[1].second));
  double worst_grad = 0;
  // Random weights with training BatchNorm cancel most of the gradient in BN's backward, so bf16
  // rounding (2^-9 relative per element) shows up strongly in the gradients: PyTorch's own CPU
  // autocast on a similar random 9-layer conv+BN+ReLU net is 2% off in the outputs and 15-25% off in
  // the weight gradients (against float64; fp32 is 3e-3 off). Here (15 layers, the activations and
  // their gradients handed between the layers in bf16 as autocast does): 5.3% and 55%; with fp32
  // between the layers it was 3.9% and 44%. These bounds catch a wrong kernel, layout or gradient
  // (errors >= 100%); that training still follows fp32 is checked by
  // Amp.ShortTrainingRunTracksFp32 (test_train).
  EXPECT_LT(worst_out, 8e-2);
  EXPECT_GT(worst_out, 0.0);  // it really ran in bf16
  for (size_t k = 2; k < r32.size(); ++k) {
    const double e = bf16_norm_rel(r16[k].second, r32[k].second);
    worst_grad = std::max(worst_grad, e);
    EXPECT_LT(e, 0.75) << r32[k].first;
  }
  std::printf("seed float phase, bf16 convolutions: outputs %.2e, worst gradient/statistic %.2e relative error\n",
              worst_out, worst_grad);
}

TEST(StudentBf16, Ai85PoseBf16QatEqualsIntegerInference) {
  if (!conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  torch::manual_seed(5);
  auto s = model::make_student("ai85pose");
  auto grid = [](std::vector<int64_t> shape) { return torch::randint(-128, 128, shape).to(torch::kFloat) / 128; };
  int n = 0;
  QatPolicy policy;
  policy.start_epoch = 1;
  model::fuse_and_calibrate(
      *s,
      [&]() -> std::optional<torch::Tensor> {
        if (n++ == 1) return std::nullopt;
        return grid({2, 12, 64, 64});
      },
      policy);
  auto x = grid({2, 12, 64, 64});
  s->train(true);
  model::StudentOutput qat;
  {
    PrecisionScope bf(Precision::bf16);
    qat = s->forward(x);
  }
  auto ref = s->forward(x);
  EXPECT_TRUE(qat.heat.equal(ref.heat));
  EXPECT_TRUE(qat.paf.equal(ref.paf));
  torch::NoGradGuard ng;
  auto quantized = quantize_state_dict(state_dict(*s));
  auto io = model::integer_forward(model::integer_student(*s, quantized), simulate_input(x));
  auto mism = (integer_output_to_float(io.heat, true) != qat.heat.to(torch::kDouble)).sum().item<int64_t>() +
              (integer_output_to_float(io.paf, true) != qat.paf.to(torch::kDouble)).sum().item<int64_t>();
  EXPECT_EQ(mism, 0) << "bf16 QAT and integer inference disagree";
}

}  // namespace

TEST(StudentBf16, ActivationsPassBetweenLayersInBf16) {
  if (!conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  torch::manual_seed(3);
  Layer bn_layer(fused_conv2d_bn_relu(8, 16, 3, 1));
  Layer head(conv2d(16, 4, 1, 0, /*wide=*/true));
  const auto x = grid_tensor({2, 8, 12, 12}).contiguous(at::MemoryFormat::ChannelsLast);
  bn_layer.train(true);
  head.train(true);
  {
    // Float phase: a BatchNorm layer hands on bf16 (BatchNorm on the bf16 conv result, fp32
    // parameters and running statistics), the wide head returns fp32, gradients reach the weights.
    PrecisionScope scope(Precision::bf16);
    auto y = bn_layer.forward(x.clone().requires_grad_(true));
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(bn_layer.named_buffers()["bn.running_mean"].scalar_type(), torch::kFloat);
    auto out = head.forward(y);
    EXPECT_EQ(out.scalar_type(), torch::kFloat);
    out.sum().backward();
    EXPECT_EQ(bn_layer.weight().grad().scalar_type(), torch::kFloat);
    EXPECT_GT(bn_layer.weight().grad().abs().sum().item<double>(), 0.0);
    // the same statistics as fp32 up to bf16 rounding of the conv result
    bn_layer.set_calibration(true);
    EXPECT_EQ(bn_layer.forward(x).scalar_type(), torch::kFloat);  // calibration records fp32
    bn_layer.set_calibration(false);
    bn_layer.clear_calibration();
  }
  EXPECT_EQ(bn_layer.forward(x).scalar_type(), torch::kFloat);  // fp32 outside the scope
  // QAT phase: the 8-bit result in bf16 holds the fp32 QAT result exactly.
  auto [s, input] = generated_seed_qat_student();
  torch::Tensor r32, r16;
  Layer& first = *s->layers()[1];  // conv2 (non-wide, clamped)
  auto after0 = s->layers()[0]->forward(input).detach();
  r32 = first.forward(after0);
  {
    PrecisionScope scope(Precision::bf16);
    r16 = first.forward(after0);
  }
  EXPECT_EQ(r32.scalar_type(), torch::kFloat);
  EXPECT_EQ(r16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(r16.to(torch::kFloat).equal(r32));
}

TEST(StudentBf16, FloatPhaseBatchNormAndReluAreOneDnnsFusedKernel) {
  // A training BatchNorm layer under bf16 runs oneDNN's BatchNorm with the ReLU fused
  // (core/bf16_norm.h). Against the same layer's steps done apart with LibTorch (the bf16 conv
  // result, LibTorch's BatchNorm on it, then relu): the result within one bf16 rounding, the same
  // running statistics (momentum 0.05, unbiased variance) and batch count, close gradients.
  if (!conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  torch::manual_seed(5);
  Layer layer(fused_conv2d_bn_relu(16, 32, 3, 1));
  layer.train(true);
  const auto x = grid_tensor({2, 16, 10, 10}).contiguous(at::MemoryFormat::ChannelsLast);
  auto& bn = layer.bn();
  torch::Tensor mean0 = bn->running_mean.clone(), var0 = bn->running_var.clone();
  torch::Tensor y, ref, gw, gw_ref;
  {
    PrecisionScope scope(Precision::bf16);
    y = layer.forward(x);
    const auto g = grid_tensor(y.sizes().vec());
    (y.to(torch::kFloat) * g).sum().backward();
    gw = layer.weight().grad().clone();
    layer.weight().mutable_grad() = torch::Tensor();
    // the same steps apart, LibTorch's BatchNorm
    auto conv = conv2d_bf16(x, layer.weight(), layer.bias(), {1, 1}, {1, 1}, {1, 1}, 1, /*bf16_out=*/true);
    auto rm = mean0.clone(), rv = var0.clone();
    ref = torch::relu(torch::batch_norm(conv, bn->weight, bn->bias, rm, rv, true, 0.05, 1e-5, false));
    (ref.to(torch::kFloat) * g).sum().backward();
    gw_ref = layer.weight().grad().clone();
    EXPECT_TRUE(bn->running_mean.allclose(rm, 1e-5, 1e-7));
    EXPECT_TRUE(bn->running_var.allclose(rv, 1e-5, 1e-7));
    EXPECT_FALSE(bn->running_var.equal(var0));  // they moved
  }
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 1);
  const auto yf = y.to(torch::kFloat), rf = ref.to(torch::kFloat);
  EXPECT_EQ(yf.lt(0).sum().item<int64_t>(), 0);  // the ReLU ran
  EXPECT_GT(yf.eq(0).sum().item<int64_t>(), 0);
  EXPECT_TRUE(yf.allclose(rf, 1.0 / 128, 1e-2)) << (yf - rf).abs().max().item<float>();
  EXPECT_LT(bf16_norm_rel(gw, gw_ref), 2e-2);
  EXPECT_GT(gw.abs().sum().item<double>(), 0.0);
}
