// data.c — data sets: IDX, CSV and raw-array sources, subsets, random splits.
//
// A data set is N samples, each a tensor of a fixed shape (u8 or f32) and an
// optional i64 label. Sources read the whole file into one buffer at open:
// Fashion-MNIST is 47 MB, and a loader then never touches the disk. Subsets
// and splits are views: they share the storage (reference-counted) and keep
// a list of indices into it.
//
// Every file is read through one small reader that tells gzip from raw bytes
// by the gzip magic (1f 8b), so any source may be gzip'd. Every length the
// file announces is checked against the bytes it really holds before use, and
// every problem ends in one message "FILE: problem" handed to the caller.
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ir.h"   // philox_block
#include "rt.h"

void *rt_data_error(char **err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(err, fmt, ap) < 0) *err = NULL;
        va_end(ap);
    }
    return NULL;
}

size_t rt_data_dtype_size(RtDataDtype t) {
    switch (t) {
    case RT_DATA_U8: return 1;
    case RT_DATA_F32: case RT_DATA_I32: return 4;
    case RT_DATA_I64: return 8;
    }
    return 0;
}

const char *rt_data_dtype_name(RtDataDtype t) {
    switch (t) {
    case RT_DATA_U8: return "u8";
    case RT_DATA_F32: return "f32";
    case RT_DATA_I32: return "i32";
    case RT_DATA_I64: return "i64";
    }
    return "?";
}

// ---- Storage and views -------------------------------------------------

typedef struct {
    _Atomic int refs;
    char *name;                       // the file(s) it came from
    RtDataDtype dtype;                // of x: U8 or F32
    int ndim;
    int64_t shape[RT_DATA_MAX_DIMS];  // one sample
    int64_t numel;                    // elements per sample
    int64_t n;
    void *x;                          // n * numel elements
    int64_t *y;                       // n labels, or NULL
    int64_t num_classes;              // given, or max label + 1; 0 without labels
} Store;

struct RtDataset {
    Store *st;
    int64_t n;
    int64_t *index;   // n indices into st; NULL: the identity
};

static void store_release(Store *st) {
    if (st && atomic_fetch_sub(&st->refs, 1) == 1) {
        free(st->name);
        free(st->x);
        free(st->y);
        free(st);
    }
}

// A shape is valid when it has 1..RT_DATA_MAX_DIMS positive dimensions whose
// product fits; returns the product, or -1.
static int64_t shape_numel(int ndim, const int64_t *shape) {
    if (ndim < 1 || ndim > RT_DATA_MAX_DIMS || !shape) return -1;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1 || __builtin_mul_overflow(numel, shape[i], &numel) || numel > (INT64_C(1) << 40))
            return -1;
    return numel;
}

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, "]");
}

// A store of n samples; x and y (when labels) allocated, not initialised.
static Store *store_new(const char *name, RtDataDtype dtype, int64_t n, int ndim, const int64_t *shape,
                        bool labels, char **err) {
    int64_t numel = shape_numel(ndim, shape);
    size_t bytes;
    if (numel < 0) return rt_data_error(err, "%s: invalid sample shape", name);
    if (n < 0 || __builtin_mul_overflow((size_t)numel * rt_data_dtype_size(dtype), (size_t)n, &bytes))
        return rt_data_error(err, "%s: too many samples", name);
    Store *st = calloc(1, sizeof *st);
    if (!st) return rt_data_error(err, "%s: out of memory", name);
    atomic_init(&st->refs, 1);
    st->name = strdup(name);
    st->dtype = dtype;
    st->ndim = ndim;
    memcpy(st->shape, shape, (size_t)ndim * sizeof *shape);
    st->numel = numel;
    st->n = n;
    st->x = malloc(bytes ? bytes : 1);
    st->y = labels ? malloc(n ? (size_t)n * sizeof(int64_t) : 1) : NULL;
    if (!st->name || !st->x || (labels && !st->y)) {
        store_release(st);
        return rt_data_error(err, "%s: out of memory (%zu bytes)", name, bytes);
    }
    return st;
}

// Wraps a store (taking its reference) in a data set over all its samples.
static RtDataset *dataset_of(Store *st, char **err) {
    RtDataset *ds = malloc(sizeof *ds);
    if (!ds) {
        store_release(st);
        return rt_data_error(err, "out of memory");
    }
    ds->st = st;
    ds->n = st->n;
    ds->index = NULL;
    return ds;
}

