// Teacher-output cache: round trip, stale/corrupt detection and rebuild, teacher run only on misses,
// crash-safe entries, cross-process reuse, and `posekd cache-teacher` end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/sample.h"
#include "posekd/model/teacher.h"
#include "posekd/train/teacher_cache.h"
#include "test_util.h"

namespace {
namespace fs = std::filesystem;
using posekd::train::CacheKey;
using posekd::train::TeacherCache;

CacheKey test_key() {
  CacheKey k;
  k.teacher_checksum = 0x1234;
  k.dataset_id = 0x99;
  return k;
}

struct LogCapture {
  std::string all;
  TeacherCache::Log fn() {
    return [this](const std::string& s) { all += s + "\n"; };
  }
};

// Deterministic "teacher" outputs of an image id.
std::pair<torch::Tensor, torch::Tensor> outputs_of(int64_t id) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(id));
  return {torch::rand({19, 16, 16}, g), torch::rand({38, 16, 16}, g) - 0.5};
}

void expect_close_fp16(const torch::Tensor& a, const torch::Tensor& b) {
  ASSERT_EQ(a.sizes(), b.sizes());
  // fp16 has an 11-bit significand: relative error <= 2^-11 for normal values.
  EXPECT_TRUE(torch::allclose(a, b, 1.0 / 2048, 1e-6)) << (a - b).abs().max().item<double>();
}

TEST(TeacherCache, StoreLookupRoundTripWithinFp16) {
  auto dir = posekd::testing::temp_dir("tcache");
  LogCapture log;
  auto c = TeacherCache::open((dir / "t.cache").string(), test_key(), {5, 3, 9, 3}, log.fn());
  EXPECT_TRUE(c.rebuilt());
  EXPECT_NE(log.all.find("no cache file yet"), std::string::npos) << log.all;
  EXPECT_EQ(c.num_slots(), 3);
  EXPECT_EQ(c.valid_count(), 0);
  auto [h, p] = outputs_of(3);
  ASSERT_TRUE(c.store(3, h, p));
  EXPECT_FALSE(c.store(77, h, p));  // no slot
  torch::Tensor h2, p2;
  EXPECT_FALSE(c.lookup(5, h2, p2));
  ASSERT_TRUE(c.lookup(3, h2, p2));
  EXPECT_EQ(h2.scalar_type(), torch::kFloat32);
  expect_close_fp16(h2, h);
  expect_close_fp16(p2, p);
  EXPECT_FALSE(torch::equal(h2, h));  // really stored as fp16 (rounded)
  EXPECT_EQ(c.valid_count(), 1);
  EXPECT_THROW(c.store(5, torch::zeros({19, 8, 8}), p), posekd::Error);
  fs::remove_all(dir);
}

