/*
 * transformer.c - shape, index and reduction kernels, as torch.onnx.export
 * writes them for transformer encoders (opsets 13-17, most also earlier):
 * Transpose, Shape, Gather, Unsqueeze, Squeeze, Concat, Slice, Split,
 * ConstantOfShape, Range, Tile, Reduce{Sum,Mean,Max,Min,Prod} and
 * LayerNormalization.
 *
 * Data movement is dtype-blind: kernels copy elements by size, so every
 * fixed-size dtype works. Transpose, Slice and Tile are one strided copy
 * (strided_copy) over a view of the input; Concat, Split and Gather copy
 * contiguous blocks.
 *
 * Shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat feeding Reshape,
 * Slice bounds, Split sizes, ...) runs on int64 tensors with the same code at
 * load time (constant folding, where the loader evaluates small integer
 * results) and at run time. infer() needs the *values* of some inputs
 * (Slice's starts, Unsqueeze's axes from opset 13, ...); while they are
 * unknown it returns TS_EAGAIN.
 *
 * Invariants: every index, axis, bound and size read from a model or a
 * request is validated before use (TS_EINVAL naming node and input); run()
 * recomputes what it needs from its inputs with the same helpers infer()
 * uses, so the two never disagree; only Reduce* uses scratch memory.
 */
/* The build's -O2 (GCC 12) uses the "very cheap" vectorizer cost model,
 * which vectorizes no loop whose trip count is unknown: that is every
 * kernel loop here. Allow the cheap model for this file (2-4x on the
 * element-wise loops) until common/meson.build sets it for the kernels. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=cheap")
#endif
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_util.h"
#include "list_transformer.h"
#include "ops.h"

/* Split into more outputs than this is not supported. */
#define MAX_SPLIT 256

static const ts_attr_spec no_attrs[] = {{NULL}};

/* ---- helpers ------------------------------------------------------------ */

static int elem_size(const ts_node *n, const ts_tensor *t, size_t *size,
                     ts_err *err) {
  *size = ts_dtype_is_numeric(t->dtype) ? ts_dtype_size(t->dtype) : 0;
  if (!*size)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(t->dtype));
  return TS_OK;
}

/* Reads an integer list that is attribute `name` before opset `input_from`
 * and input `index` from then on. *present is false when it is absent (then
 * *count is 0). */
static int int_list(const ts_node *n, const ts_tensor *const *in,
                    const char *name, int index, int64_t input_from,
                    int64_t *vals, size_t max, size_t *count, bool *present,
                    ts_err *err) {
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
static int axes_mask(const ts_node *n, const int64_t *vals, size_t count,
                     int rank, bool *mask, ts_err *err) {
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

static void contiguous_strides(const ts_tensor *t, int64_t *stride) {
  int64_t s = 1;
  for (int k = t->rank - 1; k >= 0; k--) {
    stride[k] = s;
    s *= t->dims[k];
  }
}

static int64_t dims_product(const int64_t *dims, int from, int to) {
  int64_t p = 1;
  for (int k = from; k < to; k++) p *= dims[k];
  return p;
}

/* X(element bytes, C type) */
#define SIZE_LIST(X) X(1, uint8_t) X(2, uint16_t) X(4, uint32_t) X(8, uint64_t)

/* Copies n elements of esz bytes from src, `step` elements apart, to
 * contiguous dst. */
static void gather_elems(char *dst, const char *src, int64_t n, int64_t step,
                         size_t esz) {
  switch (esz) {
#define X(size, T)                                           \
  case size:                                                 \
    for (int64_t i = 0; i < n; i++)                          \
      ((T *)(void *)dst)[i] =                                \
          *(const T *)(const void *)(src + i * step * size); \
    return;
    SIZE_LIST(X)
#undef X
    default:
      for (int64_t i = 0; i < n; i++)
        memcpy(dst + (size_t)i * esz, src + i * step * (int64_t)esz, esz);
  }
}

/* Fills dst (row-major over dims[0..rank)) from src, where element idx of
 * dst is src[sum(idx[k] * stride[k])] (strides in elements, may be 0 or
 * negative). Size-1 dims are dropped and dims that stay contiguous merged,
 * so the inner loop is as long as possible; a unit inner stride is a
 * memcpy. rank may be up to 2 * TS_MAX_RANK. */
static void strided_copy(void *dst, const void *src, int rank,
                         const int64_t *dims_in, const int64_t *stride_in,
                         size_t esz) {
  int64_t dims[2 * TS_MAX_RANK], stride[2 * TS_MAX_RANK];
  int m = 0;
  for (int k = 0; k < rank; k++) {
    if (dims_in[k] == 0) return;
    if (dims_in[k] == 1) continue;
    if (m > 0 && stride[m - 1] == stride_in[k] * dims_in[k]) {
      dims[m - 1] *= dims_in[k];
    } else {
      dims[m] = dims_in[k];
      m++;
    }
    stride[m - 1] = stride_in[k];
  }
  int64_t inner = m ? dims[m - 1] : 1, step = m ? stride[m - 1] : 1;
  int64_t rows = dims_product(dims, 0, m > 0 ? m - 1 : 0);
  int64_t idx[2 * TS_MAX_RANK] = {0}, off = 0;
  char *d = dst;
  size_t row_bytes = (size_t)inner * esz;
  for (int64_t r = 0; r < rows; r++, d += row_bytes) {
    const char *s = (const char *)src + off * (int64_t)esz;
    if (step == 1)
      memcpy(d, s, row_bytes);
    else
      gather_elems(d, s, inner, step, esz);
    for (int k = m - 2; k >= 0; k--) {
      off += stride[k];
      if (++idx[k] < dims[k]) break;
      off -= stride[k] * dims[k];
      idx[k] = 0;
    }
  }
}

static int prepare_plain(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(n, no_attrs, err);
}

/* Copies in to out (same bytes) unless the executor already aliased them. */
static int copy_through(const ts_tensor *in, ts_tensor *out) {
  if (out->data != in->data && in->nbytes)
    memcpy(out->data, in->data, in->nbytes);
  return TS_OK;
}

/* ---- Transpose ---------------------------------------------------------- */

static const ts_attr_spec transpose_attrs[] = {{"perm", ATTR_INTS}, {NULL}};

/* perm[] for a tensor of `rank` dims: the attribute, validated as a
 * permutation, or the dims reversed. rank < 0: validate only. */
static int transpose_perm(const ts_node *n, int rank, int *perm,
                          ts_err *err) {
  const int64_t *p;
  size_t count;
  if (!ts_attr_find(n, "perm")) {
    for (int k = 0; k < rank; k++) perm[k] = rank - 1 - k;
    return TS_OK;
  }
  int rc = ts_attr_ints(n, "perm", &p, &count, err);
  if (rc) return rc;
  if (rank >= 0 && count != (size_t)rank)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'perm' has %zu entries for rank %d",
                          count, rank);
  if (count > TS_MAX_RANK)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "attribute 'perm' has %zu entries, above rank %d",
                          count, TS_MAX_RANK);
  bool seen[TS_MAX_RANK] = {false};
  for (size_t k = 0; k < count; k++) {
    if (p[k] < 0 || p[k] >= (int64_t)count || seen[p[k]])
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'perm' is not a permutation (entry %zu "
                            "is %lld)",
                            k, (long long)p[k]);
    seen[p[k]] = true;
    if (perm) perm[k] = (int)p[k];
  }
  return TS_OK;
}

