/*
 * test_kernels_core.c - the core op family (kernels/core.c) against naive
 * float64 references on random shapes (odd sizes, size-1 and empty dims,
 * broadcasting), plus every bad-input class with its exact error code.
 * Each case builds a one-node ONNX model, loads it and runs it through the
 * executor, so the load-time checks and the run path are both exercised.
 */
#include <check.h>
#include <float.h>

#include "check_main.h"
#include "kernel_check.h"

#define RTOL 1e-5
#define ATOL 1e-6

/* ---- Gemm ---------------------------------------------------------------- */

/* check_gemm: kc_check_gemm at this suite's tolerances. */
static void check_gemm(kc_rng *r, int64_t m, int64_t n, int64_t k, int ta,
                       int tb, float alpha, float beta, int ckind,
                       unsigned const_mask) {
  kc_check_gemm(r, m, n, k, ta, tb, alpha, beta, ckind, const_mask, RTOL,
                1e-5);
}

START_TEST(gemm_all_combinations) {
  kc_rng r = kc_rng_seed(1);
  const float alphas[] = {1.0f, 0.7f}, betas[] = {1.0f, 0.0f, -1.3f};
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int ai = 0; ai < 2; ai++)
        for (int bi = 0; bi < 3; bi++)
          for (int ck = 0; ck < KC_C_COUNT; ck++) {
            int64_t m = kc_randint(&r, 1, 9), n = kc_randint(&r, 1, 9),
                    k = kc_randint(&r, 1, 9);
            check_gemm(&r, m, n, k, ta, tb, alphas[ai], betas[bi], ck,
                       ck % 2 ? 0x2u : 0x6u); /* weights as constants */
          }
}
END_TEST

START_TEST(gemm_larger_and_edge_sizes) {
  kc_rng r = kc_rng_seed(2);
  check_gemm(&r, 33, 17, 65, 0, 1, 1.0f, 1.0f, KC_C_N, 0);
  check_gemm(&r, 1, 1, 1, 1, 1, 2.0f, 0.5f, KC_C_SCALAR, 0);
  check_gemm(&r, 64, 3, 128, 1, 0, 0.25f, 1.0f, KC_C_MN, 0);
  check_gemm(&r, 5, 7, 0, 0, 0, 1.0f, 2.0f, KC_C_MN, 0);   /* K = 0: beta*C */
  check_gemm(&r, 0, 7, 3, 0, 0, 1.0f, 1.0f, KC_C_N, 0);    /* empty output */
}
END_TEST

static int gemm_expect(int64_t am, int64_t ak, int64_t bk, int64_t bn,
                       const char *attr, int64_t v, bool float_attr,
                       ts_dtype dtype, ts_err *err) {
  kc_rng r = kc_rng_seed(3);
  ts_tensor a, b, y;
  kc_tensor_rand(&a, dtype, 2, (int64_t[]){am, ak}, &r, -1, 1);
  kc_tensor_rand(&b, dtype, 2, (int64_t[]){bk, bn}, &r, -1, 1);
  const ts_tensor *in[2] = {&a, &b};
  Onnx__NodeProto *node;
  Onnx__ModelProto *mp = kc_op_model("Gemm", "", 13, in, 2, 0, 1, &node);
  if (attr && float_attr) kc_attr_float(node, attr, (float)v);
  if (attr && !float_attr) kc_attr_int(node, attr, v);
  int rc = kc_model_run(mp, in, 2, 0, &y, 1, err);
  kc_model_free(mp);
  ts_tensor_free(&a);
  ts_tensor_free(&b);
  ts_tensor_free(&y);
  return rc;
}

