/*
 * test_wire.c - worker.proto Tensor <-> ts_tensor.
 *
 * Round trips go through real protobuf packing and unpacking and compare the
 * bytes with the original buffer; every class of malformed tensor must be
 * rejected with TS_EINVAL and a message naming the tensor.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "wire.h"

/* Packs msg and unpacks it again: what a receiver sees. Caller frees with
 * tessera__worker__v1__tensor__free_unpacked. */
static Tessera__Worker__V1__Tensor *over_the_wire(
    const Tessera__Worker__V1__Tensor *msg) {
  size_t n = tessera__worker__v1__tensor__get_packed_size(msg);
  uint8_t *buf = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(tessera__worker__v1__tensor__pack(msg, buf), n);
  Tessera__Worker__V1__Tensor *got =
      tessera__worker__v1__tensor__unpack(NULL, n, buf);
  free(buf);
  ck_assert_ptr_nonnull(got);
  return got;
}

START_TEST(test_round_trip_float) {
  float data[2 * 3 * 4];
  for (int i = 0; i < 24; i++) data[i] = (float)i * 0.5f - 3.0f;
  int64_t dims[] = {2, 3, 4};
  ts_tensor t;
  ts_err err = {0};
  ck_assert_int_eq(ts_tensor_view(&t, TS_DTYPE_FLOAT, dims, 3, data, &err), 0);

  Tessera__Worker__V1__Tensor msg = TESSERA__WORKER__V1__TENSOR__INIT;
  int64_t storage[TS_MAX_RANK];
  ts_wire_tensor_fill(&msg, "x", &t, storage);
  /* Filling borrows, never copies. */
  ck_assert_ptr_eq(msg.data.data, (uint8_t *)data);
  ck_assert_ptr_eq(msg.shape, storage);

  Tessera__Worker__V1__Tensor *rx = over_the_wire(&msg);
  ts_tensor v;
  ck_assert_int_eq(ts_wire_tensor_view(rx, &v, &err), 0);
  ck_assert_int_eq(v.dtype, TS_DTYPE_FLOAT);
  ck_assert_int_eq(v.rank, 3);
  ck_assert_int_eq(v.dims[0], 2);
  ck_assert_int_eq(v.dims[1], 3);
  ck_assert_int_eq(v.dims[2], 4);
  ck_assert_uint_eq(v.nbytes, sizeof data);
  ck_assert(!v.owned);
  /* The view points into the unpacked message, not at a copy. */
  ck_assert_ptr_eq(v.data, rx->data.data);
  ck_assert_int_eq(memcmp(v.data, data, sizeof data), 0);
  ck_assert_str_eq(rx->name, "x");
  tessera__worker__v1__tensor__free_unpacked(rx, NULL);
}
END_TEST

START_TEST(test_round_trip_scalar_and_empty) {
  ts_err err = {0};
  /* Rank 0: one int64 element. */
  int64_t scalar = -1234567890123LL;
  ts_tensor t;
  ck_assert_int_eq(ts_tensor_view(&t, TS_DTYPE_INT64, NULL, 0, &scalar, &err),
                   0);
  Tessera__Worker__V1__Tensor msg = TESSERA__WORKER__V1__TENSOR__INIT;
  int64_t storage[TS_MAX_RANK];
  ts_wire_tensor_fill(&msg, "s", &t, storage);
  Tessera__Worker__V1__Tensor *rx = over_the_wire(&msg);
  ts_tensor v;
  ck_assert_int_eq(ts_wire_tensor_view(rx, &v, &err), 0);
  ck_assert_int_eq(v.rank, 0);
  ck_assert_int_eq(v.dtype, TS_DTYPE_INT64);
  ck_assert_uint_eq(v.nbytes, 8);
  ck_assert_int_eq(*(int64_t *)v.data, scalar);
  tessera__worker__v1__tensor__free_unpacked(rx, NULL);

  /* A zero-sized dim: no bytes at all is valid. */
  int64_t dims[] = {0, 5};
  ck_assert_int_eq(ts_tensor_view(&t, TS_DTYPE_DOUBLE, dims, 2, NULL, &err), 0);
  Tessera__Worker__V1__Tensor msg2 = TESSERA__WORKER__V1__TENSOR__INIT;
  ts_wire_tensor_fill(&msg2, "empty", &t, storage);
  rx = over_the_wire(&msg2);
  ck_assert_int_eq(ts_wire_tensor_view(rx, &v, &err), 0);
  ck_assert_int_eq(v.rank, 2);
  ck_assert_int_eq(v.dims[0], 0);
  ck_assert_int_eq(v.dims[1], 5);
  ck_assert_uint_eq(v.nbytes, 0);
  tessera__worker__v1__tensor__free_unpacked(rx, NULL);
}
END_TEST

