/* test_cache.c — the compiled-code cache of the CPU backend (llvm_step.c, docs/backend-cpu.md,
 * "Compiled-code cache").
 *
 * Each test points XDG_CACHE_HOME at a fresh temporary directory (Criterion runs every test in
 * a process of its own, so the environment and the process-wide GEMM table start clean) and
 * compiles the Fashion-MNIST MLP's training step.  A step linked from the cache must update
 * the parameters and optimizer state bit for bit as the freshly generated one does. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "example_test.h"
#include "llvm.h"
#include "rt.h"
#include "sema.h"

static char cache_home[256];

static void fresh_cache_home(void) {
  snprintf(cache_home, sizeof cache_home, "/tmp/ltl-cache-test-XXXXXX");
  cr_assert(mkdtemp(cache_home), "mkdtemp");
  setenv("XDG_CACHE_HOME", cache_home, 1);
  unsetenv("LTL_CACHE");
}

static void rm_rf(const char *path) {
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        rm_rf(sub);
      }
    closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static void cleanup(void) {
  if (cache_home[0])
    rm_rf(cache_home);
}

/* Files in $XDG_CACHE_HOME/ltl whose name starts with prefix ("step-", "gemm-", "" for all). */
static int count_files(const char *prefix) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/ltl", cache_home);
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.' && !strncmp(e->d_name, prefix, strlen(prefix)))
      n++;
  closedir(d);
  return n;
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ---- inputs: deterministic flat buffers and data, copied for every run ---- */

typedef struct {
  IrLayout lay[3];
  unsigned char *flat0[3]; /* the initial state */
  void **data;             /* per node: DATA / GRAD inputs */
} Inputs;

static const IrInputKind kinds[3] = {IR_IN_PARAM, IR_IN_BUFFER, IR_IN_STATE};

static double rnd(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(*s >> 11) * 0x1p-53;
}

static Inputs inputs_new(const IrGraph *g) {
  Inputs in = {0};
  uint64_t st = 12345;
  in.data = calloc((size_t)g->n, sizeof *in.data);
  for (int k = 0; k < 3; k++) {
    in.lay[k] = ir_layout(g, kinds[k]);
    in.flat0[k] = calloc(1, (size_t)in.lay[k].bytes + 64);
    for (int s = 0; s < in.lay[k].n; s++) {
      const IrSlot *sl = &in.lay[k].slot[s];
      for (int64_t i = 0; i < ir_numel(sl->shape); i++) {
        double u = rnd(&st);
        double v = !ir_dtype_is_float(sl->dtype) ? 3 : k == 0 ? 0.2 * (u - 0.5) : 1e-4 * u;
        ir_store(sl->dtype, in.flat0[k] + sl->offset, i, v);
      }
    }
  }
  for (int i = 0; i < g->n; i++) {
    const IrNode *n = &g->node[i];
    if (n->op != IR_INPUT || (n->kind != IR_IN_DATA && n->kind != IR_IN_GRAD))
      continue;
    int64_t cnt = ir_numel(n->shape);
    in.data[i] = calloc(1, (size_t)(cnt * ir_dtype_size(n->dtype) + 8));
    for (int64_t j = 0; j < cnt; j++) {
      double u = rnd(&st);
      double v = n->name && !strcmp(n->name, "lr") ? 1e-3
                 : n->name && !strcmp(n->name, "step") ? 7
                 : ir_dtype_is_float(n->dtype)       ? 2 * u - 1
                 : n->dtype == IR_BOOL               ? 1
                                                     : floor(10 * u);
      ir_store(n->dtype, in.data[i], j, v);
    }
  }
  return in;
}

static void inputs_free(const IrGraph *g, Inputs *in) {
  for (int i = 0; i < g->n; i++)
    free(in->data[i]);
  free(in->data);
  for (int k = 0; k < 3; k++) {
    ir_layout_free(&in->lay[k]);
    free(in->flat0[k]);
  }
}

/* The state after one step: the three flat buffers, concatenated, plus the loss. */
typedef struct {
  unsigned char *bytes;
  size_t n;
  double loss;
} After;

