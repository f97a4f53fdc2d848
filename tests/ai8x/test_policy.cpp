#include <gtest/gtest.h>

#include <fstream>

#include "posekd/ai8x/policy.h"
#include "posekd/core/error.h"
#include "test_util.h"

using namespace posekd::ai8x;

TEST(QatPolicy, YamlRoundTripAndOverrides) {
  auto dir = posekd::testing::temp_dir("qatpolicy");
  auto path = (dir / "p.yaml").string();
  {
    std::ofstream f(path);
    f << "start_epoch: 30\nstart_batch: 1200\nweight_bits: 8\nshift_quantile: 0.995\n"
         "outlier_removal_z_score: 2\noverrides:\n  conv1: {weight_bits: 4, shift_quantile: 1.0}\n"
         "  heat_out: {weight_bits: 2}\n";
  }
  auto p = load_qat_policy(path);
  EXPECT_EQ(p.start_epoch, 30);
  EXPECT_EQ(p.start_batch, 1200);
  EXPECT_EQ(p.weight_bits, 8);
  EXPECT_DOUBLE_EQ(p.shift_quantile, 0.995);
  EXPECT_DOUBLE_EQ(p.outlier_removal_z_score, 2.0);
  EXPECT_EQ(p.weight_bits_for("conv1"), 4);
  EXPECT_DOUBLE_EQ(p.shift_quantile_for("conv1"), 1.0);
  EXPECT_EQ(p.weight_bits_for("heat_out"), 2);
  EXPECT_DOUBLE_EQ(p.shift_quantile_for("heat_out"), 0.995);
  EXPECT_EQ(p.weight_bits_for("conv2"), 8);
  auto path2 = (dir / "q.yaml").string();
  save_qat_policy(p, path2);
  auto r = load_qat_policy(path2);
  EXPECT_EQ(r.start_epoch, p.start_epoch);
  EXPECT_EQ(r.start_batch, p.start_batch);
  EXPECT_EQ(r.weight_bits, p.weight_bits);
  EXPECT_DOUBLE_EQ(r.shift_quantile, p.shift_quantile);
  EXPECT_DOUBLE_EQ(r.outlier_removal_z_score, p.outlier_removal_z_score);
  ASSERT_EQ(r.overrides.size(), 2u);
  EXPECT_EQ(r.weight_bits_for("conv1"), 4);
  EXPECT_FALSE(r.overrides["heat_out"].shift_quantile.has_value());
  // defaults
  {
    std::ofstream f(path);
    f << "start_epoch: 5\nweight_bits: 8\n";
  }
  auto d = load_qat_policy(path);
  EXPECT_EQ(d.start_batch, -1);
  EXPECT_DOUBLE_EQ(d.shift_quantile, 1.0);
  EXPECT_DOUBLE_EQ(d.outlier_removal_z_score, 8.0);
  std::filesystem::remove_all(dir);
}

TEST(QatPolicy, BadFilesNameTheFile) {
  auto dir = posekd::testing::temp_dir("qatpolicy-bad");
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    auto path = (dir / "bad.yaml").string();
    std::ofstream(path) << text;
    try {
      load_qat_policy(path);
      ADD_FAILURE() << "no error for: " << text;
    } catch (const posekd::Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(path), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  };
  expect_error("weight_bits: 8\n", "start_epoch");
  expect_error("start_epoch: 3\n", "weight_bits");
  expect_error("start_epoch: 3\nweight_bits: 3\n", "weight_bits");
  expect_error("start_epoch: 3\nweight_bits: 8\nshift_quantile: 1.5\n", "shift_quantile");
  expect_error("start_epoch: x\nweight_bits: 8\n", "start_epoch");
  expect_error("start_epoch: 3\nweight_bits: 8\nbogus: 1\n", "bogus");
  expect_error("start_epoch: [3\n", "YAML");
  expect_error("start_epoch: 3\nweight_bits: 8\noverrides:\n  conv1: {bits: 4}\n", "bits");
  try {
    load_qat_policy((dir / "missing.yaml").string());
    ADD_FAILURE();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.yaml"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}
