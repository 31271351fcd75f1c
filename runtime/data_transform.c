// data_transform.c — per-sample transforms: a short list of primitives on f32.
//
// The compiler translates a `.ltl` transform expression such as
// `random_crop(hflip((x / 255 - 0.2860) / 0.3530, p = 0.5), 28, padding = 4)`
// into this list, innermost first. A sample is converted to f32 and each
// primitive runs in turn, in place or between two scratch buffers.
//
// Image primitives see a sample as [..., H, W] (the last two dimensions); the
// channel of normalize is dimension -3 (a sample of 1 or 2 dimensions has one
// channel). Random primitives draw from Philox keyed by
//     key = seed, counter = (sample << 16 | transform << 8 | draw, STREAM_TRANSFORM | epoch)
// so what a sample becomes depends on (seed, epoch, sample index, position of
// the transform) only: never on the thread, the worker count or the batch.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"   // philox_uniform
#include "rt.h"

// GCC 12 vectorises at -O2 only loops whose trip count it knows; these loops
// (a plane of a sample) are worth the vector code and its scalar tail.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=dynamic")
#endif

enum { MAX_TRANSFORMS = 256, MAX_CHANNELS = 4096 };

typedef struct {
    RtTfKind kind;
    float a, b;                  // SCALE: x * a + b
    int nch;                     // NORMALIZE: channels (1: every channel)
    float *mean, *std;
    int64_t h, w, pad;           // RANDOM_CROP: output size, zero padding on each side
    double p;                    // HFLIP, RANDOM_ERASING: probability
    double scale[2], ratio[2];   // RANDOM_ERASING: area fraction and aspect-ratio ranges
    float value;                 // RANDOM_ERASING: fill value
} Tf;

struct RtTransforms {
    int n;
    Tf ops[MAX_TRANSFORMS];
};

RtTransforms *rt_tf_new(void) {
    RtTransforms *tf = malloc(sizeof *tf);
    if (tf) tf->n = 0;
    return tf;
}

void rt_tf_free(RtTransforms *tf) {
    if (!tf) return;
    for (int i = 0; i < tf->n; i++) {
        free(tf->ops[i].mean);
        free(tf->ops[i].std);
    }
    free(tf);
}

RtTransforms *rt_tf_clone(const RtTransforms *tf) {
    RtTransforms *c = rt_tf_new();
    if (!c) return NULL;
    for (int i = 0; i < tf->n; i++) {
        Tf t = tf->ops[i];
        if (t.kind == RT_TF_NORMALIZE) {
            t.mean = malloc((size_t)t.nch * sizeof *t.mean);
            t.std = malloc((size_t)t.nch * sizeof *t.std);
            if (!t.mean || !t.std) {
                free(t.mean), free(t.std);
                rt_tf_free(c);
                return NULL;
            }
            memcpy(t.mean, tf->ops[i].mean, (size_t)t.nch * sizeof *t.mean);
            memcpy(t.std, tf->ops[i].std, (size_t)t.nch * sizeof *t.std);
        }
        c->ops[c->n++] = t;
    }
    return c;
}

int rt_tf_count(const RtTransforms *tf) { return tf ? tf->n : 0; }

RtTfKind rt_tf_kind(const RtTransforms *tf, int i) { return tf->ops[i].kind; }

static Tf *push(RtTransforms *tf, RtTfKind kind, const char *name, char **err) {
    if (tf->n == MAX_TRANSFORMS) {
        rt_data_error(err, "%s: more than %d transforms", name, MAX_TRANSFORMS);
        return NULL;
    }
    Tf *t = &tf->ops[tf->n];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    return t;
}

int rt_tf_scale(RtTransforms *tf, float a, float b, char **err) {
    if (!isfinite(a) || !isfinite(b)) return rt_data_error(err, "scale: x * %g + %g is not finite", a, b), -1;
    Tf *t = push(tf, RT_TF_SCALE, "scale", err);
    if (!t) return -1;
    t->a = a;
    t->b = b;
    tf->n++;
    return 0;
}

