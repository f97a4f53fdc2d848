#include "posekd/infer/evaluate.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <opencv2/core.hpp>

#include <unordered_map>

#include "posekd/ai8x/integer.h"
#include "posekd/ai8x/simulate.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"
#include "posekd/data/sample.h"
#include "posekd/infer/coco_results.h"

namespace posekd::infer {

namespace {
constexpr size_t kMaxErrors = 10;
}  // namespace

EvalConfig teacher_eval_config(const model::TeacherInfo& info) {
  EvalConfig c;
  c.input_size = info.input_size;
  c.stride = 8;
  return c;
}

PredictFn student_predictor(std::shared_ptr<model::Student> student, Precision precision) {
  if (!student) throw Error("student_predictor: no student");
  student->eval();
  return [student, precision](const torch::Tensor& images) {
    torch::NoGradGuard ng;
    PrecisionScope ps(precision);
    auto x = images.to(torch::kFloat);
    if (student->folded_input()) x = data::fold_input(x, 2);
    auto out = student->forward_maps(x);
    return std::make_pair(out.heat, out.paf);
  };
}

PredictFn int8_predictor(const model::Student& qat_student, const std::string& what) {
  auto& s = const_cast<model::Student&>(qat_student);
  for (auto* l : s.layers())
    if (!l->quantized())
      throw Error(what + ": not a QAT (quantized) student; --int8 needs a checkpoint saved after the QAT switch");
  if (qat_student.head_a_defs().empty() || qat_student.head_b_defs().empty())
    throw Error(what + ": student has an empty head");
  auto quantized = ai8x::quantize_state_dict(ai8x::state_dict(qat_student), what);
  auto integer = std::make_shared<model::IntegerStudent>(model::integer_student(qat_student, quantized, what));
  const bool wide_a = qat_student.head_a_defs().back().spec.wide;
  const bool wide_b = qat_student.head_b_defs().back().spec.wide;
  const bool folded = qat_student.folded_input();
  const auto [scale_a, scale_b] = qat_student.head_scales();  // as Student::forward_maps
  return [integer, wide_a, wide_b, folded, scale_a, scale_b](const torch::Tensor& images) {
    torch::NoGradGuard ng;
    auto x = images.to(torch::kFloat);
    if (folded) x = data::fold_input(x, 2);
    auto out = model::integer_forward(*integer, ai8x::simulate_input(x));
    return std::make_pair((ai8x::integer_output_to_float(out.heat, wide_a) * scale_a).to(torch::kFloat),
                          (ai8x::integer_output_to_float(out.paf, wide_b) * scale_b).to(torch::kFloat));
  };
}

PredictFn teacher_predictor(model::PoseEstimationWithMobileNet net, double input_scale, Precision precision) {
  if (!net) throw Error("teacher_predictor: no network");
  if (precision == Precision::bf16 && !net->is_fused())
    throw Error("teacher_predictor: bf16 inference needs the BatchNorm-fused net");
  net->eval();
  return [net, input_scale, precision](const torch::Tensor& images) mutable {
    torch::NoGradGuard ng;
    torch::Tensor x = images.to(torch::kFloat);
    if (input_scale != 1.0) x = x * input_scale;
    if (precision == Precision::bf16) x = x.to(torch::kBFloat16);
    auto out = net->forward(x);
    if (out.size() < 2) throw Error("teacher_predictor: the network returned fewer than 2 outputs");
    return std::make_pair(out[out.size() - 2].to(torch::kFloat), out[out.size() - 1].to(torch::kFloat));
  };
}

PredictFn teacher_predictor(const model::LoadedTeacher& t, Precision precision) {
  return teacher_predictor(t.net, t.info.input_scale, precision);
}

std::array<float, 17> coco_keypoint_scores(const Pose& pose) {
  std::array<float, 17> s{};
  for (int c = 0; c < skeleton::kNumCoco; ++c) s[c] = pose.kpt_scores[skeleton::kCocoToOpenPose[c]];
  return s;
}

namespace {

void check_maps(const torch::Tensor& t, int64_t batch, int64_t channels, const char* what) {
  if (!t.defined() || t.dim() != 4 || t.size(0) != batch || t.size(1) != channels || t.size(2) <= 0 || t.size(3) <= 0)
    throw Error(fmt::format("predictor: {} must be [{}, {}, h, w], got {}", what, batch, channels,
                            t.defined() ? c10::str(t.sizes()) : std::string("nothing")));
}

// Runs `predict` on a batch of prepared inputs and decodes every image's poses (letterbox scale
// scales[k]: keypoints in the original image's pixels).
std::vector<std::vector<Pose>> predict_and_decode(const torch::Tensor& batch, const std::vector<double>& scales,
                                                  const PredictFn& predict, const EvalConfig& config) {
  auto [heat, paf] = predict(batch);
  const auto nb = batch.size(0);
  check_maps(heat, nb, skeleton::kNumHeatmaps, "heatmaps");
  check_maps(paf, nb, skeleton::kNumPafs, "pafs");
  if (heat.size(2) != paf.size(2) || heat.size(3) != paf.size(3))
    throw Error("predictor: heatmaps and pafs differ in size");
  heat = heat.to(torch::kFloat).contiguous();
  paf = paf.to(torch::kFloat).contiguous();
  const int h = static_cast<int>(heat.size(2)), w = static_cast<int>(heat.size(3));
  std::vector<std::vector<Pose>> out(static_cast<size_t>(nb));
  at::parallel_for(0, nb, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      // letterbox geometry: scale from the decoded image (prepare_sample), pad bottom/right
      DecodeParams p;
      p.input_w = p.input_h = config.input_size;
      p.stride = config.stride;
      p.upsample = config.upsample;
      p.scale = static_cast<float>(scales[k]);
      p.peaks = config.peaks;
      p.grouping = config.grouping;
      p.subcell = config.subcell;
      p.local_upsample = config.local_upsample;
      out[k] = decode(heat[k].data_ptr<float>(), paf[k].data_ptr<float>(), h, w, p);
    }
  });
  return out;
}

}  // namespace

