/* test_cpu.c — the CPU backend (fuse.c, llvm_step*.c) against the reference interpreter.
 *
 * Every graph runs twice on the same random inputs: on the interpreter (f32 mode: each op
 * computed in double and rounded to f32) and JIT-compiled.  Floating outputs are compared
 * normwise: max |jit - ref| <= tol * max |ref| (tolerances below); integer and bool outputs
 * must be equal.  Elementwise arithmetic is exact (the interpreter's double result rounded to
 * f32 is the correctly rounded f32 result), so most elementwise tests use 1e-6 only for exp
 * (a polynomial, ~1 ulp) and libm's f32 functions; sums and products use 1e-5 (different
 * summation order, f32 accumulators in GEMMs).  Each checked graph also runs compiled for 2
 * threads and must give bit-identical outputs.  Shapes include 1, 7, 33, 64 and 1000, none a
 * multiple of the vector width. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "example_test.h"
#include "llvm.h"
#include "rt.h"
#include "sema.h"

#define OK(v)                                                                                   \
  ({                                                                                            \
    int v_ = (v);                                                                               \
    cr_assert(v_ >= 0, "builder failed: %s", ir_error(g));                                      \
    v_;                                                                                         \
  })

static uint64_t seed = 1;
static int64_t index_range = 10; /* integer inputs draw from [0, index_range) */
static double lo_ = -2, hi_ = 2;  /* float inputs draw from [lo_, hi_) */

/* The inputs of a graph: flat buffers for params / buffers / state, one buffer per DATA. */
typedef struct {
  IrLayout lay[3];
  unsigned char *flat[3], *flat0[3];
  void **data; /* per node (DATA inputs only) */
} Inputs;

static int kind_index(IrInputKind k) { return k == IR_IN_PARAM ? 0 : k == IR_IN_BUFFER ? 1 : 2; }

static void fill_random(IrDtype t, void *buf, int64_t n, uint64_t stream) {
  for (int64_t i = 0; i < n; i++) {
    double u = philox_uniform(seed, stream, (uint64_t)i), v;
    if (ir_dtype_is_float(t))
      v = lo_ + (hi_ - lo_) * u;
    else if (t == IR_BOOL)
      v = u < 0.5;
    else
      v = floor(u * (double)index_range);
    ir_store(t, buf, i, v);
  }
}

static Inputs inputs_new(const IrGraph *g) {
  Inputs in = {0};
  in.data = calloc((size_t)g->n, sizeof *in.data);
  IrInputKind kinds[3] = {IR_IN_PARAM, IR_IN_BUFFER, IR_IN_STATE};
  for (int k = 0; k < 3; k++) {
    in.lay[k] = ir_layout(g, kinds[k]);
    in.flat[k] = calloc(1, (size_t)in.lay[k].bytes + 64);
    in.flat0[k] = calloc(1, (size_t)in.lay[k].bytes + 64);
  }
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    if (n->op != IR_INPUT)
      continue;
    int64_t cnt = ir_numel(n->shape);
    if (n->kind == IR_IN_DATA || n->kind == IR_IN_GRAD) {
      in.data[i] = calloc(1, (size_t)(cnt * ir_dtype_size(n->dtype) + 8));
      if (n->name && !strcmp(n->name, "step"))
        ir_store(n->dtype, in.data[i], 0, 7);
      else if (n->name && !strcmp(n->name, "lr"))
        ir_store(n->dtype, in.data[i], 0, 1e-3);
      else
        fill_random(n->dtype, in.data[i], cnt, (uint64_t)i);
    } else {
      int k = kind_index(n->kind);
      for (int s = 0; s < in.lay[k].n; s++)
        if (in.lay[k].slot[s].value == i)
          fill_random(n->dtype, in.flat0[k] + in.lay[k].slot[s].offset, cnt, (uint64_t)i + 1000);
    }
  }
  for (int k = 0; k < 3; k++)
    memcpy(in.flat[k], in.flat0[k], (size_t)in.lay[k].bytes);
  return in;
}

static void inputs_reset(Inputs *in) {
  for (int k = 0; k < 3; k++)
    memcpy(in->flat[k], in->flat0[k], (size_t)in->lay[k].bytes);
}

static void inputs_free(const IrGraph *g, Inputs *in) {
  for (int i = 0; i < g->n; i++)
    free(in->data[i]);
  free(in->data);
  for (int k = 0; k < 3; k++) {
    ir_layout_free(&in->lay[k]);
    free(in->flat[k]);
    free(in->flat0[k]);
  }
}

static const void *input_ptr(const IrGraph *g, Inputs *in, int id, bool pristine) {
  const IrNode *n = &g->node[id];
  if (n->kind == IR_IN_DATA || n->kind == IR_IN_GRAD)
    return in->data[id];
  int k = kind_index(n->kind);
  for (int s = 0; s < in->lay[k].n; s++)
    if (in->lay[k].slot[s].value == id)
      return (pristine ? in->flat0[k] : in->flat[k]) + in->lay[k].slot[s].offset;
  return NULL;
}

static IrInterp *run_interp(const IrGraph *g, Inputs *in) {
  IrInterp *ip = interp_new(g, false);
  cr_assert(ip);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT)
      interp_set(ip, i, input_ptr(g, in, i, true));
  const char *err = interp_run(ip);
  cr_assert_null(err, "interpreter: %s", err);
  return ip;
}

static LlvmStep *compile(const IrGraph *g, int threads) {
  char err[512];
  LlvmStepOptions o = {.nthreads = threads, .grads = true};
  LlvmStep *s = llvm_step_compile(g, &o, err, sizeof err);
  cr_assert(s, "compile: %s", err);
  return s;
}

static const char *run_jit(const IrGraph *g, LlvmStep *s, Inputs *in) {
  inputs_reset(in);
  llvm_step_bind(s, IR_IN_PARAM, in->flat[0]);
  llvm_step_bind(s, IR_IN_BUFFER, in->flat[1]);
  llvm_step_bind(s, IR_IN_STATE, in->flat[2]);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT && (g->node[i].kind == IR_IN_DATA || g->node[i].kind == IR_IN_GRAD))
      llvm_step_set_input(s, i, in->data[i]);
  return llvm_step_run(s);
}

