// `posekd compare A B`: bit-exact comparison of two torch.save files (or pickles). Prints every
// differing entry (dotted key) and exits 1 when anything differs, 0 when identical. Tensors are
// equal when dtype, shape and every byte match (NaN payloads included); floats compare bitwise.
// `--key model` restricts the comparison to one subtree; `--tensors-only` ignores non-tensor leaves
// (e.g. a checkpoint's timing averages, which legitimately differ between runs).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstring>
#include <string>

#include "posekd/cli/registry.h"
#include "posekd/core/error.h"
#include "posekd/io/torch_file.h"
#include "posekd/io/value.h"

namespace posekd::cli::cmd_compare {  // named: the commands share unity-build translation units
namespace {

using posekd::io::Value;

struct Comparer {
  bool tensors_only = false;
  int differences = 0;
  int tensors_compared = 0;

  static std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }
  static std::string key_text(const Value& k) {
    if (k.is_string()) return k.as_string();
    if (k.is_int()) return std::to_string(k.as_int());
    return "<" + k.describe() + ">";
  }
  void report(const std::string& key, const std::string& what) {
    ++differences;
    std::printf("DIFF %-50s %s\n", key.empty() ? "(root)" : key.c_str(), what.c_str());
  }

  static bool tensor_bits_equal(const torch::Tensor& a, const torch::Tensor& b) {
    if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
    auto ca = a.contiguous(), cb = b.contiguous();
    const size_t n = static_cast<size_t>(ca.numel()) * ca.element_size();
    return n == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), n) == 0;
  }

  static std::string tensor_diff(const torch::Tensor& a, const torch::Tensor& b) {
    if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes())
      return Value::tensor(a).describe() + " vs " + Value::tensor(b).describe();
    if (!a.is_floating_point()) {
      auto ne = (a != b).sum().item<int64_t>();
      return std::to_string(ne) + " of " + std::to_string(a.numel()) + " elements differ";
    }
    auto da = a.to(torch::kDouble), db = b.to(torch::kDouble);
    auto ne = (da != db).sum().item<int64_t>();
    double maxabs = (da - db).abs().nan_to_num(0).max().item<double>();
    char buf[160];
    std::snprintf(buf, sizeof buf, "%lld of %lld elements differ, max |a-b| = %.9g", static_cast<long long>(ne),
                  static_cast<long long>(a.numel()), maxabs);
    return buf;
  }

  void compare(const std::string& key, const Value& a, const Value& b) {
    if (a.kind() != b.kind()) {
      report(key, a.describe() + " vs " + b.describe());
      return;
    }
    switch (a.kind()) {
      case Value::Kind::Tensor:
        ++tensors_compared;
        if (!tensor_bits_equal(a.as_tensor(), b.as_tensor())) report(key, tensor_diff(a.as_tensor(), b.as_tensor()));
        return;
      case Value::Kind::List:
      case Value::Kind::Tuple: {
        const auto& ia = a.items();
        const auto& ib = b.items();
        if (ia.size() != ib.size()) {
          report(key, "length " + std::to_string(ia.size()) + " vs " + std::to_string(ib.size()));
          return;
        }
        for (size_t i = 0; i < ia.size(); ++i) compare(join(key, std::to_string(i)), ia[i], ib[i]);
        return;
      }
      case Value::Kind::Dict: {
        const auto& da = a.dict_data();
        const auto& db = b.dict_data();
        for (const auto& kv : da.items) {
          const std::string k = key_text(kv.first);
          const Value* other = kv.first.is_string() ? b.find(kv.first.as_string())
                               : kv.first.is_int()  ? b.find(kv.first.as_int())
                                                    : nullptr;
          if (!other)
            report(join(key, k), "only in the first file");
          else
            compare(join(key, k), kv.second, *other);
        }
        for (const auto& kv : db.items) {
          const bool in_a = kv.first.is_string() ? a.contains(kv.first.as_string())
                            : kv.first.is_int()  ? a.contains(kv.first.as_int())
                                                 : false;
          if (!in_a) report(join(key, key_text(kv.first)), "only in the second file");
        }
        return;
      }
      case Value::Kind::Float: {
        if (tensors_only) return;
        double x = a.as_double(), y = b.as_double();
        if (std::memcmp(&x, &y, sizeof x) != 0) report(key, a.describe() + " vs " + b.describe());
        return;
      }
      default:
        if (tensors_only) return;
        if (a.describe() != b.describe()) report(key, a.describe() + " vs " + b.describe());
        return;
    }
  }
};

const Value& subtree(const Value& root, const std::string& key, const std::string& path) {
  const Value* v = &root;
  size_t start = 0;
  while (!key.empty() && start <= key.size()) {
    size_t dot = key.find('.', start);
    std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const Value* next = v->find(part);
    if (!next) posekd::fail_file(path, "no key '" + key + "'");
    v = next;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return *v;
}

posekd::cli::Registration reg("compare",
                              "Compare two PyTorch files bit for bit; print differing entries, exit 1 if any",
                              [](CLI::App& app) -> posekd::cli::Runner {
                                auto a = std::make_shared<std::string>();
                                auto b = std::make_shared<std::string>();
                                auto key = std::make_shared<std::string>();
                                auto tensors_only = std::make_shared<bool>(false);
                                app.add_option("a", *a, "first file")->required();
                                app.add_option("b", *b, "second file")->required();
                                app.add_option("--key", *key, "compare only this (dotted) subtree, e.g. 'model'");
                                app.add_flag("--tensors-only", *tensors_only, "ignore non-tensor leaves");
                                return [a, b, key, tensors_only]() {
                                  Value va = posekd::io::load_any_file(*a);
                                  Value vb = posekd::io::load_any_file(*b);
                                  Comparer c;
                                  c.tensors_only = *tensors_only;
                                  c.compare(*key, subtree(va, *key, *a), subtree(vb, *key, *b));
                                  if (c.differences) {
                                    std::printf("%d difference(s) (%d tensors compared)\n", c.differences,
                                                c.tensors_compared);
                                    return 1;
                                  }
                                  std::printf("identical (%d tensors compared)\n", c.tensors_compared);
                                  return 0;
                                };
                              });

}  // namespace
}  // namespace posekd::cli::cmd_compare
