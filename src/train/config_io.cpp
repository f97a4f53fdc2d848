#include "posekd/train/config_io.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "posekd/core/error.h"

namespace posekd::train {

// One line per field: YAML key (the long option without "--", '_' for '-') and the field.
// The augmentation flags (cli/recipe_options.h), shared by train, train-teacher and demo: each table
// defines FIELD for its own struct, whose members `no_augment` and `augment` these name.
#define POSEKD_AUGMENT_FIELDS                                                                                    \
  FIELD("no_augment", no_augment), FIELD("scale_min", augment.scale_min), FIELD("scale_max", augment.scale_max), \
      FIELD("rotate", augment.rotate_deg), FIELD("shift", augment.shift), FIELD("flip", augment.flip_prob),      \
      FIELD("brightness", augment.brightness), FIELD("contrast", augment.contrast),                              \
      FIELD("saturation", augment.saturation), FIELD("hue", augment.hue_deg), FIELD("blur", augment.blur_prob),  \
      FIELD("augment_views", augment.views),

// The data-parallel group (train and train-teacher).
#define POSEKD_DIST_FIELDS                                                                              \
  FIELD("rank", dist_rank), FIELD("world_size", dist_world_size), FIELD("local_rank", dist_local_rank), \
      FIELD("master_addr", dist_master_addr), FIELD("master_port", dist_master_port),                   \
      FIELD("dist_timeout", dist_timeout), FIELD("sync_bn", sync_bn),

#define POSEKD_FIELD(Cfg, key, member)                 \
  ConfigField<Cfg> {                                   \
    key, [](Cfg& c) -> ConfigRef { return &c.member; } \
  }

const std::vector<ConfigField<TrainConfig>>& config_fields(const TrainConfig*) {
#define FIELD(key, member) POSEKD_FIELD(TrainConfig, key, member)
  static const std::vector<ConfigField<TrainConfig>> fields = {
      FIELD("data", data),
      FIELD("split", split),
      FIELD("ann", ann),
      FIELD("images", images),
      FIELD("prepared", prepared),
      FIELD("subset", subset),
      FIELD("val_data", val_data),
      FIELD("val_split", val_split),
      FIELD("val_ann", val_ann),
      FIELD("val_images", val_images),
      FIELD("val_every", val_every),
      FIELD("val_subset", val_subset),
      FIELD("arch", arch),
      FIELD("teacher", teacher),
      FIELD("teacher_input_scale", teacher_input_scale),
      FIELD("teacher_cache", teacher_cache),
      FIELD("no_teacher_cache", no_teacher_cache),
      FIELD("batch_size", batch_size),
      FIELD("total_batches", total_batches),
      FIELD("lr", lr),
      FIELD("lr_schedule", lr_schedule),
      FIELD("warmup", warmup),
      FIELD("lr_end_factor", lr_end_factor),
      FIELD("weight_decay", weight_decay),
      FIELD("qat_lr", qat_lr),
      FIELD("qat_warmup", qat_warmup),
      POSEKD_AUGMENT_FIELDS FIELD("kd_student_wt", kd_student_wt),
      FIELD("kd_distill_wt", kd_distill_wt),
      FIELD("save_every", save_every),
      FIELD("checkpoint", checkpoint),
      FIELD("resume", resume),
      FIELD("output", output),
      FIELD("keep", keep),
      FIELD("qat_policy", qat_policy),
      FIELD("no_qat", no_qat),
      FIELD("calib_batches", calib_batches),
      FIELD("precision", precision),
      FIELD("threads", threads),
      FIELD("workers", workers),
      FIELD("seed", seed),
      FIELD("deterministic", deterministic),
      FIELD("seed_compat_targets", seed_compat_targets),
      FIELD("max_bad_fraction", max_bad_fraction),
      FIELD("max_nonfinite", max_nonfinite),
      FIELD("quiet", quiet),
      FIELD("stop_after", stop_after),
      FIELD("no_plot", no_plot),
      POSEKD_DIST_FIELDS};
#undef FIELD
  return fields;
}

const std::vector<ConfigField<TeacherTrainConfig>>& config_fields(const TeacherTrainConfig*) {
#define FIELD(key, member) POSEKD_FIELD(TeacherTrainConfig, key, member)
  static const std::vector<ConfigField<TeacherTrainConfig>> fields = {
      FIELD("ann", ann),
      FIELD("images", images),
      FIELD("subset", subset),
      FIELD("input_size", input_size),
      FIELD("refinement_stages", num_refinement_stages),
      FIELD("batch_size", batch_size),
      FIELD("total_batches", total_batches),
      FIELD("lr", lr),
      FIELD("lr_schedule", lr_schedule),
      FIELD("warmup", warmup_batches),
      FIELD("lr_end_factor", lr_end_factor),
      FIELD("weight_decay", weight_decay),
      POSEKD_AUGMENT_FIELDS FIELD("precision", precision),
      FIELD("save_every", save_every),
      FIELD("output", output),
      FIELD("threads", threads),
      FIELD("workers", workers),
      FIELD("seed", seed),
      FIELD("quiet", quiet),
      FIELD("stop_after", stop_after),
      POSEKD_DIST_FIELDS};
#undef FIELD
  return fields;
}

const std::vector<ConfigField<DemoOptions>>& config_fields(const DemoOptions*) {
#define FIELD(key, member) POSEKD_FIELD(DemoOptions, key, member)
  static const std::vector<ConfigField<DemoOptions>> fields = {FIELD("out", out),
                                                               FIELD("quick", quick),
                                                               FIELD("threads", threads),
                                                               FIELD("seed", seed),
                                                               FIELD("quiet", quiet),
                                                               FIELD("train_images", overrides.train_images),
                                                               FIELD("val_images", overrides.val_images),
                                                               FIELD("teacher_batches", overrides.teacher_batches),
                                                               FIELD("teacher_batch_size", overrides.teacher_batch),
                                                               FIELD("teacher_lr", overrides.teacher_lr),
                                                               FIELD("teacher_warmup", overrides.teacher_warmup),
                                                               FIELD("teacher_stages", overrides.teacher_stages),
                                                               FIELD("student_batches", overrides.student_batches),
                                                               FIELD("student_batch_size", overrides.student_batch),
                                                               FIELD("student_lr", overrides.student_lr),
                                                               FIELD("student_qat_lr", overrides.student_qat_lr),
                                                               FIELD("qat_fraction", overrides.qat_fraction),
                                                               FIELD("hard_data", hard_data),
                                                               FIELD("teacher_only", teacher_only),
                                                               FIELD("precision", precision),
                                                               POSEKD_AUGMENT_FIELDS};
#undef FIELD
  return fields;
}
#undef POSEKD_FIELD
#undef POSEKD_AUGMENT_FIELDS

std::string config_key(const std::string& long_option) {
  std::string k = long_option.substr(long_option.find_first_not_of('-'));
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

namespace {

const char* command_of(const TrainConfig*) { return "posekd train"; }
const char* command_of(const TeacherTrainConfig*) { return "posekd train-teacher"; }
const char* command_of(const DemoOptions*) { return "posekd demo"; }

// The shortest decimal that reads back as the same double.
std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  // "1" would read back as an integer in YAML tools that care: keep it visibly a float.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> d(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) d[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t prev = d[0];
    d[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cur = d[j];
      d[j] = std::min({d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
      prev = cur;
    }
  }
  return d[b.size()];
}

template <class Cfg>
std::string to_yaml_impl(const Cfg& c, const std::vector<std::string>& notes) {
  Cfg& m = const_cast<Cfg&>(c);  // the table's accessors take a mutable struct; nothing is written
  YAML::Emitter y;
  y << YAML::BeginMap;
  for (const auto& f : config_fields(&c)) {
    y << YAML::Key << f.key << YAML::Value;
    std::visit(
        [&y](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::string>) {
            y << YAML::DoubleQuoted << *p;
          } else if constexpr (std::is_same_v<T, bool>) {
            y << (*p ? "true" : "false");
          } else if constexpr (std::is_same_v<T, double>) {
            y << format_double(*p);
          } else {
            y << std::to_string(*p);
          }
        },
        f.ref(m));
  }
  y << YAML::EndMap;
  std::string out = std::string("# ") + command_of(&c) + " options (read back with --config FILE)\n";
  out += y.c_str();
  out += "\n";
  for (const auto& n : notes) out += "# " + n + "\n";
  return out;
}

template <class T>
bool parse_integer(const std::string& s, T* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  if constexpr (std::is_unsigned_v<T>) {
    if (s[0] == '-') return false;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (errno || *end || v > std::numeric_limits<T>::max()) return false;
    *out = static_cast<T>(v);
  } else {
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (errno || *end || v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) return false;
    *out = static_cast<T>(v);
  }
  return true;
}

template <class Cfg>
void from_yaml_impl(const std::string& text, const std::string& source, Cfg& c) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail_file(source, "line " + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  if (!root || root.IsNull()) return;  // an empty file sets nothing
  if (!root.IsMap()) fail_file(source, "expected a map of option: value (e.g. batch_size: 8)");
  const auto& fields = config_fields(&c);
  std::set<std::string> seen;
  for (const auto& kv : root) {
    if (!kv.first.IsScalar()) fail_file(source, "a key is not a plain name");
    const std::string key = kv.first.Scalar();
    if (!seen.insert(key).second) fail_file(source, "key '" + key + "' is given twice");
    auto it = std::find_if(fields.begin(), fields.end(), [&](const auto& f) { return key == f.key; });
    if (it == fields.end()) {
      std::string best;
      size_t best_d = 3;  // suggest only close names
      for (const auto& f : fields) {
        const size_t d = edit_distance(key, f.key);
        if (d < best_d) best_d = d, best = f.key;
      }
      fail_file(source, "unknown key '" + key + "' (not an option of " + command_of(&c) + ")" +
                            (best.empty() ? "" : "; did you mean '" + best + "'?"));
    }
    const YAML::Node& v = kv.second;
    const std::string where = "key '" + key + "': ";
    if (!v.IsScalar() && !v.IsNull()) fail_file(source, where + "expected a single value, got a list or map");
    const std::string s = v.IsNull() ? std::string() : v.Scalar();
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::string>) {
            *p = s;
          } else if constexpr (std::is_same_v<T, bool>) {
            bool b = false;
            if (v.IsNull() || !YAML::convert<bool>::decode(v, b))
              fail_file(source, where + "expected true or false, got '" + s + "'");
            *p = b;
          } else if constexpr (std::is_same_v<T, double>) {
            double d = 0;
            if (v.IsNull() || !YAML::convert<double>::decode(v, d))
              fail_file(source, where + "expected a number, got '" + s + "'");
            *p = d;
          } else {
            if (!parse_integer(s, p))
              fail_file(source, where + "expected " + (std::is_unsigned_v<T> ? "a non-negative " : "an ") +
                                    "integer, got '" + s + "'");
          }
        },
        it->ref(c));
  }
}

