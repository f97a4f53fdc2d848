// Hand-computed heatmap / PAF cases, keypoint conversion, segmentation rasterisation, crowd mask.
#include <gtest/gtest.h>

#include <cmath>

#include "posekd/core/skeleton.h"
#include "posekd/data/keypoints.h"
#include "posekd/data/targets.h"

namespace {
using namespace posekd::data;
namespace sk = posekd::skeleton;

Keypoints18 empty_person() {
  Keypoints18 kp;
  for (auto& p : kp) p = {0, 0, 2};
  return kp;
}

TEST(Heatmaps, SingleKeypointHandComputed) {
  Keypoints18 kp = empty_person();
  kp[0] = {20, 30, 1};  // nose at input pixel (20, 30)
  TargetGrid g;         // 16x16, stride 8, sigma 7
  auto h = heatmaps({kp}, g);
  ASSERT_EQ(h.sizes(), (std::vector<int64_t>{19, 16, 16}));
  auto a = h.accessor<float, 3>();
  // Cell (gx=2, gy=3): centre (19.5, 27.5), d2 = 0.25 + 6.25 = 6.5, e = 6.5/98.
  EXPECT_NEAR(a[0][3][2], 0.9358253, 1e-6);
  // Cell (4, 3): centre (35.5, 27.5), d2 = 240.25 + 6.25 = 246.5, e = 2.51531 -> 0.080838.
  EXPECT_NEAR(a[0][3][4], 0.0808378, 1e-6);
  // Cell (5, 3): d2 = 552.25 + 6.25 -> e = 5.699 > 4.6052: cut to 0.
  EXPECT_EQ(a[0][3][5], 0.f);
  EXPECT_EQ(a[0][0][0], 0.f);
  EXPECT_NEAR(a[18][3][2], 1 - 0.9358253, 1e-6);
  EXPECT_EQ(a[18][15][15], 1.f);
  for (int k = 1; k < 18; ++k) EXPECT_EQ(h[k].abs().sum().item<float>(), 0.f) << "channel " << k;
  // Window vs the seed's whole-grid loop: identical everywhere.
  for (int gy = 0; gy < 16; ++gy)
    for (int gx = 0; gx < 16; ++gx) {
      double d2 = std::pow(gx * 8 + 3.5 - 20, 2) + std::pow(gy * 8 + 3.5 - 30, 2);
      double e = d2 / 98;
      float ref = e <= 4.6052 ? static_cast<float>(std::exp(-e)) : 0.f;
      EXPECT_FLOAT_EQ(a[0][gy][gx], ref) << gx << "," << gy;
    }
}

TEST(Heatmaps, OccludedDrawnNotLabeledAndOutsideSkipped) {
  Keypoints18 kp = empty_person();
  kp[3] = {64, 64, 0};    // occluded: drawn
  kp[4] = {64, 64, 2};    // not labeled: not drawn
  kp[5] = {128, 64, 1};   // x/8 = 16: outside [0,16), not drawn
  kp[6] = {-0.5, 64, 1};  // outside
  auto h = heatmaps({kp}, TargetGrid{});
  EXPECT_NEAR(h[3].max().item<float>(), std::exp(-24.5 / 98), 1e-6);  // nearest centres at +-3.5
  EXPECT_EQ(h[4].max().item<float>(), 0.f);
  EXPECT_EQ(h[5].max().item<float>(), 0.f);
  EXPECT_EQ(h[6].max().item<float>(), 0.f);
}

TEST(Heatmaps, MaxOverPersonsNotSum) {
  Keypoints18 a = empty_person(), b = empty_person();
  a[0] = {20, 30, 1};
  b[0] = {20, 30, 1};
  auto h1 = heatmaps({a}, TargetGrid{});
  auto h2 = heatmaps({a, b}, TargetGrid{});
  EXPECT_TRUE(torch::equal(h1, h2));
}

TEST(Heatmaps, Grid46Stride8) {
  Keypoints18 kp = empty_person();
  kp[0] = {300, 200, 1};
  TargetGrid g;
  g.grid_w = g.grid_h = 46;
  auto h = heatmaps({kp}, g);
  ASSERT_EQ(h.size(1), 46);
  // Cell (37, 24): centre (299.5, 195.5): d2 = 0.25 + 20.25 = 20.5.
  EXPECT_NEAR(h[0][24][37].item<float>(), std::exp(-20.5 / 98), 1e-6);
}

TEST(Pafs, HorizontalLimbExactCells) {
  Keypoints18 kp = empty_person();
  kp[1] = {20, 36, 1};  // neck -> grid (2.5, 4.5)
  kp[8] = {60, 36, 1};  // r_hip -> grid (7.5, 4.5); limb 0 = (1, 8) -> channels 0, 1
  auto p = pafs({kp}, TargetGrid{});
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{38, 16, 16}));
  // x in [int(1.5), int(8.5)) = [1, 8), y in [int(3.5), int(5.5)) = {3, 4}; |y - 4.5| <= 1 -> y = 4 only.
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x) {
      float expect = (y == 4 && x >= 1 && x <= 7) ? 1.f : 0.f;
      EXPECT_EQ(p[0][y][x].item<float>(), expect) << x << "," << y;
    }
  EXPECT_EQ(p[1].abs().sum().item<float>(), 0.f);
  EXPECT_EQ(p.slice(0, 2).abs().sum().item<float>(), 0.f);
}

