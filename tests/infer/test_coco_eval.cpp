// COCO keypoint evaluation (pycocotools semantics), results JSON, the GT reader, `posekd eval --results`.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "detections.h"
#include "posekd/core/error.h"
#include "posekd/infer/coco_eval.h"
#include "posekd/infer/coco_results.h"
#include "test_util.h"

namespace {
using namespace posekd::infer;
using posekd::data::CocoDataset;
using posekd::data::CocoImage;
using posekd::data::CocoPerson;
using posekd::testing::as_detection;

// A person whose 17 keypoints are labeled on a small grid around (x, y), spread `s` pixels.
CocoPerson make_person(int64_t id, double x, double y, double s, float area, int labeled = 17) {
  CocoPerson p;
  p.ann_id = id;
  for (int k = 0; k < 17; ++k) {
    if (k >= labeled) continue;
    p.keypoints[3 * k] = static_cast<float>(x + s * (k % 4));
    p.keypoints[3 * k + 1] = static_cast<float>(y + s * (k / 4));
    p.keypoints[3 * k + 2] = 2;
  }
  p.num_keypoints = labeled;
  p.bbox = {static_cast<float>(x), static_cast<float>(y), static_cast<float>(3 * s), static_cast<float>(4 * s)};
  p.area = area;
  return p;
}

CocoDataset one_image(std::vector<CocoPerson> persons, std::vector<CocoPerson> crowds = {}, int64_t id = 1) {
  CocoDataset ds;
  CocoImage im;
  im.id = id;
  im.width = 640;
  im.height = 480;
  im.persons = std::move(persons);
  for (auto& c : crowds) c.iscrowd = true;
  im.crowds = std::move(crowds);
  ds.images.push_back(im);
  return ds;
}

// ---- OKS ---------------------------------------------------------------------------------------
TEST(CocoEval, SigmasAreBitIdenticalToPycocotools) {
  const double lit[17] = {.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89};
  for (int k = 0; k < 17; ++k) EXPECT_EQ(oks_sigma(k), lit[k] / 10.0) << k;
}

TEST(CocoEval, OksHandComputed) {
  CocoPerson g;
  g.area = 400.f;
  g.num_keypoints = 2;
  g.keypoints[0] = 100;
  g.keypoints[1] = 100;
  g.keypoints[2] = 2;  // nose
  g.keypoints[15] = 120;
  g.keypoints[16] = 90;
  g.keypoints[17] = 1;  // left shoulder (occluded counts)
  std::array<float, 51> d{};
  d[0] = 103;
  d[1] = 96;  // nose off by (3,-4): d^2 = 25
  d[15] = 120;
  d[16] = 90;  // exact
  d[30] = 5;
  d[31] = 5;  // an unlabeled gt keypoint: ignored
  const double s0 = 0.026, s5 = 0.079;
  const double e0 = 25.0 / (4 * s0 * s0) / 400.0 / 2, e5 = 0.0;
  EXPECT_NEAR(compute_oks(g, d), (std::exp(-e0) + std::exp(-e5)) / 2, 1e-12);
  (void)s5;
}

TEST(CocoEval, OksWithoutLabeledKeypointsUsesDoubledBox) {
  CocoPerson g;  // crowd-style: no keypoints, box [10,20,30,40] -> region x [-20, 70], y [-20, 100]
  g.bbox = {10, 20, 30, 40};
  g.area = 1000.f;
  std::array<float, 51> d{};
  for (int k = 0; k < 17; ++k) {
    d[3 * k] = 50;
    d[3 * k + 1] = 50;
  }
  EXPECT_NEAR(compute_oks(g, d), 1.0, 1e-12);  // every keypoint inside the region
  d[0] = 80;                                   // nose 10 px right of x1 = 70
  const double e = 100.0 / (4 * .026 * .026) / 1000.0 / 2;
  EXPECT_NEAR(compute_oks(g, d), (16.0 + std::exp(-e)) / 17.0, 1e-12);
}

TEST(CocoEval, DetectionAreaIncludesPlaceholders) {
  std::array<float, 51> d{};
  for (int k = 0; k < 16; ++k) {
    d[3 * k] = 100 + k;
    d[3 * k + 1] = 200 + k;
    d[3 * k + 2] = 1;
  }
  // keypoint 16 missing at (0,0): box from (0,0) to (115,215)
  EXPECT_DOUBLE_EQ(detection_area(d), 115.0 * 215.0);
  auto b = detection_bbox(d);
  EXPECT_DOUBLE_EQ(b[0], 0.0);
  EXPECT_DOUBLE_EQ(b[3], 215.0);
}

TEST(CocoEval, ThresholdsAsNumpyLinspace) {
  EXPECT_EQ(iou_threshold(0), 0.5);
  EXPECT_EQ(iou_threshold(5), 0.75);
  EXPECT_EQ(iou_threshold(9), 0.95);
  EXPECT_EQ(recall_threshold(1), 0.01);
  EXPECT_EQ(recall_threshold(100), 1.0);
}

// ---- matching and AP ---------------------------------------------------------------------------
TEST(CocoEval, GroundTruthAsDetectionsGivesOne) {
  auto ds = one_image({make_person(1, 100, 100, 20, 5000.f), make_person(2, 300, 100, 40, 20000.f)});
  std::vector<Detection> dts = {as_detection(1, ds.images[0].persons[0], 0.4f),
                                as_detection(1, ds.images[0].persons[1], 0.9f)};
  auto r = evaluate_keypoints(ds, dts);
  for (int i = 0; i < 10; ++i) EXPECT_DOUBLE_EQ(r.stats[i], 1.0) << i;
}

TEST(CocoEval, FalsePositiveBetweenTruePositivesHandComputed) {
  auto ds = one_image({make_person(1, 100, 100, 20, 5000.f), make_person(2, 300, 100, 20, 5000.f)});
  auto far = make_person(9, 500, 300, 20, 5000.f);
  std::vector<Detection> dts = {as_detection(1, ds.images[0].persons[0], 0.9f), as_detection(1, far, 0.8f),
                                as_detection(1, ds.images[0].persons[1], 0.7f)};
  auto r = evaluate_keypoints(ds, dts);
  // rc = [.5, .5, 1], pr = [1, .5, 2/3] -> interpolated [1, 2/3, 2/3]: 51 recall thresholds <= .5 get 1,
  // the other 50 get 2/(3+eps).
  const double two_thirds = 2.0 / (3.0 + 2.220446049250313e-16);
  const double ap = (51.0 + 50.0 * two_thirds) / 101.0;
  EXPECT_NEAR(r.stats[0], ap, 1e-12);
  EXPECT_NEAR(r.stats[1], ap, 1e-12);
  EXPECT_NEAR(r.stats[3], ap, 1e-12);  // both gt are medium (area 5000)
  EXPECT_DOUBLE_EQ(r.stats[4], -1.0);  // no large gt
  EXPECT_DOUBLE_EQ(r.stats[5], 1.0);   // recall
  EXPECT_DOUBLE_EQ(r.stats[9], -1.0);
}

TEST(CocoEval, PerturbedKeypointsMatchOnlyAtLowThresholds) {
  // Shift every keypoint by 3 px on a gt of area 5000: OKS = mean exp(-9 / (8 sigma^2 area)).
  auto ds = one_image({make_person(1, 100, 100, 20, 5000.f)});
  auto d = as_detection(1, ds.images[0].persons[0], 0.9f, 3, 0);
  const double oks = compute_oks(ds.images[0].persons[0], d.keypoints);
  double expect = 0;
  const double sig[17] = {.026, .025, .025, .035, .035, .079, .079, .072, .072,
                          .062, .062, .107, .107, .087, .087, .089, .089};
  for (double s : sig) expect += std::exp(-9.0 / (8 * s * s * 5000.0));
  EXPECT_NEAR(oks, expect / 17, 1e-12);
  auto r = evaluate_keypoints(ds, {d});
  int passed = 0;
  for (int t = 0; t < kNumIouThrs; ++t) passed += oks >= iou_threshold(t) ? 1 : 0;
  ASSERT_GT(passed, 0);
  ASSERT_LT(passed, 10);
  // One detection, one gt: precision 1 at the thresholds it passes, 0 elsewhere.
  EXPECT_NEAR(r.stats[0], passed / 10.0, 1e-12);
  EXPECT_NEAR(r.stats[5], passed / 10.0, 1e-12);
}

TEST(CocoEval, GreedyMatchingByScoreTakesBestOksAndBlocksReuse) {
  // Two gts close together; the best-scoring detection sits on gt 2 but a bit off; the second
  // detection is exactly on gt 2 too -> it cannot take gt 2 again and is a false positive.
  auto ds = one_image({make_person(1, 100, 100, 20, 5000.f), make_person(2, 104, 100, 20, 5000.f)});
  const auto& g2 = ds.images[0].persons[1];
  std::vector<Detection> dts = {as_detection(1, g2, 0.9f, 1, 0), as_detection(1, g2, 0.5f)};
  auto r = evaluate_keypoints(ds, dts);
  // At t=.5 both detections match (the second takes gt 1, within 4 px); at .95 only ... compute:
  const double o11 = compute_oks(ds.images[0].persons[0], dts[0].keypoints);
  const double o12 = compute_oks(g2, dts[0].keypoints);
  EXPECT_GT(o12, o11);  // dt 1 prefers gt 2
  // Recall at IoU .5 = 1 needs the second detection to match gt 1.
  const double o21 = compute_oks(ds.images[0].persons[0], dts[1].keypoints);
  EXPECT_DOUBLE_EQ(r.recall_at(0, 0), o21 >= 0.5 ? 1.0 : 0.5);
  for (int t = 0; t < kNumIouThrs; ++t) {
    const double thr = iou_threshold(t);
    double expect_recall = 0;
    if (o12 >= thr)
      expect_recall += 0.5;
    else if (o11 >= thr)
      expect_recall += 0.5;  // falls back to gt 1
    const bool first_took_g2 = o12 >= thr;
    const bool second_matches = first_took_g2 ? o21 >= thr : (o11 >= thr ? 1.0 >= thr : true);
    if (second_matches) expect_recall += 0.5;
    EXPECT_DOUBLE_EQ(r.recall_at(t, 0), expect_recall) << "t=" << t;
  }
}

TEST(CocoEval, CrowdRegionsAndKeypointlessPeopleAreIgnored) {
  CocoPerson crowd = make_person(50, 400, 100, 0, 9000.f, 0);
  crowd.bbox = {400, 100, 100, 100};
  CocoPerson nokp = make_person(51, 250, 300, 0, 3000.f, 0);
  nokp.bbox = {250, 300, 40, 80};
  auto real = make_person(1, 100, 100, 20, 5000.f);
  auto ds = one_image({real, nokp}, {crowd});
  // High-scoring detections inside the crowd region (several: a crowd can absorb many) and on the
  // keypoint-less person, the real person detected with the lowest score.
  auto in_crowd = make_person(0, 420, 120, 10, 1.f);
  auto on_nokp = make_person(0, 255, 305, 5, 1.f);
  std::vector<Detection> dts = {as_detection(1, in_crowd, 0.95f), as_detection(1, in_crowd, 0.9f, 5, 5),
                                as_detection(1, on_nokp, 0.85f), as_detection(1, real, 0.1f)};
  auto r = evaluate_keypoints(ds, dts);
  EXPECT_EQ(r.num_gt, 3);
  EXPECT_EQ(r.num_ignored_gt, 2);
  EXPECT_DOUBLE_EQ(r.stats[0], 1.0);
  // Same detections with the crowd turned into a normal keypoint-less... no: a labeled person far
  // away makes the crowd detections false positives -> AP drops.
  auto ds2 = one_image({real, make_person(2, 900, 900, 20, 5000.f)});
  auto r2 = evaluate_keypoints(ds2, dts);
  EXPECT_LT(r2.stats[0], 0.6);
}

TEST(CocoEval, MaxDetsKeepsTopTwentyPerImage) {
  auto ds = one_image({make_person(1, 100, 100, 20, 5000.f)});
  auto far = make_person(0, 500, 400, 10, 1.f);
  std::vector<Detection> dts;
  for (int i = 0; i < 20; ++i) dts.push_back(as_detection(1, far, 0.5f + 0.01f * i));
  dts.push_back(as_detection(1, ds.images[0].persons[0], 0.1f));  // 21st by score: dropped
  auto r = evaluate_keypoints(ds, dts);
  EXPECT_DOUBLE_EQ(r.stats[0], 0.0);
  EXPECT_DOUBLE_EQ(r.stats[5], 0.0);
  dts.pop_back();
  dts.push_back(as_detection(1, ds.images[0].persons[0], 0.55f));  // now in the top 20
  r = evaluate_keypoints(ds, dts);
  EXPECT_DOUBLE_EQ(r.stats[5], 1.0);
}

TEST(CocoEval, AreaRangesAndUnmatchedDetectionAreas) {
  // One medium gt; a false positive whose keypoint box is large (10000 px^2 > 96^2) outranks it.
  auto ds = one_image({make_person(1, 100, 100, 20, 2000.f)});
  auto big = make_person(0, 300, 300, 40, 1.f);  // keypoints span 120 x 160 -> area 19200: large
  std::vector<Detection> dts = {as_detection(1, big, 0.9f), as_detection(1, ds.images[0].persons[0], 0.5f)};
  EXPECT_GT(detection_area(dts[0].keypoints), 96.0 * 96.0);
  auto r = evaluate_keypoints(ds, dts);
  EXPECT_LT(r.stats[0], 1.0);          // 'all': the false positive counts
  EXPECT_DOUBLE_EQ(r.stats[3], 1.0);   // 'medium': unmatched detection outside the range is ignored
  EXPECT_DOUBLE_EQ(r.stats[4], -1.0);  // 'large': no gt
  EXPECT_DOUBLE_EQ(r.stats[9], -1.0);
}

TEST(CocoEval, ImagesWithoutPeople) {
  auto ds = one_image({make_person(1, 100, 100, 20, 5000.f)});
  CocoImage empty;
  empty.id = 7;
  ds.images.push_back(empty);
  CocoImage empty2;
  empty2.id = 3;
  ds.images.push_back(empty2);
  // No detections at all: AP 0 (gt exists), recall 0.
  auto r0 = evaluate_keypoints(ds, {});
  EXPECT_DOUBLE_EQ(r0.stats[0], 0.0);
  EXPECT_DOUBLE_EQ(r0.stats[5], 0.0);
  EXPECT_EQ(r0.num_images, 3);
  // A detection on an empty image, scored above the true positive, is a false positive.
  auto p = make_person(0, 10, 10, 10, 1.f);
  auto r = evaluate_keypoints(ds, {as_detection(7, p, 0.9f), as_detection(1, ds.images[0].persons[0], 0.5f)});
  EXPECT_NEAR(r.stats[0], (101 * 0.5) / 101 + 0 * 0, 1e-9 + 0.5 * 1e-12);  // pr [0, .5] -> .5 everywhere
  // No gt at all: every stat is -1.
  CocoDataset none;
  none.images.push_back(empty);
  auto rn = evaluate_keypoints(none, {as_detection(7, p, 0.9f)});
  for (double s : rn.stats) EXPECT_DOUBLE_EQ(s, -1.0);
}

TEST(CocoEval, DetectionOnUnknownImageIsAnErrorNamingTheSource) {
  auto ds = one_image({make_person(1, 100, 100, 20, 5000.f)});
  try {
    evaluate_keypoints(ds, {as_detection(42, ds.images[0].persons[0], 1.f)}, "dt.json");
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dt.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("42"), std::string::npos);
  }
}

