/*
 * ml.c - kernels of the ai.onnx.ml domain that scikit-learn models become in
 * ONNX: LinearRegressor, LinearClassifier, SVMRegressor, SVMClassifier,
 * Normalizer and Scaler.
 *
 * Semantics follow the ONNX ai.onnx.ml operator spec and, where the spec is
 * silent, onnxruntime's CPU kernels, so that models exported for onnxruntime
 * give the same labels and scores here:
 *  - one-vs-one SVM voting: pair (i, j) votes for i when its decision value
 *    is > 0, else for j; the label is the first class with the most votes;
 *  - Platt scaling (prob_a, prob_b) with libsvm's pairwise coupling
 *    (Wu, Lin and Weng 2004), iterated in float as onnxruntime does;
 *  - a binary SVC without probabilities scores [-d, d]; a LinearClassifier
 *    with one coefficient row and two labels scores [1 - p, p];
 *  - the support-vector-free SVM ("liblinear mode") is a weight matrix plus
 *    rho[0], with onnxruntime's binary label rule.
 * Where onnxruntime ignores a post_transform or writes numbers that are not
 * scores, the model is rejected with TS_EUNSUPPORTED rather than answered
 * differently: any post_transform but NONE on SVMRegressor, and on a binary
 * SVC without probabilities; SOFTMAX, SOFTMAX_ZERO and PROBIT on a one-row
 * LinearClassifier. Two deliberate differences remain, both where
 * onnxruntime skips the transform: a one-row LinearClassifier applies
 * LOGISTIC (scores [1 - s(z), s(z)], or [s(z)] without labels; onnxruntime
 * writes [1 - z, z] or [z]), and a one-target LinearRegressor applies its
 * post_transform (onnxruntime applies only PROBIT there).
 *
 * Invariants:
 *  - prepare validates every attribute's type and its length against the
 *    others (TS_EINVAL naming node, op and attribute) and stores the parsed
 *    model in node->params: one malloc block, freed by release. Arrays point
 *    into the model proto, which outlives the node;
 *  - infer checks the input (float, double, int32 or int64; rank 1 or 2;
 *    the model's feature count) before run sees it, so run only computes;
 *  - run allocates nothing: casts, kernel matrices and per-row work buffers
 *    come from ts_kctx_scratch, and the SVM kernel matrix is built in blocks
 *    of rows so scratch stays bounded for any batch size.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_util.h"
#include "ops.h"

/* ---- attribute enums ----------------------------------------------------- */

/* X(enum suffix, attribute value) */
#define POST_TRANSFORM_LIST(X)    \
  X(NONE, "NONE")                 \
  X(LOGISTIC, "LOGISTIC")         \
  X(SOFTMAX, "SOFTMAX")           \
  X(SOFTMAX_ZERO, "SOFTMAX_ZERO") \
  X(PROBIT, "PROBIT")

#define SVM_KERNEL_LIST(X) \
  X(LINEAR, "LINEAR")      \
  X(POLY, "POLY")          \
  X(RBF, "RBF")            \
  X(SIGMOID, "SIGMOID")

#define NORM_LIST(X) \
  X(MAX, "MAX")      \
  X(L1, "L1")        \
  X(L2, "L2")

#define ENUM_ROW(prefix, suffix) prefix##_##suffix,
#define NAME_ROW(suffix, name) name,

#define POST_ROW(suffix, name) ENUM_ROW(POST, suffix)
typedef enum { POST_TRANSFORM_LIST(POST_ROW) POST_COUNT } post_transform;
#undef POST_ROW
static const char *const post_names[] = {POST_TRANSFORM_LIST(NAME_ROW)};

#define KERNEL_ROW(suffix, name) ENUM_ROW(KERNEL, suffix)
typedef enum { SVM_KERNEL_LIST(KERNEL_ROW) KERNEL_COUNT } svm_kernel;
#undef KERNEL_ROW
static const char *const kernel_names[] = {SVM_KERNEL_LIST(NAME_ROW)};

#define NORM_ROW(suffix, name) ENUM_ROW(NORM, suffix)
typedef enum { NORM_LIST(NORM_ROW) NORM_COUNT } norm_kind;
#undef NORM_ROW
static const char *const norm_names[] = {NORM_LIST(NAME_ROW)};

_Static_assert(sizeof post_names / sizeof post_names[0] == POST_COUNT,
               "post_transform table");
_Static_assert(sizeof kernel_names / sizeof kernel_names[0] == KERNEL_COUNT,
               "kernel_type table");
_Static_assert(sizeof norm_names / sizeof norm_names[0] == NORM_COUNT,
               "norm table");

#define ALL_POST ((1u << POST_COUNT) - 1)
#define POST_BIT(p) (1u << (p))

/* ---- attributes ---------------------------------------------------------- */

/* True when attribute a holds `type` (old exporters leave `type` unset; then
 * the presence of the scalar field decides). */
static bool attr_has_type(const Onnx__AttributeProto *a,
                          Onnx__AttributeProto__AttributeType type) {
  if (a->has_type &&
      a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
    return a->type == type;
  if (type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) return a->has_i;
  if (type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) return a->has_s;
  return false;
}

/* An int attribute, dflt when absent; TS_EINVAL when it has another type. */
static int get_int(const ts_node *n, const char *name, int64_t dflt,
                   int64_t *out, ts_err *err) {
  const Onnx__AttributeProto *a = ts_attr_find(n, name);
  *out = dflt;
  if (!a) return TS_OK;
  if (!attr_has_type(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT))
    return ts_kernel_fail(n, err, TS_EINVAL, "attribute '%s' must be an int",
                          name);
  *out = a->i;
  return TS_OK;
}

/* Turns the TS_ENOTFOUND of an absent list attribute into TS_EINVAL when it
 * is `required`, else into success (the getter left it empty). */
static int absent_ok(const ts_node *n, const char *name, bool required, int rc,
                     ts_err *err) {
  if (rc != TS_ENOTFOUND) return rc;
  if (required)
    return ts_kernel_fail(n, err, TS_EINVAL, "attribute '%s' is required",
                          name);
  ts_err_clear(err);
  return TS_OK;
}

/* A list-of-floats attribute. Absent: TS_EINVAL when `required`, else
 * *vals = NULL and *count = 0. */
static int get_floats(const ts_node *n, const char *name, bool required,
                      const float **vals, size_t *count, ts_err *err) {
  return absent_ok(n, name, required, ts_attr_floats(n, name, vals, count, err),
                   err);
}

/* As get_floats, for a list of ints. */
static int get_ints(const ts_node *n, const char *name, bool required,
                    const int64_t **vals, size_t *count, ts_err *err) {
  return absent_ok(n, name, required, ts_attr_ints(n, name, vals, count, err),
                   err);
}

/* A string attribute that names one of `names` (count entries); dflt when
 * absent. Values outside `allowed` (a bit mask of indices) are
 * TS_EUNSUPPORTED; a value of another type is TS_EINVAL. */
static int get_enum(const ts_node *n, const char *name,
                    const char *const *names, int count, unsigned allowed,
                    int dflt, int *out, ts_err *err) {
  const Onnx__AttributeProto *a = ts_attr_find(n, name);
  *out = dflt;
  if (!a) return TS_OK;
  if (!attr_has_type(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING))
    return ts_kernel_fail(n, err, TS_EINVAL, "attribute '%s' must be a string",
                          name);
  const char *v = ts_attr_string(n, name, "");
  for (int i = 0; i < count; i++) {
    if (strcmp(v, names[i]) != 0) continue;
    if (!(allowed & (1u << i))) break;
    *out = i;
    return TS_OK;
  }
  char list[128] = "";
  for (int i = 0, off = 0; i < count; i++)
    if (allowed & (1u << i))
      off += snprintf(list + off, sizeof list - (size_t)off, "%s%s",
                      off ? ", " : "", names[i]);
  return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                        "attribute '%s' = '%.64s' is not supported here "
                        "(supported: %s)",
                        name, v, list);
}

