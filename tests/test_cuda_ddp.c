/* test_cuda_ddp.c — data-parallel training on GPUs without a GPU (docs/distributed.md, "On
 * GPUs"): the ranks run their steps on tests/fake_libcuda.c with the kernels from
 * tests/fake_libnvrtc.c, and the gradient buckets go through tests/fake_libnccl.c, which
 * really reduces across the rank processes (shared memory). 2 ranks x batch 32 on the fake
 * GPU take the steps of 1 x 64 on the fake GPU and of the CPU's 2 x 32, also when the fake
 * driver runs the collective stream as late, or the compute stream as early, as the events
 * allow (a missing event then reads unreduced or stale gradients); no NCCL, a failing rank
 * and a hung rank end the run with one message. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "e2e_test.h"
#include "cuda_test.h"

static char dir[64];
#define MPIRUN "mpirun --allow-run-as-root --oversubscribe -np 2 "

static void setup(void) {
  e2e_ddp_files(dir, "/tmp/ltl_cudaddp_XXXXXX");
  cuda_test_build_fakes(dir, true);
}

static void teardown(void) { e2e_rmdir(dir); }

TestSuite(cuda_ddp, .init = setup, .fini = teardown, .timeout = 120);

/* Runs `ENV ltlc ARGS` in dir with the fake driver, NVRTC and (unless nccl is NULL: the fake)
 * NCCL library; prefix goes before ltlc (mpirun). stdout+stderr into out; the exit status. */
static int ltlc(char *out, size_t size, const char *env, const char *nccl, const char *prefix, const char *args) {
  char cmd[2048], lib[128];
  snprintf(lib, sizeof lib, "%s/libnccl-fake.so", dir);
  snprintf(cmd, sizeof cmd,
           E2E_RANK_ENV "LTL_CACHE=0 LTL_CUDA_LIB=%s/libcuda-fake.so LTL_NVRTC_LIB=%s/libnvrtc-fake.so "
                    "LTL_CUBLASLT_LIB=/nonexistent LTL_NCCL_LIB=%s %s %s%s %s",
           dir, dir, nccl ? nccl : lib, env, prefix, LTLC, args);
  return e2e_sh(dir, out, size, cmd);
}

static RtCkpt *ckpt(const char *root, const char *name) {
  char p[256], err[RT_CKPT_ERR_LEN];
  snprintf(p, sizeof p, "%s/%s/lightning_logs/version_0/checkpoints/%s", dir, root, name);
  RtCkpt *c = rt_ckpt_open(p, err);
  cr_assert(c, "%s", err);
  return c;
}

static char out[1 << 16];

Test(cuda_ddp, two_gpus_of_32_take_the_steps_of_one_gpu_of_64) {
  static const struct { const char *root, *env, *prefix, *args; } runs[] = {
      {"one", "", "", "--data.batch=64"},
      {"cpu", "", MPIRUN, "--trainer.accelerator=cpu"},
      {"two", "", "", "--trainer.devices=2"},                              /* ltlc starts the ranks */
      {"late", "LTL_FAKE_CUDA_ORDER=collectives-late LTL_FAKE_CUDA_DEVICES=2", MPIRUN, ""},
      {"early", "LTL_FAKE_CUDA_ORDER=collectives-early", MPIRUN, ""},
  };
  for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
    char args[512];
    snprintf(args, sizeof args, "run tiny.ltl fit --trainer.accelerator=cuda --trainer.default_root_dir=%s %s", runs[i].root,
             runs[i].args);
    cr_assert_eq(ltlc(out, sizeof out, runs[i].env, NULL, runs[i].prefix, args), 0, "%s: %s", runs[i].root, out);
    const char *gpu = strstr(out, "GPU available: True (cuda), used: True");
    cr_assert(i == 1 ? !gpu : gpu && !strstr(gpu + 1, "GPU available"), "%s: said once, by rank 0:\n%s", runs[i].root, out);
  }
  RtCkpt *one = ckpt("one", "epoch=1-step=8.ckpt"), *cpu = ckpt("cpu", "epoch=1-step=8.ckpt");
  for (size_t i = 2; i < sizeof runs / sizeof *runs; i++) {
    RtCkpt *two = ckpt(runs[i].root, "epoch=1-step=8.ckpt");
    double scale, d = e2e_max_diff(two, one, &scale), scale2, dc = e2e_max_diff(two, cpu, &scale2);
    cr_assert(scale > 0.1, "weights of size %g", scale);
    cr_assert(d <= 1e-5 * scale, "%s: 2 x 32 vs 1 x 64 on the GPU: weights differ by %g (largest %g)", runs[i].root, d, scale);
    cr_assert(dc <= 1e-5 * scale, "%s: GPU vs CPU over 2 ranks: weights differ by %g (largest %g)", runs[i].root, dc, scale);
    rt_ckpt_close(two);
  }
  rt_ckpt_close(one);
  rt_ckpt_close(cpu);
}

/* The two GPU features together: bf16-mixed (the rounded GEMM operands, on the fake driver
 * without cuBLASLt) over 2 ranks on the fake GPU ends where the same run over 2 CPU ranks does. */
