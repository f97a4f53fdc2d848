// Shared helpers for the libFuzzer targets: a per-process temp file the input is written to
// (the parsers under test read files, as in production).
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace posekd::fuzz {

inline std::string temp_path(const char* tag, const char* ext) {
  const char* dir = std::getenv("TMPDIR");
  std::string d = dir && *dir ? dir : "/tmp";
  return d + "/posekd_fuzz_" + tag + "_" + std::to_string(::getpid()) + ext;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

}  // namespace posekd::fuzz
