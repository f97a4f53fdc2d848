/* pose_decode.c - see pose_decode.h. Written by `posekd export`; the reference is posekd's C++
 * decoder (src/infer/peaks.cpp, grouping.cpp, decode.cpp), which it follows step for step. */
#include "pose_decode.h"

#include <math.h>
#include <string.h>

#define POSE_PLANE (POSE_MAP_H * POSE_MAP_W)
#if POSE_LOCAL_UPSAMPLE > 1
#define POSE_F POSE_LOCAL_UPSAMPLE
#else
#define POSE_F 1
#endif
#define POSE_GRID_H (POSE_MAP_H * POSE_F) /* grouping / coordinate resolution */
#define POSE_GRID_W (POSE_MAP_W * POSE_F)
#ifdef __GNUC__
#define POSE_NOINLINE __attribute__((noinline)) /* keeps a hot loop a leaf with its own registers */
#else
#define POSE_NOINLINE
#endif

static const uint8_t pose_group_limbs[POSE_NUM_LIMBS][2] = POSE_GROUP_LIMBS_INIT;
static const uint8_t pose_group_pafs[POSE_NUM_LIMBS][2] = POSE_GROUP_PAFS_INIT;

/* Partial skeletons while grouping: peak index per keypoint type (-1 = none). */
typedef struct {
  double score;
  int16_t count;
  int8_t kpt[POSE_NUM_KPTS];
} pose_entry_t;

/* All working memory (fixed, static). */
static struct {
#if POSE_F > 1
  const int32_t* paf[2];           /* the PAF pair of the limb being grouped */
  float at[2][POSE_MAX_PEAKS][2];  /* that pair at the pixels of the limb's peaks (a, b), word units */
  uint8_t have[2][POSE_MAX_PEAKS]; /* at[e][i] computed */
#endif
  double cand_score[POSE_MAX_CANDIDATES]; /* candidate connections of one limb */
  uint8_t cand_a[POSE_MAX_CANDIDATES], cand_b[POSE_MAX_CANDIDATES];
  uint16_t order[POSE_MAX_CANDIDATES];
  uint8_t used_a[POSE_MAX_PEAKS], used_b[POSE_MAX_PEAKS];
  pose_entry_t entry[POSE_MAX_ENTRIES];
  pose_peaks_t peaks;
} pose_ws;

float pose_heat_value(int32_t v) { return (float)v * POSE_HEAT_UNIT; }
float pose_paf_value(int32_t v) { return (float)v * POSE_PAF_UNIT; }

/* Sample order of pose_affinity: from the middle of the limb to a, then from the middle to b (a
 * wrong candidate fails in the middle soonest, and neighbouring samples come one after the other;
 * the result does not depend on the order), built by pose_tables. */
static uint8_t pose_sample_order[POSE_POINTS_PER_LIMB];
/* The smallest output word whose heatmap value reaches the peak threshold: pose_heat_value is
 * non-decreasing, so `word >= pose_thr_word` is `pose_heat_value(word) >= POSE_PEAK_THRESHOLD`. */
static int32_t pose_thr_word;
static int pose_thr_none;                           /* no word reaches the threshold */
static double pose_denom[POSE_POINTS_PER_LIMB + 1]; /* (double)n + 1e-6, the affinity's divisor */
/* The divisors as integers for pose_div: denom = mant * 2^exp (mant in [2^52, 2^53)), and
 * recip = floor(2^116 / mant) (0: use the plain division). */
static uint64_t pose_denom_mant[POSE_POINTS_PER_LIMB + 1], pose_denom_recip[POSE_POINTS_PER_LIMB + 1];
static int pose_denom_exp[POSE_POINTS_PER_LIMB + 1];
static int pose_tables_ready;

#if POSE_F > 1
/* OpenCV's INTER_CUBIC upsampling by F (pixel centres aligned, edges replicated), one value at a
 * time: output pixel X reads source columns X / F + offset[X % F] - 1 .. + 2 with coefficients
 * coeff[X % F]; rows likewise; the horizontal pass first, then the vertical one, as cv::resize. */
static const float pose_cubic_coeff[POSE_F][4] = POSE_CUBIC_COEFFS_INIT;
static const int8_t pose_cubic_offset[POSE_F] = POSE_CUBIC_OFFSET_INIT;

