/* test_data.c — the data pipeline: IDX/CSV/raw sources and their errors, splits, transforms
 * against hand-computed values, the loader (shuffle, drop_last, workers, sharding, resume,
 * early stop), and the real Fashion-MNIST when it is installed. Files are written to a
 * fresh mkdtemp directory, never into the repository. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "ir.h"
#include "rt.h"

/* ---- helpers ------------------------------------------------------------ */

static char tmpdir[64];

static void setup_tmp(void) {
  strcpy(tmpdir, "/tmp/ltl-data-XXXXXX");
  cr_assert(mkdtemp(tmpdir), "mkdtemp");
}

static void teardown_tmp(void) {
  DIR *d = opendir(tmpdir);
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      unlink(p);
    }
  closedir(d);
  rmdir(tmpdir);
}

static const char *tpath(const char *name) {
  static char bufs[64][512]; /* enough for one test's paths */
  static int k;
  char *p = bufs[k++ % 64];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  return p;
}

static const char *write_file(const char *name, const void *data, size_t len) {
  const char *p = tpath(name);
  FILE *f = fopen(p, "wb");
  cr_assert(f, "cannot write %s", p);
  cr_assert_eq(fwrite(data, 1, len, f), len);
  fclose(f);
  return p;
}

static const char *write_gz(const char *name, const void *data, size_t len) {
  const char *p = tpath(name);
  gzFile g = gzopen(p, "wb");
  cr_assert(g);
  cr_assert_eq(gzwrite(g, data, (unsigned)len), (int)len);
  gzclose(g);
  return p;
}

static const char *write_text(const char *name, const char *text) { return write_file(name, text, strlen(text)); }

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* An IDX3 image file of n images h x w (pixel (i, r, c) = i + 3r + 5c mod 256) plus extra bytes. */
static unsigned char *idx_images(uint32_t n, uint32_t h, uint32_t w, size_t *len) {
  *len = 16 + (size_t)n * h * w;
  unsigned char *b = calloc(1, *len + 64);
  put_be32(b, 0x803), put_be32(b + 4, n), put_be32(b + 8, h), put_be32(b + 12, w);
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t r = 0; r < h; r++)
      for (uint32_t c = 0; c < w; c++) b[16 + (i * h + r) * w + c] = (unsigned char)(i + 3 * r + 5 * c);
  return b;
}

static unsigned char *idx_labels(uint32_t n, int classes, size_t *len) {
  *len = 8 + n;
  unsigned char *b = calloc(1, *len + 64);
  put_be32(b, 0x801), put_be32(b + 4, n);
  for (uint32_t i = 0; i < n; i++) b[8 + i] = (unsigned char)(i * 7 % (uint32_t)classes);
  return b;
}

/* The call failed (result NULL) with a message naming `file` (when given) and containing `what`. */
static void check_error(const void *result, char **err, const char *file, const char *what, int line) {
  cr_expect_null(result, "line %d: no error", line);
  cr_assert(*err, "line %d: no error message", line);
  if (file) cr_expect(strstr(*err, file), "line %d: the message does not name the file: %s", line, *err);
  cr_expect(strstr(*err, what), "line %d: expected '%s' in: %s", line, what, *err);
  free(*err);
  *err = NULL;
}
#define expect_error(result, err, file, what) check_error(result, &(err), file, what, __LINE__)

static int thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n - 2;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

TestSuite(data, .init = setup_tmp, .fini = teardown_tmp);

/* ---- IDX ---------------------------------------------------------------- */

Test(data, idx_raw_and_gzip) {
  size_t il, ll;
  unsigned char *im = idx_images(5, 3, 4, &il), *lb = idx_labels(5, 10, &ll);
  const char *paths[2][2] = {
      {write_file("im.idx", im, il), write_file("lb.idx", lb, ll)},
      {write_gz("im.idx.gz", im, il), write_gz("lb.idx.gz", lb, ll)},
  };
  for (int z = 0; z < 2; z++) {
    char *err = NULL;
    RtDataset *ds = rt_data_idx(paths[z][0], paths[z][1], 10, &err);
    cr_assert_not_null(ds, "%s", err);
    cr_expect_eq(rt_data_len(ds), 5);
    cr_expect_eq(rt_data_dtype(ds), RT_DATA_U8);
    int64_t shape[RT_DATA_MAX_DIMS];
    cr_assert_eq(rt_data_sample_shape(ds, shape), 3);
    cr_expect(shape[0] == 1 && shape[1] == 3 && shape[2] == 4);
    cr_expect_eq(rt_data_sample_numel(ds), 12);
    cr_expect(rt_data_has_labels(ds));
    cr_expect_eq(rt_data_num_classes(ds), 10);
    for (int i = 0; i < 5; i++) {
      cr_expect_eq(rt_data_label(ds, i), i * 7 % 10);
      cr_expect_arr_eq(rt_data_sample(ds, i), im + 16 + 12 * i, 12);
    }
    rt_data_free(ds);
  }
  /* no labels; num_classes from the data when not given */
  char *err = NULL;
  RtDataset *ds = rt_data_idx(paths[0][0], NULL, 0, &err);
  cr_assert_not_null(ds, "%s", err);
  cr_expect(!rt_data_has_labels(ds));
  cr_expect_eq(rt_data_label(ds, 0), -1);
  rt_data_free(ds);
  ds = rt_data_idx(paths[1][0], paths[1][1], 0, &err);
  cr_expect_eq(rt_data_num_classes(ds), 9); /* labels 0 7 4 1 8 */
  rt_data_free(ds);
  free(im), free(lb);
}

