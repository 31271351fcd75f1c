/* print.c — the canonical form of an AST (`ltlc emit ast`): valid LTL that re-parses to the
 * same tree. Parentheses are not in the tree; the printer puts back those precedence needs. */
#include "front.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Binding strength, loosest first, as in grammar/parser.y. */
enum { P_OR = 1, P_AND, P_NOT, P_CMP, P_ADD, P_MUL, P_UNARY, P_POW, P_POSTFIX };

static int binary_prec(int op) {
    switch (op) {
    case TK_OR: return P_OR;
    case TK_AND: return P_AND;
    case TK_EQ: case TK_NE: case TK_LT: case TK_LE: case TK_GT: case TK_GE: return P_CMP;
    case TK_PLUS: case TK_MINUS: return P_ADD;
    case TK_STAR: case TK_SLASH: case TK_PERCENT: case TK_AT: return P_MUL;
    default: return P_POW;
    }
}

static const char *op_text(int op) {
    switch (op) {
    case TK_OR: return "or"; case TK_AND: return "and"; case TK_NOT: return "not";
    case TK_EQ: return "=="; case TK_NE: return "!="; case TK_LT: return "<"; case TK_LE: return "<=";
    case TK_GT: return ">"; case TK_GE: return ">="; case TK_PLUS: return "+"; case TK_MINUS: return "-";
    case TK_STAR: return "*"; case TK_SLASH: return "/"; case TK_PERCENT: return "%";
    case TK_AT: return "@"; default: return "**";
    }
}

static void expr_at(StrBuf *b, const Node *e, int min, bool open);

/* An expression that nothing follows but a ',', a closer, a line end or the like. */
static void expr(StrBuf *b, const Node *e, int min) { expr_at(b, e, min, true); }

/* A string node's value is ival bytes, NULs included (the \0 escape); 0 for a node made
 * without a length, which then ends at its first NUL. */
static void string_lit(StrBuf *b, const char *s, int64_t ival) {
    size_t len = ival > 0 ? (size_t)ival : strlen(s);
    sb_putc(b, '"');
    for (const char *end = s + len; s < end; s++) {
        switch (*s) {
        case '\0': sb_puts(b, "\\0"); break;
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\r': sb_puts(b, "\\r"); break;
        default: sb_putc(b, *s);
        }
    }
    sb_putc(b, '"');
}

static void float_lit(StrBuf *b, const Node *e) {
    if (e->name) { sb_puts(b, e->name); return; }
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) { /* the shortest spelling that reads back exactly */
        snprintf(buf, sizeof buf, "%.*g", prec, e->fval);
        if (strtod(buf, NULL) == e->fval) break;
    }
    sb_puts(b, buf);
    if (!strpbrk(buf, ".eEn")) sb_puts(b, ".0");
}

static void list(StrBuf *b, Node *const *kids, int n, const char *sep) {
    for (int i = 0; i < n; i++) {
        if (i) sb_puts(b, sep);
        if (kids[i]) expr(b, kids[i], 0);
    }
}

static void param(StrBuf *b, const Node *p) {
    sb_puts(b, p->name);
    if (p->kids[0]) { sb_puts(b, ": "); expr(b, p->kids[0], 0); }
    if (p->kids[1]) { sb_puts(b, " = "); expr(b, p->kids[1], 0); }
}

/* Prints e, in parentheses when it binds looser than min. `open`: nothing that could extend e
 * follows it, so a prefix operator there needs none (`a * not b`, `- -x`): parentheses the
 * source did not have would make the printed text nest deeper than the source. */
