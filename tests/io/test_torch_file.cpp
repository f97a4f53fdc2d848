// torch.save files: both fixture formats, Python-written files of every dtype and with views,
// truncated/corrupted files, save->load round trips, atomic writes, and Python reading our files.
#include <gtest/gtest.h>

#include <unistd.h>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "posekd/core/error.h"
#include "posekd/io/torch_file.h"
#include "posekd/io/value.h"
#include "python_util.h"
#include "test_util.h"

namespace {

using posekd::io::Value;
using posekd::iotest::find_python;
using posekd::iotest::run_python;
namespace fs = std::filesystem;

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_bytes(const fs::path& p, const std::string& b) { std::ofstream(p, std::ios::binary) << b; }

// Files written by Python torch.save (zip and legacy) with every dtype and views; generated once.
const fs::path& python_files() {
  static fs::path dir = [] {
    std::string py = find_python("torch");
    if (py.empty()) return fs::path();
    fs::path d = posekd::testing::temp_dir("pyfiles");
    std::string out;
    std::string script = R"(
import torch, collections
x = torch.arange(20, dtype=torch.float32).view(4, 5)
d = {'x': x, 'view': x[1:, 2:], 'tr': x.t(),
     'f64': torch.arange(6, dtype=torch.float64).view(2, 3) / 4,
     'f16': torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16),
     'i64': torch.tensor([-(2 ** 40), 7]), 'i32': torch.tensor([-3, 2 ** 30], dtype=torch.int32),
     'u8': torch.tensor([0, 255], dtype=torch.uint8), 'i8': torch.tensor([-128, 127], dtype=torch.int8),
     'b': torch.tensor([True, False, True]), 'empty': torch.zeros(0, 3), 'scalar': torch.tensor(3.25),
     'param': torch.nn.Parameter(torch.ones(2)),
     'od': collections.OrderedDict([('w', torch.ones(1)), ('v', torch.zeros(2))]),
     'n': 5, 'name': 'abc', 'lst': [1, 2.5]}
torch.save(d, ')" + (d / "zip.pth").string() +
                         R"(')
torch.save(d, ')" + (d / "legacy.pth").string() +
                         R"(', _use_new_zipfile_serialization=False)
)";
    if (run_python(py, d, script, &out) != 0) {
      std::fprintf(stderr, "python failed: %s\n", out.c_str());
      return fs::path();
    }
    return d;
  }();
  return dir;
}

void check_python_content(const Value& v) {
  ASSERT_TRUE(v.is_dict());
  torch::Tensor x = v.at("x").as_tensor();
  EXPECT_TRUE(torch::equal(x, torch::arange(20, torch::kFloat32).view({4, 5})));
  torch::Tensor view = v.at("view").as_tensor();
  EXPECT_EQ(view.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_TRUE(torch::equal(view, x.slice(0, 1).slice(1, 2)));
  // Views share one storage: same memory, offset 1*5+2 elements.
  EXPECT_EQ(static_cast<float*>(view.data_ptr()), static_cast<float*>(x.data_ptr()) + 7);
  torch::Tensor tr = v.at("tr").as_tensor();
  EXPECT_EQ(tr.strides(), (std::vector<int64_t>{1, 5}));
  EXPECT_EQ(tr.data_ptr(), x.data_ptr());
  EXPECT_TRUE(torch::equal(tr, x.t()));
  EXPECT_TRUE(torch::allclose(v.at("f64").as_tensor(), torch::arange(6, torch::kFloat64).view({2, 3}) / 4));
  EXPECT_EQ(v.at("f64").as_tensor().scalar_type(), torch::kFloat64);
  torch::Tensor f16 = v.at("f16").as_tensor();
  EXPECT_EQ(f16.scalar_type(), torch::kFloat16);
  EXPECT_EQ(f16[2].item<float>(), 65504.f);
  EXPECT_EQ(f16[1].item<float>(), -2.f);
  EXPECT_EQ(v.at("i64").as_tensor()[0].item<int64_t>(), -(int64_t(1) << 40));
  EXPECT_EQ(v.at("i32").as_tensor().scalar_type(), torch::kInt32);
  EXPECT_EQ(v.at("i32").as_tensor()[1].item<int32_t>(), 1 << 30);
  EXPECT_EQ(v.at("u8").as_tensor()[1].item<uint8_t>(), 255);
  EXPECT_EQ(v.at("i8").as_tensor()[0].item<int8_t>(), -128);
  torch::Tensor b = v.at("b").as_tensor();
  EXPECT_EQ(b.scalar_type(), torch::kBool);
  EXPECT_TRUE(b[0].item<bool>());
  EXPECT_FALSE(b[1].item<bool>());
  EXPECT_EQ(v.at("empty").as_tensor().sizes(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(v.at("scalar").as_tensor().dim(), 0);
  EXPECT_EQ(v.at("scalar").as_tensor().item<float>(), 3.25f);
  EXPECT_TRUE(torch::equal(v.at("param").as_tensor(), torch::ones(2)));
  EXPECT_EQ(v.at("od").type_name(), "collections.OrderedDict");
  EXPECT_EQ(v.at("od").dict_data().items[1].first.as_string(), "v");
  EXPECT_EQ(v.at("n").as_int(), 5);
  EXPECT_EQ(v.at("name").as_string(), "abc");
  EXPECT_DOUBLE_EQ(v.at("lst").items()[1].as_double(), 2.5);
}

TEST(TorchFile, PythonWrittenZipAndLegacy) {
  const fs::path& dir = python_files();
  if (dir.empty()) GTEST_SKIP() << "python3 with torch (python3-torch) is not available";
  EXPECT_EQ(posekd::io::detect_format((dir / "zip.pth").string()), posekd::io::FileFormat::Zip);
  EXPECT_EQ(posekd::io::detect_format((dir / "legacy.pth").string()), posekd::io::FileFormat::Legacy);
  {
    SCOPED_TRACE("zip");
    check_python_content(posekd::io::load_torch_file((dir / "zip.pth").string()));
  }
  {
    SCOPED_TRACE("legacy");
    check_python_content(posekd::io::load_torch_file((dir / "legacy.pth").string()));
  }
}

TEST(TorchFile, LegacyTeacherCheckpoint) {
  POSEKD_REQUIRE_FIXTURE(legacy, "teacher/teacher_checkpoint_legacy.pth");
  POSEKD_REQUIRE_FIXTURE(zip, "teacher/teacher_state_zip.pth");
  Value ck = posekd::io::load_torch_file(legacy.string());
  EXPECT_EQ(ck.at("iter").as_int(), 370000);
  EXPECT_EQ(ck.at("current_epoch").as_int(), 279);
  const Value& sd = ck.at("state_dict");
  EXPECT_EQ(sd.type_name(), "collections.OrderedDict");
  EXPECT_EQ(sd.size(), 426u);  // three refinement stages
  ASSERT_NE(sd.attr("_metadata"), nullptr);
  EXPECT_TRUE(sd.attr("_metadata")->is_dict());
  EXPECT_EQ(sd.dict_data().items[0].first.as_string(), "model.0.0.weight");
  // Optimizer: Adam state per parameter, one param group.
  const Value& opt = ck.at("optimizer");
  const Value& st0 = opt.at("state").at(0);
  EXPECT_EQ(st0.at("exp_avg").as_tensor().sizes(), (std::vector<int64_t>{32, 3, 3, 3}));
  EXPECT_EQ(opt.at("param_groups").size(), 1u);
  // Scheduler: MultiStepLR state with a collections.Counter placeholder.
  const Value& sched = ck.at("scheduler");
  const Value& ms = sched.at("milestones");
  ASSERT_TRUE(ms.is_object());
  EXPECT_EQ(ms.object_data().qualified(), "collections.Counter");
  const Value& counter = ms.object_data().args->items()[0];
  EXPECT_EQ(counter.at(200).as_int(), 1);
  EXPECT_DOUBLE_EQ(sched.at("gamma").as_double(), 0.333);
  // Asking a placeholder for a number names the class.
  try {
    ms.as_int("scheduler.milestones");
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("collections.Counter"), std::string::npos);
  }
  // The zip file holds the same 1-stage weights: every one of its 250 entries is identical.
  Value z = posekd::io::load_torch_file(zip.string());
  auto zsd = posekd::io::to_state_dict(z.at("state_dict"));
  ASSERT_EQ(zsd.size(), 250u);
  for (const auto& [name, t] : zsd) {
    const Value* lt = sd.find(name);
    ASSERT_NE(lt, nullptr) << name;
    EXPECT_TRUE(torch::equal(lt->as_tensor(), t)) << name;
  }
}

// Loading must throw posekd::Error (never crash, never another exception type).
void expect_load_error(const fs::path& p, const std::string& needle) {
  try {
    posekd::io::load_torch_file(p.string());
    ADD_FAILURE() << p << ": loaded without error";
  } catch (const posekd::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(p.string() + ": ", 0), 0u) << m;
    EXPECT_NE(m.find(needle), std::string::npos) << m;
  }
}

TEST(TorchFile, TruncatedFixturesGiveErrorsWithOffsets) {
  POSEKD_REQUIRE_FIXTURE(legacy, "teacher/teacher_checkpoint_legacy.pth");
  POSEKD_REQUIRE_FIXTURE(zip, "teacher/teacher_state_zip.pth");
  auto dir = posekd::testing::temp_dir("truncate");
  const std::string lb = read_bytes(legacy);
  for (size_t n : {size_t(0), size_t(10), size_t(15), size_t(30), size_t(140), size_t(5000), size_t(168029),
                   size_t(168030), size_t(168040), size_t(200000), lb.size() / 2, lb.size() - 1}) {
    SCOPED_TRACE("legacy truncated to " + std::to_string(n));
    fs::path p = dir / "legacy.pth";
    write_bytes(p, lb.substr(0, n));
    expect_load_error(p, n < 15 ? "at offset 0" : "at offset");
  }
  const std::string zb = read_bytes(zip);
  for (size_t n : {size_t(3), size_t(100), size_t(40000), zb.size() / 2, zb.size() - 30, zb.size() - 1}) {
    SCOPED_TRACE("zip truncated to " + std::to_string(n));
    fs::path p = dir / "zip.pth";
    write_bytes(p, zb.substr(0, n));
    expect_load_error(p, "at offset");
  }
  // A flipped byte inside a tensor record fails its CRC.
  std::string flipped = zb;
  flipped[50000] ^= 0x40;
  write_bytes(dir / "flip.pth", flipped);
  expect_load_error(dir / "flip.pth", "checksum mismatch");
  fs::remove_all(dir);
}

TEST(TorchFile, RandomCorruptionNeverCrashes) {
  const fs::path& pdir = python_files();
  if (pdir.empty()) GTEST_SKIP() << "python3 with torch (python3-torch) is not available";
  auto dir = posekd::testing::temp_dir("corrupt");
  std::mt19937 rng(7);
  int errors = 0, loads = 0;
  for (const char* name : {"zip.pth", "legacy.pth"}) {
    const std::string good = read_bytes(pdir / name);
    fs::path p = dir / name;
    for (int i = 0; i < 150; ++i) {
      std::string b = good;
      int flips = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < flips; ++k) b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
      if (i % 10 == 0) b.resize(rng() % b.size());
      write_bytes(p, b);
      try {
        posekd::io::load_torch_file(p.string());
        ++loads;
      } catch (const posekd::Error&) {
        ++errors;
      }
    }
  }
  EXPECT_GT(errors, 50);  // most corruptions are detected
  RecordProperty("errors", errors);
  RecordProperty("loads", loads);
  fs::remove_all(dir);
}

Value sample_value() {
  Value v = Value::dict();
  Value sd = Value::dict();
  sd.set("w", Value::tensor(torch::arange(12, torch::kFloat32).view({3, 4})));
  sd.set("w_t", Value::tensor(torch::arange(12, torch::kFloat32).view({3, 4}).t()));  // non-contiguous
  sd.set("d", Value::tensor(torch::arange(5, torch::kFloat64) / 3));
  sd.set("h", Value::tensor(torch::tensor({1.5, -0.25}).to(torch::kFloat16)));
  sd.set("l", Value::tensor(torch::tensor({int64_t(1) << 50, int64_t(-3)})));
  sd.set("i", Value::tensor(torch::tensor({7, -9}, torch::kInt32)));
  sd.set("u", Value::tensor(torch::tensor({0, 200}, torch::kInt32).to(torch::kUInt8)));
  sd.set("c", Value::tensor(torch::tensor({-100, 100}, torch::kInt32).to(torch::kInt8)));
  sd.set("b", Value::tensor(torch::tensor({1, 0, 1}, torch::kInt32).to(torch::kBool)));
  sd.set("s", Value::tensor(torch::tensor(2.5f)));
  sd.set("e", Value::tensor(torch::zeros({0, 4})));
  v.set("state_dict", sd);
  v.set("iter", Value::integer(370000));
  v.set("big", Value::integer(-(int64_t(1) << 45)));
  v.set("name", Value::string("posekd \xc3\xa9"));
  v.set("flags", Value::list({Value::boolean(true), Value::none(), Value::integer(-1), Value::integer(300),
                              Value::integer(70000)}));
  v.set("shape", Value::tuple({Value::integer(1), Value::integer(2)}));
  Value ik = Value::dict();
  ik.set(Value::integer(3), Value::string("three"));
  v.set("int_keys", ik);
  return v;
}

TEST(TorchFile, SaveLoadRoundTrip) {
  auto dir = posekd::testing::temp_dir("roundtrip");
  fs::path p = dir / "out.pth";
  Value v = sample_value();
  v.set("lr", Value::floating(4e-5));
  v.set("raw", Value::bytes(std::string("\x00\x01\x02", 3)));
  posekd::io::save_torch_file(p.string(), v);
  EXPECT_EQ(posekd::io::detect_format(p.string()), posekd::io::FileFormat::Zip);
  Value r = posekd::io::load_torch_file(p.string());
  const Value& a = v.at("state_dict");
  const Value& b = r.at("state_dict");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& ka = a.dict_data().items[i];
    const auto& kb = b.dict_data().items[i];
    EXPECT_EQ(ka.first.as_string(), kb.first.as_string());
    EXPECT_EQ(ka.second.as_tensor().scalar_type(), kb.second.as_tensor().scalar_type()) << ka.first.as_string();
    EXPECT_TRUE(torch::equal(ka.second.as_tensor(), kb.second.as_tensor())) << ka.first.as_string();
  }
  EXPECT_EQ(r.at("iter").as_int(), 370000);
  EXPECT_EQ(r.at("big").as_int(), -(int64_t(1) << 45));
  EXPECT_EQ(r.at("name").as_string(), "posekd \xc3\xa9");
  EXPECT_DOUBLE_EQ(r.at("lr").as_double(), 4e-5);
  EXPECT_EQ(r.at("raw").as_bytes(), std::string("\x00\x01\x02", 3));
  const auto& flags = r.at("flags").items();
  ASSERT_EQ(flags.size(), 5u);
  EXPECT_TRUE(flags[0].as_bool());
  EXPECT_TRUE(flags[1].is_none());
  EXPECT_EQ(flags[2].as_int(), -1);
  EXPECT_EQ(flags[3].as_int(), 300);
  EXPECT_EQ(flags[4].as_int(), 70000);
  EXPECT_TRUE(r.at("shape").is_tuple());
  EXPECT_EQ(r.at("int_keys").at(3).as_string(), "three");
  EXPECT_EQ(r.at("state_dict").type_name(), "dict");  // plain dict, never OrderedDict
  // StateDict helpers keep the order.
  posekd::io::StateDict sd = {{"b", torch::ones(2)}, {"a", torch::zeros(1)}};
  auto back = posekd::io::to_state_dict(posekd::io::to_value(sd));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].first, "b");
  EXPECT_TRUE(torch::equal(back[0].second, torch::ones(2)));
  try {
    posekd::io::to_state_dict(r, "out.pth");
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("out.pth['state_dict']: expected tensor, got dict"), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

TEST(TorchFile, AtomicSaveKeepsPreviousFileOnFailure) {
  auto dir = posekd::testing::temp_dir("atomic");
  fs::path p = dir / "ck.pth";
  Value first = Value::dict();
  first.set("x", Value::tensor(torch::ones({2, 2})));
  posekd::io::save_torch_file(p.string(), first);
  // 1) An unsaveable value (a placeholder) fails before touching the file.
  Value bad = Value::dict();
  bad.set("obj", Value::object("collections", "Counter"));
  try {
    posekd::io::save_torch_file(p.string(), bad);
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("collections.Counter"), std::string::npos) << e.what();
  }
  // 2) The temporary file cannot be created (a directory is in the way).
  fs::create_directories(p.string() + ".tmp." + std::to_string(::getpid()));
  Value second = Value::dict();
  second.set("x", Value::tensor(torch::zeros({3})));
  try {
    posekd::io::save_torch_file(p.string(), second);
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(p.string() + ": ", 0), 0u) << e.what();
  }
  // 3) A directory that does not exist.
  EXPECT_THROW(posekd::io::save_torch_file((dir / "no" / "such" / "f.pth").string(), second), posekd::Error);
  Value still = posekd::io::load_torch_file(p.string());
  EXPECT_TRUE(torch::equal(still.at("x").as_tensor(), torch::ones({2, 2})));
  // No temporary files left besides the blocking directory.
  int n = 0;
  for (auto& e : fs::directory_iterator(dir)) n += e.is_regular_file();
  EXPECT_EQ(n, 1);
  fs::remove_all(dir);
}

