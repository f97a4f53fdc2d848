// Golden tests of ai8x::Layer against fixtures/ai8x/layers_float_qat.pt (real Python ai8x output).
#include <gtest/gtest.h>

#include <functional>

#include "posekd/core/error.h"

#include "posekd/ai8x/layers.h"
#include "posekd/ai8x/quantizers.h"
#include "posekd/ai8x/state_dict.h"
#include "test_util.h"

using namespace posekd::ai8x;

namespace {

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto m = b.abs().max().item<double>();
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() / std::max(m, 1e-30);
}

LayerSpec spec_from(const c10::impl::GenericDict& cfg) {
  auto i = [&](const char* k) { return dict_tensor(cfg, k).item<int64_t>(); };
  auto b = [&](const char* k) { return dict_tensor(cfg, k).item<bool>(); };
  LayerSpec s;
  s.in_channels = i("in_channels");
  s.out_channels = i("out_channels");
  s.kernel_size = i("kernel_size");
  s.padding = i("padding");
  s.stride = i("stride");
  if (b("maxpool")) s.pool_size = i("pool_size"), s.pool_stride = i("pool_stride");
  s.batchnorm = b("batchnorm");
  s.relu = b("relu");
  s.wide = b("wide");
  return s;
}

void expect_same_state(const StateDict& got, const StateDict& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    SCOPED_TRACE(want[k].first);
    EXPECT_EQ(got[k].first, want[k].first);
    EXPECT_EQ(got[k].second.scalar_type(), want[k].second.scalar_type());
    EXPECT_EQ(got[k].second.sizes(), want[k].second.sizes());
    if (got[k].second.is_floating_point()) {
      EXPECT_LE(rel_err(got[k].second, want[k].second), tol);
    } else {
      EXPECT_TRUE(got[k].second.equal(want[k].second));
    }
  }
}

class LayerCase : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerCase, FloatFusedAndQatMatchPythonAi8x) {
  POSEKD_REQUIRE_FIXTURE(path, "ai8x/layers_float_qat.pt");
  auto all = read_tensor_dict(path.string());
  auto c = dict_dict(all, GetParam());
  auto spec = spec_from(dict_dict(c, "config"));
  auto input = dict_tensor(c, "input");
  auto gout = dict_tensor(c, "grad_output");

  auto layer = std::make_shared<Layer>(spec);
  load_state_dict(*layer, to_state_dict(dict_dict(c, "float_state_dict")));
  expect_same_state(state_dict(*layer), to_state_dict(dict_dict(c, "float_state_dict")), 0);

  for (const char* mode : {"float_eval", "float_train"}) {
    SCOPED_TRACE(mode);
    layer->train(std::string(mode) == "float_train");
    layer->zero_grad();
    auto x = input.clone().requires_grad_(true);
    auto y = layer->forward(x);
    (y * gout).sum().backward();
    auto want = dict_dict(c, mode);
    EXPECT_LT(rel_err(y, dict_tensor(want, "output")), 1e-5);
    EXPECT_LT(rel_err(x.grad(), dict_tensor(want, "grad_input")), 1e-5);
    EXPECT_LT(rel_err(layer->weight().grad(), dict_tensor(want, "grad_op_weight")), 1e-5);
    if (spec.batchnorm) {
      EXPECT_LT(rel_err(layer->bn()->weight.grad(), dict_tensor(want, "grad_bn_weight")), 1e-5);
      EXPECT_LT(rel_err(layer->bn()->bias.grad(), dict_tensor(want, "grad_bn_bias")), 1e-5);
    }
    if (spec.batchnorm && std::string(mode) == "float_train") {
      // mathematically zero: compare against the weight-grad scale
      auto wmax = dict_tensor(want, "grad_op_weight").abs().max().item<double>();
      EXPECT_LE((layer->bias().grad() - dict_tensor(want, "grad_op_bias")).abs().max().item<double>(), 1e-5 * wmax);
      EXPECT_LT(rel_err(layer->bn()->running_mean, dict_tensor(want, "bn_running_mean_after")), 1e-5);
      EXPECT_LT(rel_err(layer->bn()->running_var, dict_tensor(want, "bn_running_var_after")), 1e-5);
      EXPECT_TRUE(layer->bn()->num_batches_tracked.equal(dict_tensor(want, "bn_num_batches_tracked_after")));
    } else {
      EXPECT_LT(rel_err(layer->bias().grad(), dict_tensor(want, "grad_op_bias")), 1e-5);
    }
  }

  // Fusing (from the stored float state, before any train forward).
  auto fresh = std::make_shared<Layer>(spec);
  load_state_dict(*fresh, to_state_dict(dict_dict(c, "float_state_dict")));
  fresh->fuse_bn();
  EXPECT_FALSE(fresh->has_bn());
  expect_same_state(state_dict(*fresh), to_state_dict(dict_dict(c, "fused_state_dict")), 1e-6);

