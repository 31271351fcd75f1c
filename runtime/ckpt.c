// ckpt.c — checkpoints as safetensors files.
//
// A checkpoint is a list of named tensors plus string metadata, stored in the
// safetensors format, so that PyTorch reads it (safetensors.torch.load_file)
// and no code runs on load:
//
//   8 bytes   N, the header length, little-endian
//   N bytes   a JSON object, padded with spaces to a multiple of 8:
//               {"__metadata__":{"key":"value",...},
//                "name":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},...}
//   the rest  the tensors' bytes, row-major, little-endian, back to back;
//             data_offsets count from the end of the header
//
// Writing lays the tensors out largest element first (so every tensor is
// aligned to its element size), builds the header, writes a temporary file in
// the target's directory and renames it over the target only once all of it is
// on disk: a crash or a full disk never leaves a half-written checkpoint under
// the real name.
//
// Reading trusts nothing. The header length is checked against the file size
// and a 100 MB limit; a lexical scan checks UTF-8, control characters, nesting
// depth and the spelling of numbers before cJSON parses the header; then every
// entry's dtype, shape and offsets are checked, names must be unique, and the
// tensors must tile the data exactly — no overlap, no gap, no trailing bytes —
// as the safetensors reference reader requires. Each problem is one message
// naming the file and the tensor or field; the library never prints or exits.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian: ckpt.c would have to swap bytes on this machine"
#endif

#define MAX_HEADER 100000000ull        // the safetensors reference reader's limit
#define MAX_EXACT (1ull << 53)         // JSON numbers from here on may be rounded in cJSON's double
// JSON values (strings, numbers, literals, objects, arrays) in a header at most.
// cJSON takes ~100-250 bytes a value, so a 100 MB header of tiny values would
// take gigabytes; this bounds it to ~150 MB. A tensor entry is 10 + rank values:
// this still allows some 70 000 tensors of rank 4 (large LLM checkpoints hold
// a few thousand per file).
#define MAX_VALUES (1u << 20)
enum { SHOWN = 96 };                   // bytes of a name quoted in a message
typedef char Shown[SHOWN + 8];         // a quoted name: 'name' or 'nam...'

static const struct {
    const char *name;
    unsigned size;
} dtypes[RT_CKPT_NDTYPES] = {
    [RT_CKPT_F32] = {"F32", 4}, [RT_CKPT_F64] = {"F64", 8}, [RT_CKPT_BF16] = {"BF16", 2},
    [RT_CKPT_F16] = {"F16", 2}, [RT_CKPT_I64] = {"I64", 8}, [RT_CKPT_I32] = {"I32", 4},
    [RT_CKPT_U8] = {"U8", 1},   [RT_CKPT_BOOL] = {"BOOL", 1},
};

struct RtCkpt {
    char *label;                 // the file name, for messages
    int fd;                      // -1 when reading from memory
    const unsigned char *mem;    // the whole file when reading from memory
    uint64_t data_start;         // 8 + header length
    uint64_t data_size;
    size_t ntensors;
    RtCkptInfo *tensors;         // in data order
    const RtCkptInfo **by_name;  // the tensors sorted by name
    size_t nmeta;
    RtCkptMeta *meta;            // in header order
};

//
// Small helpers: messages, UTF-8, a growable buffer.
//

static bool failf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool failf(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, RT_CKPT_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return false;
}

static const char *errstr(int e, char *buf, size_t n) { return strerror_r(e, buf, n); }

// The length of the valid UTF-8 sequence at s (at most n bytes), or 0.
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0], cp, min;
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static bool utf8_valid(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_len((const unsigned char *)s + i, n - i))) return false;
    return true;
}

// Quotes a name for a message: control characters, quotes, backslashes and
// invalid UTF-8 become \xNN (a hostile file must not drive the terminal), and
// long names are cut at a character boundary.
static const char *shown(Shown out, const char *s, size_t n) {
    size_t o = 0;
    out[o++] = '\'';
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c >= 0x80 ? utf8_len((const unsigned char *)s + i, n - i) : 1;
        bool esc = c < 0x20 || c == 0x7f || c == '\'' || c == '\\' || k == 0;
        size_t w = esc ? 4 : k;
        if (o + w > SHOWN) {
            memcpy(out + o, "...", 3), o += 3;
            break;
        }
        if (esc) snprintf(out + o, 5, "\\x%02x", c), i++;
        else memcpy(out + o, s + i, k), i += k;
        o += w;
    }
    out[o++] = '\'';
    out[o] = 0;
    return out;
}
static const char *shownz(Shown out, const char *s) { return shown(out, s, strlen(s)); }

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} Buf;

