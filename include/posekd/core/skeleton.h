// The one skeleton table: OpenPose-18 keypoints, the 19 limbs in training/channel order,
// flip pairs, the COCO-17 -> OpenPose-18 mapping (with the synthetic neck) and COCO OKS sigmas.
// Sources: spec/openpose.md 3.2-3.4, 5.3-5.4; spec/seed-pipeline.md.
#pragma once
#include <array>
#include <string_view>

namespace posekd::skeleton {

inline constexpr int kNumKeypoints = 18;  // OpenPose order, neck included
inline constexpr int kNumHeatmaps = 19;   // 18 keypoints + background
inline constexpr int kNumLimbs = 19;
inline constexpr int kNumPafs = 2 * kNumLimbs;  // limb i -> channels 2i (x), 2i+1 (y)
inline constexpr int kNumCoco = 17;
inline constexpr int kNeck = 1;
inline constexpr int kBackgroundChannel = 18;

// OpenPose-18 names: index = heatmap channel.
inline constexpr std::array<std::string_view, kNumKeypoints> kKeypointNames = {
    "nose",   "neck",  "r_sho", "r_elb",  "r_wri", "l_sho", "l_elb", "l_wri", "r_hip",
    "r_knee", "r_ank", "l_hip", "l_knee", "l_ank", "r_eye", "l_eye", "r_ear", "l_ear"};

// COCO-17 names, COCO order.
inline constexpr std::array<std::string_view, kNumCoco> kCocoNames = {
    "nose",           "left_eye",   "right_eye",   "left_ear",   "right_ear",   "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip",      "left_knee",  "right_knee",  "left_ankle", "right_ankle"};

struct Limb {
  int a, b;
};

// The 19 limbs in the seed's / upstream training order (coco.py): limb i -> PAF channels 2i, 2i+1.
inline constexpr std::array<Limb, kNumLimbs> kLimbs = {{{1, 8},
                                                        {8, 9},
                                                        {9, 10},
                                                        {1, 11},
                                                        {11, 12},
                                                        {12, 13},
                                                        {1, 2},
                                                        {2, 3},
                                                        {3, 4},
                                                        {2, 16},
                                                        {1, 5},
                                                        {5, 6},
                                                        {6, 7},
                                                        {5, 17},
                                                        {1, 0},
                                                        {0, 14},
                                                        {0, 15},
                                                        {14, 16},
                                                        {15, 17}}};

// OpenPose-18 index -> COCO-17 index (-1 for the neck), upstream `to_coco_map`.
inline constexpr std::array<int, kNumKeypoints> kOpenPoseToCoco = {0,  -1, 6,  8,  10, 5, 7, 9, 12,
                                                                   14, 16, 11, 13, 15, 2, 1, 4, 3};

// COCO-17 index -> OpenPose-18 index (inverse of the above).
inline constexpr std::array<int, kNumCoco> kCocoToOpenPose = {0, 15, 14, 17, 16, 5, 2,  6, 3,
                                                              7, 4,  11, 8,  12, 9, 13, 10};

// Neck = midpoint of these two COCO keypoints.
inline constexpr int kCocoLeftShoulder = 5;
inline constexpr int kCocoRightShoulder = 6;

// Left/right swaps under a horizontal flip, OpenPose-18 indices.
inline constexpr std::array<std::array<int, 2>, 8> kFlipPairs = {
    {{2, 5}, {3, 6}, {4, 7}, {8, 11}, {9, 12}, {10, 13}, {14, 15}, {16, 17}}};

// Left/right swaps, COCO-17 indices.
inline constexpr std::array<std::array<int, 2>, 8> kCocoFlipPairs = {
    {{1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10}, {11, 12}, {13, 14}, {15, 16}}};

// COCO OKS sigmas (pycocotools), COCO-17 order.
inline constexpr std::array<double, kNumCoco> kOksSigmas = {.026, .025, .025, .035, .035, .079, .079, .072, .072,
                                                            .062, .062, .107, .107, .087, .087, .089, .089};

// Internal visibility codes (upstream ConvertKeypoints): 0 labeled-occluded, 1 visible, 2 not labeled.
inline constexpr int kVisOccluded = 0;
inline constexpr int kVisVisible = 1;
inline constexpr int kVisNotLabeled = 2;

// COCO v (0 not labeled, 1 occluded, 2 visible) -> internal v'.
constexpr int coco_to_internal_visibility(int coco_v) {
  return coco_v == 0 ? kVisNotLabeled : (coco_v == 1 ? kVisOccluded : kVisVisible);
}

// Grouping order used by decoding (upstream keypoints.py BODY_PARTS_KPT_IDS / BODY_PARTS_PAF_IDS):
// part p connects keypoints kGroupLimbs[p] and reads PAF channels kGroupPafChannels[p].
inline constexpr std::array<Limb, kNumLimbs> kGroupLimbs = {{{1, 2},
                                                             {1, 5},
                                                             {2, 3},
                                                             {3, 4},
                                                             {5, 6},
                                                             {6, 7},
                                                             {1, 8},
                                                             {8, 9},
                                                             {9, 10},
                                                             {1, 11},
                                                             {11, 12},
                                                             {12, 13},
                                                             {1, 0},
                                                             {0, 14},
                                                             {14, 16},
                                                             {0, 15},
                                                             {15, 17},
                                                             {2, 16},
                                                             {5, 17}}};
inline constexpr std::array<std::array<int, 2>, kNumLimbs> kGroupPafChannels = {{{12, 13},
                                                                                 {20, 21},
                                                                                 {14, 15},
                                                                                 {16, 17},
                                                                                 {22, 23},
                                                                                 {24, 25},
                                                                                 {0, 1},
                                                                                 {2, 3},
                                                                                 {4, 5},
                                                                                 {6, 7},
                                                                                 {8, 9},
                                                                                 {10, 11},
                                                                                 {28, 29},
                                                                                 {30, 31},
                                                                                 {34, 35},
                                                                                 {32, 33},
                                                                                 {36, 37},
                                                                                 {18, 19},
                                                                                 {26, 27}}};

}  // namespace posekd::skeleton
