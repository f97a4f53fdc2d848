#include "posekd/train/demo.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

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

namespace {

struct Budget {
  int train_images, val_images;
  int teacher_batches, student_batches, batch;
};

void say(const std::string& s) {
  std::printf("[demo] %s\n", s.c_str());
  std::fflush(stdout);
}

// The demo teacher was trained at 128x128 on (x-128)/128: evaluate it there (16x16 maps, stride 8).
infer::PredictFn demo_teacher_predictor(const std::string& path) {
  model::PoseEstimationWithMobileNet net(1);
  model::load_teacher(net, path, true);
  net->eval();
  return [net](const torch::Tensor& x) mutable {
    torch::NoGradGuard ng;
    auto out = net->forward(x);
    return std::make_pair(out[out.size() - 2], out[out.size() - 1]);
  };
}

}  // namespace

DemoResult run_demo(const DemoOptions& o) {
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  const int threads = set_compute_threads(o.threads);
  // Sized for a 2-core machine: full <= 10 minutes, quick <= 2 minutes.
  const Budget b = o.quick ? Budget{96, 24, 12, 16, 8} : Budget{1200, 150, 150, 220, 8};
  const fs::path out(o.out);
  fs::create_directories(out);
  DemoResult res;

  // 1. data
  const fs::path data_dir = out / "data";
  say(fmt::format("1/6 synthetic people: {} train + {} val images -> {}", b.train_images, b.val_images,
                  data_dir.string()));
  data::SynthConfig tr, va;
  tr.images = b.train_images;
  tr.seed = o.seed;
  va.images = b.val_images;
  va.seed = data::synth_mix(o.seed ^ 0x7661);
  data::generate_synth(data_dir.string(), tr, va);
  const std::string train_ann = (data_dir / "annotations" / "person_keypoints_train.json").string();
  const std::string val_ann = (data_dir / "annotations" / "person_keypoints_val.json").string();
  const std::string train_img = (data_dir / "train").string(), val_img = (data_dir / "val").string();

  // 2. teacher from scratch
  say(fmt::format("2/6 teacher (Lightweight OpenPose, 4.1M parameters) from scratch at 128x128: {} batches of {}",
                  b.teacher_batches, b.batch));
  TeacherTrainConfig tc;
  tc.ann = train_ann;
  tc.images = train_img;
  tc.input_size = 128;
  tc.batch_size = b.batch;
  tc.total_batches = b.teacher_batches;
  tc.save_every = b.teacher_batches;
  tc.lr = 1e-3;
  tc.output = (out / "teacher").string();
  tc.threads = threads;
  tc.seed = o.seed;
  tc.quiet = o.quiet;
  auto tres = run_teacher_training(tc);

  // 3. distilled student (ai85pose fits MAX78000), QAT at 60%; 4. the same budget without the teacher
  const std::int64_t qat_start = static_cast<std::int64_t>(0.6 * b.student_batches);
  auto student_cfg = [&](const std::string& name, bool with_teacher) {
    TrainConfig c;
    c.ann = train_ann;
    c.images = train_img;
    c.val_ann = val_ann;
    c.val_images = val_img;
    c.val_every = std::max<std::int64_t>(1, b.student_batches / 6);
    c.arch = "ai85pose";
    c.teacher = with_teacher ? tres.checkpoint : "";
    c.batch_size = b.batch;
    c.total_batches = b.student_batches;
    c.save_every = qat_start;  // batch_<qat_start>.pth is the last float checkpoint
    c.output = (out / name).string();
    c.threads = threads;
    c.seed = o.seed;
    c.quiet = o.quiet;
    c.calib_batches = 4;
    return c;
  };
  say(fmt::format("3/6 student ai85pose distilled from the teacher: {} batches, QAT from batch {}",
                  b.student_batches, qat_start));
  run_training(student_cfg("student_kd", true));
  say(fmt::format("4/6 student ai85pose without the teacher (same budget): {} batches", b.student_batches));
  run_training(student_cfg("student_gt", false));

  // 5. evaluation table
  say("5/6 evaluating on the validation images (COCO keypoint AP)");
  data::CocoDataset val = data::load_coco(val_ann, val_img);
  infer::EvalConfig ec;
  auto eval_row = [&](const std::string& name, const infer::PredictFn& fn) {
    auto r = infer::evaluate_model(val, fn, ec);
    res.rows.push_back({name, r.stats});
  };
  const std::string kd_float = (out / "student_kd" / batch_checkpoint_name(qat_start)).string();
  const std::string kd_qat = (out / "student_kd" / "latest.pth").string();
  const std::string gt_qat = (out / "student_gt" / "latest.pth").string();
  eval_row("teacher (4.1M params, float, 128x128)", demo_teacher_predictor(tres.checkpoint));
  eval_row("student KD, float (before QAT)", infer::student_predictor(load_student(kd_float)));
  auto kd_student = load_student(kd_qat);
  eval_row("student KD, QAT", infer::student_predictor(kd_student));
  eval_row("student KD, int8 (MAX78000 arithmetic)", infer::int8_predictor(*kd_student, kd_qat));
  eval_row("student without teacher, QAT", infer::student_predictor(load_student(gt_qat)));
  eval_row("student without teacher, int8", infer::int8_predictor(*load_student(gt_qat), gt_qat));
  std::string t = "| model | AP | AP50 | AP75 | AR | AR50 |\n|---|---|---|---|---|---|\n";
  for (const auto& r : res.rows)
    t += fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |\n", r.model, r.stats[0], r.stats[1],
                     r.stats[2], r.stats[5], r.stats[6]);
  res.table_markdown = t;
  {
    std::ofstream f(out / "table.md");
    f << t;
  }

  // 6. export, predictions, plots
  say("6/6 export for MAX78000, prediction pictures, results.png");
  deploy::ExportOptions eo;
  eo.source = kd_qat;
  eo.epoch = b.student_batches;
  auto ex = deploy::export_ai8x(*kd_student, deploy::device_limits("MAX78000"), (out / "export").string(), eo);
  res.export_fits = ex.fit.fits();
  fs::create_directories(out / "predictions");
  std::vector<data::CocoImage> few(val.images.begin(), val.images.begin() + std::min<size_t>(6, val.images.size()));
  auto preds = infer::predict_images(few, val.image_dir, infer::student_predictor(kd_student), ec);
  for (size_t i = 0; i < preds.size(); ++i) {
    if (!preds[i].ok) continue;
    cv::Mat img = cv::imread((fs::path(val.image_dir) / few[i].file_name).string(), cv::IMREAD_COLOR);
    cv::Mat drawn = infer::draw_poses(img, preds[i].poses);
    cv::Mat big;
    cv::resize(drawn, big, cv::Size(), 3, 3, cv::INTER_NEAREST);
    cv::imwrite((out / "predictions" / (fs::path(few[i].file_name).stem().string() + "_pose.jpg")).string(), big);
  }
  fs::copy_file(out / "student_kd" / "results.csv", out / "results.csv", fs::copy_options::overwrite_existing);
  plot_results(read_results_csv((out / "results.csv").string()), (out / "results.png").string(),
               "posekd demo: ai85pose distilled from the teacher");

  res.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  say(fmt::format("done in {:.0f} s\n\n{}", res.seconds, t));
  say(fmt::format("data         {}", data_dir.string()));
  say(fmt::format("teacher      {}", tres.checkpoint));
  say(fmt::format("students     {} , {}", (out / "student_kd").string(), (out / "student_gt").string()));
  say(fmt::format("export       {} ({})", (out / "export").string(),
                  res.export_fits ? "fits MAX78000" : "DOES NOT FIT"));
  say(fmt::format("predictions  {}", (out / "predictions").string()));
  say(fmt::format("curves       {} , {}", (out / "results.csv").string(), (out / "results.png").string()));
  return res;
}

}  // namespace posekd::train
