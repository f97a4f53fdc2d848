#include "posekd/export/ai8x_export.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "posekd/ai8x/integer.h"
#include "posekd/ai8x/quantizers.h"
#include "posekd/ai8x/simulate.h"
#include "posekd/core/error.h"
#include "posekd/data/coco.h"
#include "posekd/data/sample.h"
#include "posekd/export/latency.h"
#include "posekd/export/npy.h"
#include "posekd/export/pose_c.h"
#include "posekd/io/torch_file.h"

namespace posekd::deploy {
namespace fs = std::filesystem;

namespace {

constexpr std::uint32_t kSlot = 0x1000;  // head-layer output slots
constexpr std::uint32_t kHalf = 0x4000;  // ping-pong half of a 32 KiB data-memory instance

std::uint32_t round_slot(std::int64_t bytes) {
  return static_cast<std::uint32_t>(((bytes + kSlot - 1) / kSlot) * kSlot);
}

std::string shape_str(c10::IntArrayRef s) {
  std::string o = "[";
  for (std::size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

std::string hex64(std::uint64_t v) { return fmt::format("0x{:016x}", v); }
std::string hex16(std::uint32_t v) { return fmt::format("0x{:04x}", v); }

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  if (!f) fail_file(path, "cannot open for writing");
  f << text;
  f.close();
  if (!f) fail_file(path, "write failed");
}

}  // namespace

std::uint64_t processor_mask(std::int64_t cin, bool chw) {
  if (cin <= 0) throw Error("processor_mask: no input channels");
  if (chw) {
    if (cin > 16) throw Error(fmt::format("processor_mask: {} CHW channels (at most 16)", cin));
    std::uint64_t m = 0;
    for (std::int64_t c = 0; c < cin; ++c) m |= std::uint64_t{1} << (4 * c);
    return m;
  }
  const std::int64_t p = input_processors(cin);
  return p >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << p) - 1;
}

std::uint64_t output_processor_mask(std::int64_t cout) {
  if (cout <= 0 || cout > 64) throw Error(fmt::format("output_processor_mask: {} channels (1..64)", cout));
  return cout == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << cout) - 1;
}

std::vector<YamlLayer> yaml_layers(const model::Student& s, const FitReport& fit) {
  const auto& trunk = s.trunk_defs();
  const auto& ha = s.head_a_defs();
  const auto& hb = s.head_b_defs();
  const std::size_t n = trunk.size() + ha.size() + hb.size();
  if (fit.layers.size() != n)
    throw Error(fmt::format("export: fit report has {} layers, student {} has {}", fit.layers.size(), s.arch(), n));
  std::vector<const model::StudentLayerDef*> defs;
  for (const auto* part : {&trunk, &ha, &hb})
    for (const auto& d : *part) defs.push_back(&d);

  std::vector<YamlLayer> out;
  auto make = [&](std::size_t i) {
    const auto& d = *defs[i];
    const auto& f = fit.layers[i];
    if (!d.spec.has_op())
      throw Error("export: layer " + d.name + " is pooling only; the exporter handles conv layers only");
    YamlLayer y;
    y.name = d.name;
    y.processors = processor_mask(d.spec.in_channels, i == 0 && f.data_format == "CHW");
    if (i == 0) y.data_format = f.data_format;
    y.max_pool = d.spec.pool_size;
    y.pool_stride = d.spec.pool_size > 0 ? d.spec.pool_stride : 0;
    y.kernel_size = d.spec.kernel_size;
    y.pad = d.spec.padding;
    y.stride = d.spec.stride;
    y.activate = d.spec.relu ? "ReLU" : "None";
    y.wide = d.spec.wide;
    if (y.wide) y.output_processors = output_processor_mask(d.spec.out_channels);
    return y;
  };
  // trunk: ping-pong, first output at 0x4000 (the input sits at 0x0000)
  for (std::size_t i = 0; i < trunk.size(); ++i) {
    auto y = make(i);
    y.out_offset = (i % 2 == 0) ? kHalf : 0;
    out.push_back(y);
  }
  const std::uint32_t trunk_off = out.back().out_offset;
  const std::int64_t trunk_bytes = fit.layers[trunk.size() - 1].data_out_bytes;
  // heads: consecutive 4 KiB-aligned slots in the other half of the instance
  std::uint32_t cursor = trunk_off == 0 ? static_cast<std::uint32_t>(round_slot(trunk_bytes)) : 0;
  if (trunk_off == 0 && cursor < kHalf) cursor = kHalf;
  std::size_t i = trunk.size();
  for (const auto* head : {&ha, &hb}) {
    for (std::size_t k = 0; k < head->size(); ++k, ++i) {
      auto y = make(i);
      y.out_offset = cursor;
      const std::int64_t bytes = fit.layers[i].data_out_bytes;
      const std::int64_t end = static_cast<std::int64_t>(cursor) + bytes;
      const bool clash = static_cast<std::int64_t>(cursor) < trunk_off + trunk_bytes && end > trunk_off;
      if (clash || end > fit.device.data_instance_bytes)
        throw Error(
            fmt::format("export: no room in data memory for {}'s output ({} bytes at {}; trunk output "
                        "{} bytes at {})",
                        y.name, bytes, hex16(cursor), trunk_bytes, hex16(trunk_off)));
      cursor += round_slot(bytes);
      if (head == &hb && k == 0) {
        y.in_sequences = {trunk.back().name};
        y.in_offset = trunk_off;
      }
      out.push_back(y);
    }
  }
  return out;
}

