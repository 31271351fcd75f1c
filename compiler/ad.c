/* ad.c — reverse-mode automatic differentiation, producing the backward graph in the same IR.
 *
 * Node ids are a topological order, so one walk from the output down to node 0 visits every
 * node after all of its users: when a node is reached its gradient is complete, and its
 * derivative rule (the table's d_* column) appends the vector-Jacobian product for each
 * operand.  ad_acc sums gradients at fan-out and undoes broadcasting (sums over the axes an
 * operand was broadcast along).  Rules are written with the ordinary builders, so the
 * backward pass is just more graph: it is simplified, fused and compiled like the forward.
 *
 * Gradients flow only into values that depend on a wrt value through floating-point values;
 * integers, comparisons and stop_gradient cut the flow. */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  IrGraph *g;
  int n0;    /* nodes before autodiff: the ones that can receive gradients */
  int *grad; /* accumulated gradient of each node, -1 while none */
  bool *req; /* the node depends on a wrt value */
  bool failed;
} Ad;

/* A rule gets a copy of the node (builders may move the node array), the node's id y and
 * its gradient gy. */
typedef void Rule(Ad *c, const IrNode *n, int y, int gy);

#define G (c->g)

static IrDtype dt(Ad *c, int v) { return G->node[v].dtype; }
static IrShape shp(Ad *c, int v) { return G->node[v].shape; }
static int lit(Ad *c, int like, double v) { return ir_scalar(G, v, dt(c, like)); }
static bool need(Ad *c, const IrNode *n, int i) { return c->req[n->in[i]]; }

static IrAttr attr_of(const IrNode *n) { return n->a; }

/* gval has the shape of a value x was broadcast into; sum it back to x's shape. */
static int unbroadcast(Ad *c, int x, int gval) {
  if (gval < 0)
    return -1;
  IrShape xs = shp(c, x), gs = shp(c, gval);
  if (ir_shape_eq(xs, gs))
    return gval;
  int axes[IR_MAX_RANK], naxes = 0, lead = gs.rank - xs.rank;
  for (int i = 0; i < gs.rank; i++)
    if (i < lead || (xs.d[i - lead] == 1 && gs.d[i] != 1))
      axes[naxes++] = i;
  int s = naxes ? ir_sum(G, gval, axes, naxes, true) : gval;
  return ir_reshape(G, s, xs);
}

/* Adds gval to the gradient of operand i of n. */
static void acc(Ad *c, const IrNode *n, int i, int gval) {
  int x = n->in[i];
  if (!c->req[x])
    return;
  gval = unbroadcast(c, x, gval);
  if (gval >= 0 && dt(c, gval) != dt(c, x))
    gval = ir_cast(G, gval, dt(c, x));
  if (gval < 0) {
    c->failed = true;
    return;
  }
  c->grad[x] = c->grad[x] < 0 ? gval : ir_add(G, c->grad[x], gval);
  if (c->grad[x] < 0)
    c->failed = true;
}

/* ---- derivative rules, in the op table's order ---- */

static void d_none(Ad *c, const IrNode *n, int y, int gy) {
  (void)gy;
  ir_fail(G, "autodiff: %s (%%%d) has no derivative", ir_op_name(n->op), y);
  c->failed = true;
}

static void d_zero(Ad *c, const IrNode *n, int y, int gy) { (void)c, (void)n, (void)y, (void)gy; }

static void d_neg(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, ir_neg(G, gy));
}

static void d_abs(Ad *c, const IrNode *n, int y, int gy) {
  (void)y; /* sign(0) = 0, as PyTorch */
  acc(c, n, 0, ir_mul(G, gy, ir_sign(G, n->in[0])));
}

static void d_exp(Ad *c, const IrNode *n, int y, int gy) { acc(c, n, 0, ir_mul(G, gy, y)); }

static void d_log(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, ir_div(G, gy, n->in[0]));
}

