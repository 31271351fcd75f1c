/* ir.c — the graph container: memory, dtypes, shapes, printing, flat layouts.
 * Building nodes (and the shape rules) is in ir_build.c. */
#include "ir.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- memory: one arena per graph for names, operand lists and constant data ---- */

struct IrArena {
  IrArena *next;
  size_t used, cap;
  _Alignas(16) unsigned char mem[];
};

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) {
    fprintf(stderr, "ltl: out of memory\n");
    exit(1);
  }
  return p;
}

void *ir_alloc(IrGraph *g, size_t bytes) {
  bytes = (bytes + 15) & ~(size_t)15;
  IrArena *a = g->arena;
  if (!a || a->used + bytes > a->cap) {
    size_t cap = bytes > 65536 ? bytes : 65536;
    IrArena *b = xcalloc(1, sizeof *b + cap);
    b->cap = cap;
    b->next = a;
    g->arena = a = b;
  }
  void *p = a->mem + a->used;
  a->used += bytes;
  return p;
}

const char *ir_strdup(IrGraph *g, const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  return memcpy(ir_alloc(g, n), s, n);
}

IrGraph *ir_new(void) {
  IrGraph *g = xcalloc(1, sizeof *g);
  return g;
}

void ir_free(IrGraph *g) {
  if (!g)
    return;
  for (IrArena *a = g->arena, *next; a; a = next) {
    next = a->next;
    free(a);
  }
  free(g->node);
  free(g->out);
  free(g);
}

void ir_set_loc(IrGraph *g, int line, int col) {
  g->line = line;
  g->col = col;
}

const char *ir_error(const IrGraph *g) { return g->err; }

int ir_fail(IrGraph *g, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g->err, sizeof g->err, fmt, ap);
  va_end(ap);
  return -1;
}

/* ---- the op table's names and arities ---- */

static const char *const op_names[] = {
#define OP(id, name, arity, shape, deriv, kernel) name,
#include "ir_ops.def"
#undef OP
};
static const int op_arity[] = {
#define OP(id, name, arity, shape, deriv, kernel) arity,
#include "ir_ops.def"
#undef OP
};

const char *ir_op_name(IrOp op) { return op >= 0 && op < IR_NOPS ? op_names[op] : "?"; }
int ir_op_arity(IrOp op) { return op_arity[op]; }

/* ---- dtypes ---- */

static const char *const dtype_names[] = {"f64", "f32", "bf16", "f16", "i64", "i32", "u8", "bool"};
static const int dtype_sizes[] = {8, 4, 2, 2, 8, 4, 1, 1};

const char *ir_dtype_name(IrDtype t) { return t < IR_NDTYPES ? dtype_names[t] : "?"; }
int ir_dtype_size(IrDtype t) { return dtype_sizes[t]; }
bool ir_dtype_is_float(IrDtype t) { return t <= IR_F16; }

/* Rounds to a binary float format with `bits` significant bits, subnormals down to 2^emin
 * and largest finite value max.  a/q and the product are exact (q is a power of two), so
 * nearbyint's round-half-to-even is the format's rounding. */
static double round_float(double x, int bits, int emin, double max) {
  if (isnan(x) || isinf(x) || x == 0)
    return x;
  int e;
  frexp(fabs(x), &e);
  int qe = e - bits;
  if (qe < emin)
    qe = emin;
  double q = ldexp(1.0, qe);
  double r = nearbyint(fabs(x) / q) * q;
  if (r > max)
    r = INFINITY;
  return copysign(r, x);
}

static double wrap_int(double x, double mod, double lo) {
  /* integer casts: truncate toward zero, then wrap like two's complement */
  if (isnan(x) || isinf(x))
    return 0;
  double t = trunc(x);
  if (mod == 0)
    return t;
  t = fmod(t - lo, mod);
  if (t < 0)
    t += mod;
  return t + lo;
}

double ir_round(IrDtype t, double x) {
  switch (t) {
  case IR_F64: return x;
  case IR_F32: return (double)(float)x;
  case IR_BF16: return round_float(x, 8, -133, 0x1.fep127);
  case IR_F16: return round_float(x, 11, -24, 65504.0);
  case IR_I64: return isnan(x) || isinf(x) ? 0 : trunc(x);
  case IR_I32: return wrap_int(x, 4294967296.0, -2147483648.0);
  case IR_U8: return wrap_int(x, 256.0, 0);
  case IR_BOOL: return x != 0;
  default: assert(0); return x;
  }
}

