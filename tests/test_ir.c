/* test_ir.c — the graph and its builders: shape rules, error messages, dtype promotion,
 * printing, dtype conversions, flat layouts. */
#include "ir_test.h"

static IrGraph *g;
static void setup(void) { g = ir_new(); }
static void teardown(void) { ir_free(g); }
TestSuite(ir, .init = setup, .fini = teardown);

static IrShape shape_of(int v) { return g->node[v].shape; }

#define expect_shape(v, ...)                                                                    \
  do {                                                                                          \
    IrShape w_ = IR_SHAPE(__VA_ARGS__), s_ = shape_of(v);                                       \
    char a_[128], b_[128];                                                                      \
    cr_expect(ir_shape_eq(s_, w_), "shape %s, expected %s",                                     \
              ir_shape_str(IR_F32, s_, a_, sizeof a_), ir_shape_str(IR_F32, w_, b_, sizeof b_)); \
  } while (0)

#define expect_error(v, msg)                                                                    \
  do {                                                                                          \
    int v_ = (v);                                                                               \
    cr_expect_eq(v_, -1, "expected a failure");                                                 \
    cr_expect_str_eq(ir_error(g), msg);                                                         \
  } while (0)

static int in(const char *name, IrDtype t, IrShape s) { return ir_input(g, IR_IN_DATA, name, t, s); }

Test(ir, broadcasting_shapes) {
  int a = in("a", IR_F32, IR_SHAPE(8, 1, 6, 1)), b = in("b", IR_F32, IR_SHAPE(7, 1, 5));
  expect_shape(ok(ir_add(g, a, b)), 8, 7, 6, 5);
  int s = ok(ir_scalar(g, 2, IR_F32));
  expect_shape(ok(ir_mul(g, s, b)), 7, 1, 5);
  expect_shape(ok(ir_where(g, ok(ir_gt(g, a, s)), a, b)), 8, 7, 6, 5);
}

Test(ir, broadcast_error_names_both_shapes) {
  int a = in("a", IR_F32, IR_SHAPE(64, 128)), b = in("b", IR_F32, IR_SHAPE(64, 127));
  expect_error(ir_add(g, a, b), "add: shapes [64, 128] and [64, 127] do not broadcast "
                                "(dimension 1: 128 vs 127)");
}

Test(ir, matmul_shapes) {
  int a = in("a", IR_F32, IR_SHAPE(64, 128)), w = in("w", IR_F32, IR_SHAPE(128, 10));
  expect_shape(ok(ir_matmul(g, a, w)), 64, 10);
  int x = in("x", IR_F32, IR_SHAPE(5, 1, 3, 4)), y = in("y", IR_F32, IR_SHAPE(2, 4, 6));
  expect_shape(ok(ir_matmul(g, x, y)), 5, 2, 3, 6);
  int v = in("v", IR_F32, IR_SHAPE(4));
  expect_shape(ok(ir_matmul(g, x, v)), 5, 1, 3);   /* 1-D right operand: a column, removed */
  expect_shape(ok(ir_matmul(g, v, y)), 2, 6);      /* 1-D left operand: a row, removed */
  int l = in("l", IR_F32, IR_SHAPE(64, 784)), lw = in("lw", IR_F32, IR_SHAPE(128, 784));
  int lb = in("lb", IR_F32, IR_SHAPE(128));
  expect_shape(ok(ir_linear(g, l, lw, lb)), 64, 128);
}

Test(ir, matmul_error) {
  int a = in("a", IR_F32, IR_SHAPE(64, 128)), w = in("w", IR_F32, IR_SHAPE(127, 10));
  expect_error(ir_matmul(g, a, w), "matmul: inner dimensions differ: f32[64, 128] @ "
                                   "f32[127, 10] (128 vs 127)");
}

Test(ir, errors_propagate_without_new_message) {
  int a = in("a", IR_F32, IR_SHAPE(2, 3)), b = in("b", IR_F32, IR_SHAPE(4));
  int bad = ir_add(g, a, b);
  cr_assert_eq(bad, -1);
  char first[512];
  strcpy(first, ir_error(g));
  int n = g->n;
  cr_expect_eq(ir_exp(g, ir_sum(g, ir_mul(g, bad, a), NULL, 0, false)), -1);
  cr_expect_str_eq(ir_error(g), first);
  cr_expect_eq(g->n, n, "no node is added after a failure");
}