static void buf_add(Buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void buf_str(Buf *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_u64(Buf *b, uint64_t v) {
    char t[24];
    buf_add(b, t, (size_t)snprintf(t, sizeof t, "%llu", (unsigned long long)v));
}
// A JSON string literal.
static void buf_json(Buf *b, const char *s) {
    buf_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_add(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            buf_add(b, e, (size_t)snprintf(e, sizeof e, "\\u%04x", c));
        } else {
            buf_add(b, s, 1);
        }
    }
    buf_add(b, "\"", 1);
}

// A message that lists several things; everything past the buffer is dropped.
typedef struct {
    char *s;
    size_t len;
} Msg;
static void msg(Msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg(Msg *m, const char *fmt, ...) {
    if (m->len + 1 >= RT_CKPT_ERR_LEN) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(m->s + m->len, RT_CKPT_ERR_LEN - m->len, fmt, ap);
    va_end(ap);
    if (k > 0) m->len += (size_t)k < RT_CKPT_ERR_LEN - m->len ? (size_t)k : RT_CKPT_ERR_LEN - 1 - m->len;
}

//
// Dtypes and shapes.
//

const char *rt_ckpt_dtype_name(RtCkptDtype dt) {
    return (unsigned)dt < RT_CKPT_NDTYPES ? dtypes[dt].name : "?";
}

size_t rt_ckpt_dtype_size(RtCkptDtype dt) {
    return (unsigned)dt < RT_CKPT_NDTYPES ? dtypes[dt].size : 0;
}

bool rt_ckpt_dtype_parse(const char *name, RtCkptDtype *out) {
    for (int i = 0; i < RT_CKPT_NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (RtCkptDtype)i;
            return true;
        }
    return false;
}

size_t rt_ckpt_shape_str(RtCkptDtype dt, int ndim, const int64_t *shape, char *buf, size_t n) {
    Buf b = {0};
    buf_str(&b, rt_ckpt_dtype_name(dt));
    buf_add(&b, "[", 1);
    for (int i = 0; i < ndim; i++) {
        if (i) buf_add(&b, ", ", 2);
        char t[24];
        buf_add(&b, t, (size_t)snprintf(t, sizeof t, "%lld", (long long)shape[i]));
    }
    buf_add(&b, "]", 1);
    size_t len = b.oom ? 0 : b.len;
    if (n) snprintf(buf, n, "%s", b.oom ? "" : b.p);
    free(b.p);
    return len;
}

// Elements and bytes of a shape; false on a negative or too large dimension
// or an overflow (*why says which).
static bool shape_bytes(RtCkptDtype dt, int ndim, const int64_t *shape, uint64_t *numel,
                        uint64_t *nbytes, const char **why) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return *why = "has a negative dimension", false;
        if ((uint64_t)shape[i] >= MAX_EXACT) return *why = "has a dimension of 2^53 or more", false;
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n))
            return *why = "has more elements than 64 bits can count", false;
    }
    if (__builtin_mul_overflow(n, (uint64_t)dtypes[dt].size, nbytes))
        return *why = "has more bytes than 64 bits can count", false;
    *numel = n;
    return true;
}

