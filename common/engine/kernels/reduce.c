/*
 * reduce.c - the reductions of the transformer family: ReduceSum,
 * ReduceMean, ReduceMax, ReduceMin, ReduceProd and LayerNormalization (list
 * in list_transformer.h; what the family shares: transformer_int.h). Only
 * these use scratch memory.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "list_transformer.h"
#include "transformer_int.h"

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
  if (ts_transformer_num_slot(x->dtype) < 0)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(x->dtype));
  int rc = ts_transformer_int_list(n, in, "axes", 1, axes_input_from(n), axes,
                    TS_MAX_RANK, &count, &present, err);
  if (rc) return rc;
  *noop = count == 0 && ts_attr_int(n, "noop_with_empty_axes", 0);
  if (count == 0)
    for (int k = 0; k < x->rank; k++) mask[k] = !*noop;
  else if ((rc = ts_transformer_axes_mask(n, axes, count, x->rank, mask, err)))
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
  g->rows = ts_transformer_dims_product(g->dims, 0, g->m - 1);
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
  if (noop) return ts_transformer_copy_through(x, out);
  int64_t n_out = ts_tensor_numel(out);
  if (n_out == 0) return TS_OK;
  void *acc = ts_kctx_scratch(ctx, (size_t)n_out * 8);
  if (!acc)
    return ts_kernel_fail(n, err, TS_ENOMEM,
                          "no scratch memory for %lld accumulators",
                          (long long)n_out);
  int slot = ts_transformer_num_slot(x->dtype);
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
  *rows = ts_transformer_dims_product(x->dims, 0, *axis);
  *cols = ts_transformer_dims_product(x->dims, *axis, x->rank);
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

/* Every op of list_transformer.h is defined in shape.c (5 ops), movement.c
 * (6) or here (and nothing else). */
#define COUNT(d, op, sym) +1
#define COUNT3(a, b, c) +1
_Static_assert(0 TS_OPS_TRANSFORMER(COUNT) ==
                   5 + 6 + 1 /* LayerNormalization */ + 0 REDUCE_OPS(COUNT3),
               "list_transformer.h and its kernel files disagree");
