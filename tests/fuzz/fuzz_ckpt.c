/* fuzz_ckpt.c — libFuzzer target for the checkpoint reader (runtime/ckpt.c).
 *
 * Each input is tried twice: as a whole file, and as "header NUL data" with the
 * 8-byte length put in front (so that the fuzzer reaches the JSON checks without
 * first guessing a matching length). Any input must be refused with one
 * message, or opened; an opened file must satisfy the reader's promises (every
 * tensor inside the data, sizes that add up, names found again), and writing it
 * out again must give a file that opens to the same tensors, bytes and metadata.
 *
 * Build and run (see the Makefile's fuzz targets):
 *   clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 -std=c17 \
 *     -D_GNU_SOURCE -Iruntime -o build/fuzz/fuzz_ckpt tests/fuzz/fuzz_ckpt.c runtime/ckpt.c -lcjson
 *   build/fuzz/fuzz_ckpt -dict=tests/fixtures/ckpt/fuzz.dict -max_len=4096 CORPUS tests/fixtures/ckpt/seeds
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_ckpt: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* A refusal is one line that names the file and holds no control character. */
static void check_message(const char *err) {
    size_t n = strnlen(err, RT_CKPT_ERR_LEN);
    if (n == 0 || n >= RT_CKPT_ERR_LEN) fail("empty or unterminated message", NULL);
    if (strncmp(err, "fuzz: ", 6) != 0) fail("the message does not name the file", err);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f) fail("a control character in the message", err);
}

static void check_same(const RtCkpt *a, const RtCkpt *b) {
    char err[RT_CKPT_ERR_LEN];
    if (rt_ckpt_count(a) != rt_ckpt_count(b) || rt_ckpt_meta_count(a) != rt_ckpt_meta_count(b))
        fail("the rewritten file has other counts", NULL);
    for (size_t i = 0; i < rt_ckpt_meta_count(a); i++) {
        const RtCkptMeta *m = rt_ckpt_meta(a, i), *n = rt_ckpt_meta(b, i);
        if (strcmp(m->key, n->key) || strcmp(m->value, n->value)) fail("metadata changed", m->key);
    }
    for (size_t i = 0; i < rt_ckpt_count(a); i++) {
        const RtCkptInfo *s = rt_ckpt_tensor(a, i), *t = rt_ckpt_find(b, s->name);
        if (!t) fail("a tensor is lost", s->name);
        if (s->dtype != t->dtype || s->ndim != t->ndim || s->nbytes != t->nbytes) fail("a tensor changed", s->name);
        for (int d = 0; d < s->ndim; d++)
            if (s->shape[d] != t->shape[d]) fail("a shape changed", s->name);
        void *x = malloc(s->nbytes + 1), *y = malloc(t->nbytes + 1);
        if (!rt_ckpt_read(a, s, x, err) || !rt_ckpt_read(b, t, y, err)) fail("read failed", err);
        if (memcmp(x, y, s->nbytes)) fail("data changed", s->name);
        free(x), free(y);
    }
}

static void try_file(const uint8_t *data, size_t size) {
    char err[RT_CKPT_ERR_LEN];
    err[0] = 0;
    RtCkpt *ck = rt_ckpt_open_memory(data, size, "fuzz", err);
    if (!ck) {
        check_message(err);
        return;
    }
    /* the promises of an opened file */
    size_t n = rt_ckpt_count(ck);
    uint64_t pos = 0;
    RtCkptTensor *table = calloc(n + 1, sizeof *table);
    for (size_t i = 0; i < n; i++) {
        const RtCkptInfo *t = rt_ckpt_tensor(ck, i);
        if (t->begin != pos) fail("the tensors do not tile the data", t->name);
        pos += t->nbytes;
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
        if (numel != t->numel || numel * rt_ckpt_dtype_size(t->dtype) != t->nbytes) fail("sizes do not add up", t->name);
        if (rt_ckpt_find(ck, t->name) != t) fail("find does not find", t->name);
        table[i] = (RtCkptTensor){t->name, t->dtype, t->ndim, t->shape, malloc(t->nbytes + 1)};
        if (!rt_ckpt_read(ck, t, table[i].data, err)) fail("read failed", err);
    }
    if (pos != rt_ckpt_data_size(ck) || 8 + rt_ckpt_header_size(ck) + pos != size) fail("sizes do not add up", NULL);
    for (size_t i = 0; i < rt_ckpt_meta_count(ck); i++)
        if (rt_ckpt_meta_get(ck, rt_ckpt_meta(ck, i)->key) == NULL) fail("metadata not found", NULL);
    /* loading into its own table works */
    if (!rt_ckpt_load(ck, table, n, 0, err)) fail("loading into the file's own table failed", err);

    /* written again, it reads back the same */
    size_t nm = rt_ckpt_meta_count(ck);
    RtCkptMeta *meta = calloc(nm + 1, sizeof *meta);
    for (size_t i = 0; i < nm; i++) meta[i] = *rt_ckpt_meta(ck, i);
    void *img;
    size_t isize;
    if (!rt_ckpt_encode(table, n, meta, nm, &img, &isize, err)) fail("cannot write an opened file again", err);
    RtCkpt *again = rt_ckpt_open_memory(img, isize, "fuzz", err);
    if (!again) fail("the rewritten file does not open", err);
    check_same(ck, again);
    rt_ckpt_close(again);
    free(img);
    free(meta);
    for (size_t i = 0; i < n; i++) free(table[i].data);
    free(table);
    rt_ckpt_close(ck);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* 1. the bytes as a file, in an exact-size copy so that ASan sees any read past the end */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    try_file(copy, size);
    free(copy);

    /* 2. "header NUL data" */
    const uint8_t *nul = memchr(data, 0, size);
    size_t hlen = nul ? (size_t)(nul - data) : size;
    size_t dlen = nul ? size - hlen - 1 : 0;
    uint8_t *file = malloc(8 + hlen + dlen);
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(file + 8, data, hlen);
    if (dlen) memcpy(file + 8 + hlen, nul + 1, dlen);
    try_file(file, 8 + hlen + dlen);
    free(file);
    return 0;
}