std::string network_yaml(const std::string& arch, const std::string& dataset, const std::vector<YamlLayer>& layers) {
  std::ostringstream o;
  o << "# ai8xize network description written by posekd export (ai8x.md 4.4).\n"
    << "# Layer order = the checkpoint's weight order.\n"
    << "arch: " << arch << "\n"
    << "dataset: " << dataset << "\n\n"
    << "layers:\n";
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& y = layers[i];
    o << "  # layer " << i << ": " << y.name << "\n";
    o << "  - name: " << y.name << "\n";
    if (!y.in_sequences.empty()) {
      o << "    in_sequences: [";
      for (std::size_t k = 0; k < y.in_sequences.size(); ++k) o << (k ? ", " : "") << y.in_sequences[k];
      o << "]\n";
    }
    if (y.in_offset >= 0) o << "    in_offset: " << hex16(static_cast<std::uint32_t>(y.in_offset)) << "\n";
    o << "    processors: " << hex64(y.processors) << "\n";
    if (!y.data_format.empty()) o << "    data_format: " << y.data_format << "\n";
    if (y.max_pool > 0) o << "    max_pool: " << y.max_pool << "\n    pool_stride: " << y.pool_stride << "\n";
    o << "    operation: Conv2d\n";
    o << "    kernel_size: " << y.kernel_size << "x" << y.kernel_size << "\n";
    o << "    pad: " << y.pad << "\n";
    if (y.stride != 1) o << "    stride: " << y.stride << "\n";
    o << "    activate: " << y.activate << "\n";
    if (y.wide) {
      o << "    output_width: 32\n    output: true\n";
      o << "    output_processors: " << hex64(y.output_processors) << "\n";
    }
    o << "    out_offset: " << hex16(y.out_offset) << "\n";
  }
  return o.str();
}

void require_qat(model::Student& s, const std::string& what) {
  for (auto* l : s.layers()) {
    if (!l->spec().has_op()) continue;
    if (l->has_bn() || !l->quantized())
      fail_file(what,
                "is a float (non-QAT) checkpoint; ai8x-synthesis needs a quantization-aware trained model "
                "(train past the QAT switch, e.g. posekd train with a QAT policy) - float export is not supported");
  }
}

io::Value ai8x_checkpoint(const std::string& arch, std::int64_t epoch, const ai8x::StateDict& sd,
                          const io::Value& extras) {
  io::Value v = io::Value::dict();
  v.set("arch", io::Value::string(arch));
  v.set("epoch", io::Value::integer(epoch));
  ai8x::StateDict copy;
  for (const auto& [k, t] : sd) copy.emplace_back(k, t.detach().to(torch::kCPU).contiguous());
  v.set("state_dict", io::to_value(copy));
  v.set("extras", extras);
  return v;
}

torch::Tensor synthetic_image_int() {
  // Integer-only pattern (reproducible everywhere): diagonal bands per channel plus a bright
  // "figure" rectangle, values in [-128, 127].
  auto c = torch::arange(3, torch::kLong).view({3, 1, 1});
  auto y = torch::arange(128, torch::kLong).view({1, 128, 1});
  auto x = torch::arange(128, torch::kLong).view({1, 1, 128});
  auto v = ((x * 3 + y * 5 + c * 37 + (x * y) / 32) % 256) - 128;
  auto figure = (x >= 48) * (x < 80) * (y >= 24) * (y < 112);
  v = torch::where(figure.expand_as(v), (v / 4) + 96, v);
  return v.clamp(-128, 127).to(torch::kLong).contiguous();
}

