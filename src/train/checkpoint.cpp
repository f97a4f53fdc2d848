#include "posekd/train/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "posekd/ai8x/calibration.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/error.h"

namespace posekd::train {
namespace fs = std::filesystem;
using io::Value;

std::string batch_checkpoint_name(std::int64_t batch) { return fmt::format("batch_{:06d}.pth", batch); }

Value checkpoint_to_value(const Checkpoint& c) {
  Value state = Value::dict();
  for (const auto& [idx, slot] : c.optimizer.state) {
    Value s = Value::dict();
    s.set("step", Value::tensor(torch::tensor(static_cast<float>(slot.step))));
    s.set("exp_avg", Value::tensor(slot.exp_avg));
    s.set("exp_avg_sq", Value::tensor(slot.exp_avg_sq));
    state.set(Value::integer(idx), s);
  }
  Value params = Value::list();
  for (std::int64_t i = 0; i < c.optimizer.num_params; ++i) params.append(Value::integer(i));
  Value group = Value::dict();
  group.set("lr", Value::floating(c.optimizer.lr));
  group.set("betas", Value::tuple({Value::floating(c.optimizer.beta1), Value::floating(c.optimizer.beta2)}));
  group.set("eps", Value::floating(c.optimizer.eps));
  group.set("weight_decay", Value::floating(c.optimizer.weight_decay));
  group.set("amsgrad", Value::boolean(c.optimizer.amsgrad));
  group.set("maximize", Value::boolean(false));
  group.set("foreach", Value::none());
  group.set("capturable", Value::boolean(false));
  group.set("differentiable", Value::boolean(false));
  group.set("params", params);
  Value opt = Value::dict();
  opt.set("state", state);
  opt.set("param_groups", Value::list({group}));

  Value extras = Value::dict();
  extras.set("version", Value::integer(1));
  extras.set("arch", Value::string(c.arch));
  extras.set("phase", Value::string(c.phase));
  extras.set("qat_start_batch", Value::integer(c.qat_start_batch));
  Value loader = Value::dict();
  loader.set("epoch", Value::integer(c.loader.epoch));
  loader.set("position", Value::integer(c.loader.position));
  loader.set("bad_count", Value::integer(c.loader.bad_count));
  Value bad = Value::list();
  for (const auto& b : c.loader.bad_examples) bad.append(Value::string(b));
  loader.set("bad_examples", bad);
  extras.set("loader", loader);
  Value avg = Value::dict();
  avg.set("loss", Value::floating(c.avg.loss));
  avg.set("student", Value::floating(c.avg.student));
  avg.set("distill", Value::floating(c.avg.distill));
  avg.set("seconds", Value::floating(c.avg.seconds));
  avg.set("count", Value::integer(c.avg.count));
  extras.set("running_average", avg);
  extras.set("nonfinite_skipped", Value::integer(c.nonfinite_skipped));
  extras.set("best_metric", Value::floating(c.best_metric));
  extras.set("teacher_id", Value::string(c.teacher_id));
  extras.set("seed", Value::integer(static_cast<std::int64_t>(c.seed)));

  Value root = Value::dict();
  root.set("batch", Value::integer(c.batch));
  root.set("model", io::to_value(c.model));
  root.set("optimizer", opt);
  root.set("loss", Value::floating(c.loss));
  root.set("best_loss", Value::floating(c.best_loss));
  root.set("posekd", extras);
  return root;
}

namespace {

double tensor_or_number(const Value& v, const std::string& what) {
  if (v.is_tensor()) return v.as_tensor(what).item<double>();
  return v.as_double(what);
}

AdamSnapshot adam_from_value(const Value& opt, const std::string& path) {
  AdamSnapshot s;
  const std::string w = path + ": optimizer";
  const Value& groups = opt.at("param_groups", w);
  auto& gl = groups.items(w + ".param_groups");
  if (gl.size() != 1) fail_file(path, fmt::format("optimizer has {} param groups, posekd expects 1", gl.size()));
  const Value& g = gl[0];
  s.lr = g.at("lr", w).as_double(w + ".lr");
  auto& betas = g.at("betas", w).items(w + ".betas");
  if (betas.size() != 2) fail_file(path, "optimizer betas must have two values");
  s.beta1 = betas[0].as_double(w + ".betas");
  s.beta2 = betas[1].as_double(w + ".betas");
  s.eps = g.at("eps", w).as_double(w + ".eps");
  if (const Value* wd = g.find("weight_decay")) s.weight_decay = wd->as_double(w + ".weight_decay");
  if (const Value* am = g.find("amsgrad")) s.amsgrad = am->as_bool(w + ".amsgrad");
  auto& params = g.at("params", w).items(w + ".params");
  s.num_params = static_cast<std::int64_t>(params.size());
  const Value& state = opt.at("state", w);
  for (const auto& [k, v] : state.dict_data(w + ".state").items) {
    std::int64_t idx = k.as_int(w + ".state key");
    const std::string sw = fmt::format("{}.state[{}]", w, idx);
    AdamSlot slot;
    slot.step = tensor_or_number(v.at("step", sw), sw + ".step");
    slot.exp_avg = v.at("exp_avg", sw).as_tensor(sw + ".exp_avg");
    slot.exp_avg_sq = v.at("exp_avg_sq", sw).as_tensor(sw + ".exp_avg_sq");
    s.state[idx] = slot;
  }
  return s;
}

}  // namespace

Checkpoint checkpoint_from_value(const Value& v, const std::string& path) {
  if (!v.is_dict()) fail_file(path, "not a training checkpoint (expected a dict, got " + v.describe() + ")");
  if (!v.contains("model") || !v.contains("batch"))
    fail_file(path, "not a training checkpoint (no 'model'/'batch' entries; for a teacher use --teacher)");
  Checkpoint c;
  c.batch = v.at("batch", path).as_int(path + ": batch");
  c.model = io::to_state_dict(v.at("model", path), path + ": model");
  if (const Value* o = v.find("optimizer"); o && !o->is_none()) c.optimizer = adam_from_value(*o, path);
  if (const Value* l = v.find("loss")) c.loss = tensor_or_number(*l, path + ": loss");
  if (const Value* b = v.find("best_loss")) c.best_loss = tensor_or_number(*b, path + ": best_loss");
  if (const Value* e = v.find("posekd")) {
    const std::string w = path + ": posekd";
    c.has_extras = true;
    c.arch = e->at("arch", w).as_string(w + ".arch");
    c.phase = e->at("phase", w).as_string(w + ".phase");
    c.qat_start_batch = e->at("qat_start_batch", w).as_int(w + ".qat_start_batch");
    const Value& ld = e->at("loader", w);
    c.loader.epoch = ld.at("epoch", w).as_int(w + ".loader.epoch");
    c.loader.position = ld.at("position", w).as_int(w + ".loader.position");
    c.loader.bad_count = ld.at("bad_count", w).as_int(w + ".loader.bad_count");
    for (const auto& b : ld.at("bad_examples", w).items(w + ".loader.bad_examples"))
      c.loader.bad_examples.push_back(b.as_string(w + ".loader.bad_examples"));
    const Value& avg = e->at("running_average", w);
    c.avg.loss = avg.at("loss", w).as_double(w);
    c.avg.student = avg.at("student", w).as_double(w);
    c.avg.distill = avg.at("distill", w).as_double(w);
    c.avg.seconds = avg.at("seconds", w).as_double(w);
    c.avg.count = avg.at("count", w).as_int(w);
    c.nonfinite_skipped = e->at("nonfinite_skipped", w).as_int(w);
    c.best_metric = e->at("best_metric", w).as_double(w);
    c.teacher_id = e->at("teacher_id", w).as_string(w);
    c.seed = static_cast<std::uint64_t>(e->at("seed", w).as_int(w));
    if (c.phase != "float" && c.phase != "qat") fail_file(path, "unknown training phase '" + c.phase + "'");
  }
  return c;
}

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  io::save_torch_file(path, checkpoint_to_value(c));
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!fs::exists(path)) fail_file(path, "checkpoint does not exist");
  return checkpoint_from_value(io::load_torch_file(path), path);
}

