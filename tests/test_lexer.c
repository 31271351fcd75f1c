/* test_lexer.c — the lexer (grammar/lexer.re): every token kind of front.h's TOKENS table,
 * numbers, strings and their escapes, comments, positions, and every lexical error with its
 * exact message and place. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "front.h"

/* ---- helpers ---- */

/* Everything a test allocates is kept here and freed after it (the suite's .fini), so the
 * suite runs clean under LeakSanitizer. */
static void *kept[1 << 14];
static int nkept;
static void *keep(void *p) {
    cr_assert_lt(nkept, (int)(sizeof kept / sizeof *kept));
    return kept[nkept++] = p;
}
static void release(void) {
    while (nkept) free(kept[--nkept]);
    diag_reset();
}
TestSuite(lexer, .fini = release);

#define MAXTOK 64
typedef struct {
    Token t[MAXTOK];
    int n;             /* tokens before the end (the end token is t[n]) */
    char *diags;       /* everything diag printed */
    size_t diags_len;
} Lexed;

/* Lexes len bytes of src (NULs allowed) as file "t.ltl", capturing the diagnostics. */
static Lexed lex_n(const char *src, size_t len) {
    Lexed L = {0};
    char *buf = keep(malloc(len + 1)); /* the lexer wants a NUL after the input */
    memcpy(buf, src, len);
    buf[len] = 0;
    diag_reset();
    FILE *f = open_memstream(&L.diags, &L.diags_len);
    cr_assert(f);
    diag_set_output(f);
    Lexer lx;
    lex_init(&lx, diag_add_source("t.ltl", buf, len), buf, len);
    for (;;) {
        cr_assert_lt(L.n, MAXTOK, "too many tokens");
        int k = lex_next(&lx, &L.t[L.n]);
        cr_assert_eq(k, L.t[L.n].kind);
        if (L.t[L.n].text) keep(L.t[L.n].text);
        if (k == 0) break;
        L.n++;
    }
    fclose(f);
    keep(L.diags);
    diag_set_output(NULL);
    return L;
}
static Lexed lex(const char *src) { return lex_n(src, strlen(src)); }

/* The one token of src, with no diagnostics. */
static Token lex1(const char *src) {
    Lexed L = lex(src);
    cr_assert_str_eq(L.diags, "", "diagnostics for %s", src);
    cr_assert_eq(L.n, 1, "%s: %d tokens", src, L.n);
    return L.t[0];
}

/* The kinds of the tokens of src, without diagnostics, must be the listed ones (0-ended). */
static void kinds(const char *src, const int *want) {
    Lexed L = lex(src);
    cr_assert_str_eq(L.diags, "", "diagnostics for %s", src);
    int i = 0;
    for (; want[i]; i++) {
        cr_assert_lt(i, L.n, "%s: token %d missing", src, i);
        cr_assert_eq(L.t[i].kind, want[i], "%s: token %d is %s, not %s", src, i,
                     tok_name(L.t[i].kind), tok_name(want[i]));
    }
    cr_assert_eq(L.n, i, "%s: %d tokens, want %d", src, L.n, i);
}
#define KINDS(src, ...) kinds(src, (const int[]){__VA_ARGS__, 0})

/* ---- every token kind ---- */

