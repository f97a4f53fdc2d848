#include "posekd/ai8x/quantizers.h"

#include "posekd/core/bf16_conv.h"
#include "posekd/core/error.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// The QAT step spends more time in these two kernels than in anything but the convolutions
// (bench --profile: 39 ms of a 175 ms step when the loop called libm's floorf per element). They
// come in three forms: AVX-512 and AVX2 intrinsics, used when the CPU has them (checked once at run
// time), and a portable scalar loop. All do the same operations in the same order as the reference,
// and every product is by a power of two, so all are exact (tests/ai8x/test_quantizers.cpp compares
// them). AVX-512 over AVX2: half the time on the seed student's activations (1M elements: 293 ->
// 160 us, 2 threads).

// floor(t) exactly for every float without a libm call: |t| >= 2^23 is already an integer, NaN
// passes through. The clamp keeps the int conversion in range (no undefined behaviour).
inline float floor_exact(float t) {
  constexpr float big = 8388608.0f;  // 2^23
  const float tc = t < -big ? -big : (t > big ? big : t);
  const float i = static_cast<float>(static_cast<std::int32_t>(tc));
  const float f = i > tc ? i - 1.0f : i;
  return std::fabs(t) < big ? f : t;
}

// bf16 as its 16 bits: the upper half of the float. The quantizer's results lie on the 8-bit grid
// (times powers of two), exact in bf16, so dropping the lower half is exact for them (and keeps NaN).
inline void store(float v, float* y) { *y = v; }
inline void store(float v, std::uint16_t* y) {
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  *y = static_cast<std::uint16_t>(b >> 16);
}
inline float load(const float* g) { return *g; }
inline float load(const std::uint16_t* g) {
  const std::uint32_t b = static_cast<std::uint32_t>(*g) << 16;
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

template <class Out>
void quant_clamp_scalar(const float* x, Out* y, std::uint8_t* mask, std::int64_t n, float in_scale, float mul, float lo,
                        float hi, bool relu, float out_scale) {
  const float inv = 1.0f / mul;  // exact: mul is a power of two
  for (std::int64_t i = 0; i < n; ++i) {
    float v = x[i] * in_scale;
    bool pass = true;
    if (relu && !(v > 0.0f)) {  // ReLU passes the gradient only for v > 0 (NaN: no)
      v = 0.0f;
      pass = false;
    }
    float q = floor_exact(v * mul + 0.5f) * inv;
    if (q < lo) {
      q = lo;
      pass = false;
    } else if (q > hi) {
      q = hi;
      pass = false;
    }
    store(q * out_scale, y + i);
    mask[i] = pass;
  }
}

template <class In, class Out>
void masked_scale_scalar(const In* g, const std::uint8_t* mask, Out* out, std::int64_t n, float s) {
  for (std::int64_t i = 0; i < n; ++i) store(mask[i] ? load(g + i) * s : 0.0f, out + i);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define POSEKD_QUANT_AVX2 1
// 8 mask bits -> 8 bytes of 0/1 (byte k = bit k).
struct ByteMaskTable {
  std::uint64_t v[256];
  ByteMaskTable() {
    for (int b = 0; b < 256; ++b) {
      v[b] = 0;
      for (int k = 0; k < 8; ++k)
        if (b & (1 << k)) v[b] |= std::uint64_t{1} << (8 * k);
    }
  }
};
const ByteMaskTable kByteMask;

__attribute__((target("avx2"))) inline void store8(__m256 v, float* y) { _mm256_storeu_ps(y, v); }
__attribute__((target("avx2"))) inline void store8(__m256 v, std::uint16_t* y) {  // upper halves (see store)
  const __m256i b = _mm256_srli_epi32(_mm256_castps_si256(v), 16);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y),
                   _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
}
__attribute__((target("avx2"))) inline __m256 load8(const float* g) { return _mm256_loadu_ps(g); }
__attribute__((target("avx2"))) inline __m256 load8(const std::uint16_t* g) {
  const __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
}

template <class Out>
__attribute__((target("avx2"))) void quant_clamp_avx2(const float* x, Out* y, std::uint8_t* mask, std::int64_t n,
                                                      float in_scale, float mul, float lo, float hi, bool relu,
                                                      float out_scale) {
  const __m256 vin = _mm256_set1_ps(in_scale), vmul = _mm256_set1_ps(mul), vhalf = _mm256_set1_ps(0.5f);
  const __m256 vinv = _mm256_set1_ps(1.0f / mul), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  const __m256 vout = _mm256_set1_ps(out_scale), zero = _mm256_setzero_ps();
  const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vin);
    __m256 pass = all;
    if (relu) {
      pass = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
      v = _mm256_and_ps(v, pass);  // +0 where not positive (NaN included)
    }
    __m256 q = _mm256_mul_ps(_mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(v, vmul), vhalf)), vinv);
    const __m256 below = _mm256_cmp_ps(q, vlo, _CMP_LT_OQ), above = _mm256_cmp_ps(q, vhi, _CMP_GT_OQ);
    q = _mm256_blendv_ps(q, vlo, below);
    q = _mm256_blendv_ps(q, vhi, above);
    store8(_mm256_mul_ps(q, vout), y + i);
    const int bits = _mm256_movemask_ps(_mm256_andnot_ps(_mm256_or_ps(below, above), pass));
    std::memcpy(mask + i, &kByteMask.v[bits], 8);
  }
  quant_clamp_scalar(x + i, y + i, mask + i, n - i, in_scale, mul, lo, hi, relu, out_scale);
}

