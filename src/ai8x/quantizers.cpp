#include "posekd/ai8x/quantizers.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace posekd::ai8x {

torch::Tensor quantize_value(const torch::Tensor& x, int bits) {
  const double m = std::ldexp(1.0, bits - 1);
  return x.mul(m).add(0.5).floor().div(m);
}

torch::Tensor quantize_simulate_value(const torch::Tensor& x, int bits) {
  if (bits > 1) return x.div(std::ldexp(1.0, bits - 1)).add(0.5).floor();
  if (bits < 1) return x.mul(std::ldexp(1.0, 1 - bits)).add(0.5).floor();
  return x.add(0.5).floor();
}

torch::Tensor quantize_ste(const torch::Tensor& x, int bits) {
  return x + (quantize_value(x.detach(), bits) - x).detach();
}

torch::Tensor quantize_simulate_ste(const torch::Tensor& x, int bits) {
  return x + (quantize_simulate_value(x.detach(), bits) - x).detach();
}

torch::Tensor floor_ste(const torch::Tensor& x) { return x + (x.detach().floor() - x).detach(); }

torch::Tensor clamp(const torch::Tensor& x, double lo, double hi) { return x.clamp(lo, hi); }

double param_clamp_hi(int bits) { return 1.0 - std::ldexp(1.0, 1 - bits); }

namespace {

// Forward kernel: value and gradient mask in one pass over contiguous float32 CPU data.
void quant_clamp_kernel(const float* x, float* y, bool* mask, int64_t n, float in_scale, float mul,
                        float lo, float hi, bool relu, float out_scale) {
  const float inv = 1.0f / mul;  // exact: mul is a power of two
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float v = x[i] * in_scale;
      bool pass = true;
      if (relu && !(v > 0.0f)) {
        v = 0.0f;
        pass = false;
      }
      float q = std::floor(v * mul + 0.5f) * inv;
      if (q < lo) {
        q = lo;
        pass = false;
      } else if (q > hi) {
        q = hi;
        pass = false;
      }
      y[i] = q * out_scale;
      mask[i] = pass;
    }
  });
}

struct QuantClampFn : public torch::autograd::Function<QuantClampFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               double in_scale, int64_t bits, double lo, double hi, bool relu,
                               double out_scale) {
    const double mul = std::ldexp(1.0, static_cast<int>(bits) - 1);
    torch::Tensor y, mask;
    if (x.device().is_cpu() && x.scalar_type() == torch::kFloat) {
      auto xc = x.contiguous();
      y = torch::empty_like(xc);
      mask = torch::empty(xc.sizes(), xc.options().dtype(torch::kBool));
      quant_clamp_kernel(xc.data_ptr<float>(), y.data_ptr<float>(), mask.data_ptr<bool>(),
                         xc.numel(), static_cast<float>(in_scale), static_cast<float>(mul),
                         static_cast<float>(lo), static_cast<float>(hi), relu,
                         static_cast<float>(out_scale));
    } else {
      auto v = x * in_scale;
      torch::Tensor pass;
      if (relu) {
        pass = v > 0;
        v = v.clamp_min(0);
      }
      auto q = v.mul(mul).add(0.5).floor().div(mul);
      auto inside = q.ge(lo).logical_and(q.le(hi));
      mask = relu ? pass.logical_and(inside) : inside;
      y = q.clamp(lo, hi).mul(out_scale);
    }
    ctx->save_for_backward({mask});
    ctx->saved_data["s"] = in_scale * out_scale;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto mask = ctx->get_saved_variables()[0];
    const double s = ctx->saved_data["s"].toDouble();
    auto g = grad[0];
    torch::Tensor gx;
    if (g.device().is_cpu() && g.scalar_type() == torch::kFloat && mask.is_contiguous()) {
      auto gc = g.contiguous();
      gx = torch::empty_like(gc);
      const float* gp = gc.data_ptr<float>();
      const bool* mp = mask.data_ptr<bool>();
      float* op = gx.data_ptr<float>();
      const float sf = static_cast<float>(s);
      at::parallel_for(0, gc.numel(), 16384, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) op[i] = mp[i] ? gp[i] * sf : 0.0f;
      });
    } else {
      auto zero = torch::zeros({}, g.options());
      gx = s == 1.0 ? torch::where(mask, g, zero) : torch::where(mask, g * s, zero);
    }
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor quantize_clamp_ste(const torch::Tensor& x, double in_scale, int bits, double lo,
                                 double hi, bool relu, double out_scale) {
  return QuantClampFn::apply(x, in_scale, static_cast<int64_t>(bits), lo, hi, relu, out_scale);
}

