/* cuda_conv.c — convolutions on the GPU as implicit GEMMs (prefix cuda_).
 *
 * conv2d (with the bias / ReLU epilogue fuse.c absorbed), conv2d_bwd_data and
 * conv2d_bwd_filter (NCHW, OIHW, groups 1, f32) are each one GEMM C[M][N] = A[M][K] B[K][N]
 * whose operand tiles are gathered straight from the tensors into shared memory, so no
 * im2col matrix ever exists in global memory:
 *
 *   conv2d             M = N*OH*OW (image, pixel)  N = O            K = C*KH*KW
 *   conv2d_bwd_data    M = N*H*W   (image, pixel)  N = C            K = O*KH*KW
 *   conv2d_bwd_filter  M = O                       N = C*KH*KW      K = N*OH*OW
 *
 * One block of 256 threads computes a 64 x 64 tile of C, each thread 4 x 4 of it in
 * registers (rows tm + 16 i, columns tn + 16 j), K in chunks of 16 (8 when K is that small)
 * staged through two shared-memory buffers, the next chunk's global loads in flight while
 * the current one is multiplied. Every shape, stride, padding and dilation is a constant of
 * the code. When there are few tiles and a long K (always the weight gradient; the data
 * GEMMs of a small batch of small images), K is split over blocks that write partial
 * results to the kernel's scratch, summed in a fixed order by a second kernel (which then
 * adds the bias and applies the ReLU): no float atomics, the same bits every run.
 * Accumulation is f32, as the CPU's GEMM. docs/backend-cuda.md ("Convolution: implicit
 * GEMM") has the layout and the reasons. */
#include "cuda.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
  CV_TILE = 64,            /* block tile, both dimensions */
  CV_SPLIT_TARGET = 264,   /* split K below this many tiles (2 blocks per SM of an H100) */
  CV_SPLIT_MIN_CHUNKS = 4, /* K chunks per split at least */
};
_Static_assert(CUDA_BLOCK == 256, "the tiles assume 256 threads: 16 x 16 threads of 4 x 4 outputs");

typedef struct {
  FILE *f;
  IrOp op;
  const char *I; /* index type: int when every index fits, else long long */
  int bk;        /* K chunk */
  long long N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw;
  long long M, NN, K;
} Cv;

static void put(Cv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Cv *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(c->f, fmt, ap);
  va_end(ap);
}

/* "((float *)(B[base] + bytes) + elements)": where value v's first element lives */
static bool vptr(const FusePlan *p, int v, char *buf, size_t n, char *err, size_t errlen) {
  const FuseValue *fv = &p->val[v];
  int b = fv->how == FUSE_MEM ? v : fv->how == FUSE_VIEW ? fv->of : -1;
  if (b < 0) {
    snprintf(err, errlen, "value %%%d has no memory", v);
    return false;
  }
  snprintf(buf, n, "((float *)(B[%d] + %lldLL) + %lldLL)", p->val[b].base, (long long)p->val[b].offset,
           (long long)fv->voff);
  return true;
}

/* An operand loaded "k-fast" (consecutive threads on consecutive k: contiguous along K in
 * memory) has bk/4 slots per thread at row t % bk, columns x<r> = t / bk + (256 / bk) r;
 * one loaded "m-fast" (contiguous along M) has one column t % 64 and rows t / 64 + 4 r. */
static bool a_kfast(const Cv *c) { return c->op == IR_CONV2D_BWD_FILTER; }

