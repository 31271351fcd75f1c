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
    X(accelerator, RTV_STR, "auto|cpu|cuda|gpu")                                         \
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
    // Whether this training step updates the weights (accumulate_grad_batches), set by the loop.
    bool apply;
    // The step sets it to the number of samples of its batch: epoch means weigh each batch
    // by it, as Lightning does (0 counts as 1).
    int64_t batch_size;
    // One row of logged values (NULL: no logger). Epoch rows carry the epoch's aggregates.
    void (*log)(void *ctx, int64_t step, int64_t epoch, int n, const char *const *names, const double *v);
    // Progress: batch i of n of a stage (NULL: no bar).
    void (*progress)(void *ctx, RtStage s, int64_t epoch, int64_t i, int64_t n, int nm,
                     const char *const *names, const double *v);
    // After each training epoch and its validation (NULL: nothing), e.g. epoch schedulers.
    bool (*epoch_end)(void *ctx, int64_t epoch);
    // Saves a checkpoint (NULL: none): at the end of an epoch, every `save_every_n_steps`
    // training steps and when training stops. (epoch, batch) is where training goes on
    // from: the next batch to run (batch == the epoch's batches when the epoch is done).
    bool (*save)(void *ctx, int64_t epoch, int64_t batch, int64_t global_step);
    int64_t save_every_n_steps;      // 0: only at epoch ends
    bool saving_epoch_end;           // set for `save`: the call is the end of an epoch
    // Data-parallel training (NULL: one process). reduce combines n values over the ranks
    // in place (RT_SUM, RT_MAX, RT_MIN; RT_MEAN: the average); agree returns rank 0's flag
    // on every rank, so that all ranks stop (or go on) together.
    void (*reduce)(void *ctx, double *v, int n, RtReduce op);
    bool (*agree)(void *ctx, bool flag);
    uint64_t sync_dist[RT_NSTAGES];  // bit k: specs[stage][k] was logged with sync_dist = true
    // Where a resumed run starts (from a checkpoint): epoch, batch and global step.
    int64_t start_epoch, start_batch;
    const RtMetricSpec *specs[RT_NSTAGES];
    int nspecs[RT_NSTAGES];
    char err[512];           // why a callback or the loop stopped with an error
    // Lightning's callback_metrics: the latest value of every metric under the name it was
    // logged with (train_loss_step, train_loss_epoch, val_acc, ...).
    char metric_names[64][96];
    double metric_values[64];
    int nmetrics;
    // Why training stopped early (early_stopping), or "".
    char stop_reason[512];
    // early_stopping's state, kept in checkpoints: best score and records without improvement
    // (es_restored: set by the driver when it loaded them).
    double es_best;
    int64_t es_wait;
    bool es_restored;
    // Results, for the driver and the tests.
    // train_batches_run counts every training batch (the key of dropout's random numbers).
    int64_t global_step, epochs_run, val_runs, train_batches_run, sanity_batches_run;
    double last_epoch_metrics[64];   // the last epoch's aggregates of the train and val specs
} RtLoop;

// Runs a stage (fit: training with validation; validate/test/predict: one pass).
// Returns 0, or 1 with L->err set.
int rt_run(const RtTrainerConfig *c, RtLoop *L, RtStage stage);
// An LR scheduler as PyTorch's (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
// OneCycleLR, LinearLR warm-up, ReduceLROnPlateau), stepped per epoch or per optimizer step
// every `frequency` intervals. kind NULL: a constant rate.
typedef struct {
    const char *kind;          // "step", "multistep", "exponential", "cosine", "one_cycle",
                               // "linear_warmup", "reduce_on_plateau"
    const char *keys[12];
    RtValue vals[12];
    int n;
    bool per_step;             // interval = "step"
    int64_t frequency;
    // reduce_on_plateau's state (in checkpoints as metadata)
    double plateau_lr, plateau_best;
    int64_t plateau_wait;
} RtScheduler;
// The rate for a run of the scheduler that has stepped `t` times, from the base rate lr0.
double rt_sched_lr(const RtScheduler *s, double lr0, int64_t t);
// reduce_on_plateau: one step with the monitored value (mode min/max, factor, patience,
// threshold, min_lr as PyTorch's). Returns the new rate.
double rt_sched_plateau(RtScheduler *s, double lr0, double metric);
// Reads key from a scheduler's settings (def when absent).
double rt_sched_num(const RtScheduler *s, const char *key, double def);

