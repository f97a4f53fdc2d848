// posekd: one program, many subcommands (see src/cli/cmd_*.cpp).
#include <c10/util/Exception.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include "posekd/cli/registry.h"
#include "posekd/core/alloc.h"
#include "posekd/core/error.h"
#include "posekd/core/startup.h"

namespace posekd::cli {

std::vector<Command>& commands() {
  static std::vector<Command> all;
  return all;
}

Registration::Registration(std::string name, std::string help, Setup setup) {
  commands().push_back({std::move(name), std::move(help), std::move(setup)});
}

}  // namespace posekd::cli

int main(int argc, char** argv) {
  using namespace posekd::cli;
  // How libgomp's threads wait (a short spin on an idle machine, sleeping when other programs use
  // the cores: libgomp's default long spin made the student 10x slower there) and malloc's heap on
  // 2 MiB pages (steps 15-30% faster). Libraries read both when the program is loaded, before main,
  // so posekd sets them and re-executes itself once; the user's own settings win. See
  // core/omp_wait.h, core/huge_pages.h and docs/performance.md.
  posekd::reexec_with_startup_environment(argv);
  posekd::tune_allocator();  // glibc keeps freed memory instead of page-faulting it back (docs/performance.md)
  CLI::App app{"posekd: distil, quantize and deploy tiny pose networks for MAX78000/MAX78002"};
  app.require_subcommand(1);
  auto cmds = commands();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  std::map<CLI::App*, Runner> runners;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runners[sub] = c.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {  // e.g. a --config file that does not read
    std::fprintf(stderr, "posekd: error: %s\n", e.what());
    return 1;
  }
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const c10::Error& e) {  // a LibTorch check: its message without the C++ backtrace
    std::string m = e.what_without_backtrace();
    if (const auto nl = m.find('\n'); nl != std::string::npos) m.resize(nl);
    std::fprintf(stderr, "posekd: error: %s\n", m.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "posekd: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
