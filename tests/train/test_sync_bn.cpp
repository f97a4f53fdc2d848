// SyncBN and the calibration over ranks (two ranks as two threads on loopback Gloo): the forward,
// backward and running statistics of ai8x::sync_batch_norm on each rank's half equal whole-batch
// BatchNorm, and the QAT calibration of two half batches gives one process's histograms and thresholds.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>

#include "posekd/ai8x/policy.h"
#include "posekd/ai8x/sync_batchnorm.h"
#include "posekd/model/student.h"
#include "posekd/train/distributed.h"
#include "posekd/train/launch.h"
#include "train/loopback_ranks.h"

namespace {
using namespace posekd::train;

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

torch::nn::BatchNorm2d make_bn(int64_t c) {
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(c).eps(1e-5).momentum(0.05));
  torch::NoGradGuard ng;
  bn->weight.copy_(torch::linspace(0.5, 1.5, c));
  bn->bias.copy_(torch::linspace(-0.3, 0.4, c));
  bn->running_mean.copy_(torch::linspace(-0.1, 0.1, c));
  bn->running_var.copy_(torch::linspace(0.9, 1.2, c));
  return bn;
}

TEST(SyncBatchNorm, TwoRanksEqualWholeBatchBatchNormForwardBackwardAndRunningStats) {
  const int64_t n = 6, c = 5;
  torch::manual_seed(11);
  // Channels with an offset and different spreads; two steps (the second one uses new inputs).
  std::vector<torch::Tensor> xs, ts;
  for (int s = 0; s < 2; ++s) {
    xs.push_back(torch::randn({n, c, 7, 3}) * torch::linspace(0.2, 4.0, c).view({1, c, 1, 1}) + 3.0);
    ts.push_back(torch::randn({n, c, 7, 3}));
  }
  // The reference: one BatchNorm over the whole batch, loss = sum(y * t).
  auto ref = make_bn(c);
  std::vector<torch::Tensor> ry, rgx;
  torch::Tensor rgw, rgb;
  for (int s = 0; s < 2; ++s) {
    ref->zero_grad();
    torch::Tensor x = xs[s].clone().requires_grad_(true);
    torch::Tensor y = ref->forward(x);
    (y * ts[s]).sum().backward();
    ry.push_back(y.detach());
    rgx.push_back(x.grad());
    rgw = ref->weight.grad().clone();
    rgb = ref->bias.grad().clone();
  }

  struct Got {
    std::vector<torch::Tensor> y, gx;
    torch::Tensor gw, gb, rm, rv, nbt;
  };
  std::vector<Got> got(2);
  std::vector<torch::nn::BatchNorm2d> bns{make_bn(c), make_bn(c)};
  posekd::testing::run_loopback_ranks(2, [&](Distributed& d) {
    const int r = d.rank();
    auto& bn = bns[static_cast<size_t>(r)];
    Got& g = got[static_cast<size_t>(r)];
    for (int s = 0; s < 2; ++s) {
      bn->zero_grad();
      // Uneven shards (4 + 2 images): the global count, not the world size, normalises.
      const int64_t at = r == 0 ? 0 : 4, len = r == 0 ? 4 : 2;
      torch::Tensor x = xs[s].narrow(0, at, len).clone().requires_grad_(true);
      torch::Tensor y = posekd::ai8x::sync_batch_norm(x, *bn, d);
      (y * ts[s].narrow(0, at, len)).sum().backward();
      g.y.push_back(y.detach());
      g.gx.push_back(x.grad());
    }
    g.gw = bn->weight.grad().clone();
    g.gb = bn->bias.grad().clone();
    g.rm = bn->running_mean.clone();
    g.rv = bn->running_var.clone();
    g.nbt = bn->num_batches_tracked.clone();
  });
  ASSERT_EQ(got[0].y.size(), 2u);
  ASSERT_EQ(got[1].y.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    const torch::Tensor y = torch::cat({got[0].y[s], got[1].y[s]});
    const torch::Tensor gx = torch::cat({got[0].gx[s], got[1].gx[s]});
    EXPECT_LT(max_abs_diff(y, ry[s]), 1e-5) << "step " << s;
    EXPECT_LT(max_abs_diff(gx, rgx[s]), 1e-5) << "step " << s;
    // Per-rank statistics would give a visibly different output: the comparison can fail.
    torch::NoGradGuard ng;
    const torch::Tensor per_rank =
        torch::batch_norm(xs[s].narrow(0, 4, 2), ref->weight, ref->bias, {}, {}, true, 0.1, 1e-5, false);
    EXPECT_GT(max_abs_diff(got[1].y[s], per_rank), 1e-2);
  }
  // Weight and bias gradients: each rank's sum; over the ranks, the whole batch's (sums of 126
  // products per channel, up to ~20 here: within 1e-5 relative to the largest).
  const double wscale = rgw.abs().max().item<double>(), bscale = rgb.abs().max().item<double>();
  EXPECT_GT(wscale, 1.0);
  EXPECT_LT(max_abs_diff(got[0].gw + got[1].gw, rgw), 1e-5 * wscale);
  EXPECT_LT(max_abs_diff(got[0].gb + got[1].gb, rgb), 1e-5 * std::max(1.0, bscale));
  EXPECT_GT(max_abs_diff(got[0].gw, rgw), 1e-2);
  // Running statistics: identical on both ranks, equal to the whole batch's (unbiased variance).
  EXPECT_TRUE(torch::equal(got[0].rm, got[1].rm));
  EXPECT_TRUE(torch::equal(got[0].rv, got[1].rv));
  EXPECT_LT(max_abs_diff(got[0].rm, ref->running_mean), 1e-6);
  EXPECT_LT(max_abs_diff(got[0].rv, ref->running_var), 1e-5);
  EXPECT_EQ(got[0].nbt.item<int64_t>(), 2);
  EXPECT_EQ(ref->num_batches_tracked.item<int64_t>(), 2);
}