static void expr_at(StrBuf *b, const Node *e, int min, bool open) {
    switch (e->kind) {
    case N_NAME: sb_puts(b, e->name); return;
    case N_INT:
        if (e->name) sb_puts(b, e->name);
        else sb_printf(b, "%lld", (long long)e->ival);
        return;
    case N_FLOAT: float_lit(b, e); return;
    case N_STRING: string_lit(b, e->name, e->ival); return;
    case N_BOOL: sb_puts(b, e->ival ? "true" : "false"); return;
    case N_NONE: sb_puts(b, "none"); return;
    case N_DTYPE: sb_puts(b, dtype_names[e->op]); return;
    case N_ELLIPSIS: sb_puts(b, "..."); return;
    case N_KWARG: sb_printf(b, "%s = ", e->name); expr(b, e->kids[0], 0); return;
    case N_PARAM: param(b, e); return;
    case N_TUPLE:
        sb_putc(b, '(');
        list(b, e->kids, e->nkids, ", ");
        sb_puts(b, e->nkids == 1 ? ",)" : ")");
        return;
    case N_LIST: sb_putc(b, '['); list(b, e->kids, e->nkids, ", "); sb_putc(b, ']'); return;
    case N_DICT:
        sb_putc(b, '{');
        for (int i = 0; i < e->nkids; i++) {
            const Node *en = e->kids[i];
            if (i) sb_puts(b, ", ");
            if (en->op == TK_STRING) string_lit(b, en->name, en->ival);
            else sb_puts(b, en->name);
            sb_puts(b, ": ");
            expr(b, en->kids[0], 0);
        }
        sb_putc(b, '}');
        return;
    case N_SLICE:
        if (e->kids[0]) expr(b, e->kids[0], 0);
        sb_putc(b, ':');
        if (e->kids[1]) expr(b, e->kids[1], 0);
        if (e->kids[2]) { sb_putc(b, ':'); expr(b, e->kids[2], 0); }
        return;
    default: break;
    }
    int prec = P_POSTFIX;
    if (e->kind == N_BINARY) prec = binary_prec(e->op);
    else if (e->kind == N_UNARY) prec = e->op == TK_NOT ? P_NOT : P_UNARY;
    bool paren = prec < min && !(e->kind == N_UNARY && open);
    if (paren) sb_putc(b, '(');
    open = open || paren; /* what ends e ends its last operand too */
    switch (e->kind) {
    case N_BINARY:
        if (prec == P_POW) { /* right-associative; a unary operand on the right needs no parens */
            expr_at(b, e->kids[0], P_POSTFIX, false);
            sb_puts(b, " ** ");
            expr_at(b, e->kids[1], P_UNARY, open);
        } else {
            expr_at(b, e->kids[0], prec == P_CMP ? prec + 1 : prec, false);
            sb_printf(b, " %s ", op_text(e->op));
            expr_at(b, e->kids[1], prec + 1, open);
        }
        break;
    case N_UNARY: {
        const Node *x = e->kids[0];
        sb_puts(b, e->op == TK_NOT ? "not " : op_text(e->op));
        if (x->kind == N_UNARY && x->op != TK_NOT) sb_putc(b, ' '); /* - -x, not --x */
        expr_at(b, x, e->op == TK_NOT ? P_NOT : P_UNARY, open);
        break;
    }
    case N_CALL: case N_INDEX: case N_MEMBER: {
        const Node *o = e->kids[0];
        /* `2.T` would lex as the number `2.`: a number before '.' gets parentheses */
        bool num = e->kind == N_MEMBER && (o->kind == N_INT || o->kind == N_FLOAT);
        if (num) sb_putc(b, '(');
        expr_at(b, o, P_POSTFIX, false);
        if (num) sb_putc(b, ')');
        if (e->kind == N_MEMBER) { sb_printf(b, ".%s", e->name); break; }
        sb_putc(b, e->kind == N_CALL ? '(' : '[');
        list(b, e->kids + 1, e->nkids - 1, ", ");
        sb_putc(b, e->kind == N_CALL ? ')' : ']');
        break;
    }
    default:
        sb_printf(b, "<%s>", node_kind_names[e->kind]);
    }
    if (paren) sb_putc(b, ')');
}

char *ast_print_expr(const Node *e) {
    StrBuf b = {0};
    sb_putn(&b, "", 0);
    expr(&b, e, 0);
    return b.s;
}

static void indent(StrBuf *b, int depth) {
    for (int i = 0; i < depth; i++) sb_puts(b, "    ");
}

static void stmt(StrBuf *b, const Node *s, int depth);

