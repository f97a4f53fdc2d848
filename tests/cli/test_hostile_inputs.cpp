// Hostile inputs to `posekd train` (the built CLI, run via std::system): broken images, broken
// annotation JSON, broken / foreign checkpoints, unwritable output, a full disk (RLIMIT_FSIZE) and
// NaN losses. Every case must end in a counted skip or a clear one-line error, never a crash, and
// never damage existing checkpoints. See docs/robustness.md.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "posekd/data/coco.h"
#include "posekd/data/sample.h"
#include "posekd/io/torch_file.h"
#include "posekd/io/value.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

struct CliResult {
  int status = -1;  // exit code; 128+N when killed by signal N (a crash)
  std::string out;  // stdout + stderr
};

// Runs `posekd ARGS` (optionally after a shell prefix such as `ulimit -f 4;`).
CliResult run_posekd(const std::string& args, const std::string& shell_prefix = "") {
  auto dir = posekd::testing::temp_dir("hostile-out");
  fs::path o = dir / "out.txt";
  std::string cmd = shell_prefix + "exec " + posekd::testing::cli() + " " + args + " > " + o.string() + " 2>&1";
  int rc = std::system(("bash -c '" + cmd + "'").c_str());
  CliResult r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  r.out = posekd::testing::read_text(o);
  fs::remove_all(dir);
  return r;
}

// ---- image fixtures

std::string encode(const cv::Mat& m, const std::string& ext) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, m, buf));
  return std::string(buf.begin(), buf.end());
}

cv::Mat noise(int h, int w, int type) {
  cv::Mat m(h, w, type);
  cv::randu(m, cv::Scalar::all(0), cv::Scalar::all(CV_MAT_DEPTH(type) == CV_16U ? 65535 : 255));
  return m;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// A valid PNG signature + IHDR announcing w x h, then IEND, no pixel data.
std::string png_header_only(uint32_t w, uint32_t h) {
  std::string ihdr = "IHDR" + be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5);
  std::string iend = "IEND";
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + be32(posekd::io::crc32(ihdr.data(), ihdr.size())) +
         be32(0) + iend + be32(posekd::io::crc32(iend.data(), iend.size()));
}

// SOI + a baseline SOF0 announcing w x h (3 components) + EOI.
std::string jpeg_header_only(uint16_t w, uint16_t h) {
  std::string s = "\xFF\xD8\xFF\xC0";
  s += std::string("\x00\x11\x08", 3);
  s += {static_cast<char>(h >> 8), static_cast<char>(h), static_cast<char>(w >> 8), static_cast<char>(w)};
  s += std::string("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10);
  s += "\xFF\xD9";
  return s;
}

struct ImageFile {
  std::string name;
  bool good;
};

// Writes the images, returns (name, readable) in id order (id = index + 1).
std::vector<ImageFile> write_hostile_images(const fs::path& dir) {
  std::vector<ImageFile> v;
  auto add = [&](const std::string& name, const std::string& bytes, bool good) {
    spit(dir / name, bytes);
    v.push_back({name, good});
  };
  add("color.jpg", encode(noise(150, 200, CV_8UC3), ".jpg"), true);
  add("gray.png", encode(noise(80, 100, CV_8UC1), ".png"), true);
  add("deep16.png", encode(noise(90, 120, CV_16UC3), ".png"), true);
  add("alpha.png", encode(noise(120, 90, CV_8UC4), ".png"), true);
  v.push_back({"missing.jpg", false});  // never written
  add("empty.jpg", "", false);
  std::string full = encode(noise(150, 200, CV_8UC3), ".jpg");
  add("truncated.jpg", full.substr(0, full.size() / 2), false);
  add("notimage.jpg", "this is not an image, just text\n", false);
  add("huge.png", png_header_only(20000, 20000), false);
  add("huge.jpg", jpeg_header_only(20000, 20000), false);
  return v;
}

// One person with 5 visible keypoints inside a w x h image.
std::string person_json(int ann_id, int image_id, int w, int h) {
  std::ostringstream kp;
  for (int k = 0; k < 17; ++k) {
    if (k) kp << ",";
    if (k < 5)
      kp << (w / 4 + 3 * k) << "," << (h / 4 + 2 * k) << ",2";
    else
      kp << "0,0,0";
  }
  std::ostringstream s;
  s << R"({"id": )" << ann_id << R"(, "image_id": )" << image_id << R"(, "category_id": 1, "iscrowd": 0, )"
    << R"("num_keypoints": 5, "area": 400.0, "bbox": [)" << w / 4 << "," << h / 4 << R"(, 30, 40], )"
    << R"("keypoints": [)" << kp.str() << "]}";
  return s.str();
}

std::string coco_json(const std::vector<ImageFile>& images, const std::string& extra_images = "",
                      const std::string& extra_anns = "") {
  std::ostringstream im, an;
  for (size_t i = 0; i < images.size(); ++i) {
    im << (i ? ",\n" : "") << R"({"id": )" << i + 1 << R"(, "file_name": ")" << images[i].name
       << R"(", "width": 200, "height": 150})";
    an << (i ? ",\n" : "") << person_json(static_cast<int>(i) + 101, static_cast<int>(i) + 1, 80, 80);
  }
  return "{\"images\": [\n" + im.str() + extra_images + "\n],\n\"annotations\": [\n" + an.str() + extra_anns +
         "\n],\n\"categories\": [{\"id\": 1, \"name\": \"person\"}]}\n";
}

