/* test_progress.c — the progress bar's exact text. The expected lines of the formatting
 * tests were produced by tqdm 4.67's own format_meter with Lightning's BAR_FORMAT
 *     "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
 * (and tqdm.format_num / format_interval), then pasted here. The I/O tests drive the bar
 * with a fake clock into a memory stream, in terminal and in plain mode. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

static const char *bar_text(const char *desc, int64_t n, int64_t total, double elapsed, const char *postfix,
                            int width, bool bar) {
    static char buf[4096];
    RtBar b = {desc, n, total, elapsed, postfix, width, bar};
    int len = rt_bar_format(buf, sizeof buf, &b);
    cr_expect_eq(len, (int)strlen(buf));
    return buf;
}

Test(progress, interval_and_numbers_as_tqdm) {
    char buf[64];
    rt_fmt_interval(buf, sizeof buf, 0);
    cr_expect_str_eq(buf, "00:00");
    rt_fmt_interval(buf, sizeof buf, 65.9);
    cr_expect_str_eq(buf, "01:05");
    rt_fmt_interval(buf, sizeof buf, 3725);
    cr_expect_str_eq(buf, "1:02:05");
    struct { double v; const char *want; } cases[] = {
        {0.41234, "0.412"}, {0.5, "0.5"}, {100.0, "100"}, {1234.5, "1234.5"}, {1e-05, "1e-5"},
        {-0.5, "-0.5"}, {0.0, "0"}, {0.871, "0.871"}, {2.302585, "2.3"}, {12345.0, "12345.0"},
        {1e20, "1e+20"}, {NAN, "nan"}, {INFINITY, "inf"}, {(float)0.412, "0.412"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rt_fmt_tqdm_num(buf, sizeof buf, cases[i].v);
        cr_expect_str_eq(buf, cases[i].want, "%g: got %s", cases[i].v, buf);
    }
}

Test(progress, bar_lines_match_tqdm) {
    const char *post = "train_loss=0.412, val_acc=0.871";
    cr_expect_str_eq(bar_text("Epoch 3/9", 387, 860, 4.5, post, 0, true),
                     "Epoch 3/9:  45%|████▌     | 387/860 [00:04<00:05, 86.00it/s, train_loss=0.412, val_acc=0.871]");
    cr_expect_str_eq(bar_text("Epoch 3/9", 387, 860, 4.5, post, 100, true),
                     "Epoch 3/9:  45%|███████▋         | 387/860 [00:04<00:05, 86.00it/s, train_loss=0.412, val_acc=0.871]");
    cr_expect_str_eq(bar_text("Epoch 0/9", 0, 860, 0, NULL, 80, true),
                     "Epoch 0/9:   0%|                                        | 0/860 [00:00<?, ?it/s]");
    cr_expect_str_eq(bar_text("Epoch 0/9", 860, 860, 9.25, "v_num=0", 80, true),
                     "Epoch 0/9: 100%|█████████████████████| 860/860 [00:09<00:00, 92.97it/s, v_num=0]");
    /* Too narrow: one cell, then cut at the width (as tqdm's disp_trim). */
    cr_expect_str_eq(bar_text("Epoch 3/9", 387, 860, 4.5, post, 40, true),
                     "Epoch 3/9:  45%|▍| 387/860 [00:04<00:05,");
    cr_expect_str_eq(bar_text("Validation DataLoader 0", 5, 79, 0.02, NULL, 90, true),
                     "Validation DataLoader 0:   6%|█▊                          | 5/79 [00:00<00:00, 250.00it/s]");
    cr_expect_str_eq(bar_text("Epoch 12/99", 1, 3, 3725.0, NULL, 0, true),
                     "Epoch 12/99:  33%|███▎      | 1/3 [1:02:05<2:04:10,  0.00it/s]");
    cr_expect_str_eq(bar_text("Epoch 3/9", 0, 100, 1.0, NULL, 60, true),
                     "Epoch 3/9:   0%|                    | 0/100 [00:01<?, ?it/s]");
    cr_expect_str_eq(bar_text("", 3, 100, 1.0, NULL, 0, true), "  3%|▎         | 3/100 [00:01<00:32,  3.00it/s]");
    cr_expect_str_eq(bar_text("E", 1, 8, 1.0, NULL, 0, true), "E:  12%|█▎        | 1/8 [00:01<00:07,  1.00it/s]");
    cr_expect_str_eq(bar_text("E", 999, 1000, 1.0, NULL, 0, true),
                     "E: 100%|█████████▉| 999/1000 [00:01<00:00, 999.00it/s]");
    cr_expect_str_eq(bar_text("E", 1, 1000, 1.0, NULL, 0, true), "E:   0%|          | 1/1000 [00:01<16:39,  1.00it/s]");
    /* Unknown length, or past the total: n/?, no percentage. */
    cr_expect_str_eq(bar_text("Epoch 3", 387, 0, 4.5, "v_num=0", 0, true),
                     "Epoch 3: |          | 387/? [00:04<00:00, 86.00it/s, v_num=0]");
    cr_expect_str_eq(bar_text("Epoch 3", 0, -1, 0, NULL, 60, true),
                     "Epoch 3: |                            | 0/? [00:00<?, ?it/s]");
    cr_expect_str_eq(bar_text("E", 12, 10, 1.0, NULL, 0, true), "E: |          | 12/? [00:01<00:00, 12.00it/s]");
}

