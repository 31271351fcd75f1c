/* llvm_step.c — a whole training step as one JIT-compiled function (prefix llvm_step_).
 *
 *   fuse_plan ─ one LLVM function per kernel (llvm_step_kern.c) ─ the entry point that calls
 *   them in order ─ O3 for the host ─ LLJIT ─ an executor holding the arena and the pool.
 *
 * The entry point is  void step(void *const *bases, const LlvmStepCtx *ctx).  bases[] holds
 * the scratch arena, the flat PARAM / BUFFER / STATE buffers, the constants, a status block,
 * the table of shared GEMM entry points and one pointer per DATA input (see FUSE_BASE_*).
 * Every address a kernel needs is bases[b] + a constant, computed in the entry point and
 * passed to the kernel in a small array; a kernel cut into parts goes through ctx->run
 * (rt_pool_run), others are called directly.  Nothing is allocated while a step runs, except
 * by the interpreter fallback (operands converted to doubles). */
#include "llvm.h"
#include "rt.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void set_err(char *err, size_t len, const char *fmt, const char *a) {
  if (err && len)
    snprintf(err, len, fmt, a);
}

/* ---- the compiled-code cache (docs/backend-cpu.md, "Compiled-code cache") ----
 *
 * A step module's object code, and each shared GEMM variant's, is stored on disk under a
 * 128-bit XXH3 key of everything that decides the code: the printed graph plus the raw bits
 * of every attribute value and constant, the plan options, the host (triple, CPU, features),
 * the GEMM blocking, the LLVM version, LTL_VERSION, the cache format and the build id of the
 * executable holding this code (so a rebuilt compiler never reads a stale object).  A file
 * is a CacheHeader then the object; it is trusted only when magic, format, kind, key,
 * length and the checksum of header and object all match.  Any failure of the cache means
 * compiling as if there were none. */

enum { CACHE_FORMAT = 1, CACHE_STEP = 1, CACHE_GEMM = 2 };
#define CACHE_MAGIC "LTLOBJ\x1a\n"
#define CACHE_MAX_OBJ ((uint64_t)256 << 20)

typedef struct {
  char magic[8];
  uint32_t format, kind;
  uint64_t key[2];     /* XXH128: low64, high64 */
  uint64_t obj_len;
  uint32_t gemm_mask;  /* CACHE_STEP: the shared GEMM variants the step calls */
  uint32_t reserved;
  char entry[64];      /* the symbol to look up, NUL-terminated */
  uint64_t sum;        /* XXH3-64 of the object, seeded with that of this header (sum = 0) */
} CacheHeader;
_Static_assert(sizeof(CacheHeader) == 120, "CacheHeader has no padding");

bool llvm_cache_dir(char *out, size_t n) {
  const char *off = getenv("LTL_CACHE");
  if (off && !strcmp(off, "0"))
    return false;
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  int w;
  if (xdg && xdg[0] == '/') {
    mkdir(xdg, 0755); /* the XDG spec: create it when missing */
    w = snprintf(out, n, "%s/ltl", xdg);
  } else if (home && home[0] == '/') {
    char dot[4096];
    if (snprintf(dot, sizeof dot, "%s/.cache", home) >= (int)sizeof dot)
      return false;
    mkdir(dot, 0755);
    w = snprintf(out, n, "%s/ltl", dot);
  } else {
    return false;
  }
  if (w < 0 || (size_t)w >= n)
    return false;
  struct stat st;
  if (mkdir(out, 0755) != 0 && errno != EEXIST)
    return false;
  return stat(out, &st) == 0 && S_ISDIR(st.st_mode) && access(out, W_OK | X_OK) == 0;
}

/* The build id of the executable (or library) this code is linked into: its GNU build-id
 * note, else an XXH3 of /proc/self/exe; unknown (no caching) if neither can be read. */
static XXH128_hash_t build_id;
static bool build_id_ok;
static pthread_once_t build_id_once = PTHREAD_ONCE_INIT;

static int find_note(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size, (void)data;
  uintptr_t self = (uintptr_t)&llvm_step_compile;
  bool mine = false;
  for (int i = 0; i < info->dlpi_phnum && !mine; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    mine = ph->p_type == PT_LOAD && self >= lo && self < lo + ph->p_memsz;
  }
  if (!mine)
    return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE)
      continue;
    const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
      const unsigned char *name = p + sizeof *nh, *desc = name + ((nh->n_namesz + 3) & ~3u);
      if (desc + nh->n_descsz > end)
        break;
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4) && nh->n_descsz) {
        build_id = XXH3_128bits(desc, nh->n_descsz);
        build_id_ok = true;
        return 1;
      }
      p = desc + ((nh->n_descsz + 3) & ~3u);
    }
  }
  return 1;
}

