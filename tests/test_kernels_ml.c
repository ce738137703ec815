/*
 * test_kernels_ml.c - the ai.onnx.ml kernels (kernels/ml_*.c).
 *
 * Each op runs as a one-node ModelProto built here with protobuf-c, loaded
 * with ts_model_load and run with ts_exec_run, on random attributes and
 * inputs. Its outputs are compared with naive float64 references written in
 * this file from the ONNX ai.onnx.ml spec (and onnxruntime's documented
 * choices where the spec is silent): labels exactly (rows whose decision is
 * within float error of a tie are skipped), scores with a tolerance scaled to
 * the magnitude of the terms summed. The pairwise-coupled SVM probabilities
 * are checked against the exact solution of the coupling problem (a linear
 * system), not against the iteration the kernel runs.
 *
 * Every bad-attribute and bad-input class has a test expecting its exact
 * code and a message naming the attribute or input.
 *
 * Finally, tests/python/sklearn_models.py trains scikit-learn models and
 * writes them as ONNX graphs with scikit-learn's own predictions; every
 * model in its manifest runs here and must match those within the manifest's
 * tolerance.
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "graph.h"
#include "kernel_check.h"
#include "npy.h"
#include "onnx.pb-c.h"
#include "ops.h"

#define PYTHON "/usr/bin/python3"

/* ---- random numbers and one-node models ---------------------------------- */

static kc_rng rng;

static void rng_seed(uint64_t s) { rng = kc_rng_seed(s); }

/* Uniform in [lo, hi). */
static double uni(double lo, double hi) { return kc_uniform(&rng, lo, hi); }

/* Uniform integer in [0, n). */
static int rnd(int n) { return (int)kc_randint(&rng, 0, n - 1); }

/* A node's attributes are collected on a bare NodeProto (kernel_check.h's
 * kc_attr_* copy the values); load_op turns it into the model's one node
 * and frees it with the model. */
typedef Onnx__NodeProto attr_list;

static attr_list *attrs_new(void) {
  attr_list *n = malloc(sizeof *n);
  ck_assert_ptr_nonnull(n);
  onnx__node_proto__init(n);
  return n;
}

static void add_floats(attr_list *l, const char *name, const float *v,
                       size_t n) {
  kc_attr_floats(l, name, n, v);
}

static void add_ints(attr_list *l, const char *name, const int64_t *v,
                     size_t n) {
  kc_attr_ints(l, name, n, v);
}

static void add_int(attr_list *l, const char *name, int64_t v) {
  kc_attr_int(l, name, v);
}

static void add_string(attr_list *l, const char *name, const char *v) {
  kc_attr_string(l, name, v);
}

static void add_strings(attr_list *l, const char *name, int n) {
  static const char *const strs[] = {"a", "b", "c", "d"};
  kc_attr_strings(l, name, (size_t)n, strs);
}

/* The graph input: dtype and dims (-1: symbolic) of X. */
typedef struct input_spec {
  ts_dtype dtype;
  int rank;
  int64_t dims[3];
} input_spec;

static input_spec input_2d(ts_dtype t, int64_t n, int64_t f) {
  input_spec s = {t, 2, {n, f, 0}};
  return s;
}

/* Builds and loads a model whose one node is the ai.onnx.ml op `op` with the
 * attributes in al (consumed), reading X and writing n_outputs outputs
 * ("Y", "Z"). Returns ts_model_load's code. */
static int load_op(const char *op, attr_list *al, input_spec in, int n_outputs,
                   ts_model **m, ts_err *err) {
  Onnx__ModelProto *mp = kc_model_new(13);
  kc_model_opset(mp, "ai.onnx.ml", 1);
  kc_model_input(mp, "X", in.dtype, in.rank, in.dims);
  kc_model_output(mp, "Y", TS_DTYPE_UNDEFINED, -1, NULL);
  if (n_outputs > 1) kc_model_output(mp, "Z", TS_DTYPE_UNDEFINED, -1, NULL);
  Onnx__NodeProto *node = kc_model_node(mp, op, "ai.onnx.ml", "n0", "X",
                                        n_outputs > 1 ? "Y,Z" : "Y");
  node->n_attribute = al->n_attribute;
  node->attribute = al->attribute;
  al->n_attribute = 0;
  al->attribute = NULL;
  free(al);
  ts_err_clear(err);
  int rc = kc_model_load(mp, m, err);
  kc_model_free(mp);
  return rc;
}

/* Loads, which must succeed. */
static ts_model *must_load(const char *op, attr_list *al, input_spec in,
                           int n_outputs) {
  ts_model *m = NULL;
  ts_err err;
  int rc = load_op(op, al, in, n_outputs, &m, &err);
  ck_assert_msg(rc == 0, "%s: load failed (%d): %s", op, rc, err.msg);
  return m;
}

/* Loading must fail with `code` and a message containing `needle`. */
static void expect_load_error(const char *op, attr_list *al, input_spec in,
                              int n_outputs, int code, const char *needle) {
  ts_model *m = NULL;
  ts_err err;
  int rc = load_op(op, al, in, n_outputs, &m, &err);
  if (rc == 0) ts_model_free(m);
  ck_assert_msg(rc == code, "%s: load returned %d, want %d (%s)", op, rc, code,
                rc ? err.msg : "loaded");
  ck_assert_msg(strstr(err.msg, needle) != NULL,
                "%s: message '%s' does not name '%s'", op, err.msg, needle);
  ck_assert_msg(strstr(err.msg, op) != NULL,
                "%s: message '%s' does not name the op", op, err.msg);
}

/* Input values as dtype t (integers for the integer types). */
static void *make_input(ts_dtype t, const double *v, size_t count) {
  size_t es = ts_dtype_size(t);
  uint8_t *buf = malloc(count * es + 1);
  ck_assert_ptr_nonnull(buf);
  for (size_t i = 0; i < count; i++) {
    switch (t) {
      case TS_DTYPE_FLOAT:
        ((float *)buf)[i] = (float)v[i];
        break;
      case TS_DTYPE_DOUBLE:
        ((double *)buf)[i] = v[i];
        break;
      case TS_DTYPE_INT32:
        ((int32_t *)buf)[i] = (int32_t)v[i];
        break;
      case TS_DTYPE_INT64:
        ((int64_t *)buf)[i] = (int64_t)v[i];
        break;
      default:
        ck_abort_msg("bad dtype");
    }
  }
  return buf;
}

/* Random input values: floats in [-1, 1) (rounded to float), or integers in
 * [-3, 3] for the integer dtypes. */
static void random_input(ts_dtype t, double *v, size_t count) {
  for (size_t i = 0; i < count; i++)
    v[i] = t == TS_DTYPE_INT32 || t == TS_DTYPE_INT64
               ? (double)(rnd(7) - 3)
               : (double)(float)uni(-1, 1);
}

/* Runs m on X (dtype t, rank 1 or 2 of the given dims) into out (room for
 * all graph outputs). Returns ts_exec_run's code. */
static int run_model(const ts_model *m, ts_session *s, ts_dtype t,
                     const double *x, int rank, const int64_t *dims,
                     ts_tensor *out, ts_err *err) {
  int64_t count = ts_shape_numel(dims, rank);
  void *data = make_input(t, x, (size_t)count);
  ts_tensor in;
  ts_err e;
  ck_assert_int_eq(ts_tensor_view(&in, t, dims, rank, data, &e), 0);
  const char *names[] = {"X"};
  ts_err_clear(err);
  int rc = ts_exec_run(m, s, names, &in, 1, NULL, out, 0, err);
  free(data);
  return rc;
}

