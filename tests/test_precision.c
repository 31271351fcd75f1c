/* test_precision.c — the trainer's precision modes (compiler/ir_precision.c, docs/precision.md).
 *
 * Rounding to bf16 and f16 is checked bit for bit against a reference written here with
 * integer operations on the f32 bits (independent of ir_round's nearbyint), on the
 * interpreter (ir_store) and on the generated loops of the CPU backend.  The loss scaler is
 * run as a state machine on the interpreter and the JIT.  Mixed steps are compared with f32
 * ones within tolerances stated at each test; the CLI trains a small model in bf16-mixed. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llvm.h"
#include "rt.h"
#include "sema.h"
#include "e2e_test.h"

#define OK(v)                                                                                   \
  ({                                                                                            \
    int v_ = (v);                                                                               \
    cr_assert(v_ >= 0, "builder failed: %s", ir_error(g));                                      \
    v_;                                                                                         \
  })

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Reference f32 -> bf16: keep the top 16 bits, round the low 16 to nearest, ties to even. */
static uint16_t ref_bf16(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return 0x7fc0; /* NaN: the quiet NaN the runtime stores */
  uint32_t low = u & 0xffffu, hi = u >> 16;
  if (low > 0x8000u || (low == 0x8000u && (hi & 1)))
    hi++; /* carries into the exponent: the largest finite values round to inf */
  return (uint16_t)hi;
}

/* Reference f32 -> IEEE binary16 with round to nearest even, by shifting the significand. */
static uint16_t ref_f16(uint32_t u) {
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t exp = (u >> 23) & 0xffu, man = u & 0x7fffffu;
  if (exp == 0xff)
    return man ? 0x7e00 : (uint16_t)(sign | 0x7c00);
  if (exp == 0)
    return sign; /* f32 subnormals are far below f16's smallest subnormal 2^-24 */
  int e = (int)exp - 127 + 15;  /* biased f16 exponent */
  uint32_t sig = man | 0x800000u; /* 24 significant bits */
  int shift = 13;                 /* to 11 bits */
  if (e <= 0) {                   /* subnormal: fewer bits */
    shift += 1 - e;
    e = 0;
  }
  if (shift > 25)
    return sign;
  uint32_t q = sig >> shift, rem = sig & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1)))
    q++;
  /* q holds the significand with its leading bit; adding the exponent field lets a carry
   * move to the next binade (or to inf) by itself */
  uint32_t h = e == 0 ? q : ((uint32_t)(e - 1) << 10) + q;
  if (h >= 0x7c00)
    return sign | 0x7c00;
  return (uint16_t)(sign | h);
}

/* Every interesting f32 pattern: ties both ways, NaNs, infinities, subnormals, the edges of
 * each format's range, then a stride through all 2^32 patterns. */
static uint32_t *patterns(int *n) {
  static const uint32_t special[] = {
      0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001,
      0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0xbf808000, 0xbf818000, /* bf16 ties */
      0x7f7fffff, 0x7f7f8000, 0x7f7f7fff, 0xff7fffff,                         /* bf16 overflow */
      0x00000001, 0x00008000, 0x00018000, 0x0000ffff, 0x00800000, 0x007fffff, /* subnormals */
      0x477fe000, 0x477fefff, 0x477ff000, 0x477fffff, 0x47800000,             /* f16 65504.. */
      0x33800000, 0x33000000, 0x33400000, 0x33c00000, 0x38800000, 0x387fc000, /* f16 tiny */
      0x3f801000, 0x3f803000, 0x3f800fff, 0x3f803001,                         /* f16 ties */
  };
  int ns = (int)(sizeof special / sizeof *special), k = 0;
  uint32_t *v = malloc(sizeof *v * (size_t)(ns + 70000));
  for (int i = 0; i < ns; i++)
    v[k++] = special[i];
  for (uint64_t u = 12345; u < 0x100000000ull; u += 65537 * 3 + 1)
    v[k++] = (uint32_t)u;
  *n = k;
  return v;
}

static uint16_t store16(IrDtype t, double x) {
  uint16_t h;
  ir_store(t, &h, 0, x);
  return h;
}

Test(precision, interpreter_rounds_bf16_and_f16_like_the_bit_reference) {
  int n;
  uint32_t *v = patterns(&n);
  for (int i = 0; i < n; i++) {
    double x = float_of(v[i]);
    cr_assert_eq(store16(IR_BF16, x), ref_bf16(v[i]), "bf16 of %08x (%a)", v[i], x);
    cr_assert_eq(store16(IR_F16, x), ref_f16(v[i]), "f16 of %08x (%a)", v[i], x);
    /* ir_round is the value of those bits */
    double r = ir_round(IR_BF16, x);
    cr_assert(isnan(x) ? isnan(r) : r == float_of((uint32_t)ref_bf16(v[i]) << 16), "round %08x", v[i]);
  }
  free(v);
}

/* x -> cast(x, t) compiled for the CPU: the stored 16-bit patterns. */
static void jit_cast(IrDtype t, const float *x, uint16_t *out, int n) {
  IrGraph *g = ir_new();
  int in = OK(ir_input(g, IR_IN_DATA, "x", IR_F32, IR_SHAPE(n)));
  int y = OK(ir_cast(g, in, t));
  ir_output(g, y, IR_OUT_VALUE, -1, "y");
  char err[256];
  LlvmStep *s = llvm_step_compile(g, &(LlvmStepOptions){.nthreads = 1}, err, sizeof err);
  cr_assert(s, "%s", err);
  llvm_step_set_input(s, in, x);
  cr_assert_null(llvm_step_run(s));
  memcpy(out, llvm_step_output(s, 0), sizeof *out * (size_t)n);
  llvm_step_free(s);
  ir_free(g);
}

Test(precision, generated_loops_round_bf16_and_f16_like_the_bit_reference) {
  int n;
  uint32_t *v = patterns(&n);
  float *x = malloc(sizeof *x * (size_t)n);
  uint16_t *h = malloc(sizeof *h * (size_t)n);
  for (int i = 0; i < n; i++)
    x[i] = float_of(v[i]);
  jit_cast(IR_BF16, x, h, n);
  for (int i = 0; i < n; i++)
    cr_assert_eq(h[i], ref_bf16(v[i]), "bf16 of %08x: %04x", v[i], h[i]);
  jit_cast(IR_F16, x, h, n);
  for (int i = 0; i < n; i++)
    cr_assert_eq(h[i], ref_f16(v[i]), "f16 of %08x: %04x", v[i], h[i]);
  free(x);
  free(h);
  free(v);
}