TEST(TeacherCache, ReopenReusesAndStaleKeyRebuilds) {
  auto dir = posekd::testing::temp_dir("tcache");
  const std::string path = (dir / "t.cache").string();
  auto [h, p] = outputs_of(7);
  {
    auto c = TeacherCache::open(path, test_key(), {7, 8});
    c.store(7, h, p);
  }
  {
    LogCapture log;
    auto c = TeacherCache::open(path, test_key(), {8, 7}, log.fn());
    EXPECT_FALSE(c.rebuilt());
    EXPECT_NE(log.all.find("reusing 1 of 2"), std::string::npos) << log.all;
    torch::Tensor h2, p2;
    ASSERT_TRUE(c.lookup(7, h2, p2));
    expect_close_fp16(h2, h);
  }
  {  // a subset of the cached image list is served by the same file
    auto c = TeacherCache::open(path, test_key(), {7});
    EXPECT_FALSE(c.rebuilt());
    EXPECT_TRUE(c.contains(7));
  }
  {  // another teacher
    CacheKey k = test_key();
    k.teacher_checksum = 0x4321;
    LogCapture log;
    auto c = TeacherCache::open(path, k, {7, 8}, log.fn());
    EXPECT_TRUE(c.rebuilt());
    EXPECT_NE(log.all.find("teacher weights checksum"), std::string::npos) << log.all;
    EXPECT_FALSE(c.contains(7));
    c.store(7, h, p);
  }
  {  // the previous file now belongs to teacher 0x4321: another input scale rebuilds again
    CacheKey k = test_key();
    k.teacher_checksum = 0x4321;
    k.input_scale = 1.0;
    LogCapture log;
    auto c = TeacherCache::open(path, k, {7, 8}, log.fn());
    EXPECT_TRUE(c.rebuilt());
    EXPECT_NE(log.all.find("input scale"), std::string::npos) << log.all;
    EXPECT_EQ(c.valid_count(), 0);
  }
  {  // the same teacher computed in bf16 is another cache; back to fp32 rebuilds again
    CacheKey k = test_key();
    k.teacher_checksum = 0x4321;
    k.input_scale = 1.0;
    k.teacher_precision = 1;
    LogCapture log;
    auto c = TeacherCache::open(path, k, {7, 8}, log.fn());
    EXPECT_TRUE(c.rebuilt());
    EXPECT_NE(log.all.find("teacher computed in fp32, this run's teacher in bf16"), std::string::npos) << log.all;
    EXPECT_NE(k.describe().find("bf16"), std::string::npos) << k.describe();
    k.teacher_precision = 0;
    LogCapture log2;
    auto c2 = TeacherCache::open(path, k, {7, 8}, log2.fn());
    EXPECT_TRUE(c2.rebuilt());
    EXPECT_NE(log2.all.find("teacher computed in bf16, this run's teacher in fp32"), std::string::npos) << log2.all;
  }
  CacheKey k_last = test_key();  // the key the file now has
  k_last.teacher_checksum = 0x4321;
  k_last.input_scale = 1.0;
  {  // other dataset, other preprocessing
    CacheKey k = k_last;
    k.dataset_id = 1;
    LogCapture log;
    auto c = TeacherCache::open(path, k, {7, 8}, log.fn());
    EXPECT_NE(log.all.find("dataset identity"), std::string::npos) << log.all;
    CacheKey k2 = k;
    k2.reduced_decode = 0;
    LogCapture log2;
    auto c2 = TeacherCache::open(path, k2, {7, 8}, log2.fn());
    EXPECT_NE(log2.all.find("reduced_decode"), std::string::npos) << log2.all;
  }
  {  // an image the file has no slot for
    LogCapture log;
    CacheKey k = k_last;
    k.dataset_id = 1;
    k.reduced_decode = 0;
    auto c = TeacherCache::open(path, k, {7, 8, 11}, log.fn());
    EXPECT_TRUE(c.rebuilt());
    EXPECT_NE(log.all.find("another image list"), std::string::npos) << log.all;
    EXPECT_EQ(c.num_slots(), 3);
  }
  fs::remove_all(dir);
}

TEST(TeacherCache, TruncatedOrCorruptFileIsRebuilt) {
  auto dir = posekd::testing::temp_dir("tcache");
  const std::string path = (dir / "t.cache").string();
  auto fill = [&] {
    auto c = TeacherCache::open(path, test_key(), {1, 2});
    auto [h, p] = outputs_of(1);
    c.store(1, h, p);
    c.store(2, h, p);
  };
  auto reopen_reason = [&] {
    LogCapture log;
    auto c = TeacherCache::open(path, test_key(), {1, 2}, log.fn());
    EXPECT_TRUE(c.rebuilt());
    EXPECT_EQ(c.valid_count(), 0);
    return log.all;
  };
  fill();
  const auto full = fs::file_size(path);
  fs::resize_file(path, full - 1000);
  EXPECT_NE(reopen_reason().find("truncated"), std::string::npos);
  EXPECT_EQ(fs::file_size(path), full);

  fill();
  fs::resize_file(path, 20);
  EXPECT_NE(reopen_reason().find("smaller than the header"), std::string::npos);

  fill();
  {  // one flipped byte in the key area of the header
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(60);
    char b = 0;
    f.read(&b, 1);
    f.seekp(60);
    b = static_cast<char>(b ^ 0x40);
    f.write(&b, 1);
  }
  EXPECT_NE(reopen_reason().find("corrupt header"), std::string::npos);

  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << std::string(8192, 'x');
  }
  EXPECT_NE(reopen_reason().find("bad magic"), std::string::npos);
  fs::remove_all(dir);
}

