/*
 * test_quant.c - the quant family (kernels/quant.c) and reduced-precision
 * weights through the loader, prepack and the products.
 *
 * DequantizeLinear against a float64 reference: int8 and uint8, with and
 * without zero points, one scale or one per index of an axis (first, last,
 * middle, negative); its bad inputs with their codes. Cast from float16
 * and bfloat16 to float. Then models whose Gemm / MatMul read B through a
 * DequantizeLinear of an int8 constant or a Cast of a float16 / bfloat16
 * one, as precision=int8|fp16|bf16 shards do: after ts_model_prepack the
 * widening node is gone (the product packed the small constant), and the
 * answers at M 1..17 equal a float64 product with the dequantized B. A
 * widening the products cannot fuse (scales along K, a non-zero zero
 * point, transA) is folded at load into a float B, with the same answers.
 */
#include <check.h>
#include <math.h>

#include "check_main.h"
#include "kernel_check.h"

#define RTOL 1e-4
#define ATOL 1e-5

/* ---- DequantizeLinear ---------------------------------------------------- */

/* One DequantizeLinear of x [2,3,5] (dtype), scales along `axis` (-100: one
 * scalar scale), zero points when zp, against the reference. */
static void check_dq(kc_rng *r, ts_dtype dtype, int axis, bool zp) {
  int64_t dims[3] = {2, 3, 5};
  ts_tensor x, s, z, y;
  bool is_signed = dtype == TS_DTYPE_INT8;
  kc_tensor_rand(&x, dtype, 3, dims, r, is_signed ? -128 : 0,
                 is_signed ? 128 : 256);
  int a = axis == -100 ? -1 : axis < 0 ? axis + 3 : axis;
  int64_t count = a < 0 ? 1 : dims[a];
  kc_tensor_rand(&s, TS_DTYPE_FLOAT, a < 0 ? 0 : 1, &count, r, 0.01, 0.5);
  kc_tensor_rand(&z, dtype, a < 0 ? 0 : 1, &count, r, is_signed ? -20 : 0,
                 is_signed ? 20 : 40);
  const ts_tensor *in[3] = {&x, &s, zp ? &z : NULL};
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = kc_op_model("DequantizeLinear", "", 13, in, 3, 0, 1,
                                    &node);
  if (axis != -100) kc_attr_int(node, "axis", axis);
  ts_err err;
  int rc = kc_model_run(m, in, 3, 0, &y, 1, &err);
  kc_model_free(m);
  ck_assert_msg(rc == 0, "dq axis %d: %s", axis, err.msg);
  double ref[30];
  for (int64_t i = 0; i < 30; i++) {
    int64_t idx[3] = {i / 15, (i / 5) % 3, i % 5};
    int64_t c = a < 0 ? 0 : idx[a];
    ref[i] = (kc_get(&x, i) - (zp ? kc_get(&z, c) : 0)) * kc_get(&s, c);
  }
  kc_assert_close(&y, ref, dims, 3, 1e-6, 1e-7, "DequantizeLinear");
  ck_assert_int_eq(y.dtype, TS_DTYPE_FLOAT);
  kc_tensors_free(&y, 1);
  ts_tensor_free(&x);
  ts_tensor_free(&s);
  ts_tensor_free(&z);
}

START_TEST(dequantize_linear) {
  kc_rng r = kc_rng_seed(1);
  static const int axes[] = {-100, 0, 1, 2, -1, -2};
  for (int t = 0; t < 2; t++)
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++)
      for (int zp = 0; zp < 2; zp++)
        check_dq(&r, t ? TS_DTYPE_UINT8 : TS_DTYPE_INT8, axes[a], zp);
}
END_TEST

START_TEST(dequantize_linear_bad) {
  kc_rng r = kc_rng_seed(2);
  ts_tensor x, s4, s3, f;
  kc_tensor_rand(&x, TS_DTYPE_INT8, 2, (int64_t[]){3, 4}, &r, -5, 5);
  kc_tensor_rand(&s4, TS_DTYPE_FLOAT, 1, (int64_t[]){4}, &r, 0.1, 1);
  kc_tensor_rand(&s3, TS_DTYPE_FLOAT, 1, (int64_t[]){5}, &r, 0.1, 1);
  kc_tensor_rand(&f, TS_DTYPE_FLOAT, 2, (int64_t[]){3, 4}, &r, -5, 5);
  ts_tensor y;
  ts_err err;
  /* 5 scales for axis 1 of [3,4] */
  const ts_tensor *bad_len[2] = {&x, &s3};
  ck_assert_int_eq(kc_run_op("DequantizeLinear", "", 13, bad_len, 2, 0, &y, 1,
                             &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "x_scale has 5 values"));
  /* a float x */
  const ts_tensor *bad_x[2] = {&f, &s4};
  ck_assert_int_eq(kc_run_op("DequantizeLinear", "", 13, bad_x, 2, 0, &y, 1,
                             &err), TS_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "x has dtype float"));
  /* per-axis scales before opset 13 */
  const ts_tensor *old[2] = {&x, &s4};
  ck_assert_int_eq(kc_run_op("DequantizeLinear", "", 10, old, 2, 0, &y, 1,
                             &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "x_scale must be a scalar"));
  ts_tensor_free(&x);
  ts_tensor_free(&s4);
  ts_tensor_free(&s3);
  ts_tensor_free(&f);
}
END_TEST

