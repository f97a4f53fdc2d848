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
#define POSE_MW (POSE_MAP_W + 2) /* row pitch of the bordered heatmap */
#define POSE_GRID_H (POSE_MAP_H * POSE_F) /* grouping / coordinate resolution */
#define POSE_GRID_W (POSE_MAP_W * POSE_F)

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
  float map[(POSE_MAP_H + 2) * (POSE_MAP_W + 2)]; /* one thresholded heatmap with a zero border */
  double cand_score[POSE_MAX_CANDIDATES];   /* candidate connections of one limb */
  uint8_t cand_a[POSE_MAX_CANDIDATES], cand_b[POSE_MAX_CANDIDATES];
  uint16_t order[POSE_MAX_CANDIDATES];
  uint8_t used_a[POSE_MAX_PEAKS], used_b[POSE_MAX_PEAKS];
  pose_entry_t entry[POSE_MAX_ENTRIES];
  pose_peaks_t peaks;
} pose_ws;

float pose_heat_value(int32_t v) { return (float)v * POSE_HEAT_UNIT; }
float pose_paf_value(int32_t v) { return (float)v * POSE_PAF_UNIT; }

#if POSE_F > 1
/* OpenCV's INTER_CUBIC upsampling by F (pixel centres aligned, edges replicated), one value at a
 * time: output pixel X reads source columns X / F + offset[X % F] - 1 .. + 2 with coefficients
 * coeff[X % F]; rows likewise; the horizontal pass first, then the vertical one, as cv::resize. */
static const float pose_cubic_coeff[POSE_F][4] = POSE_CUBIC_COEFFS_INIT;
static const int8_t pose_cubic_offset[POSE_F] = POSE_CUBIC_OFFSET_INIT;

