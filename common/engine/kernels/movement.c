/*
 * movement.c - the data-movement kernels of the transformer family:
 * Transpose, Gather, Concat, Slice, Split and Tile (list in
 * list_transformer.h; what the family shares: transformer_int.h).
 * Transpose, Slice and Tile are one strided copy (strided_copy) over a view
 * of the input; Concat, Split and Gather copy contiguous blocks.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "list_transformer.h"
#include "transformer_int.h"

/* Split into more outputs than this is not supported. */
#define MAX_SPLIT 256

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


static void contiguous_strides(const ts_tensor *t, int64_t *stride) {
  int64_t s = 1;
  for (int k = t->rank - 1; k >= 0; k--) {
    stride[k] = s;
    s *= t->dims[k];
  }
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
  int64_t rows = ts_transformer_dims_product(dims, 0, m > 0 ? m - 1 : 0);
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
  int64_t outer = ts_transformer_dims_product(x->dims, 0, axis);
  size_t block =
      (size_t)ts_transformer_dims_product(x->dims, axis + 1, x->rank) *
      ts_dtype_size(x->dtype);
  if (ts_tensor_numel(out) == 0) return TS_OK;
  for (int64_t i = 0; i < count; i++) {
    int64_t v = ts_kernel_int_at(idx, i);
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
      int64_t v = ts_kernel_int_at(idx, i);
      memcpy(o, src + (size_t)(v < 0 ? v + dim : v) * block, block);
    }
  }
  return TS_OK;
}

const ts_op ts_op_Gather = {"", "Gather", 2, 2, 1, 1, prepare_axis, NULL,
                            infer_gather, run_gather};


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
  int64_t outer = ts_transformer_dims_product(out->dims, 0, axis);
  size_t inner =
      (size_t)ts_transformer_dims_product(out->dims, axis + 1, out->rank) *
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
  return ts_kernel_check_form(n, 10, slice_attrs, ts_transformer_no_attrs, err);
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
    int rc =
        ts_transformer_int_list(n, in, names[i], i + 1, i == 3 ? 0 : 10, v[i],
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
    rc = ts_transformer_int_list(n, in, "split", 1, 13, sizes, MAX_SPLIT,
                                 &count, &present, err);
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
  int64_t outer = ts_transformer_dims_product(x->dims, 0, axis);
  size_t inner =
      (size_t)ts_transformer_dims_product(x->dims, axis + 1, x->rank) *
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

const ts_op ts_op_Tile = {
    "",   "Tile",     2,       2, 1, 1, ts_transformer_prepare_plain,
    NULL, infer_tile, run_tile};