Test(ir, reductions) {
  int x = in("x", IR_F32, IR_SHAPE(2, 3, 4));
  expect_shape(ok(ir_sum(g, x, (int[]){1}, 1, false)), 2, 4);
  expect_shape(ok(ir_mean(g, x, (int[]){-1, 0}, 2, true)), 1, 3, 1);
  cr_expect_eq(shape_of(ok(ir_max(g, x, NULL, 0, false))).rank, 0);
  int am = ok(ir_argmax(g, x, -1, false));
  expect_shape(am, 2, 3);
  cr_expect_eq(g->node[am].dtype, IR_I64);
  expect_error(ir_sum(g, x, (int[]){3}, 1, false), "sum: axis 3 out of range for f32[2, 3, 4]");
  expect_error(ir_sum(g, x, (int[]){1, -2}, 2, false), "sum: axis -2 repeated");
  int i = in("i", IR_I32, IR_SHAPE(5));
  cr_expect_eq(g->node[ok(ir_sum(g, i, NULL, 0, false))].dtype, IR_I64);
  cr_expect_eq(g->node[ok(ir_mean(g, i, NULL, 0, false))].dtype, IR_F32);
}

Test(ir, layout_ops) {
  int x = in("x", IR_F32, IR_SHAPE(2, 3, 4));
  expect_shape(ok(ir_reshape(g, x, IR_SHAPE(4, -1))), 4, 6);
  expect_shape(ok(ir_flatten(g, x, 1, -1)), 2, 12);
  expect_shape(ok(ir_transpose(g, x, 0, 2)), 4, 3, 2);
  expect_shape(ok(ir_permute(g, x, (int[]){1, 2, 0})), 3, 4, 2);
  expect_shape(ok(ir_slice(g, x, 2, 1, 100, 2)), 2, 3, 2);
  expect_shape(ok(ir_slice(g, x, -1, -3, -1, 1)), 2, 3, 2);
  expect_shape(ok(ir_slice(g, x, 1, 2, 1, 1)), 2, 0, 4);
  expect_shape(ok(ir_concat(g, (int[]){x, x, x}, 3, 1)), 2, 9, 4);
  expect_shape(ok(ir_pad(g, x, (int64_t[]){0, 1, 2}, (int64_t[]){1, 0, 3}, 0)), 3, 4, 9);
  expect_shape(ok(ir_broadcast_to(g, x, IR_SHAPE(5, 2, 3, 4))), 5, 2, 3, 4);
  expect_error(ir_reshape(g, x, IR_SHAPE(5, 5)), "reshape: cannot reshape f32[2, 3, 4] "
                                                 "(24 elements) to f32[5, 5] (25 elements)");
  expect_error(ir_reshape(g, x, IR_SHAPE(5, -1)), "reshape: cannot infer dimension 1 of "
                                                  "f32[5, -1] from 24 elements");
  expect_error(ir_broadcast_to(g, x, IR_SHAPE(2, 6, 4)), "broadcast: cannot broadcast "
                                                         "f32[2, 3, 4] to f32[2, 6, 4]");
  expect_error(ir_slice(g, x, 0, 0, 2, 0), "slice: step must be positive, got 0");
  int y = in("y", IR_F32, IR_SHAPE(2, 4, 4));
  expect_error(ir_concat(g, (int[]){x, y}, 2, 2), "concat: shapes f32[2, 3, 4] and f32[2, 4, 4] "
                                                  "differ outside axis 2");
}

Test(ir, conv_and_pool_shapes) {
  int x = in("x", IR_F32, IR_SHAPE(8, 3, 28, 28)), w = in("w", IR_F32, IR_SHAPE(32, 3, 3, 3));
  int64_t one[2] = {1, 1}, two[2] = {2, 2}, zero[2] = {0, 0};
  expect_shape(ok(ir_conv2d(g, x, w, one, one, one, 1)), 8, 32, 28, 28);
  expect_shape(ok(ir_conv2d(g, x, w, two, zero, two, 1)), 8, 32, 12, 12);
  int wg = in("wg", IR_F32, IR_SHAPE(6, 1, 5, 5));
  expect_error(ir_conv2d(g, x, wg, one, zero, one, 2),
               "conv2d: groups=2 must divide the input channels (3) and output channels (6)");
  int x6 = in("x6", IR_F32, IR_SHAPE(1, 6, 9, 9));
  expect_shape(ok(ir_conv2d(g, x6, wg, one, zero, one, 6)), 1, 6, 5, 5);
  int w4 = in("w4", IR_F32, IR_SHAPE(32, 4, 3, 3));
  expect_error(ir_conv2d(g, x, w4, one, one, one, 1),
               "conv2d: weight f32[32, 4, 3, 3] expects 4 input channels per group, input "
               "f32[8, 3, 28, 28] has 3");
  expect_shape(ok(ir_max_pool2d(g, x, two, NULL, NULL)), 8, 3, 14, 14);
  expect_shape(ok(ir_avg_pool2d(g, x, (int64_t[]){3, 3}, two, one, true)), 8, 3, 14, 14);
  expect_error(ir_max_pool2d(g, x, two, two, two),
               "max_pool2d: padding 2 should be at most half the kernel size 2");
}