int rt_tf_normalize(RtTransforms *tf, int nch, const float *mean, const float *std, char **err) {
    if (nch < 1 || nch > MAX_CHANNELS) return rt_data_error(err, "normalize: %d channels", nch), -1;
    for (int c = 0; c < nch; c++) {
        if (!isfinite(mean[c])) return rt_data_error(err, "normalize: mean %g of channel %d is not finite", mean[c], c), -1;
        if (!isfinite(std[c]) || std[c] == 0)
            return rt_data_error(err, "normalize: std %g of channel %d is zero or not finite", std[c], c), -1;
    }
    Tf *t = push(tf, RT_TF_NORMALIZE, "normalize", err);
    if (!t) return -1;
    t->mean = malloc((size_t)nch * sizeof *mean);
    t->std = malloc((size_t)nch * sizeof *std);
    if (!t->mean || !t->std) {
        free(t->mean), free(t->std);
        return rt_data_error(err, "normalize: out of memory"), -1;
    }
    memcpy(t->mean, mean, (size_t)nch * sizeof *mean);
    memcpy(t->std, std, (size_t)nch * sizeof *std);
    t->nch = nch;
    tf->n++;
    return 0;
}

int rt_tf_random_crop(RtTransforms *tf, int64_t h, int64_t w, int64_t padding, char **err) {
    if (h < 1 || w < 1 || h > (1 << 24) || w > (1 << 24))
        return rt_data_error(err, "random_crop: size %lldx%lld is not positive", (long long)h, (long long)w), -1;
    if (padding < 0 || padding > (1 << 20)) return rt_data_error(err, "random_crop: padding %lld is negative", (long long)padding), -1;
    Tf *t = push(tf, RT_TF_RANDOM_CROP, "random_crop", err);
    if (!t) return -1;
    t->h = h;
    t->w = w;
    t->pad = padding;
    tf->n++;
    return 0;
}

int rt_tf_hflip(RtTransforms *tf, double p, char **err) {
    if (!(p >= 0 && p <= 1)) return rt_data_error(err, "hflip: p = %g is not in [0, 1]", p), -1;
    Tf *t = push(tf, RT_TF_HFLIP, "hflip", err);
    if (!t) return -1;
    t->p = p;
    tf->n++;
    return 0;
}

int rt_tf_random_erasing(RtTransforms *tf, double p, double scale_lo, double scale_hi, double ratio_lo,
                         double ratio_hi, float value, char **err) {
    if (!(p >= 0 && p <= 1)) return rt_data_error(err, "random_erasing: p = %g is not in [0, 1]", p), -1;
    if (!(scale_lo >= 0 && scale_lo <= scale_hi && scale_hi <= 1))
        return rt_data_error(err, "random_erasing: scale (%g, %g) is not a range within [0, 1]", scale_lo, scale_hi), -1;
    if (!(ratio_lo > 0 && ratio_lo <= ratio_hi && isfinite(ratio_hi)))
        return rt_data_error(err, "random_erasing: ratio (%g, %g) is not a positive range", ratio_lo, ratio_hi), -1;
    if (!isfinite(value)) return rt_data_error(err, "random_erasing: value %g is not finite", value), -1;
    Tf *t = push(tf, RT_TF_RANDOM_ERASING, "random_erasing", err);
    if (!t) return -1;
    t->p = p;
    t->scale[0] = scale_lo;
    t->scale[1] = scale_hi;
    t->ratio[0] = ratio_lo;
    t->ratio[1] = ratio_hi;
    t->value = value;
    tf->n++;
    return 0;
}

static const char *tf_name(RtTfKind k) {
    switch (k) {
    case RT_TF_SCALE: return "scale";
    case RT_TF_NORMALIZE: return "normalize";
    case RT_TF_RANDOM_CROP: return "random_crop";
    case RT_TF_HFLIP: return "hflip";
    case RT_TF_RANDOM_ERASING: return "random_erasing";
    }
    return "?";
}