static After run_once(const StepGraph *st, LlvmStep *s, const Inputs *in) {
  const IrGraph *g = st->g;
  unsigned char *flat[3];
  size_t total = 0;
  for (int k = 0; k < 3; k++) {
    flat[k] = aligned_alloc(64, (size_t)((in->lay[k].bytes + 127) & ~(int64_t)63));
    memcpy(flat[k], in->flat0[k], (size_t)in->lay[k].bytes);
    llvm_step_bind(s, kinds[k], flat[k]);
    total += (size_t)in->lay[k].bytes;
  }
  for (int i = 0; i < g->n; i++)
    if (in->data[i])
      llvm_step_set_input(s, i, in->data[i]);
  const char *err = llvm_step_run(s);
  cr_assert_null(err, "run: %s", err);
  After a = {.bytes = malloc(total + 1), .n = total, .loss = llvm_step_scalar_of(s, st->loss)};
  size_t at = 0;
  for (int k = 0; k < 3; k++) {
    memcpy(a.bytes + at, flat[k], (size_t)in->lay[k].bytes);
    at += (size_t)in->lay[k].bytes;
    free(flat[k]);
  }
  return a;
}

static void expect_same(const After *a, const After *b, const char *what) {
  cr_assert_eq(a->n, b->n);
  cr_expect(memcmp(a->bytes, b->bytes, a->n) == 0, "%s: the updated state differs", what);
  cr_expect(memcmp(&a->loss, &b->loss, sizeof a->loss) == 0, "%s: loss %.9g vs %.9g", what, a->loss, b->loss);
}

static LlvmStep *compile(const StepGraph *st, int threads) {
  char err[512];
  LlvmStepOptions o = {.nthreads = threads};
  LlvmStep *s = llvm_step_compile(st->g, &o, err, sizeof err);
  cr_assert(s, "compile: %s", err);
  return s;
}

/* The reference: a step compiled with the cache off, run once. */
static After reference(const StepGraph *st, const Inputs *in, int threads) {
  setenv("LTL_CACHE", "0", 1);
  LlvmStep *s = compile(st, threads);
  cr_assert_eq(llvm_step_cache_state(s), LLVM_CACHE_OFF);
  After a = run_once(st, s, in);
  llvm_step_free(s);
  unsetenv("LTL_CACHE");
  cr_assert(isfinite(a.loss), "loss %g", a.loss);
  return a;
}

TestSuite(cache, .init = fresh_cache_home, .fini = cleanup, .timeout = 120);

Test(cache, miss_then_hit) {
  StepGraph *st = lower_example("fashion_mlp.ltl", 64, NULL, 0);
  Inputs in = inputs_new(st->g);
  After ref = reference(st, &in, 2);
  cr_expect_eq(count_files(""), 0, "the cache off writes nothing");

  LlvmStep *s1 = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s1), LLVM_CACHE_MISS);
  cr_expect_not(llvm_step_cache_hit(s1));
  const char *file = llvm_step_cache_file(s1);
  cr_assert(file && file_size(file) > 0, "the object was written");
  cr_expect_eq(count_files("step-"), 1, "one step object");
  cr_expect_eq(count_files(""), count_files("step-") + count_files("gemm-"), "no temporary file left");
  After a1 = run_once(st, s1, &in);
  double miss_s = llvm_step_compile_seconds(s1);

  LlvmStep *s2 = compile(st, 2);
  cr_expect(llvm_step_cache_hit(s2), "the second compile is a hit");
  cr_expect_eq(llvm_step_cache_state(s2), LLVM_CACHE_HIT);
  cr_expect_str_eq(llvm_step_cache_file(s2), file);
  cr_expect_eq(count_files("step-"), 1);
  After a2 = run_once(st, s2, &in);
  double hit_s = llvm_step_compile_seconds(s2);
  cr_expect_eq(llvm_step_plan(s2)->nk, llvm_step_plan(s1)->nk);

  expect_same(&a1, &ref, "miss vs no cache");
  expect_same(&a2, &ref, "hit vs no cache");
  cr_expect(memcmp(a1.bytes, in.flat0[0], (size_t)in.lay[0].bytes) != 0, "the step changed the parameters");
  printf("cache: MLP training step (batch 64, 2 threads) compile: miss %.1f ms, hit %.1f ms "
         "(GEMMs already in the process)\n", 1e3 * miss_s, 1e3 * hit_s);

  free(a1.bytes), free(a2.bytes), free(ref.bytes);
  llvm_step_free(s1);
  llvm_step_free(s2);
  inputs_free(st->g, &in);
  sema_step_free(st);
}

