/* test_sched.c — the LR schedulers against PyTorch's formulas, worked by hand. */
#include <criterion/criterion.h>
#include <math.h>
#include "rt.h"

static RtScheduler sched(const char *kind, int n, const char *const *keys, const double *vals) {
    RtScheduler s = {.kind = kind, .frequency = 1, .n = n};
    for (int i = 0; i < n; i++) {
        s.keys[i] = keys[i];
        s.vals[i] = (RtValue){RT_FLOAT, 0, vals[i], NULL};
    }
    return s;
}

Test(sched, closed_forms) {
    RtScheduler s = sched("step", 2, (const char *[]){"step_size", "gamma"}, (double[]){3, 0.5});
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 2), 0.1, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 3), 0.05, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 7), 0.025, 1e-15);
    s = sched("exponential", 1, (const char *[]){"gamma"}, (double[]){0.9});
    cr_assert_float_eq(rt_sched_lr(&s, 1.0, 3), 0.729, 1e-15);
    s = sched("cosine", 2, (const char *[]){"T_max", "eta_min"}, (double[]){10, 0.01});
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 0), 0.1, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 5), 0.055, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 10), 0.01, 1e-15);
    s = sched("linear_warmup", 2, (const char *[]){"warmup_steps", "start_factor"}, (double[]){4, 0.2});
    cr_assert_float_eq(rt_sched_lr(&s, 1.0, 0), 0.2, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&s, 1.0, 2), 0.6, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&s, 1.0, 9), 1.0, 1e-15);
    /* OneCycleLR(max_lr 1, total_steps 100, pct_start 0.3, div 25, final_div 1e4): starts at
     * 0.04, peaks at step 29, ends at 4e-6 */
    s = sched("one_cycle", 2, (const char *[]){"max_lr", "total_steps"}, (double[]){1.0, 100});
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 0), 0.04, 1e-12);
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 29), 1.0, 1e-12);
    cr_assert_float_eq(rt_sched_lr(&s, 0.1, 99), 4e-6, 1e-12);
    RtScheduler ms = {.kind = "multistep", .frequency = 1, .n = 2, .keys = {"milestones", "gamma"},
                      .vals = {{RT_STR, 0, 0, "2,5"}, {RT_FLOAT, 0, 0.1, NULL}}};
    cr_assert_float_eq(rt_sched_lr(&ms, 1.0, 1), 1.0, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&ms, 1.0, 2), 0.1, 1e-15);
    cr_assert_float_eq(rt_sched_lr(&ms, 1.0, 6), 0.01, 1e-15);
    RtScheduler none = {0};
    cr_assert_float_eq(rt_sched_lr(&none, 0.3, 100), 0.3, 0);
}

Test(sched, reduce_on_plateau) {
    RtScheduler s = sched("reduce_on_plateau", 2, (const char *[]){"patience", "factor"}, (double[]){1, 0.5});
    /* the assertion macros evaluate their arguments more than once: step first */
    double steps[] = {1.0, 0.5, 0.6, 0.6, 0.49999}, want[] = {1.0, 1.0, 1.0, 0.5, 0.5}, lr;
    const char *why[] = {"the first value is the best", "improved", "one bad epoch: patience 1",
                         "two bad epochs: halved", "within the relative threshold: no improvement"};
    for (int i = 0; i < 5; i++) {
        lr = rt_sched_plateau(&s, 1.0, steps[i]);
        cr_assert_float_eq(lr, want[i], 0, "%s", why[i]);
    }
    lr = rt_sched_lr(&s, 1.0, 42);
    cr_assert_float_eq(lr, 0.5, 0, "the plateau rate is the state");
}
