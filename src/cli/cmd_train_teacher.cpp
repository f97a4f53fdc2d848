// `posekd train-teacher`: the Lightweight-OpenPose teacher trained from scratch (used by the demo).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "posekd/cli/config_option.h"
#include "posekd/cli/recipe_options.h"
#include "posekd/cli/registry.h"
#include "posekd/core/error.h"
#include "posekd/data/coco.h"
#include "posekd/train/teacher_train.h"

namespace posekd::cli::cmd_train_teacher {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg(
    "train-teacher", "Train the Lightweight-OpenPose teacher architecture from scratch",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto c = std::make_shared<posekd::train::TeacherTrainConfig>();
      auto data = std::make_shared<std::string>();
      auto split = std::make_shared<std::string>("train2017");
      auto print = std::make_shared<bool>(false);
      posekd::cli::add_config_options(app, c, print);
      app.add_option("--data", *data, "COCO root (annotations/person_keypoints_<split>.json, <split>/)");
      app.add_option("--split", *split, "split under --data")->capture_default_str();
      app.add_option("--ann", c->ann, "annotation JSON (overrides --data)");
      app.add_option("--images", c->images, "image folder (overrides --data)");
      app.add_option("--subset", c->subset, "first N images with a keypointed person (0 = all)")->capture_default_str();
      app.add_option("--input-size", c->input_size, "square input size (multiple of 8)")->capture_default_str();
      app.add_option("--refinement-stages", c->num_refinement_stages, "refinement stages")->capture_default_str();
      app.add_option("--batch-size", c->batch_size, "images per batch")->capture_default_str();
      app.add_option("--total-batches", c->total_batches, "train until this many batches")->capture_default_str();
      app.add_option("--lr", c->lr, "Adam learning rate (peak)")->capture_default_str();
      posekd::cli::add_schedule_options(app, c->lr_schedule, c->warmup_batches, c->lr_end_factor, c->weight_decay);
      posekd::cli::add_augment_options(app, c->no_augment, c->augment);
      app.add_option("--save-every", c->save_every, "checkpoint every N batches")->capture_default_str();
      app.add_option("--output", c->output, "output directory (teacher.pth, log.txt)")->capture_default_str();
      app.add_option("--precision", c->precision,
                     "auto (bf16 where the CPU has bf16 units) | fp32 | bf16: convolutions in training")
          ->capture_default_str();
      app.add_option("--threads", c->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--workers", c->workers, "data loader threads")->capture_default_str();
      app.add_option("--seed", c->seed, "random seed")->capture_default_str();
      app.add_option("--stop-after", c->stop_after, "stop after N batches of this run")->capture_default_str();
      app.add_flag("--quiet", c->quiet, "log to log.txt only");
      posekd::cli::add_distributed_options(app, c->dist_rank, c->dist_world_size, c->dist_local_rank,
                                           c->dist_master_addr, c->dist_master_port, c->dist_timeout, c->sync_bn);
      return [c, data, split, print]() {
        if (!data->empty()) {
          if (c->ann.empty()) c->ann = posekd::data::coco_annotation_path(*data, *split);
          if (c->images.empty()) c->images = posekd::data::coco_image_dir(*data, *split);
        }
        if (*print) {
          std::fputs(posekd::train::to_yaml(*c).c_str(), stdout);
          return 0;
        }
        if (c->ann.empty()) throw posekd::Error("train-teacher: give --data DIR or --ann FILE --images DIR");
        posekd::train::run_teacher_training(*c);
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_train_teacher
