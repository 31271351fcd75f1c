/* trainer.c — the trainer's configuration: Lightning's defaults, setting a flag from a
 * value with its kind checked against TRAINER_FLAGS, and printing. */
#include "rt.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rt_trainer_defaults(RtTrainerConfig *c) {
    *c = (RtTrainerConfig){
        .accelerator = "auto", .strategy = "auto", .precision = "32-true",
        .gradient_clip_algorithm = "norm", .profiler = NULL, .default_root_dir = "runs",
        .devices = 1, .num_nodes = 1, .max_epochs = -1, .min_epochs = 0, .max_steps = -1,
        .limit_train_batches = {1.0, false}, .limit_val_batches = {1.0, false},
        .limit_test_batches = {1.0, false}, .limit_predict_batches = {1.0, false},
        .overfit_batches = {0, true}, .val_check_interval = {1.0, false},
        .check_val_every_n_epoch = 1, .num_sanity_val_steps = 2, .log_every_n_steps = 50,
        .accumulate_grad_batches = 1, .seed = 0, .threads = 0,
        .enable_checkpointing = true, .enable_progress_bar = true, .enable_model_summary = true,
        .inference_mode = true, .logger_enabled = true,
    };
}

void rt_trainer_free(RtTrainerConfig *c) {
    for (int i = 0; i < c->nowned; i++) free(c->owned[i]);
    c->nowned = 0;
}

const char *rt_trainer_str(RtTrainerConfig *c, const char *s) {
    if (c->nowned == (int)(sizeof c->owned / sizeof *c->owned)) return NULL;
    return c->owned[c->nowned++] = strdup(s);
}

RtValue rt_value_parse(RtTrainerConfig *c, const char *t) {
    char *end;
    if (!strcmp(t, "true") || !strcmp(t, "false")) return (RtValue){RT_BOOL, t[0] == 't', 0, NULL};
    if (!strcmp(t, "none")) return (RtValue){RT_NONE, 0, 0, NULL};
    long long i = strtoll(t, &end, 10);
    if (*t && !*end) return (RtValue){RT_INT, i, 0, NULL};
    double d = strtod(t, &end);
    if (*t && !*end) return (RtValue){RT_FLOAT, 0, d, NULL};
    return (RtValue){RT_STR, 0, 0, rt_trainer_str(c, t)};
}

typedef struct { const char *name; int kinds; const char *allowed; } Flag;
static const Flag flags[] = {
#define X(n, k, a) {#n, k, a},
    TRAINER_FLAGS(X)
#undef X
};

static bool allowed(const char *word, const char *list) {
    size_t n = strlen(word);
    for (const char *p = list; *p;) {
        size_t m = strcspn(p, "|");
        if (m == n && !strncmp(p, word, n)) return true;
        p += m + (p[m] == '|');
    }
    return false;
}

#define FLAG(name) !strcmp(flag, #name)

