/*
 * test_kernels_cnn.c - Conv, MaxPool, AveragePool, GlobalAveragePool,
 * GlobalMaxPool, BatchNormalization, Pad, Resize and Upsample.
 *
 * Every kernel runs through the real loader and executor (one-node models
 * built with kernel_check.h, loaded with ts_model_load and run with
 * ts_exec_run) and is compared with a naive reference written independently
 * in this file from the ONNX definitions: direct nested-loop convolution in
 * float64, pooling window by window, padding and nearest resizing index by
 * index. Shapes are random (odd sizes, unit dims, 1-3 spatial dims, strides
 * 1-3, dilations 1-2, asymmetric pads, every auto_pad, groups
 * 1/2/depthwise, ceil_mode and count_include_pad both ways), and the batch
 * dim is declared symbolic in the model and fed as 1 or 3, so load-time
 * shape inference must leave it symbolic while inferring every other dim.
 *
 * Bad input: every unsupported attribute value must fail the load with
 * TS_EUNSUPPORTED naming the attribute, and inconsistent shapes with
 * TS_EINVAL (at load when the shapes are static, at run when a symbolic dim
 * hides them).
 *
 * The throughput of a 64->64 3x3 conv on 56x56 is printed (not asserted)
 * with the OpenBLAS kernel set in use.
 */
#include <cblas.h>
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check_main.h"
#include "blas.h"
#include "kernel_check.h"

/* ------------------------------------------------------------------------ */
/* Harness on top of kernel_check.h                                         */
/* ------------------------------------------------------------------------ */

static kc_rng rng;

static int64_t rnd(int64_t lo, int64_t hi) { return kc_randint(&rng, lo, hi); }

/* An owned float tensor, uniform in [-1, 1). */
static void rand_float(ts_tensor *t, int rank, const int64_t *dims) {
  kc_tensor_rand(t, TS_DTYPE_FLOAT, rank, dims, &rng, -1, 1);
}

/* A non-owning view of data, for inputs held in local arrays. */
static ts_tensor view(ts_dtype dtype, int rank, const int64_t *dims,
                      const void *data) {
  ts_tensor t;
  ck_assert_int_eq(ts_tensor_view(&t, dtype, dims, rank, (void *)data, NULL),
                   0);
  return t;
}

/* kc_op_model (inputs x0.., outputs y0..) with bit d of sym_mask declaring
 * dim d of the graph input x0 symbolic. */
static Onnx__ModelProto *op_model(const char *op, int64_t opset,
                                  const ts_tensor *const *in, int n_in,
                                  unsigned const_mask, unsigned sym_mask,
                                  int n_out, Onnx__NodeProto **node) {
  Onnx__ModelProto *m =
      kc_op_model(op, "", opset, in, n_in, const_mask, n_out, node);
  for (size_t i = 0; i < m->graph->n_input && sym_mask; i++) {
    Onnx__ValueInfoProto *v = m->graph->input[i];
    if (strcmp(v->name, "x0") != 0) continue;
    Onnx__TensorShapeProto *sh = v->type->tensor_type->shape;
    for (size_t d = 0; d < sh->n_dim; d++)
      if (sym_mask >> d & 1) {
        char name[32];
        snprintf(name, sizeof name, "S%zu", d);
        sh->dim[d]->value_case =
            ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
        sh->dim[d]->dim_param = kc_strdup(name);
      }
  }
  return m;
}

/* Runs m expecting success; out[] are owned. Frees m. */
static void run_ok(Onnx__ModelProto *m, const ts_tensor *const *in, int n_in,
                   unsigned const_mask, ts_tensor *out, int n_out,
                   const char *what) {
  ts_err err;
  int rc = kc_model_run(m, in, n_in, const_mask, out, n_out, &err);
  kc_model_free(m);
  ck_assert_msg(rc == 0, "%s: %d %s", what, rc, err.msg);
}

/* Runs m expecting failure with `code` and a message containing `needle`.
 * Frees m. */
static void expect_fail(Onnx__ModelProto *m, const ts_tensor *const *in,
                        int n_in, unsigned const_mask, int n_out, int code,
                        const char *needle) {
  ts_tensor out[5];
  ts_err err;
  ts_err_clear(&err);
  int rc = kc_model_run(m, in, n_in, const_mask, out, n_out, &err);
  const char *op = m->graph->node[0]->op_type;
  kc_model_free(m);
  for (int i = 0; i < n_out && rc == 0; i++) ts_tensor_free(&out[i]);
  ck_assert_msg(rc == code, "%s: expected %d (%s), got %d: %s", op, code,
                needle, rc, err.msg);
  ck_assert_msg(strstr(err.msg, needle), "%s: message '%s' lacks '%s'", op,
                err.msg, needle);
}

/* Expects that load-time inference made y0's batch dim symbolic and the
 * other dims exactly `dims`. */
static void expect_inferred(const Onnx__ModelProto *m, const int64_t *dims,
                            int rank, const char *what) {
  ts_model *model;
  ts_err err;
  ck_assert_msg(kc_model_load(m, &model, &err) == 0, "%s: %s", what, err.msg);
  const int vi = ts_graph_find_value(&model->graph, "y0");
  ck_assert_int_ge(vi, 0);
  const ts_value *v = &model->graph.values[vi];
  ck_assert_msg(v->rank == rank, "%s: inferred rank %d", what, v->rank);
  ck_assert_msg(v->dims[0] == -1, "%s: batch dim inferred as %lld", what,
                (long long)v->dims[0]);
  for (int d = 1; d < rank; d++)
    ck_assert_msg(v->dims[d] == dims[d],
                  "%s: inferred dim %d is %lld, want %lld", what, d,
                  (long long)v->dims[d], (long long)dims[d]);
  ts_model_free(model);
}

/* Sums of products in float accumulate rounding in proportion to the sum of
 * the terms' magnitudes, not to the result (which may cancel), so these
 * references carry mag[i] = sum |term| and the bound is rtol * mag + 1e-6. */
static void expect_close_mag(const ts_tensor *got, const double *want,
                             const double *mag, const int64_t *dims, int rank,
                             double rtol, const char *what) {
  kc_assert_shape(got, dims, rank, what);
  const int64_t n = ts_shape_numel(dims, rank);
  const float *g = got->data;
  for (int64_t i = 0; i < n; i++)
    if (!(fabs((double)g[i] - want[i]) <= rtol * mag[i] + 1e-6))
      ck_abort_msg("%s: element %lld: got %.9g, want %.9g (sum |terms| %g)",
                   what, (long long)i, (double)g[i], want[i], mag[i]);
}

/* Expects got to hold exactly the bytes of want (shape dims). */
static void expect_bytes(const ts_tensor *got, ts_dtype dtype, const void *want,
                         const int64_t *dims, int rank, const char *what) {
  kc_assert_shape(got, dims, rank, what);
  ck_assert_msg(got->dtype == dtype, "%s: dtype %d", what, (int)got->dtype);
  ck_assert_msg(got->nbytes == 0 || memcmp(got->data, want, got->nbytes) == 0,
                "%s: wrong values", what);
}

static double *alloc_f64(int64_t n) {
  double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
  ck_assert_ptr_nonnull(v);
  return v;
}

/* ------------------------------------------------------------------------ */
/* Window geometry, from the ONNX spec                                      */
/* ------------------------------------------------------------------------ */

enum { NOTSET, SAME_UPPER, SAME_LOWER, VALID };
static const char *const auto_pad_str[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER",
                                           "VALID"};

/* A windowed op's case, with leading unit dims up to 3 spatial dims. */
typedef struct wcase {
  int nsp, auto_pad;
  bool ceil, include_pad;
  bool give_strides, give_dilations, give_pads, give_auto_pad, give_kernel;
  int64_t in[3], k[3], s[3], d[3], pb[3], pe[3], out[3];
  int64_t batch;
} wcase;

static int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Output size and effective pads per the ONNX operator docs: explicit pads
 * with floor (or ceil_mode's ceil, a window having to start inside the input
 * or its left pad, as PyTorch and onnxruntime do); VALID
 * ceil((in - eff + 1) / s); SAME ceil(in / s) with the total pad split evenly,
 * the odd one at the end (UPPER) or the start (LOWER). */
static void ref_geometry(wcase *c) {
  for (int j = 3 - c->nsp; j < 3; j++) {
    const int64_t eff = (c->k[j] - 1) * c->d[j] + 1, in = c->in[j];
    if (c->auto_pad == NOTSET) {
      const int64_t span = in + c->pb[j] + c->pe[j] - eff;
      c->out[j] = floor_div(span, c->s[j]) + 1;
      if (c->ceil) {
        c->out[j] = -floor_div(-span, c->s[j]) + 1;
        if ((c->out[j] - 1) * c->s[j] >= in + c->pb[j]) c->out[j]--;
      }
    } else if (c->auto_pad == VALID) {
      c->pb[j] = c->pe[j] = 0;
      c->out[j] = -floor_div(-(in - eff + 1), c->s[j]);
    } else {
      c->out[j] = -floor_div(-in, c->s[j]);
      int64_t total = (c->out[j] - 1) * c->s[j] + eff - in;
      if (total < 0) total = 0;
      const int64_t small = total / 2;
      c->pb[j] = c->auto_pad == SAME_UPPER ? small : total - small;
      c->pe[j] = total - c->pb[j];
    }
  }
}

/* A case with every dim a unit dim. */
static void unit_window(wcase *c, int nsp) {
  memset(c, 0, sizeof *c);
  c->nsp = nsp;
  c->batch = 1;
  for (int j = 0; j < 3; j++)
    c->in[j] = c->k[j] = c->s[j] = c->d[j] = c->out[j] = 1;
}

/* A random geometry. Pads stay below the dilated kernel extent for pools
 * (a window wholly in the padding is pathological); inputs are at least as
 * large as the kernel needs. */
