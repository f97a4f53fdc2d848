#include "posekd/model/teacher.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cstdlib>
#include <unordered_map>

#include "posekd/ai8x/sync_batchnorm.h"
#include "posekd/core/bf16_conv.h"
#include "posekd/core/bf16_norm.h"
#include "posekd/core/error.h"

namespace posekd::model {

namespace F = torch::nn::functional;
using Act = TeacherConvSeq::Act;

namespace {

// upstream conv(in, out, k=3, pad=1, bn=True, dil=1, stride=1, relu=True, bias=True)
TeacherConvSeq make_conv(int in, int out, int k = 3, int pad = 1, bool bn = true, int dil = 1, int stride = 1,
                         bool relu = true, bool bias = true) {
  TeacherConvSeq s;
  s.seq = torch::nn::Sequential();
  TeacherConvSeq::Unit u;
  u.conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).dilation(dil).bias(bias));
  s.seq->push_back(u.conv);
  if (bn) {
    u.bn = torch::nn::BatchNorm2d(out);
    s.seq->push_back(u.bn);
  }
  if (relu) {
    s.seq->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
    u.act = Act::ReLU;
  }
  s.units.push_back(u);
  return s;
}

// upstream conv_dw(in, out, k=3, pad=1, stride=1, dil=1)
TeacherConvSeq make_conv_dw(int in, int out, int k = 3, int pad = 1, int stride = 1, int dil = 1) {
  TeacherConvSeq s;
  s.seq = torch::nn::Sequential();
  TeacherConvSeq::Unit dw, pw;
  dw.conv = torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, in, k).stride(stride).padding(pad).dilation(dil).groups(in).bias(false));
  dw.bn = torch::nn::BatchNorm2d(in);
  dw.act = Act::ReLU;
  pw.conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).bias(false));
  pw.bn = torch::nn::BatchNorm2d(out);
  pw.act = Act::ReLU;
  s.seq->push_back(dw.conv);
  s.seq->push_back(dw.bn);
  s.seq->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  s.seq->push_back(pw.conv);
  s.seq->push_back(pw.bn);
  s.seq->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  s.units = {dw, pw};
  return s;
}

// upstream conv_dw_no_bn(in, out, k=3, pad=1, stride=1, dil=1)
TeacherConvSeq make_conv_dw_no_bn(int in, int out, int k = 3, int pad = 1, int stride = 1, int dil = 1) {
  TeacherConvSeq s;
  s.seq = torch::nn::Sequential();
  TeacherConvSeq::Unit dw, pw;
  dw.conv = torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, in, k).stride(stride).padding(pad).dilation(dil).groups(in).bias(false));
  dw.act = Act::ELU;
  pw.conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).bias(false));
  pw.act = Act::ELU;
  s.seq->push_back(dw.conv);
  s.seq->push_back(torch::nn::ELU(torch::nn::ELUOptions().alpha(1.0).inplace(true)));
  s.seq->push_back(pw.conv);
  s.seq->push_back(torch::nn::ELU(torch::nn::ELUOptions().alpha(1.0).inplace(true)));
  s.units = {dw, pw};
  return s;
}

// Outer containers are ModuleLists (LibTorch cannot nest Sequentials); the names are the same.
torch::nn::ModuleList seq_of(std::initializer_list<TeacherConvSeq*> parts) {
  torch::nn::ModuleList s;
  for (auto* p : parts) s->push_back(p->seq);
  return s;
}

}  // namespace

