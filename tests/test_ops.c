/*
 * test_ops.c - the op-table helpers of the engine (ops.c): the one op table
 * and its lookups, every op against arbitrary inputs (no crash, a code),
 * TensorProto conversion of every dtype with its exact errors, broadcast
 * shapes and the attribute accessors.
 */
#include <check.h>

#include "check_main.h"
#include "kernel_check.h"
#include "op_list.h"

#define D(...) (int64_t[]){__VA_ARGS__}

#define ASSERT_MSG_HAS(err, s) \
  ck_assert_msg(strstr((err).msg, (s)) != NULL, "message '%s' lacks '%s'", \
                (err).msg, (s))

START_TEST(op_table) {
  ts_err err;
  int n = ts_ops_selfcheck(&err);
  ck_assert_msg(n >= 9, "selfcheck: %d %s", n, err.msg);
  ck_assert_ptr_nonnull(ts_op_find("", "Gemm"));
  ck_assert_ptr_eq(ts_op_find("ai.onnx", "Gemm"), ts_op_find("", "Gemm"));
  ck_assert_ptr_eq(ts_op_find(NULL, "MatMul"), ts_op_find("", "MatMul"));
  ck_assert_ptr_null(ts_op_find("", "gemm"));
  ck_assert_ptr_null(ts_op_find("ai.onnx.ml", "Gemm"));
  ck_assert_ptr_null(ts_op_find("", NULL));
}
END_TEST

/* Every op in the table, with every allowed input count, fed tensors whose
 * values are unknown at load (graph inputs) or known (initializers, so the
 * node is folded), of a float and an int64 flavour: loading and running
 * may fail with a TS_E* code but must never crash (the process would die
 * and Check would report it). */
START_TEST(every_op_survives_arbitrary_inputs) {
  const ts_dtype dts[] = {TS_DTYPE_FLOAT, TS_DTYPE_INT64};
  int loaded = 0;
  for (int i = 0; ts_op_at(i); i++) {
    const ts_op *op = ts_op_at(i);
    bool ml = strcmp(op->domain, "ai.onnx.ml") == 0;
    int max_in = op->max_inputs > 6 ? 6 : op->max_inputs;
    for (int n_in = op->min_inputs; n_in <= max_in; n_in++)
      for (int d = 0; d < 2; d++)
        for (unsigned mask = 0; mask < 2; mask++) {
          ts_tensor t[6];
          const ts_tensor *in[6];
          kc_rng r = kc_rng_seed(7);
          for (int k = 0; k < n_in; k++) {
            kc_tensor_rand(&t[k], dts[d], 2, D(2, 3), &r, 0, 2);
            in[k] = &t[k];
          }
          ts_tensor out[4];
          ts_err err;
          int n_out = op->min_outputs > 0 ? op->min_outputs : 1;
          int rc = kc_run_op(op->name, op->domain, ml ? 3 : 13, in, n_in,
                             mask ? 0x3fu : 0u, out, n_out, &err);
          ck_assert_msg(rc <= 0, "%s: rc %d", op->name, rc);
          if (rc == 0) {
            loaded++;
            for (int k = 0; k < n_out; k++) ts_tensor_free(&out[k]);
          } else {
            ck_assert_msg(err.msg[0], "%s failed (%d) without a message",
                          op->name, rc);
          }
          for (int k = 0; k < n_in; k++) ts_tensor_free(&t[k]);
        }
  }
  ck_assert_int_gt(loaded, 0);
}
END_TEST

/* A TensorProto with typed data, for ts_tensor_from_onnx. */
static Onnx__TensorProto *tensor_proto(ts_dtype dt, int rank,
                                       const int64_t *dims) {
  Onnx__TensorProto *tp = malloc(sizeof *tp);
  onnx__tensor_proto__init(tp);
  tp->name = kc_strdup("t");
  tp->has_data_type = 1;
  tp->data_type = dt;
  tp->n_dims = (size_t)rank;
  tp->dims = malloc(sizeof(int64_t) * (size_t)(rank + 1));
  if (rank) memcpy(tp->dims, dims, sizeof(int64_t) * (size_t)rank);
  return tp;
}

