/* test_build.c — `ltlc build FILE -o PROG`: the program links no LLVM, trains to exactly the
 * weights and output of `ltlc run`, tests from its checkpoint, refuses steps it has no code
 * for (unless told to interpret them), and a failed build leaves no file behind. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "rt.h"
#include "e2e_test.h"

static char dir[64];

/* 150 training samples in batches of 16 (the last one 6), 40 validation (the last 8), so
 * the program needs steps at three batch sizes. */
static const char *model_src =
    "use nn\n"
    "model Small(hidden = 12, lr = 1e-2) {\n"
    "    l1 = nn.Linear(16, hidden)\n"
    "    l2 = nn.Linear(hidden, 2)\n"
    "    forward(x: f32[B, 1, 4, 4]) -> f32[B, 2] = l2(relu(l1(flatten(x, 1))))\n"
    "    training_step(x: f32[B, 1, 4, 4], y: i64[B]) {\n"
    "        loss = cross_entropy(forward(x), y)\n"
    "        log(\"train_loss\", loss, prog_bar = true, on_epoch = true)\n"
    "        return loss\n"
    "    }\n"
    "    validation_step(x, y) { log(\"val_acc\", accuracy(forward(x), y)) }\n"
    "    test_step(x, y) { log(\"test_acc\", accuracy(forward(x), y)) }\n"
    "    optimizer = adam(lr = lr)\n"
    "}\n"
    "data Toy(root = \"%s\", batch = 16) {\n"
    "    train, val = split(idx(root + \"/x.idx\", root + \"/y.idx\"), [150, 40], seed = 1)\n"
    "    test = idx(root + \"/tx.idx\", root + \"/ty.idx\")\n"
    "    transform(x) = x / 255\n"
    "    loader(batch = batch, shuffle = true)\n"
    "}\n"
    "trainer {\n"
    "    max_epochs = 3\n"
    "    seed = 5\n"
    "    enable_progress_bar = false\n"
    "    logger = [csv]\n"
    "}\n";

static void setup(void) {
    e2e_tmpdir(dir, "/tmp/ltl_build_XXXXXX");
    idx_write(dir, "x.idx", "y.idx", 190, -1, -1);
    idx_write(dir, "tx.idx", "ty.idx", 48, -1, -1);
    e2e_write(dir, "small.ltl", model_src, dir);
}

static void teardown(void) { e2e_rmdir(dir); }

TestSuite(build, .init = setup, .fini = teardown, .timeout = 120);

/* Runs a shell command in dir; stdout+stderr into out. Returns the exit status. */
static int sh(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t size, const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return e2e_sh(dir, out, size, cmd);
}

static bool exists(const char *name) {
    char p[256];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

/* The lines of out from the first "test metrics:" on (the run folder differs). */
static const char *metrics(const char *out) {
    const char *m = strstr(out, "test metrics:");
    cr_assert(m, "%s", out);
    return m;
}

Test(build, program_trains_like_ltlc_run) {
    static char out[1 << 16], ref[1 << 16];
    cr_assert_eq(sh(out, sizeof out, "%s build small.ltl -o small", LTLC), 0, "%s", out);
    cr_assert(strstr(out, "built small: 5 steps"), "train 16 and 6, validation 16 and 8, test 16:\n%s", out);
    cr_assert_eq(sh(out, sizeof out, "ldd small"), 0, "%s", out);
    cr_assert(strstr(out, "libc.so") && !strstr(out, "LLVM"), "no LLVM linked:\n%s", out);
    cr_assert_eq(sh(out, sizeof out, "grep -c libLLVM small"), 1, "no LLVM named (dlopen) either: %s", out);

    cr_assert_eq(sh(out, sizeof out, "./small fit test"), 0, "%s", out);
    cr_assert_eq(sh(ref, sizeof ref, "%s run small.ltl fit test", LTLC), 0, "%s", ref);
    cr_assert(strstr(out, "| l1   | Linear | 204"), "the model summary:\n%s", out);
    *strstr(strstr(out, "test metrics:"), "run folder:") = 0;
    *strstr(strstr(ref, "test metrics:"), "run folder:") = 0;
    cr_assert_str_eq(out, ref, "PROG prints what ltlc run prints");
    const char *ck = "%s/runs/lightning_logs/version_%d/checkpoints/epoch=2-step=30.ckpt";
    char a[256], b[256];
    snprintf(a, sizeof a, ck, dir, 0);
    snprintf(b, sizeof b, ck, dir, 1);
    e2e_same_tensors(a, b, "between PROG and ltlc run");
    cr_assert_eq(sh(out, sizeof out, "cmp runs/lightning_logs/version_0/metrics.csv runs/lightning_logs/version_1/metrics.csv"), 0,
                 "same metrics.csv: %s", out);

    /* test from the checkpoint: the same accuracy as ltlc run from it */
    cr_assert_eq(sh(out, sizeof out, "./small test --ckpt_path=%s", a), 0, "%s", out);
    cr_assert_eq(sh(ref, sizeof ref, "%s run small.ltl test --ckpt_path=%s", LTLC, a), 0, "%s", ref);
    cr_assert(strstr(out, "Restoring states"), "%s", out);
    *strstr(out, "run folder:") = 0;
    *strstr(ref, "run folder:") = 0;
    cr_assert_str_eq(metrics(out), metrics(ref));
    /* validate runs the partial batch of 8 from its own precompiled step */
    cr_assert_eq(sh(out, sizeof out, "./small validate --trainer.logger=false"), 0, "%s", out);
    cr_assert(strstr(out, "val_acc"), "%s", out);
}

Test(build, program_usage_and_missing_steps) {
    static char out[1 << 16];
    cr_assert_eq(sh(out, sizeof out, "%s build small.ltl -o small --trainer.max_epochs=1", LTLC), 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "./small frobnicate"), 2, "%s", out);
    cr_assert(strstr(out, "unknown command 'frobnicate'"), "%s", out);
    cr_assert_eq(sh(out, sizeof out, "./small fit --frobnicate"), 2, "%s", out);
    cr_assert(strstr(out, "unknown option '--frobnicate'"), "%s", out);
    cr_assert_eq(sh(out, sizeof out, "./small"), 2, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "./small --help"), 0, "%s", out);
    cr_assert(strstr(out, "fit, validate, test, predict"), "%s", out);
    /* the CUDA executor is not linked into programs: "cuda" says so, "auto" is the CPU */
    cr_assert_eq(sh(out, sizeof out, "./small fit --trainer.accelerator=cuda"), 1, "%s", out);
    cr_assert(strstr(out, "programs made by `ltlc build` train on the CPU only"), "%s", out);
    /* the build's --trainer.max_epochs=1 is built in (one epoch of 10 batches); PROG's own flags
     * win; the sources live in a private directory removed at exit */
    cr_assert_eq(sh(out, sizeof out, "mkdir t && TMPDIR=$PWD/t ./small fit && ls t | wc -l"), 0, "%s", out);
    cr_assert(exists("runs/lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt"), "%s", out);
    cr_assert(!strcmp(strrchr(out, '\n') ? out + strlen(out) - 2 : out, "0\n"), "TMPDIR left empty: %s", out);
    cr_assert_eq(sh(out, sizeof out, "./small fit --trainer.max_epochs=2"), 0, "%s", out);
    cr_assert(exists("runs/lightning_logs/version_1/checkpoints/epoch=1-step=20.ckpt"), "%s", out);
    /* another batch size needs another graph: a clear error, or the interpreter when asked */
    cr_assert_eq(sh(out, sizeof out, "./small fit --data.batch=32 --trainer.logger=false"), 1, "%s", out);
    cr_assert(strstr(out, "no code for it") && strstr(out, "a training step, batch 16") && strstr(out, "--backend=interp"),
              "%s", out);
    cr_assert_eq(sh(out, sizeof out, "./small fit test --data.batch=32 --trainer.logger=false --backend=interp"), 0, "%s", out);
    cr_assert(strstr(out, "test_acc"), "%s", out);
}

