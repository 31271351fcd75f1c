/* lower.c — semantic analysis by tracing: `use`d modules are loaded, the model is
 * instantiated with its hyperparameters, and each step is evaluated on symbolic values.
 * Numbers, strings, lists and modules are known at compile time; tensors are values of the
 * IR graph being built, whose builders check every shape. Annotations (`x: f32[B, 784]`) bind
 * and check symbolic dimensions. The result is one IR graph per step.
 *
 * Symbolic dimensions: `ltlc check` does not know the batch size, so each symbol (B, T, …)
 * stands for a distinct prime near 50 000; a dimension that factors into them is printed
 * back with the symbols' names (B*T). Real runs bind symbols to the sizes of the data. */
#include "sema.h"
#include "ir.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct Value Value;
typedef struct Module Module;
typedef struct Scope Scope;
typedef struct File File;

typedef enum {
    VK_NONE, VK_BOOL, VK_INT, VK_FLOAT, VK_STR, VK_DTYPE, VK_TENSOR, VK_TUPLE, VK_LIST, VK_DICT,
    VK_MODULE, VK_CLASS, VK_FUNC, VK_BUILTIN, VK_NAMESPACE, VK_CONFIG, VK_ELLIPSIS, VK_OPAQUE
} ValKind;
static const char *const kind_names[] = {
    "none", "a bool", "an integer", "a number", "a string", "a dtype", "a tensor", "a tuple",
    "a list", "a dict", "a module", "a model", "a function", "a built-in function", "a module namespace",
    "a configuration", "'...'", "data"};

struct Value {
    ValKind k;
    int64_t i;           /* INT, BOOL, DTYPE */
    double f;            /* FLOAT */
    const char *s;       /* STR; CONFIG, BUILTIN, OPAQUE: name */
    int id;              /* TENSOR: the IR value; BUILTIN: table index */
    Value **items;       /* TUPLE LIST DICT CONFIG: values */
    const char **keys;   /* DICT, CONFIG: keys */
    int n;
    Module *mod;         /* MODULE; FUNC: the module of a method */
    const Node *node;    /* CLASS: MODEL/DATA; FUNC: FN/METHOD */
    File *file;          /* CLASS, FUNC, NAMESPACE: where it was declared */
    Value *self;         /* BUILTIN: bound tensor of a method call (x.sum()) */
};

struct Scope {
    Scope *parent;
    const char **names;
    Value **vals;
    int n, cap;
};

struct Module {
    const Node *decl;
    const char *path;    /* "" for the root, "l1." for a sub-module */
    File *file;
    Scope *scope;        /* hyperparameters and members */
    Span site;           /* where it was instantiated */
};

struct File {
    const char *path, *name;
    char *text;
    Ast ast;
    Node *root;
    Scope *globals;
    bool loading;
};

typedef struct {
    IrGraph *g;
    double clip_val;
    bool clip_by_value;
    int64_t accumulate;
    bool loss_scale;     /* 16-mixed: the gradients come from a scaled loss (ir_scaler_grads) */
    bool ddp;            /* gradients averaged over the ranks (strategy = "ddp", world > 1) */
    File **files; int nfiles;
    Value **vals; int nvals, capvals;     /* every Value, freed at the end */
    Scope **scopes; int nscopes, capscopes;
    char **strs; int nstrs, capstrs;
    bool check;          /* symbolic dimensions (ltlc check) */
    bool training;
    int64_t batch;       /* run mode: the size bound to B */
    Sym syms[32]; int nsyms;
    Sym binds[16]; int nbinds;  /* run mode: sizes known from the data (SemaOptions) */
    const SemaOptions *opt;
    int input_index;     /* the step input being made (input_from_type) */
    int step_input;      /* the i64 scalar DATA input "step", made on first use */
    uint64_t seed, sites;
    int depth;
    StepGraph *out;
    File *main;
} Lower;

/* ---- allocation ---- */

static Value *val(Lower *L, ValKind k) {
    if (L->nvals == L->capvals) {
        L->capvals = L->capvals ? 2 * L->capvals : 256;
        L->vals = xrealloc(L->vals, sizeof *L->vals * (size_t)L->capvals);
    }
    Value *v = xcalloc(1, sizeof *v);
    v->k = k;
    v->id = -1;
    return L->vals[L->nvals++] = v;
}
static const char *lstr(Lower *L, char *s) {
    if (L->nstrs == L->capstrs) {
        L->capstrs = L->capstrs ? 2 * L->capstrs : 64;
        L->strs = xrealloc(L->strs, sizeof *L->strs * (size_t)L->capstrs);
    }
    return L->strs[L->nstrs++] = s;
}
static Value *v_int(Lower *L, int64_t i) { Value *v = val(L, VK_INT); v->i = i; return v; }
static Value *v_float(Lower *L, double f) { Value *v = val(L, VK_FLOAT); v->f = f; return v; }
static Value *v_bool(Lower *L, bool b) { Value *v = val(L, VK_BOOL); v->i = b; return v; }
static Value *v_tensor(Lower *L, int id) {
    if (id < 0) return NULL;
    Value *v = val(L, VK_TENSOR);
    v->id = id;
    return v;
}
static void v_push(Value *v, const char *key, Value *item) {
    v->items = xrealloc(v->items, sizeof *v->items * (size_t)(v->n + 1));
    v->keys = xrealloc(v->keys, sizeof *v->keys * (size_t)(v->n + 1));
    v->keys[v->n] = key;
    v->items[v->n++] = item;
}

static Scope *scope_new(Lower *L, Scope *parent) {
    if (L->nscopes == L->capscopes) {
        L->capscopes = L->capscopes ? 2 * L->capscopes : 64;
        L->scopes = xrealloc(L->scopes, sizeof *L->scopes * (size_t)L->capscopes);
    }
    Scope *s = xcalloc(1, sizeof *s);
    s->parent = parent;
    return L->scopes[L->nscopes++] = s;
}
static void scope_set(Scope *s, const char *name, Value *v) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) { s->vals[i] = v; return; }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 8;
        s->names = xrealloc(s->names, sizeof *s->names * (size_t)s->cap);
        s->vals = xrealloc(s->vals, sizeof *s->vals * (size_t)s->cap);
    }
    s->names[s->n] = name;
    s->vals[s->n++] = v;
}
static Value *scope_get(Scope *s, const char *name) {
    for (; s; s = s->parent)
        for (int i = s->n - 1; i >= 0; i--)
            if (!strcmp(s->names[i], name)) return s->vals[i];
    return NULL;
}

/* ---- symbolic dimensions ---- */

static bool is_prime(int64_t n) {
    for (int64_t d = 2; d * d <= n; d++)
        if (n % d == 0) return false;
    return n > 1;
}
static int64_t sym_value(Lower *L, const char *name) {
    for (int i = 0; !L->check && i < L->nbinds; i++)
        if (!strcmp(L->binds[i].name, name)) return L->binds[i].value;
    for (int i = 0; i < L->nsyms; i++)
        if (!strcmp(L->syms[i].name, name)) return L->syms[i].value;
    if (!L->check && !strcmp(name, "B") && L->batch > 0) return L->batch;
    if (L->nsyms == 32) return -1;
    int64_t p = L->nsyms ? L->syms[L->nsyms - 1].value + 1 : 50021;
    while (!is_prime(p)) p++;
    if (!L->check) return -1;
    L->syms[L->nsyms++] = (Sym){name, p};
    return p;
}
/* 50021 → "B", 64*50021 → "64*B", 50021*50023 → "B*T". */
static void render_with(const Sym *syms, int nsyms, StrBuf *b, int64_t d) {
    if (d <= 0 || nsyms == 0) { sb_printf(b, "%lld", (long long)d); return; }
    StrBuf f = {0};
    int64_t rest = d;
    for (int i = 0; i < nsyms; i++)
        while (rest % syms[i].value == 0) {
            sb_printf(&f, "%s%s", f.len ? "*" : "", syms[i].name);
            rest /= syms[i].value;
        }
    if (!f.len) sb_printf(b, "%lld", (long long)d);
    else if (rest == 1) sb_puts(b, f.s);
    else sb_printf(b, "%lld*%s", (long long)rest, f.s);
    sb_free(&f);
}
static void render_dim(Lower *L, StrBuf *b, int64_t d) { render_with(L->syms, L->nsyms, b, d); }
static char *type_str(Lower *L, int id) {
    const IrNode *n = &L->g->node[id];
    StrBuf b = {0};
    sb_printf(&b, "%s[", ir_dtype_name(n->dtype));
    for (int i = 0; i < n->shape.rank; i++) {
        if (i) sb_puts(&b, ", ");
        render_dim(L, &b, n->shape.d[i]);
    }
    sb_putc(&b, ']');
    return b.s;
}
/* Rewrites the numbers of a message or listing that stand for symbols. */
static char *render_text(const Sym *syms, int nsyms, const char *msg) {
    StrBuf b = {0};
    sb_putn(&b, "", 0);
    for (const char *p = msg; *p;) {
        if (*p >= '0' && *p <= '9' && (p == msg || (!strchr("0123456789.%_", p[-1]) && !(p[-1] >= 'a' && p[-1] <= 'z')))) {
            char *end;
            long long v = strtoll(p, &end, 10);
            if (*end == '.' || *end == 'e') { sb_putn(&b, p, (size_t)(end - p)); p = end; continue; }
            render_with(syms, nsyms, &b, v);
            p = end;
        } else sb_putc(&b, *p++);
    }
    return b.s;
}
static char *render_msg(Lower *L, const char *msg) { return render_text(L->syms, L->nsyms, msg); }

char *sema_render(const StepGraph *s, const char *text) { return render_text(s->syms, s->nsyms, text); }

/* ---- errors ---- */

