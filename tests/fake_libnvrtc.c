/* fake_libnvrtc.c — a stand-in for libnvrtc.so.13 so that `ltlc run --trainer.accelerator=cuda`
 * trains end to end on a machine without a GPU (tests/test_cuda_run.c builds it and points
 * LTL_NVRTC_LIB at it, with tests/fake_libcuda.c as the driver).
 *
 * "Compiling" a program is compiling its CUDA C with the host compiler and tests/cuda_shim.h
 * into a shared object (FAKE_NVRTC_CC, set when this file is built, is the command up to the
 * output and input names); the "CUBIN" is "LTLFAKSO", its size, then the shared object's
 * bytes, which the fake driver's cuModuleLoadData recognises. Each step is its own module,
 * as on a GPU, so a run's training and validation steps coexist. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FAKE_NVRTC_CC
#error "build with -DFAKE_NVRTC_CC='\"cc ... -I<dir of cuda_shim.h>\"'"
#endif

typedef struct {
  char *source, *log, *image;
  size_t size;
} Program;

int nvrtcVersion(int *major, int *minor) { return *major = 0, *minor = 1, 0; } /* no real NVRTC's: its own cache keys */
const char *nvrtcGetErrorString(int r) { return r ? "fake NVRTC: the host compiler failed" : "NVRTC_SUCCESS"; }

int nvrtcCreateProgram(Program **p, const char *src, const char *name, int nh, const char *const *h, const char *const *inc) {
  (void)name, (void)nh, (void)h, (void)inc;
  *p = calloc(1, sizeof **p);
  (*p)->source = strdup(src);
  (*p)->log = strdup("");
  return 0;
}

int nvrtcDestroyProgram(Program **p) {
  free((*p)->source);
  free((*p)->log);
  free((*p)->image);
  free(*p);
  *p = NULL;
  return 0;
}

int nvrtcCompileProgram(Program *p, int nopt, const char *const *opt) {
  (void)nopt, (void)opt;
  char dir[] = "/tmp/ltl-fake-nvrtc-XXXXXX", c[64], so[64], cmd[2048];
  if (!mkdtemp(dir))
    return 1;
  snprintf(c, sizeof c, "%s/k.c", dir);
  snprintf(so, sizeof so, "%s/k.so", dir);
  FILE *f = fopen(c, "w");
  int r = 1;
  if (f) {
    fprintf(f, "#include \"cuda_shim.h\"\n%s", p->source);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -o %s %s -lm 2>&1", FAKE_NVRTC_CC, so, c);
    FILE *pp = popen(cmd, "r");
    char log[8192];
    size_t n = pp ? fread(log, 1, sizeof log - 1, pp) : 0;
    log[n] = 0;
    r = pp && pclose(pp) == 0 ? 0 : 1;
    free(p->log);
    p->log = strdup(log);
  }
  FILE *in = r ? NULL : fopen(so, "rb");
  if (in) {
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    fseek(in, 0, SEEK_SET);
    p->size = 16 + (size_t)n;
    p->image = malloc(p->size);
    memcpy(p->image, "LTLFAKSO", 8);
    uint64_t len = (uint64_t)n;
    memcpy(p->image + 8, &len, 8);
    r = fread(p->image + 16, 1, (size_t)n, in) == (size_t)n ? 0 : 1;
    fclose(in);
  }
  unlink(c);
  unlink(so);
  rmdir(dir);
  return r;
}

int nvrtcGetProgramLogSize(Program *p, size_t *n) { return *n = strlen(p->log) + 1, 0; }
int nvrtcGetProgramLog(Program *p, char *out) { return strcpy(out, p->log), 0; }
int nvrtcGetCUBINSize(Program *p, size_t *n) { return *n = p->size, 0; }
int nvrtcGetCUBIN(Program *p, char *out) { return memcpy(out, p->image, p->size), 0; }
