// libFuzzer target: torch.save files (zip and legacy) and plain pickles, via load_any_file, plus
// the in-memory unpickler and the checkpoint interpretation of whatever loads. Any input must give
// a value or a posekd::Error, never a crash, a hang or an unbounded allocation.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "posekd/core/error.h"
#include "posekd/io/pickle.h"
#include "posekd/io/torch_file.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = posekd::fuzz::temp_path("torch", ".pth");
  posekd::fuzz::write_file(path, data, size);
  try {
    posekd::io::Value v = posekd::io::load_any_file(path);
    (void)v.describe();
    if (v.is_dict()) {
      try {
        (void)posekd::io::to_state_dict(v);
      } catch (const posekd::Error&) {
      }
    }
  } catch (const posekd::Error&) {
  }
  // The pickle machine directly, with a persistent_load that hands back a small storage.
  try {
    posekd::io::PickleSource src;
    src.data = data;
    src.size = size;
    src.path = "<fuzz>";
    (void)posekd::io::unpickle(
        src, [](const posekd::io::Value&, size_t) { return posekd::io::Value::tensor(torch::zeros({4})); });
  } catch (const posekd::Error&) {
  }
  return 0;
}
