/* diag.c — diagnostics: "file:line:col: error: message", the source line, a caret under the span. */
#include "util.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { char *name; const char *text; size_t len; } Source;

static Source *sources;
static int nsources;
static int nerrors;
static bool capped;
static FILE *out;

int diag_add_source(const char *name, const char *text, size_t len) {
    sources = xrealloc(sources, sizeof *sources * (size_t)(nsources + 1));
    sources[nsources] = (Source){xstrdup(name), text, len};
    return nsources++;
}

const char *diag_source_name(int file) {
    return file >= 0 && file < nsources ? sources[file].name : "<input>";
}

void diag_reset(void) {
    for (int i = 0; i < nsources; i++) free(sources[i].name);
    free(sources);
    sources = NULL;
    nsources = nerrors = 0;
    capped = false;
}

void diag_set_output(FILE *f) { out = f; }
int diag_error_count(void) { return nerrors; }
bool diag_too_many(void) { return capped; }

Span span_join(Span a, Span b) {
    if (b.off + b.len > a.off + a.len) a.len = b.off + b.len - a.off;
    return a;
}

static bool color(void) {
    static int c = -1;
    if (c < 0) c = isatty(fileno(out ? out : stderr)) && !getenv("NO_COLOR");
    return c;
}

/* Prints the line holding sp with a caret under the span (clipped to that line). */
static void show_line(FILE *f, Span sp) {
    if (sp.file < 0 || sp.file >= nsources || sp.line <= 0) return;
    const Source *s = &sources[sp.file];
    size_t off = sp.off > s->len ? s->len : sp.off;
    size_t start = off, end = off;
    while (start > 0 && s->text[start - 1] != '\n') start--;
    while (end < s->len && s->text[end] != '\n' && s->text[end] != '\r') end++;
    if (end - start > 512) return; /* a minified wall of text helps nobody */
    fprintf(f, "%5d | ", sp.line);
    int pad = 0, width = 0;
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)s->text[i];
        bool lead = (c & 0xC0) != 0x80;  /* count code points, not bytes */
        fputc(c == '\t' || c == 0 ? ' ' : c, f);
        if (i < off) pad += lead;
        else if (i < off + sp.len) width += lead;
    }
    fprintf(f, "\n      | %*s%s^", pad, "", color() ? "\033[1;32m" : "");
    for (int i = 1; i < width; i++) fputc('~', f);
    fprintf(f, "%s\n", color() ? "\033[0m" : "");
}

static void vreport(const char *kind, const char *col, Span *sp, const char *fmt, va_list ap) {
    FILE *f = out ? out : stderr;
    bool c = color();
    if (sp) fprintf(f, "%s%s:%d:%d: ", c ? "\033[1m" : "", diag_source_name(sp->file), sp->line, sp->col);
    else fprintf(f, "%sltlc: ", c ? "\033[1m" : "");
    fprintf(f, "%s%s:%s ", c ? col : "", kind, c ? "\033[0;1m" : "");
    vfprintf(f, fmt, ap);
    fprintf(f, "%s\n", c ? "\033[0m" : "");
    if (sp) show_line(f, *sp);
}

void diag_error(Span sp, const char *fmt, ...) {
    if (capped) return;
    if (nerrors == DIAG_MAX_ERRORS) {
        capped = true;
        fprintf(out ? out : stderr, "ltlc: too many errors (%d), stopping\n", nerrors);
        return;
    }
    nerrors++;
    va_list ap;
    va_start(ap, fmt);
    vreport("error", "\033[1;31m", &sp, fmt, ap);
    va_end(ap);
}

void diag_note(Span sp, const char *fmt, ...) {
    if (capped) return;
    va_list ap;
    va_start(ap, fmt);
    vreport("note", "\033[1;36m", &sp, fmt, ap);
    va_end(ap);
}

void diag_plain_error(const char *fmt, ...) {
    nerrors++;
    va_list ap;
    va_start(ap, fmt);
    vreport("error", "\033[1;31m", NULL, fmt, ap);
    va_end(ap);
}
