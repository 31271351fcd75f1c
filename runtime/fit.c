/* fit.c — the training, validation, test and predict loops with Lightning's flags and
 * logging rules. The data, the steps and the outputs come through RtLoop, so the rules here
 * are tested on their own. */
#include "rt.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t rt_limit(RtAmount a, int64_t n) {
    if (a.count) return (int64_t)a.v < n ? (int64_t)a.v : n;
    return (int64_t)floor(a.v * (double)n); /* Lightning: int(fraction * batches) */
}

/* Per-stage aggregation of logged values over an epoch: means weigh each batch by its size. */
typedef struct { double acc[64], weight; int64_t count; } Agg;

static void agg_add(Agg *a, const RtMetricSpec *s, int n, const double *v, int64_t batch) {
    double w = batch > 0 ? (double)batch : 1;
    for (int i = 0; i < n; i++) {
        if (s[i].reduce == RT_MEAN) a->acc[i] = (a->count ? a->acc[i] : 0) + w * v[i];
        else if (a->count == 0) a->acc[i] = v[i];
        else if (s[i].reduce == RT_MAX) a->acc[i] = fmax(a->acc[i], v[i]);
        else if (s[i].reduce == RT_MIN) a->acc[i] = fmin(a->acc[i], v[i]);
        else a->acc[i] += v[i];
    }
    a->weight += w;
    a->count++;
}
static double agg_value(const Agg *a, const RtMetricSpec *s, int i) {
    return s[i].reduce == RT_MEAN && a->count ? a->acc[i] / a->weight : a->acc[i];
}

/* Data-parallel training: the aggregates of the metrics in `which` (bit i: metric i)
 * combined over the ranks; a mean weighs each rank's batches by their size, as one process
 * running all the batches would. Every rank holds the same specs, so the calls match. */
static void agg_sync(RtLoop *L, Agg *a, const RtMetricSpec *s, int n, uint64_t which) {
    if (!L->reduce) return;
    const RtReduce ops[3] = {RT_SUM, RT_MAX, RT_MIN};
    for (int o = 0; o < 3; o++) {
        double v[65];
        int idx[64], k = 0;
        for (int i = 0; i < n && i < 64; i++) {
            RtReduce r = s[i].reduce == RT_MEAN ? RT_SUM : s[i].reduce;
            if ((which >> i & 1) && r == ops[o]) { idx[k] = i; v[k++] = a->acc[i]; }
        }
        if (!k) continue;
        v[k] = a->weight; /* the ranks' total weight, for the means */
        L->reduce(L->ctx, v, o == 0 ? k + 1 : k, ops[o]);
        for (int j = 0; j < k; j++)
            a->acc[idx[j]] = s[idx[j]].reduce == RT_MEAN && v[k] > 0 ? v[j] / v[k] * a->weight : v[j];
    }
}

/* The per-step values of the metrics logged with sync_dist = true, averaged over the ranks
 * (every rank runs batches of the same sizes, so their epoch aggregates then agree too). */
static void step_sync(RtLoop *L, int n, double *m) {
    if (!L->reduce) return;
    double v[64];
    int idx[64], k = 0;
    for (int i = 0; i < n && i < 64; i++)
        if (L->sync_dist[RT_TRAIN] >> i & 1) { idx[k] = i; v[k++] = m[i]; }
    if (k) L->reduce(L->ctx, v, k, RT_MEAN);
    for (int j = 0; j < k; j++) m[idx[j]] = v[j];
}

/* Lightning's names: a metric logged both per step and per epoch gets _step/_epoch. */
static const char *metric_name(const RtMetricSpec *s, bool epoch, char *buf, size_t size) {
    if (s->on_step && s->on_epoch) snprintf(buf, size, "%s_%s", s->name, epoch ? "epoch" : "step");
    else snprintf(buf, size, "%s", s->name);
    return buf;
}

typedef struct {
    const char *names[64];
    double v[64];
    char store[64][96];
    int n;
} Row;

