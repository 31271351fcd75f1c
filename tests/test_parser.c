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

/* Everything a test allocates is kept here and freed after it (the suite's .fini), so the
 * suite runs clean under LeakSanitizer. */
static void *kept[1 << 14];
static int nkept;
static void *keep(void *p) {
    cr_assert_lt(nkept, (int)(sizeof kept / sizeof *kept));
    return kept[nkept++] = p;
}
typedef struct Parsed Parsed;
static Parsed *parses[1024];
static int nparses;
static void release(void);
TestSuite(parser, .fini = release);

struct Parsed {
    Ast ast;
    Node *root;
    char *text;
    char *diags; /* what diag printed */
    size_t diags_len;
    int nerrors;
};

static Parsed *new_parsed(void) {
    cr_assert_lt(nparses, (int)(sizeof parses / sizeof *parses));
    return parses[nparses++] = calloc(1, sizeof(Parsed));
}

static void release(void) {
    while (nparses) {
        Parsed *P = parses[--nparses];
        ast_free(&P->ast);
        free(P->text);
        free(P->diags);
        free(P);
    }
    while (nkept) free(kept[--nkept]);
    diag_reset();
}

/* Parses src as "t.ltl", capturing diagnostics. The buffers live until the test ends. */
static Parsed *parse_n(const char *src, size_t len) {
    Parsed *P = new_parsed();
    char *text = P->text = malloc(len + 1);
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
    cr_expect_str_eq(got, want, "%s\nparsed to\n%s\nnot\n%s", src, got, want);
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
    cr_expect_str_eq(b.s, want, "%s\ngave:\n%s", src, P->diags);
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
    ok("model MLP(n, hidden1 = 128, lr = 1e-3, act: str = \"relu\") {\n    l1 = nn.Linear(28 * 28, hidden1)\n}",
       "(program (model MLP (seq (param n _ _) (param hidden1 _ 128) (param lr _ 0.001f) (param act str \"relu\")) "
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
       "        D: adam(lr = lr),\n    }\n}",
       "(program (model GAN _ (seq (bind (seq optimizers) (dict (entry G (call adam (kwarg lr lr) "
       "(kwarg betas (tuple 0.5f 0.999f)))) (entry D (call adam (kwarg lr lr))))))))");
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
    err("model = 1", "t.ltl:1:7: error: unexpected '=', expected name ('model' is a keyword where a declaration can start)\n");
    err("model M {\n    param = 1\n}", "t.ltl:2:11: error: unexpected '=', expected name ('param' is a keyword where a declaration can start)\n");
    err("use.x = 1", "t.ltl:1:4: error: unexpected '.', expected name ('use' is a keyword where a declaration can start)\n");
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
    /* a line that ends with a name, a literal or a closer ends the statement */
    ok("fn f() {\n    x = 1\n    + 2\n    return\n    x\n}",
       "(program (fn f (seq) _ (seq (bind (seq x) 1) (expr (+ 2)) (return _) (expr x))))");
    ok("fn f() {\n    g(x)\n    (y)\n}", "(program (fn f (seq) _ (seq (expr (call g x)) (expr y))))");
    ok("x = 1;\ny = 2;", "(program (bind (seq x) 1) (bind (seq y) 2))");
    ok("x = 1\r\ny = 2\r\n", "(program (bind (seq x) 1) (bind (seq y) 2))");
    err("model M {\n    forward(x)\n    -> f32 = x\n}",
        "t.ltl:3:5: error: expected a binding, 'param', 'buffer', a method or a directive, or '}' to close '{' at 1:9, found '->'\n");
}

Test(parser, else_on_the_next_line) {
    err("fn f() {\n    if a { b() }\n    else { c() }\n}",
        "t.ltl:3:5: error: 'else' must be on the same line as the '}' before it\n"
        "    3 |     else { c() }\n"
        "      |     ^~~~\n");
    ok("fn f() {\n    if a {\n        b()\n    } else {\n        c()\n    }\n}",
       "(program (fn f (seq) _ (seq (if a (seq (expr (call b))) (seq (expr (call c)))))))");
}