static void random_window(wcase *c, bool pool) {
  unit_window(c, (int)rnd(1, 3));
  const int64_t r = rnd(0, 7);
  c->auto_pad = r < 4 ? NOTSET : (int)(r - 4);
  c->ceil = pool && rnd(0, 1); /* Conv has no ceil_mode */
  c->include_pad = pool && rnd(0, 1);
  c->give_strides = rnd(0, 3) > 0;
  c->give_dilations = rnd(0, 3) > 0;
  c->give_pads = c->auto_pad == NOTSET && rnd(0, 5) > 0;
  c->give_auto_pad = c->auto_pad != NOTSET || rnd(0, 1);
  c->give_kernel = pool || rnd(0, 1);
  c->batch = rnd(0, 1) ? 3 : 1;
  const bool small = c->nsp == 3;
  for (int j = 3 - c->nsp; j < 3; j++) {
    c->k[j] = rnd(1, small ? 2 : 3);
    c->s[j] = c->give_strides ? rnd(1, 3) : 1;
    c->d[j] = c->give_dilations ? rnd(1, 2) : 1;
    const int64_t eff = (c->k[j] - 1) * c->d[j] + 1;
    if (c->give_pads) {
      const int64_t most = pool ? eff - 1 : 2;
      c->pb[j] = rnd(0, most);
      c->pe[j] = rnd(0, most);
    }
    int64_t lo = eff - c->pb[j] - c->pe[j];
    if (c->auto_pad == VALID || lo < 1) lo = c->auto_pad == VALID ? eff : 1;
    c->in[j] = rnd(lo, lo + (small ? 3 : 7));
  }
  ref_geometry(c);
}

/* Sets c's window attributes on node. */
static void window_attrs(const wcase *c, bool pool, Onnx__NodeProto *node) {
  int64_t v[4][6];
  const size_t n = (size_t)c->nsp;
  for (int i = 0; i < c->nsp; i++) {
    const int j = 3 - c->nsp + i;
    v[0][i] = c->k[j];
    v[1][i] = c->s[j];
    v[2][i] = c->d[j];
    v[3][i] = c->pb[j];
    v[3][c->nsp + i] = c->pe[j];
  }
  if (c->give_kernel) kc_attr_ints(node, "kernel_shape", n, v[0]);
  if (c->give_strides) kc_attr_ints(node, "strides", n, v[1]);
  if (c->give_dilations) kc_attr_ints(node, "dilations", n, v[2]);
  if (c->give_pads) kc_attr_ints(node, "pads", 2 * n, v[3]);
  if (c->give_auto_pad)
    kc_attr_string(node, "auto_pad", auto_pad_str[c->auto_pad]);
  if (pool && c->ceil) kc_attr_int(node, "ceil_mode", 1);
}

/* Fills dims = (batch, channels, spatial...) from sp (c->in or c->out). */
static int nchw_dims(const wcase *c, int64_t channels, const int64_t *sp,
                     int64_t *dims) {
  dims[0] = c->batch;
  dims[1] = channels;
  for (int i = 0; i < c->nsp; i++) dims[2 + i] = sp[3 - c->nsp + i];
  return 2 + c->nsp;
}

/* Formats a case's label: the printf-style head, then auto_pad, ceil_mode,
 * count_include_pad and the geometry ("in 5x7 k 3x3 s 1x2 ... out 3x4"). */
static void describe(const wcase *c, char *buf, size_t size, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));
static void describe(const wcase *c, char *buf, size_t size, const char *fmt,
                     ...) {
  va_list ap;
  va_start(ap, fmt);
  int used = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  used += snprintf(buf + used, size - (size_t)used,
                   " (auto_pad %s, ceil_mode %d, count_include_pad %d;",
                   auto_pad_str[c->auto_pad], c->ceil, c->include_pad);
  const char *names[] = {"in", "k", "s", "d", "pb", "pe", "out"};
  const int64_t *vals[] = {c->in, c->k, c->s, c->d, c->pb, c->pe, c->out};
  for (int f = 0; f < 7; f++) {
    used += snprintf(buf + used, size - (size_t)used, " %s", names[f]);
    for (int j = 3 - c->nsp; j < 3; j++)
      used += snprintf(buf + used, size - (size_t)used, "%s%lld",
                       j > 3 - c->nsp ? "x" : " ", (long long)vals[f][j]);
  }
  snprintf(buf + used, size - (size_t)used, ")");
}

static int64_t vol3(const int64_t *v) { return v[0] * v[1] * v[2]; }

/* ------------------------------------------------------------------------ */
/* Conv                                                                     */
/* ------------------------------------------------------------------------ */

/* The offset within one input plane of kernel tap t (row-major over the
 * kernel) at output position o, or -1 when the tap falls into the padding. */
static int64_t tap_offset(const wcase *c, const int64_t *o, int64_t t) {
  int64_t k[3], off = 0;
  kc_unravel(t, c->k, 3, k);
  for (int j = 0; j < 3; j++) {
    const int64_t i = o[j] * c->s[j] - c->pb[j] + k[j] * c->d[j];
    if (i < 0 || i >= c->in[j]) return -1;
    off = off * c->in[j] + i;
  }
  return off;
}

/* Direct convolution by definition, in double, with mag = sum of |terms|. */
static void ref_conv(const wcase *c, int64_t C, int64_t M, int64_t G,
                     const float *x, const float *w, const float *b, double *y,
                     double *mag) {
  const int64_t cg = C / G, mg = M / G, kvol = vol3(c->k),
                plane_in = vol3(c->in), plane_out = vol3(c->out);
  for (int64_t n = 0; n < c->batch; n++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t p = 0; p < plane_out; p++) {
        int64_t o[3];
        kc_unravel(p, c->out, 3, o);
        double acc = b ? b[m] : 0.0, abs_sum = b ? fabs(b[m]) : 0.0;
        for (int64_t ci = 0; ci < cg; ci++)
          for (int64_t t = 0; t < kvol; t++) {
            const int64_t off = tap_offset(c, o, t);
            if (off < 0) continue;
            const int64_t channel = (m / mg) * cg + ci;
            const double xv = x[(n * C + channel) * plane_in + off];
            const double wv = w[(m * cg + ci) * kvol + t];
            acc += xv * wv;
            abs_sum += fabs(xv * wv);
          }
        y[(n * M + m) * plane_out + p] = acc;
        mag[(n * M + m) * plane_out + p] = abs_sum;
      }
}

/* Builds, runs and checks one Conv case. runtime_weights feeds W and B as
 * graph inputs instead of initializers. */
static void check_conv(const wcase *c, int64_t C, int64_t M, int64_t G,
                       bool with_bias, bool runtime_weights, const char *what) {
  int64_t xd[5], wd[5], yd[5];
  const int rank = nchw_dims(c, C, c->in, xd);
  nchw_dims(c, M, c->out, yd);
  wd[0] = M;
  wd[1] = C / G;
  for (int i = 0; i < c->nsp; i++) wd[2 + i] = c->k[3 - c->nsp + i];
  ts_tensor x, w, b, y;
  rand_float(&x, rank, xd);
  rand_float(&w, rank, wd);
  rand_float(&b, 1, &M);
  const int64_t ny = ts_shape_numel(yd, rank);
  double *want = alloc_f64(ny), *mag = alloc_f64(ny);
  ref_conv(c, C, M, G, x.data, w.data, with_bias ? b.data : NULL, want, mag);
  const ts_tensor *in[3] = {&x, &w, with_bias ? &b : NULL};
  const unsigned consts = runtime_weights ? 0 : 6;
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = op_model("Conv", 13, in, 3, consts, 1, 1, &node);
  window_attrs(c, false, node);
  if (G > 1 || rnd(0, 1)) kc_attr_int(node, "group", G);
  if (!runtime_weights) expect_inferred(m, yd, rank, what);
  run_ok(m, in, 3, consts, &y, 1, what);
  expect_close_mag(&y, want, mag, yd, rank, 2e-5, what);
  ts_tensor_free(&x), ts_tensor_free(&w), ts_tensor_free(&b);
  ts_tensor_free(&y);
  free(want), free(mag);
}

START_TEST(test_conv_random) {
  rng = kc_rng_seed(11);
  for (int it = 0; it < 300; it++) {
    wcase c;
    random_window(&c, false);
    const int64_t kind = rnd(0, 2); /* group 1, 2, depthwise */
    const int64_t G = kind == 0 ? 1 : kind == 1 ? 2 : rnd(2, 4);
    const int64_t cg = kind == 2 ? 1 : rnd(1, 3),
                  mg = kind == 2 ? rnd(1, 2) : rnd(1, 3);
    if (it % 7 == 0) { /* pointwise: a plain sgemm */
      c.auto_pad = NOTSET;
      c.give_pads = false;
      c.give_strides = rnd(0, 1);
      for (int j = 0; j < 3; j++) {
        c.k[j] = c.s[j] = 1;
        c.pb[j] = c.pe[j] = 0;
      }
      ref_geometry(&c);
    }
    char what[320];
    describe(&c, what, sizeof what, "conv case %d (G %lld, C %lld, M %lld)", it,
             (long long)G, (long long)(G * cg), (long long)(G * mg));
    check_conv(&c, G * cg, G * mg, G, rnd(0, 2) > 0, it % 5 == 4, what);
  }
}
END_TEST

/* An im2col buffer larger than one tile: several tiles per (image, group). */
START_TEST(test_conv_tiled) {
  rng = kc_rng_seed(12);
  wcase c;
  unit_window(&c, 2);
  c.give_kernel = c.give_pads = true;
  c.in[1] = 150;
  c.in[2] = 301;
  c.k[1] = c.k[2] = 3;
  c.pb[1] = c.pe[1] = c.pb[2] = 1;
  c.pe[2] = 2;
  ref_geometry(&c);
  /* K = 16 * 9 = 144; one output row is 144 * 302 * 4 bytes ~ 170 KiB, over
   * the 128 KiB tile target: one row (302 columns) per tile. */
  check_conv(&c, 16, 3, 1, true, false, "tiled conv");
  /* 3-D, K = 8 * 27 = 216, rows of 70: a tile is 4 (out0, out1) rows (the
   * 256-column floor), and 38 rows per out0 plane make tiles that start
   * and end inside a plane. */
  unit_window(&c, 3);
  c.give_kernel = c.give_pads = true;
  c.in[0] = 3;
  c.in[1] = 38;
  c.in[2] = 70;
  for (int j = 0; j < 3; j++) {
    c.k[j] = 3;
    c.pb[j] = c.pe[j] = 1;
  }
  ref_geometry(&c);
  check_conv(&c, 8, 3, 1, true, false, "tiled 3-D conv");
}
END_TEST