// Common flags of a small, fast training run.
std::string train_args(const fs::path& ann, const fs::path& images, const fs::path& out) {
  return "train --ann " + ann.string() + " --images " + images.string() + " --output " + out.string() +
         " --arch ai85pose --no-qat --threads 2 --workers 1 --deterministic";
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

int64_t first_int(const std::string& text, const std::string& re) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(re))) return -1;
  return std::stoll(m[1]);
}

// A dataset of the four readable images only (for the checkpoint and output tests).
fs::path good_dataset(const fs::path& root) {
  fs::create_directories(root / "images");
  auto all = write_hostile_images(root / "images");
  std::vector<ImageFile> good;
  for (const auto& f : all)
    if (f.good) good.push_back(f);
  spit(root / "ann.json", coco_json(good));
  return root;
}

}  // namespace

// prepare_sample on each hostile file: readable formats decode to the input size, everything else
// gives ok = false with an error naming the file (never an exception).
TEST(HostileInputs, EachImageIsReadOrRejectedWithItsPath) {
  auto dir = posekd::testing::temp_dir("hostile-img");
  auto files = write_hostile_images(dir);
  posekd::data::SampleConfig cfg;
  for (const auto& f : files) {
    posekd::data::CocoImage im;
    im.id = 1;
    im.file_name = f.name;
    im.width = 200;
    im.height = 150;
    posekd::data::Sample s;
    ASSERT_NO_THROW(s = posekd::data::prepare_sample(im, dir.string(), cfg)) << f.name;
    EXPECT_EQ(s.ok, f.good) << f.name << ": " << s.error;
    if (f.good) {
      EXPECT_EQ(s.image.sizes(), torch::IntArrayRef({3, 128, 128})) << f.name;
      EXPECT_TRUE(torch::isfinite(s.image).all().item<bool>()) << f.name;
    } else {
      EXPECT_TRUE(contains(s.error, f.name)) << f.name << ": " << s.error;
    }
  }
  int w = 0, h = 0;
  ASSERT_TRUE(posekd::data::image_header_size(png_header_only(20000, 20000), w, h));
  EXPECT_EQ(w, 20000);
  EXPECT_EQ(h, 20000);
  ASSERT_TRUE(posekd::data::image_header_size(jpeg_header_only(20000, 20000), w, h));
  EXPECT_EQ(w, 20000);
  fs::remove_all(dir);
}

// The CLI on a dataset of 4 readable and 6 unreadable images: bad ones are counted, skipped and
// named; with a low --max-bad-fraction the run stops with a clear error before writing anything.
TEST(HostileInputs, BadImagesAreCountedAndNamedAndMaxBadFractionStopsTheRun) {
  auto root = posekd::testing::temp_dir("hostile-data");
  fs::create_directories(root / "images");
  auto files = write_hostile_images(root / "images");
  spit(root / "ann.json", coco_json(files));

  // Batch of 9 readable samples out of 4 per epoch: at least two full epochs are read.
  auto r = run_posekd(train_args(root / "ann.json", root / "images", root / "out") +
                      " --batch-size 9 --total-batches 1 --max-bad-fraction 1.0");
  ASSERT_EQ(r.status, 0) << r.out;
  const int64_t bad = first_int(r.out, R"((\d+) samples could not be read and were skipped)");
  EXPECT_GE(bad, 12) << r.out;  // 6 unreadable files, each seen at least twice
  int named = 0;
  for (const auto& f : files) {
    if (!f.good && contains(r.out, (root / "images" / f.name).string())) ++named;
    if (f.good) EXPECT_FALSE(contains(r.out, f.name)) << f.name << " reported bad:\n" << r.out;
  }
  EXPECT_GE(named, 5) << r.out;  // the log keeps the first 5 examples
  EXPECT_TRUE(fs::exists(root / "out" / "latest.pth"));

  auto r2 = run_posekd(train_args(root / "ann.json", root / "images", root / "out2") +
                       " --batch-size 9 --total-batches 1 --max-bad-fraction 0.2");
  EXPECT_EQ(r2.status, 1) << r2.out;
  EXPECT_TRUE(contains(r2.out, "posekd: error: train: ")) << r2.out;
  EXPECT_TRUE(contains(r2.out, "more than --max-bad-fraction 0.2")) << r2.out;
  EXPECT_TRUE(contains(r2.out, (root / "images").string())) << r2.out;  // first bad path named
  EXPECT_FALSE(fs::exists(root / "out2" / "latest.pth"));
  fs::remove_all(root);
}