template <class Cfg>
void load_file_impl(const std::string& path, Cfg& c) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_file(path, "cannot open the configuration file");
  std::stringstream ss;
  ss << f.rdbuf();
  from_yaml_impl(ss.str(), path, c);
}

template <class Cfg>
void save_file_impl(const std::string& path, const Cfg& c, const std::vector<std::string>& notes) {
  std::ofstream f(path, std::ios::binary);
  f << to_yaml_impl(c, notes);
  f.flush();
  if (!f) fail_file(path, "cannot write");
}

}  // namespace

std::string to_yaml(const TrainConfig& c, const std::vector<std::string>& n) { return to_yaml_impl(c, n); }
std::string to_yaml(const TeacherTrainConfig& c, const std::vector<std::string>& n) { return to_yaml_impl(c, n); }
std::string to_yaml(const DemoOptions& c, const std::vector<std::string>& n) { return to_yaml_impl(c, n); }

void from_yaml(const std::string& t, const std::string& s, TrainConfig& c) { from_yaml_impl(t, s, c); }
void from_yaml(const std::string& t, const std::string& s, TeacherTrainConfig& c) { from_yaml_impl(t, s, c); }
void from_yaml(const std::string& t, const std::string& s, DemoOptions& c) { from_yaml_impl(t, s, c); }

void load_yaml_file(const std::string& p, TrainConfig& c) { load_file_impl(p, c); }
void load_yaml_file(const std::string& p, TeacherTrainConfig& c) { load_file_impl(p, c); }
void load_yaml_file(const std::string& p, DemoOptions& c) { load_file_impl(p, c); }

void save_yaml_file(const std::string& p, const TrainConfig& c, const std::vector<std::string>& n) {
  save_file_impl(p, c, n);
}
void save_yaml_file(const std::string& p, const TeacherTrainConfig& c, const std::vector<std::string>& n) {
  save_file_impl(p, c, n);
}
void save_yaml_file(const std::string& p, const DemoOptions& c, const std::vector<std::string>& n) {
  save_file_impl(p, c, n);
}

}  // namespace posekd::train
