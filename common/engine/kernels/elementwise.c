/*
 * elementwise.c - element-wise kernels: arithmetic, comparisons, logic,
 * activations, Cast, Clip, Where, Expand and the variadic Max/Min/Sum.
 *
 * Every multi-input op goes through one broadcasting driver,
 * broadcast_apply(): it maps each operand onto the output shape with numpy
 * rules (stride 0 on broadcast dims), drops size-1 dims, merges dims that
 * stay contiguous for every operand, and calls an inner kernel once per
 * output row with a step of 0 or 1 per operand. Same-shape operands collapse
 * to a single call over the whole tensor; a scalar operand is a step of 0.
 * Inner kernels are generated from expression tables, one per (op, dtype),
 * and specialise on the steps so the compiler can vectorise the common case.
 *
 * Invariants:
 *  - kernels never allocate; signed integer arithmetic wraps (computed in
 *    unsigned), integer division by zero yields 0 and INT_MIN / -1 wraps, so
 *    no input can trap;
 *  - float -> integer Cast truncates toward zero (NaN -> 0, out of range
 *    saturates to int64 first, then wraps to the narrower type);
 *  - bool tensors are bytes; any non-zero byte reads as true, kernels write
 *    0 or 1.
 */
/* The build's -O2 (GCC 12) uses the "very cheap" vectorizer cost model,
 * which vectorizes no loop whose trip count is unknown: that is every
 * kernel loop here. Allow the cheap model for this file (2-4x on the
 * element-wise loops) until common/meson.build sets it for the kernels. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=cheap")
#endif
#include <limits.h>
#include <string.h>
#include <tgmath.h>

#include "kernel_util.h"
#include "list_elementwise.h"
#include "ops.h"

/* Inner kernel: n output elements; in[j] advances by step[j] (0 or 1)
 * elements per output element; params are op-specific, typed like the
 * input. */
typedef void (*ew_fn)(int64_t n, const void *const *in, const int64_t *step,
                      void *out, const void *params);

static inline int32_t div_i32(int32_t a, int32_t b) {
  return b == 0 ? 0 : b == -1 ? (int32_t)(0u - (uint32_t)a) : a / b;
}
static inline int64_t div_i64(int64_t a, int64_t b) {
  return b == 0 ? 0 : b == -1 ? (int64_t)(0u - (uint64_t)a) : a / b;
}
#define DIV(a, b)                                                    \
  _Generic((a), int32_t : div_i32(a, b), int64_t : div_i64(a, b),    \
           default : (a) / (b))

#define NEG(x)                                                           \
  _Generic((x), int32_t : (int32_t)(0u - (uint32_t)(x)),                 \
           int64_t : (int64_t)(0u - (uint64_t)(x)), default : -(x))

/* ---- the broadcasting driver -------------------------------------------- */

enum { MAX_OPERANDS = 3 };

/* Output shape of broadcasting in[0..n_in) together (numpy rules). */
static int broadcast_shape_n(const ts_node *n, int n_in,
                             const ts_tensor *const *in, int64_t *dims,
                             int *rank, ts_err *err) {
  ts_tensor acc = *in[0];
  for (int j = 1; j < n_in; j++) {
    int rc = ts_broadcast_shape(&acc, in[j], acc.dims, &acc.rank, err);
    if (rc) {
      char desc[192];
      ts_err_prefixf(err, "%s: input %d", ts_node_desc(n, desc, sizeof desc),
                     j);
      return rc;
    }
  }
  *rank = acc.rank;
  memcpy(dims, acc.dims, sizeof acc.dims);
  return TS_OK;
}

/* Runs fn over out's shape with in[0..n_in) broadcast to it. out may alias
 * an input of the same shape. TS_EINVAL if an input does not broadcast. */
static int broadcast_apply(const ts_node *n, int n_in,
                           const ts_tensor *const *in, ts_tensor *out,
                           ew_fn fn, const void *params, ts_err *err) {
  int64_t dims[TS_MAX_RANK], stride[MAX_OPERANDS][TS_MAX_RANK];
  int64_t own[MAX_OPERANDS][TS_MAX_RANK]; /* each input's contiguous strides */
  size_t esz[MAX_OPERANDS];
  int m = 0;

  TS_ASSERT(n_in >= 1 && n_in <= MAX_OPERANDS);
  if (ts_tensor_numel(out) == 0) return TS_OK;
  for (int j = 0; j < n_in; j++) {
    if (in[j]->rank > out->rank)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input %d has rank %d, above the output's %d", j,
                            in[j]->rank, out->rank);
    int64_t s = 1;
    for (int k = in[j]->rank - 1; k >= 0; k--) {
      own[j][k] = s;
      s *= in[j]->dims[k];
    }
    esz[j] = ts_dtype_size(in[j]->dtype);
  }
  for (int k = 0; k < out->rank; k++) {
    int64_t d = out->dims[k], s[MAX_OPERANDS];
    if (d == 1) continue;
    for (int j = 0; j < n_in; j++) {
      int kj = k - (out->rank - in[j]->rank);
      int64_t dj = kj >= 0 ? in[j]->dims[kj] : 1;
      if (dj == d)
        s[j] = own[j][kj];
      else if (dj == 1)
        s[j] = 0;
      else
        return ts_kernel_fail(n, err, TS_EINVAL,
                              "input %d dim %d is %lld, cannot broadcast to "
                              "%lld",
                              j, kj, (long long)dj, (long long)d);
    }
    bool merge = m > 0;
    for (int j = 0; j < n_in && merge; j++)
      merge = stride[j][m - 1] == s[j] * d;
    if (merge) {
      dims[m - 1] *= d;
    } else {
      dims[m] = d;
      m++;
    }
    for (int j = 0; j < n_in; j++) stride[j][m - 1] = s[j];
  }

  int64_t inner = m ? dims[m - 1] : 1, outer = 1, step[MAX_OPERANDS];
  for (int k = 0; k + 1 < m; k++) outer *= dims[k];
  for (int j = 0; j < n_in; j++) step[j] = m ? stride[j][m - 1] : 0;
  int64_t idx[TS_MAX_RANK] = {0}, off[MAX_OPERANDS] = {0};
  size_t row_bytes = (size_t)inner * ts_dtype_size(out->dtype);
  char *o = out->data;
  for (int64_t r = 0; r < outer; r++, o += row_bytes) {
    const void *p[MAX_OPERANDS];
    for (int j = 0; j < n_in; j++)
      p[j] = (const char *)in[j]->data + (size_t)off[j] * esz[j];
    fn(inner, p, step, o, params);
    for (int k = m - 2; k >= 0; k--) { /* odometer over the outer dims */
      for (int j = 0; j < n_in; j++) off[j] += stride[j][k];
      if (++idx[k] < dims[k]) break;
      for (int j = 0; j < n_in; j++) off[j] -= stride[j][k] * dims[k];
      idx[k] = 0;
    }
  }
  return TS_OK;
}

