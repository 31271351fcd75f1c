// summary.c — Lightning's ModelSummary table, printed before training:
//
//       | Name | Type   | Params | Out sizes
//     ------------------------------------------
//     0 | l1   | Linear | 100 K  | [B, 128]
//     1 | l2   | Linear | 33.0 K | [B, 256]
//     2 | l3   | Linear | 2.6 K  | [B, 10]
//     ------------------------------------------
//     136 K     Trainable params
//     0         Non-trainable params
//     136 K     Total params
//     0.543     Total estimated model params size (MB)
//
// The layout is Lightning's _format_summary_table: columns left-aligned to their widest
// cell, joined by " | ", dividers of sum(widths) + 3 * (columns + 1) dashes, totals in a
// 10-wide column. Counts as get_human_readable_count, the size as "{:,.3f}".
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

// Python's "{:,d}".
static void with_commas(char *buf, size_t size, long long v) {
    char t[32];
    snprintf(t, sizeof t, "%lld", v < 0 ? -v : v);
    size_t n = strlen(t), k = 0;
    char out[48];
    if (v < 0) out[k++] = '-';
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) out[k++] = ',';
        out[k++] = t[i];
    }
    out[k] = 0;
    snprintf(buf, size, "%s", out);
}

void rt_fmt_param_count(char *buf, size_t size, int64_t count) {
    static const char *const labels[] = {" ", "K", "M", "B", "T"};
    if (count < 0) count = 0;
    int digits = count > 0 ? (int)floor(log10((double)count)) + 1 : 1;
    int groups = (digits + 2) / 3;
    if (groups > 5) groups = 5;            // don't abbreviate beyond trillions
    double number = (double)count * pow(10, -3 * (groups - 1));
    int index = groups - 1;
    if (index < 1 || number >= 100) {
        char c[48];
        with_commas(c, sizeof c, (long long)number);
        snprintf(buf, size, "%s %s", c, labels[index]);
    } else {
        snprintf(buf, size, "%.1f %s", number, labels[index]);   // < 100: no comma needed
    }
}

typedef struct { char *p; size_t len, cap; } Text;

static void add(Text *t, const char *s, int pad_to) {
    size_t n = strlen(s), w = pad_to > (int)n ? (size_t)pad_to : n;
    if (t->len + w + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 512;
        while (cap < t->len + w + 1) cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) abort();
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    memset(t->p + t->len + n, ' ', w - n);
    t->len += w;
    t->p[t->len] = 0;
}

char *rt_summary_format(const RtSummaryRow *rows, int n, double bytes_per_param) {
    if (bytes_per_param <= 0) bytes_per_param = 4;
    bool shapes = false;
    for (int i = 0; i < n; i++) shapes |= rows[i].out_shape != NULL;
    int ncols = shapes ? 5 : 4;
    static const char *const head[] = {" ", "Name", "Type", "Params", "Out sizes"};

    // Cells as text, then the widths.
    char (*cells)[5][128] = calloc((size_t)(n > 0 ? n : 1), sizeof *cells);
    if (!cells) abort();
    int width[5];
    for (int c = 0; c < ncols; c++) width[c] = (int)strlen(head[c]);
    int64_t total = 0, trainable = 0;
    for (int i = 0; i < n; i++) {
        snprintf(cells[i][0], 128, "%d", i);
        snprintf(cells[i][1], 128, "%s", rows[i].name ? rows[i].name : "");
        snprintf(cells[i][2], 128, "%s", rows[i].type ? rows[i].type : "");
        rt_fmt_param_count(cells[i][3], 128, rows[i].params);
        snprintf(cells[i][4], 128, "%s", rows[i].out_shape ? rows[i].out_shape : "?");
        for (int c = 0; c < ncols; c++)
            if ((int)strlen(cells[i][c]) > width[c]) width[c] = (int)strlen(cells[i][c]);
        total += rows[i].params;
        if (rows[i].trainable) trainable += rows[i].params;
    }
    int dashes = 3 * (ncols + 1);
    for (int c = 0; c < ncols; c++) dashes += width[c];
    char *rule = malloc((size_t)dashes + 1);
    if (!rule) abort();
    memset(rule, '-', (size_t)dashes);
    rule[dashes] = 0;

    Text t = {0};
    for (int c = 0; c < ncols; c++) {
        if (c) add(&t, " | ", 0);
        add(&t, head[c], width[c]);
    }
    add(&t, "\n", 0);
    add(&t, rule, 0);
    for (int i = 0; i < n; i++) {
        add(&t, "\n", 0);
        for (int c = 0; c < ncols; c++) {
            if (c) add(&t, " | ", 0);
            add(&t, cells[i][c], width[c]);
        }
    }
    add(&t, "\n", 0);
    add(&t, rule, 0);

    char num[64];
    rt_fmt_param_count(num, sizeof num, trainable);
    add(&t, "\n", 0), add(&t, num, 10), add(&t, "Trainable params", 0);
    rt_fmt_param_count(num, sizeof num, total - trainable);
    add(&t, "\n", 0), add(&t, num, 10), add(&t, "Non-trainable params", 0);
    rt_fmt_param_count(num, sizeof num, total);
    add(&t, "\n", 0), add(&t, num, 10), add(&t, "Total params", 0);
    // "{:,.3f}" of the size in MB.
    double mb = (double)total * bytes_per_param * 1e-6;
    char whole[48], frac[64];
    snprintf(frac, sizeof frac, "%.3f", mb);
    double ip = floor(mb);
    with_commas(whole, sizeof whole, (long long)ip);
    const char *dot = strchr(frac, '.');
    // The rounded value may carry into the integer part (999.9996 → 1,000.000).
    if (atof(frac) >= ip + 1) with_commas(whole, sizeof whole, (long long)ip + 1);
    snprintf(num, sizeof num, "%s%s", whole, dot ? dot : "");
    add(&t, "\n", 0), add(&t, num, 10), add(&t, "Total estimated model params size (MB)", 0);
    add(&t, "\n", 0);
    free(rule);
    free(cells);
    return t.p;
}
