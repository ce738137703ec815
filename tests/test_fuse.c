/*
 * test_fuse.c - fusions (fuse.h) against naive references.
 *
 * Each fusion is compared with a reference written independently here:
 * concat by multi-index arithmetic (the source part and coordinate of every
 * output element), sum and mean in long double, votes by counting labels
 * into a histogram. Every class of mismatched parts fails with TS_EINVAL.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "fuse.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / (double)(1ull << 53);
}

static void make(ts_tensor *t, ts_dtype dt, int rank, const int64_t *dims) {
  ts_err err;
  ck_assert_int_eq(ts_tensor_alloc(t, dt, dims, rank, &err), 0);
  int64_t n = ts_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    double v = rnd() * 20 - 10;
    switch (dt) {
      case TS_DTYPE_FLOAT: ((float *)t->data)[i] = (float)v; break;
      case TS_DTYPE_DOUBLE: ((double *)t->data)[i] = v; break;
      case TS_DTYPE_INT32: ((int32_t *)t->data)[i] = (int32_t)v; break;
      case TS_DTYPE_INT64: ((int64_t *)t->data)[i] = (int64_t)v; break;
      default: ck_abort_msg("dtype");
    }
  }
}

static double get(const ts_tensor *t, int64_t i) {
  switch (t->dtype) {
    case TS_DTYPE_FLOAT: return ((const float *)t->data)[i];
    case TS_DTYPE_DOUBLE: return ((const double *)t->data)[i];
    case TS_DTYPE_INT32: return ((const int32_t *)t->data)[i];
    case TS_DTYPE_INT64: return (double)((const int64_t *)t->data)[i];
    default: ck_abort_msg("dtype");
  }
  return 0;
}

/* Row-major offset of multi-index idx in dims. */
static int64_t offset(const int64_t *dims, int rank, const int64_t *idx) {
  int64_t off = 0;
  for (int d = 0; d < rank; d++) off = off * dims[d] + idx[d];
  return off;
}

/* ---- concat ------------------------------------------------------------- */

static void check_concat(ts_dtype dt, int rank, const int64_t *base, int axis,
                         int n, const int64_t *widths) {
  ts_tensor parts[4];
  const ts_tensor *pp[4];
  int ax = axis < 0 ? axis + rank : axis;
  for (int i = 0; i < n; i++) {
    int64_t dims[TS_MAX_RANK];
    memcpy(dims, base, (size_t)rank * sizeof *dims);
    dims[ax] = widths[i];
    make(&parts[i], dt, rank, dims);
    pp[i] = &parts[i];
  }
  ts_tensor out;
  ts_err err = {0};
  ck_assert_msg(ts_fuse_concat(pp, n, axis, &out, &err) == 0, "%s", err.msg);
  ck_assert(out.owned);
  ck_assert_int_eq(out.dtype, dt);
  ck_assert_int_eq(out.rank, rank);
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += widths[i];
  for (int d = 0; d < rank; d++)
    ck_assert_int_eq(out.dims[d], d == ax ? total : base[d]);
  /* For every output element: find its part and coordinate there. */
  int64_t numel = ts_tensor_numel(&out);
  for (int64_t e = 0; e < numel; e++) {
    int64_t idx[TS_MAX_RANK], rest = e;
    for (int d = rank - 1; d >= 0; d--) {
      idx[d] = rest % out.dims[d];
      rest /= out.dims[d];
    }
    int part = 0;
    while (idx[ax] >= widths[part]) idx[ax] -= widths[part++];
    double want = get(&parts[part], offset(parts[part].dims, rank, idx));
    ck_assert_msg(get(&out, e) == want, "element %lld", (long long)e);
  }
  ts_tensor_free(&out);
  for (int i = 0; i < n; i++) ts_tensor_free(&parts[i]);
}

