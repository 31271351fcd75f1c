/* interp.c — the reference interpreter: the oracle every backend is tested against.
 *
 * Every value is an array of doubles in row-major order; after each op the result is rounded
 * to the node's dtype (ir_round), so an f32 graph behaves like one computed in f32 with each
 * op exactly rounded.  In f64 mode floating values are never rounded: the whole graph
 * computes in double, which is what finite-difference gradient checks need.
 *
 * Kernels are the plainest loops that are obviously right: indices are recomputed from the
 * flat position with divisions rather than walked incrementally. */
#include "ir.h"
#include "rt.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const IrGraph *g;
  const IrNode *n;
  const double *const *in; /* operand values */
  double *out;             /* numel(n->shape) values */
  char *err;               /* a message when the kernel fails */
} Kx;

typedef int Kernel(const Kx *k);

#define ISH(i) (k->g->node[k->n->in[i]].shape) /* shape of operand i */

static int kfail(const Kx *k, const char *fmt, ...) {
  va_list ap;
  int len = snprintf(k->err, 256, "%s: ", ir_op_name(k->n->op));
  va_start(ap, fmt);
  vsnprintf(k->err + len, (size_t)(256 - len), fmt, ap);
  va_end(ap);
  return -1;
}

/* ---- index helpers ---- */

static void strides(IrShape s, int64_t *st) {
  int64_t acc = 1;
  for (int i = s.rank - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s.d[i];
  }
}

/* Strides of s seen from a broadcast shape of rank r: 0 where s is broadcast. */
static void bstrides(IrShape s, int r, int64_t *st) {
  int64_t acc = 1;
  for (int i = r - 1; i >= 0; i--) {
    int j = s.rank - r + i;
    st[i] = j < 0 || s.d[j] == 1 ? 0 : acc;
    if (j >= 0)
      acc *= s.d[j];
  }
}

/* coordinates of flat position i in shape s */
static void unravel(int64_t i, IrShape s, int64_t *idx) {
  for (int k = s.rank - 1; k >= 0; k--) {
    idx[k] = i % s.d[k];
    i /= s.d[k];
  }
}

/* offset of flat position i of shape s in a tensor with strides st */
static int64_t offset(int64_t i, IrShape s, const int64_t *st) {
  int64_t off = 0;
  for (int k = s.rank - 1; k >= 0; k--) {
    off += (i % s.d[k]) * st[k];
    i /= s.d[k];
  }
  return off;
}

static int64_t prod(IrShape s, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++)
    p *= s.d[i];
  return p;
}

/* ---- leaves ---- */

static int k_leaf(const Kx *k) {
  (void)k; /* inputs are copied in by interp_set */
  return 0;
}

static int k_const(const Kx *k) {
  int64_t n = ir_numel(k->n->shape);
  for (int64_t i = 0; i < n; i++)
    k->out[i] = k->n->data ? k->n->data[i] : k->n->a.value;
  return 0;
}

/* ---- elementwise ---- */

static double sigmoid(double x) {
  /* never exp of a large positive number */
  return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}

static int k_unary(const Kx *k) {
  const double *x = k->in[0];
  int64_t n = ir_numel(k->n->shape);
  double slope = k->n->a.value;
  for (int64_t i = 0; i < n; i++) {
    double v = x[i], r;
    switch (k->n->op) {
    case IR_NEG: r = -v; break;
    case IR_ABS: r = fabs(v); break;
    case IR_SIGN: r = isnan(v) ? v : (v > 0) - (v < 0); break;
    case IR_EXP: r = exp(v); break;
    case IR_LOG: r = log(v); break;
    case IR_SQRT: r = sqrt(v); break;
    case IR_RSQRT: r = 1 / sqrt(v); break;
    case IR_TANH: r = tanh(v); break;
    case IR_SIGMOID: r = sigmoid(v); break;
    case IR_ERF: r = erf(v); break;
    case IR_RELU: r = isnan(v) || v > 0 ? v : 0; break; /* NaN propagates, as PyTorch */
    case IR_GELU: r = 0.5 * v * (1 + erf(v * 0.70710678118654752) /* x / sqrt 2 */); break;
    case IR_LEAKY_RELU: r = v > 0 ? v : slope * v; break;
    case IR_CAST: case IR_DETACH: r = v; break; /* the cast's rounding follows every op */
    default: assert(0); r = 0;
    }
    k->out[i] = r;
  }
  return 0;
}

