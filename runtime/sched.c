/* sched.c — learning-rate schedulers with PyTorch's formulas, in closed form of the number
 * of scheduler steps taken (so a resumed run needs no state), except reduce_on_plateau. */
#include "rt.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

double rt_sched_num(const RtScheduler *s, const char *key, double def) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->keys[i], key))
            return s->vals[i].kind == RT_FLOAT ? s->vals[i].f : s->vals[i].kind == RT_INT ? (double)s->vals[i].i : def;
    return def;
}

static const RtValue *val(const RtScheduler *s, const char *key) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->keys[i], key)) return &s->vals[i];
    return NULL;
}

double rt_sched_lr(const RtScheduler *s, double lr0, int64_t t) {
    if (!s->kind) return lr0;
    double gamma = rt_sched_num(s, "gamma", 0.1), tt = (double)t;
    if (!strcmp(s->kind, "step")) return lr0 * pow(gamma, floor(tt / fmax(1, rt_sched_num(s, "step_size", 1))));
    if (!strcmp(s->kind, "exponential")) return lr0 * pow(gamma, tt);
    if (!strcmp(s->kind, "multistep")) {
        /* milestones come as a string "10,20" from the configuration, or one number */
        const RtValue *m = val(s, "milestones");
        int passed = 0;
        if (m && m->kind == RT_STR)
            for (const char *p = m->s; *p;) {
                double ms = strtod(p, (char **)&p);
                passed += t >= (int64_t)ms;
                while (*p == ',' || *p == ' ') p++;
                if (*p && !(*p >= '0' && *p <= '9')) break;
            }
        else if (m) passed = t >= (int64_t)(m->kind == RT_FLOAT ? m->f : (double)m->i);
        return lr0 * pow(gamma, passed);
    }
    if (!strcmp(s->kind, "cosine")) {
        double tmax = fmax(1, rt_sched_num(s, "T_max", 1)), eta = rt_sched_num(s, "eta_min", 0);
        return eta + (lr0 - eta) * (1 + cos(M_PI * tt / tmax)) / 2;
    }
    if (!strcmp(s->kind, "linear_warmup")) { /* LinearLR(start_factor, 1.0, total_iters = warmup_steps) */
        double start = rt_sched_num(s, "start_factor", 1.0 / 3), n = fmax(1, rt_sched_num(s, "warmup_steps", 5));
        return lr0 * (start + (1 - start) * fmin(tt, n) / n);
    }
    if (!strcmp(s->kind, "one_cycle")) { /* OneCycleLR, cos annealing, two phases */
        double max_lr = rt_sched_num(s, "max_lr", lr0), total = fmax(2, rt_sched_num(s, "total_steps", 100));
        double pct = rt_sched_num(s, "pct_start", 0.3), div = rt_sched_num(s, "div_factor", 25);
        double final_div = rt_sched_num(s, "final_div_factor", 1e4);
        double initial = max_lr / div, low = initial / final_div, up = pct * total - 1, down = total - 1;
        if (tt <= up) return initial + (max_lr - initial) * (1 - cos(M_PI * tt / fmax(up, 1))) / 2;
        double f = fmin(1, (tt - up) / fmax(down - up, 1));
        return max_lr + (low - max_lr) * (1 - cos(M_PI * f)) / 2;
    }
    if (!strcmp(s->kind, "reduce_on_plateau")) return s->plateau_lr > 0 ? s->plateau_lr : lr0;
    return lr0;
}

double rt_sched_plateau(RtScheduler *s, double lr0, double metric) {
    const RtValue *mode = val(s, "mode");
    bool max = mode && mode->kind == RT_STR && !strcmp(mode->s, "max");
    double factor = rt_sched_num(s, "factor", 0.1), threshold = rt_sched_num(s, "threshold", 1e-4);
    double min_lr = rt_sched_num(s, "min_lr", 0);
    int64_t patience = (int64_t)rt_sched_num(s, "patience", 10);
    if (s->plateau_lr <= 0) { s->plateau_lr = lr0; s->plateau_best = max ? -INFINITY : INFINITY; }
    /* PyTorch's default threshold_mode "rel" */
    bool better = max ? metric > s->plateau_best * (1 + threshold) : metric < s->plateau_best * (1 - threshold);
    if (better) { s->plateau_best = metric; s->plateau_wait = 0; }
    else if (++s->plateau_wait > patience) {
        s->plateau_lr = fmax(s->plateau_lr * factor, min_lr);
        s->plateau_wait = 0;
    }
    return s->plateau_lr;
}