TEST(CocoEval, SummaryBlockFormat) {
  std::array<double, 10> s = {0.5, 0.75049, 0.0, -1.0, 1.0, 0.12345, 0.9995, 0.5, 0.25, 0.0};
  const std::string expect =
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ] = 0.500\n"
      " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets= 20 ] = 0.750\n"
      " Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets= 20 ] = 0.000\n"
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets= 20 ] = -1.000\n"
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets= 20 ] = 1.000\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ] = 0.123\n"
      " Average Recall     (AR) @[ IoU=0.50      | area=   all | maxDets= 20 ] = 1.000\n"
      " Average Recall     (AR) @[ IoU=0.75      | area=   all | maxDets= 20 ] = 0.500\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets= 20 ] = 0.250\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets= 20 ] = 0.000\n";
  EXPECT_EQ(format_summary(s), expect);
}

// ---- files -------------------------------------------------------------------------------------
TEST(CocoResults, JsonRoundTripAndErrors) {
  auto dir = posekd::testing::temp_dir("infer-results");
  std::vector<Detection> dts(2);
  dts[0].image_id = 785;
  dts[0].score = 0.123456789f;
  for (int i = 0; i < 51; ++i) dts[0].keypoints[i] = 0.1f * i + 1e-3f;
  dts[1].image_id = 40083;
  dts[1].score = 7.5f;
  const auto path = (dir / "r.json").string();
  write_results_json(path, dts);
  auto back = read_results_json(path);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].image_id, 785);
  EXPECT_EQ(back[0].score, dts[0].score);  // bit-exact
  EXPECT_EQ(back[0].keypoints, dts[0].keypoints);
  EXPECT_EQ(back[1].image_id, 40083);

  // category filtering
  const auto p2 = (dir / "cat.json").string();
  std::ofstream(p2) << R"([{"image_id":1,"category_id":2,"keypoints":)"
                    << nlohmann::json(std::vector<float>(51, 0.f)).dump() << R"(,"score":1}])";
  int64_t dropped = 0;
  EXPECT_TRUE(read_results_json(p2, &dropped).empty());
  EXPECT_EQ(dropped, 1);

  const auto bad = (dir / "bad.json").string();
  std::ofstream(bad) << "[\n {\"image_id\": 1,\n  \"score\": }\n]";
  try {
    read_results_json(bad);
    FAIL();
  } catch (const posekd::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find(bad), std::string::npos);
    EXPECT_NE(w.find("line 3"), std::string::npos) << w;
  }
  const auto short_kp = (dir / "short.json").string();
  std::ofstream(short_kp) << R"([{"image_id":1,"category_id":1,"keypoints":[1,2,3],"score":1}])";
  EXPECT_THROW(read_results_json(short_kp), posekd::Error);
  EXPECT_THROW(read_results_json((dir / "missing.json").string()), posekd::Error);
  EXPECT_THROW(read_coco_gt_for_eval(bad), posekd::Error);
  std::filesystem::remove_all(dir);
}

