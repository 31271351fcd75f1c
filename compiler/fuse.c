/* fuse.c — groups the nodes of a step graph into kernels and plans their memory (prefix fuse_).
 *
 * One pass over the nodes in graph order decides, for each node, what it becomes:
 *   - an input or a constant: bytes that already exist (a flat buffer's slot, the constant
 *     buffer) or, for a constant with one value, an immediate;
 *   - reshape / permute / broadcast / slice: a view, i.e. new strides over the operand's bytes;
 *   - an elementwise op: a member of a loop (FUSE_ELEMWISE) over its shape, joining the loop of
 *     an operand of the same shape when that makes no cycle between kernels;
 *   - matmul: a GEMM that also takes the bias add and the relu after it, and the transposes of
 *     its operands (as the GEMM's flags) or of its result (by swapping the operands);
 *   - conv2d (+ bias + relu), its two backward ops, max pooling, reductions, softmax, argmax,
 *     losses: one kernel each; anything else: one fallback kernel that runs the interpreter.
 * Then views that a consumer cannot read (a GEMM operand with no unit stride, a fallback's
 * operand) become copy loops, the kernels are ordered, the values a kernel shares with others
 * get bytes, UPDATE outputs are written straight into their inputs' slots where nothing reads
 * the old value afterwards, and every intermediate value gets an offset in one arena, reusing
 * the bytes of values whose last reader has run. */
#include "llvm.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
  GEMM_PAR_FLOPS = 1 << 20, /* a GEMM below this runs on one thread */
  ELEM_PAR_ELEMS = 1 << 15, /* likewise an elementwise loop (elements) */
  CONV_FILTER_CHUNKS = 8,   /* conv2d_bwd_filter: partial sums, fixed for every thread count */
};

typedef struct {
  FusePlan *p;
  const IrGraph *g;
  int *kern;          /* node -> kernel (index into p->k, build order), -1 none */
  int *nuse, **use;   /* consumers per node, through p->in */
  bool *is_out;       /* the value of a kept output */
  int capk;
  int *stamp, stampv; /* DFS marks over kernels */
  int *dep, ndep, capdep;
  char *err;
  size_t errlen;
} Fz;

static void *xmalloc(size_t n) {
  void *q = calloc(1, n ? n : 1);
  if (!q) {
    fprintf(stderr, "ltl: out of memory\n");
    exit(1);
  }
  return q;
}

static void *xrealloc(void *q, size_t n) {
  q = realloc(q, n ? n : 1);
  if (!q) {
    fprintf(stderr, "ltl: out of memory\n");
    exit(1);
  }
  return q;
}

const char *fuse_kind_name(FuseKind k) {
  static const char *const names[] = {"elemwise", "gemm", "reduce", "softmax", "argmax",
                                      "class_loss", "pair_loss", "conv", "pool", "take", "copy",
                                      "fallback"};
  return k < FUSE_NKINDS ? names[k] : "?";
}

static const IrNode *N(const Fz *z, int id) { return &z->g->node[id]; }

static void contig_strides(IrShape s, int64_t *st) {
  int64_t acc = 1;
  for (int i = s.rank - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s.d[i];
  }
}

/* Whether strides st walk shape s in row-major order without gaps (size-1 dims ignored). */
static bool contiguous(IrShape s, const int64_t *st) {
  int64_t acc = 1;
  for (int i = s.rank - 1; i >= 0; i--) {
    if (s.d[i] != 1 && st[i] != acc)
      return false;
    acc *= s.d[i];
  }
  return true;
}

static bool is_layout(IrOp op) {
  return op == IR_RESHAPE || op == IR_PERMUTE || op == IR_BROADCAST || op == IR_SLICE;
}

/* Dtypes the generated loops handle (bf16 and f16 go to the fallback). */
static bool cpu_dtype(IrDtype t) {
  return t == IR_F32 || t == IR_F64 || t == IR_I64 || t == IR_I32 || t == IR_U8 || t == IR_BOOL;
}

static bool is_elem_op(IrOp op) {
  switch (op) {
  case IR_NEG: case IR_ABS: case IR_SIGN: case IR_EXP: case IR_LOG: case IR_SQRT:
  case IR_RSQRT: case IR_TANH: case IR_SIGMOID: case IR_ERF: case IR_RELU: case IR_GELU:
  case IR_LEAKY_RELU: case IR_CAST: case IR_DETACH: case IR_ADD: case IR_SUB: case IR_MUL:
  case IR_DIV: case IR_POW: case IR_MAXIMUM: case IR_MINIMUM: case IR_EQ: case IR_NE:
  case IR_LT: case IR_LE: case IR_GT: case IR_GE: case IR_WHERE: case IR_ONE_HOT:
  case IR_DROPOUT: case IR_RAND_UNIFORM: case IR_RAND_NORMAL:
    return true;
  default:
    return false;
  }
}

/* An elementwise node the loop generator handles: its dtypes, and no integer division or
 * power (the interpreter divides integers as doubles; rare enough for the fallback). */
static bool elem_ok(const Fz *z, int id) {
  const IrNode *n = N(z, id);
  IrDtype from = n->nin ? N(z, n->in[0])->dtype : n->dtype;
  if (n->op == IR_CAST && ((from == IR_F32 && (n->dtype == IR_BF16 || n->dtype == IR_F16)) ||
                           (n->dtype == IR_F32 && (from == IR_BF16 || from == IR_F16))))
    return true; /* the precision casts: 16-bit values travel in f32 registers */
  if (!is_elem_op(n->op) || !cpu_dtype(n->dtype))
    return false;
  for (int k = 0; k < n->nin; k++)
    if (!cpu_dtype(N(z, n->in[k])->dtype))
      return false;
  bool fl = ir_dtype_is_float(n->dtype);
  switch (n->op) {
  case IR_DIV: case IR_POW: case IR_EXP: case IR_LOG: case IR_SQRT: case IR_RSQRT:
  case IR_TANH: case IR_SIGMOID: case IR_ERF: case IR_GELU: case IR_LEAKY_RELU:
  case IR_RAND_NORMAL: case IR_RAND_UNIFORM: case IR_ONE_HOT:
    return fl;
  case IR_DROPOUT:
    return fl && !ir_dtype_is_float(N(z, n->in[1])->dtype);
  case IR_ADD: case IR_SUB: case IR_MUL: case IR_NEG: case IR_ABS: case IR_SIGN: case IR_RELU:
    return n->dtype != IR_BOOL;
  default:
    return true;
  }
}

/* A constant with one value, possibly seen through layout ops: *v gets it. */
static bool splat_value(const IrGraph *g, int id, double *v) {
  while (is_layout(g->node[id].op))
    id = g->node[id].in[0];
  const IrNode *n = &g->node[id];
  if (n->op != IR_CONST)
    return false;
  if (n->data) {
    int64_t k = ir_numel(n->shape);
    for (int64_t i = 1; i < k; i++)
      if (n->data[i] != n->data[0])
        return false;
    if (k == 0)
      return false;
  }
  *v = n->data ? n->data[0] : n->a.value;
  return true;
}

/* ---- kernels ---- */

static int new_kernel(Fz *z, FuseKind kind, int op) {
  FusePlan *p = z->p;
  if (p->nk == z->capk) {
    z->capk = z->capk ? 2 * z->capk : 64;
    p->k = xrealloc(p->k, (size_t)z->capk * sizeof *p->k);
  }
  FuseKernel *k = &p->k[p->nk];
  *k = (FuseKernel){.kind = kind, .op = op, .result = op, .bias = -1, .nparts = 1,
                    .copy_src = -1, .copy_dst = -1};
  if (op >= 0)
    k->shape = N(z, op)->shape;
  return p->nk++;
}

