// One training sample: image read, resized and padded to the input size, with its targets.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "posekd/data/augment.h"
#include "posekd/data/coco.h"

namespace cv {
class Mat;
}

namespace posekd::data {

struct SampleConfig {
  int input_size = 128;  // square network input
  int stride = 8;        // input pixels per target cell (grid = input_size / stride)
  float sigma = 7;       // heatmap Gaussian sigma, input pixels
  // Reproduce the seed's bug: COCO-ordered keypoints drawn into OpenPose channels, no neck, no
  // re-flag (seed-pipeline.md). Persons are still all of the image's persons.
  bool seed_compat_targets = false;
  // Decode JPEGs at 1/2, 1/4 or 1/8 resolution (IMREAD_REDUCED_COLOR_*) when the longest side is at
  // least 2x/4x/8x input_size. Faster; pixels then differ slightly from a full decode + resize
  // (the golden fixture is matched exactly only with reduced_decode = false).
  bool reduced_decode = true;
  int max_side = 10000;  // larger images (from the file header) are rejected
  // Training augmentation (off by default). The loader draws each sample's AugmentParams from
  // (seed, view, image id) and passes them to prepare_sample.
  AugmentConfig augment;
};

struct Sample {
  torch::Tensor image;     // [3, S, S] f32, BGR, (x - 128) / 128, padded bottom/right with 128
  torch::Tensor heatmaps;  // [19, S/stride, S/stride]
  torch::Tensor pafs;      // [38, S/stride, S/stride]
  torch::Tensor mask;      // [1, S/stride, S/stride] f32, 1 = use, 0 = ignore (crowd)
  int64_t image_id = 0;
  int64_t view = 0;  // augmentation view (augment_view of the epoch), 0 without augmentation
  double scale = 0;  // s = S / max(h, w) of the original image
  bool ok = false;
  std::string error;  // one line naming the image path when !ok
};

// Reads `image_dir/file_name` (any OpenCV format; grayscale, 16-bit and alpha converted to 8-bit
// BGR), resizes the longest side to input_size with size (int(w*s), int(h*s)) and default bilinear,
// pads bottom/right with 128, and draws the targets over ALL persons of the image (keypoints from
// convert_keypoints in the original image, scaled by s) plus the crowd mask. The original size is
// the decoded image's (the JSON width/height are not trusted). Never throws: missing, empty,
// corrupt, truncated (JPEG without its end marker), non-image or huge files give ok = false.
//
// With `augment` (training): the picture is instead photometrically jittered, then warped by
// augment_affine (border 128), and keypoints and crowd mask move with it before the targets are drawn.
Sample prepare_sample(const CocoImage& image, const std::string& image_dir, const SampleConfig& config,
                      const AugmentParams* augment = nullptr);

// The network input of an in-memory 8-bit BGR image (a video frame, a camera picture), letterboxed
// exactly as prepare_sample does: longest side resized to input_size, padded bottom/right with 128,
// [3, S, S] f32 (x - 128) / 128. *scale (when given) receives S / max(h, w). posekd::Error for an
// empty image or one that is not 8-bit with 3 channels.
torch::Tensor prepare_input(const cv::Mat& bgr, int input_size, double* scale = nullptr);

// Image size from a JPEG or PNG header without decoding; false for other formats / bad headers.
bool image_header_size(const std::string& bytes, int& width, int& height);

// Space-to-depth fold used by ai8x (stride-2 first layer -> stride 1): x [B,C,H,W] ->
// [B, f*f*C, H/f, W/f] with channel (i*f + j)*C + c = x[:, c, i::f, j::f]. H, W divisible by f.
torch::Tensor fold_input(const torch::Tensor& x, int f = 2);

}  // namespace posekd::data
