// Bit-exact MAX78000 integer inference on the CPU (ai8x.md 6.2) for a chain-with-two-heads
// network, from a quantize.py state dict. Convolution sums are accumulated in float64 (exact for
// |acc| < 2^53, far above any 8-bit layer) and converted to int64; shift, rounding, clamping and
// ReLU are done in int64.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "posekd/ai8x/layers.h"
#include "posekd/ai8x/state_dict.h"

namespace posekd::ai8x {

struct IntegerLayer {
  std::string name;
  LayerSpec spec;
  torch::Tensor weight;  // int64 [Cout,Cin,k,k], in [-2^(bits-1), 2^(bits-1)-1]
  torch::Tensor bias8;   // int64 [Cout] (B8) or undefined
  int shift = 0;         // hardware shift: output_shift + (8 - weight_bits)
  int final_scale = 0;
};

// Reads layer `name` from a quantized state dict (errors name `what` and the key).
IntegerLayer integer_layer(const StateDict& quantized, const std::string& name, const LayerSpec& spec,
                           const std::string& what = "quantized state dict");

// One layer on int64 data [N,C,H,W]: max pool, conv + 128*B8, then for 8-bit outputs
// v = clamp(floor(0.5 + acc*2^s/128), -128, 127) (ReLU: clamp to [0,127]); wide: v = acc.
torch::Tensor integer_layer_forward(const IntegerLayer& layer, const torch::Tensor& x);

struct IntegerOutputs {
  torch::Tensor heat, paf;  // f64: head accumulator * 2^final_scale (what `-8` evaluation returns)
  std::map<std::string, torch::Tensor> activations;  // per layer: int8 (8-bit) / int64 (wide, *2^fs)
};

// trunk = chain of layers; head_a / head_b each read the trunk output. x: int-valued input.
IntegerOutputs integer_forward(const std::vector<IntegerLayer>& trunk, const std::vector<IntegerLayer>& head_a,
                               const std::vector<IntegerLayer>& head_b, const torch::Tensor& x,
                               bool keep_activations = false);

// ai8x.md 6.1 step 6, per head: divide by 128, and once more by 128 if the head is wide.
torch::Tensor integer_output_to_float(const torch::Tensor& v, bool wide);

}  // namespace posekd::ai8x
