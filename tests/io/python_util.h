// Running Debian's python3 (with torch) from the io tests; defined in python_util.cpp.
#pragma once
#include <filesystem>
#include <string>

namespace posekd::iotest {
// A python3 that can `import module`; empty when none.
std::string find_python(const std::string& module);
// Runs a python script in `dir`; returns its exit status, stdout+stderr in *out.
int run_python(const std::string& py, const std::filesystem::path& dir, const std::string& script, std::string* out);
}  // namespace posekd::iotest
