// COCO JSON loading: the real coco-sample file, segmentations, bad values, malformed JSON, cache.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"
#include "test_util.h"

namespace {
namespace fs = std::filesystem;
using namespace posekd::data;

TEST(CocoJson, LoadsCocoSample) {
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  auto ds = load_coco(ann.string(), "imgs");
  EXPECT_EQ(ds.image_dir, "imgs");
  ASSERT_EQ(ds.images.size(), 4u);
  EXPECT_EQ(ds.skipped_annotations, 0);
  std::vector<int64_t> ids;
  size_t persons = 0, crowds = 0;
  for (const auto& im : ds.images) {
    ids.push_back(im.id);
    persons += im.persons.size();
    crowds += im.crowds.size();
  }
  EXPECT_EQ(ids, (std::vector<int64_t>{785, 40083, 196141, 197388}));
  EXPECT_EQ(persons, 14u);
  EXPECT_EQ(crowds, 0u);  // coco-sample has no iscrowd=1 annotation
  const auto& im = ds.images[1];
  EXPECT_EQ(im.file_name, "000000040083.jpg");
  EXPECT_EQ(im.width, 500);
  EXPECT_EQ(im.height, 333);
  ASSERT_EQ(im.persons.size(), 3u);
  EXPECT_EQ(im.persons[0].ann_id, 198196);
  EXPECT_EQ(im.persons[0].num_keypoints, 14);
  EXPECT_EQ(im.persons[2].ann_id, 1202706);
  EXPECT_EQ(im.persons[2].num_keypoints, 0);
  EXPECT_NEAR(im.persons[0].area, 11025.219f, 1e-2);
  // keypoints18 of the fixture: person 0 nose at (25.344, 36.864) / 0.256 = (99, 144), visible.
  EXPECT_EQ(im.persons[0].keypoints[0], 99.f);
  EXPECT_EQ(im.persons[0].keypoints[1], 144.f);
  EXPECT_EQ(im.persons[0].keypoints[2], 2.f);
  EXPECT_TRUE(ds.images[3].persons[1].segmentation.empty());  // persons' polygons are not kept
}

TEST(CocoJson, SubsetCountsImagesWithKeypointPersons) {
  auto dir = posekd::testing::temp_dir("coco-subset");
  nlohmann::json j;
  j["images"] = nlohmann::json::array();
  for (int i = 1; i <= 3; ++i)
    j["images"].push_back({{"id", i}, {"file_name", std::to_string(i) + ".jpg"}, {"width", 10}, {"height", 10}});
  std::vector<int> kp(51, 0);
  j["annotations"] = {{{"id", 10}, {"image_id", 1}, {"iscrowd", 0}, {"num_keypoints", 0}, {"keypoints", kp}},
                      {{"id", 11}, {"image_id", 2}, {"iscrowd", 0}, {"num_keypoints", 1}, {"keypoints", kp}},
                      {{"id", 12}, {"image_id", 3}, {"iscrowd", 0}, {"num_keypoints", 3}, {"keypoints", kp}}};
  posekd::testing::write_text(dir / "a.json", j.dump());
  CocoLoadOptions o;
  EXPECT_EQ(load_coco((dir / "a.json").string(), "", o).images.size(), 3u);
  o.subset = 1;
  auto ds = load_coco((dir / "a.json").string(), "", o);
  ASSERT_EQ(ds.images.size(), 1u);
  EXPECT_EQ(ds.images[0].id, 2);  // image 1 has only a keypoint-less person
  o.subset = 5;
  EXPECT_EQ(load_coco((dir / "a.json").string(), "", o).images.size(), 2u);
  fs::remove_all(dir);
}

TEST(CocoJson, SegmentationsPolygonRleAndCompressedRle) {
  auto dir = posekd::testing::temp_dir("coco-seg");
  // Annotations before images (allowed in JSON); crowd with uncompressed RLE, crowd with the
  // compressed string "325O" = [3, 2, 5, 1] (deltas only from the 4th run on) and "T3" = [100]; a person with a
  // polygon.
  posekd::testing::write_text(dir / "s.json", R"({"annotations":[
    {"id":1,"image_id":7,"iscrowd":1,"segmentation":{"size":[3,4],"counts":[2,5,5]},"area":5,"bbox":[0,0,2,3]},
    {"id":2,"image_id":7,"iscrowd":1,"segmentation":{"size":[3,4],"counts":"325O"}},
    {"id":3,"image_id":7,"iscrowd":1,"segmentation":{"size":[10,10],"counts":"T3"}},
    {"id":4,"image_id":7,"iscrowd":0,"num_keypoints":1,"segmentation":[[1,1,3,1,3,3]],
     "keypoints":[5,5,2,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]},
    {"id":5,"image_id":7,"category_id":2,"iscrowd":0},
    {"id":6,"image_id":7,"iscrowd":1,"segmentation":[[1,1,3,1,3,3],[0,0,1,0,1,1]]}],
    "images":[{"id":7,"file_name":"x.jpg","width":4,"height":3,"extra":{"nested":[1,[2,3]]}}]})");
  auto ds = load_coco((dir / "s.json").string(), "");
  ASSERT_EQ(ds.images.size(), 1u);
  const auto& im = ds.images[0];
  ASSERT_EQ(im.crowds.size(), 4u);
  ASSERT_EQ(im.persons.size(), 1u);  // category 2 ignored
  EXPECT_EQ(ds.skipped_annotations, 0);
  EXPECT_EQ(im.crowds[0].segmentation.rle_counts, (std::vector<uint32_t>{2, 5, 5}));
  EXPECT_EQ(im.crowds[0].segmentation.rle_h, 3);
  EXPECT_EQ(im.crowds[0].segmentation.rle_w, 4);
  EXPECT_EQ(im.crowds[1].segmentation.rle_counts, (std::vector<uint32_t>{3, 2, 5, 1}));
  EXPECT_EQ(im.crowds[2].segmentation.rle_counts, (std::vector<uint32_t>{100}));
  EXPECT_EQ(im.crowds[3].segmentation.polygons,
            (std::vector<std::vector<float>>{{1, 1, 3, 1, 3, 3}, {0, 0, 1, 0, 1, 1}}));
  EXPECT_TRUE(im.crowds[3].segmentation.rle_counts.empty());
  EXPECT_TRUE(im.persons[0].segmentation.empty());  // not kept for persons
  EXPECT_EQ(im.persons[0].keypoints[0], 5.f);
  EXPECT_THROW(decode_rle_string("3 2"), posekd::Error);
  fs::remove_all(dir);
}

