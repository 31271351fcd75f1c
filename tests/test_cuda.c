/* test_cuda.c — the CUDA backend without a GPU.
 *
 * 1. NVRTC compiles the kernels of every example's training step to CUBIN for sm_80 and
 *    sm_90; the ptxas report must show no warning, at most 48 KB of shared memory and no
 *    spills.
 * 2. The same generated source, compiled by the host compiler with tests/cuda_shim.h (every
 *    CUDA thread a fiber), runs on random inputs and is compared with the reference
 *    interpreter, with the threads resumed in forward, reversed and random order.
 * 3. Failure paths: no NVRTC, no driver. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "example_test.h"
#include "e2e_test.h"
#include "cuda.h"
#include "cuda_test.h"
#include "sema.h"



#define OK(v)                                                                                   \
  ({                                                                                            \
    int v_ = (v);                                                                               \
    cr_assert(v_ >= 0, "builder failed: %s", ir_error(g));                                      \
    v_;                                                                                         \
  })

/* ---- NVRTC ---- */

/* precision: the trainer's (NULL: 32-true); the program's source is returned in *source if asked */
static void nvrtc_check_precision(const char *file, int64_t batch, const char *precision, char **source) {
  char err[2048];
  cuda_test_need_nvrtc();
  StepGraph *st = lower_example_precision(file, batch, NULL, 0, precision);
  FusePlan *p = cuda_plan(st->g, false, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s: %s", file, err);
  int ndev = 0;
  for (int i = 0; i < prog.nk; i++) {
    ndev += prog.k[i].kind == CUDA_K_DEVICE;
    cr_expect_neq(prog.k[i].kind, CUDA_K_HOST, "%s: kernel %s runs on the host", file, prog.k[i].name);
  }
  static const int arch[] = {80, 90};
  for (int a = 0; a < 2; a++) {
    CudaBuild b;
    cr_assert(cuda_nvrtc_compile(prog.source, arch[a], false, &b, err, sizeof err), "%s sm_%d: %s", file, arch[a], err);
    cr_expect_gt(b.size, 1000, "a CUBIN");
    cr_expect(!memcmp(b.cubin, "\177ELF", 4), "a CUBIN is an ELF file");
    CudaPtxasInfo info[256];
    int n = cuda_ptxas_parse(b.log, info, 256);
    cr_expect_geq(n, 0, "%s sm_%d: ptxas warned:\n%s", file, arch[a], b.log);
    cr_expect_eq(n, ndev, "%s sm_%d: %d functions in the ptxas report, %d kernels", file, arch[a], n, ndev);
    for (int i = 0; i < n; i++) {
      cr_expect_leq(info[i].smem, 48 * 1024, "%s: %s uses %lld bytes of shared memory", file, info[i].name,
                    (long long)info[i].smem);
      cr_expect_eq(info[i].spill_stores + info[i].spill_loads, 0, "%s: %s spills", file, info[i].name);
      cr_expect(info[i].registers > 0 && info[i].registers <= 255, "%s: %s uses %d registers", file, info[i].name,
                info[i].registers);
    }
    cuda_build_free(&b);
  }
  if (source)
    *source = strdup(prog.source);
  cuda_program_free(&prog);
  fuse_free(p);
  sema_step_free(st);
}
static void nvrtc_check(const char *file, int64_t batch) { nvrtc_check_precision(file, batch, NULL, NULL); }

Test(cuda, nvrtc_mlp, .timeout = 120) { nvrtc_check("fashion_mlp.ltl", 64); }
Test(cuda, nvrtc_cnn, .timeout = 120) { nvrtc_check("fashion_cnn.ltl", 64); }
Test(cuda, nvrtc_gan, .timeout = 120) { nvrtc_check("gan.ltl", 64); }

Test(cuda, nvrtc_cache) {
  char err[2048], dir[] = "/tmp/ltl-cuda-cache-XXXXXX";
  cuda_test_need_nvrtc();
  cr_assert(mkdtemp(dir));
  setenv("XDG_CACHE_HOME", dir, 1);
  const char *src = "extern \"C\" __global__ void twice(float *x) { x[threadIdx.x] *= 2; }\n";
  CudaBuild a, b;
  cr_assert(cuda_nvrtc_compile(src, 80, true, &a, err, sizeof err), "%s", err);
  cr_assert(cuda_nvrtc_compile(src, 80, true, &b, err, sizeof err), "%s", err);
  cr_expect(!a.cached && b.cached, "the second build comes from the cache");
  cr_expect(a.size == b.size && !memcmp(a.cubin, b.cubin, a.size), "the same CUBIN");
  cuda_build_free(&a);
  cuda_build_free(&b);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_expect_eq(system(cmd), 0);
}

Test(cuda, nvrtc_error_is_reported) {
  char err[2048];
  cuda_test_need_nvrtc();
  CudaBuild b;
  cr_expect_not(cuda_nvrtc_compile("extern \"C\" __global__ void k() { undeclared = 1; }", 80, false, &b, err, sizeof err));
  cr_expect(strstr(err, "sm_80") && strstr(err, "undeclared"), "the log is in the message: %s", err);
}

Test(cuda, ptxas_report_parsed) {
  const char *log = "ptxas info    : 0 bytes gmem\n"
                    "ptxas info    : Compiling entry function 'ltl_k3' for 'sm_80'\n"
                    "ptxas info    : Function properties for ltl_k3\n"
                    "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
                    "ptxas info    : Used 40 registers, used 1 barriers, 2304 bytes smem, 360 bytes cmem[0]\n";
  CudaPtxasInfo info[4];
  cr_assert_eq(cuda_ptxas_parse(log, info, 4), 1);
  cr_expect_str_eq(info[0].name, "ltl_k3");
  cr_expect_eq(info[0].registers, 40);
  cr_expect_eq(info[0].smem, 2304);
  cr_expect_eq(info[0].spill_stores, 4);
  cr_expect_eq(cuda_ptxas_parse("ptxas warning : Registers are spilled\n", info, 4), -1);
}

Test(cuda, nvrtc_missing) {
  setenv("LTL_NVRTC_LIB", "/nonexistent/libnvrtc.so.13", 1);
  char err[512];
  cr_expect_not(cuda_nvrtc_available(err, sizeof err));
  cr_expect(strstr(err, "NVRTC") && strstr(err, "/nonexistent/libnvrtc.so.13"), "%s", err);
  CudaBuild b;
  cr_expect_not(cuda_nvrtc_compile("", 80, false, &b, err, sizeof err));
  cr_expect(strstr(err, "NVRTC could not be loaded"), "%s", err);
}

/* ---- the failure paths of `accelerator` ---- */

static int run_ltlc(const char *args, char *out, size_t n) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s %s", LTLC, args);
  return e2e_sh("/tmp", out, n, cmd);
}

Test(cuda, accelerator_cuda_without_gpu, .timeout = 60) {
  char out[8192], args[512];
  snprintf(args, sizeof args, "run %s/examples/fashion_mlp.ltl --trainer.accelerator=cuda", SRCDIR);
  setenv("LTL_CUDA_LIB", "/nonexistent/libcuda.so.1", 1);
  cr_expect_eq(run_ltlc(args, out, sizeof out), 1, "exit 1: %s", out);
  cr_expect(strstr(out, "accelerator = \"cuda\": no NVIDIA driver: /nonexistent/libcuda.so.1 could not be loaded"),
            "%s", out);
  cr_expect_null(strstr(out, "Epoch"), "nothing trained: %s", out);
  char why[512];
  cr_expect_not(cuda_rt_probe(NULL, why, sizeof why));
  cr_expect(strstr(why, "no NVIDIA driver"), "%s", why);
}