static void add_member(Fz *z, int kid, int id) {
  FuseKernel *k = &z->p->k[kid];
  k->node = xrealloc(k->node, (size_t)(k->nnode + 1) * sizeof *k->node);
  k->node[k->nnode++] = id;
  z->kern[id] = kid;
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* The kernel whose bytes value v reads (through views), or -1 (inputs, constants). */
static int producer(const Fz *z, int v) {
  const FuseValue *fv = &z->p->val[v];
  if (fv->how == FUSE_IMM)
    return -1;
  int of = fv->how == FUSE_VIEW ? fv->of : v;
  return z->kern[of];
}

static void push_dep(Fz *z, int d) {
  if (z->ndep == z->capdep) {
    z->capdep = z->capdep ? 2 * z->capdep : 64;
    z->dep = xrealloc(z->dep, (size_t)z->capdep * sizeof *z->dep);
  }
  z->dep[z->ndep++] = d;
}

/* Kernels kernel kid reads from (other than itself), into z->dep. */
static void kernel_deps(Fz *z, int kid) {
  FuseKernel *k = &z->p->k[kid];
  z->ndep = 0;
  for (int i = 0; i < k->nnode; i++) {
    const IrNode *n = N(z, k->node[i]);
    for (int j = 0; j < n->nin; j++) {
      int d = producer(z, z->p->in[k->node[i]][j]);
      if (d >= 0 && d != kid)
        push_dep(z, d);
    }
  }
  if (k->kind == FUSE_COPY) {
    int d = producer(z, k->copy_src);
    if (d >= 0 && d != kid)
      push_dep(z, d);
  }
}

/* Whether kernel `from` depends, through any chain of kernels, on a kernel marked in `in`. */
static bool reaches(Fz *z, int from, const bool *in) {
  int *stack = xmalloc((size_t)z->p->nk * sizeof *stack), top = 0;
  z->stampv++;
  stack[top++] = from;
  z->stamp[from] = z->stampv;
  bool found = false;
  while (top && !found) {
    int k = stack[--top];
    if (in[k]) {
      found = true;
      break;
    }
    kernel_deps(z, k);
    for (int i = 0; i < z->ndep; i++) {
      int d = z->dep[i];
      if (z->stamp[d] != z->stampv) {
        z->stamp[d] = z->stampv;
        stack[top++] = d;
      }
    }
  }
  free(stack);
  return found;
}

/* Can elementwise node id join the union of the kernels in cand (all ELEMWISE loops of its
 * shape)?  Not when a kernel it or they read from depends on one of them: a cycle. */
static bool can_join(Fz *z, int id, const int *cand, int ncand) {
  bool *in = xmalloc((size_t)z->p->nk);
  for (int i = 0; i < ncand; i++)
    in[cand[i]] = true;
  /* every kernel the merged loop would read from */
  int *ext = NULL, next = 0;
  for (int i = 0; i < ncand; i++) {
    kernel_deps(z, cand[i]);
    ext = xrealloc(ext, (size_t)(next + z->ndep + 8) * sizeof *ext);
    for (int j = 0; j < z->ndep; j++)
      if (!in[z->dep[j]])
        ext[next++] = z->dep[j];
  }
  const IrNode *n = N(z, id);
  ext = xrealloc(ext, (size_t)(next + n->nin + 1) * sizeof *ext);
  bool ok = true;
  /* a member of one loop reading another's value from memory (a copy loop reads its
   * operand through a view): merged, it would read what the loop has not written yet */
  for (int i = 0; ok && ncand > 1 && i < ncand; i++) {
    const FuseKernel *k = &z->p->k[cand[i]];
    for (int m = 0; ok && m < k->nnode; m++) {
      const IrNode *mn = N(z, k->node[m]);
      for (int j = 0; j < mn->nin; j++) {
        int v = z->p->in[k->node[m]][j], d = producer(z, v);
        if (d >= 0 && d != cand[i] && in[d] &&
            (is_layout(mn->op) || z->p->val[v].how == FUSE_VIEW ||
             !ir_shape_eq(N(z, v)->shape, mn->shape)))
          ok = false;
      }
    }
  }
  for (int j = 0; j < n->nin; j++) {
    int v = z->p->in[id][j], d = producer(z, v);
    if (d < 0)
      continue;
    if (in[d]) { /* read from memory (a broadcast or a view) of a loop it would join */
      if (z->p->val[v].how == FUSE_VIEW || !ir_shape_eq(N(z, v)->shape, n->shape))
        ok = false;
      continue;
    }
    ext[next++] = d;
  }
  for (int i = 0; ok && i < next; i++)
    if (reaches(z, ext[i], in))
      ok = false;
  free(ext);
  free(in);
  return ok;
}

static void merge_into(Fz *z, int dst, int src) {
  FuseKernel *s = &z->p->k[src];
  for (int i = 0; i < s->nnode; i++)
    add_member(z, dst, s->node[i]);
  free(s->node);
  s->node = NULL;
  s->nnode = 0;
  s->kind = FUSE_NKINDS; /* dead */
  FuseKernel *d = &z->p->k[dst];
  qsort(d->node, (size_t)d->nnode, sizeof *d->node, cmp_int);
}

static void join_elementwise(Fz *z, int id) {
  const IrNode *n = N(z, id);
  int cand[8], ncand = 0;
  for (int j = 0; j < n->nin && ncand < 8; j++) {
    int v = z->p->in[id][j], kv = z->kern[v];
    if (kv < 0 || z->p->k[kv].kind != FUSE_ELEMWISE || z->p->val[v].how == FUSE_VIEW ||
        !ir_shape_eq(N(z, v)->shape, n->shape) || !ir_shape_eq(z->p->k[kv].shape, n->shape))
      continue;
    bool dup = false;
    for (int i = 0; i < ncand; i++)
      dup |= cand[i] == kv;
    if (!dup)
      cand[ncand++] = kv;
  }
  int target = -1;
  if (ncand > 0 && can_join(z, id, cand, ncand)) {
    target = cand[0];
    for (int i = 1; i < ncand; i++)
      merge_into(z, target, cand[i]);
  } else {
    for (int i = 0; i < ncand && target < 0; i++)
      if (can_join(z, id, &cand[i], 1))
        target = cand[i];
  }
  if (target < 0) {
    target = new_kernel(z, FUSE_ELEMWISE, -1);
    z->p->k[target].shape = n->shape;
  }
  add_member(z, target, id);
}

/* ---- views ---- */

/* The view a layout node makes of its operand: false when it has none (a reshape of a
 * non-contiguous view). The operand's of / voff / stride describe its bytes. */
static bool layout_view(const FusePlan *p, int id, FuseValue *out) {
  const IrNode *n = &p->g->node[id];
  int a = p->in[id][0];
  const FuseValue *v = &p->val[a];
  IrShape s = p->g->node[a].shape;
  out->of = v->of;
  out->voff = v->voff;
  switch (n->op) {
  case IR_RESHAPE:
    if (!contiguous(s, v->stride))
      return false;
    contig_strides(n->shape, out->stride);
    return true;
  case IR_PERMUTE:
    for (int i = 0; i < n->shape.rank; i++)
      out->stride[i] = v->stride[n->a.axes[i]];
    return true;
  case IR_BROADCAST:
    for (int i = 0; i < n->shape.rank; i++) {
      int j = i - (n->shape.rank - s.rank);
      out->stride[i] = j < 0 || s.d[j] == 1 ? 0 : v->stride[j];
    }
    return true;
  case IR_SLICE:
    for (int i = 0; i < n->shape.rank; i++) {
      out->voff += n->a.start[i] * v->stride[i];
      out->stride[i] = v->stride[i] * n->a.step[i];
    }
    return true;
  default:
    return false;
  }
}

bool fuse_layout_view(const FusePlan *p, int id, FuseValue *out) { return layout_view(p, id, out); }

/* ---- GEMM and conv epilogues ---- */

/* Operand b of an add can be the GEMM's bias: it varies only along the last axis. */
static bool bias_shaped(IrShape b, IrShape out) {
  if (b.rank > out.rank || b.rank == 0 || b.d[b.rank - 1] != out.d[out.rank - 1])
    return false;
  for (int i = 0; i < b.rank - 1; i++)
    if (b.d[i] != 1)
      return false;
  return true;
}

/* Operand b can be a conv's bias: it varies only along the channel axis of [N, O, H, W]. */
static bool channel_shaped(IrShape b, IrShape out) {
  if (b.rank > 4 || b.rank < 3)
    return false;
  for (int i = 0; i < b.rank; i++) {
    int j = i + 4 - b.rank;
    if (b.d[i] != (j == 1 ? out.d[1] : 1))
      return false;
  }
  return true;
}

/* After `pre` = producer + bias: absorbs a relu when every other consumer of pre is
 * gt(pre, c) with c >= 0, which then reads relu(pre) instead (same truth value, NaN too). */
static void absorb_relu(Fz *z, int kid, int pre) {
  if (z->is_out[pre])
    return;
  int relu = -1;
  for (int i = 0; i < z->nuse[pre]; i++) {
    int u = z->use[pre][i];
    const IrNode *un = N(z, u);
    double c;
    if (un->op == IR_RELU && relu < 0 && un->dtype == IR_F32)
      relu = u;
    else if (!(un->op == IR_GT && z->p->in[u][0] == pre && z->p->in[u][1] != pre &&
               splat_value(z->g, z->p->in[u][1], &c) && c >= 0))
      return;
  }
  if (relu < 0)
    return;
  for (int i = 0; i < z->nuse[pre]; i++) {
    int u = z->use[pre][i];
    if (u != relu) {
      z->p->in[u][0] = relu;
      z->use[relu] = xrealloc(z->use[relu], (size_t)(z->nuse[relu] + 1) * sizeof(int));
      z->use[relu][z->nuse[relu]++] = u;
    }
  }
  z->nuse[pre] = 1;
  z->use[pre][0] = relu;
  FuseKernel *k = &z->p->k[kid];
  k->relu = true;
  k->result = relu;
  add_member(z, kid, relu);
}

static void plan_gemm(Fz *z, int id) {
  int kid = new_kernel(z, FUSE_GEMM, id);
  add_member(z, kid, id);
  if (z->is_out[id] || z->nuse[id] != 1)
    return;
  int u = z->use[id][0];
  const IrNode *un = N(z, u);
  if (un->op == IR_ADD && N(z, id)->shape.rank >= 1) {
    int other = z->p->in[u][0] == id ? z->p->in[u][1] : z->p->in[u][0];
    if (other == id || N(z, other)->dtype != IR_F32 || !bias_shaped(N(z, other)->shape, un->shape) ||
        !ir_shape_eq(un->shape, N(z, id)->shape))
      return;
    FuseKernel *k = &z->p->k[kid];
    k->bias = other;
    k->result = u;
    add_member(z, kid, u);
    absorb_relu(z, kid, u);
  } else if (un->op == IR_PERMUTE) {
    int r = un->shape.rank;
    for (int i = 0; i < r - 2; i++)
      if (un->a.axes[i] != i)
        return;
    if (r < 2 || un->a.axes[r - 2] != r - 1 || un->a.axes[r - 1] != r - 2)
      return;
    FuseKernel *k = &z->p->k[kid];
    k->out_t = true;
    k->result = u;
    add_member(z, kid, u);
  }
}

static void plan_conv(Fz *z, int id) {
  const IrNode *n = N(z, id);
  int kid = new_kernel(z, FUSE_CONV, id);
  add_member(z, kid, id);
  if (n->op != IR_CONV2D || z->is_out[id] || z->nuse[id] != 1)
    return;
  int u = z->use[id][0];
  const IrNode *un = N(z, u);
  if (un->op != IR_ADD || !ir_shape_eq(un->shape, n->shape))
    return;
  int other = z->p->in[u][0] == id ? z->p->in[u][1] : z->p->in[u][0];
  if (other == id || N(z, other)->dtype != IR_F32 || !channel_shaped(N(z, other)->shape, n->shape))
    return;
  FuseKernel *k = &z->p->k[kid];
  k->bias = other;
  k->result = u;
  add_member(z, kid, u);
  absorb_relu(z, kid, u);
}

static bool conv_ok(const Fz *z, int id) {
  const IrNode *n = N(z, id);
  if (n->a.groups != 1 || n->dtype != IR_F32 || n->shape.rank != 4)
    return false;
  for (int k = 0; k < n->nin; k++)
    if (N(z, n->in[k])->dtype != IR_F32 || N(z, n->in[k])->shape.rank != 4)
      return false;
  return true;
}

/* ---- the main pass ---- */

static void plan_node(Fz *z, int id, IrLayout *lay) {
  FusePlan *p = z->p;
  const IrNode *n = N(z, id);
  FuseValue *v = &p->val[id];
  if (z->kern[id] >= 0)
    return; /* taken by an epilogue */
  switch (n->op) {
  case IR_INPUT: {
    v->how = FUSE_MEM;
    if (n->kind == IR_IN_DATA || n->kind == IR_IN_GRAD) {
      v->base = FUSE_BASE_DATA + p->ndata;
      p->data = xrealloc(p->data, (size_t)(p->ndata + 1) * sizeof *p->data);
      p->data[p->ndata++] = id;
      v->offset = 0;
    } else {
      int kind = n->kind;
      v->base = kind == IR_IN_PARAM ? FUSE_BASE_PARAM : kind == IR_IN_BUFFER ? FUSE_BASE_BUFFER
                                                                          : FUSE_BASE_STATE;
      for (int i = 0; i < lay[kind].n; i++)
        if (lay[kind].slot[i].value == id)
          v->offset = lay[kind].slot[i].offset;
    }
    v->bytes = ir_numel(n->shape) * ir_dtype_size(n->dtype);
    return;
  }
  case IR_CONST: {
    double c;
    if (splat_value(z->g, id, &c)) {
      v->how = FUSE_IMM;
      v->splat = true;
      v->imm = c;
      return;
    }
    int64_t k = ir_numel(n->shape), size = ir_dtype_size(n->dtype);
    int64_t at = (p->const_bytes + 63) & ~(int64_t)63;
    p->consts = xrealloc(p->consts, (size_t)(at + k * size + 64));
    memset(p->consts + p->const_bytes, 0, (size_t)(at - p->const_bytes));
    for (int64_t i = 0; i < k; i++)
      ir_store(n->dtype, p->consts + at, i, n->data[i]);
    p->const_bytes = at + k * size;
    *v = (FuseValue){.how = FUSE_MEM, .base = FUSE_BASE_CONST, .offset = at, .bytes = k * size,
                     .of = id, .kernel = -1, .last = -1};
    contig_strides(n->shape, v->stride);
    return;
  }
  default:
    break;
  }
  if (is_layout(n->op)) {
    double c;
    if (splat_value(z->g, id, &c)) {
      v->how = FUSE_IMM;
      v->splat = true;
      v->imm = c;
      return;
    }
    FuseValue w = *v;
    if (layout_view(p, id, &w)) {
      *v = w;
      v->how = FUSE_VIEW;
      return;
    }
    /* a copy loop; a reshape of a strided view walks its operand's shape, whose row-major
     * order is the result's */
    int kid = new_kernel(z, FUSE_ELEMWISE, -1);
    p->k[kid].shape = n->op == IR_RESHAPE ? N(z, n->in[0])->shape : n->shape;
    add_member(z, kid, id);
    return;
  }
  bool f32 = n->dtype == IR_F32, fl = n->dtype == IR_F32 || n->dtype == IR_F64;
  IrDtype t0 = n->nin > 0 ? N(z, n->in[0])->dtype : n->dtype;
  IrDtype t1 = n->nin > 1 ? N(z, n->in[1])->dtype : n->dtype;
  FuseKind kind = FUSE_FALLBACK;
  switch (n->op) {
  case IR_MATMUL:
    if (f32 && t0 == IR_F32 && t1 == IR_F32 && N(z, n->in[0])->shape.rank >= 2 &&
        N(z, n->in[1])->shape.rank >= 2) {
      plan_gemm(z, id);
      return;
    }
    break;
  case IR_CONV2D: case IR_CONV2D_BWD_DATA: case IR_CONV2D_BWD_FILTER:
    if (conv_ok(z, id)) {
      plan_conv(z, id);
      return;
    }
    break;
  case IR_MAX_POOL2D: case IR_MAX_POOL2D_BWD:
    if (f32 && t0 == IR_F32 && t1 == IR_F32 && n->shape.rank == 4)
      kind = FUSE_POOL;
    break;
  case IR_TAKE: case IR_TAKE_GRAD:
    if ((t1 == IR_I64 || t1 == IR_I32) && t0 == n->dtype && (n->op == IR_TAKE ? cpu_dtype(n->dtype) : fl))
      kind = FUSE_TAKE;
    break;
  case IR_SUM: case IR_MEAN: case IR_MAX:
    if (t0 == n->dtype && (fl || ((n->dtype == IR_I64 || n->dtype == IR_I32) && n->op != IR_MEAN)))
      kind = FUSE_REDUCE;
    break;
  case IR_SOFTMAX: case IR_LOG_SOFTMAX:
    if (fl && t0 == n->dtype && n->shape.rank >= 1)
      kind = FUSE_SOFTMAX;
    break;
  case IR_ARGMAX:
    if ((t0 == IR_F32 || t0 == IR_F64) && cpu_dtype(n->dtype) && !ir_dtype_is_float(n->dtype))
      kind = FUSE_ARGMAX;
    break;
  case IR_CROSS_ENTROPY: case IR_NLL_LOSS:
    if (fl && t0 == n->dtype && (t1 == IR_I64 || t1 == IR_I32) &&
        N(z, n->in[0])->shape.rank == 2)
      kind = FUSE_CLASS_LOSS;
    break;
  case IR_MSE_LOSS: case IR_BCE_WITH_LOGITS:
    if (fl && t0 == n->dtype && t1 == n->dtype)
      kind = FUSE_PAIR_LOSS;
    break;
  default:
    if (elem_ok(z, id)) {
      join_elementwise(z, id);
      return;
    }
    break;
  }
  int kid = new_kernel(z, kind, id);
  add_member(z, kid, id);
}

/* ---- requirements: bytes that a consumer must see contiguous, or at all ---- */

/* Turns view (or immediate) v into bytes of its own: a copy loop, or the constant buffer. */
static void materialise(Fz *z, int v) {
  FusePlan *p = z->p;
  FuseValue *fv = &p->val[v];
  const IrNode *n = N(z, v);
  if (fv->how == FUSE_IMM) {
    int64_t k = ir_numel(n->shape), size = ir_dtype_size(n->dtype);
    int64_t at = (p->const_bytes + 63) & ~(int64_t)63;
    p->consts = xrealloc(p->consts, (size_t)(at + k * size + 64));
    memset(p->consts + p->const_bytes, 0, (size_t)(at - p->const_bytes));
    for (int64_t i = 0; i < k; i++)
      ir_store(n->dtype, p->consts + at, i, fv->imm);
    p->const_bytes = at + k * size;
    fv->how = FUSE_MEM;
    fv->base = FUSE_BASE_CONST;
    fv->offset = at;
    fv->bytes = k * size;
    fv->of = v;
    fv->voff = 0;
    contig_strides(n->shape, fv->stride);
    return;
  }
  if (fv->how != FUSE_VIEW)
    return;
  int kid = new_kernel(z, FUSE_ELEMWISE, -1);
  p->k[kid].shape = n->shape;
  add_member(z, kid, v);
  fv->how = FUSE_NONE; /* decided with the other loop values */
  fv->of = v;
  fv->voff = 0;
  contig_strides(n->shape, fv->stride);
}

/* A matrix operand [.., R, C] a GEMM reads as stored (unit column stride) or transposed
 * (unit row stride), with a leading dimension covering the other side. */
static bool gemm_operand_ok(const Fz *z, int v) {
  const FuseValue *fv = &z->p->val[v];
  if (fv->how == FUSE_IMM)
    return false;
  IrShape s = N(z, v)->shape;
  int64_t R = s.d[s.rank - 2], C = s.d[s.rank - 1];
  int64_t sr = fv->stride[s.rank - 2], sc = fv->stride[s.rank - 1];
  bool rowmajor = (C == 1 || sc == 1) && (R == 1 || sr >= C);
  bool colmajor = (R == 1 || sr == 1) && (C == 1 || sc >= R);
  for (int i = 0; i < s.rank - 2; i++)
    if (fv->stride[i] < 0)
      return false;
  return rowmajor || colmajor;
}

static bool contig_value(const Fz *z, int v) {
  const FuseValue *fv = &z->p->val[v];
  if (fv->how == FUSE_IMM)
    return false;
  return fv->how != FUSE_VIEW || contiguous(N(z, v)->shape, fv->stride);
}

static void requirements(Fz *z) {
  FusePlan *p = z->p;
  int nk0 = p->nk;
  for (int kid = 0; kid < nk0; kid++) {
    FuseKernel *k = &p->k[kid];
    switch (k->kind) {
    case FUSE_GEMM: {
      for (int j = 0; j < 2; j++) {
        int v = p->in[k->op][j];
        if (!gemm_operand_ok(z, v))
          materialise(z, v);
      }
      if (k->bias >= 0) {
        const FuseValue *b = &p->val[k->bias];
        IrShape bs = N(z, k->bias)->shape;
        if (b->how == FUSE_IMM || (bs.d[bs.rank - 1] > 1 && b->stride[bs.rank - 1] != 1))
          materialise(z, k->bias);
      }
      break;
    }
    case FUSE_CONV: case FUSE_POOL: case FUSE_FALLBACK: case FUSE_CLASS_LOSS:
    case FUSE_PAIR_LOSS: case FUSE_TAKE:
      for (int i = 0; i < k->nnode; i++) {
        int id = k->node[i];
        for (int j = 0; j < N(z, id)->nin; j++) {
          int v = p->in[id][j];
          if (z->kern[v] == kid)
            continue;
          if (k->kind == FUSE_CONV && v == k->bias) { /* read with a channel stride */
            if (p->val[v].how == FUSE_IMM)
              materialise(z, v);
            continue;
          }
          if (!contig_value(z, v))
            materialise(z, v);
        }
      }
      break;
    case FUSE_REDUCE: case FUSE_SOFTMAX: case FUSE_ARGMAX:
      if (p->val[p->in[k->op][0]].how == FUSE_IMM)
        materialise(z, p->in[k->op][0]);
      break;
    default:
      break;
    }
  }
  /* outputs are read as contiguous bytes */
  for (int i = 0; i < z->g->nout; i++) {
    const IrOutput *o = &z->g->out[i];
    if (o->kind == IR_OUT_GRAD && !p->opt.grads)
      continue;
    if (!contig_value(z, o->value))
      materialise(z, o->value);
  }
}

/* ---- order: kernels in a topological order, each as late as its first node allows ---- */

static void order_kernels(Fz *z) {
  FusePlan *p = z->p;
  int nk = p->nk;
  int *indeg = xmalloc((size_t)nk * sizeof *indeg), **succ = xmalloc((size_t)nk * sizeof *succ);
  int *nsucc = xmalloc((size_t)nk * sizeof *nsucc), *key = xmalloc((size_t)nk * sizeof *key);
  bool *alive = xmalloc((size_t)nk), *done = xmalloc((size_t)nk);
  for (int k = 0; k < nk; k++) {
    alive[k] = p->k[k].kind != FUSE_NKINDS;
    key[k] = INT32_MAX;
    for (int i = 0; i < p->k[k].nnode; i++)
      key[k] = p->k[k].node[i] < key[k] ? p->k[k].node[i] : key[k];
    if (p->k[k].kind == FUSE_COPY)
      key[k] = INT32_MAX - 1;
    /* ddp: a bucket's all_reduce goes as soon as its gradients are made, so that on a GPU the
     * rest of backward runs while the collective stream reduces it */
    if (p->k[k].kind == FUSE_FALLBACK && N(z, p->k[k].op)->op == IR_ALLREDUCE)
      key[k] = -1;
  }
  /* An UPDATE's loop waits while an independent kernel still has to read the old value of
   * its target: then the update can overwrite the target in place (plan_updates). */
  int *writes = xmalloc((size_t)z->g->nout * sizeof *writes), nwrites = 0; /* output index */
  for (int i = 0; i < z->g->nout; i++)
    if (z->g->out[i].kind == IR_OUT_UPDATE && z->kern[z->g->out[i].value] >= 0)
      writes[nwrites++] = i;
  bool *reads = xmalloc((size_t)nk * (size_t)(nwrites + 1)); /* reads[k * nwrites + w] */
  for (int k = 0; k < nk; k++)
    for (int i = 0; alive[k] && i < p->k[k].nnode; i++) {
      int id = p->k[k].node[i];
      for (int j = 0; j < N(z, id)->nin; j++) {
        int v = p->in[id][j], b = p->val[v].how == FUSE_VIEW ? p->val[v].of : v;
        for (int w = 0; w < nwrites && p->val[v].how != FUSE_IMM; w++)
          if (b == z->g->out[writes[w]].target && z->kern[z->g->out[writes[w]].value] != k)
            reads[k * nwrites + w] = true;
      }
    }
  for (int k = 0; k < nk; k++) {
    if (!alive[k])
      continue;
    kernel_deps(z, k);
    if (z->ndep > 1)
      qsort(z->dep, (size_t)z->ndep, sizeof *z->dep, cmp_int);
    for (int i = 0; i < z->ndep; i++) {
      if (i > 0 && z->dep[i] == z->dep[i - 1])
        continue;
      int d = z->dep[i];
      succ[d] = xrealloc(succ[d], (size_t)(nsucc[d] + 1) * sizeof **succ);
      succ[d][nsucc[d]++] = k;
      indeg[k]++;
    }
  }
  /* the ready kernel with the smallest first node goes next: close to graph order, so
   * values die soon after they are made */
  int *order = xmalloc((size_t)nk * sizeof *order), n = 0;
  bool *self = xmalloc((size_t)nk);
  for (;;) {
    int best = -1, any = -1;
    for (int k = 0; k < nk; k++) {
      if (!alive[k] || done[k] || indeg[k] != 0 || (best >= 0 && key[k] >= key[best]))
        continue;
      if (any < 0 || key[k] < key[any])
        any = k;
      bool blocked = false;
      for (int w = 0; w < nwrites && !blocked; w++) {
        if (z->kern[z->g->out[writes[w]].value] != k)
          continue;
        self[k] = true;
        for (int r = 0; r < nk && !blocked; r++)
          if (r != k && alive[r] && !done[r] && reads[r * nwrites + w] && !reaches(z, r, self))
            blocked = true;
        self[k] = false;
      }
      if (!blocked)
        best = k;
    }
    if (best < 0)
      best = any;
    if (best < 0)
      break;
    done[best] = true;
    order[n++] = best;
    for (int i = 0; i < nsucc[best]; i++)
      indeg[succ[best][i]]--;
  }
  FuseKernel *nkern = xmalloc((size_t)(n + 1) * sizeof *nkern);
  int *pos = xmalloc((size_t)nk * sizeof *pos);
  for (int k = 0; k < nk; k++)
    pos[k] = -1;
  for (int i = 0; i < n; i++) {
    nkern[i] = p->k[order[i]];
    pos[order[i]] = i;
  }
  for (int k = 0; k < nk; k++)
    if (!alive[k] || pos[k] < 0)
      free(p->k[k].node);
  for (int v = 0; v < z->g->n; v++)
    if (z->kern[v] >= 0)
      z->kern[v] = pos[z->kern[v]];
  free(p->k);
  p->k = nkern;
  p->nk = n;
  z->capk = n + 1;
  for (int k = 0; k < nk; k++)
    free(succ[k]);
  free(succ);
  free(nsucc);
  free(indeg);
  free(key);
  free(writes);
  free(reads);
  free(self);
  free(alive);
  free(done);
  free(order);
  free(pos);
}

/* ---- bytes ---- */

/* Which kernel members are stored: read outside their loop, or kept outputs. */
static void decide_storage(Fz *z) {
  FusePlan *p = z->p;
  for (int kid = 0; kid < p->nk; kid++) {
    FuseKernel *k = &p->k[kid];
    free(k->out);
    k->out = NULL;
    k->nout = 0;
    for (int i = 0; i < k->nnode; i++) {
      int id = k->node[i];
      FuseValue *v = &p->val[id];
      v->kernel = kid;
      bool stored;
      if (k->kind == FUSE_GEMM || k->kind == FUSE_CONV)
        stored = id == k->result;
      else if (k->kind == FUSE_ELEMWISE) {
        stored = z->is_out[id];
        for (int u = 0; u < z->nuse[id] && !stored; u++)
          stored = z->kern[z->use[id][u]] != kid;
      } else
        stored = true;
      if (stored) {
        v->how = FUSE_MEM;
        v->base = FUSE_BASE_ARENA;
        v->of = id;
        v->voff = 0;
        v->bytes = ir_numel(N(z, id)->shape) * ir_dtype_size(N(z, id)->dtype);
        contig_strides(N(z, id)->shape, v->stride);
        k->out = xrealloc(k->out, (size_t)(k->nout + 1) * sizeof *k->out);
        k->out[k->nout++] = id;
      } else {
        v->how = k->kind == FUSE_ELEMWISE ? FUSE_REG : FUSE_NONE;
      }
    }
  }
}

/* The base value whose bytes v reads, or -1. */
static int bytes_of(const FusePlan *p, int v) {
  const FuseValue *fv = &p->val[v];
  if (fv->how == FUSE_MEM)
    return v;
  if (fv->how == FUSE_VIEW)
    return fv->of;
  return -1;
}

static bool reads_bytes(const FusePlan *p, int kid, int target, bool *same_index_only) {
  const FuseKernel *k = &p->k[kid];
  bool any = false;
  *same_index_only = true;
  for (int i = 0; i < k->nnode; i++) {
    int id = k->node[i];
    const IrNode *n = &p->g->node[id];
    for (int j = 0; j < n->nin; j++) {
      int v = p->in[id][j];
      if (bytes_of(p, v) != target || p->val[v].kernel == kid)
        continue;
      any = true;
      /* same element: a direct operand of an elementwise op of the loop's shape (a copy
       * loop's permute of a square matrix has that shape too, but transposes) */
      if (k->kind != FUSE_ELEMWISE || v != target || is_layout(n->op) ||
          !ir_shape_eq(p->g->node[v].shape, k->shape) || !ir_shape_eq(n->shape, k->shape))
        *same_index_only = false;
    }
  }
  if (k->kind == FUSE_COPY && bytes_of(p, k->copy_src) == target) {
    any = true;
    *same_index_only = false;
  }
  return any;
}

/* UPDATE outputs: into the input's slot when the loop computing them is the last reader of
 * the old value and reads it only at the same element; else a copy at the end. */
static int plan_updates(Fz *z) {
  FusePlan *p = z->p;
  const IrGraph *g = z->g;
  for (int i = 0; i < g->nout; i++) {
    const IrOutput *o = &g->out[i];
    if (o->kind != IR_OUT_UPDATE)
      continue;
    int v = o->value, t = o->target;
    if (v == t)
      continue;
    FuseValue *fv = &p->val[v];
    bool inplace = fv->kernel >= 0 && p->k[fv->kernel].kind == FUSE_ELEMWISE &&
                   fv->base == FUSE_BASE_ARENA && (fv->how == FUSE_MEM || fv->how == FUSE_REG);
    for (int j = 0; j < g->nout && inplace; j++) {
      const IrOutput *q = &g->out[j];
      if (q->kind == IR_OUT_GRAD && !p->opt.grads)
        continue;
      if (bytes_of(p, q->value) == t)
        inplace = false; /* the old value is an output too */
      if (j != i && q->kind == IR_OUT_UPDATE && q->value == v)
        inplace = false; /* one value, two slots: copy */
    }
    for (int kid = 0; kid < p->nk && inplace; kid++) {
      bool same;
      if (!reads_bytes(p, kid, t, &same))
        continue;
      if (kid > fv->kernel || (kid == fv->kernel && !same))
        inplace = false;
    }
    if (inplace) {
      FuseKernel *k = &p->k[fv->kernel];
      if (fv->how == FUSE_REG) {
        k->out = xrealloc(k->out, (size_t)(k->nout + 1) * sizeof *k->out);
        k->out[k->nout++] = v;
      }
      fv->how = FUSE_MEM;
      fv->base = p->val[t].base;
      fv->offset = p->val[t].offset;
      fv->bytes = p->val[t].bytes;
      fv->of = v;
      fv->voff = 0;
      contig_strides(g->node[v].shape, fv->stride);
      continue;
    }
    int src = bytes_of(p, v);
    if (src >= 0 && p->val[src].base >= FUSE_BASE_PARAM && p->val[src].base <= FUSE_BASE_STATE) {
      snprintf(z->err, z->errlen, "update of \"%s\" from another input (%%%d) is not supported",
               g->node[t].name ? g->node[t].name : "?", v);
      return -1;
    }
    int kid = new_kernel(z, FUSE_COPY, -1);
    p->k[kid].copy_src = v;
    p->k[kid].copy_dst = t;
    p->k[kid].shape = g->node[v].shape;
  }
  return 0;
}

typedef struct {
  int64_t off, size;
} Span;

typedef struct {
  Span *free;
  int nfree, cap;
  int64_t top;
} Arena;

static int64_t arena_alloc(Arena *a, int64_t size) {
  size = (size + 63) & ~(int64_t)63;
  if (size == 0)
    size = 64;
  int best = -1;
  for (int i = 0; i < a->nfree; i++)
    if (a->free[i].size >= size && (best < 0 || a->free[i].size < a->free[best].size))
      best = i;
  if (best >= 0) {
    int64_t off = a->free[best].off;
    a->free[best].off += size;
    a->free[best].size -= size;
    if (a->free[best].size == 0) {
      memmove(&a->free[best], &a->free[best + 1], (size_t)(a->nfree - best - 1) * sizeof *a->free);
      a->nfree--;
    }
    return off;
  }
  /* grow the top, absorbing a free span that ends there */
  if (a->nfree && a->free[a->nfree - 1].off + a->free[a->nfree - 1].size == a->top) {
    int64_t off = a->free[a->nfree - 1].off;
    a->nfree--;
    a->top = off + size;
    return off;
  }
  int64_t off = a->top;
  a->top += size;
  return off;
}

static void arena_free(Arena *a, int64_t off, int64_t size) {
  size = (size + 63) & ~(int64_t)63;
  if (size == 0)
    size = 64;
  if (a->nfree == a->cap) {
    a->cap = a->cap ? 2 * a->cap : 32;
    a->free = xrealloc(a->free, (size_t)a->cap * sizeof *a->free);
  }
  int i = 0;
  while (i < a->nfree && a->free[i].off < off)
    i++;
  memmove(&a->free[i + 1], &a->free[i], (size_t)(a->nfree - i) * sizeof *a->free);
  a->free[i] = (Span){off, size};
  a->nfree++;
  if (i + 1 < a->nfree && a->free[i].off + a->free[i].size == a->free[i + 1].off) {
    a->free[i].size += a->free[i + 1].size;
    memmove(&a->free[i + 1], &a->free[i + 2], (size_t)(a->nfree - i - 2) * sizeof *a->free);
    a->nfree--;
  }
  if (i > 0 && a->free[i - 1].off + a->free[i - 1].size == a->free[i].off) {
    a->free[i - 1].size += a->free[i].size;
    memmove(&a->free[i], &a->free[i + 1], (size_t)(a->nfree - i - 1) * sizeof *a->free);
    a->nfree--;
  }
}

static int64_t round64(int64_t x) { return (x + 63) & ~(int64_t)63; }

/* Tasks and scratch bytes of each kernel. */
static void size_kernels(Fz *z) {
  FusePlan *p = z->p;
  const LlvmGemmBlocking *blk = p->opt.blk;
  int T = p->opt.nthreads;
  for (int kid = 0; kid < p->nk; kid++) {
    FuseKernel *k = &p->k[kid];
    const IrNode *n = k->op >= 0 ? N(z, k->op) : NULL;
    k->nparts = 1;
    k->scratch_bytes = 0;
    switch (k->kind) {
    case FUSE_ELEMWISE: case FUSE_COPY: {
      int64_t e = ir_numel(k->shape);
      if (k->kind == FUSE_ELEMWISE && e >= ELEM_PAR_ELEMS && k->shape.rank > 0)
        k->nparts = T;
      break;
    }
    case FUSE_GEMM: {
      IrShape os = n->shape, as = N(z, p->in[k->op][0])->shape;
      int64_t M = os.d[os.rank - 2], Nn = os.d[os.rank - 1], K = as.d[as.rank - 1];
      int64_t batch = ir_numel(os) / (M * Nn > 0 ? M * Nn : 1);
      double flops = 2.0 * (double)M * (double)Nn * (double)K * (double)batch;
      int64_t tiles = ((M + blk->mr - 1) / blk->mr) * ((Nn + blk->nr - 1) / blk->nr);
      if (flops >= GEMM_PAR_FLOPS)
        k->nparts = batch > 1 ? (int)(batch < T ? batch : T) : (int)(tiles < T ? tiles : T);
      if (k->nparts < 1)
        k->nparts = 1;
      k->scratch_bytes = k->nparts * p->gemm_stride;
      break;
    }
    case FUSE_CONV: {
      const IrAttr *a = &n->a;
      IrShape xs = n->op == IR_CONV2D_BWD_DATA ? n->shape : N(z, p->in[k->op][0])->shape;
      IrShape ws = n->op == IR_CONV2D_BWD_FILTER ? n->shape : N(z, p->in[k->op][1])->shape;
      int64_t Nb = xs.d[0], CKK = ws.d[1] * ws.d[2] * ws.d[3];
      int64_t OH = (xs.d[2] + 2 * a->pad[0] - a->dil[0] * (ws.d[2] - 1) - 1) / a->stride[0] + 1;
      int64_t OW = (xs.d[3] + 2 * a->pad[1] - a->dil[1] * (ws.d[3] - 1) - 1) / a->stride[1] + 1;
      int64_t col = round64(CKK * OH * OW * 4);
      if (n->op == IR_CONV2D_BWD_FILTER) {
        k->nparts = (int)(Nb < CONV_FILTER_CHUNKS ? (Nb > 0 ? Nb : 1) : CONV_FILTER_CHUNKS);
        k->scratch_bytes = k->nparts * (col + p->gemm_stride + round64(ws.d[0] * CKK * 4));
      } else {
        k->nparts = (int)(Nb < T ? (Nb > 0 ? Nb : 1) : T);
        k->scratch_bytes = k->nparts * (col + p->gemm_stride);
      }
      break;
    }
    case FUSE_TAKE: { /* take: rows of the result; take_grad: its columns */
      IrShape xs = n->op == IR_TAKE ? N(z, p->in[k->op][0])->shape : n->shape;
      int64_t inner = 1;
      for (int i = n->a.axis + 1; i < xs.rank; i++)
        inner *= xs.d[i];
      if (ir_numel(n->shape) >= ELEM_PAR_ELEMS && (n->op == IR_TAKE || inner >= 64))
        k->nparts = T;
      break;
    }
    case FUSE_POOL: case FUSE_SOFTMAX: case FUSE_ARGMAX: case FUSE_REDUCE: {
      IrShape xs = N(z, p->in[k->op][0])->shape;
      int64_t e = ir_numel(xs), rows = ir_numel(n->shape);
      if (k->kind == FUSE_SOFTMAX)
        rows = e / (xs.d[n->a.axis] ? xs.d[n->a.axis] : 1);
      if (e >= ELEM_PAR_ELEMS && rows >= 2)
        k->nparts = T;
      if (k->kind == FUSE_REDUCE && (n->op == IR_SUM || n->op == IR_MEAN) && n->dtype == IR_F32)
        k->scratch_bytes = ir_numel(n->shape) * 8; /* double accumulators */
      break;
    }
    default:
      break;
    }
  }
}

static void plan_arena(Fz *z) {
  FusePlan *p = z->p;
  const IrGraph *g = z->g;
  int nk = p->nk;
  for (int v = 0; v < g->n; v++)
    p->val[v].last = -1;
  /* last reader of each value's bytes */
  for (int kid = 0; kid < nk; kid++) {
    const FuseKernel *k = &p->k[kid];
    for (int i = 0; i < k->nnode; i++) {
      const IrNode *n = N(z, k->node[i]);
      for (int j = 0; j < n->nin; j++) {
        int b = bytes_of(p, p->in[k->node[i]][j]);
        if (b >= 0 && p->val[b].kernel != kid)
          p->val[b].last = kid;
      }
    }
    if (k->kind == FUSE_COPY) {
      int b = bytes_of(p, k->copy_src);
      if (b >= 0)
        p->val[b].last = kid;
    }
  }
  for (int i = 0; i < g->nout; i++) {
    const IrOutput *o = &g->out[i];
    if (o->kind == IR_OUT_GRAD && !p->opt.grads)
      continue;
    int b = bytes_of(p, o->value);
    if (b >= 0)
      p->val[b].last = nk;
  }
  if (p->opt.no_reuse)
    for (int v = 0; v < g->n; v++)
      p->val[v].last = nk;
  /* kernel scratch (packing buffers, im2col columns, accumulators) is never live across
   * kernels: one region at the start of the arena serves them all */
  int64_t scratch = 0;
  for (int kid = 0; kid < nk; kid++)
    scratch = p->k[kid].scratch_bytes > scratch ? p->k[kid].scratch_bytes : scratch;
  Arena a = {.top = round64(scratch)};
  for (int kid = 0; kid < nk; kid++) {
    FuseKernel *k = &p->k[kid];
    for (int i = 0; i < k->nout; i++) {
      FuseValue *v = &p->val[k->out[i]];
      if (v->base == FUSE_BASE_ARENA && v->how == FUSE_MEM) {
        v->offset = arena_alloc(&a, v->bytes);
        if (v->last < kid)
          v->last = kid;
      }
    }
    k->scratch = 0;
    for (int v = 0; v < g->n; v++) { /* values whose last reader is this kernel */
      FuseValue *fv = &p->val[v];
      if (fv->how == FUSE_MEM && fv->base == FUSE_BASE_ARENA && fv->kernel >= 0 && fv->last == kid)
        arena_free(&a, fv->offset, fv->bytes);
    }
  }
  p->arena_bytes = a.top;
  free(a.free);
}

static void build_uses(Fz *z) {
  const IrGraph *g = z->g;
  for (int i = 0; i < g->n; i++)
    z->nuse[i] = 0;
  for (int i = 0; i < g->n; i++)
    for (int j = 0; j < g->node[i].nin; j++)
      z->nuse[z->p->in[i][j]]++;
  for (int i = 0; i < g->n; i++) {
    free(z->use[i]);
    z->use[i] = xmalloc((size_t)(z->nuse[i] + 1) * sizeof(int));
    z->nuse[i] = 0;
  }
  for (int i = 0; i < g->n; i++)
    for (int j = 0; j < g->node[i].nin; j++) {
      int v = z->p->in[i][j];
      bool dup = false;
      for (int u = 0; u < z->nuse[v]; u++)
        dup |= z->use[v][u] == i;
      if (!dup)
        z->use[v][z->nuse[v]++] = i;
    }
}

FusePlan *fuse_plan(const IrGraph *g, const FuseOptions *opt, char *err, size_t errlen) {
  FusePlan *p = xmalloc(sizeof *p);
  p->g = g;
  p->opt = *opt;
  if (p->opt.nthreads < 1)
    p->opt.nthreads = 1;
  p->gemm_stride = round64((int64_t)llvm_gemm_work_size(opt->blk));
  p->val = xmalloc((size_t)(g->n + 1) * sizeof *p->val);
  p->in = xmalloc((size_t)(g->n + 1) * sizeof *p->in);
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    p->in[i] = xmalloc((size_t)(n->nin + 1) * sizeof **p->in);
    if (n->nin > 0)
      memcpy(p->in[i], n->in, (size_t)n->nin * sizeof **p->in);
    FuseValue *v = &p->val[i];
    *v = (FuseValue){.how = FUSE_NONE, .of = i, .kernel = -1, .last = -1};
    contig_strides(n->shape, v->stride);
  }
  Fz z = {.p = p, .g = g, .err = err, .errlen = errlen};
  char dummy[8];
  if (!z.err) {
    z.err = dummy;
    z.errlen = sizeof dummy;
  }
  z.kern = xmalloc((size_t)(g->n + 1) * sizeof *z.kern);
  z.nuse = xmalloc((size_t)(g->n + 1) * sizeof *z.nuse);
  z.use = xmalloc((size_t)(g->n + 1) * sizeof *z.use);
  z.is_out = xmalloc((size_t)(g->n + 1));
  for (int i = 0; i < g->n; i++)
    z.kern[i] = -1;
  build_uses(&z);
  for (int i = 0; i < g->nout; i++)
    if (g->out[i].kind != IR_OUT_GRAD || opt->grads)
      z.is_out[g->out[i].value] = true;
  IrLayout lay[IR_NINKINDS] = {0};
  lay[IR_IN_PARAM] = ir_layout(g, IR_IN_PARAM);
  lay[IR_IN_BUFFER] = ir_layout(g, IR_IN_BUFFER);
  lay[IR_IN_STATE] = ir_layout(g, IR_IN_STATE);
  z.stamp = xmalloc((size_t)(4 * g->n + 64) * sizeof *z.stamp);
  for (int i = 0; i < g->n; i++)
    plan_node(&z, i, lay);
  requirements(&z);
  order_kernels(&z);
  build_uses(&z);
  decide_storage(&z);
  int rc = plan_updates(&z);
  if (rc == 0) {
    size_kernels(&z);
    plan_arena(&z);
  }
  for (int i = 0; i < IR_NINKINDS; i++)
    ir_layout_free(&lay[i]);
  for (int i = 0; i < g->n; i++)
    free(z.use[i]);
  free(z.use);
  free(z.nuse);
  free(z.kern);
  free(z.is_out);
  free(z.stamp);
  free(z.dep);
  if (rc < 0) {
    fuse_free(p);
    return NULL;
  }
  return p;
}