static int prepare_transpose(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_kernel_check_attrs(n, transpose_attrs, err);
  return rc ? rc : transpose_perm(n, -1, NULL, err);
}

static int infer_transpose(const ts_node *n, const ts_tensor *const *in,
                           ts_tensor *out, ts_err *err) {
  int perm[TS_MAX_RANK];
  int64_t dims[TS_MAX_RANK];
  int rc = transpose_perm(n, in[0]->rank, perm, err);
  if (rc) return rc;
  for (int k = 0; k < in[0]->rank; k++) dims[k] = in[0]->dims[perm[k]];
  return ts_tensor_set_shape(out, in[0]->dtype, dims, in[0]->rank, err);
}

static int run_transpose(const ts_node *n, const ts_tensor *const *in,
                         ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  int perm[TS_MAX_RANK];
  int64_t own[TS_MAX_RANK], stride[TS_MAX_RANK];
  size_t esz;
  (void)ctx;
  int rc = transpose_perm(n, in[0]->rank, perm, err);
  if (!rc) rc = elem_size(n, in[0], &esz, err);
  if (rc) return rc;
  contiguous_strides(in[0], own);
  for (int k = 0; k < in[0]->rank; k++) stride[k] = own[perm[k]];
  strided_copy(out->data, in[0]->data, out->rank, out->dims, stride, esz);
  return TS_OK;
}

const ts_op ts_op_Transpose = {"", "Transpose", 1, 1, 1, 1,
                               prepare_transpose, NULL, infer_transpose,
                               run_transpose};

/* ---- Shape -------------------------------------------------------------- */

static const ts_attr_spec shape_attrs[] = {
    {"start", ATTR_INT}, {"end", ATTR_INT}, {NULL}};

static int prepare_shape(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(n, n->opset >= 15 ? shape_attrs : no_attrs,
                               err);
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

/* ---- Gather ------------------------------------------------------------- */

static const ts_attr_spec axis_attrs[] = {{"axis", ATTR_INT}, {NULL}};

static int prepare_axis(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(n, axis_attrs, err);
}

static int gather_check(const ts_node *n, const ts_tensor *const *in,
                        int *axis, ts_err *err) {
  const ts_tensor *x = in[0], *idx = in[1];
  size_t esz;
  int rc = elem_size(n, x, &esz, err);
  if (!rc)
    rc = ts_kernel_axis(n, ts_attr_int(n, "axis", 0), x->rank,
                        "attribute 'axis'", axis, err);
  if (rc) return rc;
  if (idx->dtype != TS_DTYPE_INT64 && idx->dtype != TS_DTYPE_INT32)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input 'indices' must be int32 or int64, not %s",
                          ts_dtype_name(idx->dtype));
  if (x->rank - 1 + idx->rank > TS_MAX_RANK)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "output rank %d is above %d",
                          x->rank - 1 + idx->rank, TS_MAX_RANK);
  return TS_OK;
}

static int infer_gather(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0], *idx = in[1];
  int axis, r = 0;
  int64_t dims[TS_MAX_RANK];
  int rc = gather_check(n, in, &axis, err);
  if (rc) return rc;
  for (int k = 0; k < axis; k++) dims[r++] = x->dims[k];
  for (int k = 0; k < idx->rank; k++) dims[r++] = idx->dims[k];
  for (int k = axis + 1; k < x->rank; k++) dims[r++] = x->dims[k];
  return ts_tensor_set_shape(out, x->dtype, dims, r, err);
}

static int run_gather(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const ts_tensor *x = in[0], *idx = in[1];
  int axis;
  (void)ctx;
  int rc = gather_check(n, in, &axis, err);
  if (rc) return rc;
  int64_t dim = x->dims[axis], count = ts_tensor_numel(idx);
  int64_t outer = dims_product(x->dims, 0, axis);
  size_t block = (size_t)dims_product(x->dims, axis + 1, x->rank) *
                 ts_dtype_size(x->dtype);
  bool wide = idx->dtype == TS_DTYPE_INT64;
  if (ts_tensor_numel(out) == 0) return TS_OK;
  for (int64_t i = 0; i < count; i++) {
    int64_t v = wide ? ((const int64_t *)idx->data)[i]
                     : ((const int32_t *)idx->data)[i];
    if (v < -dim || v >= dim)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "index %lld (at %lld) is out of range for dim "
                            "%lld",
                            (long long)v, (long long)i, (long long)dim);
  }
  char *o = out->data;
  for (int64_t r = 0; r < outer; r++) {
    const char *src = (const char *)x->data + (size_t)(r * dim) * block;
    for (int64_t i = 0; i < count; i++, o += block) {
      int64_t v = wide ? ((const int64_t *)idx->data)[i]
                       : ((const int32_t *)idx->data)[i];
      memcpy(o, src + (size_t)(v < 0 ? v + dim : v) * block, block);
    }
  }
  return TS_OK;
}

const ts_op ts_op_Gather = {"", "Gather", 2, 2, 1, 1, prepare_axis, NULL,
                            infer_gather, run_gather};

/* ---- Unsqueeze, Squeeze ------------------------------------------------- */

static const ts_attr_spec axes_attrs[] = {{"axes", ATTR_INTS}, {NULL}};

