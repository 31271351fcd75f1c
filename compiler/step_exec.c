/* step_exec.c — the step executor without LLVM (prefix llvm_step_): the arena, the bound
 * buffers, running a compiled entry point, reading outputs, and the interpreter fallback.
 * Where the entry point comes from is up to the caller: llvm_step.c JIT-compiles it (or
 * loads it from the cache); a program made by `ltlc build` finds it in a table linked into
 * it (step_aot.c), so this file, like everything a built program links, needs no libLLVM. */
#include "llvm.h"
#include "rt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- the fallback: one node through the reference interpreter ---- */

/* all_reduce: the operands' bytes side by side, averaged over the ranks in their dtype */
static void allreduce(LlvmStep *s, const IrNode *n, int id, void **argv) {
  size_t es = ir_dtype_size(n->dtype), at = 0;
  for (int j = 0; j < n->nin; j++) {
    size_t bytes = (size_t)ir_numel(s->g->node[s->plan->in[id][j]].shape) * es;
    memcpy((char *)argv[0] + at, argv[1 + j], bytes);
    at += bytes;
  }
  rt_dist_allreduce(argv[0], ir_numel(n->shape), n->dtype == IR_F64 ? RT_DIST_F64 : RT_DIST_F32, RT_DIST_MEAN);
}

static void fallback(void *exec, int64_t kid, void **argv) {
  LlvmStep *s = exec;
  const IrGraph *g = s->g;
  int id = s->plan->k[kid].op;
  const IrNode *n = &g->node[id];
  int64_t on = ir_numel(n->shape);
  if (n->op == IR_ALLREDUCE && (n->dtype == IR_F32 || n->dtype == IR_F64)) {
    allreduce(s, n, id, argv);
    return;
  }
  double *out = malloc((size_t)(on ? on : 1) * sizeof *out);
  const double **in = calloc((size_t)n->nin + 1, sizeof *in);
  bool ok = out && in;
  for (int j = 0; ok && j < n->nin; j++) {
    const IrNode *a = &g->node[s->plan->in[id][j]];
    int64_t k = ir_numel(a->shape);
    double *v = malloc((size_t)(k ? k : 1) * sizeof *v);
    ok = v != NULL;
    for (int64_t i = 0; ok && i < k; i++)
      v[i] = ir_load(a->dtype, argv[1 + j], i);
    in[j] = v;
  }
  if (!ok || interp_node(g, id, in, out, false) < 0) {
    s->status[0] = kid + 1;
    s->status[1] = ok ? -1 : -2;
  } else {
    for (int64_t i = 0; i < on; i++)
      ir_store(n->dtype, argv[0], i, out[i]);
  }
  for (int j = 0; in && j < n->nin; j++)
    free((void *)in[j]);
  free(in);
  free(out);
}

static void tick(void *exec, int64_t kid) {
  LlvmStep *s = exec;
  double t = now_s();
  s->prof[kid] += t - s->last_tick;
  s->last_tick = t;
}

/* The executor's memory and context for a step whose plan, entry point and GEMM table
 * (s->funcs) are set. False with a message, s freed, on failure. */
bool llvm_step_exec_init(LlvmStep *s, const LlvmStepOptions *o, char *err, size_t errlen) {
  const FusePlan *p = s->plan;
  /* the executor's memory */
  s->nbases = FUSE_BASE_DATA + p->ndata;
  s->bases = calloc((size_t)s->nbases, sizeof *s->bases);
  s->arena = aligned_alloc(64, (size_t)((p->arena_bytes + 127) & ~(int64_t)63));
  s->consts = aligned_alloc(64, (size_t)((p->const_bytes + 127) & ~(int64_t)63));
  if (o->pool)
    s->pool = o->pool;
  else if (s->nthreads > 1)
    s->own_pool = s->pool = rt_pool_create(s->nthreads);
  if (!s->bases || !s->arena || !s->consts || (s->nthreads > 1 && !s->pool)) {
    if (err && errlen)
      snprintf(err, errlen, "out of memory for the step's arena");
    llvm_step_free(s);
    return false;
  }
  if (p->const_bytes)
    memcpy(s->consts, p->consts, (size_t)p->const_bytes);
  s->bases[FUSE_BASE_ARENA] = s->arena;
  s->bases[FUSE_BASE_CONST] = s->consts;
  s->bases[FUSE_BASE_STATUS] = s->status;
  s->bases[FUSE_BASE_FUNCS] = s->funcs;
  s->ctx = (LlvmStepCtx){.pool = s->pool, .run = rt_pool_run, .fallback = fallback, .exec = s, .tick = tick};
  s->prof = calloc((size_t)p->nk + 1, sizeof *s->prof);
  return true;
}

