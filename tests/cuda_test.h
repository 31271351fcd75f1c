/* cuda_test.h — what the CUDA suites share: the shim's compiler command, the fake libraries,
 * and what tests/test_cuda.c lends test_cuda_conv.c. */
#ifndef LTL_CUDA_TEST_H
#define LTL_CUDA_TEST_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda.h"
#include "ir.h"

/* The host compiler's command for generated CUDA on the shim (tests/cuda_shim.h): a shared
 * object loaded into this test binary, so built with its sanitizers under `make asan`. */
#if defined(__SANITIZE_ADDRESS__)
#define CUDA_TEST_SAN "-fsanitize=address,undefined -fno-omit-frame-pointer "
#else
#define CUDA_TEST_SAN ""
#endif
#define CUDA_TEST_SHIM_CC \
  "cc -std=gnu17 -O1 -g -fPIC -shared -Wall -Werror -Wno-unused-variable -Wno-unused-function " CUDA_TEST_SAN "-I" SRCDIR "/tests"

/* Skips the calling test where NVRTC cannot be loaded (the CUDA toolkit is optional). */
static inline void cuda_test_need_nvrtc(void) {
  char err[512];
  if (!cuda_nvrtc_available(err, sizeof err))
    cr_skip_test("%s", err);
}

/* Builds the stand-ins for ltlc runs in dir: libcuda-fake.so (tests/fake_libcuda.c),
 * libnvrtc-fake.so (tests/fake_libnvrtc.c: its "CUBIN" is the source built for the shim),
 * libcublaslt-fake.so (tests/fake_libcublaslt.c) and, with nccl, libnccl-fake.so
 * (tests/fake_libnccl.c). */
static inline void cuda_test_build_fakes(const char *dir, bool nccl) {
  char cmd[2048];
  int n = snprintf(cmd, sizeof cmd,
                   "cc -std=gnu17 -O1 -fPIC -shared -Wall -Werror -o %s/libcuda-fake.so %s/tests/fake_libcuda.c && "
                   "cc -std=gnu17 -O1 -fPIC -shared -Wall -Werror -o %s/libnvrtc-fake.so %s/tests/fake_libnvrtc.c "
                   "-DFAKE_NVRTC_CC='\"" CUDA_TEST_SHIM_CC "\"' && "
                   "cc -std=gnu17 -O1 -fPIC -shared -Wall -Werror -o %s/libcublaslt-fake.so %s/tests/fake_libcublaslt.c",
                   dir, SRCDIR, dir, SRCDIR, dir, SRCDIR);
  if (nccl)
    snprintf(cmd + n, sizeof cmd - (size_t)n,
             " && cc -std=gnu17 -O1 -fPIC -shared -Wall -Werror -o %s/libnccl-fake.so %s/tests/fake_libnccl.c", dir, SRCDIR);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* Every output of g: the generated CUDA on the host shim (forward, reversed and random
 * thread orders, at most maxgrid blocks) vs the interpreter, inputs uniform in
 * [-scale, scale]; relative error <= tol. */
void cuda_test_check_graph(const IrGraph *g, double tol, double scale, int maxgrid, const char *what);
/* Runs g's generated CUDA on the shim once per configuration {maxgrid, thread order} on the
 * same inputs; returns how many outputs differ in any bit from the first configuration's. */
int cuda_test_bit_differences(const IrGraph *g, const int (*cfg)[2], int ncfg);

#endif