/* max |a - b| / max |b| over n values of dtype t (0 when equal; ints: 1 if any differs) */
static double rel_err(IrDtype t, const void *a, const double *b, int64_t n, int64_t *where) {
  double scale = 0, worst = 0;
  for (int64_t i = 0; i < n; i++)
    scale = fmax(scale, fabs(b[i]));
  for (int64_t i = 0; i < n; i++) {
    double x = ir_load(t, a, i), d;
    if (isnan(x) || isnan(b[i]))
      d = isnan(x) && isnan(b[i]) ? 0 : INFINITY;
    else if (isinf(x) || isinf(b[i]))
      d = x == b[i] ? 0 : INFINITY;
    else if (!ir_dtype_is_float(t))
      d = x == b[i] ? 0 : 1;
    else
      d = fabs(x - b[i]) / (scale > 0 ? scale : 1);
    if (d > worst) {
      worst = d;
      *where = i;
    }
  }
  return worst;
}

/* Copies of every output after a run (for comparing runs bit for bit). */
static unsigned char **snapshot(const IrGraph *g, LlvmStep *s) {
  unsigned char **out = calloc((size_t)g->nout + 1, sizeof *out);
  for (int o = 0; o < g->nout; o++) {
    const IrNode *n = &g->node[g->out[o].value];
    size_t bytes = (size_t)(ir_numel(n->shape) * ir_dtype_size(n->dtype));
    out[o] = malloc(bytes + 1);
    memcpy(out[o], llvm_step_output(s, o), bytes);
  }
  return out;
}

static void snapshot_free(const IrGraph *g, unsigned char **snap) {
  for (int o = 0; o < g->nout; o++)
    free(snap[o]);
  free(snap);
}

/* The core check: JIT (1 thread) vs interpreter within tol, then 2 threads bit-identical. */
static void check_tol(const IrGraph *g, double tol, const char *what) {
  Inputs in = inputs_new(g);
  IrInterp *ip = run_interp(g, &in);
  LlvmStep *s = compile(g, 1);
  const char *err = run_jit(g, s, &in);
  cr_assert_null(err, "%s: run: %s", what, err);
  for (int o = 0; o < g->nout; o++) {
    const IrOutput *out = &g->out[o];
    const IrNode *n = &g->node[out->value];
    int64_t where = 0;
    double e = rel_err(n->dtype, llvm_step_output(s, o), interp_data(ip, out->value), ir_numel(n->shape), &where);
    cr_expect(e <= tol, "%s: output %d (%%%d %s %s): relative error %.3g > %.3g at element %lld: %.9g vs %.9g",
              what, o, out->value, ir_op_name(n->op), out->name ? out->name : "", e, tol, (long long)where,
              ir_load(n->dtype, llvm_step_output(s, o), where), interp_data(ip, out->value)[where]);
  }
  unsigned char **one = snapshot(g, s);
  LlvmStep *s2 = compile(g, 2);
  err = run_jit(g, s2, &in);
  cr_assert_null(err, "%s: run (2 threads): %s", what, err);
  for (int o = 0; o < g->nout; o++) {
    const IrNode *n = &g->node[g->out[o].value];
    size_t bytes = (size_t)(ir_numel(n->shape) * ir_dtype_size(n->dtype));
    cr_expect(memcmp(one[o], llvm_step_output(s2, o), bytes) == 0, "%s: output %d differs with 2 threads", what, o);
  }
  snapshot_free(g, one);
  llvm_step_free(s2);
  llvm_step_free(s);
  interp_free(ip);
  inputs_free(g, &in);
}

static IrGraph *g1(void) { return ir_new(); }

static int data(IrGraph *g, const char *name, IrDtype t, IrShape s) { return OK(ir_input(g, IR_IN_DATA, name, t, s)); }

static void out(IrGraph *g, int v) { ir_output(g, v, IR_OUT_VALUE, -1, "y"); }

static const IrShape shapes[] = {{1, {1}}, {1, {7}}, {1, {33}}, {2, {64, 33}}, {1, {1000}}, {3, {2, 7, 5}}};
enum { NSHAPES = sizeof shapes / sizeof shapes[0] };

/* ---- elementwise ---- */

Test(cpu, unary_ops) {
  static const IrOp ops[] = {IR_NEG, IR_ABS, IR_SIGN, IR_EXP, IR_LOG, IR_SQRT, IR_RSQRT, IR_TANH,
                             IR_SIGMOID, IR_ERF, IR_RELU, IR_GELU, IR_DETACH};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    for (int si = 0; si < NSHAPES; si += (o % 2) + 1) {
      IrGraph *g = g1();
      bool pos = ops[o] == IR_LOG || ops[o] == IR_SQRT || ops[o] == IR_RSQRT;
      lo_ = pos ? 0.05 : ops[o] == IR_EXP ? -80 : -4;
      hi_ = pos ? 4 : ops[o] == IR_EXP ? 80 : 4;
      int x = data(g, "x", IR_F32, shapes[si]);
      out(g, OK(ir_unary(g, ops[o], x)));
      char what[64];
      snprintf(what, sizeof what, "%s shape %d", ir_op_name(ops[o]), si);
      bool exact = ops[o] == IR_NEG || ops[o] == IR_ABS || ops[o] == IR_SIGN || ops[o] == IR_SQRT ||
                   ops[o] == IR_RELU || ops[o] == IR_DETACH;
      check_tol(g, exact ? 0 : 1e-6, what);
      ir_free(g);
    }
  lo_ = -2, hi_ = 2;
}

/* exp, log, tanh, erf, sigmoid, gelu are polynomials in the generated code: special values */
Test(cpu, math_special_values) {
  static const double v[] = {0, -0.0, 1e-40, -1e-40, 1e-30, 0.5, 0.625, 0.9999, 1, 1.0001, 1.9999, 2, 2.0001,
                             3, 9.5, 20, 80, 88.7, 88.8, 100, 1e30, INFINITY, -0.5, -1, -2, -3, -20, -87,
                             -88, -100, -103, -104, -200, -INFINITY, NAN, 1e-7, 0.69314718, 7.1e-3};
  enum { NV = sizeof v / sizeof v[0] };
  static const IrOp ops[] = {IR_EXP, IR_LOG, IR_TANH, IR_ERF, IR_SIGMOID, IR_GELU};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    IrGraph *g = g1();
    int x = OK(ir_const_data(g, IR_F32, IR_SHAPE(NV), v));
    int y = OK(ir_unary(g, ops[o], x));
    out(g, y);
    Inputs in = inputs_new(g);
    IrInterp *ip = run_interp(g, &in);
    LlvmStep *s = compile(g, 1);
    cr_assert_null(run_jit(g, s, &in));
    const float *got = llvm_step_output(s, 0);
    const double *ref = interp_data(ip, y);
    for (int i = 0; i < NV; i++) {
      /* gelu's negative tail: 1 + erf(x / sqrt 2) cancels, so any f32 erf (libm's too) is
       * off there by ~1e-7 |x| absolutely, not relatively */
      double tol = ops[o] == IR_GELU && v[i] < -1 ? 2e-7 * fabs(v[i]) : 3e-7 * fabs(ref[i]);
      bool same = (isnan(got[i]) && isnan(ref[i])) || got[i] == ref[i] || fabs(got[i] - ref[i]) <= tol ||
                  fabs(got[i] - ref[i]) < 1e-44;
      cr_expect(same, "%s(%g) = %.9g, expected %.9g", ir_op_name(ops[o]), v[i], got[i], ref[i]);
    }
    llvm_step_free(s);
    interp_free(ip);
    inputs_free(g, &in);
    ir_free(g);
  }
}

