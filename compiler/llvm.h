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
// `ltlc build --cpu=NAME`: every JIT created afterwards targets NAME (generic, x86-64-v3,
// x86-64-v4) instead of the host; "native" restores the host. False for an unknown NAME.
bool llvm_jit_set_target(const char *name);
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
    int kc;        // K block (K is cut into equal blocks <= kc): an mr x kc sliver of A stays in L1
    int nc;        // N block: a kc x nc panel of B stays in L2
    int mc;        // M block packed at once; mc = mr (default): one A sliver, packed just before use
    int unroll;    // k steps per trip of the micro-kernel's loop
    int prefetch;  // B prefetch distance in k steps (0: none)
    int bdirect;   // op(B) = B is read in place when a part has at most this many A slivers
    int mredge;    // slivers of at most this many rows (the last of M) run a kernel that tall (0 or >= mr: none)
    bool fma;      // llvm.fma (hardware FMA) or llvm.fmuladd
} LlvmGemmBlocking;

// Arguments of a generated GEMM; the IR reads this exact layout.
typedef struct LlvmGemmArgs {
    const float *a, *b;
    float *c;
    const float *bias;            // used when spec.bias
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;            // beta == 0: the old C is ignored (may hold NaN)
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
// How many parts an m x n x k product is worth on nthreads (>= 1 MFLOP each).
int64_t llvm_gemm_parts(const LlvmGemmBlocking *blk, int64_t m, int64_t n, int64_t k, int64_t nthreads);
// How to cut an m x n product into nparts (returns parts_m).
int64_t llvm_gemm_split(const LlvmGemmBlocking *blk, int64_t m, int64_t n, int64_t k, int64_t nparts);
// The pass pipeline for a module of GEMMs (for llvm_jit_optimize).
extern const char *const LLVM_GEMM_PASSES;
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
// Uses at most nthreads parts (<= 0: the pool's size), fewer for small products
// (llvm_gemm_parts). Returns false (message in llvm_jit_error) on failure.
bool llvm_gemm_run(LlvmGemm *g, const LlvmGemmSpec *spec, int nthreads,
                   int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb,
                   float beta, float *c, int64_t ldc, const float *bias);


//
// llvm_gemm16.c — bf16 GEMM with f32 accumulation: C = bf16(op(A)) * bf16(op(B)), row-major
// f32 operands rounded to bf16 (ties to even) while packed; AMX tiles where the host and
// the OS allow them, else vdpbf16ps (LLVM IR) with AVX512-BF16, else a C kernel.  Splits
// over the pool like llvm_gemm_run.
typedef struct LlvmGemm16 LlvmGemm16;
typedef enum { LLVM_GEMM16_AMX, LLVM_GEMM16_AVX512, LLVM_GEMM16_PORTABLE } LlvmGemm16Kind; // the best allowed
LlvmGemm16 *llvm_gemm16_create(LlvmJit *jit, RtPool *pool, LlvmGemm16Kind want);
void llvm_gemm16_destroy(LlvmGemm16 *g);
const char *llvm_gemm16_kernel(LlvmGemm16 *g); // compiles it: "amx", "vdpbf16ps" or "c"; NULL on failure
bool llvm_gemm16_run(LlvmGemm16 *g, bool trans_a, bool trans_b, int nthreads, int64_t m, int64_t n, int64_t k,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc);
// The compiled step's 16-bit GEMM (AMX only): variant v (trans_a | trans_b << 1 | bias << 2 |
// relu << 3) as an LlvmGemmFn over LlvmGemmArgs, each part packing into its work slot
// (work_stride >= llvm_gemm16_step_work()).  Usable when the host has AMX-BF16 and Linux
// grants the tile state.
bool llvm_gemm16_step_usable(const LlvmHost *h);
size_t llvm_gemm16_step_work(void);
LlvmGemmFn llvm_gemm16_step_fn(int v);
//
// fuse.c, llvm_step.c, llvm_step_kern.c — the whole-step CPU backend (prefixes fuse_,
// llvm_step_). A step graph (after sema_simplify) is grouped into kernels and every
// intermediate value gets a place in one scratch arena (fuse_plan); the kernels become one
// LLVM module with one entry point, JIT-compiled for the host (llvm_step_compile), and an
// executor binds the flat buffers and runs it. See docs/backend-cpu.md, "The step compiler".
//
#include <stdio.h>
#include "ir.h"

// ---- fuse.c: kernels and the memory plan ----

typedef enum {
    FUSE_ELEMWISE,    // one loop nest: elementwise and broadcast ops, casts, compares, where,
                      // one_hot, dropout, rand_*, strided copies; several outputs
    FUSE_GEMM,        // matmul (+ bias) (+ relu); transposed operands become GEMM flags
    FUSE_REDUCE,      // sum / mean / max over any axes
    FUSE_SOFTMAX,     // softmax / log_softmax along an axis
    FUSE_ARGMAX,
    FUSE_CLASS_LOSS,  // cross_entropy / nll_loss
    FUSE_PAIR_LOSS,   // mse_loss / bce_with_logits
    FUSE_CONV,        // conv2d (+ bias) (+ relu), conv2d_bwd_data, conv2d_bwd_filter: im2col + GEMM
    FUSE_POOL,        // max_pool2d, max_pool2d_bwd
    FUSE_TAKE,        // take (embedding) and take_grad (its scatter-add backward)
    FUSE_COPY,        // an UPDATE output copied into its input's slot at the end of the step
    FUSE_FALLBACK,    // one node run by the reference interpreter (interp_node) on doubles
    FUSE_NKINDS
} FuseKind;

// The buffers a compiled step addresses: bases[i] of its entry point.
// FUNCS holds the 16 shared GEMM entry points (spec bits ta | tb << 1 | bias << 2 | relu << 3),
// so a compiled module has no absolute address in it.
enum { FUSE_BASE_ARENA, FUSE_BASE_PARAM, FUSE_BASE_BUFFER, FUSE_BASE_STATE, FUSE_BASE_CONST,
       FUSE_BASE_STATUS, FUSE_BASE_FUNCS, FUSE_BASE_DATA /* + i: the plan's data[i] */ };

typedef enum {
    FUSE_NONE,   // never stored: folded into a GEMM / conv epilogue, or unused
    FUSE_IMM,    // every element is `imm` (an immediate inside loops); never stored
    FUSE_REG,    // lives only in the registers of its kernel's loop
    FUSE_MEM,    // has its own bytes at bases[base] + offset
    FUSE_VIEW,   // reads the bytes of `of` (reshape, permute, broadcast, slice: no copy)
} FuseHow;

typedef struct FuseValue {
    FuseHow how;
    bool splat;                   // every element is `imm` (IMM, or a constant also stored)
    double imm;
    int base;                     // FUSE_MEM: a FUSE_BASE_*
    int64_t offset, bytes;        // FUSE_MEM
    int of;                       // MEM, VIEW: the FUSE_MEM value read (itself when MEM)
    int64_t voff;                 // MEM, VIEW: element offset into `of`
    int64_t stride[IR_MAX_RANK];  // MEM, VIEW: elements per step of each dimension
    int kernel;                   // position of the kernel computing it, -1 if none
    int last;                     // position of the last kernel reading its bytes
} FuseValue;

typedef struct FuseKernel {
    FuseKind kind;
    int *node, nnode;     // the nodes it computes, in graph order
    int *out, nout;       // the values it writes (FUSE_MEM)
    IrShape shape;        // FUSE_ELEMWISE: the loop shape
    int op;               // the main node (matmul, conv, reduction, ...); -1 for ELEMWISE, COPY
    int result;           // GEMM, CONV: the node holding the result, after the epilogue
    int bias;             // GEMM, CONV: the bias value the epilogue adds, else -1
    bool relu;            // GEMM, CONV: relu last
    bool out_t;           // GEMM: computes (AB)^T directly; `result` permutes the product
    int nparts;           // tasks it is cut into (1: runs on the calling thread)
    int64_t scratch, scratch_bytes;  // arena bytes only it uses (GEMM packing, im2col, ...)
    int copy_src, copy_dst;          // COPY: value copied into the slot of input copy_dst
} FuseKernel;

typedef struct FuseOptions {
    int nthreads;                 // the kernels are cut for this many threads (>= 1)
    bool grads;                   // GRAD outputs stay readable (else only what updates need)
    const LlvmGemmBlocking *blk;  // GEMM blocking (required): packing buffers and tiles
    bool no_reuse;                // debugging: every value keeps its bytes to the end
} FuseOptions;

typedef struct FusePlan {
    const IrGraph *g;             // not owned; must outlive the plan
    FuseOptions opt;
    FuseValue *val;               // per node
    int **in;                     // per node: operands as kernels read them (epilogues redirect)
    FuseKernel *k;                // in execution order
    int nk;
    int64_t arena_bytes;          // every intermediate value and kernel scratch
    unsigned char *consts;        // constant tensors: bases[FUSE_BASE_CONST]
    int64_t const_bytes;
    int *data, ndata;             // DATA and GRAD inputs: bases[FUSE_BASE_DATA + i] holds data[i]
    int64_t gemm_stride;          // GEMM packing bytes per task (64-byte multiple)
} FusePlan;

FusePlan *fuse_plan(const IrGraph *g, const FuseOptions *opt, char *err, size_t errlen);
void fuse_free(FusePlan *p);
const char *fuse_kind_name(FuseKind k);
// `ltlc emit fused`: one line per kernel: the nodes it fuses, what it reads and writes, and
// where (arena offsets), then the arena's size.
void fuse_print(FILE *f, const FusePlan *p);
// Whether the CPU backend generates code for node `id` (false: the interpreter fallback).
bool fuse_is_native(const FusePlan *p, int id);
// The product a FUSE_GEMM kernel computes, read the same way by the CPU and CUDA backends:
// C' = op(A') op(B') (+ bias) (relu), where A', B' are the matmul's operands (swapped when the
// kernel computes the product transposed, out_t) and op() transposes when ta / tb; strides in elements.
typedef struct FuseGemm {
    int a, b;                      // the values A' and B' read
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    int nb;                        // batch dimensions of the product, and their sizes' product
    int64_t batch;
    int64_t bst[3][IR_MAX_RANK];   // per batch dimension: the strides of A', B' and C
} FuseGemm;
FuseGemm fuse_gemm(const FusePlan *p, int kid);

// ---- llvm_step.c: compile a step once, run it many times ----
//
// The module's entry point is  void step(void *const *bases, const LlvmStepCtx *ctx):
// bases[] are the buffers above; every kernel is a function (args, part, nparts) that the
// entry calls directly or through ctx->run (rt_pool_run) with a fixed number of parts.

typedef struct LlvmStepCtx {
    RtPool *pool;
    void (*run)(RtPool *pool, int64_t count, void (*fn)(void *, int64_t, int64_t), void *arg);
    void (*fallback)(void *exec, int64_t kernel, void **args);   // FUSE_FALLBACK kernels
    void *exec;
    void (*tick)(void *exec, int64_t kernel);   // after each kernel when compiled with profile
} LlvmStepCtx;

typedef struct LlvmStepOptions {
    int nthreads;         // 0: rt_cpu_count(); 1: everything on the calling thread
    RtPool *pool;         // a pool to share (its size is the thread count; not owned), or NULL
    bool grads;           // GRAD outputs readable after a run
    bool keep_ir;         // keep the module's text for llvm_step_ir
    bool optimized_ir;    // ... after O3 instead of as generated
    bool no_reuse;        // debugging: arena bytes are never reused (llvm_step_value works)
    bool profile;         // time every kernel (llvm_step_profile)
} LlvmStepOptions;

typedef struct LlvmStep LlvmStep;

// Plans, generates, optimises (O3, host CPU) and JIT-compiles g, which must outlive the
// result. NULL with a message on failure.
LlvmStep *llvm_step_compile(const IrGraph *g, const LlvmStepOptions *opt, char *err, size_t errlen);
void llvm_step_free(LlvmStep *s);
const FusePlan *llvm_step_plan(const LlvmStep *s);
const char *llvm_step_ir(const LlvmStep *s);     // NULL unless compiled with keep_ir
double llvm_step_compile_seconds(const LlvmStep *s);
int llvm_step_threads(const LlvmStep *s);
// Binds the caller's flat buffer of the PARAM, BUFFER or STATE inputs (ir_layout(g, kind)).
void llvm_step_bind(LlvmStep *s, IrInputKind kind, void *flat);
// Points a DATA or GRAD input at the caller's bytes (in its dtype), read by the next runs.
void llvm_step_set_input(LlvmStep *s, int input, const void *data);
// One step. UPDATE outputs are written into their inputs' slots of the bound buffers.
// NULL, or a message (a class index out of range, an unbound input).
const char *llvm_step_run(LlvmStep *s);
// Output i of the graph (g->out[i]) after a run, in its dtype; UPDATE outputs point into the
// bound slot. NULL for a GRAD output compiled without grads.
const void *llvm_step_output(const LlvmStep *s, int i);
double llvm_step_scalar(const LlvmStep *s, int i);   // element 0 of output i
// Element 0 of node id when it is the value of an output (StepGraph.loss, logs[k].id): the
// executor's interp_scalar. NAN when it is not an output.
double llvm_step_scalar_of(const LlvmStep *s, int id);
// `ltlc emit fused|llvm`: prints the kernels and memory plan of g (fuse_print) or the
// step's LLVM module (as generated; after O3 with optimized). false with a message on failure.
bool llvm_step_emit(FILE *out, const IrGraph *g, bool llvm_ir, bool optimized, char *err, size_t errlen);
// Compiled with profile: seconds spent in each kernel (plan order) over all runs so far.
const double *llvm_step_profile(const LlvmStep *s);
// Debugging (compiled with no_reuse): the bytes of any stored value after a run, else NULL.
const void *llvm_step_value(const LlvmStep *s, int id);

// `ltlc build` (compiler/build.c): each step compiled from now on also hands its object code
// (entry symbol `entry`, calling the GEMM variants in gemm_mask) to sink, and the cache is
// not used. NULL turns it off.
typedef void (*LlvmStepObjectSink)(void *ctx, const IrGraph *g, const LlvmStepOptions *o, int nthreads,
                                   const char *entry, uint32_t gemm_mask, const void *obj, size_t len);
void llvm_step_set_object_sink(LlvmStepObjectSink sink, void *ctx);
// step_exec.c: what identifies a step's code apart from the host and the thread count: the
// graph (printed, plus the raw bits of attributes and constants) and grads, no_reuse, profile.
// False when out of memory.
bool llvm_step_graph_key(const IrGraph *g, const LlvmStepOptions *o, uint64_t key[2]);

// The compiled-code cache (docs/backend-cpu.md, "Compiled-code cache"): a step's object code,
// and each shared GEMM variant's, stored under a hash of the graph, the options, the host,
// the blocking and the compiler's build, in $XDG_CACHE_HOME/ltl (else ~/.cache/ltl). A hit
// links the stored object instead of generating code. LTL_CACHE=0, keep_ir, or a directory
// that cannot be created or written: no cache, silently. A bad file is ignored and rewritten.
typedef enum {
    LLVM_CACHE_OFF,    // the cache was not used
    LLVM_CACHE_MISS,   // compiled; the object was stored (if the directory takes it)
    LLVM_CACHE_HIT,    // linked from the cache, nothing generated
} LlvmCacheState;
LlvmCacheState llvm_step_cache_state(const LlvmStep *s);
bool llvm_step_cache_hit(const LlvmStep *s);
// The step's cache file (read or written), or NULL when the cache was not used.
const char *llvm_step_cache_file(const LlvmStep *s);
// The cache directory (created if needed) into out; false when LTL_CACHE=0 or it is unusable.
bool llvm_cache_dir(char *out, size_t n);


// ---- internal: shared by llvm_step.c (module, entry point), step_exec.c (the executor,
// no LLVM), step_aot.c (a built program's steps) and llvm_step_kern.c (the kernels' loops) ----

struct LlvmStep {
    const IrGraph *g;
    FusePlan *plan;
    LlvmJit *jit;
    void (*free_code)(LlvmJit *jit);   // frees jit with the step (NULL: nothing to free)
    RtPool *pool, *own_pool;           // own_pool: created here, destroyed with the step
    int nthreads;
    void (*entry)(void *const *bases, const LlvmStepCtx *ctx);
    void **bases;
    int nbases;
    unsigned char *arena, *consts;
    int64_t status[4];
    void *funcs[32];                   // the shared GEMMs this step calls (16 + i: 16-bit variant i)
    LlvmStepCtx ctx;
    char *ir;
    double compile_s;
    LlvmCacheState cache;
    char *cache_file;                  // the object's file when the cache was used
    double *prof, last_tick;
    char msg[512];
};
// step_exec.c: the executor's memory and context once plan, entry and funcs are set; false
// with a message (s freed) on failure.
bool llvm_step_exec_init(LlvmStep *s, const LlvmStepOptions *o, char *err, size_t errlen);

typedef struct LlvmStepBuf {
    int base;        // FUSE_BASE_*
    int64_t off;     // bytes from bases[base]
} LlvmStepBuf;

typedef struct LlvmStepGen {
    const FusePlan *p;
    const IrGraph *g;
    const LlvmHost *host;
    const LlvmGemmBlocking *blk;
    LLVMContextRef cx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef i1, i8, i32, i64, f32, f64, ptr, voidt;
    LLVMValueRef fn;              // the function being built
    LLVMValueRef gemm[32];        // GEMM variants the module calls: ta | tb << 1 | bias << 2 | relu << 3,
                                  // + 16 for the 16-bit GEMM (llvm_gemm16_step_fn)
    bool gemm16;                  // the 16-bit GEMM may run GEMMs whose operands are bf16 values
    char prefix[32];              // of every symbol of the module
    LlvmStepBuf *buf;             // the current kernel's buffers: args[i] of its task function
    int nbuf, capbuf;
    LLVMValueRef *bufp;           // ... as the body's parameters
} LlvmStepGen;

// Emits kernel kid as a task function fn(void **args, int64 part, int64 nparts) and leaves
// in gen->buf the buffers args[] must hold. A conv2d_bwd_filter has a second phase (1) that
// sums its partial products. NULL (with err) when the kernel cannot be generated.
LLVMValueRef llvm_step_kernel(LlvmStepGen *gen, int kid, int phase, char *err, size_t errlen);
// Marks a GEMM variant as used and returns its index in the table bases[FUSE_BASE_FUNCS],
// from which a kernel loads the entry point (llvm_step_compile fills the table).
LLVMValueRef llvm_step_gemm_fn(LlvmStepGen *gen, bool ta, bool tb, bool bias, bool relu);
// llvm_step.c: the GEMMs every step calls, JIT-compiled once per process (two LlvmGemm
// libraries, each in a JIT of its own, so two variants compile at once), and their blocking.
LlvmGemmFn llvm_step_shared_gemm(const LlvmGemmSpec *spec);
const LlvmGemmBlocking *llvm_step_shared_blocking(void);
// fuse.c: the view of a layout node that a copy loop reads (of, voff, stride).
bool fuse_layout_view(const FusePlan *p, int id, FuseValue *out);

#endif