static Value *fail(Lower *L, Span sp, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static Value *fail(Lower *L, Span sp, const char *fmt, ...) {
    (void)L;
    va_list ap;
    va_start(ap, fmt);
    char *m;
    if (vasprintf(&m, fmt, ap) < 0) m = NULL;
    va_end(ap);
    diag_error(sp, "%s", m ? m : "error");
    free(m);
    return NULL;
}
/* A builder returned -1: report its message at the expression. */
static Value *ir_check(Lower *L, int id, Span sp) {
    if (id >= 0) return v_tensor(L, id);
    char *m = render_msg(L, ir_error(L->g));
    diag_error(sp, "%s", m);
    free(m);
    return NULL;
}

static const char *describe(Lower *L, const Value *v) {
    if (v->k == VK_TENSOR) return lstr(L, type_str(L, v->id));
    return kind_names[v->k];
}

/* ---- conversions ---- */

static bool is_num(const Value *v) { return v->k == VK_INT || v->k == VK_FLOAT || v->k == VK_BOOL; }
static double num(const Value *v) { return v->k == VK_FLOAT ? v->f : (double)v->i; }

static int64_t sym_value(Lower *L, const char *name);
static bool want_int(Lower *L, const Value *v, Span sp, const char *what, int64_t *out) {
    if (v && (v->k == VK_INT || v->k == VK_BOOL)) { *out = v->i; return true; }
    if (v && v->k == VK_OPAQUE && (*out = sym_value(L, v->s)) > 0) return true; /* data.vocab_size */
    if (v && v->k == VK_FLOAT && v->f == floor(v->f) && fabs(v->f) < 9e15) { *out = (int64_t)v->f; return true; }
    fail(L, sp, "%s must be an integer, not %s", what, v ? describe(L, v) : "nothing");
    return false;
}
static bool want_num(Lower *L, const Value *v, Span sp, const char *what, double *out) {
    if (v && is_num(v)) { *out = num(v); return true; }
    fail(L, sp, "%s must be a number, not %s", what, v ? describe(L, v) : "nothing");
    return false;
}
/* A number becomes a constant of the other operand's dtype, as PyTorch's weak scalars do. */
static int to_tensor(Lower *L, const Value *v, IrDtype like) {
    if (v->k == VK_TENSOR) return v->id;
    if (v->k == VK_FLOAT && !ir_dtype_is_float(like)) like = IR_F32;
    if (v->k == VK_BOOL && like == IR_BOOL) return ir_scalar(L->g, (double)v->i, IR_BOOL);
    return ir_scalar(L->g, num(v), like == IR_BOOL ? IR_I64 : like);
}
static IrDtype dtype_of(Lower *L, const Value *v) {
    if (v->k == VK_TENSOR) return L->g->node[v->id].dtype;
    return v->k == VK_FLOAT ? IR_F32 : v->k == VK_BOOL ? IR_BOOL : IR_I64;
}
/* A shape from a tuple/list of integers, or from integer arguments. */
static bool want_shape(Lower *L, Value *const *items, int n, Span sp, IrShape *s) {
    if (n == 1 && (items[0]->k == VK_TUPLE || items[0]->k == VK_LIST))
        return want_shape(L, items[0]->items, items[0]->n, sp, s);
    if (n > IR_MAX_RANK) { fail(L, sp, "at most %d dimensions", IR_MAX_RANK); return false; }
    s->rank = n;
    for (int i = 0; i < n; i++)
        if (!want_int(L, items[i], sp, "a dimension", &s->d[i])) return false;
    return true;
}

/* ---- evaluation ---- */

static Value *eval(Lower *L, const Node *e, Scope *sc);
static Value *call_value(Lower *L, Value *fn, const Node *call, Value **pos, int npos,
                         const char **kwn, Value **kwv, int nkw, Scope *sc);
static Module *instantiate(Lower *L, Value *cls, const Node *call, Value **pos, int npos,
                           const char **kwn, Value **kwv, int nkw, const char *path);
static Value *member(Lower *L, Value *obj, const char *name, Span sp);

static Value *binary_num(Lower *L, int op, const Value *a, const Value *b, Span sp) {
    bool ints = a->k != VK_FLOAT && b->k != VK_FLOAT;
    double x = num(a), y = num(b);
    int64_t i = a->i, j = b->i;
    switch (op) {
    case TK_PLUS: return ints ? v_int(L, i + j) : v_float(L, x + y);
    case TK_MINUS: return ints ? v_int(L, i - j) : v_float(L, x - y);
    case TK_STAR: return ints ? v_int(L, i * j) : v_float(L, x * y);
    case TK_SLASH:
        if (y == 0) return fail(L, sp, "division by zero");
        return v_float(L, x / y);
    case TK_PERCENT:
        if (y == 0) return fail(L, sp, "division by zero");
        return ints ? v_int(L, ((i % j) + j) % j) : v_float(L, x - y * floor(x / y));
    case TK_POW: return ints && j >= 0 ? v_int(L, (int64_t)llround(pow(x, y))) : v_float(L, pow(x, y));
    case TK_EQ: return v_bool(L, x == y);
    case TK_NE: return v_bool(L, x != y);
    case TK_LT: return v_bool(L, x < y);
    case TK_LE: return v_bool(L, x <= y);
    case TK_GT: return v_bool(L, x > y);
    case TK_GE: return v_bool(L, x >= y);
    }
    return fail(L, sp, "operator not defined on numbers");
}

static Value *binary(Lower *L, const Node *e, Value *a, Value *b) {
    int op = e->op;
    if (op == TK_AND || op == TK_OR) {
        if (a->k != VK_BOOL || b->k != VK_BOOL)
            return fail(L, e->span, "'%s' needs true/false operands known at compile time; use where() on tensors",
                        op == TK_AND ? "and" : "or");
        return v_bool(L, op == TK_AND ? a->i && b->i : a->i || b->i);
    }
    if (is_num(a) && is_num(b)) return binary_num(L, op, a, b, e->span);
    if (a->k == VK_STR && b->k == VK_STR) {
        if (op == TK_PLUS) { Value *v = val(L, VK_STR); v->s = lstr(L, xasprintf("%s%s", a->s, b->s)); return v; }
        if (op == TK_EQ || op == TK_NE) return v_bool(L, (strcmp(a->s, b->s) == 0) == (op == TK_EQ));
    }
    if ((a->k == VK_TENSOR || is_num(a)) && (b->k == VK_TENSOR || is_num(b))) {
        IrDtype like = a->k == VK_TENSOR ? dtype_of(L, a) : dtype_of(L, b);
        int x = to_tensor(L, a, like), y = to_tensor(L, b, like), r;
        switch (op) {
        case TK_PLUS: r = ir_add(L->g, x, y); break;
        case TK_MINUS: r = ir_sub(L->g, x, y); break;
        case TK_STAR: r = ir_mul(L->g, x, y); break;
        case TK_SLASH: r = ir_div(L->g, x, y); break;
        case TK_POW: r = ir_pow(L->g, x, y); break;
        case TK_AT: r = ir_matmul(L->g, x, y); break;
        case TK_EQ: r = ir_eq(L->g, x, y); break;
        case TK_NE: r = ir_ne(L->g, x, y); break;
        case TK_LT: r = ir_lt(L->g, x, y); break;
        case TK_LE: r = ir_le(L->g, x, y); break;
        case TK_GT: r = ir_gt(L->g, x, y); break;
        case TK_GE: r = ir_ge(L->g, x, y); break;
        default: return fail(L, e->span, "'%%' is not defined on tensors");
        }
        if (r < 0) return ir_check(L, r, e->span); /* the builder's message names both shapes */
        return v_tensor(L, r);
    }
    return fail(L, e->span, "operator not defined between %s and %s", describe(L, a), describe(L, b));
}

/* x[i, a:b:c, ...] on a tensor: integer indexes drop the axis, slices keep it. */
static Value *index_tensor(Lower *L, const Node *e, Value *obj, Scope *sc) {
    int id = obj->id;
    const IrShape *s0 = &L->g->node[id].shape;
    int rank = s0->rank, nsub = e->nkids - 1, ell = -1, axis = 0;
    for (int i = 0; i < nsub; i++)
        if (e->kids[i + 1]->kind == N_ELLIPSIS) {
            if (ell >= 0) return fail(L, e->kids[i + 1]->span, "only one '...' in an index");
            ell = i;
        }
    if (nsub - (ell >= 0) > rank)
        return fail(L, e->span, "too many indexes (%d) for %s", nsub - (ell >= 0), describe(L, obj));
    int drop[IR_MAX_RANK], ndrop = 0;
    for (int i = 0; i < nsub; i++) {
        const Node *s = e->kids[i + 1];
        if (s->kind == N_ELLIPSIS) { axis += rank - (nsub - 1); continue; }
        int64_t dim = L->g->node[id].shape.d[axis];
        if (s->kind == N_SLICE) {
            int64_t b[3] = {0, INT64_MAX, 1};
            for (int k = 0; k < 3; k++) {
                if (!s->kids[k]) continue;
                Value *v = eval(L, s->kids[k], sc);
                if (!v || !want_int(L, v, s->kids[k]->span, "a slice bound", &b[k])) return NULL;
            }
            if (b[2] <= 0) return fail(L, s->span, "slice step must be positive");
            if (!s->kids[1]) b[1] = dim;
            id = ir_slice(L->g, id, axis, b[0], b[1], b[2]);
        } else {
            Value *v = eval(L, s, sc);
            int64_t k;
            if (!v || !want_int(L, v, s->span, "an index", &k)) return NULL;
            if (k < -dim || k >= dim) {
                StrBuf d = {0};
                render_dim(L, &d, dim);
                fail(L, s->span, "index %lld out of range for dimension %d of size %s", (long long)k, axis, d.s);
                sb_free(&d);
                return NULL;
            }
            if (k < 0) k += dim;
            id = ir_slice(L->g, id, axis, k, k + 1, 1);
            drop[ndrop++] = axis;
        }
        if (id < 0) return ir_check(L, id, s->span);
        axis++;
    }
    if (ndrop) {
        IrShape s = L->g->node[id].shape, t = {0};
        for (int i = 0; i < s.rank; i++) {
            bool d = false;
            for (int k = 0; k < ndrop; k++) d |= drop[k] == i;
            if (!d) t.d[t.rank++] = s.d[i];
        }
        id = ir_reshape(L->g, id, t);
    }
    return ir_check(L, id, e->span);
}

static Value *index_value(Lower *L, const Node *e, Value *obj, Scope *sc) {
    if (obj->k == VK_TENSOR) return index_tensor(L, e, obj, sc);
    if (e->nkids != 2 || e->kids[1]->kind == N_SLICE)
        return fail(L, e->span, "%s takes one index", describe(L, obj));
    Value *k = eval(L, e->kids[1], sc);
    if (!k) return NULL;
    if (obj->k == VK_DICT) {
        if (k->k != VK_STR) return fail(L, e->kids[1]->span, "a dict key is a string");
        for (int i = 0; i < obj->n; i++)
            if (!strcmp(obj->keys[i], k->s)) return obj->items[i];
        return fail(L, e->kids[1]->span, "no key \"%s\"", k->s);
    }
    if (obj->k == VK_LIST || obj->k == VK_TUPLE) {
        int64_t i;
        if (!want_int(L, k, e->kids[1]->span, "an index", &i)) return NULL;
        if (i < 0) i += obj->n;
        if (i < 0 || i >= obj->n) return fail(L, e->kids[1]->span, "index out of range (length %d)", obj->n);
        return obj->items[i];
    }
    return fail(L, e->span, "%s cannot be indexed", describe(L, obj));
}

/* Evaluates the arguments of a call: positional values and keyword name/value pairs. */
static bool eval_args(Lower *L, const Node *call, Scope *sc, Value ***pos, int *npos,
                      const char ***kwn, Value ***kwv, int *nkw) {
    int n = call->nkids - 1;
    *pos = xcalloc((size_t)n + 1, sizeof **pos);
    *kwv = xcalloc((size_t)n + 1, sizeof **kwv);
    *kwn = xcalloc((size_t)n + 1, sizeof **kwn);
    *npos = *nkw = 0;
    for (int i = 0; i < n; i++) {
        const Node *a = call->kids[i + 1];
        Value *v = eval(L, a->kind == N_KWARG ? a->kids[0] : a, sc);
        if (!v) return false;
        if (a->kind == N_KWARG) { (*kwn)[*nkw] = a->name; (*kwv)[(*nkw)++] = v; }
        else (*pos)[(*npos)++] = v;
    }
    return true;
}

/* repeat(n, Module(...)): n instances with their own weights, applied in sequence. */
static Value *eval_repeat(Lower *L, const Node *call, Scope *sc, const char *path) {
    if (call->nkids != 3 || call->kids[2]->kind != N_CALL)
        return fail(L, call->span, "repeat takes a count and a module construction: repeat(4, Block(d))");
    Value *nv = eval(L, call->kids[1], sc);
    int64_t n;
    if (!nv || !want_int(L, nv, call->kids[1]->span, "the count of repeat", &n)) return NULL;
    if (n < 1 || n > 4096) return fail(L, call->kids[1]->span, "repeat count must be between 1 and 4096");
    const Node *ctor = call->kids[2];
    Value *cls = eval(L, ctor->kids[0], sc);
    if (!cls) return NULL;
    if (cls->k != VK_CLASS) return fail(L, ctor->span, "repeat needs a model to instantiate");
    Value *list = val(L, VK_LIST);
    for (int64_t i = 0; i < n; i++) {
        Value **pos, **kwv;
        const char **kwn;
        int npos, nkw;
        bool ok = eval_args(L, ctor, sc, &pos, &npos, &kwn, &kwv, &nkw);
        Module *m = ok ? instantiate(L, cls, ctor, pos, npos, kwn, kwv, nkw,
                                     lstr(L, xasprintf("%s%lld.", path, (long long)i))) : NULL;
        free(pos); free(kwn); free(kwv);
        if (!m) return NULL;
        Value *mv = val(L, VK_MODULE);
        mv->mod = m;
        v_push(list, NULL, mv);
    }
    const char *dot = strchr(path, '.');
    if (L->out && dot && !dot[1] && L->out->nsubs < 64) /* "blocks.": one summary row, as nn.Sequential */
        L->out->subs[L->out->nsubs++] = (SubModule){lstr(L, xstrdup(path)), "Sequential", NULL};
    return list;
}

/* Calls inside a model member binding instantiate sub-modules under `path`. */
static const char *member_path;
static bool member_list;

static Value *eval_call(Lower *L, const Node *e, Scope *sc) {
    const Node *callee = e->kids[0];
    if (callee->kind == N_NAME && !strcmp(callee->name, "repeat") && !scope_get(sc, "repeat"))
        return eval_repeat(L, e, sc, member_path ? member_path : "");
    Value *fn = eval(L, callee, sc);
    if (!fn) return NULL;
    Value **pos, **kwv;
    const char **kwn;
    int npos, nkw;
    Value *r = NULL;
    if (eval_args(L, e, sc, &pos, &npos, &kwn, &kwv, &nkw))
        r = call_value(L, fn, e, pos, npos, kwn, kwv, nkw, sc);
    free(pos); free(kwn); free(kwv);
    return r;
}

static Value *eval(Lower *L, const Node *e, Scope *sc) {
    Value *v, *a, *b;
    switch (e->kind) {
    case N_INT: return v_int(L, e->ival);
    case N_FLOAT: return v_float(L, e->fval);
    case N_BOOL: return v_bool(L, e->ival);
    case N_NONE: return val(L, VK_NONE);
    case N_ELLIPSIS: return val(L, VK_ELLIPSIS);
    case N_STRING: v = val(L, VK_STR); v->s = e->name; return v;
    case N_DTYPE: v = val(L, VK_DTYPE); v->i = e->op; return v;
    case N_NAME:
        v = scope_get(sc, e->name);
        if (!v) {
            int64_t s = e->name[0] >= 'A' && e->name[0] <= 'Z' && !e->name[1] ? sym_value(L, e->name) : -1;
            bool known = false;
            for (int i = 0; i < L->nsyms; i++) known |= !strcmp(L->syms[i].name, e->name);
            for (int i = 0; !L->check && i < L->nbinds; i++) known |= !strcmp(L->binds[i].name, e->name);
            if (known && s > 0) return v_int(L, s);
            return fail(L, e->span, "'%s' is not defined", e->name);
        }
        return v;
    case N_TUPLE: case N_LIST:
        v = val(L, e->kind == N_TUPLE ? VK_TUPLE : VK_LIST);
        for (int i = 0; i < e->nkids; i++) {
            if (!(a = eval(L, e->kids[i], sc))) return NULL;
            v_push(v, NULL, a);
        }
        return v;
    case N_DICT:
        v = val(L, VK_DICT);
        for (int i = 0; i < e->nkids; i++) {
            if (!(a = eval(L, e->kids[i]->kids[0], sc))) return NULL;
            v_push(v, e->kids[i]->name, a);
        }
        return v;
    case N_UNARY:
        if (!(a = eval(L, e->kids[0], sc))) return NULL;
        if (e->op == TK_NOT) {
            if (a->k != VK_BOOL) return fail(L, e->span, "'not' needs true or false known at compile time");
            return v_bool(L, !a->i);
        }
        if (a->k == VK_INT) return v_int(L, e->op == TK_MINUS ? -a->i : a->i);
        if (a->k == VK_FLOAT) return v_float(L, e->op == TK_MINUS ? -a->f : a->f);
        if (a->k == VK_TENSOR) return e->op == TK_MINUS ? ir_check(L, ir_neg(L->g, a->id), e->span) : a;
        return fail(L, e->span, "unary '%s' is not defined on %s", e->op == TK_MINUS ? "-" : "+", describe(L, a));
    case N_BINARY:
        if (!(a = eval(L, e->kids[0], sc)) || !(b = eval(L, e->kids[1], sc))) return NULL;
        return binary(L, e, a, b);
    case N_CALL: return eval_call(L, e, sc);
    case N_INDEX:
        if (!(a = eval(L, e->kids[0], sc))) return NULL;
        if (a->k == VK_DTYPE) return fail(L, e->span, "a tensor type is only allowed in an annotation");
        return index_value(L, e, a, sc);
    case N_MEMBER:
        if (!(a = eval(L, e->kids[0], sc))) return NULL;
        return member(L, a, e->name, e->span);
    default:
        return fail(L, e->span, "this is not an expression");
    }
}

/* ---- tensor types in annotations: dtype[dims], dims bind symbols ---- */

/* Matches tensor `id` against annotation `ann` (a dtype, or dtype[dims]). Names that are
 * neither hyperparameters nor bound yet are bound in `syms`. On a mismatch returns false and
 * fills *expected (the annotation with what is known filled in) and *why. */
static bool match_type(Lower *L, const Node *ann, int id, Scope *syms, char **expected, char **why) {
    const IrNode *n = &L->g->node[id];
    const Node *dt = ann->kind == N_INDEX ? ann->kids[0] : ann;
    StrBuf e = {0};
    *why = NULL;
    if (dt->kind != N_DTYPE) {
        diag_error(ann->span, "a tensor type is a dtype with dimensions, like f32[B, 784]");
        *expected = xstrdup("?");
        return false;
    }
    sb_printf(&e, "%s", dtype_names[dt->op]);
    bool ok = (int)n->dtype == dt->op;
    if (!ok) *why = xasprintf("its dtype is %s, not %s", ir_dtype_name(n->dtype), dtype_names[dt->op]);
    if (ann->kind == N_INDEX) {
        int nd = ann->nkids - 1, ell = -1, rank = n->shape.rank;
        for (int i = 0; i < nd; i++)
            if (ann->kids[i + 1]->kind == N_ELLIPSIS) ell = i;
        int fixed = nd - (ell >= 0);
        if (ok && (ell >= 0 ? rank < fixed : rank != fixed)) {
            ok = false;
            *why = xasprintf("it has %d dimension%s, not %s%d", rank, rank == 1 ? "" : "s", ell >= 0 ? "at least " : "", fixed);
        }
        sb_putc(&e, '[');
        for (int i = 0; i < nd; i++) {
            const Node *d = ann->kids[i + 1];
            if (i) sb_puts(&e, ", ");
            if (d->kind == N_ELLIPSIS) { sb_puts(&e, "..."); continue; }
            int axis = ell >= 0 && i > ell ? rank - (nd - i) : i;
            int64_t actual = axis >= 0 && axis < rank ? n->shape.d[axis] : -1, want = -1;
            Value *v;
            if (d->kind == N_NAME) {
                if (!(v = scope_get(syms, d->name))) { /* a new symbol: bind it to what is there */
                    if (actual < 0) { sb_puts(&e, d->name); continue; }
                    scope_set(syms, d->name, v = v_int(L, actual));
                }
            } else if (!(v = eval(L, d, syms))) {
                sb_free(&e);
                *expected = xstrdup("?");
                return false;
            }
            if (!want_int(L, v, d->span, "a dimension", &want)) { sb_free(&e); *expected = xstrdup("?"); return false; }
            render_dim(L, &e, want);
            if (ok && want != actual) {
                ok = false;
                StrBuf a = {0}, w = {0};
                render_dim(L, &a, actual);
                render_dim(L, &w, want);
                *why = d->kind == N_NAME || d->kind == N_INT
                           ? xasprintf("dimension %d is %s, not %s%s%s", axis, a.s,
                                       d->kind == N_NAME ? d->name : "", d->kind == N_NAME ? " = " : "", w.s)
                           : xasprintf("dimension %d is %s, not %s", axis, a.s, w.s);
                sb_free(&a); sb_free(&w);
            }
        }
        sb_putc(&e, ']');
    }
    *expected = e.s;
    return ok;
}

/* Makes a DATA input for a step parameter from its annotation (symbols from the options). */
static Value *input_from_type(Lower *L, const Node *param, const Node *ann, Scope *sc) {
    const Node *dt = ann->kind == N_INDEX ? ann->kids[0] : ann;
    if (dt->kind != N_DTYPE) return fail(L, ann->span, "a tensor type is a dtype with dimensions, like f32[B, 784]");
    IrShape s = {0};
    Scope *syms = scope_new(L, sc);
    for (int i = 1; ann->kind == N_INDEX && i < ann->nkids; i++) {
        const Node *d = ann->kids[i];
        Value *v;
        if (d->kind == N_ELLIPSIS) return fail(L, d->span, "a step's input needs every dimension; '...' is for functions");
        if (d->kind == N_NAME && !scope_get(syms, d->name)) {
            int64_t sv = sym_value(L, d->name);
            int k = L->input_index;
            if (sv < 0 && !L->check && L->opt && k >= 0 && k < 2 && L->opt->sample[k].rank == ann->nkids - 2 && i >= 2 &&
                L->nbinds < 16) { /* run mode: a size of the data's samples, e.g. T of i64[B, T] */
                sv = L->opt->sample[k].d[i - 2];
                L->binds[L->nbinds++] = (Sym){d->name, sv};
            }
            if (sv < 0)
                return fail(L, d->span, "the size of '%s' is not known before the data is read", d->name);
            scope_set(syms, d->name, v_int(L, sv));
        }
        if (!(v = eval(L, d, syms)) || !want_int(L, v, d->span, "a dimension", &s.d[s.rank])) return NULL;
        if (++s.rank > IR_MAX_RANK) return fail(L, ann->span, "at most %d dimensions", IR_MAX_RANK);
    }
    ir_set_loc(L->g, param->span.line, param->span.col);
    return ir_check(L, ir_input(L->g, IR_IN_DATA, param->name, (IrDtype)dt->op, s), param->span);
}

/* ---- calling functions, methods, models and built-ins ---- */

typedef struct { const char *name; Value *def; bool has_def, star; } Sig;

/* Binds call arguments to parameters by position, then keyword; defaults fill the rest.
 * `what` names the callee in messages. out[i] receives parameter i's value. */
static bool bind_args(Lower *L, const Sig *sig, int nsig, Value **out, Value **pos, int npos,
                      const char **kwn, Value **kwv, int nkw, const char *what, Span sp) {
    int p = 0;
    for (int i = 0; i < nsig; i++) out[i] = NULL;
    for (int i = 0; i < nsig && p < npos; i++) {
        if (sig[i].star) {
            Value *t = val(L, VK_TUPLE);
            while (p < npos) v_push(t, NULL, pos[p++]);
            out[i] = t;
        } else out[i] = pos[p++];
    }
    if (p < npos) { fail(L, sp, "%s takes at most %d positional argument%s (%d given)", what, p, p == 1 ? "" : "s", npos); return false; }
    for (int k = 0; k < nkw; k++) {
        int i = 0;
        while (i < nsig && strcmp(sig[i].name, kwn[k])) i++;
        if (i == nsig) {
            StrBuf names = {0};
            for (int j = 0; j < nsig; j++) sb_printf(&names, "%s%s", j ? ", " : "", sig[j].name);
            fail(L, sp, "%s has no parameter '%s' (it has: %s)", what, kwn[k], names.s ? names.s : "none");
            sb_free(&names);
            return false;
        }
        if (out[i]) { fail(L, sp, "%s got '%s' twice", what, kwn[k]); return false; }
        out[i] = kwv[k];
    }
    for (int i = 0; i < nsig; i++) {
        if (out[i]) continue;
        if (sig[i].star) out[i] = val(L, VK_TUPLE);
        else if (sig[i].has_def) out[i] = sig[i].def;
        else { fail(L, sp, "%s needs the argument '%s'", what, sig[i].name); return false; }
    }
    return true;
}

static Value *run_body(Lower *L, const Node *body, Scope *sc);

static char *callee_text(const Node *call) { return call ? ast_print_expr(call->kids[0]) : xstrdup("it"); }

/* A user function or method: bind, check annotations, run, check the return type. */
static Value *call_func(Lower *L, Value *fn, const Node *call, Value **pos, int npos,
                        const char **kwn, Value **kwv, int nkw) {
    const Node *f = fn->node, *params = f->kids[0];
    if (++L->depth > 200) { L->depth--; return fail(L, call ? call->span : f->span, "calls nested too deeply (recursion?)"); }
    Scope *base = fn->mod ? fn->mod->scope : fn->file->globals;
    Scope *sc = scope_new(L, base);
    Sig *sig = xcalloc((size_t)params->nkids + 1, sizeof *sig);
    Value **args = xcalloc((size_t)params->nkids + 1, sizeof *args);
    Value *r = NULL;
    char *what = callee_text(call);
    for (int i = 0; i < params->nkids; i++) {
        const Node *p = params->kids[i];
        sig[i].name = p->name;
        if (p->kids[1]) {
            sig[i].has_def = true;
            if (!(sig[i].def = eval(L, p->kids[1], sc))) goto out;
        }
    }
    if (!bind_args(L, sig, params->nkids, args, pos, npos, kwn, kwv, nkw, what, call ? call->span : f->span)) goto out;
    for (int i = 0; i < params->nkids; i++) {
        const Node *p = params->kids[i];
        scope_set(sc, p->name, args[i]);
        if (!p->kids[0] || args[i]->k != VK_TENSOR) continue;
        char *expected, *why;
        if (!match_type(L, p->kids[0], args[i]->id, sc, &expected, &why)) {
            char *actual = type_str(L, args[i]->id);
            const Node *argn = NULL;
            for (int k = 1; call && k < call->nkids; k++) {
                const Node *a = call->kids[k];
                if (a->kind == N_KWARG ? !strcmp(a->name, p->name) : k - 1 == i) argn = a->kind == N_KWARG ? a->kids[0] : a;
            }
            char *argtext = argn ? ast_print_expr(argn) : xstrdup(p->name);
            diag_error(argn ? argn->span : call ? call->span : p->span, "%s expects %s but %s is %s%s%s", what,
                       expected, argtext, actual, why ? ": " : "", why ? why : "");
            diag_note(p->kids[0]->span, "'%s' of %s is declared here", p->name, f->name);
            if (fn->mod && fn->mod->path[0])
                diag_note(fn->mod->site, "%.*s is created here", (int)strlen(fn->mod->path) - 1, fn->mod->path);
            free(actual); free(argtext); free(expected); free(why);
            goto out;
        }
        free(expected);
        free(why);
    }
    const Node *body = f->kids[2];
    r = body->kind == N_SEQ ? run_body(L, body, sc) : eval(L, body, sc);
    if (r && f->kids[1]) {
        if (r->k != VK_TENSOR) { r = fail(L, f->kids[1]->span, "%s is declared to return a tensor but returns %s", f->name, describe(L, r)); goto out; }
        char *expected, *why;
        if (!match_type(L, f->kids[1], r->id, sc, &expected, &why)) {
            char *actual = type_str(L, r->id);
            diag_error(f->kids[1]->span, "%s returns %s but is declared to return %s%s%s", f->name, actual, expected,
                       why ? ": " : "", why ? why : "");
            if (call) diag_note(call->span, "in this call");
            free(actual);
            r = NULL;
        }
        free(expected);
        free(why);
    }
out:
    L->depth--;
    free(sig); free(args); free(what);
    return r;
}

/* The result of a statement list: the value of `return`, or none. */
typedef struct { Value *v; bool returned, failed; } Flow;

static Flow run_stmts(Lower *L, const Node *seq, Scope *sc);

static bool bind_targets(Lower *L, const Node *targets, Value *v, Scope *sc, Span sp) {
    if (targets->nkids == 1) { scope_set(sc, targets->kids[0]->name, v); return true; }
    if (v->k == VK_OPAQUE) { /* train, val = split(...): part i of the source */
        if (strcmp(v->s, "split")) {
            fail(L, sp, "only split(...) can be unpacked into several data sets; %s(...) is one", v->s);
            return false;
        }
        for (int i = 0; i < v->n; i++)
            if (v->keys[i] && !strcmp(v->keys[i], "sizes") && v->items[i]->n != targets->nkids) {
                int n = v->items[i]->n;
                fail(L, sp, "split(...) makes %d data set%s, one per size, but %d names receive them", n, n == 1 ? "" : "s",
                     targets->nkids);
                return false;
            }
        for (int i = 0; i < targets->nkids; i++) {
            Value *part = val(L, VK_OPAQUE);
            part->s = "part";
            part->i = i;
            v_push(part, NULL, v);
            scope_set(sc, targets->kids[i]->name, part);
        }
        return true;
    }
    if ((v->k != VK_TUPLE && v->k != VK_LIST) || v->n != targets->nkids) {
        fail(L, sp, "cannot unpack %s into %d names", describe(L, v), targets->nkids);
        return false;
    }
    for (int i = 0; i < v->n; i++) scope_set(sc, targets->kids[i]->name, v->items[i]);
    return true;
}

static Flow run_stmt(Lower *L, const Node *s, Scope *sc) {
    Flow f = {0};
    Value *v;
    switch (s->kind) {
    case N_BIND:
        if (!(v = eval(L, s->kids[1], sc)) || !bind_targets(L, s->kids[0], v, sc, s->span)) f.failed = true;
        break;
    case N_EXPR_STMT:
        f.failed = !eval(L, s->kids[0], sc);
        break;
    case N_RETURN:
        f.returned = true;
        f.v = s->kids[0] ? eval(L, s->kids[0], sc) : val(L, VK_NONE);
        f.failed = !f.v;
        break;
    case N_IF:
        if (!(v = eval(L, s->kids[0], sc))) { f.failed = true; break; }
        if (v->k != VK_BOOL) {
            fail(L, s->kids[0]->span, "an 'if' condition must be known at compile time (true or false); for tensors use where(cond, a, b)");
            f.failed = true;
            break;
        }
        if (v->i) f = run_stmts(L, s->kids[1], sc);
        else if (s->kids[2]) f = s->kids[2]->kind == N_IF ? run_stmt(L, s->kids[2], sc) : run_stmts(L, s->kids[2], sc);
        break;
    case N_FOR:
        if (!(v = eval(L, s->kids[1], sc))) { f.failed = true; break; }
        if (v->k != VK_LIST && v->k != VK_TUPLE) {
            fail(L, s->kids[1]->span, "'for' iterates over a list or tuple known at compile time, not %s", describe(L, v));
            f.failed = true;
            break;
        }
        for (int i = 0; i < v->n && !f.returned && !f.failed; i++) {
            if (!bind_targets(L, s->kids[0], v->items[i], sc, s->kids[0]->span)) { f.failed = true; break; }
            f = run_stmts(L, s->kids[2], sc);
        }
        break;
    default:
        fail(L, s->span, "not a statement");
        f.failed = true;
    }
    return f;
}

static Flow run_stmts(Lower *L, const Node *seq, Scope *sc) {
    Flow f = {0};
    for (int i = 0; i < seq->nkids && !f.returned && !f.failed; i++) f = run_stmt(L, seq->kids[i], sc);
    return f;
}

static Value *run_body(Lower *L, const Node *body, Scope *sc) {
    Flow f = run_stmts(L, body, sc);
    if (f.failed) return NULL;
    return f.returned ? f.v : val(L, VK_NONE);
}

/* ---- built-in functions ---- */

/* X(name, signature): parameters with literal defaults; `*p` collects the remaining
 * positional arguments. Functions of tensors also take numbers where that makes sense. */
#define BUILTINS(X)                                                                              \
    X(relu, "x") X(gelu, "x") X(tanh, "x") X(sigmoid, "x") X(exp, "x") X(log, "x,value=none,"    \
      "prog_bar=false,on_step=none,on_epoch=none,reduce_fx=mean,sync_dist=false,logger=true")   \
    X(sqrt, "x") X(rsqrt, "x") X(abs, "x") X(leaky_relu, "x,negative_slope=0.01")               \
    X(detach, "x") X(maximum, "a,b") X(minimum, "a,b") X(where, "cond,a,b") X(cast, "x,dtype")  \
    X(to, "x,dtype")                                                                             \
    X(sum, "x,dim=none,keepdim=false") X(mean, "x,dim=none,keepdim=false")                       \
    X(max, "x,dim=none,keepdim=false") X(logsumexp, "x,dim,keepdim=false")                       \
    X(argmax, "x,dim=-1,keepdim=false") X(softmax, "x,dim=-1") X(log_softmax, "x,dim=-1")       \
    X(matmul, "a,b") X(linear, "x,weight,bias=none") X(flatten, "x,start_dim=0,end_dim=-1")     \
    X(reshape, "x,*shape") X(view, "x,*shape") X(transpose, "x,dim0,dim1") X(permute, "x,*dims") \
    X(concat, "tensors,dim=0") X(cat, "tensors,dim=0")                                           \
    X(conv2d, "x,weight,bias=none,stride=1,padding=0,dilation=1,groups=1")                       \
    X(max_pool2d, "x,kernel_size,stride=none,padding=0")                                         \
    X(avg_pool2d, "x,kernel_size,stride=none,padding=0,count_include_pad=true")                  \
    X(dropout, "x,p=0.5") X(layer_norm, "x,weight=none,bias=none,eps=1e-5")                      \
    X(batch_norm, "x,weight,bias,running_mean,running_var,momentum=0.1,eps=1e-5")                \
    X(embedding, "weight,idx") X(one_hot, "x,num_classes")                                       \
    X(cross_entropy, "input,target,label_smoothing=0.0,reduction=mean")                          \
    X(nll_loss, "input,target,reduction=mean") X(mse_loss, "input,target,reduction=mean")        \
    X(bce_with_logits, "input,target,reduction=mean") X(accuracy, "input,target")               \
    X(l1_loss, "input,target,reduction=mean") X(bce, "input,target,reduction=mean")             \
    X(randn, "*shape,seed=none") X(rand, "*shape,seed=none") X(zeros, "*shape,dtype=none")      \
    X(ones, "*shape,dtype=none") X(arange, "n")                                                  \
    X(range, "n") X(len, "x") X(enumerate, "x") X(print, "*args")                                \
    X(save_image_grid, "images,path,nrow=8")                                                     \
    X(generate, "prompt,steps=200,temperature=1.0,seed=0")                                      \
    X(log_confusion_matrix, "name,input,target")

/* Configurations: recorded with their keyword arguments, read by the optimizer lowering,
 * the initialisers and the runtime. X(name, "allowed|keys") */
#define CONFIGS(X)                                                                               \
    X(adam, "lr|betas|eps|weight_decay|amsgrad|maximize")                                        \
    X(adamw, "lr|betas|eps|weight_decay|amsgrad|maximize")                                       \
    X(sgd, "lr|momentum|dampening|weight_decay|nesterov|maximize")                               \
    X(rmsprop, "lr|alpha|eps|weight_decay|momentum|centered|maximize")                           \
    X(step, "step_size|gamma|interval|frequency")                                                \
    X(multistep, "milestones|gamma|interval|frequency")                                          \
    X(exponential, "gamma|interval|frequency")                                                   \
    X(cosine, "T_max|eta_min|interval|frequency")                                                \
    X(one_cycle, "max_lr|total_steps|pct_start|div_factor|final_div_factor|interval|frequency")  \
    X(linear_warmup, "warmup_steps|start_factor|interval|frequency")                             \
    X(reduce_on_plateau, "monitor|mode|factor|patience|threshold|min_lr|interval|frequency")     \
    X(kaiming_uniform, "a|mode|nonlinearity") X(kaiming_normal, "a|mode|nonlinearity")           \
    X(xavier_uniform, "gain") X(xavier_normal, "gain") X(uniform, "a|b") X(normal, "mean|std")   \
    X(constant, "value")                                                                         \
    X(loader, "batch|shuffle|workers|drop_last|prefetch")

/* Data sources and transforms: values the runtime computes when it reads the data. */
/* X(name, signature, kinds): one letter per parameter, checked where the call is written so
 * that `ltlc check` reports a bad data module at its line: s a file name, S one or a list,
 * d another data source, n a number, l a list of numbers, . anything. */
#define DATA_FNS(X)                                                                              \
    X(idx, "images,labels=none", "ss") X(csv, "path,label=none", "s.") X(raw, "*args", ".")      \
    X(split, "source,sizes,seed=none", "dln") X(read_text, "paths", "S") X(chars, "text", "d")   \
    X(encode, "text", ".") X(decode, "ids", ".") X(windows, "source,length,stride=1", "dnn")     \
    X(normalize, "x,mean=0,std=1", "...") X(random_crop, "x,size,padding=0", "...")              \
    X(hflip, "x,p=0.5", "..") X(random_erasing, "x,p=0.5", "..")

enum {
#define X(n, s) B_##n,
    BUILTINS(X)
#undef X
    B_COUNT
};
static const struct { const char *name, *sig; } builtins[] = {
#define X(n, s) {#n, s},
    BUILTINS(X)
#undef X
};
static const struct { const char *name, *keys; } configs[] = {
#define X(n, k) {#n, k},
    CONFIGS(X)
#undef X
};
static const struct { const char *name, *sig, *kinds; } data_fns[] = {
#define X(n, s, k) {#n, s, k},
    DATA_FNS(X)
#undef X
};
#define NCONFIGS (int)(sizeof configs / sizeof *configs)
#define NDATA_FNS (int)(sizeof data_fns / sizeof *data_fns)
enum { BASE_CONFIG = 1000, BASE_DATA = 2000 };

/* Parses a signature string into Sig entries (literal defaults). */
static int parse_sig(Lower *L, const char *spec, Sig *out) {
    int n = 0;
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        char *item = xstrndup(p, len);
        char *eq = strchr(item, '=');
        Sig s = {0};
        if (eq) {
            *eq = 0;
            const char *d = eq + 1;
            char *end;
            s.has_def = true;
            if (!strcmp(d, "none")) s.def = val(L, VK_NONE);
            else if (!strcmp(d, "true") || !strcmp(d, "false")) s.def = v_bool(L, d[0] == 't');
            else if (strtoll(d, &end, 10), !*end) s.def = v_int(L, strtoll(d, NULL, 10));
            else if (strtod(d, &end), !*end) s.def = v_float(L, strtod(d, NULL));
            else { s.def = val(L, VK_STR); s.def->s = lstr(L, xstrdup(d)); }
        }
        s.star = item[0] == '*';
        s.name = lstr(L, xstrdup(item + s.star));
        free(item);
        out[n++] = s;
        p += len + (p[len] == ',');
    }
    return n;
}