// png.c: images [n, c, h, w] (c 1 or 3) as one PNG grid of nrow columns, scaled from the
// grid's minimum..maximum to 0..255 (torchvision's save_image(normalize=True)). Atomic.
bool rt_png_grid(const char *path, const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t nrow,
                 char *err, size_t errlen);

// How many batches a limit leaves of n (Lightning's int/float rule).
int64_t rt_limit(RtAmount a, int64_t n);
// The latest value of a metric (callback_metrics); false when it was never logged.
bool rt_metric(const RtLoop *L, const char *name, double *v);

//
// data.c, data_transform.c, data_loader.c — the data pipeline (docs/data.md).
//
// A data set is N samples of x (u8 or f32, one fixed sample shape such as [1, 28, 28]) and
// an optional i64 label. Errors: a function that can fail returns NULL (or -1) and, when
// err is not NULL, sets *err to one malloc'd message "FILE: problem" (free() it). The
// library never prints and never exits.
//

typedef enum { RT_DATA_U8, RT_DATA_F32, RT_DATA_I32, RT_DATA_I64 } RtDataDtype;
enum { RT_DATA_MAX_DIMS = 6 };
// Philox streams (the counter's high word) of the data pipeline; the shuffle of epoch e
// uses stream e, the transforms of epoch e stream RT_DATA_STREAM_TRANSFORM | e.
#define RT_DATA_STREAM_SPLIT (UINT64_C(1) << 62)
#define RT_DATA_STREAM_TRANSFORM (UINT64_C(1) << 63)

typedef struct RtDataset RtDataset;

