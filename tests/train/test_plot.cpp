#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>

#include "posekd/core/error.h"
#include "posekd/train/plot.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace posekd::train;

TEST(Plot, ReadsResultsCsvAndDrawsTheChart) {
  auto d = posekd::testing::temp_dir("plot");
  {
    std::ofstream f(d / "results.csv");
    f << "batch,loss,student,distill,img_per_s,lr,phase,val_ap\n";
    f << "10,500.0,600.0,400.0,50.0,0.001,float,\n";
    f << "20,300.0,350.0,250.0,50.0,0.001,float,0.1000\n";
    f << "30,200.0,250.0,150.0,40.0,0.001,qat,0.2000\n";
  }
  auto rows = read_results_csv((d / "results.csv").string());
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].val_ap, -1);
  EXPECT_DOUBLE_EQ(rows[2].val_ap, 0.2);
  EXPECT_EQ(rows[2].phase, "qat");
  ASSERT_TRUE(plot_results(rows, (d / "results.png").string(), "t"));
  cv::Mat img = cv::imread((d / "results.png").string());
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 900);
  // the orange QAT marker is drawn somewhere
  int orange = 0;
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x) {
      auto p = img.at<cv::Vec3b>(y, x);
      orange += (p[0] < 60 && p[1] > 110 && p[1] < 170 && p[2] > 220);
    }
  EXPECT_GT(orange, 50);
  EXPECT_FALSE(plot_results({}, (d / "none.png").string(), "t"));
  fs::remove_all(d);
}

TEST(Plot, MalformedCsvNamesFileAndLine) {
  auto d = posekd::testing::temp_dir("plotbad");
  {
    std::ofstream f(d / "results.csv");
    f << "batch,loss,student,distill,img_per_s,lr,phase,val_ap\n1,2,3\n";
  }
  try {
    read_results_csv((d / "results.csv").string());
    FAIL();
  } catch (const posekd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("results.csv: line 2: expected 8 columns"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}
