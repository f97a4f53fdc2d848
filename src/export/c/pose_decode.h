/* pose_decode.h - multi-person pose decoding for the MAX78000's Arm core (C99).
 *
 * Written by `posekd export` together with pose_params.h (the network's geometry, the decoding
 * thresholds, the output scales and the skeleton tables). It turns the two output layers of the
 * CNN, as cnn_unload() delivers them (int32, channel-major [19][16][16] heatmaps then [38][16][16]
 * part affinity fields), into people with 18 OpenPose keypoints and scores.
 *
 * The decoding is posekd's C++ decoder (infer::decode with infer::direct_decode_params): peaks on
 * the 16x16 maps, greedy suppression, then (POSE_LOCAL_UPSAMPLE = F) each peak moves to the maximum
 * of the F-times cubic-upsampled heatmap around its cell and the PAF grouping of
 * Lightweight-OpenPose samples the F-times upsampled PAFs: the upsampled values are computed where
 * they are needed (OpenCV's INTER_CUBIC coefficients), never stored. The same arithmetic step for
 * step (float geometry, float32 pairwise sums as numpy, double scores), so the host and the chip
 * find the same people.
 *
 * No malloc: every buffer is a fixed static array sized by pose_params.h. Not reentrant.
 * Dependencies: <stdint.h>, <string.h>, <math.h>. Compile with -ffp-contract=off (no fused
 * multiply-add), as the host reference is computed without it.
 */
#ifndef POSE_DECODE_H_INCLUDED
#define POSE_DECODE_H_INCLUDED

#include <stdint.h>

#include "pose_params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One peak of one keypoint heatmap. */
typedef struct {
  uint8_t x, y;   /* map cell (column, row) where the peak was found */
  uint8_t ux, uy; /* POSE_LOCAL_UPSAMPLE: pixel of the cubic-upsampled heatmap (else == x, y) */
  float score;    /* heatmap value at the peak (at ux, uy when upsampled locally) */
  float fx, fy;   /* position in grouping pixels: ux, uy (+ the sub-cell offset with POSE_SUBCELL) */
} pose_peak_t;

/* The peaks of the 18 keypoint heatmaps, in posekd's order (x ascending, then y). */
typedef struct {
  uint8_t count[POSE_NUM_KPTS];
  pose_peak_t peak[POSE_NUM_KPTS][POSE_MAX_PEAKS];
} pose_peaks_t;

/* One person. Coordinates are input pixels of the 128x128 frame (pixel centres at integers). */
typedef struct {
  float x[POSE_NUM_KPTS], y[POSE_NUM_KPTS];
  float kpt_score[POSE_NUM_KPTS]; /* heatmap value of the keypoint's peak, 0 = keypoint missing */
  int8_t peak[POSE_NUM_KPTS];     /* index into pose_peaks_t.peak[k], -1 = missing */
  float score;                    /* COCO person score: entry score * max(0, count - 1) */
  double entry_score;             /* sum of keypoint and connection scores */
  int count;                      /* connected keypoints as Lightweight-OpenPose counts them */
} pose_person_t;

/* What did not fit the fixed buffers (all 0 on a normal frame). */
typedef struct {
  uint16_t dropped_peaks;   /* peaks beyond POSE_MAX_PEAKS of one keypoint type */
  uint16_t dropped_entries; /* partial skeletons beyond POSE_MAX_ENTRIES */
  uint16_t dropped_people;  /* people beyond the caller's max_people */
} pose_stats_t;

/* Peak search on the heatmaps (cnn_unload layout, POSE_NUM_HEATMAPS channels). */
void pose_find_peaks(const int32_t* heat, pose_peaks_t* peaks, pose_stats_t* stats);

/* Groups peaks with the PAFs into people, strongest grouping order as Lightweight-OpenPose.
 * Returns the number of people written (at most max_people). */
int pose_group(const pose_peaks_t* peaks, const int32_t* paf, pose_person_t* people, int max_people,
               pose_stats_t* stats);

/* Both steps: heat = the first POSE_NUM_HEATMAPS*POSE_MAP_H*POSE_MAP_W values of cnn_unload's
 * buffer, paf = the following POSE_NUM_PAFS*POSE_MAP_H*POSE_MAP_W. stats may be NULL. */
int pose_decode(const int32_t* heat, const int32_t* paf, pose_person_t* people, int max_people, pose_stats_t* stats);

/* The heatmap / PAF value of an output word, in the float units posekd's decoder sees. */
float pose_heat_value(int32_t v);
float pose_paf_value(int32_t v);

#ifdef __cplusplus
}
#endif

#endif /* POSE_DECODE_H_INCLUDED */
