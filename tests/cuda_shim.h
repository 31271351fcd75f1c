/* cuda_shim.h — runs the CUDA C that cuda_emit.c generates on the host, for the semantic
 * tests (tests/test_cuda.c). Included before the generated source, compiled as C17 (gnu)
 * into a shared object that the test loads.
 *
 * Every CUDA thread of a block is a fiber with its own stack, switched by a few lines of
 * x86-64 assembly (ucontext would save the signal mask with a system call per switch).
 * Blocks run one after the other, so `__shared__` is a static. __syncthreads is a counting
 * barrier over the block's live threads, warp shuffles go through per-lane slots between two
 * warp barriers, atomicAdd is a compare-and-swap loop. The scheduler resumes the fibers in
 * forward, reversed or random order, so a missing barrier shows as a wrong result. */
#ifndef LTL_CUDA_SHIM_H
#define LTL_CUDA_SHIM_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SHIM_ASAN 1
#else
#define SHIM_ASAN 0
#endif

typedef struct { unsigned x, y, z; } dim3;

enum { SHIM_MAX_THREADS = 1024, SHIM_STACK = 256 * 1024 };

typedef struct {
  void *sp;             /* saved stack pointer while switched out */
  dim3 tid;
  int done;
  unsigned char *stack;
  void *fake;           /* ASan's fake-stack handle */
} ShimFiber;

static struct {
  ShimFiber f[SHIM_MAX_THREADS];
  ShimFiber *cur;
  void *sched_sp;
  const void *sched_bottom;
  size_t sched_size;
  void *sched_fake;
  dim3 block, grid, bidx;
  void (*kernel)(char *const *);
  char *const *args;
  int live, bar_count, bar_gen;
  int warp_live[SHIM_MAX_THREADS / 32], warp_count[SHIM_MAX_THREADS / 32], warp_gen[SHIM_MAX_THREADS / 32];
  union { double d; long long l; } slot[SHIM_MAX_THREADS];
  long long yields;
} shim;

#define threadIdx (shim.cur->tid)
#define blockIdx (shim.bidx)
#define blockDim (shim.block)
#define gridDim (shim.grid)
#define __shared__ static
#define __device__
#define __global__

/* shim_swap(&save, to): saves the callee-saved registers on the current stack and its
 * pointer in *save, then continues on the stack `to` (which was saved the same way). */
void shim_swap(void **save, void *to);
__asm__(".text\n"
        ".type shim_swap, @function\n"
        "shim_swap:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size shim_swap, .-shim_swap\n");

static void shim_to_sched(int exiting) {
  ShimFiber *f = shim.cur;
#if SHIM_ASAN
  __sanitizer_start_switch_fiber(exiting ? NULL : &f->fake, shim.sched_bottom, shim.sched_size);
#else
  (void)exiting;
#endif
  shim_swap(&f->sp, shim.sched_sp);
#if SHIM_ASAN
  __sanitizer_finish_switch_fiber(f->fake, &shim.sched_bottom, &shim.sched_size);
#endif
}

static void shim_entry(void) {
#if SHIM_ASAN
  __sanitizer_finish_switch_fiber(NULL, &shim.sched_bottom, &shim.sched_size);
#endif
  shim.kernel(shim.args);
  ShimFiber *f = shim.cur;
  f->done = 1;
  shim.live--;
  int w = (int)f->tid.x / 32;
  shim.warp_live[w]--;
  /* a thread that exits no longer holds back a barrier */
  if (shim.bar_count > 0 && shim.bar_count >= shim.live) {
    shim.bar_count = 0;
    shim.bar_gen++;
  }
  if (shim.warp_count[w] > 0 && shim.warp_count[w] >= shim.warp_live[w]) {
    shim.warp_count[w] = 0;
    shim.warp_gen[w]++;
  }
  shim_to_sched(1);
  abort(); /* never resumed */
}

static void __syncthreads(void) {
  int gen = shim.bar_gen;
  if (++shim.bar_count >= shim.live) {
    shim.bar_count = 0;
    shim.bar_gen++;
    shim_to_sched(0); /* let the others run first: orders vary */
    return;
  }
  while (shim.bar_gen == gen)
    shim_to_sched(0);
}

static void shim_warp_sync(void) {
  int w = (int)threadIdx.x / 32, gen = shim.warp_gen[w];
  if (++shim.warp_count[w] >= shim.warp_live[w]) {
    shim.warp_count[w] = 0;
    shim.warp_gen[w]++;
    shim_to_sched(0);
    return;
  }
  while (shim.warp_gen[w] == gen)
    shim_to_sched(0);
}

static inline double shim_shfl_d(unsigned mask, double v, int lanemask) {
  (void)mask;
  unsigned t = threadIdx.x, src = (t & ~31u) | ((t & 31u) ^ (unsigned)lanemask);
  shim.slot[t].d = v;
  shim_warp_sync();
  double r = shim.slot[src].d;
  shim_warp_sync(); /* nobody overwrites a slot before every lane has read */
  return r;
}
static inline long long shim_shfl_l(unsigned mask, long long v, int lanemask) {
  (void)mask;
  unsigned t = threadIdx.x, src = (t & ~31u) | ((t & 31u) ^ (unsigned)lanemask);
  shim.slot[t].l = v;
  shim_warp_sync();
  long long r = shim.slot[src].l;
  shim_warp_sync();
  return r;
}
static inline float shim_shfl_f(unsigned m, float v, int l) { return (float)shim_shfl_d(m, v, l); }
static inline int shim_shfl_i(unsigned m, int v, int l) { return (int)shim_shfl_l(m, v, l); }
#define __shfl_xor_sync(m, v, l)                                                                  \
  _Generic((v), double: shim_shfl_d, float: shim_shfl_f, long long: shim_shfl_l, int: shim_shfl_i)(m, v, l)

