// A 2-D convolution with bf16 operands and an fp32 result, differentiable.
//
// Forward: oneDNN (the library LibTorch itself links) with bf16 source and weights in channels-last
// layout, fp32 accumulation, fp32 bias and an fp32 destination. LibTorch's own bf16 conv2d rounds
// the accumulator to bf16 (8 significant bits); this one keeps the fp32 sum. So when the inputs
// and weights are exactly representable in bf16 (the ai8x QAT phase: 8-bit weight grid, 8-bit
// activations after clamp and round) the result equals the fp32 conv2d bit for bit, as long as
// the fp32 sums are exact (|partial sums| < 2^24 ulps of the product grid).
// Backward: oneDNN as well, bf16 output gradient (and the saved bf16 input and weights) with fp32
// accumulators, fp32 weight and bias gradients and an input gradient in x's dtype (see Speed below).
// (PyTorch's CPU autocast rounds the input gradient of a bf16 conv to bf16; this one does not.)
//
// Speed: oneDNN 2.6.3's first choice of backward kernels is slow on some of the students' shapes,
// so the first backward of each geometry times a few oneDNN implementations, and for the weight
// gradient also one bf16 matmul over the im2col of the input, and keeps the fastest (the matmul
// rounds the weight gradient to bf16 once). With deterministic algorithms on
// (at::globalContext().deterministicAlgorithms()) nothing is timed: oneDNN's first choice, the same
// in every run. POSEKD_BF16_WGRAD=matmul|onednn forces the weight-gradient form.
//
// The output (and the input gradient) has the memory format of `x` (NCHW in, NCHW out;
// channels-last in, channels-last out). x, w, b are fp32 (or bf16 for x / w); b may be undefined.
// The input gradient has x's dtype. `bf16_out`: the result rounded once to bf16 (LibTorch's bf16
// conv2d, PyTorch autocast), for layers whose result only feeds BatchNorm and the next convolution
// (that rounds its input to bf16 anyway): half the memory traffic of the element-wise steps between.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace posekd {

torch::Tensor conv2d_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                          std::vector<int64_t> stride = {1, 1}, std::vector<int64_t> padding = {0, 0},
                          std::vector<int64_t> dilation = {1, 1}, int64_t groups = 1, bool bf16_out = false);

// An element-wise step fused behind conv2d_bf16 in one autograd node (ai8x's quantize-and-clamp in
// the QAT phase, ai8x/quantizers.h). `forward` receives the fp32 result (channels-last) and returns
// the op's result, keeping what its backward needs; `backward` receives that result's gradient and
// returns the gradient of the fp32 result, best in bf16 channels-last: that is what the convolution's
// backward reads, so no fp32 gradient is written and cast between the two (a gradient returned in
// fp32 is rounded to bf16 first, as conv2d_bf16's own backward does).
struct ConvEpilogue : torch::CustomClassHolder {
  virtual torch::Tensor forward(const torch::Tensor& y) = 0;
  virtual torch::Tensor backward(const torch::Tensor& grad) = 0;
};
torch::Tensor conv2d_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                          std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                          int64_t groups, c10::intrusive_ptr<ConvEpilogue> epilogue);

// Inference only (no autograd): bf16 channels-last input, bf16 weights (OIHW contiguous), fp32 bias
// (may be undefined), the activation fused into the convolution (computed on the fp32 accumulator)
// and a bf16 channels-last result. What the teacher runs in bf16.
enum class FusedAct { none, relu, elu };
torch::Tensor conv2d_bf16_inference(const torch::Tensor& x_bf16, const torch::Tensor& w_bf16,
                                    const torch::Tensor& b_f32, std::vector<int64_t> stride,
                                    std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups,
                                    FusedAct act);

// True when oneDNN's bf16 convolution can run on this CPU (AVX-512 BW/VL/DQ at least).
bool conv2d_bf16_supported();

}  // namespace posekd
