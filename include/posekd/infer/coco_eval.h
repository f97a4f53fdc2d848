// COCO keypoint evaluation, exactly as pycocotools COCOeval(iouType='keypoints') after
// COCO.loadRes: OKS, per-image greedy matching (maxDets 20), crowd / no-keypoint gt ignored,
// area ranges all / medium / large, IoU thresholds .50:.05:.95, 101-point interpolated precision,
// recall, the 10 summary stats and the printed block.
//
// Known deviations from pycocotools (none changes a result in practice):
// - CocoPerson stores coordinates/areas as float, pycocotools keeps the JSON doubles;
// - within an image, gt are taken as persons (JSON order) then crowds (JSON order), whereas
//   pycocotools keeps the interleaved JSON order: this only matters for exact OKS ties between
//   an ignored person and a crowd region.
// Sums follow numpy's pairwise order, so OKS and the means are bit-identical for equal inputs.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "posekd/data/coco.h"

namespace posekd::infer {

struct Detection {
  int64_t image_id = 0;
  std::array<float, 51> keypoints{};  // COCO-17 x, y, v
  float score = 0.f;
};

inline constexpr int kEvalMaxDets = 20;
inline constexpr int kNumIouThrs = 10;   // .50:.05:.95
inline constexpr int kNumRecThrs = 101;  // 0:.01:1
inline constexpr int kNumAreaRngs = 3;   // all, medium, large

// The thresholds exactly as numpy.linspace makes them in pycocotools' Params.
double iou_threshold(int t);
double recall_threshold(int r);
// Area range a: all [0, 1e10], medium [32^2, 96^2], large [96^2, 1e10]; labels "all", "medium", "large".
std::array<double, 2> area_range(int a);
const char* area_label(int a);

// pycocotools' kpt_oks_sigmas (np.array([.26, ...]) / 10.0, bit-exact), from skeleton::kOksSigmas.
double oks_sigma(int coco_kpt);

// loadRes: detection area and bbox from the min/max of ALL 17 keypoints (placeholders included).
double detection_area(const std::array<float, 51>& keypoints);
std::array<double, 4> detection_bbox(const std::array<float, 51>& keypoints);

// OKS of a detection against one gt (computeOks): labeled gt keypoints (v > 0) if any, otherwise
// the distance to the gt box doubled on every side (crowd / no-keypoint rule).
double compute_oks(const data::CocoPerson& gt, const std::array<float, 51>& dt_keypoints);

struct KeypointEvalResult {
  // precision[t][r][a] and recall[t][a]; -1 where the area range has no non-ignored gt.
  std::vector<double> precision;   // kNumIouThrs * kNumRecThrs * kNumAreaRngs
  std::vector<double> recall;      // kNumIouThrs * kNumAreaRngs
  std::array<double, 10> stats{};  // AP, AP50, AP75, AP_M, AP_L, AR, AR50, AR75, AR_M, AR_L
  int64_t num_images = 0, num_gt = 0, num_ignored_gt = 0, num_detections = 0;
  double precision_at(int t, int r, int a) const { return precision[(t * kNumRecThrs + r) * kNumAreaRngs + a]; }
  double recall_at(int t, int a) const { return recall[t * kNumAreaRngs + a]; }
};

// Evaluates over every image of `gt` (sorted by id). Detections must name images of `gt`
// (pycocotools asserts this): otherwise posekd::Error naming `what` (e.g. the results file).
KeypointEvalResult evaluate_keypoints(const data::CocoDataset& gt, const std::vector<Detection>& dts,
                                      const std::string& what = "detections");

// The 10-line block pycocotools' summarize() prints, each line ending in '\n'.
std::string format_summary(const std::array<double, 10>& stats);

}  // namespace posekd::infer
