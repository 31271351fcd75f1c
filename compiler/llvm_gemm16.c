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
// done with integer operations here, or with vcvtneps2bf16 on hosts with AVX512-BF16
// (pack_pairs16), so no target needs __truncsfbf2.
//
// On hosts with AMX (amx-bf16, and the kernel grants this process the tile state), an AMX
// kernel does the same sums 16 x 16 x 32 at a time (tdpbf16ps): 2 x 2 tiles of C, A packed
// row-major in pairs, B in the same panels.  It is C with GCC's AMX intrinsics behind a
// target attribute (the tile code has nothing to specialise at JIT time), used only after
// the CPU features and arch_prctl(ARCH_REQ_XCOMP_PERM) say it may run.
//
// Blocking: B is packed whole (K x N as bf16), in parallel; then each task owns a range
// of MR-row slivers and, K block by K block (KCP pairs: the block of B stays in L2 while
// the slivers sweep it), packs its sliver of A and runs the kernel over every panel.
// Edge tiles go through a small buffer.  vdpbf16ps treats bf16 subnormals as zero and
// flushes subnormal results (Intel SDM), so tiny values may differ from the interpreter.
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "llvm.h"
#include "rt.h"

enum { MR = 12, NR = 32, KCP = 256 };   // KCP k pairs per block: 12 x 256 x 4 B of A in L1
enum { AMX_MR = 32, AMX_KQ = 16 };       // AMX: 32-row slivers, K in steps of 16 pairs

typedef void (*Kern16)(const uint32_t *ap, const uint32_t *bp, float *c, int64_t ldc, int64_t kp, int64_t add);

struct LlvmGemm16 {
    LlvmJit *jit;
    RtPool *pool;
    pthread_mutex_t mu;   // guards the JIT and the workspace
    Kern16 kern;          // NULL until first use
    LlvmGemm16Kind want;  // the best kernel allowed
    const char *name;     // of the kernel chosen: "amx", "vdpbf16ps", "c"
    bool amx;             // kern is kern_amx: MR 32, A packed row-major
    uint32_t *work;       // packed B, then one A sliver per task
    size_t work_bytes;
    unsigned id;
};

static uint16_t bf16_bits(float f) { // branch-free, so the packing loops vectorise
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
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
    LLVMTypeRef i32 = LLVMInt32TypeInContext(cx), i64 = LLVMInt64TypeInContext(cx);
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

// AMX: 8 tiles of 16 rows x 64 bytes (C: 0-3, A: 4-5, B: 6-7), loaded once per task.
typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileCfg;

// Static data: GCC's ldtilecfg tells the compiler it reads one byte, so the stores that
// would fill a local configuration can be dropped as dead.
static const TileCfg tile_cfg = {.palette = 1,
                                 .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
                                 .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target("amx-tile"))) static void amx_begin(void) { _tile_loadconfig(&tile_cfg); }

__attribute__((target("amx-tile"))) static void amx_end(void) { _tile_release(); }

