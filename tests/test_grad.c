/* test_grad.c — every derivative rule against central finite differences, in f64, on random
 * inputs of several shapes (with sizes 1, 3 and 7).  For an op y = f(x...) the checked scalar
 * is sum(y * r) with a random constant r, so every element of the vector-Jacobian product is
 * exercised, not only its sum. */
#include "ir_test.h"

typedef struct {
  IrShape s;
  double lo, hi;
  IrDtype t; /* IR_F64 (0, the default): differentiated; an integer dtype: floor(uniform) */
} Arg;

typedef int Fn(IrGraph *g, const int *x);

static uint64_t stream = 1;

/* Builds f on inputs drawn from args, differentiates sum(f * r), compares with differences. */
static void gradcheck(Fn *f, int n, const Arg *args) {
  IrGraph *g = ir_new();
  int x[8], wrt[8], nw = 0, grads[8];
  double *val[8];
  for (int i = 0; i < n; i++) {
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    bool diff = args[i].t == IR_F64;
    x[i] = ok(ir_input(g, diff ? IR_IN_PARAM : IR_IN_DATA, name, args[i].t, args[i].s));
    int64_t k = ir_numel(args[i].s);
    val[i] = malloc((size_t)(k ? k : 1) * sizeof(double));
    fill_uniform(val[i], k, stream++, args[i].lo, args[i].hi);
    for (int64_t j = 0; !diff && j < k; j++)
      val[i][j] = floor(val[i][j]);
    if (diff)
      wrt[nw++] = x[i];
  }
  int y = ok(f(g, x));
  int64_t ny = ir_numel(g->node[y].shape);
  double *r = malloc((size_t)(ny ? ny : 1) * sizeof *r);
  fill_uniform(r, ny, stream++, -1, 1);
  int loss = ok(ir_sum(g, ok(ir_mul(g, ok(ir_cast(g, y, IR_F64)), ok(ir_const_data(g, IR_F64, g->node[y].shape, r)))),
                       NULL, 0, false));
  cr_assert_eq(ad_grad(g, loss, wrt, nw, grads), 0, "autodiff: %s", ir_error(g));
  IrInterp *ip = run_f64(g, x, (const double *const *)val, n);
  double *analytic[8];
  for (int i = 0, w = 0; i < n; i++) {
    int64_t k = ir_numel(args[i].s);
    if (args[i].t != IR_F64)
      continue;
    analytic[i] = malloc((size_t)(k ? k : 1) * sizeof(double));
    memcpy(analytic[i], interp_data(ip, grads[w++]), (size_t)k * sizeof(double));
  }
  const double h = 1e-5;
  int bad = 0;
  for (int i = 0; i < n; i++) {
    if (args[i].t != IR_F64)
      continue;
    int64_t k = ir_numel(args[i].s);
    for (int64_t j = 0; j < k; j++) {
      double v = val[i][j], lp, lm;
      val[i][j] = v + h;
      interp_set_f64(ip, x[i], val[i]);
      cr_assert_null(interp_run(ip));
      lp = interp_scalar(ip, loss);
      val[i][j] = v - h;
      interp_set_f64(ip, x[i], val[i]);
      cr_assert_null(interp_run(ip));
      lm = interp_scalar(ip, loss);
      val[i][j] = v;
      interp_set_f64(ip, x[i], val[i]);
      double num = (lp - lm) / (2 * h);
      if (fabs(analytic[i][j] - num) > 1e-6 * (1 + fabs(num)) && bad++ < 5)
        cr_expect_fail("d/dx%d[%lld]: autodiff %.12g, finite differences %.12g", i, (long long)j,
                       analytic[i][j], num);
    }
    free(analytic[i]);
  }
  cr_expect_eq(bad, 0, "%d gradient elements differ", bad);
  interp_free(ip);
  for (int i = 0; i < n; i++)
    free(val[i]);
  free(r);
  ir_free(g);
}