void llvm_step_free(LlvmStep *s) {
  if (!s)
    return;
  rt_pool_destroy(s->own_pool);
  if (s->free_code)
    s->free_code(s->jit);
  fuse_free(s->plan);
  free(s->bases);
  free(s->arena);
  free(s->consts);
  free(s->ir);
  free(s->cache_file);
  free(s->prof);
  free(s);
}

const double *llvm_step_profile(const LlvmStep *s) { return s->prof; }

const FusePlan *llvm_step_plan(const LlvmStep *s) { return s->plan; }
const char *llvm_step_ir(const LlvmStep *s) { return s->ir; }
double llvm_step_compile_seconds(const LlvmStep *s) { return s->compile_s; }
int llvm_step_threads(const LlvmStep *s) { return s->nthreads; }

void llvm_step_bind(LlvmStep *s, IrInputKind kind, void *flat) {
  int b = kind == IR_IN_PARAM ? FUSE_BASE_PARAM : kind == IR_IN_BUFFER ? FUSE_BASE_BUFFER
          : kind == IR_IN_STATE ? FUSE_BASE_STATE : -1;
  if (b >= 0)
    s->bases[b] = flat;
}

void llvm_step_set_input(LlvmStep *s, int input, const void *data) {
  for (int i = 0; i < s->plan->ndata; i++)
    if (s->plan->data[i] == input)
      s->bases[FUSE_BASE_DATA + i] = (void *)data;
}

/* ---- run ---- */

const char *llvm_step_run(LlvmStep *s) {
  const IrGraph *g = s->g;
  for (int i = 0; i < s->plan->ndata; i++)
    if (!s->bases[FUSE_BASE_DATA + i]) {
      snprintf(s->msg, sizeof s->msg, "input \"%s\" (%%%d) was not set", g->node[s->plan->data[i]].name,
               s->plan->data[i]);
      return s->msg;
    }
  static const IrInputKind kinds[] = {IR_IN_PARAM, IR_IN_BUFFER, IR_IN_STATE};
  static const char *const kind_names[] = {"parameter", "buffer", "optimizer state"};
  for (int k = 0; k < 3; k++)
    if (!s->bases[FUSE_BASE_PARAM + k])
      for (int i = 0; i < g->n; i++)
        if (g->node[i].op == IR_INPUT && g->node[i].kind == kinds[k]) {
          snprintf(s->msg, sizeof s->msg, "no %s buffer is bound (\"%s\" lives there)", kind_names[k],
                   g->node[i].name);
          return s->msg;
        }
  memset(s->status, 0, sizeof s->status);
  s->last_tick = now_s();
  s->entry((void *const *)s->bases, &s->ctx);
  if (!s->status[0])
    return NULL;
  int kid = (int)s->status[0] - 1;
  const FuseKernel *k = &s->plan->k[kid];
  if (k->kind == FUSE_CLASS_LOSS) {
    const IrNode *x = &g->node[s->plan->in[k->op][0]];
    snprintf(s->msg, sizeof s->msg, "%s: target %lld of element %lld is not a class in [0, %lld)",
             ir_op_name(g->node[k->op].op), (long long)s->status[1], (long long)s->status[2],
             (long long)x->shape.d[1]);
  } else if (k->kind == FUSE_TAKE) {
    const IrNode *n = &g->node[k->op];
    const IrShape xs = n->op == IR_TAKE ? g->node[s->plan->in[k->op][0]].shape : n->shape;
    snprintf(s->msg, sizeof s->msg, "%s: index %lld at element %lld is out of range [0, %lld)",
             ir_op_name(n->op), (long long)s->status[1], (long long)s->status[2], (long long)xs.d[n->a.axis]);
  } else if (k->kind == FUSE_FALLBACK) {
    snprintf(s->msg, sizeof s->msg, "%s (%%%d): %s", ir_op_name(g->node[k->op].op), k->op,
             s->status[1] == -2 ? "out of memory" : "failed (an index out of range?)");
  } else {
    snprintf(s->msg, sizeof s->msg, "kernel %d: an index is out of range (one_hot)", kid);
  }
  return s->msg;
}

