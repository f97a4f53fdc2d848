// posekd export: NPY writer, YAML generation (against ai8x.md 5.3), the ai8x checkpoints (checked
// by Debian's Python torch when available, including an independent integer forward), refusals.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>

#include "posekd/ai8x/policy.h"
#include "posekd/ai8x/simulate.h"
#include "posekd/ai8x/state_dict.h"
#include "posekd/core/error.h"
#include "posekd/export/ai8x_export.h"
#include "posekd/export/npy.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/student.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace posekd::deploy;
using posekd::model::make_student;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Runs a shell command; returns its exit status and (stdout+stderr) in `out`.
int run(const std::string& cmd, std::string* out) {
  auto r = posekd::testing::run_command(cmd);
  if (out) *out = std::move(r.out);
  return r.rc;
}

bool python_has_torch() {
  static const int ok = run("/usr/bin/python3 -c 'import torch, numpy, yaml' >/dev/null", nullptr);
  return ok == 0;
}

// A QAT ai85pose student: random init, BN fused + calibrated on random 1/128-grid batches.
std::shared_ptr<posekd::model::Student> qat_student(const std::string& arch = "ai85pose", int seed = 7) {
  torch::manual_seed(seed);
  auto s = make_student(arch);
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
  return s;
}

void save_ai8x_layout(const posekd::model::Student& s, const fs::path& path) {
  auto v = ai8x_checkpoint(s.arch(), 3, posekd::ai8x::state_dict(s), posekd::io::Value::dict());
  posekd::io::save_torch_file(path.string(), v);
}

}  // namespace

// ------------------------------------------------------------------------------------- NPY
TEST(Npy, HeaderAndRoundTrip) {
  auto t = torch::arange(12 * 3 * 2, torch::kLong).view({12, 3, 2}) - 30;
  EXPECT_EQ(npy_header_dict(t), "{'descr': '<i8', 'fortran_order': False, 'shape': (12, 3, 2), }");
  EXPECT_EQ(npy_header_dict(torch::zeros({5}, torch::kFloat)),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }");
  auto dir = posekd::testing::temp_dir("npy");
  auto p = (dir / "a.npy").string();
  save_npy(p, t);
  const std::string bytes = slurp(p);
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t hl = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + hl) % 64, 0u);
  EXPECT_EQ(bytes[10 + hl - 1], '\n');
  EXPECT_EQ(bytes.size(), 10 + hl + 72 * 8);
  auto back = load_npy(p);
  EXPECT_EQ(back.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(back, t));
  auto f = torch::randn({4, 5}, torch::kDouble);
  save_npy(p, f);
  EXPECT_TRUE(torch::equal(load_npy(p), f));
}

TEST(Npy, BadFilesAreClearErrors) {
  auto dir = posekd::testing::temp_dir("npybad");
  auto p = (dir / "bad.npy").string();
  std::ofstream(p) << "not numpy at all";
  try {
    load_npy(p);
    FAIL() << "no error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos);
  }
  save_npy(p, torch::zeros({4, 4}, torch::kLong));
  std::string b = slurp(p);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << b.substr(0, b.size() - 8);  // truncated data
  EXPECT_THROW(load_npy(p), posekd::Error);
  EXPECT_THROW(load_npy((dir / "missing.npy").string()), posekd::Error);
  EXPECT_THROW(save_npy(p, torch::zeros({2}, torch::kComplexFloat)), posekd::Error);
}

// ------------------------------------------------------------------------------------- YAML
TEST(Yaml, ProcessorMasksFollowTheSpec) {
  EXPECT_EQ(processor_mask(12, false), 0xfffu);
  EXPECT_EQ(processor_mask(3, true), 0x111u);  // ai8x.md 4.4: CHW one per memory instance
  EXPECT_EQ(processor_mask(32, false), 0xffffffffu);
  EXPECT_EQ(processor_mask(48, false), 0x0000ffffffffffffull);
  EXPECT_EQ(processor_mask(64, false), 0xffffffffffffffffull);
  EXPECT_EQ(processor_mask(96, false), 0x0000ffffffffffffull);  // 96 channels: 48 processors
  EXPECT_EQ(output_processor_mask(19), 0x7ffffu);
  EXPECT_EQ(output_processor_mask(38), 0x3fffffffffull);
}

