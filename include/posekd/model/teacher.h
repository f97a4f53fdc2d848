// The Lightweight-OpenPose teacher (Osokin 2018), `PoseEstimationWithMobileNet`, as a LibTorch module
// with EXACTLY upstream's state-dict names (spec/openpose.md section 1): Sequential children sit at
// the same integer indices as upstream, activations included (`model.0.0.weight`,
// `cpm.align.0.weight`, `refinement_stages.0.trunk.0.trunk.1.1.running_var`, ...).
//
// Speed: fuse() folds every eval-mode BatchNorm into its conv (weights computed once, kept outside
// the state dict) and the forward then runs plain conv2d + activation. The unfused module path stays
// available (unfuse()) as the reference. Loading new weights drops the fused copies.
//
// Data-parallel training: set_sync_bn(group) makes every BatchNorm of a training forward normalise
// with the statistics of the global batch over the group's ranks (ai8x/sync_batchnorm.h, the same
// arithmetic as the student's SyncBN). The modules and their state-dict names stay torch's
// BatchNorm2d; only the unfused forward of a conv()/conv_dw() Sequential runs its units itself.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "posekd/core/collective.h"
#include "posekd/core/precision.h"
#include "posekd/io/torch_file.h"
#include "posekd/io/value.h"

namespace posekd::model {

// One upstream conv()/conv_dw()/conv_dw_no_bn() Sequential and what fuse() needs to run it.
struct TeacherConvSeq {
  enum class Act { None, ReLU, ELU };
  struct Unit {
    torch::nn::Conv2d conv{nullptr};
    torch::nn::BatchNorm2d bn{nullptr};
    Act act = Act::None;
    torch::Tensor fused_w, fused_b;
    torch::Tensor fused_w_bf16;  // bf16 copy (OIHW), used when the input is bf16
  };
  torch::nn::Sequential seq;
  std::vector<Unit> units;
  Collective* sync_bn = nullptr;  // set: training-mode BatchNorm over the global batch (SyncBN)
  torch::Tensor run(const torch::Tensor& x, bool fused);
  void fuse();
  void unfuse();
};

class TeacherModuleBase : public torch::nn::Module {
 public:
  bool fused = false;  // set by PoseEstimationWithMobileNetImpl::fuse()/unfuse()
};

class CpmImpl : public TeacherModuleBase {
 public:
  CpmImpl(int in_channels, int out_channels);
  torch::Tensor forward(torch::Tensor x);

 private:
  TeacherConvSeq align_, trunk_[3], conv_;
  friend class PoseEstimationWithMobileNetImpl;
};
TORCH_MODULE(Cpm);

class InitialStageImpl : public TeacherModuleBase {
 public:
  InitialStageImpl(int num_channels, int num_heatmaps, int num_pafs);
  std::vector<torch::Tensor> forward(torch::Tensor x);

 private:
  TeacherConvSeq trunk_[3], heatmaps_[2], pafs_[2];
  friend class PoseEstimationWithMobileNetImpl;
};
TORCH_MODULE(InitialStage);

class RefinementStageBlockImpl : public TeacherModuleBase {
 public:
  RefinementStageBlockImpl(int in_channels, int out_channels);
  torch::Tensor forward(torch::Tensor x);

 private:
  TeacherConvSeq initial_, trunk_[2];
  friend class PoseEstimationWithMobileNetImpl;
};
TORCH_MODULE(RefinementStageBlock);

class RefinementStageImpl : public TeacherModuleBase {
 public:
  RefinementStageImpl(int in_channels, int out_channels, int num_heatmaps, int num_pafs);
  std::vector<torch::Tensor> forward(torch::Tensor x);

 private:
  std::vector<RefinementStageBlock> blocks5_;
  TeacherConvSeq heatmaps_[2], pafs_[2];
  friend class PoseEstimationWithMobileNetImpl;
};
TORCH_MODULE(RefinementStage);

class PoseEstimationWithMobileNetImpl : public torch::nn::Module {
 public:
  explicit PoseEstimationWithMobileNetImpl(int num_refinement_stages = 1, int num_channels = 128, int num_heatmaps = 19,
                                           int num_pafs = 38);
  // [hm_0, paf_0, hm_1, paf_1, ...]: 2 * (R + 1) tensors at ceil(H/8) x ceil(W/8).
  std::vector<torch::Tensor> forward(torch::Tensor x);

  // Folds BatchNorm into the convs (uses the current weights and running stats; eval semantics).
  void fuse();
  void unfuse();
  bool is_fused() const { return fused_; }
  int num_refinement_stages() const { return num_refinement_stages_; }
  // SyncBN over `group` for every BatchNorm in training mode (nullptr: each process's own batch).
  // Every rank must then run the same forwards and backwards. The state dict is unchanged.
  void set_sync_bn(Collective* group);
  // Lays out every convolution weight in `format` (ChannelsLast: what oneDNN's bf16 training
  // kernels run fastest on; the values and the state dict are unchanged).
  void set_weight_layout(at::MemoryFormat format);

