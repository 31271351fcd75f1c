// logger.c — the trainer's outputs, as PyTorch Lightning 2.x writes them:
//
//   ROOT/NAME/version_N/          run folder (N: 1 + the largest existing version)
//       hparams.yaml              hyperparameters, nested maps, written atomically
//       metrics.csv               CSVLogger: sorted header, one row per logging call
//       events.out.tfevents.*     TensorBoardLogger (tb.c)
//       curves.svg                one panel per metric (plot.c), written at the end
//
// Every logged row is also kept in memory: the CSV header can then grow (a key that
// appears later rewrites the file with the wider header, as Lightning does, but through
// a temporary file and a rename), and the curves are drawn from it at the end.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt.h"

// ---------------------------------------------------------------------------
// Errors: one message per thread.

static _Thread_local char errbuf[1024];

const char *rt_log_error(void) { return errbuf; }

int rt_log_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return -1;
}

// A growing string.
typedef struct { char *p; size_t len, cap; } Buf;

static void buf_grow(Buf *b, size_t more) {
    if (b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) abort();   // out of memory: nothing sensible to do in a logger
    b->p = p;
    b->cap = cap;
}
static void buf_add(Buf *b, const char *s, size_t n) {
    buf_grow(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void buf_puts(Buf *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_printf(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
static char *buf_take(Buf *b) {
    if (!b->p) buf_grow(b, 0), b->p[0] = 0;
    return b->p;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}
static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) abort();
    return p;
}

// ---------------------------------------------------------------------------
// Numbers as Python's repr() writes them (what csv.DictWriter puts in metrics.csv).

// The shortest decimal digits of |v| (finite, non-zero) that read back as v: as a float32
// when v is exactly one, else as a double. digits gets "d1d2…" without trailing zeros;
// returns the decimal exponent of d1.
static int shortest_digits(double v, char *digits) {
    bool f32 = (double)(float)v == v;
    char tmp[48];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (f32 ? strtof(tmp, NULL) == (float)v : strtod(tmp, NULL) == v) break;
    }
    // tmp: d[.ddd]e±XX
    int nd = 0;
    const char *s = tmp;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    return atoi(s + 1);
}

int rt_log_fmt_num(char *buf, size_t size, double v) {
    if (isnan(v)) return snprintf(buf, size, "nan");
    if (isinf(v)) return snprintf(buf, size, v < 0 ? "-inf" : "inf");
    if (v == 0) return snprintf(buf, size, signbit(v) ? "-0.0" : "0.0");
    char d[32], out[64];
    int e = shortest_digits(fabs(v), d), nd = (int)strlen(d), k = 0;
    if (v < 0) out[k++] = '-';
    if (e >= -4 && e < 16) {              // fixed notation, always with a fraction
        if (e >= 0) {
            for (int i = 0; i <= e; i++) out[k++] = i < nd ? d[i] : '0';
            out[k++] = '.';
            if (nd > e + 1) for (int i = e + 1; i < nd; i++) out[k++] = d[i];
            else out[k++] = '0';
        } else {
            out[k++] = '0';
            out[k++] = '.';
            for (int i = 0; i < -e - 1; i++) out[k++] = '0';
            for (int i = 0; i < nd; i++) out[k++] = d[i];
        }
        out[k] = 0;
    } else {                              // 1e-05, 1.5e+16
        out[k++] = d[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = d[i];
        }
        snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", e < 0 ? '-' : '+', abs(e));
    }
    return snprintf(buf, size, "%s", out);
}

// ---------------------------------------------------------------------------
// Files.

int rt_log_write_atomic(const char *path, const void *data, size_t len) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return rt_log_set_error("path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return rt_log_set_error("cannot create %s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int err = errno;
            close(fd);
            unlink(tmp);
            return rt_log_set_error("cannot write %s: %s", tmp, strerror(err));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int err = errno;
        unlink(tmp);
        return rt_log_set_error("cannot write %s: %s", tmp, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return rt_log_set_error("cannot rename %s to %s: %s", tmp, path, strerror(err));
    }
    return 0;
}

// mkdir -p; 0 or -1.
static int mkdirs(const char *path) {
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return rt_log_set_error("path too long: %s", path);
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) return rt_log_set_error("cannot create %s: %s", p, strerror(errno));
            struct stat st;
            if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) return rt_log_set_error("%s exists and is not a folder", p);
            *s = c;
            if (!c) break;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Run folders.

