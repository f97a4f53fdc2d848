// `posekd demo`: the whole pipeline on synthetic people (what `make demo` runs).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "posekd/cli/config_option.h"
#include "posekd/cli/recipe_options.h"
#include "posekd/cli/registry.h"
#include "posekd/train/demo.h"

namespace posekd::cli::cmd_demo {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg(
    "demo", "Synthetic people -> teacher -> distilled QAT student -> AP table, int8, MAX78000 export, plots",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<posekd::train::DemoOptions>();
      auto& v = o->overrides;
      auto print = std::make_shared<bool>(false);
      posekd::cli::add_config_options(app, o, print);
      app.add_option("--out", o->out,
                     "output directory (its data/ teacher/ student_*/ export/ predictions/ are replaced)")
          ->capture_default_str();
      app.add_flag("--quick", o->quick, "a ~2 minute version (small data, few batches)");
      app.add_option("--precision", o->precision,
                     "auto (bf16 where the CPU has bf16 units) | fp32 | bf16: convolutions in training")
          ->capture_default_str();
      app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--seed", o->seed, "random seed (data and training)")->capture_default_str();
      app.add_flag("--quiet", o->quiet, "no per-batch lines");
      // Budget overrides (0 = the preset of the full or --quick demo).
      auto* g = app.add_option_group("budget", "override the preset budget (0 = preset)");
      g->add_option("--train-images", v.train_images, "synthetic training images");
      g->add_option("--val-images", v.val_images, "synthetic validation images");
      g->add_option("--teacher-batches", v.teacher_batches, "teacher training batches");
      g->add_option("--teacher-batch-size", v.teacher_batch, "teacher images per batch");
      g->add_option("--teacher-lr", v.teacher_lr, "teacher Adam learning rate (cosine decay to 5%)");
      g->add_option("--teacher-warmup", v.teacher_warmup, "teacher learning-rate warm-up batches");
      g->add_option("--teacher-stages", v.teacher_stages, "teacher refinement stages (-1 = preset, 0)");
      g->add_option("--student-batches", v.student_batches, "batches of each student");
      g->add_option("--student-batch-size", v.student_batch, "student images per batch");
      g->add_option("--student-lr", v.student_lr, "student Adam learning rate");
      g->add_option("--student-qat-lr", v.student_qat_lr, "student Adam learning rate after the QAT switch");
      g->add_option("--qat-fraction", v.qat_fraction, "QAT switches on at this fraction of the student batches");
      g->add_flag("--hard-data", o->hard_data,
                  "posekd synth's default (hard) people instead of the demo's easier ones");
      g->add_flag("--teacher-only", o->teacher_only, "stop after training and evaluating the teacher");
      posekd::cli::add_augment_options(app, o->no_augment, o->augment);
      app.add_flag_callback(
          "--augment", [o] { o->no_augment = false; },
          "augment teacher and students with train's defaults (the demo's default: none, "
          "measured better on its short budget)");
      return [o, print]() {
        if (*print) {
          std::fputs(posekd::train::to_yaml(*o).c_str(), stdout);
          return 0;
        }
        posekd::train::run_demo(*o);
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_demo
