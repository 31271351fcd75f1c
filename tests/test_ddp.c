/* test_ddp.c — data-parallel training (docs/distributed.md) through OpenMPI's mpirun on
 * this machine: 2 ranks x batch 32 take the steps of 1 rank x batch 64, `--trainer.devices=2`
 * launches its own ranks, only rank 0 writes files, a resumed 2-rank run is bit-identical, a
 * killed rank ends the job with its rank named, NCCL without a GPU fails cleanly, and two
 * ranks in two network namespaces train over TCP (the multi-node path). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "rt.h"
#include "e2e_test.h"

static char dir[64];
#define MPIRUN "mpirun --allow-run-as-root --oversubscribe"

static void setup(void) { e2e_ddp_files(dir, "/tmp/ltl_ddp_XXXXXX"); }

static void teardown(void) { e2e_rmdir(dir); }

TestSuite(ddp, .init = setup, .fini = teardown, .timeout = 90);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* Runs a shell command in dir; stdout+stderr into out. Returns the exit status. */
static int sh(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t size, const char *fmt, ...) {
    char cmd[2048] = E2E_RANK_ENV;
    size_t n = strlen(cmd);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof cmd - n, fmt, ap);
    va_end(ap);
    return e2e_sh(dir, out, size, cmd);
}

/* The only checkpoint in ROOT/lightning_logs/version_0/checkpoints. */
static RtCkpt *only_ckpt(const char *root, char *name, size_t size) {
    char d[256], p[600];
    snprintf(d, sizeof d, "%s/%s/lightning_logs/version_0/checkpoints", dir, root);
    DIR *dd = opendir(d);
    cr_assert(dd, "no %s", d);
    int n = 0;
    for (struct dirent *e; (e = readdir(dd));)
        if (strstr(e->d_name, ".ckpt")) { snprintf(p, sizeof p, "%s/%s", d, e->d_name); snprintf(name, size, "%s", e->d_name); n++; }
    closedir(dd);
    cr_assert_eq(n, 1, "checkpoints in %s", d);
    char err[RT_CKPT_ERR_LEN];
    RtCkpt *ck = rt_ckpt_open(p, err);
    cr_assert(ck, "%s", err);
    return ck;
}

Test(ddp, two_ranks_of_32_take_the_steps_of_one_rank_of_64) {
    static char out[1 << 16];
    int st = sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --trainer.default_root_dir=two", LTLC);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "%s run tiny.ltl fit --data.batch=64 --trainer.default_root_dir=one", LTLC), 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "%s run tiny.ltl fit --trainer.default_root_dir=small", LTLC), 0, "%s", out);
    char n2[256], n1[256], ns[256];
    RtCkpt *two = only_ckpt("two", n2, sizeof n2), *one = only_ckpt("one", n1, sizeof n1), *small = only_ckpt("small", ns, sizeof ns);
    /* 256 samples: 4 steps an epoch either way (1 rank of batch 32 takes 8) */
    cr_assert_str_eq(n2, "epoch=1-step=8.ckpt");
    cr_assert_str_eq(n1, "epoch=1-step=8.ckpt");
    cr_assert_str_eq(ns, "epoch=1-step=16.ckpt");
    double scale, d = e2e_max_diff(two, one, &scale), scale2, far = e2e_max_diff(two, small, &scale2);
    cr_assert(scale > 0.1, "weights of size %g", scale);
    cr_assert(d <= 1e-5 * scale, "2 x 32 vs 1 x 64: weights differ by %g (largest %g)", d, scale);
    cr_assert(far > 1e-3, "a run of batch 32 on one rank should differ (by %g)", far);
    rt_ckpt_close(two);
    rt_ckpt_close(one);
    rt_ckpt_close(small);
}

