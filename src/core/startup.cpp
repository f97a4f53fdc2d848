#include "posekd/core/startup.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "posekd/core/huge_pages.h"
#include "posekd/core/omp_wait.h"

namespace posekd {

void reexec_with_startup_environment(char** argv) {
  if (const char* r = std::getenv(kReexecEnv); r != nullptr && std::string(r) == "0") return;
  bool changed = false;
  if (const auto w = decide_omp_wait()) {
    ::setenv(w->name.c_str(), w->value.c_str(), 1);
    ::setenv(kOmpWaitReasonEnv, w->reason.c_str(), 1);
    changed = true;
  }
  if (const auto h = decide_huge_pages()) {
    ::setenv("GLIBC_TUNABLES", h->glibc_tunables.c_str(), 1);
    ::setenv(kHugePagesSetEnv, "1", 1);
    changed = true;
  }
  if (changed) ::execv("/proc/self/exe", argv);  // returns only on failure
}

}  // namespace posekd
