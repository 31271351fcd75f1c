/* parser.y — the LTL grammar for Lemon (build output parser.c is never committed).
 * docs/language.md has the same grammar in EBNF. Statements end with ';', which the driver
 * (compiler/parse.c) inserts at line ends the way Go does. Actions build the AST through the
 * p_* helpers of parse.c; every node gets a span. */

%name ltlParse
%token_prefix TK_
%token_type {Token}
%default_type {Node *}
%extra_context {ParseCtx *px}
%stack_size 4000
%start_symbol program

%include {
#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "front.h"
struct yyParser;
static void ltl_expected(struct yyParser *p, int skip, bool *set, int n);
static char *ltl_join(ParseCtx *px, const Node *parts) {
    StrBuf b = {0};
    for (int i = 0; i < parts->nkids; i++) sb_printf(&b, "%s%s", i ? "." : "", parts->kids[i]->name);
    return ast_str(px->ast, b.s);
}
static bool ltl_is_comparison(int k) {
    return k == TK_EQ || k == TK_NE || k == TK_LT || k == TK_LE || k == TK_GT || k == TK_GE;
}
#define SPAN(a, b) span_join((a), (b))
}

%syntax_error {
    bool expected[YYNTOKEN];
    ltl_expected(yypParser, 0, expected, YYNTOKEN);
    /* Right after ';' or '{' (or at the start), Lemon has reduced an empty statement before
     * it saw the error, so only a line end looks acceptable: ask the state below it instead. */
    bool only_end = true;
    for (int k = 1; k < YYNTOKEN; k++)
        if (expected[k] && k != TK_SEMI && k != TK_RBRACE) only_end = false;
    if (only_end && (px->prev.kind < 0 || px->prev.kind == TK_SEMI || px->prev.kind == TK_LBRACE) &&
        yypParser->yytos > yypParser->yystack)
        ltl_expected(yypParser, 1, expected, YYNTOKEN);
    /* `a < b < c`: the stack ends with a comparison operator and its left operand */
    bool chained = ltl_is_comparison(yymajor) && yypParser->yytos > yypParser->yystack &&
                   ltl_is_comparison(yypParser->yytos[-1].major);
    p_syntax_error(px, &yyminor, chained ? NULL : expected, YYNTOKEN);
}
%stack_overflow { p_stack_overflow(px); }
%parse_failure { px->dead = true; }

/* Declaration keywords are names wherever a declaration cannot start (data.vocab_size). */
%fallback NAME MODEL DATA TRAINER FN PARAM BUFFER USE AS.

%left OR.
%left AND.
%right NOT.
%nonassoc EQ NE LT LE GT GE.
%left PLUS MINUS.
%left STAR SLASH PERCENT AT.
%right UMINUS.
%right POW.

/* Every terminal (front.h's TOKENS table says how messages name each). */
%token SEMI NAME INT FLOAT STRING DTYPE USE AS MODEL DATA TRAINER FN PARAM BUFFER RETURN IF ELSE
       FOR IN AND OR NOT TRUE FALSE NONE LPAREN RPAREN LBRACKET RBRACKET LBRACE RBRACE COMMA
       COLON DOT ELLIPSIS ARROW ASSIGN EQ NE LT LE GT GE PLUS MINUS STAR SLASH PERCENT AT POW.

/* program = { item ";" }
 * `begin` matches nothing: Lemon's error recovery never shifts `error` in the bottom state of
 * its stack, so without it an error in the first item would end the parse. */
program ::= begin items(L). { L->kind = N_PROGRAM; px->ast->root = L; }
begin ::= .
items(L) ::= item(I). { L = p_append(px, p_seq(px, (Span){0}), I); }
items(L) ::= items(A) SEMI item(I). { L = p_append(px, A, I); }

/* item = "use" dotted [ "as" NAME ] */
item(I) ::= . { I = NULL; }
item(I) ::= USE(K) dotted(D). { I = p_node(px, N_USE, SPAN(K.span, D->span), 1, NULL); I->name = ltl_join(px, D); }
item(I) ::= USE(K) dotted(D) AS NAME(A).
    { I = p_node(px, N_USE, SPAN(K.span, A.span), 1, p_leaf(px, N_NAME, &A)); I->name = ltl_join(px, D); }
