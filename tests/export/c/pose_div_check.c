/* pose_div_check.c - checks pose_decode.c's integer division of a limb score (pose_div) against
 * the C division it replaces, bit for bit: every float mantissa for sums in [1, 4) with the two
 * divisors a passing limb uses, a stride through the other exponents and divisors, random floats.
 * Built by tests/export/test_pose_c.cpp with the exported pose_params.h; prints the differences. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pose_decode.c"

static long checked, differ;

static void check(uint32_t b, int n) {
  float f;
  double want, got;
  memcpy(&f, &b, sizeof f);
  want = (double)f / pose_denom[n];
  got = pose_div(f, n);
  ++checked;
  if (memcmp(&want, &got, sizeof want) != 0 && differ++ < 10) printf("n %d f %a: %a, pose_div %a\n", n, f, want, got);
}

int main(void) {
  uint32_t m;
  int n, e;
  long k;
  pose_tables();
  for (n = 0; n <= POSE_POINTS_PER_LIMB; ++n)
    for (e = -6; e <= 6; ++e) {
      const int all = (e == 0 || e == 1) && n >= POSE_MIN_VALID_SAMPLES;
      for (m = 0; m < (1u << 23); m += all ? 1 : 101) check(((uint32_t)(127 + e) << 23) | m, n);
    }
  srand(7);
  for (k = 0; k < 2000000; ++k)
    check(((uint32_t)(rand() % 256) << 23) | ((uint32_t)rand() & 0x7FFFFFu), rand() % (POSE_POINTS_PER_LIMB + 1));
  printf("checked %ld, differ %ld\n", checked, differ);
  return differ != 0;
}