TEST(HostileInputs, MalformedJsonNamesFileLineAndColumn) {
  auto root = posekd::testing::temp_dir("hostile-json");
  fs::create_directories(root / "images");
  spit(root / "bad.json", "{\n  \"images\": [\n    {\"id\": 1,, \"file_name\": \"a.jpg\"}\n  ]\n}\n");
  auto r = run_posekd(train_args(root / "bad.json", root / "images", root / "out") + " --total-batches 1");
  EXPECT_EQ(r.status, 1) << r.out;
  // "PATH:3:COL: malformed JSON: ..." on one line
  std::regex re((root / "bad.json").string() + R"(:3:\d+: malformed JSON)");
  EXPECT_TRUE(std::regex_search(r.out, re)) << r.out;
  EXPECT_FALSE(fs::exists(root / "out" / "latest.pth"));

  spit(root / "truncated.json", "{\"images\": [{\"id\": 1, \"file_na");
  r = run_posekd(train_args(root / "truncated.json", root / "images", root / "out") + " --total-batches 1");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, (root / "truncated.json").string() + ":1:")) << r.out;

  r = run_posekd(train_args(root / "absent.json", root / "images", root / "out") + " --total-batches 1");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, (root / "absent.json").string())) << r.out;
  fs::remove_all(root);
}

// Wrong value types, non-positive / fractional sizes, unknown image ids, a zero-person image: each
// record is skipped and counted; training runs on what is valid.
TEST(HostileInputs, BadAnnotationRecordsAreCountedNotFatal) {
  auto root = posekd::testing::temp_dir("hostile-ann");
  good_dataset(root);
  std::vector<ImageFile> good = {{"color.jpg", true}, {"gray.png", true}, {"deep16.png", true}, {"alpha.png", true}};
  const std::string extra_images =
      ",\n{\"id\": 50, \"file_name\": \"color.jpg\", \"width\": \"wide\", \"height\": 150}"  // wrong type
      ",\n{\"id\": 51, \"file_name\": \"color.jpg\", \"width\": -5, \"height\": 150}"        // negative
      ",\n{\"id\": 52, \"file_name\": \"color.jpg\", \"width\": 200, \"height\": 0}"         // zero
      ",\n{\"id\": 53, \"file_name\": \"color.jpg\", \"width\": 1.5, \"height\": 150}"       // fractional
      ",\n{\"id\": 54, \"file_name\": 12345, \"width\": 200, \"height\": 150}"               // name not a string
      ",\n{\"id\": 60, \"file_name\": \"gray.png\", \"width\": 100, \"height\": 80}";        // zero persons
  const std::string extra_anns =
      ",\n" + person_json(900, 999, 80, 80) +  // unknown image id
      ",\n{\"id\": 901, \"image_id\": 1, \"category_id\": 1, \"iscrowd\": 0, \"num_keypoints\": 1, "
      "\"bbox\": [1, 2, 3, 4], \"keypoints\": [1, 2]}" +  // 2 of 51 values
      ",\n{\"id\": 902, \"image_id\": 1, \"category_id\": 1, \"iscrowd\": 0, \"num_keypoints\": 1, "
      "\"bbox\": \"box\", \"keypoints\": \"none\"}";  // wrong types
  spit(root / "ann.json", coco_json(good, extra_images, extra_anns));
  auto r =
      run_posekd(train_args(root / "ann.json", root / "images", root / "out") + " --batch-size 2 --total-batches 1");
  ASSERT_EQ(r.status, 0) << r.out;
  const int64_t skipped = first_int(r.out, R"(persons, (\d+) annotations skipped\))");
  EXPECT_GE(skipped, 7) << r.out;  // 5 image records + 3 annotations (counted together)
  EXPECT_TRUE(contains(r.out, "warning:")) << r.out;
  EXPECT_TRUE(fs::exists(root / "out" / "latest.pth"));
  fs::remove_all(root);
}

