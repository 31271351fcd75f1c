// bench/step.c — whole training steps of the examples (forward, loss, backward, Adam), one
// batch of 64 after another: the reference interpreter against the JIT-compiled step (CPU
// backend, compiler/llvm_step.c) on 1 and 2 threads. Prints a Markdown table and writes it
// to argv[1] (bench/step.sh: bench/STEP.md). A benchmark, not a test.
//   step OUT.md [seconds]    seconds: time spent measuring each JIT configuration (default 2)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llvm.h"
#include "rt.h"
#include "sema.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    StepGraph *st;
    IrLayout lay[3];
    unsigned char *flat[3];
    float *x;
    int64_t *y;
    float lr;
    int64_t step;
} Model;

static Model load(const char *file, int64_t batch, const char *precision) {
    static Ast ast;
    char *text = NULL;
    Model m = {0};
    Node *root = parse_file(&ast, file, &text);
    if (!root || diag_error_count()) {
        fprintf(stderr, "step: cannot parse %s\n", file);
        exit(1);
    }
    sema_check_config(root);
    SemaOptions opt = {.batch = batch, .backward = true, .seed = 42, .precision = precision};
    m.st = sema_lower(root, file, "training_step", &opt, true);
    if (!m.st) {
        fprintf(stderr, "step: cannot lower %s\n", file);
        exit(1);
    }
    sema_simplify(m.st);
    const IrGraph *g = m.st->g;
    IrInputKind kinds[3] = {IR_IN_PARAM, IR_IN_BUFFER, IR_IN_STATE};
    for (int k = 0; k < 3; k++) {
        m.lay[k] = ir_layout(g, kinds[k]);
        m.flat[k] = aligned_alloc(64, (size_t)((m.lay[k].bytes + 127) & ~(int64_t)63));
        memset(m.flat[k], 0, (size_t)m.lay[k].bytes);
    }
    for (int i = 0; i < m.st->nparams; i++) { // the model's initialisers
        const ParamInit *p = &m.st->params[i];
        int k = p->trainable ? 0 : 1;
        for (int s = 0; s < m.lay[k].n; s++) {
            const IrSlot *sl = &m.lay[k].slot[s];
            if (sl->value != p->id)
                continue;
            float *d = (float *)(m.flat[k] + sl->offset);
            int64_t n = ir_numel(sl->shape);
            if (p->dist == INIT_UNIFORM)
                philox_fill_uniform(d, n, 42, (uint64_t)i, p->a, p->b);
            else if (p->dist == INIT_NORMAL)
                philox_fill_normal(d, n, 42, (uint64_t)i, p->a, p->b);
            else
                for (int64_t j = 0; j < n; j++)
                    d[j] = (float)p->a;
        }
    }
    m.x = malloc((size_t)batch * 784 * sizeof *m.x);
    m.y = malloc((size_t)batch * sizeof *m.y);
    philox_fill_normal(m.x, batch * 784, 7, 1, 0, 1);
    for (int64_t i = 0; i < batch; i++)
        m.y[i] = i % 10;
    m.lr = 1e-3f;
    return m;
}

static const void *data_input(Model *m, const IrNode *n) {
    if (!strcmp(n->name, "x")) return m->x;
    if (!strcmp(n->name, "y")) return m->y;
    if (!strcmp(n->name, "lr")) return &m->lr;
    if (!strcmp(n->name, "step")) return &m->step;
    return NULL;
}

static unsigned char *slot_of(Model *m, int id) {
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < m->lay[k].n; s++)
            if (m->lay[k].slot[s].value == id)
                return m->flat[k] + m->lay[k].slot[s].offset;
    return NULL;
}

// One interpreted step as a trainer would run it: set every input, run, write updates back.
static double interp_steps(Model *m, int n) {
    const IrGraph *g = m->st->g;
    IrInterp *ip = interp_new(g, false);
    double t0 = now();
    for (int s = 0; s < n; s++, m->step++) {
        for (int i = 0; i < g->n; i++) {
            const IrNode *nd = &g->node[i];
            if (nd->op == IR_INPUT)
                interp_set(ip, i, nd->kind == IR_IN_DATA ? data_input(m, nd) : slot_of(m, i));
        }
        const char *err = interp_run(ip);
        if (err) {
            fprintf(stderr, "interpreter: %s\n", err);
            exit(1);
        }
        for (int o = 0; o < g->nout; o++)
            if (g->out[o].kind == IR_OUT_UPDATE)
                interp_get(ip, g->out[o].value, slot_of(m, g->out[o].target));
    }
    double dt = (now() - t0) / n;
    interp_free(ip);
    return dt;
}

typedef struct {
    double step_s, compile_s;
    double loss;
} JitResult;

