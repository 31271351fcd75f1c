/* cuda_nvrtc.c — run-time compilation of the generated CUDA C with NVRTC (prefix cuda_).
 *
 * libnvrtc is dlopen'ed, never linked, and its few entry points are declared here (no CUDA
 * header is included), so ltlc builds and runs without the toolkit. CUBINs go into the
 * compiled-code cache of the CPU backend ($XDG_CACHE_HOME/ltl, LTL_CACHE=0 turns it off),
 * keyed by an XXH3-128 of the source, the architecture and NVRTC's version. */
#include "cuda.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

typedef int nvrtcResult; /* NVRTC_SUCCESS = 0 */
typedef struct _nvrtcProgram *nvrtcProgram;

static struct {
  void *lib;
  char why[512];
  nvrtcResult (*version)(int *, int *);
  const char *(*error_string)(nvrtcResult);
  nvrtcResult (*create)(nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *);
  nvrtcResult (*destroy)(nvrtcProgram *);
  nvrtcResult (*compile)(nvrtcProgram, int, const char *const *);
  nvrtcResult (*log_size)(nvrtcProgram, size_t *);
  nvrtcResult (*log)(nvrtcProgram, char *);
  nvrtcResult (*cubin_size)(nvrtcProgram, size_t *);
  nvrtcResult (*cubin)(nvrtcProgram, char *);
  int major, minor;
} nv;
static pthread_once_t nv_once = PTHREAD_ONCE_INIT;

static void nv_load(void) {
  const char *env = getenv("LTL_NVRTC_LIB");
  const char *names[] = {"libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13",
                         "/usr/local/cuda/lib64/libnvrtc.so"};
  if (env && env[0]) {
    nv.lib = dlopen(env, RTLD_NOW | RTLD_LOCAL);
    if (!nv.lib)
      snprintf(nv.why, sizeof nv.why, "NVRTC could not be loaded from LTL_NVRTC_LIB=%s: %s", env, dlerror());
  } else {
    for (size_t i = 0; i < sizeof names / sizeof *names && !nv.lib; i++)
      nv.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!nv.lib)
      snprintf(nv.why, sizeof nv.why, "%s",
               "NVRTC is not installed (no libnvrtc.so.13 in the library path or /usr/local/cuda/lib64)");
  }
  if (!nv.lib)
    return;
#define SYM(field, name)                                                                                  \
  if (!(*(void **)&nv.field = dlsym(nv.lib, name))) {                                                      \
    snprintf(nv.why, sizeof nv.why, "the NVRTC library has no %s", name);                                 \
    dlclose(nv.lib);                                                                                      \
    nv.lib = NULL;                                                                                        \
    return;                                                                                               \
  }
  SYM(version, "nvrtcVersion")
  SYM(error_string, "nvrtcGetErrorString")
  SYM(create, "nvrtcCreateProgram")
  SYM(destroy, "nvrtcDestroyProgram")
  SYM(compile, "nvrtcCompileProgram")
  SYM(log_size, "nvrtcGetProgramLogSize")
  SYM(log, "nvrtcGetProgramLog")
  SYM(cubin_size, "nvrtcGetCUBINSize")
  SYM(cubin, "nvrtcGetCUBIN")
#undef SYM
  nv.version(&nv.major, &nv.minor);
}

bool cuda_nvrtc_available(char *err, size_t errlen) {
  pthread_once(&nv_once, nv_load);
  if (!nv.lib && err)
    snprintf(err, errlen, "%s", nv.why);
  return nv.lib != NULL;
}

int cuda_nvrtc_version(void) { return cuda_nvrtc_available(NULL, 0) ? nv.major * 1000 + nv.minor * 10 : 0; }

void cuda_build_free(CudaBuild *b) {
  free(b->cubin);
  free(b->log);
  memset(b, 0, sizeof *b);
}

/* ---- the cache: "LTLCUBIN" + size + XXH3-64 of the CUBIN, then the CUBIN ---- */

typedef struct {
  char magic[8];
  uint64_t size, sum;
} CubinHeader;

static bool cache_path(char *out, size_t n, const char *source, int arch) {
  char dir[4096];
  if (!llvm_cache_dir(dir, sizeof dir))
    return false;
  XXH3_state_t *st = XXH3_createState();
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, source, strlen(source));
  int key[2] = {arch, cuda_nvrtc_version()};
  XXH3_128bits_update(st, key, sizeof key);
  XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  return snprintf(out, n, "%s/cuda-%016llx%016llx-sm%d.cubin", dir, (unsigned long long)h.high64,
                  (unsigned long long)h.low64, arch) < (int)n;
}

