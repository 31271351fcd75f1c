/* ast.c — AST nodes: allocation (owned by an Ast, freed at once), structural equality. */
#include "front.h"
#include <stdlib.h>
#include <string.h>

const char *const node_kind_names[] = {
#define X(k) #k,
    NODES(X)
#undef X
};

Node *ast_node(Ast *a, NodeKind k, Span sp) {
    Node *n = xcalloc(1, sizeof *n);
    n->kind = k;
    n->span = sp;
    n->depth = 1;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->nodes = xrealloc(a->nodes, sizeof *a->nodes * (size_t)a->cap);
    }
    a->nodes[a->n++] = n;
    return n;
}

void ast_add(Ast *a, Node *parent, Node *kid) {
    if (parent->nkids == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 4;
        parent->kids = xrealloc(parent->kids, sizeof *parent->kids * (size_t)parent->cap);
    }
    parent->kids[parent->nkids++] = kid;
    if (kid && kid->depth >= parent->depth) {
        parent->depth = kid->depth + 1;
        if (parent->depth > AST_MAX_DEPTH && !a->too_deep) {
            a->too_deep = true;
            a->deep_at = kid->span;
        }
    }
}

char *ast_str(Ast *a, char *s) {
    if (!s) return NULL;
    if (a->nstrs == a->capstrs) {
        a->capstrs = a->capstrs ? a->capstrs * 2 : 256;
        a->strs = xrealloc(a->strs, sizeof *a->strs * (size_t)a->capstrs);
    }
    a->strs[a->nstrs++] = s;
    return s;
}

void ast_free(Ast *a) {
    for (int i = 0; i < a->n; i++) {
        free(a->nodes[i]->kids);
        free(a->nodes[i]);
    }
    for (int i = 0; i < a->nstrs; i++) free(a->strs[i]);
    free(a->nodes);
    free(a->strs);
    *a = (Ast){0};
}

static bool str_eq(const char *x, const char *y) {
    return x == y || (x && y && strcmp(x, y) == 0);
}

/* A string literal's value may hold NUL bytes: its length is in ival. */
static bool is_string(const Node *n) {
    return n->kind == N_STRING || (n->kind == N_ENTRY && n->op == TK_STRING);
}

bool ast_equal(const Node *x, const Node *y) {
    if (!x || !y) return x == y;
    if (x->kind != y->kind || x->op != y->op || x->nkids != y->nkids || x->ival != y->ival)
        return false;
    /* numbers compare by value: the spelling may differ (1e3, 1_000.0) */
    if (x->kind == N_FLOAT ? x->fval != y->fval
        : is_string(x)     ? memcmp(x->name, y->name, (size_t)x->ival) != 0
        : x->kind != N_INT && !str_eq(x->name, y->name))
        return false;
    for (int i = 0; i < x->nkids; i++)
        if (!ast_equal(x->kids[i], y->kids[i])) return false;
    return true;
}
