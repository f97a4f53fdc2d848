#include "posekd/data/targets.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

#include "posekd/core/skeleton.h"

namespace posekd::data {
namespace sk = posekd::skeleton;

namespace {
constexpr double kCut = 4.6052;  // ln(100)
}

void draw_heatmaps(const std::vector<Keypoints18>& persons, const TargetGrid& g, float* out) {
  const int gw = g.grid_w, gh = g.grid_h, plane = gw * gh;
  const double stride = g.stride, shift = stride / 2.0 - 0.5;
  const double denom = 2.0 * g.sigma * g.sigma;
  const double r = std::sqrt(kCut * denom);
  for (const auto& kp : persons) {
    for (int k = 0; k < sk::kNumKeypoints; ++k) {
      const double x = kp[k][0], y = kp[k][1];
      if (kp[k][2] > 1) continue;
      const double fx = x / stride, fy = y / stride;
      if (!(fx >= 0 && fx < gw && fy >= 0 && fy < gh)) continue;
      // Window that contains every cell with e <= kCut (one cell of margin; e is still tested).
      const int x0 = std::max(0, static_cast<int>(std::floor((x - r - shift) / stride)));
      const int x1 = std::min(gw - 1, static_cast<int>(std::ceil((x + r - shift) / stride)));
      const int y0 = std::max(0, static_cast<int>(std::floor((y - r - shift) / stride)));
      const int y1 = std::min(gh - 1, static_cast<int>(std::ceil((y + r - shift) / stride)));
      float* map = out + k * plane;
      for (int gy = y0; gy <= y1; ++gy) {
        const double dy = gy * stride + shift - y;
        for (int gx = x0; gx <= x1; ++gx) {
          const double dx = gx * stride + shift - x;
          const double e = (dx * dx + dy * dy) / denom;
          if (e > kCut) continue;
          float& h = map[gy * gw + gx];
          h = static_cast<float>(std::min(1.0, std::max(static_cast<double>(h), std::exp(-e))));
        }
      }
    }
  }
  float* bg = out + sk::kBackgroundChannel * plane;
  for (int i = 0; i < plane; ++i) {
    float m = 0.f;
    for (int k = 0; k < sk::kNumKeypoints; ++k) m = std::max(m, out[k * plane + i]);
    bg[i] = 1.f - m;
  }
}

torch::Tensor heatmaps(const std::vector<Keypoints18>& persons, const TargetGrid& g) {
  auto t = torch::zeros({sk::kNumHeatmaps, g.grid_h, g.grid_w}, torch::kFloat32);
  draw_heatmaps(persons, g, t.data_ptr<float>());
  return t;
}

void draw_pafs(const std::vector<Keypoints18>& persons, const TargetGrid& g, float* out) {
  const int gw = g.grid_w, gh = g.grid_h, plane = gw * gh;
  const double t = g.paf_thickness, stride = g.stride;
  for (const auto& kp : persons) {
    for (int l = 0; l < sk::kNumLimbs; ++l) {
      const auto& pa = kp[sk::kLimbs[l].a];
      const auto& pb = kp[sk::kLimbs[l].b];
      if (pa[2] > 1 || pb[2] > 1) continue;
      const double ax = pa[0] / stride, ay = pa[1] / stride, bx = pb[0] / stride, by = pb[1] / stride;
      const double dx = bx - ax, dy = by - ay;
      const double n = std::sqrt(dx * dx + dy * dy);
      if (n < 1e-7) continue;
      const double ux = dx / n, uy = dy / n;
      // int() truncates toward zero, exactly like Python's int().
      const int x_min = static_cast<int>(std::max(std::min(ax, bx) - t, 0.0));
      const int x_max = static_cast<int>(std::min(std::max(ax, bx) + t, static_cast<double>(gw)));
      const int y_min = static_cast<int>(std::max(std::min(ay, by) - t, 0.0));
      const int y_max = static_cast<int>(std::min(std::max(ay, by) + t, static_cast<double>(gh)));
      float* cx = out + (2 * l) * plane;
      float* cy = out + (2 * l + 1) * plane;
      for (int y = y_min; y < y_max; ++y)
        for (int x = x_min; x < x_max; ++x)
          if (std::fabs((x - ax) * uy - (y - ay) * ux) <= t) {
            cx[y * gw + x] = static_cast<float>(ux);
            cy[y * gw + x] = static_cast<float>(uy);
          }
    }
  }
}

torch::Tensor pafs(const std::vector<Keypoints18>& persons, const TargetGrid& g) {
  auto t = torch::zeros({sk::kNumPafs, g.grid_h, g.grid_w}, torch::kFloat32);
  draw_pafs(persons, g, t.data_ptr<float>());
  return t;
}

cv::Mat rasterize_segmentation(const Segmentation& seg, int height, int width) {
  cv::Mat m = cv::Mat::zeros(height, width, CV_8U);
  if (!seg.polygons.empty()) {
    std::vector<std::vector<cv::Point>> polys;
    for (const auto& p : seg.polygons) {
      std::vector<cv::Point> pts;
      for (size_t i = 0; i + 1 < p.size(); i += 2) pts.emplace_back(cvRound(p[i]), cvRound(p[i + 1]));
      if (pts.size() >= 3) polys.push_back(std::move(pts));
    }
    if (!polys.empty()) cv::fillPoly(m, polys, cv::Scalar(1));
  }
  if (!seg.rle_counts.empty() && seg.rle_h > 0 && seg.rle_w > 0) {
    const int h = seg.rle_h, w = seg.rle_w;
    cv::Mat r = cv::Mat::zeros(h, w, CV_8U);
    const int64_t total = static_cast<int64_t>(h) * w;
    int64_t pos = 0;
    uint8_t val = 0;
    uint8_t* data = r.ptr<uint8_t>();
    for (uint32_t c : seg.rle_counts) {
      int64_t end = std::min(total, pos + static_cast<int64_t>(c));
      if (val)
        for (int64_t i = pos; i < end; ++i) data[(i % h) * w + (i / h)] = 1;  // column-major
      pos = end;
      val ^= 1;
      if (pos >= total) break;
    }
    if (h != height || w != width) cv::resize(r, r, cv::Size(width, height), 0, 0, cv::INTER_NEAREST);
    m |= r;
  }
  return m;
}

namespace {

// The "use" map at the original resolution (1 outside crowds, 0 inside); empty when there is no crowd.
cv::Mat use_map(const std::vector<CocoPerson>& crowds, int img_h, int img_w) {
  bool any = false;
  for (const auto& c : crowds) any = any || !c.segmentation.empty();
  if (!any || img_h <= 0 || img_w <= 0) return {};
  cv::Mat crowd = cv::Mat::zeros(img_h, img_w, CV_8U);
  for (const auto& c : crowds)
    if (!c.segmentation.empty()) crowd |= rasterize_segmentation(c.segmentation, img_h, img_w);
  cv::Mat mask(img_h, img_w, CV_32F, cv::Scalar(1.f));
  mask.setTo(0.f, crowd);
  return mask;
}

// A float map already on the input canvas (ch x cw, or smaller at the top-left: the rest is 1) ->
// uint8 (any value < 1 is 0, as upstream's float -> uint8 truncation) -> INTER_AREA to the grid.
torch::Tensor canvas_to_grid(const cv::Mat& scaled, const TargetGrid& g) {
  const int ch = g.grid_h * g.stride, cw = g.grid_w * g.stride;
  cv::Mat canvas(ch, cw, CV_8U, cv::Scalar(1));
  const int rh = std::min(ch, scaled.rows), rw = std::min(cw, scaled.cols);
  for (int y = 0; y < rh; ++y) {
    const float* s = scaled.ptr<float>(y);
    uint8_t* d = canvas.ptr<uint8_t>(y);
    for (int x = 0; x < rw; ++x) d[x] = s[x] >= 1.f ? 1 : 0;  // uint8 assignment truncates
  }
  cv::Mat grid;
  cv::resize(canvas, grid, cv::Size(g.grid_w, g.grid_h), 0, 0, cv::INTER_AREA);
  auto t = torch::ones({1, g.grid_h, g.grid_w}, torch::kFloat32);
  float* o = t.data_ptr<float>();
  for (int y = 0; y < g.grid_h; ++y)
    for (int x = 0; x < g.grid_w; ++x) o[y * g.grid_w + x] = grid.at<uint8_t>(y, x);
  return t;
}

}  // namespace

torch::Tensor crowd_mask(const std::vector<CocoPerson>& crowds, int img_h, int img_w, int resized_h, int resized_w,
                         const TargetGrid& g) {
  const cv::Mat mask = use_map(crowds, img_h, img_w);
  if (mask.empty()) return torch::ones({1, g.grid_h, g.grid_w}, torch::kFloat32);
  cv::Mat scaled;
  cv::resize(mask, scaled, cv::Size(resized_w, resized_h), 0, 0, cv::INTER_LINEAR);
  return canvas_to_grid(scaled, g);
}

torch::Tensor crowd_mask_affine(const std::vector<CocoPerson>& crowds, int img_h, int img_w, const cv::Mat& affine,
                                const TargetGrid& g) {
  const cv::Mat mask = use_map(crowds, img_h, img_w);
  if (mask.empty()) return torch::ones({1, g.grid_h, g.grid_w}, torch::kFloat32);
  cv::Mat warped;
  cv::warpAffine(mask, warped, affine, cv::Size(g.grid_w * g.stride, g.grid_h * g.stride), cv::INTER_LINEAR,
                 cv::BORDER_CONSTANT, cv::Scalar(1.f));
  return canvas_to_grid(warped, g);
}

}  // namespace posekd::data
