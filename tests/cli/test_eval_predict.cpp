// `posekd eval` and `posekd predict` end to end on tests/fixtures/coco-sample: AP 1.0 for a
// results file of the ground truth, a fresh student / a QAT student (float and int8) / the teacher
// fixture through eval, predict's images and JSON, one-line errors.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include <sys/wait.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "posekd/ai8x/state_dict.h"
#include "posekd/data/coco_json.h"
#include "posekd/infer/coco_results.h"
#include "posekd/infer/evaluate.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/student.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/trainer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

struct Run {
  int rc = -1;
  std::string out, err;
};

Run run_cli(const std::string& args) {
  auto dir = posekd::testing::temp_dir("evalcli-out");
  const fs::path o = dir / "out.txt", e = dir / "err.txt";
  int rc = std::system((posekd::testing::cli() + " " + args + " > " + o.string() + " 2> " + e.string()).c_str());
  Run r{WEXITSTATUS(rc), posekd::testing::read_text(o), posekd::testing::read_text(e)};
  fs::remove_all(dir);
  return r;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream is(s);
  std::string l;
  while (std::getline(is, l))
    if (!l.empty()) v.push_back(l);
  return v;
}

// The 10 summary lines of pycocotools, stats parsed from " = x.xxx".
std::vector<double> summary_stats(const std::string& out) {
  std::vector<double> st;
  for (const auto& l : lines(out)) {
    if (l.find("Average ") == std::string::npos) continue;
    st.push_back(std::stod(l.substr(l.rfind('=') + 1)));
  }
  return st;
}

std::string data_args(const fs::path& coco) {
  return "--data " + coco.string() + " --split val2017 --threads 2 --quiet";
}

}  // namespace

