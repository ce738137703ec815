/*
 * ml_linear.c - LinearRegressor and LinearClassifier (ai.onnx.ml; list in
 * list_ml.h, semantics and invariants in ml_int.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "list_ml.h"
#include "ml_int.h"

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
  int rc = ts_ml_get_floats(n, "coefficients", true, &p->coef, &n_coef, err);
  if (!rc)
    rc = ts_ml_get_floats(n, "intercepts", false, &p->intercepts, &n_int, err);
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
  if ((rc = ts_ml_get_int(n, "targets", 1, &targets, err))) return rc;
  if (targets < 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'targets' = %lld must be at least 1",
                          (long long)targets);
  linear_params p = {0};
  if ((rc = parse_linear(n, targets, "attribute 'targets'", &p, err)) ||
      (rc = ts_ml_get_post(n, ALL_POST, &p.post, err)))
    return rc;
  p.score_cols = p.rows;
  return ts_ml_params_store(n, &p, sizeof p, 0, NULL, err);
}

static int linear_regressor_infer(const ts_node *n, const ts_tensor *const *in,
                                  ts_tensor *out, ts_err *err) {
  const linear_params *p = n->params;
  return ts_ml_infer_regressor(n, in[0], p->features, p->rows, out, err);
}

static int linear_regressor_run(const ts_node *n, const ts_tensor *const *in,
                                ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const linear_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = ts_ml_input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  ts_ml_gemm_xwt(x, p->coef, rows, p->rows, p->features, p->intercepts, 0.0f,
                 out[0].data);
  ts_ml_apply_post(p->post, out[0].data, rows, p->rows);
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
  if ((rc = ts_ml_get_labels(n, &p.labels, &n_labels, err)) ||
      (rc = ts_ml_get_int(n, "multi_class", 0, &multi_class, err)))
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
  if ((rc = ts_ml_get_post(n, allowed, &p.post, err))) return rc;
  p.score_cols = p.rows == 1 ? (p.n_labels == 2 ? 2 : 1) : p.rows;
  return ts_ml_params_store(n, &p, sizeof p, 0, NULL, err);
}

static int linear_classifier_infer(const ts_node *n, const ts_tensor *const *in,
                                   ts_tensor *out, ts_err *err) {
  const linear_params *p = n->params;
  return ts_ml_infer_classifier(n, in[0], p->features, p->score_cols, out, err);
}

static int64_t label_of(const int64_t *labels, int64_t k) {
  return labels ? labels[k] : k;
}

static int linear_classifier_run(const ts_node *n, const ts_tensor *const *in,
                                 ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const linear_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = ts_ml_input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  int64_t *y = out[0].data;
  float *z = n->n_outputs > 1 ? out[1].data : NULL;
  float *raw = z;
  if (!z || p->score_cols != p->rows) {
    raw = ts_ml_scratch_or_fail(n, ctx, (size_t)(rows * p->rows) * sizeof *raw,
                                err);
    if (!raw) return err->code;
  }
  ts_ml_gemm_xwt(x, p->coef, rows, p->rows, p->features, p->intercepts, 0.0f,
                 raw);

  if (p->rows == 1) {
    for (int64_t i = 0; y && i < rows; i++)
      y[i] = label_of(p->labels, raw[i] > 0 ? 1 : 0);
    for (int64_t i = 0; z && i < rows; i++) {
      float s = p->post == POST_LOGISTIC ? ts_ml_logistic(raw[i]) : raw[i];
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
    y[i] = label_of(p->labels, ts_ml_argmax_first(raw + i * p->rows, p->rows));
  if (z) ts_ml_apply_post(p->post, z, rows, p->rows);
  return TS_OK;
}

/* ---- the op table's rows ------------------------------------------------- */

ML_OP(ml_linear_regressor, "LinearRegressor", 1, linear_regressor_prepare,
      linear_regressor_infer, linear_regressor_run);
ML_OP(ml_linear_classifier, "LinearClassifier", 2, linear_classifier_prepare,
      linear_classifier_infer, linear_classifier_run);
