/* parse.c — drives the Lemon parser: feeds it the lexer's tokens, inserts the line-end ';',
 * matches brackets (bounding their depth), and turns syntax errors into messages that say
 * what was expected. Also the helpers the grammar's actions build nodes with. */
#include "front.h"
#include <stdlib.h>
#include <string.h>

void *ltlParseAlloc(void *(*alloc)(size_t), ParseCtx *px);
void ltlParseFree(void *p, void (*dealloc)(void *));
void ltlParse(void *p, int kind, Token t);
void ltlParseResync(void *p);

/* ---- node helpers for the grammar's actions ---- */

Node *p_leaf(ParseCtx *px, NodeKind k, const Token *t) {
    Node *n = ast_node(px->ast, k, t->span);
    switch (k) {
    case N_INT: n->ival = t->ival; n->name = t->text; break;
    case N_FLOAT: n->fval = t->fval; n->name = t->text; break;
    case N_DTYPE: n->op = (int)t->ival; break;
    case N_STRING: n->ival = t->ival; n->name = t->text; break; /* ival: length, NULs included */
    default: n->name = t->text;
    }
    return n;
}

Node *p_node(ParseCtx *px, NodeKind k, Span sp, int nkids, ...) {
    Node *n = ast_node(px->ast, k, sp);
    va_list ap;
    va_start(ap, nkids);
    for (int i = 0; i < nkids; i++) ast_add(px->ast, n, va_arg(ap, Node *));
    va_end(ap);
    return n;
}

Node *p_seq(ParseCtx *px, Span sp) { return ast_node(px->ast, N_SEQ, sp); }

/* Appends a list element; NULL (an empty statement, an error) is skipped. */
Node *p_append(ParseCtx *px, Node *seq, Node *kid) {
    if (!kid) return seq;
    seq->span = seq->span.line ? span_join(seq->span, kid->span) : kid->span;
    ast_add(px->ast, seq, kid);
    return seq;
}

/* A tuple of `first, rest...` (rest is a SEQ, reused). */
Node *p_tuple(ParseCtx *px, Node *first, Node *rest) {
    ast_add(px->ast, rest, NULL);
    memmove(rest->kids + 1, rest->kids, sizeof *rest->kids * (size_t)(rest->nkids - 1));
    rest->kids[0] = first;
    if (first->depth >= rest->depth) rest->depth = first->depth + 1;
    rest->kind = N_TUPLE;
    rest->span = span_join(first->span, rest->span);
    return rest;
}

/* An argument or parameter: `e: type = value`. Calls and parameter lists share the grammar
 * rule; p_call and p_params reject what does not belong to them. When e is not a name, the
 * error is reported here and the node has no name: the others skip it. */
Node *p_arg(ParseCtx *px, Node *e, Node *type, Node *value) {
    Span sp = span_join(e->span, (value ? value : type)->span);
    if (e->kind != N_NAME)
        diag_error(e->span, type ? "expected a parameter name before ':'"
                                 : "expected a name before '=' (keyword arguments are name = value)");
    Node *n = type ? p_node(px, N_PARAM, sp, 2, type, value) : p_node(px, N_KWARG, sp, 1, value);
    n->name = e->kind == N_NAME ? e->name : NULL;
    return n;
}

/* For names[0..n) (NULL: none), again[i] is set when names[i] is an earlier one's: a sort,
 * so that a call with 100 000 keyword arguments takes no quadratic time. */
typedef struct { const char *name; int i; } NameAt;
static int by_name(const void *a, const void *b) {
    const NameAt *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}
static bool *repeated(const char **names, int n) {
    NameAt *v = xmalloc(sizeof *v * (size_t)(n ? n : 1));
    bool *again = xcalloc((size_t)(n ? n : 1), sizeof *again);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (names[i]) v[m++] = (NameAt){names[i], i};
    qsort(v, (size_t)m, sizeof *v, by_name);
    for (int k = 1; k < m; k++)
        if (strcmp(v[k].name, v[k - 1].name) == 0) again[v[k].i] = true;
    free(v);
    return again;
}

