#include "posekd/infer/draw.h"

#include <opencv2/imgproc.hpp>

#include <cmath>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"

namespace posekd::infer {
namespace sk = posekd::skeleton;

cv::Scalar limb_color(int limb) {
  // Hue evenly spread over the limbs, full saturation and value (HSV -> BGR by hand).
  const double hue = 360.0 * (limb % sk::kNumLimbs) / sk::kNumLimbs;
  const double hp = hue / 60.0;
  const double x = 255.0 * (1.0 - std::fabs(std::fmod(hp, 2.0) - 1.0));
  double r = 0, g = 0, b = 0;
  switch (static_cast<int>(hp)) {
    case 0:
      r = 255;
      g = x;
      break;
    case 1:
      r = x;
      g = 255;
      break;
    case 2:
      g = 255;
      b = x;
      break;
    case 3:
      g = x;
      b = 255;
      break;
    case 4:
      r = x;
      b = 255;
      break;
    default:
      r = 255;
      b = x;
      break;
  }
  return cv::Scalar(std::round(b), std::round(g), std::round(r));
}

cv::Mat draw_poses(const cv::Mat& image, const std::vector<Pose>& poses, int thickness, int radius) {
  if (image.empty() || image.depth() != CV_8U || (image.channels() != 1 && image.channels() != 3))
    throw Error("draw_poses: need a non-empty 8-bit grey or BGR image");
  cv::Mat out;
  if (image.channels() == 1)
    cv::cvtColor(image, out, cv::COLOR_GRAY2BGR);
  else
    out = image.clone();
  auto pt = [](const Pose& p, int k) {
    return cv::Point(static_cast<int>(std::lround(p.points[2 * k])),
                     static_cast<int>(std::lround(p.points[2 * k + 1])));
  };
  for (const Pose& p : poses) {
    for (int l = 0; l < sk::kNumLimbs; ++l) {
      const int a = sk::kLimbs[l].a, b = sk::kLimbs[l].b;
      if (p.has(a) && p.has(b)) cv::line(out, pt(p, a), pt(p, b), limb_color(l), thickness, cv::LINE_AA);
    }
    for (int k = 0; k < sk::kNumKeypoints; ++k)
      if (p.has(k)) cv::circle(out, pt(p, k), radius, cv::Scalar(255, 255, 255), cv::FILLED, cv::LINE_AA);
  }
  return out;
}

}  // namespace posekd::infer
