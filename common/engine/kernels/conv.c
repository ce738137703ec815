/*
 * conv.c - Conv (list in list_cnn.h; design and invariants in cnn_int.h):
 * im2col + cblas_sgemm per (image, group, tile of output rows), a plain
 * sgemm per (image, group, run of pixels) for a pointwise conv, a direct
 * loop per output plane for a depthwise one; those units are what the
 * kernel budget's threads share (parallel.h).
 */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "cnn_int.h"
#include "parallel.h"

#define COL_BUDGET ((int64_t)8 << 20) /* most bytes of one im2col tile */
/* The im2col tile aims at COL_TARGET bytes, so that the column matrix is
 * still in cache when sgemm packs it (128 KB measured 8-15% faster than
 * 8 MB on the ResNet of the benchmarks), but keeps at least COL_MIN_COLUMNS
 * columns per sgemm call where COL_BUDGET allows, so that a deep kernel
 * does not end up with one call per output row. */
#define COL_TARGET ((int64_t)128 << 10)
#define COL_MIN_COLUMNS 256

static const ts_attr_spec conv_attrs[] = {{"auto_pad", ATTR_STRING},
                                          {"dilations", ATTR_INTS},
                                          {"group", ATTR_INT},
                                          {"kernel_shape", ATTR_INTS},
                                          {"pads", ATTR_INTS},
                                          {"strides", ATTR_INTS},
                                          {NULL}};

/* ------------------------------------------------------------------------ */
/* Conv                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct conv_geom {
  window w;
  int64_t n, c, m, g; /* batch, input channels, output channels, groups */
} conv_geom;

static int conv_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  window_attrs a;
  int rc = ts_cnn_window_parse(n, conv_attrs, false, &a, err);
  if (rc < 0) return rc;
  return ts_cnn_params_store(n, &a, sizeof a, err);
}

/* Validates X (N, C, spatial), W (M, C/group, kernel) and B (M) and resolves
 * the geometry. */
static int conv_resolve(const ts_node *n, const ts_tensor *const *in,
                        conv_geom *cg, ts_err *err) {
  const window_attrs *a = n->params;
  const ts_tensor *x = in[0], *w = in[1], *b = ts_cnn_input_at(n, in, 2);
  int rc;
  if ((rc = ts_cnn_check_float(n, x, 0, "X", err)) < 0 ||
      (rc = ts_cnn_check_float(n, w, 1, "W", err)) < 0 ||
      (b && (rc = ts_cnn_check_float(n, b, 2, "B", err)) < 0) ||
      (rc = ts_cnn_check_rank(n, x, 0, "X", 3, 2 + SP_MAX, err)) < 0)
    return rc;
  const int nsp = x->rank - 2;
  if (w->rank != x->rank)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "weight W ('%s') has rank %d; input X has rank %d",
                          ts_cnn_input_name(n, 1), w->rank, x->rank);
  cg->n = x->dims[0];
  cg->c = x->dims[1];
  cg->m = w->dims[0];
  cg->g = a->group;
  if (cg->c >= 0 && cg->c % cg->g != 0)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "input X has %lld channels, not divisible by group %lld",
        (long long)cg->c, (long long)cg->g);
  if (cg->c >= 0 && w->dims[1] >= 0 && w->dims[1] != cg->c / cg->g)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "weight W ('%s') has %lld input channels per group; input X "
        "has %lld channels in %lld groups",
        ts_cnn_input_name(n, 1), (long long)w->dims[1], (long long)cg->c,
        (long long)cg->g);
  if (cg->m >= 0 && cg->m % cg->g != 0)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "weight W ('%s') has %lld output channels, not divisible by "
        "group %lld",
        ts_cnn_input_name(n, 1), (long long)cg->m, (long long)cg->g);
  if (a->n_kernel && a->n_kernel != nsp)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'kernel_shape' has %d values; input X has %d "
        "spatial dims",
        a->n_kernel, nsp);
  for (int i = 0; i < a->n_kernel; i++)
    if (w->dims[2 + i] >= 0 && a->kernel[i] != w->dims[2 + i])
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'kernel_shape'[%d] is %lld; weight W has %lld", i,
          (long long)a->kernel[i], (long long)w->dims[2 + i]);
  if (b &&
      (b->rank != 1 || (cg->m >= 0 && b->dims[0] >= 0 && b->dims[0] != cg->m)))
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "bias B ('%s') must have shape [%lld] (rank %d given)",
        ts_cnn_input_name(n, 2), (long long)cg->m, b->rank);
  return ts_cnn_window_resolve(n, a, x->dims + 2, nsp, w->dims + 2, &cg->w,
                               err);
}

