// The students against fixtures/ai8x/student_{float,qat,quantized}.pt (real Python ai8x output).
#include <gtest/gtest.h>

#include "posekd/ai8x/calibration.h"
#include "posekd/ai8x/quantizers.h"
#include "posekd/ai8x/simulate.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/error.h"
#include "posekd/model/student.h"
#include "test_util.h"

using namespace posekd;
using namespace posekd::ai8x;
using posekd::model::make_student;

namespace {

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto m = b.abs().max().item<double>();
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() / std::max(m, 1e-30);
}

const c10::impl::GenericDict& fixture(const std::string& name) {
  static std::map<std::string, c10::impl::GenericDict> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    auto p = posekd::testing::fixture_path("ai8x/" + name);
    it = cache.emplace(name, read_tensor_dict(p.string())).first;
  }
  return it->second;
}

void expect_state(const StateDict& got, const StateDict& want, double tol, bool exact_values) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    SCOPED_TRACE(want[k].first);
    ASSERT_EQ(got[k].first, want[k].first);
    EXPECT_EQ(got[k].second.scalar_type(), want[k].second.scalar_type());
    ASSERT_EQ(got[k].second.sizes(), want[k].second.sizes());
    if (exact_values || !got[k].second.is_floating_point()) {
      EXPECT_TRUE(got[k].second.equal(want[k].second));
    } else {
      EXPECT_LE(rel_err(got[k].second, want[k].second), tol);
    }
  }
}

// grads of every requires_grad parameter, keyed like the state dict
void expect_grads(model::Student& s, const c10::impl::GenericDict& want, size_t expected_count) {
  size_t n = 0;
  for (const auto& kv : s.named_parameters()) {
    if (!kv.value().requires_grad()) continue;
    SCOPED_TRACE(kv.key());
    auto w = dict_tensor(want, kv.key());
    ASSERT_TRUE(kv.value().grad().defined());
    const bool bn_bias_grad = kv.key().find(".op.bias") != std::string::npos &&
                              s.named_parameters().contains(kv.key().substr(0, kv.key().find('.')) + ".bn.weight") &&
                              s.is_training();
    if (bn_bias_grad) {  // mathematically 0 under train-mode BN: compare on the weight-grad scale
      auto wg = dict_tensor(want, kv.key().substr(0, kv.key().find('.')) + ".op.weight").abs().max().item<double>();
      EXPECT_LE((kv.value().grad() - w).abs().max().item<double>(), 1e-5 * wg);
    } else {
      EXPECT_LT(rel_err(kv.value().grad(), w), 1e-5);
    }
    ++n;
  }
  EXPECT_EQ(n, expected_count);
}

TEST(Student, SeedFloatMatchesPython) {
  POSEKD_REQUIRE_FIXTURE(path, "ai8x/student_float.pt");
  const auto& f = fixture("student_float.pt");
  auto s = make_student("seed");
  int64_t count = 0;
  for (const auto& p : s->parameters()) count += p.numel();
  EXPECT_EQ(count, 659136);
  EXPECT_EQ(count, dict_tensor(f, "param_count").item<int64_t>());
  auto want_sd = to_state_dict(dict_dict(f, "state_dict"));
  {
    // names, dtypes, shapes and order of a freshly built model
    auto got = state_dict(*s);
    ASSERT_EQ(got.size(), want_sd.size());
    for (size_t k = 0; k < got.size(); ++k) {
      EXPECT_EQ(got[k].first, want_sd[k].first);
      EXPECT_EQ(got[k].second.scalar_type(), want_sd[k].second.scalar_type()) << got[k].first;
      EXPECT_EQ(got[k].second.sizes(), want_sd[k].second.sizes()) << got[k].first;
    }
  }
  load_state_dict(*s, want_sd);
  auto input = dict_tensor(f, "input");
  auto gh = dict_tensor(f, "grad_heat"), gp = dict_tensor(f, "grad_paf");
  for (const char* mode : {"eval", "train"}) {
    SCOPED_TRACE(mode);
    s->train(std::string(mode) == "train");
    s->zero_grad();
    auto out = s->forward(input);
    EXPECT_LT(rel_err(out.heat, dict_tensor(f, std::string(mode) + "/heat")), 1e-5);
    EXPECT_LT(rel_err(out.paf, dict_tensor(f, std::string(mode) + "/paf")), 1e-5);
    ((out.heat * gh).sum() + (out.paf * gp).sum()).backward();
    expect_grads(*s, dict_dict(f, std::string("grads_") + mode), 56);
  }
  auto bn_after = dict_dict(f, "bn_state_after_train_forward");
  EXPECT_EQ(bn_after.size(), 39u);
  auto got = state_dict(*s);
  for (const auto& kv : bn_after) {
    SCOPED_TRACE(kv.key().toStringRef());
    const auto& g = find(got, kv.key().toStringRef(), "model");
    if (g.is_floating_point())
      EXPECT_LT(rel_err(g, kv.value().toTensor()), 1e-5);
    else
      EXPECT_TRUE(g.equal(kv.value().toTensor()));
  }
}

