// `posekd train`: distil the teacher into the student (the seed's loop, fixed), with QAT.
#include <CLI/CLI.hpp>

#include <memory>

#include <cstdio>

#include "posekd/cli/config_option.h"
#include "posekd/cli/recipe_options.h"
#include "posekd/cli/registry.h"
#include "posekd/train/trainer.h"

namespace posekd::cli::cmd_train {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg(
    "train", "Train a student (knowledge distillation from a teacher, then ai8x QAT)",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto c = std::make_shared<posekd::train::TrainConfig>();
      auto print = std::make_shared<bool>(false);
      posekd::cli::add_config_options(app, c, print);
      app.add_option("--data", c->data, "COCO root (annotations/person_keypoints_<split>.json, <split>/ images)");
      app.add_option("--split", c->split, "split name under --data")->capture_default_str();
      app.add_option("--ann", c->ann, "annotation JSON (overrides --data)");
      app.add_option("--images", c->images, "image folder (overrides --data)");
      app.add_option("--prepared", c->prepared, "teacher repo's prepared_train_annotation.pkl (with --images)");
      app.add_option("--subset", c->subset, "use the first N images that have a person with keypoints (0 = all)")
          ->capture_default_str();
      app.add_option("--val-data", c->val_data, "validation COCO root (annotations/, <val-split>/)");
      app.add_option("--val-split", c->val_split, "split name under --val-data")->capture_default_str();
      app.add_option("--val-ann", c->val_ann, "validation annotation JSON (overrides --val-data)");
      app.add_option("--val-images", c->val_images, "validation image folder");
      app.add_option("--val-subset", c->val_subset, "validate on the first N validation images (0 = all)")
          ->capture_default_str();
      app.add_option("--val-every", c->val_every,
                     "validate every N batches (0 = only at the end); best.pth = best validation AP")
          ->capture_default_str();
      app.add_option("--arch", c->arch, "student architecture: seed | ai85pose")->capture_default_str();
      app.add_option("--teacher", c->teacher, "teacher checkpoint (omit: ground-truth loss only)");
      app.add_option("--teacher-input-scale", c->teacher_input_scale,
                     "multiply the teacher's input by this (0.5: the teacher's own (x-128)/256; 1.0: seed)")
          ->capture_default_str();
      app.add_option("--teacher-cache", c->teacher_cache,
                     "teacher-output cache file (default <output>/teacher_cache.bin)");
      app.add_flag("--no-teacher-cache", c->no_teacher_cache, "run the teacher on every batch instead of caching");
      app.add_option("--batch-size", c->batch_size, "images per batch")->capture_default_str();
      app.add_option("--total-batches", c->total_batches, "train until this many batches")->capture_default_str();
      app.add_option("--lr", c->lr, "Adam learning rate (the float phase's peak)")->capture_default_str();
      posekd::cli::add_schedule_options(app, c->lr_schedule, c->warmup, c->lr_end_factor, c->weight_decay);
      app.add_option("--qat-lr", c->qat_lr, "learning rate after the QAT switch (-1 = --lr)")->capture_default_str();
      app.add_option("--qat-warmup", c->qat_warmup,
                     "warm-up batches after the QAT switch (-1 = 2% of the QAT phase, at most 500)")
          ->capture_default_str();
      posekd::cli::add_augment_options(app, c->no_augment, c->augment);
      app.add_option("--kd-student-wt", c->kd_student_wt, "weight of the ground-truth loss")->capture_default_str();
      app.add_option("--kd-distill-wt", c->kd_distill_wt, "weight of the distillation loss")->capture_default_str();
      app.add_option("--save-every", c->save_every, "checkpoint every N batches")->capture_default_str();
      app.add_option("--checkpoint", c->checkpoint, "start from this checkpoint");
      app.add_option("--resume", c->resume, "resume from this checkpoint");
      app.add_option("--output", c->output, "output directory")->capture_default_str();
      app.add_option("--keep", c->keep, "keep only the newest N batch_*.pth (0 = all)")->capture_default_str();
      app.add_option("--qat-policy", c->qat_policy,
                     "ai8x QAT policy YAML (start_epoch or start_batch, weight_bits, ...)");
      app.add_flag("--no-qat", c->no_qat, "float training only (the seed's behaviour)");
      app.add_option("--calib-batches", c->calib_batches, "training batches for the QAT activation calibration")
          ->capture_default_str();
      app.add_option("--precision", c->precision,
                     "auto (bf16 where the CPU has bf16 units) | fp32 | bf16: convolutions in training")
          ->capture_default_str();
      app.add_option("--threads", c->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--workers", c->workers, "data loader threads")->capture_default_str();
      app.add_option("--seed", c->seed, "random seed (data order)")->capture_default_str();
      app.add_flag("--deterministic", c->deterministic,
                   "deterministic algorithms (with fixed --threads: bit-exact resume)");
      app.add_flag("--seed-compat-targets", c->seed_compat_targets,
                   "reproduce the seed's COCO-order target bug (for comparison only)");
      app.add_option("--max-bad-fraction", c->max_bad_fraction,
                     "stop when more samples than this fraction are unreadable")
          ->capture_default_str();
      app.add_flag("--quiet", c->quiet, "log to log.txt only");
      app.add_option("--stop-after", c->stop_after,
                     "stop after N batches of this run, checkpoint written (resume later)")
          ->capture_default_str();
      app.add_flag("--no-plot", c->no_plot, "do not write results.png at the end");
      posekd::cli::add_distributed_options(app, c->dist_rank, c->dist_world_size, c->dist_local_rank,
                                           c->dist_master_addr, c->dist_master_port, c->dist_timeout, c->sync_bn);
      return [c, print]() {
        if (*print) {
          std::fputs(posekd::train::to_yaml(*c).c_str(), stdout);
          return 0;
        }
        posekd::train::install_stop_handlers();
        auto r = posekd::train::run_training(*c);
        (void)r;  // a signal-stopped run wrote its checkpoint: exit 0 as well
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_train
