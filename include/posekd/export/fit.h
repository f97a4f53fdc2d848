// Will this student run on a MAX78000 / MAX78002? The ai8xize rules of spec/ai8x.md 4.5 and 5.1 as
// arithmetic over the layer table: per-layer shapes, MACs, weight bytes, kernel words per processor,
// processors, data memory and bias bytes, then totals against the device's limits. Processor 0 takes
// part in every layer, so the sum of kernel words must fit its memory (a necessary condition; the real
// allocator aligns and packs, so keep a margin: ai8x.md 8.8).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "posekd/ai8x/policy.h"
#include "posekd/model/student.h"

namespace posekd::deploy {

struct DeviceLimits {
  std::string name = "MAX78000";
  int device = 85;
  int max_layers = 32;
  int processors = 64;
  std::int64_t words_proc0 = 768;      // 72-bit kernel words available on processor 0
  std::int64_t weight_bytes = 442368;  // total kernel memory at 8 bit
  std::int64_t bias_bytes = 2048;
  std::int64_t data_instance_bytes = 32768;  // per data-memory instance (4 processors share one)
  int max_row_col = 1023;
};

// "MAX78000" / "max78000" / "85", "MAX78002" / "87"; else posekd::Error naming the known devices.
DeviceLimits device_limits(const std::string& name);

struct LayerFit {
  std::string name;
  std::int64_t cin = 0, cout = 0, k = 0, pad = 0, stride = 1, pool = 0, pool_stride = 0;
  bool wide = false, relu = false;
  std::int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;  // conv input (after pooling) and output
  std::int64_t macs = 0;
  int weight_bits = 8;
  std::int64_t weight_bytes = 0, bias_bytes = 0;
  std::int64_t kernel_words = 0;  // per input processor (in every processor the layer uses)
  std::int64_t processors = 0;
  std::string data_format;                             // "CHW" (first layer, <= 4 channels) or "HWC"
  std::int64_t data_in_bytes = 0, data_out_bytes = 0;  // per memory instance
};

struct FitReport {
  DeviceLimits device;
  std::vector<LayerFit> layers;
  std::int64_t total_macs = 0, total_weight_bytes = 0, total_bias_bytes = 0, total_words_proc0 = 0;
  std::int64_t parameters = 0;
  std::vector<std::string> violations;  // every broken rule, one line each
  bool fits() const { return violations.empty(); }
};

// Pure arithmetic helpers (ai8x.md 4.5).
std::int64_t kernel_words(std::int64_t cin, std::int64_t cout, std::int64_t k, int bits);
std::int64_t input_processors(std::int64_t cin);

// Weight bits per layer (ai8x: 1, 2, 4 or 8); layers not listed use `default_bits`.
struct WeightBits {
  int default_bits = 8;
  std::map<std::string, int> per_layer;
  int for_layer(const std::string& name) const;
};
// What a QAT policy will give each layer: its weight_bits and the per-layer overrides.
WeightBits weight_bits_of(const ai8x::QatPolicy& policy);
// What a student's layers hold: the weight_bits of every quantized (QAT) layer, 8 for float layers.
WeightBits weight_bits_of(const model::Student& student);

// Checks `student` (its layer table and input shape) against `device`. Kernel memory is counted at
// `bits` per layer; without it, at the bits the student's own QAT layers hold (8 for a float
// student): pass weight_bits_of(policy) to check a float student against the QAT it will get.
FitReport check_fit(const model::Student& student, const DeviceLimits& device, const WeightBits* bits = nullptr);

// The per-layer table, totals and verdict as text.
std::string format_fit_report(const FitReport& r);

}  // namespace posekd::deploy