Test(ir, losses_and_indexing) {
  int logits = in("logits", IR_F32, IR_SHAPE(64, 10)), y = in("y", IR_I64, IR_SHAPE(64));
  cr_expect_eq(shape_of(ok(ir_cross_entropy(g, logits, y, 0.1))).rank, 0);
  cr_expect_eq(shape_of(ok(ir_nll_loss(g, logits, y))).rank, 0);
  int yf = in("yf", IR_F32, IR_SHAPE(64));
  expect_error(ir_nll_loss(g, logits, yf),
               "nll_loss: target must hold integer class indices, got f32[64]");
  int y2 = in("y2", IR_I64, IR_SHAPE(32));
  expect_error(ir_cross_entropy(g, logits, y2, 0),
               "cross_entropy: target i64[32] does not match input f32[64, 10] (expected the "
               "input's shape without axis 1)");
  expect_error(ir_cross_entropy(g, logits, y, 1.5), "cross_entropy: label_smoothing 1.5 is not in [0, 1]");
  int emb = in("emb", IR_F32, IR_SHAPE(100, 16)), tok = in("tok", IR_I64, IR_SHAPE(4, 7));
  expect_shape(ok(ir_embedding(g, emb, tok)), 4, 7, 16);
  expect_shape(ok(ir_one_hot(g, y, 10, IR_F32)), 64, 10);
  int gi = in("gi", IR_I64, IR_SHAPE(64, 1));
  expect_shape(ok(ir_gather(g, logits, 1, gi)), 64, 1);
  expect_error(ir_mse_loss(g, logits, y2), "mse_loss: input f32[64, 10] and target f32[32] differ in shape");
  int acc = ok(ir_accuracy(g, logits, y));
  cr_expect_eq(g->node[acc].dtype, IR_F32);
}

Test(ir, dtype_promotion) {
  int h = in("h", IR_F16, IR_SHAPE(3)), b = in("b", IR_BF16, IR_SHAPE(3));
  int f = in("f", IR_F32, IR_SHAPE(3)), i = in("i", IR_I64, IR_SHAPE(3));
  cr_expect_eq(g->node[ok(ir_add(g, h, b))].dtype, IR_F32);
  cr_expect_eq(g->node[ok(ir_add(g, f, i))].dtype, IR_F32);
  cr_expect_eq(g->node[ok(ir_mul(g, h, ok(ir_scalar(g, 0.5, IR_F64))))].dtype, IR_F16,
               "a literal takes the tensor's dtype");
  cr_expect_eq(g->node[ok(ir_mul(g, i, ok(ir_scalar(g, 2, IR_I64))))].dtype, IR_I64);
  cr_expect_eq(g->node[ok(ir_mul(g, i, ok(ir_scalar(g, 0.5, IR_F64))))].dtype, IR_F32);
  cr_expect_eq(g->node[ok(ir_div(g, i, i))].dtype, IR_F32, "true division");
  cr_expect_eq(g->node[ok(ir_exp(g, i))].dtype, IR_F32);
  cr_expect_eq(g->node[ok(ir_lt(g, f, i))].dtype, IR_BOOL);
  int c = ok(ir_lt(g, f, i));
  expect_error(ir_where(g, f, f, f), "where: condition must be bool, got f32[3]");
  expect_error(ir_add(g, c, c), "add: needs numeric operands, got bool[3]");
}

Test(ir, inputs_and_outputs) {
  int p = ok(ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(2)));
  expect_error(ir_input(g, IR_IN_PARAM, "w", IR_F32, IR_SHAPE(2)), "input: \"w\" is defined twice");
  cr_expect_eq(ir_find_input(g, "w"), p);
  cr_expect_eq(ir_find_input(g, "nope"), -1);
  int e = ok(ir_exp(g, p));
  cr_expect_geq(ir_output(g, e, IR_OUT_UPDATE, p, "w"), 0);
  cr_expect_eq(ir_output(g, ok(ir_sum(g, e, NULL, 0, false)), IR_OUT_UPDATE, p, "w"), -1);
  cr_expect_str_eq(ir_error(g), "output: f32[] does not match its target f32[2] \"w\"");
  cr_expect_eq(ir_output(g, e, IR_OUT_GRAD, e, "x"), -1);
}

