// `posekd launch`: start N ranks of a posekd command on this machine (torchrun's conventions).
#include <CLI/CLI.hpp>

#include <memory>

#include "posekd/cli/registry.h"
#include "posekd/train/launch.h"

namespace posekd::cli::cmd_launch {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg(
    "launch", "Run a command as N data-parallel processes (like torchrun): posekd launch --nproc 2 -- train ...",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<posekd::train::LaunchOptions>();
      auto args = std::make_shared<std::vector<std::string>>();
      app.add_option("--nproc", o->nproc, "processes on this machine")->capture_default_str();
      app.add_option("--nnodes", o->nnodes, "machines taking part")->capture_default_str();
      app.add_option("--node-rank", o->node_rank, "this machine's index in [0, nnodes)")->capture_default_str();
      app.add_option("--master-addr", o->master_addr, "address of the machine with rank 0")->capture_default_str();
      app.add_option("--master-port", o->master_port, "rendezvous port (0 = a free one; required with --nnodes > 1)")
          ->capture_default_str();
      app.add_option("--grace", o->grace_s, "seconds the others get after one rank fails, before SIGKILL")
          ->capture_default_str();
      app.add_option("command", *args, "posekd command and its options, after --")->required();
      return [o, args]() { return posekd::train::launch(*o, *args); };
    });

}  // namespace
}  // namespace posekd::cli::cmd_launch
