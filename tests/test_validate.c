/*
 * test_validate.c - a ModelInfer request checked against its model and
 * bound to tensors (coordinator/frontend/validate.c), with no socket: the
 * requests are protobuf-c structs built here, the model a ts_served_model
 * with two inputs, x FP32 [N, 3] and flags BOOL [2], and two outputs.
 *
 * A good request binds raw contents and typed fp32 contents as views (no
 * copy) and typed BOOL narrowed into a tensor of its own; the bound inputs
 * come back in the model's order. Every bad input class is TS_EINVAL with
 * a message naming the tensor and the field (one table row each), as
 * tests/python/test_bad_input.py sees them through the daemon.
 */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "check_main.h"
#include "validate.h"

typedef Inference__ModelInferRequest__InferInputTensor infer_input;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor infer_output;

/* ---- the model ------------------------------------------------------------
 */

static ts_io_info model_in[2] = {
    {.name = "x", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, 3}},
    {.name = "flags", .dtype = TS_DTYPE_BOOL, .rank = 1, .dims = {2}},
};
static ts_io_info model_out[2] = {
    {.name = "y", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, 3}},
    {.name = "z", .dtype = TS_DTYPE_FLOAT, .rank = 1, .dims = {-1}},
};
static ts_served_model model;

/* ---- a request, rebuilt good before each test ------------------------------
 */

static Inference__ModelInferRequest req;
static infer_input in_x, in_flags, in_extra, *inputs[3];
static Inference__InferTensorContents typed_x, typed_flags;
static infer_output out_y, out_z, *outputs[2];
static int64_t shape_x[3], shape_flags[1];
static float x_data[6] = {1, 2, 3, 4, 5, 6};
static uint8_t flags_raw[2] = {1, 0};
static ProtobufCBinaryData raw[3];
static float fp32[6] = {1, 2, 3, 4, 5, 6};
static protobuf_c_boolean bools[2] = {1, 0};

static void input_init(infer_input *in, const char *name, const char *type,
                       int64_t *shape, size_t rank) {
  inference__model_infer_request__infer_input_tensor__init(in);
  in->name = (char *)name;
  in->datatype = (char *)type;
  in->shape = shape;
  in->n_shape = rank;
}

/* x [2, 3] and flags [2], both raw; outputs y and z requested. */
static void setup(void) {
  memset(&model, 0, sizeof model);
  snprintf(model.config.name, sizeof model.config.name, "m");
  model.inputs = model_in;
  model.n_inputs = 2;
  model.outputs = model_out;
  model.n_outputs = 2;
  inference__model_infer_request__init(&req);
  shape_x[0] = 2, shape_x[1] = 3;
  shape_flags[0] = 2;
  input_init(&in_x, "x", "FP32", shape_x, 2);
  input_init(&in_flags, "flags", "BOOL", shape_flags, 1);
  input_init(&in_extra, "q", "FP32", shape_x, 2);
  inputs[0] = &in_x, inputs[1] = &in_flags, inputs[2] = &in_extra;
  req.inputs = inputs;
  req.n_inputs = 2;
  raw[0] = (ProtobufCBinaryData){sizeof x_data, (uint8_t *)x_data};
  raw[1] = (ProtobufCBinaryData){sizeof flags_raw, flags_raw};
  raw[2] = raw[0];
  req.raw_input_contents = raw;
  req.n_raw_input_contents = 2;
  inference__infer_tensor_contents__init(&typed_x);
  typed_x.fp32_contents = fp32;
  typed_x.n_fp32_contents = 6;
  inference__infer_tensor_contents__init(&typed_flags);
  typed_flags.bool_contents = bools;
  typed_flags.n_bool_contents = 2;
  inference__model_infer_request__infer_requested_output_tensor__init(&out_y);
  inference__model_infer_request__infer_requested_output_tensor__init(&out_z);
  out_y.name = "y", out_z.name = "z";
  outputs[0] = &out_y, outputs[1] = &out_z;
  req.outputs = outputs;
  req.n_outputs = 2;
}

static void use_typed(void) {
  req.n_raw_input_contents = 0;
  req.raw_input_contents = NULL;
  in_x.contents = &typed_x;
  in_flags.contents = &typed_flags;
}

/* Binds req; the bound tensors are freed, the arena released. */
static int bind(ts_err *err) {
  ts_rpc_arena arena;
  ts_rpc_arena_init(&arena);
  ts_tensor *bound = NULL;
  int n = 0;
  int rc = ts_frontend_bind_inputs(&req, &model, &arena, &bound, &n, err);
  for (int i = 0; i < n; i++) ts_tensor_free(&bound[i]);
  ts_rpc_arena_release(&arena);
  return rc;
}

/* ---- good requests ---------------------------------------------------------
 */

