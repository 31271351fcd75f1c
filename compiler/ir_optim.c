/* ir_optim.c — optimizer updates as IR, with PyTorch's semantics (torch.optim, the
 * single-tensor code paths), so forward + loss + backward + update is one graph whose outputs
 * are the new parameters and the new optimizer state.
 *
 * State is made of INPUT nodes of kind IR_IN_STATE ("<param>.exp_avg", "<prefix>.step", ...)
 * zero-initialised by the runtime, each with an UPDATE output: in a flat state buffer the
 * update can be written in place.  Scalar arithmetic that PyTorch does in Python floats (bias
 * corrections, step sizes) is done here in f64 and cast once to the parameter's dtype. */
#include "ir.h"

#include <stdio.h>
#include <string.h>

IrSgd ir_sgd_defaults(int lr) { return (IrSgd){.lr = lr}; }

IrAdam ir_adam_defaults(int lr) {
  return (IrAdam){.lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

IrAdam ir_adamw_defaults(int lr) {
  IrAdam o = ir_adam_defaults(lr);
  o.weight_decay = 1e-2;
  o.decoupled = true;
  return o;
}

static int lit(IrGraph *g, int like, double v) { return ir_scalar(g, v, g->node[like].dtype); }

/* A state tensor shaped like param p, named "<p's name>.<what>", with its update output. */
static int state_like(IrGraph *g, int p, const char *what) {
  char name[256];
  snprintf(name, sizeof name, "%s.%s", g->node[p].name, what);
  return ir_input(g, IR_IN_STATE, name, g->node[p].dtype, g->node[p].shape);
}

static int check(IrGraph *g, const char *who, int lr, const int *params, const int *grads, int n) {
  char a[128], b[128];
  if (lr < 0)
    return -1;
  if (g->node[lr].shape.rank != 0 || !ir_dtype_is_float(g->node[lr].dtype))
    return ir_fail(g, "%s: the learning rate must be a floating-point scalar, got %s", who,
                   ir_shape_str(g->node[lr].dtype, g->node[lr].shape, a, sizeof a));
  for (int i = 0; i < n; i++) {
    if (params[i] < 0 || grads[i] < 0)
      return -1;
    const IrNode *p = &g->node[params[i]], *d = &g->node[grads[i]];
    if (p->op != IR_INPUT || !ir_dtype_is_float(p->dtype))
      return ir_fail(g, "%s: %%%d is not a floating-point graph input", who, params[i]);
    if (p->dtype != d->dtype || !ir_shape_eq(p->shape, d->shape))
      return ir_fail(g, "%s: gradient %s does not match parameter \"%s\" %s", who,
                     ir_shape_str(d->dtype, d->shape, a, sizeof a), p->name,
                     ir_shape_str(p->dtype, p->shape, b, sizeof b));
  }
  return 0;
}

/* The optimizer's step counter: an i64 state scalar counting the steps taken, and its update
 * (+1).  Returns the counter before this step. */
static int step_counter(IrGraph *g, const char *prefix, int *next) {
  char name[256];
  snprintf(name, sizeof name, "%s.step", prefix);
  int t = ir_input(g, IR_IN_STATE, name, IR_I64, IR_SCALAR);
  *next = ir_add(g, t, ir_scalar(g, 1, IR_I64));
  if (ir_output(g, *next, IR_OUT_UPDATE, t, name) < 0)
    return -1;
  return t;
}

static int update(IrGraph *g, int value, int target) {
  return ir_output(g, value, IR_OUT_UPDATE, target, g->node[target].name) < 0 ? -1 : 0;
}

/* torch.optim.SGD:
 *   d = grad (+ wd p);  buf = d on the first step, else momentum buf + (1 - dampening) d;
 *   d = nesterov ? d + momentum buf : buf;  p -= lr d */
int ir_sgd(IrGraph *g, const char *prefix, const IrSgd *o, const int *params, const int *grads,
           int n) {
  if (check(g, "sgd", o->lr, params, grads, n) < 0)
    return -1;
  if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
    return ir_fail(g, "sgd: nesterov momentum requires a momentum and zero dampening");
  /* the first step is special only when dampening would scale it: then we need a counter */
  int first = -1;
  if (o->momentum != 0 && o->dampening != 0) {
    int next, t = step_counter(g, prefix, &next);
    if ((first = ir_eq(g, t, ir_scalar(g, 0, IR_I64))) < 0)
      return -1;
  }
  for (int i = 0; i < n; i++) {
    int p = params[i], d = grads[i];
    if (o->maximize)
      d = ir_neg(g, d);
    if (o->weight_decay != 0)
      d = ir_add(g, d, ir_mul(g, lit(g, p, o->weight_decay), p));
    if (o->momentum != 0) {
      int buf = state_like(g, p, "momentum_buffer");
      if (buf < 0)
        return -1;
      int nb = ir_add(g, ir_mul(g, lit(g, p, o->momentum), buf),
                      ir_mul(g, lit(g, p, 1 - o->dampening), d));
      if (first >= 0)
        nb = ir_where(g, first, d, nb);
      if (update(g, nb, buf) < 0)
        return -1;
      d = o->nesterov ? ir_add(g, d, ir_mul(g, lit(g, p, o->momentum), nb)) : nb;
    }
    int lr = ir_cast(g, o->lr, g->node[p].dtype);
    if (update(g, ir_sub(g, p, ir_mul(g, lr, d)), p) < 0)
      return -1;
  }
  return 0;
}

/* torch.optim.Adam / AdamW:
 *   t += 1;  AdamW: p *= 1 - lr wd;  Adam: g += wd p
 *   m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2  (amsgrad: vmax = max(vmax, v))
 *   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps) */
int ir_adam(IrGraph *g, const char *prefix, const IrAdam *o, const int *params,
            const int *grads, int n) {
  const char *who = o->decoupled ? "adamw" : "adam";
  if (check(g, who, o->lr, params, grads, n) < 0)
    return -1;
  if (!(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1))
    return ir_fail(g, "%s: betas (%g, %g) must be in [0, 1)", who, o->beta1, o->beta2);
  if (!(o->eps >= 0))
    return ir_fail(g, "%s: eps %g is negative", who, o->eps);
  int next;
  if (step_counter(g, prefix, &next) < 0)
    return -1;
  /* the scalars, in f64 */
  int t = ir_cast(g, next, IR_F64), lr = ir_cast(g, o->lr, IR_F64), one = ir_scalar(g, 1, IR_F64);
  int bc1 = ir_sub(g, one, ir_pow(g, ir_scalar(g, o->beta1, IR_F64), t));
  int bc2 = ir_sub(g, one, ir_pow(g, ir_scalar(g, o->beta2, IR_F64), t));
  int step_size = ir_div(g, lr, bc1), bc2_sqrt = ir_sqrt(g, bc2);
  int decay = ir_sub(g, one, ir_mul(g, lr, ir_scalar(g, o->weight_decay, IR_F64)));
  for (int i = 0; i < n; i++) {
    int p = params[i], d = grads[i];
    IrDtype pt = g->node[p].dtype;
    if (o->maximize)
      d = ir_neg(g, d);
    int p0 = p;
    if (o->weight_decay != 0 && o->decoupled)
      p = ir_mul(g, p, ir_cast(g, decay, pt));
    else if (o->weight_decay != 0)
      d = ir_add(g, d, ir_mul(g, lit(g, p, o->weight_decay), p));
    int m = state_like(g, p0, "exp_avg");
    int v = m < 0 ? -1 : state_like(g, p0, "exp_avg_sq");
    if (v < 0)
      return -1; /* a name taken: the param is in two optimizers */
    int nm = ir_add(g, m, ir_mul(g, lit(g, p0, 1 - o->beta1), ir_sub(g, d, m)));
    int nv = ir_add(g, ir_mul(g, lit(g, p0, o->beta2), v),
                    ir_mul(g, lit(g, p0, 1 - o->beta2), ir_mul(g, d, d)));
    if (update(g, nm, m) < 0 || update(g, nv, v) < 0)
      return -1;
    int vhat = nv;
    if (o->amsgrad) {
      int vmax = state_like(g, p0, "max_exp_avg_sq");
      if (vmax < 0)
        return -1;
      vhat = ir_maximum(g, vmax, nv);
      if (update(g, vhat, vmax) < 0)
        return -1;
    }
    int denom = ir_add(g, ir_div(g, ir_sqrt(g, vhat), ir_cast(g, bc2_sqrt, pt)), lit(g, p0, o->eps));
    int np = ir_sub(g, p, ir_div(g, ir_mul(g, ir_cast(g, step_size, pt), nm), denom));
    if (update(g, np, p0) < 0)
      return -1;
  }
  return 0;
}

IrRmsprop ir_rmsprop_defaults(int lr) { return (IrRmsprop){.lr = lr, .alpha = 0.99, .eps = 1e-8}; }

/* torch.optim.RMSprop:
 *   g (+= wd p);  sq = alpha sq + (1 - alpha) g^2
 *   avg = sqrt(sq) (centered: sqrt(sq - ga^2) with ga = lerp(ga, g, 1 - alpha)) + eps
 *   momentum: buf = momentum buf + g / avg, p -= lr buf;  else p -= lr g / avg */
int ir_rmsprop(IrGraph *g, const IrRmsprop *o, const int *params, const int *grads, int n) {
  if (check(g, "rmsprop", o->lr, params, grads, n) < 0)
    return -1;
  if (!(o->alpha >= 0 && o->alpha <= 1) || !(o->eps >= 0) || !(o->momentum >= 0))
    return ir_fail(g, "rmsprop: alpha %g must be in [0, 1], eps %g and momentum %g >= 0", o->alpha, o->eps,
                   o->momentum);
  for (int i = 0; i < n; i++) {
    int p = params[i], d = grads[i];
    if (o->maximize)
      d = ir_neg(g, d);
    if (o->weight_decay != 0)
      d = ir_add(g, d, ir_mul(g, lit(g, p, o->weight_decay), p));
    int sq = state_like(g, p, "square_avg");
    if (sq < 0)
      return -1;
    int nsq = ir_add(g, ir_mul(g, lit(g, p, o->alpha), sq), ir_mul(g, lit(g, p, 1 - o->alpha), ir_mul(g, d, d)));
    if (update(g, nsq, sq) < 0)
      return -1;
    int var = nsq;
    if (o->centered) {
      int ga = state_like(g, p, "grad_avg");
      if (ga < 0)
        return -1;
      int nga = ir_add(g, ga, ir_mul(g, lit(g, p, 1 - o->alpha), ir_sub(g, d, ga)));
      if (update(g, nga, ga) < 0)
        return -1;
      var = ir_sub(g, nsq, ir_mul(g, nga, nga));
    }
    int avg = ir_add(g, ir_sqrt(g, var), lit(g, p, o->eps));
    int step = ir_div(g, d, avg);
    if (o->momentum > 0) {
      int buf = state_like(g, p, "momentum_buffer");
      if (buf < 0)
        return -1;
      step = ir_add(g, ir_mul(g, lit(g, p, o->momentum), buf), step);
      if (update(g, step, buf) < 0)
        return -1;
    }
    if (update(g, ir_sub(g, p, ir_mul(g, ir_cast(g, o->lr, g->node[p].dtype), step)), p) < 0)
      return -1;
  }
  return 0;
}