static int k_binary(const Kx *k) {
  IrShape s = k->n->shape;
  int64_t sa[IR_MAX_RANK], sb[IR_MAX_RANK];
  bstrides(ISH(0), s.rank, sa);
  bstrides(ISH(1), s.rank, sb);
  int64_t n = ir_numel(s);
  bool da = ir_shape_eq(ISH(0), s), db = ir_shape_eq(ISH(1), s); /* not broadcast: direct */
  for (int64_t i = 0; i < n; i++) {
    double a = k->in[0][da ? i : offset(i, s, sa)], b = k->in[1][db ? i : offset(i, s, sb)], r;
    switch (k->n->op) {
    case IR_ADD: r = a + b; break;
    case IR_SUB: r = a - b; break;
    case IR_MUL: r = a * b; break;
    case IR_DIV: r = a / b; break;
    case IR_POW: r = pow(a, b); break;
    case IR_MAXIMUM: r = isnan(a) || a > b ? a : b; break; /* NaN wins, as PyTorch */
    case IR_MINIMUM: r = isnan(a) || a < b ? a : b; break;
    case IR_EQ: r = a == b; break;
    case IR_NE: r = a != b; break;
    case IR_LT: r = a < b; break;
    case IR_LE: r = a <= b; break;
    case IR_GT: r = a > b; break;
    case IR_GE: r = a >= b; break;
    default: assert(0); r = 0;
    }
    k->out[i] = r;
  }
  return 0;
}

static int k_where(const Kx *k) {
  IrShape s = k->n->shape;
  int64_t sc[IR_MAX_RANK], sa[IR_MAX_RANK], sb[IR_MAX_RANK];
  bstrides(ISH(0), s.rank, sc);
  bstrides(ISH(1), s.rank, sa);
  bstrides(ISH(2), s.rank, sb);
  int64_t n = ir_numel(s);
  for (int64_t i = 0; i < n; i++)
    k->out[i] = k->in[0][offset(i, s, sc)] != 0 ? k->in[1][offset(i, s, sa)]
                                                : k->in[2][offset(i, s, sb)];
  return 0;
}

/* ---- reductions ---- */

static int k_reduce(const Kx *k) {
  IrShape xs = ISH(0);
  const IrAttr *a = &k->n->a;
  int64_t on = ir_numel(k->n->shape), xn = ir_numel(xs);
  /* where each input element lands: output strides with 0 on the reduced axes */
  bool red[IR_MAX_RANK] = {0};
  for (int i = 0; i < a->naxes; i++)
    red[a->axes[i]] = true;
  int64_t ost[IR_MAX_RANK], acc = 1;
  for (int i = xs.rank - 1; i >= 0; i--) {
    ost[i] = red[i] ? 0 : acc;
    if (!red[i])
      acc *= xs.d[i];
  }
  int64_t count = on ? xn / on : 0;
  double *o = k->out;
  const double *x = k->in[0];
  switch (k->n->op) {
  case IR_SUM:
  case IR_MEAN:
    for (int64_t j = 0; j < on; j++)
      o[j] = 0;
    for (int64_t i = 0; i < xn; i++)
      o[offset(i, xs, ost)] += x[i];
    if (k->n->op == IR_MEAN)
      for (int64_t j = 0; j < on; j++)
        o[j] /= (double)count;
    break;
  case IR_MAX:
    for (int64_t j = 0; j < on; j++)
      o[j] = -INFINITY;
    for (int64_t i = 0; i < xn; i++) {
      double *m = &o[offset(i, xs, ost)];
      if (isnan(x[i]) || x[i] > *m)
        *m = isnan(*m) ? *m : x[i];
    }
    break;
  case IR_LOGSUMEXP: {
    /* max first, so exp never overflows */
    double *m = calloc((size_t)(on ? on : 1), sizeof *m);
    if (!m)
      return kfail(k, "out of memory");
    for (int64_t j = 0; j < on; j++) {
      m[j] = -INFINITY;
      o[j] = 0;
    }
    for (int64_t i = 0; i < xn; i++) {
      double *mj = &m[offset(i, xs, ost)];
      if (x[i] > *mj)
        *mj = x[i];
    }
    for (int64_t i = 0; i < xn; i++) {
      int64_t j = offset(i, xs, ost);
      o[j] += isinf(m[j]) ? (x[i] == m[j]) : exp(x[i] - m[j]);
    }
    for (int64_t j = 0; j < on; j++)
      o[j] = isinf(m[j]) ? m[j] : m[j] + log(o[j]);
    free(m);
    break;
  }
  default: assert(0);
  }
  return 0;
}