// A half-written entry (as after a kill or power loss with pages flushed out of order) is a miss.
TEST(TeacherCache, CorruptEntryIsAMissAndIsRecomputed) {
  auto dir = posekd::testing::temp_dir("tcache");
  const std::string path = (dir / "t.cache").string();
  auto [h, p] = outputs_of(2);
  {
    auto c = TeacherCache::open(path, test_key(), {1, 2});
    c.store(1, h, p);
    c.store(2, h, p);
  }
  // Entry of slot 1 (image id 2, ids are kept sorted) starts at data offset 8192 (header 4096 + slot
  // table, rounded up to a page) + 1 * 57*16*16*2.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8192 + 57 * 16 * 16 * 2 + 100);
    const char junk[4] = {1, 2, 3, 4};
    f.write(junk, 4);
  }
  auto c = TeacherCache::open(path, test_key(), {1, 2});
  EXPECT_FALSE(c.rebuilt());
  EXPECT_TRUE(c.contains(1));
  EXPECT_FALSE(c.contains(2));
  torch::Tensor h2, p2;
  EXPECT_FALSE(c.lookup(2, h2, p2));
  int calls = 0;
  auto compute = [&](const torch::Tensor& x) {
    ++calls;
    EXPECT_EQ(x.size(0), 1);
    return std::vector<torch::Tensor>{h.unsqueeze(0), p.unsqueeze(0)};
  };
  auto out = c.fetch_or_compute({1, 2}, torch::zeros({2, 3, 8, 8}), compute);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(c.contains(2));
  expect_close_fp16(out.first[1], h);
  fs::remove_all(dir);
}

TEST(TeacherCache, FetchOrComputeRunsTheTeacherOnlyOnMisses) {
  auto dir = posekd::testing::temp_dir("tcache");
  std::vector<int64_t> all;
  for (int64_t i = 100; i < 116; ++i) all.push_back(i);
  auto c = TeacherCache::open((dir / "t.cache").string(), test_key(), all);
  // Fake teacher: outputs are a function of the image (its first pixel), so we can check which
  // images it saw and that outputs land at the right batch positions.
  std::vector<std::vector<float>> seen;
  auto fake = [&](const torch::Tensor& x) {
    std::vector<float> firsts;
    for (int64_t i = 0; i < x.size(0); ++i) firsts.push_back(x[i][0][0][0].item<float>());
    seen.push_back(firsts);
    auto v = x.select(1, 0).select(1, 0).select(1, 0).view({-1, 1, 1, 1});
    return std::vector<torch::Tensor>{v.expand({x.size(0), 19, 16, 16}) * 1.0,
                                      v.expand({x.size(0), 38, 16, 16}) * -2.0};
  };
  auto images_of = [](const std::vector<int64_t>& ids) {
    auto x = torch::zeros({static_cast<int64_t>(ids.size()), 3, 4, 4});
    for (size_t i = 0; i < ids.size(); ++i) x[static_cast<int64_t>(i)].fill_(static_cast<double>(ids[i]) / 128.0);
    return x;
  };
  auto check = [&](const std::vector<int64_t>& ids, const std::pair<torch::Tensor, torch::Tensor>& out) {
    for (size_t i = 0; i < ids.size(); ++i) {
      const double v = static_cast<double>(ids[i]) / 128.0;
      EXPECT_NEAR(out.first[static_cast<int64_t>(i)][3][5][7].item<double>(), v, 1e-3 * v);
      EXPECT_NEAR(out.second[static_cast<int64_t>(i)][37][0][15].item<double>(), -2 * v, 2e-3 * v);
    }
  };
  const std::vector<int64_t> b1{100, 101, 102, 103, 104, 105, 106, 107};
  auto o1 = c.fetch_or_compute(b1, images_of(b1), fake);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].size(), 8u);
  check(b1, o1);
  auto o1b = c.fetch_or_compute(b1, images_of(b1), fake);  // all hits: no teacher call
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_TRUE(torch::equal(o1.first, o1b.first));  // cold and warm give the same (fp16) values
  EXPECT_TRUE(torch::equal(o1.second, o1b.second));
  const std::vector<int64_t> b2{103, 110, 101, 111, 107, 100, 112, 104};  // 3 misses among hits
  auto o2 = c.fetch_or_compute(b2, images_of(b2), fake);
  ASSERT_EQ(seen.size(), 2u);
  ASSERT_EQ(seen[1].size(), 3u);  // one batched call on the 3 missing images, in batch order
  EXPECT_FLOAT_EQ(seen[1][0], 110 / 128.0f);
  EXPECT_FLOAT_EQ(seen[1][1], 111 / 128.0f);
  EXPECT_FLOAT_EQ(seen[1][2], 112 / 128.0f);
  check(b2, o2);
  const std::vector<int64_t> b3{999, 105};  // an image without a slot: computed, not stored
  auto o3 = c.fetch_or_compute(b3, images_of(b3), fake);
  check(b3, o3);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_FALSE(c.contains(999));
  EXPECT_EQ(c.stats().hits, 8 + 5 + 1);
  EXPECT_EQ(c.stats().misses, 8 + 3 + 1);
  EXPECT_EQ(c.stats().teacher_calls, 3);
  EXPECT_EQ(c.valid_count(), 11);
  EXPECT_THROW(c.fetch_or_compute(b1, images_of(b2).slice(0, 0, 3), fake), posekd::Error);
  fs::remove_all(dir);
}

