#include "posekd/train/trainer.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>

#include "posekd/ai8x/calibration.h"
#include "posekd/ai8x/policy.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/alloc.h"
#include "posekd/core/error.h"
#include "posekd/core/omp_wait.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/loader.h"
#include "posekd/data/prepared.h"
#include "posekd/data/sample.h"
#include "posekd/export/fit.h"
#include "posekd/infer/evaluate.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "posekd/train/amp.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/config_io.h"
#include "posekd/train/distributed.h"
#include "posekd/train/fused_adam.h"
#include "posekd/train/log.h"
#include "posekd/train/loss.h"
#include "posekd/train/plot.h"
#include "posekd/train/step.h"
#include "posekd/train/teacher_cache.h"

namespace posekd::train {
namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

struct DataPaths {
  std::string ann, images;
};

DataPaths resolve_data(const TrainConfig& cfg) {
  DataPaths p{cfg.ann, cfg.images};
  if (!cfg.prepared.empty()) {  // the teacher repo's prepared_train_annotation.pkl instead of COCO JSON
    if (cfg.images.empty()) throw Error("train: --prepared needs --images DIR (the folder the pickle's paths are in)");
    if (!fs::exists(cfg.prepared)) fail_file(cfg.prepared, "prepared annotation file does not exist");
    if (!fs::is_directory(cfg.images)) fail_file(cfg.images, "image folder does not exist");
    return {cfg.prepared, cfg.images};
  }
  if (!cfg.data.empty()) {
    if (p.ann.empty()) p.ann = data::coco_annotation_path(cfg.data, cfg.split);
    if (p.images.empty()) p.images = data::coco_image_dir(cfg.data, cfg.split);
  }
  if (p.ann.empty()) throw Error("train: no training data: give --data DIR (COCO root) or --ann FILE --images DIR");
  if (p.images.empty()) p.images = fs::path(p.ann).parent_path().string();
  if (!fs::exists(p.ann)) fail_file(p.ann, "annotation file does not exist");
  if (!fs::is_directory(p.images)) fail_file(p.images, "image folder does not exist");
  return p;
}

std::string teacher_identity(const std::string& path) {
  if (path.empty()) return "";
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  return fmt::format("{}:{}", fs::absolute(path).string(), ec ? 0 : size);
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_file(path, "cannot read");
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Fault injection for the distributed tests (docs/distributed.md): POSEKD_FAULT_KILL="RANK:BATCH" makes
// that rank kill itself (SIGKILL, as the OOM killer or a lost machine would) when it is about to run
// batch BATCH+1; "RANK:BATCH:hang" makes it stop (SIGSTOP) instead, a hung machine.
struct FaultPoint {
  int rank = -1;
  std::int64_t batch = -1;
  bool hang = false;
};
FaultPoint fault_point() {
  const char* v = std::getenv("POSEKD_FAULT_KILL");
  if (v == nullptr) return {};
  int r = -1;
  long long b = -1;
  char mode[8] = {0};
  const int n = std::sscanf(v, "%d:%lld:%7s", &r, &b, mode);
  if (n < 2) return {};
  return {r, static_cast<std::int64_t>(b), n == 3 && std::string(mode) == "hang"};
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

void request_stop() { g_stop.store(true); }

LrSchedule schedule_of(const TrainConfig& cfg, std::int64_t qat_start) {
  LrSchedule s;
  s.kind = cfg.lr_schedule;
  s.lr = cfg.lr;
  s.end_factor = cfg.lr_end_factor;
  s.total = cfg.total_batches;
  s.qat_start = qat_start >= 0 && qat_start < cfg.total_batches ? qat_start : -1;
  const std::int64_t float_len = s.qat_start >= 0 ? s.qat_start : cfg.total_batches;
  s.warmup = cfg.warmup >= 0 ? cfg.warmup : std::min<std::int64_t>(500, float_len / 50);
  // The QAT phase goes on at the float rate: since the loss reads the wide heads at the targets'
  // scale (model::Student::forward_maps) the switch changes only the rounding, and the students of
  // the demo ended at AP 0.198-0.211 with it against 0.124-0.143 at lr / 10 (2 seeds each,
  // docs/accuracy.md). Its warm-up follows the float phase's rule; 0, 50 and 200 batches measured
  // alike.
  s.qat_lr = cfg.qat_lr > 0 ? cfg.qat_lr : cfg.lr;
  const std::int64_t qat_len = s.qat_start >= 0 ? cfg.total_batches - s.qat_start : 0;
  s.qat_warmup = cfg.qat_warmup >= 0 ? cfg.qat_warmup : std::min<std::int64_t>(500, qat_len / 50);
  return s;
}

data::SampleConfig sample_config_of(const TrainConfig& cfg) {
  data::SampleConfig sc;
  sc.seed_compat_targets = cfg.seed_compat_targets;
  sc.augment = cfg.augment;
  sc.augment.enabled = !cfg.no_augment && cfg.augment.enabled;
  return sc;
}

Trainer::Trainer(TrainConfig cfg) : cfg_(std::move(cfg)) {
  if (cfg_.batch_size < 1) throw Error("train: --batch-size must be at least 1");
  if (cfg_.total_batches < 1) throw Error("train: --total-batches must be at least 1");
  if (cfg_.save_every < 1) throw Error("train: --save-every must be at least 1");
  if (cfg_.val_subset < 0) throw Error("train: --val-subset must be >= 0");
  if (!(cfg_.weight_decay >= 0)) throw Error("train: --weight-decay must be >= 0");
  const auto& a = cfg_.augment;
  if (!(a.scale_min > 0 && a.scale_max >= a.scale_min) || !(a.rotate_deg >= 0) || !(a.shift >= 0) ||
      !(a.flip_prob >= 0 && a.flip_prob <= 1) || !(a.blur_prob >= 0 && a.blur_prob <= 1) || a.views < 0)
    throw Error(
        "train: augmentation ranges are invalid (0 < --scale-min <= --scale-max, --rotate >= 0, --shift >= 0, "
        "--flip and --blur in [0, 1], --augment-views >= 0)");
  schedule_of(cfg_, -1).validate("train");
  sample_cfg_ = sample_config_of(cfg_);
}

Trainer::~Trainer() = default;

void Trainer::rank_by_rank(const std::function<void()>& f) {
  if (!dist_) return f();
  for (int r = 0; r < world_; ++r) {
    if (r == rank_) f();
    dist_->barrier();
  }
}

void Trainer::broadcast_model(bool with_params) {
  std::vector<torch::Tensor> state;
  if (with_params) state = student_->parameters();
  for (auto& t : student_->buffers()) state.push_back(t);
  dist_->broadcast(state);
}

void Trainer::setup_processes() {
  // One process, or a data-parallel group (torchrun's environment or the --rank... flags).
  dopt_.rank = cfg_.dist_rank;
  dopt_.world_size = cfg_.dist_world_size;
  dopt_.local_rank = cfg_.dist_local_rank;
  dopt_.master_addr = cfg_.dist_master_addr;
  dopt_.master_port = cfg_.dist_master_port;
  dopt_.timeout_s = cfg_.dist_timeout;
  dopt_ = resolve_dist_options(dopt_);
  rank_ = dopt_.rank;
  world_ = dopt_.world_size;
  local_batch_ = per_rank_batch(cfg_.batch_size, world_);
  int want_threads = cfg_.threads;  // processes on one machine share its cores
  if (want_threads <= 0 && dopt_.local_world_size > 1)
    want_threads = std::max(1, hardware_threads() / dopt_.local_world_size);
  threads_ = set_compute_threads(want_threads);
  precision_ = resolve_precision(cfg_.precision);
  if (cfg_.deterministic) at::globalContext().setDeterministicAlgorithms(true, false);

  std::error_code ec;
  fs::create_directories(cfg_.output, ec);
  if (ec) fail_file(cfg_.output, "cannot create the output directory: " + ec.message());
  const bool main_rank = rank_ == 0;  // rank 0 alone writes log.txt, results.csv and checkpoints
  log_ = std::make_unique<TrainLog>(main_rank ? cfg_.output : std::string(), main_rank ? cfg_.quiet : true);
  log_->line("Precision: " + describe_precision(precision_, cfg_.precision));
  if (world_ > 1) {
    dist_ = std::make_unique<Distributed>(dopt_);
    log_->line(fmt::format("Distributed: {} processes (Gloo via {}:{}), global batch {} = {} x {}, {} threads each",
                           world_, dopt_.master_addr, dopt_.master_port, cfg_.batch_size, world_, local_batch_,
                           threads_));
  }
  if (main_rank) {  // a run killed during a checkpoint write leaves NAME.tmp.<pid>; remove those of dead processes
    int removed = 0;
    for (const auto& e : fs::directory_iterator(cfg_.output, ec)) {
      const std::string n = e.path().filename().string();
      const auto at = n.rfind(".tmp.");
      if (at == std::string::npos || at + 5 >= n.size()) continue;
      const std::string pid = n.substr(at + 5);
      if (pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9) continue;
      const long p = std::stol(pid);
      if (p > 0 && ::kill(static_cast<pid_t>(p), 0) != 0 && errno == ESRCH && fs::remove(e.path(), ec)) ++removed;
    }
    if (removed > 0)
      log_->line(fmt::format("Removed {} temporary file(s) left by an interrupted checkpoint write", removed));
  }
}

void Trainer::load_data() {
  const DataPaths paths = resolve_data(cfg_);
  ann_ = paths.ann;
  images_ = paths.images;
  data::CocoLoadOptions lo;
  lo.subset = cfg_.subset;
  lo.cache_dir = (fs::path(cfg_.output) / "cache").string();
  rank_by_rank([&] {  // rank 0 writes the annotation cache, the others read it
    if (!cfg_.prepared.empty()) {
      dataset_ = data::load_prepared_annotations(cfg_.prepared);
      dataset_.image_dir = paths.images;
      if (cfg_.subset > 0) {
        std::vector<data::CocoImage> keep;
        for (auto& im : dataset_.images)
          if (static_cast<std::int64_t>(keep.size()) < cfg_.subset && data::has_keypoint_person(im)) keep.push_back(im);
        dataset_.images = std::move(keep);
      }
    } else {
      dataset_ = data::load_coco(paths.ann, paths.images, lo);
    }
  });
  std::int64_t n_people = 0;
  for (const auto& im : dataset_.images) n_people += static_cast<std::int64_t>(im.persons.size());
  log_->line(fmt::format("Data: {} ({} images, {} persons, {} annotations skipped)", paths.ann, dataset_.images.size(),
                         n_people, dataset_.skipped_annotations));
  for (const auto& w : dataset_.warnings) log_->line("  warning: " + w);
  log_->line("Augmentation: " + data::describe(sample_cfg_.augment));
}

void Trainer::load_validation() {
  // COCO keypoint AP on a validation set; best.pth becomes the best validation AP. Rank 0 alone validates.
  std::string val_img = cfg_.val_images;
  val_ann_ = cfg_.val_ann;
  if (!cfg_.val_data.empty()) {
    if (val_ann_.empty()) val_ann_ = data::coco_annotation_path(cfg_.val_data, cfg_.val_split);
    if (val_img.empty()) val_img = data::coco_image_dir(cfg_.val_data, cfg_.val_split);
  }
  if (val_ann_.empty() || rank_ != 0) return;
  if (!fs::exists(val_ann_)) fail_file(val_ann_, "validation annotation file does not exist");
  if (val_img.empty()) val_img = fs::path(val_ann_).parent_path().string();
  data::CocoLoadOptions vo;
  vo.cache_dir = (fs::path(cfg_.output) / "cache").string();
  val_ = data::load_coco(val_ann_, val_img, vo);
  const size_t all = val_->images.size();
  if (cfg_.val_subset > 0 && static_cast<size_t>(cfg_.val_subset) < all)
    val_->images.resize(static_cast<size_t>(cfg_.val_subset));
  log_->line(fmt::format("Validation: {} ({} of {} images), every {} batches", val_ann_, val_->images.size(), all,
                         cfg_.val_every > 0 ? std::to_string(cfg_.val_every) : std::string("(end only)")));
}

void Trainer::build_student() {
  torch::manual_seed(cfg_.seed);  // the student's initial weights are a function of --seed
  student_ = model::make_student(cfg_.arch);
  student_->train();
}

void Trainer::load_teacher() {
  if (cfg_.teacher.empty()) {
    log_->line("No --teacher: training on the ground-truth loss only (student loss, weight 1).");
    return;
  }
  const model::LoadedTeacher t = model::load_teacher(cfg_.teacher, cfg_.teacher_input_scale, true);
  if (t.info.from_metadata)
    log_->line(fmt::format("Teacher {} was trained by posekd at {}x{}: feeding it that size, input scale {}",
                           cfg_.teacher, t.info.input_size, t.info.input_size, t.info.input_scale));
  model::TeacherOptions to = t.wrapper_options();
  to.precision = precision_;
  teacher_ = model::TeacherWrapper(t.net, to);  // frozen, eval mode
  const model::LoadReport& rep = t.report;
  std::string missing;
  for (size_t i = 0; i < rep.missing_names.size() && i < 10; ++i) missing += " " + rep.missing_names[i];
  log_->line(fmt::format("Teacher {}: {} entries loaded, {} missing, {} ignored{}{}", cfg_.teacher, rep.loaded,
                         rep.missing, rep.ignored, rep.missing ? "; missing:" : "", missing));
}

void Trainer::plan() {
  if (!cfg_.no_qat) {
    if (!cfg_.qat_policy.empty()) policy_ = ai8x::load_qat_policy(cfg_.qat_policy);
    if (policy_.start_batch >= 0) {
      qat_start_ = policy_.start_batch;
    } else if (!cfg_.qat_policy.empty() && policy_.start_epoch >= 0) {
      // An epoch is a pass over the training samples: the images with a keypointed person.
      std::int64_t n = 0;
      for (const auto& im : dataset_.images) n += data::has_keypoint_person(im) ? 1 : 0;
      n = std::max<std::int64_t>(1, n);
      qat_start_ = policy_.start_epoch * ((n + cfg_.batch_size - 1) / cfg_.batch_size);
    } else {
      qat_start_ = static_cast<std::int64_t>(0.6 * static_cast<double>(cfg_.total_batches));
    }
  }
  // The same fit check as `posekd summary` / `posekd export`: say now, not after days of training.
  const deploy::WeightBits bits = deploy::weight_bits_of(policy_);  // the bits QAT will give it
  auto fit = deploy::check_fit(*student_, deploy::device_limits("MAX78000"), cfg_.no_qat ? nullptr : &bits);
  if (fit.fits()) {
    log_->line(fmt::format("Student {} fits MAX78000: {} of {} weight bytes, {} of {} kernel words on processor 0",
                           cfg_.arch, fit.total_weight_bytes, fit.device.weight_bytes, fit.total_words_proc0,
                           fit.device.words_proc0));
  } else {
    std::string rules;
    for (const auto& v : fit.violations) rules += "\n  - " + v;
    log_->line(
        fmt::format("WARNING: student {} does not fit MAX78000 (posekd export will refuse it); "
                    "use --arch ai85pose for one that does:{}",
                    cfg_.arch, rules));
  }
  schedule_ = schedule_of(cfg_, qat_start_);
  schedule_.validate("train");
  if (rank_ == 0) {  // every resolved option: `posekd train --config args.yaml` reruns it
    TrainConfig resolved = cfg_;
    resolved.ann = ann_;
    resolved.images = images_;
    resolved.val_ann = val_ann_;
    resolved.val_images = val_ ? val_->image_dir : cfg_.val_images;
    save_yaml_file((fs::path(cfg_.output) / "args.yaml").string(), resolved,
                   {fmt::format("qat_start_batch: {}", qat_start_), fmt::format("world_size: {}", world_),
                    fmt::format("batch_per_process: {}", local_batch_), "schedule: " + schedule_.describe()});
  }
  // Over every parameter, like Python: the ai8x scalars have no grad, hence no state.
  params_ = student_->parameters();
  optimizer_ = std::make_unique<torch::optim::Adam>(
      params_, torch::optim::AdamOptions(schedule_.at(0)).weight_decay(cfg_.weight_decay));
}

void Trainer::resume() {
  std::optional<ResumePoint> rp;
  if (rank_ == 0) rp = find_resume_point(cfg_.checkpoint, cfg_.resume, cfg_.output);
  if (dist_) {  // every rank resumes from rank 0's file: no shared folder needed
    std::string payload;
    if (rank_ == 0 && rp) payload = rp->path + '\n' + read_bytes(rp->path);
    payload = dist_->broadcast_bytes(payload);
    if (rank_ != 0 && !payload.empty()) {
      const size_t nl = payload.find('\n');
      std::error_code ec;
      const fs::path tmp = fs::temp_directory_path() / fmt::format("posekd-resume-{}-{}.pth", ::getpid(), rank_);
      {
        std::ofstream f(tmp, std::ios::binary);
        f.write(payload.data() + nl + 1, static_cast<std::streamsize>(payload.size() - nl - 1));
        if (!f) fail_file(tmp.string(), "cannot write the checkpoint received from rank 0");
      }
      ResumePoint got{payload.substr(0, nl), Checkpoint{}, ""};
      try {
        got.checkpoint = load_checkpoint(tmp.string());
      } catch (...) {
        fs::remove(tmp, ec);
        throw;
      }
      fs::remove(tmp, ec);
      rp = std::move(got);
    }
  }
  if (rp) {
    const Checkpoint& c = rp->checkpoint;
    log_->line(rp->note);
    if (c.has_extras && !c.arch.empty() && c.arch != cfg_.arch)
      fail_file(rp->path, fmt::format("checkpoint is for --arch {}, this run is --arch {}", c.arch, cfg_.arch));
    if (c.has_extras && c.phase == "qat") {
      enter_qat_structure(*student_);  // as ai8x: fuse before loading so the keys match
      phase_ = "qat";
    }
    ai8x::load_state_dict(*student_, c.model, true, rp->path);
    params_ = student_->parameters();
    optimizer_ = std::make_unique<torch::optim::Adam>(params_, torch::optim::AdamOptions(cfg_.lr));
    if (c.optimizer.num_params > 0) restore_adam(*optimizer_, params_, c.optimizer, rp->path);
    for (auto& g : optimizer_->param_groups())  // this run's options win over the file's
      static_cast<torch::optim::AdamOptions&>(g.options()).weight_decay(cfg_.weight_decay);
    batch_ = c.batch;
    best_loss_ = c.best_loss;
    last_loss_ = c.loss;
    if (c.has_extras) {
      start_state_ = c.loader;
      avg_ = c.avg;
      nonfinite_skipped_ = c.nonfinite_skipped;
      best_metric_ = c.best_metric;
      if (c.teacher_id != teacher_identity(cfg_.teacher))
        log_->line(fmt::format("note: the checkpoint was trained with teacher '{}', this run uses '{}'", c.teacher_id,
                               teacher_identity(cfg_.teacher)));
    } else {
      log_->line("note: a seed checkpoint has no data-order state; the data order restarts at epoch 0");
    }
    log_->line(fmt::format("Resumed at batch {} (phase {}, best loss {:.4f})", batch_, phase_, best_loss_));
  }
  if (dist_) broadcast_model(true);  // identical start everywhere, whatever each rank initialised or read
  loader_ = std::make_unique<data::Loader>(dataset_, sample_cfg_, local_batch_, cfg_.seed, cfg_.workers, 4,
                                           start_state_, data::Shard{rank_, world_});
  ckpt_state_ = loader_->state();
}

void Trainer::open_teacher_cache() {
  // Without augmentation the teacher's outputs for an image never change: one cache slot per image.
  // With augmentation and --augment-views K, an image is seen in K views: one slot per view. With
  // augmentation and a new view every epoch, the teacher runs on every batch.
  const auto& aug = sample_cfg_.augment;
  if (!teacher_ || cfg_.no_teacher_cache || (aug.enabled && aug.views == 0)) {
    if (teacher_) log_->line("Teacher: run on every batch (no cache)");
    return;
  }
  const std::int64_t views = aug.enabled ? aug.views : 1;
  std::vector<int64_t> ids;
  for (const auto& im : dataset_.images)
    if (data::has_keypoint_person(im))
      for (std::int64_t v = 0; v < views; ++v) ids.push_back(im.id * views + v);
  const std::string cpath =
      cfg_.teacher_cache.empty() ? (fs::path(cfg_.output) / "teacher_cache.bin").string() : cfg_.teacher_cache;
  std::uint64_t data_id = dataset_identity(ann_, images_);
  if (aug.enabled) {  // the views are a function of the augmentation and the seed
    const std::string a = data::describe(aug) + fmt::format(" seed {}", cfg_.seed);
    data_id = fnv1a64(a.data(), a.size(), data_id);
  }
  // One file shared by the ranks of a machine (each fills in its own shard); opened rank by rank so
  // that exactly one of them creates it.
  rank_by_rank([&] {
    cache_.emplace(TeacherCache::open(cpath, make_cache_key(teacher_, sample_cfg_, data_id), ids,
                                      [&](const std::string& s) { log_->line(s); }));
  });
  log_->line(fmt::format("Teacher cache {}: {} of {} {} cached", cpath, cache_->valid_count(), cache_->num_slots(),
                         aug.enabled ? "image views" : "images"));
}

std::pair<torch::Tensor, torch::Tensor> Trainer::teacher_outputs(const data::Batch& b) {
  if (!teacher_) return {};
  torch::NoGradGuard ng;
  if (cache_) {
    if (!sample_cfg_.augment.enabled) return cache_->fetch_or_compute(b, teacher_);
    std::vector<int64_t> ids;
    const std::int64_t views = sample_cfg_.augment.views;
    for (size_t i = 0; i < b.image_ids.size(); ++i) ids.push_back(b.image_ids[i] * views + b.views[i]);
    return cache_->fetch_or_compute(ids, b.image, [&](const torch::Tensor& x) { return teacher_->forward(x); });
  }
  auto t = teacher_->forward(b.image);
  return {t.at(0), t.at(1)};
}

data::LoaderState Trainer::agreed_loader_state() {
  // The data position a checkpoint records: with several ranks, the furthest one (and all bad samples).
  data::LoaderState st = loader_->state();
  if (!dist_) return st;
  const auto n = loader_->num_samples();
  const auto mx = dist_->max({static_cast<double>(st.epoch * n + st.position)});
  const auto sm = dist_->sum({static_cast<double>(st.bad_count - start_state_.bad_count)});
  const auto g = static_cast<std::int64_t>(mx[0]);
  st.epoch = g / n;
  st.position = g % n;
  st.bad_count = start_state_.bad_count + static_cast<std::int64_t>(sm[0]);
  return st;
}

void Trainer::switch_to_qat() {
  log_->line(
      fmt::format("===== QAT: batch {}: folding BatchNorm, calibrating on {} training batches, "
                  "{}-bit weights, lr {} =====",
                  batch_, cfg_.calib_batches, policy_.weight_bits, schedule_.qat_lr));
  // BatchNorm statistics: the same on every rank with SyncBN; per rank with --no-sync-bn (as in
  // PyTorch DDP), then rank 0's are folded.
  if (dist_) broadcast_model(false);
  // [sync-bn] Every rank calibrates on its slice of the same global batches (one process: the whole
  // batches); the layers reduce the histograms over the ranks (fuse_and_calibrate's group).
  data::Loader calib(dataset_, sample_cfg_, local_batch_, cfg_.seed ^ 0xca11b4a7ULL, cfg_.workers, 2, {},
                     data::Shard{rank_, world_});
  int left = cfg_.calib_batches;
  model::fuse_and_calibrate(
      *student_,
      [&]() -> std::optional<torch::Tensor> {
        if (left-- <= 0) return std::nullopt;
        torch::Tensor x = calib.next().image;
        return student_->folded_input() ? data::fold_input(x) : x;
      },
      policy_, dist_.get());
  if (dist_) broadcast_model(true);  // the same histograms everywhere; make the model bit-identical
  auto new_params = student_->parameters();
  optimizer_ = model::rebuild_adam(*optimizer_, new_params);
  params_ = new_params;
  if (dist_) {
    gsync_.reset();
    gsync_ = std::make_unique<GradSync>(*dist_, params_);
  }
  phase_ = "qat";
  std::string thr;
  auto layers = student_->layers();
  for (size_t i = 0; i < layers.size(); ++i)
    thr += fmt::format(" {}={}", student_->layer_names()[i], layers[i]->activation_threshold.item<float>());
  log_->line("QAT thresholds (relative log2):" + thr);
}

bool Trainer::step() {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  data::Batch b = loader_->next();
  const data::LoaderState now = loader_->state();
  const std::int64_t seen = now.epoch * loader_->num_samples() + now.position;
  if (cfg_.max_bad_fraction < 1.0 && now.bad_count > 0 &&
      static_cast<double>(now.bad_count) > cfg_.max_bad_fraction * static_cast<double>(seen) && seen >= 20) {
    throw Error(fmt::format("train: {} of {} samples could not be read (more than --max-bad-fraction {}); first: {}",
                            now.bad_count, seen, cfg_.max_bad_fraction,
                            now.bad_examples.empty() ? std::string("?") : now.bad_examples.front()));
  }
  const torch::Tensor x = student_->folded_input() ? data::fold_input(b.image) : b.image;
  const auto [th, tp] = teacher_outputs(b);
  StepOptions so;
  so.lr = schedule_.at(batch_);
  so.sync = gsync_.get();
  so.dist = dist_.get();
  so.stop_requested = g_stop.load() || (cfg_.stop_after > 0 && result_.batches_run + 1 >= cfg_.stop_after);
  const LossWeights weights{cfg_.kd_student_wt, cfg_.kd_distill_wt};
  const StepOutcome r = train_step(
      *optimizer_,
      [&] {
        model::StudentOutput out;
        {
          AmpGuard amp(precision_);         // bf16 convolutions, fp32 everything else (train/amp.h)
          out = student_->forward_maps(x);  // the heads at the targets' scale (model/student.h)
        }
        return pose_loss(out.heat, out.paf, b.heatmaps, b.pafs, b.mask, th, tp, weights);
      },
      so);
  if (!r.finite) {
    ++nonfinite_skipped_;
    ++nonfinite_in_row_;
    log_->line(fmt::format("Batch {}: non-finite loss ({}); step skipped ({} in a row, {} in total)", batch_ + 1,
                           r.loss, nonfinite_in_row_, nonfinite_skipped_));
    if (nonfinite_in_row_ >= cfg_.max_nonfinite)
      throw Error(
          fmt::format("train: {} non-finite losses in a row; stopping (the last good checkpoint is kept "
                      "in {})",
                      nonfinite_in_row_, cfg_.output));
    return false;
  }
  nonfinite_in_row_ = 0;
  ++batch_;
  ++result_.batches_run;
  last_loss_ = r.loss;
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  avg_.add(r.loss, r.student, r.distill, secs);
  ema_secs_ = ema_secs_ == 0 ? secs : 0.9 * ema_secs_ + 0.1 * secs;
  log_->progress(batch_, cfg_.total_batches, r.loss, r.student, r.distill, cfg_.batch_size / ema_secs_,
                 ema_secs_ * static_cast<double>(cfg_.total_batches - batch_));
  if (should_log(batch_)) {
    const double n = static_cast<double>(avg_.count);
    log_->batch_line(format_batch_line(batch_, cfg_.total_batches, avg_.loss / n, avg_.student / n, avg_.distill / n,
                                       avg_.seconds / n));
    log_->csv(batch_, avg_.loss / n, avg_.student / n, avg_.distill / n, cfg_.batch_size * n / avg_.seconds, so.lr,
              phase_, -1);
    avg_.reset();
  }

  const bool stop = r.stop || (!dist_ && g_stop.load());
  const bool val_due =
      !val_ann_.empty() && ((cfg_.val_every > 0 && batch_ % cfg_.val_every == 0) || batch_ == cfg_.total_batches);
  bool val_best = false;
  if (val_due && rank_ == 0) {
    const double ap = validate();
    result_.last_val_ap = ap;
    log_->csv(batch_, last_loss_, r.student, r.distill, 0, so.lr, phase_, ap);
    if (ap > best_metric_) {
      best_metric_ = ap;
      val_best = true;
    }
  }
  // The same decision on every rank (validation results are rank 0's alone).
  if (batch_ % cfg_.save_every == 0 || batch_ == cfg_.total_batches || stop || val_due) {
    ckpt_state_ = agreed_loader_state();
    if (cache_) cache_->flush();
  }
  if (rank_ == 0 && (batch_ % cfg_.save_every == 0 || batch_ == cfg_.total_batches || stop || val_best)) {
    bool is_best = val_best;
    if (val_ann_.empty()) {  // the seed's rule, without a validation set: the lowest batch loss at a save
      is_best = r.loss < best_loss_;
      if (is_best) best_loss_ = r.loss;
    }
    save(batch_ % cfg_.save_every == 0, is_best);
  }
  if (stop) {
    log_->line(fmt::format("Stopped after batch {} ({}); checkpoint written to {}/latest.pth", batch_,
                           cfg_.stop_after > 0 && result_.batches_run >= cfg_.stop_after ? "--stop-after" : "signal",
                           cfg_.output));
    result_.interrupted = true;
  }
  return true;
}

double Trainer::validate() {
  infer::PredictStats ps;
  infer::EvalConfig ec;
  auto r = infer::evaluate_model(*val_, infer::student_predictor(student_, precision_), ec, nullptr, &ps);
  student_->train();
  log_->line(
      fmt::format("Validation at batch {} ({}): AP {:.4f} | AP50 {:.4f} | AR {:.4f} | {} people found{}", batch_,
                  phase_, r.stats[0], r.stats[1], r.stats[5], ps.people,
                  ps.unreadable ? fmt::format(" | {} unreadable images skipped", ps.unreadable) : std::string()));
  return r.stats[0];
}

Checkpoint Trainer::make_checkpoint() const {
  Checkpoint c;
  c.batch = batch_;
  c.model = ai8x::state_dict(*student_);
  for (auto& [k, t] : c.model) t = t.detach().clone();
  c.optimizer = snapshot_adam(*optimizer_, params_);
  c.loss = last_loss_;
  c.best_loss = best_loss_;
  c.has_extras = true;
  c.arch = cfg_.arch;
  c.phase = phase_;
  c.qat_start_batch = qat_start_;
  c.loader = ckpt_state_;
  c.avg = avg_;
  c.nonfinite_skipped = nonfinite_skipped_;
  c.best_metric = best_metric_;
  c.teacher_id = teacher_identity(cfg_.teacher);
  c.seed = cfg_.seed;
  return c;
}

void Trainer::save(bool with_batch_file, bool is_best) {
  const Checkpoint c = make_checkpoint();
  if (with_batch_file) save_checkpoint((fs::path(cfg_.output) / batch_checkpoint_name(batch_)).string(), c);
  save_checkpoint((fs::path(cfg_.output) / "latest.pth").string(), c);
  if (is_best) save_checkpoint((fs::path(cfg_.output) / "best.pth").string(), c);
  prune_batch_checkpoints(cfg_.output, cfg_.keep);
}

void Trainer::finish() {
  if (loader_->bad_count() > 0) {
    std::string first;
    for (const auto& e : loader_->bad_examples()) first += "\n  " + e;
    log_->line(fmt::format("{} samples could not be read and were skipped; first:{}", loader_->bad_count(), first));
  }
  if (nonfinite_skipped_ > 0) log_->line(fmt::format("{} steps skipped for non-finite loss", nonfinite_skipped_));
  if (rank_ == 0 && !cfg_.no_plot) {  // results.png at the end of every run (also `posekd plot DIR`)
    const std::string csv = (fs::path(cfg_.output) / "results.csv").string();
    const std::string png = (fs::path(cfg_.output) / "results.png").string();
    try {
      if (plot_results(read_results_csv(csv), png, fs::path(cfg_.output).filename().string()))
        log_->line("Plot: " + png);
    } catch (const std::exception& e) {
      log_->line(std::string("warning: results.png not written: ") + e.what());
    }
  }
  if (dist_) dist_->barrier();  // nobody leaves (closing its sockets) while another still saves
  log_->line(fmt::format("Done: batch {}/{}; checkpoints in {}", batch_, cfg_.total_batches, cfg_.output));
  result_.batches_done = batch_;
  result_.last_loss = last_loss_;
  result_.best_val_ap = best_metric_;
}

TrainResult Trainer::run() {
  g_stop.store(false);
  result_ = TrainResult{};
  result_.output_dir = cfg_.output;
  const FaultPoint fault = fault_point();
  setup_processes();
  load_data();
  load_validation();
  build_student();
  load_teacher();
  plan();
  resume();
  open_teacher_cache();
  std::int64_t nparams = 0;
  for (const auto& p : student_->parameters()) nparams += p.numel();
  log_->line(fmt::format("Student {} ({} parameters), {} samples, batch {}, {} batches, {}, {} threads, {} workers",
                         cfg_.arch, nparams, loader_->num_samples(), cfg_.batch_size, cfg_.total_batches,
                         schedule_.describe() + (qat_start_ < 0 ? ", no QAT" : ""), threads_, cfg_.workers));
  log_->line("OpenMP waits: " + omp_wait_description());
  log_->line("Memory: " + memory_description());
  if (dist_) gsync_ = std::make_unique<GradSync>(*dist_, params_);
  if (dist_ && cfg_.sync_bn && phase_ == "float") {  // [sync-bn] float-phase BatchNorm over the global batch
    for (auto* l : student_->layers()) l->set_sync_bn(dist_.get());
    log_->line("SyncBN: BatchNorm statistics over the global batch of all processes");
  }
  while (batch_ < cfg_.total_batches && !result_.interrupted) {
    if (rank_ == fault.rank && batch_ == fault.batch) {
      std::fprintf(stderr, "POSEKD_FAULT_KILL: rank %d %s before batch %lld\n", rank_,
                   fault.hang ? "stops (hangs)" : "kills itself", static_cast<long long>(batch_ + 1));
      std::fflush(stderr);
      ::kill(::getpid(), fault.hang ? SIGSTOP : SIGKILL);
    }
    if (phase_ == "float" && qat_start_ >= 0 && batch_ >= qat_start_) switch_to_qat();
    step();
  }
  finish();
  return result_;
}

TrainResult run_training(const TrainConfig& cfg) { return Trainer(cfg).run(); }

}  // namespace posekd::train