START_TEST(gemm_bad_inputs) {
  ts_err err;
  ck_assert_int_eq(gemm_expect(2, 3, 4, 5, NULL, 0, false, TS_DTYPE_FLOAT,
                               &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "Gemm") && strstr(err.msg, "K="), "%s",
                err.msg);
  ck_assert_int_eq(gemm_expect(2, 3, 3, 5, "transA", 2, false, TS_DTYPE_FLOAT,
                               &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "transA"), "%s", err.msg);
  ck_assert_int_eq(gemm_expect(2, 3, 3, 5, "transB", 1, true, TS_DTYPE_FLOAT,
                               &err), TS_EINVAL); /* float-typed flag */
  ck_assert_msg(strstr(err.msg, "attribute 'transB' must be an int"), "%s",
                err.msg);
  ck_assert_int_eq(gemm_expect(2, 3, 3, 5, "alpha", 2, false, TS_DTYPE_FLOAT,
                               &err), TS_EINVAL); /* int-typed scale */
  ck_assert_msg(strstr(err.msg, "attribute 'alpha' must be a float"), "%s",
                err.msg);
  ck_assert_int_eq(gemm_expect(2, 3, 3, 5, "broadcast", 1, false,
                               TS_DTYPE_FLOAT, &err), TS_EUNSUPPORTED);
  ck_assert_msg(strstr(err.msg, "broadcast") && strstr(err.msg, "'op'"), "%s",
                err.msg);
  ck_assert_int_eq(gemm_expect(2, 3, 3, 5, NULL, 0, false, TS_DTYPE_INT64,
                               &err), TS_EUNSUPPORTED);
  /* C that does not broadcast to [M, N] */
  kc_rng r = kc_rng_seed(4);
  ts_tensor a, b, c, y;
  kc_tensor_rand(&a, TS_DTYPE_FLOAT, 2, (int64_t[]){2, 3}, &r, -1, 1);
  kc_tensor_rand(&b, TS_DTYPE_FLOAT, 2, (int64_t[]){3, 4}, &r, -1, 1);
  kc_tensor_rand(&c, TS_DTYPE_FLOAT, 1, (int64_t[]){3}, &r, -1, 1);
  const ts_tensor *in[3] = {&a, &b, &c};
  ck_assert_int_eq(kc_run_op("Gemm", "", 13, in, 3, 0, &y, 1, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "C dim"), "%s", err.msg);
  ts_tensor_free(&a);
  ts_tensor_free(&b);
  ts_tensor_free(&c);
}
END_TEST

/* ---- MatMul -------------------------------------------------------------- */

/* Naive numpy matmul in float64 for any ranks >= 1. */
static void matmul_ref(const ts_tensor *a, const ts_tensor *b, double *ref,
                       const int64_t *yd, int yr) {
  int64_t m = a->rank == 1 ? 1 : a->dims[a->rank - 2];
  int64_t k = a->dims[a->rank - 1];
  int64_t n = b->rank == 1 ? 1 : b->dims[b->rank - 1];
  int ra = a->rank > 2 ? a->rank - 2 : 0, rb = b->rank > 2 ? b->rank - 2 : 0;
  int br = yr - (a->rank > 1) - (b->rank > 1);
  int64_t nbatch = ts_shape_numel(yd, br);
  for (int64_t bi = 0; bi < nbatch; bi++) {
    int64_t idx[TS_MAX_RANK];
    kc_unravel(bi, yd, br, idx);
    int64_t ao = kc_bcast_offset(idx, br, a->dims, ra) * m * k;
    int64_t bo = kc_bcast_offset(idx, br, b->dims, rb) * k * n;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double acc = 0;
        for (int64_t p = 0; p < k; p++)
          acc += kc_get(a, ao + i * k + p) * kc_get(b, bo + p * n + j);
        ref[bi * m * n + i * n + j] = acc;
      }
  }
}

static void check_matmul(kc_rng *r, ts_dtype dt, int ar, const int64_t *ad,
                         int br, const int64_t *bd, const int64_t *yd,
                         int yr) {
  ts_tensor a, b, y;
  kc_tensor_rand(&a, dt, ar, ad, r, -3, 3);
  kc_tensor_rand(&b, dt, br, bd, r, -3, 3);
  const ts_tensor *in[2] = {&a, &b};
  ts_err err;
  int rc = kc_run_op("MatMul", "", 13, in, 2, 0, &y, 1, &err);
  char sa[64], sb[64], what[200];
  snprintf(what, sizeof what, "matmul %s x %s (%s)",
           ts_shape_str(ad, ar, sa, sizeof sa),
           ts_shape_str(bd, br, sb, sizeof sb), ts_dtype_name(dt));
  ck_assert_msg(rc == 0, "%s: %s", what, err.msg);
  int64_t n = ts_shape_numel(yd, yr);
  double *ref = calloc((size_t)n + 1, sizeof *ref);
  matmul_ref(&a, &b, ref, yd, yr);
  kc_assert_close(&y, ref, yd, yr, RTOL, 1e-4, what);
  ck_assert_int_eq(y.dtype, dt);
  free(ref);
  ts_tensor_free(&a);
  ts_tensor_free(&b);
  ts_tensor_free(&y);
}

#define D(...) (int64_t[]){__VA_ARGS__}