/* The reference interpreter runs the same all_reduce (through the same runtime call). */
Test(ddp, interpreter_backend_averages_like_the_jit) {
    static char out[1 << 16];
    cr_assert_eq(sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --backend=interp --trainer.default_root_dir=interp", LTLC),
                 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --trainer.default_root_dir=jit", LTLC), 0, "%s", out);
    char n1[256], n2[256];
    RtCkpt *interp = only_ckpt("interp", n1, sizeof n1), *jit = only_ckpt("jit", n2, sizeof n2);
    cr_assert_str_eq(n1, "epoch=1-step=8.ckpt");
    double scale, d = e2e_max_diff(interp, jit, &scale);
    cr_assert(d <= 1e-5 * scale, "interpreter vs JIT over 2 ranks: %g", d);
    rt_ckpt_close(interp);
    rt_ckpt_close(jit);
}

Test(ddp, devices_2_launches_its_ranks_and_only_rank_0_writes) {
    static char out[1 << 16];
    int st = sh(out, sizeof out, "%s run tiny.ltl fit predict --trainer.devices=2 --trainer.default_root_dir=runs", LTLC);
    cr_assert_eq(st, 0, "%s", out);
    /* one run folder, one line of 'run folder:' and one prediction per sample */
    char p[256];
    struct stat sb;
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_1", dir);
    cr_assert_neq(stat(p, &sb), 0, "a second rank made a run folder:\n%s", out);
    char *first = strstr(out, "run folder:");
    cr_assert(first && !strstr(first + 1, "run folder:"), "%s", out);
    char name[256];
    RtCkpt *ck = only_ckpt("runs", name, sizeof name);
    cr_assert_str_eq(name, "epoch=1-step=8.ckpt", "two ranks: 4 steps an epoch");
    rt_ckpt_close(ck);
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/predictions.csv", dir);
    FILE *f = fopen(p, "r");
    cr_assert(f, "no %s:\n%s", p, out);
    int lines = 0;
    for (int c; (c = fgetc(f)) != EOF;) lines += c == '\n';
    fclose(f);
    cr_assert_eq(lines, 64, "predictions of the 64 samples, written once");
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/metrics.csv", dir);
    cr_assert_eq(stat(p, &sb), 0);
}

Test(ddp, resumed_two_rank_run_is_bit_identical) {
    static char out[1 << 16];
    cr_assert_eq(sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --trainer.max_epochs=3 --trainer.default_root_dir=full",
                    LTLC), 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --trainer.default_root_dir=part", LTLC), 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --trainer.max_epochs=3 --trainer.default_root_dir=part "
                    "--ckpt_path=part/lightning_logs/version_0/checkpoints/epoch=1-step=8.ckpt", LTLC), 0, "%s", out);
    char n1[256], p[256], err[RT_CKPT_ERR_LEN];
    RtCkpt *full = only_ckpt("full", n1, sizeof n1);
    snprintf(p, sizeof p, "%s/part/lightning_logs/version_1/checkpoints/epoch=2-step=12.ckpt", dir);
    RtCkpt *resumed = rt_ckpt_open(p, err);
    cr_assert(resumed, "%s\n%s", err, out);
    double scale, d = e2e_max_diff(full, resumed, &scale);
    cr_assert_eq(d, 0, "the resumed run differs by %g", d);
    rt_ckpt_close(full);
    rt_ckpt_close(resumed);
}

/* The pids of a process's children (/proc/PID/task/PID/children). */
static int children(pid_t pid, pid_t *out, int max) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/task/%d/children", pid, pid);
    FILE *f = fopen(p, "r");
    int n = 0;
    long v;
    while (f && n < max && fscanf(f, "%ld", &v) == 1) out[n++] = (pid_t)v;
    if (f) fclose(f);
    return n;
}

/* Starts a long 2-rank run, sends one rank `sig` once both train, and waits for the job to
 * end: the seconds it took after the signal; its output in out. */
static double signal_a_rank(int sig, const char *env, char *out, size_t size) {
    char log[256], cmd[1024];
    snprintf(log, sizeof log, "%s/out.txt", dir);
    snprintf(cmd, sizeof cmd, "cd %s && " E2E_RANK_ENV "%s exec " MPIRUN " --timeout 60 -np 2 %s run tiny.ltl fit --trainer.max_epochs=100000 >%s 2>&1",
             dir, env, LTLC, log);
    pid_t pid = fork();
    if (pid == 0) { execl("/bin/sh", "sh", "-c", cmd, (char *)NULL); _exit(127); }
    /* wait until both ranks train (the checkpoint folder exists), then signal one */
    char ck[256];
    snprintf(ck, sizeof ck, "%s/runs/lightning_logs/version_0/checkpoints", dir);
    struct stat sb;
    for (double t0 = now(); now() - t0 < 30 && stat(ck, &sb) != 0;) usleep(20000);
    usleep(300000);
    pid_t kids[8];
    int n = children(pid, kids, 8);
    if (stat(ck, &sb) != 0 || n != 2) kill(pid, SIGKILL);
    cr_assert_eq(stat(ck, &sb), 0, "the ranks did not start");
    cr_assert_eq(n, 2, "mpirun's ranks");
    cr_assert_eq(kill(kids[1], sig), 0);
    double t0 = now();
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0 && now() - t0 < 30) usleep(20000);
    double waited = now() - t0;
    if (waited >= 30) kill(pid, SIGKILL), waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    FILE *f = fopen(log, "r");
    size_t len = fread(out, 1, size - 1, f);
    out[len] = 0;
    fclose(f);
    return waited;
}

Test(ddp, a_killed_rank_ends_the_job_with_its_rank_named) {
    static char out[1 << 16];
    double waited = signal_a_rank(SIGKILL, "", out, sizeof out);
    cr_assert(waited < 10, "the job went on %g s after a rank died", waited);
    cr_assert(strstr(out, "process rank") && strstr(out, "signal 9"), "the message names the rank:\n%s", out);
}

/* A rank that stops answering (here: stopped) without dying: the others' watchdog ends the
 * job after LTL_DDP_TIMEOUT seconds, naming itself and the collective it waited in. */
