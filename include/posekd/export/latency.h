// Accelerator latency of a network, with ai8xize's latency model (ai8x-synthesis izer/latency.py):
// cycles per layer from its pooled input, output and kernel geometry (reading a padded or data
// element, writing the tensor RAM, one output write per output channel and column and pass), the
// layers one after another plus one start-up cycle. At the 50 MHz CNN clock: cycles / 50,000 ms.
// It is an estimate of ai8xize (which prints the same figure), not a measurement.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "posekd/export/fit.h"

namespace posekd::deploy {

struct LatencyLayer {
  std::int64_t pooled_h = 0, pooled_w = 0;  // input rows/columns after pooling
  std::int64_t pool = 1;                    // pooling window (1: none)
  std::int64_t out_channels = 0;
  std::int64_t kernel = 3, padding = 1;
  std::int64_t multipass = 1;          // passes over the input channels (ceil(cin / 64))
  std::int64_t elements = 1;           // operands of an element-wise layer
  bool passthrough = false;            // no convolution (element-wise / pooling only)
  std::int64_t pass_out_channels = 1;  // passthrough: output time slots
  bool flatten = false, streaming = false;
};

// Cycles of one layer (pool first, as ai8xize computes posekd's conv layers).
std::int64_t layer_latency_cycles(const LatencyLayer& l);

struct NetworkLatency {
  std::vector<std::string> names;
  std::vector<std::int64_t> cycles;
  std::int64_t startup = 1;
  std::int64_t total = 0;  // startup + sum
  double ms(double clock_mhz = 50.0) const { return static_cast<double>(total) / (clock_mhz * 1000.0); }
};

// The layers of a fit report (conv layers, pooling first, one pass per 64 input channels).
NetworkLatency network_latency(const FitReport& fit);

// The per-layer cycles and the total at the 50 MHz CNN clock, as text.
std::string format_latency(const NetworkLatency& lat);

// The pose decoding on the Arm core (firmware/pose_decode.c), as budgeted in docs/deploy.md: the
// instructions `make firmware-test` counts for a 4-person frame (QEMU, -icount) times the Cortex-M4F
// cycles per instruction of the executed mix (each instruction at its TRM timing, no overlap of
// loads: a conservative 1.75), at 100 MHz.
inline constexpr long kDecodeInstructions4People = 264560;
inline constexpr double kDecodeCyclesPerInstruction = 1.75;
std::string format_decode_estimate();

}  // namespace posekd::deploy