static const struct { const char *text; int kind; } every[] = {
    {";", TK_SEMI}, {"hidden1", TK_NAME}, {"42", TK_INT}, {"0.5", TK_FLOAT}, {"\"s\"", TK_STRING},
    {"f32", TK_DTYPE}, {"use", TK_USE}, {"as", TK_AS}, {"model", TK_MODEL}, {"data", TK_DATA},
    {"trainer", TK_TRAINER}, {"fn", TK_FN}, {"param", TK_PARAM}, {"buffer", TK_BUFFER},
    {"return", TK_RETURN}, {"if", TK_IF}, {"else", TK_ELSE}, {"for", TK_FOR}, {"in", TK_IN},
    {"and", TK_AND}, {"or", TK_OR}, {"not", TK_NOT}, {"true", TK_TRUE}, {"false", TK_FALSE},
    {"none", TK_NONE}, {"(", TK_LPAREN}, {")", TK_RPAREN}, {"[", TK_LBRACKET},
    {"]", TK_RBRACKET}, {"{", TK_LBRACE}, {"}", TK_RBRACE}, {",", TK_COMMA}, {":", TK_COLON},
    {".", TK_DOT}, {"...", TK_ELLIPSIS}, {"->", TK_ARROW}, {"=", TK_ASSIGN}, {"==", TK_EQ},
    {"!=", TK_NE}, {"<", TK_LT}, {"<=", TK_LE}, {">", TK_GT}, {">=", TK_GE}, {"+", TK_PLUS},
    {"-", TK_MINUS}, {"*", TK_STAR}, {"/", TK_SLASH}, {"%", TK_PERCENT}, {"@", TK_AT},
    {"**", TK_POW},
};

Test(lexer, every_token_kind) {
    for (size_t i = 0; i < sizeof every / sizeof *every; i++) {
        Token t = lex1(every[i].text);
        cr_assert_eq(t.kind, every[i].kind, "'%s' lexed as %s", every[i].text, tok_name(t.kind));
        cr_assert_eq(t.span.off, 0);
        cr_assert_eq(t.span.len, strlen(every[i].text), "span of '%s'", every[i].text);
        cr_assert_eq(t.span.line, 1);
        cr_assert_eq(t.span.col, 1);
    }
}

/* The table above covers every entry of front.h's TOKENS table, and tok_name is that table. */
Test(lexer, tokens_table_is_covered) {
    static const struct { int kind; const char *name; } table[] = {
#define X(k, s) {TK_##k, s},
        TOKENS(X)
#undef X
    };
    size_t n = sizeof table / sizeof *table;
    cr_assert_eq(n, sizeof every / sizeof *every);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < sizeof every / sizeof *every; j++) found |= every[j].kind == table[i].kind;
        cr_assert(found, "no test for token %s", table[i].name);
        cr_assert_str_eq(tok_name(table[i].kind), table[i].name);
    }
    cr_assert_str_eq(tok_name(0), "end of file");
    cr_assert_str_eq(tok_name(-1), "token");
    cr_assert_str_eq(tok_name(100000), "token");
}

Test(lexer, dtypes) {
    static const struct { const char *s; DType dt; int size; } dts[] = {
        {"f64", DT_F64, 8}, {"f32", DT_F32, 4}, {"bf16", DT_BF16, 2}, {"f16", DT_F16, 2},
        {"i64", DT_I64, 8}, {"i32", DT_I32, 4}, {"u8", DT_U8, 1},   {"bool", DT_BOOL, 1},
    };
    cr_assert_eq(sizeof dts / sizeof *dts, DT_COUNT);
    for (size_t i = 0; i < DT_COUNT; i++) {
        Token t = lex1(dts[i].s);
        cr_assert_eq(t.kind, TK_DTYPE, "%s", dts[i].s);
        cr_assert_eq(t.ival, dts[i].dt, "%s", dts[i].s);
        cr_assert_str_eq(dtype_names[t.ival], dts[i].s);
        cr_assert_eq(dtype_sizes[t.ival], dts[i].size);
    }
}

/* Declaration keywords keep their spelling: the parser may use them as names. */
Test(lexer, keyword_text) {
    const char *kw[] = {"use", "as", "model", "data", "trainer", "fn", "param", "buffer"};
    for (size_t i = 0; i < sizeof kw / sizeof *kw; i++) {
        Token t = lex1(kw[i]);
        cr_assert_not_null(t.text, "%s", kw[i]);
        cr_assert_str_eq(t.text, kw[i]);
    }
}

