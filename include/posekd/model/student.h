// The ai8x student networks: a chain trunk followed by two heads (heatmaps, PAFs), every layer an
// ai8x::Layer. Arch "seed" is exactly the seed's StudentModel (seed-pipeline.md, 659,136
// parameters); "ai85pose" fits the MAX78000 (ai8x.md 5.3; expects the 12x64x64 folded input).
#pragma once
#include <torch/torch.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "posekd/ai8x/device.h"
#include "posekd/ai8x/integer.h"
#include "posekd/ai8x/layers.h"
#include "posekd/ai8x/policy.h"

namespace posekd::model {

struct StudentOutput {
  torch::Tensor heat, paf;
};

// A layer table entry: its ai8x name and spec.
struct StudentLayerDef {
  std::string name;
  ai8x::LayerSpec spec;
};

class Student : public torch::nn::Module {
 public:
  // trunk: the chain; head_a: heatmap head (ends with 19 channels); head_b: PAF head (38).
  // Registration order = trunk, head_a, head_b (= ai8xize YAML layer order).
  Student(std::string arch, bool folded_input, const std::vector<StudentLayerDef>& trunk,
          const std::vector<StudentLayerDef>& head_a, const std::vector<StudentLayerDef>& head_b,
          const ai8x::Device& device = {});

  // The network as ai8x computes it (bit for bit with its Python layers).
  StudentOutput forward(const torch::Tensor& x);

  // The heads' maps in the targets' units: forward() times head_scales(). ai8x's wide (32-bit)
  // layers apply no output shift (the device writes the raw accumulator), so once the QAT switch
  // scales a wide layer's weights by 2^-os to fill the 8-bit grid, its output is the value times
  // 2^-os (spec ai8x.md 2.5): 16x larger for os = -4. Read unscaled, the loss jumps ~30x at the
  // switch and the steps that follow wreck the trained features. The loss, the decoders and the C
  // decoder all read the maps at this scale, so the switch changes only the rounding.
  StudentOutput forward_maps(const torch::Tensor& x);
  // Per head (heatmaps, PAFs): os of its last layer when that layer is wide and quantized, else 0;
  // head_scales() = 2^head_output_shifts().
  std::pair<int, int> head_output_shifts() const;
  std::pair<double, double> head_scales() const;

  std::vector<ai8x::Layer*> layers();  // registration order
  const std::vector<std::string>& layer_names() const { return names_; }
  // producers()[i]: indices of the layers feeding layer i (for ai8x::apply_scales).
  std::vector<std::vector<std::size_t>> producers() const;
  const std::string& arch() const { return arch_; }
  bool folded_input() const { return folded_; }
  // Input shape of one sample: 3x128x128, or 12x64x64 when folded.
  std::vector<int64_t> input_shape() const;
  const std::vector<StudentLayerDef>& trunk_defs() const { return trunk_; }
  const std::vector<StudentLayerDef>& head_a_defs() const { return head_a_; }
  const std::vector<StudentLayerDef>& head_b_defs() const { return head_b_; }

  // Folds and removes every BatchNorm (ai8x fuse_bn_layers). Call it before loading a QAT /
  // quantized checkpoint into a freshly built student, so the state dict keys match.
  void fuse_bn();
  // Per-model device mode (propagated to every layer).
  void set_device(const ai8x::Device& d);
  // Sum over conv layers of Cin*Cout*k*k*bits/8 with 8-bit weights (MAX78000 limit 442,368).
  int64_t weight_bytes() const;

 private:
  std::string arch_;
  bool folded_;
  std::vector<StudentLayerDef> trunk_, head_a_, head_b_;
  std::vector<std::string> names_;
  std::vector<std::shared_ptr<ai8x::Layer>> layers_;
};

// "seed" or "ai85pose"; anything else -> posekd::Error listing the known archs.
std::shared_ptr<Student> make_student(const std::string& arch, const ai8x::Device& device = {});
std::vector<std::string> student_archs();

// The QAT switch (train.py QATv2 order): fuse BN in every layer, run the calibration batches
// (eval mode, no grad; next_calibration_batch returns std::nullopt when done), set thresholds
// with policy.outlier_removal_z_score, apply_scales, initiate_qat(policy). The training mode is
// restored afterwards. Throws posekd::Error if no calibration batch was given.
// With a group (data-parallel ranks), each rank passes its shard of the same global batches, in
// the same number, and the histograms are those of the global batches (Layer::set_calibration):
// every rank gets the thresholds one process would get on the whole batches.
void fuse_and_calibrate(Student& student, const std::function<std::optional<torch::Tensor>()>& next_calibration_batch,
                        const ai8x::QatPolicy& policy, Collective* group = nullptr);

// ai8x update_optimizer: a new Adam with the old one's options over `params`; per-parameter state
// is copied from the old optimizer's parameters in order, matching by shape, skipping one-element
// parameters (so the state of W and b is kept, the BN state is dropped).
std::unique_ptr<torch::optim::Adam> rebuild_adam(torch::optim::Adam& old, const std::vector<torch::Tensor>& params);

// Integer (MAX78000 bit-exact) layers of this student from a quantize.py state dict.
struct IntegerStudent {
  std::vector<ai8x::IntegerLayer> trunk, head_a, head_b;
};
IntegerStudent integer_student(const Student& s, const ai8x::StateDict& quantized,
                               const std::string& what = "quantized state dict");
ai8x::IntegerOutputs integer_forward(const IntegerStudent& s, const torch::Tensor& x_int,
                                     bool keep_activations = false);

}  // namespace posekd::model
