// The C decoder and input preparation that `posekd export` writes (pose_c.h), compiled with the
// system C compiler and run on known answers: the same peaks and people as posekd's C++ decoder
// (coordinates within 1e-3 of a map cell), the same input bytes as posekd's sample preparation.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

#include "posekd/ai8x/policy.h"
#include "posekd/ai8x/quantizers.h"
#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"
#include "posekd/data/keypoints.h"
#include "posekd/data/synth.h"
#include "posekd/data/targets.h"
#include "posekd/export/ai8x_export.h"
#include "posekd/export/latency.h"
#include "posekd/export/npy.h"
#include "posekd/export/pose_c.h"
#include "posekd/infer/peaks.h"
#include "posekd/model/student.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace posekd::deploy;
namespace sk = posekd::skeleton;

namespace {

int pc_run(const std::string& cmd, std::string* out) {
  auto r = posekd::testing::run_command(cmd);
  if (out) *out = std::move(r.out);
  return r.rc;
}

bool pc_have_cc() {
  static const int ok = pc_run("cc --version >/dev/null", nullptr);
  return ok == 0;
}

const fs::path kPcHarness = fs::path(POSEKD_SOURCE_DIR) / "tests/export/c/pose_harness.c";

// Compiles the C files in dir (pose_params.h + sources) with the harness; returns the program.
fs::path pc_compile(const fs::path& dir) {
  const fs::path exe = dir / "pose_harness";
  std::string out;
  const std::string cmd = "cc -std=c99 -pedantic -Wall -Wextra -Werror -O2 -ffp-contract=off -I" + dir.string() + " " +
                          (dir / "pose_decode.c").string() + " " + (dir / "pose_input.c").string() + " " +
                          kPcHarness.string() + " -lm -o " + exe.string();
  EXPECT_EQ(pc_run(cmd, &out), 0) << cmd << "\n" << out;
  return exe;
}

// What the harness prints.
struct PcPeak {
  int x, y, ux, uy;
  double score;
};
struct PcPerson {
  int count = 0;
  double score = 0;
  std::map<int, std::array<double, 3>> kpts;  // k -> x, y, score
};
struct PcResult {
  std::vector<std::vector<PcPeak>> peaks;
  std::vector<PcPerson> people;
  int dropped[3] = {-1, -1, -1};
};

PcResult pc_parse(const std::string& text) {
  PcResult r;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string tag;
    l >> tag;
    if (tag == "peaks") {
      int k, n;
      l >> k >> n;
      std::vector<PcPeak> v;
      for (int i = 0; i < n; ++i) {
        std::string t;
        l >> t;
        PcPeak p{};
        std::sscanf(t.c_str(), "%d,%d,%d,%d,%lf", &p.x, &p.y, &p.ux, &p.uy, &p.score);
        v.push_back(p);
      }
      r.peaks.push_back(v);
    } else if (tag == "person") {
      PcPerson p;
      int i;
      std::string w;
      l >> i >> w >> p.count >> w >> p.score;
      r.people.push_back(p);
    } else if (tag == "kpt" && !r.people.empty()) {
      int k;
      double x, y, s;
      l >> k >> x >> y >> s;
      r.people.back().kpts[k] = {x, y, s};
    } else if (tag == "dropped") {
      l >> r.dropped[0] >> r.dropped[1] >> r.dropped[2];
    }
  }
  return r;
}

