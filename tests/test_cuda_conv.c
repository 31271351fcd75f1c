/* test_cuda_conv.c — the implicit-GEMM convolutions of compiler/cuda_conv.c, without a GPU.
 *
 * 1. The host shim runs conv2d (plain, +bias, +bias +relu), conv2d_bwd_data and
 *    conv2d_bwd_filter over a table of geometries (1x1 / 3x3 / 5x5 kernels, strides 1 and 2,
 *    padding 0..2, dilation 2, per-axis attributes, channel counts that are not multiples
 *    of the tiles, batch 1 and 3, 1x1 images, K split over blocks) in three thread orders
 *    vs the interpreter.
 * 2. The launches: tiles, the weight gradient split over blocks with a deterministic sum,
 *    the same bits from any grid.
 * 3. NVRTC builds every convolution kernel of the CNN step (and of the table, and of a
 *    shape too large for 32-bit indices) for sm_80 and sm_90 within the register, stack and
 *    shared-memory budget. */
#include <criterion/criterion.h>
#include <string.h>

#include "cuda.h"
#include "cuda_test.h"
#include "example_test.h"
#include "sema.h"

#define OK(v)                                                                                   \
  ({                                                                                            \
    int v_ = (v);                                                                               \
    cr_assert(v_ >= 0, "builder failed: %s", ir_error(g));                                      \
    v_;                                                                                         \
  })

typedef struct {
  int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw;
} Geo;

static const Geo geos[] = {
    {3, 5, 6, 7, 70, 1, 1, 1, 1, 0, 0, 1, 1},    /* 1x1, two column tiles, K < 8 */
    {1, 3, 9, 9, 4, 1, 1, 2, 2, 0, 0, 1, 1},     /* 1x1 stride 2 */
    {3, 7, 8, 9, 10, 3, 3, 1, 1, 1, 1, 1, 1},    /* 3x3 padding 1: 4 row tiles */
    {3, 4, 9, 10, 66, 3, 3, 2, 2, 1, 1, 1, 1},   /* 3x3 stride 2 */
    {1, 3, 9, 8, 5, 3, 3, 1, 1, 0, 0, 2, 2},     /* dilation 2 */
    {3, 2, 11, 11, 3, 3, 3, 2, 2, 2, 2, 2, 2},   /* stride 2, padding 2, dilation 2 */
    {1, 17, 7, 6, 9, 5, 5, 1, 1, 2, 2, 1, 1},    /* 5x5 padding 2, K = 425 */
    {3, 3, 12, 13, 8, 5, 5, 2, 2, 0, 0, 1, 1},   /* 5x5 stride 2 */
    {3, 9, 1, 1, 7, 1, 1, 1, 1, 0, 0, 1, 1},     /* 1x1 images */
    {1, 5, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1},     /* a 1x1 image under a padded 3x3 */
    {3, 6, 10, 7, 12, 3, 2, 2, 1, 1, 0, 1, 2},   /* every attribute different per axis */
    {3, 4, 16, 16, 6, 3, 3, 1, 1, 1, 1, 1, 1},   /* weight gradient K = 768: split */
    {2, 20, 5, 5, 33, 3, 3, 1, 1, 1, 1, 1, 1},   /* K = 180: chunks and a tail */
    {1, 5, 3, 3, 70, 3, 3, 1, 1, 1, 1, 1, 1},    /* bwd_data: one tile, K = 630: split */
    {1, 70, 3, 3, 5, 3, 3, 1, 1, 1, 1, 1, 1},    /* conv2d +bias +relu: one tile, K = 630: split */
};
enum { NGEO = sizeof geos / sizeof *geos };

/* Per geometry: epilogue(conv2d(x, w)) with the epilogue cycling through none, +bias and
 * +bias +relu, conv2d_bwd_data(gy, w) and conv2d_bwd_filter(x, gy); DATA inputs. */