static void row_add(Row *r, const RtMetricSpec *s, bool epoch, double v) {
    if (r->n == 64) return;
    r->names[r->n] = metric_name(s, epoch, r->store[r->n], sizeof r->store[r->n]);
    r->v[r->n++] = v;
}

/* The values a progress bar shows: prog_bar metrics, latest step values and epoch aggregates. */
typedef struct { Row row; } Bar;
static void bar_set(Bar *b, const RtMetricSpec *s, double v) {
    for (int i = 0; i < b->row.n; i++)
        if (!strcmp(b->row.names[i], s->name)) { b->row.v[i] = v; return; }
    if (b->row.n == 64) return;
    snprintf(b->row.store[b->row.n], sizeof b->row.store[0], "%s", s->name);
    b->row.names[b->row.n] = b->row.store[b->row.n];
    b->row.v[b->row.n++] = v;
}

static void set_metric(RtLoop *L, const char *name, double v) {
    for (int i = 0; i < L->nmetrics; i++)
        if (!strcmp(L->metric_names[i], name)) { L->metric_values[i] = v; return; }
    if (L->nmetrics == 64) return;
    snprintf(L->metric_names[L->nmetrics], sizeof L->metric_names[0], "%s", name);
    L->metric_values[L->nmetrics++] = v;
}

bool rt_metric(const RtLoop *L, const char *name, double *v) {
    for (int i = 0; i < L->nmetrics; i++)
        if (!strcmp(L->metric_names[i], name)) { *v = L->metric_values[i]; return true; }
    return false;
}

static void set_row(RtLoop *L, const Row *r) {
    for (int i = 0; i < r->n; i++) set_metric(L, r->names[i], r->v[i]);
}

/* Lightning's EarlyStopping, checked after each validation (or each training epoch when
 * there is no validation). */
typedef struct {
    bool on;
    const char *monitor;
    double min_delta, stopping_threshold, divergence_threshold, best;
    int64_t patience, wait;
    bool max, check_finite, strict;
} EarlyStop;

static EarlyStop early_stop_config(const RtTrainerConfig *c) {
    EarlyStop e = {.patience = 3, .check_finite = true, .strict = true, .stopping_threshold = NAN,
                   .divergence_threshold = NAN};
    for (int i = 0; i < c->ncallbacks; i++) {
        const RtComponent *cb = &c->callbacks[i];
        if (strcmp(cb->name, "early_stopping")) continue;
        e.on = true;
        for (int k = 0; k < cb->n; k++) {
            const char *key = cb->keys[k];
            const RtValue *v = &cb->vals[k];
            double num = v->kind == RT_FLOAT ? v->f : (double)v->i;
            if (!strcmp(key, "monitor") && v->kind == RT_STR) e.monitor = v->s;
            else if (!strcmp(key, "mode") && v->kind == RT_STR) e.max = !strcmp(v->s, "max");
            else if (!strcmp(key, "min_delta")) e.min_delta = fabs(num);
            else if (!strcmp(key, "patience")) e.patience = (int64_t)num;
            else if (!strcmp(key, "check_finite")) e.check_finite = v->i;
            else if (!strcmp(key, "strict")) e.strict = v->i;
            else if (!strcmp(key, "stopping_threshold") && v->kind != RT_NONE) e.stopping_threshold = num;
            else if (!strcmp(key, "divergence_threshold") && v->kind != RT_NONE) e.divergence_threshold = num;
        }
    }
    e.best = e.max ? -INFINITY : INFINITY;
    return e;
}