/* bf16 is the top half of an f32; f16 is IEEE binary16.  Both travel as uint16 bits. */
static uint16_t f16_bits(double x) {
  x = ir_round(IR_F16, x);
  uint16_t sign = signbit(x) ? 0x8000 : 0;
  double a = fabs(x);
  if (isnan(a))
    return 0x7e00;
  if (isinf(a))
    return sign | 0x7c00;
  if (a < 0x1p-14) /* subnormal: multiples of 2^-24 */
    return sign | (uint16_t)(a * 0x1p24);
  int e;
  double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
  return sign | (uint16_t)((e + 14) << 10) | (uint16_t)((m * 2 - 1) * 1024);
}

static double f16_value(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
  return h & 0x8000 ? -v : v;
}

double ir_load(IrDtype t, const void *base, int64_t i) {
  switch (t) {
  case IR_F64: return ((const double *)base)[i];
  case IR_F32: return ((const float *)base)[i];
  case IR_BF16: {
    uint32_t u = (uint32_t)((const uint16_t *)base)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  case IR_F16: return f16_value(((const uint16_t *)base)[i]);
  case IR_I64: return (double)((const int64_t *)base)[i];
  case IR_I32: return ((const int32_t *)base)[i];
  case IR_U8: return ((const uint8_t *)base)[i];
  case IR_BOOL: return ((const uint8_t *)base)[i] != 0;
  default: assert(0); return 0;
  }
}

void ir_store(IrDtype t, void *base, int64_t i, double x) {
  x = ir_round(t, x);
  switch (t) {
  case IR_F64: ((double *)base)[i] = x; break;
  case IR_F32: ((float *)base)[i] = (float)x; break;
  case IR_BF16: {
    float f = (float)x; /* exact: x is already a bf16 value */
    uint32_t u;
    memcpy(&u, &f, 4);
    ((uint16_t *)base)[i] = isnan(x) ? 0x7fc0 : (uint16_t)(u >> 16);
    break;
  }
  case IR_F16: ((uint16_t *)base)[i] = f16_bits(x); break;
  case IR_I64: ((int64_t *)base)[i] = (int64_t)x; break;
  case IR_I32: ((int32_t *)base)[i] = (int32_t)x; break;
  case IR_U8:
  case IR_BOOL: ((uint8_t *)base)[i] = (uint8_t)x; break;
  default: assert(0);
  }
}

/* ---- shapes ---- */

IrShape ir_shapev(int rank, const int64_t *d) {
  IrShape s = {0};
  assert(rank >= 0 && rank <= IR_MAX_RANK);
  s.rank = rank;
  for (int i = 0; i < rank; i++)
    s.d[i] = d[i];
  return s;
}

int64_t ir_numel(IrShape s) {
  int64_t n = 1;
  for (int i = 0; i < s.rank; i++)
    n *= s.d[i];
  return n;
}

bool ir_shape_eq(IrShape a, IrShape b) {
  if (a.rank != b.rank)
    return false;
  for (int i = 0; i < a.rank; i++)
    if (a.d[i] != b.d[i])
      return false;
  return true;
}

char *ir_shape_str(IrDtype t, IrShape s, char *buf, size_t size) {
  size_t k = (size_t)snprintf(buf, size, "%s[", ir_dtype_name(t));
  for (int i = 0; i < s.rank && k < size; i++)
    k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? ", " : "", (long long)s.d[i]);
  if (k < size)
    snprintf(buf + k, size - k, "]");
  return buf;
}

/* Field by field, so padding bytes never make two equal attributes differ (CSE). */
bool ir_attr_eq(const IrAttr *a, const IrAttr *b) {
#define SAME(f) (memcmp(&a->f, &b->f, sizeof a->f) == 0)
  return SAME(naxes) && SAME(axes) && SAME(keepdim) && SAME(axis) && SAME(kernel) &&
         SAME(stride) && SAME(pad) && SAME(dil) && SAME(groups) && SAME(count_include_pad) &&
         SAME(start) && SAME(stop) && SAME(step) && SAME(lo) && SAME(hi) && SAME(value) &&
         SAME(value2) && SAME(seed) && SAME(n) && SAME(dtype) && ir_shape_eq(a->shape, b->shape);
#undef SAME
}

/* ---- outputs and inputs ---- */

