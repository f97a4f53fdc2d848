#include "posekd/core/bf16_norm.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "onednn_engine.h"
#include "posekd/core/bf16_conv.h"
#include "posekd/core/error.h"

namespace posekd {

namespace {
// (a nested namespace: the core module is compiled as a unity build, its anonymous namespaces share
// translation units)
namespace bn_detail {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using flags = dnnl::normalization_flags;

// One forward (and, once needed, backward) primitive per geometry, epsilon and ReLU choice.
struct BnPrim {
  dnnl::batch_normalization_forward::primitive_desc fwd_pd;
  dnnl::batch_normalization_forward fwd;
  std::once_flag bwd_once;
  dnnl::batch_normalization_backward::primitive_desc bwd_pd;
  dnnl::batch_normalization_backward bwd;
  size_t ws_bytes = 0;  // the ReLU mask (fuse_norm_relu), else 0
  // oneDNN's choice is a jit kernel. 2.6.3 has jit kernels for channels-last bf16 only when C is a
  // multiple of 16; otherwise its first choice is "nspc_bnorm:any", plain C++ about ten times
  // slower than LibTorch (forward + backward at [8, 19, 64, 64]: 31 ms against 4.3 ms), and
  // batch_norm_bf16 runs LibTorch's BatchNorm (and ReLU) instead.
  bool jit = false;
};

using BnKey = std::tuple<std::vector<int64_t>, double, bool>;

flags bn_flags(bool relu) {
  flags f = flags::use_scale | flags::use_shift;
  return relu ? f | flags::fuse_norm_relu : f;
}

dnnl::memory::desc data_md(const std::vector<int64_t>& sizes) {
  return dnnl::memory::desc(dnnl::memory::dims(sizes.begin(), sizes.end()), dt::bf16, tag::nhwc);
}

std::shared_ptr<BnPrim> bn_prim(const std::vector<int64_t>& sizes, double eps, bool relu) {
  static std::mutex mu;
  static std::map<BnKey, std::shared_ptr<BnPrim>> cache;
  BnKey key{sizes, eps, relu};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto p = std::make_shared<BnPrim>();
  dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_training, data_md(sizes), static_cast<float>(eps),
                                            bn_flags(relu));
  p->fwd_pd = dnnl::batch_normalization_forward::primitive_desc(d, dnnl_cpu_engine());
  p->fwd = dnnl::batch_normalization_forward(p->fwd_pd);
  p->ws_bytes = relu ? p->fwd_pd.workspace_desc().get_size() : 0;
  p->jit = std::string(p->fwd_pd.impl_info_str()).find("jit") != std::string::npos;
  cache.emplace(std::move(key), p);
  return p;
}

void make_backward(BnPrim& p, const std::vector<int64_t>& sizes, double eps, bool relu) {
  std::call_once(p.bwd_once, [&] {
    dnnl::batch_normalization_backward::desc d(dnnl::prop_kind::backward, data_md(sizes), data_md(sizes),
                                               static_cast<float>(eps), bn_flags(relu));
    p.bwd_pd = dnnl::batch_normalization_backward::primitive_desc(d, dnnl_cpu_engine(), p.fwd_pd);
    p.bwd = dnnl::batch_normalization_backward(p.bwd_pd);
  });
}

dnnl::memory mem(const dnnl::memory::desc& md, const torch::Tensor& t) {
  return dnnl::memory(md, dnnl_cpu_engine(), t.data_ptr());
}

struct BnArgs {
  double eps;
  bool relu;
};

// Outputs: the result, the batch mean and the biased batch variance (fp32 [C], not differentiable).
class Bf16BatchNormFn : public torch::autograd::Function<Bf16BatchNormFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                                const torch::Tensor& w, const torch::Tensor& b, const BnArgs& a) {
    RECORD_FUNCTION("posekd::batch_norm_bf16", std::vector<c10::IValue>({x}));
    const auto sizes = x.sizes().vec();
    auto p = bn_prim(sizes, a.eps, a.relu);
    auto xc = x.contiguous(at::MemoryFormat::ChannelsLast);
    auto wc = w.contiguous(), bc = b.contiguous();
    auto y = torch::empty(sizes, x.options().memory_format(at::MemoryFormat::ChannelsLast));
    auto mean = torch::empty({sizes[1]}, w.options());
    auto var = torch::empty({sizes[1]}, w.options());
    auto ws = torch::empty({static_cast<int64_t>(p->ws_bytes)}, x.options().dtype(torch::kUInt8));
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, mem(p->fwd_pd.src_desc(), xc)},       {DNNL_ARG_DST, mem(p->fwd_pd.dst_desc(), y)},
        {DNNL_ARG_SCALE, mem(p->fwd_pd.weights_desc(), wc)}, {DNNL_ARG_SHIFT, mem(p->fwd_pd.weights_desc(), bc)},
        {DNNL_ARG_MEAN, mem(p->fwd_pd.mean_desc(), mean)},   {DNNL_ARG_VARIANCE, mem(p->fwd_pd.variance_desc(), var)}};
    if (a.relu) args.emplace(DNNL_ARG_WORKSPACE, mem(p->fwd_pd.workspace_desc(), ws));
    dnnl::stream s(dnnl_cpu_engine());
    p->fwd.execute(s, args);
    s.wait();
    ctx->mark_non_differentiable({mean, var});
    if (x.requires_grad() || w.requires_grad() || b.requires_grad()) {  // (apply() runs this without grad mode)
      ctx->save_for_backward({xc, wc, bc, mean, var, ws});
      ctx->saved_data["eps"] = a.eps;
      ctx->saved_data["relu"] = a.relu;
    }
    return {y, mean, var};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("posekd::batch_norm_bf16_backward", std::vector<c10::IValue>({grads[0]}));
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &b = saved[2], &mean = saved[3], &var = saved[4], &ws = saved[5];
    const double eps = ctx->saved_data["eps"].toDouble();
    const bool relu = ctx->saved_data["relu"].toBool();
    const auto sizes = x.sizes().vec();
    auto p = bn_prim(sizes, eps, relu);
    make_backward(*p, sizes, eps, relu);
    auto g = grads[0].to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
    auto gx = torch::empty(sizes, x.options().memory_format(at::MemoryFormat::ChannelsLast));
    auto gw = torch::empty_like(w), gb = torch::empty_like(w);
    const auto& pd = p->bwd_pd;
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, mem(pd.src_desc(), x)},
                                               {DNNL_ARG_MEAN, mem(pd.mean_desc(), mean)},
                                               {DNNL_ARG_VARIANCE, mem(pd.variance_desc(), var)},
                                               {DNNL_ARG_DIFF_DST, mem(pd.diff_dst_desc(), g)},
                                               {DNNL_ARG_SCALE, mem(pd.weights_desc(), w)},
                                               // (not read, but oneDNN 2.6.3 rejects use_shift without it)
                                               {DNNL_ARG_SHIFT, mem(pd.weights_desc(), b)},
                                               {DNNL_ARG_DIFF_SRC, mem(pd.diff_src_desc(), gx)},
                                               {DNNL_ARG_DIFF_SCALE, mem(pd.diff_weights_desc(), gw)},
                                               {DNNL_ARG_DIFF_SHIFT, mem(pd.diff_weights_desc(), gb)}};
    if (relu) args.emplace(DNNL_ARG_WORKSPACE, mem(pd.workspace_desc(), ws));
    dnnl::stream s(dnnl_cpu_engine());
    p->bwd.execute(s, args);
    s.wait();
    return {ctx->needs_input_grad(0) ? gx : torch::Tensor(), ctx->needs_input_grad(1) ? gw : torch::Tensor(),
            ctx->needs_input_grad(2) ? gb : torch::Tensor(), torch::Tensor()};
  }
};

