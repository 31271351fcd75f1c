/* ir_fold.c — constant folding: a node whose operands are all constants is evaluated now, by
 * the reference interpreter's kernel for it, and becomes a constant in place.  A result whose
 * elements are all equal becomes a fill (no data); others keep their values when small.
 * Folding computes with each op rounded to its dtype, as an f32 run does: a folded graph runs
 * bit-identically to the unfolded one (the f64 interpreter then sees the rounded constants). */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

enum { FOLD_MAX = 1 << 16 }; /* largest tensor folded (elements): keep graphs small */

/* the values of constant c, expanded and rounded to its dtype as a run would */
static double *values(const IrNode *c) {
  int64_t n = ir_numel(c->shape);
  double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  for (int64_t i = 0; v && i < n; i++)
    v[i] = ir_round(c->dtype, c->data ? c->data[i] : c->a.value);
  return v;
}

/* all_reduce talks to the other ranks: it runs in the step, never at compile time */
static bool foldable(const IrGraph *g, const IrNode *x) {
  if (x->op == IR_INPUT || x->op == IR_CONST || x->op == IR_ALLREDUCE || ir_numel(x->shape) > FOLD_MAX)
    return false;
  for (int k = 0; k < x->nin; k++) {
    const IrNode *in = &g->node[x->in[k]];
    if (in->op != IR_CONST || ir_numel(in->shape) > FOLD_MAX)
      return false;
  }
  return true;
}

static bool fold(IrGraph *g, int i) {
  IrNode *x = &g->node[i];
  int64_t n = ir_numel(x->shape);
  const double **in = calloc((size_t)x->nin + 1, sizeof *in);
  double *out = malloc((size_t)(n ? n : 1) * sizeof *out);
  bool ok = in && out;
  for (int k = 0; ok && k < x->nin; k++)
    ok = (in[k] = values(&g->node[x->in[k]])) != NULL;
  /* a kernel that fails (an index out of range) is left for run time to report */
  ok = ok && interp_node(g, i, (const double *const *)in, out, false) == 0;
  if (ok) {
    bool uniform = true;
    for (int64_t j = 1; j < n && uniform; j++)
      uniform = memcmp(&out[j], &out[0], sizeof *out) == 0;
    IrAttr a;
    memset(&a, 0, sizeof a);
    a.dtype = x->dtype;
    a.shape = x->shape;
    a.value = n ? out[0] : 0;
    x->op = IR_CONST;
    x->nin = 0;
    x->a = a;
    x->data = NULL;
    if (!uniform) {
      double *d = ir_alloc(g, (size_t)n * sizeof *d);
      memcpy(d, out, (size_t)n * sizeof *d);
      g->node[i].data = d;
    }
  }
  if (in) /* NULL-terminated: calloc'd one longer than the operand count */
    for (int k = 0; in[k]; k++)
      free((void *)in[k]);
  free(in);
  free(out);
  return ok;
}

int ir_fold(IrGraph *g) {
  int changed = 0;
  for (int i = 0; i < g->n; i++)
    if (foldable(g, &g->node[i]))
      changed += fold(g, i);
  return changed;
}