// Labels in [0, num_classes) when num_classes > 0; num_classes becomes max + 1 otherwise.
static bool check_labels(Store *st, int64_t num_classes, const char *file, char **err) {
    if (!st->y) return true;
    int64_t maxl = -1;
    for (int64_t i = 0; i < st->n; i++) {
        int64_t l = st->y[i];
        if (num_classes > 0 && (l < 0 || l >= num_classes))
            return rt_data_error(err, "%s: label %lld of sample %lld is out of range [0, %lld)", file, (long long)l,
                        (long long)i, (long long)num_classes),
                   false;
        if (l > maxl) maxl = l;
    }
    st->num_classes = num_classes > 0 ? num_classes : maxl + 1;
    return true;
}

void rt_data_free(RtDataset *ds) {
    if (!ds) return;
    store_release(ds->st);
    free(ds->index);
    free(ds);
}

static inline int64_t src_index(const RtDataset *ds, int64_t i) { return ds->index ? ds->index[i] : i; }

int64_t rt_data_len(const RtDataset *ds) { return ds->n; }
RtDataDtype rt_data_dtype(const RtDataset *ds) { return ds->st->dtype; }
int64_t rt_data_sample_numel(const RtDataset *ds) { return ds->st->numel; }
bool rt_data_has_labels(const RtDataset *ds) { return ds->st->y != NULL; }
int64_t rt_data_num_classes(const RtDataset *ds) { return ds->st->num_classes; }

int rt_data_check_labels(RtDataset *ds, int64_t num_classes, const char *file, char **err) {
    return check_labels(ds->st, num_classes, file, err) ? 0 : -1;
}
const char *rt_data_name(const RtDataset *ds) { return ds->st->name; }
int64_t rt_data_source_index(const RtDataset *ds, int64_t i) { return src_index(ds, i); }

int rt_data_sample_shape(const RtDataset *ds, int64_t shape[RT_DATA_MAX_DIMS]) {
    memcpy(shape, ds->st->shape, (size_t)ds->st->ndim * sizeof *shape);
    return ds->st->ndim;
}

const void *rt_data_sample(const RtDataset *ds, int64_t i) {
    const Store *st = ds->st;
    return (const char *)st->x + (size_t)src_index(ds, i) * (size_t)st->numel * rt_data_dtype_size(st->dtype);
}

int64_t rt_data_label(const RtDataset *ds, int64_t i) {
    return ds->st->y ? ds->st->y[src_index(ds, i)] : -1;
}

RtDataset *rt_data_from_memory(RtDataDtype dtype, int64_t n, int ndim, const int64_t *shape, const void *x,
                               const int64_t *y, int64_t num_classes, char **err) {
    if (dtype != RT_DATA_U8 && dtype != RT_DATA_F32)
        return rt_data_error(err, "memory: samples must be u8 or f32, not %s", rt_data_dtype_name(dtype));
    Store *st = store_new("memory", dtype, n, ndim, shape, y != NULL, err);
    if (!st) return NULL;
    memcpy(st->x, x, (size_t)n * (size_t)st->numel * rt_data_dtype_size(dtype));
    if (y) memcpy(st->y, y, (size_t)n * sizeof *y);
    if (!check_labels(st, num_classes, "memory", err)) {
        store_release(st);
        return NULL;
    }
    return dataset_of(st, err);
}

RtDataset *rt_data_clone(const RtDataset *ds, char **err) { return rt_data_subset(ds, NULL, ds->n, err); }

RtDataset *rt_data_subset(const RtDataset *ds, const int64_t *indices, int64_t n, char **err) {
    if (n < 0 || (!indices && n > ds->n))
        return rt_data_error(err, "%s: subset of %lld samples from %lld", ds->st->name, (long long)n, (long long)ds->n);
    for (int64_t i = 0; indices && i < n; i++)
        if (indices[i] < 0 || indices[i] >= ds->n)
            return rt_data_error(err, "%s: subset index %lld is out of range [0, %lld)", ds->st->name,
                        (long long)indices[i], (long long)ds->n);
    RtDataset *out = malloc(sizeof *out);
    int64_t *index = (ds->index || indices) ? malloc(n ? (size_t)n * sizeof *index : 1) : NULL;
    if (!out || ((ds->index || indices) && !index)) {
        free(out);
        free(index);
        return rt_data_error(err, "%s: out of memory", ds->st->name);
    }
    for (int64_t i = 0; index && i < n; i++) index[i] = src_index(ds, indices ? indices[i] : i);
    atomic_fetch_add(&ds->st->refs, 1);
    out->st = ds->st;
    out->n = n;
    out->index = index;
    return out;
}

