// `--config FILE.yaml` and `--print-config` for a command whose options live in one struct with a
// YAML table (train/config_io.h). The file is read the moment --config is parsed; CLI11 writes the
// other options only when they are given, after that, so the command line overrides the file.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "posekd/train/config_io.h"

namespace posekd::cli {

template <class Cfg>
void add_config_options(CLI::App& app, const std::shared_ptr<Cfg>& cfg, const std::shared_ptr<bool>& print) {
  app.add_option_function<std::string>(
         "--config", [cfg](const std::string& path) { train::load_yaml_file(path, *cfg); },
         "YAML file of options, keys = long option names with '_' (batch_size: 8); a run's args.yaml works. "
         "Options given on the command line override it")
      ->trigger_on_parse();
  app.add_flag("--print-config", *print, "print every resolved option as YAML (a --config file) and exit");
}

}  // namespace posekd::cli
