// libFuzzer target: COCO annotation JSON (load_coco's streaming SAX parser, value checks, RLE
// decoding). Any input must give either a dataset or a posekd::Error, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = posekd::fuzz::temp_path("coco", ".json");
  posekd::fuzz::write_file(path, data, size);
  posekd::data::CocoLoadOptions opt;
  opt.use_cache = false;
  try {
    auto ds = posekd::data::load_coco(path, "/nonexistent-images", opt);
    for (const auto& im : ds.images) (void)posekd::data::has_keypoint_person(im);
  } catch (const posekd::Error&) {
  }
  // The compressed-RLE decoder on its own (a crowd's `counts` string).
  try {
    (void)posekd::data::decode_rle_string(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const posekd::Error&) {
  }
  return 0;
}
