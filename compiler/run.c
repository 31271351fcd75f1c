/* run.c — `ltlc run FILE STAGE...`: the pipeline of main.c carried on into training. The
 * steps are lowered for the loader's batch size, the data module becomes data sets,
 * transforms and loaders, the model state lives in flat buffers (params, buffers, optimizer
 * state) that checkpoints save as they are, and runtime/fit.c runs the loops. */
#include "driver.h"
#include "ir.h"
#include "llvm.h"
#include "cuda.h"
#include "sema.h"
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

enum { KIND_PARAM, KIND_BUFFER, KIND_STATE, NKINDS };
static const IrInputKind kinds[NKINDS] = {IR_IN_PARAM, IR_IN_BUFFER, IR_IN_STATE};

typedef struct { RtStage stage; int64_t batch; StepGraph *s; LlvmStep *jit; CudaStep *gpu; } Compiled;

/* profiler = "simple" | "advanced": time per action (Lightning's SimpleProfiler report), per
 * kernel of the compiled steps, and with "advanced" a Chrome trace of every action. */
enum { P_LOAD, P_TRAIN, P_VAL, P_TEST, P_PREDICT, P_LOG, P_SAVE, P_HOOK, P_NACT };
static const char *const action_names[P_NACT] = {
    "[_TrainingEpochLoop].train_dataloader_next", "[Strategy]SingleDeviceStrategy.training_step",
    "[Strategy]SingleDeviceStrategy.validation_step", "[Strategy]SingleDeviceStrategy.test_step",
    "[Strategy]SingleDeviceStrategy.predict_step", "[LightningModule].log", "[Callback]ModelCheckpoint.save",
    "[LightningModule].hooks"};
typedef struct { double ts, dur; int action; } TraceEvent;
typedef struct {
    bool on, trace;
    double total[P_NACT], start;
    int64_t calls[P_NACT];
    TraceEvent *ev;
    int nev, capev;
} Profiler;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void prof_add(Profiler *p, int action, double t0) {
    if (!p->on) return;
    double dur = seconds() - t0;
    p->total[action] += dur;
    p->calls[action]++;
    if (p->trace && p->nev < 1000000) {
        if (p->nev == p->capev) {
            p->capev = p->capev ? 2 * p->capev : 4096;
            p->ev = xrealloc(p->ev, sizeof *p->ev * (size_t)p->capev);
        }
        p->ev[p->nev++] = (TraceEvent){t0 - p->start, dur, action};
    }
}

typedef struct {
    const Node *program;
    const char *path;
    SemaOptions opt;
    RtTrainerConfig cfg;
    DataPlan dp;
    const char *stage_step[RT_NSTAGES];
    bool interp;                          /* --backend=interp: the reference interpreter */
    bool cuda;                            /* accelerator: the steps run on the CUDA executor */
    int cc;                               /* ... on a GPU of this compute capability (major*10 + minor) */
    const Compiled *dev;                  /* whose device copy of the state is newer than buf[] */
    RtPool *pool;
    float lrf[8];                         /* the rates as the compiled steps read them */
    int64_t step_i64;
    unsigned char apply8;
    float *xbuf;                          /* u8 batches converted for a compiled step */
    size_t xcap;
    struct { const char *name; StepGraph *s; bool absent; } hooks[8];
    int nhooks;
    Profiler prof;
    FILE *pred;                           /* predict: predictions.csv */
    char pred_path[1200];
    char *hparams_yaml;                   /* kept in checkpoints */
    /* data */
    struct { pthread_t t; bool on; int n; const DataExpr *e[8]; RtDataset *ds[8]; char *err[8]; } pre; /* preload */
    RtDataset *ds[RT_NSTAGES];
    RtDataset *owned[16];
    int nowned;
    RtLoader *ld[RT_NSTAGES];
    int64_t next_epoch[RT_NSTAGES], next_batch[RT_NSTAGES];
    const RtBatch *batch;
    /* text (read_text, windows): the vocabulary; batches of windows split into x and y */
    RtText *text;
    int64_t *tok;
    size_t tokcap;
    Compiled gen;                         /* forward at batch 1, for generate() */
    struct { const char *name; int64_t c; double *sum; } cm[8];   /* log_confusion_matrix */
    int ncm;
    /* model state: one flat buffer per kind, laid out by the training graph */
    IrLayout layout[NKINDS];
    unsigned char *buf[NKINDS];
    Compiled comp[32];
    int ncomp;
    RtMetricSpec specs[RT_NSTAGES][64];
    /* the checkpoint callback (Lightning's ModelCheckpoint) */
    bool save_last, monitor_max, warned_monitor;
    int64_t top_k;                       /* -1: keep all */
    int64_t every_n_epochs;               /* 0: the default, every epoch */
    const char *monitor, *filename;
    struct { double score; char path[1600]; } kept[64];
    int nkept;
    RtLoop *loop;
    /* learning rates: the current one per optimizer group, and lr_monitor */
    double lr[8];
    RtScheduler sched[8];
    int ngroups, lr_monitor;              /* lr_monitor: 0 off, 1 per step, 2 per epoch */
    char lr_names[8][32];
    /* outputs */
    RtLogger *logger;
    RtProgress *bar;
    bool bar_open;
    int64_t max_epochs;
    char ckpt_dir[1024], last_ckpt[1200];
    double epoch_time;
    int rank, world;                      /* data-parallel training: this rank of world (docs/distributed.md) */
} Run;

static int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *m;
    if (vasprintf(&m, fmt, ap) < 0) m = NULL;
    va_end(ap);
    diag_plain_error("%s", m ? m : "error");
    free(m);
    return 1;
}

/* ---- data sets from the data module's description ---- */

typedef struct { const DataExpr *e; RtDataset *parts[8]; int nparts; RtDataset *ds; } Built;

/* A data source's argument by its parameter's name (lower.c's DATA_FNS binds them), or NULL. */
static const DataArg *arg(const DataExpr *e, const char *key) {
    for (int i = 0; i < e->n; i++)
        if (e->keys[i] && !strcmp(e->keys[i], key)) return &e->args[i];
    return NULL;
}

/* ---- reading the IDX files while the steps compile ---- */

/* The idx(...) sources the run's stages read, decompressed on a thread of their own from
 * before the steps are compiled (gzip'd Fashion-MNIST takes as long to inflate as the MLP's
 * step takes to compile); build() takes them, and checks the labels once the number of
 * classes is known. */
static void *preload_run(void *ctx) {
    Run *r = ctx;
    for (int i = 0; i < r->pre.n; i++) {
        const DataArg *img = arg(r->pre.e[i], "images"), *lab = arg(r->pre.e[i], "labels");
        r->pre.ds[i] = rt_data_idx(img->str, lab ? lab->str : NULL, 0, &r->pre.err[i]);
    }
    return NULL;
}

static void preload_find(Run *r, const DataExpr *e) {
    const DataArg *img = arg(e, "images"), *lab = arg(e, "labels");
    if (!strcmp(e->fn, "idx") && img && img->kind == DA_STR && (!lab || lab->kind == DA_STR) && r->pre.n < 8) {
        for (int i = 0; i < r->pre.n; i++)
            if (r->pre.e[i] == e) return;
        r->pre.e[r->pre.n++] = e;
    }
    for (int i = 0; i < e->n; i++)
        if (e->args[i].kind == DA_EXPR) preload_find(r, e->args[i].expr);
}

static void preload_start(Run *r) {
    for (int s = 0; s < RT_NSTAGES; s++)
        if (r->dp.source[s] && r->stage_step[s]) preload_find(r, r->dp.source[s]);
    r->pre.on = r->pre.n && pthread_create(&r->pre.t, NULL, preload_run, r) == 0;
    if (!r->pre.on) r->pre.n = 0; /* build() reads them itself */
}

static void preload_join(Run *r) {
    if (r->pre.on) pthread_join(r->pre.t, NULL);
    r->pre.on = false;
}

static void preload_free(Run *r) {
    preload_join(r);
    for (int i = 0; i < r->pre.n; i++) { rt_data_free(r->pre.ds[i]); free(r->pre.err[i]); }
    r->pre.n = 0;
}

static RtDataset *build(Run *r, const DataExpr *e, Built *memo, int *nmemo, int64_t num_classes) {
    for (int i = 0; i < *nmemo; i++)
        if (memo[i].e == e) return memo[i].ds;
    char *err = NULL;
    RtDataset *ds = NULL;
    Built b = {.e = e};
    if (!strcmp(e->fn, "part")) {
        const DataExpr *src = e->args[0].expr;
        if (!build(r, src, memo, nmemo, num_classes)) return NULL; /* reported */
        for (int i = 0; i < *nmemo; i++)
            if (memo[i].e == src && e->part < memo[i].nparts) return memo[i].parts[e->part];
        error("%s: only a split can be unpacked into several data sets", r->path);
        return NULL;
    }
    if (!strcmp(e->fn, "idx")) {
        const DataArg *a0 = arg(e, "images"), *a1 = arg(e, "labels");
        if (!a0 || a0->kind != DA_STR || (a1 && a1->kind != DA_STR)) { error("%s: idx(images, labels) takes file names", r->path); return NULL; }
        int p = 0;
        while (p < r->pre.n && r->pre.e[p] != e) p++;
        preload_join(r);
        if (p == r->pre.n) {
            ds = rt_data_idx(a0->str, a1 ? a1->str : NULL, num_classes, &err);
        } else { /* read by preload_run: take it */
            ds = r->pre.ds[p], err = r->pre.err[p];
            r->pre.ds[p] = NULL, r->pre.err[p] = NULL;
            if (ds && rt_data_check_labels(ds, num_classes, a1 ? a1->str : a0->str, &err) != 0) { rt_data_free(ds); ds = NULL; }
        }
    } else if (!strcmp(e->fn, "csv")) {
        const DataArg *a0 = arg(e, "path"), *lab = arg(e, "label");
        RtCsvOptions o = {.header = true, .label_col = -1, .num_classes = num_classes};
        if (!a0 || a0->kind != DA_STR) { error("%s: csv(path, label = COLUMN) takes a file name", r->path); return NULL; }
        if (lab && lab->kind == DA_STR) o.label_name = lab->str;
        else if (lab && lab->kind == DA_NUM) o.label_col = (int64_t)lab->num;
        ds = rt_data_csv(a0->str, &o, &err);
    } else if (!strcmp(e->fn, "split")) {
        const DataArg *a0 = arg(e, "source"), *sizes = arg(e, "sizes"), *seed = arg(e, "seed");
        if (!a0 || a0->kind != DA_EXPR || !sizes || sizes->kind != DA_LIST) {
            error("%s: split(source, [n1, n2, ...], seed = S) takes a source and a list of sizes", r->path);
            return NULL;
        }
        RtDataset *src = build(r, a0->expr, memo, nmemo, num_classes);
        if (!src) return NULL;
        if (rt_data_split(src, sizes->nlist, sizes->list, seed ? (uint64_t)seed->num : (uint64_t)r->cfg.seed, b.parts, &err) < 0) {
            error("%s", err ? err : "cannot split the data");
            free(err);
            return NULL;
        }
        b.nparts = sizes->nlist;
        for (int i = 0; i < b.nparts && r->nowned < 16; i++) r->owned[r->nowned++] = b.parts[i];
        ds = src;
    } else if (!strcmp(e->fn, "windows") && r->text) {
        const DataArg *len = arg(e, "length"), *stride = arg(e, "stride");
        if (!len || len->kind != DA_NUM) { error("%s: windows(encode(text), length = N, stride = 1) needs a length", r->path); return NULL; }
        ds = rt_text_windows(r->text, (int64_t)len->num, stride && stride->kind == DA_NUM ? (int64_t)stride->num : 1, &err);
    } else {
        error("%s: the data source '%s' is not supported by `ltlc run` yet", r->path, e->fn);
        return NULL;
    }
    if (!ds) {
        error("%s", err ? err : "cannot read the data");
        free(err);
        return NULL;
    }
    free(err);
    if (strcmp(e->fn, "split") && r->nowned < 16) r->owned[r->nowned++] = ds;
    b.ds = ds;
    if (*nmemo < 16) memo[(*nmemo)++] = b;
    return ds;
}