Test(cache, key_depends_on_graph_and_options) {
  StepGraph *a = lower_example("fashion_mlp.ltl", 64, NULL, 0), *b = lower_example("fashion_mlp.ltl", 32, NULL, 0);
  LlvmStep *sa = compile(a, 2), *sb = compile(b, 2), *sc = compile(a, 1);
  cr_expect_eq(llvm_step_cache_state(sa), LLVM_CACHE_MISS);
  cr_expect_eq(llvm_step_cache_state(sb), LLVM_CACHE_MISS, "batch 32: another key");
  cr_expect_eq(llvm_step_cache_state(sc), LLVM_CACHE_MISS, "1 thread: another key");
  cr_expect_str_neq(llvm_step_cache_file(sa), llvm_step_cache_file(sb));
  cr_expect_str_neq(llvm_step_cache_file(sa), llvm_step_cache_file(sc));
  cr_expect_eq(count_files("step-"), 3);
  LlvmStep *sb2 = compile(b, 2), *sc2 = compile(a, 1);
  cr_expect(llvm_step_cache_hit(sb2));
  cr_expect(llvm_step_cache_hit(sc2));
  Inputs in = inputs_new(b->g);
  After r1 = run_once(b, sb, &in), r2 = run_once(b, sb2, &in);
  expect_same(&r1, &r2, "batch 32, hit vs miss");
  free(r1.bytes), free(r2.bytes);
  inputs_free(b->g, &in);
  llvm_step_free(sa), llvm_step_free(sb), llvm_step_free(sc), llvm_step_free(sb2), llvm_step_free(sc2);
  sema_step_free(a);
  sema_step_free(b);
}

/* Damages the cache file, then checks the next compile detects it: a miss, the file rewritten
 * to its full size, the results still those of the reference. */
static void damage_and_check(const StepGraph *st, const Inputs *in, const After *ref, const char *what,
                             void (*damage)(const char *path, long size)) {
  LlvmStep *s = compile(st, 2);
  cr_assert_eq(llvm_step_cache_state(s), LLVM_CACHE_HIT, "%s: before", what);
  char path[1024];
  snprintf(path, sizeof path, "%s", llvm_step_cache_file(s));
  long size = file_size(path);
  llvm_step_free(s);
  damage(path, size);
  s = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_MISS, "%s: detected", what);
  /* rewritten: a whole file again (its size may differ by a byte or two: the symbols carry a
   * per-process counter), which the next compile takes */
  cr_expect_gt(file_size(path), 120, "%s: rewritten", what);
  cr_expect_lt(labs(file_size(path) - size), 64, "%s: rewritten", what);
  After a = run_once(st, s, in);
  expect_same(&a, ref, what);
  free(a.bytes);
  llvm_step_free(s);
  s = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_HIT, "%s: a hit again", what);
  llvm_step_free(s);
}

static void flip(const char *path, long at) {
  FILE *f = fopen(path, "r+b");
  cr_assert(f);
  fseek(f, at, SEEK_SET);
  int c = fgetc(f);
  fseek(f, at, SEEK_SET);
  fputc(c ^ 0x20, f);
  fclose(f);
}
static void truncate_half(const char *path, long size) { cr_assert(truncate(path, size / 2) == 0); }
static void truncate_header(const char *path, long size) {
  (void)size;
  cr_assert(truncate(path, 20) == 0);
}
static void truncate_empty(const char *path, long size) {
  (void)size;
  cr_assert(truncate(path, 0) == 0);
}
static void flip_object(const char *path, long size) { flip(path, size / 2); }
static void flip_last(const char *path, long size) { flip(path, size - 1); }
static void flip_magic(const char *path, long size) { (void)size, flip(path, 0); }
static void flip_entry(const char *path, long size) { (void)size, flip(path, 50); }
static void append_byte(const char *path, long size) {
  (void)size;
  FILE *f = fopen(path, "ab");
  cr_assert(f);
  fputc(0, f);
  fclose(f);
}
static void garbage(const char *path, long size) {
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  for (long i = 0; i < size; i++)
    fputc((int)(i * 7919 % 251), f);
  fclose(f);
}

