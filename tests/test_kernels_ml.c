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
 * The harness is ml_check.h; every bad-attribute and bad-input class is
 * test_kernels_ml_bad.c's, tests/python/sklearn_models.py's models are
 * test_kernels_ml_sklearn.c's.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "ml_check.h"

/* ---- random numbers and one-node models ---------------------------------- */

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

static Suite *suite(void) {
  Suite *s = suite_create("kernels_ml");
  TCase *tc = ts_check_tcase(s, "core", 120, NULL, NULL);
  tcase_add_test(tc, test_linear_models);
  tcase_add_test(tc, test_linear_classifier_binary);
  tcase_add_test(tc, test_linear_classifier_rank1);
  tcase_add_test(tc, test_svm_regressor);
  tcase_add_test(tc, test_svm_classifier_svc);
  tcase_add_test(tc, test_svm_classifier_large_batch);
  tcase_add_test(tc, test_svm_classifier_linear_mode);
  tcase_add_test(tc, test_normalizer);
  tcase_add_test(tc, test_scaler);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
