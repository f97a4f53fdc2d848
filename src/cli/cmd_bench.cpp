// `posekd bench`: measured throughput next to the machine's conv peak (docs/performance.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "posekd/cli/registry.h"
#include "posekd/core/alloc.h"
#include "posekd/core/omp_wait.h"
#include "posekd/core/precision.h"
#include "posekd/train/bench.h"
#include "posekd/train/bench_bf16.h"

namespace posekd::cli::cmd_bench {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg(
    "bench", "Measure sample preparation, student/teacher steps and the conv peak",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<posekd::train::BenchOptions>();
      app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--seconds", o->seconds, "minimum seconds per figure")->capture_default_str();
      app.add_option("--arch", o->arch, "student architecture")->capture_default_str();
      app.add_flag("--quick", o->quick, "short run (smoke test)");
      app.add_option("--profile", o->profile_dir,
                     "also profile 5 float and 5 QAT steps: Chrome traces into this folder, top operators printed");
      auto precision = std::make_shared<std::string>("auto");
      auto precision_only = std::make_shared<bool>(false);
      app.add_option("--precision", *precision,
                     "auto (bf16 where the CPU has bf16 units), fp32 or bf16: with bf16, also the bf16 figures next "
                     "to fp32")
          ->capture_default_str();
      app.add_flag("--precision-only", *precision_only, "only the fp32-vs-bf16 table");
      return [o, precision, precision_only]() {
        const posekd::Precision p = posekd::resolve_precision(*precision);
        std::printf("%s\n%s\n", posekd::describe_precision(p, *precision).c_str(),
                    posekd::memory_description().c_str());
        if (!*precision_only) {
          auto r = posekd::train::run_bench(*o);
          std::printf("threads: %d, OpenMP waits: %s\n\n%s", r.threads, posekd::omp_wait_description().c_str(),
                      r.text().c_str());
        }
        if (p == posekd::Precision::bf16) {
          posekd::train::PrecisionBenchOptions po;
          po.threads = o->threads, po.seconds = o->seconds, po.arch = o->arch, po.quick = o->quick;
          po.profile_dir = o->profile_dir;
          auto r = posekd::train::run_precision_bench(po);
          std::printf("\nfp32 vs bf16 (threads: %d, OpenMP waits: %s)\n\n%s", r.threads,
                      posekd::omp_wait_description().c_str(), r.text().c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_bench