/* Unsqueeze and Squeeze take axes as an attribute before opset 13. */
static int prepare_axes13(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_form(n, 13, axes_attrs, no_attrs, err);
}

/* Unsqueeze (insert) and Squeeze: the output shape from the axes. */
static int infer_squeeze_like(const ts_node *n, const ts_tensor *const *in,
                              ts_tensor *out, bool insert, ts_err *err) {
  const ts_tensor *x = in[0];
  int64_t axes[TS_MAX_RANK], dims[TS_MAX_RANK];
  bool mask[TS_MAX_RANK], present;
  size_t count;
  int rc = int_list(n, in, "axes", 1, 13, axes, TS_MAX_RANK, &count, &present,
                    err);
  if (rc) return rc;
  if (insert && !present)
    return ts_kernel_fail(n, err, TS_EINVAL, "'axes' is missing");
  int rank = insert ? x->rank + (int)count : x->rank, out_rank = 0;
  if (rank > TS_MAX_RANK)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "output rank %d is above %d", rank, TS_MAX_RANK);
  if (present && (rc = axes_mask(n, axes, count, rank, mask, err))) return rc;
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
  return copy_through(in[0], out);
}

const ts_op ts_op_Unsqueeze = {"", "Unsqueeze", 1, 2, 1, 1, prepare_axes13,
                               NULL, infer_unsqueeze, run_reshaped_copy};
const ts_op ts_op_Squeeze = {"", "Squeeze", 1, 2, 1, 1, prepare_axes13, NULL,
                             infer_squeeze, run_reshaped_copy};

/* ---- Concat ------------------------------------------------------------- */

static int concat_check(const ts_node *n, const ts_tensor *const *in,
                        int *axis, int64_t *total, ts_err *err) {
  const ts_tensor *x = in[0];
  size_t esz;
  if (!x) return ts_kernel_fail(n, err, TS_EINVAL, "input 0 is missing");
  int rc = elem_size(n, x, &esz, err);
  if (!rc)
    rc = ts_kernel_axis(n, ts_attr_int(n, "axis", 0), x->rank,
                        "attribute 'axis'", axis, err);
  if (rc) return rc;
  *total = 0;
  for (int j = 0; j < n->n_inputs; j++) {
    const ts_tensor *t = in[j];
    if (!t) return ts_kernel_fail(n, err, TS_EINVAL, "input %d is missing", j);
    if (t->dtype != x->dtype || t->rank != x->rank)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input %d is %s of rank %d, input 0 %s of rank %d",
                            j, ts_dtype_name(t->dtype), t->rank,
                            ts_dtype_name(x->dtype), x->rank);
    for (int k = 0; k < x->rank; k++)
      if (k != *axis && t->dims[k] != x->dims[k])
        return ts_kernel_fail(n, err, TS_EINVAL,
                              "input %d dim %d is %lld, input 0 has %lld", j,
                              k, (long long)t->dims[k], (long long)x->dims[k]);
    *total += t->dims[*axis];
  }
  return TS_OK;
}

static int infer_concat(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_err *err) {
  int axis;
  int64_t total, dims[TS_MAX_RANK];
  int rc = concat_check(n, in, &axis, &total, err);
  if (rc) return rc;
  memcpy(dims, in[0]->dims, sizeof dims);
  dims[axis] = total;
  return ts_tensor_set_shape(out, in[0]->dtype, dims, in[0]->rank, err);
}

static int run_concat(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  int axis;
  int64_t total;
  (void)ctx;
  int rc = concat_check(n, in, &axis, &total, err);
  if (rc) return rc;
  int64_t outer = dims_product(out->dims, 0, axis);
  size_t inner = (size_t)dims_product(out->dims, axis + 1, out->rank) *
                 ts_dtype_size(out->dtype);
  char *o = out->data;
  for (int64_t r = 0; r < outer; r++)
    for (int j = 0; j < n->n_inputs; j++) {
      size_t block = (size_t)in[j]->dims[axis] * inner;
      if (!block) continue;
      memcpy(o, (const char *)in[j]->data + (size_t)r * block, block);
      o += block;
    }
  return TS_OK;
}

/* Concat's axis has no default. */
static int prepare_concat(ts_node *n, const ts_graph *g, ts_err *err) {
  int rc = prepare_axis(n, g, err);
  if (!rc && !ts_attr_find(n, "axis"))
    rc = ts_kernel_fail(n, err, TS_EINVAL, "attribute 'axis' is missing");
  return rc;
}

const ts_op ts_op_Concat = {"", "Concat", 1, INT_MAX, 1, 1, prepare_concat,
                            NULL, infer_concat, run_concat};

/* ---- Slice -------------------------------------------------------------- */

static const ts_attr_spec slice_attrs[] = {
    {"starts", ATTR_INTS}, {"ends", ATTR_INTS}, {"axes", ATTR_INTS}, {NULL}};

/* Before opset 10, starts/ends/axes are attributes. */
static int prepare_slice(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_form(n, 10, slice_attrs, no_attrs, err);
}

typedef struct slice_plan {
  int64_t start[TS_MAX_RANK], step[TS_MAX_RANK], count[TS_MAX_RANK];
} slice_plan;

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* Clamps one axis's bounds like numpy (and the ONNX reference
 * implementation) do: negative values count from the end, out-of-range
 * bounds clamp, and the element count is ceil((end - start) / step) or 0.
 * With a negative step a start still below 0 selects nothing (numpy's
 * x[-10:-10:-1] is empty), where onnxruntime would clamp it to 0. */
static void slice_axis(int64_t d, int64_t s, int64_t e, int64_t step,
                       int64_t *start, int64_t *count) {
  if (s < 0) s += d;
  if (e < 0) e += d;
  uint64_t span, astep;
  if (step > 0) {
    s = clamp64(s, 0, d);
    e = clamp64(e, 0, d);
    span = e > s ? (uint64_t)(e - s) : 0;
    astep = (uint64_t)step;
  } else {
    s = clamp64(s, -1, d - 1);
    e = clamp64(e, -1, d - 1);
    span = s > e ? (uint64_t)(s - e) : 0;
    astep = 0u - (uint64_t)step;
  }
  *start = s;
  *count = span ? (int64_t)((span - 1) / astep + 1) : 0;
}

