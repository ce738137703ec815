/*
 * test_kernels_pad_resize.c - Pad, Resize and Upsample (the other CNN
 * kernels are in test_kernels_cnn.c).
 *
 * Every kernel runs through the real loader and executor (one-node models
 * built with kernel_check.h, loaded with ts_model_load and run with
 * ts_exec_run) and is compared with a naive reference written independently
 * in this file from the ONNX definitions: padding and nearest resizing index
 * by index. Shapes are random, and the batch dim is declared symbolic in the
 * model and fed as 1 or 3, so load-time shape inference must leave it
 * symbolic while inferring every other dim.
 *
 * Bad input: every unsupported attribute value must fail the load with
 * TS_EUNSUPPORTED naming the attribute, and inconsistent shapes with
 * TS_EINVAL.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "cnn_check.h"

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

static Suite *suite(void) {
  Suite *s = suite_create("kernels_pad_resize");
  TCase *tc = ts_check_tcase(s, "pad_resize", 120, NULL, NULL);
  tcase_add_test(tc, test_pad_random);
  tcase_add_test(tc, test_pad_attribute_form);
  tcase_add_test(tc, test_pad_bad);
  tcase_add_test(tc, test_pad_axes);
  tcase_add_test(tc, test_resize_random);
  tcase_add_test(tc, test_resize_legacy);
  tcase_add_test(tc, test_resize_documented);
  tcase_add_test(tc, test_resize_bad);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
