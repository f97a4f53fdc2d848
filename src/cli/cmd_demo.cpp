// `posekd demo`: the whole pipeline on synthetic people (what `make demo` runs).
#include <CLI/CLI.hpp>

#include <memory>

#include "posekd/cli/registry.h"
#include "posekd/train/demo.h"

namespace {

posekd::cli::Registration reg(
    "demo", "Synthetic people -> teacher -> distilled QAT student -> AP table, int8, MAX78000 export, plots",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<posekd::train::DemoOptions>();
      app.add_option("--out", o->out, "output directory")->capture_default_str();
      app.add_flag("--quick", o->quick, "a ~2 minute version (small data, few batches)");
      app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--seed", o->seed, "random seed (data and training)")->capture_default_str();
      app.add_flag("--quiet", o->quiet, "no per-batch lines");
      return [o]() {
        posekd::train::run_demo(*o);
        return 0;
      };
    });

}  // namespace