// Outside the anonymous namespace: the TEST_F classes derive from it (-Wsubobject-linkage in the
// unity build otherwise).
class EvalCli : public ::testing::Test {
 protected:
  static fs::path dir_, fresh_, qat_;
  static void SetUpTestSuite() {
    const auto coco = posekd::testing::fixture_path("coco-sample");
    if (coco.empty()) return;
    dir_ = posekd::testing::temp_dir("evalcli");
    // A freshly initialised float student.
    torch::manual_seed(11);
    auto s = posekd::model::make_student("ai85pose");
    posekd::train::Checkpoint c;
    c.model = posekd::ai8x::state_dict(*s);
    c.has_extras = true;
    c.arch = "ai85pose";
    fresh_ = dir_ / "fresh.pth";
    posekd::train::save_checkpoint(fresh_.string(), c);
    // A QAT student: 3 batches, QAT from 60% on.
    posekd::train::TrainConfig t;
    t.ann = (coco / "annotations" / "person_keypoints_val2017.json").string();
    t.images = (coco / "val2017").string();
    t.output = (dir_ / "train").string();
    t.arch = "ai85pose";
    t.batch_size = 2;
    t.total_batches = 3;
    t.calib_batches = 1;
    t.threads = 2;
    t.workers = 1;
    t.quiet = true;
    posekd::train::run_training(t);
    qat_ = dir_ / "train" / "latest.pth";
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
};
fs::path EvalCli::dir_, EvalCli::fresh_, EvalCli::qat_;

TEST_F(EvalCli, ResultsFileOfTheGroundTruthHasApOne) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto gt = posekd::data::load_coco((coco / "annotations" / "person_keypoints_val2017.json").string(), "");
  std::vector<posekd::infer::Detection> dts;
  for (const auto& im : gt.images)
    for (const auto& p : im.persons)
      if (p.num_keypoints > 0) dts.push_back({im.id, p.keypoints, 1.f});
  ASSERT_GT(dts.size(), 5u);
  const auto f = dir_ / "gt_results.json";
  posekd::infer::write_results_json(f.string(), dts);
  auto r = run_cli("eval " + data_args(coco) + " --results " + f.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  auto st = summary_stats(r.out);
  ASSERT_EQ(st.size(), 10u) << r.out;
  EXPECT_EQ(st[0], 1.0) << r.out;  // AP
  EXPECT_EQ(st[1], 1.0) << r.out;  // AP50
  EXPECT_EQ(st[5], 1.0) << r.out;  // AR
  EXPECT_NE(r.out.find(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ] = 1.000"),
            std::string::npos)
      << r.out;

  // The same file with one person's keypoints moved far away: AP drops below 1.
  dts[0].keypoints[0] += 200;
  for (int k = 0; k < 17; ++k) dts[0].keypoints[3 * k] += 200;
  posekd::infer::write_results_json(f.string(), dts);
  auto r2 = run_cli("eval " + data_args(coco) + " --results " + f.string());
  ASSERT_EQ(r2.rc, 0) << r2.err;
  auto st2 = summary_stats(r2.out);
  ASSERT_EQ(st2.size(), 10u);
  EXPECT_LT(st2[0], 1.0);

  // --errors: every person but the moved one matched, nothing missing, the found keypoints exact.
  auto r3 = run_cli("eval " + data_args(coco) + " --results " + f.string() + " --errors");
  ASSERT_EQ(r3.rc, 0) << r3.err;
  EXPECT_EQ(summary_stats(r3.out), st2);
  EXPECT_NE(r3.out.find(fmt::format("errors: {} of {} people matched", dts.size() - 1, dts.size())), std::string::npos)
      << r3.out;
  EXPECT_NE(r3.out.find("errors: 0.0% of their"), std::string::npos) << r3.out;
  EXPECT_NE(r3.out.find("off by 0.00 px median"), std::string::npos) << r3.out;
}

// `eval --ground-truth`: the annotations' own maps through the decoder (the ceiling), the same AP
// as the library computes; --errors then shows what the decoder alone loses.
TEST_F(EvalCli, GroundTruthMapsGiveTheCeiling) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto gt = posekd::data::load_coco((coco / "annotations" / "person_keypoints_val2017.json").string(),
                                    (coco / "val2017").string());
  posekd::infer::EvalConfig cfg;
  const auto want = posekd::infer::evaluate_model(gt, posekd::infer::ground_truth_predictor(gt, cfg), cfg);
  auto r = run_cli("eval " + data_args(coco) + " --ground-truth --errors");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto st = summary_stats(r.out);
  ASSERT_EQ(st.size(), 10u) << r.out;
  EXPECT_NEAR(st[0], want.stats[0], 5e-4) << r.out;  // printed with 3 decimals
  EXPECT_GT(st[0], 0.3) << r.out;
  EXPECT_NE(r.out.find("errors: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("people matched"), std::string::npos) << r.out;
  // --short-limb 0: upstream's grouping, as the library computes it
  cfg.grouping.short_limb = 0.f;
  const auto upstream = posekd::infer::evaluate_model(gt, posekd::infer::ground_truth_predictor(gt, cfg), cfg);
  auto r0 = run_cli("eval " + data_args(coco) + " --ground-truth --short-limb 0");
  ASSERT_EQ(r0.rc, 0) << r0.err;
  ASSERT_EQ(summary_stats(r0.out).size(), 10u) << r0.out;
  EXPECT_NEAR(summary_stats(r0.out)[0], upstream.stats[0], 5e-4) << r0.out;
  auto both = run_cli("eval " + data_args(coco) + " --ground-truth --teacher x.pth");
  EXPECT_NE(both.rc, 0);
  EXPECT_NE(both.err.find("exactly one of"), std::string::npos) << both.err;
}

TEST_F(EvalCli, FreshStudentRunsEndToEndAndWritesValidResults) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  const auto out = dir_ / "fresh_results.json";
  auto r =
      run_cli("eval " + data_args(coco) + " --checkpoint " + fresh_.string() + " --batch-size 3 -o " + out.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(summary_stats(r.out).size(), 10u) << r.out;
  EXPECT_EQ(lines(r.out).size(), 10u) << r.out;
  auto j = nlohmann::json::parse(posekd::testing::read_text(out));
  ASSERT_TRUE(j.is_array());
  for (const auto& d : j) {
    EXPECT_EQ(d.at("category_id"), 1);
    EXPECT_EQ(d.at("keypoints").size(), 51u);
    EXPECT_TRUE(d.at("score").is_number());
  }
  // The written file evaluates to the same numbers.
  auto r2 = run_cli("eval " + data_args(coco) + " --results " + out.string());
  ASSERT_EQ(r2.rc, 0) << r2.err;
  EXPECT_EQ(summary_stats(r2.out), summary_stats(r.out));
}

TEST_F(EvalCli, QatCheckpointInt8EqualsQatAndFloatCheckpointIsRefused) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  ASSERT_TRUE(fs::exists(qat_));
  ASSERT_EQ(posekd::train::load_checkpoint(qat_.string()).phase, "qat");
  const auto a = dir_ / "qat.json", b = dir_ / "int8.json";
  auto rq = run_cli("eval " + data_args(coco) + " --checkpoint " + qat_.string() + " -o " + a.string());
  auto ri = run_cli("eval " + data_args(coco) + " --checkpoint " + qat_.string() + " --int8 -o " + b.string());
  ASSERT_EQ(rq.rc, 0) << rq.err;
  ASSERT_EQ(ri.rc, 0) << ri.err;
  EXPECT_NE(ri.err.find("int8 student"), std::string::npos) << ri.err;
  EXPECT_EQ(nlohmann::json::parse(posekd::testing::read_text(a)), nlohmann::json::parse(posekd::testing::read_text(b)));
  EXPECT_EQ(rq.out, ri.out);

  auto bad = run_cli("eval " + data_args(coco) + " --checkpoint " + fresh_.string() + " --int8");
  EXPECT_NE(bad.rc, 0);
  ASSERT_EQ(lines(bad.err).size(), 1u) << bad.err;
  EXPECT_NE(bad.err.find(fresh_.string()), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("QAT"), std::string::npos) << bad.err;
  EXPECT_TRUE(bad.out.empty()) << bad.out;
}

TEST_F(EvalCli, TeacherFixtureRunsThroughEval) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  const auto res = dir_ / "teacher_results.json";
  auto r = run_cli("eval " + data_args(coco) + " --teacher " + teacher.string() +
                   " --precision fp32 --batch-size 2 -o " + res.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto stats = summary_stats(r.out);
  ASSERT_EQ(stats.size(), 10u) << r.out;
  EXPECT_NE(r.err.find("4 images, input 368"), std::string::npos) << r.err;
  // The same numbers as the library computes with the same loader: AP/AR to the printed 3 decimals,
  // and the same detections in the results file.
  const auto gt = posekd::data::load_coco((coco / "annotations/person_keypoints_val2017.json").string(),
                                          (coco / "val2017").string());
  const auto t = posekd::model::load_teacher(teacher.string());
  std::vector<posekd::infer::Detection> dts;
  const auto want = posekd::infer::evaluate_model(gt, posekd::infer::teacher_predictor(t),
                                                  posekd::infer::teacher_eval_config(t.info), &dts);
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(stats[i], want.stats[i], 5.1e-4) << "stat " << i;
  EXPECT_NE(r.err.find(std::to_string(want.num_detections) + " detections"), std::string::npos) << r.err;
  const auto written = posekd::infer::read_results_json(res.string());
  ASSERT_EQ(written.size(), dts.size());
  for (size_t i = 0; i < dts.size(); ++i) {
    EXPECT_EQ(written[i].image_id, dts[i].image_id);
    EXPECT_NEAR(written[i].score, dts[i].score, 1e-4);
  }
  // Scoring the written results gives the printed numbers again.
  auto again = run_cli("eval " + data_args(coco) + " --results " + res.string());
  ASSERT_EQ(again.rc, 0) << again.err;
  const auto rescored = summary_stats(again.out);
  ASSERT_EQ(rescored.size(), 10u) << again.out;
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(rescored[i], stats[i], 1.1e-3) << "stat " << i;
}

// A teacher trained by posekd records its input size and stages: eval runs it at that size and
// leaves no weight random.
TEST_F(EvalCli, TeacherWithPosekdMetadataRunsAtItsOwnSize) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  auto full = posekd::io::to_state_dict(posekd::io::load_torch_file(teacher.string()).at("state_dict"));
  posekd::io::StateDict no_stages;
  for (const auto& kv : full)
    if (kv.first.rfind("refinement_stages.", 0) != 0) no_stages.push_back(kv);
  auto root = posekd::io::Value::dict();
  root.set("state_dict", posekd::io::to_value(no_stages));
  auto meta = posekd::io::Value::dict();
  meta.set("input_size", posekd::io::Value::integer(128));
  meta.set("input_scale", posekd::io::Value::floating(1.0));
  meta.set("num_refinement_stages", posekd::io::Value::integer(0));
  root.set("posekd_teacher", meta);
  const auto path = dir_ / "posekd_teacher.pth";
  posekd::io::save_torch_file(path.string(), root);
  auto r = run_cli("eval " + data_args(coco) + " --teacher " + path.string() + " --subset 2 --precision fp32");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("2 images, input 128"), std::string::npos) << r.err;
  const auto gt = posekd::data::load_coco((coco / "annotations/person_keypoints_val2017.json").string(),
                                          (coco / "val2017").string(), [] {
                                            posekd::data::CocoLoadOptions lo;
                                            lo.subset = 2;
                                            return lo;
                                          }());
  const auto t = posekd::model::load_teacher(path.string());
  EXPECT_EQ(t.report.missing, 0);
  const auto want = posekd::infer::evaluate_model(gt, posekd::infer::teacher_predictor(t),
                                                  posekd::infer::teacher_eval_config(t.info));
  const auto stats = summary_stats(r.out);
  ASSERT_EQ(stats.size(), 10u) << r.out;
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(stats[i], want.stats[i], 5.1e-4) << "stat " << i;
}

