// llvm_gemm.c — fp32 GEMM generated as LLVM IR through the C API.
//
//   C = epilogue(alpha * op(A) * op(B) + beta * C), row-major.
//
// Structure (Goto/BLIS, see docs/backend-cpu.md):
//   for jc in N by NC:            (this part's columns)
//     for pc in K by <= KC:       pack B[pc:+KC, jc:+NC] into NR-wide slivers (L2),
//                                 or read op(B) = B in place when M is small
//       for ic in M by MC (= MR): pack A[ic:+MR, pc:+KC] into one sliver (L1)
//         for jr in NC by NR:     micro-kernel: MR x NR tile in MR*NR/VEC registers
//                                 (MR x VEC when at most VEC columns are left)
// The packed panels are zero-padded, so the micro-kernel always runs the full
// tile; only its store is masked at the M/N edges. Each C element is produced
// by exactly one part, in the same K order whatever the number of parts.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llvm.h"
#include "rt.h"

// ---------------------------------------------------------------------------
// Blocking from the ISA and the caches.

static long cache_size(int level, const char *type) {
    // sysfs first: it is what the kernel knows; sysconf is glibc's CPUID reading.
    for (int i = 0; i < 8; i++) {
        char path[128], buf[64];
        long lv = 0, size = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        if (fscanf(f, "%ld", &lv) != 1)
            lv = 0;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        if (!(f = fopen(path, "r")))
            continue;
        bool type_ok = fgets(buf, sizeof buf, f) && strncmp(buf, type, strlen(type)) == 0;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (lv != level || !type_ok || !(f = fopen(path, "r")))
            continue;
        char unit = 0;
        int got = fscanf(f, "%ld%c", &size, &unit);
        fclose(f);
        if (got >= 1 && size > 0)
            return unit == 'K' ? size << 10 : unit == 'M' ? size << 20 : size;
    }
    long v = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? v : 0;
}

LlvmGemmBlocking llvm_gemm_blocking(LlvmIsa isa, bool fma) {
    LlvmGemmBlocking b = {.isa = isa, .fma = fma};
    switch (isa) {
    case LLVM_ISA_AVX512:   // 28 of 32 zmm hold C, 2 hold B, 1 the broadcast of A
        b.vec = 16, b.mr = 14, b.nr = 32;
        break;
    case LLVM_ISA_AVX2:     // 12 of 16 ymm hold C
        b.vec = 8, b.mr = 6, b.nr = 16;
        break;
    default:                // SSE2 or anything else LLVM legalises from <4 x float>
        b.vec = 4, b.mr = 6, b.nr = 8;
        break;
    }
    long l1 = cache_size(1, "Data"), l2 = cache_size(2, "Unified");
    if (l1 < 16384 || l1 > (1L << 20))
        l1 = 32768;
    if (l2 < 131072 || l2 > (64L << 20))
        l2 = 1L << 20;
    // The A sliver (mr x kc) is reused by every B sliver of the panel: it takes
    // about half of L1, the other half streams B and holds C's lines.
    int kc = (int)(l1 / 2 / (4 * b.mr));
    kc = kc / b.vec * b.vec;
    b.kc = kc < 64 ? 64 : kc > 512 ? 512 : kc;
    // The packed B panel (kc x nc) stays in L2 while the slivers of A pass by.
    int nc = (int)(l2 / 2 / (4L * b.kc));
    nc = nc / b.nr * b.nr;
    b.nc = nc < b.nr ? b.nr : nc > 4096 ? 4096 : nc;
    b.mc = b.mr;
    b.unroll = 1;
    b.prefetch = 0;
    b.bdirect = 8;
    b.mredge = b.mr > 8 ? 8 : 0;
    return b;
}

// Floats in the packed panels, padded: the transposing packers store whole
// vectors past the end of a panel (see pack_a / pack_b).
static size_t bp_floats(const LlvmGemmBlocking *b) {
    size_t n = (size_t)b->kc * b->nc + (size_t)(b->vec + 1) * b->nr;
    return (n + 15) & ~(size_t)15;
}
static size_t ap_floats(const LlvmGemmBlocking *b) {
    size_t n = (size_t)b->mc * b->kc + (size_t)(b->vec + 1) * b->mr + 2 * (size_t)b->vec;
    return (n + 15) & ~(size_t)15;
}
size_t llvm_gemm_work_size(const LlvmGemmBlocking *b) { return 4 * (bp_floats(b) + ap_floats(b)); }

// A part below about 1 MFLOP (a few microseconds) costs more in duplicated
// packing and cache-to-cache traffic than it saves (measured: 64x64x160 is
// slower on two threads, 64x128x128 faster).
int64_t llvm_gemm_parts(const LlvmGemmBlocking *b, int64_t m, int64_t n, int64_t k, int64_t nthreads) {
    int64_t tiles = ((m + b->mr - 1) / b->mr) * ((n + b->nr - 1) / b->nr);
    double flops = 2.0 * (double)m * (double)n * (double)(k > 0 ? k : 1);
    int64_t p = (int64_t)(flops / (1 << 20));
    p = p < nthreads ? p : nthreads;
    p = p < tiles ? p : tiles;
    return p > 1 ? p : 1;
}

// Chooses the parts_m x parts_n grid with the least estimated time for the
// slowest part: its FMAs plus its packing (B once per K block, A once per
// K block and NC block). Only the shape decides, never the data.
int64_t llvm_gemm_split(const LlvmGemmBlocking *b, int64_t m, int64_t n, int64_t k, int64_t nparts) {
    int64_t tm = (m + b->mr - 1) / b->mr, tn = (n + b->nr - 1) / b->nr, best = 1;
    double best_cost = 0;
    if (k < 1)
        k = 1;
    for (int64_t pm = 1; pm <= nparts; pm++) {
        if (nparts % pm)
            continue;
        int64_t pn = nparts / pm;
        double rows = (double)((tm + pm - 1) / pm * b->mr), cols = (double)((tn + pn - 1) / pn * b->nr);
        double nblocks = (double)(((int64_t)cols + b->nc - 1) / b->nc);
        double cost = rows * cols * k / (2.0 * b->vec)   // 2 FMA pipes
                      + 0.5 * cols * k + 1.0 * rows * k * nblocks;
        if (pm == 1 || cost < best_cost * 0.999)
            best = pm, best_cost = cost;
    }
    return best;
}