const char *rt_trainer_set(RtTrainerConfig *c, const char *flag, const RtValue *v) {
    static char msg[256];
    const Flag *f = NULL;
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (!strcmp(flags[i].name, flag)) f = &flags[i];
    if (!f) { snprintf(msg, sizeof msg, "unknown trainer flag '%s'", flag); return msg; }
    int k = v->kind == RT_INT ? RTV_INT : v->kind == RT_FLOAT ? RTV_FLOAT : v->kind == RT_STR ? RTV_STR
          : v->kind == RT_BOOL ? RTV_BOOL : 0;
    if (k == RTV_INT && !(f->kinds & RTV_INT) && (f->kinds & RTV_FLOAT)) k = RTV_FLOAT;
    if (!(k & f->kinds) && !(v->kind == RT_NONE && FLAG(profiler))) {
        snprintf(msg, sizeof msg, "'%s' cannot be set to that kind of value", flag);
        return msg;
    }
    if (k == RTV_STR && f->allowed && !allowed(v->s, f->allowed)) {
        snprintf(msg, sizeof msg, "'%s' cannot be \"%s\" (one of: %s)", flag, v->s, f->allowed);
        return msg;
    }
    double num = v->kind == RT_FLOAT ? v->f : (double)v->i;
    if ((k == RTV_INT || k == RTV_FLOAT) && num < 0 && !FLAG(max_epochs) && !FLAG(max_steps) && !FLAG(seed)) {
        snprintf(msg, sizeof msg, "'%s' cannot be negative", flag);
        return msg;
    }
    RtAmount amount = {num, v->kind == RT_INT};
    if (FLAG(accelerator)) c->accelerator = v->s;
    else if (FLAG(strategy)) c->strategy = v->s;
    else if (FLAG(devices)) c->devices = v->kind == RT_STR ? -1 : v->i; /* "auto": -1 */
    else if (FLAG(num_nodes)) c->num_nodes = v->i;
    else if (FLAG(precision)) c->precision = v->s;
    else if (FLAG(logger)) c->logger_enabled = v->kind != RT_BOOL || v->i;
    else if (FLAG(fast_dev_run)) c->fast_dev_run = v->kind == RT_BOOL ? v->i : v->i;
    else if (FLAG(max_epochs)) c->max_epochs = v->i;
    else if (FLAG(min_epochs)) c->min_epochs = v->i;
    else if (FLAG(max_steps)) c->max_steps = v->i;
    else if (FLAG(min_steps)) c->min_steps = v->i;
    else if (FLAG(max_time)) c->max_time = v->s;
    else if (FLAG(limit_train_batches)) c->limit_train_batches = amount;
    else if (FLAG(limit_val_batches)) c->limit_val_batches = amount;
    else if (FLAG(limit_test_batches)) c->limit_test_batches = amount;
    else if (FLAG(limit_predict_batches)) c->limit_predict_batches = amount;
    else if (FLAG(overfit_batches)) c->overfit_batches = amount;
    else if (FLAG(val_check_interval)) c->val_check_interval = amount;
    else if (FLAG(check_val_every_n_epoch)) c->check_val_every_n_epoch = v->i;
    else if (FLAG(num_sanity_val_steps)) c->num_sanity_val_steps = v->i;
    else if (FLAG(log_every_n_steps)) c->log_every_n_steps = v->i;
    else if (FLAG(enable_checkpointing)) c->enable_checkpointing = v->i;
    else if (FLAG(enable_progress_bar)) c->enable_progress_bar = v->i;
    else if (FLAG(enable_model_summary)) c->enable_model_summary = v->i;
    else if (FLAG(accumulate_grad_batches)) c->accumulate_grad_batches = v->i;
    else if (FLAG(gradient_clip_val)) c->gradient_clip_val = num;
    else if (FLAG(gradient_clip_algorithm)) c->gradient_clip_algorithm = v->s;
    else if (FLAG(deterministic)) c->deterministic = v->i;
    else if (FLAG(benchmark)) c->benchmark = v->i;
    else if (FLAG(inference_mode)) c->inference_mode = v->i;
    else if (FLAG(profiler)) c->profiler = v->kind == RT_STR ? v->s : NULL;
    else if (FLAG(detect_anomaly)) c->detect_anomaly = v->i;
    else if (FLAG(barebones)) c->barebones = v->i;
    else if (FLAG(default_root_dir)) c->default_root_dir = v->s;
    else if (FLAG(seed)) c->seed = v->i;
    else if (FLAG(threads)) c->threads = v->i;
    else if (FLAG(callbacks)) { /* lists are filled by the compiler, component by component */ }
    if (FLAG(accumulate_grad_batches) && v->i < 1) return "'accumulate_grad_batches' must be at least 1";
    if (FLAG(check_val_every_n_epoch) && v->i < 1) return "'check_val_every_n_epoch' must be at least 1";
    if ((FLAG(limit_train_batches) || FLAG(limit_val_batches) || FLAG(limit_test_batches) ||
         FLAG(limit_predict_batches) || FLAG(val_check_interval)) && !amount.count && num > 1.0) {
        snprintf(msg, sizeof msg, "'%s' as a fraction must be at most 1.0 (an integer counts batches)", flag);
        return msg;
    }
    return NULL;
}

