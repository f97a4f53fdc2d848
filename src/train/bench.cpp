#include "posekd/train/bench.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "posekd/ai8x/calibration.h"
#include "posekd/core/alloc.h"
#include "posekd/core/error.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco.h"
#include "posekd/data/sample.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "posekd/train/fused_adam.h"
#include "posekd/train/loss.h"
#include "posekd/train/step.h"
#include "posekd/train/teacher_cache.h"

namespace posekd::train {
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

double conv_peak(double seconds) {
  torch::NoGradGuard ng;
  auto x = torch::randn({8, 128, 46, 46});
  auto w = torch::randn({128, 128, 3, 3});
  const double flop = 2.0 * 8 * 46 * 46 * 128 * 128 * 9;
  double t = seconds_per_call([&] { (void)torch::conv2d(x, w, {}, 1, 1); }, seconds);
  return flop / t / 1e9;
}

// Teacher forward FLOPs at 368 (openpose.md 1.5: 8.88 GMAC).
constexpr double kTeacherFlop368 = 2 * 8.88e9;

}  // namespace

std::vector<OpTime> self_times_from_trace(const std::string& trace_json) {
  const auto j = nlohmann::json::parse(trace_json);
  const auto& events = j.is_array() ? j : j.at("traceEvents");
  struct Ev {
    double ts, dur;
    std::string name;
  };
  std::map<std::string, std::vector<Ev>> by_thread;
  for (const auto& e : events) {
    if (e.value("ph", "") != "X") continue;
    by_thread[e.value("tid", nlohmann::json(0)).dump()].push_back(
        {e.value("ts", 0.0), e.value("dur", 0.0), e.value("name", "?")});
  }
  std::map<std::string, OpTime> acc;
  for (auto& [tid, evs] : by_thread) {
    // Parents start no later and last longer: sort so each event follows its enclosing one.
    std::sort(evs.begin(), evs.end(),
              [](const Ev& a, const Ev& b) { return a.ts != b.ts ? a.ts < b.ts : a.dur > b.dur; });
    std::vector<size_t> stack;
    std::vector<double> self(evs.size());
    for (size_t i = 0; i < evs.size(); ++i) {
      while (!stack.empty() && evs[stack.back()].ts + evs[stack.back()].dur <= evs[i].ts) stack.pop_back();
      self[i] = evs[i].dur;
      if (!stack.empty()) self[stack.back()] -= evs[i].dur;
      stack.push_back(i);
    }
    for (size_t i = 0; i < evs.size(); ++i) {
      OpTime& o = acc[evs[i].name];
      o.name = evs[i].name;
      o.self_us += std::max(0.0, self[i]);
      o.total_us += evs[i].dur;
      ++o.calls;
    }
  }
  std::vector<OpTime> out;
  for (auto& [n, o] : acc) out.push_back(o);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.self_us > b.self_us; });
  return out;
}

std::string BenchReport::text() const {
  std::string s = fmt::format("| figure | value | GFLOP/s | of conv peak |\n|---|---|---|---|\n");
  s += fmt::format("| conv peak (3x3 128->128 at 46x46, batch 8) | {:.1f} GFLOP/s | | 100% |\n", conv_peak_gflops);
  for (const auto& f : figures)
    s += fmt::format("| {} | {:.2f} {} | {} | {} |\n", f.name, f.value, f.unit,
                     f.gflops > 0 ? fmt::format("{:.1f}", f.gflops) : std::string(),
                     f.fraction_of_peak > 0 ? fmt::format("{:.0f}%", 100 * f.fraction_of_peak) : std::string());
  return s;
}

namespace {

// One run of `posekd bench`; each group of figures is a method, called in order by run().
class BenchRun {
 public:
  explicit BenchRun(const BenchOptions& o) : o_(o), secs_(o.quick ? 0.2 : o.seconds) {}

