// Keypoint peaks on one heatmap channel, exactly as upstream Lightweight-OpenPose
// `extract_keypoints` (modules/keypoints.py; spec/openpose.md 5.2).
#pragma once
#include <vector>

namespace posekd::infer {

struct Peak {
  int x = 0, y = 0;   // map cell (column, row)
  float score = 0.f;  // map value at (y, x), >= threshold
  int id = 0;         // global id: index in the concatenation of all channels' peaks
};

struct PeakParams {
  float threshold = 0.1f;       // values below are set to 0 before the peak test
  float suppress_radius = 6.f;  // later peaks (x-ordered) closer than this (strictly) are dropped
};

// Peaks of one map [h, w] (row-major): values < threshold count as 0; a peak is strictly greater
// than its 4 neighbours (outside the map = 0). Peaks are ordered by x ascending, then y ascending,
// and greedily suppressed in that order (not by score). Ids are first_id, first_id+1, ...
std::vector<Peak> extract_keypoints(const float* map, int h, int w, int first_id, const PeakParams& params = {});

// extract_keypoints over channels 0..channels-1 of maps [channels, h, w] with running global ids.
std::vector<std::vector<Peak>> extract_all_keypoints(const float* maps, int channels, int h, int w,
                                                     const PeakParams& params = {});

}  // namespace posekd::infer
