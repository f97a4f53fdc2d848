#include "posekd/core/max_pool.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "posekd/core/error.h"

namespace posekd {

namespace {
// (a nested namespace: the core module is compiled as a unity build)
namespace pool_detail {

// The kernels work on the elements' bits: bf16 as std::uint16_t (the upper half of a float), fp32
// as std::uint32_t, so the backward's select is an AND with a mask (which vectorises; a conditional
// between a byte index and 16-bit values did not, and took 10x as long).
inline float as_float(std::uint16_t bf16) {
  const std::uint32_t u = static_cast<std::uint32_t>(bf16) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float as_float(std::uint32_t f32) {
  float f;
  std::memcpy(&f, &f32, 4);
  return f;
}
inline void put(float v, std::uint16_t* y) {  // exact: v came from a bf16
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  *y = static_cast<std::uint16_t>(u >> 16);
}
inline void put(float v, std::uint32_t* y) { std::memcpy(y, &v, 4); }

struct Geometry {
  int64_t n, h, w, c, k, oh, ow;
};

// y[n, oh, ow, c] = max over the window, idx = its position i*k+j in the window (may be null).
// Channels in blocks of 64 held in local arrays, so the inner loops vectorise.
template <class Bits>
void forward(const Bits* __restrict x, Bits* __restrict y, std::uint8_t* __restrict idx, const Geometry& g) {
  constexpr int64_t kBlock = 64;
  at::parallel_for(0, g.n * g.oh, 1, [&](int64_t b, int64_t e) {
    alignas(64) float best[kBlock];
    alignas(64) std::int32_t arg[kBlock];
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / g.oh, oh = r % g.oh;
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const int64_t o = (r * g.ow + ow) * g.c;
        const Bits* x0 = x + ((n * g.h + oh * g.k) * g.w + ow * g.k) * g.c;
        for (int64_t c0 = 0; c0 < g.c; c0 += kBlock) {
          const int64_t cn = std::min(kBlock, g.c - c0);
          for (int64_t c = 0; c < cn; ++c) {
            best[c] = as_float(x0[c0 + c]);
            arg[c] = 0;
          }
          for (int64_t i = 0; i < g.k; ++i) {
            for (int64_t j = i == 0 ? 1 : 0; j < g.k; ++j) {
              const Bits* __restrict xp = x0 + (i * g.w + j) * g.c + c0;
              const auto pos = static_cast<std::int32_t>(i * g.k + j);
              for (int64_t c = 0; c < cn; ++c) {
                const float v = as_float(xp[c]);
                const bool take = (v > best[c]) | (v != v);  // LibTorch's rule: larger, or NaN
                best[c] = take ? v : best[c];
                arg[c] = take ? pos : arg[c];
              }
            }
          }
          for (int64_t c = 0; c < cn; ++c) put(best[c], y + o + c0 + c);
          if (idx)
            for (int64_t c = 0; c < cn; ++c) idx[o + c0 + c] = static_cast<std::uint8_t>(arg[c]);
        }
      }
    }
  });
}

// gx[n, h, w, c] = gy[n, h/k, w/k, c] where the window's index points at (h, w), else 0 (also in
// the rows and columns no window covers).
template <class Bits>
void backward(const Bits* __restrict gy, const std::uint8_t* __restrict idx, Bits* __restrict gx, const Geometry& g) {
  at::parallel_for(0, g.n * g.h, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / g.h, h = r % g.h, oh = h / g.k;
      Bits* row = gx + r * g.w * g.c;
      if (oh >= g.oh) {
        std::memset(row, 0, sizeof(Bits) * g.w * g.c);
        continue;
      }
      for (int64_t w = 0; w < g.w; ++w) {
        const int64_t ow = w / g.k;
        Bits* __restrict out = row + w * g.c;
        if (ow >= g.ow) {
          std::memset(out, 0, sizeof(Bits) * g.c);
          continue;
        }
        const int64_t o = ((n * g.oh + oh) * g.ow + ow) * g.c;
        const auto pos = static_cast<std::uint8_t>((h % g.k) * g.k + w % g.k);
        const Bits* __restrict go = gy + o;
        const std::uint8_t* __restrict io = idx + o;
        for (int64_t c = 0; c < g.c; ++c) out[c] = go[c] & static_cast<Bits>(-static_cast<Bits>(io[c] == pos));
      }
    }
  });
}

