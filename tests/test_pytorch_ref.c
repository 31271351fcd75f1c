/* test_pytorch_ref.c — the MLP and the CNN of examples/ match PyTorch: one training step at
 * batch 4 (loss, forward output, every gradient, every parameter after one Adam step) on the
 * reference interpreter, against tests/fixtures/{mlp,cnn}.json made by
 * tests/fixtures/make_fixtures.py (see tests/fixtures/README.md). The CNN is lowered with the
 * hyperparameter overrides p1 = p2 = 0 (SemaOptions.overrides): dropout off, as the PyTorch
 * model without dropout.
 *
 * Inputs come from a formula both sides compute in double and round once to f32:
 *   element i of tensor N = float32(scale * sin(0.37 i + h(N))),
 *   h(N) = (sum over bytes k of N: (k + 1) * byte) mod 1000 / 10,
 *   scale 0.05 for weights, 0.02 for biases, 1.0 for x;  labels y[i] = (3 i + 1) mod 10.
 *
 * The fixtures hold PyTorch's step twice, from the same f32 inputs: in float32 (PyTorch's
 * default) and in float64 (.double(): the exact answer to ~1e-12). Three comparisons:
 *   1. LTL f32 vs PyTorch f64, rtol 1e-5;
 *   2. LTL f32 vs PyTorch f32, rtol 1e-5 plus |PyTorch f32 - PyTorch f64| per value: these
 *      inputs make fc1's pre-activations cancel ~1000-fold (terms summing to ~40 give ~0.03),
 *      so PyTorch's own f32 GEMM is off by up to ~2e-5 relative on a few fc2 gradients; LTL's
 *      interpreter, which accumulates in double, is closer to the exact answer there;
 *   3. LTL in the interpreter's f64 mode vs PyTorch f64, rtol 1e-10 (see F64_VS_F64).
 * Tolerance, for a reference tensor with n elements and sum of squares S:
 *   element:  |got - want| <= rtol * max(|want|, rms),   rms = sqrt(S / n)
 *   sum:      |got - want| <= rtol * max(|want|, sqrt(S))
 *   sumsq:    |got - want| <= rtol * want
 * The floors are the tensor's own scale: an element (or a sum) that cancels to near zero is
 * compared to the size of the terms it was made from, not to itself. With --verbose the test
 * logs its run times and the largest |diff| / tolerance of each comparison. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ir.h"
#include "sema.h"

#define BATCH 4
#define RTOL 1e-5   /* LTL f32 against PyTorch */
#define RTOL64 1e-10 /* LTL in float64 mode against PyTorch in float64 */
#define LR 1e-3

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf && fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static double name_hash(const char *name) {
    long s = 0;
    for (size_t k = 0; name[k]; k++) s += (long)(k + 1) * (unsigned char)name[k];
    return (double)(s % 1000) / 10.0;
}

/* The formula, rounded to f32 and held as doubles for interp_set_f64. */
static double *formula(const char *name, int64_t n, double scale) {
    double h = name_hash(name), *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (double)(float)(scale * sin(0.37 * (double)i + h));
    return v;
}

static double param_scale(const char *name) {
    size_t l = strlen(name);
    return l >= 4 && !strcmp(name + l - 4, "bias") ? 0.02 : 0.05;
}

/* Sets every INPUT of g: params by the formula, x, y, lr, step, optimizer state zero. */
static void set_inputs(IrInterp *ip, const IrGraph *g) {
    for (int id = 0; id < g->n; id++) {
        const IrNode *nd = &g->node[id];
        if (nd->op != IR_INPUT) continue;
        int64_t n = ir_numel(nd->shape);
        double *v = NULL;
        if (nd->kind == IR_IN_PARAM) v = formula(nd->name, n, param_scale(nd->name));
        else if (nd->kind == IR_IN_STATE) v = calloc((size_t)n, sizeof *v);
        else if (nd->kind == IR_IN_DATA && !strcmp(nd->name, "x")) v = formula("x", n, 1.0);
        else if (nd->kind == IR_IN_DATA && !strcmp(nd->name, "y")) {
            cr_assert_eq(n, BATCH);
            v = malloc((size_t)n * sizeof *v);
            for (int64_t i = 0; i < n; i++) v[i] = (double)((3 * i + 1) % 10);
        } else if (nd->kind == IR_IN_DATA && !strcmp(nd->name, "lr")) {
            v = malloc(sizeof *v);
            v[0] = LR;
        } else if (nd->kind == IR_IN_DATA && !strcmp(nd->name, "step")) v = calloc(1, sizeof *v);
        else cr_assert_fail("unexpected input \"%s\" (kind %d)", nd->name, nd->kind);
        interp_set_f64(ip, id, v);
        free(v);
    }
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(v), "fixture: %s is not a number", key);
    return v->valuedouble;
}

