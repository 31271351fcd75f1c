// plot.c — curves.svg: the training curves of a run as one self-contained SVG file.
//
// One panel per metric, two panels a row. Each panel: a frame, "nice" ticks (1, 2 or 5
// times a power of ten) with labels and grid lines, the axis labels, the curve as a
// polyline (broken at non-finite values), dots when there are few points, a legend with
// the last, lowest and highest values. Names are XML-escaped. Very long series are thinned
// to at most MAX_POINTS points per curve (every k-th point, the last one kept).
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

enum { PANEL_W = 480, PANEL_H = 320, COLS = 2, TOP = 44, MAX_POINTS = 4000 };
enum { ML = 72, MR = 24, MT = 56, MB = 52 };    // margins of the plot area inside a panel

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                      "#9467bd", "#8c564b", "#e377c2", "#17becf"};

typedef struct { char *p; size_t len, cap; } Svg;

static void put(Svg *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void put_escaped(Svg *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': put(b, "&amp;"); break;
        case '<': put(b, "&lt;"); break;
        case '>': put(b, "&gt;"); break;
        case '"': put(b, "&quot;"); break;
        case '\'': put(b, "&#39;"); break;
        default:
            // Control characters are not allowed in XML 1.0: show them as '?'.
            if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n') put(b, "?");
            else put(b, "%c", *s);
        }
    }
}

// 1, 2 or 5 times a power of ten, near x (rounded, or at least x).
static double nice_num(double x, bool round) {
    double e = floor(log10(x)), f = x / pow(10, e), nf;
    if (round) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    else nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    return nf * pow(10, e);
}

typedef struct { double lo, hi, step; } Axis;

static Axis nice_axis(double lo, double hi, int nticks, bool integer) {
    if (!(hi > lo)) {                     // one value: a small range around it
        double d = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
        if (integer && d < 1) d = 1;
        lo -= d;
        hi += d;
    }
    double step = nice_num(nice_num(hi - lo, false) / (nticks - 1), true);
    if (integer && step < 1) step = 1;
    return (Axis){floor(lo / step) * step, ceil(hi / step) * step, step};
}

static void tick_label(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-9) v = 0;
    if (fabs(v) >= 1e4 && step >= 1000 && fmod(v, 1000) == 0) {
        snprintf(buf, n, "%gk", v / 1000);
    } else if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4)) {
        snprintf(buf, n, "%.3g", v);
    } else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        snprintf(buf, n, "%.*f", dec, v);
    }
}

