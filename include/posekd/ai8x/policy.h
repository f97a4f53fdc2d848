// The QAT policy (ai8x --qat-policy YAML, parse_qat_yaml.py of QATv2) plus posekd's start_batch.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace posekd::ai8x {

struct QatPolicy {
  struct Override {
    std::optional<int> weight_bits;
    std::optional<double> shift_quantile;
  };
  int64_t start_epoch = -1;  // -1 = not set (the YAML requires it unless start_batch is given)
  int64_t start_batch = -1;  // posekd: switch after this many batches (-1 = unused)
  int weight_bits = 8;
  double shift_quantile = 1.0;
  double outlier_removal_z_score = 8.0;
  std::map<std::string, Override> overrides;  // keyed by layer name

  int weight_bits_for(const std::string& layer) const;
  double shift_quantile_for(const std::string& layer) const;
};

// Reads the YAML. Keys: start_epoch and/or start_batch (one is required), weight_bits (required,
// 1/2/4/8), shift_quantile (0 < q <= 1), outlier_removal_z_score (> 0), overrides
// {layer: {weight_bits, shift_quantile}}. Any problem -> posekd::Error naming the file.
QatPolicy load_qat_policy(const std::string& path);
// Writes the same keys (round-trips through load_qat_policy).
void save_qat_policy(const QatPolicy& policy, const std::string& path);

}  // namespace posekd::ai8x
