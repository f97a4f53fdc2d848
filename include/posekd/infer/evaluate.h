// Running a pose network over COCO images and evaluating it (spec/openpose.md 5, ai8x.md 6.1).
//
// A "predictor" maps a batch of prepared network inputs to (heatmaps, PAFs). Inputs are prepared
// exactly like the training samples (data::prepare_sample: longest side resized to the input size,
// padded bottom/right with grey, BGR, (x - 128) / 128); the maps are decoded with the matching
// letterbox parameters, so keypoints land in ORIGINAL image coordinates.
//
// Factories: the float/QAT student (as trained), the int8 student (quantize.py + the MAX78000's
// integer arithmetic, outputs rescaled to float units as ai8x.md 6.1 step 6) and the teacher at its
// own resolution (upstream's: 368 input, 46x46 maps, stride 8, input (x - 128) / 256; a posekd-trained
// teacher at the size and scale its file records).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "posekd/core/precision.h"
#include "posekd/data/coco.h"
#include "posekd/infer/coco_eval.h"
#include "posekd/infer/decode.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"

namespace cv {
class Mat;
}

namespace posekd::infer {

// images: [B, 3, H, W] prepared inputs ((x - 128) / 128, letterboxed) -> {heat [B,19,h,w], paf [B,38,h,w]}
// (float units, any floating dtype).
using PredictFn =
    std::function<std::pair<torch::Tensor, torch::Tensor>(const torch::Tensor& images /*[B,3,H,W] prepared*/)>;

inline constexpr int kStudentInputSize = 128;
inline constexpr int kTeacherInputSize = 368;

struct EvalConfig {
  int input_size = kStudentInputSize;  // square letterboxed network input
  int stride = 8;                      // input pixels per map cell
  int upsample = 4;                    // map upsampling before the peak search (decode.h)
  int batch_size = 8;
  bool reduced_decode = true;  // data::SampleConfig::reduced_decode (faster JPEG decode)
  PeakParams peaks{};
  GroupParams grouping{};
  bool subcell = false;    // DecodeParams::subcell
  int local_upsample = 0;  // DecodeParams::local_upsample
  // Called after every batch with (images done, total). Optional.
  std::function<void(int64_t, int64_t)> progress;
};

// The EvalConfig for a teacher: its input size (368 for upstream's network, what a posekd-trained
// teacher file says otherwise), stride 8.
EvalConfig teacher_eval_config(const model::TeacherInfo& info = {});

// Student as trained (float or QAT, whatever its layers are): eval mode, no grad, fold_input when
// the arch folds (ai85pose). The student is shared with the returned function. precision bf16: its
// convolutions run with bf16 operands and fp32 results (a QAT student gives the fp32 maps exactly).
PredictFn student_predictor(std::shared_ptr<model::Student> student, Precision precision = Precision::fp32);

// The int8 student: the QAT student's state dict through quantize.py (ai8x::quantize_state_dict),
// integer forward in the chip's arithmetic on clamp(round(x * 128)) (ai8x::simulate_input), each
// head's output divided by 128 (8-bit) or 128*128 (wide) -> float units comparable to the QAT maps.
// Throws posekd::Error naming `what` (e.g. the checkpoint) when the student is not quantized (QAT).
PredictFn int8_predictor(const model::Student& qat_student, const std::string& what = "student");

// The teacher network on prepared inputs: (x - 128) / 128 times `input_scale` (0.5: upstream's
// (x - 128) / 256); returns the last stage's heatmaps and PAFs. No grad. precision bf16: the BN-fused
// net runs in bf16 channels-last (posekd::Error if it is not fused); maps returned fp32.
PredictFn teacher_predictor(model::PoseEstimationWithMobileNet net, double input_scale = 0.5,
                            Precision precision = Precision::fp32);
// A teacher from model::load_teacher(path), fed the input scale its file says (use it with
// teacher_eval_config(t.info)).
PredictFn teacher_predictor(const model::LoadedTeacher& t, Precision precision = Precision::fp32);

// The ground truth as a "predictor": for each prepared input, the target maps prepare_sample draws
// for that image (data::SampleConfig with `config`'s input size and stride). Decoding them with the
// same code gives the ceiling a network can reach at this resolution. The images are recognised by
// their prepared pixels; an input that is not one of `dataset`'s images throws posekd::Error.
PredictFn ground_truth_predictor(const data::CocoDataset& dataset, const EvalConfig& config);

struct PredictStats {
  int64_t images = 0;               // images attempted
  int64_t unreadable = 0;           // skipped: missing / corrupt / not an image
  int64_t people = 0;               // decoded poses
  std::vector<std::string> errors;  // the first few unreadable-image messages (one line each)
};

// One image's decoded poses (COCO coordinates of the original image).
struct ImagePrediction {
  int64_t image_id = 0;
  bool ok = false;
  std::string error;  // when !ok
  std::vector<Pose> poses;
};

// Prepares, batches, predicts and decodes every image of `images` (read from image_dir/file_name).
// Unreadable images give ok = false (never a throw). A PredictFn returning maps of the wrong shape
// throws posekd::Error.
std::vector<ImagePrediction> predict_images(const std::vector<data::CocoImage>& images, const std::string& image_dir,
                                            const PredictFn& predict, const EvalConfig& config,
                                            PredictStats* stats = nullptr);

// The poses in in-memory 8-bit BGR images (video frames, camera pictures), prepared like files
// (data::prepare_input) and run in batches of config.batch_size; keypoints in each frame's pixels.
std::vector<std::vector<Pose>> predict_frames(const std::vector<cv::Mat>& frames, const PredictFn& predict,
                                              const EvalConfig& config);

// Every image of the dataset -> COCO detections (one per pose, category 1). Unreadable images
// are counted in *stats and skipped.
std::vector<Detection> predict_dataset(const data::CocoDataset& dataset, const PredictFn& predict,
                                       const EvalConfig& config, PredictStats* stats = nullptr);

// predict_dataset + evaluate_keypoints over the whole dataset (unreadable images count as images
// without detections, as in pycocotools). *detections receives the detections when given.
KeypointEvalResult evaluate_model(const data::CocoDataset& dataset, const PredictFn& predict, const EvalConfig& config,
                                  std::vector<Detection>* detections = nullptr, PredictStats* stats = nullptr);

// The 17 COCO keypoint heatmap scores of a pose (0 where missing), COCO order.
std::array<float, 17> coco_keypoint_scores(const Pose& pose);

}  // namespace posekd::infer
