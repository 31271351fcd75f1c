/* test_fit.c — the loop's rules: what each trainer flag does to the number of steps,
 * validation runs, logged rows and their names, over a fake data source and step. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include "rt.h"

typedef struct {
    int64_t batches[RT_NSTAGES];
    int64_t loads[RT_NSTAGES], steps[RT_NSTAGES], saves, rows;
    char logged[64][64];
    int nlogged;
    double next;      /* the value the training step logs */
    int fail_at;      /* the training step fails at this global step (-1: never) */
} Fake;

static int64_t f_batches(void *ctx, RtStage s) { return ((Fake *)ctx)->batches[s]; }
static bool f_load(void *ctx, RtStage s, int64_t e, int64_t i) {
    (void)e; (void)i;
    ((Fake *)ctx)->loads[s]++;
    return true;
}
static bool f_step(void *ctx, RtStage s, int64_t gs, double *m) {
    Fake *f = ctx;
    if (s == RT_TRAIN && gs == f->fail_at) return false;
    f->steps[s]++;
    m[0] = s == RT_TRAIN ? f->next++ : 0.5;
    m[1] = 2.0;
    return true;
}
static void f_log(void *ctx, int64_t step, int64_t epoch, int n, const char *const *names, const double *v) {
    (void)step; (void)epoch; (void)v;
    Fake *f = ctx;
    f->rows++;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int k = 0; k < f->nlogged; k++) seen |= !strcmp(f->logged[k], names[i]);
        if (!seen && f->nlogged < 64) snprintf(f->logged[f->nlogged++], 64, "%s", names[i]);
    }
}
static bool f_save(void *ctx, int64_t e, int64_t b, int64_t s) { (void)e; (void)b; (void)s; ((Fake *)ctx)->saves++; return true; }

static const RtMetricSpec train_specs[] = {{"train_loss", true, true, true, RT_MEAN}, {"lr", false, true, false, RT_MEAN}};
static const RtMetricSpec val_specs[] = {{"val_acc", true, false, true, RT_MEAN}, {"val_loss", false, false, true, RT_MEAN}};

static RtLoop loop(Fake *f, int64_t ntrain, int64_t nval) {
    *f = (Fake){.batches = {ntrain, nval, 5, 5}, .fail_at = -1};
    RtLoop L = {.ctx = f, .batches = f_batches, .load = f_load, .step = f_step, .log = f_log, .save = f_save};
    L.specs[RT_TRAIN] = train_specs;
    L.nspecs[RT_TRAIN] = 2;
    L.specs[RT_VAL] = val_specs;
    L.nspecs[RT_VAL] = 2;
    L.specs[RT_TEST] = val_specs;
    L.nspecs[RT_TEST] = 2;
    return L;
}

static RtTrainerConfig cfg(void) {
    RtTrainerConfig c;
    rt_trainer_defaults(&c);
    c.max_epochs = 3;
    c.log_every_n_steps = 1;
    return c;
}

Test(fit, epochs_steps_sanity_validation_checkpoints) {
    Fake f;
    RtLoop L = loop(&f, 10, 4);
    RtTrainerConfig c = cfg();
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0, "%s", L.err);
    cr_assert_eq(L.global_step, 30);
    cr_assert_eq(L.epochs_run, 3);
    cr_assert_eq(L.sanity_batches_run, 2, "num_sanity_val_steps = 2");
    cr_assert_eq(L.val_runs, 3, "one validation per epoch");
    cr_assert_eq(f.steps[RT_VAL], 2 + 3 * 4);
    cr_assert_eq(f.saves, 3);
    /* on_step and on_epoch: train_loss_step and train_loss_epoch; val metrics per epoch */
    const char *want[] = {"train_loss_step", "lr", "val_acc", "val_loss", "train_loss_epoch"};
    cr_assert_eq(f.nlogged, 5);
    for (int i = 0; i < 5; i++) cr_assert_str_eq(f.logged[i], want[i]);
    /* the last epoch's mean of train_loss: values 20..29 */
    cr_assert_float_eq(L.last_epoch_metrics[0], 24.5, 1e-12);
}

Test(fit, max_steps_limits_and_intervals) {
    Fake f;
    RtLoop L = loop(&f, 10, 4);
    RtTrainerConfig c = cfg();
    c.max_steps = 13;
    c.max_epochs = -1;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(L.global_step, 13, "max_steps stops mid-epoch");
    cr_assert_eq(L.epochs_run, 2);

    L = loop(&f, 10, 4);
    c = cfg();
    c.limit_train_batches = (RtAmount){0.5, false};
    c.limit_val_batches = (RtAmount){1, true};
    c.num_sanity_val_steps = 0;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(L.global_step, 15, "half of 10 batches, 3 epochs");
    cr_assert_eq(f.steps[RT_VAL], 3, "one validation batch per epoch");
    cr_assert_eq(L.sanity_batches_run, 0);

    L = loop(&f, 8, 2);
    c = cfg();
    c.max_epochs = 1;
    c.val_check_interval = (RtAmount){0.25, false};
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(L.val_runs, 4, "validation every 2 of 8 batches");

    L = loop(&f, 8, 2);
    c = cfg();
    c.max_epochs = 4;
    c.check_val_every_n_epoch = 2;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(L.val_runs, 2, "epochs 2 and 4");

    L = loop(&f, 8, 2);
    c = cfg();
    c.log_every_n_steps = 4;
    c.max_epochs = 1;
    c.num_sanity_val_steps = 0;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(f.rows, 2 + 1 + 1, "two step rows, one validation row, one epoch row");
}

