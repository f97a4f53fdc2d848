#include "posekd/export/latency.h"

#include <fmt/format.h>

#include "posekd/core/error.h"

namespace posekd::deploy {

std::int64_t layer_latency_cycles(const LatencyLayer& l) {
  if (l.pooled_h <= 0 || l.pooled_w <= 0 || l.kernel <= 0 || l.padding < 0 || l.multipass <= 0 || l.elements <= 0 ||
      l.pool <= 0 || l.out_channels <= 0)
    throw Error("layer_latency_cycles: sizes must be positive");
  // One cycle each to read a word, write it to the tensor RAM and write an output.
  constexpr std::int64_t rd = 1, tram = 1, wr = 1;
  const std::int64_t k = l.kernel, pad = l.padding, mp = l.multipass;
  const std::int64_t out_w = l.pooled_w - k + 1 + 2 * pad;
  const std::int64_t pad_elem = mp * l.elements * (rd + tram);                     // a padding element
  const std::int64_t data_elem = mp * l.elements * (l.pool * l.pool * rd + tram);  // a (pooled) data element
  const std::int64_t col_pad = 2 * pad * (pad_elem + wr);
  const std::int64_t pad_row = col_pad + l.pooled_w * (pad_elem + wr);       // a padding row
  const std::int64_t row_no_conv = col_pad + l.pooled_w * (data_elem + wr);  // a row before the first output
  const std::int64_t left = pad * (pad_elem + wr);
  const std::int64_t row_conv = left + (k - 1 - pad) * (data_elem + wr) + (out_w - pad) * data_elem + pad_elem * pad;
  const std::int64_t bottom_row = left + (k - 1 - pad) * (pad_elem + wr) + (out_w - pad) * pad_elem + pad_elem * pad;
  std::int64_t total;
  if (l.passthrough) {
    total = l.pooled_h * l.pooled_w * (data_elem + mp * l.pass_out_channels);
  } else {
    const std::int64_t single = (l.out_channels == 1 && mp == 1) ? 1 : 0;
    const std::int64_t out_row = mp * out_w * l.out_channels + l.out_channels * single;
    total = (l.flatten ? 1 : 0) + pad * pad_row + (k - 1 - pad) * row_no_conv +
            (row_conv + out_row) * (l.pooled_h - (k - 1 - pad)) + pad * (bottom_row + out_row);
  }
  if (l.streaming) total = (15 * total + 9) / 10;  // streaming layers: 1.5x
  return total;
}

NetworkLatency network_latency(const FitReport& fit) {
  NetworkLatency n;
  n.total = n.startup;
  const std::int64_t procs = fit.device.processors > 0 ? fit.device.processors : 64;
  for (const auto& f : fit.layers) {
    LatencyLayer l;
    l.pooled_h = f.in_h;
    l.pooled_w = f.in_w;
    l.pool = f.pool > 0 ? f.pool : 1;
    l.out_channels = f.cout;
    l.kernel = f.k;
    l.padding = f.pad;
    l.multipass = (f.cin + procs - 1) / procs;
    const std::int64_t c = layer_latency_cycles(l);
    n.names.push_back(f.name);
    n.cycles.push_back(c);
    n.total += c;
  }
  return n;
}

std::string format_latency(const NetworkLatency& lat) {
  std::string o = "CNN latency (ai8xize's model: accelerator cycles per layer)\n";
  for (std::size_t i = 0; i < lat.names.size(); ++i) o += fmt::format("  {:<12} {:>10}\n", lat.names[i], lat.cycles[i]);
  o += fmt::format("  {:<12} {:>10}\n", "startup", lat.startup);
  o += fmt::format("  {:<12} {:>10}  = {:.1f} ms at the 50 MHz CNN clock\n", "total", lat.total, lat.ms(50.0));
  return o;
}

std::string format_decode_estimate() {
  const double cycles = static_cast<double>(kDecodeInstructions4People) * kDecodeCyclesPerInstruction;
  return fmt::format(
      "Pose decoding on the Arm core (firmware/pose_decode.c, docs/deploy.md): about {:.2f}M "
      "instructions for 4 people, ~{:.2f}M cycles = ~{:.1f} ms at 100 MHz (estimate)\n",
      kDecodeInstructions4People / 1e6, cycles / 1e6, cycles / 100e3);
}

}  // namespace posekd::deploy