/* The class labels of a classifier. classlabels_strings is not supported
 * (Tessera's label outputs are int64); giving both kinds is TS_EINVAL.
 * Absent: *labels = NULL, *count = 0. */
static int get_labels(const ts_node *n, const int64_t **labels, size_t *count,
                      ts_err *err) {
  if (ts_attr_find(n, "classlabels_strings"))
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'classlabels_strings' is not supported (string "
        "labels); use 'classlabels_ints'");
  return get_ints(n, "classlabels_ints", false, labels, count, err);
}

/* post_transform, NONE when absent; values outside `allowed` (a mask of
 * POST_BIT) are TS_EUNSUPPORTED. */
static int get_post(const ts_node *n, unsigned allowed, post_transform *out,
                    ts_err *err) {
  int v;
  int rc = get_enum(n, "post_transform", post_names, POST_COUNT, allowed,
                    POST_NONE, &v, err);
  *out = (post_transform)v;
  return rc;
}

/* Stores a copy of the parsed params (size bytes at p) in n->params: one
 * zeroed malloc block with `extra` more bytes at a 64-byte aligned offset,
 * returned in *tail when tail is not NULL. release_params frees it. */
static int params_store(ts_node *n, const void *p, size_t size, size_t extra,
                        void **tail, ts_err *err) {
  size_t off = (size + 63) & ~(size_t)63;
  uint8_t *block = calloc(1, off + extra);
  if (!block) return ts_kernel_fail(n, err, TS_ENOMEM, "out of memory");
  memcpy(block, p, size);
  if (tail) *tail = block + off;
  n->params = block;
  return TS_OK;
}

static void release_params(ts_node *node) {
  free(node->params);
  node->params = NULL;
}

/* ---- inputs -------------------------------------------------------------- */

static const char *input_name(const ts_node *n) {
  if (n->proto && n->proto->n_input > 0 && n->proto->input[0])
    return n->proto->input[0];
  return "X";
}

/* Samples in X: dim 0, or 1 for a rank-1 input. */
static int64_t input_rows(const ts_tensor *x) {
  return x->rank == 1 ? 1 : x->dims[0];
}

/* Input types the ops take besides float, cast to float before use:
 * X(dtype suffix, C type). */
#define CAST_INPUT_LIST(X) \
  X(DOUBLE, double)        \
  X(INT32, int32_t)        \
  X(INT64, int64_t)

static bool castable_dtype(ts_dtype t) {
#define IS_CASTABLE(suffix, ctype) t == TS_DTYPE_##suffix ||
  return CAST_INPUT_LIST(IS_CASTABLE) t == TS_DTYPE_FLOAT;
#undef IS_CASTABLE
}

/* Checks the input X (rank 1: one sample; rank 2: [N, F]) and returns its
 * sample count and feature count. `features` > 0 is the count the model
 * needs; 0 accepts any. */
static int check_input(const ts_node *n, const ts_tensor *x, int64_t features,
                       int64_t *rows, int64_t *cols, ts_err *err) {
  if (!castable_dtype(x->dtype))
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has type %s; the op takes float, double, "
                          "int32 or int64",
                          input_name(n), ts_dtype_name(x->dtype));
  if (x->rank != 1 && x->rank != 2)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has rank %d; the op takes [N, F] or [F]",
                          input_name(n), x->rank);
  *rows = input_rows(x);
  *cols = x->dims[x->rank - 1];
  if (*rows > INT32_MAX || *cols > INT32_MAX)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has %lld x %lld values; at most 2^31 - 1 "
                          "samples and features are supported",
                          input_name(n), (long long)*rows, (long long)*cols);
  if (features > 0 && *cols != features)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has %lld features (dim %d) but the model "
                          "needs %lld",
                          input_name(n), (long long)*cols, x->rank - 1,
                          (long long)features);
  return TS_OK;
}

/* Converts count elements of x (a castable dtype) to float. */
static void convert_to_float(const ts_tensor *x, float *dst, size_t count) {
  switch (x->dtype) {
#define CAST_CASE(suffix, ctype)                   \
  case TS_DTYPE_##suffix:                          \
    for (size_t i = 0; i < count; i++)             \
      dst[i] = (float)((const ctype *)x->data)[i]; \
    break;
    CAST_INPUT_LIST(CAST_CASE)
#undef CAST_CASE
    default:
      memcpy(dst, x->data, count * sizeof *dst);
      break;
  }
}

/* x as float (its own data when it is float, else a cast into scratch), and
 * its sample count. */
static int input_floats(const ts_node *n, const ts_tensor *x, ts_kctx *ctx,
                        const float **out, int64_t *rows, ts_err *err) {
  size_t count = (size_t)ts_tensor_numel(x);
  *rows = input_rows(x);
  if (x->dtype == TS_DTYPE_FLOAT) {
    *out = x->data;
    return TS_OK;
  }
  float *dst = ts_kctx_scratch(ctx, count * sizeof *dst);
  if (!dst)
    return ts_kernel_fail(n, err, TS_ENOMEM, "cannot cast input '%s' to float",
                          input_name(n));
  convert_to_float(x, dst, count);
  *out = dst;
  return TS_OK;
}

static void *scratch_or_fail(const ts_node *n, ts_kctx *ctx, size_t bytes,
                             ts_err *err) {
  void *p = ts_kctx_scratch(ctx, bytes);
  if (!p)
    ts_kernel_fail(n, err, TS_ENOMEM, "cannot allocate %zu bytes of scratch",
                   bytes);
  return p;
}

/* Checks X against the model's feature count and sets the output: scores
 * float [N, cols]. */
