/* idx_test.h — the small IDX data set the end-to-end tests train on (tests/test_run.c,
 * test_ddp.c, test_build.c). */
#ifndef LTL_IDX_TEST_H
#define LTL_IDX_TEST_H

#include <stdio.h>

static inline void idx_be32(FILE *f, unsigned v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

/* dir/name_x, dir/name_y: n 4x4 images of two classes (class 1 bright on the left half, class 0 on
 * the right, with noise) and their labels. Label `bad_label` is 7, out of range; image `black` is
 * all zeros (-1: none). */
static inline void idx_write(const char *dir, const char *name_x, const char *name_y, int n, int bad_label, int black) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name_x);
    FILE *fx = fopen(p, "wb");
    snprintf(p, sizeof p, "%s/%s", dir, name_y);
    FILE *fy = fopen(p, "wb");
    idx_be32(fx, 0x803); idx_be32(fx, (unsigned)n); idx_be32(fx, 4); idx_be32(fx, 4);
    idx_be32(fy, 0x801); idx_be32(fy, (unsigned)n);
    unsigned s = 12345;
    for (int i = 0; i < n; i++) {
        int y = i % 2;
        for (int k = 0; k < 16; k++) {
            s = s * 1103515245u + 12345u;
            fputc(i == black ? 0 : ((k % 4 < 2) == y ? 180 : 40) + (int)(s >> 16) % 60, fx);
        }
        fputc(i == bad_label ? 7 : y, fy);
    }
    fclose(fx);
    fclose(fy);
}

#endif
