/* test_cuda_run.c — `ltlc run --trainer.accelerator=cuda` end to end without a GPU: the
 * driver is tests/fake_libcuda.c and NVRTC tests/fake_libnvrtc.c (which compiles each step's
 * generated CUDA C with the host compiler and tests/cuda_shim.h), so every step of the run
 * goes through the CUDA executor (cuda_rt.c: device memory, uploads, graph capture and
 * replay, downloads) and its generated kernels. The runs must match the CPU's. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "rt.h"
#include "e2e_test.h"
#include "cuda_test.h"

static char dir[64];

static const char *model_src =
    "use nn\n"
    "model Tiny(hidden = 16, lr = 1e-2) {\n"
    "    l1 = nn.Linear(16, hidden)\n"
    "    l2 = nn.Linear(hidden, 2)\n"
    "    forward(x: f32[B, 1, 4, 4]) -> f32[B, 2] = l2(relu(l1(flatten(x, 1))))\n"
    "    training_step(x: f32[B, 1, 4, 4], y: i64[B]) {\n"
    "        loss = cross_entropy(forward(x), y)\n"
    "        log(\"train_loss\", loss, on_epoch = true)\n"
    "        return loss\n"
    "    }\n"
    "    validation_step(x, y) { log(\"val_loss\", cross_entropy(forward(x), y)) }\n"
    "    test_step(x, y) { log(\"test_acc\", accuracy(forward(x), y)) }\n"
    "    predict_step(x: f32[B, 1, 4, 4]) -> i64[B] = argmax(forward(x), dim = 1)\n"
    "    on_train_epoch_end() { save_image_grid(reshape(l1.weight, (16, 1, 4, 4)), \"w{epoch}.png\", nrow = 4) }\n"
    "    optimizer = adam(lr = lr)\n"
    "}\n"
    "data Toy(root = \"%s\", batch = 16) {\n"
    "    train, val = split(idx(root + \"/x.idx\", root + \"/y.idx\"), [96, 32], seed = 1)\n"
    "    test = idx(root + \"/tx.idx\", root + \"/ty.idx\")\n"
    "    predict = test\n"
    "    transform(x) = x / 255\n"
    "    loader(batch = batch, shuffle = true)\n"
    "}\n"
    "trainer {\n"
    "    max_epochs = 2\n"
    "    seed = 3\n"
    "    log_every_n_steps = 1\n"
    "    enable_progress_bar = false\n"
    "    enable_model_summary = false\n"
    "    default_root_dir = \"%s/runs\"\n"
    "    logger = [csv]\n"
    "}\n";

static void setup(void) {
  e2e_tmpdir(dir, "/tmp/ltl_cudarun_XXXXXX");
  idx_write(dir, "x.idx", "y.idx", 128, -1, -1);
  idx_write(dir, "tx.idx", "ty.idx", 32, -1, -1);
  e2e_write(dir, "tiny.ltl", model_src, dir, dir);
  cuda_test_build_fakes(dir, false);
}

static void teardown(void) { e2e_rmdir(dir); }

TestSuite(cuda_run, .init = setup, .fini = teardown, .timeout = 120);

/* Runs ltlc with args in dir; with fake = true the fake driver and NVRTC are the CUDA
 * libraries, else the driver is missing. stdout+stderr into out; the exit status. */
static int ltlc(char *out, size_t size, bool fake, const char *args) {
  char cmd[2048];
  if (fake)
    snprintf(cmd, sizeof cmd,
             "LTL_CACHE=0 LTL_CUDA_LIB=%s/libcuda-fake.so LTL_NVRTC_LIB=%s/libnvrtc-fake.so "
             "LTL_CUBLASLT_LIB=/nonexistent %s %s",
             dir, dir, LTLC, args);
  else
    snprintf(cmd, sizeof cmd, "LTL_CUDA_LIB=/nonexistent/libcuda.so.1 %s %s", LTLC, args);
  return e2e_sh(dir, out, size, cmd);
}