static void print_value(FILE *f, const RtValue *v) {
    switch (v->kind) {
    case RT_NONE: fputs("none", f); break;
    case RT_BOOL: fputs(v->i ? "true" : "false", f); break;
    case RT_INT: fprintf(f, "%lld", (long long)v->i); break;
    case RT_FLOAT: fprintf(f, "%g", v->f); break;
    case RT_STR: fprintf(f, "\"%s\"", v->s); break;
    }
}

static void print_amount(FILE *f, const char *name, RtAmount a) {
    if (a.count) fprintf(f, "%s = %lld\n", name, (long long)a.v);
    else fprintf(f, "%s = %g\n", name, a.v);
}

static void print_components(FILE *f, const char *name, const RtComponent *c, int n) {
    fprintf(f, "%s = [", name);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s%s(", i ? ", " : "", c[i].name);
        for (int k = 0; k < c[i].n; k++) {
            fprintf(f, "%s%s = ", k ? ", " : "", c[i].keys[k]);
            print_value(f, &c[i].vals[k]);
        }
        fputc(')', f);
    }
    fputs("]\n", f);
}

void rt_trainer_print(FILE *f, const RtTrainerConfig *c) {
    fprintf(f, "accelerator = \"%s\"\nstrategy = \"%s\"\ndevices = %lld\nnum_nodes = %lld\n", c->accelerator,
            c->strategy, (long long)c->devices, (long long)c->num_nodes);
    fprintf(f, "precision = \"%s\"\nfast_dev_run = %lld\nmax_epochs = %lld\nmin_epochs = %lld\n", c->precision,
            (long long)c->fast_dev_run, (long long)c->max_epochs, (long long)c->min_epochs);
    fprintf(f, "max_steps = %lld\nmin_steps = %lld\n", (long long)c->max_steps, (long long)c->min_steps);
    if (c->max_time) fprintf(f, "max_time = \"%s\"\n", c->max_time);
    print_amount(f, "limit_train_batches", c->limit_train_batches);
    print_amount(f, "limit_val_batches", c->limit_val_batches);
    print_amount(f, "limit_test_batches", c->limit_test_batches);
    print_amount(f, "limit_predict_batches", c->limit_predict_batches);
    print_amount(f, "overfit_batches", c->overfit_batches);
    print_amount(f, "val_check_interval", c->val_check_interval);
    fprintf(f, "check_val_every_n_epoch = %lld\nnum_sanity_val_steps = %lld\nlog_every_n_steps = %lld\n",
            (long long)c->check_val_every_n_epoch, (long long)c->num_sanity_val_steps, (long long)c->log_every_n_steps);
    fprintf(f, "accumulate_grad_batches = %lld\ngradient_clip_val = %g\ngradient_clip_algorithm = \"%s\"\n",
            (long long)c->accumulate_grad_batches, c->gradient_clip_val, c->gradient_clip_algorithm);
    fprintf(f, "enable_checkpointing = %s\nenable_progress_bar = %s\nenable_model_summary = %s\n",
            c->enable_checkpointing ? "true" : "false", c->enable_progress_bar ? "true" : "false",
            c->enable_model_summary ? "true" : "false");
    fprintf(f, "deterministic = %s\ndetect_anomaly = %s\nbarebones = %s\n", c->deterministic ? "true" : "false",
            c->detect_anomaly ? "true" : "false", c->barebones ? "true" : "false");
    if (c->profiler) fprintf(f, "profiler = \"%s\"\n", c->profiler);
    fprintf(f, "default_root_dir = \"%s\"\nseed = %lld\nthreads = %lld\n", c->default_root_dir, (long long)c->seed,
            (long long)c->threads);
    print_components(f, "callbacks", c->callbacks, c->ncallbacks);
    if (c->logger_enabled) print_components(f, "logger", c->loggers, c->nloggers);
    else fputs("logger = false\n", f);
}
