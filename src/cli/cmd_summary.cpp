// `posekd summary --arch A | --checkpoint F [--qat-policy P] --device D`: parameter count, per-layer
// table and the fit check (weights counted at the bits of the QAT policy, or of the checkpoint's QAT
// layers, else 8).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "posekd/cli/registry.h"
#include "posekd/export/fit.h"
#include "posekd/export/latency.h"
#include "posekd/model/student.h"
#include "posekd/train/checkpoint.h"

namespace posekd::cli::cmd_summary {  // named: the commands share unity-build translation units
namespace {

struct Opts {
  std::string arch = "seed";
  std::string device = "MAX78000";
  std::string checkpoint, qat_policy;
  bool strict = false;
};

posekd::cli::Registration reg(
    "summary", "Per-layer table of a student and whether it fits a MAX78000/MAX78002",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<Opts>();
      app.add_option("--arch", o->arch, "student architecture: seed | ai85pose")->capture_default_str();
      app.add_option("--checkpoint", o->checkpoint,
                     "a student checkpoint: its architecture and, after QAT, its weight bits");
      app.add_option("--qat-policy", o->qat_policy,
                     "count weights at this ai8x QAT policy's weight_bits (and overrides)");
      app.add_option("--device", o->device, "MAX78000 | MAX78002")->capture_default_str();
      app.add_flag("--strict", o->strict, "exit with status 2 when the model does not fit");
      return [o]() {
        auto s = o->checkpoint.empty() ? posekd::model::make_student(o->arch)
                                       : posekd::train::load_student(o->checkpoint, o->arch);
        posekd::deploy::WeightBits bits = posekd::deploy::weight_bits_of(*s);
        if (!o->qat_policy.empty()) bits = posekd::deploy::weight_bits_of(posekd::ai8x::load_qat_policy(o->qat_policy));
        auto r = posekd::deploy::check_fit(*s, posekd::deploy::device_limits(o->device), &bits);
        std::printf("student %s on %s%s\n\n", s->arch().c_str(), r.device.name.c_str(),
                    s->folded_input() ? " (input folded 2x2: 12x64x64)" : " (input 3x128x128)");
        std::fputs(posekd::deploy::format_fit_report(r).c_str(), stdout);
        std::printf("\n");
        std::fputs(posekd::deploy::format_latency(posekd::deploy::network_latency(r)).c_str(), stdout);
        std::fputs(posekd::deploy::format_decode_estimate().c_str(), stdout);
        return (o->strict && !r.fits()) ? 2 : 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_summary
