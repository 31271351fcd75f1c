/* test_logger.c — run folders, metrics.csv, hparams.yaml, TensorBoard event files (read
 * back with an independent bitwise CRC-32C and protobuf decoder), curves.svg (checked to be
 * well-formed XML by a small checker) and the model summary. Everything is written into a
 * fresh mkdtemp folder, never into the repository. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt.h"

/* ---- helpers ---------------------------------------------------------------------- */

static char *tmpdir(void) {
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/ltl-logger-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    return dir;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    cr_assert_eq(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return p;
}

static void expect_file(const char *path, const char *want) {
    char *got = slurp(path, NULL);
    cr_expect_str_eq(got, want, "%s:\n--- got ---\n%s--- want ---\n%s", path, got, want);
    free(got);
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int count_entries(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(d);
    return n;
}

static void rm_rf(const char *path) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    cr_assert_eq(system(cmd), 0);
}

/* ---- numbers ---------------------------------------------------------------------- */

Test(logger, crc32c_test_vector) {
    cr_expect_eq(rt_crc32c(0, "123456789", 9), 0xE3069283u);
    cr_expect_eq(rt_crc32c(0, "", 0), 0u);
    /* Incremental use gives the same CRC. */
    cr_expect_eq(rt_crc32c(rt_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

Test(logger, numbers_as_python_repr) {
    struct { double v; const char *want; } cases[] = {
        {0.5, "0.5"}, {100.0, "100.0"}, {0.0, "0.0"}, {-0.25, "-0.25"}, {1e-05, "1e-05"},
        {0.0001, "0.0001"}, {1e16, "1e+16"}, {123456789012345.0, "123456789012345.0"},
        {0.1, "0.1"}, {1.0 / 3, "0.3333333333333333"}, {(float)0.412, "0.412"},
        {(float)(1.0 / 3), "0.33333334"}, {2.5e-7, "2.5e-07"}, {NAN, "nan"}, {INFINITY, "inf"},
        {-INFINITY, "-inf"}, {1e22, "1e+22"}, {12345.678, "12345.678"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rt_log_fmt_num(buf, sizeof buf, cases[i].v);
        cr_expect_str_eq(buf, cases[i].want, "case %zu: got %s", i, buf);
    }
}

/* ---- run folders ------------------------------------------------------------------ */

Test(logger, version_folders_follow_lightning) {
    char *root = tmpdir(), out[512], path[512];
    cr_expect_eq(rt_next_version(root, "mlp"), 0);   /* no NAME folder yet */
    cr_assert_eq(rt_run_dir(root, "mlp", -1, out, sizeof out), 0);
    snprintf(path, sizeof path, "%s/mlp/version_0", root);
    cr_expect_str_eq(out, path);
    cr_expect(is_dir(path));
    cr_expect_eq(rt_run_dir(root, "mlp", -1, out, sizeof out), 1);

    /* 1 + the largest, not the first gap; "version_12_old" counts as 12 (Lightning splits
     * on '_'); files and non-numeric names do not count. */
    snprintf(path, sizeof path, "%s/mlp/version_7", root);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/mlp/version_12_old", root);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/mlp/version_x", root);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/mlp/version_99", root);
    fclose(fopen(path, "w"));
    cr_expect_eq(rt_next_version(root, "mlp"), 13);
    cr_expect_eq(rt_run_dir(root, "mlp", -1, out, sizeof out), 13);
    cr_expect_eq(rt_run_dir(root, "mlp", -1, out, sizeof out), 14);

    /* An explicit version is reused; a file in the way is an error with a message. */
    cr_expect_eq(rt_run_dir(root, "mlp", 7, out, sizeof out), 7);
    cr_expect_eq(rt_run_dir(root, "mlp", 99, out, sizeof out), -1);
    cr_expect(strstr(rt_log_error(), "version_99") != NULL, "%s", rt_log_error());

    /* No NAME level; nested names. */
    cr_expect_eq(rt_run_dir(root, "", -1, out, sizeof out), 0);
    snprintf(path, sizeof path, "%s/version_0", root);
    cr_expect_str_eq(out, path);
    cr_expect_eq(rt_run_dir(root, "a/b", -1, out, sizeof out), 0);
    snprintf(path, sizeof path, "%s/a/b/version_0", root);
    cr_expect(is_dir(path));
    rm_rf(root);
}

/* ---- metrics.csv ------------------------------------------------------------------ */

Test(logger, csv_rows_and_header_rewrite) {
    char *dir = tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    RtCsvLogger *c = rt_csv_open(dir, 2);
    cr_assert_not_null(c);
    const char *tl[] = {"train_loss"};
    double v0[] = {(float)2.302585}, v1[] = {(float)1.5};
    cr_assert_eq(rt_csv_log(c, 0, 0, 1, tl, v0), 0);
    cr_expect_eq(access(path, F_OK), -1, "nothing written before the first flush step");
    cr_assert_eq(rt_csv_log(c, 1, 0, 1, tl, v1), 0);          /* (1 + 1) % 2 == 0: written */
    expect_file(path, "epoch,step,train_loss\n0,0,2.302585\n0,1,1.5\n");

    /* A key appearing later: the file is rewritten with the wider, sorted header. */
    const char *val[] = {"val_loss", "val_acc"};
    double vv[] = {0.75, (float)0.871};
    cr_assert_eq(rt_csv_log(c, 1, 0, 2, val, vv), 0);
    cr_assert_eq(rt_csv_flush(c), 0);
    expect_file(path,
                "epoch,step,train_loss,val_acc,val_loss\n"
                "0,0,2.302585,,\n"
                "0,1,1.5,,\n"
                "0,1,,0.871,0.75\n");

    /* Same keys again: appended. A key named like a column is the row's own column;
     * a name with a comma is quoted as Python's csv module does. */
    const char *mixed[] = {"train_loss", "step"};
    double vm[] = {1e-05, 123};
    cr_assert_eq(rt_csv_log(c, 2, 1, 2, mixed, vm), 0);
    cr_assert_eq(rt_csv_log(c, 3, 1, 1, tl, (double[]){NAN}), 0);    /* flushed at step 3 */
    expect_file(path,
                "epoch,step,train_loss,val_acc,val_loss\n"
                "0,0,2.302585,,\n"
                "0,1,1.5,,\n"
                "0,1,,0.871,0.75\n"
                "1,2,1e-05,,\n"
                "1,3,nan,,\n");
    const char *odd[] = {"acc,top\"5\""};
    cr_assert_eq(rt_csv_log(c, 4, 2, 1, odd, (double[]){0.5}), 0);
    cr_assert_eq(rt_csv_close(c), 0);
    expect_file(path,
                "\"acc,top\"\"5\"\"\",epoch,step,train_loss,val_acc,val_loss\n"
                ",0,0,2.302585,,\n"
                ",0,1,1.5,,\n"
                ",0,1,,0.871,0.75\n"
                ",1,2,1e-05,,\n"
                ",1,3,nan,,\n"
                "0.5,2,4,,,\n");
    cr_expect_eq(count_entries(dir, "metrics.csv.tmp"), 0, "no temporary file left");

    /* Reopening the same folder starts a fresh file (Lightning removes the old one). */
    c = rt_csv_open(dir, 100);
    cr_assert_eq(rt_csv_log(c, 0, 0, 1, tl, v1), 0);
    cr_assert_eq(rt_csv_close(c), 0);
    expect_file(path, "epoch,step,train_loss\n0,0,1.5\n");
    rm_rf(dir);
}

/* ---- hparams.yaml ----------------------------------------------------------------- */

Test(logger, hparams_yaml) {
    char *dir = tmpdir(), path[512];
    RtHparams *h = rt_hparams_new();
    rt_hparams_int(h, "model.hidden1", 128);
    rt_hparams_float(h, "model.lr", 1e-3);
    rt_hparams_float(h, "model.eps", 1e-8);
    rt_hparams_float(h, "model.scale", 2.0);
    rt_hparams_int(h, "data.batch", 32);
    rt_hparams_str(h, "data.root", "/usr/share/datasets/fashion-mnist");
    rt_hparams_int(h, "data.batch", 64);                 /* replaced, keeps its place */
    rt_hparams_str(h, "trainer.precision", "32-true");
    rt_hparams_bool(h, "trainer.deterministic", true);
    rt_hparams_str(h, "trainer.profiler", NULL);
    rt_hparams_float(h, "trainer.gradient_clip_val", INFINITY);
    rt_hparams_str(h, "trainer.optim.name", "adam");     /* deeper nesting */
    rt_hparams_str(h, "answer", "yes");                  /* strings YAML would misread */
    rt_hparams_str(h, "empty", "");
    rt_hparams_str(h, "colon", "a: b");
    rt_hparams_str(h, "hash", "#x");
    rt_hparams_str(h, "quote", "say \"hi\"\n");
    rt_hparams_str(h, "plain", "relu then softmax");
    rt_hparams_float(h, "seed_like", 42);
    snprintf(path, sizeof path, "%s/hparams.yaml", dir);
    cr_assert_eq(rt_hparams_save(h, path), 0);
    expect_file(path,
                "model:\n"
                "  hidden1: 128\n"
                "  lr: 0.001\n"
                "  eps: 1.0e-08\n"
                "  scale: 2.0\n"
                "data:\n"
                "  batch: 64\n"
                "  root: /usr/share/datasets/fashion-mnist\n"
                "trainer:\n"
                "  precision: \"32-true\"\n"
                "  deterministic: true\n"
                "  profiler: null\n"
                "  gradient_clip_val: .inf\n"
                "  optim:\n"
                "    name: adam\n"
                "answer: \"yes\"\n"
                "empty: \"\"\n"
                "colon: \"a: b\"\n"
                "hash: \"#x\"\n"
                "quote: \"say \\\"hi\\\"\\n\"\n"
                "plain: relu then softmax\n"
                "seed_like: 42.0\n");
    cr_expect_eq(count_entries(dir, "hparams.yaml.tmp"), 0, "written through a renamed temp file");
    char *md = rt_hparams_markdown(h);
    cr_expect(strncmp(md, "| hyperparameter | value |\n|---|---|\n| model.hidden1 | 128 |\n", 60) == 0, "%s", md);
    cr_expect(strstr(md, "| trainer.optim.name | adam |\n") != NULL, "%s", md);
    free(md);
    rt_hparams_free(h);
    char *y;

    /* Command-line values keep their kind. */
    RtHparams *cli = rt_hparams_new();
    rt_hparams_parse(cli, "model.hidden", "512");
    rt_hparams_parse(cli, "model.lr", "3e-4");
    rt_hparams_parse(cli, "model.drop", ".5");
    rt_hparams_parse(cli, "trainer.deterministic", "true");
    rt_hparams_parse(cli, "trainer.profiler", "none");
    rt_hparams_parse(cli, "trainer.precision", "bf16-mixed");
    rt_hparams_parse(cli, "trainer.max_time", "00:01:00:00");
    rt_hparams_parse(cli, "data.root", "inf");
    y = rt_hparams_yaml(cli);
    cr_expect_str_eq(y, "model:\n  hidden: 512\n  lr: 0.0003\n  drop: 0.5\n"
                        "trainer:\n  deterministic: true\n  profiler: null\n  precision: bf16-mixed\n"
                        "  max_time: \"00:01:00:00\"\ndata:\n  root: inf\n");   /* PyYAML reads .inf, not inf */
    free(y);
    rt_hparams_free(cli);

    RtHparams *e = rt_hparams_new();
    y = rt_hparams_yaml(e);
    cr_expect_str_eq(y, "{}\n");
    free(y);
    rt_hparams_free(e);
    rm_rf(dir);
}

/* ---- TensorBoard event files ------------------------------------------------------ */

/* An independent CRC-32C: bit by bit, no table. */
static uint32_t crc32c_bitwise(const unsigned char *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}
static uint32_t masked(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }
static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A protobuf field reader over [p, end). */
typedef struct { const unsigned char *p, *end; } Pbr;
static uint64_t rd_varint(Pbr *r) {
    uint64_t v = 0;
    for (int s = 0; r->p < r->end; s += 7) {
        unsigned char b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return v;
    }
    cr_assert_fail("truncated varint");
    return 0;
}
/* Next field: number, wire type, and for LEN fields the sub-range; for I32/I64/VARINT the value. */
typedef struct { int field, wt; uint64_t v; Pbr sub; } Field;
static bool next_field(Pbr *r, Field *f) {
    if (r->p >= r->end) return false;
    uint64_t key = rd_varint(r);
    f->field = (int)(key >> 3);
    f->wt = (int)(key & 7);
    switch (f->wt) {
    case 0: f->v = rd_varint(r); break;
    case 1: cr_assert(r->end - r->p >= 8); f->v = le(r->p, 8); r->p += 8; break;
    case 5: cr_assert(r->end - r->p >= 4); f->v = le(r->p, 4); r->p += 4; break;
    case 2: {
        uint64_t n = rd_varint(r);
        cr_assert(n <= (uint64_t)(r->end - r->p), "length past the end");
        f->sub = (Pbr){r->p, r->p + n};
        r->p += n;
        break;
    }
    default: cr_assert_fail("unexpected wire type %d", f->wt);
    }
    return true;
}

typedef struct {
    double wall_time;
    int64_t step;
    char file_version[32];
    char tag[64];
    float value;
    bool has_value;
    char plugin[16];
    char text[512];
} Ev;

static void decode_event(const unsigned char *p, size_t n, Ev *ev) {
    memset(ev, 0, sizeof *ev);
    Pbr r = {p, p + n};
    Field f;
    while (next_field(&r, &f)) {
        if (f.field == 1 && f.wt == 1) memcpy(&ev->wall_time, &f.v, 8);
        else if (f.field == 2 && f.wt == 0) ev->step = (int64_t)f.v;
        else if (f.field == 3 && f.wt == 2)
            snprintf(ev->file_version, sizeof ev->file_version, "%.*s", (int)(f.sub.end - f.sub.p), f.sub.p);
        else if (f.field == 5 && f.wt == 2) {                    /* Summary */
            Field sv;
            int nvalues = 0;
            while (next_field(&f.sub, &sv)) {
                cr_assert(sv.field == 1 && sv.wt == 2);        /* repeated Value */
                nvalues++;
                Field vf;
                while (next_field(&sv.sub, &vf)) {
                    if (vf.field == 1 && vf.wt == 2)
                        snprintf(ev->tag, sizeof ev->tag, "%.*s", (int)(vf.sub.end - vf.sub.p), vf.sub.p);
                    else if (vf.field == 2 && vf.wt == 5) {
                        uint32_t u = (uint32_t)vf.v;
                        memcpy(&ev->value, &u, 4);
                        ev->has_value = true;
                    } else if (vf.field == 9 && vf.wt == 2) {  /* metadata.plugin_data.plugin_name */
                        Field m, pd;
                        cr_assert(next_field(&vf.sub, &m) && m.field == 1);
                        cr_assert(next_field(&m.sub, &pd) && pd.field == 1);
                        snprintf(ev->plugin, sizeof ev->plugin, "%.*s", (int)(pd.sub.end - pd.sub.p), pd.sub.p);
                    } else if (vf.field == 8 && vf.wt == 2) {  /* tensor: dtype 7, string_val */
                        Field t;
                        while (next_field(&vf.sub, &t)) {
                            if (t.field == 1) cr_expect_eq(t.v, 7u, "DT_STRING");
                            if (t.field == 8)
                                snprintf(ev->text, sizeof ev->text, "%.*s", (int)(t.sub.end - t.sub.p), t.sub.p);
                        }
                    } else {
                        cr_assert_fail("unexpected Value field %d", vf.field);
                    }
                }
            }
            cr_expect_eq(nvalues, 1);
        } else {
            cr_assert_fail("unexpected Event field %d wire type %d", f.field, f.wt);
        }
    }
}

/* Walks the TFRecords, checking both masked CRCs of each; returns the events. */
static int read_events(const char *path, Ev *evs, int max) {
    size_t len;
    unsigned char *p = (unsigned char *)slurp(path, &len), *q = p, *end = p + len;
    int n = 0;
    while (q < end) {
        cr_assert(end - q >= 12, "truncated record header");
        uint64_t dlen = le(q, 8);
        cr_assert_eq((uint32_t)le(q + 8, 4), masked(crc32c_bitwise(q, 8)), "length CRC of record %d", n);
        cr_assert((uint64_t)(end - q - 12) >= dlen + 4, "truncated record %d", n);
        cr_assert_eq((uint32_t)le(q + 12 + dlen, 4), masked(crc32c_bitwise(q + 12, dlen)), "data CRC of record %d", n);
        cr_assert(n < max);
        decode_event(q + 12, dlen, &evs[n++]);
        q += 12 + dlen + 4;
    }
    free(p);
    return n;
}

Test(logger, tensorboard_event_file) {
    char *dir = tmpdir();
    RtTbWriter *w = rt_tb_open(dir);
    cr_assert_not_null(w, "%s", rt_log_error());
    char host[256] = "";
    gethostname(host, sizeof host);
    char want_prefix[512];
    snprintf(want_prefix, sizeof want_prefix, "%s/events.out.tfevents.", dir);
    const char *path = rt_tb_path(w);
    cr_expect(strncmp(path, want_prefix, strlen(want_prefix)) == 0, "%s", path);
    char tail[300];
    snprintf(tail, sizeof tail, ".%s.%d.", host, (int)getpid());
    cr_expect(strstr(path, tail) != NULL, "%s has .host.pid.", path);
    cr_expect_eq(strlen(path) - strlen(want_prefix) > 10 && path[strlen(want_prefix) + 10] == '.', 1,
                 "ten-digit time: %s", path);

    cr_assert_eq(rt_tb_scalar(w, "train_loss", 0.6931471805599453, 0, 1700000000.25), 0);
    cr_assert_eq(rt_tb_scalar(w, "train_loss", 0.25, 49, 1700000001.5), 0);
    cr_assert_eq(rt_tb_scalar(w, "val/acc", 0.871, 1234567890123LL, 1700000002.0), 0);
    cr_assert_eq(rt_tb_text(w, "hparams", "| a | 1 |", 0, 1700000003.0), 0);
    char saved[512];
    snprintf(saved, sizeof saved, "%s", path);
    cr_assert_eq(rt_tb_close(w), 0);

    Ev ev[8];
    int n = read_events(saved, ev, 8);
    cr_assert_eq(n, 5);
    cr_expect_str_eq(ev[0].file_version, "brain.Event:2");
    cr_expect(ev[0].wall_time > 1.6e9, "wall time now: %f", ev[0].wall_time);
    cr_expect_str_eq(ev[1].tag, "train_loss");
    cr_expect_eq(ev[1].step, 0);
    cr_expect_eq(ev[1].value, (float)0.6931471805599453);
    cr_expect_eq(ev[1].wall_time, 1700000000.25);
    cr_expect_eq(ev[2].step, 49);
    cr_expect_eq(ev[2].value, 0.25f);
    cr_expect_str_eq(ev[3].tag, "val/acc");
    cr_expect_eq(ev[3].step, 1234567890123LL);
    cr_expect_eq(ev[3].value, 0.871f);
    cr_expect_str_eq(ev[4].tag, "hparams");
    cr_expect_str_eq(ev[4].plugin, "text");
    cr_expect_str_eq(ev[4].text, "| a | 1 |");
    cr_expect(!ev[4].has_value);

    /* Two writers in one second never share a file. */
    RtTbWriter *a = rt_tb_open(dir), *b = rt_tb_open(dir);
    cr_assert(a && b);
    cr_expect_str_neq(rt_tb_path(a), rt_tb_path(b));
    rt_tb_close(a);
    rt_tb_close(b);
    cr_expect_eq(count_entries(dir, "events.out.tfevents."), 3);
    rm_rf(dir);
}

/* ---- SVG: a small well-formedness checker ----------------------------------------- */

/* Checks: one root element, every tag closed in order, attributes quoted, '<' never in
 * text or attribute values, every '&' a known entity. Returns NULL or what is wrong. */
static const char *xml_check(const char *s, int *elements) {
    static char why[128];
    const char *stack[64];
    size_t stack_len[64];
    int depth = 0, roots = 0;
    *elements = 0;
    const char *p = s;
    if (strncmp(p, "<?xml", 5) == 0) {
        p = strstr(p, "?>");
        if (!p) return "unterminated XML declaration";
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            const char *ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"};
            bool ok = false;
            for (int i = 0; i < 6 && !ok; i++) ok = strncmp(p, ents[i], strlen(ents[i])) == 0;
            if (!ok || !strchr(p, ';')) return "bad entity in text";
            p++;
            continue;
        }
        if (*p != '<') { p++; continue; }
        if (strncmp(p, "<!--", 4) == 0) {
            p = strstr(p, "-->");
            if (!p) return "unterminated comment";
            p += 3;
            continue;
        }
        bool closing = p[1] == '/';
        const char *name = p + 1 + closing;
        size_t nlen = strcspn(name, " \t\n/>");
        if (nlen == 0) return "empty tag name";
        const char *q = name + nlen;
        if (closing) {
            if (*q != '>') return "junk in closing tag";
            if (depth == 0 || stack_len[depth - 1] != nlen || strncmp(stack[depth - 1], name, nlen) != 0) {
                snprintf(why, sizeof why, "mismatched </%.*s>", (int)nlen, name);
                return why;
            }
            depth--;
            p = q + 1;
            continue;
        }
        /* attributes */
        for (;;) {
            while (*q == ' ' || *q == '\t' || *q == '\n') q++;
            if (*q == '>' || (q[0] == '/' && q[1] == '>')) break;
            size_t alen = strcspn(q, "= \t\n>");
            if (alen == 0 || q[alen] != '=') return "attribute without a value";
            q += alen + 1;
            char quote = *q;
            if (quote != '"' && quote != '\'') return "unquoted attribute";
            const char *v = q + 1, *ve = strchr(v, quote);
            if (!ve) return "unterminated attribute";
            for (const char *c = v; c < ve; c++) {
                if (*c == '<') return "'<' in an attribute";
                if (*c == '&' && strncmp(c, "&amp;", 5) && strncmp(c, "&lt;", 4) && strncmp(c, "&gt;", 4) &&
                    strncmp(c, "&quot;", 6) && strncmp(c, "&#", 2)) return "bad entity in an attribute";
            }
            q = ve + 1;
        }
        (*elements)++;
        if (depth == 0) roots++;
        if (*q == '/') {
            p = q + 2;
        } else {
            if (depth == 64) return "too deep";
            stack[depth] = name;
            stack_len[depth++] = nlen;
            p = q + 1;
        }
    }
    if (depth) return "unclosed element";
    if (roots != 1) return "not exactly one root element";
    return NULL;
}

static int count_str(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub)) n++;
    return n;
}

Test(logger, xml_checker_catches_mistakes) {
    int n;
    cr_expect_null(xml_check("<a><b x=\"1\"/>t &amp; u</a>", &n));
    cr_expect_eq(n, 2);
    cr_expect_not_null(xml_check("<a><b></a></b>", &n));
    cr_expect_not_null(xml_check("<a>x & y</a>", &n));
    cr_expect_not_null(xml_check("<a x=1></a>", &n));
    cr_expect_not_null(xml_check("<a></a><b></b>", &n));
    cr_expect_not_null(xml_check("<a>", &n));
}

Test(logger, svg_plot_is_well_formed) {
    double x[] = {0, 1, 2, 3, 4, 5}, y[] = {2.3, 1.2, NAN, 0.8, 0.6, 0.5};
    double ex[] = {0, 1, 2}, ey[] = {0.7, 0.8, 0.85};
    double cx[] = {3}, cy[] = {1.0};
    RtPlotSeries s[] = {
        {"train_loss", "step", x, y, 6},
        {"acc<top&5>\"", "epoch", ex, ey, 3},
        {"constant", "epoch", cx, cy, 1},
        {"empty", "step", NULL, NULL, 0},
    };
    char *svg = rt_plot_svg("mlp/version_0 <test>", s, 4);
    int elements;
    const char *why = xml_check(svg, &elements);
    cr_expect_null(why, "%s", why);
    cr_expect(elements > 50);
    cr_expect(strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"") != NULL);
    cr_expect_eq(count_str(svg, "class=\"panel\""), 4);
    /* train_loss breaks at the NaN: two polylines; the others one each, none for "empty". */
    cr_expect_eq(count_str(svg, "<polyline"), 4);
    cr_expect(strstr(svg, "acc&lt;top&amp;5&gt;&quot;") != NULL);
    cr_expect(strstr(svg, ">epoch</text>") != NULL && strstr(svg, ">step</text>") != NULL);
    cr_expect(strstr(svg, "no finite values") != NULL);
    free(svg);
}