// ---- Random permutations and splits ------------------------------------

// Fisher-Yates, one Philox draw per position: the swap partner of position i
// is 64 random bits of block (seed, stream, i) scaled to [0, i] (Lemire's
// multiply-shift; the bias is below n / 2^64).
void rt_data_permutation(int64_t n, uint64_t seed, uint64_t stream, int64_t *perm) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t w[4];
        philox_block(seed, stream, (uint64_t)i, w);
        uint64_t r = (uint64_t)w[0] << 32 | w[1];
        int64_t j = (int64_t)(((unsigned __int128)r * (uint64_t)(i + 1)) >> 64);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

// torch.utils.data.random_split: fractions (each in [0, 1], summing to 1)
// become floor(f * n), the remainder given one by one to the parts in order;
// otherwise the sizes are counts that must sum to n. One permutation of the
// data set is cut into consecutive parts.
int rt_data_split(const RtDataset *ds, int k, const double *sizes, uint64_t seed, RtDataset **out, char **err) {
    const char *name = ds->st->name;
    if (k < 1) return rt_data_error(err, "%s: split into %d parts", name, k), -1;
    int64_t *len = calloc((size_t)k, sizeof *len);
    if (!len) return rt_data_error(err, "out of memory"), -1;
    double sum = 0;
    bool fractions = true;
    for (int i = 0; i < k; i++) {
        if (!(sizes[i] >= 0) || !isfinite(sizes[i])) {
            free(len);
            return rt_data_error(err, "%s: split size %g is negative or not a number", name, sizes[i]), -1;
        }
        sum += sizes[i];
        if (sizes[i] > 1) fractions = false;
    }
    if (fractions && fabs(sum - 1) <= 1e-9 && sum <= 1 + 1e-12) {
        int64_t total = 0;
        for (int i = 0; i < k; i++) total += len[i] = (int64_t)floor((double)ds->n * sizes[i]);
        for (int64_t r = 0; r < ds->n - total; r++) len[r % k]++;
    } else {
        int64_t total = 0;
        for (int i = 0; i < k; i++) {
            if (sizes[i] != floor(sizes[i]) || sizes[i] > 9e18) {
                free(len);
                return rt_data_error(err, "%s: split sizes must be counts or fractions summing to 1, not %g", name,
                            sizes[i]), -1;
            }
            total += len[i] = (int64_t)sizes[i];
        }
        if (total != ds->n) {
            free(len);
            return rt_data_error(err, "%s: split sizes sum to %lld but the data set has %lld samples", name,
                        (long long)total, (long long)ds->n), -1;
        }
    }
    int64_t *perm = malloc(ds->n ? (size_t)ds->n * sizeof *perm : 1);
    if (!perm) {
        free(len);
        return rt_data_error(err, "out of memory"), -1;
    }
    rt_data_permutation(ds->n, seed, RT_DATA_STREAM_SPLIT, perm);
    int64_t at = 0;
    for (int i = 0; i < k; i++) {
        out[i] = rt_data_subset(ds, perm + at, len[i], err);
        if (!out[i]) {
            while (i-- > 0) rt_data_free(out[i]), out[i] = NULL;
            free(perm);
            free(len);
            return -1;
        }
        at += len[i];
    }
    free(perm);
    free(len);
    return 0;
}

// ---- Reading files: gzip or raw ----------------------------------------

typedef struct {
    const char *path;
    int fd;
    gzFile gz;      // NULL: a raw file read with read(2)
    int64_t size;   // raw: the file's size
} Reader;

