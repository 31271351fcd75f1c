/* lexer.re — the LTL lexer, turned into C by re2c (build output, never committed).
 * The buffer ends with a NUL sentinel; a NUL inside the input is an error, not the end. */
#include "front.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const dtype_names[DT_COUNT] = {
#define X(e, s, size) s,
    DTYPES(X)
#undef X
};
const int dtype_sizes[DT_COUNT] = {
#define X(e, s, size) size,
    DTYPES(X)
#undef X
};

static const char *const token_names[] = {
    [0] = "end of file",
#define X(k, s) [TK_##k] = s,
    TOKENS(X)
#undef X
};

const char *tok_name(int kind) {
    if (kind >= 0 && kind < (int)(sizeof token_names / sizeof *token_names) && token_names[kind])
        return token_names[kind];
    return "token";
}

void lex_init(Lexer *lx, int file, const char *buf, size_t len) {
    *lx = (Lexer){.buf = buf, .cur = buf, .lim = buf + len, .line_start = buf, .file = file, .line = 1};
}

static Span here(Lexer *lx, const char *from, const char *to) {
    return (Span){lx->file, (uint32_t)(from - lx->buf), (uint32_t)(to - from), lx->line,
                  (int)(from - lx->line_start) + 1};
}

/* Length of the valid UTF-8 sequence at p (0 if invalid). */
static int utf8_len(const unsigned char *p, const unsigned char *end, uint32_t *cp) {
    unsigned c = p[0];
    int n;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    else if (c >= 0xC2 && c <= 0xDF) { n = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (end - p < n) return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

static void bad_char(Lexer *lx) {
    const unsigned char *p = (const unsigned char *)lx->tok;
    uint32_t cp;
    int n = utf8_len(p, (const unsigned char *)lx->lim, &cp);
    if (*p == 0) {
        diag_error(here(lx, lx->tok, lx->tok + 1), "NUL byte in source");
        n = 1;
    } else if (n == 0) {
        diag_error(here(lx, lx->tok, lx->tok + 1), "invalid UTF-8 byte 0x%02X", *p);
        n = 1;
    } else if (cp < 0x20 || cp == 0x7F) { /* never print a control character raw */
        diag_error(here(lx, lx->tok, lx->tok + 1), "unexpected control character U+%04X", cp);
    } else if (cp < 0x80) {
        diag_error(here(lx, lx->tok, lx->tok + 1), "unexpected character '%c'%s", (char)cp,
                   cp == '\'' ? " (strings are in double quotes)" : "");
    } else {
        bool quote = cp == 0x2018 || cp == 0x2019 || cp == 0x201C || cp == 0x201D;
        diag_error(here(lx, lx->tok, lx->tok + n), "unexpected character U+%04X '%.*s'%s", cp, n,
                   lx->tok, quote ? " (strings are in straight double quotes)" : "");
    }
    lx->cur = lx->tok + n;
}

/* A comment runs to the line end; it must be valid UTF-8 without NUL. */
static void skip_comment(Lexer *lx) {
    const unsigned char *p = (const unsigned char *)lx->cur, *end = (const unsigned char *)lx->lim;
    while (p < end && *p != '\n') {
        uint32_t cp;
        int n = utf8_len(p, end, &cp);
        if (n == 0 || *p == 0) {
            diag_error(here(lx, (const char *)p, (const char *)p + 1),
                       *p ? "invalid UTF-8 byte 0x%02X in comment" : "NUL byte in comment", *p);
            n = 1;
        }
        p += n;
    }
    lx->cur = (const char *)p;
}

/* Decodes a string literal after its opening quote; the token text is the value. */
static void lex_string(Lexer *lx, Token *t) {
    StrBuf b = {0};
    const unsigned char *p = (const unsigned char *)lx->cur, *end = (const unsigned char *)lx->lim;
    sb_putn(&b, "", 0);
    for (;;) {
        if (p >= end || *p == '\n' || *p == '\r') {
            diag_error(here(lx, lx->tok, lx->tok + 1), "unterminated string");
            break;
        }
        if (*p == '"') { p++; break; }
        if (*p == '\\') {
            const unsigned char *esc = p++;
            if (p >= end || *p == '\n' || *p == '\r') continue; /* reported as unterminated */
            char c = (char)*p++;
            switch (c) {
            case 'n': sb_putc(&b, '\n'); break;
            case 't': sb_putc(&b, '\t'); break;
            case 'r': sb_putc(&b, '\r'); break;
            case '\\': sb_putc(&b, '\\'); break;
            case '"': sb_putc(&b, '"'); break;
            case '0': sb_putc(&b, '\0'); break;
            case 'u': {
                uint32_t v = 0;
                int digits = 0;
                if (p < end && *p == '{') {
                    for (p++; p < end && digits < 7 && strchr("0123456789abcdefABCDEF", *p) && *p; p++, digits++)
                        v = v * 16 + (uint32_t)(*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
                }
                if (digits == 0 || digits > 6 || p >= end || *p != '}' || v > 0x10FFFF ||
                    (v >= 0xD800 && v <= 0xDFFF)) {
                    while (p < end && *p != '}' && *p != '"' && *p != '\n' && *p != '\r') p++;
                    if (p < end && *p == '}') p++;
                    diag_error(here(lx, (const char *)esc, (const char *)p),
                               "bad \\u{...} escape: want 1 to 6 hex digits naming a Unicode scalar value");
                    break;
                }
                p++;
                char u[4];
                int n = v < 0x80 ? 1 : v < 0x800 ? 2 : v < 0x10000 ? 3 : 4;
                if (n == 1) u[0] = (char)v;
                else {
                    for (int i = n - 1; i > 0; i--) { u[i] = (char)(0x80 | (v & 0x3F)); v >>= 6; }
                    u[0] = (char)((n == 2 ? 0xC0 : n == 3 ? 0xE0 : 0xF0) | v);
                }
                sb_putn(&b, u, (size_t)n);
                break;
            }
            default: {
                /* the span covers the whole character; a NUL or bad byte is reported next */
                uint32_t cp;
                p = esc + 1 + (*(esc + 1) ? utf8_len(esc + 1, end, &cp) : 0);
                diag_error(here(lx, (const char *)esc, (const char *)(p > esc + 1 ? p : esc + 1)),
                           "unknown escape sequence; use \\n \\t \\r \\\\ \\\" \\0 or \\u{HEX}");
            }
            }
            continue;
        }
        uint32_t cp;
        int n = utf8_len(p, end, &cp);
        if (n == 0 || *p == 0) {
            diag_error(here(lx, (const char *)p, (const char *)p + 1),
                       *p ? "invalid UTF-8 byte 0x%02X in string" : "NUL byte in string", *p);
            n = 1;
        } else sb_putn(&b, (const char *)p, (size_t)n);
        p += n;
    }
    lx->cur = (const char *)p;
    t->text = b.s;
    t->ival = (int64_t)b.len; /* the value may hold NUL bytes (\0) */
}

/* Numbers: '_' may separate digits; it is dropped before conversion. */
static int lex_number(Lexer *lx, Token *t, bool is_float) {
    size_t n = (size_t)(lx->cur - lx->tok);
    char *digits = xmalloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (lx->tok[i] != '_') digits[k++] = lx->tok[i];
    digits[k] = 0;
    t->text = xstrndup(lx->tok, n);
    errno = 0;
    if (is_float) {
        t->fval = strtod(digits, NULL);
        if (isinf(t->fval)) diag_error(t->span, "number out of range");
    } else {
        unsigned long long v = strtoull(digits, NULL, 10);
        if (errno == ERANGE || v > INT64_MAX) diag_error(t->span, "integer literal too large (the limit is 2^63 - 1)");
        t->ival = (int64_t)v;
    }
    free(digits);
    return is_float ? TK_FLOAT : TK_INT;
}

static int bad_number(Lexer *lx, Token *t, const char *why) {
    int n = (int)(lx->cur - lx->tok);
    t->span = here(lx, lx->tok, lx->cur);
    t->text = xstrndup(lx->tok, (size_t)n);
    diag_error(t->span, "malformed number '%.*s': %s", n, lx->tok, why);
    return t->kind = TK_INT;
}

static int scan(Lexer *lx, Token *t) {
    for (;;) {
        if (diag_too_many()) lx->cur = lx->lim; /* a file of garbage: stop at the error cap */
        lx->tok = lx->cur;
        t->span = here(lx, lx->tok, lx->tok);
#define TOK(k) do { t->span = here(lx, lx->tok, lx->cur); return t->kind = TK_##k; } while (0)
#define KW(k) do { t->text = xstrndup(lx->tok, (size_t)(lx->cur - lx->tok)); TOK(k); } while (0)
        /*!re2c
        re2c:define:YYCTYPE = "unsigned char";
        re2c:define:YYCURSOR = "lx->cur";
        re2c:define:YYLIMIT = "lx->lim";
        re2c:define:YYMARKER = "lx->mark";
        re2c:yyfill:enable = 0;
        re2c:eof = 0;
        re2c:flags:tags = 0;

        digit = [0-9];
        int   = digit ("_"? digit)*;
        exp   = [eE] [+-]? int;
        name  = [A-Za-z_][A-Za-z0-9_]*;
        float = int "." int? exp? | "." int exp? | int exp;

        $  { t->span = here(lx, lx->cur, lx->cur); return t->kind = 0; }
        [ \t\r]+ { continue; }
        "\n" { lx->line++; lx->line_start = lx->cur; lx->nl = true; continue; }
        "#"  { skip_comment(lx); continue; }

        /* declaration keywords may fall back to names (parser.y's %fallback): keep their text */
        "use" { KW(USE); }  "as" { KW(AS); }  "model" { KW(MODEL); }  "data" { KW(DATA); }
        "trainer" { KW(TRAINER); }  "fn" { KW(FN); }  "param" { KW(PARAM); }
        "buffer" { KW(BUFFER); }  "return" { TOK(RETURN); }  "if" { TOK(IF); }
        "else" { TOK(ELSE); }  "for" { TOK(FOR); }  "in" { TOK(IN); }  "and" { TOK(AND); }
        "or" { TOK(OR); }  "not" { TOK(NOT); }  "true" { TOK(TRUE); }  "false" { TOK(FALSE); }
        "none" { TOK(NONE); }
        "f64"  { t->ival = DT_F64;  TOK(DTYPE); }  "f32" { t->ival = DT_F32; TOK(DTYPE); }
        "bf16" { t->ival = DT_BF16; TOK(DTYPE); }  "f16" { t->ival = DT_F16; TOK(DTYPE); }
        "i64"  { t->ival = DT_I64;  TOK(DTYPE); }  "i32" { t->ival = DT_I32; TOK(DTYPE); }
        "u8"   { t->ival = DT_U8;   TOK(DTYPE); }  "bool" { t->ival = DT_BOOL; TOK(DTYPE); }

        name { t->span = here(lx, lx->tok, lx->cur); t->text = xstrndup(lx->tok, (size_t)(lx->cur - lx->tok)); return t->kind = TK_NAME; }
        int  { t->span = here(lx, lx->tok, lx->cur); return t->kind = lex_number(lx, t, false); }
        float
             { t->span = here(lx, lx->tok, lx->cur); return t->kind = lex_number(lx, t, true); }
        /* a malformed number is still a number token, so the parser goes on without a cascade */
        (int | float) [A-Za-z] [A-Za-z0-9_]* { return bad_number(lx, t, "a letter cannot follow a number"); }
        (int | float) "_" [A-Za-z0-9_]*      { return bad_number(lx, t, "'_' goes only between two digits"); }
        /* a string with a bad escape, or unterminated, is still a string token (errors reported) */
        ["] { lex_string(lx, t); t->span = here(lx, lx->tok, lx->cur); return t->kind = TK_STRING; }

        "(" { TOK(LPAREN); }  ")" { TOK(RPAREN); }  "[" { TOK(LBRACKET); }  "]" { TOK(RBRACKET); }
        "{" { TOK(LBRACE); }  "}" { TOK(RBRACE); }  "," { TOK(COMMA); }  ":" { TOK(COLON); }
        ";" { TOK(SEMI); }  "..." { TOK(ELLIPSIS); }  "." { TOK(DOT); }  "->" { TOK(ARROW); }
        "==" { TOK(EQ); }  "!=" { TOK(NE); }  "<=" { TOK(LE); }  ">=" { TOK(GE); }
        "<" { TOK(LT); }  ">" { TOK(GT); }  "=" { TOK(ASSIGN); }  "+" { TOK(PLUS); }
        "-" { TOK(MINUS); }  "**" { TOK(POW); }  "*" { TOK(STAR); }  "/" { TOK(SLASH); }
        "%" { TOK(PERCENT); }  "@" { TOK(AT); }

        * { bad_char(lx); continue; }
        */
#undef TOK
#undef KW
    }
}

int lex_next(Lexer *lx, Token *t) {
    *t = (Token){0};
    int k = scan(lx, t);
    t->nl_before = lx->nl;
    lx->nl = false;
    return k;
}
