// bench/gemm.c — fp32 GEMM: the machine's FMA peak, LTL's JIT GEMM and
// OpenBLAS cblas_sgemm, measured in one run. Prints a Markdown table and
// writes it to the file named by argv[1] (bench/gemm.sh: bench/GEMM.md).
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llvm.h"
#include "rt.h"

// OpenBLAS extensions (declared in Debian's cblas.h too, but not in every cblas.h).
void openblas_set_num_threads(int);
char *openblas_get_corename(void);
char *openblas_get_config(void);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// One-thread rows time the calling thread's CPU time (both libraries run a
// one-thread call in the caller): time spent descheduled by other processes
// on this shared machine does not count. Several threads need the wall clock.
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Runnable tasks on the machine right now (4th field of /proc/loadavg).
static int runnable(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double a, b, c;
    int r = 0, total;
    if (f) {
        if (fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &r, &total) != 5)
            r = 0;
        fclose(f);
    }
    return r;
}

// The machine is shared (builds, tests, other benchmarks): start a window only
// when nothing but this thread is runnable, waiting up to 2 s. That includes the
// other library's workers: OpenBLAS's spin ~2^28 cycles after a call, and a
// window started then would share its cores with them.
static int idle_windows, windows;
static void wait_idle(void) {
    windows++;
    for (int i = 0; i < 1000; i++) {
        if (runnable() <= 1) {
            idle_windows++;
            return;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
}

// ---------------------------------------------------------------------------
// (a) FMA peak: a register-only loop of independent FMAs (no loads), per thread.
// 24 accumulators hide the FMA latency on two pipes; a = a * x + y stays near 1,
// so the data are ordinary numbers (zeros draw less power and can run faster).

#define FMA8(r) "vfmadd132ps %%" r "0, %%" r "1, "
__attribute__((target("avx512f"))) static void peak_avx512(long iters) {
    __asm__ volatile(
        "vbroadcastss %1, %%zmm0\n\t"
        "vbroadcastss %2, %%zmm1\n\t"
        "vmovaps %%zmm1, %%zmm8\n\t vmovaps %%zmm1, %%zmm9\n\t vmovaps %%zmm1, %%zmm10\n\t vmovaps %%zmm1, %%zmm11\n\t"
        "vmovaps %%zmm1, %%zmm12\n\t vmovaps %%zmm1, %%zmm13\n\t vmovaps %%zmm1, %%zmm14\n\t vmovaps %%zmm1, %%zmm15\n\t"
        "vmovaps %%zmm1, %%zmm16\n\t vmovaps %%zmm1, %%zmm17\n\t vmovaps %%zmm1, %%zmm18\n\t vmovaps %%zmm1, %%zmm19\n\t"
        "vmovaps %%zmm1, %%zmm20\n\t vmovaps %%zmm1, %%zmm21\n\t vmovaps %%zmm1, %%zmm22\n\t vmovaps %%zmm1, %%zmm23\n\t"
        "vmovaps %%zmm1, %%zmm24\n\t vmovaps %%zmm1, %%zmm25\n\t vmovaps %%zmm1, %%zmm26\n\t vmovaps %%zmm1, %%zmm27\n\t"
        "vmovaps %%zmm1, %%zmm28\n\t vmovaps %%zmm1, %%zmm29\n\t vmovaps %%zmm1, %%zmm30\n\t vmovaps %%zmm1, %%zmm31\n\t"
        "1:\n\t"
        FMA8("zmm") "%%zmm8\n\t" FMA8("zmm") "%%zmm9\n\t" FMA8("zmm") "%%zmm10\n\t" FMA8("zmm") "%%zmm11\n\t"
        FMA8("zmm") "%%zmm12\n\t" FMA8("zmm") "%%zmm13\n\t" FMA8("zmm") "%%zmm14\n\t" FMA8("zmm") "%%zmm15\n\t"
        FMA8("zmm") "%%zmm16\n\t" FMA8("zmm") "%%zmm17\n\t" FMA8("zmm") "%%zmm18\n\t" FMA8("zmm") "%%zmm19\n\t"
        FMA8("zmm") "%%zmm20\n\t" FMA8("zmm") "%%zmm21\n\t" FMA8("zmm") "%%zmm22\n\t" FMA8("zmm") "%%zmm23\n\t"
        FMA8("zmm") "%%zmm24\n\t" FMA8("zmm") "%%zmm25\n\t" FMA8("zmm") "%%zmm26\n\t" FMA8("zmm") "%%zmm27\n\t"
        FMA8("zmm") "%%zmm28\n\t" FMA8("zmm") "%%zmm29\n\t" FMA8("zmm") "%%zmm30\n\t" FMA8("zmm") "%%zmm31\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        : "+r"(iters)
        : "m"((float){0.999f}), "m"((float){0.001f})
        : "xmm0", "xmm1", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17",
          "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29",
          "xmm30", "xmm31", "cc");
}

static void peak_avx2(long iters) {   // 12 ymm accumulators, 2 iterations' worth per trip = 24 FMAs
    __asm__ volatile(
        "vbroadcastss %1, %%ymm0\n\t"
        "vbroadcastss %2, %%ymm1\n\t"
        "vmovaps %%ymm1, %%ymm4\n\t vmovaps %%ymm1, %%ymm5\n\t vmovaps %%ymm1, %%ymm6\n\t vmovaps %%ymm1, %%ymm7\n\t"
        "vmovaps %%ymm1, %%ymm8\n\t vmovaps %%ymm1, %%ymm9\n\t vmovaps %%ymm1, %%ymm10\n\t vmovaps %%ymm1, %%ymm11\n\t"
        "vmovaps %%ymm1, %%ymm12\n\t vmovaps %%ymm1, %%ymm13\n\t vmovaps %%ymm1, %%ymm14\n\t vmovaps %%ymm1, %%ymm15\n\t"
        "1:\n\t"
        FMA8("ymm") "%%ymm4\n\t" FMA8("ymm") "%%ymm5\n\t" FMA8("ymm") "%%ymm6\n\t" FMA8("ymm") "%%ymm7\n\t"
        FMA8("ymm") "%%ymm8\n\t" FMA8("ymm") "%%ymm9\n\t" FMA8("ymm") "%%ymm10\n\t" FMA8("ymm") "%%ymm11\n\t"
        FMA8("ymm") "%%ymm12\n\t" FMA8("ymm") "%%ymm13\n\t" FMA8("ymm") "%%ymm14\n\t" FMA8("ymm") "%%ymm15\n\t"
        FMA8("ymm") "%%ymm4\n\t" FMA8("ymm") "%%ymm5\n\t" FMA8("ymm") "%%ymm6\n\t" FMA8("ymm") "%%ymm7\n\t"
        FMA8("ymm") "%%ymm8\n\t" FMA8("ymm") "%%ymm9\n\t" FMA8("ymm") "%%ymm10\n\t" FMA8("ymm") "%%ymm11\n\t"
        FMA8("ymm") "%%ymm12\n\t" FMA8("ymm") "%%ymm13\n\t" FMA8("ymm") "%%ymm14\n\t" FMA8("ymm") "%%ymm15\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        : "+r"(iters)
        : "m"((float){0.999f}), "m"((float){0.001f})
        : "xmm0", "xmm1", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
          "xmm15", "cc");
}

typedef struct PeakArg {
    int vec;   // 16 or 8 floats per FMA
    long iters;
    double cpu_s;   // the thread's CPU time for the loop
} PeakArg;

static void *peak_thread(void *p) {
    PeakArg *a = p;
    double t0 = cpu_now();
    if (a->vec == 16)
        peak_avx512(a->iters);
    else
        peak_avx2(a->iters);
    a->cpu_s = cpu_now() - t0;
    return NULL;
}

// GFLOP/s of `threads` copies of the loop, best of `reps`.
static double measure_peak(int vec, int threads, int reps) {
    PeakArg arg[64];
    long iters = 20000000;   // 24 FMAs a trip: ~0.2 s a repetition
    double best = 0;
    for (int r = 0; r < reps; r++) {
        wait_idle();
        pthread_t th[64];
        double t0 = now();
        for (int i = 0; i < threads; i++) {
            arg[i] = (PeakArg){vec, iters, 0};
            pthread_create(&th[i], NULL, peak_thread, &arg[i]);
        }
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        double t = threads == 1 ? arg[0].cpu_s : now() - t0;
        double g = threads * (double)iters * 24 * vec * 2 / t / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

// ---------------------------------------------------------------------------
// (b), (c): GEMMs. Each repetition times enough calls to last ~30 ms.

typedef struct Shape {
    const char *name;
    int m, n, k;
    bool ta, tb;
} Shape;

typedef struct Bufs {
    float *a, *b, *c, *c2;
} Bufs;

static LlvmGemm *ltl;

static void run_ltl(const Shape *s, int threads, Bufs *x) {
    LlvmGemmSpec spec = {.trans_a = s->ta, .trans_b = s->tb};
    int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    if (!llvm_gemm_run(ltl, &spec, threads, s->m, s->n, s->k, 1, x->a, lda, x->b, ldb, 0, x->c, s->n, NULL)) {
        fprintf(stderr, "LTL GEMM failed\n");
        exit(1);
    }
}

// bf16 operands (rounded while packed), f32 accumulation: llvm_gemm16.c, into c2's neighbour.
static LlvmGemm16 *ltl16;
static float *c16;
static void run_bf16(const Shape *s, int threads, Bufs *x) {
    int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    if (!llvm_gemm16_run(ltl16, s->ta, s->tb, threads, s->m, s->n, s->k, x->a, lda, x->b, ldb, c16, s->n)) {
        fprintf(stderr, "LTL bf16 GEMM failed\n");
        exit(1);
    }
}

static void run_blas(const Shape *s, int threads, Bufs *x) {
    (void)threads;   // set once per thread count: the call itself is what we time
    int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->m, s->n,
                s->k, 1, x->a, lda, x->b, ldb, 0, x->c2, s->n);
}

// Calls per timing window: enough for ~20 ms.
static int calls_for(void (*run)(const Shape *, int, Bufs *), const Shape *s, int threads, Bufs *x) {
    run(s, threads, x);   // warm up (and JIT-compile)
    double t0 = now();
    run(s, threads, x);
    double once = now() - t0;
    return once > 0.02 ? 1 : (int)(0.02 / (once > 1e-7 ? once : 1e-7)) + 1;
}

// One untimed call first: it wakes the library's worker threads, which slept
// while wait_idle waited (waking a sleeping thread took ~2 ms on our VM).
static double window(void (*run)(const Shape *, int, Bufs *), const Shape *s, int threads, Bufs *x, int calls) {
    run(s, threads, x);
    double (*clock)(void) = threads == 1 ? cpu_now : now;
    double t0 = clock();
    for (int i = 0; i < calls; i++)
        run(s, threads, x);
    return 2.0 * s->m * s->n * s->k * calls / (clock() - t0) / 1e9;
}

// OpenBLAS and LTL in alternating windows, best of each: both see the same machine
// (other processes, clock changes), and the best window is the least disturbed.
static void time_both(const Shape *s, int threads, Bufs *x, int reps, double *blas, double *ltl) {
    int cb = calls_for(run_blas, s, threads, x), cl = calls_for(run_ltl, s, threads, x);
    *blas = *ltl = 0;
    for (int r = 0; r < reps; r++) {
        wait_idle();
        *blas = fmax(*blas, window(run_blas, s, threads, x, cb));
        wait_idle();
        *ltl = fmax(*ltl, window(run_ltl, s, threads, x, cl));
    }
}

static float *rand_buf(size_t n) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)rand() / RAND_MAX - 0.5f;
    return p;
}

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : NULL;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    char err[512];
    LlvmJit *jit = llvm_jit_create(err, sizeof err);
    if (!jit) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const LlvmHost *h = llvm_jit_host(jit);
    int ncpu = rt_cpu_count();
    int maxt = ncpu < 2 ? ncpu : 2;
    RtPool *pool = rt_pool_create(maxt);
    ltl = llvm_gemm_create(jit, NULL, pool);
    ltl16 = llvm_gemm16_create(jit, pool, getenv("LTL_GEMM16") && !strcmp(getenv("LTL_GEMM16"), "vdpbf16ps")
                                              ? LLVM_GEMM16_AVX512 : LLVM_GEMM16_AMX);
    const char *kernel16 = llvm_gemm16_kernel(ltl16);
    const LlvmGemmBlocking *blk = llvm_gemm_get_blocking(ltl);

    static char md[1 << 16];
    size_t len = 0;
#define P(...) (len += (size_t)snprintf(md + len, sizeof md - len, __VA_ARGS__))
    const char *ct = getenv("OPENBLAS_CORETYPE");
    P("# fp32 GEMM: LTL JIT vs OpenBLAS vs FMA peak\n\n");
    P("Host: LLVM CPU `%s`, %d CPUs, ISA %s. LTL blocking: %d x %d micro-tile (vector %d), "
      "KC %d, NC %d.  \n", h->cpu, ncpu, h->isa == LLVM_ISA_AVX512 ? "AVX-512" : h->isa == LLVM_ISA_AVX2 ? "AVX2" : "generic",
      blk->mr, blk->nr, blk->vec, blk->kc, blk->nc);
    P("OpenBLAS: %s (core %s), OPENBLAS_CORETYPE=%s.  \n", openblas_get_config(), openblas_get_corename(),
      ct ? ct : "(unset)");
    P("GFLOP/s, best of %d repetitions; C = A·B with alpha = 1, beta = 0; `t`: the operand is transposed. "
      "1-thread rows (peak included) are timed in the thread's CPU time, the others in wall time.  \n", reps);
    P("bf16: LTL's bf16 GEMM (llvm_gemm16.c: operands rounded to bf16 while packed, f32 accumulation, kernel: %s; LTL_GEMM16=vdpbf16ps skips AMX); "
      "bf16 diff: max |C_bf16 - C_f32| / max |C_f32| (the bf16 rounding of the operands).\n\n",
      kernel16 ? kernel16 : "?");

    double peak[3] = {0};
    int pvec = h->avx512f ? 16 : 8;
    if (h->avx512f || (h->avx2 && h->fma))
        for (int t = 1; t <= maxt; t++)
            peak[t] = measure_peak(pvec, t, reps);
    P("FMA peak (register-only loop, %d-bit, 24 independent accumulators): 1 thread %.1f, %d threads %.1f GFLOP/s.\n\n",
      pvec * 32, peak[1], maxt, peak[maxt]);

    // The MLP of the examples (784-128-256-10, batch 64): forward Y = X·Wᵀ (W is out x in),
    // backward dX = dY·W and dW = dYᵀ·X.
    static const Shape shapes[] = {
        {"square 256", 256, 256, 256, 0, 0},    {"square 512", 512, 512, 512, 0, 0},
        {"square 1024", 1024, 1024, 1024, 0, 0}, {"square 2048", 2048, 2048, 2048, 0, 0},
        {"mlp l1 fwd", 64, 128, 784, 0, 1},      {"mlp l1 dX", 64, 784, 128, 0, 0},
        {"mlp l1 dW", 128, 784, 64, 1, 0},       {"mlp l2 fwd", 64, 256, 128, 0, 1},
        {"mlp l2 dX", 64, 128, 256, 0, 0},       {"mlp l2 dW", 256, 128, 64, 1, 0},
        {"mlp l3 fwd", 64, 10, 256, 0, 1},       {"mlp l3 dX", 64, 256, 10, 0, 0},
        {"mlp l3 dW", 10, 256, 64, 1, 0},
        // conv2 of the CNN example (32 -> 64 channels, 3x3, 24x24 outputs), per image:
        // forward W·col, data gradient Wᵀ·dY, filter gradient dY·colᵀ.
        {"cnn conv2 fwd", 64, 576, 288, 0, 0},  {"cnn conv2 dX", 288, 576, 64, 1, 0},
        {"cnn conv2 dW", 64, 288, 576, 0, 1},
    };
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    P("| shape | M×N×K | op | threads | peak | OpenBLAS | LTL | LTL/peak | LTL/OpenBLAS | max rel diff | bf16 | bf16/LTL | bf16 diff |\n");
    P("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    fputs(md, stdout);
    fflush(stdout);
    for (int t = 1; t <= maxt; t++) {
        openblas_set_num_threads(t);
        for (int i = 0; i < nshapes; i++) {
            const Shape *s = &shapes[i];
            Bufs x = {rand_buf((size_t)s->m * s->k), rand_buf((size_t)s->k * s->n), rand_buf((size_t)s->m * s->n),
                      rand_buf((size_t)s->m * s->n)};
            double gb, gl;
            time_both(s, t, &x, reps, &gb, &gl);
            c16 = rand_buf((size_t)s->m * s->n);
            int c16calls = calls_for(run_bf16, s, t, &x);
            double g16 = 0;
            for (int r = 0; r < reps; r++) {
                wait_idle();
                g16 = fmax(g16, window(run_bf16, s, t, &x, c16calls));
            }
            double d16 = 0, m16 = 0;
            for (size_t j = 0; j < (size_t)s->m * s->n; j++) {
                d16 = fmax(d16, fabs(c16[j] - x.c[j]));
                m16 = fmax(m16, fabs(x.c[j]));
            }
            free(c16);
            double diff = 0, mag = 0;
            for (size_t j = 0; j < (size_t)s->m * s->n; j++) {
                diff = fmax(diff, fabs(x.c[j] - x.c2[j]));
                mag = fmax(mag, fabs(x.c2[j]));
            }
            size_t l0 = len;
            P("| %s | %d×%d×%d | %c%c | %d | %.0f | %.1f | %.1f | %.0f%% | %.2f× | %.1e | %.1f | %.2f× | %.1e |\n", s->name,
              s->m, s->n, s->k, s->ta ? 't' : 'n', s->tb ? 't' : 'n', t, peak[t], gb, gl,
              peak[t] > 0 ? 100 * gl / peak[t] : 0, gl / gb, mag > 0 ? diff / mag : diff, g16, g16 / gl,
              m16 > 0 ? d16 / m16 : d16);
            fputs(md + l0, stdout);
            fflush(stdout);
            free(x.a), free(x.b), free(x.c), free(x.c2);
        }
    }
    size_t l0 = len;
    P("\n%d of %d timing windows started with no other process runnable (the rest waited 2 s and ran anyway).\n",
      idle_windows, windows);
    fputs(md + l0, stdout);
    if (out) {
        FILE *f = fopen(out, "w");
        if (!f || fputs(md, f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", out);
            return 1;
        }
    }
    llvm_gemm_destroy(ltl);
    llvm_gemm16_destroy(ltl16);
    rt_pool_destroy(pool);
    llvm_jit_destroy(jit);
    return 0;
}
