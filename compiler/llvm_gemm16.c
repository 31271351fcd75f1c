// llvm_gemm16.c — bf16 GEMM with f32 accumulation: C = bf16(op(A)) · bf16(op(B)).
//
// The operands arrive as f32 (the step's precision casts already hold bf16 values, so the
// conversion is exact there) and are rounded to bf16, ties to even, while they are packed.
// Packing puts pairs of consecutive k next to each other — the layout of vdpbf16ps, which
// multiplies two bf16 pairs per f32 lane and adds both products to the lane:
//   A sliver: for each k pair p, MR 32-bit pairs (row i: A[i][2p] low, A[i][2p+1] high);
//   B panel:  for each k pair p, 32 32-bit pairs (column j: B[2p][j] low, B[2p+1][j] high).
// The micro-kernel (MR x 32 tile of C in 2*MR zmm accumulators; each step broadcasts one
// A pair and issues two vdpbf16ps) is generated as LLVM IR with
// llvm.x86.avx512bf16.dpbf16ps.512, only when the host has AVX512-BF16.  Elsewhere a C
// kernel computes the same sums on the same packed data (correct, not fast).  Rounding is
// done with integer operations here, so no target needs __truncsfbf2.
//
// Blocking: B is packed whole (K x N as bf16), in parallel; then each task owns a range
// of MR-row slivers and, K block by K block (KCP pairs: the block of B stays in L2 while
// the slivers sweep it), packs its sliver of A and runs the kernel over every panel.
// Edge tiles go through a small buffer.  vdpbf16ps treats bf16 subnormals as zero and
// flushes subnormal results (Intel SDM), so tiny values may differ from the interpreter.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "llvm.h"
#include "rt.h"

enum { MR = 12, NR = 32, KCP = 256 };   // KCP k pairs per block: 12 x 256 x 4 B of A in L1

typedef void (*Kern16)(const uint32_t *ap, const uint32_t *bp, float *c, int64_t ldc, int64_t kp, int64_t add);

struct LlvmGemm16 {
    LlvmJit *jit;
    RtPool *pool;
    pthread_mutex_t mu;   // guards the JIT and the workspace
    Kern16 kern;          // NULL until first use
    bool native;          // kern uses vdpbf16ps
    uint32_t *work;       // packed B, then one A sliver per task
    size_t work_bytes;
    unsigned id;
};

