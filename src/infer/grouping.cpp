#include "posekd/infer/grouping.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"

namespace posekd::infer {
namespace sk = posekd::skeleton;

namespace {

// numpy's float32 pairwise summation (8 accumulators for 8 <= n <= 128), used by `.sum(1)`.
float numpy_sum(const std::vector<float>& a) {
  const size_t n = a.size();
  if (n < 8) {
    float r = 0.f;  // numpy starts from the first element; adding to 0 first is identical
    for (float v : a) r += v;
    return n ? r : 0.f;
  }
  if (n > 128) {  // not reached for points_per_limb <= 128; plain sum otherwise
    float r = 0.f;
    for (float v : a) r += v;
    return r;
  }
  float r[8];
  for (int i = 0; i < 8; ++i) r[i] = a[i];
  size_t i = 8;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) r[k] += a[i + k];
  float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) res += a[i];
  return res;
}

}  // namespace

double limb_affinity(const float* px, const float* py, int h, int w, float ax, float ay, float bx, float by,
                     double* ratio, const GroupParams& params) {
  // Upstream's numpy arithmetic: float32 geometry and dot products, float64 final division.
  const int n = params.points_per_limb;
  const float vx = bx - ax, vy = by - ay;
  const float step = n > 1 ? 1.f / static_cast<float>(n - 1) : 0.f;
  const float sx = step * vx, sy = step * vy;
  const float norm = std::sqrt(vx * vx + vy * vy);
  const float ux = vx / (norm + 1e-6f), uy = vy / (norm + 1e-6f);
  int valid = 0;
  std::vector<float> terms(static_cast<size_t>(std::max(n, 0)), 0.f);
  for (int t = 0; t < n; ++t) {
    int x = static_cast<int>(std::nearbyint(sx * static_cast<float>(t) + ax));
    int y = static_cast<int>(std::nearbyint(sy * static_cast<float>(t) + ay));
    x = std::clamp(x, 0, w - 1);  // never triggers for endpoints inside the map
    y = std::clamp(y, 0, h - 1);
    const size_t o = static_cast<size_t>(y) * w + x;
    float s = px[o] * ux + py[o] * uy;
    if (s > params.min_paf_score) {
      ++valid;
      terms[t] = s;
    }
  }
  const double passing = static_cast<double>(valid) / static_cast<double>(n);
  const double score = static_cast<double>(numpy_sum(terms)) / (static_cast<double>(valid) + 1e-6);
  if (ratio) *ratio = passing;
  const float short_limb = params.short_limb;
  if (norm < short_limb) {
    // The ends (nearly) coincide: the PAF cannot confirm a direction. Accept the limb with the
    // larger of its PAF score (when that passes) and a low score for closeness, so that limbs the
    // PAF confirms are preferred.
    const double close = static_cast<double>(0.1f * ((short_limb - norm) / short_limb));
    if (ratio) *ratio = 1.0;
    return score > 0 && passing > params.min_success_ratio ? std::max(score, close) : close;
  }
  return score;
}

std::vector<Peak> flatten_peaks(const std::vector<std::vector<Peak>>& peaks_by_type) {
  std::vector<Peak> all;
  for (const auto& v : peaks_by_type) all.insert(all.end(), v.begin(), v.end());
  return all;
}

namespace {

struct Conn {
  int a_idx, b_idx;  // indices into the type's peak lists
  double score;
};

}  // namespace

std::vector<PoseEntry> group_keypoints(const std::vector<std::vector<Peak>>& peaks_by_type, const float* pafs, int h,
                                       int w, const GroupParams& params) {
  if (static_cast<int>(peaks_by_type.size()) < sk::kNumKeypoints)
    throw Error("group_keypoints: need peaks for 18 keypoint types, got " + std::to_string(peaks_by_type.size()));
  const std::vector<Peak> all = flatten_peaks(peaks_by_type);
  auto kpt_score = [&](int id) -> double {
    if (id < 0 || id >= static_cast<int>(all.size()))
      throw Error("group_keypoints: peak id " + std::to_string(id) + " out of range");
    return static_cast<double>(all[id].score);
  };
  const size_t plane = static_cast<size_t>(h) * w;
  std::vector<PoseEntry> poses;
  auto new_pose = [&](int ka, int kb, int ida, int idb, double s) {
    PoseEntry p;
    p.kpt.fill(-1);
    p.kpt[ka] = ida;
    p.kpt[kb] = idb;
    p.count = 2;
    p.score = kpt_score(ida) + kpt_score(idb) + s;
    return p;
  };

  for (int part = 0; part < sk::kNumLimbs; ++part) {
    const int ka = sk::kGroupLimbs[part].a, kb = sk::kGroupLimbs[part].b;
    const auto& A = peaks_by_type[ka];
    const auto& B = peaks_by_type[kb];
    const int n = static_cast<int>(A.size()), m = static_cast<int>(B.size());
    if (n == 0 || m == 0) continue;
    const float* px = pafs + plane * sk::kGroupPafChannels[part][0];
    const float* py = pafs + plane * sk::kGroupPafChannels[part][1];
    // Candidates in upstream's flat order k = j*n + i (j over B, i over A).
    std::vector<Conn> valid;
    for (int j = 0; j < m; ++j)
      for (int i = 0; i < n; ++i) {
        double ratio = 0;
        double s = limb_affinity(px, py, h, w, static_cast<float>(A[i].x), static_cast<float>(A[i].y),
                                 static_cast<float>(B[j].x), static_cast<float>(B[j].y), &ratio, params);
        if (s > 0 && ratio > params.min_success_ratio) valid.push_back({i, j, s});
      }
    if (valid.empty()) continue;
    // connections_nms: argsort()[::-1] -> score descending; equal scores: later candidate first.
    std::vector<size_t> order(valid.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return valid[x].score < valid[y].score; });
    std::reverse(order.begin(), order.end());
    std::vector<char> used_a(n, 0), used_b(m, 0);
    std::vector<Conn> conns;
    for (size_t o : order) {
      const Conn& c = valid[o];
      if (used_a[c.a_idx] || used_b[c.b_idx]) continue;
      used_a[c.a_idx] = used_b[c.b_idx] = 1;
      conns.push_back(c);
    }
    if (conns.empty()) continue;

    if (part == 0) {
      poses.clear();
      for (const Conn& c : conns) poses.push_back(new_pose(ka, kb, A[c.a_idx].id, B[c.b_idx].id, c.score));
    } else if (part == 17 || part == 18) {
      for (const Conn& c : conns) {
        const int ida = A[c.a_idx].id, idb = B[c.b_idx].id;
        for (auto& p : poses) {
          if (p.kpt[ka] == ida && p.kpt[kb] == -1)
            p.kpt[kb] = idb;
          else if (p.kpt[kb] == idb && p.kpt[ka] == -1)
            p.kpt[ka] = ida;
        }
      }
    } else {
      for (const Conn& c : conns) {
        const int ida = A[c.a_idx].id, idb = B[c.b_idx].id;
        bool matched = false;
        for (auto& p : poses) {
          if (p.kpt[ka] == ida) {
            p.kpt[kb] = idb;
            p.count += 1;
            p.score += kpt_score(idb) + c.score;
            matched = true;
          }
        }
        if (!matched) poses.push_back(new_pose(ka, kb, ida, idb, c.score));
      }
    }
  }
  std::vector<PoseEntry> out;
  for (const auto& p : poses)
    if (p.count >= params.min_count && p.score / p.count >= params.min_mean_score) out.push_back(p);
  return out;
}

}  // namespace posekd::infer