static int pose_clampi(int v, int hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

/* source columns / rows (clamped) of every upsampled column / row, filled on first use */
static uint8_t pose_cols[POSE_GRID_W][4], pose_rows[POSE_GRID_H][4];
#endif

static void pose_tables(void) {
  int i, d;
  int64_t lo = INT32_MIN, hi = INT32_MAX;
#if POSE_F > 1
  int X, k;
  for (X = 0; X < POSE_GRID_W; ++X)
    for (k = 0; k < 4; ++k)
      pose_cols[X][k] = (uint8_t)pose_clampi(X / POSE_F + pose_cubic_offset[X % POSE_F] - 1 + k, POSE_MAP_W - 1);
  for (X = 0; X < POSE_GRID_H; ++X)
    for (k = 0; k < 4; ++k)
      pose_rows[X][k] = (uint8_t)pose_clampi(X / POSE_F + pose_cubic_offset[X % POSE_F] - 1 + k, POSE_MAP_H - 1);
#endif
  for (i = 0, d = (POSE_POINTS_PER_LIMB - 1) / 2; d >= 0; --d) pose_sample_order[i++] = (uint8_t)d;
  for (d = (POSE_POINTS_PER_LIMB - 1) / 2 + 1; d < POSE_POINTS_PER_LIMB; ++d) pose_sample_order[i++] = (uint8_t)d;
  for (i = 0; i <= POSE_POINTS_PER_LIMB; ++i) {
    uint64_t bits, m, r = 0, rem = 1;
    int b;
    pose_denom[i] = (double)i + 1e-6;
    memcpy(&bits, &pose_denom[i], sizeof bits);
    m = (bits & 0xFFFFFFFFFFFFFull) | 0x10000000000000ull;
    pose_denom_mant[i] = m;
    pose_denom_exp[i] = (int)((bits >> 52) & 0x7FF) - 1075;
    pose_denom_recip[i] = 0;
    if (((bits >> 52) & 0x7FF) == 0 || ((bits >> 52) & 0x7FF) == 0x7FF || m == 0x10000000000000ull) continue;
    for (b = 0; b < 116; ++b) { /* long division: floor(2^116 / m), below 2^64 as m > 2^52 */
      rem <<= 1;
      r <<= 1;
      if (rem >= m) {
        rem -= m;
        r |= 1;
      }
    }
    pose_denom_recip[i] = r;
  }
  /* bisection on the words, with the decoder's own conversion */
  pose_thr_none = !(pose_heat_value(INT32_MAX) >= POSE_PEAK_THRESHOLD);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pose_heat_value((int32_t)mid) >= POSE_PEAK_THRESHOLD)
      hi = mid;
    else
      lo = mid + 1;
  }
  pose_thr_word = (int32_t)lo;
  pose_tables_ready = 1;
}

#if POSE_F > 1
#define POSE_WIN (POSE_F + 2 * (POSE_F / 2))       /* refinement window, upsampled pixels per side */
#define POSE_WIN_SRC ((POSE_WIN - 1) / POSE_F + 5) /* source rows / columns a window reads, at most */

/* First source row / column (before clamping) that upsampled row / column X reads; non-decreasing. */
#define POSE_CUBIC_FIRST(X) ((int)((unsigned)(X) / POSE_F) + pose_cubic_offset[(unsigned)(X) % POSE_F] - 1)

/* Moves a peak to the first maximum (x, then y) of the upsampled heatmap over its cell widened by
 * F / 2 pixels on each side. The source values the window reads are converted to floats once, into
 * a block with the map's edges replicated (so that the four taps of every pass are adjacent), the
 * horizontal pass is computed once per source row and window column, the vertical pass once per
 * pixel. In word units: the unit (a power of two) multiplies the best value only, which gives the
 * same floats and the same comparisons (scaling by a power of two commutes with rounding). */