static int versions_root(const char *root, const char *name, char *out, size_t outsz) {
    if (!root || !*root) root = ".";
    int n = name && *name ? snprintf(out, outsz, "%s/%s", root, name) : snprintf(out, outsz, "%s", root);
    if (n < 0 || (size_t)n >= outsz) return rt_log_set_error("path too long: %s/%s", root, name ? name : "");
    return 0;
}

// Lightning's _get_next_version: folders named version_<digits>[_…]; 1 + the largest.
static int next_version_in(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "version_", 8) != 0) continue;
        const char *s = e->d_name + 8;
        size_t nd = strcspn(s, "_");
        if (nd == 0 || nd > 9 || strspn(s, "0123456789") < nd) continue;
        char full[PATH_MAX];
        struct stat st;
        if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= (int)sizeof full) continue;
        if (stat(full, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        int v = atoi(s);
        if (v > best) best = v;
    }
    closedir(d);
    return best + 1;
}

int rt_next_version(const char *root, const char *name) {
    char dir[PATH_MAX];
    if (versions_root(root, name, dir, sizeof dir) != 0) return -1;
    return next_version_in(dir);
}

int rt_run_dir(const char *root, const char *name, int version, char *out, size_t outsz) {
    char dir[PATH_MAX];
    if (versions_root(root, name, dir, sizeof dir) != 0 || mkdirs(dir) != 0) return -1;
    bool reuse = version >= 0;
    if (!reuse) version = next_version_in(dir);
    for (int tries = 0; tries < 1000; tries++, version++) {
        int n = snprintf(out, outsz, "%s/version_%d", dir, version);
        if (n < 0 || (size_t)n >= outsz) return rt_log_set_error("path too long: %s/version_%d", dir, version);
        if (mkdir(out, 0755) == 0) return version;
        if (errno != EEXIST) return rt_log_set_error("cannot create %s: %s", out, strerror(errno));
        if (reuse) {
            struct stat st;
            if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode)) return rt_log_set_error("%s exists and is not a folder", out);
            return version;
        }
        // Another run took this number between our scan and our mkdir: take the next.
    }
    return rt_log_set_error("cannot find a free version folder in %s", dir);
}

// ---------------------------------------------------------------------------
// Hyperparameters: a tree of maps; leaves hold one scalar.

typedef enum { HP_MAP, HP_NULL, HP_INT, HP_FLOAT, HP_BOOL, HP_STR } HpKind;
typedef struct HpNode {
    char *key;
    HpKind kind;
    int64_t i;
    double f;
    char *s;
    struct HpNode **kids;
    int nkids;
} HpNode;
struct RtHparams { HpNode root; };

static void hp_clear(HpNode *n) {
    for (int i = 0; i < n->nkids; i++) {
        hp_clear(n->kids[i]);
        free(n->kids[i]->key);
        free(n->kids[i]);
    }
    free(n->kids);
    free(n->s);
    n->kids = NULL;
    n->nkids = 0;
    n->s = NULL;
}

RtHparams *rt_hparams_new(void) {
    RtHparams *h = calloc(1, sizeof *h);
    if (!h) abort();
    return h;
}

void rt_hparams_free(RtHparams *h) {
    if (!h) return;
    hp_clear(&h->root);
    free(h);
}

