// The C code `posekd export` writes for the MAX78000's Arm core (docs/deploy.md):
//   pose_params.h              generated: geometry, output scales, decoding thresholds, buffer sizes
//                              and the skeleton tables of core/skeleton.h
//   pose_decode.h/.c           heatmaps + PAFs (cnn_unload's int32 words) -> people (C99, no malloc)
//   pose_input.h/.c            128x128 RGB888 / RGB565 frame -> the folded 12x64x64 input
//   main.c, FIRMWARE.md        the firmware example that replaces ai8xize's main.c
//   pose_sample.h              generated: the sample frame and the people the host decodes from it
// The C sources are real files in src/export/c, embedded verbatim at build time.
#pragma once
#include <torch/torch.h>

#include <array>
#include <string>
#include <vector>

#include "posekd/infer/decode.h"

namespace posekd::deploy {

struct PoseCConfig {
  infer::DecodeParams decode = infer::direct_decode_params();  // must have upsample == 1
  int map_h = 16, map_w = 16;
  int input = 128;                                // square frame
  int fold = 2;                                   // input fold factor (1: none)
  int heat_final_scale = 0, paf_final_scale = 0;  // ai8x final_scale of the two output layers
  // Their output shifts (model::Student::head_output_shifts): a wide layer's accumulator is the
  // map's value times 2^-os, so the decoder multiplies by 2^os (folded into the units).
  int heat_output_shift = 0, paf_output_shift = 0;
  bool output_scaled = true;  // cnn_unload applies final_scale (ai8xize's default)
  int max_peaks = 20;         // per keypoint type
  int max_entries = 32;       // partial skeletons while grouping
  int max_people = 8;         // people main.c asks for
};

struct CSource {
  std::string name, text;
};

// src/export/c, verbatim (sorted by name).
const std::vector<CSource>& pose_c_sources();

// pose_params.h for `cfg`. Throws posekd::Error when the decoding cannot run on the chip
// (upsampling, a peak threshold that is not positive, more than 127 peaks per type, ...).
std::string pose_params_header(const PoseCConfig& cfg);

// The smallest number of passing samples that the C++ grouping accepts (ratio > min_success_ratio),
// computed with its double arithmetic; and the largest squared integer distance that suppression
// treats as "closer than the radius". Exposed for tests.
int min_valid_samples(const infer::GroupParams& g);
int suppress_max_d2(float radius);

// OpenCV's INTER_CUBIC upsampling by `factor` as a table: per output phase X (0..factor-1), the four
// coefficients (float, cv::resize's interpolateCubic) and the source offset sx (output pixel
// q*factor + X reads source pixels q + sx - 1 .. q + sx + 2, clamped to the edges).
struct CubicTable {
  std::vector<std::array<float, 4>> coeff;
  std::vector<int> offset;
};
CubicTable cubic_table(int factor);

// cnn_unload's word for a raw accumulator: acc << fs, or acc >> -fs (arithmetic) when fs < 0.
std::int64_t unload_word(std::int64_t acc, int final_scale);

// People as text, one block per person (the format pose_harness prints): used to compare the C
// decoder, the C++ decoder and the emulated run. Coordinates in input pixels.
std::string people_text(const std::vector<infer::Pose>& poses);

// The float maps the decoder sees for raw accumulators acc (int64 [C,h,w]): the cnn_unload word
// (unload_word when cfg.output_scaled) times its unit, 2^(os-14) (scaled) or 2^(os+fs-14) (raw).
std::vector<float> accumulator_maps(const torch::Tensor& acc, int final_scale, bool output_scaled,
                                    int output_shift = 0);

// C++ reference of the C decoder: decode with cfg.decode on the float maps of raw accumulators
// heat [19,h,w], paf [38,h,w] (int64), scaled as the int8 evaluation scales them.
std::vector<infer::Pose> decode_accumulators(const torch::Tensor& heat, const torch::Tensor& paf,
                                             const PoseCConfig& cfg);

// pose_sample.h: the sample frame (RGB888, from the int [3,128,128] BGR - 128 image) and the
// expected people of its outputs.
std::string pose_sample_header(const torch::Tensor& image_int, const std::vector<infer::Pose>& people,
                               const PoseCConfig& cfg);

// Writes pose_params.h, pose_sample.h and the verbatim sources into dir (created).
// Returns the written paths.
std::vector<std::string> write_pose_c(const std::string& dir, const PoseCConfig& cfg, const torch::Tensor& image_int,
                                      const std::vector<infer::Pose>& people);

}  // namespace posekd::deploy
