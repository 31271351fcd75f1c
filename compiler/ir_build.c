/* ir_build.c — building nodes: the shape rules of the op table (sh_*), the generic ir_make,
 * and the builders the lowering calls (ir_add, ir_conv2d, ...).
 *
 * A shape rule checks a node's operands and attributes and sets its dtype and shape, or
 * fails with a message that names the shapes involved; ir_make prefixes the op's name.
 * Builders do what is convenient for a caller before that: negative axes, Python slice
 * bounds, dtype promotion (explicit casts), 1-D matmul operands, composite layers. */
#include "ir.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IN(k) (&g->node[n->in[k]])
#define TY(node, buf) ir_shape_str((node)->dtype, (node)->shape, buf, sizeof buf)

static bool is_int(IrDtype t) { return t == IR_I64 || t == IR_I32 || t == IR_U8; }

/* ---- shape rules ---- */

static int sh_leaf(IrGraph *g, IrNode *n) {
  for (int i = 0; i < n->a.shape.rank; i++)
    if (n->a.shape.d[i] < 0)
      return ir_fail(g, "negative dimension %lld", (long long)n->a.shape.d[i]);
  n->dtype = n->a.dtype;
  n->shape = n->a.shape;
  return 0;
}

static int sh_same(IrGraph *g, IrNode *n) {
  char b[128];
  if (IN(0)->dtype == IR_BOOL && n->op != IR_DETACH)
    return ir_fail(g, "needs a numeric operand, got %s", TY(IN(0), b));
  n->dtype = IN(0)->dtype;
  n->shape = IN(0)->shape;
  return 0;
}

static int sh_float(IrGraph *g, IrNode *n) {
  char b[128];
  if (!ir_dtype_is_float(IN(0)->dtype))
    return ir_fail(g, "needs a floating-point operand, got %s", TY(IN(0), b));
  return sh_same(g, n);
}

static int check_axis(IrGraph *g, int axis, IrShape s) {
  if (axis < 0 || axis >= (s.rank ? s.rank : 1))
    return ir_fail(g, "axis %d out of range for rank %d", axis, s.rank);
  return 0;
}

static int sh_same_float(IrGraph *g, IrNode *n) {
  if (check_axis(g, n->a.axis, IN(0)->shape) < 0)
    return -1;
  return sh_float(g, n);
}

static int sh_cast(IrGraph *g, IrNode *n) {
  (void)g;
  n->dtype = n->a.dtype;
  n->shape = IN(0)->shape;
  return 0;
}

/* "[64, 128]" */
static char *dims_str(IrShape s, char *buf, size_t size) {
  ir_shape_str(IR_F32, s, buf, size);
  return buf + 3; /* skip the dtype */
}

/* numpy broadcasting: align on the right; each pair of dims equal or one of them 1 */
static int broadcast(IrGraph *g, IrShape a, IrShape b, IrShape *out) {
  int r = a.rank > b.rank ? a.rank : b.rank;
  out->rank = r;
  for (int i = 0; i < r; i++) {
    int ia = a.rank - r + i, ib = b.rank - r + i;
    int64_t da = ia >= 0 ? a.d[ia] : 1, db = ib >= 0 ? b.d[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      char x[128], y[128];
      return ir_fail(g, "shapes %s and %s do not broadcast (dimension %d: %lld vs %lld)",
                     dims_str(a, x, sizeof x), dims_str(b, y, sizeof y), i, (long long)da,
                     (long long)db);
    }
    out->d[i] = da == 1 ? db : da;
  }
  return 0;
}

static int same_dtype(IrGraph *g, const IrNode *a, const IrNode *b) {
  char x[128], y[128];
  if (a->dtype != b->dtype)
    return ir_fail(g, "operands differ in dtype: %s and %s", TY(a, x), TY(b, y));
  return 0;
}

static int sh_binary(IrGraph *g, IrNode *n) {
  char b[128];
  if (same_dtype(g, IN(0), IN(1)) < 0)
    return -1;
  if (IN(0)->dtype == IR_BOOL)
    return ir_fail(g, "needs numeric operands, got %s", TY(IN(0), b));
  n->dtype = IN(0)->dtype;
  return broadcast(g, IN(0)->shape, IN(1)->shape, &n->shape);
}

static int sh_compare(IrGraph *g, IrNode *n) {
  if (same_dtype(g, IN(0), IN(1)) < 0)
    return -1;
  n->dtype = IR_BOOL;
  return broadcast(g, IN(0)->shape, IN(1)->shape, &n->shape);
}

static int sh_where(IrGraph *g, IrNode *n) {
  char b[128];
  if (IN(0)->dtype != IR_BOOL)
    return ir_fail(g, "condition must be bool, got %s", TY(IN(0), b));
  if (same_dtype(g, IN(1), IN(2)) < 0)
    return -1;
  IrShape s;
  if (broadcast(g, IN(0)->shape, IN(1)->shape, &s) < 0 ||
      broadcast(g, s, IN(2)->shape, &n->shape) < 0)
    return -1;
  n->dtype = IN(1)->dtype;
  return 0;
}

static int sh_reduce(IrGraph *g, IrNode *n) {
  const IrShape *x = &IN(0)->shape;
  char b[128];
  if (n->op != IR_SUM && n->op != IR_MAX && !ir_dtype_is_float(IN(0)->dtype))
    return ir_fail(g, "needs a floating-point operand, got %s", TY(IN(0), b));
  if (IN(0)->dtype == IR_BOOL)
    return ir_fail(g, "needs a numeric operand, got %s", TY(IN(0), b));
  bool red[IR_MAX_RANK] = {0};
  for (int i = 0; i < n->a.naxes; i++) {
    int ax = n->a.axes[i];
    if (ax < 0 || ax >= x->rank || red[ax])
      return ir_fail(g, "bad axis %d for %s", ax, TY(IN(0), b));
    if (n->op == IR_MAX && x->d[ax] == 0)
      return ir_fail(g, "max over the empty axis %d of %s", ax, TY(IN(0), b));
    red[ax] = true;
  }
  n->dtype = IN(0)->dtype;
  n->shape.rank = 0;
  for (int i = 0; i < x->rank; i++)
    if (!red[i])
      n->shape.d[n->shape.rank++] = x->d[i];
    else if (n->a.keepdim)
      n->shape.d[n->shape.rank++] = 1;
  return 0;
}

static int sh_argmax(IrGraph *g, IrNode *n) {
  const IrShape *x = &IN(0)->shape;
  char b[128];
  if (x->rank == 0 || check_axis(g, n->a.axis, *x) < 0)
    return x->rank ? -1 : ir_fail(g, "needs an operand of rank >= 1, got %s", TY(IN(0), b));
  if (x->d[n->a.axis] == 0)
    return ir_fail(g, "over the empty axis %d of %s", n->a.axis, TY(IN(0), b));
  n->dtype = IR_I64;
  n->shape.rank = 0;
  for (int i = 0; i < x->rank; i++)
    if (i != n->a.axis)
      n->shape.d[n->shape.rank++] = x->d[i];
    else if (n->a.keepdim)
      n->shape.d[n->shape.rank++] = 1;
  return 0;
}

