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

/* Colour only on a terminal, and never with NO_COLOR set (no-color.org). */
static bool color(void) {
    return !getenv("NO_COLOR") && isatty(fileno(out ? out : stderr));
}

/* Length of the printable UTF-8 character at p: 0 for a control character, a NUL or a byte
 * that is not valid UTF-8 (the lexer reports those; here they are shown as U+FFFD). */
static int printable_len(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    int n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n == 1) return c >= 0x20 && c != 0x7F;
    if (n == 0 || end - p < n) return 0;
    uint32_t v = c & (0x7F >> n);
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (p[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (v >= 0x80 && v < 0xA0)) return 0;
    return n;
}

/* Prints the line holding sp with a caret under the span (clipped to that line). Each
 * character takes one column; a tab is shown as a space; what cannot be shown safely (a
 * control character, a NUL, a bad byte) as U+FFFD. */
static void show_line(FILE *f, Span sp) {
    if (sp.file < 0 || sp.file >= nsources || sp.line <= 0) return;
    const Source *s = &sources[sp.file];
    size_t off = sp.off > s->len ? s->len : sp.off;
    size_t start = off, end = off;
    enum { MAX_SHOWN = 512 }; /* a longer line (minified, or garbage) helps nobody */
    while (start > 0 && s->text[start - 1] != '\n' && off - start <= MAX_SHOWN) start--;
    while (end < s->len && s->text[end] != '\n' && s->text[end] != '\r' && end - start <= MAX_SHOWN) end++;
    if (end - start > MAX_SHOWN) return;
    fprintf(f, "%5d | ", sp.line);
    int pad = 0, width = 0;
    const unsigned char *text = (const unsigned char *)s->text;
    for (size_t i = start; i < end;) {
        int n = printable_len(text + i, text + end);
        if (n) fwrite(text + i, 1, (size_t)n, f);
        else fputs(text[i] == '\t' ? " " : "\xEF\xBF\xBD", f);
        if (i < off) pad++;
        else if (i < off + sp.len) width++;
        i += n ? (size_t)n : 1;
    }
    fprintf(f, "\n      | %*s%s^", pad, "", color() ? "\033[1;32m" : "");
    for (int i = 1; i < width; i++) fputc('~', f);
    fprintf(f, "%s\n", color() ? "\033[0m" : "");
}

const char *diag_program = "ltlc";

static void vreport(const char *kind, const char *col, Span *sp, const char *fmt, va_list ap) {
    FILE *f = out ? out : stderr;
    bool c = color();
    if (sp) fprintf(f, "%s%s:%d:%d: ", c ? "\033[1m" : "", diag_source_name(sp->file), sp->line, sp->col);
    else fprintf(f, "%s%s: ", c ? "\033[1m" : "", diag_program);
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
