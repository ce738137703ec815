/*
 * shape.c - the shape-arithmetic kernels of the transformer family: Shape,
 * Unsqueeze, Squeeze, ConstantOfShape and Range (list in
 * list_transformer.h; what the family shares: transformer_int.h). Also
 * defines ts_transformer_int_list and ts_transformer_axes_mask, which reduce.c
 * uses too.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "list_transformer.h"
#include "transformer_int.h"

/* ---- helpers (transformer_int.h) --------------------------------------- */

/* Reads an integer list that is attribute `name` before opset `input_from`
 * and input `index` from then on. *present is false when it is absent (then
 * *count is 0). */
int ts_transformer_int_list(const ts_node *n, const ts_tensor *const *in,
                            const char *name, int index, int64_t input_from,
                            int64_t *vals, size_t max, size_t *count,
                            bool *present, ts_err *err) {
  *count = 0;
  *present = false;
  if (n->opset >= input_from) {
    const ts_tensor *t = n->n_inputs > index ? in[index] : NULL;
    if (!t) return TS_OK;
    *present = true;
    return ts_kernel_ints(n, t, name, vals, max, count, err);
  }
  const int64_t *a;
  size_t c;
  if (!ts_attr_find(n, name)) return TS_OK;
  int rc = ts_attr_ints(n, name, &a, &c, err);
  if (rc) return rc;
  if (c > max)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute '%s' has %zu values, at most %zu allowed",
                          name, c, max);
  if (c) memcpy(vals, a, c * sizeof *a);
  *count = c;
  *present = true;
  return TS_OK;
}

/* Marks the axes vals[0..count) of a rank-`rank` tensor in mask[];
 * TS_EINVAL on an axis out of range or repeated. */
int ts_transformer_axes_mask(const ts_node *n, const int64_t *vals,
                             size_t count, int rank, bool *mask, ts_err *err) {
  memset(mask, 0, (size_t)rank * sizeof *mask);
  for (size_t i = 0; i < count; i++) {
    int a;
    int rc = ts_kernel_axis(n, vals[i], rank, "axis", &a, err);
    if (rc) return rc;
    if (mask[a])
      return ts_kernel_fail(n, err, TS_EINVAL, "axis %lld is repeated",
                            (long long)vals[i]);
    mask[a] = true;
  }
  return TS_OK;
}

/* ---- Shape -------------------------------------------------------------- */

static const ts_attr_spec shape_attrs[] = {
    {"start", ATTR_INT}, {"end", ATTR_INT}, {NULL}};

static int prepare_shape(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(
      n, n->opset >= 15 ? shape_attrs : ts_transformer_no_attrs, err);
}

/* [start, end) of the dims Shape reports (opset 15 clamping rules). */
static void shape_range(const ts_node *n, int rank, int *start, int *end) {
  int64_t s = ts_attr_int(n, "start", 0), e = ts_attr_int(n, "end", rank);
  if (s < 0) s += rank;
  if (e < 0) e += rank;
  s = s < 0 ? 0 : s > rank ? rank : s;
  e = e < 0 ? 0 : e > rank ? rank : e;
  *start = (int)s;
  *end = (int)(e > s ? e : s);
}

static int infer_shape(const ts_node *n, const ts_tensor *const *in,
                       ts_tensor *out, ts_err *err) {
  int start, end;
  shape_range(n, in[0]->rank, &start, &end);
  int64_t len = end - start;
  return ts_tensor_set_shape(out, TS_DTYPE_INT64, &len, 1, err);
}

/* Reads only in[0]'s shape: its data may be NULL. */
static int run_shape(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  int start, end;
  (void)ctx;
  (void)err;
  shape_range(n, in[0]->rank, &start, &end);
  if (end > start)
    memcpy(out->data, in[0]->dims + start,
           (size_t)(end - start) * sizeof(int64_t));
  return TS_OK;
}

const ts_op ts_op_Shape = {"", "Shape", 1, 1, 1, 1, prepare_shape, NULL,
                           infer_shape, run_shape};


/* ---- Unsqueeze, Squeeze ------------------------------------------------- */

static const ts_attr_spec axes_attrs[] = {{"axes", ATTR_INTS}, {NULL}};

/* Unsqueeze and Squeeze take axes as an attribute before opset 13. */
static int prepare_axes13(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_form(n, 13, axes_attrs, ts_transformer_no_attrs, err);
}