// The ai85pose layers must agree with the YAML that ai8xize accepted (ai8x.md 5.3, run C).
TEST(Yaml, Ai85PoseMatchesTheAcceptedYaml) {
  auto s = make_student("ai85pose");
  auto fit = check_fit(*s, device_limits("MAX78000"));
  auto layers = yaml_layers(*s, fit);
  ASSERT_EQ(layers.size(), 15u);
  const std::uint64_t all = ~0ull;
  const std::uint64_t procs[15] = {
      0xfff, 0xffffffff,           0xffffffff, all, all, all, all, all, all, all, all, all, 0x0000ffffffffffffull,
      all,   0x0000ffffffffffffull};
  const std::uint32_t outs[15] = {0x4000, 0, 0x4000, 0,      0x4000, 0,      0x4000, 0,
                                  0x4000, 0, 0x4000, 0x0000, 0x1000, 0x2000, 0x3000};
  for (int i = 0; i < 15; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(layers[i].processors, procs[i]);
    EXPECT_EQ(layers[i].out_offset, outs[i]);
    EXPECT_EQ(layers[i].max_pool, (i == 3 || i == 5) ? 2 : 0);
    EXPECT_EQ(layers[i].kernel_size, (i == 12 || i == 14) ? 1 : 3);
    EXPECT_EQ(layers[i].pad, (i == 12 || i == 14) ? 0 : 1);
    EXPECT_EQ(layers[i].wide, i == 12 || i == 14);
    EXPECT_EQ(layers[i].activate, (i == 12 || i == 14) ? "None" : "ReLU");
    EXPECT_EQ(layers[i].data_format, i == 0 ? "HWC" : "");
    EXPECT_EQ(layers[i].in_sequences.empty(), i != 13);
  }
  EXPECT_EQ(layers[12].output_processors, 0x7ffffu);
  EXPECT_EQ(layers[14].output_processors, 0x3fffffffffull);
  EXPECT_EQ(layers[13].in_sequences[0], "cpm3");
  EXPECT_EQ(layers[13].in_offset, 0x4000);

  // The text parses with yaml-cpp and says the same.
  YAML::Node y = YAML::Load(network_yaml("ai85pose", "coco_pose", layers));
  EXPECT_EQ(y["arch"].as<std::string>(), "ai85pose");
  ASSERT_EQ(y["layers"].size(), 15u);
  for (std::size_t i = 0; i < 15; ++i) {
    SCOPED_TRACE(i);
    const auto l = y["layers"][i];
    EXPECT_EQ(std::stoull(l["processors"].as<std::string>(), nullptr, 0), procs[i]);
    EXPECT_EQ(std::stoul(l["out_offset"].as<std::string>(), nullptr, 0), outs[i]);
    EXPECT_EQ(l["kernel_size"].as<std::string>(), (i == 12 || i == 14) ? "1x1" : "3x3");
    EXPECT_EQ(static_cast<bool>(l["output_width"]), i == 12 || i == 14);
    EXPECT_EQ(l["operation"].as<std::string>(), "Conv2d");
  }
  EXPECT_EQ(y["layers"][0]["data_format"].as<std::string>(), "HWC");
  EXPECT_EQ(y["layers"][12]["output_width"].as<int>(), 32);
  EXPECT_TRUE(y["layers"][14]["output"].as<bool>());
  EXPECT_EQ(y["layers"][13]["in_sequences"][0].as<std::string>(), "cpm3");
  EXPECT_EQ(std::stoul(y["layers"][13]["in_offset"].as<std::string>(), nullptr, 0), 0x4000u);
}

TEST(Yaml, SeedFirstLayerIsChwWithStride) {
  auto s = make_student("seed");
  auto layers = yaml_layers(*s, check_fit(*s, device_limits("MAX78000")));
  EXPECT_EQ(layers[0].data_format, "CHW");
  EXPECT_EQ(layers[0].processors, 0x111u);
  EXPECT_EQ(layers[0].stride, 2);
  EXPECT_EQ(layers[8].kernel_size, 1);                     // cpm1 1x1 in the seed code
  EXPECT_EQ(layers[8].processors, 0xffffffffffffffffull);  // 128 channels: 64 processors
}