torch::Tensor ersatz_quantile(const torch::Tensor& x, double q) {
  auto flat = x.detach().flatten();
  const int64_t n_all = flat.numel();
  TORCH_CHECK(n_all > 0, "quantile of an empty tensor");
  auto fp = std::get<0>(flat.sort());
  if (q >= 1.0) return fp[n_all - 1];
  // xp_k = (2k+1)/(2N); count of xp_k <= q
  auto xp = (torch::arange(n_all, flat.options()) * 2 + 1) / (2.0 * static_cast<double>(n_all));
  int64_t count = xp.le(q).sum().item<int64_t>();
  const int64_t n = n_all - 1;
  int64_t i = std::min(std::max<int64_t>(count, 1), std::max<int64_t>(n, 1)) - 1;
  if (n == 0) return fp[0];
  auto g = torch::full({}, q * static_cast<double>(n) - static_cast<double>(i), flat.options());
  return fp[i] + g * (fp[i + 1] - fp[i]);
}

torch::Tensor torch_quantile(const torch::Tensor& x, double q) {
  return torch::quantile(x.detach().flatten(), q);
}

torch::Tensor flat_params(const torch::Tensor& w, const torch::Tensor& b) {
  if (b.defined()) return torch::cat({w.detach().flatten(), b.detach().flatten()});
  return w.detach().flatten();
}

int output_shift_from_limit(float limit) {
  // -floor(log2(1/L)) in float32, as ai8x computes it on a float32 tensor.
  const float inv = 1.0f / limit;
  const float l2 = std::log2(inv);
  float os = -std::floor(l2);
  if (std::isnan(os)) os = 15.0f;
  return static_cast<int>(std::min(15.0f, std::max(-15.0f, os)));
}

int output_shift_from_params(const torch::Tensor& w, const torch::Tensor& b, double shift_quantile) {
  torch::NoGradGuard ng;
  float limit;
  if (shift_quantile >= 1.0) {
    float m = w.detach().abs().max().item<float>();
    if (b.defined()) m = std::max(m, b.detach().abs().max().item<float>());
    limit = m;
  } else {
    limit = ersatz_quantile(flat_params(w, b).abs(), shift_quantile).item<float>();
  }
  return output_shift_from_limit(limit);
}

FoldedConv fold_bn(const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& gamma,
                   const torch::Tensor& beta, const torch::Tensor& running_mean,
                   const torch::Tensor& running_var, double eps) {
  torch::NoGradGuard ng;
  auto inv_std = torch::rsqrt(running_var + eps);
  auto g = gamma.defined() ? gamma.detach() : torch::ones_like(running_mean);
  auto be = beta.defined() ? beta.detach() : torch::zeros_like(running_mean);
  auto bias = b.defined() ? b.detach() : torch::zeros_like(running_mean);
  std::vector<int64_t> shape(w.dim(), 1);
  shape[0] = w.size(0);
  FoldedConv out;
  out.weight = w.detach() * (g * inv_std).reshape(shape);
  out.bias = (bias - running_mean) * inv_std * g + be;
  return out;
}

torch::Tensor fold(const torch::Tensor& x, int64_t f) {
  const bool batched = x.dim() == 4;
  TORCH_CHECK(batched || x.dim() == 3, "fold expects [N,C,H,W] or [C,H,W]");
  auto xb = batched ? x : x.unsqueeze(0);
  const int64_t n = xb.size(0), c = xb.size(1), h = xb.size(2), w = xb.size(3);
  TORCH_CHECK(h % f == 0 && w % f == 0, "fold: H and W must be multiples of the factor");
  auto y = xb.reshape({n, c, h / f, f, w / f, f})
               .permute({0, 3, 5, 1, 2, 4})
               .reshape({n, f * f * c, h / f, w / f});
  return batched ? y : y.squeeze(0);
}

}  // namespace posekd::ai8x