Test(cuda, emit_cli, .timeout = 60) {
  static char out[1 << 20];
  char args[512];
  snprintf(args, sizeof args, "emit cuda %s/examples/fashion_cnn.ltl --batch 8", SRCDIR);
  cr_expect_eq(run_ltlc(args, out, sizeof out), 0, "%.2000s", out);
  cr_expect(strstr(out, "LTL_KERNEL ltl_k0(char *const *B)"), "the first kernel");
  cr_expect(strstr(out, "conv2d_bwd_filter") && strstr(out, "max_pool2d_bwd") && strstr(out, "device arena"),
            "the CNN's kernels and the launch list");
}

/* ---- semantics on the host: the shim ---- */

typedef int (*LaunchFn)(void (*)(char *const *), int, int, char *const *, int, unsigned, char *, size_t);
typedef struct {
  void *dl;
  LaunchFn launch;
  char dir[64];
} Shim;

/* Compiles the generated source with the host compiler and the shim into a shared object. */
static Shim shim_build(const char *source) {
  Shim s = {0};
  snprintf(s.dir, sizeof s.dir, "/tmp/ltl-shim-XXXXXX");
  cr_assert(mkdtemp(s.dir));
  char path[128], so[128], cmd[1024];
  snprintf(path, sizeof path, "%s/k.c", s.dir);
  snprintf(so, sizeof so, "%s/k.so", s.dir);
  FILE *f = fopen(path, "w");
  fprintf(f, "#include \"cuda_shim.h\"\n%s", source);
  fclose(f);
  snprintf(cmd, sizeof cmd, CUDA_TEST_SHIM_CC " -o %s %s -lm 2>&1", so, path);
  FILE *p = popen(cmd, "r");
  char log[4096];
  size_t n = fread(log, 1, sizeof log - 1, p);
  log[n] = 0;
  int st = pclose(p);
  cr_assert_eq(st, 0, "host compiler: %s", log);
  s.dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  cr_assert(s.dl, "%s", dlerror());
  s.launch = (LaunchFn)dlsym(s.dl, "shim_launch");
  cr_assert(s.launch);
  return s;
}

static void shim_free(Shim *s) {
  void (*release)(void) = (void (*)(void))dlsym(s->dl, "shim_release");
  cr_assert(release);
  release();
  dlclose(s->dl);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
  cr_expect_eq(system(cmd), 0);
}

/* the inputs of a graph: flat buffers of params / buffers / state, one buffer per DATA */
typedef struct {
  IrLayout lay[3];
  unsigned char *flat[3];
  void **data;
} Inputs;

static int kind_index(IrInputKind k) { return k == IR_IN_PARAM ? 0 : k == IR_IN_BUFFER ? 1 : 2; }

static void fill(IrDtype t, void *buf, int64_t n, uint64_t stream, double lo, double hi, int64_t ints) {
  for (int64_t i = 0; i < n; i++) {
    double u = philox_uniform(5, stream, (uint64_t)i);
    ir_store(t, buf, i, ir_dtype_is_float(t) ? lo + (hi - lo) * u : t == IR_BOOL ? u < 0.5 : floor(u * (double)ints));
  }
}

static Inputs inputs_new(const IrGraph *g, double scale) {
  Inputs in = {0};
  in.data = calloc((size_t)g->n, sizeof *in.data);
  IrInputKind kinds[3] = {IR_IN_PARAM, IR_IN_BUFFER, IR_IN_STATE};
  for (int k = 0; k < 3; k++) {
    in.lay[k] = ir_layout(g, kinds[k]);
    in.flat[k] = calloc(1, (size_t)in.lay[k].bytes + 64);
  }
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    if (n->op != IR_INPUT)
      continue;
    int64_t cnt = ir_numel(n->shape);
    void *dst = NULL;
    if (n->kind == IR_IN_DATA || n->kind == IR_IN_GRAD) {
      dst = in.data[i] = calloc(1, (size_t)(cnt * ir_dtype_size(n->dtype) + 8));
    } else {
      int k = kind_index(n->kind);
      for (int s = 0; s < in.lay[k].n; s++)
        if (in.lay[k].slot[s].value == i)
          dst = in.flat[k] + in.lay[k].slot[s].offset;
    }
    if (n->name && !strcmp(n->name, "step"))
      ir_store(n->dtype, dst, 0, 3);
    else if (n->name && !strcmp(n->name, "lr"))
      ir_store(n->dtype, dst, 0, 1e-3);
    else if (n->kind == IR_IN_STATE)
      fill(n->dtype, dst, cnt, (uint64_t)i, 0, 1e-4, 4);
    else
      fill(n->dtype, dst, cnt, (uint64_t)i, -scale, scale, 10);
  }
  return in;
}

static void inputs_free(const IrGraph *g, Inputs *in) {
  for (int i = 0; i < g->n; i++)
    free(in->data[i]);
  free(in->data);
  for (int k = 0; k < 3; k++) {
    ir_layout_free(&in->lay[k]);
    free(in->flat[k]);
  }
}

static const void *input_ptr(const IrGraph *g, const Inputs *in, int id) {
  const IrNode *n = &g->node[id];
  if (n->kind == IR_IN_DATA || n->kind == IR_IN_GRAD)
    return in->data[id];
  int k = kind_index(n->kind);
  for (int s = 0; s < in->lay[k].n; s++)
    if (in->lay[k].slot[s].value == id)
      return in->flat[k] + in->lay[k].slot[s].offset;
  return NULL;
}

/* Runs the program on the shim with copies of the inputs; returns the bases (freed by the
 * caller with run_free), so outputs can be read. */
typedef struct {
  unsigned char *arena, *flat[3];
  long long status[4];
  char **B;
} Run;

static void run_free(Run *r) {
  free(r->arena);
  for (int k = 0; k < 3; k++)
    free(r->flat[k]);
  free(r->B);
}

static Run run_shim(const Shim *sh, const CudaProgram *prog, const Inputs *in, int order, int maxgrid) {
  const FusePlan *p = prog->plan;
  Run r = {0};
  r.arena = calloc(1, (size_t)p->arena_bytes + 64);
  r.B = calloc((size_t)(FUSE_BASE_DATA + p->ndata + 1), sizeof *r.B);
  for (int k = 0; k < 3; k++) {
    r.flat[k] = malloc((size_t)in->lay[k].bytes + 64);
    memcpy(r.flat[k], in->flat[k], (size_t)in->lay[k].bytes);
  }
  r.B[FUSE_BASE_ARENA] = (char *)r.arena;
  r.B[FUSE_BASE_PARAM] = (char *)r.flat[0];
  r.B[FUSE_BASE_BUFFER] = (char *)r.flat[1];
  r.B[FUSE_BASE_STATE] = (char *)r.flat[2];
  r.B[FUSE_BASE_CONST] = (char *)p->consts;
  r.B[FUSE_BASE_STATUS] = (char *)r.status;
  for (int i = 0; i < p->ndata; i++)
    r.B[FUSE_BASE_DATA + i] = in->data[p->data[i]];
  char err[256];
  for (int i = 0; i < prog->nk; i++) {
    const CudaKernel *k = &prog->k[i];
    if (k->kind == CUDA_K_COPY) {
      memmove(r.B[k->dst_base] + k->dst_off, r.B[k->src_base] + k->src_off, (size_t)k->bytes);
      continue;
    }
    cr_assert_eq(k->kind, CUDA_K_DEVICE, "kernel %s runs on the host", k->name);
    void (*fn)(char *const *) = (void (*)(char *const *))dlsym(sh->dl, k->name);
    cr_assert(fn, "no symbol %s", k->name);
    int grid = k->grid < maxgrid ? k->grid : maxgrid;
    cr_assert_eq(sh->launch(fn, grid, k->block, r.B, order, (unsigned)i + 1, err, sizeof err), 0, "%s: %s", k->name, err);
  }
  return r;
}