static int conv_infer(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  conv_geom cg;
  int rc = conv_resolve(n, in, &cg, err);
  if (rc < 0) return rc;
  int64_t dims[2 + SP_MAX] = {cg.n, cg.m};
  const int nsp = in[0]->rank - 2;
  for (int i = 0; i < nsp; i++) dims[2 + i] = cg.w.out[SP_MAX - nsp + i];
  return ts_cnn_set_shape(n, &out[0], TS_DTYPE_FLOAT, dims, in[0]->rank, err);
}

/* Zeroes `count` floats (a plain loop: the runs here are short). */
static void zero_floats(float *dst, int64_t count) {
  for (int64_t i = 0; i < count; i++) dst[i] = 0.0f;
}

/* Writes the column matrix of one group's input planes x (channels planes
 * of w->in) for output rows [r0, r1), a row being one (out0, out1) pair:
 * col[channels * kernel volume][(r1 - r0) * out2], 0 where a tap falls into
 * the padding.
 *
 * For each tap, the rows of one out0 plane are cut into the padding rows
 * above, the valid rows and the padding rows below. Where the conv keeps
 * the width (stride 1 on the last two dims, out2 == in2: a "same" conv),
 * the valid rows of a tap are one contiguous run of the input, shifted by
 * the tap's column offset: one copy, then the few columns that fall into
 * the padding zeroed per row. Otherwise each row is copied on its own. */
static void im2col(const float *x, int64_t channels, const window *w,
                   int64_t r0, int64_t r1, float *col) {
  const int64_t ow_n = w->out[2], plane = ts_cnn_prod3(w->in), s2 = w->s[2];
  const int64_t out1 = w->out[1];
  const bool dense = s2 == 1 && w->s[1] == 1 && ow_n == w->in[2];
  float *dst = col;
  for (int64_t c = 0; c < channels; c++) {
    const float *xc = x + c * plane;
    for (int64_t k0 = 0; k0 < w->k[0]; k0++)
      for (int64_t k1 = 0; k1 < w->k[1]; k1++)
        for (int64_t k2 = 0; k2 < w->k[2]; k2++) {
          const int64_t iw0 = k2 * w->d[2] - w->pb[2];
          const int64_t ih0 = k1 * w->d[1] - w->pb[1];
          int64_t lo, hi, v_lo, v_hi; /* valid columns, valid out1 rows */
          ts_cnn_valid_range(iw0, s2, ow_n, w->in[2], &lo, &hi);
          ts_cnn_valid_range(ih0, w->s[1], out1, w->in[1], &v_lo, &v_hi);
          for (int64_t r = r0; r < r1;) {
            const int64_t o0 = r / out1, first = r % out1;
            const int64_t end = (o0 + 1) * out1 < r1 ? (o0 + 1) * out1 : r1;
            const int64_t last = first + (end - r); /* out1 [first, last) */
            float *d = dst + (r - r0) * ow_n;
            const int64_t i0 = o0 * w->s[0] - w->pb[0] + k0 * w->d[0];
            r = end;
            if (i0 < 0 || i0 >= w->in[0]) {
              zero_floats(d, (last - first) * ow_n);
              continue;
            }
            int64_t a = v_lo > first ? v_lo : first;
            int64_t b = v_hi < last ? v_hi : last;
            if (b < a) b = a;
            zero_floats(d, (a - first) * ow_n);
            zero_floats(d + (b - first) * ow_n, (last - b) * ow_n);
            if (b == a) continue;
            const float *src =
                xc + (i0 * w->in[1] + ih0 + a * w->s[1]) * w->in[2] + iw0;
            float *dv = d + (a - first) * ow_n;
            if (dense && hi > lo) {
              /* rows a..b of the input are contiguous, as are their
               * destinations: copy [lo of the first, hi of the last). */
              memcpy(dv + lo, src + lo,
                     (size_t)((b - a) * ow_n - lo - (ow_n - hi)) * sizeof *dv);
              for (int64_t q = 0; q < b - a; q++) {
                zero_floats(dv + q * ow_n, lo);
                zero_floats(dv + q * ow_n + hi, ow_n - hi);
              }
              continue;
            }
            for (int64_t q = 0; q < b - a; q++, dv += ow_n) {
              const float *sr = src + q * w->s[1] * w->in[2];
              zero_floats(dv, lo);
              if (s2 == 1)
                for (int64_t o = lo; o < hi; o++) dv[o] = sr[o];
              else if (s2 == 2) /* a constant stride: vectorised */
                for (int64_t o = lo; o < hi; o++) dv[o] = sr[o * 2];
              else
                for (int64_t o = lo; o < hi; o++) dv[o] = sr[o * s2];
              zero_floats(dv + hi, ow_n - hi);
            }
          }
          dst += (r1 - r0) * ow_n;
        }
  }
}