static int64_t numel_of(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

// Runs the shapes through the pipeline; *max_numel: the largest sample seen.
static int walk_shapes(const RtTransforms *tf, int ndim, const int64_t *in, int64_t *out, int64_t *max_numel,
                       char **err) {
    if (ndim < 1 || ndim > RT_DATA_MAX_DIMS) return rt_data_error(err, "transform: samples of %d dimensions", ndim), -1;
    memcpy(out, in, (size_t)ndim * sizeof *in);
    *max_numel = numel_of(ndim, out);
    for (int i = 0; tf && i < tf->n; i++) {
        const Tf *t = &tf->ops[i];
        const char *name = tf_name(t->kind);
        if (t->kind == RT_TF_RANDOM_CROP || t->kind == RT_TF_HFLIP || t->kind == RT_TF_RANDOM_ERASING) {
            if (ndim < 2)
                return rt_data_error(err, "%s (transform %d): needs samples of at least 2 dimensions [..., H, W], not %d",
                            name, i, ndim), -1;
        }
        if (t->kind == RT_TF_NORMALIZE) {
            int64_t c = ndim >= 3 ? out[ndim - 3] : 1;
            if (t->nch != 1 && t->nch != c)
                return rt_data_error(err, "normalize (transform %d): %d means and stds for %lld channels", i, t->nch,
                            (long long)c), -1;
        }
        if (t->kind == RT_TF_RANDOM_CROP) {
            int64_t ph = out[ndim - 2] + 2 * t->pad, pw = out[ndim - 1] + 2 * t->pad;
            if (t->h > ph || t->w > pw)
                return rt_data_error(err, "random_crop (transform %d): crop %lldx%lld is larger than the padded image %lldx%lld",
                            i, (long long)t->h, (long long)t->w, (long long)ph, (long long)pw), -1;
            out[ndim - 2] = t->h;
            out[ndim - 1] = t->w;
            int64_t n = numel_of(ndim, out);
            if (n > *max_numel) *max_numel = n;
        }
    }
    return 0;
}

int rt_tf_output_shape(const RtTransforms *tf, int ndim, const int64_t *in, int64_t out[RT_DATA_MAX_DIMS],
                       char **err) {
    int64_t max_numel;
    return walk_shapes(tf, ndim, in, out, &max_numel, err);
}

int64_t rt_tf_scratch_floats(const RtTransforms *tf, int ndim, const int64_t *in) {
    int64_t out[RT_DATA_MAX_DIMS], max_numel;
    if (walk_shapes(tf, ndim, in, out, &max_numel, NULL) < 0) return -1;
    return 2 * max_numel;
}

// Draw k of transform t for a sample: a uniform in [0, 1) with 24 bits.
static double draw(uint64_t seed, int64_t epoch, int64_t sample, int t, int k) {
    return philox_uniform(seed, RT_DATA_STREAM_TRANSFORM | (uint64_t)epoch,
                          (uint64_t)sample << 16 | (uint64_t)t << 8 | (uint64_t)k);
}

// torch.randint(0, n): an integer in [0, n).
static int64_t draw_int(uint64_t seed, int64_t epoch, int64_t sample, int t, int k, int64_t n) {
    int64_t v = (int64_t)(draw(seed, epoch, sample, t, k) * (double)n);
    return v < n ? v : n - 1;
}

// ---- Applying a pipeline ---------------------------------------------------
//
// Runs of point-wise primitives (scale, normalize) are applied to one plane at
// a time while it sits in L1: the first pass also converts u8 to f32, and the
// last run writes straight into the output. The loops are plain C that the
// compiler vectorises (element-wise IEEE operations: the result does not
// depend on the vector width).

// ops[0..nops) (point-wise) on n elements of channel c: src (u8 or f32) -> dst.
// dst may be src (f32).
static void pointwise(const Tf *ops, int nops, int64_t c, const void *src, bool src_u8, float *dst, int64_t n) {
    if (src_u8) {
        const unsigned char *s = src;
        for (int64_t e = 0; e < n; e++) dst[e] = (float)s[e];
    } else if (src != dst) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
    }
    for (int i = 0; i < nops; i++) {
        const Tf *t = &ops[i];
        if (t->kind == RT_TF_SCALE) {
            float a = t->a, b = t->b;
            for (int64_t e = 0; e < n; e++) {
                float v = dst[e] * a;
                dst[e] = v + b;
            }
        } else {
            int ch = t->nch > 1 ? (int)c : 0;
            float m = t->mean[ch], s = t->std[ch];
            for (int64_t e = 0; e < n; e++) dst[e] = (dst[e] - m) / s;
        }
    }
}

static bool is_pointwise(RtTfKind k) { return k == RT_TF_SCALE || k == RT_TF_NORMALIZE; }

