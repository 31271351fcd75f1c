/* sema.h — semantic analysis. The trainer's flags, callbacks and loggers are tables here
 * because the checker and (later) the runtime both read them. */
#ifndef LTL_SEMA_H
#define LTL_SEMA_H
#include "front.h"
#include "ir.h"

/* What a setting's value may be: a mask of these. */
enum { V_INT = 1, V_FLOAT = 2, V_STR = 4, V_BOOL = 8, V_LIST = 16, V_DICT = 32, V_NAME = 64, V_CALL = 128 };
#define V_NUM (V_INT | V_FLOAT)

/* Trainer flags (names and meaning as in PyTorch Lightning 2.x; `seed` and `threads` are LTL's).
 * X(name, value kinds, allowed strings separated by '|' or NULL) */
#define TRAINER_FLAGS(X)                                                             \
    X(accelerator, V_STR, "auto|cpu|cuda")                                           \
    X(strategy, V_STR, "auto|ddp")                                                   \
    X(devices, V_INT | V_STR, "auto")                                                \
    X(num_nodes, V_INT, NULL)                                                        \
    X(precision, V_STR, "64-true|32-true|bf16-mixed|16-mixed|bf16-true")             \
    X(logger, V_BOOL | V_LIST | V_NAME | V_CALL, NULL)                               \
    X(callbacks, V_LIST, NULL)                                                       \
    X(fast_dev_run, V_BOOL | V_INT, NULL)                                            \
    X(max_epochs, V_INT, NULL)                                                       \
    X(min_epochs, V_INT, NULL)                                                       \
    X(max_steps, V_INT, NULL)                                                        \
    X(min_steps, V_INT, NULL)                                                        \
    X(max_time, V_STR | V_DICT, NULL)                                                \
    X(limit_train_batches, V_NUM, NULL)                                              \
    X(limit_val_batches, V_NUM, NULL)                                                \
    X(limit_test_batches, V_NUM, NULL)                                               \
    X(limit_predict_batches, V_NUM, NULL)                                            \
    X(overfit_batches, V_NUM, NULL)                                                  \
    X(val_check_interval, V_NUM, NULL)                                               \
    X(check_val_every_n_epoch, V_INT, NULL)                                          \
    X(num_sanity_val_steps, V_INT, NULL)                                             \
    X(log_every_n_steps, V_INT, NULL)                                                \
    X(enable_checkpointing, V_BOOL, NULL)                                            \
    X(enable_progress_bar, V_BOOL, NULL)                                             \
    X(enable_model_summary, V_BOOL, NULL)                                            \
    X(accumulate_grad_batches, V_INT, NULL)                                          \
    X(gradient_clip_val, V_NUM, NULL)                                                \
    X(gradient_clip_algorithm, V_STR, "norm|value")                                  \
    X(deterministic, V_BOOL, NULL)                                                   \
    X(benchmark, V_BOOL, NULL)                                                       \
    X(inference_mode, V_BOOL, NULL)                                                  \
    X(profiler, V_STR, "simple|advanced")                                            \
    X(detect_anomaly, V_BOOL, NULL)                                                  \
    X(barebones, V_BOOL, NULL)                                                       \
    X(default_root_dir, V_STR, NULL)                                                 \
    X(seed, V_INT, NULL)                                                             \
    X(threads, V_INT, NULL)

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

/* lower.c: the model traced into one IR graph per step (see docs/semantics.md). */
typedef enum { INIT_UNIFORM, INIT_NORMAL, INIT_CONST } InitDist;
typedef struct {
    const char *name;    /* "l1.weight" */
    int id;              /* its INPUT node */
    bool trainable;      /* param (true) or buffer (false) */
    InitDist dist;
    double a, b;         /* uniform [a, b), normal (mean a, std b), const a */
} ParamInit;
typedef struct {
    const char *name;
    int id;              /* the logged value (a scalar) */
    bool prog_bar, on_step, on_epoch, sync_dist;
    const char *reduce_fx;
} LogSpec;
typedef struct {
    const char *name;    /* "" for the single optimizer, the sub-module for `optimizers` */
    const char *kind;    /* "adam", "adamw", "sgd" */
    int lr;              /* its DATA input (schedulers change it between steps) */
    int loss;
    double lr0;          /* the configured learning rate */
} OptGroup;
/* A symbolic dimension of check mode and the prime that stands for it. */
typedef struct { const char *name; int64_t value; } Sym;
typedef struct {
    IrGraph *g;
    const char *step;
    int data[8], ndata;  /* DATA inputs for the step's parameters, in order */
    int loss;            /* training_step: the loss (the sum over groups); else -1 */
    int output;          /* predict_step / forward: the result; else -1 */
    ParamInit *params; int nparams;
    LogSpec *logs; int nlogs;
    OptGroup *groups; int ngroups;
    char *model;         /* the root model's name */
    Sym syms[32]; int nsyms;
} StepGraph;
typedef struct {
    bool check;          /* symbolic dimensions: ltlc check / emit */
    int64_t batch;       /* otherwise: the batch size bound to B */
    bool backward;       /* training_step: append gradients and optimizer updates */
    uint64_t seed;
    /* hyperparameter overrides "model.hidden1=64", "data.batch=128" (a bare name is the model's) */
    const char *const *overrides;
    int noverrides;
} SemaOptions;
/* Lowers `step` ("training_step", "validation_step", "forward", …) of the file's root model
 * (the last model with a training_step). NULL after errors (reported), or when the model
 * has no such method and `must` is false. */
StepGraph *sema_lower(const Node *program, const char *path, const char *step,
                      const SemaOptions *opt, bool must);
void sema_step_free(StepGraph *s);
/* Constant folding, algebra, CSE and dead-code elimination (ir_simplify), keeping the
 * StepGraph's ids valid. */
void sema_simplify(StepGraph *s);
/* text (an IR listing, a message) with the primes of symbolic dimensions named again. */
char *sema_render(const StepGraph *s, const char *text);
/* Every step of the root model, lowered in check mode: the shape check of `ltlc check`. */
void sema_check_steps(const Node *program, const char *path);

/* sema.c */
/* Checks what can be checked without types: trainer flags, callbacks and loggers (unknown
 * names get a "did you mean" hint), duplicate declarations. Errors go to diag. */
void sema_check_config(const Node *program);

#endif