Test(cpu, leaky_relu_and_nan) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, IR_SHAPE(33));
  int nan = OK(ir_const(g, NAN, IR_F32, IR_SHAPE(33)));
  int xn = OK(ir_add(g, x, OK(ir_mul(g, nan, OK(ir_lt(g, x, OK(ir_scalar(g, -1.5, IR_F32))))))));
  /* NaN where x < -1.5: relu, maximum and max keep it, as PyTorch */
  out(g, OK(ir_leaky_relu(g, x, 0.2)));
  out(g, OK(ir_relu(g, xn)));
  out(g, OK(ir_maximum(g, xn, x)));
  out(g, OK(ir_minimum(g, x, xn)));
  out(g, OK(ir_max(g, xn, NULL, 0, false)));
  out(g, OK(ir_sign(g, xn)));
  check_tol(g, 1e-7, "leaky_relu, NaN propagation");
  ir_free(g);
}

Test(cpu, binary_broadcast) {
  static const IrOp ops[] = {IR_ADD, IR_SUB, IR_MUL, IR_DIV, IR_POW, IR_MAXIMUM, IR_MINIMUM,
                             IR_EQ, IR_NE, IR_LT, IR_LE, IR_GT, IR_GE};
  static const struct { IrShape a, b; } pairs[] = {
      {{2, {7, 33}}, {1, {33}}},   {{2, {64, 1}}, {2, {1, 33}}}, {{1, {1000}}, {0, {0}}},
      {{3, {2, 3, 5}}, {2, {3, 1}}}, {{1, {1}}, {1, {1000}}},   {{2, {33, 7}}, {2, {33, 7}}}};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p += 1 + (o % 2)) {
      IrGraph *g = g1();
      lo_ = ops[o] == IR_POW ? 0.1 : -2;
      int a = data(g, "a", IR_F32, pairs[p].a), b = data(g, "b", IR_F32, pairs[p].b);
      out(g, OK(ir_binary(g, ops[o], a, b)));
      char what[64];
      snprintf(what, sizeof what, "%s pair %zu", ir_op_name(ops[o]), p);
      check_tol(g, ops[o] == IR_POW ? 1e-6 : 0, what);
      ir_free(g);
    }
  lo_ = -2;
}

Test(cpu, integer_and_bool_ops) {
  IrGraph *g = g1();
  index_range = 100;
  int a = data(g, "a", IR_I64, IR_SHAPE(7, 33)), b = data(g, "b", IR_I64, IR_SHAPE(33));
  int c = data(g, "c", IR_I32, IR_SHAPE(33)), m = data(g, "m", IR_BOOL, IR_SHAPE(7, 1));
  out(g, OK(ir_add(g, a, b)));
  out(g, OK(ir_sub(g, a, b)));
  out(g, OK(ir_mul(g, a, b)));
  out(g, OK(ir_maximum(g, a, b)));
  out(g, OK(ir_lt(g, a, b)));
  out(g, OK(ir_neg(g, c)));
  out(g, OK(ir_where(g, m, a, b)));
  out(g, OK(ir_cast(g, a, IR_F32)));
  out(g, OK(ir_cast(g, c, IR_F64)));
  out(g, OK(ir_cast(g, m, IR_F32)));
  out(g, OK(ir_cast(g, a, IR_I32)));
  out(g, OK(ir_cast(g, a, IR_BOOL)));
  check_tol(g, 0, "integer ops");
  ir_free(g);
  index_range = 10;
}

Test(cpu, casts_and_where) {
  IrGraph *g = g1();
  lo_ = -300, hi_ = 300;
  int x = data(g, "x", IR_F32, IR_SHAPE(64, 7)), d = data(g, "d", IR_F64, IR_SHAPE(7));
  out(g, OK(ir_cast(g, x, IR_I64)));
  out(g, OK(ir_cast(g, x, IR_I32)));
  out(g, OK(ir_cast(g, x, IR_U8)));
  out(g, OK(ir_cast(g, x, IR_BOOL)));
  out(g, OK(ir_cast(g, x, IR_F64)));
  out(g, OK(ir_cast(g, d, IR_F32)));
  out(g, OK(ir_add(g, OK(ir_cast(g, x, IR_F64)), d)));
  out(g, OK(ir_where(g, OK(ir_gt(g, x, OK(ir_scalar(g, 0, IR_F32)))), x, OK(ir_scalar(g, -1, IR_F32)))));
  check_tol(g, 0, "casts and where");
  ir_free(g);
  lo_ = -2, hi_ = 2;
}

/* A chain of elementwise ops with several stored results becomes one loop. */
Test(cpu, fused_elementwise_chain) {
  IrGraph *g = g1();
  int p = data(g, "p", IR_F32, IR_SHAPE(1000)), gr = data(g, "g", IR_F32, IR_SHAPE(1000));
  int m = data(g, "m", IR_F32, IR_SHAPE(1000)), lr = data(g, "lr", IR_F32, IR_SCALAR);
  int m2 = OK(ir_add(g, OK(ir_mul(g, OK(ir_scalar(g, 0.9, IR_F32)), m)), OK(ir_mul(g, OK(ir_scalar(g, 0.1, IR_F32)), gr))));
  int v = OK(ir_mul(g, gr, gr));
  int upd = OK(ir_div(g, OK(ir_mul(g, lr, m2)), OK(ir_add(g, OK(ir_sqrt(g, v)), OK(ir_scalar(g, 1e-8, IR_F32))))));
  int p2 = OK(ir_sub(g, p, upd));
  out(g, m2);
  out(g, p2);
  out(g, OK(ir_sigmoid(g, OK(ir_tanh(g, p2)))));
  char err[256];
  LlvmGemmBlocking blk = llvm_gemm_blocking(LLVM_ISA_AVX512, true);
  FuseOptions fo = {.nthreads = 2, .blk = &blk};
  FusePlan *plan = fuse_plan(g, &fo, err, sizeof err);
  cr_assert(plan, "%s", err);
  cr_expect_eq(plan->nk, 1, "one loop for the whole chain, got %d kernels", plan->nk);
  cr_expect_eq(plan->k[0].nout, 3, "three stored results");
  fuse_free(plan);
  check_tol(g, 1e-6, "fused chain");
  ir_free(g);
}