static int infer_regressor(const ts_node *n, const ts_tensor *x,
                           int64_t features, int64_t cols, ts_tensor *out,
                           ts_err *err) {
  int64_t rows, x_cols;
  int rc = check_input(n, x, features, &rows, &x_cols, err);
  if (rc) return rc;
  int64_t dims[2] = {rows, cols};
  return ts_tensor_set_shape(&out[0], TS_DTYPE_FLOAT, dims, 2, err);
}

/* Checks X against the model's feature count and sets the outputs: labels
 * int64 [N], scores float [N, cols]. */
static int infer_classifier(const ts_node *n, const ts_tensor *x,
                            int64_t features, int64_t cols, ts_tensor *out,
                            ts_err *err) {
  int64_t rows, x_cols;
  int rc = check_input(n, x, features, &rows, &x_cols, err);
  if (rc) return rc;
  int64_t dims[2] = {rows, cols};
  rc = ts_tensor_set_shape(&out[0], TS_DTYPE_INT64, dims, 1, err);
  if (!rc && n->n_outputs > 1)
    rc = ts_tensor_set_shape(&out[1], TS_DTYPE_FLOAT, dims, 2, err);
  return rc;
}

/* ---- shared math --------------------------------------------------------- */

/* out[rows, m] = x[rows, k] * w[m, k]^T (+ bias[m] when given, else + c). */
static void gemm_xwt(const float *x, const float *w, int64_t rows, int64_t m,
                     int64_t k, const float *bias, float c, float *out) {
  if (rows == 0 || m == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)m,
              (int)k, 1.0f, x, (int)k, w, (int)k, 0.0f, out, (int)m);
  for (int64_t i = 0; i < rows; i++) {
    float *o = out + i * m;
    if (bias)
      for (int64_t j = 0; j < m; j++) o[j] += bias[j];
    else if (c != 0.0f)
      for (int64_t j = 0; j < m; j++) o[j] += c;
  }
}

/* 1 / (1 + e^-v), computed on |v| so it never overflows. */
static float logistic(float v) {
  float p = 1.0f / (1.0f + expf(-fabsf(v)));
  return v < 0 ? 1.0f - p : p;
}

/* sqrt(2) * erfinv(2p - 1) with the closed-form erfinv approximation that
 * onnxruntime and the ONNX reference use (Winitzki, a = 0.147). */
static float probit(float p) {
  float x = 2.0f * p - 1.0f;
  float sign = x < 0 ? -1.0f : 1.0f;
  float l = logf((1.0f - x) * (1.0f + x));
  float v = 2.0f / ((float)M_PI * 0.147f) + 0.5f * l;
  float v2 = l / 0.147f;
  return (float)M_SQRT2 * sign * sqrtf(-v + sqrtf(v * v - v2));
}

static void softmax_row(float *s, int64_t c) {
  float mx = s[0];
  for (int64_t j = 1; j < c; j++) mx = s[j] > mx ? s[j] : mx;
  float sum = 0;
  for (int64_t j = 0; j < c; j++) sum += (s[j] = expf(s[j] - mx));
  for (int64_t j = 0; j < c; j++) s[j] /= sum;
}

/* Softmax over the non-zero scores; (near-)zero scores stay (near) zero, as
 * onnxruntime computes it. A row of zeros stays zero. */
static void softmax_zero_row(float *s, int64_t c) {
  float mx = s[0];
  for (int64_t j = 1; j < c; j++) mx = s[j] > mx ? s[j] : mx;
  float exp_neg_max = expf(-mx), sum = 0;
  for (int64_t j = 0; j < c; j++) {
    if (s[j] > 1e-7f || s[j] < -1e-7f) {
      s[j] = expf(s[j] - mx);
      sum += s[j];
    } else {
      s[j] *= exp_neg_max;
    }
  }
  if (sum == 0) {
    memset(s, 0, (size_t)c * sizeof *s);
    return;
  }
  for (int64_t j = 0; j < c; j++) s[j] /= sum;
}

/* Applies post_transform to rows x cols scores, row by row, in place. */
static void apply_post(post_transform t, float *s, int64_t rows, int64_t cols) {
  size_t count = (size_t)(rows * cols);
  switch (t) {
    case POST_LOGISTIC:
      for (size_t i = 0; i < count; i++) s[i] = logistic(s[i]);
      break;
    case POST_PROBIT:
      for (size_t i = 0; i < count; i++) s[i] = probit(s[i]);
      break;
    case POST_SOFTMAX:
      for (int64_t r = 0; r < rows && cols > 0; r++)
        softmax_row(s + r * cols, cols);
      break;
    case POST_SOFTMAX_ZERO:
      for (int64_t r = 0; r < rows && cols > 0; r++)
        softmax_zero_row(s + r * cols, cols);
      break;
    default:
      break;
  }
}

/* Index of the first largest of c values. */
static int64_t argmax_first(const float *s, int64_t c) {
  int64_t best = 0;
  for (int64_t j = 1; j < c; j++)
    if (s[j] > s[best]) best = j;
  return best;
}

/* ---- LinearRegressor and LinearClassifier -------------------------------- */

typedef struct linear_params {
  const float *coef;       /* [rows, features]; in the model proto */
  const float *intercepts; /* [rows], or NULL for zeros */
  int64_t rows, features;
  const int64_t *labels; /* NULL: 0..rows-1 (0 and 1 for one row) */
  int64_t n_labels;
  int64_t score_cols; /* width of the scores output */
  post_transform post;
} linear_params;

/* Parses coefficients and intercepts for `rows` rows. rows == 0 takes the
 * row count from the intercepts (TS_EINVAL when they are absent too). */
static int parse_linear(ts_node *n, int64_t rows, const char *rows_from,
                        linear_params *p, ts_err *err) {
  size_t n_coef, n_int;
  int rc = get_floats(n, "coefficients", true, &p->coef, &n_coef, err);
  if (!rc) rc = get_floats(n, "intercepts", false, &p->intercepts, &n_int, err);
  if (rc) return rc;
  if (rows == 0 && n_int == 0)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "needs 'intercepts' or 'classlabels_ints' to know the "
        "number of classes");
  if (rows == 0) {
    rows = (int64_t)n_int;
    rows_from = "attribute 'intercepts'";
  }
  if (n_coef == 0 || n_coef % (size_t)rows != 0)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'coefficients' holds %zu values, not a "
                          "positive multiple of %lld (%s)",
                          n_coef, (long long)rows, rows_from);
  if (p->intercepts && n_int != (size_t)rows)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'intercepts' holds %zu values but there are "
        "%lld rows of coefficients (%s)",
        n_int, (long long)rows, rows_from);
  p->rows = rows;
  p->features = (int64_t)(n_coef / (size_t)rows);
  return TS_OK;
}