static bool rd_open(Reader *r, const char *path, char **err) {
    *r = (Reader){.path = path, .fd = -1};
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) return rt_data_error(err, "%s: cannot open: %s", path, strerror(errno)), false;
    struct stat sb;
    if (fstat(r->fd, &sb) != 0 || S_ISDIR(sb.st_mode)) {
        int e = S_ISDIR(sb.st_mode) ? EISDIR : errno;
        close(r->fd);
        return rt_data_error(err, "%s: cannot read: %s", path, strerror(e)), false;
    }
    r->size = (int64_t)sb.st_size;
    unsigned char magic[2];
    if (pread(r->fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        r->gz = gzdopen(r->fd, "rb");   // owns fd from here
        if (!r->gz) {
            close(r->fd);
            return rt_data_error(err, "%s: cannot open the gzip stream", path), false;
        }
        gzbuffer(r->gz, 1 << 17);
    }
    return true;
}

static void rd_close(Reader *r) {
    if (r->gz) gzclose(r->gz);
    else if (r->fd >= 0) close(r->fd);
    r->gz = NULL;
    r->fd = -1;
}

// Reads up to n bytes; returns how many (fewer only at the end), or -1.
static int64_t rd_read(Reader *r, void *buf, int64_t n, char **err) {
    int64_t got = 0;
    while (got < n) {
        int64_t want = n - got < (1 << 30) ? n - got : (1 << 30);
        int64_t k;
        if (r->gz) {
            k = gzread(r->gz, (char *)buf + got, (unsigned)want);
            int code = Z_OK;
            if (k < want) gzerror(r->gz, &code);   // a cut stream reads as a short read, not -1
            if (k < 0 || code != Z_OK) {
                const char *msg = gzerror(r->gz, &code);
                if (strncmp(msg, "<fd:", 4) == 0 && strstr(msg, ": ")) msg = strstr(msg, ": ") + 2;
                return rt_data_error(err, "%s: bad gzip stream (%s)", r->path,
                            code == Z_ERRNO ? strerror(errno) : msg), -1;
            }
        } else {
            k = read(r->fd, (char *)buf + got, (size_t)want);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) return rt_data_error(err, "%s: read error: %s", r->path, strerror(errno)), -1;
        }
        if (k == 0) break;
        got += k;
    }
    return got;
}

// Reads `want` bytes into a buffer that grows with what is really there (a
// header cannot make us allocate more than the file holds), then counts the
// bytes left over. *got < want: truncated; *extra > 0: trailing bytes.
static void *rd_exact(Reader *r, int64_t want, int64_t *got, int64_t *extra, char **err) {
    *got = *extra = 0;
    int64_t cap = want < (1 << 20) ? want : (1 << 20);
    if (!r->gz) cap = want;   // raw: the caller has checked the file size
    char *buf = malloc(cap ? (size_t)cap : 1);
    if (!buf) return rt_data_error(err, "%s: out of memory (%lld bytes)", r->path, (long long)cap);
    while (*got < want) {
        if (*got == cap) {
            int64_t ncap = cap * 2 < want ? cap * 2 : want;
            char *nb = realloc(buf, (size_t)ncap);
            if (!nb) {
                free(buf);
                return rt_data_error(err, "%s: out of memory (%lld bytes)", r->path, (long long)ncap);
            }
            buf = nb;
            cap = ncap;
        }
        int64_t k = rd_read(r, buf + *got, cap - *got, err);
        if (k < 0) {
            free(buf);
            return NULL;
        }
        if (k == 0) break;
        *got += k;
    }
    char tail[1 << 14];
    for (int64_t k; (k = rd_read(r, tail, sizeof tail, err)) != 0; *extra += k)
        if (k < 0) {
            free(buf);
            return NULL;
        }
    return buf;
}

// The whole file, for text formats; a NUL is appended.
static char *rd_all(Reader *r, int64_t *len, char **err) {
    int64_t cap = 1 << 16, n = 0;
    char *buf = malloc((size_t)cap);
    if (!buf) return rt_data_error(err, "%s: out of memory", r->path);
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = cap < (INT64_C(1) << 36) ? realloc(buf, (size_t)cap * 2) : NULL;
            if (!nb) {
                free(buf);
                return rt_data_error(err, "%s: out of memory (file over %lld bytes)", r->path, (long long)cap);
            }
            buf = nb;
            cap *= 2;
        }
        int64_t k = rd_read(r, buf + n, cap - 1 - n, err);
        if (k < 0) {
            free(buf);
            return NULL;
        }
        if (k == 0) break;
        n += k;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