static inline float shim_atomic_add_f(float *p, float v) {
  uint32_t old, nw;
  float o, n;
  do {
    __atomic_load(p, &o, __ATOMIC_RELAXED);
    n = o + v;
    memcpy(&old, &o, 4);
    memcpy(&nw, &n, 4);
  } while (!__atomic_compare_exchange_n((uint32_t *)p, &old, nw, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return o;
}
static inline double shim_atomic_add_d(double *p, double v) {
  uint64_t old, nw;
  double o, n;
  do {
    __atomic_load(p, &o, __ATOMIC_RELAXED);
    n = o + v;
    memcpy(&old, &o, 8);
    memcpy(&nw, &n, 8);
  } while (!__atomic_compare_exchange_n((uint64_t *)p, &old, nw, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return o;
}
#define atomicAdd(p, v) _Generic((p), float *: shim_atomic_add_f, double *: shim_atomic_add_d)(p, v)

enum { SHIM_FORWARD, SHIM_REVERSE, SHIM_RANDOM };

/* Runs kernel on grid x block threads (1-D) with the given resume order. 0, or -1 with a
 * message (a deadlock: threads waiting at a barrier the others never reach). */
int shim_launch(void (*kernel)(char *const *), int grid, int block, char *const *args, int order,
                unsigned seed, char *err, size_t errlen) {
  if (block < 32 || block > SHIM_MAX_THREADS || block % 32) {
    snprintf(err, errlen, "block size %d is not a multiple of 32 in [32, %d]", block, SHIM_MAX_THREADS);
    return -1;
  }
  shim.kernel = kernel;
  shim.args = args;
  shim.block = (dim3){(unsigned)block, 1, 1};
  shim.grid = (dim3){(unsigned)grid, 1, 1};
  uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
  int perm[SHIM_MAX_THREADS];
  for (int b = 0; b < grid; b++) {
    shim.bidx = (dim3){(unsigned)b, 0, 0};
    shim.live = block;
    shim.bar_count = 0;
    for (int w = 0; w < block / 32; w++)
      shim.warp_live[w] = 32, shim.warp_count[w] = 0;
    for (int t = 0; t < block; t++) {
      ShimFiber *f = &shim.f[t];
      if (!f->stack)
        f->stack = malloc(SHIM_STACK);
      f->tid = (dim3){(unsigned)t, 0, 0};
      f->done = 0;
      f->fake = NULL;
      /* the first switch "returns" into shim_entry with the stack aligned as after a call */
      uintptr_t top = ((uintptr_t)(f->stack + SHIM_STACK) & ~(uintptr_t)15) - 16;
      void **sp = (void **)top;
      sp[1] = NULL;
      sp[0] = (void *)shim_entry;
      sp -= 6; /* r15 r14 r13 r12 rbx rbp */
      memset(sp, 0, 6 * sizeof *sp);
      f->sp = sp;
    }
    int stuck = 0;
    for (;;) {
      for (int i = 0; i < block; i++)
        perm[i] = order == SHIM_REVERSE ? block - 1 - i : i;
      if (order == SHIM_RANDOM)
        for (int i = block - 1; i > 0; i--) {
          rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
          int j = (int)(rng % (uint64_t)(i + 1)), t = perm[i];
          perm[i] = perm[j], perm[j] = t;
        }
      int gen = shim.bar_gen, left = shim.live, wg = 0;
      for (int w = 0; w < block / 32; w++)
        wg += shim.warp_gen[w];
      for (int i = 0; i < block; i++) {
        ShimFiber *f = &shim.f[perm[i]];
        if (f->done)
          continue;
        shim.cur = f;
#if SHIM_ASAN
        __sanitizer_start_switch_fiber(&shim.sched_fake, f->stack, SHIM_STACK);
#endif
        shim_swap(&shim.sched_sp, f->sp);
#if SHIM_ASAN
        __sanitizer_finish_switch_fiber(shim.sched_fake, NULL, NULL);
#endif
        shim.yields++;
      }
      if (shim.live == 0)
        break;
      int wg2 = 0;
      for (int w = 0; w < block / 32; w++)
        wg2 += shim.warp_gen[w];
      stuck = gen == shim.bar_gen && left == shim.live && wg == wg2 ? stuck + 1 : 0;
      if (stuck > 2) {
        snprintf(err, errlen, "block %d: deadlock, %d threads wait at a barrier", b, shim.live);
        return -1;
      }
    }
  }
  return 0;
}

/* Frees the fibers' stacks (before the object is unloaded: nothing else points to them). */
void shim_release(void) {
  for (int t = 0; t < SHIM_MAX_THREADS; t++) {
    free(shim.f[t].stack);
    shim.f[t].stack = NULL;
  }
}

#endif
