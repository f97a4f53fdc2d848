#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "posekd/model/teacher.h"
#include "posekd/train/teacher_train.h"
#include "test_util.h"

namespace fs = std::filesystem;

TEST(TeacherTrain, LearnsOnTheSampleAndLoadsBackAsADistillationTeacher) {
  POSEKD_REQUIRE_SHARED(coco, "data/coco-sample");
  auto out = posekd::testing::temp_dir("teacher");
  posekd::train::TeacherTrainConfig c;
  c.ann = (coco / "annotations" / "person_keypoints_val2017.json").string();
  c.images = (coco / "val2017").string();
  c.output = out.string();
  c.input_size = 64;
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
  EXPECT_EQ(rep.loaded, 250);
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
