// The module order core -> io -> data -> ai8x -> model -> infer -> export -> train -> cli: a header or
// source of a module includes headers of its own module and of the modules before it, never after.
// (CMake links each module library only to the one before it, so a call upward would not link
// either, unless the symbol came in through a header.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kModules = {"core", "io", "data", "ai8x", "model", "infer", "export", "train", "cli"};

int module_rank(const std::string& m) {
  for (size_t i = 0; i < kModules.size(); ++i)
    if (kModules[i] == m) return static_cast<int>(i);
  return -1;
}

// Files allowed to break the order, each with the reason and when it goes away.
const std::map<std::string, std::string> kExempt = {};

}  // namespace

TEST(ModuleOrder, NoUpwardIncludes) {
  const fs::path root = posekd::testing::source_dir();
  const std::regex inc(R"(^\s*#\s*include\s*[<"]posekd/([a-z0-9_]+)/)");
  int files = 0;
  std::vector<std::string> violations;
  for (const auto& top : {std::string("include/posekd"), std::string("src")}) {
    for (const auto& mod : kModules) {
      const fs::path dir = root / top / mod;
      if (!fs::is_directory(dir)) continue;
      for (const auto& e : fs::directory_iterator(dir)) {
        if (!e.is_regular_file()) continue;
        const std::string rel = fs::relative(e.path(), root).string();
        ++files;
        std::ifstream f(e.path());
        std::string line;
        int n = 0;
        while (std::getline(f, line)) {
          ++n;
          std::smatch m;
          if (!std::regex_search(line, m, inc)) continue;
          const int used = module_rank(m[1]);
          if (used < 0) {
            violations.push_back(rel + ":" + std::to_string(n) + ": includes an unknown module '" + m[1].str() + "'");
          } else if (used > module_rank(mod) && !kExempt.count(rel)) {
            violations.push_back(rel + ":" + std::to_string(n) + ": module " + mod + " includes a header of " +
                                 m[1].str() + ", which comes after it");
          }
        }
      }
    }
  }
  EXPECT_GT(files, 50);  // the tree was found
  for (const auto& v : violations) ADD_FAILURE() << v;
  // Every exemption is still needed (delete it when its file is fixed).
  for (const auto& [rel, why] : kExempt) EXPECT_TRUE(fs::exists(root / rel)) << rel << " is gone: drop its exemption";
}