// ---------------------------------------------------------------------------
// IR building helpers.

typedef struct Intr {
    LLVMValueRef fn;
    LLVMTypeRef ty;
} Intr;

typedef struct Gen {
    LLVMContextRef cx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMValueRef fn;                       // function being built
    LLVMTypeRef f32, i1, i32, i64, ptr, vf, vm, vi;
    Intr fma, mload, mstore, prefetch;
    const LlvmGemmBlocking *blk;
    LlvmGemmSpec spec;
    int V, MR, NR, NV;
} Gen;

static LLVMValueRef ci(Gen *g, int64_t v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }
static LLVMValueRef ci32(Gen *g, int v) { return LLVMConstInt(g->i32, (unsigned long long)v, 1); }
static LLVMValueRef cf(Gen *g, double v) { return LLVMConstReal(g->f32, v); }

static Intr intr(Gen *g, const char *name, LLVMTypeRef *types, size_t n) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    return (Intr){LLVMGetIntrinsicDeclaration(g->mod, id, types, n),
                  LLVMIntrinsicGetType(g->cx, id, types, n)};
}

static LLVMValueRef call(Gen *g, Intr f, LLVMValueRef *args, unsigned n) {
    return LLVMBuildCall2(g->b, f.ty, f.fn, args, n, "");
}

static LLVMBasicBlockRef block(Gen *g, const char *name) { return LLVMAppendBasicBlockInContext(g->cx, g->fn, name); }
static void at(Gen *g, LLVMBasicBlockRef bb) { LLVMPositionBuilderAtEnd(g->b, bb); }

// Plain (not inbounds) GEP: edge code forms addresses that a masked access never touches.
static LLVMValueRef gep(Gen *g, LLVMValueRef p, LLVMValueRef idx) { return LLVMBuildGEP2(g->b, g->f32, p, &idx, 1, ""); }
static LLVMValueRef gepi(Gen *g, LLVMValueRef p, int64_t i) { return i ? gep(g, p, ci(g, i)) : p; }
static LLVMValueRef add(Gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildAdd(g->b, x, y, ""); }
static LLVMValueRef sub(Gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildSub(g->b, x, y, ""); }
static LLVMValueRef mul(Gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildMul(g->b, x, y, ""); }
static LLVMValueRef lt(Gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildICmp(g->b, LLVMIntSLT, x, y, ""); }
static LLVMValueRef smin(Gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildSelect(g->b, lt(g, x, y), x, y, ""); }

static LLVMValueRef splat(Gen *g, LLVMValueRef x, LLVMTypeRef vty) {
    LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vty), x, ci32(g, 0), "");
    return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vty), LLVMConstNull(g->vi), "");
}

static LLVMValueRef load_f(Gen *g, LLVMValueRef p) {
    LLVMValueRef v = LLVMBuildLoad2(g->b, g->f32, p, "");
    LLVMSetAlignment(v, 4);
    return v;
}
static LLVMValueRef load_v(Gen *g, LLVMValueRef p) {
    LLVMValueRef v = LLVMBuildLoad2(g->b, g->vf, p, "");
    LLVMSetAlignment(v, 4);
    return v;
}
static void store_v(Gen *g, LLVMValueRef v, LLVMValueRef p) { LLVMSetAlignment(LLVMBuildStore(g->b, v, p), 4); }

// Lanes i with first + i < count, as a <V x i1> mask (count: i64, any value).
static LLVMValueRef lane_mask(Gen *g, int first, LLVMValueRef count) {
    LLVMValueRef c = smin(g, sub(g, count, ci(g, first)), ci(g, g->V));
    c = LLVMBuildTrunc(g->b, c, g->i32, "");
    LLVMValueRef lanes[64];
    for (int i = 0; i < g->V; i++)
        lanes[i] = ci32(g, i);
    return LLVMBuildICmp(g->b, LLVMIntSLT, LLVMConstVector(lanes, (unsigned)g->V), splat(g, c, g->vi), "");
}

static LLVMValueRef mload(Gen *g, LLVMValueRef p, LLVMValueRef mask) {
    LLVMValueRef args[] = {p, ci32(g, 4), mask, LLVMConstNull(g->vf)};
    return call(g, g->mload, args, 4);
}
static void mstore(Gen *g, LLVMValueRef v, LLVMValueRef p, LLVMValueRef mask) {
    LLVMValueRef args[] = {v, p, ci32(g, 4), mask};
    call(g, g->mstore, args, 4);
}
static void prefetch(Gen *g, LLVMValueRef p, int write, int locality) {
    LLVMValueRef args[] = {p, ci32(g, write), ci32(g, locality), ci32(g, 1)};
    call(g, g->prefetch, args, 4);
}
static LLVMValueRef fmadd(Gen *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    LLVMValueRef args[] = {a, b, c};
    return call(g, g->fma, args, 3);
}

// A counted loop: for (iv = start; iv < end; iv += step). loop_open leaves the
// builder in the body; loop_close closes it and leaves the builder after it.
typedef struct Loop {
    LLVMBasicBlockRef head, exit;
    LLVMValueRef iv;
} Loop;

static LLVMValueRef loop_open(Gen *g, Loop *l, LLVMValueRef start, LLVMValueRef end, const char *name) {
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
    l->head = block(g, name);
    LLVMBasicBlockRef body = block(g, name);
    l->exit = block(g, name);
    LLVMBuildBr(g->b, l->head);
    at(g, l->head);
    l->iv = LLVMBuildPhi(g->b, g->i64, "");
    LLVMAddIncoming(l->iv, &start, &pre, 1);
    LLVMBuildCondBr(g->b, lt(g, l->iv, end), body, l->exit);
    at(g, body);
    return l->iv;
}

static void loop_close(Gen *g, Loop *l, LLVMValueRef step) {
    LLVMValueRef next = add(g, l->iv, step);
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    LLVMBuildBr(g->b, l->head);
    LLVMAddIncoming(l->iv, &next, &latch, 1);
    at(g, l->exit);
}

