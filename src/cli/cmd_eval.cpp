// `posekd eval`: COCO keypoint AP (pycocotools' 10-line block) of the teacher, a student checkpoint
// (float or QAT as saved), the int8 student (--int8: quantize.py + MAX78000 integer arithmetic), or
// an existing results JSON (--results).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include <fmt/format.h>

#include "posekd/cli/registry.h"
#include "posekd/core/error.h"
#include "posekd/core/precision.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/infer/coco_eval.h"
#include "posekd/infer/coco_results.h"
#include "posekd/infer/error_breakdown.h"
#include "posekd/infer/evaluate.h"
#include "posekd/train/checkpoint.h"

namespace posekd::cli::cmd_eval {  // named: the commands share unity-build translation units
namespace {

namespace fs = std::filesystem;

struct Opts {
  std::string data, split = "val2017", ann, images;
  std::string checkpoint, teacher, results, output, arch = "seed";
  std::string precision = "auto";
  bool int8 = false, quiet = false, errors = false, ground_truth = false;
  int64_t subset = 0;
  int threads = 0, batch_size = 8;
  float short_limb = posekd::infer::GroupParams{}.short_limb;
};

// The 10-line block, then (--errors) where the AP is lost.
void print_summary(const posekd::infer::KeypointEvalResult& r, const posekd::data::CocoDataset& gt,
                   const std::vector<posekd::infer::Detection>& dts, bool errors) {
  std::fputs(posekd::infer::format_summary(r.stats).c_str(), stdout);
  if (errors) std::fputs(posekd::infer::keypoint_error_breakdown(gt, dts).text().c_str(), stdout);
  std::fflush(stdout);
}

int run(const Opts& o) {
  using posekd::Error;
  namespace inf = posekd::infer;
  posekd::set_compute_threads(o.threads);
  const posekd::Precision prec = posekd::resolve_precision(o.precision);
  const int sources = !o.checkpoint.empty() + !o.teacher.empty() + !o.results.empty() + o.ground_truth;
  if (sources != 1)
    throw Error("eval: give exactly one of --checkpoint FILE, --teacher FILE, --results FILE, --ground-truth");
  if (o.int8 && o.checkpoint.empty()) throw Error("eval: --int8 needs --checkpoint (a QAT student checkpoint)");
  if (o.batch_size <= 0) throw Error("eval: --batch-size must be positive");
  if (o.subset < 0) throw Error("eval: --subset must be >= 0");

  std::string ann = o.ann, images = o.images;
  if (!o.data.empty()) {
    if (ann.empty()) ann = posekd::data::coco_annotation_path(o.data, o.split);
    if (images.empty()) images = posekd::data::coco_image_dir(o.data, o.split);
  }
  if (ann.empty()) throw Error("eval: no annotations: give --data DIR (COCO root) or --ann FILE --images DIR");
  if (images.empty()) images = fs::path(ann).parent_path().string();
  if (!fs::exists(ann)) posekd::fail_file(ann, "annotation file not found");
  for (const auto& f : {o.checkpoint, o.teacher, o.results})
    if (!f.empty() && !fs::exists(f)) posekd::fail_file(f, "file not found");

  posekd::data::CocoLoadOptions lo;
  lo.subset = o.subset;
  const auto gt = posekd::data::load_coco(ann, images, lo);
  for (const auto& w : gt.warnings) std::fprintf(stderr, "warning: %s: %s\n", ann.c_str(), w.c_str());

  if (!o.results.empty()) {
    int64_t dropped = 0;
    auto dts = inf::read_results_json(o.results, &dropped);
    int64_t outside = 0;
    if (o.subset > 0) {  // keep the detections of the evaluated images only
      std::set<int64_t> ids;
      for (const auto& im : gt.images) ids.insert(im.id);
      std::vector<inf::Detection> kept;
      for (auto& d : dts)
        if (ids.count(d.image_id))
          kept.push_back(d);
        else
          ++outside;
      dts.swap(kept);
    }
    const auto r = inf::evaluate_keypoints(gt, dts, o.results);
    std::fprintf(stderr, "eval: %lld images, %lld gt (%lld ignored), %lld detections",
                 static_cast<long long>(r.num_images), static_cast<long long>(r.num_gt),
                 static_cast<long long>(r.num_ignored_gt), static_cast<long long>(r.num_detections));
    if (dropped) std::fprintf(stderr, ", %lld with category_id != 1 dropped", static_cast<long long>(dropped));
    if (outside) std::fprintf(stderr, ", %lld outside --subset dropped", static_cast<long long>(outside));
    std::fprintf(stderr, "\n");
    if (!o.output.empty()) inf::write_results_json(o.output, dts);
    print_summary(r, gt, dts, o.errors);
    return 0;
  }

  inf::EvalConfig cfg;
  inf::PredictFn predict;
  std::string what;
  if (o.ground_truth) {  // the annotations' own target maps at the student's 128x128 / 16x16
    predict = inf::ground_truth_predictor(gt, cfg);
    what = "ground-truth maps";
  } else if (!o.teacher.empty()) {
    const auto teacher = posekd::model::load_teacher(o.teacher);  // the size and scale its file says
    cfg = inf::teacher_eval_config(teacher.info);
    predict = inf::teacher_predictor(teacher, prec);
    what = "teacher " + o.teacher;
  } else {
    auto student = posekd::train::load_student(o.checkpoint, o.arch);
    if (o.int8) {
      predict = inf::int8_predictor(*student, o.checkpoint);
      what = fmt::format("int8 student {} ({})", o.checkpoint, student->arch());
    } else {
      predict = inf::student_predictor(student, prec);
      what = fmt::format("student {} ({})", o.checkpoint, student->arch());
    }
  }
  cfg.batch_size = o.batch_size;
  cfg.grouping.short_limb = o.short_limb;
  const auto t0 = std::chrono::steady_clock::now();
  if (!o.quiet) {
    cfg.progress = [t0](int64_t done, int64_t total) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\reval: %lld/%lld images, %.1f s", static_cast<long long>(done),
                   static_cast<long long>(total), s);
      if (done == total) std::fprintf(stderr, "\n");
    };
  }
  std::fprintf(stderr, "eval: %s on %s (%zu images, input %d)\n", what.c_str(), ann.c_str(), gt.images.size(),
               cfg.input_size);
  if (!o.int8) std::fprintf(stderr, "eval: %s\n", posekd::describe_precision(prec, o.precision).c_str());
  std::vector<inf::Detection> dts;
  inf::PredictStats st;
  const auto r = inf::evaluate_model(gt, predict, cfg, &dts, &st);
  if (st.unreadable) {
    std::fprintf(stderr, "warning: %lld of %lld images unreadable, skipped (no detections):\n",
                 static_cast<long long>(st.unreadable), static_cast<long long>(st.images));
    for (const auto& e : st.errors) std::fprintf(stderr, "  %s\n", e.c_str());
  }
  std::fprintf(stderr, "eval: %lld images, %lld gt (%lld ignored), %lld detections\n",
               static_cast<long long>(r.num_images), static_cast<long long>(r.num_gt),
               static_cast<long long>(r.num_ignored_gt), static_cast<long long>(r.num_detections));
  if (!o.output.empty()) {
    inf::write_results_json(o.output, dts);
    std::fprintf(stderr, "eval: wrote %s\n", o.output.c_str());
  }
  print_summary(r, gt, dts, o.errors);
  return 0;
}

