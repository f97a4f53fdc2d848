// `posekd train`: the seed's distillation loop with its defects fixed (spec/seed-pipeline.md):
// all persons, OpenPose-18 targets, crowd masks, augmentation, a learning-rate schedule, real ai8x
// QAT at the policy's batch with its own rate, atomic checkpoints with exact resume, SIGINT/SIGTERM
// handled, counted bad samples and NaN steps, data-parallel ranks.
//
// Trainer holds a run's state; its phases are methods, called in this order by run():
//   setup_processes -> load_data -> load_validation -> build_student -> load_teacher -> plan
//   -> resume -> open_teacher_cache -> loop { switch_to_qat, step, validate, save } -> finish
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "posekd/ai8x/policy.h"
#include "posekd/core/precision.h"
#include "posekd/data/coco.h"
#include "posekd/data/loader.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/config.h"
#include "posekd/train/distributed.h"
#include "posekd/train/log.h"
#include "posekd/train/schedule.h"
#include "posekd/train/teacher_cache.h"

namespace posekd::train {

struct TrainResult {
  std::int64_t batches_done = 0;  // batch counter at exit
  std::int64_t batches_run = 0;   // batches run by this invocation
  double last_loss = 0;
  bool interrupted = false;  // stopped by a signal or --stop-after (checkpoint written)
  double last_val_ap = -1;   // the last validation AP (-1: none)
  double best_val_ap = -1;   // the best validation AP (best.pth), -1: none
  std::string output_dir;
};

// The learning-rate schedule a config asks for, with its automatic warm-ups resolved, for a run
// whose QAT phase starts at `qat_start` (-1: none).
LrSchedule schedule_of(const TrainConfig& cfg, std::int64_t qat_start);

// The sample configuration (targets and augmentation) of a config.
data::SampleConfig sample_config_of(const TrainConfig& cfg);

class Trainer {
 public:
  // Checks the configuration; nothing is read or written yet. Throws posekd::Error when it is invalid.
  explicit Trainer(TrainConfig cfg);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Runs (or resumes) training. Throws posekd::Error on bad configuration or input.
  TrainResult run();

 private:
  void setup_processes();
  void load_data();
  void load_validation();
  void build_student();
  void load_teacher();
  void plan();  // QAT start, schedule, args.yaml
  void resume();
  void open_teacher_cache();
  void switch_to_qat();
  // One batch: data, teacher, the shared train_step. False when the step was skipped (non-finite).
  bool step();
  double validate();
  void log_progress(double loss, double student, double distill, double seconds);
  Checkpoint make_checkpoint() const;
  void save(bool with_batch_file, bool is_best);
  void finish();
  void rank_by_rank(const std::function<void()>& f);  // rank 0 first, each rank in turn
  void broadcast_model(bool with_params);
  data::LoaderState agreed_loader_state();
  std::pair<torch::Tensor, torch::Tensor> teacher_outputs(const data::Batch& b);

  TrainConfig cfg_;
  // processes
  DistOptions dopt_;
  int rank_ = 0, world_ = 1, local_batch_ = 0, threads_ = 1;
  Precision precision_ = Precision::fp32;
  std::unique_ptr<TrainLog> log_;
  std::unique_ptr<Distributed> dist_;
  std::unique_ptr<GradSync> gsync_;
  // data
  std::string ann_, images_;
  data::CocoDataset dataset_;
  data::SampleConfig sample_cfg_;
  std::optional<data::CocoDataset> val_;
  std::string val_ann_;
  std::unique_ptr<data::Loader> loader_;
  // models
  std::shared_ptr<model::Student> student_;
  model::TeacherWrapper teacher_{nullptr};
  std::optional<TeacherCache> cache_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  ai8x::QatPolicy policy_;
  std::int64_t qat_start_ = -1;
  LrSchedule schedule_;
  // progress (what a checkpoint holds)
  std::int64_t batch_ = 0;
  std::string phase_ = "float";
  double best_loss_ = 1e30, last_loss_ = 0, best_metric_ = -1;
  std::int64_t nonfinite_skipped_ = 0;
  int nonfinite_in_row_ = 0;
  RunningAverage avg_;
  data::LoaderState start_state_, ckpt_state_;
  double ema_secs_ = 0;
  TrainResult result_;
};

// Trainer(cfg).run().
TrainResult run_training(const TrainConfig& cfg);

// Installs SIGINT/SIGTERM handlers that ask the running training to stop after the current batch.
void install_stop_handlers();
// For tests: request a stop as a signal would.
void request_stop();

}  // namespace posekd::train