// ------------------------------------------------------------------------------------- samples
TEST(Sample, SyntheticIsDeterministicFoldedAndInRange) {
  auto a = synthetic_image_int(), b = synthetic_image_int();
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{3, 128, 128}));
  EXPECT_GE(a.min().item<int64_t>(), -128);
  EXPECT_LE(a.max().item<int64_t>(), 127);
  EXPECT_GT(std::get<0>(torch::unique_consecutive(a.flatten())).size(0), 100);  // not a constant image
  auto s = make_student("ai85pose");
  auto f = student_sample(*s, a);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{12, 64, 64}));
  // folded channel (i*2+j)*3+c holds x[c, i::2, j::2]
  EXPECT_EQ(f[(1 * 2 + 0) * 3 + 2][5][7].item<int64_t>(), a[2][11][14].item<int64_t>());
  EXPECT_EQ(f[(1 * 2 + 1) * 3 + 1][63][0].item<int64_t>(), a[1][127][1].item<int64_t>());
}

TEST(Sample, RealImageIsPixelMinus128) {
  POSEKD_REQUIRE_FIXTURE(img, "coco-sample/val2017/000000000785.jpg");
  auto x = image_int(img.string());
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 128, 128}));
  EXPECT_GE(x.min().item<int64_t>(), -128);
  EXPECT_LE(x.max().item<int64_t>(), 127);
  // 640x425 -> 128x85, rows 85.. are padding (pixel 128 -> 0)
  EXPECT_EQ(x.index({torch::indexing::Slice(), torch::indexing::Slice(85, 128)}).abs().max().item<int64_t>(), 0);
  EXPECT_GT(x.index({torch::indexing::Slice(), torch::indexing::Slice(0, 85)}).abs().max().item<int64_t>(), 0);
  auto dir = posekd::testing::temp_dir("img");
  std::ofstream((dir / "x.jpg").string()) << "garbage";
  EXPECT_THROW(image_int((dir / "x.jpg").string()), posekd::Error);
  EXPECT_THROW(image_int((dir / "none.jpg").string()), posekd::Error);
}

// ------------------------------------------------------------------------------------- refusals
TEST(Export, NonFittingSeedIsRefusedNamingTheRules) {
  auto s = make_student("seed");
  auto dir = posekd::testing::temp_dir("seedref");
  ExportOptions o;
  o.source = "seed.pth";
  try {
    export_ai8x(*s, device_limits("MAX78000"), (dir / "out").string(), o);
    FAIL() << "no error";
  } catch (const posekd::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("seed.pth"), std::string::npos) << m;
    EXPECT_NE(m.find("does not fit MAX78000"), std::string::npos) << m;
    EXPECT_NE(m.find("conv1: Conv2d stride 2"), std::string::npos) << m;
    EXPECT_NE(m.find("processor 0 needs 1436 kernel words > 768"), std::string::npos) << m;
    EXPECT_NE(m.find("--force"), std::string::npos) << m;
  }
  EXPECT_FALSE(fs::exists(dir / "out"));
  // with --force the fit passes, but the float model is still refused
  o.force = true;
  try {
    export_ai8x(*s, device_limits("MAX78000"), (dir / "out").string(), o);
    FAIL() << "no error";
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("float (non-QAT)"), std::string::npos) << e.what();
  }
}

TEST(Export, FloatCheckpointIsRefusedByTheCli) {
  if (!fs::exists(posekd::testing::cli())) GTEST_SKIP() << "posekd program not built (target posekd_cli)";
  auto dir = posekd::testing::temp_dir("floatref");
  auto s = make_student("ai85pose");
  save_ai8x_layout(*s, dir / "float.pth.tar");
  std::string out;
  int rc = run(posekd::testing::cli() + " export --checkpoint " + (dir / "float.pth.tar").string() + " --out " +
                   (dir / "out").string(),
               &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("float (non-QAT)"), std::string::npos) << out;
  EXPECT_NE(out.find("float.pth.tar"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir / "out" / "ai85pose-q8.pth.tar"));
  rc = run(posekd::testing::cli() + " export --checkpoint " + (dir / "nope.pth").string() + " --out " +
               (dir / "out").string(),
           &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("nope.pth"), std::string::npos) << out;
  // a non-fitting arch is refused by the fit check first, naming the broken rules
  save_ai8x_layout(*make_student("seed"), dir / "seed.pth.tar");
  rc = run(posekd::testing::cli() + " export --checkpoint " + (dir / "seed.pth.tar").string() + " --out " +
               (dir / "out").string(),
           &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("seed does not fit MAX78000"), std::string::npos) << out;
  EXPECT_NE(out.find("conv1: Conv2d stride 2"), std::string::npos) << out;
  EXPECT_NE(out.find("weights: 655776 bytes > 442368"), std::string::npos) << out;
  if (!HasFailure()) fs::remove_all(dir);
}

