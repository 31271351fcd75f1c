/* sema.c — checks on the tree before types: trainer settings, callbacks, loggers, duplicate
 * declarations. A misspelt flag is an error with a hint, never silently ignored. */
#include "sema.h"
#include <stdlib.h>
#include <string.h>

typedef struct { const char *name; int kinds; const char *allowed; } Flag;
static const Flag trainer_flags[] = {
#define X(n, k, a) {#n, k, a},
    TRAINER_FLAGS(X)
#undef X
};
typedef struct { const char *name; const char *keys; } Component;
static const Component callbacks[] = {
#define X(n, k) {#n, k},
    CALLBACKS(X)
#undef X
};
static const Component loggers[] = {
#define X(n, k) {#n, k},
    LOGGERS(X)
#undef X
};
#define COUNT(a) (int)(sizeof a / sizeof *a)

/* The closest of the '|'-separated candidates, if close enough to be a likely typo. */
static char *closest(const char *word, const char *cands) {
    char *best = NULL;
    int best_d = (int)strlen(word) / 3 + 1;
    if (best_d > 3) best_d = 3;
    for (const char *p = cands; *p;) {
        size_t n = strcspn(p, "|");
        char *c = xstrndup(p, n);
        /* a prefix ("bf16" of "bf16-mixed") is as good as a one-letter typo */
        int d = strncmp(c, word, strlen(word)) == 0 ? 1 : edit_distance(word, c);
        if (d <= best_d && (!best || d < best_d)) { free(best); best = c; best_d = d; }
        else free(c);
        p += n + (p[n] == '|');
    }
    return best;
}

static bool in_list(const char *word, const char *cands) {
    size_t n = strlen(word);
    for (const char *p = cands; *p;) {
        size_t m = strcspn(p, "|");
        if (m == n && strncmp(p, word, n) == 0) return true;
        p += m + (p[m] == '|');
    }
    return false;
}

/* msg, then "; did you mean 'x'?" or, when nothing is close, the list of choices. */
static void unknown(Span sp, const char *msg, const char *name, const char *cands) {
    char *hint = closest(name, cands);
    if (hint) diag_error(sp, "%s; did you mean '%s'?", msg, hint);
    else if (strlen(cands) < 200) {
        char *list = xstrdup(cands);
        for (char *c = list; *c; c++) if (*c == '|') *c = ' ';
        diag_error(sp, "%s (known: %s)", msg, list);
        free(list);
    } else diag_error(sp, "%s", msg);
    free(hint);
}

static char *join_names(const void *table, int n, size_t stride) {
    StrBuf b = {0};
    for (int i = 0; i < n; i++)
        sb_printf(&b, "%s%s", i ? "|" : "", *(const char *const *)((const char *)table + (size_t)i * stride));
    return b.s;
}

static int value_kind(const Node *v) {
    if (v->kind == N_UNARY && v->op == TK_MINUS) v = v->kids[0];
    switch (v->kind) {
    case N_INT: return RTV_INT;
    case N_FLOAT: return RTV_FLOAT;
    case N_STRING: return RTV_STR;
    case N_BOOL: return RTV_BOOL;
    case N_LIST: return RTV_LIST;
    case N_DICT: return RTV_DICT;
    case N_NAME: return RTV_NAME;
    case N_CALL: return RTV_CALL;
    default: return 0; /* an expression: its type is sema's business, later */
    }
}

static const char *kinds_text(int kinds) {
    static char buf[128];
    buf[0] = 0;
    const char *names[] = {"an integer", "a number", "a string", "true or false", "a list",
                           "a dict", "a name", "a call"};
    if ((kinds & RTV_NUM) == RTV_NUM) kinds &= ~RTV_INT;
    for (int i = 0, first = 1; i < 8; i++)
        if (kinds & (1 << i)) {
            strcat(buf, first ? "" : " or ");
            strcat(buf, names[i]);
            first = 0;
        }
    return buf;
}

static void check_value(const char *flag, const Node *v, int kinds, const char *allowed) {
    int k = value_kind(v);
    if (k == RTV_NAME && !(kinds & RTV_NAME)) return; /* a constant: checked once names resolve */
    if (k == 0) return;
    if (k == RTV_INT && (kinds & RTV_FLOAT)) k = RTV_FLOAT;
    if (!(k & kinds)) {
        diag_error(v->span, "'%s' must be %s", flag, kinds_text(kinds));
        return;
    }
    if (k == RTV_STR && allowed && !in_list(v->name, allowed)) {
        char *msg = xasprintf("'%s' cannot be \"%s\"", flag, v->name);
        unknown(v->span, msg, v->name, allowed);
        free(msg);
    }
    if ((k == RTV_INT || k == RTV_FLOAT) && v->kind == N_UNARY && strcmp(flag, "seed") != 0)
        diag_error(v->span, "'%s' cannot be negative", flag);
}