template <class In, class Out>
__attribute__((target("avx2"))) void masked_scale_avx2(const In* g, const std::uint8_t* mask, Out* out, std::int64_t n,
                                                       float s) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i zero = _mm256_setzero_si256();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i m32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mask + i)));
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(m32, zero));
    store8(_mm256_and_ps(_mm256_mul_ps(load8(g + i), vs), keep), out + i);
  }
  masked_scale_scalar(g + i, mask + i, out + i, n - i, s);
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

// The AVX-512 forms: 16 lanes, compare results in mask registers (no blends, no byte table).
#define POSEKD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
POSEKD_AVX512 inline void store16(__m512 v, float* y) { _mm512_storeu_ps(y, v); }
POSEKD_AVX512 inline void store16(__m512 v, std::uint16_t* y) {  // upper halves (see store)
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y),
                      _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}
POSEKD_AVX512 inline __m512 load16(const float* g) { return _mm512_loadu_ps(g); }
POSEKD_AVX512 inline __m512 load16(const std::uint16_t* g) {
  const __m512i b = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
}

template <class Out>
POSEKD_AVX512 void quant_clamp_avx512(const float* x, Out* y, std::uint8_t* mask, std::int64_t n, float in_scale,
                                      float mul, float lo, float hi, bool relu, float out_scale) {
  const __m512 vin = _mm512_set1_ps(in_scale), vmul = _mm512_set1_ps(mul), vhalf = _mm512_set1_ps(0.5f);
  const __m512 vinv = _mm512_set1_ps(1.0f / mul), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512 vout = _mm512_set1_ps(out_scale), zero = _mm512_setzero_ps();
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vin);
    __mmask16 pass = 0xFFFF;
    if (relu) {
      pass = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
      v = _mm512_maskz_mov_ps(pass, v);  // +0 where not positive (NaN included)
    }
    const __m512 t = _mm512_add_ps(_mm512_mul_ps(v, vmul), vhalf);
    __m512 q = _mm512_mul_ps(_mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), vinv);
    const __mmask16 below = _mm512_cmp_ps_mask(q, vlo, _CMP_LT_OQ), above = _mm512_cmp_ps_mask(q, vhi, _CMP_GT_OQ);
    q = _mm512_mask_mov_ps(q, below, vlo);
    q = _mm512_mask_mov_ps(q, above, vhi);
    store16(_mm512_mul_ps(q, vout), y + i);
    const __mmask16 keep = static_cast<__mmask16>(pass & ~(below | above));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + i), _mm_maskz_set1_epi8(keep, 1));
  }
  quant_clamp_scalar(x + i, y + i, mask + i, n - i, in_scale, mul, lo, hi, relu, out_scale);
}

template <class In, class Out>
POSEKD_AVX512 void masked_scale_avx512(const In* g, const std::uint8_t* mask, Out* out, std::int64_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __mmask16 keep =
        _mm_test_epi8_mask(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mask + i)), _mm_set1_epi8(-1));
    store16(_mm512_maskz_mul_ps(keep, load16(g + i), vs), out + i);
  }
  masked_scale_scalar(g + i, mask + i, out + i, n - i, s);
}
#undef POSEKD_AVX512