// Sets *err (when not NULL) to a malloc'd message; returns NULL so that a source can
// `return rt_data_error(err, ...)` (and a function returning int `..., -1`).
void *rt_data_error(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

size_t rt_data_dtype_size(RtDataDtype t);
const char *rt_data_dtype_name(RtDataDtype t);

// Sources. Any file may be gzip'd (told by the gzip magic 1f 8b) or raw.
// IDX (MNIST): images u8 with magic 0x00000803 [N, H, W] -> samples [1, H, W] (also
// 0x802 [N, D] -> [D] and 0x804 [N, C, H, W] -> [C, H, W]); labels u8 0x00000801 [N], or
// NULL for none. num_classes > 0: every label must lie in [0, num_classes).
RtDataset *rt_data_idx(const char *images, const char *labels, int64_t num_classes, char **err);
// CSV: numeric columns, one sample a line (blank lines skipped); errors as FILE:LINE:COL.
typedef struct {
    bool header;              // the first line names the columns
    char delim;               // 0: ','
    int64_t label_col;        // the label's column; -1: no label (ignored with label_name)
    const char *label_name;   // the label's column by name (needs header)
    int64_t num_classes;      // > 0: labels must lie in [0, num_classes)
    int sample_ndim;          // 0: samples are [columns - label]; else this shape
    const int64_t *sample_shape;
} RtCsvOptions;
RtDataset *rt_data_csv(const char *path, const RtCsvOptions *opt, char **err);
// Raw little-endian arrays: x of x_dtype (U8 or F32) and shape [n, *shape] (n < 0: n
// from the file's size); labels (y_path NULL: none) of y_dtype (U8, I32, I64) [n]. The
// files must hold exactly that many bytes.
RtDataset *rt_data_raw(const char *x_path, RtDataDtype x_dtype, int64_t n, int ndim, const int64_t *shape,
                       const char *y_path, RtDataDtype y_dtype, int64_t num_classes, char **err);
// From memory (copied): x [n, *shape] of dtype U8 or F32, y [n] or NULL.
RtDataset *rt_data_from_memory(RtDataDtype dtype, int64_t n, int ndim, const int64_t *shape, const void *x,
                               const int64_t *y, int64_t num_classes, char **err);
void rt_data_free(RtDataset *ds);

int64_t rt_data_len(const RtDataset *ds);
RtDataDtype rt_data_dtype(const RtDataset *ds);                         // of x: U8 or F32
int rt_data_sample_shape(const RtDataset *ds, int64_t shape[RT_DATA_MAX_DIMS]);  // returns ndim
int64_t rt_data_sample_numel(const RtDataset *ds);
bool rt_data_has_labels(const RtDataset *ds);
// Checks ds's labels against num_classes (> 0) afterwards, as rt_data_idx(..., num_classes)
// does while reading: for a data set read before the number was known. file names the
// labels in the message. 0, or -1 with *err set.
int rt_data_check_labels(RtDataset *ds, int64_t num_classes, const char *file, char **err);
int64_t rt_data_num_classes(const RtDataset *ds);   // given, else max label + 1; 0: no labels
const char *rt_data_name(const RtDataset *ds);      // the (images) file it came from
const void *rt_data_sample(const RtDataset *ds, int64_t i);   // numel elements of the dtype
int64_t rt_data_label(const RtDataset *ds, int64_t i);        // -1 without labels
int64_t rt_data_source_index(const RtDataset *ds, int64_t i); // its index in the source file

// Subsets and splits are views sharing the samples; each is freed with rt_data_free, in
// any order. A subset of indices NULL is the first n samples.
RtDataset *rt_data_clone(const RtDataset *ds, char **err);
RtDataset *rt_data_subset(const RtDataset *ds, const int64_t *indices, int64_t n, char **err);
// torch.utils.data.random_split: sizes are k counts summing to the length, or k fractions
// summing to 1 (floor(f * N) each, the remainder one by one to the parts in order). The
// parts are consecutive runs of rt_data_permutation(N, seed, RT_DATA_STREAM_SPLIT).
int rt_data_split(const RtDataset *ds, int k, const double *sizes, uint64_t seed, RtDataset **out, char **err);
// A permutation of 0..n-1: Fisher-Yates with one Philox(seed, stream, i) draw per position.
void rt_data_permutation(int64_t n, uint64_t seed, uint64_t stream, int64_t *perm);

// Transforms: a list of primitives applied in order to each sample, on f32. Image
// primitives act on the last two dimensions [..., H, W]; normalize's channel is dimension
// -3. Random ones draw Philox(seed, RT_DATA_STREAM_TRANSFORM | epoch,
// sample << 16 | position << 8 | draw): the same for a sample whatever the thread.
typedef enum { RT_TF_SCALE, RT_TF_NORMALIZE, RT_TF_RANDOM_CROP, RT_TF_HFLIP, RT_TF_RANDOM_ERASING } RtTfKind;
typedef struct RtTransforms RtTransforms;
RtTransforms *rt_tf_new(void);
RtTransforms *rt_tf_clone(const RtTransforms *tf);
void rt_tf_free(RtTransforms *tf);
int rt_tf_count(const RtTransforms *tf);
RtTfKind rt_tf_kind(const RtTransforms *tf, int i);
// Each appends one primitive; 0, or -1 with *err for a bad argument.
int rt_tf_scale(RtTransforms *tf, float a, float b, char **err);    // x * a + b
int rt_tf_normalize(RtTransforms *tf, int nch, const float *mean, const float *std,
                    char **err);                                     // (x - mean[c]) / std[c]; nch 1: all
int rt_tf_random_crop(RtTransforms *tf, int64_t h, int64_t w, int64_t padding, char **err);  // zero pad
int rt_tf_hflip(RtTransforms *tf, double p, char **err);
int rt_tf_random_erasing(RtTransforms *tf, double p, double scale_lo, double scale_hi, double ratio_lo,
                         double ratio_hi, float value, char **err);  // torchvision: 0.5, .02, .33, .3, 3.3, 0
// The output sample shape for an input one (same ndim); -1 with *err if a primitive does not apply.
int rt_tf_output_shape(const RtTransforms *tf, int ndim, const int64_t *in, int64_t out[RT_DATA_MAX_DIMS],
                       char **err);
int64_t rt_tf_scratch_floats(const RtTransforms *tf, int ndim, const int64_t *in);
// One sample (dtype U8 or F32, a shape rt_tf_output_shape accepts) to out (f32, the output
// shape); scratch holds rt_tf_scratch_floats floats. `sample` is its index in the data set.
void rt_tf_apply(const RtTransforms *tf, RtDataDtype dtype, int ndim, const int64_t *shape, const void *in,
                 float *out, float *scratch, uint64_t seed, int64_t epoch, int64_t sample);

// The loader. Batch k of epoch e is a pure function of (data set, options, e, k): the same
// with any number of workers, and after a resume at batch k.
typedef struct {
    int64_t batch_size;
    bool shuffle;          // a new permutation each epoch: Philox(seed, stream = epoch)
    bool drop_last;        // drop the final partial batch
    uint64_t seed;         // shuffle and transforms
    int workers;           // threads assembling batches; 0: on the caller's thread
    int prefetch;          // batches ready ahead of the caller (0: 2 per worker)
    int rank, world_size;  // DistributedSampler sharding (world_size 0 or 1: none)
    int64_t limit;         // only the first `limit` batches of each epoch (0: all)
} RtLoaderOptions;

typedef struct {
    int64_t size;          // samples in this batch (B, or fewer for the last one)
    int64_t index, epoch;  // batch number within the epoch, and the epoch
    RtDataDtype dtype;     // F32 with transforms; else the data set's
    int ndim;
    int64_t shape[RT_DATA_MAX_DIMS + 1];   // [size, *sample shape]
    void *x;               // size samples
    int64_t *y;            // size labels, NULL without labels
    int64_t *indices;      // the samples' indices in the data set
} RtBatch;

typedef struct RtLoader RtLoader;
// Copies what it needs (the data set handle and the transforms); tf NULL: raw samples.
RtLoader *rt_loader_create(const RtDataset *ds, const RtTransforms *tf, const RtLoaderOptions *opt, char **err);
int64_t rt_loader_num_batches(const RtLoader *ld);     // per epoch, after drop_last and limit
int64_t rt_loader_last_batch_size(const RtLoader *ld);  // size of the final batch (B if full; 0 if none)
int64_t rt_loader_num_samples(const RtLoader *ld);     // this rank's samples per epoch (padded)
RtDataDtype rt_loader_dtype(const RtLoader *ld);

// data_text.c — text for character-level language models (docs/data.md). A character is a
// byte; the vocabulary is the text's distinct bytes in increasing order.
typedef struct {
    char *text;
    int64_t len;
    unsigned char vocab[256];   // token id -> byte
    int16_t index[256];         // byte -> token id, -1 when absent
    int nvocab;
} RtText;
RtText *rt_text_read(const char *const *paths, int n, char **err);   // the files, concatenated
void rt_text_free(RtText *t);
// Token ids of s into out (strlen(s) of them); -1 for a character outside the vocabulary.
int64_t rt_text_encode(const RtText *t, const char *s, int64_t *out, char **err);
// Every window of `length` consecutive token ids starting at multiples of `stride`: u8
// samples [length], no labels.
RtDataset *rt_text_windows(const RtText *t, int64_t length, int64_t stride, char **err);
// A batch of windows w [batch, length] as inputs x = w[:, :-1] and targets y = w[:, 1:].
void rt_text_next_token(const unsigned char *w, int64_t batch, int64_t length, int64_t *x, int64_t *y);
// A token drawn from softmax(logits / temperature) with Philox draw (seed, draw);
// temperature <= 0: the most likely one.
int64_t rt_text_sample(const double *logits, int64_t n, double temperature, uint64_t seed, uint64_t draw);
int rt_loader_sample_shape(const RtLoader *ld, int64_t shape[RT_DATA_MAX_DIMS]);  // returns ndim
// Begins epoch `epoch` at batch `start_batch` (0: the whole epoch), starting the workers.
int rt_loader_start(RtLoader *ld, int64_t epoch, int64_t start_batch, char **err);
// The next batch in order, valid until the next call; NULL at the end of the epoch.
const RtBatch *rt_loader_next(RtLoader *ld);
// Ends the epoch early: the workers are stopped and joined (also done by start and free).
void rt_loader_stop(RtLoader *ld);
void rt_loader_free(RtLoader *ld);

//
// ckpt.c — checkpoints as safetensors files (docs/checkpoints.md).
//
// A checkpoint is a list of named tensors plus string metadata, in the
// safetensors format: PyTorch opens it with safetensors.torch.load_file and no
// code runs on load. Saving is atomic (a temporary file next to the target,
// fsync, rename, fsync of the directory). Opening checks the whole header —
// length, UTF-8, JSON, dtypes, shapes, offsets, unique names, tensors tiling
// the data exactly — before anything is used. Failures return false (or
// NULL) with one message in `err` naming the file and the tensor or field; the
// library never prints or exits. `err` may be NULL.

enum { RT_CKPT_ERR_LEN = 1024, RT_CKPT_MAX_DIMS = 64 };

typedef enum {
    RT_CKPT_F32, RT_CKPT_F64, RT_CKPT_BF16, RT_CKPT_F16,
    RT_CKPT_I64, RT_CKPT_I32, RT_CKPT_U8, RT_CKPT_BOOL,
    RT_CKPT_NDTYPES
} RtCkptDtype;

// One tensor of a table: what to save, or (for rt_ckpt_load) what the model
// expects and where its bytes go. `data` holds numel * dtype size bytes,
// row-major; it may be NULL when that is 0.
typedef struct {
    const char *name;
    RtCkptDtype dtype;
    int ndim;                  // 0 (a scalar) .. RT_CKPT_MAX_DIMS
    const int64_t *shape;
    void *data;
} RtCkptTensor;

typedef struct {
    const char *key, *value;   // UTF-8 strings
} RtCkptMeta;

// A tensor found in a file; offsets count from the end of the header.
typedef struct {
    const char *name;
    RtCkptDtype dtype;
    int ndim;
    const int64_t *shape;
    uint64_t numel, nbytes;
    uint64_t begin;            // data_offsets = [begin, begin + nbytes]
} RtCkptInfo;

typedef struct RtCkpt RtCkpt;

const char *rt_ckpt_dtype_name(RtCkptDtype dt);            // "F32", ...; "?" if unknown
size_t rt_ckpt_dtype_size(RtCkptDtype dt);                 // bytes per element; 0 if unknown
bool rt_ckpt_dtype_parse(const char *name, RtCkptDtype *out);
// "F32[128, 784]" ("F32[]" for a scalar) into buf; returns the full length.
size_t rt_ckpt_shape_str(RtCkptDtype dt, int ndim, const int64_t *shape, char *buf, size_t n);

// Writes the checkpoint to `path` atomically: on failure the previous file, if
// any, is unchanged and no temporary file is left. Tensors are laid out
// largest element first (each aligned to its element size); metadata is
// written in the order given.
bool rt_ckpt_save(const char *path, const RtCkptTensor *t, size_t nt, const RtCkptMeta *meta, size_t nmeta,
                  char err[RT_CKPT_ERR_LEN]);
// The same file image in memory (*out is malloc'd; free it).
bool rt_ckpt_encode(const RtCkptTensor *t, size_t nt, const RtCkptMeta *meta, size_t nmeta, void **out,
                    size_t *size, char err[RT_CKPT_ERR_LEN]);

// Opens and checks a checkpoint; tensor data is read later, on demand.
RtCkpt *rt_ckpt_open(const char *path, char err[RT_CKPT_ERR_LEN]);
// The same over a file image in memory, which must outlive the RtCkpt;
// `label` names it in messages.
RtCkpt *rt_ckpt_open_memory(const void *data, size_t size, const char *label, char err[RT_CKPT_ERR_LEN]);
void rt_ckpt_close(RtCkpt *ck);

// What is inside: tensors in data order, metadata in header order.
size_t rt_ckpt_count(const RtCkpt *ck);
const RtCkptInfo *rt_ckpt_tensor(const RtCkpt *ck, size_t i);          // NULL past the end
const RtCkptInfo *rt_ckpt_find(const RtCkpt *ck, const char *name);    // NULL if absent
size_t rt_ckpt_meta_count(const RtCkpt *ck);
const RtCkptMeta *rt_ckpt_meta(const RtCkpt *ck, size_t i);
const char *rt_ckpt_meta_get(const RtCkpt *ck, const char *key);      // NULL if absent
uint64_t rt_ckpt_header_size(const RtCkpt *ck);                        // N, the JSON's bytes
uint64_t rt_ckpt_data_size(const RtCkpt *ck);

// Copies one tensor's nbytes into dst. Thread-safe (pread).
bool rt_ckpt_read(const RtCkpt *ck, const RtCkptInfo *t, void *dst, char err[RT_CKPT_ERR_LEN]);

// Resume: checks the file against the model's table first — names, dtypes and
// shapes — and reports every missing, unexpected or mis-shaped tensor by name
// in one message, copying nothing; when all match, copies each tensor into its
// `data`. Tensors missing from the file are left untouched when allowed.
enum { RT_CKPT_ALLOW_MISSING = 1, RT_CKPT_ALLOW_UNEXPECTED = 2 };
bool rt_ckpt_load(const RtCkpt *ck, const RtCkptTensor *model, size_t n, unsigned flags,
                  char err[RT_CKPT_ERR_LEN]);

//
// logger.c — the trainer's outputs (Lightning's loggers): run folders, metrics.csv,
// hparams.yaml and the logger front the trainer calls; tb.c — TensorBoard event files;
// plot.c — curves.svg. See docs/logging.md.
//
// Errors: functions return -1 (or NULL) and leave one message for rt_log_error().

const char *rt_log_error(void);           // the last error of this thread ("" if none)
int rt_log_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));   // returns -1

