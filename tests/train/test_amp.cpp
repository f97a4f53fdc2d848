// Mixed-precision training (train::AmpGuard bf16) tracks the fp32 run: the same ai85pose student,
// data and Adam steps (fused_adam_step, pose_loss), float phase then the QAT switch and QAT steps.
#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>

#include <cstdio>

#include "posekd/ai8x/policy.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/bf16_conv.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "posekd/train/amp.h"
#include "posekd/train/fused_adam.h"
#include "posekd/train/loss.h"

namespace {

using posekd::Precision;

std::vector<torch::Tensor> amp_trainable(posekd::model::Student& s) {
  std::vector<torch::Tensor> p;
  for (auto& t : s.parameters())
    if (t.requires_grad()) p.push_back(t);
  return p;
}

struct AmpData {
  torch::Tensor x, gt_heat, gt_paf, mask;
};

AmpData amp_data() {
  torch::manual_seed(12);
  const int64_t n = 4;
  return {torch::randint(-128, 128, {n, 12, 64, 64}).to(torch::kFloat) / 128, torch::rand({n, 19, 16, 16}),
          torch::rand({n, 38, 16, 16}) * 2 - 1, torch::ones({n, 1, 16, 16})};
}

// `steps` training steps (forward under AmpGuard, pose_loss, backward, fused Adam) from the
// student's current state with a fresh Adam; the loss of every step.
std::vector<double> amp_steps(posekd::model::Student& s, Precision prec, int steps, double lr, const AmpData& d) {
  torch::optim::Adam opt(amp_trainable(s), torch::optim::AdamOptions(lr));
  posekd::train::LossWeights w{1.0, 0.0};
  std::vector<double> losses;
  s.train(true);
  for (int i = 0; i < steps; ++i) {
    posekd::train::clear_grads(opt);
    torch::Tensor loss;
    {
      posekd::train::AmpGuard amp(prec);
      auto out = s.forward(d.x);
      loss = posekd::train::pose_loss(out.heat, out.paf, d.gt_heat, d.gt_paf, d.mask, {}, {}, w).total;
    }
    EXPECT_EQ(loss.scalar_type(), torch::kFloat);
    loss.backward();
    posekd::train::fused_adam_step(opt);
    losses.push_back(loss.item<double>());
  }
  return losses;
}

std::shared_ptr<posekd::model::Student> amp_student() {
  torch::manual_seed(11);
  return posekd::model::make_student("ai85pose");
}

double amp_worst(const std::vector<double>& a, const std::vector<double>& b, double bound, const char* phase) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double rel = std::abs(b[i] - a[i]) / a[i];
    worst = std::max(worst, rel);
    EXPECT_LT(rel, bound) << phase << " step " << i << ": fp32 " << a[i] << ", bf16 " << b[i];
  }
  return worst;
}