static int sh_matmul(IrGraph *g, IrNode *n) {
  const IrNode *a = IN(0), *b = IN(1);
  char x[128], y[128];
  if (a->shape.rank < 2 || b->shape.rank < 2)
    return ir_fail(g, "operands need rank >= 2: %s @ %s", TY(a, x), TY(b, y));
  if (same_dtype(g, a, b) < 0)
    return -1;
  if (a->dtype == IR_BOOL)
    return ir_fail(g, "needs numeric operands, got %s", TY(a, x));
  int ra = a->shape.rank, rb = b->shape.rank;
  int64_t k1 = a->shape.d[ra - 1], k2 = b->shape.d[rb - 2];
  if (k1 != k2)
    return ir_fail(g, "inner dimensions differ: %s @ %s (%lld vs %lld)", TY(a, x), TY(b, y),
                   (long long)k1, (long long)k2);
  IrShape ba = a->shape, bb = b->shape;
  ba.rank -= 2;
  bb.rank -= 2;
  if (broadcast(g, ba, bb, &n->shape) < 0)
    return ir_fail(g, "batch dimensions do not broadcast: %s @ %s", TY(a, x), TY(b, y));
  n->shape.d[n->shape.rank++] = a->shape.d[ra - 2];
  n->shape.d[n->shape.rank++] = b->shape.d[rb - 1];
  n->dtype = a->dtype;
  return 0;
}

static int sh_reshape(IrGraph *g, IrNode *n) {
  char x[128], y[128];
  for (int i = 0; i < n->a.shape.rank; i++)
    if (n->a.shape.d[i] < 0)
      return ir_fail(g, "negative dimension in %s", ir_shape_str(IN(0)->dtype, n->a.shape, y, sizeof y));
  if (ir_numel(n->a.shape) != ir_numel(IN(0)->shape))
    return ir_fail(g, "cannot reshape %s (%lld elements) to %s (%lld elements)", TY(IN(0), x),
                   (long long)ir_numel(IN(0)->shape),
                   ir_shape_str(IN(0)->dtype, n->a.shape, y, sizeof y),
                   (long long)ir_numel(n->a.shape));
  n->dtype = IN(0)->dtype;
  n->shape = n->a.shape;
  return 0;
}

static int sh_permute(IrGraph *g, IrNode *n) {
  const IrShape *x = &IN(0)->shape;
  bool seen[IR_MAX_RANK] = {0};
  char b[128];
  if (n->a.naxes != x->rank)
    return ir_fail(g, "permutation of %d axes for %s", n->a.naxes, TY(IN(0), b));
  for (int i = 0; i < x->rank; i++) {
    int p = n->a.axes[i];
    if (p < 0 || p >= x->rank || seen[p])
      return ir_fail(g, "not a permutation of the axes of %s", TY(IN(0), b));
    seen[p] = true;
    n->shape.d[i] = x->d[p];
  }
  n->shape.rank = x->rank;
  n->dtype = IN(0)->dtype;
  return 0;
}

static int sh_broadcast(IrGraph *g, IrNode *n) {
  IrShape s;
  char x[128], y[128];
  if (broadcast(g, IN(0)->shape, n->a.shape, &s) < 0 || !ir_shape_eq(s, n->a.shape))
    return ir_fail(g, "cannot broadcast %s to %s", TY(IN(0), x),
                   ir_shape_str(IN(0)->dtype, n->a.shape, y, sizeof y));
  n->dtype = IN(0)->dtype;
  n->shape = s;
  return 0;
}

/* The shape a slice with n->a's bounds takes from s. */
static int slice_shape(IrGraph *g, const IrAttr *a, IrShape s, IrShape *out) {
  out->rank = s.rank;
  for (int i = 0; i < s.rank; i++) {
    if (a->step[i] < 1 || a->start[i] < 0 || a->stop[i] > s.d[i] || a->start[i] > s.d[i])
      return ir_fail(g, "bad bounds %lld:%lld:%lld on axis %d of size %lld",
                     (long long)a->start[i], (long long)a->stop[i], (long long)a->step[i], i,
                     (long long)s.d[i]);
    int64_t len = a->stop[i] - a->start[i];
    out->d[i] = len > 0 ? (len + a->step[i] - 1) / a->step[i] : 0;
  }
  return 0;
}

static int sh_slice(IrGraph *g, IrNode *n) {
  n->dtype = IN(0)->dtype;
  return slice_shape(g, &n->a, IN(0)->shape, &n->shape);
}

static int sh_slice_scatter(IrGraph *g, IrNode *n) {
  IrShape s;
  char x[128], y[128];
  if (slice_shape(g, &n->a, n->a.shape, &s) < 0)
    return -1;
  if (!ir_shape_eq(s, IN(0)->shape))
    return ir_fail(g, "source %s does not fit the slice %s", TY(IN(0), x),
                   ir_shape_str(IN(0)->dtype, s, y, sizeof y));
  n->dtype = IN(0)->dtype;
  n->shape = n->a.shape;
  return 0;
}

/* all_reduce: float operands of one dtype, flattened into one vector */
static int sh_allreduce(IrGraph *g, IrNode *n) {
  char x[128];
  n->dtype = IN(0)->dtype;
  n->shape = (IrShape){.rank = 1};
  for (int k = 0; k < n->nin; k++) {
    if (IN(k)->dtype != n->dtype || !ir_dtype_is_float(n->dtype))
      return ir_fail(g, "needs float operands of one dtype, got %s", TY(IN(k), x));
    n->shape.d[0] += ir_numel(IN(k)->shape);
  }
  return 0;
}

static int sh_concat(IrGraph *g, IrNode *n) {
  const IrNode *f = IN(0);
  char x[128], y[128];
  if (n->nin < 1)
    return ir_fail(g, "needs at least one operand");
  if (f->shape.rank == 0)
    return ir_fail(g, "cannot concatenate scalars");
  if (check_axis(g, n->a.axis, f->shape) < 0)
    return -1;
  n->shape = f->shape;
  n->dtype = f->dtype;
  n->shape.d[n->a.axis] = 0;
  for (int k = 0; k < n->nin; k++) {
    const IrNode *e = IN(k);
    if (same_dtype(g, f, e) < 0)
      return -1;
    bool ok = e->shape.rank == f->shape.rank;
    for (int i = 0; ok && i < f->shape.rank; i++)
      ok = i == n->a.axis || e->shape.d[i] == f->shape.d[i];
    if (!ok)
      return ir_fail(g, "shapes %s and %s differ outside axis %d", TY(f, x), TY(e, y), n->a.axis);
    n->shape.d[n->a.axis] += e->shape.d[n->a.axis];
  }
  return 0;
}

static int sh_pad(IrGraph *g, IrNode *n) {
  n->shape = IN(0)->shape;
  n->dtype = IN(0)->dtype;
  for (int i = 0; i < n->shape.rank; i++) {
    if (n->a.lo[i] < 0 || n->a.hi[i] < 0)
      return ir_fail(g, "negative padding on axis %d", i);
    n->shape.d[i] += n->a.lo[i] + n->a.hi[i];
  }
  return 0;
}

/* Output size of a sliding window (conv, pool): PyTorch's formula, floor mode. */
static int64_t window_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  int64_t span = in + 2 * p - d * (k - 1) - 1;
  return span < 0 ? 0 : span / s + 1;
}

static int check_window(IrGraph *g, const IrAttr *a, bool conv) {
  for (int i = 0; i < 2; i++) {
    if (a->stride[i] < 1 || a->pad[i] < 0 || (conv && a->dil[i] < 1) || (!conv && a->kernel[i] < 1))
      return ir_fail(g, "bad stride %lld / padding %lld%s", (long long)a->stride[i],
                     (long long)a->pad[i], conv ? " / dilation" : " / kernel");
    if (!conv && 2 * a->pad[i] > a->kernel[i])
      return ir_fail(g, "padding %lld should be at most half the kernel size %lld",
                     (long long)a->pad[i], (long long)a->kernel[i]);
  }
  return 0;
}