static const cJSON *item(const cJSON *o, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* Element k of a record's values or samples, and the flat index it stands for. */
static const cJSON *elements(const cJSON *rec, int64_t n, bool *full) {
    const cJSON *vals = item(rec, "values"), *arr = vals ? vals : item(rec, "samples");
    *full = vals != NULL;
    cr_assert(arr && cJSON_GetArraySize(arr) > 0, "fixture: a record without values");
    if (vals) cr_assert_eq(cJSON_GetArraySize(vals), n, "fixture: %d values for %lld elements",
                           cJSON_GetArraySize(vals), (long long)n);
    return arr;
}

/* A comparison: the reference, and optionally a second record of the same tensor whose
 * distance to the reference is allowed on top (PyTorch float32 vs float64: PyTorch's own
 * rounding error, which LTL need not share). */
typedef struct {
    const char *label; /* "PyTorch f64" */
    double rtol;
    double upd_abs;    /* an absolute allowance per element of an updated parameter */
} Cmp;

/* The largest |got - want| / tolerance seen since the last reset: the margin, logged. */
static double worst;
static void track(double diff, double tol) {
    if (tol > 0 && diff / tol > worst) worst = diff / tol;
}

/* Compares value v of a run with rec (and its allowance `slack`, or NULL); returns the
 * number of mismatches, each logged (the first 6 per tensor). */
static int compare(const IrInterp *ip, const IrGraph *g, int v, const cJSON *rec,
                   const cJSON *slack, const Cmp *c, double abs_tol, const char *what) {
    cr_assert(rec, "fixture has no record for %s", what);
    const IrNode *nd = &g->node[v];
    const cJSON *shape = item(rec, "shape");
    cr_assert(cJSON_GetArraySize(shape) == nd->shape.rank, "%s: rank %d, PyTorch %d", what,
              nd->shape.rank, cJSON_GetArraySize(shape));
    int64_t n = 1;
    for (int i = 0; i < nd->shape.rank; i++) {
        int64_t d = (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble;
        cr_assert_eq(nd->shape.d[i], d, "%s: dimension %d is %lld, PyTorch %lld", what, i,
                     (long long)nd->shape.d[i], (long long)d);
        n *= d;
    }
    const double *x = interp_data(ip, v);
    double sum = 0, sumsq = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += x[i];
        sumsq += x[i] * x[i];
    }
    double wsum = num(rec, "sum"), wsq = num(rec, "sumsq"), rms = sqrt(wsq / (double)n);
    double ssum = (slack ? fabs(num(slack, "sum") - wsum) : 0) + abs_tol * (double)n;
    double ssq = (slack ? fabs(num(slack, "sumsq") - wsq) : 0) + 2 * abs_tol * sqrt((double)n * wsq);
    int bad = 0;
    track(fabs(sum - wsum), c->rtol * fmax(fabs(wsum), sqrt(wsq)) + ssum);
    track(fabs(sumsq - wsq), c->rtol * wsq + ssq);
    if (fabs(sum - wsum) > c->rtol * fmax(fabs(wsum), sqrt(wsq)) + ssum) {
        cr_log_error("%s: sum %.12g, %s %.12g (diff %.3g, norm %.3g)", what, sum, c->label, wsum,
                     sum - wsum, sqrt(wsq));
        bad++;
    }
    if (fabs(sumsq - wsq) > c->rtol * wsq + ssq) {
        cr_log_error("%s: sum of squares %.12g, %s %.12g (rel %.3g)", what, sumsq, c->label, wsq,
                     fabs(sumsq - wsq) / wsq);
        bad++;
    }
    bool full, sfull = false;
    const cJSON *arr = elements(rec, n, &full), *sarr = slack ? elements(slack, n, &sfull) : NULL;
    int m = cJSON_GetArraySize(arr), shown = 0;
    cr_assert(!slack || (sfull == full && cJSON_GetArraySize(sarr) == m), "fixture: %s", what);
    for (int k = 0; k < m; k++) {
        int64_t i = full ? k : (int64_t)k * n / m;
        double want = cJSON_GetArrayItem(arr, k)->valuedouble;
        double s = (sarr ? fabs(cJSON_GetArrayItem(sarr, k)->valuedouble - want) : 0) + abs_tol;
        track(fabs(x[i] - want), c->rtol * fmax(fabs(want), rms) + s);
        if (fabs(x[i] - want) > c->rtol * fmax(fabs(want), rms) + s) {
            if (shown++ < 6)
                cr_log_error("%s[%lld]: %.12g, %s %.12g (diff %.3g, tensor rms %.3g)", what,
                             (long long)i, x[i], c->label, want, x[i] - want, rms);
            bad++;
        }
    }
    return bad;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs a step graph on the formula's inputs; f64: the interpreter's float64 mode. */
static IrInterp *run(const StepGraph *s, bool f64) {
    IrInterp *ip = interp_new(s->g, f64);
    cr_assert(ip);
    set_inputs(ip, s->g);
    const char *err = interp_run(ip);
    cr_assert_null(err, "%s: %s", s->step, err);
    return ip;
}

/* Compares the forward output of a run with ref->output (slack: see compare). */
static int check_forward(const IrInterp *ip, const StepGraph *s, const cJSON *ref,
                         const cJSON *slack, const Cmp *c) {
    return compare(ip, s->g, s->output, item(ref, "output"), slack ? item(slack, "output") : NULL,
                   c, 0, "forward output");
}

/* Compares loss, gradients and updated parameters of a training-step run with ref. */
static int check_step(const IrInterp *ip, const StepGraph *s, const cJSON *ref,
                      const cJSON *slack, const Cmp *c) {
    const IrGraph *g = s->g;
    int bad = 0, ngrad = 0, nupd = 0;
    double loss = interp_scalar(ip, s->loss), want = num(ref, "loss");
    double sl = slack ? fabs(num(slack, "loss") - want) : 0;
    track(fabs(loss - want), c->rtol * fabs(want) + sl);
    if (fabs(loss - want) > c->rtol * fabs(want) + sl) {
        cr_log_error("loss %.12g, %s %.12g", loss, c->label, want);
        bad++;
    }
    cr_assert_eq(cJSON_GetArraySize(item(ref, "grads")), s->nparams,
                 "PyTorch has %d parameters, LTL %d", cJSON_GetArraySize(item(ref, "grads")),
                 s->nparams);
    for (int o = 0; o < g->nout; o++) {
        const IrOutput *out = &g->out[o];
        const IrNode *t = &g->node[out->target];
        const char *sec;
        if (out->kind == IR_OUT_GRAD) sec = "grads", ngrad++;
        else if (out->kind == IR_OUT_UPDATE && t->kind == IR_IN_PARAM) sec = "updated", nupd++;
        else continue;
        char what[160];
        snprintf(what, sizeof what, "%s %s", out->kind == IR_OUT_GRAD ? "grad" : "updated", t->name);
        bad += compare(ip, g, out->value, item(item(ref, sec), t->name),
                       slack ? item(item(slack, sec), t->name) : NULL, c,
                       out->kind == IR_OUT_GRAD ? 0 : c->upd_abs, what);
    }
    cr_expect_eq(ngrad, s->nparams, "%d gradients for %d parameters", ngrad, s->nparams);
    cr_expect_eq(nupd, s->nparams, "%d updates for %d parameters", nupd, s->nparams);
    return bad;
}

/* LTL f32 vs PyTorch f64: the exact answer for these f32 inputs, to 1e-5. */
static const Cmp VS_F64 = {"PyTorch f64", RTOL, 0};
/* LTL f32 vs PyTorch f32: 1e-5, plus PyTorch f32's own distance from the exact answer. */
static const Cmp VS_F32 = {"PyTorch f32", RTOL, 0};
/* LTL f64 mode vs PyTorch f64: the same formulas, so only double rounding separates them —
 * except in the Adam update, whose constants 1 - beta1, 1 - beta2 and eps are literals of
 * the parameter's dtype (f32, as in PyTorch's float32 Adam), rounded when the graph is built,
 * which the f64 mode keeps: that moves the update u (|u| <= ~lr on the first step) by up to
 * ~4e-8 |u| (measured: 8.85e-12 for lr 1e-3), allowed as 1e-7 lr per element. */
static const Cmp F64_VS_F64 = {"PyTorch f64", RTOL64, 1e-7 * LR};

/* The whole check for one example against one fixture. */
static void check_model(const char *example, const char *fixture, const char *const *overrides,
                        int noverrides) {
    double t0 = now();
    char *json_text = slurp(fixture);
    cJSON *ref = cJSON_Parse(json_text);
    cr_assert(ref, "%s: not JSON", fixture);
    cr_assert_eq((int)num(ref, "batch"), BATCH);
    const cJSON *r32 = item(ref, "f32"), *r64 = item(ref, "f64");
    cr_assert(r32 && r64, "%s: no f32 / f64 sections", fixture);

    diag_reset();
    Ast ast = {0};
    char *text = NULL;
    Node *root = parse_file(&ast, example, &text);
    cr_assert(root && diag_error_count() == 0, "%s does not parse", example);
    sema_check_config(root);
    cr_assert_eq(diag_error_count(), 0, "%s: config errors", example);
    SemaOptions opt = {.check = false, .batch = BATCH, .backward = true,
                       .overrides = overrides, .noverrides = noverrides};
    StepGraph *train = sema_lower(root, example, "training_step", &opt, true);
    cr_assert(train, "%s: training_step does not lower", example);
    StepGraph *fwd = sema_lower(root, example, "forward", &opt, true);
    cr_assert(fwd && fwd->output >= 0, "%s: forward does not lower", example);
    double t1 = now();

    int bad = 0;
    double margin[3] = {0}; /* vs f64, vs f32, f64 mode vs f64 */
    IrInterp *ip = run(fwd, false);
    worst = 0;
    bad += check_forward(ip, fwd, r64, NULL, &VS_F64);
    margin[0] = worst, worst = 0;
    bad += check_forward(ip, fwd, r32, r64, &VS_F32);
    margin[1] = worst;
    interp_free(ip);
    double t2 = now();

    ip = run(train, false);
    /* the inputs first: a mismatch there is the formula's, not the model's */
    int bad_in = 0;
    for (int i = 0; i < train->nparams; i++) {
        char what[128];
        snprintf(what, sizeof what, "input %s", train->params[i].name);
        const cJSON *rec = item(item(ref, "inputs"), train->params[i].name);
        cr_assert(rec, "PyTorch has no parameter %s", train->params[i].name);
        bad_in += compare(ip, train->g, train->params[i].id, rec, NULL, &F64_VS_F64, 0, what);
    }
    cr_assert_eq(bad_in, 0, "the inputs differ from PyTorch's: the formula, not the model");
    worst = margin[0];
    bad += check_step(ip, train, r64, NULL, &VS_F64);
    margin[0] = worst, worst = margin[1];
    bad += check_step(ip, train, r32, r64, &VS_F32);
    margin[1] = worst, worst = 0;
    interp_free(ip);
    double t4 = now();

    /* float64 mode: the same arithmetic as PyTorch's .double(), nearly to the last bit */
    ip = run(fwd, true);
    bad += check_forward(ip, fwd, r64, NULL, &F64_VS_F64);
    interp_free(ip);
    ip = run(train, true);
    bad += check_step(ip, train, r64, NULL, &F64_VS_F64);
    margin[2] = worst;
    interp_free(ip);
    double t5 = now();

    cr_log_info("%s: lower %.2f s, forward %.2f s, training step %.2f s, f64 runs %.2f s",
                example, t1 - t0, t2 - t1, t4 - t2, t5 - t4);
    cr_log_info("%s: largest |diff| / tolerance: f32 vs PyTorch f64 %.3f, f32 vs PyTorch f32 "
                "%.3f, f64 vs PyTorch f64 %.3f", example, margin[0], margin[1], margin[2]);
    cr_expect_eq(bad, 0, "%s: %d values differ from PyTorch %s (torch %s)", example, bad,
                 fixture, cJSON_GetStringValue(item(ref, "torch")));

    sema_step_free(train);
    sema_step_free(fwd);
    ast_free(&ast);
    free(text);
    cJSON_Delete(ref);
    free(json_text);
}

Test(pytorch_ref, mlp_one_adam_step) {
    check_model(SRCDIR "/examples/fashion_mlp.ltl", SRCDIR "/tests/fixtures/mlp.json", NULL, 0);
}

/* Dropout off: the example's p1 and p2 overridden with 0, as PyTorch without dropout. */
Test(pytorch_ref, cnn_one_adam_step, .timeout = 60) {
    static const char *const ov[] = {"model.p1=0.0", "model.p2=0.0"};
    check_model(SRCDIR "/examples/fashion_cnn.ltl", SRCDIR "/tests/fixtures/cnn.json", ov, 2);
}