// ------------------------------------------------------------------------------------- end to end
namespace {

const char* kPyCheck = R"PY(
import sys, math, torch, numpy as np, yaml
d, name = sys.argv[1], sys.argv[2]
qat = torch.load(f"{d}/{name}-qat.pth.tar")
q8 = torch.load(f"{d}/{name}-q8.pth.tar")
for c in (qat, q8):
    assert type(c) is dict and set(c) == {"arch", "epoch", "state_dict", "extras"}, c.keys()
    assert c["arch"] == name and isinstance(c["epoch"], int), (c["arch"], c["epoch"])
assert qat["extras"] == {} and q8["extras"] == {"clipping_method": "MAX_BIT_SHIFT"}
sq, s8 = qat["state_dict"], q8["state_dict"]
assert list(sq) == list(s8), "key order differs"
assert not any(".bn." in k for k in sq)
wkeys = [k for k in sq if k.endswith("weight")]
for k in wkeys:
    L = k[: -len(".op.weight")]
    assert sq[L + ".weight_bits"].dtype == torch.int64 and int(sq[L + ".weight_bits"]) == 8
    assert sq[L + ".activation_threshold"].dim() == 0 and sq[L + ".final_scale"].dim() == 0
    assert sq[L + ".quantize_activation"].dtype == torch.bool
    # quantize.py (MAX_BIT_SHIFT), independently
    W, b = sq[L + ".op.weight"], sq[L + ".op.bias"]
    p = torch.cat((W.flatten(), b.flatten())).abs()
    bs = max(-15, min(15, math.floor(math.log2(1.0 / torch.quantile(p, float(sq[L + ".shift_quantile"])).item()))))
    Wi = torch.clamp(torch.floor(W * 128 * 2.0 ** bs + 0.5), -128, 127)
    Bi = torch.clamp(torch.floor(b * 2.0 ** bs * 128 + 0.5), -128, 127) * 128
    assert torch.equal(s8[L + ".op.weight"], Wi), L
    assert torch.equal(s8[L + ".op.bias"], Bi), L
    os_ = max(-15, min(15, -bs - float(sq[L + ".activation_threshold"])))
    assert s8[L + ".output_shift"].shape == (1,) and float(s8[L + ".output_shift"]) == os_, (L, os_)
cfg = yaml.safe_load(open(f"{d}/{name}.yaml"))
assert cfg["arch"] == name and cfg["dataset"]
layers = cfg["layers"]
assert len(layers) == len(wkeys), (len(layers), len(wkeys))
for l, k in zip(layers, wkeys):
    W = s8[k]
    assert k.startswith(l["name"] + "."), (l["name"], k)
    assert l["kernel_size"] == f"{W.shape[2]}x{W.shape[3]}"
    assert l["pad"] == (0 if W.shape[2] == 1 else 1)
    assert isinstance(l["processors"], int)
    if l.get("data_format", "HWC") == "HWC":
        assert bin(l["processors"]).count("1") >= W.shape[1]
    wide = l.get("output_width", 8) == 32
    assert wide == (l["activate"] == "None")
    if wide:
        assert l["output"] is True and l["output_processors"] == (1 << W.shape[0]) - 1
x = np.load(f"{d}/sample_{name}.npy")
assert x.dtype == np.int64 and x.ndim == 3 and x.min() >= -128 and x.max() <= 127, (x.dtype, x.shape)
# independent integer forward from the q8 checkpoint + YAML (ai8x.md 6.2)
def layer(t, l, k):
    L = k[: -len(".op.weight")]
    if l.get("max_pool"):
        t = torch.nn.functional.max_pool2d(t, l["max_pool"], l["pool_stride"])
    acc = torch.nn.functional.conv2d(t, s8[k].double(), padding=l["pad"]).long()
    acc = acc + s8[L + ".op.bias"].long().view(1, -1, 1, 1)
    if l.get("output_width", 8) == 32:
        return acc
    s = int(s8[L + ".output_shift"])
    v = torch.floor(acc.double() * 2.0 ** s / 128 + 0.5).clamp(-128, 127)
    if l["activate"] == "ReLU":
        v = v.clamp(min=0)
    return v.long()
t = torch.from_numpy(x).unsqueeze(0).double()
outs, names = {}, {}
prev = t
for l, k in zip(layers, wkeys):
    src = outs[l["in_sequences"][0]] if "in_sequences" in l else prev
    prev = layer(src.double(), l, k)
    outs[l["name"]] = prev
wide = [l["name"] for l in layers if l.get("output_width", 8) == 32]
heat, paf = np.load(f"{d}/sample_{name}_heat.npy"), np.load(f"{d}/sample_{name}_paf.npy")
assert heat.dtype == np.int64 and paf.dtype == np.int64
assert np.array_equal(outs[wide[0]][0].numpy(), heat), "heat differs"
assert np.array_equal(outs[wide[1]][0].numpy(), paf), "paf differs"
print("PYTHON-OK", len(layers), heat.shape, paf.shape, int(np.abs(heat).max()))
)PY";

}  // namespace