/* One record: false on an error (the monitored metric is missing and strict); sets *stop. */
static bool early_stop_eval(RtLoop *L, EarlyStop *e, bool *stop) {
    double v;
    if (!e->monitor || !rt_metric(L, e->monitor, &v)) {
        if (!e->strict) return true;
        char avail[256] = "";
        for (int i = 0; i < L->nmetrics; i++)
            snprintf(avail + strlen(avail), sizeof avail - strlen(avail), "%s`%s`", i ? ", " : "", L->metric_names[i]);
        snprintf(L->err, sizeof L->err, "early_stopping is conditioned on metric `%s`, which is not available; "
                 "available metrics are: %s", e->monitor ? e->monitor : "(none)", avail);
        return false;
    }
    bool better = e->max ? v - e->min_delta > e->best : v + e->min_delta < e->best;
    if (e->check_finite && !isfinite(v)) {
        snprintf(L->stop_reason, sizeof L->stop_reason, "Monitored metric %s = %g is not finite. Previous best value was %.3f. "
                 "Signaling Trainer to stop.", e->monitor, v, e->best);
        *stop = true;
    } else if (!isnan(e->stopping_threshold) && (e->max ? v > e->stopping_threshold : v < e->stopping_threshold)) {
        snprintf(L->stop_reason, sizeof L->stop_reason, "Stopping threshold reached: %s = %g %s %g. Signaling Trainer to stop.",
                 e->monitor, v, e->max ? ">" : "<", e->stopping_threshold);
        *stop = true;
    } else if (!isnan(e->divergence_threshold) && (e->max ? v < e->divergence_threshold : v > e->divergence_threshold)) {
        snprintf(L->stop_reason, sizeof L->stop_reason, "Divergence threshold reached: %s = %g %s %g. Signaling Trainer to stop.",
                 e->monitor, v, e->max ? "<" : ">", e->divergence_threshold);
        *stop = true;
    } else if (better) {
        e->best = v;
        e->wait = 0;
    } else if (++e->wait >= e->patience) {
        snprintf(L->stop_reason, sizeof L->stop_reason, "Monitored metric %s did not improve in the last %lld records. "
                 "Best score: %.3f. Signaling Trainer to stop.", e->monitor, (long long)e->wait, e->best);
        *stop = true;
    }
    return true;
}

static bool early_stop_check(RtLoop *L, EarlyStop *e, bool *stop) {
    if (!e->on) return true;
    bool ok = early_stop_eval(L, e, stop);
    L->es_best = e->best; /* kept in checkpoints */
    L->es_wait = e->wait;
    return ok;
}

static bool fail(RtLoop *L, const char *what) {
    if (!L->err[0]) snprintf(L->err, sizeof L->err, "%s", what);
    return false;
}

