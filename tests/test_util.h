// Helpers for tests: locating ../shared fixtures (skip loudly when absent), temp dirs.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <random>
#include <string>

namespace posekd::testing {

inline std::filesystem::path source_dir() { return POSEKD_SOURCE_DIR; }

// ../shared relative to the repository root.
inline std::filesystem::path shared_dir() { return source_dir().parent_path() / "shared"; }

// Path of a file under ../shared; empty if it does not exist.
inline std::filesystem::path shared_path(const std::string& rel) {
  auto p = shared_dir() / rel;
  return std::filesystem::exists(p) ? p : std::filesystem::path();
}

// A fresh, empty temporary directory, unique per call.
inline std::filesystem::path temp_dir(const std::string& tag) {
  std::random_device rd;
  auto p = std::filesystem::temp_directory_path() /
           ("posekd-test-" + tag + "-" + std::to_string(rd()) + std::to_string(rd()));
  std::filesystem::create_directories(p);
  return p;
}

inline std::string cli() { return POSEKD_CLI; }

// Writes `text` to `p` (binary, replacing it).
inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

// The whole file as text ("" when it cannot be read).
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace posekd::testing

// Skips the test with a clear message when a ../shared fixture is missing.
#define POSEKD_REQUIRE_SHARED(var, rel)                                                  \
  const std::filesystem::path var = ::posekd::testing::shared_path(rel);               \
  if (var.empty()) GTEST_SKIP() << "fixture ../shared/" << (rel)                       \
                                << " is absent; this test needs the shared reference data"
