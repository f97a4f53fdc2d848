// Sample preparation: golden fixture (data/coco-sample), reduced decode, bad inputs, formats, fold.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/keypoints.h"
#include "posekd/data/sample.h"
#include "test_util.h"

namespace {
namespace fs = std::filesystem;
using namespace posekd::data;

c10::IValue load_fixture(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes);
}

torch::Tensor get(const c10::Dict<c10::IValue, c10::IValue>& d, const std::string& k) { return d.at(k).toTensor(); }

struct Golden : ::testing::Test {
  void SetUp() override {
    auto ann = posekd::testing::fixture_path("coco-sample/annotations/person_keypoints_val2017.json");
    auto fix = posekd::testing::fixture_path("targets/coco_sample_targets.pt");
    if (ann.empty() || fix.empty()) GTEST_SKIP() << "tests/fixtures/coco-sample or tests/fixtures/targets is absent";
    ds = load_coco(ann.string(), (ann.parent_path().parent_path() / "val2017").string());
    golden_iv = load_fixture(fix);
  }
  c10::impl::GenericDict golden() const { return golden_iv.toGenericDict(); }
  CocoDataset ds;
  c10::IValue golden_iv;
};

TEST_F(Golden, MatchesFixtureExactly) {
  SampleConfig cfg;
  cfg.reduced_decode = false;  // the fixture was made with a full decode + resize
  ASSERT_EQ(golden().size(), 4u);
  for (const auto& im : ds.images) {
    std::string stem = fs::path(im.file_name).stem().string();
    ASSERT_TRUE(golden().contains(stem)) << stem;
    auto g = golden().at(stem).toGenericDict();
    Sample s = prepare_sample(im, ds.image_dir, cfg);
    ASSERT_TRUE(s.ok) << s.error;
    EXPECT_EQ(s.image_id, im.id);
    EXPECT_DOUBLE_EQ(s.scale, get(g, "scale").item<double>()) << stem;
    EXPECT_TRUE(torch::equal(s.image, get(g, "image")))
        << stem << " max diff " << (s.image - get(g, "image")).abs().max().item<float>();
    EXPECT_LE((s.heatmaps - get(g, "heatmaps")).abs().max().item<float>(), 1e-6) << stem;
    EXPECT_LE((s.pafs - get(g, "pafs")).abs().max().item<float>(), 1e-6) << stem;
    EXPECT_EQ(s.mask.sum().item<float>(), 256.f);  // no crowd in coco-sample
    // keypoints18: conversion in the original image, scaled by s.
    auto k = get(g, "keypoints18");
    ASSERT_EQ(k.size(0), static_cast<int64_t>(im.persons.size()));
    auto ka = k.accessor<double, 3>();
    for (size_t p = 0; p < im.persons.size(); ++p) {
      auto kp = scale_keypoints(convert_keypoints(im.persons[p], im.width, im.height), s.scale);
      for (int j = 0; j < 18; ++j)
        for (int c = 0; c < 3; ++c)
          EXPECT_NEAR(kp[j][c], ka[p][j][c], 1e-9) << stem << " person " << p << " kp " << j << " c " << c;
    }
  }
}

TEST_F(Golden, ReducedDecodeKeepsTargetsAndIsClose) {
  // All coco-sample images are 500-640 px: >= 2x / 4x 128, so the reduced decode triggers.
  SampleConfig cfg;
  for (const auto& im : ds.images) {
    auto g = golden().at(fs::path(im.file_name).stem().string()).toGenericDict();
    Sample s = prepare_sample(im, ds.image_dir, cfg);
    ASSERT_TRUE(s.ok) << s.error;
    EXPECT_DOUBLE_EQ(s.scale, get(g, "scale").item<double>());
    EXPECT_LE((s.heatmaps - get(g, "heatmaps")).abs().max().item<float>(), 1e-6);
    EXPECT_LE((s.pafs - get(g, "pafs")).abs().max().item<float>(), 1e-6);
    auto diff = (s.image - get(g, "image")).abs();
    EXPECT_FALSE(torch::equal(s.image, get(g, "image")));         // it really took the other path
    EXPECT_LT(diff.mean().item<float>(), 0.06f) << im.file_name;  // ~8 grey levels on average
    // Padding identical.
    int nh = static_cast<int>(im.height * s.scale);
    EXPECT_TRUE(torch::equal(s.image.slice(1, nh), get(g, "image").slice(1, nh)));
  }
}