posekd::cli::Registration reg(
    "eval", "COCO keypoint AP of the teacher, a student checkpoint, the int8 student or a results JSON",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<Opts>();
      app.add_option("--data", o->data, "COCO root (annotations/person_keypoints_<split>.json, <split>/ images)");
      app.add_option("--split", o->split, "split name under --data")->capture_default_str();
      app.add_option("--ann", o->ann, "annotation JSON (overrides --data)");
      app.add_option("--images", o->images, "image folder (overrides --data)");
      app.add_option("--checkpoint", o->checkpoint, "student checkpoint (posekd, seed or ai8x; float or QAT)");
      app.add_flag("--int8", o->int8, "integer (MAX78000) inference of the QAT checkpoint, as quantize.py + -8");
      app.add_option("--arch", o->arch, "student arch when the checkpoint does not name one")->capture_default_str();
      app.add_option("--teacher", o->teacher, "teacher checkpoint (legacy or zip torch.save)");
      app.add_option("--results", o->results, "evaluate this results JSON instead of a model");
      app.add_flag("--ground-truth", o->ground_truth,
                   "evaluate the annotations' own target maps (128x128 input, 16x16 maps) through the decoder: the "
                   "ceiling a student can reach");
      app.add_option("-o,--output", o->output, "write the detections as a COCO results JSON");
      app.add_option("--subset", o->subset, "evaluate the first N images that have a person with keypoints (0 = all)")
          ->capture_default_str();
      app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--batch-size", o->batch_size, "images per forward pass")->capture_default_str();
      app.add_option("--precision", o->precision,
                     "float inference arithmetic: auto (bf16 where the CPU has bf16 units), fp32 or bf16; "
                     "--int8 is always exact")
          ->capture_default_str();
      app.add_option("--short-limb", o->short_limb,
                     "limbs shorter than this many map cells join without the PAF test (0 = upstream's grouping)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 4.0));
      app.add_flag("--errors", o->errors,
                   "also print where the AP is lost: people matched, keypoints missing, median keypoint error, "
                   "left/right swaps");
      app.add_flag("--quiet", o->quiet, "no progress line");
      return [o]() { return run(*o); };
    });

}  // namespace
}  // namespace posekd::cli::cmd_eval
