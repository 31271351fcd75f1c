/* cuda_rt.c — the driver API, dlopen'ed, and the step executor (prefixes cuda_rt_, cuda_step_).
 *
 * libcuda.so.1 comes with the NVIDIA driver, not the toolkit: linking it would make ltlc
 * refuse to start on machines without a driver, so it is loaded at run time and every entry
 * point is declared here by its versioned name (cuda.h renames them with macros).
 *
 * A step: the fused plan's arena, constants and status word in device memory allocated once,
 * PARAM / BUFFER / STATE resident on the device (uploaded by bind, downloaded on request),
 * one device buffer per DATA input filled from pinned staging with asynchronous copies, the
 * bases table on the device, and the kernels' launches captured once into a CUDA graph that
 * every run replays on the compute stream. A ddp step's all_reduce nodes are NCCL
 * all-reduces on a second, high-priority stream (the collectives), ordered by events: after
 * the kernels that make the bucket, before the first kernel that reads it (docs/distributed.md). */
#include "cuda.h"
#include "rt.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult; /* CUDA_SUCCESS = 0 */
typedef int CUdevice;

/* ---- the step executor ---- */

typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;
typedef struct CUevent_st *CUevent;

static struct {
  void *lib;
  char why[512];
  CUresult (*init)(unsigned);
  CUresult (*error_string)(CUresult, const char **);
  CUresult (*device_get)(CUdevice *, int);
  CUresult (*attr)(int *, int, CUdevice);
  CUresult (*ctx_retain)(CUcontext *, CUdevice);
  CUresult (*ctx_set)(CUcontext);
  CUresult (*mod_load)(CUmodule *, const void *);
  CUresult (*mod_fn)(CUfunction *, CUmodule, const char *);
  CUresult (*mod_unload)(CUmodule);
  CUresult (*alloc)(CUdeviceptr *, size_t);
  CUresult (*free)(CUdeviceptr);
  CUresult (*host_alloc)(void **, size_t, unsigned);
  CUresult (*host_free)(void *);
  CUresult (*htod)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*dtoh)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*dtod)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CUresult (*memset8)(CUdeviceptr, unsigned char, size_t, CUstream);
  CUresult (*stream_create)(CUstream *, unsigned);
  CUresult (*stream_destroy)(CUstream);
  CUresult (*sync)(CUstream);
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                     void **, void **);
  CUresult (*capture_begin)(CUstream, int);
  CUresult (*capture_end)(CUstream, CUgraph *);
  CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long);
  CUresult (*graph_launch)(CUgraphExec, CUstream);
  CUresult (*graph_exec_destroy)(CUgraphExec);
  CUresult (*graph_destroy)(CUgraph);
  CUresult (*device_count)(int *);
  CUresult (*stream_create_prio)(CUstream *, unsigned, int);
  CUresult (*prio_range)(int *, int *);
  CUresult (*event_create)(CUevent *, unsigned);
  CUresult (*event_destroy)(CUevent);
  CUresult (*event_record)(CUevent, CUstream);
  CUresult (*stream_wait)(CUstream, CUevent, unsigned);
} drv;
static int drv_device; /* the device every step uses: 0, or ddp's local rank mod the device count */
static pthread_once_t drv_once = PTHREAD_ONCE_INIT;

