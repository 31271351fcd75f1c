/* cuda_test.h — what tests/test_cuda.c lends the other CUDA suites (test_cuda_conv.c). */
#ifndef LTL_CUDA_TEST_H
#define LTL_CUDA_TEST_H

#include "ir.h"

/* Every output of g: the generated CUDA on the host shim (forward, reversed and random
 * thread orders, at most maxgrid blocks) vs the interpreter, inputs uniform in
 * [-scale, scale]; relative error <= tol. */
void cuda_test_check_graph(const IrGraph *g, double tol, double scale, int maxgrid, const char *what);

#endif