static RtTransforms *transforms(Run *r, const TfStep *st, int n) {
    RtTransforms *tf = rt_tf_new();
    char *err = NULL;
    for (int i = 0; i < n; i++) {
        const TfStep *t = &st[i];
        float mean = (float)t->a, sd = (float)t->b;
        int rc = t->kind == TF_SCALE ? rt_tf_scale(tf, (float)t->a, (float)t->b, &err)
               : t->kind == TF_NORMALIZE ? rt_tf_normalize(tf, 1, &mean, &sd, &err)
               : t->kind == TF_RANDOM_CROP ? rt_tf_random_crop(tf, (int64_t)t->a, (int64_t)t->a, (int64_t)t->b, &err)
               : t->kind == TF_HFLIP ? rt_tf_hflip(tf, t->a, &err)
               : rt_tf_random_erasing(tf, t->a, 0.02, 0.33, 0.3, 3.3, 0, &err);
        if (rc < 0) {
            error("%s: transform: %s", r->path, err ? err : "bad argument");
            free(err);
            rt_tf_free(tf);
            return NULL;
        }
    }
    return tf;
}

/* The number of classes the loss expects (the label check of the data sets), or 0. */
static int64_t classes_of(const StepGraph *s) {
    for (int i = 0; s && i < s->g->n; i++) {
        const IrNode *n = &s->g->node[i];
        if ((n->op == IR_CROSS_ENTROPY || n->op == IR_NLL_LOSS) && n->nin >= 1) {
            const IrNode *in = &s->g->node[n->in[0]];
            if (in->shape.rank >= 2) return in->shape.d[1];
        }
    }
    return 0;
}

static bool make_loaders(Run *r, int64_t num_classes) {
    Built memo[16];
    int nmemo = 0;
    RtTransforms *train_tf = transforms(r, r->dp.train_tf, r->dp.ntrain_tf);
    RtTransforms *eval_tf = train_tf ? transforms(r, r->dp.eval_tf, r->dp.neval_tf) : NULL;
    bool ok = train_tf && eval_tf;
    for (int s = 0; ok && s < RT_NSTAGES; s++) {
        if (!r->dp.source[s] || !r->stage_step[s]) continue;
        if (!(r->ds[s] = build(r, r->dp.source[s], memo, &nmemo, num_classes))) { ok = false; break; }
        RtLoaderOptions o = {.batch_size = r->dp.batch, .shuffle = s == RT_TRAIN && r->dp.shuffle,
                             .drop_last = s == RT_TRAIN && r->dp.drop_last, .seed = (uint64_t)r->cfg.seed,
                             .workers = r->dp.workers, .prefetch = r->dp.prefetch,
                             /* ddp: each rank its shard; predict runs whole on every rank, rank 0 writes */
                             .rank = s == RT_PREDICT ? 0 : r->rank, .world_size = s == RT_PREDICT ? 1 : r->world};
        char *err = NULL;
        r->ld[s] = rt_loader_create(r->ds[s], r->dp.next_token ? NULL : s == RT_TRAIN ? train_tf : eval_tf, &o, &err);
        if (!r->ld[s]) { error("%s", err ? err : "cannot make the loader"); ok = false; }
        free(err);
        r->next_epoch[s] = -1;
    }
    rt_tf_free(train_tf);
    rt_tf_free(eval_tf);
    return ok;
}

/* ---- text: read_text, windows and generate() ---- */

/* Reads the data module's text (read_text) before anything is lowered: the vocabulary's size
 * binds the members that name it (vocab_size = chars(text).size) and the windows' length
 * the sequence dimension of the steps' inputs (T of x: i64[B, T]). */
static bool text_data(Run *r) {
    const DataExpr *rd = NULL, *win = NULL;
    for (int i = 0; i < r->dp.nexprs; i++) {
        if (!strcmp(r->dp.exprs[i].fn, "read_text")) rd = &r->dp.exprs[i];
        if (!strcmp(r->dp.exprs[i].fn, "windows")) win = &r->dp.exprs[i];
    }
    if (!rd) return true;
    const DataArg *a = arg(rd, "paths");
    if (!a || (a->kind != DA_STR && a->kind != DA_STRS)) return !error("%s: read_text takes a file name or a list of them", r->path);
    char *err = NULL;
    r->text = a->kind == DA_STR ? rt_text_read(&a->str, 1, &err) : rt_text_read(a->strs, a->nlist, &err);
    if (!r->text) { error("%s", err ? err : "cannot read the text"); free(err); return false; }
    for (int i = 0; i < r->dp.nsizes && r->opt.nbinds < 8; i++)
        r->opt.binds[r->opt.nbinds++] = (Sym){r->dp.sizes[i], r->text->nvocab};
    const DataArg *len = win ? arg(win, "length") : NULL;
    if (len && len->kind == DA_NUM) {
        int64_t n = (int64_t)len->num - r->dp.next_token;
        for (int k = 0; k < 2; k++) r->opt.sample[k].rank = 1, r->opt.sample[k].d[0] = n;
    }
    return true;
}

static const char *step_name(RtStage s);

/* transform(w) = (w[:-1], w[1:]): the batch of windows as i64 inputs and targets for the
 * step's data input `in`; NULL (reported) when it does not take them. */
static const int64_t *next_token(Run *r, RtStage st, const IrNode *in, const RtBatch *b, bool targets) {
    int64_t len = b->shape[1], n = b->size * (len - 1);
    if (in->dtype != IR_I64 || ir_numel(in->shape) != n) {
        char t[128];
        ir_shape_str(in->dtype, in->shape, t, sizeof t);
        error("%s: %s takes %s = %s but a batch of windows gives i64[%lld, %lld]", r->path, step_name(st), in->name, t,
              (long long)b->size, (long long)(len - 1));
        return NULL;
    }
    if ((size_t)(2 * n) > r->tokcap) { free(r->tok); r->tok = xmalloc(sizeof *r->tok * (size_t)(2 * n)); r->tokcap = (size_t)(2 * n); }
    rt_text_next_token(b->x, b->size, len, r->tok, r->tok + n);
    return r->tok + (targets ? n : 0);
}

static bool set_state(Run *r, IrInterp *ip, int i, const char *name);

/* generate(prompt, steps, temperature, seed) in a hook: forward at batch 1 on the last T
 * tokens (right-padded while fewer), a token drawn from the logits at the last position;
 * prints the text and appends it to samples.txt in the run folder. */
static bool generate(Run *r, const char *spec, int64_t epoch) {
    char *end;
    long long steps = strtoll(spec, &end, 10);
    double temp = strtod(end + 1, &end);
    long long seed = strtoll(end + 1, &end, 10);
    const char *prompt = end + 1;
    if (!r->text) return !error("%s: generate() needs text data (read_text in the data module)", r->path);
    if (!r->gen.s) {
        SemaOptions o = r->opt;
        o.batch = 1;
        o.backward = false;
        if (!(r->gen.s = sema_lower(r->program, r->path, "forward", &o, true))) return false;
        sema_simplify(r->gen.s);
        char err[512];
        if (!r->interp && !(r->gen.jit = llvm_step_compile(r->gen.s->g, &(LlvmStepOptions){.pool = r->pool}, err, sizeof err)))
            return !error("%s: compiling forward: %s", r->path, err);
    }
    const IrGraph *g = r->gen.s->g;
    const IrNode *in = &g->node[r->gen.s->data[0]], *out = r->gen.s->output >= 0 ? &g->node[r->gen.s->output] : NULL;
    if (r->gen.s->ndata != 1 || in->dtype != IR_I64 || in->shape.rank != 2 || !out || out->shape.rank != 3 ||
        out->shape.d[2] != r->text->nvocab)
        return !error("%s: generate() needs forward(idx: i64[B, T]) -> f32[B, T, vocab] (vocab = %d)", r->path, r->text->nvocab);
    int64_t T = in->shape.d[1], V = r->text->nvocab, n0 = (int64_t)strlen(prompt);
    int64_t *seq = xcalloc((size_t)(n0 + steps + T), sizeof *seq), *x = xcalloc((size_t)T, sizeof *x);
    double *logits = xmalloc(sizeof *logits * (size_t)V);
    char *err = NULL;
    bool ok = rt_text_encode(r->text, prompt, seq, &err) >= 0;
    if (!ok) error("%s: generate: %s", r->path, err);
    else if (!n0) ok = !error("%s: generate needs a prompt of at least one character", r->path);
    free(err);
    int o = 0;
    while (o < g->nout && (!g->out[o].name || strcmp(g->out[o].name, "output"))) o++;
    for (int64_t n = n0; ok && n < n0 + steps; n++) {
        int64_t from = n > T ? n - T : 0, at = n - from - 1; /* the last known token's position */
        memset(x, 0, sizeof *x * (size_t)T);
        memcpy(x, seq + from, sizeof *x * (size_t)(n - from));
        if (r->gen.jit) {
            for (int k = 0; k < NKINDS; k++) llvm_step_bind(r->gen.jit, kinds[k], r->buf[k]);
            llvm_step_set_input(r->gen.jit, r->gen.s->data[0], x);
            const char *e = llvm_step_run(r->gen.jit);
            if (e) { ok = !error("%s: generate: %s", r->path, e); break; }
            const void *v = llvm_step_output(r->gen.jit, o);
            for (int64_t k = 0; k < V; k++) logits[k] = ir_load(out->dtype, v, at * V + k);
        } else {
            IrInterp *ip = interp_new(g, false);
            for (int i = 0; i < g->n && ok; i++)
                if (g->node[i].op == IR_INPUT && i != r->gen.s->data[0] && !set_state(r, ip, i, g->node[i].name))
                    ok = !error("%s: %s has no value in the model state", r->path, g->node[i].name);
            interp_set(ip, r->gen.s->data[0], x);
            const char *e = ok ? interp_run(ip) : NULL;
            if (e) ok = !error("%s: generate: %s", r->path, e);
            if (ok) memcpy(logits, interp_data(ip, r->gen.s->output) + at * V, sizeof *logits * (size_t)V);
            interp_free(ip);
        }
        seq[n] = rt_text_sample(logits, V, temp, (uint64_t)seed, (uint64_t)n);
    }
    if (ok) {
        char *txt = xmalloc((size_t)(n0 + steps + 1));
        for (int64_t k = 0; k < n0 + steps; k++) txt[k] = (char)r->text->vocab[seq[k]];
        txt[n0 + steps] = 0;
        if (r->bar) rt_progress_print(r->bar, txt);
        else printf("%s\n", txt);
        fflush(stdout);
        if (r->logger) {
            char path[1200];
            snprintf(path, sizeof path, "%s/samples.txt", rt_logger_dir(r->logger));
            FILE *f = fopen(path, "a");
            if (f) { fprintf(f, "--- epoch %lld\n%s\n", (long long)epoch, txt); fclose(f); }
        }
        free(txt);
    }
    free(seq);
    free(x);
    free(logits);
    return ok;
}

