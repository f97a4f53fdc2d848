#include "posekd/infer/coco_eval.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"

namespace posekd::infer {
namespace sk = posekd::skeleton;

namespace {
constexpr double kEps = DBL_EPSILON;  // np.spacing(1)

// numpy's pairwise summation of a contiguous float64 array (np.sum / np.mean), so that OKS values
// and the summary means are bit-identical to pycocotools'.
double numpy_sum(const double* a, size_t n) {
  if (n < 8) {
    double r = 0.;
    for (size_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int k = 0; k < 8; ++k) r[k] += a[i + k];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_sum(a, n2) + numpy_sum(a + n2, n - n2);
}
}  // namespace

double iou_threshold(int t) {
  // np.linspace(.5, .95, 10): start + i * ((stop - start) / 9), last element exactly stop.
  if (t == kNumIouThrs - 1) return 0.95;
  return 0.5 + t * ((0.95 - 0.5) / 9.0);
}

double recall_threshold(int r) {
  if (r == kNumRecThrs - 1) return 1.0;
  return 0.0 + r * ((1.0 - 0.0) / 100.0);
}

std::array<double, 2> area_range(int a) {
  switch (a) {
    case 0:
      return {0.0, 1e5 * 1e5};
    case 1:
      return {32.0 * 32.0, 96.0 * 96.0};
    default:
      return {96.0 * 96.0, 1e5 * 1e5};
  }
}

const char* area_label(int a) { return a == 0 ? "all" : (a == 1 ? "medium" : "large"); }

double oks_sigma(int k) {
  // pycocotools: np.array([.26, .25, ...]) / 10.0. Rebuild the 2-decimal literal from the table so
  // the double is bit-identical (.026 != .26 / 10.0 for some entries).
  const double literal = std::nearbyint(sk::kOksSigmas.at(static_cast<size_t>(k)) * 1000.0) / 100.0;
  return literal / 10.0;
}

double detection_area(const std::array<float, 51>& kp) {
  const auto b = detection_bbox(kp);
  return b[2] * b[3];
}

std::array<double, 4> detection_bbox(const std::array<float, 51>& kp) {
  double x0 = kp[0], x1 = kp[0], y0 = kp[1], y1 = kp[1];
  for (int k = 1; k < sk::kNumCoco; ++k) {
    x0 = std::min<double>(x0, kp[3 * k]);
    x1 = std::max<double>(x1, kp[3 * k]);
    y0 = std::min<double>(y0, kp[3 * k + 1]);
    y1 = std::max<double>(y1, kp[3 * k + 1]);
  }
  return {x0, y0, x1 - x0, y1 - y0};
}

double compute_oks(const data::CocoPerson& gt, const std::array<float, 51>& d) {
  const auto& g = gt.keypoints;
  int k1 = 0;
  for (int k = 0; k < sk::kNumCoco; ++k) k1 += g[3 * k + 2] > 0 ? 1 : 0;
  const double bx = gt.bbox[0], by = gt.bbox[1], bw = gt.bbox[2], bh = gt.bbox[3];
  const double x0 = bx - bw, x1 = bx + bw * 2, y0 = by - bh, y1 = by + bh * 2;
  const double area = static_cast<double>(gt.area) + kEps;
  double terms[sk::kNumCoco];
  int n = 0;
  for (int k = 0; k < sk::kNumCoco; ++k) {
    const double xd = d[3 * k], yd = d[3 * k + 1];
    double dx, dy;
    if (k1 > 0) {
      if (!(g[3 * k + 2] > 0)) continue;
      dx = xd - static_cast<double>(g[3 * k]);
      dy = yd - static_cast<double>(g[3 * k + 1]);
    } else {
      dx = std::max(0.0, x0 - xd) + std::max(0.0, xd - x1);
      dy = std::max(0.0, y0 - yd) + std::max(0.0, yd - y1);
    }
    const double s2 = oks_sigma(k) * 2;
    const double var = s2 * s2;
    const double e = (dx * dx + dy * dy) / var / area / 2;
    terms[n++] = std::exp(-e);
  }
  return numpy_sum(terms, static_cast<size_t>(n)) / n;
}

namespace {

struct GtRef {
  const data::CocoPerson* p;
  bool ignore;  // iscrowd or num_keypoints == 0
};

struct DtRef {
  const Detection* d;
  int64_t id;  // loadRes: position in the results + 1
  double area;
};

// evaluateImg output for one image and one area range.
struct ImgEval {
  std::vector<double> scores;              // D, sorted
  std::vector<std::vector<char>> matched;  // [T][D]: dtm != 0
  std::vector<std::vector<char>> ignored;  // [T][D]: dtIg
  int num_not_ignored_gt = 0;
};

// Stable order of indices by descending score (np.argsort(-score, kind='mergesort')).
template <class T, class F>
std::vector<size_t> stable_desc(const std::vector<T>& v, F score) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return -score(v[a]) < -score(v[b]); });
  return idx;
}

}  // namespace