// Python's repr() of a number (the text Lightning's CSV files hold: 0.5, 1e-05, 100.0,
// nan, inf), with the shortest digits that read back as the same float32 when v is exactly
// a float32 (a loss computed in f32), else as the same double. Returns strlen.
int rt_log_fmt_num(char *buf, size_t size, double v);
// Writes a file whole or not at all: PATH.tmp.PID, fsync, rename. 0 or -1.
int rt_log_write_atomic(const char *path, const void *data, size_t len);

// Run folders: ROOT/NAME/version_N ("" or NULL NAME: ROOT/version_N). version < 0 picks
// Lightning's next version (1 + the largest existing version_N, 0 if none); the folder is
// created with mkdir and, if another run took that number first, the next one is tried,
// so two runs started together never share a folder. version >= 0 reuses that folder.
// Writes the folder's path into out and returns its version, or -1.
int rt_run_dir(const char *root, const char *name, int version, char *out, size_t outsz);
int rt_next_version(const char *root, const char *name);   // the version rt_run_dir would pick

// Hyperparameters. Dotted keys make nested maps ("model.hidden" → model: {hidden: …});
// keys keep the order they were first set in; setting a key again replaces its value.
typedef struct RtHparams RtHparams;
RtHparams *rt_hparams_new(void);
void rt_hparams_free(RtHparams *h);
void rt_hparams_int(RtHparams *h, const char *key, int64_t v);
void rt_hparams_float(RtHparams *h, const char *key, double v);
void rt_hparams_bool(RtHparams *h, const char *key, bool v);
void rt_hparams_str(RtHparams *h, const char *key, const char *v);   // NULL: null
// A value as typed on the command line (--model.hidden=512): an integer, a number,
// true/false, none/null, or else a string.
void rt_hparams_parse(RtHparams *h, const char *key, const char *text);
char *rt_hparams_yaml(const RtHparams *h);                 // YAML text (malloc'd)
char *rt_hparams_markdown(const RtHparams *h);             // a | key | value | table (malloc'd)
int rt_hparams_save(const RtHparams *h, const char *path); // atomically