void fuse_free(FusePlan *p) {
  if (!p)
    return;
  for (int k = 0; k < p->nk; k++) {
    free(p->k[k].node);
    free(p->k[k].out);
  }
  free(p->k);
  for (int i = 0; i < p->g->n; i++)
    free(p->in[i]);
  free(p->in);
  free(p->val);
  free(p->consts);
  free(p->data);
  free(p);
}

/* How a GEMM reads a matrix of R x C with strides (sr, sc): as stored or transposed. */
static bool orient(int64_t R, int64_t C, int64_t sr, int64_t sc, int64_t *ld) {
  if ((C == 1 || sc == 1) && (R == 1 || sr >= C)) {
    *ld = R == 1 ? (C > 1 ? C : 1) : sr;
    if (*ld < C)
      *ld = C;
    return false;
  }
  *ld = C == 1 ? (R > 1 ? R : 1) : sc;
  if (*ld < R)
    *ld = R;
  return true;
}

FuseGemm fuse_gemm(const FusePlan *p, int kid) {
  const FuseKernel *k = &p->k[kid];
  int mm = k->op, a = p->in[mm][0], b = p->in[mm][1];
  IrShape os = p->g->node[mm].shape, as = p->g->node[a].shape, bs = p->g->node[b].shape;
  int r = os.rank, nb = r - 2;
  int64_t M = os.d[r - 2], N = os.d[r - 1], K = as.d[as.rank - 1];
  const int64_t *sa = p->val[a].stride, *sb = p->val[b].stride;
  int64_t sar = sa[as.rank - 2], sac = sa[as.rank - 1], sbr = sb[bs.rank - 2], sbc = sb[bs.rank - 1];
  FuseGemm g = {.a = a, .b = b, .k = K, .nb = nb, .batch = 1};
  if (!k->out_t) {
    g.ta = orient(M, K, sar, sac, &g.lda);
    g.tb = orient(K, N, sbr, sbc, &g.ldb);
    g.m = M, g.n = N, g.ldc = N;
  } else { /* C^T = B^T A^T: B^T is N x K with strides (sbc, sbr), A^T is K x M */
    g.ta = orient(N, K, sbc, sbr, &g.lda);
    g.tb = orient(K, M, sac, sar, &g.ldb);
    g.m = N, g.n = M, g.ldc = M;
  }
  for (int i = 0; i < nb; i++) { /* batch strides of a, b, c over the product's batch dims */
    g.batch *= os.d[i];
    int ja = i - (nb - (as.rank - 2)), jb = i - (nb - (bs.rank - 2));
    g.bst[0][i] = ja < 0 || as.d[ja] == 1 ? 0 : sa[ja];
    g.bst[1][i] = jb < 0 || bs.d[jb] == 1 ? 0 : sb[jb];
  }
  int64_t acc = M * N;
  for (int i = nb - 1; i >= 0; i--) {
    g.bst[2][i] = acc;
    acc *= os.d[i];
  }
  if (k->out_t) { /* A' reads b, B' reads a */
    g.a = b, g.b = a;
    for (int i = 0; i < nb; i++) {
      int64_t s = g.bst[0][i];
      g.bst[0][i] = g.bst[1][i], g.bst[1][i] = s;
    }
  }
  return g;
}