static void must_run(const ts_model *m, ts_session *s, ts_dtype t,
                     const double *x, int64_t n, int64_t f, ts_tensor *out) {
  ts_err err;
  int64_t dims[2] = {n, f};
  int rc = run_model(m, s, t, x, 2, dims, out, &err);
  ck_assert_msg(rc == 0, "run failed (%d): %s", rc, err.msg);
}

/* ---- comparing ----------------------------------------------------------- */

static void expect_shape(const ts_tensor *t, ts_dtype dtype, int rank,
                         int64_t d0, int64_t d1, const char *what) {
  ck_assert_msg(t->dtype == dtype, "%s: dtype %d, want %d", what, t->dtype,
                dtype);
  ck_assert_msg(t->rank == rank, "%s: rank %d, want %d", what, t->rank, rank);
  ck_assert_msg(t->dims[0] == d0, "%s: dim 0 is %lld, want %lld", what,
                (long long)t->dims[0], (long long)d0);
  if (rank > 1)
    ck_assert_msg(t->dims[1] == d1, "%s: dim 1 is %lld, want %lld", what,
                  (long long)t->dims[1], (long long)d1);
}

/* |got - ref| <= tol, with a message naming the element. */
static void expect_close(double got, double ref, double tol, const char *what,
                         int64_t row, int64_t col) {
  ck_assert_msg(fabs(got - ref) <= tol || (isnan(ref) && isnan(got)),
                "%s[%lld][%lld]: got %.9g, want %.9g (tolerance %.3g)", what,
                (long long)row, (long long)col, got, ref, tol);
}

/* ---- float64 references -------------------------------------------------- */

enum { P_NONE, P_LOGISTIC, P_SOFTMAX, P_SOFTMAX_ZERO, P_PROBIT, P_COUNT };
static const char *const post_name[] = {"NONE", "LOGISTIC", "SOFTMAX",
                                        "SOFTMAX_ZERO", "PROBIT"};