Test(data, idx_errors) {
  size_t il, ll;
  unsigned char *im = idx_images(5, 3, 4, &il), *lb = idx_labels(5, 10, &ll);
  const char *good_im = write_file("im", im, il), *good_lb = write_file("lb", lb, ll);
  char *err = NULL;
  const char *p;
  RtDataset *ds;

  ds = rt_data_idx(tpath("missing.gz"), good_lb, 10, &err);
  expect_error(ds, err, "missing.gz", "cannot open: No such file or directory");
  ds = rt_data_idx(tmpdir, good_lb, 10, &err);
  expect_error(ds, err, tmpdir, "Is a directory");

  p = write_file("short", im, 3);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "too short for an IDX file");

  /* bad magic: a labels file given as images, images as labels, a wrong type byte */
  ds = rt_data_idx(good_lb, good_lb, 10, &err);
  expect_error(ds, err, good_lb, "bad magic 0x00000801 (expected 0x00000803: IDX u8 images)");
  ds = rt_data_idx(good_im, good_im, 10, &err);
  expect_error(ds, err, good_im, "bad magic 0x00000803 (expected 0x00000801: IDX u8 labels)");
  im[2] = 0x0d;
  p = write_gz("f32.gz", im, il);
  im[2] = 0x08;
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "bad magic 0x00000d03");

  p = write_file("hdr", im, 10);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "truncated header");

  /* truncated and oversized, raw and gzip'd */
  p = write_file("trunc", im, il - 1);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "truncated: the header announces 5 images of 3x4 (60 bytes of data) but the file holds 59");
  p = write_gz("trunc.gz", im, il - 7);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "truncated: the header announces 5 images of 3x4 (60 bytes of data) but the file holds 53");
  p = write_file("long", im, il + 2);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "2 trailing bytes after the 60 bytes of data the header announces");
  p = write_gz("long.gz", lb, ll + 9);
  ds = rt_data_idx(good_im, p, 10, &err);
  expect_error(ds, err, p, "9 trailing bytes after the 5 bytes of data the header announces (5 labels)");

  /* a header announcing far more than the file holds allocates nothing big */
  put_be32(im + 4, 4000000000u);
  p = write_gz("huge.gz", im, il);
  put_be32(im + 4, 5);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "truncated: the header announces 4000000000 images of 3x4");
  put_be32(im + 8, 0);
  p = write_file("zero", im, il);
  put_be32(im + 8, 3);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "dimension 1 is 0");

  /* counts differ */
  size_t l4;
  unsigned char *lb4 = idx_labels(4, 10, &l4);
  p = write_file("lb4", lb4, l4);
  ds = rt_data_idx(good_im, p, 10, &err);
  expect_error(ds, err, p, "4 labels, but");
  free(lb4);

  /* label out of range */
  ds = rt_data_idx(good_im, good_lb, 8, &err);
  expect_error(ds, err, good_lb, "label 8 of sample 4 is out of range [0, 8)");

  /* gzip: a bad stream, a cut stream, a corrupted checksum */
  unsigned char bad[32] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  p = write_file("bad.gz", bad, sizeof bad);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "bad gzip stream (");
  const char *gz = write_gz("cut.gz", im, il);
  FILE *f = fopen(gz, "rb");
  unsigned char buf[4096];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  p = write_file("cut.gz", buf, n - 6);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "bad gzip stream (unexpected end of file)");
  buf[n - 8] ^= 0xff; /* CRC-32 of the trailer */
  p = write_file("crc.gz", buf, n);
  ds = rt_data_idx(p, good_lb, 10, &err);
  expect_error(ds, err, p, "bad gzip stream (incorrect data check)");
  free(im), free(lb);
}

/* ---- CSV and raw arrays -------------------------------------------------- */

Test(data, csv_good) {
  const char *p = write_text("a.csv", "f0, f1 ,label,f2\r\n1,2,3,4\r\n\r\n 0.5,-1e2,0, 7 \n\n-0,2.25,2,3");
  char *err = NULL;
  RtCsvOptions o = {.header = true, .label_name = "label", .num_classes = 4};
  RtDataset *ds = rt_data_csv(p, &o, &err);
  cr_assert_not_null(ds, "%s", err);
  cr_expect_eq(rt_data_len(ds), 3);
  cr_expect_eq(rt_data_dtype(ds), RT_DATA_F32);
  int64_t sh[RT_DATA_MAX_DIMS];
  cr_expect_eq(rt_data_sample_shape(ds, sh), 1);
  cr_expect_eq(sh[0], 3);
  const float want[3][3] = {{1, 2, 4}, {0.5f, -100, 7}, {-0.0f, 2.25f, 3}};
  const int64_t wl[3] = {3, 0, 2};
  for (int i = 0; i < 3; i++) {
    cr_expect_arr_eq(rt_data_sample(ds, i), want[i], sizeof want[i]);
    cr_expect_eq(rt_data_label(ds, i), wl[i]);
  }
  rt_data_free(ds);

  /* by index, no header, gzip'd, ';' separated, reshaped to [2, 2] */
  const char *text = "9;1;2;3;4\n8;5;6;7;8\n";
  p = write_gz("b.csv.gz", text, strlen(text));
  RtCsvOptions o2 = {.delim = ';', .label_col = 0, .sample_ndim = 2, .sample_shape = (int64_t[]){2, 2}};
  ds = rt_data_csv(p, &o2, &err);
  cr_assert_not_null(ds, "%s", err);
  cr_expect_eq(rt_data_sample_shape(ds, sh), 2);
  cr_expect_eq(rt_data_label(ds, 1), 8);
  cr_expect_eq(rt_data_num_classes(ds), 10);
  cr_expect_arr_eq(rt_data_sample(ds, 1), ((float[]){5, 6, 7, 8}), 16);
  rt_data_free(ds);

  /* no label at all */
  RtCsvOptions o3 = {.label_col = -1};
  ds = rt_data_csv(write_text("c.csv", "1,2\n3,4\n"), &o3, &err);
  cr_assert_not_null(ds, "%s", err);
  cr_expect(!rt_data_has_labels(ds));
  cr_expect_eq(rt_data_len(ds), 2);
  rt_data_free(ds);
}

