// Grouping and decoding: hand-made PAFs, and GT people -> targets drawn with the seed formulas
// (openpose.md 3.3/3.4) -> decode -> the same people back, at 16x16 (student) and 46x46 (teacher).
#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <array>
#include <cmath>
#include <random>
#include <vector>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"
#include "posekd/infer/decode.h"
#include "posekd/infer/draw.h"
#include "posekd/infer/grouping.h"

namespace {
namespace sk = posekd::skeleton;
using namespace posekd::infer;

// ---- target drawing, openpose.md 3.3 (heatmaps, +3.5 shift) and 3.4 (PAFs, no shift) ----------
struct Targets {
  int g;
  std::vector<float> heat;  // [19, g, g]
  std::vector<float> paf;   // [38, g, g]
};

void add_gaussian(float* map, int g, double x, double y) {
  const int stride = 8;
  const int tlx = std::max(static_cast<int>(x - 28), 0), tly = std::max(static_cast<int>(y - 28), 0);
  const int brx = std::min(static_cast<int>(x + 28), g * stride), bry = std::min(static_cast<int>(y + 28), g * stride);
  for (int my = tly / stride; my < bry / stride; ++my)
    for (int mx = tlx / stride; mx < brx / stride; ++mx) {
      const double cx = stride * mx + 3.5, cy = stride * my + 3.5;
      const double e = ((cx - x) * (cx - x) + (cy - y) * (cy - y)) / (2 * 7 * 7);
      if (e > 4.6052) continue;
      float& v = map[my * g + mx];
      v = std::min(1.f, v + static_cast<float>(std::exp(-e)));
    }
}

void set_paf(float* px, float* py, int g, double xa, double ya, double xb, double yb) {
  const double ax = xa / 8, ay = ya / 8, bx = xb / 8, by = yb / 8;
  const double dx = bx - ax, dy = by - ay, n = std::sqrt(dx * dx + dy * dy);
  if (n < 1e-7) return;
  const double ux = dx / n, uy = dy / n;
  const int x0 = static_cast<int>(std::max(std::min(ax, bx) - 1, 0.0));
  const int x1 = static_cast<int>(std::min(std::max(ax, bx) + 1, static_cast<double>(g)));
  const int y0 = static_cast<int>(std::max(std::min(ay, by) - 1, 0.0));
  const int y1 = static_cast<int>(std::min(std::max(ay, by) + 1, static_cast<double>(g)));
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x)
      if (std::fabs((x - ax) * uy - (y - ay) * ux) <= 1) {
        px[y * g + x] = static_cast<float>(ux);
        py[y * g + x] = static_cast<float>(uy);
      }
}

using Person18 = std::array<std::array<double, 2>, 18>;  // OpenPose-18 input-pixel coordinates

Targets draw_targets(const std::vector<Person18>& people, int g) {
  Targets t{g, std::vector<float>(19 * g * g, 0.f), std::vector<float>(38 * g * g, 0.f)};
  for (int k = 0; k < 18; ++k)
    for (const auto& p : people) add_gaussian(&t.heat[k * g * g], g, p[k][0], p[k][1]);
  for (int i = 0; i < g * g; ++i) {
    float m = 0;
    for (int k = 0; k < 18; ++k) m = std::max(m, t.heat[k * g * g + i]);
    t.heat[18 * g * g + i] = 1 - m;
  }
  for (int l = 0; l < sk::kNumLimbs; ++l)
    for (const auto& p : people) {
      const auto& a = p[sk::kLimbs[l].a];
      const auto& b = p[sk::kLimbs[l].b];
      set_paf(&t.paf[2 * l * g * g], &t.paf[(2 * l + 1) * g * g], g, a[0], a[1], b[0], b[1]);
    }
  return t;
}

// A standing person, facing the camera, `h` pixels tall, top-centre at (cx, top).
Person18 person(double cx, double top, double h) {
  static const double tpl[18][2] = {{0, .06},   {0, .20},   {-.13, .20}, {-.18, .38}, {-.20, .55}, {.13, .20},
                                    {.18, .38}, {.20, .55}, {-.08, .55}, {-.09, .76}, {-.10, .97}, {.08, .55},
                                    {.09, .76}, {.10, .97}, {-.04, .03}, {.04, .03},  {-.09, .06}, {.09, .06}};
  Person18 p;
  for (int k = 0; k < 18; ++k) p[k] = {cx + tpl[k][0] * h, top + tpl[k][1] * h};
  return p;
}

