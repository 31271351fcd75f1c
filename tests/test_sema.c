/* test_sema.c — the model traced into step graphs: names, parameters and their initialisers,
 * symbolic shapes and their errors, optimizer groups, and a .ltl model that trains on the
 * reference interpreter. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ir.h"
#include "sema.h"

/* Parses `src` (written to a temp file so `use` and diagnostics have a path) and keeps the
 * diagnostics in `diags`. */
static char diags[16384];
static FILE *diag_mem;
static Ast ast;
static char *text;
static char path[64];

static Node *parse(const char *src) {
    diag_reset();
    memset(diags, 0, sizeof diags);
    diag_mem = fmemopen(diags, sizeof diags - 1, "w");
    diag_set_output(diag_mem);
    strcpy(path, "/tmp/ltl_sema_XXXXXX.ltl");
    int fd = mkstemps(path, 4);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(src, f);
    fclose(f);
    ast = (Ast){0};
    Node *root = parse_file(&ast, path, &text);
    cr_assert(root && diag_error_count() == 0, "parse failed");
    sema_check_config(root);
    return root;
}

static void done(void) {
    fflush(diag_mem);
    fclose(diag_mem);
    diag_set_output(NULL);
    ast_free(&ast);
    free(text);
    text = NULL;
    unlink(path);
}

static StepGraph *lower(Node *root, const char *step, bool check, int64_t batch) {
    SemaOptions opt = {.check = check, .batch = batch, .backward = true, .seed = 7};
    StepGraph *s = sema_lower(root, path, step, &opt, true);
    fflush(diag_mem);
    return s;
}

static const char *mlp_src =
    "use nn\n"
    "model MLP(d_in = 8, hidden = 16, lr = 1e-2) {\n"
    "    l1 = nn.Linear(d_in, hidden)\n"
    "    l2 = nn.Linear(hidden, 2)\n"
    "    forward(x: f32[B, d_in]) -> f32[B, 2] = l2(relu(l1(x)))\n"
    "    training_step(x: f32[B, d_in], y: i64[B]) {\n"
    "        logits = forward(x)\n"
    "        loss = cross_entropy(logits, y)\n"
    "        log(\"train_loss\", loss, prog_bar = true)\n"
    "        log(\"train_acc\", accuracy(logits, y))\n"
    "        return loss\n"
    "    }\n"
    "    validation_step(x, y) {\n"
    "        log(\"val_acc\", accuracy(forward(x), y))\n"
    "    }\n"
    "    optimizer = adam(lr = lr)\n"
    "}\n";

