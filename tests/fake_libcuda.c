/* fake_libcuda.c — a stand-in for libcuda.so.1 so the CUDA step executor (cuda_rt.c) runs
 * end to end on a machine without a GPU (tests/test_cuda.c builds it into a shared object and
 * points LTL_CUDA_LIB at it).
 *
 * "Device" memory is host memory; a module's functions are looked up in the shared object
 * named by $LTL_FAKE_CUDA_KERNELS (the same generated source compiled with cuda_shim.h), or,
 * when the module's image comes from tests/fake_libnvrtc.c ("LTLFAKSO", size, the shared
 * object), in that one; cuLaunchKernel runs them through the shim. Stream capture records launches and copies; a
 * graph launch replays them. Operations run in stream order (see "Streams and events"). Only what cuda_rt.c calls
 * exists. */
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

/* Streams and events. With $LTL_FAKE_CUDA_ORDER unset every operation runs when it is
 * enqueued (in program order). "collectives-late" / "collectives-early" make the streams of
 * high priority (the collective stream) / the others lazy: their operations wait in the
 * stream's queue until something needs them (a synchronisation, a cuStreamWaitEvent on an
 * event they record), so that an operation the executor forgot to order with an event runs
 * too late / too early, and reads or writes the wrong bytes. */
typedef struct Stream Stream;
typedef struct {
  long recorded, done; /* records enqueued, records run */
  Stream *on;          /* the stream of the last record */
  bool captured;       /* recorded inside the capture in progress */
} Event;

enum { OP_KERNEL, OP_COPY, OP_SET, OP_HOST, OP_RECORD, OP_WAIT };
typedef struct {
  int kind;
  Stream *st;           /* in a graph: NULL for the capturing stream (the launch stream at replay) */
  void (*host)(void *); /* a library call (fake cuBLASLt, fake NCCL) with its argument */
  void *arg;
  bool free_arg;        /* ours once run (else the graph's) */
  Kernel fn;
  LaunchFn launch;
  unsigned grid, block;
  char *const *bases;
  CUdeviceptr dst, src;
  size_t bytes;
  unsigned char val;
  Event *ev;
  long target;          /* OP_RECORD: the record's number; OP_WAIT: the record waited for */
} Op;

struct Stream {
  int prio;
  bool captured;        /* joined the capture in progress through an event */
  Op *q;
  int head, n, cap;
};

static struct {
  void *kernels;
  LaunchFn launch;
  int capturing, order;
  Stream *origin;
  Op *ops;
  int nops;
  int launches, graph_launches, allocs, frees;
} fk = {.order = -1};
static Stream legacy; /* the NULL stream */

/* counters for the test */
void fake_cuda_stats(int *launches, int *graph_launches, int *live_allocs) {
  *launches = fk.launches;
  *graph_launches = fk.graph_launches;
  *live_allocs = fk.allocs - fk.frees;
}

static bool lazy(const Stream *s) {
  if (fk.order < 0) {
    const char *o = getenv("LTL_FAKE_CUDA_ORDER");
    fk.order = o && !strcmp(o, "collectives-late") ? 1 : o && !strcmp(o, "collectives-early") ? 2 : 0;
  }
  return fk.order == 1 ? s->prio < 0 : fk.order == 2 ? s->prio >= 0 : false;
}

