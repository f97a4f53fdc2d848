#include "posekd/ai8x/state_dict.h"

#include <fstream>
#include <iterator>
#include <map>

#include "posekd/core/error.h"

namespace posekd::ai8x {

namespace {
void collect(const torch::nn::Module& m, const std::string& prefix, StateDict& out) {
  for (const auto& p : m.named_parameters(false)) out.emplace_back(prefix + p.key(), p.value());
  for (const auto& b : m.named_buffers(false)) out.emplace_back(prefix + b.key(), b.value());
  for (const auto& c : m.named_children()) collect(*c.value(), prefix + c.key() + ".", out);
}
}  // namespace

StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  collect(module, "", out);
  return out;
}

const torch::Tensor* find_or_null(const StateDict& sd, const std::string& key) {
  for (const auto& kv : sd)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

const torch::Tensor& find(const StateDict& sd, const std::string& key, const std::string& what) {
  const auto* t = find_or_null(sd, key);
  if (!t) throw Error(what + ": missing key '" + key + "'");
  return *t;
}

void load_state_dict(torch::nn::Module& module, const StateDict& sd, bool strict, const std::string& what) {
  auto own = state_dict(module);
  std::map<std::string, const torch::Tensor*> given;
  for (const auto& kv : sd) given[kv.first] = &kv.second;
  torch::NoGradGuard ng;
  for (auto& kv : own) {
    auto it = given.find(kv.first);
    if (it == given.end()) {
      if (strict) throw Error(what + ": missing key '" + kv.first + "'");
      continue;
    }
    const auto& src = *it->second;
    if (src.sizes() != kv.second.sizes()) {
      throw Error(what + ": key '" + kv.first + "' has shape " + c10::str(src.sizes()) + ", the model expects " +
                  c10::str(kv.second.sizes()));
    }
    kv.second.copy_(src);
    given.erase(it);
  }
  if (strict && !given.empty()) throw Error(what + ": unexpected key '" + given.begin()->first + "'");
}

c10::impl::GenericDict read_tensor_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  torch::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    fail_file(path, std::string("not a readable torch.save file (") + std::string(e.what()).substr(0, 200) + ")");
  }
  if (!v.isGenericDict()) fail_file(path, "top level is not a dict");
  return v.toGenericDict();
}

torch::Tensor dict_tensor(const c10::impl::GenericDict& d, const std::string& key) {
  auto pos = key.find('/');
  if (pos != std::string::npos) return dict_tensor(dict_dict(d, key.substr(0, pos)), key.substr(pos + 1));
  auto it = d.find(key);
  if (it == d.end()) throw Error("tensor dict: missing key '" + key + "'");
  if (!it->value().isTensor()) throw Error("tensor dict: key '" + key + "' is not a tensor");
  return it->value().toTensor();
}

c10::impl::GenericDict dict_dict(const c10::impl::GenericDict& d, const std::string& key) {
  auto pos = key.find('/');
  if (pos != std::string::npos) return dict_dict(dict_dict(d, key.substr(0, pos)), key.substr(pos + 1));
  auto it = d.find(key);
  if (it == d.end()) throw Error("tensor dict: missing key '" + key + "'");
  if (!it->value().isGenericDict()) throw Error("tensor dict: key '" + key + "' is not a dict");
  return it->value().toGenericDict();
}

StateDict to_state_dict(const c10::impl::GenericDict& d) {
  StateDict out;
  for (const auto& kv : d) {
    if (!kv.value().isTensor()) throw Error("state dict: key '" + kv.key().toStringRef() + "' is not a tensor");
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  return out;
}

}  // namespace posekd::ai8x
