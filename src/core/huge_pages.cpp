#include "posekd/core/huge_pages.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace posekd {

namespace {
std::string read_file(const char* path) {
  std::ifstream f(path);
  if (!f) return {};
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

bool has_hugetlb_setting(const char* tunables) {
  return tunables != nullptr && std::strstr(tunables, "glibc.malloc.hugetlb=") != nullptr;
}
}  // namespace

std::string thp_mode_from(const std::string& sysfs_text) {
  const auto open = sysfs_text.find('[');
  if (open == std::string::npos) return {};
  const auto close = sysfs_text.find(']', open);
  if (close == std::string::npos) return {};
  return sysfs_text.substr(open + 1, close - open - 1);
}

std::string thp_mode() { return thp_mode_from(read_file("/sys/kernel/mm/transparent_hugepage/enabled")); }

std::optional<std::string> huge_page_tunables(const char* glibc_tunables, const std::string& mode) {
  if (mode != "madvise" || has_hugetlb_setting(glibc_tunables)) return std::nullopt;
  const std::string setting = "glibc.malloc.hugetlb=1";
  if (glibc_tunables == nullptr || *glibc_tunables == '\0') return setting;
  return std::string(glibc_tunables) + ":" + setting;
}

std::optional<HugePageChoice> decide_huge_pages() {
  const char* m = std::getenv("POSEKD_MALLOC");
  if (m != nullptr && std::strcmp(m, "default") == 0) return std::nullopt;
  auto t = huge_page_tunables(std::getenv("GLIBC_TUNABLES"), thp_mode());
  if (!t) return std::nullopt;
  return HugePageChoice{*t};
}

std::string huge_pages_description() {
  const std::string mode = thp_mode();
  const std::string m = mode.empty() ? "no THP in this kernel" : "THP mode " + mode;
  if (mode == "always") return "heap on transparent huge pages (" + m + ")";
  const char* t = std::getenv("GLIBC_TUNABLES");
  if (mode == "madvise" && t != nullptr && std::strstr(t, "glibc.malloc.hugetlb=1") != nullptr) {
    const bool ours = std::getenv(kHugePagesSetEnv) != nullptr;
    return std::string("heap on transparent huge pages (glibc.malloc.hugetlb=1, set by ") +
           (ours ? "posekd" : "the user") + "; " + m + ")";
  }
  if (mode == "madvise" && has_hugetlb_setting(t)) return "4 KiB pages (GLIBC_TUNABLES set by the user; " + m + ")";
  return "4 KiB pages (" + m + ")";
}

int64_t anon_huge_page_bytes() {
  std::ifstream f("/proc/self/smaps_rollup");
  if (!f) return -1;
  std::string key;
  long long kb = 0;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    if (in >> key >> kb && key == "AnonHugePages:") return static_cast<int64_t>(kb) * 1024;
  }
  return -1;
}

}  // namespace posekd