// ---- grouping on hand-made PAFs ----------------------------------------------------------------
TEST(Grouping, LimbAffinityOnUniformFields) {
  const int h = 20, w = 20;
  std::vector<float> px(h * w, 1.f), py(h * w, 0.f);
  double ratio = 0;
  // Along the field: every sample scores 1 -> mean 10/(10+1e-6), ratio 1.
  double s = limb_affinity(px.data(), py.data(), h, w, 2, 5, 12, 5, &ratio);
  EXPECT_NEAR(s, 10.0 / (10 + 1e-6), 1e-6);
  EXPECT_DOUBLE_EQ(ratio, 1.0);
  // Against the field: no sample passes.
  s = limb_affinity(px.data(), py.data(), h, w, 12, 5, 2, 5, &ratio);
  EXPECT_DOUBLE_EQ(s, 0.0);
  EXPECT_DOUBLE_EQ(ratio, 0.0);
  // Field only on x <= 8 of a limb from x=0 to x=18: samples at x = 0,2,...,18 -> 5 of 10 pass.
  for (int y = 0; y < h; ++y)
    for (int x = 9; x < w; ++x) px[y * w + x] = 0.f;
  s = limb_affinity(px.data(), py.data(), h, w, 0, 3, 18, 3, &ratio);
  EXPECT_DOUBLE_EQ(ratio, 0.5);
  EXPECT_NEAR(s, 5.0 / (5 + 1e-6), 1e-6);
}

// Limbs shorter than short_limb map cells are accepted without the PAF (closest first); with 0,
// upstream's test: a zero or tiny limb vector projects to 0 on any field and fails.
TEST(Grouping, ShortLimbsAreJoinedWithoutThePaf) {
  const int h = 16, w = 16;
  std::vector<float> px(h * w, 0.f), py(h * w, 0.f);
  GroupParams g;
  g.short_limb = 2.f;  // half a cell in 4x upsampled pixels, as decode() hands it over
  double ratio = 0;
  // no PAF at all: the closeness score 0.1 (L - length) / L, in float
  EXPECT_DOUBLE_EQ(limb_affinity(px.data(), py.data(), h, w, 5, 5, 5, 5, &ratio, g), 0.1f);  // same pixel
  EXPECT_DOUBLE_EQ(ratio, 1.0);
  EXPECT_DOUBLE_EQ(limb_affinity(px.data(), py.data(), h, w, 5, 5, 6, 5, &ratio, g), 0.1f * 0.5f);  // (2 - 1) / 2
  // a PAF along the short limb that passes: its own score wins over closeness
  std::vector<float> ones(h * w, 1.f);
  EXPECT_NEAR(limb_affinity(ones.data(), py.data(), h, w, 5, 5, 6, 5, &ratio, g), 1.0, 1e-5);
  EXPECT_DOUBLE_EQ(ratio, 1.0);
  ratio = -1;
  EXPECT_DOUBLE_EQ(limb_affinity(px.data(), py.data(), h, w, 5, 5, 7, 5, &ratio, g), 0.0);  // 2 pixels: the PAF
  EXPECT_DOUBLE_EQ(ratio, 0.0);
  GroupParams upstream;
  upstream.short_limb = 0.f;
  EXPECT_DOUBLE_EQ(limb_affinity(px.data(), py.data(), h, w, 5, 5, 5, 5, &ratio, upstream), 0.0);
  EXPECT_DOUBLE_EQ(ratio, 0.0);

  // A person seen from the side: both shoulders on the neck's cell, both ears on the eyes' cell, the
  // rest joined by PAFs along its limbs. With short limbs it keeps its shoulders, arms and ears.
  std::vector<std::vector<Peak>> peaks(18);
  const int xy[18][2] = {{8, 2},  {8, 4},  {8, 4}, {8, 7},  {8, 10}, {8, 4}, {8, 7}, {8, 10}, {7, 9},
                         {7, 12}, {7, 15}, {9, 9}, {9, 12}, {9, 15}, {8, 1}, {8, 1}, {8, 1},  {8, 1}};
  for (int k = 0; k < 18; ++k) peaks[k].push_back({xy[k][0], xy[k][1], 0.9f, k});
  std::vector<float> paf(38 * h * w, 0.f);
  for (int part = 0; part < 19; ++part) {  // the unit vector of each limb of this person, everywhere
    const auto& l = posekd::skeleton::kGroupLimbs[part];
    const float dx = static_cast<float>(xy[l.b][0] - xy[l.a][0]), dy = static_cast<float>(xy[l.b][1] - xy[l.a][1]);
    const float n = std::sqrt(dx * dx + dy * dy);
    if (n == 0.f) continue;
    const auto& ch = posekd::skeleton::kGroupPafChannels[part];
    for (int i = 0; i < h * w; ++i) {
      paf[ch[0] * h * w + i] = dx / n;
      paf[ch[1] * h * w + i] = dy / n;
    }
  }
  GroupParams cells;  // coordinates in map cells: short_limb 0.5
  const auto joined = group_keypoints(peaks, paf.data(), h, w, cells);
  ASSERT_EQ(joined.size(), 1u);
  int with_n = 0;
  for (int k = 0; k < 18; ++k) with_n += joined[0].kpt[k] >= 0;
  EXPECT_EQ(with_n, 18);
  // upstream splits the person: the neck's pose without shoulders, arms and ears, and each arm
  // (shoulder, elbow, wrist) as a pose of its own
  const auto without = group_keypoints(peaks, paf.data(), h, w, upstream);
  ASSERT_EQ(without.size(), 3u);
  int body = 0;
  for (const auto& e : without)
    if (e.kpt[1] >= 0) {
      ++body;
      for (int k : {2, 3, 4, 5, 6, 7, 16, 17}) EXPECT_LT(e.kpt[k], 0) << k;
      for (int k : {0, 8, 9, 10, 11, 12, 13, 14, 15}) EXPECT_GE(e.kpt[k], 0) << k;
    } else {
      EXPECT_TRUE((e.kpt[2] >= 0 && e.kpt[3] >= 0 && e.kpt[4] >= 0) ||
                  (e.kpt[5] >= 0 && e.kpt[6] >= 0 && e.kpt[7] >= 0));
    }
  EXPECT_EQ(body, 1);
}

