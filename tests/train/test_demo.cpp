// `posekd demo --quick`: the whole pipeline end to end on synthetic people.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "posekd/data/synth.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/demo.h"
#include "posekd/train/plot.h"
#include "test_util.h"

namespace fs = std::filesystem;

TEST(Demo, PresetsAndTheEasyDataAreValid) {
  const auto q = posekd::train::demo_budget(true), f = posekd::train::demo_budget(false);
  EXPECT_LT(q.teacher_batches, f.teacher_batches);
  EXPECT_LT(q.student_batches, f.student_batches);
  EXPECT_LT(q.train_images, f.train_images);
  // The hard preset: more images and teacher batches than the easy one, the same students.
  const auto h = posekd::train::demo_budget(false, true), hq = posekd::train::demo_budget(true, true);
  EXPECT_GT(h.train_images, f.train_images);
  EXPECT_GT(h.teacher_batches, f.teacher_batches);
  EXPECT_EQ(h.student_batches, f.student_batches);
  EXPECT_EQ(hq.teacher_batches, q.teacher_batches);  // --quick stays quick
  for (const auto& b : {q, f, h}) {
    EXPECT_GT(b.qat_fraction, 0.0);
    EXPECT_LT(b.qat_fraction, 1.0);
    EXPECT_GE(b.teacher_stages, 0);
  }
  const auto c = posekd::train::demo_synth_config(10, 3);
  EXPECT_NO_THROW(posekd::data::validate_synth_config(c, "demo"));
  EXPECT_GE(c.min_people, 1);  // every image is a training sample
  EXPECT_EQ(c.crowd_rate, 0.0);
}

TEST(Demo, QuickRunProducesEveryArtifactAndATeacherThatLearned) {
  auto out = posekd::testing::temp_dir("demo");
  posekd::train::DemoOptions o;
  o.out = out.string();
  o.quick = true;
  o.threads = 2;
  o.quiet = true;
  auto r = posekd::train::run_demo(o);

  // the table: the ground-truth ceiling, teacher, KD float/QAT/int8, no-teacher float/QAT/int8
  const char* names[] = {"ground-truth maps",
                         "teacher",
                         "student KD, float (before QAT)",
                         "student KD, QAT",
                         "student KD, int8 (MAX78000 arithmetic)",
                         "student without teacher, float (before QAT)",
                         "student without teacher, QAT",
                         "student without teacher, int8"};
  ASSERT_EQ(r.rows.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(r.rows[i].model.rfind(names[i], 0), 0u) << r.rows[i].model;
    EXPECT_NE(r.table_markdown.find(r.rows[i].model), std::string::npos) << r.rows[i].model;
    for (int k : {0, 1, 2, 5, 6}) {  // AP, AP50, AP75, AR, AR50: val has people, so all defined
      EXPECT_GE(r.rows[i].stats[k], 0.0) << r.rows[i].model << " stat " << k;
      EXPECT_LE(r.rows[i].stats[k], 1.0) << r.rows[i].model << " stat " << k;
    }
  }
  // The teacher learned: its loss fell and it finds people (AP > 0 even on the quick budget).
  EXPECT_LT(r.teacher_last_loss, 0.7 * r.teacher_first_loss);
  EXPECT_GT(r.rows[1].stats[0], 0.0) << r.table_markdown;
  // The ceiling: decoded ground-truth maps find most people, and no model beats them by much.
  EXPECT_GT(r.rows[0].stats[0], 0.3) << r.table_markdown;
  for (size_t i = 1; i < 8; ++i) EXPECT_LT(r.rows[i].stats[0], r.rows[0].stats[0] + 0.05) << r.table_markdown;
  // The int8 student (integer arithmetic of the chip) equals its QAT model.
  EXPECT_EQ(r.rows[4].stats[0], r.rows[3].stats[0]) << r.table_markdown;
  EXPECT_EQ(r.rows[7].stats[0], r.rows[6].stats[0]) << r.table_markdown;
  // rows.csv holds the same numbers for scripts.
  EXPECT_NE(posekd::testing::read_text(out / "rows.csv")
                .find(fmt::format("\"{}\",{:.4f}", r.rows[3].model, r.rows[3].stats[0])),
            std::string::npos);

  // both students ran their QAT phase at the budget's QAT rate (the schedule's, decayed by the end)
  for (const char* s : {"student_kd/latest.pth", "student_gt/latest.pth"}) {
    const double lr = posekd::train::load_checkpoint((out / s).string()).optimizer.lr;
    EXPECT_LE(lr, r.budget.student_qat_lr) << s;
    EXPECT_GT(lr, 0.0) << s;
  }

  EXPECT_TRUE(r.export_fits);
  double sum = 0;
  for (double s : r.step_seconds) sum += s;
  EXPECT_NEAR(sum, r.seconds, 1.0);
  for (const char* f :
       {"table.md", "results.csv", "results.png", "teacher/teacher.pth", "teacher/results.csv", "student_kd/latest.pth",
        "student_gt/latest.pth", "export/ai85pose.yaml", "export/ai85pose-q8.pth.tar", "export/ai85pose-qat.pth.tar",
        "predictions/sheet.jpg", "data/contact_sheet.jpg", "data/annotations/person_keypoints_val.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  int pictures = 0;
  for (const auto& e : fs::directory_iterator(out / "predictions")) pictures += e.path().extension() == ".jpg";
  EXPECT_GE(pictures, 2);
  {
    std::ifstream f(out / "table.md");
    std::stringstream ss;
    ss << f.rdbuf();
    EXPECT_EQ(ss.str().rfind(r.table_markdown, 0), 0u);
    EXPECT_NE(ss.str().find("Time: "), std::string::npos);
  }
  // results.csv: the distilled student's curve, with validation APs and the QAT phase
  const auto rows = posekd::train::read_results_csv((out / "results.csv").string());
  int val_rows = 0, qat_rows = 0;
  for (const auto& row : rows) {
    val_rows += row.val_ap >= 0;
    qat_rows += row.phase == "qat";
  }
  EXPECT_GE(val_rows, 2);
  EXPECT_GT(qat_rows, 0);
  // Distillation against no teacher: the distilled student learned to match the teacher (its
  // distillation loss fell over the float phase), the other one never saw it (distillation loss 0).
  const auto gt_rows = posekd::train::read_results_csv((out / "student_gt" / "results.csv").string());
  ASSERT_FALSE(gt_rows.empty());
  for (const auto& row : gt_rows) EXPECT_EQ(row.distill, 0.0);
  double first_d = -1, last_float_d = -1;
  for (const auto& row : rows) {
    if (row.val_ap >= 0 || row.phase != "float") continue;
    if (first_d < 0) first_d = row.distill;
    last_float_d = row.distill;
  }
  EXPECT_GT(first_d, 0.0);
  EXPECT_LT(last_float_d, first_d);
  fs::remove_all(out);
}