TEST(CocoResults, ReadsCocoSampleGroundTruth) {
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  auto ds = read_coco_gt_for_eval(ann.string());
  ASSERT_EQ(ds.images.size(), 4u);
  EXPECT_EQ(ds.images[0].id, 785);
  EXPECT_EQ(ds.images[0].width, 640);
  EXPECT_EQ(ds.images[0].height, 425);
  size_t persons = 0, crowds = 0, nokp = 0;
  for (const auto& im : ds.images) {
    persons += im.persons.size();
    crowds += im.crowds.size();
    for (const auto& p : im.persons) nokp += p.num_keypoints == 0;
  }
  EXPECT_EQ(persons + crowds, 14u);
  EXPECT_EQ(nokp, 2u);
  const auto& p0 = ds.images[0].persons[0];
  EXPECT_EQ(p0.ann_id, 442619);
  EXPECT_EQ(p0.num_keypoints, 17);
  EXPECT_FLOAT_EQ(p0.area, 27789.11055f);
  EXPECT_FLOAT_EQ(p0.bbox[0], 280.79f);
}

std::vector<Detection> gt_as_detections(const CocoDataset& ds) {
  std::vector<Detection> dts;
  for (const auto& im : ds.images)
    for (const auto& p : im.persons)
      if (p.num_keypoints > 0) {
        Detection d;
        d.image_id = im.id;
        d.score = 1.f;
        for (int k = 0; k < 17; ++k)
          if (p.keypoints[3 * k + 2] > 0) {
            d.keypoints[3 * k] = p.keypoints[3 * k];
            d.keypoints[3 * k + 1] = p.keypoints[3 * k + 1];
            d.keypoints[3 * k + 2] = 1;
          }
        dts.push_back(d);
      }
  return dts;
}

