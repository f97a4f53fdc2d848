#include "posekd/ai8x/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "posekd/core/error.h"

namespace posekd::ai8x {

namespace {

// np.interp(x, xp, fp) for non-decreasing xp (numpy's arr_interp): left = fp[0], right = fp[-1].
void interp(const double* x, int64_t nx, const double* xp, const double* fp, int64_t n, double* out) {
  for (int64_t i = 0; i < nx; ++i) {
    const double v = x[i];
    if (v < xp[0]) {
      out[i] = fp[0];
    } else if (v > xp[n - 1]) {
      out[i] = fp[n - 1];
    } else if (v == xp[n - 1]) {
      out[i] = fp[n - 1];
    } else {
      // j with xp[j] <= v < xp[j+1]
      const int64_t j = (std::upper_bound(xp, xp + n, v) - xp) - 1;
      if (xp[j] == v) {
        out[i] = fp[j];
      } else {
        const double slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
        double r = slope * (v - xp[j]) + fp[j];
        if (std::isnan(r)) {
          r = slope * (v - xp[j + 1]) + fp[j + 1];
          if (std::isnan(r) && fp[j] == fp[j + 1]) r = fp[j];
        }
        out[i] = r;
      }
    }
  }
}

}  // namespace

void merge_histograms(const std::vector<HistogramBatch>& batches, torch::Tensor& counts, torch::Tensor& edges) {
  if (batches.empty()) throw Error("calibration: no histogram batches were recorded");
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (const auto& b : batches) lo = std::min(lo, b.lo), hi = std::max(hi, b.hi);
  edges = torch::linspace(lo, hi, kHistBins + 1, torch::kFloat);
  auto e64 = edges.to(torch::kDouble).contiguous();
  counts = torch::zeros({kHistBins + 1}, torch::kDouble);
  std::vector<double> interp_out(kHistBins + 1);
  for (const auto& b : batches) {
    auto eb = torch::linspace(b.lo, b.hi, kHistBins + 1, torch::kFloat).to(torch::kDouble).contiguous();
    auto cum = torch::cat({torch::zeros({1}, torch::kFloat), b.counts.to(torch::kFloat).cumsum(0)})
                   .to(torch::kDouble)
                   .contiguous();
    interp(e64.data_ptr<double>(), kHistBins + 1, eb.data_ptr<double>(), cum.data_ptr<double>(), kHistBins + 1,
           interp_out.data());
    auto* c = counts.data_ptr<double>();
    double prev = 0;
    for (int64_t i = 0; i <= kHistBins; ++i) {
      c[i] += interp_out[i] - prev;
      prev = interp_out[i];
    }
  }
}

void remove_outliers(const torch::Tensor& counts, const torch::Tensor& edges, double z, torch::Tensor& kept_counts,
                     torch::Tensor& kept_edges) {
  const int64_t n = counts.numel();
  auto c = counts.to(torch::kDouble).contiguous();
  auto e = edges.to(torch::kFloat).contiguous();
  const double* cp = c.data_ptr<double>();
  const float* ep = e.data_ptr<float>();
  std::vector<double> mid(n, 0.0);  // mid'[0] = 0, mid'[j+1] = (E[j]+E[j+1])/2
  double sw = 0, swm = 0;
  for (int64_t j = 0; j + 1 < n; ++j) {
    mid[j + 1] = (static_cast<double>(ep[j]) + static_cast<double>(ep[j + 1])) / 2.0;
    sw += cp[j + 1];
    swm += cp[j + 1] * mid[j + 1];
  }
  const double mean = swm / sw;
  double sv = 0;
  for (int64_t j = 1; j < n; ++j) sv += cp[j] * (mid[j] - mean) * (mid[j] - mean);
  double stdv = std::sqrt(sv / sw);
  if (stdv == 0) stdv = 1e-9;
  std::vector<double> kc;
  std::vector<float> ke;
  for (int64_t k = 0; k < n; ++k) {
    double ck = cp[k];
    if (mid[k] > mean + z * stdv || mid[k] < mean - z * stdv) ck = 0;
    if (ck != 0) {
      kc.push_back(ck);
      ke.push_back(ep[k]);
    }
  }
  kept_counts = torch::tensor(kc, torch::kDouble);
  kept_edges = torch::tensor(ke, torch::kFloat);
}

double quantization_error(const torch::Tensor& kept_counts, const torch::Tensor& kept_edges, double t) {
  auto c = kept_counts.to(torch::kDouble).contiguous();
  auto e = kept_edges.to(torch::kDouble).contiguous();
  const double* cp = c.data_ptr<double>();
  const double* ep = e.data_ptr<double>();
  const double tt = t + 1e-9;
  double num = 0, den = 0;
  for (int64_t k = 0; k < c.numel(); ++k) {
    double q = std::nearbyint(ep[k] / tt * 128.0);  // half-to-even (default rounding mode)
    q = std::min(127.0, std::max(-128.0, q));
    const double d = q * tt / 128.0 - ep[k];
    num += cp[k] * d * d;
    den += cp[k];
  }
  return num / den;
}

ThresholdSearch search_threshold(const std::vector<HistogramBatch>& batches, double z) {
  ThresholdSearch s;
  merge_histograms(batches, s.merged_counts, s.merged_edges);
  remove_outliers(s.merged_counts, s.merged_edges, z, s.kept_counts, s.kept_edges);
  if (s.kept_edges.numel() == 0) throw Error("calibration: every histogram bin was removed");
  const double m = s.kept_edges.abs().max().item<float>();
  s.t0 = std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(m))));
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 5; ++i) {
    const double t = s.t0 / std::ldexp(1.0, i);
    const double err = quantization_error(s.kept_counts, s.kept_edges, t);
    s.q_errors.push_back(err);
    if (err < best) {
      best = err;
      s.threshold = std::log2(t);
    }
  }
  return s;
}