/* the parts in a SEQ, joined once (joining at each '.' would take quadratic time) */
dotted(D) ::= NAME(N). { D = p_append(px, p_seq(px, N.span), p_leaf(px, N_NAME, &N)); }
dotted(D) ::= dotted(A) DOT NAME(N). { D = p_append(px, A, p_leaf(px, N_NAME, &N)); }

/* item = ("model" | "data") NAME [ "(" params ")" ] "{" members "}" */
item(I) ::= MODEL(K) NAME(N) hparams(P) LBRACE members(M) RBRACE(E).
    { I = p_node(px, N_MODEL, SPAN(K.span, E.span), 2, P, M); I->name = N.text; }
item(I) ::= DATA(K) NAME(N) hparams(P) LBRACE members(M) RBRACE(E).
    { I = p_node(px, N_DATA, SPAN(K.span, E.span), 2, P, M); I->name = N.text; }
hparams(P) ::= . { P = NULL; }
hparams(P) ::= LPAREN args(A) RPAREN. { P = p_params(px, A); }

/* item = "trainer" [ NAME ] "{" members "}" */
item(I) ::= TRAINER(K) LBRACE members(M) RBRACE(E). { I = p_node(px, N_TRAINER, SPAN(K.span, E.span), 1, M); }
item(I) ::= TRAINER(K) NAME(N) LBRACE members(M) RBRACE(E).
    { I = p_node(px, N_TRAINER, SPAN(K.span, E.span), 1, M); I->name = N.text; }

/* item = "fn" NAME "(" params ")" [ "->" expr ] ( body | "=" expr ) */
item(I) ::= FN(K) NAME(N) LPAREN args(A) RPAREN ret(R) body(B). { I = p_func(px, N_FN, &K, &N, A, R, B); }
item(I) ::= FN(K) NAME(N) LPAREN args(A) RPAREN ret(R) ASSIGN expr(E). { I = p_func(px, N_FN, &K, &N, A, R, E); }
item(I) ::= binding(B). { I = B; }
item(I) ::= error. { I = NULL; }

ret(R) ::= . { R = NULL; }
ret(R) ::= ARROW expr(E). { R = E; }

/* members = { member ";" } */
members(L) ::= member(M). { L = p_append(px, p_seq(px, (Span){0}), M); }
members(L) ::= members(A) SEMI member(M). { L = p_append(px, A, M); }
member(M) ::= . { M = NULL; }
member(M) ::= binding(B). { M = B; }
/* member = ("param" | "buffer") NAME ":" expr [ "=" expr ] */
member(M) ::= PARAM(K) NAME(N) COLON expr(T) init(V).
    { M = p_node(px, N_DECL, SPAN(K.span, (V ? V : T)->span), 2, T, V); M->op = TK_PARAM; M->name = N.text; }
member(M) ::= BUFFER(K) NAME(N) COLON expr(T) init(V).
    { M = p_node(px, N_DECL, SPAN(K.span, (V ? V : T)->span), 2, T, V); M->op = TK_BUFFER; M->name = N.text; }
init(V) ::= . { V = NULL; }
init(V) ::= ASSIGN expr(E). { V = E; }
/* member = NAME "(" params ")" [ "->" expr ] ( body | "=" expr )   a method, step or hook */
member(M) ::= NAME(N) LPAREN args(A) RPAREN ret(R) body(B). { M = p_func(px, N_METHOD, NULL, &N, A, R, B); }
member(M) ::= NAME(N) LPAREN args(A) RPAREN ret(R) ASSIGN expr(E). { M = p_func(px, N_METHOD, NULL, &N, A, R, E); }
/* member = NAME "(" args ")"   a directive such as loader(batch = 64) */
member(M) ::= NAME(N) LPAREN args(A) RPAREN(E).
    { Node *c = p_call(px, p_leaf(px, N_NAME, &N), A, &E); M = p_node(px, N_EXPR_STMT, c->span, 1, c); }
member(M) ::= error. { M = NULL; }