static int step_value(Lower *L) {
    if (L->step_input < 0) L->step_input = ir_input(L->g, IR_IN_DATA, "step", IR_I64, IR_SCALAR);
    return L->step_input;
}

/* An axis list from none (every axis), an integer or a tuple. */
static bool want_axes(Lower *L, Value *v, Span sp, int *axes, int *n) {
    *n = 0;
    if (v->k == VK_NONE) return true;
    Value *one[1] = {v};
    Value **items = v->k == VK_TUPLE || v->k == VK_LIST ? v->items : one;
    int cnt = v->k == VK_TUPLE || v->k == VK_LIST ? v->n : 1;
    if (cnt > IR_MAX_RANK) { fail(L, sp, "too many axes"); return false; }
    for (int i = 0; i < cnt; i++) {
        int64_t a;
        if (!want_int(L, items[i], sp, "an axis", &a)) return false;
        axes[(*n)++] = (int)a;
    }
    return true;
}
static bool want_pair(Lower *L, Value *v, Span sp, const char *what, int64_t out[2]) {
    if (v->k == VK_TUPLE || v->k == VK_LIST) {
        if (v->n != 2) { fail(L, sp, "%s takes one integer or two", what); return false; }
        return want_int(L, v->items[0], sp, what, &out[0]) && want_int(L, v->items[1], sp, what, &out[1]);
    }
    if (!want_int(L, v, sp, what, &out[0])) return false;
    out[1] = out[0];
    return true;
}
static int want_tensor(Lower *L, Value *v, Span sp, const char *fn, const char *arg) {
    if (v->k == VK_TENSOR) return v->id;
    if (is_num(v)) return to_tensor(L, v, IR_F32);
    fail(L, sp, "%s needs a tensor for '%s', not %s", fn, arg, describe(L, v));
    return -1;
}

static Value *b_log_metric(Lower *L, Value **a, Span sp) {
    StepGraph *o = L->out;
    if (!o) return val(L, VK_NONE);
    for (int i = 0; i < o->nlogs; i++)
        if (!strcmp(o->logs[i].name, a[0]->s)) return fail(L, sp, "\"%s\" is logged twice in one step", a[0]->s);
    if (a[1]->k == VK_NONE) return fail(L, sp, "log(name, value): the value is missing");
    int id = want_tensor(L, a[1], sp, "log", "value");
    if (id < 0) return NULL;
    if (ir_numel(L->g->node[id].shape) != 1 || L->g->node[id].shape.rank > 1) {
        char *t = type_str(L, id);
        fail(L, sp, "log needs a scalar, not %s: reduce it first (mean(x))", t);
        free(t);
        return NULL;
    }
    if (a[5]->k != VK_STR || (strcmp(a[5]->s, "mean") && strcmp(a[5]->s, "sum") && strcmp(a[5]->s, "max") && strcmp(a[5]->s, "min")))
        return fail(L, sp, "reduce_fx is \"mean\", \"sum\", \"max\" or \"min\"");
    /* Lightning's defaults: training_step logs per step, the other steps per epoch */
    bool train = !strcmp(o->step, "training_step");
    o->logs = xrealloc(o->logs, sizeof *o->logs * (size_t)(o->nlogs + 1));
    o->logs[o->nlogs++] = (LogSpec){a[0]->s, id, a[2]->k == VK_BOOL && a[2]->i,
                                    a[3]->k == VK_BOOL ? a[3]->i : train, a[4]->k == VK_BOOL ? a[4]->i : !train,
                                    a[6]->k == VK_BOOL && a[6]->i, a[5]->s};
    ir_output(L->g, id, IR_OUT_VALUE, -1, lstr(L, xasprintf("log:%s", a[0]->s)));
    return val(L, VK_NONE);
}