static int slice_make_plan(const ts_node *n, const ts_tensor *const *in,
                           slice_plan *p, ts_err *err) {
  const ts_tensor *x = in[0];
  int64_t v[4][TS_MAX_RANK]; /* starts, ends, axes, steps */
  static const char *const names[4] = {"starts", "ends", "axes", "steps"};
  size_t count[4];
  bool present[4], seen[TS_MAX_RANK] = {false};
  for (int i = 0; i < 4; i++) {
    int rc = int_list(n, in, names[i], i + 1, i == 3 ? 0 : 10, v[i],
                      TS_MAX_RANK, &count[i], &present[i], err);
    if (rc) return rc;
    if (i < 2 && !present[i])
      return ts_kernel_fail(n, err, TS_EINVAL, "'%s' is missing", names[i]);
    if (present[i] && count[i] != count[0])
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "'%s' has %zu values, 'starts' has %zu", names[i],
                            count[i], count[0]);
  }
  for (int k = 0; k < x->rank; k++) {
    p->start[k] = 0;
    p->step[k] = 1;
    p->count[k] = x->dims[k];
  }
  for (size_t i = 0; i < count[0]; i++) {
    int a;
    int64_t step = present[3] ? v[3][i] : 1;
    int rc = ts_kernel_axis(n, present[2] ? v[2][i] : (int64_t)i, x->rank,
                            "axis", &a, err);
    if (rc) return rc;
    if (seen[a])
      return ts_kernel_fail(n, err, TS_EINVAL, "axis %d is repeated", a);
    if (step == 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "step for axis %d is 0", a);
    seen[a] = true;
    p->step[a] = step;
    slice_axis(x->dims[a], v[0][i], v[1][i], step, &p->start[a],
               &p->count[a]);
  }
  return TS_OK;
}

static int infer_slice(const ts_node *n, const ts_tensor *const *in,
                       ts_tensor *out, ts_err *err) {
  slice_plan p;
  size_t esz;
  int rc = elem_size(n, in[0], &esz, err);
  if (!rc) rc = slice_make_plan(n, in, &p, err);
  if (rc) return rc;
  return ts_tensor_set_shape(out, in[0]->dtype, p.count, in[0]->rank, err);
}

static int run_slice(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const ts_tensor *x = in[0];
  slice_plan p;
  int64_t own[TS_MAX_RANK], stride[TS_MAX_RANK], base = 0;
  (void)ctx;
  int rc = slice_make_plan(n, in, &p, err);
  if (rc) return rc;
  if (ts_tensor_numel(out) == 0) return TS_OK;
  contiguous_strides(x, own);
  for (int k = 0; k < x->rank; k++) {
    base += p.start[k] * own[k];
    stride[k] = p.step[k] * own[k];
  }
  size_t esz = ts_dtype_size(x->dtype);
  strided_copy(out->data, (const char *)x->data + base * (int64_t)esz,
               x->rank, p.count, stride, esz);
  return TS_OK;
}

const ts_op ts_op_Slice = {"", "Slice", 1, 5, 1, 1, prepare_slice, NULL,
                           infer_slice, run_slice};

/* ---- Split -------------------------------------------------------------- */

static const ts_attr_spec split_attrs[] = {
    {"axis", ATTR_INT}, {"split", ATTR_INTS}, {NULL}};

/* Before opset 13, 'split' is an attribute; from 13 an input. */
static int prepare_split(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  if (n->n_outputs > MAX_SPLIT)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "%d outputs, at most %d supported", n->n_outputs,
                          MAX_SPLIT);
  return ts_kernel_check_form(n, 13, split_attrs, axis_attrs, err);
}

/* The size of each output along *axis. */
static int split_sizes(const ts_node *n, const ts_tensor *const *in,
                       int *axis, int64_t *sizes, ts_err *err) {
  const ts_tensor *x = in[0];
  size_t count, esz;
  bool present;
  int rc = elem_size(n, x, &esz, err);
  if (!rc)
    rc = ts_kernel_axis(n, ts_attr_int(n, "axis", 0), x->rank,
                        "attribute 'axis'", axis, err);
  if (!rc)
    rc = int_list(n, in, "split", 1, 13, sizes, MAX_SPLIT, &count, &present,
                  err);
  if (rc) return rc;
  int64_t dim = x->dims[*axis], sum = 0;
  if (!present) {
    if (dim % n->n_outputs)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "dim %d of size %lld does not split into %d "
                            "equal parts",
                            *axis, (long long)dim, n->n_outputs);
    for (int k = 0; k < n->n_outputs; k++) sizes[k] = dim / n->n_outputs;
    return TS_OK;
  }
  if (count != (size_t)n->n_outputs)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "'split' has %zu values for %d outputs", count,
                          n->n_outputs);
  for (size_t k = 0; k < count; k++) {
    if (sizes[k] < 0 || sizes[k] > dim - sum)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "'split' sizes do not add up to dim %d of size "
                            "%lld",
                            *axis, (long long)dim);
    sum += sizes[k];
  }
  if (sum != dim)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "'split' sizes add up to %lld, dim %d is %lld",
                          (long long)sum, *axis, (long long)dim);
  return TS_OK;
}

static int infer_split(const ts_node *n, const ts_tensor *const *in,
                       ts_tensor *out, ts_err *err) {
  int64_t sizes[MAX_SPLIT], dims[TS_MAX_RANK];
  int axis;
  int rc = split_sizes(n, in, &axis, sizes, err);
  if (rc) return rc;
  memcpy(dims, in[0]->dims, sizeof dims);
  for (int k = 0; k < n->n_outputs && !rc; k++) {
    dims[axis] = sizes[k];
    rc = ts_tensor_set_shape(&out[k], in[0]->dtype, dims, in[0]->rank, err);
  }
  return rc;
}

static int run_split(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const ts_tensor *x = in[0];
  int64_t sizes[MAX_SPLIT];
  int axis;
  (void)ctx;
  int rc = split_sizes(n, in, &axis, sizes, err);
  if (rc) return rc;
  int64_t outer = dims_product(x->dims, 0, axis);
  size_t inner = (size_t)dims_product(x->dims, axis + 1, x->rank) *
                 ts_dtype_size(x->dtype);
  size_t row = (size_t)x->dims[axis] * inner, at = 0;
  for (int k = 0; k < n->n_outputs; k++) {
    size_t block = (size_t)sizes[k] * inner;
    if (out[k].data && block)
      for (int64_t r = 0; r < outer; r++)
        memcpy((char *)out[k].data + (size_t)r * block,
               (const char *)x->data + (size_t)r * row + at, block);
    at += block;
  }
  return TS_OK;
}