/* A float16 (or bfloat16) tensor of `count` random values; their widened
 * floats in *wide (caller frees). */
static void small_float(kc_rng *r, ts_dtype dtype, int rank,
                        const int64_t *dims, ts_tensor *t, float **wide) {
  ts_err err;
  ck_assert(ts_tensor_alloc(t, dtype, dims, rank, &err) == 0);
  int64_t n = ts_tensor_numel(t);
  uint16_t *h = t->data;
  *wide = malloc((size_t)(n > 0 ? n : 1) * sizeof **wide);
  ck_assert_ptr_nonnull(*wide);
  for (int64_t i = 0; i < n; i++) {
    float v = (float)kc_uniform(r, -1, 1);
    h[i] = dtype == TS_DTYPE_FLOAT16 ? ts_float_to_half(v) : ts_float_to_bf16(v);
    (*wide)[i] = dtype == TS_DTYPE_FLOAT16 ? ts_half_to_float(h[i])
                                           : ts_bf16_to_float(h[i]);
  }
}

START_TEST(cast_from_half) {
  kc_rng r = kc_rng_seed(3);
  for (int t = 0; t < 2; t++) {
    ts_dtype dtype = t ? TS_DTYPE_BFLOAT16 : TS_DTYPE_FLOAT16;
    ts_tensor x, y;
    float *wide;
    int64_t dims[2] = {7, 3};
    small_float(&r, dtype, 2, dims, &x, &wide);
    const ts_tensor *in[1] = {&x};
    Onnx__NodeProto *node;
    Onnx__ModelProto *m = kc_op_model("Cast", "", 13, in, 1, 0, 1, &node);
    kc_attr_int(node, "to", TS_DTYPE_FLOAT);
    ts_err err;
    int rc = kc_model_run(m, in, 1, 0, &y, 1, &err);
    kc_model_free(m);
    ck_assert_msg(rc == 0, "%s", err.msg);
    double ref[21];
    for (int i = 0; i < 21; i++) ref[i] = wide[i];
    kc_assert_close(&y, ref, dims, 2, 0, 0, "Cast from half");
    kc_tensors_free(&y, 1);
    ts_tensor_free(&x);
    free(wide);
  }
}
END_TEST

/* ---- reduced weights of products ---------------------------------------- */

typedef enum { W_INT8, W_FP16, W_BF16 } wkind;

/* How a case breaks the fusion (none: fused). */
typedef enum { FUSE, SCALES_ALONG_K, ZERO_POINT, TRANS_A } fuse_case;

/* y = op(x [M,K], widen(W)) with W [K,N] (or [N,K] under Gemm's transB),
 * loaded and prepacked, run at M 1..17 against the dequantized float64
 * product; checks whether the widening node is still there. */
