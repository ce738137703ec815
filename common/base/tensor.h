/*
 * tensor.h - data types, shapes and dense tensors.
 *
 * ts_dtype values are the ONNX TensorProto.DataType numbers, so they travel
 * unchanged in ONNX files and in worker.proto. One X-macro table holds each
 * type's ONNX number, KServe v2 datatype name and element size.
 *
 * A ts_tensor is a view: dtype, rank, dims, and a pointer to row-major,
 * little-endian bytes. Whether it owns those bytes is stated by whoever made
 * it (`owned`); ts_tensor_free() frees only owned data.
 */
#ifndef TS_TENSOR_H
#define TS_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* X(enum suffix, ONNX number, KServe datatype, element bytes) */
#define TS_DTYPE_LIST(X)          \
  X(FLOAT, 1, "FP32", 4)          \
  X(UINT8, 2, "UINT8", 1)         \
  X(INT8, 3, "INT8", 1)           \
  X(UINT16, 4, "UINT16", 2)       \
  X(INT16, 5, "INT16", 2)         \
  X(INT32, 6, "INT32", 4)         \
  X(INT64, 7, "INT64", 8)         \
  X(STRING, 8, "BYTES", 0)        \
  X(BOOL, 9, "BOOL", 1)           \
  X(FLOAT16, 10, "FP16", 2)       \
  X(DOUBLE, 11, "FP64", 8)        \
  X(UINT32, 12, "UINT32", 4)      \
  X(UINT64, 13, "UINT64", 8)      \
  X(BFLOAT16, 16, "BF16", 2)

typedef enum {
  TS_DTYPE_UNDEFINED = 0,
#define TS_X(name, onnx, kserve, size) TS_DTYPE_##name = onnx,
  TS_DTYPE_LIST(TS_X)
#undef TS_X
} ts_dtype;

#define TS_MAX_RANK 8

/* Element size in bytes; 0 for UNDEFINED, STRING and unknown values. */
size_t ts_dtype_size(ts_dtype t);
/* KServe v2 name ("FP32"); NULL for unknown values. */
const char *ts_dtype_kserve_name(ts_dtype t);
/* ONNX-style lowercase name ("float", "int64") for messages. */
const char *ts_dtype_name(ts_dtype t);
/* Parses a KServe v2 name; TS_DTYPE_UNDEFINED when unknown. */
ts_dtype ts_dtype_from_kserve(const char *name);
/* True for types with a fixed element size that Tessera computes on. */
bool ts_dtype_is_numeric(ts_dtype t);

/* IEEE half and bfloat16 (as uint16 bits) to and from float: any value
 * (subnormals, infinities, NaN); to the small types with round to nearest
 * even, overflow to infinity, NaN kept a NaN. */
float ts_half_to_float(uint16_t h);
uint16_t ts_float_to_half(float f);
static inline float ts_bf16_to_float(uint16_t h) {
  union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
  return v.f;
}
uint16_t ts_float_to_bf16(float f);

/* Element count of a shape. Returns -1 if a dim is negative or the product
 * (or product * elem_size, when elem_size > 0) overflows int64/size_t. */
int64_t ts_shape_numel(const int64_t *dims, int rank);
/* numel * element size, or -1 on overflow / negative dims. */
int64_t ts_shape_nbytes(ts_dtype t, const int64_t *dims, int rank);
/* Writes "[2,3,-1]" into buf. Returns buf. */
char *ts_shape_str(const int64_t *dims, int rank, char *buf, size_t size);

typedef struct ts_tensor {
  ts_dtype dtype;
  int rank;
  int64_t dims[TS_MAX_RANK];
  void *data;    /* row-major, little-endian; may be NULL when nbytes == 0 */
  size_t nbytes; /* == numel * ts_dtype_size(dtype) */
  bool owned;    /* data was malloc'd for this tensor; ts_tensor_free frees it */
} ts_tensor;

/* Sets dtype, rank, dims and nbytes; data untouched. TS_EINVAL on a rank
 * above TS_MAX_RANK, a negative dim or overflow. */
int ts_tensor_set_shape(ts_tensor *t, ts_dtype dtype, const int64_t *dims,
                        int rank, ts_err *err);
/* Shapes t and mallocs zeroed data (owned). */
int ts_tensor_alloc(ts_tensor *t, ts_dtype dtype, const int64_t *dims,
                    int rank, ts_err *err);
/* Makes t a non-owning view of data. */
int ts_tensor_view(ts_tensor *t, ts_dtype dtype, const int64_t *dims, int rank,
                   void *data, ts_err *err);
/* Frees owned data and clears t. Safe on a zeroed tensor. */
void ts_tensor_free(ts_tensor *t);
int64_t ts_tensor_numel(const ts_tensor *t);
bool ts_tensor_same_shape(const ts_tensor *a, const ts_tensor *b);

#endif