/* body = "{" { stmt ";" } "}" */
body(B) ::= LBRACE(L) stmts(S) RBRACE(E). { B = S; B->span = SPAN(L.span, E.span); }
stmts(L) ::= stmt(T). { L = p_append(px, p_seq(px, (Span){0}), T); }
stmts(L) ::= stmts(A) SEMI stmt(T). { L = p_append(px, A, T); }
stmt(T) ::= . { T = NULL; }
stmt(T) ::= binding(B). { T = B; }
stmt(T) ::= expr(E). { T = p_node(px, N_EXPR_STMT, E->span, 1, E); }
stmt(T) ::= RETURN(K). { T = p_node(px, N_RETURN, K.span, 1, NULL); }
stmt(T) ::= RETURN(K) expr(E). { T = p_node(px, N_RETURN, SPAN(K.span, E->span), 1, E); }
stmt(T) ::= RETURN(K) expr(E) COMMA exprs(X).
    { Node *t = p_tuple(px, E, X); T = p_node(px, N_RETURN, SPAN(K.span, t->span), 1, t); }
stmt(T) ::= ifstmt(I). { T = I; }
/* stmt = "for" names "in" expr body */
stmt(T) ::= FOR(K) names(N) IN expr(E) body(B). { T = p_node(px, N_FOR, SPAN(K.span, B->span), 3, N, E, B); }
stmt(T) ::= error. { T = NULL; }
/* if-stmt = "if" expr body [ "else" ( body | if-stmt ) ] */
ifstmt(I) ::= IF(K) expr(C) body(B). { I = p_node(px, N_IF, SPAN(K.span, B->span), 3, C, B, NULL); }
ifstmt(I) ::= IF(K) expr(C) body(B) ELSE body(E). { I = p_node(px, N_IF, SPAN(K.span, E->span), 3, C, B, E); }
ifstmt(I) ::= IF(K) expr(C) body(B) ELSE ifstmt(E). { I = p_node(px, N_IF, SPAN(K.span, E->span), 3, C, B, E); }

/* binding = names "=" expr { "," expr }   (several values make a tuple) */
binding(B) ::= names(N) ASSIGN expr(E). { B = p_node(px, N_BIND, SPAN(N->span, E->span), 2, N, E); }
binding(B) ::= names(N) ASSIGN expr(E) COMMA exprs(X).
    { Node *t = p_tuple(px, E, X); B = p_node(px, N_BIND, SPAN(N->span, t->span), 2, N, t); }
names(L) ::= NAME(N). { L = p_append(px, p_seq(px, N.span), p_leaf(px, N_NAME, &N)); }
names(L) ::= names(A) COMMA NAME(N). { L = p_append(px, A, p_leaf(px, N_NAME, &N)); }

/* args = [ arg { "," arg } [ "," ] ]; params share it and p_params checks them */
args(L) ::= . { L = p_seq(px, (Span){0}); }
args(L) ::= arglist(A). { L = A; }
args(L) ::= arglist(A) COMMA. { L = A; }
arglist(L) ::= arg(A). { L = p_append(px, p_seq(px, A->span), A); }
arglist(L) ::= arglist(P) COMMA arg(A). { L = p_append(px, P, A); }
/* arg = expr | NAME "=" expr;  param = NAME [ ":" expr ] [ "=" expr ] */
arg(A) ::= expr(E). { A = E; }
arg(A) ::= expr(E) COLON expr(T). { A = p_arg(px, E, T, NULL); }
arg(A) ::= expr(E) ASSIGN expr(V). { A = p_arg(px, E, NULL, V); }
arg(A) ::= expr(E) COLON expr(T) ASSIGN expr(V). { A = p_arg(px, E, T, V); }

