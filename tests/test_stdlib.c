/* test_stdlib.c — the standard library against PyTorch: losses (both reductions), metrics,
 * optimizers (lowered from .ltl, several steps), schedulers and initialisers, with reference
 * values torch computed (tests/fixtures/stdlib.json, made by make_stdlib_fixtures.py); the
 * text data source; and a tiny character language model trained by `ltlc run` that generates
 * text. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ir.h"
#include "sema.h"
#include "e2e_test.h"

static cJSON *fixture(void) {
    FILE *f = fopen(SRCDIR "/tests/fixtures/stdlib.json", "rb");
    cr_assert(f, "tests/fixtures/stdlib.json is missing");
    static char buf[1 << 17];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    cr_assert(j);
    return j;
}

/* A JSON array (nested or not) flattened into doubles. */
static int flatten(const cJSON *a, double *out, int max) {
    if (cJSON_IsNumber(a)) return max > 0 ? (out[0] = a->valuedouble, 1) : 0;
    int n = 0;
    for (const cJSON *e = a ? a->child : NULL; e; e = e->next) n += flatten(e, out + n, max - n);
    return n;
}

/* ---- lowering a .ltl source and running one method on the interpreter ---- */

static Ast ast;
static char *text;
static char path[64];

static Node *parse(const char *src) {
    diag_reset();
    strcpy(path, "/tmp/ltl_stdlib_XXXXXX.ltl");
    int fd = mkstemps(path, 4);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(src, f);
    fclose(f);
    ast = (Ast){0};
    Node *root = parse_file(&ast, path, &text);
    cr_assert(root && diag_error_count() == 0, "parse failed:\n%s", src);
    return root;
}

static void unparse(void) {
    ast_free(&ast);
    free(text);
    text = NULL;
    unlink(path);
}

static StepGraph *lower(Node *root, const char *method, bool backward) {
    SemaOptions opt = {.batch = 1, .backward = backward, .seed = 7};
    StepGraph *s = sema_lower(root, path, method, &opt, true);
    cr_assert(s, "lowering %s failed", method);
    return s;
}

/* Runs `method` (whose inputs are named like the fixture's arrays) in double precision;
 * returns its output's values in out. */
static int run_method(Node *root, const char *method, const cJSON *inputs, double *out, int max) {
    StepGraph *s = lower(root, method, false);
    IrInterp *ip = interp_new(s->g, true);
    static double buf[4096];
    for (int i = 0; i < s->ndata; i++) {
        const IrNode *n = &s->g->node[s->data[i]];
        int k = flatten(cJSON_GetObjectItem(inputs, n->name), buf, 4096);
        cr_assert_eq(k, ir_numel(n->shape), "%s: input %s", method, n->name);
        interp_set_f64(ip, s->data[i], buf);
    }
    for (int i = 0; i < s->g->n; i++) /* parameters of the harness model: zero */
        if (s->g->node[i].op == IR_INPUT && s->g->node[i].kind != IR_IN_DATA) interp_set_f64(ip, i, (double[64]){0});
    const char *err = interp_run(ip);
    cr_assert_null(err, "%s: %s", method, err);
    int n = (int)ir_numel(s->g->node[s->output].shape);
    cr_assert_leq(n, max);
    memcpy(out, interp_data(ip, s->output), sizeof *out * (size_t)n);
    interp_free(ip);
    sema_step_free(s);
    return n;
}

static const char *harness_tail =
    "    param w: f32[1] = zeros()\n"
    "    training_step(x: f32[1]) = sum(w * x)\n"
    "    optimizer = sgd(lr = 0.1)\n"
    "}\n";

