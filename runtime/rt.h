// rt.h — the LTL runtime (prefix rt_): what compiled training steps and the
// trainer call at run time. Prototypes are grouped by file; each file's
// section is owned by its author.
#ifndef LTL_RT_H
#define LTL_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

//
// pool.c — a thread pool for the kernels (GEMM blocks, fused loops).
//
// The calling thread takes part in the work, so a pool of n threads starts
// n - 1 workers. Idle workers spin briefly, then sleep on a futex. Tasks are
// numbered; which thread runs a task never changes what the task computes, so
// results do not depend on the number of threads. A task that calls back into
// the same pool runs the inner job on its own thread (no deadlock).
// rt_pool_run may be called from any thread; concurrent calls are serialised.

typedef struct RtPool RtPool;

// Task `index` of `count`; the signature of JIT-compiled kernels too.
typedef void (*rt_task_fn)(void *ctx, int64_t index, int64_t count);
// A contiguous range [begin, end) of a parallel loop.
typedef void (*rt_range_fn)(void *ctx, int64_t begin, int64_t end);

int rt_cpu_count(void);                   // CPUs this process may run on (>= 1)
RtPool *rt_pool_create(int nthreads);     // <= 0: rt_cpu_count(); NULL if no thread starts
void rt_pool_destroy(RtPool *pool);
int rt_pool_size(const RtPool *pool);     // threads, the caller included
// Runs fn(ctx, i, count) for every i in [0, count) and returns when all are done.
void rt_pool_run(RtPool *pool, int64_t count, rt_task_fn fn, void *ctx);
// Splits [0, n) into at most one contiguous range per thread, each of at least
// `grain` iterations (except the last), and runs fn on each.
void rt_pool_parallel_for(RtPool *pool, int64_t n, int64_t grain, rt_range_fn fn, void *ctx);

//
// The trainer's flags, callbacks and loggers: the checker (compiler/sema.c) and the
// trainer read the same tables.
//
/* What a setting's value may be: a mask of these. */
enum { RTV_INT = 1, RTV_FLOAT = 2, RTV_STR = 4, RTV_BOOL = 8, RTV_LIST = 16, RTV_DICT = 32, RTV_NAME = 64, RTV_CALL = 128 };
#define RTV_NUM (RTV_INT | RTV_FLOAT)

/* Trainer flags (names and meaning as in PyTorch Lightning 2.x; `seed` and `threads` are LTL's).
 * X(name, value kinds, allowed strings separated by '|' or NULL) */
#define TRAINER_FLAGS(X)                                                             \
    X(accelerator, RTV_STR, "auto|cpu|cuda")                                           \
    X(strategy, RTV_STR, "auto|ddp")                                                   \
    X(devices, RTV_INT | RTV_STR, "auto")                                                \
    X(num_nodes, RTV_INT, NULL)                                                        \
    X(precision, RTV_STR, "64-true|32-true|bf16-mixed|16-mixed|bf16-true")             \
    X(logger, RTV_BOOL | RTV_LIST | RTV_NAME | RTV_CALL, NULL)                               \
    X(callbacks, RTV_LIST, NULL)                                                       \
    X(fast_dev_run, RTV_BOOL | RTV_INT, NULL)                                            \
    X(max_epochs, RTV_INT, NULL)                                                       \
    X(min_epochs, RTV_INT, NULL)                                                       \
    X(max_steps, RTV_INT, NULL)                                                        \
    X(min_steps, RTV_INT, NULL)                                                        \
    X(max_time, RTV_STR | RTV_DICT, NULL)                                                \
    X(limit_train_batches, RTV_NUM, NULL)                                              \
    X(limit_val_batches, RTV_NUM, NULL)                                                \
    X(limit_test_batches, RTV_NUM, NULL)                                               \
    X(limit_predict_batches, RTV_NUM, NULL)                                            \
    X(overfit_batches, RTV_NUM, NULL)                                                  \
    X(val_check_interval, RTV_NUM, NULL)                                               \
    X(check_val_every_n_epoch, RTV_INT, NULL)                                          \
    X(num_sanity_val_steps, RTV_INT, NULL)                                             \
    X(log_every_n_steps, RTV_INT, NULL)                                                \
    X(enable_checkpointing, RTV_BOOL, NULL)                                            \
    X(enable_progress_bar, RTV_BOOL, NULL)                                             \
    X(enable_model_summary, RTV_BOOL, NULL)                                            \
    X(accumulate_grad_batches, RTV_INT, NULL)                                          \
    X(gradient_clip_val, RTV_NUM, NULL)                                                \
    X(gradient_clip_algorithm, RTV_STR, "norm|value")                                  \
    X(deterministic, RTV_BOOL, NULL)                                                   \
    X(benchmark, RTV_BOOL, NULL)                                                       \
    X(inference_mode, RTV_BOOL, NULL)                                                  \
    X(profiler, RTV_STR, "simple|advanced")                                            \
    X(detect_anomaly, RTV_BOOL, NULL)                                                  \
    X(barebones, RTV_BOOL, NULL)                                                       \
    X(default_root_dir, RTV_STR, NULL)                                                 \
    X(seed, RTV_INT, NULL)                                                             \
    X(threads, RTV_INT, NULL)

/* Callbacks and loggers: X(name, "key|key|…") — the keyword arguments each accepts. */
#define CALLBACKS(X)                                                                              \
    X(checkpoint, "dirpath|filename|monitor|mode|save_top_k|save_last|every_n_epochs|"            \
                  "every_n_train_steps|save_weights_only|save_on_train_epoch_end|verbose|"        \
                  "auto_insert_metric_name")                                                      \
    X(early_stopping, "monitor|min_delta|patience|mode|check_finite|stopping_threshold|"          \
                      "divergence_threshold|verbose|strict|check_on_train_epoch_end")             \
    X(lr_monitor, "logging_interval|log_momentum")                                                \
    X(progress_bar, "refresh_rate")                                                               \
    X(model_summary, "max_depth")                                                                 \
    X(timer, "duration|interval")
