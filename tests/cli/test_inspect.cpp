// `posekd inspect FILE`: keys, shapes, dtypes, scalars and placeholder class names; clear errors.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "posekd/io/torch_file.h"
#include "posekd/io/value.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

// Runs the CLI; returns the exit status, stdout+stderr in *out.
int run_cli(const std::string& args, std::string* out) {
  auto dir = posekd::testing::temp_dir("inspect-out");
  fs::path o = dir / "out.txt";
  int rc = std::system((posekd::testing::cli() + " " + args + " > " + o.string() + " 2>&1").c_str());
  std::ifstream f(o);
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  fs::remove_all(dir);
  return WEXITSTATUS(rc);
}

bool has_line(const std::string& out, const std::string& key, const std::string& desc) {
  std::istringstream is(out);
  std::string line;
  while (std::getline(is, line)) {
    if (line.rfind(key + " ", 0) == 0 && line.find(desc) != std::string::npos &&
        line.find(desc) + desc.size() == line.size())
      return true;
  }
  return false;
}

TEST(Inspect, ListsOurFile) {
  auto dir = posekd::testing::temp_dir("inspect");
  posekd::io::Value v = posekd::io::Value::dict();
  posekd::io::Value sd = posekd::io::Value::dict();
  sd.set("conv.weight", posekd::io::Value::tensor(torch::zeros({4, 3, 3, 3})));
  sd.set("bn.num_batches_tracked", posekd::io::Value::tensor(torch::tensor(int64_t(5))));
  v.set("state_dict", sd);
  v.set("epoch", posekd::io::Value::integer(12));
  v.set("lrs", posekd::io::Value::list({posekd::io::Value::floating(0.5), posekd::io::Value::floating(0.25),
                                        posekd::io::Value::floating(0.125)}));
  fs::path p = dir / "f.pth";
  posekd::io::save_torch_file(p.string(), v);
  std::string out;
  ASSERT_EQ(run_cli("inspect " + p.string() + " --max-items 2", &out), 0) << out;
  EXPECT_NE(out.find("torch.save zip format"), std::string::npos) << out;
  EXPECT_TRUE(has_line(out, "state_dict.conv.weight", "tensor float32 [4, 3, 3, 3]")) << out;
  EXPECT_TRUE(has_line(out, "state_dict.bn.num_batches_tracked", "tensor int64 []")) << out;
  EXPECT_TRUE(has_line(out, "epoch", "int 12")) << out;
  EXPECT_TRUE(has_line(out, "lrs.1", "float 0.25")) << out;
  EXPECT_FALSE(has_line(out, "lrs.2", "float 0.125")) << out;  // --max-items 2
  EXPECT_TRUE(has_line(out, "lrs....", "(1 more items not shown)")) << out;
  fs::remove_all(dir);
}

TEST(Inspect, LegacyCheckpointShowsPlaceholders) {
  POSEKD_REQUIRE_FIXTURE(legacy, "teacher/teacher_checkpoint_legacy.pth");
  std::string out;
  ASSERT_EQ(run_cli("inspect " + legacy.string(), &out), 0) << out.substr(0, 2000);
  EXPECT_NE(out.find("torch.save legacy format"), std::string::npos);
  EXPECT_TRUE(has_line(out, "state_dict", "collections.OrderedDict (426 items)"));
  EXPECT_TRUE(has_line(out, "state_dict.model.0.0.weight", "tensor float32 [32, 3, 3, 3]"));
  EXPECT_TRUE(has_line(out, "state_dict.refinement_stages.2.pafs.1.0.bias", "tensor float32 [38]"));
  EXPECT_TRUE(has_line(out, "scheduler.milestones", "<collections.Counter>"));
  EXPECT_TRUE(has_line(out, "scheduler.milestones.args.0.200", "int 1"));
  EXPECT_TRUE(has_line(out, "iter", "int 370000"));
  EXPECT_TRUE(has_line(out, "current_epoch", "int 279"));
}

TEST(Inspect, BadFileIsAOneLineError) {
  auto dir = posekd::testing::temp_dir("inspect-bad");
  fs::path p = dir / "bad.pth";
  std::ofstream(p, std::ios::binary) << std::string("PK\x03\x04garbage", 11);
  std::string out;
  EXPECT_EQ(run_cli("inspect " + p.string(), &out), 1);
  EXPECT_NE(out.find("posekd: error: " + p.string() + ": "), std::string::npos) << out;
  EXPECT_NE(out.find("at offset"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  fs::remove_all(dir);
}

}  // namespace