// C decoder (harness) vs C++ decoder on raw accumulators heat [19,16,16], paf [38,16,16].
// Returns the number of people.
int pc_compare(const fs::path& exe, const fs::path& dir, const torch::Tensor& heat, const torch::Tensor& paf,
               const PoseCConfig& cfg, const std::string& what, int* n_peaks = nullptr) {
  const fs::path hp = dir / "heat.npy", pp = dir / "paf.npy";
  save_npy(hp.string(), heat);
  save_npy(pp.string(), paf);
  std::string out;
  EXPECT_EQ(pc_run(exe.string() + " decode " + hp.string() + " " + pp.string(), &out), 0) << out;
  const PcResult c = pc_parse(out);
  SCOPED_TRACE(what);

  // peaks: the C++ peak search on the maps the decoder sees
  const auto hm = accumulator_maps(heat, cfg.heat_final_scale, cfg.output_scaled, cfg.heat_output_shift);
  const auto ref_peaks = posekd::infer::extract_all_keypoints(hm.data(), sk::kNumKeypoints, 16, 16, cfg.decode.peaks);
  auto ref_refined = ref_peaks;  // the found cells, then (local upsampling) the refined pixels
  const int F = cfg.decode.local_upsample;
  if (F > 1) {
    const auto up = posekd::infer::upsample_maps(hm.data(), sk::kNumKeypoints, 16, 16, F);
    posekd::infer::refine_peaks_local(ref_refined, up.data(), 16 * F, 16 * F, F);
  }
  EXPECT_EQ(c.peaks.size(), ref_peaks.size());
  if (n_peaks) {
    *n_peaks = 0;
    for (const auto& v : ref_peaks) *n_peaks += static_cast<int>(v.size());
  }
  for (std::size_t k = 0; k < std::min(c.peaks.size(), ref_peaks.size()); ++k) {
    if (c.peaks[k].size() != ref_peaks[k].size()) {
      ADD_FAILURE() << "keypoint type " << k << ": " << c.peaks[k].size() << " peaks, C++ " << ref_peaks[k].size();
      continue;
    }
    for (std::size_t i = 0; i < ref_peaks[k].size(); ++i) {
      EXPECT_EQ(c.peaks[k][i].x, ref_peaks[k][i].x);
      EXPECT_EQ(c.peaks[k][i].y, ref_peaks[k][i].y);
      EXPECT_EQ(c.peaks[k][i].ux, ref_refined[k][i].x) << "keypoint type " << k << " peak " << i;
      EXPECT_EQ(c.peaks[k][i].uy, ref_refined[k][i].y) << "keypoint type " << k << " peak " << i;
      EXPECT_NEAR(c.peaks[k][i].score, ref_refined[k][i].score, 1e-6 + 1e-6 * std::abs(ref_refined[k][i].score));
    }
  }
  // people: same grouping, coordinates within 1e-3 of a cell
  const auto ref = decode_accumulators(heat, paf, cfg);
  EXPECT_EQ(c.people.size(), ref.size());
  const double tol = 1e-3 * cfg.decode.stride;
  for (std::size_t i = 0; i < std::min(c.people.size(), ref.size()); ++i) {
    EXPECT_EQ(c.people[i].count, ref[i].count) << "person " << i;
    EXPECT_NEAR(c.people[i].score, ref[i].score, 1e-5 * std::max(1.0, std::abs(double(ref[i].score))));
    for (int k = 0; k < sk::kNumKeypoints; ++k) {
      const auto it = c.people[i].kpts.find(k);
      if ((it != c.people[i].kpts.end()) != ref[i].has(k)) {
        ADD_FAILURE() << "person " << i << " keypoint " << k << " present in one decoder only";
        continue;
      }
      if (!ref[i].has(k)) continue;
      EXPECT_NEAR(it->second[0], ref[i].points[2 * k], tol) << "person " << i << " keypoint " << k;
      EXPECT_NEAR(it->second[1], ref[i].points[2 * k + 1], tol) << "person " << i << " keypoint " << k;
      EXPECT_NEAR(it->second[2], ref[i].kpt_scores[k], 1e-6);
    }
  }
  EXPECT_EQ(c.dropped[0], 0);
  EXPECT_EQ(c.dropped[1], 0);
  EXPECT_EQ(c.dropped[2], 0);
  return static_cast<int>(ref.size());
}

// Accumulators of ground-truth target maps of synthetic people (the demo's easy setting), scaled by
// 0.85 and with a deterministic +-48 LSB ripple so that plateaus become peaks.
std::pair<torch::Tensor, torch::Tensor> pc_target_accumulators(int index, int fs_heat, int fs_paf,
                                                               posekd::data::SynthImage* image = nullptr,
                                                               int min_people = 1, int max_people = 3) {
  posekd::data::SynthConfig sc;
  sc.width = sc.height = 128;
  sc.min_people = min_people;
  sc.max_people = max_people;
  sc.min_scale = 0.6;
  sc.max_scale = 1.05;
  sc.max_yaw = 1.05;
  sc.clutter = 0.3;
  sc.crowd_rate = 0;
  sc.seed = 11;
  auto img = posekd::data::generate_synth_image(sc, index);
  std::vector<posekd::data::Keypoints18> persons;
  for (const auto& p : img.persons) persons.push_back(posekd::data::convert_keypoints(p, 128, 128));
  posekd::data::TargetGrid g;
  auto to_acc = [&](const torch::Tensor& m, int fs_, std::uint64_t salt) {
    auto v = m.contiguous();
    auto out = torch::empty(v.sizes(), torch::kLong);
    const float* a = v.data_ptr<float>();
    auto* o = out.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < v.numel(); ++i) {
      const std::int64_t ripple = static_cast<std::int64_t>(posekd::data::synth_mix(salt * 1000003u + i) % 97) - 48;
      o[i] = std::llround(static_cast<double>(a[i]) * 0.85 * 16384.0 / std::ldexp(1.0, fs_)) + ripple;
    }
    return out;
  };
  if (image) *image = img;
  return {to_acc(posekd::data::heatmaps(persons, g), fs_heat, 2 * index + 1),
          to_acc(posekd::data::pafs(persons, g), fs_paf, 2 * index + 2)};
}

}  // namespace