int ir_output(IrGraph *g, int value, IrOutKind kind, int target, const char *name) {
  if (value < 0)
    return -1;
  if (value >= g->n)
    return ir_fail(g, "output: no value %%%d", value);
  if (kind != IR_OUT_VALUE) {
    if (target < 0 || target >= g->n || g->node[target].op != IR_INPUT)
      return ir_fail(g, "output: target %%%d is not a graph input", target);
    const IrNode *t = &g->node[target], *v = &g->node[value];
    if (t->dtype != v->dtype || !ir_shape_eq(t->shape, v->shape)) {
      char a[128], b[128];
      return ir_fail(g, "output: %s does not match its target %s \"%s\"",
                     ir_shape_str(v->dtype, v->shape, a, sizeof a),
                     ir_shape_str(t->dtype, t->shape, b, sizeof b), t->name);
    }
  }
  if (g->nout == g->outcap) {
    g->outcap = g->outcap ? 2 * g->outcap : 16;
    g->out = realloc(g->out, (size_t)g->outcap * sizeof *g->out);
    if (!g->out) {
      fprintf(stderr, "ltl: out of memory\n");
      exit(1);
    }
  }
  g->out[g->nout] = (IrOutput){value, kind, kind == IR_OUT_VALUE ? -1 : target,
                               ir_strdup(g, name)};
  return g->nout++;
}

int ir_find_input(const IrGraph *g, const char *name) {
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT && strcmp(g->node[i].name, name) == 0)
      return i;
  return -1;
}

/* ---- printing ---- */

static const char *const kind_names[] = {"param", "buffer", "state", "data", "grad"};

/* Attributes follow the operands in braces: " {axes=[1], keepdim}". */
typedef struct {
  FILE *f;
  bool open;
} AttrOut;

static FILE *key(AttrOut *o) {
  fputs(o->open ? ", " : " {", o->f);
  o->open = true;
  return o->f;
}

static void print_ints(AttrOut *o, const char *name, const int64_t *v, int n) {
  fprintf(key(o), "%s=[", name);
  for (int i = 0; i < n; i++)
    fprintf(o->f, "%s%lld", i ? ", " : "", (long long)v[i]);
  fputc(']', o->f);
}

static void print_axes(AttrOut *o, const char *name, const int *v, int n) {
  int64_t w[IR_MAX_RANK];
  for (int i = 0; i < n; i++)
    w[i] = v[i];
  print_ints(o, name, w, n);
}

static void print_attrs(FILE *f, const IrNode *n) {
  const IrAttr *a = &n->a;
  AttrOut o = {f, false};
  switch (n->op) {
  case IR_LEAKY_RELU: fprintf(key(&o), "slope=%.9g", a->value); break;
  case IR_SUM: case IR_MEAN: case IR_MAX: case IR_LOGSUMEXP:
    print_axes(&o, "axes", a->axes, a->naxes);
    if (a->keepdim)
      fprintf(key(&o), "keepdim");
    break;
  case IR_ARGMAX:
    fprintf(key(&o), "axis=%d", a->axis);
    if (a->keepdim)
      fprintf(key(&o), "keepdim");
    break;
  case IR_PERMUTE: print_axes(&o, "perm", a->axes, a->naxes); break;
  case IR_SLICE: case IR_SLICE_SCATTER: {
    int r = n->op == IR_SLICE ? n->shape.rank : a->shape.rank;
    print_ints(&o, "start", a->start, r);
    print_ints(&o, "stop", a->stop, r);
    print_ints(&o, "step", a->step, r);
    break;
  }
  case IR_CONCAT: case IR_SOFTMAX: case IR_LOG_SOFTMAX: case IR_TAKE: case IR_TAKE_GRAD:
  case IR_GATHER: case IR_SCATTER_ADD:
    fprintf(key(&o), "axis=%d", a->axis);
    break;
  case IR_PAD:
    print_ints(&o, "lo", a->lo, n->shape.rank);
    print_ints(&o, "hi", a->hi, n->shape.rank);
    if (a->value != 0)
      fprintf(key(&o), "value=%.9g", a->value);
    break;
  case IR_CONV2D: case IR_CONV2D_BWD_DATA: case IR_CONV2D_BWD_FILTER:
    print_ints(&o, "stride", a->stride, 2);
    print_ints(&o, "pad", a->pad, 2);
    print_ints(&o, "dil", a->dil, 2);
    if (a->groups != 1)
      fprintf(key(&o), "groups=%d", a->groups);
    break;
  case IR_MAX_POOL2D: case IR_MAX_POOL2D_BWD: case IR_AVG_POOL2D: case IR_AVG_POOL2D_BWD:
    print_ints(&o, "kernel", a->kernel, 2);
    print_ints(&o, "stride", a->stride, 2);
    print_ints(&o, "pad", a->pad, 2);
    if ((n->op == IR_AVG_POOL2D || n->op == IR_AVG_POOL2D_BWD) && !a->count_include_pad)
      fprintf(key(&o), "exclude_pad");
    break;
  case IR_CROSS_ENTROPY:
    if (a->value != 0)
      fprintf(key(&o), "label_smoothing=%.9g", a->value);
    break;
  case IR_ONE_HOT: fprintf(key(&o), "n=%lld", (long long)a->n); break;
  case IR_DROPOUT:
    fprintf(key(&o), "p=%.9g, seed=%llu", a->value, (unsigned long long)a->seed);
    break;
  case IR_RAND_UNIFORM:
  case IR_RAND_NORMAL:
    fprintf(key(&o), "%s=%.9g, %s=%.9g, seed=%llu", n->op == IR_RAND_UNIFORM ? "lo" : "mean",
            a->value, n->op == IR_RAND_UNIFORM ? "hi" : "std", a->value2,
            (unsigned long long)a->seed);
    break;
  default: break; /* cast: the dtype is in the type */
  }
  if (o.open)
    fputc('}', f);
}

