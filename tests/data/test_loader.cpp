// Loader: determinism across worker counts, exact resume, bad samples, crowd masks, shutdown.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/loader.h"
#include "test_util.h"

namespace {
namespace fs = std::filesystem;
using namespace posekd::data;

CocoDataset sample_dataset() {
  auto ann = posekd::testing::fixture_path("coco-sample/annotations/person_keypoints_val2017.json");
  if (ann.empty()) return {};
  return load_coco(ann.string(), (ann.parent_path().parent_path() / "val2017").string());
}

void expect_same(const Batch& a, const Batch& b, const std::string& what) {
  EXPECT_EQ(a.image_ids, b.image_ids) << what;
  EXPECT_EQ(a.epoch, b.epoch) << what;
  EXPECT_TRUE(torch::equal(a.image, b.image)) << what;
  EXPECT_TRUE(torch::equal(a.heatmaps, b.heatmaps)) << what;
  EXPECT_TRUE(torch::equal(a.pafs, b.pafs)) << what;
  EXPECT_TRUE(torch::equal(a.mask, b.mask)) << what;
}

TEST(Loader, EpochsVisitEverySampleOnce) {
  auto ds = sample_dataset();
  if (ds.images.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample is absent";
  Loader l(ds, SampleConfig{}, 2, 7, 0);
  EXPECT_EQ(l.num_samples(), 4);
  EXPECT_EQ(l.batches_per_epoch(), 2);
  for (int e = 0; e < 2; ++e) {
    std::multiset<int64_t> ids;
    for (int b = 0; b < 2; ++b) {
      Batch batch = l.next();
      EXPECT_EQ(batch.epoch, e);
      ASSERT_EQ(batch.image.sizes(), (std::vector<int64_t>{2, 3, 128, 128}));
      ASSERT_EQ(batch.heatmaps.sizes(), (std::vector<int64_t>{2, 19, 16, 16}));
      ASSERT_EQ(batch.pafs.sizes(), (std::vector<int64_t>{2, 38, 16, 16}));
      ASSERT_EQ(batch.mask.sizes(), (std::vector<int64_t>{2, 1, 16, 16}));
      ids.insert(batch.image_ids.begin(), batch.image_ids.end());
    }
    EXPECT_EQ(ids, (std::multiset<int64_t>{785, 40083, 196141, 197388})) << "epoch " << e;
  }
  auto st = l.state();
  EXPECT_EQ(st.epoch, 2);
  EXPECT_EQ(st.position, 0);
}

TEST(Loader, PermutationDependsOnSeedAndEpoch) {
  auto a = Loader::epoch_permutation(1, 0, 100);
  EXPECT_EQ(a, Loader::epoch_permutation(1, 0, 100));
  EXPECT_NE(a, Loader::epoch_permutation(2, 0, 100));
  EXPECT_NE(a, Loader::epoch_permutation(1, 1, 100));
  auto s = a;
  std::sort(s.begin(), s.end());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(s[i], i);
}

TEST(Loader, WorkersDoNotChangeTheBatches) {
  auto ds = sample_dataset();
  if (ds.images.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample is absent";
  Loader l0(ds, SampleConfig{}, 3, 42, 0);
  Loader l3(ds, SampleConfig{}, 3, 42, 3, 2);
  for (int b = 0; b < 5; ++b) expect_same(l0.next(), l3.next(), "batch " + std::to_string(b));
}

TEST(Loader, StateRoundTripResumesExactly) {
  auto ds = sample_dataset();
  if (ds.images.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample is absent";
  Loader a(ds, SampleConfig{}, 3, 9, 2);
  a.next();
  a.next();
  LoaderState st = a.state();
  EXPECT_EQ(st.epoch, 1);
  EXPECT_EQ(st.position, 2);  // 6 samples consumed, 4 per epoch
  std::vector<Batch> expected;
  for (int i = 0; i < 3; ++i) expected.push_back(a.next());
  Loader b(ds, SampleConfig{}, 3, 9, 0, 4, st);  // new loader from the state
  for (int i = 0; i < 3; ++i) expect_same(expected[i], b.next(), "resumed " + std::to_string(i));
  a.restore(st);  // same loader rewound
  for (int i = 0; i < 3; ++i) expect_same(expected[i], a.next(), "restored " + std::to_string(i));
  LoaderState bad = st;
  bad.position = 4;
  EXPECT_THROW(a.restore(bad), posekd::Error);
  EXPECT_THROW(Loader(ds, SampleConfig{}, 3, 9, 0, 4, bad), posekd::Error);
}

TEST(Loader, BadSamplesSkippedDeterministically) {
  auto ds = sample_dataset();
  if (ds.images.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample is absent";
  auto dir = posekd::testing::temp_dir("loader-bad");
  for (const auto& im : ds.images) fs::copy_file(fs::path(ds.image_dir) / im.file_name, dir / im.file_name);
  { std::ofstream(dir / "text.jpg") << "not a jpeg"; }
  CocoDataset d2 = ds;
  d2.image_dir = dir.string();
  CocoImage missing = ds.images[0], text = ds.images[1];
  missing.id = 1;
  missing.file_name = "missing.jpg";
  text.id = 2;
  text.file_name = "text.jpg";
  d2.images.insert(d2.images.begin() + 1, missing);
  d2.images.push_back(text);
  Loader l0(d2, SampleConfig{}, 4, 5, 0);
  Loader l3(d2, SampleConfig{}, 4, 5, 3, 1);
  EXPECT_EQ(l0.num_samples(), 6);
  for (int b = 0; b < 4; ++b) {
    Batch x = l0.next(), y = l3.next();
    expect_same(x, y, "batch " + std::to_string(b));
    for (int64_t id : x.image_ids) EXPECT_TRUE(id != 1 && id != 2);
    EXPECT_EQ(l0.bad_count(), l3.bad_count());
    EXPECT_EQ(l0.state().position, l3.state().position);
  }
  // 16 good samples consumed = 4 epochs of 4 good + 2 bad: 8 bad (give or take the boundary).
  EXPECT_GE(l0.bad_count(), 6);
  EXPECT_LE(l0.bad_count(), 8);
  auto ex = l0.bad_examples();
  ASSERT_FALSE(ex.empty());
  EXPECT_LE(ex.size(), 5u);
  bool named = false;
  for (const auto& e : ex)
    named |= e.find("missing.jpg") != std::string::npos || e.find("text.jpg") != std::string::npos;
  EXPECT_TRUE(named);
  EXPECT_EQ(l0.bad_examples(), l3.bad_examples());

  // Nothing readable at all: an error, not a hang.
  CocoDataset none;
  none.image_dir = dir.string();
  none.images = {missing, text};
  Loader ln(none, SampleConfig{}, 2, 1, 2);
  EXPECT_THROW(ln.next(), posekd::Error);
  fs::remove_all(dir);
}

TEST(Loader, NoSamplesIsAnError) {
  CocoDataset empty;
  empty.annotation_path = "x.json";
  CocoImage im;
  im.id = 3;
  im.file_name = "a.jpg";
  im.width = im.height = 10;
  im.persons.emplace_back();  // keypoint-less person: not a sample
  empty.images.push_back(im);
  EXPECT_THROW(Loader(empty, SampleConfig{}, 2, 1, 0), posekd::Error);
}

TEST(Loader, AbandonedMidEpochShutsDownCleanly) {
  auto ds = sample_dataset();
  if (ds.images.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample is absent";
  for (int i = 0; i < 3; ++i) {
    Loader l(ds, SampleConfig{}, 1, i, 3, 8);
    if (i > 0) l.next();
  }  // destructors join while workers wait on a full window
  SUCCEED();
}

TEST(Loader, CrowdMaskZeroWhereTheCrowdIs) {
  // coco-sample has no iscrowd=1 annotation: add one (uncompressed RLE, as in COCO) to 785.
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  auto dir = posekd::testing::temp_dir("loader-crowd");
  nlohmann::json j;
  {
    std::ifstream in(ann);
    j = nlohmann::json::parse(in);
  }
  const int H = 425, W = 640;  // 000000000785.jpg; crowd rectangle x in [100,300), y in [50,250)
  std::vector<int> counts;
  int run = 0, cur = 0;
  for (int x = 0; x < W; ++x)
    for (int y = 0; y < H; ++y) {
      int v = (x >= 100 && x < 300 && y >= 50 && y < 250) ? 1 : 0;
      if (v != cur) {
        counts.push_back(run);
        run = 0;
        cur = v;
      }
      ++run;
    }
  counts.push_back(run);
  j["annotations"].push_back({{"id", 900100},
                              {"image_id", 785},
                              {"category_id", 1},
                              {"iscrowd", 1},
                              {"num_keypoints", 0},
                              {"area", 40000},
                              {"bbox", {100, 50, 200, 200}},
                              {"segmentation", {{"size", {H, W}}, {"counts", counts}}}});
  std::ofstream(dir / "crowd.json") << j.dump();
  auto ds = load_coco((dir / "crowd.json").string(), (ann.parent_path().parent_path() / "val2017").string());
  ASSERT_EQ(ds.images[0].crowds.size(), 1u);
  Loader l(ds, SampleConfig{}, 4, 3, 2);
  Batch b = l.next();
  bool found = false;
  for (size_t i = 0; i < b.image_ids.size(); ++i) {
    auto m = b.mask[static_cast<int64_t>(i)][0];
    if (b.image_ids[i] != 785) {
      EXPECT_EQ(m.sum().item<float>(), 256.f);
      continue;
    }
    found = true;
    // s = 0.2: the crowd covers x in [20,60), y in [10,50) input px = cells x 2.5..7.5, y 1.25..6.25.
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x) {
        float v = m[y][x].item<float>();
        if (x >= 3 && x <= 6 && y >= 2 && y <= 5) EXPECT_EQ(v, 0.f) << x << "," << y;
        if (x <= 1 || x >= 9 || y >= 8) EXPECT_EQ(v, 1.f) << x << "," << y;
      }
  }
  EXPECT_TRUE(found);
  fs::remove_all(dir);
}

}  // namespace

// Sharded loaders (data-parallel ranks): rank r's k-th batch is slice r of the unsharded k-th batch of
// the global batch size, across epoch boundaries; state() is global, so any rank count resumes.
TEST(Loader, ShardsPartitionTheGlobalBatches) {
  auto ds = sample_dataset();
  if (ds.images.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample is absent";
  const int world = 2, b = 3;  // global batch 6 over 4 samples: every batch spans two epochs
  Loader whole(ds, SampleConfig{}, b * world, 11, 0);
  Loader r0(ds, SampleConfig{}, b, 11, 1, 2, {}, Shard{0, world});
  Loader r1(ds, SampleConfig{}, b, 11, 2, 3, {}, Shard{1, world});
  for (int k = 0; k < 5; ++k) {
    Batch g = whole.next(), a = r0.next(), c = r1.next();
    std::vector<int64_t> joined = a.image_ids;
    joined.insert(joined.end(), c.image_ids.begin(), c.image_ids.end());
    EXPECT_EQ(joined, g.image_ids) << "batch " << k;
    EXPECT_TRUE(torch::equal(torch::cat({a.image, c.image}), g.image)) << "batch " << k;
    EXPECT_TRUE(torch::equal(torch::cat({a.heatmaps, c.heatmaps}), g.heatmaps)) << "batch " << k;
    const LoaderState sw = whole.state(), s0 = r0.state(), s1 = r1.state();
    EXPECT_EQ(s0.epoch * 4 + s0.position, sw.epoch * 4 + sw.position) << "batch " << k;
    EXPECT_EQ(s1.epoch * 4 + s1.position, sw.epoch * 4 + sw.position) << "batch " << k;
  }
  // A single process continues from the ranks' state exactly as the unsharded loader does ...
  Loader resumed_whole(ds, SampleConfig{}, b * world, 11, 0, 4, r0.state());
  // ... and two ranks continue from the unsharded loader's state.
  Loader resumed_r1(ds, SampleConfig{}, b, 11, 0, 4, whole.state(), Shard{1, world});
  Batch next = whole.next();
  EXPECT_EQ(resumed_whole.next().image_ids, next.image_ids);
  EXPECT_EQ(resumed_r1.next().image_ids, std::vector<int64_t>(next.image_ids.begin() + b, next.image_ids.end()));
}

TEST(Loader, ShardStateRoundsUpToAGlobalBatchAndRejectsBadShards) {
  auto ds = sample_dataset();
  if (ds.images.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample is absent";
  // A single-process position in the middle of a global batch of 4 resumes at the next boundary.
  LoaderState mid;
  mid.epoch = 1;
  mid.position = 1;
  Loader r0(ds, SampleConfig{}, 2, 5, 0, 2, mid, Shard{0, 2});
  EXPECT_EQ(r0.state().epoch, 2);
  EXPECT_EQ(r0.state().position, 0);
  EXPECT_THROW(Loader(ds, SampleConfig{}, 2, 5, 0, 2, {}, Shard{2, 2}), posekd::Error);
  EXPECT_THROW(Loader(ds, SampleConfig{}, 2, 5, 0, 2, {}, Shard{0, 0}), posekd::Error);
}
