// End-to-end training runs on tests/fixtures/coco-sample: loss falls, files are written, a rerun
// resumes at the right batch, and an interrupted run resumed (across the QAT switch) equals the
// uninterrupted run bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "posekd/core/error.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/plot.h"
#include "posekd/train/trainer.h"
#include "test_util.h"

using posekd::testing::read_text;

namespace fs = std::filesystem;
using namespace posekd::train;

namespace {

// Mean loss of every "Batch n/N | Loss: x" line, in order.
std::vector<double> logged_losses(const fs::path& log) {
  std::vector<double> out;
  std::regex re(R"(Batch \d+/\d+ \| Loss: ([0-9.]+))");
  std::string text = read_text(log);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back(std::stod((*it)[1]));
  return out;
}

TrainConfig sample_config(const fs::path& coco, const fs::path& out) {
  TrainConfig c;
  c.ann = (coco / "annotations" / "person_keypoints_val2017.json").string();
  c.images = (coco / "val2017").string();
  c.output = out.string();
  c.batch_size = 2;
  c.threads = 2;
  c.workers = 2;
  c.quiet = true;
  return c;
}

}  // namespace

TEST(TrainE2E, DistillsFromTheTeacherLossFallsFilesWrittenRerunResumes) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  auto out = posekd::testing::temp_dir("kd");
  TrainConfig c = sample_config(coco, out);
  c.teacher = teacher.string();
  c.arch = "seed";
  c.no_qat = true;
  c.no_augment = true;  // 4 batches of 2: the same 4 pictures again, so the loss must fall
  c.total_batches = 4;
  c.save_every = 2;
  auto r = run_training(c);
  EXPECT_EQ(r.batches_done, 4);
  for (const char* f :
       {"batch_000002.pth", "batch_000004.pth", "latest.pth", "best.pth", "log.txt", "results.csv", "args.yaml"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  auto losses = logged_losses(out / "log.txt");
  ASSERT_EQ(losses.size(), 4u);
  EXPECT_LT(losses.back(), losses.front());
  std::string log = read_text(out / "log.txt");
  EXPECT_NE(log.find("Teacher " + teacher.string() + ": 250 entries loaded, 0 missing"), std::string::npos) << log;
  // train runs the fit check up front: the seed student is flagged with the broken rules
  EXPECT_NE(log.find("WARNING: student seed does not fit MAX78000"), std::string::npos) << log;
  EXPECT_NE(log.find("processor 0 needs 1436 kernel words > 768"), std::string::npos) << log;
  auto ck = load_checkpoint((out / "latest.pth").string());
  EXPECT_EQ(ck.batch, 4);
  EXPECT_GT(ck.optimizer.state.size(), 0u);

  // A rerun with a higher total resumes at batch 4.
  c.total_batches = 5;
  auto r2 = run_training(c);
  EXPECT_EQ(r2.batches_run, 1);
  EXPECT_EQ(r2.batches_done, 5);
  EXPECT_NE(read_text(out / "log.txt").find("Resumed at batch 4"), std::string::npos);
  fs::remove_all(out);
}

TEST(TrainE2E, InterruptedRunResumedAcrossTheQatSwitchEqualsTheUninterruptedRun) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto a = posekd::testing::temp_dir("full"), b = posekd::testing::temp_dir("split");
  TrainConfig ca = sample_config(coco, a);
  ca.arch = "ai85pose";
  ca.total_batches = 7;  // default policy: QAT from batch 4 (60%)
  ca.save_every = 100;
  ca.deterministic = true;
  ca.calib_batches = 2;
  ca.workers = 3;
  ca.warmup = 4;           // the first stop (batch 3) falls inside the float warm-up,
  ca.qat_warmup = 2;       // the second (batch 5) inside the QAT warm-up
  ca.qat_lr = ca.lr / 10;  // a QAT rate of its own, told apart from the float one below
  run_training(ca);

  TrainConfig cb = ca;
  cb.output = b.string();
  cb.workers = 0;     // the batch sequence does not depend on the number of workers
  cb.stop_after = 3;  // interrupted before the QAT switch (batch 3)...
  EXPECT_TRUE(run_training(cb).interrupted);
  cb.stop_after = 2;  // ...and after it (batch 5)
  EXPECT_TRUE(run_training(cb).interrupted);
  cb.stop_after = 0;
  auto rb = run_training(cb);
  EXPECT_EQ(rb.batches_run, 2);

  // The final checkpoint differs only in what records the different invocations.
  auto ka = load_checkpoint((a / "latest.pth").string());
  auto kb = load_checkpoint((b / "latest.pth").string());
  EXPECT_EQ(ka.phase, "qat");
  EXPECT_EQ(kb.phase, "qat");
  ASSERT_EQ(ka.model.size(), kb.model.size());
  for (size_t i = 0; i < ka.model.size(); ++i) {
    EXPECT_EQ(ka.model[i].first, kb.model[i].first);
    EXPECT_TRUE(torch::equal(ka.model[i].second, kb.model[i].second)) << ka.model[i].first;
  }
  EXPECT_EQ(ka.loss, kb.loss);
  EXPECT_EQ(ka.loader.epoch, kb.loader.epoch);
  EXPECT_EQ(ka.loader.position, kb.loader.position);
  ASSERT_EQ(ka.optimizer.state.size(), kb.optimizer.state.size());
  for (const auto& [idx, slot] : ka.optimizer.state) {
    EXPECT_TRUE(torch::equal(slot.exp_avg_sq, kb.optimizer.state.at(idx).exp_avg_sq)) << idx;
  }
  // The logged batch lines are identical too (the time columns aside).
  auto la = logged_losses(a / "log.txt"), lb = logged_losses(b / "log.txt");
  EXPECT_EQ(la, lb);
  // And so are the learning rates each batch ran at (warm-ups, cosine, the QAT rate).
  std::vector<double> lra, lrb;
  for (const auto& row : posekd::train::read_results_csv((a / "results.csv").string())) lra.push_back(row.lr);
  for (const auto& row : posekd::train::read_results_csv((b / "results.csv").string())) lrb.push_back(row.lr);
  ASSERT_EQ(lra.size(), 7u);
  EXPECT_EQ(lra, lrb);
  EXPECT_DOUBLE_EQ(lra[0], ca.lr / 4);       // warm-up 1/4
  EXPECT_DOUBLE_EQ(lra[4], ca.lr / 10 / 2);  // QAT rate lr/10, warm-up 1/2 (at resume)
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(TrainE2E, ADamagedLatestFallsBackToTheNewestGoodBatchCheckpoint) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto out = posekd::testing::temp_dir("fallback");
  TrainConfig c = sample_config(coco, out);
  c.arch = "ai85pose";
  c.no_qat = true;
  c.total_batches = 4;
  c.save_every = 2;
  run_training(c);
  // truncate latest.pth as a crash in the middle of a non-atomic write would
  fs::resize_file(out / "latest.pth", fs::file_size(out / "latest.pth") / 2);
  auto rp = find_resume_point("", "", out.string());
  ASSERT_TRUE(rp.has_value());
  EXPECT_EQ(fs::path(rp->path).filename(), "batch_000004.pth");
  EXPECT_NE(rp->note.find("latest.pth is damaged"), std::string::npos) << rp->note;
  EXPECT_EQ(rp->checkpoint.batch, 4);
  fs::remove_all(out);
}