TEST(Student, SeedQatTransitionMatchesPython) {
  POSEKD_REQUIRE_FIXTURE(fpath, "ai8x/student_float.pt");
  POSEKD_REQUIRE_FIXTURE(qpath, "ai8x/student_qat.pt");
  const auto& f = fixture("student_float.pt");
  const auto& q = fixture("student_qat.pt");
  auto s = make_student("seed");
  load_state_dict(*s, to_state_dict(dict_dict(f, "state_dict")));
  s->train(true);  // fuse_and_calibrate must restore this
  auto calib = dict_tensor(q, "calibration_inputs");
  int64_t next = 0;
  QatPolicy policy;
  policy.start_epoch = 30;
  // The trainer's entry point: fuse, calibrate on the 4 stored batches, apply_scales, initiate_qat.
  model::fuse_and_calibrate(
      *s,
      [&]() -> std::optional<torch::Tensor> {
        if (next == calib.size(0)) return std::nullopt;
        return calib[next++];
      },
      policy);
  EXPECT_EQ(next, 4);
  EXPECT_TRUE(s->is_training());
  // Reconstruct absolute thresholds: T[L] = thr[L] + T[prev(L)] (first layer: absolute).
  auto layers = s->layers();
  auto prev = s->producers();
  auto thr_abs = dict_dict(q, "thresholds_abs");
  std::vector<float> T(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    T[i] = layers[i]->activation_threshold.item<float>() + (prev[i].empty() ? 0.f : T[prev[i][0]]);
    EXPECT_EQ(T[i], dict_tensor(thr_abs, s->layer_names()[i]).item<float>()) << s->layer_names()[i];
  }
  // Full QAT state: thresholds, final scales, flags exact; biases exact given the fused bias.
  auto want = to_state_dict(dict_dict(q, "state_dict"));
  expect_state(state_dict(*s), want, 1e-6, false);
  auto got = state_dict(*s);
  auto fused = to_state_dict(dict_dict(q, "fused_state_dict"));
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& n = s->layer_names()[i];
    float tp = prev[i].empty() ? 0.f : T[prev[i][0]];
    // apply_scales is exact division of the fused bias by 2^T[prev]
    auto scaled = find(fused, n + ".op.bias", "fixture") / std::ldexp(1.0, static_cast<int>(tp));
    EXPECT_TRUE(scaled.equal(find(want, n + ".op.bias", "fixture"))) << n;
  }
  // QAT forward (exact) and gradients, from exactly the Python QAT state.
  load_state_dict(*s, want);
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(layers[i]->current_output_shift(),
              dict_tensor(q, "qat_output_shift_from_weights/" + s->layer_names()[i]).item<float>());
  }
  s->zero_grad();
  auto out = s->forward(dict_tensor(q, "input"));
  EXPECT_TRUE(out.heat.equal(dict_tensor(q, "train/heat")));
  EXPECT_TRUE(out.paf.equal(dict_tensor(q, "train/paf")));
  ((out.heat * dict_tensor(q, "grad_heat")).sum() + (out.paf * dict_tensor(q, "grad_paf")).sum()).backward();
  expect_grads(*s, dict_dict(q, "grads"), 30);
}

