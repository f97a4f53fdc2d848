// One COCO person -> OpenPose-18 keypoints with internal visibility (upstream ConvertKeypoints).
#pragma once
#include <array>
#include <vector>

#include "posekd/data/coco.h"

namespace posekd::data {

// OpenPose-18 keypoints: kp[k] = {x, y, v'} with v' 0 occluded, 1 visible, 2 not labeled
// (skeleton::kVis*). Coordinates in double so that scaled targets match Python bit for bit.
using Keypoints18 = std::array<std::array<double, 3>, 18>;

// ConvertKeypoints with the CURRENT neck rule (spec/openpose.md 3.2), in the ORIGINAL image
// coordinates (width x height = the original image size):
//  1. v' from the COCO v (0 -> 2, 1 -> 0, 2 -> 1); re-flag v' = 2 for points at (0,0) or outside
//     [0,width) x [0,height);
//  2. reorder COCO-17 -> OpenPose-18 (skeleton::kOpenPoseToCoco);
//  3. neck = midpoint of the COCO shoulders; v' = 2 if either shoulder is 2, else 1 if both are 1,
//     else 0; finally 2 if the midpoint lies outside the image.
Keypoints18 convert_keypoints(const CocoPerson& person, int width, int height);

// The seed's defective layout (seed-pipeline.md, --seed-compat-targets): slot k (0..16) holds
// COCO keypoint k with v' from the COCO v (no re-flag, no neck), slot 17 is not labeled.
Keypoints18 seed_compat_keypoints(const CocoPerson& person);

// Multiplies x and y of every keypoint by s (visibility unchanged).
Keypoints18 scale_keypoints(const Keypoints18& kp, double s);

}  // namespace posekd::data