START_TEST(tensor_from_onnx) {
  ts_tensor t;
  ts_err err;
  /* float_data */
  Onnx__TensorProto *tp = tensor_proto(TS_DTYPE_FLOAT, 2, D(2, 2));
  tp->n_float_data = 4;
  tp->float_data = malloc(4 * sizeof(float));
  for (int i = 0; i < 4; i++) tp->float_data[i] = (float)i - 1.5f;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0);
  kc_assert_close(&t, (double[]){-1.5, -0.5, 0.5, 1.5}, D(2, 2), 2, 0, 0,
                  "float_data");
  ck_assert(t.owned);
  ts_tensor_free(&t);
  tp->n_float_data = 3; /* size mismatch */
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "tensor 't'");
  tp->n_float_data = 4;
  tp->has_raw_data = 1; /* raw and typed at once */
  tp->raw_data.len = 16;
  tp->raw_data.data = calloc(1, 16);
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EINVAL);
  tp->n_float_data = 0;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0); /* raw only */
  ts_tensor_free(&t);
  tp->raw_data.len = 15; /* raw size mismatch */
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "raw_data holds 15 bytes");
  tp->raw_data.len = 16;
  tp->has_data_location = 1;
  tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "external");
  onnx__tensor_proto__free_unpacked(tp, NULL);

  /* int32_data narrowed for int8, float16 and bool */
  tp = tensor_proto(TS_DTYPE_INT8, 1, D(3));
  tp->n_int32_data = 3;
  tp->int32_data = malloc(3 * sizeof(int32_t));
  tp->int32_data[0] = -3, tp->int32_data[1] = 0, tp->int32_data[2] = 127;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0);
  kc_assert_close(&t, (double[]){-3, 0, 127}, D(3), 1, 0, 0, "int8");
  ts_tensor_free(&t);
  tp->data_type = TS_DTYPE_FLOAT16;
  tp->int32_data[0] = 0x3c00; /* 1.0 */
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0);
  ck_assert_uint_eq(t.nbytes, 6);
  ck_assert_uint_eq(((uint16_t *)t.data)[0], 0x3c00);
  ts_tensor_free(&t);
  tp->data_type = TS_DTYPE_INT64; /* int32_data on int64: wrong field */
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EINVAL);
  tp->data_type = TS_DTYPE_STRING;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EUNSUPPORTED);
  tp->data_type = 14; /* complex64 */
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EUNSUPPORTED);
  onnx__tensor_proto__free_unpacked(tp, NULL);

  /* int64, double, uint64 -> uint32 */
  tp = tensor_proto(TS_DTYPE_INT64, 1, D(2));
  tp->n_int64_data = 2;
  tp->int64_data = malloc(2 * sizeof(int64_t));
  tp->int64_data[0] = -5, tp->int64_data[1] = 1LL << 40;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0);
  ck_assert_int_eq(((int64_t *)t.data)[1], 1LL << 40);
  ts_tensor_free(&t);
  onnx__tensor_proto__free_unpacked(tp, NULL);
  tp = tensor_proto(TS_DTYPE_DOUBLE, 0, NULL);
  tp->n_double_data = 1;
  tp->double_data = malloc(sizeof(double));
  tp->double_data[0] = 0.1;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0);
  ck_assert_double_eq(*(double *)t.data, 0.1);
  ck_assert_int_eq(t.rank, 0);
  ts_tensor_free(&t);
  onnx__tensor_proto__free_unpacked(tp, NULL);
  tp = tensor_proto(TS_DTYPE_UINT32, 1, D(1));
  tp->n_uint64_data = 1;
  tp->uint64_data = malloc(sizeof(uint64_t));
  tp->uint64_data[0] = 4000000000u;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0);
  ck_assert_uint_eq(((uint32_t *)t.data)[0], 4000000000u);
  ts_tensor_free(&t);
  onnx__tensor_proto__free_unpacked(tp, NULL);
  /* negative dim, too many dims, empty tensor without data */
  tp = tensor_proto(TS_DTYPE_FLOAT, 2, D(2, -1));
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "dim 1");
  tp->dims[1] = 0;
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), 0);
  ck_assert_uint_eq(t.nbytes, 0);
  ts_tensor_free(&t);
  onnx__tensor_proto__free_unpacked(tp, NULL);
  tp = tensor_proto(TS_DTYPE_FLOAT, 9, D(1, 1, 1, 1, 1, 1, 1, 1, 1));
  ck_assert_int_eq(ts_tensor_from_onnx(tp, &t, &err), TS_EUNSUPPORTED);
  onnx__tensor_proto__free_unpacked(tp, NULL);
}
END_TEST