std::vector<std::vector<Pose>> predict_frames(const std::vector<cv::Mat>& frames, const PredictFn& predict,
                                              const EvalConfig& config) {
  if (!predict) throw Error("predict_frames: no predictor");
  const size_t batch = static_cast<size_t>(std::max(1, config.batch_size));
  std::vector<std::vector<Pose>> out;
  out.reserve(frames.size());
  for (size_t b0 = 0; b0 < frames.size(); b0 += batch) {
    const size_t b1 = std::min(frames.size(), b0 + batch);
    std::vector<torch::Tensor> inputs(b1 - b0);
    std::vector<double> scales(b1 - b0);
    for (size_t i = b0; i < b1; ++i)
      inputs[i - b0] = data::prepare_input(frames[i], config.input_size, &scales[i - b0]);
    auto poses = predict_and_decode(torch::stack(inputs), scales, predict, config);
    for (auto& p : poses) out.push_back(std::move(p));
  }
  return out;
}

std::vector<ImagePrediction> predict_images(const std::vector<data::CocoImage>& images, const std::string& image_dir,
                                            const PredictFn& predict, const EvalConfig& config, PredictStats* stats) {
  if (!predict) throw Error("predict_images: no predictor");
  if (config.input_size <= 0 || config.stride <= 0 || config.input_size % config.stride != 0)
    throw Error(fmt::format("predict_images: input size {} must be a positive multiple of the stride {}",
                            config.input_size, config.stride));
  data::SampleConfig sc;
  sc.input_size = config.input_size;
  sc.stride = config.stride;
  sc.reduced_decode = config.reduced_decode;
  const int64_t batch = std::max(1, config.batch_size);
  const int64_t n = static_cast<int64_t>(images.size());
  std::vector<ImagePrediction> result(images.size());
  PredictStats local;
  PredictStats& st = stats ? *stats : local;

  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t b1 = std::min(n, b0 + batch);
    std::vector<data::Sample> samples(static_cast<size_t>(b1 - b0));
    // Image decoding and resizing are independent per image.
    at::parallel_for(b0, b1, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) samples[i - b0] = data::prepare_sample(images[i], image_dir, sc);
    });
    std::vector<torch::Tensor> batch_images;
    std::vector<int64_t> index;
    for (int64_t i = b0; i < b1; ++i) {
      auto& r = result[i];
      auto& s = samples[i - b0];
      r.image_id = images[i].id;
      ++st.images;
      if (!s.ok) {
        r.error = s.error;
        ++st.unreadable;
        if (st.errors.size() < kMaxErrors) st.errors.push_back(s.error);
        continue;
      }
      r.ok = true;
      batch_images.push_back(s.image);
      index.push_back(i);
    }
    if (!batch_images.empty()) {
      std::vector<double> scales;
      for (int64_t i : index) scales.push_back(samples[i - b0].scale);
      auto poses = predict_and_decode(torch::stack(batch_images), scales, predict, config);
      for (size_t k = 0; k < index.size(); ++k) {
        st.people += static_cast<int64_t>(poses[k].size());
        result[index[k]].poses = std::move(poses[k]);
      }
    }
    if (config.progress) config.progress(b1, n);
  }
  return result;
}

