// Training targets as pure functions: keypoint heatmaps, part affinity fields, crowd loss mask.
// Grid size and stride are parameters (16x16 / stride 8 for the student, 46x46 for upstream).
#pragma once
#include <torch/torch.h>
#include <opencv2/core.hpp>

#include <vector>

#include "posekd/data/coco.h"
#include "posekd/data/keypoints.h"

namespace posekd::data {

struct TargetGrid {
  int grid_w = 16, grid_h = 16;
  int stride = 8;
  double sigma = 7.0;        // heatmap Gaussian sigma in input pixels
  double paf_thickness = 1;  // in grid cells
};

// Heatmaps (seed formula, seed-pipeline.md step 3) into `out` [19, grid_h, grid_w], which must be
// zero on entry. Persons' keypoints are in INPUT pixels. For each keypoint with v' <= 1 whose grid
// position (x/stride, y/stride) lies in [0,grid_w) x [0,grid_h): e = ((gx*stride + stride/2 - 0.5
// - x)^2 + (...)^2) / (2 sigma^2); where e <= 4.6052, H = min(1, max(H, exp(-e))). Only the window
// that can pass the cut is visited. Channel 18 = 1 - max over channels 0..17.
void draw_heatmaps(const std::vector<Keypoints18>& persons, const TargetGrid& g, float* out);
torch::Tensor heatmaps(const std::vector<Keypoints18>& persons, const TargetGrid& g);  // [19,gh,gw]

// PAFs (upstream set_paf, seed-pipeline.md step 4) into `out` [38, grid_h, grid_w], zero on entry:
// for each person in order, each limb (skeleton::kLimbs order) with both ends v' <= 1, every cell
// of the clipped bounding box within `paf_thickness` of the infinite line a-b (grid units, no half
// cell shift) is set to the unit vector (later writes overwrite).
void draw_pafs(const std::vector<Keypoints18>& persons, const TargetGrid& g, float* out);
torch::Tensor pafs(const std::vector<Keypoints18>& persons, const TargetGrid& g);  // [38,gh,gw]

// Rasterises one segmentation at height x width: CV_8U, 1 inside, 0 outside. Polygons with
// cv::fillPoly (vertices rounded to the nearest pixel); RLE column-major starting with a run of
// 0s (an RLE whose size differs from height x width is resized with nearest neighbour).
cv::Mat rasterize_segmentation(const Segmentation& seg, int height, int width);

// Loss mask [1, grid_h, grid_w] f32 (1 = use, 0 = ignore): the crowd regions rasterised at the
// original image resolution (0 on crowd pixels), resized as float like the image to
// (resized_w, resized_h) with bilinear interpolation, copied into a uint8 canvas of
// (grid_w*stride) x (grid_h*stride) filled with 1 at the top-left (float -> uint8 truncates, so any
// pixel < 1 becomes 0, as upstream), reduced to the grid with INTER_AREA (rounding).
// No crowds -> all ones.
torch::Tensor crowd_mask(const std::vector<CocoPerson>& crowds, int img_h, int img_w, int resized_h, int resized_w,
                         const TargetGrid& g);

// The same loss mask for an augmented sample: the crowd regions at the original resolution moved by
// the 2x3 affine map (original pixels -> input pixels, augment_affine) onto the
// (grid_w*stride) x (grid_h*stride) input (bilinear, 1 = use outside the picture), any pixel < 1
// becomes 0, reduced to the grid with INTER_AREA. No crowds -> all ones.
torch::Tensor crowd_mask_affine(const std::vector<CocoPerson>& crowds, int img_h, int img_w, const cv::Mat& affine,
                                const TargetGrid& g);

}  // namespace posekd::data
