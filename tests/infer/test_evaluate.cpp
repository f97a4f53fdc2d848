// Predictors and dataset evaluation (infer/evaluate.h) on tests/fixtures/coco-sample.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "posekd/ai8x/policy.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/sample.h"
#include "posekd/infer/evaluate.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace posekd;

namespace {

data::CocoDataset sample_dataset(const fs::path& coco) {
  return data::load_coco((coco / "annotations" / "person_keypoints_val2017.json").string(),
                         (coco / "val2017").string());
}

// A predictor that "sees" the ground truth: returns the training targets of whichever prepared
// image it is given (matched by pixel equality).
infer::PredictFn oracle(const data::CocoDataset& ds, const infer::EvalConfig& cfg) {
  data::SampleConfig sc;
  sc.input_size = cfg.input_size;
  sc.stride = cfg.stride;
  sc.reduced_decode = cfg.reduced_decode;
  auto samples = std::make_shared<std::vector<data::Sample>>();
  for (const auto& im : ds.images) {
    auto s = data::prepare_sample(im, ds.image_dir, sc);
    if (s.ok) samples->push_back(s);
  }
  return [samples](const torch::Tensor& images) {
    std::vector<torch::Tensor> h, p;
    for (int64_t b = 0; b < images.size(0); ++b) {
      const data::Sample* found = nullptr;
      for (const auto& s : *samples)
        if (s.image.equal(images[b])) found = &s;
      if (!found) throw Error("oracle: unknown image");
      h.push_back(found->heatmaps);
      p.push_back(found->pafs);
    }
    return std::make_pair(torch::stack(h), torch::stack(p));
  };
}

}  // namespace

TEST(Evaluate, GroundTruthMapsDecodeBackToTheAnnotationsInOriginalCoordinates) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto ds = sample_dataset(coco);
  ASSERT_EQ(ds.images.size(), 4u);
  auto cfg = infer::teacher_eval_config();  // 368 input, 46x46 maps: fine enough to resolve people
  cfg.batch_size = 3;                       // 2 batches, the second partial
  infer::PredictStats st;
  std::vector<infer::Detection> dts;
  auto r = infer::evaluate_model(ds, oracle(ds, cfg), cfg, &dts, &st);
  EXPECT_EQ(st.images, 4);
  EXPECT_EQ(st.unreadable, 0);
  EXPECT_EQ(st.people, static_cast<int64_t>(dts.size()));
  EXPECT_EQ(r.num_images, 4);
  // If the letterbox mapping were off (e.g. coordinates left in input pixels) AP would collapse.
  EXPECT_GT(r.stats[0], 0.6) << infer::format_summary(r.stats);
  EXPECT_GT(r.stats[1], 0.8) << infer::format_summary(r.stats);
  // Each detection's nose-or-any keypoint lies close to some annotated keypoint of its image.
  int close = 0, total = 0;
  for (const auto& d : dts) {
    const auto& im = *std::find_if(ds.images.begin(), ds.images.end(), [&](auto& i) { return i.id == d.image_id; });
    for (int k = 0; k < 17; ++k) {
      if (d.keypoints[3 * k + 2] <= 0) continue;
      ++total;
      double best = 1e9;
      for (const auto& p : im.persons)
        if (p.keypoints[3 * k + 2] > 0)
          best = std::min<double>(best, std::hypot(p.keypoints[3 * k] - d.keypoints[3 * k],
                                                   p.keypoints[3 * k + 1] - d.keypoints[3 * k + 1]));
      // one map cell is 8 input pixels = 8 / scale original pixels (scale = 368 / 640)
      if (best < 8.0 * 640 / 368) ++close;
    }
  }
  ASSERT_GT(total, 30);
  EXPECT_GT(close, total * 9 / 10) << close << " of " << total;

  // An unreadable image is counted, reported and skipped; with no people in it, AP is unchanged.
  auto bad = ds;
  data::CocoImage missing;
  missing.id = 999999;
  missing.file_name = "does_not_exist.jpg";
  missing.width = missing.height = 100;
  bad.images.insert(bad.images.begin() + 1, missing);
  infer::PredictStats st2;
  auto r2 = infer::evaluate_model(bad, oracle(ds, cfg), cfg, nullptr, &st2);
  EXPECT_EQ(st2.images, 5);
  EXPECT_EQ(st2.unreadable, 1);
  ASSERT_EQ(st2.errors.size(), 1u);
  EXPECT_NE(st2.errors[0].find("does_not_exist.jpg"), std::string::npos) << st2.errors[0];
  EXPECT_EQ(r2.num_images, 5);
  EXPECT_EQ(r2.stats, r.stats);
}

