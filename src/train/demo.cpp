#include "posekd/train/demo.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "posekd/ai8x/policy.h"
#include "posekd/core/error.h"
#include "posekd/core/threads.h"
#include "posekd/data/coco_json.h"
#include "posekd/data/synth.h"
#include "posekd/export/ai8x_export.h"
#include "posekd/export/fit.h"
#include "posekd/infer/coco_eval.h"
#include "posekd/infer/draw.h"
#include "posekd/infer/evaluate.h"
#include "posekd/model/teacher.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/plot.h"
#include "posekd/train/teacher_train.h"
#include "posekd/train/trainer.h"

namespace posekd::train {
namespace fs = std::filesystem;

DemoBudget demo_budget(bool quick, bool hard) {
  // Measured on 2 cores (idle): teacher (0 refinement stages) ~30 img/s training at 128x128,
  // student ~0.1 s per batch of 8 (float and QAT alike, validation included): full ~9 minutes,
  // quick ~1.2 minutes (its teacher reaches AP ~0.02, its students 0).
  DemoBudget b;
  if (quick) {
    b.train_images = 400;
    b.val_images = 40;
    b.teacher_batches = 160;
    b.student_batches = 80;
  } else {
    b.train_images = 1200;
    b.val_images = 150;
    b.teacher_batches = 800;
    b.student_batches = 1100;
    if (hard) {
      // 1,200 hard images over 2,400 batches: train AP 0.08, validation 0.005 (over-fitted); more
      // images instead of more epochs. ~14 minutes on 2 cores with AMX (bf16).
      b.train_images = 6000;
      b.teacher_batches = 2400;
    }
  }
  b.teacher_batch = 8;
  b.student_batch = 8;
  b.teacher_lr = 2e-3;
  b.student_lr = 1e-3;
  b.student_qat_lr = 1e-4;
  b.teacher_warmup = 30;
  b.teacher_stages = 0;
  b.qat_fraction = 0.5;  // the QAT phase needs as many batches as the float one to recover
  return b;
}

data::SynthConfig demo_synth_config(int images, std::uint64_t seed) {
  data::SynthConfig c;
  c.images = images;
  c.seed = seed;
  c.width = 128;  // square: the whole 128x128 network input is picture, no padding
  c.height = 128;
  c.min_people = 1;
  c.max_people = 2;
  c.min_scale = 0.6;
  c.max_scale = 1.05;
  c.max_yaw = 60 * 3.14159265358979323846 / 180;  // facing the camera: left/right unambiguous
  c.crowd_rate = 0;
  c.occluder_rate = 0.05;
  c.blur_rate = 0.1;
  c.clutter = 0.3;
  return c;
}

namespace {

void say(const std::string& s) {
  std::printf("[demo] %s\n", s.c_str());
  std::fflush(stdout);
}

DemoBudget resolve_budget(const DemoOptions& o) {
  DemoBudget b = demo_budget(o.quick, o.hard_data);
  const DemoBudget& v = o.overrides;
  auto pick = [](auto& dst, auto src) {
    if (src > 0) dst = src;
  };
  pick(b.train_images, v.train_images);
  pick(b.val_images, v.val_images);
  pick(b.teacher_batches, v.teacher_batches);
  pick(b.student_batches, v.student_batches);
  pick(b.teacher_batch, v.teacher_batch);
  pick(b.student_batch, v.student_batch);
  pick(b.teacher_lr, v.teacher_lr);
  pick(b.student_lr, v.student_lr);
  pick(b.student_qat_lr, v.student_qat_lr);
  pick(b.teacher_warmup, v.teacher_warmup);
  pick(b.qat_fraction, v.qat_fraction);
  if (v.teacher_stages >= 0) b.teacher_stages = v.teacher_stages;
  if (b.qat_fraction >= 1) throw Error("demo: the QAT fraction must be below 1");
  if (b.student_batches < 4) throw Error("demo: at least 4 student batches");
  return b;
}

// The demo teacher was trained at 128x128 on (x-128)/128: evaluate it there (16x16 maps, stride 8).
infer::PredictFn demo_teacher_predictor(const std::string& path) {
  return infer::teacher_predictor(model::load_teacher(path));  // its metadata: 128x128, scale 1, its stages
}

std::vector<infer::Pose> scaled(std::vector<infer::Pose> poses, float f) {
  for (auto& p : poses) {
    for (auto& v : p.points) v *= f;
    for (int k = 0; k < 17; ++k) {
      p.keypoints[3 * k] *= f;
      p.keypoints[3 * k + 1] *= f;
    }
  }
  return poses;
}

// One picture per row label: the same val images, predictions drawn at `mag` x magnification.
cv::Mat prediction_sheet(const std::vector<data::CocoImage>& imgs, const std::string& dir,
                         const std::vector<std::pair<std::string, std::vector<infer::ImagePrediction>>>& rows,
                         int mag) {
  int tw = 0, th = 0;
  for (const auto& im : imgs) {
    cv::Mat img = cv::imread((fs::path(dir) / im.file_name).string(), cv::IMREAD_COLOR);
    tw = std::max(tw, img.cols * mag);
    th = std::max(th, img.rows * mag);
  }
  const int pad = 4, label = 22;
  cv::Mat sheet(static_cast<int>(rows.size()) * (th + label + pad) + pad,
                static_cast<int>(imgs.size()) * (tw + pad) + pad, CV_8UC3, cv::Scalar(255, 255, 255));
  for (size_t r = 0; r < rows.size(); ++r) {
    const int y0 = pad + static_cast<int>(r) * (th + label + pad);
    cv::putText(sheet, rows[r].first, cv::Point(pad, y0 + 16), cv::FONT_HERSHEY_SIMPLEX, 0.55, cv::Scalar(20, 20, 20),
                1, cv::LINE_AA);
    for (size_t i = 0; i < imgs.size(); ++i) {
      cv::Mat img = cv::imread((fs::path(dir) / imgs[i].file_name).string(), cv::IMREAD_COLOR);
      if (img.empty()) continue;
      cv::Mat big;
      cv::resize(img, big, cv::Size(), mag, mag, cv::INTER_LINEAR);
      const auto& pr = rows[r].second[i];
      if (pr.ok) big = infer::draw_poses(big, scaled(pr.poses, static_cast<float>(mag)), 2, 3);
      big.copyTo(sheet(cv::Rect(pad + static_cast<int>(i) * (tw + pad), y0 + label, big.cols, big.rows)));
    }
  }
  return sheet;
}

// rows.csv: model,AP,AP50,AP75,APm,APl,AR,AR50,AR75,ARm,ARl (scripts/accuracy_benchmark.sh reads it).
void write_rows_csv(const std::string& path, const std::vector<DemoRow>& rows) {
  std::ofstream f(path);
  f << "model,AP,AP50,AP75,APm,APl,AR,AR50,AR75,ARm,ARl\n";
  for (const auto& r : rows) {
    f << '"' << r.model << '"';
    for (double v : r.stats) f << fmt::format(",{:.4f}", v);
    f << "\n";
  }
  if (!f) fail_file(path, "cannot write");
}

}  // namespace

DemoResult run_demo(const DemoOptions& o) {
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  auto lap = [t = clock::now()]() mutable {
    const auto now = clock::now();
    const double s = std::chrono::duration<double>(now - t).count();
    t = now;
    return s;
  };
  const int threads = set_compute_threads(o.threads);
  const DemoBudget b = resolve_budget(o);
  const fs::path out(o.out);
  fs::create_directories(out);
  // A fresh run: the trainers resume from what they find, so clear the demo's own folders.
  for (const char* d : {"data", "teacher", "student_kd", "student_gt", "export", "predictions"})
    fs::remove_all(out / d);
  for (const char* f : {"table.md", "results.csv", "results.png"}) fs::remove(out / f);
  DemoResult res;
  res.budget = b;

  // 1. data
  const fs::path data_dir = out / "data";
  say(fmt::format("1/6 synthetic people ({}): {} train + {} val images -> {}",
                  o.hard_data ? "posekd synth's hard defaults" : "the demo's easier setting", b.train_images,
                  b.val_images, data_dir.string()));
  data::SynthConfig tr, va;
  if (o.hard_data) {
    tr.images = b.train_images;
    tr.seed = o.seed;
    va.images = b.val_images;
  } else {
    tr = demo_synth_config(b.train_images, o.seed);
    va = demo_synth_config(b.val_images, 0);
  }
  va.seed = data::synth_mix(o.seed ^ 0x7661);
  data::generate_synth(data_dir.string(), tr, va);
  cv::imwrite((data_dir / "contact_sheet.jpg").string(), data::contact_sheet(data_dir.string(), "train", 12, 4, 2),
              {cv::IMWRITE_JPEG_QUALITY, 85});
  const std::string train_ann = data::coco_annotation_path(data_dir.string(), "train");
  const std::string val_ann = data::coco_annotation_path(data_dir.string(), "val");
  const std::string train_img = data::coco_image_dir(data_dir.string(), "train");
  const std::string val_img = data::coco_image_dir(data_dir.string(), "val");
  res.step_seconds[0] = lap();

  // 2. teacher from scratch
  say(
      fmt::format("2/6 teacher (Lightweight OpenPose, {} refinement stage(s)) from scratch at 128x128: {} batches of "
                  "{}, lr {} (warm-up {}, cosine decay)",
                  b.teacher_stages, b.teacher_batches, b.teacher_batch, b.teacher_lr, b.teacher_warmup));
  TeacherTrainConfig tc;
  tc.ann = train_ann;
  tc.images = train_img;
  tc.input_size = 128;
  tc.num_refinement_stages = b.teacher_stages;
  tc.batch_size = b.teacher_batch;
  tc.total_batches = b.teacher_batches;
  tc.save_every = b.teacher_batches;
  tc.lr = b.teacher_lr;
  tc.warmup_batches = b.teacher_warmup;
  tc.lr_end_factor = 0.05;
  tc.no_augment = o.no_augment;
  tc.augment = o.augment;
  tc.output = (out / "teacher").string();
  tc.threads = threads;
  tc.precision = o.precision;
  tc.seed = o.seed;
  tc.quiet = o.quiet;
  auto tres = run_teacher_training(tc);
  res.teacher_first_loss = tres.first_loss;
  res.teacher_last_loss = tres.last_loss;
  res.step_seconds[1] = lap();

  data::CocoDataset val = data::load_coco(val_ann, val_img);
  infer::EvalConfig ec;
  auto eval_row = [&](const std::string& name, const infer::PredictFn& fn) {
    infer::PredictStats ps;
    auto r = infer::evaluate_model(val, fn, ec, nullptr, &ps);
    res.rows.push_back({name, r.stats});
    say(fmt::format("    {}: AP {:.3f} | AP50 {:.3f} | AR {:.3f} | {} people found in {} images", name, r.stats[0],
                    r.stats[1], r.stats[5], ps.people, ps.images));
  };
  // The ceiling: the ground-truth target maps of the validation images through the same decoder.
  eval_row("ground-truth maps (the ceiling at 16x16)", infer::ground_truth_predictor(val, ec));
  const auto teacher_fn = demo_teacher_predictor(tres.checkpoint);
  eval_row(fmt::format("teacher ({} refinement stage(s), float, 128x128)", b.teacher_stages), teacher_fn);
  double eval_seconds = lap();
  if (o.teacher_only) {
    write_rows_csv((out / "rows.csv").string(), res.rows);
    res.step_seconds[4] = eval_seconds;
    res.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
    say(fmt::format("teacher only: done in {:.0f} s (teacher {:.0f} s)", res.seconds, res.step_seconds[1]));
    return res;
  }

  // 3. distilled student (ai85pose fits MAX78000), QAT switched on part way; 4. the same budget
  // without the teacher. One run each, with train's recipe: augmentation, a cosine schedule, and the
  // QAT switch at its own lower rate with a short warm-up (--qat-lr, --qat-warmup). ai8x's README:
  // keep the learning rate small after the switch; the switch multiplies the wide heads' outputs by
  // 2^-output_shift (4 here) and the loss jumps: at the float rate the QAT students collapse.
  const std::int64_t qat_start =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(b.qat_fraction * b.student_batches));
  const std::string policy_path = (out / "qat_policy.yaml").string();
  {
    ai8x::QatPolicy pol;  // ai8x's defaults: 8-bit weights, shift quantile 1, outlier z-score 8
    pol.start_batch = qat_start;
    ai8x::save_qat_policy(pol, policy_path);
  }
  auto student_cfg = [&](const std::string& name, bool with_teacher) {
    TrainConfig c;
    c.ann = train_ann;
    c.images = train_img;
    c.val_ann = val_ann;
    c.val_images = val_img;
    c.val_every = std::max<std::int64_t>(1, b.student_batches / 5);
    c.arch = "ai85pose";
    c.teacher = with_teacher ? tres.checkpoint : "";
    c.batch_size = b.student_batch;
    c.total_batches = b.student_batches;
    c.lr = b.student_lr;
    c.qat_lr = b.student_qat_lr;
    c.qat_policy = policy_path;
    c.save_every = qat_start;  // batch_<qat_start>.pth is the last float checkpoint
    c.output = (out / name).string();
    c.threads = threads;
    c.precision = o.precision;
    c.seed = o.seed;
    c.quiet = o.quiet;
    c.calib_batches = 8;
    c.no_augment = o.no_augment;
    c.augment = o.augment;
    return c;
  };
  auto train_student = [&](const std::string& name, bool with_teacher) {
    const TrainConfig c = student_cfg(name, with_teacher);
    auto r = run_training(c);
    if (r.batches_done != b.student_batches)
      throw Error(fmt::format("demo: student {} stopped at batch {} of {}", name, r.batches_done, b.student_batches));
  };
  say(fmt::format(
      "3/6 student ai85pose distilled from the teacher: {} batches of {}, lr {}, QAT from batch {} at lr {}",
      b.student_batches, b.student_batch, b.student_lr, qat_start, b.student_qat_lr));
  train_student("student_kd", true);
  res.step_seconds[2] = lap();
  say(fmt::format("4/6 student ai85pose without the teacher (same budget): {} batches", b.student_batches));
  train_student("student_gt", false);
  res.step_seconds[3] = lap();