/* ---- the loss scaler ---- */

/* loss = sum(w * x), Adam on w, with 16-mixed loss scaling: the graph and its state. */
typedef struct {
  IrGraph *g;
  int w, x, lr, step;
  IrLayout lay[2]; /* PARAM, STATE */
  unsigned char *buf[2];
  int loss;
} Scaled;

static Scaled scaled_new(void) {
  Scaled s = {0};
  IrGraph *g = s.g = ir_new();
  cr_assert(ir_precision_begin(g, "16-mixed"));
  s.w = OK(ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(4)));
  s.x = OK(ir_input(g, IR_IN_DATA, "x", IR_F32, IR_SHAPE(4)));
  s.lr = OK(ir_input(g, IR_IN_DATA, "lr", IR_F32, IR_SCALAR));
  s.loss = OK(ir_sum(g, ir_mul(g, s.w, s.x), NULL, 0, false));
  ir_output(g, s.loss, IR_OUT_VALUE, -1, "loss");
  IrScaler sc;
  int grad, first = g->nout;
  cr_assert_eq(ir_scaler_grads(g, "opt", s.loss, &s.w, 1, &grad, &sc), 0, "%s", ir_error(g));
  cr_assert_eq(ir_scaler_check(g, &sc, &grad, 1), 0);
  IrAdam a = ir_adam_defaults(s.lr);
  cr_assert_eq(ir_adam(g, "opt", &a, &s.w, &grad, 1), 0, "%s", ir_error(g));
  cr_assert_eq(ir_scaler_update(g, &sc, first), 0, "%s", ir_error(g));
  ir_precision_end(g, "16-mixed");
  s.lay[0] = ir_layout(g, IR_IN_PARAM);
  s.lay[1] = ir_layout(g, IR_IN_STATE);
  for (int k = 0; k < 2; k++)
    s.buf[k] = calloc(1, (size_t)s.lay[k].bytes + 64);
  float *w = (float *)s.buf[0];
  for (int i = 0; i < 4; i++)
    w[i] = 0.5f + (float)i;
  return s;
}

static void scaled_free(Scaled *s) {
  for (int k = 0; k < 2; k++) {
    free(s->buf[k]);
    ir_layout_free(&s->lay[k]);
  }
  ir_free(s->g);
}

static float *state_f32(Scaled *s, const char *name) {
  for (int i = 0; i < s->lay[1].n; i++)
    if (!strcmp(s->lay[1].slot[i].name, name))
      return (float *)(s->buf[1] + s->lay[1].slot[i].offset);
  cr_assert_fail("no state %s", name);
  return NULL;
}

/* One step on the interpreter (jit NULL) or the JIT, with every x[i] = xv. */
static void scaled_step(Scaled *s, LlvmStep *jit, float xv) {
  float x[4] = {xv, xv, xv, xv}, lr = 1e-2f;
  if (jit) {
    llvm_step_bind(jit, IR_IN_PARAM, s->buf[0]);
    llvm_step_bind(jit, IR_IN_STATE, s->buf[1]);
    llvm_step_set_input(jit, s->x, x);
    llvm_step_set_input(jit, s->lr, &lr);
    cr_assert_null(llvm_step_run(jit));
    return;
  }
  IrInterp *ip = interp_new(s->g, false);
  const IrGraph *g = s->g;
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    if (n->op != IR_INPUT)
      continue;
    if (i == s->x) interp_set(ip, i, x);
    else if (i == s->lr) interp_set(ip, i, &lr);
    else {
      int k = n->kind == IR_IN_PARAM ? 0 : 1;
      for (int j = 0; j < s->lay[k].n; j++)
        if (s->lay[k].slot[j].value == i)
          interp_set(ip, i, s->buf[k] + s->lay[k].slot[j].offset);
    }
  }
  cr_assert_null(interp_run(ip));
  for (int o = 0; o < g->nout; o++) {
    const IrOutput *out = &g->out[o];
    if (out->kind != IR_OUT_UPDATE)
      continue;
    int k = g->node[out->target].kind == IR_IN_PARAM ? 0 : 1;
    for (int j = 0; j < s->lay[k].n; j++)
      if (s->lay[k].slot[j].value == out->target)
        interp_get(ip, out->value, s->buf[k] + s->lay[k].slot[j].offset);
  }
  interp_free(ip);
}

/* GradScaler's rules, on the interpreter and on the JIT: the first step starts at 65536;
 * 2000 finite steps double the scale; a step whose scaled gradient overflows f32 (or is
 * inf/NaN) halves it, resets the count and leaves weights and optimizer state untouched. */