  // QAT: thr/fs as apply_scales would set them, then initiate_qat (weight_bits 8, q 1.0).
  auto qsd = to_state_dict(dict_dict(c, "qat_state_dict"));
  {
    torch::NoGradGuard ng;
    fresh->activation_threshold.copy_(find(qsd, "activation_threshold", "fixture"));
    fresh->final_scale.copy_(find(qsd, "final_scale", "fixture"));
  }
  fresh->init_module(8, true, 1.0);
  expect_same_state(state_dict(*fresh), qsd, 1e-6);
  // Run QAT from exactly the stored QAT state.
  load_state_dict(*fresh, qsd);
  auto dbg = dict_dict(c, "qat_debug");
  EXPECT_EQ(fresh->current_output_shift(), dict_tensor(dbg, "computed_output_shift").item<float>());
  fresh->train(true);
  auto x = input.clone().requires_grad_(true);
  auto y = fresh->forward(x);
  (y * gout).sum().backward();
  auto want = dict_dict(c, "qat_train");
  EXPECT_TRUE(y.equal(dict_tensor(want, "output"))) << "QAT output must be bit-exact";
  EXPECT_LT(rel_err(x.grad(), dict_tensor(want, "grad_input")), 1e-5);
  EXPECT_LT(rel_err(fresh->weight().grad(), dict_tensor(want, "grad_op_weight")), 1e-5);
  EXPECT_LT(rel_err(fresh->bias().grad(), dict_tensor(want, "grad_op_bias")), 1e-5);
  // The quantized parameters that enter the conv.
  int os = fresh->current_output_shift();
  double ws = std::ldexp(1.0, -os);
  auto wq = quantize_clamp_ste(fresh->weight().detach(), ws, 8, -1, param_clamp_hi(8), false, 1);
  auto bq = quantize_clamp_ste(fresh->bias().detach(), ws, 8, -1, param_clamp_hi(8), false, 1);
  EXPECT_TRUE(wq.equal(dict_tensor(dbg, "weight_q")));
  EXPECT_TRUE(bq.equal(dict_tensor(dbg, "bias_q")));
  EXPECT_TRUE((wq * 128).equal(dict_tensor(dbg, "weight_q_int")));
}

INSTANTIATE_TEST_SUITE_P(Fixture, LayerCase,
                         ::testing::Values("a_fused_conv3x3_16_24", "b_fused_conv1x1_24_16",
                                           "c_fused_maxpool_conv3x3_16_16", "d_conv1x1_wide_16_10"));

}  // namespace

namespace {

TEST(Layer, PoolOnlyLayerAndAi8xStateLayout) {
  auto pool = std::make_shared<Layer>(max_pool2d(2, 2));
  auto x = torch::randn({1, 4, 6, 6});
  EXPECT_TRUE(pool->forward(x).equal(torch::max_pool2d(x, 2, 2)));
  auto sd = state_dict(*pool);
  ASSERT_EQ(sd.size(), 9u);
  const char* names[] = {"output_shift",  "activation_threshold", "final_scale",      "weight_bits",
                         "bias_bits",     "quantize_activation",  "clamp_activation", "adjust_output_shift",
                         "shift_quantile"};
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_EQ(sd[i].first, names[i]);
    EXPECT_FALSE(sd[i].second.requires_grad());
  }
  // a BN conv: 9 + op.weight, op.bias + 5 bn keys; after fuse_bn the bn keys are gone
  auto conv = std::make_shared<Layer>(fused_conv2d_bn_relu(4, 8, 3, 1));
  EXPECT_EQ(state_dict(*conv).size(), 16u);
  conv->fuse_bn();
  auto fused = state_dict(*conv);
  EXPECT_EQ(fused.size(), 11u);
  EXPECT_EQ(fused.back().first, "op.bias");
}

TEST(Layer, BadSpecsAndStateDictsGiveOneLineErrors) {
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error, expected: " << needle;
    } catch (const posekd::Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(needle), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  };
  expect_error([] { Layer l(fused_conv2d_bn_relu(3, 8, 5, 1)); }, "kernel_size");
  expect_error([] { Layer l(fused_maxpool_conv2d_bn_relu(3, 8, 3, 1, 17, 2)); }, "pool_size");
  auto s = conv2d(4, 4, 1, 0, true);
  s.relu = true;
  expect_error([&] { Layer l(s); }, "wide");
  auto layer = std::make_shared<Layer>(fused_conv2d_relu(4, 8, 3, 1));
  expect_error([&] { layer->init_module(3, true); }, "init_module");
  expect_error([&] { layer->init_module(8, false); }, "init_module");
  auto sd = state_dict(*layer);
  StateDict wrong = sd;
  wrong[9].second = torch::zeros({8, 4, 1, 1});
  expect_error([&] { load_state_dict(*layer, wrong, true, "ckpt.pth"); }, "ckpt.pth: key 'op.weight' has shape");
  StateDict missing(sd.begin(), sd.end() - 1);
  expect_error([&] { load_state_dict(*layer, missing, true, "ckpt.pth"); }, "missing key 'op.bias'");
  StateDict extra = sd;
  extra.emplace_back("bn.weight", torch::ones({8}));
  expect_error([&] { load_state_dict(*layer, extra, true, "ckpt.pth"); }, "unexpected key 'bn.weight'");
  expect_error([] { read_tensor_dict("/nonexistent/file.pt"); }, "/nonexistent/file.pt");
}

}  // namespace
