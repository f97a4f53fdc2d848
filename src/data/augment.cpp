#include "posekd/data/augment.h"

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include <cmath>

#include "posekd/core/skeleton.h"

namespace posekd::data {

namespace {

constexpr double kAugPi = 3.14159265358979323846;

// splitmix64: a small counter-based generator, the same on every platform and compiler.
struct AugRng {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
};

AugRng rng_for(std::uint64_t seed, std::int64_t view, std::int64_t image_id) {
  AugRng r{seed ^ 0x6175676d656e7400ULL};
  r.state ^= r.next() + static_cast<std::uint64_t>(view) * 0xd1b54a32d192ed03ULL;
  r.state ^= r.next() + static_cast<std::uint64_t>(image_id) * 0x8cb92ba72f3d8dd7ULL;
  (void)r.next();
  return r;
}

}  // namespace

std::int64_t augment_view(const AugmentConfig& config, std::int64_t epoch) {
  return config.views > 0 ? epoch % config.views : epoch;
}

AugmentParams draw_augment(const AugmentConfig& c, std::uint64_t seed, std::int64_t view, std::int64_t image_id) {
  AugmentParams p;
  if (!c.enabled) return p;
  AugRng r = rng_for(seed, view, image_id);
  // Every draw is made whatever the config says, so changing one range does not reshuffle the others.
  const double u_scale = r.uniform(), u_angle = r.uniform(), u_sx = r.uniform(), u_sy = r.uniform();
  const double u_flip = r.uniform(), u_b = r.uniform(), u_c = r.uniform(), u_s = r.uniform(), u_h = r.uniform();
  const double u_blur = r.uniform(), u_sigma = r.uniform();
  p.scale = c.scale_min + (c.scale_max - c.scale_min) * u_scale;
  p.angle_deg = c.rotate_deg * (2 * u_angle - 1);
  p.shift_x = c.shift * (2 * u_sx - 1);
  p.shift_y = c.shift * (2 * u_sy - 1);
  p.flip = u_flip < c.flip_prob;
  p.brightness = c.brightness * (2 * u_b - 1);
  p.contrast = 1 + c.contrast * (2 * u_c - 1);
  p.saturation = 1 + c.saturation * (2 * u_s - 1);
  p.hue_deg = c.hue_deg * (2 * u_h - 1);
  p.blur_sigma = u_blur < c.blur_prob ? 0.5 + u_sigma : 0;
  return p;
}

cv::Mat augment_affine(const AugmentParams& p, int w, int h, int input_size) {
  const double S = input_size;
  const double s = p.scale * S / std::max(w, h);  // letterbox, then zoom
  const double a = p.angle_deg * kAugPi / 180;
  const double c = std::cos(a) * s, sn = std::sin(a) * s;
  // Pixel centres are integers: the picture's centre ((w-1)/2, (h-1)/2) goes to the input's centre
  // ((S-1)/2, (S-1)/2) plus the shift; rotation is counter-clockwise on screen for a positive angle.
  const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
  const double tx = (S - 1) / 2.0 + p.shift_x * S, ty = (S - 1) / 2.0 + p.shift_y * S;
  cv::Mat m(2, 3, CV_64F);
  m.at<double>(0, 0) = c;
  m.at<double>(0, 1) = sn;
  m.at<double>(0, 2) = tx - c * cx - sn * cy;
  m.at<double>(1, 0) = -sn;
  m.at<double>(1, 1) = c;
  m.at<double>(1, 2) = ty + sn * cx - c * cy;
  if (p.flip) {  // x -> (S-1) - x
    for (int j = 0; j < 3; ++j) m.at<double>(0, j) = -m.at<double>(0, j);
    m.at<double>(0, 2) += S - 1;
  }
  return m;
}

Keypoints18 transform_keypoints(const Keypoints18& kp, const cv::Mat& m, bool flip) {
  Keypoints18 out = kp;
  for (size_t k = 0; k < kp.size(); ++k) {
    const double x = kp[k][0], y = kp[k][1];
    out[k][0] = m.at<double>(0, 0) * x + m.at<double>(0, 1) * y + m.at<double>(0, 2);
    out[k][1] = m.at<double>(1, 0) * x + m.at<double>(1, 1) * y + m.at<double>(1, 2);
  }
  if (flip)
    for (const auto& pr : skeleton::kFlipPairs)
      std::swap(out[static_cast<size_t>(pr[0])], out[static_cast<size_t>(pr[1])]);
  return out;
}

void photometric(cv::Mat& bgr, const AugmentParams& p, double blur_sigma_pixels) {
  if (p.saturation != 1 || p.hue_deg != 0) {
    cv::Mat hsv;
    cv::cvtColor(bgr, hsv, cv::COLOR_BGR2HSV);  // 8-bit: H in [0, 180), S and V in [0, 255]
    const int dh = static_cast<int>(std::lround(p.hue_deg / 2));
    for (int y = 0; y < hsv.rows; ++y) {
      auto* row = hsv.ptr<cv::Vec3b>(y);
      for (int x = 0; x < hsv.cols; ++x) {
        int hh = (row[x][0] + dh) % 180;
        if (hh < 0) hh += 180;
        row[x][0] = static_cast<uchar>(hh);
        row[x][1] = cv::saturate_cast<uchar>(row[x][1] * p.saturation);
      }
    }
    cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  }
  if (p.contrast != 1 || p.brightness != 0)  // (x - 128) * c + 128 + b * 255
    bgr.convertTo(bgr, -1, p.contrast, 128 * (1 - p.contrast) + 255 * p.brightness);
  if (blur_sigma_pixels > 0) cv::GaussianBlur(bgr, bgr, cv::Size(0, 0), blur_sigma_pixels);
}

std::string describe(const AugmentConfig& c) {
  if (!c.enabled) return "off";
  return fmt::format(
      "scale {}-{}, rotate ±{}°, shift ±{}, flip {}, brightness ±{}, contrast ±{}, saturation ±{}, hue ±{}°, "
      "blur {}, {}",
      c.scale_min, c.scale_max, c.rotate_deg, c.shift, c.flip_prob, c.brightness, c.contrast, c.saturation, c.hue_deg,
      c.blur_prob, c.views > 0 ? fmt::format("{} views per image", c.views) : std::string("a new view every epoch"));
}

}  // namespace posekd::data