/* log_confusion_matrix(name, input, target): the counts of the stage's batches so far (batch 0
 * starts again), written after each batch to NAME_epochE.csv in the run folder, so the file of
 * an epoch holds its whole matrix once the epoch is over. */
static bool confusion(Run *r, const IrGraph *g, int o, const void *v, bool doubles, const RtBatch *b) {
    const char *name = g->out[o].name + 3;
    const IrNode *n = &g->node[g->out[o].value];
    int64_t C = n->shape.d[0];
    int k = 0;
    while (k < r->ncm && strcmp(r->cm[k].name, name)) k++;
    if (k == 8) return true;
    if (k == r->ncm) {
        r->cm[k].name = name;
        r->cm[k].c = C;
        r->cm[k].sum = xcalloc((size_t)(C * C), sizeof(double));
        r->ncm++;
    }
    if (b->index == 0) memset(r->cm[k].sum, 0, sizeof(double) * (size_t)(C * C));
    for (int64_t i = 0; i < C * C; i++) r->cm[k].sum[i] += doubles ? ((const double *)v)[i] : ir_load(n->dtype, v, i);
    if (!r->logger) return true;
    char path[1400];
    snprintf(path, sizeof path, "%s/%s_epoch%lld.csv", rt_logger_dir(r->logger), name, (long long)b->epoch);
    FILE *f = fopen(path, "w");
    if (!f) return !error("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "true\\predicted");
    for (int64_t j = 0; j < C; j++) fprintf(f, ",%lld", (long long)j);
    for (int64_t i = 0; i < C * C; i++) {
        if (i % C == 0) fprintf(f, "\n%lld", (long long)(i / C));
        fprintf(f, ",%.0f", r->cm[k].sum[i]);
    }
    fputc('\n', f);
    return fclose(f) == 0 || !error("cannot write %s", path);
}

/* ---- steps and model state ---- */

static const char *step_name(RtStage s) {
    static const char *const names[] = {"training_step", "validation_step", "test_step", "predict_step"};
    return names[s];
}

static Compiled *compiled(Run *r, RtStage st, int64_t batch) {
    for (int i = 0; i < r->ncomp; i++)
        if (r->comp[i].stage == st && r->comp[i].batch == batch) return &r->comp[i];
    if (r->ncomp == 32) return NULL;
    SemaOptions o = r->opt;
    o.batch = batch;
    o.backward = st == RT_TRAIN;
    StepGraph *s = sema_lower(r->program, r->path, step_name(st), &o, true);
    if (!s) return NULL;
    sema_simplify(s);
    LlvmStep *jit = NULL;
    CudaStep *gpu = NULL;
    if (!r->interp) {
        char err[1024];
        if (r->cuda) gpu = cuda_step_api->compile(s->g, false, err, sizeof err);
        else jit = llvm_step_compile(s->g, &(LlvmStepOptions){.pool = r->pool, .profile = r->prof.on}, err, sizeof err);
        if (!jit && !gpu) {
            error("%s: compiling %s: %s", r->path, step_name(st), err);
            sema_step_free(s);
            return NULL;
        }
    }
    r->comp[r->ncomp] = (Compiled){st, batch, s, jit, gpu};
    return &r->comp[r->ncomp++];
}

static const IrSlot *slot_named(Run *r, const char *name, int *kind) {
    for (int k = 0; k < NKINDS; k++)
        for (int i = 0; i < r->layout[k].n; i++)
            if (!strcmp(r->layout[k].slot[i].name, name)) { *kind = k; return &r->layout[k].slot[i]; }
    return NULL;
}

/* Flat buffers laid out by a step graph; parameters drawn from their initialisers with Philox
 * (one stream per tensor, keyed by the trainer's seed), optimizer state zero. */
static void init_state(Run *r, const StepGraph *s) {
    for (int k = 0; k < NKINDS; k++) {
        r->layout[k] = ir_layout(s->g, kinds[k]);
        r->buf[k] = calloc(1, (size_t)r->layout[k].bytes + 64);
    }
    for (int i = 0; i < s->nparams; i++) {
        const ParamInit *p = &s->params[i];
        int kind;
        const IrSlot *sl = slot_named(r, p->name, &kind);
        if (!sl || (sl->dtype != IR_F32 && sl->dtype != IR_F64)) continue;
        int64_t n = ir_numel(sl->shape);
        /* 64-true: drawn as f32 (the same initial weights as 32-true), widened below */
        float *d = sl->dtype == IR_F32 ? (float *)(r->buf[kind] + sl->offset) : xmalloc(sizeof *d * (size_t)(n ? n : 1));
        if (p->dist == INIT_UNIFORM) philox_fill_uniform(d, n, (uint64_t)r->cfg.seed, (uint64_t)i, p->a, p->b);
        else if (p->dist == INIT_NORMAL) philox_fill_normal(d, n, (uint64_t)r->cfg.seed, (uint64_t)i, p->a, p->b);
        else for (int64_t j = 0; j < n; j++) d[j] = (float)p->a;
        if (sl->dtype == IR_F64) {
            for (int64_t j = 0; j < n; j++) ((double *)(r->buf[kind] + sl->offset))[j] = d[j];
            free(d);
        }
    }
}

/* predict: one line per sample of what predict_step returned (values of a sample joined by
 * commas) in predictions.csv of the run folder, or of the current directory. */
static bool write_predictions(Run *r, const IrNode *out, int64_t batch, const void *v, bool doubles) {
    if (r->rank) return true;
    if (!r->pred) {
        if (r->logger) snprintf(r->pred_path, sizeof r->pred_path, "%s/predictions.csv", rt_logger_dir(r->logger));
        else snprintf(r->pred_path, sizeof r->pred_path, "predictions.csv");
        if (!(r->pred = fopen(r->pred_path, "w"))) return error("cannot write %s: %s", r->pred_path, strerror(errno)), false;
    }
    int64_t n = ir_numel(out->shape), per = out->shape.rank && batch ? n / batch : n;
    for (int64_t i = 0; i < n; i++) {
        double x = doubles ? ((const double *)v)[i] : ir_load(out->dtype, v, i);
        if (ir_dtype_is_float(out->dtype)) fprintf(r->pred, "%.9g", x);
        else fprintf(r->pred, "%lld", (long long)x);
        fputc((i + 1) % per ? ',' : '\n', r->pred);
    }
    return !ferror(r->pred) || (error("cannot write %s", r->pred_path), false);
}

/* Checks that a batch fits a step's data input: the sizes after the transforms. */
static bool batch_fits(Run *r, const Compiled *c, const IrNode *n, const RtBatch *b, bool isx) {
    int64_t have = b->size;
    for (int k = 1; isx && k < b->ndim; k++) have *= b->shape[k];
    if (ir_numel(n->shape) == have) return true;
    char t[128];
    ir_shape_str(n->dtype, n->shape, t, sizeof t);
    error("%s: %s takes %s = %s but a batch of the data holds %lld values", r->path, step_name(c->stage), n->name, t,
          (long long)have);
    return false;
}

/* The state lives in buf[] on the host, and with the CUDA executor also on the device of the
 * step that ran last (r->dev), which is then the newer copy: it comes back before the host
 * reads buf[] (checkpoints, hooks), and buf[] goes up when another step runs. */
static bool host_state(Run *r) {
    const Compiled *d = r->dev;
    r->dev = NULL;
    bool updates = false;
    for (int o = 0; d && o < d->s->g->nout; o++) updates |= d->s->g->out[o].kind == IR_OUT_UPDATE;
    return !updates || cuda_step_api->download(d->gpu) ||
           (error("%s: copying the state from the GPU: %s", r->path, cuda_step_api->error(d->gpu)), false);
}

/* A compiled step's calls, on the CPU (LLVM) or the GPU (CUDA executor). */
static void step_input(const Compiled *c, int i, const void *v) {
    if (c->gpu) cuda_step_api->set_input(c->gpu, i, v);
    else llvm_step_set_input(c->jit, i, v);
}
static const void *step_output(const Compiled *c, int o) {
    return c->gpu ? cuda_step_api->output(c->gpu, o) : llvm_step_output(c->jit, o);
}
static double step_scalar_of(const Compiled *c, int id) {
    const IrGraph *g = c->s->g;
    for (int o = 0; c->gpu && o < g->nout; o++)
        if (g->out[o].value == id && step_output(c, o)) return ir_load(g->node[id].dtype, step_output(c, o), 0);
    return c->gpu ? NAN : llvm_step_scalar_of(c->jit, id);
}

/* Runs a compiled step: the flat buffers are bound, the batch and the scalars are pointed
 * at, UPDATE outputs land in the buffers (on the GPU: in its copy of them). */
static bool exec_jit(Run *r, const Compiled *c, const RtBatch *b, int64_t gstep, double *metrics) {
    const StepGraph *s = c->s;
    const IrGraph *g = s->g;
    if (c->gpu && r->dev != c) { /* the state goes up to this step's device memory */
        if (!host_state(r)) return false;
        for (int k = 0; k < NKINDS; k++) cuda_step_api->bind(c->gpu, kinds[k], r->buf[k]);
        r->dev = c;
    }
    for (int k = 0; !c->gpu && k < NKINDS; k++) llvm_step_bind(c->jit, kinds[k], r->buf[k]);
    r->step_i64 = gstep;
    for (int k = 0; k < s->ngroups && k < 8; k++) {
        r->lrf[k] = (float)r->lr[k];
        step_input(c, s->groups[k].lr, &r->lrf[k]);
    }
    for (int i = 0; i < g->n; i++) {
        const IrNode *n = &g->node[i];
        if (n->op != IR_INPUT || n->kind != IR_IN_DATA) continue;
        bool isx = i == s->data[0], isy = s->ndata > 1 && i == s->data[1];
        if (!isx && !isy) {
            if (!strcmp(n->name, "step")) step_input(c, i, &r->step_i64);
            if (!strcmp(n->name, "apply")) { r->apply8 = r->loop->apply; step_input(c, i, &r->apply8); }
            continue;
        }
        if (r->dp.next_token) {
            const int64_t *v = next_token(r, c->stage, n, b, isy);
            if (!v) return false;
            step_input(c, i, v);
            continue;
        }
        if (!batch_fits(r, c, n, b, isx)) return false;
        if (isy) {
            if (!b->y || n->dtype != IR_I64) return error("%s: %s needs labels that the data does not have", r->path, step_name(c->stage)), false;
            step_input(c, i, b->y);
        } else if (b->dtype == RT_DATA_F32 && n->dtype == IR_F32) {
            step_input(c, i, b->x);
        } else if (b->dtype == RT_DATA_U8 && n->dtype == IR_F32) {
            size_t count = (size_t)ir_numel(n->shape);
            if (count > r->xcap) { free(r->xbuf); r->xbuf = xmalloc(sizeof *r->xbuf * count); r->xcap = count; }
            for (size_t k = 0; k < count; k++) r->xbuf[k] = ((const unsigned char *)b->x)[k];
            step_input(c, i, r->xbuf);
        } else {
            return error("%s: %s takes %s as %s", r->path, step_name(c->stage), n->name, ir_dtype_name(n->dtype)), false;
        }
    }
    const char *err = c->gpu ? cuda_step_api->run(c->gpu) : llvm_step_run(c->jit);
    if (err) return error("%s: %s failed at step %lld: %s", r->path, step_name(c->stage), (long long)gstep, err), false;
    for (int k = 0; k < s->nlogs; k++) metrics[k] = step_scalar_of(c, s->logs[k].id);
    for (int o = 0; o < g->nout; o++)
        if (g->out[o].name && !strncmp(g->out[o].name, "cm:", 3) && !confusion(r, g, o, step_output(c, o), false, b))
            return false;
    for (int o = 0; c->stage == RT_PREDICT && s->output >= 0 && o < g->nout; o++)
        if (g->out[o].name && !strcmp(g->out[o].name, "output") &&
            !write_predictions(r, &g->node[g->out[o].value], b->size, step_output(c, o), false))
            return false;
    if (c->stage == RT_TRAIN && r->cfg.detect_anomaly) {
        double loss = step_scalar_of(c, s->loss);
        if (!isfinite(loss)) return error("%s: the loss is %g at step %lld (detect_anomaly)", r->path, loss, (long long)gstep), false;
    }
    return true;
}

/* Feeds input i of an interpreted graph from the model state, by name; false if the state
 * has no such tensor. */
static bool set_state(Run *r, IrInterp *ip, int i, const char *name) {
    int kind;
    const IrSlot *sl = slot_named(r, name, &kind);
    if (sl) interp_set(ip, i, r->buf[kind] + sl->offset);
    return sl != NULL;
}

/* Runs one compiled step on the reference interpreter; the state is read from and written
 * back to the flat buffers. */
static bool exec(Run *r, const Compiled *c, const RtBatch *b, int64_t gstep, double *metrics) {
    if (c->jit || c->gpu) return exec_jit(r, c, b, gstep, metrics);
    const StepGraph *s = c->s;
    IrGraph *g = s->g;
    IrInterp *ip = interp_new(g, false);
    bool ok = true;
    for (int i = 0; i < g->n && ok; i++) {
        const IrNode *n = &g->node[i];
        if (n->op != IR_INPUT) continue;
        if (n->kind == IR_IN_DATA) {
            double v;
            if (i == s->data[0] || (s->ndata > 1 && i == s->data[1])) {
                bool isx = i == s->data[0];
                int64_t numel = ir_numel(n->shape);
                const int64_t *tok = r->dp.next_token ? next_token(r, c->stage, n, b, !isx) : NULL;
                if (r->dp.next_token && !tok) { ok = false; break; }
                if (tok) { interp_set(ip, i, tok); continue; }
                if (!batch_fits(r, c, n, b, isx)) { ok = false; break; }
                if (isx && b->dtype == RT_DATA_F32 && n->dtype == IR_F32) interp_set(ip, i, b->x);
                else if (isx) {
                    double *tmp = malloc(sizeof *tmp * (size_t)numel);
                    for (int64_t k = 0; k < numel; k++)
                        tmp[k] = b->dtype == RT_DATA_U8 ? ((const unsigned char *)b->x)[k] : ((const float *)b->x)[k];
                    interp_set_f64(ip, i, tmp);
                    free(tmp);
                } else if (n->dtype == IR_I64 && b->y) interp_set(ip, i, b->y);
                else { error("%s: %s needs labels that the data does not have", r->path, step_name(c->stage)); ok = false; }
                continue;
            }
            v = !strcmp(n->name, "step") ? (double)gstep : !strcmp(n->name, "apply") ? (double)r->loop->apply : 0;
            for (int k = 0; k < s->ngroups && k < 8; k++)
                if (i == s->groups[k].lr) v = (float)r->lr[k]; /* as the compiled step reads it */
            interp_set_f64(ip, i, &v);
            continue;
        }
        if (!set_state(r, ip, i, n->name)) { error("%s: %s has no value in the model state", r->path, n->name); ok = false; }
    }
    const char *err = ok ? interp_run(ip) : NULL;
    if (err) { error("%s: %s failed at step %lld: %s", r->path, step_name(c->stage), (long long)gstep, err); ok = false; }
    for (int k = 0; ok && k < s->nlogs; k++) metrics[k] = interp_scalar(ip, s->logs[k].id);
    for (int o = 0; ok && o < g->nout; o++)
        if (g->out[o].name && !strncmp(g->out[o].name, "cm:", 3))
            ok = confusion(r, g, o, interp_data(ip, g->out[o].value), true, b);
    if (ok && c->stage == RT_PREDICT && s->output >= 0)
        ok = write_predictions(r, &g->node[s->output], b->size, interp_data(ip, s->output), true);
    if (ok && c->stage == RT_TRAIN) {
        double loss = interp_scalar(ip, s->loss);
        if (!isfinite(loss) && r->cfg.detect_anomaly) {
            error("%s: the loss is %g at step %lld (detect_anomaly)", r->path, loss, (long long)gstep);
            ok = false;
        }
        for (int o = 0; ok && o < g->nout; o++) {
            if (g->out[o].kind != IR_OUT_UPDATE) continue;
            int kind;
            const IrSlot *sl = slot_named(r, g->node[g->out[o].target].name, &kind);
            if (sl) interp_get(ip, g->out[o].value, r->buf[kind] + sl->offset);
        }
    }
    interp_free(ip);
    return ok;
}

/* ---- hooks ---- */

/* Runs a hook of the model (a method without inputs, e.g. on_train_epoch_end) on the host
 * with the current weights, and writes what it asked for (save_image_grid). A model without
 * the hook does nothing. */
static bool run_hook(Run *r, const char *name, int64_t epoch, int64_t gstep) {
    if (r->rank) return true; /* hooks write files and print: rank 0's job */
    int h = 0;
    while (h < r->nhooks && strcmp(r->hooks[h].name, name)) h++;
    if (h == r->nhooks) {
        if (h == 8) return true;
        SemaOptions o = r->opt;
        o.batch = 1;
        int before = diag_error_count();
        r->hooks[h].name = name;
        r->hooks[h].s = sema_lower(r->program, r->path, name, &o, false);
        if (diag_error_count() > before) return false;
        r->hooks[h].absent = !r->hooks[h].s;
        if (r->hooks[h].s) sema_simplify(r->hooks[h].s);
        r->nhooks++;
    }
    if (r->hooks[h].absent) return true;
    if (!host_state(r)) return false; /* the hook reads the weights on the host */
    double t0 = seconds();
    const StepGraph *s = r->hooks[h].s;
    IrGraph *g = s->g;
    IrInterp *ip = interp_new(g, false);
    bool ok = true;
    for (int i = 0; i < g->n && ok; i++) {
        const IrNode *n = &g->node[i];
        if (n->op != IR_INPUT) continue;
        double step = (double)gstep;
        if (set_state(r, ip, i, n->name)) continue;
        if (!strcmp(n->name, "step")) interp_set_f64(ip, i, &step);
        else ok = !error("%s: %s reads '%s', which a hook cannot have", r->path, name, n->name);
    }
    const char *err = ok ? interp_run(ip) : NULL;
    if (err) ok = !error("%s: %s failed: %s", r->path, name, err);
    for (int o = 0; ok && o < g->nout; o++) {
        const char *tag = g->out[o].name;
        if (tag && !strncmp(tag, "generate:", 9)) { ok = generate(r, tag + 9, epoch); continue; }
        if (!tag || strncmp(tag, "image:", 6)) continue;
        char *end;
        long nrow = strtol(tag + 6, &end, 10);
        const char *tmpl = end + 1;
        /* {epoch} and {step} in the name; a relative name lands in the run folder */
        char file[2048], path[4096];
        size_t k = 0;
        for (const char *p = tmpl; *p && k + 32 < sizeof file;) {
            if (!strncmp(p, "{epoch}", 7)) { k += (size_t)snprintf(file + k, sizeof file - k, "%lld", (long long)epoch); p += 7; }
            else if (!strncmp(p, "{step}", 6)) { k += (size_t)snprintf(file + k, sizeof file - k, "%lld", (long long)gstep); p += 6; }
            else file[k++] = *p++;
        }
        file[k] = 0;
        if (file[0] != '/' && r->logger) snprintf(path, sizeof path, "%s/%s", rt_logger_dir(r->logger), file);
        else snprintf(path, sizeof path, "%s", file);
        for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) { /* mkdir -p */
            *p = 0;
            mkdir(path, 0777);
            *p = '/';
        }
        const IrNode *img = &g->node[g->out[o].value];
        int64_t numel = ir_numel(img->shape);
        float *px = xmalloc(sizeof *px * (size_t)numel);
        const double *v = interp_data(ip, g->out[o].value);
        for (int64_t j = 0; j < numel; j++) px[j] = (float)v[j];
        char perr[512];
        if (!rt_png_grid(path, px, img->shape.d[0], img->shape.d[1], img->shape.d[2], img->shape.d[3], nrow, perr, sizeof perr))
            ok = !error("%s", perr);
        free(px);
    }
    interp_free(ip);
    prof_add(&r->prof, P_HOOK, t0);
    return ok;
}