static void pose_refine_local(const int32_t* h, pose_peak_t* p) {
  float src[POSE_WIN_SRC][POSE_WIN_SRC]; /* source rows u0 + i, columns v0 + j (clamped to the map) */
  float hc[POSE_WIN_SRC][POSE_WIN];      /* horizontal pass: source row u0 + i, window column j */
  const int x0 = p->x * POSE_F - POSE_F / 2 < 0 ? 0 : p->x * POSE_F - POSE_F / 2;
  const int y0 = p->y * POSE_F - POSE_F / 2 < 0 ? 0 : p->y * POSE_F - POSE_F / 2;
  const int x1 = pose_clampi(p->x * POSE_F + POSE_F - 1 + POSE_F / 2, POSE_GRID_W - 1);
  const int y1 = pose_clampi(p->y * POSE_F + POSE_F - 1 + POSE_F / 2, POSE_GRID_H - 1);
  const int u0 = POSE_CUBIC_FIRST(y0), nu = POSE_CUBIC_FIRST(y1) + 4 - u0;
  const int v0 = POSE_CUBIC_FIRST(x0), nv = POSE_CUBIC_FIRST(x1) + 4 - v0, nx = x1 - x0 + 1;
  int X, Y, i, j, bj = 0, by = y0;
  float best = -INFINITY; /* the values are finite: the first pixel replaces it */
  if (u0 >= 0 && u0 + nu <= POSE_MAP_H && v0 >= 0 && v0 + nv <= POSE_MAP_W) { /* inside the map */
    const int32_t* row = h + u0 * POSE_MAP_W + v0;
    for (i = 0; i < nu; ++i, row += POSE_MAP_W)
      for (j = 0; j < nv; ++j) src[i][j] = (float)row[j];
  } else {
    for (i = 0; i < nu; ++i) {
      const int32_t* row = h + pose_clampi(u0 + i, POSE_MAP_H - 1) * POSE_MAP_W;
      for (j = 0; j < nv; ++j) src[i][j] = (float)row[pose_clampi(v0 + j, POSE_MAP_W - 1)];
    }
  }
  /* up to four columns that read the same source columns together (each row's four values loaded
   * once) */
  for (X = x0; X <= x1;) {
    const int f = POSE_CUBIC_FIRST(X);
    const float* a = pose_cubic_coeff[X % POSE_F];
    const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    const float* s = &src[0][f - v0];
    float* o = &hc[0][X - x0];
    if (X + 3 <= x1 && POSE_CUBIC_FIRST(X + 3) == f) {
      const float *c = pose_cubic_coeff[(X + 1) % POSE_F], *d = pose_cubic_coeff[(X + 2) % POSE_F],
                  *e = pose_cubic_coeff[(X + 3) % POSE_F];
      const float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
      const float e0 = e[0], e1 = e[1], e2 = e[2], e3 = e[3];
      for (i = 0; i < nu; ++i, s += POSE_WIN_SRC, o += POSE_WIN) {
        const float s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
        o[0] = s0 * a0 + s1 * a1 + s2 * a2 + s3 * a3;
        o[1] = s0 * c0 + s1 * c1 + s2 * c2 + s3 * c3;
        o[2] = s0 * d0 + s1 * d1 + s2 * d2 + s3 * d3;
        o[3] = s0 * e0 + s1 * e1 + s2 * e2 + s3 * e3;
      }
      X += 4;
    } else if (X < x1 && POSE_CUBIC_FIRST(X + 1) == f) {
      const float* c = pose_cubic_coeff[(X + 1) % POSE_F];
      const float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
      for (i = 0; i < nu; ++i, s += POSE_WIN_SRC, o += POSE_WIN) {
        const float s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
        o[0] = s0 * a0 + s1 * a1 + s2 * a2 + s3 * a3;
        o[1] = s0 * c0 + s1 * c1 + s2 * c2 + s3 * c3;
      }
      X += 2;
    } else {
      for (i = 0; i < nu; ++i, s += POSE_WIN_SRC, o += POSE_WIN) *o = s[0] * a0 + s[1] * a1 + s[2] * a2 + s[3] * a3;
      X += 1;
    }
  }
  /* rows outside, columns inside: the first maximum in posekd's order (x, then y) is the largest
   * value, on a tie the one with the smaller column, then the earlier row. Up to four rows that
   * read the same source rows are done together (each column's four values loaded once); within a
   * column the rows come in order, so a tie at the same column keeps the earlier row. */
#define POSE_PICK(v, row)                      \
  if ((v) >= best && ((v) > best || j < bj)) { \
    best = (v);                                \
    bj = j;                                    \
    by = (row);                                \
  }
  for (Y = y0; Y <= y1;) {
    const int f = POSE_CUBIC_FIRST(Y);
    const float* q = hc[f - u0];
    const float* b = pose_cubic_coeff[Y % POSE_F];
    const float b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
    if (Y + 3 <= y1 && POSE_CUBIC_FIRST(Y + 3) == f) {
      const float *c = pose_cubic_coeff[(Y + 1) % POSE_F], *d = pose_cubic_coeff[(Y + 2) % POSE_F],
                  *e = pose_cubic_coeff[(Y + 3) % POSE_F];
      const float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
      const float e0 = e[0], e1 = e[1], e2 = e[2], e3 = e[3];
      for (j = 0; j < nx; ++j, ++q) {
        const float h0 = q[0], h1 = q[POSE_WIN], h2 = q[2 * POSE_WIN], h3 = q[3 * POSE_WIN];
        const float v = h0 * b0 + h1 * b1 + h2 * b2 + h3 * b3, w = h0 * c0 + h1 * c1 + h2 * c2 + h3 * c3;
        const float t = h0 * d0 + h1 * d1 + h2 * d2 + h3 * d3, z = h0 * e0 + h1 * e1 + h2 * e2 + h3 * e3;
        POSE_PICK(v, Y)
        POSE_PICK(w, Y + 1)
        POSE_PICK(t, Y + 2)
        POSE_PICK(z, Y + 3)
      }
      Y += 4;
    } else if (Y < y1 && POSE_CUBIC_FIRST(Y + 1) == f) {
      const float* c = pose_cubic_coeff[(Y + 1) % POSE_F];
      const float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
      for (j = 0; j < nx; ++j, ++q) {
        const float h0 = q[0], h1 = q[POSE_WIN], h2 = q[2 * POSE_WIN], h3 = q[3 * POSE_WIN];
        const float v = h0 * b0 + h1 * b1 + h2 * b2 + h3 * b3, w = h0 * c0 + h1 * c1 + h2 * c2 + h3 * c3;
        POSE_PICK(v, Y)
        POSE_PICK(w, Y + 1)
      }
      Y += 2;
    } else {
      for (j = 0; j < nx; ++j, ++q) {
        const float v = q[0] * b0 + q[POSE_WIN] * b1 + q[2 * POSE_WIN] * b2 + q[3 * POSE_WIN] * b3;
        POSE_PICK(v, Y)
      }
      Y += 1;
    }
  }
#undef POSE_PICK
  p->ux = (uint8_t)(x0 + bj);
  p->uy = (uint8_t)by;
  p->score = best * POSE_HEAT_UNIT;
  p->fx = (float)(x0 + bj);
  p->fy = (float)by;
}
#endif