posekd::model::TeacherWrapper small_teacher(int input_size, uint64_t seed) {
  torch::manual_seed(seed);
  posekd::model::PoseEstimationWithMobileNet net(1, 128);
  net->eval();
  posekd::model::TeacherOptions to;
  to.input_size = input_size;
  auto tw = posekd::model::TeacherWrapper(net, to);
  tw->eval();
  return tw;
}

TEST(TeacherCache, RealTeacherBatchAndKeyFromWeights) {
  auto dir = posekd::testing::temp_dir("tcache");
  auto tw = small_teacher(64, 3);
  posekd::data::SampleConfig sc;
  const CacheKey k = posekd::train::make_cache_key(tw, sc, 5);
  EXPECT_EQ(k.teacher_input_size, 64);
  EXPECT_EQ(k.input_scale, 0.5);
  EXPECT_EQ(k.output_size, 16);
  // Fusing BN does not change the checksum; different weights do.
  tw->net()->fuse();
  EXPECT_EQ(posekd::train::make_cache_key(tw, sc, 5), k);
  auto other = small_teacher(64, 4);
  EXPECT_NE(posekd::train::make_cache_key(other, sc, 5).teacher_checksum, k.teacher_checksum);
  EXPECT_EQ(k.teacher_precision, 0);
  {
    posekd::model::TeacherOptions o = tw->options();
    o.precision = posekd::Precision::bf16;
    posekd::model::TeacherWrapper bf(tw->net(), o);
    const CacheKey kb = posekd::train::make_cache_key(bf, sc, 5);
    EXPECT_EQ(kb.teacher_precision, 1);
    EXPECT_NE(kb, k);
  }
  sc.reduced_decode = false;
  EXPECT_NE(posekd::train::make_cache_key(tw, sc, 5), k);

  auto c = TeacherCache::open((dir / "t.cache").string(), k, {1, 2, 3});
  posekd::data::Batch b;
  b.image = torch::rand({3, 3, 128, 128}) * 2 - 1;
  b.image_ids = {3, 1, 2};
  auto direct = tw->forward(b.image);
  auto o1 = c.fetch_or_compute(b, tw);
  auto o2 = c.fetch_or_compute(b, tw);
  EXPECT_EQ(c.stats().teacher_calls, 1);
  EXPECT_EQ(c.stats().hits, 3);
  for (auto* o : {&o1, &o2}) {
    EXPECT_TRUE(torch::allclose(o->first, direct[0], 1e-3, 1e-4));
    EXPECT_TRUE(torch::allclose(o->second, direct[1], 1e-3, 1e-4));
  }
  fs::remove_all(dir);
}

TEST(TeacherCache, DatasetIdentityFollowsTheAnnotationFile) {
  auto dir = posekd::testing::temp_dir("tcache");
  const auto ann = dir / "ann.json";
  { std::ofstream(ann) << "{}"; }
  const uint64_t a = posekd::train::dataset_identity(ann.string(), dir.string());
  EXPECT_EQ(posekd::train::dataset_identity(ann.string(), dir.string()), a);
  EXPECT_NE(posekd::train::dataset_identity(ann.string(), (dir / "other").string()), a);
  { std::ofstream(ann) << "{ }"; }  // other size
  EXPECT_NE(posekd::train::dataset_identity(ann.string(), dir.string()), a);
  EXPECT_THROW(posekd::train::dataset_identity((dir / "missing.json").string(), dir.string()), posekd::Error);
  fs::remove_all(dir);
}

