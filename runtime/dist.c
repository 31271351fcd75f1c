/* dist.c — collectives for data-parallel training (docs/distributed.md).
 *
 * One process is one rank. The ranks are started by a launcher (mpirun, srun, or `ltlc run`
 * itself through mpirun), which says who is who in the environment. MPI does the
 * collectives on the CPU (on GPUs the step's gradients go through NCCL in the CUDA executor,
 * compiler/cuda_nccl.c). libmpi is loaded with dlopen, so ltlc starts and runs on one
 * process where it is not installed, and a single-process run pays nothing for it (libmpi pulls in
 * hwloc, pmix and libevent: tens of milliseconds of loading). The MPI handles are OpenMPI's
 * (MPI_COMM_WORLD is the address of ompi_mpi_comm_world, and so on): the ABI of Debian's
 * libmpi.so.40.
 *
 * Errors: a collective that fails ends the whole job (rt_dist_abort), since a rank that
 * carries on alone would hang the others. A watchdog thread ends it too when one collective
 * has waited longer than LTL_DDP_TIMEOUT seconds (default 300): a peer that died without
 * the launcher noticing, or hangs. */
#include "rt.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void *Handle; /* MPI_Comm, MPI_Datatype, MPI_Op: pointers in OpenMPI */

static struct {
    RtDistBackend backend;
    int rank, size;
    void *mpi_lib;
    int (*init)(int *, char ***);
    int (*initialized)(int *);
    int (*finalize)(void);
    int (*abort_)(Handle, int);
    int (*comm_rank)(Handle, int *);
    int (*comm_size)(Handle, int *);
    int (*bcast)(void *, int, Handle, int, Handle);
    int (*allreduce)(const void *, void *, int, Handle, Handle, Handle);
    int (*barrier)(Handle);
    Handle world, byte, f32, f64, sum, max, min;
    /* the watchdog */
    pthread_t dog;
    bool dog_on;
    _Atomic double busy_since;   /* 0: no collective in flight */
    const char *_Atomic busy_what;
    double timeout;
} D = {.rank = 0, .size = 1};

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

bool rt_dist_env(int *rank, int *size, int *local_rank) {
    /* OpenMPI's mpirun; PMIx / PMI (srun --mpi=pmix, MPICH's hydra); Slurm's srun */
    static const char *const vars[][3] = {
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
        {"PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"},
        {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
        {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        if (!getenv(vars[i][0]) || !getenv(vars[i][1])) continue;
        *rank = env_int(vars[i][0], 0);
        *size = env_int(vars[i][1], 1);
        *local_rank = env_int(vars[i][2], 0);
        return true;
    }
    *rank = 0, *size = 1, *local_rank = 0;
    return false;
}

int rt_dist_rank(void) { return D.rank; }
int rt_dist_size(void) { return D.size; }
RtDistBackend rt_dist_backend(void) { return D.backend; }

_Noreturn void rt_dist_abort(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ltlc: rank %d of %d: %s; stopping all ranks\n", D.rank, D.size, msg);
    fflush(stderr);
    fflush(stdout);
    if (D.abort_ && D.size > 1) D.abort_(D.world, 1);
    _exit(1);
}

static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        sleep(1);
        double t = atomic_load(&D.busy_since);
        if (t > 0 && mono() - t > D.timeout)
            rt_dist_abort("no answer from the other ranks for %.0f s in %s (a rank died or hangs)", D.timeout,
                          atomic_load(&D.busy_what));
    }
    return NULL;
}

static void busy(const char *what) {
    atomic_store(&D.busy_what, what);
    atomic_store(&D.busy_since, mono());
}
static void idle(void) { atomic_store(&D.busy_since, 0.0); }

void rt_dist_watch(const char *what) {
    if (what) busy(what);
    else idle();
}

