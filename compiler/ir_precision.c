/* ir_precision.c — the trainer's `precision` as rules applied while a graph is built.
 *
 * Mixed modes ("bf16-mixed", "16-mixed") set IrGraph.gemm16: every matmul / convolution
 * built afterwards (the forward ones in lower.c and the backward ones that ad.c builds) reads
 * its f32 operands through cast(cast(x, bf16|f16), f32).  The product of two 16-bit values
 * is exact in f32, so this is a 16-bit GEMM with f32 accumulation, written in ops every
 * backend already has: the interpreter stays the oracle, and a backend may read the 16-bit
 * bytes directly.  Everything else (softmax, norms, losses, the optimizer) stays f32, and
 * the weights and optimizer state stay f32 masters, as torch.autocast.
 *
 * "bf16-true" also sets IrGraph.round16: every f32 result is rounded to bf16, so weights,
 * optimizer state and activations all hold bf16 values (in f32 storage).  "64-true" retypes
 * a finished graph from f32 to f64 (ir_precision_f64).  docs/precision.md has the details. */
#include <string.h>

#include "ir.h"

static bool gemm_op(IrOp op) {
  return op == IR_MATMUL || op == IR_CONV2D || op == IR_CONV2D_BWD_DATA || op == IR_CONV2D_BWD_FILTER;
}

/* x already read through a 16-bit cast: cast(y: t, f32) */
static bool is_rounded(const IrGraph *g, int x, IrDtype t) {
  const IrNode *n = &g->node[x];
  return n->op == IR_CAST && g->node[n->in[0]].dtype == t;
}

int ir_round_through(IrGraph *g, int x, IrDtype t) {
  if (x < 0 || g->node[x].dtype != IR_F32 || is_rounded(g, x, t))
    return x;
  return ir_cast(g, ir_cast(g, x, t), IR_F32);
}

int ir_precision_operands(IrGraph *g, IrOp op, const int *in, int nin, int *out) {
  for (int k = 0; k < nin; k++)
    out[k] = in[k];
  if (!g->gemm16 || !gemm_op(op))
    return 0;
  for (int k = 0; k < nin && k < 2; k++) {
    if (in[k] < 0 || in[k] >= g->n)
      continue; /* ir_make reports it */
    if ((out[k] = ir_round_through(g, in[k], (IrDtype)g->gemm16)) < 0)
      return -1;
  }
  return 0;
}

int ir_precision_result(IrGraph *g, int id) {
  if (id < 0 || !g->round16)
    return id;
  const IrNode *n = &g->node[id];
  if (n->op == IR_CAST || n->op == IR_INPUT || n->op == IR_CONST || n->dtype != IR_F32)
    return id;
  return ir_round_through(g, id, IR_BF16);
}

void ir_precision_f64(IrGraph *g) {
  for (int i = 0; i < g->n; i++) {
    IrNode *n = &g->node[i];
    if (n->dtype == IR_F32)
      n->dtype = IR_F64;
    if (n->a.dtype == IR_F32) /* the dtype attribute of casts, inputs, constants, one_hot, rand_* */
      n->a.dtype = IR_F64;
  }
}

/* ---- "16-mixed": dynamic loss scaling, as torch.cuda.amp.GradScaler ---- */

#define SCALE_INIT 65536.0
#define SCALE_GROWTH 2.0
#define SCALE_BACKOFF 0.5
#define SCALE_INTERVAL 2000.0

static const char *state_name(IrGraph *g, const char *prefix, const char *what) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s.scaler.%s", prefix, what);
  return ir_strdup(g, buf);
}

int ir_scaler_grads(IrGraph *g, const char *prefix, int loss, const int *params, int n, int *grads,
                    IrScaler *s) {
  s->scale_in = ir_input(g, IR_IN_STATE, state_name(g, prefix, "scale"), IR_F32, IR_SCALAR);
  s->tracker_in = ir_input(g, IR_IN_STATE, state_name(g, prefix, "growth_tracker"), IR_F32, IR_SCALAR);
  if (s->scale_in < 0 || s->tracker_in < 0)
    return -1;
  /* optimizer state starts zeroed: a zero scale is the initial one */
  int zero = ir_scalar(g, 0, IR_F32);
  s->scale = ir_where(g, ir_eq(g, s->scale_in, zero), ir_scalar(g, SCALE_INIT, IR_F32), s->scale_in);
  int cot = ir_cast(g, s->scale, g->node[loss].dtype);
  if (ad_vjp(g, loss, cot, params, n, grads) < 0)
    return -1;
  int inv = ir_div(g, ir_scalar(g, 1, IR_F32), s->scale); /* a reciprocal, as GradScaler */
  for (int i = 0; i < n; i++)
    if ((grads[i] = ir_mul(g, grads[i], ir_cast(g, inv, g->node[grads[i]].dtype))) < 0)
      return -1;
  return 0;
}

/* x * 0 is NaN exactly when x is inf or NaN, so one sum tells whether any gradient is. */
int ir_scaler_check(IrGraph *g, IrScaler *s, const int *grads, int n) {
  int probe = -1;
  for (int i = 0; i < n; i++) {
    IrDtype t = g->node[grads[i]].dtype;
    int z = ir_cast(g, ir_sum(g, ir_mul(g, grads[i], ir_scalar(g, 0, t)), NULL, 0, false), IR_F32);
    probe = probe < 0 ? z : ir_add(g, probe, z);
  }
  s->found_inf = ir_ne(g, probe, probe);
  return s->found_inf < 0 ? -1 : 0;
}

int ir_scaler_update(IrGraph *g, const IrScaler *s, int first_out) {
  int last = g->nout;
  for (int o = first_out; o < last; o++) { /* a step with inf/NaN gradients changes nothing */
    if (g->out[o].kind != IR_OUT_UPDATE)
      continue;
    int v = ir_where(g, s->found_inf, g->out[o].target, g->out[o].value);
    if (v < 0)
      return -1;
    g->out[o].value = v;
  }
  int one = ir_scalar(g, 1, IR_F32), zero = ir_scalar(g, 0, IR_F32);
  int next = ir_add(g, s->tracker_in, one), grow = ir_ge(g, next, ir_scalar(g, SCALE_INTERVAL, IR_F32));
  int scale = ir_where(g, s->found_inf, ir_mul(g, s->scale, ir_scalar(g, SCALE_BACKOFF, IR_F32)),
                       ir_where(g, grow, ir_mul(g, s->scale, ir_scalar(g, SCALE_GROWTH, IR_F32)), s->scale));
  int tracker = ir_where(g, s->found_inf, zero, ir_where(g, grow, zero, next));
  if (ir_output(g, scale, IR_OUT_UPDATE, s->scale_in, g->node[s->scale_in].name) < 0 ||
      ir_output(g, tracker, IR_OUT_UPDATE, s->tracker_in, g->node[s->tracker_in].name) < 0)
    return -1;
  return 0;
}

bool ir_precision_begin(IrGraph *g, const char *mode) {
  if (!mode)
    return false;
  if (!strcmp(mode, "bf16-mixed") || !strcmp(mode, "bf16-true"))
    g->gemm16 = IR_BF16;
  else if (!strcmp(mode, "16-mixed"))
    g->gemm16 = IR_F16;
  g->round16 = !strcmp(mode, "bf16-true");
  return !strcmp(mode, "16-mixed");
}

void ir_precision_end(IrGraph *g, const char *mode) {
  g->gemm16 = 0;
  g->round16 = false;
  if (mode && !strcmp(mode, "64-true"))
    ir_precision_f64(g);
}