TEST(Amp, ShortTrainingRunTracksFp32) {
  if (!posekd::conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  const AmpData d = amp_data();
  const int float_steps = 25, qat_steps = 10;
  // Float phase (BatchNorm training), same initial weights.
  auto s32 = amp_student(), s16 = amp_student();
  auto f32 = amp_steps(*s32, Precision::fp32, float_steps, 1e-3, d);
  auto f16 = amp_steps(*s16, Precision::bf16, float_steps, 1e-3, d);
  EXPECT_NEAR(f16[0], f32[0], 1e-2 * f32[0]);  // the same weights: only the forward rounding differs
  EXPECT_NE(f16[0], f32[0]);                   // it did run in bf16
  const double worst_float = amp_worst(f32, f16, 0.03, "float");
  EXPECT_LT(f32.back(), 0.5 * f32.front());  // both learn
  EXPECT_LT(f16.back(), 0.5 * f16.front());

  // QAT phase from one QAT state (the fp32 run's, after the switch), copied into a second student.
  posekd::ai8x::QatPolicy policy;
  int calib = 0;
  posekd::model::fuse_and_calibrate(
      *s32,
      [&]() -> std::optional<torch::Tensor> { return calib++ == 0 ? std::optional<torch::Tensor>(d.x) : std::nullopt; },
      policy);
  auto q16 = amp_student();
  q16->fuse_bn();
  posekd::ai8x::load_state_dict(*q16, posekd::ai8x::state_dict(*s32));
  auto l32 = amp_steps(*s32, Precision::fp32, qat_steps, 1e-4, d);
  auto l16 = amp_steps(*q16, Precision::bf16, qat_steps, 1e-4, d);
  EXPECT_EQ(l16[0], l32[0]) << "the QAT forward must be exact in bf16";
  const double worst_qat = amp_worst(l32, l16, 0.02, "QAT");
  EXPECT_LT(l32.back(), l32.front());
  EXPECT_LT(l16.back(), l16.front());
  std::printf(
      "ai85pose, batch 4: %d float steps, loss fp32 %.1f -> %.1f, bf16 %.1f -> %.1f (worst step %.2f%%); "
      "%d QAT steps, fp32 %.1f -> %.1f, bf16 %.1f -> %.1f (worst step %.2f%%)\n",
      float_steps, f32.front(), f32.back(), f16.front(), f16.back(), 100 * worst_float, qat_steps, l32.front(),
      l32.back(), l16.front(), l16.back(), 100 * worst_qat);
}

// The teacher's training step as train-teacher runs it: under bf16, channels-last weights and
// input and AutocastGuard (posekd's bf16 convolutions and fused BatchNorm+ReLU, fp32 master weights,
// BatchNorm statistics, output heads and loss); losses track fp32.
std::vector<double> amp_teacher_steps(Precision prec, int steps) {
  torch::manual_seed(21);
  posekd::model::PoseEstimationWithMobileNet net(0);
  net->train();
  const auto layout = prec == Precision::bf16 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  net->set_weight_layout(layout);
  torch::manual_seed(22);
  auto x = (torch::rand({4, 3, 64, 64}) * 2 - 1).contiguous(layout);
  auto th = torch::rand({4, 19, 8, 8}), tp = torch::rand({4, 38, 8, 8}) - 0.5;
  auto mask = torch::ones({4, 1, 8, 8});
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(3e-4));
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i) {
    posekd::train::clear_grads(opt);
    std::vector<torch::Tensor> outs;
    {
      posekd::train::AutocastGuard ac(prec);
      outs = net->forward(x);
      // fp32 in both: under bf16 the teacher runs posekd's kernels (LibTorch's autocast conv2d would
      // round the output heads to bf16; posekd's keep their fp32 accumulator for the loss).
      EXPECT_EQ(outs[0].scalar_type(), torch::kFloat);
    }
    auto loss = posekd::train::teacher_loss(outs, th, tp, mask).total;
    loss.backward();
    for (auto& p : net->parameters())
      if (p.grad().defined()) {
        EXPECT_EQ(p.grad().scalar_type(), torch::kFloat);
        if (p.dim() == 4) EXPECT_TRUE(p.is_contiguous(layout));
        if (p.dim() == 4) EXPECT_TRUE(p.grad().is_contiguous(layout));  // fused_adam_step's fast path
      }
    posekd::train::fused_adam_step(opt);
    losses.push_back(loss.item<double>());
  }
  for (const auto& b : net->named_buffers())
    if (b.key().find("running_") != std::string::npos) EXPECT_EQ(b.value().scalar_type(), torch::kFloat);
  return losses;
}

TEST(Amp, TeacherTrainingUnderAutocastTracksFp32) {
  if (!posekd::conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  const int steps = 12;
  auto a = amp_teacher_steps(Precision::fp32, steps);
  auto b = amp_teacher_steps(Precision::bf16, steps);
  EXPECT_NE(a[0], b[0]);  // autocast did change the arithmetic
  const double worst = amp_worst(a, b, 0.05, "teacher");
  EXPECT_LT(a.back(), a.front());
  EXPECT_LT(b.back(), b.front());
  EXPECT_FALSE(at::autocast::is_cpu_enabled());  // the guard restored the state
  std::printf(
      "teacher (no refinement stage) at 64x64, batch 4, %d steps: loss fp32 %.4f -> %.4f, autocast bf16 "
      "%.4f -> %.4f (worst step %.2f%%)\n",
      steps, a.front(), a.back(), b.front(), b.back(), 100 * worst);
}

TEST(Amp, GuardIsScopedAndFp32DoesNothing) {
  EXPECT_EQ(posekd::compute_precision(), Precision::fp32);
  {
    posekd::train::AmpGuard g(Precision::bf16);
    EXPECT_EQ(posekd::compute_precision(), Precision::bf16);
    {
      posekd::train::AmpGuard off(Precision::fp32);
      EXPECT_EQ(posekd::compute_precision(), Precision::fp32);
    }
    EXPECT_EQ(posekd::compute_precision(), Precision::bf16);
  }
  EXPECT_EQ(posekd::compute_precision(), Precision::fp32);
  {
    posekd::train::AutocastGuard off(Precision::fp32);
    EXPECT_FALSE(at::autocast::is_cpu_enabled());
    posekd::train::AutocastGuard on(Precision::bf16);
    EXPECT_TRUE(at::autocast::is_cpu_enabled());
    EXPECT_EQ(at::autocast::get_autocast_cpu_dtype(), at::kBFloat16);
  }
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
}

}  // namespace