/* conv2d's output shape for input shape xs and weight shape ws */
static int conv_shape(IrGraph *g, const IrAttr *a, IrDtype t, IrShape xs, IrShape ws, IrShape *out) {
  char x[128], y[128];
  if (xs.rank != 4 || ws.rank != 4)
    return ir_fail(g, "input must be [N, C, H, W] and weight [O, C/groups, kH, kW], got %s and %s",
                   ir_shape_str(t, xs, x, sizeof x), ir_shape_str(t, ws, y, sizeof y));
  if (check_window(g, a, true) < 0)
    return -1;
  int64_t G = a->groups;
  if (G < 1 || xs.d[1] % G || ws.d[0] % G)
    return ir_fail(g, "groups=%lld must divide the input channels (%lld) and output channels (%lld)",
                   (long long)G, (long long)xs.d[1], (long long)ws.d[0]);
  if (ws.d[1] != xs.d[1] / G)
    return ir_fail(g, "weight %s expects %lld input channels per group, input %s has %lld",
                   ir_shape_str(t, ws, y, sizeof y), (long long)ws.d[1],
                   ir_shape_str(t, xs, x, sizeof x), (long long)(xs.d[1] / G));
  int64_t oh = window_out(xs.d[2], ws.d[2], a->stride[0], a->pad[0], a->dil[0]);
  int64_t ow = window_out(xs.d[3], ws.d[3], a->stride[1], a->pad[1], a->dil[1]);
  if (oh < 1 || ow < 1)
    return ir_fail(g, "kernel %lldx%lld (dilated) is larger than the padded input %s",
                   (long long)ws.d[2], (long long)ws.d[3], ir_shape_str(t, xs, x, sizeof x));
  *out = IR_SHAPE(xs.d[0], ws.d[0], oh, ow);
  return 0;
}

static int sh_conv2d(IrGraph *g, IrNode *n) {
  char b[128];
  if (same_dtype(g, IN(0), IN(1)) < 0)
    return -1;
  if (!ir_dtype_is_float(IN(0)->dtype))
    return ir_fail(g, "needs floating-point operands, got %s", TY(IN(0), b));
  n->dtype = IN(0)->dtype;
  return conv_shape(g, &n->a, n->dtype, IN(0)->shape, IN(1)->shape, &n->shape);
}

/* bwd_data(gy, w) -> x's shape; bwd_filter(x, gy) -> w's shape; a.shape is that shape */
static int sh_conv2d_bwd(IrGraph *g, IrNode *n) {
  bool data = n->op == IR_CONV2D_BWD_DATA;
  const IrNode *gy = data ? IN(0) : IN(1);
  IrShape xs = data ? n->a.shape : IN(0)->shape, ws = data ? IN(1)->shape : n->a.shape, ys;
  char x[128];
  if (same_dtype(g, IN(0), IN(1)) < 0 || conv_shape(g, &n->a, gy->dtype, xs, ws, &ys) < 0)
    return -1;
  if (!ir_shape_eq(ys, gy->shape))
    return ir_fail(g, "gradient %s does not match the convolution's output", TY(gy, x));
  n->dtype = gy->dtype;
  n->shape = n->a.shape;
  return 0;
}

static int pool_shape(IrGraph *g, const IrAttr *a, IrDtype t, IrShape xs, IrShape *out) {
  char x[128];
  if (xs.rank != 4)
    return ir_fail(g, "input must be [N, C, H, W], got %s", ir_shape_str(t, xs, x, sizeof x));
  if (check_window(g, a, false) < 0)
    return -1;
  int64_t oh = window_out(xs.d[2], a->kernel[0], a->stride[0], a->pad[0], 1);
  int64_t ow = window_out(xs.d[3], a->kernel[1], a->stride[1], a->pad[1], 1);
  if (oh < 1 || ow < 1)
    return ir_fail(g, "kernel %lldx%lld is larger than the padded input %s", (long long)a->kernel[0],
                   (long long)a->kernel[1], ir_shape_str(t, xs, x, sizeof x));
  *out = IR_SHAPE(xs.d[0], xs.d[1], oh, ow);
  return 0;
}

static int sh_pool2d(IrGraph *g, IrNode *n) {
  char b[128];
  if (!ir_dtype_is_float(IN(0)->dtype))
    return ir_fail(g, "needs a floating-point operand, got %s", TY(IN(0), b));
  n->dtype = IN(0)->dtype;
  return pool_shape(g, &n->a, n->dtype, IN(0)->shape, &n->shape);
}

/* max_pool2d_bwd(x, gy); avg_pool2d_bwd(gy) with a.shape = x's shape */
static int sh_pool2d_bwd(IrGraph *g, IrNode *n) {
  bool max = n->op == IR_MAX_POOL2D_BWD;
  const IrNode *gy = max ? IN(1) : IN(0);
  IrShape xs = max ? IN(0)->shape : n->a.shape, ys;
  char x[128];
  if ((max && same_dtype(g, IN(0), IN(1)) < 0) || pool_shape(g, &n->a, gy->dtype, xs, &ys) < 0)
    return -1;
  if (!ir_shape_eq(ys, gy->shape))
    return ir_fail(g, "gradient %s does not match the pooling's output", TY(gy, x));
  n->dtype = gy->dtype;
  n->shape = xs;
  return 0;
}

/* logits [N, C, d...] with integer targets [N, d...] */
static int sh_class_loss(IrGraph *g, IrNode *n) {
  const IrNode *x = IN(0), *t = IN(1);
  char a[128], b[128];
  if (!ir_dtype_is_float(x->dtype) || x->shape.rank < 2)
    return ir_fail(g, "input must be floating-point [N, C, ...], got %s", TY(x, a));
  if (!is_int(t->dtype))
    return ir_fail(g, "target must hold integer class indices, got %s", TY(t, b));
  bool ok = t->shape.rank == x->shape.rank - 1 && t->shape.d[0] == x->shape.d[0];
  for (int i = 2; ok && i < x->shape.rank; i++)
    ok = t->shape.d[i - 1] == x->shape.d[i];
  if (!ok)
    return ir_fail(g, "target %s does not match input %s (expected the input's shape without "
                      "axis 1)", TY(t, b), TY(x, a));
  if (n->op == IR_CROSS_ENTROPY && !(n->a.value >= 0 && n->a.value <= 1))
    return ir_fail(g, "label_smoothing %g is not in [0, 1]", n->a.value);
  n->dtype = x->dtype;
  n->shape = IR_SCALAR;
  return 0;
}

static int sh_pair_loss(IrGraph *g, IrNode *n) {
  char a[128], b[128];
  if (same_dtype(g, IN(0), IN(1)) < 0)
    return -1;
  if (!ir_dtype_is_float(IN(0)->dtype))
    return ir_fail(g, "needs floating-point operands, got %s", TY(IN(0), a));
  if (!ir_shape_eq(IN(0)->shape, IN(1)->shape))
    return ir_fail(g, "input %s and target %s differ in shape", TY(IN(0), a), TY(IN(1), b));
  n->dtype = IN(0)->dtype;
  n->shape = IR_SCALAR;
  return 0;
}

