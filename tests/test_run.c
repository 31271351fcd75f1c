/* test_run.c — `ltlc run` end to end on small IDX files the test writes: training reaches
 * an accuracy, the run folder holds what Lightning's would, flags change what happens, and
 * bad data ends in one message and exit 1. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <cjson/cJSON.h>
#include "rt.h"
#include "e2e_test.h"

static char dir[64];

static const char *model_src =
    "use nn\n"
    "model Tiny(hidden = 16, lr = 1e-2) {\n"
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
    "    train, val = split(idx(root + \"/x.idx\", root + \"/y.idx\"), [160, 40], seed = 1)\n"
    "    test = idx(root + \"/tx.idx\", root + \"/ty.idx\")\n"
    "    transform(x) = x / 255\n"
    "    loader(batch = batch, shuffle = true)\n"
    "}\n"
    "trainer {\n"
    "    max_epochs = 4\n"
    "    seed = 3\n"
    "    log_every_n_steps = 5\n"
    "    default_root_dir = \"%s/runs\"\n"
    "    logger = [csv, tensorboard]\n"
    "}\n";

static void setup(void) {
    e2e_tmpdir(dir, "/tmp/ltl_run_XXXXXX");
    idx_write(dir, "x.idx", "y.idx", 200, -1, -1);
    idx_write(dir, "tx.idx", "ty.idx", 64, -1, -1);
    e2e_write(dir, "tiny.ltl", model_src, dir, dir);
}

static void teardown(void) { e2e_rmdir(dir); }

TestSuite(run, .init = setup, .fini = teardown, .timeout = 60);

/* Runs ltlc with args; stdout+stderr into out. Returns the exit status. */
static int ltlc(char *out, size_t size, const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", LTLC, args);
    return e2e_sh(dir, out, size, cmd);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

Test(run, fit_then_test_writes_the_run_folder) {
    static char out[1 << 16];
    int st = ltlc(out, sizeof out, "run tiny.ltl fit test");
    cr_assert_eq(st, 0, "%s", out);
    char *acc = strstr(out, "test_acc");
    cr_assert(acc, "%s", out);
    double v = atof(acc + 8);
    cr_assert(v >= 0.95, "test accuracy %g after 4 epochs:\n%s", v, out);
    cr_assert(strstr(out, "| l1   | Linear | 272"), "the model summary:\n%s", out);
    char p[256];
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/metrics.csv", dir);
    char *csv = slurp(p);
    cr_assert(csv, "no %s:\n%s", p, out);
    cr_assert(!strncmp(csv, "epoch,step,test_acc,train_loss_epoch,train_loss_step,val_acc\n", 61), "%s", csv);
    int rows = 0;
    for (char *c = csv; *c; c++) rows += *c == '\n';
    /* 10 batches x 4 epochs: 8 step rows (every 5), 4 epoch rows, 4 validation rows, 1 test row, header */
    cr_assert_eq(rows, 1 + 8 + 4 + 4 + 1, "%s", csv);
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/checkpoints/epoch=3-step=40.ckpt", dir);
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0, "the last epoch's checkpoint");
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/checkpoints/epoch=2-step=30.ckpt", dir);
    cr_assert_neq(stat(p, &sb), 0, "only the last checkpoint is kept");
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/curves.svg", dir);
    cr_assert_eq(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0", dir);
    DIR *d = opendir(p);
    bool events = false;
    for (struct dirent *e; (e = readdir(d));) events |= !strncmp(e->d_name, "events.out.tfevents.", 20);
    closedir(d);
    cr_assert(events, "a TensorBoard event file");

    /* the checkpoint restores the trained weights: testing from it gives the same accuracy */
    static char out2[1 << 16];
    char args[512];
    snprintf(args, sizeof args, "run tiny.ltl test --ckpt_path=runs/lightning_logs/version_0/checkpoints/epoch=3-step=40.ckpt");
    cr_assert_eq(ltlc(out2, sizeof out2, args), 0, "%s", out2);
    char *acc2 = strstr(out2, "test_acc");
    cr_assert(acc2 && atof(acc2 + 8) == v, "%s", out2);
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_1", dir);
    cr_assert_eq(stat(p, &sb), 0, "the next run gets version_1");
}

Test(run, same_seed_same_result_and_flags) {
    static char a[1 << 16], b[1 << 16];
    cr_assert_eq(ltlc(a, sizeof a, "run tiny.ltl fit test --trainer.enable_progress_bar=false --trainer.logger=false"), 0, "%s", a);
    cr_assert_eq(ltlc(b, sizeof b, "run tiny.ltl fit test --trainer.enable_progress_bar=false --trainer.logger=false"), 0, "%s", b);
    cr_assert_str_eq(strstr(a, "test_acc"), strstr(b, "test_acc"), "deterministic: same seed, same result");
    cr_assert_null(strstr(a, "Epoch"), "no progress bar:\n%s", a);
    struct stat sb;
    char p[256];
    snprintf(p, sizeof p, "%s/runs", dir);
    cr_assert_neq(stat(p, &sb), 0, "logger = false writes no run folder");

    /* the reference interpreter trains the same model to the same accuracy */
    cr_assert_eq(ltlc(b, sizeof b, "run tiny.ltl fit test --backend=interp --trainer.enable_progress_bar=false --trainer.logger=false"), 0, "%s", b);
    cr_assert(strstr(b, "test_acc") && atof(strstr(b, "test_acc") + 8) >= 0.95, "%s", b);
    cr_assert_eq(ltlc(a, sizeof a, "run tiny.ltl fit --trainer.fast_dev_run=2"), 0, "%s", a);
    cr_assert_neq(stat(p, &sb), 0, "fast_dev_run writes nothing");
    cr_assert_eq(ltlc(a, sizeof a, "run tiny.ltl fit --model.hidden=3 --trainer.max_epochs=1 --trainer.enable_progress_bar=false"), 0, "%s", a);
    cr_assert(strstr(a, "| l1   | Linear | 51"), "--model.hidden=3 gives l1 16*3+3 parameters:\n%s", a);
}

Test(run, bad_data_and_usage_errors) {
    static char out[1 << 16];
    idx_write(dir, "x.idx", "y.idx", 150, -1, -1); /* the split asks for 160 + 40 samples */
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit"), 1, "%s", out);
    cr_assert(strstr(out, "split sizes sum to 200 but the data set has 150 samples"), "%s", out);
    idx_write(dir, "x.idx", "y.idx", 200, 17, -1); /* label 7 at index 17: the model has 2 classes */
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit"), 1, "%s", out);
    cr_assert(strstr(out, "y.idx") && strstr(out, "label"), "names the file and the problem:\n%s", out);
    char p[256];
    snprintf(p, sizeof p, "%s/x.idx", dir);
    truncate(p, 100);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit"), 1, "%s", out);
    cr_assert(strstr(out, "x.idx"), "%s", out);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.max_epoch=3"), 1, "%s", out);
    cr_assert(strstr(out, "unknown trainer flag 'max_epoch'"), "%s", out);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl frobnicate"), 2, "%s", out);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl test --ckpt_path=nonexistent.ckpt"), 1, "%s", out);
    cr_assert(strstr(out, "nonexistent.ckpt"), "%s", out);
}

