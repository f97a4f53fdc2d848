// `posekd eval-results --ann GT.json --results DT.json`: COCO keypoint AP of a results file, printed
// as pycocotools' 10-line summary (to be folded into `posekd eval --results`).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include "posekd/cli/registry.h"
#include "posekd/infer/coco_eval.h"
#include "posekd/infer/coco_results.h"

namespace posekd::cli::cmd_eval_results {  // named: the commands share unity-build translation units
namespace {

struct Opts {
  std::string ann, results;
};

posekd::cli::Registration reg(
    "eval-results", "COCO keypoint AP of a results JSON against a COCO annotation file",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<Opts>();
      app.add_option("--ann", o->ann, "COCO person_keypoints annotation JSON")->required();
      app.add_option("--results", o->results, "results JSON: [{image_id, category_id, keypoints, score}]")->required();
      return [o]() {
        namespace inf = posekd::infer;
        const auto gt = inf::read_coco_gt_for_eval(o->ann);
        int64_t dropped = 0;
        const auto dts = inf::read_results_json(o->results, &dropped);
        const auto r = inf::evaluate_keypoints(gt, dts, o->results);
        std::fprintf(stderr, "eval-results: %lld images, %lld gt (%lld ignored), %lld detections",
                     static_cast<long long>(r.num_images), static_cast<long long>(r.num_gt),
                     static_cast<long long>(r.num_ignored_gt), static_cast<long long>(r.num_detections));
        if (dropped) std::fprintf(stderr, ", %lld with category_id != 1 dropped", static_cast<long long>(dropped));
        std::fprintf(stderr, "\n");
        for (const auto& w : gt.warnings) std::fprintf(stderr, "warning: %s: %s\n", o->ann.c_str(), w.c_str());
        std::fputs(inf::format_summary(r.stats).c_str(), stdout);
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_eval_results