Test(stdlib, losses_match_pytorch) {
    static const struct { const char *key, *args, *expr; } losses[] = {
        {"cross_entropy", "x: f32[4, 3], t: i64[4]", "cross_entropy(x, t, reduction = \"%s\")"},
        {"cross_entropy_ls", "x: f32[4, 3], t: i64[4]", "cross_entropy(x, t, label_smoothing = 0.1, reduction = \"%s\")"},
        {"nll_loss", "x: f32[4, 3], t: i64[4]", "nll_loss(log_softmax(x, dim = 1), t, reduction = \"%s\")"},
        {"mse_loss", "p: f32[4, 3], q: f32[4, 3]", "mse_loss(p, q, reduction = \"%s\")"},
        {"l1_loss", "p: f32[4, 3], q: f32[4, 3]", "l1_loss(p, q, reduction = \"%s\")"},
        {"binary_cross_entropy", "p: f32[4, 3], z: f32[4, 3]", "bce(sigmoid(p), z, reduction = \"%s\")"},
        {"bce_with_logits", "p: f32[4, 3], z: f32[4, 3]", "bce_with_logits(p, z, reduction = \"%s\")"},
    };
    static const char *const reds[] = {"mean", "sum"};
    char src[8192], line[512], expr[256];
    size_t k = (size_t)snprintf(src, sizeof src, "model Losses() {\n");
    for (size_t i = 0; i < sizeof losses / sizeof *losses; i++)
        for (int r = 0; r < 2; r++) {
            snprintf(expr, sizeof expr, losses[i].expr, reds[r]);
            snprintf(line, sizeof line, "    %s_%s(%s) = %s\n", losses[i].key, reds[r], losses[i].args, expr);
            k += (size_t)snprintf(src + k, sizeof src - k, "%s", line);
        }
    snprintf(src + k, sizeof src - k, "%s", harness_tail);
    cJSON *fx = fixture();
    Node *root = parse(src);
    for (size_t i = 0; i < sizeof losses / sizeof *losses; i++)
        for (int r = 0; r < 2; r++) {
            char name[128];
            snprintf(name, sizeof name, "%s_%s", losses[i].key, reds[r]);
            double got;
            cr_assert_eq(run_method(root, name, fx, &got, 1), 1);
            double want = cJSON_GetObjectItem(cJSON_GetObjectItem(fx, "losses"), name)->valuedouble;
            cr_expect(fabs(got - want) <= 1e-6 * fabs(want), "%s: %.12g, torch %.12g", name, got, want);
        }
    unparse();
    cJSON_Delete(fx);
}

Test(stdlib, loss_reduction_is_checked) {
    Node *root = parse("model M() {\n"
                       "    bad(p: f32[2], q: f32[2]) = l1_loss(p, q, reduction = \"none\")\n"
                       "    param w: f32[1] = zeros()\n"
                       "    training_step(x: f32[1]) = sum(w * x)\n"
                       "    optimizer = sgd(lr = 0.1)\n"
                       "}\n");
    SemaOptions opt = {.batch = 1};
    char msg[1024] = {0};
    FILE *mem = fmemopen(msg, sizeof msg - 1, "w");
    diag_set_output(mem);
    cr_assert_null(sema_lower(root, path, "bad", &opt, true));
    fclose(mem);
    diag_set_output(NULL);
    cr_assert_eq(diag_error_count(), 1);
    cr_assert(strstr(msg, ":2:33: error: l1_loss: reduction is \"mean\" or \"sum\""), "%s", msg);
    unparse();
}

Test(stdlib, metrics_match_pytorch) {
    cJSON *fx = fixture(), *m = cJSON_GetObjectItem(fx, "metrics");
    Node *root = parse("use metrics\n"
                       "model Metrics() {\n"
                       "    acc(logits: f32[10, 4], labels: i64[10]) = accuracy(logits, labels)\n"
                       "    top2(logits: f32[10, 4], labels: i64[10]) = metrics.top_k_accuracy(logits, labels, k = 2)\n"
                       "    f1(logits: f32[10, 4], labels: i64[10]) = metrics.f1_score(logits, labels)\n"
                       "    cm(logits: f32[10, 4], labels: i64[10]) = metrics.confusion_matrix(logits, labels)\n"
                       "    param w: f32[1] = zeros()\n"
                       "    training_step(x: f32[1]) = sum(w * x)\n"
                       "    optimizer = sgd(lr = 0.1)\n"
                       "}\n");
    double got[16], want[16];
    static const char *const names[][2] = {{"acc", "accuracy"}, {"top2", "top2_accuracy"}, {"f1", "f1_macro"}};
    for (int i = 0; i < 3; i++) {
        run_method(root, names[i][0], m, got, 1);
        want[0] = cJSON_GetObjectItem(m, names[i][1])->valuedouble;
        cr_expect(fabs(got[0] - want[0]) < 1e-12, "%s: %g, torch %g", names[i][1], got[0], want[0]);
    }
    cr_assert_eq(run_method(root, "cm", m, got, 16), 16);
    cr_assert_eq(flatten(cJSON_GetObjectItem(m, "confusion_matrix"), want, 16), 16);
    for (int i = 0; i < 16; i++) cr_expect_eq(got[i], want[i], "confusion matrix [%d][%d]", i / 4, i % 4);
    unparse();
    cJSON_Delete(fx);
}