/* pointer to output o after a run (the interpreter's layout: contiguous) */
static const void *run_output(const Run *r, const FusePlan *p, int o) {
  const IrOutput *out = &p->g->out[o];
  if (out->kind == IR_OUT_UPDATE) {
    const FuseValue *t = &p->val[out->target];
    return r->B[t->base] + t->offset;
  }
  const FuseValue *fv = &p->val[out->value];
  int b = fv->how == FUSE_VIEW ? fv->of : out->value;
  return r->B[p->val[b].base] + p->val[b].offset + fv->voff * ir_dtype_size(p->g->node[out->value].dtype);
}

/* max |a - b| / max |b| (ints: 1 if any differs) */
static double rel_err(IrDtype t, const void *a, const double *b, int64_t n, int64_t *where) {
  double scale = 0, worst = 0;
  for (int64_t i = 0; i < n; i++)
    scale = fmax(scale, fabs(b[i]));
  for (int64_t i = 0; i < n; i++) {
    double x = ir_load(t, a, i), d;
    if (isnan(x) || isnan(b[i]))
      d = isnan(x) && isnan(b[i]) ? 0 : INFINITY;
    else if (!ir_dtype_is_float(t))
      d = x != b[i];
    else
      d = fabs(x - b[i]) / (scale > 0 ? scale : 1);
    if (d > worst)
      worst = d, *where = i;
  }
  return worst;
}

/* Every output of g, shim (three thread orders) vs interpreter. UPDATE outputs of a
 * training step are compared in units of the learning rate (Adam's steps are ~lr). */
static void check_graph(const IrGraph *g, double tol, double scale, int maxgrid, const char *what) {
  char err[512];
  Inputs in = inputs_new(g, scale);
  IrInterp *ip = interp_new(g, false);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT)
      interp_set(ip, i, input_ptr(g, &in, i));
  const char *ierr = interp_run(ip);
  cr_assert_null(ierr, "interpreter: %s", ierr);
  FusePlan *p = cuda_plan(g, true, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s: %s", what, err);
  Shim sh = shim_build(prog.source);
  for (int order = 0; order < 3; order++) {
    Run r = run_shim(&sh, &prog, &in, order, maxgrid);
    cr_expect_eq(r.status[0], 0, "%s: status %lld", what, r.status[0]);
    for (int o = 0; o < g->nout; o++) {
      const IrOutput *out = &g->out[o];
      const IrNode *n = &g->node[out->value];
      int64_t cnt = ir_numel(n->shape), where = 0;
      const double *ref = interp_data(ip, out->value);
      const void *got = run_output(&r, p, o);
      double e, lim = tol;
      if (out->kind == IR_OUT_UPDATE && g->node[out->target].kind == IR_IN_PARAM) {
        /* in units of lr (1e-3), as test_cpu.c: Adam divides by sqrt(v), so an f32 rounding
         * difference in a gradient near zero moves its parameter by a fraction of lr */
        e = 0;
        for (int64_t i = 0; i < cnt; i++)
          if (fabs(ir_load(n->dtype, got, i) - ref[i]) / 1e-3 > e)
            e = fabs(ir_load(n->dtype, got, i) - ref[i]) / 1e-3, where = i;
        lim = 0.05;
      } else {
        e = rel_err(n->dtype, got, ref, cnt, &where);
      }
      cr_expect(e <= lim, "%s, order %d: output %d (%%%d %s %s): error %.3g > %.3g at %lld: %.9g vs %.9g", what,
                order, o, out->value, ir_op_name(n->op), out->name ? out->name : "", e, lim, (long long)where,
                ir_load(n->dtype, got, where), ref[where]);
    }
    run_free(&r);
  }
  shim_free(&sh);
  cuda_program_free(&prog);
  fuse_free(p);
  interp_free(ip);
  inputs_free(g, &in);
}

static int data(IrGraph *g, const char *name, IrDtype t, IrShape s) { return OK(ir_input(g, IR_IN_DATA, name, t, s)); }
static void out(IrGraph *g, int v) { ir_output(g, v, IR_OUT_VALUE, -1, "y"); }

/* elementwise chains, broadcasts, casts, compares, dropout and rand, every reduction kind
 * and the row kernels, over shapes with 1, 7, 33 and 1000 */
Test(cuda, shim_kernels, .timeout = 120) {
  static const int64_t dims[][2] = {{1, 1}, {7, 33}, {33, 7}, {1000, 7}, {3, 1000}};
  for (size_t s = 0; s < sizeof dims / sizeof *dims; s++) {
    IrGraph *g = ir_new();
    int64_t R = dims[s][0], C = dims[s][1];
    int x = data(g, "x", IR_F32, IR_SHAPE(R, C)), b = data(g, "b", IR_F32, IR_SHAPE(C));
    int step = data(g, "step", IR_I64, IR_SCALAR);
    int h = OK(ir_add(g, OK(ir_mul(g, OK(ir_tanh(g, x)), OK(ir_sigmoid(g, b)))), OK(ir_exp(g, OK(ir_neg(g, OK(ir_abs(g, x))))))));
    out(g, h);
    out(g, OK(ir_sub(g, OK(ir_gelu(g, x)), OK(ir_leaky_relu(g, OK(ir_erf(g, x)), 0.1)))));
    out(g, OK(ir_where(g, OK(ir_gt(g, x, b)), OK(ir_sqrt(g, OK(ir_abs(g, x)))), OK(ir_log(g, OK(ir_add(g, OK(ir_relu(g, x)), OK(ir_scalar(g, 1, IR_F32)))))))));
    out(g, OK(ir_cast(g, OK(ir_cast(g, OK(ir_mul(g, x, OK(ir_scalar(g, 3, IR_F32)))), IR_I32)), IR_F32)));
    IrAttr da = {.value = 0.3, .seed = 77};
    out(g, OK(ir_make(g, IR_DROPOUT, (int[]){x, step}, 2, &da)));
    IrAttr ra = {.value = -1, .value2 = 2, .seed = 9, .dtype = IR_F32, .shape = IR_SHAPE(R, C)};
    out(g, OK(ir_make(g, IR_RAND_UNIFORM, (int[]){step}, 1, &ra)));
    out(g, OK(ir_reduce(g, IR_SUM, h, (int[]){1}, 1, false)));   /* rows */
    out(g, OK(ir_reduce(g, IR_SUM, h, (int[]){0}, 1, false)));   /* columns: bias gradients */
    out(g, OK(ir_reduce(g, IR_MEAN, x, NULL, 0, false)));       /* everything */
    out(g, OK(ir_reduce(g, IR_MAX, x, (int[]){0}, 1, true)));
    IrAttr sa = {.axis = 1};
    out(g, OK(ir_make(g, IR_SOFTMAX, &x, 1, &sa)));
    out(g, OK(ir_make(g, IR_LOG_SOFTMAX, &h, 1, &sa)));
    IrAttr s0 = {.axis = 0};
    out(g, OK(ir_make(g, IR_SOFTMAX, &x, 1, &s0)));
    out(g, OK(ir_make(g, IR_ARGMAX, &x, 1, &sa)));
    char what[64];
    snprintf(what, sizeof what, "kernels [%lld, %lld]", (long long)R, (long long)C);
    check_graph(g, 2e-6, 2, 6, what);
    ir_free(g);
  }
}