START_TEST(matmul_shapes) {
  kc_rng r = kc_rng_seed(5);
  const ts_dtype dts[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE, TS_DTYPE_INT64,
                          TS_DTYPE_INT32};
  for (size_t t = 0; t < sizeof dts / sizeof *dts; t++) {
    ts_dtype dt = dts[t];
    check_matmul(&r, dt, 1, D(7), 1, D(7), D(0), 0);              /* dot */
    check_matmul(&r, dt, 1, D(5), 2, D(5, 3), D(3), 1);           /* 1-D A */
    check_matmul(&r, dt, 2, D(4, 5), 1, D(5), D(4), 1);           /* 1-D B */
    check_matmul(&r, dt, 2, D(3, 7), 2, D(7, 9), D(3, 9), 2);
    check_matmul(&r, dt, 3, D(2, 3, 5), 2, D(5, 4), D(2, 3, 4), 3);
    check_matmul(&r, dt, 2, D(3, 5), 3, D(2, 5, 4), D(2, 3, 4), 3);
    check_matmul(&r, dt, 4, D(2, 1, 3, 5), 3, D(3, 5, 4), D(2, 3, 3, 4), 4);
    check_matmul(&r, dt, 3, D(1, 3, 5), 3, D(4, 5, 2), D(4, 3, 2), 3);
    check_matmul(&r, dt, 3, D(3, 1, 5), 1, D(5), D(3, 1), 2);
    check_matmul(&r, dt, 1, D(5), 3, D(2, 5, 3), D(2, 3), 2);
    check_matmul(&r, dt, 3, D(2, 0, 5), 2, D(5, 3), D(2, 0, 3), 3); /* empty */
    check_matmul(&r, dt, 2, D(2, 0), 2, D(0, 3), D(2, 3), 2);       /* K = 0 */
  }
  for (int it = 0; it < 20; it++) { /* random batched broadcast */
    int64_t m = kc_randint(&r, 1, 6), k = kc_randint(&r, 1, 6),
            n = kc_randint(&r, 1, 6), b0 = kc_randint(&r, 1, 3),
            b1 = kc_randint(&r, 1, 3);
    int64_t a0 = kc_randint(&r, 0, 1) ? b0 : 1, bb1 = kc_randint(&r, 0, 1) ? b1 : 1;
    check_matmul(&r, TS_DTYPE_FLOAT, 4, D(a0, b1, m, k), 3, D(bb1, k, n),
                 D(a0, b1, m, n), 4);
  }
}
END_TEST

START_TEST(matmul_bad_inputs) {
  kc_rng r = kc_rng_seed(6);
  ts_tensor a, b, y;
  ts_err err;
  kc_tensor_rand(&a, TS_DTYPE_FLOAT, 2, D(2, 3), &r, -1, 1);
  kc_tensor_rand(&b, TS_DTYPE_FLOAT, 2, D(4, 5), &r, -1, 1);
  const ts_tensor *in[2] = {&a, &b};
  ck_assert_int_eq(kc_run_op("MatMul", "", 13, in, 2, 0, &y, 1, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "MatMul") && strstr(err.msg, "[2,3]"), "%s",
                err.msg);
  ts_tensor_free(&b);
  kc_tensor_rand(&b, TS_DTYPE_FLOAT, 4, D(3, 2, 3, 5), &r, -1, 1);
  ts_tensor_free(&a);
  kc_tensor_rand(&a, TS_DTYPE_FLOAT, 3, D(3, 4, 3), &r, -1, 1);
  ck_assert_int_eq(kc_run_op("MatMul", "", 13, in, 2, 0, &y, 1, &err),
                   TS_EINVAL); /* batch [3] vs [3,2] */
  ck_assert_msg(strstr(err.msg, "batch"), "%s", err.msg);
  ts_tensor_free(&b);
  kc_tensor_rand(&b, TS_DTYPE_DOUBLE, 2, D(3, 5), &r, -1, 1);
  ck_assert_int_eq(kc_run_op("MatMul", "", 13, in, 2, 0, &y, 1, &err),
                   TS_EINVAL); /* mixed dtypes */
  ts_tensor_free(&a);
  ts_tensor_free(&b);
  kc_tensor_rand(&a, TS_DTYPE_UINT8, 2, D(2, 3), &r, 0, 5);
  kc_tensor_rand(&b, TS_DTYPE_UINT8, 2, D(3, 2), &r, 0, 5);
  ck_assert_int_eq(kc_run_op("MatMul", "", 13, in, 2, 0, &y, 1, &err),
                   TS_EUNSUPPORTED);
  ts_tensor_free(&a);
  ts_tensor_free(&b);
}
END_TEST

/* ---- Softmax / LogSoftmax ------------------------------------------------ */