/* Depthwise conv (one input channel per group), output plane (image b,
 * channel m), which reads input channel m / (M/G). Loops tap by tap over
 * the output so the inner loop is a contiguous axpy for stride 1. */
static void conv_depthwise(const conv_geom *cg, int64_t b, int64_t m,
                           const float *x, const float *wt, const float *bias,
                           float *y) {
  const window *w = &cg->w;
  const int64_t kvol = ts_cnn_prod3(w->k), plane_in = ts_cnn_prod3(w->in),
                plane_out = ts_cnn_prod3(w->out), per_group = cg->m / cg->g;
  const float *xp = x + (b * cg->c + m / per_group) * plane_in;
  float *yp = y + (b * cg->m + m) * plane_out;
  const float bv = bias ? bias[m] : 0.0f;
  for (int64_t p = 0; p < plane_out; p++) yp[p] = bv;
  for (int64_t t = 0; t < kvol; t++) {
    const int64_t k0 = t / (w->k[1] * w->k[2]), k1 = t / w->k[2] % w->k[1],
                  k2 = t % w->k[2];
    const float wv = wt[m * kvol + t];
    const int64_t st0 = k0 * w->d[0] - w->pb[0],
                  st1 = k1 * w->d[1] - w->pb[1],
                  st2 = k2 * w->d[2] - w->pb[2];
    int64_t lo0, hi0, lo1, hi1, lo2, hi2;
    ts_cnn_valid_range(st0, w->s[0], w->out[0], w->in[0], &lo0, &hi0);
    ts_cnn_valid_range(st1, w->s[1], w->out[1], w->in[1], &lo1, &hi1);
    ts_cnn_valid_range(st2, w->s[2], w->out[2], w->in[2], &lo2, &hi2);
    for (int64_t o0 = lo0; o0 < hi0; o0++)
      for (int64_t o1 = lo1; o1 < hi1; o1++) {
        const float *xr =
            xp + ((st0 + o0 * w->s[0]) * w->in[1] + st1 + o1 * w->s[1]) *
                     w->in[2];
        float *yr = yp + (o0 * w->out[1] + o1) * w->out[2];
        if (w->s[2] == 1)
          for (int64_t o2 = lo2; o2 < hi2; o2++) yr[o2] += wv * xr[st2 + o2];
        else
          for (int64_t o2 = lo2; o2 < hi2; o2++)
            yr[o2] += wv * xr[st2 + o2 * w->s[2]];
      }
  }
}