void ir_print_node(FILE *f, const IrGraph *g, int id) {
  const IrNode *n = &g->node[id];
  char ty[160];
  fprintf(f, "%%%d = ", id);
  if (n->op == IR_INPUT) {
    fprintf(f, "%s \"%s\"", kind_names[n->kind], n->name);
  } else if (n->op == IR_CONST) {
    fprintf(f, "const ");
    if (!n->data) {
      fprintf(f, "%.9g", n->a.value);
    } else {
      int64_t k = ir_numel(n->shape);
      fprintf(f, "[");
      for (int64_t i = 0; i < k && i < 6; i++)
        fprintf(f, "%s%.9g", i ? ", " : "", n->data[i]);
      fprintf(f, "%s]", k > 6 ? ", ..." : "");
    }
  } else {
    fprintf(f, "%s", ir_op_name(n->op));
    for (int i = 0; i < n->nin; i++)
      fprintf(f, "%s%%%d", i ? ", " : " ", n->in[i]);
    print_attrs(f, n);
  }
  fprintf(f, " : %s\n", ir_shape_str(n->dtype, n->shape, ty, sizeof ty));
}

void ir_print(FILE *f, const IrGraph *g) {
  for (int i = 0; i < g->n; i++)
    ir_print_node(f, g, i);
  for (int i = 0; i < g->nout; i++) {
    const IrOutput *o = &g->out[i];
    switch (o->kind) {
    case IR_OUT_VALUE: fprintf(f, "output \"%s\" = %%%d\n", o->name ? o->name : "", o->value); break;
    case IR_OUT_GRAD: fprintf(f, "grad %%%d = %%%d\n", o->target, o->value); break;
    case IR_OUT_UPDATE: fprintf(f, "update %%%d = %%%d\n", o->target, o->value); break;
    }
  }
}

/* ---- flat layout: every input of one kind packed into one buffer ---- */

IrLayout ir_layout(const IrGraph *g, IrInputKind kind) {
  IrLayout l = {0};
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT && g->node[i].kind == kind)
      l.n++;
  l.slot = xcalloc((size_t)l.n, sizeof *l.slot);
  int k = 0;
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    if (n->op != IR_INPUT || n->kind != kind)
      continue;
    /* 64-byte alignment: a cache line, and a full AVX-512 vector */
    l.bytes = (l.bytes + 63) & ~(int64_t)63;
    IrSlot *s = &l.slot[k++];
    *s = (IrSlot){n->name, n->dtype, n->shape, l.bytes,
                  ir_numel(n->shape) * ir_dtype_size(n->dtype), i};
    l.bytes += s->bytes;
  }
  return l;
}

void ir_layout_free(IrLayout *l) {
  free(l->slot);
  *l = (IrLayout){0};
}

/* ---- redirecting uses (the passes' common step) ---- */

static int find(int *repl, int i) {
  while (repl[i] != i) {
    repl[i] = repl[repl[i]]; /* path halving */
    i = repl[i];
  }
  return i;
}

void ir_redirect(IrGraph *g, int *repl) {
  for (int i = 0; i < g->n; i++)
    for (int k = 0; k < g->node[i].nin; k++)
      g->node[i].in[k] = find(repl, g->node[i].in[k]);
  for (int i = 0; i < g->nout; i++)
    g->out[i].value = find(repl, g->out[i].value);
}