static LLVMValueRef new_function(Gen *g, const char *name, LLVMTypeRef *params, unsigned n, bool internal) {
    LLVMTypeRef ty = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), params, n, 0);
    LLVMValueRef fn = LLVMAddFunction(g->mod, name, ty);
    LLVMSetLinkage(fn, internal ? LLVMInternalLinkage : LLVMExternalLinkage);
    unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->cx, nounwind, 0));
    g->fn = fn;
    at(g, block(g, "entry"));
    return fn;
}

static void noalias(Gen *g, LLVMValueRef fn, unsigned param) {
    unsigned kind = LLVMGetEnumAttributeKindForName("noalias", 7);
    LLVMAddAttributeAtIndex(fn, param + 1, LLVMCreateEnumAttribute(g->cx, kind, 0));
}

// In-register transpose of V rows of V floats: stage t swaps bit t of the row
// index with bit t of the column index; log2(V) stages of two-source shuffles.
static void transpose(Gen *g, LLVMValueRef *rows) {
    int V = g->V;
    LLVMValueRef m0[64], m1[64];
    for (int t = 1; t < V; t <<= 1) {
        for (int c = 0; c < V; c++) {
            m0[c] = ci32(g, (c & t) ? V + (c & ~t) : c);
            m1[c] = ci32(g, (c & t) ? V + c : (c | t));
        }
        LLVMValueRef mask0 = LLVMConstVector(m0, (unsigned)V), mask1 = LLVMConstVector(m1, (unsigned)V);
        for (int i = 0; i < V; i++) {
            if (i & t)
                continue;
            LLVMValueRef x = rows[i], y = rows[i | t];
            rows[i] = LLVMBuildShuffleVector(g->b, x, y, mask0, "");
            rows[i | t] = LLVMBuildShuffleVector(g->b, x, y, mask1, "");
        }
    }
}

// ---------------------------------------------------------------------------
// pack_a(a, lda, mb, kb, ap): ap[k*MR + r] = op(A)[r][k] for r < mb, k < kb;
// rows mb..MR-1 are zero. `a` points at op(A)[0][0] of the sliver.
// Stores go strictly forward and may spill past the end (the panel is padded):
// a later store overwrites the spill of an earlier one.

static LLVMValueRef emit_pack_a(Gen *g, const char *name) {
    LLVMTypeRef ps[] = {g->ptr, g->i64, g->i64, g->i64, g->ptr};
    LLVMValueRef fn = new_function(g, name, ps, 5, true);
    noalias(g, fn, 0), noalias(g, fn, 4);
    LLVMValueRef a = LLVMGetParam(fn, 0), lda = LLVMGetParam(fn, 1), mb = LLVMGetParam(fn, 2),
                 kb = LLVMGetParam(fn, 3), ap = LLVMGetParam(fn, 4);
    int V = g->V, MR = g->MR, G = (MR + V - 1) / V;
    Loop l;
    if (g->spec.trans_a) {
        // A is stored K x M: a row of the sliver is contiguous, copy it.
        LLVMValueRef rmask[8];
        for (int gi = 0; gi < G; gi++)
            rmask[gi] = lane_mask(g, gi * V, mb);
        LLVMValueRef k = loop_open(g, &l, ci(g, 0), kb, "pa.k");
        LLVMValueRef src = gep(g, a, mul(g, k, lda)), dst = gep(g, ap, mul(g, k, ci(g, MR)));
        for (int gi = 0; gi < G; gi++)
            store_v(g, mload(g, gepi(g, src, gi * V), rmask[gi]), gepi(g, dst, gi * V));
        loop_close(g, &l, ci(g, 1));
    } else {
        // A is stored M x K: load V x V blocks along k, transpose them.
        LLVMValueRef k0 = loop_open(g, &l, ci(g, 0), kb, "pa.k");
        LLVMValueRef kmask = lane_mask(g, 0, sub(g, kb, k0));
        LLVMValueRef cols[8][64];
        for (int gi = 0; gi < G; gi++) {
            for (int r = 0; r < V; r++) {
                int row = gi * V + r;
                if (row >= MR) {
                    cols[gi][r] = LLVMConstNull(g->vf);
                    continue;
                }
                LLVMValueRef valid = splat(g, lt(g, ci(g, row), mb), g->vm);
                LLVMValueRef p = gep(g, a, add(g, mul(g, ci(g, row), lda), k0));
                cols[gi][r] = mload(g, p, LLVMBuildAnd(g->b, kmask, valid, ""));
            }
            transpose(g, cols[gi]);
        }
        LLVMValueRef dst = gep(g, ap, mul(g, k0, ci(g, MR)));
        for (int kk = 0; kk < V; kk++)
            for (int gi = 0; gi < G; gi++)
                store_v(g, cols[gi][kk], gepi(g, dst, kk * MR + gi * V));
        loop_close(g, &l, ci(g, V));
    }
    LLVMBuildRetVoid(g->b);
    return fn;
}

// pack_b(b, ldb, kb, nb, bp): sliver s (columns s*NR..) at bp + s*NR*kb holds
// bp[k*NR + j] = op(B)[k][s*NR + j], zero for columns >= nb.