/* One Conv run cut into units for the kernel budget (parallel.h): a unit
 * is one (image, group, span), the span being a tile of output rows (im2col
 * into the slot's own column buffer, then sgemm) or, for a pointwise conv,
 * a run of output pixels. Units write disjoint parts of Y; the cut depends
 * only on the budget, so a result's bits do not depend on the load. */
typedef struct conv_job {
  const conv_geom *cg;
  const float *x, *wt, *bias;
  float *y;
  float *col;        /* one column buffer per team slot */
  size_t col_floats; /* floats per slot */
  int64_t cpg, mpg, kdim, plane_in, plane_out, rows, row_len;
  int64_t span;      /* rows per tile, or pixels per pointwise span */
  int64_t n_spans;
  bool pointwise;
} conv_job;

static void conv_unit(void *ctx, int64_t u, int slot) {
  const conv_job *j = ctx;
  const conv_geom *cg = j->cg;
  const int64_t sp = u % j->n_spans, bg_i = u / j->n_spans;
  const int64_t b = bg_i / cg->g, g = bg_i % cg->g;
  const float *xg = j->x + (b * cg->c + g * j->cpg) * j->plane_in;
  const float *wg = j->wt + g * j->mpg * j->kdim;
  float *yg = j->y + (b * cg->m + g * j->mpg) * j->plane_out;
  const float *bg = j->bias ? j->bias + g * j->mpg : NULL;
  const int64_t len = j->pointwise ? j->plane_out : j->rows * j->row_len;
  const int64_t per = j->pointwise ? j->span : j->span * j->row_len;
  const int64_t p0 = sp * per, p1 = p0 + per < len ? p0 + per : len;
  /* The bias is the gemm's C operand (beta 1); without one, beta 0. */
  if (bg || j->kdim == 0)
    for (int64_t m = 0; m < j->mpg; m++) {
      const float v = bg ? bg[m] : 0.0f;
      for (int64_t q = p0; q < p1; q++) yg[m * j->plane_out + q] = v;
    }
  if (j->kdim == 0 || p1 <= p0) return;
  const float beta = bg ? 1.0f : 0.0f;
  const int ncols = (int)(p1 - p0);
  const float *bmat = xg + p0;
  int ldb = (int)j->plane_out;
  if (!j->pointwise) {
    float *col = j->col + (size_t)slot * j->col_floats;
    im2col(xg, j->cpg, &cg->w, p0 / j->row_len, p1 / j->row_len, col);
    bmat = col;
    ldb = ncols;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)j->mpg, ncols,
              (int)j->kdim, 1.0f, wg, (int)j->kdim, bmat, ldb, beta, yg + p0,
              (int)j->plane_out);
}

/* Depthwise planes as units of the kernel budget: unit u is output plane
 * (image u / M, channel u % M). */
typedef struct depthwise_job {
  const conv_geom *cg;
  const float *x, *wt, *bias;
  float *y;
} depthwise_job;

static void depthwise_unit(void *ctx, int64_t u, int slot) {
  (void)slot;
  const depthwise_job *j = ctx;
  conv_depthwise(j->cg, u / j->cg->m, u % j->cg->m, j->x, j->wt, j->bias,
                 j->y);
}

