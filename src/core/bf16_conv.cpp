#include "posekd/core/bf16_conv.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "posekd/core/error.h"
#include "posekd/core/precision.h"

namespace posekd {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::engine& dnnl_cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// One primitive per geometry (the student and the teacher have a few dozen); oneDNN's own cache
// would also serve repeated creations, but the descriptor building is not free.
struct ConvPrim {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::memory::desc user_w_md;  // the bf16 weights as LibTorch holds them (oihw / goihw)
  bool reorder_w = false;
};

using ConvKey = std::tuple<std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>,
                           std::vector<int64_t>, std::vector<int64_t>, int64_t, bool>;

std::shared_ptr<ConvPrim> conv_prim(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws,
                                    const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                                    const std::vector<int64_t>& dilation, int64_t groups, bool bias,
                                    const std::vector<int64_t>& ys) {
  static std::mutex mu;
  static std::map<ConvKey, std::shared_ptr<ConvPrim>> cache;
  ConvKey key{xs, ws, stride, padding, dilation, groups, bias};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  using dims = dnnl::memory::dims;
  auto& eng = dnnl_cpu_engine();
  dnnl::memory::desc src_md(dims(xs.begin(), xs.end()), dt::bf16, tag::nhwc);
  dnnl::memory::desc dst_md(dims(ys.begin(), ys.end()), dt::f32, tag::nhwc);
  dims wd;
  if (groups == 1) {
    wd = dims(ws.begin(), ws.end());
  } else {
    wd = {groups, ws[0] / groups, ws[1], ws[2], ws[3]};
  }
  dnnl::memory::desc w_any(wd, dt::bf16, tag::any);
  dnnl::memory::desc user_w(wd, dt::bf16, groups == 1 ? tag::oihw : tag::goihw);
  dnnl::memory::desc b_md = bias ? dnnl::memory::desc({ws[0]}, dt::f32, tag::a) : dnnl::memory::desc();
  dims pad_l{padding[0], padding[1]}, pad_r(2), dil{dilation[0] - 1, dilation[1] - 1};
  for (int i = 0; i < 2; ++i)  // what LibTorch's floor division implies on the far side
    pad_r[i] = (ys[2 + i] - 1) * stride[i] + (ws[2 + i] - 1) * dilation[i] + 1 - xs[2 + i] - padding[i];
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                    src_md, w_any, b_md, dst_md, dims{stride[0], stride[1]}, dil, pad_l, pad_r);
  auto p = std::make_shared<ConvPrim>();
  p->pd = dnnl::convolution_forward::primitive_desc(d, eng);
  p->prim = dnnl::convolution_forward(p->pd);
  p->user_w_md = user_w;
  p->reorder_w = p->pd.weights_desc() != user_w;
  cache.emplace(std::move(key), p);
  return p;
}

std::vector<int64_t> conv_out_sizes(const torch::Tensor& x, const torch::Tensor& w, const std::vector<int64_t>& stride,
                                    const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation) {
  std::vector<int64_t> ys{x.size(0), w.size(0), 0, 0};
  for (int i = 0; i < 2; ++i)
    ys[2 + i] = (x.size(2 + i) + 2 * padding[i] - dilation[i] * (w.size(2 + i) - 1) - 1) / stride[i] + 1;
  return ys;
}

// x_bf: bf16 channels-last; w_bf: bf16 contiguous (OIHW); b: fp32 contiguous or undefined.
// Returns fp32 channels-last.
torch::Tensor dnnl_conv_bf16_f32(const torch::Tensor& x_bf, const torch::Tensor& w_bf, const torch::Tensor& b,
                                 const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                                 const std::vector<int64_t>& dilation, int64_t groups) {
  auto ys = conv_out_sizes(x_bf, w_bf, stride, padding, dilation);
  if (ys[2] <= 0 || ys[3] <= 0) throw Error("conv2d_bf16: input smaller than the kernel");
  auto p = conv_prim(x_bf.sizes().vec(), w_bf.sizes().vec(), stride, padding, dilation, groups, b.defined(), ys);
  auto y = torch::empty(ys, x_bf.options().dtype(torch::kFloat).memory_format(at::MemoryFormat::ChannelsLast));
  auto& eng = dnnl_cpu_engine();
  dnnl::stream s(eng);
  dnnl::memory src(p->pd.src_desc(), eng, x_bf.data_ptr());
  dnnl::memory dst(p->pd.dst_desc(), eng, y.data_ptr());
  dnnl::memory wu(p->user_w_md, eng, w_bf.data_ptr());
  dnnl::memory wm = wu;
  if (p->reorder_w) {
    wm = dnnl::memory(p->pd.weights_desc(), eng);
    dnnl::reorder(wu, wm).execute(s, wu, wm);
  }
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, dst}};
  if (b.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p->pd.bias_desc(), eng, b.data_ptr()));
  p->prim.execute(s, args);
  s.wait();
  return y;
}

