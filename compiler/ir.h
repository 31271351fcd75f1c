/* ir.h — the tensor-graph IR: graph and builders, reference interpreter, autodiff,
 * optimizer updates, simplification passes, Philox.  The one header of the IR layer;
 * declarations are grouped by the file that defines them.  docs/ir.md explains the design.
 *
 * A graph is a list of nodes in SSA form; a node is one value, named by its index (its
 * "id", printed %id).  Operands always have smaller ids than their users, so the node list
 * is already a topological order and every pass is a forward (or, for autodiff, backward)
 * walk.  Shapes are concrete: symbolic dimensions are resolved before lowering.
 */
#ifndef LTL_IR_H
#define LTL_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define IR_MAX_RANK 8

typedef enum {
#define OP(id, name, arity, shape, deriv, kernel) IR_##id,
#include "ir_ops.def"
#undef OP
  IR_NOPS
} IrOp;

typedef enum { IR_F64, IR_F32, IR_BF16, IR_F16, IR_I64, IR_I32, IR_U8, IR_BOOL, IR_NDTYPES } IrDtype;

typedef struct {
  int rank;
  int64_t d[IR_MAX_RANK];
} IrShape;

/* What an INPUT node is.  Each kind lives in its own flat buffer at run time (ir_layout). */
typedef enum {
  IR_IN_PARAM,  /* trainable parameter */
  IR_IN_BUFFER, /* non-trainable model state: BatchNorm running statistics */
  IR_IN_STATE,  /* optimizer state: momentum, Adam moments, step counters */
  IR_IN_DATA,   /* fed every step: batch tensors, targets, step number, learning rate */
  IR_IN_GRAD,   /* a gradient fed from outside (accumulated, all-reduced) to an update graph */
  IR_NINKINDS
} IrInputKind;

/* What a graph output is.  UPDATE outputs carry the id of the INPUT they replace, so a
 * runtime can write them back into the same slot of the same flat buffer. */
typedef enum {
  IR_OUT_VALUE,  /* a named result: loss, logged metric, prediction */
  IR_OUT_GRAD,   /* gradient of a parameter (target = the parameter) */
  IR_OUT_UPDATE, /* new value of a param / buffer / state input (target = that input) */
} IrOutKind;

/* Attributes: one plain struct for every op; each op reads the fields its rule names. */
typedef struct {
  int naxes, axes[IR_MAX_RANK]; /* reductions: reduced axes (sorted); permute: the permutation */
  bool keepdim;                 /* reductions, argmax */
  int axis;                     /* softmax, log_softmax, argmax, concat, take, gather */
  int64_t kernel[2], stride[2], pad[2], dil[2]; /* conv2d (kernel unused), pooling (dil unused) */
  int groups;                   /* conv2d */
  bool count_include_pad;       /* avg_pool2d, as PyTorch (default true) */
  int64_t start[IR_MAX_RANK], stop[IR_MAX_RANK], step[IR_MAX_RANK]; /* slice, per axis */
  int64_t lo[IR_MAX_RANK], hi[IR_MAX_RANK];                         /* pad, per axis */
  double value;  /* const fill, pad fill, leaky_relu slope, label smoothing, dropout p,
                    rand_uniform low / rand_normal mean */
  double value2; /* rand_uniform high / rand_normal std */
  uint64_t seed; /* dropout, rand_*: the Philox key */
  int64_t n;     /* one_hot: number of classes */
  IrDtype dtype; /* cast, one_hot, rand_*: the result dtype */
  IrShape shape; /* reshape / broadcast / rand target; *_bwd, slice_scatter, take_grad,
                    scatter_add: the shape of the forward operand */
} IrAttr;

typedef struct {
  IrOp op;
  IrDtype dtype;
  IrShape shape;
  int nin;
  int *in; /* operand ids, each smaller than this node's id */
  IrAttr a;
  /* INPUT */
  IrInputKind kind;
  const char *name;
  /* CONST: numel(shape) values when data is set, else every element is a.value.  Kept as
   * given (a literal's double value) and rounded to dtype when run, so the f64 interpreter
   * sees 0.1, not f32's 0.100000001. */
  const double *data;
  int line, col; /* source position for diagnostics; 0 when unknown */
} IrNode;

typedef struct {
  int value;
  IrOutKind kind;
  int target; /* GRAD: the param; UPDATE: the input replaced; VALUE: -1 */
  const char *name;
} IrOutput;

