// Distributed building blocks, with two ranks as two threads of this process on loopback: options
// from the torchrun environment, broadcast of every dtype, and GradSync's bucketed gradient average
// equal to the gradient of one process on the whole batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <thread>

#include "posekd/core/error.h"
#include "posekd/train/distributed.h"
#include "posekd/train/launch.h"
#include "train/loopback_ranks.h"

namespace {
using namespace posekd::train;

struct EnvGuard {
  std::vector<std::string> names{"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
  EnvGuard() { clear(); }
  ~EnvGuard() { clear(); }
  void clear() {
    for (const auto& n : names) ::unsetenv(n.c_str());
  }
};

TEST(DistOptions, TorchrunEnvironmentThenFlagsThenDefaults) {
  EnvGuard g;
  DistOptions d = resolve_dist_options({});
  EXPECT_EQ(d.world_size, 1);
  EXPECT_EQ(d.rank, 0);
  EXPECT_EQ(d.master_addr, "127.0.0.1");
  EXPECT_EQ(d.master_port, 29500);
  ::setenv("RANK", "3", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  ::setenv("MASTER_ADDR", "10.0.0.7", 1);
  ::setenv("MASTER_PORT", "23456", 1);
  d = resolve_dist_options({});
  EXPECT_EQ(d.rank, 3);
  EXPECT_EQ(d.world_size, 4);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.local_world_size, 2);
  EXPECT_EQ(d.master_addr, "10.0.0.7");
  EXPECT_EQ(d.master_port, 23456);
  DistOptions flags;
  flags.rank = 0;
  flags.master_port = 1234;
  d = resolve_dist_options(flags);
  EXPECT_EQ(d.rank, 0);
  EXPECT_EQ(d.master_port, 1234);
  ::setenv("RANK", "4", 1);
  EXPECT_THROW(resolve_dist_options({}), posekd::Error);  // rank outside [0, 4)
  ::setenv("RANK", "two", 1);
  EXPECT_THROW(resolve_dist_options({}), posekd::Error);
  EXPECT_EQ(per_rank_batch(8, 2), 4);
  EXPECT_THROW(per_rank_batch(7, 2), posekd::Error);
  EXPECT_THROW(per_rank_batch(1, 2), posekd::Error);
}

TEST(Distributed, BroadcastSumMaxAndBytes) {
  posekd::testing::run_loopback_ranks(2, [](Distributed& d) {
    const int r = d.rank();
    std::vector<torch::Tensor> t{torch::full({3}, 1.5f + r), torch::full({2}, int64_t{10 + r}),
                                 torch::tensor({r == 0, r == 1}), torch::full({2, 2}, uint8_t(200 + r), torch::kUInt8)};
    d.broadcast(t);
    EXPECT_TRUE(torch::equal(t[0], torch::full({3}, 1.5f)));
    EXPECT_TRUE(torch::equal(t[1], torch::full({2}, int64_t{10})));
    EXPECT_TRUE(torch::equal(t[2], torch::tensor({true, false})));
    EXPECT_TRUE(torch::equal(t[3], torch::full({2, 2}, uint8_t(200), torch::kUInt8)));
    EXPECT_EQ(d.sum({1.0, double(r)}), (std::vector<double>{2.0, 1.0}));
    EXPECT_EQ(d.max({double(r), -double(r)}), (std::vector<double>{1.0, 0.0}));
    const std::string bytes = r == 0 ? std::string("checkpoint\0bytes\xff", 17) : std::string();
    EXPECT_EQ(d.broadcast_bytes(bytes), std::string("checkpoint\0bytes\xff", 17));
    d.barrier();
  });
}

// A small network with an unused parameter (its gradient must come out as zero on every rank).
struct NetImpl : torch::nn::Module {
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc{nullptr}, unused{nullptr};
  NetImpl() {
    // registered first: GradSync fills buckets from the last parameter, so it lands in the last bucket
    unused = register_module("unused", torch::nn::Linear(2, 2));
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    fc = register_module("fc", torch::nn::Linear(8 * 6 * 6, 5));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc(torch::relu(conv(x)).flatten(1)); }
};
TORCH_MODULE(Net);

// The training loss's normalisation: sum of squares / 2 / (this rank's batch).
torch::Tensor loss_of(Net& net, const torch::Tensor& x, const torch::Tensor& y) {
  return (net->forward(x) - y).pow(2).sum() / 2.0 / x.size(0);
}

TEST(GradSync, AverageOverRanksEqualsTheWholeBatchGradient) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({8, 3, 6, 6}), y = torch::randn({8, 5});
  torch::manual_seed(7);
  Net ref;
  loss_of(ref, x, y).backward();
  std::vector<torch::Tensor> want;
  for (auto& p : ref->parameters()) want.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));

  std::vector<std::vector<torch::Tensor>> got(2);
  std::vector<int> overlap(2), buckets(2);
  std::vector<Net> nets;  // made here: the global RNG is not for concurrent seeding
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(7);
    nets.emplace_back();
  }
  posekd::testing::run_loopback_ranks(2, [&](Distributed& d) {
    Net net = nets[static_cast<size_t>(d.rank())];
    GradSync sync(d, net->parameters(), /*bucket_bytes=*/256);  // many small buckets
    for (int step = 0; step < 2; ++step) {                      // the second step shows that the buckets reset
      for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
      loss_of(net, x.narrow(0, 4 * d.rank(), 4), y.narrow(0, 4 * d.rank(), 4)).backward();
      sync.finish();
    }
    auto& mine = got[static_cast<size_t>(d.rank())];
    for (auto& p : net->parameters()) mine.push_back(p.grad().clone());
    overlap[static_cast<size_t>(d.rank())] = sync.launched_during_backward();
    buckets[static_cast<size_t>(d.rank())] = sync.num_buckets();
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(got[static_cast<size_t>(r)].size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_TRUE(torch::allclose(got[static_cast<size_t>(r)][i], want[i], 1e-5, 1e-6))
          << "rank " << r << " param " << i;
    EXPECT_GT(buckets[static_cast<size_t>(r)], 2);
    // Buckets that became complete during backward were sent before backward returned.
    EXPECT_GE(overlap[static_cast<size_t>(r)], 1);
  }
  // The unused layer: zero, not undefined, on both ranks.
  EXPECT_TRUE(torch::equal(got[0][0], torch::zeros_like(got[0][0])));
  EXPECT_TRUE(torch::equal(got[1][1], torch::zeros_like(got[1][1])));
}

TEST(Distributed, ALostRankIsAClearErrorNotAHang) {
  const int port = free_local_port();
  std::string error;
  std::thread r1([&] {
    DistOptions o;
    o.rank = 1;
    o.world_size = 2;
    o.master_port = port;
    o.timeout_s = 30;
    Distributed d(resolve_dist_options(o));
    d.barrier();
    // rank 1 leaves without taking part in the next collective (its sockets close)
  });
  {
    DistOptions o;
    o.rank = 0;
    o.world_size = 2;
    o.master_port = port;
    o.timeout_s = 30;
    Distributed d(resolve_dist_options(o));
    d.barrier();
    r1.join();
    const auto t0 = std::chrono::steady_clock::now();
    try {
      torch::Tensor t = torch::ones({4});
      d.allreduce_sum(t);
    } catch (const posekd::Error& e) {
      error = e.what();
    }
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  }
  EXPECT_NE(error.find("rank 0 lost contact with the other ranks"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << "one line: " << error;
}

}  // namespace