Test(ddp, a_hung_rank_ends_the_job_after_the_timeout) {
    static char out[1 << 16];
    double waited = signal_a_rank(SIGSTOP, "LTL_DDP_TIMEOUT=2", out, sizeof out);
    cr_assert(waited >= 1.5 && waited < 15, "ended %g s after a rank hung", waited);
    cr_assert(strstr(out, "no answer from the other ranks for 2 s"), "%s", out);
    cr_assert(strstr(out, "rank 0 of 2") || strstr(out, "rank 1 of 2"), "%s", out);
}

/* Bad data on one rank: image 1 is black, and unshuffled it is in rank 1's first batch, whose
 * loss log(0) * 0 is NaN; detect_anomaly stops rank 1, whose failure stops rank 0. */
Test(ddp, a_rank_failing_on_its_data_ends_the_job_with_its_rank_named) {
    static char out[1 << 16];
    e2e_write(dir, "bad.ltl", E2E_DDP_BAD_MODEL, dir);
    double t0 = now();
    int st = sh(out, sizeof out, MPIRUN " -np 2 %s run bad.ltl fit", LTLC);
    cr_assert(now() - t0 < 30, "%g s", now() - t0);
    cr_assert_neq(st, 0, "%s", out);
    cr_assert(strstr(out, "nan at step 0 (detect_anomaly)"), "%s", out);
    cr_assert(strstr(out, "ltlc: rank 1 of 2: failed (the message above); stopping all ranks"), "%s", out);
}

Test(ddp, launch_errors_are_clear) {
    static char out[1 << 16];
    int st = sh(out, sizeof out, "LTL_MPIRUN=/nonexistent/mpirun %s run tiny.ltl fit --trainer.devices=2", LTLC);
    cr_assert_eq(st, 1, "%s", out);
    cr_assert(strstr(out, "mpirun, which is not installed"), "%s", out);
    cr_assert_eq(sh(out, sizeof out, "%s run tiny.ltl fit --trainer.devices=2 --trainer.num_nodes=2", LTLC), 1, "%s", out);
    cr_assert(strstr(out, "num_nodes = 2: start the ranks on the nodes yourself"), "%s", out);
    cr_assert_neq(sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --trainer.devices=3", LTLC), 0, "%s", out);
    cr_assert(strstr(out, "the launcher started 2 ranks, but devices x num_nodes = 3"), "%s", out);
}

Test(ddp, two_ranks_in_two_network_namespaces_train_over_tcp) {
    static char out[1 << 16];
    int st = sh(out, sizeof out, "%s/tests/ddp/netns.sh %s %s run tiny.ltl fit --trainer.default_root_dir=nodes", SRCDIR, dir,
                LTLC);
    if (st == 77) cr_skip_test("%s", out); /* no network namespaces here (needs root and iproute2) */
    cr_assert_eq(st, 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, MPIRUN " -np 2 %s run tiny.ltl fit --trainer.default_root_dir=local", LTLC), 0, "%s", out);
    char n1[256], n2[256];
    RtCkpt *nodes = only_ckpt("nodes", n1, sizeof n1), *local = only_ckpt("local", n2, sizeof n2);
    cr_assert_str_eq(n1, "epoch=1-step=8.ckpt", "two ranks: 4 steps an epoch");
    double scale, d = e2e_max_diff(nodes, local, &scale);
    cr_assert(d <= 1e-6 * scale, "over TCP the weights differ by %g", d);
    rt_ckpt_close(nodes);
    rt_ckpt_close(local);
}

/* The launchers' environments, and collectives in a world of one (before rt_dist_init). */
Test(ddp, launcher_environment_and_a_world_of_one) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK",
                                       "PMIX_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
    int rank, size, local;
    cr_assert_not(rt_dist_env(&rank, &size, &local));
    cr_assert(rank == 0 && size == 1 && local == 0);
    setenv("SLURM_PROCID", "5", 1), setenv("SLURM_NTASKS", "8", 1), setenv("SLURM_LOCALID", "1", 1);
    cr_assert(rt_dist_env(&rank, &size, &local));
    cr_assert(rank == 5 && size == 8 && local == 1, "%d %d %d", rank, size, local);
    setenv("OMPI_COMM_WORLD_RANK", "2", 1), setenv("OMPI_COMM_WORLD_SIZE", "3", 1); /* mpirun's win */
    cr_assert(rt_dist_env(&rank, &size, &local));
    cr_assert(rank == 2 && size == 3 && local == 0, "%d %d %d", rank, size, local);
    cr_assert(rt_dist_rank() == 0 && rt_dist_size() == 1);
    float v[3] = {1, 2, 3};
    cr_assert_eq(rt_dist_allreduce(v, 3, RT_DIST_F32, RT_DIST_MEAN), 0);
    cr_assert(v[0] == 1 && v[1] == 2 && v[2] == 3);
    cr_assert(rt_dist_agree(true) && !rt_dist_agree(false));
    cr_assert_eq(rt_dist_barrier(), 0);
}
