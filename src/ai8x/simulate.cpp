#include "posekd/ai8x/simulate.h"

#include <cmath>

#include "posekd/core/error.h"

namespace posekd::ai8x {

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
std::string last_component(const std::string& k) {
  auto p = k.rfind('.');
  return p == std::string::npos ? k : k.substr(p + 1);
}
}  // namespace

StateDict quantize_state_dict(const StateDict& qat, const std::string& what) {
  torch::NoGradGuard ng;
  StateDict out;
  for (const auto& kv : qat) {
    const auto leaf = last_component(kv.first);
    if (leaf == "w_zero_point" || leaf == "b_zero_point" || leaf == "base_b_q") {
      if (kv.second.numel() && kv.second.abs().max().item<double>() != 0)
        throw Error(what + ": key '" + kv.first + "' must be zero");
      continue;
    }
    out.emplace_back(kv.first, kv.second.clone());
  }
  auto set = [&](const std::string& key, const torch::Tensor& v) {
    for (auto& kv : out)
      if (kv.first == key) {
        kv.second = v;
        return;
      }
    out.emplace_back(key, v);
  };
  const auto src = out;  // read-only view of the inputs
  for (const auto& kv : src) {
    const auto& key = kv.first;
    const auto leaf = last_component(key);
    if (leaf == "adjust_output_shift") {
      set(key, torch::zeros({1}, torch::kFloat));
      continue;
    }
    if (leaf == "quantize_activation") {
      set(key, torch::ones({1}, torch::kFloat));
      continue;
    }
    if (leaf != "weight") continue;
    std::string layer, bias_key;
    if (ends_with(key, ".op.weight")) {
      layer = key.substr(0, key.size() - std::string(".op.weight").size());
      bias_key = layer + ".op.bias";
    } else {
      layer = key.substr(0, key.size() - std::string(".weight").size());
      bias_key = layer + ".bias";
    }
    int bits = 8;
    const auto* wbits = find_or_null(src, layer + ".weight_bits");
    if (wbits && wbits->item<double>() != 0) bits = static_cast<int>(wbits->item<double>());
    if (bits != 1 && bits != 2 && bits != 4 && bits != 8)
      throw Error(what + ": layer '" + layer + "' has weight_bits " + std::to_string(bits));
    const auto w = kv.second.to(torch::kFloat);
    const auto* bptr = find_or_null(src, bias_key);
    torch::Tensor b = bptr ? bptr->to(torch::kFloat) : torch::Tensor();
    double q = 1.0;
    if (const auto* sq = find_or_null(src, layer + ".shift_quantile")) q = sq->item<double>();
    auto p = b.defined() ? torch::cat({w.flatten(), b.flatten()}) : w.flatten();
    auto limit = torch::quantile(p.abs(), q);
    auto bs = torch::floor(torch::log2(1.0 / limit)).clamp(-7 - bits, 23 - bits);
    const double half = std::ldexp(1.0, bits - 1);
    auto scale = torch::pow(2.0, bs);
    auto wint = torch::floor(w * half * scale + 0.5).clamp(-half, half - 1);
    set(key, wint);
    if (b.defined()) {
      auto b8 = torch::floor(b * scale * half + 0.5).clamp(-half, half - 1);
      set(bias_key, b8 * std::ldexp(1.0, bits - 8) * 128.0);
      set(layer + ".bias_bits", torch::full({1}, static_cast<double>(bits), torch::kFloat));
    }
    if (!wbits || wbits->item<double>() == 0) set(layer + ".weight_bits", torch::full({1}, 8, torch::kLong));
    auto os = -bs;
    if (const auto* thr = find_or_null(src, layer + ".activation_threshold"))
      os = (os - thr->to(torch::kFloat)).clamp(-7 - bits, 23 - bits);
    set(layer + ".output_shift", os.reshape({1}).to(torch::kFloat));
  }
  return out;
}

torch::Tensor simulate_input(const torch::Tensor& x) { return torch::round(x * 128.0).clamp(-128.0, 127.0); }

}  // namespace posekd::ai8x