static uint16_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return 0x7fc0;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static float bf16_float(uint32_t h) {
    uint32_t u = h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// ---- the micro-kernel as LLVM IR ----

static LLVMValueRef emit_kernel(LLVMModuleRef mod, const char *name) {
    LLVMContextRef cx = LLVMGetModuleContext(mod);
    LLVMTypeRef i1 = LLVMInt1TypeInContext(cx), i32 = LLVMInt32TypeInContext(cx), i64 = LLVMInt64TypeInContext(cx);
    LLVMTypeRef f32 = LLVMFloatTypeInContext(cx), ptr = LLVMPointerTypeInContext(cx, 0);
    LLVMTypeRef vf = LLVMVectorType(f32, 16), vi = LLVMVectorType(i32, 16);
    LLVMTypeRef vb = LLVMVectorType(LLVMBFloatTypeInContext(cx), 32);
    LLVMTypeRef params[6] = {ptr, ptr, ptr, i64, i64, i64};
    LLVMValueRef fn = LLVMAddFunction(mod, name, LLVMFunctionType(LLVMVoidTypeInContext(cx), params, 6, 0));
    const char *iname = "llvm.x86.avx512bf16.dpbf16ps.512";
    unsigned iid = LLVMLookupIntrinsicID(iname, strlen(iname));
    if (!iid)
        return NULL;
    LLVMValueRef dp = LLVMGetIntrinsicDeclaration(mod, iid, NULL, 0);
    LLVMTypeRef dpt = LLVMIntrinsicGetType(cx, iid, NULL, 0);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(cx);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cx, fn, "entry");
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(cx, fn, "loop");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cx, fn, "done");
    LLVMValueRef ap = LLVMGetParam(fn, 0), bp = LLVMGetParam(fn, 1), c = LLVMGetParam(fn, 2);
    LLVMValueRef ldc = LLVMGetParam(fn, 3), kp = LLVMGetParam(fn, 4);
    LLVMPositionBuilderAtEnd(b, entry);
    LLVMValueRef add = LLVMBuildICmp(b, LLVMIntNE, LLVMGetParam(fn, 5), LLVMConstInt(i64, 0, 0), "");
    (void)i1;
    LLVMValueRef cp[MR][2], init[MR][2], acc[MR][2];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < 2; v++) {
            LLVMValueRef off = LLVMBuildAdd(b, LLVMBuildMul(b, ldc, LLVMConstInt(i64, (unsigned)i, 0), ""),
                                            LLVMConstInt(i64, (unsigned)(16 * v), 0), "");
            cp[i][v] = LLVMBuildGEP2(b, f32, c, &off, 1, "");
            LLVMValueRef old = LLVMBuildLoad2(b, vf, cp[i][v], "");
            LLVMSetAlignment(old, 4);
            init[i][v] = LLVMBuildSelect(b, add, old, LLVMConstNull(vf), "");
        }
    LLVMBuildBr(b, loop);
    LLVMPositionBuilderAtEnd(b, loop);
    LLVMValueRef p = LLVMBuildPhi(b, i64, "p");
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < 2; v++)
            acc[i][v] = LLVMBuildPhi(b, vf, "");
    LLVMValueRef boff = LLVMBuildMul(b, p, LLVMConstInt(i64, NR, 0), ""), bv[2];
    for (int v = 0; v < 2; v++) {
        LLVMValueRef o = LLVMBuildAdd(b, boff, LLVMConstInt(i64, (unsigned)(16 * v), 0), "");
        LLVMValueRef x = LLVMBuildLoad2(b, vb, LLVMBuildGEP2(b, i32, bp, &o, 1, ""), "");
        LLVMSetAlignment(x, 64);
        bv[v] = x;
    }
    LLVMValueRef aoff = LLVMBuildMul(b, p, LLVMConstInt(i64, MR, 0), ""), next[MR][2];
    for (int i = 0; i < MR; i++) {
        LLVMValueRef o = LLVMBuildAdd(b, aoff, LLVMConstInt(i64, (unsigned)i, 0), "");
        LLVMValueRef a = LLVMBuildLoad2(b, i32, LLVMBuildGEP2(b, i32, ap, &o, 1, ""), "");
        LLVMValueRef s = LLVMBuildInsertElement(b, LLVMGetUndef(vi), a, LLVMConstInt(i32, 0, 0), "");
        s = LLVMBuildShuffleVector(b, s, LLVMGetUndef(vi), LLVMConstNull(vi), "");
        s = LLVMBuildBitCast(b, s, vb, "");
        for (int v = 0; v < 2; v++) {
            LLVMValueRef args[3] = {acc[i][v], s, bv[v]};
            next[i][v] = LLVMBuildCall2(b, dpt, dp, args, 3, "");
        }
    }
    LLVMValueRef p1 = LLVMBuildAdd(b, p, LLVMConstInt(i64, 1, 0), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntULT, p1, kp, ""), loop, done);
    LLVMValueRef zero = LLVMConstInt(i64, 0, 0);
    LLVMBasicBlockRef from[2] = {entry, loop};
    LLVMValueRef pv[2] = {zero, p1};
    LLVMAddIncoming(p, pv, from, 2);
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < 2; v++) {
            LLVMValueRef in[2] = {init[i][v], next[i][v]};
            LLVMAddIncoming(acc[i][v], in, from, 2);
        }
    LLVMPositionBuilderAtEnd(b, done);
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < 2; v++)
            LLVMSetAlignment(LLVMBuildStore(b, next[i][v], cp[i][v]), 4);
    LLVMBuildRetVoid(b);
    LLVMDisposeBuilder(b);
    return fn;
}

