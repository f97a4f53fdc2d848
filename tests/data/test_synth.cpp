// Synthetic people generator: determinism, COCO consistency, left/right, occlusion, crowds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"
#include "posekd/data/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace posekd::data;

namespace {

constexpr double kPi = 3.14159265358979323846;
// COCO-17 indices.
constexpr int kNose = 0, kLEye = 1, kREye = 2, kLEar = 3, kREar = 4, kLSho = 5, kRSho = 6, kLHip = 11, kRHip = 12;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

nlohmann::json load_json(const fs::path& p) {
  std::ifstream f(p);
  nlohmann::json j;
  f >> j;
  return j;
}

SynthConfig small_config(int images, uint64_t seed) {
  SynthConfig c;
  c.images = images;
  c.seed = seed;
  c.min_people = 1;
  c.max_people = 4;
  c.crowd_rate = 0.2;
  return c;
}

// A T-pose person (arms out, legs straight) facing `yaw`.
SynthPerson t_pose(double x, double y, double height, double yaw) {
  SynthRng rng(3);
  SynthPerson p = sample_person(rng, x, y, height);
  p.yaw = yaw;
  p.roll = 0;
  p.pose = BodyPose{};
  for (int i = 0; i < 2; ++i) {
    p.pose.arm_elev[i] = kPi / 2;
    p.pose.hip_abd[i] = 0.1;
  }
  return p;
}

int v_of(const CocoPerson& a, int k) { return int(a.keypoints[3 * k + 2]); }

}  // namespace

TEST(SynthRng, UniformMatchesTheDocumentedFormulaAndRanges) {
  SynthRng r(42);
  std::mt19937_64 ref(42);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(r.uniform(), double(ref() >> 11) / 9007199254740992.0);
  SynthRng a(7);
  std::set<int> seen;
  double sum = 0, sum2 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int k = a.uniform_int(-2, 3);
    ASSERT_GE(k, -2);
    ASSERT_LE(k, 3);
    seen.insert(k);
    const double g = a.normal(1.0, 2.0);
    sum += g;
    sum2 += g * g;
  }
  EXPECT_EQ(seen.size(), 6u);
  const double mean = sum / n, var = sum2 / n - mean * mean;
  EXPECT_NEAR(mean, 1.0, 0.06);  // 4 standard errors
  EXPECT_NEAR(std::sqrt(var), 2.0, 0.06);
  EXPECT_NE(synth_mix(1), synth_mix(2));
}

TEST(Synth, SameSeedGivesIdenticalBytesDifferentSeedDiffers) {
  const auto d1 = posekd::testing::temp_dir("synth-a"), d2 = posekd::testing::temp_dir("synth-b"),
             d3 = posekd::testing::temp_dir("synth-c");
  generate_synth(d1.string(), small_config(8, 11), small_config(3, 12));
  generate_synth(d2.string(), small_config(8, 11), small_config(3, 12));
  generate_synth(d3.string(), small_config(8, 13), small_config(3, 12));
  int files = 0, differing = 0;
  for (const auto& e : fs::recursive_directory_iterator(d1)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), d1);
    ASSERT_TRUE(fs::exists(d2 / rel)) << rel;
    EXPECT_EQ(slurp(e.path()), slurp(d2 / rel)) << rel;
    if (rel.parent_path() == "train" || rel.filename() == "person_keypoints_train.json")
      differing += slurp(e.path()) != slurp(d3 / rel);
    ++files;
  }
  EXPECT_EQ(files, 8 + 3 + 2);
  EXPECT_EQ(differing, 8 + 1);  // every train image and the train JSON change with the seed
  // val used the same seed in d3: identical
  EXPECT_EQ(slurp(d1 / "annotations/person_keypoints_val.json"), slurp(d3 / "annotations/person_keypoints_val.json"));
  for (const auto& d : {d1, d2, d3}) fs::remove_all(d);
}

