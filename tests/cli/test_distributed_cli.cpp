// `posekd launch --nproc 2 -- train ...` end to end on loopback: the same weights as one process with
// the same global batch (QAT from batch 0: BatchNorm folded, so per-rank statistics play no part), a
// checkpoint that resumes on one process, a killed or hung rank that ends the job with a clear
// message, and a teacher cache filled by both ranks; with SyncBN, also from the float phase through
// the QAT switch.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "posekd/train/checkpoint.h"
#include "test_util.h"

namespace {
namespace fs = std::filesystem;
using posekd::testing::read_text;

using Proc = posekd::testing::CommandResult;
Proc run(const std::string& cmd) { return posekd::testing::run_command(cmd); }

class DistributedTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    coco_ = posekd::testing::fixture_path("coco-sample");
    if (coco_.empty()) GTEST_SKIP() << "fixture tests/fixtures/coco-sample is absent";
    ASSERT_TRUE(fs::exists(posekd::testing::cli())) << "the posekd program is not built";
    dir_ = posekd::testing::temp_dir("dist");
    std::ofstream(dir_ / "qat0.yaml") << "start_batch: 0\nweight_bits: 8\n";
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  // The train options shared by every run here; `out` is a folder under the test's temp dir.
  // fp32: these tests compare processes; bf16 picks its fastest backward kernel by timing (core/bf16_conv.h).
  // --qat-lr 1e-4: Adam turns summation-order noise into steps of about the rate (docs/distributed.md);
  // at 1e-4 four QAT steps keep it under the 2e-5 bound below, at train's default (1e-3) they do not.
  std::string train(const std::string& out, int total, const std::string& extra = "") const {
    return "train --data " + coco_.string() + " --split val2017 --arch ai85pose --batch-size 4 --total-batches " +
           std::to_string(total) +
           " --save-every 2 --threads 1 --workers 1 --calib-batches 1 --quiet --precision fp32 --qat-lr 1e-4 "
           "--qat-policy " +
           (dir_ / "qat0.yaml").string() + " --output " + (dir_ / out).string() + " " + extra;
  }
  std::string posekd() const { return posekd::testing::cli() + " "; }
  std::string launch2() const { return posekd() + "launch --nproc 2 --grace 2 -- "; }

  static void expect_close(const posekd::train::Checkpoint& a, const posekd::train::Checkpoint& b, double atol) {
    ASSERT_EQ(a.model.size(), b.model.size());
    for (size_t i = 0; i < a.model.size(); ++i) {
      const auto& [k, t] = a.model[i];
      ASSERT_EQ(k, b.model[i].first);
      const torch::Tensor& u = b.model[i].second;
      if (t.is_floating_point()) {
        EXPECT_LE((t - u).abs().max().template item<double>(), atol) << k;
      } else {
        EXPECT_TRUE(torch::equal(t, u)) << k;
      }
    }
  }

  fs::path coco_, dir_;
};

