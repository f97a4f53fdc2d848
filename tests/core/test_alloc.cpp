// Allocator tuning and memory figures.
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include "posekd/core/alloc.h"

namespace {

TEST(Alloc, TuneAllocatorKeepsLargeBlocksOffMmap) {
  const std::string d1 = posekd::tune_allocator();
  const std::string d2 = posekd::tune_allocator();
  EXPECT_EQ(d1, d2);  // idempotent
  EXPECT_EQ(d1.rfind("allocator: ", 0), 0u) << d1;
  if (!posekd::allocator_tuned()) GTEST_SKIP() << "glibc settings not applied here: " << d1;
  EXPECT_NE(d1.find("M_MMAP_MAX=0"), std::string::npos) << d1;
  // glibc's default would serve a 40 MB block with mmap (threshold <= 32 MB); tuned, it comes from
  // the heap: the mmap'ed byte count does not move.
  const struct mallinfo2 before = mallinfo2();
  const size_t n = 40u << 20;
  auto* p = static_cast<char*>(std::malloc(n));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, n);
  const struct mallinfo2 during = mallinfo2();
  EXPECT_EQ(during.hblkhd, before.hblkhd);
  std::free(p);
  // ...and freeing does not give it back to the kernel (trim threshold 1 GiB).
  const struct mallinfo2 after = mallinfo2();
  EXPECT_GE(after.arena, during.arena);
  EXPECT_GE(after.fordblks, n - (1u << 20));
}

TEST(Alloc, RssFiguresFollowTouchedMemory) {
  const int64_t before = posekd::current_rss_bytes();
  ASSERT_GT(before, 0);
  // Fresh anonymous pages (not malloc: the tuned heap may hold free, already resident memory).
  const size_t n = 64u << 20;
  void* m = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto* p = static_cast<char*>(m);
  std::memset(p, 7, n);
  const int64_t during = posekd::current_rss_bytes();
  EXPECT_GE(during - before, static_cast<int64_t>(n) - (4 << 20));
  EXPECT_LE(during - before, static_cast<int64_t>(n) + (16 << 20));
  EXPECT_GE(posekd::peak_rss_bytes(), during - (1 << 20));  // ru_maxrss has KiB granularity
  munmap(m, n);
  EXPECT_LE(posekd::current_rss_bytes(), during - static_cast<int64_t>(n) + (4 << 20));
}

}  // namespace