Test(data, csv_errors) {
  char *err = NULL;
  RtDataset *ds;
  const char *p;
  RtCsvOptions lab = {.label_col = 2, .num_classes = 3};
  p = write_text("e1.csv", "1,2,0\n1,x2,1\n");
  ds = rt_data_csv(p, &lab, &err);
  expect_error(ds, err, p, "e1.csv:2:3: bad number 'x2'");
  p = write_text("e2.csv", "1,2,0\n1,2\n");
  ds = rt_data_csv(p, &lab, &err);
  expect_error(ds, err, p, "e2.csv:2:4: 2 fields, expected 3");
  p = write_text("e3.csv", "1,2,0\n1,2,1,5\n");
  ds = rt_data_csv(p, &lab, &err);
  expect_error(ds, err, p, "e3.csv:2:7: 4 fields, expected 3");
  p = write_text("e4.csv", "1,2,0\n1,2,1.5\n");
  ds = rt_data_csv(p, &lab, &err);
  expect_error(ds, err, p, "e4.csv:2:5: label '1.5' is not an integer");
  p = write_text("e5.csv", "1,2,0\n\n1,2,3\n");
  ds = rt_data_csv(p, &lab, &err);
  expect_error(ds, err, p, "e5.csv:3:5: label 3 is out of range [0, 3)");
  p = write_text("e6.csv", "1,,0\n");
  ds = rt_data_csv(p, &lab, &err);
  expect_error(ds, err, p, "e6.csv:1:3: empty field");
  p = write_text("e7.csv", "1,nan,0\n");
  ds = rt_data_csv(p, &lab, &err);
  expect_error(ds, err, p, "e7.csv:1:3: bad number 'nan'");
  p = write_text("e8.csv", "a,b\n");
  ds = rt_data_csv(p, &(RtCsvOptions){.header = true, .label_name = "c"}, &err);
  expect_error(ds, err, p, "e8.csv:1: no column named 'c' in the header");
  ds = rt_data_csv(p, &(RtCsvOptions){.header = true, .label_name = "b"}, &err);
  expect_error(ds, err, p, "no data rows");
  ds = rt_data_csv(p, &(RtCsvOptions){.label_col = 5}, &err);
  expect_error(ds, err, p, "label column 5 does not exist (the rows have 2 columns)");
  ds = rt_data_csv(p, &(RtCsvOptions){.label_name = "b"}, &err);
  expect_error(ds, err, p, "needs a header line");
  ds = rt_data_csv(tpath("nope.csv"), &lab, &err);
  expect_error(ds, err, "nope.csv", "cannot open");
  p = write_file("nul.csv", "1,2\n3\0,4\n", 9);
  ds = rt_data_csv(p, &(RtCsvOptions){.label_col = -1}, &err);
  expect_error(ds, err, p, "nul.csv:2: a NUL byte");
}

Test(data, raw_arrays) {
  float x[6 * 4];
  int64_t y[6];
  for (int i = 0; i < 24; i++) x[i] = (float)i * 0.5f;
  for (int i = 0; i < 6; i++) y[i] = i % 3;
  const char *xp = write_file("x.f32", x, sizeof x), *yp = write_gz("y.i64.gz", y, sizeof y);
  char *err = NULL;
  int64_t shape[2] = {2, 2};
  RtDataset *ds = rt_data_raw(xp, RT_DATA_F32, -1, 2, shape, yp, RT_DATA_I64, 3, &err);
  cr_assert_not_null(ds, "%s", err);
  cr_expect_eq(rt_data_len(ds), 6);
  cr_expect_arr_eq(rt_data_sample(ds, 5), x + 20, 16);
  cr_expect_eq(rt_data_label(ds, 4), 1);
  rt_data_free(ds);
  ds = rt_data_raw(xp, RT_DATA_F32, 5, 2, shape, NULL, RT_DATA_U8, 0, &err);
  expect_error(ds, err, xp, "holds 96 bytes but 5 samples of f32 [2, 2] need 80");
  ds = rt_data_raw(xp, RT_DATA_F32, -1, 1, (int64_t[]){5}, NULL, RT_DATA_U8, 0, &err);
  expect_error(ds, err, xp, "holds 96 bytes, not a positive multiple of 20");
  ds = rt_data_raw(xp, RT_DATA_F32, 6, 2, shape, yp, RT_DATA_I32, 0, &err);
  expect_error(ds, err, yp, "holds 48 bytes but 6 i32 labels need 24");
  ds = rt_data_raw(xp, RT_DATA_F32, 6, 2, shape, yp, RT_DATA_I64, 2, &err);
  expect_error(ds, err, yp, "label 2 of sample 2 is out of range [0, 2)");
}

/* ---- subsets, splits, permutations --------------------------------------- */

static RtDataset *counting_set(int64_t n, int ndim, const int64_t *shape) {
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= shape[i];
  float *x = malloc((size_t)(n * numel) * sizeof *x);
  int64_t *y = malloc((size_t)n * sizeof *y);
  for (int64_t i = 0; i < n; i++) {
    y[i] = i % 10;
    for (int64_t e = 0; e < numel; e++) x[i * numel + e] = (float)(i * 1000 + e);
  }
  char *err = NULL;
  RtDataset *ds = rt_data_from_memory(RT_DATA_F32, n, ndim, shape, x, y, 10, &err);
  cr_assert_not_null(ds, "%s", err);
  free(x), free(y);
  return ds;
}

static bool is_permutation(const int64_t *p, int64_t n) {
  char *seen = calloc((size_t)n, 1);
  bool ok = true;
  for (int64_t i = 0; i < n; i++) {
    if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = false;
    else seen[p[i]] = 1;
  }
  free(seen);
  return ok;
}

Test(data, permutation) {
  int64_t a[1000], b[1000], c[1000];
  rt_data_permutation(1000, 7, 3, a);
  rt_data_permutation(1000, 7, 3, b);
  rt_data_permutation(1000, 7, 4, c);
  cr_expect(is_permutation(a, 1000));
  cr_expect_arr_eq(a, b, sizeof a);
  cr_expect(memcmp(a, c, sizeof a) != 0);
  int fixed = 0;
  for (int i = 0; i < 1000; i++) fixed += a[i] == i;
  cr_expect_lt(fixed, 10); /* ~1 expected */
}

