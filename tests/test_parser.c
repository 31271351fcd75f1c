/* test_parser.c — the parser (grammar/parser.y driven by compiler/parse.c) and the printer:
 * every construct of docs/language.md to its tree, precedence, Go-style line ends, the
 * argument and parameter rules, error messages and recovery, nesting limits, and the round
 * trip parse → print → parse on every example and golden input. */
#include <criterion/criterion.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "front.h"

/* ---- helpers ---- */

typedef struct {
    Ast ast;
    Node *root;
    char *diags; /* what diag printed */
    size_t diags_len;
    int nerrors;
} Parsed;

/* Parses src as "t.ltl", capturing diagnostics. The buffers live until the test ends. */
static Parsed *parse_n(const char *src, size_t len) {
    Parsed *P = calloc(1, sizeof *P);
    char *text = malloc(len + 1);
    memcpy(text, src, len);
    text[len] = 0;
    diag_reset();
    FILE *f = open_memstream(&P->diags, &P->diags_len);
    cr_assert(f);
    diag_set_output(f);
    P->root = parse_source(&P->ast, "t.ltl", text, len);
    P->nerrors = diag_error_count();
    fclose(f);
    diag_set_output(NULL);
    return P;
}
static Parsed *parse(const char *src) { return parse_n(src, strlen(src)); }

/* An S-expression of a tree: kinds, names, operators and kids, spans left out. */
static void sx(StrBuf *b, const Node *n);
static void sx_kids(StrBuf *b, const Node *n, int from) {
    for (int i = from; i < n->nkids; i++) {
        sb_putc(b, ' ');
        sx(b, n->kids[i]);
    }
}
static const char *op_name(int op) {
    switch (op) {
    case TK_OR: return "or"; case TK_AND: return "and"; case TK_NOT: return "not";
    case TK_EQ: return "=="; case TK_NE: return "!="; case TK_LT: return "<"; case TK_LE: return "<=";
    case TK_GT: return ">"; case TK_GE: return ">="; case TK_PLUS: return "+"; case TK_MINUS: return "-";
    case TK_STAR: return "*"; case TK_SLASH: return "/"; case TK_PERCENT: return "%";
    case TK_AT: return "@"; case TK_POW: return "**";
    }
    return "?";
}
static void sx(StrBuf *b, const Node *n) {
    if (!n) { sb_putc(b, '_'); return; }
    switch (n->kind) {
    case N_NAME: sb_puts(b, n->name); return;
    case N_INT: sb_printf(b, "%lld", (long long)n->ival); return;
    case N_FLOAT: sb_printf(b, "%gf", n->fval); return;
    case N_STRING: sb_printf(b, "\"%s\"", n->name); return;
    case N_BOOL: sb_puts(b, n->ival ? "true" : "false"); return;
    case N_NONE: sb_puts(b, "none"); return;
    case N_DTYPE: sb_puts(b, dtype_names[n->op]); return;
    case N_ELLIPSIS: sb_puts(b, "..."); return;
    case N_UNARY: case N_BINARY:
        sb_printf(b, "(%s", op_name(n->op));
        sx_kids(b, n, 0);
        sb_putc(b, ')');
        return;
    case N_MEMBER: sb_puts(b, "(. "); sx(b, n->kids[0]); sb_printf(b, " %s)", n->name); return;
    case N_ENTRY:
        sb_printf(b, n->op == TK_STRING ? "(entry \"%s\"" : "(entry %s", n->name);
        sx_kids(b, n, 0);
        sb_putc(b, ')');
        return;
    case N_DECL: sb_printf(b, "(%s %s", n->op == TK_PARAM ? "param" : "buffer", n->name); break;
    case N_BIND: sb_puts(b, "(bind"); break;
    case N_EXPR_STMT: sb_puts(b, "(expr"); break;
    case N_SEQ: sb_puts(b, "(seq"); break;
    default: {
        char kind[32];
        snprintf(kind, sizeof kind, "%s", node_kind_names[n->kind]);
        for (char *c = kind; *c; c++) *c = (char)(*c | 0x20);
        sb_printf(b, "(%s", kind);
        if (n->name) sb_printf(b, " %s", n->name);
        else if (n->kind == N_TRAINER) sb_puts(b, " _");
    }
    }
    sx_kids(b, n, 0);
    sb_putc(b, ')');
}
static char *tree(const Node *n) {
    StrBuf b = {0};
    sb_putn(&b, "", 0);
    sx(&b, n);
    return b.s;
}