/* The inverse of the standard normal CDF, by bisection on erfc. */
static double ref_probit(double p) {
  double lo = -12, hi = 12;
  for (int i = 0; i < 200; i++) {
    double mid = 0.5 * (lo + hi);
    if (0.5 * erfc(-mid / sqrt(2.0)) < p)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

/* The spec's post transforms over one row of c scores. SOFTMAX_ZERO is a
 * softmax over the non-zero entries; zero entries stay zero. */
static void ref_post(int post, double *s, int c) {
  double mx = -INFINITY, sum = 0;
  switch (post) {
    case P_LOGISTIC:
      for (int j = 0; j < c; j++) s[j] = 1 / (1 + exp(-s[j]));
      break;
    case P_PROBIT:
      for (int j = 0; j < c; j++) s[j] = ref_probit(s[j]);
      break;
    case P_SOFTMAX:
    case P_SOFTMAX_ZERO:
      for (int j = 0; j < c; j++)
        if (s[j] > mx && !(post == P_SOFTMAX_ZERO && s[j] == 0)) mx = s[j];
      for (int j = 0; j < c; j++) {
        if (post == P_SOFTMAX_ZERO && s[j] == 0) continue;
        s[j] = exp(s[j] - mx);
        sum += s[j];
      }
      for (int j = 0; j < c; j++) s[j] = sum > 0 ? s[j] / sum : 0;
      break;
    default:
      break;
  }
}

/* Tolerance on a transformed score given the tolerance on the raw one:
 * LOGISTIC and SOFTMAX have slopes below 1; PROBIT is an approximation
 * (Winitzki's erfinv, accurate to ~2e-3). */
static double post_tol(int post, double raw_tol) {
  if (post == P_PROBIT) return 5e-3 + 4 * raw_tol;
  return raw_tol + 1e-6;
}

/* Index of the largest value; -1 when the top two are within `gap`. */
static int ref_argmax(const double *s, int c, double gap) {
  int best = 0;
  for (int j = 1; j < c; j++)
    if (s[j] > s[best]) best = j;
  for (int j = 0; j < c; j++)
    if (j != best && s[best] - s[j] < gap) return -1;
  return best;
}

/* ---- LinearRegressor and LinearClassifier -------------------------------- */

static const ts_dtype input_dtypes[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE,
                                        TS_DTYPE_INT32, TS_DTYPE_INT64};

/* Random coefficients; for PROBIT, scores must be probabilities, so the
 * weights are scaled to keep |w.x| below 0.3 and the intercepts are 0.5. */
static void random_linear(int post, int rows, int f, const double *x, int n,
                          float *coef, float *intercepts) {
  double xmax = 1e-9;
  for (int i = 0; i < n * f; i++) xmax = fmax(xmax, fabs(x[i]));
  double w = post == P_PROBIT ? 0.3 / (f * xmax) : 1.0;
  for (int i = 0; i < rows * f; i++) coef[i] = (float)uni(-w, w);
  for (int r = 0; r < rows; r++)
    intercepts[r] = post == P_PROBIT ? 0.5f : (float)uni(-1, 1);
}

/* raw[n][rows] = x . coef^T + intercepts (NULL: 0), in float64. */
static void ref_linear(const double *x, int n, int f, const float *coef,
                       const float *intercepts, int rows, double *raw,
                       double *scale) {
  for (int i = 0; i < n; i++)
    for (int r = 0; r < rows; r++) {
      double s = intercepts ? intercepts[r] : 0, a = fabs(s);
      for (int k = 0; k < f; k++) {
        s += x[i * f + k] * coef[r * f + k];
        a += fabs(x[i * f + k] * coef[r * f + k]);
      }
      raw[i * rows + r] = s;
      if (scale) scale[i * rows + r] = a + 1;
    }
}

/* Largest term sum of row i of scale[n][cols], the yardstick for the
 * float32 error of that row's scores. */
static double row_scale(const double *scale, int i, int cols) {
  double m = 0;
  for (int j = 0; j < cols; j++) m = fmax(m, scale[i * cols + j]);
  return m;
}

/* Checks got[n][cols] against post(raw) row by row, raw[n][cols] being the
 * float64 scores before the transform and scale[n][cols] their term sums. */
static void check_score_rows(const float *got, const double *raw,
                             const double *scale, int n, int cols, int post) {
  for (int i = 0; i < n; i++) {
    double want[16];
    ck_assert_int_le(cols, 16);
    memcpy(want, raw + i * cols, (size_t)cols * sizeof *want);
    ref_post(post, want, cols);
    double tol = post_tol(post, 1e-5 * row_scale(scale, i, cols));
    for (int j = 0; j < cols; j++)
      expect_close(got[i * cols + j], want[j], tol, post_name[post], i, j);
  }
}

/* A label the reference cannot decide (a near-tie): not checked. */
#define NO_LABEL INT64_MIN

static void check_label(const ts_tensor *y, int row, int64_t want, int trial) {
  if (want == NO_LABEL) return;
  int64_t got = ((int64_t *)y->data)[row];
  ck_assert_msg(got == want, "trial %d row %d: label %lld, want %lld", trial,
                row, (long long)got, (long long)want);
}

/* The same random linear model as a LinearRegressor with `rows` targets
 * and, for rows >= 2, as a LinearClassifier with `rows` classes (label =
 * the first largest raw score), for every post_transform and input type. */
START_TEST(test_linear_models) {
  rng_seed(11);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  for (int trial = 0; trial < 80; trial++) {
    int post = trial % P_COUNT;
    ts_dtype dt = input_dtypes[(trial / P_COUNT) % 4];
    int rows = 1 + rnd(5), f = 1 + rnd(10), n = 1 + rnd(8);
    bool with_intercepts = post == P_PROBIT || trial % 3 != 0;
    double x[8 * 10], raw[8 * 5], scale[8 * 5];
    float coef[5 * 10], intercepts[5];
    int64_t labels[5];
    random_input(dt, x, (size_t)(n * f));
    random_linear(post, rows, f, x, n, coef, intercepts);
    for (int r = 0; r < rows; r++) labels[r] = 100 - 17 * r + rnd(5);
    if (post == P_SOFTMAX_ZERO && rows > 1) {
      /* Row 1 scores exactly 0 and must be left out of the softmax. */
      memset(coef + f, 0, (size_t)f * sizeof *coef);
      intercepts[1] = 0;
    }
    ref_linear(x, n, f, coef, with_intercepts ? intercepts : NULL, rows, raw,
               scale);

    attr_list *al = attrs_new();
    add_floats(al, "coefficients", coef, (size_t)(rows * f));
    if (with_intercepts) add_floats(al, "intercepts", intercepts, rows);
    add_int(al, "targets", rows);
    add_string(al, "post_transform", post_name[post]);
    ts_model *m = must_load("LinearRegressor", al, input_2d(dt, -1, f), 1);
    ts_tensor out[2];
    must_run(m, s, dt, x, n, f, out);
    expect_shape(&out[0], TS_DTYPE_FLOAT, 2, n, rows, "Y");
    check_score_rows(out[0].data, raw, scale, n, rows, post);
    ts_model_free(m);
    if (rows == 1) continue;

    al = attrs_new();
    add_floats(al, "coefficients", coef, (size_t)(rows * f));
    if (with_intercepts) add_floats(al, "intercepts", intercepts, rows);
    add_ints(al, "classlabels_ints", labels, rows);
    add_int(al, "multi_class", trial % 2);
    add_string(al, "post_transform", post_name[post]);
    m = must_load("LinearClassifier", al, input_2d(dt, -1, f), 2);
    must_run(m, s, dt, x, n, f, out);
    expect_shape(&out[0], TS_DTYPE_INT64, 1, n, 0, "Y");
    expect_shape(&out[1], TS_DTYPE_FLOAT, 2, n, rows, "Z");
    for (int i = 0; i < n; i++) {
      int best =
          ref_argmax(raw + i * rows, rows, 1e-5 * row_scale(scale, i, rows));
      check_label(&out[0], i, best >= 0 ? labels[best] : NO_LABEL, trial);
    }
    check_score_rows(out[1].data, raw, scale, n, rows, post);
    ts_model_free(m);
  }
  ts_session_free(s);
}
END_TEST

/* One coefficient row: label labels[1] when the score is > 0; with two
 * labels the scores are [1 - p, p], p = the (transformed) score. */
START_TEST(test_linear_classifier_binary) {
  rng_seed(13);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  for (int trial = 0; trial < 24; trial++) {
    int post = trial % 2 ? P_LOGISTIC : P_NONE;
    bool with_labels = (trial / 2) % 2 == 0;
    int f = 1 + rnd(10), n = 1 + rnd(8);
    double x[8 * 10], raw[8], scale[8];
    float coef[10], intercept[1];
    int64_t labels[2] = {-4, 9};
    random_input(TS_DTYPE_FLOAT, x, (size_t)(n * f));
    random_linear(post, 1, f, x, n, coef, intercept);

    attr_list *al = attrs_new();
    add_floats(al, "coefficients", coef, (size_t)f);
    add_floats(al, "intercepts", intercept, 1);
    if (with_labels) add_ints(al, "classlabels_ints", labels, 2);
    add_string(al, "post_transform", post_name[post]);
    ts_model *m =
        must_load("LinearClassifier", al, input_2d(TS_DTYPE_FLOAT, -1, f), 2);
    ts_tensor out[2];
    must_run(m, s, TS_DTYPE_FLOAT, x, n, f, out);
    int cols = with_labels ? 2 : 1;
    expect_shape(&out[1], TS_DTYPE_FLOAT, 2, n, cols, "Z");

    ref_linear(x, n, f, coef, intercept, 1, raw, scale);
    for (int i = 0; i < n; i++) {
      double tol = 1e-5 * scale[i];
      int64_t want = raw[i] > 0 ? (with_labels ? labels[1] : 1)
                                : (with_labels ? labels[0] : 0);
      if (fabs(raw[i]) > tol)
        ck_assert_int_eq(((int64_t *)out[0].data)[i], want);
      double p = post == P_LOGISTIC ? 1 / (1 + exp(-raw[i])) : raw[i];
      const float *z = (float *)out[1].data + i * cols;
      expect_close(z[cols - 1], p, tol, "Z", i, cols - 1);
      if (cols == 2) expect_close(z[0], 1 - p, tol, "Z", i, 0);
    }
    ts_model_free(m);
  }
  ts_session_free(s);
}
END_TEST

/* A rank-1 input is one sample. */
START_TEST(test_linear_classifier_rank1) {
  float coef[] = {1, -2, 0.5f, 3, 1, -1};
  int64_t labels[] = {10, 20};
  attr_list *al = attrs_new();
  add_floats(al, "coefficients", coef, 6);
  add_ints(al, "classlabels_ints", labels, 2);
  input_spec in = {TS_DTYPE_FLOAT, 1, {3, 0, 0}};
  ts_model *m = must_load("LinearClassifier", al, in, 2);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  double x[] = {0.5, 0.25, -1};
  int64_t dims[] = {3};
  ts_tensor out[2];
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 1, dims, out, &err), 0);
  expect_shape(&out[0], TS_DTYPE_INT64, 1, 1, 0, "Y");
  expect_shape(&out[1], TS_DTYPE_FLOAT, 2, 1, 2, "Z");
  double z0 = 0.5 - 0.5 - 0.5, z1 = 1.5 + 0.25 + 1;
  expect_close(((float *)out[1].data)[0], z0, 1e-6, "Z", 0, 0);
  expect_close(((float *)out[1].data)[1], z1, 1e-6, "Z", 0, 1);
  ck_assert_int_eq(((int64_t *)out[0].data)[0], 20);
  ts_model_free(m);
  ts_session_free(s);
}
END_TEST

/* ---- SVMs ---------------------------------------------------------------- */

enum { K_LINEAR, K_POLY, K_RBF, K_SIGMOID, K_COUNT };
static const char *const kernel_name[] = {"LINEAR", "POLY", "RBF", "SIGMOID"};

static double ref_kernel(int k, const double *x, const float *sv, int f,
                         const float *kp) {
  double dot = 0, dist = 0;
  for (int j = 0; j < f; j++) {
    dot += x[j] * sv[j];
    dist += (x[j] - sv[j]) * (x[j] - sv[j]);
  }
  switch (k) {
    case K_POLY:
      return pow(kp[0] * dot + kp[1], kp[2]);
    case K_RBF:
      return exp(-kp[0] * dist);
    case K_SIGMOID:
      return tanh(kp[0] * dot + kp[1]);
    default:
      return dot;
  }
}

/* [gamma, coef0, degree] for inputs and vectors in [-1, 1]^f: degree 0 to
 * 3, or now and then 1.5 with coef0 large enough that gamma x.s + coef0 > 0
 * (a fractional power of a negative base is NaN). */
static void random_kernel_params(float *kp, int f) {
  kp[0] = (float)uni(0.1, 0.6);
  kp[1] = (float)uni(-0.5, 0.5);
  kp[2] = (float)rnd(4);
  if (rnd(4) == 0) {
    kp[2] = 1.5f;
    kp[1] = kp[0] * (float)f + 0.25f;
  }
}