static void block(StrBuf *b, const Node *seq, int depth) {
    sb_puts(b, "{\n");
    for (int i = 0; i < seq->nkids; i++) stmt(b, seq->kids[i], depth + 1);
    indent(b, depth);
    sb_putc(b, '}');
}

static void params(StrBuf *b, const Node *seq) {
    sb_putc(b, '(');
    for (int i = 0; i < seq->nkids; i++) {
        if (i) sb_puts(b, ", ");
        param(b, seq->kids[i]);
    }
    sb_putc(b, ')');
}

/* A function, method, step or hook: name(params) [-> type] { body } or = expr. */
static void func(StrBuf *b, const Node *f, int depth) {
    sb_printf(b, "%s%s", f->kind == N_FN ? "fn " : "", f->name);
    params(b, f->kids[0]);
    if (f->kids[1]) { sb_puts(b, " -> "); expr(b, f->kids[1], 0); }
    if (f->kids[2]->kind == N_SEQ) { sb_putc(b, ' '); block(b, f->kids[2], depth); }
    else { sb_puts(b, " = "); expr(b, f->kids[2], 0); }
}

static void names(StrBuf *b, const Node *seq) {
    for (int i = 0; i < seq->nkids; i++) sb_printf(b, "%s%s", i ? ", " : "", seq->kids[i]->name);
}

static void stmt(StrBuf *b, const Node *s, int depth) {
    indent(b, depth);
    switch (s->kind) {
    case N_USE:
        sb_printf(b, "use %s", s->name);
        if (s->kids[0]) sb_printf(b, " as %s", s->kids[0]->name);
        break;
    case N_MODEL: case N_DATA:
        sb_printf(b, "%s %s", s->kind == N_MODEL ? "model" : "data", s->name);
        if (s->kids[0]) params(b, s->kids[0]);
        sb_putc(b, ' ');
        block(b, s->kids[1], depth);
        break;
    case N_TRAINER:
        sb_puts(b, "trainer ");
        if (s->name) sb_printf(b, "%s ", s->name);
        block(b, s->kids[0], depth);
        break;
    case N_FN: case N_METHOD: func(b, s, depth); break;
    case N_DECL:
        sb_printf(b, "%s %s: ", s->op == TK_PARAM ? "param" : "buffer", s->name);
        expr(b, s->kids[0], 0);
        if (s->kids[1]) { sb_puts(b, " = "); expr(b, s->kids[1], 0); }
        break;
    case N_BIND:
        names(b, s->kids[0]);
        sb_puts(b, " = ");
        expr(b, s->kids[1], 0);
        break;
    case N_EXPR_STMT: expr(b, s->kids[0], 0); break;
    case N_RETURN:
        sb_puts(b, "return");
        if (s->kids[0]) { sb_putc(b, ' '); expr(b, s->kids[0], 0); }
        break;
    case N_IF:
        for (;;) {
            sb_puts(b, "if ");
            expr(b, s->kids[0], 0);
            sb_putc(b, ' ');
            block(b, s->kids[1], depth);
            if (!s->kids[2]) break;
            sb_puts(b, " else ");
            if (s->kids[2]->kind != N_IF) { block(b, s->kids[2], depth); break; }
            s = s->kids[2];
        }
        break;
    case N_FOR:
        sb_puts(b, "for ");
        names(b, s->kids[0]);
        sb_puts(b, " in ");
        expr(b, s->kids[1], 0);
        sb_putc(b, ' ');
        block(b, s->kids[2], depth);
        break;
    default: expr(b, s, 0);
    }
    sb_putc(b, '\n');
}

void ast_print(FILE *f, const Node *program) {
    StrBuf b = {0};
    sb_putn(&b, "", 0);
    for (int i = 0; i < program->nkids; i++) {
        const Node *it = program->kids[i];
        bool big = it->kind != N_USE && it->kind != N_BIND;
        /* a blank line around blocks, none between consecutive `use` or bindings */
        if (i && (big || program->kids[i - 1]->kind != it->kind)) sb_putc(&b, '\n');
        stmt(&b, it, 0);
    }
    fputs(b.s, f);
    sb_free(&b);
}