Test(ir, source_locations_are_stamped) {
  int x = in("x", IR_F32, IR_SHAPE(2));
  ir_set_loc(g, 12, 5);
  int y = ok(ir_exp(g, x));
  cr_expect_eq(g->node[y].line, 12);
  cr_expect_eq(g->node[y].col, 5);
  cr_expect_eq(g->node[x].line, 0);
}

Test(ir, print_listing) {
  int x = ok(ir_input(g, IR_IN_DATA, "x", IR_F32, IR_SHAPE(64, 784)));
  int w = ok(ir_input(g, IR_IN_PARAM, "l1.weight", IR_F32, IR_SHAPE(128, 784)));
  int h = ok(ir_relu(g, ok(ir_linear(g, x, w, -1))));
  int s = ok(ir_sum(g, h, (int[]){1}, 1, true));
  ir_output(g, s, IR_OUT_VALUE, -1, "s");
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ir_print(f, g);
  fclose(f);
  cr_expect_str_eq(text, "%0 = data \"x\" : f32[64, 784]\n"
                         "%1 = param \"l1.weight\" : f32[128, 784]\n"
                         "%2 = permute %1 {perm=[1, 0]} : f32[784, 128]\n"
                         "%3 = matmul %0, %2 : f32[64, 128]\n"
                         "%4 = relu %3 : f32[64, 128]\n"
                         "%5 = sum %4 {axes=[1], keepdim} : f32[64, 1]\n"
                         "output \"s\" = %5\n");
  free(text);
}

Test(ir, dtype_rounding) {
  cr_expect_eq(ir_round(IR_F32, 0.1), (double)0.1f);
  cr_expect_eq(ir_round(IR_BF16, 1.0 + 1.0 / 256), 1.0, "ties round to even");
  cr_expect_eq(ir_round(IR_BF16, 1.0 + 3.0 / 256), 1.0 + 4.0 / 256);
  cr_expect_eq(ir_round(IR_F16, 65504.0), 65504.0);
  cr_expect(isinf(ir_round(IR_F16, 65520.0)));
  cr_expect_eq(ir_round(IR_F16, 0x1p-25), 0.0);
  cr_expect_eq(ir_round(IR_F16, 0x1.8p-24), 0x1p-23, "subnormal ties to even");
  cr_expect_eq(ir_round(IR_I64, -2.7), -2.0, "toward zero");
  cr_expect_eq(ir_round(IR_I32, 2147483648.0), -2147483648.0, "wraps");
  cr_expect_eq(ir_round(IR_U8, 257), 1);
  cr_expect_eq(ir_round(IR_BOOL, -3), 1);
}

Test(ir, host_buffers_round_trip) {
  double vals[] = {0, -1.5, 3.140625, 65504, 1e-5, -0.0};
  for (IrDtype t = IR_F64; t <= IR_F16; t++) {
    unsigned char buf[64];
    for (int i = 0; i < 6; i++)
      ir_store(t, buf, i, vals[i]);
    for (int i = 0; i < 6; i++)
      cr_expect_eq(ir_load(t, buf, i), ir_round(t, vals[i]), "%s element %d", ir_dtype_name(t), i);
  }
  uint16_t h;
  ir_store(IR_F16, &h, 0, 1.0);
  cr_expect_eq(h, 0x3c00);
  ir_store(IR_BF16, &h, 0, -2.0);
  cr_expect_eq(h, 0xc000);
}

Test(ir, flat_layout) {
  ok(ir_input(g, IR_IN_PARAM, "a", IR_F32, IR_SHAPE(3)));
  ok(ir_input(g, IR_IN_DATA, "x", IR_F32, IR_SHAPE(5)));
  int b = ok(ir_input(g, IR_IN_PARAM, "b", IR_F64, IR_SHAPE(2, 2)));
  ok(ir_input(g, IR_IN_PARAM, "c", IR_BF16, IR_SCALAR));
  IrLayout l = ir_layout(g, IR_IN_PARAM);
  cr_assert_eq(l.n, 3);
  cr_expect_str_eq(l.slot[0].name, "a");
  cr_expect_eq(l.slot[0].offset, 0);
  cr_expect_eq(l.slot[0].bytes, 12);
  cr_expect_eq(l.slot[1].offset, 64, "64-byte aligned");
  cr_expect_eq(l.slot[1].bytes, 32);
  cr_expect_eq(l.slot[1].value, b);
  cr_expect_eq(l.slot[2].offset, 128);
  cr_expect_eq(l.bytes, 130);
  ir_layout_free(&l);
}
