// llvm.h — the LLVM layer of the compiler (prefix llvm_): a JIT wrapper around
// ORC LLJIT and the generators of LLVM IR (for now the fp32 GEMM).
// Exports are grouped by file. See docs/backend-cpu.md.
#ifndef LTL_LLVM_H
#define LTL_LLVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

typedef struct RtPool RtPool;   // runtime/rt.h

//
// llvm_jit.c — host detection, optimisation, ORC LLJIT, object emission.
//
// An LlvmJit is not thread-safe: one thread at a time builds modules in its
// context and adds or looks them up (llvm_gemm serialises with a mutex).
// Every function that can fail returns false/NULL and leaves a message in
// llvm_jit_error(); nothing aborts.

typedef enum { LLVM_ISA_GENERIC, LLVM_ISA_AVX2, LLVM_ISA_AVX512 } LlvmIsa;

typedef struct LlvmHost {
    char triple[128];
    char cpu[64];          // e.g. "znver5", "sapphirerapids"
    char *features;        // "+avx512f,+fma,..." (owned by the host)
    LlvmIsa isa;           // widest vector ISA we generate for
    int vec_bits;          // 512, 256 or 128
    bool fma, avx2, avx512f, avx512bf16;
} LlvmHost;

typedef struct LlvmJit LlvmJit;

// Initialises the native target once per process and starts an LLJIT for the
// host, with libc/libm (the whole process) visible to JIT code.
LlvmJit *llvm_jit_create(char *err, size_t errlen);
void llvm_jit_destroy(LlvmJit *jit);
const char *llvm_jit_error(const LlvmJit *jit);
void llvm_jit_set_error(LlvmJit *jit, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const LlvmHost *llvm_jit_host(const LlvmJit *jit);
LLVMContextRef llvm_jit_context(LlvmJit *jit);
LLVMTargetMachineRef llvm_jit_target_machine(LlvmJit *jit);

// A module in the JIT's context with the host triple and data layout set.
LLVMModuleRef llvm_jit_new_module(LlvmJit *jit, const char *name);
// Verifies, then runs a pass pipeline (NULL: "default<O3>") with the host TM.
bool llvm_jit_optimize(LlvmJit *jit, LLVMModuleRef mod, const char *passes);
// Hands the module to the JIT (it owns it afterwards, even on failure).
bool llvm_jit_add_module(LlvmJit *jit, LLVMModuleRef mod);
// Adds a relocatable object made by llvm_jit_emit_object (the compiled-code cache).
bool llvm_jit_add_object(LlvmJit *jit, const void *obj, size_t len);
// Address of a JIT symbol; code generation happens here, on first lookup.
void *llvm_jit_lookup(LlvmJit *jit, const char *name);
// Object code of an optimised module, in malloc'd memory (module kept).
bool llvm_jit_emit_object(LlvmJit *jit, LLVMModuleRef mod, void **obj, size_t *len);
// Textual IR of a module (`ltlc emit llvm`); free with free().
char *llvm_print_module(LLVMModuleRef mod);
// Declaration of an overloaded intrinsic, e.g. ("llvm.fma", <16 x float>).
LLVMValueRef llvm_intrinsic(LLVMModuleRef mod, const char *name, LLVMTypeRef *types, size_t ntypes);
// Parses a host-feature string; exposed so tests can force a narrower ISA.
void llvm_host_from_features(LlvmHost *host, const char *cpu, const char *features);

//
// llvm_gemm.c — fp32 GEMM generated as LLVM IR:
//     C = epilogue(alpha * op(A) * op(B) + beta * C)
// row-major, op(X) = X or X^T, leading dimensions in elements.
// Epilogue (applied once, after the last K block): + bias[j] per column, then
// ReLU. More epilogues (other activations, a residual add) slot in there.
//

typedef struct LlvmGemmSpec {
    bool trans_a, trans_b;   // op(A) = A^T (A stored K x M), op(B) = B^T (B stored N x K)
    bool bias;               // add bias[j] (length N) to every row
    bool relu;               // max(x, 0) last; NaN stays NaN
} LlvmGemmSpec;

// Register and cache blocking, fixed when the code is generated.
typedef struct LlvmGemmBlocking {
    LlvmIsa isa;
    int vec;       // floats per vector: 16, 8 or 4
    int mr, nr;    // micro-tile: mr rows x nr columns (nr = 2 vectors)
    int kc;        // K block: an mr x kc panel of A stays in L1
    int nc;        // N block: a kc x nc panel of B stays in L2
    int mc;        // M rows whose packed A is reused over one B panel: mr here (see docs)
    int unroll;    // k steps per trip of the micro-kernel's loop
    int prefetch;  // B prefetch distance in k steps (0: none)
    bool fma;      // llvm.fma (hardware FMA) or llvm.fmuladd
} LlvmGemmBlocking;

// Arguments of a generated GEMM; the IR reads this exact layout.
typedef struct LlvmGemmArgs {
    const float *a, *b;
    float *c;
    const float *bias;            // used when spec.bias
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;            // beta == 0: C is not read (may hold NaN)
    void *work;                   // nparts * work_stride bytes, 64-byte aligned
    int64_t work_stride;          // >= llvm_gemm_work_size(), multiple of 64
    int64_t parts_m;              // the nparts tasks form a parts_m x (nparts/parts_m) grid
} LlvmGemmArgs;

// The generated entry point; its signature is rt_task_fn, so a pool runs it
// directly: part p of nparts computes one block of C, alone.
typedef void (*LlvmGemmFn)(void *args, int64_t part, int64_t nparts);

// Blocking for an ISA and the host's caches (sysconf, then sysfs, then defaults).
LlvmGemmBlocking llvm_gemm_blocking(LlvmIsa isa, bool fma);
size_t llvm_gemm_work_size(const LlvmGemmBlocking *blk);
// How to cut an m x n product into nparts (returns parts_m).
int64_t llvm_gemm_split(const LlvmGemmBlocking *blk, int64_t m, int64_t n, int64_t k, int64_t nparts);
// Adds the GEMM `name` (an LlvmGemmFn) and its internal helpers to mod.
LLVMValueRef llvm_gemm_emit(LLVMModuleRef mod, const LlvmGemmBlocking *blk,
                            const LlvmGemmSpec *spec, const char *name);

// A ready-to-call GEMM: JIT-compiles each spec on first use (16 variants) and
// splits the work over a pool (NULL: the calling thread only).
typedef struct LlvmGemm LlvmGemm;
LlvmGemm *llvm_gemm_create(LlvmJit *jit, const LlvmGemmBlocking *blk, RtPool *pool);
void llvm_gemm_destroy(LlvmGemm *g);
const LlvmGemmBlocking *llvm_gemm_get_blocking(const LlvmGemm *g);
LlvmGemmFn llvm_gemm_get(LlvmGemm *g, const LlvmGemmSpec *spec);  // NULL + llvm_jit_error on failure
// nthreads <= 0: the pool's size. Returns false (message in llvm_jit_error) on failure.
bool llvm_gemm_run(LlvmGemm *g, const LlvmGemmSpec *spec, int nthreads,
                   int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb,
                   float beta, float *c, int64_t ldc, const float *bias);

#endif