// A: 32 rows of kp pairs (row stride kp), kp a multiple of 16; B: the panel (row stride NR).
__attribute__((target("amx-tile,amx-bf16"))) static void kern_amx(const uint32_t *ap, const uint32_t *bp, float *c,
                                                                    int64_t ldc, int64_t kp, int64_t add) {
    if (add) {
        _tile_loadd(0, c, ldc * 4);
        _tile_loadd(1, c + 16, ldc * 4);
        _tile_loadd(2, c + 16 * ldc, ldc * 4);
        _tile_loadd(3, c + 16 * ldc + 16, ldc * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t q = 0; q < kp; q += AMX_KQ) {
        _tile_loadd(4, ap + q, kp * 4);
        _tile_loadd(5, ap + 16 * kp + q, kp * 4);
        _tile_loadd(6, bp + q * NR, NR * 4);
        _tile_loadd(7, bp + q * NR + 16, NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c + 16, ldc * 4);
    _tile_stored(2, c + 16 * ldc, ldc * 4);
    _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

// AMX only when LLVM sees the features (and AVX512-BF16, every AMX CPU has it) and Linux
// grants the tile state (XTILEDATA, 18).
static bool amx_usable(const LlvmHost *h) {
    if (!h->features || !strstr(h->features, "+amx-bf16") || !strstr(h->features, "+amx-tile") ||
        !h->avx512bf16) // the packing converts with vcvtneps2bf16
        return false;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18) == 0;
}

LlvmGemm16 *llvm_gemm16_create(LlvmJit *jit, RtPool *pool, LlvmGemm16Kind want) {
    static unsigned next_id;
    LlvmGemm16 *g = calloc(1, sizeof *g);
    if (!g) {
        llvm_jit_set_error(jit, "out of memory");
        return NULL;
    }
    g->jit = jit;
    g->pool = pool;
    g->want = want;
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
    if (g->want == LLVM_GEMM16_AMX && amx_usable(llvm_jit_host(g->jit))) {
        g->kern = kern_amx;
        g->name = "amx";
        g->amx = true;
        return true;
    }
    // never emit the intrinsic for a CPU without it
    if (g->want == LLVM_GEMM16_PORTABLE || !llvm_jit_host(g->jit)->avx512bf16) {
        g->kern = kern_c;
        g->name = "c";
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
    g->name = "vdpbf16ps";
    return g->kern != NULL;
}

const char *llvm_gemm16_kernel(LlvmGemm16 *g) {
    pthread_mutex_lock(&g->mu);
    const char *name = kernel_locked(g) ? g->name : NULL;
    pthread_mutex_unlock(&g->mu);
    return name;
}

typedef struct Job {
    Kern16 kern;
    bool amx;                  // A row-major in pairs, AMX tile config per task
    bool vpack;                // the host has AVX512-BF16: pack with pack_pairs16
    int64_t mr;                // rows per sliver
    int64_t m, n, k, kp, ldc;  // kp: k pairs (a multiple of 16 with AMX)
    const float *a, *b;        // op(A)(i, k) = a[i * ai + k * ak]; op(B)(k, j) = b[k * bk + j * bj]
    int64_t ai, ak, bk, bj;
    float *c;
    uint32_t *bpack, *apack;   // apack: one KCP x mr sliver per task
    int64_t slivers, panels;
} Job;

static uint32_t pair(float lo, float hi) { return bf16_bits(lo) | (uint32_t)bf16_bits(hi) << 16; }

// Pairs (X(r, 2p), X(r, 2p + 1)) for rows r0.. r0 + rows and pairs p0 .. p0 + np of a matrix
// X(r, k) = x[r * rs + k * ks] with nr rows and nk columns (zero outside) into
// dst[r * drs + p * dps].
static void pack_pairs(uint32_t *dst, int64_t drs, int64_t dps, const float *x, int64_t rs, int64_t ks, int64_t nr,
                       int64_t nk, int64_t r0, int64_t rows, int64_t p0, int64_t np) {
    if (rs == 1 && r0 + rows <= nr) { // rows side by side in memory: walk them in the inner loop
        for (int64_t p = 0; p < np; p++) {
            int64_t k0 = 2 * (p0 + p);
            const float *lo = x + k0 * ks + r0, *hi = lo + ks;
            uint32_t *d = dst + p * dps;
            if (k0 + 1 < nk && drs == 1)
                for (int64_t r = 0; r < rows; r++)
                    d[r] = pair(lo[r], hi[r]);
            else
                for (int64_t r = 0; r < rows; r++)
                    d[r * drs] = pair(k0 < nk ? lo[r] : 0, k0 + 1 < nk ? hi[r] : 0);
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + (r0 + r) * rs;
        uint32_t *d = dst + r * drs;
        if (r0 + r >= nr) {
            for (int64_t p = 0; p < np; p++)
                d[p * dps] = 0;
            continue;
        }
        int64_t full = (nk / 2 - p0) < np ? nk / 2 - p0 : np; // pairs with both k inside
        if (full < 0)
            full = 0;
        for (int64_t p = 0; p < full; p++)
            d[p * dps] = pair(row[(2 * (p0 + p)) * ks], row[(2 * (p0 + p) + 1) * ks]);
        for (int64_t p = full; p < np; p++) {
            int64_t k0 = 2 * (p0 + p);
            d[p * dps] = pair(k0 < nk ? row[k0 * ks] : 0, k0 + 1 < nk ? row[(k0 + 1) * ks] : 0);
        }
    }
}

static void pack_pairs16(uint32_t *dst, int64_t drs, int64_t dps, const float *x, int64_t rs, int64_t ks, int64_t nr,
                         int64_t nk, int64_t r0, int64_t rows, int64_t p0, int64_t np);

// Task `part`: panels part, part + nparts, ... of B, packed whole: panel q, pair p, column c
// at bpack[(q * kp + p) * NR + c].
static void pack_b(void *arg, int64_t part, int64_t nparts) {
    const Job *j = arg;
    for (int64_t q = part; q < j->panels; q += nparts)
        (j->vpack ? pack_pairs16 : pack_pairs)(j->bpack + q * j->kp * NR, 1, NR, j->b, j->bj, j->bk, j->n, j->k,
                                               q * NR, NR, 0, j->kp);
}

static void compute(void *arg, int64_t part, int64_t nparts) {
    const Job *j = arg;
    int64_t mr = j->mr, s0 = j->slivers * part / nparts, s1 = j->slivers * (part + 1) / nparts;
    uint32_t *ap = j->apack + part * KCP * mr;
    float tile[AMX_MR * NR];
    if (j->amx)
        amx_begin();
    for (int64_t p0 = 0; p0 < j->kp; p0 += KCP) {
        int64_t kb = j->kp - p0 < KCP ? j->kp - p0 : KCP;
        for (int64_t s = s0; s < s1; s++) {
            int64_t r0 = s * mr;
            if (j->amx) // row r, pair p at ap[r * kb + p]
                pack_pairs16(ap, kb, 1, j->a, j->ai, j->ak, j->m, j->k, r0, mr, p0, kb);
            else // at ap[p * mr + r]
                (j->vpack ? pack_pairs16 : pack_pairs)(ap, 1, mr, j->a, j->ai, j->ak, j->m, j->k, r0, mr, p0, kb);
            for (int64_t q = 0; q < j->panels; q++) {
                const uint32_t *bp = j->bpack + (q * j->kp + p0) * NR;
                int64_t c0 = q * NR, rows = j->m - r0 < mr ? j->m - r0 : mr, cols = j->n - c0 < NR ? j->n - c0 : NR;
                float *c = j->c + r0 * j->ldc + c0;
                if (rows == mr && cols == NR) {
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
    if (j->amx)
        amx_end();
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
    Job j = {.kern = g->kern, .amx = g->amx, .vpack = g->kern != kern_c, .mr = g->amx ? AMX_MR : MR, .m = m, .n = n,
             .k = k,
             .kp = g->amx ? ((k + 1) / 2 + AMX_KQ - 1) / AMX_KQ * AMX_KQ : (k + 1) / 2, .ldc = ldc, .a = a, .b = b,
             .ai = trans_a ? 1 : lda, .ak = trans_a ? lda : 1, .bk = trans_b ? 1 : ldb, .bj = trans_b ? ldb : 1, .c = c};
    j.slivers = (m + j.mr - 1) / j.mr;
    j.panels = (n + NR - 1) / NR;
    int64_t threads = nthreads > 0 ? nthreads : g->pool ? rt_pool_size(g->pool) : 1;
    // about 1 MFLOP a task at least, and no more tasks than slivers
    int64_t parts = g->pool ? 1 + 2 * m * n * k / 1000000 : 1;
    parts = parts < threads ? parts : threads;
    parts = parts < j.slivers ? parts : j.slivers;
    size_t bwords = (size_t)(j.panels * j.kp * NR), need = 4 * (bwords + (size_t)(parts * KCP * j.mr)) + 64;
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

// ---- the step's 16-bit GEMM ----
//
// An LlvmGemmFn, so the compiled step calls it through its GEMM table exactly as it calls the
// f32 GEMM (same LlvmGemmArgs, same parts_m x parts_n grid, same work area): the step needs
// no pool or lock of ours, and each part packs into its own work slot.  AMX only: vdpbf16ps
// is slower than the f32 GEMM on these CPUs, so a step on a host without AMX keeps the f32
// GEMM.  Per part: for each block of panels that fits the work slot, K block by K block,
// pack that block of B, then each sliver of A, and run the tile kernel; the epilogue (alpha,
// bias, relu, in the f32 GEMM's order) is applied to a tile after its last K block.

static int amx_state; // 0 unknown, 1 usable, -1 not

bool llvm_gemm16_step_usable(const LlvmHost *h) {
    int s = __atomic_load_n(&amx_state, __ATOMIC_ACQUIRE);
    if (!s) {
        s = amx_usable(h) ? 1 : -1;
        __atomic_store_n(&amx_state, s, __ATOMIC_RELEASE);
    }
    return s > 0;
}

// A-sliver words, B words per panel and K block, and the least work slot (one panel)
enum { SLIVER_WORDS = AMX_MR * KCP, PANEL_WORDS = KCP * NR };
size_t llvm_gemm16_step_work(void) { return 4 * (SLIVER_WORDS + PANEL_WORDS) + 64; }

// pack_pairs with AVX512-BF16's rounding (vcvtneps2bf16: ties to even, as bf16_bits; it treats
// subnormal inputs as zero, as tdpbf16ps does anyway) for the two layouts GEMM operands have:
// rows side by side (16 rows' pairs from two runs of 16 floats) and k contiguous (32 floats
// become 16 pairs); 16 pairs are stored at once, or scattered when the destination strides
// the other way.  Every AMX host has it.  Edges go to pack_pairs.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static inline void
put16(uint32_t *d, int64_t stride, __m512i v) {
    if (stride == 1)
        _mm512_storeu_si512(d, v);
    else
        _mm512_i32scatter_epi32(d, _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                      _mm512_set1_epi32((int)stride)), v, 4);
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
pack_pairs16(uint32_t *dst, int64_t drs, int64_t dps, const float *x, int64_t rs, int64_t ks, int64_t nr, int64_t nk,
             int64_t r0, int64_t rows, int64_t p0, int64_t np) {
    if (rs == 1 && r0 + rows <= nr && rows % 16 == 0) {
        for (int64_t p = 0; p < np; p++) {
            int64_t k0 = 2 * (p0 + p);
            if (k0 + 1 >= nk) {
                pack_pairs(dst + p * dps, drs, dps, x, rs, ks, nr, nk, r0, rows, p0 + p, 1);
                continue;
            }
            const float *lo = x + k0 * ks + r0, *hi = lo + ks;
            for (int64_t r = 0; r < rows; r += 16) {
                __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(lo + r)));
                __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(hi + r)));
                put16(dst + p * dps + r * drs, drs, _mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
            }
        }
        return;
    }
    if (ks != 1) {
        pack_pairs(dst, drs, dps, x, rs, ks, nr, nk, r0, rows, p0, np);
        return;
    }
    int64_t full = nk / 2 - p0 < np ? nk / 2 - p0 : np; // pairs with both k inside
    full = full < 0 ? 0 : full / 16 * 16;
    for (int64_t r = 0; r < rows; r++) {
        if (r0 + r >= nr || full == 0) {
            pack_pairs(dst + r * drs, drs, dps, x, rs, ks, nr, nk, r0 + r, 1, p0, np);
            continue;
        }
        const float *row = x + (r0 + r) * rs + 2 * p0;
        uint32_t *d = dst + r * drs;
        for (int64_t p = 0; p < full; p += 16) // words 2p.. of the row: 32 floats
            put16(d + p * dps, dps,
                  (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 2 * p + 16), _mm512_loadu_ps(row + 2 * p)));
        if (full < np)
            pack_pairs(d + full * dps, drs, dps, x, rs, ks, nr, nk, r0 + r, 1, p0 + full, np - full);
    }
}

// relu(alpha t + bias[j]) over a tile, 16 columns at a time (x < 0 ? 0 : x keeps NaN, as the
// f32 GEMM's epilogue).
__attribute__((target("avx512f"))) static void epilogue(float *c, int64_t ldc, int64_t rows, int64_t cols,
                                                         float alpha, const float *bias, bool relu) {
    if (alpha == 1 && !bias && !relu)
        return;
    __m512 va = _mm512_set1_ps(alpha), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j += 16) {
            __mmask16 m = cols - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - j)) - 1);
            __m512 t = _mm512_maskz_loadu_ps(m, c + i * ldc + j);
            if (alpha != 1)
                t = _mm512_mul_ps(t, va);
            if (bias)
                t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(m, bias + j));
            if (relu)
                t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, zero, _CMP_LT_OQ), zero);
            _mm512_mask_storeu_ps(c + i * ldc + j, m, t);
        }
}