/* The profiler's report at the end: Lightning's SimpleProfiler table, the kernels of the
 * compiled training step by time, and with "advanced" a Chrome trace (trace.json, for
 * Perfetto or chrome://tracing) in the run folder. */
static void prof_report(Run *r) {
    Profiler *p = &r->prof;
    double total = seconds() - p->start;
    printf("\nFIT Profiler Report\n%-52s | %-16s | %-9s | %-14s | %s\n", "Action", "Mean duration (s)", "Num calls",
           "Total time (s)", "Percentage %");
    printf("%-52s | %-17s | %-9s | %-14.5f | 100 %%\n", "Total", "-", "-", total);
    for (int a = 0; a < P_NACT; a++)
        if (p->calls[a])
            printf("%-52s | %-17.5g | %-9lld | %-14.5f | %.4g %%\n", action_names[a], p->total[a] / (double)p->calls[a],
                   (long long)p->calls[a], p->total[a], 100 * p->total[a] / total);
    for (int i = 0; i < r->ncomp; i++) { /* the kernels of the training step at the loader's batch size */
        const Compiled *c = &r->comp[i];
        if (c->stage != RT_TRAIN || c->batch != r->dp.batch || !c->jit) continue;
        const FusePlan *plan = llvm_step_plan(c->jit);
        const double *t = llvm_step_profile(c->jit);
        if (!plan || !t) continue;
        double sum = 0;
        for (int k = 0; k < plan->nk; k++) sum += t[k];
        printf("\nkernels of training_step (batch %lld), by time:\n", (long long)c->batch);
        int shown[16], nshown = 0;
        for (; nshown < 16 && nshown < plan->nk; nshown++) { /* the 16 slowest */
            int best = -1;
            for (int k = 0; k < plan->nk; k++) {
                bool done = false;
                for (int j = 0; j < nshown; j++) done |= shown[j] == k;
                if (!done && (best < 0 || t[k] > t[best])) best = k;
            }
            shown[nshown] = best;
            const FuseKernel *k = &plan->k[best];
            const char *op = k->op >= 0 ? ir_op_name(c->s->g->node[k->op].op) : "";
            printf("  %3d  %-10s %-20s %4d nodes  %10.5f s  %5.1f %%\n", best, fuse_kind_name(k->kind), op, k->nnode, t[best],
                   sum > 0 ? 100 * t[best] / sum : 0);
        }
    }
    if (p->trace && r->logger) {
        char path[1200];
        snprintf(path, sizeof path, "%s/trace.json", rt_logger_dir(r->logger));
        FILE *f = fopen(path, "w");
        if (!f) { error("cannot write %s", path); return; }
        fputs("{\"traceEvents\": [\n", f);
        for (int i = 0; i < p->nev; i++)
            fprintf(f, "%s{\"name\": \"%s\", \"ph\": \"X\", \"ts\": %.3f, \"dur\": %.3f, \"pid\": 1, \"tid\": 1}", i ? ",\n" : "",
                    action_names[p->ev[i].action], p->ev[i].ts * 1e6, p->ev[i].dur * 1e6);
        fputs("\n], \"displayTimeUnit\": \"ms\"}\n", f);
        fclose(f);
        printf("\ntrace: %s\n", path);
    }
}