static void build_id_init(void) {
  dl_iterate_phdr(find_note, NULL);
  if (build_id_ok)
    return;
  FILE *f = fopen("/proc/self/exe", "rb");
  XXH3_state_t *st = XXH3_createState();
  if (f && st && XXH3_128bits_reset(st) == XXH_OK) {
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
      XXH3_128bits_update(st, buf, k);
    build_id_ok = !ferror(f);
    build_id = XXH3_128bits_digest(st);
  }
  XXH3_freeState(st);
  if (f)
    fclose(f);
}

static void h_bytes(XXH3_state_t *st, const void *p, size_t n) {
  uint64_t len = n;
  XXH3_128bits_update(st, &len, sizeof len);
  XXH3_128bits_update(st, p, n);
}
static void h_str(XXH3_state_t *st, const char *s) { h_bytes(st, s ? s : "", s ? strlen(s) : 0); }
static void h_i64(XXH3_state_t *st, int64_t v) { XXH3_128bits_update(st, &v, sizeof v); }

/* What every key starts with: the compiler, LLVM, the host and the GEMM blocking. */
static bool key_begin(XXH3_state_t *st, int kind, const LlvmHost *host, const LlvmGemmBlocking *blk) {
  pthread_once(&build_id_once, build_id_init);
  if (!build_id_ok || XXH3_128bits_reset(st) != XXH_OK)
    return false;
  unsigned maj, min, pat;
  LLVMGetVersion(&maj, &min, &pat);
  h_str(st, "ltl-object-cache");
  h_str(st, LTL_VERSION);
  h_i64(st, CACHE_FORMAT);
  h_i64(st, kind);
  XXH3_128bits_update(st, &build_id, sizeof build_id);
  h_i64(st, maj), h_i64(st, min), h_i64(st, pat);
  h_str(st, host->triple), h_str(st, host->cpu), h_str(st, host->features);
  h_i64(st, host->isa), h_i64(st, host->vec_bits);
  h_i64(st, host->fma), h_i64(st, host->avx2), h_i64(st, host->avx512f), h_i64(st, host->avx512bf16);
  h_i64(st, blk->isa), h_i64(st, blk->vec), h_i64(st, blk->mr), h_i64(st, blk->nr), h_i64(st, blk->kc);
  h_i64(st, blk->nc), h_i64(st, blk->mc), h_i64(st, blk->unroll), h_i64(st, blk->prefetch);
  h_i64(st, blk->bdirect), h_i64(st, blk->fma), h_i64(st, blk->mredge);
  return true;
}

static uint64_t cache_sum(const CacheHeader *h, const void *obj, size_t len) {
  CacheHeader z = *h;
  z.sum = 0;
  return XXH3_64bits_withSeed(obj, len, XXH3_64bits(&z, sizeof z));
}

static void cache_path(char *out, size_t n, const char *dir, int kind, XXH128_hash_t key) {
  snprintf(out, n, "%s/%s-%016llx%016llx.o", dir, kind == CACHE_STEP ? "step" : "gemm",
           (unsigned long long)key.high64, (unsigned long long)key.low64);
}

/* The object stored at path for (kind, key), malloc'd, with its header; NULL if absent,
 * truncated, corrupt or for another key. */
static void *cache_load(const char *path, int kind, XXH128_hash_t key, CacheHeader *h, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  void *obj = NULL;
  struct stat st;
  bool ok = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > sizeof *h &&
            fread(h, sizeof *h, 1, f) == 1 && !memcmp(h->magic, CACHE_MAGIC, 8) && h->format == CACHE_FORMAT &&
            h->kind == (uint32_t)kind && h->key[0] == key.low64 && h->key[1] == key.high64 && h->obj_len > 0 &&
            h->obj_len <= CACHE_MAX_OBJ && (uint64_t)st.st_size == sizeof *h + h->obj_len &&
            memchr(h->entry, 0, sizeof h->entry) && h->entry[0];
  if (ok)
    ok = (obj = malloc(h->obj_len)) && fread(obj, h->obj_len, 1, f) == 1 && cache_sum(h, obj, h->obj_len) == h->sum;
  fclose(f);
  if (!ok) {
    free(obj);
    return NULL;
  }
  *len = h->obj_len;
  return obj;
}

