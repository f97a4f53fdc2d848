#include "posekd/ai8x/policy.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include "posekd/core/error.h"

namespace posekd::ai8x {

int QatPolicy::weight_bits_for(const std::string& layer) const {
  auto it = overrides.find(layer);
  return it != overrides.end() && it->second.weight_bits ? *it->second.weight_bits : weight_bits;
}

double QatPolicy::shift_quantile_for(const std::string& layer) const {
  auto it = overrides.find(layer);
  return it != overrides.end() && it->second.shift_quantile ? *it->second.shift_quantile : shift_quantile;
}

namespace {

void check_bits(const std::string& path, const std::string& where, int bits) {
  if (bits != 1 && bits != 2 && bits != 4 && bits != 8)
    fail_file(path, where + ": weight_bits must be 1, 2, 4 or 8 (got " + std::to_string(bits) + ")");
}
void check_q(const std::string& path, const std::string& where, double q) {
  if (!(q > 0.0 && q <= 1.0)) fail_file(path, where + ": shift_quantile must be in (0, 1]");
}

template <typename T>
T get(const YAML::Node& n, const std::string& path, const std::string& key) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail_file(path, "key '" + key + "' has a value of the wrong type");
  }
}

}  // namespace

QatPolicy load_qat_policy(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail_file(path, "cannot open the QAT policy file");
  } catch (const YAML::Exception& e) {
    fail_file(path, "not valid YAML (line " + std::to_string(e.mark.line + 1) + ")");
  }
  if (!root.IsMap()) fail_file(path, "the QAT policy must be a YAML mapping");
  static const std::set<std::string> known = {
      "start_epoch", "start_batch", "weight_bits", "shift_quantile", "outlier_removal_z_score", "overrides"};
  for (const auto& kv : root) {
    auto k = kv.first.as<std::string>();
    if (!known.count(k)) fail_file(path, "unknown key '" + k + "'");
  }
  QatPolicy p;
  if (root["start_epoch"]) p.start_epoch = get<int64_t>(root["start_epoch"], path, "start_epoch");
  if (root["start_batch"]) p.start_batch = get<int64_t>(root["start_batch"], path, "start_batch");
  if (p.start_epoch < 0 && p.start_batch < 0)
    fail_file(path, "'start_epoch' (or 'start_batch') is required and must be >= 0");
  if (!root["weight_bits"]) fail_file(path, "'weight_bits' is required");
  p.weight_bits = get<int>(root["weight_bits"], path, "weight_bits");
  check_bits(path, "weight_bits", p.weight_bits);
  if (root["shift_quantile"]) p.shift_quantile = get<double>(root["shift_quantile"], path, "shift_quantile");
  check_q(path, "shift_quantile", p.shift_quantile);
  if (root["outlier_removal_z_score"]) {
    p.outlier_removal_z_score = get<double>(root["outlier_removal_z_score"], path, "outlier_removal_z_score");
    if (!(p.outlier_removal_z_score > 0)) fail_file(path, "outlier_removal_z_score must be > 0");
  }
  if (auto ov = root["overrides"]) {
    if (!ov.IsMap() && !ov.IsNull()) fail_file(path, "'overrides' must be a mapping of layer names");
    for (const auto& kv : ov) {
      auto name = kv.first.as<std::string>();
      if (!kv.second.IsMap()) fail_file(path, "override '" + name + "' must be a mapping");
      QatPolicy::Override o;
      for (const auto& e : kv.second) {
        auto k = e.first.as<std::string>();
        if (k == "weight_bits") {
          o.weight_bits = get<int>(e.second, path, name + ".weight_bits");
          check_bits(path, "override " + name, *o.weight_bits);
        } else if (k == "shift_quantile") {
          o.shift_quantile = get<double>(e.second, path, name + ".shift_quantile");
          check_q(path, "override " + name, *o.shift_quantile);
        } else {
          fail_file(path, "override '" + name + "' has unknown key '" + k + "'");
        }
      }
      p.overrides[name] = o;
    }
  }
  return p;
}

void save_qat_policy(const QatPolicy& p, const std::string& path) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (p.start_epoch >= 0) out << YAML::Key << "start_epoch" << YAML::Value << p.start_epoch;
  if (p.start_batch >= 0) out << YAML::Key << "start_batch" << YAML::Value << p.start_batch;
  out << YAML::Key << "weight_bits" << YAML::Value << p.weight_bits;
  out << YAML::Key << "shift_quantile" << YAML::Value << YAML::Precision(17) << p.shift_quantile;
  out << YAML::Key << "outlier_removal_z_score" << YAML::Value << YAML::Precision(17) << p.outlier_removal_z_score;
  if (!p.overrides.empty()) {
    out << YAML::Key << "overrides" << YAML::Value << YAML::BeginMap;
    for (const auto& [name, o] : p.overrides) {
      out << YAML::Key << name << YAML::Value << YAML::BeginMap;
      if (o.weight_bits) out << YAML::Key << "weight_bits" << YAML::Value << *o.weight_bits;
      if (o.shift_quantile)
        out << YAML::Key << "shift_quantile" << YAML::Value << YAML::Precision(17) << *o.shift_quantile;
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  std::ofstream f(path);
  if (!f) fail_file(path, "cannot write the QAT policy file");
  f << out.c_str() << "\n";
  if (!f) fail_file(path, "write failed");
}

}  // namespace posekd::ai8x
