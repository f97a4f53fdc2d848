// Augmentation: the drawn parameters, the affine map, and that the image, keypoints, targets and
// crowd mask all move together; determinism across workers and exact resume.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <filesystem>

#include "posekd/core/skeleton.h"
#include "posekd/data/augment.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/keypoints.h"
#include "posekd/data/loader.h"
#include "posekd/data/sample.h"
#include "posekd/data/synth.h"
#include "test_util.h"

namespace {
namespace fs = std::filesystem;
using namespace posekd::data;

AugmentConfig on() {
  AugmentConfig c;
  c.enabled = true;
  return c;
}

// A person with only COCO keypoint `k` labelled (visible) at (x, y).
CocoPerson one_point_person(int k, float x, float y) {
  CocoPerson p;
  p.keypoints[3 * k] = x;
  p.keypoints[3 * k + 1] = y;
  p.keypoints[3 * k + 2] = 2;
  p.num_keypoints = 1;
  p.bbox = {x - 5, y - 5, 10, 10};
  p.area = 100;
  return p;
}

// Writes a white w x h PNG with black 3x3 dots at `dots`; returns the file name.
std::string write_dots(const fs::path& dir, const std::string& name, int w, int h, const std::vector<cv::Point>& dots) {
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(255, 255, 255));
  for (const auto& d : dots) cv::rectangle(img, d - cv::Point(1, 1), d + cv::Point(1, 1), cv::Scalar(0, 0, 0), -1);
  cv::imwrite((dir / name).string(), img);
  return name;
}

// The darkest pixel of a prepared [3,S,S] image (sum over channels).
cv::Point2d darkest(const torch::Tensor& image) {
  auto s = image.sum(0);
  const int64_t S = s.size(1);
  const int64_t i = s.argmin().item<int64_t>();
  return {static_cast<double>(i % S), static_cast<double>(i / S)};
}

cv::Point2d apply(const cv::Mat& m, double x, double y) {
  return {m.at<double>(0, 0) * x + m.at<double>(0, 1) * y + m.at<double>(0, 2),
          m.at<double>(1, 0) * x + m.at<double>(1, 1) * y + m.at<double>(1, 2)};
}

TEST(Augment, DrawIsAFunctionOfSeedViewAndImage) {
  const AugmentConfig c = on();
  const AugmentParams a = draw_augment(c, 5, 2, 1234), b = draw_augment(c, 5, 2, 1234);
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.angle_deg, b.angle_deg);
  EXPECT_EQ(a.flip, b.flip);
  EXPECT_EQ(a.hue_deg, b.hue_deg);
  EXPECT_NE(a.angle_deg, draw_augment(c, 5, 3, 1234).angle_deg);
  EXPECT_NE(a.angle_deg, draw_augment(c, 5, 2, 1235).angle_deg);
  EXPECT_NE(a.angle_deg, draw_augment(c, 6, 2, 1234).angle_deg);
  // Within the configured ranges, and both flip outcomes over many images.
  int flips = 0;
  for (int i = 0; i < 400; ++i) {
    const AugmentParams p = draw_augment(c, 1, 0, i);
    EXPECT_GE(p.scale, c.scale_min);
    EXPECT_LE(p.scale, c.scale_max);
    EXPECT_LE(std::abs(p.angle_deg), c.rotate_deg);
    EXPECT_LE(std::abs(p.shift_x), c.shift);
    EXPECT_LE(std::abs(p.brightness), c.brightness);
    flips += p.flip;
  }
  EXPECT_GT(flips, 150);
  EXPECT_LT(flips, 250);
  // Disabled: the identity.
  const AugmentParams id = draw_augment(AugmentConfig{}, 5, 2, 1234);
  EXPECT_EQ(id.scale, 1);
  EXPECT_EQ(id.angle_deg, 0);
  EXPECT_FALSE(id.flip);
  // Views cycle with the epoch.
  AugmentConfig v = c;
  v.views = 3;
  EXPECT_EQ(augment_view(v, 7), 1);
  EXPECT_EQ(augment_view(c, 7), 7);
}