TEST(CocoResults, CocoSampleGroundTruthAsDetectionsGivesOne) {
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  auto ds = read_coco_gt_for_eval(ann.string());
  auto r = evaluate_keypoints(ds, gt_as_detections(ds));
  for (int i = 0; i < 10; ++i) EXPECT_DOUBLE_EQ(r.stats[i], 1.0) << i;
}

// Noisy detections for every labeled person, plus misses, false positives and duplicates.
std::vector<Detection> noisy_detections(const CocoDataset& ds, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<Detection> dts;
  for (const auto& im : ds.images)
    for (const auto& p : im.persons) {
      if (p.num_keypoints == 0 || u(rng) < 0.1) continue;  // some misses
      const double sd = std::sqrt(std::max(p.area, 1.f)) * (0.005 + 0.06 * u(rng));
      for (int copy = 0; copy < (u(rng) < 0.25 ? 2 : 1); ++copy) {
        Detection d;
        d.image_id = im.id;
        d.score = static_cast<float>(u(rng));
        for (int k = 0; k < 17; ++k) {
          if (p.keypoints[3 * k + 2] == 0 || u(rng) < 0.1) continue;
          // Box-Muller, so the sequence does not depend on the standard library's normal_distribution.
          const double r = std::sqrt(-2 * std::log(1 - u(rng))), a = 2 * M_PI * u(rng);
          d.keypoints[3 * k] = static_cast<float>(p.keypoints[3 * k] + sd * r * std::cos(a));
          d.keypoints[3 * k + 1] = static_cast<float>(p.keypoints[3 * k + 1] + sd * r * std::sin(a));
          d.keypoints[3 * k + 2] = 1;
        }
        dts.push_back(d);
      }
    }
  for (const auto& im : ds.images)  // detections inside crowd regions (ignored when matched)
    for (const auto& c : im.crowds)
      for (int i = 0; i < 2; ++i) {
        Detection d;
        d.image_id = im.id;
        d.score = static_cast<float>(u(rng));
        for (int k = 0; k < 17; ++k) {
          d.keypoints[3 * k] = static_cast<float>(c.bbox[0] + c.bbox[2] * (1.4 * u(rng) - 0.2));
          d.keypoints[3 * k + 1] = static_cast<float>(c.bbox[1] + c.bbox[3] * (1.4 * u(rng) - 0.2));
          d.keypoints[3 * k + 2] = 1;
        }
        dts.push_back(d);
      }
  for (const auto& im : ds.images)  // false positives anywhere in the image; many on the last one
    for (int i = 0; i < (&im == &ds.images.back() ? 24 : 3); ++i) {
      Detection d;
      d.image_id = im.id;
      d.score = static_cast<float>(u(rng));
      const double cx = u(rng) * 500, cy = u(rng) * 300, s = 20 + 100 * u(rng);
      for (int k = 0; k < 17; ++k) {
        d.keypoints[3 * k] = static_cast<float>(cx + s * u(rng));
        d.keypoints[3 * k + 1] = static_cast<float>(cy + 2 * s * u(rng));
        d.keypoints[3 * k + 2] = 1;
      }
      dts.push_back(d);
    }
  return dts;
}

