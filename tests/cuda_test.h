/* cuda_test.h — what tests/test_cuda.c lends the other CUDA suites (test_cuda_conv.c). */
#ifndef LTL_CUDA_TEST_H
#define LTL_CUDA_TEST_H

#include "ir.h"

/* Every output of g: the generated CUDA on the host shim (forward, reversed and random
 * thread orders, at most maxgrid blocks) vs the interpreter, inputs uniform in
 * [-scale, scale]; relative error <= tol. */
void cuda_test_check_graph(const IrGraph *g, double tol, double scale, int maxgrid, const char *what);
/* Runs g's generated CUDA on the shim once per configuration {maxgrid, thread order} on the
 * same inputs; returns how many outputs differ in any bit from the first configuration's. */
int cuda_test_bit_differences(const IrGraph *g, const int (*cfg)[2], int ncfg);

#endif