static int k_argmax(const Kx *k) {
  IrShape xs = ISH(0);
  int ax = k->n->a.axis;
  int64_t outer = prod(xs, 0, ax), len = xs.d[ax], inner = prod(xs, ax + 1, xs.rank);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      const double *x = k->in[0] + o * len * inner + j;
      int64_t best = 0;
      for (int64_t i = 1; i < len; i++) /* first maximum wins; NaN counts as the maximum */
        if (!isnan(x[best * inner]) && (isnan(x[i * inner]) || x[i * inner] > x[best * inner]))
          best = i;
      k->out[o * inner + j] = (double)best;
    }
  return 0;
}

/* ---- matmul: [..., M, K] @ [..., K, N] with broadcast batch dimensions ---- */

static int k_matmul(const Kx *k) {
  IrShape as = ISH(0), bs = ISH(1), os = k->n->shape;
  int64_t M = as.d[as.rank - 2], K = as.d[as.rank - 1], N = bs.d[bs.rank - 1];
  IrShape batch = os, ab = as, bb = bs;
  batch.rank -= 2;
  ab.rank -= 2;
  bb.rank -= 2;
  int64_t sa[IR_MAX_RANK], sb[IR_MAX_RANK];
  bstrides(ab, batch.rank, sa);
  bstrides(bb, batch.rank, sb);
  int64_t nb = ir_numel(batch);
  for (int64_t t = 0; t < nb; t++) {
    const double *A = k->in[0] + offset(t, batch, sa) * M * K;
    const double *B = k->in[1] + offset(t, batch, sb) * K * N;
    double *C = k->out + t * M * N;
    /* C[i, j] = sum over p of A[i, p] B[p, j], p in order; rows of B walked contiguously */
    for (int64_t i = 0; i < M; i++) {
      for (int64_t j = 0; j < N; j++)
        C[i * N + j] = 0;
      for (int64_t p = 0; p < K; p++)
        for (int64_t j = 0; j < N; j++)
          C[i * N + j] += A[i * K + p] * B[p * N + j];
    }
  }
  return 0;
}

/* ---- layout ---- */

static int k_reshape(const Kx *k) {
  memcpy(k->out, k->in[0], (size_t)ir_numel(k->n->shape) * sizeof(double));
  return 0;
}

static int k_permute(const Kx *k) {
  IrShape s = k->n->shape;
  int64_t xst[IR_MAX_RANK], st[IR_MAX_RANK];
  strides(ISH(0), xst);
  for (int i = 0; i < s.rank; i++)
    st[i] = xst[k->n->a.axes[i]]; /* output axis i walks input axis perm[i] */
  int64_t n = ir_numel(s);
  for (int64_t i = 0; i < n; i++)
    k->out[i] = k->in[0][offset(i, s, st)];
  return 0;
}

static int k_broadcast(const Kx *k) {
  IrShape s = k->n->shape;
  int64_t st[IR_MAX_RANK];
  bstrides(ISH(0), s.rank, st);
  int64_t n = ir_numel(s);
  for (int64_t i = 0; i < n; i++)
    k->out[i] = k->in[0][offset(i, s, st)];
  return 0;
}

/* offset in `full` (strides fst) of position i of the slice shape s */
static int64_t slice_offset(int64_t i, IrShape s, const IrAttr *a, const int64_t *fst) {
  int64_t idx[IR_MAX_RANK], off = 0;
  unravel(i, s, idx);
  for (int d = 0; d < s.rank; d++)
    off += (a->start[d] + idx[d] * a->step[d]) * fst[d];
  return off;
}