/* GEMMs with every orientation, bias and relu epilogues, batched */
Test(cuda, shim_gemm, .timeout = 120) {
  static const int64_t mnk[][3] = {{1, 1, 1}, {7, 33, 5}, {33, 7, 40}, {64, 10, 128}};
  for (size_t s = 0; s < sizeof mnk / sizeof *mnk; s++) {
    int64_t M = mnk[s][0], N = mnk[s][1], K = mnk[s][2];
    IrGraph *g = ir_new();
    int a = data(g, "a", IR_F32, IR_SHAPE(M, K)), bt = data(g, "bt", IR_F32, IR_SHAPE(N, K));
    int bias = data(g, "bias", IR_F32, IR_SHAPE(N));
    int b = OK(ir_permute(g, bt, (int[]){1, 0}));
    out(g, OK(ir_relu(g, OK(ir_add(g, OK(ir_matmul(g, a, b)), bias)))));
    int at = data(g, "at", IR_F32, IR_SHAPE(K, M));
    out(g, OK(ir_matmul(g, OK(ir_permute(g, at, (int[]){1, 0})), b)));
    int x3 = data(g, "x3", IR_F32, IR_SHAPE(3, M, K)), w = data(g, "w", IR_F32, IR_SHAPE(K, N));
    out(g, OK(ir_matmul(g, x3, w)));
    char what[64];
    snprintf(what, sizeof what, "gemm %lldx%lldx%lld", (long long)M, (long long)N, (long long)K);
    check_graph(g, 2e-6, 1, 5, what);
    ir_free(g);
  }
}

/* whole training steps: MLP (GEMMs, cross-entropy, Adam), CNN (convolutions and their
 * gradients, pooling, dropout), on the shim vs the interpreter */
Test(cuda, shim_mlp_step, .timeout = 180) {
  StepGraph *st = lower_example("fashion_mlp.ltl", 16, NULL, 0);
  check_graph(st->g, 1e-4, 1, 4, "mlp step");
  sema_step_free(st);
}

Test(cuda, shim_cnn_step, .timeout = 300) {
  StepGraph *st = lower_example("fashion_cnn.ltl", 2, NULL, 0);
  check_graph(st->g, 2e-3, 1, 3, "cnn step");
  sema_step_free(st);
}

/* the shim exposes races: a kernel that reads shared memory without __syncthreads is right
 * when thread 0 happens to run first, wrong in reversed order */
Test(cuda, shim_thread_orders_expose_races) {
  const char *src = "LTL_KERNEL racy(char *const *B) {\n"
                    "  __shared__ float s;\n"
                    "  if (threadIdx.x == 0) s = 0;\n"
                    "  __syncthreads();\n"
                    "  if (threadIdx.x == 0) s = 42;\n"
                    "  /* missing __syncthreads */\n"
                    "  ((float *)B[0])[threadIdx.x] = s;\n"
                    "}\n"
                    "LTL_KERNEL sum(char *const *B) {\n"
                    "  __shared__ double sh[32];\n"
                    "  double v = ltl_block_sum((double)threadIdx.x, sh);\n"
                    "  ((float *)B[0])[threadIdx.x] = (float)v;\n"
                    "}\n";
  char *full = NULL;
  /* the prelude of generated code, from a small emitted program */
  IrGraph *g = ir_new();
  out(g, OK(ir_neg(g, data(g, "x", IR_F32, IR_SHAPE(4)))));
  char err[256];
  FusePlan *p = cuda_plan(g, false, err, sizeof err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err));
  cr_assert(asprintf(&full, "%s%s", prog.source, src) > 0);
  Shim sh = shim_build(full);
  float buf[256];
  char *B[1] = {(char *)buf};
  void (*racy)(char *const *) = (void (*)(char *const *))dlsym(sh.dl, "racy");
  void (*sum)(char *const *) = (void (*)(char *const *))dlsym(sh.dl, "sum");
  int wrong[3] = {0};
  for (int order = 0; order < 3; order++) {
    cr_assert_eq(sh.launch(racy, 1, 256, B, order, 1, err, sizeof err), 0, "%s", err);
    for (int t = 0; t < 256; t++)
      wrong[order] += buf[t] != 42;
    cr_assert_eq(sh.launch(sum, 2, 256, B, order, 3, err, sizeof err), 0, "%s", err);
    for (int t = 0; t < 256; t++)
      cr_expect_eq(buf[t], 255 * 256 / 2, "block sum, order %d", order);
  }
  cr_expect_eq(wrong[0], 0, "forward order: thread 0 always first");
  cr_expect_gt(wrong[1] + wrong[2], 0, "another order shows the race");
  shim_free(&sh);
  free(full);
  cuda_program_free(&prog);
  fuse_free(p);
  ir_free(g);
}

/* A transformer block built by hand (char_transformer.ltl needs its data to be lowered):
 * embedding and its scatter-add gradient (atomics), layer norm, two-head causal attention
 * over permuted views (batched GEMMs), gelu MLP, cross-entropy, backward and SGD with
 * momentum; NVRTC-compiled too. */
static IrGraph *attention_graph(void) {
  enum { B = 2, T = 7, D = 16, H = 2, DH = 8, V = 33, F = 32 };
  IrGraph *g = ir_new();
  int idx = data(g, "idx", IR_I64, IR_SHAPE(B, T)), y = data(g, "y", IR_I64, IR_SHAPE(B * T));
  int lr = data(g, "lr", IR_F32, IR_SCALAR);
  const char *names[] = {"emb", "ln.w", "ln.b", "wq", "wk", "wv", "bq", "w1", "b1", "w2"};
  IrShape shp[] = {IR_SHAPE(V, D), IR_SHAPE(D), IR_SHAPE(D), IR_SHAPE(D, D), IR_SHAPE(D, D),
                   IR_SHAPE(D, D), IR_SHAPE(D), IR_SHAPE(F, D), IR_SHAPE(F), IR_SHAPE(V, F)};
  int prm[10], grads[10];
  for (int i = 0; i < 10; i++)
    prm[i] = OK(ir_input(g, IR_IN_PARAM, names[i], IR_F32, shp[i]));
  int x = OK(ir_embedding(g, prm[0], idx));
  int ln = OK(ir_layer_norm(g, x, 1, prm[1], prm[2], 1e-5));
  int perm[] = {0, 2, 1, 3};
  int q = OK(ir_permute(g, OK(ir_reshape(g, OK(ir_linear(g, ln, prm[3], prm[6])), IR_SHAPE(B, T, H, DH))), perm));
  int k = OK(ir_permute(g, OK(ir_reshape(g, OK(ir_linear(g, ln, prm[4], -1)), IR_SHAPE(B, T, H, DH))), perm));
  int v = OK(ir_permute(g, OK(ir_reshape(g, OK(ir_linear(g, ln, prm[5], -1)), IR_SHAPE(B, T, H, DH))), perm));
  int att = OK(ir_mul(g, OK(ir_matmul(g, q, OK(ir_transpose(g, k, 2, 3)))), OK(ir_scalar(g, 0.35355339, IR_F32))));
  double mask[T * T];
  for (int i = 0; i < T * T; i++)
    mask[i] = i % T <= i / T ? 0 : -1e9;
  att = OK(ir_softmax(g, OK(ir_add(g, att, OK(ir_const_data(g, IR_F32, IR_SHAPE(T, T), mask)))), 3));
  int o = OK(ir_reshape(g, OK(ir_permute(g, OK(ir_matmul(g, att, v)), perm)), IR_SHAPE(B, T, D)));
  int ff = OK(ir_gelu(g, OK(ir_linear(g, OK(ir_add(g, x, o)), prm[7], prm[8]))));
  int logits = OK(ir_reshape(g, OK(ir_linear(g, ff, prm[9], -1)), IR_SHAPE(B * T, V)));
  int loss = OK(ir_cross_entropy(g, logits, y, 0));
  cr_assert_eq(ad_grad(g, loss, prm, 10, grads), 0, "%s", ir_error(g));
  IrSgd sgd = ir_sgd_defaults(lr);
  sgd.momentum = 0.9;
  cr_assert_eq(ir_sgd(g, "opt", &sgd, prm, grads, 10), 0, "%s", ir_error(g));
  ir_output(g, loss, IR_OUT_VALUE, -1, "loss");
  for (int i = 0; i < 10; i++)
    ir_output(g, grads[i], IR_OUT_GRAD, prm[i], "grad");
  int map[4096];
  cr_assert_lt(g->n, 4096);
  ir_simplify(g, map);
  return g;
}

