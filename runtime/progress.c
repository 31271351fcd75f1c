// progress.c — Lightning's TQDM progress bar, without Python.
//
// The line is tqdm's, with Lightning's bar format
//     {desc}: {percentage:3.0f}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate:5.2f}it/s{, postfix}]
//     Epoch 3/9:  45%|████▌     | 387/860 [00:04<00:05, 93.10it/s, v_num=0, train_loss=0.412]
// On a terminal the bar fills the width and the line is redrawn in place with \r (during
// validation a second line holds the validation bar and is cleared afterwards). Anywhere
// else (CI logs, files) the same line without the bar cells is printed every 10% and at
// least every 30 s, and once at the end of each epoch and each validation.
//
// Differences from tqdm, on purpose: the rate is the plain average n / elapsed (tqdm
// smooths it); a bar's clock stops when its last batch is done, so the epoch's final line
// shows the training rate even after validation ran; redraws are at most every
// min_interval seconds (tqdm's mininterval, 0.1 s) on top of refresh_rate, which keeps
// the bar's cost far below 1% even at tens of thousands of steps per second.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"

// ---------------------------------------------------------------------------
// Pure formatting.

void rt_fmt_interval(char *buf, size_t size, double seconds) {
    long long t = seconds > 0 ? (long long)seconds : 0;
    long long m = t / 60, s = t % 60, h = m / 60;
    m %= 60;
    if (h) snprintf(buf, size, "%lld:%02lld:%02lld", h, m, s);
    else snprintf(buf, size, "%02lld:%02lld", m, s);
}

// Python's str.replace(old, new) for all occurrences, in place (new no longer than old).
static void replace_all(char *s, const char *old, const char *new_) {
    size_t lo = strlen(old), ln = strlen(new_);
    char *p;
    while ((p = strstr(s, old))) {
        memmove(p + ln, p + lo, strlen(p + lo) + 1);
        memcpy(p, new_, ln);
        s = p + ln;
    }
}

void rt_fmt_tqdm_num(char *buf, size_t size, double v) {
    char f[64], n[64];
    snprintf(f, sizeof f, "%.3g", v);
    replace_all(f, "e+0", "e+");
    replace_all(f, "e-0", "e-");
    rt_log_fmt_num(n, sizeof n, v);
    snprintf(buf, size, "%s", strlen(f) < strlen(n) ? f : n);
}