torch::Tensor TeacherConvSeq::run(const torch::Tensor& x, bool fused) {
  const bool fused_path = fused && !units.empty() && units[0].fused_w.defined();
  if (!fused_path && sync_bn != nullptr && sync_bn->world_size() > 1) {
    // The Sequential's modules one by one, the training BatchNorms over the global batch.
    torch::Tensor y = x;
    for (auto& u : units) {
      y = u.conv->forward(y);
      if (u.bn) {
        if (u.bn->is_training())
          y = ai8x::sync_batch_norm(y.scalar_type() == torch::kFloat ? y : y.to(torch::kFloat), *u.bn.get(), *sync_bn);
        else
          y = u.bn->forward(y);
      }
      // In place, as the Sequential's ReLU(inplace=True) (the BatchNorm's backward needs its input only).
      if (u.act == Act::ReLU)
        y.relu_();
      else if (u.act == Act::ELU)
        y = torch::elu_(y);
    }
    return y;
  }
  if (!fused_path && at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16) {
    // bf16 training under autocast: posekd's own kernels, as the student's float phase runs them
    // (core/bf16_conv.h, core/bf16_norm.h): oneDNN convolutions with a bf16 result (as autocast's)
    // and oneDNN's BatchNorm with the ReLU fused.
    torch::Tensor y = x;
    for (auto& u : units) {
      const auto& o = u.conv->options;
      const auto& pad = c10::get<torch::ExpandingArray<2>>(o.padding());
      const bool keep_fp32 = !u.bn && u.act == Act::None;  // an output head: fp32 for the loss
      y = conv2d_bf16(y, u.conv->weight, o.bias() ? u.conv->bias : torch::Tensor(),
                      {(*o.stride())[0], (*o.stride())[1]}, {(*pad)[0], (*pad)[1]},
                      {(*o.dilation())[0], (*o.dilation())[1]}, o.groups(), !keep_fp32);
      bool act_done = false;
      if (u.bn) {
        if (u.bn->is_training()) {
          y = batch_norm_bf16(y, *u.bn, u.act == Act::ReLU);
          act_done = u.act == Act::ReLU;
        } else {
          y = u.bn->forward(y);
        }
      }
      if (!act_done && u.act == Act::ReLU)
        y = torch::relu(y);
      else if (u.act == Act::ELU)
        y = torch::elu(y);
    }
    return y;
  }
  if (!fused_path) return seq->forward(x);
  torch::Tensor y = x;
  const bool bf16 = x.scalar_type() == torch::kBFloat16;
  for (auto& u : units) {
    const auto& o = u.conv->options;
    if (bf16) {  // oneDNN directly: the activation fused, computed on the fp32 accumulator
      const auto& pad = c10::get<torch::ExpandingArray<2>>(o.padding());
      y = conv2d_bf16_inference(y, u.fused_w_bf16, u.fused_b, {(*o.stride())[0], (*o.stride())[1]},
                                {(*pad)[0], (*pad)[1]}, {(*o.dilation())[0], (*o.dilation())[1]}, o.groups(),
                                u.act == Act::ReLU  ? FusedAct::relu
                                : u.act == Act::ELU ? FusedAct::elu
                                                    : FusedAct::none);
      continue;
    }
    y = torch::conv2d(y, u.fused_w, u.fused_b, o.stride(), c10::get<torch::ExpandingArray<2>>(o.padding()),
                      o.dilation(), o.groups());
    if (u.act == Act::ReLU)
      y.relu_();
    else if (u.act == Act::ELU)
      y = torch::elu_(y);
  }
  return y;
}

void TeacherConvSeq::fuse() {
  torch::NoGradGuard ng;
  for (auto& u : units) {
    torch::Tensor w = u.conv->weight.detach();
    torch::Tensor b = u.conv->options.bias() ? u.conv->bias.detach() : torch::Tensor();
    if (u.bn) {
      double eps = u.bn->options.eps();
      torch::Tensor inv = u.bn->weight.detach() / torch::sqrt(u.bn->running_var.detach() + eps);
      u.fused_w = (w * inv.view({-1, 1, 1, 1})).contiguous(at::MemoryFormat::ChannelsLast);
      torch::Tensor b0 = b.defined() ? b : torch::zeros_like(u.bn->running_mean);
      u.fused_b = ((b0 - u.bn->running_mean.detach()) * inv + u.bn->bias.detach()).contiguous();
    } else {
      u.fused_w = w.contiguous(at::MemoryFormat::ChannelsLast);
      u.fused_b = b;
    }
    u.fused_w_bf16 = u.fused_w.to(torch::kBFloat16).contiguous();  // OIHW, as conv2d_bf16_inference takes it
  }
}

