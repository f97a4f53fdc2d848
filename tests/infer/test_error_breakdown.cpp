// keypoint_error_breakdown: golden counts on hand-made people and detections.
#include <gtest/gtest.h>

#include <cmath>

#include "detections.h"
#include "posekd/infer/error_breakdown.h"

namespace {

using posekd::data::CocoPerson;
using posekd::infer::Detection;
using posekd::testing::as_detection;

// A person whose left keypoints sit w px left of (cx, cy + 4 k) and right ones w px right; the
// nose on the centre line. All 17 labelled (v = 2) unless `labelled` says fewer (the first ones).
CocoPerson person(float cx, float cy, float w, float area, int labelled = 17) {
  CocoPerson p;
  p.area = area;
  p.bbox = {cx - 20, cy - 20, 40, 80};
  for (int k = 0; k < 17; ++k) {
    // COCO-17: 0 nose, then (left, right) pairs 1/2, 3/4, ..., 15/16
    const float side = k == 0 ? 0.f : (k % 2 == 1 ? -1.f : 1.f);
    p.keypoints[3 * k] = cx + side * w;
    p.keypoints[3 * k + 1] = cy + 4.f * static_cast<float>((k + 1) / 2);
    p.keypoints[3 * k + 2] = k < labelled ? 2.f : 0.f;
  }
  p.num_keypoints = labelled;
  return p;
}

TEST(ErrorBreakdown, CountsMatchesMissingErrorsAndSwaps) {
  posekd::data::CocoDataset gt;
  posekd::data::CocoImage im1, im2;
  im1.id = 1;
  im2.id = 2;
  const CocoPerson a = person(50, 50, 8, 400);      // size 20
  const CocoPerson b = person(150, 50, 8, 100, 5);  // 5 labelled keypoints
  const CocoPerson c = person(50, 50, 8, 900);      // size 30
  const CocoPerson d = person(150, 50, 3, 2500);    // narrow: pairs 6 px apart, size 50
  im1.persons = {a, b};
  im2.persons = {c, d};
  CocoPerson crowd = person(100, 100, 8, 5000);
  crowd.iscrowd = true;
  im2.crowds = {crowd};
  gt.images = {im1, im2};

  std::vector<Detection> dts;
  dts.push_back(as_detection(1, a, 0.9f));        // a exactly
  dts.push_back(as_detection(1, a, 0.8f, 3, 4));  // a again: taken, and b is 100 px away -> unmatched
  Detection dc = as_detection(2, c, 0.7f, 3, 4);  // c off by 5 px, keypoints 0-7 not found
  for (int k = 0; k < 8; ++k) dc.keypoints[3 * k] = dc.keypoints[3 * k + 1] = dc.keypoints[3 * k + 2] = 0.f;
  dts.push_back(dc);
  Detection dd = as_detection(2, d, 0.6f);  // d with left and right exchanged
  for (int k = 1; k < 17; k += 2)
    for (int j = 0; j < 3; ++j) std::swap(dd.keypoints[3 * k + j], dd.keypoints[3 * (k + 1) + j]);
  dts.push_back(dd);
  dts.push_back(as_detection(7, a, 1.0f));  // an image without annotations: not counted

  const auto r = posekd::infer::keypoint_error_breakdown(gt, dts);
  EXPECT_EQ(r.people, 4);
  EXPECT_EQ(r.matched, 3);
  EXPECT_EQ(r.labelled, 51);
  EXPECT_EQ(r.missing, 8);
  EXPECT_EQ(r.swapped, 1);
  // found: a 17 x 0 px, c 9 x 5 px, d nose 0 px and 16 x 6 px -> 18 zeros, 9 fives, 16 sixes
  EXPECT_DOUBLE_EQ(r.median_error_px, 5.0);
  // relative: 18 zeros, 16 x 6/50 = 0.12, 9 x 5/30 -> the 22nd of 43 is 0.12
  EXPECT_NEAR(r.median_error_rel, 0.12, 1e-12);
  for (int k = 0; k < 17; ++k) {
    EXPECT_EQ(r.labelled_by_kpt[k], 3) << k;
    EXPECT_EQ(r.missing_by_kpt[k], k < 8 ? 1 : 0) << k;
  }
  // a matches with OKS 1; c and d lower
  EXPECT_GT(r.mean_oks, 0.1);
  EXPECT_LT(r.mean_oks, 1.0);
  const std::string t = r.text();
  EXPECT_NE(t.find("errors: 3 of 4 people matched (OKS >= 0.1"), std::string::npos) << t;
  EXPECT_NE(t.find("1 with left and right better swapped"), std::string::npos) << t;
  EXPECT_NE(t.find("15.7% of their 51 labelled keypoints missing"), std::string::npos) << t;
  EXPECT_NE(t.find("off by 5.00 px median (0.120 of the person's size)"), std::string::npos) << t;
  EXPECT_NE(t.find("nose 33%"), std::string::npos) << t;

  // A stricter match threshold leaves the swapped person out (its OKS is low).
  const auto strict = posekd::infer::keypoint_error_breakdown(gt, dts, 0.9);
  EXPECT_EQ(strict.matched, 1);
  EXPECT_EQ(strict.swapped, 0);
  EXPECT_EQ(strict.missing, 0);
}

TEST(ErrorBreakdown, NoDetectionsMatchesNobody) {
  posekd::data::CocoDataset gt;
  posekd::data::CocoImage im;
  im.id = 3;
  im.persons = {person(10, 10, 4, 100)};
  gt.images = {im};
  const auto r = posekd::infer::keypoint_error_breakdown(gt, {});
  EXPECT_EQ(r.people, 1);
  EXPECT_EQ(r.matched, 0);
  EXPECT_EQ(r.labelled, 0);
  EXPECT_EQ(r.mean_oks, 0.0);
  EXPECT_EQ(r.median_error_px, 0.0);
}

}  // namespace