/* The values of one column of a run's metrics.csv, in order (empty cells skipped). */
static int column(int version, const char *name, double *v, int max) {
  char p[256], line[512];
  snprintf(p, sizeof p, "%s/runs/lightning_logs/version_%d/metrics.csv", dir, version);
  FILE *f = fopen(p, "r");
  cr_assert(f, "no %s", p);
  int col = -1, n = 0;
  if (fgets(line, sizeof line, f)) {
    int c = 0;
    for (char *t = line; t; t = strchr(t, ','), c++) {
      t += *t == ',';
      if (!strncmp(t, name, strlen(name)) && strchr(",\n", t[strlen(name)])) col = c;
    }
  }
  cr_assert(col >= 0, "no column %s in %s", name, p);
  while (fgets(line, sizeof line, f) && n < max) {
    char *t = line;
    for (int c = 0; c < col && t; c++)
      if ((t = strchr(t, ',')))
        t++;
    if (t && *t != ',' && *t != '\n')
      v[n++] = strtod(t, NULL);
  }
  fclose(f);
  return n;
}

/* Every tensor of two checkpoints agrees within tol (relative to 1 + |a|). */
static void close_ckpts(const char *a, const char *b, double tol) {
  char err[RT_CKPT_ERR_LEN];
  RtCkpt *x = rt_ckpt_open(a, err), *y = x ? rt_ckpt_open(b, err) : NULL;
  cr_assert(x && y, "%s", err);
  cr_assert_eq(rt_ckpt_count(x), rt_ckpt_count(y));
  cr_assert_gt(rt_ckpt_count(x), 4, "the weights and Adam's moments");
  for (size_t i = 0; i < rt_ckpt_count(x); i++) {
    const RtCkptInfo *t = rt_ckpt_tensor(x, i), *u = rt_ckpt_find(y, t->name);
    cr_assert(u && u->nbytes == t->nbytes && u->dtype == t->dtype, "%s", t->name);
    float *p = malloc(t->nbytes), *q = malloc(u->nbytes);
    cr_assert(rt_ckpt_read(x, t, p, err) && rt_ckpt_read(y, u, q, err), "%s", err);
    if (t->dtype != RT_CKPT_F32) /* the optimizer's step count */
      cr_assert(!memcmp(p, q, t->nbytes), "%s", t->name);
    for (uint64_t k = 0; t->dtype == RT_CKPT_F32 && k < t->numel; k++)
      cr_assert(fabs(p[k] - q[k]) <= tol * (1 + fabs(p[k])), "%s[%llu]: %g vs %g", t->name, (unsigned long long)k, p[k], q[k]);
    free(p);
    free(q);
  }
  rt_ckpt_close(x);
  rt_ckpt_close(y);
}

static char out[1 << 16];

/* fit + test on the (fake) GPU against the CPU: the same losses step by step, validation
 * and test metrics, and final weights and optimizer state (the state crosses between the
 * training and validation steps' device memory every epoch). */
Test(cuda_run, fit_matches_the_cpu) {
  cr_assert_eq(ltlc(out, sizeof out, false, "run tiny.ltl fit test --trainer.accelerator=cpu"), 0, "%s", out);
  cr_assert_eq(ltlc(out, sizeof out, true, "run tiny.ltl fit test --trainer.accelerator=cuda"), 0, "%s", out);
  cr_assert(strstr(out, "GPU available: True (cuda), used: True"), "%s", out);
  const char *cols[] = {"train_loss_step", "val_loss", "test_acc"};
  for (int c = 0; c < 3; c++) {
    double a[64], b[64];
    int na = column(0, cols[c], a, 64), nb = column(1, cols[c], b, 64);
    cr_assert_eq(na, nb, "%s", cols[c]);
    cr_assert_gt(na, 0, "%s", cols[c]);
    for (int i = 0; i < na; i++)
      cr_assert(fabs(a[i] - b[i]) <= 1e-4 * (1 + fabs(a[i])), "%s row %d: cpu %g, cuda %g", cols[c], i, a[i], b[i]);
  }
  char a[256], b[256];
  snprintf(a, sizeof a, "%s/runs/lightning_logs/version_0/checkpoints/epoch=1-step=12.ckpt", dir);
  snprintf(b, sizeof b, "%s/runs/lightning_logs/version_1/checkpoints/epoch=1-step=12.ckpt", dir);
  close_ckpts(a, b, 1e-4);
  /* predict from that checkpoint on the GPU: the same classes as on the CPU */
  char cmd[512], pa[8192], pb[8192];
  snprintf(cmd, sizeof cmd, "run tiny.ltl predict --ckpt_path=%s --trainer.logger=false", b);
  cr_assert_eq(ltlc(out, sizeof out, false, cmd), 0, "%s", out);
  snprintf(cmd, sizeof cmd, "cp %s/predictions.csv %s/cpu.csv", dir, dir);
  cr_assert_eq(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "run tiny.ltl predict --ckpt_path=%s --trainer.logger=false --trainer.accelerator=gpu", b);
  cr_assert_eq(ltlc(out, sizeof out, true, cmd), 0, "%s", out);
  snprintf(cmd, sizeof cmd, "%s/cpu.csv", dir);
  FILE *f = fopen(cmd, "r");
  size_t n = fread(pa, 1, sizeof pa - 1, f);
  pa[n] = 0;
  fclose(f);
  snprintf(cmd, sizeof cmd, "%s/predictions.csv", dir);
  f = fopen(cmd, "r");
  n = fread(pb, 1, sizeof pb - 1, f);
  pb[n] = 0;
  fclose(f);
  cr_assert(n > 32 && !strcmp(pa, pb), "cpu:\n%s\ncuda:\n%s", pa, pb);
}

