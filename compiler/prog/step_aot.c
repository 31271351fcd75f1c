/* step_aot.c — the steps of a program made by `ltlc build` (no LLVM): llvm_step_compile finds
 * the step's object code in the table linked into the program (aot.h) by the key of its
 * graph, plans it exactly as `ltlc build` did (same blocking, same thread count) and hands
 * it to the executor (step_exec.c). Linked into built programs only, in place of
 * llvm_step.c and llvm_gemm.c. */
#include "aot.h"
#include "llvm.h"
#include "rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fuse_plan's GEMM scratch: the value for the one blocking the program was built with. */
size_t llvm_gemm_work_size(const LlvmGemmBlocking *blk) {
    (void)blk;
    return ltl_aot_gemm_work;
}

LlvmStep *llvm_step_compile(const IrGraph *g, const LlvmStepOptions *opt, char *err, size_t errlen) {
    LlvmStepOptions o = opt ? *opt : (LlvmStepOptions){0};
    uint64_t key[2];
    if (!llvm_step_graph_key(g, &o, key)) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const AotStep *e = NULL;
    for (int i = 0; i < ltl_aot_nsteps && !e; i++)
        if (ltl_aot_steps[i].key[0] == key[0] && ltl_aot_steps[i].key[1] == key[1]) e = &ltl_aot_steps[i];
    if (!e) {
        char have[512] = "";
        for (int i = 0; i < ltl_aot_nsteps; i++) {
            bool dup = false;   /* validation and test steps are often the same */
            for (int j = 0; j < i; j++) dup |= !strcmp(ltl_aot_steps[j].what, ltl_aot_steps[i].what);
            if (!dup)
                snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", i ? "; " : "", ltl_aot_steps[i].what);
        }
        snprintf(err, errlen,
                 "this program has no code for it (built with other sizes or options; it has: %s). "
                 "Rebuild it with these --model/--data/--trainer options, or add --backend=interp", have);
        return NULL;
    }
    if (ltl_aot_blocking_size != sizeof(LlvmGemmBlocking)) {
        snprintf(err, errlen, "the program's GEMM table does not match its runtime");
        return NULL;
    }
    LlvmStep *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    LlvmGemmBlocking blk;
    memcpy(&blk, ltl_aot_blocking, sizeof blk);
    s->g = g;
    s->nthreads = o.pool ? rt_pool_size(o.pool) : o.nthreads > 0 ? o.nthreads : rt_cpu_count();
    /* the kernels were cut into parts for e->nthreads; any pool runs them, with the same result */
    FuseOptions fo = {.nthreads = e->nthreads, .grads = o.grads, .blk = &blk, .no_reuse = o.no_reuse};
    if (!(s->plan = fuse_plan(g, &fo, err, errlen))) {
        free(s);
        return NULL;
    }
    s->entry = (void (*)(void *const *, const LlvmStepCtx *))e->entry;
    for (int i = 0; i < 16; i++) s->funcs[i] = (void *)ltl_aot_gemm[i];
    return llvm_step_exec_init(s, &o, err, errlen) ? s : NULL;
}