static void drv_load(void) {
  const char *env = getenv("LTL_CUDA_LIB");
  const char *name = env && env[0] ? env : "libcuda.so.1";
  if (!(drv.lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) {
    snprintf(drv.why, sizeof drv.why, "no NVIDIA driver: %s could not be loaded", name);
    return;
  }
  static const CudaSym syms[] = {
#define S(field, sym) {offsetof(__typeof__(drv), field), sym}
      S(init, "cuInit"), S(error_string, "cuGetErrorString"), S(device_get, "cuDeviceGet"),
      S(attr, "cuDeviceGetAttribute"), S(ctx_retain, "cuDevicePrimaryCtxRetain"), S(ctx_set, "cuCtxSetCurrent"),
      S(mod_load, "cuModuleLoadData"), S(mod_fn, "cuModuleGetFunction"), S(mod_unload, "cuModuleUnload"),
      S(alloc, "cuMemAlloc_v2"), S(free, "cuMemFree_v2"), S(host_alloc, "cuMemHostAlloc"),
      S(host_free, "cuMemFreeHost"), S(htod, "cuMemcpyHtoDAsync_v2"), S(dtoh, "cuMemcpyDtoHAsync_v2"),
      S(dtod, "cuMemcpyDtoDAsync_v2"), S(memset8, "cuMemsetD8Async"), S(stream_create, "cuStreamCreate"),
      S(stream_destroy, "cuStreamDestroy_v2"), S(sync, "cuStreamSynchronize"), S(launch, "cuLaunchKernel"),
      S(capture_begin, "cuStreamBeginCapture_v2"), S(capture_end, "cuStreamEndCapture"),
      S(instantiate, "cuGraphInstantiateWithFlags"), S(graph_launch, "cuGraphLaunch"),
      S(graph_exec_destroy, "cuGraphExecDestroy"), S(graph_destroy, "cuGraphDestroy"),
      S(device_count, "cuDeviceGetCount"), S(stream_create_prio, "cuStreamCreateWithPriority"),
      S(prio_range, "cuCtxGetStreamPriorityRange"), S(event_create, "cuEventCreate"),
      S(event_destroy, "cuEventDestroy_v2"), S(event_record, "cuEventRecord"), S(stream_wait, "cuStreamWaitEvent"),
#undef S
  };
  const char *missing = cuda_dlsyms(drv.lib, syms, sizeof syms / sizeof *syms, &drv);
  if (missing) {
    snprintf(drv.why, sizeof drv.why, "%s lacks %s (driver too old for CUDA 12+)", name, missing);
    dlclose(drv.lib);
    drv.lib = NULL;
  }
}

struct CudaStep {
  const IrGraph *g;
  FusePlan *plan;
  CudaProgram prog;
  CUcontext ctx;
  CUmodule mod;
  CUfunction *fn;         /* per program kernel (NULL: not a launch) */
  CUstream stream;
  CUdeviceptr base[FUSE_BASE_DATA], *data, bases; /* bases: the device table B[] */
  size_t bytes[FUSE_BASE_DATA], *data_bytes;
  IrLayout lay[3];        /* PARAM, BUFFER, STATE */
  void *flat[3];          /* the caller's host buffers */
  void **staging;         /* pinned, per DATA input */
  const void **host_data; /* the caller's DATA bytes */
  void *out;              /* pinned: status word, then every VALUE output */
  size_t *out_off;
  CUgraphExec exec;
  bool graph_failed;
  CudaBlas *blas;         /* the GEMMs through cuBLASLt, when it loads */
  int *blas_plan;         /* per program kernel: a cuda_blas plan, or -1 (the generated kernel) */
  CUdeviceptr *tab;       /* the bases table, host copy */
  /* ddp: per program kernel, for an all_reduce the program kernel before which the compute
   * stream waits for it (nk: at the end), else -1; its events: bucket ready, bucket reduced */
  int *wait_at;
  CUevent *ready, *reduced;
  CUstream coll;          /* the collective stream (NULL: no all_reduce) */
  char gemm_path[400];
  char err[512];
};

static bool ck(CudaStep *s, CUresult r, const char *what) {
  if (r == 0)
    return true;
  const char *m = NULL;
  if (drv.error_string)
    drv.error_string(r, &m);
  snprintf(s->err, sizeof s->err, "CUDA: %s failed: %s (%d)", what, m ? m : "unknown error", r);
  return false;
}

static void *value_host(const CudaStep *s, int i) { return (char *)s->out + s->out_off[i]; }

void cuda_step_free(CudaStep *s) {
  if (!s)
    return;
  if (drv.lib && s->ctx) {
    drv.ctx_set(s->ctx);
    if (s->stream)
      drv.sync(s->stream);
    cuda_blas_destroy(s->blas);
    for (int i = 0; s->wait_at && i < s->prog.nk; i++) {
      if (s->ready[i])
        drv.event_destroy(s->ready[i]);
      if (s->reduced[i])
        drv.event_destroy(s->reduced[i]);
    }
    if (s->coll)
      drv.stream_destroy(s->coll);
    if (s->exec)
      drv.graph_exec_destroy(s->exec);
    for (int b = 0; b < FUSE_BASE_DATA; b++)
      if (s->base[b])
        drv.free(s->base[b]);
    for (int i = 0; s->plan && i < s->plan->ndata; i++) {
      if (s->data && s->data[i])
        drv.free(s->data[i]);
      if (s->staging && s->staging[i])
        drv.host_free(s->staging[i]);
    }
    if (s->bases)
      drv.free(s->bases);
    if (s->out)
      drv.host_free(s->out);
    if (s->mod)
      drv.mod_unload(s->mod);
    if (s->stream)
      drv.stream_destroy(s->stream);
  }
  for (int k = 0; k < 3; k++)
    ir_layout_free(&s->lay[k]);
  free(s->fn);
  free(s->blas_plan);
  free(s->tab);
  free(s->wait_at);
  free(s->ready);
  free(s->reduced);
  free(s->data);
  free(s->data_bytes);
  free(s->staging);
  free(s->host_data);
  free(s->out_off);
  cuda_program_free(&s->prog);
  fuse_free(s->plan);
  free(s);
}

static CudaStep *fail_step(CudaStep *s, char *err, size_t errlen) {
  snprintf(err, errlen, "%s", s->err);
  cuda_step_free(s);
  return NULL;
}

/* ---- ddp: the all_reduce nodes on the collective stream ---- */

/* Program kernel i is an all_reduce NCCL runs: a ddp world with its communicator, f32 / f64. */
static bool is_nccl(const CudaStep *s, int i) {
  const IrNode *n = &s->g->node[s->plan->k[s->prog.k[i].plan_kernel].op];
  return s->prog.k[i].kind == CUDA_K_HOST && n->op == IR_ALLREDUCE && (n->dtype == IR_F32 || n->dtype == IR_F64) &&
         cuda_nccl_world() > 1;
}

/* The device address of value v (its own bytes, or those it views). */
static CUdeviceptr value_addr(const CudaStep *s, int v) {
  const FusePlan *p = s->plan;
  const FuseValue *fv = &p->val[v];
  int b = fv->how == FUSE_VIEW ? fv->of : v;
  return s->base[p->val[b].base] + (CUdeviceptr)(p->val[b].offset + fv->voff * ir_dtype_size(s->g->node[v].dtype));
}

/* Whether plan kernel kid reads the bytes of stored value v (directly or through a view). */
static bool reads_value(const FusePlan *p, int kid, int v) {
#define READS(x) ((x) == v || (p->val[x].how == FUSE_VIEW && p->val[x].of == v))
  const FuseKernel *k = &p->k[kid];
  if (k->kind == FUSE_COPY)
    return READS(k->copy_src);
  for (int i = 0; i < k->nnode; i++)
    for (int j = 0; j < p->g->node[k->node[i]].nin; j++)
      if (READS(p->in[k->node[i]][j]))
        return true;
  return false;
#undef READS
}

/* For each all_reduce: where the compute stream waits for it (the first kernel reading the
 * reduced bucket), its two events, and the collective stream, created with the highest
 * priority so that its kernels start ahead of queued compute kernels. */
static bool plan_collectives(CudaStep *s) {
  int nk = s->prog.nk;
  s->wait_at = malloc((size_t)nk * sizeof *s->wait_at);
  s->ready = calloc((size_t)nk, sizeof *s->ready);
  s->reduced = calloc((size_t)nk, sizeof *s->reduced);
  bool any = false, ok = true;
  for (int i = 0; i < nk; i++) {
    s->wait_at[i] = -1;
    if (!is_nccl(s, i))
      continue;
    int v = s->plan->k[s->prog.k[i].plan_kernel].op, j = i + 1;
    while (j < nk && !reads_value(s->plan, s->prog.k[j].plan_kernel, v))
      j++;
    s->wait_at[i] = j;
    any = true;
    ok = ok && ck(s, drv.event_create(&s->ready[i], 2 /* DISABLE_TIMING */), "cuEventCreate") &&
         ck(s, drv.event_create(&s->reduced[i], 2), "cuEventCreate");
  }
  int least = 0, greatest = 0;
  return ok && (!any || (ck(s, drv.prio_range(&least, &greatest), "cuCtxGetStreamPriorityRange") &&
                         ck(s, drv.stream_create_prio(&s->coll, 1 /* non-blocking */, greatest), "cuStreamCreateWithPriority")));
}

/* All_reduce kernel i: the operands side by side into the bucket on the compute stream (so
 * their bytes are free for the kernels after it), then NCCL averages the bucket in place on
 * the collective stream once the compute stream has got there. */
static bool enqueue_allreduce(CudaStep *s, int i) {
  const FusePlan *p = s->plan;
  int id = p->k[s->prog.k[i].plan_kernel].op;
  const IrNode *n = &s->g->node[id];
  CUdeviceptr bucket = value_addr(s, id), at = bucket;
  for (int j = 0; j < n->nin; j++) {
    int x = p->in[id][j];
    size_t bytes = (size_t)ir_numel(s->g->node[x].shape) * ir_dtype_size(n->dtype);
    if (!ck(s, drv.dtod(at, value_addr(s, x), bytes, s->stream), "cuMemcpyDtoDAsync"))
      return false;
    at += bytes;
  }
  return ck(s, drv.event_record(s->ready[i], s->stream), "cuEventRecord") &&
         ck(s, drv.stream_wait(s->coll, s->ready[i], 0), "cuStreamWaitEvent") &&
         (cuda_nccl_allreduce_avg(bucket, ir_numel(n->shape), n->dtype == IR_F64, s->coll, s->err, sizeof s->err)) &&
         ck(s, drv.event_record(s->reduced[i], s->coll), "cuEventRecord");
}

/* The compute stream waits for the all-reduces whose first reader is program kernel j. */
static bool wait_collectives(CudaStep *s, int j) {
  for (int i = 0; i < j && i < s->prog.nk; i++)
    if (s->wait_at[i] == j && !ck(s, drv.stream_wait(s->stream, s->reduced[i], 0), "cuStreamWaitEvent"))
      return false;
  return true;
}

/* ddp: the device of this rank and NCCL's communicator, before any step is compiled. */
static bool ddp_init(int rank, int world, int local_rank, char *err, size_t errlen) {
  pthread_once(&drv_once, drv_load);
  if (!drv.lib)
    return snprintf(err, errlen, "%s", drv.why), false;
  CudaStep s = {0}; /* for ck's message */
  int n = 0;
  CUdevice dev;
  CUcontext ctx;
  bool ok = ck(&s, drv.init(0), "cuInit") && ck(&s, drv.device_count(&n), "cuDeviceGetCount");
  if (ok && n < 1)
    return snprintf(err, errlen, "the driver sees no CUDA device"), false;
  drv_device = ok ? local_rank % n : 0;
  ok = ok && ck(&s, drv.device_get(&dev, drv_device), "cuDeviceGet") &&
       ck(&s, drv.ctx_retain(&ctx, dev), "cuDevicePrimaryCtxRetain") && ck(&s, drv.ctx_set(ctx), "cuCtxSetCurrent");
  if (!ok)
    return snprintf(err, errlen, "%s", s.err), false;
  return cuda_nccl_init(rank, world, err, errlen);
}

CudaStep *cuda_step_compile(const IrGraph *g, bool grads, char *err, size_t errlen) {
  int cc = 0;
  if (!cuda_rt_probe(&cc, err, errlen))
    return NULL;
  pthread_once(&drv_once, drv_load);
  if (!drv.lib) {
    snprintf(err, errlen, "%s", drv.why);
    return NULL;
  }
  CudaStep *s = calloc(1, sizeof *s);
  s->g = g;
  if (!ck(s, drv.init(0), "cuInit"))
    return fail_step(s, err, errlen);
  if (!(s->plan = cuda_plan(g, grads, s->err, sizeof s->err)) || !cuda_emit(s->plan, &s->prog, s->err, sizeof s->err))
    return fail_step(s, err, errlen);
  const FusePlan *p = s->plan;
  for (int i = 0; i < s->prog.nk; i++)
    if (s->prog.k[i].kind == CUDA_K_HOST && !is_nccl(s, i)) {
      const FuseKernel *k = &p->k[s->prog.k[i].plan_kernel];
      snprintf(s->err, sizeof s->err, "the CUDA backend has no kernel for %s (node %%%d) yet%s",
               ir_op_name(g->node[k->op].op), k->op,
               g->node[k->op].op == IR_ALLREDUCE ? " (it is NCCL's, set up for ddp runs)" : "");
      return fail_step(s, err, errlen);
    }
  CudaBuild b;
  if (!cuda_nvrtc_compile(s->prog.source, cc, true, &b, s->err, sizeof s->err))
    return fail_step(s, err, errlen);
  CUdevice dev;
  bool ok = ck(s, drv.device_get(&dev, drv_device), "cuDeviceGet") && ck(s, drv.ctx_retain(&s->ctx, dev), "cuDevicePrimaryCtxRetain") &&
            ck(s, drv.ctx_set(s->ctx), "cuCtxSetCurrent") && ck(s, drv.mod_load(&s->mod, b.cubin), "cuModuleLoadData") &&
            ck(s, drv.stream_create(&s->stream, 1 /* non-blocking */), "cuStreamCreate");
  cuda_build_free(&b);
  s->fn = calloc((size_t)s->prog.nk, sizeof *s->fn);
  for (int i = 0; ok && i < s->prog.nk; i++)
    if (s->prog.k[i].kind == CUDA_K_DEVICE)
      ok = ck(s, drv.mod_fn(&s->fn[i], s->mod, s->prog.k[i].name), "cuModuleGetFunction");
  if (!ok || !plan_collectives(s))
    return fail_step(s, err, errlen);
  /* device memory, planned once: arena, flat buffers, constants, status, DATA inputs */
  IrInputKind kinds[3] = {IR_IN_PARAM, IR_IN_BUFFER, IR_IN_STATE};
  for (int k = 0; k < 3; k++) {
    s->lay[k] = ir_layout(g, kinds[k]);
    s->bytes[FUSE_BASE_PARAM + k] = (size_t)s->lay[k].bytes;
  }
  s->bytes[FUSE_BASE_ARENA] = (size_t)p->arena_bytes;
  s->bytes[FUSE_BASE_CONST] = (size_t)p->const_bytes;
  s->bytes[FUSE_BASE_STATUS] = 4 * sizeof(long long);
  for (int bi = 0; ok && bi < FUSE_BASE_DATA; bi++)
    if (s->bytes[bi])
      ok = ck(s, drv.alloc(&s->base[bi], s->bytes[bi]), "cuMemAlloc");
  s->data = calloc((size_t)p->ndata + 1, sizeof *s->data);
  s->data_bytes = calloc((size_t)p->ndata + 1, sizeof *s->data_bytes);
  s->staging = calloc((size_t)p->ndata + 1, sizeof *s->staging);
  s->host_data = calloc((size_t)p->ndata + 1, sizeof *s->host_data);
  for (int i = 0; ok && i < p->ndata; i++) {
    const IrNode *n = &g->node[p->data[i]];
    s->data_bytes[i] = (size_t)(ir_numel(n->shape) * ir_dtype_size(n->dtype));
    ok = ck(s, drv.alloc(&s->data[i], s->data_bytes[i] + 8), "cuMemAlloc") &&
         ck(s, drv.host_alloc(&s->staging[i], s->data_bytes[i] + 8, 0), "cuMemHostAlloc");
  }
  /* pinned results: the status word, then each VALUE output */
  s->out_off = calloc((size_t)g->nout + 1, sizeof *s->out_off);
  size_t at = s->bytes[FUSE_BASE_STATUS];
  for (int i = 0; i < g->nout; i++) {
    s->out_off[i] = at;
    const IrNode *n = &g->node[g->out[i].value];
    at += ((size_t)(ir_numel(n->shape) * ir_dtype_size(n->dtype)) + 63) & ~(size_t)63;
  }
  ok = ok && ck(s, drv.host_alloc(&s->out, at, 0), "cuMemHostAlloc");
  /* the bases table B[] the kernels read */
  size_t nb = (size_t)(FUSE_BASE_DATA + p->ndata);
  CUdeviceptr *tab = s->tab = calloc(nb, sizeof *tab);
  for (int bi = 0; bi < FUSE_BASE_DATA; bi++)
    tab[bi] = s->base[bi];
  for (int i = 0; i < p->ndata; i++)
    tab[FUSE_BASE_DATA + i] = s->data[i];
  ok = ok && ck(s, drv.alloc(&s->bases, nb * sizeof *tab), "cuMemAlloc") &&
       ck(s, drv.htod(s->bases, tab, nb * sizeof *tab, s->stream), "cuMemcpyHtoD") &&
       (!p->const_bytes || ck(s, drv.htod(s->base[FUSE_BASE_CONST], p->consts, (size_t)p->const_bytes, s->stream),
                              "cuMemcpyHtoD")) &&
       ck(s, drv.sync(s->stream), "cuStreamSynchronize");
  if (!ok)
    return fail_step(s, err, errlen);
  /* GEMMs: cuBLASLt when it loads and takes the product, else the generated tiled kernel */
  s->blas_plan = malloc((size_t)s->prog.nk * sizeof *s->blas_plan);
  const char *mode = getenv("LTL_CUDA_GEMM");
  char why[256] = "LTL_CUDA_GEMM=generated";
  if ((!mode || strcmp(mode, "generated")) && (s->blas = cuda_blas_create(why, sizeof why)))
    snprintf(why, sizeof why, "%s", "");
  int ngemm = 0, nblas = 0, ntc = 0;
  for (int i = 0; i < s->prog.nk; i++) {
    s->blas_plan[i] = -1;
    if (p->k[s->prog.k[i].plan_kernel].kind != FUSE_GEMM || s->prog.k[i].kind != CUDA_K_DEVICE)
      continue;
    ngemm++;
    if (s->blas && (s->blas_plan[i] = cuda_blas_prepare(s->blas, &s->prog.k[i].gemm, why, sizeof why)) >= 0)
      nblas++, ntc += cuda_blas_fast16(s->blas, s->blas_plan[i]);
  }
  int len = snprintf(s->gemm_path, sizeof s->gemm_path, "%d of %d GEMMs through cuBLASLt%s%s", nblas, ngemm,
                     why[0] ? "; the others generated: " : "", why);
  if (ntc) /* the mixed modes: operands rounded to 16 bits (cuda_blas.c) */
    snprintf(s->gemm_path + len, sizeof s->gemm_path - (size_t)len, "; %d of them on tensor cores (16-bit operands)", ntc);
  return s;
}

const char *cuda_step_gemm_path(const CudaStep *s) { return s->gemm_path; }

const FusePlan *cuda_step_plan(const CudaStep *s) { return s->plan; }

void cuda_step_bind(CudaStep *s, IrInputKind kind, void *flat) {
  int k = kind == IR_IN_PARAM ? 0 : kind == IR_IN_BUFFER ? 1 : 2;
  s->flat[k] = flat;
  if (flat && s->bytes[FUSE_BASE_PARAM + k] &&
      ck(s, drv.htod(s->base[FUSE_BASE_PARAM + k], flat, s->bytes[FUSE_BASE_PARAM + k], s->stream), "upload"))
    ck(s, drv.sync(s->stream), "cuStreamSynchronize");
}

bool cuda_step_download(CudaStep *s) {
  for (int k = 0; k < 3; k++)
    if (s->flat[k] && s->bytes[FUSE_BASE_PARAM + k] &&
        !ck(s, drv.dtoh(s->flat[k], s->base[FUSE_BASE_PARAM + k], s->bytes[FUSE_BASE_PARAM + k], s->stream), "download"))
      return false;
  return ck(s, drv.sync(s->stream), "cuStreamSynchronize");
}

void cuda_step_set_input(CudaStep *s, int input, const void *data) {
  for (int i = 0; i < s->plan->ndata; i++)
    if (s->plan->data[i] == input)
      s->host_data[i] = data;
}

/* The kernels in plan order on the stream (captured into the graph once). */
static bool enqueue(CudaStep *s) {
  for (int i = 0; i < s->prog.nk; i++) {
    const CudaKernel *k = &s->prog.k[i];
    if (!wait_collectives(s, i))
      return false;
    if (s->wait_at[i] >= 0) {
      if (!enqueue_allreduce(s, i))
        return false;
      continue;
    }
    if (k->kind == CUDA_K_COPY) {
      CUdeviceptr dst = s->base[k->dst_base] + (CUdeviceptr)k->dst_off, src = s->base[k->src_base] + (CUdeviceptr)k->src_off;
      if (!ck(s, drv.dtod(dst, src, (size_t)k->bytes, s->stream), "cuMemcpyDtoDAsync"))
        return false;
      continue;
    }
    if (s->blas_plan[i] >= 0) {
      if (!cuda_blas_run(s->blas, s->blas_plan[i], s->tab, s->stream, s->err, sizeof s->err))
        return false;
      continue;
    }
    void *args[] = {&s->bases};
    if (!ck(s, drv.launch(s->fn[i], (unsigned)k->grid, 1, 1, (unsigned)k->block, 1, 1, 0, s->stream, args, NULL), k->name))
      return false;
  }
  return wait_collectives(s, s->prog.nk); /* joins the collective stream (a capture needs it) */
}

/* The step (the graph, or kernel by kernel), then the status word and VALUE outputs into
 * pinned memory, and one synchronisation. */
static bool launch_and_sync(CudaStep *s) {
  const IrGraph *g = s->g;
  if (s->exec ? !ck(s, drv.graph_launch(s->exec, s->stream), "cuGraphLaunch") : !enqueue(s))
    return false;
  if (!ck(s, drv.dtoh(s->out, s->base[FUSE_BASE_STATUS], s->bytes[FUSE_BASE_STATUS], s->stream), "download"))
    return false;
  for (int i = 0; i < g->nout; i++) {
    const IrNode *n = &g->node[g->out[i].value];
    if (g->out[i].kind == IR_OUT_VALUE &&
        !ck(s, drv.dtoh(value_host(s, i), value_addr(s, g->out[i].value), (size_t)(ir_numel(n->shape) * ir_dtype_size(n->dtype)),
                        s->stream), "download"))
      return false;
  }
  return ck(s, drv.sync(s->stream), "cuStreamSynchronize");
}

const char *cuda_step_run(CudaStep *s) {
  const FusePlan *p = s->plan;
  const IrGraph *g = s->g;
  drv.ctx_set(s->ctx);
  for (int i = 0; i < p->ndata; i++) { /* pinned staging, then asynchronous copies */
    if (!s->host_data[i])
      return snprintf(s->err, sizeof s->err, "input %s is not set", g->node[p->data[i]].name), s->err;
    memcpy(s->staging[i], s->host_data[i], s->data_bytes[i]);
    if (!ck(s, drv.htod(s->data[i], s->staging[i], s->data_bytes[i], s->stream), "upload"))
      return s->err;
  }
  if (!ck(s, drv.memset8(s->base[FUSE_BASE_STATUS], 0, s->bytes[FUSE_BASE_STATUS], s->stream), "cuMemsetD8Async"))
    return s->err;
  if (!s->exec && !s->graph_failed) { /* capture once; replay from then on */
    CUgraph graph = NULL;
    bool ok = ck(s, drv.capture_begin(s->stream, 2 /* relaxed */), "cuStreamBeginCapture") && enqueue(s);
    ok = ck(s, drv.capture_end(s->stream, &graph), "cuStreamEndCapture") && ok;
    ok = ok && ck(s, drv.instantiate(&s->exec, graph, 0), "cuGraphInstantiate");
    if (graph)
      drv.graph_destroy(graph);
    if (s->coll) { /* whether NCCL calls are captured must be the same on every rank */
      double all = ok;
      rt_dist_allreduce(&all, 1, RT_DIST_F64, RT_DIST_MIN);
      if (!all && s->exec)
        drv.graph_exec_destroy(s->exec), s->exec = NULL;
      ok = all > 0;
    }
    s->graph_failed = !ok; /* then launch kernel by kernel */
  }
  if (s->coll) /* a peer that died or hangs would keep the step waiting: the ddp watchdog */
    rt_dist_watch("a GPU step's NCCL all-reduce");
  bool ok = launch_and_sync(s);
  if (s->coll)
    rt_dist_watch(NULL);
  if (!ok)
    return s->err;
  const long long *st = s->out;
  if (st[0]) {
    const FuseKernel *k = &p->k[st[0] - 1];
    snprintf(s->err, sizeof s->err, "%s: index %lld out of range at position %lld", ir_op_name(g->node[k->op >= 0 ? k->op : k->node[0]].op),
             st[1], st[2]);
    return s->err;
  }
  return NULL;
}

const void *cuda_step_output(const CudaStep *s, int i) {
  return s->g->out[i].kind == IR_OUT_VALUE ? value_host(s, i) : NULL;
}

const char *cuda_step_error(const CudaStep *s) { return s->err; }

static bool usable(int *cc, char *err, size_t errlen) {
  return cuda_rt_probe(cc, err, errlen) && cuda_nvrtc_available(err, errlen);
}

const CudaStepApi cuda_step_impl = {usable,          cuda_step_compile, cuda_step_free,   cuda_step_bind,  cuda_step_download,
                                    cuda_step_set_input, cuda_step_run, cuda_step_output, cuda_step_error,
                                    cuda_nccl_available, ddp_init};
