// Two (or more) ranks as threads of the test process, connected over loopback Gloo: what the
// distributed and SyncBN tests run their ranks on.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "posekd/train/distributed.h"
#include "posekd/train/launch.h"

namespace posekd::testing {

// Runs fn(dist) on `world` ranks (threads) connected through a fresh loopback port; a rank's
// exception fails the test with the rank named.
inline void run_loopback_ranks(int world, const std::function<void(train::Distributed&)>& fn) {
  const int port = train::free_local_port();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        train::DistOptions o;
        o.rank = r;
        o.world_size = world;
        o.master_addr = "127.0.0.1";
        o.master_port = port;
        o.timeout_s = 60;
        train::Distributed d(train::resolve_dist_options(o));
        fn(d);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
}

}  // namespace posekd::testing
