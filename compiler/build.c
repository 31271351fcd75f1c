/* build.c — `ltlc build FILE -o PROG [OPTIONS]`: a standalone executable that needs no LLVM.
 *
 *   run_command in compile-only mode (every step the stages can run, at the loader's batch
 *   size and at each last partial batch) ─ each step's object code collected through the
 *   object sink ─ the GEMM variants they call as objects ─ a generated C file (the table of
 *   keys and entry points, the blocking, the embedded sources, the options, the CPU check) ─
 *   `cc` links it all with the LLVM-free runtime library into PROG.tmp, renamed to PROG.
 *
 * A built program is `ltlc run FILE` with the code provider swapped: compiler/prog/. See
 * docs/build.md. */
#include "driver.h"
#include "front.h"
#include "llvm.h"
#include "sema.h"
#include "util.h"

#include <errno.h>
#include <ftw.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Where `make` left the runtime of built programs, and how to link it (Makefile). */
#ifndef LTL_PROG_DIR
#define LTL_PROG_DIR "build"
#endif
#ifndef LTL_PROG_INC
#define LTL_PROG_INC "compiler/prog"
#endif
#ifndef LTL_PROG_LIBS
#define LTL_PROG_LIBS "-lm -lpthread"
#endif

typedef struct {
    uint64_t key[2];
    int nthreads;
    char entry[64], what[64];
} BuildStep;

typedef struct {
    char dir[64];                 /* the work directory */
    BuildStep step[64];
    int nsteps;
    uint32_t gemm_mask;
    bool failed;
} Build;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ltlc: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static bool write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    return ok;
}

/* The object sink: each compiled step's code into DIR/stepN.o and a row of the table. */
static void take_step(void *ctx, const IrGraph *g, const LlvmStepOptions *o, int nthreads, const char *entry,
                      uint32_t gemm_mask, const void *obj, size_t len) {
    Build *b = ctx;
    char path[128];
    snprintf(path, sizeof path, "%s/step%d.o", b->dir, b->nsteps);
    if (b->nsteps == 64 || strlen(entry) >= sizeof b->step[0].entry || !write_bytes(path, obj, len)) {
        b->failed = true;
        return;
    }
    int64_t batch = 0;
    bool train = false;
    for (int i = 0; i < g->n && !batch; i++)
        if (g->node[i].op == IR_INPUT && g->node[i].kind == IR_IN_DATA && g->node[i].shape.rank > 0)
            batch = g->node[i].shape.d[0];
    for (int i = 0; i < g->nout; i++) train |= g->out[i].kind == IR_OUT_UPDATE;
    BuildStep *s = &b->step[b->nsteps];
    if (!llvm_step_graph_key(g, o, s->key)) {
        b->failed = true;
        return;
    }
    b->nsteps++;
    s->nthreads = nthreads;
    snprintf(s->entry, sizeof s->entry, "%s", entry);
    snprintf(s->what, sizeof s->what, "%s step, batch %lld", train ? "a training" : "an evaluation", (long long)batch);
    b->gemm_mask |= gemm_mask;
}

/* GEMM variant i (ta | tb << 1 | bias << 2 | relu << 3) with the blocking the steps were
 * planned with, as DIR/gemmI.o defining ltl_aot_gemm_I. */
static bool gemm_object(LlvmJit *jit, const char *dir, int i) {
    char name[32], path[128];
    snprintf(name, sizeof name, "ltl_aot_gemm_%d", i);
    snprintf(path, sizeof path, "%s/gemm%d.o", dir, i);
    LlvmGemmSpec spec = {.trans_a = i & 1, .trans_b = i >> 1 & 1, .bias = i >> 2 & 1, .relu = i >> 3 & 1};
    LLVMModuleRef mod = llvm_jit_new_module(jit, name);
    void *obj = NULL;
    size_t len = 0;
    bool ok = llvm_gemm_emit(mod, llvm_step_shared_blocking(), &spec, name) &&
              llvm_jit_optimize(jit, mod, LLVM_GEMM_PASSES) && llvm_jit_emit_object(jit, mod, &obj, &len) &&
              write_bytes(path, obj, len);
    LLVMDisposeModule(mod);
    free(obj);
    return ok;
}

/* ---- the embedded sources: FILE and every module it uses, transitively ---- */

typedef struct { char *name, *path; } Module;

/* The `use`s of the file at path, resolved as `ltlc run` resolves them (sema_use_path), added
 * to mods under their relative names. */
