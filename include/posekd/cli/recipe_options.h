// The training-recipe flags `train` and `train-teacher` share: augmentation, the learning-rate
// schedule and data-parallel training. One place, so the two commands spell and document them alike.
#pragma once
#include <cstdint>
#include <string>

#include "posekd/data/augment.h"

namespace CLI {
class App;
}

namespace posekd::cli {

// --no-augment, --scale-min/--scale-max, --rotate, --shift, --flip, --brightness, --contrast,
// --saturation, --hue, --blur, --augment-views.
void add_augment_options(CLI::App& app, bool& no_augment, data::AugmentConfig& augment);

// --lr-schedule, --warmup, --lr-end-factor, --weight-decay.
void add_schedule_options(CLI::App& app, std::string& kind, std::int64_t& warmup, double& end_factor,
                          double& weight_decay);

// The "distributed" group: --rank, --world-size, --local-rank, --master-addr, --master-port,
// --dist-timeout, --sync-bn/--no-sync-bn (torchrun's variables are read when these are not given).
void add_distributed_options(CLI::App& app, int& rank, int& world_size, int& local_rank, std::string& master_addr,
                             int& master_port, double& timeout, bool& sync_bn);

}  // namespace posekd::cli