/* Without validation the weights stay on the GPU all along: checkpoints and the epoch-end hook
 * must bring them back. The GPU run matches the CPU's; a GPU run stopped at max_steps and
 * resumed from its checkpoint (the state uploaded after the load) ends where the
 * uninterrupted one does. */
Test(cuda_run, checkpoint_hook_and_resume_on_the_gpu) {
  const char *q = "fit --trainer.limit_val_batches=0";
  char args[512], ck[256], v[4][256];
  snprintf(args, sizeof args, "run tiny.ltl %s --trainer.accelerator=cpu", q);
  cr_assert_eq(ltlc(out, sizeof out, false, args), 0, "%s", out);
  snprintf(args, sizeof args, "run tiny.ltl %s --trainer.accelerator=cuda", q);
  cr_assert_eq(ltlc(out, sizeof out, true, args), 0, "%s", out);
  snprintf(args, sizeof args, "run tiny.ltl %s --trainer.accelerator=cuda --trainer.max_steps=9", q);
  cr_assert_eq(ltlc(out, sizeof out, true, args), 0, "%s", out);
  snprintf(ck, sizeof ck, "%s/runs/lightning_logs/version_2/checkpoints/epoch=1-step=9.ckpt", dir);
  snprintf(args, sizeof args, "run tiny.ltl %s --trainer.accelerator=cuda --ckpt_path=%s", q, ck);
  cr_assert_eq(ltlc(out, sizeof out, true, args), 0, "%s", out);
  cr_assert(strstr(out, "Restoring states"), "%s", out);
  for (int i = 0; i < 4; i++)
    snprintf(v[i], sizeof v[i], "%s/runs/lightning_logs/version_%d/checkpoints/epoch=1-step=12.ckpt", dir, i);
  close_ckpts(v[0], v[1], 1e-4);
  close_ckpts(v[1], v[3], 1e-6);
  for (int e = 0; e < 2; e++) { /* the hook saw the epoch's weights */
    snprintf(args, sizeof args, "cmp %s/runs/lightning_logs/version_0/w%d.png %s/runs/lightning_logs/version_1/w%d.png",
             dir, e, dir, e);
    cr_assert_eq(system(args), 0, "%s", args);
  }
}

/* "auto" takes the GPU when one is usable and says so, else the CPU; "cuda" without a
 * driver, and what the GPU path does not do yet, exit 1 with one message. */
