/* pose_harness.c - runs the exported C decoder and input preparation for posekd's known-answer
 * tests (tests/export/test_pose_c.cpp) and for the emulated Cortex-M4 (scripts/firmware_test.sh).
 *
 *   pose_harness decode HEAT.npy PAF.npy     raw accumulators (int64 .npy, as posekd export writes
 *                                            them) -> cnn_unload's words -> peaks and people
 *   pose_harness embed HEAT.npy PAF.npy      the same words as a C header (for the emulator)
 *   pose_harness input888|input565 FRAME OUT  frame bytes -> OUT: folded int8 [12][64][64], then
 *                                            the HWC words (little-endian) of the same input
 * Built with -DPOSE_HARNESS_EMBEDDED (and pose_outputs.h from `embed`), it takes no arguments and
 * decodes the embedded words. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pose_decode.h"
#include "pose_input.h"

#define NHEAT (POSE_NUM_HEATMAPS * POSE_MAP_H * POSE_MAP_W)
#define NPAF (POSE_NUM_PAFS * POSE_MAP_H * POSE_MAP_W)

static pose_person_t people[POSE_MAX_PEOPLE];
static pose_peaks_t peaks;

#ifdef POSE_HARNESS_EMBEDDED
#include "pose_outputs.h"

/* Stack use of pose_decode on the target: paint the stack below the caller, decode, find the
 * deepest word that changed. */
#define PAINT_WORDS 2048
static __attribute__((noinline)) void paint(void) {
  volatile uint32_t area[PAINT_WORDS];
  int i;
  for (i = 0; i < PAINT_WORDS; ++i) area[i] = 0xC0FFEE11u;
}
static __attribute__((noinline)) long unpainted(void) {
  volatile uint32_t area[PAINT_WORDS];
  int i;
  for (i = 0; i < PAINT_WORDS && area[i] == 0xC0FFEE11u; ++i) {
  }
  return (long)(PAINT_WORDS - i) * 4;
}
static __attribute__((noinline)) long decode_stack(const int32_t* heat, const int32_t* paf) {
  pose_stats_t st;
  paint();
  pose_decode(heat, paf, people, POSE_MAX_PEOPLE, &st);
  return unpainted();
}

/* Executed instructions of pose_decode: SysTick (processor clock, 25 MHz on mps2) under QEMU's
 * -icount shift=0, where every instruction advances the virtual clock by 1 ns: 40 per tick. */
#define SYST_CSR (*(volatile uint32_t*)0xE000E010)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018)
static long decode_ticks(const int32_t* heat, const int32_t* paf) {
  pose_stats_t st;
  uint32_t t0, t1;
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 5u; /* enable, processor clock, no interrupt */
  t0 = SYST_CVR;
  pose_decode(heat, paf, people, POSE_MAX_PEOPLE, &st);
  t1 = SYST_CVR;
  SYST_CVR = 0;
  {
    const uint32_t p0 = SYST_CVR;
    uint32_t p1;
    pose_find_peaks(heat, &peaks, &st);
    p1 = SYST_CVR;
    printf("ticks_peaks %ld\n", (long)((p0 - p1) & 0xFFFFFFu));
  }
  SYST_CSR = 0;
  return (long)((t0 - t1) & 0xFFFFFFu); /* counts down */
}
#else
static int32_t heat_words[NHEAT], paf_words[NPAF];
#endif

/* cnn_unload's scaling of one accumulator */
static int32_t unload(long long acc, int fs) {
  if (!POSE_OUTPUT_SCALED) return (int32_t)acc;
  return fs >= 0 ? (int32_t)(acc * (1LL << fs)) : (int32_t)(acc >> -fs);
}

static void print_results(const int32_t* heat, const int32_t* paf) {
  pose_stats_t st;
  int k, i, n;
  memset(&st, 0, sizeof st);
  pose_find_peaks(heat, &peaks, &st);
  for (k = 0; k < POSE_NUM_KPTS; ++k) {
    printf("peaks %d %d", k, peaks.count[k]);
    for (i = 0; i < peaks.count[k]; ++i)
      printf(" %d,%d,%d,%d,%.6f", peaks.peak[k][i].x, peaks.peak[k][i].y, peaks.peak[k][i].ux, peaks.peak[k][i].uy,
             peaks.peak[k][i].score);
    printf("\n");
  }
  n = pose_decode(heat, paf, people, POSE_MAX_PEOPLE, &st);
  printf("people %d\n", n);
  for (i = 0; i < n; ++i) {
    printf("person %d count %d score %.6f\n", i, people[i].count, people[i].score);
    for (k = 0; k < POSE_NUM_KPTS; ++k)
      if (people[i].kpt_score[k] > 0.f)
        printf("  kpt %d %.4f %.4f %.6f\n", k, people[i].x[k], people[i].y[k], people[i].kpt_score[k]);
  }
  printf("dropped %d %d %d\n", st.dropped_peaks, st.dropped_entries, st.dropped_people);
}