static IrGraph *conv_graph(const Geo *gs, int ng) {
  IrGraph *g = ir_new();
  for (int i = 0; i < ng; i++) {
    const Geo *q = &gs[i];
    char nm[64];
    int64_t st[2] = {q->sh, q->sw}, pd[2] = {q->ph, q->pw}, dl[2] = {q->dh, q->dw};
    snprintf(nm, sizeof nm, "x%d", i);
    int x = OK(ir_input(g, IR_IN_DATA, nm, IR_F32, IR_SHAPE(q->n, q->c, q->h, q->w)));
    snprintf(nm, sizeof nm, "w%d", i);
    int w = OK(ir_input(g, IR_IN_DATA, nm, IR_F32, IR_SHAPE(q->o, q->c, q->kh, q->kw)));
    snprintf(nm, sizeof nm, "b%d", i);
    int b = OK(ir_input(g, IR_IN_DATA, nm, IR_F32, IR_SHAPE(q->o, 1, 1)));
    int y = OK(ir_conv2d(g, x, w, st, pd, dl, 1));
    IrShape ys = g->node[y].shape;
    if (i % 3 >= 1)
      y = OK(ir_add(g, y, b));
    if (i % 3 == 2)
      y = OK(ir_relu(g, y));
    snprintf(nm, sizeof nm, "geometry %d conv2d%s", i, i % 3 == 0 ? "" : i % 3 == 1 ? " +bias" : " +bias +relu");
    ir_output(g, y, IR_OUT_VALUE, -1, nm);
    snprintf(nm, sizeof nm, "gy%d", i);
    int gy = OK(ir_input(g, IR_IN_DATA, nm, IR_F32, ys));
    IrAttr a = {.groups = 1};
    for (int j = 0; j < 2; j++)
      a.stride[j] = st[j], a.pad[j] = pd[j], a.dil[j] = dl[j];
    a.shape = g->node[x].shape;
    snprintf(nm, sizeof nm, "geometry %d conv2d_bwd_data", i);
    ir_output(g, OK(ir_make(g, IR_CONV2D_BWD_DATA, (int[]){gy, w}, 2, &a)), IR_OUT_VALUE, -1, nm);
    a.shape = g->node[w].shape;
    snprintf(nm, sizeof nm, "geometry %d conv2d_bwd_filter", i);
    ir_output(g, OK(ir_make(g, IR_CONV2D_BWD_FILTER, (int[]){x, gy}, 2, &a)), IR_OUT_VALUE, -1, nm);
  }
  return g;
}

Test(cuda_conv, shim_geometries, .timeout = 120) {
  IrGraph *g = conv_graph(geos, NGEO);
  /* the plan takes the epilogues into the convolutions, as in a model */
  char err[512];
  FusePlan *p = cuda_plan(g, true, err, sizeof err);
  cr_assert(p, "%s", err);
  int convs = 0, relus = 0, biases = 0, want_bias = 0;
  for (int i = 0; i < NGEO; i++)
    want_bias += i % 3 >= 1;
  for (int k = 0; k < p->nk; k++)
    if (p->k[k].kind == FUSE_CONV)
      convs++, relus += p->k[k].relu, biases += p->k[k].bias >= 0;
  cr_expect_eq(convs, 3 * NGEO, "one kernel per convolution");
  cr_expect_eq(biases, want_bias, "every bias in its convolution's epilogue");
  cr_expect_eq(relus, NGEO / 3, "every relu in its convolution's epilogue");
  /* K split over blocks (partials, then their sum) happens for each of the three ops */
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
  int split[3] = {0};
  for (int i = 0; i < prog.nk; i++)
    if (strstr(prog.k[i].name, "_part")) {
      IrOp op = g->node[p->k[prog.k[i].plan_kernel].op].op;
      split[op == IR_CONV2D ? 0 : op == IR_CONV2D_BWD_DATA ? 1 : 2]++;
    }
  cr_expect(split[0] >= 1 && split[1] >= 1 && split[2] >= 2, "splits: %d conv2d, %d bwd_data, %d bwd_filter",
            split[0], split[1], split[2]);
  cuda_program_free(&prog);
  fuse_free(p);
  cuda_test_check_graph(g, 1e-5, 1, 3, "convolutions");
  ir_free(g);
}

/* Deterministic whatever the grid: K splits and tiles land on other blocks, the partials
 * are summed in the same order, so 1, 2, 5 or 64 blocks in any thread order give the same
 * bits (the geometries with splits, and a few without). */
Test(cuda_conv, same_bits_on_any_grid, .timeout = 60) {
  IrGraph *g = conv_graph(geos + NGEO - 5, 5);
  static const int cfg[][2] = {{1, 0}, {2, 1}, {5, 2}, {64, 1}};
  cr_expect_eq(cuda_test_bit_differences(g, cfg, 4), 0, "outputs differ between grids");
  ir_free(g);
}

/* The launches of the CNN's convolutions at batch 64: one block per 64 x 64 tile of the
 * data GEMMs; the weight gradients (5 and 1 tiles) split over many blocks, then summed. */
