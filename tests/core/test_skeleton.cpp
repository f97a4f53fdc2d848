#include <gtest/gtest.h>

#include <set>

#include "posekd/core/skeleton.h"

namespace sk = posekd::skeleton;

TEST(Skeleton, CocoMappingIsABijectionWithTheNeckLeftOut) {
  for (int c = 0; c < sk::kNumCoco; ++c) EXPECT_EQ(sk::kOpenPoseToCoco[sk::kCocoToOpenPose[c]], c);
  EXPECT_EQ(sk::kOpenPoseToCoco[sk::kNeck], -1);
}

TEST(Skeleton, MatchesUpstreamReorderMap) {
  // upstream ConvertKeypoints reorder_map (1-based COCO indices) for OpenPose slots without the neck
  const int reorder[17] = {1, 7, 9, 11, 6, 8, 10, 13, 15, 17, 12, 14, 16, 3, 2, 5, 4};
  int slot = 0;
  for (int op = 0; op < sk::kNumKeypoints; ++op) {
    if (op == sk::kNeck) continue;
    EXPECT_EQ(sk::kOpenPoseToCoco[op], reorder[slot++] - 1) << "openpose " << op;
  }
}

TEST(Skeleton, FlipPairsSwapLeftAndRightNames) {
  for (auto [l, r] : sk::kFlipPairs) {
    auto a = sk::kKeypointNames[l], b = sk::kKeypointNames[r];
    EXPECT_EQ(a.substr(1), b.substr(1));
    EXPECT_NE(a[0], b[0]);
  }
  for (auto [l, r] : sk::kCocoFlipPairs) {
    EXPECT_EQ(sk::kOksSigmas[l], sk::kOksSigmas[r]);
    // the COCO pair maps onto one of the OpenPose pairs (either way round)
    int a = sk::kCocoToOpenPose[l], b = sk::kCocoToOpenPose[r];
    bool found = false;
    for (auto [x, y] : sk::kFlipPairs) found |= (x == a && y == b) || (x == b && y == a);
    EXPECT_TRUE(found) << l << "," << r;
  }
}

TEST(Skeleton, GroupingOrderCoversTheSameLimbsAsTrainingOrder) {
  std::set<std::pair<int, int>> train, group;
  for (int l = 0; l < sk::kNumLimbs; ++l) train.insert({sk::kLimbs[l].a, sk::kLimbs[l].b});
  for (int p = 0; p < sk::kNumLimbs; ++p) {
    auto lb = sk::kGroupLimbs[p];
    group.insert({lb.a, lb.b});
    // the PAF channels of grouping part p are those of the same limb in training order
    int ch = sk::kGroupPafChannels[p][0];
    EXPECT_EQ(ch % 2, 0);
    EXPECT_EQ(sk::kGroupPafChannels[p][1], ch + 1);
    EXPECT_EQ(sk::kLimbs[ch / 2].a, lb.a) << p;
    EXPECT_EQ(sk::kLimbs[ch / 2].b, lb.b) << p;
  }
  EXPECT_EQ(train, group);
}

TEST(Skeleton, VisibilityRemap) {
  EXPECT_EQ(sk::coco_to_internal_visibility(0), sk::kVisNotLabeled);
  EXPECT_EQ(sk::coco_to_internal_visibility(1), sk::kVisOccluded);
  EXPECT_EQ(sk::coco_to_internal_visibility(2), sk::kVisVisible);
}