void rt_tf_apply(const RtTransforms *tf, RtDataDtype dtype, int ndim, const int64_t *in_shape, const void *in,
                 float *out, float *scratch, uint64_t seed, int64_t epoch, int64_t sample) {
    int64_t shape[RT_DATA_MAX_DIMS];
    memcpy(shape, in_shape, (size_t)ndim * sizeof *shape);
    int64_t n = numel_of(ndim, shape), half = rt_tf_scratch_floats(tf, ndim, in_shape) / 2;
    int nops = tf ? tf->n : 0;
    // The sample is at `data`: the input (u8 or f32) until the first pass, then a
    // scratch buffer (cur), or out after the last pass.
    const void *data = in;
    bool raw = true, u8 = dtype == RT_DATA_U8;
    float *cur = scratch, *other = scratch + half;
    for (int i = 0; i < nops;) {
        const Tf *t = &tf->ops[i];
        int64_t H = ndim >= 2 ? shape[ndim - 2] : 1, W = shape[ndim - 1];
        int64_t planes = n / (H * W);   // all leading dimensions, channels included
        if (is_pointwise(t->kind)) {
            int j = i;
            while (j < nops && is_pointwise(tf->ops[j].kind)) j++;
            float *dst = j == nops ? out : cur;
            int64_t C = ndim >= 3 ? shape[ndim - 3] : 1, plane = ndim >= 3 ? H * W : n;
            for (int64_t pl = 0; pl < n / plane; pl++)
                pointwise(t, j - i, pl % C, u8 && raw ? (const unsigned char *)data + pl * plane
                                                      : (const void *)((const float *)data + pl * plane),
                          u8 && raw, dst + pl * plane, plane);
            data = dst;
            raw = false;
            i = j;
            continue;
        }
        if (raw) {   // the other primitives work in place on f32
            pointwise(NULL, 0, 0, data, u8, cur, n);
            data = cur;
            raw = false;
        }
        switch (t->kind) {
        case RT_TF_RANDOM_CROP: {
            // The padded image is (H + 2 pad) x (W + 2 pad), zeros outside; crop at (top, left).
            int64_t top = draw_int(seed, epoch, sample, i, 0, H + 2 * t->pad - t->h + 1);
            int64_t left = draw_int(seed, epoch, sample, i, 1, W + 2 * t->pad - t->w + 1);
            // Output columns [c0, c1) come from the image, the others are padding.
            int64_t c0 = t->pad - left > 0 ? t->pad - left : 0;
            int64_t c1 = W + t->pad - left < t->w ? W + t->pad - left : t->w;
            if (c1 < c0) c1 = c0;
            for (int64_t pl = 0; pl < planes; pl++) {
                const float *src = cur + pl * H * W;
                float *dst = other + pl * t->h * t->w;
                for (int64_t r = 0; r < t->h; r++) {
                    int64_t sr = top + r - t->pad;
                    float *d = dst + r * t->w;
                    if (sr < 0 || sr >= H) {
                        memset(d, 0, (size_t)t->w * sizeof *d);
                        continue;
                    }
                    memset(d, 0, (size_t)c0 * sizeof *d);
                    memcpy(d + c0, src + sr * W + (left + c0 - t->pad), (size_t)(c1 - c0) * sizeof *d);
                    memset(d + c1, 0, (size_t)(t->w - c1) * sizeof *d);
                }
            }
            shape[ndim - 2] = t->h;
            shape[ndim - 1] = t->w;
            n = planes * t->h * t->w;
            float *tmp = cur;
            cur = other;
            other = tmp;
            data = cur;
        } break;
        case RT_TF_HFLIP:
            if (draw(seed, epoch, sample, i, 0) < t->p)
                for (int64_t row = 0; row < planes * H; row++) {
                    float *x = cur + row * W;
                    for (int64_t a = 0, b = W - 1; a < b; a++, b--) {
                        float v = x[a];
                        x[a] = x[b];
                        x[b] = v;
                    }
                }
            break;
        case RT_TF_RANDOM_ERASING: {
            // torchvision.transforms.RandomErasing.get_params: up to 10 attempts at
            // a box of area ~ U(scale) * H * W and log aspect ratio ~ U(log ratio)
            // that fits inside the image; none fits: the image is left as it is.
            if (!(draw(seed, epoch, sample, i, 0) < t->p)) break;
            double area = (double)(H * W), lr0 = log(t->ratio[0]), lr1 = log(t->ratio[1]);
            for (int attempt = 0; attempt < 10; attempt++) {
                int k = 1 + 4 * attempt;
                double ea = area * (t->scale[0] + (t->scale[1] - t->scale[0]) * draw(seed, epoch, sample, i, k));
                double ar = exp(lr0 + (lr1 - lr0) * draw(seed, epoch, sample, i, k + 1));
                // Python's round(): half to even, which nearbyint does in the default rounding mode
                int64_t h = (int64_t)nearbyint(sqrt(ea * ar)), w = (int64_t)nearbyint(sqrt(ea / ar));
                if (!(h < H && w < W)) continue;
                int64_t top = draw_int(seed, epoch, sample, i, k + 2, H - h + 1);
                int64_t left = draw_int(seed, epoch, sample, i, k + 3, W - w + 1);
                for (int64_t pl = 0; pl < planes; pl++)
                    for (int64_t r = top; r < top + h; r++)
                        for (int64_t c = left; c < left + w; c++) cur[pl * H * W + r * W + c] = t->value;
                break;
            }
        } break;
        default: break;
        }
        i++;
    }
    if (data != out) pointwise(NULL, 0, 0, data, u8 && raw, out, n);   // convert or copy
}