const ts_op ts_op_Split = {"", "Split", 1, 2, 1, MAX_SPLIT, prepare_split,
                           NULL, infer_split, run_split};

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

static void release_cos(ts_node *n) {
  ts_tensor *v = n->params;
  if (v) ts_tensor_free(v);
  free(v);
  n->params = NULL;
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
                                     prepare_cos, release_cos, infer_cos,
                                     run_cos};

/* ---- Range -------------------------------------------------------------- */

/* The slot of a numeric dtype (Range and Reduce* take those); else -1. */
static int num_slot(ts_dtype t) {
  int s = ts_kernel_slot(t);
  return s < TS_N_NUM_SLOTS ? s : -1;
}

/* Range's element count from start, limit, delta (as double for floating
 * types, exactly for integers). */
static int range_count(const ts_node *n, const ts_tensor *const *in,
                       int64_t *count, ts_err *err) {
  static const char *const names[3] = {"start", "limit", "delta"};
  ts_dtype t = in[0]->dtype;
  int slot = num_slot(t);
  if (slot < 0)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported", ts_dtype_name(t));
  for (int i = 0; i < 3; i++) {
    if (in[i]->dtype != t || ts_tensor_numel(in[i]) != 1)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input '%s' must be one %s, not %lld of %s",
                            names[i], ts_dtype_name(t),
                            (long long)ts_tensor_numel(in[i]),
                            ts_dtype_name(in[i]->dtype));
    if (!in[i]->data) return TS_EAGAIN;
  }
  double c;
  if (slot == TS_SLOT_f32 || slot == TS_SLOT_f64) {
    double v[3];
    for (int i = 0; i < 3; i++)
      v[i] = slot == TS_SLOT_f32 ? *(const float *)in[i]->data
                           : *(const double *)in[i]->data;
    if (v[2] == 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "'delta' is 0");
    c = ceil((v[1] - v[0]) / v[2]);
  } else {
    __int128 v[3];
    for (int i = 0; i < 3; i++)
      v[i] = slot == TS_SLOT_i32 ? *(const int32_t *)in[i]->data
                           : *(const int64_t *)in[i]->data;
    if (v[2] == 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "'delta' is 0");
    __int128 d = v[1] - v[0], q = d / v[2];
    if (q * v[2] != d && (d > 0) == (v[2] > 0)) q++; /* ceil */
    c = (double)q;
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
  switch (num_slot(in[0]->dtype)) {
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

const ts_op ts_op_Range = {"", "Range", 3, 3, 1, 1, prepare_plain, NULL,
                           infer_range, run_range};

/* ---- Tile --------------------------------------------------------------- */

static int tile_repeats(const ts_node *n, const ts_tensor *const *in,
                        int64_t *reps, ts_err *err) {
  size_t count, esz;
  int rc = elem_size(n, in[0], &esz, err);
  if (!rc)
    rc = ts_kernel_ints(n, in[1], "repeats", reps, TS_MAX_RANK, &count, err);
  if (rc) return rc;
  if (count != (size_t)in[0]->rank)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "'repeats' has %zu values for rank %d", count,
                          in[0]->rank);
  for (size_t k = 0; k < count; k++)
    if (reps[k] < 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "repeat %zu is %lld", k,
                            (long long)reps[k]);
  return TS_OK;
}

static int infer_tile(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  int64_t reps[TS_MAX_RANK], dims[TS_MAX_RANK];
  int rc = tile_repeats(n, in, reps, err);
  if (rc) return rc;
  for (int k = 0; k < in[0]->rank; k++) {
    if (reps[k] && in[0]->dims[k] > INT64_MAX / reps[k])
      return ts_kernel_fail(n, err, TS_EINVAL, "dim %d overflows", k);
    dims[k] = in[0]->dims[k] * reps[k];
  }
  return ts_tensor_set_shape(out, in[0]->dtype, dims, in[0]->rank, err);
}

/* The output, dim k of size reps[k] * d[k], is the 2*rank-dim view
 * [reps[0], d[0], reps[1], d[1], ...] of the input with stride 0 on the
 * repeat dims: one strided copy. */
static int run_tile(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  int64_t reps[TS_MAX_RANK], own[TS_MAX_RANK];
  int64_t dims[2 * TS_MAX_RANK], stride[2 * TS_MAX_RANK];
  (void)ctx;
  int rc = tile_repeats(n, in, reps, err);
  if (rc) return rc;
  if (ts_tensor_numel(out) == 0) return TS_OK;
  contiguous_strides(in[0], own);
  for (int k = 0; k < in[0]->rank; k++) {
    dims[2 * k] = reps[k];
    stride[2 * k] = 0;
    dims[2 * k + 1] = in[0]->dims[k];
    stride[2 * k + 1] = own[k];
  }
  strided_copy(out->data, in[0]->data, 2 * in[0]->rank, dims, stride,
               ts_dtype_size(in[0]->dtype));
  return TS_OK;
}

const ts_op ts_op_Tile = {"", "Tile", 2, 2, 1, 1, prepare_plain, NULL,
                          infer_tile, run_tile};

/* ---- Reduce* ------------------------------------------------------------ */

/*
 * A reduction walks the input once, in memory order, accumulating into one
 * accumulator per output element (double for floating types, int64 for
 * integers, from scratch memory). Input dims of size 1 are dropped and
 * neighbouring dims that are both reduced or both kept are merged; each
 * input row (the last merged dim) then either folds into one accumulator
 * (reduced) or adds element-wise into a row of accumulators (kept).
 */
typedef struct reduce_geom {
  int m;                        /* merged dims, >= 1 */
  int64_t dims[TS_MAX_RANK];
  int64_t ostride[TS_MAX_RANK]; /* accumulator stride; 0 on reduced dims */
  bool inner_reduced;
  int64_t rows;                 /* product of dims[0..m-1) */
  int64_t count;                /* input elements per output element */
} reduce_geom;

#define LOW_f32 (-INFINITY)
#define LOW_f64 (-INFINITY)
#define LOW_i32 INT32_MIN
#define LOW_i64 INT64_MIN
#define HIGH_f32 INFINITY
#define HIGH_f64 INFINITY
#define HIGH_i32 INT32_MAX
#define HIGH_i64 INT64_MAX
#define ACC_f32 double
#define ACC_f64 double
#define ACC_i32 int64_t
#define ACC_i64 int64_t
/* The mean of no elements. */
#define EMPTY_MEAN_f32 NAN
#define EMPTY_MEAN_f64 NAN
#define EMPTY_MEAN_i32 0
#define EMPTY_MEAN_i64 0

/* Independent partial accumulators per reduced row: they break the
 * dependency chain of one serial fold (the order of a float sum changes,
 * within double precision). */
#define LANES 4

/* reduce_<kind>_<slot>: initialises acc[0..n_out) and folds the input in. */
#define REDUCE_FN(kind, fold, ident, s, T)                                     \
  static void reduce_##kind##_##s(const void *xv, void *accv, int64_t n_out,  \
                                  const reduce_geom *g) {                     \
    typedef ACC_##s ACC;                                                       \
    const T *xp = xv;                                                          \
    ACC *a = accv;                                                             \
    for (int64_t i = 0; i < n_out; i++) a[i] = (ACC)(ident);                   \
    int64_t inner = g->dims[g->m - 1], idx[TS_MAX_RANK] = {0}, off = 0;        \
    for (int64_t r = 0; r < g->rows; r++, xp += inner) {                       \
      if (g->inner_reduced) { /* LANES partial folds, then combined */       \
        ACC part[LANES];                                                       \
        int64_t i = 0;                                                         \
        for (int l = 0; l < LANES; l++) part[l] = l ? (ACC)(ident) : a[off];   \
        for (; i + LANES <= inner; i += LANES)                                 \
          for (int l = 0; l < LANES; l++) {                                    \
            T x = xp[i + l];                                                   \
            ACC acc = part[l];                                                 \
            part[l] = fold;                                                    \
          }                                                                    \
        for (; i < inner; i++) {                                               \
          T x = xp[i];                                                         \
          ACC acc = part[0];                                                   \
          part[0] = fold;                                                      \
        }                                                                      \
        for (int l = 1; l < LANES; l++) {                                      \
          ACC x = part[l], acc = part[0];                                      \
          part[0] = fold;                                                      \
        }                                                                      \
        a[off] = part[0];                                                      \
      } else {                                                                 \
        ACC *row = a + off;                                                    \
        for (int64_t i = 0; i < inner; i++) {                                  \
          T x = xp[i];                                                         \
          ACC acc = row[i];                                                    \
          row[i] = fold;                                                       \
        }                                                                      \
      }                                                                        \
      for (int k = g->m - 2; k >= 0; k--) {                                    \
        off += g->ostride[k];                                                  \
        if (++idx[k] < g->dims[k]) break;                                      \
        off -= g->ostride[k] * g->dims[k];                                     \
        idx[k] = 0;                                                            \
      }                                                                        \
    }                                                                          \
  }