static void panel(Svg *b, const RtPlotSeries *s, int idx, double ox, double oy) {
    const char *color = palette[idx % (int)(sizeof palette / sizeof *palette)];
    double pw = PANEL_W - ML - MR, ph = PANEL_H - MT - MB;
    double x0 = ox + ML, y0 = oy + MT;   // top-left of the plot area

    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY, last = NAN;
    bool xint = true;
    int finite = 0;
    for (int i = 0; i < s->n; i++) {
        if (!isfinite(s->y[i]) || !isfinite(s->x[i])) continue;
        finite++;
        xmin = fmin(xmin, s->x[i]);
        xmax = fmax(xmax, s->x[i]);
        ymin = fmin(ymin, s->y[i]);
        ymax = fmax(ymax, s->y[i]);
        if (s->x[i] != floor(s->x[i])) xint = false;
        last = s->y[i];
    }
    put(b, "<g class=\"panel\" id=\"panel-%d\">\n", idx);
    put(b, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"#fafafa\" stroke=\"#cccccc\"/>\n",
        ox + 4, oy + 4, (double)PANEL_W - 8, (double)PANEL_H - 8);
    put(b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">",
        ox + PANEL_W / 2.0, oy + 26);
    put_escaped(b, s->name);
    put(b, "</text>\n");
    if (finite == 0) {
        put(b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\" fill=\"#888888\">no finite values</text>\n</g>\n",
            x0 + pw / 2, y0 + ph / 2);
        return;
    }
    Axis ax = nice_axis(xmin, xmax, 6, xint), ay = nice_axis(ymin, ymax, 5, false);
    #define PX(v) (x0 + ((v) - ax.lo) / (ax.hi - ax.lo) * pw)
    #define PY(v) (y0 + ph - ((v) - ay.lo) / (ay.hi - ay.lo) * ph)

    // Grid, ticks and labels.
    char lab[64];
    put(b, "<g font-size=\"11\" fill=\"#333333\">\n");
    for (int i = 0; ; i++) {
        double v = ax.lo + i * ax.step;
        if (v > ax.hi + ax.step * 1e-6) break;
        double x = PX(v);
        tick_label(lab, sizeof lab, v, ax.step);
        put(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", x, y0, x, y0 + ph);
        put(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333333\"/>", x, y0 + ph, x, y0 + ph + 5);
        put(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, y0 + ph + 18, lab);
    }
    for (int i = 0; ; i++) {
        double v = ay.lo + i * ay.step;
        if (v > ay.hi + ay.step * 1e-6) break;
        double y = PY(v);
        tick_label(lab, sizeof lab, v, ay.step);
        put(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", x0, y, x0 + pw, y);
        put(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333333\"/>", x0 - 5, y, x0, y);
        put(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", x0 - 8, y + 4, lab);
    }
    put(b, "</g>\n");
    put(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333333\"/>\n",
        x0, y0, pw, ph);
    put(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">", x0 + pw / 2, y0 + ph + 38);
    put_escaped(b, s->xlabel ? s->xlabel : "step");
    put(b, "</text>\n");
    put(b, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">",
        ox + 18, y0 + ph / 2);
    put_escaped(b, s->name);
    put(b, "</text>\n");

    // The curve: polylines between non-finite values, thinned to MAX_POINTS.
    int stride = s->n > MAX_POINTS ? (s->n + MAX_POINTS - 1) / MAX_POINTS : 1;
    bool open = false;
    for (int i = 0; i < s->n; i++) {
        if (stride > 1 && i % stride != 0 && i != s->n - 1) continue;
        if (!isfinite(s->y[i]) || !isfinite(s->x[i])) {
            if (open) put(b, "\"/>\n");
            open = false;
            continue;
        }
        if (!open) put(b, "<polyline class=\"curve\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" "
                          "stroke-linejoin=\"round\" points=\"", color);
        put(b, "%s%.1f,%.1f", open ? " " : "", PX(s->x[i]), PY(s->y[i]));
        open = true;
    }
    if (open) put(b, "\"/>\n");
    if (finite <= 60) {
        for (int i = 0; i < s->n; i++)
            if (isfinite(s->y[i]) && isfinite(s->x[i]))
                put(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.8\" fill=\"%s\"/>", PX(s->x[i]), PY(s->y[i]), color);
        put(b, "\n");
    }

    // Legend: a strip between the title and the plot area, so it never hides the curve.
    char tl[160];
    snprintf(tl, sizeof tl, "last %.4g · min %.4g · max %.4g", last, ymin, ymax);
    double ly = oy + 44;
    put(b, "<g class=\"legend\" font-size=\"11\">\n");
    put(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n",
        x0, ly - 4, x0 + 22, ly - 4, color);
    put(b, "<text x=\"%.1f\" y=\"%.1f\">", x0 + 28, ly);
    put_escaped(b, s->name);
    put(b, "</text>\n<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555555\">%s</text>\n</g>\n",
        x0 + pw, ly, tl);
    put(b, "</g>\n");
    #undef PX
    #undef PY
}

char *rt_plot_svg(const char *title, const RtPlotSeries *s, int n) {
    Svg b = {0};
    int cols = n < COLS ? (n > 0 ? n : 1) : COLS, rows = (n + cols - 1) / cols;
    int w = cols * PANEL_W, h = TOP + (rows > 0 ? rows : 1) * PANEL_H;
    put(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    put(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", w, h, w, h);
    put(&b, "<title>");
    put_escaped(&b, title);
    put(&b, "</title>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    put(&b, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"18\">", w / 2);
    put_escaped(&b, title);
    put(&b, "</text>\n");
    if (n == 0) put(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#888888\">no metrics logged</text>\n",
                    w / 2, TOP + PANEL_H / 2);
    for (int i = 0; i < n; i++) panel(&b, &s[i], i, (i % cols) * PANEL_W, TOP + (i / cols) * PANEL_H);
    put(&b, "</svg>\n");
    return b.p;
}

int rt_plot_save(const char *path, const char *title, const RtPlotSeries *s, int n) {
    char *svg = rt_plot_svg(title, s, n);
    int r = rt_log_write_atomic(path, svg, strlen(svg));
    free(svg);
    return r;
}
