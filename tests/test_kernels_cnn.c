/*
 * test_kernels_cnn.c - Conv, MaxPool, AveragePool, GlobalAveragePool,
 * GlobalMaxPool and BatchNormalization (Pad, Resize and Upsample are in
 * test_kernels_pad_resize.c).
 *
 * Every kernel runs through the real loader and executor (one-node models
 * built with kernel_check.h, loaded with ts_model_load and run with
 * ts_exec_run) and is compared with a naive reference written independently
 * in this file from the ONNX definitions: direct nested-loop convolution in
 * float64 and pooling window by window. Shapes are random (odd sizes, unit
 * dims, 1-3 spatial dims, strides 1-3, dilations 1-2, asymmetric pads, every
 * auto_pad, groups 1/2/depthwise, ceil_mode and count_include_pad both
 * ways), and the batch dim is declared symbolic in the model and fed as 1 or
 * 3, so load-time shape inference must leave it symbolic while inferring
 * every other dim.
 *
 * Bad input: every unsupported attribute value must fail the load with
 * TS_EUNSUPPORTED naming the attribute, and inconsistent shapes with
 * TS_EINVAL (at load when the shapes are static, at run when a symbolic dim
 * hides them).
 *
 * The throughput of a 64->64 3x3 conv is bench/kernel_speed's to measure.
 */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "check_main.h"
#include "cnn_check.h"
#include "parallel.h"

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
static void conv_tiled_cases(void) {
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
  /* Depthwise and pointwise, big enough to be split over the budget. */
  unit_window(&c, 2);
  c.in[1] = 90;
  c.in[2] = 97;
  ref_geometry(&c);
  check_conv(&c, 64, 64, 1, true, false, "big pointwise conv");
  c.give_kernel = c.give_pads = true;
  c.k[1] = c.k[2] = 3;
  c.pb[1] = c.pe[1] = c.pb[2] = c.pe[2] = 1;
  ref_geometry(&c);
  check_conv(&c, 32, 64, 32, false, false, "big depthwise conv");
}

START_TEST(test_conv_tiled) { conv_tiled_cases(); }
END_TEST

/* The same convolutions with a kernel budget of 4 threads (parallel.h):
 * split by tiles, pixel runs and planes, still within the float64
 * reference's tolerance. */
START_TEST(test_conv_threads) {
  ck_assert_int_eq(ts_parallel_set_threads(4), 4);
  conv_tiled_cases();
  ts_parallel_set_threads(1);
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

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "cnn", 120, NULL, NULL, test_conv_random, test_conv_tiled,
                test_conv_threads,
                test_conv_empty_batch, test_conv_bad, test_max_pool_random,
                test_average_pool_random, test_pool_documented,
                test_pool_fast_path, test_max_pool_nan, test_pool_bad,
                test_global_pools, test_batch_normalization,
                test_batch_normalization_bad);
}

static int select_kernels(int argc, char **argv) {
  ts_blas_select_kernels(argc, argv); /* may re-exec with faster kernels */
  return -1;
}

const ts_check_suite ts_check_this_suite = {
    .name = "kernels_cnn", .cases = cases, .before = select_kernels};