#if POSE_SUBCELL && POSE_F == 1
/* Vertex of the parabola through (l, c, r), as infer::subcell_offset. */
static float pose_subcell(float l, float c, float r) {
  const float d = (l - c) + (r - c);
  float o;
  if (!(d < 0.f)) return 0.f;
  o = 0.5f * (l - r) / d;
  return o < -0.5f ? -0.5f : (o > 0.5f ? 0.5f : o);
}
#endif

/* 1.5 * 2^23: (v + it) - it rounds |v| < 2^22 to an integer exactly as nearbyintf (round half to
 * even, default rounding mode), without a library call. Volatile: the compiler may not fold it. */
static volatile float pose_round_big = 12582912.f;

/* The first word at or below pc in its column (pc, pc + W, ... before end) that reaches the
 * threshold, or end: most cells cost one load and one comparison. */
POSE_NOINLINE static const int32_t* pose_scan(const int32_t* pc, const int32_t* end, int32_t thr) {
  int left = (int)(end - pc) / POSE_MAP_W;
  for (; left >= 4; left -= 4, pc += 4 * POSE_MAP_W) { /* four cells per step */
    if (pc[0] >= thr) return pc;
    if (pc[POSE_MAP_W] >= thr) return pc + POSE_MAP_W;
    if (pc[2 * POSE_MAP_W] >= thr) return pc + 2 * POSE_MAP_W;
    if (pc[3 * POSE_MAP_W] >= thr) return pc + 3 * POSE_MAP_W;
  }
  for (; left > 0; --left, pc += POSE_MAP_W)
    if (*pc >= thr) return pc;
  return end;
}

/* Peaks of posekd's peak search (peaks.cpp): cells whose thresholded value is larger than their
 * four thresholded neighbours (zero outside the map). The threshold is positive (pose_params.h is
 * only written so), so a peak's own value reaches it, and then it is larger than a thresholded
 * neighbour exactly when it is larger than the neighbour's raw value: the test runs on the words,
 * the threshold as an integer, the neighbours as floats (as exact as the float values). */
