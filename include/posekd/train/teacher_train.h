// `posekd train-teacher`: trains the Lightweight-OpenPose teacher architecture from scratch (no
// ImageNet weights: nothing is downloaded) at a configurable input size, with upstream's loss (the
// masked L2 of every stage's heatmaps and PAFs, summed, /2/B). Used by the demo, where no released
// teacher exists; the result loads with `--teacher` like the released checkpoint (upstream layout:
// {'state_dict', 'optimizer', 'iter'}), plus 'posekd_teacher' {input_size, input_scale} so the
// distillation feeds it what it was trained on.
//
// Data-parallel (under `posekd launch`, torchrun's environment, or the dist_* fields): as `posekd
// train` does (train/distributed.h), --batch-size is the global batch and each rank trains on its
// slice of it, gradients are averaged over the ranks while backward runs, the BatchNorms use the
// global batch's statistics unless sync_bn is false, and rank 0 alone writes teacher.pth and the log.
#pragma once
#include <cstdint>
#include <string>

#include "posekd/data/augment.h"
#include "posekd/train/schedule.h"

namespace posekd::train {

struct TeacherTrainConfig {
  std::string ann, images;
  std::int64_t subset = 0;
  int input_size = 128;  // multiple of 8; the maps are input_size / 8
  int num_refinement_stages = 1;
  int batch_size = 8;
  std::int64_t total_batches = 1000;
  double lr = 5e-4;
  // Learning-rate schedule (train/schedule.h, one phase): linear warm-up over the first
  // `warmup_batches` batches, then `lr_schedule` down to lr * lr_end_factor at total_batches.
  std::string lr_schedule = "cosine";
  std::int64_t warmup_batches = 0;
  double lr_end_factor = 0.05;
  double weight_decay = 0;
  // Augmentation (data/augment.h), on unless no_augment.
  bool no_augment = false;
  data::AugmentConfig augment{true};
  std::int64_t save_every = 200;
  std::string output = "teacher_train";
  std::string precision = "auto";  // auto | fp32 | bf16: LibTorch's CPU autocast around the forward
  int threads = 0, workers = 2;
  std::uint64_t seed = 0;
  bool quiet = false;
  std::int64_t stop_after = 0;
  // Data-parallel group (-1 / "": from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
  int dist_rank = -1, dist_world_size = -1, dist_local_rank = -1;
  std::string dist_master_addr;
  int dist_master_port = -1;
  double dist_timeout = 1800;
  bool sync_bn = true;  // with several processes: BatchNorm over the global batch (SyncBN)
};

struct TeacherTrainResult {
  std::int64_t batches_done = 0, batches_run = 0;
  double first_loss = 0, last_loss = 0;
  double seconds = 0;      // wall time of this run
  std::string checkpoint;  // <output>/teacher.pth
};

TeacherTrainResult run_teacher_training(const TeacherTrainConfig& cfg);

// The schedule of a teacher run, and the learning rate of batch `batch` (0-based) under it.
LrSchedule teacher_schedule(const TeacherTrainConfig& cfg);
double teacher_lr_at(const TeacherTrainConfig& cfg, std::int64_t batch);

}  // namespace posekd::train
