// tb.c — TensorBoard event files, the format TensorBoard's own reader loads.
//
// A file is a sequence of TFRecords:
//     u64 length (LE) | u32 masked CRC-32C of those 8 bytes | data | u32 masked CRC-32C of data
// with mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. Each record's data is an `Event`
// protobuf (tensorflow/core/util/event.proto):
//     Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//     Summary { repeated Value value = 1; }
//     Value   { string tag = 1; float simple_value = 2; SummaryMetadata metadata = 9; TensorProto tensor = 8; }
// The first event carries file_version "brain.Event:2"; scalars are simple_value; the
// hyperparameter table is a string tensor for the "text" plugin.
//
// The protobuf is encoded by hand: for three small message types a varint/length-delimited
// writer is shorter than a protobuf-c schema, its generated code and a build step. CRC-32C
// is table-driven (Debian has no CRC-32C library; zlib's crc32 is the other polynomial).
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"

// ---------------------------------------------------------------------------
// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one table lookup per byte.

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t rt_crc32c(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (n--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint32_t masked_crc(const void *data, size_t n) {
    uint32_t c = rt_crc32c(0, data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// ---------------------------------------------------------------------------
// A protobuf writer: varints, fixed 32/64-bit fields, length-delimited fields.

typedef struct { unsigned char *p; size_t len, cap; } Pb;

static void pb_raw(Pb *b, const void *data, size_t n) {
    if (n == 0) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}
static void pb_varint(Pb *b, uint64_t v) {
    unsigned char t[10];
    int n = 0;
    do {
        t[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) t[n] |= 0x80;
        n++;
    } while (v);
    pb_raw(b, t, (size_t)n);
}
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };
static void pb_key(Pb *b, int field, int wt) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wt); }
static void pb_le(Pb *b, uint64_t v, int bytes) {
    unsigned char t[8];
    for (int i = 0; i < bytes; i++) t[i] = (unsigned char)(v >> (8 * i));
    pb_raw(b, t, (size_t)bytes);
}
static void pb_double(Pb *b, int field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    pb_key(b, field, WT_I64);
    pb_le(b, u, 8);
}
static void pb_float(Pb *b, int field, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    pb_key(b, field, WT_I32);
    pb_le(b, u, 4);
}
static void pb_int(Pb *b, int field, int64_t v) {
    pb_key(b, field, WT_VARINT);
    pb_varint(b, (uint64_t)v);     // int64: negative values take ten bytes, as protobuf says
}
static void pb_bytes(Pb *b, int field, const void *data, size_t n) {
    pb_key(b, field, WT_LEN);
    pb_varint(b, n);
    pb_raw(b, data, n);
}
static void pb_str(Pb *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }
static void pb_msg(Pb *b, int field, Pb *sub) {     // appends and frees sub
    pb_bytes(b, field, sub->p, sub->len);
    free(sub->p);
    *sub = (Pb){0};
}

// ---------------------------------------------------------------------------
// The writer.

struct RtTbWriter {
    char path[PATH_MAX];
    FILE *f;
    int failed;
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int tb_record(RtTbWriter *w, const Pb *ev) {
    unsigned char head[12];
    uint64_t n = ev->len;
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)(n >> (8 * i));
    uint32_t c = masked_crc(head, 8);
    for (int i = 0; i < 4; i++) head[8 + i] = (unsigned char)(c >> (8 * i));
    uint32_t d = masked_crc(ev->p, ev->len);
    unsigned char tail[4] = {(unsigned char)d, (unsigned char)(d >> 8), (unsigned char)(d >> 16), (unsigned char)(d >> 24)};
    if (fwrite(head, 1, 12, w->f) != 12 || fwrite(ev->p, 1, ev->len, w->f) != ev->len ||
        fwrite(tail, 1, 4, w->f) != 4) {
        w->failed = 1;
        return -1;
    }
    return 0;
}

static _Atomic int file_counter;

RtTbWriter *rt_tb_open(const char *dir) {
    RtTbWriter *w = calloc(1, sizeof *w);
    if (!w) abort();
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
        if (*p == '/') *p = '_';
    int fd = -1;
    // torch.utils.tensorboard's name: events.out.tfevents.%010d.<host>.<pid>.<k>, k counting
    // the writers of this process. O_EXCL: never append to someone else's file.
    for (int tries = 0; tries < 100 && fd < 0; tries++) {
        int k = atomic_fetch_add(&file_counter, 1);
        snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%010lld.%s.%d.%d", dir,
                 (long long)time(NULL), host, (int)getpid(), k);
        fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0 || !(w->f = fdopen(fd, "wb"))) {
        rt_log_set_error("cannot create %s: %s", w->path, strerror(errno));
        if (fd >= 0) close(fd);
        free(w);
        return NULL;
    }
    Pb ev = {0};
    pb_double(&ev, 1, wall_now());
    pb_str(&ev, 3, "brain.Event:2");
    int r = tb_record(w, &ev);
    free(ev.p);
    if (r != 0 || fflush(w->f) != 0) {
        rt_log_set_error("cannot write the TensorBoard event file");
        fclose(w->f);
        free(w);
        return NULL;
    }
    return w;
}

const char *rt_tb_path(const RtTbWriter *w) { return w->path; }

static int tb_event(RtTbWriter *w, Pb *value, int64_t step, double wall_time) {
    Pb summary = {0}, ev = {0};
    pb_msg(&summary, 1, value);
    pb_double(&ev, 1, wall_time > 0 ? wall_time : wall_now());
    pb_int(&ev, 2, step);
    pb_msg(&ev, 5, &summary);
    int r = tb_record(w, &ev);
    free(ev.p);
    if (r) rt_log_set_error("cannot write %s", w->path);
    return r;
}

int rt_tb_scalar(RtTbWriter *w, const char *tag, double value, int64_t step, double wall_time) {
    Pb v = {0};
    pb_str(&v, 1, tag);
    pb_float(&v, 2, (float)value);
    return tb_event(w, &v, step, wall_time);
}

int rt_tb_text(RtTbWriter *w, const char *tag, const char *markdown, int64_t step, double wall_time) {
    // Value { tag = 1; metadata = 9 { plugin_data = 1 { plugin_name = 1: "text" } };
    //         tensor = 8 { dtype = 1: DT_STRING (7); tensor_shape = 2 {}; string_val = 8 } }
    Pb plugin = {0}, meta = {0}, shape = {0}, tensor = {0}, v = {0};
    pb_str(&plugin, 1, "text");
    pb_msg(&meta, 1, &plugin);
    pb_int(&tensor, 1, 7);
    pb_msg(&tensor, 2, &shape);
    pb_str(&tensor, 8, markdown);
    pb_str(&v, 1, tag);
    pb_msg(&v, 9, &meta);
    pb_msg(&v, 8, &tensor);
    return tb_event(w, &v, step, wall_time);
}

int rt_tb_flush(RtTbWriter *w) {
    if (fflush(w->f) != 0 || w->failed) {
        rt_log_set_error("cannot write %s: %s", w->path, strerror(errno));
        return -1;
    }
    return 0;
}

int rt_tb_close(RtTbWriter *w) {
    if (!w) return 0;
    int r = rt_tb_flush(w);
    if (fclose(w->f) != 0 && r == 0) {
        rt_log_set_error("cannot write %s: %s", w->path, strerror(errno));
        r = -1;
    }
    free(w);
    return r;
}
