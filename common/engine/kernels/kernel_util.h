/*
 * kernel_util.h - helpers every kernel file may use: error messages naming
 * the node (ts_kernel_fail), attribute and input checks, integer inputs,
 * axes, the dtype slots kernel tables are indexed by, and wrapping integer
 * arithmetic. Defined in kernel_util.c. Not a public interface: kernels
 * (and their tests) only; the op lists (list_*.h) name ops and carry none
 * of this.
 */
#ifndef TS_KERNEL_UTIL_H
#define TS_KERNEL_UTIL_H

#include "ops.h"

/* Wrapping signed arithmetic (no UB on overflow) for int32 and int64 `a`;
 * plain arithmetic for floating point. */
#define TS_WRAP(op, a, b)                                                 \
  _Generic((a), int32_t : (int32_t)((uint32_t)(a)op(uint32_t)(b)),        \
           int64_t : (int64_t)((uint64_t)(a)op(uint64_t)(b)),             \
           default : (a)op(b))

/* Fills *err with code and "node 'x' (Op): <message>", returns code. */
void ts_kernel_failf(const ts_node *n, ts_err *err, int code, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));
/* ts_kernel_failf yielding code; a macro for the reason given at
 * ts_err_set (error.h). */
#define ts_kernel_fail(n, err, code, ...)                                   \
  __extension__({                                                           \
    int ts_kernel_code_ = (code);                                           \
    ts_kernel_failf((n), (err), ts_kernel_code_, __VA_ARGS__);              \
    ts_kernel_code_;                                                        \
  })

/* The dtypes kernels compute on: X(slot suffix, C type, ts_dtype). The
 * first four are the numeric ones. Kernel tables are indexed by slot. */
#define TS_KERNEL_NUM_SLOTS(X)    \
  X(f32, float, TS_DTYPE_FLOAT)   \
  X(f64, double, TS_DTYPE_DOUBLE) \
  X(i32, int32_t, TS_DTYPE_INT32) \
  X(i64, int64_t, TS_DTYPE_INT64)
#define TS_KERNEL_SLOTS(X)       \
  TS_KERNEL_NUM_SLOTS(X)         \
  X(b, uint8_t, TS_DTYPE_BOOL)   \
  X(u8, uint8_t, TS_DTYPE_UINT8) \
  X(i8, int8_t, TS_DTYPE_INT8)

enum {
#define TS_KS_X(s, T, D) TS_SLOT_##s,
  TS_KERNEL_SLOTS(TS_KS_X)
#undef TS_KS_X
  TS_N_SLOTS,
  TS_N_NUM_SLOTS = TS_SLOT_b
};

/* The slot of t; -1 for a dtype no kernel here computes on. */
int ts_kernel_slot(ts_dtype t);

/* An attribute a kernel accepts and the type it must have. */
typedef struct ts_attr_spec {
  const char *name;
  Onnx__AttributeProto__AttributeType type;
} ts_attr_spec;
#define ATTR_INT ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT
#define ATTR_INTS ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
#define ATTR_FLOAT ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT
#define ATTR_TENSOR ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR
#define ATTR_FLOATS ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS
#define ATTR_STRING ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING
#define ATTR_STRINGS ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS

/* ts_node_check_attrs() over specs[] (ended by {NULL}; at most 15), then
 * the type of each attribute present: TS_EINVAL naming the attribute when
 * it is not specs[i].type, because ts_attr_int() and friends would quietly
 * use their default instead. */
int ts_kernel_check_attrs(const ts_node *n, const ts_attr_spec *specs,
                          ts_err *err);

/* For ops whose operands moved from attributes to inputs at opset
 * `inputs_from` (Clip 11, Slice 10, Squeeze 13, ...): checks the attributes
 * against old_attrs before that opset and new_attrs from it, and rejects
 * inputs beyond the first before it (TS_EINVAL), which would otherwise be
 * ignored. */
int ts_kernel_check_form(const ts_node *n, int64_t inputs_from,
                         const ts_attr_spec *old_attrs,
                         const ts_attr_spec *new_attrs, ts_err *err);

/* Reads the integer values of a 0-D or 1-D int32/int64 tensor `t` (an input
 * called `what` in messages) into vals[0..*count). TS_EAGAIN when the values
 * are not known yet (load-time inference); TS_EINVAL on another dtype or
 * rank, or more than `max` values. */
int ts_kernel_ints(const ts_node *n, const ts_tensor *t, const char *what,
                   int64_t *vals, size_t max, size_t *count, ts_err *err);

/* Element i of an int32 or int64 tensor (the dtypes of index and shape
 * inputs), widened to int64. */
static inline int64_t ts_kernel_int_at(const ts_tensor *t, int64_t i) {
  return t->dtype == TS_DTYPE_INT64 ? ((const int64_t *)t->data)[i]
                                    : ((const int32_t *)t->data)[i];
}

/* Maps axis in [-rank, rank) to [0, rank); TS_EINVAL naming `what` when out
 * of range. */
int ts_kernel_axis(const ts_node *n, int64_t axis, int rank, const char *what,
                   int *out, ts_err *err);

/* The release of ops whose params are one heap ts_tensor their prepare made
 * (Constant, ConstantOfShape): frees its data and itself; NULL is allowed. */
void ts_kernel_release_tensor(ts_node *n);
#endif
