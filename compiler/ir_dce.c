/* ir_dce.c — dead-code elimination: keep what the outputs need (and every graph input, which
 * is part of the flat-state layout), drop the rest, renumber.
 *
 * Outputs are the roots, so a graph without outputs keeps only its inputs. */
#include "ir.h"

#include <stdlib.h>

int ir_dce(IrGraph *g, int *map) {
  int n = g->n;
  bool *live = calloc((size_t)(n ? n : 1), sizeof *live);
  int *newid = calloc((size_t)(n ? n : 1), sizeof *newid);
  if (!live || !newid) {
    free(live);
    free(newid);
    return 0;
  }
  for (int i = 0; i < g->nout; i++) {
    live[g->out[i].value] = true;
    if (g->out[i].target >= 0)
      live[g->out[i].target] = true;
  }
  /* users come after their operands: one backward sweep marks everything needed */
  for (int i = n - 1; i >= 0; i--) {
    if (g->node[i].op == IR_INPUT)
      live[i] = true;
    if (live[i])
      for (int k = 0; k < g->node[i].nin; k++)
        live[g->node[i].in[k]] = true;
  }
  int m = 0;
  for (int i = 0; i < n; i++) {
    newid[i] = live[i] ? m : -1;
    if (!live[i])
      continue;
    IrNode node = g->node[i];
    for (int k = 0; k < node.nin; k++)
      node.in[k] = newid[node.in[k]];
    g->node[m++] = node;
  }
  for (int i = 0; i < g->nout; i++) {
    g->out[i].value = newid[g->out[i].value];
    if (g->out[i].target >= 0)
      g->out[i].target = newid[g->out[i].target];
  }
  g->n = m;
  if (map)
    for (int i = 0; i < n; i++)
      map[i] = newid[i];
  free(live);
  free(newid);
  return n - m;
}