static void d_sqrt(Ad *c, const IrNode *n, int y, int gy) {
  acc(c, n, 0, ir_div(G, gy, ir_mul(G, lit(c, y, 2), y)));
}

static void d_rsqrt(Ad *c, const IrNode *n, int y, int gy) { /* d x^-1/2 = -1/2 y^3 */
  int y3 = ir_mul(G, y, ir_mul(G, y, y));
  acc(c, n, 0, ir_mul(G, gy, ir_mul(G, lit(c, y, -0.5), y3)));
}

static void d_tanh(Ad *c, const IrNode *n, int y, int gy) {
  acc(c, n, 0, ir_mul(G, gy, ir_sub(G, lit(c, y, 1), ir_mul(G, y, y))));
}

static void d_sigmoid(Ad *c, const IrNode *n, int y, int gy) {
  acc(c, n, 0, ir_mul(G, gy, ir_mul(G, y, ir_sub(G, lit(c, y, 1), y))));
}

static void d_erf(Ad *c, const IrNode *n, int y, int gy) { /* 2/sqrt(pi) exp(-x^2) */
  int x = n->in[0];
  int e = ir_exp(G, ir_neg(G, ir_mul(G, x, x)));
  acc(c, n, 0, ir_mul(G, gy, ir_mul(G, lit(c, y, 1.1283791670955126), e)));
}

static void d_relu(Ad *c, const IrNode *n, int y, int gy) {
  int x = n->in[0];
  acc(c, n, 0, ir_where(G, ir_gt(G, x, lit(c, x, 0)), gy, lit(c, y, 0)));
}

static void d_gelu(Ad *c, const IrNode *n, int y, int gy) { /* Phi(x) + x phi(x) */
  int x = n->in[0];
  int cdf = ir_mul(G, lit(c, x, 0.5),
                   ir_add(G, lit(c, x, 1), ir_erf(G, ir_mul(G, x, lit(c, x, 0.70710678118654752)))));
  int pdf = ir_mul(G, lit(c, x, 0.3989422804014327), /* 1/sqrt(2 pi) */
                   ir_exp(G, ir_mul(G, lit(c, x, -0.5), ir_mul(G, x, x))));
  (void)y;
  acc(c, n, 0, ir_mul(G, gy, ir_add(G, cdf, ir_mul(G, x, pdf))));
}

static void d_leaky_relu(Ad *c, const IrNode *n, int y, int gy) {
  int x = n->in[0];
  (void)y;
  acc(c, n, 0, ir_where(G, ir_gt(G, x, lit(c, x, 0)), gy, ir_mul(G, gy, lit(c, gy, n->a.value))));
}

static void d_cast(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, gy); /* acc casts back to the operand's dtype */
}

static void d_add(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, gy);
  acc(c, n, 1, gy);
}

static void d_sub(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, gy);
  if (need(c, n, 1))
    acc(c, n, 1, ir_neg(G, gy));
}

static void d_mul(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  if (need(c, n, 0))
    acc(c, n, 0, ir_mul(G, gy, n->in[1]));
  if (need(c, n, 1))
    acc(c, n, 1, ir_mul(G, gy, n->in[0]));
}

static void d_div(Ad *c, const IrNode *n, int y, int gy) { /* d(a/b)/db = -y/b */
  if (need(c, n, 0))
    acc(c, n, 0, ir_div(G, gy, n->in[1]));
  if (need(c, n, 1))
    acc(c, n, 1, ir_neg(G, ir_div(G, ir_mul(G, gy, y), n->in[1])));
}