#define ARGS(...) ((const Arg[]){__VA_ARGS__})
#define NARGS(...) ((int)(sizeof(ARGS(__VA_ARGS__)) / sizeof(Arg)))
#define CHECK(f, ...) gradcheck(f, NARGS(__VA_ARGS__), ARGS(__VA_ARGS__))
#define R(lo, hi, ...) {IR_SHAPE(__VA_ARGS__), lo, hi, IR_F64}
#define IDX(hi, ...) {IR_SHAPE(__VA_ARGS__), 0, hi, IR_I64}

/* ---- elementwise, one operand: shapes [1], [3, 7], [7, 1, 3] ---- */

static void unary(Fn *f, double lo, double hi) {
  CHECK(f, R(lo, hi, 1));
  CHECK(f, R(lo, hi, 3, 7));
  CHECK(f, R(lo, hi, 7, 1, 3));
}

#define UNARY(name, lo, hi, expr)                                                               \
  static int f_##name(IrGraph *g, const int *x) { return expr; }                                \
  Test(grad, name) { unary(f_##name, lo, hi); }

UNARY(neg, -2, 2, ir_neg(g, x[0]))
UNARY(abs, -2, 2, ir_abs(g, x[0]))
UNARY(sign, -2, 2, ir_mul(g, ir_sign(g, x[0]), x[0]))
UNARY(exp, -2, 2, ir_exp(g, x[0]))
UNARY(log, 0.2, 3, ir_log(g, x[0]))
UNARY(sqrt, 0.2, 3, ir_sqrt(g, x[0]))
UNARY(rsqrt, 0.2, 3, ir_rsqrt(g, x[0]))
UNARY(tanh, -2, 2, ir_tanh(g, x[0]))
UNARY(sigmoid, -4, 4, ir_sigmoid(g, x[0]))
UNARY(erf, -2, 2, ir_erf(g, x[0]))
UNARY(relu, -2, 2, ir_relu(g, x[0]))
UNARY(gelu, -3, 3, ir_gelu(g, x[0]))
UNARY(leaky_relu, -2, 2, ir_leaky_relu(g, x[0], 0.01))
UNARY(cast, -2, 2, ir_cast(g, ir_mul(g, ir_cast(g, x[0], IR_F32), ir_scalar(g, 3, IR_F32)), IR_F64))
UNARY(softmax_last, -2, 2, ir_softmax(g, x[0], -1))
UNARY(softmax_first, -2, 2, ir_softmax(g, x[0], 0))
UNARY(log_softmax_last, -2, 2, ir_log_softmax(g, x[0], -1))
UNARY(log_softmax_first, -2, 2, ir_log_softmax(g, x[0], 0))
UNARY(fan_out_accumulates, -1, 1, ir_add(g, ir_mul(g, x[0], x[0]), ir_mul(g, ir_exp(g, x[0]), x[0])))

/* ---- elementwise, two operands, with broadcasting ---- */

static void binary(Fn *f, double alo, double ahi, double blo, double bhi) {
  CHECK(f, R(alo, ahi, 3, 7), R(blo, bhi, 3, 7));
  CHECK(f, R(alo, ahi, 7, 3), R(blo, bhi, 3));
  CHECK(f, R(alo, ahi, 1, 3), R(blo, bhi, 7, 1));
  CHECK(f, R(alo, ahi, 7, 1, 3), R(blo, bhi, 1));
  CHECK(f, R(alo, ahi, 1), R(blo, bhi, 3, 1, 7));
}

#define BINARY(name, alo, ahi, blo, bhi, expr)                                                  \
  static int f_##name(IrGraph *g, const int *x) { return expr; }                                \
  Test(grad, name) { binary(f_##name, alo, ahi, blo, bhi); }

BINARY(add, -2, 2, -2, 2, ir_add(g, x[0], x[1]))
BINARY(sub, -2, 2, -2, 2, ir_sub(g, x[0], x[1]))
BINARY(mul, -2, 2, -2, 2, ir_mul(g, x[0], x[1]))
BINARY(div, -2, 2, 0.5, 2, ir_div(g, x[0], x[1]))
BINARY(pow, 0.5, 2, -1.5, 1.5, ir_pow(g, x[0], x[1]))
BINARY(maximum, -2, 2, -2, 2, ir_maximum(g, x[0], x[1]))
BINARY(minimum, -2, 2, -2, 2, ir_minimum(g, x[0], x[1]))
static int f_broadcast_to(IrGraph *g, const int *x) { return ir_broadcast_to(g, x[0], IR_SHAPE(2, 3, 7)); }
Test(grad, broadcast_to) {
  CHECK(f_broadcast_to, R(-1, 1, 1));
  CHECK(f_broadcast_to, R(-1, 1, 3, 1));
  CHECK(f_broadcast_to, R(-1, 1, 7));
  CHECK(f_broadcast_to, R(-1, 1, 2, 1, 7));
}

static int f_where(IrGraph *g, const int *x) {
  return ir_where(g, ir_gt(g, x[2], ir_scalar(g, 0, IR_F64)), x[0], x[1]);
}
Test(grad, where) {
  Arg c = {IR_SHAPE(3, 7), -1, 2, IR_I64}; /* -1, 0 or 1 */
  CHECK(f_where, R(-2, 2, 3, 7), R(-2, 2, 7), c);
  CHECK(f_where, R(-2, 2, 1), R(-2, 2, 3, 1), c);
}

/* ---- reductions ---- */

static const int *axes_arg;
static int naxes_arg;
static bool keep_arg;
static IrOp red_op;
static int f_reduce(IrGraph *g, const int *x) {
  return ir_reduce(g, red_op, x[0], axes_arg, naxes_arg, keep_arg);
}

static void reduction(IrOp op) {
  red_op = op;
  for (int keep = 0; keep < 2; keep++) {
    keep_arg = keep;
    axes_arg = (int[]){1}, naxes_arg = 1;
    CHECK(f_reduce, R(-2, 2, 3, 7));
    axes_arg = (int[]){0, 2}, naxes_arg = 2;
    CHECK(f_reduce, R(-2, 2, 7, 1, 3));
    axes_arg = NULL, naxes_arg = 0;
    CHECK(f_reduce, R(-2, 2, 1));
    CHECK(f_reduce, R(-2, 2, 3, 7));
  }
}

Test(grad, sum) { reduction(IR_SUM); }
Test(grad, mean) { reduction(IR_MEAN); }
Test(grad, max) { reduction(IR_MAX); }
Test(grad, logsumexp) { reduction(IR_LOGSUMEXP); }

static int f_max_ties(IrGraph *g, const int *x) { /* ties split the gradient */
  return ir_max(g, ir_concat(g, (int[]){x[0], x[0]}, 2, 0), NULL, 0, false);
}
Test(grad, max_ties_share) {
  IrGraph *g = ir_new();
  int x = ok(ir_input(g, IR_IN_PARAM, "x", IR_F64, IR_SHAPE(2)));
  int l = ok(f_max_ties(g, &x)), gx;
  cr_assert_eq(ad_grad(g, l, &x, 1, &gx), 0);
  IrInterp *ip = run_f64(g, &x, (const double *const[]){(double[]){3, 1}}, 1);
  cr_expect_eq(interp_data(ip, gx)[0], 1.0, "two copies of the maximum get 1/2 each");
  cr_expect_eq(interp_data(ip, gx)[1], 0.0);
  interp_free(ip);
  ir_free(g);
}

/* ---- matmul ---- */

static int f_matmul(IrGraph *g, const int *x) { return ir_matmul(g, x[0], x[1]); }
Test(grad, matmul) {
  CHECK(f_matmul, R(-1, 1, 3, 7), R(-1, 1, 7, 1));
  CHECK(f_matmul, R(-1, 1, 1, 3), R(-1, 1, 3, 7));
  CHECK(f_matmul, R(-1, 1, 2, 3, 4), R(-1, 1, 4, 5));       /* batch on the left only */
  CHECK(f_matmul, R(-1, 1, 2, 1, 3, 4), R(-1, 1, 3, 4, 2)); /* both batches broadcast */
  CHECK(f_matmul, R(-1, 1, 7), R(-1, 1, 7, 3));             /* 1-D operands */
  CHECK(f_matmul, R(-1, 1, 3, 7), R(-1, 1, 7));
}

static int f_linear(IrGraph *g, const int *x) { return ir_linear(g, x[0], x[1], x[2]); }
Test(grad, linear) { CHECK(f_linear, R(-1, 1, 5, 7), R(-1, 1, 3, 7), R(-1, 1, 3)); }

/* ---- layout ---- */

static int f_reshape(IrGraph *g, const int *x) {
  return ir_mul(g, ir_reshape(g, ir_exp(g, ir_reshape(g, x[0], IR_SHAPE(7, -1))), IR_SHAPE(3, 7)), x[0]);
}
static int f_permute(IrGraph *g, const int *x) { return ir_permute(g, x[0], (int[]){2, 0, 1}); }
static int f_flatten(IrGraph *g, const int *x) { return ir_exp(g, ir_flatten(g, x[0], 1, 2)); }
Test(grad, reshape_permute_flatten) {
  CHECK(f_reshape, R(-1, 1, 3, 7));
  CHECK(f_permute, R(-1, 1, 3, 1, 7));
  CHECK(f_flatten, R(-1, 1, 2, 3, 7));
}

static int f_slice(IrGraph *g, const int *x) {
  return ir_slice(g, ir_slice(g, x[0], 1, 1, 7, 2), 0, -2, 3, 1);
}
Test(grad, slice) { CHECK(f_slice, R(-1, 1, 3, 7)); }

static int f_slice_scatter(IrGraph *g, const int *x) {
  IrAttr a;
  memset(&a, 0, sizeof a);
  a.shape = IR_SHAPE(3, 7);
  int64_t start[] = {1, 0}, stop[] = {3, 7}, step[] = {1, 3};
  memcpy(a.start, start, sizeof start);
  memcpy(a.stop, stop, sizeof stop);
  memcpy(a.step, step, sizeof step);
  return ir_make(g, IR_SLICE_SCATTER, &x[0], 1, &a);
}
Test(grad, slice_scatter) { CHECK(f_slice_scatter, R(-1, 1, 2, 3)); }

static int f_concat(IrGraph *g, const int *x) {
  return ir_mul(g, ir_concat(g, (int[]){x[0], x[1], x[0]}, 3, 1), ir_scalar(g, 2, IR_F64));
}
Test(grad, concat) { CHECK(f_concat, R(-1, 1, 3, 1), R(-1, 1, 3, 7)); }

static int f_pad(IrGraph *g, const int *x) {
  return ir_pad(g, x[0], (int64_t[]){1, 0}, (int64_t[]){2, 3}, 0.5);
}
Test(grad, pad) { CHECK(f_pad, R(-1, 1, 3, 7)); }

/* ---- convolution and pooling ---- */

static int64_t c_stride[2], c_pad[2], c_dil[2];
static int c_groups;
static int f_conv(IrGraph *g, const int *x) {
  return ir_conv2d(g, x[0], x[1], c_stride, c_pad, c_dil, c_groups);
}
static void conv_case(int64_t s, int64_t p, int64_t d, int groups, IrShape xs, IrShape ws) {
  c_stride[0] = c_stride[1] = s;
  c_pad[0] = p, c_pad[1] = p > 0 ? p - 1 : 0;
  c_dil[0] = d, c_dil[1] = 1;
  c_groups = groups;
  gradcheck(f_conv, 2, (Arg[]){{xs, -1, 1, IR_F64}, {ws, -1, 1, IR_F64}});
}
Test(grad, conv2d) {
  conv_case(1, 0, 1, 1, IR_SHAPE(1, 1, 3, 3), IR_SHAPE(1, 1, 1, 1));
  conv_case(1, 1, 1, 1, IR_SHAPE(2, 3, 7, 5), IR_SHAPE(4, 3, 3, 3));
  conv_case(2, 2, 1, 1, IR_SHAPE(1, 2, 7, 7), IR_SHAPE(3, 2, 3, 2));
  conv_case(1, 2, 2, 2, IR_SHAPE(2, 4, 7, 5), IR_SHAPE(6, 2, 3, 3));
  conv_case(3, 1, 1, 3, IR_SHAPE(1, 3, 7, 7), IR_SHAPE(3, 1, 3, 3)); /* depthwise */
}

static int64_t p_kernel[2], p_stride[2], p_pad[2];
static bool p_include;
static int f_maxpool(IrGraph *g, const int *x) { return ir_max_pool2d(g, x[0], p_kernel, p_stride, p_pad); }
static int f_avgpool(IrGraph *g, const int *x) {
  return ir_avg_pool2d(g, x[0], p_kernel, p_stride, p_pad, p_include);
}
static void pool_case(Fn *f, int64_t k, int64_t s, int64_t p, IrShape xs) {
  p_kernel[0] = k, p_kernel[1] = k > 1 ? k - 1 : 1;
  p_stride[0] = s, p_stride[1] = 1;
  p_pad[0] = p, p_pad[1] = 0;
  gradcheck(f, 1, (Arg[]){{xs, -1, 1, IR_F64}});
}
Test(grad, max_pool2d) {
  pool_case(f_maxpool, 2, 2, 0, IR_SHAPE(2, 3, 7, 5));
  pool_case(f_maxpool, 3, 2, 1, IR_SHAPE(1, 2, 7, 7));
  pool_case(f_maxpool, 1, 1, 0, IR_SHAPE(1, 1, 3, 1));
}
Test(grad, avg_pool2d) {
  for (int inc = 0; inc < 2; inc++) {
    p_include = inc;
    pool_case(f_avgpool, 2, 2, 0, IR_SHAPE(2, 3, 7, 5));
    pool_case(f_avgpool, 3, 2, 1, IR_SHAPE(1, 2, 7, 7));
  }
}

static int f_avgpool_bwd(IrGraph *g, const int *x) {
  IrAttr a;
  memset(&a, 0, sizeof a);
  a.kernel[0] = 3, a.kernel[1] = 2, a.stride[0] = 2, a.stride[1] = 1, a.pad[0] = 1;
  a.count_include_pad = false;
  a.shape = IR_SHAPE(1, 2, 7, 5);
  return ir_make(g, IR_AVG_POOL2D_BWD, &x[0], 1, &a);
}
Test(grad, avg_pool2d_bwd) { CHECK(f_avgpool_bwd, R(-1, 1, 1, 2, 4, 4)); }

/* ---- losses ---- */

static double smoothing;
static int f_ce(IrGraph *g, const int *x) { return ir_cross_entropy(g, x[0], x[1], smoothing); }
static int f_nll(IrGraph *g, const int *x) { return ir_nll_loss(g, ir_log_softmax(g, x[0], 1), x[1]); }
static int f_nll_raw(IrGraph *g, const int *x) { return ir_nll_loss(g, x[0], x[1]); }
Test(grad, cross_entropy) {
  for (int k = 0; k < 2; k++) {
    smoothing = k ? 0.1 : 0;
    CHECK(f_ce, R(-2, 2, 7, 3), IDX(3, 7));
    CHECK(f_ce, R(-2, 2, 1, 7), IDX(7, 1));
    CHECK(f_ce, R(-2, 2, 3, 5, 7), IDX(5, 3, 7));
  }
}
Test(grad, nll_loss) {
  CHECK(f_nll, R(-2, 2, 7, 3), IDX(3, 7));
  CHECK(f_nll_raw, R(-2, 2, 3, 5, 7), IDX(5, 3, 7));
}

static int f_mse(IrGraph *g, const int *x) { return ir_mse_loss(g, x[0], x[1]); }
static int f_bce(IrGraph *g, const int *x) { return ir_bce_with_logits(g, x[0], x[1]); }
Test(grad, mse_loss) {
  CHECK(f_mse, R(-2, 2, 1), R(-2, 2, 1));
  CHECK(f_mse, R(-2, 2, 3, 7), R(-2, 2, 3, 7));
}
Test(grad, bce_with_logits) {
  CHECK(f_bce, R(-3, 3, 1), R(0, 1, 1));
  CHECK(f_bce, R(-3, 3, 3, 7), R(0, 1, 3, 7));
}

/* ---- indexing ---- */

static int f_take(IrGraph *g, const int *x) { return ir_take(g, x[0], x[1], 1); }
static int f_embedding(IrGraph *g, const int *x) { return ir_embedding(g, x[0], x[1]); }
Test(grad, take) {
  CHECK(f_take, R(-1, 1, 3, 7, 2), IDX(7, 5, 3)); /* repeated indices accumulate */
  CHECK(f_embedding, R(-1, 1, 7, 3), IDX(7, 4, 7));
  CHECK(f_embedding, R(-1, 1, 1, 1), IDX(1, 3));
}

static int f_take_grad(IrGraph *g, const int *x) {
  IrAttr a;
  memset(&a, 0, sizeof a);
  a.axis = 0;
  a.shape = IR_SHAPE(7, 3);
  return ir_make(g, IR_TAKE_GRAD, (int[]){x[0], x[1]}, 2, &a);
}
Test(grad, take_grad) { CHECK(f_take_grad, R(-1, 1, 5, 3), IDX(7, 5)); }

static int f_gather(IrGraph *g, const int *x) { return ir_gather(g, x[0], 1, x[1]); }
Test(grad, gather) {
  CHECK(f_gather, R(-1, 1, 3, 7), IDX(7, 3, 5));
  CHECK(f_gather, R(-1, 1, 1, 3), IDX(3, 1, 1));
}

static int f_scatter_add(IrGraph *g, const int *x) {
  IrAttr a;
  memset(&a, 0, sizeof a);
  a.axis = 0;
  a.shape = IR_SHAPE(3, 7);
  return ir_make(g, IR_SCATTER_ADD, (int[]){x[0], x[1]}, 2, &a);
}
Test(grad, scatter_add) { CHECK(f_scatter_add, R(-1, 1, 5, 7), IDX(3, 5, 7)); }

/* ---- dropout, normalisation layers ---- */

static int f_dropout(IrGraph *g, const int *x) {
  int step = ir_scalar(g, 11, IR_I64);
  return ir_mul(g, ir_dropout(g, x[0], 0.3, 5, step), x[0]);
}
Test(grad, dropout) {
  CHECK(f_dropout, R(-1, 1, 3, 7));
  CHECK(f_dropout, R(-1, 1, 1));
}

static int f_layer_norm(IrGraph *g, const int *x) { return ir_layer_norm(g, x[0], 1, x[1], x[2], 1e-5); }
static int f_layer_norm2(IrGraph *g, const int *x) { return ir_layer_norm(g, x[0], 2, -1, -1, 1e-5); }
Test(grad, layer_norm) {
  CHECK(f_layer_norm, R(-2, 2, 3, 7), R(0.5, 2, 7), R(-1, 1, 7));
  CHECK(f_layer_norm2, R(-2, 2, 2, 3, 7));
}

static bool bn_train;
static int f_batch_norm(IrGraph *g, const int *x) {
  int rm = ir_const(g, 0.1, IR_F64, IR_SHAPE(3)), rv = ir_const(g, 1.5, IR_F64, IR_SHAPE(3)), a, b;
  return ir_batch_norm(g, x[0], x[1], x[2], rm, rv, bn_train, 0.1, 1e-5, &a, &b);
}
Test(grad, batch_norm) {
  for (int t = 0; t < 2; t++) {
    bn_train = t;
    CHECK(f_batch_norm, R(-2, 2, 7, 3), R(0.5, 2, 3), R(-1, 1, 3));
    CHECK(f_batch_norm, R(-2, 2, 2, 3, 3, 1), R(0.5, 2, 3), R(-1, 1, 3));
  }
}

/* ---- what flows and what does not ---- */

Test(grad, detach_stops_the_gradient) {
  IrGraph *g = ir_new();
  int x = ok(ir_input(g, IR_IN_PARAM, "x", IR_F64, IR_SHAPE(3)));
  int l = ok(ir_sum(g, ir_mul(g, x, ir_detach(g, x)), NULL, 0, false)), gx;
  cr_assert_eq(ad_grad(g, l, &x, 1, &gx), 0);
  double v[] = {1, -2, 3};
  IrInterp *ip = run_f64(g, &x, (const double *const[]){v}, 1);
  for (int i = 0; i < 3; i++)
    cr_expect_eq(interp_data(ip, gx)[i], v[i], "d(x * detach(x))/dx = x, not 2x");
  interp_free(ip);
  ir_free(g);
}

Test(grad, unrelated_param_gets_zero_and_integers_are_refused) {
  IrGraph *g = ir_new();
  int x = ok(ir_input(g, IR_IN_PARAM, "x", IR_F32, IR_SHAPE(2)));
  int u = ok(ir_input(g, IR_IN_PARAM, "u", IR_F32, IR_SHAPE(4)));
  int i = ok(ir_input(g, IR_IN_DATA, "i", IR_I64, IR_SHAPE(2)));
  int l = ok(ir_sum(g, ir_mul(g, x, ir_cast(g, i, IR_F32)), NULL, 0, false));
  int gr[2];
  cr_assert_eq(ad_grad(g, l, (int[]){x, u}, 2, gr), 0);
  cr_expect_eq(g->node[gr[0]].dtype, IR_F32);
  cr_expect_eq(g->node[gr[1]].op, IR_CONST);
  cr_expect(ir_shape_eq(g->node[gr[1]].shape, IR_SHAPE(4)));
  cr_expect_eq(ad_grad(g, l, &i, 1, gr), -1);
  cr_expect_str_eq(ir_error(g), "autodiff: cannot differentiate with respect to i i64[2], not "
                                "floating-point");
  int v = ok(ir_exp(g, x));
  cr_expect_eq(ad_grad(g, v, &x, 1, gr), -1);
  cr_expect_str_eq(ir_error(g), "autodiff: the loss must be a floating-point scalar, got f32[2]");
  ir_free(g);
}

Test(grad, two_losses_two_groups) {
  /* a GAN's shape: g_loss w.r.t. G's params through D, d_loss w.r.t. D's params with the
   * generator's output detached */
  IrGraph *g = ir_new();
  int z = ok(ir_input(g, IR_IN_DATA, "z", IR_F64, IR_SHAPE(4, 2)));
  int real = ok(ir_input(g, IR_IN_DATA, "real", IR_F64, IR_SHAPE(4, 3)));
  int gw = ok(ir_input(g, IR_IN_PARAM, "G.w", IR_F64, IR_SHAPE(3, 2)));
  int dw = ok(ir_input(g, IR_IN_PARAM, "D.w", IR_F64, IR_SHAPE(1, 3)));
  int fake = ok(ir_tanh(g, ir_linear(g, z, gw, -1)));
  int ones = ok(ir_const(g, 1, IR_F64, IR_SHAPE(4, 1))), zeros = ok(ir_const(g, 0, IR_F64, IR_SHAPE(4, 1)));
  int g_loss = ok(ir_bce_with_logits(g, ir_linear(g, fake, dw, -1), ones));
  int d_loss = ok(ir_add(g, ir_bce_with_logits(g, ir_linear(g, real, dw, -1), ones),
                         ir_bce_with_logits(g, ir_linear(g, ir_detach(g, fake), dw, -1), zeros)));
  int gg, gd[2];
  cr_assert_eq(ad_grad(g, g_loss, &gw, 1, &gg), 0);
  cr_assert_eq(ad_grad(g, d_loss, (int[]){dw, gw}, 2, gd), 0);
  cr_expect_eq(g->node[gd[1]].op, IR_CONST, "no path from d_loss to G through detach");
  double vz[8], vr[12], vg[6], vd[3];
  fill_uniform(vz, 8, 1, -1, 1);
  fill_uniform(vr, 12, 2, -1, 1);
  fill_uniform(vg, 6, 3, -1, 1);
  fill_uniform(vd, 3, 4, -1, 1);
  IrInterp *ip = run_f64(g, (int[]){z, real, gw, dw}, (const double *const[]){vz, vr, vg, vd}, 4);
  double sum = 0;
  for (int i = 0; i < 6; i++)
    sum += fabs(interp_data(ip, gg)[i]);
  cr_expect(sum > 0, "G gets a gradient through D");
  interp_free(ip);
  ir_free(g);
}