Test(cuda_ddp, bf16_mixed_over_two_gpus_matches_the_cpu) {
  static const char *const accel[2] = {"cuda", "cpu"};
  for (int i = 0; i < 2; i++) {
    char args[512];
    snprintf(args, sizeof args, "run tiny.ltl fit --trainer.precision=bf16-mixed --trainer.accelerator=%s "
             "--trainer.default_root_dir=bf16%s", accel[i], accel[i]);
    cr_assert_eq(ltlc(out, sizeof out, "", NULL, MPIRUN, args), 0, "%s: %s", accel[i], out);
    cr_assert((strstr(out, "GPU available: True") != NULL) == (i == 0), "%s", out);
  }
  RtCkpt *gpu = ckpt("bf16cuda", "epoch=1-step=8.ckpt"), *cpu = ckpt("bf16cpu", "epoch=1-step=8.ckpt");
  double scale, d = e2e_max_diff(gpu, cpu, &scale);
  cr_assert(scale > 0.1 && d <= 1e-4 * scale, "bf16-mixed, 2 ranks, GPU vs CPU: weights differ by %g (largest %g)", d, scale);
  rt_ckpt_close(gpu);
  rt_ckpt_close(cpu);
}

/* Without NCCL: "cuda" stops before starting any rank, with one message (and every rank under
 * a launcher); "auto" trains on the CPU. */
Test(cuda_ddp, without_nccl_cuda_exits_1_and_auto_takes_the_cpu) {
  const char *none = "/nonexistent/libnccl.so.2", *msg =
      "accelerator = \"cuda\": NCCL is not installed: /nonexistent/libnccl.so.2 could not be loaded";
  cr_assert_eq(ltlc(out, sizeof out, "", none, "", "run tiny.ltl fit --trainer.accelerator=cuda --trainer.devices=2"), 1, "%s", out);
  cr_assert(strstr(out, msg) && !strstr(out, "GPU available") && !strstr(out, "ranks failed"), "%s", out);
  cr_assert_neq(ltlc(out, sizeof out, "", none, MPIRUN, "run tiny.ltl fit --trainer.accelerator=cuda"), 0, "%s", out);
  cr_assert(strstr(out, msg), "%s", out);
  cr_assert_eq(ltlc(out, sizeof out, "", none, "", "run tiny.ltl fit --trainer.devices=2 --trainer.max_epochs=1"), 0, "%s", out);
  cr_assert(!strstr(out, "GPU available") && strstr(out, "run folder:"), "%s", out);
}

/* Rank 1's first batch holds a black image: loss log(0) * 0 is NaN; detect_anomaly stops rank 1,
 * whose failure stops rank 0 (waiting in the next all-reduce). */
Test(cuda_ddp, a_failing_rank_ends_the_job_with_its_rank_named) {
  e2e_write(dir, "bad.ltl", E2E_DDP_BAD_MODEL, dir);
  time_t t0 = time(NULL);
  cr_assert_neq(ltlc(out, sizeof out, "", NULL, MPIRUN, "run bad.ltl fit --trainer.accelerator=cuda"), 0, "%s", out);
  cr_assert(time(NULL) - t0 < 60);
  cr_assert(strstr(out, "nan at step 0 (detect_anomaly)"), "%s", out);
  cr_assert(strstr(out, "ltlc: rank 1 of 2: failed (the message above); stopping all ranks"), "%s", out);
}

/* A rank that hangs inside the NCCL all-reduce of a GPU step (the fake NCCL never answers on
 * rank 1): the watchdog ends the job after LTL_DDP_TIMEOUT seconds, naming what waited. */
Test(cuda_ddp, a_hung_rank_ends_the_job_after_the_timeout) {
  time_t t0 = time(NULL);
  cr_assert_neq(ltlc(out, sizeof out, "LTL_FAKE_NCCL_HANG=1 LTL_DDP_TIMEOUT=2", NULL, MPIRUN " --timeout 60 ",
                     "run tiny.ltl fit --trainer.accelerator=cuda"), 0, "%s", out);
  cr_assert(time(NULL) - t0 < 30, "%lld s", (long long)(time(NULL) - t0));
  cr_assert(strstr(out, "no answer from the other ranks for 2 s in a GPU step's NCCL all-reduce"), "%s", out);
}

/* The real libnccl.so.2 (when installed) on a machine without a real GPU: loaded, version
 * checked, the unique id made and broadcast, then ncclCommInitRank fails on every rank with
 * NCCL's message (NCCL uses the real driver, not the fake one) and the job ends. */
Test(cuda_ddp, real_nccl_without_a_gpu_fails_cleanly) {
  void *nccl = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL), *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (nccl)
    dlclose(nccl);
  if (driver)
    dlclose(driver);
  if (!nccl || driver)
    cr_skip_test("needs libnccl.so.2 and no NVIDIA driver");
  cr_assert_eq(ltlc(out, sizeof out, "", "libnccl.so.2", "", "run tiny.ltl fit --trainer.accelerator=cuda --trainer.devices=2"), 1,
               "%s", out);
  cr_assert(strstr(out, "NCCL: ncclCommInitRank (rank 1 of 2) failed: ") && strstr(out, "stopping all ranks"), "%s", out);
  cr_assert(!strstr(out, "Segmentation") && !strstr(out, "core dumped"), "%s", out);
}
