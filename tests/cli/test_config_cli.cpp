// `--config FILE.yaml` / `--print-config` of train, train-teacher and demo: every command-line option
// has a YAML key, the file sets options, the command line overrides the file, the printed YAML reads
// back to the same options.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <regex>
#include <set>
#include <string>

#include "posekd/train/config_io.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

struct CfgRun {
  int rc = -1;
  std::string out, err;
};

CfgRun run_cfg_cli(const std::string& args) {
  auto dir = posekd::testing::temp_dir("cfgcli");
  const fs::path o = dir / "out.txt", e = dir / "err.txt";
  const int rc =
      std::system((posekd::testing::cli() + " " + args + " > '" + o.string() + "' 2> '" + e.string() + "'").c_str());
  CfgRun r{WEXITSTATUS(rc), posekd::testing::read_text(o), posekd::testing::read_text(e)};
  fs::remove_all(dir);
  return r;
}

// The long option names that `posekd CMD --help` lists.
std::set<std::string> long_options(const std::string& cmd) {
  const auto r = run_cfg_cli(cmd + " --help");
  std::set<std::string> names;
  const std::regex re(R"((^|[ ,])--([a-z][a-z0-9-]*))");
  std::istringstream is(r.out);
  std::string line;
  while (std::getline(is, line)) {
    if (line.find_first_not_of(' ') == std::string::npos || line[line.find_first_not_of(' ')] != '-') continue;
    for (std::sregex_iterator it(line.begin(), line.end(), re), end; it != end; ++it) names.insert((*it)[2]);
  }
  return names;
}

template <class Cfg>
void expect_every_option_has_a_key(const std::string& cmd, const std::set<std::string>& not_in_struct) {
  const auto opts = long_options(cmd);
  ASSERT_GT(opts.size(), 5u) << "could not read `posekd " << cmd << " --help`";
  std::set<std::string> keys;
  for (const auto& f : posekd::train::config_fields(static_cast<const Cfg*>(nullptr))) keys.insert(f.key);
  for (const auto& o : opts) {
    if (o == "help" || o == "config" || o == "print-config" || not_in_struct.count(o)) continue;
    EXPECT_TRUE(keys.count(posekd::train::config_key(o)))
        << "--" << o << " of posekd " << cmd << " has no key in its config_io table";
  }
}

}  // namespace

TEST(ConfigCli, EveryOptionHasAYamlKey) {
  // train's --no-sync-bn is `sync_bn: false` in a file.
  expect_every_option_has_a_key<posekd::train::TrainConfig>("train", {"no-sync-bn"});
  expect_every_option_has_a_key<posekd::train::TeacherTrainConfig>("train-teacher", {"data", "split", "no-sync-bn"});
  // demo's --augment is `no_augment: false` in a file.
  expect_every_option_has_a_key<posekd::train::DemoOptions>("demo", {"augment"});
}