START_TEST(broadcast_shape) {
  ts_tensor a = {0}, b = {0};
  int64_t dims[TS_MAX_RANK];
  int rank;
  ts_err err;
  a.rank = 3, a.dims[0] = 2, a.dims[1] = 1, a.dims[2] = 5;
  b.rank = 2, b.dims[0] = 4, b.dims[1] = 1;
  ck_assert_int_eq(ts_broadcast_shape(&a, &b, dims, &rank, &err), 0);
  ck_assert_int_eq(rank, 3);
  ck_assert(dims[0] == 2 && dims[1] == 4 && dims[2] == 5);
  b.rank = 0; /* scalar */
  ck_assert_int_eq(ts_broadcast_shape(&a, &b, dims, &rank, &err), 0);
  ck_assert(rank == 3 && dims[1] == 1);
  b.rank = 1, b.dims[0] = 0; /* empty broadcasts against 1 */
  a.dims[2] = 1;
  ck_assert_int_eq(ts_broadcast_shape(&a, &b, dims, &rank, &err), 0);
  ck_assert_int_eq(dims[2], 0);
  b.dims[0] = 3;
  a.dims[2] = 5;
  ck_assert_int_eq(ts_broadcast_shape(&a, &b, dims, &rank, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "[2,1,5]");
  ASSERT_MSG_HAS(err, "dim 2");
}
END_TEST

START_TEST(attribute_helpers) {
  ts_err err;
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, D(2, 3));
  Onnx__NodeProto *n = kc_model_node(m, "Identity", "", "id", "x", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  /* Identity would reject these, so check them on a raw ts_node */
  kc_attr_int(n, "i", 5);
  kc_attr_float(n, "f", 1.5f);
  kc_attr_string(n, "s", "hello");
  kc_attr_ints(n, "is", 3, D(1, 2, 3));
  kc_attr_floats(n, "fs", 2, (float[]){0.5f, 0.25f});
  ts_node node = {.name = "id", .op_type = "Identity", .domain = "",
                  .proto = n};
  ck_assert_int_eq(ts_attr_int(&node, "i", 0), 5);
  ck_assert_int_eq(ts_attr_int(&node, "f", 9), 9); /* wrong type: default */
  ck_assert_int_eq(ts_attr_int(&node, "missing", -1), -1);
  ck_assert_float_eq(ts_attr_float(&node, "f", 0), 1.5f);
  ck_assert_str_eq(ts_attr_string(&node, "missing", "dflt"), "dflt");
  ck_assert_str_eq(ts_attr_string(&node, "s", ""), "hello");
  ck_assert_str_eq(ts_attr_string(&node, "i", "wrong type"), "wrong type");
  const int64_t *iv;
  const float *fv;
  size_t cnt;
  ck_assert_int_eq(ts_attr_ints(&node, "is", &iv, &cnt, &err), 0);
  ck_assert(cnt == 3 && iv[2] == 3);
  ck_assert_int_eq(ts_attr_ints(&node, "fs", &iv, &cnt, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "node 'id' (Identity): attribute 'fs'");
  ck_assert_int_eq(ts_attr_ints(&node, "none", &iv, &cnt, &err), TS_ENOTFOUND);
  ck_assert_int_eq(ts_attr_floats(&node, "fs", &fv, &cnt, &err), 0);
  ck_assert(cnt == 2 && fv[1] == 0.25f);
  static const char *const known[] = {"i", "f", "s", "is", NULL};
  ck_assert_int_eq(ts_node_check_attrs(&node, known, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "attribute 'fs'");
  char desc[64];
  ck_assert_str_eq(ts_node_desc(&node, desc, sizeof desc),
                   "node 'id' (Identity)");
  kc_model_free(m);
}
END_TEST

TS_CHECK_ONE_CASE_SUITE("ops", "ops", 120, NULL, NULL, op_table,
                        every_op_survives_arbitrary_inputs, tensor_from_onnx,
                        broadcast_shape, attribute_helpers);