// CSV logger (Lightning's CSVLogger): DIR/metrics.csv, one row per rt_csv_log call; the
// header holds every key seen so far plus epoch and step, sorted as Lightning sorts them;
// missing values are empty cells. Rows are kept in memory and written every
// flush_every_n_steps steps (each time step + 1 passes a multiple of n), at rt_csv_flush
// and at close: appended when the header is unchanged, else the whole file is rewritten
// atomically with the wider header. No row logged: no file (as Lightning).
typedef struct RtCsvLogger RtCsvLogger;
RtCsvLogger *rt_csv_open(const char *dir, int flush_every_n_steps);   // <= 0: 100
int rt_csv_log(RtCsvLogger *c, int64_t step, int64_t epoch, int n,
               const char *const *names, const double *v);
int rt_csv_flush(RtCsvLogger *c);
int rt_csv_close(RtCsvLogger *c);          // flushes and frees; 0 or -1

// The logger front: one run folder for all loggers (ROOT/NAME/version_N), hparams.yaml,
// metrics.csv, a TensorBoard event file and curves.svg at the end.
typedef struct {
    const char *root;          // default_root_dir; NULL: "."
    const char *name;          // NULL: "lightning_logs"; "": no NAME level
    int version;               // < 0: the next free version
    bool csv, tensorboard, plot;
    int flush_every_n_steps;   // <= 0: 100 (Lightning's flush_logs_every_n_steps)
} RtLoggerConfig;
typedef struct RtLogger RtLogger;
RtLogger *rt_logger_open(const RtLoggerConfig *cfg);
const char *rt_logger_dir(const RtLogger *lg);   // ROOT/NAME/version_N
int rt_logger_version(const RtLogger *lg);
// hparams.yaml in the run folder (and the table as TensorBoard text).
int rt_logger_hparams(RtLogger *lg, const RtHparams *h);
// One row of metrics at a global step (the epoch goes in as the metric `epoch`).
int rt_logger_log(RtLogger *lg, int64_t step, int64_t epoch, int n,
                  const char *const *names, const double *v);