Node *p_call(ParseCtx *px, Node *callee, Node *args, const Token *close) {
    Node *c = p_node(px, N_CALL, span_join(callee->span, close->span), 1, callee);
    bool keywords = false;
    const char **kw = xmalloc(sizeof *kw * (size_t)(args->nkids ? args->nkids : 1));
    for (int i = 0; i < args->nkids; i++) kw[i] = args->kids[i]->kind == N_KWARG ? args->kids[i]->name : NULL;
    bool *again = repeated(kw, args->nkids);
    for (int i = 0; i < args->nkids; i++) {
        Node *a = args->kids[i];
        if ((a->kind == N_PARAM || a->kind == N_KWARG) && !a->name) continue; /* reported */
        if (a->kind == N_PARAM) {
            diag_error(a->span, "a type annotation belongs in a parameter list, not in a call");
            continue;
        }
        if (a->kind == N_KWARG) {
            if (again[i]) diag_error(a->span, "keyword argument '%s' given twice", a->name);
            keywords = true;
        } else if (keywords) {
            diag_error(a->span, "positional argument after keyword arguments");
        }
        ast_add(px->ast, c, a);
    }
    free(again);
    free(kw);
    return c;
}

Node *p_params(ParseCtx *px, Node *args) {
    Node *seq = p_seq(px, args->span);
    bool defaults = false;
    const char **names = xmalloc(sizeof *names * (size_t)(args->nkids ? args->nkids : 1));
    for (int i = 0; i < args->nkids; i++) {
        Node *a = args->kids[i];
        bool named = a->kind == N_NAME || a->kind == N_KWARG || a->kind == N_PARAM;
        names[i] = named ? a->name : NULL;
    }
    bool *again = repeated(names, args->nkids);
    for (int i = 0; i < args->nkids; i++) {
        Node *a = args->kids[i], *p;
        if ((a->kind == N_PARAM || a->kind == N_KWARG) && !a->name) continue; /* reported */
        if (a->kind == N_NAME) p = p_node(px, N_PARAM, a->span, 2, NULL, NULL);
        else if (a->kind == N_KWARG) p = p_node(px, N_PARAM, a->span, 2, NULL, a->kids[0]);
        else if (a->kind == N_PARAM) p = a;
        else {
            diag_error(a->span, "expected a parameter name");
            continue;
        }
        p->name = a->name;
        if (again[i]) diag_error(p->span, "parameter '%s' declared twice", p->name);
        if (p->kids[1]) defaults = true;
        else if (defaults)
            diag_error(p->span, "parameter '%s' needs a default: it follows one that has a default", p->name);
        ast_add(px->ast, seq, p);
    }
    free(again);
    free(names);
    return seq;
}

Node *p_func(ParseCtx *px, NodeKind k, const Token *kw, const Token *name, Node *args, Node *ret,
             Node *body) {
    Node *f = p_node(px, k, span_join(kw ? kw->span : name->span, body->span), 3,
                     p_params(px, args), ret, body);
    f->name = name->text;
    return f;
}

/* ---- syntax errors ---- */

static int closer_of(int open) {
    return open == TK_LPAREN ? TK_RPAREN : open == TK_LBRACKET ? TK_RBRACKET : TK_RBRACE;
}

static char *describe(const Token *t) {
    if (t->kind == 0) return xstrdup("end of file");
    if (t->auto_semi) return xstrdup("end of line");
    if (t->kind == TK_NAME) return xasprintf("name '%s'", t->text);
    if (t->kind == TK_INT || t->kind == TK_FLOAT) return xasprintf("number '%s'", t->text);
    if (t->kind == TK_DTYPE) return xasprintf("dtype '%s'", dtype_names[t->ival]);
    return xstrdup(tok_name(t->kind));
}

static bool starts_expr(int k) {
    switch (k) {
    case TK_NAME: case TK_INT: case TK_FLOAT: case TK_STRING: case TK_DTYPE: case TK_TRUE:
    case TK_FALSE: case TK_NONE: case TK_ELLIPSIS: case TK_LPAREN: case TK_LBRACKET:
    case TK_LBRACE: case TK_MINUS: case TK_PLUS: case TK_NOT:
        return true;
    }
    return false;
}

