// A libFuzzer-compatible driver for the normal (gcc) build, so every fuzz target also runs briefly
// in the test suite: it feeds each corpus file, then a fixed number of deterministic mutations of
// them (byte flips, truncations, insertions, splices). No coverage guidance: this is a regression
// and smoke run; `make fuzz` does the real fuzzing with clang's libFuzzer.
//   fuzz_<name>_replay [-runs=N] [-seed=S] FILE_OR_DIR...
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  long runs = 2000;
  unsigned long seed = 1;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "-runs=", 6) == 0)
      runs = std::atol(argv[i] + 6);
    else if (std::strncmp(argv[i], "-seed=", 6) == 0)
      seed = std::strtoul(argv[i] + 6, nullptr, 10);
    else
      inputs.push_back(argv[i]);
  }
  std::vector<std::vector<uint8_t>> corpus;
  for (const auto& in : inputs) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(in)) {
      for (const auto& e : std::filesystem::directory_iterator(in))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (std::filesystem::exists(in)) {
      files.push_back(in);
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::ifstream s(f, std::ios::binary);
      corpus.emplace_back(std::istreambuf_iterator<char>(s), std::istreambuf_iterator<char>());
    }
  }
  if (corpus.empty()) corpus.push_back({});
  for (const auto& c : corpus) LLVMFuzzerTestOneInput(c.data(), c.size());
  std::mt19937_64 rng(seed);
  for (long r = 0; r < runs; ++r) {
    std::vector<uint8_t> d = corpus[rng() % corpus.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 5) {
        case 0:  // flip a byte
          if (!d.empty()) d[rng() % d.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
          break;
        case 1:  // truncate
          if (!d.empty()) d.resize(rng() % d.size());
          break;
        case 2:  // insert random bytes
          d.insert(d.begin() + static_cast<long>(d.empty() ? 0 : rng() % d.size()), 1 + rng() % 8,
                   static_cast<uint8_t>(rng()));
          break;
        case 3:  // set a byte to an interesting value
          if (!d.empty())
            d[rng() % d.size()] = static_cast<uint8_t>(std::vector<int>{0, 0xff, 0x7f, 0x80, 0x2e}[rng() % 5]);
          break;
        default: {  // splice with another input
          const auto& o = corpus[rng() % corpus.size()];
          if (!o.empty() && !d.empty()) {
            size_t at = rng() % d.size(), from = rng() % o.size(),
                   n = 1 + rng() % std::min<size_t>(64, o.size() - from);
            d.resize(at);
            d.insert(d.end(), o.begin() + static_cast<long>(from), o.begin() + static_cast<long>(from + n));
          }
        }
      }
    }
    LLVMFuzzerTestOneInput(d.data(), d.size());
  }
  std::printf("%zu corpus inputs and %ld mutations ran without a crash\n", corpus.size(), runs);
  return 0;
}
