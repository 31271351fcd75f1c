// pool.c — a small thread pool: spin briefly, then sleep on a futex.
//
// One job at a time: the caller publishes (fn, ctx, count) under a new
// generation `gen` and wakes sleeping workers; every thread, the caller too,
// claims task indices from `next`, whose high half carries the generation, so
// a worker late for a job can never run a task of the next one. The caller
// waits for `done` to reach count, not for the workers: a worker that is slow
// to wake simply finds nothing left to do. Spinning first keeps back-to-back
// kernels of a training step free of syscalls; sleeping keeps an idle process idle.
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"

// Spin this long before sleeping. Waking a sleeping worker took 1.6-2 ms on the
// 2-vCPU VM this was tuned on (an idle vCPU is slow to come back), longer than
// many kernels: a training step must not let its workers sleep between kernels.
// OpenBLAS spins ~2^28 cycles (~70 ms) for the same reason.
enum { SPIN_NS = 5000000 };

struct RtPool {
    int nthreads;                 // caller included
    pthread_t *workers;           // nthreads - 1
    pthread_mutex_t run_mu;       // one job at a time
    _Atomic uint32_t gen;         // job generation: the workers' futex word
    _Atomic uint64_t next;        // gen << 32 | next task index
    _Atomic uint32_t done;        // tasks finished: the caller's futex word
    _Atomic int sleepers;         // workers asleep (or about to be) on gen
    _Atomic int caller_asleep;
    _Atomic bool stop;
    _Atomic(rt_task_fn) fn;       // atomics: a late worker may read them while they change
    _Atomic(void *) ctx;
    _Atomic int64_t count;
};

static _Thread_local const RtPool *inside;   // the pool whose task this thread is running

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake(_Atomic uint32_t *addr, int n) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// Spins until *word != val or SPIN_NS pass; returns the last value read.
static uint32_t spin_while(_Atomic uint32_t *word, uint32_t val) {
    int64_t deadline = 0;
    for (int i = 0;; i++) {
        uint32_t w = atomic_load(word);
        if (w != val)
            return w;
        if ((i & 63) == 0) {   // read the clock now and then, it is not free
            int64_t t = now_ns();
            if (!deadline)
                deadline = t + SPIN_NS;
            else if (t > deadline)
                return w;
        }
        cpu_relax();
    }
}

int rt_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

// Claims and runs tasks of generation g until none is left.
static void run_tasks(RtPool *p, uint32_t g) {
    rt_task_fn fn = atomic_load(&p->fn);
    void *ctx = atomic_load(&p->ctx);
    int64_t count = atomic_load(&p->count);
    const RtPool *outer = inside;
    inside = p;
    uint64_t v = atomic_load(&p->next);
    while ((uint32_t)(v >> 32) == g && (int64_t)(v & 0xffffffffu) < count) {
        if (!atomic_compare_exchange_weak(&p->next, &v, v + 1))
            continue;   // v was reloaded
        fn(ctx, (int64_t)(v & 0xffffffffu), count);
        if (atomic_fetch_add(&p->done, 1) + 1 == (uint32_t)count && atomic_load(&p->caller_asleep))
            futex_wake(&p->done, 1);
        v = atomic_load(&p->next);
    }
    inside = outer;
}

static void *worker(void *arg) {
    RtPool *p = arg;
    uint32_t seen = 0;   // gen at creation: a job or stop published before we run is not missed
    for (;;) {
        uint32_t g = spin_while(&p->gen, seen);
        while (g == seen) {
            atomic_fetch_add(&p->sleepers, 1);
            if ((g = atomic_load(&p->gen)) == seen)
                futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            g = atomic_load(&p->gen);
        }
        seen = g;
        if (atomic_load(&p->stop))
            return NULL;
        run_tasks(p, g);
    }
}

RtPool *rt_pool_create(int nthreads) {
    RtPool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->nthreads = nthreads > 0 ? nthreads : rt_cpu_count();
    pthread_mutex_init(&p->run_mu, NULL);
    p->workers = calloc((size_t)p->nthreads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return NULL;
    }
    for (int i = 0; i < p->nthreads - 1; i++) {
        if (pthread_create(&p->workers[i], NULL, worker, p) != 0) {
            p->nthreads = i + 1;   // keep the workers that did start
            break;
        }
    }
    return p;
}

void rt_pool_destroy(RtPool *p) {
    if (!p)
        return;
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen, INT_MAX);
    for (int i = 0; i < p->nthreads - 1; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->run_mu);
    free(p->workers);
    free(p);
}

int rt_pool_size(const RtPool *p) { return p ? p->nthreads : 1; }

static void run_job(RtPool *p, int64_t count, rt_task_fn fn, void *ctx) {
    // Retag the counter first: a worker still in the last job, which may read
    // the new count below, can then no longer claim anything with the old tag.
    uint32_t g = atomic_load(&p->gen) + 1;
    atomic_store(&p->next, (uint64_t)g << 32);
    atomic_store(&p->fn, fn);
    atomic_store(&p->ctx, ctx);
    atomic_store(&p->count, count);
    atomic_store(&p->done, 0);
    atomic_store(&p->gen, g);   // seq_cst: a worker either sees it or is counted in sleepers
    if (atomic_load(&p->sleepers) > 0)
        futex_wake(&p->gen, INT_MAX);
    run_tasks(p, g);
    for (;;) {   // wait for the tasks other threads claimed
        uint32_t d = atomic_load(&p->done);
        if (d == (uint32_t)count)
            break;
        if (spin_while(&p->done, d) != d)
            continue;   // progress: keep spinning
        atomic_store(&p->caller_asleep, 1);
        if (atomic_load(&p->done) == d)
            futex_wait(&p->done, d);
        atomic_store(&p->caller_asleep, 0);
    }
}

void rt_pool_run(RtPool *p, int64_t count, rt_task_fn fn, void *ctx) {
    if (count <= 0)
        return;
    // Serial cases: no workers, one task, or a task of this pool calling back in.
    if (!p || p->nthreads == 1 || count == 1 || inside == p) {
        for (int64_t i = 0; i < count; i++)
            fn(ctx, i, count);
        return;
    }
    if (count > INT32_MAX) {   // task indices live in 32 bits; tasks are meant to be coarse
        for (int64_t i = 0; i < count; i++)
            fn(ctx, i, count);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    run_job(p, count, fn, ctx);
    pthread_mutex_unlock(&p->run_mu);
}

typedef struct Range {
    rt_range_fn fn;
    void *ctx;
    int64_t n, chunk;
} Range;

static void range_task(void *ctx, int64_t i, int64_t count) {
    (void)count;
    Range *r = ctx;
    int64_t begin = i * r->chunk, end = begin + r->chunk < r->n ? begin + r->chunk : r->n;
    r->fn(r->ctx, begin, end);
}

void rt_pool_parallel_for(RtPool *p, int64_t n, int64_t grain, rt_range_fn fn, void *ctx) {
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int64_t parts = (n + grain - 1) / grain, t = rt_pool_size(p);
    if (parts > t)
        parts = t;
    Range r = {fn, ctx, n, (n + parts - 1) / parts};
    rt_pool_run(p, (n + r.chunk - 1) / r.chunk, range_task, &r);
}
