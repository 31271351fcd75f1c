/* test_ir_mlp.c — the DESIGN.md MLP (scaled down to 64-32-16-10), built by hand through the
 * builder API as the lowering will build it, trained with the interpreter and Adam on a
 * synthetic separable data set, with parameters and optimizer state in flat buffers. */
#include "ir_test.h"

enum { D = 64, H1 = 32, H2 = 16, C = 10, N = 256, B = 64 };

typedef struct {
  IrGraph *g;
  int x, y, lr, loss, acc;
} Step;

/* forward + nll_loss + backward + Adam: one graph */
static Step build(void) {
  Step s;
  IrGraph *g = s.g = ir_new();
  int dims[] = {D, H1, H2, C}, params[6], grads[6];
  s.x = ok(ir_input(g, IR_IN_DATA, "x", IR_F32, IR_SHAPE(B, D)));
  s.y = ok(ir_input(g, IR_IN_DATA, "y", IR_I64, IR_SHAPE(B)));
  s.lr = ok(ir_input(g, IR_IN_DATA, "lr", IR_F32, IR_SCALAR));
  for (int l = 0; l < 3; l++) {
    char name[32];
    snprintf(name, sizeof name, "l%d.weight", l + 1);
    params[2 * l] = ok(ir_input(g, IR_IN_PARAM, name, IR_F32, IR_SHAPE(dims[l + 1], dims[l])));
    snprintf(name, sizeof name, "l%d.bias", l + 1);
    params[2 * l + 1] = ok(ir_input(g, IR_IN_PARAM, name, IR_F32, IR_SHAPE(dims[l + 1])));
  }
  int h = ok(ir_relu(g, ir_linear(g, ir_flatten(g, s.x, 1, -1), params[0], params[1])));
  h = ok(ir_relu(g, ir_linear(g, h, params[2], params[3])));
  int logp = ok(ir_log_softmax(g, ir_linear(g, h, params[4], params[5]), 1));
  s.loss = ok(ir_nll_loss(g, logp, s.y));
  s.acc = ok(ir_accuracy(g, logp, s.y));
  cr_assert_eq(ad_grad(g, s.loss, params, 6, grads), 0, "%s", ir_error(g));
  IrAdam adam = ir_adam_defaults(s.lr);
  cr_assert_eq(ir_adam(g, "adam", &adam, params, grads, 6), 0, "%s", ir_error(g));
  ir_output(g, s.loss, IR_OUT_VALUE, -1, "train_loss");
  ir_output(g, s.acc, IR_OUT_VALUE, -1, "train_acc");
  return s;
}

/* Flat buffers for params and optimizer state, as the runtime keeps them. */
typedef struct {
  IrLayout pl, sl;
  unsigned char *pbuf, *sbuf;
} Flat;

static Flat flat_init(const IrGraph *g) {
  Flat f = {ir_layout(g, IR_IN_PARAM), ir_layout(g, IR_IN_STATE), NULL, NULL};
  f.pbuf = calloc(1, (size_t)f.pl.bytes);
  f.sbuf = calloc(1, (size_t)f.sl.bytes + 1); /* optimizer state starts at zero */
  for (int i = 0; i < f.pl.n; i++) { /* PyTorch's Linear init: U(-1/sqrt(fan_in), +) */
    const IrSlot *p = &f.pl.slot[i];
    int64_t fan_in = g->node[f.pl.slot[i & ~1].value].shape.d[1];
    philox_fill_uniform((float *)(f.pbuf + p->offset), ir_numel(p->shape), 2024, (uint64_t)i,
                        -1 / sqrt((double)fan_in), 1 / sqrt((double)fan_in));
  }
  return f;
}

static void flat_free(Flat *f) {
  ir_layout_free(&f->pl);
  ir_layout_free(&f->sl);
  free(f->pbuf);
  free(f->sbuf);
}

/* The slot holding input v, in whichever buffer it lives. */
static unsigned char *slot_of(Flat *f, int v) {
  for (int i = 0; i < f->pl.n; i++)
    if (f->pl.slot[i].value == v)
      return f->pbuf + f->pl.slot[i].offset;
  for (int i = 0; i < f->sl.n; i++)
    if (f->sl.slot[i].value == v)
      return f->sbuf + f->sl.slot[i].offset;
  return NULL;
}