/* take: x[:axis] + idx + x[axis+1:] */
static int take_shape(IrGraph *g, int axis, IrShape xs, const IrNode *idx, IrShape *out) {
  char b[128];
  if (!is_int(idx->dtype))
    return ir_fail(g, "indices must be integers, got %s", TY(idx, b));
  if (xs.rank == 0 || check_axis(g, axis, xs) < 0)
    return xs.rank ? -1 : ir_fail(g, "cannot index a scalar");
  if (xs.rank - 1 + idx->shape.rank > IR_MAX_RANK)
    return ir_fail(g, "result would have rank > %d", IR_MAX_RANK);
  out->rank = 0;
  for (int i = 0; i < axis; i++)
    out->d[out->rank++] = xs.d[i];
  for (int i = 0; i < idx->shape.rank; i++)
    out->d[out->rank++] = idx->shape.d[i];
  for (int i = axis + 1; i < xs.rank; i++)
    out->d[out->rank++] = xs.d[i];
  return 0;
}

static int sh_take(IrGraph *g, IrNode *n) {
  n->dtype = IN(0)->dtype;
  return take_shape(g, n->a.axis, IN(0)->shape, IN(1), &n->shape);
}

static int sh_take_grad(IrGraph *g, IrNode *n) {
  IrShape s;
  char b[128];
  if (take_shape(g, n->a.axis, n->a.shape, IN(1), &s) < 0)
    return -1;
  if (!ir_shape_eq(s, IN(0)->shape))
    return ir_fail(g, "gradient %s does not match the take's output", TY(IN(0), b));
  n->dtype = IN(0)->dtype;
  n->shape = n->a.shape;
  return 0;
}

/* torch.gather: idx has x's rank, idx.d[i] <= x.d[i] off the axis; result has idx's shape */
static int gather_check(IrGraph *g, int axis, IrShape xs, const IrNode *idx) {
  char b[128];
  if (!is_int(idx->dtype))
    return ir_fail(g, "indices must be integers, got %s", TY(idx, b));
  if (idx->shape.rank != xs.rank || xs.rank == 0)
    return ir_fail(g, "indices %s must have the input's rank %d", TY(idx, b), xs.rank);
  if (check_axis(g, axis, xs) < 0)
    return -1;
  for (int i = 0; i < xs.rank; i++)
    if (i != axis && idx->shape.d[i] > xs.d[i])
      return ir_fail(g, "indices %s larger than the input on axis %d", TY(idx, b), i);
  return 0;
}

static int sh_gather(IrGraph *g, IrNode *n) {
  n->dtype = IN(0)->dtype;
  n->shape = IN(1)->shape;
  return gather_check(g, n->a.axis, IN(0)->shape, IN(1));
}

static int sh_scatter_add(IrGraph *g, IrNode *n) {
  char a[128], b[128];
  if (gather_check(g, n->a.axis, n->a.shape, IN(1)) < 0)
    return -1;
  if (!ir_shape_eq(IN(0)->shape, IN(1)->shape))
    return ir_fail(g, "source %s and indices %s differ in shape", TY(IN(0), a), TY(IN(1), b));
  n->dtype = IN(0)->dtype;
  n->shape = n->a.shape;
  return 0;
}

static int sh_one_hot(IrGraph *g, IrNode *n) {
  char b[128];
  if (!is_int(IN(0)->dtype))
    return ir_fail(g, "indices must be integers, got %s", TY(IN(0), b));
  if (n->a.n < 1)
    return ir_fail(g, "number of classes must be positive, got %lld", (long long)n->a.n);
  if (IN(0)->shape.rank >= IR_MAX_RANK)
    return ir_fail(g, "result would have rank > %d", IR_MAX_RANK);
  n->dtype = n->a.dtype;
  n->shape = IN(0)->shape;
  n->shape.d[n->shape.rank++] = n->a.n;
  return 0;
}

static int check_step(IrGraph *g, const IrNode *step) {
  char b[128];
  if (!is_int(step->dtype) || step->shape.rank != 0)
    return ir_fail(g, "the step must be an integer scalar, got %s", TY(step, b));
  return 0;
}

static int sh_dropout(IrGraph *g, IrNode *n) {
  if (!(n->a.value >= 0 && n->a.value <= 1))
    return ir_fail(g, "probability %g is not in [0, 1]", n->a.value);
  if (check_step(g, IN(1)) < 0)
    return -1;
  return sh_float(g, n);
}

static int sh_rand(IrGraph *g, IrNode *n) {
  if (check_step(g, IN(0)) < 0)
    return -1;
  if (!ir_dtype_is_float(n->a.dtype))
    return ir_fail(g, "needs a floating-point dtype, got %s", ir_dtype_name(n->a.dtype));
  if (n->op == IR_RAND_NORMAL && !(n->a.value2 >= 0))
    return ir_fail(g, "std %g is negative", n->a.value2);
  n->dtype = n->a.dtype;
  n->shape = n->a.shape;
  for (int i = 0; i < n->shape.rank; i++)
    if (n->shape.d[i] < 0)
      return ir_fail(g, "negative dimension %lld", (long long)n->shape.d[i]);
  return 0;
}

typedef int ShapeRule(IrGraph *g, IrNode *n);
static ShapeRule *const shape_rules[] = {
#define OP(id, name, arity, shape, deriv, kernel) shape,
#include "ir_ops.def"
#undef OP
};

/* ---- the generic builder ---- */

static int make_node(IrGraph *g, IrOp op, const int *in, int nin, const IrAttr *a);

/* The precision rules (ir_precision.c) wrap GEMM operands and results as they are built. */
int ir_make(IrGraph *g, IrOp op, const int *in, int nin, const IrAttr *a) {
  if (!g->gemm16 && !g->round16)
    return make_node(g, op, in, nin, a);
  int buf[8], *ops = nin <= 8 ? buf : ir_alloc(g, (size_t)nin * sizeof *ops);
  if (ir_precision_operands(g, op, in, nin, ops) < 0)
    return -1;
  return ir_precision_result(g, make_node(g, op, ops, nin, a));
}

static int make_node(IrGraph *g, IrOp op, const int *in, int nin, const IrAttr *a) {
  for (int k = 0; k < nin; k++) {
    if (in[k] < 0)
      return -1; /* an operand failed earlier: its message stands */
    if (in[k] >= g->n)
      return ir_fail(g, "%s: no value %%%d", ir_op_name(op), in[k]);
  }
  if (ir_op_arity(op) >= 0 && nin != ir_op_arity(op))
    return ir_fail(g, "%s: takes %d operands, got %d", ir_op_name(op), ir_op_arity(op), nin);
  if (g->n == g->cap) {
    g->cap = g->cap ? 2 * g->cap : 64;
    g->node = realloc(g->node, (size_t)g->cap * sizeof *g->node);
    if (!g->node) {
      fprintf(stderr, "ltl: out of memory\n");
      exit(1);
    }
  }
  IrNode *n = &g->node[g->n];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->nin = nin;
  n->in = ir_alloc(g, (size_t)(nin ? nin : 1) * sizeof(int));
  if (nin > 0)
    memcpy(n->in, in, (size_t)nin * sizeof(int));
  if (a)
    n->a = *a;
  n->line = g->line;
  n->col = g->col;
  if (shape_rules[op](g, n) < 0) {
    /* prefix the op's name: "matmul: inner dimensions differ ..." */
    const char *name = ir_op_name(op);
    size_t k = strlen(name) + 2, len = strnlen(g->err, sizeof g->err - 1);
    if (len + k >= sizeof g->err)
      len = sizeof g->err - 1 - k;
    memmove(g->err + k, g->err, len);
    memcpy(g->err, name, k - 2);
    memcpy(g->err + k - 2, ": ", 2);
    g->err[len + k] = 0;
    return -1;
  }
  return g->n++;
}