TEST(Evaluate, BadPredictorOutputIsAClearError) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto ds = sample_dataset(coco);
  ds.images.resize(1);
  infer::EvalConfig cfg;
  infer::PredictFn wrong = [](const torch::Tensor& x) {
    return std::make_pair(torch::zeros({x.size(0), 18, 16, 16}), torch::zeros({x.size(0), 38, 16, 16}));
  };
  try {
    infer::predict_dataset(ds, wrong, cfg);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("heatmaps"), std::string::npos) << e.what();
  }
}

TEST(Evaluate, Int8StudentEqualsQatStudentOnPreparedImages) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto ds = sample_dataset(coco);
  data::SampleConfig sc;
  std::vector<torch::Tensor> imgs;
  for (const auto& im : ds.images) imgs.push_back(data::prepare_sample(im, ds.image_dir, sc).image);
  auto batch = torch::stack(imgs);

  torch::manual_seed(3);
  auto s = model::make_student("ai85pose");
  // The float student has no quantized layers: int8 is refused.
  try {
    infer::int8_predictor(*s, "float.pth");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("float.pth"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("QAT"), std::string::npos);
  }
  ai8x::QatPolicy policy;
  policy.start_epoch = 1;
  int n = 0;
  model::fuse_and_calibrate(
      *s,
      [&]() -> std::optional<torch::Tensor> {
        if (n++ == 1) return std::nullopt;
        return data::fold_input(batch, 2);
      },
      policy);
  // Both predictors run through the whole dataset path (2 images); their maps are recorded.
  ds.images.resize(2);
  torch::Tensor qat_heat, qat_paf, int8_heat, int8_paf;
  auto recording = [](infer::PredictFn f, torch::Tensor* h, torch::Tensor* p) -> infer::PredictFn {
    return [f, h, p](const torch::Tensor& x) {
      auto out = f(x);
      *h = out.first;
      *p = out.second;
      return out;
    };
  };
  infer::EvalConfig cfg;
  cfg.batch_size = 2;
  // An untrained net: let every local maximum and every positive limb through, so people appear.
  cfg.peaks.threshold = 0.0f;
  cfg.grouping.min_paf_score = -1e9f;
  cfg.grouping.min_success_ratio = -1;
  cfg.grouping.min_count = 2;
  cfg.grouping.min_mean_score = -1e9;
  auto a = infer::predict_dataset(ds, recording(infer::student_predictor(s), &qat_heat, &qat_paf), cfg);
  auto b = infer::predict_dataset(ds, recording(infer::int8_predictor(*s, "qat"), &int8_heat, &int8_paf), cfg);
  ASSERT_EQ(int8_heat.sizes(), (std::vector<int64_t>{2, 19, 16, 16}));
  ASSERT_EQ(int8_paf.sizes(), (std::vector<int64_t>{2, 38, 16, 16}));
  EXPECT_GT(qat_heat.abs().sum().item<double>(), 0);
  EXPECT_GT(qat_paf.abs().sum().item<double>(), 0);
  // Prepared pixels are on the 1/128 grid, so QAT float and the chip's integers agree exactly
  // (ai8x.md 6.2) once the wide heads are divided by 2^14.
  EXPECT_EQ((int8_heat != qat_heat).sum().item<int64_t>(), 0);
  EXPECT_EQ((int8_paf != qat_paf).sum().item<int64_t>(), 0);
  // Equal maps decode to equal people.
  EXPECT_GT(a.size(), 0u) << "nothing decoded: the comparison would be vacuous";
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].image_id, b[i].image_id);
    EXPECT_EQ(a[i].keypoints, b[i].keypoints);
    EXPECT_EQ(a[i].score, b[i].score);
  }
}

