/*
 * pool.c - MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool (list
 * in list_cnn.h; design, invariants and the semantics chosen where ONNX
 * leaves room in cnn_int.h).
 */
#include <math.h>

#include "cnn_int.h"

static const ts_attr_spec max_pool_attrs[] = {
    {"auto_pad", ATTR_STRING}, {"ceil_mode", ATTR_INT},
    {"dilations", ATTR_INTS},  {"kernel_shape", ATTR_INTS},
    {"pads", ATTR_INTS},       {"storage_order", ATTR_INT},
    {"strides", ATTR_INTS},    {NULL}};
static const ts_attr_spec average_pool_attrs[] = {
    {"auto_pad", ATTR_STRING},       {"ceil_mode", ATTR_INT},
    {"count_include_pad", ATTR_INT}, {"dilations", ATTR_INTS},
    {"kernel_shape", ATTR_INTS},     {"pads", ATTR_INTS},
    {"strides", ATTR_INTS},          {NULL}};

/* ------------------------------------------------------------------------ */
/* MaxPool, AveragePool                                                     */
/* ------------------------------------------------------------------------ */

static int pool_prepare(ts_node *n, const ts_attr_spec *known, ts_err *err) {
  window_attrs a;
  int rc = ts_cnn_window_parse(n, known, true, &a, err);
  if (rc < 0) return rc;
  a.want_indices = ts_cnn_output_wanted(n, 1);
  if (a.want_indices && ts_attr_int(n, "storage_order", 0) != 0)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'storage_order' = %lld with output Indices is not "
        "supported (only 0, row-major)",
        (long long)ts_attr_int(n, "storage_order", 0));
  return ts_cnn_params_store(n, &a, sizeof a, err);
}

static int max_pool_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return pool_prepare(n, max_pool_attrs, err);
}

static int average_pool_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return pool_prepare(n, average_pool_attrs, err);
}

static int pool_resolve(const ts_node *n, const ts_tensor *x, window *w,
                        ts_err *err) {
  const window_attrs *a = n->params;
  int rc;
  if ((rc = ts_cnn_check_float(n, x, 0, "X", err)) < 0 ||
      (rc = ts_cnn_check_rank(n, x, 0, "X", 3, 2 + SP_MAX, err)) < 0)
    return rc;
  const int nsp = x->rank - 2;
  if (a->n_kernel != nsp)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'kernel_shape' has %d values; input X has %d "
        "spatial dims",
        a->n_kernel, nsp);
  return ts_cnn_window_resolve(n, a, x->dims + 2, nsp, a->kernel, w, err);
}

static int pool_infer(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  window w;
  int rc = pool_resolve(n, in[0], &w, err);
  if (rc < 0) return rc;
  const int rank = in[0]->rank, nsp = rank - 2;
  int64_t dims[2 + SP_MAX] = {in[0]->dims[0], in[0]->dims[1]};
  for (int i = 0; i < nsp; i++) dims[2 + i] = w.out[SP_MAX - nsp + i];
  if ((rc = ts_cnn_set_shape(n, &out[0], TS_DTYPE_FLOAT, dims, rank, err)) < 0)
    return rc;
  if (ts_cnn_output_wanted(n, 1))
    rc = ts_cnn_set_shape(n, &out[1], TS_DTYPE_INT64, dims, rank, err);
  return rc;
}

/* The taps of a window along one spatial dim: window start (in input
 * coordinates), the range [lo, hi) of tap numbers inside the input, and how
 * many taps lie inside the padded input. */
typedef struct taps {
  int64_t start, lo, hi, padded;
} taps;

static taps taps_at(const window *w, int j, int64_t o) {
  taps t;
  int64_t plo, phi;
  t.start = o * w->s[j] - w->pb[j];
  ts_cnn_valid_range(t.start, w->d[j], w->k[j], w->in[j], &t.lo, &t.hi);
  ts_cnn_valid_range(t.start + w->pb[j], w->d[j], w->k[j],
                     w->in[j] + w->pb[j] + w->pe[j], &plo, &phi);
  t.padded = phi - plo;
  return t;
}

