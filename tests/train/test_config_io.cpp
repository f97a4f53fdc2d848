// train/config_io.h: every table key round-trips through to_yaml / from_yaml with non-default
// values, unknown keys and wrong types are one-line errors naming the file and the key.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <type_traits>

#include "posekd/core/error.h"
#include "posekd/train/config_io.h"
#include "test_util.h"

namespace {

using namespace posekd::train;

// Gives field i a value that differs from every default and from the other fields.
template <class Cfg>
void set_distinct_values(Cfg& c) {
  int i = 0;
  for (const auto& f : config_fields(&c)) {
    ++i;
    std::visit(
        [i, &f](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::string>) {
            *p = std::string("dir with space/") + f.key + ": #" + std::to_string(i);
          } else if constexpr (std::is_same_v<T, bool>) {
            *p = !*p;
          } else if constexpr (std::is_same_v<T, double>) {
            *p = 0.1 * i + 1.0 / 3.0;  // not short in decimal: the formatting must round-trip
          } else if constexpr (std::is_unsigned_v<T>) {
            *p = 18446744073709551000ull - i;
          } else {
            *p = 1000 + i;
          }
        },
        f.ref(c));
  }
}

template <class Cfg>
void expect_equal_fields(Cfg& a, Cfg& b) {
  const auto& fields = config_fields(&a);
  for (const auto& f : fields) {
    SCOPED_TRACE(f.key);
    std::visit(
        [&](auto* pa) {
          using P = decltype(pa);
          auto* pb = std::get<P>(f.ref(b));
          EXPECT_EQ(*pa, *pb);
        },
        f.ref(a));
  }
}

template <class Cfg>
void round_trip() {
  Cfg a;
  set_distinct_values(a);
  const std::string y = to_yaml(a, {"derived: 1"});
  Cfg b;
  from_yaml(y, "mem.yaml", b);
  expect_equal_fields(a, b);
  EXPECT_EQ(to_yaml(b, {"derived: 1"}), y);
  // Every key appears once in the text, in table order.
  size_t pos = 0;
  std::set<std::string> keys;
  for (const auto& f : config_fields(&a)) {
    EXPECT_TRUE(keys.insert(f.key).second) << "duplicate key " << f.key;
    const auto at = y.find(std::string("\n") + f.key + ":", pos);
    ASSERT_NE(at, std::string::npos) << f.key;
    pos = at + 1;
  }
  // The defaults round-trip too (empty strings, 0, false).
  Cfg d, e;
  set_distinct_values(e);
  from_yaml(to_yaml(d), "defaults.yaml", e);
  expect_equal_fields(d, e);
}

std::string error_of(const std::string& text) {
  TrainConfig c;
  try {
    from_yaml(text, "cfg.yaml", c);
  } catch (const posekd::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ConfigIo, TrainConfigRoundTripsEveryField) { round_trip<TrainConfig>(); }
TEST(ConfigIo, TeacherTrainConfigRoundTripsEveryField) { round_trip<TeacherTrainConfig>(); }
TEST(ConfigIo, DemoOptionsRoundTripsEveryField) { round_trip<DemoOptions>(); }

TEST(ConfigIo, KeysOfTheTrainTableNameTheirFields) {
  TrainConfig c;
  from_yaml(
      "batch_size: 3\nlr: 2.5e-4\nval_images: /v\nteacher_cache: t.bin\nno_qat: true\nseed: 9\n"
      "rank: 1\nmaster_addr: h\ndist_timeout: 7\n",
      "x.yaml", c);
  EXPECT_EQ(c.batch_size, 3);
  EXPECT_DOUBLE_EQ(c.lr, 2.5e-4);
  EXPECT_EQ(c.val_images, "/v");
  EXPECT_EQ(c.teacher_cache, "t.bin");
  EXPECT_TRUE(c.no_qat);
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(c.dist_rank, 1);
  EXPECT_EQ(c.dist_master_addr, "h");
  EXPECT_DOUBLE_EQ(c.dist_timeout, 7);
  EXPECT_EQ(c.total_batches, 15000);  // absent keys keep their value
  // An empty file (or only comments) sets nothing.
  TrainConfig d;
  from_yaml("# nothing\n", "e.yaml", d);
  EXPECT_EQ(d.batch_size, 8);
  // Doubles are written in their shortest exact form.
  TrainConfig f;
  f.lr = 0.001;
  f.teacher_input_scale = 1;
  const auto y = to_yaml(f);
  EXPECT_NE(y.find("\nlr: 0.001\n"), std::string::npos) << y;
  EXPECT_NE(y.find("\nteacher_input_scale: 1.0\n"), std::string::npos) << y;
}

TEST(ConfigIo, ErrorsNameTheFileAndTheKey) {
  EXPECT_EQ(error_of("batch_sise: 4\n"),
            "cfg.yaml: unknown key 'batch_sise' (not an option of posekd train); did you mean 'batch_size'?");
  EXPECT_EQ(error_of("frobnicate: 1\n"), "cfg.yaml: unknown key 'frobnicate' (not an option of posekd train)");
  EXPECT_EQ(error_of("batch_size: eight\n"), "cfg.yaml: key 'batch_size': expected an integer, got 'eight'");
  EXPECT_EQ(error_of("batch_size: 2.5\n"), "cfg.yaml: key 'batch_size': expected an integer, got '2.5'");
  EXPECT_EQ(error_of("batch_size: 99999999999\n"),
            "cfg.yaml: key 'batch_size': expected an integer, got '99999999999'");
  EXPECT_EQ(error_of("seed: -1\n"), "cfg.yaml: key 'seed': expected a non-negative integer, got '-1'");
  EXPECT_EQ(error_of("lr: fast\n"), "cfg.yaml: key 'lr': expected a number, got 'fast'");
  EXPECT_EQ(error_of("no_qat: maybe\n"), "cfg.yaml: key 'no_qat': expected true or false, got 'maybe'");
  EXPECT_EQ(error_of("arch: [seed, ai85pose]\n"), "cfg.yaml: key 'arch': expected a single value, got a list or map");
  EXPECT_EQ(error_of("lr: 1\nlr: 2\n"), "cfg.yaml: key 'lr' is given twice");
  EXPECT_EQ(error_of("- a\n- b\n"), "cfg.yaml: expected a map of option: value (e.g. batch_size: 8)");
  EXPECT_NE(error_of("lr: [1\n").find("cfg.yaml: line "), std::string::npos);
  // Files: a missing one names itself.
  TrainConfig c;
  try {
    load_yaml_file("/nonexistent/x.yaml", c);
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/x.yaml: cannot open the configuration file");
  }
}

TEST(ConfigIo, FilesRoundTrip) {
  auto dir = posekd::testing::temp_dir("configio");
  TeacherTrainConfig a;
  a.input_size = 96;
  a.lr_end_factor = 0.05;
  save_yaml_file((dir / "t.yaml").string(), a, {"note"});
  TeacherTrainConfig b;
  load_yaml_file((dir / "t.yaml").string(), b);
  EXPECT_EQ(b.input_size, 96);
  EXPECT_DOUBLE_EQ(b.lr_end_factor, 0.05);
  EXPECT_EQ(posekd::testing::read_text(dir / "t.yaml").rfind("# posekd train-teacher options", 0), 0u);
  EXPECT_EQ(config_key("--batch-size"), "batch_size");
  std::filesystem::remove_all(dir);
}
