// The Lightweight-OpenPose teacher: state-dict names and counts, loading both fixture formats,
// outputs against the Python reference, the distillation wrapper, BN folding, load_state semantics.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>

#include "posekd/core/error.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/teacher.h"
#include "test_util.h"

namespace {

using posekd::model::PoseEstimationWithMobileNet;
namespace fs = std::filesystem;

double norm_rel_err(const torch::Tensor& out, const torch::Tensor& ref) {
  return ((out - ref).norm() / ref.norm()).item<double>();
}

TEST(Teacher, StateDictNamesAndCounts) {
  PoseEstimationWithMobileNet net(1);
  int64_t params = 0;
  for (const auto& p : net->parameters()) params += p.numel();
  EXPECT_EQ(params, 4091698);
  auto named = net->named_parameters(true);
  auto buffers = net->named_buffers(true);
  EXPECT_EQ(named.size(), 151u);
  EXPECT_EQ(named.size() + buffers.size(), 250u);
  for (const char* k :
       {"model.0.0.weight", "model.0.1.running_var", "model.7.0.weight", "model.11.4.bias", "cpm.align.0.weight",
        "cpm.align.0.bias", "cpm.trunk.2.2.weight", "cpm.conv.0.bias", "initial_stage.trunk.2.0.bias",
        "initial_stage.heatmaps.1.0.weight", "initial_stage.pafs.0.0.weight",
        "refinement_stages.0.trunk.0.initial.0.weight", "refinement_stages.0.trunk.4.trunk.1.1.running_mean",
        "refinement_stages.0.heatmaps.1.0.bias", "refinement_stages.0.pafs.1.0.weight"}) {
    EXPECT_TRUE(named.contains(k) || buffers.contains(k)) << k;
  }
  EXPECT_TRUE(buffers.contains("model.0.1.num_batches_tracked"));
  EXPECT_FALSE(named.contains("model.0.0.bias"));  // backbone conv without bias
  EXPECT_EQ(named["model.7.0.weight"].sizes(), (std::vector<int64_t>{512, 1, 3, 3}));
  EXPECT_EQ(named["refinement_stages.0.trunk.0.initial.0.weight"].sizes(), (std::vector<int64_t>{128, 185, 1, 1}));
  PoseEstimationWithMobileNet net3(3);
  EXPECT_EQ(net3->named_parameters(true).size() + net3->named_buffers(true).size(), 426u);
  PoseEstimationWithMobileNet net0(0);
  int64_t p0 = 0;
  for (const auto& p : net0->parameters()) p0 += p.numel();
  EXPECT_EQ(p0, 2483065);
  // Output shapes for an odd input size: ceil(H/8) x ceil(W/8).
  net0->eval();
  torch::NoGradGuard ng;
  auto out = net0->forward(torch::zeros({1, 3, 65, 70}));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].sizes(), (std::vector<int64_t>{1, 19, 9, 9}));
  EXPECT_EQ(out[1].sizes(), (std::vector<int64_t>{1, 38, 9, 9}));
}

TEST(Teacher, ZipStateMatchesReferenceOutputs) {
  POSEKD_REQUIRE_FIXTURE(zip, "teacher/teacher_state_zip.pth");
  POSEKD_REQUIRE_FIXTURE(refp, "teacher/teacher_reference_outputs.pt");
  auto ref = posekd::io::load_torch_file(refp.string());
  PoseEstimationWithMobileNet net(1);
  auto rep = posekd::model::load_teacher(net, zip.string(), /*fuse=*/false);
  EXPECT_EQ(rep.loaded, 250);
  EXPECT_EQ(rep.missing, 0);
  EXPECT_EQ(rep.ignored, 0);
  torch::NoGradGuard ng;
  torch::Tensor x = ref.at("input_368").as_tensor();
  // The unfused reference path on the first image (keeps the test short), the fused one on both.
  auto out = net->forward(x.slice(0, 0, 1));
  ASSERT_EQ(out.size(), 4u);
  const char* names[] = {"stage0_heatmaps", "stage0_pafs", "stage1_heatmaps", "stage1_pafs"};
  for (int i = 0; i < 4; ++i) {
    double e = norm_rel_err(out[i], ref.at(names[i]).as_tensor().slice(0, 0, 1));
    EXPECT_LT(e, 1e-4) << names[i];
    RecordProperty(std::string("unfused_") + names[i], std::to_string(e));
  }
  // BN folded into the convs: same outputs.
  net->fuse();
  auto fused = net->forward(x);
  for (int i = 0; i < 4; ++i) {
    double e = norm_rel_err(fused[i], ref.at(names[i]).as_tensor());
    EXPECT_LT(e, 1e-4) << "fused " << names[i];
    RecordProperty(std::string("fused_") + names[i], std::to_string(e));
  }
}

