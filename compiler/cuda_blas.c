/* cuda_blas.c — the plan's GEMMs through cuBLASLt (prefix cuda_blas_).
 *
 * libcublasLt.so.13 is dlopen'ed; the few prototypes and enum values used are declared here
 * (values from cublasLt.h / cublas_api.h / library_types.h of CUDA 13).
 *
 * cuBLASLt is column-major and its BIAS epilogue adds a vector along the rows of D, while the
 * plan's GEMMs are row-major with a bias per column. A row-major m x n matrix with leading
 * dimension ld is the column-major n x m matrix with the same ld, so C = op(A) op(B) is
 * computed as C^T = op(B)^T op(A)^T: cuBLASLt's first operand is B, its second A, D has n
 * rows, and the per-row bias of D^T is the per-column bias of C. */
#include "cuda.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

typedef int cublasStatus_t;
typedef void *Handle, *Desc, *Layout, *Pref;
typedef struct { uint64_t data[8]; } Algo;
typedef struct {
  Algo algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
} Heuristic;

enum {
  R_32F = 0,                 /* cudaDataType CUDA_R_32F */
  COMPUTE_32F = 68,          /* cublasComputeType_t CUBLAS_COMPUTE_32F */
  COMPUTE_32F_FAST_16F = 74, /* ... f32 accumulation, inputs may be down-converted to half (or TF32) */
  COMPUTE_32F_FAST_16BF = 75,/* ... to bfloat16 (or TF32) */
  OP_N = 0, OP_T = 1,        /* cublasOperation_t */
  DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8,
  EPI_DEFAULT = 1, EPI_RELU = 2, EPI_BIAS = 4,
  LAYOUT_BATCH_COUNT = 5, LAYOUT_STRIDED_BATCH_OFFSET = 6,
  PREF_MAX_WORKSPACE_BYTES = 1,
};

typedef struct {
  Desc desc;
  Layout a, b, c;
  Algo algo;
  size_t work;
  CudaGemm g;
  bool fast16;   /* a tensor-core compute type */
} Plan;

struct CudaBlas {
  void *lib;
  Handle h;
  Plan *plan;
  int nplan;
  cublasStatus_t (*create)(Handle *);
  cublasStatus_t (*destroy)(Handle);
  cublasStatus_t (*desc_create)(Desc *, int, int);
  cublasStatus_t (*desc_destroy)(Desc);
  cublasStatus_t (*desc_set)(Desc, int, const void *, size_t);
  cublasStatus_t (*layout_create)(Layout *, int, uint64_t, uint64_t, int64_t);
  cublasStatus_t (*layout_destroy)(Layout);
  cublasStatus_t (*layout_set)(Layout, int, const void *, size_t);
  cublasStatus_t (*pref_create)(Pref *);
  cublasStatus_t (*pref_destroy)(Pref);
  cublasStatus_t (*pref_set)(Pref, int, const void *, size_t);
  cublasStatus_t (*heuristic)(Handle, Desc, Layout, Layout, Layout, Layout, Pref, int, Heuristic *, int *);
  cublasStatus_t (*matmul)(Handle, Desc, const void *, const void *, Layout, const void *, Layout, const void *,
                           const void *, Layout, void *, Layout, const Algo *, void *, size_t, void *);
};

/* Workspace: cuBLASLt gets none (it then picks algorithms that need none), so a captured
 * graph holds no allocation and GEMMs can share the stream without a buffer each. */
enum { WORKSPACE = 0 };

