/* test_ir_pass.c — each simplification pass does what it says and preserves the results. */
#include "ir_test.h"

static IrGraph *g;
static void setup(void) { g = ir_new(); }
static void teardown(void) { ir_free(g); }
TestSuite(pass, .init = setup, .fini = teardown);

static const double xv[] = {0.5, -1.25, 2, 3, -0.75, 1};

/* Values of every output with input "x" = xv (f32 mode: the rounding must not change). */
static double *eval_outputs(void) {
  IrInterp *ip = interp_new(g, false);
  int x = ir_find_input(g, "x");
  if (x >= 0)
    interp_set_f64(ip, x, xv);
  const char *err = interp_run(ip);
  cr_assert_null(err, "%s", err);
  double *all = calloc(1024, sizeof *all);
  int k = 0;
  for (int i = 0; i < g->nout; i++) {
    int64_t n = ir_numel(g->node[g->out[i].value].shape);
    for (int64_t j = 0; j < n && k < 1024; j++)
      all[k++] = interp_data(ip, g->out[i].value)[j];
  }
  interp_free(ip);
  return all;
}

static void expect_same(const double *a, const double *b) {
  for (int i = 0; i < 1024; i++)
    cr_expect(memcmp(&a[i], &b[i], sizeof *a) == 0, "output element %d: %.17g vs %.17g", i, a[i], b[i]);
}

static int x6(void) { return ok(ir_input(g, IR_IN_DATA, "x", IR_F32, IR_SHAPE(2, 3))); }
static void out(int v) { cr_assert_geq(ir_output(g, v, IR_OUT_VALUE, -1, "y"), 0); }
static int lit(double v) { return ok(ir_scalar(g, v, IR_F32)); }

Test(pass, fold_scalars_and_data) {
  int x = x6();
  int s = ok(ir_add(g, lit(2), lit(3)));
  int d = ok(ir_const_data(g, IR_F32, IR_SHAPE(3), (double[]){1, 2, 3}));
  int e = ok(ir_exp(g, d));
  int y = ok(ir_add(g, ir_mul(g, x, s), e));
  out(y);
  double *before = eval_outputs();
  cr_expect_eq(ir_fold(g), 2);
  cr_expect_eq(g->node[s].op, IR_CONST);
  cr_expect_eq(g->node[s].a.value, 5);
  cr_expect_null(g->node[s].data, "a uniform result is a fill");
  cr_expect_eq(g->node[e].op, IR_CONST);
  cr_assert_not_null(g->node[e].data);
  cr_expect_eq(g->node[e].data[2], (double)expf(3));
  cr_expect_neq(g->node[y].op, IR_CONST, "x is not a constant");
  double *after = eval_outputs();
  expect_same(before, after);
  free(before);
  free(after);
}

Test(pass, fold_leaves_failing_kernels_for_run_time) {
  int w = ok(ir_const_data(g, IR_F32, IR_SHAPE(2), (double[]){1, 2}));
  int i = ok(ir_const_data(g, IR_I64, IR_SHAPE(1), (double[]){5}));
  int t = ok(ir_take(g, w, i, 0));
  out(t);
  cr_expect_eq(ir_fold(g), 0);
  cr_expect_eq(g->node[t].op, IR_TAKE);
}

Test(pass, cse_merges_duplicates) {
  int x = x6();
  int a = ok(ir_exp(g, x)), b = ok(ir_exp(g, x));
  int sa = ok(ir_sum(g, a, (int[]){0}, 1, false)), sb = ok(ir_sum(g, b, (int[]){0}, 1, false));
  int sc = ok(ir_sum(g, b, (int[]){1}, 1, false));
  int y = ok(ir_add(g, sa, sb));
  out(y);
  out(sc);
  double *before = eval_outputs();
  cr_expect_eq(ir_cse(g), 2, "exp and the first sum");
  cr_expect_eq(g->node[y].in[0], sa);
  cr_expect_eq(g->node[y].in[1], sa);
  cr_expect_eq(g->node[sc].in[0], a, "other axes: a different sum, on the merged exp");
  double *after = eval_outputs();
  expect_same(before, after);
  free(before);
  free(after);
}

Test(pass, cse_keeps_distinct_inputs) {
  int a = ok(ir_input(g, IR_IN_DATA, "a", IR_F32, IR_SHAPE(2)));
  int b = ok(ir_input(g, IR_IN_DATA, "b", IR_F32, IR_SHAPE(2)));
  out(ok(ir_add(g, a, b)));
  cr_expect_eq(ir_cse(g), 0);
}