torch::Tensor image_int(const std::string& path) {
  if (!fs::exists(path)) fail_file(path, "sample image does not exist");
  data::CocoImage img;
  img.file_name = fs::path(path).filename().string();
  data::SampleConfig cfg;
  cfg.input_size = 128;
  cfg.reduced_decode = false;
  auto sample = data::prepare_sample(img, fs::path(path).parent_path().string(), cfg);
  if (!sample.ok) fail_file(path, "cannot use as sample image: " + sample.error);
  return ai8x::simulate_input(sample.image).to(torch::kLong).contiguous();
}

torch::Tensor student_sample(const model::Student& s, const torch::Tensor& image) {
  if (image.dim() != 3 || image.size(0) != 3) throw Error("export: sample image must be [3,H,W]");
  auto t = s.folded_input() ? ai8x::fold(image, 2) : image;
  const auto want = s.input_shape();
  if (t.sizes().vec() != want)
    throw Error(fmt::format("export: sample shape {} does not match the student input {}", shape_str(t.sizes()),
                            shape_str(want)));
  return t.to(torch::kLong).contiguous();
}

HeadOutputs integer_heads(const model::IntegerStudent& is, const torch::Tensor& sample) {
  torch::NoGradGuard ng;
  auto t = sample.to(torch::kLong).unsqueeze(0);
  for (const auto& l : is.trunk) t = ai8x::integer_layer_forward(l, t);
  auto run = [&](const std::vector<ai8x::IntegerLayer>& head) {
    auto h = t;
    for (const auto& l : head) h = ai8x::integer_layer_forward(l, h);
    return h.squeeze(0).to(torch::kLong).contiguous();
  };
  return {run(is.head_a), run(is.head_b)};
}