// The same sums in C, for hosts without AVX512-BF16 (kp >= 1).
static void kern_c(const uint32_t *ap, const uint32_t *bp, float *c, int64_t ldc, int64_t kp, int64_t add) {
    float acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            acc[i][j] = add ? c[i * ldc + j] : 0;
    for (int64_t p = 0; p < kp; p++)
        for (int i = 0; i < MR; i++) {
            uint32_t a = ap[p * MR + i];
            float a0 = bf16_float(a & 0xffff), a1 = bf16_float(a >> 16);
            for (int j = 0; j < NR; j++) {
                uint32_t x = bp[p * NR + j];
                acc[i][j] += a0 * bf16_float(x & 0xffff) + a1 * bf16_float(x >> 16);
            }
        }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            c[i * ldc + j] = acc[i][j];
}

LlvmGemm16 *llvm_gemm16_create(LlvmJit *jit, RtPool *pool, bool portable) {
    static unsigned next_id;
    LlvmGemm16 *g = calloc(1, sizeof *g);
    if (!g) {
        llvm_jit_set_error(jit, "out of memory");
        return NULL;
    }
    g->jit = jit;
    g->pool = pool;
    if (portable)
        g->kern = kern_c;
    g->id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);
    pthread_mutex_init(&g->mu, NULL);
    return g;
}

void llvm_gemm16_destroy(LlvmGemm16 *g) {
    if (!g)
        return;
    pthread_mutex_destroy(&g->mu);
    free(g->work);
    free(g);
}

static bool kernel_locked(LlvmGemm16 *g) {
    if (g->kern)
        return true;
    if (!llvm_jit_host(g->jit)->avx512bf16) { // never emit the intrinsic for a CPU without it
        g->kern = kern_c;
        return true;
    }
    char name[64];
    snprintf(name, sizeof name, "ltl_bf16gemm%u", g->id);
    LLVMModuleRef mod = llvm_jit_new_module(g->jit, name);
    if (!emit_kernel(mod, name)) {
        LLVMDisposeModule(mod);
        llvm_jit_set_error(g->jit, "bf16 GEMM: LLVM has no %s", "llvm.x86.avx512bf16.dpbf16ps.512");
        return false;
    }
    if (!llvm_jit_optimize(g->jit, mod, LLVM_GEMM_PASSES)) {
        LLVMDisposeModule(mod);
        return false;
    }
    if (!llvm_jit_add_module(g->jit, mod))
        return false;
    g->kern = (Kern16)llvm_jit_lookup(g->jit, name);
    g->native = g->kern != NULL;
    return g->kern != NULL;
}