/* Empty batch: a symbolic batch fed as 0 gives an empty output. */
START_TEST(test_conv_empty_batch) {
  const int64_t xd[4] = {0, 2, 5, 5}, wd[4] = {3, 2, 3, 3},
                yd[4] = {0, 3, 3, 3};
  float wv[54] = {0};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, NULL),
            w = view(TS_DTYPE_FLOAT, 4, wd, wv), y;
  const ts_tensor *in[2] = {&x, &w};
  run_ok(op_model("Conv", 13, in, 2, 2, 1, 1, NULL), in, 2, 2, &y, 1,
         "empty batch");
  kc_assert_shape(&y, yd, 4, "empty batch");
  ts_tensor_free(&y);
}
END_TEST

START_TEST(test_conv_bad) {
  static float buf[4096];
  int64_t xd[4] = {1, 4, 5, 5}, wd[4] = {6, 2, 3, 3}, bd[1] = {6};
  const int64_t k33[] = {3, 3}, k22[] = {2, 2}, pads3[] = {1, 1, 1},
                strides01[] = {0, 1}, pads_neg[] = {-1, 0, 0, 0};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, buf),
            w = view(TS_DTYPE_FLOAT, 4, wd, buf),
            b = view(TS_DTYPE_FLOAT, 1, bd, buf), y;
  const ts_tensor *in[3] = {&x, &w, &b};
  Onnx__NodeProto *n;
  /* The base case is valid. */
  Onnx__ModelProto *m = op_model("Conv", 13, in, 3, 6, 0, 1, &n);
  kc_attr_int(n, "group", 2);
  run_ok(m, in, 3, 6, &y, 1, "valid conv");
  ts_tensor_free(&y);
#define CONV_BAD(code, needle, ...)               \
  do {                                            \
    m = op_model("Conv", 13, in, 3, 6, 0, 1, &n); \
    __VA_ARGS__;                                  \
    expect_fail(m, in, 3, 6, 1, code, needle);    \
  } while (0)
  /* Unsupported attributes and values. */
  CONV_BAD(TS_EUNSUPPORTED, "'foo'", kc_attr_int(n, "group", 2),
           kc_attr_int(n, "foo", 1));
  CONV_BAD(TS_EUNSUPPORTED, "'auto_pad'", kc_attr_int(n, "group", 2),
           kc_attr_string(n, "auto_pad", "SAME_MIDDLE"));
  /* Malformed attribute values. */
  CONV_BAD(TS_EINVAL, "'strides'", kc_attr_int(n, "group", 2),
           kc_attr_ints(n, "strides", 2, strides01));
  CONV_BAD(TS_EINVAL, "'pads'", kc_attr_int(n, "group", 2),
           kc_attr_ints(n, "pads", 4, pads_neg));
  CONV_BAD(TS_EINVAL, "'pads'", kc_attr_int(n, "group", 2),
           kc_attr_ints(n, "pads", 3, pads3));
  CONV_BAD(TS_EINVAL, "'kernel_shape'", kc_attr_int(n, "group", 2),
           kc_attr_ints(n, "kernel_shape", 2, k22));
  CONV_BAD(TS_EINVAL, "'group'", kc_attr_int(n, "group", 0));
  /* An attribute of the wrong type is malformed, not a silent default. */
  CONV_BAD(TS_EINVAL, "'group'", kc_attr_float(n, "group", 2.0f));
  /* A consistent kernel_shape is fine. */
  m = op_model("Conv", 13, in, 3, 6, 0, 1, &n);
  kc_attr_int(n, "group", 2);
  kc_attr_ints(n, "kernel_shape", 2, k33);
  run_ok(m, in, 3, 6, &y, 1, "kernel_shape given");
  ts_tensor_free(&y);
  /* Channels not divisible by group. */
  CONV_BAD(TS_EINVAL, "not divisible by group 3", kc_attr_int(n, "group", 3));
  /* Weight / input channel mismatch (group 1: W has 2, X has 4). */
  CONV_BAD(TS_EINVAL, "input channels per group", (void)0);
  /* Output channels not divisible by group. */
  wd[0] = 5;
  w = view(TS_DTYPE_FLOAT, 4, wd, buf);
  in[2] = NULL;
  CONV_BAD(TS_EINVAL, "output channels", kc_attr_int(n, "group", 2));
  wd[0] = 6;
  w = view(TS_DTYPE_FLOAT, 4, wd, buf);
  in[2] = &b;
  /* Bias of the wrong length. */
  bd[0] = 5;
  b = view(TS_DTYPE_FLOAT, 1, bd, buf);
  CONV_BAD(TS_EINVAL, "bias", kc_attr_int(n, "group", 2));
  bd[0] = 6;
  b = view(TS_DTYPE_FLOAT, 1, bd, buf);
  /* Input smaller than the kernel. */
  xd[2] = 2;
  x = view(TS_DTYPE_FLOAT, 4, xd, buf);
  CONV_BAD(TS_EINVAL, "kernel extent", kc_attr_int(n, "group", 2));
  xd[2] = 5;
  x = view(TS_DTYPE_FLOAT, 4, xd, buf);
  /* Weight rank differs from the input's. */
  w = view(TS_DTYPE_FLOAT, 3, wd, buf);
  CONV_BAD(TS_EINVAL, "rank", kc_attr_int(n, "group", 2));
  w = view(TS_DTYPE_FLOAT, 4, wd, buf);
  /* Not float. */
  x = view(TS_DTYPE_DOUBLE, 4, xd, buf);
  CONV_BAD(TS_EUNSUPPORTED, "float", kc_attr_int(n, "group", 2));
  /* Rank-2 input: no spatial dims. */
  x = view(TS_DTYPE_FLOAT, 2, xd, buf);
  w = view(TS_DTYPE_FLOAT, 2, wd, buf);
  CONV_BAD(TS_EINVAL, "rank", (void)0);
  /* Four spatial dims are beyond what is implemented. */
  const int64_t x6[6] = {1, 1, 2, 2, 2, 2}, w6[6] = {1, 1, 1, 1, 1, 1};
  x = view(TS_DTYPE_FLOAT, 6, x6, buf);
  w = view(TS_DTYPE_FLOAT, 6, w6, buf);
  in[2] = NULL;
  CONV_BAD(TS_EUNSUPPORTED, "rank", (void)0);
  /* A symbolic channel dim hides the group mismatch until run time. */
  x = view(TS_DTYPE_FLOAT, 4, xd, buf);
  w = view(TS_DTYPE_FLOAT, 4, wd, buf);
  m = op_model("Conv", 13, in, 2, 2, 1 << 1, 1, &n);
  kc_attr_int(n, "group", 3);
  expect_fail(m, in, 2, 2, 1, TS_EINVAL, "not divisible by group 3");
#undef CONV_BAD
}
END_TEST

/* ------------------------------------------------------------------------ */
/* MaxPool, AveragePool                                                     */
/* ------------------------------------------------------------------------ */

/* Pooling by definition: for each output, the taps t = start + j * dilation
 * (start = o * stride - pad_begin); "valid" taps lie in the input, "padded"
 * ones in [-pad_begin, in + pad_end). max over valid taps (first maximum
 * wins; index row-major in the whole input); average = sum of valid taps /
 * (count_include_pad ? padded count : valid count). */
static void ref_pool(const wcase *c, int64_t C, bool is_max, const float *x,
                     double *y, double *mag, double *idx) {
  const int64_t plane_in = vol3(c->in), plane_out = vol3(c->out),
                kvol = vol3(c->k);
  for (int64_t p = 0; p < c->batch * C; p++)
    for (int64_t q = 0; q < plane_out; q++) {
      int64_t o[3], best_at = -1, valid = 0, padded = 1;
      double best = -INFINITY, sum = 0.0, abs_sum = 0.0;
      kc_unravel(q, c->out, 3, o);
      for (int j = 0; j < 3; j++) {
        int64_t cnt = 0;
        for (int64_t t = 0; t < c->k[j]; t++)
          if (o[j] * c->s[j] - c->pb[j] + t * c->d[j] < c->in[j] + c->pe[j])
            cnt++;
        padded *= cnt;
      }
      for (int64_t t = 0; t < kvol; t++) {
        const int64_t off = tap_offset(c, o, t);
        if (off < 0) continue;
        const double v = x[p * plane_in + off];
        valid++;
        sum += v;
        abs_sum += fabs(v);
        if (v > best) {
          best = v;
          best_at = p * plane_in + off;
        }
      }
      const int64_t div = c->include_pad ? padded : valid,
                    at = p * plane_out + q;
      y[at] = is_max ? best : div ? sum / (double)div : 0.0;
      mag[at] = is_max ? 0.0 : div ? abs_sum / (double)div : 0.0;
      idx[at] = (double)best_at;
    }
}

static void check_pool(const wcase *c, int64_t C, bool is_max,
                       bool want_indices, const char *what) {
  int64_t xd[5], yd[5];
  const int rank = nchw_dims(c, C, c->in, xd);
  nchw_dims(c, C, c->out, yd);
  const int64_t ny = ts_shape_numel(yd, rank);
  ts_tensor x, y[2];
  rand_float(&x, rank, xd);
  double *want = alloc_f64(ny), *mag = alloc_f64(ny), *idx = alloc_f64(ny);
  ref_pool(c, C, is_max, x.data, want, mag, idx);
  const ts_tensor *in[1] = {&x};
  const int n_out = want_indices ? 2 : 1;
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = op_model(is_max ? "MaxPool" : "AveragePool", 12, in, 1,
                                 0, 1, n_out, &node);
  window_attrs(c, true, node);
  if (!is_max && (c->include_pad || rnd(0, 1)))
    kc_attr_int(node, "count_include_pad", c->include_pad);
  if (is_max && rnd(0, 1)) kc_attr_int(node, "storage_order", 0);
  expect_inferred(m, yd, rank, what);
  run_ok(m, in, 1, 0, y, n_out, what);
  if (is_max)
    kc_assert_close(&y[0], want, yd, rank, 0.0, 0.0, what);
  else
    expect_close_mag(&y[0], want, mag, yd, rank, 2e-6, what);
  if (want_indices) {
    ck_assert_int_eq(y[1].dtype, TS_DTYPE_INT64);
    kc_assert_close(&y[1], idx, yd, rank, 0.0, 0.0, what);
    ts_tensor_free(&y[1]);
  }
  ts_tensor_free(&x), ts_tensor_free(&y[0]);
  free(want), free(mag), free(idx);
}

