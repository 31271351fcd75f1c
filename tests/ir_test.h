/* ir_test.h — helpers shared by the IR tests: running a graph on the reference interpreter,
 * deterministic random inputs, approximate comparison. */
#ifndef LTL_IR_TEST_H
#define LTL_IR_TEST_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* Deterministic test data: Philox with a per-call stream. */
static inline void fill_uniform(double *v, int64_t n, uint64_t stream, double lo, double hi) {
  for (int64_t i = 0; i < n; i++)
    v[i] = lo + (hi - lo) * philox_uniform(12345, stream, (uint64_t)i);
}

static inline bool near(double a, double b, double tol) {
  return fabs(a - b) <= tol * (1 + fabs(b)) || (isnan(a) && isnan(b));
}

#define expect_near(a, b, tol)                                                                  \
  do {                                                                                          \
    double a_ = (a), b_ = (b);                                                                  \
    cr_expect(near(a_, b_, tol), "%s = %.17g, expected %.17g", #a, a_, b_);                     \
  } while (0)

/* Checks a built value: fails the test with the builder's message when it is -1. */
#define ok(v)                                                                                   \
  ({                                                                                            \
    int v_ = (v);                                                                               \
    cr_assert(v_ >= 0, "builder failed: %s", ir_error(g));                                      \
    v_;                                                                                         \
  })

/* Runs g in f64 mode with each input i set from vals[i] (doubles); asserts success. */
static inline IrInterp *run_f64(const IrGraph *g, const int *inputs, const double *const *vals,
                                int n) {
  IrInterp *ip = interp_new(g, true);
  cr_assert(ip);
  for (int i = 0; i < n; i++)
    interp_set_f64(ip, inputs[i], vals[i]);
  const char *err = interp_run(ip);
  cr_assert(err == NULL, "interp: %s", err);
  return ip;
}

static inline void expect_values(const IrInterp *ip, int v, const double *want, int64_t n,
                                 double tol) {
  const double *got = interp_data(ip, v);
  for (int64_t i = 0; i < n; i++)
    cr_expect(near(got[i], want[i], tol), "element %lld: got %.17g, expected %.17g",
              (long long)i, got[i], want[i]);
}

#endif