Test(sema, params_inits_logs_groups) {
    Node *root = parse(mlp_src);
    StepGraph *s = lower(root, "training_step", true, 0);
    cr_assert(s, "%s", diags);
    cr_assert_eq(s->nparams, 4);
    const char *names[] = {"l1.weight", "l1.bias", "l2.weight", "l2.bias"};
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(s->params[i].name, names[i]);
        cr_assert(s->params[i].trainable);
        cr_assert_eq(s->params[i].dist, INIT_UNIFORM);
    }
    /* PyTorch's Linear: kaiming_uniform(a = sqrt(5)) → bound 1/sqrt(fan_in); bias the same */
    cr_assert_float_eq(s->params[0].b, 1 / sqrt(8.0), 1e-12);
    cr_assert_float_eq(s->params[1].a, -1 / sqrt(8.0), 1e-12);
    cr_assert_float_eq(s->params[2].b, 1 / sqrt(16.0), 1e-12);
    const IrNode *w = &s->g->node[s->params[2].id];
    cr_assert(w->shape.rank == 2 && w->shape.d[0] == 2 && w->shape.d[1] == 16);
    cr_assert_eq(s->nlogs, 2);
    cr_assert_str_eq(s->logs[0].name, "train_loss");
    cr_assert(s->logs[0].prog_bar && s->logs[0].on_step && !s->logs[0].on_epoch);
    cr_assert(!s->logs[1].prog_bar);
    cr_assert_eq(s->ngroups, 1);
    cr_assert_str_eq(s->groups[0].kind, "adam");
    cr_assert_float_eq(s->groups[0].lr0, 1e-2, 1e-15);
    /* symbolic B: the data inputs carry the symbol's prime, printed back as B */
    const IrNode *x = &s->g->node[s->data[0]];
    cr_assert_eq(x->shape.rank, 2);
    cr_assert_eq(x->shape.d[1], 8);
    char num[32];
    snprintf(num, sizeof num, "x : f32[%lld, 8]", (long long)x->shape.d[0]);
    char *r = sema_render(s, num);
    cr_assert_str_eq(r, "x : f32[B, 8]");
    free(r);
    /* every parameter has a gradient output and an update output */
    int grads = 0, updates = 0;
    for (int i = 0; i < s->g->nout; i++) {
        grads += s->g->out[i].kind == IR_OUT_GRAD;
        updates += s->g->out[i].kind == IR_OUT_UPDATE && s->g->node[s->g->out[i].target].kind == IR_IN_PARAM;
    }
    cr_assert_eq(grads, 4);
    cr_assert_eq(updates, 4);
    sema_step_free(s);
    /* validation_step borrows the annotations of training_step; dropout etc. off */
    s = lower(root, "validation_step", true, 0);
    cr_assert(s, "%s", diags);
    cr_assert_eq(s->ndata, 2);
    cr_assert_eq(s->nlogs, 1);
    cr_assert(s->logs[0].on_epoch && !s->logs[0].on_step, "validation logs per epoch by default");
    sema_step_free(s);
    done();
}

Test(sema, overrides_and_concrete_batch) {
    Node *root = parse(mlp_src);
    const char *ov[] = {"model.hidden=5", "lr=0.5"};
    SemaOptions opt = {.batch = 3, .backward = false, .overrides = ov, .noverrides = 2};
    StepGraph *s = sema_lower(root, path, "training_step", &opt, true);
    cr_assert(s, "%s", diags);
    cr_assert_eq(s->g->node[s->params[0].id].shape.d[0], 5);
    cr_assert_eq(s->g->node[s->data[0]].shape.d[0], 3);
    cr_assert_float_eq(s->groups[0].lr0, 0.5, 1e-15);
    for (int i = 0; i < s->g->nout; i++) cr_assert_neq(s->g->out[i].kind, IR_OUT_GRAD, "no backward asked");
    sema_step_free(s);
    const char *bad[] = {"hiden=5"};
    opt.overrides = bad;
    opt.noverrides = 1;
    cr_assert_null(sema_lower(root, path, "training_step", &opt, true));
    fflush(diag_mem);
    cr_assert(strstr(diags, "MLP has no parameter 'hiden'"), "%s", diags);
    done();
}

/* Lowers a model whose training_step body is `body` and returns the first error line. */
static const char *error_of(const char *members, const char *body) {
    static char src[4096];
    snprintf(src, sizeof src,
             "use nn\nmodel M(n = 4) {\n%s\n    training_step(x: f32[B, 4], y: i64[B]) {\n%s\n    }\n"
             "    optimizer = sgd(lr = 0.1)\n}\n", members, body);
    Node *root = parse(src);
    StepGraph *s = lower(root, "training_step", true, 0);
    cr_assert_null(s, "expected an error for:\n%s", body);
    static char line[1024];
    char *e = strstr(diags, "error: ");
    cr_assert(e, "no error printed: %s", diags);
    size_t n = strcspn(e + 7, "\n");
    snprintf(line, sizeof line, "%.*s", (int)n, e + 7);
    done();
    return line;
}