/* One line per kind: its fold of accumulator acc with element x, and its
 * identity for slot s. NaN propagates through max and min. */
#define REDUCE_CELL_sum(s, T, D) REDUCE_FN(sum, TS_WRAP(+, acc, x), 0, s, T)
#define REDUCE_CELL_prod(s, T, D) REDUCE_FN(prod, TS_WRAP(*, acc, x), 1, s, T)
#define REDUCE_CELL_max(s, T, D) \
  REDUCE_FN(max, (x != x || x > acc) ? (ACC)x : acc, LOW_##s, s, T)
#define REDUCE_CELL_min(s, T, D) \
  REDUCE_FN(min, (x != x || x < acc) ? (ACC)x : acc, HIGH_##s, s, T)
TS_KERNEL_NUM_SLOTS(REDUCE_CELL_sum)
TS_KERNEL_NUM_SLOTS(REDUCE_CELL_prod)
TS_KERNEL_NUM_SLOTS(REDUCE_CELL_max)
TS_KERNEL_NUM_SLOTS(REDUCE_CELL_min)

/* Writes the accumulators to the output type; `mean` divides by count. */
#define FINISH_FN(s, T, D)                                                  \
  static void finish_##s(const void *accv, void *outv, int64_t n, bool mean, \
                         int64_t count) {                                   \
    const ACC_##s *a = accv;                                                \
    T *o = outv;                                                            \
    for (int64_t i = 0; i < n; i++)                                         \
      o[i] = (T)(mean ? (count ? a[i] / (ACC_##s)count : EMPTY_MEAN_##s)    \
                      : a[i]);                                              \
  }
TS_KERNEL_NUM_SLOTS(FINISH_FN)

typedef void (*reduce_fn)(const void *x, void *acc, int64_t n_out,
                          const reduce_geom *g);
typedef void (*finish_fn)(const void *acc, void *out, int64_t n, bool mean,
                          int64_t count);

static const finish_fn finish_table[TS_N_NUM_SLOTS] = {
#define X(s, T, D) [TS_SLOT_##s] = finish_##s,
    TS_KERNEL_NUM_SLOTS(X)
#undef X
};

typedef struct reduce_desc {
  reduce_fn fn[TS_N_NUM_SLOTS];
  bool mean;
} reduce_desc;

#define REDUCE_TABLE(kind)                 \
  {[TS_SLOT_f32] = reduce_##kind##_f32,    \
   [TS_SLOT_f64] = reduce_##kind##_f64,    \
   [TS_SLOT_i32] = reduce_##kind##_i32,    \
   [TS_SLOT_i64] = reduce_##kind##_i64}
/* X(op, kind, mean) */
#define REDUCE_OPS(X)               \
  X(ReduceSum, sum, false)          \
  X(ReduceMean, sum, true)          \
  X(ReduceMax, max, false)          \
  X(ReduceMin, min, false)          \
  X(ReduceProd, prod, false)

static const ts_attr_spec reduce_attrs[] = {
    {"axes", ATTR_INTS}, {"keepdims", ATTR_INT}, {NULL}};
static const ts_attr_spec reduce_sum13_attrs[] = {
    {"keepdims", ATTR_INT}, {"noop_with_empty_axes", ATTR_INT}, {NULL}};

/* The opset from which axes is an input: ReduceSum's is 13 (it also gains
 * noop_with_empty_axes then); the others keep the attribute through opset
 * 17, the newest the loader takes. */
static int64_t axes_input_from(const ts_node *n) {
  return strcmp(n->op_type, "ReduceSum") == 0 ? 13 : INT64_MAX;
}

static int prepare_reduce(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_form(n, axes_input_from(n), reduce_attrs,
                              reduce_sum13_attrs, err);
}

/* Which axes of in[0] are reduced (mask) and the output dims. *noop: the
 * output is the input (empty axes with noop_with_empty_axes). */
static int reduce_shape(const ts_node *n, const ts_tensor *const *in,
                        bool *mask, int64_t *dims, int *rank, bool *noop,
                        ts_err *err) {
  const ts_tensor *x = in[0];
  int64_t axes[TS_MAX_RANK];
  size_t count;
  bool present;
  if (num_slot(x->dtype) < 0)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(x->dtype));
  int rc = int_list(n, in, "axes", 1, axes_input_from(n), axes,
                    TS_MAX_RANK, &count, &present, err);
  if (rc) return rc;
  *noop = count == 0 && ts_attr_int(n, "noop_with_empty_axes", 0);
  if (count == 0)
    for (int k = 0; k < x->rank; k++) mask[k] = !*noop;
  else if ((rc = axes_mask(n, axes, count, x->rank, mask, err)))
    return rc;
  bool keep = ts_attr_int(n, "keepdims", 1) != 0;
  *rank = 0;
  for (int k = 0; k < x->rank; k++)
    if (!mask[k])
      dims[(*rank)++] = x->dims[k];
    else if (keep)
      dims[(*rank)++] = 1;
  return TS_OK;
}

static int infer_reduce(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_err *err) {
  bool mask[TS_MAX_RANK], noop;
  int64_t dims[TS_MAX_RANK];
  int rank;
  int rc = reduce_shape(n, in, mask, dims, &rank, &noop, err);
  if (rc) return rc;
  return ts_tensor_set_shape(out, in[0]->dtype, dims, rank, err);
}

static void reduce_plan(const ts_tensor *x, const bool *mask,
                        reduce_geom *g) {
  int64_t ostride[TS_MAX_RANK], s = 1;
  for (int k = x->rank - 1; k >= 0; k--) { /* strides over kept dims */
    ostride[k] = mask[k] ? 0 : s;
    if (!mask[k]) s *= x->dims[k];
  }
  g->m = 0;
  g->count = 1;
  bool last = false;
  for (int k = 0; k < x->rank; k++) {
    if (mask[k]) g->count *= x->dims[k];
    if (x->dims[k] == 1) continue;
    if (g->m > 0 && mask[k] == last) {
      g->dims[g->m - 1] *= x->dims[k];
    } else {
      g->dims[g->m] = x->dims[k];
      g->m++;
    }
    g->ostride[g->m - 1] = ostride[k];
    last = mask[k];
  }
  if (g->m == 0) { /* a single element */
    g->dims[0] = 1;
    g->ostride[0] = 1;
    g->m = 1;
  }
  g->inner_reduced = last;
  g->rows = dims_product(g->dims, 0, g->m - 1);
}

static int reduce_run(const reduce_desc *d, const ts_node *n,
                      const ts_tensor *const *in, ts_tensor *out,
                      ts_kctx *ctx, ts_err *err) {
  const ts_tensor *x = in[0];
  bool mask[TS_MAX_RANK], noop;
  int64_t dims[TS_MAX_RANK];
  int rank;
  reduce_geom g;
  int rc = reduce_shape(n, in, mask, dims, &rank, &noop, err);
  if (rc) return rc;
  if (noop) return copy_through(x, out);
  int64_t n_out = ts_tensor_numel(out);
  if (n_out == 0) return TS_OK;
  void *acc = ts_kctx_scratch(ctx, (size_t)n_out * 8);
  if (!acc)
    return ts_kernel_fail(n, err, TS_ENOMEM,
                          "no scratch memory for %lld accumulators",
                          (long long)n_out);
  int slot = num_slot(x->dtype);
  reduce_plan(x, mask, &g);
  if (ts_tensor_numel(x) == 0) g.rows = 0; /* identities only */
  d->fn[slot](x->data, acc, n_out, &g);
  finish_table[slot](acc, out->data, n_out, d->mean, g.count);
  return TS_OK;
}

#define X(op, kind, mean_)                                                   \
  static const reduce_desc desc_##op = {REDUCE_TABLE(kind), mean_};          \
  static int run_##op(const ts_node *n, const ts_tensor *const *in,          \
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {           \
    return reduce_run(&desc_##op, n, in, out, ctx, err);                     \
  }                                                                          \
  const ts_op ts_op_##op = {"", #op, 1, 2, 1, 1, prepare_reduce, NULL,       \
                            infer_reduce, run_##op};
REDUCE_OPS(X)
#undef X

/* ---- LayerNormalization (opset 17) -------------------------------------- */

static const ts_attr_spec layernorm_attrs[] = {
    {"axis", ATTR_INT}, {"epsilon", ATTR_FLOAT}, {"stash_type", ATTR_INT},
    {NULL}};

static int prepare_layernorm(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_kernel_check_attrs(n, layernorm_attrs, err);
  if (rc) return rc;
  if (ts_attr_int(n, "stash_type", 1) != 1)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "attribute 'stash_type' = %lld is not supported "
                          "(only 1, float)",
                          (long long)ts_attr_int(n, "stash_type", 1));
  if (!(ts_attr_float(n, "epsilon", 1e-5f) >= 0))
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'epsilon' must be >= 0");
  return TS_OK;
}

/* Normalised rows of `cols` elements each; Scale and B each either match
 * the normalised shape (right-aligned, extra leading dims of size 1) or
 * hold one element (*step 0). */
static int layernorm_geom(const ts_node *n, const ts_tensor *const *in,
                          int *axis, int64_t *rows, int64_t *cols,
                          int64_t *steps, ts_err *err) {
  static const char *const names[3] = {"X", "Scale", "B"};
  const ts_tensor *x = in[0];
  if (x->dtype != TS_DTYPE_FLOAT && x->dtype != TS_DTYPE_DOUBLE)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(x->dtype));
  int rc = ts_kernel_axis(n, ts_attr_int(n, "axis", -1), x->rank,
                          "attribute 'axis'", axis, err);
  if (rc) return rc;
  *rows = dims_product(x->dims, 0, *axis);
  *cols = dims_product(x->dims, *axis, x->rank);
  for (int i = 1; i < 3; i++) {
    const ts_tensor *t = n->n_inputs > i ? in[i] : NULL;
    steps[i] = 1;
    if (!t && i == 1)
      return ts_kernel_fail(n, err, TS_EINVAL, "input 'Scale' is missing");
    if (!t) continue;
    bool ok = t->dtype == x->dtype;
    if (ts_tensor_numel(t) == 1) {
      steps[i] = 0;
    } else {
      for (int k = 0; k < t->rank && ok; k++) {
        int kx = x->rank - t->rank + k;
        ok = kx >= *axis ? t->dims[k] == x->dims[kx] : t->dims[k] == 1;
      }
      ok = ok && ts_tensor_numel(t) == *cols;
    }
    if (!ok) {
      char s[96], sx[96];
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input '%s' (%s %s) does not match the normalized "
                            "dims of %s %s from axis %d",
                            names[i], ts_dtype_name(t->dtype),
                            ts_shape_str(t->dims, t->rank, s, sizeof s),
                            names[0],
                            ts_shape_str(x->dims, x->rank, sx, sizeof sx),
                            *axis);
    }
  }
  return TS_OK;
}

static int infer_layernorm(const ts_node *n, const ts_tensor *const *in,
                           ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0];
  int axis;
  int64_t rows, cols, steps[3], dims[TS_MAX_RANK];
  int rc = layernorm_geom(n, in, &axis, &rows, &cols, steps, err);
  if (!rc) rc = ts_tensor_set_shape(&out[0], x->dtype, x->dims, x->rank, err);
  if (rc) return rc;
  memcpy(dims, x->dims, sizeof dims);
  for (int k = axis; k < x->rank; k++) dims[k] = 1;
  for (int i = 1; i < n->n_outputs && !rc; i++) /* Mean, InvStdDev */
    rc = ts_tensor_set_shape(&out[i], TS_DTYPE_FLOAT, dims, x->rank, err);
  return rc;
}

