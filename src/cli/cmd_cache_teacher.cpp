// `posekd cache-teacher`: runs the frozen teacher once over every training image and stores its
// 16x16 outputs in the teacher cache (train/teacher_cache.h) ahead of training. Resumable: entries
// already valid are skipped.
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>

#include "posekd/cli/registry.h"
#include "posekd/core/alloc.h"
#include "posekd/core/error.h"
#include "posekd/core/precision.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/sample.h"
#include "posekd/model/teacher.h"
#include "posekd/train/distributed.h"
#include "posekd/train/teacher_cache.h"

namespace posekd::cli::cmd_cache_teacher {  // named: the commands share unity-build translation units
namespace {

struct Opts {
  std::string teacher, ann, images, out;
  int64_t subset = 0;
  int batch = 8;
  int threads = 0;
  double input_scale = 0.5;
  std::string precision = "auto";
  bool quiet = false;
};

// rate = images computed per second by this run; ETA from the images left.
void progress(int64_t done, int64_t total, int64_t computed, double secs, bool final) {
  const int width = 30;
  const int fill = total > 0 ? static_cast<int>(width * done / total) : width;
  const double rate = secs > 0 ? computed / secs : 0;
  const double eta = rate > 0 ? (total - done) / rate : 0;
  std::fprintf(stderr, "\r[%s%s] %lld/%lld images  %.1f img/s  ETA %s   ", std::string(fill, '#').c_str(),
               std::string(width - fill, '.').c_str(), static_cast<long long>(done), static_cast<long long>(total),
               rate,
               eta >= 3600 ? fmt::format("{:.1f}h", eta / 3600).c_str() : fmt::format("{:.1f}m", eta / 60).c_str());
  if (final) std::fputc('\n', stderr);
  std::fflush(stderr);
}

int run(const Opts& o) {
  using namespace posekd;
  const std::string alloc = memory_description();
  // Under `posekd launch --nproc N` (or torchrun) each rank computes every N-th image into the one file.
  const train::DistOptions dopt = train::resolve_dist_options({});
  const int rank = dopt.rank, world = dopt.world_size;
  int want_threads = o.threads;
  if (want_threads <= 0 && dopt.local_world_size > 1)
    want_threads = std::max(1, hardware_threads() / dopt.local_world_size);
  const int threads = set_compute_threads(want_threads);
  if (o.batch < 1) throw Error("cache-teacher: --batch must be at least 1");
  std::unique_ptr<train::Distributed> dist;
  if (world > 1) dist = std::make_unique<train::Distributed>(dopt);
  const bool quiet = o.quiet || rank != 0;
  auto say = [&](const std::string& s) {
    if (!quiet) std::printf("%s\n", s.c_str());
  };
  if (dist) say(fmt::format("{} processes, each computes every {}-th image", world, world));
  say(fmt::format("{}; {} compute threads", alloc, threads));

  data::CocoLoadOptions lo;
  lo.subset = o.subset;
  data::CocoDataset ds = data::load_coco(o.ann, o.images, lo);
  std::vector<const data::CocoImage*> samples;
  std::vector<int64_t> ids;
  for (const auto& im : ds.images)
    if (data::has_keypoint_person(im)) {
      samples.push_back(&im);
      ids.push_back(im.id);
    }
  if (samples.empty()) fail_file(o.ann, "no image with a keypoint-annotated person: nothing to cache");

  model::TeacherOptions to;
  to.input_scale = o.input_scale;
  to.precision = resolve_precision(o.precision);
  say("Teacher " + describe_precision(to.precision, o.precision));
  model::LoadReport rep;
  auto teacher = model::load_teacher_wrapper(o.teacher, to, &rep);
  say(fmt::format("Teacher {}: {} entries loaded, {} missing, {} ignored", o.teacher, rep.loaded, rep.missing,
                  rep.ignored));
  data::SampleConfig sc;
  const train::CacheKey key = train::make_cache_key(teacher, sc, train::dataset_identity(o.ann, o.images));
  std::optional<train::TeacherCache> opened;
  for (int r = 0; r < world; ++r) {  // rank by rank: exactly one process creates the file
    if (r == rank) opened.emplace(train::TeacherCache::open(o.out, key, ids, say));
    if (dist) dist->barrier();
  }
  train::TeacherCache& cache = *opened;

  std::vector<const data::CocoImage*> todo;
  for (size_t i = 0; i < samples.size(); ++i)
    if (static_cast<int>(i % static_cast<size_t>(world)) == rank && !cache.contains(samples[i]->id))
      todo.push_back(samples[i]);
  const int64_t total = static_cast<int64_t>(samples.size());
  int64_t done = total - static_cast<int64_t>(todo.size()), bad = 0;
  say(fmt::format("{} images, {} already cached, {} to compute", total, done, todo.size()));

  const bool bar = !quiet && ::isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t computed = 0;
  for (size_t i = 0; i < todo.size(); i += static_cast<size_t>(o.batch)) {
    std::vector<torch::Tensor> imgs;
    std::vector<int64_t> bid;
    for (size_t j = i; j < todo.size() && j < i + static_cast<size_t>(o.batch); ++j) {
      data::Sample s = data::prepare_sample(*todo[j], o.images, sc);
      if (!s.ok) {
        ++bad;
        if (!o.quiet) std::fprintf(stderr, "%sskipped: %s\n", bar ? "\n" : "", s.error.c_str());
        continue;
      }
      imgs.push_back(s.image);
      bid.push_back(s.image_id);
    }
    if (!imgs.empty()) {
      cache.fetch_or_compute(bid, torch::stack(imgs), [&](const torch::Tensor& x) { return teacher->forward(x); });
      computed += static_cast<int64_t>(bid.size());
    }
    done += static_cast<int64_t>(std::min(todo.size(), i + o.batch) - i);
    if (bar)
      progress(done, total, computed, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               false);
  }
  cache.flush();
  if (dist) {  // everyone's entries are in the file now; count the unreadable images of all ranks
    dist->barrier();
    bad = static_cast<int64_t>(dist->sum({static_cast<double>(bad)})[0]);
    computed = static_cast<int64_t>(dist->sum({static_cast<double>(computed)})[0]);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (bar) progress(done, total, computed, secs, true);
  say(fmt::format("Teacher cache {}: {} of {} images valid; {} computed in {:.1f}s ({:.1f} img/s), {} unreadable",
                  o.out, cache.valid_count(), total, computed, secs, secs > 0 ? computed / secs : 0.0, bad));
  return bad > 0 ? 2 : 0;
}

posekd::cli::Registration reg(
    "cache-teacher", "Run the teacher once per training image and store its outputs",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<Opts>();
      app.add_option("--teacher", o->teacher, "teacher checkpoint (.pth)")->required();
      app.add_option("--ann", o->ann, "COCO person_keypoints JSON")->required();
      app.add_option("--images", o->images, "image folder")->required();
      app.add_option("--out", o->out, "teacher cache file to create or complete")->required();
      app.add_option("--subset", o->subset, "first N images with keypoints (0 = all)")->capture_default_str();
      app.add_option("--teacher-input-scale", o->input_scale, "teacher input scale (0.5 fixed, 1.0 = seed)")
          ->capture_default_str();
      app.add_option("--batch", o->batch, "images per teacher forward")->capture_default_str();
      app.add_option(
             "--precision", o->precision,
             "teacher arithmetic: auto (bf16 where the CPU has bf16 units), fp32 or bf16; part of the cache key")
          ->capture_default_str();
      app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_flag("--quiet", o->quiet, "no progress output");
      return [o]() { return run(*o); };
    });

}  // namespace
}  // namespace posekd::cli::cmd_cache_teacher