/* ---- dtype promotion, as PyTorch: bool < u8 < i32 < i64 < f16, bf16 < f32 < f64 ---- */

static int category(IrDtype t) { return t == IR_BOOL ? 0 : is_int(t) ? 1 : 2; }

static int dtype_rank(IrDtype t) {
  static const int r[] = {[IR_BOOL] = 0, [IR_U8] = 1, [IR_I32] = 2, [IR_I64] = 3,
                          [IR_F16] = 4,  [IR_BF16] = 4, [IR_F32] = 5, [IR_F64] = 6};
  return r[t];
}

static IrDtype promote2(IrDtype a, IrDtype b) {
  if (a == b)
    return a;
  if ((a == IR_F16 && b == IR_BF16) || (a == IR_BF16 && b == IR_F16))
    return IR_F32;
  return dtype_rank(a) > dtype_rank(b) ? a : b;
}

/* A rank-0 constant (a literal in the source) takes the other operand's dtype when that is
 * of the same or a higher category: x_f16 * 0.5 stays f16, i * 2 stays an integer, but
 * i * 0.5 is f32 (PyTorch's default float). */
static bool is_literal(const IrGraph *g, int v) {
  return g->node[v].op == IR_CONST && g->node[v].shape.rank == 0;
}

static IrDtype promote(const IrGraph *g, int a, int b) {
  IrDtype ta = g->node[a].dtype, tb = g->node[b].dtype;
  bool la = is_literal(g, a), lb = is_literal(g, b);
  if (la != lb) {
    IrDtype tt = la ? tb : ta, tl = la ? ta : tb;
    if (category(tt) >= category(tl))
      return tt;
    return category(tl) == 2 ? IR_F32 : tl;
  }
  return promote2(ta, tb);
}

static int to_dtype(IrGraph *g, int a, IrDtype t) {
  if (a < 0 || g->node[a].dtype == t)
    return a;
  return ir_cast(g, a, t);
}

/* ---- builders ---- */

static IrAttr no_attr(void) {
  IrAttr a;
  memset(&a, 0, sizeof a);
  return a;
}

int ir_input(IrGraph *g, IrInputKind kind, const char *name, IrDtype t, IrShape s) {
  if (!name || !*name)
    return ir_fail(g, "input: needs a name");
  if (ir_find_input(g, name) >= 0)
    return ir_fail(g, "input: \"%s\" is defined twice", name);
  IrAttr a = no_attr();
  a.dtype = t;
  a.shape = s;
  int v = ir_make(g, IR_INPUT, NULL, 0, &a);
  if (v < 0)
    return -1;
  g->node[v].kind = kind;
  g->node[v].name = ir_strdup(g, name);
  return v;
}

int ir_const(IrGraph *g, double v, IrDtype t, IrShape s) {
  IrAttr a = no_attr();
  a.dtype = t;
  a.shape = s;
  a.value = v; /* unrounded: rounded to t when run, except by the f64 interpreter */
  return ir_make(g, IR_CONST, NULL, 0, &a);
}

int ir_scalar(IrGraph *g, double v, IrDtype t) { return ir_const(g, v, t, IR_SCALAR); }

int ir_const_data(IrGraph *g, IrDtype t, IrShape s, const double *v) {
  int c = ir_const(g, 0, t, s);
  if (c < 0)
    return -1;
  int64_t k = ir_numel(s);
  double *d = ir_alloc(g, (size_t)(k ? k : 1) * sizeof *d);
  memcpy(d, v, (size_t)k * sizeof *d);
  g->node[c].data = d;
  return c;
}

static int make1(IrGraph *g, IrOp op, int a, const IrAttr *at) { return ir_make(g, op, &a, 1, at); }
static int make2(IrGraph *g, IrOp op, int a, int b, const IrAttr *at) {
  return ir_make(g, op, (int[]){a, b}, 2, at);
}

int ir_unary(IrGraph *g, IrOp op, int a) {
  if (a < 0)
    return -1;
  IrDtype t = g->node[a].dtype;
  /* transcendental ops on integers compute in the default float, as PyTorch */
  if (!ir_dtype_is_float(t) && shape_rules[op] == sh_float)
    a = ir_cast(g, a, IR_F32);
  return make1(g, op, a, NULL);
}

int ir_binary(IrGraph *g, IrOp op, int a, int b) {
  if (a < 0 || b < 0)
    return -1;
  IrDtype t = promote(g, a, b);
  if (op == IR_DIV && !ir_dtype_is_float(t))
    t = IR_F32; /* true division, as PyTorch */
  return make2(g, op, to_dtype(g, a, t), to_dtype(g, b, t), NULL);
}

int ir_neg(IrGraph *g, int a) { return ir_unary(g, IR_NEG, a); }
int ir_abs(IrGraph *g, int a) { return ir_unary(g, IR_ABS, a); }
int ir_sign(IrGraph *g, int a) { return ir_unary(g, IR_SIGN, a); }
int ir_exp(IrGraph *g, int a) { return ir_unary(g, IR_EXP, a); }
int ir_log(IrGraph *g, int a) { return ir_unary(g, IR_LOG, a); }
int ir_sqrt(IrGraph *g, int a) { return ir_unary(g, IR_SQRT, a); }
int ir_rsqrt(IrGraph *g, int a) { return ir_unary(g, IR_RSQRT, a); }
int ir_tanh(IrGraph *g, int a) { return ir_unary(g, IR_TANH, a); }
int ir_sigmoid(IrGraph *g, int a) { return ir_unary(g, IR_SIGMOID, a); }
int ir_erf(IrGraph *g, int a) { return ir_unary(g, IR_ERF, a); }
int ir_relu(IrGraph *g, int a) { return ir_unary(g, IR_RELU, a); }
int ir_gelu(IrGraph *g, int a) { return ir_unary(g, IR_GELU, a); }
int ir_detach(IrGraph *g, int a) { return ir_unary(g, IR_DETACH, a); }

int ir_leaky_relu(IrGraph *g, int a, double slope) {
  IrAttr at = no_attr();
  at.value = slope;
  return make1(g, IR_LEAKY_RELU, a, &at);
}

int ir_cast(IrGraph *g, int a, IrDtype t) {
  IrAttr at = no_attr();
  at.dtype = t;
  return make1(g, IR_CAST, a, &at);
}

int ir_add(IrGraph *g, int a, int b) { return ir_binary(g, IR_ADD, a, b); }
int ir_sub(IrGraph *g, int a, int b) { return ir_binary(g, IR_SUB, a, b); }
int ir_mul(IrGraph *g, int a, int b) { return ir_binary(g, IR_MUL, a, b); }
int ir_div(IrGraph *g, int a, int b) { return ir_binary(g, IR_DIV, a, b); }
int ir_pow(IrGraph *g, int a, int b) { return ir_binary(g, IR_POW, a, b); }
int ir_maximum(IrGraph *g, int a, int b) { return ir_binary(g, IR_MAXIMUM, a, b); }
int ir_minimum(IrGraph *g, int a, int b) { return ir_binary(g, IR_MINIMUM, a, b); }
int ir_eq(IrGraph *g, int a, int b) { return ir_binary(g, IR_EQ, a, b); }
int ir_ne(IrGraph *g, int a, int b) { return ir_binary(g, IR_NE, a, b); }
int ir_lt(IrGraph *g, int a, int b) { return ir_binary(g, IR_LT, a, b); }
int ir_le(IrGraph *g, int a, int b) { return ir_binary(g, IR_LE, a, b); }
int ir_gt(IrGraph *g, int a, int b) { return ir_binary(g, IR_GT, a, b); }
int ir_ge(IrGraph *g, int a, int b) { return ir_binary(g, IR_GE, a, b); }

