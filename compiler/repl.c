/* repl.c — `ltlc repl`: an interactive session of tensors, expressions and definitions.
 *
 * Every input is compiled by the same path as a file: the REPL wraps what was typed into a
 * synthetic model whose `forward()` is the expression, declares the session's tensors as
 * its buffers (`buffer x: f32[3, 4]`) and its other values as its members (`m = MLP()`),
 * puts it after every definition typed or loaded so far, and lowers it with sema_lower.
 * The graph is then compiled by the LLVM step compiler (the compiled-code cache makes a
 * repeated input cheap) or, after `:jit off`, run on the reference interpreter, with the
 * session's host buffers fed as the inputs.  docs/repl.md.
 */
#include "driver.h"
#include "front.h"
#include "ir.h"
#include "llvm.h"
#include "sema.h"
#include <ctype.h>
#include <editline/readline.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A host tensor of the session: a user binding ("x") or a model's parameter ("m.l1.weight"). */
typedef struct {
    char *name;
    IrDtype dt;
    IrShape shape;
    double *v;
} Tensor;
/* A binding whose value is not a tensor (a model instance, a number, a list): kept as its
 * source text and evaluated again, as a member of the wrapper model, where it is used. */
typedef struct {
    char *name, *text;
} Bound;
/* A definition: a loaded file or a block typed in (model, fn, use, data). */
typedef struct {
    Ast ast;
    char *name, *text;
    size_t len;
    Node *root;
} Def;

typedef struct {
    Tensor *t;
    int nt;
    Bound *b;
    int nb;
    Def **defs;
    int ndefs;
    char *path;      /* where `use` looks: the last loaded file, else "<repl>" */
    int line;        /* the session line of the input being handled */
    int64_t counter; /* the `step` input of randn without a seed: a new draw every evaluation */
    uint64_t seed;
    bool jit;
    FILE *diag;      /* diagnostics of one input, captured, then shown with fixed line numbers */
    char *diagbuf;
    size_t diaglen;
    int shift;       /* "<repl>" line numbers to subtract (the expression's "_ =" prefix) */
} Session;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- diagnostics: sources of the definitions stay registered under stable ids ---- */

static void diag_begin(Session *S) {
    fflush(stdout);
    diag_reset();
    for (int i = 0; i < S->ndefs; i++) diag_add_source(S->defs[i]->name, S->defs[i]->text, S->defs[i]->len);
    S->diag = open_memstream(&S->diagbuf, &S->diaglen);
    diag_set_output(S->diag);
    S->shift = 0;
}

/* Shows what was reported, "<repl>" line numbers corrected by S->shift. */
static void diag_end(Session *S) {
    if (!S->diag) return;
    fclose(S->diag);
    S->diag = NULL;
    diag_set_output(NULL);
    fflush(stdout);
    bool gutter = false;
    for (char *p = S->diagbuf; p && *p;) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        int num, used = 0;
        if (S->shift && !strncmp(p, "<repl>:", 7) && sscanf(p + 7, "%d%n", &num, &used) == 1) {
            fprintf(stderr, "<repl>:%d", num - S->shift);
            fwrite(p + 7 + used, 1, n - 7 - (size_t)used, stderr);
            gutter = true;
        } else if (gutter && sscanf(p, "%d |%n", &num, &used) == 1 && used) {
            fprintf(stderr, "%5d", num - S->shift);
            fwrite(strchr(p, '|') - 1, 1, n - (size_t)(strchr(p, '|') - 1 - p), stderr);
            gutter = false;
        } else fwrite(p, 1, n, stderr);
        p += n;
    }
    free(S->diagbuf);
    S->diagbuf = NULL;
    S->diaglen = 0;
    fflush(stderr);
}

