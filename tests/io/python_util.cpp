// Python helpers shared by the io tests (python3 with a module; running a script).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "python_util.h"

namespace posekd::iotest {

std::string find_python(const std::string& module) {
  for (const char* c : {"python3", "/usr/bin/python3"}) {
    std::string cmd = std::string(c) + " -c 'import " + module + "' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return c;
  }
  return "";
}

int run_python(const std::string& py, const std::filesystem::path& dir, const std::string& script, std::string* out) {
  std::filesystem::path s = dir / "script.py", o = dir / "script.out";
  std::ofstream(s) << script;
  int rc = std::system((py + " " + s.string() + " > " + o.string() + " 2>&1").c_str());
  std::ifstream f(o);
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return rc;
}

}  // namespace posekd::iotest