START_TEST(test_svm_regressor) {
  rng_seed(14);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  for (int trial = 0; trial < 48; trial++) {
    int kernel = trial % K_COUNT;
    int mode = (trial / K_COUNT) % 3; /* 0: SVR, 1: one-class, 2: linear */
    int f = 1 + rnd(8), n = 1 + rnd(8), v = mode == 2 ? 0 : 1 + rnd(8);
    double x[8 * 8];
    float sv[8 * 8], coef[8], rho[1], kp[3];
    random_input(TS_DTYPE_FLOAT, x, (size_t)(n * f));
    for (int i = 0; i < v * f; i++) sv[i] = (float)uni(-1, 1);
    int n_coef = mode == 2 ? f : v;
    for (int i = 0; i < n_coef; i++) coef[i] = (float)uni(-1, 1);
    rho[0] = (float)uni(-0.5, 0.5);
    random_kernel_params(kp, f);

    attr_list *al = attrs_new();
    add_string(al, "kernel_type", kernel_name[kernel]);
    add_floats(al, "kernel_params", kp, 3);
    if (v) add_floats(al, "support_vectors", sv, (size_t)(v * f));
    add_floats(al, "coefficients", coef, (size_t)n_coef);
    add_floats(al, "rho", rho, 1);
    add_int(al, "n_supports", v);
    add_int(al, "one_class", mode == 1);
    add_string(al, "post_transform", "NONE");
    ts_model *m =
        must_load("SVMRegressor", al, input_2d(TS_DTYPE_FLOAT, -1, f), 1);
    ts_tensor out[1];
    must_run(m, s, TS_DTYPE_FLOAT, x, n, f, out);
    expect_shape(&out[0], TS_DTYPE_FLOAT, 2, n, 1, "Y");
    for (int i = 0; i < n; i++) {
      double y = rho[0], scale = fabs(rho[0]) + 1;
      if (mode == 2) {
        for (int j = 0; j < f; j++) {
          y += coef[j] * x[i * f + j];
          scale += fabs(coef[j] * x[i * f + j]);
        }
      }
      for (int j = 0; j < v; j++) {
        double k = ref_kernel(kernel, x + i * f, sv + j * f, f, kp);
        y += coef[j] * k;
        scale += fabs(coef[j]) * fmax(1, fabs(k));
      }
      double got = ((float *)out[0].data)[i];
      if (mode == 1) {
        if (fabs(y) > 1e-4 * scale)
          ck_assert_msg(got == (y > 0 ? 1.0 : -1.0),
                        "one-class row %d: %g for score %g", i, got, y);
      } else {
        expect_close(got, y, 2e-5 * scale, kernel_name[kernel], i, 0);
      }
    }
    ts_model_free(m);
  }
  ts_session_free(s);
}
END_TEST

/* Solves the pairwise-coupling problem of Wu, Lin and Weng (method 2)
 * exactly: min p'Qp subject to sum(p) = 1, i.e. [Q 1; 1' 0] [p; b] = [0; 1],
 * by Gaussian elimination with partial pivoting. */
static void ref_couple(int k, const double *r, double *p) {
  double a[6][7] = {{0}};
  for (int i = 0; i < k; i++) {
    for (int j = 0; j < k; j++) {
      if (i == j) {
        for (int t = 0; t < k; t++)
          if (t != i) a[i][i] += r[t * k + i] * r[t * k + i];
      } else {
        a[i][j] = -r[j * k + i] * r[i * k + j];
      }
    }
    a[i][k] = 1;
    a[k][i] = 1;
  }
  a[k][k + 1] = 1;
  int m = k + 1;
  for (int c = 0; c < m; c++) {
    int piv = c;
    for (int i = c + 1; i < m; i++)
      if (fabs(a[i][c]) > fabs(a[piv][c])) piv = i;
    for (int j = 0; j <= m; j++) {
      double t = a[c][j];
      a[c][j] = a[piv][j];
      a[piv][j] = t;
    }
    for (int i = 0; i < m; i++) {
      if (i == c) continue;
      double fct = a[i][c] / a[c][c];
      for (int j = c; j <= m; j++) a[i][j] -= fct * a[c][j];
    }
  }
  for (int i = 0; i < k; i++) p[i] = a[i][m] / a[i][i];
}

#define MAXC 5
#define MAXV 16
#define MAXF 8

/* A random SVMClassifier in SVC mode and its float64 evaluation. */
typedef struct svc_case {
  int kernel, classes, f, vectors, post;
  bool proba;
  float kp[3];
  int64_t per_class[MAXC], labels[MAXC];
  float sv[MAXV * MAXF], coef[(MAXC - 1) * MAXV];
  float rho[MAXC * (MAXC - 1) / 2], prob_a[MAXC * (MAXC - 1) / 2],
      prob_b[MAXC * (MAXC - 1) / 2];
} svc_case;

static void svc_attrs(const svc_case *c, attr_list *al) {
  int pairs = c->classes * (c->classes - 1) / 2;
  add_string(al, "kernel_type", kernel_name[c->kernel]);
  add_floats(al, "kernel_params", c->kp, 3);
  add_ints(al, "vectors_per_class", c->per_class, (size_t)c->classes);
  add_floats(al, "support_vectors", c->sv, (size_t)(c->vectors * c->f));
  add_floats(al, "coefficients", c->coef,
             (size_t)((c->classes - 1) * c->vectors));
  add_floats(al, "rho", c->rho, (size_t)pairs);
  add_ints(al, "classlabels_ints", c->labels, (size_t)c->classes);
  if (c->proba) {
    add_floats(al, "prob_a", c->prob_a, (size_t)pairs);
    add_floats(al, "prob_b", c->prob_b, (size_t)pairs);
  }
  add_string(al, "post_transform", post_name[c->post]);
}

/* Checks one sample's label and scores against the float64 evaluation:
 * pair (i, j) decides sum over class i's vectors of coef[j-1][v] K +
 * sum over class j's of coef[i][v] K + rho; > 0 votes i; the label is the
 * first class with most votes. */
