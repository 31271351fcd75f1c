/* test_ir_optim.c — optimizer update graphs against PyTorch's semantics: a few steps worked
 * out by hand, and longer random runs against a scalar transcription of torch.optim's
 * single-tensor loops (torch/optim/sgd.py, adam.py, adamw.py). */
#include "ir_test.h"

enum { P = 3, STEPS = 6 };

/* An update-only graph: param "w" [P], its gradient fed in, lr a data input. */
typedef struct {
  IrGraph *g;
  int w, grad, lr;
  double *store[256]; /* host value of each input, by id */
} Opt;

static void opt_init(Opt *o) {
  memset(o, 0, sizeof *o);
  o->g = ir_new();
  o->w = ir_input(o->g, IR_IN_PARAM, "w", IR_F64, IR_SHAPE(P));
  o->grad = ir_input(o->g, IR_IN_GRAD, "w.grad", IR_F64, IR_SHAPE(P));
  o->lr = ir_input(o->g, IR_IN_DATA, "lr", IR_F64, IR_SCALAR);
}

/* One step: inputs from the store (state starts at zero), outputs written back. */
static void opt_step(Opt *o, const double *w0, const double *grad, double lr) {
  IrGraph *g = o->g;
  IrInterp *ip = interp_new(g, true);
  cr_assert_lt(g->n, 256);
  for (int i = 0; i < g->n; i++) {
    if (g->node[i].op != IR_INPUT)
      continue;
    if (!o->store[i]) {
      o->store[i] = calloc((size_t)ir_numel(g->node[i].shape) + 1, sizeof(double));
      if (i == o->w)
        memcpy(o->store[i], w0, P * sizeof(double));
    }
    if (i == o->grad)
      memcpy(o->store[i], grad, P * sizeof(double));
    if (i == o->lr)
      o->store[i][0] = lr;
    interp_set_f64(ip, i, o->store[i]);
  }
  const char *err = interp_run(ip);
  cr_assert_null(err, "%s", err);
  for (int k = 0; k < g->nout; k++) {
    const IrOutput *out = &g->out[k];
    cr_assert_eq(out->kind, IR_OUT_UPDATE);
    memcpy(o->store[out->target], interp_data(ip, out->value),
           (size_t)ir_numel(g->node[out->value].shape) * sizeof(double));
  }
  interp_free(ip);
}

static void opt_free(Opt *o) {
  for (int i = 0; i < 256; i++)
    free(o->store[i]);
  ir_free(o->g);
}

/* ---- SGD ---- */

static double sgd_run(IrSgd s, const double *grads, int steps) { /* one element, by hand */
  Opt o;
  opt_init(&o);
  s.lr = o.lr;
  cr_assert_eq(ir_sgd(o.g, "sgd", &s, &o.w, &o.grad, 1), 0, "%s", ir_error(o.g));
  double w0[P] = {1, 1, 1};
  for (int t = 0; t < steps; t++)
    opt_step(&o, w0, (double[]){grads[t], grads[t], grads[t]}, 0.1);
  double w = o.store[o.w][0];
  opt_free(&o);
  return w;
}

Test(optim, sgd_by_hand) {
  IrSgd s = ir_sgd_defaults(-1);
  expect_near(sgd_run(s, (double[]){0.5}, 1), 0.95, 1e-15);
  s.weight_decay = 0.1; /* d = 0.5 + 0.1 * 1 */
  expect_near(sgd_run(s, (double[]){0.5}, 1), 0.94, 1e-15);
  s = ir_sgd_defaults(-1);
  s.momentum = 0.9; /* buf = 1; buf = 0.9 + 1 */
  expect_near(sgd_run(s, (double[]){1, 1}, 1), 0.9, 1e-15);
  expect_near(sgd_run(s, (double[]){1, 1}, 2), 0.71, 1e-15);
  s.dampening = 0.5; /* the first step is not damped: buf = 1; buf = 0.9 + 0.5 */
  expect_near(sgd_run(s, (double[]){1, 1}, 2), 0.76, 1e-15);
  s.dampening = 0;
  s.nesterov = true; /* d = 1 + 0.9 * 1 = 1.9; buf = 1.9, d = 1 + 0.9 * 1.9 = 2.71 */
  expect_near(sgd_run(s, (double[]){1, 1}, 1), 0.81, 1e-15);
  expect_near(sgd_run(s, (double[]){1, 1}, 2), 0.539, 1e-15);
  s = ir_sgd_defaults(-1);
  s.maximize = true;
  expect_near(sgd_run(s, (double[]){0.5}, 1), 1.05, 1e-15);
}