typedef struct IrArena IrArena;

typedef struct {
  IrNode *node;
  int n, cap;
  IrOutput *out;
  int nout, outcap;
  int line, col; /* stamped on each new node: see ir_set_loc */
  char err[512]; /* the last builder error */
  IrArena *arena; /* names, operand lists, constant data */
  int gemm16;     /* IR_BF16 / IR_F16: GEMM and conv operands built from now on are rounded to it */
  bool round16;   /* bf16-true: every f32 result built from now on is rounded to bf16 */
} IrGraph;

/* One slot of a flat buffer: where an input of some kind lives in that kind's buffer. */
typedef struct {
  const char *name;
  IrDtype dtype;
  IrShape shape;
  int64_t offset; /* bytes from the buffer start, 64-byte aligned */
  int64_t bytes;
  int value;      /* the INPUT node */
} IrSlot;

typedef struct {
  IrSlot *slot;
  int n;
  int64_t bytes; /* total size of the buffer */
} IrLayout;

/* ---- ir.c: graph, dtypes, shapes, printing, flat layout ---- */
IrGraph *ir_new(void);
void ir_free(IrGraph *g);
void ir_set_loc(IrGraph *g, int line, int col); /* position stamped on nodes built next */
const char *ir_error(const IrGraph *g);         /* message of the last failed builder call */
int ir_fail(IrGraph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3))); /* -1 */
void *ir_alloc(IrGraph *g, size_t bytes);       /* zeroed, freed with the graph */
const char *ir_strdup(IrGraph *g, const char *s);
const char *ir_op_name(IrOp op);
int ir_op_arity(IrOp op);
const char *ir_dtype_name(IrDtype t);
int ir_dtype_size(IrDtype t);
bool ir_dtype_is_float(IrDtype t);
IrShape ir_shapev(int rank, const int64_t *d);
#define IR_SHAPE(...) ir_shapev((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), \
                                (int64_t[]){__VA_ARGS__})
#define IR_SCALAR ((IrShape){0})
int64_t ir_numel(IrShape s);
bool ir_shape_eq(IrShape a, IrShape b);
char *ir_shape_str(IrDtype t, IrShape s, char *buf, size_t size); /* "f32[64, 128]" */
double ir_round(IrDtype t, double x);  /* the nearest value representable in t */
double ir_load(IrDtype t, const void *base, int64_t i);   /* element i of a host buffer */
void ir_store(IrDtype t, void *base, int64_t i, double x);
bool ir_attr_eq(const IrAttr *a, const IrAttr *b);
int ir_output(IrGraph *g, int value, IrOutKind kind, int target, const char *name);
int ir_find_input(const IrGraph *g, const char *name); /* -1 when absent */
void ir_print(FILE *f, const IrGraph *g); /* "%5 = matmul %3, %4 : f32[64, 128]" per line */
void ir_print_node(FILE *f, const IrGraph *g, int id);
IrLayout ir_layout(const IrGraph *g, IrInputKind kind);
void ir_layout_free(IrLayout *l);

/* ---- ir_build.c: builders with shape checks, and the shape rules of the op table ----
 * Every builder returns the new value's id, or -1 with a message (ir_error).  Axes may be
 * negative (counted from the end).  Operands of different dtypes are promoted as PyTorch
 * does (bool < integers < floats; wider wins) by explicit cast nodes. */
/* Appends a node, running the op's shape rule: the generic builder every ir_* uses.
 * Returns the new id, or -1 with the message in ir_error(g).  An operand of -1 (an earlier
 * failure) makes it return -1 without a new message, so whole expressions can be built
 * and checked once. */