// Writes what is buffered and curves.svg so far (the trainer calls it at each epoch end).
int rt_logger_flush(RtLogger *lg);
// Flushes everything, writes curves.svg (if plot), frees. 0, or -1 if anything failed.
int rt_logger_close(RtLogger *lg);

//
// tb.c — TensorBoard event files: TFRecords (length, masked CRC-32C, Event protobuf,
// masked CRC-32C) written by a small hand-written protobuf encoder.
//
uint32_t rt_crc32c(uint32_t crc, const void *data, size_t n);   // start with crc = 0
typedef struct RtTbWriter RtTbWriter;
// DIR/events.out.tfevents.<time>.<host>.<pid>.<k>; the first record is the file_version event.
RtTbWriter *rt_tb_open(const char *dir);
const char *rt_tb_path(const RtTbWriter *w);
// wall_time <= 0: now. Buffered; rt_tb_flush hands the records to the OS.
int rt_tb_scalar(RtTbWriter *w, const char *tag, double value, int64_t step, double wall_time);
int rt_tb_text(RtTbWriter *w, const char *tag, const char *markdown, int64_t step, double wall_time);
int rt_tb_flush(RtTbWriter *w);
int rt_tb_close(RtTbWriter *w);

//
// plot.c — curves.svg: one panel per metric, axes with ticks, a polyline, a legend.
//
typedef struct {
    const char *name;          // the metric: panel title and legend
    const char *xlabel;        // "step" or "epoch"
    const double *x, *y;       // n points (non-finite y values break the line)
    int n;
} RtPlotSeries;
char *rt_plot_svg(const char *title, const RtPlotSeries *s, int n);   // SVG text (malloc'd)
int rt_plot_save(const char *path, const char *title, const RtPlotSeries *s, int n);

