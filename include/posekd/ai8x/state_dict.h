// Ordered state dicts (Python `state_dict()` order) and reading torch.save'd dicts of tensors.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "posekd/io/torch_file.h"

namespace posekd::ai8x {

// name -> tensor in module registration order (own parameters, own buffers, then children).
// The same type as io::StateDict, so io::load_torch_file / save_torch_file results fit directly.
using StateDict = io::StateDict;

// The state of a module exactly as Python's state_dict() orders it (tensors are not copied).
StateDict state_dict(const torch::nn::Module& module);

// Copies `sd` into the module's parameters/buffers (copy_ casts dtypes, as PyTorch does).
// strict: every key must match both ways. Errors (posekd::Error) name `what` and the key.
void load_state_dict(torch::nn::Module& module, const StateDict& sd, bool strict = true,
                     const std::string& what = "state dict");

// Looks up a key; throws posekd::Error naming `what` if absent. Returns nullptr-free reference.
const torch::Tensor& find(const StateDict& sd, const std::string& key, const std::string& what);
const torch::Tensor* find_or_null(const StateDict& sd, const std::string& key);

// A file written by Python torch.save holding a (nested) plain dict of tensors, e.g. the ai8x
// fixtures. Throws posekd::Error naming the file if it cannot be read.
c10::impl::GenericDict read_tensor_dict(const std::string& path);
// Nested access by "a/b/c"; throws posekd::Error naming the path if missing or of the wrong kind.
torch::Tensor dict_tensor(const c10::impl::GenericDict& d, const std::string& key);
c10::impl::GenericDict dict_dict(const c10::impl::GenericDict& d, const std::string& key);
// A dict of tensors -> StateDict in its stored (insertion) order (LibTorch GenericDict form;
// io::to_state_dict does the same for io::Value).
StateDict to_state_dict(const c10::impl::GenericDict& d);

}  // namespace posekd::ai8x