static bool is_fallback_keyword(int k) {
    return k == TK_MODEL || k == TK_DATA || k == TK_TRAINER || k == TK_FN || k == TK_PARAM ||
           k == TK_BUFFER || k == TK_USE || k == TK_AS;
}

/* On the bracket stack, a '{' that opens a block (not a dict) has ival 1: it follows what
 * ends a name, a type or a head (`model M {`, `f(x) {`, `if a {`, `else {`, `trainer {`),
 * where a dict cannot start. */
static bool is_block(const Token *open) { return open->kind == TK_LBRACE && open->ival; }
static bool opens_block(int prev) {
    return prev == TK_NAME || prev == TK_RPAREN || prev == TK_RBRACKET || prev == TK_RBRACE ||
           prev == TK_ELSE || prev == TK_TRAINER || prev == TK_DTYPE || prev == TK_INT ||
           prev == TK_FLOAT || prev == TK_STRING || prev == TK_TRUE || prev == TK_FALSE ||
           prev == TK_NONE || prev == TK_ELLIPSIS || is_fallback_keyword(prev);
}

/* How many blocks are open: the depth of the statement being read. */
static int brace_depth(const ParseCtx *px) {
    int n = 0;
    for (int i = 0; i < px->nopen; i++) n += is_block(&px->open[i]);
    return n;
}

/* After an error, stay quiet until the statement at this depth ends (see feed). */
static void hush(ParseCtx *px, int depth) {
    if (px->quiet < 0 || depth < px->quiet) px->quiet = depth;
}

void p_syntax_error(ParseCtx *px, const Token *t, const bool *expected, int ntokens) {
    if (px->dead) return;
    /* Lemon goes back to the statement around t (a '{' that is t opens nothing yet) and throws
     * tokens away until one can follow it; the driver does that skipping, by brackets. */
    bool quiet = px->quiet >= 0;
    hush(px, brace_depth(px) - (t->kind == TK_LBRACE && is_block(&px->open[px->nopen - 1])));
    px->skip = true;
    if (quiet) return;
    /* the innermost bracket still open before t (an opener t is on the stack already) */
    int top = px->nopen - 1 - (px->nopen && (t->kind == TK_LPAREN || t->kind == TK_LBRACKET || t->kind == TK_LBRACE));
    const Token *o = top >= 0 ? &px->open[top] : NULL;
    int closer = o ? closer_of(o->kind) : -1;
    if (!expected) { /* the grammar saw a second comparison operator in a row */
        diag_error(t->span, "comparisons do not chain: write 'a < b and b < c', or add parentheses");
        return;
    }
    bool exp[256] = {0};
    memcpy(exp, expected, sizeof *exp * (size_t)(ntokens < 256 ? ntokens : 256));
    char *found = describe(t);
    if (t->kind == TK_ELSE && px->prev.kind == TK_SEMI && px->prev.auto_semi) {
        diag_error(t->span, "'else' must be on the same line as the '}' before it");
        goto done;
    }
    /* At the start of an item, member or statement, say which; a line end adds nothing. */
    int prev = px->prev.kind;
    if ((prev < 0 || prev == TK_SEMI || prev == TK_LBRACE) && exp[TK_SEMI]) {
        const char *what = exp[TK_USE]     ? "'use', 'model', 'data', 'trainer', 'fn' or a binding"
                           : exp[TK_PARAM] ? "a binding, 'param', 'buffer', a method or a directive"
                                           : "a statement";
        if (o && exp[closer])
            diag_error(t->span, "expected %s, or %s to close %s at %d:%d, found %s", what,
                       tok_name(closer), tok_name(o->kind), o->span.line, o->span.col, found);
        else
            diag_error(t->span, "expected %s, found %s", what, found);
        goto done;
    }
    /* Collapse what can start an expression into one item. */
    bool any_expr = exp[TK_NAME] && exp[TK_INT] && exp[TK_LPAREN];
    const char *items[8];
    int nitems = 0, total = 0;
    if (any_expr) items[nitems++] = "an expression";
    for (int k = 1; k < ntokens && k < 256; k++) {
        if (!exp[k] || k == closer || (any_expr && starts_expr(k))) continue;
        total++;
        if (nitems < 8) items[nitems++] = k == TK_SEMI ? "end of line" : tok_name(k);
    }
    StrBuf list = {0};
    for (int i = 0; i < nitems; i++)
        sb_printf(&list, "%s%s", i == 0 ? "" : i == nitems - 1 ? " or " : ", ", items[i]);
    if (o && exp[closer]) {
        /* a few alternatives, then the closer: "expected ',' or ')' to close '(' at 1:5" */
        StrBuf alts = {0};
        sb_putn(&alts, "", 0);
        for (int i = 0; i < nitems && nitems <= 3; i++) sb_printf(&alts, "%s%s", items[i], i < nitems - 1 ? ", " : " or ");
        diag_error(t->span, "expected %s%s to close %s at %d:%d, found %s", alts.s, tok_name(closer),
                   tok_name(o->kind), o->span.line, o->span.col, found);
        sb_free(&alts);
    } else if (nitems > 0 && total + any_expr <= 6 && is_fallback_keyword(prev) && exp[TK_NAME] &&
               (t->kind == TK_ASSIGN || t->kind == TK_COMMA || t->kind == TK_DOT || t->kind == TK_LPAREN)) {
        /* `model = 1`: the keyword was read as the start of a declaration, not as a name */
        diag_error(t->span, "unexpected %s, expected %s (%s is a keyword where a declaration can start)",
                   found, list.s, tok_name(prev));
    } else if (nitems > 0 && total + any_expr <= 6) {
        diag_error(t->span, "unexpected %s, expected %s", found, list.s);
    } else {
        diag_error(t->span, "unexpected %s", found);
    }
    sb_free(&list);
done:
    free(found);
}