TEST_F(DistributedTrain, TwoProcessesGiveOneProcessWeightsAndTheCheckpointResumesOnOne) {
  // Without the user's OpenMP settings (ctest sets OMP_WAIT_POLICY): posekd picks one at start and
  // logs it; the launcher makes ranks that share the machine sleep rather than spin.
  const std::string no_omp_env = "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u POSEKD_OMP_WAIT ";
  const Proc one = run(no_omp_env + posekd() + train("one", 6));
  ASSERT_EQ(one.rc, 0) << one.out;
  EXPECT_NE(read_text(dir_ / "one" / "log.txt").find(" (set by posekd: "), std::string::npos)
      << read_text(dir_ / "one" / "log.txt");
  const Proc two = run(no_omp_env + launch2() + train("two", 6));
  ASSERT_EQ(two.rc, 0) << two.out;
  EXPECT_NE(two.out.find("all 2 rank(s) finished"), std::string::npos) << two.out;

  auto a = posekd::train::load_checkpoint((dir_ / "one" / "latest.pth").string());
  auto b = posekd::train::load_checkpoint((dir_ / "two" / "latest.pth").string());
  EXPECT_EQ(a.batch, 6);
  EXPECT_EQ(b.batch, 6);
  EXPECT_EQ(b.phase, "qat");
  EXPECT_EQ(a.loader.epoch, b.loader.epoch);  // the same global data position
  EXPECT_EQ(a.loader.position, b.loader.position);
  expect_close(a, b, 2e-5);  // float summation order differs, nothing else
  EXPECT_NEAR(a.loss, b.loss, 1e-3 * std::abs(a.loss));

  // Rank 0 alone wrote the log; args.yaml records the group.
  const std::string log = read_text(dir_ / "two" / "log.txt");
  EXPECT_NE(log.find("Distributed: 2 processes"), std::string::npos) << log;
  EXPECT_NE(log.find("OpenMP waits: OMP_WAIT_POLICY=PASSIVE (set by posekd launch: the ranks share"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("Done:"), log.rfind("Done:")) << log;
  EXPECT_NE(read_text(dir_ / "two" / "args.yaml").find("world_size: 2"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir_ / "one" / "results.png"));  // written at the end of every train

  // The 2-process checkpoint resumes on 1 process and stays with the 1-process run.
  const Proc more_two = run(posekd() + train("two", 8));
  ASSERT_EQ(more_two.rc, 0) << more_two.out;
  EXPECT_NE(read_text(dir_ / "two" / "log.txt").find("Resumed at batch 6 (phase qat"), std::string::npos);
  const Proc more_one = run(posekd() + train("one", 8));
  ASSERT_EQ(more_one.rc, 0) << more_one.out;
  auto a8 = posekd::train::load_checkpoint((dir_ / "one" / "latest.pth").string());
  auto b8 = posekd::train::load_checkpoint((dir_ / "two" / "latest.pth").string());
  EXPECT_EQ(b8.batch, 8);
  expect_close(a8, b8, 5e-5);
}

// (fp32 and lr 1e-7: Adam turns the rounding noise of near-zero gradients into steps of about the
// rate in any two runs, docs/distributed.md; SyncBN errors show in the statistics whatever the rate.)
// SyncBN: from batch 0 in the float phase (BatchNorm training), through the QAT switch at batch 2
// (BatchNorm folded, thresholds calibrated on 2 global batches), to the end: 2 processes with SyncBN
// give one process's weights, running statistics and thresholds; the run resumes on one process.
TEST_F(DistributedTrain, SyncBnTwoProcessesEqualOneThroughTheFloatPhaseAndTheQatSwitch) {
  std::ofstream(dir_ / "qat2.yaml") << "start_batch: 2\nweight_bits: 8\n";
  auto cmd = [&](const std::string& out, int total, const std::string& extra = "") {
    return "train --data " + coco_.string() + " --split val2017 --arch ai85pose --batch-size 4 --total-batches " +
           std::to_string(total) +
           " --save-every 2 --threads 1 --workers 1 --calib-batches 2 --quiet --no-plot "
           "--deterministic --no-augment --precision fp32 --seed 3 --lr 1e-7 --qat-lr 1e-7 --qat-policy " +
           (dir_ / "qat2.yaml").string() + " --output " + (dir_ / out).string() + " " + extra;
  };
  // Per tensor: max |a - b| <= rtol * max |a| (thresholds and other integers: equal).
  auto rel_close = [](const posekd::train::Checkpoint& a, const posekd::train::Checkpoint& b, double rtol) {
    ASSERT_EQ(a.model.size(), b.model.size());
    for (size_t i = 0; i < a.model.size(); ++i) {
      const auto& [k, t] = a.model[i];
      ASSERT_EQ(k, b.model[i].first);
      const torch::Tensor& u = b.model[i].second;
      if (k.find("activation_threshold") != std::string::npos || k.find("final_scale") != std::string::npos ||
          !t.is_floating_point()) {
        EXPECT_TRUE(torch::equal(t, u)) << k << ": " << t << " vs " << u;
      } else {
        const double scale = t.abs().max().template item<double>();
        EXPECT_LE((t - u).abs().max().template item<double>(), rtol * scale + 1e-12)
            << k << ": max |a - b| = " << (t - u).abs().max().template item<double>() << ", max |a| = " << scale;
      }
    }
  };
  // The gradients themselves: Adam's running mean of each parameter's gradient. Not for the conv
  // biases before a BatchNorm: their exact gradient is 0 (BatchNorm subtracts the channel mean), so
  // their state is float rounding noise in any run, carried into the QAT phase by the optimizer.
  auto grads_close = [](const posekd::train::Checkpoint& a, const posekd::train::Checkpoint& b,
                        const std::set<std::string>& noise, double rtol) {
    std::vector<std::string> names;  // parameter index -> name (the state dict without buffers)
    for (const auto& kv : a.model) {
      const std::string& k = kv.first;
      if (k.find("running_") == std::string::npos && k.find("num_batches_tracked") == std::string::npos)
        names.push_back(k);
    }
    int compared = 0;
    for (const auto& [i, slot] : a.optimizer.state) {
      ASSERT_LT(static_cast<size_t>(i), names.size());
      ASSERT_EQ(b.optimizer.state.count(i), 1u) << names[static_cast<size_t>(i)];
      if (noise.count(names[static_cast<size_t>(i)]) != 0) continue;
      ++compared;
      const double scale = slot.exp_avg.abs().max().template item<double>();
      const double d = (slot.exp_avg - b.optimizer.state.at(i).exp_avg).abs().max().template item<double>();
      EXPECT_LE(d, rtol * scale) << names[static_cast<size_t>(i)] << ": max |a - b| = " << d << ", max |a| = " << scale;
    }
    EXPECT_GE(compared, 17);  // the 15 weights and the 2 heads' biases (float phase: + BatchNorm weights, biases)
  };
  const Proc one = run(posekd() + cmd("one", 4));
  ASSERT_EQ(one.rc, 0) << one.out;
  const Proc two = run(launch2() + cmd("two", 4));
  ASSERT_EQ(two.rc, 0) << two.out;
  const std::string log = read_text(dir_ / "two" / "log.txt");
  EXPECT_NE(log.find("SyncBN: BatchNorm statistics over the global batch"), std::string::npos) << log;
  EXPECT_NE(read_text(dir_ / "two" / "args.yaml").find("sync_bn: true"), std::string::npos);

  // Batch 2: the float phase, BatchNorm trained (weights, bn.* and running statistics).
  auto f1 = posekd::train::load_checkpoint((dir_ / "one" / "batch_000002.pth").string());
  auto f2 = posekd::train::load_checkpoint((dir_ / "two" / "batch_000002.pth").string());
  EXPECT_EQ(f2.phase, "float");
  bool has_bn = false;
  for (const auto& kv : f2.model) has_bn = has_bn || kv.first == "conv7.bn.running_var";
  EXPECT_TRUE(has_bn);
  rel_close(f1, f2, 1e-4);
  std::set<std::string> noise;  // "conv1.op.bias" ... for the layers with a BatchNorm
  for (const auto& kv : f1.model) {
    const auto at = kv.first.find(".bn.weight");
    if (at != std::string::npos) noise.insert(kv.first.substr(0, at) + ".op.bias");
  }
  EXPECT_EQ(noise.size(), 13u);
  grads_close(f1, f2, noise, 1e-4);
  // Batch 4: after the QAT switch (folded with those statistics, thresholds from both ranks' data).
  auto q1 = posekd::train::load_checkpoint((dir_ / "one" / "latest.pth").string());
  auto q2 = posekd::train::load_checkpoint((dir_ / "two" / "latest.pth").string());
  EXPECT_EQ(q2.batch, 4);
  EXPECT_EQ(q2.phase, "qat");
  rel_close(q1, q2, 1e-4);
  grads_close(q1, q2, noise, 1e-4);

  // The 2-process checkpoint resumes on one process and stays with the 1-process run.
  const Proc more_two = run(posekd() + cmd("two", 6));
  ASSERT_EQ(more_two.rc, 0) << more_two.out;
  EXPECT_NE(read_text(dir_ / "two" / "log.txt").find("Resumed at batch 4 (phase qat"), std::string::npos);
  const Proc more_one = run(posekd() + cmd("one", 6));
  ASSERT_EQ(more_one.rc, 0) << more_one.out;
  rel_close(posekd::train::load_checkpoint((dir_ / "one" / "latest.pth").string()),
            posekd::train::load_checkpoint((dir_ / "two" / "latest.pth").string()), 1e-4);

  // Without SyncBN each process normalises its own half: the statistics differ (the test can fail).
  const Proc per_rank = run(launch2() + cmd("per_rank", 2, "--no-sync-bn"));
  ASSERT_EQ(per_rank.rc, 0) << per_rank.out;
  auto p2 = posekd::train::load_checkpoint((dir_ / "per_rank" / "latest.pth").string());
  double worst = 0;
  for (size_t i = 0; i < f1.model.size(); ++i)
    if (f1.model[i].first.find("running_var") != std::string::npos) {
      const auto& t = f1.model[i].second;
      worst = std::max(worst, ((t - p2.model[i].second).abs().max() / t.abs().max()).template item<double>());
    }
  EXPECT_GT(worst, 1e-3);
}

TEST_F(DistributedTrain, AKilledRankStopsTheJobWhichResumesFromTheLastCheckpoint) {
  const Proc r = run("POSEKD_FAULT_KILL=1:3 " + launch2() + train("k", 6));
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_LT(r.seconds, 120.0);
  EXPECT_NE(r.out.find("rank 1 (pid"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("was killed by signal 9"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank 0 lost contact with the other ranks"), std::string::npos) << r.out;
  auto c = posekd::train::load_checkpoint((dir_ / "k" / "latest.pth").string());
  EXPECT_EQ(c.batch, 2);  // the last checkpoint before the loss, intact
  const Proc again = run(launch2() + train("k", 6));
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_NE(read_text(dir_ / "k" / "log.txt").find("Resumed at batch 2"), std::string::npos);
  EXPECT_EQ(posekd::train::load_checkpoint((dir_ / "k" / "latest.pth").string()).batch, 6);
}

TEST_F(DistributedTrain, AHungRankIsGivenUpAfterTheTimeout) {
  const Proc r = run("POSEKD_FAULT_KILL=1:1:hang " + launch2() + train("h", 6, "--dist-timeout 4"));
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_LT(r.seconds, 90.0) << r.out;
  EXPECT_NE(r.out.find("rank 0 lost contact with the other ranks"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("SIGKILL"), std::string::npos) << r.out;  // the stopped rank had to be killed
}

TEST_F(DistributedTrain, BothRanksFillOneTeacherCache) {
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  const std::string t = "--no-augment --teacher " + teacher.string();  // the cache holds unaugmented images
  const Proc r = run(launch2() + train("t", 1, t));
  ASSERT_EQ(r.rc, 0) << r.out;
  // One global batch = the 4 images, 2 per rank: a later run finds all of them cached.
  const Proc again = run(posekd() + train("t", 2, t));
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_NE(read_text(dir_ / "t" / "log.txt").find(": 4 of 4 images cached"), std::string::npos)
      << read_text(dir_ / "t" / "log.txt");
}

TEST_F(DistributedTrain, CacheTeacherSplitsTheImagesOverTheRanks) {
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  const std::string args = "cache-teacher --teacher " + teacher.string() + " --ann " +
                           (coco_ / "annotations" / "person_keypoints_val2017.json").string() + " --images " +
                           (coco_ / "val2017").string() + " --out " + (dir_ / "tc.bin").string() + " --threads 1";
  const Proc r = run(launch2() + args);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("2 processes, each computes every 2-th image"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4 of 4 images valid; 4 computed"), std::string::npos) << r.out;
  const Proc again = run(posekd() + args);  // one process finds nothing left to do
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_NE(again.out.find("4 already cached, 0 to compute"), std::string::npos) << again.out;
}

}  // namespace