void pose_find_peaks(const int32_t* heat, pose_peaks_t* peaks, pose_stats_t* stats) {
  int k, x, y, i;
  if (!pose_tables_ready) pose_tables();
  for (k = 0; k < POSE_NUM_KPTS; ++k) {
    const int32_t* h = heat + k * POSE_PLANE;
    const int32_t thr = pose_thr_word;
    int n = 0;
    peaks->count[k] = 0;
    if (pose_thr_none) continue;
    /* Column-major scan: x ascending, then y (posekd's order); a candidate is kept unless an
     * earlier kept peak lies within the suppression radius. */
    for (x = 0; x < POSE_MAP_W; ++x) {
      const int32_t *pc = h + x, *const end = h + x + POSE_PLANE;
      for (; (pc = pose_scan(pc, end, thr)) != end; pc += POSE_MAP_W) {
        float c;
        int keep = 1;
        y = (int)(pc - h) / POSE_MAP_W;
        c = (float)*pc;
        if (!((x == 0 || c > (float)pc[-1]) && (x == POSE_MAP_W - 1 || c > (float)pc[1]) &&
              (y == 0 || c > (float)pc[-POSE_MAP_W]) && (y == POSE_MAP_H - 1 || c > (float)pc[POSE_MAP_W])))
          continue;
        for (i = 0; i < n; ++i) {
          const int dx = (int)peaks->peak[k][i].x - x, dy = (int)peaks->peak[k][i].y - y;
          if (dx * dx + dy * dy <= POSE_SUPPRESS_MAX_D2) {
            keep = 0;
            break;
          }
        }
        if (!keep) continue;
        if (n == POSE_MAX_PEAKS) {
          if (stats) stats->dropped_peaks++;
          continue;
        }
        {
          pose_peak_t* p = &peaks->peak[k][n++];
          p->x = p->ux = (uint8_t)x;
          p->y = p->uy = (uint8_t)y;
          p->score = c * POSE_HEAT_UNIT;
          p->fx = (float)x;
          p->fy = (float)y;
#if POSE_F > 1
          pose_refine_local(h, p);
#elif POSE_SUBCELL
          {
            const float r = pose_heat_value(h[y * POSE_MAP_W + x]);
            if (x > 0 && x < POSE_MAP_W - 1)
              p->fx += pose_subcell(pose_heat_value(h[y * POSE_MAP_W + x - 1]), r,
                                    pose_heat_value(h[y * POSE_MAP_W + x + 1]));
            if (y > 0 && y < POSE_MAP_H - 1)
              p->fy += pose_subcell(pose_heat_value(h[(y - 1) * POSE_MAP_W + x]), r,
                                    pose_heat_value(h[(y + 1) * POSE_MAP_W + x]));
          }
#endif
        }
      }
    }
    peaks->count[k] = (uint8_t)n;
  }
}

/* numpy's float32 pairwise sum of n terms (8 accumulators for 8 <= n <= 128). */
static float pose_numpy_sum(const float* a, int n) {
  float r[8], res;
  int i, k;
  if (n < 8 || n > 128) {
    res = 0.f;
    for (i = 0; i < n; ++i) res += a[i];
    return res;
  }
  for (k = 0; k < 8; ++k) r[k] = a[k];
  for (i = 8; i + 8 <= n; i += 8)
    for (k = 0; k < 8; ++k) r[k] += a[i + k];
  res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) res += a[i];
  return res;
}

#if POSE_F > 1
/* Horizontal pass of source row r (taps at its columns i0..i3), as cv::resize: ((t0 + t1) + t2) + t3;
 * the vertical pass then adds the four rows as ((h0 * b0 + h1 * b1) + h2 * b2) + h3 * b3. */
#define POSE_HTAPS(r, i0, i1, i2, i3) \
  ((float)(r)[i0] * a0 + (float)(r)[i1] * a1 + (float)(r)[i2] * a2 + (float)(r)[i3] * a3)

/* The limb's PAF pair (pose_ws.paf) upsampled at grouping pixel (X, Y), in word units. */
static void pose_cubic_pair(int X, int Y, float* out) {
  const float *a = pose_cubic_coeff[X % POSE_F], *b = pose_cubic_coeff[Y % POSE_F];
  const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
  const int u = POSE_CUBIC_FIRST(Y), v = POSE_CUBIC_FIRST(X);
  const int32_t *p = pose_ws.paf[0], *q = pose_ws.paf[1];
  float sp, sq;
  if (u >= 0 && u + 3 < POSE_MAP_H && v >= 0 && v + 3 < POSE_MAP_W) {
    /* inside the map: the 4x4 source block at (u, v), no clamping */
    p += u * POSE_MAP_W + v;
    q += u * POSE_MAP_W + v;
    sp = POSE_HTAPS(p, 0, 1, 2, 3) * b[0];
    sq = POSE_HTAPS(q, 0, 1, 2, 3) * b[0];
    sp = sp + POSE_HTAPS(p + POSE_MAP_W, 0, 1, 2, 3) * b[1];
    sq = sq + POSE_HTAPS(q + POSE_MAP_W, 0, 1, 2, 3) * b[1];
    sp = sp + POSE_HTAPS(p + 2 * POSE_MAP_W, 0, 1, 2, 3) * b[2];
    sq = sq + POSE_HTAPS(q + 2 * POSE_MAP_W, 0, 1, 2, 3) * b[2];
    sp = sp + POSE_HTAPS(p + 3 * POSE_MAP_W, 0, 1, 2, 3) * b[3];
    sq = sq + POSE_HTAPS(q + 3 * POSE_MAP_W, 0, 1, 2, 3) * b[3];
  } else {
    /* at the edges: clamped rows and columns (replicated edges) */
    const uint8_t *c = pose_cols[X], *r = pose_rows[Y];
    const int c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    int k;
    sp = sq = 0.f;
    for (k = 0; k < 4; ++k) {
      const int32_t *rp = p + r[k] * POSE_MAP_W, *rq = q + r[k] * POSE_MAP_W;
      const float hp = POSE_HTAPS(rp, c0, c1, c2, c3), hq = POSE_HTAPS(rq, c0, c1, c2, c3);
      if (k == 0) {
        sp = hp * b[0];
        sq = hq * b[0];
      } else {
        sp = sp + hp * b[k];
        sq = sq + hq * b[k];
      }
    }
  }
  out[0] = sp;
  out[1] = sq;
}
#endif

