// bench --profile's table: operator self times from a Chrome trace (children subtracted per thread).
#include <gtest/gtest.h>

#include "posekd/train/bench.h"

TEST(BenchProfile, SelfTimesSubtractNestedCallsPerThread) {
  const std::string trace = R"([
    {"name": "aten::conv2d", "ph": "X", "ts": 0, "dur": 100, "tid": 1},
    {"name": "aten::mkldnn_convolution", "ph": "X", "ts": 10, "dur": 60, "tid": 1},
    {"name": "aten::empty", "ph": "X", "ts": 12, "dur": 5, "tid": 1},
    {"name": "aten::add_", "ph": "X", "ts": 80, "dur": 10, "tid": 1},
    {"name": "aten::add_", "ph": "X", "ts": 0, "dur": 30, "tid": 2},
    {"name": "ignored", "ph": "s", "ts": 0, "tid": 1}
  ])";
  const auto ops = posekd::train::self_times_from_trace(trace);
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[0].name, "aten::mkldnn_convolution");  // 60 - 5
  EXPECT_DOUBLE_EQ(ops[0].self_us, 55);
  EXPECT_EQ(ops[1].name, "aten::add_");  // 10 on thread 1 + 30 on thread 2
  EXPECT_DOUBLE_EQ(ops[1].self_us, 40);
  EXPECT_EQ(ops[1].calls, 2);
  EXPECT_EQ(ops[2].name, "aten::conv2d");  // 100 - 60 - 10
  EXPECT_DOUBLE_EQ(ops[2].self_us, 30);
  EXPECT_DOUBLE_EQ(ops[2].total_us, 100);
  EXPECT_EQ(ops[3].name, "aten::empty");
  EXPECT_DOUBLE_EQ(ops[3].self_us, 5);
}