static void repl_error(Session *S, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void repl_error(Session *S, const char *fmt, ...) {
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "<repl>:%d: error: ", S->line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
}

/* ---- the session's store ---- */

static Tensor *find_tensor(Session *S, const char *name) {
    for (int i = 0; i < S->nt; i++)
        if (!strcmp(S->t[i].name, name)) return &S->t[i];
    return NULL;
}

static void drop_tensor(Session *S, int i) {
    free(S->t[i].name);
    free(S->t[i].v);
    S->t[i] = S->t[--S->nt];
}

/* name is bound again: forget its old value, and a module's parameters ("name.…") */
static void forget(Session *S, const char *name) {
    size_t n = strlen(name);
    for (int i = S->nt - 1; i >= 0; i--)
        if (!strcmp(S->t[i].name, name) || (!strncmp(S->t[i].name, name, n) && S->t[i].name[n] == '.')) drop_tensor(S, i);
    for (int i = 0; i < S->nb; i++)
        if (!strcmp(S->b[i].name, name)) {
            free(S->b[i].name);
            free(S->b[i].text);
            memmove(&S->b[i], &S->b[i + 1], sizeof *S->b * (size_t)(S->nb - i - 1));
            S->nb--;
            break;
        }
}

static Tensor *store(Session *S, const char *name, IrDtype dt, IrShape shape, double *v) {
    Tensor *t = find_tensor(S, name);
    if (!t) {
        S->t = xrealloc(S->t, sizeof *S->t * (size_t)(S->nt + 1));
        t = &S->t[S->nt++];
        t->name = xstrdup(name);
    } else free(t->v);
    t->dt = dt;
    t->shape = shape;
    t->v = v;
    return t;
}

/* ---- names an expression reads ---- */

typedef struct { char **s; int n; } Names;

static bool names_has(const Names *ns, const char *s, size_t len) {
    for (int i = 0; i < ns->n; i++)
        if (strlen(ns->s[i]) == len && !strncmp(ns->s[i], s, len)) return true;
    return false;
}
static void names_add(Names *ns, const char *s, size_t len) {
    if (names_has(ns, s, len)) return;
    ns->s = xrealloc(ns->s, sizeof *ns->s * (size_t)(ns->n + 1));
    ns->s[ns->n++] = xstrndup(s, len);
}
static void names_free(Names *ns) {
    for (int i = 0; i < ns->n; i++) free(ns->s[i]);
    free(ns->s);
    *ns = (Names){0};
}
static void names_of_node(const Node *e, Names *ns) {
    if (!e) return;
    if (e->kind == N_NAME && e->name) names_add(ns, e->name, strlen(e->name));
    for (int i = 0; i < e->nkids; i++) names_of_node(e->kids[i], ns);
}
/* the identifiers of a text (a stored binding), skipping strings and comments */
static void names_of_text(const char *p, Names *ns) {
    while (*p) {
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1]) p++;
            if (*p) p++;
        } else if (*p == '#') {
            while (*p && *p != '\n') p++;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            const char *s = p;
            while (isalnum((unsigned char)*p) || *p == '_') p++;
            names_add(ns, s, (size_t)(p - s));
        } else if (isdigit((unsigned char)*p)) {
            while (isalnum((unsigned char)*p) || *p == '_' || *p == '.') p++;
        } else p++;
    }
}

/* ---- lowering an expression ---- */

typedef struct {
    Ast wast, past;  /* the wrapper model, the combined program */
    char *wtext;
    StepGraph *s;
} Lowered;

static void lowered_free(Lowered *l) {
    sema_step_free(l->s);
    ast_free(&l->past);
    ast_free(&l->wast);
    free(l->wtext);
    *l = (Lowered){0};
}

/* Wraps expr into `model Repl_ { buffers; members; it = expr; forward() =
 * it }` after every definition and lowers its forward.  The expression is a member,
 * so it may create a model (m = MLP()) as well as compute a tensor. false after errors (reported to the session's diag). */
static bool lower_expr(Session *S, Node *expr, Lowered *out, bool simplify) {
    *out = (Lowered){0};
    Names used = {0};
    names_of_node(expr, &used);
    /* the stored bindings it reads, and the ones they read, to a fixed point */
    for (bool more = true; more;) {
        more = false;
        for (int i = 0; i < S->nb; i++) {
            int before = used.n;
            if (names_has(&used, S->b[i].name, strlen(S->b[i].name))) names_of_text(S->b[i].text, &used);
            more |= used.n > before;
        }
    }
    StrBuf w = {0};
    sb_puts(&w, "model Repl_() {\n");
    for (int i = 0; i < S->nt; i++) {
        if (strchr(S->t[i].name, '.') || !names_has(&used, S->t[i].name, strlen(S->t[i].name))) continue;
        bool shadowed = false;
        for (int j = 0; j < S->nb; j++) shadowed |= !strcmp(S->b[j].name, S->t[i].name);
        if (shadowed) continue;
        sb_printf(&w, "    buffer %s: %s[", S->t[i].name, ir_dtype_name(S->t[i].dt));
        for (int d = 0; d < S->t[i].shape.rank; d++) sb_printf(&w, "%s%lld", d ? ", " : "", (long long)S->t[i].shape.d[d]);
        sb_puts(&w, "]\n");
    }
    for (int i = 0; i < S->nb; i++)
        if (names_has(&used, S->b[i].name, strlen(S->b[i].name))) sb_printf(&w, "    %s = %s\n", S->b[i].name, S->b[i].text);
    sb_puts(&w, "    it = 0\n    forward() = it\n    training_step() = 0\n}\n");
    names_free(&used);
    out->wtext = w.s;
    Node *wroot = parse_source(&out->wast, "<session>", w.s, w.len);
    if (!wroot || diag_error_count()) return false;
    for (int k = 0; k < wroot->nkids; k++) {
        Node *model = wroot->kids[k];
        for (int i = 0; model && model->kind == N_MODEL && i < model->kids[1]->nkids; i++) {
            Node *m = model->kids[1]->kids[i];
            if (m->kind == N_BIND && !strcmp(m->kids[0]->kids[0]->name, "it")) m->kids[1] = expr;
        }
    }
    Node *prog = ast_node(&out->past, N_PROGRAM, (Span){0});
    for (int d = 0; d < S->ndefs; d++)
        for (int i = 0; S->defs[d]->root && i < S->defs[d]->root->nkids; i++)
            if (S->defs[d]->root->kids[i]) ast_add(&out->past, prog, S->defs[d]->root->kids[i]);
    for (int i = 0; i < wroot->nkids; i++)
        if (wroot->kids[i]) ast_add(&out->past, prog, wroot->kids[i]);
    SemaOptions opt = {.check = false, .batch = 1, .seed = S->seed};
    out->s = sema_lower(prog, S->path, "forward", &opt, true);
    if (!out->s) return false;
    if (simplify) sema_simplify(out->s);
    return true;
}