Test(cuda_run, auto_and_refusals) {
  cr_assert_eq(ltlc(out, sizeof out, true, "run tiny.ltl test --trainer.accelerator=auto"), 0, "%s", out);
  cr_assert(strstr(out, "GPU available: True (cuda), used: True") && strstr(out, "accelerator = \"auto\""), "%s", out);
  cr_assert(strstr(out, "test_acc"), "%s", out);
  cr_assert_eq(ltlc(out, sizeof out, false, "run tiny.ltl test --trainer.accelerator=auto"), 0, "%s", out);
  cr_assert(!strstr(out, "GPU available") && strstr(out, "test_acc"), "%s", out);
  cr_assert_eq(ltlc(out, sizeof out, false, "run tiny.ltl test --trainer.accelerator=cuda"), 1, "%s", out);
  cr_assert(strstr(out, "accelerator = \"cuda\": no NVIDIA driver: /nonexistent/libcuda.so.1 could not be loaded"), "%s", out);
  static const struct { const char *args, *msg; } bad[] = {
      {"--trainer.precision=64-true", "precision 64-true runs on the reference interpreter"},
      {"--backend=interp", "--backend=interp runs on the CPU"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char args[256];
    snprintf(args, sizeof args, "run tiny.ltl fit --trainer.accelerator=cuda %s", bad[i].args);
    cr_assert_eq(ltlc(out, sizeof out, true, args), 1, "%s: %s", args, out);
    cr_assert(strstr(out, bad[i].msg) && !strstr(out, "GPU available"), "%s: %s", args, out);
  }
}

/* ---- mixed precision on the (fake) GPU: the casts in the generated kernels, 16-mixed's loss
 * scaler in the step, the GEMMs on "tensor cores" (the fake cuBLASLt, which rounds its inputs
 * to the compute type's 16-bit format) ---- */

/* fit + test in precision P on the CPU and on the fake GPU with the fake cuBLASLt: the same
 * losses (loss_scale too), validation and test metrics and final checkpoints (16-mixed's
 * scaler state included), within tol (the casts are bit-exact; GEMM summation orders differ). */
static void mixed_fit(const char *precision, double tol) {
  char args[512], cmd[2048], a[256], b[256];
  snprintf(args, sizeof args, "run tiny.ltl fit test --trainer.precision=%s --trainer.accelerator=cpu", precision);
  cr_assert_eq(ltlc(out, sizeof out, false, args), 0, "%s", out);
  snprintf(cmd, sizeof cmd,
           "LTL_CACHE=0 LTL_CUDA_LIB=%s/libcuda-fake.so LTL_NVRTC_LIB=%s/libnvrtc-fake.so "
           "LTL_CUBLASLT_LIB=%s/libcublaslt-fake.so %s run tiny.ltl fit test --trainer.precision=%s "
           "--trainer.accelerator=cuda",
           dir, dir, dir, LTLC, precision);
  cr_assert_eq(e2e_sh(dir, out, sizeof out, cmd), 0, "%s", out);
  cr_assert(strstr(out, "GPU available: True (cuda), used: True"), "%s", out);
  bool f16 = !strcmp(precision, "16-mixed");
  const char *cols[] = {"train_loss_step", "val_loss", "test_acc", "loss_scale"};
  for (int c = 0; c < (f16 ? 4 : 3); c++) {
    double x[64], y[64];
    int nx = column(0, cols[c], x, 64), ny = column(1, cols[c], y, 64);
    cr_assert(nx == ny && nx > 0, "%s: %d and %d values", cols[c], nx, ny);
    for (int i = 0; i < nx; i++)
      cr_assert(fabs(x[i] - y[i]) <= tol * (1 + fabs(x[i])), "%s %s row %d: cpu %g, cuda %g", precision, cols[c], i,
                x[i], y[i]);
  }
  snprintf(a, sizeof a, "%s/runs/lightning_logs/version_0/checkpoints/epoch=1-step=12.ckpt", dir);
  snprintf(b, sizeof b, "%s/runs/lightning_logs/version_1/checkpoints/epoch=1-step=12.ckpt", dir);
  close_ckpts(a, b, tol);
  char err[RT_CKPT_ERR_LEN];
  RtCkpt *c = rt_ckpt_open(b, err);
  cr_assert(c, "%s", err);
  cr_assert_eq(rt_ckpt_find(c, "opt.scaler.scale") != NULL, f16, "%s: the scaler's state is in the checkpoint", precision);
  rt_ckpt_close(c);
}

Test(cuda_run, fit_bf16_mixed_matches_the_cpu) { mixed_fit("bf16-mixed", 1e-4); }
Test(cuda_run, fit_16_mixed_matches_the_cpu) { mixed_fit("16-mixed", 1e-4); }
Test(cuda_run, fit_bf16_true_matches_the_cpu) { mixed_fit("bf16-true", 1e-4); }