TEST(Teacher, LegacyCheckpointWrappedMatchesReference) {
  POSEKD_REQUIRE_FIXTURE(legacy, "teacher/teacher_checkpoint_legacy.pth");
  POSEKD_REQUIRE_FIXTURE(refp, "teacher/teacher_reference_outputs.pt");
  auto ref = posekd::io::load_torch_file(refp.string());
  posekd::model::TeacherOptions opt;
  opt.input_scale = 1.0;  // the fixture was made with the seed's behaviour
  posekd::model::LoadReport rep;
  auto teacher = posekd::model::load_teacher_wrapper(legacy.string(), opt, &rep);
  EXPECT_EQ(rep.loaded, 250);
  EXPECT_EQ(rep.missing, 0);
  EXPECT_EQ(rep.ignored, 426 - 250);  // refinement stages 1 and 2 are ignored
  EXPECT_TRUE(teacher->net()->is_fused());
  EXPECT_FALSE(teacher->is_training());
  teacher->train();  // frozen: stays in eval mode
  EXPECT_FALSE(teacher->is_training());
  EXPECT_FALSE(teacher->net()->is_training());
  for (const auto& p : teacher->parameters()) EXPECT_FALSE(p.requires_grad());
  auto out = teacher->forward(ref.at("input_128").as_tensor());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].sizes(), (std::vector<int64_t>{2, 19, 16, 16}));
  EXPECT_EQ(out[1].sizes(), (std::vector<int64_t>{2, 38, 16, 16}));
  EXPECT_LT(norm_rel_err(out[0], ref.at("wrapped_heatmaps_16").as_tensor()), 1e-4);
  EXPECT_LT(norm_rel_err(out[1], ref.at("wrapped_pafs_16").as_tensor()), 1e-4);
  // input_scale 0.5 (the default) equals net(0.5 * resized input).
  torch::NoGradGuard ng;
  posekd::model::TeacherOptions half;
  auto t2 = posekd::model::TeacherWrapper(teacher->net(), half);
  torch::Tensor x1 = ref.at("input_128").as_tensor().slice(0, 0, 1);
  auto o2 = t2->forward(x1);
  namespace F = torch::nn::functional;
  auto resized = F::interpolate(
      x1, F::InterpolateFuncOptions().size(std::vector<int64_t>{368, 368}).mode(torch::kBilinear).align_corners(false));
  auto direct = teacher->net()->forward(resized * 0.5);
  auto direct16 = F::interpolate(
      direct[2],
      F::InterpolateFuncOptions().size(std::vector<int64_t>{16, 16}).mode(torch::kBilinear).align_corners(false));
  EXPECT_LT(norm_rel_err(o2[0], direct16), 1e-6);
}

