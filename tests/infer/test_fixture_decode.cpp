// End to end on real data: the golden 16x16 targets of data/coco-sample (fixtures/targets, drawn by
// the reference Python) -> decode -> COCO keypoint AP against the sample's ground truth. This is
// the "oracle" AP of the student's output resolution: what a perfect student could reach.
#include <gtest/gtest.h>

#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "posekd/infer/coco_eval.h"
#include "posekd/infer/coco_results.h"
#include "posekd/infer/decode.h"
#include "test_util.h"

namespace {
using namespace posekd::infer;

TEST(FixtureDecode, GoldenStudentTargetsDecodeToTheSamplePeople) {
  POSEKD_REQUIRE_FIXTURE(pt, "targets/coco_sample_targets.pt");
  POSEKD_REQUIRE_FIXTURE(ann, "coco-sample/annotations/person_keypoints_val2017.json");
  std::ifstream f(pt, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const c10::IValue root = torch::pickle_load(bytes);
  ASSERT_TRUE(root.isGenericDict());
  const auto gt = read_coco_gt_for_eval(ann.string());

  std::vector<Detection> dts;
  int images = 0;
  for (const auto& item : root.toGenericDict()) {
    const std::string stem = item.key().toStringRef();
    const auto d = item.value().toGenericDict();
    const torch::Tensor heat = d.at("heatmaps").toTensor().contiguous().to(torch::kFloat32);
    const torch::Tensor paf = d.at("pafs").toTensor().contiguous().to(torch::kFloat32);
    ASSERT_EQ(heat.size(1), 16);
    const double s = d.at("scale").toTensor().item<double>();
    DecodeParams p;  // 128 input, stride 8, x4 upsampling, letterbox (no padding before the image)
    p.scale = static_cast<float>(s);
    auto poses = decode(heat.data_ptr<float>(), paf.data_ptr<float>(), 16, 16, p);
    auto det = poses_to_detections(std::stoll(stem), poses);
    dts.insert(dts.end(), det.begin(), det.end());
    ++images;
  }
  ASSERT_EQ(images, 4);
  const auto r = evaluate_keypoints(gt, dts);
  std::printf("oracle decode of the golden 16x16 targets (%zu poses):\n%s", dts.size(),
              format_summary(r.stats).c_str());
  // The one large, fully labeled person of image 785 must come back with a high OKS.
  double best = 0;
  for (const auto& dt : dts)
    if (dt.image_id == 785) best = std::max(best, compute_oks(gt.images[0].persons[0], dt.keypoints));
  EXPECT_GT(best, 0.5);
  // Perfect targets: at OKS .5 most people must come back (measured 0.79 when written; the small
  // people of 196141 are only a few input pixels tall and are lost at 16x16).
  EXPECT_GT(r.stats[1], 0.6);
  EXPECT_GT(r.stats[4], r.stats[3]);  // large people decode better than medium ones
}

}  // namespace
