// posekd's error type: one line, naming the file (or flag) and what is wrong.
#pragma once
#include <stdexcept>
#include <string>

namespace posekd {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// "PATH: message" (the convention for every input-related error).
[[noreturn]] void fail_file(const std::string& path, const std::string& message);

}  // namespace posekd