Test(lexer, names_that_start_like_keywords) {
    const char *names[] = {"user", "as_", "models", "data2", "trainers", "fn_", "params",
                           "iff", "elsewhere", "format", "int", "into", "android", "order",
                           "nothing", "truex", "False", "None", "f32x", "f3", "bf", "bool_",
                           "u16", "i8", "_", "_x", "B", "x1_2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        Token t = lex1(names[i]);
        cr_assert_eq(t.kind, TK_NAME, "'%s' lexed as %s", names[i], tok_name(t.kind));
        cr_assert_str_eq(t.text, names[i]);
    }
}

/* ---- longest match ---- */

Test(lexer, longest_match) {
    KINDS("**", TK_POW);
    KINDS("* *", TK_STAR, TK_STAR);
    KINDS("***", TK_POW, TK_STAR);
    KINDS("...", TK_ELLIPSIS);
    KINDS("..", TK_DOT, TK_DOT);
    KINDS("....", TK_ELLIPSIS, TK_DOT);
    KINDS("->", TK_ARROW);
    KINDS("- >", TK_MINUS, TK_GT);
    KINDS("-->", TK_MINUS, TK_ARROW);
    KINDS("<=", TK_LE);
    KINDS("<==", TK_LE, TK_ASSIGN);
    KINDS("===", TK_EQ, TK_ASSIGN);
    KINDS("=>", TK_ASSIGN, TK_GT);
    KINDS(">==", TK_GE, TK_ASSIGN);
    KINDS("!==", TK_NE, TK_ASSIGN);
    KINDS("a.b", TK_NAME, TK_DOT, TK_NAME);
    KINDS("x[...,-1]", TK_NAME, TK_LBRACKET, TK_ELLIPSIS, TK_COMMA, TK_MINUS, TK_INT, TK_RBRACKET);
    KINDS("2**-1", TK_INT, TK_POW, TK_MINUS, TK_INT);
    KINDS("1.5.5", TK_FLOAT, TK_FLOAT);
    KINDS("..5", TK_DOT, TK_FLOAT);
    KINDS("...5", TK_ELLIPSIS, TK_INT);
    KINDS("x.T", TK_NAME, TK_DOT, TK_NAME);
    KINDS("f32[B,784]", TK_DTYPE, TK_LBRACKET, TK_NAME, TK_COMMA, TK_INT, TK_RBRACKET);
}

/* ---- numbers ---- */

static void check_int(const char *s, int64_t v) {
    Token t = lex1(s);
    cr_assert_eq(t.kind, TK_INT, "%s", s);
    cr_assert_eq(t.ival, v, "%s: %lld", s, (long long)t.ival);
    cr_assert_str_eq(t.text, s);
}

static void check_float(const char *s, double v) {
    Token t = lex1(s);
    cr_assert_eq(t.kind, TK_FLOAT, "%s", s);
    cr_assert_eq(t.fval, v, "%s: %.17g", s, t.fval);
    cr_assert_str_eq(t.text, s);
}

Test(lexer, integers) {
    check_int("0", 0);
    check_int("7", 7);
    check_int("60_000", 60000);
    check_int("1_2_3", 123);
    check_int("007", 7);
    check_int("9223372036854775807", INT64_MAX);
    check_int("9_223_372_036_854_775_807", INT64_MAX);
}

Test(lexer, floats) {
    check_float("1e-3", 1e-3);
    check_float(".25", 0.25);
    check_float("2.", 2.0);
    check_float("1_000.5e+2", 100050.0);
    check_float("0.5", 0.5);
    check_float("1E3", 1000.0);
    check_float("1.e5", 1e5);
    check_float("2.5e-1_0", 2.5e-10);
    check_float(".5e2", 50.0);
    check_float("1e308", 1e308);
}