TEST(Synth, CocoJsonIsValidAndConsistent) {
  const auto dir = posekd::testing::temp_dir("synth-json");
  SynthConfig train = small_config(60, 5), val = small_config(10, 6);
  train.max_people = 5;
  generate_synth(dir.string(), train, val);
  int64_t totals[3] = {0, 0, 0};  // v = 0 (with the person annotated), 1, 2
  int persons = 0, crowds = 0;
  for (const std::string split : {"train", "val"}) {
    const auto j = load_json(dir / "annotations" / ("person_keypoints_" + split + ".json"));
    ASSERT_TRUE(j["images"].is_array());
    ASSERT_EQ(j["categories"].size(), 1u);
    const auto& cat = j["categories"][0];
    EXPECT_EQ(cat["id"], 1);
    ASSERT_EQ(cat["keypoints"].size(), 17u);
    for (int k = 0; k < 17; ++k) EXPECT_EQ(cat["keypoints"][k], std::string(posekd::skeleton::kCocoNames[k]));
    EXPECT_EQ(cat["skeleton"].size(), 19u);
    std::map<int64_t, std::pair<int, int>> sizes;
    for (const auto& im : j["images"]) {
      const int64_t id = im["id"];
      ASSERT_EQ(sizes.count(id), 0u) << "duplicate image id " << id;
      sizes[id] = {im["width"], im["height"]};
      const cv::Mat img = cv::imread((dir / split / im["file_name"].get<std::string>()).string());
      ASSERT_FALSE(img.empty());
      EXPECT_EQ(img.cols, im["width"]);
      EXPECT_EQ(img.rows, im["height"]);
    }
    EXPECT_EQ(int(sizes.size()), split == "train" ? 60 : 10);
    std::set<int64_t> ann_ids;
    for (const auto& a : j["annotations"]) {
      ASSERT_TRUE(ann_ids.insert(a["id"].get<int64_t>()).second) << "duplicate annotation id";
      ASSERT_EQ(sizes.count(a["image_id"].get<int64_t>()), 1u);
      const auto [w, h] = sizes[a["image_id"]];
      EXPECT_EQ(a["category_id"], 1);
      const auto& kp = a["keypoints"];
      ASSERT_EQ(kp.size(), 51u);
      const auto& bb = a["bbox"];
      const double bx = bb[0], by = bb[1], bw = bb[2], bh = bb[3];
      EXPECT_GE(bx, 0);
      EXPECT_GE(by, 0);
      EXPECT_LE(bx + bw, w);
      EXPECT_LE(by + bh, h);
      EXPECT_GT(bw, 0);
      EXPECT_GT(bh, 0);
      const double area = a["area"];
      EXPECT_GT(area, 0);
      EXPECT_LE(area, bw * bh + 1e-6);
      ASSERT_FALSE(a["segmentation"].empty());
      for (const auto& poly : a["segmentation"]) {
        EXPECT_GE(poly.size(), 6u);
        EXPECT_EQ(poly.size() % 2, 0u);
      }
      int labelled = 0;
      for (int k = 0; k < 17; ++k) {
        const double x = kp[3 * k], y = kp[3 * k + 1];
        const int v = kp[3 * k + 2];
        ASSERT_TRUE(v == 0 || v == 1 || v == 2);
        EXPECT_EQ(v == 0, x == 0 && y == 0) << "v=0 iff (0,0)";
        if (v == 0) continue;
        ++labelled;
        EXPECT_TRUE(x >= 0 && x < w && y >= 0 && y < h) << "labelled keypoint outside the image";
        EXPECT_TRUE(x >= bx && x <= bx + bw && y >= by && y <= by + bh) << "bbox misses a keypoint";
      }
      EXPECT_EQ(a["num_keypoints"], labelled);
      if (a["iscrowd"] == 1) {
        ++crowds;
        EXPECT_EQ(labelled, 0);
        EXPECT_EQ(a["segmentation"].size(), 1u);
      } else {
        ++persons;
        for (int k = 0; k < 17; ++k) ++totals[int(kp[3 * k + 2])];
      }
    }
  }
  EXPECT_GT(persons, 70);
  EXPECT_GT(crowds, 3);
  // Every label kind occurs: border-cut / turned-away (0), occluded (1), visible (2).
  EXPECT_GT(totals[0], 20);
  EXPECT_GT(totals[1], 20);
  EXPECT_GT(totals[2], totals[1]);
  fs::remove_all(dir);
}

