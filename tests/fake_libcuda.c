/* fake_libcuda.c — a stand-in for libcuda.so.1 so the CUDA step executor (cuda_rt.c) runs
 * end to end on a machine without a GPU (tests/test_cuda.c builds it into a shared object and
 * points LTL_CUDA_LIB at it).
 *
 * "Device" memory is host memory; a module's functions are looked up in the shared object
 * named by $LTL_FAKE_CUDA_KERNELS (the same generated source compiled with cuda_shim.h), or,
 * when the module's image comes from tests/fake_libnvrtc.c ("LTLFAKSO", size, the shared
 * object), in that one; cuLaunchKernel runs them through the shim. Stream capture records launches and copies; a
 * graph launch replays them. Every call is synchronous. Only what cuda_rt.c calls exists. */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void (*Kernel)(char *const *);
typedef int (*LaunchFn)(Kernel, int, int, char *const *, int, unsigned, char *, size_t);

typedef struct { /* a CUfunction: the kernel and the shim of its shared object */
  Kernel fn;
  LaunchFn launch;
} Fn;
typedef struct { /* a CUmodule */
  void *dl;
  LaunchFn launch;
  Fn **fns;
  int nfns;
} Module;

typedef struct {
  void (*host)(void *); /* a library call (tests/fake_libcublaslt.c) with its argument */
  void *arg;
  Kernel fn; /* NULL (and no host): a copy */
  LaunchFn launch;
  unsigned grid, block;
  char *const *bases;
  CUdeviceptr dst, src;
  size_t bytes;
} Op;

static struct {
  void *kernels;
  LaunchFn launch;
  int capturing;
  Op *ops;
  int nops;
  int launches, graph_launches, allocs, frees;
} fk;

/* counters for the test */
void fake_cuda_stats(int *launches, int *graph_launches, int *live_allocs) {
  *launches = fk.launches;
  *graph_launches = fk.graph_launches;
  *live_allocs = fk.allocs - fk.frees;
}

CUresult cuInit(unsigned flags) {
  (void)flags;
  const char *so = getenv("LTL_FAKE_CUDA_KERNELS");
  if (!so || !so[0])
    return 0; /* modules from tests/fake_libnvrtc.c only */
  if (!(fk.kernels = dlopen(so, RTLD_NOW | RTLD_LOCAL)))
    return 100; /* CUDA_ERROR_NO_DEVICE */
  fk.launch = (LaunchFn)dlsym(fk.kernels, "shim_launch");
  return fk.launch ? 0 : 100;
}
CUresult cuGetErrorString(CUresult r, const char **s) {
  *s = r == 100 ? "no CUDA-capable device is detected (fake)" : "fake driver error";
  return 0;
}
CUresult cuDeviceGetCount(int *n) { return *n = 1, 0; }
CUresult cuDeviceGet(int *d, int i) { return *d = i, 0; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  (void)dev;
  *v = attr == 75 ? 9 : 0; /* compute capability 9.0 */
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { return *ctx = (void *)(intptr_t)(dev + 1), 0; }
CUresult cuCtxSetCurrent(void *ctx) { return ctx ? 0 : 1; }
CUresult cuModuleLoadData(Module **mod, const void *image) {
  Module *m = calloc(1, sizeof *m);
  m->dl = fk.kernels;
  m->launch = fk.launch;
  if (image && !memcmp(image, "LTLFAKSO", 8)) { /* the shared object, through a file for dlopen */
    uint64_t n;
    memcpy(&n, (const char *)image + 8, 8);
    char path[] = "/tmp/ltl-fake-module-XXXXXX";
    int fd = mkstemp(path);
    bool ok = fd >= 0 && write(fd, (const char *)image + 16, n) == (ssize_t)n;
    if (fd >= 0)
      close(fd);
    m->dl = ok ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    unlink(path);
    m->launch = m->dl ? (LaunchFn)dlsym(m->dl, "shim_launch") : NULL;
  }
  if (!m->dl || !m->launch) {
    free(m);
    return 200; /* CUDA_ERROR_INVALID_IMAGE */
  }
  *mod = m;
  return 0;
}
CUresult cuModuleGetFunction(Fn **fn, Module *m, const char *name) {
  Kernel k = (Kernel)dlsym(m->dl, name);
  if (!k)
    return 500; /* CUDA_ERROR_NOT_FOUND */
  m->fns = realloc(m->fns, (size_t)(m->nfns + 1) * sizeof *m->fns);
  *fn = m->fns[m->nfns++] = malloc(sizeof **fn);
  **fn = (Fn){k, m->launch};
  return 0;
}
CUresult cuModuleUnload(Module *m) {
  for (int i = 0; i < m->nfns; i++)
    free(m->fns[i]);
  free(m->fns);
  if (m->dl != fk.kernels) {
    void (*release)(void) = (void (*)(void))dlsym(m->dl, "shim_release");
    if (release)
      release();
    dlclose(m->dl);
  }
  free(m);
  return 0;
}
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
  fk.allocs++;
  return (*p = (CUdeviceptr)(uintptr_t)calloc(1, n ? n : 1)) ? 0 : 2;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  fk.frees++;
  free((void *)(uintptr_t)p);
  return 0;
}
CUresult cuMemHostAlloc(void **p, size_t n, unsigned flags) {
  (void)flags;
  return (*p = calloc(1, n ? n : 1)) ? 0 : 2;
}
CUresult cuMemFreeHost(void *p) { return free(p), 0; }

