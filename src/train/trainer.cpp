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
#include "posekd/core/error.h"
#include "posekd/core/omp_wait.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/loader.h"
#include "posekd/data/sample.h"
#include "posekd/export/fit.h"
#include "posekd/infer/evaluate.h"
#include "posekd/io/prepared.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/student.h"
#include "posekd/model/teacher.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/distributed.h"
#include "posekd/train/log.h"
#include "posekd/train/fused_adam.h"
#include "posekd/train/loss.h"
#include "posekd/train/plot.h"
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
    if (p.ann.empty())
      p.ann = (fs::path(cfg.data) / "annotations" / ("person_keypoints_" + cfg.split + ".json")).string();
    if (p.images.empty()) p.images = (fs::path(cfg.data) / cfg.split).string();
  }
  if (p.ann.empty()) throw Error("train: no training data: give --data DIR (COCO root) or --ann FILE --images DIR");
  if (p.images.empty()) p.images = fs::path(p.ann).parent_path().string();
  if (!fs::exists(p.ann)) fail_file(p.ann, "annotation file does not exist");
  if (!fs::is_directory(p.images)) fail_file(p.images, "image folder does not exist");
  return p;
}

void write_args_yaml(const TrainConfig& c, const std::string& path, const std::string& ann, const std::string& images,
                     std::int64_t qat_start, const DistOptions& d) {
  YAML::Emitter y;
  y << YAML::BeginMap;
  y << YAML::Key << "ann" << YAML::Value << ann << YAML::Key << "images" << YAML::Value << images;
  y << YAML::Key << "subset" << YAML::Value << c.subset;
  y << YAML::Key << "val_ann" << YAML::Value << c.val_ann << YAML::Key << "val_every" << YAML::Value << c.val_every;
  y << YAML::Key << "arch" << YAML::Value << c.arch;
  y << YAML::Key << "teacher" << YAML::Value << c.teacher;
  y << YAML::Key << "teacher_input_scale" << YAML::Value << c.teacher_input_scale;
  y << YAML::Key << "batch_size" << YAML::Value << c.batch_size;
  y << YAML::Key << "total_batches" << YAML::Value << c.total_batches;
  y << YAML::Key << "lr" << YAML::Value << c.lr;
  y << YAML::Key << "kd_student_wt" << YAML::Value << c.kd_student_wt;
  y << YAML::Key << "kd_distill_wt" << YAML::Value << c.kd_distill_wt;
  y << YAML::Key << "save_every" << YAML::Value << c.save_every;
  y << YAML::Key << "keep" << YAML::Value << c.keep;
  y << YAML::Key << "output" << YAML::Value << c.output;
  y << YAML::Key << "qat_policy" << YAML::Value << c.qat_policy;
  y << YAML::Key << "no_qat" << YAML::Value << c.no_qat;
  y << YAML::Key << "qat_start_batch" << YAML::Value << qat_start;
  y << YAML::Key << "calib_batches" << YAML::Value << c.calib_batches;
  y << YAML::Key << "threads" << YAML::Value << c.threads;
  y << YAML::Key << "workers" << YAML::Value << c.workers;
  y << YAML::Key << "seed" << YAML::Value << c.seed;
  y << YAML::Key << "deterministic" << YAML::Value << c.deterministic;
  y << YAML::Key << "seed_compat_targets" << YAML::Value << c.seed_compat_targets;
  y << YAML::Key << "max_bad_fraction" << YAML::Value << c.max_bad_fraction;
  y << YAML::Key << "world_size" << YAML::Value << d.world_size;
  y << YAML::Key << "batch_per_process" << YAML::Value << c.batch_size / d.world_size;
  y << YAML::Key << "master_addr" << YAML::Value << (d.world_size > 1 ? d.master_addr : std::string());
  y << YAML::Key << "master_port" << YAML::Value << (d.world_size > 1 ? d.master_port : 0);
  y << YAML::EndMap;
  std::ofstream f(path);
  f << y.c_str() << "\n";
  if (!f) fail_file(path, "cannot write");
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

TrainResult run_training(const TrainConfig& cfg) {
  using clock = std::chrono::steady_clock;
  g_stop.store(false);
  if (cfg.batch_size < 1) throw Error("train: --batch-size must be at least 1");
  if (cfg.total_batches < 1) throw Error("train: --total-batches must be at least 1");
  if (cfg.save_every < 1) throw Error("train: --save-every must be at least 1");

  // ---- processes: one, or a data-parallel group (torchrun's environment or the --rank... flags)
  DistOptions dopt;
  dopt.rank = cfg.dist_rank;
  dopt.world_size = cfg.dist_world_size;
  dopt.local_rank = cfg.dist_local_rank;
  dopt.master_addr = cfg.dist_master_addr;
  dopt.master_port = cfg.dist_master_port;
  dopt.timeout_s = cfg.dist_timeout;
  dopt = resolve_dist_options(dopt);
  const int rank = dopt.rank, world = dopt.world_size;
  const bool main_rank = rank == 0;
  const int local_batch = per_rank_batch(cfg.batch_size, world);
  int want_threads = cfg.threads;  // processes on one machine share its cores
  if (want_threads <= 0 && dopt.local_world_size > 1)
    want_threads = std::max(1, hardware_threads() / dopt.local_world_size);
  const int threads = set_compute_threads(want_threads);
  if (cfg.deterministic) at::globalContext().setDeterministicAlgorithms(true, false);
  const FaultPoint fault = fault_point();

  std::error_code ec;
  fs::create_directories(cfg.output, ec);
  if (ec) fail_file(cfg.output, "cannot create the output directory: " + ec.message());
  // Rank 0 alone writes log.txt, results.csv and checkpoints.
  TrainLog log(main_rank ? cfg.output : std::string(), main_rank ? cfg.quiet : true);
  std::unique_ptr<Distributed> dist;
  if (world > 1) {
    dist = std::make_unique<Distributed>(dopt);
    log.line(fmt::format("Distributed: {} processes (Gloo via {}:{}), global batch {} = {} x {}, {} threads each",
                         world, dopt.master_addr, dopt.master_port, cfg.batch_size, world, local_batch, threads));
  }
  // Steps where one rank must go first (it creates a file the others then read).
  auto rank_by_rank = [&](const std::function<void()>& f) {
    if (!dist) return f();
    for (int r = 0; r < world; ++r) {
      if (r == rank) f();
      dist->barrier();
    }
  };
  if (main_rank) {  // a run killed during a checkpoint write leaves NAME.tmp.<pid>; remove those of dead processes
    int removed = 0;
    for (const auto& e : fs::directory_iterator(cfg.output, ec)) {
      const std::string n = e.path().filename().string();
      const auto at = n.rfind(".tmp.");
      if (at == std::string::npos || at + 5 >= n.size()) continue;
      const std::string pid = n.substr(at + 5);
      if (pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9) continue;
      const long p = std::stol(pid);
      if (p > 0 && ::kill(static_cast<pid_t>(p), 0) != 0 && errno == ESRCH && fs::remove(e.path(), ec)) ++removed;
    }
    if (removed > 0) log.line(fmt::format("Removed {} temporary file(s) left by an interrupted checkpoint write", removed));
  }

  // ---- data
  const DataPaths paths = resolve_data(cfg);
  data::CocoLoadOptions lo;
  lo.subset = cfg.subset;
  lo.cache_dir = (fs::path(cfg.output) / "cache").string();
  data::CocoDataset dataset;
  rank_by_rank([&] {  // rank 0 writes the annotation cache, the others read it
  if (!cfg.prepared.empty()) {
    dataset = io::load_prepared_annotations(cfg.prepared);
    dataset.image_dir = paths.images;
    if (cfg.subset > 0) {
      std::vector<data::CocoImage> keep;
      for (auto& im : dataset.images)
        if (static_cast<std::int64_t>(keep.size()) < cfg.subset && data::has_keypoint_person(im)) keep.push_back(im);
      dataset.images = std::move(keep);
    }
  } else {
    dataset = data::load_coco(paths.ann, paths.images, lo);
  }
  });
  std::int64_t n_people = 0;
  for (const auto& im : dataset.images) n_people += static_cast<std::int64_t>(im.persons.size());
  log.line(fmt::format("Data: {} ({} images, {} persons, {} annotations skipped)", paths.ann, dataset.images.size(),
                       n_people, dataset.skipped_annotations));
  for (const auto& w : dataset.warnings) log.line("  warning: " + w);

  data::SampleConfig sc;
  sc.seed_compat_targets = cfg.seed_compat_targets;

  // ---- validation set (COCO keypoint AP; best.pth becomes the best validation AP)
  std::optional<data::CocoDataset> val;  // rank 0 alone validates
  std::string val_ann = cfg.val_ann, val_img = cfg.val_images;
  if (!cfg.val_data.empty()) {
    if (val_ann.empty())
      val_ann = (fs::path(cfg.val_data) / "annotations" / ("person_keypoints_" + cfg.val_split + ".json")).string();
    if (val_img.empty()) val_img = (fs::path(cfg.val_data) / cfg.val_split).string();
  }
  const bool has_val = !val_ann.empty();
  if (has_val && main_rank) {
    if (!fs::exists(val_ann)) fail_file(val_ann, "validation annotation file does not exist");
    if (val_img.empty()) val_img = fs::path(val_ann).parent_path().string();
    data::CocoLoadOptions vo;
    vo.cache_dir = lo.cache_dir;
    val = data::load_coco(val_ann, val_img, vo);
    log.line(fmt::format("Validation: {} ({} images), every {} batches", val_ann, val->images.size(),
                         cfg.val_every > 0 ? std::to_string(cfg.val_every) : std::string("(end only)")));
  }

  // ---- models (the student's initial weights are a function of --seed)
  torch::manual_seed(cfg.seed);
  auto student = model::make_student(cfg.arch);
  student->train();
  {  // the same fit check as `posekd summary` / `posekd export`: say now, not after days of training
    auto fit = deploy::check_fit(*student, deploy::device_limits("MAX78000"));
    if (fit.fits()) {
      log.line(fmt::format("Student {} fits MAX78000: {} of {} weight bytes, {} of {} kernel words on processor 0",
                           cfg.arch, fit.total_weight_bytes, fit.device.weight_bytes, fit.total_words_proc0,
                           fit.device.words_proc0));
    } else {
      std::string rules;
      for (const auto& v : fit.violations) rules += "\n  - " + v;
      log.line(fmt::format("WARNING: student {} does not fit MAX78000 (posekd export will refuse it); "
                           "use --arch ai85pose for one that does:{}", cfg.arch, rules));
    }
  }
  model::TeacherWrapper teacher{nullptr};
  if (!cfg.teacher.empty()) {
    model::TeacherOptions to;
    to.input_scale = cfg.teacher_input_scale;
    // Read the file once: its metadata (a teacher trained by `posekd train-teacher` says what input it
    // was trained on) and its weights.
    const io::Value tv = io::load_torch_file(cfg.teacher);
    if (const io::Value* meta = tv.is_dict() ? tv.find("posekd_teacher") : nullptr) {
      to.input_size = static_cast<int>(meta->at("input_size", cfg.teacher).as_int(cfg.teacher + ": input_size"));
      to.input_scale = meta->at("input_scale", cfg.teacher).as_double(cfg.teacher + ": input_scale");
      to.num_refinement_stages =
          static_cast<int>(meta->at("num_refinement_stages", cfg.teacher).as_int(cfg.teacher));
      log.line(fmt::format("Teacher {} was trained by posekd at {}x{}: feeding it that size, input scale {}",
                           cfg.teacher, to.input_size, to.input_size, to.input_scale));
    }
    model::PoseEstimationWithMobileNet net(to.num_refinement_stages);
    const model::LoadReport rep =
        model::load_teacher_state(net, model::teacher_state_dict_of(tv, cfg.teacher), cfg.teacher);
    net->eval();
    if (to.fuse_bn) net->fuse();
    teacher = model::TeacherWrapper(net, to);  // frozen, eval mode
    std::string missing;
    for (size_t i = 0; i < rep.missing_names.size() && i < 10; ++i) missing += " " + rep.missing_names[i];
    log.line(fmt::format("Teacher {}: {} entries loaded, {} missing, {} ignored{}{}", cfg.teacher, rep.loaded,
                         rep.missing, rep.ignored, rep.missing ? "; missing:" : "", missing));
  } else {
    log.line("No --teacher: training on the ground-truth loss only (student loss, weight 1).");
  }

  // ---- QAT policy
  ai8x::QatPolicy policy;
  std::int64_t qat_start = -1;
  if (!cfg.no_qat) {
    if (!cfg.qat_policy.empty()) {
      policy = ai8x::load_qat_policy(cfg.qat_policy);
    }
    if (policy.start_batch >= 0) {
      qat_start = policy.start_batch;
    } else if (!cfg.qat_policy.empty() && policy.start_epoch >= 0) {
      const std::int64_t n = std::max<std::int64_t>(1, static_cast<std::int64_t>(dataset.images.size()));
      qat_start = policy.start_epoch * ((n + cfg.batch_size - 1) / cfg.batch_size);
    } else {
      qat_start = static_cast<std::int64_t>(0.6 * static_cast<double>(cfg.total_batches));
    }
  }
  if (main_rank)
    write_args_yaml(cfg, (fs::path(cfg.output) / "args.yaml").string(), paths.ann, paths.images, qat_start, dopt);

  // ---- optimizer (over every parameter, like Python: the ai8x scalars have no grad, hence no state)
  auto params = student->parameters();
  auto optimizer = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(cfg.lr));

  // ---- resume
  std::int64_t batch = 0;
  double best_loss = 1e30, last_loss = 0, best_metric = -1;
  std::int64_t nonfinite_skipped = 0;
  std::string phase = "float";
  data::LoaderState ls;
  RunningAverage avg;
  std::optional<ResumePoint> rp;
  if (main_rank) rp = find_resume_point(cfg.checkpoint, cfg.resume, cfg.output);
  if (dist) {  // every rank resumes from rank 0's file: no shared folder needed
    std::string payload;
    if (main_rank && rp) payload = rp->path + '\n' + read_bytes(rp->path);
    payload = dist->broadcast_bytes(payload);
    if (!main_rank && !payload.empty()) {
      const size_t nl = payload.find('\n');
      const fs::path tmp = fs::temp_directory_path() / fmt::format("posekd-resume-{}-{}.pth", ::getpid(), rank);
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
    log.line(rp->note);
    if (c.has_extras && !c.arch.empty() && c.arch != cfg.arch)
      fail_file(rp->path, fmt::format("checkpoint is for --arch {}, this run is --arch {}", c.arch, cfg.arch));
    if (c.has_extras && c.phase == "qat") {
      enter_qat_structure(*student);  // as ai8x: fuse before loading so the keys match
      phase = "qat";
    }
    ai8x::load_state_dict(*student, c.model, true, rp->path);
    params = student->parameters();
    optimizer = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(cfg.lr));
    if (c.optimizer.num_params > 0) restore_adam(*optimizer, params, c.optimizer, rp->path);
    batch = c.batch;
    best_loss = c.best_loss;
    last_loss = c.loss;
    if (c.has_extras) {
      ls.epoch = c.loader_epoch;
      ls.position = c.loader_position;
      ls.bad_count = c.bad_count;
      ls.bad_examples = c.bad_examples;
      avg.loss = c.avg_loss;
      avg.student = c.avg_student;
      avg.distill = c.avg_distill;
      avg.seconds = c.avg_seconds;
      avg.count = c.avg_count;
      nonfinite_skipped = c.nonfinite_skipped;
      best_metric = c.best_metric;
      if (c.teacher_id != teacher_identity(cfg.teacher))
        log.line(fmt::format("note: the checkpoint was trained with teacher '{}', this run uses '{}'", c.teacher_id,
                             teacher_identity(cfg.teacher)));
    } else {
      log.line("note: a seed checkpoint has no data-order state; the data order restarts at epoch 0");
    }
    log.line(fmt::format("Resumed at batch {} (phase {}, best loss {:.4f})", batch, phase, best_loss));
  }

  if (dist) {  // identical start everywhere, whatever each rank initialised or read
    std::vector<torch::Tensor> state = student->parameters();
    for (auto& t : student->buffers()) state.push_back(t);
    dist->broadcast(state);
  }
  const std::int64_t bad_at_start = ls.bad_count;
  data::Loader loader(dataset, sc, local_batch, cfg.seed, cfg.workers, 4, ls, data::Shard{rank, world});

  // ---- teacher-output cache: without augmentation the teacher's outputs for an image never change
  std::optional<TeacherCache> cache;
  if (teacher && !cfg.no_teacher_cache) {
    std::vector<int64_t> ids;
    for (const auto& im : dataset.images)
      if (data::has_keypoint_person(im)) ids.push_back(im.id);
    const std::string cpath =
        cfg.teacher_cache.empty() ? (fs::path(cfg.output) / "teacher_cache.bin").string() : cfg.teacher_cache;
    // One file shared by the ranks of a machine (each fills in its own shard); opened rank by rank so
    // that exactly one of them creates it.
    rank_by_rank([&] {
      cache.emplace(TeacherCache::open(cpath, make_cache_key(teacher, sc, dataset_identity(paths.ann, paths.images)),
                                       ids, [&](const std::string& s) { log.line(s); }));
    });
    log.line(fmt::format("Teacher cache {}: {} of {} images cached", cpath, cache->valid_count(), cache->num_slots()));
  }
  log.line(fmt::format("Student {} ({} parameters), {} samples, batch {}, {} batches, lr {}, {} threads, {} workers{}",
                       cfg.arch, [&] {
                         std::int64_t n = 0;
                         for (const auto& p : student->parameters()) n += p.numel();
                         return n;
                       }(),
                       loader.num_samples(), cfg.batch_size, cfg.total_batches, cfg.lr, threads, cfg.workers,
                       qat_start >= 0 ? fmt::format(", QAT from batch {}", qat_start) : std::string(", no QAT")));
  log.line("OpenMP waits: " + omp_wait_description());

  const LossWeights weights{cfg.kd_student_wt, cfg.kd_distill_wt};
  std::unique_ptr<GradSync> gsync;
  if (dist) gsync = std::make_unique<GradSync>(*dist, params);
  // The data position a checkpoint records: with several ranks, the furthest one (and all bad samples).
  auto agreed_loader_state = [&]() {
    data::LoaderState st = loader.state();
    if (!dist) return st;
    const auto n = loader.num_samples();
    const auto mx = dist->max({static_cast<double>(st.epoch * n + st.position)});
    const auto sm = dist->sum({static_cast<double>(st.bad_count - bad_at_start)});
    const auto g = static_cast<std::int64_t>(mx[0]);
    st.epoch = g / n;
    st.position = g % n;
    st.bad_count = bad_at_start + static_cast<std::int64_t>(sm[0]);
    return st;
  };
  data::LoaderState ckpt_state = loader.state();
  auto make_checkpoint = [&]() {
    Checkpoint c;
    c.batch = batch;
    c.model = ai8x::state_dict(*student);
    for (auto& [k, t] : c.model) t = t.detach().clone();
    c.optimizer = snapshot_adam(*optimizer, params);
    c.loss = last_loss;
    c.best_loss = best_loss;
    c.has_extras = true;
    c.arch = cfg.arch;
    c.phase = phase;
    c.qat_start_batch = qat_start;
    const data::LoaderState& st = ckpt_state;
    c.loader_epoch = st.epoch;
    c.loader_position = st.position;
    c.bad_count = st.bad_count;
    c.bad_examples = st.bad_examples;
    c.avg_loss = avg.loss;
    c.avg_student = avg.student;
    c.avg_distill = avg.distill;
    c.avg_seconds = avg.seconds;
    c.avg_count = avg.count;
    c.nonfinite_skipped = nonfinite_skipped;
    c.best_metric = best_metric;
    c.teacher_id = teacher_identity(cfg.teacher);
    c.seed = cfg.seed;
    return c;
  };
  auto save_all = [&](bool with_batch_file, bool is_best) {
    Checkpoint c = make_checkpoint();
    if (with_batch_file) save_checkpoint((fs::path(cfg.output) / batch_checkpoint_name(batch)).string(), c);
    save_checkpoint((fs::path(cfg.output) / "latest.pth").string(), c);
    if (is_best) save_checkpoint((fs::path(cfg.output) / "best.pth").string(), c);
    prune_batch_checkpoints(cfg.output, cfg.keep);
  };

  auto validate = [&]() -> double {
    infer::PredictStats ps;
    infer::EvalConfig ec;
    auto r = infer::evaluate_model(*val, infer::student_predictor(student), ec, nullptr, &ps);
    student->train();
    log.line(fmt::format("Validation at batch {} ({}): AP {:.4f} | AP50 {:.4f} | AR {:.4f} | {} people found{}", batch,
                         phase, r.stats[0], r.stats[1], r.stats[5], ps.people,
                         ps.unreadable ? fmt::format(" | {} unreadable images skipped", ps.unreadable) : std::string()));
    return r.stats[0];
  };

  TrainResult result;
  result.output_dir = cfg.output;
  int nonfinite_in_row = 0;
  double ema_secs = 0;  // smoothed seconds per batch, for the progress bar
  // All ranks of a group share everything: the parameters and buffers of rank 0 become everyone's.
  auto broadcast_model = [&](bool with_params) {
    std::vector<torch::Tensor> state;
    if (with_params) state = student->parameters();
    for (auto& t : student->buffers()) state.push_back(t);
    dist->broadcast(state);
  };
  while (batch < cfg.total_batches) {
    if (rank == fault.rank && batch == fault.batch) {
      std::fprintf(stderr, "POSEKD_FAULT_KILL: rank %d %s before batch %lld\n", rank,
                   fault.hang ? "stops (hangs)" : "kills itself", static_cast<long long>(batch + 1));
      std::fflush(stderr);
      ::kill(::getpid(), fault.hang ? SIGSTOP : SIGKILL);
    }
    // ---- the QAT switch
    if (phase == "float" && qat_start >= 0 && batch >= qat_start) {
      log.line(fmt::format("===== QAT: batch {}: folding BatchNorm, calibrating on {} training batches, "
                           "{}-bit weights =====", batch, cfg.calib_batches, policy.weight_bits));
      // BatchNorm statistics are per rank while training (as in PyTorch DDP); fold rank 0's.
      if (dist) broadcast_model(false);
      data::Loader calib(dataset, sc, cfg.batch_size, cfg.seed ^ 0xca11b4a7ULL, cfg.workers, 2);
      int left = cfg.calib_batches;
      model::fuse_and_calibrate(
          *student,
          [&]() -> std::optional<torch::Tensor> {
            if (left-- <= 0) return std::nullopt;
            torch::Tensor x = calib.next().image;
            return student->folded_input() ? data::fold_input(x) : x;
          },
          policy);
      if (dist) broadcast_model(true);  // calibrated on the same data everywhere; make it bit-identical
      auto new_params = student->parameters();
      optimizer = model::rebuild_adam(*optimizer, new_params);
      params = new_params;
      if (dist) {
        gsync.reset();
        gsync = std::make_unique<GradSync>(*dist, params);
      }
      phase = "qat";
      std::string thr;
      auto layers = student->layers();
      for (size_t i = 0; i < layers.size(); ++i)
        thr += fmt::format(" {}={}", student->layer_names()[i], layers[i]->activation_threshold.item<float>());
      log.line("QAT thresholds (relative log2):" + thr);
    }

    const auto t0 = clock::now();
    data::Batch b = loader.next();
    const std::int64_t total_samples_seen = loader.state().epoch * loader.num_samples() + loader.state().position;
    if (cfg.max_bad_fraction < 1.0 && loader.bad_count() > 0 &&
        static_cast<double>(loader.bad_count()) > cfg.max_bad_fraction * static_cast<double>(total_samples_seen) &&
        total_samples_seen >= 20) {
      auto ex = loader.bad_examples();
      throw Error(fmt::format("train: {} of {} samples could not be read (more than --max-bad-fraction {}); first: {}",
                              loader.bad_count(), total_samples_seen, cfg.max_bad_fraction,
                              ex.empty() ? std::string("?") : ex.front()));
    }
    torch::Tensor x = student->folded_input() ? data::fold_input(b.image) : b.image;
    torch::Tensor th, tp;
    if (cache) {
      torch::NoGradGuard ng;
      std::tie(th, tp) = cache->fetch_or_compute(b, teacher);
    } else if (teacher) {
      torch::NoGradGuard ng;
      auto t = teacher->forward(b.image);
      th = t.at(0);
      tp = t.at(1);
    }
    auto out = student->forward(x);
    LossParts lp = pose_loss(out.heat, out.paf, b.heatmaps, b.pafs, b.mask, th, tp, weights);
    double loss_v = lp.total.item<double>();
    double student_v = lp.student.item<double>(), distill_v = lp.distill.item<double>();
    bool finite = std::isfinite(loss_v);
    bool stop_requested = g_stop.load() || (cfg.stop_after > 0 && result.batches_run + 1 >= cfg.stop_after);
    if (dist) {
      // Every rank steps or skips together: backward, bucketed gradient all-reduce (overlapping
      // backward), then one small all-reduce that agrees on the loss, finiteness and stop requests.
      optimizer->zero_grad();
      lp.total.backward();
      gsync->finish();
      const auto agg = dist->sum({finite ? loss_v : 0.0, finite ? student_v : 0.0, finite ? distill_v : 0.0,
                                  finite ? 0.0 : 1.0, stop_requested ? 1.0 : 0.0});
      finite = agg[3] == 0;
      stop_requested = agg[4] > 0;
      loss_v = finite ? agg[0] / world : std::nan("");
      student_v = agg[1] / world;
      distill_v = agg[2] / world;
    }
    if (!finite) {
      ++nonfinite_skipped;
      ++nonfinite_in_row;
      log.line(fmt::format("Batch {}: non-finite loss ({}); step skipped ({} in a row, {} in total)", batch + 1,
                           loss_v, nonfinite_in_row, nonfinite_skipped));
      if (nonfinite_in_row >= cfg.max_nonfinite)
        throw Error(fmt::format("train: {} non-finite losses in a row; stopping (the last good checkpoint is kept "
                                "in {})", nonfinite_in_row, cfg.output));
      continue;
    }
    nonfinite_in_row = 0;
    if (!dist) {
      clear_grads(*optimizer);
      lp.total.backward();
    }
    fused_adam_step(*optimizer);
    ++batch;
    ++result.batches_run;
    last_loss = loss_v;
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    avg.add(loss_v, student_v, distill_v, secs);
    ema_secs = ema_secs == 0 ? secs : 0.9 * ema_secs + 0.1 * secs;
    log.progress(batch, cfg.total_batches, loss_v, student_v, distill_v, cfg.batch_size / ema_secs,
                 ema_secs * static_cast<double>(cfg.total_batches - batch));

    if (should_log(batch)) {
      const double n = static_cast<double>(avg.count);
      log.batch_line(format_batch_line(batch, cfg.total_batches, avg.loss / n, avg.student / n, avg.distill / n,
                                       avg.seconds / n));
      log.csv(batch, avg.loss / n, avg.student / n, avg.distill / n, cfg.batch_size * n / avg.seconds,
              cfg.lr, phase, -1);
      avg.reset();
    }
    const bool stop = stop_requested || (!dist && g_stop.load());
    const bool val_due = has_val && ((cfg.val_every > 0 && batch % cfg.val_every == 0) || batch == cfg.total_batches);
    bool val_best = false;
    if (val_due && main_rank) {
      const double ap = validate();
      result.last_val_ap = ap;
      log.csv(batch, last_loss, student_v, distill_v, 0, cfg.lr, phase, ap);
      if (ap > best_metric) {
        best_metric = ap;
        val_best = true;
      }
    }
    // The same decision on every rank (validation results are rank 0's alone).
    const bool sync_point = batch % cfg.save_every == 0 || batch == cfg.total_batches || stop || val_due;
    if (sync_point) {
      ckpt_state = agreed_loader_state();
      if (cache) cache->flush();
    }
    if (main_rank && (batch % cfg.save_every == 0 || batch == cfg.total_batches || stop || val_best)) {
      bool is_best = val_best;
      if (!has_val) {  // the seed's rule, without a validation set: the lowest batch loss at a save
        is_best = loss_v < best_loss;
        if (is_best) best_loss = loss_v;
      }
      save_all(batch % cfg.save_every == 0, is_best);
    }
    if (stop) {
      log.line(fmt::format("Stopped after batch {} ({}); checkpoint written to {}/latest.pth", batch,
                           cfg.stop_after > 0 && result.batches_run >= cfg.stop_after ? "--stop-after" : "signal",
                           cfg.output));
      result.interrupted = true;
      break;
    }
  }
  if (loader.bad_count() > 0) {
    auto ex = loader.bad_examples();
    std::string first;
    for (const auto& e : ex) first += "\n  " + e;
    log.line(fmt::format("{} samples could not be read and were skipped; first:{}", loader.bad_count(), first));
  }
  if (nonfinite_skipped > 0) log.line(fmt::format("{} steps skipped for non-finite loss", nonfinite_skipped));
  if (main_rank && !cfg.no_plot) {  // results.png at the end of every run (also `posekd plot DIR`)
    const std::string csv = (fs::path(cfg.output) / "results.csv").string();
    const std::string png = (fs::path(cfg.output) / "results.png").string();
    try {
      if (plot_results(read_results_csv(csv), png, fs::path(cfg.output).filename().string()))
        log.line("Plot: " + png);
    } catch (const std::exception& e) {
      log.line(std::string("warning: results.png not written: ") + e.what());
    }
  }
  if (dist) dist->barrier();  // nobody leaves (closing its sockets) while another still saves
  log.line(fmt::format("Done: batch {}/{}; checkpoints in {}", batch, cfg.total_batches, cfg.output));
  result.batches_done = batch;
  result.last_loss = last_loss;
  return result;
}

}  // namespace posekd::train