/* Writes header + object to path atomically (a temporary file renamed); failures ignored. */
static void cache_store(const char *path, int kind, XXH128_hash_t key, const char *entry, uint32_t gemm_mask,
                        const void *obj, size_t len) {
  static atomic_uint seq;
  if (!len || len > CACHE_MAX_OBJ || strlen(entry) >= 64)
    return;
  CacheHeader h = {.format = CACHE_FORMAT, .kind = (uint32_t)kind, .key = {key.low64, key.high64},
                   .obj_len = len, .gemm_mask = gemm_mask};
  memcpy(h.magic, CACHE_MAGIC, 8);
  snprintf(h.entry, sizeof h.entry, "%s", entry);
  h.sum = cache_sum(&h, obj, len);
  char tmp[4200];
  if (snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&seq, 1)) >= (int)sizeof tmp)
    return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return;
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmp);
    return;
  }
  bool ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(obj, len, 1, f) == 1;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0)
    unlink(tmp);
}

/* ---- the GEMMs: compiled once per process, shared by every step ----
 * Two LlvmGemm libraries, each in a JIT of its own, so that two variants can be compiled at
 * the same time; a finished variant goes into one table that every later step reads. */

enum { NLIB = 2 };
static pthread_once_t gemm_once = PTHREAD_ONCE_INIT;
static LlvmJit *gemm_jit[NLIB];
static LlvmGemm *gemm_lib[NLIB];
static pthread_mutex_t gemm_mu = PTHREAD_MUTEX_INITIALIZER;
static LlvmGemmFn gemm_table[16];

static void gemm_init(void) {
  char err[256];
  for (int i = 0; i < NLIB; i++) {
    gemm_jit[i] = llvm_jit_create(err, sizeof err);
    if (gemm_jit[i])
      gemm_lib[i] = llvm_gemm_create(gemm_jit[i], NULL, NULL);
  }
}

static LlvmGemmSpec spec_of(int i) {
  return (LlvmGemmSpec){.trans_a = i & 1, .trans_b = i >> 1 & 1, .bias = i >> 2 & 1, .relu = i >> 3 & 1};
}

/* lib_mu[lib] serialises everything done with gemm_jit[lib] and gemm_lib[lib]; lib_fn[lib]
 * holds the variants already in that JIT. */
static pthread_mutex_t lib_mu[NLIB] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static LlvmGemmFn lib_fn[NLIB][16];

/* Variant i loaded from the disk cache into gemm_jit[lib], or compiled here and stored
 * there; NULL when the cache is off or anything fails (the library then compiles it, under
 * its own symbol names). lib_mu[lib] is held. */
static LlvmGemmFn cached_gemm(int i, int lib) {
  char dir[4096], path[4200], name[64];
  if (!llvm_cache_dir(dir, sizeof dir))
    return NULL;
  LlvmJit *jit = gemm_jit[lib];
  const LlvmGemmBlocking *blk = llvm_gemm_get_blocking(gemm_lib[lib]);
  XXH3_state_t *st = XXH3_createState();
  bool ok = st && key_begin(st, CACHE_GEMM, llvm_jit_host(jit), blk);
  XXH128_hash_t key = {0};
  if (ok) {
    h_i64(st, i);
    h_str(st, LLVM_GEMM_PASSES);
    key = XXH3_128bits_digest(st);
  }
  XXH3_freeState(st);
  if (!ok)
    return NULL;
  cache_path(path, sizeof path, dir, CACHE_GEMM, key);
  snprintf(name, sizeof name, "ltl_stepgemm_%d", i);
  CacheHeader h;
  size_t len;
  void *obj = cache_load(path, CACHE_GEMM, key, &h, &len);
  if (obj && !strcmp(h.entry, name)) {
    LlvmGemmFn f = llvm_jit_add_object(jit, obj, len) ? (LlvmGemmFn)llvm_jit_lookup(jit, name) : NULL;
    free(obj);
    return f;
  }
  free(obj);
  LlvmGemmSpec spec = spec_of(i);
  LLVMModuleRef mod = llvm_jit_new_module(jit, name);
  if (!llvm_gemm_emit(mod, blk, &spec, name) || !llvm_jit_optimize(jit, mod, LLVM_GEMM_PASSES) ||
      !llvm_jit_emit_object(jit, mod, &obj, &len)) {
    LLVMDisposeModule(mod);
    return NULL;
  }
  LLVMDisposeModule(mod);
  LlvmGemmFn f = llvm_jit_add_object(jit, obj, len) ? (LlvmGemmFn)llvm_jit_lookup(jit, name) : NULL;
  if (f)
    cache_store(path, CACHE_GEMM, key, name, 0, obj, len);
  free(obj);
  return f;
}