static LLVMValueRef emit_pack_b(Gen *g, const char *name) {
    LLVMTypeRef ps[] = {g->ptr, g->i64, g->i64, g->i64, g->ptr};
    LLVMValueRef fn = new_function(g, name, ps, 5, true);
    noalias(g, fn, 0), noalias(g, fn, 4);
    LLVMValueRef b = LLVMGetParam(fn, 0), ldb = LLVMGetParam(fn, 1), kb = LLVMGetParam(fn, 2),
                 nb = LLVMGetParam(fn, 3), bp = LLVMGetParam(fn, 4);
    int V = g->V, NR = g->NR, NV = g->NV;
    Loop ls, lk;
    if (!g->spec.trans_b) {
        // B is stored K x N: read each row of the panel once, front to back
        // (the hardware prefetcher follows it), and deal it out to the slivers.
        LLVMValueRef k = loop_open(g, &lk, ci(g, 0), kb, "pb.k");
        LLVMValueRef src = gep(g, b, mul(g, k, ldb)), dst = gep(g, bp, mul(g, k, ci(g, NR)));
        LLVMValueRef j0 = loop_open(g, &ls, ci(g, 0), nb, "pb.j");
        LLVMValueRef left = sub(g, nb, j0), s = gep(g, src, j0), d = gep(g, dst, mul(g, j0, kb));
        for (int v = 0; v < NV; v++)
            store_v(g, mload(g, gepi(g, s, v * V), lane_mask(g, v * V, left)), gepi(g, d, v * V));
        loop_close(g, &ls, ci(g, NR));
        loop_close(g, &lk, ci(g, 1));
    } else {
        // B is stored N x K: transpose V x V blocks, NV of them per V values of k.
        LLVMValueRef j0 = loop_open(g, &ls, ci(g, 0), nb, "pb.j");
        LLVMValueRef dst = gep(g, bp, mul(g, j0, kb)), left = sub(g, nb, j0);
        LLVMValueRef k0 = loop_open(g, &lk, ci(g, 0), kb, "pb.k");
        LLVMValueRef kmask = lane_mask(g, 0, sub(g, kb, k0));
        LLVMValueRef t[8][64];
        for (int h = 0; h < NV; h++) {
            for (int r = 0; r < V; r++) {
                LLVMValueRef jrow = ci(g, h * V + r);
                LLVMValueRef valid = splat(g, lt(g, jrow, left), g->vm);
                LLVMValueRef p = gep(g, b, add(g, mul(g, add(g, j0, jrow), ldb), k0));
                t[h][r] = mload(g, p, LLVMBuildAnd(g->b, kmask, valid, ""));
            }
            transpose(g, t[h]);
        }
        LLVMValueRef d = gep(g, dst, mul(g, k0, ci(g, NR)));
        for (int kk = 0; kk < V; kk++)
            for (int h = 0; h < NV; h++)
                store_v(g, t[h][kk], gepi(g, d, kk * NR + h * V));
        loop_close(g, &lk, ci(g, V));
        loop_close(g, &ls, ci(g, NR));
    }
    LLVMBuildRetVoid(g->b);
    return fn;
}

// ---------------------------------------------------------------------------
// kernel(ap, bp, kb, c, ldc, mb, nb, alpha, beta, loadc, last, bias):
//   acc = sum over k < kb of ap[k][r] * bp[k][j]          (MR x NR in registers)
//   t   = alpha * acc;  if loadc: t = fma(beta, C, t)       (beta = 1 after the first K block)
//   if last: t = relu(t + bias[j])                          (as the spec asks)
//   C[r][j] = t for r < mb, j < nb
// The same operations run on full and edge tiles, so a value does not depend
// on where the part boundaries fall.

static void kernel_steps(Gen *g, int MR, int NV, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef bs, LLVMValueRef k,
                         int steps, LLVMValueRef *acc, bool pf) {
    int V = g->V, NR = NV * V;
    for (int u = 0; u < steps; u++) {
        LLVMValueRef kk = add(g, k, ci(g, u));
        LLVMValueRef brow = gep(g, bp, mul(g, kk, bs)), arow = gep(g, ap, mul(g, kk, ci(g, g->MR)));
        LLVMValueRef bv[8];
        for (int v = 0; v < NV; v++)
            bv[v] = load_v(g, gepi(g, brow, v * V));
        if (pf && g->blk->prefetch)   // each 64-byte line of B, some steps ahead (L2 -> L1)
            for (int j = 0; j < NR; j += 16)
                prefetch(g, gep(g, brow, add(g, mul(g, bs, ci(g, g->blk->prefetch)), ci(g, j))), 0, 3);
        for (int r = 0; r < MR; r++) {
            LLVMValueRef av = splat(g, load_f(g, gepi(g, arow, r)), g->vf);
            for (int v = 0; v < NV; v++)
                acc[r * NV + v] = fmadd(g, av, bv[v], acc[r * NV + v]);
        }
    }
}

// One loop over k, `step` k values a trip, with the accumulators as phis;
// returns their final values in acc and the k it stopped at in kout.
static void kernel_loop(Gen *g, int MR, int NV, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef bs, LLVMValueRef kstart,
                        LLVMValueRef kend, int step, bool pf, LLVMValueRef *acc, LLVMValueRef *kout, const char *name) {
    int n = MR * NV;
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b), head = block(g, name), body = block(g, name),
                      exit = block(g, name);
    LLVMBuildBr(g->b, head);
    at(g, head);
    LLVMValueRef k = LLVMBuildPhi(g->b, g->i64, "");
    LLVMAddIncoming(k, &kstart, &pre, 1);
    LLVMValueRef phis[64], cur[64];
    for (int i = 0; i < n; i++) {
        phis[i] = LLVMBuildPhi(g->b, g->vf, "");
        LLVMAddIncoming(phis[i], &acc[i], &pre, 1);
        cur[i] = phis[i];
    }
    // step > 1: run while k + step <= kend
    LLVMValueRef cond = lt(g, add(g, k, ci(g, step - 1)), kend);
    LLVMBuildCondBr(g->b, cond, body, exit);
    at(g, body);
    kernel_steps(g, MR, NV, ap, bp, bs, k, step, cur, pf);
    LLVMValueRef next = add(g, k, ci(g, step));
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    LLVMBuildBr(g->b, head);
    LLVMAddIncoming(k, &next, &latch, 1);
    for (int i = 0; i < n; i++) {
        LLVMAddIncoming(phis[i], &cur[i], &latch, 1);
        acc[i] = phis[i];
    }
    *kout = k;
    at(g, exit);
}