TEST(PoseC, ParamsHeaderComesFromTheDecoderAndTheSkeleton) {
  EXPECT_EQ(min_valid_samples(posekd::infer::GroupParams{}), 9);  // 8/10 is not > 0.8
  EXPECT_EQ(suppress_max_d2(1.5f), 2);
  EXPECT_EQ(suppress_max_d2(6.f), 35);
  EXPECT_EQ(unload_word(-5, -1), -3);  // arithmetic shift, as cnn_unload
  EXPECT_EQ(unload_word(-5, 2), -20);
  PoseCConfig cfg;
  const std::string h = pose_params_header(cfg);
  EXPECT_NE(h.find("#define POSE_GROUP_LIMBS_INIT {{1, 2}, {1, 5}, {2, 3},"), std::string::npos) << h;
  EXPECT_NE(h.find("#define POSE_GROUP_PAFS_INIT {{12, 13}, {20, 21},"), std::string::npos);
  EXPECT_NE(h.find("#define POSE_KEYPOINT_NAMES_INIT {\"nose\", \"neck\","), std::string::npos);
  EXPECT_NE(h.find("#define POSE_SUPPRESS_MAX_D2 2 "), std::string::npos);
  EXPECT_NE(h.find("#define POSE_PEAK_THRESHOLD 0x1.99999ap-4f"), std::string::npos);
  cfg.decode.upsample = 4;
  EXPECT_THROW(pose_params_header(cfg), posekd::Error);
  cfg.decode.upsample = 1;
  cfg.decode.peaks.threshold = 0.f;  // the C peak search relies on a positive threshold
  EXPECT_THROW(pose_params_header(cfg), posekd::Error);
  // the sources are embedded verbatim
  std::ifstream f(fs::path(POSEKD_SOURCE_DIR) / "src/export/c/pose_decode.c", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  bool found = false;
  for (const auto& s : pose_c_sources())
    if (s.name == "pose_decode.c") found = s.text == text;
  EXPECT_TRUE(found);
}

TEST(PoseC, SubcellOffsetGolden) {
  EXPECT_FLOAT_EQ(posekd::infer::subcell_offset(0.5f, 1.f, 0.5f), 0.f);
  EXPECT_FLOAT_EQ(posekd::infer::subcell_offset(1.f, 1.f, 0.f), -0.5f);
  EXPECT_FLOAT_EQ(posekd::infer::subcell_offset(0.f, 1.f, 0.5f), 0.5f * -0.5f / -1.5f);
  EXPECT_FLOAT_EQ(posekd::infer::subcell_offset(0.2f, 0.2f, 0.2f), 0.f);  // flat: no vertex
  EXPECT_FLOAT_EQ(posekd::infer::subcell_offset(0.f, 1.f, 0.9f), 0.5f * -0.9f / -1.1f);
  EXPECT_FLOAT_EQ(posekd::infer::subcell_offset(0.f, 1.f, 1.5f), 0.5f);  // clamped
}

TEST(PoseC, DecoderMatchesTheCppDecoderOnSyntheticPeople) {
  if (!pc_have_cc()) GTEST_SKIP() << "no system C compiler (cc)";
  for (const int variant : {0, 1, 2}) {  // local upsampling (exported), sub-cell parabola, none
    const auto dir = posekd::testing::temp_dir("posec_variant" + std::to_string(variant));
    PoseCConfig cfg;
    cfg.decode = posekd::infer::direct_decode_params(128, 8, variant == 1, variant == 0);
    cfg.heat_final_scale = 1;
    cfg.paf_final_scale = 2;
    write_pose_c(dir.string(), cfg, synthetic_image_int(), {});
    const auto exe = pc_compile(dir);
    int people = 0;
    for (int i = 0; i < 8; ++i) {
      auto [heat, paf] = pc_target_accumulators(i, cfg.heat_final_scale, cfg.paf_final_scale);
      people += pc_compare(exe, dir, heat, paf, cfg, "synthetic image " + std::to_string(i));
    }
    EXPECT_GE(people, 8);  // the ground-truth maps of 8 images with 1-3 people each
    // raw words (ai8xize --no-scale-output): the decoder applies final_scale itself
    cfg.output_scaled = false;
    write_pose_c(dir.string(), cfg, synthetic_image_int(), {});
    const auto exe_raw = pc_compile(dir);
    auto [heat, paf] = pc_target_accumulators(3, cfg.heat_final_scale, cfg.paf_final_scale);
    EXPECT_GE(pc_compare(exe_raw, dir, heat, paf, cfg, "raw words"), 1);
    // QAT heads: a wide layer's accumulators are its maps times 2^-os; with the output shifts in
    // the units, accumulators 8x / 4x as large decode to the same people
    cfg.output_scaled = true;
    PoseCConfig shifted = cfg;
    shifted.heat_output_shift = -3;
    shifted.paf_output_shift = -2;
    write_pose_c(dir.string(), shifted, synthetic_image_int(), {});
    EXPECT_NE(pose_params_header(shifted).find("#define POSE_HEAT_OUTPUT_SHIFT -3\n"), std::string::npos);
    const auto exe_shifted = pc_compile(dir);
    const auto heat8 = heat * 8, paf4 = paf * 4;
    EXPECT_EQ(accumulator_maps(heat8, cfg.heat_final_scale, true, -3),
              accumulator_maps(heat, cfg.heat_final_scale, true, 0));
    EXPECT_EQ(people_text(decode_accumulators(heat8, paf4, shifted)), people_text(decode_accumulators(heat, paf, cfg)));
    EXPECT_GE(pc_compare(exe_shifted, dir, heat8, paf4, shifted, "output shifts -3, -2"), 1);
    if (!HasFailure()) fs::remove_all(dir);
  }
}

// Limbs shorter than half a map cell join without the PAF, on the chip as in eval: all 18
// keypoint types peaking on one cell with no PAF at all make one person in both decoders (and none
// with upstream's grouping, short_limb 0).
TEST(PoseC, ShortLimbsJoinOnTheChipAsInEval) {
  if (!pc_have_cc()) GTEST_SKIP() << "no system C compiler (cc)";
  for (const float short_limb : {0.5f, 0.f}) {
    const auto dir = posekd::testing::temp_dir("posec_short");
    PoseCConfig cfg;
    cfg.decode.grouping.short_limb = short_limb;
    EXPECT_NE(pose_params_header(cfg).find("#define POSE_SHORT_LIMB"), std::string::npos);
    write_pose_c(dir.string(), cfg, synthetic_image_int(), {});
    const auto exe = pc_compile(dir);
    auto heat = torch::zeros({19, 16, 16}, torch::kLong), paf = torch::zeros({38, 16, 16}, torch::kLong);
    heat.slice(0, 0, 18).select(1, 6).select(1, 9).fill_(12000);  // every keypoint type at cell (9, 6)
    const int people = pc_compare(exe, dir, heat, paf, cfg, fmt::format("short_limb {}", short_limb));
    EXPECT_EQ(people, short_limb > 0 ? 1 : 0);
    if (!HasFailure()) fs::remove_all(dir);
  }
}

TEST(PoseC, DecoderMatchesOnNoiseAndEmptyMaps) {
  if (!pc_have_cc()) GTEST_SKIP() << "no system C compiler (cc)";
  const auto dir = posekd::testing::temp_dir("posec_noise");
  PoseCConfig cfg;
  write_pose_c(dir.string(), cfg, synthetic_image_int(), {});
  const auto exe = pc_compile(dir);
  torch::manual_seed(3);
  // scattered peaks (about 2% of the cells above the threshold) and random PAFs; then all zeros
  int peaks = 0;
  pc_compare(exe, dir, torch::randint(-6000, 1900, {19, 16, 16}, torch::kLong),
             torch::randint(-16384, 16384, {38, 16, 16}, torch::kLong), cfg, "noise", &peaks);
  EXPECT_GT(peaks, 40);
  pc_compare(exe, dir, torch::zeros({19, 16, 16}, torch::kLong), torch::zeros({38, 16, 16}, torch::kLong), cfg,
             "zeros");
  if (!HasFailure()) fs::remove_all(dir);
}

// The limb scores are divided in integer arithmetic (pose_div in pose_decode.c): bit for bit the
// double division it replaces, on tens of millions of quotients (tests/export/c/pose_div_check.c).
TEST(PoseC, LimbScoreDivisionIsTheCorrectlyRoundedQuotient) {
  if (!pc_have_cc()) GTEST_SKIP() << "no system C compiler (cc)";
  const auto dir = posekd::testing::temp_dir("posec_div");
  write_pose_c(dir.string(), PoseCConfig{}, synthetic_image_int(), {});
  const fs::path exe = dir / "pose_div_check";
  std::string out;
  const std::string cmd = "cc -std=c99 -pedantic -Wall -Wextra -Werror -O2 -ffp-contract=off -I" + dir.string() + " " +
                          (fs::path(POSEKD_SOURCE_DIR) / "tests/export/c/pose_div_check.c").string() + " -lm -o " +
                          exe.string();
  ASSERT_EQ(pc_run(cmd, &out), 0) << cmd << "\n" << out;
  EXPECT_EQ(pc_run(exe.string(), &out), 0) << out;
  long checked = 0, differ = -1;
  EXPECT_EQ(std::sscanf(out.c_str(), "checked %ld, differ %ld", &checked, &differ), 2) << out;
  EXPECT_GT(checked, 40000000);
  EXPECT_EQ(differ, 0) << out;
  if (!HasFailure()) fs::remove_all(dir);
}

TEST(PoseC, ExportWritesTheFirmwareAndItDecodesTheSample) {
  if (!pc_have_cc()) GTEST_SKIP() << "no system C compiler (cc)";
  torch::manual_seed(5);
  auto s = posekd::model::make_student("ai85pose");
  const auto shape = s->input_shape();
  int left = 3;
  posekd::ai8x::QatPolicy policy;
  policy.start_batch = 0;
  posekd::model::fuse_and_calibrate(
      *s,
      [&]() -> std::optional<torch::Tensor> {
        if (left-- == 0) return std::nullopt;
        return torch::randint(-128, 128, {2, shape[0], shape[1], shape[2]}).to(torch::kFloat) / 128.0;
      },
      policy);
  s->eval();
  const auto dir = posekd::testing::temp_dir("posec_export");
  ExportOptions opts;
  const auto r = export_ai8x(*s, device_limits("MAX78000"), dir.string(), opts);
  ASSERT_FALSE(r.firmware_dir.empty());
  const fs::path fw(r.firmware_dir);
  for (const char* f : {"pose_params.h", "pose_decode.h", "pose_decode.c", "pose_input.h", "pose_input.c", "main.c",
                        "FIRMWARE.md", "pose_sample.h"})
    EXPECT_TRUE(fs::exists(fw / f)) << f;
  std::string out;
  EXPECT_EQ(pc_run("cc -std=c99 -pedantic-errors -fsyntax-only -x c " + (fw / "pose_sample.h").string(), &out), 0)
      << out;
  // main.c compiles against the MSDK / ai8xize names it uses (declarations only: tests/export/c/msdk_stub)
  const fs::path stub = fs::path(POSEKD_SOURCE_DIR) / "tests/export/c/msdk_stub";
  EXPECT_EQ(pc_run("cc -std=c99 -Wall -Wextra -Werror -fsyntax-only -I" + stub.string() + " -I" + fw.string() + " " +
                       (fw / "main.c").string(),
                   &out),
            0)
      << out;
  const auto exe = pc_compile(fw);
  PoseCConfig cfg;  // as the export configures it
  std::ifstream ph(fw / "pose_params.h");
  std::string line;
  while (std::getline(ph, line)) {
    std::sscanf(line.c_str(), "#define POSE_HEAT_FINAL_SCALE %d", &cfg.heat_final_scale);
    std::sscanf(line.c_str(), "#define POSE_PAF_FINAL_SCALE %d", &cfg.paf_final_scale);
    std::sscanf(line.c_str(), "#define POSE_HEAT_OUTPUT_SHIFT %d", &cfg.heat_output_shift);
    std::sscanf(line.c_str(), "#define POSE_PAF_OUTPUT_SHIFT %d", &cfg.paf_output_shift);
  }
  // the wide heads' output shifts of the QAT student (a random one: os 2, its accumulators a
  // quarter of its maps)
  EXPECT_EQ(std::make_pair(cfg.heat_output_shift, cfg.paf_output_shift), s->head_output_shifts());
  EXPECT_NE(cfg.heat_output_shift, 0);
  int peaks = 0;
  pc_compare(exe, fw, load_npy(r.heat_path), load_npy(r.paf_path), cfg, "exported sample", &peaks);
  std::printf("exported sample (random QAT student): %d peaks\n", peaks);
  // the exported sample input is what pose_input.c makes of the sample frame
  const auto sample = load_npy(r.sample_path);
  const auto frame = fw / "frame.rgb";
  {
    // pose_sample.h's frame == the synthetic image as RGB bytes
    const auto img = synthetic_image_int();
    std::ofstream f(frame, std::ios::binary);
    for (int y = 0; y < 128; ++y)
      for (int x = 0; x < 128; ++x)
        for (int c = 2; c >= 0; --c) f.put(static_cast<char>(img[c][y][x].item<std::int64_t>() + 128));
  }
  ASSERT_EQ(pc_run(exe.string() + " input888 " + frame.string() + " " + (fw / "in.bin").string(), &out), 0) << out;
  std::ifstream in(fw / "in.bin", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 12u * 64 * 64 * 2);  // CHW int8 + HWC words (3 x 4096 x 4 bytes)
  const auto* sv = sample.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < 12 * 64 * 64; ++i) ASSERT_EQ(static_cast<std::int64_t>(bytes[i]), sv[i]) << "byte " << i;
  fs::remove_all(dir);
}