/* Variant i, compiled (or loaded from the cache) by library `lib` unless it already is. */
static LlvmGemmFn shared_gemm(int i, int lib) {
  pthread_once(&gemm_once, gemm_init);
  pthread_mutex_lock(&gemm_mu);
  LlvmGemmFn f = gemm_table[i];
  pthread_mutex_unlock(&gemm_mu);
  if (f || !gemm_lib[lib])
    return f;
  pthread_mutex_lock(&lib_mu[lib]);
  if (!(f = lib_fn[lib][i]) && !(f = cached_gemm(i, lib))) {
    LlvmGemmSpec spec = spec_of(i);
    f = llvm_gemm_get(gemm_lib[lib], &spec);
  }
  lib_fn[lib][i] = f;
  pthread_mutex_unlock(&lib_mu[lib]);
  pthread_mutex_lock(&gemm_mu);
  if (!gemm_table[i])
    gemm_table[i] = f;
  f = gemm_table[i];
  pthread_mutex_unlock(&gemm_mu);
  return f;
}

LlvmGemmFn llvm_step_shared_gemm(const LlvmGemmSpec *spec) {
  return shared_gemm(spec->trans_a | spec->trans_b << 1 | spec->bias << 2 | spec->relu << 3, 0);
}

const LlvmGemmBlocking *llvm_step_shared_blocking(void) {
  pthread_once(&gemm_once, gemm_init);
  return gemm_lib[0] ? llvm_gemm_get_blocking(gemm_lib[0]) : NULL;
}

/* The GEMM variants a step uses, compiled by two threads (one per library) while the step's
 * own module is optimised and compiled: a cold compile costs about the longest share of
 * the three, not the sum. */
typedef struct {
  bool want[32]; /* 16 + i: the 16-bit GEMM's variant i */
  void *fn[32];
  _Atomic int next;
  pthread_t thread[NLIB];
  bool started[NLIB];
} GemmJob;

static void gemm_work(GemmJob *j, int lib) {
  for (int i; (i = atomic_fetch_add(&j->next, 1)) < 32;)
    if (j->want[i])
      j->fn[i] = i < 16 ? (void *)shared_gemm(i, lib) : (void *)llvm_gemm16_step_fn(i - 16);
}

static void *gemm_worker0(void *arg) {
  gemm_work(arg, 0);
  return NULL;
}
static void *gemm_worker1(void *arg) {
  gemm_work(arg, 1);
  return NULL;
}

static void gemm_start(GemmJob *j) {
  pthread_once(&gemm_once, gemm_init);
  void *(*fns[NLIB])(void *) = {gemm_worker0, gemm_worker1};
  for (int w = 0; w < NLIB; w++)
    j->started[w] = pthread_create(&j->thread[w], NULL, fns[w], j) == 0;
}

/* Waits for the job, doing what no thread took; false if a wanted variant did not compile. */
static bool gemm_join(GemmJob *j) {
  for (int w = 0; w < NLIB; w++)
    if (j->started[w])
      pthread_join(j->thread[w], NULL);
  gemm_work(j, 0);
  for (int w = 0; w < NLIB; w++)
    j->started[w] = false;
  for (int i = 0; i < 16; i++)
    if (j->want[i] && !j->fn[i] && !(j->fn[i] = (void *)shared_gemm(i, 0)))
      return false;
  for (int i = 16; i < 32; i++)
    if (j->want[i] && !(j->fn[i] = (void *)llvm_gemm16_step_fn(i - 16)))
      return false;
  return true;
}

/* ---- the entry point ---- */

typedef struct {
  LLVMValueRef fn[2]; /* task functions (a conv2d_bwd_filter has two phases) */
  LlvmStepBuf *buf[2];
  int nbuf[2];
} KFn;

static LLVMValueRef base_ptr(LlvmStepGen *c, LLVMValueRef *bases, LLVMValueRef arg, int b) {
  if (!bases[b]) {
    LLVMValueRef idx = LLVMConstInt(c->i64, (unsigned long long)b, 0);
    LLVMValueRef slot = LLVMBuildInBoundsGEP2(c->b, c->ptr, arg, &idx, 1, "");
    bases[b] = LLVMBuildLoad2(c->b, c->ptr, slot, "");
  }
  return bases[b];
}

static LLVMValueRef addr(LlvmStepGen *c, LLVMValueRef *bases, LLVMValueRef arg, int b, int64_t off) {
  LLVMValueRef base = base_ptr(c, bases, arg, b);
  if (!off)
    return base;
  LLVMValueRef o = LLVMConstInt(c->i64, (unsigned long long)off, 1);
  return LLVMBuildInBoundsGEP2(c->b, c->i8, base, &o, 1, "");
}