TEST(TorchFile, PythonReadsOurFilesAndChecksumIsVerified) {
  std::string py = find_python("torch");
  if (py.empty()) GTEST_SKIP() << "python3 with torch (python3-torch) is not available";
  auto dir = posekd::testing::temp_dir("pyread");
  fs::path p = dir / "ours.pth";
  Value v = sample_value();  // no float scalars: torch 1.13's weights_only unpickler rejects BINFLOAT
  posekd::io::save_torch_file(p.string(), v);
  std::string out;
  std::string script = R"(
import torch, inspect, zipfile, sys
p = ')" + p.string() + R"('
def check(d):
    sd = d['state_dict']
    assert type(d) is dict and type(sd) is dict, (type(d), type(sd))
    w = torch.arange(12, dtype=torch.float32).view(3, 4)
    assert torch.equal(sd['w'], w)
    assert torch.equal(sd['w_t'], w.t())
    assert torch.equal(sd['d'], torch.arange(5, dtype=torch.float64) / 3)
    assert sd['h'].dtype == torch.float16 and sd['h'].tolist() == [1.5, -0.25]
    assert sd['l'].tolist() == [2 ** 50, -3]
    assert sd['i'].dtype == torch.int32 and sd['i'].tolist() == [7, -9]
    assert sd['u'].dtype == torch.uint8 and sd['u'].tolist() == [0, 200]
    assert sd['c'].dtype == torch.int8 and sd['c'].tolist() == [-100, 100]
    assert sd['b'].dtype == torch.bool and sd['b'].tolist() == [True, False, True]
    assert sd['s'].dim() == 0 and sd['s'].item() == 2.5
    assert tuple(sd['e'].shape) == (0, 4)
    assert d['iter'] == 370000 and d['big'] == -2 ** 45
    assert d['name'] == 'posekd \u00e9'
    assert d['flags'] == [True, None, -1, 300, 70000]
    assert d['shape'] == (1, 2) and d['int_keys'] == {3: 'three'}
check(torch.load(p))
print('plain ok')
if 'weights_only' in inspect.signature(torch.load).parameters:
    check(torch.load(p, weights_only=True))
    print('weights_only ok')
# Rewrite the archive with a wrong posekd checksum (valid zip CRCs) for the C++ side.
zin = zipfile.ZipFile(p)
zout = zipfile.ZipFile(p + '.bad', 'w', zipfile.ZIP_STORED)
for info in zin.infolist():
    data = zin.read(info.filename)
    if info.filename.endswith('posekd_checksum'):
        assert data.startswith(b'crc32 '), data
        data = b'crc32 00000000\n' if data != b'crc32 00000000\n' else b'crc32 00000001\n'
    zout.writestr(info.filename, data)
zout.close()
)";
  ASSERT_EQ(run_python(py, dir, script, &out), 0) << out;
  EXPECT_NE(out.find("plain ok"), std::string::npos) << out;
  if (out.find("weights_only ok") == std::string::npos) std::printf("note: torch.load has no weights_only\n");
  expect_load_error(dir / "ours.pth.bad", "checksum mismatch");
  fs::remove_all(dir);
}

TEST(TorchFile, NotATorchFile) {
  auto dir = posekd::testing::temp_dir("notorch");
  write_bytes(dir / "a.txt", "hello world");
  expect_load_error(dir / "a.txt", "not a torch.save file");
  EXPECT_THROW(posekd::io::load_torch_file((dir / "missing.pth").string()), posekd::Error);
  fs::remove_all(dir);
}

}  // namespace