static int linear_regressor_prepare(ts_node *n, const ts_graph *g,
                                    ts_err *err) {
  (void)g;
  static const char *const known[] = {"coefficients", "intercepts", "targets",
                                      "post_transform", NULL};
  int rc = ts_node_check_attrs(n, known, err);
  if (rc) return rc;
  int64_t targets;
  if ((rc = get_int(n, "targets", 1, &targets, err))) return rc;
  if (targets < 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'targets' = %lld must be at least 1",
                          (long long)targets);
  linear_params p = {0};
  if ((rc = parse_linear(n, targets, "attribute 'targets'", &p, err)) ||
      (rc = get_post(n, ALL_POST, &p.post, err)))
    return rc;
  p.score_cols = p.rows;
  return params_store(n, &p, sizeof p, 0, NULL, err);
}

static int linear_regressor_infer(const ts_node *n, const ts_tensor *const *in,
                                  ts_tensor *out, ts_err *err) {
  const linear_params *p = n->params;
  return infer_regressor(n, in[0], p->features, p->rows, out, err);
}

static int linear_regressor_run(const ts_node *n, const ts_tensor *const *in,
                                ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const linear_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  gemm_xwt(x, p->coef, rows, p->rows, p->features, p->intercepts, 0.0f,
           out[0].data);
  apply_post(p->post, out[0].data, rows, p->rows);
  return TS_OK;
}

/* A LinearClassifier has rows = the intercepts' count, or the labels' count
 * when there are no intercepts. One row is a binary classifier: its label is
 * labels[1] when the score is > 0, else labels[0] (1 and 0 without labels),
 * and with two labels it scores [1 - p, p]. */
static int linear_classifier_prepare(ts_node *n, const ts_graph *g,
                                     ts_err *err) {
  (void)g;
  static const char *const known[] = {"coefficients",
                                      "intercepts",
                                      "classlabels_ints",
                                      "classlabels_strings",
                                      "multi_class",
                                      "post_transform",
                                      NULL};
  int rc = ts_node_check_attrs(n, known, err);
  if (rc) return rc;
  linear_params p = {0};
  size_t n_labels;
  int64_t multi_class;
  if ((rc = get_labels(n, &p.labels, &n_labels, err)) ||
      (rc = get_int(n, "multi_class", 0, &multi_class, err)))
    return rc;
  p.n_labels = (int64_t)n_labels;
  bool has_intercepts = ts_attr_find(n, "intercepts") != NULL;
  rc = parse_linear(n, has_intercepts ? 0 : p.n_labels,
                    "attribute 'classlabels_ints'", &p, err);
  if (rc) return rc;
  if (p.labels && p.n_labels != p.rows && !(p.rows == 1 && p.n_labels == 2))
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'classlabels_ints' holds %lld labels but "
                          "there are %lld rows of coefficients",
                          (long long)p.n_labels, (long long)p.rows);
  if (p.rows == 1 && p.n_labels == 1)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'classlabels_ints' holds 1 label; one row of "
        "coefficients is a binary classifier and needs 2");
  /* For one row, only NONE and LOGISTIC give scores that mean something. */
  unsigned allowed =
      p.rows == 1 ? POST_BIT(POST_NONE) | POST_BIT(POST_LOGISTIC) : ALL_POST;
  if ((rc = get_post(n, allowed, &p.post, err))) return rc;
  p.score_cols = p.rows == 1 ? (p.n_labels == 2 ? 2 : 1) : p.rows;
  return params_store(n, &p, sizeof p, 0, NULL, err);
}

static int linear_classifier_infer(const ts_node *n, const ts_tensor *const *in,
                                   ts_tensor *out, ts_err *err) {
  const linear_params *p = n->params;
  return infer_classifier(n, in[0], p->features, p->score_cols, out, err);
}

static int64_t label_of(const int64_t *labels, int64_t k) {
  return labels ? labels[k] : k;
}

static int linear_classifier_run(const ts_node *n, const ts_tensor *const *in,
                                 ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const linear_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  int64_t *y = out[0].data;
  float *z = n->n_outputs > 1 ? out[1].data : NULL;
  float *raw = z;
  if (!z || p->score_cols != p->rows) {
    raw = scratch_or_fail(n, ctx, (size_t)(rows * p->rows) * sizeof *raw, err);
    if (!raw) return err->code;
  }
  gemm_xwt(x, p->coef, rows, p->rows, p->features, p->intercepts, 0.0f, raw);

  if (p->rows == 1) {
    for (int64_t i = 0; y && i < rows; i++)
      y[i] = label_of(p->labels, raw[i] > 0 ? 1 : 0);
    for (int64_t i = 0; z && i < rows; i++) {
      float s = p->post == POST_LOGISTIC ? logistic(raw[i]) : raw[i];
      if (p->score_cols == 2) {
        z[2 * i] = 1.0f - s;
        z[2 * i + 1] = s;
      } else {
        z[i] = s;
      }
    }
    return TS_OK;
  }
  for (int64_t i = 0; y && i < rows; i++)
    y[i] = label_of(p->labels, argmax_first(raw + i * p->rows, p->rows));
  if (z) apply_post(p->post, z, rows, p->rows);
  return TS_OK;
}

/* ---- SVMRegressor and SVMClassifier -------------------------------------- */

typedef struct svm_params {
  svm_kernel kernel;
  float gamma, coef0, degree;
  int int_degree;    /* degree when it is an integer in [0, 8] (multiplied
                        out, several times faster than powf); else -1 */
  bool linear_mode;  /* no support vectors: coef is a weight matrix */
  int64_t n_vectors; /* support vectors (0 in linear mode) */
  int64_t features;
  const float *vectors; /* [n_vectors, features] */
  float *vector_norms;  /* RBF: squared norm of each support vector */
  const float *coef;    /* SVC: [classes - 1, n_vectors]; regressor:
                           [n_vectors]; linear: [classes, features] */
  const float *rho;     /* SVC: one per class pair; else rho[0] */
  /* classifier only */
  int64_t classes;
  const int64_t *labels;    /* [classes] */
  const int64_t *per_class; /* vectors_per_class: [classes] */
  int64_t *first_vector;    /* [classes]: index of each class's first vector */
  const float *prob_a, *prob_b; /* one per class pair, or NULL */
  bool weights_all_positive; /* every coefficient >= 0 (linear binary rule) */
  int64_t score_cols;
  post_transform post;
  bool one_class; /* regressor: output sign(score) as +-1 */
} svm_params;

/* Parses kernel_type and kernel_params ([gamma, coef0, degree]). */
static int parse_svm_kernel(ts_node *n, svm_params *p, ts_err *err) {
  int kernel;
  const float *kp;
  size_t n_kp;
  int rc = get_enum(n, "kernel_type", kernel_names, KERNEL_COUNT,
                    (1u << KERNEL_COUNT) - 1, KERNEL_LINEAR, &kernel, err);
  if (!rc) rc = get_floats(n, "kernel_params", false, &kp, &n_kp, err);
  if (rc) return rc;
  if (kp && n_kp != 3)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'kernel_params' holds %zu values; it must be "
        "[gamma, coef0, degree]",
        n_kp);
  p->kernel = (svm_kernel)kernel;
  if (kp) {
    p->gamma = kp[0];
    p->coef0 = kp[1];
    p->degree = kp[2];
  }
  bool small_int =
      p->degree >= 0 && p->degree <= 8 && p->degree == (float)(int)p->degree;
  p->int_degree = small_int ? (int)p->degree : -1;
  return TS_OK;
}