static int k_slice(const Kx *k) {
  int64_t st[IR_MAX_RANK], n = ir_numel(k->n->shape);
  strides(ISH(0), st);
  for (int64_t i = 0; i < n; i++)
    k->out[i] = k->in[0][slice_offset(i, k->n->shape, &k->n->a, st)];
  return 0;
}

static int k_slice_scatter(const Kx *k) {
  int64_t st[IR_MAX_RANK], n = ir_numel(ISH(0));
  strides(k->n->shape, st);
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  for (int64_t i = 0; i < n; i++)
    k->out[slice_offset(i, ISH(0), &k->n->a, st)] = k->in[0][i];
  return 0;
}

static int k_concat(const Kx *k) {
  IrShape s = k->n->shape;
  int ax = k->n->a.axis;
  int64_t outer = prod(s, 0, ax), inner = prod(s, ax + 1, s.rank), at = 0;
  for (int j = 0; j < k->n->nin; j++) {
    int64_t len = ISH(j).d[ax];
    for (int64_t o = 0; o < outer; o++)
      for (int64_t i = 0; i < len * inner; i++)
        k->out[(o * s.d[ax] + at) * inner + i] = k->in[j][o * len * inner + i];
    at += len;
  }
  return 0;
}

static int k_pad(const Kx *k) {
  IrShape s = k->n->shape, xs = ISH(0);
  int64_t st[IR_MAX_RANK], idx[IR_MAX_RANK], n = ir_numel(s), xn = ir_numel(xs);
  strides(s, st);
  for (int64_t i = 0; i < n; i++)
    k->out[i] = k->n->a.value;
  for (int64_t i = 0; i < xn; i++) {
    unravel(i, xs, idx);
    int64_t off = 0;
    for (int d = 0; d < s.rank; d++)
      off += (idx[d] + k->n->a.lo[d]) * st[d];
    k->out[off] = k->in[0][i];
  }
  return 0;
}

/* ---- convolution: one loop nest visits every (output position, tap) pair; the three
 * kernels differ only in which of x, w, y they accumulate into ---- */

typedef enum { CONV_FWD, CONV_DATA, CONV_FILTER } ConvMode;

/* The output positions o in [0, n) whose input position o * stride + off is in [0, in):
 * the taps that do not fall on zero padding. */
static void in_bounds(int64_t n, int64_t in, int64_t stride, int64_t off, int64_t *lo, int64_t *hi) {
  *lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  *hi = in - off <= 0 ? 0 : (in - off - 1) / stride + 1;
  if (*hi > n)
    *hi = n;
  if (*lo > *hi)
    *lo = *hi;
}

static void conv_loops(ConvMode mode, const IrAttr *a, IrShape xs, IrShape ws, double *x,
                       double *w, double *y) {
  int64_t N = xs.d[0], C = xs.d[1], H = xs.d[2], W = xs.d[3];
  int64_t O = ws.d[0], Cg = ws.d[1], KH = ws.d[2], KW = ws.d[3];
  int64_t Og = O / a->groups, sh = a->stride[0], sw = a->stride[1];
  int64_t OH = (H + 2 * a->pad[0] - a->dil[0] * (KH - 1) - 1) / sh + 1;
  int64_t OW = (W + 2 * a->pad[1] - a->dil[1] * (KW - 1) - 1) / sw + 1;
  /* taps outside, output positions inside: y[oh, ow] meets x[oh sh + offh, ow sw + offw] */
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < O; o++)
      for (int64_t c = 0; c < Cg; c++) {
        int64_t ci = (o / Og) * Cg + c; /* output channel o reads its group's inputs */
        double *xc = &x[(n * C + ci) * H * W], *yc = &y[(n * O + o) * OH * OW];
        for (int64_t kh = 0; kh < KH; kh++)
          for (int64_t kw = 0; kw < KW; kw++) {
            double *wv = &w[((o * Cg + c) * KH + kh) * KW + kw];
            int64_t offh = kh * a->dil[0] - a->pad[0], offw = kw * a->dil[1] - a->pad[1];
            int64_t h0, h1, w0, w1;
            in_bounds(OH, H, sh, offh, &h0, &h1);
            in_bounds(OW, W, sw, offw, &w0, &w1);
            for (int64_t oh = h0; oh < h1; oh++) {
              int64_t xo = (oh * sh + offh) * W + offw; /* x[xo + ow sw] meets yr[ow] */
              double *yr = &yc[oh * OW];
              switch (mode) {
              case CONV_FWD:
                for (int64_t ow = w0; ow < w1; ow++)
                  yr[ow] += xc[xo + ow * sw] * *wv;
                break;
              case CONV_DATA:
                for (int64_t ow = w0; ow < w1; ow++)
                  xc[xo + ow * sw] += yr[ow] * *wv;
                break;
              case CONV_FILTER:
                for (int64_t ow = w0; ow < w1; ow++)
                  *wv += yr[ow] * xc[xo + ow * sw];
                break;
              }
            }
          }
      }
}