/* src parses without a diagnostic to the program whose S-expression is want. */
static void ok(const char *src, const char *want) {
    Parsed *P = parse(src);
    cr_assert_str_eq(P->diags, "", "%s\ngave:\n%s", src, P->diags);
    cr_assert_not_null(P->root);
    char *got = tree(P->root);
    cr_assert_str_eq(got, want, "%s\nparsed to\n%s\nnot\n%s", src, got, want);
    free(got);
}

/* `x = e` parses to (bind (seq x) want). */
static void ex(const char *e, const char *want) {
    char src[4096], full[4096];
    snprintf(src, sizeof src, "x = %s\n", e);
    snprintf(full, sizeof full, "(program (bind (seq x) %s))", want);
    ok(src, full);
}

/* src gives exactly the diagnostics want (the first lines of each: message only, or the
 * whole text when want holds a source line). */
static void err(const char *src, const char *want) {
    Parsed *P = parse(src);
    cr_assert_gt(P->nerrors, 0, "no error for %s", src);
    if (strstr(want, " | ")) {
        cr_assert_str_eq(P->diags, want, "%s\ngave:\n%s", src, P->diags);
        return;
    }
    /* only the "t.ltl:L:C: error: ..." lines */
    StrBuf b = {0};
    sb_putn(&b, "", 0);
    for (char *line = P->diags; *line;) {
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (!strncmp(line, "t.ltl:", 6) || !strncmp(line, "ltlc:", 5)) {
            sb_putn(&b, line, len);
            sb_putc(&b, '\n');
        }
        line += len + (end != NULL);
    }
    cr_assert_str_eq(b.s, want, "%s\ngave:\n%s", src, P->diags);
    sb_free(&b);
}

/* ---- items ---- */

Test(parser, empty_and_comments) {
    ok("", "(program)");
    ok("\n\n\n", "(program)");
    ok("# only\n# comments\n", "(program)");
    ok("# no newline at the end", "(program)");
    ok(";;\n;", "(program)");
}

Test(parser, use) {
    ok("use nn", "(program (use nn _))");
    ok("use nn.init as init\n", "(program (use nn.init init))");
    ok("use a.b.c\nuse d", "(program (use a.b.c _) (use d _))");
    ok("use model.data as trainer", "(program (use model.data trainer))");
}

Test(parser, model_and_data) {
    ok("model M {}", "(program (model M _ (seq)))");
    ok("model M() {\n}", "(program (model M (seq) (seq)))");
    ok("model MLP(hidden1 = 128, lr = 1e-3, act: str = \"relu\", n) {\n    l1 = nn.Linear(28 * 28, hidden1)\n}",
       "(program (model MLP (seq (param hidden1 _ 128) (param lr _ 0.001f) (param act str \"relu\") (param n _ _)) "
       "(seq (bind (seq l1) (call (. nn Linear) (* 28 28) hidden1)))))");
    ok("data D(root = \"/d\", batch = 64,) {\n  train, val = split(idx(root), [55_000, 5_000], seed = 42)\n  loader(batch = batch)\n}",
       "(program (data D (seq (param root _ \"/d\") (param batch _ 64)) "
       "(seq (bind (seq train val) (call split (call idx root) (list 55000 5000) (kwarg seed 42))) "
       "(expr (call loader (kwarg batch batch))))))");
}