static void check_product(kc_rng *r, const char *op, wkind kind, int tb,
                          fuse_case fc) {
  const int64_t k = 37, n = 45;
  int64_t wdims[2] = {tb ? n : k, tb ? k : n};
  int64_t count = k * n;
  int col_axis = tb ? 0 : 1;
  ts_tensor w, s, z;
  float *deq = NULL;
  bool ta = fc == TRANS_A;
  Onnx__ModelProto *mp = kc_model_new(13);
  kc_model_input(mp, "x", TS_DTYPE_FLOAT, 2,
                 ta ? (int64_t[]){k, -1} : (int64_t[]){-1, k});
  if (kind == W_INT8) {
    int axis = fc == SCALES_ALONG_K ? !col_axis : col_axis;
    kc_tensor_rand(&w, TS_DTYPE_INT8, 2, wdims, r, -127, 128);
    kc_tensor_rand(&s, TS_DTYPE_FLOAT, 1, &wdims[axis], r, 1e-3, 2e-2);
    kc_tensor_from(&z, TS_DTYPE_INT8, 1, &wdims[axis], NULL);
    if (fc == ZERO_POINT) ((int8_t *)z.data)[1] = 3;
    deq = malloc((size_t)count * sizeof *deq);
    ck_assert_ptr_nonnull(deq);
    for (int64_t i = 0; i < count; i++) {
      int64_t idx[2] = {i / wdims[1], i % wdims[1]};
      int64_t c = idx[axis];
      deq[i] = (float)(((int8_t *)w.data)[i] - ((int8_t *)z.data)[c]) *
               ((float *)s.data)[c];
    }
    kc_model_init(mp, "Wq", &w);
    kc_model_init(mp, "s", &s);
    kc_model_init(mp, "z", &z);
    Onnx__NodeProto *dq = kc_model_node(mp, "DequantizeLinear", "", "dq",
                                        "Wq,s,z", "W");
    kc_attr_int(dq, "axis", axis);
    ts_tensor_free(&s);
    ts_tensor_free(&z);
  } else {
    small_float(r, kind == W_FP16 ? TS_DTYPE_FLOAT16 : TS_DTYPE_BFLOAT16, 2,
                wdims, &w, &deq);
    kc_model_init(mp, "Wh", &w);
    Onnx__NodeProto *cast = kc_model_node(mp, "Cast", "", "cast", "Wh", "W");
    kc_attr_int(cast, "to", TS_DTYPE_FLOAT);
  }
  Onnx__NodeProto *pn = kc_model_node(mp, op, "", "product", "x,W", "y");
  if (strcmp(op, "Gemm") == 0) {
    kc_attr_int(pn, "transB", tb);
    if (ta) kc_attr_int(pn, "transA", 1);
  }
  kc_model_output(mp, "y", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, n});
  ts_model *model;
  ts_err err;
  ck_assert_msg(kc_model_load(mp, &model, &err) == 0, "%s", err.msg);
  bool fused = fc == FUSE;
  char what[128];
  snprintf(what, sizeof what, "%s kind=%d tB=%d case=%d", op, kind, tb, fc);
  ck_assert_msg(model->graph.n_nodes == 1, "%s: %d nodes", what,
                model->graph.n_nodes);
  int vb = model->graph.nodes[0].inputs[1];
  ck_assert_int_eq(model->graph.values[vb].constant->dtype,
                   fused ? w.dtype : TS_DTYPE_FLOAT);
  ts_session *sess;
  ck_assert(ts_session_create(&sess, &err) == 0);
  for (int64_t m = 1; m <= 17; m++) {
    ts_tensor a, y;
    kc_tensor_rand(&a, TS_DTYPE_FLOAT, 2,
                   ta ? (int64_t[]){k, m} : (int64_t[]){m, k}, r, -1, 1);
    float *rows = malloc((size_t)(m * k) * sizeof *rows);
    ck_assert_ptr_nonnull(rows);
    for (int64_t i = 0; i < m; i++)
      for (int64_t p = 0; p < k; p++)
        rows[i * k + p] = ((float *)a.data)[ta ? p * m + i : i * k + p];
    const char *in_names[] = {"x"}, *out_names[] = {"y"};
    ck_assert_msg(ts_exec_run(model, sess, in_names, &a, 1, out_names, &y, 1,
                              &err) == 0, "%s: %s", what, err.msg);
    double *ref = malloc((size_t)(m * n) * sizeof *ref);
    ck_assert_ptr_nonnull(ref);
    kc_gemm_ref(m, n, k, rows, k, deq, tb, 1.0f, false, NULL, n, ref);
    kc_assert_close(&y, ref, (int64_t[]){m, n}, 2, RTOL, ATOL, what);
    free(ref);
    free(rows);
    ts_tensor_free(&a);
  }
  ts_session_free(sess);
  ts_model_free(model);
  kc_model_free(mp);
  ts_tensor_free(&w);
  free(deq);
}

START_TEST(products_fuse_reduced_weights) {
  kc_rng r = kc_rng_seed(4);
  for (int kind = W_INT8; kind <= W_BF16; kind++) {
    check_product(&r, "Gemm", (wkind)kind, 0, FUSE);
    check_product(&r, "Gemm", (wkind)kind, 1, FUSE);
    check_product(&r, "MatMul", (wkind)kind, 0, FUSE);
  }
}
END_TEST

START_TEST(products_unfused_reduced_weights) {
  kc_rng r = kc_rng_seed(5);
  check_product(&r, "Gemm", W_INT8, 0, SCALES_ALONG_K);
  check_product(&r, "Gemm", W_INT8, 1, SCALES_ALONG_K);
  check_product(&r, "MatMul", W_INT8, 0, ZERO_POINT);
  check_product(&r, "Gemm", W_FP16, 0, TRANS_A);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "quant", 60, NULL, NULL, dequantize_linear,
                dequantize_linear_bad, cast_from_half,
                products_fuse_reduced_weights,
                products_unfused_reduced_weights);
}

const ts_check_suite ts_check_this_suite = {.name = "quant", .cases = cases};