/* 300 random cases of MaxPool (a third with Indices) or AveragePool. */
static void pool_random(uint64_t seed, bool is_max) {
  rng = kc_rng_seed(seed);
  for (int it = 0; it < 300; it++) {
    wcase c;
    random_window(&c, true);
    char what[320];
    describe(&c, what, sizeof what, "%s case %d",
             is_max ? "MaxPool" : "AveragePool", it);
    check_pool(&c, rnd(1, 3), is_max, is_max && it % 3 == 0, what);
  }
}

START_TEST(test_max_pool_random) { pool_random(21, true); }
END_TEST

START_TEST(test_average_pool_random) { pool_random(22, false); }
END_TEST

/* The 2-D fast path (no dilation, no Indices) against the reference on a
 * grid that covers what it splits on: inputs with odd sizes larger than
 * the windows (interior and border columns and rows), pads on all sides
 * (asymmetric), strides 1-3, kernels 1-5, ceil_mode and count_include_pad
 * both ways; 1-D pools go the same way. Each case is also run with
 * dilation 2 and with Indices, which take the generic path, so both paths
 * meet the same reference. */
START_TEST(test_pool_fast_path) {
  rng = kc_rng_seed(23);
  static const int64_t kernels[][2] = {{1, 1}, {2, 2}, {3, 3}, {2, 3}, {5, 4}};
  int cases = 0;
  for (size_t kk = 0; kk < sizeof kernels / sizeof kernels[0]; kk++)
    for (int64_t s = 1; s <= 3; s++)
      for (int variant = 0; variant < 4; variant++) {
        wcase c;
        unit_window(&c, variant == 3 ? 1 : 2);
        c.batch = 2;
        c.give_kernel = c.give_strides = true;
        c.ceil = variant & 1;
        c.include_pad = variant >= 2;
        for (int j = 3 - c.nsp; j < 3; j++) {
          c.k[j] = kernels[kk][j - 1 < 0 ? 0 : j - 1];
          c.s[j] = j == 1 ? s : 4 - s; /* different strides per dim */
          c.in[j] = j == 1 ? 11 : 13;
          if (variant >= 1 && c.k[j] > 1) { /* pads on every side */
            c.give_pads = true;
            c.pb[j] = c.k[j] - 1;
            c.pe[j] = c.k[j] / 2;
          }
        }
        for (int form = 0; form < 3; form++) {
          wcase f = c;
          if (form == 1) { /* dilation: the generic path */
            f.give_dilations = true;
            for (int j = 3 - f.nsp; j < 3; j++) f.d[j] = 2;
          }
          ref_geometry(&f);
          for (int is_max = 0; is_max < 2; is_max++) {
            if (form == 2 && !is_max) continue; /* Indices: MaxPool only */
            char what[320];
            describe(&f, what, sizeof what, "%s fast-path grid %d form %d",
                     is_max ? "MaxPool" : "AveragePool", cases, form);
            check_pool(&f, 3, is_max, form == 2, what);
          }
        }
        cases++;
      }
}
END_TEST

/* MaxPool propagates NaN from any tap of a window and gives -inf for a
 * window of -inf, on the fast path and on the generic one (reached by
 * asking for Indices) alike. */
START_TEST(test_max_pool_nan) {
  float xv[2][20];
  for (int p = 0; p < 2; p++) {
    for (int i = 0; i < 20; i++) xv[p][i] = (float)i;
    xv[p][7] = NAN; /* window (0, 1) of a 2x2 stride-2 pool on 4x5 */
    xv[p][12] = xv[p][13] = xv[p][17] = xv[p][18] = -INFINITY; /* (1, 1) */
  }
  const int64_t xd[4] = {1, 2, 4, 5}, k2[] = {2, 2}, s2[] = {2, 2};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, xv);
  const ts_tensor *in[1] = {&x};
  for (int generic = 0; generic < 2; generic++) {
    Onnx__NodeProto *n;
    Onnx__ModelProto *m =
        op_model("MaxPool", 12, in, 1, 0, 0, generic ? 2 : 1, &n);
    kc_attr_ints(n, "kernel_shape", 2, k2);
    kc_attr_ints(n, "strides", 2, s2);
    ts_tensor out[2];
    run_ok(m, in, 1, 0, out, generic ? 2 : 1, "MaxPool NaN");
    const float *v = out[0].data;
    ck_assert_int_eq(ts_tensor_numel(&out[0]), 8);
    for (int p = 0; p < 2; p++) {
      ck_assert_float_eq(v[p * 4 + 0], 6.0f);
      ck_assert_msg(isnan(v[p * 4 + 1]), "NaN lost (generic %d)", generic);
      ck_assert_float_eq(v[p * 4 + 2], 16.0f);
      ck_assert_msg(v[p * 4 + 3] == -INFINITY, "got %g (generic %d)",
                    (double)v[p * 4 + 3], generic);
    }
    ts_tensor_free(&out[0]);
    if (generic) ts_tensor_free(&out[1]);
  }
}
END_TEST

/* The ONNX operator docs' examples averagepool_2d_ceil and maxpool_2d_ceil,
 * and a count_include_pad corner worked by hand. */
START_TEST(test_pool_documented) {
  float xv[16];
  for (int i = 0; i < 16; i++) xv[i] = (float)(i + 1);
  const int64_t xd[4] = {1, 1, 4, 4}, yd[4] = {1, 1, 2, 2}, k3[] = {3, 3},
                s2[] = {2, 2}, k2[] = {2, 2}, p1[] = {1, 1, 1, 1};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, xv), y;
  const ts_tensor *in[1] = {&x};
  const double avg[] = {6, 7.5, 12, 13.5}, mx[] = {11, 12, 15, 16};
  for (int is_max = 0; is_max < 2; is_max++) {
    Onnx__NodeProto *n;
    Onnx__ModelProto *m =
        op_model(is_max ? "MaxPool" : "AveragePool", 12, in, 1, 0, 0, 1, &n);
    kc_attr_ints(n, "kernel_shape", 2, k3);
    kc_attr_ints(n, "strides", 2, s2);
    kc_attr_int(n, "ceil_mode", 1);
    run_ok(m, in, 1, 0, &y, 1, "pool_2d_ceil");
    kc_assert_close(&y, is_max ? mx : avg, yd, 4, 0.0, 1e-6, "pool_2d_ceil");
    ts_tensor_free(&y);
  }
  /* 2x2 kernel, pads 1 all round, count_include_pad: the corner output
   * averages x[0] = 1 with three padding zeros. */
  Onnx__NodeProto *n;
  Onnx__ModelProto *m = op_model("AveragePool", 12, in, 1, 0, 0, 1, &n);
  kc_attr_ints(n, "kernel_shape", 2, k2);
  kc_attr_ints(n, "pads", 4, p1);
  kc_attr_int(n, "count_include_pad", 1);
  run_ok(m, in, 1, 0, &y, 1, "count_include_pad corner");
  ck_assert_int_eq(y.dims[2], 5);
  ck_assert_float_eq_tol(((float *)y.data)[0], 0.25f, 1e-7f);
  ck_assert_float_eq_tol(((float *)y.data)[1], (1.0f + 2.0f) / 4.0f, 1e-7f);
  ts_tensor_free(&y);
}
END_TEST

START_TEST(test_pool_bad) {
  static float buf[64];
  const int64_t xd[4] = {1, 2, 4, 4}, k2[] = {2, 2}, k3[] = {2, 2, 2},
                k9[] = {9, 2}, dil10[] = {1, 0}, ones3[] = {1, 1, 1};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, buf), y;
  const ts_tensor *in[1] = {&x};
  Onnx__NodeProto *n;
  /* storage_order 1 is fine without Indices, unsupported with them. */
  Onnx__ModelProto *m = op_model("MaxPool", 12, in, 1, 0, 0, 1, &n);
  kc_attr_ints(n, "kernel_shape", 2, k2);
  kc_attr_int(n, "storage_order", 1);
  run_ok(m, in, 1, 0, &y, 1, "storage_order without Indices");
  ts_tensor_free(&y);