int ir_make(IrGraph *g, IrOp op, const int *in, int nin, const IrAttr *a);
int ir_input(IrGraph *g, IrInputKind kind, const char *name, IrDtype t, IrShape s);
int ir_const(IrGraph *g, double v, IrDtype t, IrShape s);  /* every element v */
int ir_scalar(IrGraph *g, double v, IrDtype t);          /* a rank-0 constant */
int ir_const_data(IrGraph *g, IrDtype t, IrShape s, const double *v); /* copied */
int ir_unary(IrGraph *g, IrOp op, int a);
int ir_binary(IrGraph *g, IrOp op, int a, int b);
int ir_neg(IrGraph *g, int a);
int ir_abs(IrGraph *g, int a);
int ir_sign(IrGraph *g, int a);
int ir_exp(IrGraph *g, int a);
int ir_log(IrGraph *g, int a);
int ir_sqrt(IrGraph *g, int a);
int ir_rsqrt(IrGraph *g, int a);
int ir_tanh(IrGraph *g, int a);
int ir_sigmoid(IrGraph *g, int a);
int ir_erf(IrGraph *g, int a);
int ir_relu(IrGraph *g, int a);
int ir_gelu(IrGraph *g, int a); /* erf form, PyTorch's default */
int ir_leaky_relu(IrGraph *g, int a, double slope);
int ir_cast(IrGraph *g, int a, IrDtype t);
int ir_detach(IrGraph *g, int a);
int ir_add(IrGraph *g, int a, int b);
int ir_sub(IrGraph *g, int a, int b);
int ir_mul(IrGraph *g, int a, int b);
int ir_div(IrGraph *g, int a, int b); /* integer operands divide as floats, like PyTorch */
int ir_pow(IrGraph *g, int a, int b);
int ir_maximum(IrGraph *g, int a, int b);
int ir_minimum(IrGraph *g, int a, int b);
int ir_eq(IrGraph *g, int a, int b);
int ir_ne(IrGraph *g, int a, int b);
int ir_lt(IrGraph *g, int a, int b);
int ir_le(IrGraph *g, int a, int b);
int ir_gt(IrGraph *g, int a, int b);
int ir_ge(IrGraph *g, int a, int b);
int ir_where(IrGraph *g, int cond, int a, int b);
/* Reductions over naxes axes; naxes == 0 reduces over every axis. */
int ir_reduce(IrGraph *g, IrOp op, int a, const int *axes, int naxes, bool keepdim);
int ir_sum(IrGraph *g, int a, const int *axes, int naxes, bool keepdim);
int ir_mean(IrGraph *g, int a, const int *axes, int naxes, bool keepdim);
int ir_max(IrGraph *g, int a, const int *axes, int naxes, bool keepdim);
int ir_logsumexp(IrGraph *g, int a, const int *axes, int naxes, bool keepdim);
int ir_argmax(IrGraph *g, int a, int axis, bool keepdim);
int ir_matmul(IrGraph *g, int a, int b); /* numpy matmul: 1-D operands promoted, batch broadcast */
int ir_linear(IrGraph *g, int x, int w, int b); /* x @ w^T + b, w [out, in]; b may be -1 */
int ir_reshape(IrGraph *g, int a, IrShape s); /* one dimension may be -1 */
int ir_flatten(IrGraph *g, int a, int start, int end);
int ir_permute(IrGraph *g, int a, const int *perm);
int ir_transpose(IrGraph *g, int a, int d0, int d1);
int ir_broadcast_to(IrGraph *g, int a, IrShape s);
/* a[..., start:stop:step, ...] along axis, Python rules (negative bounds count from the end,
 * out-of-range bounds clamp), step > 0. */
int ir_slice(IrGraph *g, int a, int axis, int64_t start, int64_t stop, int64_t step);
int ir_concat(IrGraph *g, const int *xs, int n, int axis);
/* The mean over the ranks of xs flattened and concatenated: f32[sum of numels] (docs/distributed.md). */
int ir_allreduce(IrGraph *g, const int *xs, int n);
int ir_pad(IrGraph *g, int a, const int64_t *lo, const int64_t *hi, double value); /* per axis */
int ir_conv2d(IrGraph *g, int x, int w, const int64_t stride[2], const int64_t pad[2],
              const int64_t dil[2], int groups);
int ir_max_pool2d(IrGraph *g, int x, const int64_t kernel[2], const int64_t stride[2],
                  const int64_t pad[2]);
int ir_avg_pool2d(IrGraph *g, int x, const int64_t kernel[2], const int64_t stride[2],
                  const int64_t pad[2], bool count_include_pad);
int ir_softmax(IrGraph *g, int a, int axis);
int ir_log_softmax(IrGraph *g, int a, int axis);
/* Losses take classes on axis 1 ([N, C] or [N, C, d...]) with i64/i32 targets [N] or
 * [N, d...], and return the mean over the targets, as PyTorch's defaults. */