// The bytes of a table entry that check_table has accepted.
static uint64_t table_bytes(const RtCkptTensor *x) {
    uint64_t numel = 0, nbytes = 0;
    const char *why;
    shape_bytes(x->dtype, x->ndim, x->shape, &numel, &nbytes, &why);
    return nbytes;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// Checks a caller's tensor table (to save, or the model's to load into):
// names, dtypes, shapes, buffers, unique names. `what` starts each message.
static bool check_table(const char *what, const RtCkptTensor *t, size_t nt, char *err) {
    Shown a;
    for (size_t i = 0; i < nt; i++) {
        if (!t[i].name) return failf(err, "%s: tensor %zu has no name", what, i);
        if (!utf8_valid(t[i].name))
            return failf(err, "%s: tensor %s: the name is not valid UTF-8", what, shownz(a, t[i].name));
        if (strcmp(t[i].name, "__metadata__") == 0)
            return failf(err, "%s: a tensor cannot be called '__metadata__'", what);
        if ((unsigned)t[i].dtype >= RT_CKPT_NDTYPES)
            return failf(err, "%s: tensor %s: unknown dtype %d", what, shownz(a, t[i].name), (int)t[i].dtype);
        if (t[i].ndim < 0 || t[i].ndim > RT_CKPT_MAX_DIMS)
            return failf(err, "%s: tensor %s: %d dimensions (0 to %d allowed)", what,
                         shownz(a, t[i].name), t[i].ndim, RT_CKPT_MAX_DIMS);
        if (t[i].ndim > 0 && !t[i].shape)
            return failf(err, "%s: tensor %s: no shape", what, shownz(a, t[i].name));
        uint64_t numel, nbytes;
        const char *why;
        if (!shape_bytes(t[i].dtype, t[i].ndim, t[i].shape, &numel, &nbytes, &why))
            return failf(err, "%s: tensor %s: the shape %s", what, shownz(a, t[i].name), why);
        if (nbytes > 0 && !t[i].data)
            return failf(err, "%s: tensor %s: no data buffer", what, shownz(a, t[i].name));
    }
    if (nt < 2) return true;
    const char **names = malloc(nt * sizeof *names);
    if (!names) return failf(err, "%s: out of memory", what);
    for (size_t i = 0; i < nt; i++) names[i] = t[i].name;
    qsort(names, nt, sizeof *names, cmp_str);
    for (size_t i = 1; i < nt; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            failf(err, "%s: tensor %s appears twice", what, shownz(a, names[i]));
            free(names);
            return false;
        }
    free(names);
    return true;
}

//
// The lexical scan of a header (reading, and writing as a check).
//

// What the scan learns that cJSON cannot tell afterwards: the first number not
// spelt as a plain non-negative integer ("1e3", "1.0", "-0", "007": cJSON
// accepts them, the reference reader does not), with the top-level key before it.
typedef struct {
    size_t bad_at;    // byte offset + 1; 0: none
    size_t bad_len;
    const char *bad;  // the number's text
    const char *key;  // the raw key (a tensor name, still JSON-escaped)
    size_t key_len;
} Scan;

static bool is_digit(unsigned c) { return c >= '0' && c <= '9'; }

static bool scan_header(const char *file, const unsigned char *h, size_t n, Scan *sc, char *err) {
    int depth = 0;
    unsigned char kind[4] = {0};
    unsigned commas[4] = {0};
    const unsigned char *key = NULL;
    size_t key_len = 0, values = 0;
    *sc = (Scan){0};
    for (size_t i = 0; i < n;) {
        unsigned c = h[i];
        if ((c == '"' || c == '{' || c == '[' || c == '-' || is_digit(c) || (c >= 'a' && c <= 'z')) &&
            ++values > MAX_VALUES)
            return failf(err, "%s: the header holds more than %u JSON values (byte %zu); LTL refuses it rather "
                         "than spend gigabytes parsing it", file, MAX_VALUES, i);
        if (c >= 'a' && c <= 'z') {   // a literal (true, false, null) or garbage: one value, cJSON judges it
            while (i < n && h[i] >= 'a' && h[i] <= 'z') i++;
            continue;
        }
        if (c == '"') {
            size_t start = ++i;
            for (;;) {
                if (i >= n)
                    return failf(err, "%s: the header is not valid JSON: the string at byte %zu never ends", file,
                                 start - 1);
                c = h[i];
                if (c == '"') break;
                if (c < 0x20)
                    return failf(err, "%s: the header is not valid JSON: control character 0x%02x inside a string "
                                 "(byte %zu)", file, c, i);
                if (c == '\\') {
                    if (i + 5 < n && h[i + 1] == 'u' && memcmp(h + i + 2, "0000", 4) == 0)
                        return failf(err, "%s: the header holds a NUL character (\\u0000) in a string (byte %zu)",
                                     file, i);
                    i += 2;
                    continue;
                }
                size_t k = utf8_len(h + i, n - i);
                if (!k) return failf(err, "%s: the header is not valid UTF-8 (byte %zu)", file, i);
                i += k;
            }
            if (depth == 1) key = h + start, key_len = i - start;
            i++;
            continue;
        }
        if (c == '{' || c == '[') {
            if (depth == 3)
                return failf(err, "%s: the header nests deeper than a safetensors header can (byte %zu)", file, i);
            depth++;
            kind[depth] = (unsigned char)c, commas[depth] = 0;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return failf(err, "%s: the header is not valid JSON (byte %zu)", file, i);
            depth--;
        } else if (c == ',') {
            if (depth > 0 && kind[depth] == '[' && ++commas[depth] >= RT_CKPT_MAX_DIMS)
                return failf(err, "%s: the header holds an array of more than %d elements (byte %zu); a shape has "
                             "at most %d dimensions", file, RT_CKPT_MAX_DIMS, i, RT_CKPT_MAX_DIMS);
        } else if (c == '-' || is_digit(c)) {
            size_t start = i;
            while (i < n && (is_digit(h[i]) || h[i] == '-' || h[i] == '+' || h[i] == '.' || h[i] == 'e' ||
                             h[i] == 'E'))
                i++;
            bool plain = h[start] != '0' || i - start == 1;
            for (size_t j = start; j < i; j++) plain = plain && is_digit(h[j]);
            if (!plain && !sc->bad_at) {
                sc->bad_at = start + 1, sc->bad_len = i - start, sc->bad = (const char *)h + start;
                sc->key = (const char *)key, sc->key_len = key_len;
            }
            continue;
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            return failf(err, "%s: the header is not valid JSON: control character 0x%02x (byte %zu)", file, c, i);
        } else if (c >= 0x80 && !utf8_len(h + i, n - i)) {
            return failf(err, "%s: the header is not valid UTF-8 (byte %zu)", file, i);
        }
        i++;
    }
    return true;
}

//
// Writing.
//

// The header and the order of the data: largest element first, then as given.
typedef struct {
    Buf header;       // JSON, padded with spaces so that 8 + its length is a multiple of 8
    size_t *order;    // tensor indices in data order
    uint64_t data_size;
} Plan;

static bool plan_file(const char *what, const RtCkptTensor *t, size_t nt, const RtCkptMeta *meta,
                      size_t nmeta, Plan *p, char *err) {
    *p = (Plan){0};
    if (nt && !t) return failf(err, "%s: no tensor table", what);
    if (nmeta && !meta) return failf(err, "%s: no metadata table", what);
    if (!check_table(what, t, nt, err)) return false;
    Shown a;
    for (size_t i = 0; i < nmeta; i++) {
        if (!meta[i].key || !meta[i].value) return failf(err, "%s: metadata entry %zu is empty", what, i);
        if (!utf8_valid(meta[i].key))
            return failf(err, "%s: metadata key %s is not valid UTF-8", what, shownz(a, meta[i].key));
        if (!utf8_valid(meta[i].value))
            return failf(err, "%s: metadata %s: the value is not valid UTF-8", what, shownz(a, meta[i].key));
    }
    if (nmeta > 1) {
        const char **keys = malloc(nmeta * sizeof *keys);
        if (!keys) return failf(err, "%s: out of memory", what);
        for (size_t i = 0; i < nmeta; i++) keys[i] = meta[i].key;
        qsort(keys, nmeta, sizeof *keys, cmp_str);
        for (size_t i = 1; i < nmeta; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0) {
                failf(err, "%s: metadata key %s appears twice", what, shownz(a, keys[i]));
                free(keys);
                return false;
            }
        free(keys);
    }
    p->order = malloc((nt ? nt : 1) * sizeof *p->order);
    if (!p->order) return failf(err, "%s: out of memory", what);
    size_t k = 0;   // largest element first, in the caller's order within one size
    for (unsigned size = 8; size >= 1; size /= 2)
        for (size_t i = 0; i < nt; i++)
            if (dtypes[t[i].dtype].size == size) p->order[k++] = i;

    Buf *h = &p->header;
    buf_add(h, "{", 1);
    if (nmeta) {
        buf_str(h, "\"__metadata__\":{");
        for (size_t i = 0; i < nmeta; i++) {
            if (i) buf_add(h, ",", 1);
            buf_json(h, meta[i].key);
            buf_add(h, ":", 1);
            buf_json(h, meta[i].value);
        }
        buf_add(h, "}", 1);
    }
    uint64_t off = 0;
    for (size_t j = 0; j < nt; j++) {
        const RtCkptTensor *x = &t[p->order[j]];
        uint64_t nbytes = table_bytes(x);
        if (nmeta || j) buf_add(h, ",", 1);
        buf_json(h, x->name);
        buf_str(h, ":{\"dtype\":\"");
        buf_str(h, dtypes[x->dtype].name);
        buf_str(h, "\",\"shape\":[");
        for (int d = 0; d < x->ndim; d++) {
            if (d) buf_add(h, ",", 1);
            buf_u64(h, (uint64_t)x->shape[d]);
        }
        buf_str(h, "],\"data_offsets\":[");
        buf_u64(h, off);
        buf_add(h, ",", 1);
        if (__builtin_add_overflow(off, nbytes, &off) || off >= MAX_EXACT) {
            free(p->order), free(h->p);
            return failf(err, "%s: the tensors hold 2^53 bytes or more", what);
        }
        buf_u64(h, off);
        buf_str(h, "]}");
    }
    buf_add(h, "}", 1);
    while (h->len % 8) buf_add(h, " ", 1);
    if (h->oom || h->len > MAX_HEADER) {
        bool oom = h->oom;
        free(p->order), free(h->p);
        return oom ? failf(err, "%s: out of memory", what)
                   : failf(err, "%s: the header would exceed the 100 MB that readers accept", what);
    }
    // Never write what the reader would refuse: the same lexical limits (JSON values).
    Scan sc;
    if (!scan_header(what, (const unsigned char *)h->p, h->len, &sc, err)) {
        free(p->order), free(h->p);
        return false;
    }
    p->data_size = off;
    return true;
}

static void plan_free(Plan *p) {
    free(p->header.p);
    free(p->order);
}

static void put_le64(unsigned char b[8], uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

bool rt_ckpt_encode(const RtCkptTensor *t, size_t nt, const RtCkptMeta *meta, size_t nmeta,
                    void **out, size_t *size, char err[RT_CKPT_ERR_LEN]) {
    Plan p;
    if (!plan_file("cannot encode the checkpoint", t, nt, meta, nmeta, &p, err)) return false;
    uint64_t total = 8 + p.header.len + p.data_size;
    unsigned char *b = total <= SIZE_MAX ? malloc((size_t)total) : NULL;
    if (!b) {
        plan_free(&p);
        return failf(err, "cannot encode the checkpoint: out of memory (%llu bytes)", (unsigned long long)total);
    }
    put_le64(b, p.header.len);
    memcpy(b + 8, p.header.p, p.header.len);
    size_t at = 8 + p.header.len;
    for (size_t k = 0; k < nt; k++) {
        const RtCkptTensor *x = &t[p.order[k]];
        uint64_t nbytes = table_bytes(x);
        if (nbytes) memcpy(b + at, x->data, nbytes);
        at += nbytes;
    }
    plan_free(&p);
    *out = b;
    *size = (size_t)total;
    return true;
}

static bool write_all(int fd, const void *p, uint64_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n > (1u << 30) ? (1u << 30) : (size_t)n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return false;
        if (w == 0) return errno = EIO, false;
        c += w, n -= (uint64_t)w;
    }
    return true;
}

// Writes the file to a fresh temporary name next to `path`, with the
// permissions a plain open() would give (0666 less the umask, unlike mkstemp's
// 0600); the name is unique per process, call and moment, and O_EXCL makes sure
// no existing file is ever reused.
static int create_temp(const char *path, char **tmp_out) {
    static _Atomic unsigned counter;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    int baselen = (int)strlen(base) > 160 ? 160 : (int)strlen(base);   // stay under NAME_MAX
    size_t cap = (size_t)dirlen + (size_t)baselen + 64;
    char *tmp = malloc(cap);
    if (!tmp) return errno = ENOMEM, -1;
    for (int tries = 0;; tries++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned n = atomic_fetch_add(&counter, 1);
        snprintf(tmp, cap, "%.*s.%.*s.tmp-%ld-%u-%lx", dirlen, path, baselen, base, (long)getpid(), n,
                 (unsigned long)ts.tv_nsec);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            *tmp_out = tmp;
            return fd;
        }
        if (errno != EEXIST || tries == 100) {
            int e = errno;
            free(tmp);
            return errno = e, -1;
        }
    }
}