#define POOL_BAD(op, n_out, code, needle, ...)     \
  do {                                             \
    m = op_model(op, 12, in, 1, 0, 0, n_out, &n);  \
    __VA_ARGS__;                                   \
    expect_fail(m, in, 1, 0, n_out, code, needle); \
  } while (0)
  POOL_BAD("MaxPool", 2, TS_EUNSUPPORTED, "'storage_order'",
           kc_attr_ints(n, "kernel_shape", 2, k2),
           kc_attr_int(n, "storage_order", 1));
  POOL_BAD("MaxPool", 1, TS_EINVAL, "'kernel_shape'", (void)0);
  POOL_BAD("MaxPool", 1, TS_EINVAL, "'ceil_mode'",
           kc_attr_ints(n, "kernel_shape", 2, k2),
           kc_attr_int(n, "ceil_mode", 2));
  POOL_BAD("MaxPool", 1, TS_EUNSUPPORTED, "'count_include_pad'",
           kc_attr_ints(n, "kernel_shape", 2, k2),
           kc_attr_int(n, "count_include_pad", 1));
  POOL_BAD("AveragePool", 1, TS_EUNSUPPORTED, "'auto_pad'",
           kc_attr_ints(n, "kernel_shape", 2, k2),
           kc_attr_string(n, "auto_pad", "FULL"));
  POOL_BAD("AveragePool", 1, TS_EINVAL, "'auto_pad'",
           kc_attr_ints(n, "kernel_shape", 2, k2),
           kc_attr_int(n, "auto_pad", 1));
  POOL_BAD("MaxPool", 1, TS_EINVAL, "'kernel_shape'",
           kc_attr_int(n, "kernel_shape", 2));
  POOL_BAD("AveragePool", 1, TS_EINVAL, "'dilations'",
           kc_attr_ints(n, "kernel_shape", 2, k2),
           kc_attr_ints(n, "dilations", 2, dil10));
  POOL_BAD("AveragePool", 1, TS_EINVAL, "'strides'",
           kc_attr_ints(n, "kernel_shape", 2, k2),
           kc_attr_ints(n, "strides", 3, ones3));
  POOL_BAD("AveragePool", 1, TS_EINVAL, "'kernel_shape'",
           kc_attr_ints(n, "kernel_shape", 3, k3));
  POOL_BAD("MaxPool", 1, TS_EINVAL, "kernel extent",
           kc_attr_ints(n, "kernel_shape", 2, k9));
  x = view(TS_DTYPE_INT32, 4, xd, buf);
  POOL_BAD("MaxPool", 1, TS_EUNSUPPORTED, "float",
           kc_attr_ints(n, "kernel_shape", 2, k2));
#undef POOL_BAD
}
END_TEST

/* ------------------------------------------------------------------------ */
/* GlobalAveragePool, GlobalMaxPool                                         */
/* ------------------------------------------------------------------------ */

START_TEST(test_global_pools) {
  rng = kc_rng_seed(31);
  for (int it = 0; it < 60; it++) {
    const int rank = (int)rnd(3, 5);
    int64_t xd[5], yd[5];
    xd[0] = yd[0] = rnd(0, 1) ? 3 : 1;
    xd[1] = yd[1] = rnd(1, 4);
    for (int d = 2; d < rank; d++) {
      xd[d] = rnd(1, rank == 5 ? 4 : 9);
      yd[d] = 1;
    }
    ts_tensor x, y;
    rand_float(&x, rank, xd);
    const float *xv = x.data;
    const int64_t planes = xd[0] * xd[1], plane = ts_tensor_numel(&x) / planes;
    double *avg = alloc_f64(planes), *mag = alloc_f64(planes),
           *mx = alloc_f64(planes);
    for (int64_t p = 0; p < planes; p++) {
      avg[p] = mag[p] = 0.0;
      mx[p] = -INFINITY;
      for (int64_t i = 0; i < plane; i++) {
        const double v = xv[p * plane + i];
        avg[p] += v / (double)plane;
        mag[p] += fabs(v) / (double)plane;
        if (v > mx[p]) mx[p] = v;
      }
    }
    const ts_tensor *in[1] = {&x};
    Onnx__ModelProto *m =
        op_model("GlobalAveragePool", 13, in, 1, 0, 1, 1, NULL);
    expect_inferred(m, yd, rank, "GlobalAveragePool");
    run_ok(m, in, 1, 0, &y, 1, "GlobalAveragePool");
    expect_close_mag(&y, avg, mag, yd, rank, 1e-6, "GlobalAveragePool");
    ts_tensor_free(&y);
    run_ok(op_model("GlobalMaxPool", 13, in, 1, 0, 1, 1, NULL), in, 1, 0, &y, 1,
           "GlobalMaxPool");
    kc_assert_close(&y, mx, yd, rank, 0.0, 0.0, "GlobalMaxPool");
    ts_tensor_free(&y);
    ts_tensor_free(&x);
    free(avg), free(mag), free(mx);
  }
  static float buf[8];
  const int64_t d2[2] = {2, 4}, d0[4] = {1, 2, 0, 3};
  ts_tensor x = view(TS_DTYPE_FLOAT, 2, d2, buf);
  const ts_tensor *in[1] = {&x};
  expect_fail(op_model("GlobalAveragePool", 13, in, 1, 0, 0, 1, NULL), in, 1, 0,
              1, TS_EINVAL, "rank");
  Onnx__NodeProto *n;
  Onnx__ModelProto *m = op_model("GlobalMaxPool", 13, in, 1, 0, 0, 1, &n);
  kc_attr_int(n, "keepdims", 1);
  expect_fail(m, in, 1, 0, 1, TS_EUNSUPPORTED, "'keepdims'");
  x = view(TS_DTYPE_FLOAT, 4, d0, buf);
  expect_fail(op_model("GlobalMaxPool", 13, in, 1, 0, 0, 1, NULL), in, 1, 0, 1,
              TS_EINVAL, "empty");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* BatchNormalization                                                       */
/* ------------------------------------------------------------------------ */

START_TEST(test_batch_normalization) {
  rng = kc_rng_seed(41);
  for (int it = 0; it < 60; it++) {
    const int rank = (int)rnd(2, 5);
    int64_t xd[5];
    xd[0] = rnd(0, 1) ? 3 : 1;
    xd[1] = rnd(1, 5);
    for (int d = 2; d < rank; d++) xd[d] = rnd(1, 6);
    const int64_t C = xd[1];
    ts_tensor x, p[4], y;
    rand_float(&x, rank, xd);
    for (int k = 0; k < 4; k++) rand_float(&p[k], 1, &C);
    float *gamma = p[0].data, *beta = p[1].data, *mean = p[2].data,
          *var = p[3].data;
    const float *xv = x.data;
    for (int64_t c = 0; c < C; c++) var[c] = var[c] * var[c] + 0.1f;
    const bool give_eps = rnd(0, 1);
    const float eps = give_eps ? 1e-2f : 1e-5f;
    const int64_t nx = ts_tensor_numel(&x), plane = nx / (xd[0] * C);
    double *want = alloc_f64(nx), *mag = alloc_f64(nx);
    for (int64_t i = 0; i < nx; i++) {
      const int64_t c = i / plane % C;
      const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
      want[i] = ((double)xv[i] - mean[c]) * inv * gamma[c] + beta[c];
      mag[i] =
          (fabs(xv[i]) + fabs(mean[c])) * inv * fabs(gamma[c]) + fabs(beta[c]);
    }
    const bool runtime = it % 2; /* parameters as graph inputs */
    const unsigned consts = runtime ? 0 : 0x1e;
    const ts_tensor *in[5] = {&x, &p[0], &p[1], &p[2], &p[3]};
    Onnx__NodeProto *n;
    Onnx__ModelProto *m =
        op_model("BatchNormalization", 15, in, 5, consts, 1, 1, &n);
    if (give_eps) kc_attr_float(n, "epsilon", eps);
    kc_attr_float(n, "momentum", 0.9f);
    if (!runtime) expect_inferred(m, xd, rank, "BatchNormalization");
    run_ok(m, in, 5, consts, &y, 1, "BatchNormalization");
    expect_close_mag(&y, want, mag, xd, rank, 2e-6, "BatchNormalization");
    ts_tensor_free(&x), ts_tensor_free(&y);
    for (int k = 0; k < 4; k++) ts_tensor_free(&p[k]);
    free(want), free(mag);
  }
}
END_TEST

START_TEST(test_batch_normalization_bad) {
  static float buf[64];
  const int64_t xd[4] = {1, 3, 2, 2}, cd[1] = {3}, c4[1] = {4};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, buf),
            p = view(TS_DTYPE_FLOAT, 1, cd, buf),
            q = view(TS_DTYPE_FLOAT, 1, c4, buf), y;
  const ts_tensor *in[5] = {&x, &p, &p, &p, &p};
  Onnx__NodeProto *n;
  Onnx__ModelProto *m;
  run_ok(op_model("BatchNormalization", 15, in, 5, 0x1e, 0, 1, NULL), in, 5,
         0x1e, &y, 1, "valid BatchNormalization");
  ts_tensor_free(&y);
  m = op_model("BatchNormalization", 15, in, 5, 0x1e, 0, 1, &n);
  kc_attr_int(n, "training_mode", 1);
  expect_fail(m, in, 5, 0x1e, 1, TS_EUNSUPPORTED, "'training_mode'");
  /* Training-mode outputs. */
  expect_fail(op_model("BatchNormalization", 15, in, 5, 0x1e, 0, 3, NULL), in,
              5, 0x1e, 3, TS_EUNSUPPORTED, "training mode");
  m = op_model("BatchNormalization", 8, in, 5, 0x1e, 0, 1, &n);
  kc_attr_int(n, "spatial", 0);
  expect_fail(m, in, 5, 0x1e, 1, TS_EUNSUPPORTED, "'spatial'");
  /* A parameter whose length is not the channel count: caught at load when
   * constant, at run when X's channels are symbolic and mean is fed. */
  in[3] = &q;
  expect_fail(op_model("BatchNormalization", 15, in, 5, 0x1e, 0, 1, NULL), in,
              5, 0x1e, 1, TS_EINVAL, "input_mean");
  expect_fail(op_model("BatchNormalization", 15, in, 5, 0x16, 1 << 1, 1, NULL),
              in, 5, 0x16, 1, TS_EINVAL, "input_mean");
  ts_tensor scalar = view(TS_DTYPE_FLOAT, 0, cd, buf);
  in[3] = &scalar;
  expect_fail(op_model("BatchNormalization", 15, in, 5, 0x1e, 0, 1, NULL), in,
              5, 0x1e, 1, TS_EINVAL, "input_mean");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Pad                                                                      */
/* ------------------------------------------------------------------------ */

enum { P_CONSTANT, P_REFLECT, P_EDGE, P_WRAP };
static const char *const pad_mode_str[] = {"constant", "reflect", "edge",
                                           "wrap"};

/* The source index of output index o along an axis of length len, by
 * folding the index back into range step by step; -1 for the constant. */
static int64_t ref_pad_index(int mode, int64_t o, int64_t pb, int64_t len) {
  int64_t i = o - pb;
  if (i >= 0 && i < len) return i;
  switch (mode) {
    case P_CONSTANT:
      return -1;
    case P_EDGE:
      return i < 0 ? 0 : len - 1;
    case P_WRAP:
      while (i < 0) i += len;
      while (i >= len) i -= len;
      return i;
    default: /* reflect about the first and last element */
      while (i < 0 || i >= len) {
        if (len == 1) return 0;
        i = i < 0 ? -i : 2 * (len - 1) - i;
      }
      return i;
  }
}

/* Type-blind: copies element bytes. */
static void ref_pad(int mode, const uint8_t *x, const int64_t *xd, int rank,
                    const int64_t *pb, const int64_t *yd, size_t esize,
                    const uint8_t *fill, uint8_t *y) {
  const int64_t ny = ts_shape_numel(yd, rank);
  for (int64_t flat = 0; flat < ny; flat++) {
    int64_t o[TS_MAX_RANK], src = 0;
    bool constant = false;
    kc_unravel(flat, yd, rank, o);
    for (int d = 0; d < rank; d++) {
      const int64_t i = ref_pad_index(mode, o[d], pb[d], xd[d]);
      if (i < 0) constant = true;
      src = src * xd[d] + i;
    }
    memcpy(y + flat * (int64_t)esize,
           constant ? fill : x + src * (int64_t)esize, esize);
  }
}

START_TEST(test_pad_random) {
  rng = kc_rng_seed(51);
  static const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_INT64,
                                   TS_DTYPE_UINT8, TS_DTYPE_INT16};
  for (int it = 0; it < 300; it++) {
    const int rank = (int)rnd(1, 4), mode = (int)rnd(0, 3);
    const ts_dtype dt = types[rnd(0, 3)];
    const size_t esize = ts_dtype_size(dt);
    int64_t xd[4], yd[4], pads[8];
    for (int d = 0; d < rank; d++) {
      xd[d] = rnd(mode == P_CONSTANT ? 0 : 1, 5);
      const int64_t most = mode == P_REFLECT ? xd[d] - 1
                           : mode == P_WRAP  ? xd[d]
                                             : 3;
      pads[d] = rnd(-xd[d] / 2, most);
      pads[rank + d] = rnd(-(xd[d] + pads[d]) / 2, most);
      yd[d] = xd[d] + pads[d] + pads[rank + d];
    }
    ts_tensor x, y;
    kc_tensor_from(&x, dt, rank, xd, NULL);
    for (size_t i = 0; i < x.nbytes; i++)
      ((uint8_t *)x.data)[i] = (uint8_t)kc_next(&rng);
    uint8_t fill[8] = {0};
    const bool give_value = rnd(0, 1), runtime_pads = rnd(0, 1);
    if (give_value)
      for (size_t i = 0; i < esize; i++) fill[i] = (uint8_t)kc_next(&rng);
    uint8_t *want = malloc((size_t)ts_shape_numel(yd, rank) * esize + 1);
    ref_pad(mode, x.data, xd, rank, pads, yd, esize, fill, want);
    const int64_t pd[1] = {2 * rank}, one[1] = {1};
    ts_tensor pt = view(TS_DTYPE_INT64, 1, pd, pads),
              vt = view(dt, (int)rnd(0, 1), one, fill);
    const ts_tensor *in[3] = {&x, &pt, give_value ? &vt : NULL};
    const unsigned consts = (runtime_pads ? 0 : 2) | 4;
    char what[128];
    snprintf(what, sizeof what, "Pad case %d (%s, rank %d, %s)", it,
             pad_mode_str[mode], rank, ts_dtype_name(dt));
    Onnx__NodeProto *n;
    Onnx__ModelProto *m = op_model("Pad", 13, in, 3, consts, 1, 1, &n);
    if (mode != P_CONSTANT || rnd(0, 1))
      kc_attr_string(n, "mode", pad_mode_str[mode]);
    if (!runtime_pads && rank > 1) expect_inferred(m, yd, rank, what);
    run_ok(m, in, 3, consts, &y, 1, what);
    expect_bytes(&y, dt, want, yd, rank, what);
    ts_tensor_free(&x), ts_tensor_free(&y);
    free(want);
  }
}
END_TEST

