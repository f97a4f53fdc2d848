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
  b.student_qat_lr = b.student_lr;  // train's default: the QAT phase goes on at the float rate
  b.teacher_warmup = 30;
  b.teacher_stages = 0;
  b.qat_fraction = 0.5;  // half of the students' training runs in QAT (the switch only rounds)
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

namespace {

// One run of the demo; its phases are the methods, called in order by run().
class DemoRun {
 public:
  explicit DemoRun(const DemoOptions& o)
      : o_(o), b_(resolve_budget(o)), out_(o.out), threads_(set_compute_threads(o.threads)) {
    res_.budget = b_;
  }

  DemoResult run() {
    prepare_output();
    make_data();
    train_teacher();
    evaluate_teacher();
    if (o_.teacher_only) return finish_teacher_only();
    write_qat_policy();
    say(fmt::format(
        "3/6 student ai85pose distilled from the teacher: {} batches of {}, lr {}, QAT from batch {} at lr {}",
        b_.student_batches, b_.student_batch, b_.student_lr, qat_start_, b_.student_qat_lr));
    train_student("student_kd", true);
    res_.step_seconds[2] = lap();
    say(fmt::format("4/6 student ai85pose without the teacher (same budget): {} batches", b_.student_batches));
    train_student("student_gt", false);
    res_.step_seconds[3] = lap();
    evaluate_students();
    export_and_pictures();
    write_table_and_report();
    return res_;
  }

 private:
  using clock = std::chrono::steady_clock;

  // Seconds since the previous lap.
  double lap() {
    const auto now = clock::now();
    const double s = std::chrono::duration<double>(now - lap_start_).count();
    lap_start_ = now;
    return s;
  }

  // A fresh run: the trainers resume from what they find, so clear the demo's own folders.
  void prepare_output() {
    fs::create_directories(out_);
    for (const char* d : {"data", "teacher", "student_kd", "student_gt", "export", "predictions"})
      fs::remove_all(out_ / d);
    for (const char* f : {"table.md", "results.csv", "results.png"}) fs::remove(out_ / f);
  }

  // 1. synthetic people: the demo's easier setting or posekd synth's defaults.
  void make_data() {
    data_dir_ = out_ / "data";
    say(fmt::format("1/6 synthetic people ({}): {} train + {} val images -> {}",
                    o_.hard_data ? "posekd synth's hard defaults" : "the demo's easier setting", b_.train_images,
                    b_.val_images, data_dir_.string()));
    data::SynthConfig tr, va;
    if (o_.hard_data) {
      tr.images = b_.train_images;
      tr.seed = o_.seed;
      va.images = b_.val_images;
    } else {
      tr = demo_synth_config(b_.train_images, o_.seed);
      va = demo_synth_config(b_.val_images, 0);
    }
    va.seed = data::synth_mix(o_.seed ^ 0x7661);
    data::generate_synth(data_dir_.string(), tr, va);
    cv::imwrite((data_dir_ / "contact_sheet.jpg").string(), data::contact_sheet(data_dir_.string(), "train", 12, 4, 2),
                {cv::IMWRITE_JPEG_QUALITY, 85});
    train_ann_ = data::coco_annotation_path(data_dir_.string(), "train");
    val_ann_ = data::coco_annotation_path(data_dir_.string(), "val");
    train_img_ = data::coco_image_dir(data_dir_.string(), "train");
    val_img_ = data::coco_image_dir(data_dir_.string(), "val");
    res_.step_seconds[0] = lap();
  }