/* expr: binary operators by precedence (see the %left/%right lines above) */
expr(E) ::= expr(A) OR(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) AND(O) expr(B).     { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) EQ(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) NE(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) LT(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) LE(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) GT(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) GE(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) PLUS(O) expr(B).    { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) MINUS(O) expr(B).   { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) STAR(O) expr(B).    { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) SLASH(O) expr(B).   { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) PERCENT(O) expr(B). { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) AT(O) expr(B).      { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
expr(E) ::= expr(A) POW(O) expr(B).     { E = p_node(px, N_BINARY, SPAN(A->span, B->span), 2, A, B); E->op = O.kind; }
/* unary: "not" expr | "-" expr | "+" expr */
expr(E) ::= NOT(O) expr(A).               { E = p_node(px, N_UNARY, SPAN(O.span, A->span), 1, A); E->op = O.kind; }
expr(E) ::= MINUS(O) expr(A). [UMINUS]    { E = p_node(px, N_UNARY, SPAN(O.span, A->span), 1, A); E->op = O.kind; }
expr(E) ::= PLUS(O) expr(A). [UMINUS]     { E = p_node(px, N_UNARY, SPAN(O.span, A->span), 1, A); E->op = O.kind; }
expr(E) ::= postfix(P). { E = P; }

/* postfix = primary | postfix "(" args ")" | postfix "[" [ subs ] "]" | postfix "." NAME */
postfix(P) ::= primary(A). { P = A; }
postfix(P) ::= postfix(F) LPAREN args(A) RPAREN(E). { P = p_call(px, F, A, &E); }
postfix(P) ::= postfix(O) LBRACKET subs(L) RBRACKET(E).
    { P = L; P->kind = N_INDEX; P->span = SPAN(O->span, E.span); P->kids[0] = O;
      if (O->depth >= P->depth) P->depth = O->depth + 1; }
/* an empty subscript list is a scalar tensor type: i64[] */
postfix(P) ::= postfix(O) LBRACKET RBRACKET(E). { P = p_node(px, N_INDEX, SPAN(O->span, E.span), 1, O); }
postfix(P) ::= postfix(O) DOT NAME(N). { P = p_node(px, N_MEMBER, SPAN(O->span, N.span), 1, O); P->name = N.text; }

/* subs: kids[0] is a placeholder for the indexed object */
subs(L) ::= sub(A). { L = p_seq(px, A->span); ast_add(px->ast, L, NULL); p_append(px, L, A); }
subs(L) ::= subs(P) COMMA sub(A). { L = p_append(px, P, A); }
subs(L) ::= subs(P) COMMA. { L = P; }
/* sub = expr | [ expr ] ":" [ expr ] [ ":" [ expr ] ] */
sub(A) ::= expr(E). { A = E; }
sub(A) ::= sopt(L) COLON(C) sopt(H).
    { A = p_node(px, N_SLICE, SPAN(L ? L->span : C.span, H ? H->span : C.span), 3, L, H, NULL); }
sub(A) ::= sopt(L) COLON(C) sopt(H) COLON(D) sopt(T).
    { A = p_node(px, N_SLICE, SPAN(L ? L->span : C.span, T ? T->span : D.span), 3, L, H, T); }
sopt(E) ::= . { E = NULL; }
sopt(E) ::= expr(X). { E = X; }

/* primary = NAME | INT | FLOAT | STRING | DTYPE | "true" | "false" | "none" | "..." */
primary(P) ::= NAME(T).     { P = p_leaf(px, N_NAME, &T); }
primary(P) ::= INT(T).      { P = p_leaf(px, N_INT, &T); }
primary(P) ::= FLOAT(T).    { P = p_leaf(px, N_FLOAT, &T); }
primary(P) ::= STRING(T).   { P = p_leaf(px, N_STRING, &T); }
primary(P) ::= DTYPE(T).    { P = p_leaf(px, N_DTYPE, &T); }
primary(P) ::= TRUE(T).     { P = p_leaf(px, N_BOOL, &T); P->ival = 1; }
primary(P) ::= FALSE(T).    { P = p_leaf(px, N_BOOL, &T); }
primary(P) ::= NONE(T).     { P = p_leaf(px, N_NONE, &T); }
primary(P) ::= ELLIPSIS(T). { P = p_leaf(px, N_ELLIPSIS, &T); }
/* "(" expr ")" keeps no node: the printer puts back the parentheses precedence needs */
primary(P) ::= LPAREN expr(E) RPAREN. { P = E; }
/* tuples: "(" ")" | "(" expr "," [ exprs ] ")" */
primary(P) ::= LPAREN(L) RPAREN(R). { P = p_node(px, N_TUPLE, SPAN(L.span, R.span), 0); }
primary(P) ::= LPAREN(L) expr(E) COMMA RPAREN(R). { P = p_node(px, N_TUPLE, SPAN(L.span, R.span), 1, E); }
primary(P) ::= LPAREN(L) expr(E) COMMA exprs(X) RPAREN(R). { P = p_tuple(px, E, X); P->span = SPAN(L.span, R.span); }
/* list = "[" [ exprs ] "]" */
primary(P) ::= LBRACKET(L) RBRACKET(R). { P = p_node(px, N_LIST, SPAN(L.span, R.span), 0); }
primary(P) ::= LBRACKET(L) exprs(X) RBRACKET(R). { P = X; P->kind = N_LIST; P->span = SPAN(L.span, R.span); }
exprs(L) ::= exprlist(A). { L = A; }
exprs(L) ::= exprlist(A) COMMA. { L = A; }
exprlist(L) ::= expr(E). { L = p_append(px, p_seq(px, E->span), E); }
exprlist(L) ::= exprlist(A) COMMA expr(E). { L = p_append(px, A, E); }
/* dict = "{" [ key ":" expr { "," key ":" expr } [ "," ] ] "}" */
primary(P) ::= LBRACE(L) RBRACE(R). { P = p_node(px, N_DICT, SPAN(L.span, R.span), 0); }
primary(P) ::= LBRACE(L) entries(X) RBRACE(R). { P = X; P->kind = N_DICT; P->span = SPAN(L.span, R.span); }
entries(L) ::= entrylist(A). { L = A; }
entries(L) ::= entrylist(A) COMMA. { L = A; }
entrylist(L) ::= entry(E). { L = p_append(px, p_seq(px, E->span), E); }
entrylist(L) ::= entrylist(A) COMMA entry(E). { L = p_append(px, A, E); }
entry(E) ::= NAME(K) COLON expr(V). { E = p_node(px, N_ENTRY, SPAN(K.span, V->span), 1, V); E->name = K.text; E->op = TK_NAME; }
entry(E) ::= STRING(K) COLON expr(V). { E = p_node(px, N_ENTRY, SPAN(K.span, V->span), 1, V); E->name = K.text; E->ival = K.ival; E->op = TK_STRING; }

%code {
/* Which terminals the parser could accept now: simulate each on a copy of the state stack
 * (less its top `skip` entries), following reductions until it shifts (accepted) or errors.
 * Lemon's default reductions make the table alone too generous, hence the simulation.
 * A keyword that would only be read as a name (%fallback) is left out: "name" says it. */
static void ltl_expected(struct yyParser *p, int skip, bool *set, int n) {
    int depth = (int)(p->yytos - p->yystack) + 1 - skip;
    YYACTIONTYPE *st = malloc(sizeof *st * (size_t)(depth + 64));
    YYACTIONTYPE *shift = calloc((size_t)n, sizeof *shift);
    for (int tok = 1; tok < n; tok++) {
        set[tok] = false;
        int top = depth - 1, steps = 0;
        for (int i = 0; i < depth; i++) st[i] = p->yystack[i].stateno;
        YYACTIONTYPE act = st[top];
        while (steps++ < 1000) {
            act = yy_find_shift_action((YYCODETYPE)tok, act);
            if (act >= YY_MIN_REDUCE) {
                unsigned rule = act - YY_MIN_REDUCE;
                top += yyRuleInfoNRhs[rule];
                if (top < 0 || top + 1 >= depth + 64) break;
                act = yy_find_reduce_action(st[top], (YYCODETYPE)yyRuleInfoLhs[rule]);
                st[++top] = act;
            } else {
                set[tok] = act <= YY_MAX_SHIFTREDUCE || act == YY_ACCEPT_ACTION;
                shift[tok] = act;
                break;
            }
        }
    }
    for (int tok = 1; tok < n && tok < (int)(sizeof yyFallback / sizeof *yyFallback); tok++)
        if (set[tok] && yyFallback[tok] && shift[tok] == shift[yyFallback[tok]]) set[tok] = false;
    set[0] = false;
    free(shift);
    free(st);
}

/* The driver calls this once a statement with an error has ended: Lemon would otherwise stay
 * silent until three more tokens are shifted, and lose the errors of short statements. */
void ltlParseResync(void *p) { ((yyParser *)p)->yyerrcnt = -1; }
}
