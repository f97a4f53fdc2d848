#include "posekd/core/alloc.h"

#include "posekd/core/huge_pages.h"

#include <dlfcn.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace posekd {

namespace {

std::once_flag g_once;
std::string g_description;
bool g_tuned = false;

// Another malloc replaced glibc's (LD_PRELOAD or linked): glibc's mallopt would tune an unused heap.
const char* foreign_malloc() {
  if (dlsym(RTLD_DEFAULT, "mallctl")) return "jemalloc";
  if (dlsym(RTLD_DEFAULT, "tc_malloc")) return "tcmalloc";
  return nullptr;
}

}  // namespace

std::string tune_allocator() {
  std::call_once(g_once, [] {
    const char* env = std::getenv("POSEKD_MALLOC");
    if (env && std::strcmp(env, "default") == 0) {
      g_description = "allocator: glibc defaults kept (POSEKD_MALLOC=default)";
      return;
    }
    if (const char* other = foreign_malloc()) {
      g_description = std::string("allocator: ") + other + " in use, glibc settings left alone";
      return;
    }
    // Never return big blocks to the kernel between steps: no mmap'ed chunks (the teacher's
    // 8x32x184x184 activations are 35 MB, above the largest settable mmap threshold, 32 MB), keep
    // up to 1 GiB of free heap top, grow the heap 64 MiB at a time.
    bool ok = mallopt(M_MMAP_MAX, 0) == 1;
    ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && ok;
    ok = mallopt(M_TOP_PAD, 64 << 20) == 1 && ok;
    g_tuned = ok;
    g_description = ok ? "allocator: glibc tuned (M_MMAP_MAX=0, M_TRIM_THRESHOLD=1GiB, M_TOP_PAD=64MiB)"
                       : "allocator: glibc mallopt refused the settings; defaults kept";
  });
  return g_description;
}

bool allocator_tuned() { return g_tuned; }

std::string memory_description() { return tune_allocator() + "; " + huge_pages_description(); }

int64_t peak_rss_bytes() {
  struct rusage ru {};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux: kilobytes
}

int64_t current_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long size = 0, resident = 0;
  const int n = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE);
}

}  // namespace posekd
