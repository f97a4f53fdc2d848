// extract_keypoints: threshold, strict 4-neighbour maxima, x-ordered greedy suppression, global ids.
#include <gtest/gtest.h>

#include <vector>

#include "posekd/infer/peaks.h"

namespace {
using posekd::infer::extract_all_keypoints;
using posekd::infer::extract_keypoints;
using posekd::infer::Peak;

struct Map {
  int h, w;
  std::vector<float> v;
  Map(int h_, int w_) : h(h_), w(w_), v(static_cast<size_t>(h_) * w_, 0.f) {}
  float& at(int y, int x) { return v[static_cast<size_t>(y) * w + x]; }
};

TEST(Peaks, ThresholdIsInclusiveAtPointOne) {
  Map m(8, 8);
  m.at(2, 2) = 0.0999f;  // below threshold: zeroed, no peak
  m.at(5, 5) = 0.1f;     // not below: a peak
  auto p = extract_keypoints(m.v.data(), m.h, m.w, 0);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].x, 5);
  EXPECT_EQ(p[0].y, 5);
  EXPECT_FLOAT_EQ(p[0].score, 0.1f);
}

TEST(Peaks, StrictMaximumAndBordersCountAsZero) {
  Map m(10, 10);
  m.at(1, 1) = 0.5f;  // plateau of two equal values: neither is a strict maximum
  m.at(1, 2) = 0.5f;
  m.at(0, 9) = 0.3f;  // corner: outside neighbours are 0 -> a peak
  m.at(4, 0) = 0.4f;  // lower than its right neighbour -> not a peak
  m.at(4, 1) = 0.6f;
  m.at(9, 9) = 0.05f;  // below threshold
  auto p = extract_keypoints(m.v.data(), m.h, m.w, 0);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].x, 1);  // x-ordered: (1,4) before (9,0)
  EXPECT_EQ(p[0].y, 4);
  EXPECT_EQ(p[1].x, 9);
  EXPECT_EQ(p[1].y, 0);
}

TEST(Peaks, NeighbourBelowThresholdIsZeroedFirst) {
  Map m(5, 5);
  // 0.12 next to 0.11: the 0.11 stays (>= 0.1) and is lower -> only 0.12 is a peak.
  m.at(2, 2) = 0.12f;
  m.at(2, 3) = 0.11f;
  auto p = extract_keypoints(m.v.data(), m.h, m.w, 0);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].x, 2);
}

TEST(Peaks, SuppressionIsPositionOrderedNotScoreOrdered) {
  Map m(30, 30);
  m.at(2, 2) = 0.2f;    // A: first in x order, kept
  m.at(2, 6) = 0.9f;    // B: 4 px from A (< 6): suppressed despite the higher score
  m.at(8, 6) = 0.3f;    // C: sqrt(16+36)=7.2 from A, 6 from B (B is suppressed, so it suppresses nothing)
  m.at(20, 10) = 0.4f;  // D: exactly 6 from E below -> not suppressed (strictly less than 6)
  m.at(20, 16) = 0.5f;  // E
  auto p = extract_keypoints(m.v.data(), m.h, m.w, 7);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].x, 2);
  EXPECT_EQ(p[0].y, 2);
  EXPECT_EQ(p[0].id, 7);
  EXPECT_EQ(p[1].x, 6);
  EXPECT_EQ(p[1].y, 8);
  EXPECT_EQ(p[1].id, 8);
  EXPECT_EQ(p[2].x, 10);
  EXPECT_EQ(p[2].y, 20);
  EXPECT_EQ(p[2].id, 9);
  EXPECT_EQ(p[3].x, 16);
  EXPECT_EQ(p[3].y, 20);
  EXPECT_EQ(p[3].id, 10);
}

TEST(Peaks, EqualXIsOrderedByYAndTheUpperOneSuppresses) {
  Map m(30, 30);
  m.at(12, 3) = 0.2f;
  m.at(8, 3) = 0.7f;  // same x, smaller y: comes first, suppresses the one 4 px below
  m.at(25, 3) = 0.6f;
  auto p = extract_keypoints(m.v.data(), m.h, m.w, 0);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].y, 8);
  EXPECT_FLOAT_EQ(p[0].score, 0.7f);
  EXPECT_EQ(p[1].y, 25);
}

TEST(Peaks, GlobalIdsRunAcrossChannels) {
  const int h = 10, w = 10;
  std::vector<float> maps(3 * h * w, 0.f);
  maps[0 * h * w + 1 * w + 1] = 0.5f;
  maps[0 * h * w + 8 * w + 8] = 0.5f;
  // channel 1 empty
  maps[2 * h * w + 4 * w + 4] = 0.9f;
  auto all = extract_all_keypoints(maps.data(), 3, h, w);
  ASSERT_EQ(all.size(), 3u);
  ASSERT_EQ(all[0].size(), 2u);
  EXPECT_TRUE(all[1].empty());
  ASSERT_EQ(all[2].size(), 1u);
  EXPECT_EQ(all[0][0].id, 0);
  EXPECT_EQ(all[0][1].id, 1);
  EXPECT_EQ(all[2][0].id, 2);
}

TEST(Peaks, InputIsNotModifiedAndBadSizeThrows) {
  Map m(4, 4);
  m.at(1, 1) = 0.05f;
  auto copy = m.v;
  extract_keypoints(m.v.data(), m.h, m.w, 0);
  EXPECT_EQ(copy, m.v);
  EXPECT_THROW(extract_keypoints(m.v.data(), 0, 4, 0), std::exception);
}

}  // namespace