static void d_pow(Ad *c, const IrNode *n, int y, int gy) {
  int a = n->in[0], b = n->in[1], zero = lit(c, y, 0);
  if (need(c, n, 0)) { /* b a^(b-1), and 0 where b == 0 (PyTorch) */
    int d = ir_mul(G, b, ir_pow(G, a, ir_sub(G, b, lit(c, b, 1))));
    acc(c, n, 0, ir_where(G, ir_eq(G, b, lit(c, b, 0)), zero, ir_mul(G, gy, d)));
  }
  if (need(c, n, 1)) { /* y log a, and 0 where a == 0 and b >= 0 (PyTorch) */
    int d = ir_mul(G, gy, ir_mul(G, y, ir_log(G, a)));
    int mask = ir_where(G, ir_ge(G, b, lit(c, b, 0)), zero, d);
    acc(c, n, 1, ir_where(G, ir_eq(G, a, lit(c, a, 0)), mask, d));
  }
}

/* maximum / minimum: the winner gets the gradient, a tie splits it (PyTorch) */
static void minmax(Ad *c, const IrNode *n, int y, int gy, bool max) {
  int a = n->in[0], b = n->in[1], zero = lit(c, y, 0);
  int half = ir_mul(G, gy, lit(c, y, 0.5)), tie = ir_eq(G, a, b);
  if (need(c, n, 0))
    acc(c, n, 0, ir_where(G, max ? ir_gt(G, a, b) : ir_lt(G, a, b), gy, ir_where(G, tie, half, zero)));
  if (need(c, n, 1))
    acc(c, n, 1, ir_where(G, max ? ir_lt(G, a, b) : ir_gt(G, a, b), gy, ir_where(G, tie, half, zero)));
}

static void d_maximum(Ad *c, const IrNode *n, int y, int gy) { minmax(c, n, y, gy, true); }
static void d_minimum(Ad *c, const IrNode *n, int y, int gy) { minmax(c, n, y, gy, false); }

static void d_where(Ad *c, const IrNode *n, int y, int gy) {
  int zero = lit(c, y, 0);
  if (need(c, n, 1))
    acc(c, n, 1, ir_where(G, n->in[0], gy, zero));
  if (need(c, n, 2))
    acc(c, n, 2, ir_where(G, n->in[0], zero, gy));
}

/* A reduction's result (or gradient) v, broadcast back to the operand's shape. */
static int expand(Ad *c, const IrNode *n, int v) {
  IrShape xs = shp(c, n->in[0]), ks = xs;
  for (int i = 0; i < n->a.naxes; i++)
    ks.d[n->a.axes[i]] = 1;
  return ir_broadcast_to(G, ir_reshape(G, v, ks), xs);
}

static double reduced_count(Ad *c, const IrNode *n) {
  IrShape xs = shp(c, n->in[0]);
  double k = 1;
  for (int i = 0; i < n->a.naxes; i++)
    k *= (double)xs.d[n->a.axes[i]];
  return k;
}

static void d_sum(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, expand(c, n, gy));
}

static void d_mean(Ad *c, const IrNode *n, int y, int gy) {
  acc(c, n, 0, ir_div(G, expand(c, n, gy), lit(c, y, reduced_count(c, n))));
}

static void d_max(Ad *c, const IrNode *n, int y, int gy) { /* ties share the gradient evenly */
  int x = n->in[0];
  int mask = ir_cast(G, ir_eq(G, x, expand(c, n, y)), dt(c, y));
  int count = ir_sum(G, mask, n->a.axes, n->a.naxes, true);
  acc(c, n, 0, ir_mul(G, expand(c, n, gy), ir_div(G, mask, ir_broadcast_to(G, count, shp(c, x)))));
}

static void d_logsumexp(Ad *c, const IrNode *n, int y, int gy) { /* softmax over the axes */
  int x = n->in[0];
  acc(c, n, 0, ir_mul(G, expand(c, n, gy), ir_exp(G, ir_sub(G, x, expand(c, n, y)))));
}

static void d_matmul(Ad *c, const IrNode *n, int y, int gy) {
  (void)y; /* batch dimensions that were broadcast are summed by acc */
  int a = n->in[0], b = n->in[1];
  if (need(c, n, 0))
    acc(c, n, 0, ir_matmul(G, gy, ir_transpose(G, b, -1, -2)));
  if (need(c, n, 1))
    acc(c, n, 1, ir_matmul(G, ir_transpose(G, a, -1, -2), gy));
}