TEST_F(Golden, SeedCompatTargetsReproduceTheChannelBug) {
  SampleConfig cfg;
  cfg.reduced_decode = false;
  cfg.seed_compat_targets = true;
  const auto& im = ds.images[0];  // one person, all keypoints
  Sample s = prepare_sample(im, ds.image_dir, cfg);
  ASSERT_TRUE(s.ok);
  auto g = golden().at(fs::path(im.file_name).stem().string()).toGenericDict();
  auto gh = get(g, "heatmaps");
  EXPECT_LE((s.heatmaps[0] - gh[0]).abs().max().item<float>(), 1e-6);  // nose agrees
  EXPECT_EQ(s.heatmaps[17].abs().sum().item<float>(), 0.f);            // channel 17 always empty
  // Channel 1 holds COCO left_eye instead of the neck.
  EXPECT_GT((s.heatmaps[1] - gh[1]).abs().max().item<float>(), 0.1f);
  EXPECT_LE((s.heatmaps[1] - gh[15]).abs().max().item<float>(), 1e-6);  // OpenPose 15 = l_eye
}

CocoImage one_image(const std::string& file, int w = 64, int h = 48) {
  CocoImage im;
  im.id = 1;
  im.file_name = file;
  im.width = w;
  im.height = h;
  CocoPerson p;
  p.num_keypoints = 1;
  p.keypoints[0] = 10;
  p.keypoints[1] = 10;
  p.keypoints[2] = 2;
  im.persons.push_back(p);
  return im;
}

void expect_bad(const fs::path& dir, const std::string& file, const std::string& what) {
  Sample s = prepare_sample(one_image(file), dir.string(), SampleConfig{});
  EXPECT_FALSE(s.ok) << file;
  EXPECT_NE(s.error.find((dir / file).string()), std::string::npos) << s.error;
  EXPECT_NE(s.error.find(what), std::string::npos) << s.error;
  EXPECT_EQ(s.error.find('\n'), std::string::npos);
  EXPECT_FALSE(s.image.defined());
}

TEST(Sample, BadInputsGiveOneLineErrors) {
  auto dir = posekd::testing::temp_dir("sample-bad");
  cv::Mat img(48, 64, CV_8UC3, cv::Scalar(10, 20, 30));
  cv::randu(img, 0, 255);
  std::vector<uchar> jpg;
  cv::imencode(".jpg", img, jpg);
  std::string full(jpg.begin(), jpg.end());
  posekd::testing::write_text(dir / "good.jpg", full);
  posekd::testing::write_text(dir / "truncated.jpg", full.substr(0, full.size() / 2));
  posekd::testing::write_text(dir / "empty.jpg", "");
  posekd::testing::write_text(dir / "text.jpg", "this is not an image\n");
  std::string corrupt = full;
  for (size_t i = 2; i < 200 && i < corrupt.size(); ++i) corrupt[i] = static_cast<char>(0x5A);
  posekd::testing::write_text(dir / "corrupt.jpg", corrupt);
  // A PNG header claiming 20000 x 20000 pixels.
  std::string png("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x4e\x20\0\0\x4e\x20\x08\x02\0\0\0", 29);
  posekd::testing::write_text(dir / "huge.png", png + std::string(64, '\0'));

  EXPECT_TRUE(prepare_sample(one_image("good.jpg"), dir.string(), SampleConfig{}).ok);
  expect_bad(dir, "missing.jpg", "cannot open");
  expect_bad(dir, "truncated.jpg", "truncated");
  expect_bad(dir, "empty.jpg", "empty");
  expect_bad(dir, "text.jpg", "cannot decode");
  expect_bad(dir, "corrupt.jpg", "");
  expect_bad(dir, "huge.png", "too large");
  fs::remove_all(dir);
}

