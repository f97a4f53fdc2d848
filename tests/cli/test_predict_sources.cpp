// `posekd predict` on folders, glob patterns, a video the test writes itself (cv::VideoWriter), a
// camera index that does not exist; batched inference and --score-threshold.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/wait.h>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "posekd/ai8x/state_dict.h"
#include "posekd/model/student.h"
#include "posekd/train/checkpoint.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

struct PredRun {
  int rc = -1;
  std::string err;
};

PredRun run_predict(const std::string& args) {
  const auto dir = posekd::testing::temp_dir("predsrc-out");
  const auto e = dir / "err.txt";
  const int rc =
      std::system((posekd::testing::cli() + " predict " + args + " > /dev/null 2> '" + e.string() + "'").c_str());
  PredRun r{WEXITSTATUS(rc), posekd::testing::read_text(e)};
  fs::remove_all(dir);
  return r;
}

nlohmann::json poses_json(const fs::path& out) {
  return nlohmann::json::parse(posekd::testing::read_text(out / "poses.json"));
}

}  // namespace

class PredictSources : public ::testing::Test {
 protected:
  static fs::path dir_, ckpt_;
  static void SetUpTestSuite() {
    dir_ = posekd::testing::temp_dir("predsrc");
    torch::manual_seed(3);
    auto s = posekd::model::make_student("ai85pose");
    posekd::train::Checkpoint c;
    c.model = posekd::ai8x::state_dict(*s);
    c.has_extras = true;
    c.arch = "ai85pose";
    ckpt_ = dir_ / "student.pth";
    posekd::train::save_checkpoint(ckpt_.string(), c);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
};
fs::path PredictSources::dir_, PredictSources::ckpt_;

TEST_F(PredictSources, FoldersAndGlobPatternsExpandToTheirImages) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  const auto out = dir_ / "folder";
  const std::string pattern = (coco / "val2017" / "*0785.jpg").string();
  auto r = run_predict((coco / "val2017").string() + " '" + pattern + "' '" + (dir_ / "none*.png").string() +
                       "' --checkpoint " + ckpt_.string() + " --batch-size 3 --threads 2 -o " + out.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = poses_json(out);
  ASSERT_EQ(j.at("images").size(), 5u);  // the folder's 4, then the pattern's 1
  std::vector<std::string> files;
  for (const auto& im : j["images"]) files.push_back(im.at("file"));
  EXPECT_EQ(files[0], (coco / "val2017" / "000000000785.jpg").string());  // sorted
  EXPECT_EQ(files[3], (coco / "val2017" / "000000197388.jpg").string());
  EXPECT_EQ(files[4], files[0]);
  // The same stem twice: the second drawing does not overwrite the first.
  EXPECT_EQ(j["images"][0].at("output"), (out / "000000000785_pose.jpg").string());
  EXPECT_EQ(j["images"][4].at("output"), (out / "000000000785_2_pose.jpg").string());
  for (const auto& im : j["images"]) EXPECT_TRUE(fs::exists(im.at("output").get<std::string>()));
  ASSERT_EQ(j.at("unreadable").size(), 1u);
  EXPECT_NE(j["unreadable"][0].at("error").get<std::string>().find("no file matches this pattern"), std::string::npos);
}

TEST_F(PredictSources, BatchSizeDoesNotChangeThePosesAndTheThresholdFiltersThem) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  const auto a = dir_ / "b1", b = dir_ / "b4", c = dir_ / "thr";
  const std::string src = (coco / "val2017").string() + " --teacher " + teacher.string() + " --threads 2";
  ASSERT_EQ(run_predict(src + " --batch-size 1 -o " + a.string()).rc, 0);
  ASSERT_EQ(run_predict(src + " --batch-size 4 -o " + b.string()).rc, 0);
  const auto ja = poses_json(a), jb = poses_json(b);
  ASSERT_EQ(ja["images"].size(), 4u);
  std::vector<double> scores;
  for (size_t i = 0; i < 4; ++i) {
    const auto &pa = ja["images"][i]["persons"], &pb = jb["images"][i]["persons"];
    ASSERT_EQ(pa.size(), pb.size()) << "image " << i;
    for (size_t p = 0; p < pa.size(); ++p) {
      EXPECT_NEAR(pa[p]["score"].get<double>(), pb[p]["score"].get<double>(), 1e-3);
      scores.push_back(pa[p]["score"].get<double>());
    }
  }
  // The generated teacher finds 22-25 (random) people per image (make_teacher_fixtures.py).
  ASSERT_GE(scores.size(), 2u) << "the fixture teacher found fewer than 2 people: no threshold to test";
  std::sort(scores.begin(), scores.end());
  const double thr = (scores.front() + scores.back()) / 2;
  size_t above = 0;
  for (double s : scores) above += s >= thr;
  ASSERT_EQ(run_predict(src + " --batch-size 4 --score-threshold " + std::to_string(thr) + " -o " + c.string()).rc, 0);
  size_t kept = 0;
  const auto jc = poses_json(c);
  for (const auto& im : jc["images"])
    for (const auto& p : im["persons"]) {
      EXPECT_GE(p["score"].get<double>(), thr - 1e-3);
      ++kept;
    }
  EXPECT_EQ(kept, above);
  EXPECT_LT(kept, scores.size());
}