Test(build, errors_leave_no_file) {
    static char out[1 << 16];
    cr_assert_eq(sh(out, sizeof out, "%s build small.ltl -o nodir/small", LTLC), 1, "%s", out);
    cr_assert(strstr(out, "cannot write nodir/small") && strstr(out, "No such file"), "%s", out);
    cr_assert_eq(sh(out, sizeof out, "mkdir d && %s build small.ltl -o d", LTLC), 1, "%s", out);
    cr_assert(strstr(out, "is a directory"), "%s", out);
    cr_assert_eq(sh(out, sizeof out, "PATH=/nonexistent %s build small.ltl -o small", LTLC), 1, "%s", out);
    cr_assert(strstr(out, "no 'cc' on PATH"), "%s", out);
    cr_assert(!exists("small"));
    /* a cc that fails: the old program stays as it was, no temporary file is left */
    cr_assert_eq(sh(out, sizeof out, "echo old > small && mkdir bin && printf '#!/bin/sh\\nexit 3\\n' > bin/cc && chmod +x bin/cc"), 0);
    cr_assert_eq(sh(out, sizeof out, "PATH=%s/bin:$PATH %s build small.ltl -o small", dir, LTLC), 1, "%s", out);
    cr_assert(strstr(out, "linking small failed") && strstr(out, "status 3"), "%s", out);
    cr_assert_eq(sh(out, sizeof out, "cat small; ls | grep -c tmp"), 1, "%s", out);
    cr_assert(!strcmp(out, "old\n0\n"), "%s", out);
    /* errors in the source: reported as by ltlc run, nothing written */
    cr_assert_eq(sh(out, sizeof out, "echo 'model M {' > bad.ltl && %s build bad.ltl -o bad", LTLC), 1, "%s", out);
    cr_assert(strstr(out, "bad.ltl:"), "%s", out);
    cr_assert(!exists("bad"));
    cr_assert_eq(sh(out, sizeof out, "%s build small.ltl", LTLC), 2, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "%s build small.ltl -o x --frob", LTLC), 2, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "%s build --help", LTLC), 0, "%s", out);
    cr_assert(strstr(out, "-o PROG"), "%s", out);
}

/* --cpu=generic: code for any x86-64 (no AVX at all in the program), training as well */
Test(build, generic_cpu) {
    static char out[1 << 16];
    cr_assert_eq(sh(out, sizeof out, "%s build small.ltl -o small --cpu=pentium", LTLC), 2, "%s", out);
    cr_assert(strstr(out, "unknown CPU 'pentium'"), "%s", out);
    cr_assert_eq(sh(out, sizeof out, "%s build small.ltl -o small --cpu=generic", LTLC), 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "objdump -d small | grep -c -E '[yz]mm|xmm(1[6-9]|2[0-9]|3[01])'"), 1, "SSE only: %s", out);
    cr_assert_eq(sh(out, sizeof out, "./small fit test --trainer.logger=false"), 0, "%s", out);
    const char *acc = strstr(out, "test_acc");
    cr_assert(acc && atof(acc + 8) >= 0.9, "%s", out);
}
