#include "posekd/export/fit.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "posekd/core/error.h"

namespace posekd::deploy {
namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }
std::int64_t round_up4(std::int64_t a) { return ceil_div(a, 4) * 4; }

}  // namespace

DeviceLimits device_limits(const std::string& name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (n == "MAX78000" || n == "85" || n == "AI85") return DeviceLimits{};
  if (n == "MAX78002" || n == "87" || n == "AI87") {
    DeviceLimits d;
    d.name = "MAX78002";
    d.device = 87;
    d.max_layers = 128;
    // ai8x-synthesis tornadocnn DevAI87: 4 processors (one per group) with 5,120 kernel words,
    // the other 60 with 4,096: 266,240 words x 9 bytes = 2,396,160 B (2,340 KiB).
    d.words_proc0 = 5120;
    d.weight_bytes = 2396160;
    d.bias_bytes = 8192;            // 4 groups x 2,048
    d.data_instance_bytes = 81920;  // 5,120 32-bit words per instance
    d.max_row_col = 2047;
    return d;
  }
  throw Error("unknown device '" + name + "' (known: MAX78000, MAX78002)");
}

std::int64_t kernel_words(std::int64_t cin, std::int64_t cout, std::int64_t k, int bits) {
  const std::int64_t in_exp = ceil_div(cin, 64), out_exp = ceil_div(cout, 64);
  std::int64_t n_out = ceil_div(cout, out_exp);
  if (cout > 64) n_out = round_up4(n_out);
  const std::int64_t kc = n_out * out_exp * in_exp;
  return ceil_div(kc * k * k * bits, 72);
}

std::int64_t input_processors(std::int64_t cin) {
  const std::int64_t in_exp = ceil_div(cin, 64);
  std::int64_t p = ceil_div(cin, in_exp);
  if (cin > 64) p = round_up4(p);
  return p;
}

int WeightBits::for_layer(const std::string& name) const {
  const auto it = per_layer.find(name);
  return it != per_layer.end() ? it->second : default_bits;
}

WeightBits weight_bits_of(const ai8x::QatPolicy& policy) {
  WeightBits b;
  b.default_bits = policy.weight_bits;
  for (const auto& [layer, o] : policy.overrides)
    if (o.weight_bits) b.per_layer[layer] = *o.weight_bits;
  return b;
}

WeightBits weight_bits_of(const model::Student& student) {
  WeightBits b;
  auto& s = const_cast<model::Student&>(student);
  const auto layers = s.layers();
  const auto& names = s.layer_names();
  for (size_t i = 0; i < layers.size() && i < names.size(); ++i)
    if (layers[i]->quantized()) b.per_layer[names[i]] = static_cast<int>(layers[i]->weight_bits.item<int64_t>());
  return b;
}