// Peaks lists for the 18 types with ids in concatenation order.
std::vector<std::vector<Peak>> make_peaks(const std::vector<std::vector<std::array<int, 2>>>& xy, float score = 0.9f) {
  std::vector<std::vector<Peak>> out(18);
  int id = 0;
  for (size_t k = 0; k < xy.size(); ++k)
    for (const auto& p : xy[k]) out[k].push_back({p[0], p[1], score, id++});
  return out;
}

TEST(Grouping, ConnectionsNmsKeepsBestScoringPair) {
  // Uniform PAF +x for neck->r_sho (part 0, channels 12,13) and +y for r_sho->r_elb (part 2,
  // channels 14,15). Necks at (5,12) [id 0] and (5,10) [id 1], one r_sho at (15,10) [id 2]:
  // both pairs are valid (scores 1 and 10/sqrt(104) = 0.98); the r_sho can be used once, so the
  // better pair wins although it comes later in candidate order, and neck 0 forms no pose.
  const int h = 30, w = 30;
  std::vector<float> paf(38 * h * w, 0.f);
  for (int i = 0; i < h * w; ++i) {
    paf[12 * h * w + i] = 1.f;
    paf[15 * h * w + i] = 1.f;
  }
  double ratio = 0;
  EXPECT_NEAR(limb_affinity(&paf[12 * h * w], &paf[13 * h * w], h, w, 5, 12, 15, 10, &ratio), 10 / std::sqrt(104.0),
              1e-5);
  EXPECT_DOUBLE_EQ(ratio, 1.0);
  std::vector<std::vector<std::array<int, 2>>> xy(18);
  xy[1] = {{5, 12}, {5, 10}};
  xy[2] = {{15, 10}};
  xy[3] = {{15, 20}};
  auto peaks = make_peaks(xy);
  auto poses = group_keypoints(peaks, paf.data(), h, w);
  ASSERT_EQ(poses.size(), 1u);
  EXPECT_EQ(poses[0].kpt[1], 1);
  EXPECT_EQ(poses[0].kpt[2], 2);
  EXPECT_EQ(poses[0].kpt[3], 3);
  EXPECT_EQ(poses[0].count, 3);
  // score = 3 keypoints * 0.9 + two connections of 10/(10+1e-6)
  EXPECT_NEAR(poses[0].score, 3 * 0.9 + 2 * (10.0 / (10 + 1e-6)), 1e-5);
  for (int k : {0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}) EXPECT_EQ(poses[0].kpt[k], -1);
}

