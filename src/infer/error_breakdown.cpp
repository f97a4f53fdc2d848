#include "posekd/infer/error_breakdown.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

namespace posekd::infer {
namespace sk = posekd::skeleton;

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t m = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(m), v.end());
  const double hi = v[m];
  if (v.size() % 2) return hi;
  return (*std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(m)) + hi) / 2;
}

std::array<float, 51> left_right_swapped(const std::array<float, 51>& k) {
  std::array<float, 51> s = k;
  for (const auto& pr : sk::kCocoFlipPairs)
    for (int c = 0; c < 3; ++c) std::swap(s[3 * pr[0] + c], s[3 * pr[1] + c]);
  return s;
}

}  // namespace

KeypointErrorBreakdown keypoint_error_breakdown(const data::CocoDataset& gt, const std::vector<Detection>& dts,
                                                double min_oks) {
  KeypointErrorBreakdown r;
  r.min_oks = min_oks;
  std::map<int64_t, const data::CocoImage*> images;
  for (const auto& im : gt.images) {
    images[im.id] = &im;
    for (const auto& p : im.persons) r.people += p.num_keypoints > 0 ? 1 : 0;
  }
  std::vector<size_t> order(dts.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return dts[a].score > dts[b].score; });
  std::set<const data::CocoPerson*> taken;
  std::vector<double> err_px, err_rel;
  double oks_sum = 0;
  for (size_t i : order) {
    const Detection& d = dts[i];
    auto it = images.find(d.image_id);
    if (it == images.end()) continue;
    const data::CocoPerson* best = nullptr;
    double best_oks = min_oks;
    for (const auto& p : it->second->persons) {
      if (p.num_keypoints <= 0 || taken.count(&p)) continue;
      const double o = compute_oks(p, d.keypoints);
      if (o >= best_oks) best_oks = o, best = &p;
    }
    if (best == nullptr) continue;
    taken.insert(best);
    ++r.matched;
    oks_sum += best_oks;
    if (compute_oks(*best, left_right_swapped(d.keypoints)) > best_oks) ++r.swapped;
    const double size = std::sqrt(std::max(1e-9, static_cast<double>(best->area)));
    for (int k = 0; k < sk::kNumCoco; ++k) {
      if (!(best->keypoints[3 * k + 2] > 0)) continue;
      ++r.labelled;
      ++r.labelled_by_kpt[k];
      if (!(d.keypoints[3 * k + 2] > 0)) {
        ++r.missing;
        ++r.missing_by_kpt[k];
        continue;
      }
      const double e =
          std::hypot(d.keypoints[3 * k] - best->keypoints[3 * k], d.keypoints[3 * k + 1] - best->keypoints[3 * k + 1]);
      err_px.push_back(e);
      err_rel.push_back(e / size);
    }
  }
  r.mean_oks = r.matched ? oks_sum / static_cast<double>(r.matched) : 0;
  r.median_error_px = median(err_px);
  r.median_error_rel = median(err_rel);
  return r;
}

std::string KeypointErrorBreakdown::text() const {
  auto pct = [](int64_t a, int64_t b) { return b ? 100.0 * static_cast<double>(a) / static_cast<double>(b) : 0.0; };
  std::string s = fmt::format(
      "errors: {} of {} people matched (OKS >= {:g}; mean OKS {:.3f}), {} with left and right better swapped\n",
      matched, people, min_oks, mean_oks, swapped);
  s += fmt::format(
      "errors: {:.1f}% of their {} labelled keypoints missing; the found ones off by {:.2f} px median "
      "({:.3f} of the person's size)\n",
      pct(missing, labelled), labelled, median_error_px, median_error_rel);
  std::string per = "errors: missing by keypoint:";
  for (int k = 0; k < sk::kNumCoco; ++k)
    per += fmt::format(" {} {:.0f}%", sk::kCocoNames[k], pct(missing_by_kpt[k], labelled_by_kpt[k]));
  return s + per + "\n";
}

}  // namespace posekd::infer
