/* png.c — a grid of images as a PNG (libpng), like torchvision's save_image(normalize=True):
 * the whole grid is scaled from its minimum..maximum to 0..255, 2-pixel padding. */
#include "rt.h"
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool rt_png_grid(const char *path, const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t nrow,
                 char *err, size_t errlen) {
    if (n < 1 || (c != 1 && c != 3) || h < 1 || w < 1 || nrow < 1 || h > 4096 || w > 4096 || n > 4096) {
        snprintf(err, errlen, "%s: images must be [N, 1 or 3, H, W] (got [%lld, %lld, %lld, %lld])", path,
                 (long long)n, (long long)c, (long long)h, (long long)w);
        return false;
    }
    const int pad = 2;
    int64_t cols = nrow < n ? nrow : n, rows = (n + cols - 1) / cols;
    int64_t W = cols * (w + pad) + pad, H = rows * (h + pad) + pad;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n * c * h * w; i++)
        if (isfinite(x[i])) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
    float scale = hi > lo ? 255.0f / (hi - lo) : 0;
    unsigned char *img = calloc((size_t)(W * H * 3), 1);
    if (!img) { snprintf(err, errlen, "%s: out of memory", path); return false; }
    for (int64_t k = 0; k < n; k++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t xx = 0; xx < w; xx++)
                for (int ch = 0; ch < 3; ch++) {
                    float v = x[((k * c + (c == 3 ? ch : 0)) * h + y) * w + xx];
                    int64_t px = pad + (k % cols) * (w + pad) + xx, py = pad + (k / cols) * (h + pad) + y;
                    img[(py * W + px) * 3 + ch] = (unsigned char)(isfinite(v) ? lrintf((v - lo) * scale) : 0);
                }
    /* written whole or not at all: a temporary file renamed over the target */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    png_structp png = f ? png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL) : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    bool ok = false;
    if (!f) snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    else if (!info) snprintf(err, errlen, "%s: libpng failed", path);
    else if (setjmp(png_jmpbuf(png))) snprintf(err, errlen, "%s: libpng failed while writing", path);
    else {
        png_init_io(png, f);
        png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        for (int64_t y = 0; y < H; y++) png_write_row(png, img + y * W * 3);
        png_write_end(png, NULL);
        ok = true;
    }
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    if (f && fclose(f) != 0 && ok) { snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno)); ok = false; }
    if (ok && rename(tmp, path) != 0) { snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno)); ok = false; }
    if (!ok && f) remove(tmp);
    free(img);
    return ok;
}