/* The optimizer as a .ltl call from the fixture's PyTorch arguments: SGD(lr=0.1,
 * nesterov=True) -> sgd(lr = 0.1, nesterov = true). */
static void optimizer_call(const cJSON *run, char *out, size_t size) {
    const char *kind = cJSON_GetObjectItem(run, "kind")->valuestring;
    size_t k = (size_t)snprintf(out, size, "%s(", !strcmp(kind, "SGD") ? "sgd" : !strcmp(kind, "Adam") ? "adam"
                                                  : !strcmp(kind, "AdamW") ? "adamw" : "rmsprop");
    for (const cJSON *a = cJSON_GetObjectItem(run, "args")->child; a; a = a->next) {
        k += (size_t)snprintf(out + k, size - k, "%s%s = ", out[k - 1] == '(' ? "" : ", ", a->string);
        if (cJSON_IsBool(a)) k += (size_t)snprintf(out + k, size - k, "%s", cJSON_IsTrue(a) ? "true" : "false");
        else if (cJSON_IsArray(a))
            k += (size_t)snprintf(out + k, size - k, "(%.17g, %.17g)", a->child->valuedouble, a->child->next->valuedouble);
        else k += (size_t)snprintf(out + k, size - k, "%.17g", a->valuedouble);
    }
    snprintf(out + k, size - k, ")");
}

/* Each optimizer, lowered from .ltl with PyTorch's arguments, takes 6 steps on
 * sum(w^4) / 4 + sum(s w) from w0; the parameters after each step are PyTorch's. */
Test(stdlib, optimizers_match_pytorch) {
    cJSON *fx = fixture(), *o = cJSON_GetObjectItem(fx, "optim");
    double w0[3], sv[3];
    flatten(cJSON_GetObjectItem(o, "w0"), w0, 3);
    flatten(cJSON_GetObjectItem(o, "s"), sv, 3);
    int nruns = 0;
    for (const cJSON *run = cJSON_GetObjectItem(o, "runs")->child; run; run = run->next, nruns++) {
        char opt[512], src[2048];
        optimizer_call(run, opt, sizeof opt);
        snprintf(src, sizeof src,
                 "model Quartic() {\n"
                 "    param w: f32[3] = zeros()\n"
                 "    training_step(s: f32[3]) = sum(w * w * w * w) / 4 + sum(w * s)\n"
                 "    optimizer = %s\n"
                 "}\n", opt);
        Node *root = parse(src);
        StepGraph *s = lower(root, "training_step", true);
        IrGraph *g = s->g;
        double *store[512] = {0};
        cr_assert_lt(g->n, 512);
        double lr = cJSON_GetObjectItem(cJSON_GetObjectItem(run, "args"), "lr")->valuedouble;
        const cJSON *traj = cJSON_GetObjectItem(run, "params")->child;
        for (int step = 0; step < 6; step++, traj = traj->next) {
            IrInterp *ip = interp_new(g, true);
            for (int i = 0; i < g->n; i++) {
                const IrNode *n = &g->node[i];
                if (n->op != IR_INPUT) continue;
                if (!store[i]) store[i] = calloc((size_t)ir_numel(n->shape) + 1, sizeof(double));
                if (step == 0 && n->kind == IR_IN_PARAM) memcpy(store[i], w0, sizeof w0);
                if (n->kind == IR_IN_DATA && !strcmp(n->name, "s")) memcpy(store[i], sv, sizeof sv);
                if (i == s->groups[0].lr) store[i][0] = lr;
                interp_set_f64(ip, i, store[i]);
            }
            const char *err = interp_run(ip);
            cr_assert_null(err, "%s: %s", opt, err);
            for (int k = 0; k < g->nout; k++)
                if (g->out[k].kind == IR_OUT_UPDATE)
                    memcpy(store[g->out[k].target], interp_data(ip, g->out[k].value),
                           sizeof(double) * (size_t)ir_numel(g->node[g->out[k].value].shape));
            interp_free(ip);
            double want[3];
            flatten(traj, want, 3);
            int w = s->params[0].id;
            for (int i = 0; i < 3; i++)
                cr_expect(fabs(store[w][i] - want[i]) < 1e-9, "%s step %d w[%d]: %.12g, torch %.12g", opt, step + 1, i,
                          store[w][i], want[i]);
        }
        for (int i = 0; i < 512; i++) free(store[i]);
        sema_step_free(s);
        unparse();
    }
    cr_assert_eq(nruns, 8);
    cJSON_Delete(fx);
}