Test(fit, fast_dev_run_barebones_and_errors) {
    Fake f;
    RtLoop L = loop(&f, 10, 4);
    RtTrainerConfig c = cfg();
    c.fast_dev_run = 2;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(L.global_step, 2);
    cr_assert_eq(f.steps[RT_VAL], 2, "no sanity run, 2 validation batches");
    cr_assert_eq(f.saves, 0, "no checkpoints");
    cr_assert_eq(f.rows, 0, "no logging");

    L = loop(&f, 10, 4);
    c = cfg();
    c.barebones = true;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(f.rows + f.saves + L.sanity_batches_run, 0);

    L = loop(&f, 10, 4);
    f.fail_at = 12;
    c = cfg();
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 1);
    cr_assert_str_eq(L.err, "the training step failed");
    cr_assert_eq(L.global_step, 12);

    L = loop(&f, 0, 4);
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 1);
    cr_assert_str_eq(L.err, "fit needs training data and a training_step");
}

Test(fit, validate_and_test_stages) {
    Fake f;
    RtLoop L = loop(&f, 10, 4);
    RtTrainerConfig c = cfg();
    c.limit_test_batches = (RtAmount){3, true};
    cr_assert_eq(rt_run(&c, &L, RT_TEST), 0);
    cr_assert_eq(f.steps[RT_TEST], 3);
    cr_assert_eq(f.rows, 1, "one row of test metrics");
    L = loop(&f, 10, 0);
    cr_assert_eq(rt_run(&c, &L, RT_VAL), 1);
    cr_assert_str_eq(L.err, "no validation data or no validation_step");
    cr_assert_eq(rt_limit((RtAmount){0.3, false}, 10), 3);
    cr_assert_eq(rt_limit((RtAmount){30, true}, 10), 10);
}

static void early(RtTrainerConfig *c, const char *monitor, const char *mode, int64_t patience, double threshold) {
    RtComponent *cb = &c->callbacks[c->ncallbacks++];
    *cb = (RtComponent){.name = "early_stopping", .n = 3,
                        .keys = {"monitor", "mode", "patience"},
                        .vals = {{RT_STR, 0, 0, monitor}, {RT_STR, 0, 0, mode}, {RT_INT, patience, 0, NULL}}};
    if (threshold == threshold) {
        cb->keys[3] = "stopping_threshold";
        cb->vals[3] = (RtValue){RT_FLOAT, 0, threshold, NULL};
        cb->n = 4;
    }
}

Test(fit, early_stopping) {
    Fake f;
    RtLoop L = loop(&f, 4, 2);
    RtTrainerConfig c = cfg();
    c.max_epochs = 10;
    early(&c, "val_acc", "max", 2, NAN); /* val_acc is 0.5 every time: no improvement after the first */
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0, "%s", L.err);
    cr_assert_eq(L.epochs_run, 3);
    cr_assert(strstr(L.stop_reason, "Monitored metric val_acc did not improve in the last 2 records. Best score: 0.500"),
              "%s", L.stop_reason);

    L = loop(&f, 4, 2);
    c.min_epochs = 5;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(L.epochs_run, 5, "min_epochs wins over early stopping");

    L = loop(&f, 4, 2);
    c = cfg();
    c.max_epochs = 10;
    early(&c, "val_loss", "min", 3, 3.0); /* val_loss 2.0 < 3.0 at once */
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0);
    cr_assert_eq(L.epochs_run, 1);
    cr_assert(strstr(L.stop_reason, "Stopping threshold reached: val_loss = 2 < 3"), "%s", L.stop_reason);

    L = loop(&f, 4, 2);
    c = cfg();
    early(&c, "val_los", "min", 3, NAN);
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 1);
    cr_assert(strstr(L.err, "conditioned on metric `val_los`, which is not available"), "%s", L.err);
    cr_assert(strstr(L.err, "`val_acc`"), "lists what is logged: %s", L.err);
    double v;
    cr_assert(rt_metric(&L, "train_loss_step", &v), "callback metrics hold the step values");
}

/* accumulate_grad_batches: the weights change every k batches, global_step counts those
 * optimizer steps, and step rows follow them. */
Test(fit, accumulation_counts_optimizer_steps) {
    Fake f;
    RtLoop L = loop(&f, 10, 0);
    RtTrainerConfig c = cfg();
    c.max_epochs = 1;
    c.accumulate_grad_batches = 4;
    cr_assert_eq(rt_run(&c, &L, RT_TRAIN), 0, "%s", L.err);
    cr_assert_eq(L.train_batches_run, 10);
    cr_assert_eq(L.global_step, 3, "after batches 4 and 8, and at the end of the epoch");
    cr_assert_eq(f.rows, 3 + 1, "three step rows and the epoch row");
}