/* ---- running a lowered graph ---- */

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The values of the graph's inputs from the store; parameters not there yet are drawn from
 * their initialisers (and kept, so a model's weights stay the same from line to line). */
static const double *input_values(Session *S, const StepGraph *s, int id) {
    const IrNode *n = &s->g->node[id];
    Tensor *t = n->name ? find_tensor(S, n->name) : NULL;
    if (t && t->dt == n->dtype && ir_shape_eq(t->shape, n->shape)) return t->v;
    int64_t numel = ir_numel(n->shape);
    double *v = xcalloc((size_t)(numel ? numel : 1), sizeof *v);
    if (!n->name) return NULL;
    for (int i = 0; i < s->nparams; i++) {
        const ParamInit *p = &s->params[i];
        if (strcmp(p->name, n->name)) continue;
        if (p->dist == INIT_CONST) {
            for (int64_t j = 0; j < numel; j++) v[j] = ir_round(n->dtype, p->a);
        } else {
            float *f = xmalloc(sizeof *f * (size_t)(numel ? numel : 1));
            if (p->dist == INIT_UNIFORM) philox_fill_uniform(f, numel, S->seed, name_hash(p->name), p->a, p->b);
            else philox_fill_normal(f, numel, S->seed, name_hash(p->name), p->a, p->b);
            for (int64_t j = 0; j < numel; j++) v[j] = ir_round(n->dtype, f[j]);
            free(f);
        }
    }
    return store(S, n->name, n->dtype, n->shape, v)->v;
}

/* A result: numel doubles (owned), its dtype and shape. */
typedef struct {
    double *v;
    IrDtype dt;
    IrShape shape;
} Result;

static int output_index(const IrGraph *g, int value) {
    for (int i = 0; i < g->nout; i++)
        if (g->out[i].value == value) return i;
    return -1;
}

/* Runs s once (reps times for :time); *res receives the output. NULL, or an error message. */
static const char *run_interp(Session *S, const StepGraph *s, int reps, Result *res) {
    IrGraph *g = s->g;
    IrInterp *ip = interp_new(g, false);
    const char *err = NULL;
    for (int r = 0; r < reps && !err; r++) {
        for (int i = 0; i < g->n; i++) {
            if (g->node[i].op != IR_INPUT) continue;
            if (g->node[i].kind == IR_IN_DATA && g->node[i].name && !strcmp(g->node[i].name, "step")) {
                int64_t c = S->counter++;
                interp_set(ip, i, &c);
            } else interp_set_f64(ip, i, input_values(S, s, i));
        }
        err = interp_run(ip);
    }
    if (!err && res) {
        const IrNode *o = &g->node[s->output];
        int64_t n = ir_numel(o->shape);
        res->v = xmalloc(sizeof *res->v * (size_t)(n ? n : 1));
        memcpy(res->v, interp_data(ip, s->output), sizeof *res->v * (size_t)n);
        res->dt = o->dtype;
        res->shape = o->shape;
    }
    static char msg[512];
    if (err) snprintf(msg, sizeof msg, "%s", err);
    interp_free(ip);
    return err ? msg : NULL;
}

/* The same through the LLVM step compiler: compile once, run reps times. */
static const char *run_jit(Session *S, const StepGraph *s, int reps, Result *res, double *compile_s) {
    static char err[512];
    IrGraph *g = s->g;
    LlvmStepOptions opt = {.nthreads = 1};
    double t0 = now();
    LlvmStep *ls = llvm_step_compile(g, &opt, err, sizeof err);
    if (compile_s) *compile_s = now() - t0;
    if (!ls) return err;
    IrInputKind kinds[2] = {IR_IN_PARAM, IR_IN_BUFFER};
    IrLayout lay[2];
    char *flat[2];
    for (int k = 0; k < 2; k++) {
        lay[k] = ir_layout(g, kinds[k]);
        flat[k] = xcalloc(1, (size_t)lay[k].bytes + 64);
        for (int i = 0; i < lay[k].n; i++) {
            const double *v = input_values(S, s, lay[k].slot[i].value);
            int64_t n = ir_numel(lay[k].slot[i].shape);
            for (int64_t j = 0; j < n; j++) ir_store(lay[k].slot[i].dtype, flat[k] + lay[k].slot[i].offset, j, v[j]);
        }
        llvm_step_bind(ls, kinds[k], flat[k]);
    }
    int step_id = -1;
    for (int i = 0; i < g->n; i++)
        if (g->node[i].op == IR_INPUT && g->node[i].kind == IR_IN_DATA && g->node[i].name && !strcmp(g->node[i].name, "step")) step_id = i;
    int64_t c = 0;
    if (step_id >= 0) llvm_step_set_input(ls, step_id, &c);
    const char *e = NULL;
    for (int r = 0; r < reps && !e; r++) {
        c = S->counter++;
        e = llvm_step_run(ls);
    }
    if (e) snprintf(err, sizeof err, "%s", e);
    if (!e && res) {
        const IrNode *o = &g->node[s->output];
        int64_t n = ir_numel(o->shape);
        const void *data = llvm_step_output(ls, output_index(g, s->output));
        res->v = xmalloc(sizeof *res->v * (size_t)(n ? n : 1));
        for (int64_t j = 0; j < n; j++) res->v[j] = ir_load(o->dtype, data, j);
        res->dt = o->dtype;
        res->shape = o->shape;
    }
    for (int k = 0; k < 2; k++) {
        ir_layout_free(&lay[k]);
        free(flat[k]);
    }
    llvm_step_free(ls);
    return e ? err : NULL;
}

/* ---- printing, as PyTorch prints tensors (threshold 1000, edgeitems 3, precision 4) ---- */

enum { THRESHOLD = 1000, EDGE = 3, PRECISION = 4, LINEWIDTH = 80 };

typedef struct {
    IrDtype dt;
    bool intmode, sci;
    int width;
    /* the statistics of the first pass */
    bool any;
    double amin, amax;
} Fmt;

static int fmt_value(const Fmt *f, double x, char *buf, size_t n) {
    if (f->dt == IR_BOOL) return snprintf(buf, n, "%s", x != 0 ? "True" : "False");
    if (!ir_dtype_is_float(f->dt)) return snprintf(buf, n, "%lld", (long long)x);
    if (isnan(x)) return snprintf(buf, n, "nan");
    if (isinf(x)) return snprintf(buf, n, x > 0 ? "inf" : "-inf");
    if (f->sci) return snprintf(buf, n, "%.*e", PRECISION, x);
    if (f->intmode) return snprintf(buf, n, "%.0f.", x);
    return snprintf(buf, n, "%.*f", PRECISION, x);
}

/* Calls visit on each element shown (every element, or the edges when summarised). */
typedef void (*Visit)(Fmt *f, double x);
static void each_shown(const double *v, const IrShape *s, int dim, int64_t off, bool summ, Fmt *f, Visit visit) {
    if (dim == s->rank) { visit(f, v[off]); return; }
    int64_t stride = 1;
    for (int d = dim + 1; d < s->rank; d++) stride *= s->d[d];
    for (int64_t i = 0; i < s->d[dim]; i++) {
        if (summ && s->d[dim] > 2 * EDGE && i == EDGE) i = s->d[dim] - EDGE;
        each_shown(v, s, dim + 1, off + i * stride, summ, f, visit);
    }
}
static void visit_stats(Fmt *f, double x) {
    if (!isfinite(x) || x == 0) return;
    double a = fabs(x);
    if (!f->any || a < f->amin) f->amin = a;
    if (!f->any || a > f->amax) f->amax = a;
    f->any = true;
    if (x != ceil(x)) f->intmode = false;
}
static void visit_width(Fmt *f, double x) {
    char buf[64];
    int n = fmt_value(f, x, buf, sizeof buf);
    if (n > f->width) f->width = n;
}

static void put_value(StrBuf *b, const Fmt *f, double x) {
    char buf[64];
    int n = fmt_value(f, x, buf, sizeof buf);
    for (int i = n; i < f->width; i++) sb_putc(b, ' ');
    sb_puts(b, buf);
}

static void put_tensor(StrBuf *b, const Fmt *f, const double *v, const IrShape *s, int dim, int64_t off, int indent, bool summ) {
    int64_t n = s->d[dim], stride = 1;
    for (int d = dim + 1; d < s->rank; d++) stride *= s->d[d];
    bool cut = summ && n > 2 * EDGE;
    sb_putc(b, '[');
    if (dim == s->rank - 1) {
        int per_line = (LINEWIDTH - indent) / (f->width + 2);
        if (per_line < 1) per_line = 1;
        int k = 0;
        for (int64_t i = 0; i < n; i++, k++) {
            if (k) sb_puts(b, k % per_line ? ", " : ",\n"), k % per_line ? (void)0 : sb_printf(b, "%*s", indent + 1, "");
            if (cut && i == EDGE) {
                sb_puts(b, " ...");
                i = n - EDGE - 1;
                continue;
            }
            put_value(b, f, v[off + i * stride]);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (i) {
                sb_putc(b, ',');
                for (int d = dim; d < s->rank - 1; d++) sb_putc(b, '\n');
                sb_printf(b, "%*s", indent + 1, "");
            }
            if (cut && i == EDGE) {
                sb_puts(b, "...");
                i = n - EDGE - 1;
                continue;
            }
            put_tensor(b, f, v, s, dim + 1, off + i * stride, indent + 1, summ);
        }
    }
    sb_putc(b, ']');
}

/* "tensor([[ 0.1234, -1.2345]], shape=[1, 2], dtype=f32)"; malloc'd */
static char *tensor_str(const double *v, IrDtype dt, IrShape s) {
    int64_t numel = ir_numel(s);
    bool summ = numel > THRESHOLD;
    Fmt f = {.dt = dt, .intmode = true};
    each_shown(v, &s, 0, 0, summ, &f, visit_stats);
    if (ir_dtype_is_float(dt) && f.any)
        f.sci = f.intmode ? (f.amax / f.amin > 1000.0 || f.amax > 1e8)
                          : (f.amax / f.amin > 1000.0 || f.amax > 1e8 || f.amin < 1e-4);
    each_shown(v, &s, 0, 0, summ, &f, visit_width);
    StrBuf b = {0};
    sb_puts(&b, "tensor(");
    if (s.rank == 0) put_value(&b, &f, v[0]);
    else if (numel == 0) sb_puts(&b, "[]");
    else put_tensor(&b, &f, v, &s, 0, 0, 7, summ);
    if (s.rank) {
        sb_puts(&b, ", shape=[");
        for (int d = 0; d < s.rank; d++) sb_printf(&b, "%s%lld", d ? ", " : "", (long long)s.d[d]);
        sb_putc(&b, ']');
    }
    sb_printf(&b, ", dtype=%s)", ir_dtype_name(dt));
    return b.s;
}

/* ---- parsing what was typed ---- */

/* Parses text (typed at session line S->line, its first character at column col0 + 1) as
 * one expression: "_ =" is put on the line before it, so its spans are those of the text.
 * NULL after a syntax error (reported). */
static Node *parse_expr(Session *S, Ast *ast, char **src, const char *text, int col0) {
    StrBuf b = {0};
    int pad = S->line >= 2 ? S->line - 2 : 0;
    S->shift = S->line >= 2 ? 0 : 1;
    for (int i = 0; i < pad; i++) sb_putc(&b, '\n');
    sb_puts(&b, "_ =\n");
    for (int i = 0; i < col0; i++) sb_putc(&b, ' ');
    sb_puts(&b, text);
    *src = b.s;
    Node *root = parse_source(ast, "<repl>", b.s, b.len);
    if (!root || diag_error_count()) return NULL;
    int items = 0;
    Node *bind = NULL;
    for (int i = 0; i < root->nkids; i++)
        if (root->kids[i]) items++, bind = root->kids[i];
    if (items != 1 || bind->kind != N_BIND) {
        diag_error(items ? root->kids[root->nkids - 1]->span : (Span){0}, "one expression at a time");
        return NULL;
    }
    return bind->kids[1];
}

/* The expression's text as typed (for a stored binding). */
static char *span_text(const char *src, Span sp) { return xstrndup(src + sp.off, sp.len); }

/* ---- evaluating ---- */

static bool eval_to_result(Session *S, Node *expr, Result *res, bool *is_tensor, const char **rterr) {
    Lowered l;
    bool ok = lower_expr(S, expr, &l, true);
    *is_tensor = ok && l.s->output >= 0;
    *rterr = NULL;
    if (ok && *is_tensor) {
        *rterr = S->jit ? run_jit(S, l.s, 1, res, NULL) : run_interp(S, l.s, 1, res);
        ok = !*rterr;
    }
    lowered_free(&l);
    return ok;
}

/* A value that is not a tensor: a number is shown as one (tried as a scalar tensor, with
 * diagnostics hushed); anything else by its text. */
static void show_non_tensor(Session *S, const char *text) {
    Ast ast = {0};
    char *src = NULL, *wrapped = xasprintf("zeros(1, dtype = f64).sum() + (%s)", text), *qbuf = NULL;
    size_t qlen = 0;
    FILE *quiet = open_memstream(&qbuf, &qlen);
    diag_set_output(quiet);
    int shift = S->shift;
    Node *e = parse_expr(S, &ast, &src, wrapped, 0);
    S->shift = shift;
    Result r = {0};
    bool t = false;
    const char *err = NULL;
    if (e && eval_to_result(S, e, &r, &t, &err) && t && !err && r.shape.rank == 0) {
        double x = r.v[0];
        if (x == floor(x) && fabs(x) < 1e15 && !strpbrk(text, ".e")) printf("%lld\n", (long long)x);
        else {
            char buf[64];
            snprintf(buf, sizeof buf, "%.10g", x);
            printf("%s%s\n", buf, strpbrk(buf, ".en") ? "" : ".0");
        }
    } else printf("<not a tensor: %s>\n", text);
    free(r.v);
    diag_set_output(S->diag);
    fclose(quiet);
    free(qbuf);
    ast_free(&ast);
    free(src);
    free(wrapped);
}

/* NAME = EXPR, or an expression to print. */
static void eval_line(Session *S, const char *text, const char *target) {
    Ast ast = {0};
    char *src = NULL;
    diag_begin(S);
    Node *e;
    if (target) {
        /* a binding parses as itself, at its own line and column */
        StrBuf b = {0};
        for (int i = 1; i < S->line; i++) sb_putc(&b, '\n');
        sb_puts(&b, text);
        src = b.s;
        Node *root = parse_source(&ast, "<repl>", b.s, b.len);
        e = NULL;
        if (root && !diag_error_count()) {
            Node *bind = NULL;
            for (int i = 0; i < root->nkids; i++)
                if (root->kids[i]) bind = root->kids[i];
            if (bind && bind->kind == N_BIND && bind->kids[0]->nkids == 1) e = bind->kids[1];
            else if (bind) diag_error(bind->span, "the REPL binds one name at a time");
        }
    } else e = parse_expr(S, &ast, &src, text, 0);
    Result r = {0};
    bool tensor = false;
    const char *rterr = NULL;
    if (e && !eval_to_result(S, e, &r, &tensor, &rterr) && rterr) {
        diag_end(S);
        repl_error(S, "%s", rterr);
    } else if (e && !diag_error_count()) {
        if (tensor && target) {
            forget(S, target);
            store(S, target, r.dt, r.shape, r.v);
            r.v = NULL;
        } else if (tensor) {
            char *str = tensor_str(r.v, r.dt, r.shape);
            printf("%s\n", str);
            free(str);
        } else if (target) {
            forget(S, target);
            S->b = xrealloc(S->b, sizeof *S->b * (size_t)(S->nb + 1));
            S->b[S->nb++] = (Bound){xstrdup(target), span_text(src, e->span)};
        } else {
            char *t = span_text(src, e->span);
            show_non_tensor(S, t);
            free(t);
        }
    }
    free(r.v);
    diag_end(S);
    ast_free(&ast);
    free(src);
    fflush(stdout);
}

static Def *add_def(Session *S) {
    Def *d = xcalloc(1, sizeof *d);
    S->defs = xrealloc(S->defs, sizeof *S->defs * (size_t)(S->ndefs + 1));
    S->defs[S->ndefs++] = d;
    return d;
}
static void drop_last_def(Session *S) {
    Def *d = S->defs[--S->ndefs];
    ast_free(&d->ast);
    free(d->text);
    free(d->name);
    free(d);
}

static void list_items(const Node *root, const char *what) {
    StrBuf b = {0};
    for (int i = 0; root && i < root->nkids; i++) {
        const Node *it = root->kids[i];
        if (!it || !it->name || (it->kind != N_MODEL && it->kind != N_FN && it->kind != N_DATA)) continue;
        sb_printf(&b, "%s%s %s", b.len ? ", " : "", it->kind == N_MODEL ? "model" : it->kind == N_FN ? "fn" : "data", it->name);
    }
    if (b.len) printf("%s %s\n", what, b.s);
    sb_free(&b);
}

/* model / fn / use / data typed in: kept, and put before every later expression. */
static void define(Session *S, const char *text) {
    diag_begin(S);
    Def *d = add_def(S);
    StrBuf b = {0};
    for (int i = 1; i < S->line; i++) sb_putc(&b, '\n');
    sb_puts(&b, text);
    d->text = b.s;
    d->len = b.len;
    d->name = xstrdup("<repl>");
    d->root = parse_source(&d->ast, "<repl>", d->text, d->len);
    if (d->root && !diag_error_count()) sema_check_config(d->root);
    if (!d->root || diag_error_count()) drop_last_def(S);
    diag_end(S);
}

static void load(Session *S, const char *path) {
    diag_begin(S);
    Def *d = add_def(S);
    d->name = xstrdup(path);
    d->root = parse_file(&d->ast, path, &d->text);
    if (!d->root && !diag_error_count()) repl_error(S, "cannot read %s", path);
    if (d->root && !diag_error_count()) sema_check_config(d->root);
    bool ok = d->root && !diag_error_count();
    if (ok) {
        d->len = strlen(d->text);
        free(S->path);
        S->path = xstrdup(path);
        list_items(d->root, "loaded");
    } else drop_last_def(S);
    diag_end(S);
}

/* :type, :ir, :llvm, :time on the expression at column col0 of the line */
enum { SHOW_TYPE, SHOW_IR, SHOW_LLVM, SHOW_TIME };
static void show(Session *S, int what, const char *text, int col0, int reps) {
    Ast ast = {0};
    char *src = NULL;
    diag_begin(S);
    Node *e = parse_expr(S, &ast, &src, text, col0);
    Lowered l = {0};
    double t0 = now();
    bool ok = e && lower_expr(S, e, &l, what != SHOW_TYPE);
    double t_lower = now() - t0;
    diag_end(S);
    if (ok && l.s->output < 0) {
        repl_error(S, "not a tensor");
        ok = false;
    }
    char buf[256], err[512];
    if (ok && what == SHOW_TYPE) printf("%s\n", ir_shape_str(l.s->g->node[l.s->output].dtype, l.s->g->node[l.s->output].shape, buf, sizeof buf));
    else if (ok && what == SHOW_IR) ir_print(stdout, l.s->g);
    else if (ok && what == SHOW_LLVM) {
        fflush(stdout);
        if (!llvm_step_emit(stdout, l.s->g, true, false, err, sizeof err)) repl_error(S, "the LLVM step compiler cannot compile this: %s", err);
    } else if (ok && what == SHOW_TIME) {
        /* the run alone, on the graph lowered once */
        double compile = 0;
        t0 = now();
        const char *rerr = S->jit ? run_jit(S, l.s, reps, NULL, &compile) : run_interp(S, l.s, reps, NULL);
        double t_run = now() - t0 - compile;
        /* the whole round trip of one input: parse, trace, simplify, run, format */
        double t_trip = 0;
        int trips = reps < 20 ? reps : 20;
        for (int i = 0; i < trips && !rerr; i++) {
            Ast a2 = {0};
            char *s2 = NULL;
            double t1 = now();
            diag_begin(S);
            Node *e2 = parse_expr(S, &a2, &s2, text, col0);
            Result r = {0};
            bool tensor = false;
            const char *e2err;
            if (e2 && eval_to_result(S, e2, &r, &tensor, &e2err) && tensor) free(tensor_str(r.v, r.dt, r.shape));
            diag_end(S);
            t_trip += now() - t1;
            free(r.v);
            ast_free(&a2);
            free(s2);
        }
        if (rerr) repl_error(S, "%s", rerr);
        else {
            printf("%.4f ms per evaluation (%d runs, %s", t_run * 1e3 / reps, reps, S->jit ? "LLVM JIT" : "interpreter");
            if (S->jit) printf(", compiled in %.1f ms", compile * 1e3);
            printf("); trace %.3f ms; round trip %.3f ms\n", t_lower * 1e3, t_trip * 1e3 / trips);
        }
    }
    lowered_free(&l);
    ast_free(&ast);
    free(src);
    fflush(stdout);
}

/* ---- the loop ---- */

static const char help_text[] =
    "Type an expression to see its value, NAME = EXPR to bind it, or a model / fn / use\n"
    "block to define it (a block continues while brackets are open).\n"
    "  :load FILE       load a .ltl file's models and functions: m = MLP(), then m(x)\n"
    "  :type EXPR       dtype and shape, without running it\n"
    "  :ir EXPR         the IR graph\n"
    "  :llvm EXPR       the LLVM IR the step compiler generates for it\n"
    "  :time [N] EXPR   run it N times (default 100): ms per evaluation, and the round trip\n"
    "  :jit on|off      the LLVM step compiler (default) or the reference interpreter\n"
    "  :vars            the session's tensors and bindings\n"
    "  :help            this help\n"
    "  :quit            leave (also Ctrl-D)\n";

static const char repl_help[] =
    "usage: ltlc repl [--interp] [--seed N] [FILE...]\n"
    "\n"
    "An interactive session: tensors, expressions, definitions. Each FILE is loaded first\n"
    "(:load). With stdin not a terminal the input is read as a script, without prompts.\n"
    "Type :help inside for the commands; see docs/repl.md.\n";

static void vars(Session *S) {
    char buf[256];
    for (int i = 0; i < S->nt; i++)
        if (!strchr(S->t[i].name, '.')) printf("%s: %s\n", S->t[i].name, ir_shape_str(S->t[i].dt, S->t[i].shape, buf, sizeof buf));
    for (int i = 0; i < S->nb; i++) printf("%s = %s\n", S->b[i].name, S->b[i].text);
}

/* Net count of open brackets, outside strings and comments. */
static int open_brackets(const char *p) {
    int depth = 0;
    for (; *p; p++) {
        if (*p == '"') {
            for (p++; *p && *p != '"' && *p != '\n'; p++)
                if (*p == '\\' && p[1]) p++;
            if (!*p) break;
        } else if (*p == '#') {
            while (p[1] && p[1] != '\n') p++;
        } else if (strchr("([{", *p)) depth++;
        else if (strchr(")]}", *p)) depth--;
    }
    return depth;
}

static bool starts_word(const char *p, const char *w) {
    size_t n = strlen(w);
    return !strncmp(p, w, n) && !isalnum((unsigned char)p[n]) && p[n] != '_';
}

/* NAME = … (not ==): the name, malloc'd; else NULL */
static char *binding_target(const char *p) {
    if (!isalpha((unsigned char)*p) && *p != '_') return NULL;
    const char *s = p;
    while (isalnum((unsigned char)*p) || *p == '_') p++;
    const char *e = p;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == ',') return xstrdup(",");
    if (p[0] != '=' || p[1] == '=') return NULL;
    return xstrndup(s, (size_t)(e - s));
}