//
// progress.c — Lightning's TQDM progress bar. On a terminal one line redrawn with \r
// (a second one during validation); elsewhere a plain line every 10% or 30 s. The
// formatting functions are pure, the I/O is in RtProgress.
//
// tqdm's format_interval: "mm:ss", or "h:mm:ss" past an hour.
void rt_fmt_interval(char *buf, size_t size, double seconds);
// tqdm's format_num (how a postfix value is shown): the shorter of "%.3g" and repr.
void rt_fmt_tqdm_num(char *buf, size_t size, double v);
typedef struct {
    const char *desc;          // "Epoch 3/9", "Validation DataLoader 0"
    int64_t n, total;          // total <= 0: unknown
    double elapsed;            // seconds
    const char *postfix;       // "train_loss=0.412, val_acc=0.871" or NULL
    int width;                 // terminal columns: the bar fills the line; <= 0: a 10-cell bar
    bool bar;                  // false: the plain form (no bar cells)
} RtBar;
// One line, no \r or newline. Returns strlen (truncated to size - 1 like snprintf).
int rt_bar_format(char *buf, size_t size, const RtBar *b);

typedef enum { RT_PROGRESS_AUTO, RT_PROGRESS_TTY, RT_PROGRESS_PLAIN, RT_PROGRESS_OFF } RtProgressMode;
// Every field may be left 0 (a zero-initialised config gives Lightning's defaults).
typedef struct {
    FILE *out;                 // NULL: stdout (as Lightning)
    RtProgressMode mode;       // AUTO: TTY if isatty(out), else PLAIN
    int refresh_rate;          // redraw every N batches (Lightning's refresh_rate); <= 0: 1
    double min_interval;       // terminal: seconds between redraws (tqdm's mininterval); 0: 0.1, < 0: none
    int width;                 // <= 0: the terminal's (TIOCGWINSZ), then $COLUMNS, then 80
    int plain_percent;         // plain: a line every this many percent; <= 0: 10
    double plain_seconds;      // plain: and at least this often; <= 0: 30
    bool leave;                // terminal: keep each epoch's final line
    double (*clock)(void);     // seconds; NULL: CLOCK_MONOTONIC
} RtProgressConfig;
typedef struct RtProgress RtProgress;
RtProgress *rt_progress_new(const RtProgressConfig *cfg);
void rt_progress_free(RtProgress *p);
// Postfix values, shown in the order first set (v_num first, as Lightning).
void rt_progress_metric(RtProgress *p, const char *name, double v);
void rt_progress_metric_str(RtProgress *p, const char *name, const char *text);
void rt_progress_train_start(RtProgress *p, int64_t epoch, int64_t max_epochs, int64_t total);
void rt_progress_train_update(RtProgress *p, int64_t n);      // n batches done
void rt_progress_train_end(RtProgress *p);                     // end of the epoch
// sanity: Lightning's "Sanity Checking" bar before training.
void rt_progress_val_start(RtProgress *p, int64_t total, bool sanity);
void rt_progress_val_update(RtProgress *p, int64_t n);
void rt_progress_val_end(RtProgress *p);
void rt_progress_finish(RtProgress *p);                        // end of fit: ends the line
// A message line (a checkpoint saved, early stopping) printed above the bar, which is
// then drawn again (tqdm.write); a plain line elsewhere, even when the bar is off.
void rt_progress_print(RtProgress *p, const char *line);