Test(data, split_and_subset) {
  RtDataset *ds = counting_set(100, 1, (int64_t[]){2});
  RtDataset *parts[3], *again[3], *other[3];
  char *err = NULL;
  cr_assert_eq(rt_data_split(ds, 3, (double[]){70, 20, 10}, 42, parts, &err), 0, "%s", err);
  cr_expect_eq(rt_data_len(parts[0]), 70);
  cr_expect_eq(rt_data_len(parts[1]), 20);
  cr_expect_eq(rt_data_len(parts[2]), 10);
  int64_t all[100], k = 0;
  for (int p = 0; p < 3; p++)
    for (int64_t i = 0; i < rt_data_len(parts[p]); i++) {
      all[k] = rt_data_source_index(parts[p], i);
      /* samples and labels follow their index */
      cr_expect_eq(((const float *)rt_data_sample(parts[p], i))[0], (float)(all[k] * 1000));
      cr_expect_eq(rt_data_label(parts[p], i), all[k] % 10);
      k++;
    }
  cr_expect(is_permutation(all, 100), "the parts are disjoint and cover the data set");
  /* the same seed: the same split; another seed: another */
  cr_assert_eq(rt_data_split(ds, 3, (double[]){70, 20, 10}, 42, again, &err), 0);
  cr_assert_eq(rt_data_split(ds, 3, (double[]){70, 20, 10}, 43, other, &err), 0);
  bool same = true, differ = false;
  for (int i = 0; i < 70; i++) {
    same &= rt_data_source_index(parts[0], i) == rt_data_source_index(again[0], i);
    differ |= rt_data_source_index(parts[0], i) != rt_data_source_index(other[0], i);
  }
  cr_expect(same);
  cr_expect(differ);
  /* a subset of a split (indices compose); the parent can go first */
  RtDataset *sub = rt_data_subset(parts[1], (int64_t[]){19, 0}, 2, &err);
  cr_assert_not_null(sub, "%s", err);
  rt_data_free(parts[0]);
  rt_data_free(parts[2]);
  int64_t s19 = rt_data_source_index(again[1], 19);
  cr_expect_eq(rt_data_source_index(sub, 0), s19);
  rt_data_free(parts[1]);
  rt_data_free(ds);
  cr_expect_eq(((const float *)rt_data_sample(sub, 0))[1], (float)(s19 * 1000 + 1));
  rt_data_free(sub);
  for (int p = 0; p < 3; p++) rt_data_free(again[p]), rt_data_free(other[p]);

  /* fractions as torch: floor(f * n), the remainder one each to the first parts */
  ds = counting_set(10, 1, (int64_t[]){1});
  cr_assert_eq(rt_data_split(ds, 3, (double[]){0.34, 0.33, 0.33}, 1, parts, &err), 0, "%s", err);
  cr_expect_eq(rt_data_len(parts[0]), 4);
  cr_expect_eq(rt_data_len(parts[1]), 3);
  cr_expect_eq(rt_data_len(parts[2]), 3);
  for (int p = 0; p < 3; p++) rt_data_free(parts[p]);
  cr_assert_eq(rt_data_split(ds, 2, (double[]){0.5, 0.5}, 1, parts, &err), 0);
  cr_expect_eq(rt_data_len(parts[0]), 5);
  for (int p = 0; p < 2; p++) rt_data_free(parts[p]);
  cr_expect_eq(rt_data_split(ds, 2, (double[]){7, 2}, 1, parts, &err), -1);
  cr_expect(strstr(err, "split sizes sum to 9 but the data set has 10 samples"), "%s", err);
  free(err), err = NULL;
  cr_expect_eq(rt_data_split(ds, 2, (double[]){7.5, 2.5}, 1, parts, &err), -1);
  cr_expect(strstr(err, "counts or fractions"), "%s", err);
  free(err), err = NULL;
  RtDataset *bad = rt_data_subset(ds, (int64_t[]){3, 10}, 2, &err);
  expect_error(bad, err, NULL, "subset index 10 is out of range [0, 10)");
  rt_data_free(ds);
}

/* ---- transforms ----------------------------------------------------------- */

static void apply1(const RtTransforms *tf, RtDataDtype dt, int ndim, const int64_t *shape, const void *in, float *out,
                   uint64_t seed, int64_t epoch, int64_t sample) {
  int64_t n = rt_tf_scratch_floats(tf, ndim, shape);
  cr_assert_gt(n, 0);
  float *scratch = malloc((size_t)n * sizeof *scratch);
  rt_tf_apply(tf, dt, ndim, shape, in, out, scratch, seed, epoch, sample);
  free(scratch);
}

static double tdraw(uint64_t seed, int64_t epoch, int64_t sample, int t, int k) {
  return philox_uniform(seed, RT_DATA_STREAM_TRANSFORM | (uint64_t)epoch, (uint64_t)sample << 16 | (uint64_t)t << 8 | (uint64_t)k);
}

Test(data, transform_scale_normalize) {
  char *err = NULL;
  RtTransforms *tf = rt_tf_new();
  cr_assert_eq(rt_tf_scale(tf, 1.0f / 255, 0, &err), 0);
  cr_assert_eq(rt_tf_normalize(tf, 1, (float[]){0.5f}, (float[]){0.25f}, &err), 0);
  unsigned char px[4] = {0, 51, 255, 102};
  float out[4];
  apply1(tf, RT_DATA_U8, 2, (int64_t[]){2, 2}, px, out, 0, 0, 0);
  /* (v / 255 - 0.5) / 0.25: 0 -> -2, 51 -> -1.2, 255 -> 2, 102 -> -0.4 */
  const float want[4] = {-2, -1.2f, 2, -0.4f};
  for (int i = 0; i < 4; i++) cr_expect_float_eq(out[i], want[i], 1e-6f, "%d: %g", i, out[i]);
  rt_tf_free(tf);

  /* per channel on [2, 1, 2] */
  tf = rt_tf_new();
  cr_assert_eq(rt_tf_normalize(tf, 2, (float[]){1, 2}, (float[]){2, 4}, &err), 0);
  float x[4] = {1, 2, 3, 4}, y[4];
  apply1(tf, RT_DATA_F32, 3, (int64_t[]){2, 1, 2}, x, y, 0, 0, 0);
  cr_expect_arr_eq(y, ((float[]){0, 0.5f, 0.25f, 0.5f}), sizeof y);
  /* 3 channels given for 2 */
  cr_expect_eq(rt_tf_output_shape(tf, 3, (int64_t[]){3, 4, 4}, (int64_t[RT_DATA_MAX_DIMS]){0}, &err), -1);
  cr_expect(strstr(err, "normalize (transform 0): 2 means and stds for 3 channels"), "%s", err);
  free(err), err = NULL;
  rt_tf_free(tf);

  /* bad arguments */
  tf = rt_tf_new();
  cr_expect_eq(rt_tf_normalize(tf, 1, (float[]){0}, (float[]){0}, &err), -1);
  cr_expect(strstr(err, "std 0 of channel 0 is zero"), "%s", err);
  free(err), err = NULL;
  cr_expect_eq(rt_tf_hflip(tf, 1.5, &err), -1);
  cr_expect(strstr(err, "hflip: p = 1.5 is not in [0, 1]"), "%s", err);
  free(err), err = NULL;
  cr_expect_eq(rt_tf_random_crop(tf, 0, 3, 0, &err), -1);
  free(err), err = NULL;
  cr_expect_eq(rt_tf_random_erasing(tf, 0.5, 0.5, 0.2, 0.3, 3.3, 0, &err), -1);
  free(err), err = NULL;
  cr_expect_eq(rt_tf_count(tf), 0);
  rt_tf_free(tf);
}