/* Pools one (N, C) plane x into y. For MaxPool with indices, idx receives
 * the row-major index into the whole input (plane offset `base`). */
static void pool_plane(const window *w, bool is_max, bool include_pad,
                       const float *x, float *y, int64_t *idx, int64_t base) {
  for (int64_t o0 = 0; o0 < w->out[0]; o0++) {
    const taps t0 = taps_at(w, 0, o0);
    for (int64_t o1 = 0; o1 < w->out[1]; o1++) {
      const taps t1 = taps_at(w, 1, o1);
      for (int64_t o2 = 0; o2 < w->out[2]; o2++, y++) {
        const taps t2 = taps_at(w, 2, o2);
        float best = -INFINITY, sum = 0.0f;
        int64_t best_at = -1;
        for (int64_t a = t0.lo; a < t0.hi; a++)
          for (int64_t b = t1.lo; b < t1.hi; b++) {
            const int64_t row =
                ((t0.start + a * w->d[0]) * w->in[1] + t1.start + b * w->d[1]) *
                    w->in[2] +
                t2.start;
            for (int64_t c = t2.lo; c < t2.hi; c++) {
              const int64_t at = row + c * w->d[2];
              const float v = x[at];
              sum += v;
              if (best_at < 0 || v > best || isnan(v)) {
                best = v;
                best_at = at;
              }
            }
          }
        if (is_max) {
          *y = best;
          if (idx) *idx++ = best_at < 0 ? -1 : base + best_at;
        } else {
          const int64_t div =
              include_pad ? t0.padded * t1.padded * t2.padded
                          : (t0.hi - t0.lo) * (t1.hi - t1.lo) * (t2.hi - t2.lo);
          *y = div > 0 ? sum / (float)div : 0.0f;
        }
      }
    }
  }
}

/* The fast path of pool_plane() for the common case: one spatial plane
 * (1-D or 2-D pooling, w->k[0] == w->in[0] == 1), no dilation, no Indices.
 * The columns whose window lies inside the input (interior) are found once
 * per plane and pooled a whole output row at a time, tap by tap (a
 * vectorised loop over the row; stride 1 and 2 are specialised so that
 * the compiler sees the constant stride); only the border columns clamp
 * their windows one by one. Taps are visited row by row, column by
 * column, as pool_plane() does, so sums round the same way and NaN wins
 * the max. */
static bool pool_fast_applies(const window *w, bool want_indices) {
  return !want_indices && w->in[0] == 1 && w->k[0] == 1 && w->pb[0] == 0 &&
         w->pe[0] == 0 && w->d[1] == 1 && w->d[2] == 1;
}

/* Max or sum of x over rows [r0, r1), columns [c0, c1) of a row length
 * `width`: NaN wins the max, an empty window gives -inf / 0. */
static float pool_window(const float *x, int64_t width, int64_t r0, int64_t r1,
                         int64_t c0, int64_t c1, bool is_max) {
  float best = -INFINITY, sum = 0.0f;
  for (int64_t r = r0; r < r1; r++) {
    const float *row = x + r * width;
    for (int64_t c = c0; c < c1; c++) {
      const float v = row[c];
      sum += v;
      if (v > best || v != v) best = v;
    }
  }
  return is_max ? best : sum;
}

/* y[o] = max or sum over the taps of input rows [r0, r1) (row length
 * `width`) and kw columns from x[o * stride + c], for o in [0, count): the
 * interior of one output row. */
static inline void pool_row(const float *x, int64_t width, int64_t r0,
                            int64_t r1, int64_t kw, int64_t stride,
                            int64_t count, bool is_max, float *y) {
  const float init = is_max ? -INFINITY : 0.0f;
  for (int64_t o = 0; o < count; o++) y[o] = init;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = 0; c < kw; c++) {
      const float *xs = x + r * width + c;
      if (is_max)
        for (int64_t o = 0; o < count; o++) {
          const float v = xs[o * stride];
          y[o] = ((v > y[o]) | (v != v)) ? v : y[o];
        }
      else
        for (int64_t o = 0; o < count; o++) y[o] += xs[o * stride];
    }
}