/* Unsqueeze (insert) and Squeeze: the output shape from the axes. */
static int infer_squeeze_like(const ts_node *n, const ts_tensor *const *in,
                              ts_tensor *out, bool insert, ts_err *err) {
  const ts_tensor *x = in[0];
  int64_t axes[TS_MAX_RANK], dims[TS_MAX_RANK];
  bool mask[TS_MAX_RANK], present;
  size_t count;
  int rc = ts_transformer_int_list(n, in, "axes", 1, 13, axes, TS_MAX_RANK,
                                   &count, &present, err);
  if (rc) return rc;
  if (insert && !present)
    return ts_kernel_fail(n, err, TS_EINVAL, "'axes' is missing");
  int rank = insert ? x->rank + (int)count : x->rank, out_rank = 0;
  if (rank > TS_MAX_RANK)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "output rank %d is above %d", rank, TS_MAX_RANK);
  if (present &&
      (rc = ts_transformer_axes_mask(n, axes, count, rank, mask, err)))
    return rc;
  for (int k = 0, j = 0; k < rank; k++) {
    if (insert) {
      dims[out_rank++] = mask[k] ? 1 : x->dims[j++];
      continue;
    }
    bool drop = present ? mask[k] : x->dims[k] == 1;
    if (drop && x->dims[k] != 1)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "cannot squeeze dim %d of size %lld", k,
                            (long long)x->dims[k]);
    if (!drop) dims[out_rank++] = x->dims[k];
  }
  return ts_tensor_set_shape(out, x->dtype, dims, out_rank, err);
}

static int infer_unsqueeze(const ts_node *n, const ts_tensor *const *in,
                           ts_tensor *out, ts_err *err) {
  return infer_squeeze_like(n, in, out, true, err);
}

static int infer_squeeze(const ts_node *n, const ts_tensor *const *in,
                         ts_tensor *out, ts_err *err) {
  return infer_squeeze_like(n, in, out, false, err);
}

/* Unsqueeze, Squeeze: the bytes do not change. */
static int run_reshaped_copy(const ts_node *n, const ts_tensor *const *in,
                             ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)n;
  (void)ctx;
  (void)err;
  return ts_transformer_copy_through(in[0], out);
}

const ts_op ts_op_Unsqueeze = {"", "Unsqueeze", 1, 2, 1, 1, prepare_axes13,
                               NULL, infer_unsqueeze, run_reshaped_copy};
const ts_op ts_op_Squeeze = {"", "Squeeze", 1, 2, 1, 1, prepare_axes13, NULL,
                             infer_squeeze, run_reshaped_copy};


/* ---- ConstantOfShape ---------------------------------------------------- */

static const ts_attr_spec cos_attrs[] = {{"value", ATTR_TENSOR}, {NULL}};

/* node->params: the fill value, an owned one-element ts_tensor (NULL: float
 * 0). */
static int prepare_cos(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_kernel_check_attrs(n, cos_attrs, err);
  const Onnx__AttributeProto *a = ts_attr_find(n, "value");
  if (rc || !a) return rc;
  if (!a->t)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'value' must be a tensor");
  ts_tensor *v = calloc(1, sizeof *v);
  if (!v) return ts_kernel_fail(n, err, TS_ENOMEM, "out of memory");
  rc = ts_tensor_from_onnx(a->t, v, err);
  if (rc) {
    free(v);
    char desc[192];
    return ts_err_prefix(err, "%s: attribute 'value'",
                         ts_node_desc(n, desc, sizeof desc));
  }
  if (ts_tensor_numel(v) != 1 || !ts_dtype_is_numeric(v->dtype)) {
    rc = ts_kernel_fail(n, err, TS_EINVAL,
                        "attribute 'value' must hold one number, not %lld "
                        "of %s",
                        (long long)ts_tensor_numel(v), ts_dtype_name(v->dtype));
    ts_tensor_free(v);
    free(v);
    return rc;
  }
  n->params = v;
  return TS_OK;
}