/* Opset < 11: pads and value are attributes. */
START_TEST(test_pad_attribute_form) {
  rng = kc_rng_seed(52);
  const int64_t xd[2] = {3, 4}, pads[4] = {1, 0, 2, 3}, yd[2] = {6, 7};
  const float value = 2.5f;
  float want[42];
  ts_tensor x, y;
  rand_float(&x, 2, xd);
  const ts_tensor *in[1] = {&x};
  for (int mode = P_CONSTANT; mode <= P_EDGE; mode += P_EDGE) {
    ref_pad(mode, x.data, xd, 2, pads, yd, 4, (const uint8_t *)&value,
            (uint8_t *)want);
    Onnx__NodeProto *n;
    Onnx__ModelProto *m = op_model("Pad", 10, in, 1, 0, 0, 1, &n);
    kc_attr_ints(n, "pads", 4, pads);
    kc_attr_float(n, "value", value);
    kc_attr_string(n, "mode", pad_mode_str[mode]);
    run_ok(m, in, 1, 0, &y, 1, "Pad-2");
    expect_bytes(&y, TS_DTYPE_FLOAT, want, yd, 2, "Pad-2");
    ts_tensor_free(&y);
  }
  /* The attribute form's errors: pads missing, or not 2 per axis. */
  Onnx__NodeProto *n;
  Onnx__ModelProto *m = op_model("Pad", 10, in, 1, 0, 0, 1, &n);
  kc_attr_float(n, "value", value);
  expect_fail(m, in, 1, 0, 1, TS_EINVAL, "'pads'");
  m = op_model("Pad", 10, in, 1, 0, 0, 1, &n);
  kc_attr_ints(n, "pads", 3, pads);
  expect_fail(m, in, 1, 0, 1, TS_EINVAL, "'pads'");
  ts_tensor_free(&x);
}
END_TEST

START_TEST(test_pad_bad) {
  static float buf[64];
  const int64_t xd[2] = {3, 4}, pd[1] = {4}, p3[1] = {3}, one[1] = {1};
  int64_t pads[4] = {1, 1, 1, 1};
  ts_tensor x = view(TS_DTYPE_FLOAT, 2, xd, buf),
            pt = view(TS_DTYPE_INT64, 1, pd, pads), vt, y;
  const ts_tensor *in[3] = {&x, &pt, NULL};
  Onnx__NodeProto *n;
  Onnx__ModelProto *m;
  run_ok(op_model("Pad", 13, in, 2, 2, 0, 1, NULL), in, 2, 2, &y, 1,
         "valid Pad");
  ts_tensor_free(&y);
#define PAD_BAD(n_in, consts, code, needle, ...)         \
  do {                                                   \
    m = op_model("Pad", 13, in, n_in, consts, 0, 1, &n); \
    __VA_ARGS__;                                         \
    expect_fail(m, in, n_in, consts, 1, code, needle);   \
  } while (0)
  PAD_BAD(2, 2, TS_EUNSUPPORTED, "'mode'",
          kc_attr_string(n, "mode", "symmetric"));
  /* reflect beyond one reflection: refused rather than guessed. */
  pads[2] = 3;
  PAD_BAD(2, 2, TS_EUNSUPPORTED, "reflect",
          kc_attr_string(n, "mode", "reflect"));
  pads[2] = 1;
  /* Cropping below zero. */
  pads[1] = -3;
  pads[3] = -2;
  PAD_BAD(2, 2, TS_EINVAL, "negative", (void)0);
  pads[1] = pads[3] = 1;
  /* Wrong number of pads, wrong type, constant_value of another type or
   * size. */
  pt = view(TS_DTYPE_INT64, 1, p3, pads);
  PAD_BAD(2, 2, TS_EINVAL, "'pads'", (void)0);
  pt = view(TS_DTYPE_INT32, 1, pd, pads);
  PAD_BAD(2, 2, TS_EINVAL, "int64", (void)0);
  pt = view(TS_DTYPE_INT64, 1, pd, pads);
  vt = view(TS_DTYPE_INT64, 1, one, pads);
  in[2] = &vt;
  PAD_BAD(3, 6, TS_EINVAL, "constant_value", (void)0);
  vt = view(TS_DTYPE_FLOAT, 1, p3, buf);
  PAD_BAD(3, 6, TS_EINVAL, "constant_value", (void)0);
  in[2] = NULL;
  /* pads missing in the input form; the attribute form's pads in it. */
  PAD_BAD(1, 0, TS_EINVAL, "'pads'", (void)0);
  PAD_BAD(2, 2, TS_EUNSUPPORTED, "'pads'", kc_attr_ints(n, "pads", 4, pads));
  /* Pads fed at run time are checked at run. */
  pads[1] = -9;
  PAD_BAD(2, 0, TS_EINVAL, "negative", (void)0);
#undef PAD_BAD
}
END_TEST

/* Pad's axes input (opset 18 form; the kernel reads it whenever present):
 * pads apply to the listed axes only, negative axes count from the end. */