/* Address of value v's first element (through its view). */
static LLVMValueRef value_addr(LlvmStepGen *c, LLVMValueRef *bases, LLVMValueRef arg, int v) {
  const FusePlan *p = c->p;
  const FuseValue *fv = &p->val[v];
  int b = fv->how == FUSE_VIEW ? fv->of : v;
  int64_t off = p->val[b].offset + fv->voff * ir_dtype_size(c->g->node[v].dtype);
  return addr(c, bases, arg, p->val[b].base, off);
}

static LLVMValueRef argv_array(LlvmStepGen *c, LLVMBasicBlockRef entry, int n) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
  LLVMValueRef term = LLVMGetBasicBlockTerminator(entry);
  if (term)
    LLVMPositionBuilderBefore(c->b, term);
  else
    LLVMPositionBuilderAtEnd(c->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(c->b, LLVMArrayType2(c->ptr, (uint64_t)(n > 0 ? n : 1)), "argv");
  LLVMPositionBuilderAtEnd(c->b, here);
  return a;
}

static void store_argv(LlvmStepGen *c, LLVMValueRef argv, int i, LLVMValueRef v) {
  LLVMValueRef idx = LLVMConstInt(c->i64, (unsigned long long)i, 0);
  LLVMBuildStore(c->b, v, LLVMBuildInBoundsGEP2(c->b, c->ptr, argv, &idx, 1, ""));
}

static LLVMValueRef build_entry(LlvmStepGen *c, const KFn *kf, bool profile) {
  const FusePlan *p = c->p;
  LLVMTypeRef ps[] = {c->ptr, c->ptr};
  char name[64];
  snprintf(name, sizeof name, "%s.step", c->prefix);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->voidt, ps, 2, 0));
  c->fn = fn;
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->cx, fn, "entry");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->cx, fn, "body");
  LLVMPositionBuilderAtEnd(c->b, entry);
  LLVMBuildBr(c->b, body);
  LLVMPositionBuilderAtEnd(c->b, body);
  LLVMValueRef arg = LLVMGetParam(fn, 0), ctx = LLVMGetParam(fn, 1);
  LLVMTypeRef cty = LLVMStructTypeInContext(c->cx, (LLVMTypeRef[]){c->ptr, c->ptr, c->ptr, c->ptr, c->ptr}, 5, 0);
  LLVMValueRef pool = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildStructGEP2(c->b, cty, ctx, 0, ""), "pool");
  LLVMValueRef run = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildStructGEP2(c->b, cty, ctx, 1, ""), "run");
  LLVMValueRef fb = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildStructGEP2(c->b, cty, ctx, 2, ""), "fallback");
  LLVMValueRef exec = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildStructGEP2(c->b, cty, ctx, 3, ""), "exec");
  LLVMValueRef tk = profile ? LLVMBuildLoad2(c->b, c->ptr, LLVMBuildStructGEP2(c->b, cty, ctx, 4, ""), "tick") : NULL;
  LLVMTypeRef tick_ty = LLVMFunctionType(c->voidt, (LLVMTypeRef[]){c->ptr, c->i64}, 2, 0);
  LLVMTypeRef task_ty = LLVMFunctionType(c->voidt, (LLVMTypeRef[]){c->ptr, c->i64, c->i64}, 3, 0);
  LLVMTypeRef run_ty = LLVMFunctionType(c->voidt, (LLVMTypeRef[]){c->ptr, c->i64, c->ptr, c->ptr}, 4, 0);
  LLVMTypeRef fb_ty = LLVMFunctionType(c->voidt, (LLVMTypeRef[]){c->ptr, c->i64, c->ptr}, 3, 0);
  LLVMValueRef *bases = calloc((size_t)(FUSE_BASE_DATA + p->ndata + 1), sizeof *bases);
  for (int kid = 0; kid < p->nk; kid++) {
    const FuseKernel *k = &p->k[kid];
    LLVMValueRef kidv = LLVMConstInt(c->i64, (unsigned long long)kid, 0);
    if (kid > 0 && tk)
      LLVMBuildCall2(c->b, tick_ty, tk, (LLVMValueRef[]){exec, LLVMConstInt(c->i64, (unsigned long long)kid - 1, 0)}, 2, "");
    if (k->kind == FUSE_COPY) {
      int t = k->copy_dst;
      LLVMValueRef dst = addr(c, bases, arg, p->val[t].base, p->val[t].offset);
      LLVMValueRef src = value_addr(c, bases, arg, k->copy_src);
      LLVMBuildMemCpy(c->b, dst, ir_dtype_size(c->g->node[t].dtype), src, 1,
                      LLVMConstInt(c->i64, (unsigned long long)p->val[t].bytes, 0));
      continue;
    }
    if (k->kind == FUSE_FALLBACK) {
      int n = c->g->node[k->op].nin;
      LLVMValueRef av = argv_array(c, entry, n + 1);
      store_argv(c, av, 0, value_addr(c, bases, arg, k->op));
      for (int j = 0; j < n; j++)
        store_argv(c, av, j + 1, value_addr(c, bases, arg, p->in[k->op][j]));
      LLVMBuildCall2(c->b, fb_ty, fb, (LLVMValueRef[]){exec, kidv, av}, 3, "");
      continue;
    }
    for (int ph = 0; ph < 2 && kf[kid].fn[ph]; ph++) {
      int nb = kf[kid].nbuf[ph];
      LLVMValueRef av = argv_array(c, entry, nb);
      for (int i = 0; i < nb; i++)
        store_argv(c, av, i, addr(c, bases, arg, kf[kid].buf[ph][i].base, kf[kid].buf[ph][i].off));
      int parts = ph == 0 ? k->nparts : 1;
      LLVMValueRef np = LLVMConstInt(c->i64, (unsigned long long)parts, 0);
      if (parts > 1)
        LLVMBuildCall2(c->b, run_ty, run, (LLVMValueRef[]){pool, np, kf[kid].fn[ph], av}, 4, "");
      else
        LLVMBuildCall2(c->b, task_ty, kf[kid].fn[ph], (LLVMValueRef[]){av, LLVMConstInt(c->i64, 0, 0), np}, 3, "");
    }
  }
  if (tk && p->nk)
    LLVMBuildCall2(c->b, tick_ty, tk, (LLVMValueRef[]){exec, LLVMConstInt(c->i64, (unsigned long long)p->nk - 1, 0)}, 2, "");
  LLVMBuildRetVoid(c->b);
  free(bases);
  return fn;
}

