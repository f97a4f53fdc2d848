// Helpers for tests: locating the fixtures (tests/fixtures, generated ones, optional large ones), temp dirs.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace posekd::testing {

inline std::filesystem::path source_dir() { return POSEKD_SOURCE_DIR; }

// Fixtures kept in the repository: tests/fixtures/<rel> (coco-sample/, targets/, ai8x/layers_float_qat.pt).
inline std::filesystem::path fixtures_dir() { return source_dir() / "tests" / "fixtures"; }

// Fixtures generated at test time into the build folder by tests/fixtures/make_teacher_fixtures.py (the
// CTest setup test `teacher_fixtures`, with Debian's python3-torch): teacher/<file>.
inline std::filesystem::path generated_dir() { return POSEKD_GENERATED_FIXTURES; }

// The large whole-student fixtures of the Python ai8x code (ai8x/student_{float,qat,quantized}.pt, 34 MB)
// are not in the repository: they are looked up in $POSEKD_STUDENT_FIXTURES, else in
// POSEKD_STUDENT_FIXTURES_DIR (a CMake cache variable).
inline std::filesystem::path student_fixtures_dir() {
  if (const char* e = std::getenv("POSEKD_STUDENT_FIXTURES"); e && *e) return e;
  return POSEKD_STUDENT_FIXTURES_DIR;
}

inline bool is_student_fixture(const std::string& rel) {
  return rel == "ai8x/student_float.pt" || rel == "ai8x/student_qat.pt" || rel == "ai8x/student_quantized.pt";
}
// Fixtures that may legitimately be absent (generated ones without python3-torch, the large student files).
inline bool is_optional_fixture(const std::string& rel) {
  return is_student_fixture(rel) || rel.rfind("teacher/", 0) == 0;
}

// Path of a fixture (`coco-sample/...`, `targets/...`, `ai8x/...`, `teacher/...`); empty if it is absent.
inline std::filesystem::path fixture_path(const std::string& rel) {
  std::filesystem::path p;
  if (is_student_fixture(rel)) {
    p = student_fixtures_dir() / std::filesystem::path(rel).filename();
  } else if (rel.rfind("teacher/", 0) == 0) {
    p = generated_dir() / rel;
  } else {
    p = fixtures_dir() / rel;
  }
  return std::filesystem::exists(p) ? p : std::filesystem::path();
}

// Why a fixture is absent, for the skip message.
inline std::string fixture_missing(const std::string& rel) {
  if (is_student_fixture(rel))
    return "large fixture " + rel + " is not in the repository (" + (student_fixtures_dir() / rel).filename().string() +
           " not found in " + student_fixtures_dir().string() + "; set POSEKD_STUDENT_FIXTURES=DIR)";
  if (rel.rfind("teacher/", 0) == 0)
    return "generated fixture " + (generated_dir() / rel).string() +
           " is absent: run the tests through ctest (setup test teacher_fixtures, needs python3-torch)";
  return "fixture tests/fixtures/" + rel + " is absent";
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

// Runs a shell command; its exit status (128 + signal when killed), stdout + stderr and wall seconds.
struct CommandResult {
  int rc = -1;
  std::string out;
  double seconds = 0;
};
inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

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

// Skips the test with a message naming the file when a generated or large fixture is absent; fails when a
// fixture of the repository itself (tests/fixtures) is missing.
#define POSEKD_REQUIRE_FIXTURE(var, rel)                                  \
  const std::filesystem::path var = ::posekd::testing::fixture_path(rel); \
  if (var.empty() && !::posekd::testing::is_optional_fixture(rel))        \
    GTEST_FAIL() << ::posekd::testing::fixture_missing(rel);              \
  if (var.empty()) GTEST_SKIP() << ::posekd::testing::fixture_missing(rel)