Test(data, transform_hflip) {
  char *err = NULL;
  RtTransforms *tf = rt_tf_new();
  cr_assert_eq(rt_tf_hflip(tf, 1.0, &err), 0);
  float x[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, y[12];
  apply1(tf, RT_DATA_F32, 3, (int64_t[]){2, 2, 3}, x, y, 5, 0, 0);
  cr_expect_arr_eq(y, ((float[]){3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10}), sizeof y);
  rt_tf_free(tf);
  tf = rt_tf_new();
  cr_assert_eq(rt_tf_hflip(tf, 0.0, &err), 0);
  apply1(tf, RT_DATA_F32, 3, (int64_t[]){2, 2, 3}, x, y, 5, 0, 0);
  cr_expect_arr_eq(y, x, sizeof y);
  rt_tf_free(tf);
  /* p = 0.5: flipped exactly when the documented draw is below p */
  tf = rt_tf_new();
  rt_tf_hflip(tf, 0.5, &err);
  int flips = 0;
  for (int s = 0; s < 200; s++) {
    apply1(tf, RT_DATA_F32, 2, (int64_t[]){1, 3}, x, y, 9, 2, s);
    bool flipped = y[0] == 3;
    cr_expect_eq(flipped, tdraw(9, 2, s, 0, 0) < 0.5, "sample %d", s);
    flips += flipped;
  }
  cr_expect(flips > 70 && flips < 130, "%d flips of 200", flips);
  /* a 1-D sample cannot be flipped */
  cr_expect_eq(rt_tf_output_shape(tf, 1, (int64_t[]){3}, (int64_t[RT_DATA_MAX_DIMS]){0}, &err), -1);
  cr_expect(strstr(err, "at least 2 dimensions"), "%s", err);
  free(err);
  rt_tf_free(tf);
}

Test(data, transform_random_crop) {
  char *err = NULL;
  RtTransforms *tf = rt_tf_new();
  cr_assert_eq(rt_tf_random_crop(tf, 3, 3, 1, &err), 0);
  int64_t out_shape[RT_DATA_MAX_DIMS];
  cr_assert_eq(rt_tf_output_shape(tf, 3, (int64_t[]){1, 3, 3}, out_shape, &err), 0);
  cr_expect(out_shape[0] == 1 && out_shape[1] == 3 && out_shape[2] == 3);
  /* the padded image (zeros around 1..9) and every crop offset the draws give */
  const float padded[5][5] = {{0, 0, 0, 0, 0}, {0, 1, 2, 3, 0}, {0, 4, 5, 6, 0}, {0, 7, 8, 9, 0}, {0, 0, 0, 0, 0}};
  unsigned char x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  bool seen[3][3] = {{false}};
  for (int s = 0; s < 100; s++) {
    float y[9];
    apply1(tf, RT_DATA_U8, 3, (int64_t[]){1, 3, 3}, x, y, 11, 4, s);
    int top = (int)(tdraw(11, 4, s, 0, 0) * 3), left = (int)(tdraw(11, 4, s, 0, 1) * 3);
    seen[top][left] = true;
    for (int r = 0; r < 3; r++)
      for (int c = 0; c < 3; c++) cr_expect_eq(y[r * 3 + c], padded[top + r][left + c], "sample %d (%d, %d)", s, r, c);
  }
  for (int i = 0; i < 9; i++) cr_expect(seen[i / 3][i % 3], "offset (%d, %d) never drawn", i / 3, i % 3);
  rt_tf_free(tf);
  /* a smaller crop shrinks the shape; a crop larger than the padded image is refused */
  tf = rt_tf_new();
  rt_tf_random_crop(tf, 2, 4, 0, &err);
  cr_assert_eq(rt_tf_output_shape(tf, 3, (int64_t[]){2, 3, 5}, out_shape, &err), 0);
  cr_expect(out_shape[0] == 2 && out_shape[1] == 2 && out_shape[2] == 4);
  cr_expect_eq(rt_tf_output_shape(tf, 2, (int64_t[]){3, 3}, out_shape, &err), -1);
  cr_expect(strstr(err, "crop 2x4 is larger than the padded image 3x3"), "%s", err);
  free(err);
  rt_tf_free(tf);
}

Test(data, transform_random_erasing) {
  char *err = NULL;
  float x[2 * 10 * 10], y[200];
  for (int i = 0; i < 200; i++) x[i] = (float)(i + 1);
  int64_t shape[3] = {2, 10, 10};
  /* area fraction 0.25 of 10x10, ratio 1: a 5x5 box at the drawn (top, left), both channels */
  RtTransforms *tf = rt_tf_new();
  cr_assert_eq(rt_tf_random_erasing(tf, 1, 0.25, 0.25, 1, 1, -3, &err), 0);
  for (int s = 0; s < 20; s++) {
    apply1(tf, RT_DATA_F32, 3, shape, x, y, 3, 0, s);
    int top = (int)(tdraw(3, 0, s, 0, 3) * 6), left = (int)(tdraw(3, 0, s, 0, 4) * 6);
    for (int i = 0; i < 200; i++) {
      int r = i / 10 % 10, c = i % 10;
      bool in = r >= top && r < top + 5 && c >= left && c < left + 5;
      cr_expect_eq(y[i], in ? -3.0f : x[i], "sample %d element %d", s, i);
    }
  }
  rt_tf_free(tf);
  /* sqrt(0.0625 * 100) = 2.5 rounds half to even, as Python's round: a 2x2 box */
  tf = rt_tf_new();
  rt_tf_random_erasing(tf, 1, 0.0625, 0.0625, 1, 1, 0, &err);
  apply1(tf, RT_DATA_F32, 3, shape, x, y, 3, 0, 0);
  int erased = 0;
  for (int i = 0; i < 200; i++) erased += y[i] == 0;
  cr_expect_eq(erased, 2 * 4);
  rt_tf_free(tf);
  /* a box that never fits (the whole image) leaves the image; p = 0 never erases */
  tf = rt_tf_new();
  rt_tf_random_erasing(tf, 1, 1, 1, 1, 1, 0, &err);
  rt_tf_random_erasing(tf, 0, 0.02, 0.33, 0.3, 3.3, 0, &err);
  apply1(tf, RT_DATA_F32, 3, shape, x, y, 3, 0, 0);
  cr_expect_arr_eq(y, x, sizeof y);
  rt_tf_free(tf);
  /* torchvision's defaults: sometimes erased, boxes within the scale range */
  tf = rt_tf_new();
  rt_tf_random_erasing(tf, 0.5, 0.02, 0.33, 0.3, 3.3, 0, &err);
  int hit = 0;
  for (int s = 0; s < 100; s++) {
    apply1(tf, RT_DATA_F32, 3, shape, x, y, 8, 1, s);
    int z = 0;
    for (int i = 0; i < 100; i++) z += y[i] == 0;
    hit += z > 0;
    cr_expect_leq(z, 40, "sample %d erased %d of 100", s, z); /* 0.33 * 100 rounded up at most */
    if (!(tdraw(8, 1, s, 0, 0) < 0.5)) cr_expect_eq(z, 0, "sample %d: erased though the draw is >= p", s);
  }
  cr_expect(hit > 25 && hit < 75, "%d erased of 100", hit);
  rt_tf_free(tf);
}

Test(data, transform_determinism) {
  char *err = NULL;
  RtTransforms *tf = rt_tf_new();
  rt_tf_scale(tf, 1.0f / 255, 0, &err);
  rt_tf_random_crop(tf, 8, 8, 2, &err);
  rt_tf_hflip(tf, 0.5, &err);
  rt_tf_random_erasing(tf, 0.5, 0.02, 0.33, 0.3, 3.3, 0, &err);
  unsigned char x[64];
  for (int i = 0; i < 64; i++) x[i] = (unsigned char)(i * 4);
  int64_t shape[3] = {1, 8, 8};
  float a[64], b[64], c[64], d[64];
  apply1(tf, RT_DATA_U8, 3, shape, x, a, 1, 0, 17);
  apply1(tf, RT_DATA_U8, 3, shape, x, b, 1, 0, 17);
  cr_expect_arr_eq(a, b, sizeof a);
  int differ_epoch = 0, differ_seed = 0;
  for (int s = 0; s < 10; s++) {
    apply1(tf, RT_DATA_U8, 3, shape, x, a, 1, 0, s);
    apply1(tf, RT_DATA_U8, 3, shape, x, c, 1, 1, s);
    apply1(tf, RT_DATA_U8, 3, shape, x, d, 2, 0, s);
    differ_epoch += memcmp(a, c, sizeof a) != 0;
    differ_seed += memcmp(a, d, sizeof a) != 0;
  }
  cr_expect_geq(differ_epoch, 8);
  cr_expect_geq(differ_seed, 8);
  RtTransforms *cl = rt_tf_clone(tf);
  apply1(cl, RT_DATA_U8, 3, shape, x, c, 1, 0, 9);
  cr_expect_arr_eq(a, c, sizeof a);
  cr_expect_eq(rt_tf_count(cl), 4);
  cr_expect_eq(rt_tf_kind(cl, 2), RT_TF_HFLIP);
  rt_tf_free(cl);
  rt_tf_free(tf);
}

/* ---- the loader ----------------------------------------------------------- */

/* All batches of one epoch: indices (concatenated) and a checksum of x and y per batch. */
typedef struct {
  int64_t n, nb, idx[4096], sizes[256];
  uint64_t sum[256];
} Epoch;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211u;
  return h;
}