START_TEST(test_concat_axes) {
  int64_t base[4] = {2, 3, 4, 5};
  int64_t widths[3] = {1, 3, 2};
  for (int axis = -4; axis < 4; axis++)
    check_concat(TS_DTYPE_FLOAT, 4, base, axis, 3, widths);
  check_concat(TS_DTYPE_INT64, 4, base, 1, 2, widths);
  check_concat(TS_DTYPE_DOUBLE, 4, base, -1, 3, widths);
  int64_t one[1] = {7};
  check_concat(TS_DTYPE_INT32, 1, one, 0, 3, widths);
  int64_t zero_width[3] = {2, 0, 3}; /* an empty part is fine */
  check_concat(TS_DTYPE_FLOAT, 4, base, 2, 3, zero_width);
}
END_TEST

/* ---- sum and mean ------------------------------------------------------- */

START_TEST(test_sum) {
  static const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE,
                                   TS_DTYPE_INT32, TS_DTYPE_INT64};
  int64_t dims[3] = {3, 4, 5};
  for (size_t t = 0; t < 4; t++) {
    ts_tensor parts[3];
    const ts_tensor *pp[3];
    for (int i = 0; i < 3; i++) make(&parts[i], types[t], 3, dims), pp[i] = &parts[i];
    ts_tensor out;
    ts_err err = {0};
    ck_assert_msg(ts_fuse_sum(pp, 3, &out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(out.dtype, types[t]);
    for (int64_t e = 0; e < 60; e++) {
      long double want = 0;
      for (int i = 0; i < 3; i++) want += get(&parts[i], e);
      ck_assert_msg(fabsl(get(&out, e) - want) <= 1e-6L * (fabsl(want) + 1),
                    "element %lld", (long long)e);
    }
    ts_tensor_free(&out);
    for (int i = 0; i < 3; i++) ts_tensor_free(&parts[i]);
  }
}
END_TEST

START_TEST(test_mean_weighted) {
  int64_t dims[2] = {4, 6};
  ts_tensor parts[3];
  const ts_tensor *pp[3];
  for (int i = 0; i < 3; i++) make(&parts[i], TS_DTYPE_FLOAT, 2, dims), pp[i] = &parts[i];
  const double w[3] = {1, 2, 5};
  ts_tensor mean, wmean, via;
  ts_err err = {0};
  ck_assert_int_eq(ts_fuse_mean(pp, 3, NULL, &mean, &err), 0);
  ck_assert_int_eq(ts_fuse_mean(pp, 3, w, &wmean, &err), 0);
  ck_assert_int_eq(ts_fuse(TS_FUSE_WEIGHTED_MEAN, pp, 3, 0, w, &via, &err), 0);
  for (int64_t e = 0; e < 24; e++) {
    long double m = 0, wm = 0;
    for (int i = 0; i < 3; i++) {
      m += get(&parts[i], e);
      wm += w[i] * get(&parts[i], e);
    }
    m /= 3;
    wm /= 8;
    ck_assert(fabsl(get(&mean, e) - m) <= 1e-5L * (fabsl(m) + 1));
    ck_assert(fabsl(get(&wmean, e) - wm) <= 1e-5L * (fabsl(wm) + 1));
    ck_assert(get(&via, e) == get(&wmean, e));
  }
  ts_tensor_free(&mean), ts_tensor_free(&wmean), ts_tensor_free(&via);
  for (int i = 0; i < 3; i++) ts_tensor_free(&parts[i]);
}
END_TEST

/* ---- vote --------------------------------------------------------------- */

/* Label of the majority in labels[0..n) by histogram; ties to smallest. */
static int64_t ref_majority(const int64_t *labels, int n) {
  int64_t best = INT64_MAX;
  int best_count = 0;
  for (int64_t cand = -20; cand <= 20; cand++) {
    int c = 0;
    for (int i = 0; i < n; i++) c += labels[i] == cand;
    if (c > best_count) best = cand, best_count = c;
  }
  return best;
}

START_TEST(test_vote_labels) {
  int64_t dims[2] = {5, 7};
  ts_tensor parts[5];
  const ts_tensor *pp[5];
  for (int i = 0; i < 5; i++) {
    make(&parts[i], TS_DTYPE_INT64, 2, dims);
    for (int e = 0; e < 35; e++) ((int64_t *)parts[i].data)[e] %= 3; /* ties */
    pp[i] = &parts[i];
  }
  for (int n = 1; n <= 5; n++) {
    ts_tensor out;
    ts_err err = {0};
    ck_assert_int_eq(ts_fuse_vote(pp, n, &out, &err), 0);
    ck_assert_int_eq(out.dtype, TS_DTYPE_INT64);
    for (int e = 0; e < 35; e++) {
      int64_t labels[5];
      for (int i = 0; i < n; i++) labels[i] = ((int64_t *)parts[i].data)[e];
      ck_assert_int_eq(((int64_t *)out.data)[e], ref_majority(labels, n));
    }
    ts_tensor_free(&out);
  }
  /* Explicit tie: {3, 1, 3, 1, 2} -> 1. */
  int64_t one[1] = {1};
  ts_tensor t[5];
  const int64_t vals[5] = {3, 1, 3, 1, 2};
  for (int i = 0; i < 5; i++) {
    make(&t[i], TS_DTYPE_INT32, 1, one);
    ((int32_t *)t[i].data)[0] = (int32_t)vals[i];
    pp[i] = &t[i];
  }
  ts_tensor out;
  ts_err err = {0};
  ck_assert_int_eq(ts_fuse_vote(pp, 5, &out, &err), 0);
  ck_assert_int_eq(out.dtype, TS_DTYPE_INT32);
  ck_assert_int_eq(((int32_t *)out.data)[0], 1);
  ts_tensor_free(&out);
  for (int i = 0; i < 5; i++) ts_tensor_free(&t[i]), ts_tensor_free(&parts[i]);
}
END_TEST

START_TEST(test_vote_scores) {
  int64_t dims[3] = {2, 3, 4}; /* 6 rows of 4 classes */
  ts_tensor parts[3];
  const ts_tensor *pp[3];
  for (int i = 0; i < 3; i++) make(&parts[i], TS_DTYPE_FLOAT, 3, dims), pp[i] = &parts[i];
  ts_tensor out;
  ts_err err = {0};
  ck_assert_int_eq(ts_fuse(TS_FUSE_VOTE, pp, 3, 0, NULL, &out, &err), 0);
  ck_assert_int_eq(out.dtype, TS_DTYPE_INT64);
  ck_assert_int_eq(out.rank, 2);
  ck_assert_int_eq(out.dims[0], 2);
  ck_assert_int_eq(out.dims[1], 3);
  for (int r = 0; r < 6; r++) {
    int64_t labels[3];
    for (int i = 0; i < 3; i++) {
      const float *row = (const float *)parts[i].data + r * 4;
      int64_t arg = 0;
      for (int c = 1; c < 4; c++)
        if (row[c] > row[arg]) arg = c;
      labels[i] = arg;
    }
    ck_assert_int_eq(((int64_t *)out.data)[r], ref_majority(labels, 3));
  }
  ts_tensor_free(&out);
  for (int i = 0; i < 3; i++) ts_tensor_free(&parts[i]);
}
END_TEST

/* ---- bad input ---------------------------------------------------------- */

/* Every mismatch is TS_EINVAL, names the part, and leaves out zeroed. */
static void expect_einval(ts_fuse_kind kind, const ts_tensor *const *pp, int n,
                          int axis, const double *w, const char *needle) {
  ts_tensor out;
  memset(&out, 0xab, sizeof out);
  ts_err err = {0};
  int rc = ts_fuse(kind, pp, n, axis, w, &out, &err);
  ck_assert_msg(rc == TS_EINVAL, "%s: rc %d", ts_fuse_name(kind), rc);
  ck_assert_msg(strstr(err.msg, needle), "'%s' does not mention '%s'", err.msg,
                needle);
  ck_assert_ptr_null(out.data);
}

START_TEST(test_mismatched_parts) {
  int64_t d23[2] = {2, 3}, d24[2] = {2, 4}, d33[2] = {3, 3}, d6[1] = {6};
  ts_tensor a, b_wide, c_tall, d_int, e_flat, f_d;
  make(&a, TS_DTYPE_FLOAT, 2, d23);
  make(&b_wide, TS_DTYPE_FLOAT, 2, d24);
  make(&c_tall, TS_DTYPE_FLOAT, 2, d33);
  make(&d_int, TS_DTYPE_INT32, 2, d23);
  make(&e_flat, TS_DTYPE_FLOAT, 1, d6);
  make(&f_d, TS_DTYPE_DOUBLE, 2, d23);
  const ts_tensor *wide[2] = {&a, &b_wide}, *tall[2] = {&a, &c_tall},
                  *mixed[2] = {&a, &d_int}, *ranks[2] = {&a, &e_flat},
                  *nul[2] = {&a, NULL}, *ok[2] = {&a, &a},
                  *ints[2] = {&d_int, &d_int};
  /* sum / mean / vote: shapes must match exactly. */
  expect_einval(TS_FUSE_SUM, wide, 2, 0, NULL, "part 1 has dim 1");
  expect_einval(TS_FUSE_MEAN, tall, 2, 0, NULL, "part 1 has dim 0");
  expect_einval(TS_FUSE_VOTE, mixed, 2, 0, NULL, "part 1 has dtype");
  expect_einval(TS_FUSE_SUM, ranks, 2, 0, NULL, "part 1 has rank");
  expect_einval(TS_FUSE_SUM, nul, 2, 0, NULL, "part 1 is missing");
  expect_einval(TS_FUSE_SUM, ok, 0, 0, NULL, "at least one part");
  /* concat: all dims but the axis must match; axis in range. */
  expect_einval(TS_FUSE_CONCAT, wide, 2, 0, NULL, "part 1 has dim 1");
  expect_einval(TS_FUSE_CONCAT, tall, 2, 1, NULL, "part 1 has dim 0");
  expect_einval(TS_FUSE_CONCAT, ok, 2, 2, NULL, "axis 2");
  expect_einval(TS_FUSE_CONCAT, ok, 2, -3, NULL, "axis -3");
  expect_einval(TS_FUSE_CONCAT, mixed, 2, 0, NULL, "part 1 has dtype");
  /* dtypes a fusion does not compute on */
  expect_einval(TS_FUSE_MEAN, ints, 2, 0, NULL, "float or double");
  /* weights */
  const double neg[2] = {1, -1}, zero[2] = {0, 0}, nan_w[2] = {1, NAN};
  expect_einval(TS_FUSE_WEIGHTED_MEAN, ok, 2, 0, NULL, "needs weights");
  expect_einval(TS_FUSE_WEIGHTED_MEAN, ok, 2, 0, neg, "part 1");
  expect_einval(TS_FUSE_WEIGHTED_MEAN, ok, 2, 0, zero, "sum to 0");
  expect_einval(TS_FUSE_WEIGHTED_MEAN, ok, 2, 0, nan_w, "part 1");
  expect_einval(TS_FUSE_NONE, ok, 2, 0, NULL, "none");
  /* a part whose byte count disagrees with its shape, or has no data */
  ts_tensor lying = a;
  lying.nbytes = 8;
  const ts_tensor *bad_len[2] = {&a, &lying};
  expect_einval(TS_FUSE_CONCAT, bad_len, 2, 0, NULL, "part 1");
  ts_tensor no_data = a;
  no_data.data = NULL;
  const ts_tensor *bad_data[2] = {&a, &no_data};
  expect_einval(TS_FUSE_SUM, bad_data, 2, 0, NULL, "part 1 has no data");
  /* double works where float does */
  const ts_tensor *dd[2] = {&f_d, &f_d};
  ts_tensor out;
  ts_err err = {0};
  ck_assert_int_eq(ts_fuse_mean(dd, 2, NULL, &out, &err), 0);
  ts_tensor_free(&out);
  ts_tensor_free(&a), ts_tensor_free(&b_wide), ts_tensor_free(&c_tall);
  ts_tensor_free(&d_int), ts_tensor_free(&e_flat), ts_tensor_free(&f_d);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("fuse");
  TCase *tc = ts_check_tcase(s, "fuse", 0, NULL, NULL);
  tcase_add_test(tc, test_concat_axes);
  tcase_add_test(tc, test_sum);
  tcase_add_test(tc, test_mean_weighted);
  tcase_add_test(tc, test_vote_labels);
  tcase_add_test(tc, test_vote_scores);
  tcase_add_test(tc, test_mismatched_parts);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