#if POSE_F > 1
/* The limb's PAF pair at the pixel of peak i of end e (0 = a, 1 = b), computed once per limb. */
static const float* pose_paf_at_peak(int e, int i, const pose_peak_t* pk) {
  if (!pose_ws.have[e][i]) {
    pose_cubic_pair(pk->ux, pk->uy, pose_ws.at[e][i]);
    pose_ws.have[e][i] = 1;
  }
  return pose_ws.at[e][i];
}
#endif

/* (double)f / pose_denom[n], correctly rounded as the division is, for f > 0, without the
 * soft-float division routine (~550 instructions on the Cortex-M4): f = F * 2^a (F 24 bits), the
 * divisor M * 2^b (M 53 bits); N = floor(F * 2^85 / M) has 56 or 57 bits, from the reciprocal
 * (at most one short) corrected with the exact remainder F * 2^85 - N * M (below 2^64, so it can
 * be computed modulo 2^64, where F * 2^85 vanishes); then round to nearest even on 53 bits with the
 * remainder as sticky bit. Anything unusual (zero, subnormal, infinite, out of range) divides. */
static double pose_div(float f, int n) {
  uint32_t fb;
  uint64_t F, N, m, rem, Q, low, half, bits;
  int shift, e;
  double q;
  memcpy(&fb, &f, sizeof fb);
  m = pose_denom_mant[n];
  if ((fb >> 23) == 0 || (fb >> 23) >= 0xFF || pose_denom_recip[n] == 0) return (double)f / pose_denom[n];
  F = (fb & 0x7FFFFFu) | 0x800000u;
  N = ((F * (pose_denom_recip[n] >> 32)) << 1) + ((F * (pose_denom_recip[n] & 0xFFFFFFFFu)) >> 31);
  rem = (uint64_t)0 - N * m;
  while (rem >= m) {
    rem -= m;
    ++N;
  }
  shift = (N >> 56) ? 4 : 3;
  Q = N >> shift;
  low = N & (((uint64_t)1 << shift) - 1);
  half = (uint64_t)1 << (shift - 1);
  if (low > half || (low == half && (rem != 0 || (Q & 1)))) ++Q;
  e = ((int)(fb >> 23) - 150) - pose_denom_exp[n] - 85 + shift; /* value = Q * 2^e */
  if (Q >> 53) {
    Q >>= 1;
    ++e;
  }
  if (e + 1075 < 1 || e + 1075 > 2046) return (double)f / pose_denom[n];
  bits = ((uint64_t)(e + 1075) << 52) | (Q & 0xFFFFFFFFFFFFFull);
  memcpy(&q, &bits, sizeof q);
  return q;
}

/* Whether the limb a->b is a candidate connection (infer::limb_affinity: enough passing samples and
 * a positive mean passing PAF projection, the mean in *score), a = peak ia of the limb's first
 * keypoint type, b = peak jb of the second. With local upsampling, the limb's PAF pair is in
 * pose_ws (pose_group). */
