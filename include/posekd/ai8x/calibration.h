// QATv2 activation-threshold calibration (ai8x.md 3.3), apply_scales (3.4), initiate_qat (3.2.5).
#pragma once
#include <torch/torch.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "posekd/ai8x/layers.h"
#include "posekd/ai8x/policy.h"

namespace posekd::ai8x {

constexpr int kHistBins = 2048;

// Every intermediate of one layer's threshold search (the fixtures' `histograms` debug data).
struct ThresholdSearch {
  torch::Tensor merged_counts;   // f64[2049]  (after the np.interp merge)
  torch::Tensor merged_edges;    // f32[2049]
  torch::Tensor kept_counts;     // f64[n]     (after outlier removal)
  torch::Tensor kept_edges;      // f32[n]     (upper edges of the kept bins)
  double t0 = 0;                 // 2^ceil(log2 max|kept_edges|)
  std::vector<double> q_errors;  // MSE for t0 / 2^i, i = 0..4
  double threshold = 0;          // log2 of the chosen t (integer valued)
};

// Merge of per-batch histograms onto linspace(min lo, max hi, 2049) with np.interp semantics.
void merge_histograms(const std::vector<HistogramBatch>& batches, torch::Tensor& counts, torch::Tensor& edges);
// z-score outlier removal; returns the kept counts and edges.
void remove_outliers(const torch::Tensor& counts, const torch::Tensor& edges, double z, torch::Tensor& kept_counts,
                     torch::Tensor& kept_edges);
// Mean squared error of 8-bit quantization at range t over the kept histogram.
double quantization_error(const torch::Tensor& kept_counts, const torch::Tensor& kept_edges, double t);
// The whole search of 3.3 for one layer (batches must be non-empty).
ThresholdSearch search_threshold(const std::vector<HistogramBatch>& batches, double z_score);

// Sets activation_threshold of every layer that recorded batches (others keep 0).
void init_thresholds(const std::vector<Layer*>& layers, double z_score);

// apply_scales with the producer graph declared explicitly: producers[i] = indices (into layers)
// of the layers whose output reaches layer i's input; empty for the network input. Layers must be
// in module order. Scales biases in place (b / 2^T[first producer]); thresholds become relative;
// final_scale is non-zero only on layers nobody consumes.
void apply_scales(const std::vector<Layer*>& layers, const std::vector<std::vector<std::size_t>>& producers);

// init_module(weight_bits, quantize_activation = true, shift_quantile) on every layer, with the
// policy's per-name overrides (names[i] names layers[i]).
void initiate_qat(const std::vector<Layer*>& layers, const std::vector<std::string>& names, const QatPolicy& policy);

}  // namespace posekd::ai8x
