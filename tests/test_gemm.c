// Tests of the JIT-generated GEMM (compiler/llvm_gemm.c), the JIT wrapper and
// the thread pool, against a naive triple loop accumulating in double.
#include <criterion/criterion.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "llvm.h"
#include "rt.h"

static LlvmJit *jit;
static RtPool *pool;
static LlvmGemm *gemm;

static void setup(void) {
    char err[512];
    jit = llvm_jit_create(err, sizeof err);
    cr_assert(jit, "llvm_jit_create: %s", err);
    pool = rt_pool_create(2);
    cr_assert(pool);
    gemm = llvm_gemm_create(jit, NULL, pool);
    cr_assert(gemm, "%s", llvm_jit_error(jit));
}

static void teardown(void) {
    llvm_gemm_destroy(gemm);
    rt_pool_destroy(pool);
    llvm_jit_destroy(jit);
}

TestSuite(gemm, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(pool, .timeout = 30);

// xorshift: the same data on every run.
static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}
static float *rand_matrix(int64_t n) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        x[i] = frand();
    return x;
}

typedef struct Case {
    int64_t m, n, k;
    float alpha, beta;
    bool bias, relu;
    int threads;
} Case;

// Runs one case on `g` and compares with the double-precision reference.
// Bound: |error| <= (k + 4) * 2^-24 * (sum |alpha a b| + |beta c| + |bias|),
// the worst case for a length-k fp32 dot product plus the epilogue.
static void check(LlvmGemm *g, bool ta, bool tb, Case cs) {
    int64_t m = cs.m, n = cs.n, k = cs.k;
    int64_t pad = (m + n + k) % 3;   // leading dimensions larger than the rows
    int64_t ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n;
    int64_t lda = ca + pad, ldb = cb + pad, ldc = n + pad;
    float *a = rand_matrix(ra * lda), *b = rand_matrix(rb * ldb), *c = rand_matrix(m * ldc);
    float *bias = rand_matrix(n), *c0 = malloc(sizeof(float) * (size_t)(m * ldc));
    if (cs.beta == 0)   // beta == 0 must not read C
        for (int64_t i = 0; i < m * ldc; i++)
            c[i] = NAN;
    memcpy(c0, c, sizeof(float) * (size_t)(m * ldc));
    LlvmGemmSpec spec = {.trans_a = ta, .trans_b = tb, .bias = cs.bias, .relu = cs.relu};
    bool ok = llvm_gemm_run(g, &spec, cs.threads, m, n, k, cs.alpha, a, lda, b, ldb, cs.beta, c, ldc,
                            cs.bias ? bias : NULL);
    cr_assert(ok, "llvm_gemm_run: %s", llvm_jit_error(jit));
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int64_t p = 0; p < k; p++) {
                double x = ta ? a[p * lda + i] : a[i * lda + p], y = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += x * y, mag += fabs(x * y);
            }
            double want = cs.alpha * s;
            mag *= fabs(cs.alpha);
            if (cs.beta != 0)
                want += (double)cs.beta * c0[i * ldc + j], mag += fabs(cs.beta * c0[i * ldc + j]);
            if (cs.bias)
                want += bias[j], mag += fabs(bias[j]);
            if (cs.relu && want < 0)
                want = 0;
            double got = c[i * ldc + j], tol = (double)(k + 4) * 0x1.0p-24 * mag + 1e-30;
            if (!(fabs(got - want) <= tol))
                cr_assert_fail("%c%c m=%lld n=%lld k=%lld alpha=%g beta=%g bias=%d relu=%d threads=%d: "
                         "C[%lld][%lld] = %.9g, want %.9g (tol %.3g)",
                         ta ? 't' : 'n', tb ? 't' : 'n', (long long)m, (long long)n, (long long)k, cs.alpha,
                         cs.beta, cs.bias, cs.relu, cs.threads, (long long)i, (long long)j, got, want, tol);
        }
        // Padding between rows is never written.
        for (int64_t j = n; j < ldc; j++)
            cr_assert(memcmp(&c[i * ldc + j], &c0[i * ldc + j], 4) == 0, "padding of row %lld written", (long long)i);
    }
    free(a), free(b), free(c), free(c0), free(bias);
}