Test(sema, shape_errors_name_the_dimension) {
    cr_assert_str_eq(error_of("    l = nn.Linear(5, 2)", "        return cross_entropy(l(x), y)"),
                     "l expects f32[..., 5] but x is f32[B, 4]: dimension 1 is 4, not in_features = 5");
    cr_assert_str_eq(error_of("", "        return mean(x @ x)"),
                     "matmul: inner dimensions differ: f32[B, 4] @ f32[B, 4] (4 vs B)");
    cr_assert_str_eq(error_of("", "        return mean(x + ones(3, 4))"),
                     "add: shapes [B, 4] and [3, 4] do not broadcast (dimension 0: B vs 3)");
    cr_assert_str_eq(error_of("", "        return mean(x[:, 9])"), "index 9 out of range for dimension 1 of size 4");
    cr_assert_str_eq(error_of("", "        return mean(reshape(x, (B, 5)))"),
                     "reshape: cannot reshape f32[B, 4] (4*B elements) to f32[B, 5] (5*B elements)");
    cr_assert_str_eq(error_of("", "        return x"),
                     "the loss must be a float scalar, not f32[B, 4]");
    cr_assert_str_eq(error_of("", "        if mean(x) > 0 { return 1 }\n        return mean(x)"),
                     "an 'if' condition must be known at compile time (true or false); for tensors use where(cond, a, b)");
    cr_assert_str_eq(error_of("", "        return mean(relu(x, 3))"), "relu takes at most 1 positional argument (2 given)");
    cr_assert_str_eq(error_of("", "        return mean(softmax(x, dimm = 1))"),
                     "softmax has no parameter 'dimm' (it has: x, dim)");
    cr_assert_str_eq(error_of("", "        return mean(zz)"), "'zz' is not defined");
    cr_assert_str_eq(error_of("    l = nn.Linear(4, 2)", "        return mean(l.wieght)"),
                     "Linear has no member 'wieght'; did you mean 'weight'?");
}

/* The GAN of the examples: two optimizers, each loss differentiated w.r.t. its own group. */
Test(sema, two_optimizers_two_groups) {
    Node *root = parse(
        "use nn\n"
        "model Gen() { l = nn.Linear(2, 4)\n forward(z: f32[B, 2]) -> f32[B, 4] = tanh(l(z)) }\n"
        "model Dis() { l = nn.Linear(4, 1)\n forward(x: f32[B, 4]) -> f32[B, 1] = l(x) }\n"
        "model GAN() {\n G = Gen()\n D = Dis()\n"
        " training_step(x: f32[B, 4]) {\n"
        "  fake = G(randn(B, 2))\n"
        "  g_loss = bce_with_logits(D(fake), ones(B, 1))\n"
        "  d_loss = (bce_with_logits(D(x), ones(B, 1)) + bce_with_logits(D(detach(fake)), zeros(B, 1))) / 2\n"
        "  return {G: g_loss, D: d_loss}\n }\n"
        " optimizers = {G: adam(lr = 2e-4, betas = (0.5, 0.999)), D: sgd(lr = 0.1)}\n}\n");
    StepGraph *s = lower(root, "training_step", true, 0);
    cr_assert(s, "%s", diags);
    cr_assert_eq(s->ngroups, 2);
    cr_assert_str_eq(s->groups[0].name, "G");
    cr_assert_str_eq(s->groups[1].kind, "sgd");
    int gG = 0, gD = 0;
    for (int i = 0; i < s->g->nout; i++)
        if (s->g->out[i].kind == IR_OUT_GRAD) {
            const char *n = s->g->node[s->g->out[i].target].name;
            gG += !strncmp(n, "G.", 2);
            gD += !strncmp(n, "D.", 2);
        }
    cr_assert_eq(gG, 2, "G's weight and bias");
    cr_assert_eq(gD, 2, "D's weight and bias");
    sema_step_free(s);
    done();

    /* a loss for a group without an optimizer is an error */
    root = parse("use nn\nmodel M() { a = nn.Linear(2, 2)\n"
                 " training_step(x: f32[B, 2]) { return {a: mean(a(x)), b: mean(x)} }\n"
                 " optimizers = {a: sgd(lr = 1.0)}\n}\n");
    cr_assert_null(lower(root, "training_step", true, 0));
    cr_assert(strstr(diags, "returns a loss for 'b', which has no optimizer"), "%s", diags);
    done();
}