/* Per tile: what each thread's load slots need (image offsets, window origins). */
static void setup(Cv *c) {
  const char *I = c->I;
  long long HW = c->H * c->W, OHOW = c->OH * c->OW, KHKW = c->KH * c->KW;
  int per = 256 / c->bk;
  if (!a_kfast(c)) { /* A gathers the input (forward) or the output gradient (bwd_data) */
    put(c, "    const %s am_ = m0_ + t_ %% 64;\n    const int aok_ = am_ < %lld;\n", I, c->M);
    if (c->op == IR_CONV2D) {
      put(c, "    const %s aq_ = am_ %% %lld, ax_ = am_ / %lld * %lld;\n", I, OHOW, OHOW, c->C * HW);
      put(c, "    const %s ah_ = aq_ / %lld * %lld - %lld, aw_ = aq_ %% %lld * %lld - %lld;\n", I, c->OW, c->sh, c->ph,
          c->OW, c->sw, c->pw);
    } else {
      put(c, "    const %s aq_ = am_ %% %lld, ax_ = am_ / %lld * %lld;\n", I, HW, HW, c->O * OHOW);
      put(c, "    const %s ah_ = aq_ / %lld + %lld, aw_ = aq_ %% %lld + %lld;\n", I, c->W, c->ph, c->W, c->pw);
    }
  } else {
    for (int r = 0; r < c->bk / 4; r++)
      put(c, "    const %s ax%d_ = m0_ + t_ / %d + %d;\n", I, r, c->bk, per * r);
  }
  for (int r = 0; r < c->bk / 4; r++) {
    put(c, "    const %s bx%d_ = n0_ + t_ / %d + %d;\n", I, r, c->bk, per * r);
    if (c->op == IR_CONV2D_BWD_FILTER) /* column (c, kh, kw): channel offset, window origin */
      put(c, "    const %s bc%d_ = bx%d_ / %lld * %lld, bh%d_ = bx%d_ %% %lld / %lld * %lld - %lld, "
             "bw%d_ = bx%d_ %% %lld * %lld - %lld;\n",
          I, r, r, KHKW, HW, r, r, KHKW, c->KW, c->dh, c->ph, r, r, c->KW, c->dw, c->pw);
  }
}

/* Loads the chunk starting at K index `k0` into the registers ra_, rb_ (0 outside). */
static void load(Cv *c, const char *k0) {
  const char *I = c->I;
  long long HW = c->H * c->W, OHOW = c->OH * c->OW, KHKW = c->KH * c->KW;
  for (int r = 0; r < c->bk / 4; r++) {
    if (!a_kfast(c)) {
      put(c, "      { const %s k_ = %s + t_ / 64 + %d; float v_ = 0.0f;\n", I, k0, 4 * r);
      put(c, "        if (aok_ && k_ < ke_) {\n");
      put(c, "          const %s ch_ = k_ / %lld, r_ = k_ %% %lld; /* channel (in or out), kh kw */\n", I, KHKW, KHKW);
      if (c->op == IR_CONV2D) {
        put(c, "          const %s ih_ = ah_ + r_ / %lld * %lld, iw_ = aw_ + r_ %% %lld * %lld;\n", I, c->KW, c->dh,
            c->KW, c->dw);
        put(c, "          if (ih_ >= 0 && ih_ < %lld && iw_ >= 0 && iw_ < %lld) v_ = P0_[ax_ + ch_ * %lld + ih_ * %lld + iw_];\n",
            c->H, c->W, HW, c->W);
      } else { /* output pixel (th, tw) = (h + ph - kh dh, w + pw - kw dw) / stride, when exact */
        put(c, "          %s th_ = ah_ - r_ / %lld * %lld, tw_ = aw_ - r_ %% %lld * %lld;\n", I, c->KW, c->dh, c->KW,
            c->dw);
        put(c, "          if (th_ >= 0 && tw_ >= 0");
        if (c->sh > 1)
          put(c, " && th_ %% %lld == 0", c->sh);
        if (c->sw > 1)
          put(c, " && tw_ %% %lld == 0", c->sw);
        put(c, ") {\n");
        if (c->sh > 1)
          put(c, "            th_ /= %lld;\n", c->sh);
        if (c->sw > 1)
          put(c, "            tw_ /= %lld;\n", c->sw);
        put(c, "            if (th_ < %lld && tw_ < %lld) v_ = P0_[ax_ + ch_ * %lld + th_ * %lld + tw_];\n", c->OH, c->OW,
            OHOW, c->OW);
        put(c, "          }\n");
      }
      put(c, "        }\n        ra_[%d] = v_; }\n", r);
    } else { /* bwd_filter: A[o][(n, q)] = gy[n][o][q] */
      put(c, "      { const %s k_ = %s + t_ %% %d;\n", I, k0, c->bk);
      put(c, "        ra_[%d] = ax%d_ < %lld && k_ < ke_ ? P1_[k_ / %lld * %lld + ax%d_ * %lld + k_ %% %lld] : 0.0f; }\n", r,
          r, c->O, OHOW, c->O * OHOW, r, OHOW, OHOW);
    }
    put(c, "      { const %s k_ = %s + t_ %% %d;\n", I, k0, c->bk);
    if (c->op == IR_CONV2D) /* B[(c, kh, kw)][o] = w[o][c][kh][kw] */
      put(c, "        rb_[%d] = bx%d_ < %lld && k_ < ke_ ? P1_[bx%d_ * %lld + k_] : 0.0f; }\n", r, r, c->O, r, c->K);
    else if (c->op == IR_CONV2D_BWD_DATA) /* B[(o, kh, kw)][c] = w[o][c][kh][kw] */
      put(c, "        rb_[%d] = bx%d_ < %lld && k_ < ke_ ? P1_[k_ / %lld * %lld + bx%d_ * %lld + k_ %% %lld] : 0.0f; }\n", r,
          r, c->C, KHKW, c->C * KHKW, r, KHKW, KHKW);
    else { /* B[(n, oh, ow)][(c, kh, kw)] = x[n][c][oh sh - ph + kh dh][ow sw - pw + kw dw] */
      put(c, "        float v_ = 0.0f;\n        if (bx%d_ < %lld && k_ < ke_) {\n", r, c->NN);
      put(c, "          const %s q_ = k_ %% %lld, ih_ = q_ / %lld * %lld + bh%d_, iw_ = q_ %% %lld * %lld + bw%d_;\n", I,
          OHOW, c->OW, c->sh, r, c->OW, c->sw, r);
      put(c, "          if (ih_ >= 0 && ih_ < %lld && iw_ >= 0 && iw_ < %lld) v_ = P0_[k_ / %lld * %lld + bc%d_ + ih_ * %lld + iw_];\n",
          c->H, c->W, OHOW, c->C * HW, r, c->W);
      put(c, "        }\n        rb_[%d] = v_; }\n", r);
    }
  }
}

