#include "posekd/cli/recipe_options.h"

#include <CLI/CLI.hpp>

namespace posekd::cli {

void add_augment_options(CLI::App& app, bool& no_augment, data::AugmentConfig& a) {
  auto* g = app.add_option_group("augmentation",
                                 "random geometric and photometric changes of every training sample, "
                                 "drawn from (seed, view, image); the targets move with the picture");
  g->add_flag("--no-augment", no_augment, "train on the letterboxed images as they are (the seed's behaviour)");
  g->add_option("--scale-min", a.scale_min, "smallest zoom of the picture (1 = fits the input)")->capture_default_str();
  g->add_option("--scale-max", a.scale_max, "largest zoom")->capture_default_str();
  g->add_option("--rotate", a.rotate_deg, "rotation range, ± degrees")->capture_default_str();
  g->add_option("--shift", a.shift, "centre jitter, ± fraction of the input size")->capture_default_str();
  g->add_option("--flip", a.flip_prob, "probability of a left-right flip (left/right keypoints swap)")
      ->capture_default_str();
  g->add_option("--brightness", a.brightness, "brightness jitter, ± fraction of 255")->capture_default_str();
  g->add_option("--contrast", a.contrast, "contrast jitter, ± fraction")->capture_default_str();
  g->add_option("--saturation", a.saturation, "saturation jitter, ± fraction")->capture_default_str();
  g->add_option("--hue", a.hue_deg, "hue jitter, ± degrees")->capture_default_str();
  g->add_option("--blur", a.blur_prob, "probability of a Gaussian blur (sigma 0.5-1.5 input pixels)")
      ->capture_default_str();
  g->add_option("--augment-views", a.views,
                "distinct views per image (epoch % N); with a teacher, its outputs for each view are cached. "
                "0 = a new view every epoch, teacher run on every batch")
      ->capture_default_str();
}

void add_schedule_options(CLI::App& app, std::string& kind, std::int64_t& warmup, double& end_factor,
                          double& weight_decay) {
  app.add_option("--lr-schedule", kind, "learning-rate schedule: constant | cosine | step")
      ->capture_default_str()
      ->check(CLI::IsMember({"constant", "cosine", "step"}));
  app.add_option("--warmup", warmup, "linear warm-up batches at the start (-1 = 2% of the float phase, at most 500)")
      ->capture_default_str();
  app.add_option("--lr-end-factor", end_factor, "the rate at the end of a phase, relative to its start")
      ->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "Adam's L2 weight decay")->capture_default_str();
}

void add_distributed_options(CLI::App& app, int& rank, int& world_size, int& local_rank, std::string& master_addr,
                             int& master_port, double& timeout, bool& sync_bn) {
  auto* d = app.add_option_group("distributed",
                                 "data-parallel training (torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, "
                                 "MASTER_ADDR, MASTER_PORT are read when these are not given; `posekd launch` sets "
                                 "them)");
  d->add_option("--rank", rank, "this process's rank");
  d->add_option("--world-size", world_size, "number of processes (--batch-size is the global batch)");
  d->add_option("--local-rank", local_rank, "rank on this machine");
  d->add_option("--master-addr", master_addr, "address of rank 0 (its TCPStore)");
  d->add_option("--master-port", master_port, "port of rank 0's TCPStore");
  d->add_option("--dist-timeout", timeout, "seconds before a silent rank is given up on")->capture_default_str();
  d->add_flag("--sync-bn,!--no-sync-bn", sync_bn,
              "BatchNorm statistics of the global batch, all-reduced over the processes (default; "
              "--no-sync-bn: each process's own slice)");
}

}  // namespace posekd::cli
