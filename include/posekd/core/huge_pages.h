// The heap on transparent huge pages (THP), chosen at start-up.
//
// A training step reads and writes tens of megabytes of activations (the teacher's at 368x368 are
// 35 MB each). On 4 KiB pages that is thousands of TLB entries per tensor; on 2 MiB pages a few.
// Measured on a 2-core Xeon with AMX (docs/performance.md): bf16 student steps 15-30% faster, the
// bf16 teacher forward ~10%, fp32 steps 5-15%.
//
// Linux hands out huge pages to a process's ordinary memory only when its THP mode
// (/sys/kernel/mm/transparent_hugepage/enabled) is `always`, or when it is `madvise` (as on the
// machine of docs/performance.md) and the program asks for them with madvise(MADV_HUGEPAGE).
// glibc (2.35+) asks for them on all of malloc's heap when started with
// GLIBC_TUNABLES=glibc.malloc.hugetlb=1. The
// dynamic loader reads that variable before main, so, as for libgomp's wait policy
// (core/omp_wait.h), posekd decides first and re-executes itself once (src/cli/main.cpp).
// The user's own glibc.malloc.hugetlb setting wins; POSEKD_MALLOC=default leaves glibc alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace posekd {

// The selected mode in the text of /sys/kernel/mm/transparent_hugepage/enabled
// ("always [madvise] never" -> "madvise"); "" when there is none.
std::string thp_mode_from(const std::string& sysfs_text);
// This machine's mode ("" when the file cannot be read: no THP in this kernel).
std::string thp_mode();

// The GLIBC_TUNABLES value that puts malloc's heap on huge pages, given the variable's current
// value (null: unset) and the THP mode; nullopt when there is nothing to do: the mode is not
// `madvise` (`always` needs nothing, `never` allows nothing), or the value already says
// glibc.malloc.hugetlb (the user's choice). Other tunables in the value are kept.
std::optional<std::string> huge_page_tunables(const char* glibc_tunables, const std::string& thp_mode);

// What the program sets before it re-executes itself, or nullopt: POSEKD_MALLOC=default, or
// huge_page_tunables() has nothing to do on this machine.
struct HugePageChoice {
  std::string glibc_tunables;  // the new GLIBC_TUNABLES value
};
std::optional<HugePageChoice> decide_huge_pages();
// Environment variable the program sets (to "1") with GLIBC_TUNABLES, so logs can tell posekd's
// choice from the user's.
constexpr const char* kHugePagesSetEnv = "POSEKD_HUGE_PAGES";

// One line for logs, e.g. "heap on transparent huge pages (glibc.malloc.hugetlb=1, set by posekd;
// THP mode madvise)" or "4 KiB pages (THP mode never)".
std::string huge_pages_description();

// Bytes of this process's memory on transparent huge pages now (AnonHugePages in
// /proc/self/smaps_rollup); -1 when unreadable.
int64_t anon_huge_page_bytes();

}  // namespace posekd