/* A run stopped in the middle of an epoch and resumed from its checkpoint ends with exactly
 * the weights and optimizer state of the run that never stopped. */
Test(run, resume_mid_epoch_is_bit_identical) {
    static char out[1 << 16];
    const char *q = "--trainer.enable_progress_bar=false --trainer.enable_model_summary=false";
    char args[512];
    snprintf(args, sizeof args, "run tiny.ltl fit %s", q);
    cr_assert_eq(ltlc(out, sizeof out, args), 0, "%s", out);
    snprintf(args, sizeof args, "run tiny.ltl fit --trainer.max_steps=17 %s", q);
    cr_assert_eq(ltlc(out, sizeof out, args), 0, "%s", out);
    char ck[256];
    snprintf(ck, sizeof ck, "%s/runs/lightning_logs/version_1/checkpoints/epoch=1-step=17.ckpt", dir);
    struct stat sb;
    cr_assert_eq(stat(ck, &sb), 0, "stopping at max_steps saves where it stopped");
    snprintf(args, sizeof args, "run tiny.ltl fit --ckpt_path=%s %s", ck, q);
    cr_assert_eq(ltlc(out, sizeof out, args), 0, "%s", out);
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/runs/lightning_logs/version_0/checkpoints/epoch=3-step=40.ckpt", dir);
    snprintf(b, sizeof b, "%s/runs/lightning_logs/version_2/checkpoints/epoch=3-step=40.ckpt", dir);
    e2e_same_tensors(a, b, "after the resume");
}

