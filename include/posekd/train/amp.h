// Mixed-precision training of the student (bf16), the way PyTorch's CPU autocast does it, but
// narrower: only the convolutions run in bf16.
//
//   train::AmpGuard amp(precision);   // around the student's forward (and the loss)
//
// With Precision::bf16, every ai8x::Layer convolution in this thread runs with bf16 operands and an
// fp32 accumulator (core/bf16_conv.h); the backward runs bf16 convolutions too. The activations
// pass from layer to layer in bf16, as under PyTorch's autocast: in the float phase a BatchNorm
// layer's conv result is rounded to bf16 and BatchNorm runs on it with fp32 parameters, running
// statistics and accumulators; in the QAT phase each 8-bit activation is handed on in bf16, which
// holds it exactly. Their gradients come back in bf16. The wide output heads, master weights,
// Adam state (fused_adam_step is unchanged), weight gradients, the quantizers' arithmetic, the
// loss and every reduction stay fp32. In the QAT phase weights and activations lie on 8-bit grids,
// exact in bf16, and the fp32 accumulator keeps the forward bit-identical to the fp32 one. With
// Precision::fp32 the guard does nothing. Integer inference (simulate mode) never runs in bf16.
//
// The guard is thread-local and restores the previous precision on exit. The backward does not
// need it (the recorded graph already holds the bf16 convolutions).
#pragma once
#include "posekd/core/precision.h"

namespace posekd::train {

class AmpGuard {
 public:
  explicit AmpGuard(Precision p) : scope_(p) {}
  AmpGuard(const AmpGuard&) = delete;
  AmpGuard& operator=(const AmpGuard&) = delete;

 private:
  PrecisionScope scope_;
};

}  // namespace posekd::train

namespace posekd::train {

// LibTorch's CPU autocast (the AutocastCPU dispatch key, bf16), for modules built from LibTorch's
// own layers: the teacher's training step. While it lives, conv2d/linear/matmul in this thread
// take bf16 operands and return bf16; BatchNorm keeps fp32 parameters and running statistics
// (mixed-type kernel), other operations follow their inputs, and fp32 targets promote the loss to
// fp32. Compute the loss outside the guard or from .to(torch::kFloat) outputs. With
// Precision::fp32 it does nothing. Do not use it around the ai8x student (AmpGuard is exact there).
class AutocastGuard {
 public:
  explicit AutocastGuard(Precision p);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool on_ = false;
  bool prev_enabled_ = false;
  int prev_dtype_ = 0;  // at::ScalarType
};

}  // namespace posekd::train