// fsync the directory holding `path`, so that the rename itself is durable.
// File systems that cannot sync a directory (EINVAL) are not an error.
static int sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return ENOMEM;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return errno;
    int e = 0;
    while (fsync(fd) != 0)
        if (errno != EINTR) {
            e = errno == EINVAL ? 0 : errno;
            break;
        }
    close(fd);
    return e;
}

bool rt_ckpt_save(const char *path, const RtCkptTensor *t, size_t nt, const RtCkptMeta *meta,
                  size_t nmeta, char err[RT_CKPT_ERR_LEN]) {
    char eb[128];
    if (!path || !*path) return failf(err, "cannot save a checkpoint: no file name");
    const char *slash = strrchr(path, '/');
    if (slash && !slash[1]) return failf(err, "%s: cannot save: the path names a directory", path);

    Buf what = {0};
    buf_str(&what, path);
    buf_str(&what, ": cannot save");
    if (what.oom) return failf(err, "cannot save a checkpoint: out of memory");
    Plan p;
    bool ok = plan_file(what.p, t, nt, meta, nmeta, &p, err);
    free(what.p);
    if (!ok) return false;

    char *tmp = NULL;
    int fd = create_temp(path, &tmp);
    if (fd < 0) {
        int e = errno;
        plan_free(&p);
        return failf(err, "%s: cannot save: cannot create a temporary file next to it: %s", path,
                     errstr(e, eb, sizeof eb));
    }
    unsigned char len[8];
    put_le64(len, p.header.len);
    ok = write_all(fd, len, 8) && write_all(fd, p.header.p, p.header.len);
    for (size_t k = 0; ok && k < nt; k++) {
        const RtCkptTensor *x = &t[p.order[k]];
        uint64_t nbytes = table_bytes(x);
        ok = write_all(fd, x->data, nbytes);
    }
    plan_free(&p);
    const char *step = "writing";
    if (ok) {
        step = "syncing";
        while (!(ok = fsync(fd) == 0) && errno == EINTR) {}
    }
    int e = errno;
    if (close(fd) != 0 && ok) ok = false, e = errno, step = "closing";
    if (ok && rename(tmp, path) != 0) ok = false, e = errno, step = "renaming";
    if (!ok) {
        unlink(tmp);
        failf(err, "%s: cannot save: %s %s failed: %s (the previous file, if any, is unchanged)", path,
              step, tmp, errstr(e, eb, sizeof eb));
        free(tmp);
        return false;
    }
    free(tmp);
    if ((e = sync_dir(path)) != 0)
        return failf(err, "%s: saved, but syncing its directory failed: %s", path, errstr(e, eb, sizeof eb));
    return true;
}