static void scaler_machine(bool use_jit) {
  Scaled s = scaled_new();
  LlvmStep *jit = NULL;
  if (use_jit) {
    char err[256];
    jit = llvm_step_compile(s.g, &(LlvmStepOptions){.nthreads = 1}, err, sizeof err);
    cr_assert(jit, "%s", err);
  }
  float *scale = state_f32(&s, "opt.scaler.scale"), *count = state_f32(&s, "opt.scaler.growth_tracker");
  scaled_step(&s, jit, 1.0f);
  cr_assert_eq(*scale, 65536.0f);
  cr_assert_eq(*count, 1.0f);
  float w1 = ((float *)s.buf[0])[0];
  cr_assert(w1 < 0.5f, "a finite step moves the weights (Adam, lr 1e-2): %g", w1);
  *count = 1998;
  scaled_step(&s, jit, 1.0f);
  cr_assert_eq(*scale, 65536.0f);
  cr_assert_eq(*count, 1999.0f);
  scaled_step(&s, jit, 1.0f);
  cr_assert_eq(*scale, 131072.0f, "the 2000th finite step doubles the scale: %g", *scale);
  cr_assert_eq(*count, 0.0f);
  /* skipped steps: overflow of the scaled gradient (1e35 * 131072), then inf, then NaN */
  float bad[3] = {1e35f, INFINITY, NAN}, expect = 131072.0f;
  for (int b = 0; b < 3; b++) {
    unsigned char *before[2];
    for (int k = 0; k < 2; k++) {
      before[k] = malloc((size_t)s.lay[k].bytes);
      memcpy(before[k], s.buf[k], (size_t)s.lay[k].bytes);
    }
    *count = 7;
    scaled_step(&s, jit, bad[b]);
    expect *= 0.5f;
    cr_assert_eq(*scale, expect, "backoff after x = %g: %g", bad[b], *scale);
    cr_assert_eq(*count, 0.0f);
    cr_assert_eq(memcmp(before[0], s.buf[0], (size_t)s.lay[0].bytes), 0, "weights changed on a skipped step");
    for (int i = 0; i < s.lay[1].n; i++) { /* optimizer state but the scaler's own */
      const IrSlot *sl = &s.lay[1].slot[i];
      if (strstr(sl->name, ".scaler."))
        continue;
      cr_assert_eq(memcmp(before[1] + sl->offset, s.buf[1] + sl->offset, (size_t)sl->bytes), 0,
                   "%s changed on a skipped step", sl->name);
    }
    for (int k = 0; k < 2; k++)
      free(before[k]);
  }
  scaled_step(&s, jit, 1.0f);
  cr_assert_eq(*scale, expect, "a finite step after a backoff keeps the scale");
  cr_assert_eq(*count, 1.0f);
  llvm_step_free(jit);
  scaled_free(&s);
}

Test(precision, loss_scaler_state_machine_on_the_interpreter) { scaler_machine(false); }
Test(precision, loss_scaler_state_machine_on_the_jit) { scaler_machine(true); }

/* ---- the bf16 GEMM (llvm_gemm16.c) against the interpreter ---- */

/* C = bf16(op(A)) bf16(op(B)) on the interpreter: matmul of round-tripped operands, exact
 * products summed in double and rounded to f32 once. */
static void gemm16_ref(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, const float *b, double *out) {
  IrGraph *g = ir_new();
  int ai = OK(ir_input(g, IR_IN_DATA, "a", IR_F32, ta ? IR_SHAPE(k, m) : IR_SHAPE(m, k)));
  int bi = OK(ir_input(g, IR_IN_DATA, "b", IR_F32, tb ? IR_SHAPE(n, k) : IR_SHAPE(k, n)));
  int x = ir_round_through(g, ta ? ir_transpose(g, ai, 0, 1) : ai, IR_BF16);
  int y = ir_round_through(g, tb ? ir_transpose(g, bi, 0, 1) : bi, IR_BF16);
  int c = OK(ir_matmul(g, x, y));
  IrInterp *ip = interp_new(g, false);
  interp_set(ip, ai, a);
  interp_set(ip, bi, b);
  cr_assert_null(interp_run(ip));
  memcpy(out, interp_data(ip, c), sizeof *out * (size_t)(m * n));
  interp_free(ip);
  ir_free(g);
}

/* Odd shapes (1, 7, 33, 1000: none a multiple of the 12 x 32 or 32 x 32 tiles or of the
 * 256-pair K block, odd K leaves half a pair) in all four transpositions, on 1 and 2
 * threads, with each kernel the host can run: AMX, vdpbf16ps and the portable one.  Products of bf16 values are
 * exact in f32, so only the f32 summation differs from the interpreter's double one:
 * max |C - ref| <= 1e-5 max |ref|. */
static void gemm16_shapes(LlvmGemm16Kind want) {
  static const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 1000}, {33, 7, 1}, {1000, 33, 7}, {33, 1000, 33}, {13, 65, 513}};
  char err[256];
  LlvmJit *jit = llvm_jit_create(err, sizeof err);
  cr_assert(jit, "%s", err);
  RtPool *pool = rt_pool_create(2);
  LlvmGemm16 *g16 = llvm_gemm16_create(jit, pool, want);
  const char *kernel = llvm_gemm16_kernel(g16);
  cr_assert(kernel, "%s", llvm_jit_error(jit));
  if (want == LLVM_GEMM16_AVX512)
    cr_assert_str_eq(kernel, llvm_jit_host(jit)->avx512bf16 ? "vdpbf16ps" : "c");
  if (want == LLVM_GEMM16_PORTABLE)
    cr_assert_str_eq(kernel, "c");
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (int t = 0; t < 4; t++) {
      bool ta = t & 1, tb = t & 2;
      int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
      float *a = malloc(sizeof *a * (size_t)(m * k)), *b = malloc(sizeof *b * (size_t)(k * n));
      float *c = malloc(sizeof *c * (size_t)(m * n));
      double *ref = malloc(sizeof *ref * (size_t)(m * n));
      philox_fill_uniform(a, m * k, 3, (uint64_t)s, -1, 1);
      philox_fill_uniform(b, k * n, 4, (uint64_t)s, -1, 1);
      gemm16_ref(ta, tb, m, n, k, a, b, ref);
      for (int threads = 1; threads <= 2; threads++) {
        memset(c, 0xff, sizeof *c * (size_t)(m * n)); /* NaN: every element must be written */
        cr_assert(llvm_gemm16_run(g16, ta, tb, threads, m, n, k, a, ta ? m : k, b, tb ? k : n, c, n), "%s",
                  llvm_jit_error(jit));
        double d = 0, mag = 0;
        for (int64_t i = 0; i < m * n; i++) {
          d = fmax(d, fabs(c[i] - ref[i]));
          mag = fmax(mag, fabs(ref[i]));
          cr_assert(!isnan(c[i]), "%lldx%lldx%lld %c%c: C[%lld] not written", (long long)m, (long long)n,
                    (long long)k, ta ? 't' : 'n', tb ? 't' : 'n', (long long)i);
        }
        cr_assert(d <= 1e-5 * mag, "%lldx%lldx%lld %c%c, %d threads: max diff %g of %g", (long long)m, (long long)n,
                  (long long)k, ta ? 't' : 'n', tb ? 't' : 'n', threads, d, mag);
      }
      free(a);
      free(b);
      free(c);
      free(ref);
    }
  /* inf and NaN operands propagate as in the interpreter */
  float a[4] = {1, INFINITY, 2, 3}, b[4] = {1, 0, 1, NAN}, c[4];
  cr_assert(llvm_gemm16_run(g16, false, false, 1, 2, 2, 2, a, 2, b, 2, c, 2));
  cr_assert(isinf(c[0]) && isnan(c[1]) && c[2] == 5 && isnan(c[3]), "%g %g %g %g", c[0], c[1], c[2], c[3]);
  llvm_gemm16_destroy(g16);
  rt_pool_destroy(pool);
  llvm_jit_destroy(jit);
}