/* ---- arguments and parameters ---- */

Test(parser, argument_rules) {
    err("x = f(a = 1, 2)", "t.ltl:1:14: error: positional argument after keyword arguments\n");
    err("x = f(a = 1, b = 2, a = 3)", "t.ltl:1:21: error: keyword argument 'a' given twice\n");
    err("x = f(a: f32)", "t.ltl:1:7: error: a type annotation belongs in a parameter list, not in a call\n");
    err("x = f(a: f32 = 1)", "t.ltl:1:7: error: a type annotation belongs in a parameter list, not in a call\n");
    err("x = f(1 = 2)", "t.ltl:1:7: error: expected a name before '=' (keyword arguments are name = value)\n");
    err("x = f(1 = 2, 1 = 3, a = 1, a = 2)",
        "t.ltl:1:7: error: expected a name before '=' (keyword arguments are name = value)\n"
        "t.ltl:1:14: error: expected a name before '=' (keyword arguments are name = value)\n"
        "t.ltl:1:28: error: keyword argument 'a' given twice\n");
    err("fn f(1 = 2, 1: f32, a) = 1", "t.ltl:1:6: error: expected a name before '=' (keyword arguments are name = value)\n"
                                   "t.ltl:1:13: error: expected a parameter name before ':'\n");
    err("x = f(a.b = 2)", "t.ltl:1:7: error: expected a name before '=' (keyword arguments are name = value)\n");
    /* each error is reported, not only the first */
    err("x = f(a = 1, 2, a = 3, 4)", "t.ltl:1:14: error: positional argument after keyword arguments\n"
                                     "t.ltl:1:17: error: keyword argument 'a' given twice\n"
                                     "t.ltl:1:24: error: positional argument after keyword arguments\n");
}

Test(parser, parameter_rules) {
    err("fn f(a = 1, b) = a", "t.ltl:1:13: error: parameter 'b' needs a default: it follows one that has a default\n");
    err("fn f(a, b: f32, a) = a", "t.ltl:1:17: error: parameter 'a' declared twice\n");
    err("model M(a, a = 1) {}", "t.ltl:1:12: error: parameter 'a' declared twice\n");
    err("fn f(1) = 1", "t.ltl:1:6: error: expected a parameter name\n");
    err("fn f(g(x)) = 1", "t.ltl:1:6: error: expected a parameter name\n");
    err("fn f(a.b: f32) = 1", "t.ltl:1:6: error: expected a parameter name before ':'\n");
    err("model M {\n    forward(x = 1, y) = x\n}",
        "t.ltl:2:20: error: parameter 'y' needs a default: it follows one that has a default\n");
    ok("fn f(a, b: f32, c = 1, d: i64 = 2,) = a",
       "(program (fn f (seq (param a _ _) (param b f32 _) (param c _ 1) (param d i64 2)) _ a))");
}

/* ---- syntax errors ---- */

