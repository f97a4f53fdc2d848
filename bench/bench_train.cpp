// Training benchmarks (Google Benchmark): teacher forward at 368, student float/QAT steps, the full
// KD step with the teacher running (cold) or its outputs read from the teacher cache (warm), and the
// cache fetch alone. Batch 8 everywhere (the seed's). Peak RSS is reported as a counter.
//   build-*/bench_train [--benchmark_filter=...]     POSEKD_THREADS=n (default: all cores)
//   POSEKD_MALLOC=default keeps glibc's malloc defaults (allocator comparisons; see docs/performance.md)
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "posekd/ai8x/policy.h"
#include "posekd/core/alloc.h"
#include "posekd/core/startup.h"
#include "posekd/core/threads.h"
#include "posekd/data/sample.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "posekd/train/loss.h"
#include "posekd/train/step.h"
#include "posekd/train/teacher_cache.h"

namespace {
namespace fs = std::filesystem;
using namespace posekd;
constexpr int B = 8;

struct StudentRig {
  std::shared_ptr<model::Student> s;
  std::unique_ptr<torch::optim::Adam> opt;
  torch::Tensor x128, gh, gp, mask;
  explicit StudentRig(bool qat) {
    torch::manual_seed(1);
    s = model::make_student("seed");
    x128 = torch::rand({B, 3, 128, 128}) * 2 - 1;
    gh = torch::rand({B, 19, 16, 16});
    gp = torch::rand({B, 38, 16, 16}) - 0.5;
    mask = torch::ones({B, 1, 16, 16});
    if (qat) {
      ai8x::QatPolicy pol;
      int left = 2;
      auto xin = input();
      model::fuse_and_calibrate(
          *s,
          [&]() -> std::optional<torch::Tensor> {
            if (left-- <= 0) return std::nullopt;
            return xin;
          },
          pol);
    }
    s->train();
    opt = std::make_unique<torch::optim::Adam>(s->parameters(), torch::optim::AdamOptions(1e-4));
  }
  torch::Tensor input() const { return s->folded_input() ? data::fold_input(x128) : x128; }
  void step(const torch::Tensor& th, const torch::Tensor& tp) {  // the trainer's own step (train/step.h)
    (void)train::train_step(*opt, [&] {
      auto out = s->forward(input());
      return train::pose_loss(out.heat, out.paf, gh, gp, mask, th, tp, {0.3, 0.7});
    });
  }
};

model::TeacherWrapper random_teacher() {
  torch::manual_seed(2);
  model::PoseEstimationWithMobileNet net(1, 128);
  net->eval();
  net->fuse();
  model::TeacherWrapper tw(net, model::TeacherOptions{});
  tw->eval();
  return tw;
}

// Kernel-side cost of the allocator, robust to machine load: minor page faults and system CPU time
// per iteration (a fresh mmap'ed tensor is zero-filled by the kernel page by page).
struct Usage {
  struct rusage ru {};
  Usage() { getrusage(RUSAGE_SELF, &ru); }
};
double secs(const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); }

void finish(benchmark::State& st, const Usage& start) {
  Usage end;
  const double n = static_cast<double>(std::max<int64_t>(1, st.iterations()));
  st.SetItemsProcessed(st.iterations() * B);
  st.counters["peak_rss_MB"] = static_cast<double>(peak_rss_bytes()) / (1 << 20);
  st.counters["minflt/it"] = static_cast<double>(end.ru.ru_minflt - start.ru.ru_minflt) / n;
  st.counters["sys_ms/it"] = 1e3 * (secs(end.ru.ru_stime) - secs(start.ru.ru_stime)) / n;
  st.counters["user_ms/it"] = 1e3 * (secs(end.ru.ru_utime) - secs(start.ru.ru_utime)) / n;
}