static int k_conv2d(const Kx *k) {
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  conv_loops(CONV_FWD, &k->n->a, ISH(0), ISH(1), (double *)k->in[0], (double *)k->in[1], k->out);
  return 0;
}

static int k_conv2d_bwd_data(const Kx *k) { /* (gy, w) -> gx */
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  conv_loops(CONV_DATA, &k->n->a, k->n->shape, ISH(1), k->out, (double *)k->in[1],
             (double *)k->in[0]);
  return 0;
}

static int k_conv2d_bwd_filter(const Kx *k) { /* (x, gy) -> gw */
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  conv_loops(CONV_FILTER, &k->n->a, ISH(0), k->n->shape, (double *)k->in[0], k->out,
             (double *)k->in[1]);
  return 0;
}

/* ---- pooling ---- */

typedef enum { POOL_MAX, POOL_MAX_BWD, POOL_AVG, POOL_AVG_BWD } PoolMode;

/* x: input (or gx for the backward modes), y: output (or gy). */
static void pool_loops(PoolMode mode, const IrAttr *a, IrShape xs, const double *xin, double *x,
                       double *y) {
  int64_t NC = xs.d[0] * xs.d[1], H = xs.d[2], W = xs.d[3];
  int64_t KH = a->kernel[0], KW = a->kernel[1];
  int64_t OH = (H + 2 * a->pad[0] - KH) / a->stride[0] + 1;
  int64_t OW = (W + 2 * a->pad[1] - KW) / a->stride[1] + 1;
  for (int64_t p = 0; p < NC; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double *yv = &y[(p * OH + oh) * OW + ow];
        int64_t h0 = oh * a->stride[0] - a->pad[0], w0 = ow * a->stride[1] - a->pad[1];
        int64_t best = -1, inside = 0;
        double sum = 0, m = -INFINITY;
        for (int64_t kh = 0; kh < KH; kh++)
          for (int64_t kw = 0; kw < KW; kw++) {
            int64_t ih = h0 + kh, iw = w0 + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
              continue;
            int64_t at = (p * H + ih) * W + iw;
            inside++;
            sum += xin ? xin[at] : 0;
            if (xin && (best < 0 || xin[at] > m || (isnan(xin[at]) && !isnan(m)))) {
              best = at; /* the first maximum gets the gradient, as PyTorch */
              m = xin[at];
            }
          }
        /* PyTorch: divide by the window clipped to the padded input, or to the input */
        int64_t hend = h0 + KH < H + a->pad[0] ? h0 + KH : H + a->pad[0];
        int64_t wend = w0 + KW < W + a->pad[1] ? w0 + KW : W + a->pad[1];
        double div = a->count_include_pad ? (double)((hend - h0) * (wend - w0)) : (double)inside;
        switch (mode) {
        case POOL_MAX: *yv = m; break;
        case POOL_MAX_BWD:
          if (best >= 0) /* padding never fills a whole window, but stay safe */
            x[best] += *yv;
          break;
        case POOL_AVG: *yv = sum / div; break;
        case POOL_AVG_BWD:
          for (int64_t kh = 0; kh < KH; kh++)
            for (int64_t kw = 0; kw < KW; kw++) {
              int64_t ih = h0 + kh, iw = w0 + kw;
              if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                x[(p * H + ih) * W + iw] += *yv / div;
            }
          break;
        }
      }
}

static int k_max_pool2d(const Kx *k) {
  pool_loops(POOL_MAX, &k->n->a, ISH(0), k->in[0], NULL, k->out);
  return 0;
}

