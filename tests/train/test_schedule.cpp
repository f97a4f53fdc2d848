// Learning-rate schedules: golden values of each shape, the QAT phase with its own rate and
// warm-up, the automatic warm-ups, and validation.
#include <gtest/gtest.h>

#include <cmath>

#include "posekd/core/error.h"
#include "posekd/train/schedule.h"
#include "posekd/train/trainer.h"

namespace {
using posekd::train::LrSchedule;

TEST(Schedule, ConstantCosineAndStepGoldenValues) {
  LrSchedule s;
  s.lr = 1e-3;
  s.total = 100;
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(s.at(0), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(99), 1e-3);
  s.kind = "cosine";
  s.warmup = 10;
  s.end_factor = 0.1;
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(55), 0.55e-3, 1e-15);  // half way: the mean of lr and lr/10
  EXPECT_NEAR(s.at(100), 1e-4, 1e-15);
  for (int b = 11; b <= 100; ++b) EXPECT_LE(s.at(b), s.at(b - 1));
  s.kind = "step";
  s.warmup = 0;
  s.end_factor = 0.01;
  EXPECT_DOUBLE_EQ(s.at(79), 1e-3);
  EXPECT_NEAR(s.at(80), 1e-4, 1e-18);  // x sqrt(0.01)
  EXPECT_NEAR(s.at(94), 1e-4, 1e-18);
  EXPECT_NEAR(s.at(95), 1e-5, 1e-18);
}

TEST(Schedule, TheQatPhaseHasItsOwnRateAndWarmUp) {
  LrSchedule s;
  s.kind = "cosine";
  s.lr = 1e-3;
  s.end_factor = 0.05;
  s.total = 100;
  s.qat_start = 60;
  s.qat_lr = 1e-4;
  s.qat_warmup = 5;
  // The float phase follows the whole run's cosine (it would reach lr * end at 100), cut at 60.
  EXPECT_DOUBLE_EQ(s.at(0), 1e-3);
  EXPECT_NEAR(s.at(50), 0.525e-3, 1e-15);
  EXPECT_NEAR(s.at(59), 1e-3 * (0.05 + 0.95 * 0.5 * (1 + std::cos(3.14159265358979323846 * 0.59))), 1e-15);
  // The QAT phase: 1/5 .. 5/5 of qat_lr, then cosine to qat_lr * end at 100.
  EXPECT_NEAR(s.at(60), 2e-5, 1e-18);
  EXPECT_NEAR(s.at(64), 1e-4, 1e-18);
  EXPECT_NEAR(s.at(65), 1e-4, 1e-18);
  EXPECT_NEAR(s.at(100), 5e-6, 1e-18);
  EXPECT_EQ(s.describe(), "cosine lr 0.001, end x0.05; QAT from batch 60 at lr 0.0001, warm-up 5");
}

TEST(Schedule, AutomaticWarmUpsAndDefaultsFromTheTrainConfig) {
  posekd::train::TrainConfig c;
  c.total_batches = 15000;
  LrSchedule s = posekd::train::schedule_of(c, 9000);
  EXPECT_EQ(s.kind, "constant");     // the seed's, measured best on short runs
  EXPECT_EQ(s.warmup, 180);          // 2% of the 9000 float batches
  EXPECT_EQ(s.qat_warmup, 120);      // 2% of the 6000 QAT batches
  EXPECT_DOUBLE_EQ(s.qat_lr, 1e-3);  // the float rate
  c.total_batches = 1100;            // the demo's students: QAT from 550
  EXPECT_EQ(posekd::train::schedule_of(c, 550).qat_warmup, 11);
  c.total_batches = 60000;
  EXPECT_EQ(posekd::train::schedule_of(c, 10000).qat_warmup, 500);  // at most 500
  c.total_batches = 15000;
  s = posekd::train::schedule_of(c, -1);
  EXPECT_EQ(s.qat_start, -1);
  EXPECT_EQ(s.warmup, 300);
  c.warmup = 7;
  c.qat_warmup = 0;
  c.qat_lr = 3e-4;
  s = posekd::train::schedule_of(c, 100);
  EXPECT_EQ(s.warmup, 7);
  EXPECT_EQ(s.qat_warmup, 0);
  EXPECT_DOUBLE_EQ(s.at(100), 3e-4);
}

TEST(Schedule, InvalidValuesNameTheFlag) {
  LrSchedule s;
  s.kind = "linear";
  try {
    s.validate("train");
    FAIL() << "no error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--lr-schedule"), std::string::npos) << e.what();
  }
  s.kind = "cosine";
  s.end_factor = 2;
  EXPECT_THROW(s.validate("train"), posekd::Error);
  s.end_factor = 0.1;
  s.qat_lr = 0;
  EXPECT_THROW(s.validate("train"), posekd::Error);
}

}  // namespace