Test(cache, corrupt_files_are_detected_and_rewritten) {
  StepGraph *st = lower_example("fashion_mlp.ltl", 64, NULL, 0);
  Inputs in = inputs_new(st->g);
  After ref = reference(st, &in, 2);
  llvm_step_free(compile(st, 2)); /* fills the cache */
  damage_and_check(st, &in, &ref, "truncated to half", truncate_half);
  damage_and_check(st, &in, &ref, "truncated inside the header", truncate_header);
  damage_and_check(st, &in, &ref, "empty", truncate_empty);
  damage_and_check(st, &in, &ref, "a byte of the object flipped", flip_object);
  damage_and_check(st, &in, &ref, "the last byte flipped", flip_last);
  damage_and_check(st, &in, &ref, "the magic flipped", flip_magic);
  damage_and_check(st, &in, &ref, "the entry name flipped", flip_entry);
  damage_and_check(st, &in, &ref, "a byte appended", append_byte);
  damage_and_check(st, &in, &ref, "garbage of the same size", garbage);
  free(ref.bytes);
  inputs_free(st->g, &in);
  sema_step_free(st);
}

Test(cache, ltl_cache_0_writes_nothing) {
  setenv("LTL_CACHE", "0", 1);
  StepGraph *st = lower_example("fashion_mlp.ltl", 64, NULL, 0);
  LlvmStep *s = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_OFF);
  cr_expect_null(llvm_step_cache_file(s));
  cr_expect_eq(count_files(""), 0);
  char dir[512];
  cr_expect_not(llvm_cache_dir(dir, sizeof dir));
  llvm_step_free(s);
  /* keep_ir needs the module's text: the cache is not used either */
  unsetenv("LTL_CACHE");
  char err[256];
  LlvmStepOptions o = {.nthreads = 1, .keep_ir = true};
  s = llvm_step_compile(st->g, &o, err, sizeof err);
  cr_assert(s, "%s", err);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_OFF);
  cr_expect_not_null(llvm_step_ir(s));
  cr_expect_eq(count_files("step-"), 0);
  llvm_step_free(s);
  sema_step_free(st);
}

/* A missing $XDG_CACHE_HOME is created (the XDG spec), not a reason to leave the cache off. */
Test(cache, missing_xdg_cache_home_is_created) {
  StepGraph *st = lower_example("fashion_mlp.ltl", 64, NULL, 0);
  char missing[512];
  snprintf(missing, sizeof missing, "%s/fresh", cache_home);
  setenv("XDG_CACHE_HOME", missing, 1);
  LlvmStep *s = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_MISS);
  llvm_step_free(s);
  s = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_HIT);
  llvm_step_free(s);
  sema_step_free(st);
}