TEST(CocoJson, BadValuesAreCountedNotFatal) {
  auto dir = posekd::testing::temp_dir("coco-bad");
  std::string kp51 = "[";
  for (int i = 0; i < 51; ++i) kp51 += (i ? ",0" : "0");
  kp51 += "]";
  posekd::testing::write_text(dir / "b.json", R"({"images":[
      {"id":1,"file_name":"a.jpg","width":100,"height":50},
      {"id":2,"file_name":"b.jpg","width":-3,"height":50},
      {"id":3,"file_name":7,"width":10,"height":10},
      {"id":1,"file_name":"dup.jpg","width":10,"height":10},
      "not an object"],
    "annotations":[
      {"id":1,"image_id":1,"iscrowd":0,"num_keypoints":1,"keypoints":)" +
                                                  kp51 + R"(},
      {"id":2,"image_id":99,"iscrowd":0,"num_keypoints":1,"keypoints":)" +
                                                  kp51 + R"(},
      {"id":3,"image_id":1,"iscrowd":0,"num_keypoints":1,"keypoints":"oops"},
      {"id":4,"image_id":1,"iscrowd":0,"num_keypoints":1,"keypoints":[1,2,3]},
      {"id":5,"image_id":1,"iscrowd":0,"num_keypoints":1,"keypoints":)" +
                                                  kp51 + R"(,"bbox":[0,0,-1,5]},
      {"id":6,"image_id":1,"iscrowd":0,"num_keypoints":1,"keypoints":)" +
                                                  kp51 + R"(,"area":-5},
      {"id":7,"image_id":"1","iscrowd":0},
      {"id":8,"image_id":1,"iscrowd":0,"num_keypoints":2,"keypoints":[500,20,2,)" +
                                                  kp51.substr(1, kp51.size() - 8) + R"(]},
      {"id":9,"image_id":1,"iscrowd":1,"segmentation":{"counts":[1,2]}}]})");
  CocoDataset ds;
  ASSERT_NO_THROW(ds = load_coco((dir / "b.json").string(), ""));
  ASSERT_EQ(ds.images.size(), 1u);
  EXPECT_EQ(ds.images[0].file_name, "a.jpg");
  // 4 bad image records + 7 bad annotations (ids 2,3,4,5,6,7,9); id 8 is kept (keypoint outside).
  EXPECT_EQ(ds.skipped_annotations, 11);
  ASSERT_EQ(ds.images[0].persons.size(), 2u);
  EXPECT_EQ(ds.images[0].persons[1].ann_id, 8);
  EXPECT_FALSE(ds.warnings.empty());
  bool outside_warned = false, unknown_warned = false;
  for (const auto& w : ds.warnings) {
    outside_warned |= w.find("1 labeled keypoints lie outside") != std::string::npos;
    unknown_warned |= w.find("unknown image id 99") != std::string::npos;
  }
  EXPECT_TRUE(outside_warned);
  EXPECT_TRUE(unknown_warned);
  fs::remove_all(dir);
}

TEST(CocoJson, MalformedJsonNamesFileLineColumn) {
  auto dir = posekd::testing::temp_dir("coco-malformed");
  auto p = (dir / "m.json").string();
  posekd::testing::write_text(p, "{\n  \"images\": [\n    {\"id\": 1,, }\n  ]\n}\n");
  try {
    load_coco(p, "");
    FAIL() << "no error";
  } catch (const posekd::Error& e) {
    std::string w = e.what();
    EXPECT_EQ(w.rfind(p + ":3:14: malformed JSON", 0), 0u) << w;
    EXPECT_EQ(w.find('\n'), std::string::npos);
  }
  posekd::testing::write_text(p, "");
  EXPECT_THROW(load_coco(p, ""), posekd::Error);
  posekd::testing::write_text(p, "{\"images\": [");  // truncated
  try {
    load_coco(p, "");
    FAIL() << "no error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find(p + ":1:"), std::string::npos) << e.what();
  }
  try {
    load_coco((dir / "missing.json").string(), "");
    FAIL() << "no error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.json"), std::string::npos);
  }
  fs::remove_all(dir);
}

