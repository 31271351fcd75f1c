// rt.h — the LTL runtime (prefix rt_): what compiled training steps and the
// trainer call at run time. Prototypes are grouped by file; each file's
// section is owned by its author.
#ifndef LTL_RT_H
#define LTL_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//
// pool.c — a thread pool for the kernels (GEMM blocks, fused loops).
//
// The calling thread takes part in the work, so a pool of n threads starts
// n - 1 workers. Idle workers spin briefly, then sleep on a futex. Tasks are
// numbered; which thread runs a task never changes what the task computes, so
// results do not depend on the number of threads. A task that calls back into
// the same pool runs the inner job on its own thread (no deadlock).
// rt_pool_run may be called from any thread; concurrent calls are serialised.

typedef struct RtPool RtPool;

// Task `index` of `count`; the signature of JIT-compiled kernels too.
typedef void (*rt_task_fn)(void *ctx, int64_t index, int64_t count);
// A contiguous range [begin, end) of a parallel loop.
typedef void (*rt_range_fn)(void *ctx, int64_t begin, int64_t end);

int rt_cpu_count(void);                   // CPUs this process may run on (>= 1)
RtPool *rt_pool_create(int nthreads);     // <= 0: rt_cpu_count(); NULL if no thread starts
void rt_pool_destroy(RtPool *pool);
int rt_pool_size(const RtPool *pool);     // threads, the caller included
// Runs fn(ctx, i, count) for every i in [0, count) and returns when all are done.
void rt_pool_run(RtPool *pool, int64_t count, rt_task_fn fn, void *ctx);
// Splits [0, n) into at most one contiguous range per thread, each of at least
// `grain` iterations (except the last), and runs fn on each.
void rt_pool_parallel_for(RtPool *pool, int64_t n, int64_t grain, rt_range_fn fn, void *ctx);

#endif