static void collect_modules(const char *path, Module *mods, int *n, int depth) {
    Ast ast = {0};
    char *text = NULL;
    Node *root = depth < 16 ? parse_file(&ast, path, &text) : NULL;
    for (int i = 0; root && i < root->nkids; i++) {
        const Node *it = root->kids[i];
        if (it->kind != N_USE) continue;
        char *rel = xasprintf("%s.ltl", it->name), *local, *lib;
        for (char *c = rel; c < rel + strlen(it->name); c++) if (*c == '.') *c = '/';
        const char *found = sema_use_path(path, it->name, &local, &lib);
        bool seen = !found || *n == 64;
        for (int k = 0; k < *n && !seen; k++) seen = !strcmp(mods[k].name, rel);
        if (!seen) {
            mods[*n] = (Module){rel, xstrdup(found)};
            collect_modules(mods[(*n)++].path, mods, n, depth + 1);
        } else {
            free(rel);
        }
        free(local);
        free(lib);
    }
    ast_free(&ast);
    free(text);
}

static void c_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n\"\n\"", f);
        else if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 32 || c > 126) fprintf(f, "\\%03o", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* Features of the code's target CPU that a program checks at start (GCC's and clang's
 * __builtin_cpu_supports names, which are LLVM's here). */
static const char *const cpu_features[] = {
    "sse4.2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi", "bmi2", "avx512f", "avx512bw", "avx512dq",
    "avx512vl", "avx512cd", "avx512vnni", "avx512bf16", "avx512vbmi", "avx512vbmi2", "avx512ifma",
    "avx512bitalg", "avx512vpopcntdq",
};

static bool has_feature(const char *features, const char *name) {
    size_t n = strlen(name);
    for (const char *p = features; p && (p = strstr(p, name)); p += n)
        if (p > features && p[-1] == '+' && (p[n] == ',' || p[n] == 0)) return true;
    return false;
}

/* The generated C file: the table, the sources, the options and the CPU check. */
static bool write_table(const Build *b, const char *path, const char *file, const char *source, size_t slen,
                        const Module *mods, int nmods, char **args, int nargs, const LlvmHost *host) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "/* generated by ltlc build */\n#include \"aot.h\"\n\n");
    for (int i = 0; i < b->nsteps; i++) fprintf(f, "extern void ltl_step_%d(void) __asm__(\"%s\");\n", i, b->step[i].entry);
    for (int i = 0; i < 16; i++)
        if (b->gemm_mask >> i & 1) fprintf(f, "extern void ltl_aot_gemm_%d(void);\n", i);
    fprintf(f, "\nconst AotStep ltl_aot_steps[] = {\n");
    for (int i = 0; i < b->nsteps; i++)
        fprintf(f, "    {{0x%016llxull, 0x%016llxull}, %d, ltl_step_%d, \"%s\"},\n", (unsigned long long)b->step[i].key[0],
                (unsigned long long)b->step[i].key[1], b->step[i].nthreads, i, b->step[i].what);
    fprintf(f, "};\nconst int ltl_aot_nsteps = %d;\n\nvoid (*const ltl_aot_gemm[16])(void) = {", b->nsteps);
    for (int i = 0; i < 16; i++) fprintf(f, b->gemm_mask >> i & 1 ? "ltl_aot_gemm_%d, " : "0, ", i);
    const LlvmGemmBlocking *blk = llvm_step_shared_blocking();
    fprintf(f, "};\n\nconst unsigned char ltl_aot_blocking[] = {");
    for (size_t i = 0; i < sizeof *blk; i++) fprintf(f, "%s%u,", i % 16 ? "" : "\n    ", ((const unsigned char *)blk)[i]);
    fprintf(f, "\n};\nconst size_t ltl_aot_blocking_size = %zu, ltl_aot_gemm_work = %zu;\n\n", sizeof *blk,
            llvm_gemm_work_size(blk));
    fprintf(f, "const AotFile ltl_aot_files[] = {\n    {");
    c_string(f, file, strlen(file));
    fprintf(f, ",\n");
    c_string(f, source, slen);
    fprintf(f, ", %zu},\n", slen);
    for (int i = 0; i < nmods; i++) {
        size_t len;
        char *err = NULL, *text = read_file(mods[i].path, &len, (size_t)64 << 20, &err);
        free(err);
        if (!text) { fclose(f); return false; }
        fprintf(f, "    {");
        c_string(f, mods[i].name, strlen(mods[i].name));
        fprintf(f, ",\n");
        c_string(f, text, len);
        fprintf(f, ", %zu},\n", len);
        free(text);
    }
    fprintf(f, "};\nconst int ltl_aot_nfiles = %d;\n\nconst char *const ltl_aot_args[] = {", nmods + 1);
    for (int i = 0; i < nargs; i++) c_string(f, args[i], strlen(args[i])), fputs(", ", f);
    fprintf(f, "0};\nconst int ltl_aot_nargs = %d;\n\nconst char ltl_aot_cpu[] = ", nargs);
    c_string(f, host->cpu, strlen(host->cpu));
    fprintf(f, ";\n\nconst char *ltl_aot_cpu_missing(void) {\n    __builtin_cpu_init();\n");
    for (size_t i = 0; i < sizeof cpu_features / sizeof *cpu_features; i++)
        if (has_feature(host->features, cpu_features[i]))
            fprintf(f, "    if (!__builtin_cpu_supports(\"%s\")) return \"%s\";\n", cpu_features[i], cpu_features[i]);
    fprintf(f, "    return 0;\n}\n");
    return fclose(f) == 0;
}