//
// Reading: the entries.
//

static const char *json_kind(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "not a JSON value";
}

// NULL if v is an integer in [0, 2^53), else what is wrong with it (larger
// numbers may have been rounded by cJSON's double).
static const char *uint_problem(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return json_kind(v);
    double d = v->valuedouble;
    if (!(d >= 0)) return "negative";
    if (d >= (double)MAX_EXACT) return "too large (2^53 or more)";
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return "not an integer";
    *out = u;
    return NULL;
}

static bool read_tensor(const char *file, const cJSON *e, uint64_t data_size, RtCkptInfo *t, char *err) {
    Shown nm, a;
    shownz(nm, e->string);
    if (!cJSON_IsObject(e))
        return failf(err, "%s: tensor %s: its entry is %s, not an object", file, nm, json_kind(e));
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *f = e->child; f; f = f->next) {
        const char *k = f->string ? f->string : "";
        const cJSON **slot = strcmp(k, "dtype") == 0          ? &dtype
                             : strcmp(k, "shape") == 0        ? &shape
                             : strcmp(k, "data_offsets") == 0 ? &offs
                                                              : NULL;
        if (!slot)
            return failf(err, "%s: tensor %s: unknown field %s (a tensor has dtype, shape and data_offsets)", file,
                         nm, shownz(a, k));
        if (*slot) return failf(err, "%s: tensor %s: field '%s' appears twice", file, nm, k);
        *slot = f;
    }
    if (!dtype) return failf(err, "%s: tensor %s: no 'dtype'", file, nm);
    if (!shape) return failf(err, "%s: tensor %s: no 'shape'", file, nm);
    if (!offs) return failf(err, "%s: tensor %s: no 'data_offsets'", file, nm);

    if (!cJSON_IsString(dtype))
        return failf(err, "%s: tensor %s: 'dtype' is %s, not a string", file, nm, json_kind(dtype));
    if (!rt_ckpt_dtype_parse(dtype->valuestring, &t->dtype))
        return failf(err, "%s: tensor %s: unknown dtype %s (LTL reads F32 F64 BF16 F16 I64 I32 U8 BOOL)", file,
                     nm, shownz(a, dtype->valuestring));

    if (!cJSON_IsArray(shape))
        return failf(err, "%s: tensor %s: 'shape' is %s, not an array", file, nm, json_kind(shape));
    int ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) ndim++;
    if (ndim > RT_CKPT_MAX_DIMS)
        return failf(err, "%s: tensor %s: the shape has %d dimensions, more than %d", file, nm, ndim,
                     RT_CKPT_MAX_DIMS);
    int64_t *dims = malloc((size_t)(ndim ? ndim : 1) * sizeof *dims);
    if (!dims) return failf(err, "%s: out of memory", file);
    t->shape = dims;   // owned by t from here on
    t->ndim = ndim;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v = 0;
        const char *why = uint_problem(d, &v);
        if (why) return failf(err, "%s: tensor %s: shape dimension %d is %s", file, nm, i, why);
        dims[i] = (int64_t)v;
    }
    const char *why;
    if (!shape_bytes(t->dtype, ndim, dims, &t->numel, &t->nbytes, &why))
        return failf(err, "%s: tensor %s: the shape %s", file, nm, why);

    if (!cJSON_IsArray(offs))
        return failf(err, "%s: tensor %s: 'data_offsets' is %s, not an array", file, nm, json_kind(offs));
    const cJSON *b = offs->child, *en = b ? b->next : NULL;
    if (!b || !en || en->next) return failf(err, "%s: tensor %s: 'data_offsets' must be [begin, end]", file, nm);
    uint64_t begin = 0, end = 0;
    if ((why = uint_problem(b, &begin)))
        return failf(err, "%s: tensor %s: data_offsets begin is %s", file, nm, why);
    if ((why = uint_problem(en, &end))) return failf(err, "%s: tensor %s: data_offsets end is %s", file, nm, why);
    if (end < begin)
        return failf(err, "%s: tensor %s: data_offsets [%llu, %llu] end before they begin", file, nm,
                     (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return failf(err, "%s: tensor %s: data_offsets [%llu, %llu] run past the end of the data (%llu bytes; "
                     "truncated file?)", file, nm, (unsigned long long)begin, (unsigned long long)end,
                     (unsigned long long)data_size);
    if (end - begin != t->nbytes) {
        char s[256];
        rt_ckpt_shape_str(t->dtype, ndim, dims, s, sizeof s);
        return failf(err, "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, but %s needs %llu", file, nm,
                     (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin), s,
                     (unsigned long long)t->nbytes);
    }
    t->begin = begin;
    return true;
}

static int cmp_offsets(const void *a, const void *b) {
    const RtCkptInfo *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    uint64_t xe = x->begin + x->nbytes, ye = y->begin + y->nbytes;
    if (xe != ye) return xe < ye ? -1 : 1;
    return strcmp(x->name, y->name);
}
static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const RtCkptInfo *const *)a)->name, (*(const RtCkptInfo *const *)b)->name);
}
static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const RtCkptMeta *)a)->key, ((const RtCkptMeta *)b)->key);
}