static void train_step(const Step *s, IrInterp *ip, Flat *f, const float *x, const int64_t *y,
                       float lr, double *loss, double *acc) {
  for (int i = 0; i < f->pl.n; i++)
    interp_set(ip, f->pl.slot[i].value, f->pbuf + f->pl.slot[i].offset);
  for (int i = 0; i < f->sl.n; i++)
    interp_set(ip, f->sl.slot[i].value, f->sbuf + f->sl.slot[i].offset);
  interp_set(ip, s->x, x);
  interp_set(ip, s->y, y);
  interp_set(ip, s->lr, &lr);
  const char *err = interp_run(ip);
  cr_assert_null(err, "%s", err);
  for (int k = 0; k < s->g->nout; k++) { /* write updates back in place */
    const IrOutput *o = &s->g->out[k];
    if (o->kind == IR_OUT_UPDATE)
      interp_get(ip, o->value, slot_of(f, o->target));
  }
  *loss = interp_scalar(ip, s->loss);
  *acc = interp_scalar(ip, s->acc);
}

/* Ten Gaussian clusters in 64 dimensions, unit noise. */
static void make_data(float *x, int64_t *y) {
  for (int i = 0; i < N; i++) {
    y[i] = (int64_t)(philox_uniform(1, 0, (uint64_t)i) * C);
    for (int d = 0; d < D; d++)
      x[i * D + d] = (float)(philox_normal(2, (uint64_t)y[i], (uint64_t)d) +
                             philox_normal(3, (uint64_t)i, (uint64_t)d));
  }
}

Test(mlp, trains_with_adam) {
  static float x[N * D];
  static int64_t y[N];
  make_data(x, y);
  Step s = build();
  Flat f = flat_init(s.g);
  cr_expect_eq(f.pl.n, 6);
  cr_expect_eq(f.sl.n, 1 + 2 * 6, "adam.step, exp_avg and exp_avg_sq per param");
  IrInterp *ip = interp_new(s.g, false);
  double first_loss = 0, first_acc = 0, last_loss = 0, last_acc = 0;
  const int epochs = 8, batches = N / B;
  for (int e = 0; e < epochs; e++) {
    double el = 0, ea = 0;
    for (int b = 0; b < batches; b++) {
      double l, a;
      train_step(&s, ip, &f, x + b * B * D, y + b * B, 1e-2f, &l, &a);
      cr_assert(isfinite(l));
      el += l / batches;
      ea += a / batches;
    }
    if (e == 0)
      first_loss = el, first_acc = ea;
    last_loss = el, last_acc = ea;
  }
  cr_expect_gt(first_loss, 1.5, "starts near log(10): %g", first_loss);
  cr_expect_lt(last_loss, 0.2 * first_loss, "loss %g -> %g", first_loss, last_loss);
  cr_expect_lt(first_acc, 0.6, "accuracy starts low: %g", first_acc);
  cr_expect_gt(last_acc, 0.95, "accuracy %g -> %g", first_acc, last_acc);
  interp_free(ip);
  flat_free(&f);
  ir_free(s.g);
}

Test(mlp, simplified_step_is_identical) {
  static float x[N * D];
  static int64_t y[N];
  make_data(x, y);
  Step a = build(), b = build();
  int n = b.g->n;
  int *map = malloc((size_t)n * sizeof *map);
  cr_expect_gt(ir_simplify(b.g, map), 0);
  cr_expect_lt(b.g->n, n, "simplify removes nodes: %d -> %d", n, b.g->n);
  b.x = map[b.x], b.y = map[b.y], b.lr = map[b.lr], b.loss = map[b.loss], b.acc = map[b.acc];
  Flat fa = flat_init(a.g), fb = flat_init(b.g);
  cr_assert_eq(fa.pl.bytes, fb.pl.bytes);
  cr_assert_eq(fa.sl.bytes, fb.sl.bytes);
  IrInterp *ia = interp_new(a.g, false), *ib = interp_new(b.g, false);
  for (int t = 0; t < 3; t++) {
    double la, aa, lb, ab;
    train_step(&a, ia, &fa, x + t * B * D, y + t * B, 1e-2f, &la, &aa);
    train_step(&b, ib, &fb, x + t * B * D, y + t * B, 1e-2f, &lb, &ab);
    cr_expect_eq(la, lb, "step %d loss", t);
    cr_expect_eq(aa, ab);
  }
  cr_expect_eq(memcmp(fa.pbuf, fb.pbuf, (size_t)fa.pl.bytes), 0, "the same parameters");
  cr_expect_eq(memcmp(fa.sbuf, fb.sbuf, (size_t)fa.sl.bytes), 0, "the same optimizer state");
  interp_free(ia);
  interp_free(ib);
  flat_free(&fa);
  flat_free(&fb);
  free(map);
  ir_free(a.g);
  ir_free(b.g);
}