START_TEST(test_pad_axes) {
  rng = kc_rng_seed(53);
  const int64_t xd[3] = {2, 3, 4}, yd[3] = {2, 6, 5}, pd[1] = {4}, ad[1] = {2};
  const int64_t pads[4] = {2, 0, 1, 1}, axes[2] = {-2, 2},
                full[6] = {0, 2, 0, 0, 1, 1};
  ts_tensor x, y, pt = view(TS_DTYPE_INT64, 1, pd, pads),
                  at = view(TS_DTYPE_INT64, 1, ad, axes);
  rand_float(&x, 3, xd);
  float want[60];
  ref_pad(P_EDGE, x.data, xd, 3, full, yd, 4, NULL, (uint8_t *)want);
  const ts_tensor *in[4] = {&x, &pt, NULL, &at};
  Onnx__NodeProto *n;
  Onnx__ModelProto *m = op_model("Pad", 13, in, 4, 0xa, 0, 1, &n);
  kc_attr_string(n, "mode", "edge");
  run_ok(m, in, 4, 0xa, &y, 1, "Pad with axes");
  expect_bytes(&y, TS_DTYPE_FLOAT, want, yd, 3, "Pad with axes");
  ts_tensor_free(&y);
  const int64_t dup[2] = {1, -2};
  at = view(TS_DTYPE_INT64, 1, ad, dup);
  expect_fail(op_model("Pad", 13, in, 4, 0xa, 0, 1, NULL), in, 4, 0xa, 1,
              TS_EINVAL, "repeats");
  ts_tensor_free(&x);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Resize, Upsample                                                         */
/* ------------------------------------------------------------------------ */

enum {
  C_HALF_PIXEL,
  C_PYTORCH_HALF_PIXEL,
  C_ALIGN_CORNERS,
  C_ASYMMETRIC,
  C_TF_HALF_PIXEL_FOR_NEAREST,
  C_HALF_PIXEL_SYMMETRIC
};
static const char *const coord_str[] = {
    "half_pixel", "pytorch_half_pixel",        "align_corners",
    "asymmetric", "tf_half_pixel_for_nearest", "half_pixel_symmetric"};
enum { N_ROUND_PREFER_FLOOR, N_ROUND_PREFER_CEIL, N_FLOOR, N_CEIL, N_LEGACY };
static const char *const nearest_str[] = {"round_prefer_floor",
                                          "round_prefer_ceil", "floor", "ceil"};

/* Input index for output index o per the Resize docs. Coordinates are float
 * arithmetic, as in the ONNX reference; N_LEGACY is opset-10 Resize and
 * Upsample: asymmetric, truncated (ceil when downsampling). */
static int64_t ref_resize_index(int coord, int nearest, int64_t o, float scale,
                                int64_t in, int64_t out) {
  const float xo = (float)o, li = (float)in, lo = (float)out;
  float c;
  switch (nearest == N_LEGACY ? C_ASYMMETRIC : coord) {
    case C_HALF_PIXEL:
      c = (xo + 0.5f) / scale - 0.5f;
      break;
    case C_PYTORCH_HALF_PIXEL:
      c = out > 1 ? (xo + 0.5f) / scale - 0.5f : 0.0f;
      break;
    case C_ALIGN_CORNERS:
      c = out == 1 ? 0.0f : xo * (li - 1) / (lo - 1);
      break;
    case C_ASYMMETRIC:
      c = xo / scale;
      break;
    case C_TF_HALF_PIXEL_FOR_NEAREST:
      c = (xo + 0.5f) / scale;
      break;
    default: {
      const float adj = lo / (scale * li);
      c = li / 2 * (1 - adj) + (xo + 0.5f) / scale - 0.5f;
    }
  }
  const float f = floorf(c), frac = c - f;
  int64_t i;
  switch (nearest) {
    case N_ROUND_PREFER_FLOOR:
      i = (int64_t)f + (frac > 0.5f);
      break;
    case N_ROUND_PREFER_CEIL:
      i = (int64_t)f + (frac >= 0.5f);
      break;
    case N_FLOOR:
      i = (int64_t)f;
      break;
    case N_CEIL:
      i = (int64_t)ceilf(c);
      break;
    default:
      i = scale < 1.0f ? (int64_t)ceilf(c) : (int64_t)truncf(c);
  }
  return i < 0 ? 0 : i >= in ? in - 1 : i;
}

/* y[o] = x[index(o)] along every axis. */
static void ref_resize(int coord, int nearest, const float *x,
                       const int64_t *xd, int rank, const float *scales,
                       const int64_t *yd, double *y) {
  const int64_t ny = ts_shape_numel(yd, rank);
  for (int64_t flat = 0; flat < ny; flat++) {
    int64_t o[TS_MAX_RANK], src = 0;
    kc_unravel(flat, yd, rank, o);
    for (int d = 0; d < rank; d++)
      src = src * xd[d] +
            ref_resize_index(coord, nearest, o[d], scales[d], xd[d], yd[d]);
    y[flat] = x[src];
  }
}

START_TEST(test_resize_random) {
  rng = kc_rng_seed(61);
  static const float scale_set[] = {0.5f, 0.6f, 0.75f, 1.0f,
                                    1.5f, 1.7f, 2.0f,  3.0f};
  for (int it = 0; it < 300; it++) {
    const int rank = (int)rnd(3, 4);
    const int coord = (int)rnd(0, 5), nearest = (int)rnd(0, 3);
    const bool by_sizes = rnd(0, 1);
    int64_t xd[4], yd[4], sizes[4];
    float scales[4];
    xd[0] = rnd(0, 1) ? 3 : 1;
    xd[1] = rnd(1, 3);
    for (int d = 0; d < rank; d++) {
      if (d >= 2) xd[d] = rnd(1, 7);
      scales[d] = d < 2 ? 1.0f : scale_set[rnd(0, 7)];
      yd[d] = (int64_t)floorf((float)xd[d] * scales[d]);
      if (by_sizes) {
        yd[d] = sizes[d] = d < 2 ? xd[d] : rnd(1, 2 * xd[d] + 2);
        scales[d] = (float)yd[d] / (float)xd[d];
      }
    }
    ts_tensor x, y;
    rand_float(&x, rank, xd);
    double *want = alloc_f64(ts_shape_numel(yd, rank));
    ref_resize(coord, nearest, x.data, xd, rank, scales, yd, want);
    const int64_t rd[1] = {rank};
    ts_tensor st = view(TS_DTYPE_FLOAT, 1, rd, scales),
              zt = view(TS_DTYPE_INT64, 1, rd, sizes);
    const ts_tensor *in[4] = {&x, NULL, by_sizes ? NULL : &st,
                              by_sizes ? &zt : NULL};
    char what[160];
    snprintf(what, sizeof what, "Resize case %d (%s, %s, by %s)", it,
             coord_str[coord], nearest_str[nearest],
             by_sizes ? "sizes" : "scales");
    Onnx__NodeProto *n;
    Onnx__ModelProto *m = op_model("Resize", 13, in, 4, 0xc, !by_sizes, 1, &n);
    kc_attr_string(n, "mode", "nearest");
    kc_attr_string(n, "coordinate_transformation_mode", coord_str[coord]);
    kc_attr_string(n, "nearest_mode", nearest_str[nearest]);
    if (!by_sizes) expect_inferred(m, yd, rank, what);
    run_ok(m, in, 4, 0xc, &y, 1, what);
    kc_assert_close(&y, want, yd, rank, 0.0, 0.0, what);
    ts_tensor_free(&x), ts_tensor_free(&y);
    free(want);
  }
}
END_TEST

/* Resize-10 and Upsample-7/9: scales only, legacy nearest. */
START_TEST(test_resize_legacy) {
  rng = kc_rng_seed(62);
  static const float scale_set[] = {0.5f, 0.6f, 1.0f, 1.5f, 2.0f, 3.0f};
  for (int it = 0; it < 90; it++) {
    const int form = it % 3; /* Resize-10, Upsample-9, Upsample-7 */
    int64_t xd[4] = {1, 2, rnd(1, 6), rnd(1, 6)}, yd[4];
    float scales[4] = {1, 1, scale_set[rnd(0, 5)], scale_set[rnd(0, 5)]};
    if (form > 0) /* Upsample: scales >= 1 */
      for (int d = 2; d < 4; d++)
        if (scales[d] < 1.0f) scales[d] = 1.0f / scales[d];
    for (int d = 0; d < 4; d++)
      yd[d] = (int64_t)floorf((float)xd[d] * scales[d]);
    ts_tensor x, y;
    rand_float(&x, 4, xd);
    double want[2 * 18 * 18];
    ref_resize(0, N_LEGACY, x.data, xd, 4, scales, yd, want);
    const int64_t rd[1] = {4};
    ts_tensor st = view(TS_DTYPE_FLOAT, 1, rd, scales);
    const ts_tensor *in[2] = {&x, &st};
    static const char *const op[] = {"Resize", "Upsample", "Upsample"};
    static const int64_t opset[] = {10, 9, 7};
    Onnx__NodeProto *n;
    Onnx__ModelProto *m =
        op_model(op[form], opset[form], in, form == 2 ? 1 : 2, 2, 0, 1, &n);
    kc_attr_string(n, "mode", "nearest");
    if (form == 2) kc_attr_floats(n, "scales", 4, scales);
    run_ok(m, in, form == 2 ? 1 : 2, 2, &y, 1, "legacy resize");
    kc_assert_close(&y, want, yd, 4, 0.0, 0.0, op[form]);
    ts_tensor_free(&x), ts_tensor_free(&y);
  }
}
END_TEST

/* Worked examples: the ONNX docs' resize_downsample_scales_nearest, non-float
 * data, and keep_aspect_ratio_policy with axes (opset 18 attributes; the
 * kernel reads them whenever present). */
START_TEST(test_resize_documented) {
  float xv[8] = {1, 2, 3, 4, 5, 6, 7, 8}, sc[4] = {1, 1, 0.6f, 0.6f};
  const int64_t xd[4] = {1, 1, 2, 4}, rd[1] = {4}, yd[4] = {1, 1, 1, 2};
  const double want[2] = {1, 3};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, xv),
            st = view(TS_DTYPE_FLOAT, 1, rd, sc), y;
  const ts_tensor *in[4] = {&x, NULL, &st, NULL};
  run_ok(op_model("Resize", 13, in, 3, 4, 0, 1, NULL), in, 3, 4, &y, 1,
         "resize_downsample_scales_nearest");
  kc_assert_close(&y, want, yd, 4, 0.0, 0.0,
                  "resize_downsample_scales_nearest");
  ts_tensor_free(&y);
  /* uint8 data, upsampled by 2 with asymmetric/floor: each element twice. */
  const uint8_t u[6] = {1, 2, 3, 4, 5, 6},
                uw[12] = {1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6};
  const int64_t ud[3] = {1, 2, 3}, u3[1] = {3}, uyd[3] = {1, 2, 6};
  float us[3] = {1, 1, 2};
  x = view(TS_DTYPE_UINT8, 3, ud, u);
  st = view(TS_DTYPE_FLOAT, 1, u3, us);
  Onnx__NodeProto *n;
  Onnx__ModelProto *m = op_model("Resize", 13, in, 3, 4, 0, 1, &n);
  kc_attr_string(n, "coordinate_transformation_mode", "asymmetric");
  kc_attr_string(n, "nearest_mode", "floor");
  run_ok(m, in, 3, 4, &y, 1, "uint8 resize");
  expect_bytes(&y, TS_DTYPE_UINT8, uw, uyd, 3, "uint8 resize");
  ts_tensor_free(&y);
  /* sizes (8, 9) for axes (2, -1) of a 4x6 image: not_larger scales both by
   * min(8/4, 9/6) = 1.5 to 6x9; not_smaller by 2 to 8x12. */
  rng = kc_rng_seed(63);
  const int64_t id[4] = {1, 1, 4, 6}, sizes[2] = {8, 9}, axes[2] = {2, -1},
                two[1] = {2};
  ts_tensor img, zt = view(TS_DTYPE_INT64, 1, two, sizes);
  rand_float(&img, 4, id);
  in[0] = &img;
  in[2] = NULL;
  in[3] = &zt;
  for (int policy = 0; policy < 2; policy++) {
    const float s = policy ? 2.0f : 1.5f;
    const float scales[4] = {1, 1, s, s};
    const int64_t od[4] = {1, 1, policy ? 8 : 6, policy ? 12 : 9};
    double ref[96];
    ref_resize(C_ASYMMETRIC, N_FLOOR, img.data, id, 4, scales, od, ref);
    m = op_model("Resize", 13, in, 4, 8, 0, 1, &n);
    kc_attr_string(n, "coordinate_transformation_mode", "asymmetric");
    kc_attr_string(n, "nearest_mode", "floor");
    kc_attr_string(n, "keep_aspect_ratio_policy",
                   policy ? "not_smaller" : "not_larger");
    kc_attr_ints(n, "axes", 2, axes);
    run_ok(m, in, 4, 8, &y, 1, "keep_aspect_ratio_policy");
    kc_assert_close(&y, ref, od, 4, 0.0, 0.0, "keep_aspect_ratio_policy");
    ts_tensor_free(&y);
  }
  ts_tensor_free(&img);
}
END_TEST

