// `posekd bench`: measured throughput next to the machine's conv peak (docs/performance.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "posekd/cli/registry.h"
#include "posekd/core/omp_wait.h"
#include "posekd/train/bench.h"

namespace posekd::cli::cmd_bench {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg("bench", "Measure sample preparation, student/teacher steps and the conv peak",
                              [](CLI::App& app) -> posekd::cli::Runner {
  auto o = std::make_shared<posekd::train::BenchOptions>();
  app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
  app.add_option("--seconds", o->seconds, "minimum seconds per figure")->capture_default_str();
  app.add_option("--arch", o->arch, "student architecture")->capture_default_str();
  app.add_flag("--quick", o->quick, "short run (smoke test)");
  app.add_option("--profile", o->profile_dir, "also profile 5 float and 5 QAT steps: Chrome traces into this folder, top operators printed");
  return [o]() {
    auto r = posekd::train::run_bench(*o);
    std::printf("threads: %d, OpenMP waits: %s\n\n%s", r.threads, posekd::omp_wait_description().c_str(),
                r.text().c_str());
    return 0;
  };
});

}  // namespace
}  // namespace posekd::cli::cmd_bench
