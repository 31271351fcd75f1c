/* philox.c — Philox 4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy
 * as 1, 2, 3", SC 2011).  A counter-based generator: the output is a pure function of
 * (counter, key), so any element of any random tensor can be computed independently, in any
 * order, on any backend — what makes dropout, initialisation and shuffling reproducible and
 * resumable.  Checked against the Random123 known-answer vectors in tests/test_philox.c.
 *
 * Convention (every backend must follow it): element idx at step s under seed k uses
 *   key = (k & 0xffffffff, k >> 32), counter = (idx lo, idx hi, s lo, s hi)
 * and the first output word for a uniform; the first two words for a normal. */
#include "ir.h"

#include <math.h>

static const uint32_t M0 = 0xD2511F53, M1 = 0xCD9E8D57; /* round multipliers */
static const uint32_t W0 = 0x9E3779B9, W1 = 0xBB67AE85; /* key schedule (golden ratio, sqrt 3) */

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += W0;
      k1 += W1;
    }
    uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

void philox_block(uint64_t seed, uint64_t step, uint64_t idx, uint32_t out[4]) {
  uint32_t ctr[4] = {(uint32_t)idx, (uint32_t)(idx >> 32), (uint32_t)step, (uint32_t)(step >> 32)};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  philox4x32_10(ctr, key, out);
}

/* 24 bits, so the value is exact in f32 and every backend draws the same numbers */
static double unit(uint32_t w) { return (double)(w >> 8) * 0x1p-24; }

double philox_uniform(uint64_t seed, uint64_t step, uint64_t idx) {
  uint32_t w[4];
  philox_block(seed, step, idx, w);
  return unit(w[0]);
}

double philox_normal(uint64_t seed, uint64_t step, uint64_t idx) {
  uint32_t w[4];
  philox_block(seed, step, idx, w);
  double u1 = unit(w[0]) + 0x1p-24; /* (0, 1]: log is finite */
  double u2 = unit(w[1]);
  return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2) /* 2 pi */;
}

void philox_fill_uniform(float *out, int64_t n, uint64_t seed, uint64_t stream, double lo,
                         double hi) {
  for (int64_t i = 0; i < n; i++)
    out[i] = (float)(lo + (hi - lo) * philox_uniform(seed, stream, (uint64_t)i));
}

void philox_fill_normal(float *out, int64_t n, uint64_t seed, uint64_t stream, double mean,
                        double std) {
  for (int64_t i = 0; i < n; i++)
    out[i] = (float)(mean + std * philox_normal(seed, stream, (uint64_t)i));
}