// ---- IDX (the MNIST format) --------------------------------------------
//
// Big-endian header: magic 00 00 TYPE NDIM, then NDIM u32 dimensions, then
// the data, row-major. TYPE 0x08 is u8. Images are 0x00000803 ([N, H, W]);
// [N, D] (0x802) and [N, C, H, W] (0x804) are accepted too. Labels are
// 0x00000801 ([N]).

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Reads one IDX file: dims[0..*ndim) and the data (malloc'd, dims product bytes).
static unsigned char *idx_read(const char *path, bool labels, int64_t dims[4], int *ndim, char **err) {
    Reader r;
    if (!rd_open(&r, path, err)) return NULL;
    unsigned char head[4 + 4 * 4];
    int64_t k = rd_read(&r, head, 4, err);
    unsigned char *data = NULL;
    if (k < 0) goto out;
    if (k < 4) {
        rt_data_error(err, "%s: too short for an IDX file (%lld bytes)", path, (long long)k);
        goto out;
    }
    uint32_t magic = be32(head);
    int nd = (int)(magic & 0xff);
    bool ok = labels ? magic == 0x801 : (magic & 0xffffff00) == 0x800 && nd >= 2 && nd <= 4;
    if (!ok) {
        rt_data_error(err, "%s: bad magic 0x%08x (expected 0x%08x: IDX u8 %s)", path, magic, labels ? 0x801 : 0x803,
             labels ? "labels" : "images");
        goto out;
    }
    k = rd_read(&r, head + 4, 4 * nd, err);
    if (k < 0) goto out;
    if (k < 4 * nd) {
        rt_data_error(err, "%s: truncated header (%d dimensions announced, file ends after %lld bytes)", path, nd,
             (long long)(4 + k));
        goto out;
    }
    int64_t total = 1;
    for (int i = 0; i < nd; i++) {
        dims[i] = be32(head + 4 + 4 * i);
        if (dims[i] == 0) {
            rt_data_error(err, "%s: dimension %d is 0 (an empty data set)", path, i);
            goto out;
        }
        if (__builtin_mul_overflow(total, dims[i], &total) || total > (INT64_C(1) << 40)) {
            rt_data_error(err, "%s: the header announces more than 2^40 bytes", path);
            goto out;
        }
    }
    char what[96];
    if (labels) snprintf(what, sizeof what, "%lld labels", (long long)dims[0]);
    else if (nd == 2) snprintf(what, sizeof what, "%lld samples of %lld", (long long)dims[0], (long long)dims[1]);
    else
        snprintf(what, sizeof what, "%lld images of %lldx%lld%s", (long long)dims[0], (long long)dims[nd - 2],
                 (long long)dims[nd - 1], nd == 4 ? " (with channels)" : "");
    int64_t have = 0, extra = 0, head_len = 4 + 4 * nd;
    if (!r.gz) {   // raw: the size is known before reading anything
        have = r.size - head_len;
        if (have < total) {
            rt_data_error(err, "%s: truncated: the header announces %s (%lld bytes of data) but the file holds %lld",
                 path, what, (long long)total, (long long)have);
            goto out;
        }
        if (have > total) {
            rt_data_error(err, "%s: %lld trailing bytes after the %lld bytes of data the header announces (%s)", path,
                 (long long)(have - total), (long long)total, what);
            goto out;
        }
    }
    data = rd_exact(&r, total, &have, &extra, err);
    if (!data) goto out;
    if (have < total) {
        rt_data_error(err, "%s: truncated: the header announces %s (%lld bytes of data) but the file holds %lld", path,
             what, (long long)total, (long long)have);
        goto bad;
    }
    if (extra > 0) {
        rt_data_error(err, "%s: %lld trailing bytes after the %lld bytes of data the header announces (%s)", path,
             (long long)extra, (long long)total, what);
        goto bad;
    }
    *ndim = nd;
    goto out;
bad:
    free(data);
    data = NULL;
out:
    rd_close(&r);
    return data;
}

RtDataset *rt_data_idx(const char *images, const char *labels, int64_t num_classes, char **err) {
    int64_t idims[4], ldims[4];
    int ind, lnd;
    unsigned char *px = idx_read(images, false, idims, &ind, err);
    if (!px) return NULL;
    unsigned char *lb = NULL;
    if (labels) {
        lb = idx_read(labels, true, ldims, &lnd, err);
        if (!lb) {
            free(px);
            return NULL;
        }
        if (ldims[0] != idims[0]) {
            free(px);
            free(lb);
            return rt_data_error(err, "%s: %lld labels, but %s holds %lld images", labels, (long long)ldims[0], images,
                        (long long)idims[0]);
        }
    }
    // [N, H, W] -> samples [1, H, W]: one channel, as models expect x: f32[B, 1, H, W]
    int64_t shape[3];
    int ndim = 0;
    if (ind == 3) shape[ndim++] = 1;
    for (int i = 1; i < ind; i++) shape[ndim++] = idims[i];
    Store *st = calloc(1, sizeof *st);
    char *name = strdup(images);
    if (!st || !name) {
        free(st), free(name), free(px), free(lb);
        return rt_data_error(err, "%s: out of memory", images);
    }
    atomic_init(&st->refs, 1);
    st->name = name;
    st->dtype = RT_DATA_U8;
    st->ndim = ndim;
    memcpy(st->shape, shape, sizeof shape);
    st->numel = shape_numel(ndim, shape);
    st->n = idims[0];
    st->x = px;   // taken over: no copy
    if (lb) {
        st->y = malloc((size_t)st->n * sizeof *st->y);
        if (!st->y) {
            free(lb);
            store_release(st);
            return rt_data_error(err, "%s: out of memory", labels);
        }
        for (int64_t i = 0; i < st->n; i++) st->y[i] = lb[i];
        free(lb);
    }
    if (!check_labels(st, num_classes, labels ? labels : images, err)) {
        store_release(st);
        return NULL;
    }
    return dataset_of(st, err);
}

// ---- Raw arrays ----------------------------------------------------------

// Reads a whole raw (or gzip'd) file of exactly `want` bytes; want < 0: any
// multiple of `unit` bytes (at least one), the count to *n_units.
static void *raw_read(const char *path, int64_t want, int64_t unit, const char *what, int64_t *n_units,
                      char **err) {
    Reader r;
    if (!rd_open(&r, path, err)) return NULL;
    int64_t len = 0;
    char *buf;
    if (want >= 0) {
        int64_t extra;
        if (!r.gz && r.size != want) {
            rt_data_error(err, "%s: holds %lld bytes but %s need %lld", path, (long long)r.size, what, (long long)want);
            rd_close(&r);
            return NULL;
        }
        buf = rd_exact(&r, want, &len, &extra, err);
        if (buf && (len != want || extra)) {
            rt_data_error(err, "%s: holds %lld bytes but %s need %lld", path, (long long)(len + extra), what,
                 (long long)want);
            free(buf);
            buf = NULL;
        }
    } else {
        buf = rd_all(&r, &len, err);
        if (buf && (len == 0 || len % unit)) {
            rt_data_error(err, "%s: holds %lld bytes, not a positive multiple of %lld (the bytes of %s)", path,
                 (long long)len, (long long)unit, what);
            free(buf);
            buf = NULL;
        }
        if (buf) *n_units = len / unit;
    }
    rd_close(&r);
    return buf;
}

RtDataset *rt_data_raw(const char *x_path, RtDataDtype x_dtype, int64_t n, int ndim, const int64_t *shape,
                       const char *y_path, RtDataDtype y_dtype, int64_t num_classes, char **err) {
    if (x_dtype != RT_DATA_U8 && x_dtype != RT_DATA_F32)
        return rt_data_error(err, "%s: samples must be u8 or f32, not %s", x_path, rt_data_dtype_name(x_dtype));
    if (y_path && y_dtype == RT_DATA_F32)
        return rt_data_error(err, "%s: labels must be u8, i32 or i64, not f32", y_path);
    int64_t numel = shape_numel(ndim, shape);
    if (numel < 0) return rt_data_error(err, "%s: invalid sample shape", x_path);
    char sh[160], what[200];
    shape_str(sh, sizeof sh, ndim, shape);
    int64_t sample_bytes = numel * (int64_t)rt_data_dtype_size(x_dtype), want = -1;
    if (n >= 0 && __builtin_mul_overflow(n, sample_bytes, &want))
        return rt_data_error(err, "%s: too many samples", x_path);
    if (n >= 0) snprintf(what, sizeof what, "%lld samples of %s %s", (long long)n, rt_data_dtype_name(x_dtype), sh);
    else snprintf(what, sizeof what, "one sample of %s %s", rt_data_dtype_name(x_dtype), sh);
    void *x = raw_read(x_path, want, sample_bytes, what, &n, err);
    if (!x) return NULL;
    void *y = NULL;
    if (y_path) {
        snprintf(what, sizeof what, "%lld %s labels", (long long)n, rt_data_dtype_name(y_dtype));
        y = raw_read(y_path, n * (int64_t)rt_data_dtype_size(y_dtype), 1, what, NULL, err);
        if (!y) {
            free(x);
            return NULL;
        }
    }
    Store *st = store_new(x_path, x_dtype, 0, ndim, shape, false, err);
    if (!st) {
        free(x), free(y);
        return NULL;
    }
    free(st->x);
    st->x = x;
    st->n = n;
    if (y) {
        st->y = malloc((size_t)n * sizeof *st->y);
        if (!st->y) {
            free(y);
            store_release(st);
            return rt_data_error(err, "%s: out of memory", y_path);
        }
        for (int64_t i = 0; i < n; i++) {
            switch (y_dtype) {
            case RT_DATA_U8: st->y[i] = ((unsigned char *)y)[i]; break;
            case RT_DATA_I32: { int32_t v; memcpy(&v, (char *)y + 4 * i, 4); st->y[i] = v; } break;
            default: memcpy(&st->y[i], (char *)y + 8 * i, 8); break;
            }
        }
        free(y);
    }
    if (!check_labels(st, num_classes, y_path ? y_path : x_path, err)) {
        store_release(st);
        return NULL;
    }
    return dataset_of(st, err);
}

// ---- CSV -----------------------------------------------------------------
//
// Numeric columns separated by `delim`, one sample a line; blank lines are
// skipped, "\r\n" line ends accepted, spaces around a field ignored. Numbers
// are read with strtod in the "C" locale (whatever the program's locale) and
// must be finite; a label must be an integer.

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

typedef struct {
    char *s;    // NUL-terminated, trimmed
    int col;    // 1-based byte column of its first character
} Field;

// Splits line (modified in place) into at most max fields; returns the count (may exceed max).
static int split_fields(char *line, char delim, Field *f, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        char *end = strchr(p, delim);
        if (end) *end = 0;
        char *s = p, *e = p + strlen(p);
        while (*s == ' ' || *s == '\t') s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
        if (n < max) f[n] = (Field){s, (int)(s - line) + 1};
        n++;
        if (!end) return n;
        p = end + 1;
    }
}

