/* pose_input.h - camera frame -> the CNN's input, exactly as posekd prepares its samples (C99).
 *
 * A 128x128 frame becomes the folded 12x64x64 int8 input: each pixel's channels in BGR order,
 * value - 128, and the 2x2 fold of ai8x (channel (i*2+j)*3+c = pixel[c][2Y+i][2X+j]).
 * The frame must already be 128x128 (posekd letterboxes larger images: longest side scaled to
 * 128, padded bottom/right with grey 128).
 * Dependencies: <stdint.h> only.
 */
#ifndef POSE_INPUT_H_INCLUDED
#define POSE_INPUT_H_INCLUDED

#include <stdint.h>

#include "pose_params.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POSE_FOLD_CHANNELS (3 * POSE_FOLD * POSE_FOLD)
#define POSE_FOLD_H (POSE_INPUT_H / POSE_FOLD)
#define POSE_FOLD_W (POSE_INPUT_W / POSE_FOLD)
#define POSE_FOLD_PLANE (POSE_FOLD_H * POSE_FOLD_W)
/* HWC words: 4 channels per 32-bit word (byte k = channel 4q+k), one group of words per processor */
#define POSE_HWC_GROUPS ((POSE_FOLD_CHANNELS + 3) / 4)

/* rgb: 128*128 pixels, row-major, 3 bytes R, G, B. out: [12][64][64] (channel-major, as
 * sample_<arch>.npy). */
void pose_prepare_rgb888(const uint8_t* rgb, int8_t* out);

/* rgb565: 128*128 pixels, 2 bytes each as the MAX78000 camera interface stores them: the first
 * byte holds R5 and the top 3 bits of G6 (RRRRRGGG), the second the rest (GGGBBBBB). Channels are
 * widened to 8 bits by bit replication (r8 = r5 << 3 | r5 >> 2, g8 = g6 << 2 | g6 >> 4), then
 * prepared as pose_prepare_rgb888. */
void pose_prepare_rgb565(const uint8_t* rgb565, int8_t* out);

/* The HWC word layout of the accelerator's input for the same data: out[q][y*64 + x] holds
 * channels 4q..4q+3 of folded pixel (y, x), channel 4q in the low byte (ai8xize's sample layout
 * for HWC inputs, one word stream per input processor). out: POSE_HWC_GROUPS * POSE_FOLD_PLANE. */
void pose_prepare_hwc_rgb888(const uint8_t* rgb, uint32_t* out);
void pose_prepare_hwc_rgb565(const uint8_t* rgb565, uint32_t* out);

/* Channel-major [12][64][64] -> HWC words (as above). */
void pose_pack_hwc(const int8_t* chw, uint32_t* out);

#ifdef __cplusplus
}
#endif

#endif /* POSE_INPUT_H_INCLUDED */
