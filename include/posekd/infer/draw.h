// Drawing decoded poses on an image (used by `posekd predict`).
#pragma once
#include <opencv2/core.hpp>

#include <vector>

#include "posekd/infer/decode.h"

namespace posekd::infer {

// BGR colour of training limb i (skeleton::kLimbs order), distinct hues.
cv::Scalar limb_color(int limb);

// A copy of `image` (8-bit, 1 or 3 channels; grey is converted to BGR) with every pose's limbs
// (skeleton::kLimbs, both ends found, one colour per limb) and keypoint dots drawn. Coordinates
// are Pose::points (original-image COCO coordinates). Throws posekd::Error on an empty/non-8-bit image.
cv::Mat draw_poses(const cv::Mat& image, const std::vector<Pose>& poses, int thickness = 2, int radius = 3);

}  // namespace posekd::infer