/* ---- training on the reference interpreter ---- */

typedef struct { const char *name; double *v; int64_t n; } Slot;

static double *slot(Slot *st, int *nst, const IrNode *in) {
    for (int i = 0; i < *nst; i++)
        if (!strcmp(st[i].name, in->name)) return st[i].v;
    int64_t n = ir_numel(in->shape);
    st[*nst] = (Slot){in->name, calloc((size_t)(n ? n : 1), sizeof(double)), n};
    return st[(*nst)++].v;
}

Test(sema, mlp_from_ltl_trains_on_the_interpreter, .timeout = 60) {
    Node *root = parse(mlp_src);
    enum { B = 32, STEPS = 60 };
    StepGraph *s = lower(root, "training_step", false, B);
    cr_assert(s, "%s", diags);
    int before = s->g->n;
    sema_simplify(s); /* the ids the trainer uses must survive simplification */
    cr_assert_lt(s->g->n, before);
    IrGraph *g = s->g;
    Slot st[64];
    int nst = 0;
    /* parameters from their initialisers (Philox, one stream per parameter) */
    for (int i = 0; i < s->nparams; i++) {
        const IrNode *in = &g->node[s->params[i].id];
        double *v = slot(st, &nst, in);
        int64_t n = ir_numel(in->shape);
        float *f = malloc(sizeof *f * (size_t)n);
        philox_fill_uniform(f, n, 7, (uint64_t)i, s->params[i].a, s->params[i].b);
        for (int64_t k = 0; k < n; k++) v[k] = f[k];
        free(f);
    }
    /* two classes: the sign of x0 + x1 - x2 decides, features from Philox normals */
    double x[B * 8], y[B], lr = 1e-2, first = 0, last = 0, acc = 0;
    for (int step = 0; step < STEPS; step++) {
        for (int b = 0; b < B; b++) {
            for (int k = 0; k < 8; k++) x[b * 8 + k] = philox_normal(99, (uint64_t)step, (uint64_t)(b * 8 + k));
            y[b] = x[b * 8] + x[b * 8 + 1] - x[b * 8 + 2] > 0;
        }
        IrInterp *ip = interp_new(g, false);
        for (int i = 0; i < g->n; i++) {
            const IrNode *n = &g->node[i];
            if (n->op != IR_INPUT) continue;
            double sv = step;
            if (i == s->data[0]) interp_set_f64(ip, i, x);
            else if (i == s->data[1]) interp_set_f64(ip, i, y);
            else if (!strcmp(n->name, "lr")) interp_set_f64(ip, i, &lr);
            else if (!strcmp(n->name, "step")) interp_set_f64(ip, i, &sv);
            else interp_set_f64(ip, i, slot(st, &nst, n)); /* params, optimizer state (zeros first) */
        }
        const char *err = interp_run(ip);
        cr_assert_null(err, "%s", err);
        double loss = interp_scalar(ip, s->loss);
        if (step == 0) first = loss;
        last = loss;
        acc = interp_scalar(ip, s->logs[1].id);
        for (int o = 0; o < g->nout; o++) /* new parameters and optimizer state replace the old */
            if (g->out[o].kind == IR_OUT_UPDATE) {
                const IrNode *t = &g->node[g->out[o].target];
                memcpy(slot(st, &nst, t), interp_data(ip, g->out[o].value), sizeof(double) * (size_t)ir_numel(t->shape));
            }
        interp_free(ip);
    }
    cr_assert(first > 0.5 && first < 1.0, "initial loss %g should be near ln 2", first);
    cr_assert(last < 0.5 * first, "loss fell only from %g to %g", first, last);
    cr_assert(acc >= 0.9, "accuracy %g after %d steps", acc, STEPS);
    for (int i = 0; i < nst; i++) free(st[i].v);
    sema_step_free(s);
    done();
}