bool llvm_gemm16_native(LlvmGemm16 *g) {
    pthread_mutex_lock(&g->mu);
    bool ok = kernel_locked(g) && g->native;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

typedef struct Job {
    Kern16 kern;
    bool ta, tb;
    int64_t m, n, k, kp, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    uint32_t *bpack, *apack;   // apack: one KCP x MR sliver per task
    int64_t slivers, panels;
} Job;

static float elem_a(const Job *j, int64_t i, int64_t k) {
    if (i >= j->m || k >= j->k)
        return 0;
    return j->ta ? j->a[k * j->lda + i] : j->a[i * j->lda + k];
}

static float elem_b(const Job *j, int64_t k, int64_t c) {
    if (c >= j->n || k >= j->k)
        return 0;
    return j->tb ? j->b[c * j->ldb + k] : j->b[k * j->ldb + c];
}

static uint32_t pair(float lo, float hi) { return bf16_bits(lo) | (uint32_t)bf16_bits(hi) << 16; }

// Task `part`: panels part, part + nparts, ... of B, packed whole.
static void pack_b(void *arg, int64_t part, int64_t nparts) {
    const Job *j = arg;
    for (int64_t q = part; q < j->panels; q += nparts) {
        uint32_t *dst = j->bpack + q * j->kp * NR;
        for (int64_t p = 0; p < j->kp; p++)
            for (int c = 0; c < NR; c++)
                dst[p * NR + c] = pair(elem_b(j, 2 * p, q * NR + c), elem_b(j, 2 * p + 1, q * NR + c));
    }
}

static void compute(void *arg, int64_t part, int64_t nparts) {
    const Job *j = arg;
    int64_t s0 = j->slivers * part / nparts, s1 = j->slivers * (part + 1) / nparts;
    uint32_t *ap = j->apack + part * KCP * MR;
    float tile[MR * NR];
    for (int64_t p0 = 0; p0 < j->kp; p0 += KCP) {
        int64_t kb = j->kp - p0 < KCP ? j->kp - p0 : KCP;
        for (int64_t s = s0; s < s1; s++) {
            int64_t r0 = s * MR;
            for (int64_t p = 0; p < kb; p++)
                for (int i = 0; i < MR; i++)
                    ap[p * MR + i] = pair(elem_a(j, r0 + i, 2 * (p0 + p)), elem_a(j, r0 + i, 2 * (p0 + p) + 1));
            for (int64_t q = 0; q < j->panels; q++) {
                const uint32_t *bp = j->bpack + (q * j->kp + p0) * NR;
                int64_t c0 = q * NR, rows = j->m - r0 < MR ? j->m - r0 : MR, cols = j->n - c0 < NR ? j->n - c0 : NR;
                float *c = j->c + r0 * j->ldc + c0;
                if (rows == MR && cols == NR) {
                    j->kern(ap, bp, c, j->ldc, kb, p0 > 0);
                    continue;
                }
                for (int64_t i = 0; p0 > 0 && i < rows; i++) // an edge tile, through the buffer
                    memcpy(tile + i * NR, c + i * j->ldc, sizeof *c * (size_t)cols);
                j->kern(ap, bp, tile, NR, kb, p0 > 0);
                for (int64_t i = 0; i < rows; i++)
                    memcpy(c + i * j->ldc, tile + i * NR, sizeof *c * (size_t)cols);
            }
        }
    }
}

bool llvm_gemm16_run(LlvmGemm16 *g, bool trans_a, bool trans_b, int nthreads, int64_t m, int64_t n, int64_t k,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc) {
    int64_t acols = trans_a ? m : k, bcols = trans_b ? k : n;
    if (m < 0 || n < 0 || k < 0 || lda < (acols > 1 ? acols : 1) || ldb < (bcols > 1 ? bcols : 1) ||
        ldc < (n > 1 ? n : 1)) {
        llvm_jit_set_error(g->jit, "bf16 GEMM: bad sizes m=%lld n=%lld k=%lld lda=%lld ldb=%lld ldc=%lld",
                           (long long)m, (long long)n, (long long)k, (long long)lda, (long long)ldb, (long long)ldc);
        return false;
    }
    if (m == 0 || n == 0)
        return true;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            memset(c + i * ldc, 0, sizeof *c * (size_t)n);
        return true;
    }
    pthread_mutex_lock(&g->mu);
    if (!kernel_locked(g)) {
        pthread_mutex_unlock(&g->mu);
        return false;
    }
    Job j = {.kern = g->kern, .ta = trans_a, .tb = trans_b, .m = m, .n = n, .k = k, .kp = (k + 1) / 2,
             .lda = lda, .ldb = ldb, .ldc = ldc, .a = a, .b = b, .c = c};
    j.slivers = (m + MR - 1) / MR;
    j.panels = (n + NR - 1) / NR;
    int64_t threads = nthreads > 0 ? nthreads : g->pool ? rt_pool_size(g->pool) : 1;
    // about 1 MFLOP a task at least, and no more tasks than slivers
    int64_t parts = g->pool ? 1 + 2 * m * n * k / 1000000 : 1;
    parts = parts < threads ? parts : threads;
    parts = parts < j.slivers ? parts : j.slivers;
    size_t bwords = (size_t)(j.panels * j.kp * NR), need = 4 * (bwords + (size_t)(parts * KCP * MR)) + 64;
    if (g->work_bytes < need) {
        free(g->work);
        g->work_bytes = 0;
        if (!(g->work = aligned_alloc(64, (need + 63) & ~(size_t)63))) {
            pthread_mutex_unlock(&g->mu);
            llvm_jit_set_error(g->jit, "bf16 GEMM: out of memory for the packing buffers");
            return false;
        }
        g->work_bytes = need;
    }
    j.bpack = g->work;
    j.apack = g->work + ((bwords + 15) & ~(size_t)15);
    if (parts == 1) {
        pack_b(&j, 0, 1);
        compute(&j, 0, 1);
    } else {
        rt_pool_run(g->pool, parts, pack_b, &j);
        rt_pool_run(g->pool, parts, compute, &j);
    }
    pthread_mutex_unlock(&g->mu);
    return true;
}