// Walks the parsed header into ck; data_size is what follows the header.
static bool read_entries(RtCkpt *ck, const cJSON *root, const Scan *sc, char *err) {
    const char *file = ck->label;
    Shown a, b;
    if (!cJSON_IsObject(root)) return failf(err, "%s: the header is %s, not a JSON object", file, json_kind(root));
    const cJSON *meta = NULL;
    size_t nt = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (!c->string) return failf(err, "%s: the header has an entry without a name", file);
        if (strcmp(c->string, "__metadata__") != 0) nt++;
        else if (meta) return failf(err, "%s: '__metadata__' appears twice in the header", file);
        else meta = c;
    }
    ck->tensors = calloc(nt ? nt : 1, sizeof *ck->tensors);
    ck->by_name = calloc(nt ? nt : 1, sizeof *ck->by_name);
    if (!ck->tensors || !ck->by_name) return failf(err, "%s: out of memory", file);
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c == meta) continue;
        RtCkptInfo *t = &ck->tensors[ck->ntensors++];
        if (!(t->name = strdup(c->string))) return failf(err, "%s: out of memory", file);
        if (!read_tensor(file, c, ck->data_size, t, err)) return false;
    }
    if (meta) {
        if (!cJSON_IsObject(meta))
            return failf(err, "%s: '__metadata__' is %s, not an object of strings", file, json_kind(meta));
        size_t nm = 0;
        for (const cJSON *c = meta->child; c; c = c->next) nm++;
        ck->meta = calloc(nm ? nm : 1, sizeof *ck->meta);
        if (!ck->meta) return failf(err, "%s: out of memory", file);
        for (const cJSON *c = meta->child; c; c = c->next) {
            const char *k = c->string ? c->string : "";
            if (!cJSON_IsString(c))
                return failf(err, "%s: __metadata__ %s is %s, not a string", file, shownz(a, k), json_kind(c));
            RtCkptMeta *m = &ck->meta[ck->nmeta++];
            m->key = strdup(k);
            m->value = strdup(c->valuestring);
            if (!m->key || !m->value) return failf(err, "%s: out of memory", file);
        }
        RtCkptMeta *sorted = malloc((nm ? nm : 1) * sizeof *sorted);
        if (!sorted) return failf(err, "%s: out of memory", file);
        memcpy(sorted, ck->meta, nm * sizeof *sorted);
        qsort(sorted, nm, sizeof *sorted, cmp_meta);
        for (size_t i = 1; i < nm; i++)
            if (strcmp(sorted[i - 1].key, sorted[i].key) == 0) {
                failf(err, "%s: __metadata__ key %s appears twice", file, shownz(a, sorted[i].key));
                free(sorted);
                return false;
            }
        free(sorted);
    }
    if (sc->bad_at) {
        if (sc->key)
            return failf(err, "%s: tensor %s: the number '%.*s' (header byte %zu) is not written as a plain "
                         "non-negative integer", file, shown(a, sc->key, sc->key_len), (int)sc->bad_len,
                         sc->bad, sc->bad_at - 1);
        return failf(err, "%s: the number '%.*s' (header byte %zu) is not written as a plain non-negative integer",
                     file, (int)sc->bad_len, sc->bad, sc->bad_at - 1);
    }

    // Names are unique (checked before the layout, whose messages assume it).
    for (size_t i = 0; i < nt; i++) ck->by_name[i] = &ck->tensors[i];
    qsort(ck->by_name, nt, sizeof *ck->by_name, cmp_by_name);
    for (size_t i = 1; i < nt; i++)
        if (strcmp(ck->by_name[i - 1]->name, ck->by_name[i]->name) == 0)
            return failf(err, "%s: tensor %s appears twice in the header", file, shownz(a, ck->by_name[i]->name));

    // The tensors tile the data: sorted by offset, each begins where the previous ended.
    qsort(ck->tensors, nt, sizeof *ck->tensors, cmp_offsets);
    uint64_t pos = 0;
    const RtCkptInfo *prev = NULL;
    for (size_t i = 0; i < nt; i++) {
        const RtCkptInfo *t = &ck->tensors[i];
        unsigned long long tb = t->begin, te = t->begin + t->nbytes;
        if (t->begin < pos)
            return failf(err, "%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap", file, shownz(a, prev->name),
                         (unsigned long long)prev->begin, (unsigned long long)pos, shownz(b, t->name), tb, te);
        if (t->begin > pos) {
            if (!prev)
                return failf(err, "%s: the first %llu bytes of the data belong to no tensor (tensor %s begins at "
                             "%llu)", file, tb, shownz(a, t->name), tb);
            return failf(err, "%s: the %llu bytes between tensor %s (ends at %llu) and tensor %s (begins at %llu) "
                         "belong to no tensor", file, (unsigned long long)(t->begin - pos), shownz(a, prev->name),
                         (unsigned long long)pos, shownz(b, t->name), tb);
        }
        pos = te;
        prev = t;
    }
    if (pos < ck->data_size) {
        if (!prev)
            return failf(err, "%s: %llu bytes of data follow the header, but it lists no tensor", file,
                         (unsigned long long)ck->data_size);
        return failf(err, "%s: the last %llu bytes of the file belong to no tensor (the last tensor, %s, ends at "
                     "data offset %llu)", file, (unsigned long long)(ck->data_size - pos), shownz(a, prev->name),
                     (unsigned long long)pos);
    }
    // by_name pointed into the unsorted array: rebuild it for the sorted one.
    for (size_t i = 0; i < nt; i++) ck->by_name[i] = &ck->tensors[i];
    qsort(ck->by_name, nt, sizeof *ck->by_name, cmp_by_name);
    return true;
}