/* checkpoint(monitor =, mode =, save_top_k =, filename =, save_last =) and early_stopping */
Test(run, checkpoint_top_k_and_early_stopping) {
    static char out[1 << 16];
    char p[256];
    snprintf(p, sizeof p, "%s/tiny.ltl", dir);
    char src[8192];
    snprintf(src, sizeof src, model_src, dir, dir);
    char *t = strstr(src, "    logger = [csv, tensorboard]\n");
    cr_assert(t);
    strcpy(t, "    callbacks = [checkpoint(monitor = \"train_loss_epoch\", mode = \"min\", save_top_k = 2,\n"
              "                            filename = \"{epoch}-{train_loss_epoch:.3f}\", save_last = true),\n"
              "                 early_stopping(monitor = \"val_acc\", mode = \"max\", patience = 2)]\n}\n");
    FILE *f = fopen(p, "w");
    fputs(src, f);
    fclose(f);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.max_epochs=10 --trainer.enable_progress_bar=false"), 0, "%s", out);
    /* val_acc reaches 1.0 in the first epoch and cannot improve: 1 + patience epochs */
    cr_assert(strstr(out, "Monitored metric val_acc did not improve in the last 2 records"), "%s", out);
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/checkpoints", dir);
    DIR *d = opendir(p);
    cr_assert(d);
    int n = 0;
    bool last = false, e0 = false, e2 = false;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        n++;
        last |= !strcmp(e->d_name, "last.ckpt");
        e0 |= !strncmp(e->d_name, "epoch=0-train_loss_epoch=", 25);
        e2 |= !strncmp(e->d_name, "epoch=2-train_loss_epoch=", 25);
    }
    closedir(d);
    cr_assert_eq(n, 3, "the two best (lowest train loss: epochs 1 and 2) and last.ckpt");
    cr_assert(last && e2 && !e0);
    /* --ckpt_path=best: the lowest train_loss_epoch of the top-k (epoch 2); last: last.ckpt */
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl test --ckpt_path=best"), 0, "%s", out);
    cr_assert(strstr(out, "checkpoints/epoch=2-train_loss_epoch="), "%s", out);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl test --ckpt_path=last"), 0, "%s", out);
    cr_assert(strstr(out, "version_1/checkpoints/last.ckpt") == NULL && strstr(out, "version_0/checkpoints/last.ckpt"),
              "the latest run with checkpoints is version_0 (the test run above writes none): %s", out);
}

/* A hook runs on the host after each epoch with the current weights: save_image_grid
 * writes a PNG grid under the run folder. */
Test(run, hook_writes_image_grid) {
    static char out[1 << 16];
    char p[256], src[8192];
    snprintf(src, sizeof src, model_src, dir, dir);
    char *opt = strstr(src, "    optimizer = adam(lr = lr)\n");
    cr_assert(opt);
    const char *hook = "    on_train_epoch_end() { save_image_grid(reshape(l1.weight, (16, 1, 4, 4)), \"w/{epoch}.png\", nrow = 4) }\n";
    memmove(opt + strlen(hook), opt, strlen(opt) + 1);
    memcpy(opt, hook, strlen(hook));
    snprintf(p, sizeof p, "%s/tiny.ltl", dir);
    FILE *f = fopen(p, "w");
    fputs(src, f);
    fclose(f);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.max_epochs=2 --trainer.enable_progress_bar=false"), 0, "%s", out);
    for (int e = 0; e < 2; e++) {
        snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/w/%d.png", dir, e);
        FILE *png = fopen(p, "rb");
        cr_assert(png, "no %s", p);
        unsigned char h[24];
        cr_assert_eq(fread(h, 1, 24, png), 24);
        fclose(png);
        cr_assert(!memcmp(h, "\x89PNG\r\n\x1a\n", 8), "a PNG signature");
        unsigned w = (unsigned)h[16] << 24 | h[17] << 16 | h[18] << 8 | h[19];
        unsigned ht = (unsigned)h[20] << 24 | h[21] << 16 | h[22] << 8 | h[23];
        cr_assert_eq(w, 4 * (4 + 2) + 2, "4 columns of 4 pixels, 2-pixel padding");
        cr_assert_eq(ht, 4 * (4 + 2) + 2);
    }
}