/* ---- the loop's callbacks ---- */

static int64_t cb_batches(void *ctx, RtStage s) {
    Run *r = ctx;
    return r->ld[s] ? rt_loader_num_batches(r->ld[s]) : 0;
}

static bool cb_load(void *ctx, RtStage s, int64_t epoch, int64_t i) {
    Run *r = ctx;
    double t0 = seconds();
    char *err = NULL;
    if (r->next_epoch[s] != epoch || r->next_batch[s] != i) { /* not the next batch: restart there */
        if (rt_loader_start(r->ld[s], epoch, i, &err) < 0) {
            error("%s", err ? err : "the loader failed");
            free(err);
            return false;
        }
    }
    r->batch = rt_loader_next(r->ld[s]);
    r->next_epoch[s] = epoch;
    r->next_batch[s] = i + 1;
    prof_add(&r->prof, P_LOAD, t0);
    return r->batch != NULL || (error("%s: the loader ended early", r->path), false);
}

static bool cb_step(void *ctx, RtStage s, int64_t gstep, double *metrics) {
    Run *r = ctx;
    Compiled *c = compiled(r, s, r->batch->size);
    if (!c) return false;
    r->loop->batch_size = r->batch->size;
    for (int k = 0; s == RT_TRAIN && k < r->ngroups; k++) { /* the schedulers have stepped t times */
        const RtScheduler *sc = &r->sched[k];
        int64_t t = (sc->per_step ? gstep : r->batch->epoch) / (sc->frequency > 0 ? sc->frequency : 1);
        r->lr[k] = rt_sched_lr(sc, c->s->groups[k].lr0, t);
    }
    if (s == RT_TRAIN && r->world > 1 && r->layout[KIND_BUFFER].bytes) /* as DDP's broadcast_buffers */
        rt_dist_broadcast(r->buf[KIND_BUFFER], (size_t)r->layout[KIND_BUFFER].bytes, 0);
    /* dropout's random numbers are keyed by the batch, which is the optimizer step unless
     * gradients accumulate */
    double t0 = seconds();
    if (!exec(r, c, r->batch, s == RT_TRAIN ? r->loop->train_batches_run : gstep, metrics)) return false;
    prof_add(&r->prof, P_TRAIN + s, t0);
    for (int k = 0; s == RT_TRAIN && r->lr_monitor && k < r->ngroups; k++) metrics[c->s->nlogs + k] = r->lr[k];
    return true;
}

/* The end of a training epoch: the model's on_train_epoch_end hook, then reduce_on_plateau
 * steps on its monitored metric (val_loss). */
static bool cb_epoch_end(void *ctx, int64_t epoch) {
    Run *r = ctx;
    if (!run_hook(r, "on_train_epoch_end", epoch, r->loop->global_step)) return false;
    for (int k = 0; k < r->ngroups; k++) {
        RtScheduler *sc = &r->sched[k];
        if (!sc->kind || strcmp(sc->kind, "reduce_on_plateau")) continue;
        const char *monitor = "val_loss";
        for (int i = 0; i < sc->n; i++)
            if (!strcmp(sc->keys[i], "monitor") && sc->vals[i].kind == RT_STR) monitor = sc->vals[i].s;
        double v;
        if (!rt_metric(r->loop, monitor, &v)) {
            error("reduce_on_plateau monitors `%s`, which is not logged", monitor);
            return false;
        }
        r->lr[k] = rt_sched_plateau(sc, r->comp[0].s->groups[k].lr0, v);
        if (r->world > 1) rt_dist_broadcast(&r->lr[k], sizeof r->lr[k], 0); /* a per-rank metric: rank 0's rate */
    }
    return true;
}

static void cb_log(void *ctx, int64_t step, int64_t epoch, int n, const char *const *names, const double *v) {
    Run *r = ctx;
    double t0 = seconds();
    if (r->logger) rt_logger_log(r->logger, step, epoch, n, names, v);
    prof_add(&r->prof, P_LOG, t0);
}

static void cb_progress(void *ctx, RtStage s, int64_t epoch, int64_t i, int64_t n, int nm, const char *const *names,
                        const double *v) {
    Run *r = ctx;
    if (!r->bar) return;
    for (int k = 0; k < nm; k++) rt_progress_metric(r->bar, names[k], v[k]);
    if (s == RT_TRAIN) {
        /* an epoch's line ends when the next begins (or at the end), after its validation,
         * so that it shows the validation metrics, as Lightning's does */
        if (i == 1 && r->bar_open) rt_progress_train_end(r->bar);
        if (i == 1) rt_progress_train_start(r->bar, epoch, r->max_epochs, n);
        rt_progress_train_update(r->bar, i);
        r->bar_open = true;
    } else {
        if (i == 1) rt_progress_val_start(r->bar, n, false);
        rt_progress_val_update(r->bar, i);
        if (i == n) rt_progress_val_end(r->bar);
    }
}

/* ddp: metrics combined over the ranks, stop decisions taken by rank 0 */
static void cb_reduce(void *ctx, double *v, int n, RtReduce op) {
    (void)ctx;
    rt_dist_allreduce(v, n, RT_DIST_F64, op == RT_MEAN ? RT_DIST_MEAN : op == RT_MAX ? RT_DIST_MAX
                                         : op == RT_MIN ? RT_DIST_MIN : RT_DIST_SUM);
}
static bool cb_agree(void *ctx, bool flag) {
    (void)ctx;
    return rt_dist_agree(flag);
}

static RtCkptDtype ckpt_dtype(IrDtype t) {
    static const RtCkptDtype map[] = {RT_CKPT_F64, RT_CKPT_F32, RT_CKPT_BF16, RT_CKPT_F16,
                                      RT_CKPT_I64, RT_CKPT_I32, RT_CKPT_U8, RT_CKPT_BOOL};
    return map[t];
}

/* The model state as tensors of a checkpoint (params, buffers, optimizer state). */
static int state_tensors(Run *r, RtCkptTensor *t, int max) {
    int n = 0;
    for (int k = 0; k < NKINDS; k++)
        for (int i = 0; i < r->layout[k].n && n < max; i++) {
            const IrSlot *sl = &r->layout[k].slot[i];
            t[n++] = (RtCkptTensor){sl->name, ckpt_dtype(sl->dtype), sl->shape.rank, sl->shape.d, r->buf[k] + sl->offset};
        }
    return n;
}

/* Lightning's default checkpointing keeps one file, epoch=E-step=S.ckpt; the metadata say
 * where training goes on from, so that a resumed run repeats exactly what an uninterrupted
 * one would have done (the RNG is counter-based: the step is its state). */
/* A filename template: "{epoch}-{val_loss:.2f}" gives "epoch=3-val_loss=0.35", as Lightning's
 * auto_insert_metric_name does; {epoch} and {step} are the position. */
static void ckpt_name(Run *r, const char *tmpl, int64_t epoch, int64_t gstep, char *out, size_t size) {
    size_t n = 0;
    out[0] = 0;
    for (const char *p = tmpl; *p && n + 1 < size;) {
        if (*p != '{') { out[n++] = *p++; out[n] = 0; continue; }
        const char *close = strchr(p, '}');
        if (!close) { snprintf(out + n, size - n, "%s", p); break; }
        char key[96], fmt[16] = "%g";
        size_t len = (size_t)(close - p - 1) < sizeof key - 1 ? (size_t)(close - p - 1) : sizeof key - 1;
        memcpy(key, p + 1, len);
        key[len] = 0;
        char *colon = strchr(key, ':');
        if (colon) { *colon = 0; snprintf(fmt, sizeof fmt, "%%%s", colon + 1); }
        double v = NAN;
        if (!strcmp(key, "epoch")) v = (double)epoch;
        else if (!strcmp(key, "step")) v = (double)gstep;
        else rt_metric(r->loop, key, &v);
        char num[64];
        if (!colon && (!strcmp(key, "epoch") || !strcmp(key, "step"))) snprintf(num, sizeof num, "%lld", (long long)v);
        else snprintf(num, sizeof num, fmt, v);
        n += (size_t)snprintf(out + n, size - n, "%s=%s", key, num);
        if (n >= size) n = size - 1;
        p = close + 1;
    }
}

/* Checkpoints as Lightning's ModelCheckpoint keeps them: without `monitor` the latest one
 * (epoch=E-step=S.ckpt), with it the save_top_k best by the monitored metric; save_last adds
 * last.ckpt. The metadata say where training goes on from, so that a resumed run repeats
 * exactly what an uninterrupted one would have done (the RNG is counter-based: the step is
 * its state). */
static bool save(Run *r, int64_t epoch, int64_t batch, int64_t gstep);
static bool cb_save(void *ctx, int64_t epoch, int64_t batch, int64_t gstep) {
    Run *r = ctx;
    double t0 = seconds();
    bool ok = save(r, epoch, batch, gstep);
    prof_add(&r->prof, P_SAVE, t0);
    return ok;
}