static void svc_check_row(const svc_case *c, const double *x, int64_t label,
                          const float *z, int row) {
  int k = c->classes, first[MAXC], pairs = k * (k - 1) / 2;
  double kv[MAXV], d[MAXC * MAXC], dscale[MAXC * MAXC];
  for (int i = 0, acc = 0; i < k; i++) {
    first[i] = acc;
    acc += (int)c->per_class[i];
  }
  for (int v = 0; v < c->vectors; v++)
    kv[v] = ref_kernel(c->kernel, x, c->sv + v * c->f, c->f, c->kp);
  int votes[MAXC] = {0}, p = 0;
  bool tie = false;
  double maxscale = 0;
  for (int i = 0; i < k; i++)
    for (int j = i + 1; j < k; j++, p++) {
      double sum = c->rho[p], a = fabs(c->rho[p]) + 1;
      for (int v = first[i]; v < first[i] + c->per_class[i]; v++) {
        sum += c->coef[(j - 1) * c->vectors + v] * kv[v];
        a += fabs(c->coef[(j - 1) * c->vectors + v]) * fmax(1, fabs(kv[v]));
      }
      for (int v = first[j]; v < first[j] + c->per_class[j]; v++) {
        sum += c->coef[i * c->vectors + v] * kv[v];
        a += fabs(c->coef[i * c->vectors + v]) * fmax(1, fabs(kv[v]));
      }
      d[p] = sum;
      dscale[p] = a;
      maxscale = fmax(maxscale, a);
      if (fabs(sum) < 1e-4 * a) tie = true;
      votes[sum > 0 ? i : j]++;
    }
  int best = 0;
  for (int i = 1; i < k; i++)
    if (votes[i] > votes[best]) best = i;
  if (!tie)
    ck_assert_msg(label == c->labels[best], "%s row %d: label %lld, want %lld",
                  kernel_name[c->kernel], row, (long long)label,
                  (long long)c->labels[best]);

  double want[MAXC * MAXC];
  int cols;
  double tol;
  if (c->proba) {
    double r[MAXC * MAXC];
    p = 0;
    for (int i = 0; i < k; i++)
      for (int j = i + 1; j < k; j++, p++) {
        double q = 1 / (1 + exp(d[p] * c->prob_a[p] + c->prob_b[p]));
        q = fmin(fmax(q, 1e-7), 1 - 1e-7);
        r[i * k + j] = q;
        r[j * k + i] = 1 - q;
      }
    ref_couple(k, r, want);
    cols = k;
    tol = 1e-2; /* the kernel iterates to libsvm's stopping rule */
  } else if (k == 2) {
    want[0] = -d[0];
    want[1] = d[0];
    cols = 2;
    tol = 2e-5 * dscale[0];
  } else {
    memcpy(want, d, (size_t)pairs * sizeof *d);
    cols = pairs;
    tol = 2e-5 * maxscale;
  }
  ref_post(c->post, want, cols);
  for (int j = 0; j < cols; j++)
    expect_close(z[j], want[j], post_tol(c->post, tol), post_name[c->post], row,
                 j);
}

static void random_svc(svc_case *c, int kernel, int classes, bool proba,
                       int post) {
  memset(c, 0, sizeof *c);
  c->kernel = kernel;
  c->classes = classes;
  c->proba = proba;
  c->post = post;
  c->f = 1 + rnd(MAXF);
  random_kernel_params(c->kp, c->f);
  for (int i = 0; i < classes; i++) {
    c->per_class[i] = rnd(4) == 0 ? 0 : 1 + rnd(3);
    c->labels[i] = 7 * i - 3 + (i ? rnd(3) : 0);
    c->vectors += (int)c->per_class[i];
  }
  if (c->vectors == 0) {
    c->per_class[classes - 1] = 2;
    c->vectors = 2;
  }
  for (int i = 0; i < c->vectors * c->f; i++) c->sv[i] = (float)uni(-1, 1);
  for (int i = 0; i < (classes - 1) * c->vectors; i++)
    c->coef[i] = (float)uni(-1, 1);
  for (int i = 0; i < classes * (classes - 1) / 2; i++) {
    c->rho[i] = (float)uni(-0.5, 0.5);
    c->prob_a[i] = (float)uni(-3, -0.5);
    c->prob_b[i] = (float)uni(-0.3, 0.3);
  }
}

static void run_svc_case(const svc_case *c, ts_session *s, int n) {
  attr_list *al = attrs_new();
  svc_attrs(c, al);
  ts_model *m =
      must_load("SVMClassifier", al, input_2d(TS_DTYPE_FLOAT, -1, c->f), 2);
  double *x = malloc((size_t)(n * c->f) * sizeof *x);
  ck_assert_ptr_nonnull(x);
  random_input(TS_DTYPE_FLOAT, x, (size_t)(n * c->f));
  ts_tensor out[2];
  must_run(m, s, TS_DTYPE_FLOAT, x, n, c->f, out);
  int k = c->classes;
  int cols = c->proba ? k : (k == 2 ? 2 : k * (k - 1) / 2);
  expect_shape(&out[0], TS_DTYPE_INT64, 1, n, 0, "Y");
  expect_shape(&out[1], TS_DTYPE_FLOAT, 2, n, cols, "Z");
  for (int i = 0; i < n; i++)
    svc_check_row(c, x + i * c->f, ((int64_t *)out[0].data)[i],
                  (float *)out[1].data + i * cols, i);
  free(x);
  ts_model_free(m);
}

START_TEST(test_svm_classifier_svc) {
  rng_seed(15);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  static const int multi_posts[] = {P_NONE, P_LOGISTIC, P_SOFTMAX,
                                    P_SOFTMAX_ZERO};
  for (int trial = 0; trial < 96; trial++) {
    int kernel = trial % K_COUNT;
    int classes = 2 + (trial / K_COUNT) % 4;
    bool proba = (trial / 16) % 2 == 1;
    int post = proba          ? (trial / 32) % P_COUNT
               : classes == 2 ? P_NONE
                              : multi_posts[(trial / 32) % 4];
    svc_case c;
    random_svc(&c, kernel, classes, proba, post);
    run_svc_case(&c, s, 1 + rnd(9));
  }
  ts_session_free(s);
}
END_TEST

/* More samples than one block of kernel rows (64 Ki values / vectors). */
START_TEST(test_svm_classifier_large_batch) {
  rng_seed(16);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  svc_case c;
  random_svc(&c, K_RBF, 3, false, P_NONE);
  /* MAXV vectors -> 4096 rows per block; 9000 rows make three blocks. */
  c.vectors = 0;
  for (int i = 0; i < 3; i++)
    c.vectors += (int)(c.per_class[i] = i == 2 ? 6 : 5);
  for (int i = 0; i < c.vectors * c.f; i++) c.sv[i] = (float)uni(-1, 1);
  for (int i = 0; i < 2 * c.vectors; i++) c.coef[i] = (float)uni(-1, 1);
  run_svc_case(&c, s, 9000);
  ts_session_free(s);
}
END_TEST

/* Linear mode (no support vectors): scores = W x + rho[0]; two classes use
 * onnxruntime's rule: labels[1] if the top score is >= 0.5 (all weights
 * non-negative) or > 0 (mixed weights), else the label of the top score. */
START_TEST(test_svm_classifier_linear_mode) {
  rng_seed(17);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  for (int trial = 0; trial < 40; trial++) {
    int classes = 2 + trial % 3, f = 1 + rnd(8), n = 1 + rnd(8);
    int post = (trial / 3) % 4; /* PROBIT needs probabilities */
    bool positive = (trial / 12) % 2 == 1;
    double x[8 * 8], raw[8 * 4], scale[8 * 4];
    float coef[4 * 8], rho[1] = {(float)uni(-0.5, 0.5)};
    int64_t labels[4] = {5, 6, 8, 9};
    random_input(TS_DTYPE_FLOAT, x, (size_t)(n * f));
    for (int i = 0; i < classes * f; i++)
      coef[i] = (float)uni(positive ? 0 : -1, 1);

    attr_list *al = attrs_new();
    add_string(al, "kernel_type", "LINEAR");
    add_floats(al, "coefficients", coef, (size_t)(classes * f));
    add_floats(al, "rho", rho, 1);
    add_ints(al, "classlabels_ints", labels, (size_t)classes);
    add_string(al, "post_transform", post_name[post]);
    ts_model *m =
        must_load("SVMClassifier", al, input_2d(TS_DTYPE_FLOAT, -1, f), 2);
    ts_tensor out[2];
    must_run(m, s, TS_DTYPE_FLOAT, x, n, f, out);
    expect_shape(&out[1], TS_DTYPE_FLOAT, 2, n, classes, "Z");
    ref_linear(x, n, f, coef, NULL, classes, raw, scale);
    for (int i = 0; i < n * classes; i++) {
      raw[i] += rho[0];
      scale[i] += fabs(rho[0]);
    }
    for (int i = 0; i < n; i++) {
      double *ri = raw + i * classes;
      double gap = 1e-5 * row_scale(scale, i, classes);
      int best = ref_argmax(ri, classes, gap);
      int64_t want = best >= 0 ? labels[best] : NO_LABEL;
      if (classes == 2 && best >= 0) {
        double top = ri[best], threshold = positive ? 0.5 : 0;
        if (fabs(top - threshold) < gap)
          want = NO_LABEL;
        else if (positive ? top >= 0.5 : top > 0)
          want = labels[1];
      }
      check_label(&out[0], i, want, trial);
    }
    check_score_rows(out[1].data, raw, scale, n, classes, post);
    ts_model_free(m);
  }
  ts_session_free(s);
}
END_TEST