bool fuse_is_native(const FusePlan *p, int id) {
  const FuseValue *v = &p->val[id];
  return v->kernel < 0 || p->k[v->kernel].kind != FUSE_FALLBACK;
}

/* ---- printing ---- */

static const char *base_name(int base) {
  static const char *const names[] = {"arena", "param", "buffer", "state", "const", "status"};
  return base < FUSE_BASE_DATA ? names[base] : "data";
}

static void print_where(FILE *f, const FusePlan *p, int v) {
  const FuseValue *fv = &p->val[v];
  if (fv->how == FUSE_IMM) {
    fprintf(f, "%%%d=%g", v, fv->imm);
    return;
  }
  int b = bytes_of(p, v);
  if (b < 0) {
    fprintf(f, "%%%d", v);
    return;
  }
  const FuseValue *bv = &p->val[b];
  if (bv->base >= FUSE_BASE_DATA)
    fprintf(f, "%%%d@%s", v, p->g->node[b].name ? p->g->node[b].name : "data");
  else
    fprintf(f, "%%%d@%s+%lld", v, base_name(bv->base), (long long)bv->offset);
  if (fv->how == FUSE_VIEW) {
    fprintf(f, "[view");
    if (fv->voff)
      fprintf(f, " +%lld", (long long)fv->voff);
    if (!contiguous(p->g->node[v].shape, fv->stride)) {
      fprintf(f, " strides");
      for (int i = 0; i < p->g->node[v].shape.rank; i++)
        fprintf(f, "%c%lld", i ? ',' : ' ', (long long)fv->stride[i]);
    }
    fprintf(f, "]");
  }
}