// The leaf for a dotted key, created on the way (a leaf in the way becomes a map).
static HpNode *hp_leaf(RtHparams *h, const char *key) {
    HpNode *n = &h->root;
    const char *s = key;
    for (;;) {
        size_t len = strcspn(s, ".");
        if (n->kind != HP_MAP) { hp_clear(n); n->kind = HP_MAP; }
        HpNode *kid = NULL;
        for (int i = 0; i < n->nkids && !kid; i++)
            if (strlen(n->kids[i]->key) == len && memcmp(n->kids[i]->key, s, len) == 0) kid = n->kids[i];
        if (!kid) {
            kid = calloc(1, sizeof *kid);
            if (!kid) abort();
            kid->key = strndup(s, len);
            if (!kid->key) abort();
            kid->kind = HP_NULL;
            n->kids = xrealloc(n->kids, sizeof *n->kids * (size_t)(n->nkids + 1));
            n->kids[n->nkids++] = kid;
        }
        n = kid;
        if (!s[len]) break;
        s += len + 1;
    }
    hp_clear(n);
    return n;
}

void rt_hparams_int(RtHparams *h, const char *key, int64_t v) { HpNode *n = hp_leaf(h, key); n->kind = HP_INT; n->i = v; }
void rt_hparams_float(RtHparams *h, const char *key, double v) { HpNode *n = hp_leaf(h, key); n->kind = HP_FLOAT; n->f = v; }
void rt_hparams_bool(RtHparams *h, const char *key, bool v) { HpNode *n = hp_leaf(h, key); n->kind = HP_BOOL; n->i = v; }
void rt_hparams_str(RtHparams *h, const char *key, const char *v) {
    HpNode *n = hp_leaf(h, key);
    n->kind = v ? HP_STR : HP_NULL;
    if (v) n->s = xstrdup(v);
}

void rt_hparams_parse(RtHparams *h, const char *key, const char *text) {
    char *end;
    if (!text) { rt_hparams_str(h, key, NULL); return; }
    if (!strcmp(text, "true") || !strcmp(text, "True")) { rt_hparams_bool(h, key, true); return; }
    if (!strcmp(text, "false") || !strcmp(text, "False")) { rt_hparams_bool(h, key, false); return; }
    if (!strcmp(text, "none") || !strcmp(text, "None") || !strcmp(text, "null")) { rt_hparams_str(h, key, NULL); return; }
    if (*text && !isspace((unsigned char)*text)) {
        errno = 0;
        long long i = strtoll(text, &end, 10);
        if (!*end && errno == 0) { rt_hparams_int(h, key, i); return; }
        double f = strtod(text, &end);
        if (!*end && strspn(text, "+-0123456789.eE") == strlen(text)) { rt_hparams_float(h, key, f); return; }
    }
    rt_hparams_str(h, key, text);
}

// A YAML float as PyYAML writes one: repr, ".0" before an exponent without a point,
// .inf/.nan.
static void yaml_float(Buf *b, double v) {
    if (isnan(v)) { buf_puts(b, ".nan"); return; }
    if (isinf(v)) { buf_puts(b, v < 0 ? "-.inf" : ".inf"); return; }
    char t[64];
    rt_log_fmt_num(t, sizeof t, v);
    char *e = strchr(t, 'e');
    if (e && !strchr(t, '.')) {
        buf_add(b, t, (size_t)(e - t));
        buf_puts(b, ".0");
        buf_puts(b, e);
    } else {
        buf_puts(b, t);
    }
}

// Does a plain (unquoted) YAML scalar read back as this same string?
static bool yaml_plain_ok(const char *s) {
    if (!*s) return false;
    static const char *const special[] = {
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
        "True", "False", "Yes", "No", "On", "Off", "Y", "N", "Null",
        "TRUE", "FALSE", "YES", "NO", "ON", "OFF", "NULL", ".inf", ".nan", ".Inf", ".NaN",
        ".INF", ".NAN", "-.inf", "+.inf", "-.Inf", "+.Inf", "<<", "=",
    };
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        if (strcmp(s, special[i]) == 0) return false;
    // Anything that starts like a number (3, -1.5, 1e3, 0x1f, 1_000, 12:30) is quoted.
    const char *t = s + (*s == '-' || *s == '+');
    if ((*t >= '0' && *t <= '9') || (*t == '.' && t[1] >= '0' && t[1] <= '9')) return false;
    if (strchr("-?:,[]{}#&*!|>'\"%@` ", s[0])) return false;
    size_t n = strlen(s);
    if (s[n - 1] == ' ' || s[n - 1] == ':') return false;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) return false;
        if ((c == ':' && p[1] == ' ') || (c == ' ' && p[1] == '#')) return false;
    }
    return true;
}