static int k_max_pool2d_bwd(const Kx *k) { /* (x, gy) -> gx */
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  pool_loops(POOL_MAX_BWD, &k->n->a, ISH(0), k->in[0], k->out, (double *)k->in[1]);
  return 0;
}

static int k_avg_pool2d(const Kx *k) {
  pool_loops(POOL_AVG, &k->n->a, ISH(0), k->in[0], NULL, k->out);
  return 0;
}

static int k_avg_pool2d_bwd(const Kx *k) { /* (gy) -> gx */
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  pool_loops(POOL_AVG_BWD, &k->n->a, k->n->shape, NULL, k->out, (double *)k->in[0]);
  return 0;
}

/* ---- softmax and log_softmax along an axis ---- */

static int k_softmax(const Kx *k) {
  IrShape s = k->n->shape;
  int ax = k->n->a.axis;
  int64_t outer = prod(s, 0, ax), len = s.rank ? s.d[ax] : 1, inner = prod(s, ax + 1, s.rank);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      const double *x = k->in[0] + o * len * inner + j;
      double *y = k->out + o * len * inner + j;
      double m = -INFINITY, sum = 0;
      for (int64_t i = 0; i < len; i++)
        m = x[i * inner] > m ? x[i * inner] : m;
      for (int64_t i = 0; i < len; i++)
        sum += exp(x[i * inner] - m);
      for (int64_t i = 0; i < len; i++)
        y[i * inner] = k->n->op == IR_SOFTMAX ? exp(x[i * inner] - m) / sum
                                              : x[i * inner] - m - log(sum);
    }
  return 0;
}

/* ---- losses ---- */

static int k_class_loss(const Kx *k) {
  IrShape xs = ISH(0);
  int64_t N = xs.d[0], C = xs.d[1], S = prod(xs, 2, xs.rank);
  const double *x = k->in[0], *t = k->in[1];
  double eps = k->n->op == IR_CROSS_ENTROPY ? k->n->a.value : 0, total = 0;
  for (int64_t n = 0; n < N; n++)
    for (int64_t s = 0; s < S; s++) {
      double tv = t[n * S + s];
      if (tv < 0 || tv >= (double)C)
        return kfail(k, "target %.0f of element %lld is not a class in [0, %lld)", tv,
                     (long long)(n * S + s), (long long)C);
      const double *row = x + n * C * S + s; /* class c at row[c * S] */
      double logp_t = row[(int64_t)tv * S];
      if (k->n->op == IR_CROSS_ENTROPY) {
        double m = -INFINITY, sum = 0, all = 0;
        for (int64_t c = 0; c < C; c++)
          m = row[c * S] > m ? row[c * S] : m;
        for (int64_t c = 0; c < C; c++)
          sum += exp(row[c * S] - m);
        double lse = m + log(sum);
        for (int64_t c = 0; c < C; c++)
          all += row[c * S] - lse;
        /* label smoothing: the target is (1 - eps) one-hot + eps / C uniform */
        total += -(1 - eps) * (logp_t - lse) - eps / (double)C * all;
      } else {
        total += -logp_t;
      }
    }
  k->out[0] = total / (double)(N * S);
  return 0;
}

static int k_pair_loss(const Kx *k) {
  int64_t n = ir_numel(ISH(0));
  double total = 0;
  for (int64_t i = 0; i < n; i++) {
    double a = k->in[0][i], b = k->in[1][i];
    if (k->n->op == IR_MSE_LOSS)
      total += (a - b) * (a - b);
    else /* max(x, 0) - x y + log(1 + exp(-|x|)): never overflows */
      total += (a > 0 ? a : 0) - a * b + log1p(exp(-fabs(a)));
  }
  k->out[0] = total / (double)n;
  return 0;
}

/* ---- indexing ---- */

static int check_index(const Kx *k, double v, int64_t size, int64_t at) {
  if (v < 0 || v >= (double)size)
    return kfail(k, "index %.0f at element %lld is out of range [0, %lld)", v, (long long)at,
                 (long long)size);
  return 0;
}