Test(cuda, shim_attention_block, .timeout = 120) {
  IrGraph *g = attention_graph();
  check_graph(g, 2e-5, 0.5, 4, "attention block");
  char err[2048];
  if (cuda_nvrtc_available(err, sizeof err)) {
    FusePlan *p = cuda_plan(g, false, err, sizeof err);
    CudaProgram prog;
    cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
    CudaBuild b;
    cr_expect(cuda_nvrtc_compile(prog.source, 90, false, &b, err, sizeof err), "%s", err);
    CudaPtxasInfo info[256];
    cr_expect_geq(cuda_ptxas_parse(b.log, info, 256), 1, "%s", b.log);
    cuda_build_free(&b);
    cuda_program_free(&prog);
    fuse_free(p);
  }
  ir_free(g);
}

/* ---- the executor (cuda_rt.c) through a fake driver ---- */

Test(cuda, executor_without_driver) {
  setenv("LTL_CUDA_LIB", "/nonexistent/libcuda.so.1", 1);
  IrGraph *g = ir_new();
  out(g, OK(ir_neg(g, data(g, "x", IR_F32, IR_SHAPE(4)))));
  char err[512];
  cr_expect_null(cuda_step_compile(g, false, err, sizeof err));
  cr_expect(strstr(err, "no NVIDIA driver"), "%s", err);
  ir_free(g);
}

/* A step on the executor with tests/fake_libcuda.c as the driver: device memory is host
 * memory and launches run the same generated source through the shim, so the arena, the
 * bases table, DATA uploads, copies, graph capture and replay, status and outputs are all
 * exercised; with blas, GEMMs go through tests/fake_libcublaslt.c (cuBLASLt's documented
 * column-major semantics), checking the row-major mapping of compiler/cuda_blas.c. Loss,
 * gradients-free VALUE outputs and parameter updates vs the interpreter. */
static int blas_computes[3]; /* after executor_check with blas: GEMMs run with 32F, FAST_16F, FAST_16BF */
static void executor_check(const IrGraph *g, bool blas, const char *expect_path) {
  char err[2048];
  FusePlan *p = cuda_plan(g, false, err, sizeof err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
  Shim sh = shim_build(prog.source);
  char fake[128], fblas[128], cmd[640], so[160];
  snprintf(fake, sizeof fake, "%s/libcuda-fake.so", sh.dir);
  snprintf(fblas, sizeof fblas, "%s/libcublaslt-fake.so", sh.dir);
  snprintf(cmd, sizeof cmd, "cc -std=gnu17 -O1 -fPIC -shared -Wall -Werror -o %s %s/tests/fake_libcuda.c && "
           "cc -std=gnu17 -O1 -fPIC -shared -Wall -Werror -o %s %s/tests/fake_libcublaslt.c", fake, SRCDIR, fblas, SRCDIR);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  snprintf(so, sizeof so, "%s/k.so", sh.dir);
  setenv("LTL_CUDA_LIB", fake, 1);
  setenv("LTL_FAKE_CUDA_KERNELS", so, 1);
  setenv("LTL_CACHE", "0", 1);
  if (blas)
    setenv("LTL_CUBLASLT_LIB", fblas, 1);
  else
    setenv("LTL_CUDA_GEMM", "generated", 1);
  CudaStep *s = cuda_step_compile(g, false, err, sizeof err);
  cr_assert(s, "%s", err);
  cr_expect(strstr(cuda_step_gemm_path(s), expect_path), "GEMM path: %s", cuda_step_gemm_path(s));
  cr_log_info("%s", cuda_step_gemm_path(s));
  Inputs in = inputs_new(g, 0.5);
  IrInterp *ip = interp_new(g, false);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT) {
      interp_set(ip, i, input_ptr(g, &in, i));
      if (g->node[i].kind == IR_IN_DATA)
        cuda_step_set_input(s, i, in.data[i]);
    }
  cr_assert_null(interp_run(ip));
  cuda_step_bind(s, IR_IN_PARAM, in.flat[0]);
  cuda_step_bind(s, IR_IN_BUFFER, in.flat[1]);
  cuda_step_bind(s, IR_IN_STATE, in.flat[2]);
  const char *rerr = cuda_step_run(s);
  cr_assert_null(rerr, "%s", rerr);
  cr_assert(cuda_step_download(s));
  int nval = 0, nupd = 0;
  for (int o = 0; o < g->nout; o++) {
    const IrOutput *out = &g->out[o];
    const IrNode *n = &g->node[out->value];
    const double *ref = interp_data(ip, out->value);
    if (out->kind == IR_OUT_VALUE) {
      nval++;
      double got = ir_load(n->dtype, cuda_step_output(s, o), 0);
      cr_expect(fabs(got - ref[0]) <= 1e-5 * fmax(1, fabs(ref[0])), "%s: %.9g vs %.9g", out->name, got, ref[0]);
    } else if (out->kind == IR_OUT_UPDATE && g->node[out->target].kind == IR_IN_PARAM) {
      nupd++;
      const void *now = input_ptr(g, &in, out->target); /* downloaded into the bound buffer */
      for (int64_t i = 0; i < ir_numel(n->shape); i++)
        if (fabs(ir_load(n->dtype, now, i) - ref[i]) > 0.05e-3) {
          cr_expect(0, "update of %s at %lld: %.9g vs %.9g", g->node[out->target].name, (long long)i,
                    ir_load(n->dtype, now, i), ref[i]);
          break;
        }
    }
  }
  cr_expect_gt(nval, 0);
  cr_expect_gt(nupd, 0);
  /* a second run replays the captured graph: no new capture, one more graph launch */
  cr_assert_null(cuda_step_run(s));
  void *fd = dlopen(fake, RTLD_NOW | RTLD_NOLOAD);
  cr_assert(fd);
  void (*stats)(int *, int *, int *) = (void (*)(int *, int *, int *))dlsym(fd, "fake_cuda_stats");
  int launches, graphs, live;
  stats(&launches, &graphs, &live);
  cr_expect_eq(graphs, 2, "two runs, two graph launches");
  void *bd = blas ? dlopen(fblas, RTLD_NOW | RTLD_NOLOAD) : NULL; /* the compute types cuBLASLt was given */
  void (*computes)(int *, int *, int *) = bd ? (void (*)(int *, int *, int *))dlsym(bd, "fake_cublaslt_computes") : NULL;
  if (computes)
    computes(&blas_computes[0], &blas_computes[1], &blas_computes[2]);
  if (bd)
    dlclose(bd);
  int nlaunch = 0;
  for (int i = 0; i < prog.nk; i++)
    nlaunch += prog.k[i].kind == CUDA_K_DEVICE && !(blas && prog.k[i].gemm.ok);
  cr_expect_eq(launches, 2 * nlaunch, "every generated kernel once per run");
  cuda_step_free(s);
  stats(&launches, &graphs, &live);
  cr_expect_eq(live, 0, "every device allocation freed");
  dlclose(fd);
  interp_free(ip);
  inputs_free(g, &in);
  shim_free(&sh);
  cuda_program_free(&prog);
  fuse_free(p);
}