Test(progress, plain_lines_have_no_bar) {
    cr_expect_str_eq(bar_text("Epoch 3/9", 387, 860, 4.5, "train_loss=0.412", 0, false),
                     "Epoch 3/9:  45% 387/860 [00:04<00:05, 86.00it/s, train_loss=0.412]");
    cr_expect_str_eq(bar_text("Epoch 3", 387, 0, 4.5, NULL, 0, false), "Epoch 3: 387/? [00:04<00:00, 86.00it/s]");
    /* The width does not cut plain lines. */
    cr_expect_str_eq(bar_text("Epoch 3/9", 387, 860, 4.5, "train_loss=0.412", 20, false),
                     "Epoch 3/9:  45% 387/860 [00:04<00:05, 86.00it/s, train_loss=0.412]");
}

/* ---- the bar driven by a fake clock ----------------------------------------------- */

static double fake_now;
static double fake_clock(void) { return fake_now; }

typedef struct { char *buf; size_t len; FILE *f; } Capture;
static void capture(Capture *c) {
    *c = (Capture){0};
    c->f = open_memstream(&c->buf, &c->len);
    cr_assert_not_null(c->f);
}
static const char *captured(Capture *c) {
    fflush(c->f);
    return c->buf;
}

Test(progress, terminal_redraws_in_place) {
    Capture c;
    capture(&c);
    fake_now = 0;
    RtProgressConfig cfg = {.out = c.f, .mode = RT_PROGRESS_TTY, .width = 80, .min_interval = 0.1, .clock = fake_clock};
    RtProgress *p = rt_progress_new(&cfg);
    rt_progress_metric_str(p, "v_num", "0");
    rt_progress_train_start(p, 0, 2, 4);
    fake_now = 0.05;
    rt_progress_train_update(p, 1);          /* within min_interval: no redraw */
    fake_now = 0.5;
    rt_progress_metric(p, "loss", 0.41234);
    rt_progress_train_update(p, 2);
    fake_now = 1.0;
    rt_progress_train_update(p, 4);          /* the last batch is always drawn */
    rt_progress_val_start(p, 2, false);      /* a second line */
    fake_now = 1.25;
    rt_progress_val_update(p, 1);
    fake_now = 1.5;
    rt_progress_val_update(p, 2);
    rt_progress_metric(p, "val_acc", 0.871);
    fake_now = 1.75;
    rt_progress_val_end(p);                  /* cleared; back up; new metrics on the bar */
    rt_progress_train_end(p);
    rt_progress_finish(p);
    rt_progress_free(p);
    /* The lines are tqdm's format_meter(..., ncols=80) for the same states. */
    cr_expect_str_eq(captured(&c),
        "\rEpoch 0/1:   0%|                                 | 0/4 [00:00<?, ?it/s, v_num=0]\033[K"
        "\rEpoch 0/1:  50%|██████▌      | 2/4 [00:00<00:00,  4.00it/s, v_num=0, loss=0.412]\033[K"
        "\rEpoch 0/1: 100%|█████████████| 4/4 [00:01<00:00,  4.00it/s, v_num=0, loss=0.412]\033[K"
        "\n"
        "\rValidation DataLoader 0:   0%|                            | 0/2 [00:00<?, ?it/s]\033[K"
        "\rValidation DataLoader 0:  50%|██████████          | 1/2 [00:00<00:00,  4.00it/s]\033[K"
        "\rValidation DataLoader 0: 100%|████████████████████| 2/2 [00:00<00:00,  4.00it/s]\033[K"
        "\r\033[K\033[A"
        "\rEpoch 0/1: 100%|█| 4/4 [00:01<00:00,  4.00it/s, v_num=0, loss=0.412, val_acc=0.8\033[K"
        "\rEpoch 0/1: 100%|█| 4/4 [00:01<00:00,  4.00it/s, v_num=0, loss=0.412, val_acc=0.8\033[K"
        "\n");
    fclose(c.f);
    free(c.buf);
}