static bool save(Run *r, int64_t epoch, int64_t batch, int64_t gstep) {
    if (!r->ckpt_dir[0] || r->top_k == 0) return true;
    if (r->loop->saving_epoch_end && r->every_n_epochs > 1 && (epoch + 1) % r->every_n_epochs) return true;
    double score = NAN;
    bool scored = !r->monitor || rt_metric(r->loop, r->monitor, &score);
    if (!scored && !r->warned_monitor) { /* e.g. a stop before the first validation */
        fprintf(stderr, "ltlc: warning: checkpoint monitors `%s`, which is not logged yet: no top-k checkpoint saved\n", r->monitor);
        r->warned_monitor = true;
    }
    /* with top-k full, a score no better than the worst kept is not saved */
    int worst = -1;
    for (int i = 0; r->monitor && i < r->nkept; i++)
        if (worst < 0 || (r->monitor_max ? r->kept[i].score < r->kept[worst].score : r->kept[i].score > r->kept[worst].score))
            worst = i;
    bool full = r->top_k >= 0 && r->nkept >= r->top_k;
    bool better = worst < 0 || isnan(r->kept[worst].score) ||
                  (r->monitor_max ? score > r->kept[worst].score : score < r->kept[worst].score);
    bool save = scored && (!r->monitor || !full || better);
    if (!host_state(r)) return false;
    RtCkptTensor t[4096];
    int n = state_tensors(r, t, 4096);
    char name[512], path[1600], e[32], b[32], st[32], seed[32], err[RT_CKPT_ERR_LEN];
    ckpt_name(r, r->filename ? r->filename : "{epoch}-{step}", epoch, gstep, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s.ckpt", r->ckpt_dir, name);
    snprintf(e, sizeof e, "%lld", (long long)epoch);
    snprintf(b, sizeof b, "%lld", (long long)batch);
    snprintf(st, sizeof st, "%lld", (long long)gstep);
    snprintf(seed, sizeof seed, "%lld", (long long)r->cfg.seed);
    /* the top-k list changes first, so that the file lists itself among the kept ones */
    char evicted[1600] = "";
    if (save && !r->monitor) { /* the latest replaces the previous one (top_k -1: all are kept) */
        if (r->nkept && r->top_k >= 0 && strcmp(r->kept[0].path, path)) snprintf(evicted, sizeof evicted, "%s", r->kept[0].path);
        r->nkept = 1;
        snprintf(r->kept[0].path, sizeof r->kept[0].path, "%s", path);
    } else if (save) {
        int slot = full ? worst : r->nkept < 64 ? r->nkept++ : worst;
        if (full && strcmp(r->kept[slot].path, path)) snprintf(evicted, sizeof evicted, "%s", r->kept[slot].path);
        r->kept[slot].score = score;
        snprintf(r->kept[slot].path, sizeof r->kept[slot].path, "%s", path);
    }
    char runs[32];
    snprintf(runs, sizeof runs, "%lld", (long long)r->loop->train_batches_run);
    RtCkptMeta meta[12 + 3 * 8 + 2 * 64] = {{"format", "ltl-checkpoint-1"}, {"ltl_version", LTL_VERSION}, {"model", r->comp[0].s->model},
                                  {"epoch", e}, {"batch", b}, {"global_step", st}, {"seed", seed}, {"batches_run", runs}};
    size_t nmeta = 8;
    char es[2][32], topk[64][2][1700];
    snprintf(es[0], sizeof es[0], "%.17g", r->loop->es_best);
    snprintf(es[1], sizeof es[1], "%lld", (long long)r->loop->es_wait);
    if (r->hparams_yaml) meta[nmeta++] = (RtCkptMeta){"hparams", r->hparams_yaml};
    meta[nmeta++] = (RtCkptMeta){"early_stopping.best", es[0]};
    meta[nmeta++] = (RtCkptMeta){"early_stopping.wait", es[1]};
    for (int k = 0; r->monitor && k < r->nkept; k++) { /* the top-k kept so far, to go on keeping them */
        snprintf(topk[k][0], sizeof topk[k][0], "checkpoint.top.%d", k);
        snprintf(topk[k][1], sizeof topk[k][1], "%.17g %s", r->kept[k].score, r->kept[k].path);
        meta[nmeta++] = (RtCkptMeta){topk[k][0], topk[k][1]};
    }
    char plateau[8][3][2][64]; /* reduce_on_plateau's state: key and value */
    for (int k = 0; k < r->ngroups; k++) {
        const RtScheduler *sc = &r->sched[k];
        if (!sc->kind || strcmp(sc->kind, "reduce_on_plateau")) continue;
        const char *what[3] = {"lr", "best", "wait"};
        double vals[3] = {sc->plateau_lr, sc->plateau_best, (double)sc->plateau_wait};
        for (int j = 0; j < 3; j++) {
            snprintf(plateau[k][j][0], 64, "plateau.%d.%s", k, what[j]);
            snprintf(plateau[k][j][1], 64, "%.17g", vals[j]);
            meta[nmeta++] = (RtCkptMeta){plateau[k][j][0], plateau[k][j][1]};
        }
    }
    if (save) {
        if (!rt_ckpt_save(path, t, (size_t)n, meta, nmeta, err)) return error("%s", err), false;
        if (evicted[0]) remove(evicted);
    }
    if (r->save_last) {
        char last[1100];
        snprintf(last, sizeof last, "%s/last.ckpt", r->ckpt_dir);
        if (!rt_ckpt_save(last, t, (size_t)n, meta, nmeta, err)) return error("%s", err), false;
    }
    return true;
}

/* --ckpt_path=last|best: in the checkpoint folder of the latest run (or the callback's
 * dirpath), last.ckpt or the newest checkpoint; best: the best of the top-k the newest
 * checkpoint lists (checkpoint(monitor = ...)). */
/* The newest checkpoint in dir (last.ckpt first when `last`), into out; false if none. */
static bool newest_ckpt(const char *dir, bool last, char *out, size_t size) {
    DIR *d = opendir(dir);
    if (!d) return false;
    double newest = -1;
    out[0] = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".ckpt")) continue;
        char p[1600];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &sb) != 0) continue;
        double t = (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec * 1e-9;
        if (last && !strcmp(e->d_name, "last.ckpt")) t = 1e18; /* last.ckpt wins */
        if (t > newest) { newest = t; snprintf(out, size, "%s", p); }
    }
    closedir(d);
    return out[0] != 0;
}

static bool find_ckpt(Run *r, const RtLoggerConfig *lc, const char *which, char *out, size_t size) {
    char dirbuf[1200];
    const char *dir = r->ckpt_dir, *root = lc->root ? lc->root : ".";
    bool last = !strcmp(which, "last");
    if (dir[0]) newest_ckpt(dir, last, out, size);
    else /* the latest run that saved any */
        for (int v = rt_next_version(root, lc->name) - 1; v >= 0; v--) {
            snprintf(dirbuf, sizeof dirbuf, "%s/%s/version_%d/checkpoints", root, lc->name, v);
            dir = dirbuf;
            if (newest_ckpt(dir, last, out, size)) break;
        }
    if (!dir[0]) return error("--ckpt_path=%s: there is no earlier run under %s/%s", which, root, lc->name), false;
    if (!out[0]) return error("--ckpt_path=%s: no checkpoint in %s", which, r->ckpt_dir[0] ? r->ckpt_dir : root), false;
    if (!strcmp(which, "best")) {
        char err[RT_CKPT_ERR_LEN];
        RtCkpt *ck = rt_ckpt_open(out, err);
        if (!ck) return error("%s", err), false;
        double best = NAN;
        for (int k = 0;; k++) {
            char key[32];
            snprintf(key, sizeof key, "checkpoint.top.%d", k);
            const char *v = rt_ckpt_meta_get(ck, key);
            if (!v) break;
            char *sp;
            double score = strtod(v, &sp);
            if (isnan(best) || (r->monitor_max ? score > best : score < best)) {
                best = score;
                snprintf(out, size, "%s", sp + (*sp == ' '));
            }
        }
        rt_ckpt_close(ck);
        if (isnan(best)) return error("--ckpt_path=best needs a checkpoint(monitor = ...) callback's top-k; none in %s", dir), false;
    }
    return true;
}

/* Loads --ckpt_path into the state: every tensor must match by name, dtype and shape. */
static bool load_ckpt(Run *r, const char *path, bool training, RtLoop *L) {
    char err[RT_CKPT_ERR_LEN];
    RtCkpt *ck = rt_ckpt_open(path, err);
    if (!ck) return error("%s", err), false;
    const char *e = rt_ckpt_meta_get(ck, "epoch"), *b = rt_ckpt_meta_get(ck, "batch"), *gs = rt_ckpt_meta_get(ck, "global_step");
    if (training && e && b && gs) { /* go on from where it stopped */
        L->start_epoch = atoll(e);
        L->start_batch = atoll(b);
        L->global_step = atoll(gs);
        const char *esb = rt_ckpt_meta_get(ck, "early_stopping.best"), *esw = rt_ckpt_meta_get(ck, "early_stopping.wait");
        if (esb && esw) {
            L->es_best = strtod(esb, NULL);
            L->es_wait = atoll(esw);
            L->es_restored = L->es_best == L->es_best; /* not NaN: early stopping had a record */
        }
        for (int k = 0; k < 64; k++) {
            char key[32];
            snprintf(key, sizeof key, "checkpoint.top.%d", k);
            const char *v = rt_ckpt_meta_get(ck, key);
            if (!v) break;
            char *sp;
            r->kept[k].score = strtod(v, &sp);
            snprintf(r->kept[k].path, sizeof r->kept[k].path, "%s", sp + (*sp == ' '));
            r->nkept = k + 1;
        }
        const char *runs = rt_ckpt_meta_get(ck, "batches_run");
        L->train_batches_run = runs ? atoll(runs) : L->global_step;
        for (int k = 0; k < r->ngroups; k++) {
            char key[48];
            const char *v;
            snprintf(key, sizeof key, "plateau.%d.lr", k);
            if ((v = rt_ckpt_meta_get(ck, key))) r->sched[k].plateau_lr = r->lr[k] = strtod(v, NULL);
            snprintf(key, sizeof key, "plateau.%d.best", k);
            if ((v = rt_ckpt_meta_get(ck, key))) r->sched[k].plateau_best = strtod(v, NULL);
            snprintf(key, sizeof key, "plateau.%d.wait", k);
            if ((v = rt_ckpt_meta_get(ck, key))) r->sched[k].plateau_wait = atoll(v);
        }
    }
    RtCkptTensor t[4096];
    int n = state_tensors(r, t, 4096);
    /* evaluation needs the weights only: the optimizer state in the file is not an error */
    bool ok = rt_ckpt_load(ck, t, (size_t)n, training ? 0 : RT_CKPT_ALLOW_UNEXPECTED, err);
    if (!ok) error("%s", err);
    rt_ckpt_close(ck);
    return ok;
}

/* Lightning's ModelSummary: one row per sub-module of the root model. */
static void summary(const StepGraph *s) {
    RtSummaryRow rows[64];
    int n = 0;
    for (int k = 0; k < s->nsubs && n < 64; k++) {
        rows[n] = (RtSummaryRow){s->subs[k].name, s->subs[k].type, 0, s->subs[k].out ? s->subs[k].out : "?", true};
        size_t len = strlen(s->subs[k].name);
        for (int i = 0; i < s->nparams; i++)
            if (s->params[i].trainable && !strncmp(s->params[i].name, s->subs[k].name, len) && s->params[i].name[len] == '.')
                rows[n].params += ir_numel(s->g->node[s->params[i].id].shape);
        n++;
    }
    char *t = rt_summary_format(rows, n, 4);
    fputs(t, stdout);
    free(t);
}

/* Settings that are accepted but not acted on yet say so, rather than being ignored. */
static void warn_unapplied(const RtTrainerConfig *c) {
    const char *what[16];
    int n = 0;
    for (int i = 0; i < c->ncallbacks && n < 16; i++) {
        const RtComponent *cb = &c->callbacks[i];
        bool applied = !strcmp(cb->name, "progress_bar") || !strcmp(cb->name, "model_summary");
        if (!strcmp(cb->name, "checkpoint")) { /* applied when it only says what run.c does */
            applied = true;
            for (int k = 0; k < cb->n; k++)
                applied &= strcmp(cb->keys[k], "save_weights_only") &&
                           strcmp(cb->keys[k], "save_on_train_epoch_end") && strcmp(cb->keys[k], "auto_insert_metric_name");
        }
        if (!strcmp(cb->name, "early_stopping") || !strcmp(cb->name, "lr_monitor") || !strcmp(cb->name, "timer"))
            applied = true;
        if (!applied) what[n++] = !strcmp(cb->name, "checkpoint") ? "checkpoint(save_weights_only, ...)" : cb->name;
    }
    for (int i = 0; i < n; i++) fprintf(stderr, "ltlc: warning: %s is not applied yet\n", what[i]);
}

