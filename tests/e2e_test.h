/* e2e_test.h — what the end-to-end tests (tests/test_run.c, test_build.c, test_ddp.c,
 * test_precision.c, test_cuda_run.c, test_cuda_ddp.c, test_stdlib.c) share: a temporary directory with files
 * in it, commands run there, a small IDX data set, checkpoints compared tensor by tensor. */
#ifndef LTL_E2E_TEST_H
#define LTL_E2E_TEST_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "rt.h"

/* dir (64 bytes) becomes a fresh directory named after tmpl ("/tmp/ltl_run_XXXXXX"). */
static inline void e2e_tmpdir(char *dir, const char *tmpl) {
    strcpy(dir, tmpl);
    cr_assert(mkdtemp(dir), "mkdtemp %s", tmpl);
}

static inline void e2e_rmdir(const char *dir) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* dir/name holds the printf-style fmt with its arguments (a model source with its paths). */
static inline void e2e_write(const char *dir, const char *name, const char *fmt, ...) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    cr_assert(f, "cannot write %s", p);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

/* Runs `cd dir && cmd` in the shell; stdout+stderr into out. Returns the exit status. */
static inline int e2e_sh(const char *dir, char *out, size_t size, const char *cmd) {
    size_t len = strlen(dir) + strlen(cmd) + 16;
    char *full = malloc(len);
    snprintf(full, len, "cd %s && %s 2>&1", dir, cmd);
    FILE *p = popen(full, "r");
    free(full);
    cr_assert(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Every tensor of the checkpoints at paths a and b, byte for byte (`what` names the comparison). */
static inline void e2e_same_tensors(const char *a, const char *b, const char *what) {
    char err[RT_CKPT_ERR_LEN];
    RtCkpt *x = rt_ckpt_open(a, err), *y = x ? rt_ckpt_open(b, err) : NULL;
    cr_assert(x && y, "%s", err);
    cr_assert_eq(rt_ckpt_count(x), rt_ckpt_count(y));
    for (size_t i = 0; i < rt_ckpt_count(x); i++) {
        const RtCkptInfo *t = rt_ckpt_tensor(x, i), *u = rt_ckpt_find(y, t->name);
        cr_assert(u && u->nbytes == t->nbytes, "%s", t->name);
        void *p = malloc(t->nbytes + 1), *q = malloc(u->nbytes + 1);
        cr_assert(rt_ckpt_read(x, t, p, err) && rt_ckpt_read(y, u, q, err), "%s", err);
        cr_assert(!memcmp(p, q, t->nbytes), "%s differs %s", t->name, what);
        free(p);
        free(q);
    }
    rt_ckpt_close(x);
    rt_ckpt_close(y);
}

/* The largest difference between the F32 tensors of two checkpoints (the same names). */
static inline double e2e_max_diff(RtCkpt *a, RtCkpt *b, double *scale) {
    double worst = 0;
    *scale = 0;
    for (size_t i = 0; i < rt_ckpt_count(a); i++) {
        const RtCkptInfo *ta = rt_ckpt_tensor(a, i), *tb = rt_ckpt_find(b, ta->name);
        cr_assert(tb, "%s missing", ta->name);
        if (ta->dtype != RT_CKPT_F32) continue;
        float *x = malloc(ta->nbytes), *y = malloc(tb->nbytes);
        cr_assert(rt_ckpt_read(a, ta, x, NULL) && rt_ckpt_read(b, tb, y, NULL));
        for (uint64_t k = 0; k < ta->numel; k++) {
            worst = fmax(worst, fabs((double)x[k] - y[k]));
            *scale = fmax(*scale, fabs((double)x[k]));
        }
        free(x);
        free(y);
    }
    return worst;
}

/* The data-parallel suites' model (tests/test_ddp.c, test_cuda_ddp.c; e2e_ddp_files writes it with the data
 * folder): SGD with momentum and gradient clipping (which must see the reduced gradient), a
 * validation metric averaged over the ranks, a sync_dist training metric. */
#define E2E_DDP_MODEL \
    "use nn\n" \
    "model Tiny(hidden = 16, lr = 0.2) {\n" \
    "    l1 = nn.Linear(16, hidden)\n" \
    "    l2 = nn.Linear(hidden, 2)\n" \
    "    forward(x: f32[B, 1, 4, 4]) -> f32[B, 2] = l2(relu(l1(flatten(x, 1))))\n" \
    "    training_step(x: f32[B, 1, 4, 4], y: i64[B]) {\n" \
    "        loss = cross_entropy(forward(x), y)\n" \
    "        log(\"train_loss\", loss, on_epoch = true, sync_dist = true)\n" \
    "        return loss\n" \
    "    }\n" \
    "    validation_step(x, y) { log(\"val_acc\", accuracy(forward(x), y)) }\n" \
    "    predict_step(x) { return argmax(forward(x), dim = 1) }\n" \
    "    optimizer = sgd(lr = lr, momentum = 0.9)\n" \
    "}\n" \
    "data Toy(root = \"%s\", batch = 32) {\n" \
    "    train = idx(root + \"/x.idx\", root + \"/y.idx\")\n" \
    "    val = idx(root + \"/vx.idx\", root + \"/vy.idx\")\n" \
    "    predict = idx(root + \"/vx.idx\", root + \"/vy.idx\")\n" \
    "    transform(x) = x / 255\n" \
    "    loader(batch = batch, shuffle = true)\n" \
    "}\n" \
    "trainer {\n" \
    "    max_epochs = 2\n" \
    "    seed = 3\n" \
    "    gradient_clip_val = 0.5\n" \
    "    enable_progress_bar = false\n" \
    "    enable_model_summary = false\n" \
    "}\n"

/* ... and one whose rank 1 meets a black image in its first batch (bx.idx / by.idx written by
 * idx_write with black = 1): loss log(0) * 0 is NaN, and detect_anomaly stops that rank. */
#define E2E_DDP_BAD_MODEL \
    "use nn\n" \
    "model Tiny(lr = 0.1) {\n" \
    "    l1 = nn.Linear(16, 2)\n" \
    "    training_step(x: f32[B, 1, 4, 4], y: i64[B]) {\n" \
    "        h = flatten(x, 1)\n" \
    "        return cross_entropy(l1(h), y) + 0 * mean(log(sum(h, dim = 1)))\n" \
    "    }\n" \
    "    optimizer = sgd(lr = lr)\n" \
    "}\n" \
    "data Bad(root = \"%s\") {\n" \
    "    train = idx(root + \"/bx.idx\", root + \"/by.idx\")\n" \
    "    loader(batch = 32, shuffle = false)\n" \
    "}\n" \
    "trainer {\n    max_epochs = 100\n    detect_anomaly = true\n    enable_progress_bar = false\n}\n"

static inline void idx_be32(FILE *f, unsigned v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

/* dir/name_x, dir/name_y: n 4x4 images of two classes (class 1 bright on the left half, class 0 on
 * the right, with noise) and their labels. Label `bad_label` is 7, out of range; image `black` is
 * all zeros (-1: none). */
static inline void idx_write(const char *dir, const char *name_x, const char *name_y, int n, int bad_label, int black) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name_x);
    FILE *fx = fopen(p, "wb");
    snprintf(p, sizeof p, "%s/%s", dir, name_y);
    FILE *fy = fopen(p, "wb");
    idx_be32(fx, 0x803); idx_be32(fx, (unsigned)n); idx_be32(fx, 4); idx_be32(fx, 4);
    idx_be32(fy, 0x801); idx_be32(fy, (unsigned)n);
    unsigned s = 12345;
    for (int i = 0; i < n; i++) {
        int y = i % 2;
        for (int k = 0; k < 16; k++) {
            s = s * 1103515245u + 12345u;
            fputc(i == black ? 0 : ((k % 4 < 2) == y ? 180 : 40) + (int)(s >> 16) % 60, fx);
        }
        fputc(i == bad_label ? 7 : y, fy);
    }
    fclose(fx);
    fclose(fy);
}

/* The data-parallel suites' folder (tests/test_ddp.c, test_cuda_ddp.c): tiny.ltl (E2E_DDP_MODEL)
 * with its training (x/y) and validation (vx/vy) data, and bx/by for E2E_DDP_BAD_MODEL. */
static inline void e2e_ddp_files(char *dir, const char *tmpl) {
    e2e_tmpdir(dir, tmpl);
    idx_write(dir, "x.idx", "y.idx", 256, -1, -1);
    idx_write(dir, "vx.idx", "vy.idx", 64, -1, -1);
    idx_write(dir, "bx.idx", "by.idx", 256, -1, 1);
    e2e_write(dir, "tiny.ltl", E2E_DDP_MODEL, dir);
}

/* The environment of every rank under mpirun: under AddressSanitizer (make asan) no leak check,
 * as OpenMPI leaks in plugins it has dlclosed by exit, whose frames LSan can neither name nor
 * suppress. */
#ifdef __SANITIZE_ADDRESS__
#define E2E_RANK_ENV "LSAN_OPTIONS=detect_leaks=0 "
#else
#define E2E_RANK_ENV ""
#endif

#endif