/* One complete input (perhaps several lines). false: quit. */
static bool handle(Session *S, char *text) {
    char *p = text;
    while (isspace((unsigned char)*p)) p++;
    size_t n = strlen(p);
    while (n && isspace((unsigned char)p[n - 1])) p[--n] = 0;
    int col0 = (int)(p - text);
    if (!*p || *p == '#') return true;
    if (*p == ':') {
        char *cmd = p + 1, *arg = cmd;
        while (*arg && !isspace((unsigned char)*arg)) arg++;
        size_t clen = (size_t)(arg - cmd);
        while (isspace((unsigned char)*arg)) arg++;
        int acol = col0 + (int)(arg - p);
#define IS(s) (clen == strlen(s) && !strncmp(cmd, s, clen))
        if (IS("q") || IS("quit") || IS("exit")) return false;
        if (IS("h") || IS("help") || IS("?")) fputs(help_text, stdout);
        else if (IS("vars")) vars(S);
        else if (IS("load") || IS("l")) {
            if (*arg) load(S, arg);
            else repl_error(S, ":load needs a FILE");
        } else if (IS("jit")) {
            if (!strcmp(arg, "on")) S->jit = true;
            else if (!strcmp(arg, "off")) S->jit = false;
            else if (*arg) repl_error(S, ":jit on or :jit off");
            printf("evaluating with the %s\n", S->jit ? "LLVM step compiler" : "interpreter");
        } else if (IS("type") || IS("t") || IS("ir") || IS("llvm") || IS("time")) {
            int what = IS("ir") ? SHOW_IR : IS("llvm") ? SHOW_LLVM : IS("time") ? SHOW_TIME : SHOW_TYPE, reps = 100;
            if (what == SHOW_TIME && isdigit((unsigned char)*arg)) {
                char *end;
                reps = (int)strtol(arg, &end, 10);
                if (reps < 1) reps = 1;
                acol += (int)(end - arg);
                for (arg = end; isspace((unsigned char)*arg); arg++) acol++;
            }
            if (!*arg) repl_error(S, ":%.*s needs an expression", (int)clen, cmd);
            else show(S, what, arg, acol, reps);
        } else repl_error(S, "unknown command ':%.*s' (try :help)", (int)clen, cmd);
#undef IS
        fflush(stdout);
        return true;
    }
    if (starts_word(p, "model") || starts_word(p, "fn") || starts_word(p, "use") || starts_word(p, "data") ||
        starts_word(p, "trainer")) {
        define(S, text);
        return true;
    }
    char *target = binding_target(p);
    if (target && !strcmp(target, ",")) {
        repl_error(S, "the REPL binds one name at a time");
        free(target);
        return true;
    }
    eval_line(S, text, target);
    free(target);
    return true;
}