static Value *b_random(Lower *L, int which, Value **a, Span sp) {
    IrShape s;
    if (!want_shape(L, a[0]->items, a[0]->n, sp, &s)) return NULL;
    uint64_t seed;
    int step;
    if (a[1]->k == VK_NONE) { seed = L->seed * 1000003u + ++L->sites; step = step_value(L); }
    else {
        int64_t sd;
        if (!want_int(L, a[1], sp, "seed", &sd)) return NULL;
        seed = (uint64_t)sd;
        step = ir_scalar(L->g, 0, IR_I64); /* a fixed seed draws the same numbers every step */
    }
    return ir_check(L, which == B_randn ? ir_rand_normal(L->g, s, IR_F32, 0, 1, seed, step)
                                        : ir_rand_uniform(L->g, s, IR_F32, 0, 1, seed, step), sp);
}

/* A data source's argument against its kind letter (DATA_FNS). */
static bool data_kind(Lower *L, const Value *v, char kind, const char *fn, const char *param, Span sp) {
    bool list = v->k == VK_LIST || v->k == VK_TUPLE;
    bool ok = kind == '.' || (kind == 's' && v->k == VK_STR) || (kind == 'S' && (v->k == VK_STR || list)) ||
              (kind == 'd' && v->k == VK_OPAQUE) || (kind == 'n' && is_num(v)) || (kind == 'l' && list);
    const char *want = kind == 's' ? "a file name" : kind == 'S' ? "a file name or a list of them"
                     : kind == 'd' ? "a data source such as idx(...)" : kind == 'n' ? "a number" : "a list of numbers";
    if (!ok) fail(L, sp, "%s: '%s' must be %s, not %s", fn, param, want, describe(L, v));
    return ok;
}

static Value *builtin(Lower *L, int which, const Node *call, Value **pos, int npos, const char **kwn,
                      Value **kwv, int nkw) {
    Span sp = call ? call->span : (Span){0};
    if (which >= BASE_DATA) { /* a description of a data source, built by the runtime */
        const char *fn = data_fns[which - BASE_DATA].name, *kinds = data_fns[which - BASE_DATA].kinds;
        Sig sig[4];
        Value *a[4];
        int ns = parse_sig(L, data_fns[which - BASE_DATA].sig, sig);
        if (!bind_args(L, sig, ns, a, pos, npos, kwn, kwv, nkw, fn, sp)) return NULL;
        Value *v = val(L, VK_OPAQUE);
        v->s = fn;
        for (int i = 0; i < ns; i++) {
            if (sig[i].star) {
                for (int j = 0; j < a[i]->n; j++) v_push(v, NULL, a[i]->items[j]);
            } else if (a[i]->k != VK_NONE) {
                if (!data_kind(L, a[i], kinds[i], fn, sig[i].name, sp)) return NULL;
                v_push(v, sig[i].name, a[i]);
            }
        }
        return v;
    }
    if (which >= BASE_CONFIG) {
        const char *name = configs[which - BASE_CONFIG].name;
        if (npos) return fail(L, sp, "%s takes keyword arguments: %s(name = value, ...)", name, name);
        Value *v = val(L, VK_CONFIG);
        v->s = name;
        Sig sig[16] = {0};
        int ns = 0;
        for (const char *p = configs[which - BASE_CONFIG].keys; *p; ns++) {
            size_t len = strcspn(p, "|");
            sig[ns] = (Sig){lstr(L, xstrndup(p, len)), NULL, true, false};
            p += len + (p[len] == '|');
        }
        Value *args[16];
        if (!bind_args(L, sig, ns, args, pos, npos, kwn, kwv, nkw, name, sp)) return NULL;
        for (int i = 0; i < ns; i++)
            if (args[i]) v_push(v, sig[i].name, args[i]);
        return v;
    }
    Sig sig[12];
    Value *a[12];
    int ns = parse_sig(L, builtins[which].sig, sig);
    const char *fn = builtins[which].name;
    if (!bind_args(L, sig, ns, a, pos, npos, kwn, kwv, nkw, fn, sp)) return NULL;
    IrGraph *g = L->g;
    int x = -1, axes[IR_MAX_RANK], naxes;
    int64_t i64, k2[2], s2[2], p2[2], d2[2];
    double d;
    IrShape shape;
    /* functions whose first argument is a tensor (numbers are made constants) */
    bool numeric_ok = which <= B_abs || which == B_leaky_relu;
    if (which <= B_to || (which >= B_sum && which <= B_linear) || (which >= B_flatten && which <= B_permute)) {
        if (which == B_log && a[0]->k == VK_STR) return b_log_metric(L, a, sp);
        if (which == B_log && a[1]->k != VK_NONE) return fail(L, sp, "log(x) takes one argument; log(\"name\", value) logs a metric");
        if (numeric_ok && is_num(a[0])) {
            double v = num(a[0]);
            switch (which) {
            case B_relu: return v_float(L, v > 0 ? v : 0);
            case B_tanh: return v_float(L, tanh(v));
            case B_sigmoid: return v_float(L, 1 / (1 + exp(-v)));
            case B_exp: return v_float(L, exp(v));
            case B_log: if (v <= 0) return fail(L, sp, "log of a non-positive number"); return v_float(L, log(v));
            case B_sqrt: if (v < 0) return fail(L, sp, "sqrt of a negative number"); return v_float(L, sqrt(v));
            case B_rsqrt: if (v <= 0) return fail(L, sp, "rsqrt of a non-positive number"); return v_float(L, 1 / sqrt(v));
            case B_abs: return a[0]->k == VK_INT ? v_int(L, a[0]->i < 0 ? -a[0]->i : a[0]->i) : v_float(L, fabs(v));
            default: break;
            }
        }
        if (which != B_where && (x = want_tensor(L, a[0], sp, fn, sig[0].name)) < 0) return NULL;
    }
    switch (which) {
    case B_relu: return ir_check(L, ir_relu(g, x), sp);
    case B_gelu: return ir_check(L, ir_gelu(g, x), sp);
    case B_tanh: return ir_check(L, ir_tanh(g, x), sp);
    case B_sigmoid: return ir_check(L, ir_sigmoid(g, x), sp);
    case B_exp: return ir_check(L, ir_exp(g, x), sp);
    case B_log: return ir_check(L, ir_log(g, x), sp);
    case B_sqrt: return ir_check(L, ir_sqrt(g, x), sp);
    case B_rsqrt: return ir_check(L, ir_rsqrt(g, x), sp);
    case B_abs: return ir_check(L, ir_abs(g, x), sp);
    case B_leaky_relu:
        if (!want_num(L, a[1], sp, "negative_slope", &d)) return NULL;
        return ir_check(L, ir_leaky_relu(g, x, d), sp);
    case B_detach: return ir_check(L, ir_detach(g, x), sp);
    case B_maximum: case B_minimum: {
        int y = to_tensor(L, a[1], dtype_of(L, a[0]));
        return ir_check(L, which == B_maximum ? ir_maximum(g, x, y) : ir_minimum(g, x, y), sp);
    }
    case B_where: {
        int c = want_tensor(L, a[0], sp, fn, "cond");
        if (c < 0) return NULL;
        IrDtype like = a[1]->k == VK_TENSOR ? dtype_of(L, a[1]) : dtype_of(L, a[2]);
        return ir_check(L, ir_where(g, c, to_tensor(L, a[1], like), to_tensor(L, a[2], like)), sp);
    }
    case B_cast: case B_to:
        if (a[1]->k != VK_DTYPE) return fail(L, sp, "%s needs a dtype such as f32", fn);
        return ir_check(L, ir_cast(g, x, (IrDtype)a[1]->i), sp);
    case B_sum: case B_mean: case B_max:
        if (!want_axes(L, a[1], sp, axes, &naxes)) return NULL;
        if (a[2]->k != VK_BOOL) return fail(L, sp, "keepdim is true or false");
        return ir_check(L, ir_reduce(g, which == B_sum ? IR_SUM : which == B_mean ? IR_MEAN : IR_MAX, x, axes, naxes, a[2]->i), sp);
    case B_logsumexp:
        if (!want_axes(L, a[1], sp, axes, &naxes)) return NULL;
        return ir_check(L, ir_logsumexp(g, x, axes, naxes, a[2]->k == VK_BOOL && a[2]->i), sp);
    case B_argmax:
        if (!want_int(L, a[1], sp, "dim", &i64)) return NULL;
        return ir_check(L, ir_argmax(g, x, (int)i64, a[2]->k == VK_BOOL && a[2]->i), sp);
    case B_softmax: case B_log_softmax:
        if (!want_int(L, a[1], sp, "dim", &i64)) return NULL;
        return ir_check(L, which == B_softmax ? ir_softmax(g, x, (int)i64) : ir_log_softmax(g, x, (int)i64), sp);
    case B_matmul: {
        int y = want_tensor(L, a[1], sp, fn, "b");
        return y < 0 ? NULL : ir_check(L, ir_matmul(g, x, y), sp);
    }
    case B_linear: {
        int w = want_tensor(L, a[1], sp, fn, "weight"), b = -1;
        if (w < 0 || (a[2]->k != VK_NONE && (b = want_tensor(L, a[2], sp, fn, "bias")) < 0)) return NULL;
        return ir_check(L, ir_linear(g, x, w, b), sp);
    }
    case B_flatten: {
        int64_t s, e;
        if (!want_int(L, a[1], sp, "start_dim", &s) || !want_int(L, a[2], sp, "end_dim", &e)) return NULL;
        return ir_check(L, ir_flatten(g, x, (int)s, (int)e), sp);
    }
    case B_reshape: case B_view:
        if (!want_shape(L, a[1]->items, a[1]->n, sp, &shape)) return NULL;
        return ir_check(L, ir_reshape(g, x, shape), sp);
    case B_transpose: {
        int64_t d0, d1;
        if (!want_int(L, a[1], sp, "dim0", &d0) || !want_int(L, a[2], sp, "dim1", &d1)) return NULL;
        return ir_check(L, ir_transpose(g, x, (int)d0, (int)d1), sp);
    }
    case B_permute: {
        int perm[IR_MAX_RANK], np;
        Value *dims = a[1]->n == 1 ? a[1]->items[0] : a[1];
        if (!want_axes(L, dims, sp, perm, &np)) return NULL;
        if (np != g->node[x].shape.rank) return fail(L, sp, "permute needs %d axes, got %d", g->node[x].shape.rank, np);
        return ir_check(L, ir_permute(g, x, perm), sp);
    }
    case B_concat: case B_cat: {
        if (a[0]->k != VK_LIST && a[0]->k != VK_TUPLE) return fail(L, sp, "%s takes a list of tensors", fn);
        int ids[64];
        if (a[0]->n < 1 || a[0]->n > 64) return fail(L, sp, "%s takes 1 to 64 tensors", fn);
        for (int i = 0; i < a[0]->n; i++)
            if ((ids[i] = want_tensor(L, a[0]->items[i], sp, fn, "tensors")) < 0) return NULL;
        if (!want_int(L, a[1], sp, "dim", &i64)) return NULL;
        return ir_check(L, ir_concat(g, ids, a[0]->n, (int)i64), sp);
    }
    case B_conv2d: {
        int w = (x = want_tensor(L, a[0], sp, fn, "x")) < 0 ? -1 : want_tensor(L, a[1], sp, fn, "weight"), b = -1;
        int64_t groups;
        if (w < 0 || (a[2]->k != VK_NONE && (b = want_tensor(L, a[2], sp, fn, "bias")) < 0)) return NULL;
        if (!want_pair(L, a[3], sp, "stride", s2) || !want_pair(L, a[4], sp, "padding", p2) ||
            !want_pair(L, a[5], sp, "dilation", d2) || !want_int(L, a[6], sp, "groups", &groups))
            return NULL;
        int y = ir_conv2d(g, x, w, s2, p2, d2, (int)groups);
        if (y >= 0 && b >= 0) { /* bias over channels: [C] → [C, 1, 1] */
            int br = ir_reshape(g, b, IR_SHAPE(g->node[b].shape.d[0], 1, 1));
            y = ir_add(g, y, br);
        }
        return ir_check(L, y, sp);
    }
    case B_max_pool2d: case B_avg_pool2d:
        if ((x = want_tensor(L, a[0], sp, fn, "x")) < 0 || !want_pair(L, a[1], sp, "kernel_size", k2) || !want_pair(L, a[3], sp, "padding", p2)) return NULL;
        if (a[2]->k == VK_NONE) { s2[0] = k2[0]; s2[1] = k2[1]; }
        else if (!want_pair(L, a[2], sp, "stride", s2)) return NULL;
        return ir_check(L, which == B_max_pool2d ? ir_max_pool2d(g, x, k2, s2, p2)
                                                 : ir_avg_pool2d(g, x, k2, s2, p2, a[4]->k != VK_BOOL || a[4]->i), sp);
    case B_dropout:
        if ((x = want_tensor(L, a[0], sp, fn, "x")) < 0 || !want_num(L, a[1], sp, "p", &d)) return NULL;
        if (d < 0 || d >= 1) return fail(L, sp, "dropout probability must be in [0, 1)");
        if (!L->training || d == 0) return a[0];
        return ir_check(L, ir_dropout(g, x, d, L->seed * 1000003u + ++L->sites, step_value(L)), sp);
    case B_layer_norm: {
        int w = -1, b = -1;
        if ((x = want_tensor(L, a[0], sp, fn, "x")) < 0) return NULL;
        if (a[1]->k != VK_NONE && (w = want_tensor(L, a[1], sp, fn, "weight")) < 0) return NULL;
        if (a[2]->k != VK_NONE && (b = want_tensor(L, a[2], sp, fn, "bias")) < 0) return NULL;
        if (!want_num(L, a[3], sp, "eps", &d)) return NULL;
        return ir_check(L, ir_layer_norm(g, x, w >= 0 ? g->node[w].shape.rank : 1, w, b, d), sp);
    }
    case B_batch_norm: {
        int ids[5];
        double mom;
        for (int i = 0; i < 5; i++)
            if ((ids[i] = want_tensor(L, a[i], sp, fn, sig[i].name)) < 0) return NULL;
        if (!want_num(L, a[5], sp, "momentum", &mom) || !want_num(L, a[6], sp, "eps", &d)) return NULL;
        int nrm, nrv;
        int y = ir_batch_norm(g, ids[0], ids[1], ids[2], ids[3], ids[4], L->training, mom, d, &nrm, &nrv);
        if (y >= 0 && L->training) {
            if (g->node[ids[3]].op != IR_INPUT || g->node[ids[4]].op != IR_INPUT)
                return fail(L, sp, "batch_norm's running statistics must be buffers of the model");
            ir_output(g, nrm, IR_OUT_UPDATE, ids[3], g->node[ids[3]].name);
            ir_output(g, nrv, IR_OUT_UPDATE, ids[4], g->node[ids[4]].name);
        }
        return ir_check(L, y, sp);
    }
    case B_embedding: {
        int w = want_tensor(L, a[0], sp, fn, "weight"), idx = w < 0 ? -1 : want_tensor(L, a[1], sp, fn, "idx");
        return idx < 0 ? NULL : ir_check(L, ir_embedding(g, w, idx), sp);
    }
    case B_one_hot:
        if ((x = want_tensor(L, a[0], sp, fn, "x")) < 0 || !want_int(L, a[1], sp, "num_classes", &i64)) return NULL;
        return ir_check(L, ir_one_hot(g, x, i64, IR_I64), sp);
    case B_cross_entropy: case B_nll_loss: case B_mse_loss: case B_bce_with_logits: case B_accuracy:
    case B_l1_loss: case B_bce: {
        int in = want_tensor(L, a[0], sp, fn, "input"), t = in < 0 ? -1 : want_tensor(L, a[1], sp, fn, "target"), r;
        if (t < 0) return NULL;
        Value *red = a[which == B_cross_entropy ? 3 : 2];
        if (which != B_accuracy && (red->k != VK_STR || (strcmp(red->s, "mean") && strcmp(red->s, "sum"))))
            return fail(L, sp, "%s: reduction is \"mean\" or \"sum\"", fn);
        switch (which) {
        case B_cross_entropy:
            if (!want_num(L, a[2], sp, "label_smoothing", &d)) return NULL;
            r = ir_cross_entropy(g, in, t, d);
            break;
        case B_nll_loss: r = ir_nll_loss(g, in, t); break;
        case B_mse_loss: r = ir_mse_loss(g, in, t); break;
        case B_bce_with_logits: r = ir_bce_with_logits(g, in, t); break;
        case B_l1_loss: r = ir_mean(g, ir_abs(g, ir_sub(g, in, t)), NULL, 0, false); break;
        case B_bce: { /* PyTorch clamps each log at -100, so p = 0 or 1 gives a finite loss */
            int lo = ir_scalar(g, -100, g->node[in].dtype), one = ir_scalar(g, 1, g->node[in].dtype);
            int lp = ir_maximum(g, ir_log(g, in), lo), lq = ir_maximum(g, ir_log(g, ir_sub(g, one, in)), lo);
            r = ir_neg(g, ir_mean(g, ir_add(g, ir_mul(g, t, lp), ir_mul(g, ir_sub(g, one, t), lq)), NULL, 0, false));
            break;
        }
        default: return ir_check(L, ir_accuracy(g, in, t), sp);
        }
        if (r >= 0 && !strcmp(red->s, "sum")) { /* the mean times the count it averaged over */
            bool cls = which == B_cross_entropy || which == B_nll_loss;
            r = ir_mul(g, r, ir_scalar(g, (double)ir_numel(g->node[cls ? t : in].shape), g->node[r].dtype));
        }
        return ir_check(L, r, sp);
    }
    case B_randn: case B_rand: return b_random(L, which, a, sp);
    case B_zeros: case B_ones: {
        if (a[0]->n == 0) { /* an initialiser: param w: f32[n] = zeros() */
            Value *v = val(L, VK_CONFIG);
            v->s = "constant";
            v_push(v, "value", v_float(L, which == B_ones));
            return v;
        }
        IrDtype t = IR_F32;
        if (a[1]->k == VK_DTYPE) t = (IrDtype)a[1]->i;
        else if (a[1]->k != VK_NONE) return fail(L, sp, "dtype must be a dtype such as f32");
        if (!want_shape(L, a[0]->items, a[0]->n, sp, &shape)) return NULL;
        return ir_check(L, ir_const(g, which == B_ones, t, shape), sp);
    }
    case B_arange: {
        if (!want_int(L, a[0], sp, "n", &i64)) return NULL;
        if (i64 < 0 || i64 > (1 << 24)) return fail(L, sp, "arange(n) needs 0 <= n <= 2^24");
        double *v = xmalloc(sizeof *v * (size_t)(i64 ? i64 : 1));
        for (int64_t i = 0; i < i64; i++) v[i] = (double)i;
        int c = ir_const_data(g, IR_I64, IR_SHAPE(i64), v);
        free(v);
        return ir_check(L, c, sp);
    }
    case B_range: {
        if (!want_int(L, a[0], sp, "n", &i64)) return NULL;
        if (i64 < 0 || i64 > 100000) return fail(L, sp, "range(n) needs 0 <= n <= 100000");
        Value *l = val(L, VK_LIST);
        for (int64_t i = 0; i < i64; i++) v_push(l, NULL, v_int(L, i));
        return l;
    }
    case B_len:
        if (a[0]->k == VK_LIST || a[0]->k == VK_TUPLE || a[0]->k == VK_DICT) return v_int(L, a[0]->n);
        if (a[0]->k == VK_STR) return v_int(L, (int64_t)strlen(a[0]->s));
        if (a[0]->k == VK_TENSOR && g->node[a[0]->id].shape.rank) return v_int(L, g->node[a[0]->id].shape.d[0]);
        return fail(L, sp, "len of %s", describe(L, a[0]));
    case B_enumerate: {
        if (a[0]->k != VK_LIST && a[0]->k != VK_TUPLE) return fail(L, sp, "enumerate takes a list");
        Value *l = val(L, VK_LIST);
        for (int i = 0; i < a[0]->n; i++) {
            Value *t = val(L, VK_TUPLE);
            v_push(t, NULL, v_int(L, i));
            v_push(t, NULL, a[0]->items[i]);
            v_push(l, NULL, t);
        }
        return l;
    }
    case B_print: return val(L, VK_NONE);
    case B_save_image_grid:
        if (a[0]->k != VK_TENSOR || g->node[a[0]->id].shape.rank != 4)
            return fail(L, sp, "save_image_grid takes images [N, C, H, W], not %s", describe(L, a[0]));
        if (a[1]->k != VK_STR) return fail(L, sp, "save_image_grid needs a file name");
        if (!want_int(L, a[2], sp, "nrow", &i64)) return NULL;
        if (i64 < 1) return fail(L, sp, "nrow must be at least 1");
        /* the runtime writes the PNG after the hook runs: the output names the file */
        ir_output(g, a[0]->id, IR_OUT_VALUE, -1, ir_strdup(g, lstr(L, xasprintf("image:%lld:%s", (long long)i64, a[1]->s))));
        return val(L, VK_NONE);
    case B_log_confusion_matrix: { /* counts [C, C] the runtime sums over the epoch into NAME_epochE.csv */
        int in = want_tensor(L, a[1], sp, fn, "input"), t = in < 0 ? -1 : want_tensor(L, a[2], sp, fn, "target");
        if (t < 0) return NULL;
        if (a[0]->k != VK_STR) return fail(L, sp, "log_confusion_matrix needs a name");
        const IrNode *n = &g->node[in];
        if (n->shape.rank != 2 || g->node[t].shape.rank != 1)
            return fail(L, sp, "log_confusion_matrix takes scores [N, C] and classes [N]");
        int64_t nc = n->shape.d[1];
        int cm = ir_matmul(g, ir_transpose(g, ir_one_hot(g, t, nc, IR_F32), 0, 1),
                           ir_one_hot(g, ir_argmax(g, in, 1, false), nc, IR_F32));
        if (ir_check(L, cm, sp) == NULL) return NULL;
        ir_output(g, cm, IR_OUT_VALUE, -1, ir_strdup(g, lstr(L, xasprintf("cm:%s", a[0]->s))));
        return val(L, VK_NONE);
    }
    case B_generate: { /* text sampled from forward after the hook runs: the output says how */
        double temp;
        int64_t seed;
        if (a[0]->k != VK_STR) return fail(L, sp, "generate needs a prompt string, not %s", describe(L, a[0]));
        if (!want_int(L, a[1], sp, "steps", &i64) || !want_num(L, a[2], sp, "temperature", &temp) ||
            !want_int(L, a[3], sp, "seed", &seed))
            return NULL;
        if (i64 < 1 || temp < 0) return fail(L, sp, "generate needs steps >= 1 and temperature >= 0");
        int c = ir_const(g, 0, IR_F32, IR_SCALAR);
        ir_output(g, c, IR_OUT_VALUE, -1,
                  ir_strdup(g, lstr(L, xasprintf("generate:%lld:%.17g:%lld:%s", (long long)i64, temp, (long long)seed, a[0]->s))));
        return val(L, VK_NONE);
    }
    }
    return fail(L, sp, "%s is not available here", fn);
}