/* One plane's rows, with the window geometry of one output row. */
typedef struct pool_rows {
  int64_t r0, r1; /* the rows of the window inside the input */
  int64_t padded; /* rows of the window inside the padded input */
} pool_rows;

/* Output o2 of a row whose window is clamped to the input (a border
 * column): the generic arithmetic, for one element. */
static float pool_border(const window *w, bool is_max, bool include_pad,
                         const float *x, const pool_rows *pr, int64_t o2) {
  const int64_t width = w->in[2], kw = w->k[2];
  const int64_t ws = o2 * w->s[2] - w->pb[2];
  const int64_t c0 = ws > 0 ? ws : 0;
  int64_t c1 = ws + kw < width ? ws + kw : width;
  if (c1 < c0) c1 = c0;
  const float v = pool_window(x, width, pr->r0, pr->r1, c0, c1, is_max);
  if (is_max) return v;
  const int64_t cols_padded =
      (ws + kw < width + w->pe[2] ? ws + kw : width + w->pe[2]) - ws;
  const int64_t div =
      include_pad ? pr->padded * cols_padded : (pr->r1 - pr->r0) * (c1 - c0);
  return div > 0 ? v / (float)div : 0.0f;
}

static void pool_plane_2d(const window *w, bool is_max, bool include_pad,
                          const float *x, float *y) {
  const int64_t height = w->in[1], width = w->in[2];
  const int64_t kh = w->k[1], kw = w->k[2], sw = w->s[2];
  const int64_t out_w = w->out[2];
  /* Interior columns [c_lo, c_hi): o * sw - pb >= 0 and o * sw - pb + kw
   * <= width. */
  int64_t c_lo = ts_cnn_ceil_div(w->pb[2], sw);
  int64_t c_hi =
      width + w->pb[2] - kw >= 0 ? (width + w->pb[2] - kw) / sw + 1 : 0;
  if (c_hi > out_w) c_hi = out_w;
  if (c_lo > c_hi) c_lo = c_hi;
  const int64_t count = c_hi - c_lo;
  for (int64_t o1 = 0; o1 < w->out[1]; o1++, y += out_w) {
    const int64_t hs = o1 * w->s[1] - w->pb[1];
    const int64_t end = hs + kh, padded_end = height + w->pe[1];
    pool_rows pr = {.r0 = hs > 0 ? hs : 0,
                    .r1 = end < height ? end : height,
                    .padded = (end < padded_end ? end : padded_end) - hs};
    if (pr.r1 < pr.r0) pr.r1 = pr.r0;
    if (count > 0) {
      const float *xi = x + c_lo * sw - w->pb[2]; /* first interior window */
      float *yi = y + c_lo;
      if (sw == 1)
        pool_row(xi, width, pr.r0, pr.r1, kw, 1, count, is_max, yi);
      else if (sw == 2)
        pool_row(xi, width, pr.r0, pr.r1, kw, 2, count, is_max, yi);
      else
        pool_row(xi, width, pr.r0, pr.r1, kw, sw, count, is_max, yi);
      if (!is_max) {
        const int64_t div = (include_pad ? pr.padded : pr.r1 - pr.r0) * kw;
        for (int64_t o = 0; o < count; o++)
          yi[o] = div > 0 ? yi[o] / (float)div : 0.0f;
      }
    }
    for (int64_t o2 = 0; o2 < c_lo; o2++)
      y[o2] = pool_border(w, is_max, include_pad, x, &pr, o2);
    for (int64_t o2 = c_hi; o2 < out_w; o2++)
      y[o2] = pool_border(w, is_max, include_pad, x, &pr, o2);
  }
}