// Identity whose backward hands the gradient on channels-last: LibTorch 1.13's mixed-type BatchNorm
// backward loses precision when the input and the output gradient differ in layout (bias gradient
// off by up to 1%, input gradient 1.7x further from fp32 than with matching layouts).
class ChannelsLastGradFn : public torch::autograd::Function<ChannelsLastGradFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& y) { return y; }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grads) {
    return {grads[0].contiguous(at::MemoryFormat::ChannelsLast)};
  }
};

void check_param(const torch::Tensor& t, int64_t c, const char* name) {
  if (!t.defined()) return;
  if (t.dim() != 1 || t.size(0) != c || t.scalar_type() != torch::kFloat || !t.device().is_cpu())
    throw Error(std::string("batch_norm_bf16: ") + name + " must be an fp32 CPU tensor of shape [" + std::to_string(c) +
                "] (the input's channels), got " + std::string(c10::toString(t.scalar_type())) + " " +
                c10::str(t.sizes()));
}

}  // namespace bn_detail
}  // namespace

bool batch_norm_bf16_supported() { return conv2d_bf16_supported(); }

std::string batch_norm_bf16_impl_info(const std::vector<int64_t>& sizes, double eps, bool relu) {
  if (sizes.size() != 4) throw Error("batch_norm_bf16_impl_info: expected 4 sizes (N, C, H, W)");
  auto p = bn_detail::bn_prim(sizes, eps, relu);
  if (!p->jit)
    return std::string("LibTorch (oneDNN has no jit kernel for C=") + std::to_string(sizes[1]) +
           "; its first choice: " + p->fwd_pd.impl_info_str() + ")";
  bn_detail::make_backward(*p, sizes, eps, relu);
  return std::string("forward: ") + p->fwd_pd.impl_info_str() + "; backward: " + p->bwd_pd.impl_info_str();
}

