// SIGTERM finishes the batch, writes a checkpoint and exits 0; leftovers of a killed write are removed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "posekd/train/checkpoint.h"
#include "test_util.h"

using posekd::testing::read_text;

namespace fs = std::filesystem;

namespace {}  // namespace

TEST(Signals, SigtermWritesACheckpointAndExitsZeroAndStaleTempFilesAreRemoved) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  ASSERT_TRUE(fs::exists(posekd::testing::cli())) << "the posekd program is not built";
  auto out = posekd::testing::temp_dir("sigterm");
  // a leftover of a write killed in another process (pid 99999999 cannot exist: > pid_max)
  std::ofstream(out / "latest.pth.tmp.99999999") << "half a checkpoint";
  const std::string ann = (coco / "annotations" / "person_keypoints_val2017.json").string();
  const std::string img = (coco / "val2017").string();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    execl(posekd::testing::cli().c_str(), "posekd", "train", "--ann", ann.c_str(), "--images", img.c_str(), "--arch",
          "ai85pose", "--no-qat", "--batch-size", "2", "--total-batches", "100000", "--save-every", "100000",
          "--threads", "1", "--output", out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // wait for the second logged batch, then SIGTERM
  bool started = false;
  for (int i = 0; i < 1200 && !started; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    started = read_text(out / "log.txt").find("Batch 2/100000") != std::string::npos;
  }
  ASSERT_TRUE(started) << read_text(out / "log.txt");
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string log = read_text(out / "log.txt");
  EXPECT_NE(log.find("(signal); checkpoint written to"), std::string::npos) << log;
  EXPECT_NE(log.find("Removed 1 temporary file(s)"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out / "latest.pth.tmp.99999999"));
  auto ck = posekd::train::load_checkpoint((out / "latest.pth").string());
  EXPECT_GE(ck.batch, 2);
  fs::remove_all(out);
}
