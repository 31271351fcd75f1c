/* cuda_probe.c — is a usable GPU here? (cuda_rt_probe). Apart from the executor in cuda_rt.c so
 * that `ltlc run` and the programs of `ltlc build` can answer `accelerator = "cuda"` without
 * linking the CUDA code generator. */
#include "cuda.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef int CUresult; /* CUDA_SUCCESS = 0 */
typedef int CUdevice;

const CudaStepApi *cuda_step_api;

const char *cuda_dlsyms(void *lib, const CudaSym *syms, size_t n, void *table) {
  for (size_t i = 0; i < n; i++) {
    void *p = dlsym(lib, syms[i].name);
    if (!p)
      return syms[i].name;
    memcpy((char *)table + syms[i].off, &p, sizeof p);
  }
  return NULL;
}

bool cuda_rt_probe(int *cc, char *err, size_t errlen) {
  const char *env = getenv("LTL_CUDA_LIB");
  const char *name = env && env[0] ? env : "libcuda.so.1";
  void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    snprintf(err, errlen, "no NVIDIA driver: %s could not be loaded", name);
    return false;
  }
  CUresult (*init)(unsigned) = (CUresult(*)(unsigned))dlsym(lib, "cuInit");
  CUresult (*count)(int *) = (CUresult(*)(int *))dlsym(lib, "cuDeviceGetCount");
  CUresult (*get)(CUdevice *, int) = (CUresult(*)(CUdevice *, int))dlsym(lib, "cuDeviceGet");
  CUresult (*attr)(int *, int, CUdevice) = (CUresult(*)(int *, int, CUdevice))dlsym(lib, "cuDeviceGetAttribute");
  bool ok = false;
  int n = 0, major = 0, minor = 0;
  CUdevice dev = 0;
  CUresult r;
  if (!init || !count || !get || !attr)
    snprintf(err, errlen, "%s lacks the driver API (cuInit, cuDeviceGetCount, ...)", name);
  else if ((r = init(0)) != 0)
    snprintf(err, errlen, "no usable GPU: cuInit failed (CUresult %d; no device or driver mismatch)", r);
  else if (count(&n) != 0 || n < 1)
    snprintf(err, errlen, "%s", "no usable GPU: the driver sees no CUDA device");
  else if (get(&dev, 0) != 0 || attr(&major, 75 /* COMPUTE_CAPABILITY_MAJOR */, dev) != 0 ||
           attr(&minor, 76 /* ..._MINOR */, dev) != 0)
    snprintf(err, errlen, "%s", "no usable GPU: device 0 does not answer");
  else if (major < 8)
    snprintf(err, errlen, "no usable GPU: device 0 has compute capability %d.%d, the backend needs 8.0 or newer",
             major, minor);
  else
    ok = true;
  if (ok && cc)
    *cc = major * 10 + minor;
  dlclose(lib);
  return ok;
}
