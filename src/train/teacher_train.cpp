#include "posekd/train/teacher_train.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "posekd/core/error.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/loader.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/teacher.h"
#include "posekd/train/adam_state.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/log.h"
#include "posekd/train/loss.h"

namespace posekd::train {
namespace fs = std::filesystem;
using io::Value;

namespace {

io::StateDict teacher_state(torch::nn::Module& m) {
  io::StateDict sd;
  for (const auto& p : m.named_parameters()) sd.emplace_back(p.key(), p.value().detach().clone());
  for (const auto& b : m.named_buffers()) sd.emplace_back(b.key(), b.value().detach().clone());
  return sd;
}

}  // namespace

double teacher_lr_at(const TeacherTrainConfig& cfg, std::int64_t batch) {
  if (cfg.warmup_batches > 0 && batch < cfg.warmup_batches)
    return cfg.lr * static_cast<double>(batch + 1) / static_cast<double>(cfg.warmup_batches);
  if (cfg.lr_end_factor == 1.0) return cfg.lr;
  const double span = static_cast<double>(std::max<std::int64_t>(1, cfg.total_batches - cfg.warmup_batches));
  const double t = std::min(1.0, static_cast<double>(batch - cfg.warmup_batches) / span);
  const double c = 0.5 * (1.0 + std::cos(3.14159265358979323846 * t));
  return cfg.lr * (cfg.lr_end_factor + (1.0 - cfg.lr_end_factor) * c);
}

TeacherTrainResult run_teacher_training(const TeacherTrainConfig& cfg) {
  using clock = std::chrono::steady_clock;
  if (cfg.input_size % 8 != 0 || cfg.input_size < 32) throw Error("train-teacher: --input-size must be a multiple of 8, >= 32");
  if (cfg.batch_size < 1 || cfg.total_batches < 1) throw Error("train-teacher: --batch-size and --total-batches must be >= 1");
  if (!(cfg.lr > 0) || !(cfg.lr_end_factor >= 0) || cfg.warmup_batches < 0)
    throw Error("train-teacher: --lr must be > 0, --lr-end-factor >= 0, --warmup >= 0");
  const auto t_start = clock::now();
  const int threads = set_compute_threads(cfg.threads);
  std::error_code ec;
  fs::create_directories(cfg.output, ec);
  if (ec) fail_file(cfg.output, "cannot create the output directory: " + ec.message());
  TrainLog log(cfg.output, cfg.quiet);

  data::CocoLoadOptions lo;
  lo.subset = cfg.subset;
  lo.cache_dir = (fs::path(cfg.output) / "cache").string();
  data::CocoDataset ds = data::load_coco(cfg.ann, cfg.images, lo);
  data::SampleConfig sc;
  sc.input_size = cfg.input_size;

  torch::manual_seed(cfg.seed);
  model::PoseEstimationWithMobileNet net(cfg.num_refinement_stages);
  net->train();
  auto params = net->parameters();
  auto opt = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(cfg.lr));

  const std::string ckpt_path = (fs::path(cfg.output) / "teacher.pth").string();
  std::int64_t batch = 0;
  data::LoaderState ls;
  if (fs::exists(ckpt_path)) {
    Value v = io::load_torch_file(ckpt_path);
    auto sd = model::teacher_state_dict_of(v, ckpt_path);
    auto rep = model::load_teacher_state(net, sd, ckpt_path);
    if (rep.missing) fail_file(ckpt_path, fmt::format("{} teacher entries missing; not this architecture", rep.missing));
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
    }
    log.line(fmt::format("Resumed the teacher at batch {} from {}", batch, ckpt_path));
  }
  data::Loader loader(ds, sc, cfg.batch_size, cfg.seed, cfg.workers, 4, ls);
  std::int64_t nparams = 0;
  for (const auto& p : params) nparams += p.numel();
  log.line(fmt::format("Teacher PoseEstimationWithMobileNet({} refinement stage, {} parameters) from scratch at {}x{}, "
                       "{} samples, batch {}, {} batches, lr {}{}, {} threads",
                       cfg.num_refinement_stages, nparams, cfg.input_size, cfg.input_size, loader.num_samples(),
                       cfg.batch_size, cfg.total_batches, cfg.lr,
                       cfg.warmup_batches > 0 || cfg.lr_end_factor != 1.0
                           ? fmt::format(" (warm-up {} batches, cosine to x{})", cfg.warmup_batches, cfg.lr_end_factor)
                           : std::string(),
                       threads));

  auto save = [&]() {
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
    auto st = loader.state();
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
    const double lr = teacher_lr_at(cfg, batch);
    for (auto& g : opt->param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
    data::Batch b = loader.next();
    auto outs = net->forward(b.image);
    torch::Tensor hm_loss = torch::zeros({}), paf_loss = torch::zeros({});
    for (size_t s = 0; s + 1 < outs.size(); s += 2) {
      hm_loss = hm_loss + l2_loss(outs[s], b.heatmaps, b.mask);
      paf_loss = paf_loss + l2_loss(outs[s + 1], b.pafs, b.mask);
    }
    torch::Tensor loss = hm_loss + paf_loss;
    const double lv = loss.item<double>();
    if (!std::isfinite(lv)) throw Error(fmt::format("train-teacher: non-finite loss at batch {}", batch + 1));
    opt->zero_grad();
    loss.backward();
    opt->step();
    ++batch;
    ++res.batches_run;
    if (res.batches_run == 1) res.first_loss = lv;
    res.last_loss = lv;
    avg.add(lv, hm_loss.item<double>(), paf_loss.item<double>(),
            std::chrono::duration<double>(clock::now() - t0).count());
    if (should_log(batch)) {
      const double n = static_cast<double>(avg.count);
      log.line(fmt::format("Teacher batch {}/{} | Loss: {:.4f} | Heatmaps: {:.4f} | PAFs: {:.4f} | Time: {:.2f}s | {}",
                           batch, cfg.total_batches, avg.loss / n, avg.student / n, avg.distill / n, avg.seconds / n,
                           format_eta(avg.seconds / n * static_cast<double>(cfg.total_batches - batch))));
      log.csv(batch, avg.loss / n, avg.student / n, avg.distill / n, cfg.batch_size * n / avg.seconds, lr,
              "teacher", -1);
      avg.reset();
    }
    const bool stop = cfg.stop_after > 0 && res.batches_run >= cfg.stop_after;
    if (batch % cfg.save_every == 0 || batch == cfg.total_batches || stop) save();
    if (stop) break;
  }
  res.batches_done = batch;
  res.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  log.line(fmt::format("Teacher done: batch {}/{}; {}", batch, cfg.total_batches, ckpt_path));
  return res;
}

}  // namespace posekd::train