TEST(Grouping, EarPartsFillGapsWithoutCountAndShortPosesAreDropped) {
  const int h = 40, w = 40;
  std::vector<float> paf(38 * h * w, 0.f);
  auto fill = [&](int ch, float v) {
    for (int i = 0; i < h * w; ++i) paf[ch * h * w + i] = v;
  };
  // neck(20,20) -> r_sho(10,20): part 0 (ch 12,13) points -x.
  fill(12, -1.f);
  // r_sho(10,20) -> r_elb(10,30): part 2 (ch 14,15) points +y.
  fill(15, 1.f);
  // r_sho(10,20) -> r_ear(10,10): part 17 (ch 18,19) points -y.
  fill(19, -1.f);
  std::vector<std::vector<std::array<int, 2>>> xy(18);
  xy[1] = {{20, 20}};
  xy[2] = {{10, 20}};
  xy[3] = {{10, 30}};
  xy[16] = {{10, 10}};
  auto peaks = make_peaks(xy, 0.5f);
  auto poses = group_keypoints(peaks, paf.data(), h, w);
  ASSERT_EQ(poses.size(), 1u);
  EXPECT_EQ(poses[0].kpt[16], 3);  // ear attached by part 17
  EXPECT_EQ(poses[0].count, 3);    // ... without counting it
  // Without the elbow the pose has count 2 and is filtered out.
  xy[3].clear();
  peaks = make_peaks(xy, 0.5f);
  EXPECT_TRUE(group_keypoints(peaks, paf.data(), h, w).empty());
}

TEST(Grouping, LowMeanScoreIsFilteredOut) {
  // Three keypoints connected, keypoint scores 0.1 but PAF value 0.06 (> 0.05):
  // score = 3*0.1 + 2*0.06 = 0.42, count 3 -> 0.14 < 0.2 -> dropped.
  const int h = 30, w = 30;
  std::vector<float> paf(38 * h * w, 0.f);
  for (int i = 0; i < h * w; ++i) {
    paf[12 * h * w + i] = 0.06f;
    paf[15 * h * w + i] = 0.06f;
  }
  std::vector<std::vector<std::array<int, 2>>> xy(18);
  xy[1] = {{5, 5}};
  xy[2] = {{15, 5}};
  xy[3] = {{15, 15}};
  EXPECT_TRUE(group_keypoints(make_peaks(xy, 0.1f), paf.data(), h, w).empty());
  // With keypoint score 0.3: (0.9 + 0.12) / 3 = 0.34 -> kept.
  EXPECT_EQ(group_keypoints(make_peaks(xy, 0.3f), paf.data(), h, w).size(), 1u);
}

// ---- decode: coordinate mapping and round trips ------------------------------------------------
TEST(Decode, MappingInvertsTheHalfCellShift) {
  DecodeParams p;  // stride 8, upsample 4, scale 1
  // Upsampled pixel X covers map coordinate (X+0.5)/4-0.5; cell 0 centre (X=1.5) is input 3.5.
  EXPECT_FLOAT_EQ(map_to_original_x(1.5f, p), 3.5f);
  EXPECT_FLOAT_EQ(map_to_original_x(0.f, p), 0.5f);
  EXPECT_FLOAT_EQ(map_to_original_x(41.5f, p), 83.5f);  // cell 10 centre
  p.scale = 0.2f;
  p.pad_top = 10.f;
  EXPECT_NEAR(map_to_original_y(41.5f, p), (83.5 - 10) / 0.2, 1e-3);
  auto lb = letterbox_params(640, 400);
  EXPECT_FLOAT_EQ(lb.scale, 0.2f);
  EXPECT_EQ(lb.input_w, 128);
  EXPECT_FLOAT_EQ(lb.pad_left, 0.f);
}

TEST(Decode, UpsampleMatchesCvResizeCubic) {
  std::vector<float> m(2 * 3 * 4);
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<float>(i % 5) * 0.25f;
  auto up = upsample_maps(m.data(), 2, 3, 4, 4);
  ASSERT_EQ(up.size(), 2u * 12 * 16);
  // Cubic through a constant reproduces it; spot-check channel 1 against an independent cv::resize.
  cv::Mat src(3, 4, CV_32F, m.data() + 12), dst;
  cv::resize(src, dst, cv::Size(16, 12), 0, 0, cv::INTER_CUBIC);
  for (int y = 0; y < 12; ++y)
    for (int x = 0; x < 16; ++x) EXPECT_FLOAT_EQ(up[192 + y * 16 + x], dst.at<float>(y, x));
}

