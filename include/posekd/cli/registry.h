// Subcommand registry for the `posekd` program. Each src/cli/cmd_<name>.cpp registers itself:
//
//   static posekd::cli::Registration reg("inspect", "List keys of a PyTorch file",
//       [](CLI::App& app) { ...add options...; return [opts]() { ...run...; return 0; }; });
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace posekd::cli {

using Runner = std::function<int()>;
// Adds the options to the subcommand and returns what runs it.
using Setup = std::function<Runner(CLI::App&)>;

struct Command {
  std::string name;
  std::string help;
  Setup setup;
};

std::vector<Command>& commands();

struct Registration {
  Registration(std::string name, std::string help, Setup setup);
};

}  // namespace posekd::cli
