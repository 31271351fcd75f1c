/* test_ir_interp.c — the reference kernels on small cases checked by hand. */
#include "ir_test.h"

static IrGraph *g;
static int inputs[16], ninputs;
static const double *values[16];

static void setup(void) {
  g = ir_new();
  ninputs = 0;
}
static void teardown(void) { ir_free(g); }
TestSuite(interp, .init = setup, .fini = teardown);

/* A data input holding v (kept for run()). */
static int data(IrDtype t, IrShape s, const double *v) {
  char name[16];
  snprintf(name, sizeof name, "in%d", ninputs);
  int x = ok(ir_input(g, IR_IN_DATA, name, t, s));
  inputs[ninputs] = x;
  values[ninputs++] = v;
  return x;
}

#define D(...) ((const double[]){__VA_ARGS__})
#define N(arr) ((int64_t)(sizeof(arr) / sizeof(arr[0])))

static IrInterp *run(void) { return run_f64(g, inputs, values, ninputs); }

/* Runs and compares value v with the listed numbers. */
#define check(v, tol, ...)                                                                      \
  do {                                                                                          \
    int v__ = ok(v);                                                                            \
    const double w__[] = {__VA_ARGS__};                                                         \
    cr_assert_eq(ir_numel(g->node[v__].shape), N(w__), "numel");                                \
    IrInterp *ip__ = run();                                                                     \
    expect_values(ip__, v__, w__, N(w__), tol);                                                 \
    interp_free(ip__);                                                                          \
  } while (0)

Test(interp, elementwise_binary_broadcast) {
  int a = data(IR_F64, IR_SHAPE(2, 3), D(1, 2, 3, 4, 5, 6));
  int b = data(IR_F64, IR_SHAPE(3), D(10, 20, 30));
  check(ir_add(g, a, b), 0, 11, 22, 33, 14, 25, 36);
  check(ir_sub(g, b, a), 0, 9, 18, 27, 6, 15, 24);
  check(ir_mul(g, a, b), 0, 10, 40, 90, 40, 100, 180);
  check(ir_div(g, a, b), 1e-15, 0.1, 0.1, 0.1, 0.4, 0.25, 0.2);
  int c = data(IR_F64, IR_SHAPE(2, 1), D(2, 0.5));
  check(ir_pow(g, a, c), 1e-15, 1, 4, 9, 2, sqrt(5), sqrt(6));
  int m = data(IR_F64, IR_SHAPE(3), D(2, 5, 4));
  check(ir_maximum(g, a, m), 0, 2, 5, 4, 4, 5, 6);
  check(ir_minimum(g, a, m), 0, 1, 2, 3, 2, 5, 4);
  check(ir_cast(g, ir_lt(g, a, m), IR_F64), 0, 1, 1, 1, 0, 0, 0);
  check(ir_cast(g, ir_ge(g, a, m), IR_F64), 0, 0, 0, 0, 1, 1, 1);
  check(ir_cast(g, ir_eq(g, a, m), IR_F64), 0, 0, 0, 0, 0, 1, 0);
  check(ir_cast(g, ir_ne(g, a, m), IR_F64), 0, 1, 1, 1, 1, 0, 1);
  check(ir_cast(g, ir_le(g, a, m), IR_F64), 0, 1, 1, 1, 0, 1, 0);
  check(ir_cast(g, ir_gt(g, a, m), IR_F64), 0, 0, 0, 0, 1, 0, 1);
  check(ir_where(g, ir_gt(g, a, m), a, b), 0, 10, 20, 30, 4, 20, 6);
}

Test(interp, nan_propagates_through_maximum_and_relu) {
  int a = data(IR_F64, IR_SHAPE(2), D(NAN, 1));
  int b = data(IR_F64, IR_SHAPE(2), D(0, NAN));
  IrInterp *ip;
  int mx = ok(ir_maximum(g, a, b)), r = ok(ir_relu(g, a));
  ip = run();
  cr_expect(isnan(interp_data(ip, mx)[0]) && isnan(interp_data(ip, mx)[1]));
  cr_expect(isnan(interp_data(ip, r)[0]));
  interp_free(ip);
}