//
// summary.c — Lightning's ModelSummary table.
//
typedef struct {
    const char *name, *type;   // "l1", "Linear"
    int64_t params;
    const char *out_shape;     // "[B, 128]"; NULL in every row: no Out sizes column
    bool trainable;
} RtSummaryRow;
// Lightning's get_human_readable_count: "0  ", "512  ", "2.6 K", "101 K", "1.2 M".
void rt_fmt_param_count(char *buf, size_t size, int64_t count);
// The table and the totals (model size = params * bytes_per_param / 1e6; <= 0: 4). malloc'd.
char *rt_summary_format(const RtSummaryRow *rows, int n, double bytes_per_param);

//
// dist.c — collectives for data-parallel training (docs/distributed.md). One process is
// one rank; the launcher (mpirun, srun, or ltlc itself) says which in the environment. MPI
// (OpenMPI's libmpi, dlopened) does every collective (on GPUs the executor's NCCL reduces
// the step's gradients: compiler/cuda_nccl.c). Before rt_dist_init, and in a world of one, every
// collective is a no-op. A collective that fails ends the whole job (rt_dist_abort).
//
typedef enum { RT_DIST_NONE, RT_DIST_MPI } RtDistBackend;
typedef enum { RT_DIST_F32, RT_DIST_F64 } RtDistDtype;
typedef enum { RT_DIST_SUM, RT_DIST_MEAN, RT_DIST_MAX, RT_DIST_MIN } RtDistOp;
// The rank, world size and rank on this node a launcher set in the environment
// (OMPI_COMM_WORLD_*, PMIX_*, PMI_*, SLURM_*); false (0, 1, 0) when none did.
bool rt_dist_env(int *rank, int *size, int *local_rank);
// Joins the world (MPI_Init). 0, or -1 with a message.
int rt_dist_init(RtDistBackend backend, char *err, size_t errlen);
int rt_dist_rank(void);                   // 0 when not initialised
int rt_dist_size(void);                   // 1 when not initialised
RtDistBackend rt_dist_backend(void);
int rt_dist_broadcast(void *buf, size_t bytes, int root);
// In place over n elements; MEAN is the sum divided by the world size.
int rt_dist_allreduce(void *buf, int64_t n, RtDistDtype t, RtDistOp op);
int rt_dist_barrier(void);
bool rt_dist_agree(bool flag);            // rank 0's flag, on every rank
// Prints "ltlc: rank R of N: MESSAGE; stopping all ranks" and ends the job (MPI_Abort).
_Noreturn void rt_dist_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// The watchdog times `what` (a collective the runtime does not run itself, e.g. a GPU step's
// NCCL all-reduce) from now, as its own collectives; NULL: it is over.
void rt_dist_watch(const char *what);
void rt_dist_finalize(void);

#endif