/* Reference: normalizes over [axis] (opset >= 13) or over the flattened
 * [axis:] block (older opsets). */
static void softmax_ref(const ts_tensor *x, int axis, bool flat, bool logsm,
                        double *ref) {
  int64_t outer = ts_shape_numel(x->dims, axis);
  int64_t len = flat ? ts_shape_numel(x->dims + axis, x->rank - axis)
                     : x->dims[axis];
  int64_t inner = flat ? 1 : ts_shape_numel(x->dims + axis + 1,
                                            x->rank - axis - 1);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < len; j++)
        mx = fmax(mx, kc_get(x, (o * len + j) * inner + i));
      for (int64_t j = 0; j < len; j++)
        sum += exp(kc_get(x, (o * len + j) * inner + i) - mx);
      for (int64_t j = 0; j < len; j++) {
        double v = kc_get(x, (o * len + j) * inner + i) - mx;
        ref[(o * len + j) * inner + i] = logsm ? v - log(sum) : exp(v) / sum;
      }
    }
}

static void check_softmax(kc_rng *r, const char *op, int64_t opset, int rank,
                          const int64_t *dims, int64_t axis_attr,
                          bool set_axis, double scale) {
  ts_tensor x, y;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, rank, dims, r, -scale, scale);
  const ts_tensor *in[1] = {&x};
  Onnx__NodeProto *node;
  Onnx__ModelProto *mp = kc_op_model(op, "", opset, in, 1, 0, 1, &node);
  if (set_axis) kc_attr_int(node, "axis", axis_attr);
  ts_err err;
  int rc = kc_model_run(mp, in, 1, 0, &y, 1, &err);
  kc_model_free(mp);
  ck_assert_msg(rc == 0, "%s: %s", op, err.msg);
  int64_t dflt = opset >= 13 ? -1 : 1;
  int64_t a = set_axis ? axis_attr : dflt;
  int axis = (int)(a < 0 ? a + rank : a);
  double *ref = calloc((size_t)ts_tensor_numel(&x) + 1, sizeof *ref);
  softmax_ref(&x, axis, opset < 13, strcmp(op, "LogSoftmax") == 0, ref);
  char s[64], what[160];
  snprintf(what, sizeof what, "%s opset %lld %s axis %lld", op,
           (long long)opset, ts_shape_str(dims, rank, s, sizeof s),
           (long long)a);
  kc_assert_close(&y, ref, dims, rank, RTOL, 1e-6, what);
  free(ref);
  ts_tensor_free(&x);
  ts_tensor_free(&y);
}

START_TEST(softmax_every_axis) {
  kc_rng r = kc_rng_seed(7);
  const char *ops[] = {"Softmax", "LogSoftmax"};
  for (int o = 0; o < 2; o++)
    for (int rank = 1; rank <= 4; rank++)
      for (int it = 0; it < 2; it++) {
        int64_t dims[4];
        kc_rand_dims(&r, rank, 1, 6, dims);
        for (int axis = -rank; axis < rank; axis++) {
          check_softmax(&r, ops[o], 13, rank, dims, axis, true, 5);
          check_softmax(&r, ops[o], 11, rank, dims, axis, true, 5);
        }
        check_softmax(&r, ops[o], 13, rank, dims, 0, false, 5);
        if (rank >= 2) check_softmax(&r, ops[o], 11, rank, dims, 0, false, 5);
        check_softmax(&r, ops[o], 11, rank, dims, rank, true, 5); /* [N,1] */
      }
  /* large magnitudes: stable, no inf/nan */
  check_softmax(&r, "Softmax", 13, 2, D(3, 17), -1, true, 3000);
  check_softmax(&r, "LogSoftmax", 13, 2, D(3, 17), -1, true, 3000);
}
END_TEST

/* Softmax's exponential over its whole range, against exp in float64: rows
 * [0, v] for 200,001 values v from -120 to 0 (and the same as columns, the
 * inner > 1 path). Softmax gives e^v / (1 + e^v); for v < -17, 1 + e^v is 1
 * in float and the output is e^v itself, so this checks e^v to 2.5e-7
 * relative (2 ulp) where it is a normal float, and to 2 subnormal steps
 * below FLT_MIN, down to 0 where e^v rounds to it. */