void TeacherConvSeq::unfuse() {
  for (auto& u : units) u.fused_w = u.fused_b = u.fused_w_bf16 = torch::Tensor();
}

// ------------------------------------------------------------------------------------------------

CpmImpl::CpmImpl(int in_channels, int out_channels) {
  align_ = make_conv(in_channels, out_channels, 1, 0, /*bn=*/false);
  for (auto& t : trunk_) t = make_conv_dw_no_bn(out_channels, out_channels);
  conv_ = make_conv(out_channels, out_channels, 3, 1, /*bn=*/false);
  register_module("align", align_.seq);
  register_module("trunk", seq_of({&trunk_[0], &trunk_[1], &trunk_[2]}));
  register_module("conv", conv_.seq);
}

torch::Tensor CpmImpl::forward(torch::Tensor x) {
  torch::Tensor a = align_.run(x, fused);
  torch::Tensor t = a;
  for (auto& s : trunk_) t = s.run(t, fused);
  return conv_.run(a + t, fused);
}

InitialStageImpl::InitialStageImpl(int num_channels, int num_heatmaps, int num_pafs) {
  for (auto& t : trunk_) t = make_conv(num_channels, num_channels, 3, 1, false);
  heatmaps_[0] = make_conv(num_channels, 512, 1, 0, false);
  heatmaps_[1] = make_conv(512, num_heatmaps, 1, 0, false, 1, 1, /*relu=*/false);
  pafs_[0] = make_conv(num_channels, 512, 1, 0, false);
  pafs_[1] = make_conv(512, num_pafs, 1, 0, false, 1, 1, /*relu=*/false);
  register_module("trunk", seq_of({&trunk_[0], &trunk_[1], &trunk_[2]}));
  register_module("heatmaps", seq_of({&heatmaps_[0], &heatmaps_[1]}));
  register_module("pafs", seq_of({&pafs_[0], &pafs_[1]}));
}

std::vector<torch::Tensor> InitialStageImpl::forward(torch::Tensor x) {
  for (auto& t : trunk_) x = t.run(x, fused);
  torch::Tensor h = heatmaps_[1].run(heatmaps_[0].run(x, fused), fused);
  torch::Tensor p = pafs_[1].run(pafs_[0].run(x, fused), fused);
  return {h, p};
}

RefinementStageBlockImpl::RefinementStageBlockImpl(int in_channels, int out_channels) {
  initial_ = make_conv(in_channels, out_channels, 1, 0, false);
  trunk_[0] = make_conv(out_channels, out_channels);
  trunk_[1] = make_conv(out_channels, out_channels, 3, 2, true, 2);
  register_module("initial", initial_.seq);
  register_module("trunk", seq_of({&trunk_[0], &trunk_[1]}));
}

torch::Tensor RefinementStageBlockImpl::forward(torch::Tensor x) {
  torch::Tensor a = initial_.run(x, fused);
  torch::Tensor t = trunk_[1].run(trunk_[0].run(a, fused), fused);
  return a + t;
}

RefinementStageImpl::RefinementStageImpl(int in_channels, int out_channels, int num_heatmaps, int num_pafs) {
  torch::nn::ModuleList trunk;
  for (int i = 0; i < 5; ++i) {
    blocks5_.emplace_back(i == 0 ? in_channels : out_channels, out_channels);
    trunk->push_back(blocks5_.back());
  }
  heatmaps_[0] = make_conv(out_channels, out_channels, 1, 0, false);
  heatmaps_[1] = make_conv(out_channels, num_heatmaps, 1, 0, false, 1, 1, false);
  pafs_[0] = make_conv(out_channels, out_channels, 1, 0, false);
  pafs_[1] = make_conv(out_channels, num_pafs, 1, 0, false, 1, 1, false);
  register_module("trunk", trunk);
  register_module("heatmaps", seq_of({&heatmaps_[0], &heatmaps_[1]}));
  register_module("pafs", seq_of({&pafs_[0], &pafs_[1]}));
}