/* Reads every float tensor of a checkpoint whose name does not end in suffix-excluded state,
 * concatenated (the parameters: names without ".exp_avg", ".grad_acc", "opt."). */
static float *params_of(const char *path, size_t *n) {
    char err[RT_CKPT_ERR_LEN];
    RtCkpt *ck = rt_ckpt_open(path, err);
    cr_assert(ck, "%s", err);
    float *all = NULL;
    *n = 0;
    for (size_t i = 0; i < rt_ckpt_count(ck); i++) {
        const RtCkptInfo *t = rt_ckpt_tensor(ck, i);
        if (t->dtype != RT_CKPT_F32 || strchr(strchr(t->name, '.') ? strchr(t->name, '.') + 1 : t->name, '.') ||
            !strncmp(t->name, "opt", 3))
            continue; /* l1.weight, l2.bias: one dot */
        all = realloc(all, sizeof *all * (*n + t->numel));
        cr_assert(rt_ckpt_read(ck, t, all + *n, err), "%s", err);
        *n += t->numel;
    }
    rt_ckpt_close(ck);
    return all;
}

static char *ckpt_of(int version, const char *name) {
    static char p[2][512];
    static int k;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/runs/lightning_logs/version_%d/checkpoints/%s", dir, version, name);
    return p[k];
}

/* accumulate_grad_batches = 2 at batch 8 takes the steps that batch 16 takes (with `extra` flags
 * on both runs); returns the largest weight difference. */