// Truncated, random and foreign (teacher) checkpoints: a clear error naming the file, no training.
// An output path under a regular file: a clear error. A full disk (RLIMIT_FSIZE, SIGXFSZ ignored)
// while checkpointing: a clear error and the existing checkpoints are byte-identical afterwards.
// NaN weights make every loss NaN: steps are skipped and counted, then the run stops clearly.
TEST(HostileInputs, BadCheckpointsUnwritableOutputFullDiskAndNanLoss) {
  auto root = posekd::testing::temp_dir("hostile-ckpt");
  good_dataset(root);
  const fs::path ann = root / "ann.json", images = root / "images";

  // A real checkpoint to damage.
  const fs::path base = root / "base";
  auto r = run_posekd(train_args(ann, images, base) + " --batch-size 2 --total-batches 1 --save-every 1");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string ckpt = posekd::testing::read_text(base / "latest.pth");
  ASSERT_GT(ckpt.size(), 4096u);

  std::mt19937 rng(7);
  std::string random_bytes(8192, '\0');
  for (auto& c : random_bytes) c = static_cast<char>(rng());
  spit(root / "truncated.pth", ckpt.substr(0, ckpt.size() / 2));
  spit(root / "random.pth", random_bytes);
  std::vector<fs::path> bad = {root / "truncated.pth", root / "random.pth"};
  if (auto teacher = posekd::testing::fixture_path("teacher/teacher_state_zip.pth"); !teacher.empty())
    bad.push_back(teacher);
  for (const auto& p : bad) {
    const fs::path out = root / ("out-" + p.stem().string());
    r = run_posekd(train_args(ann, images, out) + " --batch-size 2 --total-batches 2 --checkpoint " + p.string());
    EXPECT_EQ(r.status, 1) << p << "\n" << r.out;
    EXPECT_TRUE(contains(r.out, "posekd: error: " + p.string() + ": ")) << r.out;
    EXPECT_FALSE(fs::exists(out / "latest.pth")) << p;
    EXPECT_FALSE(fs::exists(out / "batch_000001.pth")) << p;
  }

  // Output under a regular file (as root, chmod cannot make a directory unwritable).
  spit(root / "plainfile", "x");
  r = run_posekd(train_args(ann, images, root / "plainfile" / "out") + " --total-batches 1");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, (root / "plainfile" / "out").string() + ": cannot create the output directory")) << r.out;

  // Full disk: files may not grow beyond 8 KiB; the resumed run's checkpoint write fails.
  const std::string batch1 = posekd::testing::read_text(base / "batch_000001.pth");
  ASSERT_GT(batch1.size(), 4096u);
  r = run_posekd(train_args(ann, images, base) + " --batch-size 2 --total-batches 2 --save-every 1",
                 "trap \"\" XFSZ; ulimit -f 8; ");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "posekd: error: " + base.string() + "/")) << r.out;
  EXPECT_EQ(posekd::testing::read_text(base / "latest.pth"), ckpt) << "latest.pth changed by a failed write";
  EXPECT_EQ(posekd::testing::read_text(base / "batch_000001.pth"), batch1);
  for (const auto& e : fs::directory_iterator(base))
    EXPECT_FALSE(contains(e.path().filename().string(), ".tmp.")) << "temp file left: " << e.path();
  // ... and with space again the run resumes from the intact checkpoint.
  r = run_posekd(train_args(ann, images, base) + " --batch-size 2 --total-batches 2 --save-every 1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(fs::exists(base / "batch_000002.pth"));

  // NaN weights -> NaN losses: skipped, counted, and after 20 in a row a clear stop.
  auto v = posekd::io::load_torch_file((root / "base" / "batch_000001.pth").string());
  auto model = posekd::io::to_state_dict(v.at("model"));
  posekd::io::Value nan_model = posekd::io::Value::dict();
  for (auto& [k, t] : model)
    nan_model.set(k, posekd::io::Value::tensor(t.is_floating_point() ? torch::full_like(t, NAN) : t));
  v.set("model", nan_model);
  posekd::io::save_torch_file((root / "nan.pth").string(), v);
  r = run_posekd(train_args(ann, images, root / "out-nan") + " --batch-size 1 --total-batches 40 --checkpoint " +
                 (root / "nan.pth").string());
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "Batch 2: non-finite loss (nan); step skipped (1 in a row, 1 in total)")) << r.out;
  EXPECT_TRUE(contains(r.out, "20 non-finite losses in a row; stopping")) << r.out;
  EXPECT_FALSE(fs::exists(root / "out-nan" / "latest.pth"));
  fs::remove_all(root);
}