Test(precision, bf16_gemm_amx_matches_the_interpreter, .timeout = 60) { gemm16_shapes(LLVM_GEMM16_AMX); }
Test(precision, bf16_gemm_vdpbf16ps_matches_the_interpreter, .timeout = 60) { gemm16_shapes(LLVM_GEMM16_AVX512); }
Test(precision, bf16_gemm_portable_kernel_matches_the_interpreter, .timeout = 60) { gemm16_shapes(LLVM_GEMM16_PORTABLE); }

/* ---- mixed-precision steps of a real model ---- */

/* fashion_mlp.ltl's MLP with tanh for relu when smooth: a ReLU whose input is near zero
 * flips between two runs that differ in rounding and changes a gradient element outright,
 * so with relu the distance to f32 measures how many units sit near zero, not precision. */
static const char *mlp_src =
    "use nn\n"
    "model MLP(hidden1 = 128, hidden2 = 256, lr = 1e-3) {\n"
    "    l1 = nn.Linear(28 * 28, hidden1)\n"
    "    l2 = nn.Linear(hidden1, hidden2)\n"
    "    l3 = nn.Linear(hidden2, 10)\n"
    "    forward(x: f32[B, 1, 28, 28]) -> f32[B, 10] {\n"
    "        h = %s(l1(flatten(x, 1)))\n"
    "        h = %s(l2(h))\n"
    "        return log_softmax(l3(h), dim = 1)\n"
    "    }\n"
    "    training_step(x: f32[B, 1, 28, 28], y: i64[B]) {\n"
    "        loss = nll_loss(forward(x), y)\n"
    "        log(\"train_loss\", loss)\n"
    "        return loss\n"
    "    }\n"
    "    optimizer = adam(lr = lr)\n"
    "}\n";

static StepGraph *lower_model(const char *precision, int64_t batch, bool smooth) {
  static Ast ast;
  char *text = NULL, path[512];
  snprintf(path, sizeof path, "/tmp/ltl_precision_%d_%d.ltl", (int)getpid(), smooth);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fprintf(f, mlp_src, smooth ? "tanh" : "relu", smooth ? "tanh" : "relu");
  fclose(f);
  Node *root = parse_file(&ast, path, &text);
  cr_assert(root && diag_error_count() == 0, "parse %s", path);
  SemaOptions opt = {.batch = batch, .backward = true, .seed = 42, .precision = precision};
  StepGraph *s = sema_lower(root, path, "training_step", &opt, true);
  cr_assert(s, "lower %s", path);
  sema_simplify(s);
  remove(path);
  return s;
}
static StepGraph *lower_mlp(const char *precision, int64_t batch) { return lower_model(precision, batch, false); }

/* Deterministic inputs for a step graph: weights ~ U(-0.05, 0.05), x ~ U(-1, 1), y = i % 10,
 * lr 1e-3, zero optimizer state. */
static IrInterp *run_mlp(const StepGraph *st, LlvmStep *jit, unsigned char **flat) {
  const IrGraph *g = st->g;
  IrLayout lay[2] = {ir_layout(g, IR_IN_PARAM), ir_layout(g, IR_IN_STATE)};
  for (int k = 0; k < 2; k++) {
    flat[k] = calloc(1, (size_t)lay[k].bytes + 64);
    for (int i = 0; k == 0 && i < lay[k].n; i++) {
      int64_t cnt = ir_numel(lay[k].slot[i].shape);
      philox_fill_uniform((float *)(flat[k] + lay[k].slot[i].offset), cnt, 7, (uint64_t)i, -0.05, 0.05);
    }
  }
  const IrNode *xn = &g->node[st->data[0]];
  int64_t nx = ir_numel(xn->shape), ny = ir_numel(g->node[st->data[1]].shape);
  float *x = malloc(sizeof *x * (size_t)nx), lr = 1e-3f;
  int64_t step = 0; /* the CNN's dropout draws from it */
  int step_in = -1;
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT && g->node[i].kind == IR_IN_DATA && !strcmp(g->node[i].name, "step"))
      step_in = i;
  int64_t *y = malloc(sizeof *y * (size_t)ny);
  philox_fill_uniform(x, nx, 9, 0, -1, 1);
  for (int64_t i = 0; i < ny; i++)
    y[i] = i % 10;
  IrInterp *ip = NULL;
  if (jit) {
    llvm_step_bind(jit, IR_IN_PARAM, flat[0]);
    llvm_step_bind(jit, IR_IN_STATE, flat[1]);
    llvm_step_set_input(jit, st->data[0], x);
    llvm_step_set_input(jit, st->data[1], y);
    llvm_step_set_input(jit, st->groups[0].lr, &lr);
    if (step_in >= 0)
      llvm_step_set_input(jit, step_in, &step);
    cr_assert_null(llvm_step_run(jit));
  } else {
    ip = interp_new(g, false);
    for (int i = 0; i < g->n; i++) {
      const IrNode *n = &g->node[i];
      if (n->op != IR_INPUT) continue;
      if (i == st->data[0]) interp_set(ip, i, x);
      else if (i == st->data[1]) interp_set(ip, i, y);
      else if (i == st->groups[0].lr) interp_set(ip, i, &lr);
      else if (i == step_in) interp_set(ip, i, &step);
      else
        for (int k = 0; k < 2; k++)
          for (int j = 0; j < lay[k].n; j++)
            if (lay[k].slot[j].value == i) interp_set(ip, i, flat[k] + lay[k].slot[j].offset);
    }
    const char *e = interp_run(ip);
    cr_assert_null(e, "interpreter: %s", e);
  }
  free(x);
  free(y);
  for (int k = 0; k < 2; k++)
    ir_layout_free(&lay[k]);
  return ip;
}

/* ||a - b|| / ||b|| (2-norms): a ReLU that flips between the runs changes a few elements of
 * a gradient outright, so elementwise bounds would measure luck, not precision */