START_TEST(softmax_exp_accuracy) {
  enum { N = 200001 };
  for (int columns = 0; columns < 2; columns++) {
    ts_tensor x, y;
    const int64_t *dims = columns ? D(2, N) : D(N, 2);
    kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, dims, NULL);
    float *xv = x.data;
    for (int64_t i = 0; i < N; i++) {
      const float v = (float)(-120.0 * (double)i / (N - 1));
      xv[columns ? i : 2 * i] = 0.0f;
      xv[columns ? N + i : 2 * i + 1] = v;
    }
    const ts_tensor *in[1] = {&x};
    Onnx__NodeProto *node;
    Onnx__ModelProto *mp = kc_op_model("Softmax", "", 13, in, 1, 0, 1, &node);
    kc_attr_int(node, "axis", columns ? 0 : 1);
    ts_err err;
    ck_assert_int_eq(kc_model_run(mp, in, 1, 0, &y, 1, &err), 0);
    kc_model_free(mp);
    const float *yv = y.data;
    for (int64_t i = 0; i < N; i++) {
      const double v = xv[columns ? N + i : 2 * i + 1], e = exp(v);
      const double want[2] = {1.0 / (1.0 + e), e / (1.0 + e)};
      for (int k = 0; k < 2; k++) {
        const double got = yv[columns ? k * N + i : 2 * i + k];
        const double tol = fabs(want[k]) >= FLT_MIN
                               ? 2.5e-7 * fabs(want[k])
                               : 2.0 * 1.401298464e-45;
        ck_assert_msg(fabs(got - want[k]) <= tol,
                      "softmax([0, %.9g])[%d] = %.9g, want %.9g (columns %d)",
                      v, k, got, want[k], columns);
      }
    }
    ts_tensor_free(&x);
    ts_tensor_free(&y);
  }
}
END_TEST

/* Special rows, as rows and as columns, against the float64 definition:
 * a -inf entry (weight 0), all -inf (NaN: 0 / 0), a +inf entry (NaN:
 * inf - inf), a NaN entry (the row is NaN), and a spread past the
 * subnormals (outputs that are subnormal or 0). */
START_TEST(softmax_special_values) {
  const double rows[5][4] = {{0.0, -INFINITY, 1.0, -2.0},
                             {-INFINITY, -INFINITY, -INFINITY, -INFINITY},
                             {1.0, INFINITY, 2.0, -INFINITY},
                             {1.0, NAN, 2.0, 3.0},
                             {0.0, -90.0, -100.0, -200.0}};
  for (int columns = 0; columns < 2; columns++)
    for (int lg = 0; lg < 2; lg++) {
      ts_tensor x, y;
      kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, columns ? D(4, 5) : D(5, 4),
                     NULL);
      for (int r = 0; r < 5; r++)
        for (int j = 0; j < 4; j++)
          kc_set(&x, columns ? j * 5 + r : r * 4 + j, rows[r][j]);
      double ref[20];
      softmax_ref(&x, columns ? 0 : 1, false, lg, ref);
      const ts_tensor *in[1] = {&x};
      Onnx__NodeProto *node;
      Onnx__ModelProto *mp = kc_op_model(lg ? "LogSoftmax" : "Softmax", "",
                                         13, in, 1, 0, 1, &node);
      kc_attr_int(node, "axis", columns ? 0 : 1);
      ts_err err;
      ck_assert_int_eq(kc_model_run(mp, in, 1, 0, &y, 1, &err), 0);
      kc_model_free(mp);
      char what[64];
      snprintf(what, sizeof what, "%s special values, columns %d",
               lg ? "LogSoftmax" : "Softmax", columns);
      kc_assert_close(&y, ref, x.dims, 2, 1e-6, 1e-44, what);
      ts_tensor_free(&x);
      ts_tensor_free(&y);
    }
}
END_TEST

START_TEST(softmax_bad_axis) {
  kc_rng r = kc_rng_seed(8);
  ts_tensor x, y;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(2, 3), &r, -1, 1);
  const ts_tensor *in[1] = {&x};
  ts_err err;
  Onnx__NodeProto *node;
  Onnx__ModelProto *mp = kc_op_model("Softmax", "", 13, in, 1, 0, 1, &node);
  kc_attr_int(node, "axis", 2);
  ck_assert_int_eq(kc_model_run(mp, in, 1, 0, &y, 1, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "axis"), "%s", err.msg);
  kc_model_free(mp);
  mp = kc_op_model("LogSoftmax", "", 13, in, 1, 0, 1, &node);
  kc_attr_string(node, "axis", "1");
  ck_assert_int_eq(kc_model_run(mp, in, 1, 0, &y, 1, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "attribute 'axis' must be an int"), "%s",
                err.msg);
  kc_model_free(mp);
  /* An int-typed attribute without its value. */
  mp = kc_op_model("Softmax", "", 13, in, 1, 0, 1, &node);
  kc_attr_new(node, "axis", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  ck_assert_int_eq(kc_model_run(mp, in, 1, 0, &y, 1, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "attribute 'axis' has no value"), "%s",
                err.msg);
  kc_model_free(mp);
  ts_tensor_free(&x);
}
END_TEST