std::optional<ResumePoint> find_resume_point(const std::string& explicit_checkpoint, const std::string& resume,
                                             const std::string& output_dir) {
  // Explicit choices must load: a wrong file is an error, never a silent fresh start.
  for (const std::string* p : {&explicit_checkpoint, &resume}) {
    if (!p->empty()) return ResumePoint{*p, load_checkpoint(*p), "resuming from " + *p};
  }
  const fs::path dir(output_dir);
  const fs::path latest = dir / "latest.pth";
  std::string problem;
  if (fs::exists(latest)) {
    try {
      return ResumePoint{latest.string(), load_checkpoint(latest.string()), "resuming from " + latest.string()};
    } catch (const std::exception& e) {
      problem = e.what();
    }
    // latest.pth is damaged: newest good batch_*.pth
    std::vector<fs::path> batches;
    std::error_code ec;
    for (const auto& ent : fs::directory_iterator(dir, ec)) {
      const std::string n = ent.path().filename().string();
      if (n.rfind("batch_", 0) == 0 && ent.path().extension() == ".pth") batches.push_back(ent.path());
    }
    std::sort(batches.rbegin(), batches.rend());
    for (const auto& b : batches) {
      try {
        return ResumePoint{b.string(), load_checkpoint(b.string()),
                           fmt::format("latest.pth is damaged ({}); resuming from {}", problem, b.string())};
      } catch (const std::exception&) {
        continue;
      }
    }
  }
  const fs::path best = dir / "best.pth";
  if (fs::exists(best)) {
    std::string note = problem.empty() ? "resuming from " + best.string()
                                       : fmt::format(
                                             "latest.pth is damaged ({}) and no batch checkpoint loads; "
                                             "resuming from {}",
                                             problem, best.string());
    return ResumePoint{best.string(), load_checkpoint(best.string()), note};
  }
  if (!problem.empty())
    throw Error(
        fmt::format("{} and no batch_*.pth or best.pth checkpoint loads; refusing to start over "
                    "(move the output directory away to start fresh)",
                    problem));
  return std::nullopt;
}