static void d_reshape(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, ir_reshape(G, gy, shp(c, n->in[0])));
}

static void d_permute(Ad *c, const IrNode *n, int y, int gy) {
  int inv[IR_MAX_RANK];
  (void)y;
  for (int i = 0; i < n->a.naxes; i++)
    inv[n->a.axes[i]] = i;
  acc(c, n, 0, ir_permute(G, gy, inv));
}

static void d_broadcast(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, gy); /* acc sums over the broadcast axes */
}

static void d_slice(Ad *c, const IrNode *n, int y, int gy) {
  IrAttr a = attr_of(n);
  (void)y;
  a.shape = shp(c, n->in[0]);
  acc(c, n, 0, ir_make(G, IR_SLICE_SCATTER, &gy, 1, &a));
}

static void d_slice_scatter(Ad *c, const IrNode *n, int y, int gy) {
  IrAttr a = attr_of(n);
  (void)y;
  acc(c, n, 0, ir_make(G, IR_SLICE, &gy, 1, &a));
}

static void d_concat(Ad *c, const IrNode *n, int y, int gy) {
  int64_t at = 0;
  (void)y;
  for (int i = 0; i < n->nin; i++) {
    int64_t len = shp(c, n->in[i]).d[n->a.axis];
    if (need(c, n, i))
      acc(c, n, i, ir_slice(G, gy, n->a.axis, at, at + len, 1));
    at += len;
  }
}

static void d_pad(Ad *c, const IrNode *n, int y, int gy) {
  IrShape xs = shp(c, n->in[0]);
  IrAttr a;
  (void)y;
  memset(&a, 0, sizeof a);
  for (int i = 0; i < xs.rank; i++) {
    a.start[i] = n->a.lo[i];
    a.stop[i] = n->a.lo[i] + xs.d[i];
    a.step[i] = 1;
  }
  acc(c, n, 0, ir_make(G, IR_SLICE, &gy, 1, &a));
}

static void d_conv2d(Ad *c, const IrNode *n, int y, int gy) {
  int x = n->in[0], w = n->in[1];
  IrAttr a = attr_of(n);
  (void)y;
  if (need(c, n, 0)) {
    a.shape = shp(c, x);
    acc(c, n, 0, ir_make(G, IR_CONV2D_BWD_DATA, (int[]){gy, w}, 2, &a));
  }
  if (need(c, n, 1)) {
    a.shape = shp(c, w);
    acc(c, n, 1, ir_make(G, IR_CONV2D_BWD_FILTER, (int[]){x, gy}, 2, &a));
  }
}

static void d_max_pool2d(Ad *c, const IrNode *n, int y, int gy) {
  IrAttr a = attr_of(n);
  (void)y;
  acc(c, n, 0, ir_make(G, IR_MAX_POOL2D_BWD, (int[]){n->in[0], gy}, 2, &a));
}

static void d_avg_pool2d(Ad *c, const IrNode *n, int y, int gy) {
  IrAttr a = attr_of(n);
  (void)y;
  a.shape = shp(c, n->in[0]);
  acc(c, n, 0, ir_make(G, IR_AVG_POOL2D_BWD, &gy, 1, &a));
}

static void d_avg_pool2d_bwd(Ad *c, const IrNode *n, int y, int gy) { /* linear: its transpose */
  IrAttr a = attr_of(n);
  (void)y;
  acc(c, n, 0, ir_make(G, IR_AVG_POOL2D, &gy, 1, &a));
}

static void d_softmax(Ad *c, const IrNode *n, int y, int gy) { /* y (gy - sum(gy y)) */
  int ax = n->a.axis;
  int s = ir_sum(G, ir_mul(G, gy, y), &ax, 1, true);
  acc(c, n, 0, ir_mul(G, y, ir_sub(G, gy, s)));
}