/* Stores the registers into shared buffer `buf`: rows are K, 64 + 32/bk floats each, so
 * both store patterns and the compute loop's reads hit 32 different banks per warp. */
static void store(Cv *c, const char *buf) {
  int per = 256 / c->bk;
  for (int r = 0; r < c->bk / 4; r++) {
    if (!a_kfast(c))
      put(c, "      As_[%s][t_ / 64 + %d][t_ %% 64] = ra_[%d];\n", buf, 4 * r, r);
    else
      put(c, "      As_[%s][t_ %% %d][t_ / %d + %d] = ra_[%d];\n", buf, c->bk, c->bk, per * r, r);
    put(c, "      Bs_[%s][t_ %% %d][t_ / %d + %d] = rb_[%d];\n", buf, c->bk, c->bk, per * r, r);
  }
}

/* Runs emit(c, arg) with every line it writes shifted right by `shift` spaces (negative:
 * left), so load() and store() read well in the prologue and inside the K loop alike. */
static void shifted(Cv *c, int shift, void (*emit)(Cv *, const char *), const char *arg) {
  FILE *real = c->f;
  char *text = NULL;
  size_t len = 0;
  c->f = open_memstream(&text, &len);
  emit(c, arg);
  fclose(c->f);
  c->f = real;
  for (char *line = text; line < text + len;) {
    char *end = strchr(line, '\n');
    int lead = (int)strspn(line, " "), keep = lead + shift < 0 ? 0 : lead + shift;
    fprintf(real, "%*s%.*s\n", keep, "", (int)(end - line - lead), line + lead);
    line = end + 1;
  }
  free(text);
}