Test(parser, trainer) {
    ok("trainer {\n    max_epochs = 10\n    precision = \"bf16-mixed\"\n}",
       "(program (trainer _ (seq (bind (seq max_epochs) 10) (bind (seq precision) \"bf16-mixed\"))))");
    ok("trainer fast { fast_dev_run = true }", "(program (trainer fast (seq (bind (seq fast_dev_run) true))))");
    ok("trainer {}", "(program (trainer _ (seq)))");
}

Test(parser, fn) {
    ok("fn swish(x, beta = 1.0) = x * sigmoid(beta * x)",
       "(program (fn swish (seq (param x _ _) (param beta _ 1f)) _ (* x (call sigmoid (* beta x)))))");
    ok("fn rms(x: f32[B, D], eps = 1e-6) -> f32[B, D] {\n    return x * rsqrt(mean(x * x, dim = -1) + eps)\n}",
       "(program (fn rms (seq (param x (index f32 B D) _) (param eps _ 1e-06f)) (index f32 B D) "
       "(seq (return (* x (call rsqrt (+ (call mean (* x x) (kwarg dim (- 1))) eps)))))))");
    ok("fn f() {}", "(program (fn f (seq) _ (seq)))");
    ok("fn f() -> i64 = 1", "(program (fn f (seq) i64 1))");
}

Test(parser, top_level_bindings) {
    ok("x = 1", "(program (bind (seq x) 1))");
    ok("a, b = 1, 2", "(program (bind (seq a b) (tuple 1 2)))");
    ok("x = 1, 2,", "(program (bind (seq x) (tuple 1 2)))");
    ok("x = 1; y = 2", "(program (bind (seq x) 1) (bind (seq y) 2))");
}

/* ---- members ---- */

Test(parser, members) {
    ok("model Linear(in_features, out_features) {\n"
       "    param weight: f32[out_features, in_features] = kaiming_uniform(a = sqrt(5))\n"
       "    param b: f32[out_features]\n"
       "    buffer steps: i64[] = zeros()\n"
       "    forward(x: f32[..., in_features]) -> f32[..., out_features] = x @ weight.T + b\n"
       "    training_step(x, y) {\n        return loss\n    }\n"
       "    on_fit_start() {}\n"
       "    optimizer = adam(lr = lr)\n"
       "    log_every(10)\n"
       "}",
       "(program (model Linear (seq (param in_features _ _) (param out_features _ _)) (seq "
       "(param weight (index f32 out_features in_features) (call kaiming_uniform (kwarg a (call sqrt 5)))) "
       "(param b (index f32 out_features) _) "
       "(buffer steps (index i64) (call zeros)) "
       "(method forward (seq (param x (index f32 ... in_features) _)) (index f32 ... out_features) "
       "(+ (@ x (. weight T)) b)) "
       "(method training_step (seq (param x _ _) (param y _ _)) _ (seq (return loss))) "
       "(method on_fit_start (seq) _ (seq)) "
       "(bind (seq optimizer) (call adam (kwarg lr lr))) "
       "(expr (call log_every 10)))))");
}

Test(parser, optimizers_dict) {
    ok("model GAN {\n    optimizers = {\n        G: adam(lr = lr, betas = (0.5, 0.999)),\n"
       "        D: adam(lr = lr),\n    }\n    optimizers { G: sgd() }\n}",
       "(program (model GAN _ (seq (bind (seq optimizers) (dict (entry G (call adam (kwarg lr lr) "
       "(kwarg betas (tuple 0.5f 0.999f)))) (entry D (call adam (kwarg lr lr))))) "
       "(expr (call optimizers (dict (entry G (call sgd))))))))");
}

/* ---- statements ---- */

Test(parser, statements) {
    ok("fn f(x) {\n"
       "    h = relu(x)\n"
       "    mu, logvar = encode(x)\n"
       "    log(\"loss\", h, prog_bar = true)\n"
       "    return\n"
       "    return h\n"
       "    return mu, logvar\n"
       "}",
       "(program (fn f (seq (param x _ _)) _ (seq "
       "(bind (seq h) (call relu x)) "
       "(bind (seq mu logvar) (call encode x)) "
       "(expr (call log \"loss\" h (kwarg prog_bar true))) "
       "(return _) (return h) (return (tuple mu logvar)))))");
}