/* take and take_grad: x [outer, D, inner], idx [K], y [outer, K, inner] */
static int take_loops(const Kx *k, IrShape xs, const double *idx, int64_t K, const double *src,
                      double *dst, bool grad) {
  int ax = k->n->a.axis;
  int64_t outer = prod(xs, 0, ax), D = xs.d[ax], inner = prod(xs, ax + 1, xs.rank);
  for (int64_t i = 0; i < K; i++)
    if (check_index(k, idx[i], D, i) < 0)
      return -1;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < K; i++)
      for (int64_t j = 0; j < inner; j++) {
        int64_t xo = (o * D + (int64_t)idx[i]) * inner + j, yo = (o * K + i) * inner + j;
        if (grad)
          dst[xo] += src[yo];
        else
          dst[yo] = src[xo];
      }
  return 0;
}

static int k_take(const Kx *k) {
  return take_loops(k, ISH(0), k->in[1], ir_numel(ISH(1)), k->in[0], k->out, false);
}

static int k_take_grad(const Kx *k) {
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  return take_loops(k, k->n->shape, k->in[1], ir_numel(ISH(1)), k->in[0], k->out, true);
}

/* gather and scatter_add: position p of idx reads / writes x at p with p[axis] = idx[p] */
static int gather_loops(const Kx *k, IrShape xs, const double *src, double *dst, bool scatter) {
  IrShape is = ISH(1);
  int ax = k->n->a.axis;
  int64_t xst[IR_MAX_RANK], idx[IR_MAX_RANK], n = ir_numel(is);
  strides(xs, xst);
  for (int64_t i = 0; i < n; i++) {
    double v = k->in[1][i];
    if (check_index(k, v, xs.d[ax], i) < 0)
      return -1;
    unravel(i, is, idx);
    idx[ax] = (int64_t)v;
    int64_t off = 0;
    for (int d = 0; d < xs.rank; d++)
      off += idx[d] * xst[d];
    if (scatter)
      dst[off] += src[i];
    else
      dst[i] = src[off];
  }
  return 0;
}

static int k_gather(const Kx *k) { return gather_loops(k, ISH(0), k->in[0], k->out, false); }

static int k_scatter_add(const Kx *k) {
  memset(k->out, 0, (size_t)ir_numel(k->n->shape) * sizeof(double));
  return gather_loops(k, k->n->shape, k->in[0], k->out, true);
}

static int k_one_hot(const Kx *k) {
  int64_t n = ir_numel(ISH(0)), C = k->n->a.n;
  memset(k->out, 0, (size_t)(n * C) * sizeof(double));
  for (int64_t i = 0; i < n; i++) {
    if (check_index(k, k->in[0][i], C, i) < 0)
      return -1;
    k->out[i * C + (int64_t)k->in[0][i]] = 1;
  }
  return 0;
}

/* ---- randomness ---- */

static int k_dropout(const Kx *k) {
  double p = k->n->a.value, scale = p < 1 ? 1 / (1 - p) : 0;
  uint64_t step = (uint64_t)(int64_t)k->in[1][0];
  int64_t n = ir_numel(k->n->shape);
  for (int64_t i = 0; i < n; i++) /* keep element i when its uniform draw is >= p */
    k->out[i] = philox_uniform(k->n->a.seed, step, (uint64_t)i) >= p ? k->in[0][i] * scale : 0;
  return 0;
}

static int k_rand(const Kx *k) {
  const IrAttr *a = &k->n->a;
  uint64_t step = (uint64_t)(int64_t)k->in[0][0];
  int64_t n = ir_numel(k->n->shape);
  for (int64_t i = 0; i < n; i++)
    k->out[i] = k->n->op == IR_RAND_UNIFORM
                    ? a->value + (a->value2 - a->value) * philox_uniform(a->seed, step, (uint64_t)i)
                    : a->value + a->value2 * philox_normal(a->seed, step, (uint64_t)i);
  return 0;
}

/* The values travel as doubles: each rank's f32 values are exact in double, and the mean is
 * rounded once to the node's dtype afterwards, as the compiled step's f32 sum / size is. */
static int k_allreduce(const Kx *k) {
  int64_t at = 0;
  for (int j = 0; j < k->n->nin; j++) {
    int64_t n = ir_numel(ISH(j));
    memcpy(k->out + at, k->in[j], (size_t)n * sizeof(double));
    at += n;
  }
  return rt_dist_allreduce(k->out, at, RT_DIST_F64, RT_DIST_MEAN);
}

