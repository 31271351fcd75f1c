/* ir_simplify.c — the simplification pipeline: fold, algebra and CSE until nothing changes
 * (each can expose work for the others), then one dead-code sweep that renumbers. */
#include "ir.h"

int ir_simplify(IrGraph *g, int *map) {
  int total = 0;
  for (int round = 0; round < 16; round++) {
    int c = ir_fold(g);
    c += ir_algebra(g);
    c += ir_cse(g);
    total += c;
    if (c == 0)
      break;
  }
  return total + ir_dce(g, map);
}
