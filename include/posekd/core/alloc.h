// Allocator tuning and memory figures. LibTorch's CPU tensors come from malloc (posix_memalign);
// with glibc's defaults every activation larger than the (dynamic) mmap threshold is a fresh mmap,
// page-faulted and zeroed by the kernel on every step, then munmap'ed. docs/performance.md has the
// measurements that chose the settings below.
#pragma once
#include <cstdint>
#include <string>

namespace posekd {

// Tunes glibc malloc for LibTorch's large, short-lived, same-sized tensors (call once at program
// start, before threads are created). Idempotent. Does nothing when the environment variable
// POSEKD_MALLOC=default is set (for measurements) or when another malloc (jemalloc, tcmalloc via
// LD_PRELOAD) is in use. Returns a one-line description of what was done, for the log.
std::string tune_allocator();

// True when tune_allocator() changed the glibc settings in this process.
bool allocator_tuned();

// One line for logs: tune_allocator()'s description and the page size of the heap
// (core/huge_pages.h), e.g. "allocator: glibc tuned (...); heap on transparent huge pages (...)".
std::string memory_description();

// Peak resident set size of this process so far (getrusage ru_maxrss), bytes.
int64_t peak_rss_bytes();

// Current resident set size (/proc/self/statm), bytes; 0 if unavailable.
int64_t current_rss_bytes();

}  // namespace posekd