/* ---- running cc ---- */

/* The path of `name` on PATH, or NULL. */
static char *on_path(const char *name) {
    const char *p = getenv("PATH");
    for (; p && *p; p += strcspn(p, ":") + (p[strcspn(p, ":")] == ':')) {
        int n = (int)strcspn(p, ":");
        char *full = xasprintf("%.*s/%s", n, n ? p : ".", name);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0) return full;
        free(full);
    }
    return NULL;
}

static int spawn_wait(char **argv) {
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static const char build_help[] =
    "usage: ltlc build FILE -o PROG [OPTIONS]\n"
    "\n"
    "Compiles FILE into PROG, a standalone executable that needs no LLVM: `PROG fit|validate|\n"
    "test|predict [OPTIONS]` does what `ltlc run FILE ...` does, with every step compiled ahead\n"
    "of time for this machine's CPU or --cpu (PROG checks the CPU when it starts). The steps\n"
    "are those the stages can run with the options given here: the loader's batch size and\n"
    "each last partial batch (the data must be readable now). FILE and the modules it uses\n"
    "are embedded.\n"
    "Linking needs `cc` on PATH.\n"
    "\n"
    "options:\n"
    "  -o PROG                the executable to write (replaced only when complete)\n"
    "  --trainer.FLAG=VALUE   trainer flags built in (PROG's own flags override them)\n"
    "  --model.NAME=VALUE     hyperparameters built in: PROG has code for these sizes only\n"
    "  --data.NAME=VALUE      data parameters built in (the batch size)\n"
    "  --threads=N            the thread count the kernels are cut for (default: one per core)\n"
    "  --cpu=NAME             the CPU the code is for: native (default: this one), generic\n"
    "                         (any x86-64, SSE2), x86-64-v3 (AVX2, FMA), x86-64-v4 (AVX-512)\n"
    "\n"
    "Exit 0 ok, 1 an error, 2 usage. See docs/build.md.\n";

int build_command(int argc, char **argv) {
    const char *file = NULL, *out = NULL, *cpu = "native";
    char **opts = xmalloc(sizeof *opts * (size_t)(argc + 1));
    int nopts = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(build_help, stdout); free(opts); return 0; }
        if (!strcmp(a, "-o") && i + 1 < argc) out = argv[++i];
        else if (!strncmp(a, "--cpu=", 6)) cpu = a + 6;
        else if (!strncmp(a, "--trainer.", 10) || !strncmp(a, "--model.", 8) || !strncmp(a, "--data.", 7) ||
                 !strncmp(a, "--threads=", 10))
            opts[nopts++] = argv[i];
        else if (a[0] == '-' || file) {
            fprintf(stderr, "ltlc: %s '%s' for build\nTry 'ltlc build --help'.\n", a[0] == '-' ? "unknown option" : "a second FILE", a);
            free(opts);
            return 2;
        } else file = a;
    }
    if (!file || !out || !out[0]) {
        fprintf(stderr, "ltlc: build needs a FILE and -o PROG\nTry 'ltlc build --help'.\n");
        free(opts);
        return 2;
    }
    if (!llvm_jit_set_target(cpu)) {
        fprintf(stderr, "ltlc: unknown CPU '%s' (native, generic, x86-64-v3, x86-64-v4)\nTry 'ltlc build --help'.\n", cpu);
        free(opts);
        return 2;
    }
    Build *b = calloc(1, sizeof *b);
    char *cc = on_path("cc"), *odir = xstrdup(out), *slash = strrchr(odir, '/'), *tmp = NULL;
    if (slash) slash[slash == odir] = 0; else strcpy(odir, ".");
    Module mods[64];
    int nmods = 0, status = 1;
    char *source = NULL;
    size_t slen = 0;
    struct stat st;
    const char *libs[] = {LTL_PROG_DIR "/libltl_rt.a", LTL_PROG_DIR "/prog/prog_main.o", LTL_PROG_DIR "/prog/step_aot.o"};
    if (!cc) { fail("build links with a C compiler: there is no 'cc' on PATH"); goto out; }
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) { fail("cannot write %s: it is a directory", out); goto out; }
    if (access(odir, W_OK | X_OK) != 0) { fail("cannot write %s: %s: %s", out, odir, strerror(errno)); goto out; }
    for (int i = 0; i < 3; i++)
        if (access(libs[i], R_OK) != 0) { fail("the runtime of built programs is missing (%s): run make", libs[i]); goto out; }
    strcpy(b->dir, "/tmp/ltl-build-XXXXXX");
    if (!mkdtemp(b->dir)) { fail("cannot create a work directory in /tmp: %s", strerror(errno)); goto out; }

    /* the steps, compiled as run_command would compile them, collected by the sink */
    char **rargs = xmalloc(sizeof *rargs * (size_t)(nopts + 6));
    int nr = 0;
    rargs[nr++] = (char *)file;
    const char *stages[] = {"fit", "validate", "test", "predict"};
    for (int i = 0; i < 4; i++) rargs[nr++] = (char *)stages[i];
    for (int i = 0; i < nopts; i++) rargs[nr++] = opts[i];
    llvm_step_set_object_sink(take_step, b);
    run_compile_only = true;
    int rs = run_command(nr, rargs);
    run_compile_only = false;
    llvm_step_set_object_sink(NULL, NULL);
    free(rargs);
    if (rs != 0) goto out;
    if (b->failed || !b->nsteps) { fail("%s: could not collect the steps' object code", file); goto out; }

    char err[512];
    LlvmJit *jit = llvm_jit_create(err, sizeof err);
    if (!jit) { fail("%s", err); goto out; }
    bool ok = true;
    for (int i = 0; i < 16 && ok; i++)
        if (b->gemm_mask >> i & 1) ok = gemm_object(jit, b->dir, i);
    if (!ok) fail("compiling the GEMMs: %s", llvm_jit_error(jit));
    char *errs = NULL;
    source = ok ? read_file(file, &slen, (size_t)64 << 20, &errs) : NULL;
    if (ok && !source) fail("%s", errs), ok = false;
    free(errs);
    if (ok) collect_modules(file, mods, &nmods, 0);
    char table[128];
    snprintf(table, sizeof table, "%s/table.c", b->dir);
    if (ok && !write_table(b, table, file, source, slen, mods, nmods, opts, nopts, llvm_jit_host(jit)))
        fail("cannot write %s", table), ok = false;
    llvm_jit_destroy(jit);
    if (!ok) goto out;

    /* cc -o PROG.tmp table.c objects runtime libs; then the rename */
    tmp = xasprintf("%s.tmp%ld", out, (long)getpid());
    char *ccargs[64 + 16 + 32], *libflags = xstrdup(LTL_PROG_LIBS), *save = NULL;
    char *objs[80];
    int na = 0, no = 0;
    ccargs[na++] = cc;
    ccargs[na++] = "-O1";
    ccargs[na++] = "-I" LTL_PROG_INC;
    ccargs[na++] = "-o";
    ccargs[na++] = tmp;
    ccargs[na++] = table;
    for (int i = 0; i < b->nsteps; i++) ccargs[na++] = objs[no++] = xasprintf("%s/step%d.o", b->dir, i);
    for (int i = 0; i < 16; i++)
        if (b->gemm_mask >> i & 1) ccargs[na++] = objs[no++] = xasprintf("%s/gemm%d.o", b->dir, i);
    ccargs[na++] = (char *)libs[1];
    ccargs[na++] = (char *)libs[2];
    ccargs[na++] = (char *)libs[0];
    for (char *t = strtok_r(libflags, " ", &save); t && na < (int)(sizeof ccargs / sizeof *ccargs) - 1; t = strtok_r(NULL, " ", &save))
        ccargs[na++] = t;
    ccargs[na] = NULL;
    int cs = spawn_wait(ccargs);
    for (int i = 0; i < no; i++) free(objs[i]);
    free(libflags);
    if (cs != 0) { fail("linking %s failed (%s exited with status %d)", out, cc, cs); goto out; }
    if (rename(tmp, out) != 0) { fail("cannot write %s: %s", out, strerror(errno)); goto out; }
    if (stat(out, &st) == 0)
        printf("built %s: %d steps, %d GEMM variants, %lld KB\n", out, b->nsteps, __builtin_popcount(b->gemm_mask),
               (long long)st.st_size / 1024);
    status = 0;
out:
    if (tmp) { unlink(tmp); free(tmp); }
    if (b->dir[0]) nftw(b->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (int i = 0; i < nmods; i++) { free(mods[i].name); free(mods[i].path); }
    free(source);
    free(cc);
    free(odir);
    free(opts);
    free(b);
    return status;
}
