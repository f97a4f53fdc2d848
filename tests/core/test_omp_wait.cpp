// The start-up choice of libgomp's wait policy (core/omp_wait.h) from /proc/stat samples.
#include <gtest/gtest.h>

#include <cstdlib>

#include "posekd/core/omp_wait.h"

using namespace posekd;

TEST(OmpWait, ParsesTheAggregateCpuLine) {
  // user nice system idle iowait irq softirq steal guest guest_nice
  auto t = parse_proc_stat("cpu  100 5 20 1000 7 3 2 1 50 0");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->busy, 100u + 5 + 20 + 3 + 2 + 1);  // guest time is already inside user
  EXPECT_EQ(t->total, t->busy + 1000 + 7);
  auto old = parse_proc_stat("cpu 1 2 3 4");  // kernels before 2.5.41 stop after idle
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(old->busy, 6u);
  EXPECT_EQ(old->total, 10u);
  EXPECT_FALSE(parse_proc_stat("cpu0 1 2 3 4 5 6 7 8").has_value());  // a per-core line is not the total
  EXPECT_FALSE(parse_proc_stat("cpu 1 2").has_value());
  EXPECT_FALSE(parse_proc_stat("").has_value());
}

TEST(OmpWait, BusyCoresAndTheRule) {
  CpuTimes a{1000, 5000}, b{1000 + 50, 5000 + 200};  // 50 of 200 ticks busy on 2 cores
  EXPECT_DOUBLE_EQ(busy_cores(a, b, 2), 0.5);
  EXPECT_DOUBLE_EQ(busy_cores(a, a, 2), 0.0);  // no ticks elapsed
  EXPECT_DOUBLE_EQ(busy_cores(b, a, 2), 0.0);  // counters going backwards: treated as idle
  EXPECT_EQ(choose_omp_wait(0.0).name, "GOMP_SPINCOUNT");
  EXPECT_EQ(choose_omp_wait(0.0).value, "10000");
  EXPECT_EQ(choose_omp_wait(kIdleBusyCores - 0.01).name, "GOMP_SPINCOUNT");
  const auto busy = choose_omp_wait(1.0);
  EXPECT_EQ(busy.name, "OMP_WAIT_POLICY");
  EXPECT_EQ(busy.value, "PASSIVE");
  EXPECT_NE(busy.reason.find("1.00 cores busy"), std::string::npos) << busy.reason;
}

TEST(OmpWait, TheUsersChoiceWinsAndIsReported) {
  // ctest runs every test with OMP_WAIT_POLICY=PASSIVE: that is a user's choice, left alone.
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::unsetenv(kOmpWaitReasonEnv);
  EXPECT_FALSE(decide_omp_wait(1).has_value());
  EXPECT_EQ(omp_wait_description(), "OMP_WAIT_POLICY=PASSIVE (set by the user)");
  ::setenv(kOmpWaitReasonEnv, "set by posekd: test", 1);
  EXPECT_EQ(omp_wait_description(), "OMP_WAIT_POLICY=PASSIVE (set by posekd: test)");
  ::unsetenv(kOmpWaitReasonEnv);
  ::unsetenv("OMP_WAIT_POLICY");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  if (spin == nullptr) {
    EXPECT_EQ(omp_wait_description(), "libgomp defaults");
    const auto w = decide_omp_wait(20);  // samples this machine: either answer, but a full one
    ASSERT_TRUE(w.has_value());
    EXPECT_TRUE(w->name == "GOMP_SPINCOUNT" || w->name == "OMP_WAIT_POLICY") << w->name;
    EXPECT_FALSE(w->reason.empty());
  }
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
}