/* A number with an error is still one number token, so the parser does not cascade. */
static void check_number_error(const char *src, const char *want) {
    Lexed L = lex(src);
    cr_assert_eq(L.n, 1, "%s: %d tokens", src, L.n);
    cr_assert(L.t[0].kind == TK_INT || L.t[0].kind == TK_FLOAT);
    cr_assert_eq(L.t[0].span.len, strlen(src));
    cr_assert_str_eq(L.diags, want);
}

Test(lexer, integer_overflow) {
    check_number_error("9223372036854775808",
                       "t.ltl:1:1: error: integer literal too large (the limit is 2^63 - 1)\n"
                       "    1 | 9223372036854775808\n"
                       "      | ^~~~~~~~~~~~~~~~~~~\n");
    check_number_error("18446744073709551616",
                       "t.ltl:1:1: error: integer literal too large (the limit is 2^63 - 1)\n"
                       "    1 | 18446744073709551616\n"
                       "      | ^~~~~~~~~~~~~~~~~~~~\n");
    check_number_error("1e999", "t.ltl:1:1: error: number out of range\n"
                                "    1 | 1e999\n"
                                "      | ^~~~~\n");
}

Test(lexer, malformed_numbers) {
    check_number_error("2_", "t.ltl:1:1: error: malformed number '2_': '_' goes only between two digits\n"
                             "    1 | 2_\n"
                             "      | ^~\n");
    check_number_error("3x", "t.ltl:1:1: error: malformed number '3x': a letter cannot follow a number\n"
                             "    1 | 3x\n"
                             "      | ^~\n");
    check_number_error("1__0", "t.ltl:1:1: error: malformed number '1__0': '_' goes only between two digits\n"
                               "    1 | 1__0\n"
                               "      | ^~~~\n");
    check_number_error("0x1F", "t.ltl:1:1: error: malformed number '0x1F': a letter cannot follow a number\n"
                               "    1 | 0x1F\n"
                               "      | ^~~~\n");
    check_number_error("1.5_", "t.ltl:1:1: error: malformed number '1.5_': '_' goes only between two digits\n"
                               "    1 | 1.5_\n"
                               "      | ^~~~\n");
    check_number_error("1e5y", "t.ltl:1:1: error: malformed number '1e5y': a letter cannot follow a number\n"
                               "    1 | 1e5y\n"
                               "      | ^~~~\n");
    check_number_error("2.T", "t.ltl:1:1: error: malformed number '2.T': a letter cannot follow a number\n"
                              "    1 | 2.T\n"
                              "      | ^~~\n");
    check_number_error("1e", "t.ltl:1:1: error: malformed number '1e': a letter cannot follow a number\n"
                             "    1 | 1e\n"
                             "      | ^~\n");
}

/* ---- strings ---- */

static void check_string(const char *src, const char *value, size_t len) {
    Token t = lex1(src);
    cr_assert_eq(t.kind, TK_STRING, "%s", src);
    cr_assert_eq(t.ival, (int64_t)len, "%s: length %lld", src, (long long)t.ival);
    cr_assert_eq(memcmp(t.text, value, len + 1), 0, "%s decoded wrongly", src);
    cr_assert_eq(t.span.len, strlen(src));
}

Test(lexer, strings) {
    check_string("\"\"", "", 0);
    check_string("\"val_loss\"", "val_loss", 8);
    check_string("\"{epoch}-{val_loss:.2f}\"", "{epoch}-{val_loss:.2f}", 22);
    check_string("\"a # not a comment\"", "a # not a comment", 17);
    check_string("\"tab\there\"", "tab\there", 8); /* a raw tab is allowed */
    check_string("\"h\xC3\xA9 \xF0\x9F\x98\x80\"", "h\xC3\xA9 \xF0\x9F\x98\x80", 8);
}