Test(cpu, layout_views_and_copies) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, IR_SHAPE(7, 33, 5));
  int perm[] = {2, 0, 1};
  int t = OK(ir_permute(g, x, perm));                          /* a strided view ... */
  out(g, OK(ir_exp(g, t)));                                    /* read by a loop */
  out(g, OK(ir_reshape(g, x, IR_SHAPE(33, 35))));              /* a contiguous view */
  out(g, OK(ir_slice(g, x, 1, 3, 30, 4)));                     /* a strided slice */
  out(g, OK(ir_broadcast_to(g, OK(ir_slice(g, x, 0, 2, 3, 1)), IR_SHAPE(4, 1, 33, 5))));
  out(g, OK(ir_sum(g, t, (int[]){1}, 1, false)));              /* reduction through a view */
  out(g, OK(ir_reshape(g, t, IR_SHAPE(5, 231))));              /* reshape of a permute: a copy */
  check_tol(g, 1e-6, "views");
  ir_free(g);
}

/* ---- reductions, rows ---- */

Test(cpu, reductions) {
  static const struct { IrShape s; int axes[3], naxes; } cases[] = {
      {{2, {33, 64}}, {0}, 1}, {{2, {33, 64}}, {1}, 1}, {{2, {33, 64}}, {0, 1}, 2},
      {{2, {7, 1000}}, {1}, 1}, {{3, {4, 7, 33}}, {0, 2}, 2}, {{3, {4, 7, 33}}, {1}, 1},
      {{1, {1000}}, {0}, 1}, {{4, {64, 3, 5, 7}}, {0, 2, 3}, 3}, {{2, {1, 7}}, {0}, 1}};
  static const IrOp ops[] = {IR_SUM, IR_MEAN, IR_MAX};
  for (size_t o = 0; o < 3; o++)
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
      IrGraph *g = g1();
      int x = data(g, "x", IR_F32, cases[c].s);
      out(g, OK(ir_reduce(g, ops[o], x, cases[c].axes, cases[c].naxes, c % 2 == 0)));
      char what[64];
      snprintf(what, sizeof what, "%s case %zu", ir_op_name(ops[o]), c);
      check_tol(g, ops[o] == IR_MAX ? 0 : 1e-6, what);
      ir_free(g);
    }
  IrGraph *g = g1();
  index_range = 1000;
  int x = data(g, "x", IR_I64, IR_SHAPE(7, 33)), d = data(g, "d", IR_F64, IR_SHAPE(33, 7));
  out(g, OK(ir_sum(g, x, (int[]){1}, 1, false)));
  out(g, OK(ir_max(g, x, (int[]){0}, 1, false)));
  out(g, OK(ir_mean(g, d, (int[]){0}, 1, true)));
  check_tol(g, 1e-12, "integer and f64 reductions");
  ir_free(g);
  index_range = 10;
}

Test(cpu, softmax_argmax) {
  static const struct { IrShape s; int axis; } cases[] = {
      {{2, {7, 33}}, 1}, {{2, {33, 7}}, 0}, {{3, {2, 7, 64}}, 1}, {{2, {64, 10}}, 1}, {{1, {1000}}, 0}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    IrGraph *g = g1();
    lo_ = -20, hi_ = 20;
    int x = data(g, "x", IR_F32, cases[c].s);
    out(g, OK(ir_softmax(g, x, cases[c].axis)));
    out(g, OK(ir_log_softmax(g, x, cases[c].axis)));
    out(g, OK(ir_argmax(g, x, cases[c].axis, false)));
    char what[64];
    snprintf(what, sizeof what, "softmax case %zu", c);
    check_tol(g, 2e-6, what);
    ir_free(g);
  }
  lo_ = -2, hi_ = 2;
}

Test(cpu, losses) {
  IrGraph *g = g1();
  lo_ = -5, hi_ = 5;
  int x = data(g, "x", IR_F32, IR_SHAPE(64, 10)), y = data(g, "y", IR_I64, IR_SHAPE(64));
  int a = data(g, "a", IR_F32, IR_SHAPE(7, 33)), b = data(g, "b", IR_F32, IR_SHAPE(7, 33));
  int y32 = data(g, "y32", IR_I32, IR_SHAPE(64));
  out(g, OK(ir_cross_entropy(g, x, y, 0)));
  out(g, OK(ir_cross_entropy(g, x, y32, 0.1)));
  out(g, OK(ir_nll_loss(g, OK(ir_log_softmax(g, x, 1)), y)));
  out(g, OK(ir_mse_loss(g, a, b)));
  out(g, OK(ir_bce_with_logits(g, a, OK(ir_sigmoid(g, b)))));
  out(g, OK(ir_accuracy(g, x, y)));
  out(g, OK(ir_one_hot(g, y, 10, IR_F32)));
  check_tol(g, 1e-6, "losses");
  ir_free(g);
  lo_ = -2, hi_ = 2;
}

Test(cpu, class_index_out_of_range) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, IR_SHAPE(7, 10)), y = data(g, "y", IR_I64, IR_SHAPE(7));
  out(g, OK(ir_cross_entropy(g, x, y, 0)));
  Inputs in = inputs_new(g);
  ((int64_t *)in.data[y])[3] = 12;
  LlvmStep *s = compile(g, 1);
  const char *err = run_jit(g, s, &in);
  cr_assert(err, "a bad target is an error");
  cr_expect(strstr(err, "target 12 of element 3"), "%s", err);
  llvm_step_set_input(s, y, NULL);
  err = llvm_step_run(s);
  cr_expect(err && strstr(err, "\"y\""), "an unset input is named: %s", err ? err : "(none)");
  llvm_step_free(s);
  inputs_free(g, &in);
  ir_free(g);
}

/* ---- randomness: the same Philox stream as the interpreter ---- */

Test(cpu, dropout_and_rand) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, IR_SHAPE(64, 1000)), step = data(g, "step", IR_I64, IR_SCALAR);
  out(g, OK(ir_dropout(g, x, 0.3, 42, step)));
  out(g, OK(ir_dropout(g, x, 0.5, 7, step)));
  out(g, OK(ir_rand_uniform(g, IR_SHAPE(33, 7), IR_F32, -1, 3, 5, step)));
  out(g, OK(ir_rand_normal(g, IR_SHAPE(1000), IR_F32, 0.5, 2, 6, step)));
  check_tol(g, 0, "dropout and rand, bit for bit");
  ir_free(g);
}