static void unquote(Field *f) {
    size_t len = strlen(f->s);
    if (len >= 2 && f->s[0] == '"' && f->s[len - 1] == '"') {
        f->s[len - 1] = 0;
        f->s++;
    }
}

RtDataset *rt_data_csv(const char *path, const RtCsvOptions *opt, char **err) {
    RtCsvOptions o = opt ? *opt : (RtCsvOptions){.label_col = -1};
    char delim = o.delim ? o.delim : ',';
    if (o.label_name && !o.header) return rt_data_error(err, "%s: a label column by name needs a header line", path);
    pthread_once(&c_locale_once, c_locale_init);
    if (!c_locale) return rt_data_error(err, "%s: cannot create the C locale", path);
    Reader r;
    if (!rd_open(&r, path, err)) return NULL;
    int64_t len;
    char *text = rd_all(&r, &len, err);
    rd_close(&r);
    if (!text) return NULL;
    if ((int64_t)strlen(text) != len) {
        int64_t at = (int64_t)strlen(text), line = 1;
        for (int64_t i = 0; i < at; i++) line += text[i] == '\n';
        free(text);
        return rt_data_error(err, "%s:%lld: a NUL byte: not a text file", path, (long long)line);
    }
    // Lines: count the non-blank ones, and find the widest (fields are at most its length + 1).
    int64_t rows = 0, widest = 0;
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        int64_t l = nl ? nl - p : (int64_t)strlen(p);
        bool blank = true;
        for (int64_t i = 0; i < l && blank; i++) blank = p[i] == ' ' || p[i] == '\t' || p[i] == '\r';
        rows += !blank;
        if (l > widest) widest = l;
        p += l + (nl != NULL);
    }
    if (widest > (1 << 30)) {
        free(text);
        return rt_data_error(err, "%s: a line of more than 2^30 bytes", path);
    }
    Field *f = malloc((size_t)(widest + 2) * sizeof *f);
    Store *st = NULL;
    RtDataset *ds = NULL;
    int ncols = -1, label = -1;
    int64_t row = 0, lineno = 0;
    if (!f) {
        rt_data_error(err, "%s: out of memory", path);
        goto out;
    }
    if (o.header) rows--;
    for (char *p = text; *p;) {
        char *line = p, *nl = strchr(p, '\n');
        lineno++;
        if (nl) *nl = 0;
        p = nl ? nl + 1 : p + strlen(p);
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[--l] = 0;
        if (strspn(line, " \t\r") == l) continue;   // blank, as counted above
        int nf = split_fields(line, delim, f, (int)widest + 2);
        if (ncols < 0) {   // the first line fixes the columns
            ncols = nf;
            if (o.label_name) {
                for (int i = 0; i < nf; i++) {
                    unquote(&f[i]);
                    if (strcmp(f[i].s, o.label_name) == 0) label = i;
                }
                if (label < 0) {
                    rt_data_error(err, "%s:%lld: no column named '%s' in the header", path, (long long)lineno, o.label_name);
                    goto out;
                }
            } else if (o.label_col >= 0) {
                if (o.label_col >= nf) {
                    rt_data_error(err, "%s:%lld: label column %lld does not exist (the rows have %d columns)", path,
                         (long long)lineno, (long long)o.label_col, nf);
                    goto out;
                }
                label = (int)o.label_col;
            }
            int64_t nx = nf - (label >= 0);
            int64_t shape1[1] = {nx};
            int sndim = o.sample_ndim ? o.sample_ndim : 1;
            const int64_t *shape = o.sample_ndim ? o.sample_shape : shape1;
            int64_t numel = shape_numel(sndim, shape);
            if (nx == 0) {
                rt_data_error(err, "%s:%lld: no sample columns besides the label", path, (long long)lineno);
                goto out;
            }
            if (numel != nx) {
                char sh[160];
                shape_str(sh, sizeof sh, sndim, shape);
                rt_data_error(err, "%s: sample shape %s does not hold the %lld values of a row", path, sh, (long long)nx);
                goto out;
            }
            if (rows < 1) {
                rt_data_error(err, "%s: no data rows", path);
                goto out;
            }
            st = store_new(path, RT_DATA_F32, rows, sndim, shape, label >= 0, err);
            if (!st) goto out;
            if (o.header) continue;
        }
        if (nf != ncols) {
            int col = nf > ncols ? f[ncols].col : (int)l + 1;
            rt_data_error(err, "%s:%lld:%d: %d fields, expected %d", path, (long long)lineno, col, nf, ncols);
            goto out;
        }
        if (row >= st->n) {   // cannot happen: the rows were counted above
            rt_data_error(err, "%s:%lld: more rows than counted", path, (long long)lineno);
            goto out;
        }
        float *x = (float *)st->x + row * st->numel;
        for (int i = 0; i < nf; i++) {
            char *end;
            if (!*f[i].s) {
                rt_data_error(err, "%s:%lld:%d: empty field", path, (long long)lineno, f[i].col);
                goto out;
            }
            errno = 0;
            double v = strtod_l(f[i].s, &end, c_locale);
            if (*end || end == f[i].s || !isfinite(v) || (errno == ERANGE && fabs(v) > 1)) {
                rt_data_error(err, "%s:%lld:%d: bad number '%.40s'", path, (long long)lineno, f[i].col, f[i].s);
                goto out;
            }
            if (i == label) {
                if (v != floor(v) || fabs(v) > 9e15) {
                    rt_data_error(err, "%s:%lld:%d: label '%.40s' is not an integer", path, (long long)lineno, f[i].col,
                         f[i].s);
                    goto out;
                }
                if (o.num_classes > 0 && (v < 0 || v >= (double)o.num_classes)) {
                    rt_data_error(err, "%s:%lld:%d: label %lld is out of range [0, %lld)", path, (long long)lineno,
                         f[i].col, (long long)v, (long long)o.num_classes);
                    goto out;
                }
                st->y[row] = (int64_t)v;
            } else {
                *x++ = (float)v;
            }
        }
        row++;
    }
    if (!st) {
        rt_data_error(err, "%s: no data rows", path);
        goto out;
    }
    if (check_labels(st, o.num_classes, path, err)) {
        ds = dataset_of(st, err);
        st = NULL;
    }
out:
    store_release(st);
    free(f);
    free(text);
    return ds;
}
