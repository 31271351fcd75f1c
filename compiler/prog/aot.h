/* aot.h — what `ltlc build` links into a program (prefix ltl_aot_): the generated table of
 * precompiled steps and GEMMs, the embedded sources, the options the program was built
 * with, and the CPU check. Written by compiler/build.c, read by step_aot.c and prog_main.c. */
#ifndef LTL_AOT_H
#define LTL_AOT_H

#include <stddef.h>
#include <stdint.h>

typedef struct AotStep {
    uint64_t key[2];          /* llvm_step_graph_key of the step's graph and options */
    int nthreads;             /* the plan's thread count (its kernels' parts) */
    void (*entry)(void);      /* void step(void *const *bases, const LlvmStepCtx *ctx) */
    const char *what;         /* "training step, batch 64": for messages */
} AotStep;

typedef struct AotFile {
    const char *name;         /* [0]: the program's FILE as given; then modules, relative */
    const char *data;
    size_t len;
} AotFile;

extern const AotStep ltl_aot_steps[];
extern const int ltl_aot_nsteps;
extern void (*const ltl_aot_gemm[16])(void);       /* NULL: a variant no step calls */
extern const unsigned char ltl_aot_blocking[];      /* the LlvmGemmBlocking the code was made for */
extern const size_t ltl_aot_blocking_size, ltl_aot_gemm_work;
extern const AotFile ltl_aot_files[];
extern const int ltl_aot_nfiles;
extern const char *const ltl_aot_args[];            /* --trainer.X=V ... given to ltlc build */
extern const int ltl_aot_nargs;
extern const char ltl_aot_cpu[];                    /* the CPU the code was generated for */
/* NULL when this CPU has every feature the code may use, else the first one it lacks. */
const char *ltl_aot_cpu_missing(void);

#endif