TEST(ConfigCli, FileSetsOptionsAndTheCommandLineOverridesIt) {
  auto dir = posekd::testing::temp_dir("cfgcli-file");
  posekd::testing::write_text(dir / "c.yaml",
                              "batch_size: 4\nlr: 0.002\narch: ai85pose\nval_images: v/\nno_qat: true\n");
  // The flag given before or after --config wins over the file.
  for (const std::string args :
       {"--config " + (dir / "c.yaml").string() + " --lr 0.5", "--lr 0.5 --config " + (dir / "c.yaml").string()}) {
    SCOPED_TRACE(args);
    const auto r = run_cfg_cli("train " + args + " --print-config");
    ASSERT_EQ(r.rc, 0) << r.err;
    posekd::train::TrainConfig c;
    posekd::train::from_yaml(r.out, "printed", c);
    EXPECT_EQ(c.batch_size, 4);
    EXPECT_DOUBLE_EQ(c.lr, 0.5);
    EXPECT_EQ(c.arch, "ai85pose");
    EXPECT_EQ(c.val_images, "v/");
    EXPECT_TRUE(c.no_qat);
    EXPECT_EQ(c.total_batches, 15000);  // the default
    // The printed file reads back to itself.
    posekd::testing::write_text(dir / "p.yaml", r.out);
    const auto again = run_cfg_cli("train --config " + (dir / "p.yaml").string() + " --print-config");
    ASSERT_EQ(again.rc, 0) << again.err;
    EXPECT_EQ(again.out, r.out);
  }
  // train-teacher: --data resolves into ann/images; demo: budget overrides.
  posekd::testing::write_text(dir / "t.yaml", "input_size: 96\nlr_end_factor: 0.05\n");
  auto t = run_cfg_cli("train-teacher --config " + (dir / "t.yaml").string() + " --data D --warmup 30 --print-config");
  ASSERT_EQ(t.rc, 0) << t.err;
  posekd::train::TeacherTrainConfig tc;
  posekd::train::from_yaml(t.out, "printed", tc);
  EXPECT_EQ(tc.input_size, 96);
  EXPECT_DOUBLE_EQ(tc.lr_end_factor, 0.05);
  EXPECT_EQ(tc.warmup_batches, 30);
  EXPECT_EQ(tc.ann, "D/annotations/person_keypoints_train2017.json");
  EXPECT_EQ(tc.images, "D/train2017");
  posekd::testing::write_text(dir / "d.yaml", "quick: true\nteacher_batches: 12\n");
  auto d = run_cfg_cli("demo --config " + (dir / "d.yaml").string() + " --student-batches 7 --print-config");
  ASSERT_EQ(d.rc, 0) << d.err;
  posekd::train::DemoOptions dc;
  posekd::train::from_yaml(d.out, "printed", dc);
  EXPECT_TRUE(dc.quick);
  EXPECT_EQ(dc.overrides.teacher_batches, 12);
  EXPECT_EQ(dc.overrides.student_batches, 7);
  fs::remove_all(dir);
}

TEST(ConfigCli, BadConfigFilesAreOneLineErrors) {
  auto dir = posekd::testing::temp_dir("cfgcli-bad");
  const auto f = (dir / "bad.yaml").string();
  posekd::testing::write_text(f, "batch_size: 4\nlearning_rate: 0.1\n");
  auto r = run_cfg_cli("train --config " + f + " --print-config");
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "posekd: error: " + f + ": unknown key 'learning_rate' (not an option of posekd train)\n");
  posekd::testing::write_text(f, "workers: two\n");
  r = run_cfg_cli("train-teacher --config " + f + " --print-config");
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "posekd: error: " + f + ": key 'workers': expected an integer, got 'two'\n");
  r = run_cfg_cli("demo --config " + (dir / "absent.yaml").string());
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "posekd: error: " + (dir / "absent.yaml").string() + ": cannot open the configuration file\n");
  fs::remove_all(dir);
}

// A training run writes args.yaml with every resolved option; `train --config args.yaml` reproduces
// them exactly.
TEST(ConfigCli, ArgsYamlOfARunReproducesItsOptions) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  auto dir = posekd::testing::temp_dir("cfgcli-run");
  const auto out = dir / "run";
  const auto r =
      run_cfg_cli("train --ann " + (coco / "annotations/person_keypoints_val2017.json").string() + " --images " +
                  (coco / "val2017").string() + " --arch ai85pose --no-qat --batch-size 2 --total-batches 1 " +
                  "--threads 1 --workers 1 --lr 0.003 --quiet --no-plot --output " + out.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string args = posekd::testing::read_text(out / "args.yaml");
  ASSERT_EQ(args.rfind("# posekd train options", 0), 0u) << args;
  const auto again = run_cfg_cli("train --config " + (out / "args.yaml").string() + " --print-config");
  ASSERT_EQ(again.rc, 0) << again.err;
  auto strip_comments = [](const std::string& s) { return std::regex_replace(s, std::regex("(^|\n)#[^\n]*"), ""); };
  EXPECT_EQ(strip_comments(again.out), strip_comments(args));
  posekd::train::TrainConfig c;
  posekd::train::from_yaml(args, "args.yaml", c);
  EXPECT_DOUBLE_EQ(c.lr, 0.003);
  EXPECT_EQ(c.batch_size, 2);
  EXPECT_EQ(c.output, out.string());
  fs::remove_all(dir);
}