/* ---- GEMMs ---- */

Test(cpu, matmul_layouts) {
  static const struct { int64_t m, k, n; } sizes[] = {{1, 7, 33}, {64, 33, 1000}, {33, 64, 7}, {7, 1, 64}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        IrGraph *g = g1();
        int64_t m = sizes[i].m, k = sizes[i].k, n = sizes[i].n;
        int a = data(g, "a", IR_F32, ta ? IR_SHAPE(k, m) : IR_SHAPE(m, k));
        int b = data(g, "b", IR_F32, tb ? IR_SHAPE(n, k) : IR_SHAPE(k, n));
        int t[] = {1, 0};
        int mm = OK(ir_matmul(g, ta ? OK(ir_permute(g, a, t)) : a, tb ? OK(ir_permute(g, b, t)) : b));
        out(g, mm);
        out(g, OK(ir_permute(g, OK(ir_matmul(g, ta ? OK(ir_permute(g, a, t)) : a, tb ? OK(ir_permute(g, b, t)) : b)), t)));
        char what[64];
        snprintf(what, sizeof what, "matmul %lldx%lldx%lld %c%c", (long long)m, (long long)k, (long long)n,
                 ta ? 'T' : 'N', tb ? 'T' : 'N');
        check_tol(g, 1e-5, what);
        ir_free(g);
      }
}

Test(cpu, matmul_batched) {
  IrGraph *g = g1();
  int a = data(g, "a", IR_F32, IR_SHAPE(4, 7, 33)), b = data(g, "b", IR_F32, IR_SHAPE(4, 33, 64));
  int c = data(g, "c", IR_F32, IR_SHAPE(33, 64)), q = data(g, "q", IR_F32, IR_SHAPE(2, 7, 3, 33));
  out(g, OK(ir_matmul(g, a, b)));
  out(g, OK(ir_matmul(g, a, c)));                            /* broadcast batch */
  int perm[] = {0, 2, 1, 3};                                 /* attention-style head split */
  int qh = OK(ir_permute(g, q, perm));                       /* [2, 3, 7, 33], strided */
  int kt = OK(ir_transpose(g, qh, 2, 3));                    /* [2, 3, 33, 7] */
  out(g, OK(ir_matmul(g, qh, kt)));
  check_tol(g, 1e-5, "batched matmul");
  ir_free(g);
}

/* linear + relu: the bias and the relu become the GEMM's epilogue, and relu's backward mask
 * gt(pre, 0) reads the relu output instead of the (never stored) pre-activation. */
Test(cpu, linear_epilogue) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, IR_SHAPE(64, 33)), w = data(g, "w", IR_F32, IR_SHAPE(1000, 33));
  int b = data(g, "b", IR_F32, IR_SHAPE(1000)), dy = data(g, "dy", IR_F32, IR_SHAPE(64, 1000));
  int pre = OK(ir_linear(g, x, w, b));
  int h = OK(ir_relu(g, pre));
  out(g, h);
  out(g, OK(ir_where(g, OK(ir_gt(g, pre, OK(ir_scalar(g, 0, IR_F32)))), dy, OK(ir_scalar(g, 0, IR_F32)))));
  out(g, OK(ir_linear(g, x, w, b))); /* bias only (CSE would merge it; the planner must not care) */
  char err[256];
  LlvmGemmBlocking blk = llvm_gemm_blocking(LLVM_ISA_AVX512, true);
  FuseOptions fo = {.nthreads = 1, .blk = &blk};
  FusePlan *plan = fuse_plan(g, &fo, err, sizeof err);
  cr_assert(plan, "%s", err);
  int relu_gemms = 0;
  for (int k = 0; k < plan->nk; k++)
    relu_gemms += plan->k[k].kind == FUSE_GEMM && plan->k[k].relu && plan->k[k].bias >= 0;
  cr_expect_eq(relu_gemms, 1, "one GEMM with bias and relu");
  cr_expect_eq(plan->val[pre].how, FUSE_NONE, "the pre-activation is never stored");
  fuse_free(plan);
  check_tol(g, 1e-5, "linear epilogue");
  ir_free(g);
}

/* ---- convolution and pooling, forward and backward (through autodiff) ---- */

static void conv_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k, int64_t stride,
                      int64_t pad, int64_t dil, bool bias_relu) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, IR_SHAPE(n, c, h, w)), wt = data(g, "w", IR_F32, IR_SHAPE(o, c, k, k));
  int bias = data(g, "bias", IR_F32, IR_SHAPE(o));
  int64_t st[] = {stride, stride}, pd[] = {pad, pad}, dl[] = {dil, dil};
  int y = OK(ir_conv2d(g, x, wt, st, pd, dl, 1));
  if (bias_relu)
    y = OK(ir_relu(g, OK(ir_add(g, y, OK(ir_reshape(g, bias, IR_SHAPE(o, 1, 1)))))));
  int r = data(g, "r", IR_F32, g->node[y].shape);
  int loss = OK(ir_sum(g, OK(ir_mul(g, y, r)), NULL, 0, false));
  int wrt[] = {x, wt, bias}, grads[3];
  cr_assert_eq(ad_grad(g, loss, wrt, 3, grads), 0, "%s", ir_error(g));
  out(g, y);
  for (int i = 0; i < 3; i++)
    out(g, grads[i]);
  char what[96];
  snprintf(what, sizeof what, "conv %lldx%lldx%lldx%lld o%lld k%lld s%lld p%lld d%lld%s", (long long)n, (long long)c,
           (long long)h, (long long)w, (long long)o, (long long)k, (long long)stride, (long long)pad, (long long)dil,
           bias_relu ? " +bias+relu" : "");
  check_tol(g, 1e-5, what);
  ir_free(g);
}

Test(cpu, conv2d) {
  conv_case(2, 3, 9, 9, 4, 3, 1, 1, 1, false);
  conv_case(3, 2, 8, 7, 5, 3, 2, 0, 1, false);
  conv_case(1, 1, 28, 28, 7, 3, 1, 0, 1, true);
  conv_case(2, 4, 11, 11, 3, 3, 2, 2, 2, false);
  conv_case(2, 3, 7, 7, 33, 1, 1, 0, 1, true);
  conv_case(9, 2, 6, 6, 3, 5, 1, 2, 1, false); /* more images than filter chunks */
}

