/*
 * ml_preprocess.c - Normalizer and Scaler, scikit-learn's preprocessing
 * steps (ai.onnx.ml; list in list_ml.h, invariants in ml_int.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "list_ml.h"
#include "ml_int.h"

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
    rc = ts_ml_get_enum(n, "norm", norm_names, NORM_COUNT,
                        (1u << NORM_COUNT) - 1, NORM_MAX, &norm, err);
  if (rc) return rc;
  norm_params p = {(norm_kind)norm};
  return ts_ml_params_store(n, &p, sizeof p, 0, NULL, err);
}

/* Normalizer and Scaler: float output of the input's shape. */
static int same_shape_infer(const ts_node *n, const ts_tensor *const *in,
                            ts_tensor *out, ts_err *err) {
  int64_t rows, cols;
  int rc = ts_ml_check_input(n, in[0], 0, &rows, &cols, err);
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
  int64_t rows = ts_ml_input_rows(in[0]);
  int64_t cols = in[0]->dims[in[0]->rank - 1];
  float *y = out[0].data;
  ts_ml_convert_to_float(in[0], y, (size_t)(rows * cols));
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
  if (!rc) rc = ts_ml_get_floats(n, "offset", false, &p.offset, &n_off, err);
  if (!rc) rc = ts_ml_get_floats(n, "scale", false, &p.scale, &n_scale, err);
  if (rc) return rc;
  if (n_off > 1 && n_scale > 1 && n_off != n_scale)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attributes 'offset' (%zu values) and 'scale' (%zu "
                          "values) disagree on the number of features",
                          n_off, n_scale);
  p.n_offset = (int64_t)n_off;
  p.n_scale = (int64_t)n_scale;
  return ts_ml_params_store(n, &p, sizeof p, 0, NULL, err);
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
        ts_ml_input_name(n), (long long)cols);
  return TS_OK;
}

static int scaler_run(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx, (void)err;
  const scaler_params *p = n->params;
  int64_t rows = ts_ml_input_rows(in[0]);
  int64_t cols = in[0]->dims[in[0]->rank - 1];
  float *y = out[0].data;
  ts_ml_convert_to_float(in[0], y, (size_t)(rows * cols));
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

ML_OP(ml_normalizer, "Normalizer", 1, normalizer_prepare, same_shape_infer,
      normalizer_run);
ML_OP(ml_scaler, "Scaler", 1, scaler_prepare, scaler_infer, scaler_run);