int ir_cross_entropy(IrGraph *g, int logits, int target, double label_smoothing);
int ir_nll_loss(IrGraph *g, int logp, int target);
int ir_mse_loss(IrGraph *g, int a, int b);
int ir_bce_with_logits(IrGraph *g, int x, int y);
int ir_accuracy(IrGraph *g, int logits, int target); /* mean(argmax(logits, 1) == target), f32 */
int ir_take(IrGraph *g, int x, int idx, int axis);   /* numpy take: x[..., idx, ...] */
int ir_embedding(IrGraph *g, int weight, int idx);   /* take(weight, idx, 0) */
int ir_gather(IrGraph *g, int x, int axis, int idx); /* torch.gather */
int ir_one_hot(IrGraph *g, int idx, int64_t n, IrDtype t);
/* Layer norm over the last nlast axes; w, b (shape of those axes) may be -1. */
int ir_layer_norm(IrGraph *g, int x, int nlast, int w, int b, double eps);
/* Batch norm over axis 1 of x [N, C, ...].  Training: batch statistics, and *new_rm /
 * *new_rv receive the updated running statistics (momentum as PyTorch, unbiased variance);
 * eval: running statistics, *new_rm = *new_rv = -1.  w, b may be -1. */
int ir_batch_norm(IrGraph *g, int x, int w, int b, int rm, int rv, bool training,
                  double momentum, double eps, int *new_rm, int *new_rv);
/* Dropout with probability p; step is an integer scalar value (the training step). */
int ir_dropout(IrGraph *g, int x, double p, uint64_t seed, int step);
int ir_rand_uniform(IrGraph *g, IrShape s, IrDtype t, double lo, double hi, uint64_t seed,
                    int step);
int ir_rand_normal(IrGraph *g, IrShape s, IrDtype t, double mean, double std, uint64_t seed,
                   int step);

/* ---- interp.c: the reference interpreter ----
 * Naive loops over host buffers.  Every value is held as doubles and rounded to its dtype
 * after each op; with f64 set, floating values are not rounded (the whole graph computes in
 * double: the mode gradient checks use). */
typedef struct IrInterp IrInterp;
IrInterp *interp_new(const IrGraph *g, bool f64);
void interp_free(IrInterp *ip);
/* Sets an INPUT from a host buffer in the input's dtype (_f64: from doubles). */
void interp_set(IrInterp *ip, int input, const void *data);
void interp_set_f64(IrInterp *ip, int input, const double *data);
const char *interp_run(IrInterp *ip); /* NULL, or a message (e.g. a class index out of range) */
const double *interp_data(const IrInterp *ip, int value); /* numel values after a run */
void interp_get(const IrInterp *ip, int value, void *out); /* in the value's dtype */
double interp_scalar(const IrInterp *ip, int value);      /* element 0 */
/* Evaluates one node on given operand values (constant folding): 0, or -1 on an error. */
int interp_node(const IrGraph *g, int id, const double *const *in, double *out, bool f64);

/* ---- ad.c: reverse-mode autodiff ----
 * Appends the backward graph of loss (a float scalar) to g and stores in grads[i] the id of
 * d loss / d wrt[i] (a zero constant when loss does not depend on it).  Gradients flow only
 * through float values; stop_gradient stops them.  Returns 0, or -1 with ir_error(g). */
int ad_grad(IrGraph *g, int loss, const int *wrt, int n, int *grads);
/* The same with an explicit cotangent for loss (any shape equal to loss's). */
int ad_vjp(IrGraph *g, int out, int cotangent, const int *wrt, int n, int *grads);

/* ---- ir_optim.c: optimizer updates as IR ----
 * Each appends the update of n params from their grads: state INPUTs named
 * "<param>.<state>" and "<prefix>.step", and UPDATE outputs for new params and new state.
 * lr is a value (a DATA input or a constant) so schedulers need no recompilation.
 * Returns 0, or -1 with ir_error(g). */
typedef struct {
  int lr;
  double momentum, dampening, weight_decay;
  bool nesterov, maximize;
} IrSgd;
typedef struct {
  int lr;
  double beta1, beta2, eps, weight_decay;
  bool decoupled; /* AdamW: decay the weights directly instead of adding wd*p to the grad */
  bool amsgrad, maximize;
} IrAdam;
IrSgd ir_sgd_defaults(int lr);   /* PyTorch's defaults */
IrAdam ir_adam_defaults(int lr); /* betas (0.9, 0.999), eps 1e-8, no decay */
IrAdam ir_adamw_defaults(int lr); /* weight_decay 1e-2, decoupled */
int ir_sgd(IrGraph *g, const char *prefix, const IrSgd *o, const int *params, const int *grads,
           int n);
