#include "posekd/model/student.h"

#include <cmath>
#include <sstream>

#include "posekd/ai8x/calibration.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/error.h"
#include "posekd/core/precision.h"

namespace posekd::model {

using namespace posekd::ai8x;

Student::Student(std::string arch, bool folded_input, const std::vector<StudentLayerDef>& trunk,
                 const std::vector<StudentLayerDef>& head_a, const std::vector<StudentLayerDef>& head_b,
                 const Device& device)
    : arch_(std::move(arch)), folded_(folded_input), trunk_(trunk), head_a_(head_a), head_b_(head_b) {
  if (trunk.empty() || head_a.empty() || head_b.empty())
    throw Error("student " + arch_ + ": trunk and both heads must have layers");
  for (const auto* part : {&trunk_, &head_a_, &head_b_}) {
    for (const auto& d : *part) {
      check_spec(d.spec, "student " + arch_ + " layer " + d.name);
      names_.push_back(d.name);
      layers_.push_back(register_module(d.name, std::make_shared<Layer>(d.spec, device)));
    }
  }
}

StudentOutput Student::forward(const torch::Tensor& x) {
  std::size_t i = 0;
  // Activations in channels-last (NHWC) order: oneDNN's convolutions and max-pooling run faster on
  // it than on NCHW (QAT step 64-69 -> 80-84 img/s). Not while BatchNorm trains: LibTorch 1.13's
  // channels-last training BatchNorm is ~10x less accurate (the float-train gradients of the seed
  // student drifted 3e-3..2.5e-2 from a float64 reference, NCHW 2e-4..3e-6), so the float phase
  // stays NCHW. The weights stay NCHW (their gradients stay contiguous for the fused Adam step);
  // the outputs are returned in the default layout. docs/performance.md.
  // Mixed precision (PrecisionScope bf16) runs channels-last throughout: bf16 rounding (2^-9 per
  // convolution operand) dwarfs the channels-last BatchNorm's error, and the bf16 convolutions want
  // NHWC, so the NCHW <-> NHWC copies around every conv would only cost time.
  bool train_bn = false;
  if (is_training() && compute_precision() != Precision::bf16)
    for (const auto& l : layers_) train_bn = train_bn || l->has_bn();
  torch::Tensor t = x.dim() == 4 && !train_bn ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
  for (; i < trunk_.size(); ++i) t = layers_[i]->forward(t);
  torch::Tensor h = t, p = t;
  for (std::size_t k = 0; k < head_a_.size(); ++k, ++i) h = layers_[i]->forward(h);
  for (std::size_t k = 0; k < head_b_.size(); ++k, ++i) p = layers_[i]->forward(p);
  // The maps in fp32: under bf16 a head ending in a non-wide layer hands on bf16 (train/amp.h).
  return {h.to(torch::kFloat).contiguous(), p.to(torch::kFloat).contiguous()};
}

StudentOutput Student::forward_maps(const torch::Tensor& x) {
  StudentOutput out = forward(x);
  const auto [sa, sb] = head_scales();
  if (sa != 1.0) out.heat = out.heat * sa;
  if (sb != 1.0) out.paf = out.paf * sb;
  return out;
}

std::pair<int, int> Student::head_output_shifts() const {
  auto shift = [](const Layer& last) { return last.spec().wide && last.quantized() ? last.current_output_shift() : 0; };
  const std::size_t last_a = trunk_.size() + head_a_.size() - 1, last_b = last_a + head_b_.size();
  return {shift(*layers_[last_a]), shift(*layers_[last_b])};
}

std::pair<double, double> Student::head_scales() const {
  const auto [a, b] = head_output_shifts();
  return {std::ldexp(1.0, a), std::ldexp(1.0, b)};
}

std::vector<Layer*> Student::layers() {
  std::vector<Layer*> out;
  for (auto& l : layers_) out.push_back(l.get());
  return out;
}

std::vector<std::vector<std::size_t>> Student::producers() const {
  std::vector<std::vector<std::size_t>> prev(layers_.size());
  const std::size_t nt = trunk_.size(), na = head_a_.size();
  for (std::size_t i = 1; i < nt; ++i) prev[i] = {i - 1};
  for (std::size_t k = 0; k < na; ++k) prev[nt + k] = {k == 0 ? nt - 1 : nt + k - 1};
  for (std::size_t k = 0; k < head_b_.size(); ++k) prev[nt + na + k] = {k == 0 ? nt - 1 : nt + na + k - 1};
  return prev;
}

std::vector<int64_t> Student::input_shape() const {
  return folded_ ? std::vector<int64_t>{12, 64, 64} : std::vector<int64_t>{3, 128, 128};
}

void Student::fuse_bn() {
  for (auto& l : layers_) l->fuse_bn();
}

void Student::set_device(const Device& d) {
  for (auto& l : layers_) l->set_device(d);
}

int64_t Student::weight_bytes() const {
  int64_t total = 0;
  for (const auto& l : layers_) {
    const auto& s = l->spec();
    if (s.has_op()) total += s.in_channels * s.out_channels * s.kernel_size * s.kernel_size;
  }
  return total;
}

std::vector<std::string> student_archs() { return {"seed", "ai85pose"}; }

std::shared_ptr<Student> make_student(const std::string& arch, const Device& device) {
  if (arch == "seed") {
    std::vector<StudentLayerDef> trunk = {
        {"conv1", fused_conv2d_bn_relu(3, 32, 3, 1, 2)}, {"conv2", fused_conv2d_bn_relu(32, 32, 3, 1)},
        {"conv3", fused_conv2d_bn_relu(32, 64, 3, 1)},   {"conv4", fused_maxpool_conv2d_bn_relu(64, 64, 3, 1, 2, 2)},
        {"conv5", fused_conv2d_bn_relu(64, 96, 3, 1)},   {"conv6", fused_maxpool_conv2d_bn_relu(96, 96, 3, 1, 2, 2)},
        {"conv7", fused_conv2d_bn_relu(96, 128, 3, 1)},  {"conv8", fused_conv2d_bn_relu(128, 128, 3, 1)},
        {"cpm1", fused_conv2d_bn_relu(128, 96, 1, 0)},   {"cpm2", fused_conv2d_bn_relu(96, 96, 3, 1)},
        {"cpm3", fused_conv2d_bn_relu(96, 96, 3, 1)},
    };
    std::vector<StudentLayerDef> heat = {{"heat_conv", fused_conv2d_bn_relu(96, 64, 1, 0)},
                                         {"heat_out", conv2d(64, 19, 1, 0, true)}};
    std::vector<StudentLayerDef> paf = {{"paf_conv", fused_conv2d_bn_relu(96, 64, 1, 0)},
                                        {"paf_out", conv2d(64, 38, 1, 0, true)}};
    return std::make_shared<Student>("seed", false, trunk, heat, paf, device);
  }
  if (arch == "ai85pose") {
    // ai8x.md 5.3 run C (ai8xize-accepted, 384,048 weight bytes, 744 kernel words on proc 0).
    std::vector<StudentLayerDef> trunk = {
        {"conv1", fused_conv2d_bn_relu(12, 32, 3, 1)}, {"conv2", fused_conv2d_bn_relu(32, 32, 3, 1)},
        {"conv3", fused_conv2d_bn_relu(32, 64, 3, 1)}, {"conv4", fused_maxpool_conv2d_bn_relu(64, 64, 3, 1, 2, 2)},
        {"conv5", fused_conv2d_bn_relu(64, 64, 3, 1)}, {"conv6", fused_maxpool_conv2d_bn_relu(64, 64, 3, 1, 2, 2)},
        {"conv7", fused_conv2d_bn_relu(64, 64, 3, 1)}, {"conv8", fused_conv2d_bn_relu(64, 64, 3, 1)},
        {"cpm1", fused_conv2d_bn_relu(64, 64, 3, 1)},  {"cpm2", fused_conv2d_bn_relu(64, 64, 3, 1)},
        {"cpm3", fused_conv2d_bn_relu(64, 64, 3, 1)},
    };
    std::vector<StudentLayerDef> heat = {{"heat_conv", fused_conv2d_bn_relu(64, 48, 3, 1)},
                                         {"heat_out", conv2d(48, 19, 1, 0, true)}};
    std::vector<StudentLayerDef> paf = {{"paf_conv", fused_conv2d_bn_relu(64, 48, 3, 1)},
                                        {"paf_out", conv2d(48, 38, 1, 0, true)}};
    return std::make_shared<Student>("ai85pose", true, trunk, heat, paf, device);
  }
  std::ostringstream known;
  for (const auto& a : student_archs()) known << (known.tellp() ? ", " : "") << a;
  throw Error("unknown student arch '" + arch + "' (known: " + known.str() + ")");
}

void fuse_and_calibrate(Student& student, const std::function<std::optional<torch::Tensor>()>& next_batch,
                        const QatPolicy& policy, Collective* group) {
  auto layers = student.layers();
  student.fuse_bn();
  const bool was_training = student.is_training();
  student.eval();
  for (auto* l : layers) l->set_calibration(true, group);
  std::size_t n = 0;
  {
    torch::NoGradGuard ng;
    while (auto batch = next_batch()) {
      student.forward(*batch);
      ++n;
    }
  }
  for (auto* l : layers) l->set_calibration(false);
  if (n == 0) {
    for (auto* l : layers) l->clear_calibration();
    throw Error("QAT calibration: no calibration batch was provided");
  }
  init_thresholds(layers, policy.outlier_removal_z_score);
  for (auto* l : layers) l->clear_calibration();
  apply_scales(layers, student.producers());
  initiate_qat(layers, student.layer_names(), policy);
  student.train(was_training);
}

std::unique_ptr<torch::optim::Adam> rebuild_adam(torch::optim::Adam& old, const std::vector<torch::Tensor>& params) {
  auto& opts = static_cast<torch::optim::AdamOptions&>(old.defaults());
  auto fresh = std::make_unique<torch::optim::Adam>(params, opts);
  // old parameters with state, in order
  std::vector<torch::Tensor> old_params;
  for (auto& g : old.param_groups())
    for (auto& p : g.params()) old_params.push_back(p);
  auto& old_state = old.state();
  auto& new_state = fresh->state();
  std::size_t j = 0;
  for (const auto& p : params) {
    if (p.numel() == 1 && p.dim() <= 1) continue;
    while (j < old_params.size() &&
           (old_params[j].sizes() != p.sizes() || (old_params[j].numel() == 1 && old_params[j].dim() <= 1)))
      ++j;
    if (j == old_params.size()) break;
    auto key = c10::guts::to_string(old_params[j].unsafeGetTensorImpl());
    auto it = old_state.find(key);
    if (it != old_state.end()) {
      auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
      auto copy = std::make_unique<torch::optim::AdamParamState>();
      copy->step(s.step());
      copy->exp_avg(s.exp_avg().clone());
      copy->exp_avg_sq(s.exp_avg_sq().clone());
      if (s.max_exp_avg_sq().defined()) copy->max_exp_avg_sq(s.max_exp_avg_sq().clone());
      new_state[c10::guts::to_string(p.unsafeGetTensorImpl())] = std::move(copy);
    }
    ++j;
  }
  return fresh;
}

IntegerStudent integer_student(const Student& s, const StateDict& q, const std::string& what) {
  IntegerStudent out;
  for (const auto& d : s.trunk_defs()) out.trunk.push_back(integer_layer(q, d.name, d.spec, what));
  for (const auto& d : s.head_a_defs()) out.head_a.push_back(integer_layer(q, d.name, d.spec, what));
  for (const auto& d : s.head_b_defs()) out.head_b.push_back(integer_layer(q, d.name, d.spec, what));
  return out;
}

IntegerOutputs integer_forward(const IntegerStudent& s, const torch::Tensor& x, bool keep) {
  return ai8x::integer_forward(s.trunk, s.head_a, s.head_b, x, keep);
}

}  // namespace posekd::model
