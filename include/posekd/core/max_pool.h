// Non-overlapping max pooling (kernel = stride, no padding, floor mode) on channels-last data,
// differentiable: what ai8x's MaxPool2d layers of the students do (2x2, stride 2).
//
// LibTorch's max_pool2d keeps an int64 index per output element and zero-fills the input gradient
// before scattering into it; here the index is one byte (the position in the window, kernel <= 16)
// and the backward writes every input gradient element once (the gradient or 0), which suits
// non-overlapping windows. Same values and gradients as LibTorch's: the first maximum in scan order
// takes the gradient; a NaN is taken as the maximum (the last NaN of a window), as LibTorch does.
//
// x: 4-D bf16 or fp32 (made channels-last if it is not). Result: x's dtype, channels-last. The
// input gradient comes back in x's dtype and layout. posekd::Error on bad input.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace posekd {

torch::Tensor max_pool2d_nonoverlapping(const torch::Tensor& x, int64_t kernel);

}  // namespace posekd