TEST(Augment, AffineGoldenValues) {
  // 200x100 picture into 128: letterbox scale 0.64; centre (99.5, 49.5) -> (63.5, 63.5).
  AugmentParams p;
  cv::Mat m = augment_affine(p, 200, 100, 128);
  auto c = apply(m, 99.5, 49.5);
  EXPECT_NEAR(c.x, 63.5, 1e-9);
  EXPECT_NEAR(c.y, 63.5, 1e-9);
  auto r = apply(m, 199.5, 49.5);  // right edge centre
  EXPECT_NEAR(r.x, 63.5 + 64, 1e-9);
  // 90 degrees: right of the centre goes up on the screen (y decreases); flip mirrors x about 63.5.
  p.angle_deg = 90;
  m = augment_affine(p, 200, 100, 128);
  r = apply(m, 109.5, 49.5);
  EXPECT_NEAR(r.x, 63.5, 1e-9);
  EXPECT_NEAR(r.y, 63.5 - 6.4, 1e-9);
  p.angle_deg = 0;
  p.flip = true;
  p.scale = 2;
  p.shift_x = 0.25;
  m = augment_affine(p, 200, 100, 128);
  r = apply(m, 109.5, 49.5);  // 10 px right at scale 1.28, shifted right by 32, then mirrored
  EXPECT_NEAR(r.x, 127 - (63.5 + 32 + 12.8), 1e-9);
  EXPECT_NEAR(r.y, 63.5, 1e-9);
}

TEST(Augment, ADotDrawnAtAKeypointLandsWhereTheAugmentedKeypointSays) {
  const fs::path dir = posekd::testing::temp_dir("aug-dot");
  CocoImage im;
  im.id = 1;
  im.width = 200;
  im.height = 100;
  im.file_name = write_dots(dir, "dot.png", 200, 100, {{60, 40}});
  im.persons.push_back(one_point_person(0, 60, 40));  // nose
  SampleConfig sc;
  sc.augment = on();
  for (int trial = 0; trial < 12; ++trial) {
    AugmentParams p = draw_augment(sc.augment, 3, 0, trial);
    p.brightness = 0;  // keep black black and white white for the darkest-pixel search
    p.contrast = 1;
    p.blur_sigma = 0;
    p.scale = std::max(p.scale, 0.8);
    const Sample s = prepare_sample(im, dir.string(), sc, &p);
    ASSERT_TRUE(s.ok) << s.error;
    const cv::Mat m = augment_affine(p, 200, 100, 128);
    const cv::Point2d want = apply(m, 60, 40);
    if (want.x < 2 || want.y < 2 || want.x > 125 || want.y > 125) continue;  // moved out of the picture
    const cv::Point2d got = darkest(s.image);
    EXPECT_LE(std::hypot(got.x - want.x, got.y - want.y), 1.5) << "trial " << trial;
    // The nose heatmap peaks in the cell whose centre (8 gx + 3.5) is nearest the keypoint.
    const int64_t i = s.heatmaps[0].argmax().item<int64_t>();
    EXPECT_LE(std::abs(static_cast<double>(i % 16) * 8 + 3.5 - want.x), 8.0) << "trial " << trial;
    EXPECT_LE(std::abs(static_cast<double>(i / 16) * 8 + 3.5 - want.y), 8.0) << "trial " << trial;
  }
  fs::remove_all(dir);
}