Test(parser, syntax_error_messages) {
    err("x = f(1, 2\nmodel M {}", "t.ltl:2:1: error: expected ')' to close '(' at 1:6, found 'model'\n"
                                 "    2 | model M {}\n"
                                 "      | ^~~~~\n");
    err("x = [1, 2", "t.ltl:1:10: error: expected ']' to close '[' at 1:5, found end of file\n");
    err("x = (1, 2]", "t.ltl:1:10: error: mismatched ']': expected ')' to close '(' at 1:5\n");
    err("x = f(1, [2)", "t.ltl:1:12: error: expected ']' to close '[' at 1:10, found ')'\n");
    err("x = 1)", "t.ltl:1:6: error: unmatched ')'\n");
    err("}", "t.ltl:1:1: error: unmatched '}'\n");
    err("x = a < b < c", "t.ltl:1:11: error: comparisons do not chain: write 'a < b and b < c', or add parentheses\n");
    err("x = a == b != c", "t.ltl:1:12: error: comparisons do not chain: write 'a < b and b < c', or add parentheses\n");
    err("x = 1 +* 2", "t.ltl:1:8: error: unexpected '*', expected an expression\n");
    err("x = 1 2", "t.ltl:1:7: error: unexpected number '2', expected end of line\n");
    err("x = ", "t.ltl:1:5: error: unexpected end of file, expected an expression\n");
    err("x =\n", "t.ltl:2:1: error: unexpected end of file, expected an expression\n");
    err("if a { b }", "t.ltl:1:1: error: expected 'use', 'model', 'data', 'trainer', 'fn' or a binding, found 'if'\n");
    err("return 1", "t.ltl:1:1: error: expected 'use', 'model', 'data', 'trainer', 'fn' or a binding, found 'return'\n");
    err("1 + 2", "t.ltl:1:1: error: expected 'use', 'model', 'data', 'trainer', 'fn' or a binding, found number '1'\n");
    err("model M {\n    return 1\n}",
        "t.ltl:2:5: error: expected a binding, 'param', 'buffer', a method or a directive, or '}' to close '{' at 1:9, found 'return'\n");
    err("fn f() {\n    param w: f32\n}",
        "t.ltl:2:11: error: expected end of line or '}' to close '{' at 1:8, found name 'w'\n");
    err("use nn.", "t.ltl:1:8: error: unexpected end of file, expected name\n");
    err("use 1", "t.ltl:1:5: error: unexpected number '1', expected name\n");
    err("model {}", "t.ltl:1:7: error: unexpected '{', expected name\n");
    err("x = f32[B, {", "t.ltl:1:13: error: expected name, string or '}' to close '{' at 1:12, found end of file\n");
    err("x = a.1", "t.ltl:1:6: error: unexpected number '.1', expected end of line\n");
    err("x = {a 1}", "t.ltl:1:8: error: unexpected number '1', expected ':'\n");
    err("x = {1: 2}", "t.ltl:1:6: error: expected name, string or '}' to close '{' at 1:5, found number '1'\n");
    err("a.b = 1", "t.ltl:1:2: error: unexpected '.', expected ',' or '='\n");
    err("fn f() = ", "t.ltl:1:10: error: unexpected end of file, expected an expression\n");
    err("x = dtype f32", "t.ltl:1:11: error: unexpected dtype 'f32', expected end of line\n");
}

/* Several errors in one file: each is reported, and parsing goes on after each. */
Test(parser, recovery) {
    err("x = 1 +* 2\ny = 3\nmodel M {\n    a = )\n    b = [1, 2\n}\nz = 1 1\n",
        "t.ltl:1:8: error: unexpected '*', expected an expression\n"
        "t.ltl:4:9: error: unmatched ')'\n"
        "t.ltl:6:1: error: expected ']' to close '[' at 5:9, found '}'\n"
        "t.ltl:7:7: error: unexpected number '1', expected end of line\n");
    err("fn f() {\n    a = 1 +\n}\nfn g() {\n    b = (\n}\n",
        "t.ltl:3:1: error: unexpected '}', expected an expression\n"
        "t.ltl:6:1: error: expected ')' to close '(' at 5:9, found '}'\n");
    /* lexical and syntax errors together */
    err("x = \"a\\q\" + 1\ny = 3x\nz = 1 +* 2",
        "t.ltl:1:7: error: unknown escape sequence; use \\n \\t \\r \\\\ \\\" \\0 or \\u{HEX}\n"
        "t.ltl:2:5: error: malformed number '3x': a letter cannot follow a number\n"
        "t.ltl:3:8: error: unexpected '*', expected an expression\n");
}

/* Up to 20 errors are reported, then one line says the rest is not. */
Test(parser, error_cap) {
    StrBuf src = {0}, want = {0};
    for (int i = 1; i <= 30; i++) sb_printf(&src, "x%d = 1 +* 2\n", i);
    for (int i = 1; i <= DIAG_MAX_ERRORS; i++)
        sb_printf(&want, "t.ltl:%d:%d: error: unexpected '*', expected an expression\n", i, i < 10 ? 9 : 10);
    sb_puts(&want, "ltlc: too many errors (20), stopping\n");
    err(src.s, want.s);
    Parsed *P = parse(src.s);
    cr_assert(diag_too_many());
    cr_assert_eq(P->nerrors, DIAG_MAX_ERRORS);
    sb_free(&src);
    sb_free(&want);
}