CudaBlas *cuda_blas_create(char *err, size_t errlen) {
  const char *env = getenv("LTL_CUBLASLT_LIB");
  const char *names[] = {"libcublasLt.so.13", "/usr/local/cuda/lib64/libcublasLt.so.13"};
  CudaBlas *b = calloc(1, sizeof *b);
  if (env && env[0])
    b->lib = dlopen(env, RTLD_NOW | RTLD_LOCAL);
  for (size_t i = 0; !(env && env[0]) && i < 2 && !b->lib; i++)
    b->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!b->lib) {
    snprintf(err, errlen, "cuBLASLt could not be loaded (%s)", env && env[0] ? env : "libcublasLt.so.13");
    free(b);
    return NULL;
  }
  static const CudaSym syms[] = {
#define S(f, n) {offsetof(CudaBlas, f), n}
      S(create, "cublasLtCreate"), S(destroy, "cublasLtDestroy"), S(desc_create, "cublasLtMatmulDescCreate"),
      S(desc_destroy, "cublasLtMatmulDescDestroy"), S(desc_set, "cublasLtMatmulDescSetAttribute"),
      S(layout_create, "cublasLtMatrixLayoutCreate"), S(layout_destroy, "cublasLtMatrixLayoutDestroy"),
      S(layout_set, "cublasLtMatrixLayoutSetAttribute"), S(pref_create, "cublasLtMatmulPreferenceCreate"),
      S(pref_destroy, "cublasLtMatmulPreferenceDestroy"), S(pref_set, "cublasLtMatmulPreferenceSetAttribute"),
      S(heuristic, "cublasLtMatmulAlgoGetHeuristic"), S(matmul, "cublasLtMatmul"),
#undef S
  };
  const char *missing = cuda_dlsyms(b->lib, syms, sizeof syms / sizeof *syms, b);
  if (missing) {
    snprintf(err, errlen, "cuBLASLt lacks %s", missing);
    dlclose(b->lib);
    free(b);
    return NULL;
  }
  cublasStatus_t st = b->create(&b->h);
  if (st) {
    snprintf(err, errlen, "cublasLtCreate failed (status %d)", st);
    dlclose(b->lib);
    free(b);
    return NULL;
  }
  return b;
}

static void plan_destroy(CudaBlas *b, Plan *p) {
  if (p->a)
    b->layout_destroy(p->a);
  if (p->b)
    b->layout_destroy(p->b);
  if (p->c)
    b->layout_destroy(p->c);
  if (p->desc)
    b->desc_destroy(p->desc);
}

void cuda_blas_destroy(CudaBlas *b) {
  if (!b)
    return;
  for (int i = 0; i < b->nplan; i++)
    plan_destroy(b, &b->plan[i]);
  free(b->plan);
  b->destroy(b->h);
  dlclose(b->lib);
  free(b);
}

