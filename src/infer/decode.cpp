#include "posekd/infer/decode.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"

namespace posekd::infer {
namespace sk = posekd::skeleton;

DecodeParams letterbox_params(int width, int height, int input, int stride, int upsample) {
  if (width <= 0 || height <= 0 || input <= 0) throw Error("letterbox_params: image and input sizes must be positive");
  DecodeParams p;
  p.input_w = p.input_h = input;
  p.stride = stride;
  p.upsample = upsample;
  p.scale = static_cast<float>(static_cast<double>(input) / std::max(width, height));
  p.pad_left = p.pad_top = 0.f;
  return p;
}

DecodeParams direct_decode_params(int input, int stride, bool subcell, bool local) {
  DecodeParams p = letterbox_params(input, input, input, stride, 1);
  const DecodeParams def{};
  p.peaks.suppress_radius = def.peaks.suppress_radius / static_cast<float>(def.upsample);
  p.subcell = subcell;
  p.local_upsample = local ? def.upsample : 0;
  return p;
}

float subcell_offset(float l, float c, float r) {
  const float d = (l - c) + (r - c);
  if (!(d < 0.f)) return 0.f;
  const float o = 0.5f * (l - r) / d;
  return o < -0.5f ? -0.5f : (o > 0.5f ? 0.5f : o);
}

void refine_peaks_local(std::vector<std::vector<Peak>>& peaks, const float* upsampled, int H, int W, int F) {
  for (std::size_t k = 0; k < peaks.size(); ++k) {
    const float* m = upsampled + k * static_cast<size_t>(H) * W;
    for (Peak& pk : peaks[k]) {
      const int x0 = std::max(0, F * pk.x - F / 2), x1 = std::min(W - 1, F * pk.x + F - 1 + F / 2);
      const int y0 = std::max(0, F * pk.y - F / 2), y1 = std::min(H - 1, F * pk.y + F - 1 + F / 2);
      int bx = x0, by = y0;
      float best = m[static_cast<size_t>(y0) * W + x0];
      for (int X = x0; X <= x1; ++X)
        for (int Y = y0; Y <= y1; ++Y)
          if (m[static_cast<size_t>(Y) * W + X] > best) {
            best = m[static_cast<size_t>(Y) * W + X];
            bx = X;
            by = Y;
          }
      pk.x = bx;
      pk.y = by;
      pk.score = best;
    }
  }
}

namespace {
double map_to_original(double upsampled, double pad, const DecodeParams& p) {
  const double x_in = (upsampled + 0.5) * p.stride / p.upsample - 0.5;
  return (x_in - pad) / p.scale;
}
}  // namespace

float map_to_original_x(float upsampled_x, const DecodeParams& p) {
  return static_cast<float>(map_to_original(upsampled_x, p.pad_left, p));
}
float map_to_original_y(float upsampled_y, const DecodeParams& p) {
  return static_cast<float>(map_to_original(upsampled_y, p.pad_top, p));
}

std::vector<float> upsample_maps(const float* maps, int channels, int h, int w, int factor) {
  if (channels <= 0 || h <= 0 || w <= 0 || factor <= 0) throw Error("upsample_maps: sizes and factor must be positive");
  const int H = h * factor, W = w * factor;
  std::vector<float> out(static_cast<size_t>(channels) * H * W);
  for (int c = 0; c < channels; ++c) {
    const cv::Mat src(h, w, CV_32FC1, const_cast<float*>(maps + static_cast<size_t>(c) * h * w));
    cv::Mat dst(H, W, CV_32FC1, out.data() + static_cast<size_t>(c) * H * W);
    if (factor == 1)
      src.copyTo(dst);
    else
      cv::resize(src, dst, cv::Size(W, H), factor, factor, cv::INTER_CUBIC);
  }
  return out;
}

std::vector<Pose> decode(const float* heat, const float* paf, int h, int w, const DecodeParams& p) {
  if (!heat || !paf) throw Error("decode: null map");
  if (h <= 0 || w <= 0) throw Error("decode: map size must be positive");
  if (p.stride <= 0 || p.upsample <= 0 || !(p.scale > 0.f))
    throw Error("decode: stride, upsample and scale must be positive");
  const int exp_h = (p.input_h + p.stride - 1) / p.stride, exp_w = (p.input_w + p.stride - 1) / p.stride;
  if (h != exp_h || w != exp_w)
    throw Error("decode: maps are " + std::to_string(h) + "x" + std::to_string(w) + " but input " +
                std::to_string(p.input_h) + "x" + std::to_string(p.input_w) + " at stride " + std::to_string(p.stride) +
                " gives " + std::to_string(exp_h) + "x" + std::to_string(exp_w));
  const int F = p.local_upsample > 1 ? p.local_upsample : 1;
  if (F > 1 && p.upsample != 1) throw Error("decode: local_upsample needs upsample 1");
  const int U = p.upsample * F;  // resolution of the grouping and of the coordinates
  const int H = h * U, W = w * U;
  const std::vector<float> hm = upsample_maps(heat, sk::kNumKeypoints, h, w, U);
  const std::vector<float> pf = upsample_maps(paf, sk::kNumPafs, h, w, U);
  auto peaks = F > 1 ? extract_all_keypoints(heat, sk::kNumKeypoints, h, w, p.peaks)
                     : extract_all_keypoints(hm.data(), sk::kNumKeypoints, H, W, p.peaks);
  if (F > 1) refine_peaks_local(peaks, hm.data(), H, W, F);
  GroupParams gp = p.grouping;  // short_limb: map cells -> grouping pixels
  gp.short_limb *= static_cast<float>(U);
  const auto entries = group_keypoints(peaks, pf.data(), H, W, gp);
  const auto all = flatten_peaks(peaks);
  DecodeParams q = p;
  q.upsample = U;

  std::vector<Pose> poses;
  poses.reserve(entries.size());
  for (const auto& e : entries) {
    Pose pose;
    pose.count = e.count;
    pose.score = static_cast<float>(e.score * std::max(0, e.count - 1));
    for (int k = 0; k < sk::kNumKeypoints; ++k) {
      const int id = e.kpt[k];
      if (id < 0) continue;
      const Peak& pk = all.at(static_cast<size_t>(id));
      float fx = static_cast<float>(pk.x), fy = static_cast<float>(pk.y);
      if (p.subcell && F == 1) {
        const float* m = hm.data() + static_cast<size_t>(k) * H * W;
        const float c = m[static_cast<size_t>(pk.y) * W + pk.x];
        if (pk.x > 0 && pk.x < W - 1)
          fx += subcell_offset(m[static_cast<size_t>(pk.y) * W + pk.x - 1], c,
                               m[static_cast<size_t>(pk.y) * W + pk.x + 1]);
        if (pk.y > 0 && pk.y < H - 1)
          fy += subcell_offset(m[static_cast<size_t>(pk.y - 1) * W + pk.x], c,
                               m[static_cast<size_t>(pk.y + 1) * W + pk.x]);
      }
      const float x = map_to_original_x(fx, q);
      const float y = map_to_original_y(fy, q);
      pose.points[2 * k] = x;
      pose.points[2 * k + 1] = y;
      pose.kpt_scores[k] = pk.score;
      const int c = sk::kOpenPoseToCoco[k];
      if (c < 0) continue;
      pose.keypoints[3 * c] = x;
      pose.keypoints[3 * c + 1] = y;
      pose.keypoints[3 * c + 2] = 1.f;
    }
    poses.push_back(pose);
  }
  return poses;
}

}  // namespace posekd::infer