static double grad_err(const double *a, const double *b, int64_t n) {
  double d = 0, m = 0;
  for (int64_t i = 0; i < n; i++) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    m += b[i] * b[i];
  }
  return m > 0 ? sqrt(d / m) : sqrt(d);
}

static const double *grad_named(const StepGraph *st, IrInterp *ip, const char *param) {
  const IrGraph *g = st->g;
  for (int o = 0; o < g->nout; o++)
    if (g->out[o].kind == IR_OUT_GRAD && !strcmp(g->node[g->out[o].target].name, param))
      return interp_data(ip, g->out[o].value);
  cr_assert_fail("no gradient of %s", param);
  return NULL;
}

/* A mixed step against the f32 step on the same inputs (interpreter), tanh MLP.  bf16 keeps 8
 * significant bits (relative rounding up to 2^-9 ~ 2e-3 per operand), f16 11 (2^-12 ~ 2.4e-4);
 * with f32 accumulation the loss stays within 1e-2 (bf16) / 2e-3 (f16) relative and each
 * gradient within 2e-2 / 3e-3 in 2-norm (measured: 0.4-0.8% and 0.05-0.1%, the 8x of the
 * formats' precisions).  The mixed graph has 16-bit casts in front of every GEMM and nowhere
 * else. */
static void mixed_vs_f32(const char *mode, double loss_tol, double grad_tol) {
  StepGraph *ref = lower_model("32-true", 16, true), *mix = lower_model(mode, 16, true);
  IrDtype t = !strcmp(mode, "16-mixed") ? IR_F16 : IR_BF16;
  int casts = 0;
  for (int i = 0; i < mix->g->n; i++) {
    const IrNode *n = &mix->g->node[i];
    if (n->op == IR_CAST && n->dtype == t) {
      casts++;
      for (int j = i + 1; j < mix->g->n; j++) /* feeds only casts back to f32 */
        for (int k = 0; k < mix->g->node[j].nin; k++)
          if (mix->g->node[j].in[k] == i)
            cr_assert_eq(mix->g->node[j].op, IR_CAST);
    }
    cr_assert(n->op != IR_MATMUL || n->dtype == IR_F32, "GEMMs accumulate in f32");
  }
  /* 3 forward GEMMs (x, l1.w, h1, l2.w, h2, l3.w), 2 backward data and 3 weight GEMMs: the
   * distinct operands are the 6 forward ones plus the 3 incoming gradients */
  cr_assert_geq(casts, 9, "%d 16-bit casts", casts);
  unsigned char *fr[2], *fm[2];
  IrInterp *ir = run_mlp(ref, NULL, fr), *im = run_mlp(mix, NULL, fm);
  double lr_ = interp_scalar(ir, ref->loss), lm = interp_scalar(im, mix->loss);
  cr_assert(fabs(lm - lr_) <= loss_tol * fabs(lr_), "%s loss %.7g vs f32 %.7g", mode, lm, lr_);
  cr_assert(lm != lr_, "%s: the loss should differ from f32 in the last bits", mode);
  static const char *const params[] = {"l1.weight", "l1.bias", "l2.weight", "l3.weight", "l3.bias"};
  for (int i = 0; i < 5; i++) {
    int p = ir_find_input(ref->g, params[i]);
    cr_assert(p >= 0, "%s", params[i]);
    double e = grad_err(grad_named(mix, im, params[i]), grad_named(ref, ir, params[i]), ir_numel(ref->g->node[p].shape));
    if (getenv("LTL_TEST_VERBOSE")) fprintf(stderr, "%s %s %.3g\n", mode, params[i], e);
    cr_expect(e <= grad_tol, "%s: gradient of %s off by %.3g of its largest element", mode, params[i], e);
  }
  interp_free(ir);
  interp_free(im);
  for (int k = 0; k < 2; k++) {
    free(fr[k]);
    free(fm[k]);
  }
  sema_step_free(ref);
  sema_step_free(mix);
}

Test(precision, bf16_mixed_step_is_close_to_f32, .timeout = 60) { mixed_vs_f32("bf16-mixed", 1e-2, 2e-2); }
Test(precision, f16_mixed_step_is_close_to_f32, .timeout = 60) { mixed_vs_f32("16-mixed", 2e-3, 3e-3); }

/* The JIT runs the same mixed step as the interpreter: the 16-bit roundings are bit-exact,
 * so only f32 summation order differs (values: 1e-5, test_cpu.c's GEMM tolerance).  When that
 * puts a GEMM result on the other side of a 16-bit rounding boundary, the next GEMM sees an
 * operand one 16-bit ulp away: gradients within 1e-4 in 2-norm (measured up to 2.3e-5). */
static int gemm16_calls(const LlvmStep *s);

static void jit_vs_interp(StepGraph *st, const char *mode, double gtol) {
  char err[256];
  LlvmStep *jit = llvm_step_compile(st->g, &(LlvmStepOptions){.nthreads = 2, .grads = true}, err, sizeof err);
  cr_assert(jit, "%s", err);
  for (int i = 0; i < st->g->n; i++)
    if (st->g->node[i].op == IR_CAST)
      cr_expect(fuse_is_native(llvm_step_plan(jit), i), "%s: cast %%%d falls back", mode, i);
  unsigned char *fi[2], *fj[2];
  IrInterp *ip = run_mlp(st, NULL, fi);
  IrInterp *none = run_mlp(st, jit, fj);
  cr_assert_null(none);
  const IrGraph *g = st->g;
  for (int o = 0; o < g->nout; o++) {
    const IrOutput *out = &g->out[o];
    const IrNode *n = &g->node[out->value];
    if (out->kind == IR_OUT_UPDATE || !ir_dtype_is_float(n->dtype))
      continue;
    int64_t cnt = ir_numel(n->shape);
    const void *got = llvm_step_output(jit, o);
    double *v = malloc(sizeof *v * (size_t)cnt);
    for (int64_t i = 0; i < cnt; i++)
      v[i] = ir_load(n->dtype, got, i);
    double e = grad_err(v, interp_data(ip, out->value), cnt);
    if (getenv("LTL_TEST_VERBOSE")) fprintf(stderr, "jit %s %s %.3g\n", mode, out->name, e);
    cr_expect(e <= (out->kind == IR_OUT_GRAD ? gtol : 1e-5), "%s: %s off by %.3g", mode,
              out->kind == IR_OUT_GRAD ? g->node[out->target].name : out->name, e);
    free(v);
  }
  /* bf16 operands run on the 16-bit GEMM where the host has AMX (f16 ones never) */
  bool amx = llvm_gemm16_step_usable(llvm_jit_host(jit->jit)) && strcmp(mode, "bf16-mixed") == 0;
  cr_expect(amx ? gemm16_calls(jit) > 0 : gemm16_calls(jit) == 0, "%s: %d 16-bit GEMM variants", mode,
            gemm16_calls(jit));
  interp_free(ip);
  llvm_step_free(jit);
  for (int k = 0; k < 2; k++) {
    free(fi[k]);
    free(fj[k]);
  }
  sema_step_free(st);
}