/* accelerator: "cpu"; "cuda" / "gpu" run every step on the CUDA executor, or exit 1 saying
 * what is missing; "auto" takes the GPU when that path applies and says so, else the CPU.
  * The CUDA path: compiled steps, any precision but 64-true; ddp with NCCL (docs/backend-cuda.md). */
static bool accelerator(Run *r) {
    const char *a = r->cfg.accelerator;
    bool want = !strcmp(a, "cuda") || !strcmp(a, "gpu");
    if (!strcmp(a, "cpu")) return true;
    if (!want && strcmp(a, "auto")) return error("unknown accelerator '%s' (cpu, cuda, gpu, auto)", a), false;
    char why[512] = "";
    int cc = 0, rank, world, local;
    bool ddp = (r->cfg.devices > 0 ? r->cfg.devices : 1) * (r->cfg.num_nodes > 0 ? r->cfg.num_nodes : 1) > 1 ||
               (rt_dist_env(&rank, &world, &local) && world > 1); /* a world of one needs no NCCL */
    if (!cuda_step_api) snprintf(why, sizeof why, "programs made by `ltlc build` train on the CPU only");
    else if (r->interp) snprintf(why, sizeof why, "--backend=interp runs on the CPU");
    else if (!strcmp(r->cfg.precision, "64-true")) /* f64 is the interpreter's (docs/backend-cuda.md) */
        snprintf(why, sizeof why, "precision 64-true runs on the reference interpreter, on the CPU");
    else if (cuda_step_api->usable(&cc, why, sizeof why) && ddp) cuda_step_api->nccl_available(why, sizeof why);
    if (why[0]) return !want || (error("accelerator = \"%s\": %s", a, why), false);
    r->cuda = true;
    r->cc = cc; /* said once the ranks are known: by rank 0 only */
    return true;
}

/* The callbacks the driver acts on: lr_monitor and the first checkpoint(...). */
static void callbacks(Run *r, RtLoop *L) {
    r->top_k = 1;
    bool ckpt_seen = false;
    for (int i = 0; i < r->cfg.ncallbacks; i++) {
        const RtComponent *c = &r->cfg.callbacks[i];
        bool lr = !strcmp(c->name, "lr_monitor"), ck = !strcmp(c->name, "checkpoint") && !ckpt_seen;
        if (lr) r->lr_monitor = 1;
        ckpt_seen |= ck;
        for (int k = 0; (lr || ck) && k < c->n; k++) {
            const char *key = c->keys[k];
            const RtValue *v = &c->vals[k];
            if (lr && !strcmp(key, "logging_interval") && v->kind == RT_STR && !strcmp(v->s, "epoch")) r->lr_monitor = 2;
            if (!ck) continue;
            if (!strcmp(key, "every_n_train_steps") && v->kind == RT_INT) L->save_every_n_steps = v->i;
            else if (!strcmp(key, "save_last") && v->kind == RT_BOOL) r->save_last = v->i;
            else if (!strcmp(key, "save_top_k") && v->kind == RT_INT) r->top_k = v->i;
            else if (!strcmp(key, "monitor") && v->kind == RT_STR) r->monitor = v->s;
            else if (!strcmp(key, "mode") && v->kind == RT_STR) r->monitor_max = !strcmp(v->s, "max");
            else if (!strcmp(key, "filename") && v->kind == RT_STR) r->filename = v->s;
            else if (!strcmp(key, "dirpath") && v->kind == RT_STR) snprintf(r->ckpt_dir, sizeof r->ckpt_dir, "%s", v->s);
            else if (!strcmp(key, "every_n_epochs") && v->kind == RT_INT) r->every_n_epochs = v->i;
        }
    }
}

/* The run folder and loggers from logger = [csv(name =, save_dir =, version =), tensorboard]. */
static RtLoggerConfig logger_config(const Run *r) {
    RtLoggerConfig lc = {.root = r->cfg.default_root_dir, .name = "lightning_logs", .version = -1};
    for (int i = 0; i < r->cfg.nloggers; i++) {
        const RtComponent *c = &r->cfg.loggers[i];
        lc.csv |= !strcmp(c->name, "csv");
        lc.tensorboard |= !strcmp(c->name, "tensorboard");
        for (int k = 0; k < c->n; k++) {
            const RtValue *v = &c->vals[k];
            if (!strcmp(c->keys[k], "name") && v->kind == RT_STR) lc.name = v->s;
            else if (!strcmp(c->keys[k], "save_dir") && v->kind == RT_STR) lc.root = v->s;
            else if (!strcmp(c->keys[k], "version") && v->kind == RT_INT) lc.version = (int)v->i;
            else if (!strcmp(c->keys[k], "flush_logs_every_n_steps") && v->kind == RT_INT) lc.flush_every_n_steps = (int)v->i;
        }
    }
    return lc;
}

/* ---- the command ---- */

bool run_compile_only;

/* `ltlc build`: every step the stages can run, at the loader's batch size and at the size of
 * its last partial batch, compiled (the object sink collects the code); nothing runs. */
static bool compile_all(Run *r) {
    for (int s = 0; s < RT_NSTAGES; s++) {
        if (!r->stage_step[s] || !r->ld[s]) continue;
        int64_t last = rt_loader_last_batch_size(r->ld[s]);
        if (!compiled(r, (RtStage)s, r->dp.batch) || (last > 0 && last != r->dp.batch && !compiled(r, (RtStage)s, last)))
            return false;
    }
    return true;
}

static const char run_help[] =
    "usage: ltlc run FILE [STAGE...] [OPTIONS]\n"
    "\n"
    "Compiles FILE and runs its stages in order: fit (default), validate, test, predict.\n"
    "\n"
    "options:\n"
    "  --trainer.FLAG=VALUE   override a trainer flag (docs/trainer.md), e.g. --trainer.max_epochs=3,\n"
    "                         --trainer.precision=bf16-mixed (docs/precision.md; 64-true: interpreter)\n"
    "  --model.NAME=VALUE     override a hyperparameter of the model, e.g. --model.hidden1=64\n"
    "  --data.NAME=VALUE      override a parameter of the data module, e.g. --data.batch=128\n"
    "  --ckpt_path=FILE|last|best  start from this checkpoint (validate/test/predict; fit goes on\n"
    "                         from it); last: of the latest run, best: its best top-k checkpoint\n"
    "  --threads=N            kernel threads (default: one per core)\n"
    "  --barebones            the bare loop: no progress bar, logging, checkpoints or summary\n"
    "  --backend=llvm|interp  JIT-compiled steps (default) or the reference interpreter\n"
    "  --trainer.accelerator=cuda  every step on the GPU (CUDA executor; \"auto\" when one is\n"
    "                         usable; docs/backend-cuda.md), or exit 1 saying what is missing\n"
    "  --trainer.devices=N    data-parallel training on N processes, started through mpirun\n"
    "                         (strategy = \"ddp\"; also under mpirun -np N or srun: docs/distributed.md);\n"
    "                         with accelerator=cuda one GPU per rank, gradients through NCCL\n"
    "\n"
    "Runs are written to default_root_dir/NAME/version_N/ (metrics.csv, hparams.yaml,\n"
    "TensorBoard events, curves.svg, checkpoints/). Exit 0 ok, 1 an error, 2 usage.\n";