// Shapes: 1, 7, 33, 64, 100, 1000, non-multiples of the vector width, of MR x NR
// (14 x 32 on AVX-512) and of KC, several K blocks, several NC blocks, and random mixes.
static const int64_t shapes[][3] = {
    {1, 1, 1},     {1, 7, 33},    {7, 1, 64},   {33, 100, 7},  {64, 64, 64},  {100, 33, 1000},
    {1000, 7, 33}, {15, 33, 17},  {14, 32, 16}, {29, 65, 433}, {3, 1000, 100}, {13, 31, 1},
    {47, 97, 300}, {64, 10, 256}, {2, 3, 0},    {100, 100, 100},
};

static void run_shapes(LlvmGemm *g, bool ta, bool tb, int nrandom) {
    static const float ab[][2] = {{1, 0}, {0.5f, 1.5f}, {-2, 0}, {1, 1}};
    int nfixed = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < nfixed + nrandom; i++) {
        Case cs;
        if (i < nfixed)
            cs.m = shapes[i][0], cs.n = shapes[i][1], cs.k = shapes[i][2];
        else   // random mixes, kept small enough for the reference loop
            cs.m = 1 + (int64_t)((frand() + 1) * 90), cs.n = 1 + (int64_t)((frand() + 1) * 120),
            cs.k = 1 + (int64_t)((frand() + 1) * 450);
        cs.alpha = ab[i % 4][0], cs.beta = ab[i % 4][1];
        cs.bias = (i / 2) % 2, cs.relu = (i / 4) % 2;
        cs.threads = 1 + i % 2;
        check(g, ta, tb, cs);
    }
}

Test(gemm, nn) { run_shapes(gemm, false, false, 10); }
Test(gemm, nt) { run_shapes(gemm, false, true, 10); }
Test(gemm, tn) { run_shapes(gemm, true, false, 10); }
Test(gemm, tt) { run_shapes(gemm, true, true, 6); }

// Every epilogue on one shape, both thread counts.
Test(gemm, epilogues) {
    for (int e = 0; e < 4; e++)
        for (int t = 1; t <= 2; t++)
            check(gemm, e & 1, e & 2, (Case){77, 90, 500, 0.75f, e & 1 ? 0.f : -1.f, e & 1, (e >> 1) & 1, t});
    for (int e = 0; e < 4; e++)
        check(gemm, false, false, (Case){31, 45, 20, 1, 0.5f, e & 1, e & 2, 2});
}

// One element, one thread, one K order: 1, 2 and 3 parts give the same bits.
Test(gemm, deterministic_across_threads) {
    int64_t m = 203, n = 150, k = 900;
    float *a = rand_matrix(m * k), *b = rand_matrix(k * n), *bias = rand_matrix(n);
    float *c[3];
    LlvmGemmSpec spec = {.trans_b = true, .bias = true, .relu = true};
    for (int t = 0; t < 3; t++) {
        c[t] = calloc((size_t)(m * n), sizeof(float));
        cr_assert(llvm_gemm_run(gemm, &spec, t + 1, m, n, k, 1, a, k, b, k, 0, c[t], n, bias));
    }
    cr_assert(memcmp(c[0], c[1], sizeof(float) * (size_t)(m * n)) == 0, "1 and 2 threads differ");
    cr_assert(memcmp(c[0], c[2], sizeof(float) * (size_t)(m * n)) == 0, "1 and 3 parts differ");
    free(a), free(b), free(bias), free(c[0]), free(c[1]), free(c[2]);
}

// The generated entry point on its own, cut into grids of parts by hand (more
// parts than tiles too): every grid gives the bits of the single part.
Test(gemm, part_grids_bitwise) {
    const LlvmGemmBlocking *blk = llvm_gemm_get_blocking(gemm);
    size_t ws = (llvm_gemm_work_size(blk) + 63) & ~(size_t)63;
    void *work = aligned_alloc(64, ws * 6);
    static const int64_t dims[][3] = {{45, 70, 50}, {1000, 7, 33}, {15, 300, 600}};
    static const int64_t grids[][2] = {{1, 1}, {2, 1}, {1, 2}, {3, 1}, {1, 3}, {2, 2}, {3, 2}, {6, 1}};
    for (int s = 0; s < 8; s++) {
        LlvmGemmSpec spec = {.trans_a = s & 1, .trans_b = s & 2, .bias = s & 4, .relu = s & 4};
        LlvmGemmFn fn = llvm_gemm_get(gemm, &spec);
        cr_assert(fn, "%s", llvm_jit_error(jit));
        int64_t m = dims[s % 3][0], n = dims[s % 3][1], k = dims[s % 3][2];
        float *a = rand_matrix(m * k), *b = rand_matrix(k * n), *bias = rand_matrix(n);
        float *ref = calloc((size_t)(m * n), 4), *c = calloc((size_t)(m * n), 4);
        for (int gi = 0; gi < 8; gi++) {
            int64_t pm = grids[gi][0], np = pm * grids[gi][1];
            LlvmGemmArgs args = {.a = a, .b = b, .c = gi ? c : ref, .bias = bias, .m = m, .n = n, .k = k,
                                 .lda = spec.trans_a ? m : k, .ldb = spec.trans_b ? k : n, .ldc = n,
                                 .alpha = 1.5f, .beta = 0, .work = work, .work_stride = (int64_t)ws, .parts_m = pm};
            rt_pool_run(pool, np, fn, &args);
            if (gi)
                cr_assert(memcmp(c, ref, sizeof(float) * (size_t)(m * n)) == 0, "spec %d grid %lldx%lld differs", s,
                          (long long)pm, (long long)(np / pm));
        }
        free(a), free(b), free(bias), free(ref), free(c);
    }
    free(work);
}