/* ---- limits: each a clean error, quickly (the bound is loose: sanitizers, a busy machine;
 * what it catches is quadratic time, which takes minutes here) ---- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* "x = " + n copies of `rep` + `mid` + n copies of `close` */
static char *nest(const char *rep, const char *mid, const char *close, int n) {
    StrBuf b = {0};
    sb_puts(&b, "x = ");
    for (int i = 0; i < n; i++) sb_puts(&b, rep);
    sb_puts(&b, mid);
    for (int i = 0; i < n; i++) sb_puts(&b, close);
    sb_putc(&b, '\n');
    return keep(b.s);
}

static void limit(const char *src, const char *want_first_line) {
    double t0 = now();
    Parsed *P = parse(src);
    double dt = now() - t0;
    cr_assert_lt(dt, 5.0, "took %.2f s", dt);
    cr_assert_eq(P->nerrors, 1, "%d errors:\n%.2000s", P->nerrors, P->diags);
    cr_assert_eq(strncmp(P->diags, want_first_line, strlen(want_first_line)), 0, "got:\n%.500s", P->diags);
    ast_free(&P->ast);
}

Test(parser, deep_parentheses) {
    limit(nest("(", "1", ")", 100000), "t.ltl:1:261: error: brackets nested too deeply (more than 256 levels)\n");
    limit(nest("[", "1", "]", 100000), "t.ltl:1:261: error: brackets nested too deeply (more than 256 levels)\n");
    limit(nest("f(", "1", ")", 100000), "t.ltl:1:518: error: brackets nested too deeply (more than 256 levels)\n");
    /* 256 levels are fine */
    Parsed *P = parse(nest("(", "1", ")", 256));
    cr_assert_str_eq(P->diags, "");
}

Test(parser, deep_unary) {
    limit(nest("-", "1", "", 100000), "t.ltl:1:4001: error: input nested too deeply for the parser\n");
    limit(nest("not ", "a", "", 100000), "t.ltl:1:15989: error: input nested too deeply for the parser\n");
    limit(nest("-", "1", "", 2000), "t.ltl:1:1006: error: expression nested too deeply (more than 1000 levels)\n");
}

Test(parser, long_sum) {
    char *src = nest("1 + ", "1", "", 100000);
    limit(src, "t.ltl:1:5: error: expression nested too deeply (more than 1000 levels)\n");
    limit(nest("a ** ", "a", "", 100000), "t.ltl:1:");
}

Test(parser, long_member_chain) {
    limit(nest("", "a", ".b", 5000), "t.ltl:1:5: error: expression nested too deeply (more than 1000 levels)\n");
    limit(nest("", "a", "[0]", 5000), "t.ltl:1:5: error: expression nested too deeply (more than 1000 levels)\n");
    limit(nest("", "f", "(1)", 5000), "t.ltl:1:5: error: expression nested too deeply (more than 1000 levels)\n");
    /* a long flat list is not deep */
    StrBuf b = {0};
    sb_puts(&b, "x = [");
    for (int i = 0; i < 100000; i++) sb_puts(&b, "1, ");
    sb_puts(&b, "]\n");
    Parsed *P = parse(keep(b.s));
    cr_assert_str_eq(P->diags, "");
    cr_assert_eq(P->root->kids[0]->kids[1]->nkids, 100000);
}

/* Long flat lists stay linear: keyword arguments and parameters are checked for repeats by
 * sorting, a dotted `use` path is joined once. */