void p_stack_overflow(ParseCtx *px) {
    diag_error(px->at, "input nested too deeply for the parser");
    px->dead = true;
}

/* ---- the driver ---- */

/* Go's rule: a line break after one of these ends the statement. */
static bool ends_statement(int k) {
    switch (k) {
    case TK_NAME: case TK_INT: case TK_FLOAT: case TK_STRING: case TK_DTYPE: case TK_TRUE:
    case TK_FALSE: case TK_NONE: case TK_ELLIPSIS: case TK_RETURN: case TK_RPAREN:
    case TK_RBRACKET: case TK_RBRACE:
        return true;
    }
    return is_fallback_keyword(k);
}

static bool is_closer(int k) { return k == TK_RPAREN || k == TK_RBRACKET || k == TK_RBRACE; }
static bool is_opener(int k) { return k == TK_LPAREN || k == TK_LBRACKET || k == TK_LBRACE; }

/* Feeds one token. After a syntax error, tokens are dropped until the ';' that ends the
 * statement with the error, or the '}' that ends its block: Lemon would drop them too, but
 * without regard to brackets, and a '}' of a nested block would end the enclosing one. That
 * ';' ends the quiet time: errors are reported again, without waiting for Lemon's three
 * tokens. */
static void feed(ParseCtx *px, void *parser, Token *t) {
    px->at = t->span;
    bool ends = false;
    if (px->quiet >= 0) {
        int depth = brace_depth(px); /* a closer's bracket is still open here */
        bool in_brackets = px->nopen && px->open[px->nopen - 1].kind != TK_LBRACE;
        bool closes_block = t->kind == TK_RBRACE && px->nopen && is_block(&px->open[px->nopen - 1]);
        ends = t->kind == 0 || (t->kind == TK_SEMI && depth <= px->quiet && !in_brackets) ||
               (closes_block && depth - 1 < px->quiet);
    }
    if (px->skip && !ends) return;
    if (!px->dead && !diag_too_many()) ltlParse(parser, t->kind, *t);
    if (ends) {
        px->skip = false; /* even if t was the error: Lemon reads it again once recovered */
        if (t->kind == TK_SEMI) {
            px->quiet = -1;
            ltlParseResync(parser);
        }
    }
    px->prev = *t;
}

/* A closer that is not the innermost open bracket's. If it closes an outer bracket, the ones
 * opened since are missing their closers: report the innermost, and feed the parser the
 * closers it lacks. If it closes none, inside ( ) or [ ] it is a typo for the closer that fits;
 * inside { } or outside any bracket it is a stray, dropped (returns false). */