Test(pass, dce_removes_dead_nodes_and_renumbers) {
  int x = x6();
  int unused = ok(ir_input(g, IR_IN_PARAM, "unused", IR_F32, IR_SHAPE(1)));
  int dead = ok(ir_exp(g, x));
  ok(ir_log(g, dead));
  int y = ok(ir_neg(g, x));
  out(y);
  int n = g->n, map[16];
  cr_expect_eq(ir_dce(g, map), 2);
  cr_expect_eq(g->n, n - 2);
  cr_expect_eq(map[dead], -1);
  cr_expect_eq(map[unused], unused, "inputs stay: they are part of the flat layout");
  cr_expect_eq(g->out[0].value, map[y]);
  cr_expect_eq(g->node[map[y]].op, IR_NEG);
  cr_expect_eq(g->node[map[y]].in[0], map[x]);
}

/* Builds y, runs algebra + dce, and returns the op of the node that now computes y. */
static IrOp after_algebra(int y, int *now) {
  out(y);
  double *before = eval_outputs();
  ir_algebra(g);
  ir_dce(g, NULL);
  double *after = eval_outputs();
  expect_same(before, after);
  free(before);
  free(after);
  *now = g->out[g->nout - 1].value;
  return g->node[*now].op;
}

Test(pass, algebra_identities) {
  int x = x6(), v;
  cr_expect_eq(after_algebra(ok(ir_add(g, ir_mul(g, x, lit(1)), lit(0))), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_div(g, ir_sub(g, ir_add(g, lit(0), x), lit(0)), lit(1))), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_neg(g, ir_neg(g, x))), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_pow(g, x, lit(1))), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_cast(g, x, IR_F32)), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_transpose(g, ir_transpose(g, x, 0, 1), 0, 1)), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_reshape(g, ir_reshape(g, x, IR_SHAPE(6)), IR_SHAPE(2, 3))), &v),
               IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_where(g, ir_gt(g, x, lit(0)), x, x)), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_slice(g, x, 1, 0, 3, 1)), &v), IR_INPUT);
  cr_expect_eq(after_algebra(ok(ir_broadcast_to(g, x, IR_SHAPE(2, 3))), &v), IR_INPUT);
}

Test(pass, algebra_rewrites_in_place) {
  int x = x6(), v;
  cr_expect_eq(after_algebra(ok(ir_sub(g, lit(0), x)), &v), IR_NEG);
  cr_expect_eq(after_algebra(ok(ir_pow(g, x, lit(2))), &v), IR_MUL);
  cr_expect_eq(g->node[v].in[0], g->node[v].in[1]);
  cr_expect_eq(after_algebra(ok(ir_reshape(g, ir_reshape(g, x, IR_SHAPE(6)), IR_SHAPE(3, 2))), &v),
               IR_RESHAPE);
  cr_expect_eq(g->node[g->node[v].in[0]].op, IR_INPUT, "one reshape of x");
  int p = ok(ir_permute(g, ir_permute(g, ok(ir_reshape(g, x, IR_SHAPE(1, 2, 3))), (int[]){1, 2, 0}),
                        (int[]){1, 2, 0}));
  cr_expect_eq(after_algebra(p, &v), IR_PERMUTE);
  cr_expect_eq(g->node[g->node[v].in[0]].op, IR_RESHAPE, "two permutes became one");
  cr_expect_eq(after_algebra(ok(ir_sum(g, ir_reshape(g, x, IR_SHAPE(2, 1, 3)), (int[]){1}, 1, false)), &v),
               IR_RESHAPE);
}

Test(pass, algebra_leaves_what_is_not_an_identity) {
  int x = x6(), v;
  /* broadcasting makes x + zeros[4, 2, 3] a different shape; x * 0 is NaN for NaN */
  cr_expect_eq(after_algebra(ok(ir_add(g, x, ir_const(g, 0, IR_F32, IR_SHAPE(4, 2, 3)))), &v), IR_ADD);
  cr_expect_eq(after_algebra(ok(ir_mul(g, x, lit(0))), &v), IR_MUL);
  cr_expect_eq(after_algebra(ok(ir_mul(g, x, lit(2))), &v), IR_MUL);
}

Test(pass, simplify_to_fixed_point) {
  int x = x6();
  /* (x * (2 - 1)) + exp(x) + exp(x * 1) -> x + exp(x) + exp(x) with one exp */
  int a = ok(ir_mul(g, x, ir_sub(g, lit(2), lit(1))));
  int b = ok(ir_exp(g, x)), c = ok(ir_exp(g, ir_mul(g, x, lit(1))));
  int y = ok(ir_add(g, ir_add(g, a, b), c));
  out(y);
  double *before = eval_outputs();
  cr_expect_gt(ir_simplify(g, NULL), 0);
  double *after = eval_outputs();
  expect_same(before, after);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ir_print(f, g);
  fclose(f);
  cr_expect_str_eq(text, "%0 = data \"x\" : f32[2, 3]\n"
                         "%1 = exp %0 : f32[2, 3]\n"
                         "%2 = add %0, %1 : f32[2, 3]\n"
                         "%3 = add %2, %1 : f32[2, 3]\n"
                         "output \"y\" = %3\n");
  free(text);
  free(before);
  free(after);
}
