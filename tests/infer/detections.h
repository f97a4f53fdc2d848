// Test helper of the infer tests: a detection that repeats a gt person's labelled keypoints.
#pragma once
#include <cstdint>

#include "posekd/data/coco.h"
#include "posekd/infer/coco_eval.h"

namespace posekd::testing {

// The person's labelled keypoints (v > 0) moved by (dx, dy), marked found (v = 1); the others (0, 0, 0).
inline infer::Detection as_detection(int64_t image, const data::CocoPerson& p, float score, double dx = 0,
                                     double dy = 0) {
  infer::Detection d;
  d.image_id = image;
  d.score = score;
  for (int k = 0; k < 17; ++k) {
    if (p.keypoints[3 * k + 2] > 0) {
      d.keypoints[3 * k] = static_cast<float>(p.keypoints[3 * k] + dx);
      d.keypoints[3 * k + 1] = static_cast<float>(p.keypoints[3 * k + 1] + dy);
      d.keypoints[3 * k + 2] = 1;
    }
  }
  return d;
}

}  // namespace posekd::testing