#define LOGGERS(X)                                        \
    X(csv, "name|version|save_dir|flush_logs_every_n_steps") \
    X(tensorboard, "name|version|save_dir")


//
// trainer.c — the trainer's configuration: Lightning's Trainer flags (the table is
// TRAINER_FLAGS in compiler/sema.h), callbacks and loggers, as read from the `trainer`
// block and `--trainer.FLAG=VALUE` on the command line.
//

typedef enum { RT_NONE, RT_BOOL, RT_INT, RT_FLOAT, RT_STR } RtValueKind;
typedef struct { RtValueKind kind; int64_t i; double f; const char *s; } RtValue;

// A callback or logger: its name and keyword arguments.
typedef struct {
    const char *name;
    int n;
    const char *keys[16];
    RtValue vals[16];
} RtComponent;

// Lightning's limit_*_batches / overfit_batches / val_check_interval: an integer counts
// batches, a float is a fraction of the epoch.
typedef struct { double v; bool count; } RtAmount;

typedef struct RtTrainerConfig {
    const char *accelerator, *strategy, *precision, *gradient_clip_algorithm, *profiler;
    const char *default_root_dir, *max_time;
    int64_t devices, num_nodes, fast_dev_run, max_epochs, min_epochs, max_steps, min_steps;
    RtAmount limit_train_batches, limit_val_batches, limit_test_batches, limit_predict_batches;
    RtAmount overfit_batches, val_check_interval;
    int64_t check_val_every_n_epoch, num_sanity_val_steps, log_every_n_steps;
    int64_t accumulate_grad_batches, seed, threads;
    double gradient_clip_val;                  // 0: no clipping
    bool enable_checkpointing, enable_progress_bar, enable_model_summary, deterministic;
    bool benchmark, inference_mode, detect_anomaly, barebones, logger_enabled;
    RtComponent callbacks[16], loggers[4];
    int ncallbacks, nloggers;
    char *owned[256];                          // strings the configuration owns
    int nowned;
} RtTrainerConfig;

// Lightning 2.x's defaults (max_epochs 1000 when neither max_epochs nor max_steps is set,
// logger = csv, progress bar and summary on, 2 sanity validation steps).
void rt_trainer_defaults(RtTrainerConfig *c);
void rt_trainer_free(RtTrainerConfig *c);
// A copy of s owned by the configuration (NULL when it holds too many).
const char *rt_trainer_str(RtTrainerConfig *c, const char *s);
// Reads "3", "0.5", "true", "none" or else a string (command-line values).
RtValue rt_value_parse(RtTrainerConfig *c, const char *text);
// Sets one flag from a value; NULL, or a message ("'max_epochs' must be an integer").
const char *rt_trainer_set(RtTrainerConfig *c, const char *flag, const RtValue *v);
// Prints the configuration as `flag = value` lines (for --help-style dumps and tests).
void rt_trainer_print(FILE *f, const RtTrainerConfig *c);

//
// fit.c — the loops (fit, validate, test, predict) with Lightning's flags, over an
// interface the driver fills from the data pipeline, the compiled steps, the loggers and
// the checkpoint writer, so the loop's rules are tested apart from all of them.
//

typedef enum { RT_TRAIN, RT_VAL, RT_TEST, RT_PREDICT, RT_NSTAGES } RtStage;
typedef enum { RT_MEAN, RT_SUM, RT_MAX, RT_MIN } RtReduce;

// A metric a step logs (from `log(...)` in the .ltl step).
typedef struct { const char *name; bool prog_bar, on_step, on_epoch; RtReduce reduce; } RtMetricSpec;

typedef struct RtLoop {
    void *ctx;
    // Batches per epoch of a stage's loader (0: the stage has no data or no step).
    int64_t (*batches)(void *ctx, RtStage s);
    // Loads batch i of epoch `epoch`; positions are explicit so that a resumed run repeats them.
    bool (*load)(void *ctx, RtStage s, int64_t epoch, int64_t i);
    // Runs the stage's step on the loaded batch and writes its metrics (in the order of
    // specs[s]); the training step also updates the model and the optimizer state.
    bool (*step)(void *ctx, RtStage s, int64_t global_step, double *metrics);
    // One row of logged values (NULL: no logger). Epoch rows carry the epoch's aggregates.
    void (*log)(void *ctx, int64_t step, int64_t epoch, int n, const char *const *names, const double *v);
    // Progress: batch i of n of a stage (NULL: no bar).
    void (*progress)(void *ctx, RtStage s, int64_t epoch, int64_t i, int64_t n, int nm,
                     const char *const *names, const double *v);
    // Saves a checkpoint at the end of an epoch (NULL: none).
    bool (*save)(void *ctx, int64_t epoch, int64_t global_step);
    const RtMetricSpec *specs[RT_NSTAGES];
    int nspecs[RT_NSTAGES];
    char err[512];           // why a callback or the loop stopped with an error
    // Results, for the driver and the tests.
    int64_t global_step, epochs_run, val_runs, train_batches_run, sanity_batches_run;
    double last_epoch_metrics[64];   // the last epoch's aggregates of the train and val specs
} RtLoop;

// Runs a stage (fit: training with validation; validate/test/predict: one pass).
// Returns 0, or 1 with L->err set.
int rt_run(const RtTrainerConfig *c, RtLoop *L, RtStage stage);
// How many batches a limit leaves of n (Lightning's int/float rule).
int64_t rt_limit(RtAmount a, int64_t n);

#endif