int ir_where(IrGraph *g, int c, int a, int b) {
  if (c < 0 || a < 0 || b < 0)
    return -1;
  IrDtype t = promote(g, a, b);
  return ir_make(g, IR_WHERE, (int[]){c, to_dtype(g, a, t), to_dtype(g, b, t)}, 3, NULL);
}

/* Python-style axis: -1 is the last; rank-0 tensors accept axis 0 and -1. */
static int norm_axis(IrGraph *g, int a, int axis, const char *what) {
  int r = g->node[a].shape.rank;
  int m = r ? r : 1;
  if (axis < -m || axis >= m) {
    char b[128];
    return ir_fail(g, "%s: axis %d out of range for %s", what, axis,
                   ir_shape_str(g->node[a].dtype, g->node[a].shape, b, sizeof b));
  }
  return axis < 0 ? axis + m : axis;
}

int ir_reduce(IrGraph *g, IrOp op, int a, const int *axes, int naxes, bool keepdim) {
  if (a < 0)
    return -1;
  IrAttr at = no_attr();
  const IrNode *x = &g->node[a];
  bool red[IR_MAX_RANK] = {0};
  if (naxes > IR_MAX_RANK)
    return ir_fail(g, "%s: too many axes", ir_op_name(op));
  for (int i = 0; i < naxes; i++) {
    int ax = norm_axis(g, a, axes[i], ir_op_name(op));
    if (ax < 0)
      return -1;
    if (red[ax])
      return ir_fail(g, "%s: axis %d repeated", ir_op_name(op), axes[i]);
    red[ax] = true;
  }
  for (int i = 0; i < x->shape.rank; i++)
    if (red[i] || naxes == 0)
      at.axes[at.naxes++] = i;
  at.keepdim = keepdim;
  IrDtype t = x->dtype;
  if (op == IR_SUM && !ir_dtype_is_float(t))
    a = ir_cast(g, a, IR_I64); /* integer sums accumulate in i64, as PyTorch */
  else if ((op == IR_MEAN || op == IR_LOGSUMEXP) && !ir_dtype_is_float(t))
    a = ir_cast(g, a, IR_F32);
  else if (op == IR_MAX && t == IR_BOOL)
    a = ir_cast(g, a, IR_U8);
  return make1(g, op, a, &at);
}

int ir_sum(IrGraph *g, int a, const int *axes, int n, bool k) { return ir_reduce(g, IR_SUM, a, axes, n, k); }
int ir_mean(IrGraph *g, int a, const int *axes, int n, bool k) { return ir_reduce(g, IR_MEAN, a, axes, n, k); }
int ir_max(IrGraph *g, int a, const int *axes, int n, bool k) { return ir_reduce(g, IR_MAX, a, axes, n, k); }
int ir_logsumexp(IrGraph *g, int a, const int *axes, int n, bool k) {
  return ir_reduce(g, IR_LOGSUMEXP, a, axes, n, k);
}

int ir_argmax(IrGraph *g, int a, int axis, bool keepdim) {
  if (a < 0)
    return -1;
  IrAttr at = no_attr();
  if ((at.axis = norm_axis(g, a, axis, "argmax")) < 0)
    return -1;
  at.keepdim = keepdim;
  if (g->node[a].dtype == IR_BOOL)
    a = ir_cast(g, a, IR_U8);
  return make1(g, IR_ARGMAX, a, &at);
}

int ir_matmul(IrGraph *g, int a, int b) {
  if (a < 0 || b < 0)
    return -1;
  IrShape sa = g->node[a].shape, sb = g->node[b].shape;
  if (sa.rank == 0 || sb.rank == 0)
    return ir_fail(g, "matmul: operands must not be scalars");
  IrDtype t = promote(g, a, b);
  a = to_dtype(g, a, t);
  b = to_dtype(g, b, t);
  /* numpy: a 1-D left operand is a row [1, K], a 1-D right one a column [K, 1], and the
   * added dimension is removed from the result */
  if (sa.rank == 1)
    a = ir_reshape(g, a, IR_SHAPE(1, sa.d[0]));
  if (sb.rank == 1)
    b = ir_reshape(g, b, IR_SHAPE(sb.d[0], 1));
  int y = make2(g, IR_MATMUL, a, b, NULL);
  if (y < 0 || (sa.rank > 1 && sb.rank > 1))
    return y;
  IrShape s = g->node[y].shape;
  if (sb.rank == 1)
    s.rank--;
  if (sa.rank == 1) {
    s.d[s.rank - 2] = s.d[s.rank - 1];
    s.rank--;
  }
  return ir_reshape(g, y, s);
}

int ir_linear(IrGraph *g, int x, int w, int b) {
  if (w >= 0 && g->node[w].shape.rank != 2) {
    char s[128];
    return ir_fail(g, "linear: weight must be [out, in], got %s",
                   ir_shape_str(g->node[w].dtype, g->node[w].shape, s, sizeof s));
  }
  int y = ir_matmul(g, x, ir_transpose(g, w, 0, 1));
  return b == -1 ? y : ir_add(g, y, b);
}

int ir_reshape(IrGraph *g, int a, IrShape s) {
  if (a < 0)
    return -1;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < s.rank; i++) {
    if (s.d[i] == -1 && infer < 0)
      infer = i;
    else if (s.d[i] < 0)
      return ir_fail(g, "reshape: bad dimension %lld", (long long)s.d[i]);
    else
      known *= s.d[i];
  }
  if (infer >= 0) {
    int64_t total = ir_numel(g->node[a].shape);
    if (known == 0 || total % known) {
      char b[128];
      return ir_fail(g, "reshape: cannot infer dimension %d of %s from %lld elements", infer,
                     ir_shape_str(g->node[a].dtype, s, b, sizeof b), (long long)total);
    }
    s.d[infer] = total / known;
  }
  IrAttr at = no_attr();
  at.shape = s;
  return make1(g, IR_RESHAPE, a, &at);
}

int ir_flatten(IrGraph *g, int a, int start, int end) {
  if (a < 0)
    return -1;
  IrShape x = g->node[a].shape, s = {0};
  if (x.rank == 0)
    return ir_reshape(g, a, IR_SHAPE(1));
  if ((start = norm_axis(g, a, start, "flatten")) < 0 || (end = norm_axis(g, a, end, "flatten")) < 0)
    return -1;
  if (start > end)
    return ir_fail(g, "flatten: start axis %d is after end axis %d", start, end);
  for (int i = 0; i < x.rank; i++) {
    if (i <= start || i > end)
      s.d[s.rank++] = x.d[i];
    else
      s.d[s.rank - 1] *= x.d[i];
  }
  return ir_reshape(g, a, s);
}

