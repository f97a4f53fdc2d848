// Option structs <-> YAML files (`posekd train --config FILE.yaml`, a run's args.yaml).
//
// One table per struct maps a YAML key, the long command-line option without its dashes and with
// '_' for '-' (`--batch-size` -> `batch_size`), to a field. Adding a field to a struct is one line in
// its table (src/train/config_io.cpp); the tests check that every command-line option of the
// command has a key and that every key round-trips.
//
// Reading: keys absent from the file keep their current value; an unknown key or a value of the
// wrong type is a one-line error naming the file and the key.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "posekd/train/config.h"
#include "posekd/train/demo.h"
#include "posekd/train/teacher_train.h"

namespace posekd::train {

// Where a field lives; the alternative says its YAML type.
using ConfigRef = std::variant<std::string*, bool*, int*, std::int64_t*, std::uint64_t*, double*>;

template <class Cfg>
struct ConfigField {
  const char* key;
  ConfigRef (*ref)(Cfg&);
};

const std::vector<ConfigField<TrainConfig>>& config_fields(const TrainConfig*);
const std::vector<ConfigField<TeacherTrainConfig>>& config_fields(const TeacherTrainConfig*);
const std::vector<ConfigField<DemoOptions>>& config_fields(const DemoOptions*);

// Every field of the struct as a YAML map, in table order, after a first comment line naming the
// command (`title`). `notes` are appended as comment lines (derived values a reader may want, e.g.
// "qat_start_batch: 9000"); reading ignores them.
std::string to_yaml(const TrainConfig& c, const std::vector<std::string>& notes = {});
std::string to_yaml(const TeacherTrainConfig& c, const std::vector<std::string>& notes = {});
std::string to_yaml(const DemoOptions& c, const std::vector<std::string>& notes = {});

// Sets the fields named in `text` (a YAML map, or empty); `source` names it in errors.
void from_yaml(const std::string& text, const std::string& source, TrainConfig& c);
void from_yaml(const std::string& text, const std::string& source, TeacherTrainConfig& c);
void from_yaml(const std::string& text, const std::string& source, DemoOptions& c);

// The same from / to a file ("PATH: ..." errors).
void load_yaml_file(const std::string& path, TrainConfig& c);
void load_yaml_file(const std::string& path, TeacherTrainConfig& c);
void load_yaml_file(const std::string& path, DemoOptions& c);
void save_yaml_file(const std::string& path, const TrainConfig& c, const std::vector<std::string>& notes = {});
void save_yaml_file(const std::string& path, const TeacherTrainConfig& c, const std::vector<std::string>& notes = {});
void save_yaml_file(const std::string& path, const DemoOptions& c, const std::vector<std::string>& notes = {});

// A YAML key for a long option name: "--batch-size" -> "batch_size".
std::string config_key(const std::string& long_option);

}  // namespace posekd::train