static void mixed_jit_vs_interp(const char *mode) { jit_vs_interp(lower_mlp(mode, 33), mode, 1e-4); }

Test(precision, bf16_mixed_step_jit_matches_interpreter, .timeout = 60) { mixed_jit_vs_interp("bf16-mixed"); }
Test(precision, f16_mixed_step_jit_matches_interpreter, .timeout = 60) { mixed_jit_vs_interp("16-mixed"); }

/* bf16-mixed on the CNN: every convolution (forward, data and filter gradients) and every
 * matmul reads both operands through a bf16 round trip; nothing else is rounded. */
Test(precision, bf16_mixed_cnn_rounds_every_conv_and_gemm_operand, .timeout = 60) {
  static Ast ast;
  char *text = NULL, path[512];
  snprintf(path, sizeof path, "%s/examples/fashion_cnn.ltl", SRCDIR);
  Node *root = parse_file(&ast, path, &text);
  cr_assert(root && diag_error_count() == 0, "parse %s", path);
  SemaOptions opt = {.batch = 2, .backward = true, .seed = 42, .precision = "bf16-mixed"};
  StepGraph *st = sema_lower(root, path, "training_step", &opt, true);
  cr_assert(st, "lower %s", path);
  sema_simplify(st);
  const IrGraph *g = st->g;
  int convs[3] = {0}, gemms = 0, casts = 0;
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    if (n->op == IR_CAST && n->dtype == IR_BF16)
      casts++;
    if (n->op != IR_MATMUL && n->op != IR_CONV2D && n->op != IR_CONV2D_BWD_DATA && n->op != IR_CONV2D_BWD_FILTER)
      continue;
    if (n->op == IR_MATMUL) gemms++;
    else convs[n->op == IR_CONV2D ? 0 : n->op == IR_CONV2D_BWD_DATA ? 1 : 2]++;
    for (int k = 0; k < 2; k++) {
      const IrNode *x = &g->node[n->in[k]];
      cr_assert(x->op == IR_CAST && g->node[x->in[0]].dtype == IR_BF16, "%%%d %s operand %d is not bf16-rounded", i,
                ir_op_name(n->op), k);
    }
  }
  cr_assert(convs[0] >= 2 && convs[2] >= 2 && convs[1] >= 1 && gemms >= 4, "convs %d/%d/%d, gemms %d", convs[0],
            convs[1], convs[2], gemms);
  cr_assert_gt(casts, 0);
  sema_step_free(st);
}

/* 64-true: every f32 value becomes f64 (then the interpreter computes in double). */
Test(precision, f64_true_retypes_the_whole_step) {
  StepGraph *st = lower_mlp("64-true", 4);
  for (int i = 0; i < st->g->n; i++)
    cr_assert_neq(st->g->node[i].dtype, IR_F32, "%%%d %s is f32", i, ir_op_name(st->g->node[i].op));
  cr_assert_eq(st->g->node[ir_find_input(st->g, "l1.weight")].dtype, IR_F64);
  sema_step_free(st);
}

/* ---- from the command line ---- */

static char dir[64];

static const char *tiny_src =
    "use nn\n"
    "model Tiny(hidden = 16, lr = 1e-2) {\n"
    "    l1 = nn.Linear(16, hidden)\n"
    "    l2 = nn.Linear(hidden, 2)\n"
    "    forward(x: f32[B, 1, 4, 4]) -> f32[B, 2] = l2(relu(l1(flatten(x, 1))))\n"
    "    training_step(x: f32[B, 1, 4, 4], y: i64[B]) {\n"
    "        loss = cross_entropy(forward(x), y)\n"
    "        log(\"train_loss\", loss)\n"
    "        return loss\n"
    "    }\n"
    "    test_step(x, y) { log(\"test_acc\", accuracy(forward(x), y)) }\n"
    "    optimizer = adam(lr = lr)\n"
    "}\n"
    "data Toy(root = \"%s\", batch = 16) {\n"
    "    train = idx(root + \"/x.idx\", root + \"/y.idx\")\n"
    "    test = idx(root + \"/tx.idx\", root + \"/ty.idx\")\n"
    "    transform(x) = x / 255\n"
    "    loader(batch = batch, shuffle = true)\n"
    "}\n"
    "trainer {\n"
    "    max_epochs = 4\n"
    "    seed = 3\n"
    "    enable_progress_bar = false\n"
    "    default_root_dir = \"%s/runs\"\n"
    "}\n";

static void cli_setup(void) {
  e2e_tmpdir(dir, "/tmp/ltl_prec_XXXXXX");
  idx_write(dir, "x.idx", "y.idx", 160, -1, -1);
  idx_write(dir, "tx.idx", "ty.idx", 64, -1, -1);
  e2e_write(dir, "tiny.ltl", tiny_src, dir, dir);
}

static void cli_teardown(void) { e2e_rmdir(dir); }

static int ltlc(char *out, size_t size, const char *args) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s %s", LTLC, args);
  return e2e_sh(dir, out, size, cmd);
}

static double test_acc(const char *out) {
  const char *a = strstr(out, "test_acc");
  cr_assert(a, "%s", out);
  return atof(a + 8);
}