/* ---- Identity, Flatten, Reshape ----------------------------------------- */

START_TEST(identity_any_dtype) {
  kc_rng r = kc_rng_seed(9);
  const ts_dtype dts[] = {TS_DTYPE_FLOAT, TS_DTYPE_INT64, TS_DTYPE_UINT8,
                          TS_DTYPE_BOOL, TS_DTYPE_DOUBLE};
  for (size_t t = 0; t < sizeof dts / sizeof *dts; t++) {
    ts_tensor x, y;
    int64_t dims[3];
    kc_rand_dims(&r, 3, 0, 4, dims);
    kc_tensor_rand(&x, dts[t], 3, dims, &r, -4, 4);
    const ts_tensor *in[1] = {&x};
    ts_err err;
    ck_assert_int_eq(kc_run_op("Identity", "", 13, in, 1, 0, &y, 1, &err), 0);
    double *ref = kc_to_f64(&x);
    kc_assert_close(&y, ref, dims, 3, 0, 0, "identity");
    free(ref);
    ts_tensor_free(&x);
    ts_tensor_free(&y);
  }
}
END_TEST

START_TEST(flatten_every_axis) {
  kc_rng r = kc_rng_seed(10);
  for (int rank = 0; rank <= 4; rank++) {
    int64_t dims[4];
    kc_rand_dims(&r, rank, 1, 4, dims);
    if (rank == 3) dims[1] = 0;
    for (int axis = -rank; axis <= rank; axis++) {
      ts_tensor x, y;
      kc_tensor_rand(&x, TS_DTYPE_FLOAT, rank, dims, &r, -1, 1);
      const ts_tensor *in[1] = {&x};
      Onnx__NodeProto *node;
      Onnx__ModelProto *mp = kc_op_model("Flatten", "", 13, in, 1, 0, 1, &node);
      kc_attr_int(node, "axis", axis);
      ts_err err;
      ck_assert_int_eq(kc_model_run(mp, in, 1, 0, &y, 1, &err), 0);
      kc_model_free(mp);
      int a = axis < 0 ? axis + rank : axis;
      int64_t yd[2] = {ts_shape_numel(dims, a),
                       ts_shape_numel(dims + a, rank - a)};
      double *ref = kc_to_f64(&x);
      kc_assert_close(&y, ref, yd, 2, 0, 0, "flatten");
      free(ref);
      ts_tensor_free(&x);
      ts_tensor_free(&y);
    }
  }
  /* axis out of range */
  ts_tensor x, y;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(2, 3), &r, -1, 1);
  const ts_tensor *in[1] = {&x};
  Onnx__NodeProto *node;
  Onnx__ModelProto *mp = kc_op_model("Flatten", "", 13, in, 1, 0, 1, &node);
  kc_attr_int(node, "axis", 3);
  ts_err err;
  ck_assert_int_eq(kc_model_run(mp, in, 1, 0, &y, 1, &err), TS_EINVAL);
  kc_model_free(mp);
  ts_tensor_free(&x);
}
END_TEST

/* Runs Reshape of x (dims xd) to `shape`, with the shape as a constant or a
 * graph input; returns the rc and fills y. */
static int run_reshape(const int64_t *xd, int xr, const int64_t *shape,
                       int n, int allowzero, bool shape_const, ts_tensor *y,
                       ts_err *err) {
  kc_rng r = kc_rng_seed(11);
  ts_tensor x, s;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, xr, xd, &r, -1, 1);
  double sv[8] = {0};
  for (int i = 0; i < n; i++) sv[i] = (double)shape[i];
  kc_tensor_from(&s, TS_DTYPE_INT64, 1, (int64_t[]){n}, sv);
  const ts_tensor *in[2] = {&x, &s};
  Onnx__NodeProto *node;
  unsigned mask = shape_const ? 2u : 0u;
  Onnx__ModelProto *mp = kc_op_model("Reshape", "", 14, in, 2, mask, 1, &node);
  if (allowzero >= 0) kc_attr_int(node, "allowzero", allowzero);
  int rc = kc_model_run(mp, in, 2, mask, y, 1, err);
  if (rc == 0) {
    double *ref = kc_to_f64(&x);
    kc_assert_close(y, ref, y->dims, y->rank, 0, 0, "reshape data");
    free(ref);
  }
  kc_model_free(mp);
  ts_tensor_free(&x);
  ts_tensor_free(&s);
  return rc;
}