 private:
  void set_fused(bool f);
  void for_each_seq(const std::function<void(TeacherConvSeq&)>& f);
  int num_refinement_stages_;
  bool fused_ = false;
  std::vector<TeacherConvSeq> backbone_;  // model.0 .. model.11
  Cpm cpm_{nullptr};
  InitialStage initial_stage_{nullptr};
  torch::nn::ModuleList refinement_stages_;
  std::vector<RefinementStage> stages_;
};
TORCH_MODULE(PoseEstimationWithMobileNet);

struct TeacherOptions {
  int num_refinement_stages = 1;
  int input_size = 368;      // the teacher's input resolution (bilinear resize, align_corners=false)
  double input_scale = 0.5;  // student input (x-128)/128 -> teacher's (x-128)/256; 1.0 = seed
  int output_size = 16;      // resize of the last heatmaps/PAFs (bilinear, align_corners=false)
  bool fuse_bn = true;
  // bf16: the fused net runs in bf16 channels-last (oneDNN's bf16 convolutions; the resize, the
  // input scaling and the returned maps stay fp32). Needs fuse_bn. Part of the teacher cache key.
  Precision precision = Precision::fp32;
};

struct LoadReport {
  int loaded = 0;   // target entries copied from the source
  int missing = 0;  // target entries absent (or of another shape) in the source
  int ignored = 0;  // source entries not used
  std::vector<std::string> missing_names;
};

// Upstream load_state semantics: for every target parameter/buffer, copy the source entry of the
// same name (a leading `module.` is stripped from source names) when the shapes match; otherwise
// keep the current value and report it missing. Throws posekd::Error when nothing loads.
LoadReport load_teacher_state(PoseEstimationWithMobileNet& net, const io::StateDict& sd,
                              const std::string& source = "state dict");

// The state dict inside a loaded file: the `state_dict` entry of a checkpoint, or the bare dict.
io::StateDict teacher_state_dict_of(const io::Value& file, const std::string& path);

// Loads PATH (legacy or zip torch.save; checkpoint or bare state dict) into a network you built
// yourself, sets eval mode, and fuses BatchNorm when `fuse` is true. Ignores the file's metadata:
// use load_teacher(path) below unless you know the architecture.
LoadReport load_teacher(PoseEstimationWithMobileNet& net, const std::string& path, bool fuse = true);

// How a teacher file is meant to be run. A file written by `posekd train-teacher` says so in its
// 'posekd_teacher' entry {input_size, input_scale, num_refinement_stages}. Any other file (the
// released checkpoint_iter_370000.pth, a bare state dict) is upstream's inference network: 368x368
// input, (x-128)/256, and min(1, the refinement stages in the file) stages (the released file holds
// three; the extra ones are ignored, as upstream's load_state does).
struct TeacherInfo {
  int num_refinement_stages = 1;
  int input_size = 368;        // square input the network was trained at (bilinear resize to it)
  double input_scale = 0.5;    // factor on the student's (x-128)/128 input: 0.5 = upstream's (x-128)/256
  bool from_metadata = false;  // true: the values above come from 'posekd_teacher'
};

// A teacher network loaded from a file, in eval mode, with what the file says about it.
struct LoadedTeacher {
  PoseEstimationWithMobileNet net{nullptr};
  TeacherInfo info;
  LoadReport report;
  // The distillation wrapper's options for this teacher: its input size, scale and stages.
  TeacherOptions wrapper_options(int output_size = 16) const;
};

// THE way to load a teacher file (train, eval, predict, cache-teacher, demo): reads PATH once,
// builds the network the file describes, loads it with upstream's load_state semantics, eval mode,
// BatchNorm folded when `fuse`. `default_input_scale` applies to files without posekd metadata
// (train's --teacher-input-scale). Errors name PATH.
LoadedTeacher load_teacher(const std::string& path, double default_input_scale = 0.5, bool fuse = true);

// The frozen teacher used for distillation: resize -> scale -> net -> last two outputs resized.
class TeacherWrapperImpl : public torch::nn::Module {
 public:
  TeacherWrapperImpl(PoseEstimationWithMobileNet net, TeacherOptions options = {});
  // x: N x 3 x h x w student input. Returns {heatmaps N x 19 x S x S, pafs N x 38 x S x S}. No grad.
  std::vector<torch::Tensor> forward(torch::Tensor x);
  PoseEstimationWithMobileNet& net() { return net_; }
  const TeacherOptions& options() const { return options_; }
  // Frozen: stays in eval mode even when a parent module calls train().
  void train(bool on = true) override;

 private:
  PoseEstimationWithMobileNet net_;
  TeacherOptions options_;
};
TORCH_MODULE(TeacherWrapper);

// load_teacher(PATH) frozen (eval, requires_grad false) and wrapped. A file with posekd metadata sets
// the input size, scale and stages; for other files they come from `options`.
TeacherWrapper load_teacher_wrapper(const std::string& path, const TeacherOptions& options = {},
                                    LoadReport* report = nullptr);

}  // namespace posekd::model