static LLVMValueRef emit_kernel(Gen *g, const char *name, int mr, int nv) {
    LLVMTypeRef ps[] = {g->ptr, g->ptr, g->i64, g->ptr, g->i64, g->i64, g->i64,
                        g->f32, g->f32, g->i1, g->i1, g->ptr, g->i64};
    LLVMValueRef fn = new_function(g, name, ps, 13, true);
    noalias(g, fn, 0), noalias(g, fn, 1), noalias(g, fn, 3);
    LLVMValueRef ap = LLVMGetParam(fn, 0), bp = LLVMGetParam(fn, 1), kb = LLVMGetParam(fn, 2),
                 c = LLVMGetParam(fn, 3), ldc = LLVMGetParam(fn, 4), mb = LLVMGetParam(fn, 5),
                 nb = LLVMGetParam(fn, 6), alpha = LLVMGetParam(fn, 7), beta = LLVMGetParam(fn, 8),
                 loadc = LLVMGetParam(fn, 9), last = LLVMGetParam(fn, 10), bias = LLVMGetParam(fn, 11),
                 bs = LLVMGetParam(fn, 12);
    int V = g->V, MR = mr, NV = nv, NR = nv * V, n = MR * NV;   // A keeps its stride g->MR

    // The C tile is needed only at the end: start fetching its lines now.
    for (int r = 0; r < MR; r++) {
        LLVMValueRef row = gep(g, c, mul(g, ci(g, r), ldc));
        for (int v = 0; v < NR; v += 16)
            prefetch(g, gepi(g, row, v), 1, 3);
    }
    LLVMValueRef acc[64], k;
    for (int i = 0; i < n; i++)
        acc[i] = LLVMConstNull(g->vf);
    kernel_loop(g, MR, NV, ap, bp, bs, ci(g, 0), kb, g->blk->unroll, true, acc, &k, "k.main");
    if (g->blk->unroll > 1)
        kernel_loop(g, MR, NV, ap, bp, bs, k, kb, 1, false, acc, &k, "k.rest");

    LLVMValueRef valpha = splat(g, alpha, g->vf), vbeta = splat(g, beta, g->vf), zero = LLVMConstNull(g->vf);
    LLVMValueRef full = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, mb, ci(g, MR), ""),
                                     LLVMBuildICmp(g->b, LLVMIntEQ, nb, ci(g, NR), ""), "");
    LLVMBasicBlockRef bfull = block(g, "st.full"), bedge = block(g, "st.edge"), done = block(g, "st.done");
    LLVMBuildCondBr(g->b, full, bfull, bedge);

    for (int edge = 0; edge < 2; edge++) {
        at(g, edge ? bedge : bfull);
        LLVMValueRef cmask[8], bv[8];
        for (int v = 0; v < NV; v++) {
            cmask[v] = edge ? lane_mask(g, v * V, nb) : NULL;
            if (g->spec.bias)
                bv[v] = edge ? mload(g, gepi(g, bias, v * V), cmask[v]) : load_v(g, gepi(g, bias, v * V));
        }
        for (int r = 0; r < MR; r++) {
            if (edge && r > 0) {   // rows past mb are not stored
                LLVMBasicBlockRef row = block(g, "st.row");
                LLVMBuildCondBr(g->b, lt(g, ci(g, r), mb), row, done);
                at(g, row);
            }
            LLVMValueRef crow = gep(g, c, mul(g, ci(g, r), ldc));
            for (int v = 0; v < NV; v++) {
                LLVMValueRef p = gepi(g, crow, v * V);
                LLVMValueRef t = LLVMBuildFMul(g->b, valpha, acc[r * NV + v], "");
                // C is read even when beta == 0 (then ignored): the line is fetched for the store anyway.
                LLVMValueRef old = edge ? mload(g, p, cmask[v]) : load_v(g, p);
                t = LLVMBuildSelect(g->b, loadc, fmadd(g, vbeta, old, t), t, "");
                if (g->spec.bias || g->spec.relu) {
                    LLVMValueRef e = t;
                    if (g->spec.bias)
                        e = LLVMBuildFAdd(g->b, e, bv[v], "");
                    if (g->spec.relu)   // x < 0 ? 0 : x keeps NaN visible
                        e = LLVMBuildSelect(g->b, LLVMBuildFCmp(g->b, LLVMRealOLT, e, zero, ""), zero, e, "");
                    t = LLVMBuildSelect(g->b, last, e, t, "");
                }
                if (edge)
                    mstore(g, t, p, cmask[v]);
                else
                    store_v(g, t, p);
            }
        }
        LLVMBuildBr(g->b, done);
    }
    at(g, done);
    LLVMBuildRetVoid(g->b);
    return fn;
}

// ---------------------------------------------------------------------------
// The entry point: void name(LlvmGemmArgs *args, i64 part, i64 nparts).

static LLVMValueRef field(Gen *g, LLVMTypeRef sty, LLVMValueRef args, unsigned i, LLVMTypeRef ty) {
    LLVMValueRef p = LLVMBuildStructGEP2(g->b, sty, args, i, "");
    LLVMValueRef v = LLVMBuildLoad2(g->b, ty, p, "");
    LLVMSetAlignment(v, 4);
    return v;
}

static LLVMValueRef call_fn(Gen *g, LLVMValueRef fn, LLVMValueRef *args, unsigned n) {
    return LLVMBuildCall2(g->b, LLVMGlobalGetValueType(fn), fn, args, n, "");
}

static LLVMValueRef div_(Gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildSDiv(g->b, x, y, ""); }
static LLVMValueRef ceil_div(Gen *g, LLVMValueRef x, int64_t y) { return div_(g, add(g, x, ci(g, y - 1)), ci(g, y)); }
static LLVMValueRef smax1(Gen *g, LLVMValueRef x) { return LLVMBuildSelect(g->b, lt(g, x, ci(g, 1)), ci(g, 1), x, ""); }