Test(interp, elementwise_unary) {
  int x = data(IR_F64, IR_SHAPE(4), D(-2, -0.5, 0, 1));
  check(ir_neg(g, x), 0, 2, 0.5, 0, -1);
  check(ir_abs(g, x), 0, 2, 0.5, 0, 1);
  check(ir_sign(g, x), 0, -1, -1, 0, 1);
  check(ir_relu(g, x), 0, 0, 0, 0, 1);
  check(ir_leaky_relu(g, x, 0.1), 1e-15, -0.2, -0.05, 0, 1);
  check(ir_exp(g, x), 1e-15, exp(-2), exp(-0.5), 1, M_E);
  check(ir_tanh(g, x), 1e-15, tanh(-2), tanh(-0.5), 0, tanh(1));
  check(ir_sigmoid(g, x), 1e-15, 1 / (1 + exp(2)), 1 / (1 + exp(0.5)), 0.5, 1 / (1 + exp(-1)));
  check(ir_erf(g, x), 1e-15, erf(-2), erf(-0.5), 0, erf(1));
  /* gelu(x) = x Phi(x); Phi(1) = 0.8413447460685429 */
  check(ir_gelu(g, x), 1e-12, -2 * 0.02275013194817921, -0.5 * 0.3085375387259869, 0,
        0.8413447460685429);
  int p = data(IR_F64, IR_SHAPE(3), D(4, M_E, 0.25));
  check(ir_log(g, p), 1e-15, log(4), 1, log(0.25));
  check(ir_sqrt(g, p), 1e-15, 2, sqrt(M_E), 0.5);
  check(ir_rsqrt(g, p), 1e-15, 0.5, 1 / sqrt(M_E), 2);
}

Test(interp, casts_round) {
  int x = data(IR_F64, IR_SHAPE(4), D(2.7, -2.7, 300, 0.1));
  check(ir_cast(g, ir_cast(g, x, IR_I64), IR_F64), 0, 2, -2, 300, 0);
  check(ir_cast(g, ir_cast(g, x, IR_U8), IR_F64), 0, 2, 254, 44, 0);
  /* f64 mode: the f32 cast keeps every digit (gradient checks rely on it) */
  check(ir_cast(g, x, IR_F32), 0, 2.7, -2.7, 300, 0.1);
  check(ir_cast(g, ir_cast(g, x, IR_BOOL), IR_F64), 0, 1, 1, 1, 1);
}

Test(interp, f32_mode_rounds_each_op) {
  int a = data(IR_F32, IR_SHAPE(1), D(0.1)), b = data(IR_F32, IR_SHAPE(1), D(0.2));
  int s = ok(ir_add(g, a, b));
  IrInterp *ip = interp_new(g, false);
  float fa = 0.1f, fb = 0.2f;
  interp_set(ip, a, &fa);
  interp_set(ip, b, &fb);
  cr_assert_null(interp_run(ip));
  float out;
  interp_get(ip, s, &out);
  cr_expect_eq(out, fa + fb);
  cr_expect_eq(interp_scalar(ip, s), (double)(fa + fb));
  interp_free(ip);
  /* and a cast from f64 rounds */
  int d = data(IR_F64, IR_SHAPE(1), D(2.7));
  int c = ok(ir_cast(g, d, IR_F32));
  ip = interp_new(g, false);
  interp_set(ip, a, &fa);
  interp_set(ip, b, &fb);
  interp_set_f64(ip, d, values[2]);
  cr_assert_null(interp_run(ip));
  cr_expect_eq(interp_scalar(ip, c), (double)2.7f);
  interp_free(ip);
}

Test(interp, f64_mode_keeps_literals_exact) {
  /* an f32 graph run in f64 mode: 0.1 is 0.1, not f32's 0.100000001; f32 mode rounds it */
  int c = ok(ir_mul(g, ir_scalar(g, 0.1, IR_F32), ir_scalar(g, 3, IR_F32)));
  check(c, 0, 0.1 * 3);
  IrInterp *ip = interp_new(g, false);
  cr_assert_null(interp_run(ip));
  cr_expect_eq(interp_scalar(ip, c), (double)(0.1f * 3.0f));
  interp_free(ip);
}