/* The GEMM's flags as the code generator will use them: whether an operand is read
 * transposed (its unit stride is along the rows). */
static bool operand_transposed(const FusePlan *p, int v) {
  const FuseValue *fv = &p->val[v];
  IrShape s = p->g->node[v].shape;
  int64_t R = s.d[s.rank - 2], C = s.d[s.rank - 1];
  int64_t sr = fv->stride[s.rank - 2], sc = fv->stride[s.rank - 1];
  bool rowmajor = (C == 1 || sc == 1) && (R == 1 || sr >= C);
  return !rowmajor;
}

void fuse_print(FILE *f, const FusePlan *p) {
  const IrGraph *g = p->g;
  int counts[FUSE_NKINDS] = {0};
  for (int kid = 0; kid < p->nk; kid++) {
    const FuseKernel *k = &p->k[kid];
    counts[k->kind]++;
    char sh[96];
    fprintf(f, "k%-3d %-10s", kid, fuse_kind_name(k->kind));
    switch (k->kind) {
    case FUSE_GEMM: {
      bool ta = operand_transposed(p, p->in[k->op][0]), tb = operand_transposed(p, p->in[k->op][1]);
      if (k->out_t) { /* C^T = op(B)^T op(A)^T */
        bool t = ta;
        ta = !tb;
        tb = !t;
      }
      fprintf(f, " %c%c%s%s%s", ta ? 'T' : 'N', tb ? 'T' : 'N', k->bias >= 0 ? " +bias" : "",
              k->relu ? " +relu" : "", k->out_t ? " (C^T)" : "");
      break;
    }
    case FUSE_CONV: case FUSE_POOL: case FUSE_REDUCE: case FUSE_SOFTMAX: case FUSE_ARGMAX:
    case FUSE_CLASS_LOSS: case FUSE_PAIR_LOSS: case FUSE_FALLBACK: case FUSE_TAKE:
      fprintf(f, " %s%s%s", ir_op_name(g->node[k->op].op), k->bias >= 0 ? " +bias" : "",
              k->relu ? " +relu" : "");
      break;
    default:
      break;
    }
    IrDtype dt = k->nnode ? g->node[k->node[k->nnode - 1]].dtype
                          : k->copy_src >= 0 ? g->node[k->copy_src].dtype : IR_F32;
    if (k->kind == FUSE_ELEMWISE || k->kind == FUSE_COPY)
      fprintf(f, " %s", ir_shape_str(dt, k->shape, sh, sizeof sh));
    if (k->nparts > 1)
      fprintf(f, " x%d", k->nparts);
    fprintf(f, "\n     nodes");
    for (int i = 0; i < k->nnode; i++)
      fprintf(f, " %%%d", k->node[i]);
    if (k->kind == FUSE_COPY)
      fprintf(f, " (update %%%d)", k->copy_dst);
    fprintf(f, "\n     reads");
    int nread = 0, seen[64];
    for (int i = 0; i < k->nnode; i++) {
      const IrNode *n = &g->node[k->node[i]];
      for (int j = 0; j < n->nin; j++) {
        int v = p->in[k->node[i]][j];
        if (p->val[v].kernel == kid && p->val[v].how != FUSE_VIEW)
          continue;
        bool dup = false;
        for (int s = 0; s < nread && s < 64; s++)
          dup |= seen[s] == v;
        if (dup)
          continue;
        if (nread < 64)
          seen[nread] = v;
        fputc(' ', f);
        print_where(f, p, v);
        nread++;
      }
    }
    if (k->kind == FUSE_COPY) {
      fputc(' ', f);
      print_where(f, p, k->copy_src);
      nread++;
    }
    if (!nread)
      fprintf(f, " -");
    fprintf(f, "\n     writes");
    for (int i = 0; i < k->nout; i++) {
      const FuseValue *v = &p->val[k->out[i]];
      fprintf(f, " %%%d@%s+%lld(%lld B)", k->out[i], base_name(v->base), (long long)v->offset,
              (long long)v->bytes);
    }
    if (k->kind == FUSE_COPY) {
      const FuseValue *v = &p->val[k->copy_dst];
      fprintf(f, " %%%d@%s+%lld(%lld B)", k->copy_dst, base_name(v->base), (long long)v->offset,
              (long long)v->bytes);
    }
    if (k->scratch_bytes)
      fprintf(f, " scratch@arena+%lld(%lld B)", (long long)k->scratch, (long long)k->scratch_bytes);
    fputc('\n', f);
  }
  int inplace = 0, updates = 0;
  for (int i = 0; i < g->nout; i++)
    if (g->out[i].kind == IR_OUT_UPDATE) {
      updates++;
      const FuseValue *v = &p->val[g->out[i].value];
      inplace += v->how == FUSE_MEM && v->base != FUSE_BASE_ARENA && v->base != FUSE_BASE_CONST &&
                 g->node[g->out[i].value].op != IR_INPUT;
    }
  int64_t total = 0;
  for (int v = 0; v < g->n; v++)
    if (p->val[v].how == FUSE_MEM && p->val[v].base == FUSE_BASE_ARENA)
      total += p->val[v].bytes;
  fprintf(f, "# %d nodes in %d kernels (", g->n, p->nk);
  bool first = true;
  for (int k = 0; k < FUSE_NKINDS; k++)
    if (counts[k]) {
      fprintf(f, "%s%d %s", first ? "" : ", ", counts[k], fuse_kind_name(k));
      first = false;
    }
  fprintf(f, "), %d threads\n", p->opt.nthreads);
  int64_t scratch = 0;
  for (int k = 0; k < p->nk; k++)
    scratch = p->k[k].scratch_bytes > scratch ? p->k[k].scratch_bytes : scratch;
  scratch = (scratch + 63) & ~(int64_t)63;
  fprintf(f, "# arena %lld bytes: %lld of kernel scratch (GEMM packing, im2col), then %lld for "
          "%lld bytes of values (reused by liveness); constants %lld bytes\n",
          (long long)p->arena_bytes, (long long)scratch, (long long)(p->arena_bytes - scratch),
          (long long)total, (long long)p->const_bytes);
  fprintf(f, "# %d of %d updates written in place\n", inplace, updates);
}
