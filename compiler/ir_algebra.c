/* ir_algebra.c — algebraic identities: x+0, x-0, x*1, x/1, x^1 -> x; 0-x -> neg x; x^2 -> x*x;
 * neg(neg x), detach(detach x) -> the inner value; reshape of reshape, permute of permute
 * compose; no-op reshape / permute / broadcast / cast / slice / pad / concat / reduction
 * vanish; where(c, x, x) -> x.
 *
 * A rewrite either redirects the node's uses to an existing value of the same type, or
 * changes the node in place into a cheaper op on earlier operands (ids stay topological).
 * x*0 -> 0 is not done: it is wrong for NaN and infinity. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

static bool fill(const IrGraph *g, int v, double x) {
  const IrNode *n = &g->node[v];
  return n->op == IR_CONST && !n->data && n->a.value == x;
}

/* v can replace node n: the same dtype and shape */
static bool fits(const IrGraph *g, const IrNode *n, int v) {
  return g->node[v].dtype == n->dtype && ir_shape_eq(g->node[v].shape, n->shape);
}

static void become(IrNode *n, IrOp op, int a, int b) {
  n->op = op;
  n->in[0] = a;
  if (b >= 0)
    n->in[1] = b;
  n->nin = b >= 0 ? 2 : 1;
}

/* Returns the value node i is equal to, or i (possibly rewritten in place). */
static int simplify(IrGraph *g, int i, int *changed) {
  IrNode *n = &g->node[i];
  int a = n->nin > 0 ? n->in[0] : -1, b = n->nin > 1 ? n->in[1] : -1;
  const IrNode *x = a >= 0 ? &g->node[a] : NULL;
  switch (n->op) {
  case IR_ADD:
    if (fill(g, b, 0) && fits(g, n, a))
      return a;
    if (fill(g, a, 0) && fits(g, n, b))
      return b;
    break;
  case IR_SUB:
    if (fill(g, b, 0) && fits(g, n, a))
      return a;
    if (fill(g, a, 0) && fits(g, n, b)) {
      become(n, IR_NEG, b, -1);
      ++*changed;
    }
    break;
  case IR_MUL:
    if (fill(g, b, 1) && fits(g, n, a))
      return a;
    if (fill(g, a, 1) && fits(g, n, b))
      return b;
    break;
  case IR_DIV:
    if (fill(g, b, 1) && fits(g, n, a))
      return a;
    break;
  case IR_POW:
    if (fill(g, b, 1) && fits(g, n, a))
      return a;
    if (fill(g, b, 2) && fits(g, n, a)) {
      become(n, IR_MUL, a, a);
      ++*changed;
    }
    break;
  case IR_NEG:
    if (x->op == IR_NEG)
      return x->in[0];
    break;
  case IR_DETACH:
    if (x->op == IR_DETACH)
      return a;
    break;
  case IR_CAST:
  case IR_BROADCAST:
    if (fits(g, n, a))
      return a;
    break;
  case IR_RESHAPE:
    if (fits(g, n, a))
      return a;
    if (x->op == IR_RESHAPE) {
      n->in[0] = x->in[0];
      ++*changed;
      if (fits(g, n, n->in[0]))
        return n->in[0];
    }
    break;
  case IR_PERMUTE: {
    if (x->op == IR_PERMUTE) { /* permute(permute(v, p1), p2) = permute(v, p1[p2[i]]) */
      int p[IR_MAX_RANK];
      for (int k = 0; k < n->a.naxes; k++)
        p[k] = x->a.axes[n->a.axes[k]];
      memcpy(n->a.axes, p, sizeof p);
      n->in[0] = x->in[0];
      ++*changed;
    }
    bool identity = true;
    for (int k = 0; k < n->a.naxes; k++)
      identity &= n->a.axes[k] == k;
    if (identity)
      return n->in[0];
    break;
  }
  case IR_SLICE:
  case IR_PAD:
  case IR_CONCAT:
    if (n->nin == 1 && fits(g, n, a))
      return a; /* same shape: took, added or joined nothing */
    break;
  case IR_SUM:
  case IR_MEAN:
  case IR_MAX:
  case IR_LOGSUMEXP:
    /* reducing only axes of size 1: the values are unchanged */
    if (ir_numel(n->shape) == ir_numel(x->shape) && n->dtype == x->dtype) {
      if (fits(g, n, a))
        return a;
      IrAttr at;
      memset(&at, 0, sizeof at);
      at.shape = n->shape;
      n->a = at;
      become(n, IR_RESHAPE, a, -1);
      ++*changed;
    }
    break;
  case IR_WHERE:
    if (n->in[1] == n->in[2] && fits(g, n, n->in[1]))
      return n->in[1];
    break;
  default: break;
  }
  return i;
}

int ir_algebra(IrGraph *g) {
  int changed = 0;
  int *repl = malloc((size_t)(g->n ? g->n : 1) * sizeof *repl);
  if (!repl)
    return 0;
  for (int i = 0; i < g->n; i++) {
    IrNode *n = &g->node[i];
    for (int k = 0; k < n->nin; k++)
      n->in[k] = repl[n->in[k]];
    repl[i] = simplify(g, i, &changed);
    if (repl[i] != i)
      changed++;
  }
  ir_redirect(g, repl);
  free(repl);
  return changed;
}