TEST(Export, Ai85PoseEndToEnd) {
  auto s = qat_student();
  auto dir = posekd::testing::temp_dir("e2e");
  const auto ck = dir / "qat.pth.tar";
  save_ai8x_layout(*s, ck);
  const fs::path out = dir / "out";
  if (fs::exists(posekd::testing::cli())) {
    std::string log;
    int rc =
        run(posekd::testing::cli() + " export --checkpoint " + ck.string() + " --device MAX78000 --out " + out.string(),
            &log);
    ASSERT_EQ(rc, 0) << log;
    EXPECT_NE(log.find("ai85pose.yaml"), std::string::npos) << log;
  } else {
    ExportOptions o;
    o.epoch = 3;
    o.source = ck.string();
    export_ai8x(*s, device_limits("MAX78000"), out.string(), o);
  }
  for (const char* f : {"ai85pose-qat.pth.tar", "ai85pose-q8.pth.tar", "ai85pose.yaml", "sample_ai85pose.npy",
                        "sample_ai85pose_heat.npy", "sample_ai85pose_paf.npy", "README.md"})
    ASSERT_TRUE(fs::exists(out / f)) << f;

  // checkpoints read back in C++: the state dicts C++ computed
  const auto qat_sd = posekd::ai8x::state_dict(*s);
  const auto q8_sd = posekd::ai8x::quantize_state_dict(qat_sd);
  auto qv = posekd::io::load_torch_file((out / "ai85pose-qat.pth.tar").string());
  auto q8v = posekd::io::load_torch_file((out / "ai85pose-q8.pth.tar").string());
  EXPECT_EQ(qv.at("arch").as_string(), "ai85pose");
  EXPECT_EQ(qv.at("epoch").as_int(), 3);
  EXPECT_EQ(q8v.at("extras").at("clipping_method").as_string(), "MAX_BIT_SHIFT");
  auto rq = posekd::io::to_state_dict(qv.at("state_dict"));
  auto r8 = posekd::io::to_state_dict(q8v.at("state_dict"));
  ASSERT_EQ(rq.size(), qat_sd.size());
  ASSERT_EQ(r8.size(), q8_sd.size());
  for (std::size_t i = 0; i < rq.size(); ++i) {
    EXPECT_EQ(rq[i].first, qat_sd[i].first);
    EXPECT_EQ(rq[i].second.scalar_type(), qat_sd[i].second.scalar_type()) << rq[i].first;
    EXPECT_TRUE(torch::equal(rq[i].second, qat_sd[i].second)) << rq[i].first;
    EXPECT_EQ(r8[i].first, q8_sd[i].first);
    EXPECT_TRUE(torch::equal(r8[i].second, q8_sd[i].second)) << r8[i].first;
  }

  // sample and expected outputs vs the model's own integer forward (ai8x::integer_forward path)
  auto x = load_npy((out / "sample_ai85pose.npy").string());
  EXPECT_TRUE(torch::equal(x, student_sample(*s, synthetic_image_int())));
  auto is = posekd::model::integer_student(*s, q8_sd);
  auto ref = posekd::model::integer_forward(is, x.unsqueeze(0));
  auto heat = load_npy((out / "sample_ai85pose_heat.npy").string());
  auto paf = load_npy((out / "sample_ai85pose_paf.npy").string());
  EXPECT_EQ(heat.sizes(), (std::vector<int64_t>{19, 16, 16}));
  EXPECT_EQ(paf.sizes(), (std::vector<int64_t>{38, 16, 16}));
  const double fa = std::ldexp(1.0, is.head_a.back().final_scale), fb = std::ldexp(1.0, is.head_b.back().final_scale);
  EXPECT_TRUE(torch::equal(heat.to(torch::kDouble) * fa, ref.heat[0]));
  EXPECT_TRUE(torch::equal(paf.to(torch::kDouble) * fb, ref.paf[0]));
  EXPECT_GT(heat.abs().max().item<int64_t>(), 0);  // a live network, not all zeros

  // the integer outputs agree with the QAT float forward: wide acc / 2^14 * 2^fs = QAT output
  {
    torch::NoGradGuard ng;
    auto y = s->forward(x.unsqueeze(0).to(torch::kFloat) / 128.0);
    auto qa = (heat.to(torch::kDouble) * fa / 16384.0).to(torch::kFloat);
    const double scale = y.heat.abs().max().item<double>() + 1e-9;
    EXPECT_LT((qa - y.heat[0]).abs().max().item<double>() / scale, 0.05);
  }

  const std::string readme = slurp(out / "README.md");
  EXPECT_NE(readme.find("ai8xize.py --device MAX78000 --checkpoint-file "), std::string::npos);
  EXPECT_NE(readme.find("--config-file " + fs::absolute(out / "ai85pose.yaml").string()), std::string::npos);
  EXPECT_NE(readme.find("--sample-input "), std::string::npos);
  EXPECT_NE(readme.find("--test-dir "), std::string::npos);
  EXPECT_NE(readme.find("--prefix ai85pose"), std::string::npos);
  EXPECT_NE(readme.find("quantize.py "), std::string::npos);

  // Python (Debian's torch): loads everything and re-derives quantize.py + the integer forward.
  if (!python_has_torch()) {
    std::printf("[  SKIPPED ] python part: /usr/bin/python3 lacks torch/numpy/yaml\n");
    if (!HasFailure()) fs::remove_all(dir);
    return;
  }
  const auto script = dir / "check.py";
  std::ofstream(script.string()) << kPyCheck;
  std::string pyout;
  int rc = run("/usr/bin/python3 " + script.string() + " " + out.string() + " ai85pose", &pyout);
  EXPECT_EQ(rc, 0) << pyout;
  EXPECT_NE(pyout.find("PYTHON-OK 15"), std::string::npos) << pyout;
  if (!HasFailure()) fs::remove_all(dir);
}