struct RoundTrip {
  int matched = 0;
  double max_err = 0;  // input pixels
  double sum_dx = 0, sum_dy = 0;
  int n = 0;
};

// Decodes targets drawn for `people` (input coords) and matches each GT person to the pose whose
// neck is nearest. Checks the listed COCO keypoints; errors are measured in INPUT pixels.
RoundTrip round_trip(const std::vector<Person18>& people, int input, const DecodeParams& p,
                     const std::vector<int>& coco_kpts, double tol_input_px) {
  const int g = input / 8;
  Targets t = draw_targets(people, g);
  auto poses = decode(t.heat.data(), t.paf.data(), g, g, p);
  EXPECT_EQ(poses.size(), people.size());
  RoundTrip rt;
  std::vector<char> used(poses.size(), 0);
  for (const auto& gt : people) {
    // COCO coordinates of this person: (x_in - pad) / scale.
    int best = -1;
    double bd = 1e30;
    for (size_t i = 0; i < poses.size(); ++i) {
      if (!poses[i].has(1)) continue;
      const double dx = poses[i].points[2] * p.scale + p.pad_left - gt[1][0];
      const double dy = poses[i].points[3] * p.scale + p.pad_top - gt[1][1];
      if (dx * dx + dy * dy < bd) {
        bd = dx * dx + dy * dy;
        best = static_cast<int>(i);
      }
    }
    if (best < 0) {
      ADD_FAILURE() << "no pose with a neck";
      continue;
    }
    EXPECT_FALSE(used[best]) << "two GT people got the same pose";
    used[best] = 1;
    ++rt.matched;
    const Pose& pose = poses[best];
    EXPECT_GE(pose.score, 0.f);
    for (int c : coco_kpts) {
      const int k = sk::kCocoToOpenPose[c];
      EXPECT_EQ(pose.keypoints[3 * c + 2], 1.f) << "COCO keypoint " << c << " missing";
      if (pose.keypoints[3 * c + 2] != 1.f) continue;
      const double xin = pose.keypoints[3 * c] * p.scale + p.pad_left;
      const double yin = pose.keypoints[3 * c + 1] * p.scale + p.pad_top;
      const double dx = xin - gt[k][0], dy = yin - gt[k][1];
      rt.max_err = std::max(rt.max_err, std::max(std::fabs(dx), std::fabs(dy)));
      EXPECT_LE(std::fabs(dx), tol_input_px) << "kpt " << c;
      EXPECT_LE(std::fabs(dy), tol_input_px) << "kpt " << c;
      rt.sum_dx += dx;
      rt.sum_dy += dy;
      ++rt.n;
    }
  }
  return rt;
}

// Tolerance: peaks are found on the x4-upsampled map, i.e. on a grid of stride/4 = 2 input pixels
// (at most 1 px of rounding per axis), plus the error of locating a Gaussian (sigma 7 px) sampled
// every 8 px through bicubic interpolation, which we bound by another 1 px: 2 input pixels.
constexpr double kTolInputPx = 2.0;

