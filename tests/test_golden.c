/* test_golden.c — runs build/ltlc (the LTLC macro) as a user does.
 * golden::files — every tests/frontend/NAME.ltl against its NAME.err (`ltlc check`: the exit
 * status on a first line `# exit N`, then stderr exactly) or NAME.ast (`ltlc emit ast`: stdout
 * exactly); see tests/frontend/README.md, and tests/frontend/update.sh to regenerate them.
 * cli::* — the command line: help, version, usage errors (exit 2), unreadable input (exit 1). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <fcntl.h>
#include <glob.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "util.h"

extern char **environ;

/* ---- running ltlc ---- */

/* Everything a test allocates is kept here and freed after it (the suite's .fini), so the
 * suite runs clean under LeakSanitizer. */
static void *kept[1 << 14];
static int nkept;
static void *keep(void *p) {
    cr_assert_lt(nkept, (int)(sizeof kept / sizeof *kept));
    return kept[nkept++] = p;
}
static void release(void) {
    while (nkept) free(kept[--nkept]);
}
TestSuite(golden, .fini = release);
TestSuite(cli, .fini = release);

static bool set_no_color = true; /* run ltlc with NO_COLOR=1 */

typedef struct {
    int status; /* the exit status; 128 + N after signal N */
    char *out, *err;
} Run;

static char *slurp(FILE *f) {
    fflush(f);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    char *s = malloc((size_t)n + 1);
    rewind(f);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return keep(s);
}

/* Runs LTLC with args (NULL-terminated) in directory cwd, stdin empty, NO_COLOR set. */
static Run run_in(const char *cwd, const char *const *args) {
    const char *argv[32] = {LTLC};
    int n = 1;
    for (; args[n - 1]; n++) {
        cr_assert_lt(n, 31);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    FILE *out = tmpfile(), *err = tmpfile();
    cr_assert(out && err);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fileno(out), 1);
    posix_spawn_file_actions_adddup2(&fa, fileno(err), 2);
    posix_spawn_file_actions_addchdir_np(&fa, cwd);
    if (set_no_color) setenv("NO_COLOR", "1", 1);
    else unsetenv("NO_COLOR");
    pid_t pid;
    int rc = posix_spawn(&pid, LTLC, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "cannot run %s: %s", LTLC, strerror(rc));
    int ws;
    cr_assert_eq(waitpid(pid, &ws, 0), pid);
    return (Run){WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws), slurp(out), slurp(err)};
}
#define RUN(...) run_in(SRCDIR, (const char *const[]){__VA_ARGS__, NULL})