static void step_task(const LlvmGemmArgs *x, int v, int64_t part, int64_t nparts) {
    bool ta = v & 1, tb = v & 2, relu = v & 8;
    const float *bias = v & 4 ? x->bias : NULL;
    int64_t m = x->m, n = x->n, k = x->k;
    int64_t pm = x->parts_m > 0 && nparts % x->parts_m == 0 ? x->parts_m : 1, pn = nparts / pm;
    int64_t pi = part / pn, pj = part % pn, tm = (m + AMX_MR - 1) / AMX_MR, tn = (n + NR - 1) / NR;
    int64_t s0 = tm * pi / pm, s1 = tm * (pi + 1) / pm, q0 = tn * pj / pn, q1 = tn * (pj + 1) / pn;
    if (s0 >= s1 || q0 >= q1)
        return;
    int64_t ai = ta ? 1 : x->lda, ak = ta ? x->lda : 1, bk = tb ? 1 : x->ldb, bj = tb ? x->ldb : 1;
    int64_t kp = ((k + 1) / 2 + AMX_KQ - 1) / AMX_KQ * AMX_KQ;
    float alpha = x->alpha, beta = x->beta;
    uint32_t *ap = (uint32_t *)((char *)x->work + part * x->work_stride), *bpack = ap + SLIVER_WORDS;
    int64_t room = ((int64_t)x->work_stride - 4 * SLIVER_WORDS - 64) / (4 * PANEL_WORDS);
    float tile[AMX_MR * NR];
    if (beta != 0 && beta != alpha) // C = alpha (P + beta / alpha C): scale the old C first
        for (int64_t i = s0 * AMX_MR; i < m && i < s1 * AMX_MR; i++)
            for (int64_t j = q0 * NR; j < n && j < q1 * NR; j++)
                x->c[i * x->ldc + j] *= beta / alpha;
    amx_begin();
    for (int64_t qb = q0; qb < q1; qb += room) {
        int64_t nq = q1 - qb < room ? q1 - qb : room;
        for (int64_t p0 = 0; p0 < kp; p0 += KCP) {
            int64_t kb = kp - p0 < KCP ? kp - p0 : KCP;
            bool add = p0 > 0 || beta != 0, last = p0 + kb >= kp;
            for (int64_t q = 0; q < nq; q++) // panel q, pair p, column c at bpack[(q * kb + p) * NR + c]
                pack_pairs16(bpack + q * kb * NR, 1, NR, x->b, bj, bk, n, k, (qb + q) * NR, NR, p0, kb);
            for (int64_t s = s0; s < s1; s++) {
                int64_t r0 = s * AMX_MR, rows = m - r0 < AMX_MR ? m - r0 : AMX_MR;
                pack_pairs16(ap, kb, 1, x->a, ai, ak, m, k, r0, AMX_MR, p0, kb);
                for (int64_t q = 0; q < nq; q++) {
                    int64_t c0 = (qb + q) * NR, cols = n - c0 < NR ? n - c0 : NR;
                    float *c = x->c + r0 * x->ldc + c0;
                    const float *bq = bias ? bias + c0 : NULL;
                    if (rows == AMX_MR && cols == NR) {
                        kern_amx(ap, bpack + q * kb * NR, c, x->ldc, kb, add);
                        if (last)
                            epilogue(c, x->ldc, rows, cols, alpha, bq, relu);
                        continue;
                    }
                    for (int64_t i = 0; add && i < rows; i++) // an edge tile, through the buffer
                        memcpy(tile + i * NR, c + i * x->ldc, sizeof *c * (size_t)cols);
                    kern_amx(ap, bpack + q * kb * NR, tile, NR, kb, add);
                    if (last)
                        epilogue(tile, NR, rows, cols, alpha, bq, relu);
                    for (int64_t i = 0; i < rows; i++)
                        memcpy(c + i * x->ldc, tile + i * NR, sizeof *c * (size_t)cols);
                }
            }
        }
    }
    amx_end();
}

#define STEP16(i) \
    static void step16_##i(void *args, int64_t part, int64_t nparts) { step_task(args, i, part, nparts); }
STEP16(0) STEP16(1) STEP16(2) STEP16(3) STEP16(4) STEP16(5) STEP16(6) STEP16(7)
STEP16(8) STEP16(9) STEP16(10) STEP16(11) STEP16(12) STEP16(13) STEP16(14) STEP16(15)
#undef STEP16

LlvmGemmFn llvm_gemm16_step_fn(int v) {
    static const LlvmGemmFn fns[16] = {step16_0, step16_1, step16_2,  step16_3,  step16_4,  step16_5,
                                       step16_6, step16_7, step16_8,  step16_9,  step16_10, step16_11,
                                       step16_12, step16_13, step16_14, step16_15};
    return v >= 0 && v < 16 ? fns[v] : NULL;
}