TEST(TrainE2E, AnExplicitWrongCheckpointIsAnErrorNotAFreshStart) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  auto out = posekd::testing::temp_dir("wrongckpt");
  TrainConfig c = sample_config(coco, out);
  c.checkpoint = teacher.string();  // a teacher, not a training checkpoint
  try {
    run_training(c);
    FAIL() << "expected an error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find(teacher.string() + ": not a training checkpoint"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(out / "latest.pth"));
  fs::remove_all(out);
}

TEST(TrainE2E, ValidationApIsLoggedAndPicksBest) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto out = posekd::testing::temp_dir("val");
  TrainConfig c = sample_config(coco, out);
  c.arch = "ai85pose";
  c.no_qat = true;
  c.total_batches = 4;
  c.save_every = 100;
  c.val_ann = c.ann;
  c.val_images = c.images;
  c.val_every = 2;
  c.val_subset = 2;
  auto r = run_training(c);
  EXPECT_GE(r.last_val_ap, 0.0);
  EXPECT_LE(r.last_val_ap, 1.0);
  std::string log = read_text(out / "log.txt");
  EXPECT_NE(log.find("Validation at batch 2 (float): AP "), std::string::npos) << log;
  EXPECT_NE(log.find("Validation at batch 4 (float): AP "), std::string::npos) << log;
  EXPECT_NE(log.find("(2 of 4 images)"), std::string::npos) << log;  // --val-subset 2
  // results.csv has rows carrying the validation AP; best.pth is the first batch with the highest one
  const auto rows = posekd::train::read_results_csv((out / "results.csv").string());
  std::int64_t best_batch = -1;
  double best_ap = -1;
  int val_rows = 0;
  for (const auto& row : rows) {
    if (row.val_ap < 0) continue;
    ++val_rows;
    if (row.val_ap > best_ap) {
      best_ap = row.val_ap;
      best_batch = row.batch;
    }
  }
  EXPECT_EQ(val_rows, 2);
  ASSERT_TRUE(fs::exists(out / "best.pth"));
  auto best = load_checkpoint((out / "best.pth").string());
  EXPECT_EQ(best.batch, best_batch);
  EXPECT_NEAR(best.best_metric, best_ap, 1e-4);  // results.csv keeps 4-6 decimals
  EXPECT_DOUBLE_EQ(r.best_val_ap, best.best_metric);
  fs::remove_all(out);
}

TEST(TrainE2E, AugmentedViewsAreCachedPerViewAndReused) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  auto out = posekd::testing::temp_dir("views");
  TrainConfig c = sample_config(coco, out);
  c.teacher = teacher.string();
  c.arch = "ai85pose";
  c.no_qat = true;
  c.augment.views = 2;
  c.total_batches = 4;  // 2 epochs of 4 images: views 0 and 1 of every image
  c.save_every = 4;
  run_training(c);
  std::string log = read_text(out / "log.txt");
  EXPECT_NE(log.find(": 0 of 8 image views cached"), std::string::npos) << log;
  // Epochs 2 and 3 see views 0 and 1 again: everything is in the cache from the start.
  c.total_batches = 8;
  run_training(c);
  log = read_text(out / "log.txt");
  EXPECT_NE(log.find(": 8 of 8 image views cached"), std::string::npos) << log;
  // Without views the teacher runs on every batch: no cache file for this run.
  auto out2 = posekd::testing::temp_dir("online");
  c.output = out2.string();
  c.augment.views = 0;
  c.total_batches = 1;
  run_training(c);
  EXPECT_NE(read_text(out2 / "log.txt").find("Teacher: run on every batch (no cache)"), std::string::npos);
  EXPECT_FALSE(fs::exists(out2 / "teacher_cache.bin"));
  fs::remove_all(out);
  fs::remove_all(out2);
}