static void pool_case(IrShape s, int64_t k, int64_t stride, int64_t pad) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, s);
  int64_t kk[] = {k, k}, st[] = {stride, stride}, pd[] = {pad, pad};
  int y = OK(ir_max_pool2d(g, x, kk, st, pd));
  int r = data(g, "r", IR_F32, g->node[y].shape);
  int loss = OK(ir_sum(g, OK(ir_mul(g, y, r)), NULL, 0, false));
  int grad;
  cr_assert_eq(ad_grad(g, loss, &x, 1, &grad), 0, "%s", ir_error(g));
  out(g, y);
  out(g, grad);
  check_tol(g, 1e-6, "max_pool2d"); /* overlapping windows add gradients in f32 */
  ir_free(g);
}

Test(cpu, max_pool2d) {
  pool_case(IR_SHAPE(2, 3, 8, 8), 2, 2, 0);
  pool_case(IR_SHAPE(2, 3, 7, 9), 3, 1, 1);
  pool_case(IR_SHAPE(1, 33, 5, 5), 2, 2, 0);
  pool_case(IR_SHAPE(3, 1, 9, 6), 3, 2, 1);
}

/* Embeddings: take and its backward (a scatter-add, split by columns between threads). */
Test(cpu, take_and_take_grad) {
  IrGraph *g = g1();
  index_range = 33;
  int emb = data(g, "emb", IR_F32, IR_SHAPE(33, 1000)), idx = data(g, "idx", IR_I64, IR_SHAPE(8, 7));
  int x = data(g, "x", IR_F32, IR_SHAPE(7, 33, 5)), i32 = data(g, "i32", IR_I32, IR_SHAPE(9));
  int e = OK(ir_embedding(g, emb, idx));                  /* [8, 7, 1000] */
  int r = data(g, "r", IR_F32, g->node[e].shape);
  int loss = OK(ir_sum(g, OK(ir_mul(g, e, r)), NULL, 0, false));
  int grad;
  cr_assert_eq(ad_grad(g, loss, &emb, 1, &grad), 0, "%s", ir_error(g));
  out(g, e);
  out(g, grad);
  out(g, OK(ir_take(g, x, i32, 1)));                     /* a middle axis, i32 indices */
  check_tol(g, 1e-6, "take");
  ir_free(g);
  g = g1();
  index_range = 5;
  x = data(g, "x", IR_F32, IR_SHAPE(5, 3)), idx = data(g, "idx", IR_I64, IR_SHAPE(4));
  out(g, OK(ir_take(g, x, idx, 0)));
  Inputs in = inputs_new(g);
  ((int64_t *)in.data[idx])[2] = -1;
  LlvmStep *s = compile(g, 1);
  const char *err = run_jit(g, s, &in);
  cr_expect(err && strstr(err, "index -1 at element 2"), "%s", err ? err : "(no error)");
  llvm_step_free(s);
  inputs_free(g, &in);
  ir_free(g);
  index_range = 10;
}

/* Ops without generated code run through the interpreter fallback, in the same step. */
Test(cpu, fallback_ops) {
  IrGraph *g = g1();
  int x = data(g, "x", IR_F32, IR_SHAPE(2, 3, 8, 8)), emb = data(g, "emb", IR_F32, IR_SHAPE(10, 33));
  int idx = data(g, "idx", IR_I64, IR_SHAPE(7)), v = data(g, "v", IR_F32, IR_SHAPE(7, 33));
  int64_t kk[] = {2, 2}, st[] = {2, 2}, pd[] = {0, 0}, lo[] = {0, 1}, hi[] = {2, 0};
  out(g, OK(ir_avg_pool2d(g, x, kk, st, pd, true)));
  out(g, OK(ir_exp(g, OK(ir_embedding(g, emb, idx)))));
  out(g, OK(ir_pad(g, v, lo, hi, 0.5)));
  out(g, OK(ir_concat(g, (int[]){v, OK(ir_neg(g, v))}, 2, 0)));
  int perm[] = {1, 0};
  out(g, OK(ir_logsumexp(g, OK(ir_permute(g, v, perm)), (int[]){1}, 1, false))); /* strided operand: copied */
  check_tol(g, 1e-6, "fallback ops");
  char err[256];
  LlvmGemmBlocking blk = llvm_gemm_blocking(LLVM_ISA_AVX512, true);
  FuseOptions fo = {.nthreads = 1, .blk = &blk};
  FusePlan *plan = fuse_plan(g, &fo, err, sizeof err);
  cr_assert(plan, "%s", err);
  int fallbacks = 0;
  for (int k = 0; k < plan->nk; k++)
    fallbacks += plan->k[k].kind == FUSE_FALLBACK;
  cr_expect_eq(fallbacks, 4, "avg_pool2d, pad, concat, logsumexp fall back");
  fuse_free(plan);
  ir_free(g);
}

/* UPDATE outputs are written into their inputs' slots; in place when the loop computing
 * them is the last to read the old value, else copied at the end of the step. */
Test(cpu, updates_in_place) {
  IrGraph *g = g1();
  int p = OK(ir_input(g, IR_IN_PARAM, "p", IR_F32, IR_SHAPE(33, 7)));
  int q = OK(ir_input(g, IR_IN_PARAM, "q", IR_F32, IR_SHAPE(7)));
  int m = OK(ir_input(g, IR_IN_STATE, "m", IR_F32, IR_SHAPE(33, 7)));
  int n = OK(ir_input(g, IR_IN_STATE, "n", IR_I64, IR_SCALAR));
  int gr = data(g, "g", IR_F32, IR_SHAPE(33, 7));
  int m2 = OK(ir_add(g, OK(ir_mul(g, m, OK(ir_scalar(g, 0.5, IR_F32)))), gr));
  int p2 = OK(ir_sub(g, p, m2));
  int q2 = OK(ir_sum(g, p, (int[]){0}, 1, false)); /* reads p: after p's update? no: before */
  ir_output(g, m2, IR_OUT_UPDATE, m, "m");
  ir_output(g, p2, IR_OUT_UPDATE, p, "p");
  ir_output(g, q2, IR_OUT_UPDATE, q, "q");
  ir_output(g, OK(ir_add(g, n, OK(ir_scalar(g, 1, IR_I64)))), IR_OUT_UPDATE, n, "n");
  int w = OK(ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(7, 7)));     /* w - w^T: the loop */
  int perm[] = {1, 0};                                                    /* reads w transposed */
  int w2 = OK(ir_sub(g, w, OK(ir_exp(g, OK(ir_permute(g, w, perm))))));
  ir_output(g, w2, IR_OUT_UPDATE, w, "w");
  ir_output(g, OK(ir_sum(g, p2, NULL, 0, false)), IR_OUT_VALUE, -1, "loss");
  check_tol(g, 1e-6, "updates");
  char err[256];
  LlvmGemmBlocking blk = llvm_gemm_blocking(LLVM_ISA_AVX512, true);
  FuseOptions fo = {.nthreads = 1, .blk = &blk};
  FusePlan *plan = fuse_plan(g, &fo, err, sizeof err);
  cr_assert(plan, "%s", err);
  cr_expect_eq(plan->val[m2].base, FUSE_BASE_STATE, "m's update is written in place");
  cr_expect_eq(plan->val[p2].base, FUSE_BASE_PARAM, "p's update is written in place");
  cr_expect_eq(plan->val[q2].base, FUSE_BASE_ARENA, "q's update (a reduction) is copied");
  cr_expect_eq(plan->val[w2].base, FUSE_BASE_ARENA, "w's update reads w transposed: copied");
  fuse_free(plan);
  ir_free(g);
}