Test(parser, no_quadratic_time) {
    StrBuf k = {0}, p = {0}, u = {0};
    sb_puts(&k, "x = f(");
    sb_puts(&p, "fn f(");
    for (int i = 0; i < 100000; i++) {
        sb_printf(&k, "a%d = 1, ", i);
        sb_printf(&p, "a%d, ", i);
    }
    size_t kcol = k.len + 1, pcol = p.len + 1; /* where the repeats are */
    sb_puts(&k, "a7 = 2)\n");
    sb_puts(&p, "a9) = 1\n");
    sb_puts(&u, "use a");
    for (int i = 0; i < 100000; i++) sb_puts(&u, ".b");
    sb_puts(&u, "\n");
    double t0 = now();
    Parsed *K = parse(keep(k.s)), *P = parse(keep(p.s)), *U = parse(keep(u.s));
    cr_assert_lt(now() - t0, 5.0, "took %.2f s", now() - t0);
    char want[128];
    snprintf(want, sizeof want, "t.ltl:1:%zu: error: keyword argument 'a7' given twice\n", kcol);
    cr_assert_str_eq(K->diags, want);
    snprintf(want, sizeof want, "t.ltl:1:%zu: error: parameter 'a9' declared twice\n", pcol);
    cr_assert_str_eq(P->diags, want);
    cr_assert_str_eq(U->diags, "");
    cr_assert_eq(strlen(U->root->kids[0]->name), 1 + 2 * 100000);
}

Test(parser, deep_else_if) {
    StrBuf b = {0};
    sb_puts(&b, "fn f() {\n    if a { }");
    for (int i = 0; i < 5000; i++) sb_puts(&b, " else if a { }");
    sb_puts(&b, "\n}\n");
    double t0 = now();
    Parsed *P = parse(keep(b.s));
    cr_assert_lt(now() - t0, 5.0);
    cr_assert_eq(P->nerrors, 1, "%.500s", P->diags);
}

/* ---- files ---- */

static char *temp_file(const char *content, size_t len) {
    char *path = keep(strdup("/tmp/ltl-test-XXXXXX"));
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static Parsed *parse_path(const char *path, char **text) {
    Parsed *P = new_parsed();
    diag_reset();
    FILE *f = open_memstream(&P->diags, &P->diags_len);
    diag_set_output(f);
    P->root = parse_file(&P->ast, path, text);
    P->nerrors = diag_error_count();
    fclose(f);
    diag_set_output(NULL);
    return P;
}

Test(parser, huge_file_is_refused) {
    char *path = temp_file("", 0);
    cr_assert_eq(truncate(path, (off_t)SOURCE_MAX_BYTES + 1), 0); /* sparse: quick to make */
    char *text = NULL;
    Parsed *P = parse_path(path, &text);
    unlink(path);
    cr_assert_null(P->root);
    cr_assert_null(text);
    cr_assert_eq(P->nerrors, 1);
    char want[256];
    snprintf(want, sizeof want, "ltlc: error: %s is too large (more than 64 MiB)\n", path);
    cr_assert_str_eq(P->diags, want);
}

Test(parser, file_at_the_limit_is_read) {
    /* exactly 64 MiB: read (then refused by the lexer for its NUL bytes, in one error each up to the cap) */
    char *path = temp_file("", 0);
    cr_assert_eq(truncate(path, (off_t)SOURCE_MAX_BYTES), 0);
    char *text = NULL;
    Parsed *P = parse_path(path, &text);
    unlink(path);
    cr_assert_not_null(text);
    cr_assert_eq(P->nerrors, DIAG_MAX_ERRORS);
    cr_assert(strstr(P->diags, ":1:1: error: NUL byte in source\n"));
    free(text);
}

Test(parser, missing_file) {
    char *text = NULL;
    Parsed *P = parse_path("/nonexistent/x.ltl", &text);
    cr_assert_null(P->root);
    cr_assert_str_eq(P->diags, "ltlc: error: cannot open /nonexistent/x.ltl: No such file or directory\n");
    P = parse_path("/tmp", &text);
    cr_assert_null(P->root);
    cr_assert_str_eq(P->diags, "ltlc: error: /tmp is a directory\n");
}

/* ---- round trip: parse → print → parse gives the same tree; printing is stable ---- */

static char *print_tree(const Node *root) {
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    ast_print(f, root);
    fclose(f);
    return s;
}

/* Returns false when text does not parse cleanly (nothing checked then). */
static bool round_trip(const char *name, const char *text, size_t len) {
    Parsed *P = parse_n(text, len);
    if (P->nerrors) return false;
    char *p1 = print_tree(P->root);
    Parsed *Q = parse(p1);
    cr_assert_eq(Q->nerrors, 0, "%s: the print does not parse:\n%s\n%s", name, Q->diags, p1);
    cr_assert(ast_equal(P->root, Q->root), "%s: the print parses to another tree:\n%s", name, p1);
    char *p2 = print_tree(Q->root);
    cr_assert_str_eq(p1, p2, "%s: printing twice differs", name);
    free(p1);
    free(p2);
    ast_free(&P->ast);
    ast_free(&Q->ast);
    return true;
}

static int round_trip_glob(const char *pattern, bool all_must_parse) {
    glob_t g;
    int n = 0;
    if (glob(pattern, 0, NULL, &g) != 0) return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        size_t len;
        char *e = NULL;
        char *text = read_file(g.gl_pathv[i], &len, SOURCE_MAX_BYTES, &e);
        cr_assert_not_null(text, "%s", e);
        bool ok = round_trip(g.gl_pathv[i], text, len);
        if (all_must_parse) cr_assert(ok, "%s does not parse", g.gl_pathv[i]);
        n += ok;
        free(text);
    }
    globfree(&g);
    return n;
}