Test(cuda, executor_mlp_generated_gemm, .timeout = 180) {
  cuda_test_need_nvrtc();
  StepGraph *st = lower_example("fashion_mlp.ltl", 8, NULL, 0);
  executor_check(st->g, false, "0 of 8 GEMMs through cuBLASLt; the others generated: LTL_CUDA_GEMM=generated");
  sema_step_free(st);
}

Test(cuda, executor_mlp_cublaslt, .timeout = 180) {
  cuda_test_need_nvrtc();
  StepGraph *st = lower_example("fashion_mlp.ltl", 8, NULL, 0);
  executor_check(st->g, true, "8 of 8 GEMMs through cuBLASLt");
  sema_step_free(st);
}

Test(cuda, executor_attention_cublaslt, .timeout = 180) {
  cuda_test_need_nvrtc();
  IrGraph *g = attention_graph();
  executor_check(g, true, "GEMMs through cuBLASLt");
  ir_free(g);
}
/* Convolutions with stride, padding and dilation, their two gradients (through autodiff),
 * overlapping and padded max pooling and its gradient, the pair losses, nll and one_hot. */
Test(cuda, shim_conv_pool_losses, .timeout = 120) {
  static const int64_t cfg[][5] = {/* stride, pad, dil, kernel, pool stride */
                                   {1, 0, 1, 3, 2},
                                   {2, 1, 1, 3, 1},
                                   {1, 2, 2, 3, 2},
                                   {3, 1, 1, 2, 3}};
  for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
    IrGraph *g = ir_new();
    int64_t st[2] = {cfg[c][0], cfg[c][0]}, pd[2] = {cfg[c][1], cfg[c][1]}, dl[2] = {cfg[c][2], cfg[c][2]};
    int64_t K = cfg[c][3];
    int x = OK(ir_input(g, IR_IN_PARAM, "x", IR_F32, IR_SHAPE(2, 3, 9, 8)));
    int w = OK(ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(4, 3, K, K)));
    int b = OK(ir_input(g, IR_IN_PARAM, "b", IR_F32, IR_SHAPE(4, 1, 1)));
    int y = OK(ir_relu(g, OK(ir_add(g, OK(ir_conv2d(g, x, w, st, pd, dl, 1)), b))));
    int64_t pk[2] = {3, 3}, ps[2] = {cfg[c][4], cfg[c][4]}, pp[2] = {1, 1};
    int pool = OK(ir_max_pool2d(g, y, pk, ps, pp));
    int t = data(g, "t", IR_F32, g->node[pool].shape);
    int loss = OK(ir_add(g, OK(ir_mse_loss(g, pool, t)), OK(ir_bce_with_logits(g, pool, OK(ir_sigmoid(g, t))))));
    int prm[3] = {x, w, b}, grads[3];
    cr_assert_eq(ad_grad(g, loss, prm, 3, grads), 0, "%s", ir_error(g));
    ir_output(g, loss, IR_OUT_VALUE, -1, "loss");
    ir_output(g, pool, IR_OUT_VALUE, -1, "pool");
    for (int i = 0; i < 3; i++)
      ir_output(g, grads[i], IR_OUT_GRAD, prm[i], "grad");
    int logits = data(g, "logits", IR_F32, IR_SHAPE(33, 10)), cls = data(g, "cls", IR_I64, IR_SHAPE(33));
    IrAttr la = {.axis = 1};
    out(g, OK(ir_nll_loss(g, OK(ir_make(g, IR_LOG_SOFTMAX, &logits, 1, &la)), cls)));
    out(g, OK(ir_one_hot(g, cls, 10, IR_F32)));
    int map[4096];
    ir_simplify(g, map);
    char what[64];
    snprintf(what, sizeof what, "conv/pool config %zu", c);
    check_graph(g, 2e-5, 1, 4, what);
    ir_free(g);
  }
}

/* all_reduce (data-parallel gradients) is a host fallback in the plan: the program marks it as
 * a host kernel (the executor refuses such a step, naming the op) instead of miscompiling it */