static RtScheduler scheduler(const char *kind, const cJSON *args) {
    RtScheduler s = {.kind = kind, .frequency = 1};
    for (const cJSON *a = args->child; a && s.n < 12; a = a->next, s.n++) {
        s.keys[s.n] = a->string;
        s.vals[s.n] = cJSON_IsString(a) ? (RtValue){RT_STR, 0, 0, a->valuestring} : (RtValue){RT_FLOAT, 0, a->valuedouble, NULL};
    }
    return s;
}

Test(stdlib, schedulers_match_pytorch) {
    cJSON *fx = fixture();
    int n = 0;
    for (const cJSON *sc = cJSON_GetObjectItem(fx, "sched")->child; sc; sc = sc->next, n++) {
        RtScheduler s = scheduler(sc->string, cJSON_GetObjectItem(sc, "ltl"));
        double lr[12], metric[12];
        cr_assert_eq(flatten(cJSON_GetObjectItem(sc, "lr"), lr, 12), 12);
        bool plateau = !strcmp(sc->string, "reduce_on_plateau");
        if (plateau) flatten(cJSON_GetObjectItem(sc, "metrics"), metric, 12);
        for (int t = 0; t < 12; t++) {
            double got = plateau ? rt_sched_plateau(&s, 0.1, metric[t]) : rt_sched_lr(&s, 0.1, t);
            cr_expect(fabs(got - lr[t]) < 1e-12, "%s at step %d: %.15g, torch %.15g", sc->string, t, got, lr[t]);
        }
    }
    cr_assert_eq(n, 7);
    cJSON_Delete(fx);
}

