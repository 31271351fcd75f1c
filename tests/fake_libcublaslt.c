/* fake_libcublaslt.c — a stand-in for libcublasLt.so.13 next to tests/fake_libcuda.c: the
 * matmul computes, on the host, what cuBLASLt's documentation specifies for column-major
 * operands (D = epilogue(op(A) op(B)), op = transpose when asked, the BIAS epilogue adding
 * bias[i] to row i of D, RELU last, strided batches), so the executor's row-major mapping
 * (compiler/cuda_blas.c) is checked against that specification. fp32, alpha 1, beta 0 only.
 * Compute types: CUBLAS_COMPUTE_32F, and the tensor-core ones of the mixed modes,
 * CUBLAS_COMPUTE_32F_FAST_16BF / _FAST_16F, whose documented licence -- inputs may be
 * down-converted to bfloat16 / half -- the fake takes: it rounds both inputs to that format
 * (ties to even), so a wrong compute type for a mode shows in the results; it counts the
 * matmuls run per compute type (fake_cublaslt_computes). With $LTL_FAKE_CUBLASLT_NO_FAST set
 * it refuses the 16-bit compute types, as a cuBLASLt without such an algorithm would. */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int64_t rows, cols, ld, batch, stride; } Lay;
typedef struct { int32_t ta, tb; uint32_t epi; const float *bias; int compute; } Desc;
enum { COMPUTE_32F = 68, COMPUTE_32F_FAST_16F = 74, COMPUTE_32F_FAST_16BF = 75 };
typedef struct { uint64_t data[8]; } Algo;
typedef struct { Algo algo; size_t workspaceSize; int state; float wavesCount; int reserved[4]; } Heuristic;

int cublasLtCreate(void **h) { return *h = (void *)1, 0; }
int cublasLtDestroy(void *h) { return (void)h, 0; }
int cublasLtMatmulDescCreate(Desc **d, int compute, int scale) {
  bool fast = compute == COMPUTE_32F_FAST_16F || compute == COMPUTE_32F_FAST_16BF;
  if ((compute != COMPUTE_32F && !fast) || scale != 0 || (fast && getenv("LTL_FAKE_CUBLASLT_NO_FAST")))
    return 15; /* NOT_SUPPORTED: fp32 data only (and, if asked, no tensor-core compute type) */
  *d = calloc(1, sizeof **d);
  (*d)->epi = 1;
  (*d)->compute = compute;
  return 0;
}
int cublasLtMatmulDescDestroy(Desc *d) { return free(d), 0; }
int cublasLtMatmulDescSetAttribute(Desc *d, int attr, const void *v, size_t n) {
  switch (attr) {
  case 3: memcpy(&d->ta, v, n); return 0;
  case 4: memcpy(&d->tb, v, n); return 0;
  case 7: memcpy(&d->epi, v, n); return 0;
  case 8: memcpy(&d->bias, v, n); return 0;
  default: return 7; /* INVALID_VALUE */
  }
}
int cublasLtMatrixLayoutCreate(Lay **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  if (type != 0 || ld < (int64_t)rows) return 7;
  *l = calloc(1, sizeof **l);
  **l = (Lay){(int64_t)rows, (int64_t)cols, ld, 1, 0};
  return 0;
}
int cublasLtMatrixLayoutDestroy(Lay *l) { return free(l), 0; }
int cublasLtMatrixLayoutSetAttribute(Lay *l, int attr, const void *v, size_t n) {
  if (attr == 5) { int32_t c; memcpy(&c, v, n); l->batch = c; return 0; }
  if (attr == 6) { memcpy(&l->stride, v, n); return 0; }
  return 7;
}
int cublasLtMatmulPreferenceCreate(void **p) { return *p = (void *)1, 0; }
int cublasLtMatmulPreferenceDestroy(void *p) { return (void)p, 0; }
int cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *v, size_t n) {
  return (void)p, (void)v, (void)n, attr == 1 ? 0 : 7;
}
int cublasLtMatmulAlgoGetHeuristic(void *h, Desc *d, Lay *a, Lay *b, Lay *c, Lay *dd, void *pref, int req,
                                   Heuristic *res, int *found) {
  (void)h, (void)pref, (void)req;
  int64_t m = d->ta ? a->cols : a->rows, k = d->ta ? a->rows : a->cols;
  int64_t kb = d->tb ? b->cols : b->rows, n = d->tb ? b->rows : b->cols;
  if (k != kb || c->rows != m || c->cols != n || c != dd) return 7; /* shapes do not chain */
  memset(res, 0, sizeof *res);
  *found = 1;
  return 0;
}

typedef struct {
  Desc d;
  Lay a, b, c;
  const float *A, *B;
  float *D;
} Call;

static int computes[3]; /* matmuls enqueued with 32F, FAST_16F, FAST_16BF */
void fake_cublaslt_computes(int *c32, int *c16f, int *c16bf) { *c32 = computes[0], *c16f = computes[1], *c16bf = computes[2]; }

/* an input as the compute type may see it: bf16 (cut the f32 bits with ties to even) or f16 */
static double input(int compute, float v) {
  if (compute == COMPUTE_32F_FAST_16F)
    return (float)(_Float16)v;
  if (compute != COMPUTE_32F_FAST_16BF || v != v)
    return v;
  uint32_t u;
  memcpy(&u, &v, 4);
  u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
  memcpy(&v, &u, 4);
  return v;
}

static void matmul(void *arg) {
  const Call *x = arg;
  int ct = x->d.compute;
  int64_t m = x->c.rows, n = x->c.cols, k = x->d.ta ? x->a.rows : x->a.cols;
  for (int64_t t = 0; t < x->c.batch; t++) {
    const float *A = x->A + t * x->a.stride, *B = x->B + t * x->b.stride;
    float *D = x->D + t * x->c.stride;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int64_t q = 0; q < k; q++)
          s += input(ct, x->d.ta ? A[q + i * x->a.ld] : A[i + q * x->a.ld]) *
               input(ct, x->d.tb ? B[j + q * x->b.ld] : B[q + j * x->b.ld]);
        if (x->d.epi & 4) s += x->d.bias[i];
        if ((x->d.epi & 2) && s < 0) s = 0;
        D[i + j * x->c.ld] = (float)s;
      }
  }
}

int cublasLtMatmul(void *h, Desc *d, const float *alpha, const float *A, Lay *ad, const float *B, Lay *bd,
                   const float *beta, const float *C, Lay *cd, float *D, Lay *dd, const Algo *algo, void *ws,
                   size_t wsn, void *stream) {
  (void)h, (void)algo, (void)ws, (void)wsn;
  if (*alpha != 1 || *beta != 0 || C != D || cd != dd) return 15;
  Call *x = malloc(sizeof *x); /* kept: a captured graph replays it (the fake driver frees it) */
  *x = (Call){*d, *ad, *bd, *cd, A, B, D};
  computes[d->compute == COMPUTE_32F ? 0 : d->compute == COMPUTE_32F_FAST_16F ? 1 : 2]++;
  void *cuda = dlopen(getenv("LTL_CUDA_LIB"), RTLD_NOW | RTLD_NOLOAD);
  void (*stream_op)(void *, void (*)(void *), void *) =
      cuda ? (void (*)(void *, void (*)(void *), void *))dlsym(cuda, "fake_cuda_stream_op") : NULL;
  if (!stream_op) return 13; /* EXECUTION_FAILED */
  stream_op(stream, matmul, x);
  dlclose(cuda);
  return 0;
}