START_TEST(test_resize_bad) {
  static float buf[64];
  float sc[4] = {1, 1, 2, 2};
  int64_t sizes[4] = {1, 1, 4, 4};
  const int64_t xd[4] = {1, 1, 2, 2}, rd[1] = {4}, r3[1] = {3};
  ts_tensor x = view(TS_DTYPE_FLOAT, 4, xd, buf),
            st = view(TS_DTYPE_FLOAT, 1, rd, sc),
            zt = view(TS_DTYPE_INT64, 1, rd, sizes), y;
  const ts_tensor *in[4] = {&x, NULL, &st, NULL};
  Onnx__NodeProto *n;
  Onnx__ModelProto *m;
  run_ok(op_model("Resize", 13, in, 3, 4, 0, 1, NULL), in, 3, 4, &y, 1,
         "valid Resize");
  ts_tensor_free(&y);
#define RESIZE_BAD(op, opset, n_in, code, needle, ...) \
  do {                                                 \
    m = op_model(op, opset, in, n_in, 0xc, 0, 1, &n);  \
    __VA_ARGS__;                                       \
    expect_fail(m, in, n_in, 0xc, 1, code, needle);    \
  } while (0)
  RESIZE_BAD("Resize", 13, 3, TS_EUNSUPPORTED, "'mode'",
             kc_attr_string(n, "mode", "linear"));
  RESIZE_BAD("Resize", 13, 3, TS_EUNSUPPORTED, "'mode'",
             kc_attr_string(n, "mode", "cubic"));
  RESIZE_BAD("Resize", 13, 3, TS_EUNSUPPORTED,
             "'coordinate_transformation_mode'",
             kc_attr_string(n, "coordinate_transformation_mode",
                            "tf_crop_and_resize"));
  RESIZE_BAD("Resize", 13, 3, TS_EUNSUPPORTED, "'nearest_mode'",
             kc_attr_string(n, "nearest_mode", "simple"));
  RESIZE_BAD("Resize", 13, 3, TS_EUNSUPPORTED, "'keep_aspect_ratio_policy'",
             kc_attr_string(n, "keep_aspect_ratio_policy", "fit"));
  RESIZE_BAD("Resize", 13, 3, TS_EUNSUPPORTED, "'bogus'",
             kc_attr_int(n, "bogus", 1));
  /* Resize-10 and Upsample: inputs X and scales. */
  in[1] = &st;
  RESIZE_BAD("Resize", 10, 2, TS_EUNSUPPORTED, "'mode'",
             kc_attr_string(n, "mode", "linear"));
  RESIZE_BAD("Upsample", 9, 2, TS_EUNSUPPORTED, "'mode'",
             kc_attr_string(n, "mode", "bilinear"));
  RESIZE_BAD("Upsample", 9, 1, TS_EINVAL, "'scales'", (void)0);
  RESIZE_BAD("Upsample", 7, 1, TS_EINVAL, "'scales'", (void)0);
  in[1] = NULL;
  /* Both scales and sizes, neither, wrong length, bad values. */
  in[3] = &zt;
  RESIZE_BAD("Resize", 13, 4, TS_EINVAL, "exactly one", (void)0);
  in[2] = NULL;
  in[3] = NULL;
  RESIZE_BAD("Resize", 13, 4, TS_EINVAL, "exactly one", (void)0);
  st = view(TS_DTYPE_FLOAT, 1, r3, sc);
  in[2] = &st;
  RESIZE_BAD("Resize", 13, 3, TS_EINVAL, "'scales'", (void)0);
  st = view(TS_DTYPE_FLOAT, 1, rd, sc);
  sc[2] = -1.0f;
  RESIZE_BAD("Resize", 13, 3, TS_EINVAL, "not positive", (void)0);
  sc[2] = 2.0f;
  in[2] = NULL;
  in[3] = &zt;
  sizes[3] = -4;
  RESIZE_BAD("Resize", 13, 4, TS_EINVAL, "not valid", (void)0);
  const int64_t axes_bad[2] = {2, 4}, two[1] = {2};
  zt = view(TS_DTYPE_INT64, 1, two, sizes);
  RESIZE_BAD("Resize", 13, 4, TS_EINVAL, "'axes'",
             kc_attr_ints(n, "axes", 2, axes_bad));
#undef RESIZE_BAD
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Throughput                                                               */
/* ------------------------------------------------------------------------ */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Prints the GFLOP/s of a 64->64 3x3 conv on 56x56 (pads 1), the shape of a
 * ResNet stage-1 block; not asserted, machines differ. */
START_TEST(test_conv_throughput) {
  rng = kc_rng_seed(71);
  const int64_t xd[4] = {1, 64, 56, 56}, wd[4] = {64, 64, 3, 3}, bd[1] = {64},
                pads[4] = {1, 1, 1, 1};
  ts_tensor x, w, b, y;
  rand_float(&x, 4, xd);
  rand_float(&w, 4, wd);
  rand_float(&b, 1, bd);
  const ts_tensor *in[3] = {&x, &w, &b};
  Onnx__NodeProto *n;
  Onnx__ModelProto *mp = op_model("Conv", 13, in, 3, 6, 0, 1, &n);
  kc_attr_ints(n, "pads", 4, pads);
  ts_model *m;
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(kc_model_load(mp, &m, &err), 0);
  kc_model_free(mp);
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  const char *in_name = "x0", *out_name = "y0";
  ck_assert_int_eq(ts_exec_run(m, s, &in_name, &x, 1, &out_name, &y, 1, &err),
                   0); /* warm-up: plans the arena */
  int iters = 0;
  const double start = now_s();
  double elapsed = 0.0;
  while (elapsed < 1.0 || iters < 3) {
    ck_assert_int_eq(ts_exec_run(m, s, &in_name, &x, 1, &out_name, &y, 1, &err),
                     0);
    iters++;
    elapsed = now_s() - start;
  }
  const double flops = 2.0 * 64 * 64 * 9 * 56 * 56;
  printf(
      "conv 64->64 3x3 on 56x56: %.1f GFLOP/s (%.2f ms/run, %d runs; "
      "OpenBLAS core %s, %d threads)\n",
      flops * iters / elapsed * 1e-9, elapsed / iters * 1e3, iters,
      openblas_get_corename(), openblas_get_num_threads());
  fflush(stdout);
  ts_session_free(s);
  ts_model_free(m);
  ts_tensor_free(&x), ts_tensor_free(&w), ts_tensor_free(&b);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("kernels_cnn");
  TCase *tc = ts_check_tcase(s, "cnn", 120);
  tcase_add_test(tc, test_conv_random);
  tcase_add_test(tc, test_conv_tiled);
  tcase_add_test(tc, test_conv_empty_batch);
  tcase_add_test(tc, test_conv_bad);
  tcase_add_test(tc, test_max_pool_random);
  tcase_add_test(tc, test_average_pool_random);
  tcase_add_test(tc, test_pool_documented);
  tcase_add_test(tc, test_pool_fast_path);
  tcase_add_test(tc, test_max_pool_nan);
  tcase_add_test(tc, test_pool_bad);
  tcase_add_test(tc, test_global_pools);
  tcase_add_test(tc, test_batch_normalization);
  tcase_add_test(tc, test_batch_normalization_bad);
  tcase_add_test(tc, test_pad_random);
  tcase_add_test(tc, test_pad_attribute_form);
  tcase_add_test(tc, test_pad_bad);
  tcase_add_test(tc, test_pad_axes);
  tcase_add_test(tc, test_resize_random);
  tcase_add_test(tc, test_resize_legacy);
  tcase_add_test(tc, test_resize_documented);
  tcase_add_test(tc, test_resize_bad);
  tcase_add_test(tc, test_conv_throughput);
  return s;
}

static int select_kernels(int argc, char **argv) {
  ts_blas_select_kernels(argc, argv); /* may re-exec with faster kernels */
  return -1;
}

const ts_check_suite ts_check_this_suite = {.make = suite,
                                            .before = select_kernels};