static void run_epoch(RtLoader *ld, int64_t epoch, int64_t start, Epoch *e) {
  char *err = NULL;
  memset(e, 0, sizeof *e);
  cr_assert_eq(rt_loader_start(ld, epoch, start, &err), 0, "%s", err);
  int64_t shape[RT_DATA_MAX_DIMS];
  int nd = rt_loader_sample_shape(ld, shape);
  int64_t numel = 1;
  for (int i = 0; i < nd; i++) numel *= shape[i];
  size_t es = rt_data_dtype_size(rt_loader_dtype(ld));
  for (const RtBatch *b; (b = rt_loader_next(ld));) {
    cr_assert_eq(b->index, start + e->nb, "batches in order");
    cr_assert_eq(b->epoch, epoch);
    cr_assert_eq(b->shape[0], b->size);
    memcpy(e->idx + e->n, b->indices, (size_t)b->size * sizeof *b->indices);
    e->n += b->size;
    e->sizes[e->nb] = b->size;
    uint64_t h = fnv(14695981039346656037u, b->x, (size_t)(b->size * numel) * es);
    if (b->y) h = fnv(h, b->y, (size_t)b->size * sizeof *b->y);
    e->sum[e->nb++] = h;
  }
  cr_assert_null(rt_loader_next(ld), "stays at the end");
}

static RtTransforms *augment(void) {
  char *err = NULL;
  RtTransforms *tf = rt_tf_new();
  rt_tf_scale(tf, 0.001f, -0.5f, &err);
  rt_tf_random_crop(tf, 4, 4, 1, &err);
  rt_tf_hflip(tf, 0.5, &err);
  rt_tf_normalize(tf, 1, (float[]){0.1f}, (float[]){0.9f}, &err);
  return tf;
}

Test(data, loader_shuffle_epochs) {
  RtDataset *ds = counting_set(103, 3, (int64_t[]){1, 4, 4});
  char *err = NULL;
  RtLoaderOptions o = {.batch_size = 10, .shuffle = true, .seed = 5, .workers = 2};
  RtLoader *ld = rt_loader_create(ds, NULL, &o, &err);
  cr_assert_not_null(ld, "%s", err);
  cr_expect_eq(rt_loader_num_batches(ld), 11);
  cr_expect_eq(rt_loader_last_batch_size(ld), 3);
  static Epoch e0, e1, e0b, other;
  run_epoch(ld, 0, 0, &e0);
  run_epoch(ld, 1, 0, &e1);
  cr_expect_eq(e0.n, 103);
  cr_expect_eq(e0.nb, 11);
  cr_expect_eq(e0.sizes[10], 3);
  cr_expect(is_permutation(e0.idx, 103), "every sample exactly once");
  cr_expect(is_permutation(e1.idx, 103));
  cr_expect(memcmp(e0.idx, e1.idx, 103 * sizeof(int64_t)) != 0, "a new order each epoch");
  /* the order of epoch e is rt_data_permutation(N, seed, e) */
  int64_t perm[103];
  rt_data_permutation(103, 5, 1, perm);
  cr_expect_arr_eq(e1.idx, perm, sizeof perm);
  /* same seed: same batches (x and y too), even in a new loader; another seed: another order */
  RtLoader *ld2 = rt_loader_create(ds, NULL, &o, &err);
  run_epoch(ld2, 0, 0, &e0b);
  cr_expect_arr_eq(e0.idx, e0b.idx, 103 * sizeof(int64_t));
  cr_expect_arr_eq(e0.sum, e0b.sum, 11 * sizeof(uint64_t));
  rt_loader_free(ld2);
  o.seed = 6;
  ld2 = rt_loader_create(ds, NULL, &o, &err);
  run_epoch(ld2, 0, 0, &other);
  cr_expect(memcmp(e0.idx, other.idx, 103 * sizeof(int64_t)) != 0);
  rt_loader_free(ld2);
  /* no shuffle: in order; labels and samples match their indices */
  o.shuffle = false;
  ld2 = rt_loader_create(ds, NULL, &o, &err);
  cr_assert_eq(rt_loader_start(ld2, 3, 0, &err), 0);
  const RtBatch *b = rt_loader_next(ld2);
  cr_assert_not_null(b);
  cr_expect_eq(b->dtype, RT_DATA_F32);
  cr_expect(b->ndim == 4 && b->shape[1] == 1 && b->shape[2] == 4 && b->shape[3] == 4);
  for (int i = 0; i < 10; i++) {
    cr_expect_eq(b->indices[i], i);
    cr_expect_eq(b->y[i], i % 10);
    cr_expect_eq(((float *)b->x)[i * 16 + 15], (float)(i * 1000 + 15));
  }
  rt_loader_free(ld2);
  rt_loader_free(ld);
  rt_data_free(ds);
}