TEST(Student, SeedSimulateAndIntegerInferenceAreBitExact) {
  POSEKD_REQUIRE_FIXTURE(path, "ai8x/student_quantized.pt");
  const auto& d = fixture("student_quantized.pt");
  auto quantized = to_state_dict(dict_dict(d, "quantized_state_dict"));
  auto x = dict_tensor(d, "input_int");
  // 1. the integer CPU path
  auto s = make_student("seed");
  auto is = model::integer_student(*s, quantized);
  auto io = model::integer_forward(is, x, false);
  EXPECT_TRUE(io.heat.to(torch::kFloat).equal(dict_tensor(d, "heat_int")));
  EXPECT_TRUE(io.paf.to(torch::kFloat).equal(dict_tensor(d, "paf_int")));
  auto one = model::integer_forward(is, x.slice(0, 0, 1), true);
  auto acts = dict_dict(d, "activations_int_sample0");
  EXPECT_EQ(one.activations.size(), acts.size());
  for (const auto& kv : acts) {
    SCOPED_TRACE(kv.key().toStringRef());
    const auto& a = one.activations.at(kv.key().toStringRef());
    EXPECT_EQ(a.scalar_type(), kv.value().toTensor().scalar_type());
    EXPECT_TRUE(a[0].equal(kv.value().toTensor()));
  }
  // per-head rescaling (6.1 step 6) gives the QAT float units of student_qat's heads
  POSEKD_REQUIRE_FIXTURE(qpath, "ai8x/student_qat.pt");
  const auto& q = fixture("student_qat.pt");
  EXPECT_TRUE(integer_output_to_float(io.heat, true).to(torch::kFloat).equal(dict_tensor(q, "train/heat")));
  EXPECT_TRUE(integer_output_to_float(io.paf, true).to(torch::kFloat).equal(dict_tensor(q, "train/paf")));

  // 2. the ai8x simulate ("-8") mode of the layers, built as train.py does it
  Device sim;
  sim.simulate = true;
  auto m = make_student("seed", sim);
  for (auto* l : m->layers()) l->init_module(8, true, 1.0);
  m->fuse_bn();
  load_state_dict(*m, quantized, true, "student_quantized.pt");
  QatPolicy policy;
  policy.start_epoch = 30;
  initiate_qat(m->layers(), m->layer_names(), policy);
  expect_state(state_dict(*m), to_state_dict(dict_dict(d, "simulate_model_state_dict")), 0, true);
  m->eval();
  torch::NoGradGuard ng;
  auto out = m->forward(x);
  EXPECT_TRUE(out.heat.equal(dict_tensor(d, "heat_int")));
  EXPECT_TRUE(out.paf.equal(dict_tensor(d, "paf_int")));
}

TEST(Student, Ai85PoseShapesAndBudget) {
  auto s = make_student("ai85pose");
  EXPECT_TRUE(s->folded_input());
  EXPECT_EQ(s->input_shape(), (std::vector<int64_t>{12, 64, 64}));
  EXPECT_EQ(s->layers().size(), 15u);
  EXPECT_EQ(s->layer_names()[8], "cpm1");
  EXPECT_EQ(s->layer_names()[10], "cpm3");
  // ai8x.md 5.3 run C: 384,048 bytes of 8-bit weights, <= 442,368
  EXPECT_EQ(s->weight_bytes(),
            12 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 8 * 64 * 64 * 9 + 2 * 64 * 48 * 9 + 48 * 19 + 48 * 38);
  EXPECT_EQ(s->weight_bytes(), 384048);
  EXPECT_LE(s->weight_bytes(), 442368);
  EXPECT_GT(make_student("seed")->weight_bytes(), 442368);  // the seed model does not fit
  torch::manual_seed(1);
  auto x = fold(torch::rand({2, 3, 128, 128}) * 2 - 1, 2);
  s->eval();
  auto out = s->forward(x);
  EXPECT_EQ(out.heat.sizes(), (std::vector<int64_t>{2, 19, 16, 16}));
  EXPECT_EQ(out.paf.sizes(), (std::vector<int64_t>{2, 38, 16, 16}));
  auto seed = make_student("seed");
  EXPECT_FALSE(seed->folded_input());
  try {
    make_student("resnet");
    ADD_FAILURE();
  } catch (const posekd::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("resnet"), std::string::npos);
    EXPECT_NE(m.find("seed"), std::string::npos);
    EXPECT_NE(m.find("ai85pose"), std::string::npos);
  }
}

TEST(Student, Ai85PoseQatEqualsIntegerInference) {
  // End to end on the deployable arch: calibrate, QAT forward, quantize.py, integer forward.
  torch::manual_seed(5);
  auto s = make_student("ai85pose");
  auto grid = [](std::vector<int64_t> shape) { return torch::randint(-128, 128, shape).to(torch::kFloat) / 128; };
  int n = 0;
  QatPolicy policy;
  policy.start_epoch = 1;
  model::fuse_and_calibrate(
      *s,
      [&]() -> std::optional<torch::Tensor> {
        if (n++ == 1) return std::nullopt;
        return grid({2, 12, 64, 64});
      },
      policy);
  for (auto* l : s->layers()) {
    EXPECT_TRUE(l->quantized());
    EXPECT_FALSE(l->has_bn());
  }
  auto x = grid({2, 12, 64, 64});
  s->eval();
  torch::NoGradGuard ng;
  auto qat = s->forward(x);
  auto quantized = quantize_state_dict(state_dict(*s));
  auto io = model::integer_forward(model::integer_student(*s, quantized), simulate_input(x));
  auto mism = (integer_output_to_float(io.heat, true) != qat.heat.to(torch::kDouble)).sum().item<int64_t>() +
              (integer_output_to_float(io.paf, true) != qat.paf.to(torch::kDouble)).sum().item<int64_t>();
  // grid inputs make every QAT value dyadic and exact in float32, so the two must agree exactly
  EXPECT_EQ(mism, 0) << "QAT float and integer inference disagree";
}