static int pose_affinity(const int32_t* px, const int32_t* py, const pose_peak_t* a, int ia, const pose_peak_t* b,
                         int jb, double* score) {
  float terms[POSE_POINTS_PER_LIMB];
  const float ax = (float)a->ux, ay = (float)a->uy, bx = (float)b->ux, by = (float)b->uy;
  const float vx = bx - ax, vy = by - ay;
  const float step = POSE_POINTS_PER_LIMB > 1 ? 1.f / (float)(POSE_POINTS_PER_LIMB - 1) : 0.f;
  const float sx = step * vx, sy = step * vy;
  const float norm = sqrtf(vx * vx + vy * vy);
  const float ux = vx / (norm + 1e-6f), uy = vy / (norm + 1e-6f);
  const float big = pose_round_big;
  const float short_limb = POSE_SHORT_LIMB;
  /* ends closer than POSE_SHORT_LIMB: accepted with at least this score (infer::GroupParams) */
  const int is_short = norm < short_limb;
  const double close = is_short ? (double)(0.1f * ((short_limb - norm) / short_limb)) : 0.0;
  int i, n = 0, fails = 0;
#if POSE_F > 1
  const float uxs = ux * POSE_PAF_UNIT, uys = uy * POSE_PAF_UNIT;
  float tmp[2];
  const float* last = tmp; /* the PAF pair at the previous sample's pixel */
  int last_key = -1;
#endif
#if POSE_F == 1
  (void)ia;
  (void)jb;
#else
  (void)px;
  (void)py;
#endif
  for (i = 0; i < POSE_POINTS_PER_LIMB; ++i) {
    const int t = pose_sample_order[i];
    const float fx = sx * (float)t + ax, fy = sy * (float)t + ay;
    int x = (int)((fx + big) - big), y = (int)((fy + big) - big);
    float s;
    x = x < 0 ? 0 : (x > POSE_GRID_W - 1 ? POSE_GRID_W - 1 : x);
    y = y < 0 ? 0 : (y > POSE_GRID_H - 1 ? POSE_GRID_H - 1 : y);
#if POSE_F > 1
    {
      const int key = x | y << 8;
      if (key != last_key) {          /* on a short limb, neighbouring samples can share a pixel */
        if (x == a->ux && y == a->uy) /* always sample 0 */
          last = pose_paf_at_peak(0, ia, a);
        else if (x == b->ux && y == b->uy)
          last = pose_paf_at_peak(1, jb, b);
        else {
          pose_cubic_pair(x, y, tmp);
          last = tmp;
        }
        last_key = key;
      }
      /* (v * unit) * u == v * (u * unit): the unit is a power of two */
      s = last[0] * uxs + last[1] * uys;
    }
#else
    s = pose_paf_value(px[y * POSE_MAP_W + x]) * ux + pose_paf_value(py[y * POSE_MAP_W + x]) * uy;
#endif
    if (s > POSE_MIN_PAF_SCORE) {
      ++n;
      terms[t] = s;
    } else {
      terms[t] = 0.f;
      /* too many failed samples already: the PAF test cannot pass */
      if (++fails > POSE_POINTS_PER_LIMB - POSE_MIN_VALID_SAMPLES) {
        *score = close;
        return is_short;
      }
    }
  }
  {
    /* the mean is positive exactly when the float sum is (the divisor is >= 1e-6, the quotient of
     * a positive float by it a normal double): no double comparison needed */
    const float sum = pose_numpy_sum(terms, POSE_POINTS_PER_LIMB);
    if (!(sum > 0.f) || n < POSE_MIN_VALID_SAMPLES) {
      *score = close;
      return is_short;
    }
    *score = pose_div(sum, n);
    if (is_short && close > *score) *score = close;
    return 1;
  }
}

static int pose_new_entry(int* n_entries, int ka, int kb, int ia, int ib, double s, const pose_peaks_t* peaks,
                          pose_stats_t* stats) {
  pose_entry_t* e;
  if (*n_entries == POSE_MAX_ENTRIES) {
    if (stats) stats->dropped_entries++;
    return 0;
  }
  e = &pose_ws.entry[(*n_entries)++];
  memset(e->kpt, -1, sizeof e->kpt);
  e->kpt[ka] = (int8_t)ia;
  e->kpt[kb] = (int8_t)ib;
  e->count = 2;
  e->score = (double)peaks->peak[ka][ia].score + (double)peaks->peak[kb][ib].score + s;
  return 1;
}