/* A callback or logger: `name` or `name(key = value, …)`. */
static void check_component(const Node *e, const char *what, const Component *table, int n) {
    const Node *callee = e->kind == N_CALL ? e->kids[0] : e;
    if (callee->kind != N_NAME) {
        diag_error(e->span, "expected a %s such as %s(...)", what, table[0].name);
        return;
    }
    const Component *c = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(table[i].name, callee->name) == 0) c = &table[i];
    if (!c) {
        char *names = join_names(table, n, sizeof *table);
        char *msg = xasprintf("unknown %s '%s'", what, callee->name);
        unknown(callee->span, msg, callee->name, names);
        free(msg);
        free(names);
        return;
    }
    if (e->kind != N_CALL) return;
    for (int i = 1; i < e->nkids; i++) {
        const Node *a = e->kids[i];
        if (a->kind != N_KWARG) diag_error(a->span, "%s takes keyword arguments only", c->name);
        else if (!in_list(a->name, c->keys)) {
            char *msg = xasprintf("%s has no argument '%s'", c->name, a->name);
            unknown(a->span, msg, a->name, c->keys);
            free(msg);
        }
    }
}

/* Reports a second declaration of the same name in one scope, with a note at the first. */
typedef struct { const char *name; Span at; } Seen;
static void declare(Seen **seen, int *n, const char *name, Span at, const char *what) {
    for (int i = 0; i < *n; i++)
        if (strcmp((*seen)[i].name, name) == 0) {
            diag_error(at, "%s '%s' is defined twice", what, name);
            diag_note((*seen)[i].at, "the first definition of '%s' is here", name);
            return;
        }
    *seen = xrealloc(*seen, sizeof **seen * (size_t)(*n + 1));
    (*seen)[(*n)++] = (Seen){name, at};
}

static void check_trainer(const Node *t) {
    Seen *seen = NULL;
    int nseen = 0;
    char *flag_names = join_names(trainer_flags, COUNT(trainer_flags), sizeof *trainer_flags);
    const Node *members = t->kids[0];
    for (int i = 0; i < members->nkids; i++) {
        const Node *m = members->kids[i];
        if (m->kind != N_BIND || m->kids[0]->nkids != 1) {
            diag_error(m->span, "a trainer block holds settings of the form `flag = value`");
            continue;
        }
        const Node *key = m->kids[0]->kids[0], *v = m->kids[1];
        const Flag *f = NULL;
        for (int j = 0; j < COUNT(trainer_flags); j++)
            if (strcmp(trainer_flags[j].name, key->name) == 0) f = &trainer_flags[j];
        if (!f) {
            char *msg = xasprintf("unknown trainer flag '%s'", key->name);
            unknown(key->span, msg, key->name, flag_names);
            free(msg);
            continue;
        }
        declare(&seen, &nseen, key->name, key->span, "trainer flag");
        check_value(f->name, v, f->kinds, f->allowed);
        if (!strcmp(f->name, "callbacks") && v->kind == N_LIST)
            for (int j = 0; j < v->nkids; j++)
                check_component(v->kids[j], "callback", callbacks, COUNT(callbacks));
        if (!strcmp(f->name, "logger")) {
            if (v->kind == N_LIST)
                for (int j = 0; j < v->nkids; j++) check_component(v->kids[j], "logger", loggers, COUNT(loggers));
            else if (v->kind == N_NAME || v->kind == N_CALL)
                check_component(v, "logger", loggers, COUNT(loggers));
        }
    }
    free(flag_names);
    free(seen);
}

static void check_block_members(const Node *members) {
    Seen *seen = NULL;
    int n = 0;
    for (int i = 0; i < members->nkids; i++) {
        const Node *m = members->kids[i];
        if (m->kind == N_BIND)
            for (int j = 0; j < m->kids[0]->nkids; j++)
                declare(&seen, &n, m->kids[0]->kids[j]->name, m->kids[0]->kids[j]->span, "member");
        else if (m->kind == N_DECL || m->kind == N_METHOD)
            declare(&seen, &n, m->name, m->span, m->kind == N_METHOD ? "method" : "member");
    }
    free(seen);
}

void sema_check_config(const Node *program) {
    Seen *seen = NULL;
    int n = 0;
    const Node *trainer = NULL;
    for (int i = 0; i < program->nkids; i++) {
        const Node *it = program->kids[i];
        switch (it->kind) {
        case N_MODEL: case N_DATA:
            declare(&seen, &n, it->name, it->span, it->kind == N_MODEL ? "model" : "data module");
            check_block_members(it->kids[1]);
            break;
        case N_FN: declare(&seen, &n, it->name, it->span, "function"); break;
        case N_TRAINER:
            if (trainer) {
                diag_error(it->span, "a file has one trainer block");
                diag_note(trainer->span, "the first trainer block is here");
            }
            trainer = it;
            check_trainer(it);
            break;
        default: break;
        }
    }
    free(seen);
}