#define SYM(lib, var, name) (*(void **)&(var) = dlsym(lib, name))

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int mpi_load(char *err, size_t errlen) {
    /* RTLD_GLOBAL: OpenMPI's own plugins (dlopened by libmpi) resolve libmpi's symbols */
    D.mpi_lib = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!D.mpi_lib) D.mpi_lib = dlopen("libmpi.so", RTLD_NOW | RTLD_GLOBAL);
    if (!D.mpi_lib)
        return fail(err, errlen, "cannot load OpenMPI's libmpi.so.40 (%s): install openmpi-bin and libopenmpi-dev", dlerror());
    bool ok = SYM(D.mpi_lib, D.init, "MPI_Init") && SYM(D.mpi_lib, D.initialized, "MPI_Initialized") &&
              SYM(D.mpi_lib, D.finalize, "MPI_Finalize") && SYM(D.mpi_lib, D.abort_, "MPI_Abort") &&
              SYM(D.mpi_lib, D.comm_rank, "MPI_Comm_rank") && SYM(D.mpi_lib, D.comm_size, "MPI_Comm_size") &&
              SYM(D.mpi_lib, D.bcast, "MPI_Bcast") && SYM(D.mpi_lib, D.allreduce, "MPI_Allreduce") &&
              SYM(D.mpi_lib, D.barrier, "MPI_Barrier") && (D.world = dlsym(D.mpi_lib, "ompi_mpi_comm_world")) &&
              (D.byte = dlsym(D.mpi_lib, "ompi_mpi_byte")) && (D.f32 = dlsym(D.mpi_lib, "ompi_mpi_float")) &&
              (D.f64 = dlsym(D.mpi_lib, "ompi_mpi_double")) && (D.sum = dlsym(D.mpi_lib, "ompi_mpi_op_sum")) &&
              (D.max = dlsym(D.mpi_lib, "ompi_mpi_op_max")) && (D.min = dlsym(D.mpi_lib, "ompi_mpi_op_min"));
    if (!ok) return fail(err, errlen, "libmpi.so is not OpenMPI's (no %s)", "ompi_mpi_comm_world or MPI_* functions");
    return 0;
}

int rt_dist_init(RtDistBackend backend, char *err, size_t errlen) {
    if (backend == RT_DIST_NONE) return 0;
    if (mpi_load(err, errlen) != 0) return -1;
    int done = 0;
    D.initialized(&done);
    if (!done && D.init(NULL, NULL) != 0) return fail(err, errlen, "MPI_Init failed");
    D.comm_rank(D.world, &D.rank);
    D.comm_size(D.world, &D.size);
    D.backend = RT_DIST_MPI;
    D.timeout = env_int("LTL_DDP_TIMEOUT", 300);
    if (D.size > 1 && D.timeout > 0) D.dog_on = pthread_create(&D.dog, NULL, watchdog, NULL) == 0;
    if (D.dog_on) pthread_detach(D.dog);
    return 0;
}

/* MPI counts are ints: big buffers go in pieces of at most 2^30 elements. */
enum { CHUNK = 1 << 30 };

int rt_dist_broadcast(void *buf, size_t bytes, int root) {
    if (D.size <= 1) return 0;
    busy("broadcast");
    for (size_t off = 0; off < bytes; off += CHUNK) {
        size_t n = bytes - off < CHUNK ? bytes - off : CHUNK;
        if (D.bcast((char *)buf + off, (int)n, D.byte, root, D.world) != 0) rt_dist_abort("MPI_Bcast failed");
    }
    idle();
    return 0;
}

int rt_dist_allreduce(void *buf, int64_t n, RtDistDtype t, RtDistOp op) {
    if (D.size <= 1 || n <= 0) return 0;
    busy("all-reduce");
    size_t es = t == RT_DIST_F64 ? 8 : 4;
    Handle mop = op == RT_DIST_MAX ? D.max : op == RT_DIST_MIN ? D.min : D.sum;
    for (int64_t off = 0; off < n; off += CHUNK) {
        int64_t k = n - off < CHUNK ? n - off : CHUNK;
        if (D.allreduce((void *)1 /* MPI_IN_PLACE */, (char *)buf + off * (int64_t)es, (int)k,
                        t == RT_DIST_F64 ? D.f64 : D.f32, mop, D.world) != 0)
            rt_dist_abort("MPI_Allreduce failed");
    }
    if (op == RT_DIST_MEAN) { /* a sum, then one rounding of sum / size */
        if (t == RT_DIST_F64)
            for (int64_t i = 0; i < n; i++) ((double *)buf)[i] /= D.size;
        else
            for (int64_t i = 0; i < n; i++) ((float *)buf)[i] /= (float)D.size;
    }
    idle();
    return 0;
}

int rt_dist_barrier(void) {
    if (D.size <= 1) return 0;
    busy("barrier");
    if (D.barrier(D.world) != 0) rt_dist_abort("MPI_Barrier failed");
    idle();
    return 0;
}

bool rt_dist_agree(bool flag) {
    unsigned char b = flag;
    rt_dist_broadcast(&b, 1, 0);
    return b != 0;
}

void rt_dist_finalize(void) {
    if (D.backend == RT_DIST_NONE) return;
    if (D.size > 1) rt_dist_barrier();
    D.dog_on = false;
    int done = 0;
    D.initialized(&done);
    if (done) D.finalize();
    D.backend = RT_DIST_NONE;
    D.size = 1;
    D.rank = 0;
}
