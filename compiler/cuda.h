// cuda.h — the CUDA backend (prefix cuda_): CUDA C generated from the CPU backend's fused
// plan (cuda_emit.c), compiled at run time by NVRTC (cuda_nvrtc.c) and run through the
// driver API (cuda_rt.c). No CUDA header is included and no CUDA library is linked: NVRTC,
// libcuda and cuBLASLt are dlopen'ed, so ltlc builds and runs on machines without them.
// See docs/backend-cuda.md.
#ifndef LTL_CUDA_H
#define LTL_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "llvm.h"

// ---- cuda_emit.c: one CUDA C translation unit per step ----
//
// Every kernel is `LTL_KERNEL name(char *const *B)`: B[i] are the plan's bases
// (FUSE_BASE_*; B[FUSE_BASE_DATA + i] the plan's data[i]); shapes, strides and offsets are
// constants in the code. Every kernel walks its work with grid-stride loops, so any grid
// size computes the same result (the host shim runs few blocks). The source is valid CUDA
// for NVRTC and valid C17 for the host compiler with tests/cuda_shim.h included first.

typedef enum {
    CUDA_K_DEVICE,   // a __global__ kernel launched with (grid, block)
    CUDA_K_COPY,     // a device-to-device copy of `bytes` (FUSE_COPY)
    CUDA_K_HOST,     // FUSE_FALLBACK: the interpreter runs the node on the host
} CudaKernelKind;

// A plan GEMM as cuBLASLt takes it (cuda_blas.c): C = epilogue(op(A) op(B)), row-major,
// leading dimensions and batch strides in elements, operands at byte offsets of bases.
typedef struct CudaGemm {
    bool ok;                // describable (batch dims collapse to one stride per matrix)
    bool ta, tb, relu, bias;
    int64_t m, n, k, lda, ldb, ldc, batch, sa, sb, sc;
    int abase, bbase, cbase, biasbase;
    int64_t aoff, boff, coff, biasoff;
    int fast16;             // IR_BF16 / IR_F16: both operands hold such values (the mixed modes'
                            // casts), so tensor cores compute it exactly (FAST_16BF / 16F); else 0
} CudaGemm;

typedef struct CudaKernel {
    CudaKernelKind kind;
    CudaGemm gemm;          // a FUSE_GEMM kernel: its cuBLASLt form (else gemm.ok false)
    char name[32];          // CUDA_K_DEVICE: the symbol, e.g. "ltl_k3" or "ltl_k7_zero"
    int plan_kernel;        // the FuseKernel it belongs to
    int grid, block;        // launch configuration on a GPU (block is always CUDA_BLOCK)
    int64_t work;           // independent work items (elements, rows, outputs)
    int src_base, dst_base; // CUDA_K_COPY: bases and byte offsets
    int64_t src_off, dst_off, bytes;
} CudaKernel;

typedef struct CudaProgram {
    char *source;           // the whole translation unit (malloc'd)
    CudaKernel *k;
    int nk;
    const FusePlan *plan;   // not owned
} CudaProgram;

enum { CUDA_BLOCK = 256, CUDA_MAX_GRID = 65535 };

// Generates the CUDA C of every kernel of plan p (which must outlive the program).
// false with a message when a kernel cannot be generated (an unsupported dtype).
bool cuda_emit(const FusePlan *p, CudaProgram *out, char *err, size_t errlen);
void cuda_program_free(CudaProgram *prog);
// The plan the CUDA backend uses: fuse_plan with one part per kernel (the grid replaces
// the CPU's parts). NULL with a message.
FusePlan *cuda_plan(const IrGraph *g, bool grads, char *err, size_t errlen);
// `ltlc emit cuda`: the generated source of g's step. false with a message.
bool cuda_emit_step(FILE *out, const IrGraph *g, char *err, size_t errlen);

// ---- cuda_conv.c: convolutions as implicit GEMMs (docs/backend-cuda.md) ----