static int infer_cos(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_err *err) {
  const ts_tensor *v = n->params;
  int64_t dims[TS_MAX_RANK];
  size_t count;
  int rc = ts_kernel_ints(n, in[0], "input", dims, TS_MAX_RANK, &count, err);
  if (rc) return rc;
  for (size_t k = 0; k < count; k++)
    if (dims[k] < 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "dim %zu is %lld", k,
                            (long long)dims[k]);
  return ts_tensor_set_shape(out, v ? v->dtype : TS_DTYPE_FLOAT, dims,
                             (int)count, err);
}

static int run_cos(const ts_node *n, const ts_tensor *const *in,
                   ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const ts_tensor *v = n->params;
  (void)in;
  (void)ctx;
  (void)err;
  size_t esz = ts_dtype_size(out->dtype);
  if (!v) {
    if (out->nbytes) memset(out->data, 0, out->nbytes);
    return TS_OK;
  }
  for (size_t off = 0; off < out->nbytes; off += esz)
    memcpy((char *)out->data + off, v->data, esz);
  return TS_OK;
}

const ts_op ts_op_ConstantOfShape = {"", "ConstantOfShape", 1, 1, 1, 1,
                                     prepare_cos, ts_kernel_release_tensor,
                                     infer_cos, run_cos};


/* ---- Range -------------------------------------------------------------- */

/* Range's element count from start, limit, delta (as double for floating
 * types, exactly for integers). */
static int range_count(const ts_node *n, const ts_tensor *const *in,
                       int64_t *count, ts_err *err) {
  static const char *const names[3] = {"start", "limit", "delta"};
  ts_dtype t = in[0]->dtype;
  int slot = ts_transformer_num_slot(t);
  if (slot < 0)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported", ts_dtype_name(t));
  bool real = slot == TS_SLOT_f32 || slot == TS_SLOT_f64;
  double f[3] = {0};
  __int128 q[3] = {0}; /* wide enough for limit - start of any int64s */
  for (int i = 0; i < 3; i++) {
    if (in[i]->dtype != t || ts_tensor_numel(in[i]) != 1)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input '%s' must be one %s, not %lld of %s",
                            names[i], ts_dtype_name(t),
                            (long long)ts_tensor_numel(in[i]),
                            ts_dtype_name(in[i]->dtype));
    const void *p = in[i]->data;
    if (!p) return TS_EAGAIN;
    switch (slot) {
    case TS_SLOT_f32: f[i] = *(const float *)p; break;
    case TS_SLOT_f64: f[i] = *(const double *)p; break;
    case TS_SLOT_i32: q[i] = *(const int32_t *)p; break;
    default: q[i] = *(const int64_t *)p; break;
    }
  }
  if (real ? f[2] == 0 : q[2] == 0)
    return ts_kernel_fail(n, err, TS_EINVAL, "'delta' is 0");
  double c;
  if (real) {
    c = ceil((f[1] - f[0]) / f[2]);
  } else {
    __int128 d = q[1] - q[0], k = d / q[2];
    if (k * q[2] != d && (d > 0) == (q[2] > 0)) k++; /* ceil */
    c = (double)k;
  }
  if (!(c <= (double)(INT64_MAX / 16))) /* NaN and absurd lengths */
    return ts_kernel_fail(n, err, TS_EINVAL, "output length %g is invalid",
                          c);
  *count = c > 0 ? (int64_t)c : 0;
  return TS_OK;
}

static int infer_range(const ts_node *n, const ts_tensor *const *in,
                       ts_tensor *out, ts_err *err) {
  int64_t count;
  int rc = range_count(n, in, &count, err);
  if (rc) return rc;
  return ts_tensor_set_shape(out, in[0]->dtype, &count, 1, err);
}

static int run_range(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  int64_t count;
  (void)ctx;
  int rc = range_count(n, in, &count, err);
  if (rc) return rc;
  switch (ts_transformer_num_slot(in[0]->dtype)) {
#define X(s, T, D)                                                      \
  case TS_SLOT_##s: {                                                         \
    T start = *(const T *)in[0]->data, delta = *(const T *)in[2]->data; \
    for (int64_t i = 0; i < count; i++)                                 \
      ((T *)out->data)[i] = TS_WRAP(+, start, TS_WRAP(*, (T)i, delta)); \
    break;                                                              \
  }
    TS_KERNEL_NUM_SLOTS(X)
#undef X
  }
  return TS_OK;
}

const ts_op ts_op_Range = {
    "",   "Range",     3,        3, 1, 1, ts_transformer_prepare_plain,
    NULL, infer_range, run_range};