/* torch.optim.sgd._single_tensor_sgd, one element; lr_t = 0.05 (t + 1) as a scheduler would */
static double sgd_ref(const IrSgd *s, double p, const double *grads, int steps) {
  double buf = 0;
  for (int t = 0; t < steps; t++) {
    double d = s->maximize ? -grads[t] : grads[t];
    if (s->weight_decay != 0)
      d += s->weight_decay * p;
    if (s->momentum != 0) {
      buf = t == 0 ? d : s->momentum * buf + (1 - s->dampening) * d;
      d = s->nesterov ? d + s->momentum * buf : buf;
    }
    p -= 0.05 * (t + 1) * d;
  }
  return p;
}

Test(optim, sgd_matches_reference) {
  IrSgd cases[] = {{.momentum = 0},
                   {.momentum = 0.9, .weight_decay = 1e-2},
                   {.momentum = 0.8, .dampening = 0.3},
                   {.momentum = 0.9, .nesterov = true, .weight_decay = 5e-4},
                   {.momentum = 0.5, .maximize = true}};
  double grads[P][STEPS], w0[P];
  fill_uniform(&grads[0][0], P * STEPS, 77, -1, 1);
  fill_uniform(w0, P, 78, -2, 2);
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    Opt o;
    opt_init(&o);
    IrSgd s = cases[c];
    s.lr = o.lr;
    cr_assert_eq(ir_sgd(o.g, "sgd", &s, &o.w, &o.grad, 1), 0, "%s", ir_error(o.g));
    for (int t = 0; t < STEPS; t++)
      opt_step(&o, w0, (double[]){grads[0][t], grads[1][t], grads[2][t]}, 0.05 * (t + 1));
    for (int i = 0; i < P; i++)
      expect_near(o.store[o.w][i], sgd_ref(&s, w0[i], grads[i], STEPS), 1e-14);
    opt_free(&o);
  }
}

/* ---- Adam, AdamW ---- */

static double adam_run(IrAdam a, double g, double lr) {
  Opt o;
  opt_init(&o);
  a.lr = o.lr;
  cr_assert_eq(ir_adam(o.g, "adam", &a, &o.w, &o.grad, 1), 0, "%s", ir_error(o.g));
  opt_step(&o, (double[]){1, 1, 1}, (double[]){g, g, g}, lr);
  double w = o.store[o.w][0];
  opt_free(&o);
  return w;
}