/* A transformer block built by hand (the char_transformer example needs its data to be
 * lowered): embedding, layer norm, two-head causal attention over permuted views, a gelu
 * MLP, cross-entropy, the whole backward pass and an SGD update. */
Test(cpu, attention_block, .timeout = 60) {
  enum { B = 2, T = 7, D = 16, H = 2, DH = 8, V = 33, F = 32 };
  IrGraph *g = g1();
  index_range = V;
  lo_ = -0.5, hi_ = 0.5;
  int idx = data(g, "idx", IR_I64, IR_SHAPE(B, T)), y = data(g, "y", IR_I64, IR_SHAPE(B * T));
  int lr = data(g, "lr", IR_F32, IR_SCALAR);
  int emb = OK(ir_input(g, IR_IN_PARAM, "emb", IR_F32, IR_SHAPE(V, D)));
  int lnw = OK(ir_input(g, IR_IN_PARAM, "ln.w", IR_F32, IR_SHAPE(D)));
  int lnb = OK(ir_input(g, IR_IN_PARAM, "ln.b", IR_F32, IR_SHAPE(D)));
  int wq = OK(ir_input(g, IR_IN_PARAM, "wq", IR_F32, IR_SHAPE(D, D))), wk = OK(ir_input(g, IR_IN_PARAM, "wk", IR_F32, IR_SHAPE(D, D)));
  int wv = OK(ir_input(g, IR_IN_PARAM, "wv", IR_F32, IR_SHAPE(D, D))), bq = OK(ir_input(g, IR_IN_PARAM, "bq", IR_F32, IR_SHAPE(D)));
  int w1 = OK(ir_input(g, IR_IN_PARAM, "w1", IR_F32, IR_SHAPE(F, D))), b1 = OK(ir_input(g, IR_IN_PARAM, "b1", IR_F32, IR_SHAPE(F)));
  int w2 = OK(ir_input(g, IR_IN_PARAM, "w2", IR_F32, IR_SHAPE(V, F)));
  int params[] = {emb, lnw, lnb, wq, wk, wv, bq, w1, b1, w2}, np = 10, grads[10];
  int x = OK(ir_embedding(g, emb, idx));                                   /* [B, T, D] */
  int ln = OK(ir_layer_norm(g, x, 1, lnw, lnb, 1e-5));
  int heads[] = {0, 2, 1, 3};
  int q = OK(ir_permute(g, OK(ir_reshape(g, OK(ir_linear(g, ln, wq, bq)), IR_SHAPE(B, T, H, DH))), heads));
  int k = OK(ir_permute(g, OK(ir_reshape(g, OK(ir_linear(g, ln, wk, -1)), IR_SHAPE(B, T, H, DH))), heads));
  int v = OK(ir_permute(g, OK(ir_reshape(g, OK(ir_linear(g, ln, wv, -1)), IR_SHAPE(B, T, H, DH))), heads));
  int att = OK(ir_mul(g, OK(ir_matmul(g, q, OK(ir_transpose(g, k, 2, 3)))), OK(ir_scalar(g, 0.35355339, IR_F32))));
  double mask[T * T];
  for (int i = 0; i < T; i++)
    for (int j = 0; j < T; j++)
      mask[i * T + j] = j <= i ? 0 : -1e9;
  att = OK(ir_softmax(g, OK(ir_add(g, att, OK(ir_const_data(g, IR_F32, IR_SHAPE(T, T), mask)))), 3));
  int o = OK(ir_reshape(g, OK(ir_permute(g, OK(ir_matmul(g, att, v)), heads)), IR_SHAPE(B, T, D)));
  int hdn = OK(ir_add(g, x, o));                                           /* residual */
  int ff = OK(ir_gelu(g, OK(ir_linear(g, hdn, w1, b1))));
  int logits = OK(ir_reshape(g, OK(ir_linear(g, ff, w2, -1)), IR_SHAPE(B * T, V)));
  int loss = OK(ir_cross_entropy(g, logits, y, 0));
  cr_assert_eq(ad_grad(g, loss, params, np, grads), 0, "%s", ir_error(g));
  IrSgd sgd = ir_sgd_defaults(lr);
  sgd.momentum = 0.9;
  cr_assert_eq(ir_sgd(g, "opt", &sgd, params, grads, np), 0, "%s", ir_error(g));
  ir_output(g, loss, IR_OUT_VALUE, -1, "loss");
  for (int i = 0; i < np; i++)
    ir_output(g, grads[i], IR_OUT_GRAD, params[i], "grad");
  int map[4096];
  cr_assert_lt(g->n, 4096);
  ir_simplify(g, map);
  char err[256];
  LlvmGemmBlocking blk = llvm_gemm_blocking(LLVM_ISA_AVX512, true);
  FuseOptions fo = {.nthreads = 2, .blk = &blk};
  FusePlan *plan = fuse_plan(g, &fo, err, sizeof err);
  cr_assert(plan, "%s", err);
  for (int i = 0; i < g->n; i++)
    cr_expect(fuse_is_native(plan, i), "%%%d %s falls back", i, ir_op_name(g->node[i].op));
  fuse_free(plan);
  check_tol(g, 2e-5, "attention block");
  ir_free(g);
  index_range = 10;
  lo_ = -2, hi_ = 2;
}

/* ---- whole training steps from the examples ---- */

/* Loss and every UPDATE output, JIT vs interpreter.  Parameter updates are compared in units
 * of the learning rate: Adam divides by sqrt(v), so an f32 rounding difference in a gradient
 * near zero can move its parameter by a visible fraction of lr. */