FitReport check_fit(const model::Student& student, const DeviceLimits& device, const WeightBits* bits) {
  const WeightBits own = bits ? WeightBits{} : weight_bits_of(student);
  const WeightBits& wb = bits ? *bits : own;
  FitReport r;
  r.device = device;
  for (const auto& p : const_cast<model::Student&>(student).parameters()) r.parameters += p.numel();
  const auto shape = student.input_shape();
  std::int64_t c = shape[0], h = shape[1], w = shape[2];
  std::int64_t trunk_h = 0, trunk_w = 0, trunk_c = 0;
  auto add = [&](const model::StudentLayerDef& d, bool first) {
    const auto& s = d.spec;
    LayerFit f;
    f.name = d.name;
    f.cin = s.in_channels;
    f.cout = s.out_channels;
    f.k = s.kernel_size;
    f.pad = s.padding;
    f.stride = s.stride;
    f.pool = s.pool_size;
    f.pool_stride = s.pool_stride;
    f.wide = s.wide;
    f.relu = s.relu;
    f.weight_bits = wb.for_layer(f.name);
    if (f.weight_bits != 1 && f.weight_bits != 2 && f.weight_bits != 4 && f.weight_bits != 8)
      r.violations.push_back(fmt::format("{}: {}-bit weights (1, 2, 4 or 8 only)", f.name, f.weight_bits));
    if (c != f.cin) r.violations.push_back(fmt::format("{}: expects {} input channels, gets {}", f.name, f.cin, c));
    std::int64_t ih = h, iw = w;
    if (f.pool > 0) {
      ih = (h - f.pool) / f.pool_stride + 1;
      iw = (w - f.pool) / f.pool_stride + 1;
    }
    f.in_h = ih;
    f.in_w = iw;
    f.out_h = (ih + 2 * f.pad - f.k) / f.stride + 1;
    f.out_w = (iw + 2 * f.pad - f.k) / f.stride + 1;
    f.macs = f.out_h * f.out_w * f.cout * f.cin * f.k * f.k;
    f.weight_bytes = ceil_div(f.cin * f.cout * f.k * f.k * f.weight_bits, 8);
    f.bias_bytes = s.bias ? f.cout : 0;
    f.kernel_words = kernel_words(f.cin, f.cout, f.k, f.weight_bits);
    f.processors = input_processors(f.cin);
    // A first layer with few channels reads CHW (one processor per memory instance); else HWC.
    f.data_format = (first && f.cin <= 4) ? "CHW" : "HWC";
    const std::int64_t in_exp = ceil_div(f.cin, 64), out_exp = ceil_div(f.cout, 64);
    f.data_in_bytes = (f.data_format == "CHW") ? h * w * in_exp : h * w * in_exp * 4;
    f.data_out_bytes = f.out_h * f.out_w * out_exp * 4 * (f.wide ? 4 : 1);
    // rules (ai8x.md 4.5, 5.1)
    if (f.stride != 1)
      r.violations.push_back(
          fmt::format("{}: Conv2d stride {} (ai8xize accepts only stride 1; fold the input)", f.name, f.stride));
    if (f.k != 1 && f.k != 3)
      r.violations.push_back(fmt::format("{}: kernel {}x{} (1x1 or 3x3 only)", f.name, f.k, f.k));
    if (f.pad > 2 || f.pad >= f.k)
      r.violations.push_back(
          fmt::format("{}: padding {} with a {}x{} kernel (must be < kernel and <= 2)", f.name, f.pad, f.k, f.k));
    if (f.pool > 16 || (f.pool > 0 && (f.pool_stride < 1 || f.pool_stride > 16)))
      r.violations.push_back(fmt::format("{}: pooling {}/{} (1..16 only)", f.name, f.pool, f.pool_stride));
    if (f.cin > 1024 || f.cout > 1024)
      r.violations.push_back(fmt::format("{}: {} -> {} channels (at most 1024)", f.name, f.cin, f.cout));
    if (f.wide && f.relu)
      r.violations.push_back(fmt::format("{}: a 32-bit (wide) output cannot have an activation", f.name));
    if (std::max(h, w) > device.max_row_col)
      r.violations.push_back(fmt::format("{}: input {}x{} exceeds {} rows/columns", f.name, h, w, device.max_row_col));
    if (f.data_in_bytes > device.data_instance_bytes)
      r.violations.push_back(fmt::format("{}: input {}x{}x{} ({}) needs {} bytes per data-memory instance > {}", f.name,
                                         f.cin, h, w, f.data_format, f.data_in_bytes, device.data_instance_bytes));
    if (f.data_out_bytes > device.data_instance_bytes)
      r.violations.push_back(fmt::format("{}: output {}x{}x{} needs {} bytes per data-memory instance > {}", f.name,
                                         f.cout, f.out_h, f.out_w, f.data_out_bytes, device.data_instance_bytes));
    r.total_macs += f.macs;
    r.total_weight_bytes += f.weight_bytes;
    r.total_bias_bytes += f.bias_bytes;
    r.total_words_proc0 += f.kernel_words;
    r.layers.push_back(f);
    c = f.cout;
    h = f.out_h;
    w = f.out_w;
  };
  bool first = true;
  for (const auto& d : student.trunk_defs()) {
    add(d, first);
    first = false;
  }
  trunk_c = c;
  trunk_h = h;
  trunk_w = w;
  for (const auto* head : {&student.head_a_defs(), &student.head_b_defs()}) {
    c = trunk_c;
    h = trunk_h;
    w = trunk_w;
    for (const auto& d : *head) add(d, false);
  }
  const auto nl = static_cast<std::int64_t>(r.layers.size());
  if (nl > device.max_layers)
    r.violations.push_back(fmt::format("{} layers > {} hardware layers", nl, device.max_layers));
  if (r.total_weight_bytes > device.weight_bytes)
    r.violations.push_back(
        fmt::format("weights: {} bytes > {} bytes of kernel memory", r.total_weight_bytes, device.weight_bytes));
  if (r.total_words_proc0 > device.words_proc0)
    r.violations.push_back(
        fmt::format("processor 0 needs {} kernel words > {}", r.total_words_proc0, device.words_proc0));
  if (r.total_bias_bytes > device.bias_bytes)
    r.violations.push_back(
        fmt::format("biases: {} bytes > {} bytes of bias memory", r.total_bias_bytes, device.bias_bytes));
  return r;
}