TEST(Teacher, OneLoaderReadsTheFileMetadataOrUpstreamDefaults) {
  POSEKD_REQUIRE_FIXTURE(legacy, "teacher/teacher_checkpoint_legacy.pth");
  POSEKD_REQUIRE_FIXTURE(zip, "teacher/teacher_state_zip.pth");
  // The released layout (three refinement stages in the file): upstream's 1-stage network at 368.
  auto t = posekd::model::load_teacher(legacy.string(), 0.5, /*fuse=*/false);
  EXPECT_FALSE(t.info.from_metadata);
  EXPECT_EQ(t.info.num_refinement_stages, 1);
  EXPECT_EQ(t.info.input_size, 368);
  EXPECT_DOUBLE_EQ(t.info.input_scale, 0.5);
  EXPECT_EQ(t.report.loaded, 250);
  EXPECT_EQ(t.report.missing, 0);
  EXPECT_FALSE(t.net->is_fused());
  EXPECT_FALSE(t.net->is_training());
  // A file with 'posekd_teacher' metadata: 0 refinement stages at 128, input scale 1. A bare state dict
  // without refinement stages builds a 0-stage network too, so no weight is left random.
  auto dir = posekd::testing::temp_dir("teacher-meta");
  auto full = posekd::io::to_state_dict(posekd::io::load_torch_file(zip.string()).at("state_dict"));
  posekd::io::StateDict no_stages;
  for (const auto& kv : full)
    if (kv.first.rfind("refinement_stages.", 0) != 0) no_stages.push_back(kv);
  ASSERT_EQ(no_stages.size(), 162u);
  auto root = posekd::io::Value::dict();
  root.set("state_dict", posekd::io::to_value(no_stages));
  auto meta = posekd::io::Value::dict();
  meta.set("input_size", posekd::io::Value::integer(128));
  meta.set("input_scale", posekd::io::Value::floating(1.0));
  meta.set("num_refinement_stages", posekd::io::Value::integer(0));
  root.set("posekd_teacher", meta);
  posekd::io::save_torch_file((dir / "meta.pth").string(), root);
  auto m = posekd::model::load_teacher((dir / "meta.pth").string(), 0.5);
  EXPECT_TRUE(m.info.from_metadata);
  EXPECT_EQ(m.info.num_refinement_stages, 0);
  EXPECT_EQ(m.info.input_size, 128);
  EXPECT_DOUBLE_EQ(m.info.input_scale, 1.0);
  EXPECT_EQ(m.report.loaded, 162);
  EXPECT_EQ(m.report.missing, 0);
  EXPECT_TRUE(m.net->is_fused());
  const auto wo = m.wrapper_options();
  EXPECT_EQ(wo.input_size, 128);
  EXPECT_EQ(wo.num_refinement_stages, 0);
  EXPECT_DOUBLE_EQ(wo.input_scale, 1.0);
  posekd::io::save_torch_file((dir / "bare.pth").string(), posekd::io::to_value(no_stages));
  auto b = posekd::model::load_teacher((dir / "bare.pth").string(), 0.25);
  EXPECT_FALSE(b.info.from_metadata);
  EXPECT_EQ(b.info.num_refinement_stages, 0);
  EXPECT_EQ(b.info.input_size, 368);
  EXPECT_DOUBLE_EQ(b.info.input_scale, 0.25);
  EXPECT_EQ(b.report.missing, 0);
  // Metadata out of range is an error naming the file.
  meta.set("input_size", posekd::io::Value::integer(100));
  root.set("posekd_teacher", meta);
  posekd::io::save_torch_file((dir / "bad.pth").string(), root);
  try {
    posekd::model::load_teacher((dir / "bad.pth").string());
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind((dir / "bad.pth").string() + ": posekd_teacher metadata", 0), 0u) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Teacher, LoadStateSemantics) {
  auto dir = posekd::testing::temp_dir("teacher-load");
  PoseEstimationWithMobileNet src(1);
  // A DataParallel-style file: `module.` prefix, one wrong shape, one extra key, no cpm.conv bias.
  posekd::io::StateDict sd;
  for (auto& p : src->named_parameters(true)) {
    if (p.key() == "cpm.conv.0.bias") continue;
    torch::Tensor t = p.value().detach().clone();
    if (p.key() == "model.0.0.weight") t = torch::zeros({1, 2});
    sd.emplace_back("module." + p.key(), t);
  }
  for (auto& b : src->named_buffers(true)) sd.emplace_back("module." + b.key(), b.value().clone());
  sd.emplace_back("module.extra.weight", torch::ones(3));
  fs::path p = dir / "dp.pth";
  posekd::io::save_torch_file(p.string(), posekd::io::to_value(sd));  // bare state dict
  PoseEstimationWithMobileNet dst(1);
  auto rep = posekd::model::load_teacher(dst, p.string());
  EXPECT_EQ(rep.loaded, 248);
  EXPECT_EQ(rep.missing, 2);
  EXPECT_EQ(rep.ignored, 2);  // the wrong-shape entry and the extra key
  EXPECT_NE(std::find(rep.missing_names.begin(), rep.missing_names.end(), "cpm.conv.0.bias"), rep.missing_names.end());
  EXPECT_NE(std::find(rep.missing_names.begin(), rep.missing_names.end(), "model.0.0.weight"), rep.missing_names.end());
  auto dp = dst->named_parameters(true);
  auto sp = src->named_parameters(true);
  EXPECT_TRUE(torch::equal(dp["cpm.align.0.weight"], sp["cpm.align.0.weight"]));
  // Nothing matching: an error naming the file.
  posekd::io::StateDict junk = {{"foo.weight", torch::ones(2)}};
  fs::path q = dir / "junk.pth";
  posekd::io::save_torch_file(q.string(), posekd::io::to_value(junk));
  try {
    posekd::model::load_teacher(dst, q.string());
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find(q.string() + ": no teacher weights found"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Teacher, FusedEqualsUnfusedAndSpeedAt368) {
  // BN folding on random weights with non-trivial running statistics; timings are recorded (the
  // project target is >= 8 img/s on 2 cores) but not asserted: shared machines vary too much.
  torch::manual_seed(3);
  PoseEstimationWithMobileNet net(1);
  {
    torch::NoGradGuard ng;
    for (auto& b : net->named_buffers(true)) {
      if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.5, 0.5);
      if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    }
    for (auto& p : net->named_parameters(true))
      if (p.key().find(".1.weight") != std::string::npos && p.value().dim() == 1) p.value().uniform_(0.5, 1.5);
  }
  net->eval();
  torch::NoGradGuard ng;
  torch::Tensor x = torch::randn({1, 3, 368, 368});
  auto time_it = [&](std::vector<torch::Tensor>* out) {
    auto t0 = std::chrono::steady_clock::now();
    std::clock_t c0 = std::clock();
    *out = net->forward(x);
    double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return std::make_pair(wall, cpu);
  };
  std::vector<torch::Tensor> ref, fused;
  auto tu = time_it(&ref);
  net->fuse();
  net->forward(x);  // warm-up (channels-last weights, allocator)
  auto tf = time_it(&fused);
  ASSERT_EQ(fused.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(fused[i].sizes(), ref[i].sizes());
    EXPECT_LT(norm_rel_err(fused[i], ref[i]), 1e-4) << i;
  }
  RecordProperty("fused_images_per_second", std::to_string(1 / tf.first));
  std::printf("teacher forward at 368, %d threads: unfused %.2f img/s (%.3f CPU-s), fused %.2f img/s (%.3f CPU-s)\n",
              torch::get_num_threads(), 1 / tu.first, tu.second, 1 / tf.first, tf.second);
}

}  // namespace