START_TEST(test_every_numeric_dtype) {
  static const ts_dtype types[] = {
      TS_DTYPE_FLOAT,  TS_DTYPE_UINT8,   TS_DTYPE_INT8,   TS_DTYPE_UINT16,
      TS_DTYPE_INT16,  TS_DTYPE_INT32,   TS_DTYPE_INT64,  TS_DTYPE_BOOL,
      TS_DTYPE_FLOAT16, TS_DTYPE_DOUBLE, TS_DTYPE_UINT32, TS_DTYPE_UINT64};
  uint8_t bytes[3 * 8];
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)(i * 7 + 1);
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    ts_err err = {0};
    int64_t dims[] = {3};
    Tessera__Worker__V1__Tensor msg = TESSERA__WORKER__V1__TENSOR__INIT;
    msg.name = "t";
    msg.dtype = (int32_t)types[k];
    msg.n_shape = 1;
    msg.shape = dims;
    msg.data.data = bytes;
    msg.data.len = 3 * ts_dtype_size(types[k]);
    Tessera__Worker__V1__Tensor *rx = over_the_wire(&msg);
    ts_tensor v;
    ck_assert_msg(ts_wire_tensor_view(rx, &v, &err) == 0, "%s: %s",
                  ts_dtype_name(types[k]), err.msg);
    ck_assert_int_eq(v.dtype, types[k]);
    ck_assert_int_eq(memcmp(v.data, bytes, msg.data.len), 0);
    tessera__worker__v1__tensor__free_unpacked(rx, NULL);
  }
}
END_TEST

/* Expects msg to be rejected with TS_EINVAL, naming the tensor and `what`. */
static void expect_reject(const Tessera__Worker__V1__Tensor *msg,
                          const char *what) {
  ts_err err = {0};
  ts_tensor v;
  memset(&v, 0x5a, sizeof v);
  int rc = ts_wire_tensor_view(msg, &v, &err);
  ck_assert_int_eq(rc, TS_EINVAL);
  ck_assert_int_eq(err.code, TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "'bad'") != NULL, "no tensor name in: %s",
                err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "'%s' not in: %s", what,
                err.msg);
  /* A rejected view is left empty, never half-filled. */
  ck_assert_ptr_null(v.data);
  ck_assert_uint_eq(v.nbytes, 0);
}

static Tessera__Worker__V1__Tensor bad_tensor(int32_t dtype, int64_t *dims,
                                              size_t rank, void *data,
                                              size_t len) {
  Tessera__Worker__V1__Tensor msg = TESSERA__WORKER__V1__TENSOR__INIT;
  msg.name = "bad";
  msg.dtype = dtype;
  msg.n_shape = rank;
  msg.shape = dims;
  msg.data.data = data;
  msg.data.len = len;
  return msg;
}

/* Bytes at an odd address (as a custom allocator, or a view into a larger
 * buffer, could hand over): the view must be an aligned copy, read through
 * typed pointers without undefined behaviour (the sanitizer build runs this
 * under UBSan), with the same values as the source. */
START_TEST(test_misaligned_bytes_are_copied) {
  double f64[5] = {1.5, -2.25, 1e300, -0.0, 3};
  int64_t i64[5] = {INT64_MIN, -1, 0, 42, INT64_MAX};
  float f32[5] = {0.5f, -1e30f, 7, -3.25f, 1e-30f};
  int16_t i16[5] = {-32768, -1, 0, 1234, 32767};
  struct {
    ts_dtype dtype;
    const void *src;
  } cases[] = {{TS_DTYPE_DOUBLE, f64},
               {TS_DTYPE_INT64, i64},
               {TS_DTYPE_FLOAT, f32},
               {TS_DTYPE_INT16, i16}};
  uint8_t *block = malloc(64 + 1);
  ck_assert_ptr_nonnull(block);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    size_t esz = ts_dtype_size(cases[k].dtype), len = 5 * esz;
    uint8_t *odd = block + 1; /* malloc'd blocks are aligned: +1 is not */
    memcpy(odd, cases[k].src, len);
    int64_t dims[] = {5};
    Tessera__Worker__V1__Tensor m =
        bad_tensor((int32_t)cases[k].dtype, dims, 1, odd, len);
    ts_err err = {0};
    ts_tensor v;
    ck_assert_msg(ts_wire_tensor_view(&m, &v, &err) == 0, "%s", err.msg);
    ck_assert(v.owned);
    ck_assert_ptr_ne(v.data, odd);
    ck_assert_uint_eq((uintptr_t)v.data % esz, 0);
    ck_assert_uint_eq(v.nbytes, len);
    for (int i = 0; i < 5; i++) {
      switch (cases[k].dtype) {
        case TS_DTYPE_DOUBLE:
          ck_assert(((const double *)v.data)[i] == f64[i]);
          break;
        case TS_DTYPE_INT64:
          ck_assert(((const int64_t *)v.data)[i] == i64[i]);
          break;
        case TS_DTYPE_FLOAT:
          ck_assert(((const float *)v.data)[i] == f32[i]);
          break;
        default:
          ck_assert(((const int16_t *)v.data)[i] == i16[i]);
      }
    }
    ts_tensor_free(&v); /* frees the copy; the message's bytes stay */
    ck_assert_int_eq(memcmp(odd, cases[k].src, len), 0);
  }
  /* Bytes aligned for their type stay in place, also one-byte types at an
   * odd address. */
  int64_t dims[] = {5};
  Tessera__Worker__V1__Tensor m =
      bad_tensor(TS_DTYPE_UINT8, dims, 1, block + 1, 5);
  ts_err err = {0};
  ts_tensor v;
  ck_assert_int_eq(ts_wire_tensor_view(&m, &v, &err), 0);
  ck_assert(!v.owned);
  ck_assert_ptr_eq(v.data, block + 1);
  m = bad_tensor(TS_DTYPE_INT16, dims, 1, block + 2, 10);
  ck_assert_int_eq(ts_wire_tensor_view(&m, &v, &err), 0);
  ck_assert(!v.owned);
  ck_assert_ptr_eq(v.data, block + 2);
  ts_tensor_free(&v);
  free(block);
}
END_TEST