std::string format_fit_report(const FitReport& r) {
  std::string s = fmt::format(
      "{:<10} {:>4} {:>4} {:>3} {:>5} {:>9} {:>11} {:>9} {:>4} {:>7} {:>5} {:>4} {:>7} {:>7} {:>5}\n", "layer", "Cin",
      "Cout", "k", "pool", "in", "out", "MACs", "bits", "weightB", "words", "proc", "dataIn", "dataOut", "biasB");
  for (const auto& f : r.layers) {
    s +=
        fmt::format("{:<10} {:>4} {:>4} {:>3} {:>5} {:>9} {:>11} {:>9} {:>4} {:>7} {:>5} {:>4} {:>7} {:>7} {:>5}\n",
                    f.name, f.cin, f.cout, fmt::format("{}{}", f.k, f.stride != 1 ? fmt::format("/s{}", f.stride) : ""),
                    f.pool ? fmt::format("{}/{}", f.pool, f.pool_stride) : "-", fmt::format("{}x{}", f.in_h, f.in_w),
                    fmt::format("{}x{}x{}{}", f.cout, f.out_h, f.out_w, f.wide ? "w" : ""), f.macs, f.weight_bits,
                    f.weight_bytes, f.kernel_words, f.processors, f.data_in_bytes, f.data_out_bytes, f.bias_bytes);
  }
  s += fmt::format("\nparameters: {}   MACs: {}   layers: {} / {}\n", r.parameters, r.total_macs, r.layers.size(),
                   r.device.max_layers);
  s += fmt::format(
      "kernel memory: {} / {} bytes ({:.1f}%)   processor 0: {} / {} words ({:.1f}%)   bias: {} / {} bytes\n",
      r.total_weight_bytes, r.device.weight_bytes,
      100.0 * static_cast<double>(r.total_weight_bytes) / static_cast<double>(r.device.weight_bytes),
      r.total_words_proc0, r.device.words_proc0,
      100.0 * static_cast<double>(r.total_words_proc0) / static_cast<double>(r.device.words_proc0), r.total_bias_bytes,
      r.device.bias_bytes);
  if (r.fits()) {
    s += fmt::format("verdict: FITS {} (necessary conditions; the synthesis tool's allocator has the last word)\n",
                     r.device.name);
  } else {
    s += fmt::format("verdict: DOES NOT FIT {} ({} rule{} broken):\n", r.device.name, r.violations.size(),
                     r.violations.size() == 1 ? "" : "s");
    for (const auto& v : r.violations) s += "  - " + v + "\n";
  }
  return s;
}

}  // namespace posekd::deploy