namespace {

TEST(Teacher, WeightLayoutKeepsTheStateAndTheOutputs) {
  // train-teacher lays the weights out channels-last under bf16: same values, same state dict
  // (saved contiguous), same training-mode outputs.
  torch::manual_seed(4);
  PoseEstimationWithMobileNet a(0), b(0);
  {
    torch::NoGradGuard ng;
    auto pb = b->parameters();
    auto pa = a->parameters();
    for (size_t i = 0; i < pa.size(); ++i) pb[i].copy_(pa[i]);
  }
  b->set_weight_layout(at::MemoryFormat::ChannelsLast);
  int four_d = 0;
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& kv : pb) {
    const auto& p = kv.value();
    EXPECT_TRUE(torch::equal(p, pa[kv.key()])) << kv.key();
    if (p.dim() == 4) {
      ++four_d;
      EXPECT_TRUE(p.is_contiguous(at::MemoryFormat::ChannelsLast)) << kv.key();
    }
  }
  EXPECT_EQ(four_d, 38);  // backbone 1 + 11 x 2, cpm 1 + 3 x 2 + 1, initial stage 3 + 4
  a->train();
  b->train();
  torch::Tensor x = torch::rand({2, 3, 64, 64}) - 0.5;
  auto ya = a->forward(x), yb = b->forward(x.contiguous(at::MemoryFormat::ChannelsLast));
  ASSERT_EQ(ya.size(), yb.size());
  for (size_t i = 0; i < ya.size(); ++i) EXPECT_LT(norm_rel_err(yb[i], ya[i]), 1e-5) << i;
  b->set_weight_layout(at::MemoryFormat::Contiguous);
  for (const auto& p : b->parameters()) EXPECT_TRUE(p.is_contiguous());
}

}  // namespace