static char *read_all(const char *path) {
    size_t len;
    char *err = NULL;
    char *s = read_file(path, &len, 1u << 26, &err);
    cr_assert_not_null(s, "%s", err);
    return keep(s);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* ---- golden files ---- */

struct golden { char name[128]; };

ParameterizedTestParameters(golden, files) {
    glob_t g;
    size_t n = 0;
    if (glob(SRCDIR "/tests/frontend/*.ltl", 0, NULL, &g) == 0) n = g.gl_pathc;
    struct golden *p = cr_malloc(sizeof *p * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        const char *base = strrchr(g.gl_pathv[i], '/') + 1;
        snprintf(p[i].name, sizeof p[i].name, "%.*s", (int)(strlen(base) - 4), base);
    }
    if (n) globfree(&g);
    return cr_make_param_array(struct golden, p, n);
}

ParameterizedTest(struct golden *g, golden, files) {
    char ltl[256], err[256], ast[256];
    snprintf(ltl, sizeof ltl, "tests/frontend/%s.ltl", g->name);
    snprintf(err, sizeof err, SRCDIR "/tests/frontend/%s.err", g->name);
    snprintf(ast, sizeof ast, SRCDIR "/tests/frontend/%s.ast", g->name);
    bool has_err = exists(err), has_ast = exists(ast);
    cr_assert(has_err != has_ast, "%s: want exactly one of %s.err and %s.ast", ltl, g->name, g->name);
    if (has_ast) {
        Run r = RUN("emit", "ast", ltl);
        cr_assert_str_eq(r.err, "", "%s: stderr:\n%s", ltl, r.err);
        cr_assert_eq(r.status, 0, "%s: exit %d", ltl, r.status);
        cr_assert_str_eq(r.out, read_all(ast), "%s: the canonical form differs from %s.ast:\n%s", ltl,
                         g->name, r.out);
        return;
    }
    char *want = read_all(err);
    int status;
    int skip = 0;
    cr_assert_eq(sscanf(want, "# exit %d\n%n", &status, &skip), 1, "%s.err must start with '# exit N'", g->name);
    cr_assert_gt(skip, 0);
    Run r = RUN("check", ltl);
    cr_assert_str_eq(r.err, want + skip, "%s: stderr differs from %s.err; it is:\n%s", ltl, g->name, r.err);
    cr_assert_eq(r.status, status, "%s: exit %d, want %d", ltl, r.status, status);
    cr_assert_str_eq(r.out, "", "%s: stdout:\n%s", ltl, r.out);
}

/* Enough goldens, and no expected output without its input. */
Test(golden, inventory) {
    glob_t g;
    int nltl = 0, nerr = 0, nast = 0;
    if (glob(SRCDIR "/tests/frontend/*.ltl", 0, NULL, &g) == 0) { nltl = (int)g.gl_pathc; globfree(&g); }
    const char *kinds[] = {SRCDIR "/tests/frontend/*.err", SRCDIR "/tests/frontend/*.ast"};
    for (int k = 0; k < 2; k++) {
        if (glob(kinds[k], 0, NULL, &g) != 0) continue;
        for (size_t i = 0; i < g.gl_pathc; i++) {
            char ltl[512];
            snprintf(ltl, sizeof ltl, "%.*s.ltl", (int)(strlen(g.gl_pathv[i]) - 4), g.gl_pathv[i]);
            cr_assert(exists(ltl), "%s has no .ltl", g.gl_pathv[i]);
        }
        *(k ? &nast : &nerr) = (int)g.gl_pathc;
        globfree(&g);
    }
    cr_assert_eq(nerr + nast, nltl);
    cr_assert_geq(nerr, 25, "only %d error goldens", nerr);
    cr_assert_geq(nast, 3, "only %d AST goldens", nast);
}

/* ---- the command line ---- */

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

Test(cli, help) {
    const char *forms[][2] = {{"--help", NULL}, {"-h", NULL}, {"help", NULL}};
    for (int i = 0; i < 3; i++) {
        Run r = RUN(forms[i][0]);
        cr_assert_eq(r.status, 0, "%s", forms[i][0]);
        cr_assert(starts_with(r.out, "usage: ltlc "), "%s: %s", forms[i][0], r.out);
        cr_assert(strstr(r.out, "check"), "the help names the commands");
        cr_assert(strstr(r.out, "emit"));
        cr_assert_str_eq(r.err, "");
    }
    Run r = RUN("check", "--help");
    cr_assert_eq(r.status, 0);
    cr_assert(starts_with(r.out, "usage: ltlc check"), "%s", r.out);
    cr_assert_str_eq(r.err, "");
    r = RUN("emit", "--help");
    cr_assert_eq(r.status, 0);
    cr_assert(starts_with(r.out, "usage: ltlc emit"), "%s", r.out);
    cr_assert(strstr(r.out, "ast"));
    cr_assert_str_eq(r.err, "");
    r = RUN("check", "x.ltl", "-h"); /* help wins wherever it is */
    cr_assert_eq(r.status, 0);
    cr_assert(starts_with(r.out, "usage: ltlc check"));
}

Test(cli, version) {
    Run r = RUN("--version");
    cr_assert_eq(r.status, 0);
    cr_assert_str_eq(r.out, "ltlc " LTL_VERSION "\n");
    cr_assert_str_eq(r.err, "");
}

/* Usage errors: exit 2, a message on stderr that points at --help, nothing on stdout. */
static void usage_error(Run r, const char *first_line) {
    cr_assert_eq(r.status, 2, "exit %d; stderr:\n%s", r.status, r.err);
    cr_assert_str_eq(r.out, "");
    cr_assert(starts_with(r.err, first_line), "stderr:\n%s", r.err);
}

Test(cli, usage_errors) {
    Run r = run_in(SRCDIR, (const char *const[]){NULL});
    cr_assert_eq(r.status, 2);
    cr_assert_str_eq(r.out, "");
    cr_assert(starts_with(r.err, "usage: ltlc "), "no arguments: the usage, on stderr");
    usage_error(RUN("frobnicate"), "ltlc: unknown command 'frobnicate'\nTry 'ltlc --help'.\n");
    usage_error(RUN("--bogus"), "ltlc: unknown command '--bogus'\n");
    usage_error(RUN("check", "--bogus", "tests/frontend/empty.ltl"), "ltlc: unknown option '--bogus' for check\n");
    usage_error(RUN("check"), "ltlc: check needs at least one FILE\n");
    usage_error(RUN("emit"), "ltlc: emit ");
    usage_error(RUN("emit", "ast"), "ltlc: emit ");
    usage_error(RUN("emit", "bogus", "tests/frontend/empty.ltl"), "ltlc: unknown stage 'bogus'");
}

/* A file that cannot be read: exit 1 and exactly one message. */
static void input_error(Run r, const char *want) {
    cr_assert_eq(r.status, 1, "exit %d", r.status);
    cr_assert_str_eq(r.out, "");
    cr_assert_str_eq(r.err, want);
}

Test(cli, unreadable_input) {
    input_error(RUN("check", "no/such/file.ltl"),
                "ltlc: error: cannot open no/such/file.ltl: No such file or directory\n");
    input_error(RUN("emit", "ast", "no/such/file.ltl"),
                "ltlc: error: cannot open no/such/file.ltl: No such file or directory\n");
    input_error(RUN("check", "tests"), "ltlc: error: tests is a directory\n");
    /* opens, then fails to read (as root a mode-000 file is still readable) */
    input_error(RUN("check", "/proc/self/mem"), "ltlc: error: cannot read /proc/self/mem\n");
    if (geteuid() != 0) {
        char path[] = "/tmp/ltl-unreadable-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        close(fd);
        chmod(path, 0);
        char want[256];
        snprintf(want, sizeof want, "ltlc: error: cannot open %s: Permission denied\n", path);
        input_error(RUN("check", path), want);
        unlink(path);
    }
}

Test(cli, check_and_emit) {
    /* (clean inputs with nothing for the later passes to judge: this tests the front end) */
    Run r = RUN("check", "tests/frontend/empty.ltl", "tests/frontend/comments_only.ltl");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    cr_assert_str_eq(r.err, "");
    /* several files: each is checked, the status is 1 if any has an error */
    r = RUN("check", "tests/frontend/missing_paren.ltl", "tests/frontend/empty.ltl", "tests/frontend/else_newline.ltl");
    cr_assert_eq(r.status, 1);
    cr_assert(starts_with(r.err, "tests/frontend/missing_paren.ltl:4:1: error: "), "%s", r.err);
    cr_assert(strstr(r.err, "\ntests/frontend/else_newline.ltl:5:5: error: "), "%s", r.err);
    cr_assert_null(strstr(r.err, "empty.ltl"));
    /* emit ast on an input with errors: the errors, no output */
    r = RUN("emit", "ast", "tests/frontend/missing_paren.ltl");
    cr_assert_eq(r.status, 1);
    cr_assert_str_eq(r.out, "");
    cr_assert(starts_with(r.err, "tests/frontend/missing_paren.ltl:4:1: error: "));
    /* an absolute path is printed as given */
    r = RUN("check", SRCDIR "/tests/frontend/else_newline.ltl");
    cr_assert(starts_with(r.err, SRCDIR "/tests/frontend/else_newline.ltl:5:5: error: "), "%s", r.err);
}

/* emit --precision builds the graph as the trainer's precision would: the mixed modes round
 * the matmul operands (casts to bf16 / f16 in the graph and in the CUDA source); an unknown
 * mode is a usage error. */
Test(cli, emit_precision) {
    Run r = RUN("emit", "grad", "examples/fashion_mlp.ltl");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_null(strstr(r.out, "bf16"), "32-true has no bf16 values");
    r = RUN("emit", "grad", "--precision", "bf16-mixed", "examples/fashion_mlp.ltl");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "bf16"), "%s", r.out);
    r = RUN("emit", "cuda", "--precision=16-mixed", "examples/fashion_mlp.ltl");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "ltl_f16("), "the casts in the CUDA source");
    r = RUN("emit", "cuda", "--precision", "fp8", "examples/fashion_mlp.ltl");
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "unknown precision 'fp8'"), "%s", r.err);
}

/* Diagnostics are plain text when stderr is not a terminal, and never coloured with NO_COLOR. */
Test(cli, no_colour_in_pipes) {
    set_no_color = false;
    Run r = RUN("check", "tests/frontend/missing_paren.ltl");
    cr_assert_null(strchr(r.err, '\033'), "escape codes in:\n%s", r.err);
    cr_assert_eq(r.status, 1);
}

/* The printed AST is itself a clean input, and prints to the same text. */
Test(cli, emit_ast_round_trip) {
    Run r = RUN("emit", "ast", "tests/frontend/expressions.ltl");
    cr_assert_eq(r.status, 0);
    char path[] = "/tmp/ltl-ast-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, r.out, strlen(r.out)), (ssize_t)strlen(r.out));
    close(fd);
    Run again = RUN("emit", "ast", path);
    unlink(path);
    cr_assert_eq(again.status, 0, "%s", again.err);
    cr_assert_str_eq(again.out, r.out);
}
