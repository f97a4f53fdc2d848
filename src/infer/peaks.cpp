#include "posekd/infer/peaks.h"

#include <algorithm>
#include <cmath>

#include "posekd/core/error.h"

namespace posekd::infer {

std::vector<Peak> extract_keypoints(const float* map, int h, int w, int first_id, const PeakParams& params) {
  if (h <= 0 || w <= 0) throw Error("extract_keypoints: map size must be positive");
  const float thr = params.threshold;
  auto at = [&](int y, int x) -> float {
    if (y < 0 || y >= h || x < 0 || x >= w) return 0.f;
    float v = map[static_cast<size_t>(y) * w + x];
    return v < thr ? 0.f : v;  // NaN stays NaN and never wins a strict comparison
  };
  // Column-major scan == "row-major nonzero, then stable sort by x".
  std::vector<Peak> cand;
  for (int x = 0; x < w; ++x)
    for (int y = 0; y < h; ++y) {
      float c = at(y, x);
      if (c > at(y, x - 1) && c > at(y, x + 1) && c > at(y - 1, x) && c > at(y + 1, x)) cand.push_back({x, y, c, 0});
    }
  std::vector<char> suppressed(cand.size(), 0);
  std::vector<Peak> kept;
  for (size_t i = 0; i < cand.size(); ++i) {
    if (suppressed[i]) continue;
    for (size_t j = i + 1; j < cand.size(); ++j) {
      double dx = cand[i].x - cand[j].x, dy = cand[i].y - cand[j].y;
      if (std::sqrt(dx * dx + dy * dy) < params.suppress_radius) suppressed[j] = 1;
    }
    Peak p = cand[i];
    p.id = first_id + static_cast<int>(kept.size());
    kept.push_back(p);
  }
  return kept;
}

std::vector<std::vector<Peak>> extract_all_keypoints(const float* maps, int channels, int h, int w,
                                                     const PeakParams& params) {
  std::vector<std::vector<Peak>> all;
  int total = 0;
  for (int c = 0; c < channels; ++c) {
    all.push_back(extract_keypoints(maps + static_cast<size_t>(c) * h * w, h, w, total, params));
    total += static_cast<int>(all.back().size());
  }
  return all;
}

}  // namespace posekd::infer