  BenchReport run() {
    const std::string alloc = tune_allocator();
    r_.threads = set_compute_threads(o_.threads);
    r_.conv_peak_gflops = conv_peak(secs_);
    r_.figures.push_back(BenchFigure{alloc, allocator_tuned() ? 1.0 : 0.0, "(1 = glibc tuned)"});
    sample_preparation();
    make_student_batch();
    adam_steps();
    student_float_step();
    student_qat_step();
    teacher_forward();
    kd_steps_and_projection();
    add("peak resident memory (getrusage ru_maxrss)", static_cast<double>(peak_rss_bytes()) / (1 << 20), "MB", 0);
    return r_;
  }

 private:
  static constexpr int kBatch = 8;

  void add(std::string name, double value, std::string unit, double flop_per_unit) {
    BenchFigure f{std::move(name), value, std::move(unit)};
    if (flop_per_unit > 0) {
      f.gflops = value * flop_per_unit / 1e9;
      f.fraction_of_peak = f.gflops / r_.conv_peak_gflops;
    }
    r_.figures.push_back(f);
  }

  // One thread, 640x480 JPEGs with 3 people each.
  void sample_preparation() {
    fs::path dir = o_.work_dir.empty() ? fs::temp_directory_path() / fmt::format("posekd-bench-{}", ::getpid())
                                       : fs::path(o_.work_dir);
    fs::create_directories(dir);
    std::mt19937 rng(1);
    std::vector<data::CocoImage> images;
    for (int i = 0; i < 16; ++i) {
      cv::Mat img(480, 640, CV_8UC3);
      cv::randu(img, 0, 255);
      cv::GaussianBlur(img, img, cv::Size(9, 9), 3);
      const std::string name = fmt::format("bench_{:02d}.jpg", i);
      cv::imwrite((dir / name).string(), img);
      data::CocoImage ci;
      ci.id = i;
      ci.file_name = name;
      ci.width = 640;
      ci.height = 480;
      for (int p = 0; p < 3; ++p) {
        data::CocoPerson per;
        for (int k = 0; k < 17; ++k) {
          per.keypoints[3 * k] = static_cast<float>(100 + 150 * p + (rng() % 100));
          per.keypoints[3 * k + 1] = static_cast<float>(50 + (rng() % 380));
          per.keypoints[3 * k + 2] = 2;
        }
        per.num_keypoints = 17;
        per.bbox = {100.f + 150 * p, 50, 100, 380};
        per.area = 38000;
        ci.persons.push_back(per);
      }
      images.push_back(ci);
    }
    data::SampleConfig sc;
    at::set_num_threads(1);
    size_t k = 0;
    prep_per_sample_ =
        seconds_per_call([&] { (void)data::prepare_sample(images[k++ % images.size()], dir.string(), sc); }, secs_, 16);
    at::set_num_threads(r_.threads);
    add("sample preparation, 1 thread, 640x480 JPEG", 1.0 / prep_per_sample_, "samples/s", 0);
    if (o_.work_dir.empty()) fs::remove_all(dir);
  }

  // The student and one fixed batch: input, ground truth, teacher outputs, mask.
  void make_student_batch() {
    student_ = model::make_student(o_.arch);
    auto in_shape = student_->input_shape();
    x_ = torch::rand({kBatch, in_shape[0], in_shape[1], in_shape[2]}) * 2 - 1;
    gh_ = torch::rand({kBatch, 19, 16, 16});
    gp_ = torch::rand({kBatch, 38, 16, 16}) - 0.5;
    th_ = torch::rand({kBatch, 19, 16, 16});
    tp_ = torch::rand({kBatch, 38, 16, 16}) - 0.5;
    mask_ = torch::ones({kBatch, 1, 16, 16});
  }

  // The trainer's own step (train/step.h) on the fixed batch.
  void kd_step(model::Student& s, torch::optim::Adam& opt, const torch::Tensor& input, const torch::Tensor& t_heat,
               const torch::Tensor& t_paf) {
    (void)train_step(opt, [&] {
      auto out = s.forward(s.folded_input() && input.size(1) == 3 ? data::fold_input(input) : input);
      return pose_loss(out.heat, out.paf, gh_, gp_, mask_, t_heat, t_paf, {0.3, 0.7});
    });
  }

