#include <gtest/gtest.h>

#include "posekd/train/log.h"

using namespace posekd::train;

TEST(TrainLog, SeedLineFormat) {
  // The seed's own example: batch 10 of 15000 at 37.9 s per batch -> 157.8 h remaining.
  EXPECT_EQ(format_batch_line(10, 15000, 596.31681, 616.05671, 587.85689, 37.9),
            "Batch 10/15000 | Loss: 596.3168 | Student: 616.0567 | Distill: 587.8569 | Time: 37.9s | ETA: 157.8h");
  EXPECT_EQ(format_eta(90), "ETA: 1.5m");
  EXPECT_EQ(format_eta(3600), "ETA: 1.0h");
}

TEST(TrainLog, LogsEveryBatchThenEveryTen) {
  for (int b = 1; b <= 20; ++b) EXPECT_TRUE(should_log(b));
  EXPECT_FALSE(should_log(21));
  EXPECT_FALSE(should_log(29));
  EXPECT_TRUE(should_log(30));
}

TEST(TrainLog, TimePrefixShape) {
  std::string p = time_prefix(0);
  ASSERT_EQ(p.size(), 11u);
  EXPECT_EQ(p[0], '[');
  EXPECT_EQ(p[3], ':');
  EXPECT_EQ(p[9], ']');
}

TEST(TrainLog, ProgressBarLine) {
  EXPECT_EQ(posekd::train::format_progress(250, 1000, 0.12345, 0.1, 0.2, 45.06, 90.0, 10),
            "[##--------]  25.0% | batch 250/1000 | loss 0.1235 (S 0.1000, D 0.2000) | 45.1 img/s | ETA: 1.5m");
  EXPECT_EQ(posekd::train::format_progress(1000, 1000, 1, 0, 0, 10, 0, 4).substr(0, 14), "[####] 100.0% ");
  // Past the end (a resumed run with a lower --total-batches) stays a full bar.
  EXPECT_EQ(posekd::train::format_progress(12, 10, 1, 0, 0, 10, 0, 4).substr(0, 6), "[####]");
}

TEST(TrainLog, WithoutAFolderNothingIsWritten) {
  // The non-zero ranks of a distributed run: lines and rows go nowhere, and nothing fails.
  posekd::train::TrainLog log("", true);
  log.line("a line");
  log.batch_line("a batch line");
  log.csv(1, 1, 1, 0, 10, 1e-3, "float", -1);
  EXPECT_FALSE(log.has_progress_bar());
}