TEST(Evaluate, TeacherPredictorMatchesThePythonReferenceAndRunsAt368) {
  POSEKD_REQUIRE_FIXTURE(ref_path, "teacher/teacher_reference_outputs.pt");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  auto ref = ai8x::read_tensor_dict(ref_path.string());
  auto predict = infer::teacher_predictor(posekd::model::load_teacher(teacher.string()));
  // The fixture input is what the net sees ((x-128)/256 scale); the predictor takes (x-128)/128.
  auto x = ai8x::dict_tensor(ref, "input_368");
  auto [heat, paf] = predict(x * 2);
  auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).norm().item<double>() / b.norm().item<double>();
  };
  EXPECT_LT(rel(heat, ai8x::dict_tensor(ref, "stage1_heatmaps")), 1e-4);
  EXPECT_LT(rel(paf, ai8x::dict_tensor(ref, "stage1_pafs")), 1e-4);

  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto ds = sample_dataset(coco);
  ds.images.resize(1);
  infer::PredictStats st;
  auto r = infer::evaluate_model(ds, predict, infer::teacher_eval_config(), nullptr, &st);
  EXPECT_EQ(st.images, 1);
  EXPECT_EQ(st.unreadable, 0);
  EXPECT_EQ(r.num_images, 1);
}

// In-memory frames (video, camera) go through the same preparation as files: the same poses, whatever
// the batch size.
TEST(Evaluate, FramesInMemoryGiveTheSamePosesAsFilesInAnyBatchSize) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto ds = sample_dataset(coco);
  infer::EvalConfig cfg;
  cfg.reduced_decode = false;  // frames are full decodes
  cfg.batch_size = 1;
  auto predict = oracle(ds, cfg);
  const auto by_file = infer::predict_images(ds.images, ds.image_dir, predict, cfg);
  std::vector<cv::Mat> frames;
  for (const auto& im : ds.images) frames.push_back(cv::imread((fs::path(ds.image_dir) / im.file_name).string()));
  double scale = 0;
  data::SampleConfig sc;
  sc.reduced_decode = false;
  const auto s0 = data::prepare_sample(ds.images[0], ds.image_dir, sc);
  EXPECT_TRUE(data::prepare_input(frames[0], 128, &scale).equal(s0.image));
  EXPECT_DOUBLE_EQ(scale, s0.scale);
  for (int batch : {1, 3, 8}) {
    SCOPED_TRACE(batch);
    cfg.batch_size = batch;
    const auto by_frame = infer::predict_frames(frames, predict, cfg);
    ASSERT_EQ(by_frame.size(), by_file.size());
    size_t people = 0;
    for (size_t i = 0; i < by_file.size(); ++i) {
      ASSERT_TRUE(by_file[i].ok);
      ASSERT_EQ(by_frame[i].size(), by_file[i].poses.size()) << "image " << i;
      for (size_t p = 0; p < by_frame[i].size(); ++p) {
        EXPECT_EQ(by_frame[i][p].keypoints, by_file[i].poses[p].keypoints);
        EXPECT_EQ(by_frame[i][p].score, by_file[i].poses[p].score);
      }
      people += by_frame[i].size();
    }
    EXPECT_GE(people, 8u);  // the oracle's maps hold the sample's people
  }
  EXPECT_THROW(data::prepare_input(cv::Mat(), 128), Error);
  EXPECT_THROW(data::prepare_input(cv::Mat(8, 8, CV_8UC1, cv::Scalar(3)), 128), Error);
}