Test(interp, reductions) {
  int x = data(IR_F64, IR_SHAPE(2, 3), D(1, 2, 3, 4, 5, 6));
  check(ir_sum(g, x, (int[]){0}, 1, false), 0, 5, 7, 9);
  check(ir_sum(g, x, (int[]){1}, 1, true), 0, 6, 15);
  check(ir_mean(g, x, NULL, 0, false), 0, 3.5);
  check(ir_max(g, x, (int[]){1}, 1, false), 0, 3, 6);
  check(ir_max(g, x, (int[]){0}, 1, false), 0, 4, 5, 6);
  check(ir_logsumexp(g, x, (int[]){0}, 1, false), 1e-15, 4 + log1p(exp(-3)), 5 + log1p(exp(-3)),
        6 + log1p(exp(-3)));
  int y = data(IR_F64, IR_SHAPE(2, 2), D(3, 1, 2, 7));
  check(ir_cast(g, ir_argmax(g, y, 1, false), IR_F64), 0, 0, 1);
  check(ir_cast(g, ir_argmax(g, y, 0, true), IR_F64), 0, 0, 1);
  int big = data(IR_F64, IR_SHAPE(2), D(1000, 1000));
  check(ir_logsumexp(g, big, NULL, 0, false), 1e-15, 1000 + log(2));
  int ties = data(IR_F64, IR_SHAPE(3), D(5, 5, 1));
  check(ir_cast(g, ir_argmax(g, ties, 0, false), IR_F64), 0, 0);
}

Test(interp, matmul) {
  int a = data(IR_F64, IR_SHAPE(2, 3), D(1, 2, 3, 4, 5, 6));
  int b = data(IR_F64, IR_SHAPE(3, 2), D(7, 8, 9, 10, 11, 12));
  check(ir_matmul(g, a, b), 0, 58, 64, 139, 154);
  /* batch broadcast: [2, 1, 2] @ [2, 1] -> [2, 1, 1] */
  int c = data(IR_F64, IR_SHAPE(2, 1, 2), D(1, 2, 3, 4));
  int d = data(IR_F64, IR_SHAPE(2, 1), D(10, 1));
  check(ir_matmul(g, c, d), 0, 12, 34);
  int v = data(IR_F64, IR_SHAPE(3), D(1, 0, -1));
  check(ir_matmul(g, v, b), 0, -4, -4);
  check(ir_matmul(g, a, v), 0, -2, -2);
  int w = data(IR_F64, IR_SHAPE(2, 3), D(1, 0, 0, 0, 1, 1));
  int bias = data(IR_F64, IR_SHAPE(2), D(0.5, -0.5));
  check(ir_linear(g, a, w, bias), 0, 1.5, 4.5, 4.5, 10.5);
}