static double accumulated_vs_bigger_batch(const char *extra) {
    static char out[1 << 16];
    char args[512];
    snprintf(args, sizeof args, "run tiny.ltl fit --data.batch=16 --trainer.enable_progress_bar=false "
             "--trainer.enable_model_summary=false --trainer.max_epochs=2 %s", extra);
    cr_assert_eq(ltlc(out, sizeof out, args), 0, "%s", out);
    snprintf(args, sizeof args, "run tiny.ltl fit --data.batch=8 --trainer.accumulate_grad_batches=2 "
             "--trainer.enable_progress_bar=false --trainer.enable_model_summary=false --trainer.max_epochs=2 %s", extra);
    cr_assert_eq(ltlc(out, sizeof out, args), 0, "%s", out);
    size_t na, nb;
    float *a = params_of(ckpt_of(0, "epoch=1-step=20.ckpt"), &na);
    float *b = params_of(ckpt_of(1, "epoch=1-step=20.ckpt"), &nb); /* global_step counts optimizer steps */
    cr_assert_eq(na, nb);
    cr_assert_gt(na, 0);
    double worst = 0;
    for (size_t i = 0; i < na; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    free(a);
    free(b);
    return worst;
}

Test(run, accumulating_gradients_matches_a_bigger_batch) {
    double worst = accumulated_vs_bigger_batch("");
    cr_assert_lt(worst, 1e-4, "largest difference %g", worst);
}

/* Clipping acts on the accumulated sum when the optimizer steps, not on each partial sum (a
 * clipped partial sum carried to the next batch gives other weights). */
Test(run, clipping_with_accumulation_clips_the_whole_sum) {
    double worst = accumulated_vs_bigger_batch("--trainer.gradient_clip_val=0.05");
    cr_assert_lt(worst, 1e-4, "largest difference %g", worst);
}

/* gradient_clip_val bounds the norm of each SGD step's gradient. */
Test(run, gradient_clipping_bounds_the_step) {
    static char out[1 << 16];
    char p[256], src[8192];
    snprintf(src, sizeof src, model_src, dir, dir);
    char *opt = strstr(src, "adam(lr = lr)");
    cr_assert(opt);
    memcpy(opt, "sgd(lr = 1.0)", 13);
    snprintf(p, sizeof p, "%s/tiny.ltl", dir);
    FILE *f = fopen(p, "w");
    fputs(src, f);
    fclose(f);
    const char *q = "--trainer.enable_progress_bar=false --trainer.enable_model_summary=false";
    double dist[2];
    for (int clip = 0; clip < 2; clip++) {
        char args[512];
        for (int steps = 1; steps <= 2; steps++) {
            snprintf(args, sizeof args, "run tiny.ltl fit --trainer.max_steps=%d %s %s", steps, q,
                     clip ? "--trainer.gradient_clip_val=0.001" : "");
            cr_assert_eq(ltlc(out, sizeof out, args), 0, "%s", out);
        }
        char name[2][64];
        snprintf(name[0], 64, "epoch=0-step=1.ckpt");
        snprintf(name[1], 64, "epoch=0-step=2.ckpt");
        size_t na, nb;
        float *a = params_of(ckpt_of(2 * clip, name[0]), &na), *b = params_of(ckpt_of(2 * clip + 1, name[1]), &nb);
        double d = 0;
        for (size_t i = 0; i < na; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        dist[clip] = sqrt(d);
        free(a);
        free(b);
    }
    cr_assert_gt(dist[0], 0.01, "unclipped steps are large (%g)", dist[0]);
    cr_assert_leq(dist[1], 0.001 * (1 + 1e-4), "the clipped step is at most lr * clip (%g)", dist[1]);
    cr_assert_gt(dist[1], 0.0009, "and the clip is reached (%g)", dist[1]);
}

/* profiler = "simple" prints Lightning's report; "advanced" also writes a Chrome trace. */
Test(run, profiler_report_and_trace) {
    static char out[1 << 16];
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.profiler=advanced --trainer.enable_progress_bar=false"), 0, "%s", out);
    char *row = strstr(out, "[Strategy]SingleDeviceStrategy.training_step");
    cr_assert(strstr(out, "FIT Profiler Report") && row, "%s", out);
    char *bar = strchr(strchr(row, '|') + 1, '|'); /* Action | Mean | Num calls */
    cr_assert_eq(atoi(bar + 1), 40, "4 epochs of 10 batches:\n%s", row);
    cr_assert(strstr(out, "kernels of training_step"), "%s", out);
    char p[256];
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/trace.json", dir);
    char *text = slurp(p);
    cr_assert(text, "no trace.json");
    cJSON *j = cJSON_Parse(text);
    cr_assert(j, "trace.json is JSON");
    cJSON *ev = cJSON_GetObjectItem(j, "traceEvents");
    cr_assert(cJSON_IsArray(ev) && cJSON_GetArraySize(ev) > 80, "one event per action");
    cJSON *first = cJSON_GetArrayItem(ev, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(first, "ph")->valuestring, "X");
    cJSON_Delete(j);
}

/* Killed (SIGKILL) at random moments and resumed from its last checkpoint each time, a run
 * ends with exactly the weights of one that was never interrupted. */
Test(run, sigkill_and_resume_is_bit_identical, .timeout = 120) {
    static char out[1 << 16];
    char p[256], src[8192];
    snprintf(src, sizeof src, model_src, dir, dir);
    char *t = strstr(src, "    logger = [csv, tensorboard]\n");
    cr_assert(t);
    strcpy(t, "    logger = [csv]\n    enable_progress_bar = false\n    enable_model_summary = false\n"
              "    callbacks = [checkpoint(dirpath = \"ck\", save_last = true, every_n_train_steps = 1)]\n}\n");
    snprintf(p, sizeof p, "%s/tiny.ltl", dir);
    FILE *f = fopen(p, "w");
    fputs(src, f);
    fclose(f);
    /* the uninterrupted run */
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit --trainer.max_epochs=6"), 0, "%s", out);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mv %s/ck %s/ck_whole", dir, dir);
    cr_assert_eq(system(cmd), 0);
    /* the interrupted ones: kill after a random delay, resume from ck/last.ckpt */
    unsigned seed = 7;
    int kills = 0, done = 0;
    for (int attempt = 0; attempt < 60 && !done; attempt++) {
        snprintf(p, sizeof p, "%s/ck/last.ckpt", dir);
        struct stat sb;
        bool resume = stat(p, &sb) == 0;
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            if (chdir(dir) != 0) _exit(3);
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            if (resume) execl(LTLC, LTLC, "run", "tiny.ltl", "fit", "--trainer.max_epochs=6", "--ckpt_path=ck/last.ckpt", (char *)NULL);
            else execl(LTLC, LTLC, "run", "tiny.ltl", "fit", "--trainer.max_epochs=6", (char *)NULL);
            _exit(4);
        }
        seed = seed * 1103515245u + 12345u;
        int target = 1 + (int)((seed >> 8) % 6); /* kill after this many new checkpoints */
        int st;
        if (attempt >= 8) { /* enough: let it finish */
            waitpid(pid, &st, 0);
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the last run failed (status %d)", st);
            done = 1;
            break;
        }
        /* watch last.ckpt being replaced (every step), whatever the machine's speed */
        struct timespec seen = {0};
        int changes = 0;
        bool exited = false;
        for (int polls = 0; polls < 200000 && changes < target; polls++) {
            if (waitpid(pid, &st, WNOHANG) == pid) { exited = true; break; }
            if (stat(p, &sb) == 0 && (sb.st_mtim.tv_sec != seen.tv_sec || sb.st_mtim.tv_nsec != seen.tv_nsec)) {
                seen = sb.st_mtim;
                changes++;
            }
            usleep(100);
        }
        if (exited) {
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a run failed (status %d)", st);
            done = 1;
            break;
        }
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) done = 1; /* it finished just before the kill */
        else kills++;
    }
    cr_assert(done, "the interrupted run never finished");
    cr_assert_gt(kills, 0, "the test killed nothing");
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/ck_whole/last.ckpt", dir);
    snprintf(b, sizeof b, "%s/ck/last.ckpt", dir);
    e2e_same_tensors(a, b, "after the resume");
    cr_log_info("killed %d times", kills);
}