int ir_permute(IrGraph *g, int a, const int *perm) {
  if (a < 0)
    return -1;
  IrAttr at = no_attr();
  at.naxes = g->node[a].shape.rank;
  for (int i = 0; i < at.naxes; i++)
    if ((at.axes[i] = norm_axis(g, a, perm[i], "permute")) < 0)
      return -1;
  return make1(g, IR_PERMUTE, a, &at);
}

int ir_transpose(IrGraph *g, int a, int d0, int d1) {
  if (a < 0)
    return -1;
  if ((d0 = norm_axis(g, a, d0, "transpose")) < 0 || (d1 = norm_axis(g, a, d1, "transpose")) < 0)
    return -1;
  int perm[IR_MAX_RANK];
  int r = g->node[a].shape.rank;
  if (r < 2)
    return a; /* transposing a vector or a scalar changes nothing */
  for (int i = 0; i < r; i++)
    perm[i] = i;
  perm[d0] = d1;
  perm[d1] = d0;
  return ir_permute(g, a, perm);
}

int ir_broadcast_to(IrGraph *g, int a, IrShape s) {
  IrAttr at = no_attr();
  at.shape = s;
  return make1(g, IR_BROADCAST, a, &at);
}

/* full-range bounds on every axis of s */
static void full_slice(IrAttr *at, IrShape s) {
  for (int i = 0; i < s.rank; i++) {
    at->start[i] = 0;
    at->stop[i] = s.d[i];
    at->step[i] = 1;
  }
}

int ir_slice(IrGraph *g, int a, int axis, int64_t start, int64_t stop, int64_t step) {
  if (a < 0)
    return -1;
  if (g->node[a].shape.rank == 0)
    return ir_fail(g, "slice: cannot slice a scalar");
  if ((axis = norm_axis(g, a, axis, "slice")) < 0)
    return -1;
  if (step < 1)
    return ir_fail(g, "slice: step must be positive, got %lld", (long long)step);
  int64_t d = g->node[a].shape.d[axis];
  /* Python: negative bounds count from the end; out-of-range bounds clamp */
  if (start < 0)
    start += d;
  if (stop < 0)
    stop += d;
  start = start < 0 ? 0 : start > d ? d : start;
  stop = stop < start ? start : stop > d ? d : stop;
  IrAttr at = no_attr();
  full_slice(&at, g->node[a].shape);
  at.start[axis] = start;
  at.stop[axis] = stop;
  at.step[axis] = step;
  return make1(g, IR_SLICE, a, &at);
}

int ir_concat(IrGraph *g, const int *xs, int n, int axis) {
  if (n < 1)
    return ir_fail(g, "concat: needs at least one operand");
  for (int i = 0; i < n; i++)
    if (xs[i] < 0)
      return -1;
  IrDtype t = g->node[xs[0]].dtype;
  for (int i = 1; i < n; i++)
    t = promote2(t, g->node[xs[i]].dtype);
  int *v = ir_alloc(g, (size_t)n * sizeof *v);
  for (int i = 0; i < n; i++)
    v[i] = to_dtype(g, xs[i], t);
  IrAttr at = no_attr();
  if ((at.axis = norm_axis(g, xs[0], axis, "concat")) < 0)
    return -1;
  return ir_make(g, IR_CONCAT, v, n, &at);
}

int ir_allreduce(IrGraph *g, const int *xs, int n) {
  if (n < 1)
    return ir_fail(g, "all_reduce: needs at least one operand");
  return ir_make(g, IR_ALLREDUCE, xs, n, NULL);
}

int ir_pad(IrGraph *g, int a, const int64_t *lo, const int64_t *hi, double value) {
  if (a < 0)
    return -1;
  IrAttr at = no_attr();
  for (int i = 0; i < g->node[a].shape.rank; i++) {
    at.lo[i] = lo[i];
    at.hi[i] = hi[i];
  }
  at.value = value;
  return make1(g, IR_PAD, a, &at);
}

int ir_conv2d(IrGraph *g, int x, int w, const int64_t stride[2], const int64_t pad[2],
              const int64_t dil[2], int groups) {
  IrAttr at = no_attr();
  for (int i = 0; i < 2; i++) {
    at.stride[i] = stride[i];
    at.pad[i] = pad[i];
    at.dil[i] = dil[i];
  }
  at.groups = groups;
  return make2(g, IR_CONV2D, x, w, &at);
}

static int pool(IrGraph *g, IrOp op, int x, const int64_t kernel[2], const int64_t stride[2],
                const int64_t pad[2], bool count_include_pad) {
  IrAttr at = no_attr();
  for (int i = 0; i < 2; i++) {
    at.kernel[i] = kernel[i];
    at.stride[i] = stride ? stride[i] : kernel[i]; /* PyTorch: stride defaults to the kernel */
    at.pad[i] = pad ? pad[i] : 0;
  }
  at.count_include_pad = count_include_pad;
  return make1(g, op, x, &at);
}

int ir_max_pool2d(IrGraph *g, int x, const int64_t kernel[2], const int64_t stride[2],
                  const int64_t pad[2]) {
  return pool(g, IR_MAX_POOL2D, x, kernel, stride, pad, false);
}

int ir_avg_pool2d(IrGraph *g, int x, const int64_t kernel[2], const int64_t stride[2],
                  const int64_t pad[2], bool count_include_pad) {
  return pool(g, IR_AVG_POOL2D, x, kernel, stride, pad, count_include_pad);
}

static int softmax_like(IrGraph *g, IrOp op, int a, int axis) {
  if (a < 0)
    return -1;
  IrAttr at = no_attr();
  if ((at.axis = norm_axis(g, a, axis, ir_op_name(op))) < 0)
    return -1;
  if (!ir_dtype_is_float(g->node[a].dtype))
    a = ir_cast(g, a, IR_F32);
  return make1(g, op, a, &at);
}

int ir_softmax(IrGraph *g, int a, int axis) { return softmax_like(g, IR_SOFTMAX, a, axis); }
int ir_log_softmax(IrGraph *g, int a, int axis) { return softmax_like(g, IR_LOG_SOFTMAX, a, axis); }

int ir_cross_entropy(IrGraph *g, int logits, int target, double label_smoothing) {
  IrAttr at = no_attr();
  at.value = label_smoothing;
  return make2(g, IR_CROSS_ENTROPY, logits, target, &at);
}

int ir_nll_loss(IrGraph *g, int logp, int target) { return make2(g, IR_NLL_LOSS, logp, target, NULL); }

static int pair_loss(IrGraph *g, IrOp op, int a, int b) {
  if (a < 0 || b < 0)
    return -1;
  IrDtype t = promote(g, a, b);
  if (!ir_dtype_is_float(t))
    t = IR_F32;
  return make2(g, op, to_dtype(g, a, t), to_dtype(g, b, t), NULL);
}

int ir_mse_loss(IrGraph *g, int a, int b) { return pair_loss(g, IR_MSE_LOSS, a, b); }
int ir_bce_with_logits(IrGraph *g, int x, int y) { return pair_loss(g, IR_BCE_WITH_LOGITS, x, y); }

int ir_accuracy(IrGraph *g, int logits, int target) {
  if (logits < 0 || target < 0)
    return -1;
  int pred = ir_argmax(g, logits, 1, false);
  int hit = ir_eq(g, pred, to_dtype(g, target, IR_I64));
  return ir_mean(g, ir_cast(g, hit, IR_F32), NULL, 0, false);
}