/* ---- compile ---- */

/* Whether a step's GEMMs on bf16 values may run on the 16-bit GEMM (AMX): the host and
 * Linux allow AMX, the work slot holds its packing, and LTL_STEP_GEMM16 is not "0" (which
 * keeps the f32 GEMM, to compare). `ltlc build` objects keep the f32 GEMM: a built program
 * links only those. Part of the step's cache key, as it changes the generated code. */
static bool step_gemm16(const LlvmHost *host, const LlvmGemmBlocking *blk) {
  const char *e = getenv("LTL_STEP_GEMM16");
  return !(e && strcmp(e, "0") == 0) && llvm_gemm16_step_usable(host) &&
         llvm_gemm_work_size(blk) >= llvm_gemm16_step_work();
}

/* The cache key of a step: the key of its graph and options (llvm_step_graph_key), the
 * thread count, and what key_begin adds (host, blocking, compiler build). */
static bool step_key(const IrGraph *g, const LlvmStepOptions *o, int nthreads, const LlvmHost *host,
                     const LlvmGemmBlocking *blk, XXH128_hash_t *key) {
  XXH3_state_t *st = XXH3_createState();
  uint64_t gk[2];
  bool ok = st && key_begin(st, CACHE_STEP, host, blk) && llvm_step_graph_key(g, o, gk);
  if (ok) {
    h_bytes(st, gk, sizeof gk);
    h_i64(st, nthreads);
    h_i64(st, step_gemm16(host, blk));
    *key = XXH3_128bits_digest(st);
  }
  XXH3_freeState(st);
  return ok;
}

/* A cache hit (1): the step's object linked into s->jit, its entry point looked up and the
 * GEMMs it calls started (job). 0: no valid file, nothing done; -1: the object was handed to
 * the JIT but did not link (the JIT is unusable); the job is then joined and cleared. */
static int load_step(LlvmStep *s, const char *path, XXH128_hash_t key, GemmJob *job) {
  CacheHeader h;
  size_t len;
  void *obj = cache_load(path, CACHE_STEP, key, &h, &len);
  if (!obj)
    return 0;
  for (int i = 0; i < 32; i++)
    job->want[i] = h.gemm_mask >> i & 1;
  gemm_start(job);
  bool ok = llvm_jit_add_object(s->jit, obj, len) &&
            (s->entry = (void (*)(void *const *, const LlvmStepCtx *))llvm_jit_lookup(s->jit, h.entry));
  free(obj);
  if (!ok) {
    gemm_join(job);
    memset(job, 0, sizeof *job);
    s->entry = NULL;
  }
  return ok ? 1 : -1;
}