/* ---- Normalizer and Scaler ----------------------------------------------- */

START_TEST(test_normalizer) {
  rng_seed(18);
  static const char *const norms[] = {"MAX", "L1", "L2"};
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  for (int trial = 0; trial < 36; trial++) {
    int norm = trial % 3;
    ts_dtype dt = input_dtypes[(trial / 3) % 4];
    int f = 1 + rnd(9), n = 2 + rnd(7);
    double x[8 * 9];
    random_input(dt, x, (size_t)(n * f));
    for (int j = 0; j < f; j++) x[j] = 0;               /* a zero row */
    for (int j = 0; j < f; j++) x[f + j] = -1 - rnd(3); /* all negative */
    attr_list *al = attrs_new();
    add_string(al, "norm", norms[norm]);
    ts_model *m = must_load("Normalizer", al, input_2d(dt, n, f), 1);
    ts_tensor out[1];
    must_run(m, s, dt, x, n, f, out);
    expect_shape(&out[0], TS_DTYPE_FLOAT, 2, n, f, "Y");
    for (int i = 0; i < n; i++) {
      const double *r = x + i * f;
      double d = norm == 0 ? -INFINITY : 0;
      for (int j = 0; j < f; j++)
        d = norm == 0   ? fmax(d, r[j])
            : norm == 1 ? d + fabs(r[j])
                        : d + r[j] * r[j];
      if (norm == 2) d = sqrt(d);
      for (int j = 0; j < f; j++)
        expect_close(((float *)out[0].data)[i * f + j], d ? r[j] / d : r[j],
                     1e-6 * (1 + fabs(d ? r[j] / d : r[j])), norms[norm], i, j);
    }
    ts_model_free(m);
  }
  ts_session_free(s);
}
END_TEST

START_TEST(test_scaler) {
  rng_seed(19);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  for (int trial = 0; trial < 36; trial++) {
    int f = 1 + rnd(9), n = 1 + rnd(8);
    int n_off = (int[]){0, 1, f}[trial % 3];
    int n_scale = (int[]){0, 1, f}[(trial / 3) % 3];
    ts_dtype dt = input_dtypes[(trial / 9) % 4];
    double x[8 * 9];
    float off[9], scale[9];
    random_input(dt, x, (size_t)(n * f));
    for (int j = 0; j < f; j++) {
      off[j] = (float)uni(-2, 2);
      scale[j] = (float)uni(-3, 3);
    }
    attr_list *al = attrs_new();
    if (n_off) add_floats(al, "offset", off, (size_t)n_off);
    if (n_scale) add_floats(al, "scale", scale, (size_t)n_scale);
    ts_model *m = must_load("Scaler", al, input_2d(dt, -1, f), 1);
    ts_tensor out[1];
    must_run(m, s, dt, x, n, f, out);
    expect_shape(&out[0], TS_DTYPE_FLOAT, 2, n, f, "Y");
    for (int i = 0; i < n; i++)
      for (int j = 0; j < f; j++) {
        double o = n_off ? off[n_off == 1 ? 0 : j] : 0;
        double sc = n_scale ? scale[n_scale == 1 ? 0 : j] : 1;
        double want = (x[i * f + j] - o) * sc;
        expect_close(((float *)out[0].data)[i * f + j], want,
                     1e-6 * (1 + fabs(want) + fabs(o * sc)), "Scaler", i, j);
      }
    ts_model_free(m);
  }
  ts_session_free(s);
}
END_TEST

/* ---- bad attributes and inputs ------------------------------------------- */