Test(stdlib, initialisers_match_pytorch) {
    cJSON *fx = fixture();
    char src[4096];
    size_t k = (size_t)snprintf(src, sizeof src, "model Inits() {\n");
    int n = 0;
    for (const cJSON *it = cJSON_GetObjectItem(fx, "init")->child; it; it = it->next, n++) {
        k += (size_t)snprintf(src + k, sizeof src - k, "    param p%d: f32[", n);
        for (const cJSON *d = cJSON_GetObjectItem(it, "shape")->child; d; d = d->next)
            k += (size_t)snprintf(src + k, sizeof src - k, "%d%s", d->valueint, d->next ? ", " : "");
        k += (size_t)snprintf(src + k, sizeof src - k, "] = %s(", cJSON_GetObjectItem(it, "init")->valuestring);
        for (const cJSON *a = cJSON_GetObjectItem(it, "args")->child; a; a = a->next) {
            if (cJSON_IsString(a)) k += (size_t)snprintf(src + k, sizeof src - k, "%s = \"%s\"", a->string, a->valuestring);
            else k += (size_t)snprintf(src + k, sizeof src - k, "%s = %.17g", a->string, a->valuedouble);
            k += (size_t)snprintf(src + k, sizeof src - k, "%s", a->next ? ", " : "");
        }
        k += (size_t)snprintf(src + k, sizeof src - k, ")\n");
    }
    snprintf(src + k, sizeof src - k, "    training_step(x: f32[1]) = sum(p0) * x[0]\n    optimizer = sgd(lr = 0.1)\n}\n");
    Node *root = parse(src);
    StepGraph *s = lower(root, "training_step", false);
    cr_assert_eq(s->nparams, n);
    int i = 0;
    for (const cJSON *it = cJSON_GetObjectItem(fx, "init")->child; it; it = it->next, i++) {
        const ParamInit *p = &s->params[i];
        double want = cJSON_GetObjectItem(it, "value")->valuedouble;
        if (cJSON_IsTrue(cJSON_GetObjectItem(it, "uniform"))) {
            cr_expect_eq(p->dist, INIT_UNIFORM, "p%d", i);
            cr_expect(fabs(p->b - want) < 1e-12 && fabs(p->a + want) < 1e-12, "p%d: U(%g, %g), torch bound %g", i, p->a, p->b, want);
        } else {
            cr_expect_eq(p->dist, INIT_NORMAL, "p%d", i);
            cr_expect(fabs(p->b - want) < 1e-12 && p->a == 0, "p%d: N(%g, %g), torch std %g", i, p->a, p->b, want);
        }
    }
    sema_step_free(s);
    unparse();
    cJSON_Delete(fx);
}

/* nn's layers start from PyTorch's distributions: Linear and Conv2d kaiming_uniform(sqrt 5)
 * = U(+-1/sqrt(fan_in)) with biases U(+-1/sqrt(fan_in)), Embedding N(0, 1), LayerNorm 1 and
 * 0, MultiheadAttention's q/k/v rows of a xavier_uniform [3E, E] and zero biases; Sequential's
 * layers are named by position as PyTorch's. */
Test(stdlib, layer_defaults_are_pytorchs) {
    Node *root = parse("use nn\n"
                       "model M() {\n"
                       "    fc = nn.Linear(16, 3)\n"
                       "    conv = nn.Conv2d(2, 4, 3)\n"
                       "    emb = nn.Embedding(10, 8)\n"
                       "    ln = nn.LayerNorm(8)\n"
                       "    attn = nn.MultiheadAttention(8, 2)\n"
                       "    net = nn.Sequential([nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 2)])\n"
                       "    training_step(x: f32[B, 16]) = sum(fc(x)) + sum(net(x))\n"
                       "    optimizer = sgd(lr = 0.1)\n"
                       "}\n");
    StepGraph *s = lower(root, "training_step", false);
    static const struct { const char *name; InitDist d; double a, b; } want[] = {
        {"fc.weight", INIT_UNIFORM, -0.25, 0.25}, {"fc.bias", INIT_UNIFORM, -0.25, 0.25},
        {"conv.weight", INIT_UNIFORM, -1 / sqrt(18), 1 / sqrt(18)}, {"conv.bias", INIT_UNIFORM, -1 / sqrt(18), 1 / sqrt(18)},
        {"emb.weight", INIT_NORMAL, 0, 1}, {"ln.weight", INIT_CONST, 1, 1}, {"ln.bias", INIT_CONST, 0, 0},
        {"attn.q_proj.weight", INIT_UNIFORM, -sqrt(6.0 / 32), sqrt(6.0 / 32)}, {"attn.q_proj.bias", INIT_CONST, 0, 0},
        {"attn.out_proj.weight", INIT_UNIFORM, -1 / sqrt(8), 1 / sqrt(8)}, {"attn.out_proj.bias", INIT_CONST, 0, 0},
        {"net.0.weight", INIT_UNIFORM, -0.25, 0.25}, {"net.2.weight", INIT_UNIFORM, -0.5, 0.5}, /* Sequential: by position */
    };
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        const ParamInit *p = NULL;
        for (int i = 0; i < s->nparams; i++)
            if (!strcmp(s->params[i].name, want[k].name)) p = &s->params[i];
        cr_assert(p, "%s is missing", want[k].name);
        cr_expect_eq(p->dist, want[k].d, "%s", want[k].name);
        cr_expect(fabs(p->a - want[k].a) < 1e-12, "%s: a = %g, want %g", want[k].name, p->a, want[k].a);
        if (p->dist != INIT_CONST) cr_expect(fabs(p->b - want[k].b) < 1e-12, "%s: b = %g, want %g", want[k].name, p->b, want[k].b);
    }
    sema_step_free(s);
    unparse();
}