bool cpu_has_avx512() {
  static const bool has =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return has;
}
#endif

}  // namespace

namespace kernels {
bool quant_isa_supported(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::scalar:
      return true;
#ifdef POSEKD_QUANT_AVX2
    case QuantIsa::avx2:
      return cpu_has_avx2();
    case QuantIsa::avx512:
      return cpu_has_avx512();
#endif
    default:
      return false;
  }
}

QuantIsa best_quant_isa() {
  static const QuantIsa best = quant_isa_supported(QuantIsa::avx512) ? QuantIsa::avx512
                               : quant_isa_supported(QuantIsa::avx2) ? QuantIsa::avx2
                                                                     : QuantIsa::scalar;
  return best;
}

const char* quant_isa_name(QuantIsa isa) {
  return isa == QuantIsa::avx512 ? "AVX-512" : isa == QuantIsa::avx2 ? "AVX2" : "scalar";
}

namespace {
// The form asked for if the CPU runs it, else the best it runs below that.
QuantIsa usable(QuantIsa isa) {
  if (isa == QuantIsa::avx512 && !quant_isa_supported(isa)) isa = QuantIsa::avx2;
  if (isa == QuantIsa::avx2 && !quant_isa_supported(isa)) isa = QuantIsa::scalar;
  return isa;
}

template <class Out>
void quant_clamp_any(const float* x, Out* y, std::uint8_t* mask, std::int64_t n, float in_scale, float mul, float lo,
                     float hi, bool relu, float out_scale, QuantIsa isa) {
  isa = usable(isa);
  at::parallel_for(0, n, 32768, [&](std::int64_t b, std::int64_t e) {
#ifdef POSEKD_QUANT_AVX2
    if (isa == QuantIsa::avx512)
      return quant_clamp_avx512(x + b, y + b, mask + b, e - b, in_scale, mul, lo, hi, relu, out_scale);
    if (isa == QuantIsa::avx2)
      return quant_clamp_avx2(x + b, y + b, mask + b, e - b, in_scale, mul, lo, hi, relu, out_scale);
#endif
    quant_clamp_scalar(x + b, y + b, mask + b, e - b, in_scale, mul, lo, hi, relu, out_scale);
  });
}

template <class In, class Out>
void masked_scale_any(const In* g, const std::uint8_t* mask, Out* out, std::int64_t n, float s, QuantIsa isa) {
  isa = usable(isa);
  at::parallel_for(0, n, 32768, [&](std::int64_t b, std::int64_t e) {
#ifdef POSEKD_QUANT_AVX2
    if (isa == QuantIsa::avx512) return masked_scale_avx512(g + b, mask + b, out + b, e - b, s);
    if (isa == QuantIsa::avx2) return masked_scale_avx2(g + b, mask + b, out + b, e - b, s);
#endif
    masked_scale_scalar(g + b, mask + b, out + b, e - b, s);
  });
}
}  // namespace

void quant_clamp_kernel(const float* x, float* y, std::uint8_t* mask, std::int64_t n, float in_scale, float mul,
                        float lo, float hi, bool relu, float out_scale, QuantIsa isa) {
  quant_clamp_any(x, y, mask, n, in_scale, mul, lo, hi, relu, out_scale, isa);
}
void quant_clamp_kernel(const float* x, std::uint16_t* y_bf16, std::uint8_t* mask, std::int64_t n, float in_scale,
                        float mul, float lo, float hi, bool relu, float out_scale, QuantIsa isa) {
  quant_clamp_any(x, y_bf16, mask, n, in_scale, mul, lo, hi, relu, out_scale, isa);
}
void masked_scale_kernel(const float* g, const std::uint8_t* mask, float* out, std::int64_t n, float s, QuantIsa isa) {
  masked_scale_any(g, mask, out, n, s, isa);
}
void masked_scale_kernel(const std::uint16_t* g_bf16, const std::uint8_t* mask, float* out, std::int64_t n, float s,
                         QuantIsa isa) {
  masked_scale_any(g_bf16, mask, out, n, s, isa);
}
void masked_scale_kernel(const std::uint16_t* g_bf16, const std::uint8_t* mask, std::uint16_t* out_bf16, std::int64_t n,
                         float s, QuantIsa isa) {
  masked_scale_any(g_bf16, mask, out_bf16, n, s, isa);
}
}  // namespace kernels

