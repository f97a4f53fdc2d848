#include "posekd/data/keypoints.h"

#include "posekd/core/skeleton.h"

namespace posekd::data {
namespace sk = posekd::skeleton;

namespace {
bool outside(double x, double y, int w, int h) { return x < 0 || y < 0 || x >= w || y >= h; }
}  // namespace

Keypoints18 convert_keypoints(const CocoPerson& person, int width, int height) {
  std::array<std::array<double, 3>, 17> coco;
  for (int j = 0; j < 17; ++j) {
    double x = person.keypoints[3 * j], y = person.keypoints[3 * j + 1];
    int v = sk::coco_to_internal_visibility(static_cast<int>(person.keypoints[3 * j + 2]));
    if ((x == 0 && y == 0) || outside(x, y, width, height)) v = sk::kVisNotLabeled;
    coco[j] = {x, y, static_cast<double>(v)};
  }
  Keypoints18 out;
  for (int k = 0; k < sk::kNumKeypoints; ++k) {
    int c = sk::kOpenPoseToCoco[k];
    if (c >= 0) out[k] = coco[c];
  }
  const auto& l = coco[sk::kCocoLeftShoulder];
  const auto& r = coco[sk::kCocoRightShoulder];
  double nx = (l[0] + r[0]) / 2, ny = (l[1] + r[1]) / 2;
  int v = sk::kVisOccluded;
  if (l[2] == sk::kVisNotLabeled || r[2] == sk::kVisNotLabeled)
    v = sk::kVisNotLabeled;
  else if (l[2] == sk::kVisVisible && r[2] == sk::kVisVisible)
    v = sk::kVisVisible;
  if (outside(nx, ny, width, height)) v = sk::kVisNotLabeled;
  out[sk::kNeck] = {nx, ny, static_cast<double>(v)};
  return out;
}

Keypoints18 seed_compat_keypoints(const CocoPerson& person) {
  Keypoints18 out;
  for (int j = 0; j < 17; ++j)
    out[j] = {person.keypoints[3 * j], person.keypoints[3 * j + 1],
              static_cast<double>(sk::coco_to_internal_visibility(static_cast<int>(person.keypoints[3 * j + 2])))};
  out[17] = {0, 0, static_cast<double>(sk::kVisNotLabeled)};
  return out;
}

Keypoints18 scale_keypoints(const Keypoints18& kp, double s) {
  Keypoints18 out = kp;
  for (auto& p : out) {
    p[0] *= s;
    p[1] *= s;
  }
  return out;
}

}  // namespace posekd::data