// Child half of the cross-process test: when the parent starts this program with the variable set,
// it writes two entries and exits before any test runs (so it is not a test that skips).
[[maybe_unused]] const bool cache_child_ran = [] {
  const char* path = std::getenv("POSEKD_TEST_CACHE_CHILD");
  if (!path) return false;
  try {
    auto c = TeacherCache::open(path, test_key(), {10, 20, 30});
    for (int64_t id : {10, 30}) {
      auto [h, p] = outputs_of(id);
      if (!c.store(id, h, p)) std::_Exit(2);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cache child: %s\n", e.what());
    std::_Exit(1);
  }
  std::_Exit(0);
}();

TEST(TeacherCache, WrittenByOneProcessReadByAnother) {
  auto dir = posekd::testing::temp_dir("tcache");
  const std::string path = (dir / "t.cache").string();
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string cmd =
      "POSEKD_TEST_CACHE_CHILD='" + path + "' '" + self + "' > '" + (dir / "child.log").string() + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << cmd;
  LogCapture log;
  auto c = TeacherCache::open(path, test_key(), {10, 20, 30}, log.fn());
  EXPECT_FALSE(c.rebuilt()) << log.all;
  EXPECT_EQ(c.valid_count(), 2);
  EXPECT_FALSE(c.contains(20));
  for (int64_t id : {10, 30}) {
    torch::Tensor h, p;
    ASSERT_TRUE(c.lookup(id, h, p));
    auto want = outputs_of(id);
    expect_close_fp16(h, want.first);
    expect_close_fp16(p, want.second);
  }
  fs::remove_all(dir);
}

// `posekd cache-teacher` on the 4-image COCO sample with the fixture teacher; the cache it writes
// is read back in this process with the key computed here, and matches the teacher run here.
TEST(TeacherCache, CliBuildsACacheTheTrainerCanUse) {
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  POSEKD_REQUIRE_FIXTURE(images, "coco-sample/val2017");
  POSEKD_REQUIRE_FIXTURE(teacher_path, "teacher/teacher_state_zip.pth");
  if (!fs::exists(posekd::testing::cli()))
    GTEST_SKIP() << "the posekd program is not built: " << posekd::testing::cli();
  auto dir = posekd::testing::temp_dir("tcache-cli");
  const std::string out = (dir / "teacher.cache").string();
  const std::string cmd = "'" + posekd::testing::cli() + "' cache-teacher --threads 2 --precision fp32 --teacher '" +
                          teacher_path.string() + "' --ann '" + ann.string() + "' --images '" + images.string() +
                          "' --out '" + out + "' > '" + (dir / "log.txt").string() + "' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  auto ds = posekd::data::load_coco(ann.string(), images.string());
  std::vector<int64_t> ids;
  for (const auto& im : ds.images)
    if (posekd::data::has_keypoint_person(im)) ids.push_back(im.id);
  ASSERT_FALSE(ids.empty());
  auto tw = posekd::model::load_teacher_wrapper(teacher_path.string());
  posekd::data::SampleConfig sc;
  auto key = posekd::train::make_cache_key(tw, sc, posekd::train::dataset_identity(ann.string(), images.string()));
  auto c = TeacherCache::open(out, key, ids);
  EXPECT_FALSE(c.rebuilt());
  EXPECT_EQ(c.valid_count(), static_cast<int64_t>(ids.size()));
  const auto& im = ds.images.front();
  ASSERT_TRUE(posekd::data::has_keypoint_person(im));
  auto s = posekd::data::prepare_sample(im, images.string(), sc);
  ASSERT_TRUE(s.ok);
  auto direct = tw->forward(s.image.unsqueeze(0));
  torch::Tensor h, p;
  ASSERT_TRUE(c.lookup(im.id, h, p));
  EXPECT_TRUE(torch::allclose(h, direct[0][0], 2e-3, 1e-3)) << (h - direct[0][0]).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(p, direct[1][0], 2e-3, 1e-3)) << (p - direct[1][0]).abs().max().item<double>();

  // A second run has nothing left to compute.
  const std::string cmd2 = "'" + posekd::testing::cli() + "' cache-teacher --threads 2 --precision fp32 --teacher '" +
                           teacher_path.string() + "' --ann '" + ann.string() + "' --images '" + images.string() +
                           "' --out '" + out + "' > '" + (dir / "log2.txt").string() + "' 2>&1";
  ASSERT_EQ(std::system(cmd2.c_str()), 0);
  std::ifstream lf(dir / "log2.txt");
  std::string text((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(std::to_string(ids.size()) + " already cached, 0 to compute"), std::string::npos) << text;
  fs::remove_all(dir);
}

}  // namespace