static bool cache_load(const char *path, CudaBuild *b) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return false;
  CubinHeader h;
  struct stat st;
  bool ok = fstat(fileno(f), &st) == 0 && fread(&h, sizeof h, 1, f) == 1 && !memcmp(h.magic, "LTLCUBIN", 8) &&
            h.size > 0 && (uint64_t)st.st_size == sizeof h + h.size;
  void *bin = ok ? malloc(h.size) : NULL;
  ok = bin && fread(bin, h.size, 1, f) == 1 && XXH3_64bits(bin, h.size) == h.sum;
  fclose(f);
  if (!ok) {
    free(bin);
    return false;
  }
  b->cubin = bin;
  b->size = h.size;
  b->log = strdup("");
  b->cached = true;
  return true;
}

/* written to a temporary file and renamed: a reader never sees half a file */
static void cache_store(const char *path, const CudaBuild *b) {
  char tmp[4500];
  snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f)
    return;
  CubinHeader h = {.size = b->size, .sum = XXH3_64bits(b->cubin, b->size)};
  memcpy(h.magic, "LTLCUBIN", 8);
  bool ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(b->cubin, b->size, 1, f) == 1;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0)
    unlink(tmp);
}

bool cuda_nvrtc_compile(const char *source, int arch, bool use_cache, CudaBuild *b, char *err, size_t errlen) {
  memset(b, 0, sizeof *b);
  if (!cuda_nvrtc_available(err, errlen))
    return false;
  char path[4400];
  bool cached = use_cache && cache_path(path, sizeof path, source, arch);
  if (cached && cache_load(path, b))
    return true;
  nvrtcProgram prog;
  nvrtcResult r = nv.create(&prog, source, "ltl_step.cu", 0, NULL, NULL);
  if (r) {
    snprintf(err, errlen, "NVRTC: %s", nv.error_string(r));
    return false;
  }
  char archopt[48];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=sm_%d", arch);
  const char *opts[] = {archopt, "--ptxas-options=-v", "--std=c++17", "-I/usr/local/cuda/include"};
  r = nv.compile(prog, (int)(sizeof opts / sizeof *opts), opts);
  size_t ls = 0;
  nv.log_size(prog, &ls);
  b->log = calloc(ls + 1, 1);
  if (ls)
    nv.log(prog, b->log);
  if (!r && !nv.cubin_size(prog, &b->size) && b->size) {
    b->cubin = malloc(b->size);
    r = nv.cubin(prog, b->cubin);
  } else if (!r) {
    r = -1;
  }
  nv.destroy(&prog);
  if (r) {
    snprintf(err, errlen, "NVRTC could not compile the step for sm_%d: %s\n%.*s", arch,
             r > 0 ? nv.error_string(r) : "no CUBIN", 1500, b->log ? b->log : "");
    cuda_build_free(b);
    return false;
  }
  if (cached)
    cache_store(path, b);
  return true;
}

/* The ptxas report, one block per function:
 *   ptxas info    : Compiling entry function 'ltl_k3' for 'sm_80'
 *   ptxas info    : Function properties for ltl_k3
 *       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
 *   ptxas info    : Used 24 registers, used 1 barriers, 256 bytes smem, 360 bytes cmem[0]
 */
int cuda_ptxas_parse(const char *log, CudaPtxasInfo *info, int max) {
  int n = -1;
  for (const char *line = log; line && *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    char buf[512];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
    line = end ? end + 1 : NULL;
    if (strstr(buf, "warning") || strstr(buf, "error"))
      return -1;
    const char *p;
    if ((p = strstr(buf, "Compiling entry function '"))) {
      if (n + 1 >= max)
        return max;
      n++;
      memset(&info[n], 0, sizeof info[n]);
      p += strlen("Compiling entry function '");
      const char *q = strchr(p, '\'');
      snprintf(info[n].name, sizeof info[n].name, "%.*s", q ? (int)(q - p) : 0, p);
    } else if (n >= 0 && (p = strstr(buf, "bytes stack frame"))) {
      long long a = 0, s = 0, l = 0;
      if (sscanf(buf, " %lld bytes stack frame, %lld bytes spill stores, %lld bytes spill loads", &a, &s, &l) == 3) {
        info[n].stack = a, info[n].spill_stores = s, info[n].spill_loads = l;
      }
    } else if (n >= 0 && (p = strstr(buf, "Used "))) {
      sscanf(p, "Used %d registers", &info[n].registers);
      const char *sm = strstr(p, " bytes smem");
      if (sm) {
        const char *st = sm;
        while (st > p && st[-1] >= '0' && st[-1] <= '9')
          st--;
        info[n].smem = atoll(st);
      }
    }
  }
  return n + 1;
}