// Display columns of UTF-8 text (every code point counts one: the bar's block characters
// and ASCII do).
static int columns(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

// Cuts s after `cols` display columns.
static void cut_columns(char *s, int cols) {
    int n = 0;
    for (char *p = s; *p; p++) {
        if (((unsigned char)*p & 0xC0) != 0x80 && n++ == cols) { *p = 0; return; }
    }
}

int rt_bar_format(char *buf, size_t size, const RtBar *b) {
    char el[32], rem[32], rate[48], total[32], post[1024] = "";
    double elapsed = b->elapsed > 0 ? b->elapsed : 0;
    rt_fmt_interval(el, sizeof el, elapsed);
    bool have_rate = elapsed > 0 && b->n > 0;
    double r = have_rate ? (double)b->n / elapsed : 0;
    if (have_rate) snprintf(rate, sizeof rate, "%5.2fit/s", r);
    else snprintf(rate, sizeof rate, "?it/s");
    if (b->postfix && *b->postfix) snprintf(post, sizeof post, ", %s", b->postfix);
    const char *desc = b->desc ? b->desc : "";
    const char *sep = *desc ? ": " : "";

    // Past its total, tqdm treats a bar as one of unknown length: "12/?", no percentage.
    bool known = b->total > 0 && b->n <= b->total;
    double frac = known ? (double)b->n / (double)b->total : 0;
    char head[256];
    if (known) {
        snprintf(head, sizeof head, "%s%s%3.0f%%", desc, sep, frac * 100);
        snprintf(total, sizeof total, "%lld", (long long)b->total);
        if (have_rate) rt_fmt_interval(rem, sizeof rem, (double)(b->total - b->n) / r);
        else snprintf(rem, sizeof rem, "?");
    } else {
        snprintf(head, sizeof head, "%s%s", desc, sep);
        snprintf(total, sizeof total, "?");
        snprintf(rem, sizeof rem, have_rate ? "00:00" : "?");
    }
    char rbar[1200];
    snprintf(rbar, sizeof rbar, "%lld/%s [%s<%s, %s%s]", (long long)b->n, total, el, rem, rate, post);

    char line[4096];
    if (!b->bar) {
        size_t hl = strlen(head);
        snprintf(line, sizeof line, "%s%s%s", head, hl && head[hl - 1] != ' ' ? " " : "", rbar);
    } else {
        // tqdm's Bar: eighths of a cell, " ▏▎▍▌▋▊▉█"; 10 cells, or what the width leaves.
        static const char *const eighths[9] = {" ", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"};
        int cells = 10;
        if (b->width > 0) {
            cells = b->width - (columns(head) + columns(rbar) + 3);
            if (cells < 1) cells = 1;
        }
        if (cells > 400) cells = 400;
        long long units = (long long)(frac * cells * 8);
        int full = (int)(units / 8), part = (int)(units % 8);
        char bar[400 * 3 + 1];
        size_t k = 0;
        for (int i = 0; i < cells; i++) {
            const char *c = i < full ? eighths[8] : i == full ? eighths[part] : " ";
            size_t cl = strlen(c);
            memcpy(bar + k, c, cl);
            k += cl;
        }
        bar[k] = 0;
        snprintf(line, sizeof line, "%s|%s| %s", head, bar, rbar);
        if (b->width > 0 && columns(line) > b->width) cut_columns(line, b->width);
    }
    return snprintf(buf, size, "%s", line);
}

// ---------------------------------------------------------------------------
// The bar as the trainer drives it.

// A postfix value: formatted when a line is drawn, not when it is set (setting one is
// then a copy, whatever the number of steps per second).
typedef struct { char name[64]; char text[64]; double v; bool num; } Metric;
typedef struct {
    char desc[64];
    int64_t n, total;
    double t0, stop;         // start; the time the last batch finished (< 0: running)
    bool shown;              // on a terminal: the line is on screen
} Bar;

struct RtProgress {
    RtProgressConfig cfg;
    FILE *out;
    bool tty, off;
    Metric m[32];
    int nm;
    Bar train, val;
    bool in_val, sanity, have_train;
    double last_draw;        // terminal: the last redraw
    double last_line;        // plain: the last line printed
    int64_t last_bucket;     // plain: the last percent bucket printed
};

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now(const RtProgress *p) { return p->cfg.clock ? p->cfg.clock() : mono_now(); }

RtProgress *rt_progress_new(const RtProgressConfig *cfg) {
    RtProgress *p = calloc(1, sizeof *p);
    if (!p) abort();
    if (cfg) p->cfg = *cfg;
    p->out = p->cfg.out ? p->cfg.out : stdout;
    if (p->cfg.refresh_rate <= 0) p->cfg.refresh_rate = 1;
    if (p->cfg.min_interval == 0) p->cfg.min_interval = 0.1;
    else if (p->cfg.min_interval < 0) p->cfg.min_interval = 0;
    if (p->cfg.plain_percent <= 0) p->cfg.plain_percent = 10;
    if (p->cfg.plain_seconds <= 0) p->cfg.plain_seconds = 30;
    RtProgressMode mode = p->cfg.mode;
    if (mode == RT_PROGRESS_AUTO) mode = isatty(fileno(p->out)) ? RT_PROGRESS_TTY : RT_PROGRESS_PLAIN;
    p->tty = mode == RT_PROGRESS_TTY;
    p->off = mode == RT_PROGRESS_OFF;
    return p;
}

void rt_progress_free(RtProgress *p) { free(p); }

static Metric *metric(RtProgress *p, const char *name) {
    int i = 0;
    while (i < p->nm && strcmp(p->m[i].name, name) != 0) i++;
    if (i == p->nm) {
        if (p->nm == (int)(sizeof p->m / sizeof *p->m)) return NULL;
        snprintf(p->m[i].name, sizeof p->m[i].name, "%s", name);
        p->nm++;
    }
    return &p->m[i];
}

void rt_progress_metric_str(RtProgress *p, const char *name, const char *text) {
    Metric *m = metric(p, name);
    if (!m) return;
    snprintf(m->text, sizeof m->text, "%s", text);
    m->num = false;
}

void rt_progress_metric(RtProgress *p, const char *name, double v) {
    Metric *m = metric(p, name);
    if (!m) return;
    m->v = v;
    m->num = true;
}

static int term_width(const RtProgress *p) {
    if (p->cfg.width > 0) return p->cfg.width;
    struct winsize ws;
    if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *c = getenv("COLUMNS");
    if (c && atoi(c) > 0) return atoi(c);
    return 80;
}

static void format_bar(const RtProgress *p, const Bar *b, bool with_postfix, char *line, size_t size) {
    char post[1024] = "";
    size_t k = 0;
    for (int i = 0; with_postfix && i < p->nm && k < sizeof post; i++) {
        char num[64];
        if (p->m[i].num) rt_fmt_tqdm_num(num, sizeof num, p->m[i].v);
        k += (size_t)snprintf(post + k, sizeof post - k, "%s%s=%s", i ? ", " : "", p->m[i].name,
                              p->m[i].num ? num : p->m[i].text);
    }
    double t = b->stop >= 0 ? b->stop : now(p);
    RtBar rb = {b->desc, b->n, b->total, t - b->t0, post, p->tty ? term_width(p) : 0, p->tty};
    rt_bar_format(line, size, &rb);
}

// Terminal: redraw the current line.
static void draw(RtProgress *p, Bar *b, bool with_postfix) {
    char line[4096];
    format_bar(p, b, with_postfix, line, sizeof line);
    fprintf(p->out, "\r%s\033[K", line);
    fflush(p->out);
    b->shown = true;
    p->last_draw = now(p);
}

// Plain: print one line.
static void print_line(RtProgress *p, Bar *b, bool with_postfix) {
    char line[4096];
    format_bar(p, b, with_postfix, line, sizeof line);
    fprintf(p->out, "%s\n", line);
    fflush(p->out);
    p->last_line = now(p);
}

static void start(Bar *b, const char *desc, int64_t total, double t) {
    snprintf(b->desc, sizeof b->desc, "%s", desc);
    b->n = 0;
    b->total = total;
    b->t0 = t;
    b->stop = -1;
}

void rt_progress_train_start(RtProgress *p, int64_t epoch, int64_t max_epochs, int64_t total) {
    if (p->off) return;
    char desc[64];
    // Lightning counts epochs from 0: "Epoch 3/9" is the 4th of 10 (as its rich bar shows).
    if (max_epochs > 0) snprintf(desc, sizeof desc, "Epoch %lld/%lld", (long long)epoch, (long long)(max_epochs - 1));
    else snprintf(desc, sizeof desc, "Epoch %lld", (long long)epoch);
    bool shown = p->train.shown;
    start(&p->train, desc, total, now(p));
    p->train.shown = shown;          // the same line is reused, as Lightning's bar is reset
    p->have_train = true;
    p->last_bucket = 0;
    p->last_line = p->train.t0;
    if (p->tty) draw(p, &p->train, true);
}

// Is it time to show batch n of bar b?
static bool due(RtProgress *p, const Bar *b, int64_t n) {
    if (n == b->total) return true;
    if (n % p->cfg.refresh_rate != 0) return false;
    return now(p) - p->last_draw >= p->cfg.min_interval;
}

static void plain_progress(RtProgress *p, Bar *b, bool with_postfix) {
    if (b->total > 0 && b->n >= b->total) return;    // the final line comes at the end
    int64_t bucket = b->total > 0 ? b->n * 100 / b->total / p->cfg.plain_percent : 0;
    if (bucket > p->last_bucket || now(p) - p->last_line >= p->cfg.plain_seconds) {
        p->last_bucket = bucket;
        print_line(p, b, with_postfix);
    }
}

void rt_progress_train_update(RtProgress *p, int64_t n) {
    if (p->off || !p->have_train) return;
    p->train.n = n;
    if (p->train.total > 0 && n >= p->train.total && p->train.stop < 0) p->train.stop = now(p);
    if (p->tty) {
        if (!p->in_val && due(p, &p->train, n)) draw(p, &p->train, true);
    } else {
        plain_progress(p, &p->train, true);
    }
}

void rt_progress_train_end(RtProgress *p) {
    if (p->off || !p->have_train) return;
    if (p->train.stop < 0) p->train.stop = now(p);
    if (p->tty) {
        draw(p, &p->train, true);
        if (p->cfg.leave) {
            fputs("\n", p->out);
            fflush(p->out);
            p->train.shown = false;
        }
    } else {
        print_line(p, &p->train, true);
    }
}

void rt_progress_val_start(RtProgress *p, int64_t total, bool sanity) {
    if (p->off) return;
    p->in_val = true;
    p->sanity = sanity;
    start(&p->val, sanity ? "Sanity Checking DataLoader 0" : "Validation DataLoader 0", total, now(p));
    p->val.shown = false;
    if (p->val.t0 - p->last_line > p->cfg.plain_seconds) p->last_line = p->val.t0;   // plain: 30 s from here
    if (p->tty) {
        if (p->train.shown) fputs("\n", p->out);   // the validation bar goes below
        draw(p, &p->val, false);
    }
}

void rt_progress_val_update(RtProgress *p, int64_t n) {
    if (p->off || !p->in_val) return;
    p->val.n = n;
    if (p->val.total > 0 && n >= p->val.total && p->val.stop < 0) p->val.stop = now(p);
    if (p->tty) {
        if (due(p, &p->val, n)) draw(p, &p->val, false);
    } else if (now(p) - p->last_line >= p->cfg.plain_seconds && !(p->val.total > 0 && n >= p->val.total)) {
        print_line(p, &p->val, false);   // a long validation still shows signs of life
    }
}

void rt_progress_val_end(RtProgress *p) {
    if (p->off || !p->in_val) return;
    p->in_val = false;
    if (p->val.stop < 0) p->val.stop = now(p);
    if (p->tty) {
        if (p->train.shown) {
            // Clear the validation line, go back up and show the new metrics on the main bar.
            fputs("\r\033[K\033[A", p->out);
            draw(p, &p->train, true);
        } else if (p->sanity) {
            fputs("\r\033[K", p->out);       // the sanity bar disappears, as Lightning's
            fflush(p->out);
        } else {
            draw(p, &p->val, false);         // validate alone: the bar stays
            fputs("\n", p->out);
            fflush(p->out);
        }
    } else {
        print_line(p, &p->val, false);
    }
}

void rt_progress_print(RtProgress *p, const char *line) {
    if (!p->tty || (!p->train.shown && !p->in_val)) {
        fprintf(p->out, "%s\n", line);
        fflush(p->out);
        return;
    }
    // Clear the bar (both lines during validation), print, draw the bar again below.
    bool two = p->in_val && p->train.shown;
    fputs(two ? "\r\033[K\033[A\r\033[K" : "\r\033[K", p->out);
    fprintf(p->out, "%s\n", line);
    if (p->train.shown) draw(p, &p->train, true);
    if (two) fputs("\n", p->out);
    if (p->in_val) draw(p, &p->val, false);
}

void rt_progress_finish(RtProgress *p) {
    if (p->off) return;
    if (p->tty && p->train.shown) {
        fputs("\n", p->out);
        fflush(p->out);
        p->train.shown = false;
    }
}
