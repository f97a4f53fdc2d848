// Training augmentation as pure functions: what to do to a sample is drawn from (seed, view, image)
// alone, and the same affine map moves the image, the keypoints and the crowd mask before the targets
// are drawn (so targets always describe the picture the network sees).
//
// Geometry (in the spirit of Lightweight OpenPose's train.py: scale, rotate, crop/pad, flip): the
// original image is letterboxed to fit the S x S input, then zoomed by `scale` and rotated by `angle`
// about the centre of the picture, shifted by (shift_x, shift_y) * S, and mirrored left-right with
// probability flip_prob (left and right keypoints then swap names, skeleton::kFlipPairs).
// Photometric: brightness, contrast, saturation and hue jitter, then an optional Gaussian blur, on
// the 8-bit BGR picture before the warp.
#pragma once
#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "posekd/data/keypoints.h"

namespace posekd::data {

// The defaults are moderate. Measured on the demo's synthetic people (docs/accuracy.md): a teacher
// trained 800 batches reached AP 0.223 with them and 0.150 with upstream-like ranges (scale 0.6-1.2,
// ±30°, shift ±0.15); students trained 1,100 batches with the stronger ranges collapsed at the QAT
// switch. Long runs on real data may want more (--scale-min, --rotate, ...).
struct AugmentConfig {
  bool enabled = false;
  double scale_min = 0.85, scale_max = 1.15;  // zoom of the letterboxed picture (1 = fits the input)
  double rotate_deg = 10;                     // uniform in [-rotate_deg, rotate_deg]
  double shift = 0.08;                        // centre jitter, uniform in [-shift, shift] x input size
  double flip_prob = 0.5;
  double brightness = 0.1;   // pixel offset uniform in [-b, b] x 255
  double contrast = 0.15;    // factor uniform in [1 - c, 1 + c] about mid-grey
  double saturation = 0.15;  // factor uniform in [1 - s, 1 + s]
  double hue_deg = 5;        // hue rotation uniform in [-h, h] degrees
  double blur_prob = 0.05;   // Gaussian blur, sigma uniform in [0.5, 1.5] input pixels
  // Distinct views per image: view = epoch % views, so an image is seen in at most `views` ways and a
  // teacher's outputs for them can be cached. 0 = a new view every epoch.
  int views = 0;
};

// What is done to one sample. The identity (default) leaves a sample as prepare_sample makes it
// without augmentation, except that the picture is centred in the input.
struct AugmentParams {
  double scale = 1, angle_deg = 0, shift_x = 0, shift_y = 0;
  bool flip = false;
  double brightness = 0, contrast = 1, saturation = 1, hue_deg = 0;
  double blur_sigma = 0;  // 0 = no blur
};

// The view index a sample of `epoch` uses under `config` (epoch % views, or epoch when views = 0).
std::int64_t augment_view(const AugmentConfig& config, std::int64_t epoch);

// Draws the parameters for (seed, view, image_id): the same arguments always give the same result,
// whatever thread or process draws them. With config.enabled false: the identity.
AugmentParams draw_augment(const AugmentConfig& config, std::uint64_t seed, std::int64_t view, std::int64_t image_id);

// The 2x3 affine map (CV_64F) from ORIGINAL image pixel coordinates (w x h) to network input pixel
// coordinates (S x S) for `p`, flip included.
cv::Mat augment_affine(const AugmentParams& p, int w, int h, int input_size);

// Applies a 2x3 affine map to every keypoint's x, y; with `flip`, left and right keypoints swap
// places (their coordinates already mirrored by the map). Visibility is kept.
Keypoints18 transform_keypoints(const Keypoints18& kp, const cv::Mat& affine, bool flip);

// Brightness, contrast, saturation, hue and blur of `p` applied to an 8-bit BGR image in place.
// The blur sigma is given in the image's own pixels.
void photometric(cv::Mat& bgr, const AugmentParams& p, double blur_sigma_pixels);

// One line for logs: "scale 0.6-1.2, rotate ±30°, shift ±0.15, flip 0.5, ..." or "off".
std::string describe(const AugmentConfig& config);

}  // namespace posekd::data