  // 2. the teacher from scratch at 128x128.
  void train_teacher() {
    say(
        fmt::format("2/6 teacher (Lightweight OpenPose, {} refinement stage(s)) from scratch at 128x128: {} batches of "
                    "{}, lr {} (warm-up {}, cosine decay)",
                    b_.teacher_stages, b_.teacher_batches, b_.teacher_batch, b_.teacher_lr, b_.teacher_warmup));
    TeacherTrainConfig tc;
    tc.ann = train_ann_;
    tc.images = train_img_;
    tc.input_size = 128;
    tc.num_refinement_stages = b_.teacher_stages;
    tc.batch_size = b_.teacher_batch;
    tc.total_batches = b_.teacher_batches;
    tc.save_every = b_.teacher_batches;
    tc.lr = b_.teacher_lr;
    tc.warmup_batches = b_.teacher_warmup;
    tc.lr_end_factor = 0.05;
    tc.no_augment = o_.no_augment;
    tc.augment = o_.augment;
    tc.output = (out_ / "teacher").string();
    tc.threads = threads_;
    tc.precision = o_.precision;
    tc.seed = o_.seed;
    tc.quiet = o_.quiet;
    const auto tres = run_teacher_training(tc);
    teacher_checkpoint_ = tres.checkpoint;
    res_.teacher_first_loss = tres.first_loss;
    res_.teacher_last_loss = tres.last_loss;
    res_.step_seconds[1] = lap();
  }

  // One row of the table: COCO keypoint AP of `fn` on the validation images.
  void eval_row(const std::string& name, const infer::PredictFn& fn) {
    infer::PredictStats ps;
    auto r = infer::evaluate_model(val_, fn, ec_, nullptr, &ps);
    res_.rows.push_back({name, r.stats});
    say(fmt::format("    {}: AP {:.3f} | AP50 {:.3f} | AR {:.3f} | {} people found in {} images", name, r.stats[0],
                    r.stats[1], r.stats[5], ps.people, ps.images));
  }

  // The ceiling (the ground-truth target maps of the validation images through the same decoder),
  // then the teacher.
  void evaluate_teacher() {
    val_ = data::load_coco(val_ann_, val_img_);
    eval_row("ground-truth maps (the ceiling at 16x16)", infer::ground_truth_predictor(val_, ec_));
    teacher_fn_ = demo_teacher_predictor(teacher_checkpoint_);
    eval_row(fmt::format("teacher ({} refinement stage(s), float, 128x128)", b_.teacher_stages), teacher_fn_);
    eval_seconds_ = lap();
  }

  DemoResult finish_teacher_only() {
    write_rows_csv((out_ / "rows.csv").string(), res_.rows);
    res_.step_seconds[4] = eval_seconds_;
    res_.seconds = std::chrono::duration<double>(clock::now() - start_).count();
    say(fmt::format("teacher only: done in {:.0f} s (teacher {:.0f} s)", res_.seconds, res_.step_seconds[1]));
    return res_;
  }

  // The students switch to QAT half way (ai8x's defaults: 8-bit weights, shift quantile 1, outlier
  // z-score 8) and go on at train's default QAT rate (the float one) with a short warm-up. ai8x's
  // README says to keep the rate small after the switch; posekd's loss reads the wide heads at the
  // targets' scale (model::Student::forward_maps), so the switch only rounds and a small rate
  // would only slow the students down.
  void write_qat_policy() {
    qat_start_ = std::max<std::int64_t>(1, static_cast<std::int64_t>(b_.qat_fraction * b_.student_batches));
    policy_path_ = (out_ / "qat_policy.yaml").string();
    ai8x::QatPolicy pol;
    pol.start_batch = qat_start_;
    ai8x::save_qat_policy(pol, policy_path_);
  }

  TrainConfig student_config(const std::string& name, bool with_teacher) const {
    TrainConfig c;
    c.ann = train_ann_;
    c.images = train_img_;
    c.val_ann = val_ann_;
    c.val_images = val_img_;
    c.val_every = std::max<std::int64_t>(1, b_.student_batches / 5);
    c.arch = "ai85pose";
    c.teacher = with_teacher ? teacher_checkpoint_ : "";
    c.batch_size = b_.student_batch;
    c.total_batches = b_.student_batches;
    c.lr = b_.student_lr;
    c.qat_lr = b_.student_qat_lr;
    c.qat_policy = policy_path_;
    c.save_every = qat_start_;  // batch_<qat_start>.pth is the last float checkpoint
    c.output = (out_ / name).string();
    c.threads = threads_;
    c.precision = o_.precision;
    c.seed = o_.seed;
    c.quiet = o_.quiet;
    c.calib_batches = 8;
    c.no_augment = o_.no_augment;
    c.augment = o_.augment;
    return c;
  }