Test(data, loader_drop_last_limit_u8) {
  size_t il, ll;
  unsigned char *im = idx_images(23, 2, 3, &il), *lb = idx_labels(23, 10, &ll);
  char *err = NULL;
  RtDataset *ds = rt_data_idx(write_file("i", im, il), write_file("l", lb, ll), 10, &err);
  cr_assert_not_null(ds, "%s", err);
  RtLoaderOptions o = {.batch_size = 5, .drop_last = true, .shuffle = true};
  RtLoader *ld = rt_loader_create(ds, NULL, &o, &err);
  cr_expect_eq(rt_loader_num_batches(ld), 4);
  cr_expect_eq(rt_loader_last_batch_size(ld), 5);
  static Epoch e;
  run_epoch(ld, 0, 0, &e);
  cr_expect_eq(e.n, 20);
  for (int i = 0; i < 4; i++) cr_expect_eq(e.sizes[i], 5);
  /* without transforms the batch is u8, the samples' bytes */
  cr_assert_eq(rt_loader_start(ld, 0, 0, &err), 0);
  const RtBatch *b = rt_loader_next(ld);
  cr_expect_eq(b->dtype, RT_DATA_U8);
  for (int i = 0; i < 5; i++) {
    cr_expect_arr_eq((unsigned char *)b->x + 6 * i, im + 16 + 6 * b->indices[i], 6);
    cr_expect_eq(b->y[i], b->indices[i] * 7 % 10);
  }
  rt_loader_free(ld);
  o.drop_last = false;
  o.limit = 2;
  ld = rt_loader_create(ds, NULL, &o, &err);
  cr_expect_eq(rt_loader_num_batches(ld), 2);
  run_epoch(ld, 0, 0, &e);
  cr_expect_eq(e.n, 10);
  rt_loader_free(ld);
  o.limit = 0;
  o.batch_size = 0;
  ld = rt_loader_create(ds, NULL, &o, &err);
  expect_error(ld, err, NULL, "batch size 0 is not positive");
  o.batch_size = 4;
  o.rank = 2, o.world_size = 2;
  ld = rt_loader_create(ds, NULL, &o, &err);
  expect_error(ld, err, NULL, "rank 2 is not in [0, 2)");
  /* a transform that does not fit the samples */
  RtTransforms *tf = rt_tf_new();
  rt_tf_random_crop(tf, 9, 9, 0, &err);
  o.rank = 0;
  ld = rt_loader_create(ds, tf, &o, &err);
  expect_error(ld, err, "i", "random_crop (transform 0): crop 9x9 is larger than the padded image 2x3");
  rt_tf_free(tf);
  rt_data_free(ds);
  free(im), free(lb);
}

Test(data, loader_workers_identical) {
  RtDataset *ds = counting_set(97, 3, (int64_t[]){1, 4, 4});
  RtTransforms *tf = augment();
  static Epoch ref[2], got;
  /* (workers, prefetch); the first, on the caller's thread, is the reference */
  int configs[][2] = {{0, 0}, {1, 1}, {3, 2}, {3, 0}, {4, 8}};
  for (int c = 0; c < 5; c++) {
    char *err = NULL;
    RtLoaderOptions o = {.batch_size = 8, .shuffle = true, .seed = 99, .workers = configs[c][0],
                         .prefetch = configs[c][1]};
    RtLoader *ld = rt_loader_create(ds, tf, &o, &err);
    cr_assert_not_null(ld, "%s", err);
    cr_expect_eq(rt_loader_dtype(ld), RT_DATA_F32);
    for (int epoch = 0; epoch < 2; epoch++) {
      run_epoch(ld, epoch, 0, c == 0 ? &ref[epoch] : &got);
      if (c == 0) continue;
      cr_expect_eq(got.nb, 13);
      cr_expect_arr_eq(got.idx, ref[epoch].idx, 97 * sizeof(int64_t), "workers %d epoch %d", configs[c][0], epoch);
      cr_expect_arr_eq(got.sum, ref[epoch].sum, 13 * sizeof(uint64_t), "workers %d epoch %d", configs[c][0], epoch);
    }
    rt_loader_free(ld);
  }
  cr_expect(memcmp(ref[0].sum, ref[1].sum, sizeof ref[0].sum) != 0, "epochs differ");
  rt_tf_free(tf); /* the loaders kept copies */
  rt_data_free(ds);
}

Test(data, loader_sharding) {
  RtDataset *ds = counting_set(103, 1, (int64_t[]){3});
  static Epoch r[3];
  int64_t perm[103];
  rt_data_permutation(103, 4, 2, perm);
  for (int world = 2; world <= 3; world++) {
    int count[103] = {0};
    for (int rank = 0; rank < world; rank++) {
      char *err = NULL;
      RtLoaderOptions o = {.batch_size = 16, .shuffle = true, .seed = 4, .workers = 2, .rank = rank, .world_size = world};
      RtLoader *ld = rt_loader_create(ds, NULL, &o, &err);
      cr_assert_not_null(ld, "%s", err);
      int64_t per = (103 + world - 1) / world;
      cr_expect_eq(rt_loader_num_samples(ld), per);
      run_epoch(ld, 2, 0, &r[rank]);
      cr_expect_eq(r[rank].n, per, "every rank gets the same number of samples");
      /* DistributedSampler: the permutation padded by wrapping, every world-th from rank */
      for (int64_t p = 0; p < per; p++) {
        cr_expect_eq(r[rank].idx[p], perm[(rank + p * world) % 103]);
        count[r[rank].idx[p]]++;
      }
      rt_loader_free(ld);
    }
    int pad = 0;
    for (int i = 0; i < 103; i++) {
      cr_expect_geq(count[i], 1, "sample %d on no rank", i);
      pad += count[i] - 1;
    }
    cr_expect_eq(pad, (103 + world - 1) / world * world - 103);
  }
  rt_data_free(ds);
}