std::vector<torch::Tensor> RefinementStageImpl::forward(torch::Tensor x) {
  for (auto& b : blocks5_) x = b->forward(x);
  torch::Tensor h = heatmaps_[1].run(heatmaps_[0].run(x, fused), fused);
  torch::Tensor p = pafs_[1].run(pafs_[0].run(x, fused), fused);
  return {h, p};
}

PoseEstimationWithMobileNetImpl::PoseEstimationWithMobileNetImpl(int num_refinement_stages, int num_channels,
                                                                 int num_heatmaps, int num_pafs)
    : num_refinement_stages_(num_refinement_stages) {
  if (num_refinement_stages < 0) throw Error("teacher: negative number of refinement stages");
  backbone_.push_back(make_conv(3, 32, 3, 1, true, 1, /*stride=*/2, true, /*bias=*/false));
  backbone_.push_back(make_conv_dw(32, 64));
  backbone_.push_back(make_conv_dw(64, 128, 3, 1, 2));
  backbone_.push_back(make_conv_dw(128, 128));
  backbone_.push_back(make_conv_dw(128, 256, 3, 1, 2));
  backbone_.push_back(make_conv_dw(256, 256));
  backbone_.push_back(make_conv_dw(256, 512));              // conv4_2
  backbone_.push_back(make_conv_dw(512, 512, 3, 2, 1, 2));  // dilated
  for (int i = 0; i < 4; ++i) backbone_.push_back(make_conv_dw(512, 512));
  torch::nn::ModuleList model;
  for (auto& b : backbone_) model->push_back(b.seq);
  register_module("model", model);
  cpm_ = register_module("cpm", Cpm(512, num_channels));
  initial_stage_ = register_module("initial_stage", InitialStage(num_channels, num_heatmaps, num_pafs));
  for (int r = 0; r < num_refinement_stages; ++r) {
    stages_.emplace_back(num_channels + num_heatmaps + num_pafs, num_channels, num_heatmaps, num_pafs);
    refinement_stages_->push_back(stages_.back());
  }
  register_module("refinement_stages", refinement_stages_);
}

std::vector<torch::Tensor> PoseEstimationWithMobileNetImpl::forward(torch::Tensor x) {
  // The fused path runs channels-last (much faster depthwise/pointwise convs on CPU); outputs are
  // returned in the default contiguous layout either way.
  if (fused_) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (auto& b : backbone_) x = b.run(x, fused_);
  torch::Tensor f = cpm_->forward(x);
  std::vector<torch::Tensor> out = initial_stage_->forward(f);
  for (auto& st : stages_) {
    auto o = st->forward(torch::cat({f, out[out.size() - 2], out[out.size() - 1]}, 1));
    out.insert(out.end(), o.begin(), o.end());
  }
  if (fused_)
    for (auto& t : out) t = t.contiguous();
  return out;
}

void PoseEstimationWithMobileNetImpl::for_each_seq(const std::function<void(TeacherConvSeq&)>& apply) {
  for (auto& b : backbone_) apply(b);
  apply(cpm_->align_);
  for (auto& t : cpm_->trunk_) apply(t);
  apply(cpm_->conv_);
  for (auto& t : initial_stage_->trunk_) apply(t);
  for (auto& t : initial_stage_->heatmaps_) apply(t);
  for (auto& t : initial_stage_->pafs_) apply(t);
  for (auto& st : stages_) {
    for (auto& b : st->blocks5_) {
      apply(b->initial_);
      for (auto& t : b->trunk_) apply(t);
    }
    for (auto& t : st->heatmaps_) apply(t);
    for (auto& t : st->pafs_) apply(t);
  }
}