const std::vector<int> kBody = {0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::vector<int> kAll = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

TEST(Decode, StudentTwoPeopleLetterboxedRoundTrip) {
  // A 640x400 original letterboxed into 128x128 (s = 0.2, image rows 0..79, padding below).
  // The people extend into the padding a little; that is allowed.
  auto p = letterbox_params(640, 400);
  std::vector<Person18> people = {person(34.3, 8.6, 100.2), person(95.1, 14.2, 96.7)};
  auto rt = round_trip(people, 128, p, kBody, kTolInputPx);
  EXPECT_EQ(rt.matched, 2);
}

TEST(Decode, TeacherThreePeopleRoundTripAllKeypoints) {
  // 368x368 teacher input of a 480x640 (w x h) original: s = 368/640, letterboxed.
  auto p = letterbox_params(480, 640, 368);
  // Side by side with ~20 px between their hands.
  std::vector<Person18> people = {person(65.2, 20.7, 250.3), person(185.6, 40.1, 240.9), person(305.4, 30.5, 255.2)};
  auto rt = round_trip(people, 368, p, kAll, kTolInputPx);
  EXPECT_EQ(rt.matched, 3);
}

TEST(Decode, MappingIsUnbiasedOverRandomSubpixelPositions) {
  // Many single people at random sub-pixel offsets: the mean error must be ~0. Upstream's demo
  // mapping x_in = X * stride / upsample would show a mean error of -0.5 input px on both axes.
  std::mt19937 rng(123);
  std::uniform_real_distribution<double> u(0.0, 8.0);
  DecodeParams p;
  p.input_w = p.input_h = 368;
  double sx = 0, sy = 0;
  int n = 0;
  for (int i = 0; i < 12; ++i) {
    std::vector<Person18> one = {person(150 + u(rng), 20 + u(rng), 300 + u(rng))};
    auto rt = round_trip(one, 368, p, kBody, kTolInputPx);
    sx += rt.sum_dx;
    sy += rt.sum_dy;
    n += rt.n;
  }
  ASSERT_GT(n, 100);
  EXPECT_LT(std::fabs(sx / n), 0.2);
  EXPECT_LT(std::fabs(sy / n), 0.2);
}

TEST(Decode, NoPeopleGivesNoPoses) {
  std::vector<float> heat(19 * 16 * 16, 0.f), paf(38 * 16 * 16, 0.f);
  for (int i = 0; i < 256; ++i) heat[18 * 256 + i] = 1.f;  // background only
  EXPECT_TRUE(decode(heat.data(), paf.data(), 16, 16, DecodeParams{}).empty());
}

TEST(Decode, ScoreIsEntryScoreTimesCountMinusOne) {
  std::vector<Person18> one = {person(64, 10, 100)};
  Targets t = draw_targets(one, 16);
  auto poses = decode(t.heat.data(), t.paf.data(), 16, 16, DecodeParams{});
  ASSERT_EQ(poses.size(), 1u);
  // Re-run the pieces to get the entry score.
  auto hm = upsample_maps(t.heat.data(), 18, 16, 16, 4);
  auto pf = upsample_maps(t.paf.data(), 38, 16, 16, 4);
  auto peaks = extract_all_keypoints(hm.data(), 18, 64, 64);
  auto entries = group_keypoints(peaks, pf.data(), 64, 64);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_FLOAT_EQ(poses[0].score, static_cast<float>(entries[0].score * (entries[0].count - 1)));
  EXPECT_EQ(poses[0].count, entries[0].count);
  // Missing keypoints are (0,0,0); the neck never appears in COCO output.
  int found = 0;
  for (int c = 0; c < 17; ++c) {
    if (poses[0].keypoints[3 * c + 2] == 0.f) {
      EXPECT_EQ(poses[0].keypoints[3 * c], 0.f);
      EXPECT_EQ(poses[0].keypoints[3 * c + 1], 0.f);
    } else {
      ++found;
    }
  }
  EXPECT_GE(found, 13);
}

TEST(Decode, WrongMapSizeIsAnError) {
  std::vector<float> heat(19 * 46 * 46, 0.f), paf(38 * 46 * 46, 0.f);
  try {
    decode(heat.data(), paf.data(), 46, 46, DecodeParams{});  // student params, teacher maps
    FAIL() << "expected an error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("46x46"), std::string::npos);
  }
}

TEST(Draw, DrawsLimbsInTheirColourAndLeavesInputUntouched) {
  std::vector<Person18> one = {person(64, 10, 100)};
  Targets t = draw_targets(one, 16);
  auto poses = decode(t.heat.data(), t.paf.data(), 16, 16, DecodeParams{});
  ASSERT_EQ(poses.size(), 1u);
  cv::Mat img(128, 128, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat out = draw_poses(img, poses, 2, 2);
  EXPECT_EQ(cv::countNonZero(img.reshape(1)), 0);  // pure: input unchanged
  // Midpoint of limb r_hip -> r_knee (training limb 1) carries limb 1's colour.
  const auto& P = poses[0].points;
  const int x = static_cast<int>(std::lround((P[2 * 8] + P[2 * 9]) / 2));
  const int y = static_cast<int>(std::lround((P[2 * 8 + 1] + P[2 * 9 + 1]) / 2));
  const cv::Vec3b px = out.at<cv::Vec3b>(y, x);
  const cv::Scalar c = limb_color(1);
  EXPECT_NEAR(px[0], c[0], 40);
  EXPECT_NEAR(px[1], c[1], 40);
  EXPECT_NEAR(px[2], c[2], 40);
  // Keypoint dots are white.
  const cv::Vec3b dot = out.at<cv::Vec3b>(static_cast<int>(std::lround(P[1])), static_cast<int>(std::lround(P[0])));
  EXPECT_EQ(dot, cv::Vec3b(255, 255, 255));
  EXPECT_THROW(draw_poses(cv::Mat(), poses), std::exception);
}

}  // namespace
