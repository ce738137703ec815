/* tensor.c - see tensor.h. */
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t ts_dtype_size(ts_dtype t) {
  switch (t) {
#define TS_X(name, onnx, kserve, size) \
  case TS_DTYPE_##name:                \
    return size;
    TS_DTYPE_LIST(TS_X)
#undef TS_X
    default:
      return 0;
  }
}

const char *ts_dtype_kserve_name(ts_dtype t) {
  switch (t) {
#define TS_X(name, onnx, kserve, size) \
  case TS_DTYPE_##name:                \
    return kserve;
    TS_DTYPE_LIST(TS_X)
#undef TS_X
    default:
      return NULL;
  }
}

const char *ts_dtype_name(ts_dtype t) {
  static const char *const names[] = {
      [TS_DTYPE_FLOAT] = "float",   [TS_DTYPE_UINT8] = "uint8",
      [TS_DTYPE_INT8] = "int8",     [TS_DTYPE_UINT16] = "uint16",
      [TS_DTYPE_INT16] = "int16",   [TS_DTYPE_INT32] = "int32",
      [TS_DTYPE_INT64] = "int64",   [TS_DTYPE_STRING] = "string",
      [TS_DTYPE_BOOL] = "bool",     [TS_DTYPE_FLOAT16] = "float16",
      [TS_DTYPE_DOUBLE] = "double", [TS_DTYPE_UINT32] = "uint32",
      [TS_DTYPE_UINT64] = "uint64",
  };
  if ((int)t > 0 && (size_t)t < sizeof names / sizeof names[0] && names[t])
    return names[t];
  return "undefined";
}

ts_dtype ts_dtype_from_kserve(const char *name) {
  if (!name) return TS_DTYPE_UNDEFINED;
#define TS_X(n, onnx, kserve, size) \
  if (strcmp(name, kserve) == 0) return TS_DTYPE_##n;
  TS_DTYPE_LIST(TS_X)
#undef TS_X
  return TS_DTYPE_UNDEFINED;
}

bool ts_dtype_is_numeric(ts_dtype t) {
  return t != TS_DTYPE_STRING && ts_dtype_size(t) > 0;
}

float ts_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff, bits;
  if (e == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13); /* infinity, NaN */
  } else if (e != 0) {
    bits = sign | ((e + 112) << 23) | (mant << 13);
  } else {
    /* zero or subnormal: mant * 2^-24, exact in float */
    union { uint32_t u; float f; } v = {.u = sign};
    v.f = (float)mant * 0x1p-24f;
    if (sign) v.f = -v.f;
    return v.f;
  }
  union { uint32_t u; float f; } v = {.u = bits};
  return v.f;
}

uint16_t ts_float_to_half(float f) {
  union { float f; uint32_t u; } v = {.f = f};
  uint32_t sign = (v.u >> 16) & 0x8000, e = (v.u >> 23) & 0xff;
  uint32_t mant = v.u & 0x7fffff;
  if (e == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
  int32_t he = (int32_t)e - 127 + 15;
  if (he >= 0x1f) return (uint16_t)(sign | 0x7c00);
  if (he <= 0) {
    /* subnormal half (or zero): mant with its implicit bit, shifted */
    if (he < -10) return (uint16_t)sign;
    uint32_t m = mant | 0x800000, shift = (uint32_t)(14 - he);
    uint32_t h = m >> shift, rest = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)he << 10) | (mant >> 13), rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; /* may carry into
                                                            infinity: right */
  return (uint16_t)(sign | h);
}

uint16_t ts_float_to_bf16(float f) {
  union { float f; uint32_t u; } v = {.f = f};
  if ((v.u & 0x7fffffff) > 0x7f800000) return (uint16_t)((v.u >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((v.u >> 16) & 1);
  return (uint16_t)((v.u + rounding) >> 16);
}

int64_t ts_shape_numel(const int64_t *dims, int rank) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0) return -1;
    if (dims[i] != 0 && n > INT64_MAX / dims[i]) return -1;
    n *= dims[i];
  }
  return n;
}

int64_t ts_shape_nbytes(ts_dtype t, const int64_t *dims, int rank) {
  int64_t n = ts_shape_numel(dims, rank);
  int64_t size = (int64_t)ts_dtype_size(t);
  if (n < 0 || size == 0) return -1;
  if (n > INT64_MAX / size) return -1;
  if ((uint64_t)(n * size) > (uint64_t)SIZE_MAX) return -1;
  return n * size;
}

char *ts_shape_str(const int64_t *dims, int rank, char *buf, size_t size) {
  size_t off = 0;
  if (size == 0) return buf;
  buf[0] = '\0';
  off += (size_t)snprintf(buf + off, size - off, "[");
  for (int i = 0; i < rank && off < size; i++)
    off += (size_t)snprintf(buf + off, size - off, "%s%lld", i ? "," : "",
                            (long long)dims[i]);
  if (off < size) snprintf(buf + off, size - off, "]");
  return buf;
}

int ts_tensor_set_shape(ts_tensor *t, ts_dtype dtype, const int64_t *dims,
                        int rank, ts_err *err) {
  if (rank < 0 || rank > TS_MAX_RANK)
    return ts_err_set(err, TS_EINVAL, "rank %d is above the maximum of %d",
                      rank, TS_MAX_RANK);
  int64_t nbytes = ts_shape_nbytes(dtype, dims, rank);
  if (nbytes < 0) {
    char s[128];
    return ts_err_set(err, TS_EINVAL,
                      "shape %s of %s has a negative dim or overflows",
                      ts_shape_str(dims, rank, s, sizeof s),
                      ts_dtype_name(dtype));
  }
  t->dtype = dtype;
  t->rank = rank;
  if (rank) memcpy(t->dims, dims, (size_t)rank * sizeof dims[0]);
  t->nbytes = (size_t)nbytes;
  return TS_OK;
}

int ts_tensor_alloc(ts_tensor *t, ts_dtype dtype, const int64_t *dims,
                    int rank, ts_err *err) {
  memset(t, 0, sizeof *t);
  int rc = ts_tensor_set_shape(t, dtype, dims, rank, err);
  if (rc) return rc;
  t->data = calloc(1, t->nbytes ? t->nbytes : 1);
  if (!t->data)
    return ts_err_set(err, TS_ENOMEM, "cannot allocate %zu bytes", t->nbytes);
  t->owned = true;
  return TS_OK;
}

int ts_tensor_view(ts_tensor *t, ts_dtype dtype, const int64_t *dims, int rank,
                   void *data, ts_err *err) {
  memset(t, 0, sizeof *t);
  int rc = ts_tensor_set_shape(t, dtype, dims, rank, err);
  if (rc) return rc;
  t->data = data;
  return TS_OK;
}

void ts_tensor_free(ts_tensor *t) {
  if (t->owned) free(t->data);
  memset(t, 0, sizeof *t);
}

int64_t ts_tensor_numel(const ts_tensor *t) {
  return ts_shape_numel(t->dims, t->rank);
}

bool ts_tensor_same_shape(const ts_tensor *a, const ts_tensor *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i]) return false;
  return true;
}