Test(parser, round_trip_examples) {
    round_trip_glob(SRCDIR "/examples/*.ltl", true);
    round_trip_glob(SRCDIR "/stdlib/*.ltl", true);
}

Test(parser, round_trip_goldens) {
    int n = round_trip_glob(SRCDIR "/tests/frontend/*.ltl", false);
    cr_assert_gt(n, 0, "no golden input parses cleanly");
}

Test(parser, round_trip_snippets) {
    static const char *snippets[] = {
        "x = -x ** 2\ny = (-x) ** 2\nz = 2 ** -1\nw = a ** b ** c\nv = (a ** b) ** c\n",
        "x = not a == b\ny = (not a) == b\nz = a + (not b)\nw = -(a + b)\nv = -(-a)\nu = a - -b\n",
        "x = (a < b) < c\ny = a < (b < c)\nz = a - (b - c)\nw = a / (b * c)\n",
        "x = (2).T\ny = (2.5).T\nz = (-2).T\nw = \"s\".T\nv = (1, 2).T\n",
        "x = \"\\n\\t\\r\\\\\\\"\\0 \\u{1F600} \\u{0}\"\ny = {\"a\\0b\": 1, \"a\": 2}\n",
        "x = 1_000.5e+2 + 60_000 + .25 + 2. + 1e-3\n",
        "x = f(a, b = 1)[:, 0, 1:2, ::3, ...].y\n",
        "x = ()\ny = (a,)\nz = (a, b)\nw = [a, (b,), []]\nv = {}\n",
        "model M(a = 1) {\n    param w: f32[a, 2] = zeros()\n    buffer b: i64[]\n"
        "    f(x: f32[..., a]) -> f32[..., a] = x @ w.T\n    loader(batch = 1)\n"
        "    g() {\n        if a { return } else if b { return 1, 2 } else { for i in x { y = i } }\n    }\n}\n",
        "use nn\nuse a.b as c\ntrainer t {\n    x = 1\n}\nfn f() = 1\ndata D {}\n",
        "x = data.model + f(model = 1)\n",
        "x = a or b and not c\ny = (a or b) and c\n",
        "x = \"tab\there\" + \"\x01\x7f\"\n",
        "x = a + not b + not c\ny = (a + not b) == c\nz = a ** not b\nw = -(not x) + 1\nv = not a or b\n",
        "x = f(not a, b = not c)[not d]\ny = [not a, -b]\nz = {a: not b}\nfn f(a = not b) -> not c = not d\n",
        "x = - -a\ny = -+a\nz = (- -a) * b\nw = a - -b\nv = a ** -b * c\n",
    };
    for (size_t i = 0; i < sizeof snippets / sizeof *snippets; i++) {
        char name[32];
        snprintf(name, sizeof name, "snippet %zu", i);
        cr_assert(round_trip(name, snippets[i], strlen(snippets[i])), "%s does not parse:\n%s", name,
                  parse(snippets[i])->diags);
    }
}