namespace {

std::uint64_t pixels_key(const torch::Tensor& image) {
  const auto t = image.to(torch::kFloat).contiguous();
  const auto* p = static_cast<const unsigned char*>(t.data_ptr());
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (size_t i = 0, n = static_cast<size_t>(t.numel()) * sizeof(float); i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

}  // namespace

PredictFn ground_truth_predictor(const data::CocoDataset& dataset, const EvalConfig& config) {
  data::SampleConfig sc;
  sc.input_size = config.input_size;
  sc.stride = config.stride;
  sc.reduced_decode = config.reduced_decode;
  auto maps = std::make_shared<std::unordered_map<std::uint64_t, std::pair<torch::Tensor, torch::Tensor>>>();
  for (const auto& im : dataset.images) {
    data::Sample s = data::prepare_sample(im, dataset.image_dir, sc);
    if (s.ok) (*maps)[pixels_key(s.image)] = {s.heatmaps, s.pafs};
  }
  return [maps](const torch::Tensor& images) {
    std::vector<torch::Tensor> h, p;
    for (int64_t i = 0; i < images.size(0); ++i) {
      auto it = maps->find(pixels_key(images[i]));
      if (it == maps->end()) throw Error("ground_truth_predictor: an input that is not one of the dataset's images");
      h.push_back(it->second.first);
      p.push_back(it->second.second);
    }
    return std::make_pair(torch::stack(h), torch::stack(p));
  };
}

std::vector<Detection> predict_dataset(const data::CocoDataset& dataset, const PredictFn& predict,
                                       const EvalConfig& config, PredictStats* stats) {
  auto preds = predict_images(dataset.images, dataset.image_dir, predict, config, stats);
  std::vector<Detection> dts;
  for (const auto& r : preds) {
    if (!r.ok) continue;
    auto d = poses_to_detections(r.image_id, r.poses);
    dts.insert(dts.end(), d.begin(), d.end());
  }
  return dts;
}

KeypointEvalResult evaluate_model(const data::CocoDataset& dataset, const PredictFn& predict, const EvalConfig& config,
                                  std::vector<Detection>* detections, PredictStats* stats) {
  auto dts = predict_dataset(dataset, predict, config, stats);
  auto r = evaluate_keypoints(dataset, dts, "predictions");
  if (detections) *detections = std::move(dts);
  return r;
}

}  // namespace posekd::infer