TEST(PoseC, InputPreparationMatchesThePosekdSampleByteForByte) {
  if (!pc_have_cc()) GTEST_SKIP() << "no system C compiler (cc)";
  const auto dir = posekd::testing::temp_dir("posec_input");
  write_pose_c(dir.string(), PoseCConfig{}, synthetic_image_int(), {});
  const auto exe = pc_compile(dir);
  posekd::data::SynthImage syn;
  pc_target_accumulators(0, 0, 0, &syn);
  ASSERT_EQ(syn.image.rows, 128);
  ASSERT_EQ(syn.image.cols, 128);
  cv::Mat noise(128, 128, CV_8UC3);
  cv::randu(noise, cv::Scalar::all(0), cv::Scalar::all(256));
  // an RGB565 frame and the 8-bit image it stands for (bit replication)
  std::vector<unsigned char> f565(128 * 128 * 2);
  cv::Mat from565(128, 128, CV_8UC3);
  for (int i = 0; i < 128 * 128; ++i) {
    const unsigned v = static_cast<unsigned>(posekd::data::synth_mix(i + 77) & 0xffff);
    f565[2 * i] = static_cast<unsigned char>(v >> 8);
    f565[2 * i + 1] = static_cast<unsigned char>(v & 255);
    const unsigned r5 = v >> 11, g6 = (v >> 5) & 63, b5 = v & 31;
    from565.at<cv::Vec3b>(i / 128, i % 128) =
        cv::Vec3b(static_cast<unsigned char>((b5 << 3) | (b5 >> 2)), static_cast<unsigned char>((g6 << 2) | (g6 >> 4)),
                  static_cast<unsigned char>((r5 << 3) | (r5 >> 2)));
  }
  struct Case {
    std::string name;
    cv::Mat bgr;
    bool is565;
  };
  for (const Case& c :
       {Case{"synthetic", syn.image, false}, Case{"noise", noise, false}, Case{"rgb565", from565, true}}) {
    SCOPED_TRACE(c.name);
    const fs::path png = dir / (c.name + ".png"), raw = dir / (c.name + ".raw"), out = dir / (c.name + ".bin");
    ASSERT_TRUE(cv::imwrite(png.string(), c.bgr));
    // posekd's preparation: prepare_sample (BGR, -128) and the 2x2 fold
    const auto ref = posekd::ai8x::fold(image_int(png.string()), 2).contiguous();
    {
      std::ofstream f(raw, std::ios::binary);
      if (c.is565) {
        f.write(reinterpret_cast<const char*>(f565.data()), static_cast<std::streamsize>(f565.size()));
      } else {
        for (int y = 0; y < 128; ++y)
          for (int x = 0; x < 128; ++x) {
            const auto p = c.bgr.at<cv::Vec3b>(y, x);
            f.put(static_cast<char>(p[2])).put(static_cast<char>(p[1])).put(static_cast<char>(p[0]));
          }
      }
    }
    std::string log;
    ASSERT_EQ(pc_run(exe.string() + (c.is565 ? " input565 " : " input888 ") + raw.string() + " " + out.string(), &log),
              0)
        << log;
    std::ifstream in(out, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_EQ(bytes.size(), 12u * 4096 * 2);
    const auto* rv = ref.data_ptr<std::int64_t>();
    int diff = 0;
    for (std::int64_t i = 0; i < 12 * 4096; ++i) diff += static_cast<std::int64_t>(bytes[i]) != rv[i];
    EXPECT_EQ(diff, 0);
    // HWC words: word (q, pixel) byte k = channel 4q + k
    for (int q = 0; q < 3; ++q)
      for (int p = 0; p < 4096; p += 517)
        for (int k = 0; k < 4; ++k)
          EXPECT_EQ(static_cast<std::int64_t>(bytes[12 * 4096 + 4 * (q * 4096 + p) + k]), rv[(4 * q + k) * 4096 + p]);
  }
  if (!HasFailure()) fs::remove_all(dir);
}

// ------------------------------------------------------------------------------ emulated Cortex-M4
// `make firmware-test` (POSEKD_FIRMWARE_TEST=1; needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and
// qemu-system-arm, installed by `scripts/install-deps.sh --firmware`): the decoder cross-compiled for
// the MAX78000's Cortex-M4F, run under QEMU (mps2-an386, semihosting) on the outputs of several
// frames, prints exactly what the host build prints. Also reports the decoder's flash, RAM and stack.
namespace {

const char* kPcArmFlags =
    "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -Os -std=c99 -ffp-contract=off "
    "-ffunction-sections -fdata-sections";

std::array<long, 3> pc_arm_size(const fs::path& elf) {  // text, data, bss
  std::string out;
  EXPECT_EQ(pc_run("arm-none-eabi-size " + elf.string(), &out), 0) << out;
  std::array<long, 3> v{-1, -1, -1};
  const auto nl = out.find('\n');
  if (nl != std::string::npos) std::sscanf(out.c_str() + nl + 1, "%ld %ld %ld", &v[0], &v[1], &v[2]);
  return v;
}

}  // namespace

// Not part of ctest (DISABLED_): `make firmware-test` runs it with --gtest_also_run_disabled_tests.
TEST(Firmware, DISABLED_EmulatedCortexM4PrintsTheHostPeople) {
  if (!std::getenv("POSEKD_FIRMWARE_TEST")) GTEST_SKIP() << "set POSEKD_FIRMWARE_TEST=1 (make firmware-test)";
  ASSERT_TRUE(pc_have_cc());
  for (const char* tool : {"arm-none-eabi-gcc --version", "qemu-system-arm --version"})
    ASSERT_EQ(pc_run(std::string(tool) + " >/dev/null", nullptr), 0)
        << tool << ": missing; install with scripts/install-deps.sh --firmware";
  const auto dir = posekd::testing::temp_dir("posec_firmware");
  PoseCConfig cfg;
  write_pose_c(dir.string(), cfg, synthetic_image_int(), {});
  const auto host = pc_compile(dir);
  const fs::path mps2 = fs::path(POSEKD_SOURCE_DIR) / "tests/export/c/mps2";
  const std::string cc = std::string("arm-none-eabi-gcc ") + kPcArmFlags + " -I" + dir.string();
  std::string out;
  // the decoder and input objects (with their stack use), the start-up code
  for (const char* f : {"pose_decode", "pose_input"})
    ASSERT_EQ(pc_run("cd " + dir.string() + " && " + cc + " -Wall -Wextra -Werror -fstack-usage -c " + f + ".c -o " +
                         f + ".o",
                     &out),
              0)
        << out;
  ASSERT_EQ(pc_run(cc + " -c " + (mps2 / "startup.c").string() + " -o " + (dir / "startup.o").string(), &out), 0)
      << out;
  const std::string link = std::string("arm-none-eabi-gcc ") + kPcArmFlags + " -nostartfiles --specs=rdimon.specs -T " +
                           (mps2 / "mps2.ld").string() + " -Wl,--gc-sections ";

  // known answers: synthetic people (1 to 4 per frame) and noise
  std::vector<std::pair<torch::Tensor, torch::Tensor>> inputs;
  torch::manual_seed(9);
  inputs.emplace_back(torch::randint(-6000, 1900, {19, 16, 16}, torch::kLong),
                      torch::randint(-16384, 16384, {38, 16, 16}, torch::kLong));
  for (int i : {0, 1, 5}) inputs.push_back(pc_target_accumulators(i, 0, 0));
  inputs.push_back(pc_target_accumulators(2, 0, 0, nullptr, 4, 4));  // 4 people: the cycle budget's case
  int people = 0;
  long max_stack = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE("input " + std::to_string(i));
    people += pc_compare(host, dir, inputs[i].first, inputs[i].second, cfg, "input " + std::to_string(i));
    const std::string npys = (dir / "heat.npy").string() + " " + (dir / "paf.npy").string();
    std::string host_text;
    ASSERT_EQ(pc_run(host.string() + " decode " + npys, &host_text), 0) << host_text;
    ASSERT_EQ(pc_run(host.string() + " embed " + npys + " > " + (dir / "pose_outputs.h").string(), &out), 0) << out;
    const fs::path elf = dir / "harness.elf";
    ASSERT_EQ(
        pc_run(cc + " -DPOSE_HARNESS_EMBEDDED -c " + kPcHarness.string() + " -o " + (dir / "harness.o").string(), &out),
        0)
        << out;
    ASSERT_EQ(
        pc_run(link + (dir / "startup.o").string() + " " + (dir / "harness.o").string() + " " +
                   (dir / "pose_decode.o").string() + " " + (dir / "pose_input.o").string() + " -lm -o " + elf.string(),
               &out),
        0)
        << out;
    std::string emu;
    ASSERT_EQ(pc_run("timeout 120 qemu-system-arm -M mps2-an386 -icount shift=0 -nographic -monitor none -serial none "
                     "-semihosting-config enable=on,target=native -kernel " +
                         elf.string(),
                     &emu),
              0)
        << emu;
    // the emulated run adds lines: the stack it measured (painted stack) during pose_decode, and the
    // SysTick ticks of pose_decode and of its peak search alone
    std::map<std::string, long> extra;
    std::string rest;
    std::istringstream lines(emu);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("stack ", 0) == 0 || line.rfind("ticks", 0) == 0) {
        const auto sp = line.find(' ');
        extra[line.substr(0, sp)] = std::atol(line.c_str() + sp + 1);
      } else {
        rest += line + "\n";
      }
    }
    ASSERT_EQ(extra.size(), 3u) << emu;
    max_stack = std::max(max_stack, extra["stack"]);
    if (i == inputs.size() - 1) {  // the 4-person frame: the figure summary and the export README print
      const double rel =
          static_cast<double>(extra["ticks"] * 40 - kDecodeInstructions4People) / kDecodeInstructions4People;
      EXPECT_LT(std::abs(rel), 0.1) << "pose_decode now takes " << extra["ticks"] * 40
                                    << " instructions for 4 people: update kDecodeInstructions4People (latency.h) "
                                       "and docs/deploy.md";
    }
    std::printf(
        "input %zu: %d people, pose_decode ~%ld instructions (peak search ~%ld; SysTick ticks of 40 "
        "instructions under -icount shift=0)\n",
        i, static_cast<int>(pc_parse(host_text).people.size()), extra["ticks"] * 40, extra["ticks_peaks"] * 40);
    emu = rest;
    EXPECT_EQ(emu, host_text);
  }
  std::printf("decoder stack measured on the emulated Cortex-M4F: %ld bytes\n", max_stack);
  EXPECT_GT(max_stack, 100);
  EXPECT_GE(people, 4);

  // flash / RAM of the decoder alone (with the library code it pulls in), and its stack
  std::array<long, 3> sz[2];
  for (int with = 0; with < 2; ++with) {
    const fs::path elf = dir / (with ? "probe_decode.elf" : "probe_empty.elf");
    ASSERT_EQ(pc_run(link + (with ? "-DPOSE_PROBE_DECODE " : "") + "-I" + dir.string() + " " +
                         (dir / "startup.o").string() + " " + (mps2 / "size_probe.c").string() + " " +
                         (dir / "pose_decode.o").string() + " -lm -o " + elf.string(),
                     &out),
              0)
        << out;
    sz[with] = pc_arm_size(elf);
  }
  const long flash = (sz[1][0] + sz[1][1]) - (sz[0][0] + sz[0][1]);
  const long ram = (sz[1][1] + sz[1][2]) - (sz[0][1] + sz[0][2]);
  // -fstack-usage frames of the decoder's functions (own code only; the measured figure is above)
  std::ifstream su(dir / "pose_decode.su");
  std::map<std::string, long> frame;
  for (std::string line; std::getline(su, line);) {
    const auto a = line.rfind(':'), t = line.find('\t');
    if (a == std::string::npos || t == std::string::npos || t < a) continue;
    std::string fn = line.substr(a + 1, t - a - 1);
    fn = fn.substr(0, fn.find('.'));
    frame[fn] = std::max(frame[fn], std::atol(line.c_str() + t + 1));
  }
  ASSERT_TRUE(frame.count("pose_decode") && frame.count("pose_group") && frame.count("pose_find_peaks"));
  // pose_decode -> pose_find_peaks -> pose_refine_local, or -> pose_group -> pose_new_entry / pose_cubic_pair
  // (frames of functions the compiler inlined are absent, i.e. 0)
  const long own_stack = frame["pose_decode"] +
                         std::max(frame["pose_find_peaks"] + frame["pose_refine_local"],
                                  frame["pose_group"] + std::max(frame["pose_new_entry"], frame["pose_cubic_pair"]));
  std::printf(
      "decoder frames: pose_decode %ld, pose_find_peaks %ld, pose_refine_local %ld, pose_group %ld, "
      "pose_new_entry %ld, pose_cubic_pair %ld: deepest own chain %ld bytes\n",
      frame["pose_decode"], frame["pose_find_peaks"], frame["pose_refine_local"], frame["pose_group"],
      frame["pose_new_entry"], frame["pose_cubic_pair"], own_stack);
  EXPECT_LE(own_stack, max_stack);
  std::printf("decoder on Cortex-M4F (-Os): flash %ld bytes, static RAM %ld bytes\n", flash, ram);
  EXPECT_GT(flash, 1000);
  EXPECT_LE(flash, 16 * 1024);
  std::printf("decoder RAM: static %ld + stack %ld = %ld bytes\n", ram, max_stack, ram + max_stack);
  EXPECT_LE(ram + max_stack, 24 * 1024);    // the goal: at most 24 KB of RAM, buffers and stack
  if (std::getenv("POSEKD_FIRMWARE_KEEP"))  // harness.elf (the 4-person frame) for scripts/m4_cycle_estimate.py
    std::printf("kept %s\n", dir.string().c_str());
  else if (!HasFailure())
    fs::remove_all(dir);
}