#ifndef POSE_HARNESS_EMBEDDED
/* int64 little-endian .npy of n values -> cnn_unload words */
static int read_npy(const char* path, int32_t* out, long n, int fs) {
  unsigned char head[10];
  unsigned hlen;
  long i;
  FILE* f = fopen(path, "rb");
  if (!f || fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY", 6) != 0 || head[6] != 1) {
    fprintf(stderr, "%s: not a version-1 .npy file\n", path);
    if (f) fclose(f);
    return 1;
  }
  hlen = head[8] | (head[9] << 8);
  if (fseek(f, (long)hlen, SEEK_CUR) != 0) return 1;
  for (i = 0; i < n; ++i) {
    unsigned char b[8];
    unsigned long long u = 0;
    int k;
    if (fread(b, 1, 8, f) != 8) {
      fprintf(stderr, "%s: %ld values, expected %ld\n", path, i, n);
      fclose(f);
      return 1;
    }
    for (k = 7; k >= 0; --k) u = (u << 8) | b[k];
    out[i] = unload((long long)u, fs);
  }
  fclose(f);
  return 0;
}

static void print_array(const char* name, const int32_t* v, long n) {
  long i;
  printf("static const int32_t %s[%ld] = {", name, n);
  for (i = 0; i < n; ++i) printf("%s%ld,", i % 12 == 0 ? "\n  " : " ", (long)v[i]);
  printf("\n};\n");
}

static int prepare(const char* mode, const char* in_path, const char* out_path) {
  static uint8_t frame[POSE_INPUT_H * POSE_INPUT_W * 3];
  static int8_t chw[POSE_FOLD_CHANNELS * POSE_FOLD_PLANE];
  static uint32_t hwc[POSE_HWC_GROUPS * POSE_FOLD_PLANE], hwc2[POSE_HWC_GROUPS * POSE_FOLD_PLANE];
  const int is565 = strcmp(mode, "input565") == 0;
  const size_t bytes = (size_t)POSE_INPUT_H * POSE_INPUT_W * (is565 ? 2 : 3);
  FILE* f = fopen(in_path, "rb");
  long i;
  if (!f || fread(frame, 1, bytes, f) != bytes) {
    fprintf(stderr, "%s: cannot read %lu frame bytes\n", in_path, (unsigned long)bytes);
    return 1;
  }
  fclose(f);
  if (is565) {
    pose_prepare_rgb565(frame, chw);
    pose_prepare_hwc_rgb565(frame, hwc);
  } else {
    pose_prepare_rgb888(frame, chw);
    pose_prepare_hwc_rgb888(frame, hwc);
  }
  pose_pack_hwc(chw, hwc2);
  if (memcmp(hwc, hwc2, sizeof hwc) != 0) {
    fprintf(stderr, "HWC words of the frame differ from the packed CHW input\n");
    return 1;
  }
  f = fopen(out_path, "wb");
  if (!f) return 1;
  fwrite(chw, 1, sizeof chw, f);
  for (i = 0; i < POSE_HWC_GROUPS * POSE_FOLD_PLANE; ++i) {
    unsigned char b[4];
    b[0] = (unsigned char)(hwc[i] & 255u);
    b[1] = (unsigned char)((hwc[i] >> 8) & 255u);
    b[2] = (unsigned char)((hwc[i] >> 16) & 255u);
    b[3] = (unsigned char)(hwc[i] >> 24);
    fwrite(b, 1, 4, f);
  }
  return fclose(f) != 0;
}
#endif

int main(int argc, char** argv) {
#ifdef POSE_HARNESS_EMBEDDED
  (void)argc;
  (void)argv;
  print_results(heat_words, paf_words);
  printf("stack %ld\n", decode_stack(heat_words, paf_words));
  printf("ticks %ld\n", decode_ticks(heat_words, paf_words));
  return 0;
#else
  if (argc == 4 && (strcmp(argv[1], "decode") == 0 || strcmp(argv[1], "embed") == 0)) {
    if (read_npy(argv[2], heat_words, NHEAT, POSE_HEAT_FINAL_SCALE) ||
        read_npy(argv[3], paf_words, NPAF, POSE_PAF_FINAL_SCALE))
      return 1;
    if (argv[1][0] == 'd') {
      print_results(heat_words, paf_words);
    } else {
      printf("/* cnn_unload words of %s and %s */\n#include <stdint.h>\n", argv[2], argv[3]);
      print_array("heat_words", heat_words, NHEAT);
      print_array("paf_words", paf_words, NPAF);
    }
    return 0;
  }
  if (argc == 4 && (strcmp(argv[1], "input888") == 0 || strcmp(argv[1], "input565") == 0))
    return prepare(argv[1], argv[2], argv[3]);
  fprintf(stderr, "usage: pose_harness decode|embed HEAT.npy PAF.npy | input888|input565 FRAME OUT\n");
  return 2;
#endif
}