void PoseEstimationWithMobileNetImpl::set_fused(bool f) {
  fused_ = f;
  cpm_->fused = f;
  initial_stage_->fused = f;
  for (auto& st : stages_) {
    st->fused = f;
    for (auto& b : st->blocks5_) b->fused = f;
  }
  for_each_seq([f](TeacherConvSeq& s) { f ? s.fuse() : s.unfuse(); });
}

void PoseEstimationWithMobileNetImpl::set_weight_layout(at::MemoryFormat format) {
  torch::NoGradGuard ng;
  for (auto& p : parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(format));
}

void PoseEstimationWithMobileNetImpl::set_sync_bn(Collective* group) {
  for_each_seq([group](TeacherConvSeq& s) {
    bool has_bn = false;
    for (const auto& u : s.units) has_bn = has_bn || static_cast<bool>(u.bn);
    s.sync_bn = has_bn ? group : nullptr;
  });
}

void PoseEstimationWithMobileNetImpl::fuse() { set_fused(true); }
void PoseEstimationWithMobileNetImpl::unfuse() { set_fused(false); }

// ------------------------------------------------------------------------------------------------

LoadReport load_teacher_state(PoseEstimationWithMobileNet& net, const io::StateDict& sd, const std::string& source) {
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < sd.size(); ++i) {
    std::string k = sd[i].first;
    if (k.rfind("module.", 0) == 0) k = k.substr(7);
    index[k] = i;
  }
  LoadReport rep;
  std::vector<bool> used(sd.size(), false);
  torch::NoGradGuard ng;
  auto visit = [&](const std::string& name, torch::Tensor& t) {
    auto it = index.find(name);
    if (it != index.end() && sd[it->second].second.defined() && sd[it->second].second.sizes() == t.sizes()) {
      t.copy_(sd[it->second].second);
      used[it->second] = true;
      ++rep.loaded;
    } else {
      ++rep.missing;
      rep.missing_names.push_back(name);
    }
  };
  for (auto& p : net->named_parameters(true)) visit(p.key(), p.value());
  for (auto& b : net->named_buffers(true)) visit(b.key(), b.value());
  for (bool u : used) rep.ignored += u ? 0 : 1;
  if (rep.loaded == 0)
    throw Error(source + ": no teacher weights found (none of the " + std::to_string(sd.size()) +
                " entries matches a teacher parameter name and shape)");
  if (net->is_fused()) net->fuse();  // refresh the folded weights
  return rep;
}

io::StateDict teacher_state_dict_of(const io::Value& file, const std::string& path) {
  if (!file.is_dict()) throw Error(path + ": expected a checkpoint dict or a state dict, got " + file.type_name());
  if (const io::Value* sd = file.find("state_dict")) return io::to_state_dict(*sd, path + ": state_dict");
  // A bare state dict: keep the tensor entries only.
  io::StateDict out;
  for (const auto& kv : file.dict_data().items)
    if (kv.first.is_string() && kv.second.is_tensor()) out.emplace_back(kv.first.as_string(), kv.second.as_tensor());
  if (out.empty()) throw Error(path + ": neither a 'state_dict' entry nor any tensor entry");
  return out;
}

LoadReport load_teacher(PoseEstimationWithMobileNet& net, const std::string& path, bool fuse) {
  io::Value file = io::load_torch_file(path);
  LoadReport rep = load_teacher_state(net, teacher_state_dict_of(file, path), path);
  net->eval();
  if (fuse) net->fuse();
  return rep;
}

TeacherWrapperImpl::TeacherWrapperImpl(PoseEstimationWithMobileNet net, TeacherOptions options)
    : net_(std::move(net)), options_(options) {
  register_module("net", net_);
  for (auto& p : net_->parameters()) p.set_requires_grad(false);
  eval();
}

void TeacherWrapperImpl::train(bool /*on*/) { torch::nn::Module::train(false); }

