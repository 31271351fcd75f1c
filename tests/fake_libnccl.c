/* fake_libnccl.c — a stand-in for libnccl.so.2 (LTL_NCCL_LIB) so that data-parallel training on
 * the fake GPU (tests/fake_libcuda.c: device memory is host memory) really reduces across the
 * rank processes: the communicator is a POSIX shared-memory segment named after the unique id,
 * with a process-shared barrier; an all-reduce copies each rank's piece into its slot, waits
 * for all, sums the slots in rank order (the same bits on every rank) and waits again before
 * the slots are reused. ncclAllReduce is a stream operation of the fake driver
 * (fake_cuda_stream_op): it runs when the driver runs that stream, or at each replay of a
 * captured graph. $LTL_FAKE_NCCL_HANG=R: rank R never takes part (a peer that hangs). Only what
 * compiler/cuda_nccl.c calls exists. */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { OK = 0, UNHANDLED_CUDA = 1, SYSTEM = 2, INVALID_ARGUMENT = 4 };
enum { SLOT = 1 << 20 }; /* bytes of one rank's piece */

typedef struct { char internal[128]; } NcclId; /* ncclUniqueId, passed by value as nccl.h says */

typedef struct {
  atomic_int ready; /* rank 0 has set up the barrier */
  pthread_barrier_t bar;
} Header;
enum { HEADER = 256 };

typedef struct {
  Header *h;
  char *slots;
  int rank, n;
  size_t size;
} Comm;

typedef struct {
  Comm *c;
  void *send, *recv;
  size_t count;
  int f64, avg;
} Call;

int ncclGetVersion(int *v) { return *v = 22800, OK; }
const char *ncclGetErrorString(int r) {
  return r == SYSTEM ? "system error (fake)" : r == INVALID_ARGUMENT ? "invalid argument (fake)" : "fake NCCL error";
}

int ncclGetUniqueId(NcclId *u) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  memset(u, 0, sizeof *u);
  snprintf(u->internal, sizeof u->internal, "/ltl-fake-nccl-%d-%lld", (int)getpid(),
           (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
  return OK;
}

int ncclCommInitRank(Comm **out, int n, NcclId u, int rank) {
  const char *id = u.internal;
  if (n < 1 || rank < 0 || rank >= n || id[0] != '/' || !memchr(id, 0, sizeof u.internal))
    return INVALID_ARGUMENT;
  Comm *c = calloc(1, sizeof *c);
  c->rank = rank, c->n = n, c->size = HEADER + (size_t)n * SLOT;
  int fd = shm_open(id, O_CREAT | O_RDWR, 0600);
  if (fd < 0 || ftruncate(fd, (off_t)c->size) != 0)
    return free(c), SYSTEM;
  c->h = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (c->h == MAP_FAILED)
    return free(c), SYSTEM;
  c->slots = (char *)c->h + HEADER;
  if (rank == 0) {
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&c->h->bar, &a, (unsigned)n);
    atomic_store(&c->h->ready, 1);
  }
  for (int waited = 0; !atomic_load(&c->h->ready); waited++) {
    if (waited > 30000) /* 30 s: rank 0 never came */
      return munmap(c->h, c->size), free(c), SYSTEM;
    usleep(1000);
  }
  pthread_barrier_wait(&c->h->bar);
  if (rank == 0) /* everyone is attached: the name can go */
    shm_unlink(id);
  *out = c;
  return OK;
}

static void reduce(void *arg) {
  const Call *x = arg;
  Comm *c = x->c;
  const char *hang = getenv("LTL_FAKE_NCCL_HANG"); /* this rank never takes part: a hung peer */
  if (hang && atoi(hang) == c->rank)
    for (;;)
      pause();
  size_t es = x->f64 ? 8 : 4, per = SLOT / es;
  for (size_t at = 0; at < x->count; at += per) {
    size_t k = x->count - at < per ? x->count - at : per;
    memcpy(c->slots + (size_t)c->rank * SLOT, (char *)x->send + at * es, k * es);
    pthread_barrier_wait(&c->h->bar);
    for (size_t i = 0; i < k; i++) {
      double s = 0;
      if (x->f64) {
        for (int r = 0; r < c->n; r++)
          s += ((const double *)(c->slots + (size_t)r * SLOT))[i];
        ((double *)x->recv)[at + i] = x->avg ? s / c->n : s;
      } else {
        float f = 0;
        for (int r = 0; r < c->n; r++)
          f += ((const float *)(c->slots + (size_t)r * SLOT))[i];
        ((float *)x->recv)[at + i] = x->avg ? f / (float)c->n : f;
      }
    }
    pthread_barrier_wait(&c->h->bar); /* every rank has read the slots */
  }
}

int ncclAllReduce(const void *send, void *recv, size_t count, int dtype, int op, Comm *c, void *stream) {
  if ((dtype != 7 && dtype != 8) || (op != 0 && op != 4) || !c) /* float32 / float64; sum / avg */
    return INVALID_ARGUMENT;
  void *cuda = dlopen(getenv("LTL_CUDA_LIB"), RTLD_NOW | RTLD_NOLOAD);
  void (*stream_op)(void *, void (*)(void *), void *) =
      cuda ? (void (*)(void *, void (*)(void *), void *))dlsym(cuda, "fake_cuda_stream_op") : NULL;
  if (!stream_op)
    return UNHANDLED_CUDA;
  Call *x = malloc(sizeof *x); /* the driver frees it (after running it, or with the graph) */
  *x = (Call){c, (void *)send, recv, count, dtype == 8, op == 4};
  stream_op(stream, reduce, x);
  dlclose(cuda);
  return OK;
}