TEST(Student, QatSwitchKeepsTheMapsTheLossSees) {
  // The wide heads apply no output shift (ai8x), so after the switch their raw outputs are the
  // maps times 2^-os; forward_maps undoes it and the maps stay what the float net computed, up to
  // the rounding of weights and activations.
  torch::manual_seed(7);
  auto s = make_student("ai85pose");
  auto x = torch::rand({4, 12, 64, 64}) * 2 - 1;
  s->eval();
  torch::NoGradGuard ng;
  EXPECT_EQ(s->head_output_shifts(), std::make_pair(0, 0));
  const auto before = s->forward_maps(x);
  const auto raw_before = s->forward(x);
  EXPECT_TRUE(torch::equal(before.heat, raw_before.heat));
  int n = 0;
  QatPolicy policy;
  policy.start_epoch = 1;
  model::fuse_and_calibrate(
      *s, [&]() -> std::optional<torch::Tensor> { return n++ < 2 ? std::optional<torch::Tensor>(x) : std::nullopt; },
      policy);
  s->eval();
  const auto [os_a, os_b] = s->head_output_shifts();
  EXPECT_NE(os_a, 0);  // the folded and rescaled weights are scaled to fill the 8-bit grid: here by 2^-2
  EXPECT_NE(os_b, 0);
  const auto raw = s->forward(x);
  const auto maps = s->forward_maps(x);
  EXPECT_TRUE(torch::equal(maps.heat, raw.heat * std::ldexp(1.0, os_a)));
  EXPECT_TRUE(torch::equal(maps.paf, raw.paf * std::ldexp(1.0, os_b)));
  auto rel = [](const torch::Tensor& a, const torch::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); };
  const double e_heat = rel(maps.heat, before.heat), e_paf = rel(maps.paf, before.paf);
  std::printf("relative error after the switch: heat %.3f, paf %.3f (raw: %.1f, %.1f; os %d, %d)\n", e_heat, e_paf,
              rel(raw.heat, before.heat), rel(raw.paf, before.paf), os_a, os_b);
  EXPECT_LT(e_heat, 0.05);  // measured 0.021, 0.017
  EXPECT_LT(e_paf, 0.05);
  // what the loss saw before: 2^-os times the maps (1/4 of them here, a relative error of 0.75)
  EXPECT_NEAR(rel(raw.heat, before.heat), std::abs(std::ldexp(1.0, -os_a) - 1.0), 0.05);
}

TEST(Student, RebuildAdamKeepsWeightAndBiasState) {
  auto s = make_student("ai85pose");
  std::vector<torch::Tensor> trainable;
  for (auto& p : s->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  torch::optim::Adam opt(trainable, torch::optim::AdamOptions(1e-3));
  auto x = torch::rand({1, 12, 64, 64});
  auto out = s->forward(x);
  (out.heat.sum() + out.paf.sum()).backward();
  opt.step();
  for (auto* l : s->layers()) l->fuse_bn();
  std::vector<torch::Tensor> now;
  for (auto& p : s->parameters())
    if (p.requires_grad()) now.push_back(p);
  EXPECT_EQ(now.size(), 30u);
  auto fresh = model::rebuild_adam(opt, now);
  EXPECT_EQ(fresh->state().size(), 30u);
  auto& old_state = opt.state();
  for (auto& p : now) {
    auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
    auto& a = static_cast<torch::optim::AdamParamState&>(*fresh->state().at(key));
    auto& b = static_cast<torch::optim::AdamParamState&>(*old_state.at(key));
    EXPECT_EQ(a.step(), b.step());
    EXPECT_TRUE(a.exp_avg().equal(b.exp_avg()));
    EXPECT_TRUE(a.exp_avg_sq().equal(b.exp_avg_sq()));
  }
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamOptions&>(fresh->defaults()).lr(), 1e-3);
}

}  // namespace