std::vector<torch::Tensor> TeacherWrapperImpl::forward(torch::Tensor x) {
  torch::NoGradGuard ng;
  if (x.dim() != 4 || x.size(1) != 3) throw Error("teacher: expected an N x 3 x H x W input");
  const int64_t s = options_.input_size, o = options_.output_size;
  torch::Tensor in = x;
  if (x.size(2) != s || x.size(3) != s)
    in = F::interpolate(
        x, F::InterpolateFuncOptions().size(std::vector<int64_t>{s, s}).mode(torch::kBilinear).align_corners(false));
  if (options_.input_scale != 1.0) in = in * options_.input_scale;
  if (options_.precision == Precision::bf16) {
    if (!net_->is_fused()) throw Error("teacher: bf16 inference needs the BatchNorm-fused net (fuse_bn)");
    in = in.to(torch::kBFloat16);  // the fused net keeps the dtype it is given
  }
  auto out = net_->forward(in);
  std::vector<torch::Tensor> res;
  for (size_t i = out.size() - 2; i < out.size(); ++i)
    res.push_back(F::interpolate(
        out[i].to(torch::kFloat),
        F::InterpolateFuncOptions().size(std::vector<int64_t>{o, o}).mode(torch::kBilinear).align_corners(false)));
  return res;
}

TeacherOptions LoadedTeacher::wrapper_options(int output_size) const {
  TeacherOptions o;
  o.num_refinement_stages = info.num_refinement_stages;
  o.input_size = info.input_size;
  o.input_scale = info.input_scale;
  o.output_size = output_size;
  o.fuse_bn = net && net->is_fused();
  return o;
}

LoadedTeacher load_teacher(const std::string& path, double default_input_scale, bool fuse) {
  const io::Value file = io::load_torch_file(path);
  LoadedTeacher t;
  t.info.input_scale = default_input_scale;
  const io::Value* meta = file.is_dict() ? file.find("posekd_teacher") : nullptr;
  if (meta) {
    t.info.from_metadata = true;
    t.info.input_size = static_cast<int>(meta->at("input_size", path).as_int(path + ": posekd_teacher.input_size"));
    t.info.input_scale = meta->at("input_scale", path).as_double(path + ": posekd_teacher.input_scale");
    if (const io::Value* st = meta->find("num_refinement_stages"))
      t.info.num_refinement_stages = static_cast<int>(st->as_int(path + ": posekd_teacher.num_refinement_stages"));
    if (t.info.input_size <= 0 || t.info.input_size % 8 || t.info.num_refinement_stages < 0 ||
        !(t.info.input_scale > 0))
      throw Error(path + ": posekd_teacher metadata out of range (input_size " + std::to_string(t.info.input_size) +
                  ", num_refinement_stages " + std::to_string(t.info.num_refinement_stages) + ")");
  }
  const io::StateDict sd = teacher_state_dict_of(file, path);
  if (!meta) {  // upstream's inference network: at most one refinement stage, as many as the file has
    int stages = 0;
    for (const auto& kv : sd) {
      const std::string k = kv.first.rfind("module.", 0) == 0 ? kv.first.substr(7) : kv.first;
      if (k.rfind("refinement_stages.", 0) == 0) stages = std::max(stages, std::atoi(k.c_str() + 18) + 1);
    }
    t.info.num_refinement_stages = std::min(stages, 1);
  }
  t.net = PoseEstimationWithMobileNet(t.info.num_refinement_stages);
  t.report = load_teacher_state(t.net, sd, path);
  t.net->eval();
  if (fuse) t.net->fuse();
  return t;
}

TeacherWrapper load_teacher_wrapper(const std::string& path, const TeacherOptions& options, LoadReport* report) {
  LoadedTeacher t = load_teacher(path, options.input_scale, options.fuse_bn);
  if (report) *report = t.report;
  TeacherOptions o = t.wrapper_options(options.output_size);
  if (!t.info.from_metadata) o.input_size = options.input_size;
  o.precision = options.precision;
  return TeacherWrapper(t.net, o);
}

}  // namespace posekd::model