/* Support vectors: n_sv values for `vectors` vectors of equal length. */
static int parse_support_vectors(ts_node *n, svm_params *p, int64_t vectors,
                                 ts_err *err) {
  size_t n_sv;
  int rc = get_floats(n, "support_vectors", false, &p->vectors, &n_sv, err);
  if (rc) return rc;
  if (vectors == 0) {
    if (n_sv != 0)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'support_vectors' holds %zu values but the "
          "model declares no support vectors",
          n_sv);
    return TS_OK;
  }
  if (n_sv == 0 || n_sv % (size_t)vectors != 0)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'support_vectors' holds %zu values, not a "
                          "positive multiple of the %lld support vectors",
                          n_sv, (long long)vectors);
  p->n_vectors = vectors;
  p->features = (int64_t)(n_sv / (size_t)vectors);
  return TS_OK;
}

/* Moves p into one malloc block with room for the RBF norms and the per-class
 * first-vector table, fills them, and stores it in n->params. */
static int svm_params_store(ts_node *n, const svm_params *p, ts_err *err) {
  size_t norms = p->kernel == KERNEL_RBF ? (size_t)p->n_vectors : 0;
  size_t firsts = p->per_class ? (size_t)p->classes : 0;
  void *tail = NULL;
  int rc = params_store(n, p, sizeof *p,
                        norms * sizeof(float) + firsts * sizeof(int64_t), &tail,
                        err);
  if (rc) return rc;
  svm_params *dst = n->params;
  dst->first_vector = firsts ? tail : NULL;
  dst->vector_norms = norms ? (float *)((int64_t *)tail + firsts) : NULL;
  for (size_t c = 0, first = 0; c < firsts; c++) {
    dst->first_vector[c] = (int64_t)first;
    first += (size_t)p->per_class[c];
  }
  for (size_t v = 0; v < norms; v++) {
    const float *s = p->vectors + v * (size_t)p->features;
    float sum = 0;
    for (int64_t k = 0; k < p->features; k++) sum += s[k] * s[k];
    dst->vector_norms[v] = sum;
  }
  return TS_OK;
}

/* Rows of the kernel matrix processed at once: bounds scratch to ~256 KiB
 * of kernel values whatever the batch size. */
static int64_t svm_block_rows(const svm_params *p) {
  int64_t b = (64 * 1024) / (p->n_vectors > 0 ? p->n_vectors : 1);
  return b < 1 ? 1 : b;
}

/* k[rows, n_vectors] = kernel(x_i, sv_j) for `rows` samples. RBF expands
 * |x - s|^2 = |x|^2 + |s|^2 - 2 x.s so that every kernel is one sgemm. */
static void svm_kernel_rows(const svm_params *p, const float *x, int64_t rows,
                            float *k) {
  int64_t v = p->n_vectors, f = p->features;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)v,
              (int)f, 1.0f, x, (int)f, p->vectors, (int)f, 0.0f, k, (int)v);
  if (p->kernel == KERNEL_LINEAR) return;
  for (int64_t i = 0; i < rows; i++) {
    float *ki = k + i * v;
    const float *xi = x + i * f;
    switch (p->kernel) {
      case KERNEL_POLY:
        for (int64_t j = 0; j < v; j++) {
          float b = p->gamma * ki[j] + p->coef0, y = 1;
          if (p->int_degree < 0) {
            y = powf(b, p->degree);
          } else {
            for (int d = 0; d < p->int_degree; d++) y *= b;
          }
          ki[j] = y;
        }
        break;
      case KERNEL_SIGMOID:
        for (int64_t j = 0; j < v; j++)
          ki[j] = tanhf(p->gamma * ki[j] + p->coef0);
        break;
      case KERNEL_RBF: {
        float xx = 0;
        for (int64_t c = 0; c < f; c++) xx += xi[c] * xi[c];
        for (int64_t j = 0; j < v; j++) {
          float d = xx + p->vector_norms[j] - 2.0f * ki[j];
          ki[j] = expf(-p->gamma * (d > 0 ? d : 0));
        }
        break;
      }
      default:
        break;
    }
  }
}

static const char *const svm_regressor_attrs[] = {
    "kernel_type", "kernel_params", "support_vectors", "coefficients",
    "rho",         "n_supports",    "one_class",       "post_transform",
    NULL};

/* SVMRegressor: y = sum_j coef_j K(x, sv_j) + rho[0]; with n_supports == 0
 * the coefficients are one weight vector (y = w.x + rho[0]). onnxruntime
 * ignores post_transform here, so anything but NONE is rejected. */
static int svm_regressor_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_node_check_attrs(n, svm_regressor_attrs, err);
  if (rc) return rc;
  svm_params p = {0};
  int64_t n_supports, one_class;
  size_t n_coef, n_rho;
  if ((rc = parse_svm_kernel(n, &p, err)) ||
      (rc = get_int(n, "n_supports", 0, &n_supports, err)) ||
      (rc = get_int(n, "one_class", 0, &one_class, err)) ||
      (rc = get_floats(n, "coefficients", true, &p.coef, &n_coef, err)) ||
      (rc = get_floats(n, "rho", true, &p.rho, &n_rho, err)) ||
      (rc = get_post(n, POST_BIT(POST_NONE), &p.post, err)))
    return rc;
  if (n_supports < 0)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'n_supports' = %lld is negative",
                          (long long)n_supports);
  if ((rc = parse_support_vectors(n, &p, n_supports, err))) return rc;
  if (n_rho != 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'rho' holds %zu values; a regressor has 1",
                          n_rho);
  if (n_supports > 0 && n_coef != (size_t)n_supports)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'coefficients' holds %zu values but "
                          "'n_supports' is %lld",
                          n_coef, (long long)n_supports);
  if (n_supports == 0) {
    if (n_coef == 0)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'coefficients' is empty");
    p.linear_mode = true;
    p.kernel = KERNEL_LINEAR;
    p.features = (int64_t)n_coef;
  }
  p.one_class = one_class != 0;
  return svm_params_store(n, &p, err);
}

static int svm_regressor_infer(const ts_node *n, const ts_tensor *const *in,
                               ts_tensor *out, ts_err *err) {
  const svm_params *p = n->params;
  return infer_regressor(n, in[0], p->features, 1, out, err);
}

