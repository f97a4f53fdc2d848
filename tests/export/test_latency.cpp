// ai8xize's latency model (latency.h): the layer cases of ai8x-synthesis' own latency test, and the
// estimate ai8xize printed for ai85pose on MAX78000 (835,229 cycles).
#include <gtest/gtest.h>

#include "posekd/export/fit.h"
#include "posekd/export/latency.h"
#include "posekd/model/student.h"

using namespace posekd::deploy;

namespace {
LatencyLayer lat_layer(std::int64_t pooled, std::int64_t cout, std::int64_t k, std::int64_t pad, std::int64_t pool = 1,
                       std::int64_t multipass = 1) {
  LatencyLayer l;
  l.pooled_h = l.pooled_w = pooled;
  l.out_channels = cout;
  l.kernel = k;
  l.padding = pad;
  l.pool = pool;
  l.multipass = multipass;
  return l;
}
}  // namespace

TEST(Latency, LayerCasesOfTheSynthesisTool) {
  // cycles of one layer (ai8xize adds 1 start-up cycle to each of its single-layer totals)
  EXPECT_EQ(layer_latency_cycles(lat_layer(10, 16, 3, 2, 2)), 3049 - 1);    // 64x20x20, max 2x2 s2, pad 2
  EXPECT_EQ(layer_latency_cycles(lat_layer(13, 32, 3, 1, 16)), 49010 - 1);  // 3x65x65, max 16x16 s4
  EXPECT_EQ(layer_latency_cycles(lat_layer(32, 64, 3, 1)), 67981 - 1);      // cifar 3x32x32
  EXPECT_EQ(layer_latency_cycles(lat_layer(32, 64, 3, 0)), 59773 - 1);      // pad 0
  EXPECT_EQ(layer_latency_cycles(lat_layer(4, 16, 3, 1, 2, 2)), 773 - 1);   // 128 channels: 2 passes
  EXPECT_EQ(layer_latency_cycles(lat_layer(11, 1, 3, 0, 1, 2)), 687 - 1);   // one output channel
  EXPECT_EQ(layer_latency_cycles(lat_layer(28, 8, 3, 1)), 8189 - 1);        // mnist
  EXPECT_EQ(layer_latency_cycles(lat_layer(1, 1, 3, 1)), 29 - 1);           // a single byte
  auto flat = lat_layer(8, 10, 1, 0);
  flat.flatten = true;
  EXPECT_EQ(layer_latency_cycles(flat), 770 - 1);
  auto add = lat_layer(12, 4, 1, 0);
  add.passthrough = true;
  add.elements = 2;
  EXPECT_EQ(layer_latency_cycles(add), 721 - 1);  // element-wise add, no convolution
  auto stream = lat_layer(32, 64, 3, 1);
  stream.streaming = true;
  EXPECT_EQ(layer_latency_cycles(stream), (15 * 67980 + 9) / 10);
  EXPECT_THROW(layer_latency_cycles(lat_layer(0, 1, 3, 1)), posekd::Error);
}

TEST(Latency, Ai85PoseOnMax78000IsWhatAi8xizeEstimates) {
  auto s = posekd::model::make_student("ai85pose");
  const auto lat = network_latency(check_fit(*s, device_limits("MAX78000")));
  const std::vector<std::int64_t> want = {140044, 140044, 271116, 71052, 67980, 17868, 17100, 17100,
                                          17100,  17100,  17100,  13004, 5376,  13004, 10240};
  EXPECT_EQ(lat.cycles, want);
  EXPECT_EQ(lat.names.front(), "conv1");
  EXPECT_EQ(lat.names.back(), "paf_out");
  EXPECT_EQ(lat.startup, 1);
  EXPECT_EQ(lat.total, 835229);
  EXPECT_NEAR(lat.ms(50.0), 16.70458, 1e-9);
  const auto text = format_latency(lat);
  EXPECT_NE(text.find("835229"), std::string::npos) << text;
  EXPECT_NE(text.find("16.7 ms"), std::string::npos) << text;
  const auto dec = format_decode_estimate();
  EXPECT_NE(dec.find("0.26M instructions for 4 people, ~0.46M cycles = ~4.6 ms at 100 MHz"), std::string::npos) << dec;
}