// K = 0: C = beta * C (+ epilogue); beta = 0 must not propagate NaN from C.
Test(gemm, k_zero_and_nan_c) {
    float c[6] = {NAN, NAN, NAN, 1, 2, 3}, bias[3] = {-1, 0, 1};
    LlvmGemmSpec spec = {.bias = true, .relu = true};
    cr_assert(llvm_gemm_run(gemm, &spec, 1, 2, 3, 0, 1, NULL, 1, NULL, 3, 0, c, 3, bias));
    float want[6] = {0, 0, 1, 0, 0, 1};
    for (int i = 0; i < 6; i++)
        cr_assert(c[i] == want[i], "c[%d] = %g, want %g", i, c[i], want[i]);
}

Test(gemm, bad_arguments_are_messages) {
    LlvmGemmSpec spec = {0};
    float x[4] = {0};
    cr_assert(!llvm_gemm_run(gemm, &spec, 1, 2, 2, 2, 1, x, 1, x, 2, 0, x, 2, NULL));   // lda < k
    cr_assert(strstr(llvm_jit_error(jit), "lda") != NULL, "message: %s", llvm_jit_error(jit));
    spec.bias = true;
    cr_assert(!llvm_gemm_run(gemm, &spec, 1, 2, 2, 2, 1, x, 2, x, 2, 0, x, 2, NULL));
    cr_assert(strstr(llvm_jit_error(jit), "bias") != NULL);
}

// The narrower code paths, run on this host when it has their instructions
// (their vector width and tile shape, with the host's codegen).
static void narrow_isa(LlvmIsa isa) {
    const LlvmHost *h = llvm_jit_host(jit);
    if (isa == LLVM_ISA_AVX2 && !(h->avx2 && h->fma))
        cr_skip_test("host has no AVX2+FMA");
    LlvmGemmBlocking blk = llvm_gemm_blocking(isa, isa != LLVM_ISA_GENERIC);
    LlvmGemm *g = llvm_gemm_create(jit, &blk, pool);
    cr_assert(g);
    for (int e = 0; e < 4; e++) {
        bool ta = e & 1, tb = e & 2;
        check(g, ta, tb, (Case){37, 41, 150, 1, 0, false, false, 2});
        check(g, ta, tb, (Case){6, 16, 8, 0.5f, 2, true, true, 1});
        check(g, ta, tb, (Case){1, 1000, 7, 1, 1, true, false, 2});
        check(g, ta, tb, (Case){100, 5, 700, -1, 0, false, true, 1});
    }
    llvm_gemm_destroy(g);
}
// Other blockings of the same ISA: small KC and NC (many K and N blocks), an
// MC of several slivers (the BLIS loop order), a k loop unrolled by 3 (its
// remainder loop), prefetching, B always / never read in place, a short-sliver
// kernel just below MR rows / none (mredge > mr: ignored).
Test(gemm, other_blockings) {
    LlvmGemmBlocking base = *llvm_gemm_get_blocking(gemm);
    for (int v = 0; v < 2; v++) {
        LlvmGemmBlocking blk = base;
        blk.kc = 3 * blk.vec, blk.nc = 2 * blk.nr, blk.mc = 3 * blk.mr, blk.unroll = 3;
        blk.prefetch = 4 * v, blk.bdirect = v ? 1000 : 0, blk.mredge = v ? blk.mr - 1 : blk.mr + 3;
        LlvmGemm *g = llvm_gemm_create(jit, &blk, pool);
        cr_assert(g);
        for (int e = v; e < 4; e += 2) {   // nn, nt with one blocking; tt, tn with the other
            bool ta = e & 1, tb = (e == 1 || e == 2);
            check(g, ta, tb, (Case){50, 150, 130, 1, 0.5f, true, true, 2});
            check(g, ta, tb, (Case){7, 33, 100, -1, 0, false, false, 1});
        }
        llvm_gemm_destroy(g);
    }
}