Test(interp, layout) {
  int x = data(IR_F64, IR_SHAPE(2, 3), D(1, 2, 3, 4, 5, 6));
  check(ir_transpose(g, x, 0, 1), 0, 1, 4, 2, 5, 3, 6);
  check(ir_reshape(g, x, IR_SHAPE(3, 2)), 0, 1, 2, 3, 4, 5, 6);
  int y = data(IR_F64, IR_SHAPE(2, 2, 2), D(0, 1, 2, 3, 4, 5, 6, 7));
  check(ir_permute(g, y, (int[]){2, 0, 1}), 0, 0, 2, 4, 6, 1, 3, 5, 7);
  int r = data(IR_F64, IR_SHAPE(10), D(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  check(ir_slice(g, r, 0, 1, 8, 3), 0, 1, 4, 7);
  check(ir_slice(g, r, 0, -2, 100, 1), 0, 8, 9);
  check(ir_slice(g, x, 1, 1, 3, 1), 0, 2, 3, 5, 6);
  int col = data(IR_F64, IR_SHAPE(2, 1), D(-1, -2));
  check(ir_concat(g, (int[]){col, x}, 2, 1), 0, -1, 1, 2, 3, -2, 4, 5, 6);
  check(ir_concat(g, (int[]){x, x}, 2, 0), 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6);
  int p = data(IR_F64, IR_SHAPE(2), D(1, 2));
  check(ir_pad(g, p, (int64_t[]){1}, (int64_t[]){2}, 9), 0, 9, 1, 2, 9, 9);
  check(ir_broadcast_to(g, col, IR_SHAPE(2, 3)), 0, -1, -1, -1, -2, -2, -2);
}

Test(interp, conv2d) {
  int64_t one[2] = {1, 1}, two[2] = {2, 2}, zero[2] = {0, 0};
  int x = data(IR_F64, IR_SHAPE(1, 1, 3, 3), D(1, 2, 3, 4, 5, 6, 7, 8, 9));
  int w = data(IR_F64, IR_SHAPE(1, 1, 2, 2), D(1, 0, 0, 1));
  check(ir_conv2d(g, x, w, one, zero, one, 1), 0, 6, 8, 12, 14);
  check(ir_conv2d(g, x, w, two, one, one, 1), 0, 1, 3, 7, 14);
  int ones = data(IR_F64, IR_SHAPE(1, 1, 2, 2), D(1, 1, 1, 1));
  check(ir_conv2d(g, x, ones, one, zero, two, 1), 0, 20);
  int x2 = data(IR_F64, IR_SHAPE(1, 2, 2, 2), D(1, 2, 3, 4, 5, 6, 7, 8));
  int wg = data(IR_F64, IR_SHAPE(2, 1, 1, 1), D(2, 3));
  check(ir_conv2d(g, x2, wg, one, zero, one, 2), 0, 2, 4, 6, 8, 15, 18, 21, 24);
  /* two input channels summed: w = [1, -1] over channels */
  int wc = data(IR_F64, IR_SHAPE(1, 2, 1, 1), D(1, -1));
  check(ir_conv2d(g, x2, wc, one, zero, one, 1), 0, -4, -4, -4, -4);
}

Test(interp, pooling) {
  int64_t two[2] = {2, 2}, one[2] = {1, 1};
  double v[16];
  for (int i = 0; i < 16; i++)
    v[i] = i + 1;
  int x = data(IR_F64, IR_SHAPE(1, 1, 4, 4), v);
  check(ir_max_pool2d(g, x, two, two, NULL), 0, 6, 8, 14, 16);
  check(ir_avg_pool2d(g, x, two, two, NULL, true), 0, 3.5, 5.5, 11.5, 13.5);
  check(ir_max_pool2d(g, x, (int64_t[]){3, 3}, (int64_t[]){1, 1}, NULL), 0, 11, 12, 15, 16);
  int s = data(IR_F64, IR_SHAPE(1, 1, 2, 2), D(1, 2, 3, 4));
  check(ir_avg_pool2d(g, s, two, two, one, true), 0, 0.25, 0.5, 0.75, 1);
  check(ir_avg_pool2d(g, s, two, two, one, false), 0, 1, 2, 3, 4);
  check(ir_max_pool2d(g, ir_neg(g, s), two, two, one), 0, -1, -2, -3, -4);
}

Test(interp, softmax) {
  int x = data(IR_F64, IR_SHAPE(3), D(1, 2, 3));
  check(ir_softmax(g, x, 0), 1e-15, 0.09003057317038046, 0.24472847105479764, 0.6652409557748219);
  check(ir_log_softmax(g, x, -1), 1e-15, log(0.09003057317038046), log(0.24472847105479764),
        log(0.6652409557748219));
  int c = data(IR_F64, IR_SHAPE(2, 2), D(0, 1000, 0, 1000));
  check(ir_softmax(g, c, 0), 0, 0.5, 0.5, 0.5, 0.5);
  check(ir_softmax(g, c, 1), 1e-15, 0, 1, 0, 1);
}

Test(interp, class_losses) {
  int x = data(IR_F64, IR_SHAPE(2, 3), D(0, 0, 0, 1, 2, 3));
  int t = data(IR_I64, IR_SHAPE(2), D(0, 2));
  double lse = log(exp(1) + exp(2) + exp(3));
  check(ir_cross_entropy(g, x, t, 0), 1e-15, (log(3) + lse - 3) / 2);
  /* smoothing 0.1: 0.9 nll + 0.1 mean over classes of -log p */
  check(ir_cross_entropy(g, x, t, 0.1), 1e-15, (log(3) + 0.9 * (lse - 3) + 0.1 * (lse - 2)) / 2);
  int lp = data(IR_F64, IR_SHAPE(2, 2), D(-1, -2, -3, -4));
  int t2 = data(IR_I64, IR_SHAPE(2), D(1, 0));
  check(ir_nll_loss(g, lp, t2), 0, 2.5);
  /* spatial: [N=1, C=2, d=2], targets [1, 2] */
  int xs = data(IR_F64, IR_SHAPE(1, 2, 2), D(0, 1, 0, -1));
  int ts = data(IR_I64, IR_SHAPE(1, 2), D(1, 0));
  check(ir_cross_entropy(g, xs, ts, 0), 1e-15, (log(2) + log(exp(1) + exp(-1)) - 1) / 2);
}

Test(interp, class_index_out_of_range_is_an_error) {
  int x = data(IR_F64, IR_SHAPE(2, 3), D(0, 0, 0, 1, 2, 3));
  int t = data(IR_I64, IR_SHAPE(2), D(0, 3));
  ok(ir_cross_entropy(g, x, t, 0));
  IrInterp *ip = interp_new(g, true);
  for (int i = 0; i < ninputs; i++)
    interp_set_f64(ip, inputs[i], values[i]);
  const char *err = interp_run(ip);
  cr_assert_not_null(err);
  cr_expect_str_eq(err, "cross_entropy: target 3 of element 1 is not a class in [0, 3)");
  interp_free(ip);
}

Test(interp, unset_input_is_an_error) {
  int x = ok(ir_input(g, IR_IN_DATA, "x", IR_F32, IR_SHAPE(2)));
  ok(ir_exp(g, x));
  IrInterp *ip = interp_new(g, false);
  cr_expect_str_eq(interp_run(ip), "input \"x\" (%0) was not set");
  interp_free(ip);
}

Test(interp, pair_losses) {
  int a = data(IR_F64, IR_SHAPE(2), D(1, 2)), b = data(IR_F64, IR_SHAPE(2), D(3, 5));
  check(ir_mse_loss(g, a, b), 0, 6.5);
  int x = data(IR_F64, IR_SHAPE(3), D(0, 2, -800)), y = data(IR_F64, IR_SHAPE(3), D(1, 0, 0));
  check(ir_bce_with_logits(g, x, y), 1e-15, (log(2) + 2 + log1p(exp(-2)) + 0) / 3);
}

Test(interp, indexing) {
  int w = data(IR_F64, IR_SHAPE(3, 2), D(1, 2, 3, 4, 5, 6));
  int i = data(IR_I64, IR_SHAPE(3), D(2, 0, 2));
  check(ir_embedding(g, w, i), 0, 5, 6, 1, 2, 5, 6);
  int j = data(IR_I64, IR_SHAPE(2, 1), D(1, 0));
  check(ir_take(g, w, j, 1), 0, 2, 1, 4, 3, 6, 5);
  int x = data(IR_F64, IR_SHAPE(2, 2), D(1, 2, 3, 4));
  int gi = data(IR_I64, IR_SHAPE(2, 2), D(0, 0, 1, 0));
  check(ir_gather(g, x, 1, gi), 0, 1, 1, 4, 3);
  check(ir_gather(g, x, 0, gi), 0, 1, 2, 3, 2);
  int c = data(IR_I64, IR_SHAPE(2), D(0, 2));
  check(ir_one_hot(g, c, 3, IR_F64), 0, 1, 0, 0, 0, 0, 1);
  int tgt = data(IR_I64, IR_SHAPE(3), D(1, 1, 0));
  int logits = data(IR_F64, IR_SHAPE(3, 2), D(0, 1, 2, 1, 5, -1));
  check(ir_accuracy(g, logits, tgt), 1e-7, 2.0 / 3);
}

Test(interp, layer_norm) {
  int x = data(IR_F64, IR_SHAPE(2, 3), D(1, 2, 3, 10, 10, 10));
  int w = data(IR_F64, IR_SHAPE(3), D(1, 2, 3)), b = data(IR_F64, IR_SHAPE(3), D(0, 0, 1));
  double s = 1 / sqrt(2.0 / 3 + 1e-5);
  check(ir_layer_norm(g, x, 1, w, b, 1e-5), 1e-12, -s, 0, 3 * s + 1, 0, 0, 1);
}

Test(interp, batch_norm_train_and_eval) {
  int x = data(IR_F64, IR_SHAPE(4, 1), D(1, 2, 3, 4));
  int rm = data(IR_F64, IR_SHAPE(1), D(0)), rv = data(IR_F64, IR_SHAPE(1), D(1));
  int nrm, nrv;
  int y = ok(ir_batch_norm(g, x, -1, -1, rm, rv, true, 0.1, 1e-5, &nrm, &nrv));
  double s = 1 / sqrt(1.25 + 1e-5);
  check(y, 1e-12, -1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s);
  check(nrm, 1e-15, 0.25);
  check(nrv, 1e-15, 0.9 + 0.1 * 5.0 / 3); /* unbiased variance 5/3 */
  int e = ok(ir_batch_norm(g, x, -1, -1, nrm, nrv, false, 0.1, 0, &nrm, &nrv));
  cr_expect_eq(nrm, -1);
  double sd = sqrt(0.9 + 0.1 * 5.0 / 3);
  check(e, 1e-12, 0.75 / sd, 1.75 / sd, 2.75 / sd, 3.75 / sd);
}

Test(interp, dropout_is_deterministic_and_scaled) {
  enum { n = 20000 };
  static double ones[n];
  double stepv = 7, stepw = 8;
  for (int i = 0; i < n; i++)
    ones[i] = 1;
  int x = data(IR_F64, IR_SHAPE(n), ones);
  int s = data(IR_I64, IR_SCALAR, &stepv), s2 = data(IR_I64, IR_SCALAR, &stepw);
  int a = ok(ir_dropout(g, x, 0.25, 42, s)), b = ok(ir_dropout(g, x, 0.25, 42, s));
  int c = ok(ir_dropout(g, x, 0.25, 42, s2)), d = ok(ir_dropout(g, x, 0.25, 43, s));
  int z = ok(ir_dropout(g, x, 1, 42, s)), id = ok(ir_dropout(g, x, 0, 42, s));
  IrInterp *ip = run();
  int kept = 0, same_c = 0, same_d = 0;
  for (int i = 0; i < n; i++) {
    double va = interp_data(ip, a)[i];
    cr_assert(va == 0 || fabs(va - 4.0 / 3) < 1e-15, "kept values are scaled by 1 / (1 - p)");
    kept += va != 0;
    cr_assert_eq(va, interp_data(ip, b)[i]);
    same_c += va == interp_data(ip, c)[i];
    same_d += va == interp_data(ip, d)[i];
    cr_assert_eq(interp_data(ip, z)[i], 0);
    cr_assert_eq(interp_data(ip, id)[i], 1);
  }
  cr_expect(fabs(kept / (double)n - 0.75) < 0.02, "kept %d of %d", kept, n);
  cr_expect(same_c < n * 0.7 && same_d < n * 0.7, "other step / seed: another mask");
  interp_free(ip);
}

Test(interp, random_distributions) {
  enum { n = 20000 };
  double stepv = 3;
  int s = data(IR_I64, IR_SCALAR, &stepv);
  int u = ok(ir_rand_uniform(g, IR_SHAPE(n), IR_F64, -1, 3, 9, s));
  int z = ok(ir_rand_normal(g, IR_SHAPE(n), IR_F64, 2, 0.5, 9, s));
  IrInterp *ip = run();
  double su = 0, sz = 0, szz = 0, lo = 1e9, hi = -1e9;
  for (int i = 0; i < n; i++) {
    double vu = interp_data(ip, u)[i], vz = interp_data(ip, z)[i];
    lo = fmin(lo, vu);
    hi = fmax(hi, vu);
    su += vu;
    sz += vz;
    szz += (vz - 2) * (vz - 2);
  }
  cr_expect(lo >= -1 && hi < 3 && hi > 2.99 && lo < -0.99);
  cr_expect(fabs(su / n - 1) < 0.03, "uniform mean %g", su / n);
  cr_expect(fabs(sz / n - 2) < 0.02, "normal mean %g", sz / n);
  cr_expect(fabs(sqrt(szz / n) - 0.5) < 0.02, "normal std %g", sqrt(szz / n));
  interp_free(ip);
}