static void check_step(const StepGraph *st, const char *what, double grad_tol) {
  const IrGraph *g = st->g;
  lo_ = -1, hi_ = 1;
  Inputs in = inputs_new(g);
  for (int k = 0; k < 3; k++) { /* small weights, zero optimizer state, step counter 3 */
    for (int s = 0; s < in.lay[k].n; s++) {
      const IrSlot *sl = &in.lay[k].slot[s];
      int64_t cnt = ir_numel(sl->shape);
      for (int64_t i = 0; i < cnt; i++) {
        double v = ir_load(sl->dtype, in.flat0[k] + sl->offset, i);
        ir_store(sl->dtype, in.flat0[k] + sl->offset, i, k == 0 ? v * 0.1 : k == 2 ? (sl->dtype == IR_I64 ? 3 : fabs(v) * 1e-4) : v);
      }
    }
  }
  IrInterp *ip = run_interp(g, &in);
  LlvmStep *s = compile(g, 1);
  const char *err = run_jit(g, s, &in);
  cr_assert_null(err, "%s: %s", what, err);
  double lr = 1e-3;
  int nupd = 0;
  for (int o = 0; o < g->nout; o++) {
    const IrOutput *out = &g->out[o];
    const IrNode *n = &g->node[out->value];
    int64_t cnt = ir_numel(n->shape), where = 0;
    const double *ref = interp_data(ip, out->value);
    const void *got = llvm_step_output(s, o);
    if (out->kind == IR_OUT_VALUE) {
      double e = rel_err(n->dtype, got, ref, cnt, &where);
      cr_expect(e <= 1e-5, "%s: %s %.9g vs %.9g", what, out->name, ir_load(n->dtype, got, 0), ref[0]);
      cr_expect_eq(llvm_step_scalar_of(s, out->value), ir_load(n->dtype, got, 0));
    } else if (out->kind == IR_OUT_GRAD) {
      double e = rel_err(n->dtype, got, ref, cnt, &where);
      cr_expect(e <= grad_tol, "%s: gradient of %s: relative error %.3g", what, g->node[out->target].name, e);
    } else {
      nupd++;
      const IrNode *t = &g->node[out->target];
      double worst = 0;
      if (!ir_dtype_is_float(n->dtype)) {
        worst = rel_err(n->dtype, got, ref, cnt, &where);
      } else if (t->kind == IR_IN_PARAM) { /* in units of lr */
        for (int64_t i = 0; i < cnt; i++)
          worst = fmax(worst, fabs(ir_load(n->dtype, got, i) - ref[i]) / lr);
        worst /= 50; /* allow 0.05 lr */
      } else {
        worst = rel_err(n->dtype, got, ref, cnt, &where) * (grad_tol > 1e-4 ? 1 : 0.1);
      }
      cr_expect(worst <= 1e-3, "%s: update of %s off by %.3g of the tolerance", what, t->name, worst * 1e3);
    }
  }
  cr_expect_gt(nupd, 0);
  /* 2 threads: bit for bit the same step */
  unsigned char **one = snapshot(g, s);
  unsigned char *flat1[3];
  for (int k = 0; k < 3; k++) {
    flat1[k] = malloc((size_t)in.lay[k].bytes + 1);
    memcpy(flat1[k], in.flat[k], (size_t)in.lay[k].bytes);
  }
  RtPool *pool = rt_pool_create(2); /* a shared pool, as a trainer running two steps would */
  char cerr[512];
  LlvmStep *s2 = llvm_step_compile(g, &(LlvmStepOptions){.pool = pool, .grads = true}, cerr, sizeof cerr);
  cr_assert(s2, "%s", cerr);
  cr_expect_eq(llvm_step_threads(s2), 2);
  err = run_jit(g, s2, &in);
  cr_assert_null(err, "%s (2 threads): %s", what, err);
  for (int k = 0; k < 3; k++) {
    cr_expect(memcmp(flat1[k], in.flat[k], (size_t)in.lay[k].bytes) == 0, "%s: flat buffer %d differs with 2 threads", what, k);
    free(flat1[k]);
  }
  for (int o = 0; o < g->nout; o++) {
    const IrNode *n = &g->node[g->out[o].value];
    cr_expect(memcmp(one[o], llvm_step_output(s2, o), (size_t)(ir_numel(n->shape) * ir_dtype_size(n->dtype))) == 0,
              "%s: output %d differs with 2 threads", what, o);
  }
  snapshot_free(g, one);
  llvm_step_free(s2);
  rt_pool_destroy(pool);
  llvm_step_free(s);
  interp_free(ip);
  inputs_free(g, &in);
  lo_ = -2, hi_ = 2;
}

Test(cpu, mlp_training_step, .timeout = 60) {
  StepGraph *st = lower_example("fashion_mlp.ltl", 64, NULL, 0);
  char err[256];
  LlvmGemmBlocking blk = llvm_gemm_blocking(LLVM_ISA_AVX512, true);
  FuseOptions fo = {.nthreads = 2, .blk = &blk};
  FusePlan *plan = fuse_plan(st->g, &fo, err, sizeof err);
  cr_assert(plan, "%s", err);
  int counts[FUSE_NKINDS] = {0}, inplace = 0, nupd = 0;
  for (int k = 0; k < plan->nk; k++)
    counts[plan->k[k].kind]++;
  for (int o = 0; o < st->g->nout; o++)
    if (st->g->out[o].kind == IR_OUT_UPDATE) {
      nupd++;
      inplace += plan->val[st->g->out[o].value].base != FUSE_BASE_ARENA;
    }
  cr_expect_eq(counts[FUSE_GEMM], 8, "3 forward GEMMs, 5 backward (the first layer's data gradient is dead)");
  cr_expect_eq(counts[FUSE_FALLBACK], 0, "everything native");
  cr_expect_eq(inplace, nupd, "every Adam update in place");
  cr_expect_leq(plan->nk, 26);
  fuse_free(plan);
  check_step(st, "mlp", 1e-5);
  sema_step_free(st);
}

Test(cpu, cnn_training_step, .timeout = 120) {
  /* batch 8 keeps the interpreter's naive convolutions quick; dropout stays on: both
   * engines draw the same Philox numbers */
  StepGraph *st = lower_example("fashion_cnn.ltl", 8, NULL, 0);
  check_step(st, "cnn", 2e-3); /* relu masks may flip where a pre-activation rounds near 0 */
  sema_step_free(st);
  const char *ov[] = {"p1=0.0", "p2=0.0"};
  st = lower_example("fashion_cnn.ltl", 4, ov, 2);
  check_step(st, "cnn without dropout", 2e-3);
  sema_step_free(st);
}
