/*
 * ml_int.h - what the kernel files of the ai.onnx.ml family (list_ml.h)
 * share: the attribute enums, attribute and input checks, and the shared
 * math, defined in ml_common.c; the ops live in ml_linear.c
 * (LinearRegressor, LinearClassifier), ml_svm.c (SVMRegressor,
 * SVMClassifier) and ml_preprocess.c (Normalizer, Scaler). Not a public
 * interface: these files only.
 *
 * The family: kernels of the ai.onnx.ml domain that scikit-learn models
 * become in ONNX: LinearRegressor, LinearClassifier, SVMRegressor,
 * SVMClassifier, Normalizer and Scaler.
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
#ifndef TS_ML_INT_H
#define TS_ML_INT_H

#include <stdint.h>

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

/* An int attribute, dflt when absent; TS_EINVAL when it has another type. */
int ts_ml_get_int(const ts_node *n, const char *name, int64_t dflt,
                  int64_t *out, ts_err *err);

/* A list-of-floats attribute. Absent: TS_EINVAL when `required`, else
 * *vals = NULL and *count = 0. */
int ts_ml_get_floats(const ts_node *n, const char *name, bool required,
                     const float **vals, size_t *count, ts_err *err);

/* As ts_ml_get_floats, for a list of ints. */
int ts_ml_get_ints(const ts_node *n, const char *name, bool required,
                   const int64_t **vals, size_t *count, ts_err *err);

/* A string attribute that names one of `names` (count entries); dflt when
 * absent. Values outside `allowed` (a bit mask of indices) are
 * TS_EUNSUPPORTED; a value of another type is TS_EINVAL. */
int ts_ml_get_enum(const ts_node *n, const char *name, const char *const *names,
                   int count, unsigned allowed, int dflt, int *out,
                   ts_err *err);

/* The class labels of a classifier. classlabels_strings is not supported
 * (Tessera's label outputs are int64); giving both kinds is TS_EINVAL.
 * Absent: *labels = NULL, *count = 0. */
int ts_ml_get_labels(const ts_node *n, const int64_t **labels, size_t *count,
                     ts_err *err);

/* post_transform, NONE when absent; values outside `allowed` (a mask of
 * POST_BIT) are TS_EUNSUPPORTED. */
int ts_ml_get_post(const ts_node *n, unsigned allowed, post_transform *out,
                   ts_err *err);

/* Stores a copy of the parsed params (size bytes at p) in n->params: one
 * zeroed malloc block with `extra` more bytes at a 64-byte aligned offset,
 * returned in *tail when tail is not NULL. ts_ml_release_params frees it. */
int ts_ml_params_store(ts_node *n, const void *p, size_t size, size_t extra,
                       void **tail, ts_err *err);

void ts_ml_release_params(ts_node *node);

const char *ts_ml_input_name(const ts_node *n);

/* Samples in X: dim 0, or 1 for a rank-1 input. */
int64_t ts_ml_input_rows(const ts_tensor *x);

/* Checks the input X (rank 1: one sample; rank 2: [N, F]) and returns its
 * sample count and feature count. `features` > 0 is the count the model
 * needs; 0 accepts any. */
int ts_ml_check_input(const ts_node *n, const ts_tensor *x, int64_t features,
                      int64_t *rows, int64_t *cols, ts_err *err);

/* Converts count elements of x (a castable dtype) to float. */
void ts_ml_convert_to_float(const ts_tensor *x, float *dst, size_t count);

/* x as float (its own data when it is float, else a cast into scratch), and
 * its sample count. */
int ts_ml_input_floats(const ts_node *n, const ts_tensor *x, ts_kctx *ctx,
                       const float **out, int64_t *rows, ts_err *err);

void *ts_ml_scratch_or_fail(const ts_node *n, ts_kctx *ctx, size_t bytes,
                            ts_err *err);

/* Checks X against the model's feature count and sets the output: scores
 * float [N, cols]. */
int ts_ml_infer_regressor(const ts_node *n, const ts_tensor *x,
                          int64_t features, int64_t cols, ts_tensor *out,
                          ts_err *err);

/* Checks X against the model's feature count and sets the outputs: labels
 * int64 [N], scores float [N, cols]. */
int ts_ml_infer_classifier(const ts_node *n, const ts_tensor *x,
                           int64_t features, int64_t cols, ts_tensor *out,
                           ts_err *err);

/* out[rows, m] = x[rows, k] * w[m, k]^T (+ bias[m] when given, else + c). */
void ts_ml_gemm_xwt(const float *x, const float *w, int64_t rows, int64_t m,
                    int64_t k, const float *bias, float c, float *out);

/* 1 / (1 + e^-v), computed on |v| so it never overflows. */
float ts_ml_logistic(float v);

/* Applies post_transform to rows x cols scores, row by row, in place. */
void ts_ml_apply_post(post_transform t, float *s, int64_t rows, int64_t cols);

/* Index of the first largest of c values. */
int64_t ts_ml_argmax_first(const float *s, int64_t c);

/* One ai.onnx.ml op: input X, outputs 1..max_outputs. */
#define ML_OP(sym, op_type, max_out, prepare_fn, infer_fn, run_fn) \
  const ts_op ts_op_##sym = {.domain = "ai.onnx.ml",               \
                             .name = op_type,                      \
                             .min_inputs = 1,                      \
                             .max_inputs = 1,                      \
                             .min_outputs = 1,                     \
                             .max_outputs = max_out,               \
                             .prepare = prepare_fn,                \
                             .release = ts_ml_release_params,      \
                             .infer = infer_fn,                    \
                             .run = run_fn}

#endif