/* The print nests no deeper than the source: a prefix operator at the end of an expression
 * needs no parentheses (fuzzer finds: 300 nested minus signs printed as -(-(-(... went past
 * the bracket limit, so the print did not parse). */
Test(parser, print_adds_no_nesting) {
    StrBuf a = {0}, b = {0}, c = {0};
    sb_puts(&a, "x = ");
    for (int i = 0; i < 900; i++) sb_puts(&a, "-");
    sb_puts(&a, "none - -trainer\n");
    sb_puts(&b, "x = a");
    for (int i = 0; i < 300; i++) sb_puts(&b, " + not b");
    sb_puts(&b, "\n");
    sb_puts(&c, "x = ");
    for (int i = 0; i < 300; i++) sb_puts(&c, "a ** -");
    sb_puts(&c, "a\n");
    cr_assert(round_trip("unary chain", a.s, a.len), "%s", parse(a.s)->diags);
    cr_assert(round_trip("not chain", b.s, b.len), "%s", parse(b.s)->diags);
    cr_assert(round_trip("power chain", c.s, c.len), "%s", parse(c.s)->diags);
    Parsed *P = parse("x = a + not b + not c\ny = - - -x\n");
    char *p = print_tree(P->root);
    cr_assert_str_eq(p, "x = a + not b + not c\ny = - - -x\n");
    free(p);
    sb_free(&a);
    sb_free(&b);
    sb_free(&c);
}

/* The printer's output for a few trees, exactly. */
Test(parser, canonical_form) {
    Parsed *P = parse("model M(b:f32,a=1) {\n  forward(x) -> f32[B] {\n  return relu(x)   # c\n}\n"
                      "opt = adam(lr=1e-3)\n}\nx = (1)\ny=[1,2,]\n");
    cr_assert_str_eq(P->diags, "");
    char *p = print_tree(P->root);
    cr_assert_str_eq(p, "model M(b: f32, a = 1) {\n"
                        "    forward(x) -> f32[B] {\n"
                        "        return relu(x)\n"
                        "    }\n"
                        "    opt = adam(lr = 1e-3)\n"
                        "}\n"
                        "\n"
                        "x = 1\n"
                        "y = [1, 2]\n");
    char *e = ast_print_expr(P->root->kids[0]->kids[1]->kids[0]->kids[2]->kids[0]->kids[0]);
    cr_assert_str_eq(e, "relu(x)");
    free(e);
    free(p);
}

/* ast_equal looks at kinds, names, operators, values and kids, not at spans or spellings. */
Test(parser, ast_equal) {
    Parsed *a = parse("x = f(1, \"s\", 2.5)\n");
    Parsed *b = parse("x   =   f( 1 ,\"s\",2.50 )");
    Parsed *c = parse("x = f(1, \"s\", 2.6)\n");
    Parsed *d = parse("x = f(1, \"t\", 2.5)\n");
    Parsed *e = parse("x = g(1, \"s\", 2.5)\n");
    Parsed *f = parse("x = f(1, \"s\")\n");
    Parsed *g = parse("x = f(1, \"s\", 2.5) + 1\n");
    Parsed *h = parse("x = f(1, \"s\\0\", 2.5)\n");
    Parsed *i = parse("x = f(1_0, \"s\", 2.5)\n");
    cr_assert(ast_equal(a->root, b->root));
    cr_assert(ast_equal(a->root, a->root));
    cr_assert(!ast_equal(a->root, c->root));
    cr_assert(!ast_equal(a->root, d->root));
    cr_assert(!ast_equal(a->root, e->root));
    cr_assert(!ast_equal(a->root, f->root));
    cr_assert(!ast_equal(a->root, g->root));
    cr_assert(!ast_equal(a->root, h->root));
    cr_assert(!ast_equal(a->root, i->root));
    cr_assert(!ast_equal(a->root, NULL));
    cr_assert(ast_equal(NULL, NULL));
}