TEST(Export, RealSampleImageAndNameOption) {
  POSEKD_REQUIRE_FIXTURE(img, "coco-sample/val2017/000000196141.jpg");
  auto s = qat_student("ai85pose", 11);
  auto dir = posekd::testing::temp_dir("img-e2e");
  ExportOptions o;
  o.name = "posefit";
  o.sample_image = img.string();
  auto r = export_ai8x(*s, device_limits("MAX78000"), (dir / "o").string(), o);
  EXPECT_TRUE(r.fit.fits());
  EXPECT_EQ(fs::path(r.q8_path).filename(), "posefit-q8.pth.tar");
  auto x = load_npy(r.sample_path);
  EXPECT_TRUE(torch::equal(x, student_sample(*s, image_int(img.string()))));
  EXPECT_FALSE(torch::equal(x, student_sample(*s, synthetic_image_int())));
  auto y = YAML::LoadFile(r.yaml_path);
  EXPECT_EQ(y["arch"].as<std::string>(), "posefit");
  auto c = posekd::io::load_torch_file(r.qat_path);
  EXPECT_EQ(c.at("arch").as_string(), "posefit");
  if (python_has_torch()) {
    const auto script = dir / "check.py";
    std::ofstream(script.string()) << kPyCheck;
    std::string pyout;
    EXPECT_EQ(run("/usr/bin/python3 " + script.string() + " " + (dir / "o").string() + " posefit", &pyout), 0) << pyout;
  }
  if (!HasFailure()) fs::remove_all(dir);
}