struct ConvArgs {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

class Bf16Conv2dFn : public torch::autograd::Function<Bf16Conv2dFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& b, const ConvArgs& a) {
    const bool cl = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
    auto x_bf = x.to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
    auto w_bf = w.to(torch::kBFloat16).contiguous();
    const bool has_b = b.numel() > 0;  // no bias: an empty tensor (apply() cannot take undefined ones)
    auto bf = has_b ? b.to(torch::kFloat).contiguous() : torch::Tensor();
    auto y = dnnl_conv_bf16_f32(x_bf, w_bf, bf, a.stride, a.padding, a.dilation, a.groups);
    ctx->save_for_backward({x_bf, w_bf});
    ctx->saved_data["stride"] = a.stride;
    ctx->saved_data["padding"] = a.padding;
    ctx->saved_data["dilation"] = a.dilation;
    ctx->saved_data["groups"] = a.groups;
    ctx->saved_data["x_cl"] = cl;
    ctx->saved_data["x_bf16"] = x.scalar_type() == torch::kBFloat16;
    ctx->saved_data["w_bf16"] = w.scalar_type() == torch::kBFloat16;
    ctx->saved_data["bias"] = has_b;
    return cl ? y : y.contiguous();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x_bf = saved[0];
    const auto& w_bf = saved[1];
    auto g = grads[0];
    auto stride = ctx->saved_data["stride"].toIntVector();
    auto padding = ctx->saved_data["padding"].toIntVector();
    auto dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const bool cl = ctx->saved_data["x_cl"].toBool();
    auto g_bf = g.to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
    std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), false};
    torch::Tensor gx, gw, gb;
    if (mask[0] || mask[1]) {
      auto r = at::convolution_backward(g_bf, x_bf, w_bf, c10::nullopt, stride, padding, dilation, false, {0, 0},
                                        groups, mask);
      if (mask[0]) {
        gx = std::get<0>(r).to(ctx->saved_data["x_bf16"].toBool() ? torch::kBFloat16 : torch::kFloat);
        gx = cl ? gx.contiguous(at::MemoryFormat::ChannelsLast) : gx.contiguous();
      }
      if (mask[1]) gw = std::get<1>(r).to(ctx->saved_data["w_bf16"].toBool() ? torch::kBFloat16 : torch::kFloat).contiguous();
    }
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = g.to(torch::kFloat).sum({0, 2, 3});
    return {gx, gw, gb, torch::Tensor()};
  }
};

}  // namespace

bool conv2d_bf16_supported() {
  const auto& f = cpu_features();
  return f.bf16_units() || f.avx512_core;
}

torch::Tensor conv2d_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                          std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                          int64_t groups) {
  if (x.dim() != 4 || w.dim() != 4) throw Error("conv2d_bf16: expected 4-D input and weight");
  if (!x.device().is_cpu()) throw Error("conv2d_bf16: CPU tensors only");
  if (x.size(1) != w.size(1) * groups || w.size(0) % groups != 0)
    throw Error("conv2d_bf16: input channels do not match the weight and groups");
  if (!conv2d_bf16_supported()) throw Error("conv2d_bf16: this CPU cannot run bf16 convolutions (no AVX-512)");
  return Bf16Conv2dFn::apply(x, w, b.defined() ? b : torch::empty({0}, x.options().dtype(torch::kFloat)), ConvArgs{std::move(stride), std::move(padding), std::move(dilation), groups});
}

}  // namespace posekd
