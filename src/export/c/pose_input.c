/* pose_input.c - see pose_input.h. Reference: posekd's data::prepare_sample (BGR, value - 128 as
 * ai8x::simulate_input computes it) and ai8x::fold (factor 2). */
#include "pose_input.h"

static void pose_rgb565_to_bgr(const uint8_t* p, uint8_t bgr[3]) {
  const unsigned r5 = (unsigned)p[0] >> 3;
  const unsigned g6 = (((unsigned)p[0] & 7u) << 3) | ((unsigned)p[1] >> 5);
  const unsigned b5 = (unsigned)p[1] & 31u;
  bgr[0] = (uint8_t)((b5 << 3) | (b5 >> 2));
  bgr[1] = (uint8_t)((g6 << 2) | (g6 >> 4));
  bgr[2] = (uint8_t)((r5 << 3) | (r5 >> 2));
}

/* The 12 folded channels of folded pixel (Y, X), fold order (i*2+j)*3+c, c in B, G, R. */
static void pose_fold_pixel(const uint8_t* frame, int rgb565, int Y, int X, int8_t v[POSE_FOLD_CHANNELS]) {
  int i, j, c;
  for (i = 0; i < POSE_FOLD; ++i)
    for (j = 0; j < POSE_FOLD; ++j) {
      const long idx = (long)(POSE_FOLD * Y + i) * POSE_INPUT_W + (POSE_FOLD * X + j);
      uint8_t bgr[3];
      if (rgb565) {
        pose_rgb565_to_bgr(frame + 2 * idx, bgr);
      } else {
        bgr[0] = frame[3 * idx + 2];
        bgr[1] = frame[3 * idx + 1];
        bgr[2] = frame[3 * idx + 0];
      }
      for (c = 0; c < 3; ++c) v[(i * POSE_FOLD + j) * 3 + c] = (int8_t)((int)bgr[c] - 128);
    }
}

static void pose_prepare_chw(const uint8_t* frame, int rgb565, int8_t* out) {
  int Y, X, k;
  int8_t v[POSE_FOLD_CHANNELS];
  for (Y = 0; Y < POSE_FOLD_H; ++Y)
    for (X = 0; X < POSE_FOLD_W; ++X) {
      pose_fold_pixel(frame, rgb565, Y, X, v);
      for (k = 0; k < POSE_FOLD_CHANNELS; ++k) out[(long)k * POSE_FOLD_PLANE + Y * POSE_FOLD_W + X] = v[k];
    }
}

static void pose_prepare_hwc(const uint8_t* frame, int rgb565, uint32_t* out) {
  int Y, X, q, k;
  int8_t v[POSE_HWC_GROUPS * 4];
  for (k = 0; k < POSE_HWC_GROUPS * 4; ++k) v[k] = 0;
  for (Y = 0; Y < POSE_FOLD_H; ++Y)
    for (X = 0; X < POSE_FOLD_W; ++X) {
      pose_fold_pixel(frame, rgb565, Y, X, v);
      for (q = 0; q < POSE_HWC_GROUPS; ++q) {
        uint32_t w = 0;
        for (k = 3; k >= 0; --k) w = (w << 8) | (uint8_t)v[4 * q + k];
        out[(long)q * POSE_FOLD_PLANE + Y * POSE_FOLD_W + X] = w;
      }
    }
}

void pose_prepare_rgb888(const uint8_t* rgb, int8_t* out) { pose_prepare_chw(rgb, 0, out); }
void pose_prepare_rgb565(const uint8_t* rgb565, int8_t* out) { pose_prepare_chw(rgb565, 1, out); }
void pose_prepare_hwc_rgb888(const uint8_t* rgb, uint32_t* out) { pose_prepare_hwc(rgb, 0, out); }
void pose_prepare_hwc_rgb565(const uint8_t* rgb565, uint32_t* out) { pose_prepare_hwc(rgb565, 1, out); }

void pose_pack_hwc(const int8_t* chw, uint32_t* out) {
  long p;
  int q, k;
  for (p = 0; p < POSE_FOLD_PLANE; ++p)
    for (q = 0; q < POSE_HWC_GROUPS; ++q) {
      uint32_t w = 0;
      for (k = 3; k >= 0; --k) {
        const int ch = 4 * q + k;
        w = (w << 8) | (ch < POSE_FOLD_CHANNELS ? (uint8_t)chw[(long)ch * POSE_FOLD_PLANE + p] : 0u);
      }
      out[(long)q * POSE_FOLD_PLANE + p] = w;
    }
}