// The last sliver of M runs the short kernel when it has at most mredge rows
// (8 of 14 on AVX-512): remainders just at and just past mredge, alone and after
// full slivers, with every epilogue and beta.
Test(gemm, short_edge_sliver) {
    const LlvmGemmBlocking *blk = llvm_gemm_get_blocking(gemm);
    int64_t e = blk->mredge > 0 ? blk->mredge : 1, mr = blk->mr;
    const int64_t ms[] = {e, e + 1, mr + e, mr + e + 1, 4 * mr + e, 64};
    for (int i = 0; i < 6; i++)
        for (int s = 0; s < 4; s++)
            check(gemm, s & 1, s & 2, (Case){ms[i], 40 + 9 * i, 30 + 50 * s, 1, i % 2 ? 0.5f : 0, i % 2 == 0, s > 1, 1 + s % 2});
}

Test(gemm, avx2_path) { narrow_isa(LLVM_ISA_AVX2); }
Test(gemm, generic_path) { narrow_isa(LLVM_ISA_GENERIC); }

Test(gemm, blocking_from_caches) {
    LlvmGemmBlocking b = llvm_gemm_blocking(LLVM_ISA_AVX512, true);
    cr_assert(b.vec == 16 && b.mr == 14 && b.nr == 32);
    cr_assert(b.kc >= 64 && b.kc % b.vec == 0 && b.nc >= b.nr && b.nc % b.nr == 0, "kc %d nc %d", b.kc, b.nc);
    // Work is cut along M when M is large, along N when M is one tile.
    cr_assert(llvm_gemm_split(&b, 1024, 32, 1024, 2) == 2);
    cr_assert(llvm_gemm_split(&b, 14, 1024, 256, 2) == 1);
    // Small products stay on one thread.
    cr_assert(llvm_gemm_parts(&b, 64, 64, 64, 2) == 1);
    cr_assert(llvm_gemm_parts(&b, 1024, 1024, 1024, 2) == 2);
    cr_assert(llvm_gemm_parts(&b, 1, 1, 1 << 30, 2) == 1);   // one tile
}

Test(gemm, host_features) {
    LlvmHost h;
    llvm_host_from_features(&h, "x", "+sse2,+avx,+avx2,+fma,-avx512f");
    cr_assert(h.isa == LLVM_ISA_AVX2 && h.vec_bits == 256);
    llvm_host_from_features(&h, "x", "+sse2,+avx2,-fma,+avx512fp16");
    cr_assert(h.isa == LLVM_ISA_GENERIC && !h.avx512f);
    llvm_host_from_features(&h, "x", "+avx512f,+avx2,+fma,+avx512bf16");
    cr_assert(h.isa == LLVM_ISA_AVX512 && h.avx512bf16);
}