/* Statistics in one pass over each row, in double: sums of d = x - x[0]
 * and of d * d in LANES partial sums (vectorised), then mean = x[0] +
 * E[d] and var = E[d^2] - E[d]^2. Shifting by a value of the row keeps
 * E[d]^2 of the order of the variance (up to a factor of the row length
 * for an outlying x[0]), so the subtraction loses nothing that float
 * results could show, unlike E[x^2] - E[x]^2 for rows far from 0. The
 * normalisation itself is in the tensor's type, centred the same way. */
#define LAYERNORM_FN(s, T)                                                    \
  static void layernorm_##s(const T *x, const T *scale, const T *bias,       \
                            T *y, float *mean_out, float *inv_out,           \
                            int64_t rows, int64_t cols, const int64_t *step,  \
                            double eps) {                                     \
    for (int64_t r = 0; r < rows; r++, x += cols, y += cols) {               \
      double sum[LANES] = {0}, sq[LANES] = {0};                              \
      const double shift = cols ? (double)x[0] : 0;                          \
      int64_t i = 0, tail = cols - cols % LANES;                             \
      for (; i < tail; i += LANES)                                           \
        for (int l = 0; l < LANES; l++) {                                    \
          const double d = (double)x[i + l] - shift;                         \
          sum[l] += d;                                                       \
          sq[l] += d * d;                                                    \
        }                                                                    \
      for (; i < cols; i++) {                                                \
        const double d = (double)x[i] - shift;                               \
        sum[0] += d;                                                         \
        sq[0] += d * d;                                                      \
      }                                                                      \
      for (int l = 1; l < LANES; l++) sum[0] += sum[l], sq[0] += sq[l];      \
      const double md = cols ? sum[0] / (double)cols : 0;                    \
      double var = cols ? sq[0] / (double)cols - md * md : 0;                \
      if (var < 0) var = 0; /* rounding of a constant row */                 \
      const double mean = shift + md, inv = 1 / sqrt(var + eps);             \
      /* x - mean as (x - x[0]) - E[d]: both terms are of the order of the \
       * spread, so a row far from 0 keeps its precision. */                \
      const T x0 = cols ? x[0] : 0, m = (T)md, s = (T)inv;                   \
      if (step[1] && bias && step[2]) /* the common case, vectorisable */    \
        for (i = 0; i < cols; i++)                                           \
          y[i] = ((x[i] - x0) - m) * s * scale[i] + bias[i];                 \
      else                                                                   \
        for (i = 0; i < cols; i++)                                           \
          y[i] = ((x[i] - x0) - m) * s * scale[i * step[1]] +                \
                 (bias ? bias[i * step[2]] : 0);                             \
      if (mean_out) mean_out[r] = (float)mean;                               \
      if (inv_out) inv_out[r] = (float)inv;                                  \
    }                                                                        \
  }
