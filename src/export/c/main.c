/* main.c - posekd's firmware example for the MAX78000 (replaces the main.c ai8xize generates).
 *
 * Prepares the exported sample frame (pose_sample.h) as the CNN's input, runs the CNN, unloads the
 * two output layers, decodes the people on the Arm core, prints them, and checks them against the
 * people posekd decoded on the host from the same outputs. For a camera, call
 * pose_prepare_hwc_rgb565() on the frame instead of the sample. See FIRMWARE.md.
 *
 * Uses ai8xize's cnn.c/cnn.h (cnn_enable, cnn_init, cnn_load_weights, cnn_load_bias,
 * cnn_configure, cnn_start, cnn_unload, cnn_time) and the MSDK (mxc.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cnn.h"
#include "mxc.h"
#include "pose_decode.h"
#include "pose_input.h"
#include "pose_sample.h"

#define POSE_OUTPUT_WORDS ((POSE_NUM_HEATMAPS + POSE_NUM_PAFS) * POSE_MAP_H * POSE_MAP_W)

volatile uint32_t cnn_time; /* stopwatch, set by the CNN interrupt handler in cnn.c */

static uint32_t input_words[POSE_HWC_GROUPS * POSE_FOLD_PLANE];
static int32_t ml_data[POSE_OUTPUT_WORDS];
static pose_person_t people[POSE_MAX_PEOPLE];
static const char* const kpt_names[POSE_NUM_KPTS] = POSE_KEYPOINT_NAMES_INIT;

/* Streams the input into the accelerator's FIFOs, one word stream per input processor, as the
 * load_input() of an ai8xize project synthesized with --fifo does. Without --fifo, copy the body of
 * ai8xize's load_input() instead and replace its sample arrays by input_words + q * POSE_FOLD_PLANE. */
static void load_input(void) {
  int i, q;
  for (i = 0; i < POSE_FOLD_PLANE; ++i)
    for (q = 0; q < POSE_HWC_GROUPS; ++q) {
      while ((*((volatile uint32_t*)(uintptr_t)0x50000004u) & (1u << q)) != 0) {
      } /* wait while FIFO q is full */
      *((volatile uint32_t*)(uintptr_t)(0x50000008u + 4u * (uint32_t)q)) = input_words[q * POSE_FOLD_PLANE + i];
    }
}

static int check_people(int n) {
  int i, k, bad = 0;
  if (n != POSE_SAMPLE_PEOPLE) return 1;
  for (i = 0; i < n; ++i) {
    if ((int)pose_sample_expected[i][0] != people[i].count) bad = 1;
    for (k = 0; k < POSE_NUM_KPTS; ++k) {
      const float ex = pose_sample_expected[i][1 + 2 * k], ey = pose_sample_expected[i][2 + 2 * k];
      const int present = people[i].kpt_score[k] > 0.f;
      if (present != (ex >= 0.f)) bad = 1;
      if (present && (fabsf(ex - people[i].x[k]) > 0.01f || fabsf(ey - people[i].y[k]) > 0.01f)) bad = 1;
    }
  }
  return bad;
}

int main(void) {
  int n, i, k;
  uint32_t t0, decode_cycles;
  pose_stats_t stats;

  MXC_ICC_Enable(MXC_ICC0);                /* instruction cache */
  MXC_SYS_Clock_Select(MXC_SYS_CLOCK_IPO); /* 100 MHz */
  SystemCoreClockUpdate();
  printf("\nposekd pose estimation on the MAX78000\n");

  /* camera frame -> CNN input (here: the exported sample frame) */
  pose_prepare_hwc_rgb888(pose_sample_rgb888, input_words);

  cnn_enable(MXC_S_GCR_PCLKDIV_CNNCLKSEL_PCLK, MXC_S_GCR_PCLKDIV_CNNCLKDIV_DIV1);
  cnn_init();
  cnn_load_weights();
  cnn_load_bias();
  cnn_configure();
  cnn_start();
  load_input();
  while (cnn_time == 0) MXC_LP_EnterSleepMode();
  cnn_unload((uint32_t*)ml_data);
  cnn_disable();
  printf("CNN: %u us\n", (unsigned)cnn_time);

  /* decode on the Arm core, timed with the cycle counter */
  CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;
  DWT->CYCCNT = 0;
  DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
  t0 = DWT->CYCCNT;
  n = pose_decode(ml_data, ml_data + POSE_NUM_HEATMAPS * POSE_MAP_H * POSE_MAP_W, people, POSE_MAX_PEOPLE, &stats);
  decode_cycles = DWT->CYCCNT - t0;
  printf("decode: %u cycles (%u us)\n", (unsigned)decode_cycles,
         (unsigned)(decode_cycles / (SystemCoreClock / 1000000)));

  printf("people %d\n", n);
  for (i = 0; i < n; ++i) {
    printf("person %d: %d keypoints, score %.3f\n", i, people[i].count, (double)people[i].score);
    for (k = 0; k < POSE_NUM_KPTS; ++k)
      if (people[i].kpt_score[k] > 0.f)
        printf("  %-7s %6.1f %6.1f  %.2f\n", kpt_names[k], (double)people[i].x[k], (double)people[i].y[k],
               (double)people[i].kpt_score[k]);
  }
  if (stats.dropped_peaks || stats.dropped_entries || stats.dropped_people)
    printf("buffers full: %u peaks, %u partial skeletons, %u people dropped\n", stats.dropped_peaks,
           stats.dropped_entries, stats.dropped_people);
  printf("%s\n", check_people(n) ? "FAIL: people differ from the host's" : "PASS: same people as the host");
  return 0;
}