TEST(Augment, FlipSwapsLeftAndRightAndTurnsThePafs) {
  const fs::path dir = posekd::testing::temp_dir("aug-flip");
  CocoImage im;
  im.id = 2;
  im.width = im.height = 128;
  im.file_name = write_dots(dir, "flat.png", 128, 128, {});
  // A whole upright person, left side at larger x (facing the camera).
  CocoPerson p;
  const float xy[17][2] = {{64, 20}, {60, 16}, {68, 16}, {56, 18}, {72, 18}, {50, 34}, {78, 34},  {44, 52}, {84, 52},
                           {40, 70}, {88, 70}, {54, 72}, {74, 72}, {52, 94}, {76, 94}, {50, 116}, {78, 116}};
  for (int k = 0; k < 17; ++k) {
    p.keypoints[3 * k] = xy[k][0];
    p.keypoints[3 * k + 1] = xy[k][1];
    p.keypoints[3 * k + 2] = 2;
  }
  p.num_keypoints = 17;
  p.bbox = {38, 14, 52, 104};
  p.area = 5000;
  im.persons.push_back(p);
  SampleConfig sc;
  sc.augment = on();
  AugmentParams a, b;  // the identity (picture centred) and the same flipped
  b.flip = true;
  const Sample sa = prepare_sample(im, dir.string(), sc, &a), sb = prepare_sample(im, dir.string(), sc, &b);
  ASSERT_TRUE(sa.ok && sb.ok);
  // Heatmaps: channel c of the flipped sample is the mirror image of channel flip(c).
  std::array<int, 19> partner{};
  for (int c = 0; c < 19; ++c) partner[c] = c;
  for (const auto& pr : posekd::skeleton::kFlipPairs) {
    partner[pr[0]] = pr[1];
    partner[pr[1]] = pr[0];
  }
  for (int c = 0; c < 19; ++c)
    EXPECT_TRUE(torch::allclose(sb.heatmaps[c], sa.heatmaps[partner[c]].flip({1}), 1e-4, 1e-5)) << "channel " << c;
  EXPECT_GT(sa.heatmaps[2].max().item<float>(), 0.9);  // the channels are not empty
  // PAFs: limb (a, b) of the flipped sample is limb (flip(a), flip(b)) of the original turned with the
  // picture: its mean x component changes sign, its mean y component stays. (Upstream draws PAFs on
  // the grid without a half-cell shift, so the fields are not exact mirror images cell by cell.)
  auto mean_xy = [](const torch::Tensor& paf, int l) {
    auto x = paf[2 * l], y = paf[2 * l + 1];
    auto on = (x.abs() + y.abs()) > 0;
    const double n = on.sum().item<double>();
    return std::array<double, 3>{n, x.sum().item<double>() / std::max(1.0, n),
                                 y.sum().item<double>() / std::max(1.0, n)};
  };
  int compared = 0;
  for (int l = 0; l < 19; ++l) {
    const auto& lb = posekd::skeleton::kLimbs[l];
    for (int m = 0; m < 19; ++m) {
      const auto& lm = posekd::skeleton::kLimbs[m];
      if (lm.a != partner[lb.a] || lm.b != partner[lb.b]) continue;
      const auto o = mean_xy(sa.pafs, m), f = mean_xy(sb.pafs, l);
      ASSERT_GT(o[0], 0) << "limb " << m << " is drawn";
      EXPECT_NEAR(f[1], -o[1], 0.05) << "limb " << l;
      EXPECT_NEAR(f[2], o[2], 0.05) << "limb " << l;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 19);
  // The left wrist of the original (COCO 9, drawn at x 40) is the right wrist after the flip.
  Keypoints18 k18 = convert_keypoints(p, 128, 128);
  const cv::Mat m = augment_affine(b, 128, 128, 128);
  Keypoints18 f18 = transform_keypoints(k18, m, true);
  int lw = -1, rw = -1;
  for (int k = 0; k < 18; ++k) {
    if (posekd::skeleton::kOpenPoseToCoco[k] == 9) lw = k;
    if (posekd::skeleton::kOpenPoseToCoco[k] == 10) rw = k;
  }
  ASSERT_GE(lw, 0);
  ASSERT_GE(rw, 0);
  EXPECT_NEAR(f18[rw][0], 127 - 40, 1e-6);
  EXPECT_NEAR(f18[lw][0], 127 - 88, 1e-6);
  fs::remove_all(dir);
}

TEST(Augment, PafVectorsTurnWithTheImage) {
  const fs::path dir = posekd::testing::temp_dir("aug-rot");
  CocoImage im;
  im.id = 3;
  im.width = im.height = 128;
  im.file_name = write_dots(dir, "flat.png", 128, 128, {});
  CocoPerson p;  // one long horizontal limb: right shoulder (COCO 6) to right elbow (COCO 8)
  p.keypoints[3 * 6] = 34;
  p.keypoints[3 * 6 + 1] = 64;
  p.keypoints[3 * 6 + 2] = 2;
  p.keypoints[3 * 8] = 94;
  p.keypoints[3 * 8 + 1] = 64;
  p.keypoints[3 * 8 + 2] = 2;
  p.num_keypoints = 2;
  p.bbox = {30, 60, 70, 8};
  p.area = 500;
  im.persons.push_back(p);
  SampleConfig sc;
  sc.augment = on();
  AugmentParams a, b;
  b.angle_deg = 30;
  const Sample sa = prepare_sample(im, dir.string(), sc, &a), sb = prepare_sample(im, dir.string(), sc, &b);
  ASSERT_TRUE(sa.ok && sb.ok);
  auto direction = [](const torch::Tensor& paf) {  // angle of the summed vector over all limbs
    const double x = paf.index({torch::indexing::Slice(0, 38, 2)}).sum().item<double>();
    const double y = paf.index({torch::indexing::Slice(1, 38, 2)}).sum().item<double>();
    return std::atan2(y, x) * 180 / 3.14159265358979323846;
  };
  const double da = direction(sa.pafs), db = direction(sb.pafs);
  // The map turns points counter-clockwise on the screen: y down, so the angle decreases by 30.
  EXPECT_NEAR(std::remainder(db - da, 360.0), -30.0, 1.0);
  fs::remove_all(dir);
}

TEST(Augment, TheCrowdMaskFollowsTheImage) {
  const fs::path dir = posekd::testing::temp_dir("aug-crowd");
  CocoImage im;
  im.id = 4;
  im.width = im.height = 128;
  im.file_name = write_dots(dir, "flat.png", 128, 128, {});
  im.persons.push_back(one_point_person(0, 64, 64));
  CocoPerson crowd;  // the left quarter of the picture
  crowd.iscrowd = true;
  crowd.segmentation.polygons = {{0, 0, 32, 0, 32, 128, 0, 128}};
  im.crowds.push_back(crowd);
  SampleConfig sc;
  sc.augment = on();
  AugmentParams a, b;
  b.flip = true;
  const Sample sa = prepare_sample(im, dir.string(), sc, &a), sb = prepare_sample(im, dir.string(), sc, &b);
  ASSERT_TRUE(sa.ok && sb.ok);
  // Identity: the crowd columns 0..3 are masked, the rest used; flipped: columns 12..15.
  EXPECT_EQ(sa.mask[0].index({torch::indexing::Slice(), torch::indexing::Slice(0, 3)}).sum().item<float>(), 0);
  EXPECT_EQ(sa.mask[0].index({torch::indexing::Slice(), torch::indexing::Slice(5, 16)}).min().item<float>(), 1);
  EXPECT_TRUE(torch::equal(sb.mask[0], sa.mask[0].flip({1})));
  fs::remove_all(dir);
}

// A small synthetic COCO folder (people drawn by `posekd synth`).
CocoDataset synth_dataset(const fs::path& dir, int n) {
  SynthConfig tr, va;
  tr.images = n;
  tr.min_people = 1;
  va.images = 1;
  generate_synth(dir.string(), tr, va);
  return load_coco((dir / "annotations" / "person_keypoints_train.json").string(), (dir / "train").string());
}

TEST(Augment, LoaderBatchesDoNotDependOnWorkersAndResumeMidEpochContinuesTheStream) {
  const fs::path dir = posekd::testing::temp_dir("aug-loader");
  const CocoDataset ds = synth_dataset(dir, 10);
  SampleConfig sc;
  sc.augment = on();
  sc.augment.views = 0;
  Loader l0(ds, sc, 3, 11, 0), l3(ds, sc, 3, 11, 3);
  std::vector<Batch> first;
  for (int i = 0; i < 5; ++i) {  // 15 samples: across the epoch boundary at 10
    Batch a = l0.next(), b = l3.next();
    EXPECT_EQ(a.image_ids, b.image_ids);
    EXPECT_EQ(a.views, b.views);
    EXPECT_TRUE(torch::equal(a.image, b.image)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a.heatmaps, b.heatmaps)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a.mask, b.mask)) << "batch " << i;
    first.push_back(a);
  }
  // Epoch 1 sees a different view of an image than epoch 0.
  EXPECT_EQ(first[4].views.back(), 1);
  // A loader resumed from the state after batch 2 (mid-epoch) yields batches 3 and 4 again.
  Loader base(ds, sc, 3, 11, 2);
  (void)base.next();
  (void)base.next();
  Loader resumed(ds, sc, 3, 11, 1, 4, base.state());
  for (int i = 2; i < 5; ++i) {
    Batch r = resumed.next();
    EXPECT_EQ(r.image_ids, first[i].image_ids);
    EXPECT_TRUE(torch::equal(r.image, first[i].image)) << "batch " << i;
    EXPECT_TRUE(torch::equal(r.pafs, first[i].pafs)) << "batch " << i;
  }
  // Without augmentation the images differ from the augmented ones.
  Loader plain(ds, SampleConfig{}, 3, 11, 0);
  EXPECT_FALSE(torch::equal(plain.next().image, first[0].image));
  fs::remove_all(dir);
}