  // --profile: a Chrome trace of a few steps plus a table of the operators' self times.
  void profile(const std::string& name, const std::function<void()>& step) {
    if (o_.profile_dir.empty()) return;
    fs::create_directories(o_.profile_dir);
    const std::string path = (fs::path(o_.profile_dir) / (name + ".json")).string();
    step();  // warm
    {
      torch::autograd::profiler::RecordProfile rec(path);
      for (int i = 0; i < 5; ++i) step();
    }
    std::ifstream f(path);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto ops = self_times_from_trace(text);
    double total = 0;
    for (const auto& op : ops) total += op.self_us;
    std::string table =
        fmt::format("{}: 5 steps, {:.1f} ms per step of operator time (trace: {})\n", name, total / 5000.0, path);
    for (size_t i = 0; i < ops.size() && i < 15; ++i)
      table += fmt::format("  {:>6.2f} ms/step {:>5.1f}%  {:>6} calls  {}\n", ops[i].self_us / 5000.0,
                           100.0 * ops[i].self_us / total, ops[i].calls / 5, ops[i].name);
    std::printf("%s", table.c_str());
    std::fflush(stdout);
  }

  // The optimizer alone: LibTorch's Adam::step against the fused single pass, same parameters.
  void adam_steps() {
    std::vector<torch::Tensor> ps;
    for (auto& p : student_->parameters())
      if (p.requires_grad()) ps.push_back(p);
    for (auto& p : ps) p.mutable_grad() = torch::randn_like(p) * 1e-3;
    torch::optim::Adam a(ps, torch::optim::AdamOptions(1e-7)), f(ps, torch::optim::AdamOptions(1e-7));
    const double t_torch = seconds_per_call([&] { a.step(); }, secs_ / 2);
    const double t_fused = seconds_per_call([&] { fused_adam_step(f); }, secs_ / 2);
    add(fmt::format("Adam step, {} tensors: LibTorch Adam::step", ps.size()), t_torch * 1e3, "ms", 0);
    add("Adam step: fused_adam_step", t_fused * 1e3, "ms", 0);
    for (auto& p : ps) p.mutable_grad() = torch::Tensor();
  }

  // Seconds per distillation step of the student in its current phase (profiled as `name`).
  double time_student_step(const char* name, const char* label) {
    student_->train();
    torch::optim::Adam opt(student_->parameters(), torch::optim::AdamOptions(1e-4));
    auto step = [&] { kd_step(*student_, opt, x_, th_, tp_); };
    profile(name, step);
    const double t = seconds_per_call(step, secs_);
    add(label, kBatch / t, "img/s", 0);
    return t;
  }

  void student_float_step() { float_step_ = time_student_step("float_step", "student float train step, batch 8"); }

  // The same student fused and calibrated on the fixed batch (ai8x's default policy).
  void student_qat_step() {
    fuse_and_calibrate_on(*student_, x_);
    qat_step_ = time_student_step("qat_step", "student QAT train step, batch 8");
    add("QAT step / float step", qat_step_ / float_step_, "x", 0);
  }

  // The teacher at 368 (random weights, BN folded as when loaded).
  void teacher_forward() {
    torch::NoGradGuard ng;
    model::PoseEstimationWithMobileNet net(1, 128);
    net->eval();
    net->fuse();
    auto xt = torch::rand({kBatch, 3, 368, 368}) - 0.5;
    const double t = seconds_per_call([&] { (void)net->forward(xt); }, secs_, 2);
    teacher_per_img_ = t / kBatch;
    add("teacher forward at 368, batch 8", kBatch / t, "img/s", kTeacherFlop368);
  }