static int svm_regressor_run(const ts_node *n, const ts_tensor *const *in,
                             ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const svm_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  float *y = out[0].data;
  if (p->linear_mode) {
    gemm_xwt(x, p->coef, rows, 1, p->features, NULL, p->rho[0], y);
  } else {
    int64_t block = svm_block_rows(p);
    if (block > rows) block = rows;
    float *k = scratch_or_fail(n, ctx,
                               (size_t)(block * p->n_vectors) * sizeof *k, err);
    if (!k) return err->code;
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
      int64_t b = rows - r0 < block ? rows - r0 : block;
      svm_kernel_rows(p, x + r0 * p->features, b, k);
      for (int64_t i = 0; i < b; i++) y[r0 + i] = p->rho[0];
      cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)b, (int)p->n_vectors, 1.0f,
                  k, (int)p->n_vectors, p->coef, 1, 1.0f, y + r0, 1);
    }
  }
  if (p->one_class)
    for (int64_t i = 0; i < rows; i++) y[i] = y[i] > 0 ? 1.0f : -1.0f;
  return TS_OK;
}

static const char *const svm_classifier_attrs[] = {
    "kernel_type",  "kernel_params", "vectors_per_class", "support_vectors",
    "coefficients", "rho",           "classlabels_ints",  "classlabels_strings",
    "prob_a",       "prob_b",        "post_transform",    NULL};

/* Checks the SVC-mode sizes: coefficients [classes - 1, vectors], one rho
 * (and prob_a, prob_b when given) per class pair. */
static int check_svc_sizes(ts_node *n, const svm_params *p, size_t n_coef,
                           size_t n_rho, size_t n_prob, ts_err *err) {
  size_t pairs = (size_t)(p->classes * (p->classes - 1) / 2);
  if (n_coef != (size_t)((p->classes - 1) * p->n_vectors))
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'coefficients' holds %zu values but (classes "
        "- 1) x support vectors = %lld x %lld",
        n_coef, (long long)(p->classes - 1), (long long)p->n_vectors);
  if (n_rho != pairs)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'rho' holds %zu values but %lld classes make "
        "%zu pairs",
        n_rho, (long long)p->classes, pairs);
  if (p->prob_a && n_prob != pairs)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attributes 'prob_a' and 'prob_b' hold %zu values but "
        "%lld classes make %zu pairs",
        n_prob, (long long)p->classes, pairs);
  return TS_OK;
}

/* SVMClassifier. With vectors_per_class (SVC mode): one-vs-one over the
 * support vectors, libsvm's layout. Without (linear mode): coefficients are
 * a [classes, features] weight matrix and rho[0] is added to every score. */
static int svm_classifier_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_node_check_attrs(n, svm_classifier_attrs, err);
  if (rc) return rc;
  svm_params p = {0};
  size_t n_labels, n_per_class, n_coef, n_rho, n_pa, n_pb;
  if ((rc = parse_svm_kernel(n, &p, err)) ||
      (rc = get_labels(n, &p.labels, &n_labels, err)) ||
      (rc = get_ints(n, "vectors_per_class", false, &p.per_class, &n_per_class,
                     err)) ||
      (rc = get_floats(n, "coefficients", true, &p.coef, &n_coef, err)) ||
      (rc = get_floats(n, "rho", true, &p.rho, &n_rho, err)) ||
      (rc = get_floats(n, "prob_a", false, &p.prob_a, &n_pa, err)) ||
      (rc = get_floats(n, "prob_b", false, &p.prob_b, &n_pb, err)))
    return rc;
  if (!p.labels)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'classlabels_ints' is required");
  if (n_labels < 2)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'classlabels_ints' holds %zu labels; a "
                          "classifier needs at least 2",
                          n_labels);
  if (n_labels > 65535)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'classlabels_ints' holds %zu labels; at most "
        "65535 are supported",
        n_labels);
  p.classes = (int64_t)n_labels;
  if ((p.prob_a == NULL) != (p.prob_b == NULL) || n_pa != n_pb)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attributes 'prob_a' (%zu values) and 'prob_b' (%zu "
                          "values) must be given together, of equal length",
                          n_pa, n_pb);

  int64_t vectors = 0;
  if (p.per_class && n_per_class != n_labels)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'vectors_per_class' holds %zu counts but "
                          "there are %zu classes",
                          n_per_class, n_labels);
  for (size_t c = 0; c < n_per_class; c++) {
    if (p.per_class[c] < 0 || p.per_class[c] > INT32_MAX - vectors)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'vectors_per_class' has a bad count %lld "
          "for class %zu",
          (long long)p.per_class[c], c);
    vectors += p.per_class[c];
  }
  if ((rc = parse_support_vectors(n, &p, vectors, err))) return rc;

  unsigned allowed = ALL_POST;
  if (vectors > 0) {
    if ((rc = check_svc_sizes(n, &p, n_coef, n_rho, n_pa, err))) return rc;
    /* Binary SVC without probabilities scores [-d, d]; onnxruntime does not
     * apply a transform to it, so only NONE has one meaning. */
    if (p.classes == 2 && !p.prob_a) allowed = POST_BIT(POST_NONE);
    p.score_cols = p.prob_a
                       ? p.classes
                       : (p.classes > 2 ? p.classes * (p.classes - 1) / 2 : 2);
  } else {
    p.per_class = NULL;
    p.linear_mode = true;
    p.kernel = KERNEL_LINEAR;
    if (n_coef == 0 || n_coef % n_labels != 0)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'coefficients' holds %zu values, not a "
                            "positive multiple of the %zu classes (linear SVM "
                            "without support vectors)",
                            n_coef, n_labels);
    if (n_rho != 1)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'rho' holds %zu values; a linear SVM "
                            "without support vectors has 1",
                            n_rho);
    if (p.prob_a)
      return ts_kernel_fail(
          n, err, TS_EUNSUPPORTED,
          "attributes 'prob_a'/'prob_b' are not supported for a "
          "linear SVM without support vectors");
    p.features = (int64_t)(n_coef / n_labels);
    p.score_cols = p.classes;
  }
  if ((rc = get_post(n, allowed, &p.post, err))) return rc;
  p.weights_all_positive = true;
  for (size_t i = 0; i < n_coef; i++)
    if (!(p.coef[i] >= 0)) p.weights_all_positive = false;
  return svm_params_store(n, &p, err);
}

static int svm_classifier_infer(const ts_node *n, const ts_tensor *const *in,
                                ts_tensor *out, ts_err *err) {
  const svm_params *p = n->params;
  return infer_classifier(n, in[0], p->features, p->score_cols, out, err);
}

/* Pairwise coupling of r (classes x classes, r[i][j] = P(i | i or j)) into
 * class probabilities p, by Wu, Lin and Weng's method 2 as libsvm's
 * multiclass_probability does it, in float as onnxruntime does. q and qp are
 * work buffers of classes^2 and classes floats. */