static void yaml_str(Buf *b, const char *s) {
    if (yaml_plain_ok(s)) { buf_puts(b, s); return; }
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\t': buf_puts(b, "\\t"); break;
        case '\r': buf_puts(b, "\\r"); break;
        default:
            if (*p < 0x20 || *p == 0x7f) buf_printf(b, "\\x%02x", *p);
            else buf_add(b, (const char *)p, 1);
        }
    }
    buf_puts(b, "\"");
}

static void yaml_scalar(Buf *b, const HpNode *n) {
    switch (n->kind) {
    case HP_NULL: buf_puts(b, "null"); break;
    case HP_INT: buf_printf(b, "%lld", (long long)n->i); break;
    case HP_FLOAT: yaml_float(b, n->f); break;
    case HP_BOOL: buf_puts(b, n->i ? "true" : "false"); break;
    case HP_STR: yaml_str(b, n->s); break;
    case HP_MAP: buf_puts(b, "{}"); break;
    }
}

static void yaml_map(Buf *b, const HpNode *map, int depth) {
    for (int i = 0; i < map->nkids; i++) {
        const HpNode *k = map->kids[i];
        for (int d = 0; d < depth; d++) buf_puts(b, "  ");
        yaml_str(b, k->key);
        if (k->kind == HP_MAP && k->nkids > 0) {
            buf_puts(b, ":\n");
            yaml_map(b, k, depth + 1);
        } else {
            buf_puts(b, ": ");
            yaml_scalar(b, k);
            buf_puts(b, "\n");
        }
    }
}

char *rt_hparams_yaml(const RtHparams *h) {
    Buf b = {0};
    if (h->root.nkids == 0) buf_puts(&b, "{}\n");
    else yaml_map(&b, &h->root, 0);
    return buf_take(&b);
}

static void md_rows(Buf *b, const HpNode *map, const char *prefix) {
    for (int i = 0; i < map->nkids; i++) {
        const HpNode *k = map->kids[i];
        Buf key = {0};
        if (*prefix) buf_printf(&key, "%s.", prefix);
        buf_puts(&key, k->key);
        if (k->kind == HP_MAP && k->nkids > 0) {
            md_rows(b, k, key.p);
        } else {
            Buf v = {0};
            yaml_scalar(&v, k);
            buf_puts(b, "| ");
            for (const char *p = key.p; *p; p++) buf_puts(b, *p == '|' ? "\\|" : (char[]){*p, 0});
            buf_puts(b, " | ");
            for (const char *p = v.p; *p; p++) buf_puts(b, *p == '|' ? "\\|" : (char[]){*p, 0});
            buf_puts(b, " |\n");
            free(v.p);
        }
        free(key.p);
    }
}

char *rt_hparams_markdown(const RtHparams *h) {
    Buf b = {0};
    buf_puts(&b, "| hyperparameter | value |\n|---|---|\n");
    md_rows(&b, &h->root, "");
    return buf_take(&b);
}

int rt_hparams_save(const RtHparams *h, const char *path) {
    char *y = rt_hparams_yaml(h);
    int r = rt_log_write_atomic(path, y, strlen(y));
    free(y);
    return r;
}

// ---------------------------------------------------------------------------
// The metric table: every row logged, in memory.

typedef struct { int key; double v; } Cell;
typedef struct { int64_t step, epoch; int ncells; Cell *cells; } Row;
typedef struct {
    char **keys;          // metric names in the order first seen (epoch and step excluded)
    int nkeys;
    Row *rows;
    int64_t nrows, caprows;
} Table;

static int table_key(Table *t, const char *name) {
    for (int i = 0; i < t->nkeys; i++)
        if (strcmp(t->keys[i], name) == 0) return i;
    t->keys = xrealloc(t->keys, sizeof *t->keys * (size_t)(t->nkeys + 1));
    t->keys[t->nkeys] = xstrdup(name);
    return t->nkeys++;
}