Test(lexer, escapes) {
    check_string("\"\\n\\t\\r\\\\\\\"\"", "\n\t\r\\\"", 5);
    check_string("\"a\\0b\"", "a\0b", 3);
    check_string("\"\\u{41}\"", "A", 1);
    check_string("\"\\u{e9}\"", "\xC3\xA9", 2);
    check_string("\"\\u{20AC}\"", "\xE2\x82\xAC", 3);
    check_string("\"\\u{1F600}\"", "\xF0\x9F\x98\x80", 4);
    check_string("\"\\u{10FFFF}\"", "\xF4\x8F\xBF\xBF", 4);
    check_string("\"\\u{00004a}\"", "J", 1);
    check_string("\"\\u{0}\"", "\0", 1);
    check_string("\"\\u{7F}\\u{80}\\u{7FF}\\u{800}\\u{FFFF}\\u{10000}\"",
                 "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF\xF0\x90\x80\x80", 15);
}

/* The one diagnostic (exact text) for src; the rest of src must lex to `ntok` tokens. */
static void check_error(const char *src, size_t len, int ntok, const char *want) {
    Lexed L = lex_n(src, len);
    cr_assert_str_eq(L.diags, want, "for %s, got:\n%s", src, L.diags);
    cr_assert_eq(L.n, ntok, "%s: %d tokens", src, L.n);
}
#define ERR(src, ntok, want) check_error(src, sizeof src - 1, ntok, want)

Test(lexer, unterminated_string) {
    ERR("x = \"abc", 3, "t.ltl:1:5: error: unterminated string\n"
                         "    1 | x = \"abc\n"
                         "      |     ^\n");
    ERR("x = \"ab\ncd\"", 5, "t.ltl:1:5: error: unterminated string\n"
                               "    1 | x = \"ab\n"
                               "      |     ^\n"
                               "t.ltl:2:3: error: unterminated string\n"
                               "    2 | cd\"\n"
                               "      |   ^\n");
    ERR("\"a\\", 1, "t.ltl:1:1: error: unterminated string\n"
                    "    1 | \"a\\\n"
                    "      | ^\n");
    ERR("\"a\\\nb", 2, "t.ltl:1:1: error: unterminated string\n"
                       "    1 | \"a\\\n"
                       "      | ^\n");
    ERR("\"a\r\n", 1, "t.ltl:1:1: error: unterminated string\n"
                      "    1 | \"a\n"
                      "      | ^\n");
}

Test(lexer, unknown_escape) {
    ERR("s = \"a\\qb\"", 3, "t.ltl:1:7: error: unknown escape sequence; use \\n \\t \\r \\\\ \\\" \\0 or \\u{HEX}\n"
                           "    1 | s = \"a\\qb\"\n"
                           "      |       ^~\n");
    ERR("\"\\x41\"", 1, "t.ltl:1:2: error: unknown escape sequence; use \\n \\t \\r \\\\ \\\" \\0 or \\u{HEX}\n"
                        "    1 | \"\\x41\"\n"
                        "      |  ^~\n");
    ERR("\"\\\xC3\xA9\"", 1, "t.ltl:1:2: error: unknown escape sequence; use \\n \\t \\r \\\\ \\\" \\0 or \\u{HEX}\n"
                               "    1 | \"\\\xC3\xA9\"\n"
                               "      |  ^~\n");
}

#define BAD_U "error: bad \\u{...} escape: want 1 to 6 hex digits naming a Unicode scalar value\n"