LLVMValueRef llvm_gemm_emit(LLVMModuleRef mod, const LlvmGemmBlocking *blk, const LlvmGemmSpec *spec,
                            const char *name) {
    Gen gs = {.mod = mod, .cx = LLVMGetModuleContext(mod), .blk = blk, .spec = *spec};
    Gen *g = &gs;
    g->V = blk->vec, g->MR = blk->mr, g->NR = blk->nr, g->NV = blk->nr / blk->vec;
    if (g->V > 64 || g->NV > 8 || g->MR * g->NV > 64 || (g->MR + g->V - 1) / g->V > 8 || blk->unroll < 1 ||
        blk->nr % blk->vec || blk->kc < 1 || blk->nc < blk->nr || blk->nc % blk->nr ||
        blk->mc < blk->mr || blk->mc % blk->mr)
        return NULL;
    g->b = LLVMCreateBuilderInContext(g->cx);
    g->f32 = LLVMFloatTypeInContext(g->cx);
    g->i1 = LLVMInt1TypeInContext(g->cx);
    g->i32 = LLVMInt32TypeInContext(g->cx);
    g->i64 = LLVMInt64TypeInContext(g->cx);
    g->ptr = LLVMPointerTypeInContext(g->cx, 0);
    g->vf = LLVMVectorType(g->f32, (unsigned)g->V);
    g->vm = LLVMVectorType(g->i1, (unsigned)g->V);
    g->vi = LLVMVectorType(g->i32, (unsigned)g->V);
    LLVMTypeRef t1[] = {g->vf}, t2[] = {g->vf, g->ptr}, tp[] = {g->ptr};
    // Without hardware FMA, llvm.fma would become a call to fmaf: fmuladd may split.
    g->fma = intr(g, blk->fma ? "llvm.fma" : "llvm.fmuladd", t1, 1);
    g->mload = intr(g, "llvm.masked.load", t2, 2);
    g->mstore = intr(g, "llvm.masked.store", t2, 2);
    g->prefetch = intr(g, "llvm.prefetch", tp, 1);

    char buf[256];
    snprintf(buf, sizeof buf, "%s.pack_a", name);
    LLVMValueRef pack_a = emit_pack_a(g, buf);
    snprintf(buf, sizeof buf, "%s.pack_b", name);
    LLVMValueRef pack_b = emit_pack_b(g, buf);
    // Slivers of at most one vector of columns (N = 10 classes, the edge of N)
    // get a one-vector kernel: half the FMAs of the full one on padding. Slivers
    // of at most mredge rows (the last of M) get a kernel that tall: M = 64 =
    // 4 x 14 + 8 would otherwise compute 70 rows. Short and narrow at once takes
    // the narrow kernel (each kernel costs compile time).
    LLVMValueRef kernel, kernel1, kshort;
    snprintf(buf, sizeof buf, "%s.kernel", name);
    kernel = emit_kernel(g, buf, g->MR, g->NV);
    snprintf(buf, sizeof buf, "%s.kernel1", name);
    kernel1 = g->NV > 1 ? emit_kernel(g, buf, g->MR, 1) : kernel;
    snprintf(buf, sizeof buf, "%s.kernel_short", name);
    // A blocking derived from the default with a smaller mr keeps working: no short kernel.
    int mredge = blk->mredge > 0 && blk->mredge < g->MR ? blk->mredge : 0;
    kshort = mredge ? emit_kernel(g, buf, mredge, g->NV) : kernel;

    LLVMTypeRef ps[] = {g->ptr, g->i64, g->i64};
    LLVMValueRef fn = new_function(g, name, ps, 3, false);
    LLVMValueRef args = LLVMGetParam(fn, 0), part = LLVMGetParam(fn, 1), nparts = LLVMGetParam(fn, 2);
    // Mirrors LlvmGemmArgs.
    LLVMTypeRef fields[] = {g->ptr, g->ptr, g->ptr, g->ptr, g->i64, g->i64, g->i64, g->i64, g->i64, g->i64,
                            g->f32, g->f32, g->ptr, g->i64, g->i64};
    LLVMTypeRef sty = LLVMStructTypeInContext(g->cx, fields, 15, 0);
    LLVMValueRef A = field(g, sty, args, 0, g->ptr), B = field(g, sty, args, 1, g->ptr),
                 C = field(g, sty, args, 2, g->ptr), bias = field(g, sty, args, 3, g->ptr),
                 M = field(g, sty, args, 4, g->i64), N = field(g, sty, args, 5, g->i64),
                 K = field(g, sty, args, 6, g->i64), lda = field(g, sty, args, 7, g->i64),
                 ldb = field(g, sty, args, 8, g->i64), ldc = field(g, sty, args, 9, g->i64),
                 alpha = field(g, sty, args, 10, g->f32), beta = field(g, sty, args, 11, g->f32),
                 work = field(g, sty, args, 12, g->ptr), wstride = field(g, sty, args, 13, g->i64),
                 pm = field(g, sty, args, 14, g->i64);
    int MR = g->MR, NR = g->NR, KC = blk->kc, NC = blk->nc, MC = blk->mc;

    // This part's block of C: whole MR x NR tiles, split evenly.
    LLVMValueRef pn = div_(g, nparts, pm), ip = LLVMBuildSRem(g->b, part, pm, ""), jp = div_(g, part, pm);
    LLVMValueRef tm = ceil_div(g, M, MR), tn = ceil_div(g, N, NR);
    LLVMValueRef m0 = mul(g, div_(g, mul(g, tm, ip), pm), ci(g, MR));
    LLVMValueRef m1 = smin(g, M, mul(g, div_(g, mul(g, tm, add(g, ip, ci(g, 1))), pm), ci(g, MR)));
    LLVMValueRef n0 = mul(g, div_(g, mul(g, tn, jp), pn), ci(g, NR));
    LLVMValueRef n1 = smin(g, N, mul(g, div_(g, mul(g, tn, add(g, jp, ci(g, 1))), pn), ci(g, NR)));
    LLVMBasicBlockRef body = block(g, "body"), ret = block(g, "ret");
    LLVMBuildCondBr(g->b, LLVMBuildAnd(g->b, lt(g, m0, m1), lt(g, n0, n1), ""), body, ret);
    at(g, ret);
    LLVMBuildRetVoid(g->b);
    at(g, body);

    LLVMValueRef bp = LLVMBuildGEP2(g->b, LLVMInt8TypeInContext(g->cx), work, (LLVMValueRef[]){mul(g, part, wstride)}, 1, "");
    LLVMValueRef ap = gepi(g, bp, (int64_t)bp_floats(blk));
    // Equal NC blocks rather than NC, NC, ..., remainder.
    LLVMValueRef w = sub(g, n1, n0), nblk = ceil_div(g, w, NC);
    LLVMValueRef ncb = mul(g, ceil_div(g, div_(g, add(g, w, sub(g, nblk, ci(g, 1))), nblk), NR), ci(g, NR));

    // Equal K blocks of at most KC (1024 = 3 x 342, not 432 + 432 + 160): every
    // kernel call gets a long loop. They depend on K only, never on the parts.
    LLVMValueRef one = ci(g, 1), kblocks = smax1(g, ceil_div(g, K, KC));
    LLVMValueRef kcb = smax1(g, div_(g, add(g, K, sub(g, kblocks, one)), kblocks));
    Loop ljc, lic, ljr;   // jc: NC blocks, ic: MC blocks, jr: NR slivers
    LLVMValueRef jc = loop_open(g, &ljc, n0, n1, "jc");
    LLVMValueRef nb = smin(g, ncb, sub(g, n1, jc));
    // do { ... } while (pc < K): K == 0 still runs once, to apply beta and the epilogue.
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b), pcb = block(g, "pc"), pcx = block(g, "pc.end");
    LLVMBuildBr(g->b, pcb);
    at(g, pcb);
    LLVMValueRef pc = LLVMBuildPhi(g->b, g->i64, "");
    LLVMValueRef zero64 = ci(g, 0);
    LLVMAddIncoming(pc, &zero64, &pre, 1);
    LLVMValueRef kb = smin(g, kcb, sub(g, K, pc));
    kb = LLVMBuildSelect(g->b, lt(g, kb, zero64), zero64, kb, "");
    LLVMValueRef first = LLVMBuildICmp(g->b, LLVMIntEQ, pc, zero64, "");
    LLVMValueRef loadc = LLVMBuildOr(g->b, LLVMBuildNot(g->b, first, ""),
                                     LLVMBuildFCmp(g->b, LLVMRealUNE, beta, cf(g, 0), ""), "");
    LLVMValueRef beff = LLVMBuildSelect(g->b, first, beta, cf(g, 1), "");
    LLVMValueRef last = LLVMBuildNot(g->b, lt(g, add(g, pc, kcb), K), "");
    LLVMValueRef bsrc = spec->trans_b ? gep(g, B, add(g, mul(g, jc, ldb), pc)) : gep(g, B, add(g, mul(g, pc, ldb), jc));
    // B in place: when op(B) = B and this part has few A slivers, packing the
    // panel costs more than it saves; full slivers are then read from B itself
    // (row stride ldb) and only a partial last sliver is packed.
    LLVMValueRef direct = LLVMConstInt(g->i1, 0, 0);
    if (!spec->trans_b && blk->bdirect > 0)
        direct = LLVMBuildICmp(g->b, LLVMIntSLE, sub(g, m1, m0), ci(g, (int64_t)blk->bdirect * MR), "");
    LLVMValueRef nfull = mul(g, div_(g, nb, ci(g, NR)), ci(g, NR));
    LLVMValueRef pskip = LLVMBuildSelect(g->b, direct, nfull, zero64, "");   // columns not packed
    call_fn(g, pack_b, (LLVMValueRef[]){gep(g, bsrc, pskip), ldb, kb, sub(g, nb, pskip), gep(g, bp, mul(g, pskip, kb))}, 5);

    // A block: MC x KC in MR-row slivers (sliver s at ap + s*MR*kb), then every
    // B sliver of the panel against every A sliver of the block.
    LLVMValueRef ic = loop_open(g, &lic, m0, m1, "ic");
    LLVMValueRef mcb = smin(g, ci(g, MC), sub(g, m1, ic));
    Loop lpa, lir;
    LLVMValueRef ir = loop_open(g, &lpa, zero64, mcb, "pa");
    LLVMValueRef row = add(g, ic, ir);
    LLVMValueRef asrc = spec->trans_a ? gep(g, A, add(g, mul(g, pc, lda), row)) : gep(g, A, add(g, mul(g, row, lda), pc));
    call_fn(g, pack_a, (LLVMValueRef[]){asrc, lda, smin(g, ci(g, MR), sub(g, mcb, ir)), kb, gep(g, ap, mul(g, ir, kb))}, 5);
    loop_close(g, &lpa, ci(g, MR));
    LLVMValueRef jr = loop_open(g, &ljr, zero64, nb, "jr");
    LLVMValueRef col = add(g, jc, jr), nrb = smin(g, ci(g, NR), sub(g, nb, jr));
    LLVMValueRef inplace = LLVMBuildAnd(g->b, direct, lt(g, jr, pskip), "");
    LLVMValueRef bsl = LLVMBuildSelect(g->b, inplace, gep(g, bsrc, jr), gep(g, bp, mul(g, jr, kb)), "");
    LLVMValueRef bstride = LLVMBuildSelect(g->b, inplace, ldb, ci(g, NR), "");
    ir = loop_open(g, &lir, zero64, mcb, "ir");
    row = add(g, ic, ir);
    LLVMValueRef mrb = smin(g, ci(g, MR), sub(g, mcb, ir));
    LLVMValueRef kargs[] = {gep(g, ap, mul(g, ir, kb)), bsl, kb, gep(g, C, add(g, mul(g, row, ldc), col)), ldc,
                            mrb, nrb, alpha, beff, loadc, last, gep(g, bias, col), bstride};
    LLVMValueRef isnarrow = LLVMBuildICmp(g->b, LLVMIntSLE, nrb, ci(g, g->V), "");
    LLVMValueRef isshort = LLVMBuildICmp(g->b, LLVMIntSLE, mrb, ci(g, mredge), "");
    LLVMBasicBlockRef wide = block(g, "k.wide"), narrow = block(g, "k.narrow"), low = block(g, "k.short"),
                      tall = block(g, "k.tall"), joined = block(g, "k.done");
    LLVMBuildCondBr(g->b, isnarrow, narrow, wide);
    at(g, wide);
    LLVMBuildCondBr(g->b, isshort, low, tall);
    LLVMBasicBlockRef blocks[] = {narrow, low, tall};
    LLVMValueRef fns[] = {kernel1, kshort, kernel};
    for (int i = 0; i < 3; i++) {
        at(g, blocks[i]);
        call_fn(g, fns[i], kargs, 13);
        LLVMBuildBr(g->b, joined);
    }
    at(g, joined);
    loop_close(g, &lir, ci(g, MR));
    loop_close(g, &ljr, ci(g, NR));
    loop_close(g, &lic, ci(g, MC));

    LLVMValueRef pcn = add(g, pc, kcb);
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    LLVMAddIncoming(pc, &pcn, &latch, 1);
    LLVMBuildCondBr(g->b, lt(g, pcn, K), pcb, pcx);
    at(g, pcx);
    loop_close(g, &ljc, ncb);
    LLVMBuildRetVoid(g->b);

    LLVMDisposeBuilder(g->b);
    return fn;
}