static void table_add(Table *t, int64_t step, int64_t epoch, int n, const char *const *names, const double *v) {
    if (t->nrows == t->caprows) {
        t->caprows = t->caprows ? 2 * t->caprows : 64;
        t->rows = xrealloc(t->rows, sizeof *t->rows * (size_t)t->caprows);
    }
    Row *r = &t->rows[t->nrows++];
    r->step = step;
    r->epoch = epoch;
    r->ncells = 0;
    r->cells = xrealloc(NULL, sizeof *r->cells * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        // epoch and step are the row's own columns (Lightning overwrites them too).
        if (!names[i] || strcmp(names[i], "epoch") == 0 || strcmp(names[i], "step") == 0) continue;
        int k = table_key(t, names[i]);
        int c = 0;
        while (c < r->ncells && r->cells[c].key != k) c++;   // a repeated name: the last wins
        r->cells[c].key = k;
        r->cells[c].v = v[i];
        if (c == r->ncells) r->ncells++;
    }
}

static void table_free(Table *t) {
    for (int i = 0; i < t->nkeys; i++) free(t->keys[i]);
    for (int64_t i = 0; i < t->nrows; i++) free(t->rows[i].cells);
    free(t->keys);
    free(t->rows);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------------------
// CSV logger.

struct RtCsvLogger {
    char path[PATH_MAX];
    int flush_every;
    Table t;
    int64_t written;      // rows already in the file
    int64_t flushed;      // (step + 1) / flush_every at the last flush
    int header_keys;      // t.nkeys when the file's header was written; -1: no file yet
    int *order;           // columns: table keys, with -1 = epoch and -2 = step, sorted
};

static const char *col_name(const RtCsvLogger *c, int k) {
    return k == -1 ? "epoch" : k == -2 ? "step" : c->t.keys[k];
}

static int cmp_ctx_keys(const void *a, const void *b, void *ctx) {
    const RtCsvLogger *c = ctx;
    return strcmp(col_name(c, *(const int *)a), col_name(c, *(const int *)b));
}

// Python's csv.QUOTE_MINIMAL.
static void csv_field(Buf *b, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { buf_puts(b, s); return; }
    buf_puts(b, "\"");
    for (; *s; s++) buf_puts(b, *s == '"' ? "\"\"" : (char[]){*s, 0});
    buf_puts(b, "\"");
}

static void csv_header(const RtCsvLogger *c, Buf *b) {
    for (int i = 0; i < c->t.nkeys + 2; i++) {
        if (i) buf_puts(b, ",");
        csv_field(b, col_name(c, c->order[i]));
    }
    buf_puts(b, "\n");
}

static void csv_row(const RtCsvLogger *c, const Row *r, Buf *b) {
    char num[64];
    for (int i = 0; i < c->t.nkeys + 2; i++) {
        if (i) buf_puts(b, ",");
        int k = c->order[i];
        if (k == -1) { buf_printf(b, "%lld", (long long)r->epoch); continue; }
        if (k == -2) { buf_printf(b, "%lld", (long long)r->step); continue; }
        for (int j = 0; j < r->ncells; j++)
            if (r->cells[j].key == k) {
                rt_log_fmt_num(num, sizeof num, r->cells[j].v);
                buf_puts(b, num);
                break;
            }
    }
    buf_puts(b, "\n");
}

RtCsvLogger *rt_csv_open(const char *dir, int flush_every_n_steps) {
    RtCsvLogger *c = calloc(1, sizeof *c);
    if (!c) abort();
    if (snprintf(c->path, sizeof c->path, "%s/metrics.csv", dir) >= (int)sizeof c->path) {
        rt_log_set_error("path too long: %s/metrics.csv", dir);
        free(c);
        return NULL;
    }
    if (mkdirs(dir) != 0) { free(c); return NULL; }
    // A reused version folder: Lightning deletes the old metrics file too.
    if (unlink(c->path) != 0 && errno != ENOENT) {
        rt_log_set_error("cannot remove %s: %s", c->path, strerror(errno));
        free(c);
        return NULL;
    }
    c->flush_every = flush_every_n_steps > 0 ? flush_every_n_steps : 100;
    c->header_keys = -1;
    return c;
}

int rt_csv_log(RtCsvLogger *c, int64_t step, int64_t epoch, int n, const char *const *names, const double *v) {
    table_add(&c->t, step, epoch, n, names, v);
    // Lightning flushes when (step + 1) % n == 0; a step past a multiple of n counts too,
    // so rows logged every 30 steps with n = 100 are still written every ~100 steps.
    if ((step + 1) / c->flush_every > c->flushed) {
        c->flushed = (step + 1) / c->flush_every;
        return rt_csv_flush(c);
    }
    return 0;
}

int rt_csv_flush(RtCsvLogger *c) {
    // Nothing logged: no file (as Lightning); nothing new: nothing to do.
    if (c->t.nrows == 0 || (c->written == c->t.nrows && c->header_keys == c->t.nkeys)) return 0;
    Buf b = {0};
    int r = 0;
    if (c->header_keys != c->t.nkeys) {
        // New columns (or a first write): the whole file, atomically, with the wider header.
        c->order = xrealloc(c->order, sizeof *c->order * (size_t)(c->t.nkeys + 2));
        for (int i = 0; i < c->t.nkeys; i++) c->order[i] = i;
        c->order[c->t.nkeys] = -1;
        c->order[c->t.nkeys + 1] = -2;
        qsort_r(c->order, (size_t)c->t.nkeys + 2, sizeof *c->order, cmp_ctx_keys, c);
        csv_header(c, &b);
        for (int64_t i = 0; i < c->t.nrows; i++) csv_row(c, &c->t.rows[i], &b);
        r = rt_log_write_atomic(c->path, b.p, b.len);
    } else {
        for (int64_t i = c->written; i < c->t.nrows; i++) csv_row(c, &c->t.rows[i], &b);
        FILE *f = fopen(c->path, "a");
        if (!f) r = rt_log_set_error("cannot open %s: %s", c->path, strerror(errno));
        else {
            size_t w = fwrite(b.p, 1, b.len, f);
            if (fclose(f) != 0 || w != b.len) r = rt_log_set_error("cannot write %s: %s", c->path, strerror(errno));
        }
    }
    free(b.p);
    if (r == 0) {
        c->written = c->t.nrows;
        c->header_keys = c->t.nkeys;
    }
    return r;
}

int rt_csv_close(RtCsvLogger *c) {
    if (!c) return 0;
    int r = rt_csv_flush(c);
    table_free(&c->t);
    free(c->order);
    free(c);
    return r;
}

// ---------------------------------------------------------------------------
// The front the trainer calls.

struct RtLogger {
    char dir[PATH_MAX];
    int version;
    bool plot;
    int flush_every;
    int64_t flushed;      // (step + 1) / flush_every at the last event-file flush
    RtCsvLogger *csv;
    RtTbWriter *tb;
    Table t;              // for the curves
    int failed;           // a write failed: reported once by close
};

RtLogger *rt_logger_open(const RtLoggerConfig *cfg) {
    RtLogger *lg = calloc(1, sizeof *lg);
    if (!lg) abort();
    lg->version = rt_run_dir(cfg->root, cfg->name ? cfg->name : "lightning_logs", cfg->version,
                             lg->dir, sizeof lg->dir);
    if (lg->version < 0) { free(lg); return NULL; }
    lg->plot = cfg->plot;
    lg->flush_every = cfg->flush_every_n_steps > 0 ? cfg->flush_every_n_steps : 100;
    if (cfg->csv && !(lg->csv = rt_csv_open(lg->dir, lg->flush_every))) { free(lg); return NULL; }
    if (cfg->tensorboard && !(lg->tb = rt_tb_open(lg->dir))) {
        rt_csv_close(lg->csv);
        free(lg);
        return NULL;
    }
    return lg;
}

const char *rt_logger_dir(const RtLogger *lg) { return lg->dir; }
int rt_logger_version(const RtLogger *lg) { return lg->version; }

int rt_logger_hparams(RtLogger *lg, const RtHparams *h) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/hparams.yaml", lg->dir);
    int r = rt_hparams_save(h, path);
    if (lg->tb) {
        char *md = rt_hparams_markdown(h);
        if (rt_tb_text(lg->tb, "hparams", md, 0, 0) != 0) r = -1;
        free(md);
        if (rt_tb_flush(lg->tb) != 0) r = -1;
    }
    return r;
}