Test(progress, terminal_respects_refresh_rate) {
    Capture c;
    capture(&c);
    fake_now = 0;
    RtProgressConfig cfg = {.out = c.f, .mode = RT_PROGRESS_TTY, .width = 50, .refresh_rate = 100,
                            .min_interval = -1 /* no time limit */, .clock = fake_clock};
    RtProgress *p = rt_progress_new(&cfg);
    rt_progress_train_start(p, 0, 0, 250);   /* max_epochs unknown: "Epoch 0" */
    for (int i = 1; i <= 250; i++) {
        fake_now = i * 0.01;
        rt_progress_train_update(p, i);
    }
    const char *out = captured(&c);
    int draws = 0;
    for (const char *s = out; (s = strchr(s, '\r')); s++) draws++;
    cr_expect_eq(draws, 4, "start, 100, 200, 250:\n%s", out);
    cr_expect(strstr(out, "\rEpoch 0:  40%|") && strstr(out, "| 100/250 [00:01<00:01, 100.00it/s]"), "%s", out);
    rt_progress_free(p);
    fclose(c.f);
    free(c.buf);
}

Test(progress, plain_mode_prints_periodic_lines) {
    Capture c;
    capture(&c);
    fake_now = 0;
    RtProgressConfig cfg = {.out = c.f, .mode = RT_PROGRESS_PLAIN, .plain_percent = 25, .plain_seconds = 30,
                            .clock = fake_clock};
    RtProgress *p = rt_progress_new(&cfg);
    rt_progress_val_start(p, 2, true);       /* sanity check before training */
    fake_now = 0.5;
    rt_progress_val_update(p, 2);
    rt_progress_val_end(p);
    rt_progress_train_start(p, 0, 1, 20);
    for (int i = 1; i <= 20; i++) {
        fake_now = 0.5 + i * 0.5;
        rt_progress_metric(p, "train_loss", 1.0 / i);
        rt_progress_train_update(p, i);
    }
    rt_progress_val_start(p, 4, false);
    fake_now = 40;                          /* a slow validation: a line after 30 s */
    rt_progress_val_update(p, 1);
    fake_now = 41;
    rt_progress_val_update(p, 4);
    rt_progress_val_end(p);
    rt_progress_metric(p, "val_acc", 0.5);
    rt_progress_train_end(p);
    rt_progress_finish(p);
    rt_progress_free(p);
    cr_expect_str_eq(captured(&c),
        "Sanity Checking DataLoader 0: 100% 2/2 [00:00<00:00,  4.00it/s]\n"
        "Epoch 0/0:  25% 5/20 [00:02<00:07,  2.00it/s, train_loss=0.2]\n"
        "Epoch 0/0:  50% 10/20 [00:05<00:05,  2.00it/s, train_loss=0.1]\n"
        "Epoch 0/0:  75% 15/20 [00:07<00:02,  2.00it/s, train_loss=0.0667]\n"
        "Validation DataLoader 0:  25% 1/4 [00:29<01:28,  0.03it/s]\n"
        "Validation DataLoader 0: 100% 4/4 [00:30<00:00,  0.13it/s]\n"
        "Epoch 0/0: 100% 20/20 [00:10<00:00,  2.00it/s, train_loss=0.05, val_acc=0.5]\n");
    fclose(c.f);
    free(c.buf);
}