  // The full KD step with the teacher running (cold) and with its outputs cached (warm), and the
  // projected seed job.
  void kd_steps_and_projection() {
    auto s2 = model::make_student(o_.arch);
    s2->train();
    torch::optim::Adam opt(s2->parameters(), torch::optim::AdamOptions(1e-4));
    model::PoseEstimationWithMobileNet net(1, 128);
    net->eval();
    net->fuse();
    model::TeacherOptions to;
    model::TeacherWrapper tw(net, to);
    tw->eval();
    auto x128 = torch::rand({kBatch, 3, 128, 128}) * 2 - 1;
    const double cold = seconds_per_call(
        [&] {
          torch::Tensor h, p;
          {
            torch::NoGradGuard ng;
            auto t = tw->forward(x128);
            h = t.at(0);
            p = t.at(1);
          }
          kd_step(*s2, opt, x128, h, p);
        },
        secs_, 2);
    add("full KD step, teacher running (cold), batch 8", kBatch / cold, "img/s", 0);

    // Warm: the teacher outputs come from a real teacher cache (mmap'ed fp16 file).
    const fs::path cpath = fs::temp_directory_path() / fmt::format("posekd-bench-tcache-{}.bin", ::getpid());
    std::vector<int64_t> ids;
    for (int i = 0; i < kBatch; ++i) ids.push_back(i);
    CacheKey key;
    key.teacher_checksum = state_dict_checksum(*tw->net());
    double warm = 0, fetch = 0;
    {
      auto cache = TeacherCache::open(cpath.string(), key, ids);
      (void)cache.fetch_or_compute(ids, x128, [&](const torch::Tensor& xx) { return tw->forward(xx); });
      auto never = [](const torch::Tensor&) -> std::vector<torch::Tensor> {
        throw Error("bench: unexpected teacher cache miss");
      };
      fetch = seconds_per_call([&] { (void)cache.fetch_or_compute(ids, x128, never); }, secs_ / 4, 20);
      warm = seconds_per_call(
          [&] {
            auto t = cache.fetch_or_compute(ids, x128, never);
            kd_step(*s2, opt, x128, t.first, t.second);
          },
          secs_, 3);
    }
    fs::remove(cpath);
    add("teacher cache fetch (8 hits, fp16 -> f32)", kBatch / fetch, "img/s", 0);
    add("full KD step, teacher cached (warm), batch 8", kBatch / warm, "img/s", 0);
    // The seed job: 15,000 batches of 8 over a 15,000-image subset (8 epochs): each image sees the
    // teacher once (cache), then every step is warm; 60% of the steps float, 40% QAT (the default
    // policy). Sample preparation is counted as if it did not overlap (it runs on loader threads
    // sharing the same cores): 120,000 samples at the measured one-thread rate.
    const double steps_s = 15000 * (0.6 * (float_step_ + fetch) + 0.4 * (qat_step_ + fetch));
    const double teacher_s = 15000.0 * teacher_per_img_;
    const double prep_s = 120000.0 * prep_per_sample_;
    add("projected seed job: teacher once per image", teacher_s / 3600.0, "h", 0);
    add("projected seed job: student steps (60% float, 40% QAT)", steps_s / 3600.0, "h", 0);
    add("projected seed job: sample preparation (not overlapped)", prep_s / 3600.0, "h", 0);
    add("projected seed job (15,000 batches of 8, teacher cached)", (teacher_s + steps_s + prep_s) / 3600.0, "h", 0);
    add("projected seed job without the cache", (15000 * cold + prep_s) / 3600.0, "h", 0);
  }

  const BenchOptions& o_;
  const double secs_;
  BenchReport r_;
  double prep_per_sample_ = 0, float_step_ = 0, qat_step_ = 0, teacher_per_img_ = 0;
  std::shared_ptr<model::Student> student_;
  torch::Tensor x_, gh_, gp_, th_, tp_, mask_;
};

}  // namespace

double seconds_per_call(const std::function<void()>& f, double seconds, int min_calls) {
  f();
  int n = 0;
  const auto t0 = clock_type::now();
  double el = 0;
  do {
    f();
    ++n;
    el = std::chrono::duration<double>(clock_type::now() - t0).count();
  } while (el < seconds || n < min_calls);
  return el / n;
}

void fuse_and_calibrate_on(model::Student& student, const at::Tensor& batch) {
  ai8x::QatPolicy pol;
  int left = 2;
  const torch::Tensor x = batch;
  model::fuse_and_calibrate(
      student,
      [&]() -> std::optional<torch::Tensor> {
        if (left-- <= 0) return std::nullopt;
        return x;
      },
      pol);
}

BenchReport run_bench(const BenchOptions& o) { return BenchRun(o).run(); }

}  // namespace posekd::train