static void couple_pairwise(int64_t k, const float *r, float *p, float *q,
                            float *qp) {
  for (int64_t i = 0; i < k; i++) {
    p[i] = 1.0f / (float)k;
    q[i * k + i] = 0;
    for (int64_t j = 0; j < i; j++) {
      q[i * k + i] += r[j * k + i] * r[j * k + i];
      q[i * k + j] = q[j * k + i];
    }
    for (int64_t j = i + 1; j < k; j++) {
      q[i * k + i] += r[j * k + i] * r[j * k + i];
      q[i * k + j] = -r[j * k + i] * r[i * k + j];
    }
  }
  float eps = 0.005f / (float)k;
  int64_t max_iter = k > 100 ? k : 100;
  for (int64_t iter = 0; iter < max_iter; iter++) {
    float pqp = 0;
    for (int64_t i = 0; i < k; i++) {
      qp[i] = 0;
      for (int64_t j = 0; j < k; j++) qp[i] += q[i * k + j] * p[j];
      pqp += p[i] * qp[i];
    }
    float max_error = 0;
    for (int64_t i = 0; i < k; i++) {
      float e = fabsf(qp[i] - pqp);
      if (e > max_error) max_error = e;
    }
    if (max_error < eps) break;
    for (int64_t t = 0; t < k; t++) {
      float diff = (-qp[t] + pqp) / q[t * k + t];
      p[t] += diff;
      pqp = (pqp + diff * (diff * q[t * k + t] + 2 * qp[t])) / (1 + diff) /
            (1 + diff);
      for (int64_t j = 0; j < k; j++) {
        qp[j] = (qp[j] + diff * q[t * k + j]) / (1 + diff);
        p[j] /= (1 + diff);
      }
    }
  }
}

/* Platt's sigmoid as libsvm evaluates it: 1 / (1 + e^(d*A + B)). */
static float platt(float decision, float a, float b) {
  float f = decision * a + b;
  return f >= 0 ? expf(-f) / (1.0f + expf(-f)) : 1.0f / (1.0f + expf(f));
}

/* Per-row work buffers of the SVC path. */
typedef struct svc_work {
  float *pairs;      /* [pairs] decision values */
  int64_t *votes;    /* [classes] */
  float *r, *q, *qp; /* coupling: [classes^2], [classes^2], [classes] */
} svc_work;

/* Decision values, votes and label of one sample from its kernel row ki;
 * writes its scores row z (may be NULL). */
static int64_t svc_one(const svm_params *p, const float *ki, svc_work *w,
                       float *z) {
  int64_t c = p->classes, v = p->n_vectors;
  memset(w->votes, 0, (size_t)c * sizeof *w->votes);
  int64_t pair = 0;
  for (int64_t i = 0; i < c; i++) {
    for (int64_t j = i + 1; j < c; j++, pair++) {
      /* libsvm layout: class i's vectors use coefficient row j - 1, class
       * j's vectors row i. */
      const float *ci = p->coef + (j - 1) * v + p->first_vector[i];
      const float *cj = p->coef + i * v + p->first_vector[j];
      const float *ki_i = ki + p->first_vector[i];
      const float *ki_j = ki + p->first_vector[j];
      double sum = 0;
      for (int64_t m = 0; m < p->per_class[i]; m++)
        sum += (double)(ci[m] * ki_i[m]);
      for (int64_t m = 0; m < p->per_class[j]; m++)
        sum += (double)(cj[m] * ki_j[m]);
      sum += p->rho[pair];
      w->pairs[pair] = (float)sum;
      w->votes[sum > 0 ? i : j]++;
    }
  }
  int64_t best = 0;
  for (int64_t i = 1; i < c; i++)
    if (w->votes[i] > w->votes[best]) best = i;
  if (!z) return p->labels[best];

  if (p->prob_a) {
    pair = 0;
    for (int64_t i = 0; i < c; i++) {
      for (int64_t j = i + 1; j < c; j++, pair++) {
        float s = platt(w->pairs[pair], p->prob_a[pair], p->prob_b[pair]);
        s = s < 1e-7f ? 1e-7f : (s > 1 - 1e-7f ? 1 - 1e-7f : s);
        w->r[i * c + j] = s;
        w->r[j * c + i] = 1 - s;
      }
    }
    couple_pairwise(c, w->r, z, w->q, w->qp);
  } else if (c == 2) {
    z[0] = -w->pairs[0];
    z[1] = w->pairs[0];
  } else {
    memcpy(z, w->pairs, (size_t)(c * (c - 1) / 2) * sizeof *z);
  }
  return p->labels[best];
}

static int svc_run(const ts_node *n, const svm_params *p, const float *x,
                   int64_t rows, int64_t *y, float *z, ts_kctx *ctx,
                   ts_err *err) {
  int64_t c = p->classes;
  int64_t block = svm_block_rows(p);
  if (block > rows) block = rows;
  svc_work w = {0};
  float *k =
      scratch_or_fail(n, ctx, (size_t)(block * p->n_vectors) * sizeof *k, err);
  if (k)
    w.pairs = scratch_or_fail(n, ctx, (size_t)(c * c) * sizeof(float), err);
  if (w.pairs)
    w.votes = scratch_or_fail(n, ctx, (size_t)c * sizeof(int64_t), err);
  if (w.votes && p->prob_a) {
    w.r = scratch_or_fail(n, ctx, (size_t)(2 * c * c + c) * sizeof(float), err);
    if (w.r) {
      w.q = w.r + c * c;
      w.qp = w.q + c * c;
    }
  }
  if (!w.votes || (p->prob_a && !w.r)) return err->code;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    int64_t b = rows - r0 < block ? rows - r0 : block;
    svm_kernel_rows(p, x + r0 * p->features, b, k);
    for (int64_t i = 0; i < b; i++) {
      float *zi = z ? z + (r0 + i) * p->score_cols : NULL;
      int64_t label = svc_one(p, k + i * p->n_vectors, &w, zi);
      if (y) y[r0 + i] = label;
    }
  }
  if (z) apply_post(p->post, z, rows, p->score_cols);
  return TS_OK;
}

/* onnxruntime's label rule for a two-class linear SVM without probabilities:
 * the second label when the top score passes 0.5 (all weights >= 0) or 0
 * (mixed weights), else the label of the top score. */
static int64_t linear_svm_binary_label(const svm_params *p, const float *s) {
  int64_t best = argmax_first(s, 2);
  float top = s[best];
  if (p->weights_all_positive ? top >= 0.5f : top > 0) return p->labels[1];
  return p->labels[best];
}

