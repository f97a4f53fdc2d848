// Network maps -> people in ORIGINAL image coordinates, COCO-17 keypoints (spec/openpose.md 5.1-5.4).
//
// Coordinate convention (the one the targets are drawn with, openpose.md 3.3 and
// seed-pipeline.md): a keypoint at COCO coordinate x sits at network-input coordinate
// x_in = x * scale + pad_left, and heatmap cell gx is centred at x_in = stride*gx + (stride/2 - 0.5).
// The maps are upsampled by `upsample` with cv::resize (INTER_CUBIC, pixel-centre aligned), so
// upsampled pixel X is map coordinate (X + 0.5)/upsample - 0.5 and input coordinate
//   x_in = (X + 0.5) * stride / upsample - 0.5.
// The original-image coordinate of the peak, in upstream's pixel-index convention, is
//   x_pix = (x_in - pad_left) / scale - 0.5,
// and the COCO keypoint written is upstream's (x_pix + 0.5, y_pix + 0.5, 1), i.e. exactly
// (x_in - pad_left) / scale: drawing targets from the decoded keypoints reproduces the peak.
// (Upstream's demo uses x_in = X * stride / upsample, biased by up to half a map cell.)
#pragma once
#include <array>
#include <vector>

#include "posekd/infer/grouping.h"
#include "posekd/infer/peaks.h"

namespace posekd::infer {

struct DecodeParams {
  int input_w = 128, input_h = 128;     // network input size (letterboxed)
  int stride = 8;                       // input pixels per map cell
  int upsample = 4;                     // cubic upsampling of the maps before peak search (upstream demo)
  float scale = 1.f;                    // input pixels per original pixel
  float pad_left = 0.f, pad_top = 0.f;  // padding before the image in the input (letterbox: 0)
  PeakParams peaks{};                   // radius is in upsampled-map pixels (as upstream)
  GroupParams grouping{};
  // Sub-cell refinement: each peak moves by the vertex of the parabola through it and its two
  // neighbours, along x and along y separately (raw map values, offset clamped to +-0.5 map pixel;
  // none at the border or when the parabola does not open downward). Off by default.
  bool subcell = false;
  // Local upsampling (F > 1, with upsample == 1): each peak found on the maps themselves moves to the
  // maximum of the F-times cubic-upsampled heatmap (upsample_maps) within the F x F pixels of its cell
  // widened by F/2 on each side (scan x then y, first maximum wins; its value becomes the score), and
  // the grouping reads the F-times upsampled PAFs at these positions, as the default decoding does.
  // Coordinates are then upsampled pixels (as with upsample = F); subcell is ignored. 0 = off.
  int local_upsample = 0;
};

// The decoding variant that runs straight on the network's maps, as the C decoder on the chip does
// (pose_decode.c): no upsampling, the default suppression radius divided by the default upsampling
// (6 / 4 = 1.5 map cells), the default grouping; refinement: `local_upsample` = the default
// upsampling (4) when `local` is set, else the parabolic sub-cell refinement when `subcell` is set.
DecodeParams direct_decode_params(int input = 128, int stride = 8, bool subcell = false, bool local = true);

// The local refinement of DecodeParams::local_upsample: peaks_by_type found on the maps themselves
// (cells), upsampled = their F-times upsampled heatmaps [types, H, W]; moves each peak to its
// window's first maximum (pixels of the upsampled map) and sets its score to that value.
void refine_peaks_local(std::vector<std::vector<Peak>>& peaks_by_type, const float* upsampled, int H, int W, int F);

// The sub-cell offset of a peak with value c between neighbours l and r (see DecodeParams::subcell),
// in map pixels, within [-0.5, 0.5]. float arithmetic: 0.5f * (l - r) / (l - 2c + r). Exposed for tests.
float subcell_offset(float l, float c, float r);

// Letterbox parameters of posekd's data prep: resize the longest side to `input` (s = input /
// max(w, h)), pad bottom/right. Returns DecodeParams for a width x height original image.
DecodeParams letterbox_params(int width, int height, int input = 128, int stride = 8, int upsample = 4);

struct Pose {
  std::array<float, 51> keypoints{};   // COCO-17 x, y, v: found (x, y, 1), missing (0, 0, 0)
  float score = 0;                     // COCO person score: entry score * max(0, count - 1)
  int count = 0;                       // upstream count
  std::array<float, 18> kpt_scores{};  // heatmap peak value per OpenPose-18 keypoint (0 if missing)
  std::array<float, 36> points{};      // OpenPose-18 (x, y) in COCO coordinates, (0, 0) if missing
  bool has(int openpose_kpt) const { return kpt_scores[openpose_kpt] > 0.f; }
};

// Upsampled map geometry -> COCO coordinate (see above). Exposed for tests.
float map_to_original_x(float upsampled_x, const DecodeParams& p);
float map_to_original_y(float upsampled_y, const DecodeParams& p);

// Cubic upsampling of maps [c, h, w] by `factor` (cv::resize INTER_CUBIC) -> [c, h*f, w*f].
std::vector<float> upsample_maps(const float* maps, int channels, int h, int w, int factor);

// heat: [19, h, w] (channel 18 background, unused), paf: [38, h, w] at the network's output
// resolution. Throws posekd::Error on inconsistent sizes.
std::vector<Pose> decode(const float* heat, const float* paf, int h, int w, const DecodeParams& params);

}  // namespace posekd::infer