void BM_TeacherForward368(benchmark::State& st) {
  torch::NoGradGuard ng;
  model::PoseEstimationWithMobileNet net(1, 128);
  net->eval();
  net->fuse();
  auto x = torch::rand({B, 3, 368, 368}) - 0.5;
  Usage u0;
  for (auto _ : st) benchmark::DoNotOptimize(net->forward(x));
  finish(st, u0);
}
BENCHMARK(BM_TeacherForward368)->Unit(benchmark::kMillisecond)->MinTime(3)->UseRealTime();

void BM_StudentFloatStep(benchmark::State& st) {
  StudentRig r(false);
  auto th = torch::rand({B, 19, 16, 16}), tp = torch::rand({B, 38, 16, 16}) - 0.5;
  Usage u0;
  for (auto _ : st) r.step(th, tp);
  finish(st, u0);
}
BENCHMARK(BM_StudentFloatStep)->Unit(benchmark::kMillisecond)->MinTime(3)->UseRealTime();

void BM_StudentQatStep(benchmark::State& st) {
  StudentRig r(true);
  auto th = torch::rand({B, 19, 16, 16}), tp = torch::rand({B, 38, 16, 16}) - 0.5;
  Usage u0;
  for (auto _ : st) r.step(th, tp);
  finish(st, u0);
}
BENCHMARK(BM_StudentQatStep)->Unit(benchmark::kMillisecond)->MinTime(3)->UseRealTime();

// Full KD step, teacher running on every batch (no cache).
void BM_KDStepCold(benchmark::State& st) {
  StudentRig r(false);
  auto tw = random_teacher();
  Usage u0;
  for (auto _ : st) {
    auto t = tw->forward(r.x128);
    r.step(t.at(0), t.at(1));
  }
  finish(st, u0);
}
BENCHMARK(BM_KDStepCold)->Unit(benchmark::kMillisecond)->MinTime(3)->UseRealTime();

struct CacheRig {
  fs::path path;
  std::optional<train::TeacherCache> cache;
  std::vector<int64_t> ids;
  CacheRig() {
    path = fs::temp_directory_path() / ("posekd-bench-cache-" + std::to_string(::getpid()) + ".bin");
    for (int i = 0; i < B; ++i) ids.push_back(1000 + i);
    train::CacheKey k;
    k.teacher_checksum = 42;
    cache.emplace(train::TeacherCache::open(path.string(), k, ids));
    for (int64_t id : ids) cache->store(id, torch::rand({19, 16, 16}), torch::rand({38, 16, 16}));
  }
  ~CacheRig() {
    cache.reset();
    fs::remove(path);
  }
};

// Full KD step, teacher outputs read from the (warm) teacher cache.
void BM_KDStepWarm(benchmark::State& st) {
  StudentRig r(false);
  CacheRig c;
  auto never = [](const torch::Tensor&) -> std::vector<torch::Tensor> { throw std::runtime_error("miss"); };
  Usage u0;
  for (auto _ : st) {
    auto t = c.cache->fetch_or_compute(c.ids, r.x128, never);
    r.step(t.first, t.second);
  }
  finish(st, u0);
}
BENCHMARK(BM_KDStepWarm)->Unit(benchmark::kMillisecond)->MinTime(3)->UseRealTime();

void BM_CacheFetch(benchmark::State& st) {
  CacheRig c;
  auto x = torch::zeros({B, 3, 128, 128});
  auto never = [](const torch::Tensor&) -> std::vector<torch::Tensor> { throw std::runtime_error("miss"); };
  Usage u0;
  for (auto _ : st) benchmark::DoNotOptimize(c.cache->fetch_or_compute(c.ids, x, never));
  finish(st, u0);
}
BENCHMARK(BM_CacheFetch)->Unit(benchmark::kMicrosecond)->MinTime(1)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  posekd::reexec_with_startup_environment(argv);  // as the posekd program does (huge pages, OpenMP waits)
  const std::string alloc = posekd::memory_description();
  const char* th = std::getenv("POSEKD_THREADS");
  const int threads = posekd::set_compute_threads(th ? std::atoi(th) : 0);
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("allocator", alloc);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
