/* ir_cse.c — common-subexpression elimination: two nodes with the same op, operands,
 * attributes and type compute the same value (every op is a pure function: even the random
 * ops are, of their seed and step), so later ones are redirected to the first.  Operands
 * are canonicalised first, so chains of duplicates merge in one forward sweep. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ULL; }

static uint64_t hash(const IrNode *n) {
  uint64_t h = 0xcbf29ce484222325ULL, bits;
  h = mix(mix(h, n->op), n->dtype);
  for (int i = 0; i < n->shape.rank; i++)
    h = mix(h, (uint64_t)n->shape.d[i]);
  for (int i = 0; i < n->nin; i++)
    h = mix(h, (uint64_t)n->in[i]);
  memcpy(&bits, &n->a.value, sizeof bits);
  return mix(mix(h, bits), (uint64_t)n->a.axis);
}

static bool same(const IrNode *a, const IrNode *b) {
  if (a->op != b->op || a->dtype != b->dtype || !ir_shape_eq(a->shape, b->shape) ||
      a->nin != b->nin || !ir_attr_eq(&a->a, &b->a))
    return false;
  for (int i = 0; i < a->nin; i++)
    if (a->in[i] != b->in[i])
      return false;
  if (a->data || b->data)
    return a->data && b->data &&
           memcmp(a->data, b->data, (size_t)ir_numel(a->shape) * sizeof *a->data) == 0;
  return true;
}

int ir_cse(IrGraph *g) {
  int n = g->n, changed = 0;
  size_t cap = 16;
  while (cap < 2 * (size_t)n)
    cap *= 2;
  int *table = malloc(cap * sizeof *table), *repl = malloc((size_t)(n ? n : 1) * sizeof *repl);
  if (!table || !repl) {
    free(table);
    free(repl);
    return 0;
  }
  memset(table, -1, cap * sizeof *table);
  for (int i = 0; i < n; i++) {
    IrNode *x = &g->node[i];
    repl[i] = i;
    for (int k = 0; k < x->nin; k++)
      x->in[k] = repl[x->in[k]];
    if (x->op == IR_INPUT)
      continue; /* distinct inputs are distinct values */
    size_t h = (size_t)hash(x) & (cap - 1);
    for (; table[h] >= 0; h = (h + 1) & (cap - 1))
      if (same(&g->node[table[h]], x))
        break;
    if (table[h] >= 0) {
      repl[i] = table[h];
      changed++;
    } else {
      table[h] = i;
    }
  }
  ir_redirect(g, repl);
  free(table);
  free(repl);
  return changed;
}
