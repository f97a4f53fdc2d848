// Export of a QAT posekd student for Analog Devices' ai8x-synthesis (ai8x.md 4.1-4.4, 5.3):
//   <name>-qat.pth.tar  {'arch', 'epoch', 'state_dict' (ai8x keys, BN folded), 'extras': {}}
//   <name>-q8.pth.tar   the same after quantize.py (ai8x::quantize_state_dict),
//                       extras['clipping_method'] = 'MAX_BIT_SHIFT'
//   <name>.yaml         the ai8xize network description, one YAML layer per checkpoint weight
//   sample_<name>.npy   int64 C x H x W input in [-128,127] (folded for folding archs)
//   sample_<name>_heat.npy / _paf.npy  int64 [C,16,16]: the raw 32-bit head accumulators (Q17.14,
//                       before final_scale) of the bit-exact integer inference for that sample
//   README.md           the ai8xize / quantize.py commands
//   firmware/           the C pose decoder, input preparation and firmware example (pose_c.h;
//                       for the folding 16x16-map students)
// Float (non-QAT) students are refused: the ai8x flow quantizes a QAT-trained model; exporting a
// float model (batchnormfuser + quantize.py) would run it with activation clamping and 8-bit
// rounding it never trained with.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "posekd/ai8x/state_dict.h"
#include "posekd/export/fit.h"
#include "posekd/io/value.h"
#include "posekd/model/student.h"

namespace posekd::deploy {

// One layer of the ai8xize network YAML (ai8x.md 4.4).
struct YamlLayer {
  std::string name;
  std::uint64_t processors = 0;
  std::string data_format;  // first layer only ("HWC" / "CHW"), else ""
  std::int64_t max_pool = 0, pool_stride = 0;
  std::int64_t kernel_size = 3, pad = 1, stride = 1;
  std::string activate = "None";  // "ReLU" / "None"
  std::uint32_t out_offset = 0;
  bool wide = false;                      // output_width: 32, output: true
  std::uint64_t output_processors = 0;    // set on the wide output layers (Cout bits)
  std::vector<std::string> in_sequences;  // the second head's first layer reads the trunk output
  std::int64_t in_offset = -1;            // explicit in_offset (-1: default = previous out_offset)
};

// Processor mask of a layer's input: HWC: the first input_processors(cin) processors;
// CHW (first layer, <= 4 channels): one processor per memory instance (3 channels: 0x111).
std::uint64_t processor_mask(std::int64_t cin, bool chw);
// Cout bits (19 -> 0x7ffff); cout <= 64.
std::uint64_t output_processor_mask(std::int64_t cout);

// The YAML layers in registration order (= checkpoint weight order): trunk ping-pong 0x4000 /
// 0x0000 starting at 0x4000; the head layers get 4 KiB-aligned slots in the half the trunk output
// does not use; head B's first layer has in_sequences [last trunk layer] and in_offset. Throws
// posekd::Error for layers the exporter cannot express (pooling-only layers) or data-memory clashes.
std::vector<YamlLayer> yaml_layers(const model::Student& s, const FitReport& fit);
// The YAML text (arch, dataset, layers), block style, hex masks / offsets unquoted as in ai8x.md 5.3.
std::string network_yaml(const std::string& arch, const std::string& dataset, const std::vector<YamlLayer>& layers);

// Throws posekd::Error naming `what` unless every layer is in QAT mode with BN folded.
void require_qat(model::Student& s, const std::string& what);

// {'arch': arch, 'epoch': epoch, 'state_dict': sd, 'extras': extras} as plain dicts.
io::Value ai8x_checkpoint(const std::string& arch, std::int64_t epoch, const ai8x::StateDict& sd,
                          const io::Value& extras);

// A deterministic synthetic input image: int64 [3,128,128] in [-128,127] (a smooth pattern).
torch::Tensor synthetic_image_int();
// A real image prepared as for training (longest side 128, padded with 128, BGR) as int64
// [3,128,128] = pixel - 128. Throws posekd::Error naming the file if it cannot be read.
torch::Tensor image_int(const std::string& path);
// The network input for one sample: folded to [12,64,64] if the student folds, else unchanged.
torch::Tensor student_sample(const model::Student& s, const torch::Tensor& image_int);

// Raw integer head outputs (int64 [C,H,W]: the 32-bit accumulators of the wide heads, or int8
// values of a non-wide head) for one int64 [C,H,W] input.
struct HeadOutputs {
  torch::Tensor heat, paf;
};
HeadOutputs integer_heads(const model::IntegerStudent& is, const torch::Tensor& sample);

struct ExportOptions {
  std::string name;  // file stem and checkpoint/YAML arch ("" = the student's arch)
  std::string dataset = "coco_pose";
  std::int64_t epoch = 0;
  bool force = false;        // export even if the fit check fails
  std::string sample_image;  // "" = synthetic sample
  std::string source;        // the checkpoint path (for messages and README)
};

struct ExportResult {
  FitReport fit;
  std::string qat_path, q8_path, yaml_path, sample_path, heat_path, paf_path, readme_path;
  std::string firmware_dir;  // firmware/: the C decoder, input preparation and main.c (pose_c.h)
  std::vector<YamlLayer> layers;
};

// Runs the fit check (refuses with every violated rule unless opts.force), requires QAT, writes
// all files into out_dir (created). Errors are posekd::Error with one line naming the problem.
ExportResult export_ai8x(model::Student& s, const DeviceLimits& device, const std::string& out_dir,
                         const ExportOptions& opts);

}  // namespace posekd::deploy