TEST(Sample, GrayscaleSixteenBitAndPng) {
  auto dir = posekd::testing::temp_dir("sample-formats");
  cv::Mat g8(48, 64, CV_8UC1);
  cv::randu(g8, 0, 255);
  cv::Mat g16;
  g8.convertTo(g16, CV_16U, 256.0);
  cv::Mat bgr;
  cv::cvtColor(g8, bgr, cv::COLOR_GRAY2BGR);
  ASSERT_TRUE(cv::imwrite((dir / "gray16.png").string(), g16));
  ASSERT_TRUE(cv::imwrite((dir / "gray8.png").string(), g8));
  ASSERT_TRUE(cv::imwrite((dir / "bgr.png").string(), bgr));
  SampleConfig cfg;
  Sample a = prepare_sample(one_image("gray16.png"), dir.string(), cfg);
  Sample b = prepare_sample(one_image("gray8.png"), dir.string(), cfg);
  Sample c = prepare_sample(one_image("bgr.png"), dir.string(), cfg);
  ASSERT_TRUE(a.ok && b.ok && c.ok) << a.error << b.error << c.error;
  EXPECT_TRUE(torch::equal(a.image, c.image));
  EXPECT_TRUE(torch::equal(b.image, c.image));
  EXPECT_DOUBLE_EQ(c.scale, 2.0);
  // Reference: resize to (128, 96) bilinear, pad with 128, (x - 128) / 128.
  cv::Mat r;
  cv::resize(bgr, r, cv::Size(128, 96));
  EXPECT_FLOAT_EQ(c.image[1][5][7].item<float>(), (r.at<cv::Vec3b>(5, 7)[1] - 128.f) / 128.f);
  EXPECT_EQ(c.image[0][100][3].item<float>(), 0.f);  // padding
  // Keypoint (10,10) -> (20,20) in input pixels: heatmap peak near cell (2,2).
  EXPECT_NEAR(c.heatmaps[0][2][2].item<float>(), std::exp(-(0.25 + 0.25) / 98), 1e-6);
  fs::remove_all(dir);
}

TEST(Sample, HeaderSizeJpegAndPng) {
  cv::Mat img(37, 53, CV_8UC3, cv::Scalar(1, 2, 3));
  std::vector<uchar> buf;
  int w = 0, h = 0;
  for (const char* ext : {".jpg", ".png"}) {
    cv::imencode(ext, img, buf);
    ASSERT_TRUE(image_header_size(std::string(buf.begin(), buf.end()), w, h)) << ext;
    EXPECT_EQ(w, 53);
    EXPECT_EQ(h, 37);
  }
  EXPECT_FALSE(image_header_size("GIF89a....", w, h));
}

TEST(FoldInput, Ai8xChannelOrder) {
  auto x = torch::arange(2 * 3 * 4 * 6, torch::kFloat32).reshape({2, 3, 4, 6});
  auto y = fold_input(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 12, 2, 3}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int c = 0; c < 3; ++c) {
        auto ref = x.slice(1, c, c + 1).squeeze(1).slice(1, i, 4, 2).slice(2, j, 6, 2);
        EXPECT_TRUE(torch::equal(y.select(1, (i * 2 + j) * 3 + c), ref)) << i << j << c;
      }
  // Hand check: batch 0, channel (1*2+0)*3+2 = 8 at (1, 2) = x[0, 2, 3, 4] = 2*24 + 3*6 + 4 = 70.
  EXPECT_EQ(y[0][8][1][2].item<float>(), 70.f);
  EXPECT_THROW(fold_input(torch::zeros({1, 3, 5, 4})), posekd::Error);
}

}  // namespace