static Kernel *const kernels[] = {
#define OP(id, name, arity, shape, deriv, kernel) kernel,
#include "ir_ops.def"
#undef OP
};

/* ---- the interpreter ---- */

struct IrInterp {
  const IrGraph *g;
  bool f64;
  double **val; /* per node */
  bool *set;    /* inputs given */
  char err[256];
};

IrInterp *interp_new(const IrGraph *g, bool f64) {
  IrInterp *ip = calloc(1, sizeof *ip);
  if (!ip)
    return NULL;
  ip->g = g;
  ip->f64 = f64;
  ip->val = calloc((size_t)(g->n ? g->n : 1), sizeof *ip->val);
  ip->set = calloc((size_t)(g->n ? g->n : 1), sizeof *ip->set);
  bool ok = ip->val && ip->set;
  for (int i = 0; ok && i < g->n; i++) {
    int64_t n = ir_numel(g->node[i].shape);
    ok = (ip->val[i] = calloc((size_t)(n ? n : 1), sizeof(double))) != NULL;
  }
  if (!ok) {
    interp_free(ip);
    return NULL;
  }
  return ip;
}

void interp_free(IrInterp *ip) {
  if (!ip)
    return;
  for (int i = 0; ip->val && i < ip->g->n; i++)
    free(ip->val[i]);
  free(ip->val);
  free(ip->set);
  free(ip);
}

void interp_set(IrInterp *ip, int input, const void *data) {
  const IrNode *n = &ip->g->node[input];
  assert(n->op == IR_INPUT);
  int64_t k = ir_numel(n->shape);
  for (int64_t i = 0; i < k; i++)
    ip->val[input][i] = ir_load(n->dtype, data, i);
  ip->set[input] = true;
}

void interp_set_f64(IrInterp *ip, int input, const double *data) {
  const IrNode *n = &ip->g->node[input];
  assert(n->op == IR_INPUT);
  int64_t k = ir_numel(n->shape);
  for (int64_t i = 0; i < k; i++)
    ip->val[input][i] = ip->f64 && ir_dtype_is_float(n->dtype) ? data[i] : ir_round(n->dtype, data[i]);
  ip->set[input] = true;
}

static void round_to(const IrNode *n, double *v, bool f64) {
  if (f64 && ir_dtype_is_float(n->dtype))
    return;
  int64_t k = ir_numel(n->shape);
  for (int64_t i = 0; i < k; i++)
    v[i] = ir_round(n->dtype, v[i]);
}

int interp_node(const IrGraph *g, int id, const double *const *in, double *out, bool f64) {
  char err[256];
  const IrNode *n = &g->node[id];
  Kx k = {g, n, in, out, err};
  if (kernels[n->op](&k) < 0)
    return -1;
  round_to(n, out, f64);
  return 0;
}

const char *interp_run(IrInterp *ip) {
  const IrGraph *g = ip->g;
  const double *in[64];
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    if (n->op == IR_INPUT) {
      if (!ip->set[i]) {
        snprintf(ip->err, sizeof ip->err, "input \"%s\" (%%%d) was not set", n->name, i);
        return ip->err;
      }
      continue;
    }
    const double **ins = n->nin <= 64 ? in : malloc((size_t)n->nin * sizeof *ins);
    if (!ins)
      return "out of memory";
    for (int j = 0; j < n->nin; j++)
      ins[j] = ip->val[n->in[j]];
    Kx k = {g, n, ins, ip->val[i], ip->err};
    int rc = kernels[n->op](&k);
    if (ins != in)
      free(ins);
    if (rc < 0)
      return ip->err;
    round_to(n, ip->val[i], ip->f64);
  }
  return NULL;
}

const double *interp_data(const IrInterp *ip, int value) { return ip->val[value]; }

double interp_scalar(const IrInterp *ip, int value) { return ip->val[value][0]; }

void interp_get(const IrInterp *ip, int value, void *out) {
  const IrNode *n = &ip->g->node[value];
  int64_t k = ir_numel(n->shape);
  for (int64_t i = 0; i < k; i++)
    ir_store(n->dtype, out, i, ip->val[value][i]);
}