/* `ltlc build`: every step's object also goes to this sink (and the cache is not used, so
 * that the entry symbols of one process are unique). */
static LlvmStepObjectSink object_sink;
static void *object_sink_ctx;

void llvm_step_set_object_sink(LlvmStepObjectSink sink, void *ctx) {
  object_sink = sink;
  object_sink_ctx = ctx;
}

/* Generates, optimises and JIT-compiles the step's module into s->jit (s->entry), with the
 * GEMMs it calls started (job); with a cache path, the object is also stored there. False
 * with a message (and the job joined) on failure. */
static bool generate(LlvmStep *s, const LlvmStepOptions *o, LlvmGemmBlocking *blk, const char *path,
                     XXH128_hash_t key, GemmJob *job, char *err, size_t errlen) {
  static atomic_uint next_id;
  const IrGraph *g = s->g;
  const FusePlan *p = s->plan;
  LlvmStepGen gen = {.p = p, .g = g, .host = llvm_jit_host(s->jit), .blk = blk,
                     .gemm16 = !object_sink && step_gemm16(llvm_jit_host(s->jit), blk)};
  LlvmStepGen *c = &gen;
  snprintf(c->prefix, sizeof c->prefix, "ltl%u", atomic_fetch_add(&next_id, 1));
  c->mod = llvm_jit_new_module(s->jit, c->prefix);
  c->cx = llvm_jit_context(s->jit);
  c->b = LLVMCreateBuilderInContext(c->cx);
  c->i1 = LLVMInt1TypeInContext(c->cx);
  c->i8 = LLVMInt8TypeInContext(c->cx);
  c->i32 = LLVMInt32TypeInContext(c->cx);
  c->i64 = LLVMInt64TypeInContext(c->cx);
  c->f32 = LLVMFloatTypeInContext(c->cx);
  c->f64 = LLVMDoubleTypeInContext(c->cx);
  c->ptr = LLVMPointerTypeInContext(c->cx, 0);
  c->voidt = LLVMVoidTypeInContext(c->cx);
  KFn *kf = calloc((size_t)p->nk + 1, sizeof *kf);
  bool ok = kf != NULL;
  for (int kid = 0; ok && kid < p->nk; kid++) {
    const FuseKernel *k = &p->k[kid];
    if (k->kind == FUSE_COPY || k->kind == FUSE_FALLBACK)
      continue;
    int phases = k->kind == FUSE_CONV && g->node[k->op].op == IR_CONV2D_BWD_FILTER ? 2 : 1;
    for (int ph = 0; ok && ph < phases; ph++) {
      kf[kid].fn[ph] = llvm_step_kernel(c, kid, ph, err, errlen);
      ok = kf[kid].fn[ph] != NULL;
      if (ok) {
        kf[kid].nbuf[ph] = c->nbuf;
        kf[kid].buf[ph] = malloc((size_t)(c->nbuf + 1) * sizeof(LlvmStepBuf));
        if (c->nbuf > 0)
          memcpy(kf[kid].buf[ph], c->buf, (size_t)c->nbuf * sizeof(LlvmStepBuf));
      }
    }
  }
  char name[64];
  snprintf(name, sizeof name, "%.31s.step", c->prefix); /* prefix: char[32] */
  if (ok)
    build_entry(c, kf, o->profile);
  for (int kid = 0; kf && kid < p->nk; kid++) {
    free(kf[kid].buf[0]);
    free(kf[kid].buf[1]);
  }
  free(kf);
  free(c->buf);
  free(c->bufp);
  LLVMDisposeBuilder(c->b);
  uint32_t mask = 0;
  for (int i = 0; i < 32; i++) {
    job->want[i] = c->gemm[i] != NULL;
    mask |= (uint32_t)job->want[i] << i;
  }
  if (ok)
    gemm_start(job);
  if (ok && o->keep_ir && !o->optimized_ir)
    s->ir = llvm_print_module(c->mod);
  if (ok && !llvm_jit_optimize(s->jit, c->mod, NULL)) {
    set_err(err, errlen, "%s", llvm_jit_error(s->jit));
    ok = false;
  }
  if (ok && o->keep_ir && o->optimized_ir)
    s->ir = llvm_print_module(c->mod);
  if (!ok) {
    gemm_join(job);
    LLVMDisposeModule(c->mod);
    return false;
  }
  void *obj = NULL;
  size_t len = 0;
  if ((path || object_sink) && llvm_jit_emit_object(s->jit, c->mod, &obj, &len)) {
    /* code generation happened here: link the object (not the module) and store it */
    LLVMDisposeModule(c->mod);
    ok = llvm_jit_add_object(s->jit, obj, len) &&
         (s->entry = (void (*)(void *const *, const LlvmStepCtx *))llvm_jit_lookup(s->jit, name));
    if (ok && path)
      cache_store(path, CACHE_STEP, key, name, mask, obj, len);
    if (ok && object_sink)
      object_sink(object_sink_ctx, s->g, o, s->nthreads, name, mask, obj, len);
    free(obj);
  } else {
    ok = llvm_jit_add_module(s->jit, c->mod) &&
         (s->entry = (void (*)(void *const *, const LlvmStepCtx *))llvm_jit_lookup(s->jit, name));
  }
  if (!ok) {
    set_err(err, errlen, "%s", llvm_jit_error(s->jit));
    gemm_join(job);
  }
  return ok;
}