TEST_F(EvalCli, PredictWritesDrawnImagesAndPosesJson) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  const auto out = dir_ / "pred";
  const auto img1 = coco / "val2017" / "000000000785.jpg", img2 = coco / "val2017" / "000000040083.jpg";
  auto r = run_cli("predict " + img1.string() + " " + img2.string() + " " + (dir_ / "missing.jpg").string() +
                   " --checkpoint " + fresh_.string() + " --threads 2 -o " + out.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const auto& src : {img1, img2}) {
    const auto dst = out / (src.stem().string() + "_pose.jpg");
    ASSERT_TRUE(fs::exists(dst)) << dst;
    cv::Mat a = cv::imread(src.string()), b = cv::imread(dst.string());
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(a.size(), b.size());
  }
  auto j = nlohmann::json::parse(posekd::testing::read_text(out / "poses.json"));
  ASSERT_EQ(j.at("images").size(), 2u);
  EXPECT_EQ(j["images"][0].at("file"), img1.string());
  EXPECT_EQ(j["images"][0].at("width"), cv::imread(img1.string()).cols);
  for (const auto& im : j["images"])
    for (const auto& p : im.at("persons")) {
      EXPECT_EQ(p.at("keypoints").size(), 51u);
      EXPECT_EQ(p.at("keypoint_scores").size(), 17u);
    }
  ASSERT_EQ(j.at("unreadable").size(), 1u);
  EXPECT_NE(r.err.find("missing.jpg"), std::string::npos) << r.err;
}