Test(lexer, bad_unicode_escapes) {
    ERR("\"\\u{}\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{}\"\n      |  ^~~~\n");
    ERR("\"\\u41\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u41\"\n      |  ^~~~\n");
    ERR("\"\\u{110000}\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{110000}\"\n      |  ^~~~~~~~~~\n");
    ERR("\"\\u{D800}\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{D800}\"\n      |  ^~~~~~~~\n");
    ERR("\"\\u{DFFF}\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{DFFF}\"\n      |  ^~~~~~~~\n");
    ERR("\"\\u{0000041}\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{0000041}\"\n      |  ^~~~~~~~~~~\n");
    ERR("\"\\u{4G}\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{4G}\"\n      |  ^~~~~~\n");
    ERR("\"\\u{41\"", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{41\"\n      |  ^~~~~\n");
    ERR("\"\\u{41", 1, "t.ltl:1:2: " BAD_U "    1 | \"\\u{41\n      |  ^~~~~\n"
                       "t.ltl:1:1: error: unterminated string\n    1 | \"\\u{41\n      | ^\n");
}

/* A string with errors is still a string token: the parser reports nothing more. */
Test(lexer, bad_string_is_a_token) {
    Lexed L = lex("x = \"a\\qb\" + 1");
    cr_assert_eq(L.n, 5);
    cr_assert_eq(L.t[2].kind, TK_STRING);
    cr_assert_eq(L.t[3].kind, TK_PLUS);
}

/* ---- comments, positions, line breaks ---- */

static void no_tokens(const char *src, size_t len) {
    Lexed L = lex_n(src, len);
    cr_assert_str_eq(L.diags, "");
    cr_assert_eq(L.n, 0, "%d tokens", L.n);
    cr_assert_eq(L.t[0].span.off, len, "the end is at the end");
}

Test(lexer, comments_and_blanks) {
    no_tokens("", 0);
    no_tokens("# only a comment", 16);
    no_tokens("# one\n# two\n\n   \t\r\n# three\n", 27);
    no_tokens("#\xC3\xA9 \xF0\x9F\x98\x80 UTF-8 is fine in comments", 34);
    KINDS("x # a comment \"not a string\" 1 + (", TK_NAME);
    KINDS("x # comment\ny", TK_NAME, TK_NAME);
    KINDS("a#b\nc", TK_NAME, TK_NAME);
    KINDS("\"#\"#\"", TK_STRING);
}

Test(lexer, positions) {
    Lexed L = lex("use nn\n\n  model M(a = 1) {\n\tx = \"s\" # c\n}");
    cr_assert_str_eq(L.diags, "");
    struct { int kind, line, col; unsigned off, len; bool nl; } want[] = {
        {TK_USE, 1, 1, 0, 3, false},    {TK_NAME, 1, 5, 4, 2, false},
        {TK_MODEL, 3, 3, 10, 5, true},  {TK_NAME, 3, 9, 16, 1, false},
        {TK_LPAREN, 3, 10, 17, 1, false}, {TK_NAME, 3, 11, 18, 1, false},
        {TK_ASSIGN, 3, 13, 20, 1, false}, {TK_INT, 3, 15, 22, 1, false},
        {TK_RPAREN, 3, 16, 23, 1, false}, {TK_LBRACE, 3, 18, 25, 1, false},
        {TK_NAME, 4, 2, 28, 1, true},   {TK_ASSIGN, 4, 4, 30, 1, false},
        {TK_STRING, 4, 6, 32, 3, false}, {TK_RBRACE, 5, 1, 40, 1, true},
    };
    int n = sizeof want / sizeof *want;
    cr_assert_eq(L.n, n);
    for (int i = 0; i < n; i++) {
        Token *t = &L.t[i];
        cr_assert_eq(t->kind, want[i].kind, "token %d", i);
        cr_assert_eq(t->span.line, want[i].line, "token %d line %d", i, t->span.line);
        cr_assert_eq(t->span.col, want[i].col, "token %d col %d", i, t->span.col);
        cr_assert_eq(t->span.off, want[i].off, "token %d off %u", i, t->span.off);
        cr_assert_eq(t->span.len, want[i].len, "token %d len %u", i, t->span.len);
        cr_assert_eq(t->nl_before, want[i].nl, "token %d nl_before", i);
        cr_assert_eq(t->span.file, L.t[0].span.file);
        cr_assert(!t->auto_semi);
    }
    /* the end token: on the last line, after the last byte, after no line break */
    cr_assert_eq(L.t[n].kind, 0);
    cr_assert_eq(L.t[n].span.off, 41);
    cr_assert_eq(L.t[n].span.line, 5);
    cr_assert(!L.t[n].nl_before);
}

Test(lexer, nl_before) {
    Lexed L = lex("a\nb # c\n# d\n\nc d\r\ne\n");
    cr_assert_eq(L.n, 5);
    bool want[] = {false, true, true, false, true};
    for (int i = 0; i < 5; i++) cr_assert_eq(L.t[i].nl_before, want[i], "token %d", i);
    cr_assert(L.t[5].nl_before, "the end follows a line break");
    cr_assert_eq(L.t[4].span.line, 6);
}

Test(lexer, columns_count_bytes) {
    /* columns are byte offsets on the line (+1); the caret counts characters */
    Lexed L = lex("s = \"\xC3\xA9\" $");
    cr_assert_eq(L.n, 3);
    cr_assert_str_eq(L.diags, "t.ltl:1:10: error: unexpected character '$'\n"
                              "    1 | s = \"\xC3\xA9\" $\n"
                              "      |         ^\n");
}

/* ---- every other lexical error ---- */

/* The source line of a diagnostic shows what cannot be printed safely as U+FFFD. */
#define R "\xEF\xBF\xBD"

Test(lexer, invalid_utf8_in_code) {
    ERR("x = \xFF", 2, "t.ltl:1:5: error: invalid UTF-8 byte 0xFF\n"
                       "    1 | x = " R "\n"
                       "      |     ^\n");
    ERR("\xC0\x80", 0, "t.ltl:1:1: error: invalid UTF-8 byte 0xC0\n"
                       "    1 | " R R "\n"
                       "      | ^\n"
                       "t.ltl:1:2: error: invalid UTF-8 byte 0x80\n"
                       "    1 | " R R "\n"
                       "      |  ^\n");
    ERR("a \xE2\x82", 1, "t.ltl:1:3: error: invalid UTF-8 byte 0xE2\n"
                         "    1 | a " R R "\n"
                         "      |   ^\n"
                         "t.ltl:1:4: error: invalid UTF-8 byte 0x82\n"
                         "    1 | a " R R "\n"
                         "      |    ^\n");
}

Test(lexer, invalid_utf8_in_string) {
    /* a surrogate, then a code point above U+10FFFF: each byte is reported */
    ERR("\"\xED\xA0\x80\"", 1, "t.ltl:1:2: error: invalid UTF-8 byte 0xED in string\n"
                                "    1 | \"" R R R "\"\n"
                                "      |  ^\n"
                                "t.ltl:1:3: error: invalid UTF-8 byte 0xA0 in string\n"
                                "    1 | \"" R R R "\"\n"
                                "      |   ^\n"
                                "t.ltl:1:4: error: invalid UTF-8 byte 0x80 in string\n"
                                "    1 | \"" R R R "\"\n"
                                "      |    ^\n");
    ERR("\"\xF4\x90\x80\x80\"", 1, "t.ltl:1:2: error: invalid UTF-8 byte 0xF4 in string\n"
                                    "    1 | \"" R R R R "\"\n"
                                    "      |  ^\n"
                                    "t.ltl:1:3: error: invalid UTF-8 byte 0x90 in string\n"
                                    "    1 | \"" R R R R "\"\n"
                                    "      |   ^\n"
                                    "t.ltl:1:4: error: invalid UTF-8 byte 0x80 in string\n"
                                    "    1 | \"" R R R R "\"\n"
                                    "      |    ^\n"
                                    "t.ltl:1:5: error: invalid UTF-8 byte 0x80 in string\n"
                                    "    1 | \"" R R R R "\"\n"
                                    "      |     ^\n");
    /* the escape is reported, then the bad byte after the backslash */
    ERR("\"\\\xFF\"", 1, "t.ltl:1:2: error: unknown escape sequence; use \\n \\t \\r \\\\ \\\" \\0 or \\u{HEX}\n"
                         "    1 | \"\\" R "\"\n"
                         "      |  ^\n"
                         "t.ltl:1:3: error: invalid UTF-8 byte 0xFF in string\n"
                         "    1 | \"\\" R "\"\n"
                         "      |   ^\n");
}

Test(lexer, invalid_utf8_in_comment) {
    ERR("x # caf\xE9\ny", 2, "t.ltl:1:8: error: invalid UTF-8 byte 0xE9 in comment\n"
                            "    1 | x # caf" R "\n"
                            "      |        ^\n");
}

Test(lexer, nul_bytes) {
    ERR("x\0y", 2, "t.ltl:1:2: error: NUL byte in source\n"
                   "    1 | x" R "y\n"
                   "      |  ^\n");
    ERR("\"a\0b\"", 1, "t.ltl:1:3: error: NUL byte in string\n"
                       "    1 | \"a" R "b\"\n"
                       "      |   ^\n");
    ERR("# a\0b\nc", 1, "t.ltl:1:4: error: NUL byte in comment\n"
                        "    1 | # a" R "b\n"
                        "      |    ^\n");
    ERR("\0", 0, "t.ltl:1:1: error: NUL byte in source\n"
                 "    1 | " R "\n"
                 "      | ^\n");
}

Test(lexer, unexpected_ascii) {
    const char *bad = "!?$&|^~`'\\";
    for (const char *c = bad; *c; c++) {
        char src[8], want[256];
        snprintf(src, sizeof src, "a %c b", *c);
        snprintf(want, sizeof want, "t.ltl:1:3: error: unexpected character '%c'%s\n"
                                    "    1 | %s\n"
                                    "      |   ^\n", *c,
                 *c == '\'' ? " (strings are in double quotes)" : "", src);
        Lexed L = lex(src);
        cr_assert_str_eq(L.diags, want);
        cr_assert_eq(L.n, 2, "the character is skipped");
    }
    ERR("a\x01" "b", 2, "t.ltl:1:2: error: unexpected control character U+0001\n"
                        "    1 | a" R "b\n"
                        "      |  ^\n");
    ERR("\x1B[1", 2, "t.ltl:1:1: error: unexpected control character U+001B\n"
                     "    1 | " R "[1\n"
                       "      | ^\n");
    ERR("\x7F", 0, "t.ltl:1:1: error: unexpected control character U+007F\n"
                   "    1 | " R "\n"
                   "      | ^\n");
}

Test(lexer, unexpected_non_ascii) {
    ERR("x = \xC3\xA9", 2, "t.ltl:1:5: error: unexpected character U+00E9 '\xC3\xA9'\n"
                           "    1 | x = \xC3\xA9\n"
                           "      |     ^\n");
    ERR("\xE2\x80\x9Cx\xE2\x80\x9D", 1, "t.ltl:1:1: error: unexpected character U+201C '\xE2\x80\x9C' (strings are in straight double quotes)\n"
                                        "    1 | \xE2\x80\x9Cx\xE2\x80\x9D\n"
                                        "      | ^\n"
                                        "t.ltl:1:5: error: unexpected character U+201D '\xE2\x80\x9D' (strings are in straight double quotes)\n"
                                        "    1 | \xE2\x80\x9Cx\xE2\x80\x9D\n"
                                        "      |   ^\n");
    ERR("\xF0\x9F\x98\x80", 0, "t.ltl:1:1: error: unexpected character U+1F600 '\xF0\x9F\x98\x80'\n"
                               "    1 | \xF0\x9F\x98\x80\n"
                               "      | ^\n");
}

/* Lexing goes on after each error, so one pass reports them all. */
Test(lexer, errors_do_not_stop_the_lexer) {
    Lexed L = lex("a $ b \xFF c \"\\q\" d 3x e");
    cr_assert_eq(L.n, 7);
    int lines = 0;
    for (const char *p = L.diags; (p = strstr(p, ": error: ")); p++) lines++;
    cr_assert_eq(lines, 4, "%s", L.diags);
}