// ---------------------------------------------------------------------------
// A ready-to-call GEMM over the JIT and the pool.

// The IR is vectorised by hand, so most of O3 has nothing to do: this pipeline
// (inline the kernels, clean up, hoist, canonicalise loops) gives the speed of
// default<O3> (182 GFLOP/s at n = 1024 on one core, either way) in 20 ms instead
// of 80 ms of passes; code generation (~60 ms) is the rest of a variant's cost.
const char *const LLVM_GEMM_PASSES =
    "cgscc(inline),function(sroa,early-cse,instcombine,simplifycfg,loop-mssa(loop-rotate,licm),"
    "loop(indvars),gvn,instcombine,simplifycfg)";

struct LlvmGemm {
    LlvmJit *jit;
    LlvmGemmBlocking blk;
    RtPool *pool;
    pthread_mutex_t mu;   // guards the JIT, the functions and the workspace
    LlvmGemmFn fns[16];
    void *work;
    size_t work_bytes;
    unsigned id;
};

LlvmGemm *llvm_gemm_create(LlvmJit *jit, const LlvmGemmBlocking *blk, RtPool *pool) {
    static atomic_uint next_id;
    LlvmGemm *g = calloc(1, sizeof *g);
    if (!g) {
        llvm_jit_set_error(jit, "out of memory");
        return NULL;
    }
    g->jit = jit;
    const LlvmHost *h = llvm_jit_host(jit);
    g->blk = blk ? *blk : llvm_gemm_blocking(h->isa, h->fma);
    g->pool = pool;
    g->id = atomic_fetch_add(&next_id, 1);
    pthread_mutex_init(&g->mu, NULL);
    return g;
}