int run_command(int argc, char **argv) {
    const char *file = NULL, *ckpt = NULL;
    bool interp = false;
    char threads[64];
    const char *ov[64], *tov[64];
    int nov = 0, ntov = 0;
    RtStage stages[8];
    int nstages = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(run_help, stdout); return 0; }
        if (!strncmp(a, "--trainer.", 10) && ntov < 64) tov[ntov++] = a + 10;
        else if ((!strncmp(a, "--model.", 8) || !strncmp(a, "--data.", 7)) && nov < 64) ov[nov++] = a + 2;
        else if (!strncmp(a, "--ckpt_path=", 12)) ckpt = a + 12;
        else if (!strcmp(a, "--barebones") && ntov < 64) tov[ntov++] = "barebones=true";
        else if (!strcmp(a, "--backend=interp")) interp = true;
        else if (!strcmp(a, "--backend=llvm")) interp = false;
        else if (!strncmp(a, "--threads=", 10) && ntov < 64) { snprintf(threads, sizeof threads, "threads=%s", a + 10); tov[ntov++] = threads; }
        else if (a[0] == '-') { fprintf(stderr, "ltlc: unknown option '%s' for run\nTry 'ltlc run --help'.\n", a); return 2; }
        else if (!file) file = a;
        else if (nstages < 8 && (!strcmp(a, "fit") || !strcmp(a, "validate") || !strcmp(a, "test") || !strcmp(a, "predict")))
            stages[nstages++] = a[0] == 'f' ? RT_TRAIN : a[0] == 'v' ? RT_VAL : a[0] == 't' ? RT_TEST : RT_PREDICT;
        else { fprintf(stderr, "ltlc: unknown stage '%s' (fit, validate, test, predict)\n", a); return 2; }
    }
    if (!file) { fprintf(stderr, "ltlc: run needs a FILE\nTry 'ltlc run --help'.\n"); return 2; }
    if (!nstages) stages[nstages++] = RT_TRAIN;

    Ast ast = {0};
    char *text = NULL;
    Run r = {.path = file, .opt = {.overrides = ov, .noverrides = nov}, .interp = interp};
    int status = 1;
    r.program = parse_file(&ast, file, &text);
    if (!r.program || diag_error_count()) goto out;
    sema_check_config(r.program);
    if (diag_error_count() || !sema_trainer_config(r.program, file, tov, ntov, &r.cfg)) goto out;
    r.opt.seed = (uint64_t)r.cfg.seed;
    r.opt.clip_val = r.cfg.gradient_clip_val;
    r.opt.clip_by_value = !strcmp(r.cfg.gradient_clip_algorithm, "value");
    r.opt.accumulate = r.cfg.accumulate_grad_batches;
    r.opt.precision = r.cfg.precision;
    if (!accelerator(&r)) goto out;
    r.world = 1;
    switch (ddp_setup(&r.cfg, argc, argv, &status)) {
    case DDP_LAUNCHED: goto out;
    case DDP_RANK:
        r.rank = rt_dist_rank();
        r.world = rt_dist_size();
        r.opt.ddp = true;
        if (r.rank && !freopen("/dev/null", "w", stdout)) { error("cannot silence rank %d's output", r.rank); goto out; }
        break;
    case DDP_SINGLE: break;
    }
    if (r.cuda && r.world > 1) { /* this rank's GPU and the NCCL communicator of the world */
        char err[512];
        int rk, sz, local;
        rt_dist_env(&rk, &sz, &local);
        if (!cuda_step_api->ddp_init(r.rank, r.world, local, err, sizeof err)) { error("accelerator = \"%s\": %s", r.cfg.accelerator, err); goto out; }
    }
    if (r.cuda)
        printf("GPU available: True (cuda), used: True (compute capability %d.%d, accelerator = \"%s\")\n", r.cc / 10, r.cc % 10,
               r.cfg.accelerator);
    status = 1;
    if (!r.rank) warn_unapplied(&r.cfg); /* once, by rank 0 (a launching process leaves it to its ranks) */
    if (!strcmp(r.cfg.precision, "64-true") && !r.interp) { /* the JIT's GEMMs and kernels are f32 */
        if (!r.rank) fprintf(stderr, "ltlc: precision 64-true runs on the reference interpreter (--backend=interp)\n");
        r.interp = true;
    }
    /* overfit_batches (Lightning 2.x): that much of the training and validation data, in order */
    if (r.cfg.overfit_batches.v > 0) r.cfg.limit_train_batches = r.cfg.limit_val_batches = r.cfg.overfit_batches;
    for (int i = 0; i < r.cfg.ncallbacks; i++) /* timer(duration = "DD:HH:MM:SS"): a max_time */
        for (int k = 0; !strcmp(r.cfg.callbacks[i].name, "timer") && k < r.cfg.callbacks[i].n; k++)
            if (!strcmp(r.cfg.callbacks[i].keys[k], "duration") && r.cfg.callbacks[i].vals[k].kind == RT_STR)
                r.cfg.max_time = r.cfg.callbacks[i].vals[k].s;
    r.prof.on = r.cfg.profiler != NULL;
    r.prof.trace = r.cfg.profiler && !strcmp(r.cfg.profiler, "advanced");
    r.prof.start = seconds();
    if (!r.interp && !(r.pool = rt_pool_create((int)r.cfg.threads))) { error("cannot start the thread pool"); goto out; }
    if (!sema_data_plan(r.program, file, &r.opt, &r.dp) || !text_data(&r)) goto out;
    if (r.cfg.overfit_batches.v > 0) r.dp.shuffle = false;
    for (int i = 0; i < nstages; i++) {
        r.stage_step[stages[i]] = step_name(stages[i]);
        if (stages[i] == RT_TRAIN) r.stage_step[RT_VAL] = step_name(RT_VAL);
    }
    preload_start(&r);
    /* the steps, compiled for the loader's batch size; the training graph lays out the state */
    Compiled *first = compiled(&r, stages[0] == RT_TRAIN ? RT_TRAIN : stages[0], r.dp.batch);
    if (!first) goto out;
    for (int s = RT_VAL; s < RT_NSTAGES; s++) /* a stage the model has no step for has no data */
        if (r.stage_step[s]) {
            SemaOptions o = r.opt;
            o.batch = r.dp.batch;
            StepGraph *g = sema_lower(r.program, file, step_name(s), &o, false);
            if (!g) { if (diag_error_count()) goto out; r.stage_step[s] = NULL; }
            sema_step_free(g);
        }
    init_state(&r, first->s);
    r.ngroups = first->s->ngroups < 8 ? first->s->ngroups : 8;
    for (int k = 0; k < r.ngroups; k++) {
        r.sched[k] = first->s->groups[k].sched;
        r.lr[k] = first->s->groups[k].lr0;
        const char *kind = first->s->groups[k].kind;
        /* Lightning's LearningRateMonitor names: lr-Adam, then lr-Adam-1, ... */
        const char *cls = !strcmp(kind, "sgd") ? "SGD" : !strcmp(kind, "adamw") ? "AdamW" : !strcmp(kind, "rmsprop") ? "RMSprop" : "Adam";
        if (k) snprintf(r.lr_names[k], sizeof r.lr_names[k], "lr-%s-%d", cls, k);
        else snprintf(r.lr_names[k], sizeof r.lr_names[k], "lr-%s", cls);
    }
    RtLoop L = {.ctx = &r, .batches = cb_batches, .load = cb_load, .step = cb_step, .log = cb_log,
                .progress = cb_progress, .save = r.cfg.enable_checkpointing ? cb_save : NULL,
                .epoch_end = cb_epoch_end, .es_best = NAN};
    r.loop = &L;
    callbacks(&r, &L);
    RtLoggerConfig lc = logger_config(&r);
    char found[1600];
    if (ckpt && (!strcmp(ckpt, "last") || !strcmp(ckpt, "best"))) {
        if (!find_ckpt(&r, &lc, ckpt, found, sizeof found)) goto out;
        ckpt = found;
    }
    if (ckpt && !load_ckpt(&r, ckpt, r.stage_step[RT_TRAIN] != NULL, &L)) goto out;
    if (ckpt) printf("Restoring states from the checkpoint path at %s\n", ckpt);
    for (int k = 0; r.world > 1 && k < NKINDS; k++) /* every rank starts from rank 0's weights */
        rt_dist_broadcast(r.buf[k], (size_t)r.layout[k].bytes, 0);
    if (r.world > 1) { L.reduce = cb_reduce; L.agree = cb_agree; }
    if (!make_loaders(&r, classes_of(first->s))) goto out;
    if (run_compile_only) { status = compile_all(&r) ? 0 : 1; goto out; }

    bool quiet = r.cfg.barebones || r.cfg.fast_dev_run > 0;
    if (!quiet && !r.rank && r.cfg.logger_enabled && r.cfg.nloggers) {
        lc.plot = stages[0] == RT_TRAIN;
        if (!(r.logger = rt_logger_open(&lc))) { error("%s", rt_log_error()); goto out; }
        if (!r.ckpt_dir[0]) snprintf(r.ckpt_dir, sizeof r.ckpt_dir, "%s/checkpoints", rt_logger_dir(r.logger));
        RtHparams *h = rt_hparams_new();
        for (int i = 0; i < nov; i++) {
            char *kv = xstrdup(ov[i]), *eq = strchr(kv, '=');
            if (eq) { *eq = 0; rt_hparams_parse(h, kv, eq + 1); }
            free(kv);
        }
        rt_hparams_str(h, "model.name", first->s->model);
        rt_hparams_int(h, "data.batch", r.dp.batch);
        rt_hparams_int(h, "trainer.seed", r.cfg.seed);
        rt_logger_hparams(r.logger, h);
        r.hparams_yaml = rt_hparams_yaml(h);
        rt_hparams_free(h);
    }
    if (quiet || r.rank) r.ckpt_dir[0] = 0; /* fast_dev_run and barebones save nothing; ddp: rank 0 saves */
    if (!r.stage_step[RT_TRAIN]) r.ckpt_dir[0] = 0; /* only fit saves checkpoints */
    if (r.ckpt_dir[0] && r.cfg.enable_checkpointing && mkdir(r.ckpt_dir, 0777) != 0 && errno != EEXIST) {
        error("cannot create %s: %s", r.ckpt_dir, strerror(errno));
        goto out;
    }
    if (!quiet && !r.rank && r.cfg.enable_progress_bar)
        r.bar = rt_progress_new(&(RtProgressConfig){.mode = RT_PROGRESS_AUTO, .leave = true});
    if (!quiet && r.cfg.enable_model_summary && stages[0] == RT_TRAIN) summary(first->s);

    for (int s = 0; s < RT_NSTAGES; s++) {
        Compiled *c = r.stage_step[s] && r.ld[s] ? compiled(&r, (RtStage)s, r.dp.batch) : NULL;
        if (r.stage_step[s] && r.ld[s] && !c) goto out;
        for (int k = 0; c && k < c->s->nlogs && k < 64; k++) {
            const LogSpec *l = &c->s->logs[k];
            r.specs[s][k] = (RtMetricSpec){l->name, l->prog_bar, l->on_step, l->on_epoch,
                                           !strcmp(l->reduce_fx, "sum") ? RT_SUM : !strcmp(l->reduce_fx, "max") ? RT_MAX
                                           : !strcmp(l->reduce_fx, "min") ? RT_MIN : RT_MEAN};
            if (l->sync_dist) L.sync_dist[s] |= UINT64_C(1) << k;
        }
        L.specs[s] = r.specs[s];
        L.nspecs[s] = c ? c->s->nlogs : 0;
        for (int k = 0; s == RT_TRAIN && r.lr_monitor && k < r.ngroups && L.nspecs[s] < 64; k++)
            r.specs[s][L.nspecs[s]++] = (RtMetricSpec){r.lr_names[k], false, r.lr_monitor == 1, r.lr_monitor == 2, RT_MEAN};
    }
    r.max_epochs = r.cfg.max_epochs < 0 && r.cfg.max_steps < 0 ? 1000 : r.cfg.max_epochs;
    for (int i = 0; i < nstages; i++) {
        if (stages[i] == RT_TRAIN && !run_hook(&r, "on_fit_start", L.start_epoch, L.global_step)) goto out;
        if (rt_run(&r.cfg, &L, stages[i]) != 0) {
            if (!diag_error_count()) error("%s: %s", file, L.err);
            goto out;
        }
        if (stages[i] == RT_TRAIN && !run_hook(&r, "on_fit_end", L.epochs_run, L.global_step)) goto out;
        if (stages[i] == RT_TEST && !run_hook(&r, "on_test_epoch_end", 0, L.global_step)) goto out;
        if (stages[i] != RT_TRAIN && L.nspecs[stages[i]]) { /* Lightning prints the test metrics */
            printf("%s metrics:\n", stages[i] == RT_TEST ? "test" : stages[i] == RT_VAL ? "validation" : "predict");
            for (int k = 0; k < L.nspecs[stages[i]]; k++)
                printf("  %-20s %.6g\n", L.specs[stages[i]][k].name, L.last_epoch_metrics[32 + k]);
        }
    }
    if (L.stop_reason[0]) {
        if (r.bar) rt_progress_print(r.bar, L.stop_reason);
        else printf("%s\n", L.stop_reason);
    }
    if (r.bar && r.bar_open) rt_progress_train_end(r.bar);
    if (r.bar) rt_progress_finish(r.bar);
    if (r.prof.on) prof_report(&r);
    if (r.logger) printf("run folder: %s\n", rt_logger_dir(r.logger));
    status = 0;
out:
    if (r.bar) rt_progress_free(r.bar);
    if (r.logger && rt_logger_close(r.logger) != 0 && status == 0) status = error("%s", rt_log_error());
    for (int s = 0; s < RT_NSTAGES; s++) rt_loader_free(r.ld[s]);
    preload_free(&r);
    for (int i = 0; i < r.nowned; i++) rt_data_free(r.owned[i]);
    for (int i = 0; i < r.nhooks; i++) sema_step_free(r.hooks[i].s);
    for (int i = 0; i < r.ncomp; i++) {
        llvm_step_free(r.comp[i].jit);
        if (r.comp[i].gpu) cuda_step_api->free(r.comp[i].gpu);
        sema_step_free(r.comp[i].s);
    }
    llvm_step_free(r.gen.jit);
    sema_step_free(r.gen.s);
    rt_text_free(r.text);
    for (int i = 0; i < r.ncm; i++) free(r.cm[i].sum);
    free(r.tok);
    if (r.pool) rt_pool_destroy(r.pool);
    free(r.xbuf);
    free(r.prof.ev);
    free(r.hparams_yaml);
    if (r.pred && fclose(r.pred) != 0 && status == 0) status = error("cannot write %s", r.pred_path);
    else if (r.pred && status == 0) printf("predictions: %s\n", r.pred_path);
    for (int k = 0; k < NKINDS; k++) { ir_layout_free(&r.layout[k]); free(r.buf[k]); }
    sema_data_free(&r.dp);
    rt_trainer_free(&r.cfg);
    ast_free(&ast);
    free(text);
    /* a failed rank ends the job: the others would wait for it in the next collective */
    if (status != 0 && r.world > 1) rt_dist_abort("failed (the message above)");
    rt_dist_finalize();
    return status;
}
