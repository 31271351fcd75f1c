/* run_ddp.c — the world of `ltlc run` with strategy = "ddp" (docs/distributed.md): one
 * process, a rank of a world a launcher started (mpirun, srun), or the launcher itself,
 * which starts devices ranks of this same command through OpenMPI's mpirun. */
#include "driver.h"
#include "rt.h"
#include "util.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* mpirun: $LTL_MPIRUN, else the first on $PATH; false if none. */
static bool find_mpirun(char *out, size_t size) {
    const char *env = getenv("LTL_MPIRUN");
    if (env && *env) {
        snprintf(out, size, "%s", env);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(out, size, "%.*s/mpirun", (int)n, p);
        if (n && access(out, X_OK) == 0) return true;
        p += n + (p[n] == ':');
    }
    return false;
}

/* Starts `mpirun -np N ltlc run ARGS` and waits for it: its exit status. */
static int launch(int n, int argc, char **argv) {
    char mpirun[1024], self[1024];
    if (!find_mpirun(mpirun, sizeof mpirun)) {
        fprintf(stderr, "ltlc: error: devices = %d starts its ranks with OpenMPI's mpirun, which is not installed "
                        "(apt-get install openmpi-bin); or start them yourself: mpirun -np %d ltlc run ... / srun\n", n, n);
        return 1;
    }
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) { fprintf(stderr, "ltlc: error: cannot find the ltlc executable: %s\n", strerror(errno)); return 1; }
    self[len] = 0;
    char np[16];
    snprintf(np, sizeof np, "%d", n);
    const char **av = xcalloc((size_t)argc + 16, sizeof *av);
    int k = 0;
    av[k++] = mpirun;
    if (geteuid() == 0) av[k++] = "--allow-run-as-root"; /* containers run as root */
    av[k++] = "--oversubscribe";                          /* more ranks than cores is allowed */
    av[k++] = "-np";
    av[k++] = np;
    av[k++] = self;
    av[k++] = "run";
    for (int i = 0; i < argc; i++) av[k++] = argv[i];
    av[k] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        execv(mpirun, (char *const *)av);
        fprintf(stderr, "ltlc: error: cannot run %s: %s\n", mpirun, strerror(errno));
        _exit(127);
    }
    free(av);
    if (pid < 0) { fprintf(stderr, "ltlc: error: cannot start mpirun: %s\n", strerror(errno)); return 1; }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(st)) { fprintf(stderr, "ltlc: error: mpirun was killed by signal %d\n", WTERMSIG(st)); return 1; }
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    if (rc) fprintf(stderr, "ltlc: error: the %d ranks failed (mpirun exited with status %d)\n", n, rc);
    return rc ? 1 : 0;
}

/* Kernel threads of a rank (threads = 0): a rank the launcher bound to cores uses those; an
 * unbound one shares the machine's cores with the other ranks of its node. */
static int64_t rank_threads(void) {
    int cpus = rt_cpu_count();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    const char *v = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!v) v = getenv("SLURM_NTASKS_PER_NODE");
    int local = v ? atoi(v) : 1;
    if (cpus < online || local <= 1) return cpus;
    return cpus / local > 1 ? cpus / local : 1;
}

DdpMode ddp_setup(RtTrainerConfig *c, int argc, char **argv, int *status) {
    int rank, size, local;
    bool launched = rt_dist_env(&rank, &size, &local);
    int64_t devices = c->devices > 0 ? c->devices : 1, want = devices * (c->num_nodes > 0 ? c->num_nodes : 1);
    bool ddp = !strcmp(c->strategy, "ddp") || want > 1;
    if (!launched) {
        if (want <= 1) return DDP_SINGLE;
        if (c->num_nodes > 1) {
            fprintf(stderr, "ltlc: error: num_nodes = %lld: start the ranks on the nodes yourself, e.g. "
                            "mpirun -np %lld --host A:%lld,B:%lld ltlc run ... or srun -N %lld -n %lld ltlc run ...\n",
                    (long long)c->num_nodes, (long long)want, (long long)devices, (long long)devices,
                    (long long)c->num_nodes, (long long)want);
            *status = 1;
            return DDP_LAUNCHED;
        }
        *status = launch((int)want, argc, argv);
        return DDP_LAUNCHED;
    }
    if (size <= 1 && !ddp) return DDP_SINGLE;
    if (want > 1 && want != size) {
        fprintf(stderr, "ltlc: error: the launcher started %d ranks, but devices x num_nodes = %lld\n", size, (long long)want);
        *status = 1;
        return DDP_LAUNCHED;
    }
    char err[512];
    if (rt_dist_init(RT_DIST_MPI, err, sizeof err) != 0) { /* on GPUs the executor's NCCL reduces the gradients */
        if (rt_dist_backend() != RT_DIST_NONE) rt_dist_abort("%s", err); /* the others must not wait */
        fprintf(stderr, "ltlc: error: rank %d: %s\n", rank, err);
        *status = 1;
        return DDP_LAUNCHED;
    }
    if (rt_dist_size() <= 1) return DDP_SINGLE;
    if (c->threads <= 0) c->threads = rank_threads();
    return DDP_RANK;
}