/* ---- text ---- */

static char dir[64];

static void text_setup(void) {
    e2e_tmpdir(dir, "/tmp/ltl_text_XXXXXX");
    char text[40 * 24 + 1] = "";
    for (int i = 0; i < 40; i++) strcat(text, "the cat sat on the mat. ");
    e2e_write(dir, "t.txt", "%s", text);
}

static void text_teardown(void) { e2e_rmdir(dir); }

TestSuite(text, .init = text_setup, .fini = text_teardown, .timeout = 120);

Test(text, vocabulary_windows_and_sampling) {
    char p[128], *err = NULL;
    snprintf(p, sizeof p, "%s/t.txt", dir);
    const char *paths[] = {p, p};
    RtText *t = rt_text_read(paths, 2, &err);
    cr_assert(t, "%s", err);
    cr_assert_eq(t->len, 2 * 40 * 24);
    cr_assert_eq(t->nvocab, 11); /* " .acehmnost" */
    cr_assert_arr_eq(t->vocab, " .acehmnost", 11);
    int64_t ids[4];
    cr_assert_eq(rt_text_encode(t, "cat", ids, &err), 3);
    cr_assert(ids[0] == 3 && ids[1] == 2 && ids[2] == 10);
    cr_assert_eq(rt_text_encode(t, "dog", ids, &err), -1);
    cr_assert(strstr(err, "'d'"), "%s", err);
    free(err);
    RtDataset *ds = rt_text_windows(t, 5, 2, &err);
    cr_assert(ds, "%s", err);
    cr_assert_eq(rt_data_len(ds), (t->len - 5) / 2 + 1);
    const unsigned char *w = rt_data_sample(ds, 1); /* "e cat" at offset 2 */
    cr_assert(t->vocab[w[0]] == 'e' && t->vocab[w[1]] == ' ' && t->vocab[w[4]] == 't');
    int64_t x[8], y[8];
    rt_text_next_token(w, 1, 5, x, y);
    for (int k = 0; k < 4; k++) cr_assert(x[k] == w[k] && y[k] == w[k + 1]);
    cr_assert_null(rt_text_windows(t, t->len + 1, 1, &err));
    free(err);
    double logits[3] = {0, 5, 1};
    cr_assert_eq(rt_text_sample(logits, 3, 0, 1, 0), 1); /* temperature 0: the arg-max */
    int hits = 0;
    for (int k = 0; k < 1000; k++) hits += rt_text_sample(logits, 3, 1.0, 9, (uint64_t)k) == 1;
    cr_assert(hits > 950 && hits < 1000, "%d", hits); /* p = e^5 / (1 + e^5 + e) = 0.976 */
    rt_data_free(ds);
    rt_text_free(t);
    cr_assert_null(rt_text_read((const char *[]){"/nonexistent/x"}, 1, &err));
    cr_assert(strstr(err, "cannot open"), "%s", err);
    free(err);
}