Test(progress, off_mode_is_silent) {
    Capture c;
    capture(&c);
    RtProgressConfig cfg = {.out = c.f, .mode = RT_PROGRESS_OFF};
    RtProgress *p = rt_progress_new(&cfg);
    rt_progress_train_start(p, 0, 1, 10);
    rt_progress_train_update(p, 10);
    rt_progress_val_start(p, 1, false);
    rt_progress_val_end(p);
    rt_progress_train_end(p);
    rt_progress_finish(p);
    rt_progress_free(p);
    cr_expect_eq(strlen(captured(&c)), 0u);
    fclose(c.f);
    free(c.buf);
}

Test(progress, auto_mode_is_plain_when_not_a_terminal) {
    Capture c;
    capture(&c);
    fake_now = 0;
    RtProgressConfig cfg = {.out = c.f, .clock = fake_clock};
    RtProgress *p = rt_progress_new(&cfg);
    rt_progress_train_start(p, 2, 5, 10);
    fake_now = 1;
    rt_progress_train_update(p, 10);
    rt_progress_train_end(p);
    rt_progress_free(p);
    cr_expect_str_eq(captured(&c), "Epoch 2/4: 100% 10/10 [00:01<00:00, 10.00it/s]\n");
    fclose(c.f);
    free(c.buf);
}

Test(progress, messages_go_above_the_bar) {
    Capture c;
    capture(&c);
    fake_now = 0;
    RtProgressConfig cfg = {.out = c.f, .mode = RT_PROGRESS_TTY, .width = 60, .clock = fake_clock};
    RtProgress *p = rt_progress_new(&cfg);
    rt_progress_print(p, "before");             /* no bar yet: a plain line */
    rt_progress_train_start(p, 0, 1, 10);
    rt_progress_print(p, "Epoch 0: saving checkpoint");
    rt_progress_val_start(p, 5, false);
    rt_progress_print(p, "during validation");
    rt_progress_free(p);
    /* tqdm's format_meter(..., ncols=60) */
    const char *train = "\rEpoch 0/0:   0%|                     | 0/10 [00:00<?, ?it/s]\033[K";
    const char *val = "\rValidation DataLoader 0:   0%|        | 0/5 [00:00<?, ?it/s]\033[K";
    char want[1024];
    snprintf(want, sizeof want,
             "before\n"
             "%s"                                            /* train_start */
             "\r\033[KEpoch 0: saving checkpoint\n%s"          /* message, bar again */
             "\n%s"                                          /* validation below */
             "\r\033[K\033[A\r\033[Kduring validation\n%s\n%s",  /* both lines again */
             train, train, val, train, val);
    cr_expect_str_eq(captured(&c), want);
    fclose(c.f);
    free(c.buf);

    /* Plain mode and off mode: just the line. */
    capture(&c);
    RtProgressConfig off = {.out = c.f, .mode = RT_PROGRESS_OFF};
    p = rt_progress_new(&off);
    rt_progress_train_start(p, 0, 1, 10);
    rt_progress_print(p, "early stopping");
    rt_progress_free(p);
    cr_expect_str_eq(captured(&c), "early stopping\n");
    fclose(c.f);
    free(c.buf);
}