static const float F10[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

/* A node's attributes in one line, space-separated name=value:
 *   f<k>        floats 1..k          [a,b,c]  ints
 *   'text'      a string             S<k>     k strings
 *   <integer>   an int                                                   */
static attr_list *parse_attrs(const char *spec) {
  attr_list *al = attrs_new();
  char buf[512], *save = NULL;
  snprintf(buf, sizeof buf, "%s", spec);
  for (char *tok = strtok_r(buf, " ", &save); tok;
       tok = strtok_r(NULL, " ", &save)) {
    char *v = strchr(tok, '=');
    ck_assert_msg(v != NULL, "bad attribute spec '%s'", tok);
    *v++ = 0;
    if (v[0] == 'f') {
      add_floats(al, tok, F10, strtoul(v + 1, NULL, 10));
    } else if (v[0] == 'S') {
      add_strings(al, tok, atoi(v + 1));
    } else if (v[0] == '\'') {
      v[strlen(v) - 1] = 0;
      add_string(al, tok, v + 1);
    } else if (v[0] == '[') {
      int64_t ints[16];
      size_t n = 0;
      for (char *q = v + 1; *q && *q != ']' && n < 16; n++) {
        ints[n] = strtoll(q, &q, 10);
        if (*q == ',') q++;
      }
      add_ints(al, tok, ints, n);
    } else {
      add_int(al, tok, strtoll(v, NULL, 10));
    }
  }
  return al;
}

/* One model to load: op, attributes, the feature count of the declared
 * input X [3, features], and the expected code (0: loads) and a piece of
 * the message (it must also name the op). */
typedef struct attr_case {
  const char *op;
  const char *attrs;
  int features;
  int code;
  const char *needle;
} attr_case;

#define SVR2 "kernel_type='RBF' n_supports=2 support_vectors=f4 "
#define SVC3 "kernel_type='POLY' kernel_params=f3 classlabels_ints=[0,1,2] "
#define SVC3V SVC3 "vectors_per_class=[1,2,1] support_vectors=f8 "

static const attr_case attr_cases[] = {
    /* LinearRegressor */
    {"LinearRegressor", "coefficients=f7 targets=2", 4, TS_EINVAL,
     "coefficients"},
    {"LinearRegressor", "coefficients=f8 intercepts=f3 targets=2", 4, TS_EINVAL,
     "intercepts"},
    {"LinearRegressor", "coefficients=f4 targets=0", 4, TS_EINVAL, "targets"},
    {"LinearRegressor", "targets=1", 4, TS_EINVAL, "coefficients"},
    {"LinearRegressor", "coefficients=[0,1,2,3]", 4, TS_EINVAL, "coefficients"},
    {"LinearRegressor", "coefficients=f4 targets='1'", 4, TS_EINVAL, "targets"},
    {"LinearRegressor", "coefficients=f4 post_transform='TANH'", 4,
     TS_EUNSUPPORTED, "post_transform"},
    {"LinearRegressor", "coefficients=f4 post_transform=1", 4, TS_EINVAL,
     "post_transform"},
    {"LinearRegressor", "coefficients=f4 bias=1", 4, TS_EUNSUPPORTED, "bias"},
    /* LinearClassifier */
    {"LinearClassifier",
     "coefficients=f8 intercepts=f2 classlabels_ints=[0,1,2]", 4, TS_EINVAL,
     "classlabels_ints"},
    {"LinearClassifier", "coefficients=f9 intercepts=f2", 4, TS_EINVAL,
     "coefficients"},
    {"LinearClassifier", "coefficients=f8", 4, TS_EINVAL, "intercepts"},
    {"LinearClassifier", "coefficients=f4 intercepts=f1 classlabels_ints=[0]",
     4, TS_EINVAL, "classlabels_ints"},
    {"LinearClassifier", "coefficients=f8 classlabels_strings=S2", 4,
     TS_EUNSUPPORTED, "classlabels_strings"},
    {"LinearClassifier",
     "coefficients=f4 intercepts=f1 classlabels_ints=[0,1] "
     "post_transform='SOFTMAX'",
     4, TS_EUNSUPPORTED, "post_transform"},
    {"LinearClassifier",
     "coefficients=f8 classlabels_ints=[0,1] multi_class=f1", 4, TS_EINVAL,
     "multi_class"},
    /* SVMRegressor: 2 support vectors of 2 features */
    {"SVMRegressor", SVR2 "kernel_params=f3 coefficients=f2 rho=f1", 2, 0, ""},
    {"SVMRegressor", "n_supports=3 support_vectors=f10 coefficients=f3 rho=f1",
     2, TS_EINVAL, "support_vectors"},
    {"SVMRegressor", SVR2 "coefficients=f3 rho=f1", 2, TS_EINVAL,
     "coefficients"},
    {"SVMRegressor", SVR2 "coefficients=f2 rho=f2", 2, TS_EINVAL, "rho"},
    {"SVMRegressor", SVR2 "kernel_params=f2 coefficients=f2 rho=f1", 2,
     TS_EINVAL, "kernel_params"},
    {"SVMRegressor", "n_supports=-1 coefficients=f2 rho=f1", 2, TS_EINVAL,
     "n_supports"},
    {"SVMRegressor", "n_supports=0 support_vectors=f4 coefficients=f2 rho=f1",
     2, TS_EINVAL, "support_vectors"},
    {"SVMRegressor",
     "kernel_type='CUBIC' n_supports=2 support_vectors=f4 coefficients=f2 "
     "rho=f1",
     2, TS_EUNSUPPORTED, "kernel_type"},
    {"SVMRegressor", SVR2 "coefficients=f2 rho=f1 post_transform='LOGISTIC'", 2,
     TS_EUNSUPPORTED, "post_transform"},
    {"SVMRegressor", SVR2 "coefficients=f2 rho=f1", 4, TS_EINVAL, "'X'"},
    /* SVMClassifier: 3 classes with 1, 2, 1 vectors of 2 features */
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f3 prob_a=f3 prob_b=f3", 2, 0,
     ""},
    {"SVMClassifier",
     SVC3 "vectors_per_class=[1,2] support_vectors=f8 coefficients=f8 rho=f3",
     2, TS_EINVAL, "vectors_per_class"},
    {"SVMClassifier",
     SVC3 "vectors_per_class=[1,2,1] support_vectors=f7 coefficients=f8 "
          "rho=f3",
     2, TS_EINVAL, "support_vectors"},
    {"SVMClassifier", SVC3V "coefficients=f6 rho=f3", 2, TS_EINVAL,
     "coefficients"},
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f2", 2, TS_EINVAL, "rho"},
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f3 prob_a=f3", 2, TS_EINVAL,
     "prob_b"},
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f3 prob_a=f2 prob_b=f2", 2,
     TS_EINVAL, "prob_a"},
    {"SVMClassifier",
     "vectors_per_class=[1,2,1] support_vectors=f8 coefficients=f8 rho=f3", 2,
     TS_EINVAL, "classlabels_ints"},
    {"SVMClassifier", "classlabels_ints=[0] coefficients=f2 rho=f1", 2,
     TS_EINVAL, "classlabels_ints"},
    {"SVMClassifier",
     "classlabels_strings=S3 vectors_per_class=[1,2,1] support_vectors=f8 "
     "coefficients=f8 rho=f3",
     2, TS_EUNSUPPORTED, "classlabels_strings"},
    {"SVMClassifier",
     SVC3 "vectors_per_class=[1,-1,2] support_vectors=f8 coefficients=f8 "
          "rho=f3",
     2, TS_EINVAL, "vectors_per_class"},
    /* Two classes without probabilities: only NONE has a meaning. */
    {"SVMClassifier",
     "classlabels_ints=[0,1] vectors_per_class=[1,1] support_vectors=f4 "
     "coefficients=f2 rho=f1 post_transform='LOGISTIC'",
     2, TS_EUNSUPPORTED, "post_transform"},
    /* Linear mode: weights [classes, features], one rho, no probabilities */
    {"SVMClassifier", SVC3 "coefficients=f6 rho=f1", 2, 0, ""},
    {"SVMClassifier", SVC3 "coefficients=f7 rho=f1", 2, TS_EINVAL,
     "coefficients"},
    {"SVMClassifier", SVC3 "coefficients=f6 rho=f3", 2, TS_EINVAL, "rho"},
    {"SVMClassifier", SVC3 "coefficients=f6 rho=f1 prob_a=f3 prob_b=f3", 2,
     TS_EUNSUPPORTED, "prob_a"},
    {"SVMClassifier", SVC3 "support_vectors=f4 coefficients=f6 rho=f1", 2,
     TS_EINVAL, "support_vectors"},
    /* Normalizer and Scaler */
    {"Normalizer", "norm='L3'", 4, TS_EUNSUPPORTED, "norm"},
    {"Normalizer", "norm=2", 4, TS_EINVAL, "norm"},
    {"Scaler", "offset=f3 scale=f2", 4, TS_EINVAL, "offset"},
    {"Scaler", "scale=f3", 4, TS_EINVAL, "scale"},
};

START_TEST(test_bad_attributes) {
  for (size_t i = 0; i < sizeof attr_cases / sizeof attr_cases[0]; i++) {
    const attr_case *c = &attr_cases[i];
    attr_list *al = parse_attrs(c->attrs);
    int outputs = strstr(c->op, "Classifier") ? 2 : 1;
    /* A static batch: load-time inference reports shape errors only when
     * no symbolic dim reaches the node. */
    input_spec in = input_2d(TS_DTYPE_FLOAT, 3, c->features);
    if (c->code == 0)
      ts_model_free(must_load(c->op, al, in, outputs));
    else
      expect_load_error(c->op, al, in, outputs, c->code, c->needle);
  }
}
END_TEST

/* Input checks that only a run can make (symbolic feature dim), and input
 * types the ops do not take. */
START_TEST(test_bad_inputs) {
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  attr_list *al = attrs_new();
  add_floats(al, "coefficients", F10, 4);
  ts_model *m =
      must_load("LinearRegressor", al, input_2d(TS_DTYPE_FLOAT, -1, -1), 1);
  double x[12] = {0};
  int64_t dims[2] = {3, 4};
  ts_tensor out[2];
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err), 0);
  dims[1] = 3;
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "'X'") && strstr(err.msg, "LinearRegressor"),
                "message: %s", err.msg);
  ts_model_free(m);

  al = attrs_new();
  add_floats(al, "scale", F10, 3);
  m = must_load("Scaler", al, input_2d(TS_DTYPE_FLOAT, -1, -1), 1);
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err), 0);
  dims[1] = 4;
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "scale"), "message: %s", err.msg);
  ts_model_free(m);

  al = attrs_new();
  add_string(al, "norm", "L1");
  input_spec rank3 = {TS_DTYPE_FLOAT, 3, {2, 2, 2}};
  expect_load_error("Normalizer", al, rank3, 1, TS_EINVAL, "rank 3");
  al = attrs_new();
  expect_load_error("Normalizer", al, input_2d(TS_DTYPE_UINT8, 2, 2), 1,
                    TS_EINVAL, "uint8");
  ts_session_free(s);
}
END_TEST