static int pose_clampi(int v, int hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

/* source columns / rows (clamped) of every upsampled column / row, filled on first use */
static uint8_t pose_cols[POSE_GRID_W][4], pose_rows[POSE_GRID_H][4];
static int pose_tables_ready;

static void pose_cubic_tables(void) {
  int X, k;
  for (X = 0; X < POSE_GRID_W; ++X)
    for (k = 0; k < 4; ++k)
      pose_cols[X][k] = (uint8_t)pose_clampi(X / POSE_F + pose_cubic_offset[X % POSE_F] - 1 + k, POSE_MAP_W - 1);
  for (X = 0; X < POSE_GRID_H; ++X)
    for (k = 0; k < 4; ++k)
      pose_rows[X][k] = (uint8_t)pose_clampi(X / POSE_F + pose_cubic_offset[X % POSE_F] - 1 + k, POSE_MAP_H - 1);
  pose_tables_ready = 1;
}

/* Horizontal pass (source row, output column X), in word units: (float)row[cols[X][k]] times
 * coeff[X % F][k], summed left to right; the vertical pass combines four of them with the row
 * coefficients. The unit (a power of two) multiplies the result instead of every source value,
 * which gives the same floats (scaling by a power of two commutes with rounding). */

/* The upsampled values of two planes (a PAF pair) at (X, Y): the same arithmetic as the horizontal
 * then vertical pass above, sharing the indices and coefficients. */
static void pose_cubic_pair(const int32_t *p, const int32_t *q, float unit, int X, int Y, float *vp, float *vq) {
  const float *a = pose_cubic_coeff[X % POSE_F], *b = pose_cubic_coeff[Y % POSE_F];
  const uint8_t *c = pose_cols[X], *r = pose_rows[Y];
  float sp = 0.f, sq = 0.f;
  int k;
  for (k = 0; k < 4; ++k) {
    const int32_t *rp = p + r[k] * POSE_MAP_W, *rq = q + r[k] * POSE_MAP_W;
    const float hp = (float)rp[c[0]] * a[0] + (float)rp[c[1]] * a[1] + (float)rp[c[2]] * a[2] + (float)rp[c[3]] * a[3];
    const float hq = (float)rq[c[0]] * a[0] + (float)rq[c[1]] * a[1] + (float)rq[c[2]] * a[2] + (float)rq[c[3]] * a[3];
    if (k == 0) {
      sp = hp * b[0];
      sq = hq * b[0];
    } else {
      sp = sp + hp * b[k];
      sq = sq + hq * b[k];
    }
  }
  *vp = sp * unit;
  *vq = sq * unit;
}

#define POSE_WIN (POSE_F + 2 * (POSE_F / 2)) /* refinement window, upsampled pixels per side */
#define POSE_WIN_ROWS (POSE_WIN / POSE_F + 6) /* source rows a window reads */

/* Moves a peak to the first maximum (x, then y) of the upsampled heatmap over its cell widened by
 * F / 2 pixels on each side. The horizontal passes of the window's source rows are computed once. */
static void pose_refine_local(const int32_t *h, pose_peak_t *p) {
  float hc[POSE_WIN_ROWS][POSE_WIN];
  const int x0 = p->x * POSE_F - POSE_F / 2 < 0 ? 0 : p->x * POSE_F - POSE_F / 2;
  const int y0 = p->y * POSE_F - POSE_F / 2 < 0 ? 0 : p->y * POSE_F - POSE_F / 2;
  const int x1 = pose_clampi(p->x * POSE_F + POSE_F - 1 + POSE_F / 2, POSE_GRID_W - 1);
  const int y1 = pose_clampi(p->y * POSE_F + POSE_F - 1 + POSE_F / 2, POSE_GRID_H - 1);
  const int r0 = pose_rows[y0][0], r1 = pose_rows[y1][3]; /* rows are non-decreasing in Y */
  int X, Y, r, bx = x0, by = y0;
  float best = 0.f;
  for (r = r0; r <= r1; ++r) {
    const int32_t *row = h + r * POSE_MAP_W;
    for (X = x0; X <= x1; ++X) { /* pose_hcubic, inline */
      const float *a = pose_cubic_coeff[X % POSE_F];
      const uint8_t *c = pose_cols[X];
      hc[r - r0][X - x0] =
          (float)row[c[0]] * a[0] + (float)row[c[1]] * a[1] + (float)row[c[2]] * a[2] + (float)row[c[3]] * a[3];
    }
  }
  for (X = x0; X <= x1; ++X)
    for (Y = y0; Y <= y1; ++Y) {
      const float *b = pose_cubic_coeff[Y % POSE_F];
      const uint8_t *rr = pose_rows[Y];
      const float v = (hc[rr[0] - r0][X - x0] * b[0] + hc[rr[1] - r0][X - x0] * b[1] +
                       hc[rr[2] - r0][X - x0] * b[2] + hc[rr[3] - r0][X - x0] * b[3]) *
                      POSE_HEAT_UNIT;
      if ((X == x0 && Y == y0) || v > best) {
        best = v;
        bx = X;
        by = Y;
      }
    }
  p->ux = (uint8_t)bx;
  p->uy = (uint8_t)by;
  p->score = best;
  p->fx = (float)bx;
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

/* nearbyintf (round half to even) for |v| < 2^22 in the default rounding mode: adding and
 * subtracting 1.5 * 2^23 rounds to an integer exactly as the FPU rounds (no library call) */
static float pose_round(float v) {
  volatile float big = 12582912.f; /* volatile: the compiler may not fold the two operations */
  return (v + big) - big;
}

void pose_find_peaks(const int32_t *heat, pose_peaks_t *peaks, pose_stats_t *stats) {
  int k, x, y, i;
  float *m = pose_ws.map;
#if POSE_F > 1
  if (!pose_tables_ready) pose_cubic_tables();
#endif
  memset(pose_ws.map, 0, sizeof pose_ws.map);
  for (k = 0; k < POSE_NUM_KPTS; ++k) {
    const int32_t *h = heat + k * POSE_PLANE;
    int n = 0;
    for (y = 0; y < POSE_MAP_H; ++y)
      for (x = 0; x < POSE_MAP_W; ++x) {
        const float v = pose_heat_value(h[y * POSE_MAP_W + x]);
        m[(y + 1) * POSE_MW + x + 1] = v < POSE_PEAK_THRESHOLD ? 0.f : v;
      }
    /* Column-major scan: x ascending, then y (posekd's order); a candidate is kept unless an
     * earlier kept peak lies within the suppression radius. */
    for (x = 0; x < POSE_MAP_W; ++x)
      for (y = 0; y < POSE_MAP_H; ++y) {
        const float *pc = m + (y + 1) * POSE_MW + x + 1;
        const float c = *pc;
        int keep = 1;
        if (!(c > 0.f)) continue; /* below the threshold (values are 0 or >= it): no peak */
        if (!(c > pc[-1] && c > pc[1] && c > pc[-POSE_MW] && c > pc[POSE_MW])) continue;
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
          pose_peak_t *p = &peaks->peak[k][n++];
          p->x = p->ux = (uint8_t)x;
          p->y = p->uy = (uint8_t)y;
          p->score = c;
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
    peaks->count[k] = (uint8_t)n;
  }
}

/* numpy's float32 pairwise sum of n terms (8 accumulators for 8 <= n <= 128). */
static float pose_numpy_sum(const float *a, int n) {
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

/* Mean passing PAF projection along a->b (infer::limb_affinity); *valid = passing samples. */
static double pose_affinity(const int32_t *px, const int32_t *py, float ax, float ay, float bx, float by,
                            int *valid) {
  float terms[POSE_POINTS_PER_LIMB];
  const float vx = bx - ax, vy = by - ay;
  const float step = POSE_POINTS_PER_LIMB > 1 ? 1.f / (float)(POSE_POINTS_PER_LIMB - 1) : 0.f;
  const float sx = step * vx, sy = step * vy;
  const float norm = sqrtf(vx * vx + vy * vy);
  const float ux = vx / (norm + 1e-6f), uy = vy / (norm + 1e-6f);
  int t, n = 0;
  for (t = 0; t < POSE_POINTS_PER_LIMB; ++t) {
    int x = (int)pose_round(sx * (float)t + ax);
    int y = (int)pose_round(sy * (float)t + ay);
    float s;
    x = x < 0 ? 0 : (x > POSE_GRID_W - 1 ? POSE_GRID_W - 1 : x);
    y = y < 0 ? 0 : (y > POSE_GRID_H - 1 ? POSE_GRID_H - 1 : y);
#if POSE_F > 1
    {
      float vx, vy;
      pose_cubic_pair(px, py, POSE_PAF_UNIT, x, y, &vx, &vy);
      s = vx * ux + vy * uy;
    }
#else
    s = pose_paf_value(px[y * POSE_MAP_W + x]) * ux + pose_paf_value(py[y * POSE_MAP_W + x]) * uy;
#endif
    if (s > POSE_MIN_PAF_SCORE) {
      ++n;
      terms[t] = s;
    } else {
      terms[t] = 0.f;
      /* too many failed samples already: the limb cannot pass (the result is not used) */
      if (t + 1 - n > POSE_POINTS_PER_LIMB - POSE_MIN_VALID_SAMPLES) {
        *valid = n;
        return 0.0;
      }
    }
  }
  *valid = n;
  return (double)pose_numpy_sum(terms, POSE_POINTS_PER_LIMB) / ((double)n + 1e-6);
}

static int pose_new_entry(int *n_entries, int ka, int kb, int ia, int ib, double s,
                          const pose_peaks_t *peaks, pose_stats_t *stats) {
  pose_entry_t *e;
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

int pose_group(const pose_peaks_t *peaks, const int32_t *paf, pose_person_t *people, int max_people,
               pose_stats_t *stats) {
  int part, n_entries = 0, n_people = 0, i, j, c;
#if POSE_F > 1
  if (!pose_tables_ready) pose_cubic_tables();
#endif
  for (part = 0; part < POSE_NUM_LIMBS; ++part) {
    const int ka = pose_group_limbs[part][0], kb = pose_group_limbs[part][1];
    const int n = peaks->count[ka], m = peaks->count[kb];
    const int32_t *px = paf + pose_group_pafs[part][0] * POSE_PLANE;
    const int32_t *py = paf + pose_group_pafs[part][1] * POSE_PLANE;
    int nc = 0, o;
    if (n == 0 || m == 0) continue;
    /* candidates in Lightweight-OpenPose's flat order (B outer, A inner) */
    for (j = 0; j < m; ++j)
      for (i = 0; i < n; ++i) {
        int valid;
        const pose_peak_t *a = &peaks->peak[ka][i], *b = &peaks->peak[kb][j];
        const double s = pose_affinity(px, py, (float)a->ux, (float)a->uy, (float)b->ux, (float)b->uy, &valid);
        if (s > 0 && valid >= POSE_MIN_VALID_SAMPLES) {
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
          pose_entry_t *p = &pose_ws.entry[e];
          if (p->kpt[ka] == ia && p->kpt[kb] == -1)
            p->kpt[kb] = (int8_t)ib;
          else if (p->kpt[kb] == ib && p->kpt[ka] == -1)
            p->kpt[ka] = (int8_t)ia;
        }
      } else {
        for (e = 0; e < n_entries; ++e) {
          pose_entry_t *p = &pose_ws.entry[e];
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
    const pose_entry_t *e = &pose_ws.entry[i];
    pose_person_t *p;
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
      const pose_peak_t *pk;
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

int pose_decode(const int32_t *heat, const int32_t *paf, pose_person_t *people, int max_people,
                pose_stats_t *stats) {
  if (stats) memset(stats, 0, sizeof *stats);
  pose_find_peaks(heat, &pose_ws.peaks, stats);
  return pose_group(&pose_ws.peaks, paf, people, max_people, stats);
}
