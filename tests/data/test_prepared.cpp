// The Lightweight-OpenPose repository's prepared_train_annotation.pkl (a pickle written here by
// Debian's python3) read into a CocoDataset; compressed RLE strings.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/prepared.h"
#include "posekd/io/value.h"
#include "test_util.h"

namespace {

using posekd::io::Value;
namespace fs = std::filesystem;

bool has_python3() { return std::system("python3 -c 'import pickle' >/dev/null 2>&1") == 0; }

int run_prepared_script(const fs::path& dir, const std::string& script, std::string* out) {
  std::ofstream(dir / "script.py") << script;
  const int rc = std::system(
      ("python3 '" + (dir / "script.py").string() + "' > '" + (dir / "script.out").string() + "' 2>&1").c_str());
  *out = posekd::testing::read_text(dir / "script.out");
  return rc;
}

TEST(Prepared, ReadsPreparedAnnotationPickle) {
  if (!has_python3()) GTEST_SKIP() << "python3 is not available; cannot generate a prepared annotation pickle";
  auto dir = posekd::testing::temp_dir("prepared");
  std::string out;
  // Two images; image 10 has two samples that list each other as others, plus a third person that
  // never became a sample; one crowd RLE (uncompressed) and one compressed-string RLE.
  std::string script = R"(
import pickle
def kp(base, v):
    return [[base + i, base + 2 * i, v] for i in range(17)]
def other(bb, base, v):
    return {'objpos': [bb[0] + bb[2] / 2, bb[1] + bb[3] / 2], 'bbox': bb, 'segment_area': 1500.5,
            'scale_provided': bb[3] / 368, 'num_keypoints': 12, 'keypoints': kp(base, v)}
A = ([10, 20, 50, 100], 1, 1)
B = ([100, 30, 40, 90], 50, 0)
C = ([200, 40, 10, 20], 90, 2)
def sample(img, w, h, me, others, segs):
    d = other(me[0], me[1], me[2])
    d.update({'img_paths': img, 'img_width': w, 'img_height': h, 'image_id': int(img[:3]),
              'processed_other_annotations': [other(*o) for o in others], 'segmentations': segs})
    return d
crowd = {'counts': [2, 3, 7], 'size': [3, 4]}
crowd_s = {'counts': '1233', 'size': [1, 11]}   # runs 1, 2, 3, 5 (compressed form, delta-coded)
samples = [sample('100.jpg', 640, 480, A, [B, C], [crowd, crowd_s]),
           sample('200.jpg', 320, 240, C, [], []),
           sample('100.jpg', 640, 480, B, [A, C], [crowd, crowd_s])]
pickle.dump(samples, open(')" +
                       (dir / "prep.pkl").string() + R"(', 'wb'))
)";
  ASSERT_EQ(run_prepared_script(dir, script, &out), 0) << out;
  auto ds = posekd::data::load_prepared_annotations((dir / "prep.pkl").string());
  ASSERT_EQ(ds.images.size(), 2u);
  const auto& a = ds.images[0];
  EXPECT_EQ(a.id, 100);
  EXPECT_EQ(a.file_name, "100.jpg");
  EXPECT_EQ(a.width, 640);
  EXPECT_EQ(a.height, 480);
  ASSERT_EQ(a.persons.size(), 3u);  // A, B, C de-duplicated
  EXPECT_EQ(a.persons[0].bbox[0], 10.f);
  EXPECT_EQ(a.persons[1].bbox[0], 100.f);
  EXPECT_EQ(a.persons[2].bbox[0], 200.f);
  EXPECT_FLOAT_EQ(a.persons[0].area, 1500.5f);
  EXPECT_EQ(a.persons[0].num_keypoints, 12);
  // Keypoint 3 of A: x = 1 + 3, y = 1 + 6, internal v 1 (visible) -> COCO 2.
  EXPECT_EQ(a.persons[0].keypoints[9], 4.f);
  EXPECT_EQ(a.persons[0].keypoints[10], 7.f);
  EXPECT_EQ(a.persons[0].keypoints[11], 2.f);
  EXPECT_EQ(a.persons[1].keypoints[2], 1.f);  // internal 0 (occluded) -> COCO 1
  EXPECT_EQ(a.persons[2].keypoints[2], 0.f);  // internal 2 (not labeled) -> COCO 0
  ASSERT_EQ(a.crowds.size(), 2u);
  EXPECT_TRUE(a.crowds[0].iscrowd);
  EXPECT_EQ(a.crowds[0].segmentation.rle_h, 3);
  EXPECT_EQ(a.crowds[0].segmentation.rle_w, 4);
  EXPECT_EQ(a.crowds[0].segmentation.rle_counts, (std::vector<uint32_t>{2, 3, 7}));
  EXPECT_EQ(a.crowds[1].segmentation.rle_counts, (std::vector<uint32_t>{1, 2, 3, 5}));
  const auto& b = ds.images[1];
  EXPECT_EQ(b.id, 200);
  ASSERT_EQ(b.persons.size(), 1u);
  EXPECT_TRUE(b.crowds.empty());
}

TEST(Prepared, RleStringDecodingAndErrors) {
  // pycocotools encodes [1, 2, 3, 5] as "1233" (runs from the 4th on are deltas to run i-2).
  EXPECT_EQ(posekd::data::decode_rle_string("1233", "t"), (std::vector<uint32_t>{1, 2, 3, 5}));
  EXPECT_EQ(posekd::data::decode_rle_string("123", "t"), (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_THROW(posekd::data::decode_rle_string("1\x7f", "t"), posekd::Error);
  EXPECT_THROW(posekd::data::decode_rle_string("h", "t"), posekd::Error);  // continuation bit, then end
  // Wrong structure: a list of ints instead of sample dicts.
  Value bad = Value::list({Value::integer(3)});
  try {
    posekd::data::prepared_to_dataset(bad, "p.pkl");
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("p.pkl: sample 0: expected dict, got int"), std::string::npos) << e.what();
  }
}

}  // namespace