static void d_log_softmax(Ad *c, const IrNode *n, int y, int gy) { /* gy - exp(y) sum(gy) */
  int ax = n->a.axis;
  int s = ir_sum(G, gy, &ax, 1, true);
  acc(c, n, 0, ir_sub(G, gy, ir_mul(G, ir_exp(G, y), s)));
}

/* one_hot(target) laid out like the input [N, C, d...] (one_hot puts classes last) */
static int one_hot_like(Ad *c, int x, int t) {
  IrShape xs = shp(c, x);
  int oh = ir_one_hot(G, t, xs.d[1], dt(c, x));
  int perm[IR_MAX_RANK] = {0, xs.rank - 1};
  for (int i = 2; i < xs.rank; i++)
    perm[i] = i - 1;
  return xs.rank > 2 ? ir_permute(G, oh, perm) : oh;
}

static double targets(Ad *c, int x) { return (double)ir_numel(shp(c, x)) / (double)shp(c, x).d[1]; }

static void d_cross_entropy(Ad *c, const IrNode *n, int y, int gy) {
  /* (softmax(x) - q) gy / count, q = (1 - eps) one_hot + eps / C */
  int x = n->in[0];
  double eps = n->a.value, C = (double)shp(c, x).d[1];
  int q = ir_add(G, ir_mul(G, one_hot_like(c, x, n->in[1]), lit(c, x, 1 - eps)), lit(c, x, eps / C));
  int scale = ir_div(G, gy, lit(c, y, targets(c, x)));
  acc(c, n, 0, ir_mul(G, ir_sub(G, ir_softmax(G, x, 1), q), scale));
}

static void d_nll_loss(Ad *c, const IrNode *n, int y, int gy) {
  int x = n->in[0];
  int scale = ir_div(G, ir_neg(G, gy), lit(c, y, targets(c, x)));
  acc(c, n, 0, ir_mul(G, one_hot_like(c, x, n->in[1]), scale));
}

static void d_mse_loss(Ad *c, const IrNode *n, int y, int gy) {
  int a = n->in[0], b = n->in[1];
  int scale = ir_div(G, ir_mul(G, gy, lit(c, y, 2)), lit(c, y, (double)ir_numel(shp(c, a))));
  int d = ir_mul(G, ir_sub(G, a, b), scale);
  acc(c, n, 0, d);
  if (need(c, n, 1))
    acc(c, n, 1, ir_neg(G, d));
}

static void d_bce_with_logits(Ad *c, const IrNode *n, int y, int gy) {
  int x = n->in[0], t = n->in[1];
  int scale = ir_div(G, gy, lit(c, y, (double)ir_numel(shp(c, x))));
  if (need(c, n, 0))
    acc(c, n, 0, ir_mul(G, ir_sub(G, ir_sigmoid(G, x), t), scale));
  if (need(c, n, 1))
    acc(c, n, 1, ir_mul(G, ir_neg(G, x), scale));
}

static void d_take(Ad *c, const IrNode *n, int y, int gy) {
  IrAttr a = attr_of(n);
  (void)y;
  a.shape = shp(c, n->in[0]);
  acc(c, n, 0, ir_make(G, IR_TAKE_GRAD, (int[]){gy, n->in[1]}, 2, &a));
}

static void d_take_grad(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, ir_take(G, gy, n->in[1], n->a.axis));
}

static void d_gather(Ad *c, const IrNode *n, int y, int gy) {
  IrAttr a = attr_of(n);
  (void)y;
  a.shape = shp(c, n->in[0]);
  acc(c, n, 0, ir_make(G, IR_SCATTER_ADD, (int[]){gy, n->in[1]}, 2, &a));
}

static void d_scatter_add(Ad *c, const IrNode *n, int y, int gy) {
  (void)y;
  acc(c, n, 0, ir_gather(G, gy, n->a.axis, n->in[1]));
}

