/* test_philox.c — Philox 4x32-10 against the Random123 known-answer vectors
 * (github.com/DEShawResearch/random123, tests/kat_vectors), and the derived draws. */
#include "ir_test.h"

Test(philox, known_answers) {
  struct {
    uint32_t ctr[4], key[2], want[4];
  } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (int k = 0; k < 3; k++) {
    uint32_t out[4];
    philox4x32_10(kat[k].ctr, kat[k].key, out);
    for (int i = 0; i < 4; i++)
      cr_expect_eq(out[i], kat[k].want[i], "vector %d word %d: %08x", k, i, out[i]);
  }
}

Test(philox, counter_layout) {
  /* key = seed, counter = (idx lo, idx hi, step lo, step hi) */
  uint32_t a[4], b[4];
  philox_block(0xa4093822ULL | (0x299f31d0ULL << 32), 0x0370734413198a2eULL, 0x85a308d3243f6a88ULL, a);
  philox4x32_10((uint32_t[]){0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                (uint32_t[]){0xa4093822, 0x299f31d0}, b);
  cr_expect_arr_eq(a, b, sizeof a);
  philox_block(1, 2, 3, a);
  cr_expect_eq(philox_uniform(1, 2, 3), (double)(a[0] >> 8) * 0x1p-24);
}

Test(philox, fills_are_reproducible_and_distributed) {
  enum { n = 50000 };
  static float u[n], u2[n], z[n];
  philox_fill_uniform(u, n, 7, 0, -0.5, 0.5);
  philox_fill_uniform(u2, n, 7, 0, -0.5, 0.5);
  philox_fill_normal(z, n, 7, 1, 0, 2);
  cr_expect_arr_eq(u, u2, sizeof u);
  double su = 0, sz = 0, szz = 0;
  int differ = 0;
  for (int i = 0; i < n; i++) {
    cr_assert(u[i] >= -0.5f && u[i] < 0.5f);
    su += u[i];
    sz += z[i];
    szz += (double)z[i] * z[i];
  }
  philox_fill_uniform(u2, n, 7, 1, -0.5, 0.5);
  for (int i = 0; i < n; i++)
    differ += u[i] != u2[i];
  cr_expect_gt(differ, n - 10, "another stream, other numbers");
  cr_expect_lt(fabs(su / n), 0.01);
  cr_expect_lt(fabs(sz / n), 0.03);
  cr_expect_lt(fabs(sqrt(szz / n) - 2), 0.03);
}