START_TEST(test_unknown_dtype) {
  float data[4] = {0};
  int64_t dims[] = {4};
  int32_t bad[] = {0, 8 /* STRING */, 14, 99, -1, INT32_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    Tessera__Worker__V1__Tensor m = bad_tensor(bad[i], dims, 1, data, 16);
    expect_reject(&m, "dtype");
  }
}
END_TEST

START_TEST(test_rank_too_high) {
  int64_t dims[TS_MAX_RANK + 1];
  for (int i = 0; i <= TS_MAX_RANK; i++) dims[i] = 1;
  float one = 1.0f;
  Tessera__Worker__V1__Tensor m =
      bad_tensor(TS_DTYPE_FLOAT, dims, TS_MAX_RANK + 1, &one, 4);
  expect_reject(&m, "rank 9");
  /* Exactly TS_MAX_RANK is fine. */
  ts_err err = {0};
  ts_tensor v;
  m.n_shape = TS_MAX_RANK;
  ck_assert_int_eq(ts_wire_tensor_view(&m, &v, &err), 0);
}
END_TEST

START_TEST(test_negative_dim) {
  float data[4] = {0};
  int64_t dims[] = {2, -2};
  Tessera__Worker__V1__Tensor m = bad_tensor(TS_DTYPE_FLOAT, dims, 2, data, 16);
  expect_reject(&m, "dim 1");
  int64_t dims2[] = {-1, -4};
  m = bad_tensor(TS_DTYPE_FLOAT, dims2, 2, data, 16);
  expect_reject(&m, "negative");
}
END_TEST

START_TEST(test_byte_length_mismatch) {
  float data[8] = {0};
  int64_t dims[] = {2, 3};
  /* 2x3 floats are 24 bytes: one too few, one too many, none. */
  size_t lens[] = {23, 25, 32, 0};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    Tessera__Worker__V1__Tensor m =
        bad_tensor(TS_DTYPE_FLOAT, dims, 2, lens[i] ? data : NULL, lens[i]);
    expect_reject(&m, "24 bytes");
  }
}
END_TEST

START_TEST(test_overflowing_shape) {
  float data[4] = {0};
  /* numel overflows int64. */
  int64_t dims[] = {INT64_MAX / 2, 3};
  Tessera__Worker__V1__Tensor m = bad_tensor(TS_DTYPE_FLOAT, dims, 2, data, 16);
  expect_reject(&m, "overflows");
  /* numel fits, numel * 8 bytes does not. */
  int64_t dims2[] = {INT64_MAX / 4};
  m = bad_tensor(TS_DTYPE_DOUBLE, dims2, 1, data, 16);
  expect_reject(&m, "overflows");
  /* A product of many moderate dims. */
  int64_t dims3[] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
  m = bad_tensor(TS_DTYPE_UINT8, dims3, 4, data, 16);
  expect_reject(&m, "overflows");
}
END_TEST

START_TEST(test_null_and_unnamed) {
  ts_err err = {0};
  ts_tensor v;
  ck_assert_int_eq(ts_wire_tensor_view(NULL, &v, &err), TS_EINVAL);
  Tessera__Worker__V1__Tensor m = TESSERA__WORKER__V1__TENSOR__INIT;
  m.dtype = 77;
  ck_assert_int_eq(ts_wire_tensor_view(&m, &v, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "(unnamed)"));
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("wire");
  TCase *ok = ts_check_tcase(s, "round_trip", 0, NULL, NULL);
  tcase_add_test(ok, test_round_trip_float);
  tcase_add_test(ok, test_round_trip_scalar_and_empty);
  tcase_add_test(ok, test_every_numeric_dtype);
  tcase_add_test(ok, test_misaligned_bytes_are_copied);
  TCase *bad = ts_check_tcase(s, "bad_input", 0, NULL, NULL);
  tcase_add_test(bad, test_unknown_dtype);
  tcase_add_test(bad, test_rank_too_high);
  tcase_add_test(bad, test_negative_dim);
  tcase_add_test(bad, test_byte_length_mismatch);
  tcase_add_test(bad, test_overflowing_shape);
  tcase_add_test(bad, test_null_and_unnamed);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