/* Seconds in "DD:HH:MM:SS" (Lightning's max_time string); -1 when absent or malformed. */
static double max_time_s(const char *t) {
    int d, h, m, s;
    if (!t || sscanf(t, "%d:%d:%d:%d", &d, &h, &m, &s) != 4) return -1;
    return ((d * 24.0 + h) * 60 + m) * 60 + s;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One pass over an evaluation stage: n batches, epoch aggregates logged unless sanity. */
static bool evaluate(RtLoop *L, RtStage st, int64_t epoch, int64_t n, bool sanity, bool log_it, Bar *bar) {
    const RtMetricSpec *s = L->specs[st];
    int ns = L->nspecs[st];
    double m[64];
    Agg agg = {0};
    for (int64_t i = 0; i < n; i++) {
        if (!L->load(L->ctx, st, epoch, i)) return fail(L, "loading a batch failed");
        if (!L->step(L->ctx, st, L->global_step, m)) return fail(L, "a step failed");
        agg_add(&agg, s, ns, m, L->batch_size);
        if (sanity) L->sanity_batches_run++;
        if (L->progress && !sanity) L->progress(L->ctx, st, epoch, i + 1, n, 0, NULL, NULL);
    }
    if (sanity || n == 0) return true;
    agg_sync(L, &agg, s, ns, ~UINT64_C(0)); /* evaluation metrics: averaged over the ranks */
    Row r = {0};
    for (int i = 0; i < ns; i++) {
        double v = agg_value(&agg, s, i);
        if (s[i].on_epoch) row_add(&r, &s[i], true, v);
        if (s[i].prog_bar && bar) bar_set(bar, &s[i], v);
        if (i < 32) L->last_epoch_metrics[32 + i] = v; /* the last evaluation's aggregates */
    }
    set_row(L, &r);
    if (log_it && L->log && r.n) L->log(L->ctx, L->global_step, epoch, r.n, r.names, r.v);
    if (st == RT_VAL) L->val_runs++;
    return true;
}

static int fit(const RtTrainerConfig *c, RtLoop *L) {
    bool dev = c->fast_dev_run > 0;
    int64_t max_epochs = dev ? 1 : c->max_epochs < 0 && c->max_steps < 0 ? 1000 : c->max_epochs;
    int64_t ntrain = L->batches(L->ctx, RT_TRAIN), nval = L->batches(L->ctx, RT_VAL);
    if (ntrain <= 0) return fail(L, "fit needs training data and a training_step"), 1;
    ntrain = dev ? (c->fast_dev_run < ntrain ? c->fast_dev_run : ntrain) : rt_limit(c->limit_train_batches, ntrain);
    nval = dev ? (c->fast_dev_run < nval ? c->fast_dev_run : nval) : rt_limit(c->limit_val_batches, nval);
    if (ntrain == 0) return fail(L, "limit_train_batches leaves no training batch"), 1;
    bool log_it = !dev && !c->barebones;
    int64_t every = c->val_check_interval.count ? (int64_t)c->val_check_interval.v
                                                : (int64_t)floor(c->val_check_interval.v * (double)ntrain);
    if (every < 1) every = 1;
    double limit_s = max_time_s(c->max_time), start = now_s();
    const RtMetricSpec *s = L->specs[RT_TRAIN];
    int ns = L->nspecs[RT_TRAIN];
    Bar bar = {0};
    EarlyStop es = early_stop_config(c);
    if (L->es_restored) { es.best = L->es_best; es.wait = L->es_wait; } /* a resumed run */
    /* Sanity check: a few validation batches first, so a broken validation_step fails fast. */
    bool resumed = L->start_epoch > 0 || L->start_batch > 0;
    int64_t sanity = dev || c->barebones || resumed ? 0 : c->num_sanity_val_steps < 0 ? nval : c->num_sanity_val_steps;
    if (sanity > nval) sanity = nval;
    if (sanity > 0 && !evaluate(L, RT_VAL, 0, sanity, true, false, NULL)) return 1;
    bool stop = false, saving = !dev && c->enable_checkpointing && !c->barebones && L->save;
    for (int64_t epoch = L->start_epoch; !stop && (max_epochs < 0 || epoch < max_epochs); epoch++) {
        if (c->max_steps >= 0 && L->global_step >= c->max_steps) break;
        Agg agg = {0};
        bool val_epoch = nval > 0 && (epoch + 1) % c->check_val_every_n_epoch == 0;
        int64_t i = epoch == L->start_epoch ? L->start_batch : 0;
        for (; i < ntrain; i++) {
            double m[64];
            if (!L->load(L->ctx, RT_TRAIN, epoch, i)) return fail(L, "loading a batch failed"), 1;
            /* accumulate_grad_batches: the optimizer steps every k batches and at the epoch's end;
             * global_step counts optimizer steps, as Lightning's */
            int64_t acc = c->accumulate_grad_batches > 1 ? c->accumulate_grad_batches : 1;
            L->apply = (i + 1) % acc == 0 || i + 1 == ntrain;
            if (!L->step(L->ctx, RT_TRAIN, L->global_step, m)) return fail(L, "the training step failed"), 1;
            L->global_step += L->apply;
            L->train_batches_run++;
            step_sync(L, ns, m);
            agg_add(&agg, s, ns, m, L->batch_size);
            Row r = {0};
            for (int k = 0; k < ns; k++) {
                if (s[k].on_step) row_add(&r, &s[k], false, m[k]);
                if (s[k].prog_bar && s[k].on_step) bar_set(&bar, &s[k], m[k]);
            }
            set_row(L, &r);
            /* step rows and step checkpoints follow optimizer steps, not accumulated batches */
            if (log_it && L->log && r.n && L->apply && L->global_step % c->log_every_n_steps == 0)
                L->log(L->ctx, L->global_step - 1, epoch, r.n, r.names, r.v);
            if (L->progress && c->enable_progress_bar && !c->barebones)
                L->progress(L->ctx, RT_TRAIN, epoch, i + 1, ntrain, bar.row.n, bar.row.names, bar.row.v);
            bool last = i + 1 == ntrain;
            if (c->max_steps >= 0 && L->global_step >= c->max_steps) stop = true;
            if (limit_s >= 0 && now_s() - start >= limit_s) stop = true;
            /* validation every `every` batches and at the end of the epoch it falls in */
            if (val_epoch && ((i + 1) % every == 0 || (last && every >= ntrain))) {
                bool es_stop = false;
                if (!evaluate(L, RT_VAL, epoch, nval, false, log_it, &bar)) return 1;
                if (!early_stop_check(L, &es, &es_stop)) return 1;
                if (es_stop && epoch + 1 >= c->min_epochs) stop = true;
            }
            if (L->agree) stop = L->agree(L->ctx, stop); /* max_time, early stopping: rank 0 decides */
            L->saving_epoch_end = false;
            if (saving && !last && (stop || (L->apply && L->save_every_n_steps > 0 && L->global_step % L->save_every_n_steps == 0)) &&
                !L->save(L->ctx, epoch, i + 1, L->global_step))
                return fail(L, "saving the checkpoint failed"), 1;
            if (stop) { i++; break; }
        }
        Row r = {0}; /* sync_dist values were averaged per step: their epoch aggregates agree */
        for (int k = 0; k < ns; k++) {
            double v = agg_value(&agg, s, k);
            if (s[k].on_epoch) row_add(&r, &s[k], true, v);
            if (k < 32) L->last_epoch_metrics[k] = v;
        }
        set_row(L, &r);
        if (log_it && L->log && r.n) L->log(L->ctx, L->global_step - 1, epoch, r.n, r.names, r.v);
        L->epochs_run++;
        if (L->epoch_end && !L->epoch_end(L->ctx, epoch)) return fail(L, "the end of the epoch failed"), 1;
        if (nval == 0) { /* no validation: early stopping looks at the training epoch */
            bool es_stop = false;
            if (!early_stop_check(L, &es, &es_stop)) return 1;
            if (es_stop && epoch + 1 >= c->min_epochs) stop = true;
            if (L->agree) stop = L->agree(L->ctx, stop);
        }
        L->saving_epoch_end = true;
        if (saving && i == ntrain && !L->save(L->ctx, epoch, ntrain, L->global_step))
            return fail(L, "saving the checkpoint failed"), 1;
        if (epoch + 1 < c->min_epochs) stop = false;
    }
    if (!stop) L->stop_reason[0] = 0;
    return 0;
}

int rt_run(const RtTrainerConfig *c, RtLoop *L, RtStage stage) {
    L->err[0] = 0;
    if (stage == RT_TRAIN) return fit(c, L);
    int64_t n = L->batches(L->ctx, stage);
    RtAmount lim = stage == RT_VAL ? c->limit_val_batches : stage == RT_TEST ? c->limit_test_batches
                                                                                : c->limit_predict_batches;
    n = c->fast_dev_run > 0 ? (c->fast_dev_run < n ? c->fast_dev_run : n) : rt_limit(lim, n);
    if (n <= 0) {
        snprintf(L->err, sizeof L->err, "no %s data or no %s", stage == RT_VAL ? "validation" : stage == RT_TEST ? "test" : "predict",
                 stage == RT_VAL ? "validation_step" : stage == RT_TEST ? "test_step" : "predict_step");
        return 1;
    }
    return evaluate(L, stage, 0, n, false, c->fast_dev_run == 0 && !c->barebones, NULL) ? 0 : 1;
}
