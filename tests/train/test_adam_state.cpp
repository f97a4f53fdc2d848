#include <gtest/gtest.h>
#include <torch/torch.h>

#include "posekd/core/error.h"
#include "posekd/train/adam_state.h"

using namespace posekd::train;

namespace {
std::vector<torch::Tensor> make_params() {
  torch::manual_seed(3);
  return {torch::randn({3, 2}, torch::requires_grad()), torch::zeros({1}),  // second: no grad, like ai8x scalars
          torch::randn({4}, torch::requires_grad())};
}
void step(torch::optim::Adam& opt, std::vector<torch::Tensor>& ps, int k) {
  opt.zero_grad();
  auto loss = (ps[0] * (k + 1)).pow(2).sum() + ps[2].sin().sum();
  loss.backward();
  opt.step();
}
}  // namespace

TEST(AdamState, SnapshotRestoreContinuesBitIdentically) {
  auto a = make_params();
  torch::optim::Adam oa(a, torch::optim::AdamOptions(1e-2));
  for (int k = 0; k < 3; ++k) step(oa, a, k);
  auto snap = snapshot_adam(oa, a);
  EXPECT_EQ(snap.num_params, 3);
  EXPECT_EQ(snap.state.size(), 2u);  // the no-grad parameter has no state, as in Python
  EXPECT_EQ(snap.state.count(1), 0u);
  EXPECT_EQ(snap.state.at(0).step, 3);

  // b: a copy of a's weights with a restored optimizer
  std::vector<torch::Tensor> b;
  for (auto& p : a) b.push_back(p.detach().clone().set_requires_grad(p.requires_grad()));
  torch::optim::Adam ob(b, torch::optim::AdamOptions(99));
  restore_adam(ob, b, snap, "test");
  for (int k = 3; k < 6; ++k) {
    step(oa, a, k);
    step(ob, b, k);
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
}

TEST(AdamState, ForeignStateIsAClearError) {
  auto a = make_params();
  torch::optim::Adam oa(a, torch::optim::AdamOptions(1e-2));
  step(oa, a, 0);
  auto snap = snapshot_adam(oa, a);
  snap.state.at(0).exp_avg = torch::zeros({5});
  try {
    restore_adam(oa, a, snap, "ckpt.pth");
    FAIL() << "expected an error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt.pth: optimizer state of parameter 0 has the wrong shape"),
              std::string::npos);
  }
  snap.num_params = 7;
  EXPECT_THROW(restore_adam(oa, a, snap, "ckpt.pth"), posekd::Error);
}
