// Element-wise ai8x QATv2 primitives (ai8x.md 2.1, 2.3, 2.6) as small pure functions.
// All "STE" functions have an identity backward (straight-through); clamps mask the gradient.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace posekd::ai8x {

// ---- quantizer Q_n ----------------------------------------------------------------------------
// Float-domain Q_n: floor(x * 2^(n-1) + 0.5) / 2^(n-1), no gradient (plain values).
torch::Tensor quantize_value(const torch::Tensor& x, int bits);
// Simulate-domain Q_n: n>1: floor(x / 2^(n-1) + 0.5); n<1: floor(x * 2^(1-n) + 0.5); n==1: floor(x+0.5).
torch::Tensor quantize_simulate_value(const torch::Tensor& x, int bits);
// Straight-through versions: x + (q(x) - x).detach() (value exactly q(x), gradient identity).
torch::Tensor quantize_ste(const torch::Tensor& x, int bits);
torch::Tensor quantize_simulate_ste(const torch::Tensor& x, int bits);
// floor with STE (Scaler in simulate mode).
torch::Tensor floor_ste(const torch::Tensor& x);

// ---- clamp ------------------------------------------------------------------------------------
// An ordinary clamp (gradient masked outside [lo, hi], inclusive bounds pass).
torch::Tensor clamp(const torch::Tensor& x, double lo, double hi);
// Upper clamp bound of an n-bit parameter: 1 - 2^(1-n) (127/128 for 8 bit).
double param_clamp_hi(int bits);
// Wide (32-bit output) clamp bound in float units: 2^15 (= 2^29 accumulator units).
constexpr double kWideClamp = 32768.0;
// Wide QAT quantizer width: Q_15 (resolution 2^-14).
constexpr int kWideBits = 15;
// Non-wide activation clamp: [-1, 127/128].
constexpr double kActLo = -1.0;
constexpr double kActHi = 127.0 / 128.0;

// ---- fused quantize+clamp with a straight-through gradient ----------------------------------
// y = clamp(Q_bits(act(x * in_scale)), lo, hi) * out_scale   (act = ReLU if relu, else identity)
// Backward: grad * in_scale * out_scale * 1[x*in_scale > 0 if relu] * 1[lo <= Q(..) <= hi].
// This is the QAT forward of ai8x (Scaler, activation, quantize, clamp, final scale) in one pass,
// and with relu=false, out_scale=1 it is clamp_weight(quantize_weight(W * 2^-os)).
// in_scale and out_scale must be powers of two (they are in ai8x), so every step is exact.
// `bf16_out` (bits <= 8): the result as bf16, which holds every value of the 8-bit grid exactly
// (what the next bf16 convolution reads, without a cast); its gradient may then come back in bf16.
torch::Tensor quantize_clamp_ste(const torch::Tensor& x, double in_scale, int bits, double lo, double hi, bool relu,
                                 double out_scale, bool bf16_out = false);

// The QAT layer under bf16 (non-wide, clamped): conv2d_bf16 (bf16 operands, exact fp32 result)
// followed by quantize_clamp_ste(..., bf16_out = true) in one autograd node. Values and gradients
// equal the two ops apart bit for bit; the gradient between them stays in bf16 (what the
// convolution's backward reads) instead of being written in fp32 and cast. bits <= 8.
torch::Tensor conv2d_quantize_clamp_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                         int64_t stride, int64_t padding, double in_scale, int bits, double lo,
                                         double hi, bool relu, double out_scale);

namespace kernels {
// The raw kernels behind quantize_clamp_ste, over contiguous float32 data (mask: 0/1 bytes), split
// over the intra-op threads. Three forms give identical bits: AVX-512 (F/BW/VL), AVX2 and a portable
// loop. `isa` picks one; a form the CPU cannot run falls back to the best one below it. Exposed for
// the tests and the benchmark.
enum class QuantIsa { scalar, avx2, avx512 };
bool quant_isa_supported(QuantIsa isa);  // this build has the form and this CPU runs it
QuantIsa best_quant_isa();               // what quantize_clamp_ste uses
const char* quant_isa_name(QuantIsa isa);
void quant_clamp_kernel(const float* x, float* y, std::uint8_t* mask, std::int64_t n, float in_scale, float mul,
                        float lo, float hi, bool relu, float out_scale, QuantIsa isa);
// The same writing bf16 (the upper 16 bits of each float result: exact for results on the grid).
void quant_clamp_kernel(const float* x, std::uint16_t* y_bf16, std::uint8_t* mask, std::int64_t n, float in_scale,
                        float mul, float lo, float hi, bool relu, float out_scale, QuantIsa isa);
// out = mask ? g * s : 0 (g in fp32, or bf16 bits)
void masked_scale_kernel(const float* g, const std::uint8_t* mask, float* out, std::int64_t n, float s, QuantIsa isa);
void masked_scale_kernel(const std::uint16_t* g_bf16, const std::uint8_t* mask, float* out, std::int64_t n, float s,
                         QuantIsa isa);
// bf16 in, bf16 out (the upper 16 bits of g * s: exact when s is a power of two, as in ai8x)
void masked_scale_kernel(const std::uint16_t* g_bf16, const std::uint8_t* mask, std::uint16_t* out_bf16, std::int64_t n,
                         float s, QuantIsa isa);
}  // namespace kernels

// ---- quantiles and the output shift -------------------------------------------------------
// ai8x's "ersatz" quantile (T2 ai8x.py, written for torch.compile): differs from torch.quantile
// for q < 1; q == 1 gives the max. x is flattened. Returns a 0-dim float tensor.
torch::Tensor ersatz_quantile(const torch::Tensor& x, double q);
// torch.quantile semantics (linear interpolation at q*(N-1)), as quantize.py uses.
torch::Tensor torch_quantile(const torch::Tensor& x, double q);
// The flattened parameter vector p = [W, b] (b may be undefined), detached.
torch::Tensor flat_params(const torch::Tensor& w, const torch::Tensor& b);
// OutputShiftLimit: os = clamp(-floor(log2(1/L)), -15, 15) = clamp(ceil(log2 L), -15, 15),
// computed in float32 exactly as ai8x does. L = quantile(|p|, q) (ersatz form, as in training).
int output_shift_from_params(const torch::Tensor& w, const torch::Tensor& b, double shift_quantile);
// Same from a given L (float32 arithmetic).
int output_shift_from_limit(float limit);

// ---- BN folding (ai8x fuse_bn_layers, QATv2, unscaled) ------------------------------------
struct FoldedConv {
  torch::Tensor weight, bias;
};
// s_c = gamma_c / sqrt(var_c + eps); W' = W * s_c; b' = (b - mean) * s_c + beta.
// gamma / beta may be undefined (NoAffine: 1 / 0); b may be undefined (treated as 0).
FoldedConv fold_bn(const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& gamma,
                   const torch::Tensor& beta, const torch::Tensor& running_mean, const torch::Tensor& running_var,
                   double eps);

// ---- data folding (ai8x.fold) -------------------------------------------------------------
// [N,C,H,W] -> [N, f*f*C, H/f, W/f]; channel (i*f+j)*C + c holds x[c, i::f, j::f]. Also [C,H,W].
torch::Tensor fold(const torch::Tensor& x, int64_t factor = 2);

}  // namespace posekd::ai8x