// The GT as posekd holds it (float values), written back so pycocotools sees identical numbers.
void write_gt_json(const CocoDataset& ds, const std::string& path) {
  nlohmann::json j;
  j["categories"] = {{{"id", 1}, {"name", "person"}, {"supercategory", "person"}}};
  j["images"] = nlohmann::json::array();
  j["annotations"] = nlohmann::json::array();
  for (const auto& im : ds.images) {
    j["images"].push_back({{"id", im.id}, {"file_name", im.file_name}, {"width", im.width}, {"height", im.height}});
    for (const auto* list : {&im.persons, &im.crowds})
      for (const auto& p : *list)
        j["annotations"].push_back({{"id", p.ann_id},
                                    {"image_id", im.id},
                                    {"category_id", 1},
                                    {"keypoints", p.keypoints},
                                    {"bbox", p.bbox},
                                    {"area", p.area},
                                    {"num_keypoints", p.num_keypoints},
                                    {"iscrowd", p.iscrowd ? 1 : 0}});
  }
  std::ofstream(path) << j.dump();
}

std::string python() {
  if (const char* p = std::getenv("POSEKD_PYTHON")) return p;
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

std::string run(const std::string& cmd, int* status) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  *status = pclose(f);
  return out;
}

TEST(CocoResults, StatsMatchPycocotools) {
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  int st = 0;
  run(python() + " -c 'import pycocotools.coco, pycocotools.cocoeval' 2>/dev/null", &st);
  if (st != 0)
    GTEST_SKIP() << "pycocotools is not importable by " << python()
                 << " (python3-pycocotools is not packaged in Debian 12; set POSEKD_PYTHON or PYTHONPATH to "
                    "a Python that has it to run this comparison)";
  auto ds = read_coco_gt_for_eval(ann.string());
  // Make the sample exercise every rule: crowd regions (two images), an image without people
  // (detections on it are false positives), and > 20 detections on one image (maxDets).
  CocoPerson crowd;
  crowd.ann_id = 900001;
  crowd.iscrowd = true;
  crowd.bbox = {20.f, 150.f, 120.f, 90.f};
  crowd.area = 6100.f;
  ds.images[0].crowds.push_back(crowd);
  crowd.ann_id = 900002;
  crowd.bbox = {380.f, 40.f, 150.f, 200.f};
  crowd.area = 21000.f;
  ds.images[3].crowds.push_back(crowd);
  CocoImage empty;
  empty.id = 12;
  empty.file_name = "empty.jpg";
  empty.width = 640;
  empty.height = 480;
  ds.images.insert(ds.images.begin() + 1, empty);
  auto dir = posekd::testing::temp_dir("infer-pycoco");
  const auto gt_path = (dir / "gt.json").string();
  write_gt_json(ds, gt_path);
  const auto script = (dir / "eval.py").string();
  std::ofstream(script) << "import sys\n"
                           "from pycocotools.coco import COCO\n"
                           "from pycocotools.cocoeval import COCOeval\n"
                           "gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])\n"
                           "E = COCOeval(gt, dt, 'keypoints'); E.evaluate(); E.accumulate(); E.summarize()\n"
                           "print('STATS ' + ' '.join(repr(float(s)) for s in E.stats))\n";
  for (unsigned seed : {1u, 2u, 3u, 4u}) {
    auto dts = noisy_detections(ds, seed);
    const auto dt_path = (dir / ("dt" + std::to_string(seed) + ".json")).string();
    write_results_json(dt_path, dts);
    const std::string out = run(python() + " " + script + " " + gt_path + " " + dt_path + " 2>&1", &st);
    ASSERT_EQ(st, 0) << out;
    auto r = evaluate_keypoints(ds, read_results_json(dt_path));
    // The printed block appears verbatim in pycocotools' output.
    EXPECT_NE(out.find(format_summary(r.stats)), std::string::npos) << out << "\nposekd:\n" << format_summary(r.stats);
    auto pos = out.find("STATS ");
    ASSERT_NE(pos, std::string::npos) << out;
    std::istringstream is(out.substr(pos + 6));
    for (int i = 0; i < 10; ++i) {
      double v = 0;
      is >> v;
      EXPECT_DOUBLE_EQ(r.stats[i], v) << "seed " << seed << " stat " << i;
    }
    EXPECT_GT(r.stats[0], 0.05);  // a meaningful, non-degenerate set
    EXPECT_LT(r.stats[0], 0.95);
    std::printf("seed %u: AP %.4f AP50 %.4f AR %.4f (%zu detections)\n", seed, r.stats[0], r.stats[1], r.stats[5],
                dts.size());
  }
  std::filesystem::remove_all(dir);
}

TEST(CocoResults, EvalCliScoresAResultsFile) {
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  if (!std::filesystem::exists(posekd::testing::cli())) GTEST_SKIP() << "posekd program not built";
  auto ds = read_coco_gt_for_eval(ann.string());
  auto dir = posekd::testing::temp_dir("infer-cli");
  const auto dt = (dir / "dt.json").string();
  write_results_json(dt, gt_as_detections(ds));
  int st = 0;
  std::string out =
      run(posekd::testing::cli() + " eval --ann " + ann.string() + " --results " + dt + " 2>/dev/null", &st);
  EXPECT_EQ(st, 0);
  std::array<double, 10> ones;
  ones.fill(1.0);
  EXPECT_EQ(out, format_summary(ones));
  // A results file naming an unknown image: non-zero exit and a one-line error naming the file.
  write_results_json(dt, {Detection{99, {}, 1.f}});
  out = run(posekd::testing::cli() + " eval --ann " + ann.string() + " --results " + dt + " 2>&1", &st);
  EXPECT_NE(st, 0);
  EXPECT_NE(out.find(dt), std::string::npos) << out;
  EXPECT_NE(out.find("99"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