namespace {

// Channels-last stays channels-last; anything else is made contiguous.
at::MemoryFormat dense_format(const torch::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

// The fused kernel on an fp32 CPU tensor: element-wise, on the storage in the input's own layout
// (the student's activations are channels-last, model/student.cpp), with y and the mask in the same
// layout. Returns {y, mask}.
std::pair<torch::Tensor, torch::Tensor> quant_clamp_cpu(const torch::Tensor& x, double in_scale, double mul, double lo,
                                                        double hi, bool relu, double out_scale, bool bf16_out) {
  auto xc = x.contiguous(dense_format(x));
  auto y = torch::empty_like(xc, xc.options().dtype(bf16_out ? torch::kBFloat16 : torch::kFloat));
  auto mask = torch::empty_like(xc, xc.options().dtype(torch::kBool));
  auto* mp = reinterpret_cast<std::uint8_t*>(mask.data_ptr<bool>());
  const auto f = [](double v) { return static_cast<float>(v); };
  if (bf16_out)
    kernels::quant_clamp_kernel(xc.data_ptr<float>(), reinterpret_cast<std::uint16_t*>(y.data_ptr()), mp, xc.numel(),
                                f(in_scale), f(mul), f(lo), f(hi), relu, f(out_scale), kernels::best_quant_isa());
  else
    kernels::quant_clamp_kernel(xc.data_ptr<float>(), y.data_ptr<float>(), mp, xc.numel(), f(in_scale), f(mul), f(lo),
                                f(hi), relu, f(out_scale), kernels::best_quant_isa());
  return {y, mask};
}

struct QuantClampFn : public torch::autograd::Function<QuantClampFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double in_scale,
                               int64_t bits, double lo, double hi, bool relu, double out_scale, bool bf16_out) {
    // Custom autograd forwards are not recorded by the profiler on their own: name this one.
    RECORD_FUNCTION("posekd::quantize_clamp", std::vector<c10::IValue>({x}));
    const double mul = std::ldexp(1.0, static_cast<int>(bits) - 1);
    torch::Tensor y, mask;
    if (x.device().is_cpu() && x.scalar_type() == torch::kFloat) {
      std::tie(y, mask) = quant_clamp_cpu(x, in_scale, mul, lo, hi, relu, out_scale, bf16_out);
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
      if (bf16_out) y = y.to(torch::kBFloat16);
    }
    ctx->save_for_backward({mask});
    ctx->saved_data["s"] = in_scale * out_scale;
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto mask = ctx->get_saved_variables()[0];
    const double s = ctx->saved_data["s"].toDouble();
    const auto in_type = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    auto g = grad[0];
    torch::Tensor gx;
    const bool fast = g.device().is_cpu() && in_type == torch::kFloat &&
                      (g.scalar_type() == torch::kFloat || g.scalar_type() == torch::kBFloat16) &&
                      (mask.is_contiguous() || mask.is_contiguous(at::MemoryFormat::ChannelsLast));
    auto gc = fast ? g.contiguous(dense_format(mask)) : g;
    if (fast && gc.strides() == mask.strides()) {
      gx = torch::empty_like(gc, gc.options().dtype(torch::kFloat));
      const auto* mp = reinterpret_cast<const std::uint8_t*>(mask.data_ptr<bool>());
      float* op = gx.data_ptr<float>();
      const float sf = static_cast<float>(s);
      if (gc.scalar_type() == torch::kBFloat16)
        kernels::masked_scale_kernel(reinterpret_cast<const std::uint16_t*>(gc.data_ptr()), mp, op, gc.numel(), sf,
                                     kernels::best_quant_isa());
      else
        kernels::masked_scale_kernel(gc.data_ptr<float>(), mp, op, gc.numel(), sf, kernels::best_quant_isa());
    } else {
      auto zero = torch::zeros({}, g.options());
      gx = s == 1.0 ? torch::where(mask, g, zero) : torch::where(mask, g * s, zero);
    }
    torch::autograd::variable_list out(8);  // x's gradient; none for the 7 scalar arguments
    out[0] = gx;
    return out;
  }
};

}  // namespace