TEST_F(EvalCli, ErrorsAreOneClearLine) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  const std::string missing = (dir_ / "nope.pth").string();
  for (const std::string& args : {"eval " + data_args(coco) + " --checkpoint " + missing,
                                  "predict x.jpg --checkpoint " + missing + " -o " + (dir_ / "p2").string()}) {
    auto r = run_cli(args);
    EXPECT_NE(r.rc, 0) << args;
    ASSERT_EQ(lines(r.err).size(), 1u) << r.err;
    EXPECT_NE(r.err.find(missing), std::string::npos) << r.err;
  }
  const auto junk = dir_ / "junk.json";
  std::ofstream(junk) << "[{\"image_id\": 785, ";
  auto r = run_cli("eval " + data_args(coco) + " --results " + junk.string());
  EXPECT_NE(r.rc, 0);
  ASSERT_EQ(lines(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find(junk.string()), std::string::npos) << r.err;
  auto none = run_cli("eval " + data_args(coco));
  EXPECT_NE(none.rc, 0);
  EXPECT_EQ(lines(none.err).size(), 1u) << none.err;
}

// `summary --checkpoint F` reads the architecture (and the QAT layers' bits) from the checkpoint;
// `--qat-policy P` counts the weights at the policy's bits.
TEST_F(EvalCli, SummaryOfACheckpointUsesItsWeightBits) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto r = run_cli("summary --checkpoint " + qat_.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("student ai85pose on MAX78000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kernel memory: 384048 / 442368 bytes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("verdict: FITS MAX78000"), std::string::npos) << r.out;
  const auto policy = dir_ / "policy4.yaml";
  std::ofstream(policy) << "start_batch: 1\nweight_bits: 4\n";
  r = run_cli("summary --checkpoint " + fresh_.string() + " --qat-policy " + policy.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("kernel memory: 192024 / 442368 bytes"), std::string::npos) << r.out;
  r = run_cli("summary --checkpoint " + (dir_ / "absent.pth").string());
  EXPECT_NE(r.rc, 0);
  ASSERT_EQ(lines(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("absent.pth"), std::string::npos) << r.err;
}