Test(data, loader_resume) {
  RtDataset *ds = counting_set(90, 3, (int64_t[]){1, 4, 4});
  RtTransforms *tf = augment();
  char *err = NULL;
  RtLoaderOptions o = {.batch_size = 7, .shuffle = true, .seed = 1234, .workers = 3, .prefetch = 2};
  RtLoader *ld = rt_loader_create(ds, tf, &o, &err);
  cr_assert_not_null(ld, "%s", err);
  static Epoch full, tail;
  run_epoch(ld, 3, 0, &full);
  cr_expect_eq(full.nb, 13);
  for (int64_t k = 0; k <= 13; k += 4) {
    /* an interrupted epoch first, then a fresh loader resuming at batch k */
    cr_assert_eq(rt_loader_start(ld, 3, 0, &err), 0);
    rt_loader_next(ld);
    RtLoaderOptions o1 = o;
    o1.workers = (int)(k % 3);
    RtLoader *ld2 = rt_loader_create(ds, tf, &o1, &err);
    run_epoch(ld2, 3, k, &tail);
    cr_expect_eq(tail.nb, 13 - k);
    cr_expect_arr_eq(tail.sum, full.sum + k, (size_t)(13 - k) * sizeof(uint64_t), "resume at %lld", (long long)k);
    cr_expect_arr_eq(tail.idx, full.idx + 7 * k, (size_t)tail.n * sizeof(int64_t));
    rt_loader_free(ld2);
  }
  /* past the end: an empty epoch */
  cr_assert_eq(rt_loader_start(ld, 3, 20, &err), 0);
  cr_expect_null(rt_loader_next(ld));
  rt_loader_free(ld);
  rt_tf_free(tf);
  rt_data_free(ds);
}

Test(data, loader_early_stop) {
  RtDataset *ds = counting_set(500, 3, (int64_t[]){1, 8, 8});
  RtTransforms *tf = augment();
  char *err = NULL;
  int base = thread_count();
  RtLoaderOptions o = {.batch_size = 4, .shuffle = true, .workers = 3, .prefetch = 2};
  RtLoader *ld = rt_loader_create(ds, tf, &o, &err);
  cr_assert_not_null(ld, "%s", err);
  cr_assert_eq(rt_loader_start(ld, 0, 0, &err), 0);
  cr_expect_eq(thread_count(), base + 3);
  cr_assert_not_null(rt_loader_next(ld));
  cr_assert_not_null(rt_loader_next(ld));
  rt_loader_stop(ld);
  cr_expect_eq(thread_count(), base, "workers joined");
  cr_expect_null(rt_loader_next(ld));
  /* a new epoch after a stop is whole; a start in the middle of an epoch restarts it */
  static Epoch e;
  cr_assert_eq(rt_loader_start(ld, 1, 0, &err), 0);
  rt_loader_next(ld);
  run_epoch(ld, 1, 0, &e);
  cr_expect_eq(e.n, 500);
  cr_expect(is_permutation(e.idx, 500));
  cr_expect_eq(thread_count(), base);
  /* freeing in the middle of an epoch joins too */
  cr_assert_eq(rt_loader_start(ld, 2, 0, &err), 0);
  rt_loader_next(ld);
  rt_loader_free(ld);
  cr_expect_eq(thread_count(), base);
  rt_tf_free(tf);
  rt_data_free(ds);
}

/* ---- the real Fashion-MNIST ------------------------------------------------ */

#define FMNIST "/usr/share/datasets/fashion-mnist"

Test(data, fashion_mnist, .timeout = 30) {
  if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) cr_skip_test("%s is not installed", FMNIST);
  char *err = NULL;
  double t0 = now_s();
  RtDataset *ds = rt_data_idx(FMNIST "/train-images-idx3-ubyte.gz", FMNIST "/train-labels-idx1-ubyte.gz", 10, &err);
  double t_load = now_s() - t0;
  cr_assert_not_null(ds, "%s", err);
  cr_expect_eq(rt_data_len(ds), 60000);
  int64_t shape[RT_DATA_MAX_DIMS];
  cr_expect_eq(rt_data_sample_shape(ds, shape), 3);
  cr_expect(shape[0] == 1 && shape[1] == 28 && shape[2] == 28);
  int64_t hist[10] = {0};
  for (int64_t i = 0; i < 60000; i++) {
    int64_t l = rt_data_label(ds, i);
    cr_assert(l >= 0 && l < 10);
    hist[l]++;
  }
  for (int c = 0; c < 10; c++) cr_expect_eq(hist[c], 6000, "class %d", c); /* balanced */
  /* pixel statistics: the mean the docs use for normalisation */
  double sum = 0;
  for (int64_t i = 0; i < 60000; i++) {
    const unsigned char *p = rt_data_sample(ds, i);
    for (int e = 0; e < 784; e++) sum += p[e];
  }
  cr_expect_float_eq(sum / 60000 / 784 / 255, 0.2860, 5e-4);

  /* the loader: normalize, batch 64, 2 workers, one epoch */
  RtTransforms *tf = rt_tf_new();
  rt_tf_scale(tf, 1.0f / 255, 0, &err);
  rt_tf_normalize(tf, 1, (float[]){0.2860f}, (float[]){0.3530f}, &err);
  RtLoaderOptions o = {.batch_size = 64, .shuffle = true, .seed = 0, .workers = 2};
  RtLoader *ld = rt_loader_create(ds, tf, &o, &err);
  cr_assert_not_null(ld, "%s", err);
  double best = 0;
  int64_t n = 0;
  for (int epoch = 0; epoch < 3; epoch++) {
    t0 = now_s();
    n = 0;
    cr_assert_eq(rt_loader_start(ld, epoch, 0, &err), 0);
    for (const RtBatch *b; (b = rt_loader_next(ld));) n += b->size;
    double rate = (double)n / (now_s() - t0);
    if (rate > best) best = rate;
  }
  cr_expect_eq(n, 60000);
  rt_loader_free(ld);
  rt_tf_free(tf);
  rt_data_free(ds);
  fprintf(stderr, "fashion-mnist: train set (60000 images, gzip) loaded in %.3f s; loader (normalize, batch 64, "
                  "2 workers): %.2f M samples/s\n", t_load, best / 1e6);
}