static void d_dropout(Ad *c, const IrNode *n, int y, int gy) {
  /* linear in x: the same mask (same seed, step and element index) applied to gy */
  IrAttr a = attr_of(n);
  (void)y;
  acc(c, n, 0, ir_make(G, IR_DROPOUT, (int[]){gy, n->in[1]}, 2, &a));
}

static Rule *const rules[] = {
#define OP(id, name, arity, shape, deriv, kernel) deriv,
#include "ir_ops.def"
#undef OP
};

/* ---- the driver ---- */

int ad_vjp(IrGraph *g, int out, int cotangent, const int *wrt, int n, int *grads) {
  if (out < 0 || cotangent < 0)
    return -1;
  for (int i = 0; i < n; i++) {
    if (wrt[i] < 0 || wrt[i] >= g->n)
      return ir_fail(g, "autodiff: no value %%%d", wrt[i]);
    if (!ir_dtype_is_float(g->node[wrt[i]].dtype)) {
      char b[128];
      const IrNode *w = &g->node[wrt[i]];
      return ir_fail(g, "autodiff: cannot differentiate with respect to %s %s, not floating-point",
                     w->name ? w->name : "a value", ir_shape_str(w->dtype, w->shape, b, sizeof b));
    }
  }
  if (!ir_shape_eq(g->node[out].shape, g->node[cotangent].shape))
    return ir_fail(g, "autodiff: the cotangent's shape differs from the output's");
  Ad c = {g, g->n, calloc((size_t)g->n, sizeof(int)), calloc((size_t)g->n, sizeof(bool)), false};
  if (!c.grad || !c.req) {
    free(c.grad);
    free(c.req);
    return ir_fail(g, "autodiff: out of memory");
  }
  for (int i = 0; i < c.n0; i++)
    c.grad[i] = -1;
  for (int i = 0; i < n; i++)
    c.req[wrt[i]] = true;
  for (int i = 0; i < c.n0; i++) {
    const IrNode *x = &g->node[i];
    if (c.req[i] || !ir_dtype_is_float(x->dtype) || x->op == IR_DETACH)
      continue;
    for (int k = 0; k < x->nin && !c.req[i]; k++)
      c.req[i] = c.req[x->in[k]];
  }
  c.grad[out] = ir_dtype_is_float(g->node[out].dtype) && g->node[cotangent].dtype != g->node[out].dtype
                    ? ir_cast(g, cotangent, g->node[out].dtype)
                    : cotangent;
  for (int i = out; i >= 0 && !c.failed; i--) {
    if (c.grad[i] < 0 || !c.req[i])
      continue;
    IrNode copy = g->node[i];
    bool any = false;
    for (int k = 0; k < copy.nin; k++)
      any |= c.req[copy.in[k]];
    if (any) {
      /* stamp the backward nodes with the forward node's source position */
      int line = g->line, col = g->col;
      ir_set_loc(g, copy.line, copy.col);
      rules[copy.op](&c, &copy, i, c.grad[i]);
      ir_set_loc(g, line, col);
    }
  }
  int rc = c.failed ? -1 : 0;
  for (int i = 0; i < n && rc == 0; i++) {
    int w = wrt[i];
    grads[i] = c.grad[w] >= 0 ? c.grad[w] : ir_const(g, 0, g->node[w].dtype, g->node[w].shape);
    if (grads[i] < 0)
      rc = -1;
  }
  if (rc < 0 && !g->err[0])
    ir_fail(g, "autodiff failed");
  free(c.grad);
  free(c.req);
  return rc;
}

int ad_grad(IrGraph *g, int loss, const int *wrt, int n, int *grads) {
  if (loss < 0)
    return -1;
  const IrNode *l = &g->node[loss];
  if (l->shape.rank != 0 || !ir_dtype_is_float(l->dtype)) {
    char b[128];
    return ir_fail(g, "autodiff: the loss must be a floating-point scalar, got %s",
                   ir_shape_str(l->dtype, l->shape, b, sizeof b));
  }
  return ad_vjp(g, loss, ir_scalar(g, 1, l->dtype), wrt, n, grads);
}