START_TEST(reshape_cases) {
  ts_tensor y;
  ts_err err;
  for (int c = 0; c < 2; c++) {
    bool k = c == 0;
    ck_assert_int_eq(run_reshape(D(2, 3, 4), 3, D(4, -1), 2, -1, k, &y, &err), 0);
    kc_assert_shape(&y, D(4, 6), 2, "reshape -1");
    ts_tensor_free(&y);
    ck_assert_int_eq(run_reshape(D(2, 3, 4), 3, D(0, 0, 2, 2), 4, -1, k, &y, &err), 0);
    kc_assert_shape(&y, D(2, 3, 2, 2), 4, "reshape 0 copies");
    ts_tensor_free(&y);
    ck_assert_int_eq(run_reshape(D(2, 3, 4), 3, D(-1), 1, 0, k, &y, &err), 0);
    kc_assert_shape(&y, D(24), 1, "reshape flat");
    ts_tensor_free(&y);
    ck_assert_int_eq(run_reshape(D(1, 1), 2, D(0), 0, -1, k, &y, &err), 0);
    kc_assert_shape(&y, D(0), 0, "reshape to scalar");
    ts_tensor_free(&y);
    ck_assert_int_eq(run_reshape(D(0, 3), 2, D(3, 0), 2, 1, k, &y, &err), 0);
    kc_assert_shape(&y, D(3, 0), 2, "allowzero keeps 0");
    ts_tensor_free(&y);
    /* impossible shapes */
    ck_assert_int_eq(run_reshape(D(2, 3), 2, D(4, -1), 2, -1, k, &y, &err), TS_EINVAL);
    ck_assert_msg(strstr(err.msg, "Reshape"), "%s", err.msg);
    ck_assert_int_eq(run_reshape(D(2, 3), 2, D(-1, -1), 2, -1, k, &y, &err), TS_EINVAL);
    ck_assert_int_eq(run_reshape(D(2, 3), 2, D(5), 1, -1, k, &y, &err), TS_EINVAL);
    ck_assert_int_eq(run_reshape(D(2, 3), 2, D(2, 0, 0), 3, -1, k, &y, &err), TS_EINVAL);
    ck_assert_int_eq(run_reshape(D(2, 3), 2, D(-2, 3), 2, -1, k, &y, &err), TS_EINVAL);
    ck_assert_int_eq(run_reshape(D(0, 3), 2, D(-1, 0), 2, 1, k, &y, &err), TS_EINVAL);
  }
  ck_assert_int_eq(run_reshape(D(2, 3), 2, D(6), 1, 3, true, &y, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "allowzero"), "%s", err.msg);
}
END_TEST

/* ---- Constant, Dropout --------------------------------------------------- */

/* A model whose only node is a Constant feeding the graph output. */
static int run_constant(void (*set)(Onnx__NodeProto *), ts_tensor *y,
                        ts_err *err) {
  Onnx__ModelProto *mp = kc_op_model("Constant", "", 13, NULL, 0, 0, 1, NULL);
  set(mp->graph->node[0]);
  int rc = kc_model_run(mp, NULL, 0, 0, y, 1, err);
  kc_model_free(mp);
  return rc;
}

static void set_value(Onnx__NodeProto *n) {
  ts_tensor t;
  kc_tensor_from(&t, TS_DTYPE_FLOAT, 2, D(2, 2), (double[]){1, -2, 3.5, 4});
  kc_attr_tensor(n, "value", &t);
  ts_tensor_free(&t);
}
static void set_value_float(Onnx__NodeProto *n) { kc_attr_float(n, "value_float", 2.5f); }
static void set_value_floats(Onnx__NodeProto *n) {
  kc_attr_floats(n, "value_floats", 3, (float[]){1, 2, 3});
}
static void set_value_int(Onnx__NodeProto *n) { kc_attr_int(n, "value_int", -7); }
static void set_value_ints(Onnx__NodeProto *n) {
  kc_attr_ints(n, "value_ints", 2, D(5, 6));
}
static void set_two_values(Onnx__NodeProto *n) {
  kc_attr_int(n, "value_int", 1);
  kc_attr_float(n, "value_float", 1);
}
static void set_string(Onnx__NodeProto *n) { kc_attr_string(n, "value_string", "x"); }
static void set_nothing(Onnx__NodeProto *n) { (void)n; }