static bool parse_header(RtCkpt *ck, const unsigned char *h, size_t n, char *err) {
    const char *file = ck->label;
    size_t first = 0;   // JSON whitespace may come first (the reference reader allows it)
    while (first < n && (h[first] == ' ' || h[first] == '\t' || h[first] == '\n' || h[first] == '\r')) first++;
    if (first == n || h[first] != '{')
        return failf(err, "%s: not a safetensors file: the header does not begin with '{'", file);
    Scan sc;
    if (!scan_header(file, h, n, &sc, err)) return false;
    // cJSON gets a NUL-terminated copy: nothing it does can run past the end.
    char *text = malloc(n + 1);
    if (!text) return failf(err, "%s: out of memory for a header of %zu bytes", file, n);
    memcpy(text, h, n);
    text[n] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    bool ok;
    if (!root) {
        ok = failf(err, "%s: the header is not valid JSON (byte %zu)", file, end ? (size_t)(end - text) : (size_t)0);
    } else {
        size_t at = (size_t)(end - text);
        while (at < n && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) at++;
        ok = at < n ? failf(err, "%s: the header has bytes after its JSON object (byte %zu)", file, at)
                    : read_entries(ck, root, &sc, err);
    }
    cJSON_Delete(root);
    free(text);
    return ok;
}

//
// Reading: the public API.
//

void rt_ckpt_close(RtCkpt *ck) {
    if (!ck) return;
    for (size_t i = 0; i < ck->ntensors; i++) {
        free((char *)ck->tensors[i].name);
        free((int64_t *)ck->tensors[i].shape);
    }
    for (size_t i = 0; i < ck->nmeta; i++) {
        free((char *)ck->meta[i].key);
        free((char *)ck->meta[i].value);
    }
    free(ck->tensors);
    free(ck->by_name);
    free(ck->meta);
    if (ck->fd >= 0) close(ck->fd);
    free(ck->label);
    free(ck);
}

static RtCkpt *ckpt_new(const char *label, char *err) {
    RtCkpt *ck = calloc(1, sizeof *ck);
    if (ck) ck->label = strdup(label ? label : "checkpoint");
    if (!ck || !ck->label) {
        free(ck);
        failf(err, "%s: out of memory", label ? label : "checkpoint");
        return NULL;
    }
    ck->fd = -1;
    return ck;
}

// Checks the header length against the file size; fills data_start and data_size.
static bool check_length(RtCkpt *ck, const unsigned char b[8], uint64_t size, char *err) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    if (n > size - 8)
        return failf(err, "%s: not a safetensors file, or truncated: the header length %llu runs past the end of "
                     "the file (%llu bytes)", ck->label, (unsigned long long)n, (unsigned long long)size);
    if (n > MAX_HEADER)
        return failf(err, "%s: the header length %llu exceeds the 100 MB limit", ck->label, (unsigned long long)n);
    ck->data_start = 8 + n;
    ck->data_size = size - 8 - n;
    return true;
}

RtCkpt *rt_ckpt_open_memory(const void *data, size_t size, const char *label, char err[RT_CKPT_ERR_LEN]) {
    RtCkpt *ck = ckpt_new(label, err);
    if (!ck) return NULL;
    ck->mem = data;
    if (size < 8 || !data) {
        failf(err, "%s: not a safetensors file: %zu bytes, too short for the 8-byte header length", ck->label, size);
    } else if (check_length(ck, data, size, err) &&
               parse_header(ck, ck->mem + 8, (size_t)(ck->data_start - 8), err)) {
        return ck;
    }
    rt_ckpt_close(ck);
    return NULL;
}

