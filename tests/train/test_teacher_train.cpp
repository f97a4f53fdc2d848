#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "posekd/model/teacher.h"
#include "posekd/train/teacher_train.h"
#include "test_util.h"

namespace fs = std::filesystem;

TEST(TeacherTrain, LearnsOnTheSampleAndLoadsBackAsADistillationTeacher) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto out = posekd::testing::temp_dir("teacher");
  posekd::train::TeacherTrainConfig c;
  c.ann = (coco / "annotations" / "person_keypoints_val2017.json").string();
  c.images = (coco / "val2017").string();
  c.output = out.string();
  c.input_size = 64;
  c.num_refinement_stages = 0;  // the file's metadata must say so: the default network has 1
  c.batch_size = 4;
  c.total_batches = 6;
  c.save_every = 3;
  c.threads = 2;
  c.quiet = true;
  auto r = posekd::train::run_teacher_training(c);
  EXPECT_EQ(r.batches_done, 6);
  EXPECT_LT(r.last_loss, r.first_loss);
  ASSERT_TRUE(fs::exists(r.checkpoint));

  posekd::model::TeacherOptions to;
  to.input_size = 64;
  to.input_scale = 1.0;
  to.output_size = 8;
  posekd::model::LoadReport rep;
  auto tw = posekd::model::load_teacher_wrapper(r.checkpoint, to, &rep);
  EXPECT_EQ(rep.missing, 0);
  EXPECT_EQ(rep.loaded, 162);  // backbone, cpm, initial stage
  EXPECT_EQ(rep.ignored, 0);
  EXPECT_EQ(tw->net()->num_refinement_stages(), 0);
  // The one loader reads what train-teacher recorded: 0 stages, 64x64, the student's input scale.
  const auto lt = posekd::model::load_teacher(r.checkpoint, /*default_input_scale=*/0.5);
  EXPECT_TRUE(lt.info.from_metadata);
  EXPECT_EQ(lt.info.num_refinement_stages, 0);
  EXPECT_EQ(lt.info.input_size, 64);
  EXPECT_DOUBLE_EQ(lt.info.input_scale, 1.0);
  EXPECT_EQ(lt.report.missing, 0);
  EXPECT_TRUE(lt.net->is_fused());
  auto y = tw->forward(torch::zeros({1, 3, 64, 64}));
  EXPECT_EQ(y.at(0).sizes(), (std::vector<int64_t>{1, 19, 8, 8}));
  EXPECT_EQ(y.at(1).sizes(), (std::vector<int64_t>{1, 38, 8, 8}));

  // resuming continues from the saved batch
  c.total_batches = 7;
  auto r2 = posekd::train::run_teacher_training(c);
  EXPECT_EQ(r2.batches_run, 1);
  EXPECT_EQ(r2.batches_done, 7);
  fs::remove_all(out);
}

TEST(TeacherTrain, LearningRateScheduleWarmsUpThenDecays) {
  posekd::train::TeacherTrainConfig c;
  c.lr = 1e-3;
  c.total_batches = 100;
  EXPECT_DOUBLE_EQ(posekd::train::teacher_lr_at(c, 0), 1e-3);  // default: cosine to 5%, no warm-up
  EXPECT_NEAR(posekd::train::teacher_lr_at(c, 100), 5e-5, 1e-15);
  c.lr_schedule = "constant";
  EXPECT_DOUBLE_EQ(posekd::train::teacher_lr_at(c, 99), 1e-3);
  c.lr_schedule = "cosine";
  c.warmup_batches = 10;
  c.lr_end_factor = 0.1;
  EXPECT_DOUBLE_EQ(posekd::train::teacher_lr_at(c, 0), 1e-4);
  EXPECT_DOUBLE_EQ(posekd::train::teacher_lr_at(c, 9), 1e-3);
  EXPECT_DOUBLE_EQ(posekd::train::teacher_lr_at(c, 10), 1e-3);
  EXPECT_NEAR(posekd::train::teacher_lr_at(c, 55), 0.55e-3, 1e-12);  // half way: the mean of lr and lr/10
  EXPECT_NEAR(posekd::train::teacher_lr_at(c, 100), 1e-4, 1e-12);
  for (int b = 11; b < 100; ++b) EXPECT_LE(posekd::train::teacher_lr_at(c, b), posekd::train::teacher_lr_at(c, b - 1));
}