START_TEST(constant_attributes) {
  ts_tensor y;
  ts_err err;
  ck_assert_int_eq(run_constant(set_value, &y, &err), 0);
  kc_assert_close(&y, (double[]){1, -2, 3.5, 4}, D(2, 2), 2, 0, 0, "value");
  ts_tensor_free(&y);
  ck_assert_int_eq(run_constant(set_value_float, &y, &err), 0);
  kc_assert_close(&y, (double[]){2.5}, NULL, 0, 0, 0, "value_float");
  ck_assert_int_eq(y.dtype, TS_DTYPE_FLOAT);
  ts_tensor_free(&y);
  ck_assert_int_eq(run_constant(set_value_floats, &y, &err), 0);
  kc_assert_close(&y, (double[]){1, 2, 3}, D(3), 1, 0, 0, "value_floats");
  ts_tensor_free(&y);
  ck_assert_int_eq(run_constant(set_value_int, &y, &err), 0);
  kc_assert_close(&y, (double[]){-7}, NULL, 0, 0, 0, "value_int");
  ck_assert_int_eq(y.dtype, TS_DTYPE_INT64);
  ts_tensor_free(&y);
  ck_assert_int_eq(run_constant(set_value_ints, &y, &err), 0);
  kc_assert_close(&y, (double[]){5, 6}, D(2), 1, 0, 0, "value_ints");
  ts_tensor_free(&y);
  ck_assert_int_eq(run_constant(set_two_values, &y, &err), TS_EINVAL);
  ck_assert_int_eq(run_constant(set_nothing, &y, &err), TS_EINVAL);
  ck_assert_int_eq(run_constant(set_string, &y, &err), TS_EUNSUPPORTED);
  ck_assert_msg(strstr(err.msg, "value_string"), "%s", err.msg);
}
END_TEST

START_TEST(dropout_is_identity) {
  kc_rng r = kc_rng_seed(12);
  ts_tensor x, ratio, y[2];
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 3, D(2, 3, 5), &r, -1, 1);
  kc_tensor_from(&ratio, TS_DTYPE_FLOAT, 0, NULL, (double[]){0.5});
  const ts_tensor *in[2] = {&x, &ratio};
  ts_err err;
  ck_assert_int_eq(kc_run_op("Dropout", "", 13, in, 2, 2, y, 2, &err), 0);
  double *ref = kc_to_f64(&x);
  kc_assert_close(&y[0], ref, x.dims, 3, 0, 0, "dropout output");
  ck_assert_int_eq(y[1].dtype, TS_DTYPE_BOOL);
  double ones[30];
  for (int i = 0; i < 30; i++) ones[i] = 1;
  kc_assert_close(&y[1], ones, x.dims, 3, 0, 0, "dropout mask");
  free(ref);
  ts_tensor_free(&y[0]);
  ts_tensor_free(&y[1]);
  /* old opset with a ratio attribute, no mask */
  Onnx__NodeProto *node;
  Onnx__ModelProto *mp = kc_op_model("Dropout", "", 10, in, 1, 0, 1, &node);
  kc_attr_float(node, "ratio", 0.3f);
  ck_assert_int_eq(kc_model_run(mp, in, 1, 0, y, 1, &err), 0);
  kc_model_free(mp);
  ts_tensor_free(&y[0]);
  /* training mode is refused */
  ts_tensor train;
  kc_tensor_from(&train, TS_DTYPE_BOOL, 0, NULL, (double[]){1});
  const ts_tensor *in3[3] = {&x, &ratio, &train};
  ck_assert_int_eq(kc_run_op("Dropout", "", 13, in3, 3, 6, y, 1, &err),
                   TS_EUNSUPPORTED);
  ck_assert_msg(strstr(err.msg, "training_mode"), "%s", err.msg);
  ck_assert_int_eq(kc_run_op("Dropout", "", 13, in3, 3, 2, y, 1, &err),
                   TS_EUNSUPPORTED); /* known only at run time */
  ts_tensor_free(&train);
  ts_tensor_free(&x);
  ts_tensor_free(&ratio);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "core", 120, NULL, NULL, gemm_all_combinations,
                gemm_larger_and_edge_sizes, gemm_bad_inputs, matmul_shapes,
                matmul_bad_inputs, softmax_every_axis, softmax_bad_axis,
                softmax_exp_accuracy, softmax_special_values,
                identity_any_dtype, flatten_every_axis, reshape_cases,
                constant_attributes, dropout_is_identity);
}

const ts_check_suite ts_check_this_suite = {.name = "kernels_core",
                                            .cases = cases};
