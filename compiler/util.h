/* util.h — what every layer of ltlc uses: memory, growable strings, files, diagnostics. */
#ifndef LTL_UTIL_H
#define LTL_UTIL_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdbool.h>

#define LTL_VERSION "0.1.0"

/* util.c */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct { char *s; size_t len, cap; } StrBuf;  /* always NUL-terminated once used */
void sb_putc(StrBuf *b, char c);
void sb_puts(StrBuf *b, const char *s);
void sb_putn(StrBuf *b, const char *s, size_t n);
void sb_printf(StrBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_free(StrBuf *b);

/* Reads a whole file; NULL and *err set on failure (message owned by caller). */
char *read_file(const char *path, size_t *len, size_t max, char **err);
/* When set, consulted first: the bytes of an embedded file, or NULL to read the disk. */
extern const char *(*read_file_hook)(const char *path, size_t *len);
int edit_distance(const char *a, const char *b);

/* diag.c — sources and diagnostics in the file:line:col style with a caret.
 * A Span is a byte range of one registered source file. */
typedef struct { int file; uint32_t off, len; int line, col; } Span;

#define DIAG_MAX_ERRORS 20
int  diag_add_source(const char *name, const char *text, size_t len); /* text must outlive use */
const char *diag_source_name(int file);
void diag_reset(void);                 /* forget sources and counts (REPL, fuzzer, tests) */
void diag_set_output(FILE *f);         /* default stderr */
void diag_error(Span sp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void diag_note(Span sp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void diag_plain_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern const char *diag_program;       /* names a message without a source: "ltlc" or a built program */
int  diag_error_count(void);
bool diag_too_many(void);              /* the cap is reached: stop reporting, stop work */
Span span_join(Span a, Span b);

#endif
