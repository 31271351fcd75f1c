/* prog_main.c — main() of a program made by `ltlc build FILE -o PROG`: `PROG STAGE... [OPTIONS]`
 * is `ltlc run FILE STAGE... [OPTIONS]` with the steps precompiled (step_aot.c). The source
 * travels inside the program: FILE is served from memory (read_file_hook) under the name it
 * had at build time, and the modules it uses are written to a private temporary directory
 * that LTL_STDLIB points at (removed at exit). */
#include "aot.h"
#include "driver.h"
#include "util.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *prog;

static const char *embedded(const char *path, size_t *len) {
    if (strcmp(path, ltl_aot_files[0].name)) return NULL;
    *len = ltl_aot_files[0].len;
    return ltl_aot_files[0].data;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Writes the modules under dir (a/b.ltl makes a/); false with a message. */
static bool write_modules(const char *dir) {
    for (int i = 1; i < ltl_aot_nfiles; i++) {
        char path[8192];
        if (snprintf(path, sizeof path, "%s/%s", dir, ltl_aot_files[i].name) >= (int)sizeof path) return false;
        for (char *c = path + strlen(dir) + 1; (c = strchr(c, '/')); c++) {
            *c = 0;
            if (mkdir(path, 0700) != 0 && errno != EEXIST) return false;
            *c = '/';
        }
        FILE *f = fopen(path, "wb");
        bool ok = f && fwrite(ltl_aot_files[i].data, 1, ltl_aot_files[i].len, f) == ltl_aot_files[i].len;
        if (f && fclose(f) != 0) ok = false;
        if (!ok) {
            fprintf(stderr, "%s: cannot write %s: %s\n", prog, path, strerror(errno));
            return false;
        }
    }
    return true;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: %s STAGE... [OPTIONS]\n"
            "\n"
            "%s, built by `ltlc build` with its steps compiled for %s, runs its stages in order:\n"
            "fit, validate, test, predict (as `ltlc run %s STAGE...`).\n"
            "\n"
            "options:\n"
            "  --trainer.FLAG=VALUE   override a trainer flag, e.g. --trainer.max_epochs=3\n"
            "  --model.NAME=VALUE     override a hyperparameter (the program has code only for the\n"
            "  --data.NAME=VALUE      sizes it was built with; others need --backend=interp)\n"
            "  --ckpt_path=FILE|last|best  start from this checkpoint\n"
            "  --threads=N            kernel threads (default: one per core)\n"
            "  --barebones            no progress bar, logging, checkpoints or summary\n"
            "  --backend=llvm|interp  the precompiled steps (default) or the reference interpreter\n"
            "\n"
            "Exit 0 ok, 1 an error, 2 usage.\n",
            prog, ltl_aot_files[0].name, ltl_aot_cpu, ltl_aot_files[0].name);
}

int main(int argc, char **argv) {
    prog = diag_program = argv[0];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return 0; }
    /* options by prefix (those ending in '.' or '=') or whole */
    static const char *const options[] = {"--trainer.", "--model.", "--data.", "--ckpt_path=", "--threads=",
                                          "--barebones", "--backend=llvm", "--backend=interp"};
    int nstages = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool known = false;
        for (size_t k = 0; k < sizeof options / sizeof *options; k++) {
            size_t n = strlen(options[k]);
            known |= strchr(".=", options[k][n - 1]) ? !strncmp(a, options[k], n) : !strcmp(a, options[k]);
        }
        if (a[0] == '-' && !known) {
            fprintf(stderr, "%s: unknown option '%s'\nTry '%s --help'.\n", prog, a, prog);
            return 2;
        }
        if (a[0] == '-') continue;
        if (strcmp(a, "fit") && strcmp(a, "validate") && strcmp(a, "test") && strcmp(a, "predict")) {
            fprintf(stderr, "%s: unknown command '%s' (fit, validate, test, predict)\nTry '%s --help'.\n", prog, a, prog);
            return 2;
        }
        nstages++;
    }
    if (!nstages) { usage(stderr); return 2; }
    const char *missing = ltl_aot_cpu_missing();
    if (missing) {
        fprintf(stderr, "%s: this program was compiled for a %s CPU and this CPU lacks %s: rebuild it here\n",
                prog, ltl_aot_cpu, missing);
        return 1;
    }
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ltl-prog-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "%s: cannot create a directory in %s: %s\n", prog, tmp && tmp[0] ? tmp : "/tmp", strerror(errno));
        return 1;
    }
    int status = 1;
    if (write_modules(dir) && setenv("LTL_STDLIB", dir, 1) == 0) {
        /* FILE, then the options of the build, then the user's (later ones win) */
        char **args = xmalloc(sizeof *args * (size_t)(argc + ltl_aot_nargs + 1));
        int n = 0;
        args[n++] = (char *)ltl_aot_files[0].name;
        for (int i = 1; i < argc; i++)
            if (argv[i][0] != '-') args[n++] = argv[i];
        for (int i = 0; i < ltl_aot_nargs; i++) args[n++] = (char *)ltl_aot_args[i];
        for (int i = 1; i < argc; i++)
            if (argv[i][0] == '-') args[n++] = argv[i];
        args[n] = NULL;
        read_file_hook = embedded;
        status = run_command(n, args);
        free(args);
    }
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}