START_TEST(raw_binds_views_in_model_order) {
  in_x.shape[0] = 2;
  inputs[0] = &in_flags, inputs[1] = &in_x; /* not the model's order */
  raw[0] = (ProtobufCBinaryData){sizeof flags_raw, flags_raw};
  raw[1] = (ProtobufCBinaryData){sizeof x_data, (uint8_t *)x_data};
  ts_rpc_arena arena;
  ts_rpc_arena_init(&arena);
  ts_tensor *bound, *ordered;
  int n;
  ts_err err;
  ck_assert_msg(
      ts_frontend_bind_inputs(&req, &model, &arena, &bound, &n, &err) == TS_OK,
      "%s", err.msg);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(
      ts_frontend_order_inputs(&req, &model, bound, &arena, &ordered, &err),
      TS_OK);
  ck_assert_ptr_eq(ordered[0].data, x_data); /* a view, no copy */
  ck_assert(!ordered[0].owned);
  ck_assert_int_eq(ordered[0].dtype, TS_DTYPE_FLOAT);
  ck_assert_int_eq(ordered[0].rank, 2);
  ck_assert_int_eq(ordered[0].dims[0], 2);
  ck_assert_ptr_eq(ordered[1].data, flags_raw);
  ck_assert_int_eq(ordered[1].dtype, TS_DTYPE_BOOL);
  for (int i = 0; i < n; i++) ts_tensor_free(&bound[i]);
  ts_rpc_arena_release(&arena);
}
END_TEST

START_TEST(typed_contents) {
  use_typed();
  ts_rpc_arena arena;
  ts_rpc_arena_init(&arena);
  ts_tensor *bound;
  int n;
  ts_err err;
  ck_assert_msg(
      ts_frontend_bind_inputs(&req, &model, &arena, &bound, &n, &err) == TS_OK,
      "%s", err.msg);
  ck_assert_ptr_eq(bound[0].data, fp32); /* fp32: a view */
  ck_assert(bound[1].owned);             /* bool: narrowed to bytes */
  ck_assert_uint_eq(bound[1].nbytes, 2);
  ck_assert_int_eq(((uint8_t *)bound[1].data)[0], 1);
  ck_assert_int_eq(((uint8_t *)bound[1].data)[1], 0);
  for (int i = 0; i < n; i++) ts_tensor_free(&bound[i]);
  ts_rpc_arena_release(&arena);
}
END_TEST

/* ---- every bad class -------------------------------------------------------
 */

static void unknown_input(void) { inputs[1] = &in_extra; }
static void twice(void) { inputs[1] = &in_x; }
static void missing(void) { req.n_inputs = 1, req.n_raw_input_contents = 1; }
static void unknown_datatype(void) { in_x.datatype = "FP99"; }
static void wrong_datatype(void) { in_x.datatype = "FP64"; }
static void wrong_rank(void) { in_x.n_shape = 1; }
static void negative_dim(void) { shape_x[0] = -2; }
static void wrong_static_dim(void) { shape_x[1] = 4; }
static void overflowing_shape(void) { shape_x[0] = INT64_MAX / 2; }
static void raw_count(void) { req.n_raw_input_contents = 1; }
static void raw_and_typed(void) { in_x.contents = &typed_x; }
static void raw_length(void) { raw[0].len = 8; }
static void typed_wrong_field(void) {
  use_typed();
  typed_x.int64_contents = (int64_t[]){1};
  typed_x.n_int64_contents = 1;
}
static void typed_count(void) {
  use_typed();
  typed_x.n_fp32_contents = 2;
}
static void unknown_output(void) { out_z.name = "w"; }
static void output_twice(void) { out_z.name = "y"; }

static const struct {
  const char *what;
  void (*spoil)(void);
  const char *needle;
} bad[] = {
    {"unknown input", unknown_input,
     "unknown input 'q' (model m expects: x, flags)"},
    {"twice", twice, "input 'x' appears twice"},
    {"missing", missing, "missing input 'flags' (datatype BOOL)"},
    {"unknown datatype", unknown_datatype,
     "input 'x': unknown datatype 'FP99'"},
    {"datatype", wrong_datatype,
     "datatype FP64 does not match the model's FP32"},
    {"rank", wrong_rank, "has rank 1 but the model expects rank 2"},
    {"negative dim", negative_dim, "input 'x': dim 0 is -2; dims must be >= 0"},
    {"static dim", wrong_static_dim, "dim 1 is 4 but the model expects 3"},
    {"overflow", overflowing_shape, "too many elements (overflow)"},
    {"raw count", raw_count,
     "raw_input_contents has 1 entries but the request has 2 inputs"},
    {"raw and typed", raw_and_typed,
     "input 'x' has both raw_input_contents and typed"},
    {"raw length", raw_length, "raw_input_contents[0] holds 8 bytes"},
    {"typed field", typed_wrong_field,
     "typed contents must use the field for FP32 only"},
    {"typed count", typed_count, "contents hold 2 elements but shape"},
    {"unknown output", unknown_output,
     "unknown output 'w' requested (model m has: y, z)"},
    {"output twice", output_twice, "output 'y' requested twice"},
};

/* _i: the row of `bad`; each starts from the good request (setup). */
START_TEST(bad_input_class) {
  ts_err err;
  bad[_i].spoil();
  ck_assert_msg(bind(&err) == TS_EINVAL, "%s: accepted", bad[_i].what);
  ck_assert_msg(strstr(err.msg, bad[_i].needle), "%s: '%s' not in '%s'",
                bad[_i].what, bad[_i].needle, err.msg);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("validate");
  TCase *tc = ts_check_tcase(s, "validate", 0, setup, NULL);
  tcase_add_test(tc, raw_binds_views_in_model_order);
  tcase_add_test(tc, typed_contents);
  tcase_add_loop_test(tc, bad_input_class, 0, sizeof bad / sizeof bad[0]);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