// A launch of a generated convolution kernel: symbol "ltl_k<kid>" + suffix, and the blocks
// of CUDA_BLOCK threads it wants (any grid computes the same result).
typedef struct CudaConvLaunch {
    char suffix[8];
    int64_t blocks;
} CudaConvLaunch;
// Writes the CUDA C of plan kernel kid (FUSE_CONV: conv2d with its bias / relu epilogue,
// conv2d_bwd_data or conv2d_bwd_filter) to f and its launches, in order, to l; returns
// their number (1, or 2 for a weight gradient split over blocks), -1 with a message.
int cuda_conv_emit(FILE *f, const FusePlan *p, int kid, CudaConvLaunch l[2], char *err, size_t errlen);

// ---- cuda_nvrtc.c: run-time compilation (libnvrtc, dlopen'ed) ----

// The NVRTC library: $LTL_NVRTC_LIB if set (tests point it at a missing file), else
// libnvrtc.so.13 / libnvrtc.so in the default path, then /usr/local/cuda/lib64.
bool cuda_nvrtc_available(char *err, size_t errlen);
// NVRTC's version as major*1000 + minor*10 (13000), 0 when absent.
int cuda_nvrtc_version(void);

typedef struct CudaBuild {
    void *cubin;            // malloc'd
    size_t size;
    char *log;              // NVRTC's program log incl. the ptxas report (malloc'd, may be "")
    bool cached;            // read from the on-disk cache instead of compiled
} CudaBuild;

// Compiles source to a CUBIN for sm_<arch> (80, 90, ...) with --ptxas-options=-v, through
// the on-disk cache ($XDG_CACHE_HOME/ltl/cuda-*.cubin; key: source, arch, NVRTC version).
// false with a message (including the compiler's log) on failure.
bool cuda_nvrtc_compile(const char *source, int arch, bool use_cache, CudaBuild *out, char *err, size_t errlen);
void cuda_build_free(CudaBuild *b);

// One function's line of the ptxas report.
typedef struct CudaPtxasInfo {
    char name[64];
    int registers;
    int64_t smem, stack, spill_stores, spill_loads;
} CudaPtxasInfo;
// Parses the ptxas -v report in an NVRTC log; returns the number of functions found (at
// most max), -1 when the log holds a ptxas warning or error line.
int cuda_ptxas_parse(const char *log, CudaPtxasInfo *info, int max);

// ---- cuda_blas.c: cuBLASLt (libcublasLt.so.13, dlopen'ed) for the plan's GEMMs ----

typedef struct CudaBlas CudaBlas;
// Loads cuBLASLt ($LTL_CUBLASLT_LIB, else libcublasLt.so.13 from the default path or
// /usr/local/cuda/lib64) and creates a handle; NULL with a message.
CudaBlas *cuda_blas_create(char *err, size_t errlen);
void cuda_blas_destroy(CudaBlas *b);
// Prepares kernel g's descriptors, epilogue and algorithm once (heuristic; fp32 compute, or
// g->fast16's tensor-core compute type, falling back to fp32 when it has no algorithm);
// returns a plan index >= 0, or -1 with a message (then the generated kernel is used).
int cuda_blas_prepare(CudaBlas *b, const CudaGemm *g, char *err, size_t errlen);
// Whether plan runs on tensor cores (a CUBLAS_COMPUTE_32F_FAST_16BF / 16F compute type).
bool cuda_blas_fast16(const CudaBlas *b, int plan);
// Enqueues GEMM `plan` on stream with the device addresses of its bases. false + message.
bool cuda_blas_run(CudaBlas *b, int plan, const unsigned long long *bases, void *stream, char *err, size_t errlen);

// ---- cuda_nccl.c: NCCL (libnccl.so.2, dlopen'ed) for ddp's gradient all-reduce on GPUs ----

// Whether NCCL loads ($LTL_NCCL_LIB, else libnccl.so.2 from the default path, then
// /usr/local/cuda/lib64) and is 2.10 or newer (ncclAvg). false with a message.
bool cuda_nccl_available(char *err, size_t errlen);
// Joins rank of world's communicator on the current device (rank 0's unique id through
// rt_dist_broadcast); once per process, collective over the ranks. false with a message.
bool cuda_nccl_init(int rank, int world, char *err, size_t errlen);
int cuda_nccl_world(void);   // the communicator's size, 0 before cuda_nccl_init
// Enqueues the in-place average over the ranks of n f32 (f64) elements at device address
// buf on stream. false with a message.
bool cuda_nccl_allreduce_avg(unsigned long long buf, int64_t n, bool f64, void *stream, char *err, size_t errlen);

