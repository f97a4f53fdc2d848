#include "posekd/train/bench_bf16.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "posekd/core/alloc.h"
#include "posekd/core/bf16_conv.h"
#include "posekd/core/error.h"
#include "posekd/core/threads.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "posekd/train/amp.h"
#include "posekd/train/bench.h"
#include "posekd/train/fused_adam.h"
#include "posekd/train/loss.h"
#include "posekd/train/step.h"

namespace posekd::train {

namespace {

// Teacher forward FLOPs at 368 (openpose.md 1.5: 8.88 GMAC), as bench.cpp counts them.
constexpr double kBf16TeacherFlop368 = 2 * 8.88e9;

// Chrome trace of 5 calls of `step` and the top operators by self time, printed.
void bf16_profile(const std::string& dir, const std::string& name, const std::function<void()>& step) {
  if (dir.empty()) return;
  std::filesystem::create_directories(dir);
  const std::string path = (std::filesystem::path(dir) / (name + ".json")).string();
  step();
  {
    torch::autograd::profiler::RecordProfile rec(path);
    for (int i = 0; i < 5; ++i) step();
  }
  std::ifstream f(path);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto ops = self_times_from_trace(text);
  double total = 0;
  for (const auto& op : ops) total += op.self_us;
  std::printf("%s: %.1f ms per step of operator time (trace: %s)\n", name.c_str(), total / 5000.0, path.c_str());
  for (size_t i = 0; i < ops.size() && i < 15; ++i)
    std::printf("  %6.2f ms/step %5.1f%%  %6lld calls  %s\n", ops[i].self_us / 5000.0, 100.0 * ops[i].self_us / total,
                ops[i].calls / 5, ops[i].name.c_str());
  std::fflush(stdout);
}

}  // namespace

std::string PrecisionBenchReport::text() const {
  std::string s = "| figure | fp32 | bf16 | bf16 / fp32 |\n|---|---|---|---|\n";
  for (const auto& r : rows) {
    const std::string b = r.bf16 > 0 ? fmt::format("{:.1f} {}", r.bf16, r.unit) : "-";
    const std::string ratio = r.bf16 > 0 && r.fp32 > 0 ? fmt::format("{:.2f}x", r.bf16 / r.fp32) : "-";
    s += fmt::format("| {} | {:.{}f} {} | {} | {} |\n", r.name, r.fp32, r.unit == "h" ? 2 : 1, r.unit,
                     r.unit == "h" && r.bf16 > 0 ? fmt::format("{:.2f} h", r.bf16) : b, ratio);
  }
  return s;
}

PrecisionBenchReport run_precision_bench(const PrecisionBenchOptions& o) {
  if (!conv2d_bf16_supported())
    throw Error("bench: this CPU cannot run bf16 convolutions (no AVX-512); use --precision fp32");
  PrecisionBenchReport r;
  (void)tune_allocator();
  r.threads = set_compute_threads(o.threads);
  const double secs = o.quick ? 0.2 : o.seconds;
  const int B = 8;

  // ---- conv 3x3 128->128 at 46x46, batch 8 (the conv peak of `posekd bench`)
  {
    torch::NoGradGuard ng;
    const double flop = 2.0 * 8 * 46 * 46 * 128 * 128 * 9;
    auto x = torch::randn({8, 128, 46, 46});
    auto w = torch::randn({128, 128, 3, 3}) * 0.05;
    auto xl = x.contiguous(at::MemoryFormat::ChannelsLast), wl = w.contiguous(at::MemoryFormat::ChannelsLast);
    auto xb = xl.to(torch::kBFloat16), wb = wl.to(torch::kBFloat16), wbc = w.to(torch::kBFloat16);
    auto g = [&](double t) { return flop / t / 1e9; };
    const double nchw = g(seconds_per_call([&] { (void)torch::conv2d(x, w, {}, 1, 1); }, secs));
    const double nhwc = g(seconds_per_call([&] { (void)torch::conv2d(xl, wl, {}, 1, 1); }, secs));
    const double bf = g(seconds_per_call([&] { (void)torch::conv2d(xb, wb, {}, 1, 1); }, secs));
    const double bf_f32 = g(seconds_per_call([&] { (void)conv2d_bf16(xb, wbc, {}, {1, 1}, {1, 1}); }, secs));
    r.rows.push_back({"conv 3x3 128->128 at 46x46, batch 8: fp32 NCHW", "GFLOP/s", nchw, 0});
    r.rows.push_back({"same conv, NHWC: fp32 / bf16 (LibTorch, bf16 result)", "GFLOP/s", nhwc, bf});
    r.rows.push_back({"same conv, NHWC: fp32 / bf16 with fp32 result (conv2d_bf16)", "GFLOP/s", nhwc, bf_f32});
  }

  // ---- teacher forward at 368, batch 8 (random weights, BN folded as when loaded)
  double teacher_img[2];
  {
    torch::NoGradGuard ng;
    model::PoseEstimationWithMobileNet net(1, 128);
    net->eval();
    net->fuse();
    auto xt = torch::rand({B, 3, 368, 368}) - 0.5;
    auto xtb = xt.to(torch::kBFloat16);
    const double t32 = seconds_per_call([&] { (void)net->forward(xt); }, secs, 2);
    const double t16 = seconds_per_call(
        [&] {
          auto out = net->forward(xtb);
          (void)out.back().to(torch::kFloat);
        },
        secs, 2);
    bf16_profile(o.profile_dir, "bf16_teacher_forward", [&] { (void)net->forward(xtb).back().to(torch::kFloat); });
    teacher_img[0] = t32 / B;
    teacher_img[1] = t16 / B;
    r.rows.push_back({"teacher forward at 368, batch 8", "img/s", B / t32, B / t16});
    r.rows.push_back({"teacher forward at 368: achieved", "GFLOP/s", B / t32 * kBf16TeacherFlop368 / 1e9,
                      B / t16 * kBf16TeacherFlop368 / 1e9});
  }

  // ---- teacher training step at 128x128 with no refinement stage, batch 8: what `posekd demo`
  // trains, as train-teacher runs it (bf16: channels-last weights and input, forward under
  // AutocastGuard; teacher_loss, backward, Adam)
  {
    const Precision precs[2] = {Precision::fp32, Precision::bf16};
    double t[2];
    for (int pi = 0; pi < 2; ++pi) {
      torch::manual_seed(1);
      model::PoseEstimationWithMobileNet net(0);
      net->train();
      if (pi == 1) net->set_weight_layout(at::MemoryFormat::ChannelsLast);
      torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-4));
      auto x = torch::rand({B, 3, 128, 128}) - 0.5;
      if (pi == 1) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      auto gh = torch::rand({B, 19, 16, 16}), gp = torch::rand({B, 38, 16, 16}) - 0.5;
      auto mask = torch::ones({B, 1, 16, 16});
      auto step_fn = [&] {
        (void)train_step(opt, [&] {
          std::vector<torch::Tensor> outs;
          {
            AutocastGuard ac(precs[pi]);
            outs = net->forward(x);
          }
          return teacher_loss(outs, gh, gp, mask);
        });
      };
      if (pi == 1) bf16_profile(o.profile_dir, "bf16_teacher_train_step", step_fn);
      t[pi] = seconds_per_call(step_fn, secs);
    }
    r.rows.push_back({"teacher train step at 128 (no refinement stage), batch 8", "img/s", B / t[0], B / t[1]});
  }

  // ---- student steps, batch 8: forward (AmpGuard), KD loss, backward, fused Adam
  double step[2][2];  // [float, qat][fp32, bf16]
  {
    const Precision precs[2] = {Precision::fp32, Precision::bf16};
    for (int pi = 0; pi < 2; ++pi) {
      torch::manual_seed(1);
      auto student = model::make_student(o.arch);
      auto in_shape = student->input_shape();
      auto x = torch::randint(-128, 128, {B, in_shape[0], in_shape[1], in_shape[2]}).to(torch::kFloat) / 128;
      auto gh = torch::rand({B, 19, 16, 16}), gp = torch::rand({B, 38, 16, 16}) - 0.5;
      auto th = torch::rand({B, 19, 16, 16}), tp = torch::rand({B, 38, 16, 16}) - 0.5;
      auto mask = torch::ones({B, 1, 16, 16});
      auto params = [&] {
        std::vector<torch::Tensor> ps;
        for (auto& p : student->parameters())
          if (p.requires_grad()) ps.push_back(p);
        return ps;
      };
      auto step_fn = [&](torch::optim::Adam& opt) {  // the trainer's own step (train/step.h)
        (void)train_step(opt, [&] {
          model::StudentOutput out;
          {
            AmpGuard amp(precs[pi]);
            out = student->forward(x);
          }
          return pose_loss(out.heat, out.paf, gh, gp, mask, th, tp, {0.3, 0.7});
        });
      };
      student->train();
      {
        torch::optim::Adam opt(params(), torch::optim::AdamOptions(1e-4));
        if (pi == 1) bf16_profile(o.profile_dir, "bf16_float_step", [&] { step_fn(opt); });
        step[0][pi] = seconds_per_call([&] { step_fn(opt); }, secs);
      }
      fuse_and_calibrate_on(*student, x);
      student->train();
      torch::optim::Adam opt(params(), torch::optim::AdamOptions(1e-4));
      if (pi == 1) bf16_profile(o.profile_dir, "bf16_qat_step", [&] { step_fn(opt); });
      step[1][pi] = seconds_per_call([&] { step_fn(opt); }, secs);
    }
    r.rows.push_back(
        {fmt::format("student float train step, batch 8 ({})", o.arch), "img/s", B / step[0][0], B / step[0][1]});
    r.rows.push_back(
        {fmt::format("student QAT train step, batch 8 ({})", o.arch), "img/s", B / step[1][0], B / step[1][1]});
  }

  // ---- the seed job: 15,000 batches of 8 (60% float, 40% QAT) on a 15,000-image subset whose
  // teacher outputs are computed once per image (the cache); sample preparation not included.
  double job[2];
  for (int pi = 0; pi < 2; ++pi)
    job[pi] = (15000.0 * teacher_img[pi] + 15000.0 * (0.6 * step[0][pi] + 0.4 * step[1][pi])) / 3600.0;
  r.rows.push_back(
      {"projected seed job (teacher once per image + steps, without sample preparation)", "h", job[0], job[1]});
  return r;
}

}  // namespace posekd::train
