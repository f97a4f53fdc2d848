// `posekd env`: what this machine and process give posekd (CPU, precision, threads, OpenMP waits,
// memory pages), for bug reports and for checking that the start-up settings took effect.
#include <torch/torch.h>
#include <torch/version.h>
#include <CLI/CLI.hpp>
#include <dnnl.hpp>

#include <cstdio>

#include "posekd/cli/registry.h"
#include "posekd/core/alloc.h"
#include "posekd/core/huge_pages.h"
#include "posekd/core/omp_wait.h"
#include "posekd/core/precision.h"
#include "posekd/core/threads.h"

namespace posekd::cli::cmd_env {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg(
    "env", "Print what this machine and process give posekd (CPU, precision, threads, memory pages)",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto probe_mib = std::make_shared<int>(64);
      app.add_option("--probe-mib", *probe_mib,
                     "write a tensor of this many MiB and report how much of it sits on huge pages (0: skip)")
          ->check(CLI::Range(0, 4096))
          ->capture_default_str();
      return [probe_mib]() {
        const auto& f = posekd::cpu_features();
        const auto* v = dnnl::version();
        std::printf("cpu: %s (%s), %d hardware threads\n", f.model.empty() ? "unknown" : f.model.c_str(),
                    f.flags().c_str(), posekd::hardware_threads());
        std::printf("%s\n", posekd::describe_precision(posekd::resolve_precision("auto"), "auto").c_str());
        std::printf("LibTorch %s, oneDNN %d.%d.%d\n", TORCH_VERSION, v->major, v->minor, v->patch);
        std::printf("OpenMP waits: %s\n", posekd::omp_wait_description().c_str());
        std::printf("memory: %s\n", posekd::memory_description().c_str());
        if (*probe_mib > 0) {
          const int64_t before = posekd::anon_huge_page_bytes();
          auto t = torch::ones({static_cast<int64_t>(*probe_mib) << 18});  // MiB of fp32
          const int64_t after = posekd::anon_huge_page_bytes();
          if (before < 0 || after < 0)
            std::printf("huge pages: unknown (/proc/self/smaps_rollup unreadable)\n");
          else
            std::printf("huge pages: %lld MiB of this process, %lld MiB more after writing a %d MiB tensor\n",
                        static_cast<long long>(after >> 20), static_cast<long long>((after - before) >> 20),
                        *probe_mib);
          (void)t;
        }
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_env