ExportResult export_ai8x(model::Student& s, const DeviceLimits& device, const std::string& out_dir,
                         const ExportOptions& opts) {
  const std::string what = opts.source.empty() ? std::string("student") : opts.source;
  ExportResult r;
  r.fit = check_fit(s, device);
  if (!r.fit.fits() && !opts.force) {
    std::string rules;
    for (const auto& v : r.fit.violations) rules += (rules.empty() ? "" : "; ") + v;
    fail_file(what, fmt::format("{} does not fit {} ({} rule{} broken: {}); use --force to export anyway", s.arch(),
                                device.name, r.fit.violations.size(), r.fit.violations.size() == 1 ? "" : "s", rules));
  }
  require_qat(s, what);
  r.layers = yaml_layers(s, r.fit);

  const std::string name = opts.name.empty() ? s.arch() : opts.name;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (!fs::is_directory(out_dir)) fail_file(out_dir, "cannot create the output folder");
  const fs::path dir(out_dir);

  // checkpoints
  const ai8x::StateDict qat = ai8x::state_dict(s);
  for (const auto& [k, t] : qat)
    if (k.find(".bn.") != std::string::npos) fail_file(what, "state dict still holds BatchNorm key " + k);
  const ai8x::StateDict q8 = ai8x::quantize_state_dict(qat, what);
  r.qat_path = (dir / (name + "-qat.pth.tar")).string();
  r.q8_path = (dir / (name + "-q8.pth.tar")).string();
  io::save_torch_file(r.qat_path, ai8x_checkpoint(name, opts.epoch, qat, io::Value::dict()));
  io::Value extras = io::Value::dict();
  extras.set("clipping_method", io::Value::string("MAX_BIT_SHIFT"));
  io::save_torch_file(r.q8_path, ai8x_checkpoint(name, opts.epoch, q8, extras));

  // YAML
  r.yaml_path = (dir / (name + ".yaml")).string();
  write_text(r.yaml_path, network_yaml(name, opts.dataset, r.layers));

  // sample + expected outputs
  const torch::Tensor image = opts.sample_image.empty() ? synthetic_image_int() : image_int(opts.sample_image);
  const torch::Tensor sample = student_sample(s, image);
  const auto is = model::integer_student(s, q8, r.q8_path);
  const auto heads = integer_heads(is, sample);
  r.sample_path = (dir / ("sample_" + name + ".npy")).string();
  r.heat_path = (dir / ("sample_" + name + "_heat.npy")).string();
  r.paf_path = (dir / ("sample_" + name + "_paf.npy")).string();
  save_npy(r.sample_path, sample);
  save_npy(r.heat_path, heads.heat);
  save_npy(r.paf_path, heads.paf);

  // C decoder + firmware example (the students whose outputs are 16x16 maps of a 128x128 frame)
  const int fs_heat = is.head_a.back().final_scale, fs_paf = is.head_b.back().final_scale;
  const bool firmware = heads.heat.dim() == 3 && heads.heat.size(1) == 16 && heads.heat.size(2) == 16 &&
                        image.size(1) == 128 && image.size(2) == 128 && is.head_a.back().spec.wide &&
                        is.head_b.back().spec.wide;
  PoseCConfig ccfg;
  ccfg.fold = s.folded_input() ? 2 : 1;
  ccfg.heat_final_scale = fs_heat;
  ccfg.paf_final_scale = fs_paf;
  std::tie(ccfg.heat_output_shift, ccfg.paf_output_shift) = s.head_output_shifts();
  std::vector<infer::Pose> sample_people;
  if (firmware) {
    sample_people = decode_accumulators(heads.heat, heads.paf, ccfg);
    r.firmware_dir = (dir / "firmware").string();
    write_pose_c(r.firmware_dir, ccfg, image, sample_people);
  }

  // README
  std::ostringstream o;
  o << "# " << name << " for " << device.name << " (posekd export)\n\n"
    << "Source: `" << what << "` (arch " << s.arch() << ", epoch " << opts.epoch << ").\n\n"
    << "| file | what |\n|---|---|\n"
    << "| `" << name << "-qat.pth.tar` | QAT checkpoint, ai8x keys, BatchNorm folded (input of quantize.py) |\n"
    << "| `" << name
    << "-q8.pth.tar` | the same after quantize.py (MAX_BIT_SHIFT): int8 weights, bias*128, output_shift |\n"
    << "| `" << name << ".yaml` | ai8xize network description (" << r.layers.size()
    << " layers, checkpoint weight order) |\n"
    << "| `sample_" << name << ".npy` | int64 input " << shape_str(sample.sizes())
    << (s.folded_input() ? " (folded: channel (i*2+j)*3+c = pixel[c, i::2, j::2] - 128, BGR)" : " (pixel - 128, BGR)")
    << ", from " << (opts.sample_image.empty() ? std::string("a synthetic pattern") : "`" + opts.sample_image + "`")
    << " |\n"
    << "| `sample_" << name << "_heat.npy`, `sample_" << name << "_paf.npy` | expected int64 outputs of the bit-exact "
    << "integer inference: raw 32-bit head accumulators (Q17.14), before final_scale (heat " << fs_heat << ", paf "
    << fs_paf << "; cnn_unload applies it) |\n\n"
    << "Fit check: " << (r.fit.fits() ? "FITS" : "DOES NOT FIT (exported with --force)") << " " << device.name << ", "
    << r.fit.total_weight_bytes << " weight bytes, " << r.fit.total_words_proc0 << " kernel words on processor 0.\n\n"
    << "## Latency (estimate)\n\n```\n"
    << format_latency(network_latency(r.fit)) << format_decode_estimate() << "```\n\n"
    << "## Synthesis (ai8x-synthesis, from its checkout)\n\n```sh\n"
    << "python ai8xize.py --device " << device.name << " --checkpoint-file " << fs::absolute(r.q8_path).string()
    << " --config-file " << fs::absolute(r.yaml_path).string() << " --sample-input "
    << fs::absolute(r.sample_path).string() << " --test-dir sdk/Examples/" << device.name << "/CNN --prefix " << name
    << " --fifo --timer 0 --display-checkpoint --verbose --overwrite\n```\n\n"
    << "## Alternative: quantize with the Python tool\n\n```sh\n"
    << "python quantize.py " << fs::absolute(r.qat_path).string() << " " << name << "-q8-py.pth.tar --device "
    << device.name << " -v\n```\n\n"
    << "then pass `--checkpoint-file " << name << "-q8-py.pth.tar` to ai8xize.py (it should equal `" << name
    << "-q8.pth.tar`).\n\n"
    << "The deployed input must be prepared exactly like the sample: longest side scaled to 128, padded "
       "bottom/right with 128, BGR, value - 128"
    << (s.folded_input() ? ", folded 2x2 into 12 channels (HWC)." : ".") << "\n";
  if (firmware)
    o << "\n## Firmware: decoding people on the Arm core\n\n"
      << "`firmware/` holds the C99 pose decoder (`pose_decode.c`, `pose_params.h`: no malloc, fixed buffers), the "
         "input preparation from a 128x128 RGB888 or RGB565 frame (`pose_input.c`) and `main.c`, which replaces the "
         "`main.c` ai8xize generates: it prepares the sample frame, runs the CNN, unloads, decodes and prints the "
         "people, and checks them against the ones posekd decodes on the host ("
      << sample_people.size() << " for this sample). See `firmware/FIRMWARE.md`.\n";
  r.readme_path = (dir / "README.md").string();
  write_text(r.readme_path, o.str());
  return r;
}

}  // namespace posekd::deploy