KeypointEvalResult evaluate_keypoints(const data::CocoDataset& gt, const std::vector<Detection>& dts,
                                      const std::string& what) {
  KeypointEvalResult res;
  // Images sorted by id (p.imgIds = sorted(cocoGt.getImgIds())).
  std::map<int64_t, const data::CocoImage*> images;
  for (const auto& im : gt.images) {
    if (!images.emplace(im.id, &im).second)
      fail_file(gt.annotation_path.empty() ? std::string("ground truth") : gt.annotation_path,
                "duplicate image id " + std::to_string(im.id));
  }
  std::map<int64_t, std::vector<DtRef>> dt_by_image;
  for (size_t i = 0; i < dts.size(); ++i) {
    if (!images.count(dts[i].image_id))
      fail_file(what, "result " + std::to_string(i) + " has image_id " + std::to_string(dts[i].image_id) +
                          ", which is not in the ground truth");
    dt_by_image[dts[i].image_id].push_back({&dts[i], static_cast<int64_t>(i) + 1, detection_area(dts[i].keypoints)});
  }
  res.num_images = static_cast<int64_t>(images.size());
  res.num_detections = static_cast<int64_t>(dts.size());

  const int T = kNumIouThrs, A = kNumAreaRngs;
  // evalImgs[a] = per-image results (only images with gt or dt), in image-id order.
  std::vector<std::vector<ImgEval>> eval_imgs(A);
  for (const auto& [img_id, im] : images) {
    std::vector<GtRef> gts;
    for (const auto& p : im->persons) gts.push_back({&p, p.iscrowd || p.num_keypoints == 0});
    for (const auto& p : im->crowds) gts.push_back({&p, true});
    for (const auto& g : gts) {
      ++res.num_gt;
      res.num_ignored_gt += g.ignore ? 1 : 0;
    }
    std::vector<DtRef> dt;
    if (auto it = dt_by_image.find(img_id); it != dt_by_image.end()) dt = it->second;
    if (gts.empty() && dt.empty()) continue;
    {
      auto order = stable_desc(dt, [](const DtRef& r) { return static_cast<double>(r.d->score); });
      std::vector<DtRef> sorted;
      for (size_t i = 0; i < order.size() && i < static_cast<size_t>(kEvalMaxDets); ++i) sorted.push_back(dt[order[i]]);
      dt = std::move(sorted);
    }
    const size_t G = gts.size(), D = dt.size();
    std::vector<double> ious(D * G, 0.0);  // [D][G], gt in original order
    const bool have_ious = G > 0 && D > 0;
    for (size_t i = 0; i < D && have_ious; ++i)
      for (size_t j = 0; j < G; ++j) ious[i * G + j] = compute_oks(*gts[j].p, dt[i].d->keypoints);

    for (int a = 0; a < A; ++a) {
      const auto rng = area_range(a);
      std::vector<char> gt_ig(G);
      for (size_t j = 0; j < G; ++j) {
        const double area = gts[j].p->area;
        gt_ig[j] = gts[j].ignore || area < rng[0] || area > rng[1];
      }
      std::vector<size_t> gtind(G);
      std::iota(gtind.begin(), gtind.end(), size_t{0});
      std::stable_sort(gtind.begin(), gtind.end(), [&](size_t x, size_t y) { return gt_ig[x] < gt_ig[y]; });

      ImgEval e;
      e.scores.resize(D);
      for (size_t i = 0; i < D; ++i) e.scores[i] = dt[i].d->score;
      e.matched.assign(T, std::vector<char>(D, 0));
      e.ignored.assign(T, std::vector<char>(D, 0));
      for (size_t j = 0; j < G; ++j) e.num_not_ignored_gt += gt_ig[j] ? 0 : 1;
      if (have_ious) {
        for (int t = 0; t < T; ++t) {
          std::vector<int64_t> gtm(G, 0);  // sorted-gt position -> matching dt id
          for (size_t i = 0; i < D; ++i) {
            double iou = std::min(iou_threshold(t), 1 - 1e-10);
            int m = -1;
            for (size_t s = 0; s < G; ++s) {
              const size_t j = gtind[s];
              const bool crowd = gts[j].p->iscrowd;
              if (gtm[s] > 0 && !crowd) continue;
              if (m > -1 && !gt_ig[gtind[m]] && gt_ig[j]) break;
              const double o = ious[i * G + j];
              if (o < iou) continue;
              iou = o;
              m = static_cast<int>(s);
            }
            if (m == -1) continue;
            const size_t j = gtind[m];
            e.ignored[t][i] = gt_ig[j];
            e.matched[t][i] = gts[j].p->ann_id != 0;  // dtm stores the gt id; id 0 reads as "unmatched"
            gtm[m] = dt[i].id;
          }
        }
      }
      for (size_t i = 0; i < D; ++i) {
        const bool out = dt[i].area < rng[0] || dt[i].area > rng[1];
        for (int t = 0; t < T; ++t)
          if (!e.matched[t][i] && out) e.ignored[t][i] = 1;
      }
      eval_imgs[a].push_back(std::move(e));
    }
  }

  // accumulate()
  const int R = kNumRecThrs;
  res.precision.assign(static_cast<size_t>(T) * R * A, -1.0);
  res.recall.assign(static_cast<size_t>(T) * A, -1.0);
  for (int a = 0; a < A; ++a) {
    const auto& E = eval_imgs[a];
    if (E.empty()) continue;
    struct Item {
      double score;
      size_t img, det;
    };
    std::vector<Item> items;
    int64_t npig = 0;
    for (size_t k = 0; k < E.size(); ++k) {
      for (size_t i = 0; i < E[k].scores.size(); ++i) items.push_back({E[k].scores[i], k, i});
      npig += E[k].num_not_ignored_gt;
    }
    if (npig == 0) continue;
    auto order = stable_desc(items, [](const Item& it) { return it.score; });
    const size_t nd = items.size();
    for (int t = 0; t < T; ++t) {
      std::vector<double> rc(nd), pr(nd);
      double tp = 0, fp = 0;
      for (size_t q = 0; q < nd; ++q) {
        const Item& it = items[order[q]];
        const bool m = E[it.img].matched[t][it.det], ig = E[it.img].ignored[t][it.det];
        if (m && !ig) tp += 1;
        if (!m && !ig) fp += 1;
        rc[q] = tp / static_cast<double>(npig);
        pr[q] = tp / (fp + tp + kEps);
      }
      res.recall[t * A + a] = nd ? rc[nd - 1] : 0.0;
      for (size_t i = nd; i-- > 1;)
        if (pr[i] > pr[i - 1]) pr[i - 1] = pr[i];
      for (int r = 0; r < R; ++r) {
        const size_t pi = static_cast<size_t>(std::lower_bound(rc.begin(), rc.end(), recall_threshold(r)) - rc.begin());
        double q = 0.0;
        if (pi < nd)
          q = pr[pi];
        else {
          for (int r2 = r; r2 < R; ++r2) res.precision[(static_cast<size_t>(t) * R + r2) * A + a] = 0.0;
          break;
        }
        res.precision[(static_cast<size_t>(t) * R + r) * A + a] = q;
      }
    }
  }

  // summarize(): _summarizeKps
  auto mean_valid = [](const std::vector<double>& v) {
    std::vector<double> kept;
    for (double x : v)
      if (x > -1) kept.push_back(x);
    return kept.empty() ? -1.0 : numpy_sum(kept.data(), kept.size()) / static_cast<double>(kept.size());
  };
  auto ap = [&](int t_only, int a) {
    std::vector<double> v;
    for (int t = 0; t < T; ++t) {
      if (t_only >= 0 && t != t_only) continue;
      for (int r = 0; r < R; ++r) v.push_back(res.precision_at(t, r, a));
    }
    return mean_valid(v);
  };
  auto ar = [&](int t_only, int a) {
    std::vector<double> v;
    for (int t = 0; t < T; ++t)
      if (t_only < 0 || t == t_only) v.push_back(res.recall_at(t, a));
    return mean_valid(v);
  };
  res.stats = {ap(-1, 0), ap(0, 0), ap(5, 0), ap(-1, 1), ap(-1, 2),
               ar(-1, 0), ar(0, 0), ar(5, 0), ar(-1, 1), ar(-1, 2)};
  return res;
}

std::string format_summary(const std::array<double, 10>& s) {
  struct Line {
    bool ap;
    const char* iou;
    const char* area;
  };
  static const Line lines[10] = {{true, "0.50:0.95", "all"},     {true, "0.50", "all"},
                                 {true, "0.75", "all"},          {true, "0.50:0.95", "medium"},
                                 {true, "0.50:0.95", "large"},   {false, "0.50:0.95", "all"},
                                 {false, "0.50", "all"},         {false, "0.75", "all"},
                                 {false, "0.50:0.95", "medium"}, {false, "0.50:0.95", "large"}};
  std::string out;
  char buf[160];
  for (int i = 0; i < 10; ++i) {
    std::snprintf(buf, sizeof(buf), " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
                  lines[i].ap ? "Average Precision" : "Average Recall", lines[i].ap ? "(AP)" : "(AR)", lines[i].iou,
                  lines[i].area, kEvalMaxDets, s[i]);
    out += buf;
  }
  return out;
}

}  // namespace posekd::infer