/* A column-major rows x cols layout, batched with an element stride. */
static cublasStatus_t layout(CudaBlas *b, Layout *l, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                             int64_t stride) {
  cublasStatus_t st = b->layout_create(l, R_32F, (uint64_t)rows, (uint64_t)cols, ld);
  if (!st && batch > 1) {
    int32_t cnt = (int32_t)batch;
    st = b->layout_set(*l, LAYOUT_BATCH_COUNT, &cnt, sizeof cnt);
    if (!st)
      st = b->layout_set(*l, LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
  }
  return st;
}

static int plan_try(CudaBlas *b, const CudaGemm *g, int compute, char *err, size_t errlen) {
  Plan p = {.g = *g, .fast16 = compute != COMPUTE_32F};
  /* C^T (n x m) = X Y with X = op(B)^T (n x k), Y = op(A)^T (k x m), all column-major */
  int32_t opx = g->tb ? OP_T : OP_N, opy = g->ta ? OP_T : OP_N;
  uint32_t epi = g->bias ? (g->relu ? EPI_RELU | EPI_BIAS : EPI_BIAS) : g->relu ? EPI_RELU : EPI_DEFAULT;
  cublasStatus_t st = b->desc_create(&p.desc, compute, R_32F);
  if (!st)
    st = b->desc_set(p.desc, DESC_TRANSA, &opx, sizeof opx);
  if (!st)
    st = b->desc_set(p.desc, DESC_TRANSB, &opy, sizeof opy);
  if (!st)
    st = b->desc_set(p.desc, DESC_EPILOGUE, &epi, sizeof epi);
  if (!st)
    st = g->tb ? layout(b, &p.a, g->k, g->n, g->ldb, g->batch, g->sb) : layout(b, &p.a, g->n, g->k, g->ldb, g->batch, g->sb);
  if (!st)
    st = g->ta ? layout(b, &p.b, g->m, g->k, g->lda, g->batch, g->sa) : layout(b, &p.b, g->k, g->m, g->lda, g->batch, g->sa);
  if (!st)
    st = layout(b, &p.c, g->n, g->m, g->ldc, g->batch, g->sc);
  Pref pref = NULL;
  uint64_t ws = WORKSPACE;
  int found = 0;
  Heuristic h;
  if (!st)
    st = b->pref_create(&pref);
  if (!st)
    st = b->pref_set(pref, PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  if (!st)
    st = b->heuristic(b->h, p.desc, p.a, p.b, p.c, p.c, pref, 1, &h, &found);
  if (pref)
    b->pref_destroy(pref);
  if (st || found < 1 || h.state) {
    snprintf(err, errlen, "cuBLASLt has no algorithm for %lld x %lld x %lld (status %d)", (long long)g->m,
             (long long)g->n, (long long)g->k, st ? st : h.state);
    plan_destroy(b, &p);
    return -1;
  }
  p.algo = h.algo;
  p.work = h.workspaceSize;
  b->plan = realloc(b->plan, (size_t)(b->nplan + 1) * sizeof *b->plan);
  b->plan[b->nplan] = p;
  return b->nplan++;
}

/* Operands that both hold bf16 (f16) values -- the mixed modes round every GEMM operand --
 * run with CUBLAS_COMPUTE_32F_FAST_16BF (16F): cuBLASLt may convert the f32 inputs to 16 bits
 * (or TF32), which is exact for such values, multiply on tensor cores (exact products) and
 * accumulate in f32: the f32 GEMM of the same values up to summation order. If no algorithm
 * takes that compute type, the plain f32 one computes the same. */
int cuda_blas_prepare(CudaBlas *b, const CudaGemm *g, char *err, size_t errlen) {
  if (!g->ok) {
    snprintf(err, errlen, "%s", "batch dimensions with more than one stride");
    return -1;
  }
  int compute = g->fast16 == IR_BF16 ? COMPUTE_32F_FAST_16BF : g->fast16 == IR_F16 ? COMPUTE_32F_FAST_16F : COMPUTE_32F;
  int idx = plan_try(b, g, compute, err, errlen);
  return idx < 0 && compute != COMPUTE_32F ? plan_try(b, g, COMPUTE_32F, err, errlen) : idx;
}

bool cuda_blas_fast16(const CudaBlas *b, int plan) { return b->plan[plan].fast16; }

bool cuda_blas_run(CudaBlas *b, int i, const unsigned long long *bases, void *stream, char *err, size_t errlen) {
  Plan *p = &b->plan[i];
  const CudaGemm *g = &p->g;
  const void *A = (const void *)(uintptr_t)(bases[g->abase] + (unsigned long long)g->aoff);
  const void *B = (const void *)(uintptr_t)(bases[g->bbase] + (unsigned long long)g->boff);
  void *C = (void *)(uintptr_t)(bases[g->cbase] + (unsigned long long)g->coff);
  if (g->bias) { /* the bias address is a device address known only now */
    const void *bias = (const void *)(uintptr_t)(bases[g->biasbase] + (unsigned long long)g->biasoff);
    cublasStatus_t st = b->desc_set(p->desc, DESC_BIAS_POINTER, &bias, sizeof bias);
    if (st)
      return snprintf(err, errlen, "cuBLASLt: bias pointer (status %d)", st), false;
  }
  float one = 1, zero = 0;
  cublasStatus_t st = b->matmul(b->h, p->desc, &one, B, p->a, A, p->b, &zero, C, p->c, C, p->c, &p->algo, NULL, 0, stream);
  if (st)
    return snprintf(err, errlen, "cublasLtMatmul failed (status %d)", st), false;
  return true;
}