/* The data module for the runtime: sources as written, transforms compiled to primitives. */
Test(sema, data_plan_sources_and_transforms) {
    Node *root = parse(
        "data D(root = \"/d\", batch = 32) {\n"
        "    train, val = split(idx(root + \"/x.gz\", root + \"/y.gz\"), [50, 10], seed = 3)\n"
        "    test = idx(root + \"/tx.gz\", root + \"/ty.gz\")\n"
        "    transform(x) = (x / 255 - 0.5) / 0.25\n"
        "    train_transform(x) = transform(random_crop(hflip(x, p = 0.3), 28, padding = 4))\n"
        "    loader(batch = batch, shuffle = true, workers = 2, drop_last = true)\n"
        "}\n");
    const char *ov[] = {"data.batch=16"};
    SemaOptions opt = {.overrides = ov, .noverrides = 1};
    DataPlan dp;
    cr_assert(sema_data_plan(root, path, &opt, &dp), "%s", diags);
    cr_assert_eq(dp.batch, 16, "--data.batch overrides the default");
    cr_assert(dp.shuffle && dp.drop_last);
    cr_assert_eq(dp.workers, 2);
    const DataExpr *tr = dp.source[0], *va = dp.source[1], *te = dp.source[2];
    cr_assert(tr && va && te && !dp.source[3]);
    cr_assert_str_eq(tr->fn, "part");
    cr_assert_eq(tr->part, 0);
    cr_assert_eq(va->part, 1);
    cr_assert_eq(tr->args[0].expr, va->args[0].expr, "both parts of one split");
    const DataExpr *sp = tr->args[0].expr;
    cr_assert_str_eq(sp->fn, "split");
    cr_assert_eq(sp->args[1].kind, DA_LIST);
    cr_assert_eq(sp->args[1].nlist, 2);
    cr_assert_str_eq(sp->keys[2], "seed");
    cr_assert_str_eq(sp->args[0].expr->fn, "idx");
    cr_assert_str_eq(sp->args[0].expr->args[0].str, "/d/x.gz");
    cr_assert_str_eq(te->args[1].str, "/d/ty.gz");
    /* eval: one affine map; train: flip, crop, then the same map */
    cr_assert_eq(dp.neval_tf, 1);
    cr_assert_eq(dp.eval_tf[0].kind, TF_SCALE);
    cr_assert_float_eq(dp.eval_tf[0].a, 1 / 255.0 / 0.25, 1e-12);
    cr_assert_float_eq(dp.eval_tf[0].b, -0.5 / 0.25, 1e-12);
    cr_assert_eq(dp.ntrain_tf, 3);
    cr_assert_eq(dp.train_tf[0].kind, TF_HFLIP);
    cr_assert_float_eq(dp.train_tf[0].a, 0.3, 0);
    cr_assert_eq(dp.train_tf[1].kind, TF_RANDOM_CROP);
    cr_assert_float_eq(dp.train_tf[1].a, 28, 0);
    cr_assert_float_eq(dp.train_tf[1].b, 4, 0);
    cr_assert_eq(dp.train_tf[2].kind, TF_SCALE);
    sema_data_free(&dp);
    done();

    root = parse("data D() {\n    train = idx(\"a\", \"b\")\n    transform(x) = sin(x)\n}\n");
    cr_assert(!sema_data_plan(root, path, &(SemaOptions){0}, &dp));
    fflush(diag_mem);
    cr_assert(strstr(diags, "'sin' is not a transform the data pipeline knows"), "%s", diags);
    sema_data_free(&dp);
    done();
}