Test(cuda_conv, launches) {
  StepGraph *st = lower_example("fashion_cnn.ltl", 64, NULL, 0);
  char err[512];
  FusePlan *p = cuda_plan(st->g, true, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s", err);
  int fwd = 0, data = 0, filt = 0;
  for (int i = 0; i < prog.nk; i++) {
    const CudaKernel *k = &prog.k[i];
    const FuseKernel *fk = &p->k[k->plan_kernel];
    if (fk->kind != FUSE_CONV)
      continue;
    const IrNode *n = &st->g->node[fk->op];
    int64_t M = n->shape.d[0] * n->shape.d[2] * n->shape.d[3], tiles = (M + 63) / 64 * ((n->shape.d[1] + 63) / 64);
    if (n->op == IR_CONV2D) {
      fwd++;
      cr_expect_eq(k->grid, tiles, "%s: one block per tile of N*OH*OW x O", k->name);
    } else if (n->op == IR_CONV2D_BWD_DATA) {
      data++;
      cr_expect_eq(k->grid, tiles, "%s: one block per tile of N*H*W x C", k->name);
    } else if (strstr(k->name, "_part")) {
      filt++;
      cr_expect_geq(k->grid, 132, "%s: at least a block per SM of an H100", k->name);
      cr_expect(i + 1 < prog.nk && prog.k[i + 1].plan_kernel == k->plan_kernel, "the sum follows");
      cr_expect(strstr(prog.source, "partial results, in order"));
    }
  }
  cr_expect_eq(fwd, 2);
  cr_expect_eq(data, 1, "conv1's input needs no gradient");
  cr_expect_eq(filt, 2);
  cuda_program_free(&prog);
  fuse_free(p);
  sema_step_free(st);
}

/* NVRTC: each convolution kernel of g builds for sm_80 and sm_90 with at most 128
 * registers, no spills, no stack (the 4 x 4 accumulators stay in registers) and at most
 * 48 KB of shared memory. Returns how many convolution kernels were checked per arch. */
static int nvrtc_conv(const IrGraph *g, const char *what, const char *index_type) {
  char err[4096];
  FusePlan *p = cuda_plan(g, false, err, sizeof err);
  cr_assert(p, "%s", err);
  CudaProgram prog;
  cr_assert(cuda_emit(p, &prog, err, sizeof err), "%s: %s", what, err);
  if (index_type) {
    char decl[64];
    snprintf(decl, sizeof decl, "for (%s w_ = blockIdx.x", index_type);
    cr_expect(strstr(prog.source, decl), "%s: %s indices", what, index_type);
  }
  int nconv = 0;
  static const int arch[] = {80, 90};
  for (int a = 0; a < 2; a++) {
    CudaBuild b;
    cr_assert(cuda_nvrtc_compile(prog.source, arch[a], false, &b, err, sizeof err), "%s sm_%d: %s", what, arch[a], err);
    CudaPtxasInfo info[512];
    int n = cuda_ptxas_parse(b.log, info, 512);
    cr_assert_geq(n, 0, "%s sm_%d: ptxas warned:\n%s", what, arch[a], b.log);
    nconv = 0;
    for (int i = 0; i < prog.nk; i++) {
      if (p->k[prog.k[i].plan_kernel].kind != FUSE_CONV)
        continue;
      const CudaPtxasInfo *f = NULL;
      for (int j = 0; j < n; j++)
        if (!strcmp(info[j].name, prog.k[i].name))
          f = &info[j];
      cr_assert(f, "%s sm_%d: %s is not in the ptxas report", what, arch[a], prog.k[i].name);
      nconv++;
      cr_log_info("%s sm_%d %s: %d registers, %lld bytes smem", what, arch[a], f->name, f->registers, (long long)f->smem);
      cr_expect(f->registers > 0 && f->registers <= 128, "%s sm_%d: %s uses %d registers", what, arch[a], f->name,
                f->registers);
      cr_expect_eq(f->spill_stores + f->spill_loads, 0, "%s sm_%d: %s spills", what, arch[a], f->name);
      cr_expect_eq(f->stack, 0, "%s sm_%d: %s has a stack frame", what, arch[a], f->name);
      cr_expect_leq(f->smem, 48 * 1024, "%s sm_%d: %s uses %lld bytes of shared memory", what, arch[a], f->name,
                    (long long)f->smem);
    }
    cuda_build_free(&b);
  }
  cuda_program_free(&prog);
  fuse_free(p);
  return nconv;
}

Test(cuda_conv, nvrtc_cnn_and_table, .timeout = 300) {
  cuda_test_need_nvrtc();
  StepGraph *st = lower_example("fashion_cnn.ltl", 64, NULL, 0);
  cr_expect_eq(nvrtc_conv(st->g, "cnn step", "int"), 7, "2 forward, 1 bwd_data, 2 x 2 bwd_filter");
  sema_step_free(st);
  IrGraph *g = conv_graph(geos, NGEO);
  cr_expect_geq(nvrtc_conv(g, "geometries", NULL), 3 * NGEO);
  ir_free(g);
  /* 64 images of 256 x 256 x 256: 2^30 elements, where the kernels switch to 64-bit indices */
  static const Geo huge = {64, 256, 256, 256, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  g = conv_graph(&huge, 1);
  cr_expect_geq(nvrtc_conv(g, "huge", "long long"), 3);
  ir_free(g);
}
