// Data benchmarks: COCO JSON streaming parse (synthetic file the size of person_keypoints_train2017,
// ~238 MB, generated once in /tmp), the binary cache, sample preparation and the loader.
// Peak RSS of a JSON load is measured in a forked child (getrusage RUSAGE_CHILDREN).
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/loader.h"
#include "posekd/data/sample.h"

namespace {
namespace fs = std::filesystem;
using namespace posekd::data;

const fs::path kDir = "/tmp/posekd-bench-data";
const fs::path kJson = kDir / "person_keypoints_synth2017.json";

// COCO train2017 person keypoints: 118,287 images, 262,465 annotations (~1% crowds), ~238 MB.
void generate_json() {
  if (fs::exists(kJson) && fs::file_size(kJson) > 200'000'000) return;
  fs::create_directories(kDir);
  std::string tmp = kJson.string() + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + tmp);
  std::mt19937_64 rng(1);
  auto u = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  const int n_images = 118287, n_anns = 262465;
  std::fputs(
      "{\"info\":{\"description\":\"synthetic\"},\"licenses\":[{\"url\":\"x\",\"id\":1,\"name\":\"n\"}],\"images\":[",
      f);
  for (int i = 0; i < n_images; ++i)
    std::fprintf(f,
                 "%s{\"license\":%d,\"file_name\":\"%012d.jpg\",\"coco_url\":\"http://images.cocodataset.org/"
                 "train2017/%012d.jpg\",\"height\":%d,\"width\":640,\"date_captured\":\"2013-11-14 16:28:13\","
                 "\"flickr_url\":\"http://farm4.staticflickr.com/3153/2970773875_164f0c0b83_z.jpg\",\"id\":%d}",
                 i ? "," : "", 1 + i % 8, i + 1, i + 1, 360 + i % 120, i + 1);
  std::fputs("],\"annotations\":[", f);
  for (int a = 0; a < n_anns; ++a) {
    const int image_id = 1 + static_cast<int>(rng() % n_images);
    const bool crowd = a % 100 == 99;
    std::fprintf(f, "%s{\"segmentation\":", a ? "," : "");
    if (crowd) {
      std::fputs("{\"counts\":[", f);
      for (int k = 0; k < 200; ++k) std::fprintf(f, "%s%d", k ? "," : "", 1 + static_cast<int>(rng() % 1200));
      std::fputs("],\"size\":[480,640]}", f);
    } else {
      std::fputs("[[", f);
      const int n = 30 + static_cast<int>(rng() % 10);
      for (int k = 0; k < 2 * n; ++k) std::fprintf(f, "%s%.2f", k ? "," : "", u(0, 470));
      std::fputs("]]", f);
    }
    const int nk = crowd ? 0 : static_cast<int>(rng() % 18);
    std::fprintf(f, ",\"num_keypoints\":%d,\"area\":%.5f,\"iscrowd\":%d,\"keypoints\":[", nk, u(100, 90000),
                 crowd ? 1 : 0);
    for (int k = 0; k < 17; ++k) {
      bool lab = k < nk;
      std::fprintf(f, "%s%d,%d,%d", k ? "," : "", lab ? static_cast<int>(rng() % 640) : 0,
                   lab ? static_cast<int>(rng() % 360) : 0, lab ? 1 + static_cast<int>(rng() % 2) : 0);
    }
    std::fprintf(f, "],\"image_id\":%d,\"bbox\":[%.2f,%.2f,%.2f,%.2f],\"category_id\":1,\"id\":%d}", image_id,
                 u(0, 300), u(0, 200), u(10, 300), u(10, 200), 900000 + a);
  }
  std::fputs("]}", f);
  std::fclose(f);
  fs::rename(tmp, kJson);
}

// Runs fn in a forked child; returns the child's peak RSS in MB (0 on failure) and its CPU
// seconds (user + system) in *cpu_s: on a shared machine wall time overstates the cost.
template <class F>
double child_peak_rss_mb(F fn, double* cpu_s) {
  pid_t pid = fork();
  if (pid == 0) {
    fn();
    _exit(0);
  }
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 0;
  *cpu_s = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
  return ru.ru_maxrss / 1024.0;
}