static const char *lm_src =
    "use nn\n"
    "model TinyLM(vocab = data.vocab_size, d = 16) {\n"
    "    tok = nn.Embedding(vocab, d)\n"
    "    pos = nn.Embedding(8, d)\n"
    "    attn = nn.MultiheadAttention(d, 2)\n"
    "    head = nn.Linear(d, vocab)\n"
    "    forward(idx: i64[B, T]) -> f32[B, T, vocab] {\n"
    "        h = tok(idx) + pos(arange(T))\n"
    "        return head(h + attn(h, h, h, causal = true))\n"
    "    }\n"
    "    training_step(x: i64[B, T], y: i64[B, T]) {\n"
    "        loss = cross_entropy(reshape(forward(x), (B * T, vocab)), reshape(y, (B * T,)))\n"
    "        log(\"train_loss\", loss)\n"
    "        return loss\n"
    "    }\n"
    "    validation_step(x: i64[B, T], y: i64[B, T]) {\n"
    "        log_confusion_matrix(\"val_cm\", reshape(forward(x), (B * T, vocab)), reshape(y, (B * T,)))\n"
    "    }\n"
    "    on_fit_end() { generate(\"%s\", steps = 37, temperature = 0.5, seed = 3) }\n"
    "    optimizer = adam(lr = 1e-2)\n"
    "}\n"
    "data Text(path = \"%s/t.txt\") {\n"
    "    text = read_text(path)\n"
    "    vocab_size = chars(text).size\n"
    "    train, val = split(windows(encode(text), length = 9, stride = 3), [0.8, 0.2], seed = 0)\n"
    "    transform(w) = (w[:-1], w[1:])\n"
    "    loader(batch = 16, shuffle = true, drop_last = true)\n"
    "}\n"
    "trainer {\n"
    "    max_epochs = 3\n"
    "    seed = 1\n"
    "    log_every_n_steps = 1\n"
    "    enable_progress_bar = false\n"
    "    default_root_dir = \"%s/runs\"\n"
    "    logger = [csv]\n"
    "}\n";

static int ltlc(char *out, size_t size, const char *prompt) {
    char cmd[512];
    e2e_write(dir, "lm.ltl", lm_src, prompt, dir, dir);
    snprintf(cmd, sizeof cmd, "%s run lm.ltl fit", LTLC);
    return e2e_sh(dir, out, size, cmd);
}

/* A tiny character model trains (the loss falls) and generates text of the requested length
 * made of the text's characters only. */
Test(text, char_lm_trains_and_generates) {
    static char out[1 << 16];
    int rc = ltlc(out, sizeof out, "the ");
    cr_assert_eq(rc, 0, "%s", out);
    char p[256];
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/metrics.csv", dir);
    FILE *f = fopen(p, "r");
    cr_assert(f);
    char line[256];
    double first = NAN, last = NAN;
    int rows = 0;
    while (fgets(line, sizeof line, f))
        if (line[0] >= '0' && line[0] <= '9') { /* epoch,step,train_loss */
            double v = strtod(strrchr(line, ',') + 1, NULL);
            if (rows++ == 0) first = v;
            last = v;
        }
    fclose(f);
    cr_assert_eq(rows, 45, "%d rows", rows); /* 255 training windows: 15 batches x 3 epochs */
    cr_assert_lt(last, 0.5 * first, "loss %g -> %g", first, last);
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/samples.txt", dir);
    f = fopen(p, "r");
    cr_assert(f, "no samples.txt");
    cr_assert(fgets(line, sizeof line, f) && !strncmp(line, "--- epoch 3", 11), "%s", line);
    cr_assert(fgets(line, sizeof line, f));
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    cr_assert_eq(strlen(line), 4 + 37, "'%s'", line);
    cr_assert(!strncmp(line, "the ", 4));
    cr_assert_eq(strspn(line, " .acehmnost"), strlen(line), "'%s'", line);
    cr_assert(strstr(out, line), "the sample is printed too:\n%s", out);
    /* the confusion matrix of the last validation: 63 windows of 8 characters, mostly right */
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/val_cm_epoch2.csv", dir);
    f = fopen(p, "r");
    cr_assert(f, "no val_cm_epoch2.csv");
    cr_assert(fgets(line, sizeof line, f) && !strcmp(line, "true\\predicted,0,1,2,3,4,5,6,7,8,9,10\n"), "%s", line);
    long total = 0, diag = 0;
    for (int i = 0; i < 11; i++) {
        cr_assert(fgets(line, sizeof line, f));
        char *q = line;
        cr_assert_eq(strtol(q, &q, 10), i);
        for (int j = 0; j < 11; j++) {
            long v = strtol(q + 1, &q, 10);
            total += v;
            diag += i == j ? v : 0;
        }
    }
    fclose(f);
    cr_assert_eq(total, 63 * 8);
    cr_assert_gt(diag, total / 2, "%ld of %ld right", diag, total);
}