// A trained student's real outputs (not part of the default suite: it needs a QAT checkpoint):
// POSEKD_POSE_C_CHECKPOINT=ckpt POSEKD_POSE_C_IMAGES=folder test_export --gtest_filter=PoseC.Trained*
// exports the checkpoint once per image (the image as the sample) and compares the C decoder with
// the C++ decoder on the sample's outputs (docs/deploy.md).
// Opt-in (DISABLED_, docs/deploy.md): run with --gtest_also_run_disabled_tests and the two variables.
TEST(PoseC, DISABLED_TrainedStudentOnImages) {
  const char* ckpt = std::getenv("POSEKD_POSE_C_CHECKPOINT");
  const char* images = std::getenv("POSEKD_POSE_C_IMAGES");
  if (!ckpt || !images) GTEST_SKIP() << "set POSEKD_POSE_C_CHECKPOINT and POSEKD_POSE_C_IMAGES";
  ASSERT_TRUE(pc_have_cc());
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(images))
    if (e.path().extension() == ".jpg" || e.path().extension() == ".png") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.size() > 12) files.resize(12);
  ASSERT_FALSE(files.empty());
  int people = 0, peaks_total = 0;
  for (const auto& img : files) {
    const auto dir = posekd::testing::temp_dir("posec_trained");
    std::string out;
    ASSERT_EQ(pc_run(std::string(POSEKD_CLI) + " export --checkpoint " + ckpt + " --out " + dir.string() +
                         " --sample-image " + img.string(),
                     &out),
              0)
        << out;
    const fs::path fw = dir / "firmware";
    PoseCConfig cfg;
    std::ifstream ph(fw / "pose_params.h");
    for (std::string line; std::getline(ph, line);) {
      std::sscanf(line.c_str(), "#define POSE_HEAT_FINAL_SCALE %d", &cfg.heat_final_scale);
      std::sscanf(line.c_str(), "#define POSE_PAF_FINAL_SCALE %d", &cfg.paf_final_scale);
    }
    const auto exe = pc_compile(fw);
    std::string stem;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().find("_heat.npy") != std::string::npos) stem = e.path().string();
    ASSERT_FALSE(stem.empty());
    const std::string paf = stem.substr(0, stem.size() - 9) + "_paf.npy";
    int peaks = 0;
    people += pc_compare(exe, fw, load_npy(stem), load_npy(paf), cfg, img.filename().string(), &peaks);
    peaks_total += peaks;
    fs::remove_all(dir);
  }
  std::printf("%zu images: %d peaks, %d people, the same in C and C++\n", files.size(), peaks_total, people);
  EXPECT_GT(peaks_total, 0);
}