void enter_qat_structure(model::Student& s) {
  for (auto* l : s.layers()) l->fuse_bn();
  ai8x::initiate_qat(s.layers(), s.layer_names(), ai8x::QatPolicy{});
}

std::shared_ptr<model::Student> load_student(const std::string& path, const std::string& arch_fallback) {
  if (!fs::exists(path)) fail_file(path, "checkpoint does not exist");
  Value v = io::load_torch_file(path);
  io::StateDict sd;
  std::string arch = arch_fallback;
  if (v.is_dict() && v.contains("model") && v.contains("batch")) {
    Checkpoint c = checkpoint_from_value(v, path);
    sd = std::move(c.model);
    if (c.has_extras && !c.arch.empty()) arch = c.arch;
  } else if (v.is_dict() && v.contains("state_dict")) {
    sd = io::to_state_dict(v.at("state_dict", path), path + ": state_dict");
    if (const Value* a = v.find("arch"); a && a->is_string()) {
      // ai8x checkpoints name the arch as the YAML does; posekd writes its own names there.
      for (const auto& known : model::student_archs())
        if (a->as_string() == known) arch = known;
    }
  } else {
    fail_file(path, "not a student checkpoint (no 'model' or 'state_dict' entry)");
  }
  auto student = model::make_student(arch);
  bool has_bn = false;
  for (const auto& [k, t] : sd) has_bn |= k.find(".bn.") != std::string::npos;
  if (!has_bn) enter_qat_structure(*student);
  ai8x::load_state_dict(*student, sd, true, path);
  student->eval();
  return student;
}

int prune_batch_checkpoints(const std::string& dir, int keep) {
  if (keep <= 0) return 0;
  std::vector<fs::path> batches;
  std::error_code ec;
  for (const auto& ent : fs::directory_iterator(dir, ec)) {
    const std::string n = ent.path().filename().string();
    if (n.rfind("batch_", 0) == 0 && ent.path().extension() == ".pth") batches.push_back(ent.path());
  }
  std::sort(batches.begin(), batches.end());
  int removed = 0;
  for (size_t i = 0; i + static_cast<size_t>(keep) < batches.size(); ++i)
    if (fs::remove(batches[i], ec)) ++removed;
  return removed;
}

}  // namespace posekd::train