/* predict writes what predict_step returns, one line per sample. */
Test(run, predict_writes_predictions) {
    static char out[1 << 16];
    char p[256], src[8192];
    snprintf(src, sizeof src, model_src, dir, dir);
    char *opt = strstr(src, "    optimizer = adam(lr = lr)\n");
    const char *step = "    predict_step(x: f32[B, 1, 4, 4]) -> i64[B] = argmax(forward(x), dim = 1)\n";
    memmove(opt + strlen(step), opt, strlen(opt) + 1);
    memcpy(opt, step, strlen(step));
    char *ld = strstr(src, "    loader(");
    const char *pred = "    predict = test\n";
    memmove(ld + strlen(pred), ld, strlen(ld) + 1);
    memcpy(ld, pred, strlen(pred));
    snprintf(p, sizeof p, "%s/tiny.ltl", dir);
    FILE *f = fopen(p, "w");
    fputs(src, f);
    fclose(f);
    cr_assert_eq(ltlc(out, sizeof out, "run tiny.ltl fit predict --trainer.enable_progress_bar=false"), 0, "%s", out);
    snprintf(p, sizeof p, "%s/runs/lightning_logs/version_0/predictions.csv", dir);
    char *csv = slurp(p);
    cr_assert(csv, "no predictions.csv:\n%s", out);
    int lines = 0, right = 0;
    for (char *c = csv; *c; lines++) { /* the test images alternate classes 0, 1, 0, 1, ... */
        right += atoi(c) == lines % 2;
        c = strchr(c, '\n') + 1;
    }
    cr_assert_eq(lines, 64, "one line per test sample");
    cr_assert_geq(right, 60, "a trained model predicts the classes (%d of 64)", right);
}