static int pool_run(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, bool is_max, ts_err *err) {
  const window_attrs *a = n->params;
  window w;
  int rc = pool_resolve(n, in[0], &w, err);
  if (rc < 0) return rc;
  const int64_t planes = in[0]->dims[0] * in[0]->dims[1];
  const int64_t plane_in = ts_cnn_prod3(w.in), plane_out = ts_cnn_prod3(w.out);
  const float *x = in[0]->data;
  float *y = out[0].data;
  int64_t *idx = is_max && ts_cnn_output_wanted(n, 1) ? out[1].data : NULL;
  if (pool_fast_applies(&w, idx != NULL)) {
    for (int64_t p = 0; p < planes; p++)
      pool_plane_2d(&w, is_max, a->count_include_pad, x + p * plane_in,
                    y + p * plane_out);
    return 0;
  }
  for (int64_t p = 0; p < planes; p++)
    pool_plane(&w, is_max, a->count_include_pad, x + p * plane_in,
               y + p * plane_out, idx ? idx + p * plane_out : NULL,
               p * plane_in);
  return 0;
}

static int max_pool_run(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx;
  return pool_run(n, in, out, true, err);
}

static int average_pool_run(const ts_node *n, const ts_tensor *const *in,
                            ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx;
  return pool_run(n, in, out, false, err);
}

/* ------------------------------------------------------------------------ */
/* GlobalAveragePool, GlobalMaxPool                                         */
/* ------------------------------------------------------------------------ */

static int global_pool_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const ts_attr_spec known[] = {{NULL}};
  (void)g;
  return ts_kernel_check_attrs(n, known, err);
}

static int global_pool_infer(const ts_node *n, const ts_tensor *const *in,
                             ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0];
  int rc;
  if ((rc = ts_cnn_check_float(n, x, 0, "X", err)) < 0 ||
      (rc = ts_cnn_check_rank(n, x, 0, "X", 3, TS_MAX_RANK, err)) < 0)
    return rc;
  int64_t dims[TS_MAX_RANK];
  for (int i = 0; i < x->rank; i++) {
    dims[i] = i < 2 ? x->dims[i] : 1;
    if (i >= 2 && x->dims[i] == 0)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "input X has an empty spatial dim %d; nothing to pool", i);
  }
  return ts_cnn_set_shape(n, &out[0], TS_DTYPE_FLOAT, dims, x->rank, err);
}

/* Reductions of one plane of count >= 1 floats. */
static float plane_mean(const float *x, int64_t count) {
  double sum = 0.0; /* planes can be large: accumulate in double */
  for (int64_t i = 0; i < count; i++) sum += x[i];
  return (float)(sum / (double)count);
}

static float plane_max(const float *x, int64_t count) {
  float best = x[0];
  for (int64_t i = 1; i < count; i++)
    if (x[i] > best || isnan(x[i])) best = x[i];
  return best;
}

static void global_pool(const ts_tensor *x, ts_tensor *y,
                        float (*reduce)(const float *, int64_t)) {
  int64_t planes, plane;
  ts_cnn_planes_of(x, &planes, &plane);
  const float *xv = x->data;
  float *yv = y->data;
  for (int64_t p = 0; p < planes; p++) yv[p] = reduce(xv + p * plane, plane);
}

static int global_average_pool_run(const ts_node *n, const ts_tensor *const *in,
                                   ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)n, (void)ctx, (void)err;
  global_pool(in[0], &out[0], plane_mean);
  return 0;
}

static int global_max_pool_run(const ts_node *n, const ts_tensor *const *in,
                               ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)n, (void)ctx, (void)err;
  global_pool(in[0], &out[0], plane_max);
  return 0;
}

CNN_OP(max_pool, "MaxPool", 1, 1, 1, 2, max_pool_prepare, ts_cnn_params_release,
       pool_infer, max_pool_run);
CNN_OP(average_pool, "AveragePool", 1, 1, 1, 1, average_pool_prepare,
       ts_cnn_params_release, pool_infer, average_pool_run);
CNN_OP(global_average_pool, "GlobalAveragePool", 1, 1, 1, 1,
       global_pool_prepare, NULL, global_pool_infer, global_average_pool_run);
CNN_OP(global_max_pool, "GlobalMaxPool", 1, 1, 1, 1, global_pool_prepare, NULL,
       global_pool_infer, global_max_pool_run);