  // 5. evaluation table
  say("5/6 evaluating on the validation images (COCO keypoint AP)");
  const std::string kd_float = (out / "student_kd" / batch_checkpoint_name(qat_start)).string();
  const std::string kd_qat = (out / "student_kd" / "latest.pth").string();
  const std::string gt_float = (out / "student_gt" / batch_checkpoint_name(qat_start)).string();
  const std::string gt_qat = (out / "student_gt" / "latest.pth").string();
  auto kd_student = load_student(kd_qat);
  auto gt_student = load_student(gt_qat);
  eval_row("student KD, float (before QAT)", infer::student_predictor(load_student(kd_float)));
  eval_row("student KD, QAT", infer::student_predictor(kd_student));
  eval_row("student KD, int8 (MAX78000 arithmetic)", infer::int8_predictor(*kd_student, kd_qat));
  eval_row("student without teacher, float (before QAT)", infer::student_predictor(load_student(gt_float)));
  eval_row("student without teacher, QAT", infer::student_predictor(gt_student));
  eval_row("student without teacher, int8", infer::int8_predictor(*gt_student, gt_qat));
  std::string t = "| model | AP | AP50 | AP75 | AR | AR50 |\n|---|---|---|---|---|---|\n";
  for (const auto& r : res.rows)
    t += fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |\n", r.model, r.stats[0], r.stats[1],
                     r.stats[2], r.stats[5], r.stats[6]);
  res.table_markdown = t;
  write_rows_csv((out / "rows.csv").string(), res.rows);
  res.step_seconds[4] = eval_seconds + lap();

  // 6. export, predictions, plots
  say("6/6 export for MAX78000, prediction pictures, results.png");
  deploy::ExportOptions eo;
  eo.source = kd_qat;
  eo.epoch = b.student_batches;
  auto ex = deploy::export_ai8x(*kd_student, deploy::device_limits("MAX78000"), (out / "export").string(), eo);
  res.export_fits = ex.fit.fits();
  fs::create_directories(out / "predictions");
  std::vector<data::CocoImage> few(val.images.begin(), val.images.begin() + std::min<size_t>(6, val.images.size()));
  const auto kd_preds = infer::predict_images(few, val.image_dir, infer::student_predictor(kd_student), ec);
  const auto int8_preds = infer::predict_images(few, val.image_dir, infer::int8_predictor(*kd_student, kd_qat), ec);
  const auto teacher_preds = infer::predict_images(few, val.image_dir, teacher_fn, ec);
  for (size_t i = 0; i < kd_preds.size(); ++i) {
    if (!kd_preds[i].ok) continue;
    cv::Mat img = cv::imread((fs::path(val.image_dir) / few[i].file_name).string(), cv::IMREAD_COLOR);
    cv::Mat big;
    cv::resize(img, big, cv::Size(), 3, 3, cv::INTER_LINEAR);
    cv::Mat drawn = infer::draw_poses(big, scaled(kd_preds[i].poses, 3.f), 2, 4);
    cv::imwrite((out / "predictions" / (fs::path(few[i].file_name).stem().string() + "_pose.jpg")).string(), drawn);
  }
  const std::vector<data::CocoImage> four(few.begin(), few.begin() + std::min<size_t>(4, few.size()));
  auto first4 = [&](const std::vector<infer::ImagePrediction>& p) {
    return std::vector<infer::ImagePrediction>(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(four.size()));
  };
  cv::imwrite((out / "predictions" / "sheet.jpg").string(),
              prediction_sheet(four, val.image_dir,
                               {{"teacher (float)", first4(teacher_preds)},
                                {"student KD, QAT (ai85pose)", first4(kd_preds)},
                                {"student KD, int8 in the MAX78000's arithmetic", first4(int8_preds)}},
                               2),
              {cv::IMWRITE_JPEG_QUALITY, 85});
  fs::copy_file(out / "student_kd" / "results.csv", out / "results.csv", fs::copy_options::overwrite_existing);
  plot_results(read_results_csv((out / "results.csv").string()), (out / "results.png").string(),
               "posekd demo: ai85pose distilled from the teacher");
  res.step_seconds[5] = lap();

  res.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  std::string timing = fmt::format(
      "data {:.0f} s, teacher {:.0f} s, student KD {:.0f} s, student without teacher {:.0f} s, evaluation {:.0f} s, "
      "export and pictures {:.0f} s; total {:.0f} s on {} threads",
      res.step_seconds[0], res.step_seconds[1], res.step_seconds[2], res.step_seconds[3], res.step_seconds[4],
      res.step_seconds[5], res.seconds, threads);
  {
    std::ofstream f(out / "table.md");
    f << t << "\n"
      << fmt::format(
             "Budget: {} train + {} val synthetic images ({}); teacher {} batches of {}; students {} batches "
             "of {} (lr {}), QAT from batch {} (lr {}).\n",
             b.train_images, b.val_images, o.hard_data ? "hard" : "easy", b.teacher_batches, b.teacher_batch,
             b.student_batches, b.student_batch, b.student_lr, qat_start, b.student_qat_lr)
      << "Time: " << timing << ".\n";
  }
  say(fmt::format("done in {:.0f} s ({})\n\n{}", res.seconds, timing, t));
  say(fmt::format("data         {}", data_dir.string()));
  say(fmt::format("teacher      {}", tres.checkpoint));
  say(fmt::format("students     {} , {}", (out / "student_kd").string(), (out / "student_gt").string()));
  say(fmt::format("export       {} ({})", (out / "export").string(),
                  res.export_fits ? "fits MAX78000" : "DOES NOT FIT"));
  say(fmt::format("predictions  {}", (out / "predictions").string()));
  say(fmt::format("curves       {} , {}", (out / "results.csv").string(), (out / "results.png").string()));
  say(fmt::format("table        {}", (out / "table.md").string()));
  return res;
}

}  // namespace posekd::train