int ir_adam(IrGraph *g, const char *prefix, const IrAdam *o, const int *params,
            const int *grads, int n);
typedef struct {
  int lr;
  double alpha, eps, weight_decay, momentum;
  bool centered, maximize;
} IrRmsprop;
IrRmsprop ir_rmsprop_defaults(int lr); /* alpha 0.99, eps 1e-8 */
int ir_rmsprop(IrGraph *g, const IrRmsprop *o, const int *params, const int *grads, int n);

/* ---- ir_fold.c, ir_cse.c, ir_algebra.c, ir_dce.c: simplification passes ----
 * Each returns how many nodes it changed.  fold, cse and algebra only redirect uses (and
 * rewrite nodes in place); dce then removes what no output needs and renumbers the nodes,
 * writing the old-to-new id map (-1: removed) to map when map is not NULL.  INPUT nodes are
 * never removed.  ir_simplify runs them all to a fixed point. */
int ir_fold(IrGraph *g);
int ir_cse(IrGraph *g);
int ir_algebra(IrGraph *g);
int ir_dce(IrGraph *g, int *map);
int ir_simplify(IrGraph *g, int *map);
/* Shared by the passes (ir.c): redirect every use of id to repl[id] (repl[id] == id keeps). */
void ir_redirect(IrGraph *g, int *repl);

/* ---- ir_precision.c: the trainer's precision while a graph is built ----
 * ir_make calls the first two when g->gemm16 or g->round16 is set. */
/* Sets the rules of a precision mode ("bf16-mixed", ...; NULL or "32-true": none) for the nodes
 * built next; true when the mode scales the loss (16-mixed).  _end clears them, and retypes
 * the graph for 64-true. */
bool ir_precision_begin(IrGraph *g, const char *mode);
void ir_precision_end(IrGraph *g, const char *mode);
int ir_round_through(IrGraph *g, int x, IrDtype t); /* cast(cast(x, t), f32) for an f32 x */
int ir_precision_operands(IrGraph *g, IrOp op, const int *in, int nin, int *out);
int ir_precision_result(IrGraph *g, int id);
void ir_precision_f64(IrGraph *g); /* 64-true: every f32 value of a finished graph becomes f64 */
/* "16-mixed": dynamic loss scaling as torch.cuda.amp.GradScaler (initial scale 65536, x2 after
 * 2000 steps without inf/NaN gradients, x0.5 and the step skipped on one).  The scale and
 * the growth count are STATE inputs "<prefix>.scaler.scale" / ".growth_tracker".
 * ir_scaler_grads: grads[i] = d (loss * scale) / d params[i], unscaled.  ir_scaler_check:
 * found_inf from the gradients the optimizer will see.  ir_scaler_update: the UPDATE outputs
 * from first_out on keep their old values when found_inf; appends the scaler's updates. */
typedef struct {
  int scale_in, tracker_in; /* the STATE inputs */
  int scale;                /* the scale used this step */
  int found_inf;            /* bool: some gradient is inf or NaN */
} IrScaler;
int ir_scaler_grads(IrGraph *g, const char *prefix, int loss, const int *params, int n, int *grads,
                    IrScaler *s);
int ir_scaler_check(IrGraph *g, IrScaler *s, const int *grads, int n);
int ir_scaler_update(IrGraph *g, const IrScaler *s, int first_out);

/* ---- philox.c: Philox 4x32-10, a counter-based RNG (Salmon et al., SC'11) ----
 * Plain C, no state: the same numbers on every backend.  Element i of a random tensor at
 * training step s is a function of (seed, s, i) alone: key = seed, counter = (i, s). */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
void philox_block(uint64_t seed, uint64_t step, uint64_t idx, uint32_t out[4]);
double philox_uniform(uint64_t seed, uint64_t step, uint64_t idx); /* [0, 1), 24 bits */
double philox_normal(uint64_t seed, uint64_t step, uint64_t idx);  /* Box-Muller */
/* Initialisers: out[i] for i < n, stream separating tensors that share a seed. */
void philox_fill_uniform(float *out, int64_t n, uint64_t seed, uint64_t stream, double lo,
                         double hi);
void philox_fill_normal(float *out, int64_t n, uint64_t seed, uint64_t stream, double mean,
                        double std);

#endif