void BM_LoadCocoJson(benchmark::State& state) {
  generate_json();
  const double mb = fs::file_size(kJson) / 1e6;
  double rss = 0, cpu = 0, cpu_sum = 0;
  for (auto _ : state) {
    rss = child_peak_rss_mb(
        [] {
          auto ds = load_coco(kJson.string(), "");
          benchmark::DoNotOptimize(ds.images.data());
        },
        &cpu);
    cpu_sum += cpu;
  }
  state.counters["child_cpu_s"] = cpu_sum / state.iterations();
  state.counters["json_MB"] = mb;
  state.counters["peak_rss_MB"] = rss;
  state.counters["MB_per_s"] = benchmark::Counter(mb, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LoadCocoJson)->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();

void BM_LoadCocoCache(benchmark::State& state) {
  generate_json();
  CocoLoadOptions o;
  o.cache_dir = (kDir / "cache").string();
  auto build_start = std::chrono::steady_clock::now();
  fs::remove(coco_cache_path(kJson.string(), o.cache_dir));
  load_coco(kJson.string(), "", o);  // parse + write the cache
  double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - build_start).count();
  double rss = 0, cpu = 0, cpu_sum = 0;
  size_t images = 0;
  for (auto _ : state) {
    rss = child_peak_rss_mb(
        [&] {
          auto ds = load_coco(kJson.string(), "", o);
          benchmark::DoNotOptimize(ds.images.data());
        },
        &cpu);
    cpu_sum += cpu;
  }
  state.counters["child_cpu_s"] = cpu_sum / state.iterations();
  images = load_coco(kJson.string(), "", o).images.size();
  state.counters["images"] = static_cast<double>(images);
  state.counters["cache_MB"] = fs::file_size(coco_cache_path(kJson.string(), o.cache_dir)) / 1e6;
  state.counters["parse_and_write_s"] = build_s;
  state.counters["peak_rss_MB"] = rss;
}
BENCHMARK(BM_LoadCocoCache)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

CocoDataset coco_sample() {
  // The repository's tests/fixtures/coco-sample (bench/ has no compile definition for it: derived from
  // __FILE__), or $POSEKD_COCO_SAMPLE (a COCO folder with annotations/person_keypoints_val2017.json).
  const char* env = std::getenv("POSEKD_COCO_SAMPLE");
  fs::path root = env ? fs::path(env) : fs::path(__FILE__).parent_path().parent_path() / "tests/fixtures/coco-sample";
  fs::path ann = root / "annotations/person_keypoints_val2017.json";
  if (!fs::exists(ann)) return {};
  return load_coco(ann.string(), (ann.parent_path().parent_path() / "val2017").string());
}

// One thread preparing samples (JPEG decode + resize + targets) from the 4 coco-sample images.
void BM_PrepareSample(benchmark::State& state) {
  auto ds = coco_sample();
  if (ds.images.empty()) {
    state.SkipWithError("tests/fixtures/coco-sample is absent");
    return;
  }
  SampleConfig cfg;
  cfg.reduced_decode = state.range(0) != 0;
  size_t i = 0;
  for (auto _ : state) {
    Sample s = prepare_sample(ds.images[i++ % ds.images.size()], ds.image_dir, cfg);
    if (!s.ok) state.SkipWithError(s.error.c_str());
    benchmark::DoNotOptimize(s.heatmaps.data_ptr());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(cfg.reduced_decode ? "reduced decode" : "full decode");
}
BENCHMARK(BM_PrepareSample)->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The loader end to end (batches of 8), with range(0) workers.
void BM_Loader(benchmark::State& state) {
  auto ds = coco_sample();
  if (ds.images.empty()) {
    state.SkipWithError("tests/fixtures/coco-sample is absent");
    return;
  }
  Loader loader(ds, SampleConfig{}, 8, 1, static_cast<int>(state.range(0)), 4);
  for (auto _ : state) {
    Batch b = loader.next();
    benchmark::DoNotOptimize(b.image.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * 8);
}
BENCHMARK(BM_Loader)->Arg(0)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  posekd::set_compute_threads(2);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