void init_thresholds(const std::vector<Layer*>& layers, double z) {
  torch::NoGradGuard ng;
  for (auto* l : layers) {
    if (l->calibration_batches().empty()) continue;
    l->activation_threshold.fill_(search_threshold(l->calibration_batches(), z).threshold);
  }
}

void apply_scales(const std::vector<Layer*>& layers, const std::vector<std::vector<std::size_t>>& producers) {
  if (producers.size() != layers.size())
    throw Error("apply_scales: the producer graph has " + std::to_string(producers.size()) + " entries for " +
                std::to_string(layers.size()) + " layers");
  torch::NoGradGuard ng;
  // 1. Layers sharing a consumer take the max threshold among them.
  for (const auto& prev : producers) {
    if (prev.size() < 2) continue;
    float m = -std::numeric_limits<float>::infinity();
    for (auto p : prev) m = std::max(m, layers.at(p)->activation_threshold.item<float>());
    for (auto p : prev) layers[p]->activation_threshold.fill_(m);
  }
  // 2. Snapshot absolute thresholds.
  std::vector<float> T;
  for (auto* l : layers) T.push_back(l->activation_threshold.item<float>());
  // 3. Relative thresholds, bias re-scaling, final scales (module order).
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& prev = producers[i];
    if (prev.empty()) continue;
    Layer* l = layers[i];
    const float tp = T.at(prev.front());
    if (l->spec().has_op() && l->bias().defined()) l->bias().div_(std::ldexp(1.0, static_cast<int>(tp)));
    const float rel = T[i] - tp;
    l->activation_threshold.fill_(rel);
    l->final_scale.fill_(l->spec().wide ? T[i] - rel : T[i]);
    for (auto p : prev) layers[p]->final_scale.fill_(0.0);
  }
}

void initiate_qat(const std::vector<Layer*>& layers, const std::vector<std::string>& names, const QatPolicy& policy) {
  if (names.size() != layers.size()) throw Error("initiate_qat: one name per layer is required");
  for (std::size_t i = 0; i < layers.size(); ++i) {
    layers[i]->init_module(policy.weight_bits_for(names[i]), true, policy.shift_quantile_for(names[i]));
  }
}

}  // namespace posekd::ai8x
