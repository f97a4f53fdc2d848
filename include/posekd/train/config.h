// Every option of `posekd train`, with the seed's defaults where the seed has the option.
#pragma once
#include <cstdint>
#include <string>

#include "posekd/data/augment.h"

namespace posekd::train {

struct TrainConfig {
  // --- data
  std::string data;  // COCO root: annotations/person_keypoints_<split>.json and <split>/ images
  std::string split = "train2017";
  std::string ann;          // explicit annotation JSON (overrides --data)
  std::string images;       // explicit image folder (overrides --data)
  std::string prepared;     // teacher repo's prepared_train_annotation.pkl (alternative to --ann)
  std::int64_t subset = 0;  // first N images with at least one keypointed person; 0 = all
  std::string val_data, val_split = "val2017", val_ann, val_images;
  std::int64_t val_every = 0;
  // --- models
  std::string arch = "seed";
  std::string teacher;  // teacher checkpoint; empty = student loss only
  double teacher_input_scale = 0.5;
  std::string teacher_cache;      // teacher-output cache file ("" = <output>/teacher_cache.bin)
  bool no_teacher_cache = false;  // run the teacher on every batch
  std::int64_t val_subset = 0;    // validate on the first N validation images (0 = all)
  // --- optimisation (the seed's batch, length and rate; its constant rate became a schedule)
  int batch_size = 8;
  std::int64_t total_batches = 15000;
  double lr = 1e-3;
  // constant | cosine | step (train/schedule.h). Constant, as the seed: on 1,100-batch runs a cosine
  // decay cut the student's AP (docs/accuracy.md); the QAT phase still gets its own lower rate.
  std::string lr_schedule = "constant";
  std::int64_t warmup = -1;      // warm-up batches; -1 = 2% of the float phase, at most 500
  double lr_end_factor = 0.05;   // the rate at the end of each phase, relative to its start
  double weight_decay = 0;       // Adam's L2 weight decay
  double qat_lr = -1;            // rate after the QAT switch; -1 = lr
  std::int64_t qat_warmup = -1;  // warm-up after the switch; -1 = 2% of the QAT phase, at most 500
  // --- augmentation (data/augment.h); no_augment = the seed's fixed letterboxed images
  bool no_augment = false;
  data::AugmentConfig augment{true};
  double kd_student_wt = 0.3, kd_distill_wt = 0.7;
  // --- checkpoints (seed defaults)
  std::int64_t save_every = 100;
  std::string checkpoint;  // start from this checkpoint (highest priority)
  std::string resume;      // resume from this checkpoint
  std::string output = "pose_train";
  int keep = 0;  // keep only the newest N batch_*.pth (0 = keep all)
  // --- QAT
  std::string qat_policy;  // ai8x policy YAML; empty = default (start at 60% of total_batches, 8 bit)
  bool no_qat = false;
  int calib_batches = 8;
  // --- runtime
  std::string precision = "auto";  // auto | fp32 | bf16 (core/precision.h): the student's convolutions, the teacher
  int threads = 0;                 // 0 = all cores
  int workers = 2;
  std::uint64_t seed = 0;
  bool deterministic = false;
  bool seed_compat_targets = false;
  double max_bad_fraction = 0.05;
  int max_nonfinite = 20;  // abort after this many consecutive NaN/Inf losses
  bool quiet = false;
  // Stop (checkpoint written, as on SIGINT) after this many batches of this invocation (0 = no limit).
  std::int64_t stop_after = 0;
  bool no_plot = false;  // do not write results.png at the end
  // --- distributed (torchrun conventions; -1 / "" = from RANK, WORLD_SIZE, LOCAL_RANK,
  // LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, else one process). batch_size is the GLOBAL batch.
  int dist_rank = -1, dist_world_size = -1, dist_local_rank = -1;
  std::string dist_master_addr;
  int dist_master_port = -1;
  double dist_timeout = 1800;  // seconds: rendezvous and each collective
  // SyncBN: with several processes, BatchNorm normalises with the global batch's statistics
  // (--no-sync-bn: each process's own, as PyTorch DDP without SyncBatchNorm).
  bool sync_bn = true;
};

}  // namespace posekd::train
