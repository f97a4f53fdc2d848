// quantize.py (ai8x-synthesis S2, default MAX_BIT_SHIFT clipping; ai8x.md 4.2) on a QAT state
// dict, and loading the result into a model for simulate ("-8") evaluation (ai8x.md 6.1).
#pragma once
#include <torch/torch.h>

#include <string>

#include "posekd/ai8x/state_dict.h"

namespace posekd::ai8x {

// Returns exactly what quantize.py writes as its state_dict: integer op.weight (f32), op.bias =
// B8 * 2^(bits-8) * 128 (f32), output_shift = [clamp(-bs - thr)], bias_bits / quantize_activation /
// adjust_output_shift as f32[1] (bits, 1, 0), w/b_zero_point and base_b_q removed, key order kept.
// `what` names the source (a file) in errors.
StateDict quantize_state_dict(const StateDict& qat, const std::string& what = "QAT state dict");

// The simulate-mode input: clamp(round(x * 128), -128, 127) (round half to even), as
// ai8x.normalize does with act_mode_8bit. x is the float input on the 1/128 grid.
torch::Tensor simulate_input(const torch::Tensor& x);

}  // namespace posekd::ai8x