int rt_logger_log(RtLogger *lg, int64_t step, int64_t epoch, int n, const char *const *names, const double *v) {
    int r = 0;
    if (lg->plot) table_add(&lg->t, step, epoch, n, names, v);
    if (lg->csv && rt_csv_log(lg->csv, step, epoch, n, names, v) != 0) r = -1;
    if (lg->tb) {
        for (int i = 0; i < n; i++)
            if (names[i] && strcmp(names[i], "epoch") != 0 && strcmp(names[i], "step") != 0 &&
                rt_tb_scalar(lg->tb, names[i], v[i], step, 0) != 0) r = -1;
        // Lightning logs the epoch with every row as the scalar `epoch`.
        if (rt_tb_scalar(lg->tb, "epoch", (double)epoch, step, 0) != 0) r = -1;
        if ((step + 1) / lg->flush_every > lg->flushed) {
            lg->flushed = (step + 1) / lg->flush_every;
            if (rt_tb_flush(lg->tb) != 0) r = -1;
        }
    }
    if (r) lg->failed = 1;
    return r;
}


// The curves: a metric logged at most once per epoch is drawn against the epoch,
// any other against the step.
static int write_curves(RtLogger *lg) {
    Table *t = &lg->t;
    if (t->nkeys == 0) return 0;
    RtPlotSeries *s = xrealloc(NULL, sizeof *s * (size_t)t->nkeys);
    for (int k = 0; k < t->nkeys; k++) {
        int n = 0;
        bool per_epoch = true;
        int64_t last_epoch = INT64_MIN;
        for (int64_t i = 0; i < t->nrows; i++)
            for (int j = 0; j < t->rows[i].ncells; j++)
                if (t->rows[i].cells[j].key == k) {
                    if (n > 0 && t->rows[i].epoch == last_epoch) per_epoch = false;
                    last_epoch = t->rows[i].epoch;
                    n++;
                }
        double *x = xrealloc(NULL, sizeof *x * (size_t)(2 * n)), *y = x + n;
        int m = 0;
        for (int64_t i = 0; i < t->nrows; i++)
            for (int j = 0; j < t->rows[i].ncells; j++)
                if (t->rows[i].cells[j].key == k) {
                    x[m] = (double)(per_epoch ? t->rows[i].epoch : t->rows[i].step);
                    y[m++] = t->rows[i].cells[j].v;
                }
        s[k] = (RtPlotSeries){t->keys[k], per_epoch ? "epoch" : "step", x, y, n};
    }
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/curves.svg", lg->dir);
    // The title: NAME/version_N.
    const char *title = lg->dir + strlen(lg->dir);
    for (int slashes = 0; title > lg->dir; title--)
        if (title[-1] == '/' && ++slashes == 2) break;
    int r = rt_plot_save(path, title, s, t->nkeys);
    for (int k = 0; k < t->nkeys; k++) free((double *)s[k].x);
    free(s);
    return r;
}

int rt_logger_flush(RtLogger *lg) {
    int r = 0;
    if (lg->csv && rt_csv_flush(lg->csv) != 0) r = -1;
    if (lg->tb && rt_tb_flush(lg->tb) != 0) r = -1;
    if (lg->plot && write_curves(lg) != 0) r = -1;   // the curves so far, for a look mid-run
    return r;
}

int rt_logger_close(RtLogger *lg) {
    if (!lg) return 0;
    int r = lg->failed ? -1 : 0;
    if (lg->csv && rt_csv_close(lg->csv) != 0) r = -1;
    if (lg->tb && rt_tb_close(lg->tb) != 0) r = -1;
    if (lg->plot && write_curves(lg) != 0) r = -1;
    table_free(&lg->t);
    free(lg);
    return r;
}