static int svm_classifier_run(const ts_node *n, const ts_tensor *const *in,
                              ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const svm_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  int64_t *y = out[0].data;
  float *z = n->n_outputs > 1 ? out[1].data : NULL;
  if (rows == 0) return TS_OK;
  if (!p->linear_mode) return svc_run(n, p, x, rows, y, z, ctx, err);

  float *s = z;
  if (!s) {
    s = scratch_or_fail(n, ctx, (size_t)(rows * p->classes) * sizeof *s, err);
    if (!s) return err->code;
  }
  gemm_xwt(x, p->coef, rows, p->classes, p->features, NULL, p->rho[0], s);
  for (int64_t i = 0; y && i < rows; i++) {
    const float *si = s + i * p->classes;
    y[i] = p->classes == 2 ? linear_svm_binary_label(p, si)
                           : p->labels[argmax_first(si, p->classes)];
  }
  if (z) apply_post(p->post, z, rows, p->classes);
  return TS_OK;
}

/* ---- Normalizer and Scaler ----------------------------------------------- */

typedef struct norm_params {
  norm_kind norm;
} norm_params;

static int normalizer_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  static const char *const known[] = {"norm", NULL};
  int rc = ts_node_check_attrs(n, known, err);
  int norm;
  if (!rc)
    rc = get_enum(n, "norm", norm_names, NORM_COUNT, (1u << NORM_COUNT) - 1,
                  NORM_MAX, &norm, err);
  if (rc) return rc;
  norm_params p = {(norm_kind)norm};
  return params_store(n, &p, sizeof p, 0, NULL, err);
}

/* Normalizer and Scaler: float output of the input's shape. */
static int same_shape_infer(const ts_node *n, const ts_tensor *const *in,
                            ts_tensor *out, ts_err *err) {
  int64_t rows, cols;
  int rc = check_input(n, in[0], 0, &rows, &cols, err);
  if (rc) return rc;
  return ts_tensor_set_shape(&out[0], TS_DTYPE_FLOAT, in[0]->dims, in[0]->rank,
                             err);
}

/* Each row divided by its max (not max |x|, as the spec and onnxruntime
 * define MAX), its L1 norm or its L2 norm; rows whose norm is 0 are copied. */
static int normalizer_run(const ts_node *n, const ts_tensor *const *in,
                          ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx, (void)err;
  const norm_params *p = n->params;
  int64_t rows = input_rows(in[0]);
  int64_t cols = in[0]->dims[in[0]->rank - 1];
  float *y = out[0].data;
  convert_to_float(in[0], y, (size_t)(rows * cols));
  for (int64_t r = 0; r < rows && cols > 0; r++) {
    float *row = y + r * cols, d = 0;
    switch (p->norm) {
      case NORM_MAX:
        d = row[0];
        for (int64_t j = 1; j < cols; j++) d = row[j] > d ? row[j] : d;
        break;
      case NORM_L1:
        for (int64_t j = 0; j < cols; j++) d += fabsf(row[j]);
        break;
      default:
        for (int64_t j = 0; j < cols; j++) d += row[j] * row[j];
        d = sqrtf(d);
        break;
    }
    if (d == 0) continue;
    for (int64_t j = 0; j < cols; j++) row[j] /= d;
  }
  return TS_OK;
}

typedef struct scaler_params {
  const float *offset, *scale; /* NULL: 0 and 1 */
  int64_t n_offset, n_scale;   /* 1 broadcasts; else one per feature */
} scaler_params;

/* Scaler: y = (x - offset) * scale; each of offset and scale is absent, one
 * value for every feature, or one value per feature. */
static int scaler_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  static const char *const known[] = {"offset", "scale", NULL};
  scaler_params p = {0};
  size_t n_off = 0, n_scale = 0;
  int rc = ts_node_check_attrs(n, known, err);
  if (!rc) rc = get_floats(n, "offset", false, &p.offset, &n_off, err);
  if (!rc) rc = get_floats(n, "scale", false, &p.scale, &n_scale, err);
  if (rc) return rc;
  if (n_off > 1 && n_scale > 1 && n_off != n_scale)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attributes 'offset' (%zu values) and 'scale' (%zu "
                          "values) disagree on the number of features",
                          n_off, n_scale);
  p.n_offset = (int64_t)n_off;
  p.n_scale = (int64_t)n_scale;
  return params_store(n, &p, sizeof p, 0, NULL, err);
}

static int scaler_infer(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_err *err) {
  const scaler_params *p = n->params;
  int rc = same_shape_infer(n, in, out, err);
  if (rc) return rc;
  int64_t cols = in[0]->dims[in[0]->rank - 1];
  const char *bad = p->n_offset > 1 && p->n_offset != cols ? "offset"
                    : p->n_scale > 1 && p->n_scale != cols ? "scale"
                                                           : NULL;
  if (bad)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute '%s' holds %lld values but input '%s' has "
        "%lld features",
        bad, (long long)(strcmp(bad, "offset") ? p->n_scale : p->n_offset),
        input_name(n), (long long)cols);
  return TS_OK;
}

static int scaler_run(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx, (void)err;
  const scaler_params *p = n->params;
  int64_t rows = input_rows(in[0]);
  int64_t cols = in[0]->dims[in[0]->rank - 1];
  float *y = out[0].data;
  convert_to_float(in[0], y, (size_t)(rows * cols));
  int64_t off_step = p->n_offset > 1, scale_step = p->n_scale > 1;
  for (int64_t r = 0; r < rows; r++) {
    float *row = y + r * cols;
    for (int64_t j = 0; j < cols; j++) {
      float o = p->offset ? p->offset[j * off_step] : 0.0f;
      float s = p->scale ? p->scale[j * scale_step] : 1.0f;
      row[j] = (row[j] - o) * s;
    }
  }
  return TS_OK;
}

/* ---- the op table's rows ------------------------------------------------- */

/* One ai.onnx.ml op: input X, outputs 1..max_outputs. */
#define ML_OP(sym, op_type, max_out, prepare_fn, infer_fn, run_fn) \
  const ts_op ts_op_##sym = {.domain = "ai.onnx.ml",               \
                             .name = op_type,                      \
                             .min_inputs = 1,                      \
                             .max_inputs = 1,                      \
                             .min_outputs = 1,                     \
                             .max_outputs = max_out,               \
                             .prepare = prepare_fn,                \
                             .release = release_params,            \
                             .infer = infer_fn,                    \
                             .run = run_fn}

ML_OP(ml_linear_regressor, "LinearRegressor", 1, linear_regressor_prepare,
      linear_regressor_infer, linear_regressor_run);
ML_OP(ml_linear_classifier, "LinearClassifier", 2, linear_classifier_prepare,
      linear_classifier_infer, linear_classifier_run);
ML_OP(ml_svm_regressor, "SVMRegressor", 1, svm_regressor_prepare,
      svm_regressor_infer, svm_regressor_run);
ML_OP(ml_svm_classifier, "SVMClassifier", 2, svm_classifier_prepare,
      svm_classifier_infer, svm_classifier_run);
ML_OP(ml_normalizer, "Normalizer", 1, normalizer_prepare, same_shape_infer,
      normalizer_run);
ML_OP(ml_scaler, "Scaler", 1, scaler_prepare, scaler_infer, scaler_run);