TEST(Pafs, DiagonalUnitVectorAndOverwrite) {
  Keypoints18 a = empty_person(), b = empty_person();
  a[1] = {40, 40, 1};
  a[8] = {80, 80, 0};  // occluded ends still draw
  b[1] = {80, 32, 1};
  b[8] = {32, 80, 1};  // crosses a's limb: b (later) overwrites at shared cells
  auto p = pafs({a, b}, TargetGrid{});
  const float r = static_cast<float>(1 / std::sqrt(2.0));
  // Cell (7,7) lies on both lines (a: y = x; b: x + y = 14 in grid units): b wins.
  EXPECT_NEAR(p[0][7][7].item<float>(), -r, 1e-7);
  EXPECT_NEAR(p[1][7][7].item<float>(), r, 1e-7);
  // Cell (9,9) is on a only (distance to b's line = 4/sqrt2 > 1).
  EXPECT_NEAR(p[0][9][9].item<float>(), r, 1e-7);
  EXPECT_NEAR(p[1][9][9].item<float>(), r, 1e-7);
  Keypoints18 c = empty_person();
  c[1] = {40, 40, 1};
  c[8] = {40, 40, 1};  // zero-length limb: skipped
  EXPECT_EQ(pafs({c}, TargetGrid{}).abs().sum().item<float>(), 0.f);
}

posekd::data::CocoPerson person_with(std::initializer_list<std::array<float, 4>> kps) {
  posekd::data::CocoPerson p;
  for (const auto& k : kps) {
    int j = static_cast<int>(k[0]);
    p.keypoints[3 * j] = k[1];
    p.keypoints[3 * j + 1] = k[2];
    p.keypoints[3 * j + 2] = k[3];
  }
  return p;
}

TEST(Keypoints, ReorderVisibilityAndReflag) {
  // COCO: nose visible, left_eye occluded, right_eye not labeled at a position, left_ear at (0,0)
  // visible, right_ear outside the 100x50 image.
  auto p = person_with({{0, 10, 20, 2}, {1, 11, 21, 1}, {2, 12, 22, 0}, {3, 0, 0, 2}, {4, 100, 10, 2}});
  auto kp = convert_keypoints(p, 100, 50);
  EXPECT_EQ(kp[0][0], 10);
  EXPECT_EQ(kp[0][1], 20);
  EXPECT_EQ(kp[0][2], sk::kVisVisible);
  EXPECT_EQ(kp[15][0], 11);  // l_eye
  EXPECT_EQ(kp[15][2], sk::kVisOccluded);
  EXPECT_EQ(kp[14][2], sk::kVisNotLabeled);  // r_eye, COCO v = 0
  EXPECT_EQ(kp[17][2], sk::kVisNotLabeled);  // l_ear at (0,0)
  EXPECT_EQ(kp[16][2], sk::kVisNotLabeled);  // r_ear x == width
}

TEST(Keypoints, NeckCurrentRule) {
  // Both shoulders visible -> 1, midpoint.
  auto kp = convert_keypoints(person_with({{5, 10, 10, 2}, {6, 30, 20, 2}}), 100, 100);
  EXPECT_EQ(kp[1][0], 20);
  EXPECT_EQ(kp[1][1], 15);
  EXPECT_EQ(kp[1][2], 1);
  EXPECT_EQ(kp[5][0], 10);  // l_sho
  EXPECT_EQ(kp[2][0], 30);  // r_sho
  // One occluded, one visible -> 0.
  EXPECT_EQ(convert_keypoints(person_with({{5, 10, 10, 1}, {6, 30, 20, 2}}), 100, 100)[1][2], 0);
  // One not labeled (old rule would give 0 here, current gives 2).
  EXPECT_EQ(convert_keypoints(person_with({{5, 10, 10, 2}, {6, 0, 0, 0}}), 100, 100)[1][2], 2);
  // One shoulder outside the image (re-flagged 2) -> 2.
  EXPECT_EQ(convert_keypoints(person_with({{5, 10, 10, 2}, {6, 150, 20, 2}}), 100, 100)[1][2], 2);
}