int cuda_conv_emit(FILE *f, const FusePlan *p, int kid, CudaConvLaunch l[2], char *err, size_t errlen) {
  const FuseKernel *k = &p->k[kid];
  const IrGraph *g = p->g;
  const IrNode *n = &g->node[k->op];
  int in0 = p->in[k->op][0], in1 = p->in[k->op][1];
  IrShape xs = n->op == IR_CONV2D_BWD_DATA ? n->shape : g->node[in0].shape;
  IrShape ws = n->op == IR_CONV2D_BWD_FILTER ? n->shape : g->node[in1].shape;
  if (n->dtype != IR_F32 || n->a.groups > 1) {
    snprintf(err, errlen, "kernel %d: the CUDA convolution is f32 with groups = 1 only", kid);
    return -1;
  }
  Cv c = {.f = f, .op = n->op, .N = xs.d[0], .C = xs.d[1], .H = xs.d[2], .W = xs.d[3], .O = ws.d[0], .KH = ws.d[2],
          .KW = ws.d[3], .sh = n->a.stride[0], .sw = n->a.stride[1], .ph = n->a.pad[0], .pw = n->a.pad[1],
          .dh = n->a.dil[0], .dw = n->a.dil[1]};
  c.OH = (c.H + 2 * c.ph - c.dh * (c.KH - 1) - 1) / c.sh + 1;
  c.OW = (c.W + 2 * c.pw - c.dw * (c.KW - 1) - 1) / c.sw + 1;
  long long CKK = c.C * c.KH * c.KW;
  if (c.op == IR_CONV2D)
    c.M = c.N * c.OH * c.OW, c.NN = c.O, c.K = CKK;
  else if (c.op == IR_CONV2D_BWD_DATA)
    c.M = c.N * c.H * c.W, c.NN = c.C, c.K = c.O * c.KH * c.KW;
  else
    c.M = c.O, c.NN = CKK, c.K = c.N * c.OH * c.OW;
  c.bk = c.K <= 8 ? 8 : 16;
  long long tiles = ((c.M + CV_TILE - 1) / CV_TILE) * ((c.NN + CV_TILE - 1) / CV_TILE);
  long long ntn = (c.NN + CV_TILE - 1) / CV_TILE, chunks = (c.K + c.bk - 1) / c.bk, cnt = c.M * c.NN;
  /* partial results (each the output's size and layout) in the kernel's scratch: fuse.c
   * sizes it for the CPU's im2col columns, room for min(N, 8) weight gradients at least */
  long long want = (CV_SPLIT_TARGET + tiles - 1) / tiles, most = chunks / CV_SPLIT_MIN_CHUNKS;
  long long fits = k->scratch_bytes / (cnt * 4), split = want < most ? want : most;
  split = split < fits ? split : fits;
  split = split < 1 ? 1 : split;
  long long ks = (chunks + split - 1) / split * c.bk; /* K per split, whole chunks */
  split = (c.K + ks - 1) / ks;
  long long work = tiles * split, big = 0;
  long long sizes[] = {c.N * c.C * c.H * c.W, c.N * c.O * c.OH * c.OW, cnt * split, c.M + 2 * CV_TILE,
                       c.K + 2 * c.bk, work + CUDA_MAX_GRID};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    big = sizes[i] > big ? sizes[i] : big;
  c.I = big < (1LL << 30) ? "int" : "long long";

  char p0[128], p1[128], po[128], pb[128] = "";
  if (!vptr(p, in0, p0, sizeof p0, err, errlen) || !vptr(p, in1, p1, sizeof p1, err, errlen) ||
      !vptr(p, k->result, po, sizeof po, err, errlen) || (k->bias >= 0 && !vptr(p, k->bias, pb, sizeof pb, err, errlen)))
    return -1;
  long long bstride = k->bias >= 0 ? p->val[k->bias].stride[g->node[k->bias].shape.rank - 3] : 0;
  const char *what = c.op == IR_CONV2D ? "conv2d" : c.op == IR_CONV2D_BWD_DATA ? "conv2d_bwd_data" : "conv2d_bwd_filter";
  const char *I = c.I;

  put(&c, "#ifndef LTL_UNROLL\n#if defined(__CUDACC__) || defined(__CUDACC_RTC__)\n#define LTL_UNROLL _Pragma(\"unroll\")\n"
          "#else\n#define LTL_UNROLL\n#endif\n#endif\n");
  put(&c, "/* k%d %s%s%s: x [%lld, %lld, %lld, %lld], w [%lld, %lld, %lld, %lld], y [.., %lld, %lld], stride %lld %lld,\n"
          "   padding %lld %lld, dilation %lld %lld: implicit GEMM M %lld x N %lld x K %lld, %d x %d tiles, K by %d",
      kid, what, k->bias >= 0 ? " +bias" : "", k->relu ? " +relu" : "", c.N, c.C, c.H, c.W, c.O, c.C, c.KH, c.KW, c.OH,
      c.OW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.M, c.NN, c.K, CV_TILE, CV_TILE, c.bk);
  if (split > 1)
    put(&c, ",\n   K split in %lld parts of %lld summed by ltl_k%d", split, ks, kid);
  put(&c, " */\n");
  put(&c, "LTL_KERNEL ltl_k%d%s(char *const *B) {\n", kid, split > 1 ? "_part" : "");
  put(&c, "  __shared__ float As_[2][%d][%d];\n  __shared__ float Bs_[2][%d][%d];\n", c.bk, CV_TILE + 32 / c.bk, c.bk,
      CV_TILE + 32 / c.bk);
  put(&c, "  const float *P0_ = %s, *P1_ = %s;\n", p0, p1);
  if (split > 1)
    put(&c, "  float *PO_ = (float *)(B[%d] + %lldLL);\n", FUSE_BASE_ARENA, (long long)k->scratch);
  else
    put(&c, "  float *PO_ = %s;\n", po);
  put(&c, "  const int t_ = threadIdx.x, tm_ = t_ %% 16, tn_ = t_ / 16;\n");
  put(&c, "  for (%s w_ = blockIdx.x; w_ < %lld; w_ += gridDim.x) {\n", I, work);
  if (split > 1) {
    put(&c, "    const %s tile_ = w_ / %lld, sp_ = w_ %% %lld;\n", I, split, split);
    put(&c, "    const %s kb_ = sp_ * %lld, ke_ = kb_ + %lld < %lld ? kb_ + %lld : %lld;\n", I, ks, ks, c.K, ks, c.K);
  } else {
    put(&c, "    const %s tile_ = w_, kb_ = 0, ke_ = %lld;\n", I, c.K);
  }
  put(&c, "    const %s m0_ = tile_ / %lld * %d, n0_ = tile_ %% %lld * %d;\n", I, ntn, CV_TILE, ntn, CV_TILE);
  setup(&c);
  put(&c, "    float acc_[4][4], ra_[%d], rb_[%d];\n", c.bk / 4, c.bk / 4);
  put(&c, "    LTL_UNROLL for (int i = 0; i < 4; i++) {\n      LTL_UNROLL for (int j = 0; j < 4; j++) acc_[i][j] = 0.0f;\n    }\n");
  shifted(&c, -2, load, "kb_");
  shifted(&c, -2, store, "0");
  put(&c, "    __syncthreads();\n");
  put(&c, "    for (%s k0_ = kb_; k0_ < ke_; k0_ += %d) {\n", I, c.bk);
  put(&c, "      const int cur_ = (int)((k0_ - kb_) / %d) & 1, more_ = k0_ + %d < ke_;\n", c.bk, c.bk);
  put(&c, "      if (more_) { /* the next chunk's loads in flight during the multiply */\n");
  char next[32];
  snprintf(next, sizeof next, "(k0_ + %d)", c.bk);
  shifted(&c, 2, load, next);
  put(&c, "      }\n");
  put(&c, "      LTL_UNROLL for (int kk_ = 0; kk_ < %d; kk_++) {\n", c.bk);
  put(&c, "        float a_[4], b_[4];\n");
  put(&c, "        LTL_UNROLL for (int i = 0; i < 4; i++) { a_[i] = As_[cur_][kk_][tm_ + 16 * i]; b_[i] = Bs_[cur_][kk_][tn_ + 16 * i]; }\n");
  put(&c, "        LTL_UNROLL for (int i = 0; i < 4; i++) {\n"
          "          LTL_UNROLL for (int j = 0; j < 4; j++) acc_[i][j] += a_[i] * b_[j];\n        }\n      }\n");
  put(&c, "      if (more_) {\n");
  shifted(&c, 2, store, "cur_ ^ 1");
  put(&c, "      }\n      __syncthreads(); /* the stores visible; every read of cur_ done before it is refilled */\n    }\n");
  /* epilogue: C[m][n] into its tensor; rows are contiguous along M for the two data GEMMs */
  long long OHOW = c.OH * c.OW, HW = c.H * c.W;
  put(&c, "    LTL_UNROLL for (int i = 0; i < 4; i++) {\n");
  put(&c, "      const %s m_ = m0_ + tm_ + 16 * i;\n      if (m_ >= %lld) continue;\n", I, c.M);
  long long colst;
  if (c.op == IR_CONV2D)
    put(&c, "      const %s ro_ = m_ / %lld * %lld + m_ %% %lld;\n", I, OHOW, c.O * OHOW, OHOW), colst = OHOW;
  else if (c.op == IR_CONV2D_BWD_DATA)
    put(&c, "      const %s ro_ = m_ / %lld * %lld + m_ %% %lld;\n", I, HW, c.C * HW, HW), colst = HW;
  else
    put(&c, "      const %s ro_ = m_ * %lld;\n", I, CKK), colst = 1;
  if (split > 1) /* into partial sp_ of the scratch */
    put(&c, "      const %s po_ = ro_ + sp_ * %lld;\n", I, cnt);
  else
    put(&c, "      const %s po_ = ro_;\n", I);
  put(&c, "      LTL_UNROLL for (int j = 0; j < 4; j++) {\n");
  put(&c, "        const %s n_ = n0_ + tn_ + 16 * j;\n        if (n_ >= %lld) continue;\n", I, c.NN);
  put(&c, "        float v_ = acc_[i][j];\n");
  if (k->bias >= 0 && split == 1)
    put(&c, "        v_ += %s[n_ * %lldLL];\n", pb, bstride);
  if (k->relu && split == 1)
    put(&c, "        v_ = v_ <= 0 ? 0.0f : v_;\n");
  put(&c, "        PO_[po_ + n_ * %lld] = v_;\n      }\n    }\n  }\n}\n\n", colst);
  l[0] = (CudaConvLaunch){.blocks = work};
  if (split == 1)
    return 1;
  snprintf(l[0].suffix, sizeof l[0].suffix, "_part");
  /* the partials summed in split order (deterministic), then the epilogue */
  put(&c, "/* k%d %s 2/2: the sum of %lld partial results, in order */\n", kid, what, split);
  put(&c, "LTL_KERNEL ltl_k%d(char *const *B) {\n", kid);
  put(&c, "  const float *P_ = (const float *)(B[%d] + %lldLL);\n  float *Y_ = %s;\n", FUSE_BASE_ARENA,
      (long long)k->scratch, po);
  put(&c, "  for (long long i = LTL_TID; i < %lldLL; i += LTL_NTH) {\n    float s_ = 0.0f;\n", cnt);
  put(&c, "    for (int s = 0; s < %lld; s++) s_ += P_[s * %lldLL + i];\n", split, cnt);
  if (k->bias >= 0) /* output channel (i / OH OW) % O */
    put(&c, "    s_ += %s[i / %lldLL %% %lldLL * %lldLL];\n", pb, OHOW, c.O, bstride);
  if (k->relu)
    put(&c, "    s_ = s_ <= 0 ? 0.0f : s_;\n");
  put(&c, "    Y_[i] = s_;\n  }\n}\n\n");
  l[1] = (CudaConvLaunch){.blocks = (cnt + CUDA_BLOCK - 1) / CUDA_BLOCK};
  return 2;
}