/* ---- binary kernels ----------------------------------------------------- */

/* Defines name(): O[i] = expr over a (TA) and b (TB), specialised on which
 * operand is a scalar. */
#define BIN_KERNEL(name, TA, TB, OT, expr)                                   \
  static void name(int64_t n, const void *const *in, const int64_t *step,    \
                   void *out, const void *params) {                          \
    const TA *A = in[0];                                                     \
    const TB *B = in[1];                                                     \
    OT *O = out;                                                             \
    (void)params;                                                            \
    if (step[0] && step[1]) {                                                \
      for (int64_t i = 0; i < n; i++) {                                      \
        TA a = A[i];                                                         \
        TB b = B[i];                                                         \
        O[i] = (OT)(expr);                                                   \
      }                                                                      \
    } else if (step[0]) {                                                    \
      const TB b = B[0];                                                     \
      for (int64_t i = 0; i < n; i++) {                                      \
        TA a = A[i];                                                         \
        O[i] = (OT)(expr);                                                   \
      }                                                                      \
    } else {                                                                 \
      const TA a = A[0];                                                     \
      for (int64_t i = 0; i < n; i++) {                                      \
        TB b = B[i * step[1]];                                               \
        O[i] = (OT)(expr);                                                   \
      }                                                                      \
    }                                                                        \
  }

/* X(op, expression in a and b, family). Families: NUM (float, double,
 * int32, int64 -> same type), CMP (those four -> bool), EQ (CMP and bool),
 * LOGIC (bool -> bool). */
#define BINARY_LIST(X)                   \
  X(Add, TS_WRAP(+, a, b), NUM)             \
  X(Sub, TS_WRAP(-, a, b), NUM)             \
  X(Mul, TS_WRAP(*, a, b), NUM)             \
  X(Div, DIV(a, b), NUM)                 \
  X(Equal, a == b, EQ)                   \
  X(Less, a < b, CMP)                    \
  X(Greater, a > b, CMP)                 \
  X(LessOrEqual, a <= b, CMP)            \
  X(GreaterOrEqual, a >= b, CMP)         \
  X(And, (a != 0) & (b != 0), LOGIC)     \
  X(Or, (a != 0) | (b != 0), LOGIC)      \
  X(Xor, (a != 0) ^ (b != 0), LOGIC)
/* Binary kernels of the variadic ops (Max, Min; Sum uses Add's). NaN
 * propagates like numpy's maximum / minimum. */
#define VARIADIC_LIST(X)                 \
  X(Max, (a != a || a > b) ? a : b, NUM) \
  X(Min, (a != a || a < b) ? a : b, NUM)