torch::Tensor batch_norm_bf16(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor running_mean, torch::Tensor running_var, double momentum, double eps,
                              bool relu) {
  if (!x.defined() || x.dim() != 4)
    throw Error("batch_norm_bf16: expected a 4-D input [N, C, H, W], got " +
                (x.defined() ? std::to_string(x.dim()) + "-D" : std::string("an undefined tensor")));
  if (x.scalar_type() != torch::kBFloat16)
    throw Error(std::string("batch_norm_bf16: expected a bf16 input, got ") + c10::toString(x.scalar_type()));
  if (!x.device().is_cpu()) throw Error("batch_norm_bf16: CPU tensors only");
  const int64_t c = x.size(1), n = x.size(0) * x.size(2) * x.size(3);
  if (c < 1) throw Error("batch_norm_bf16: the input has no channels");
  if (n < 2)
    throw Error("batch_norm_bf16: expected more than 1 value per channel when training, got input size " +
                c10::str(x.sizes()));
  bn_detail::check_param(weight, c, "weight");
  bn_detail::check_param(bias, c, "bias");
  bn_detail::check_param(running_mean, c, "running_mean");
  bn_detail::check_param(running_var, c, "running_var");
  if (!(eps > 0.0)) throw Error("batch_norm_bf16: eps must be positive");
  if (!batch_norm_bf16_supported())
    throw Error("batch_norm_bf16: this CPU cannot run oneDNN's bf16 kernels (no AVX-512)");
  if (!bn_detail::bn_prim(x.sizes().vec(), eps, relu)->jit) {  // no fast oneDNN kernel: LibTorch's
    auto y = torch::batch_norm(x.contiguous(at::MemoryFormat::ChannelsLast), weight, bias, running_mean, running_var,
                               /*training=*/true, momentum, eps, /*cudnn_enabled=*/false);
    if (relu) y = torch::relu(y);
    return y.requires_grad() ? bn_detail::ChannelsLastGradFn::apply(y) : y;
  }
  // affine=false: scale 1, shift 0 (constants, no gradient).
  auto w = weight.defined() ? weight : torch::ones({c}, x.options().dtype(torch::kFloat));
  auto b = bias.defined() ? bias : torch::zeros({c}, x.options().dtype(torch::kFloat));
  // The layout change is outside the Function, so autograd takes the gradient back to x's layout.
  auto outs = bn_detail::Bf16BatchNormFn::apply(x.contiguous(at::MemoryFormat::ChannelsLast), w, b,
                                                bn_detail::BnArgs{eps, relu});
  if (running_mean.defined() || running_var.defined()) {
    // LibTorch's update (batch_norm_cpu_update_stats_template): in double, then stored as float.
    torch::NoGradGuard no_grad;
    auto mean = outs[1].accessor<float, 1>();
    auto var = outs[2].accessor<float, 1>();
    const double unbias = static_cast<double>(n) / static_cast<double>(n - 1);
    if (running_mean.defined()) {
      auto rm = running_mean.accessor<float, 1>();
      for (int64_t i = 0; i < c; ++i) rm[i] = static_cast<float>(momentum * mean[i] + (1.0 - momentum) * rm[i]);
      torch::autograd::impl::bump_version(running_mean);  // written in place, as an in-place op would
    }
    if (running_var.defined()) {
      auto rv = running_var.accessor<float, 1>();
      for (int64_t i = 0; i < c; ++i) rv[i] = static_cast<float>(momentum * var[i] * unbias + (1.0 - momentum) * rv[i]);
      torch::autograd::impl::bump_version(running_var);
    }
  }
  return outs[0];
}

double count_batch_and_momentum(torch::nn::BatchNorm2dImpl& bn) {
  torch::NoGradGuard ng;
  bn.num_batches_tracked.add_(1);
  const auto& m = bn.options.momentum();
  return m.has_value() ? *m : 1.0 / bn.num_batches_tracked.item<double>();
}

torch::Tensor batch_norm_bf16(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, bool relu) {
  const auto& o = bn.options;
  const bool track = o.track_running_stats();
  const double m = track ? count_batch_and_momentum(bn) : 0.0;
  return batch_norm_bf16(x, o.affine() ? bn.weight : torch::Tensor(), o.affine() ? bn.bias : torch::Tensor(),
                         track ? bn.running_mean : torch::Tensor(), track ? bn.running_var : torch::Tensor(), m,
                         o.eps(), relu);
}

}  // namespace posekd