const void *llvm_step_output(const LlvmStep *s, int i) {
  const FusePlan *p = s->plan;
  const IrOutput *o = &s->g->out[i];
  if (o->kind == IR_OUT_GRAD && !p->opt.grads)
    return NULL;
  if (o->kind == IR_OUT_UPDATE) {
    const FuseValue *t = &p->val[o->target];
    return (const unsigned char *)s->bases[t->base] + t->offset;
  }
  const FuseValue *fv = &p->val[o->value];
  int b = fv->how == FUSE_VIEW ? fv->of : o->value;
  if (p->val[b].how != FUSE_MEM || !s->bases[p->val[b].base])
    return NULL;
  return (const unsigned char *)s->bases[p->val[b].base] + p->val[b].offset +
         fv->voff * ir_dtype_size(s->g->node[o->value].dtype);
}

double llvm_step_scalar(const LlvmStep *s, int i) {
  const void *v = llvm_step_output(s, i);
  return v ? ir_load(s->g->node[s->g->out[i].value].dtype, v, 0) : NAN;
}

double llvm_step_scalar_of(const LlvmStep *s, int id) {
  for (int i = 0; i < s->g->nout; i++)
    if (s->g->out[i].value == id && llvm_step_output(s, i))
      return llvm_step_scalar(s, i);
  return NAN;
}

const void *llvm_step_value(const LlvmStep *s, int id) {
  const FusePlan *p = s->plan;
  if (!p->opt.no_reuse || id < 0 || id >= s->g->n)
    return NULL;
  const FuseValue *fv = &p->val[id];
  int b = fv->how == FUSE_VIEW ? fv->of : id;
  if ((fv->how != FUSE_MEM && fv->how != FUSE_VIEW) || !s->bases[p->val[b].base])
    return NULL;
  if (fv->how == FUSE_VIEW && p->val[b].how != FUSE_MEM)
    return NULL;
  return (const unsigned char *)s->bases[p->val[b].base] + p->val[b].offset +
         fv->voff * ir_dtype_size(s->g->node[id].dtype);
}

bool llvm_step_graph_key(const IrGraph *g, const LlvmStepOptions *o, uint64_t key[2]) {
  XXH3_state_t *st = XXH3_createState();
  char *text = NULL;
  size_t tlen = 0;
  FILE *mem = open_memstream(&text, &tlen);
  bool ok = st && mem;
  if (mem) {
    if (ok)
      ir_print(mem, g);
    ok = fclose(mem) == 0 && ok;
  }
  if (ok) {
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, text, tlen);
    for (int i = 0; i < g->n; i++) {
      const IrNode *n = &g->node[i];
      int64_t v[4] = {(int64_t)n->a.seed, n->a.n, 0, 0};
      memcpy(&v[2], &n->a.value, sizeof(double));
      memcpy(&v[3], &n->a.value2, sizeof(double));
      XXH3_128bits_update(st, v, sizeof v);
      if (n->op == IR_CONST && n->data)
        XXH3_128bits_update(st, n->data, (size_t)ir_numel(n->shape) * sizeof *n->data);
    }
    int64_t flags[3] = {o->grads, o->no_reuse, o->profile};
    XXH3_128bits_update(st, flags, sizeof flags);
    XXH128_hash_t h = XXH3_128bits_digest(st);
    key[0] = h.low64;
    key[1] = h.high64;
  }
  free(text);
  XXH3_freeState(st);
  return ok;
}