Test(cuda, emit_marks_fallbacks) {
  IrGraph *g = ir_new();
  int x = data(g, "x", IR_F32, IR_SHAPE(8));
  int y = OK(ir_mul(g, x, x));
  out(g, OK(ir_exp(g, OK(ir_allreduce(g, &y, 1)))));
  char err[256];
  FusePlan *p = cuda_plan(g, false, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
  int host = 0;
  for (int i = 0; i < prog.nk; i++)
    host += prog.k[i].kind == CUDA_K_HOST;
  cr_expect_gt(host, 0);
  cr_expect(strstr(prog.source, "on the host (the interpreter)"));
  /* the executor (fake driver) refuses the step and names the op */
  Shim sh = shim_build(prog.source);
  char fake[128], cmd[512], so[160];
  snprintf(fake, sizeof fake, "%s/libcuda-fake.so", sh.dir);
  snprintf(cmd, sizeof cmd, "cc -std=gnu17 -O1 -fPIC -shared -o %s %s/tests/fake_libcuda.c", fake, SRCDIR);
  cr_assert_eq(system(cmd), 0);
  snprintf(so, sizeof so, "%s/k.so", sh.dir);
  setenv("LTL_CUDA_LIB", fake, 1);
  setenv("LTL_FAKE_CUDA_KERNELS", so, 1);
  char msg[512];
  cr_expect_null(cuda_step_compile(g, false, msg, sizeof msg));
  cr_expect(strstr(msg, "the CUDA backend has no kernel for"), "%s", msg);
  shim_free(&sh);
  cuda_program_free(&prog);
  fuse_free(p);
  ir_free(g);
}

/* ---- mixed precision (docs/precision.md): the 16-bit casts, the mixed steps, tensor cores ---- */

/* bf16-mixed and 16-mixed steps (the casts around every GEMM and convolution operand, and
 * 16-mixed's loss scaler) and bf16-true (every result rounded) compile for sm_80 and sm_90
 * like the 32-true ones */
static void nvrtc_mixed(const char *file, const char *precision, const char *cast) {
  char *src = NULL;
  nvrtc_check_precision(file, 64, precision, &src);
  cr_expect(src && strstr(src, cast), "%s %s: no %s in the generated source", file, precision, cast);
  free(src);
}
Test(cuda, nvrtc_bf16_mixed_mlp, .timeout = 120) { nvrtc_mixed("fashion_mlp.ltl", "bf16-mixed", "ltl_bf16((float)("); }
Test(cuda, nvrtc_f16_mixed_mlp, .timeout = 120) { nvrtc_mixed("fashion_mlp.ltl", "16-mixed", "ltl_f16((float)("); }
Test(cuda, nvrtc_bf16_mixed_cnn, .timeout = 120) { nvrtc_mixed("fashion_cnn.ltl", "bf16-mixed", "ltl_bf16((float)("); }
Test(cuda, nvrtc_f16_mixed_cnn, .timeout = 120) { nvrtc_mixed("fashion_cnn.ltl", "16-mixed", "ltl_f16((float)("); }
Test(cuda, nvrtc_bf16_true_cnn, .timeout = 120) { nvrtc_mixed("fashion_cnn.ltl", "bf16-true", "ltl_bf16((float)("); }

/* The casts alone, on the shim, against the interpreter bit for bit: f32 -> bf16 / f16
 * stored as 16 bits (ir_store's bits), the round trip back to f32 in registers, and bf16 /
 * f16 inputs widened to f32. Edge values first (ties to even both ways, the largest finite
 * values and the first that overflow, infinities, NaNs with payloads, subnormals of f32 and
 * of f16 and their ties, signed zeros), then random bit patterns of every exponent. */
Test(cuda, shim_casts_round_like_the_interpreter) {
  static const uint32_t edge[] = {
      0x3f808000, 0x3f818000, 0x3f808001, 0x3f817fff, 0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0xff7f8000,
      0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffc00001, 0x00000001, 0x00008000, 0x00018000,
      0x00400000, 0x807fffff, 0x80000000, 0x00000000, 0x477fe000, 0x477fefff, 0x477ff000, 0xc77ff000,
      0x38800000, 0x387fe000, 0x387fc000, 0x33800000, 0x33000000, 0x33000001, 0x33400000, 0x33c00000,
      0x32800000, 0x3f801000, 0x3f803000, 0x3f801001, 0xb2000000, 0x47800000, 0x3eaaaaab, 0xbf7fffff};
  enum { NEDGE = sizeof edge / sizeof *edge, N = NEDGE + 4000 };
  IrGraph *g = ir_new();
  int x = data(g, "x", IR_F32, IR_SHAPE(N));
  int h16[2] = {data(g, "h", IR_BF16, IR_SHAPE(N)), data(g, "q", IR_F16, IR_SHAPE(N))};
  IrDtype t16[2] = {IR_BF16, IR_F16};
  for (int t = 0; t < 2; t++) {
    int c = OK(ir_cast(g, x, t16[t]));
    out(g, c);
    out(g, OK(ir_cast(g, c, IR_F32)));
    out(g, OK(ir_cast(g, h16[t], IR_F32)));
  }
  Inputs in = inputs_new(g, 1);
  uint32_t *xv = in.data[x];
  for (int i = 0; i < N; i++) {
    xv[i] = i < NEDGE ? edge[i] : (uint32_t)(philox_uniform(7, 1, (uint64_t)i) * 4294967296.0);
    for (int t = 0; t < 2; t++) /* every 16-bit pattern, NaN payloads included */
      ((uint16_t *)in.data[h16[t]])[i] = (uint16_t)(i * 17 + t);
  }
  IrInterp *ip = interp_new(g, false);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT)
      interp_set(ip, i, input_ptr(g, &in, i));
  cr_assert_null(interp_run(ip));
  char err[512];
  FusePlan *p = cuda_plan(g, false, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
  Shim sh = shim_build(prog.source);
  Run r = run_shim(&sh, &prog, &in, 0, 3);
  for (int o = 0; o < g->nout; o++) {
    const IrNode *n = &g->node[g->out[o].value];
    const unsigned char *got = run_output(&r, p, o);
    const double *ref = interp_data(ip, g->out[o].value);
    int size = ir_dtype_size(n->dtype), bad = 0;
    for (int i = 0; i < N && bad < 5; i++) {
      unsigned char want[4];
      ir_store(n->dtype, want, 0, ref[i]);
      double v = ir_load(n->dtype, got, i);
      /* bit-exact; an f32 NaN may differ in its payload (the 16-bit ones are canonical) */
      if (memcmp(want, got + i * size, (size_t)size) && !(n->dtype == IR_F32 && isnan(v) && isnan(ref[i]))) {
        bad++;
        cr_expect(0, "output %d (%s of %s) at %d, input 0x%08x: got %a, want %a", o, ir_dtype_name(n->dtype),
                  ir_dtype_name(g->node[n->in[0]].dtype), i, xv[i], v, ref[i]);
      }
    }
  }
  run_free(&r);
  shim_free(&sh);
  cuda_program_free(&prog);
  fuse_free(p);
  interp_free(ip);
  inputs_free(g, &in);
  ir_free(g);
}

/* The mixed training steps on the shim against the interpreter. The casts are bit-exact, so
 * only f32 summation order differs, as between the CPU JIT and the interpreter (test_precision.c:
 * a GEMM result on the other side of a 16-bit rounding boundary moves the next operand by one
 * 16-bit ulp). 16-mixed includes the loss scaler (scale, inf check, skipped update). */
Test(cuda, shim_bf16_mixed_mlp_step, .timeout = 180) {
  StepGraph *st = lower_example_precision("fashion_mlp.ltl", 16, NULL, 0, "bf16-mixed");
  check_graph(st->g, 1e-3, 1, 4, "bf16-mixed mlp step");
  sema_step_free(st);
}

Test(cuda, shim_f16_mixed_mlp_step, .timeout = 180) {
  StepGraph *st = lower_example_precision("fashion_mlp.ltl", 16, NULL, 0, "16-mixed");
  check_graph(st->g, 1e-3, 1, 4, "16-mixed mlp step");
  sema_step_free(st);
}

Test(cuda, shim_bf16_mixed_cnn_step, .timeout = 300) {
  StepGraph *st = lower_example_precision("fashion_cnn.ltl", 2, NULL, 0, "bf16-mixed");
  check_graph(st->g, 2e-3, 1, 3, "bf16-mixed cnn step");
  sema_step_free(st);
}

/* Tensor cores through the executor: in a mixed step every GEMM reads two 16-bit-rounded
 * operands, so cuda_blas.c asks cuBLASLt for CUBLAS_COMPUTE_32F_FAST_16BF (bf16 modes) or
 * _FAST_16F (16-mixed), and the fake cuBLASLt -- which then rounds its inputs to that format,
 * as the compute type allows -- must see exactly those, and match the interpreter. */
static void executor_mixed(IrGraph *g, const char *path, int c32, int c16f, int c16bf) {
  cuda_test_need_nvrtc();
  memset(blas_computes, 0, sizeof blas_computes);
  executor_check(g, true, path);
  cr_expect(blas_computes[0] == c32 && blas_computes[1] == c16f && blas_computes[2] == c16bf,
            "cuBLASLt saw %d 32F, %d FAST_16F, %d FAST_16BF GEMMs; expected %d, %d, %d", blas_computes[0],
            blas_computes[1], blas_computes[2], c32, c16f, c16bf);
}

Test(cuda, executor_bf16_mixed_mlp_tensor_cores, .timeout = 180) {
  StepGraph *st = lower_example_precision("fashion_mlp.ltl", 8, NULL, 0, "bf16-mixed");
  executor_mixed(st->g, "8 of 8 GEMMs through cuBLASLt; 8 of them on tensor cores", 0, 0, 8);
  sema_step_free(st);
}

Test(cuda, executor_f16_mixed_mlp_tensor_cores, .timeout = 180) {
  StepGraph *st = lower_example_precision("fashion_mlp.ltl", 8, NULL, 0, "16-mixed");
  executor_mixed(st->g, "8 of 8 GEMMs through cuBLASLt; 8 of them on tensor cores", 0, 8, 0);
  sema_step_free(st);
}

/* GEMMs whose results tell the formats apart: loss = sum((x s) w t) / s under the mode's rule,
 * and its gradient w.r.t. w (a second GEMM, with t / s as an operand). bf16-mixed with
 * s = 2^-20 puts the operands where f16 has only subnormals or overflows (FAST_16F would
 * lose them); 16-mixed with s = 1 keeps 11 significant bits that bf16 (FAST_16BF) would cut
 * to 8. Either swap moves the loss and the update far beyond the executor check's bounds.
 * (Each case is its own test: the fake libraries are loaded once per process.) */
static IrGraph *mode_gemm_graph(const char *mode, double s) {
  IrGraph *g = ir_new();
  ir_precision_begin(g, mode);
  int x = data(g, "x", IR_F32, IR_SHAPE(32, 48)), lr = data(g, "lr", IR_F32, IR_SCALAR);
  int t = data(g, "t", IR_F32, IR_SHAPE(32, 40));
  int w = OK(ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(48, 40)));
  int y = OK(ir_mul(g, OK(ir_matmul(g, OK(ir_mul(g, x, OK(ir_scalar(g, s, IR_F32)))), w)), t));
  int loss = OK(ir_mul(g, OK(ir_sum(g, y, NULL, 0, false)), OK(ir_scalar(g, 1 / s, IR_F32))));
  int grad;
  cr_assert_eq(ad_grad(g, loss, &w, 1, &grad), 0, "%s", ir_error(g));
  IrSgd sgd = ir_sgd_defaults(lr);
  cr_assert_eq(ir_sgd(g, "opt", &sgd, &w, &grad, 1), 0, "%s", ir_error(g));
  ir_precision_end(g, mode);
  ir_output(g, loss, IR_OUT_VALUE, -1, "loss");
  int map[256];
  cr_assert_lt(g->n, 256);
  ir_simplify(g, map);
  return g;
}