Test(precision_cli, bf16_mixed_and_bf16_true_train_from_the_command_line, .init = cli_setup, .fini = cli_teardown,
     .timeout = 60) {
  static char out[1 << 16];
  const char *modes[] = {"bf16-mixed", "bf16-true", "64-true"};
  for (int i = 0; i < 3; i++) {
    char args[256];
    snprintf(args, sizeof args, "run tiny.ltl fit test --trainer.precision=%s", modes[i]);
    cr_assert_eq(ltlc(out, sizeof out, args), 0, "%s", out);
    cr_assert_null(strstr(out, "not applied"), "%s", out);
    cr_assert_geq(test_acc(out), 0.95, "%s: test accuracy after 4 epochs:\n%s", modes[i], out);
    cr_assert_eq(!!strstr(out, "reference interpreter"), i == 2, "%s", out);
  }
}

static RtCkpt *open_ckpt(int version, const char *name) {
  char p[512], err[RT_CKPT_ERR_LEN];
  snprintf(p, sizeof p, "%s/runs/lightning_logs/version_%d/checkpoints/%s", dir, version, name);
  RtCkpt *ck = rt_ckpt_open(p, err);
  cr_assert(ck, "%s", err);
  return ck;
}

static float ckpt_scalar(RtCkpt *ck, const char *name) {
  char err[RT_CKPT_ERR_LEN];
  const RtCkptInfo *t = rt_ckpt_find(ck, name);
  cr_assert(t, "no %s in the checkpoint", name);
  float v;
  cr_assert(rt_ckpt_read(ck, t, &v, err), "%s", err);
  return v;
}

/* After one epoch, bf16-true's weights and Adam moments (every tensor a step updates) hold
 * bf16 values, and 64-true's checkpoint holds F64 tensors. */
Test(precision_cli, bf16_true_keeps_bf16_values_and_64_true_f64_tensors, .init = cli_setup, .fini = cli_teardown,
     .timeout = 60) {
  static char out[1 << 16];
  cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.precision=bf16-true --trainer.max_epochs=1"), 0, "%s", out);
  cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.precision=64-true --trainer.max_epochs=1"), 0, "%s", out);
  RtCkpt *t = open_ckpt(0, "epoch=0-step=10.ckpt"), *d = open_ckpt(1, "epoch=0-step=10.ckpt");
  char err[RT_CKPT_ERR_LEN];
  int checked = 0;
  for (size_t i = 0; i < rt_ckpt_count(t); i++) {
    const RtCkptInfo *ti = rt_ckpt_tensor(t, i);
    if (!strcmp(ti->name, "opt.step"))
      continue; /* Adam's step counter: an integer */
    cr_assert_eq(ti->dtype, RT_CKPT_F32, "%s", ti->name);
    uint32_t *v = malloc(ti->nbytes);
    cr_assert(rt_ckpt_read(t, ti, v, err), "%s", err);
    for (uint64_t j = 0; j < ti->numel; j++)
      cr_assert_eq(v[j] & 0xffffu, 0, "%s[%llu] = %a is not a bf16 value", ti->name, (unsigned long long)j,
                   (double)float_of(v[j]));
    free(v);
    checked++;
  }
  cr_assert_geq(checked, 4 * 3, "weights, biases and both Adam moments");
  for (size_t i = 0; i < rt_ckpt_count(d); i++)
    if (strcmp(rt_ckpt_tensor(d, i)->name, "opt.step"))
      cr_assert_eq(rt_ckpt_tensor(d, i)->dtype, RT_CKPT_F64, "64-true: %s", rt_ckpt_tensor(d, i)->name);
  rt_ckpt_close(t);
  rt_ckpt_close(d);
}

/* 16-mixed: the scale is logged; the scaler's state is in the checkpoint; a run resumed from
 * epoch 2 ends with the same bytes in every tensor as one that never stopped. */
Test(precision_cli, f16_mixed_checkpoint_holds_the_scaler_and_resumes_bit_identically, .init = cli_setup,
     .fini = cli_teardown, .timeout = 60) {
  static char out[1 << 16];
  cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit test --trainer.precision=16-mixed --trainer.log_every_n_steps=5"), 0, "%s", out);
  cr_assert_geq(test_acc(out), 0.95, "%s", out);
  char p[512], head[256] = "";
  snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/metrics.csv", dir);
  FILE *f = fopen(p, "r");
  cr_assert(f && fgets(head, sizeof head, f), "%s", p);
  fclose(f);
  cr_assert(strstr(head, "loss_scale"), "the scale is logged: %s", head);
  cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.precision=16-mixed --trainer.max_epochs=2"), 0, "%s", out);
  cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.precision=16-mixed "
                                     "--ckpt_path=runs/lightning_logs/version_1/checkpoints/epoch=1-step=20.ckpt"),
               0, "%s", out);
  RtCkpt *a = open_ckpt(0, "epoch=3-step=40.ckpt");
  cr_assert_eq(ckpt_scalar(a, "opt.scaler.scale"), 65536.0f, "no overflow in this model: the initial scale");
  cr_assert_eq(ckpt_scalar(a, "opt.scaler.growth_tracker"), 40.0f, "40 finite steps");
  rt_ckpt_close(a);
  char pa[512], pb[512];
  snprintf(pa, sizeof pa, "%s/runs/lightning_logs/version_0/checkpoints/epoch=3-step=40.ckpt", dir);
  snprintf(pb, sizeof pb, "%s/runs/lightning_logs/version_2/checkpoints/epoch=3-step=40.ckpt", dir);
  e2e_same_tensors(pa, pb, "after resuming");
}

/* ---- the step's 16-bit GEMM (llvm_gemm16_step_fn, dispatched by llvm_step_kern.c) ---- */

/* 16-bit GEMM variants a compiled step calls (entries 16.. of its GEMM table) */
static int gemm16_calls(const LlvmStep *s) {
  int n = 0;
  for (int i = 16; i < 32; i++)
    n += s->funcs[i] != NULL;
  return n;
}

static float round_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return float_of((uint32_t)ref_bf16(u) << 16);
}

/* Every variant (transpositions, bias, relu) against a double-precision sum of the
 * bf16-rounded operands, on odd shapes (edge tiles, k not a multiple of 32, several K blocks
 * past 512), beta 0 (C starts as NaN: every element must be written by exactly one part),
 * 1 and 0.5, alpha 1 and 2, parts in a 1 x 3 and 3 x 1 grid, and a work slot of one panel
 * (many N blocks) or the step's usual size. */
