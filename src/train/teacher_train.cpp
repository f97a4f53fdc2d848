#include "posekd/train/teacher_train.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>

#include <unistd.h>

#include "posekd/core/error.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/loader.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/teacher.h"
#include "posekd/train/adam_state.h"
#include "posekd/train/amp.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/distributed.h"
#include "posekd/train/log.h"
#include "posekd/train/loss.h"
#include "posekd/train/step.h"

namespace posekd::train {
namespace fs = std::filesystem;
using io::Value;

namespace {

io::StateDict teacher_state(torch::nn::Module& m) {
  io::StateDict sd;
  for (const auto& p : m.named_parameters())
    sd.emplace_back(p.key(), p.value().detach().clone(at::MemoryFormat::Contiguous));
  for (const auto& b : m.named_buffers())
    sd.emplace_back(b.key(), b.value().detach().clone(at::MemoryFormat::Contiguous));
  return sd;
}

std::string teacher_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_file(path, "cannot read the checkpoint");
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace

double teacher_lr_at(const TeacherTrainConfig& cfg, std::int64_t batch) { return teacher_schedule(cfg).at(batch); }

LrSchedule teacher_schedule(const TeacherTrainConfig& cfg) {
  LrSchedule s;
  s.kind = cfg.lr_schedule;
  s.lr = cfg.lr;
  s.warmup = cfg.warmup_batches;
  s.end_factor = cfg.lr_end_factor;
  s.total = cfg.total_batches;
  return s;
}

TeacherTrainResult run_teacher_training(const TeacherTrainConfig& cfg) {
  using clock = std::chrono::steady_clock;
  if (cfg.input_size % 8 != 0 || cfg.input_size < 32)
    throw Error("train-teacher: --input-size must be a multiple of 8, >= 32");
  if (cfg.batch_size < 1 || cfg.total_batches < 1)
    throw Error("train-teacher: --batch-size and --total-batches must be >= 1");
  const LrSchedule schedule = teacher_schedule(cfg);
  schedule.validate("train-teacher");
  if (!(cfg.weight_decay >= 0)) throw Error("train-teacher: --weight-decay must be >= 0");
  const auto t_start = clock::now();
  // One process, or a data-parallel group (torchrun's environment or the dist_* options), set up as
  // `posekd train` does (Trainer::setup_processes).
  DistOptions dopt;
  dopt.rank = cfg.dist_rank;
  dopt.world_size = cfg.dist_world_size;
  dopt.local_rank = cfg.dist_local_rank;
  dopt.master_addr = cfg.dist_master_addr;
  dopt.master_port = cfg.dist_master_port;
  dopt.timeout_s = cfg.dist_timeout;
  dopt = resolve_dist_options(dopt);
  const int rank = dopt.rank, world = dopt.world_size;
  const int local_batch = per_rank_batch(cfg.batch_size, world);
  int want_threads = cfg.threads;  // processes on one machine share its cores
  if (want_threads <= 0 && dopt.local_world_size > 1)
    want_threads = std::max(1, hardware_threads() / dopt.local_world_size);
  const int threads = set_compute_threads(want_threads);
  const Precision precision = resolve_precision(cfg.precision);
  std::error_code ec;
  fs::create_directories(cfg.output, ec);
  if (ec) fail_file(cfg.output, "cannot create the output directory: " + ec.message());
  const bool main_rank = rank == 0;  // rank 0 alone writes log.txt, results.csv and teacher.pth
  TrainLog log(main_rank ? cfg.output : std::string(), main_rank ? cfg.quiet : true);
  std::unique_ptr<Distributed> dist;
  if (world > 1) {
    dist = std::make_unique<Distributed>(dopt);
    log.line(fmt::format("Distributed: {} processes (Gloo via {}:{}), global batch {} = {} x {}, {} threads each",
                         world, dopt.master_addr, dopt.master_port, cfg.batch_size, world, local_batch, threads));
  }

  data::CocoLoadOptions lo;
  lo.subset = cfg.subset;
  lo.cache_dir = (fs::path(cfg.output) / "cache").string();
  data::CocoDataset ds;
  for (int r = 0; r < world; ++r) {  // rank 0 writes the annotation cache, the others read it
    if (r == rank) ds = data::load_coco(cfg.ann, cfg.images, lo);
    if (dist) dist->barrier();
  }
  data::SampleConfig sc;
  sc.input_size = cfg.input_size;
  sc.augment = cfg.augment;
  sc.augment.enabled = !cfg.no_augment && cfg.augment.enabled;

  torch::manual_seed(cfg.seed);
  model::PoseEstimationWithMobileNet net(cfg.num_refinement_stages);
  net->train();
  // oneDNN's bf16 kernels run fastest on channels-last tensors (docs/performance.md): under bf16 the
  // convolution weights and the input take that layout (loading a checkpoint keeps it).
  const auto layout = precision == Precision::bf16 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  net->set_weight_layout(layout);
  auto params = net->parameters();
  auto opt =
      std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(cfg.lr).weight_decay(cfg.weight_decay));

