// A group of processes that reduce tensors together, as seen by the modules below `train` (the
// ai8x layers' SyncBN and the activation calibration). train::Distributed implements it over Gloo;
// nothing here knows how the ranks talk.
//
// Every rank must make the same calls in the same order with tensors of the same shapes and dtypes.
#pragma once
#include <torch/types.h>

#include <vector>

namespace posekd {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;  // 0 .. world_size() - 1
  virtual int world_size() const = 0;
  // In place, element-wise over the ranks (floating or signed-integer tensors; one exchange per call).
  virtual void allreduce_sum(std::vector<torch::Tensor>& tensors) = 0;
  virtual void allreduce_max(std::vector<torch::Tensor>& tensors) = 0;
};

}  // namespace posekd