Test(cache, unusable_cache_dir_still_compiles) {
  StepGraph *st = lower_example("fashion_mlp.ltl", 64, NULL, 0);
  Inputs in = inputs_new(st->g);
  After ref = reference(st, &in, 2);
  /* XDG_CACHE_HOME is a regular file: $XDG_CACHE_HOME/ltl cannot be created */
  char file[512];
  snprintf(file, sizeof file, "%s/not-a-dir", cache_home);
  FILE *f = fopen(file, "w");
  cr_assert(f);
  fclose(f);
  setenv("XDG_CACHE_HOME", file, 1);
  LlvmStep *s = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_OFF);
  After a = run_once(st, s, &in);
  expect_same(&a, &ref, "no usable cache dir");
  free(a.bytes);
  llvm_step_free(s);
  /* a relative XDG_CACHE_HOME is ignored (XDG spec), then HOME is used: point it nowhere */
  setenv("XDG_CACHE_HOME", "relative/dir", 1);
  char home[512];
  snprintf(home, sizeof home, "%s/no/such/home", cache_home);
  setenv("HOME", home, 1);
  s = compile(st, 2);
  cr_expect_eq(llvm_step_cache_state(s), LLVM_CACHE_OFF);
  llvm_step_free(s);
  /* a read-only directory (root writes anyway, so only checked for other users) */
  if (geteuid() != 0) {
    char ro[512];
    snprintf(ro, sizeof ro, "%s/ro", cache_home);
    cr_assert(mkdir(ro, 0755) == 0);
    char ltl[600];
    snprintf(ltl, sizeof ltl, "%s/ltl", ro);
    cr_assert(mkdir(ltl, 0555) == 0);
    setenv("XDG_CACHE_HOME", ro, 1);
    s = compile(st, 2);
    cr_expect_neq(llvm_step_cache_state(s), LLVM_CACHE_HIT);
    a = run_once(st, s, &in);
    expect_same(&a, &ref, "read-only cache dir");
    free(a.bytes);
    llvm_step_free(s);
    chmod(ltl, 0755);
  }
  free(ref.bytes);
  inputs_free(st->g, &in);
  sema_step_free(st);
}

/* Cold vs warm in fresh processes (forked before anything is compiled here): the time of
 * llvm_step_compile including the shared GEMMs, which a warm process loads from the cache. */
static double child_compile(const StepGraph *st, bool *hit) {
  int fd[2];
  cr_assert(pipe(fd) == 0);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    close(fd[0]);
    char err[512];
    double r[2] = {-1, 0};
    LlvmStepOptions o = {.nthreads = 2};
    LlvmStep *s = llvm_step_compile(st->g, &o, err, sizeof err);
    if (s) {
      r[0] = llvm_step_compile_seconds(s);
      r[1] = llvm_step_cache_hit(s);
    }
    if (write(fd[1], r, sizeof r) != (ssize_t)sizeof r)
      _exit(2);
    _exit(0);
  }
  close(fd[1]);
  double r[2] = {-1, 0};
  ssize_t got = read(fd[0], r, sizeof r);
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  cr_assert(got == (ssize_t)sizeof r && WIFEXITED(status) && WEXITSTATUS(status) == 0 && r[0] >= 0,
            "the child compiled");
  *hit = r[1] != 0;
  return r[0];
}

Test(cache, cold_and_warm_process) {
  StepGraph *st = lower_example("fashion_mlp.ltl", 64, NULL, 0);
  bool hit;
  double cold = child_compile(st, &hit);
  cr_expect_not(hit);
  int files = count_files("");
  cr_expect_geq(files, 2, "the step and its GEMMs");
  double warm = child_compile(st, &hit);
  cr_expect(hit);
  cr_expect_eq(count_files(""), files, "a warm process writes nothing");
  double warm2 = child_compile(st, &hit);
  cr_expect(hit);
  /* damaged GEMM objects are recompiled and rewritten; the step still links from the cache */
  char dir[512];
  snprintf(dir, sizeof dir, "%s/ltl", cache_home);
  DIR *d = opendir(dir);
  cr_assert(d);
  struct dirent *e;
  int damaged = 0;
  while ((e = readdir(d)))
    if (!strncmp(e->d_name, "gemm-", 5)) {
      char path[1024];
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      cr_assert(truncate(path, file_size(path) - 1) == 0);
      damaged++;
    }
  closedir(d);
  cr_expect_gt(damaged, 0);
  child_compile(st, &hit);
  cr_expect(hit, "the step object is still good");
  cr_expect_eq(count_files(""), files, "rewritten in place");
  printf("cache: MLP training step in a fresh process (step + %d GEMM objects): cold %.1f ms, "
         "warm %.1f ms, %.1f ms\n", files - 1, 1e3 * cold, 1e3 * warm, 1e3 * warm2);
  sema_step_free(st);
}