static void mode_gemm(const char *mode, double s, const char *path, int c32, int c16f, int c16bf) {
  IrGraph *g = mode_gemm_graph(mode, s);
  executor_mixed(g, path, c32, c16f, c16bf);
  ir_free(g);
}
Test(cuda, executor_bf16_gemm_gets_fast_16bf, .timeout = 120) {
  mode_gemm("bf16-mixed", 0x1p-20, "2 of 2 GEMMs through cuBLASLt; 2 of them on tensor cores", 0, 0, 2);
}
Test(cuda, executor_f16_gemm_gets_fast_16f, .timeout = 120) {
  mode_gemm("16-mixed", 1, "2 of 2 GEMMs through cuBLASLt; 2 of them on tensor cores", 0, 2, 0);
}
Test(cuda, executor_f32_gemm_stays_f32, .timeout = 120) { /* unrounded operands: no tensor cores */
  mode_gemm("32-true", 0x1p-20, "2 of 2 GEMMs through cuBLASLt", 2, 0, 0);
}

/* 16-mixed's loss scaler on the shim when the scaled gradients overflow (a scale of 2^100:
 * f16 GEMM operands become inf): found_inf holds, so every weight and Adam moment keeps its
 * bytes, the scale halves and the growth count restarts -- as the interpreter says. */
Test(cuda, shim_f16_mixed_overflow_skips_the_step, .timeout = 120) {
  StepGraph *st = lower_example_precision("fashion_mlp.ltl", 8, NULL, 0, "16-mixed");
  const IrGraph *g = st->g;
  Inputs in = inputs_new(g, 1);
  int scale = -1, tracker = -1;
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT && g->node[i].name) {
      if (!strcmp(g->node[i].name, "opt.scaler.scale"))
        scale = i;
      if (!strcmp(g->node[i].name, "opt.scaler.growth_tracker"))
        tracker = i;
    }
  cr_assert(scale >= 0 && tracker >= 0, "the scaler's state inputs");
  ir_store(IR_F32, (void *)input_ptr(g, &in, scale), 0, 0x1p100);
  ir_store(IR_F32, (void *)input_ptr(g, &in, tracker), 0, 5);
  IrInterp *ip = interp_new(g, false);
  for (int i = 0; i < g->n; i++)
    if (g->node[i].op == IR_INPUT)
      interp_set(ip, i, input_ptr(g, &in, i));
  cr_assert_null(interp_run(ip));
  char err[512];
  FusePlan *p = cuda_plan(g, true, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
  Shim sh = shim_build(prog.source);
  Run r = run_shim(&sh, &prog, &in, 2, 4);
  int kept = 0;
  for (int o = 0; o < g->nout; o++) {
    const IrOutput *out = &g->out[o];
    if (out->kind != IR_OUT_UPDATE)
      continue;
    const IrNode *t = &g->node[out->target];
    const unsigned char *got = run_output(&r, p, o), *before = input_ptr(g, &in, out->target);
    const double *ref = interp_data(ip, out->value);
    double v = ir_load(t->dtype, got, 0);
    if (out->target == scale) {
      cr_expect(v == 0x1p99 && ref[0] == 0x1p99, "scale: shim %g, interpreter %g", v, ref[0]);
    } else if (out->target == tracker) {
      cr_expect(v == 0 && ref[0] == 0, "growth tracker: shim %g, interpreter %g", v, ref[0]);
    } else {
      size_t bytes = (size_t)(ir_numel(t->shape) * ir_dtype_size(t->dtype));
      cr_expect(!memcmp(got, before, bytes), "%s changed on a skipped step", t->name);
      for (int64_t i = 0; i < ir_numel(t->shape); i++)
        cr_assert_eq(ref[i], ir_load(t->dtype, before, i), "the interpreter keeps %s too", t->name);
      kept++;
    }
  }
  cr_expect_gt(kept, 6, "weights and moments kept: %d", kept);
  run_free(&r);
  shim_free(&sh);
  cuda_program_free(&prog);
  fuse_free(p);
  interp_free(ip);
  inputs_free(g, &in);
  sema_step_free(st);
}

/* a cuBLASLt that refuses the 16-bit compute types: the same GEMMs in f32 (the same values),
 * none on tensor cores */
Test(cuda, executor_mixed_without_fast_16bf_falls_back_to_f32, .timeout = 180) {
  setenv("LTL_FAKE_CUBLASLT_NO_FAST", "1", 1);
  StepGraph *st = lower_example_precision("fashion_mlp.ltl", 8, NULL, 0, "bf16-mixed");
  executor_mixed(st->g, "8 of 8 GEMMs through cuBLASLt", 8, 0, 0);
  sema_step_free(st);
}

/* for tests/test_cuda_conv.c (cuda_test.h) */
void cuda_test_check_graph(const IrGraph *g, double tol, double scale, int maxgrid, const char *what) {
  check_graph(g, tol, scale, maxgrid, what);
}

int cuda_test_bit_differences(const IrGraph *g, const int (*cfg)[2], int ncfg) {
  char err[512];
  Inputs in = inputs_new(g, 1);
  FusePlan *p = cuda_plan(g, true, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
  Shim sh = shim_build(prog.source);
  Run first = run_shim(&sh, &prog, &in, cfg[0][1], cfg[0][0]);
  int diff = 0;
  for (int c = 1; c < ncfg; c++) {
    Run r = run_shim(&sh, &prog, &in, cfg[c][1], cfg[c][0]);
    for (int o = 0; o < g->nout; o++) {
      const IrNode *n = &g->node[g->out[o].value];
      size_t bytes = (size_t)(ir_numel(n->shape) * ir_dtype_size(n->dtype));
      diff += memcmp(run_output(&r, p, o), run_output(&first, p, o), bytes) != 0;
    }
    run_free(&r);
  }
  run_free(&first);
  shim_free(&sh);
  cuda_program_free(&prog);
  fuse_free(p);
  inputs_free(g, &in);
  return diff;
}