/* ---- members, calls, modules ---- */

static Value *scope_get_local(Scope *s, const char *name) {
    for (int i = s->n - 1; i >= 0; i--)
        if (!strcmp(s->names[i], name)) return s->vals[i];
    return NULL;
}

static Value *no_member(Lower *L, Scope *s, const char *what, const char *name, Span sp) {
    const char *best = NULL;
    int bd = 3;
    for (int i = 0; i < s->n; i++) {
        int d = edit_distance(name, s->names[i]);
        if (d < bd) { bd = d; best = s->names[i]; }
    }
    if (best) fail(L, sp, "%s has no member '%s'; did you mean '%s'?", what, name, best);
    else fail(L, sp, "%s has no member '%s'", what, name);
    return NULL;
}

static Value *member(Lower *L, Value *obj, const char *name, Span sp) {
    Value *v;
    switch (obj->k) {
    case VK_NAMESPACE:
        if ((v = scope_get_local(obj->file->globals, name))) return v;
        return no_member(L, obj->file->globals, lstr(L, xasprintf("module %s", obj->file->name)), name, sp);
    case VK_MODULE:
        if ((v = scope_get_local(obj->mod->scope, name))) {
            if (v->k == VK_OPAQUE) { /* data.vocab_size: known once the data is read */
                Value *o = val(L, VK_OPAQUE);
                o->s = name;
                return o;
            }
            return v;
        }
        return no_member(L, obj->mod->scope, lstr(L, xasprintf("%s", obj->mod->decl->name)), name, sp);
    case VK_OPAQUE: v = val(L, VK_OPAQUE); v->s = name; return v;
    case VK_CONFIG:
        for (int i = 0; i < obj->n; i++)
            if (!strcmp(obj->keys[i], name)) return obj->items[i];
        return fail(L, sp, "%s(...) has no '%s'", obj->s, name);
    case VK_TENSOR: {
        const IrNode *n = &L->g->node[obj->id];
        if (!strcmp(name, "T")) {
            if (n->shape.rank < 2) return fail(L, sp, ".T needs at least 2 dimensions");
            return ir_check(L, ir_transpose(L->g, obj->id, n->shape.rank - 2, n->shape.rank - 1), sp);
        }
        if (!strcmp(name, "shape")) {
            v = val(L, VK_TUPLE);
            for (int i = 0; i < n->shape.rank; i++) v_push(v, NULL, v_int(L, n->shape.d[i]));
            return v;
        }
        if (!strcmp(name, "ndim")) return v_int(L, n->shape.rank);
        if (!strcmp(name, "dtype")) { v = val(L, VK_DTYPE); v->i = n->dtype; return v; }
        for (int i = 0; i < B_COUNT; i++)
            if (!strcmp(builtins[i].name, name) && builtins[i].sig[0] == 'x') {
                v = val(L, VK_BUILTIN);
                v->id = i;
                v->self = obj;
                return v;
            }
        return fail(L, sp, "a tensor has no method '%s'", name);
    }
    default:
        return fail(L, sp, "%s has no members", describe(L, obj));
    }
}

/* Sub-modules are named after the member they are bound to: "l1.", "G.l1.", "blocks.0.". */
static int member_count;

static Value *call_value(Lower *L, Value *fn, const Node *call, Value **pos, int npos,
                         const char **kwn, Value **kwv, int nkw, Scope *sc) {
    (void)sc;
    Span sp = call ? call->span : (Span){0};
    switch (fn->k) {
    case VK_FUNC: return call_func(L, fn, call, pos, npos, kwn, kwv, nkw);
    case VK_CLASS: {
        if (!member_path) return fail(L, sp, "a model is created in a model body (l1 = nn.Linear(4, 2)), not here");
        const char *path = member_count++ || member_list ? lstr(L, xasprintf("%s%d.", member_path, member_count - 1)) : member_path;
        Module *m = instantiate(L, fn, call, pos, npos, kwn, kwv, nkw, path);
        if (!m) return NULL;
        Value *v = val(L, VK_MODULE);
        v->mod = m;
        return v;
    }
    case VK_MODULE: {
        Value *f = scope_get_local(fn->mod->scope, "forward");
        if (!f || f->k != VK_FUNC) return fail(L, sp, "%s has no forward method to call", fn->mod->decl->name);
        Value *r = call_func(L, f, call, pos, npos, kwn, kwv, nkw);
        for (int i = 0; r && r->k == VK_TENSOR && L->out && i < L->out->nsubs; i++) /* the summary's Out sizes */
            if (L->out->subs[i].name == fn->mod->path && !L->out->subs[i].out) L->out->subs[i].out = lstr(L, type_str(L, r->id));
        return r;
    }
    case VK_LIST: { /* a list of modules is applied in sequence, like nn.Sequential */
        if (npos != 1 || nkw) return fail(L, sp, "a sequence of modules takes one argument");
        Value *x = pos[0];
        for (int i = 0; i < fn->n && x; i++) x = call_value(L, fn->items[i], call, &x, 1, NULL, NULL, 0, sc);
        const char *first = fn->n && fn->items[0]->k == VK_MODULE ? fn->items[0]->mod->path : NULL;
        size_t plen = first && strchr(first, '.') ? (size_t)(strchr(first, '.') - first) + 1 : 0;
        for (int i = 0; x && x->k == VK_TENSOR && plen && L->out && i < L->out->nsubs; i++) /* repeat's row */
            if (!L->out->subs[i].out && strlen(L->out->subs[i].name) == plen && !strncmp(L->out->subs[i].name, first, plen))
                L->out->subs[i].out = lstr(L, type_str(L, x->id));
        return x;
    }
    case VK_BUILTIN:
        if (fn->self) {
            Value **p2 = xcalloc((size_t)npos + 1, sizeof *p2);
            p2[0] = fn->self;
            memcpy(p2 + 1, pos, sizeof *pos * (size_t)npos);
            Value *r = builtin(L, fn->id, call, p2, npos + 1, kwn, kwv, nkw);
            free(p2);
            return r;
        }
        return builtin(L, fn->id, call, pos, npos, kwn, kwv, nkw);
    default:
        return fail(L, sp, "%s is not callable", describe(L, fn));
    }
}

/* An initialiser (kaiming_uniform(), zeros(), a number) and a shape make a distribution,
 * with PyTorch's fan computations. */
static bool init_spec(Lower *L, Value *init, IrShape s, const Node *at, ParamInit *p) {
    p->dist = INIT_CONST;
    p->a = p->b = 0;
    if (!init) return true;
    if (is_num(init)) { p->a = num(init); return true; }
    if (init->k != VK_CONFIG) { fail(L, at->span, "an initialiser such as kaiming_uniform(), zeros() or a number"); return false; }
    double arg[2] = {0, 0}, gain = 1;
    const char *mode = "fan_in", *nl = "leaky_relu";
    int64_t recep = 1;
    for (int i = 2; i < s.rank; i++) recep *= s.d[i];
    double fan_in = s.rank >= 2 ? (double)(s.d[1] * recep) : s.rank ? (double)s.d[0] : 1;
    double fan_out = s.rank >= 2 ? (double)(s.d[0] * recep) : fan_in;
    const char *k = init->s;
    for (int i = 0; i < init->n; i++) {
        const char *key = init->keys[i];
        Value *v = init->items[i];
        if (v->k == VK_STR) { if (!strcmp(key, "mode")) mode = v->s; else nl = v->s; continue; }
        double x;
        if (!want_num(L, v, at->span, key, &x)) return false;
        if (!strcmp(key, "a") || !strcmp(key, "mean") || !strcmp(key, "value")) arg[0] = x;
        else if (!strcmp(key, "b") || !strcmp(key, "std")) arg[1] = x;
        else if (!strcmp(key, "gain")) gain = x;
    }
    if (!strcmp(k, "kaiming_uniform") || !strcmp(k, "kaiming_normal")) {
        /* torch.nn.init.calculate_gain */
        double g2 = !strcmp(nl, "relu") ? sqrt(2.0) : !strcmp(nl, "tanh") ? 5.0 / 3 : !strcmp(nl, "selu") ? 0.75
                  : !strcmp(nl, "leaky_relu") ? sqrt(2.0 / (1 + arg[0] * arg[0])) : 1; /* linear, conv*, sigmoid */
        double std = g2 / sqrt(!strcmp(mode, "fan_out") ? fan_out : fan_in);
        if (k[8] == 'u') { p->dist = INIT_UNIFORM; p->a = -sqrt(3.0) * std; p->b = sqrt(3.0) * std; }
        else { p->dist = INIT_NORMAL; p->a = 0; p->b = std; }
    } else if (!strcmp(k, "xavier_uniform")) {
        double b = gain * sqrt(6.0 / (fan_in + fan_out));
        p->dist = INIT_UNIFORM; p->a = -b; p->b = b;
    } else if (!strcmp(k, "xavier_normal")) {
        p->dist = INIT_NORMAL; p->a = 0; p->b = gain * sqrt(2.0 / (fan_in + fan_out));
    } else if (!strcmp(k, "uniform")) {
        bool hasb = false;
        for (int i = 0; i < init->n; i++) hasb |= !strcmp(init->keys[i], "b");
        p->dist = INIT_UNIFORM; p->a = arg[0]; p->b = hasb ? arg[1] : 1;
    } else if (!strcmp(k, "normal")) {
        bool hasstd = false;
        for (int i = 0; i < init->n; i++) hasstd |= !strcmp(init->keys[i], "std");
        p->dist = INIT_NORMAL; p->a = arg[0]; p->b = hasstd ? arg[1] : 1;
    } else if (!strcmp(k, "constant")) {
        p->a = arg[0];
    } else {
        fail(L, at->span, "%s() is not an initialiser", k);
        return false;
    }
    return true;
}

/* `param name: type = init` / `buffer …`: an INPUT of the graph, recorded with its init. */
static Value *declare_tensor(Lower *L, Module *m, const Node *d) {
    const Node *ann = d->kids[0], *dt = ann->kind == N_INDEX ? ann->kids[0] : ann;
    if (dt->kind != N_DTYPE) return fail(L, ann->span, "a tensor type is a dtype with dimensions, like f32[128, 784]");
    IrShape s = {0};
    for (int i = 1; ann->kind == N_INDEX && i < ann->nkids; i++) {
        Value *v = eval(L, ann->kids[i], m->scope);
        if (!v || !want_int(L, v, ann->kids[i]->span, "a dimension", &s.d[s.rank])) return NULL;
        if (s.d[s.rank] <= 0) return fail(L, ann->kids[i]->span, "a dimension must be positive");
        if (++s.rank > IR_MAX_RANK) return fail(L, ann->span, "at most %d dimensions", IR_MAX_RANK);
    }
    ParamInit p = {.name = lstr(L, xasprintf("%s%s", m->path, d->name)), .trainable = d->op == TK_PARAM};
    Value *init = d->kids[1] ? eval(L, d->kids[1], m->scope) : NULL;
    if ((d->kids[1] && !init) || !init_spec(L, init, s, d->kids[1] ? d->kids[1] : d, &p)) return NULL;
    ir_set_loc(L->g, d->span.line, d->span.col);
    p.id = ir_input(L->g, d->op == TK_PARAM ? IR_IN_PARAM : IR_IN_BUFFER, p.name, (IrDtype)dt->op, s);
    if (p.id < 0) return ir_check(L, p.id, d->span);
    if (L->out) {
        L->out->params = xrealloc(L->out->params, sizeof *L->out->params * (size_t)(L->out->nparams + 1));
        L->out->params[L->out->nparams++] = p;
    }
    return v_tensor(L, p.id);
}