LlvmStep *llvm_step_compile(const IrGraph *g, const LlvmStepOptions *opt, char *err, size_t errlen) {
  double t0 = now_s();
  LlvmStepOptions o = opt ? *opt : (LlvmStepOptions){0};
  LlvmStep *s = calloc(1, sizeof *s);
  if (!s) {
    set_err(err, errlen, "%s", "out of memory");
    return NULL;
  }
  s->g = g;
  s->nthreads = o.pool ? rt_pool_size(o.pool) : o.nthreads > 0 ? o.nthreads : rt_cpu_count();
  s->jit = llvm_jit_create(err, errlen);
  if (!s->jit) {
    free(s);
    return NULL;
  }
  s->free_code = llvm_jit_destroy;
  const LlvmGemmBlocking *shared = llvm_step_shared_blocking();
  if (!shared) {
    set_err(err, errlen, "%s", "the shared GEMM could not be created");
    llvm_step_free(s);
    return NULL;
  }
  LlvmGemmBlocking blk = *shared;
  FuseOptions fo = {.nthreads = s->nthreads, .grads = o.grads, .blk = &blk, .no_reuse = o.no_reuse};
  s->plan = fuse_plan(g, &fo, err, errlen);
  if (!s->plan) {
    llvm_step_free(s);
    return NULL;
  }
  /* the cache: a hit links the stored object; anything wrong with it means compiling */
  char dir[4096], path[4200];
  XXH128_hash_t key = {0};
  bool cached = !o.keep_ir && !object_sink && llvm_cache_dir(dir, sizeof dir) &&
                step_key(g, &o, s->nthreads, llvm_jit_host(s->jit), &blk, &key);
  if (cached) {
    cache_path(path, sizeof path, dir, CACHE_STEP, key);
    s->cache_file = strdup(path);
    s->cache = LLVM_CACHE_MISS;
  }
  GemmJob job = {0};
  int loaded = cached ? load_step(s, path, key, &job) : 0;
  bool hit = loaded > 0;
  if (hit) {
    s->cache = LLVM_CACHE_HIT;
  } else if (loaded < 0) {
    /* a failed object may have left symbols behind: compile into a fresh JIT */
    llvm_jit_destroy(s->jit);
    if (!(s->jit = llvm_jit_create(err, errlen))) {
      llvm_step_free(s);
      return NULL;
    }
  }
  if (!hit && !generate(s, &o, &blk, cached ? path : NULL, key, &job, err, errlen)) {
    llvm_step_free(s);
    return NULL;
  }
  if (!gemm_join(&job)) {
    set_err(err, errlen, "%s", "the shared GEMM could not be compiled");
    llvm_step_free(s);
    return NULL;
  }
  memcpy(s->funcs, job.fn, sizeof s->funcs);
  if (!llvm_step_exec_init(s, &o, err, errlen))
    return NULL;
  s->compile_s = now_s() - t0;
  return s;
}

LlvmCacheState llvm_step_cache_state(const LlvmStep *s) { return s->cache; }
bool llvm_step_cache_hit(const LlvmStep *s) { return s->cache == LLVM_CACHE_HIT; }
const char *llvm_step_cache_file(const LlvmStep *s) { return s->cache_file; }

bool llvm_step_emit(FILE *out, const IrGraph *g, bool llvm_ir, bool optimized, char *err, size_t errlen) {
  LlvmStepOptions o = {.keep_ir = llvm_ir, .optimized_ir = optimized};
  LlvmStep *s = llvm_step_compile(g, &o, err, errlen);
  if (!s)
    return false;
  if (llvm_ir)
    fputs(s->ir, out);
  else
    fuse_print(out, s->plan);
  llvm_step_free(s);
  return true;
}