/* ---- scikit-learn models ------------------------------------------------- */

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
  buf[len] = 0;
  fclose(f);
  return buf;
}

/* Copies the JSON string value after `key` (e.g. "\"file\": \"") at or after
 * p into out; returns the position after it, or NULL when absent before
 * `end`. */
static const char *json_string(const char *p, const char *end, const char *key,
                               char *out, size_t size) {
  const char *k = strstr(p, key);
  if (!k || (end && k >= end)) return NULL;
  k += strlen(key);
  const char *q = strchr(k, '"');
  ck_assert_ptr_nonnull(q);
  ck_assert_uint_lt((size_t)(q - k), size);
  memcpy(out, k, (size_t)(q - k));
  out[q - k] = 0;
  return q + 1;
}

static double json_number(const char *p, const char *end, const char *key) {
  const char *k = strstr(p, key);
  ck_assert_msg(k && (!end || k < end), "manifest lacks %s", key);
  return strtod(k + strlen(key), NULL);
}

/* Runs one manifest model (the text from `p` to `end` describes it) and
 * compares each output with its reference. Returns how many outputs it
 * compared. */
static int check_sklearn_model(const char *dir, const char *p, const char *end,
                               ts_session *s) {
  char name[128], file[256], input_file[256], path[512];
  ts_err err;
  ck_assert_ptr_nonnull(json_string(p, end, "\"name\": \"", name, sizeof name));
  ck_assert_ptr_nonnull(json_string(p, end, "\"file\": \"", file, sizeof file));
  ck_assert_ptr_nonnull(
      json_string(p, end, "\"input_file\": \"", input_file, sizeof input_file));
  snprintf(path, sizeof path, "%s/%s", dir, file);
  ts_model *m = NULL;
  int rc = ts_model_load_file(path, &m, &err);
  ck_assert_msg(rc == 0, "%s: load failed: %s", name, err.msg);
  ts_tensor x;
  snprintf(path, sizeof path, "%s/%s", dir, input_file);
  ck_assert_msg(ts_npy_read(path, &x, &err) == 0, "%s", err.msg);

  const ts_graph *g = &m->graph;
  ts_tensor outs[4];
  ck_assert_int_le(g->n_outputs, 4);
  const char *in_names[] = {"X"};
  rc = ts_exec_run(m, s, in_names, &x, 1, NULL, outs, 0, &err);
  ck_assert_msg(rc == 0, "%s: run failed: %s", name, err.msg);

  int compared = 0;
  const char *o = strstr(p, "\"outputs\"");
  ck_assert_msg(o && o < end, "%s: no outputs in manifest", name);
  char out_name[64], ref_file[256];
  while ((o = json_string(o, end, "\"name\": \"", out_name, sizeof out_name))) {
    ck_assert_ptr_nonnull(o = json_string(o, end, "\"reference\": \"", ref_file,
                                          sizeof ref_file));
    const char *next = strstr(o, "\"name\": \"");
    if (!next || next > end) next = end;
    const char *exact = strstr(o, "\"exact\"");
    bool is_exact = exact && exact < next;
    double rtol = is_exact ? 0 : json_number(o, next, "\"rtol\": ");
    double atol = is_exact ? 0 : json_number(o, next, "\"atol\": ");

    int k = -1;
    for (int i = 0; i < g->n_outputs; i++)
      if (strcmp(g->values[g->outputs[i]].name, out_name) == 0) k = i;
    ck_assert_msg(k >= 0, "%s: the model has no output '%s'", name, out_name);
    ts_tensor ref;
    snprintf(path, sizeof path, "%s/%s", dir, ref_file);
    ck_assert_msg(ts_npy_read(path, &ref, &err) == 0, "%s", err.msg);
    ck_assert_msg(
        ref.dtype == outs[k].dtype && ts_tensor_same_shape(&ref, &outs[k]),
        "%s: output '%s' has dtype %s rank %d, reference %s rank %d", name,
        out_name, ts_dtype_name(outs[k].dtype), outs[k].rank,
        ts_dtype_name(ref.dtype), ref.rank);
    int64_t count = ts_tensor_numel(&ref);
    int64_t cols = ref.rank > 1 ? ref.dims[1] : 1;
    for (int64_t i = 0; i < count; i++) {
      if (ref.dtype == TS_DTYPE_INT64) {
        int64_t got = ((int64_t *)outs[k].data)[i];
        int64_t want = ((int64_t *)ref.data)[i];
        ck_assert_msg(got == want,
                      "%s: %s[%lld] = %lld, scikit-learn says %lld", name,
                      out_name, (long long)i, (long long)got, (long long)want);
      } else {
        double got = ((float *)outs[k].data)[i];
        double want = ((float *)ref.data)[i];
        ck_assert_msg(fabs(got - want) <= atol + rtol * fabs(want),
                      "%s: %s[%lld][%lld] = %.8g, scikit-learn says %.8g", name,
                      out_name, (long long)(i / cols), (long long)(i % cols),
                      got, want);
      }
    }
    ts_tensor_free(&ref);
    compared++;
    o = next;
  }
  ts_tensor_free(&x);
  ts_model_free(m);
  return compared;
}

START_TEST(test_sklearn_models) {
  const char *src = getenv("TESSERA_SOURCE");
  ck_assert_msg(src != NULL, "TESSERA_SOURCE is not set");
  char dir[] = "/tmp/ts_ml_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           PYTHON " %s/tests/python/sklearn_models.py %s > %s/log.txt 2>&1",
           src, dir, dir);
  int rc = system(cmd);
  if (rc != 0) {
    snprintf(cmd, sizeof cmd, "cat %s/log.txt >&2", dir);
    (void)!system(cmd);
  }
  ck_assert_msg(rc == 0, "sklearn_models.py failed (%d)", rc);

  char path[600];
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  char *manifest = read_text(path);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  int models = 0, outputs = 0;
  const char *p = strstr(manifest, "\"models\"");
  ck_assert_ptr_nonnull(p);
  /* Each model object starts at its "name" key, before "file". */
  const char *key = "{\n   \"name\": \"";
  p = strstr(p, key);
  while (p) {
    const char *next = strstr(p + 1, key);
    outputs += check_sklearn_model(dir, p, next ? next : p + strlen(p), s);
    models++;
    p = next;
  }
  ck_assert_int_ge(models, 20);
  ck_assert_int_ge(outputs, 2 * models - 8);
  ts_session_free(s);
  free(manifest);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  (void)!system(cmd);
}
END_TEST

/* ---- suite --------------------------------------------------------------- */

static Suite *ml_suite(void) {
  Suite *s = suite_create("kernels_ml");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_linear_models);
  tcase_add_test(tc, test_linear_classifier_binary);
  tcase_add_test(tc, test_linear_classifier_rank1);
  tcase_add_test(tc, test_svm_regressor);
  tcase_add_test(tc, test_svm_classifier_svc);
  tcase_add_test(tc, test_svm_classifier_large_batch);
  tcase_add_test(tc, test_svm_classifier_linear_mode);
  tcase_add_test(tc, test_normalizer);
  tcase_add_test(tc, test_scaler);
  tcase_add_test(tc, test_bad_attributes);
  tcase_add_test(tc, test_bad_inputs);
  tcase_add_test(tc, test_sklearn_models);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(ml_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