static void record(Op op) {
  fk.ops = realloc(fk.ops, (size_t)(fk.nops + 1) * sizeof *fk.ops);
  fk.ops[fk.nops++] = op;
}
static CUresult copy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  if (fk.capturing)
    record((Op){.dst = dst, .src = src, .bytes = n});
  else
    memmove((void *)(uintptr_t)dst, (void *)(uintptr_t)src, n);
  return 0;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, void *st) {
  return (void)st, copy(d, (CUdeviceptr)(uintptr_t)h, n);
}
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, void *st) {
  return (void)st, copy((CUdeviceptr)(uintptr_t)h, d, n);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void *st) { return (void)st, copy(d, s, n); }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *st) {
  (void)st;
  memset((void *)(uintptr_t)d, v, n);
  return 0;
}
CUresult cuStreamCreate(void **st, unsigned flags) { return (void)flags, *st = (void *)1, 0; }
CUresult cuStreamDestroy_v2(void *st) { return (void)st, 0; }
CUresult cuStreamSynchronize(void *st) { return (void)st, 0; }

/* A stream operation of another fake library: run now, or recorded while capturing. arg
 * (malloc'd) is ours: freed once run, or with the graph that replays it. */
void fake_cuda_host_op(void (*fn)(void *), void *arg) {
  if (fk.capturing) {
    record((Op){.host = fn, .arg = arg});
  } else {
    fn(arg);
    free(arg);
  }
}

static CUresult run(const Op *op) {
  if (op->host) {
    op->host(op->arg);
    return 0;
  }
  if (!op->fn)
    return copy(op->dst, op->src, op->bytes);
  char err[256];
  fk.launches++;
  /* at most 4 blocks: the kernels' grid-stride loops cover the rest */
  int grid = op->grid < 4 ? (int)op->grid : 4;
  if (op->launch(op->fn, grid, (int)op->block, op->bases, 2 /* random order */, (unsigned)fk.launches, err, sizeof err)) {
    fprintf(stderr, "fake libcuda: %s\n", err);
    return 719; /* CUDA_ERROR_LAUNCH_FAILED */
  }
  return 0;
}

CUresult cuLaunchKernel(const Fn *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void *st, void **params, void **extra) {
  (void)st, (void)extra;
  if (gy != 1 || gz != 1 || by != 1 || bz != 1 || shmem)
    return 1; /* CUDA_ERROR_INVALID_VALUE: the generated code is 1-D */
  Op op = {.fn = f->fn, .launch = f->launch, .grid = gx, .block = bx, .bases = *(char *const **)params[0]};
  if (fk.capturing) {
    record(op);
    return 0;
  }
  return run(&op);
}

/* a graph and its executable: the operations recorded by one capture (each step has its own) */
typedef struct {
  Op *ops;
  int nops;
  bool owns; /* the host operations' arguments (the executable takes them from the graph) */
} Graph;

CUresult cuStreamBeginCapture_v2(void *st, int mode) {
  (void)st, (void)mode;
  fk.capturing = 1;
  fk.ops = NULL;
  fk.nops = 0;
  return 0;
}
CUresult cuStreamEndCapture(void *st, Graph **graph) {
  (void)st;
  fk.capturing = 0;
  *graph = malloc(sizeof **graph);
  **graph = (Graph){fk.ops, fk.nops, true};
  fk.ops = NULL;
  return 0;
}
CUresult cuGraphInstantiateWithFlags(Graph **exec, Graph *graph, unsigned long long flags) {
  (void)flags;
  *exec = malloc(sizeof **exec);
  (*exec)->nops = graph->nops;
  (*exec)->owns = graph->owns;
  graph->owns = false;
  (*exec)->ops = malloc((size_t)(graph->nops + 1) * sizeof *graph->ops);
  if (graph->nops)
    memcpy((*exec)->ops, graph->ops, (size_t)graph->nops * sizeof *graph->ops);
  return 0;
}
CUresult cuGraphLaunch(const Graph *exec, void *st) {
  (void)st;
  fk.graph_launches++;
  for (int i = 0; i < exec->nops; i++) {
    CUresult r = run(&exec->ops[i]);
    if (r)
      return r;
  }
  return 0;
}
static CUresult graph_free(Graph *g) {
  for (int i = 0; g->owns && i < g->nops; i++)
    free(g->ops[i].arg);
  free(g->ops);
  free(g);
  return 0;
}
CUresult cuGraphExecDestroy(Graph *e) { return graph_free(e); }
CUresult cuGraphDestroy(Graph *g) { return graph_free(g); }