static CUresult run(Op *op) {
  switch (op->kind) {
  case OP_HOST:
    op->host(op->arg);
    if (op->free_arg)
      free(op->arg);
    return 0;
  case OP_COPY:
    memmove((void *)(uintptr_t)op->dst, (void *)(uintptr_t)op->src, op->bytes);
    return 0;
  case OP_SET:
    memset((void *)(uintptr_t)op->dst, op->val, op->bytes);
    return 0;
  case OP_RECORD:
    op->ev->done = op->target;
    return 0;
  case OP_WAIT:
    return 0;
  }
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

/* Runs s's queue up to operation `until`; a wait first runs what it waits for. */
static CUresult drain(Stream *s, int until) {
  while (s->head < until) {
    Op op = s->q[s->head];
    if (op.kind == OP_WAIT)
      while (op.ev->done < op.target) {
        Stream *t = op.ev->on;
        if (t == s || t->head >= t->n) {
          fprintf(stderr, "fake libcuda: a stream waits for an event nothing will record\n");
          return 999; /* CUDA_ERROR_UNKNOWN */
        }
        CUresult r = drain(t, t->head + 1);
        if (r)
          return r;
      }
    s->head++;
    CUresult r = run(&op);
    if (r)
      return r;
  }
  return 0;
}

static CUresult enqueue(Stream *s, Op op) {
  if (op.kind == OP_RECORD)
    op.target = ++op.ev->recorded, op.ev->on = s;
  if (op.kind == OP_WAIT)
    op.target = op.ev->recorded;
  if (s->head == s->n)
    s->head = s->n = 0;
  if (s->n == s->cap)
    s->q = realloc(s->q, (size_t)(s->cap = s->cap ? 2 * s->cap : 64) * sizeof *s->q);
  s->q[s->n++] = op;
  return lazy(s) ? 0 : drain(s, s->n);
}

static void record(Op op) {
  fk.ops = realloc(fk.ops, (size_t)(fk.nops + 1) * sizeof *fk.ops);
  fk.ops[fk.nops++] = op;
}

/* An operation on stream s: recorded while s takes part in a capture, else enqueued. */
static CUresult submit(void *stream, Op op) {
  Stream *s = stream ? stream : &legacy;
  if (fk.capturing && op.kind == OP_WAIT && op.ev->captured)
    s->captured = true; /* joins the capture */
  if (fk.capturing && (s == fk.origin || s->captured)) {
    if (op.kind == OP_RECORD)
      op.ev->captured = true;
    op.st = s == fk.origin ? NULL : s;
    record(op);
    return 0;
  }
  return enqueue(s, op);
}

/* A stream operation of another fake library: run with the stream, or recorded while
 * capturing. arg (malloc'd) is ours: freed once run, or with the graph that replays it. */
void fake_cuda_stream_op(void *stream, void (*fn)(void *), void *arg) {
  submit(stream, (Op){.kind = OP_HOST, .host = fn, .arg = arg, .free_arg = true});
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
/* $LTL_FAKE_CUDA_DEVICES devices (1) */
CUresult cuDeviceGetCount(int *n) {
  const char *v = getenv("LTL_FAKE_CUDA_DEVICES");
  return *n = v ? atoi(v) : 1, 0;
}
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

static CUresult copy(CUdeviceptr dst, CUdeviceptr src, size_t n, void *st) {
  return submit(st, (Op){.kind = OP_COPY, .dst = dst, .src = src, .bytes = n});
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, void *st) {
  return copy(d, (CUdeviceptr)(uintptr_t)h, n, st);
}
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, void *st) {
  return copy((CUdeviceptr)(uintptr_t)h, d, n, st);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void *st) { return copy(d, s, n, st); }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *st) {
  return submit(st, (Op){.kind = OP_SET, .dst = d, .val = v, .bytes = n});
}

CUresult cuStreamCreateWithPriority(Stream **st, unsigned flags, int prio) {
  (void)flags;
  *st = calloc(1, sizeof **st);
  (*st)->prio = prio;
  return 0;
}
CUresult cuStreamCreate(Stream **st, unsigned flags) { return cuStreamCreateWithPriority(st, flags, 0); }
CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) { return *least = 0, *greatest = -5, 0; }
CUresult cuStreamSynchronize(Stream *st) {
  st = st ? st : &legacy;
  return drain(st, st->n);
}
CUresult cuStreamDestroy_v2(Stream *st) {
  CUresult r = cuStreamSynchronize(st);
  free(st->q);
  free(st);
  return r;
}
CUresult cuEventCreate(Event **ev, unsigned flags) { return (void)flags, (*ev = calloc(1, sizeof **ev)) ? 0 : 2; }
CUresult cuEventDestroy_v2(Event *ev) { return free(ev), 0; }
CUresult cuEventRecord(Event *ev, Stream *st) { return submit(st, (Op){.kind = OP_RECORD, .ev = ev}); }
CUresult cuStreamWaitEvent(Stream *st, Event *ev, unsigned flags) {
  return flags ? 1 : submit(st, (Op){.kind = OP_WAIT, .ev = ev});
}