Test(parser, if_else) {
    ok("fn f() {\n    if a { b() }\n    if a { b() } else { c() }\n"
       "    if a { b() } else if c { d() } else { e() }\n    if not done {\n        x = 1\n    } else {\n    }\n}",
       "(program (fn f (seq) _ (seq "
       "(if a (seq (expr (call b))) _) "
       "(if a (seq (expr (call b))) (seq (expr (call c)))) "
       "(if a (seq (expr (call b))) (if c (seq (expr (call d))) (seq (expr (call e))))) "
       "(if (not done) (seq (bind (seq x) 1)) (seq)))))");
}

Test(parser, for_loops) {
    ok("fn f() {\n    for i, block in enumerate(blocks) { h = block(h) }\n    for b in bs {\n    }\n}",
       "(program (fn f (seq) _ (seq "
       "(for (seq i block) (call enumerate blocks) (seq (bind (seq h) (call block h)))) "
       "(for (seq b) bs (seq)))))");
}

/* ---- expressions ---- */

Test(parser, primaries) {
    ex("name", "name");
    ex("42", "42");
    ex("60_000", "60000");
    ex("2.5", "2.5f");
    ex("\"s\"", "\"s\"");
    ex("f32", "f32");
    ex("true", "true");
    ex("false", "false");
    ex("none", "none");
    ex("...", "...");
    ex("(a)", "a");
    ex("((a))", "a");
}

Test(parser, operators) {
    static const char *ops[] = {"or", "and", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/",
                                "%", "@", "**"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        char e[64], want[64];
        snprintf(e, sizeof e, "a %s b", ops[i]);
        snprintf(want, sizeof want, "(%s a b)", ops[i]);
        ex(e, want);
    }
    ex("-a", "(- a)");
    ex("+a", "(+ a)");
    ex("not a", "(not a)");
    ex("- -a", "(- (- a))");
    ex("not not a", "(not (not a))");
}

Test(parser, precedence) {
    ex("-x ** 2", "(- (** x 2))");
    ex("2 ** -1", "(** 2 (- 1))");
    ex("a ** b ** c", "(** a (** b c))");
    ex("(a ** b) ** c", "(** (** a b) c)");
    ex("not a == b", "(not (== a b))");
    ex("a - b - c", "(- (- a b) c)");
    ex("a / b * c % d", "(% (* (/ a b) c) d)");
    ex("a @ b + c", "(+ (@ a b) c)");
    ex("a + b @ c", "(+ a (@ b c))");
    ex("a or b and c", "(or a (and b c))");
    ex("a and b or c", "(or (and a b) c)");
    ex("not a and b", "(and (not a) b)");
    ex("a < b + c", "(< a (+ b c))");
    ex("-a * b", "(* (- a) b)");
    ex("-a.b(c)[d]", "(- (index (call (. a b) c) d))");
    ex("a == b and c != d", "(and (== a b) (!= c d))");
    ex("(a < b) < c", "(< (< a b) c)");
    ex("x ** -y ** z", "(** x (- (** y z)))");
    ex("a + not b == c", "(+ a (not (== b c)))");
}

Test(parser, postfix) {
    ex("f()", "(call f)");
    ex("f(a, b = 1)", "(call f a (kwarg b 1))");
    ex("f(a)(b)", "(call (call f a) b)");
    ex("x.sum(dim = 1)", "(call (. x sum) (kwarg dim 1))");
    ex("x.T", "(. x T)");
    ex("a.b.c", "(. (. a b) c)");
    ex("x[0]", "(index x 0)");
    ex("x[:, 0]", "(index x (slice _ _ _) 0)");
    ex("x[1:10:2]", "(index x (slice 1 10 2))");
    ex("f32[B, 784]", "(index f32 B 784)");
    ex("i64[]", "(index i64)");
    ex("(2).T", "(. 2 T)");
    ex("\"s\".upper()", "(call (. \"s\" upper))");
    ex("[1][0]", "(index (list 1) 0)");
}

