// --precision parsing, the auto rule, CPU feature detection from /proc/cpuinfo text, and the
// thread-local compute precision.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "posekd/core/error.h"
#include "posekd/core/precision.h"

using namespace posekd;

namespace {

const char* kSapphireRapids =
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
    "flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    "\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n";
const char* kZen4 =
    "processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
    "flags\t\t: fpu avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni\n";
const char* kIceLake =  // AVX-512 without bf16: oneDNN would emulate
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C\n"
    "flags\t\t: fpu avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni\n";
const char* kAvx2Only = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2 fma\n";

}  // namespace

TEST(Precision, ParsesCpuinfoFlagsOfTheFirstProcessor) {
  auto spr = cpu_features_from_cpuinfo(kSapphireRapids);
  EXPECT_TRUE(spr.amx_bf16);
  EXPECT_TRUE(spr.avx512_bf16);
  EXPECT_TRUE(spr.avx512_core);
  EXPECT_TRUE(spr.bf16_units());
  EXPECT_EQ(spr.model, "Intel(R) Xeon(R) Platinum 8481C");
  EXPECT_EQ(spr.flags(), "amx_bf16 avx512_bf16");

  auto zen4 = cpu_features_from_cpuinfo(kZen4);
  EXPECT_FALSE(zen4.amx_bf16);
  EXPECT_TRUE(zen4.avx512_bf16);
  EXPECT_TRUE(zen4.bf16_units());

  auto icx = cpu_features_from_cpuinfo(kIceLake);
  EXPECT_FALSE(icx.bf16_units());
  EXPECT_TRUE(icx.avx512_core);
  EXPECT_NE(icx.flags().find("emulated"), std::string::npos);

  auto old = cpu_features_from_cpuinfo(kAvx2Only);
  EXPECT_FALSE(old.bf16_units());
  EXPECT_FALSE(old.avx512_core);

  // amx_bf16 without the tile architecture is not usable; a flag substring is not a flag.
  auto partial = cpu_features_from_cpuinfo("flags : amx_bf16 xavx512_bf16\n");
  EXPECT_FALSE(partial.amx_bf16);
  EXPECT_FALSE(partial.avx512_bf16);
  EXPECT_FALSE(cpu_features_from_cpuinfo("").bf16_units());
}

TEST(Precision, AutoIsBf16OnlyWithBf16Units) {
  const auto spr = cpu_features_from_cpuinfo(kSapphireRapids);
  const auto zen4 = cpu_features_from_cpuinfo(kZen4);
  const auto icx = cpu_features_from_cpuinfo(kIceLake);
  const auto old = cpu_features_from_cpuinfo(kAvx2Only);
  EXPECT_EQ(resolve_precision("auto", spr), Precision::bf16);
  EXPECT_EQ(resolve_precision("auto", zen4), Precision::bf16);
  EXPECT_EQ(resolve_precision("auto", icx), Precision::fp32);  // emulated bf16 is slower: never auto
  EXPECT_EQ(resolve_precision("auto", old), Precision::fp32);
  for (const auto* f : {&spr, &zen4, &icx, &old}) EXPECT_EQ(resolve_precision("fp32", *f), Precision::fp32);
  EXPECT_EQ(resolve_precision("bf16", spr), Precision::bf16);
  EXPECT_EQ(resolve_precision("bf16", icx), Precision::bf16);  // explicit: allowed, emulated
  EXPECT_THROW(resolve_precision("bf16", old), Error);         // oneDNN cannot run bf16 at all
}

TEST(Precision, RejectsUnknownValuesNamingTheFlag) {
  const auto spr = cpu_features_from_cpuinfo(kSapphireRapids);
  for (const char* bad : {"", "BF16", "fp16", "bfloat16", "auto "}) {
    try {
      resolve_precision(bad, spr, "--precision");
      FAIL() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("--precision"), std::string::npos) << m;
      EXPECT_NE(m.find("auto, fp32 or bf16"), std::string::npos) << m;
    }
  }
}

TEST(Precision, DescriptionNamesChoiceCpuAndFlags) {
  const auto spr = cpu_features_from_cpuinfo(kSapphireRapids);
  const auto icx = cpu_features_from_cpuinfo(kIceLake);
  EXPECT_EQ(describe_precision(Precision::bf16, "auto", spr),
            "precision bf16 (auto; Intel(R) Xeon(R) Platinum 8481C; amx_bf16 avx512_bf16)");
  const std::string emu = describe_precision(Precision::bf16, "bf16", icx);
  EXPECT_NE(emu.find("slower than fp32"), std::string::npos) << emu;
  EXPECT_EQ(describe_precision(Precision::fp32, "auto", icx).rfind("precision fp32 (auto;", 0), 0u);
}

TEST(Precision, ThisMachineAgreesWithItsCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) GTEST_SKIP() << "no /proc/cpuinfo";
  std::stringstream ss;
  ss << in.rdbuf();
  const auto parsed = cpu_features_from_cpuinfo(ss.str());
  const auto& f = cpu_features();
  EXPECT_EQ(f.amx_bf16, parsed.amx_bf16);
  EXPECT_EQ(f.avx512_bf16, parsed.avx512_bf16);
  EXPECT_EQ(f.avx512_core, parsed.avx512_core);
  EXPECT_EQ(resolve_precision("auto"), parsed.bf16_units() ? Precision::bf16 : Precision::fp32);
}

TEST(Precision, ComputePrecisionIsScopedAndThreadLocal) {
  EXPECT_EQ(compute_precision(), Precision::fp32);
  {
    PrecisionScope a(Precision::bf16);
    EXPECT_EQ(compute_precision(), Precision::bf16);
    Precision other = Precision::bf16;
    std::thread([&] { other = compute_precision(); }).join();
    EXPECT_EQ(other, Precision::fp32);  // another thread keeps its own
    {
      PrecisionScope b(Precision::fp32);
      EXPECT_EQ(compute_precision(), Precision::fp32);
    }
    EXPECT_EQ(compute_precision(), Precision::bf16);
  }
  EXPECT_EQ(compute_precision(), Precision::fp32);
}