Test(optim, adam_first_step_by_hand) {
  /* m^ = g, v^ = g^2 after bias correction: p -= lr g / (|g| + eps) */
  IrAdam a = ir_adam_defaults(-1);
  expect_near(adam_run(a, 0.5, 0.1), 1 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
  expect_near(adam_run(a, 0.5, 0.1), 0.900000002, 1e-12);
  a.weight_decay = 0.1; /* Adam: g = 0.5 + 0.1 = 0.6, the step is still ~lr */
  expect_near(adam_run(a, 0.5, 0.1), 1 - 0.1 * 0.6 / (0.6 + 1e-8), 1e-15);
  IrAdam w = ir_adamw_defaults(-1); /* AdamW: p = 1 * (1 - 0.1 * 0.01) first */
  expect_near(adam_run(w, 0.5, 0.1), 0.999 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
  expect_near(adam_run(w, 0.5, 0.1), 0.899000002, 1e-12);
}

/* torch.optim.adam._single_tensor_adam, one element */
static double adam_ref(const IrAdam *a, double p, const double *grads, int steps, double lr) {
  double m = 0, v = 0, vmax = 0;
  for (int t = 1; t <= steps; t++) {
    double g = a->maximize ? -grads[t - 1] : grads[t - 1];
    if (a->weight_decay != 0) {
      if (a->decoupled)
        p *= 1 - lr * a->weight_decay;
      else
        g += a->weight_decay * p;
    }
    m += (1 - a->beta1) * (g - m); /* exp_avg.lerp_(grad, 1 - beta1) */
    v = a->beta2 * v + (1 - a->beta2) * g * g;
    double bc1 = 1 - pow(a->beta1, t), bc2 = 1 - pow(a->beta2, t);
    double step_size = lr / bc1, bc2_sqrt = sqrt(bc2), denom;
    if (a->amsgrad) {
      vmax = fmax(vmax, v);
      denom = sqrt(vmax) / bc2_sqrt + a->eps;
    } else {
      denom = sqrt(v) / bc2_sqrt + a->eps;
    }
    p -= step_size * m / denom;
  }
  return p;
}

Test(optim, adam_matches_reference) {
  IrAdam cases[5];
  cases[0] = ir_adam_defaults(-1);
  cases[1] = ir_adamw_defaults(-1);
  cases[2] = ir_adam_defaults(-1);
  cases[2].weight_decay = 0.05, cases[2].amsgrad = true, cases[2].beta1 = 0.5;
  cases[3] = ir_adamw_defaults(-1);
  cases[3].amsgrad = true, cases[3].maximize = true, cases[3].eps = 1e-3;
  cases[4] = ir_adam_defaults(-1);
  cases[4].beta1 = 0, cases[4].beta2 = 0.9;
  double grads[P][STEPS], w0[P];
  fill_uniform(&grads[0][0], P * STEPS, 79, -1, 1);
  fill_uniform(w0, P, 80, -2, 2);
  for (int c = 0; c < 5; c++) {
    Opt o;
    opt_init(&o);
    IrAdam a = cases[c];
    a.lr = o.lr;
    cr_assert_eq(ir_adam(o.g, "adam", &a, &o.w, &o.grad, 1), 0, "%s", ir_error(o.g));
    for (int t = 0; t < STEPS; t++)
      opt_step(&o, w0, (double[]){grads[0][t], grads[1][t], grads[2][t]}, 1e-2);
    for (int i = 0; i < P; i++)
      expect_near(o.store[o.w][i], adam_ref(&a, w0[i], grads[i], STEPS, 1e-2), 1e-14);
    int step = ir_find_input(o.g, "adam.step");
    cr_assert_geq(step, 0);
    cr_expect_eq(o.store[step][0], STEPS, "the step counter counts");
    opt_free(&o);
  }
}

Test(optim, f32_update_is_close_to_f64_reference) {
  IrGraph *g = ir_new();
  int w = ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(P));
  int gr = ir_input(g, IR_IN_GRAD, "w.grad", IR_F32, IR_SHAPE(P));
  IrAdam a = ir_adam_defaults(ir_scalar(g, 1e-3, IR_F32));
  cr_assert_eq(ir_adam(g, "adam", &a, &w, &gr, 1), 0, "%s", ir_error(g));
  IrInterp *ip = interp_new(g, false);
  float wv[P] = {1, -1, 0.5f}, gv[P] = {0.3f, -0.2f, 1e-4f}, out[P];
  int64_t step = 0;
  float zero[P] = {0};
  interp_set(ip, w, wv);
  interp_set(ip, gr, gv);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT && g->node[i].kind == IR_IN_STATE)
      interp_set(ip, i, g->node[i].dtype == IR_I64 ? (void *)&step : (void *)zero);
  cr_assert_null(interp_run(ip));
  for (int k = 0; k < g->nout; k++)
    if (g->out[k].target == w)
      interp_get(ip, g->out[k].value, out);
  for (int i = 0; i < P; i++)
    expect_near(out[i], adam_ref(&a, wv[i], (double[]){gv[i]}, 1, 1e-3), 1e-6);
  interp_free(ip);
  ir_free(g);
}

Test(optim, state_is_named_and_flat) {
  IrGraph *g = ir_new();
  int w = ir_input(g, IR_IN_PARAM, "l1.weight", IR_F32, IR_SHAPE(4, 3));
  int b = ir_input(g, IR_IN_PARAM, "l1.bias", IR_F32, IR_SHAPE(4));
  int loss = ok(ir_sum(g, ir_mul(g, w, w), NULL, 0, false));
  loss = ok(ir_add(g, loss, ir_sum(g, b, NULL, 0, false)));
  int grads[2];
  cr_assert_eq(ad_grad(g, loss, (int[]){w, b}, 2, grads), 0);
  IrAdam a = ir_adam_defaults(ir_input(g, IR_IN_DATA, "lr", IR_F32, IR_SCALAR));
  a.amsgrad = true;
  cr_assert_eq(ir_adam(g, "opt0", &a, (int[]){w, b}, grads, 2), 0, "%s", ir_error(g));
  IrLayout l = ir_layout(g, IR_IN_STATE);
  const char *names[] = {"opt0.step", "l1.weight.exp_avg", "l1.weight.exp_avg_sq",
                         "l1.weight.max_exp_avg_sq", "l1.bias.exp_avg", "l1.bias.exp_avg_sq",
                         "l1.bias.max_exp_avg_sq"};
  cr_assert_eq(l.n, 7);
  for (int i = 0; i < 7; i++) {
    cr_expect_str_eq(l.slot[i].name, names[i]);
    cr_expect_eq(l.slot[i].offset % 64, 0);
  }
  int updates = 0;
  for (int k = 0; k < g->nout; k++)
    updates += g->out[k].kind == IR_OUT_UPDATE;
  cr_expect_eq(updates, 2 + 7, "new params and new state");
  ir_layout_free(&l);
  ir_free(g);
}

