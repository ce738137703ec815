/*
 * ml_common.c - the helpers of ml_int.h shared by the ai.onnx.ml kernel
 * files: attribute parsing, input checks and casts, and the shared math
 * (post transforms, argmax, X * W^T).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ml_int.h"

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

int ts_ml_get_int(const ts_node *n, const char *name, int64_t dflt,
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

int ts_ml_get_floats(const ts_node *n, const char *name, bool required,
                     const float **vals, size_t *count, ts_err *err) {
  return absent_ok(n, name, required, ts_attr_floats(n, name, vals, count, err),
                   err);
}

int ts_ml_get_ints(const ts_node *n, const char *name, bool required,
                   const int64_t **vals, size_t *count, ts_err *err) {
  return absent_ok(n, name, required, ts_attr_ints(n, name, vals, count, err),
                   err);
}

int ts_ml_get_enum(const ts_node *n, const char *name, const char *const *names,
                   int count, unsigned allowed, int dflt, int *out,
                   ts_err *err) {
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

int ts_ml_get_labels(const ts_node *n, const int64_t **labels, size_t *count,
                     ts_err *err) {
  if (ts_attr_find(n, "classlabels_strings"))
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'classlabels_strings' is not supported (string "
        "labels); use 'classlabels_ints'");
  return ts_ml_get_ints(n, "classlabels_ints", false, labels, count, err);
}

int ts_ml_get_post(const ts_node *n, unsigned allowed, post_transform *out,
                   ts_err *err) {
  int v;
  int rc = ts_ml_get_enum(n, "post_transform", post_names, POST_COUNT, allowed,
                          POST_NONE, &v, err);
  *out = (post_transform)v;
  return rc;
}

int ts_ml_params_store(ts_node *n, const void *p, size_t size, size_t extra,
                       void **tail, ts_err *err) {
  size_t off = (size + 63) & ~(size_t)63;
  uint8_t *block = calloc(1, off + extra);
  if (!block) return ts_kernel_fail(n, err, TS_ENOMEM, "out of memory");
  memcpy(block, p, size);
  if (tail) *tail = block + off;
  n->params = block;
  return TS_OK;
}

void ts_ml_release_params(ts_node *node) {
  free(node->params);
  node->params = NULL;
}

/* ---- inputs -------------------------------------------------------------- */

const char *ts_ml_input_name(const ts_node *n) {
  if (n->proto && n->proto->n_input > 0 && n->proto->input[0])
    return n->proto->input[0];
  return "X";
}

int64_t ts_ml_input_rows(const ts_tensor *x) {
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

int ts_ml_check_input(const ts_node *n, const ts_tensor *x, int64_t features,
                      int64_t *rows, int64_t *cols, ts_err *err) {
  if (!castable_dtype(x->dtype))
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has type %s; the op takes float, double, "
                          "int32 or int64",
                          ts_ml_input_name(n), ts_dtype_name(x->dtype));
  if (x->rank != 1 && x->rank != 2)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has rank %d; the op takes [N, F] or [F]",
                          ts_ml_input_name(n), x->rank);
  *rows = ts_ml_input_rows(x);
  *cols = x->dims[x->rank - 1];
  if (*rows > INT32_MAX || *cols > INT32_MAX)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has %lld x %lld values; at most 2^31 - 1 "
                          "samples and features are supported",
                          ts_ml_input_name(n), (long long)*rows,
                          (long long)*cols);
  if (features > 0 && *cols != features)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has %lld features (dim %d) but the model "
                          "needs %lld",
                          ts_ml_input_name(n), (long long)*cols, x->rank - 1,
                          (long long)features);
  return TS_OK;
}

void ts_ml_convert_to_float(const ts_tensor *x, float *dst, size_t count) {
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

int ts_ml_input_floats(const ts_node *n, const ts_tensor *x, ts_kctx *ctx,
                       const float **out, int64_t *rows, ts_err *err) {
  size_t count = (size_t)ts_tensor_numel(x);
  *rows = ts_ml_input_rows(x);
  if (x->dtype == TS_DTYPE_FLOAT) {
    *out = x->data;
    return TS_OK;
  }
  float *dst = ts_kctx_scratch(ctx, count * sizeof *dst);
  if (!dst)
    return ts_kernel_fail(n, err, TS_ENOMEM, "cannot cast input '%s' to float",
                          ts_ml_input_name(n));
  ts_ml_convert_to_float(x, dst, count);
  *out = dst;
  return TS_OK;
}

void *ts_ml_scratch_or_fail(const ts_node *n, ts_kctx *ctx, size_t bytes,
                            ts_err *err) {
  void *p = ts_kctx_scratch(ctx, bytes);
  if (!p)
    ts_kernel_fail(n, err, TS_ENOMEM, "cannot allocate %zu bytes of scratch",
                   bytes);
  return p;
}

int ts_ml_infer_regressor(const ts_node *n, const ts_tensor *x,
                          int64_t features, int64_t cols, ts_tensor *out,
                          ts_err *err) {
  int64_t rows, x_cols;
  int rc = ts_ml_check_input(n, x, features, &rows, &x_cols, err);
  if (rc) return rc;
  int64_t dims[2] = {rows, cols};
  return ts_tensor_set_shape(&out[0], TS_DTYPE_FLOAT, dims, 2, err);
}

int ts_ml_infer_classifier(const ts_node *n, const ts_tensor *x,
                           int64_t features, int64_t cols, ts_tensor *out,
                           ts_err *err) {
  int64_t rows, x_cols;
  int rc = ts_ml_check_input(n, x, features, &rows, &x_cols, err);
  if (rc) return rc;
  int64_t dims[2] = {rows, cols};
  rc = ts_tensor_set_shape(&out[0], TS_DTYPE_INT64, dims, 1, err);
  if (!rc && n->n_outputs > 1)
    rc = ts_tensor_set_shape(&out[1], TS_DTYPE_FLOAT, dims, 2, err);
  return rc;
}

/* ---- shared math --------------------------------------------------------- */

void ts_ml_gemm_xwt(const float *x, const float *w, int64_t rows, int64_t m,
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

float ts_ml_logistic(float v) {
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

void ts_ml_apply_post(post_transform t, float *s, int64_t rows, int64_t cols) {
  size_t count = (size_t)(rows * cols);
  switch (t) {
    case POST_LOGISTIC:
      for (size_t i = 0; i < count; i++) s[i] = ts_ml_logistic(s[i]);
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

int64_t ts_ml_argmax_first(const float *s, int64_t c) {
  int64_t best = 0;
  for (int64_t j = 1; j < c; j++)
    if (s[j] > s[best]) best = j;
  return best;
}