static Module *instantiate(Lower *L, Value *cls, const Node *call, Value **pos, int npos,
                           const char **kwn, Value **kwv, int nkw, const char *path) {
    const Node *decl = cls->node, *hp = decl->kids[0], *members = decl->kids[1];
    if (++L->depth > 64) { L->depth--; fail(L, call ? call->span : decl->span, "models nested too deeply (a model containing itself?)"); return NULL; }
    Module *m = xcalloc(1, sizeof *m);
    Value *keep = val(L, VK_MODULE); /* owns m */
    keep->mod = m;
    m->decl = decl;
    m->path = path;
    m->file = cls->file;
    m->scope = scope_new(L, cls->file->globals);
    m->site = call ? call->span : decl->span;
    int nh = hp ? hp->nkids : 0;
    Sig *sig = xcalloc((size_t)nh + 1, sizeof *sig);
    Value **args = xcalloc((size_t)nh + 1, sizeof *args);
    bool ok = true;
    const char *saved_path = member_path;
    int saved_count = member_count;
    member_path = NULL;
    for (int i = 0; i < nh && ok; i++) {
        sig[i].name = hp->kids[i]->name;
        if (hp->kids[i]->kids[1]) {
            sig[i].has_def = true;
            ok = (sig[i].def = eval(L, hp->kids[i]->kids[1], m->scope)) != NULL;
        }
    }
    ok = ok && bind_args(L, sig, nh, args, pos, npos, kwn, kwv, nkw, decl->name, m->site);
    for (int i = 0; ok && i < nh; i++) scope_set(m->scope, sig[i].name, args[i]);
    for (int i = 0; ok && i < members->nkids; i++) {
        const Node *mb = members->kids[i];
        Value *v;
        switch (mb->kind) {
        case N_BIND:
            member_path = lstr(L, xasprintf("%s%s.", path, mb->kids[0]->kids[0]->name));
            member_count = 0;
            /* modules in a list (Sequential([...])) are named by position from 0, as PyTorch's */
            member_list = mb->kids[1]->kind == N_LIST;
            for (int k = 1; mb->kids[1]->kind == N_CALL && k < mb->kids[1]->nkids; k++)
                member_list |= mb->kids[1]->kids[k]->kind == N_LIST;
            v = eval(L, mb->kids[1], m->scope);
            member_path = NULL;
            ok = v && bind_targets(L, mb->kids[0], v, m->scope, mb->span);
            break;
        case N_DECL:
            ok = (v = declare_tensor(L, m, mb)) != NULL;
            if (ok) scope_set(m->scope, mb->name, v);
            break;
        case N_METHOD:
            v = val(L, VK_FUNC);
            v->node = mb;
            v->mod = m;
            v->file = cls->file;
            scope_set(m->scope, mb->name, v);
            break;
        case N_EXPR_STMT:
            if (decl->kind == N_MODEL) {
                fail(L, mb->span, "a model body holds bindings, param/buffer declarations and methods");
                ok = false;
            } else if ((v = eval(L, mb->kids[0], m->scope)) && v->k == VK_CONFIG) {
                scope_set(m->scope, v->s, v);
            } else ok = v != NULL;
            break;
        default: break;
        }
    }
    member_path = saved_path;
    member_count = saved_count;
    free(sig);
    free(args);
    L->depth--;
    const char *dot = strchr(path, '.');
    if (ok && L->out && dot && !dot[1] && strcmp(path, "data.") && L->out->nsubs < 64) /* "l1.": a child of the root */
        L->out->subs[L->out->nsubs++] = (SubModule){path, decl->name, NULL};
    return ok ? m : NULL;
}

/* ---- files and `use` ---- */

static const char *stdlib_dir(void) {
    const char *d = getenv("LTL_STDLIB");
#ifdef LTL_STDLIB_DIR
    if (!d) d = LTL_STDLIB_DIR;
#endif
    return d ? d : "stdlib";
}

const char *sema_use_path(const char *from, const char *name, char **local, char **lib) {
    char *rel = xstrdup(name), *dir = xstrdup(from), *slash = strrchr(dir, '/');
    for (char *c = rel; *c; c++) if (*c == '.') *c = '/';
    if (slash) slash[1] = 0; else dir[0] = 0;
    *local = xasprintf("%s%s.ltl", dir, rel);
    *lib = xasprintf("%s/%s.ltl", stdlib_dir(), rel);
    free(rel);
    free(dir);
    return access(*local, R_OK) == 0 ? *local : access(*lib, R_OK) == 0 ? *lib : NULL;
}

static File *load_file(Lower *L, const char *path, const char *name, const Node *root, Span site);

static bool load_items(Lower *L, File *f) {
    for (int i = 0; i < f->root->nkids; i++) {
        const Node *it = f->root->kids[i];
        Value *v;
        switch (it->kind) {
        case N_USE: {
            char *local, *lib;
            const char *path = sema_use_path(f->path, it->name, &local, &lib);
            const char *last = strrchr(it->name, '.');
            File *dep = path ? load_file(L, path, it->name, NULL, it->span) : NULL;
            if (!path) diag_error(it->span, "no module '%s' (looked for %s and %s)", it->name, local, lib);
            free(local); free(lib);
            if (!dep) return false;
            v = val(L, VK_NAMESPACE);
            v->file = dep;
            scope_set(f->globals, it->kids[0] ? it->kids[0]->name : last ? last + 1 : it->name, v);
            break;
        }
        case N_MODEL: case N_DATA: case N_FN:
            v = val(L, it->kind == N_FN ? VK_FUNC : VK_CLASS);
            v->node = it;
            v->file = f;
            scope_set(f->globals, it->name, v);
            break;
        case N_BIND:
            if (!(v = eval(L, it->kids[1], f->globals)) || !bind_targets(L, it->kids[0], v, f->globals, it->span)) return false;
            break;
        default: break;
        }
    }
    return true;
}

static File *load_file(Lower *L, const char *path, const char *name, const Node *root, Span site) {
    for (int i = 0; i < L->nfiles; i++)
        if (!strcmp(L->files[i]->path, path)) {
            if (L->files[i]->loading) { diag_error(site, "'use %s' imports itself (a cycle of uses)", name); return NULL; }
            return L->files[i];
        }
    File *f = xcalloc(1, sizeof *f);
    L->files = xrealloc(L->files, sizeof *L->files * (size_t)(L->nfiles + 1));
    L->files[L->nfiles++] = f;
    f->path = lstr(L, xstrdup(path));
    f->name = lstr(L, xstrdup(name));
    f->globals = scope_new(L, L->scopes[0]);
    if (root) f->root = (Node *)root;
    else {
        int before = diag_error_count();
        size_t len;
        char *err = NULL;
        if (!(f->text = read_file(path, &len, SOURCE_MAX_BYTES, &err))) {
            diag_error(site, "%s", err);
            free(err);
            return NULL;
        }
        /* the standard library is named stdlib/NAME.ltl in messages, wherever it is installed */
        const char *lib = stdlib_dir();
        char *shown = !strncmp(path, lib, strlen(lib)) ? xasprintf("stdlib%s", path + strlen(lib)) : xstrdup(path);
        f->root = parse_source(&f->ast, shown, f->text, len);
        free(shown);
        if (!f->root || diag_error_count() > before) return NULL;
    }
    f->loading = true; /* a cycle of uses finds it so */
    bool ok = load_items(L, f);
    f->loading = false;
    return ok ? f : NULL;
}

/* ---- steps ---- */

/* scopes[0]: the built-ins, looked up after every file's globals. */
static void builtin_scope(Lower *L) {
    Scope *bs = scope_new(L, NULL);
    for (int i = 0; i < B_COUNT + NCONFIGS + NDATA_FNS; i++) {
        Value *v = val(L, VK_BUILTIN);
        v->id = i < B_COUNT ? i : i < B_COUNT + NCONFIGS ? BASE_CONFIG + i - B_COUNT : BASE_DATA + i - B_COUNT - NCONFIGS;
        scope_set(bs, i < B_COUNT ? builtins[i].name : i < B_COUNT + NCONFIGS ? configs[i - B_COUNT].name
                                                                             : data_fns[i - B_COUNT - NCONFIGS].name, v);
    }
}

/* The model the trainer trains: the last one with a training_step (else the last one). */
static const Node *root_model(const Node *program) {
    const Node *best = NULL, *any = NULL;
    for (int i = 0; i < program->nkids; i++) {
        const Node *it = program->kids[i];
        if (it->kind != N_MODEL) continue;
        any = it;
        for (int j = 0; j < it->kids[1]->nkids; j++)
            if (it->kids[1]->kids[j]->kind == N_METHOD && !strcmp(it->kids[1]->kids[j]->name, "training_step")) best = it;
    }
    return best ? best : any;
}

static const Node *param_type(Module *root, const char *method, const char *name, int pos) {
    Value *f = scope_get_local(root->scope, method);
    if (!f || f->k != VK_FUNC) return NULL;
    const Node *ps = f->node->kids[0];
    for (int i = 0; i < ps->nkids; i++)
        if (name ? !strcmp(ps->kids[i]->name, name) : i == pos) return ps->kids[i]->kids[0];
    return NULL;
}

/* A step parameter becomes a DATA input; an unannotated one borrows the annotation of the
 * same-named parameter of training_step, or of forward's parameter at the same place. */
static Value *step_input(Lower *L, Module *root, const Node *method, int i) {
    const Node *p = method->kids[0]->kids[i], *ann = p->kids[0];
    if (!ann) ann = param_type(root, "training_step", p->name, -1);
    if (!ann) ann = param_type(root, "forward", NULL, i);
    if (!ann)
        return fail(L, p->span, "annotate '%s' with its type (like %s: f32[B, 784]): a step's inputs come from the data", p->name, p->name);
    L->input_index = i;
    Value *v = input_from_type(L, p, ann, root->scope);
    L->input_index = -1;
    return v;
}

static double cfg_num(Value *cfg, const char *key, double def) {
    for (int i = 0; i < cfg->n; i++)
        if (!strcmp(cfg->keys[i], key) && is_num(cfg->items[i])) return num(cfg->items[i]);
    return def;
}
static bool cfg_bool(Value *cfg, const char *key) {
    for (int i = 0; i < cfg->n; i++)
        if (!strcmp(cfg->keys[i], key) && cfg->items[i]->k == VK_BOOL) return cfg->items[i]->i;
    return false;
}

/* A scheduler's settings for the runtime (a list becomes "10,20"). */
static bool scheduler(Lower *L, Value *v, RtScheduler *out, Span at) {
    static const char *const kinds = "step|multistep|exponential|cosine|one_cycle|linear_warmup|reduce_on_plateau";
    IrGraph *g = L->g;
    *out = (RtScheduler){.frequency = 1};
    if (!v) return true;
    if (v->k != VK_CONFIG || !strstr(kinds, v->s)) {
        fail(L, at, "a scheduler is one of step, multistep, exponential, cosine, one_cycle, linear_warmup, reduce_on_plateau");
        return false;
    }
    out->kind = ir_strdup(g, v->s);
    for (int i = 0; i < v->n && out->n < 12; i++) {
        Value *x = v->items[i];
        const char *k = v->keys[i];
        if (!strcmp(k, "interval")) {
            if (x->k != VK_STR || (strcmp(x->s, "step") && strcmp(x->s, "epoch"))) { fail(L, at, "interval is \"step\" or \"epoch\""); return false; }
            out->per_step = !strcmp(x->s, "step");
            continue;
        }
        if (!strcmp(k, "frequency")) {
            if (!want_int(L, x, at, "frequency", &out->frequency)) return false;
            if (out->frequency < 1) { fail(L, at, "frequency must be at least 1"); return false; }
            continue;
        }
        RtValue r = {RT_NONE, 0, 0, NULL};
        if (x->k == VK_INT || x->k == VK_BOOL) r = (RtValue){RT_INT, x->i, 0, NULL};
        else if (x->k == VK_FLOAT) r = (RtValue){RT_FLOAT, 0, x->f, NULL};
        else if (x->k == VK_STR) r = (RtValue){RT_STR, 0, 0, ir_strdup(g, x->s)};
        else if (x->k == VK_LIST || x->k == VK_TUPLE) {
            StrBuf b = {0};
            sb_putn(&b, "", 0);
            for (int j = 0; j < x->n; j++) sb_printf(&b, "%s%g", j ? "," : "", is_num(x->items[j]) ? num(x->items[j]) : 0.0);
            r = (RtValue){RT_STR, 0, 0, ir_strdup(g, b.s)};
            sb_free(&b);
        }
        out->keys[out->n] = ir_strdup(g, k);
        out->vals[out->n++] = r;
    }
    return true;
}

/* strategy = "ddp": the gradients averaged over the ranks before clipping sees them, in
 * buckets of at most DDP_BUCKET_BYTES of the flat gradient buffer: one all_reduce each, whose
 * slices are the reduced gradients (views, no copy). Buckets run from the last parameter
 * back, the order in which backward makes the gradients. A sum accumulated over batches is
 * reduced every batch: the mean is linear, so the sum stays the mean of the ranks' sums. */
enum { DDP_BUCKET_BYTES = 8 << 20 };
static bool allreduce_grads(Lower *L, int *grads, int np) {
    IrGraph *g = L->g;
    for (int end = np; end > 0;) {
        IrDtype t = g->node[grads[end - 1]].dtype;
        int start = end;
        int64_t bytes = 0;
        while (start > 0 && g->node[grads[start - 1]].dtype == t) {
            int64_t b = ir_numel(g->node[grads[start - 1]].shape) * (int64_t)ir_dtype_size(t);
            if (start < end && bytes + b > DDP_BUCKET_BYTES) break;
            bytes += b;
            start--;
        }
        int r = ir_allreduce(g, grads + start, end - start);
        for (int64_t i = start, off = 0; i < end; i++) {
            IrShape sh = g->node[grads[i]].shape;
            int64_t n = ir_numel(sh);
            grads[i] = ir_reshape(g, ir_slice(g, r, 0, off, off + n, 1), sh);
            off += n;
            if (grads[i] < 0) return false;
        }
        end = start;
    }
    return true;
}

