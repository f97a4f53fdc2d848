// Where a model loses keypoint AP: which people it finds, which of their keypoints it misses,
// how far off the found ones are, and how often it mixes up left and right.
//
// Each detection (highest score first) takes the not yet matched, non-ignored gt person of its image
// with the highest OKS, if that OKS reaches `min_oks` (a loose match: the point is to look at the
// people AP does not count). For every matched person, over its labelled keypoints (v > 0):
//   missing   the detection has no keypoint there (v == 0 in the results);
//   error     the distance of a found keypoint, in original-image pixels, and relative to the
//             person's size sqrt(area) (OKS's scale);
//   swapped   the OKS rises when the detection's left and right keypoints are exchanged.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "posekd/core/skeleton.h"
#include "posekd/data/coco.h"
#include "posekd/infer/coco_eval.h"

namespace posekd::infer {

struct KeypointErrorBreakdown {
  double min_oks = 0.1;
  int64_t people = 0;           // non-ignored gt people (not crowd, with keypoints)
  int64_t matched = 0;          // of them, matched by a detection
  double mean_oks = 0;          // over the matched people
  int64_t labelled = 0;         // labelled keypoints of the matched people
  int64_t missing = 0;          // of them, not found by the matching detection
  double median_error_px = 0;   // found keypoints: median distance in original pixels
  double median_error_rel = 0;  // found keypoints: median distance / sqrt(person area)
  int64_t swapped = 0;          // matched people whose OKS rises with left and right exchanged
  std::array<int64_t, skeleton::kNumCoco> labelled_by_kpt{}, missing_by_kpt{};
  std::string text() const;  // a few lines for `posekd eval`
};

KeypointErrorBreakdown keypoint_error_breakdown(const data::CocoDataset& gt, const std::vector<Detection>& dts,
                                                double min_oks = 0.1);

}  // namespace posekd::infer