static int conv_run(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  conv_geom cg;
  int rc = conv_resolve(n, in, &cg, err);
  if (rc < 0) return rc;
  const window *w = &cg.w;
  const float *x = in[0]->data, *wt = in[1]->data;
  const ts_tensor *bt = ts_cnn_input_at(n, in, 2);
  const float *bias = bt ? bt->data : NULL;
  float *y = out[0].data;
  const int64_t plane_in = ts_cnn_prod3(w->in),
                plane_out = ts_cnn_prod3(w->out);
  const int64_t cpg = cg.c / cg.g, mpg = cg.m / cg.g; /* per group */
  const int64_t kdim = cpg * ts_cnn_prod3(w->k);      /* gemm K */
  if (cg.n == 0 || cg.m == 0 || plane_out == 0) return 0;
  /* Multiply-adds of the whole conv: what decides the team. */
  const int want = ts_parallel_want(cg.n * cg.m * (kdim ? kdim : 1) *
                                    plane_out);
  if (cpg == 1 && cg.g > 1) {
    depthwise_job dj = {&cg, x, wt, bias, y};
    ts_parallel_for(cg.n * cg.m, want, depthwise_unit, &dj);
    return 0;
  }
  const bool pointwise = ts_cnn_prod3(w->k) == 1 && w->s[0] == 1 &&
                         w->s[1] == 1 && w->s[2] == 1 && w->pb[0] == 0 &&
                         w->pb[1] == 0 && w->pb[2] == 0 && w->pe[0] == 0 &&
                         w->pe[1] == 0 && w->pe[2] == 0;
  const int64_t rows = w->out[0] * w->out[1], row_len = w->out[2];
  if (kdim > INT_MAX || mpg > INT_MAX || plane_out > INT_MAX)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "convolution too large for BLAS (K %lld, M %lld, pixels %lld)",
        (long long)kdim, (long long)mpg, (long long)plane_out);
  conv_job j = {.cg = &cg, .x = x, .wt = wt, .bias = bias, .y = y,
                .cpg = cpg, .mpg = mpg, .kdim = kdim, .plane_in = plane_in,
                .plane_out = plane_out, .rows = rows, .row_len = row_len,
                .pointwise = pointwise || kdim == 0};
  /* Units wanted: enough for every thread of the team to have a few. */
  const int64_t images = cg.n * cg.g, units_wanted = (int64_t)want * 2;
  const int64_t splits = want > 1 && images < units_wanted
                             ? ts_cnn_ceil_div(units_wanted, images) : 1;
  if (j.pointwise) {
    j.span = ts_cnn_ceil_div(plane_out, splits);
    j.n_spans = ts_cnn_ceil_div(plane_out, j.span);
    ts_parallel_for(images * j.n_spans, want, conv_unit, &j);
    return 0;
  }
  const int64_t row_bytes = kdim * row_len * (int64_t)sizeof(float);
  int64_t tile = COL_TARGET / row_bytes;
  if (tile * row_len < COL_MIN_COLUMNS)
    tile = ts_cnn_ceil_div(COL_MIN_COLUMNS, row_len);
  if (tile > COL_BUDGET / row_bytes) tile = COL_BUDGET / row_bytes;
  const int64_t split_tile = ts_cnn_ceil_div(rows, splits);
  if (tile > split_tile) tile = split_tile;
  if (tile < 1) tile = 1;
  if (tile > rows) tile = rows;
  j.span = tile;
  j.n_spans = ts_cnn_ceil_div(rows, tile);
  j.col_floats = (size_t)(kdim * tile * row_len);
  /* 64-byte aligned slots, so that no two threads share a cache line. */
  j.col_floats = (j.col_floats + 15) & ~(size_t)15;
  ts_parallel_team team;
  ts_parallel_reserve(&team, want);
  j.col = ts_kctx_scratch(ctx, (size_t)team.size * j.col_floats *
                                   sizeof *j.col);
  if (!j.col && team.size > 1) {
    ts_parallel_release(&team);
    j.col = ts_kctx_scratch(ctx, j.col_floats * sizeof *j.col);
  }
  if (!j.col) {
    ts_parallel_release(&team);
    return ts_kernel_fail(n, err, TS_ENOMEM,
                          "out of memory for a %lld x %lld im2col "
                          "buffer",
                          (long long)kdim, (long long)(tile * row_len));
  }
  ts_parallel_run(&team, images * j.n_spans, conv_unit, &j);
  return 0;
}

CNN_OP(conv, "Conv", 2, 3, 1, 1, conv_prepare, ts_cnn_params_release,
       conv_infer, conv_run);
