// --precision on the commands: the choice is printed, bad values are one clear line, and the teacher
// cache is rebuilt when the teacher's precision changes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "posekd/core/bf16_conv.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

struct PrecRun {
  int rc = -1;
  std::string out, err;
};

PrecRun prec_run(const std::string& args) {
  auto dir = posekd::testing::temp_dir("precision-cli");
  const fs::path o = dir / "out.txt", e = dir / "err.txt";
  int rc = std::system((posekd::testing::cli() + " " + args + " > " + o.string() + " 2> " + e.string()).c_str());
  PrecRun r{WEXITSTATUS(rc), posekd::testing::read_text(o), posekd::testing::read_text(e)};
  fs::remove_all(dir);
  return r;
}

size_t prec_lines(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++i) n += s[i] == '\n';
  return n;
}

TEST(PrecisionCli, UnknownPrecisionIsOneClearLine) {
  for (const char* cmd : {"eval --results x.json --data . --precision fp16", "bench --precision half",
                          "predict x.jpg --teacher t.pth -o out --precision BF16"}) {
    auto r = prec_run(cmd);
    EXPECT_NE(r.rc, 0) << cmd;
    EXPECT_EQ(prec_lines(r.err), 1u) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("--precision"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("auto, fp32 or bf16"), std::string::npos) << r.err;
  }
}

TEST(PrecisionCli, TeacherEvalPrintsTheChoiceInBothPrecisions) {
  if (!posekd::conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  for (const char* p : {"fp32", "bf16"}) {
    auto r = prec_run("eval --data " + coco.string() + " --split val2017 --threads 2 --quiet --teacher " +
                      teacher.string() + " --subset 2 --batch-size 2 --precision " + p);
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.err.find(std::string("precision ") + p + " (" + p), std::string::npos) << r.err;
    EXPECT_NE(r.out.find("Average Precision"), std::string::npos) << r.out;
  }
}

TEST(PrecisionCli, CacheTeacherRebuildsWhenThePrecisionChanges) {
  if (!posekd::conv2d_bf16_supported()) GTEST_SKIP() << "no AVX-512: oneDNN cannot run bf16 here";
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  POSEKD_REQUIRE_FIXTURE(teacher, "teacher/teacher_state_zip.pth");
  auto dir = posekd::testing::temp_dir("precision-cache");
  const std::string base = "cache-teacher --threads 2 --teacher " + teacher.string() + " --ann " +
                           (coco / "annotations" / "person_keypoints_val2017.json").string() + " --images " +
                           (coco / "val2017").string() + " --out " + (dir / "tc.bin").string() + " --precision ";
  auto a = prec_run(base + "bf16");
  ASSERT_EQ(a.rc, 0) << a.out << a.err;
  EXPECT_NE(a.out.find("Teacher precision bf16"), std::string::npos) << a.out;
  auto b = prec_run(base + "bf16");  // same precision: everything cached
  ASSERT_EQ(b.rc, 0) << b.out << b.err;
  EXPECT_NE(b.out.find("to compute"), std::string::npos) << b.out;
  EXPECT_NE(b.out.find(", 0 to compute"), std::string::npos) << b.out;
  auto c = prec_run(base + "fp32");  // the bf16 entries are not served to an fp32 teacher
  ASSERT_EQ(c.rc, 0) << c.out << c.err;
  EXPECT_NE(c.out.find("teacher computed in bf16, this run's teacher in fp32"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("0 already cached"), std::string::npos) << c.out;
  fs::remove_all(dir);
}

}  // namespace