  // 3. the distilled student (ai85pose fits MAX78000) and 4. the same budget without the teacher.
  void train_student(const std::string& name, bool with_teacher) {
    const auto r = run_training(student_config(name, with_teacher));
    if (r.batches_done != b_.student_batches)
      throw Error(fmt::format("demo: student {} stopped at batch {} of {}", name, r.batches_done, b_.student_batches));
  }

  // 5. the evaluation table: each student before QAT, after QAT and in the MAX78000's arithmetic.
  void evaluate_students() {
    say("5/6 evaluating on the validation images (COCO keypoint AP)");
    const std::string kd_float = (out_ / "student_kd" / batch_checkpoint_name(qat_start_)).string();
    const std::string gt_float = (out_ / "student_gt" / batch_checkpoint_name(qat_start_)).string();
    kd_qat_ = (out_ / "student_kd" / "latest.pth").string();
    const std::string gt_qat = (out_ / "student_gt" / "latest.pth").string();
    kd_student_ = load_student(kd_qat_);
    auto gt_student = load_student(gt_qat);
    eval_row("student KD, float (before QAT)", infer::student_predictor(load_student(kd_float)));
    eval_row("student KD, QAT", infer::student_predictor(kd_student_));
    eval_row("student KD, int8 (MAX78000 arithmetic)", infer::int8_predictor(*kd_student_, kd_qat_));
    eval_row("student without teacher, float (before QAT)", infer::student_predictor(load_student(gt_float)));
    eval_row("student without teacher, QAT", infer::student_predictor(gt_student));
    eval_row("student without teacher, int8", infer::int8_predictor(*gt_student, gt_qat));
    std::string t = "| model | AP | AP50 | AP75 | AR | AR50 |\n|---|---|---|---|---|---|\n";
    for (const auto& r : res_.rows)
      t += fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |\n", r.model, r.stats[0], r.stats[1],
                       r.stats[2], r.stats[5], r.stats[6]);
    res_.table_markdown = t;
    write_rows_csv((out_ / "rows.csv").string(), res_.rows);
    res_.step_seconds[4] = eval_seconds_ + lap();
  }

  // 6. the export for MAX78000, prediction pictures, results.csv/png.
  void export_and_pictures() {
    say("6/6 export for MAX78000, prediction pictures, results.png");
    deploy::ExportOptions eo;
    eo.source = kd_qat_;
    eo.epoch = b_.student_batches;
    auto ex = deploy::export_ai8x(*kd_student_, deploy::device_limits("MAX78000"), (out_ / "export").string(), eo);
    res_.export_fits = ex.fit.fits();
    fs::create_directories(out_ / "predictions");
    std::vector<data::CocoImage> few(val_.images.begin(),
                                     val_.images.begin() + std::min<size_t>(6, val_.images.size()));
    const auto kd_preds = infer::predict_images(few, val_.image_dir, infer::student_predictor(kd_student_), ec_);
    const auto int8_preds =
        infer::predict_images(few, val_.image_dir, infer::int8_predictor(*kd_student_, kd_qat_), ec_);
    const auto teacher_preds = infer::predict_images(few, val_.image_dir, teacher_fn_, ec_);
    for (size_t i = 0; i < kd_preds.size(); ++i) {
      if (!kd_preds[i].ok) continue;
      cv::Mat img = cv::imread((fs::path(val_.image_dir) / few[i].file_name).string(), cv::IMREAD_COLOR);
      cv::Mat big;
      cv::resize(img, big, cv::Size(), 3, 3, cv::INTER_LINEAR);
      cv::Mat drawn = infer::draw_poses(big, scaled(kd_preds[i].poses, 3.f), 2, 4);
      cv::imwrite((out_ / "predictions" / (fs::path(few[i].file_name).stem().string() + "_pose.jpg")).string(), drawn);
    }
    const std::vector<data::CocoImage> four(few.begin(), few.begin() + std::min<size_t>(4, few.size()));
    auto first4 = [&](const std::vector<infer::ImagePrediction>& p) {
      return std::vector<infer::ImagePrediction>(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(four.size()));
    };
    cv::imwrite((out_ / "predictions" / "sheet.jpg").string(),
                prediction_sheet(four, val_.image_dir,
                                 {{"teacher (float)", first4(teacher_preds)},
                                  {"student KD, QAT (ai85pose)", first4(kd_preds)},
                                  {"student KD, int8 in the MAX78000's arithmetic", first4(int8_preds)}},
                                 2),
                {cv::IMWRITE_JPEG_QUALITY, 85});
    fs::copy_file(out_ / "student_kd" / "results.csv", out_ / "results.csv", fs::copy_options::overwrite_existing);
    plot_results(read_results_csv((out_ / "results.csv").string()), (out_ / "results.png").string(),
                 "posekd demo: ai85pose distilled from the teacher");
    res_.step_seconds[5] = lap();
  }