static bool pread_all(int fd, void *dst, uint64_t n, uint64_t off) {
    char *p = dst;
    while (n) {
        ssize_t r = pread(fd, p, n > (1u << 30) ? (1u << 30) : (size_t)n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return false;
        if (r == 0) return errno = 0, false;
        p += r, n -= (uint64_t)r, off += (uint64_t)r;
    }
    return true;
}

RtCkpt *rt_ckpt_open(const char *path, char err[RT_CKPT_ERR_LEN]) {
    char eb[128];
    if (!path) return failf(err, "no checkpoint file name"), NULL;
    RtCkpt *ck = ckpt_new(path, err);
    if (!ck) return NULL;
    // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
    ck->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    unsigned char len[8];
    unsigned char *h = NULL;
    if (ck->fd < 0) {
        failf(err, "%s: cannot open the checkpoint: %s", path, errstr(errno, eb, sizeof eb));
    } else if (fstat(ck->fd, &st) != 0) {
        failf(err, "%s: cannot read the checkpoint: %s", path, errstr(errno, eb, sizeof eb));
    } else if (!S_ISREG(st.st_mode)) {
        failf(err, "%s: not a regular file", path);
    } else if (st.st_size < 8) {
        failf(err, "%s: not a safetensors file: %lld bytes, too short for the 8-byte header length", path,
              (long long)st.st_size);
    } else if (!pread_all(ck->fd, len, 8, 0)) {
        failf(err, "%s: cannot read the header length: %s", path, errno ? errstr(errno, eb, sizeof eb) : "end of file");
    } else if (check_length(ck, len, (uint64_t)st.st_size, err)) {
        size_t n = (size_t)(ck->data_start - 8);
        if (!(h = malloc(n ? n : 1))) {
            failf(err, "%s: out of memory for a header of %zu bytes", path, n);
        } else if (!pread_all(ck->fd, h, n, 8)) {
            failf(err, "%s: cannot read the header: %s", path, errno ? errstr(errno, eb, sizeof eb) : "end of file");
        } else if (parse_header(ck, h, n, err)) {
            free(h);
            return ck;
        }
    }
    free(h);
    rt_ckpt_close(ck);
    return NULL;
}

size_t rt_ckpt_count(const RtCkpt *ck) { return ck->ntensors; }

const RtCkptInfo *rt_ckpt_tensor(const RtCkpt *ck, size_t i) {
    return i < ck->ntensors ? &ck->tensors[i] : NULL;
}

const RtCkptInfo *rt_ckpt_find(const RtCkpt *ck, const char *name) {
    size_t lo = 0, hi = ck->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const RtCkptInfo *t = ck->by_name[mid];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

size_t rt_ckpt_meta_count(const RtCkpt *ck) { return ck->nmeta; }

const RtCkptMeta *rt_ckpt_meta(const RtCkpt *ck, size_t i) { return i < ck->nmeta ? &ck->meta[i] : NULL; }

const char *rt_ckpt_meta_get(const RtCkpt *ck, const char *key) {
    for (size_t i = 0; i < ck->nmeta; i++)
        if (strcmp(ck->meta[i].key, key) == 0) return ck->meta[i].value;
    return NULL;
}

uint64_t rt_ckpt_header_size(const RtCkpt *ck) { return ck->data_start - 8; }
uint64_t rt_ckpt_data_size(const RtCkpt *ck) { return ck->data_size; }

bool rt_ckpt_read(const RtCkpt *ck, const RtCkptInfo *t, void *dst, char err[RT_CKPT_ERR_LEN]) {
    char eb[128];
    Shown a;
    if (!t || t < ck->tensors || t >= ck->tensors + ck->ntensors)
        return failf(err, "%s: no such tensor in this checkpoint", ck->label);
    if (t->nbytes == 0) return true;
    if (!dst) return failf(err, "%s: tensor %s: no buffer to read into", ck->label, shownz(a, t->name));
    if (ck->fd < 0) {
        memcpy(dst, ck->mem + ck->data_start + t->begin, t->nbytes);
        return true;
    }
    if (!pread_all(ck->fd, dst, t->nbytes, ck->data_start + t->begin))
        return failf(err, "%s: tensor %s: cannot read its data: %s", ck->label, shownz(a, t->name),
                     errno ? errstr(errno, eb, sizeof eb) : "the file became shorter since it was opened");
    return true;
}

static bool same_shape(const RtCkptInfo *f, const RtCkptTensor *m) {
    if (f->dtype != m->dtype || f->ndim != m->ndim) return false;
    for (int i = 0; i < f->ndim; i++)
        if (f->shape[i] != m->shape[i]) return false;
    return true;
}

enum { LISTED = 5 };   // names listed per kind of mismatch

bool rt_ckpt_load(const RtCkpt *ck, const RtCkptTensor *model, size_t n, unsigned flags,
                  char err[RT_CKPT_ERR_LEN]) {
    Buf what = {0};
    buf_str(&what, ck->label);
    buf_str(&what, ": cannot load into the model");
    if (what.oom) return failf(err, "%s: out of memory", ck->label);
    if (n && !model) {
        free(what.p);
        return failf(err, "%s: cannot load: no tensor table", ck->label);
    }
    bool ok = check_table(what.p, model, n, err);
    free(what.p);
    if (!ok) return false;

    const RtCkptInfo **found = calloc(n ? n : 1, sizeof *found);
    const char **names = malloc((n ? n : 1) * sizeof *names);
    if (!found || !names) {
        free(found), free(names);
        return failf(err, "%s: out of memory", ck->label);
    }
    size_t missing = 0, unexpected = 0, mismatched = 0;
    for (size_t i = 0; i < n; i++) {
        names[i] = model[i].name;
        found[i] = rt_ckpt_find(ck, model[i].name);
        if (!found[i]) missing++;
        else if (!same_shape(found[i], &model[i])) mismatched++;
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < ck->ntensors; i++)
        if (!bsearch(&ck->tensors[i].name, names, n, sizeof *names, cmp_str)) unexpected++;

    bool fail_missing = missing && !(flags & RT_CKPT_ALLOW_MISSING);
    bool fail_unexpected = unexpected && !(flags & RT_CKPT_ALLOW_UNEXPECTED);
    if (fail_missing || fail_unexpected || mismatched) {
        Msg m = {err, 0};
        Shown a;
        char s1[160], s2[160];
        msg(&m, "%s does not match the model:", ck->label);
        const char *sep = " ";
        if (fail_missing) {
            msg(&m, "%s%zu missing (", sep, missing);
            for (size_t i = 0, k = 0; i < n && k < LISTED; i++)
                if (!found[i]) msg(&m, "%s%s", k++ ? ", " : "", shownz(a, model[i].name));
            msg(&m, "%s)", missing > LISTED ? ", ..." : "");
            sep = "; ";
        }
        if (fail_unexpected) {
            msg(&m, "%s%zu unexpected (", sep, unexpected);
            for (size_t i = 0, k = 0; i < ck->ntensors && k < LISTED; i++)
                if (!bsearch(&ck->tensors[i].name, names, n, sizeof *names, cmp_str))
                    msg(&m, "%s%s", k++ ? ", " : "", shownz(a, ck->tensors[i].name));
            msg(&m, "%s)", unexpected > LISTED ? ", ..." : "");
            sep = "; ";
        }
        if (mismatched) {
            msg(&m, "%s%zu of another shape or dtype (", sep, mismatched);
            for (size_t i = 0, k = 0; i < n && k < LISTED; i++)
                if (found[i] && !same_shape(found[i], &model[i])) {
                    rt_ckpt_shape_str(found[i]->dtype, found[i]->ndim, found[i]->shape, s1, sizeof s1);
                    rt_ckpt_shape_str(model[i].dtype, model[i].ndim, model[i].shape, s2, sizeof s2);
                    msg(&m, "%s%s is %s in the file, %s in the model", k++ ? ", " : "", shownz(a, model[i].name), s1,
                        s2);
                }
            msg(&m, "%s)", mismatched > LISTED ? ", ..." : "");
        }
        free(found), free(names);
        return false;
    }
    ok = true;
    for (size_t i = 0; ok && i < n; i++)
        if (found[i]) ok = rt_ckpt_read(ck, found[i], model[i].data, err);
    free(found), free(names);
    return ok;
}