static JitResult jit_steps(Model *m, int threads, double seconds) {
    const IrGraph *g = m->st->g;
    char err[512];
    LlvmStepOptions o = {.nthreads = threads};
    double t0 = now();
    LlvmStep *s = llvm_step_compile(g, &o, err, sizeof err);
    JitResult r = {.compile_s = now() - t0};
    if (!s) {
        fprintf(stderr, "compile: %s\n", err);
        exit(1);
    }
    llvm_step_bind(s, IR_IN_PARAM, m->flat[0]);
    llvm_step_bind(s, IR_IN_BUFFER, m->flat[1]);
    llvm_step_bind(s, IR_IN_STATE, m->flat[2]);
    for (int i = 0; i < g->n; i++)
        if (g->node[i].op == IR_INPUT && g->node[i].kind == IR_IN_DATA)
            llvm_step_set_input(s, i, data_input(m, &g->node[i]));
    if (seconds < 0) { // exactly -seconds steps, for the loss they reach
        for (int n = 0; n < -seconds; n++, m->step++)
            llvm_step_run(s);
        seconds = 0;
        r.step_s = INFINITY;
        goto done;
    }
    for (int w = 0; w < 3; w++, m->step++)
        llvm_step_run(s);
    // best of 5 rounds, each at least seconds / 5
    r.step_s = INFINITY;
    for (int round = 0; round < 5; round++) {
        int n = 0;
        double start = now(), t;
        do {
            const char *e = llvm_step_run(s);
            if (e) {
                fprintf(stderr, "run: %s\n", e);
                exit(1);
            }
            m->step++;
            n++;
            t = now();
        } while (t - start < seconds / 5);
        if ((t - start) / n < r.step_s)
            r.step_s = (t - start) / n;
    }
done:
    for (int o = 0; o < g->nout; o++)
        if (g->out[o].kind == IR_OUT_VALUE && !strcmp(g->out[o].name, "loss"))
            r.loss = llvm_step_scalar(s, o);
    llvm_step_free(s);
    return r;
}

// The precision modes on the JIT (docs/precision.md): ms/step of 32-true and bf16-mixed, the
// latter with the 16-bit GEMM (AMX) and, LTL_STEP_GEMM16=0, with the f32 GEMM on the rounded
// operands; and the loss after `nsteps` steps on one fixed batch from the same weights, so
// the modes' arithmetic is compared, not their speed.
static void precision_rows(FILE *out, const char *name, const char *file, int64_t batch, double seconds) {
    static const struct { const char *label, *precision, *gemm16; } modes[] = {
        {"32-true", NULL, "1"}, {"bf16-mixed, f32 GEMM", "bf16-mixed", "0"}, {"bf16-mixed", "bf16-mixed", "1"},
        {"16-mixed", "16-mixed", "1"}};
    const int nsteps = 20;
    double base[3] = {0}, base_loss = 0;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        setenv("LTL_STEP_GEMM16", modes[i].gemm16, 1);
        for (int threads = 1; threads <= 2; threads++) {
            Model m = load(file, batch, modes[i].precision);
            JitResult r = jit_steps(&m, threads, seconds);
            Model f = load(file, batch, modes[i].precision); // fresh weights: the same nsteps for every mode
            JitResult l = jit_steps(&f, threads, -(double)nsteps);
            if (i == 0)
                base[threads] = r.step_s, base_loss = threads == 1 ? l.loss : base_loss;
            fprintf(out, "| %s | %s | %d | %.3f | %.0f | %.2fx | %.5f | %+.2f%% |\n", name, modes[i].label, threads,
                    r.step_s * 1e3, batch / r.step_s, base[threads] / r.step_s, l.loss,
                    100 * (l.loss - base_loss) / base_loss);
            fflush(out);
        }
    }
    unsetenv("LTL_STEP_GEMM16");
}

int main(int argc, char **argv) {
    const char *outpath = argc > 1 ? argv[1] : NULL;
    double seconds = argc > 2 ? atof(argv[2]) : 2;
    const int64_t batch = 64;
    static const struct { const char *name, *file; int interp_steps; } models[] = {
        {"MLP 784-128-256-10", "examples/fashion_mlp.ltl", 5},
        {"CNN conv32-conv64-pool-fc128-fc10", "examples/fashion_cnn.ltl", 1},
    };
    char *table = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&table, &len);
    fprintf(out, "Training steps (forward, loss, backward, Adam) at batch %lld, random data, "
                 "this machine: %d CPUs.\n\n", (long long)batch, rt_cpu_count());
    fprintf(out, "| model | engine | threads | ms/step | steps/s | samples/s | vs interpreter | compile s |\n");
    fprintf(out, "|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        Model m = load(models[i].file, batch, NULL);
        double ti = interp_steps(&m, models[i].interp_steps);
        fprintf(out, "| %s | interpreter | 1 | %.1f | %.2f | %.0f | 1.0x | - |\n", models[i].name, ti * 1e3, 1 / ti,
                batch / ti);
        for (int threads = 1; threads <= 2; threads++) {
            JitResult r = jit_steps(&m, threads, seconds);
            fprintf(out, "| %s | JIT | %d | %.3f | %.0f | %.0f | %.0fx | %.2f |\n", models[i].name, threads,
                    r.step_s * 1e3, 1 / r.step_s, batch / r.step_s, ti / r.step_s, r.compile_s);
            fflush(out);
            fprintf(stderr, "%s, %d thread(s): %.3f ms/step, loss %.4f\n", models[i].name, threads, r.step_s * 1e3,
                    r.loss);
        }
    }
    fprintf(out, "\nPrecision modes (JIT; speed-up against 32-true on as many threads; loss after 20 "
                 "steps on one batch from the same weights):\n\n");
    fprintf(out, "| model | precision | threads | ms/step | samples/s | vs 32-true | loss | vs 32-true |\n");
    fprintf(out, "|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        precision_rows(out, models[i].name, models[i].file, batch, seconds);
    fprintf(out, "\nThe first compile of a process also JIT-compiles the GEMM variants the step uses "
                 "(shared by later steps); the compile column includes it for the first row of each model "
                 "only when that variant is new.\n");
    fclose(out);
    fputs(table, stdout);
    if (outpath) {
        FILE *f = fopen(outpath, "w");
        if (f) {
            fputs(table, f);
            fclose(f);
        }
    }
    free(table);
    return 0;
}