TEST(Augment, PhotometricChangesColoursNotGeometry) {
  cv::Mat img(8, 8, CV_8UC3, cv::Scalar(40, 120, 200));
  AugmentParams p;
  p.brightness = 0.1;  // +25.5
  p.contrast = 1.5;
  cv::Mat a = img.clone();
  photometric(a, p, 0);
  // (x - 128) * 1.5 + 128 + 25.5
  EXPECT_EQ(a.at<cv::Vec3b>(3, 3)[0], cv::saturate_cast<uchar>((40 - 128) * 1.5 + 128 + 25.5));
  EXPECT_EQ(a.at<cv::Vec3b>(3, 3)[2], cv::saturate_cast<uchar>((200 - 128) * 1.5 + 128 + 25.5));
  AugmentParams h;
  h.hue_deg = 60;
  cv::Mat b = img.clone();
  photometric(b, h, 0);
  EXPECT_NE(b.at<cv::Vec3b>(0, 0), img.at<cv::Vec3b>(0, 0));
  AugmentParams g;
  g.saturation = 0;  // grey: the three channels equal
  cv::Mat c = img.clone();
  photometric(c, g, 0);
  EXPECT_NEAR(c.at<cv::Vec3b>(0, 0)[0], c.at<cv::Vec3b>(0, 0)[2], 1);
}

}  // namespace
