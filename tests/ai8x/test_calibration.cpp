// Calibration (ai8x.md 3.3) and quantize.py (4.2) against the Python golden data.
#include <gtest/gtest.h>

#include "posekd/ai8x/calibration.h"
#include "posekd/ai8x/simulate.h"
#include "posekd/ai8x/state_dict.h"
#include "test_util.h"

using namespace posekd::ai8x;

namespace {

// The Python data of sections 3-4 of tests/fixtures/ai8x/README.md: the whole-student files when
// they are provided (15 layers), else the repository's excerpt of 5 layers (make_excerpt.py).
struct QuantizeGolden {
  c10::impl::GenericDict qat{c10::StringType::get(), c10::AnyType::get()};
  c10::impl::GenericDict quantized{c10::StringType::get(), c10::AnyType::get()};
  int layers = 0;
};

QuantizeGolden quantize_golden() {
  QuantizeGolden g;
  const auto qat = posekd::testing::fixture_path("ai8x/student_qat.pt");
  const auto quant = posekd::testing::fixture_path("ai8x/student_quantized.pt");
  if (!qat.empty() && !quant.empty()) {
    g.qat = read_tensor_dict(qat.string());
    g.quantized = read_tensor_dict(quant.string());
    g.layers = 15;
  } else {
    const auto ex = posekd::testing::fixture_path("ai8x/student_excerpt.pt");
    if (ex.empty()) return g;
    g.qat = g.quantized = read_tensor_dict(ex.string());
    g.layers = static_cast<int>(dict_tensor(g.qat, "layers").item<int64_t>());
  }
  return g;
}

}  // namespace

TEST(Calibration, HistogramMergeOutliersAndSearchMatchPython) {
  const auto g = quantize_golden();
  ASSERT_GT(g.layers, 0) << "tests/fixtures/ai8x/student_excerpt.pt is absent";
  const auto& all = g.qat;
  auto hists = dict_dict(all, "histograms");
  auto thr = dict_dict(all, "thresholds_abs");
  int n = 0;
  for (const auto& kv : hists) {
    const auto name = kv.key().toStringRef();
    SCOPED_TRACE(name);
    auto h = kv.value().toGenericDict();
    auto raw_counts = dict_tensor(h, "raw_counts");
    auto raw_edges = dict_tensor(h, "raw_edges");
    std::vector<HistogramBatch> batches;
    for (int64_t b = 0; b < raw_counts.size(0); ++b) {
      HistogramBatch hb;
      hb.counts = raw_counts[b];
      hb.lo = raw_edges[b][0].item<float>();
      hb.hi = raw_edges[b][-1].item<float>();
      // the stored edges are the linspace we recompute
      ASSERT_TRUE(torch::linspace(hb.lo, hb.hi, 2049, torch::kFloat).equal(raw_edges[b]));
      batches.push_back(hb);
    }
    auto s = search_threshold(batches, 8.0);
    EXPECT_TRUE(s.merged_edges.equal(dict_tensor(h, "merged_edges")));
    auto mc = dict_tensor(h, "merged_counts");
    EXPECT_LT((s.merged_counts - mc).abs().max().item<double>(), 1e-6 * mc.abs().max().item<double>());
    ASSERT_EQ(s.kept_counts.numel(), dict_tensor(h, "kept_counts").numel());
    EXPECT_TRUE(s.kept_edges.equal(dict_tensor(h, "kept_edges")));
    EXPECT_EQ(s.t0, dict_tensor(h, "t0").item<double>());
    auto qe = dict_tensor(h, "q_errors");
    for (int i = 0; i < 5; ++i) EXPECT_NEAR(s.q_errors[i], qe[i].item<double>(), 1e-6 * qe[i].item<double>() + 1e-15);
    EXPECT_EQ(s.threshold, dict_tensor(thr, name).item<double>());
    ++n;
  }
  EXPECT_EQ(n, g.layers);
}

TEST(Calibration, ApplyScalesOnAChainWithTwoWideHeads) {
  // chain a -> b, heads (c -> d wide) and (e -> f wide) from b
  std::vector<std::shared_ptr<Layer>> owned = {
      std::make_shared<Layer>(fused_conv2d_relu(3, 4, 3, 1)), std::make_shared<Layer>(fused_conv2d_relu(4, 4, 3, 1)),
      std::make_shared<Layer>(fused_conv2d_relu(4, 4, 1, 0)), std::make_shared<Layer>(conv2d(4, 2, 1, 0, true)),
      std::make_shared<Layer>(fused_conv2d_relu(4, 4, 1, 0)), std::make_shared<Layer>(conv2d(4, 3, 1, 0, true))};
  std::vector<Layer*> layers;
  for (auto& l : owned) layers.push_back(l.get());
  const float T[6] = {3, 1, 2, 1, -1, 2};
  std::vector<torch::Tensor> bias0;
  for (int i = 0; i < 6; ++i) {
    torch::NoGradGuard ng;
    layers[i]->activation_threshold.fill_(T[i]);
    bias0.push_back(layers[i]->bias().clone());
  }
  apply_scales(layers, {{}, {0}, {1}, {2}, {1}, {4}});
  const float rel[6] = {3, -2, 1, -1, -2, 3};
  const float fs[6] = {0, 0, 0, 2, 0, -1};  // wide heads: fs = T[prev]
  const float div[6] = {1, 8, 2, 4, 2, 0.5};
  for (int i = 0; i < 6; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(layers[i]->activation_threshold.item<float>(), rel[i]);
    EXPECT_EQ(layers[i]->final_scale.item<float>(), fs[i]);
    EXPECT_TRUE(layers[i]->bias().equal(bias0[i] / div[i]));
  }
  // shared consumer: producers of one layer take the max threshold
  {
    torch::NoGradGuard ng;
    layers[0]->activation_threshold.fill_(1);
    layers[1]->activation_threshold.fill_(3);
  }
  std::vector<Layer*> two = {layers[0], layers[1], layers[2]};
  apply_scales(two, {{}, {}, {0, 1}});
  EXPECT_EQ(layers[0]->activation_threshold.item<float>(), 3);
  EXPECT_EQ(layers[1]->activation_threshold.item<float>(), 3);
}

TEST(Quantize, QuantizePyOutputIsReproducedExactly) {
  const auto g = quantize_golden();
  ASSERT_GT(g.layers, 0) << "tests/fixtures/ai8x/student_excerpt.pt is absent";
  auto qat = to_state_dict(dict_dict(g.qat, "state_dict"));
  auto want = to_state_dict(dict_dict(g.quantized, "quantized_state_dict"));
  auto got = quantize_state_dict(qat);
  EXPECT_EQ(want.size(), 11u * g.layers);  // 11 entries per fused QAT layer
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(want[i].first);
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.scalar_type(), want[i].second.scalar_type());
    EXPECT_EQ(got[i].second.sizes(), want[i].second.sizes());
    EXPECT_TRUE(got[i].second.equal(want[i].second));
  }
  // simulate_input
  EXPECT_TRUE(simulate_input(dict_tensor(g.quantized, "input_float")).equal(dict_tensor(g.quantized, "input_int")));
}
