// Grouping peaks into people with part affinity fields: the Dec-2020 "fast" upstream
// `group_keypoints` (modules/keypoints.py, commit ee9e4cc; spec/openpose.md 5.3), limbs in
// skeleton::kGroupLimbs / kGroupPafChannels order.
#pragma once
#include <array>
#include <vector>

#include "posekd/infer/peaks.h"

namespace posekd::infer {

struct PoseEntry {
  std::array<int, 18> kpt;  // global peak id per OpenPose-18 keypoint, -1 if missing
  double score = 0;         // sum of keypoint scores and connection scores
  int count = 0;            // number of connected keypoints (as upstream counts them)
};

struct GroupParams {
  float min_paf_score = 0.05f;     // a sample counts when dot(paf, unit limb) > this
  int points_per_limb = 10;        // samples incl. both endpoints, rounded with nearbyint
  double min_success_ratio = 0.8;  // fraction of passing samples must exceed this
  int min_count = 3;               // final filter: count >= min_count
  double min_mean_score = 0.2;     // final filter: score / count >= this
  // A candidate limb shorter than L = short_limb is accepted even when the PAF test fails (its
  // direction is undefined: upstream's test fails on most limbs whose ends share a map cell, e.g.
  // the shoulders of a person seen from the side, a small person's eyes), with the larger of its
  // PAF score (when that passes) and 0.1 (L - length) / L: the PAF-confirmed and then the closest
  // ends first. 0 = upstream's grouping exactly. In map cells as set by users (EvalConfig,
  // DecodeParams); decode() hands limb_affinity / group_keypoints the length in the peaks' own
  // coordinate units (times its upsampling factor).
  float short_limb = 0.5f;
};

// Affinity of one candidate limb a->b on the PAF pair (px, py), both [h, w]: returns the mean
// passing dot product (0 if none; float32 sums, float64 division as upstream's numpy) and sets
// *ratio to the passing fraction. Exposed for tests.
double limb_affinity(const float* px, const float* py, int h, int w, float ax, float ay, float bx, float by,
                     double* ratio, const GroupParams& params = {});

// Peaks by OpenPose keypoint type (18 lists, ids = position in their concatenation) and PAFs
// [38, h, w] -> the surviving poses, in upstream order.
std::vector<PoseEntry> group_keypoints(const std::vector<std::vector<Peak>>& peaks_by_type, const float* pafs, int h,
                                       int w, const GroupParams& params = {});

// The concatenation of peaks_by_type (index == Peak::id when ids were assigned by
// extract_all_keypoints).
std::vector<Peak> flatten_peaks(const std::vector<std::vector<Peak>>& peaks_by_type);

}  // namespace posekd::infer