static char *history_path(void) {
    const char *home = getenv("HOME");
    return home ? xasprintf("%s/.ltl_history", home) : NULL;
}

/* One line: libedit on a terminal, plain getline otherwise. NULL at the end. */
static char *read_one(bool tty, const char *prompt) {
    if (tty) return readline(prompt);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) { free(line); return NULL; }
    if (n && line[n - 1] == '\n') line[n - 1] = 0;
    return line;
}

int repl_command(int argc, char **argv) {
    Session S = {.path = xstrdup("<repl>"), .seed = 0, .jit = true}; /* JIT by default; :jit off for the oracle */
    const char *files[64];
    int nfiles = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { fputs(repl_help, stdout); return 0; }
        if (!strcmp(argv[i], "--jit")) S.jit = true;
        else if (!strcmp(argv[i], "--interp")) S.jit = false;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) S.seed = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "ltlc: unknown option '%s' for repl\nTry 'ltlc repl --help'.\n", argv[i]);
            return 2;
        } else if (nfiles < 64) files[nfiles++] = argv[i];
    }
    bool tty = isatty(0) && isatty(1);
    char *hist = tty ? history_path() : NULL;
    if (tty) {
        using_history();
        stifle_history(1000);
        if (hist) read_history(hist);
        printf("LTL %s REPL — :help for the commands, :quit to leave\n", LTL_VERSION);
    }
    for (int i = 0; i < nfiles; i++) load(&S, files[i]);
    for (bool go = true; go;) {
        char *line = read_one(tty, ">>> ");
        if (!line) break;
        S.line++;
        int first = S.line;
        StrBuf entry = {0};
        sb_puts(&entry, line);
        free(line);
        while (open_brackets(entry.s) > 0) {
            char *more = read_one(tty, "... ");
            if (!more) break;
            S.line++;
            sb_putc(&entry, '\n');
            sb_puts(&entry, more);
            free(more);
        }
        if (tty && entry.len) {
            char *e = entry.s;
            while (isspace((unsigned char)*e)) e++;
            if (*e) {
                add_history(entry.s);
                if (hist) write_history(hist);
            }
        }
        int last = S.line;
        S.line = first;
        go = handle(&S, entry.s);
        S.line = last;
        sb_free(&entry);
    }
    if (tty) {
        if (hist) write_history(hist);
        putchar('\n');
    }
    free(hist);
    for (int i = 0; i < S.nt; i++) free(S.t[i].name), free(S.t[i].v);
    free(S.t);
    for (int i = 0; i < S.nb; i++) free(S.b[i].name), free(S.b[i].text);
    free(S.b);
    while (S.ndefs) drop_last_def(&S);
    free(S.defs);
    free(S.path);
    diag_reset();
    return 0;
}