/* ---- the logger front ------------------------------------------------------------- */

Test(logger, front_writes_a_run_folder) {
    char *root = tmpdir();
    RtLoggerConfig cfg = {.root = root, .name = NULL, .version = -1, .csv = true, .tensorboard = true,
                          .plot = true, .flush_every_n_steps = 50};
    RtLogger *lg = rt_logger_open(&cfg);
    cr_assert_not_null(lg, "%s", rt_log_error());
    char want[512];
    snprintf(want, sizeof want, "%s/lightning_logs/version_0", root);
    cr_expect_str_eq(rt_logger_dir(lg), want);
    cr_expect_eq(rt_logger_version(lg), 0);
    RtHparams *h = rt_hparams_new();
    rt_hparams_int(h, "model.hidden", 16);
    cr_expect_eq(rt_logger_hparams(lg, h), 0);
    rt_hparams_free(h);

    int64_t step = 0;
    for (int e = 0; e < 3; e++) {
        for (int b = 0; b < 20; b++, step++) {
            const char *k[] = {"train_loss"};
            double v[] = {(float)(1.0 / (1 + step))};
            cr_expect_eq(rt_logger_log(lg, step, e, 1, k, v), 0);
        }
        /* Float values from a table: GCC 12's -O2 SLP vectorizer drops the (float) casts
         * of {(float)(0.5 - 0.1 * e), (float)(0.7 + 0.05 * e)} (checked by hand). */
        static const float val_loss[] = {0.5f, 0.4f, 0.3f}, val_acc[] = {0.7f, 0.75f, 0.8f};
        const char *k[] = {"val_loss", "val_acc"};
        double v[] = {val_loss[e], val_acc[e]};
        cr_expect_eq(rt_logger_log(lg, step - 1, e, 2, k, v), 0);
    }
    cr_expect_eq(rt_logger_close(lg), 0);

    char path[600];
    snprintf(path, sizeof path, "%s/hparams.yaml", want);
    expect_file(path, "model:\n  hidden: 16\n");
    snprintf(path, sizeof path, "%s/metrics.csv", want);
    char *csv = slurp(path, NULL);
    const char *head = "epoch,step,train_loss,val_acc,val_loss\n0,0,1.0,,\n0,1,0.5,,\n";
    cr_expect(strncmp(csv, head, strlen(head)) == 0, "%s", csv);
    cr_expect(strstr(csv, "\n0,19,,0.7,0.5\n") != NULL, "%s", csv);
    cr_expect(strstr(csv, "\n2,59,,0.8,0.3\n") != NULL, "%s", csv);
    cr_expect_eq(count_str(csv, "\n"), 64);
    free(csv);

    /* The event file: the hparams text, then per row each metric and `epoch`. */
    DIR *d = opendir(want);
    struct dirent *de;
    char evpath[1024] = "";
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "events.out.tfevents.", 20) == 0) snprintf(evpath, sizeof evpath, "%s/%s", want, de->d_name);
    closedir(d);
    cr_assert(evpath[0]);
    static Ev ev[256];
    int n = read_events(evpath, ev, 256);
    cr_expect_eq(n, 1 + 1 + 60 * 2 + 3 * 3);
    cr_expect_str_eq(ev[1].tag, "hparams");
    int nval = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(ev[i].tag, "val_acc")) {
            cr_expect_eq(ev[i].step, 20 * nval + 19);
            static const float want_acc[] = {0.7f, 0.75f, 0.8f};
            cr_expect_eq(ev[i].value, want_acc[nval]);
            nval++;
        }
    cr_expect_eq(nval, 3);

    snprintf(path, sizeof path, "%s/curves.svg", want);
    char *svg = slurp(path, NULL);
    int elements;
    const char *why = xml_check(svg, &elements);
    cr_expect_null(why, "%s", why);
    cr_expect_eq(count_str(svg, "<polyline"), 3);
    cr_expect(strstr(svg, ">train_loss</text>") && strstr(svg, ">val_acc</text>") && strstr(svg, ">val_loss</text>"));
    /* val_* are logged once per epoch: drawn against the epoch; train_loss against the step. */
    cr_expect_eq(count_str(svg, ">epoch</text>"), 2);
    cr_expect_eq(count_str(svg, ">step</text>"), 1);
    free(svg);
    cr_expect_eq(count_entries(want, "") , 4, "hparams.yaml, metrics.csv, events, curves.svg");

    /* A second run gets version_1. */
    lg = rt_logger_open(&cfg);
    cr_assert_not_null(lg);
    cr_expect_eq(rt_logger_version(lg), 1);
    cr_expect_eq(rt_logger_close(lg), 0);
    rm_rf(root);
}

