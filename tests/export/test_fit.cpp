#include <gtest/gtest.h>

#include "posekd/core/error.h"
#include "posekd/export/fit.h"

using namespace posekd::deploy;

TEST(Fit, KernelWordsFollowTheSynthesisArithmetic) {
  EXPECT_EQ(kernel_words(64, 64, 3, 8), 64);   // Cin <= 64: Cout words
  EXPECT_EQ(kernel_words(96, 96, 3, 8), 192);  // 64 < Cin <= 128: 2*Cout
  EXPECT_EQ(kernel_words(128, 96, 1, 8), 22);  // 1x1: nine weights per word: ceil(192/9)
  EXPECT_EQ(kernel_words(64, 19, 1, 8), 3);
  EXPECT_EQ(input_processors(96), 48);
  EXPECT_EQ(input_processors(12), 12);
}

TEST(Fit, SeedStudentDoesNotFitMax78000ForBothReasons) {
  auto s = posekd::model::make_student("seed");
  auto r = check_fit(*s, device_limits("MAX78000"));
  EXPECT_EQ(r.parameters, 659136);
  EXPECT_EQ(r.total_weight_bytes, 655776);  // seed-pipeline.md
  EXPECT_EQ(r.total_words_proc0, 1436);     // the "about 1,436 of its 768 kernel words"
  EXPECT_EQ(r.total_macs / 1000000, 348);   // seed-pipeline.md: "348 M multiply-adds per image"
  EXPECT_FALSE(r.fits());
  bool stride = false, words = false, bytes = false;
  for (const auto& v : r.violations) {
    stride |= v.find("conv1: Conv2d stride 2") != std::string::npos;
    words |= v.find("processor 0 needs 1436 kernel words > 768") != std::string::npos;
    bytes |= v.find("weights: 655776 bytes > 442368") != std::string::npos;
  }
  EXPECT_TRUE(stride);
  EXPECT_TRUE(words);
  EXPECT_TRUE(bytes);
  EXPECT_NE(format_fit_report(r).find("DOES NOT FIT MAX78000"), std::string::npos);
}

TEST(Fit, SeedStudentMemoryFitsMax78002ButTheStrideStillDoesNot) {
  auto s = posekd::model::make_student("seed");
  auto r = check_fit(*s, device_limits("max78002"));
  ASSERT_EQ(r.violations.size(), 1u) << format_fit_report(r);
  EXPECT_NE(r.violations[0].find("stride"), std::string::npos);
}

TEST(Fit, Ai85PoseFitsMax78000AsTheSynthesisToolSaid) {
  auto s = posekd::model::make_student("ai85pose");
  auto r = check_fit(*s, device_limits("MAX78000"));
  EXPECT_TRUE(r.fits()) << format_fit_report(r);
  EXPECT_EQ(r.total_weight_bytes, 384048);  // ai8x.md 5.3 run C: "384,048 bytes out of 442,368 (86.8%)"
  EXPECT_EQ(r.total_words_proc0, 744);      // "32+32+64*9+48+3+48+5 = 744"
  EXPECT_EQ(r.total_bias_bytes, 793);       // "Bias memory: 793 of 2,048 bytes"
  EXPECT_EQ(r.layers.front().data_format, "HWC");
  EXPECT_EQ(r.layers.back().out_h, 16);
}

TEST(Fit, UnknownDeviceIsAnError) { EXPECT_THROW(device_limits("MAX99999"), posekd::Error); }

TEST(Fit, WeightBitsComeFromThePolicyOrTheQatLayers) {
  auto s = posekd::model::make_student("seed");
  // A policy of 4-bit weights with conv8 kept at 8 bits: conv8 is 128x128x3x3 = 147,456 bytes at 8 bit.
  posekd::ai8x::QatPolicy p;
  p.weight_bits = 4;
  p.overrides["conv8"].weight_bits = 8;
  const WeightBits pb = weight_bits_of(p);
  EXPECT_EQ(pb.for_layer("conv1"), 4);
  EXPECT_EQ(pb.for_layer("conv8"), 8);
  auto r = check_fit(*s, device_limits("MAX78000"), &pb);
  EXPECT_EQ(r.total_weight_bytes, (655776 - 147456) / 2 + 147456);
  for (const auto& f : r.layers) EXPECT_EQ(f.weight_bits, f.name == "conv8" ? 8 : 4) << f.name;
  bool bytes = false;
  for (const auto& v : r.violations) bytes |= v.find("kernel memory") != std::string::npos;
  EXPECT_FALSE(bytes) << format_fit_report(r);  // 401,616 bytes: the memory fits at these bits
  EXPECT_NE(format_fit_report(r).find(" bits "), std::string::npos);
  // Without bits: a float student counts 8 bits everywhere; a QAT layer counts the bits it holds.
  EXPECT_EQ(check_fit(*s, device_limits("MAX78000")).total_weight_bytes, 655776);
  s->layers()[0]->init_module(2, true);  // conv1: 3->32 3x3 = 864 weights
  const WeightBits sb = weight_bits_of(*s);
  EXPECT_EQ(sb.for_layer("conv1"), 2);
  EXPECT_EQ(sb.for_layer("conv2"), 8);
  EXPECT_EQ(check_fit(*s, device_limits("MAX78000")).total_weight_bytes, 655776 - 864 + 864 / 4);
  // Bits ai8x does not have are a violation.
  WeightBits bad;
  bad.default_bits = 3;
  bool named = false;
  for (const auto& v : check_fit(*s, device_limits("MAX78000"), &bad).violations)
    named |= v.find("conv1: 3-bit weights (1, 2, 4 or 8 only)") != std::string::npos;
  EXPECT_TRUE(named);
}