TEST(SyncBatchNorm, CalibrationOverTwoRanksGivesOneProcessHistogramsAndThresholds) {
  const posekd::ai8x::QatPolicy policy;
  torch::manual_seed(5);
  auto one = posekd::model::make_student("ai85pose");
  const torch::Tensor x = torch::randn({4, 12, 64, 64});
  std::vector<std::shared_ptr<posekd::model::Student>> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.push_back(posekd::model::make_student("ai85pose"));
    torch::NoGradGuard ng;
    auto src = one->parameters();
    auto dst = ranks.back()->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    auto sb = one->buffers();
    auto db = ranks.back()->buffers();
    for (size_t i = 0; i < sb.size(); ++i) db[i].copy_(sb[i]);
  }
  // Two calibration batches: the whole batch and its reverse (different per-batch ranges).
  auto batches = [&](int r, int world) {
    std::vector<torch::Tensor> v{x, x.flip(0)};
    for (auto& b : v) b = b.narrow(0, r * 4 / world, 4 / world).contiguous();
    return v;
  };
  auto feed = [](std::vector<torch::Tensor> v) {
    auto i = std::make_shared<size_t>(0);
    return [v, i]() -> std::optional<torch::Tensor> {
      if (*i >= v.size()) return std::nullopt;
      return v[(*i)++];
    };
  };
  posekd::model::fuse_and_calibrate(*one, feed(batches(0, 1)), policy);
  posekd::testing::run_loopback_ranks(2, [&](Distributed& d) {
    posekd::model::fuse_and_calibrate(*ranks[static_cast<size_t>(d.rank())], feed(batches(d.rank(), 2)), policy, &d);
  });
  auto want = one->layers();
  int nonzero = 0;
  for (int r = 0; r < 2; ++r) {
    auto got = ranks[static_cast<size_t>(r)]->layers();
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i]->activation_threshold.item<float>(), want[i]->activation_threshold.item<float>())
          << "rank " << r << " layer " << one->layer_names()[i];
      EXPECT_EQ(got[i]->final_scale.item<float>(), want[i]->final_scale.item<float>());
      EXPECT_LT(max_abs_diff(got[i]->bias(), want[i]->bias()), 1e-6);
      nonzero += want[i]->activation_threshold.item<float>() != 0;
    }
  }
  EXPECT_GT(nonzero, 0);  // the thresholds are not all trivially zero
}

TEST(SyncBatchNorm, LayerCalibrationHistogramsOverTwoRanksAreTheWholeBatchHistograms) {
  using posekd::ai8x::Layer;
  torch::manual_seed(8);
  const torch::Tensor x = torch::randn({4, 8, 9, 9});
  Layer one(posekd::ai8x::fused_conv2d_relu(8, 6, 3, 1));
  std::vector<std::shared_ptr<Layer>> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.push_back(std::make_shared<Layer>(posekd::ai8x::fused_conv2d_relu(8, 6, 3, 1)));
    torch::NoGradGuard ng;
    ranks.back()->weight().copy_(one.weight());
    ranks.back()->bias().copy_(one.bias());
  }
  torch::NoGradGuard ng;
  one.eval();
  one.set_calibration(true);
  one.forward(x);
  one.forward(x * 2.0);
  posekd::testing::run_loopback_ranks(2, [&](Distributed& d) {
    Layer& l = *ranks[static_cast<size_t>(d.rank())];
    l.eval();
    l.set_calibration(true, &d);
    l.forward(x.narrow(0, 2 * d.rank(), 2));
    l.forward(x.narrow(0, 2 * d.rank(), 2) * 2.0);
    l.set_calibration(false);
  });
  const auto& want = one.calibration_batches();
  ASSERT_EQ(want.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    const auto& got = ranks[static_cast<size_t>(r)]->calibration_batches();
    ASSERT_EQ(got.size(), 2u);
    for (size_t b = 0; b < 2; ++b) {
      EXPECT_EQ(got[b].lo, want[b].lo);
      EXPECT_EQ(got[b].hi, want[b].hi);
      EXPECT_TRUE(torch::equal(got[b].counts, want[b].counts)) << "rank " << r << " batch " << b;
    }
  }
  // One rank's half alone has another range (so the reduction is what makes them equal).
  const torch::Tensor half = ranks[0]->forward(x.narrow(0, 0, 2));
  const torch::Tensor other = ranks[1]->forward(x.narrow(0, 2, 2));
  EXPECT_NE(half.max().item<float>(), other.max().item<float>());
  EXPECT_EQ(std::max(half.max().item<float>(), other.max().item<float>()), want[0].hi);
}

}  // namespace