CUresult cuLaunchKernel(const Fn *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void *st, void **params, void **extra) {
  (void)extra;
  if (gy != 1 || gz != 1 || by != 1 || bz != 1 || shmem)
    return 1; /* CUDA_ERROR_INVALID_VALUE: the generated code is 1-D */
  return submit(st, (Op){.kind = OP_KERNEL, .fn = f->fn, .launch = f->launch, .grid = gx, .block = bx,
                         .bases = *(char *const **)params[0]});
}

/* a graph and its executable: the operations recorded by one capture (each step has its own) */
typedef struct {
  Op *ops;
  int nops;
  bool owns; /* the host operations' arguments (the executable takes them from the graph) */
} Graph;

static CUresult graph_free(Graph *g) {
  for (int i = 0; g->owns && i < g->nops; i++)
    if (g->ops[i].kind == OP_HOST)
      free(g->ops[i].arg);
  free(g->ops);
  free(g);
  return 0;
}

CUresult cuStreamBeginCapture_v2(Stream *st, int mode) {
  (void)mode;
  fk.capturing = 1;
  fk.origin = st ? st : &legacy;
  fk.ops = NULL;
  fk.nops = 0;
  return 0;
}
/* As the driver: every stream that joined the capture must be joined back into the capturing
 * stream (its last operation an event the capturing stream waits for), else the capture fails. */
CUresult cuStreamEndCapture(Stream *st, Graph **graph) {
  (void)st;
  fk.capturing = 0;
  Graph *g = malloc(sizeof *g);
  *g = (Graph){fk.ops, fk.nops, true};
  fk.ops = NULL;
  bool joined = true;
  for (int i = 0; i < g->nops; i++) {
    Stream *t = g->ops[i].st;
    int last = -1;
    for (int j = i; t && j < g->nops; j++)
      if (g->ops[j].st == t)
        last = j;
    if (last == i) { /* t's last operation: a record the capturing stream waits for afterwards */
      bool ok = g->ops[i].kind == OP_RECORD;
      bool waited = false;
      for (int j = i + 1; ok && j < g->nops; j++)
        waited |= !g->ops[j].st && g->ops[j].kind == OP_WAIT && g->ops[j].ev == g->ops[i].ev;
      joined &= waited;
    }
  }
  for (int i = 0; i < g->nops; i++) {
    if (g->ops[i].st)
      g->ops[i].st->captured = false;
    if (g->ops[i].ev)
      g->ops[i].ev->captured = false;
  }
  if (!joined) {
    graph_free(g);
    return 904; /* CUDA_ERROR_STREAM_CAPTURE_UNJOINED */
  }
  *graph = g;
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
/* The recorded operations onto their streams again (the capturing stream's onto st). */
CUresult cuGraphLaunch(const Graph *exec, Stream *st) {
  fk.graph_launches++;
  for (int i = 0; i < exec->nops; i++) {
    Op op = exec->ops[i];
    op.free_arg = false;
    CUresult r = enqueue(op.st ? op.st : st ? st : &legacy, op);
    if (r)
      return r;
  }
  return 0;
}
CUresult cuGraphExecDestroy(Graph *e) { return graph_free(e); }
CUresult cuGraphDestroy(Graph *g) { return graph_free(g); }