TEST(Synth, PersonsLeftIsOnTheImageRightWhenFacingTheCamera) {
  // Pure geometry over random sampled people: in the body's own upright frame (undo the roll),
  // the left-minus-right offset of shoulders and hips has the sign of cos(yaw).
  SynthRng rng(99);
  int checked = 0;
  for (int i = 0; i < 2000; ++i) {
    const SynthPerson p = sample_person(rng, 80, 60, 100);
    const BodyKeypoints kp = pose_keypoints(p);
    const double c = std::cos(p.yaw);
    auto dx = [&](int l, int r) {
      const double x = kp.p[l].x - kp.p[r].x, y = kp.p[l].y - kp.p[r].y;
      return x * std::cos(p.roll) + y * std::sin(p.roll);
    };
    if (std::fabs(c) > 0.2) {
      EXPECT_GT(dx(kLHip, kRHip) * c, 0) << "hips, yaw " << p.yaw;
      ++checked;
    }
    if (std::fabs(c) > 0.5) {
      EXPECT_GT(dx(kLSho, kRSho) * c, 0) << "shoulders, yaw " << p.yaw;
    }
    // the face is labelable only on the side of the head that faces the camera
    if (c > 0.95 && std::fabs(p.pose.head_yaw) < 0.3) {
      EXPECT_TRUE(kp.labelable[kNose]);
    }
    if (c < -0.95 && std::fabs(p.pose.head_yaw) < 0.3) {
      EXPECT_FALSE(kp.labelable[kNose] || kp.labelable[kLEye]);
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(Synth, FrontAndBackViewsAreLabelledConsistently) {
  for (const double yaw : {0.0, kPi}) {
    SynthScene sc;
    sc.plain_background = true;
    sc.people.push_back(t_pose(80, 60, 100, yaw));
    const SynthImage im = render_scene(sc);
    ASSERT_EQ(im.persons.size(), 1u);
    const CocoPerson& a = im.persons[0];
    const float* k = a.keypoints.data();
    if (yaw == 0.0) {  // facing us: the person's right is on the image's left, face visible
      EXPECT_LT(k[3 * kRSho], k[3 * kLSho]);
      EXPECT_LT(k[3 * kRHip], k[3 * kLHip]);
      EXPECT_LT(k[3 * kREye], k[3 * kLEye]);
      EXPECT_LT(k[3 * kREar], k[3 * kLEar]);
      for (int c : {kNose, kLEye, kREye, kLEar, kREar}) EXPECT_EQ(v_of(a, c), 2) << c;
      // eyes are dark marks on a skin-coloured face
      const cv::Vec3b eye = im.image.at<cv::Vec3b>(int(k[3 * kLEye + 1]), int(k[3 * kLEye]));
      EXPECT_LT(eye[0] + eye[1] + eye[2], 3 * 90);
    } else {  // seen from behind: mirrored, no face, ears still labelled
      EXPECT_GT(k[3 * kRSho], k[3 * kLSho]);
      EXPECT_GT(k[3 * kRHip], k[3 * kLHip]);
      EXPECT_GT(k[3 * kREar], k[3 * kLEar]);
      for (int c : {kNose, kLEye, kREye}) EXPECT_EQ(v_of(a, c), 0) << c;
      for (int c : {kLEar, kREar}) EXPECT_EQ(v_of(a, c), 2) << c;
    }
    for (int c = 5; c < 17; ++c) EXPECT_EQ(v_of(a, c), 2) << "T-pose joint " << c;
  }
}

TEST(Synth, SideViewsHideTheFarSide) {
  // Standing straight, seen from the side: the far shoulder, hip, knee and ankle are behind the
  // body (v=1), the near knee and ankle are visible, the nose (profile tip) and near eye labelled.
  for (const double yaw : {kPi / 2, -kPi / 2}) {
    SynthRng rng(3);
    SynthScene sc;
    sc.plain_background = true;
    SynthPerson p = sample_person(rng, 80, 60, 100);
    p.yaw = yaw;  // +pi/2 faces the image's right: the person's left side is far
    p.roll = 0;
    p.pose = BodyPose{};
    sc.people.push_back(p);
    const SynthImage im = render_scene(sc);
    ASSERT_EQ(im.persons.size(), 1u);
    const CocoPerson& a = im.persons[0];
    const int far = yaw > 0 ? 0 : 1, near = 1 - far;  // 0 = left, 1 = right (COCO: left = odd)
    for (int j : {5, 11, 13, 15}) EXPECT_EQ(v_of(a, j + far), 1) << "far " << j + far;
    for (int j : {5, 13, 15}) EXPECT_EQ(v_of(a, j + near), 2) << "near " << j + near;
    EXPECT_EQ(v_of(a, kNose), 2);
    EXPECT_EQ(v_of(a, kLEye + near), 2);
    EXPECT_EQ(v_of(a, kLEye + far), 0);
    // the nose points the way the person faces
    EXPECT_EQ(v_of(a, kLEar + near), 2);
    EXPECT_EQ(v_of(a, kLEar + far), 0);
    const double ear_x = a.keypoints[3 * (kLEar + near)];
    EXPECT_GT((a.keypoints[3 * kNose] - ear_x) * yaw, 0);
  }
}

TEST(Synth, KeypointsCoveredByANearerPersonAreOccluded) {
  SynthScene sc;
  sc.plain_background = true;
  sc.people.push_back(t_pose(80, 58, 90, 0.0));   // far
  sc.people.push_back(t_pose(62, 64, 104, 0.3));  // near, covers the far person's right side
  const SynthImage im = render_scene(sc);
  ASSERT_EQ(im.persons.size(), 2u);
  ASSERT_EQ(im.person_index[0], 0);
  const CocoPerson& far = im.persons[0];
  const cv::Mat& near_mask = im.masks[1];
  const BodyKeypoints kp = pose_keypoints(sc.people[0]);
  int occluded = 0, visible = 0;
  for (int c = 0; c < 17; ++c) {
    const int v = v_of(far, c);
    ASSERT_NE(v, 0) << c;  // all inside the image and facing us
    EXPECT_NEAR(far.keypoints[3 * c], kp.p[c].x, 0.01);
    const bool covered = near_mask.at<uchar>(int(kp.p[c].y), int(kp.p[c].x)) != 0;
    EXPECT_EQ(v, covered ? 1 : 2) << "keypoint " << c;
    (v == 1 ? occluded : visible)++;
  }
  EXPECT_GE(occluded, 3);
  EXPECT_GE(visible, 3);
  for (int c = 5; c < 17; ++c) EXPECT_EQ(v_of(im.persons[1], c), 2);  // nothing covers the near one
  // The far person's area is its visible part only.
  EXPECT_EQ(far.area, float(cv::countNonZero(im.masks[0] & ~im.masks[1])));
  EXPECT_LT(far.area, float(cv::countNonZero(im.masks[0])));
}

TEST(Synth, PeopleCutByTheBorderHaveUnlabelledOutsideKeypoints) {
  SynthScene sc;
  sc.plain_background = true;
  sc.people.push_back(t_pose(4, 70, 110, 0.0));  // pelvis near the left border, feet below the bottom
  const SynthImage im = render_scene(sc);
  ASSERT_EQ(im.persons.size(), 1u);
  const BodyKeypoints kp = pose_keypoints(sc.people[0]);
  int outside = 0, inside = 0;
  for (int c = 0; c < 17; ++c) {
    const bool in = kp.p[c].x >= 0 && kp.p[c].x < sc.width && kp.p[c].y >= 0 && kp.p[c].y < sc.height;
    const float* k = im.persons[0].keypoints.data() + 3 * c;
    if (in) {
      EXPECT_EQ(k[2], 2.f) << c;
      ++inside;
    } else {
      EXPECT_EQ(k[0], 0.f);
      EXPECT_EQ(k[1], 0.f);
      EXPECT_EQ(k[2], 0.f);
      ++outside;
    }
  }
  EXPECT_GE(outside, 4);
  EXPECT_GE(inside, 4);
  EXPECT_EQ(im.persons[0].num_keypoints, inside);
}

TEST(Synth, CrowdRegionsAppearAtTheConfiguredRate) {
  SynthConfig c = small_config(150, 21);
  c.min_people = 0;
  c.max_people = 1;
  c.crowd_rate = 0.4;
  int with_crowd = 0;
  for (int i = 0; i < c.images; ++i) {
    const SynthImage im = generate_synth_image(c, i);
    with_crowd += !im.crowds.empty();
    for (const auto& cr : im.crowds) {
      EXPECT_TRUE(cr.iscrowd);
      EXPECT_EQ(cr.num_keypoints, 0);
      ASSERT_EQ(cr.segmentation.polygons.size(), 1u);
      EXPECT_GE(cr.segmentation.polygons[0].size(), 6u);
      EXPECT_GT(cr.area, 20.f);  // a group of people, not a speck
    }
  }
  // Binomial(150, 0.4): mean 60, sd 6; accept 4 sd.
  EXPECT_GE(with_crowd, 36);
  EXPECT_LE(with_crowd, 84);
  c.crowd_rate = 0;
  c.images = 40;
  for (int i = 0; i < c.images; ++i) EXPECT_TRUE(generate_synth_image(c, i).crowds.empty());
}

TEST(Synth, PeopleCountAndSizeFollowTheConfig) {
  SynthConfig c = small_config(30, 8);
  c.min_people = 2;
  c.max_people = 3;
  c.crowd_rate = 0;
  c.width = 96;
  c.width_max = 128;
  c.height = 80;
  c.height_max = 80;
  for (int i = 0; i < c.images; ++i) {
    const SynthScene sc = sample_scene(c, synth_mix(i));
    EXPECT_GE(sc.people.size(), 2u);
    EXPECT_LE(sc.people.size(), 3u);
    EXPECT_GE(sc.width, 96);
    EXPECT_LE(sc.width, 128);
    EXPECT_EQ(sc.height, 80);
    for (size_t k = 1; k < sc.people.size(); ++k)  // far to near: roughly growing
      EXPECT_LT(sc.people[k - 1].height, sc.people[k].height * 1.36);
  }
}

TEST(Synth, BadConfigAndUnwritableFolderAreClearErrors) {
  SynthConfig bad = small_config(2, 1);
  bad.min_people = 3;
  bad.max_people = 1;
  EXPECT_THROW(validate_synth_config(bad, "--train"), posekd::Error);
  bad = small_config(-1, 1);
  EXPECT_THROW(validate_synth_config(bad, "--train"), posekd::Error);
  const auto dir = posekd::testing::temp_dir("synth-bad");
  const fs::path file = dir / "a_file";
  std::ofstream(file) << "x";
  try {
    generate_synth(file.string(), small_config(1, 1), small_config(1, 2));
    FAIL() << "no error for a file as output folder";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
  }
  EXPECT_THROW(contact_sheet((dir / "missing").string(), "train", 4), posekd::Error);
  fs::remove_all(dir);
}

TEST(Synth, ContactSheetTilesTheImages) {
  const auto dir = posekd::testing::temp_dir("synth-sheet");
  generate_synth(dir.string(), small_config(5, 2), small_config(1, 3));
  const cv::Mat sheet = contact_sheet(dir.string(), "train", 6, 3, 2);
  // 5 images of 160x120 at 2x, 3 per row, 2 px padding
  EXPECT_EQ(sheet.cols, 3 * (320 + 2) + 2);
  EXPECT_EQ(sheet.rows, 2 * (240 + 2) + 2);
  fs::remove_all(dir);
}

TEST(Synth, CliWritesTheSameTrainSplitAsTheLibrary) {
  const std::string exe = posekd::testing::cli();
  if (!fs::exists(exe)) GTEST_SKIP() << "posekd program not built (" << exe << ")";
  const auto dir = posekd::testing::temp_dir("synth-cli"), ref = posekd::testing::temp_dir("synth-cli-ref");
  const std::string cmd = exe + " synth --out " + dir.string() + " --train 4 --val 2 --seed 9 --contact-sheet " +
                          (dir / "sheet.png").string() + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  SynthConfig t;
  t.images = 4;
  t.seed = 9;
  SynthConfig v = t;
  v.images = 0;
  generate_synth(ref.string(), t, v);
  EXPECT_EQ(slurp(dir / "annotations/person_keypoints_train.json"),
            slurp(ref / "annotations/person_keypoints_train.json"));
  EXPECT_EQ(load_json(dir / "annotations/person_keypoints_val.json")["images"].size(), 2u);
  EXPECT_FALSE(cv::imread((dir / "sheet.png").string()).empty());
  fs::remove_all(dir);
  fs::remove_all(ref);
}

TEST(Synth, ClutterAndYawKnobsDefaultToTheHardDataAndEaseIt) {
  const SynthConfig def;
  EXPECT_EQ(def.clutter, 1.0);
  EXPECT_EQ(def.max_yaw, kPi);
  SynthConfig easy = small_config(8, 31);
  easy.clutter = 0;
  easy.max_yaw = 0.5;
  SynthConfig same = small_config(8, 31);
  same.clutter = 1.0;  // explicit default: the same images
  int differ = 0;
  for (int i = 0; i < 8; ++i) {
    const SynthImage a = generate_synth_image(small_config(8, 31), i), b = generate_synth_image(same, i);
    EXPECT_EQ(cv::norm(a.image, b.image, cv::NORM_L1), 0.0) << i;
    const SynthImage e = generate_synth_image(easy, i);
    differ += cv::norm(a.image, e.image, cv::NORM_L1) > 0;
    const SynthScene sc = sample_scene(easy, synth_mix(easy.seed ^ synth_mix(uint64_t(i) + 0x51ED2701ULL)));
    for (const auto& p : sc.people) EXPECT_LE(std::fabs(p.yaw), 0.5);
    EXPECT_EQ(sc.clutter, 0.0);
  }
  EXPECT_GT(differ, 0);
  SynthConfig bad = small_config(1, 1);
  bad.clutter = -1;
  EXPECT_THROW(validate_synth_config(bad, "demo"), posekd::Error);
  bad = small_config(1, 1);
  bad.max_yaw = 4;
  EXPECT_THROW(validate_synth_config(bad, "demo"), posekd::Error);
}