LAYERNORM_FN(f32, float)
LAYERNORM_FN(f64, double)

static int run_layernorm(const ts_node *n, const ts_tensor *const *in,
                         ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  int axis;
  int64_t rows, cols, steps[3];
  (void)ctx;
  int rc = layernorm_geom(n, in, &axis, &rows, &cols, steps, err);
  if (rc) return rc;
  const ts_tensor *bias = n->n_inputs > 2 ? in[2] : NULL;
  float *stats[2] = {NULL, NULL};
  for (int i = 1; i < n->n_outputs; i++) stats[i - 1] = out[i].data;
  double eps = ts_attr_float(n, "epsilon", 1e-5f);
  if (in[0]->dtype == TS_DTYPE_FLOAT)
    layernorm_f32(in[0]->data, in[1]->data, bias ? bias->data : NULL,
                  out[0].data, stats[0], stats[1], rows, cols, steps, eps);
  else
    layernorm_f64(in[0]->data, in[1]->data, bias ? bias->data : NULL,
                  out[0].data, stats[0], stats[1], rows, cols, steps, eps);
  return TS_OK;
}

const ts_op ts_op_LayerNormalization = {"", "LayerNormalization", 2, 3, 1, 3,
                                        prepare_layernorm, NULL,
                                        infer_layernorm, run_layernorm};

/* Every op of list_transformer.h is defined above (and nothing else). */
#define COUNT(d, op, sym) +1
#define COUNT3(a, b, c) +1
_Static_assert(0 TS_OPS_TRANSFORMER(COUNT) == 12 + 0 REDUCE_OPS(COUNT3),
               "list_transformer.h and transformer.c disagree");