bool same(const CocoDataset& a, const CocoDataset& b) {
  if (a.images.size() != b.images.size() || a.skipped_annotations != b.skipped_annotations || a.warnings != b.warnings)
    return false;
  auto same_p = [](const CocoPerson& x, const CocoPerson& y) {
    return x.ann_id == y.ann_id && x.keypoints == y.keypoints && x.bbox == y.bbox && x.area == y.area &&
           x.num_keypoints == y.num_keypoints && x.iscrowd == y.iscrowd &&
           x.segmentation.polygons == y.segmentation.polygons &&
           x.segmentation.rle_counts == y.segmentation.rle_counts && x.segmentation.rle_h == y.segmentation.rle_h &&
           x.segmentation.rle_w == y.segmentation.rle_w;
  };
  for (size_t i = 0; i < a.images.size(); ++i) {
    const auto &x = a.images[i], &y = b.images[i];
    if (x.id != y.id || x.file_name != y.file_name || x.width != y.width || x.height != y.height ||
        x.persons.size() != y.persons.size() || x.crowds.size() != y.crowds.size())
      return false;
    for (size_t k = 0; k < x.persons.size(); ++k)
      if (!same_p(x.persons[k], y.persons[k])) return false;
    for (size_t k = 0; k < x.crowds.size(); ++k)
      if (!same_p(x.crowds[k], y.crowds[k])) return false;
  }
  return true;
}

TEST(CocoJson, BinaryCacheRoundTripAndStaleness) {
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  auto dir = posekd::testing::temp_dir("coco-cache");
  auto json_path = dir / "person_keypoints_val2017.json";
  fs::copy_file(ann, json_path);
  // Add a crowd with compressed RLE so every field kind goes through the cache.
  {
    std::ifstream in(json_path);
    nlohmann::json j = nlohmann::json::parse(in);
    j["annotations"].push_back({{"id", 1},
                                {"image_id", 785},
                                {"iscrowd", 1},
                                {"category_id", 1},
                                {"segmentation", {{"size", {425, 640}}, {"counts", "T3"}}}});
    posekd::testing::write_text(json_path, j.dump(1));
  }
  CocoLoadOptions o;
  o.cache_dir = (dir / "cache").string();
  const std::string cache = coco_cache_path(json_path.string(), o.cache_dir);
  EXPECT_EQ(cache, (dir / "cache" / "person_keypoints_val2017.posekd-coco").string());
  auto direct = load_coco(json_path.string(), "i");
  ASSERT_FALSE(fs::exists(cache));
  auto first = load_coco(json_path.string(), "i", o);  // builds the cache
  ASSERT_TRUE(fs::exists(cache));
  auto second = load_coco(json_path.string(), "i", o);  // reads it
  EXPECT_TRUE(same(direct, first));
  EXPECT_TRUE(same(direct, second));
  EXPECT_EQ(second.images[0].crowds.size(), 1u);
  EXPECT_EQ(second.annotation_path, json_path.string());

  // Proof that the cache is used: same size and mtime, different content -> cached content.
  auto mtime = fs::last_write_time(json_path);
  std::string text;
  {
    std::ifstream in(json_path, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto pos = text.find("\"file_name\": \"000000000785.jpg\"");
  ASSERT_NE(pos, std::string::npos);
  std::string edited = text;
  edited.replace(pos + 14, 16, "000000000786.jpg");
  posekd::testing::write_text(json_path, edited);
  fs::last_write_time(json_path, mtime);
  EXPECT_EQ(load_coco(json_path.string(), "i", o).images[0].file_name, "000000000785.jpg");
  o.use_cache = false;
  EXPECT_EQ(load_coco(json_path.string(), "i", o).images[0].file_name, "000000000786.jpg");
  o.use_cache = true;

  // Stale: a new mtime -> rebuilt from the JSON, and the rebuilt cache is then used.
  fs::last_write_time(json_path, mtime + std::chrono::seconds(5));
  EXPECT_EQ(load_coco(json_path.string(), "i", o).images[0].file_name, "000000000786.jpg");
  EXPECT_EQ(load_coco(json_path.string(), "i", o).images[0].file_name, "000000000786.jpg");

  // Corrupt (truncated) cache -> rebuilt, no crash.
  fs::resize_file(cache, fs::file_size(cache) / 2);
  auto rebuilt = load_coco(json_path.string(), "i", o);
  EXPECT_EQ(rebuilt.images.size(), 4u);
  EXPECT_GT(fs::file_size(cache), 100u);
  fs::remove_all(dir);
}

}  // namespace