  // table.md (the table, the budget, the time) and the summary on the console.
  void write_table_and_report() {
    res_.seconds = std::chrono::duration<double>(clock::now() - start_).count();
    const std::string timing = fmt::format(
        "data {:.0f} s, teacher {:.0f} s, student KD {:.0f} s, student without teacher {:.0f} s, evaluation {:.0f} "
        "s, export and pictures {:.0f} s; total {:.0f} s on {} threads",
        res_.step_seconds[0], res_.step_seconds[1], res_.step_seconds[2], res_.step_seconds[3], res_.step_seconds[4],
        res_.step_seconds[5], res_.seconds, threads_);
    {
      std::ofstream f(out_ / "table.md");
      f << res_.table_markdown << "\n"
        << fmt::format(
               "Budget: {} train + {} val synthetic images ({}); teacher {} batches of {}; students {} batches "
               "of {} (lr {}), QAT from batch {} (lr {}).\n",
               b_.train_images, b_.val_images, o_.hard_data ? "hard" : "easy", b_.teacher_batches, b_.teacher_batch,
               b_.student_batches, b_.student_batch, b_.student_lr, qat_start_, b_.student_qat_lr)
        << "Time: " << timing << ".\n";
    }
    say(fmt::format("done in {:.0f} s ({})\n\n{}", res_.seconds, timing, res_.table_markdown));
    say(fmt::format("data         {}", data_dir_.string()));
    say(fmt::format("teacher      {}", teacher_checkpoint_));
    say(fmt::format("students     {} , {}", (out_ / "student_kd").string(), (out_ / "student_gt").string()));
    say(fmt::format("export       {} ({})", (out_ / "export").string(),
                    res_.export_fits ? "fits MAX78000" : "DOES NOT FIT"));
    say(fmt::format("predictions  {}", (out_ / "predictions").string()));
    say(fmt::format("curves       {} , {}", (out_ / "results.csv").string(), (out_ / "results.png").string()));
    say(fmt::format("table        {}", (out_ / "table.md").string()));
  }

  const DemoOptions& o_;
  const clock::time_point start_ = clock::now();
  clock::time_point lap_start_ = start_;
  const DemoBudget b_;
  const fs::path out_;
  const int threads_;
  DemoResult res_;
  fs::path data_dir_;
  std::string train_ann_, val_ann_, train_img_, val_img_;
  std::string teacher_checkpoint_;
  data::CocoDataset val_;
  infer::EvalConfig ec_;
  infer::PredictFn teacher_fn_;
  double eval_seconds_ = 0;
  std::int64_t qat_start_ = 0;
  std::string policy_path_;
  std::string kd_qat_;
  std::shared_ptr<model::Student> kd_student_;
};

}  // namespace

DemoResult run_demo(const DemoOptions& o) { return DemoRun(o).run(); }

}  // namespace posekd::train
