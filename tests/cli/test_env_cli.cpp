// `posekd env`, and through it the start-up settings: the program puts malloc's heap on huge pages
// by re-executing itself with GLIBC_TUNABLES (core/huge_pages.h), and a tensor written afterwards
// does sit on huge pages.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "posekd/core/huge_pages.h"
#include "test_util.h"

namespace {

// "N MiB more after writing" -> N (-1 when absent).
long long mib_more(const std::string& out) {
  const auto at = out.find(" MiB more after writing");
  if (at == std::string::npos) return -1;
  const auto start = out.rfind(' ', at - 1);
  return std::stoll(out.substr(start + 1, at - start - 1));
}

const std::string kClean = "env -u GLIBC_TUNABLES -u POSEKD_HUGE_PAGES -u POSEKD_MALLOC ";

TEST(EnvCli, PrintsTheMachineAndTheProcessSettings) {
  const auto r = posekd::testing::run_command(kClean + posekd::testing::cli() + " env");
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const char* want : {"cpu: ", "precision ", "LibTorch 1.13", "oneDNN ", "OpenMP waits: ", "memory: allocator: "})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  const std::string mode = posekd::thp_mode();
  if (mode == "madvise") {  // posekd asks glibc, and the probe tensor gets huge pages
    EXPECT_NE(r.out.find("heap on transparent huge pages (glibc.malloc.hugetlb=1, set by posekd; THP mode madvise)"),
              std::string::npos)
        << r.out;
    EXPECT_GE(mib_more(r.out), 32) << r.out;
  } else if (mode == "always") {
    EXPECT_NE(r.out.find("heap on transparent huge pages (THP mode always)"), std::string::npos) << r.out;
  } else {
    EXPECT_NE(r.out.find("4 KiB pages"), std::string::npos) << r.out;
  }
}

TEST(EnvCli, UsersSettingsWin) {
  const auto user = posekd::testing::run_command(kClean + "GLIBC_TUNABLES=glibc.malloc.hugetlb=0 " +
                                                 posekd::testing::cli() + " env --probe-mib 64");
  ASSERT_EQ(user.rc, 0) << user.out;
  const auto plain = posekd::testing::run_command(kClean + "POSEKD_MALLOC=default " + posekd::testing::cli() + " env");
  ASSERT_EQ(plain.rc, 0) << plain.out;
  EXPECT_NE(plain.out.find("glibc defaults kept (POSEKD_MALLOC=default); 4 KiB pages"), std::string::npos) << plain.out;
  if (posekd::thp_mode() == "madvise") {  // asked for nothing, the kernel gives nothing
    EXPECT_NE(user.out.find("4 KiB pages (GLIBC_TUNABLES set by the user; THP mode madvise)"), std::string::npos)
        << user.out;
    EXPECT_EQ(mib_more(user.out), 0) << user.out;
    EXPECT_EQ(mib_more(plain.out), 0) << plain.out;
  }
}

TEST(EnvCli, ReexecOffKeepsTheGivenEnvironment) {
  const auto r = posekd::testing::run_command(
      "env -u GLIBC_TUNABLES -u POSEKD_HUGE_PAGES -u POSEKD_MALLOC "
      "-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u POSEKD_OMP_WAIT POSEKD_REEXEC=0 " +
      posekd::testing::cli() + " env");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("OpenMP waits: libgomp defaults"), std::string::npos) << r.out;
  if (posekd::thp_mode() == "madvise") {
    EXPECT_NE(r.out.find("4 KiB pages (THP mode madvise)"), std::string::npos) << r.out;
    EXPECT_EQ(mib_more(r.out), 0) << r.out;
  }
}

TEST(EnvCli, BadProbeSizeIsOneClearLine) {
  const auto r = posekd::testing::run_command(posekd::testing::cli() + " env --probe-mib -3");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("--probe-mib"), std::string::npos) << r.out;
}

}  // namespace