TEST(Keypoints, SeedCompatLayout) {
  auto kp = seed_compat_keypoints(person_with({{1, 11, 21, 2}, {5, 50, 60, 1}}));
  EXPECT_EQ(kp[1][0], 11);  // channel 1 holds COCO left_eye (the seed's bug)
  EXPECT_EQ(kp[1][2], 1);
  EXPECT_EQ(kp[5][2], 0);
  EXPECT_EQ(kp[17][2], 2);
}

TEST(Rasterize, RleColumnMajor) {
  Segmentation s;
  s.rle_h = 3;
  s.rle_w = 2;
  s.rle_counts = {1, 2, 3};  // flat (column-major) 0: 0, 1-2: 1, 3-5: 0
  cv::Mat m = rasterize_segmentation(s, 3, 2);
  EXPECT_EQ(m.at<uint8_t>(0, 0), 0);
  EXPECT_EQ(m.at<uint8_t>(1, 0), 1);
  EXPECT_EQ(m.at<uint8_t>(2, 0), 1);
  EXPECT_EQ(m.at<uint8_t>(0, 1), 0);
  EXPECT_EQ(m.at<uint8_t>(1, 1), 0);
  EXPECT_EQ(m.at<uint8_t>(2, 1), 0);
  s.rle_counts = {4, 100};  // over-long run is clipped, never overflows
  m = rasterize_segmentation(s, 3, 2);
  EXPECT_EQ(cv::countNonZero(m), 2);
  EXPECT_EQ(m.at<uint8_t>(1, 1), 1);
  EXPECT_EQ(m.at<uint8_t>(2, 1), 1);
}

TEST(Rasterize, Polygon) {
  Segmentation s;
  s.polygons = {{1, 1, 3, 1, 3, 3, 1, 3}};
  cv::Mat m = rasterize_segmentation(s, 5, 5);
  EXPECT_EQ(cv::countNonZero(m), 9);
  for (int y = 1; y <= 3; ++y)
    for (int x = 1; x <= 3; ++x) EXPECT_EQ(m.at<uint8_t>(y, x), 1);
  EXPECT_EQ(m.at<uint8_t>(0, 0), 0);
  EXPECT_EQ(m.at<uint8_t>(4, 4), 0);
}

TEST(CrowdMask, LeftHalfCrowdScaledAndPadded) {
  // 64 x 32 image (w x h) whose left half is crowd; s = 2 -> 128 x 64, padded to 128 x 128.
  CocoPerson crowd;
  crowd.iscrowd = true;
  crowd.segmentation.rle_h = 32;
  crowd.segmentation.rle_w = 64;
  crowd.segmentation.rle_counts = {0, 32 * 32, 32 * 32};
  auto m = crowd_mask({crowd}, 32, 64, 64, 128, TargetGrid{});
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{1, 16, 16}));
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x) {
      float expect = (y < 8 && x < 8) ? 0.f : 1.f;  // padding rows 8..15 are 1
      EXPECT_EQ(m[0][y][x].item<float>(), expect) << x << "," << y;
    }
  // No crowd: all ones.
  EXPECT_EQ(crowd_mask({}, 32, 64, 64, 128, TargetGrid{}).sum().item<float>(), 256.f);
}

TEST(CrowdMask, SmallRegionBecomesZeroByMajority) {
  // A 4x4-pixel crowd in a 128x128 image (s = 1): one 8x8 cell is 16/64 (+fringe) zero -> rounds to 1.
  // A 6x8 block covering 48/64 plus fringe -> 0.
  CocoPerson small;
  small.segmentation.polygons = {{8, 8, 11, 8, 11, 11, 8, 11}};
  auto m = crowd_mask({small}, 128, 128, 128, 128, TargetGrid{});
  EXPECT_EQ(m.sum().item<float>(), 256.f);
  CocoPerson big;
  big.segmentation.polygons = {{16, 16, 21, 16, 21, 23, 16, 23}};
  m = crowd_mask({big}, 128, 128, 128, 128, TargetGrid{});
  EXPECT_EQ(m[0][2][2].item<float>(), 0.f);
  EXPECT_EQ(m.sum().item<float>(), 255.f);
}

}  // namespace
