// data_text.c — text for character-level language models: files read into one string, its
// character vocabulary, and windows of consecutive characters as a data set.
//
// A character is a byte: the licence texts a model learns from are ASCII, and a byte
// vocabulary (at most 256 symbols) keeps the windows u8, so the data set of every window of
// a 100 kB text costs length x 100 kB of memory, not eight times that.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"   // philox_uniform
#include "rt.h"

#define RT_TEXT_STREAM_SAMPLE (RT_DATA_STREAM_SPLIT | 1)   // Philox stream of generate()'s draws

RtText *rt_text_read(const char *const *paths, int n, char **err) {
    RtText *t = calloc(1, sizeof *t);
    if (!t) return rt_data_error(err, "out of memory");
    size_t cap = 0;
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) {
            int e = errno;
            rt_text_free(t);
            return rt_data_error(err, "%s: cannot open: %s", paths[i], strerror(e));
        }
        char buf[1 << 16];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
            if ((size_t)t->len + k > cap) {
                cap = 2 * ((size_t)t->len + k);
                char *nt = realloc(t->text, cap);
                if (!nt) { fclose(f); rt_text_free(t); return rt_data_error(err, "%s: out of memory", paths[i]); }
                t->text = nt;
            }
            memcpy(t->text + t->len, buf, k);
            t->len += (int64_t)k;
        }
        bool bad = ferror(f);
        fclose(f);
        if (bad) { rt_text_free(t); return rt_data_error(err, "%s: read error", paths[i]); }
    }
    if (t->len < 2) { rt_text_free(t); return rt_data_error(err, "%s: the text is empty", n ? paths[0] : "read_text"); }
    // the vocabulary: the distinct bytes in increasing order, as sorted(set(text))
    bool seen[256] = {0};
    for (int64_t i = 0; i < t->len; i++) seen[(unsigned char)t->text[i]] = true;
    memset(t->index, -1, sizeof t->index);
    for (int c = 0; c < 256; c++)
        if (seen[c]) t->index[c] = (int16_t)t->nvocab, t->vocab[t->nvocab++] = (unsigned char)c;
    return t;
}

void rt_text_free(RtText *t) {
    if (t) free(t->text);
    free(t);
}

int64_t rt_text_encode(const RtText *t, const char *s, int64_t *out, char **err) {
    int64_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
        if (t->index[*p] < 0) return rt_data_error(err, "the character '%c' (byte %d) is not in the text's vocabulary", *p, *p), -1;
        out[n] = t->index[*p];
    }
    return n;
}

RtDataset *rt_text_windows(const RtText *t, int64_t length, int64_t stride, char **err) {
    if (length < 2 || stride < 1)
        return rt_data_error(err, "windows: length %lld must be at least 2 and stride %lld at least 1", (long long)length,
                             (long long)stride);
    if (length > t->len) return rt_data_error(err, "windows: length %lld is longer than the text (%lld characters)",
                                              (long long)length, (long long)t->len);
    int64_t n = (t->len - length) / stride + 1;
    if ((double)n * (double)length > 4e9) // every window is stored: a stride keeps that in bounds
        return rt_data_error(err, "windows: %lld windows of %lld characters take %.1f GB; use a larger stride",
                             (long long)n, (long long)length, (double)n * (double)length / 1e9);
    unsigned char *w = malloc((size_t)(n * length));
    if (!w) return rt_data_error(err, "windows: out of memory (%lld windows of %lld)", (long long)n, (long long)length);
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < length; k++) w[i * length + k] = (unsigned char)t->index[(unsigned char)t->text[i * stride + k]];
    RtDataset *ds = rt_data_from_memory(RT_DATA_U8, n, 1, &length, w, NULL, 0, err);
    free(w);
    return ds;
}

void rt_text_next_token(const unsigned char *w, int64_t batch, int64_t length, int64_t *x, int64_t *y) {
    for (int64_t b = 0; b < batch; b++)
        for (int64_t k = 0; k + 1 < length; k++) {
            x[b * (length - 1) + k] = w[b * length + k];
            y[b * (length - 1) + k] = w[b * length + k + 1];
        }
}

int64_t rt_text_sample(const double *logits, int64_t n, double temperature, uint64_t seed, uint64_t draw) {
    double mx = logits[0], sum = 0;
    for (int64_t i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    if (temperature <= 0) { // greedy
        for (int64_t i = 0; i < n; i++)
            if (logits[i] == mx) return i;
    }
    for (int64_t i = 0; i < n; i++) sum += exp((logits[i] - mx) / temperature);
    double u = philox_uniform(seed, RT_TEXT_STREAM_SAMPLE, draw) * sum, acc = 0;
    for (int64_t i = 0; i < n; i++)
        if ((acc += exp((logits[i] - mx) / temperature)) > u) return i;
    return n - 1;
}