std::uint16_t* bits16(const torch::Tensor& t) { return reinterpret_cast<std::uint16_t*>(t.data_ptr()); }
std::uint32_t* bits32(const torch::Tensor& t) { return reinterpret_cast<std::uint32_t*>(t.data_ptr()); }

Geometry geometry(c10::IntArrayRef sizes, int64_t k) {  // NCHW sizes of the input
  return Geometry{sizes[0], sizes[2], sizes[3], sizes[1], k, sizes[2] / k, sizes[3] / k};
}

class MaxPoolFn : public torch::autograd::Function<MaxPoolFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t k) {
    RECORD_FUNCTION("posekd::max_pool2d", std::vector<c10::IValue>({x}));
    const auto xc = x.contiguous(at::MemoryFormat::ChannelsLast);
    const Geometry g = geometry(xc.sizes(), k);
    auto y = torch::empty({g.n, g.c, g.oh, g.ow}, xc.options().memory_format(at::MemoryFormat::ChannelsLast));
    const bool grad = x.requires_grad();  // (apply() runs this without grad mode)
    torch::Tensor idx = grad ? torch::empty(y.sizes(), y.options().dtype(torch::kUInt8)) : torch::Tensor();
    std::uint8_t* ip = grad ? idx.data_ptr<std::uint8_t>() : nullptr;
    if (xc.scalar_type() == torch::kBFloat16)
      pool_detail::forward(bits16(xc), bits16(y), ip, g);
    else
      pool_detail::forward(bits32(xc), bits32(y), ip, g);
    if (grad) {
      ctx->save_for_backward({idx});
      ctx->saved_data["sizes"] = xc.sizes().vec();
      ctx->saved_data["k"] = k;
      ctx->saved_data["cl"] = x.is_contiguous(at::MemoryFormat::ChannelsLast) || !x.is_contiguous();
    }
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("posekd::max_pool2d_backward", std::vector<c10::IValue>({grads[0]}));
    const auto idx = ctx->get_saved_variables()[0];
    const auto sizes = ctx->saved_data["sizes"].toIntVector();
    const int64_t k = ctx->saved_data["k"].toInt();
    const auto gy = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    auto gx = torch::empty(sizes, gy.options().memory_format(at::MemoryFormat::ChannelsLast));
    const Geometry g = geometry(sizes, k);
    if (gy.scalar_type() == torch::kBFloat16)
      pool_detail::backward(bits16(gy), idx.data_ptr<std::uint8_t>(), bits16(gx), g);
    else
      pool_detail::backward(bits32(gy), idx.data_ptr<std::uint8_t>(), bits32(gx), g);
    if (!ctx->saved_data["cl"].toBool()) gx = gx.contiguous();
    return {gx, torch::Tensor()};
  }
};

}  // namespace pool_detail
}  // namespace

torch::Tensor max_pool2d_nonoverlapping(const torch::Tensor& x, int64_t kernel) {
  if (!x.defined() || x.dim() != 4) throw Error("max_pool2d_nonoverlapping: expected a 4-D input [N, C, H, W]");
  if (x.scalar_type() != torch::kBFloat16 && x.scalar_type() != torch::kFloat)
    throw Error(std::string("max_pool2d_nonoverlapping: expected bf16 or fp32, got ") + c10::toString(x.scalar_type()));
  if (!x.device().is_cpu()) throw Error("max_pool2d_nonoverlapping: CPU tensors only");
  if (kernel < 1 || kernel > 16) throw Error("max_pool2d_nonoverlapping: kernel must be 1..16");
  if (x.size(2) < kernel || x.size(3) < kernel)
    throw Error("max_pool2d_nonoverlapping: input " + std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)) +
                " smaller than the kernel " + std::to_string(kernel));
  return pool_detail::MaxPoolFn::apply(x, kernel);
}

}  // namespace posekd