TEST_F(PredictSources, AVideoGivesAnAnnotatedVideoAndPosesPerFrame) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  // A 6-frame 160x120 MJPG video of a fixture image moving sideways.
  const auto video = dir_ / "walk.avi";
  {
    cv::Mat img = cv::imread((coco / "val2017" / "000000000785.jpg").string());
    ASSERT_FALSE(img.empty());
    cv::VideoWriter w(video.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 12.0, cv::Size(160, 120));
    ASSERT_TRUE(w.isOpened());
    for (int f = 0; f < 6; ++f) {
      cv::Mat frame;
      cv::resize(img(cv::Rect(f * 10, 0, img.cols - 60, img.rows)), frame, cv::Size(160, 120));
      w.write(frame);
    }
  }
  const auto out = dir_ / "video";
  auto r = run_predict(video.string() + " --checkpoint " + ckpt_.string() + " --batch-size 4 --threads 2 -o " +
                       out.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = poses_json(out);
  ASSERT_EQ(j.at("videos").size(), 1u);
  const auto& v = j["videos"][0];
  EXPECT_EQ(v.at("file"), video.string());
  EXPECT_EQ(v.at("width"), 160);
  EXPECT_EQ(v.at("height"), 120);
  EXPECT_NEAR(v.at("fps").get<double>(), 12.0, 1e-6);
  ASSERT_EQ(v.at("frames").size(), 6u);
  for (int f = 0; f < 6; ++f) EXPECT_EQ(v["frames"][f].at("frame"), f);
  cv::VideoCapture cap(v.at("output").get<std::string>());
  ASSERT_TRUE(cap.isOpened());
  int n = 0;
  cv::Mat frame;
  while (cap.read(frame)) {
    EXPECT_EQ(frame.size(), cv::Size(160, 120));
    ++n;
  }
  EXPECT_EQ(n, 6);
  // --max-frames stops early.
  const auto out3 = dir_ / "video3";
  ASSERT_EQ(run_predict(video.string() + " --checkpoint " + ckpt_.string() + " --max-frames 3 -o " + out3.string()).rc,
            0);
  EXPECT_EQ(poses_json(out3)["videos"][0]["frames"].size(), 3u);
}

TEST_F(PredictSources, ACameraThatCannotBeOpenedIsAOneLineError) {
  const auto out = dir_ / "cam";
  auto r = run_predict("63 --checkpoint " + ckpt_.string() + " -o " + out.string());
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("camera 63: cannot open the camera"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("posekd: error: predict: no image or video could be read"), std::string::npos) << r.err;
  const auto j = poses_json(out);
  ASSERT_EQ(j.at("unreadable").size(), 1u);
  EXPECT_EQ(j["unreadable"][0].at("file"), "camera 63");
}
