// The heap on transparent huge pages: reading the kernel's mode, composing GLIBC_TUNABLES, and (in
// tests/cli/test_env_cli.cpp) the posekd program re-executing itself with it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "posekd/core/huge_pages.h"

namespace {

using posekd::huge_page_tunables;
using posekd::thp_mode_from;

TEST(HugePages, ReadsTheSelectedModeFromSysfsText) {
  EXPECT_EQ(thp_mode_from("always [madvise] never\n"), "madvise");
  EXPECT_EQ(thp_mode_from("[always] madvise never\n"), "always");
  EXPECT_EQ(thp_mode_from("always madvise [never]\n"), "never");
  EXPECT_EQ(thp_mode_from(""), "");                       // no such file: no THP in the kernel
  EXPECT_EQ(thp_mode_from("always madvise never"), "");   // nothing selected
  EXPECT_EQ(thp_mode_from("always [madvise never"), "");  // truncated
}

TEST(HugePages, AsksGlibcOnlyWhereTheKernelWaitsToBeAsked) {
  EXPECT_EQ(huge_page_tunables(nullptr, "madvise").value_or("-"), "glibc.malloc.hugetlb=1");
  EXPECT_EQ(huge_page_tunables("", "madvise").value_or("-"), "glibc.malloc.hugetlb=1");
  // The user's other tunables are kept.
  EXPECT_EQ(huge_page_tunables("glibc.malloc.arena_max=2", "madvise").value_or("-"),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1");
  // `always` backs the heap with huge pages already; `never` and no THP allow none.
  EXPECT_FALSE(huge_page_tunables(nullptr, "always").has_value());
  EXPECT_FALSE(huge_page_tunables(nullptr, "never").has_value());
  EXPECT_FALSE(huge_page_tunables(nullptr, "").has_value());
}

TEST(HugePages, TheUsersHugetlbSettingWins) {
  EXPECT_FALSE(huge_page_tunables("glibc.malloc.hugetlb=0", "madvise").has_value());
  EXPECT_FALSE(huge_page_tunables("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", "madvise").has_value());
}

TEST(HugePages, PosekdMallocDefaultLeavesGlibcAlone) {
  const char* old = std::getenv("POSEKD_MALLOC");
  const std::string saved = old ? old : "";
  ::setenv("POSEKD_MALLOC", "default", 1);
  EXPECT_FALSE(posekd::decide_huge_pages().has_value());
  if (old)
    ::setenv("POSEKD_MALLOC", saved.c_str(), 1);
  else
    ::unsetenv("POSEKD_MALLOC");
}

TEST(HugePages, AnonHugePagesIsReadable) {
  // Linux has had /proc/self/smaps_rollup since 4.14; the figure is a byte count, never negative.
  EXPECT_GE(posekd::anon_huge_page_bytes(), 0);
}

}  // namespace
