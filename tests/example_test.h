/* example_test.h — an example's training step, lowered and simplified, for the backend tests
 * (tests/test_cpu.c, test_cache.c, test_cuda.c). */
#ifndef LTL_EXAMPLE_TEST_H
#define LTL_EXAMPLE_TEST_H

#include <criterion/criterion.h>
#include <stdio.h>

#include "front.h"
#include "sema.h"

/* examples/FILE's training_step at this batch size, with --model/--trainer-style overrides,
 * in a trainer precision (NULL: 32-true). */
static inline StepGraph *lower_example_precision(const char *file, int64_t batch, const char *const *ov, int nov,
                                                 const char *precision) {
  static Ast ast;
  char *text = NULL, path[512];
  snprintf(path, sizeof path, "%s/examples/%s", SRCDIR, file);
  Node *root = parse_file(&ast, path, &text);
  cr_assert(root && diag_error_count() == 0, "parse %s", path);
  sema_check_config(root);
  SemaOptions opt = {.batch = batch, .backward = true, .seed = 42, .overrides = ov, .noverrides = nov,
                     .precision = precision};
  StepGraph *s = sema_lower(root, path, "training_step", &opt, true);
  cr_assert(s, "lower %s", path);
  sema_simplify(s);
  return s;
}

static inline StepGraph *lower_example(const char *file, int64_t batch, const char *const *ov, int nov) {
  return lower_example_precision(file, batch, ov, nov, NULL);
}

#endif
