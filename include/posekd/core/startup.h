// What posekd's programs set in their own environment before anything else runs: libgomp's wait
// policy (core/omp_wait.h) and malloc's heap on huge pages (core/huge_pages.h). Both are read by
// libraries when the program is loaded, before main, so the program sets them and re-executes
// itself, once (the second start finds them set and decides nothing).
#pragma once

namespace posekd {

// Call first thing in main. Returns only when nothing needed setting, when POSEKD_REEXEC=0 (under
// a debugger or valgrind, say: the program then runs with the environment it was given), or when
// the re-execution failed (then the program carries on with the environment it has).
void reexec_with_startup_environment(char** argv);
constexpr const char* kReexecEnv = "POSEKD_REEXEC";

}  // namespace posekd
