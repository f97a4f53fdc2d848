#include "posekd/core/startup.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "posekd/core/huge_pages.h"
#include "posekd/core/omp_wait.h"

namespace posekd {

void reexec_with_startup_environment(char** argv) {
  if (const char* r = std::getenv(kReexecEnv); r != nullptr && std::string(r) == "0") return;
  const auto w = decide_omp_wait();
  const auto h = decide_huge_pages();
  if (!w && !h) return;
  const char* old = std::getenv("GLIBC_TUNABLES");
  const std::string old_tunables = old ? old : "";
  if (w) {
    ::setenv(w->name.c_str(), w->value.c_str(), 1);
    ::setenv(kOmpWaitReasonEnv, w->reason.c_str(), 1);
  }
  if (h) {
    ::setenv("GLIBC_TUNABLES", h->glibc_tunables.c_str(), 1);
    ::setenv(kHugePagesSetEnv, "1", 1);
  }
  ::execv("/proc/self/exe", argv);
  // Failed: nothing took effect, so the logs must not say it did.
  if (w) {
    ::unsetenv(w->name.c_str());
    ::unsetenv(kOmpWaitReasonEnv);
  }
  if (h) {
    if (old)
      ::setenv("GLIBC_TUNABLES", old_tunables.c_str(), 1);
    else
      ::unsetenv("GLIBC_TUNABLES");
    ::unsetenv(kHugePagesSetEnv);
  }
}

}  // namespace posekd