Test(gemm16_step, variants_match_a_bf16_reference_on_odd_shapes, .timeout = 60) {
  char err[256];
  LlvmJit *jit = llvm_jit_create(err, sizeof err);
  cr_assert(jit, "%s", err);
  if (!llvm_gemm16_step_usable(llvm_jit_host(jit))) {
    llvm_jit_destroy(jit);
    cr_skip_test("no AMX-BF16 on this host (or the tile state is not granted)");
  }
  static const int64_t shapes[][3] = {{1, 1, 1}, {33, 47, 65}, {31, 33, 257}, {70, 20, 515}, {100, 97, 1100}, {64, 130, 784}};
  size_t small = (llvm_gemm16_step_work() + 63) & ~(size_t)63, big = 1 << 20;
  void *work = aligned_alloc(64, 3 * big);
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
    for (int v = 0; v < 16; v++) {
      int64_t m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
      bool ta = v & 1, tb = v & 2, bias = v & 4, relu = v & 8;
      float beta = (float[]){0, 1, 0.5f}[(v + si) % 3], alpha = v == 5 ? 2 : 1;
      int64_t nparts = si % 2 ? 3 : 1, parts_m = v % 2 ? nparts : 1;
      float *a = malloc(sizeof *a * (size_t)(m * k)), *b = malloc(sizeof *b * (size_t)(k * n));
      float *c = malloc(sizeof *c * (size_t)(m * n)), *c0 = malloc(sizeof *c0 * (size_t)(m * n));
      float *bv = malloc(sizeof *bv * (size_t)n);
      philox_fill_uniform(a, m * k, 3, (uint64_t)v, -1, 1);
      philox_fill_uniform(b, k * n, 4, (uint64_t)v, -1, 1);
      philox_fill_uniform(c0, m * n, 5, (uint64_t)v, -1, 1);
      philox_fill_uniform(bv, n, 6, (uint64_t)v, -1, 1);
      for (int64_t i = 0; i < m * n; i++)
        c[i] = beta == 0 ? NAN : c0[i];
      int64_t lda = ta ? m : k, ldb = tb ? k : n;
      LlvmGemmArgs args = {.a = a, .b = b, .c = c, .bias = bias ? bv : NULL, .m = m, .n = n, .k = k, .lda = lda,
                           .ldb = ldb, .ldc = n, .alpha = alpha, .beta = beta, .work = work,
                           .work_stride = (int64_t)(v % 4 == 3 ? small : big), .parts_m = parts_m};
      for (int64_t part = 0; part < nparts; part++)
        llvm_gemm16_step_fn(v)(&args, part, nparts);
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
          double sum = 0, mag = 0;
          for (int64_t p = 0; p < k; p++) {
            double x = round_bf16(ta ? a[p * lda + i] : a[i * lda + p]), y = round_bf16(tb ? b[j * ldb + p] : b[p * ldb + j]);
            sum += x * y;
            mag += fabs(x * y);
          }
          double want = alpha * sum + (beta ? beta * c0[i * n + j] : 0) + (bias ? bv[j] : 0);
          want = relu && want < 0 ? 0 : want;
          double got = c[i * n + j], tol = 1e-5 * (fabs(alpha) * mag + fabs(c0[i * n + j]) + 1) + 1e-6;
          cr_assert(fabs(got - want) <= tol, "%lldx%lldx%lld variant %d beta %g: C[%lld][%lld] = %.9g, want %.9g",
                    (long long)m, (long long)n, (long long)k, v, beta, (long long)i, (long long)j, got, want);
        }
      free(a), free(b), free(c), free(c0), free(bv);
    }
  free(work);
  llvm_jit_destroy(jit);
}

/* Which GEMMs run 16-bit: bf16-mixed on an AMX host does; 32-true and 16-mixed (f16 operands,
 * not bf16 values) never; LTL_STEP_GEMM16=0 turns it off, and the on-disk step cache keeps the
 * two apart (the setting is in the step's key, so the second compile cannot reuse the first). */
Test(gemm16_step, dispatch_follows_the_precision_and_LTL_STEP_GEMM16, .timeout = 60) {
  char err[256];
  static const char *modes[] = {"32-true", "16-mixed", "bf16-mixed", "bf16-mixed"};
  for (int i = 0; i < 4; i++) {
    StepGraph *st = lower_mlp(modes[i], 64);
    if (i == 3)
      setenv("LTL_STEP_GEMM16", "0", 1);
    LlvmStep *jit = llvm_step_compile(st->g, &(LlvmStepOptions){.nthreads = 1, .grads = true}, err, sizeof err);
    unsetenv("LTL_STEP_GEMM16");
    cr_assert(jit, "%s", err);
    bool amx = llvm_gemm16_step_usable(llvm_jit_host(jit->jit));
    int want = i == 2 && amx;
    cr_expect(want ? gemm16_calls(jit) >= 2 : gemm16_calls(jit) == 0, "%s (run %d): %d 16-bit GEMM variants",
              modes[i], i, gemm16_calls(jit));
    llvm_step_free(jit);
    sema_step_free(st);
  }
}

/* The CNN's bf16-mixed step: at batch 2 only the second convolution's GEMMs (forward 64 x 576
 * x 288, data gradient 288 x 576 x 64, filter gradient 64 x 288 x 576) are large enough for
 * the 16-bit GEMM; JIT and interpreter agree (gradients measured within 6e-5 in 2-norm). */
Test(gemm16_step, cnn_bf16_mixed_step_matches_the_interpreter, .timeout = 120) {
  static Ast ast;
  char *text = NULL, path[512];
  snprintf(path, sizeof path, "%s/examples/fashion_cnn.ltl", SRCDIR);
  Node *root = parse_file(&ast, path, &text);
  cr_assert(root && diag_error_count() == 0, "parse %s", path);
  SemaOptions opt = {.batch = 2, .backward = true, .seed = 42, .precision = "bf16-mixed"};
  StepGraph *st = sema_lower(root, path, "training_step", &opt, true);
  cr_assert(st, "lower %s", path);
  sema_simplify(st);
  jit_vs_interp(st, "bf16-mixed", 1e-4);
}