torch::Tensor quantize_clamp_ste(const torch::Tensor& x, double in_scale, int bits, double lo, double hi, bool relu,
                                 double out_scale, bool bf16_out) {
  if (bf16_out && bits > 8)
    throw Error("quantize_clamp_ste: a bf16 result is exact only for at most 8 bits, not " + std::to_string(bits));
  return QuantClampFn::apply(x, in_scale, static_cast<int64_t>(bits), lo, hi, relu, out_scale, bf16_out);
}

namespace {
// quantize_clamp_ste's bf16 form as conv2d_bf16's epilogue: the mask kept from the forward, and a
// bf16 gradient (g * s with s a power of two: exact) handed to the convolution's backward.
class QuantClampEpilogue : public ConvEpilogue {
 public:
  QuantClampEpilogue(double in_scale, double mul, double lo, double hi, bool relu, double out_scale)
      : in_scale_(in_scale), mul_(mul), lo_(lo), hi_(hi), out_scale_(out_scale), relu_(relu) {}
  torch::Tensor forward(const torch::Tensor& y) override {
    torch::Tensor out;
    std::tie(out, mask_) = quant_clamp_cpu(y, in_scale_, mul_, lo_, hi_, relu_, out_scale_, true);
    return out;
  }
  torch::Tensor backward(const torch::Tensor& grad) override {
    // mask_ is dense in its format (quant_clamp_cpu made it so): the same element order as g's
    auto g = grad.to(torch::kBFloat16).contiguous(dense_format(mask_));
    auto out = torch::empty_like(g);
    kernels::masked_scale_kernel(reinterpret_cast<const std::uint16_t*>(g.data_ptr()),
                                 reinterpret_cast<const std::uint8_t*>(mask_.data_ptr<bool>()),
                                 reinterpret_cast<std::uint16_t*>(out.data_ptr()), g.numel(),
                                 static_cast<float>(in_scale_ * out_scale_), kernels::best_quant_isa());
    return out;
  }

 private:
  double in_scale_, mul_, lo_, hi_, out_scale_;
  bool relu_;
  torch::Tensor mask_;
};
}  // namespace

torch::Tensor conv2d_quantize_clamp_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                         int64_t stride, int64_t padding, double in_scale, int bits, double lo,
                                         double hi, bool relu, double out_scale) {
  if (bits > 8)
    throw Error("conv2d_quantize_clamp_bf16: a bf16 result is exact only for at most 8 bits, not " +
                std::to_string(bits));
  c10::intrusive_ptr<ConvEpilogue> epi =
      c10::make_intrusive<QuantClampEpilogue>(in_scale, std::ldexp(1.0, bits - 1), lo, hi, relu, out_scale);
  return conv2d_bf16(x, w, b, {stride, stride}, {padding, padding}, {1, 1}, 1, std::move(epi));
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

torch::Tensor torch_quantile(const torch::Tensor& x, double q) { return torch::quantile(x.detach().flatten(), q); }

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

namespace {
// max |x| as torch's abs().max() gives it (NaN if any element is NaN), without the two temporary
// tensors: the QAT forward asks it of every layer's weights and bias at every step.
float max_abs(const torch::Tensor& t) {
  if (!(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() && t.numel() > 0))
    return t.detach().abs().max().item<float>();
  const float* p = t.data_ptr<float>();
  float m = 0.0f;
  bool nan = false;
  for (int64_t i = 0, n = t.numel(); i < n; ++i) {
    const float a = std::fabs(p[i]);
    nan = nan || a != a;
    m = a > m ? a : m;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}
}  // namespace

int output_shift_from_params(const torch::Tensor& w, const torch::Tensor& b, double shift_quantile) {
  torch::NoGradGuard ng;
  float limit;
  if (shift_quantile >= 1.0) {
    float m = max_abs(w);
    if (b.defined()) m = std::max(m, max_abs(b));
    limit = m;
  } else {
    limit = ersatz_quantile(flat_params(w, b).abs(), shift_quantile).item<float>();
  }
  return output_shift_from_limit(limit);
}

FoldedConv fold_bn(const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& gamma,
                   const torch::Tensor& beta, const torch::Tensor& running_mean, const torch::Tensor& running_var,
                   double eps) {
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
  auto y = xb.reshape({n, c, h / f, f, w / f, f}).permute({0, 3, 5, 1, 2, 4}).reshape({n, f * f * c, h / f, w / f});
  return batched ? y : y.squeeze(0);
}

}  // namespace posekd::ai8x