int ir_take(IrGraph *g, int x, int idx, int axis) {
  if (x < 0 || idx < 0)
    return -1;
  IrAttr at = no_attr();
  if ((at.axis = norm_axis(g, x, axis, "take")) < 0)
    return -1;
  return make2(g, IR_TAKE, x, idx, &at);
}

int ir_embedding(IrGraph *g, int weight, int idx) {
  if (weight >= 0 && g->node[weight].shape.rank != 2) {
    char s[128];
    return ir_fail(g, "embedding: weight must be [num_embeddings, dim], got %s",
                   ir_shape_str(g->node[weight].dtype, g->node[weight].shape, s, sizeof s));
  }
  return ir_take(g, weight, idx, 0);
}

int ir_gather(IrGraph *g, int x, int axis, int idx) {
  if (x < 0 || idx < 0)
    return -1;
  IrAttr at = no_attr();
  if ((at.axis = norm_axis(g, x, axis, "gather")) < 0)
    return -1;
  return make2(g, IR_GATHER, x, idx, &at);
}

int ir_one_hot(IrGraph *g, int idx, int64_t n, IrDtype t) {
  IrAttr at = no_attr();
  at.n = n;
  at.dtype = t;
  return make1(g, IR_ONE_HOT, idx, &at);
}

/* A constant of x's dtype (for the composite layers below). */
static int lit(IrGraph *g, int x, double v) { return ir_scalar(g, v, g->node[x].dtype); }

int ir_layer_norm(IrGraph *g, int x, int nlast, int w, int b, double eps) {
  if (x < 0 || (w < -1) || (b < -1))
    return -1;
  const IrNode *n = &g->node[x];
  char s[128];
  if (nlast < 1 || nlast > n->shape.rank)
    return ir_fail(g, "layer_norm: cannot normalise the last %d axes of %s", nlast,
                   ir_shape_str(n->dtype, n->shape, s, sizeof s));
  if (!ir_dtype_is_float(n->dtype))
    return ir_fail(g, "layer_norm: needs a floating-point input, got %s",
                   ir_shape_str(n->dtype, n->shape, s, sizeof s));
  IrShape norm = {0};
  int axes[IR_MAX_RANK];
  for (int i = 0; i < nlast; i++) {
    axes[i] = n->shape.rank - nlast + i;
    norm.d[norm.rank++] = n->shape.d[axes[i]];
  }
  for (int k = 0; k < 2; k++) {
    int p = k ? b : w;
    if (p >= 0 && !ir_shape_eq(g->node[p].shape, norm)) {
      char s2[128];
      return ir_fail(g, "layer_norm: %s %s must have the normalised shape %s", k ? "bias" : "weight",
                     ir_shape_str(g->node[p].dtype, g->node[p].shape, s, sizeof s),
                     ir_shape_str(n->dtype, norm, s2, sizeof s2));
    }
  }
  /* biased variance, as PyTorch */
  int mu = ir_mean(g, x, axes, nlast, true);
  int xc = ir_sub(g, x, mu);
  int var = ir_mean(g, ir_mul(g, xc, xc), axes, nlast, true);
  int y = ir_mul(g, xc, ir_rsqrt(g, ir_add(g, var, lit(g, x, eps))));
  if (w >= 0)
    y = ir_mul(g, y, w);
  if (b >= 0)
    y = ir_add(g, y, b);
  return y;
}

int ir_batch_norm(IrGraph *g, int x, int w, int b, int rm, int rv, bool training,
                  double momentum, double eps, int *new_rm, int *new_rv) {
  *new_rm = *new_rv = -1;
  if (x < 0 || w < -1 || b < -1 || rm < 0 || rv < 0)
    return -1;
  const IrNode *n = &g->node[x];
  char s[128];
  if (n->shape.rank < 2 || !ir_dtype_is_float(n->dtype))
    return ir_fail(g, "batch_norm: input must be floating-point [N, C, ...], got %s",
                   ir_shape_str(n->dtype, n->shape, s, sizeof s));
  int64_t C = n->shape.d[1];
  IrShape cs = IR_SHAPE(C), bs = {0}; /* bs: [1, C, 1, ...] broadcasts against x */
  int axes[IR_MAX_RANK], naxes = 0;
  for (int i = 0; i < n->shape.rank; i++) {
    bs.d[bs.rank++] = i == 1 ? C : 1;
    if (i != 1)
      axes[naxes++] = i;
  }
  int ps[4] = {w, b, rm, rv};
  const char *pn[4] = {"weight", "bias", "running_mean", "running_var"};
  for (int k = 0; k < 4; k++)
    if (ps[k] >= 0 && !ir_shape_eq(g->node[ps[k]].shape, cs))
      return ir_fail(g, "batch_norm: %s %s must be [%lld]", pn[k],
                     ir_shape_str(g->node[ps[k]].dtype, g->node[ps[k]].shape, s, sizeof s),
                     (long long)C);
  int64_t count = ir_numel(n->shape) / (C ? C : 1);
  int mean, var;
  if (training) {
    if (count < 2)
      return ir_fail(g, "batch_norm: expected more than 1 value per channel when training, got %s",
                     ir_shape_str(n->dtype, n->shape, s, sizeof s));
    mean = ir_mean(g, x, axes, naxes, true);
    int xc = ir_sub(g, x, mean);
    var = ir_mean(g, ir_mul(g, xc, xc), axes, naxes, true);
    /* running statistics: no gradient flows into them; the variance is unbiased */
    int m = lit(g, x, momentum), keep = lit(g, x, 1 - momentum);
    int bm = ir_reshape(g, ir_detach(g, mean), cs);
    int bv = ir_mul(g, ir_reshape(g, ir_detach(g, var), cs),
                    lit(g, x, (double)count / (double)(count - 1)));
    *new_rm = ir_add(g, ir_mul(g, keep, rm), ir_mul(g, m, bm));
    *new_rv = ir_add(g, ir_mul(g, keep, rv), ir_mul(g, m, bv));
  } else {
    mean = ir_reshape(g, rm, bs);
    var = ir_reshape(g, rv, bs);
  }
  int y = ir_mul(g, ir_sub(g, x, mean), ir_rsqrt(g, ir_add(g, var, lit(g, x, eps))));
  if (w >= 0)
    y = ir_mul(g, y, ir_reshape(g, w, bs));
  if (b >= 0)
    y = ir_add(g, y, ir_reshape(g, b, bs));
  return y;
}

int ir_dropout(IrGraph *g, int x, double p, uint64_t seed, int step) {
  IrAttr at = no_attr();
  at.value = p;
  at.seed = seed;
  if (x >= 0 && !ir_dtype_is_float(g->node[x].dtype))
    x = ir_cast(g, x, IR_F32);
  return make2(g, IR_DROPOUT, x, step, &at);
}

static int rand_op(IrGraph *g, IrOp op, IrShape s, IrDtype t, double v, double v2, uint64_t seed,
                   int step) {
  IrAttr at = no_attr();
  at.shape = s;
  at.dtype = t;
  at.value = v;
  at.value2 = v2;
  at.seed = seed;
  return make1(g, op, step, &at);
}

int ir_rand_uniform(IrGraph *g, IrShape s, IrDtype t, double lo, double hi, uint64_t seed, int step) {
  return rand_op(g, IR_RAND_UNIFORM, s, t, lo, hi, seed, step);
}

int ir_rand_normal(IrGraph *g, IrShape s, IrDtype t, double mean, double std, uint64_t seed,
                   int step) {
  return rand_op(g, IR_RAND_NORMAL, s, t, mean, std, seed, step);
}