static bool match_closer(ParseCtx *px, void *parser, Token *t) {
    int k = t->kind, i = px->nopen - 1;
    while (i >= 0 && closer_of(px->open[i].kind) != k) i--;
    if (i >= 0 && i == px->nopen - 1) return true;
    bool report = px->quiet < 0;
    hush(px, brace_depth(px));
    if (i < 0 && (px->nopen == 0 || px->open[px->nopen - 1].kind == TK_LBRACE)) {
        if (report) diag_error(t->span, "unmatched %s", tok_name(k));
        return false;
    }
    const Token *o = &px->open[px->nopen - 1];
    if (i < 0) {
        if (report)
            diag_error(t->span, "mismatched %s: expected %s to close %s at %d:%d", tok_name(k),
                       tok_name(closer_of(o->kind)), tok_name(o->kind), o->span.line, o->span.col);
        t->kind = closer_of(o->kind); /* read it as the closer that fits, and go on */
        return true;
    }
    if (report)
        diag_error(t->span, "expected %s to close %s at %d:%d, found %s", tok_name(closer_of(o->kind)),
                   tok_name(o->kind), o->span.line, o->span.col, tok_name(k));
    while (px->nopen - 1 > i) {
        Token c = {.kind = closer_of(px->open[px->nopen - 1].kind),
                   .span = {t->span.file, t->span.off, 0, t->span.line, t->span.col}};
        feed(px, parser, &c);
        px->nopen--;
    }
    return true;
}

Node *parse_source(Ast *ast, const char *name, const char *text, size_t len) {
    int file = diag_add_source(name, text, len);
    Lexer lx;
    lex_init(&lx, file, text, len);
    ParseCtx px = {.ast = ast, .prev = {.kind = -1}, .quiet = -1};
    void *parser = ltlParseAlloc(malloc, &px);
    int last = -1;
    Span last_span = {file, 0, 0, 1, 1};
    for (;;) {
        Token t;
        int errors = diag_error_count();
        int k = lex_next(&lx, &t);
        ast_str(ast, t.text);
        if (diag_error_count() > errors) hush(&px, brace_depth(&px)); /* the parser would echo it */
        bool in_brackets = px.nopen && px.open[px.nopen - 1].kind != TK_LBRACE;
        if ((t.nl_before || k == 0) && ends_statement(last) && !in_brackets && !is_closer(k)) {
            Span sp = {file, last_span.off + last_span.len, 0, last_span.line,
                       last_span.col + (int)last_span.len};
            Token semi = {.kind = TK_SEMI, .span = sp, .auto_semi = true};
            feed(&px, parser, &semi);
        }
        if (is_opener(k)) {
            if (px.nopen == PARSE_MAX_NESTING) {
                diag_error(t.span, "brackets nested too deeply (more than %d levels)", PARSE_MAX_NESTING);
                break;
            }
            if (px.nopen == px.capopen) {
                px.capopen = px.capopen ? px.capopen * 2 : 16;
                px.open = xrealloc(px.open, sizeof *px.open * (size_t)px.capopen);
            }
            t.ival = k == TK_LBRACE && opens_block(last);
            px.open[px.nopen++] = t;
        } else if (is_closer(k) && !match_closer(&px, parser, &t)) {
            last = k; /* dropped; the line still ends the statement */
            last_span = t.span;
            continue;
        }
        k = t.kind;
        feed(&px, parser, &t);
        if (is_closer(k) && px.nopen) px.nopen--;
        if (k == 0 || px.dead || diag_too_many()) break;
        last = k;
        last_span = t.span;
    }
    if (ast->too_deep) diag_error(ast->deep_at, "expression nested too deeply (more than %d levels)", AST_MAX_DEPTH);
    ltlParseFree(parser, free);
    free(px.open);
    return ast->root;
}

Node *parse_file(Ast *ast, const char *path, char **text) {
    size_t len;
    char *err = NULL;
    *text = read_file(path, &len, SOURCE_MAX_BYTES, &err);
    if (!*text) {
        diag_plain_error("%s", err);
        free(err);
        return NULL;
    }
    return parse_source(ast, path, *text, len);
}