  const std::string ckpt_path = (fs::path(cfg.output) / "teacher.pth").string();
  std::int64_t batch = 0;
  data::LoaderState ls;
  // The file to resume from: rank 0's teacher.pth, sent to the other ranks (no shared folder needed).
  std::string resume_from = main_rank && fs::exists(ckpt_path) ? ckpt_path : std::string();
  std::optional<fs::path> received;
  if (dist) {
    std::string payload = resume_from.empty() ? std::string() : teacher_file_bytes(resume_from);
    payload = dist->broadcast_bytes(payload);
    if (!main_rank && !payload.empty()) {
      received = fs::temp_directory_path() / fmt::format("posekd-teacher-resume-{}-{}.pth", ::getpid(), rank);
      std::ofstream f(*received, std::ios::binary);
      f.write(payload.data(), static_cast<std::streamsize>(payload.size()));
      if (!f) fail_file(received->string(), "cannot write the checkpoint received from rank 0");
      resume_from = received->string();
    }
  }
  if (!resume_from.empty()) {
    Value v;
    try {
      v = io::load_torch_file(resume_from);
    } catch (...) {
      if (received) fs::remove(*received, ec);
      throw;
    }
    if (received) fs::remove(*received, ec);
    auto sd = model::teacher_state_dict_of(v, ckpt_path);
    auto rep = model::load_teacher_state(net, sd, ckpt_path);
    if (rep.missing)
      fail_file(ckpt_path, fmt::format("{} teacher entries missing; not this architecture", rep.missing));
    batch = v.at("iter", ckpt_path).as_int(ckpt_path + ": iter");
    if (const Value* e = v.find("posekd")) {
      ls.epoch = e->at("loader_epoch", ckpt_path).as_int();
      ls.position = e->at("loader_position", ckpt_path).as_int();
      Checkpoint tmp;  // reuse the optimizer reader of training checkpoints
      Value fake = Value::dict();
      fake.set("batch", Value::integer(batch));
      fake.set("model", Value::dict());
      fake.set("optimizer", v.at("optimizer", ckpt_path));
      tmp = checkpoint_from_value(fake, ckpt_path);
      restore_adam(*opt, params, tmp.optimizer, ckpt_path);
      for (auto& g : opt->param_groups())  // this run's options win over the file's
        static_cast<torch::optim::AdamOptions&>(g.options()).weight_decay(cfg.weight_decay);
    }
    log.line(fmt::format("Resumed the teacher at batch {} from {}", batch, ckpt_path));
  }
  std::unique_ptr<GradSync> gsync;
  if (dist) {
    // Identical start everywhere, whatever each rank initialised or read.
    std::vector<torch::Tensor> state = net->parameters();
    for (auto& t : net->buffers()) state.push_back(t);
    dist->broadcast(state);
    gsync = std::make_unique<GradSync>(*dist, params);
    if (cfg.sync_bn) {
      net->set_sync_bn(dist.get());
      log.line("SyncBN: BatchNorm statistics over the global batch of all processes");
    }
  }
  data::Loader loader(ds, sc, local_batch, cfg.seed, cfg.workers, 4, ls, data::Shard{rank, world});
  std::int64_t nparams = 0;
  for (const auto& p : params) nparams += p.numel();
  log.line(
      fmt::format("Teacher PoseEstimationWithMobileNet({} refinement stage, {} parameters) from scratch at {}x{}, "
                  "{} samples, batch {}, {} batches, {}, {} threads",
                  cfg.num_refinement_stages, nparams, cfg.input_size, cfg.input_size, loader.num_samples(),
                  cfg.batch_size, cfg.total_batches, schedule.describe(), threads));
  log.line("Augmentation: " + data::describe(sc.augment));
  log.line("Precision: " + describe_precision(precision, cfg.precision));