// ---- cuda_probe.c: loading the libraries ----

// A library's functions as a table: each name's address goes to the function pointer at
// byte offset `off` of a struct (the driver's, cuBLASLt's, NCCL's).
typedef struct CudaSym { size_t off; const char *name; } CudaSym;
// Fills every entry of syms from lib; NULL, or the first name lib lacks.
const char *cuda_dlsyms(void *lib, const CudaSym *syms, size_t n, void *table);

// ---- cuda_rt.c: the driver API (libcuda.so.1, dlopen'ed) ----

// cuda_probe.c: whether a usable GPU is here: the driver library loads, cuInit succeeds and a device with
// compute capability >= 8.0 exists. false with what is missing ($LTL_CUDA_LIB overrides the
// library name). On success *cc is major*10 + minor.
bool cuda_rt_probe(int *cc, char *err, size_t errlen);


// A step compiled for the GPU (cuda_rt.c): the device arena planned once from the fused
// plan, PARAM / BUFFER / STATE resident on the device, DATA inputs copied from pinned
// staging, the launches captured once as a CUDA graph and replayed. Needs a usable GPU
// (cuda_rt_probe) and NVRTC; NULL with a message otherwise.
typedef struct CudaStep CudaStep;
CudaStep *cuda_step_compile(const IrGraph *g, bool grads, char *err, size_t errlen);
void cuda_step_free(CudaStep *s);
const FusePlan *cuda_step_plan(const CudaStep *s);
// Uploads the caller's flat buffer of PARAM, BUFFER or STATE inputs (ir_layout order); the
// device copy is the one runs update.
void cuda_step_bind(CudaStep *s, IrInputKind kind, void *flat);
// Copies the device's PARAM / BUFFER / STATE back into the bound host buffers.
bool cuda_step_download(CudaStep *s);
// Points a DATA input at the caller's bytes, copied to the device by each run.
void cuda_step_set_input(CudaStep *s, int input, const void *data);
// One step: NULL, or a message (an index out of range, a CUDA error).
const char *cuda_step_run(CudaStep *s);
// How the GEMMs run: "N of M GEMMs through cuBLASLt" and why not the others.
const char *cuda_step_gemm_path(const CudaStep *s);
// A VALUE output after a run (host memory), NULL for other outputs.
const void *cuda_step_output(const CudaStep *s, int i);
// The message of the last failed call (cuda_step_download).
const char *cuda_step_error(const CudaStep *s);

// The executor as the trainer (run.c) reaches it: through this table, which ltlc's main
// installs (cuda_step_api = &cuda_step_impl). run.c is also linked into the programs of
// `ltlc build`, which leave out the LLVM objects the code generator needs: there the table
// stays NULL and accelerator = "cuda" says so. usable: cuda_rt_probe and NVRTC loads.
typedef struct CudaStepApi {
    bool (*usable)(int *cc, char *err, size_t errlen);
    CudaStep *(*compile)(const IrGraph *g, bool grads, char *err, size_t errlen);
    void (*free)(CudaStep *s);
    void (*bind)(CudaStep *s, IrInputKind kind, void *flat);
    bool (*download)(CudaStep *s);
    void (*set_input)(CudaStep *s, int input, const void *data);
    const char *(*run)(CudaStep *s);
    const void *(*output)(const CudaStep *s, int i);
    const char *(*error)(const CudaStep *s);
    // ddp (docs/distributed.md): whether NCCL is usable; once per rank, after rt_dist_init,
    // the device (local_rank mod the device count) and the NCCL communicator of the world.
    bool (*nccl_available)(char *err, size_t errlen);
    bool (*ddp_init)(int rank, int world, int local_rank, char *err, size_t errlen);
} CudaStepApi;
extern const CudaStepApi cuda_step_impl;   // cuda_rt.c
extern const CudaStepApi *cuda_step_api;   // cuda_probe.c: NULL until installed

#endif