int pose_group(const pose_peaks_t* peaks, const int32_t* paf, pose_person_t* people, int max_people,
               pose_stats_t* stats) {
  int part, n_entries = 0, n_people = 0, i, j, c;
  if (!pose_tables_ready) pose_tables();
  for (part = 0; part < POSE_NUM_LIMBS; ++part) {
    const int ka = pose_group_limbs[part][0], kb = pose_group_limbs[part][1];
    const int n = peaks->count[ka], m = peaks->count[kb];
    const int32_t* px = paf + pose_group_pafs[part][0] * POSE_PLANE;
    const int32_t* py = paf + pose_group_pafs[part][1] * POSE_PLANE;
    int nc = 0, o;
    if (n == 0 || m == 0) continue;
#if POSE_F > 1
    pose_ws.paf[0] = px;
    pose_ws.paf[1] = py;
    memset(pose_ws.have, 0, sizeof pose_ws.have);
#endif
    /* candidates in Lightweight-OpenPose's flat order (B outer, A inner) */
    for (j = 0; j < m; ++j)
      for (i = 0; i < n; ++i) {
        double s;
        if (pose_affinity(px, py, &peaks->peak[ka][i], i, &peaks->peak[kb][j], j, &s)) {
          pose_ws.cand_score[nc] = s;
          pose_ws.cand_a[nc] = (uint8_t)i;
          pose_ws.cand_b[nc] = (uint8_t)j;
          ++nc;
        }
      }
    if (nc == 0) continue;
    /* score descending; equal scores: the later candidate first (insertion sort) */
    for (c = 0; c < nc; ++c) {
      const double s = pose_ws.cand_score[c];
      o = c;
      while (o > 0 && pose_ws.cand_score[pose_ws.order[o - 1]] <= s) {
        pose_ws.order[o] = pose_ws.order[o - 1];
        --o;
      }
      pose_ws.order[o] = (uint16_t)c;
    }
    memset(pose_ws.used_a, 0, sizeof pose_ws.used_a);
    memset(pose_ws.used_b, 0, sizeof pose_ws.used_b);
    if (part == 0) n_entries = 0;
    for (o = 0; o < nc; ++o) {
      const int k = pose_ws.order[o], ia = pose_ws.cand_a[k], ib = pose_ws.cand_b[k];
      const double s = pose_ws.cand_score[k];
      int e, matched = 0;
      if (pose_ws.used_a[ia] || pose_ws.used_b[ib]) continue;
      pose_ws.used_a[ia] = pose_ws.used_b[ib] = 1;
      if (part == 0) {
        pose_new_entry(&n_entries, ka, kb, ia, ib, s, peaks, stats);
      } else if (part == 17 || part == 18) {
        for (e = 0; e < n_entries; ++e) {
          pose_entry_t* p = &pose_ws.entry[e];
          if (p->kpt[ka] == ia && p->kpt[kb] == -1)
            p->kpt[kb] = (int8_t)ib;
          else if (p->kpt[kb] == ib && p->kpt[ka] == -1)
            p->kpt[ka] = (int8_t)ia;
        }
      } else {
        for (e = 0; e < n_entries; ++e) {
          pose_entry_t* p = &pose_ws.entry[e];
          if (p->kpt[ka] == ia) {
            p->kpt[kb] = (int8_t)ib;
            p->count += 1;
            p->score += (double)peaks->peak[kb][ib].score + s;
            matched = 1;
          }
        }
        if (!matched) pose_new_entry(&n_entries, ka, kb, ia, ib, s, peaks, stats);
      }
    }
  }
  for (i = 0; i < n_entries; ++i) {
    const pose_entry_t* e = &pose_ws.entry[i];
    pose_person_t* p;
    int k;
    if (!(e->count >= POSE_MIN_COUNT && e->score / e->count >= POSE_MIN_MEAN_SCORE)) continue;
    if (n_people == max_people) {
      if (stats) stats->dropped_people++;
      continue;
    }
    p = &people[n_people++];
    memset(p, 0, sizeof *p);
    p->count = e->count;
    p->entry_score = e->score;
    p->score = (float)(e->score * (e->count > 1 ? e->count - 1 : 0));
    for (k = 0; k < POSE_NUM_KPTS; ++k) {
      const pose_peak_t* pk;
      p->peak[k] = e->kpt[k];
      if (e->kpt[k] < 0) continue;
      pk = &peaks->peak[k][e->kpt[k]];
      /* grid pixel centre -> input pixel: (g + 0.5) * stride / F - 0.5 */
      p->x[k] = (pk->fx + 0.5f) * (float)POSE_STRIDE / (float)POSE_F - 0.5f;
      p->y[k] = (pk->fy + 0.5f) * (float)POSE_STRIDE / (float)POSE_F - 0.5f;
      p->kpt_score[k] = pk->score;
    }
  }
  return n_people;
}

int pose_decode(const int32_t* heat, const int32_t* paf, pose_person_t* people, int max_people, pose_stats_t* stats) {
  if (stats) memset(stats, 0, sizeof *stats);
  pose_find_peaks(heat, &pose_ws.peaks, stats);
  return pose_group(&pose_ws.peaks, paf, people, max_people, stats);
}