  // The data position a checkpoint records: with several ranks, the furthest one (in global batches).
  auto agreed_loader_state = [&]() {
    data::LoaderState st = loader.state();
    if (!dist) return st;
    const auto n = loader.num_samples();
    const auto g = static_cast<std::int64_t>(dist->max({static_cast<double>(st.epoch * n + st.position)})[0]);
    st.epoch = g / n;
    st.position = g % n;
    return st;
  };
  auto save = [&]() {  // every rank calls it (the loader state is agreed); rank 0 writes
    const data::LoaderState st = agreed_loader_state();
    if (!main_rank) return;
    Value root = Value::dict();
    root.set("state_dict", io::to_value(teacher_state(*net)));
    Checkpoint tmp;
    tmp.optimizer = snapshot_adam(*opt, params);
    root.set("optimizer", checkpoint_to_value(tmp).at("optimizer"));
    root.set("iter", Value::integer(batch));
    Value meta = Value::dict();
    meta.set("input_size", Value::integer(cfg.input_size));
    meta.set("input_scale", Value::floating(1.0));
    meta.set("num_refinement_stages", Value::integer(cfg.num_refinement_stages));
    root.set("posekd_teacher", meta);
    Value ex = Value::dict();
    ex.set("loader_epoch", Value::integer(st.epoch));
    ex.set("loader_position", Value::integer(st.position));
    root.set("posekd", ex);
    io::save_torch_file(ckpt_path, root);
  };

  TeacherTrainResult res;
  res.checkpoint = ckpt_path;
  RunningAverage avg;
  while (batch < cfg.total_batches) {
    auto t0 = clock::now();
    const double lr = schedule.at(batch);
    data::Batch b = loader.next();
    const StepOutcome r = train_step(
        *opt,
        [&] {
          std::vector<torch::Tensor> outs;
          {
            AutocastGuard ac(precision);  // bf16 convolutions; BatchNorm, loss and Adam in fp32
            outs = net->forward(b.image.contiguous(layout));
          }
          return teacher_loss(outs, b.heatmaps, b.pafs, b.mask);
        },
        StepOptions{lr, gsync.get(), dist.get()});
    const double lv = r.loss;
    if (!r.finite) throw Error(fmt::format("train-teacher: non-finite loss at batch {}", batch + 1));
    ++batch;
    ++res.batches_run;
    if (res.batches_run == 1) res.first_loss = lv;
    res.last_loss = lv;
    avg.add(lv, r.student, r.distill, std::chrono::duration<double>(clock::now() - t0).count());
    if (should_log(batch)) {
      const double n = static_cast<double>(avg.count);
      log.line(fmt::format("Teacher batch {}/{} | Loss: {:.4f} | Heatmaps: {:.4f} | PAFs: {:.4f} | Time: {:.2f}s | {}",
                           batch, cfg.total_batches, avg.loss / n, avg.student / n, avg.distill / n, avg.seconds / n,
                           format_eta(avg.seconds / n * static_cast<double>(cfg.total_batches - batch))));
      log.csv(batch, avg.loss / n, avg.student / n, avg.distill / n, cfg.batch_size * n / avg.seconds, lr, "teacher",
              -1);
      avg.reset();
    }
    const bool stop = cfg.stop_after > 0 && res.batches_run >= cfg.stop_after;
    if (batch % cfg.save_every == 0 || batch == cfg.total_batches || stop) save();
    if (stop) break;
  }
  if (dist) dist->barrier();  // nobody leaves (closing its sockets) while rank 0 still saves
  res.batches_done = batch;
  res.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  log.line(fmt::format("Teacher done: batch {}/{}; {}", batch, cfg.total_batches, ckpt_path));
  return res;
}

}  // namespace posekd::train