Test(parser, tuples) {
    ex("()", "(tuple)");
    ex("(a,)", "(tuple a)");
    ex("(a, b)", "(tuple a b)");
    ex("(a, b,)", "(tuple a b)");
    ex("((a, b), c)", "(tuple (tuple a b) c)");
    ex("(a)", "a");
}

Test(parser, slices) {
    ex("x[:]", "(index x (slice _ _ _))");
    ex("x[::2]", "(index x (slice _ _ 2))");
    ex("x[1:]", "(index x (slice 1 _ _))");
    ex("x[:5]", "(index x (slice _ 5 _))");
    ex("x[1:2:]", "(index x (slice 1 2 _))");
    ex("x[::]", "(index x (slice _ _ _))");
    ex("x[..., -1]", "(index x ... (- 1))");
    ex("x[a:b, c, ...]", "(index x (slice a b _) c ...)");
    ex("x[0,]", "(index x 0)");
}

Test(parser, lists_and_dicts) {
    ex("[]", "(list)");
    ex("[1]", "(list 1)");
    ex("[1, 2,]", "(list 1 2)");
    ex("[\n    1,\n    2,\n]", "(list 1 2)");
    ex("{}", "(dict)");
    ex("{a: 1}", "(dict (entry a 1))");
    ex("{a: 1, \"b c\": 2,}", "(dict (entry a 1) (entry \"b c\" 2))");
    ex("{\n    G: g_loss,\n    D: d_loss\n}", "(dict (entry G g_loss) (entry D d_loss))");
    ex("[csv, tensorboard]", "(list csv tensorboard)");
}

/* `model data trainer fn param buffer use as` are names where a declaration cannot start. */
Test(parser, keywords_as_names) {
    ex("data.vocab_size", "(. data vocab_size)");
    ex("f(model = 1, data = 2, param = 3)", "(call f (kwarg model 1) (kwarg data 2) (kwarg param 3))");
    ex("x.model", "(. x model)");
    ex("{data: 1, fn: 2}", "(dict (entry data 1) (entry fn 2))");
    ex("[use, as, buffer, trainer]", "(list use as buffer trainer)");
    ok("model M(data = 1) {\n    vocab = data.vocab_size\n    data = 2\n    trainer(x) = x\n}",
       "(program (model M (seq (param data _ 1)) (seq (bind (seq vocab) (. data vocab_size)) "
       "(bind (seq data) 2) (method trainer (seq (param x _ _)) _ x))))");
    ok("fn f(model) {\n    for data in model { fn = data }\n}",
       "(program (fn f (seq (param model _ _)) _ (seq (for (seq data) model (seq (bind (seq fn) data))))))");
    ok("trainer data {}", "(program (trainer data (seq)))");
    /* where a declaration can start, the keyword is the keyword */
    err("model = 1", "t.ltl:1:7: error: unexpected '=', expected name\n");
    err("model M {\n    param = 1\n}", "t.ltl:2:11: error: unexpected '=', expected name\n");
}

/* ---- line ends ---- */

Test(parser, line_ends) {
    ok("x = f(\n    1,\n    2\n)", "(program (bind (seq x) (call f 1 2)))");
    ok("x = 1 +\n    2", "(program (bind (seq x) (+ 1 2)))");
    ok("x = a and\n    b", "(program (bind (seq x) (and a b)))");
    ok("x =\n    1", "(program (bind (seq x) 1))");
    ok("x = [1,\n     2]", "(program (bind (seq x) (list 1 2)))");
    ok("x = y[\n    0\n]", "(program (bind (seq x) (index y 0)))");
    ok("x = (a\n     + b)", "(program (bind (seq x) (+ a b)))");
    ok("model M {\n    forward(x)\n    -> f32 = x\n}", "(program (model M _ (seq (expr (call forward x)))))"
       "" /* placeholder, replaced below */);
}