static bool add_group(Lower *L, const char *name, Value *cfg, Value *sched, int loss, bool backward, Span at) {
    StepGraph *o = L->out;
    IrGraph *g = L->g;
    if (!cfg || cfg->k != VK_CONFIG ||
        (strcmp(cfg->s, "adam") && strcmp(cfg->s, "adamw") && strcmp(cfg->s, "sgd") && strcmp(cfg->s, "rmsprop"))) {
        fail(L, at, "%s%s must be an optimizer: adam(...), adamw(...), sgd(...) or rmsprop(...)",
             name[0] ? "optimizer " : "optimizer", name);
        return false;
    }
    const IrNode *ln = &g->node[loss];
    if (ir_numel(ln->shape) != 1 || !ir_dtype_is_float(ln->dtype)) {
        char *t = type_str(L, loss);
        fail(L, at, "the loss%s%s must be a float scalar, not %s", name[0] ? " for " : "", name, t);
        free(t);
        return false;
    }
    int params[4096], np = 0;
    size_t plen = strlen(name);
    for (int i = 0; i < o->nparams && np < 4096; i++)
        if (o->params[i].trainable && (!plen || (!strncmp(o->params[i].name, name, plen) && o->params[i].name[plen] == '.')))
            params[np++] = o->params[i].id;
    if (np == 0) {
        if (name[0]) fail(L, at, "optimizer %s has no parameters to train", name);
        else fail(L, at, "the optimizer has no parameters to train: the model declares none");
        return false;
    }
    double lr0 = cfg_num(cfg, "lr", !strcmp(cfg->s, "sgd") ? -1 : !strcmp(cfg->s, "rmsprop") ? 1e-2 : 1e-3);
    if (lr0 < 0) { fail(L, at, "sgd needs a learning rate: sgd(lr = 0.1)"); return false; }
    const char *lrname = ir_strdup(g, name[0] ? lstr(L, xasprintf("lr.%s", name)) : "lr");
    int lr = ir_input(g, IR_IN_DATA, lrname, IR_F32, IR_SCALAR);
    o->groups = xrealloc(o->groups, sizeof *o->groups * (size_t)(o->ngroups + 1));
    o->groups[o->ngroups] = (OptGroup){ir_strdup(g, name), ir_strdup(g, cfg->s), lr, loss, lr0, {0}};
    if (!scheduler(L, sched, &o->groups[o->ngroups].sched, at)) return false;
    o->ngroups++;
    if (!backward) return true;
    int *grads = xcalloc((size_t)np, sizeof *grads);
    const char *prefix = name[0] ? lstr(L, xasprintf("opt.%s", name)) : "opt";
    IrScaler scaler;
    bool ok = (L->loss_scale ? ir_scaler_grads(g, prefix, loss, params, np, grads, &scaler) : ad_grad(g, loss, params, np, grads)) == 0;
    for (int i = 0; ok && i < np; i++) ir_output(g, grads[i], IR_OUT_GRAD, params[i], g->node[params[i]].name);
    if (ok && L->loss_scale) { /* logged every step, as a metric "loss_scale" (".../G" per group) */
        const char *ln = name[0] ? lstr(L, xasprintf("loss_scale/%s", name)) : "loss_scale";
        o->logs = xrealloc(o->logs, sizeof *o->logs * (size_t)(o->nlogs + 1));
        o->logs[o->nlogs++] = (LogSpec){ln, scaler.scale, false, true, false, false, "mean"};
        ir_output(g, scaler.scale, IR_OUT_VALUE, -1, lstr(L, xasprintf("log:%s", ln)));
    }
    int *acc = NULL, *sum = NULL, apply = -1, first_out = g->nout;
    if (ok && L->accumulate > 1) { /* the gradient so far, as Lightning's loss / k summed over k batches */
        acc = xcalloc((size_t)np, sizeof *acc);
        apply = ir_input(g, IR_IN_DATA, "apply", IR_BOOL, IR_SCALAR);
        int k = ir_scalar(g, 1.0 / (double)L->accumulate, IR_F32);
        for (int i = 0; ok && i < np; i++) {
            const IrNode *p = &g->node[params[i]];
            acc[i] = ir_input(g, IR_IN_STATE, ir_strdup(g, lstr(L, xasprintf("%s.grad_acc", p->name))), p->dtype, p->shape);
            grads[i] = ir_add(g, acc[i], ir_mul(g, grads[i], k));
            ok = grads[i] >= 0;
        }
        /* the sum carried to the next batch is this one: the all-reduce, unscaling and clipping act
           on the whole sum when the optimizer steps, as in Lightning */
        sum = xmalloc((size_t)np * sizeof *sum);
        memcpy(sum, grads, (size_t)np * sizeof *sum);
    }
    if (ok && L->ddp) ok = allreduce_grads(L, grads, np);
    if (ok && L->loss_scale) ok = ir_scaler_check(g, &scaler, grads, np) == 0; /* after the all-reduce (every rank skips alike), before clipping, as Lightning */
    if (ok && L->clip_val > 0) { /* Lightning's gradient_clip_val: the group's total norm, or each value */
        int total = -1, c = ir_scalar(g, L->clip_val, IR_F32);
        for (int i = 0; !L->clip_by_value && i < np; i++) {
            int sq = ir_sum(g, ir_mul(g, grads[i], grads[i]), NULL, 0, false);
            total = total < 0 ? sq : ir_add(g, total, sq);
        }
        int coef = L->clip_by_value ? -1
                   : ir_minimum(g, ir_scalar(g, 1, IR_F32), ir_div(g, c, ir_add(g, ir_sqrt(g, total), ir_scalar(g, 1e-6, IR_F32))));
        for (int i = 0; ok && i < np; i++) {
            grads[i] = L->clip_by_value ? ir_minimum(g, ir_maximum(g, grads[i], ir_neg(g, c)), c) : ir_mul(g, grads[i], coef);
            ok = grads[i] >= 0;
        }
    }
    if (ok && !strcmp(cfg->s, "sgd")) {
        IrSgd s = ir_sgd_defaults(lr);
        s.momentum = cfg_num(cfg, "momentum", 0);
        s.dampening = cfg_num(cfg, "dampening", 0);
        s.weight_decay = cfg_num(cfg, "weight_decay", 0);
        s.nesterov = cfg_bool(cfg, "nesterov");
        s.maximize = cfg_bool(cfg, "maximize");
        ok = ir_sgd(g, prefix, &s, params, grads, np) == 0;
    } else if (ok && !strcmp(cfg->s, "rmsprop")) {
        IrRmsprop s = ir_rmsprop_defaults(lr);
        s.alpha = cfg_num(cfg, "alpha", s.alpha);
        s.eps = cfg_num(cfg, "eps", s.eps);
        s.weight_decay = cfg_num(cfg, "weight_decay", 0);
        s.momentum = cfg_num(cfg, "momentum", 0);
        s.centered = cfg_bool(cfg, "centered");
        s.maximize = cfg_bool(cfg, "maximize");
        ok = ir_rmsprop(g, &s, params, grads, np) == 0;
    } else if (ok) {
        IrAdam a = !strcmp(cfg->s, "adamw") ? ir_adamw_defaults(lr) : ir_adam_defaults(lr);
        for (int i = 0; i < cfg->n; i++)
            if (!strcmp(cfg->keys[i], "betas")) {
                Value *b = cfg->items[i];
                if ((b->k != VK_TUPLE && b->k != VK_LIST) || b->n != 2 || !is_num(b->items[0]) || !is_num(b->items[1])) {
                    fail(L, at, "betas is a pair of numbers: betas = (0.9, 0.999)");
                    free(grads);
                    return false;
                }
                a.beta1 = num(b->items[0]);
                a.beta2 = num(b->items[1]);
            }
        a.eps = cfg_num(cfg, "eps", a.eps);
        a.weight_decay = cfg_num(cfg, "weight_decay", a.weight_decay);
        a.amsgrad = cfg_bool(cfg, "amsgrad");
        a.maximize = cfg_bool(cfg, "maximize");
        ok = ir_adam(g, prefix, &a, params, grads, np) == 0;
    }
    if (ok && L->loss_scale) ok = ir_scaler_update(g, &scaler, first_out) == 0;
    if (ok && acc) { /* updates happen only when `apply`; else the sum grows */
        int last = g->nout;
        for (int o = first_out; ok && o < last; o++) {
            IrOutput *out = &g->out[o];
            if (out->kind != IR_OUT_UPDATE) continue;
            int v = ir_where(g, apply, out->value, out->target);
            ok = v >= 0;
            g->out[o].value = v;
        }
        for (int i = 0; ok && i < np; i++) {
            int zero = ir_const(g, 0, g->node[acc[i]].dtype, g->node[acc[i]].shape);
            ok = ir_output(g, ir_where(g, apply, zero, sum[i]), IR_OUT_UPDATE, acc[i], g->node[acc[i]].name) >= 0;
        }
    }
    free(acc);
    free(sum);
    free(grads);
    if (!ok) ir_check(L, -1, at);
    return ok;
}

/* training_step returns the loss (one optimizer) or a dict of losses (one per optimizer). */
static bool lower_optimizers(Lower *L, Module *root, Value *r, const Node *method, bool backward) {
    Value *many = scope_get_local(root->scope, "optimizers"), *one = scope_get_local(root->scope, "optimizer");
    Span at = method->span;
    if (!many && !one) { fail(L, root->decl->span, "model %s has no optimizer: add `optimizer = adam(lr = 1e-3)`", root->decl->name); return false; }
    if (many && one) { fail(L, root->decl->span, "model %s has both `optimizer` and `optimizers`", root->decl->name); return false; }
    int total = -1;
    if (one) {
        if (r->k != VK_TENSOR) { fail(L, at, "training_step must return the loss (a scalar tensor), not %s", describe(L, r)); return false; }
        if (!add_group(L, "", one, scope_get_local(root->scope, "scheduler"), r->id, backward, at)) return false;
        total = r->id;
    } else {
        if (many->k != VK_DICT) { fail(L, root->decl->span, "optimizers is a dict from sub-module to optimizer: {G: adam(...), D: adam(...)}"); return false; }
        if (r->k != VK_DICT) { fail(L, at, "with several optimizers, training_step returns a dict of losses with their keys: {%s: loss, ...}", many->n ? many->keys[0] : "G"); return false; }
        for (int i = 0; i < r->n; i++) {
            bool found = false;
            for (int j = 0; j < many->n; j++) found |= !strcmp(r->keys[i], many->keys[j]);
            if (!found) { fail(L, at, "training_step returns a loss for '%s', which has no optimizer", r->keys[i]); return false; }
        }
        for (int j = 0; j < many->n; j++) {
            Value *sub = scope_get_local(root->scope, many->keys[j]), *loss = NULL;
            if (!sub || sub->k != VK_MODULE) { fail(L, root->decl->span, "optimizers key '%s' is not a sub-module of %s", many->keys[j], root->decl->name); return false; }
            for (int i = 0; i < r->n; i++)
                if (!strcmp(r->keys[i], many->keys[j])) loss = r->items[i];
            if (!loss || loss->k != VK_TENSOR) { fail(L, at, "training_step returns no loss tensor for '%s'", many->keys[j]); return false; }
            Value *scheds = scope_get_local(root->scope, "schedulers"), *sc = NULL;
            for (int k = 0; scheds && scheds->k == VK_DICT && k < scheds->n; k++)
                if (!strcmp(scheds->keys[k], many->keys[j])) sc = scheds->items[k];
            if (!add_group(L, many->keys[j], many->items[j], sc, loss->id, backward, at)) return false;
            ir_output(L->g, loss->id, IR_OUT_VALUE, -1, ir_strdup(L->g, lstr(L, xasprintf("loss:%s", many->keys[j]))));
            total = total < 0 ? loss->id : ir_add(L->g, total, loss->id);
        }
    }
    L->out->loss = total;
    ir_output(L->g, total, IR_OUT_VALUE, -1, "loss");
    return true;
}

static void lower_free(Lower *L) {
    for (int i = 0; i < L->nvals; i++) {
        free(L->vals[i]->items);
        free(L->vals[i]->keys);
    }
    /* module values share Module pointers: free each once */
    Module **mods = NULL;
    int nm = 0;
    for (int i = 0; i < L->nvals; i++) {
        Module *m = L->vals[i]->mod;
        if (L->vals[i]->k != VK_MODULE || !m) continue;
        bool seen = false;
        for (int j = 0; j < nm; j++) seen |= mods[j] == m;
        if (!seen) { mods = xrealloc(mods, sizeof *mods * (size_t)(nm + 1)); mods[nm++] = m; }
    }
    for (int i = 0; i < nm; i++) free(mods[i]);
    free(mods);
    for (int i = 0; i < L->nvals; i++) free(L->vals[i]);
    for (int i = 0; i < L->nscopes; i++) {
        free(L->scopes[i]->names);
        free(L->scopes[i]->vals);
        free(L->scopes[i]);
    }
    for (int i = 0; i < L->nstrs; i++) free(L->strs[i]);
    for (int i = 0; i < L->nfiles; i++) {
        ast_free(&L->files[i]->ast);
        free(L->files[i]->text);
        free(L->files[i]);
    }
    free(L->vals); free(L->scopes); free(L->strs); free(L->files);
}

void sema_step_free(StepGraph *s) {
    if (!s) return;
    ir_free(s->g);
    free(s->params);
    free(s->logs);
    free(s->groups);
    free(s->model);
    free(s);
}

/* Overrides for one block ("model" or "data") as keyword arguments. A value is read as an
 * integer, a number, true/false/none, or else a string. */
static int overrides(Lower *L, const SemaOptions *opt, const char *block, const char **kwn, Value **kwv) {
    int n = 0;
    size_t bl = strlen(block);
    for (int i = 0; i < opt->noverrides && n < 64; i++) {
        const char *o = opt->overrides[i], *eq = strchr(o, '=');
        if (!eq) continue;
        const char *key = o;
        if (!strncmp(o, block, bl) && o[bl] == '.') key = o + bl + 1;
        else if (strchr(o, '.') && strchr(o, '.') < eq) continue; /* another block's */
        else if (strcmp(block, "model")) continue;
        const char *v = eq + 1;
        char *end;
        Value *val_;
        if (!strcmp(v, "true") || !strcmp(v, "false")) val_ = v_bool(L, v[0] == 't');
        else if (!strcmp(v, "none")) val_ = val(L, VK_NONE);
        else if (*v && (strtoll(v, &end, 10), !*end)) val_ = v_int(L, strtoll(v, NULL, 10));
        else if (*v && (strtod(v, &end), !*end)) val_ = v_float(L, strtod(v, NULL));
        else { val_ = val(L, VK_STR); val_->s = lstr(L, xstrdup(v)); }
        kwn[n] = lstr(L, xstrndup(key, (size_t)(eq - key)));
        kwv[n++] = val_;
    }
    return n;
}

StepGraph *sema_lower(const Node *program, const char *path, const char *step, const SemaOptions *opt, bool must) {
    Lower L = {.check = opt->check, .batch = opt->batch, .seed = opt->seed, .step_input = -1,
               .clip_val = opt->clip_val, .clip_by_value = opt->clip_by_value, .accumulate = opt->accumulate,
               .opt = opt, .input_index = -1, .nbinds = opt->nbinds, .ddp = opt->ddp};
    memcpy(L.binds, opt->binds, sizeof opt->binds);
    int errors = diag_error_count();
    StepGraph *o = xcalloc(1, sizeof *o);
    o->loss = o->output = -1;
    o->step = step;
    o->g = L.g = ir_new();
    L.out = o;
    L.loss_scale = ir_precision_begin(o->g, opt->precision);
    builtin_scope(&L);
    bool ok = false;
    const Node *rm = root_model(program), *dm = NULL;
    File *f = load_file(&L, path, path, program, (Span){0});
    for (int i = 0; i < program->nkids; i++)
        if (program->kids[i]->kind == N_DATA) dm = program->kids[i];
    if (!f) goto done;
    if (!rm) {
        if (must) diag_plain_error("%s has no model to %s", path, step);
        goto done;
    }
    o->model = xstrdup(rm->name);
    if (dm) { /* `data` names the data module, so a model can say data.vocab_size */
        const char *kwn[64];
        Value *kwv[64];
        int nkw = overrides(&L, opt, "data", kwn, kwv);
        Module *d = instantiate(&L, scope_get_local(f->globals, dm->name), NULL, NULL, 0, kwn, kwv, nkw, "data.");
        if (!d) goto done;
        Value *dv = val(&L, VK_MODULE);
        dv->mod = d;
        scope_set(f->globals, "data", dv);
    }
    const char *kwn[64];
    Value *kwv[64];
    int nkw = overrides(&L, opt, "model", kwn, kwv);
    Module *root = instantiate(&L, scope_get_local(f->globals, rm->name), NULL, NULL, 0, kwn, kwv, nkw, "");
    if (!root) goto done;
    Value *fn = scope_get_local(root->scope, step);
    if (!fn || fn->k != VK_FUNC) {
        if (must) diag_error(rm->span, "model %s has no %s", rm->name, step);
        goto done;
    }
    const Node *m = fn->node;
    L.training = !strcmp(step, "training_step");
    int n = m->kids[0]->nkids;
    if (n > 8) { fail(&L, m->span, "a step takes at most 8 inputs"); goto done; }
    Value *in[8];
    for (int i = 0; i < n; i++) {
        if (!(in[i] = step_input(&L, root, m, i))) goto done;
        o->data[o->ndata++] = in[i]->id;
    }
    Value *r = call_func(&L, fn, NULL, in, n, NULL, NULL, 0);
    if (!r) goto done;
    if (L.training) {
        if (!lower_optimizers(&L, root, r, m, opt->backward)) goto done;
    } else if (r->k == VK_TENSOR) {
        o->output = r->id;
        ir_output(L.g, r->id, IR_OUT_VALUE, -1, "output");
    }
    ok = diag_error_count() == errors;
done:
    ir_precision_end(o->g, opt->precision);
    for (int i = 0; i < o->nparams; i++) o->params[i].name = o->g->node[o->params[i].id].name;
    for (int i = 0; i < o->nsubs; i++) {
        char *nm = xstrndup(o->subs[i].name, strlen(o->subs[i].name) - 1);
        o->subs[i].name = ir_strdup(o->g, nm);
        o->subs[i].type = ir_strdup(o->g, o->subs[i].type);
        if (o->subs[i].out) /* "f32[B, 128]" → "[B, 128]", as Lightning shows sizes */
            o->subs[i].out = ir_strdup(o->g, strchr(o->subs[i].out, '[') ? strchr(o->subs[i].out, '[') : o->subs[i].out);
        free(nm);
    }
    for (int i = 0; i < o->nlogs; i++) {
        o->logs[i].name = ir_strdup(o->g, o->logs[i].name);
        o->logs[i].reduce_fx = ir_strdup(o->g, o->logs[i].reduce_fx);
    }
    for (int i = 0; i < L.nsyms; i++) o->syms[i] = (Sym){ir_strdup(o->g, L.syms[i].name), L.syms[i].value};
    o->nsyms = L.nsyms;
    lower_free(&L);
    if (!ok || diag_error_count() > errors) { sema_step_free(o); return NULL; }
    return o;
}

static int output_named(const IrGraph *g, const char *name) {
    for (int i = 0; i < g->nout; i++)
        if (g->out[i].name && !strcmp(g->out[i].name, name)) return g->out[i].value;
    return -1;
}

void sema_simplify(StepGraph *s) {
    IrGraph *g = s->g;
    int *map = xmalloc(sizeof *map * (size_t)(g->n ? g->n : 1));
    ir_simplify(g, map);
    /* inputs are kept and renumbered; values are found again through their outputs */
    for (int i = 0; i < s->nparams; i++) s->params[i].id = map[s->params[i].id];
    for (int i = 0; i < s->ndata; i++) s->data[i] = map[s->data[i]];
    for (int i = 0; i < s->ngroups; i++) {
        s->groups[i].lr = map[s->groups[i].lr];
        char name[256];
        snprintf(name, sizeof name, "loss:%s", s->groups[i].name);
        s->groups[i].loss = s->ngroups == 1 ? output_named(g, "loss") : output_named(g, name);
    }
    for (int i = 0; i < s->nlogs; i++) {
        char name[512];
        snprintf(name, sizeof name, "log:%s", s->logs[i].name);
        s->logs[i].id = output_named(g, name);
    }
    if (s->loss >= 0) s->loss = output_named(g, "loss");
    if (s->output >= 0) s->output = output_named(g, "output");
    free(map);
}

void sema_check_steps(const Node *program, const char *path) {
    static const char *const steps[] = {"training_step", "validation_step", "test_step", "predict_step", "forward"};
    SemaOptions opt = {.check = true, .backward = true};
    /* a model whose hyperparameters need values and that has no step is a library module
     * (like stdlib/nn.ltl's): it is checked where it is used */
    const Node *rm = root_model(program);
    if (!rm) return;
    bool has_step = false, needs_args = false;
    for (int j = 0; j < rm->kids[1]->nkids; j++) {
        const Node *m = rm->kids[1]->kids[j];
        for (int i = 0; i < 4; i++) has_step |= m->kind == N_METHOD && !strcmp(m->name, steps[i]);
    }
    for (int j = 0; rm->kids[0] && j < rm->kids[0]->nkids; j++) needs_args |= !rm->kids[0]->kids[j]->kids[1];
    if (needs_args && !has_step) return;
    for (int i = 0; i < 5; i++) {
        int before = diag_error_count();
        sema_step_free(sema_lower(program, path, steps[i], &opt, false));
        if (diag_error_count() > before) return; /* the steps share forward: report it once */
    }
}

/* ---- the trainer block ---- */

