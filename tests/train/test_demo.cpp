// `posekd demo --quick`: the whole pipeline end to end on synthetic people.
#include <gtest/gtest.h>

#include <filesystem>

#include "posekd/train/demo.h"
#include "test_util.h"

namespace fs = std::filesystem;

TEST(Demo, QuickRunProducesEveryArtifact) {
  auto out = posekd::testing::temp_dir("demo");
  posekd::train::DemoOptions o;
  o.out = out.string();
  o.quick = true;
  o.threads = 2;
  o.quiet = true;
  auto r = posekd::train::run_demo(o);
  ASSERT_EQ(r.rows.size(), 6u);
  for (const auto& row : r.rows) {
    EXPECT_GE(row.stats[0], -1.0) << row.model;  // pycocotools prints -1 for an empty area range
    EXPECT_LE(row.stats[0], 1.0) << row.model;
    EXPECT_GE(row.stats[5], 0.0) << row.model;   // AR over all areas is defined: val has people
  }
  EXPECT_TRUE(r.export_fits);
  for (const char* f : {"table.md", "results.csv", "results.png", "teacher/teacher.pth", "student_kd/latest.pth",
                        "student_gt/latest.pth", "export/ai85pose.yaml", "export/ai85pose-q8.pth.tar",
                        "data/annotations/person_keypoints_val.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  int pictures = 0;
  for (const auto& e : fs::directory_iterator(out / "predictions")) pictures += e.path().extension() == ".jpg";
  EXPECT_GT(pictures, 0);
  EXPECT_NE(r.table_markdown.find("student KD, int8 (MAX78000 arithmetic)"), std::string::npos);
  fs::remove_all(out);
}
