/* sema.h — semantic analysis: checks of the configuration (sema.c) and the model traced
 * into step graphs (lower.c). */
#ifndef LTL_SEMA_H
#define LTL_SEMA_H
#include "front.h"
#include "ir.h"
#include "rt.h"  /* TRAINER_FLAGS, CALLBACKS, LOGGERS */

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
    RtScheduler sched;   /* `scheduler` / `schedulers[name]`; kind NULL: none */
} OptGroup;
/* A sub-module of the root model: "l1", "Linear", and the shape its first call returned. */
typedef struct { const char *name, *type, *out; } SubModule;
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
    SubModule subs[64];  /* the root's sub-modules */
    int nsubs;
} StepGraph;
typedef struct {
    bool check;          /* symbolic dimensions: ltlc check / emit */
    int64_t batch;       /* otherwise: the batch size bound to B */
    bool backward;       /* training_step: append gradients and optimizer updates */
    uint64_t seed;
    /* gradient_clip_val (0: none) by norm, or by value; accumulate_grad_batches (> 1: the
     * step adds its gradient to a buffer and updates only when its DATA input "apply" is 1) */
    double clip_val;
    bool clip_by_value;
    int64_t accumulate;
    const char *precision; /* the trainer's precision (NULL: "32-true"); see ir_precision.c */
    bool ddp;            /* average the gradients over the ranks (docs/distributed.md) */
    /* hyperparameter overrides "model.hidden1=64", "data.batch=128" (a bare name is the model's) */
    const char *const *overrides;
    int noverrides;
    /* run mode, sizes known once the data is read: named ones (data.vocab_size), and the
     * shape of one sample of the step's first two inputs (rank 0: unknown), which binds a
     * symbol such as T in x: i64[B, T] */
    Sym binds[8];
    int nbinds;
    struct { int rank; int64_t d[8]; } sample[2];
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

/* Where `use NAME` (dots for folders) in the file at `from` is found: next to that file, else
 * in the standard library ($LTL_STDLIB or the built-in folder). Sets *local and *lib to both
 * candidates (malloc'd, for messages) and returns the readable one of them, or NULL. */
const char *sema_use_path(const char *from, const char *name, char **local, char **lib);

/* The trainer block (with top-level constants evaluated) and `trainer.FLAG=VALUE`
 * overrides, into the runtime's configuration. false after errors (reported). */
bool sema_trainer_config(const Node *program, const char *path, const char *const *overrides,
                         int noverrides, RtTrainerConfig *out);

/* The data module as the runtime needs it: each stage's source as written (idx, split,
 * csv, …, which the driver turns into data sets), the transforms compiled to the data
 * pipeline's primitives, and the loader's options. */
typedef struct DataExpr DataExpr;
typedef struct {
    enum { DA_NUM, DA_STR, DA_LIST, DA_EXPR, DA_STRS } kind;
    double num;
    const char *str;
    const char *strs[16];  /* DA_STRS: a list of strings (nlist of them) */
    double list[16];
    int nlist;
    DataExpr *expr;
} DataArg;
struct DataExpr {
    const char *fn;      /* "idx", "split", "csv", "raw", "part" (part `part` of args[0]) */
    int64_t part;
    int n;
    const char *keys[8]; /* NULL for positional arguments */
    DataArg args[8];
};
typedef enum { TF_SCALE, TF_NORMALIZE, TF_RANDOM_CROP, TF_HFLIP, TF_RANDOM_ERASING } TfKind;
typedef struct { TfKind kind; double a, b, c, d; } TfStep;  /* scale: x*a+b; normalize: mean a, std b; crop: size a, padding b; flip/erase: p a */
typedef struct {
    const char *name;
    DataExpr *source[4];        /* train, val, test, predict (NULL: none) */
    TfStep eval_tf[16], train_tf[16];
    int neval_tf, ntrain_tf;
    int64_t batch;
    bool shuffle, drop_last;
    int workers, prefetch;
    DataExpr exprs[64];
    int nexprs;
    bool next_token;            /* transform(w) = (w[:-1], w[1:]): inputs and next-token targets */
    const char *sizes[4];       /* members that are a text vocabulary's size (chars(text).size) */
    int nsizes;
    RtTrainerConfig strings;    /* owns the strings */
} DataPlan;
bool sema_data_plan(const Node *program, const char *path, const SemaOptions *opt, DataPlan *out);
void sema_data_free(DataPlan *dp);

/* sema.c */
/* Checks what can be checked without types: trainer flags, callbacks and loggers (unknown
 * names get a "did you mean" hint), duplicate declarations. Errors go to diag. */
void sema_check_config(const Node *program);

#endif