static bool to_rt(Lower *L, RtTrainerConfig *c, const Value *v, RtValue *out, Span sp) {
    switch (v->k) {
    case VK_NONE: *out = (RtValue){RT_NONE, 0, 0, NULL}; return true;
    case VK_BOOL: *out = (RtValue){RT_BOOL, v->i, 0, NULL}; return true;
    case VK_INT: *out = (RtValue){RT_INT, v->i, 0, NULL}; return true;
    case VK_FLOAT: *out = (RtValue){RT_FLOAT, 0, v->f, NULL}; return true;
    case VK_STR: *out = (RtValue){RT_STR, 0, 0, rt_trainer_str(c, v->s)}; return true;
    default: fail(L, sp, "a setting is a number, a string, true, false or none, not %s", describe(L, v)); return false;
    }
}

/* callbacks = [checkpoint(monitor = "val_acc"), lr_monitor]: names with keyword settings */
static bool components(Lower *L, RtTrainerConfig *c, const Node *list, RtComponent *out, int *n, int max,
                       Scope *sc) {
    const Node *one[1] = {list};
    const Node *const *items = list->kind == N_LIST ? (const Node *const *)list->kids : one;
    int count = list->kind == N_LIST ? list->nkids : 1;
    for (int i = 0; i < count; i++) {
        const Node *e = items[i], *callee = e->kind == N_CALL ? e->kids[0] : e;
        if (callee->kind != N_NAME) { fail(L, e->span, "expected a name such as checkpoint(...)"); return false; }
        if (*n == max) { fail(L, e->span, "at most %d of these", max); return false; }
        RtComponent *comp = &out[(*n)++];
        *comp = (RtComponent){.name = rt_trainer_str(c, callee->name)};
        for (int k = 1; e->kind == N_CALL && k < e->nkids; k++) {
            const Node *a = e->kids[k];
            if (a->kind != N_KWARG || comp->n == 16) continue; /* sema_check_config reported it */
            Value *v = eval(L, a->kids[0], sc);
            if (!v || !to_rt(L, c, v, &comp->vals[comp->n], a->span)) return false;
            comp->keys[comp->n++] = rt_trainer_str(c, a->name);
        }
    }
    return true;
}

bool sema_trainer_config(const Node *program, const char *path, const char *const *ov, int nov,
                         RtTrainerConfig *c) {
    Lower L = {.check = true, .step_input = -1};
    int errors = diag_error_count();
    L.g = ir_new();
    builtin_scope(&L);
    rt_trainer_defaults(c);
    c->nloggers = 1;
    c->loggers[0] = (RtComponent){.name = "csv"}; /* Lightning logs somewhere by default */
    File *f = load_file(&L, path, path, program, (Span){0});
    const Node *t = NULL;
    for (int i = 0; f && i < program->nkids; i++)
        if (program->kids[i]->kind == N_TRAINER) t = program->kids[i];
    for (int i = 0; t && i < t->kids[0]->nkids; i++) {
        const Node *m = t->kids[0]->kids[i];
        if (m->kind != N_BIND || m->kids[0]->nkids != 1) continue;
        const char *flag = m->kids[0]->kids[0]->name;
        const Node *e = m->kids[1];
        if (!strcmp(flag, "callbacks")) {
            c->ncallbacks = 0;
            if (e->kind == N_LIST && !components(&L, c, e, c->callbacks, &c->ncallbacks, 16, f->globals)) break;
            continue;
        }
        if (!strcmp(flag, "logger") && e->kind != N_BOOL) {
            c->nloggers = 0;
            if (!components(&L, c, e, c->loggers, &c->nloggers, 4, f->globals)) break;
            continue;
        }
        Value *v = eval(&L, e, f->globals);
        RtValue rv;
        if (!v || !to_rt(&L, c, v, &rv, e->span)) break;
        const char *err = rt_trainer_set(c, flag, &rv);
        if (err) { diag_error(e->span, "%s", err); break; }
        if (!strcmp(flag, "logger") && !rv.i) c->nloggers = 0;
    }
    for (int i = 0; i < nov && diag_error_count() == errors; i++) {
        const char *eq = strchr(ov[i], '=');
        if (!eq) { diag_plain_error("--trainer.%s: expected FLAG=VALUE", ov[i]); break; }
        char *flag = xstrndup(ov[i], (size_t)(eq - ov[i]));
        RtValue rv = rt_value_parse(c, eq + 1);
        const char *err = rt_trainer_set(c, flag, &rv);
        if (err) diag_plain_error("--trainer.%s: %s", ov[i], err);
        free(flag);
    }
    ir_free(L.g);
    lower_free(&L);
    return diag_error_count() == errors;
}

/* ---- the data module, for the runtime ---- */

typedef struct { Value *v; DataExpr *e; } Memo;

static DataExpr *data_expr(Lower *L, DataPlan *dp, Value *v, Memo *memo, int *nmemo, Span sp);

static bool data_arg(Lower *L, DataPlan *dp, Value *v, DataArg *a, Memo *memo, int *nmemo, Span sp) {
    if (is_num(v)) { a->kind = DA_NUM; a->num = num(v); return true; }
    if (v->k == VK_STR) { a->kind = DA_STR; a->str = rt_trainer_str(&dp->strings, v->s); return true; }
    if (v->k == VK_OPAQUE) { a->kind = DA_EXPR; return (a->expr = data_expr(L, dp, v, memo, nmemo, sp)) != NULL; }
    if ((v->k == VK_LIST || v->k == VK_TUPLE) && v->n <= 16 && v->n && v->items[0]->k == VK_STR) {
        a->kind = DA_STRS; /* file names: read_text([...]) */
        a->nlist = v->n;
        for (int i = 0; i < v->n; i++) {
            if (v->items[i]->k != VK_STR) { fail(L, sp, "a list of file names holds strings only"); return false; }
            a->strs[i] = rt_trainer_str(&dp->strings, v->items[i]->s);
        }
        return true;
    }
    if ((v->k == VK_LIST || v->k == VK_TUPLE) && v->n <= 16) {
        a->kind = DA_LIST;
        a->nlist = v->n;
        for (int i = 0; i < v->n; i++)
            if (!want_num(L, v->items[i], sp, "a list element", &a->list[i])) return false;
        return true;
    }
    fail(L, sp, "a data source takes numbers, strings, lists of numbers and other sources, not %s", describe(L, v));
    return false;
}

static DataExpr *data_expr(Lower *L, DataPlan *dp, Value *v, Memo *memo, int *nmemo, Span sp) {
    for (int i = 0; i < *nmemo; i++)
        if (memo[i].v == v) return memo[i].e; /* a source used twice is one source */
    if (dp->nexprs == 64 || v->n > 8 || *nmemo == 64) { fail(L, sp, "the data sources are too complex"); return NULL; }
    DataExpr *e = &dp->exprs[dp->nexprs++];
    memo[(*nmemo)++] = (Memo){v, e};
    *e = (DataExpr){.fn = rt_trainer_str(&dp->strings, v->s), .part = v->i, .n = v->n};
    for (int i = 0; i < v->n; i++) {
        e->keys[i] = v->keys[i] ? rt_trainer_str(&dp->strings, v->keys[i]) : NULL;
        if (!data_arg(L, dp, v->items[i], &e->args[i], memo, nmemo, sp)) return NULL;
    }
    return e;
}

static bool tf_push(Lower *L, TfStep *steps, int *n, TfStep t, Span sp) {
    if (t.kind == TF_SCALE && *n && steps[*n - 1].kind == TF_SCALE) { /* merge affine maps */
        TfStep *p = &steps[*n - 1];
        p->b = t.a * p->b + t.b;
        p->a *= t.a;
        return true;
    }
    if (*n == 16) { fail(L, sp, "at most 16 transform steps"); return false; }
    steps[(*n)++] = t;
    return true;
}

static double kw_num(Lower *L, const Node *call, Scope *sc, const char *key, int pos, double def, bool *ok) {
    for (int i = 1; i < call->nkids; i++) {
        const Node *a = call->kids[i];
        bool hit = a->kind == N_KWARG ? !strcmp(a->name, key) : i - 1 == pos;
        if (!hit) continue;
        Value *v = eval(L, a->kind == N_KWARG ? a->kids[0] : a, sc);
        double d = def;
        if (!v || !want_num(L, v, a->span, key, &d)) *ok = false;
        return d;
    }
    return def;
}

/* Whether expression e uses the name x. */
static bool mentions(const Node *e, const char *x) {
    if (!e) return false;
    if (e->kind == N_NAME && !strcmp(e->name, x)) return true;
    for (int i = 0; i < e->nkids; i++)
        if (mentions(e->kids[i], x)) return true;
    return false;
}

/* A transform is an expression of its parameter built from arithmetic with numbers and the
 * pipeline's primitives; it becomes the list of primitives, innermost first. */
static bool tf_compile(Lower *L, DataPlan *dp, Module *m, const Node *e, const char *x, TfStep *st, int *n) {
    Scope *sc = m->scope;
    if (e->kind == N_NAME && !strcmp(e->name, x)) return true;
    if (e->kind == N_UNARY && e->op == TK_MINUS) {
        return tf_compile(L, dp, m, e->kids[0], x, st, n) && tf_push(L, st, n, (TfStep){TF_SCALE, -1, 0, 0, 0}, e->span);
    }
    if (e->kind == N_BINARY && (e->op == TK_PLUS || e->op == TK_MINUS || e->op == TK_STAR || e->op == TK_SLASH)) {
        /* one side is a number known now, the other depends on x */
        for (int side = 0; side < 2; side++) {
            if (mentions(e->kids[side], x)) continue;
            Value *c;
            c = eval(L, e->kids[side], sc);
            double k;
            if (!c || !want_num(L, c, e->kids[side]->span, "a transform constant", &k)) return false;
            if (!tf_compile(L, dp, m, e->kids[1 - side], x, st, n)) return false;
            TfStep t = {TF_SCALE, 1, 0, 0, 0};
            switch (e->op) {
            case TK_PLUS: t.b = k; break;
            case TK_MINUS: if (side == 1) t.b = -k; else { t.a = -1; t.b = k; } break;
            case TK_STAR: t.a = k; break;
            default:
                if (side == 0) { fail(L, e->span, "a transform cannot divide by its input"); return false; }
                if (k == 0) { fail(L, e->kids[1]->span, "division by zero"); return false; }
                t.a = 1 / k;
            }
            return tf_push(L, st, n, t, e->span);
        }
    }
    if (e->kind == N_CALL && e->kids[0]->kind == N_NAME && e->nkids >= 2) {
        const char *fn = e->kids[0]->name;
        const Node *arg = e->kids[1];
        bool ok = true;
        Value *method = scope_get_local(sc, fn);
        if (method && method->k == VK_FUNC && method->node->kids[0]->nkids == 1) { /* another transform */
            const Node *body = method->node->kids[2];
            if (body->kind == N_SEQ) { fail(L, e->span, "a transform is one expression: name(x) = ..."); return false; }
            return tf_compile(L, dp, m, arg, x, st, n) && tf_compile(L, dp, m, body, method->node->kids[0]->kids[0]->name, st, n);
        }
        TfStep t = {0};
        if (!strcmp(fn, "normalize")) {
            t = (TfStep){TF_NORMALIZE, kw_num(L, e, sc, "mean", 1, 0, &ok), kw_num(L, e, sc, "std", 2, 1, &ok), 0, 0};
            if (t.b == 0) { fail(L, e->span, "normalize needs std != 0"); return false; }
        } else if (!strcmp(fn, "random_crop")) {
            t = (TfStep){TF_RANDOM_CROP, kw_num(L, e, sc, "size", 1, -1, &ok), kw_num(L, e, sc, "padding", 2, 0, &ok), 0, 0};
            if (t.a <= 0) { fail(L, e->span, "random_crop needs a size"); return false; }
        } else if (!strcmp(fn, "hflip")) {
            t = (TfStep){TF_HFLIP, kw_num(L, e, sc, "p", 1, 0.5, &ok), 0, 0, 0};
        } else if (!strcmp(fn, "random_erasing")) {
            t = (TfStep){TF_RANDOM_ERASING, kw_num(L, e, sc, "p", 1, 0.5, &ok), 0, 0, 0};
        } else {
            fail(L, e->span, "'%s' is not a transform the data pipeline knows (normalize, random_crop, hflip, "
                 "random_erasing, arithmetic with numbers)", fn);
            return false;
        }
        return ok && tf_compile(L, dp, m, arg, x, st, n) && tf_push(L, st, n, t, e->span);
    }
    fail(L, e->span, "a transform is arithmetic with numbers and normalize/random_crop/hflip/random_erasing of its input");
    return false;
}

static bool tf_method(Lower *L, DataPlan *dp, Module *m, const char *name, TfStep *st, int *n, bool *found) {
    Value *f = scope_get_local(m->scope, name);
    *found = f && f->k == VK_FUNC;
    if (!*found) return true;
    const Node *meth = f->node;
    if (meth->kids[0]->nkids != 1 || meth->kids[2]->kind == N_SEQ) {
        fail(L, meth->span, "%s takes one input and is one expression: %s(x) = ...", name, name);
        return false;
    }
    return tf_compile(L, dp, m, meth->kids[2], meth->kids[0]->kids[0]->name, st, n);
}

/* transform(w) = (w[:-1], w[1:]): a window of tokens becomes the inputs and the next-token
 * targets of a language model (done by the driver on whole batches). */
static bool next_token_pair(Lower *L, Module *m, bool *yes) {
    Value *f = scope_get_local(m->scope, "transform");
    *yes = false;
    if (!f || f->k != VK_FUNC || f->node->kids[0]->nkids != 1 || f->node->kids[2]->kind != N_TUPLE) return true;
    const Node *t = f->node->kids[2];
    const char *x = f->node->kids[0]->kids[0]->name;
    char *a = t->nkids == 2 ? ast_print_expr(t->kids[0]) : NULL, *b = t->nkids == 2 ? ast_print_expr(t->kids[1]) : NULL;
    char want_a[160], want_b[160];
    snprintf(want_a, sizeof want_a, "%s[:-1]", x);
    snprintf(want_b, sizeof want_b, "%s[1:]", x);
    *yes = a && b && !strcmp(a, want_a) && !strcmp(b, want_b);
    free(a);
    free(b);
    if (!*yes) fail(L, t->span, "a transform that returns a pair is (%s[:-1], %s[1:]): inputs and next-token targets", x, x);
    return *yes;
}

bool sema_data_plan(const Node *program, const char *path, const SemaOptions *opt, DataPlan *dp) {
    Lower L = {.check = true, .step_input = -1};
    int errors = diag_error_count();
    memset(dp, 0, sizeof *dp);
    rt_trainer_defaults(&dp->strings);
    dp->batch = 1;
    dp->shuffle = false;
    L.g = ir_new();
    builtin_scope(&L);
    const Node *dm = NULL;
    for (int i = 0; i < program->nkids; i++)
        if (program->kids[i]->kind == N_DATA) dm = program->kids[i];
    File *f = load_file(&L, path, path, program, (Span){0});
    Module *m = NULL;
    if (f && dm) {
        const char *kwn[64];
        Value *kwv[64];
        int nkw = overrides(&L, opt, "data", kwn, kwv);
        m = instantiate(&L, scope_get_local(f->globals, dm->name), NULL, NULL, 0, kwn, kwv, nkw, "data.");
    }
    if (m) {
        dp->name = rt_trainer_str(&dp->strings, dm->name);
        static const char *const stages[4] = {"train", "val", "test", "predict"};
        Memo memo[64];
        int nmemo = 0;
        for (int s = 0; s < 4; s++) {
            Value *v = scope_get_local(m->scope, stages[s]);
            if (!v) continue;
            if (v->k != VK_OPAQUE) { fail(&L, dm->span, "'%s' of %s must be a data source such as idx(...)", stages[s], dm->name); break; }
            if (!(dp->source[s] = data_expr(&L, dp, v, memo, &nmemo, dm->span))) break;
        }
        Value *ld = scope_get_local(m->scope, "loader");
        if (ld && ld->k == VK_CONFIG)
            for (int i = 0; i < ld->n; i++) {
                double d = 0;
                Value *v = ld->items[i];
                const char *k = ld->keys[i];
                bool flag = !strcmp(k, "shuffle") || !strcmp(k, "drop_last");
                if (flag != (v->k == VK_BOOL)) {
                    fail(&L, dm->span, "the loader's %s must be %s, not %s", k, flag ? "true or false" : "a number",
                         describe(&L, v));
                    break;
                }
                if (flag) { *(!strcmp(k, "shuffle") ? &dp->shuffle : &dp->drop_last) = v->i; continue; }
                if (!want_num(&L, v, dm->span, k, &d)) break;
                if (!strcmp(k, "batch")) dp->batch = (int64_t)d;
                else if (!strcmp(k, "workers")) dp->workers = (int)d;
                else if (!strcmp(k, "prefetch")) dp->prefetch = (int)d;
            }
        if (dp->batch < 1) fail(&L, dm->span, "the loader's batch must be at least 1");
        for (int i = 0; i < m->scope->n && dp->nsizes < 4; i++) /* vocab_size = chars(text).size */
            if (m->scope->vals[i]->k == VK_OPAQUE && !strcmp(m->scope->vals[i]->s, "size"))
                dp->sizes[dp->nsizes++] = rt_trainer_str(&dp->strings, m->scope->names[i]);
        bool found, pair_ok = next_token_pair(&L, m, &dp->next_token);
        if (!pair_ok || dp->next_token) {
            /* windows become (inputs, targets) in the driver; no per-sample transform */
        } else if (tf_method(&L, dp, m, "transform", dp->eval_tf, &dp->neval_tf, &found) &&
            tf_method(&L, dp, m, "train_transform", dp->train_tf, &dp->ntrain_tf, &found) && !found) {
            memcpy(dp->train_tf, dp->eval_tf, sizeof dp->eval_tf); /* one transform for every stage */
            dp->ntrain_tf = dp->neval_tf;
        }
    }
    ir_free(L.g);
    lower_free(&L);
    return diag_error_count() == errors;
}

void sema_data_free(DataPlan *dp) { rt_trainer_free(&dp->strings); }