Test(optim, errors) {
  IrGraph *g = ir_new();
  int w = ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(3));
  int gr = ir_input(g, IR_IN_GRAD, "g", IR_F32, IR_SHAPE(4));
  IrSgd s = ir_sgd_defaults(ir_scalar(g, 0.1, IR_F32));
  cr_expect_eq(ir_sgd(g, "sgd", &s, &w, &gr, 1), -1);
  cr_expect_str_eq(ir_error(g), "sgd: gradient f32[4] does not match parameter \"w\" f32[3]");
  s.nesterov = true;
  cr_expect_eq(ir_sgd(g, "sgd", &s, &w, &w, 1), -1);
  cr_expect_str_eq(ir_error(g), "sgd: nesterov momentum requires a momentum and zero dampening");
  IrAdam a = ir_adam_defaults(ir_const(g, 0.1, IR_F32, IR_SHAPE(2)));
  cr_expect_eq(ir_adam(g, "adam", &a, &w, &w, 1), -1);
  cr_expect_str_eq(ir_error(g), "adam: the learning rate must be a floating-point scalar, got f32[2]");
  a = ir_adam_defaults(ir_scalar(g, 0.1, IR_F32));
  a.beta2 = 1;
  cr_expect_eq(ir_adam(g, "adam", &a, &w, &w, 1), -1);
  cr_expect_str_eq(ir_error(g), "adam: betas (0.9, 1) must be in [0, 1)");
  ir_free(g);
}

Test(optim, two_optimizers_two_groups) {
  /* a GAN's step: each loss w.r.t. its own group, each group stepped by its own Adam */
  IrGraph *g = ir_new();
  int z = ok(ir_input(g, IR_IN_DATA, "z", IR_F64, IR_SHAPE(4, 2)));
  int gw = ok(ir_input(g, IR_IN_PARAM, "G.w", IR_F64, IR_SHAPE(2, 2)));
  int dw = ok(ir_input(g, IR_IN_PARAM, "D.w", IR_F64, IR_SHAPE(1, 2)));
  int fake = ok(ir_linear(g, z, gw, -1));
  int ones = ok(ir_const(g, 1, IR_F64, IR_SHAPE(4, 1))), zeros = ok(ir_const(g, 0, IR_F64, IR_SHAPE(4, 1)));
  int g_loss = ok(ir_bce_with_logits(g, ir_linear(g, fake, dw, -1), ones));
  int d_loss = ok(ir_bce_with_logits(g, ir_linear(g, ir_detach(g, fake), dw, -1), zeros));
  int gg, gd;
  cr_assert_eq(ad_grad(g, g_loss, &gw, 1, &gg), 0);
  cr_assert_eq(ad_grad(g, d_loss, &dw, 1, &gd), 0);
  IrAdam a = ir_adam_defaults(ok(ir_scalar(g, 0.1, IR_F64)));
  a.beta1 = 0.5;
  cr_assert_eq(ir_adam(g, "opt_G", &a, &gw, &gg, 1), 0, "%s", ir_error(g));
  cr_assert_eq(ir_adam(g, "opt_D", &a, &dw, &gd, 1), 0, "%s", ir_error(g));
  cr_expect_eq(ir_adam(g, "opt_D2", &a, &dw, &gd, 1), -1, "one param, one optimizer");
  cr_expect_str_eq(ir_error(g), "input: \"D.w.exp_avg\" is defined twice");
  cr_expect_geq(ir_find_input(g, "opt_G.step"), 0);
  cr_expect_geq(ir_find_input(g, "opt_D.step"), 0);
  double vz[8], vg[4], vd[2], zero[4] = {0};
  int64_t t0 = 0;
  fill_uniform(vz, 8, 5, -1, 1);
  fill_uniform(vg, 4, 6, -1, 1);
  fill_uniform(vd, 2, 7, -1, 1);
  IrInterp *ip = interp_new(g, true);
  interp_set_f64(ip, z, vz);
  interp_set_f64(ip, gw, vg);
  interp_set_f64(ip, dw, vd);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT && g->node[i].kind == IR_IN_STATE)
      interp_set(ip, i, g->node[i].dtype == IR_I64 ? (void *)&t0 : (void *)zero);
  cr_assert_null(interp_run(ip));
  int moved = 0;
  for (int k = 0; k < g->nout; k++) {
    const IrOutput *o = &g->out[k];
    if (o->target == gw || o->target == dw) /* the first Adam step moves each weight by ~lr */
      for (int i = 0; i < (o->target == gw ? 4 : 2); i++)
        moved += fabs(interp_data(ip, o->value)[i] - (o->target == gw ? vg : vd)[i]) > 0.09;
  }
  cr_expect_eq(moved, 6);
  interp_free(ip);
  ir_free(g);
}
