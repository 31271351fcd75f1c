/* cuda_nccl.c — NCCL for data-parallel training on GPUs (prefix cuda_nccl_; docs/distributed.md).
 *
 * The gradient buckets of a ddp training step (the all_reduce nodes, compiler/lower.c) are
 * averaged on the device by ncclAllReduce with ncclAvg, enqueued by the step executor
 * (cuda_rt.c) on its collective stream. NCCL is loaded with dlopen like every CUDA library, so
 * ltlc starts where it is missing; the communicator is made once per process, on the device
 * the executor uses, from rank 0's unique id broadcast over MPI (rt_dist_broadcast): the host
 * collectives (metrics, the weights at start, stop decisions) stay on MPI. */
#include "cuda.h"
#include "rt.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { NCCL_FLOAT = 7, NCCL_DOUBLE = 8, NCCL_AVG = 4 }; /* ncclFloat32, ncclFloat64, ncclAvg */
enum { NCCL_MIN_VERSION = 21000 };                      /* 2.10: ncclAvg (graph capture since 2.9) */
typedef struct { char internal[128]; } NcclId;          /* ncclUniqueId: passed by value */

static struct {
  void *lib;
  char why[512];
  int version;
  int (*get_version)(int *);
  int (*get_id)(NcclId *);
  int (*init_rank)(void **, int, NcclId, int);
  int (*all_reduce)(const void *, void *, size_t, int, int, void *, void *);
  const char *(*error)(int);
  void *comm;
  int world;
} N;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {
  const char *env = getenv("LTL_NCCL_LIB");
  const char *name = env && env[0] ? env : "libnccl.so.2";
  N.lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!N.lib && !(env && env[0]))
    N.lib = dlopen("/usr/local/cuda/lib64/libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!N.lib) {
    snprintf(N.why, sizeof N.why, "NCCL is not installed: %s could not be loaded (data-parallel training on GPUs needs it)",
             name);
    return;
  }
  static const CudaSym syms[] = {
#define S(field, sym) {offsetof(__typeof__(N), field), sym}
      S(get_version, "ncclGetVersion"), S(get_id, "ncclGetUniqueId"), S(init_rank, "ncclCommInitRank"),
      S(all_reduce, "ncclAllReduce"), S(error, "ncclGetErrorString"),
#undef S
  };
  const char *missing = cuda_dlsyms(N.lib, syms, sizeof syms / sizeof *syms, &N);
  if (missing) {
    snprintf(N.why, sizeof N.why, "%s is not NCCL: it lacks %s", name, missing);
    dlclose(N.lib);
    N.lib = NULL;
    return;
  }
  if (N.get_version(&N.version) != 0 || N.version < NCCL_MIN_VERSION) {
    snprintf(N.why, sizeof N.why, "NCCL %d.%d is too old: 2.10 or newer is needed (ncclAvg)", N.version / 10000,
             N.version / 100 % 100);
    N.lib = NULL;
  }
}

bool cuda_nccl_available(char *err, size_t errlen) {
  pthread_once(&once, load);
  if (!N.lib)
    snprintf(err, errlen, "%s", N.why);
  return N.lib != NULL;
}

bool cuda_nccl_init(int rank, int world, char *err, size_t errlen) {
  if (N.comm)
    return true;
  if (!cuda_nccl_available(err, errlen))
    return false;
  NcclId id = {{0}};
  int rc = rank == 0 ? N.get_id(&id) : 0;
  if (rc)
    return snprintf(err, errlen, "NCCL: ncclGetUniqueId failed: %s", N.error(rc)), false;
  rt_dist_broadcast(&id, sizeof id, 0); /* aborts the job on failure */
  if ((rc = N.init_rank(&N.comm, world, id, rank)) != 0) {
    N.comm = NULL;
    return snprintf(err, errlen, "NCCL: ncclCommInitRank (rank %d of %d) failed: %s", rank, world, N.error(rc)), false;
  }
  N.world = world;
  return true;
}

int cuda_nccl_world(void) { return N.comm ? N.world : 0; }

bool cuda_nccl_allreduce_avg(unsigned long long buf, int64_t n, bool f64, void *stream, char *err, size_t errlen) {
  void *p = (void *)(uintptr_t)buf;
  int rc = N.all_reduce(p, p, (size_t)n, f64 ? NCCL_DOUBLE : NCCL_FLOAT, NCCL_AVG, N.comm, stream);
  if (rc)
    snprintf(err, errlen, "ncclAllReduce of %lld elements failed: %s", (long long)n, N.error(rc));
  return rc == 0;
}