Test(text, prompt_outside_the_vocabulary_is_an_error) {
    static char out[1 << 16];
    cr_assert_eq(ltlc(out, sizeof out, "dog"), 1, "%s", out);
    cr_assert(strstr(out, "generate: the character 'd' (byte 100) is not in the text's vocabulary"), "%s", out);
}

/* examples/char_transformer.ltl on the licence texts: one batch of each loop, then the samples
 * of on_train_epoch_end and on_fit_end. */
Test(text, char_transformer_example_runs) {
    static char out[1 << 16];
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s run %s/examples/char_transformer.ltl fit --trainer.max_steps=1 --trainer.limit_val_batches=1 "
             "--trainer.enable_progress_bar=false", LTLC, SRCDIR);
    cr_assert_eq(e2e_sh(dir, out, sizeof out, cmd), 0, "%s", out);
    int samples = 0; /* on_train_epoch_end's and on_fit_end's */
    for (const char *s = out; (s = strstr(s, "The ")); s++) samples += s == out || s[-1] == '\n';
    cr_assert_geq(samples, 2, "%s", out);
    /* the repeated blocks are one summary row, counted in the total */
    cr_assert(strstr(out, "| blocks | Sequential | 396 K  | [32, 64, 128]") && strstr(out, "426 K     Trainable params"), "%s", out);
}

/* nn.TransformerEncoderLayer computes what PyTorch's does with the same weights: post-norm
 * with relu, and pre-norm with gelu under a causal mask. */
Test(stdlib, transformer_layer_matches_pytorch) {
    cJSON *fx = fixture();
    int n = 0;
    for (const cJSON *t = cJSON_GetObjectItem(fx, "transformer")->child; t; t = t->next, n++) {
        char src[1024];
        snprintf(src, sizeof src,
                 "use nn\n"
                 "model M() {\n"
                 "    enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward = 16, p = 0.0, activation = \"%s\", norm_first = %s)\n"
                 "    run(x: f32[2, 5, 8]) = enc(x, causal = %s)\n"
                 "    training_step(x: f32[B, 5, 8]) = sum(enc(x))\n"
                 "    optimizer = sgd(lr = 0.1)\n"
                 "}\n",
                 cJSON_GetObjectItem(t, "activation")->valuestring,
                 cJSON_IsTrue(cJSON_GetObjectItem(t, "norm_first")) ? "true" : "false",
                 cJSON_IsTrue(cJSON_GetObjectItem(t, "causal")) ? "true" : "false");
        Node *root = parse(src);
        StepGraph *s = lower(root, "run", false);
        IrInterp *ip = interp_new(s->g, true);
        static double buf[4096], want[80];
        const cJSON *params = cJSON_GetObjectItem(t, "params");
        for (int i = 0; i < s->g->n; i++) {
            const IrNode *nd = &s->g->node[i];
            if (nd->op != IR_INPUT) continue;
            const cJSON *v = nd->kind == IR_IN_DATA ? cJSON_GetObjectItem(t, "x") : cJSON_GetObjectItem(params, nd->name);
            cr_assert(v, "no value for %s", nd->name);
            cr_assert_eq(flatten(v, buf, 4096), ir_numel(nd->shape), "%s", nd->name);
            interp_set_f64(ip, i, buf);
        }
        const char *err = interp_run(ip);
        cr_assert_null(err, "%s", err);
        cr_assert_eq(flatten(cJSON_GetObjectItem(t, "y"), want, 80), 80);
        const double *got = interp_data(ip, s->output);
        for (int i = 0; i < 80; i++)
            cr_expect(fabs(got[i] - want[i]) < 1e-9, "layer %d, y[%d]: %.12g, torch %.12g", n, i, got[i], want[i]);
        interp_free(ip);
        sema_step_free(s);
        unparse();
    }
    cr_assert_eq(n, 2);
    cJSON_Delete(fx);
}
