// libFuzzer target: the image loader (prepare_sample on a file: OpenCV decode of any format,
// header size check, resize, targets) and image_header_size on the raw bytes. prepare_sample must
// never throw and never crash: a bad image gives ok = false with the path in `error`.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_common.h"
#include "posekd/data/coco.h"
#include "posekd/data/sample.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = posekd::fuzz::temp_path("image", ".img");
  posekd::fuzz::write_file(path, data, size);
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  int w = 0, h = 0;
  (void)posekd::data::image_header_size(bytes, w, h);

  posekd::data::CocoImage im;
  im.id = 1;
  im.file_name = path.substr(path.rfind('/') + 1);
  im.width = 640;
  im.height = 480;
  posekd::data::CocoPerson p;
  p.num_keypoints = 1;
  p.keypoints[0] = 10;
  p.keypoints[1] = 12;
  p.keypoints[2] = 2;
  p.bbox = {1, 1, 30, 40};
  im.persons.push_back(p);
  posekd::data::SampleConfig cfg;
  cfg.max_side = 4096;  // keep single inputs cheap; larger headers must be rejected, not decoded
  auto s = posekd::data::prepare_sample(im, path.substr(0, path.rfind('/')), cfg);
  if (s.ok) {
    if (s.image.sizes() != torch::IntArrayRef({3, cfg.input_size, cfg.input_size})) std::abort();
  } else if (s.error.find(im.file_name) == std::string::npos) {
    std::abort();  // the error must name the file
  }
  return 0;
}
