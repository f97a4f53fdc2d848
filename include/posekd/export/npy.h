// NumPy .npy files (format version 1.0), written and read without numpy: the sample input and
// expected outputs ai8xize's --sample-input and known-answer tests use (int64 C x H x W).
#pragma once
#include <torch/torch.h>

#include <string>

namespace posekd::deploy {

// Writes `t` (any shape, C order) as NPY v1.0. Supported dtypes: int64 ('<i8'), int32, int16,
// int8, uint8, bool, float32, float64. The header is padded so the data starts at a multiple of
// 64 bytes. Throws posekd::Error naming `path` on an unsupported dtype or a write failure.
void save_npy(const std::string& path, const torch::Tensor& t);

// Reads an NPY v1.0/2.0 file of one of the dtypes above (little endian, C order) into a CPU
// tensor of that dtype. Any problem -> posekd::Error naming `path`.
torch::Tensor load_npy(const std::string& path);

// The NPY header dict text, e.g. "{'descr': '<i8', 'fortran_order': False, 'shape': (12, 64, 64), }".
std::string npy_header_dict(const torch::Tensor& t);

}  // namespace posekd::deploy