#define DEF4(op, expr, OUT)                                         \
  BIN_KERNEL(op##_f32, float, float, OUT(float), expr)              \
  BIN_KERNEL(op##_f64, double, double, OUT(double), expr)           \
  BIN_KERNEL(op##_i32, int32_t, int32_t, OUT(int32_t), expr)        \
  BIN_KERNEL(op##_i64, int64_t, int64_t, OUT(int64_t), expr)
#define SAME_T(T) T
#define BOOL_T(T) uint8_t
#define DEF_NUM(op, expr) DEF4(op, expr, SAME_T)
#define DEF_CMP(op, expr) DEF4(op, expr, BOOL_T)
#define DEF_EQ(op, expr)  \
  DEF4(op, expr, BOOL_T)  \
  BIN_KERNEL(op##_b, uint8_t, uint8_t, uint8_t, (a != 0) == (b != 0))
#define DEF_LOGIC(op, expr) BIN_KERNEL(op##_b, uint8_t, uint8_t, uint8_t, expr)
#define X(op, expr, fam) DEF_##fam(op, expr)
BINARY_LIST(X)
VARIADIC_LIST(X)
#undef X

/* Pow: float or double base, any numeric exponent; the result has the
 * base's type. */
#define POW_ROW(TA, sa)                                              \
  BIN_KERNEL(pow_##sa##_f32, TA, float, TA, pow((TA)a, (TA)b))       \
  BIN_KERNEL(pow_##sa##_f64, TA, double, TA, pow((TA)a, (TA)b))      \
  BIN_KERNEL(pow_##sa##_i32, TA, int32_t, TA, pow((TA)a, (TA)b))     \
  BIN_KERNEL(pow_##sa##_i64, TA, int64_t, TA, pow((TA)a, (TA)b))
POW_ROW(float, f32)
POW_ROW(double, f64)

/* Pow with one exponent for every element (a constant such as LayerNorm's
 * Pow(x, 2)) is a multiplication or a square root for the exponents that
 * models use: x * x is the correctly rounded square, as powf's is; x^3 is
 * computed in double (x * x exact there, one more rounding, then float);
 * sqrt matches pow(x, 0.5) once -0 and -inf are mapped as pow maps them
 * (to +0 and +inf). The loops vectorise; powf per element does not. b is
 * the exponent, the same for every element, and unused: it is read as a
 * byte, which every exponent type has. */
#define POW_SQRT(a) ((a) == -INFINITY ? INFINITY : sqrt(a) + 0)
#define POW_FIXED_ROW(TA, sa)                                             \
  BIN_KERNEL(pow_##sa##_one, TA, uint8_t, TA, ((void)b, a))               \
  BIN_KERNEL(pow_##sa##_square, TA, uint8_t, TA, ((void)b, a * a))        \
  BIN_KERNEL(pow_##sa##_cube, TA, uint8_t, TA,                            \
             ((void)b, (double)a * (double)a * (double)a))                \
  BIN_KERNEL(pow_##sa##_sqrt, TA, uint8_t, TA, ((void)b, POW_SQRT(a)))
POW_FIXED_ROW(float, f32)
POW_FIXED_ROW(double, f64)
#undef POW_FIXED_ROW

/* The exponent's single value as a double; false when b holds more than
 * one element or a type Pow does not take. */
static bool pow_scalar_exponent(const ts_tensor *b, double *out) {
  if (ts_tensor_numel(b) != 1 || !b->data) return false;
  switch (ts_kernel_slot(b->dtype)) {
    case TS_SLOT_f32: *out = *(const float *)b->data; return true;
    case TS_SLOT_f64: *out = *(const double *)b->data; return true;
    case TS_SLOT_i32: *out = *(const int32_t *)b->data; return true;
    case TS_SLOT_i64: *out = (double)*(const int64_t *)b->data; return true;
    default: return false;
  }
}

/* A multiplication kernel for base a and a single-valued exponent b, or
 * NULL when the exponent is not one of 1, 2, 3, 0.5 (general powf). */
static ew_fn pow_fixed_kernel(const ts_tensor *a, const ts_tensor *b) {
  double e;
  const int sa = ts_kernel_slot(a->dtype);
  if ((sa != TS_SLOT_f32 && sa != TS_SLOT_f64) || !pow_scalar_exponent(b, &e))
    return NULL;
  const bool f32 = sa == TS_SLOT_f32;
  if (e == 1.0) return f32 ? pow_f32_one : pow_f64_one;
  if (e == 2.0) return f32 ? pow_f32_square : pow_f64_square;
  if (e == 3.0) return f32 ? pow_f32_cube : pow_f64_cube;
  if (e == 0.5) return f32 ? pow_f32_sqrt : pow_f64_sqrt;
  return NULL;
}

typedef struct binary_desc {
  bool out_bool;              /* comparisons: output is bool */
  bool mixed;                 /* inputs may differ in dtype (Pow) */
  /* [slot of a][slot of b]; NULL: unsupported */
  ew_fn fn[TS_N_SLOTS][TS_N_SLOTS];
} binary_desc;

#define TABLE_NUM(op)                            \
  .fn[TS_SLOT_f32][TS_SLOT_f32] = op##_f32,      \
  .fn[TS_SLOT_f64][TS_SLOT_f64] = op##_f64,      \
  .fn[TS_SLOT_i32][TS_SLOT_i32] = op##_i32,      \
  .fn[TS_SLOT_i64][TS_SLOT_i64] = op##_i64
#define TABLE_CMP(op) .out_bool = true, TABLE_NUM(op)
#define TABLE_EQ(op) TABLE_CMP(op), .fn[TS_SLOT_b][TS_SLOT_b] = op##_b
#define TABLE_LOGIC(op) .out_bool = true, .fn[TS_SLOT_b][TS_SLOT_b] = op##_b
#define X(op, expr, fam) \
  static const binary_desc binary_##op = {TABLE_##fam(op)};
BINARY_LIST(X)
VARIADIC_LIST(X)
#undef X
static const binary_desc binary_Pow = {
    .mixed = true,
    .fn = {[TS_SLOT_f32] = {[TS_SLOT_f32] = pow_f32_f32,
                            [TS_SLOT_f64] = pow_f32_f64,
                            [TS_SLOT_i32] = pow_f32_i32,
                            [TS_SLOT_i64] = pow_f32_i64},
           [TS_SLOT_f64] = {[TS_SLOT_f32] = pow_f64_f32,
                            [TS_SLOT_f64] = pow_f64_f64,
                            [TS_SLOT_i32] = pow_f64_i32,
                            [TS_SLOT_i64] = pow_f64_i64}}};

static const ts_attr_spec no_attrs[] = {{NULL}};

static int prepare_plain(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(n, no_attrs, err);
}

/* The kernel for a and b; on failure fills err (type mismatch: TS_EINVAL,
 * unsupported type: TS_EUNSUPPORTED). */
static int binary_pick(const binary_desc *d, const ts_node *n,
                       const ts_tensor *a, const ts_tensor *b, ew_fn *fn,
                       ts_err *err) {
  int sa = ts_kernel_slot(a->dtype), sb = ts_kernel_slot(b->dtype);
  if (!d->mixed && a->dtype != b->dtype)
    return ts_kernel_fail(n, err, TS_EINVAL, "input types %s and %s differ",
                          ts_dtype_name(a->dtype), ts_dtype_name(b->dtype));
  *fn = sa >= 0 && sb >= 0 ? d->fn[sa][sb] : NULL;
  if (!*fn)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input types %s and %s are not supported",
                          ts_dtype_name(a->dtype), ts_dtype_name(b->dtype));
  return TS_OK;
}

/* ---- copy kernels (Expand, Where, single-input variadics) --------------- */

/* X(element bytes, C type): one copy and one select kernel per size. */
#define SIZE_LIST(X) X(1, uint8_t) X(2, uint16_t) X(4, uint32_t) X(8, uint64_t)

#define DEF_SIZED(size, T)                                                   \
  static void copy_##size(int64_t n, const void *const *in,                  \
                          const int64_t *step, void *out, const void *p) {   \
    const T *A = in[0];                                                      \
    T *O = out;                                                              \
    (void)p;                                                                 \
    if (step[0])                                                             \
      memcpy(O, A, (size_t)n * sizeof(T));                                   \
    else                                                                     \
      for (int64_t i = 0; i < n; i++) O[i] = A[0];                           \
  }                                                                          \
  static void select_##size(int64_t n, const void *const *in,                \
                            const int64_t *step, void *out, const void *p) { \
    const uint8_t *C = in[0];                                                \
    const T *A = in[1], *B = in[2];                                          \
    T *O = out;                                                              \
    (void)p;                                                                 \
    for (int64_t i = 0; i < n; i++)                                          \
      O[i] = C[i * step[0]] ? A[i * step[1]] : B[i * step[2]];               \
  }
SIZE_LIST(DEF_SIZED)
#undef DEF_SIZED

/* Kernels by element size; NULL for sizes no dtype has. */
static ew_fn sized_kernel(ts_dtype t, bool select) {
  switch (ts_dtype_is_numeric(t) ? ts_dtype_size(t) : 0) {
#define X(size, T) \
  case size:       \
    return select ? select_##size : copy_##size;
    SIZE_LIST(X)
#undef X
    default:
      return NULL;
  }
}

/* ---- binary and variadic ops ------------------------------------------- */

static int variadic_check(const binary_desc *d, const ts_node *n,
                          const ts_tensor *const *in, ew_fn *fn,
                          ts_err *err) {
  if (n->n_inputs < 1)
    return ts_kernel_fail(n, err, TS_EINVAL, "needs at least one input");
  for (int j = 0; j < n->n_inputs; j++) {
    if (!in[j])
      return ts_kernel_fail(n, err, TS_EINVAL, "input %d is missing", j);
    int rc = binary_pick(d, n, in[0], in[j], fn, err);
    if (rc) return rc;
  }
  return TS_OK;
}

static int variadic_infer(const binary_desc *d, const ts_node *n,
                          const ts_tensor *const *in, ts_tensor *out,
                          ts_err *err) {
  ew_fn fn;
  int64_t dims[TS_MAX_RANK];
  int rank;
  int rc = variadic_check(d, n, in, &fn, err);
  if (!rc) rc = broadcast_shape_n(n, n->n_inputs, in, dims, &rank, err);
  if (rc) return rc;
  return ts_tensor_set_shape(out, d->out_bool ? TS_DTYPE_BOOL : in[0]->dtype,
                             dims, rank, err);
}

/* out = in[0] op in[1], then out = out op in[j] for each further input:
 * broadcasting each pair onto the full output shape gives the n-way
 * broadcast. Binary ops are the case of two inputs. */
static int variadic_run(const binary_desc *d, const ts_node *n,
                        const ts_tensor *const *in, ts_tensor *out,
                        ts_err *err) {
  ew_fn fn;
  int rc = variadic_check(d, n, in, &fn, err);
  if (rc) return rc;
  if (n->n_inputs == 1)
    return broadcast_apply(n, 1, in, out, sized_kernel(out->dtype, false),
                           NULL, err);
  rc = broadcast_apply(n, 2, in, out, fn, NULL, err);
  for (int j = 2; j < n->n_inputs && !rc; j++) {
    const ts_tensor *pair[2] = {out, in[j]};
    rc = broadcast_apply(n, 2, pair, out, fn, NULL, err);
  }
  return rc;
}

#define DEFINE_BROADCAST_OP(op, desc, min_inputs, max_inputs)                 \
  static int infer_##op(const ts_node *n, const ts_tensor *const *in,         \
                        ts_tensor *out, ts_err *err) {                        \
    return variadic_infer(desc, n, in, out, err);                             \
  }                                                                           \
  static int run_##op(const ts_node *n, const ts_tensor *const *in,           \
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {            \
    (void)ctx;                                                                \
    return variadic_run(desc, n, in, out, err);                               \
  }                                                                           \
  const ts_op ts_op_##op = {"", #op, min_inputs, max_inputs, 1, 1,           \
                            prepare_plain, NULL, infer_##op, run_##op};
#define X(op, expr, fam) DEFINE_BROADCAST_OP(op, &binary_##op, 2, 2)
BINARY_LIST(X)
#undef X
#define X(op, expr, fam) DEFINE_BROADCAST_OP(op, &binary_##op, 1, INT_MAX)
VARIADIC_LIST(X)
#undef X

/* Pow: the broadcast op, with the kernel picked by the exponent when it is
 * a single value (pow_fixed_kernel); the exponent's operand still goes
 * through the driver so broadcasting shapes stay what they are. */
static int infer_Pow(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_err *err) {
  return variadic_infer(&binary_Pow, n, in, out, err);
}
static int run_Pow(const ts_node *n, const ts_tensor *const *in,
                   ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  ew_fn fn;
  (void)ctx;
  int rc = binary_pick(&binary_Pow, n, in[0], in[1], &fn, err);
  if (rc) return rc;
  ew_fn fixed = pow_fixed_kernel(in[0], in[1]);
  return broadcast_apply(n, 2, in, out, fixed ? fixed : fn, NULL, err);
}
const ts_op ts_op_Pow = {"", "Pow", 2, 2, 1, 1, prepare_plain, NULL,
                         infer_Pow, run_Pow};
DEFINE_BROADCAST_OP(Sum, &binary_Add, 1, INT_MAX)

/* ---- unary kernels ------------------------------------------------------ */

/* Op parameters, typed like the input: LeakyRelu's alpha in [0], Clip's
 * bounds in [0] and [1]. */
typedef union param_buf {
  float f32[2];
  double f64[2];
  int32_t i32[2];
  int64_t i64[2];
  unsigned char bytes[16];
} param_buf;

#define UN_KERNEL(name, T, OT, expr)                                       \
  static void name(int64_t n, const void *const *in, const int64_t *step,  \
                   void *out, const void *params) {                        \
    const T *A = in[0], *P = params;                                       \
    OT *O = out;                                                           \
    (void)step;                                                            \
    (void)P;                                                               \
    for (int64_t i = 0; i < n; i++) {                                      \
      T x = A[i];                                                          \
      O[i] = (OT)(expr);                                                   \
    }                                                                      \
  }

/* erf for float without a libm call, so the loop vectorizes (glibc's
 * erff is ~12 ns an element, the second cost of a GELU transformer after
 * sgemm). |x| < 1: x * P(x^2); 1 <= |x| < 4: a polynomial in
 * s = (|x| - 2.5) / 1.5; above 4 the float result is 1. The coefficients
 * are least-squares fits on 2000 Chebyshev nodes (numpy polyfit of
 * erf(x)/x in x^2, degree 5, and of erf in s, degree 12); evaluated in
 * float the worst relative error over normal floats is 1.7e-7 (about
 * 2.5 ulp, glibc: 1 ulp). Double inputs keep libm's erf. */
static inline float erf_f32(float x) {
  float a = fabsf(x), u = a * a, s = (a - 2.5f) * (1 / 1.5f);
  float p = (((((-0.000565410592f * u + 0.00492327753f) * u +
                -0.026716385f) * u + 0.112803645f) * u +
              -0.376123488f) * u + 1.12837911f) * a;
  /* Written out (not a loop over a table) so the element loop vectorizes. */
  float q = -0.00113001803f;
  q = q * s + 0.00185156765f;
  q = q * s + 0.00342609966f;
  q = q * s - 0.0107976608f;
  q = q * s + 0.00748362578f;
  q = q * s + 0.00981079135f;
  q = q * s - 0.0321643278f;
  q = q * s + 0.0463220701f;
  q = q * s - 0.0436021946f;
  q = q * s + 0.028195845f;
  q = q * s - 0.012255908f;
  q = q * s + 0.003266969f;
  q = q * s + 0.999593079f;
  float r = a < 1 ? p : a < 4 ? q : 1;
  return x != x ? x : copysignf(r, x);
}
#define ERF(x) _Generic((x), float : erf_f32, default : erf)(x)

/* tanh for float without a libm call (glibc's tanhf is ~30 ns an element;
 * GELU's tanh form uses it): tanh(x) = x * P(x^2) / Q(x^2), degrees 5/5,
 * evaluated in double on |x| clamped to 9, where the float result becomes
 * 1. The coefficients come from an iteratively reweighted linear
 * least-squares fit (Sanathanan-Koerner) of tanh(x)/x on [0, 9] in
 * x^2 / 81, weighted for relative error; the worst relative error over
 * normal floats is 5.9e-8, about 1 ulp. */
static inline float tanh_f32(float x) {
  double a = fabs((double)x), c = a < 9 ? a : 9, u = c * c;
  double p = ((((3.7187391408126419e-11 * u + 1.118940366082885e-07) * u +
                4.2399643024833472e-05) * u + 0.0044308493313470164) * u +
              0.14102889854732367) * u + 0.99999999998367839;
  double q = ((((2.9776552871458982e-09 * u + 2.6155190095977012e-06) * u +
                0.00050177574173708201) * u + 0.029218260417641136) * u +
              0.47436223160568508) * u + 1;
  double r = a < 9 ? c * p / q : 1;
  return x != x ? x : copysignf((float)r, x);
}
#define TANH(x) _Generic((x), float : tanh_f32, default : tanh)(x)

#define ABS(x) _Generic((x), int32_t : (x) < 0 ? NEG(x) : (x), \
                        int64_t : (x) < 0 ? NEG(x) : (x), default : fabs(x))
#define CLIP(x, lo, hi) \
  (((x) < (lo) ? (lo) : (x)) > (hi) ? (hi) : ((x) < (lo) ? (lo) : (x)))

/* X(op, expression in x and params P, family, prepare, params builder,
 * most inputs).
 * Families: F (float, double), FI (also int32, int64), B (bool). */
#define UNARY_LIST(X)                                                   \
  X(Relu, x < 0 ? 0 : x, FI, prepare_plain, NULL, 1)                      \
  X(Neg, NEG(x), FI, prepare_plain, NULL, 1)                              \
  X(Abs, ABS(x), FI, prepare_plain, NULL, 1)                              \
  X(Sigmoid, 1 / (1 + exp(-x)), F, prepare_plain, NULL, 1)                \
  X(Tanh, TANH(x), F, prepare_plain, NULL, 1)                             \
  X(Sqrt, sqrt(x), F, prepare_plain, NULL, 1)                             \
  X(Exp, exp(x), F, prepare_plain, NULL, 1)                               \
  X(Log, log(x), F, prepare_plain, NULL, 1)                               \
  X(Erf, ERF(x), F, prepare_plain, NULL, 1)                               \
  X(Reciprocal, 1 / x, F, prepare_plain, NULL, 1)                         \
  X(Floor, floor(x), F, prepare_plain, NULL, 1)                           \
  X(Ceil, ceil(x), F, prepare_plain, NULL, 1)                             \
  X(Not, !x, B, prepare_plain, NULL, 1)                                   \
  X(LeakyRelu, x < 0 ? x * P[0] : x, F, prepare_leaky, params_leaky, 1)   \
  X(Clip, CLIP(x, P[0], P[1]), FI, prepare_clip, params_clip, 3)

#define UN_DEF_F(op, expr)                          \
  UN_KERNEL(u##op##_f32, float, float, expr)        \
  UN_KERNEL(u##op##_f64, double, double, expr)
#define UN_DEF_FI(op, expr)                         \
  UN_DEF_F(op, expr)                                \
  UN_KERNEL(u##op##_i32, int32_t, int32_t, expr)    \
  UN_KERNEL(u##op##_i64, int64_t, int64_t, expr)
#define UN_DEF_B(op, expr) UN_KERNEL(u##op##_b, uint8_t, uint8_t, expr)
#define X(op, expr, fam, prep, par, nin) UN_DEF_##fam(op, expr)
UNARY_LIST(X)
#undef X

static const ts_attr_spec leaky_attrs[] = {{"alpha", ATTR_FLOAT}, {NULL}};
static const ts_attr_spec clip_attrs[] = {
    {"min", ATTR_FLOAT}, {"max", ATTR_FLOAT}, {NULL}};

static int prepare_leaky(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(n, leaky_attrs, err);
}

/* Clip takes min/max as attributes before opset 11, as inputs from 11. */
static int prepare_clip(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_form(n, 11, clip_attrs, no_attrs, err);
}

static void param_set(param_buf *p, ts_dtype t, int i, double v) {
  if (t == TS_DTYPE_FLOAT)
    p->f32[i] = (float)v;
  else
    p->f64[i] = v;
}

static int params_leaky(const ts_node *n, const ts_tensor *const *in,
                        param_buf *p, ts_err *err) {
  (void)err;
  param_set(p, in[0]->dtype, 0, ts_attr_float(n, "alpha", 0.01f));
  return TS_OK;
}

static int params_clip(const ts_node *n, const ts_tensor *const *in,
                       param_buf *p, ts_err *err) {
  ts_dtype t = in[0]->dtype;
  switch (t) { /* no bound: the type's whole range */
    case TS_DTYPE_INT32:
      p->i32[0] = INT32_MIN, p->i32[1] = INT32_MAX;
      break;
    case TS_DTYPE_INT64:
      p->i64[0] = INT64_MIN, p->i64[1] = INT64_MAX;
      break;
    default:
      param_set(p, t, 0, -INFINITY);
      param_set(p, t, 1, INFINITY);
  }
  if (n->opset < 11) {
    if (t == TS_DTYPE_INT32 || t == TS_DTYPE_INT64)
      return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                            "%s input before opset 11", ts_dtype_name(t));
    param_set(p, t, 0, ts_attr_float(n, "min", -INFINITY));
    param_set(p, t, 1, ts_attr_float(n, "max", INFINITY));
    return TS_OK;
  }
  static const char *const names[] = {"min", "max"};
  for (int i = 0; i < 2; i++) {
    const ts_tensor *b = n->n_inputs > i + 1 ? in[i + 1] : NULL;
    if (!b) continue;
    if (b->dtype != t || ts_tensor_numel(b) != 1)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input '%s' must be one %s, not %lld of %s",
                            names[i], ts_dtype_name(t),
                            (long long)ts_tensor_numel(b),
                            ts_dtype_name(b->dtype));
    if (!b->data) return TS_EAGAIN;
    size_t size = ts_dtype_size(t);
    memcpy(p->bytes + (size_t)i * size, b->data, size);
  }
  return TS_OK;
}

typedef struct unary_desc {
  ew_fn fn[TS_N_SLOTS];
  int (*params)(const ts_node *n, const ts_tensor *const *in, param_buf *p,
                ts_err *err);
} unary_desc;

#define UN_TABLE_F(op) [TS_SLOT_f32] = u##op##_f32, [TS_SLOT_f64] = u##op##_f64
#define UN_TABLE_FI(op) \
  UN_TABLE_F(op), [TS_SLOT_i32] = u##op##_i32, [TS_SLOT_i64] = u##op##_i64
#define UN_TABLE_B(op) [TS_SLOT_b] = u##op##_b

static int unary_pick(const unary_desc *d, const ts_node *n,
                      const ts_tensor *x, ew_fn *fn, ts_err *err) {
  int s = ts_kernel_slot(x->dtype);
  *fn = s >= 0 ? d->fn[s] : NULL;
  if (!*fn)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(x->dtype));
  return TS_OK;
}

static int unary_infer(const unary_desc *d, const ts_node *n,
                       const ts_tensor *const *in, ts_tensor *out,
                       ts_err *err) {
  ew_fn fn;
  param_buf params;
  int rc = unary_pick(d, n, in[0], &fn, err);
  if (!rc && d->params) { /* validates; values may still be unknown */
    rc = d->params(n, in, &params, err);
    if (rc == TS_EAGAIN) rc = TS_OK;
  }
  if (rc) return rc;
  return ts_tensor_set_shape(out, in[0]->dtype, in[0]->dims, in[0]->rank,
                             err);
}

/* Applies a same-shape kernel over all of in[0] (unary ops and Cast). */
static int unary_apply(const ts_tensor *x, ts_tensor *out, ew_fn fn,
                       const void *params) {
  static const int64_t step[1] = {1};
  const void *p[1] = {x->data};
  int64_t numel = ts_tensor_numel(x);
  if (numel > 0) fn(numel, p, step, out->data, params);
  return TS_OK;
}

static int unary_run(const unary_desc *d, const ts_node *n,
                     const ts_tensor *const *in, ts_tensor *out,
                     ts_err *err) {
  ew_fn fn;
  param_buf params = {{0}};
  int rc = unary_pick(d, n, in[0], &fn, err);
  if (!rc && d->params) rc = d->params(n, in, &params, err);
  if (rc) return rc;
  return unary_apply(in[0], out, fn, &params);
}

#define X(op, expr, fam, prep, par, nin)                                     \
  static const unary_desc unary_##op = {{UN_TABLE_##fam(op)}, par};          \
  static int infer_##op(const ts_node *n, const ts_tensor *const *in,        \
                        ts_tensor *out, ts_err *err) {                       \
    return unary_infer(&unary_##op, n, in, out, err);                        \
  }                                                                          \
  static int run_##op(const ts_node *n, const ts_tensor *const *in,          \
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {           \
    (void)ctx;                                                               \
    return unary_run(&unary_##op, n, in, out, err);                          \
  }                                                                          \
  const ts_op ts_op_##op = {"", #op, 1, nin, 1, 1, prep, NULL, infer_##op,   \
                            run_##op};
UNARY_LIST(X)
#undef X

/* ---- Cast --------------------------------------------------------------- */

static inline int64_t float_to_i64(double x) {
  if (x != x) return 0;
  if (x >= 9223372036854775807.0) return INT64_MAX;
  if (x <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)x; /* truncates toward zero */
}
static inline int64_t int_to_i64(int64_t x) { return x; }
#define TO_INT(x)                                                      \
  _Generic((x), float : float_to_i64, double : float_to_i64,           \
           default : int_to_i64)(x)
/* Reading a source element: bools are normalised to 0/1. */
#define READ_f32(x) (x)
#define READ_f64(x) (x)
#define READ_i32(x) (x)
#define READ_i64(x) (x)
#define READ_b(x) ((x) != 0)
#define READ_u8(x) (x)
#define READ_i8(x) (x)
/* Converting to a destination type. */
#define CONV_f32(x) (float)(x)
#define CONV_f64(x) (double)(x)
#define CONV_i32(x) (int32_t)TO_INT(x)
#define CONV_i64(x) TO_INT(x)
#define CONV_b(x) (uint8_t)((x) != 0)
#define CONV_u8(x) (uint8_t)TO_INT(x)
#define CONV_i8(x) (int8_t)TO_INT(x)

/* TS_KERNEL_SLOTS again, with two leading arguments, so that a row of the
 * source x destination cross product can be expanded inside
 * TS_KERNEL_SLOTS (the preprocessor does not expand a macro inside its own
 * expansion). */
#define SLOT_LIST2(X, p1, p2)                                          \
  X(p1, p2, f32, float) X(p1, p2, f64, double) X(p1, p2, i32, int32_t)  \
  X(p1, p2, i64, int64_t) X(p1, p2, b, uint8_t) X(p1, p2, u8, uint8_t)  \
  X(p1, p2, i8, int8_t)

#define CAST_FN(S, ST, D, DT)                                               \
  static void cast_##S##_##D(int64_t n, const void *const *in,              \
                             const int64_t *step, void *out,                \
                             const void *p) {                               \
    const ST *A = in[0];                                                    \
    DT *O = out;                                                            \
    (void)step;                                                             \
    (void)p;                                                                \
    for (int64_t i = 0; i < n; i++) O[i] = CONV_##D(READ_##S(A[i]));        \
  }
#define CAST_ROW(S, ST, D) SLOT_LIST2(CAST_FN, S, ST)
TS_KERNEL_SLOTS(CAST_ROW)
#undef CAST_ROW

#define CAST_CELL(S, ST, D, DT) [TS_SLOT_##D] = cast_##S##_##D,
#define CAST_ROW(S, ST, D) [TS_SLOT_##S] = {SLOT_LIST2(CAST_CELL, S, ST)},
static const ew_fn cast_fn[TS_N_SLOTS][TS_N_SLOTS] = {
    TS_KERNEL_SLOTS(CAST_ROW)};
#undef CAST_ROW
#undef CAST_CELL

/* float16 and bfloat16 have no kernel slot: they are only widened to
 * float, the Cast in front of a precision=fp16|bf16 shard's products
 * (quant.c) where nothing fuses it. */
static void cast_f16_f32(int64_t n, const void *const *in, const int64_t *step,
                         void *out, const void *p) {
  const uint16_t *A = in[0];
  float *O = out;
  (void)step, (void)p;
  for (int64_t i = 0; i < n; i++) O[i] = ts_half_to_float(A[i]);
}

static void cast_bf16_f32(int64_t n, const void *const *in,
                          const int64_t *step, void *out, const void *p) {
  const uint16_t *A = in[0];
  float *O = out;
  (void)step, (void)p;
  for (int64_t i = 0; i < n; i++) O[i] = ts_bf16_to_float(A[i]);
}

/* ("saturate" arrives with float8 in opset 19, past what the loader takes.) */
static const ts_attr_spec cast_attrs[] = {{"to", ATTR_INT}, {NULL}};

static int prepare_cast(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_kernel_check_attrs(n, cast_attrs, err);
  if (rc) return rc;
  if (!ts_attr_find(n, "to"))
    return ts_kernel_fail(n, err, TS_EINVAL, "attribute 'to' is missing");
  int64_t to = ts_attr_int(n, "to", 0);
  if (to < INT_MIN || to > INT_MAX || ts_kernel_slot((ts_dtype)to) < 0)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "attribute 'to' = %lld (%s) is not supported",
                          (long long)to, ts_dtype_name((ts_dtype)to));
  return TS_OK;
}

static int cast_pick(const ts_node *n, const ts_tensor *x, ts_dtype *to,
                     ew_fn *fn, ts_err *err) {
  *to = (ts_dtype)ts_attr_int(n, "to", 0);
  int s = ts_kernel_slot(x->dtype), d = ts_kernel_slot(*to);
  *fn = s >= 0 && d >= 0 ? cast_fn[s][d] : NULL;
  if (*to == TS_DTYPE_FLOAT && x->dtype == TS_DTYPE_FLOAT16) *fn = cast_f16_f32;
  if (*to == TS_DTYPE_FLOAT && x->dtype == TS_DTYPE_BFLOAT16)
    *fn = cast_bf16_f32;
  if (!*fn)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "cast from %s to %s is not supported",
                          ts_dtype_name(x->dtype), ts_dtype_name(*to));
  return TS_OK;
}

static int infer_cast(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  ts_dtype to;
  ew_fn fn;
  int rc = cast_pick(n, in[0], &to, &fn, err);
  if (rc) return rc;
  return ts_tensor_set_shape(out, to, in[0]->dims, in[0]->rank, err);
}

static int run_cast(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  ts_dtype to;
  ew_fn fn;
  (void)ctx;
  int rc = cast_pick(n, in[0], &to, &fn, err);
  if (rc) return rc;
  return unary_apply(in[0], out, fn, NULL);
}

const ts_op ts_op_Cast = {"", "Cast", 1, 1, 1, 1, prepare_cast, NULL,
                          infer_cast, run_cast};

/* ---- Where -------------------------------------------------------------- */

static int where_pick(const ts_node *n, const ts_tensor *const *in, ew_fn *fn,
                      ts_err *err) {
  if (in[0]->dtype != TS_DTYPE_BOOL)
    return ts_kernel_fail(n, err, TS_EINVAL, "condition must be bool, not %s",
                          ts_dtype_name(in[0]->dtype));
  if (in[1]->dtype != in[2]->dtype)
    return ts_kernel_fail(n, err, TS_EINVAL, "input types %s and %s differ",
                          ts_dtype_name(in[1]->dtype),
                          ts_dtype_name(in[2]->dtype));
  *fn = sized_kernel(in[1]->dtype, true);
  if (!*fn)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(in[1]->dtype));
  return TS_OK;
}

static int infer_where(const ts_node *n, const ts_tensor *const *in,
                       ts_tensor *out, ts_err *err) {
  ew_fn fn;
  int64_t dims[TS_MAX_RANK];
  int rank;
  int rc = where_pick(n, in, &fn, err);
  if (!rc) rc = broadcast_shape_n(n, 3, in, dims, &rank, err);
  if (rc) return rc;
  return ts_tensor_set_shape(out, in[1]->dtype, dims, rank, err);
}

static int run_where(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  ew_fn fn;
  (void)ctx;
  int rc = where_pick(n, in, &fn, err);
  if (rc) return rc;
  return broadcast_apply(n, 3, in, out, fn, NULL, err);
}

const ts_op ts_op_Where = {"", "Where", 3, 3, 1, 1, prepare_plain, NULL,
                           infer_where, run_where};

/* ---- Expand ------------------------------------------------------------- */

/* Expand's output shape: the input broadcast with the 'shape' input, where
 * either side may be 1 (bidirectional, like numpy). */
static int infer_expand(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_err *err) {
  ts_tensor target = {.dtype = in[0]->dtype};
  size_t count;
  int rc = ts_kernel_ints(n, in[1], "shape", target.dims, TS_MAX_RANK, &count,
                          err);
  if (rc) return rc;
  target.rank = (int)count;
  for (size_t k = 0; k < count; k++)
    if (target.dims[k] < 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "shape dim %zu is %lld", k,
                            (long long)target.dims[k]);
  if (!sized_kernel(in[0]->dtype, false))
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(in[0]->dtype));
  const ts_tensor *pair[2] = {in[0], &target};
  int64_t dims[TS_MAX_RANK];
  int rank;
  rc = broadcast_shape_n(n, 2, pair, dims, &rank, err);
  if (rc) return rc;
  return ts_tensor_set_shape(out, in[0]->dtype, dims, rank, err);
}

static int run_expand(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx;
  ew_fn fn = sized_kernel(in[0]->dtype, false);
  if (!fn)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "input type %s is not supported",
                          ts_dtype_name(in[0]->dtype));
  return broadcast_apply(n, 1, in, out, fn, NULL, err);
}

const ts_op ts_op_Expand = {"", "Expand", 2, 2, 1, 1, prepare_plain, NULL,
                            infer_expand, run_expand};

/* Every op of list_elementwise.h is defined above (and nothing else). */
#define COUNT(d, op, sym) +1
#define COUNT3(a, b, c) +1
#define COUNT6(a, b, c, d, e, f) +1
_Static_assert(0 TS_OPS_ELEMENTWISE(COUNT) ==
                   0 BINARY_LIST(COUNT3) VARIADIC_LIST(COUNT3) +
                       UNARY_LIST(COUNT6) + 5 /* Pow Sum Cast Where Expand */,
               "list_elementwise.h and elementwise.c disagree");