Test(logger, front_reports_errors) {
    char *root = tmpdir(), file[512];
    snprintf(file, sizeof file, "%s/blocker", root);
    fclose(fopen(file, "w"));
    RtLoggerConfig cfg = {.root = file, .name = "x", .version = -1, .csv = true};
    cr_expect_null(rt_logger_open(&cfg));
    cr_expect(strstr(rt_log_error(), "blocker") != NULL, "%s", rt_log_error());
    rm_rf(root);
}

/* ---- model summary ---------------------------------------------------------------- */

Test(logger, param_counts_like_lightning) {
    struct { int64_t n; const char *want; } cases[] = {
        {0, "0  "}, {12, "12  "}, {999, "999  "}, {1000, "1.0 K"}, {2570, "2.6 K"},
        {33024, "33.0 K"}, {99999, "100.0 K"}, {100480, "100 K"}, {101770, "101 K"},
        {1234567, "1.2 M"}, {123456789, "123 M"}, {7000000000LL, "7.0 B"},
        {1234567890123456LL, "1,234 T"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rt_fmt_param_count(buf, sizeof buf, cases[i].n);
        cr_expect_str_eq(buf, cases[i].want, "%lld: got '%s'", (long long)cases[i].n, buf);
    }
}

Test(logger, summary_table) {
    RtSummaryRow rows[] = {
        {"l1", "Linear", 100480, "[B, 128]", true},
        {"l2", "Linear", 33024, "[B, 256]", true},
        {"l3", "Linear", 2570, "[B, 10]", true},
        {"embed", "Embedding", 1234567, "[B, 64]", false},
    };
    char *s = rt_summary_format(rows, 4, 4);
    cr_expect_str_eq(s,
        "  | Name  | Type      | Params | Out sizes\n"
        "------------------------------------------------\n"
        "0 | l1    | Linear    | 100 K  | [B, 128] \n"
        "1 | l2    | Linear    | 33.0 K | [B, 256] \n"
        "2 | l3    | Linear    | 2.6 K  | [B, 10]  \n"
        "3 | embed | Embedding | 1.2 M  | [B, 64]  \n"
        "------------------------------------------------\n"
        "136 K     Trainable params\n"
        "1.2 M     Non-trainable params\n"
        "1.4 M     Total params\n"
        "5.483     Total estimated model params size (MB)\n", "got:\n%s", s);
    free(s);
    /* Without shapes: no Out sizes column. */
    RtSummaryRow r2[] = {{"fc", "Linear", 7850, NULL, true}};
    s = rt_summary_format(r2, 1, 0);
    cr_expect_str_eq(s,
        "  | Name | Type   | Params\n"
        "--------------------------------\n"
        "0 | fc   | Linear | 7.9 K \n"
        "--------------------------------\n"
        "7.9 K     Trainable params\n"
        "0         Non-trainable params\n"
        "7.9 K     Total params\n"
        "0.031     Total estimated model params size (MB)\n", "got:\n%s", s);
    free(s);
}