// The object of a module, added to a second JIT (the compiled-code cache path),
// computes the same thing; the printed IR shows the vector FMAs.
Test(gemm, object_cache_round_trip) {
    LlvmGemmSpec spec = {.bias = true};
    const LlvmGemmBlocking *blk = llvm_gemm_get_blocking(gemm);
    LLVMModuleRef mod = llvm_jit_new_module(jit, "cached");
    cr_assert(llvm_gemm_emit(mod, blk, &spec, "cached_gemm"));
    cr_assert(llvm_jit_optimize(jit, mod, LLVM_GEMM_PASSES), "%s", llvm_jit_error(jit));
    char *ir = llvm_print_module(mod);
    cr_assert(strstr(ir, blk->fma ? "@llvm.fma.v" : "@llvm.fmuladd.v") != NULL);
    free(ir);
    void *obj;
    size_t len;
    cr_assert(llvm_jit_emit_object(jit, mod, &obj, &len), "%s", llvm_jit_error(jit));
    LLVMDisposeModule(mod);
    char err[256];
    LlvmJit *j2 = llvm_jit_create(err, sizeof err);
    cr_assert(j2, "%s", err);
    cr_assert(llvm_jit_add_object(j2, obj, len), "%s", llvm_jit_error(j2));
    free(obj);
    LlvmGemmFn fn = (LlvmGemmFn)llvm_jit_lookup(j2, "cached_gemm");
    cr_assert(fn, "%s", llvm_jit_error(j2));
    cr_assert(llvm_jit_lookup(j2, "no_such_symbol") == NULL);
    cr_assert(strstr(llvm_jit_error(j2), "no_such_symbol") != NULL);

    int64_t m = 20, n = 40, k = 50;
    float *a = rand_matrix(m * k), *b = rand_matrix(k * n), *bias = rand_matrix(n);
    float *c1 = calloc((size_t)(m * n), 4), *c2 = calloc((size_t)(m * n), 4);
    size_t ws = (llvm_gemm_work_size(blk) + 63) & ~(size_t)63;
    void *work = aligned_alloc(64, ws);
    LlvmGemmArgs args = {.a = a, .b = b, .c = c1, .bias = bias, .m = m, .n = n, .k = k, .lda = k, .ldb = n,
                         .ldc = n, .alpha = 1, .beta = 0, .work = work, .work_stride = (int64_t)ws, .parts_m = 1};
    fn(&args, 0, 1);
    cr_assert(llvm_gemm_run(gemm, &spec, 1, m, n, k, 1, a, k, b, n, 0, c2, n, bias));
    cr_assert(memcmp(c1, c2, sizeof(float) * (size_t)(m * n)) == 0);
    free(a), free(b), free(bias), free(c1), free(c2), free(work);
    llvm_jit_destroy(j2);
}

// ---------------------------------------------------------------------------
// The pool on its own.

typedef struct Counts {
    _Atomic int hits[1000];
    _Atomic int calls;
} Counts;

static void count_task(void *ctx, int64_t i, int64_t n) {
    Counts *c = ctx;
    cr_assert(i >= 0 && i < n);
    atomic_fetch_add(&c->hits[i], 1);
    atomic_fetch_add(&c->calls, 1);
}

Test(pool, every_task_once) {
    RtPool *p = rt_pool_create(3);
    cr_assert(p && rt_pool_size(p) == 3);
    static Counts c;
    for (int64_t n = 1; n <= 1000; n = n * 3 + 1) {
        memset(&c, 0, sizeof c);
        rt_pool_run(p, n, count_task, &c);
        cr_assert(atomic_load(&c.calls) == n);
        for (int64_t i = 0; i < n; i++)
            cr_assert(atomic_load(&c.hits[i]) == 1, "task %lld ran %d times", (long long)i, atomic_load(&c.hits[i]));
    }
    // Many small jobs back to back, of alternating sizes: a worker late for
    // one job must not run a task of the next one.
    for (int r = 0; r < 4000; r++) {
        int64_t n = r % 2 ? 7 : 2;
        memset(&c, 0, sizeof c);
        rt_pool_run(p, n, count_task, &c);
        cr_assert(atomic_load(&c.calls) == n, "job %d: %d calls for %lld tasks", r, atomic_load(&c.calls),
                  (long long)n);
    }
    rt_pool_destroy(p);
    cr_assert(rt_cpu_count() >= 1);
}

static void sum_range(void *ctx, int64_t begin, int64_t end) {
    _Atomic int64_t *s = ctx;
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(s, i);
}

Test(pool, parallel_for_covers_range) {
    RtPool *p = rt_pool_create(0);
    cr_assert(p);
    for (int64_t n = 0; n < 300; n += 37) {
        _Atomic int64_t s = 0;
        rt_pool_parallel_for(p, n, 10, sum_range, &s);
        cr_assert(atomic_load(&s) == n * (n - 1) / 2);
    }
    _Atomic int64_t s = 0;
    rt_pool_parallel_for(NULL, 100, 1, sum_range, &s);   // no pool: the caller does it
    cr_assert(atomic_load(&s) == 4950);
    rt_pool_destroy(p);
}

static RtPool *nested_pool;
static void outer_task(void *ctx, int64_t i, int64_t n) {
    (void)i, (void)n;
    rt_pool_run(nested_pool, 4, count_task, ctx);   // runs inline, no deadlock
}

Test(pool, nested_run_does_not_deadlock) {
    nested_pool = rt_pool_create(2);
    static Counts c;
    memset(&c, 0, sizeof c);
    rt_pool_run(nested_pool, 3, outer_task, &c);
    cr_assert(atomic_load(&c.calls) == 12);
    rt_pool_destroy(nested_pool);
}