void llvm_gemm_destroy(LlvmGemm *g) {
    if (!g)
        return;
    pthread_mutex_destroy(&g->mu);
    free(g->work);
    free(g);
}

const LlvmGemmBlocking *llvm_gemm_get_blocking(const LlvmGemm *g) { return &g->blk; }

static int spec_index(const LlvmGemmSpec *s) { return s->trans_a | s->trans_b << 1 | s->bias << 2 | s->relu << 3; }

static LlvmGemmFn get_locked(LlvmGemm *g, const LlvmGemmSpec *spec) {
    int i = spec_index(spec);
    if (g->fns[i])
        return g->fns[i];
    char name[96];
    snprintf(name, sizeof name, "ltl_sgemm%u_%c%c%s%s", g->id, spec->trans_a ? 't' : 'n', spec->trans_b ? 't' : 'n',
             spec->bias ? "_bias" : "", spec->relu ? "_relu" : "");
    LLVMModuleRef mod = llvm_jit_new_module(g->jit, name);
    if (!llvm_gemm_emit(mod, &g->blk, spec, name)) {
        llvm_jit_set_error(g->jit, "GEMM: unsupported blocking (vec %d, %d x %d)", g->blk.vec, g->blk.mr, g->blk.nr);
        LLVMDisposeModule(mod);
        return NULL;
    }
    if (!llvm_jit_optimize(g->jit, mod, LLVM_GEMM_PASSES)) {
        LLVMDisposeModule(mod);
        return NULL;
    }
    if (!llvm_jit_add_module(g->jit, mod))
        return NULL;
    g->fns[i] = (LlvmGemmFn)llvm_jit_lookup(g->jit, name);
    return g->fns[i];
}

LlvmGemmFn llvm_gemm_get(LlvmGemm *g, const LlvmGemmSpec *spec) {
    pthread_mutex_lock(&g->mu);
    LlvmGemmFn f = get_locked(g, spec);
    pthread_mutex_unlock(&g->mu);
    return f;
}

bool llvm_gemm_run(LlvmGemm *g, const LlvmGemmSpec *spec, int nthreads, int64_t m, int64_t n, int64_t k,
                   float alpha, const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                   int64_t ldc, const float *bias) {
    // op(A) is m x k: stored m x k, or k x m when transposed; likewise B.
    int64_t acols = spec->trans_a ? m : k, bcols = spec->trans_b ? k : n;
    if (m < 0 || n < 0 || k < 0 || lda < (acols > 1 ? acols : 1) || ldb < (bcols > 1 ? bcols : 1) ||
        ldc < (n > 1 ? n : 1)) {
        llvm_jit_set_error(g->jit, "GEMM: bad sizes m=%lld n=%lld k=%lld lda=%lld ldb=%lld ldc=%lld", (long long)m,
                           (long long)n, (long long)k, (long long)lda, (long long)ldb, (long long)ldc);
        return false;
    }
    if ((spec->bias && !bias) || (m && n && (!c || (k && (!a || !b))))) {
        llvm_jit_set_error(g->jit, "GEMM: missing matrix or bias pointer");
        return false;
    }
    if (m == 0 || n == 0)
        return true;
    pthread_mutex_lock(&g->mu);
    LlvmGemmFn fn = get_locked(g, spec);
    if (!fn) {
        pthread_mutex_unlock(&g->mu);
        return false;
    }
    int64_t threads = nthreads > 0 ? nthreads : g->pool ? rt_pool_size(g->pool) : 1;
    int64_t parts = g->pool ? llvm_gemm_parts(&g->blk, m, n, k, threads) : 1;
    size_t stride = (llvm_gemm_work_size(&g->blk) + 63) & ~(size_t)63;
    if (g->work_bytes < stride * (size_t)parts) {
        free(g->work);
        g->work_bytes = 0;
        g->work = aligned_alloc(64, stride * (size_t)parts);
        if (!g->work) {
            pthread_mutex_unlock(&g->mu);
            llvm_jit_set_error(g->jit, "GEMM: out of memory for the packing buffers");
            return false;
        }
        g->work_bytes = stride * (size_t)parts;
    }
    LlvmGemmArgs args = {.a = a, .b = b, .c = c, .bias = bias, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb,
                         .ldc = ldc, .alpha = alpha, .beta = beta, .work = g->work,
                         .work_stride = (int64_t)stride,
                         .parts_m = llvm_gemm_split(&g->blk, m, n, k, parts)};
    if (parts == 1)
        fn(&args, 0, 1);
    else
        rt_pool_run(g->pool, parts, fn, &args);
    pthread_mutex_unlock(&g->mu);
    return true;
}
