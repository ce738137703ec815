/*
 * test_kernels_elementwise.c - the element-wise kernels (kernels/
 * elementwise.c), each run as a one-node model through ts_model_load and
 * ts_exec_run, against a naive float64 reference written here: plain loops
 * over output indices, operands located with numpy broadcasting rules
 * (kc_bcast_offset), and the expected output shape derived independently.
 *
 * Shapes are random: ranks 0-4, odd sizes, size-1 dims, lower-rank
 * operands, every operand broadcast against the others, empty tensors.
 * Inputs are fed both as graph inputs (run time) and as initializers (the
 * loader folds the node at load time), so both paths are checked.
 */
#include <check.h>
#include <math.h>

#include "check_main.h"
#include "kernel_check.h"

/* ---- shared helpers ----------------------------------------------------- */

/* Random shapes for n operands that broadcast together: an output shape of
 * rank 0-4 (dims 1-5, or 0 when `empty`), each operand a suffix of it with
 * some dims set to 1. */
static void rand_bcast(kc_rng *r, int n, int *ranks, int64_t (*dims)[8],
                       bool empty) {
  int64_t full[8];
  int rank = (int)kc_randint(r, 0, 4);
  kc_rand_dims(r, rank, 1, 5, full);
  if (empty && rank > 0) full[kc_randint(r, 0, rank - 1)] = 0;
  for (int j = 0; j < n; j++) {
    ranks[j] = rank - (int)kc_randint(r, 0, rank > 1 ? 1 : rank);
    for (int k = 0; k < ranks[j]; k++) {
      int64_t d = full[rank - ranks[j] + k];
      dims[j][k] = kc_randint(r, 0, 2) == 0 ? 1 : d;
    }
  }
}

/* numpy's result shape: the highest rank; per dim the one that is not 1. */
static int ref_bcast_shape(int n, const ts_tensor *const *in, int64_t *dims) {
  int rank = 0;
  for (int j = 0; j < n; j++)
    if (in[j]->rank > rank) rank = in[j]->rank;
  for (int k = 0; k < rank; k++) {
    dims[k] = 1;
    for (int j = 0; j < n; j++) {
      int kj = k - (rank - in[j]->rank);
      if (kj >= 0 && in[j]->dims[kj] != 1) dims[k] = in[j]->dims[kj];
    }
  }
  return rank;
}

/* Element of in (shape broadcast to out_dims) at output flat index i. */
static double at(const ts_tensor *in, int64_t i, const int64_t *out_dims,
                 int out_rank) {
  int64_t idx[8];
  kc_unravel(i, out_dims, out_rank, idx);
  return kc_get(in, kc_bcast_offset(idx, out_rank, in->dims, in->rank));
}

static double tol_for(ts_dtype t) {
  return t == TS_DTYPE_FLOAT ? 2e-6 : t == TS_DTYPE_DOUBLE ? 1e-12 : 0;
}


/* ---- binary arithmetic and comparisons ---------------------------------- */

typedef double (*ref2)(double a, double b);
static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_eq(double a, double b) { return a == b; }
static double r_lt(double a, double b) { return a < b; }
static double r_gt(double a, double b) { return a > b; }
static double r_le(double a, double b) { return a <= b; }
static double r_ge(double a, double b) { return a >= b; }
static double r_and(double a, double b) { return a && b; }
static double r_or(double a, double b) { return a || b; }
static double r_xor(double a, double b) { return (a != 0) != (b != 0); }
static double r_pow(double a, double b) { return pow(a, b); }
static double r_max(double a, double b) { return a > b ? a : b; }
static double r_min(double a, double b) { return a < b ? a : b; }

static const struct binary_case {
  const char *op;
  ref2 f;
  bool bool_out;
} binary_cases[] = {
    {"Add", r_add, false},  {"Sub", r_sub, false},
    {"Mul", r_mul, false},  {"Div", r_div, false},
    {"Equal", r_eq, true},  {"Less", r_lt, true},
    {"Greater", r_gt, true}, {"LessOrEqual", r_le, true},
    {"GreaterOrEqual", r_ge, true},
};

static const ts_dtype num_types[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE,
                                     TS_DTYPE_INT32, TS_DTYPE_INT64};

/* Random operands for a binary op: integers small and non-zero so that
 * products stay exact and Div never divides by zero; comparisons draw from
 * a few values so ties occur. */
static void rand_operands(kc_rng *r, ts_dtype t, bool ties, ts_tensor *a,
                          ts_tensor *b) {
  int ranks[2];
  int64_t dims[2][8];
  rand_bcast(r, 2, ranks, dims, kc_randint(r, 0, 5) == 0);
  ts_tensor *ops[2] = {a, b};
  for (int j = 0; j < 2; j++) {
    kc_tensor_rand(ops[j], t, ranks[j], dims[j], r, ties ? -2 : -9,
                   ties ? 2 : 9);
    int64_t n = ts_tensor_numel(ops[j]);
    for (int64_t i = 0; i < n && !ties; i++)
      if (kc_get(ops[j], i) == 0 || fabs(kc_get(ops[j], i)) < 0.05)
        kc_set(ops[j], i, 1.5);
  }
}

/* Runs op on a and b (as inputs or constants per const_mask) and checks
 * shape and values against f. */
static void check_binary(const char *op, ref2 f, bool bool_out,
                         const ts_tensor *a, const ts_tensor *b,
                         unsigned const_mask) {
  const ts_tensor *in[2] = {a, b};
  ts_tensor y;
  ts_err err;
  int rc = kc_run_op(op, "", 13, in, 2, const_mask, &y, 1, &err);
  ck_assert_msg(rc == 0, "%s: %s", op, err.msg);
  int64_t dims[8];
  int rank = ref_bcast_shape(2, in, dims);
  int64_t n = ts_shape_numel(dims, rank);
  double *ref = malloc((size_t)(n + 1) * sizeof *ref);
  for (int64_t i = 0; i < n; i++) {
    double va = at(a, i, dims, rank), vb = at(b, i, dims, rank);
    double v = f(va, vb);
    bool integral = a->dtype == TS_DTYPE_INT32 || a->dtype == TS_DTYPE_INT64;
    if (f == r_div && integral) v = trunc(v); /* ONNX: C-like division */
    ref[i] = v;
  }
  ck_assert_int_eq(y.dtype, bool_out ? TS_DTYPE_BOOL : a->dtype);
  char what[96];
  snprintf(what, sizeof what, "%s %s mask %u", op, ts_dtype_name(a->dtype),
           const_mask);
  kc_assert_close(&y, ref, dims, rank, tol_for(a->dtype), 0, what);
  free(ref);
  ts_tensor_free(&y);
}

START_TEST(test_binary_random) {
  kc_rng r = kc_rng_seed(1);
  for (size_t c = 0; c < sizeof binary_cases / sizeof binary_cases[0]; c++)
    for (size_t t = 0; t < 4; t++)
      for (int trial = 0; trial < 12; trial++) {
        ts_tensor a, b;
        rand_operands(&r, num_types[t], binary_cases[c].bool_out, &a, &b);
        check_binary(binary_cases[c].op, binary_cases[c].f,
                     binary_cases[c].bool_out, &a, &b,
                     (unsigned)kc_randint(&r, 0, 3));
        ts_tensor_free(&a);
        ts_tensor_free(&b);
      }
}
END_TEST

/* Every broadcasting pattern of two rank-3 operands: each dim of each
 * operand either full or 1, plus each operand dropped to lower ranks. */
START_TEST(test_binary_every_pattern) {
  kc_rng r = kc_rng_seed(2);
  const int64_t full[3] = {3, 5, 7};
  for (int ma = 0; ma < 8; ma++)
    for (int mb = 0; mb < 8; mb++)
      for (int drop = 0; drop < 4; drop++) {
        int64_t da[3], db[3];
        for (int k = 0; k < 3; k++) {
          da[k] = ma >> k & 1 ? full[k] : 1;
          db[k] = mb >> k & 1 ? full[k] : 1;
        }
        int ra = 3 - (drop & 1), rb = 3 - 2 * (drop >> 1);
        ts_tensor a, b;
        kc_tensor_rand(&a, TS_DTYPE_FLOAT, ra, da + (3 - ra), &r, -2, 2);
        kc_tensor_rand(&b, TS_DTYPE_FLOAT, rb, db + (3 - rb), &r, -2, 2);
        check_binary("Sub", r_sub, false, &a, &b, 0);
        ts_tensor_free(&a);
        ts_tensor_free(&b);
      }
}
END_TEST

START_TEST(test_integer_division) {
  /* Truncation toward zero, like C and onnxruntime (not numpy's floor). */
  const double av[] = {7, -7, 7, -7, 0, 9};
  const double bv[] = {2, 2, -2, -2, 3, 1};
  for (int t = 2; t < 4; t++) {
    ts_tensor a, b, y;
    ts_err err;
    kc_tensor_from(&a, num_types[t], 1, (int64_t[]){6}, av);
    kc_tensor_from(&b, num_types[t], 1, (int64_t[]){6}, bv);
    const ts_tensor *in[2] = {&a, &b};
    ck_assert_int_eq(kc_run_op("Div", "", 13, in, 2, 0, &y, 1, &err), 0);
    const double want[] = {3, -3, -3, 3, 0, 9};
    kc_assert_close(&y, want, (int64_t[]){6}, 1, 0, 0, "int Div");
    kc_tensors_free((ts_tensor[]){a, b, y}, 3);
  }
}
END_TEST

START_TEST(test_integer_division_by_zero_does_not_trap) {
  ts_tensor a, b, y;
  ts_err err;
  kc_tensor_from(&a, TS_DTYPE_INT32, 1, (int64_t[]){2},
                 (double[]){5, -2147483648.0});
  kc_tensor_from(&b, TS_DTYPE_INT32, 1, (int64_t[]){2}, (double[]){0, -1});
  const ts_tensor *in[2] = {&a, &b};
  ck_assert_int_eq(kc_run_op("Div", "", 13, in, 2, 0, &y, 1, &err), 0);
  ck_assert_int_eq(((int32_t *)y.data)[0], 0);
  ck_assert_int_eq(((int32_t *)y.data)[1], INT32_MIN); /* wraps */
  kc_tensors_free((ts_tensor[]){a, b, y}, 3);
}
END_TEST

START_TEST(test_logic) {
  static const struct {
    const char *op;
    ref2 f;
  } cases[] = {{"And", r_and}, {"Or", r_or}, {"Xor", r_xor},
               {"Equal", r_eq}};
  kc_rng r = kc_rng_seed(3);
  for (int c = 0; c < 4; c++)
    for (int trial = 0; trial < 10; trial++) {
      int ranks[2];
      int64_t dims[2][8];
      ts_tensor a, b;
      rand_bcast(&r, 2, ranks, dims, trial == 0);
      kc_tensor_rand(&a, TS_DTYPE_BOOL, ranks[0], dims[0], &r, 0, 2);
      kc_tensor_rand(&b, TS_DTYPE_BOOL, ranks[1], dims[1], &r, 0, 2);
      check_binary(cases[c].op, cases[c].f, true, &a, &b, trial & 3);
      kc_tensors_free((ts_tensor[]){a, b}, 2);
    }
}
END_TEST

START_TEST(test_pow) {
  kc_rng r = kc_rng_seed(4);
  const ts_dtype exps[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE, TS_DTYPE_INT32,
                           TS_DTYPE_INT64};
  for (int base = 0; base < 2; base++)
    for (int e = 0; e < 4; e++)
      for (int trial = 0; trial < 6; trial++) {
        int ranks[2];
        int64_t dims[2][8];
        ts_tensor a, b;
        rand_bcast(&r, 2, ranks, dims, false);
        kc_tensor_rand(&a, num_types[base], ranks[0], dims[0], &r, 0.1, 3);
        kc_tensor_rand(&b, exps[e], ranks[1], dims[1], &r, -3, 3);
        check_binary("Pow", r_pow, false, &a, &b, trial & 3);
        kc_tensors_free((ts_tensor[]){a, b}, 2);
      }
}
END_TEST

/* A single-valued exponent of 1, 2, 3 or 0.5 takes multiplication / sqrt
 * kernels instead of pow: they must agree with pow in float64 on every base
 * (negative, -0, +-inf, NaN, overflowing), for float and double bases and
 * every exponent type, with the exponent a scalar, a [1] vector or of a
 * higher rank than the base (the output takes its rank), given as an input
 * or a constant. Exponents 2.5 and -2 go through pow, as before. */
START_TEST(test_pow_fixed_exponent) {
  const double bases[] = {-3.5,     -1.0,      -0.0,  0.0, 0.75, 1.5,
                          1e20,     -1e20,     1e200, 7.0, 2.0,  0.1,
                          INFINITY, -INFINITY, NAN,   -2.0};
  const double exponents[] = {1.0, 2.0, 3.0, 0.5, 2.5, -2.0};
  const ts_dtype exps[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE, TS_DTYPE_INT32,
                           TS_DTYPE_INT64};
  const int64_t base_dims[2] = {2, 8}, one[3] = {1, 1, 1};
  for (int base = 0; base < 2; base++)
    for (size_t e = 0; e < sizeof exponents / sizeof exponents[0]; e++)
      for (int t = 0; t < 4; t++)
        for (int form = 0; form < 3; form++) {
          const double ev = exponents[e];
          if (ev != floor(ev) && t >= 2) continue; /* integer exponent */
          ts_tensor a, b, y;
          ts_err err;
          kc_tensor_from(&a, num_types[base], 2, base_dims, bases);
          /* rank 0, 1, or 3 (broadcasting raises the output's rank) */
          kc_tensor_from(&b, exps[t], form == 2 ? 3 : form, one, &ev);
          const ts_tensor *in[2] = {&a, &b};
          const unsigned mask = (unsigned)(e + (size_t)form) & 2;
          char what[96];
          snprintf(what, sizeof what, "Pow %s ^ %g (%s, rank %d, mask %u)",
                   ts_dtype_name(a.dtype), ev, ts_dtype_name(b.dtype), b.rank,
                   mask);
          ck_assert_msg(kc_run_op("Pow", "", 13, in, 2, mask, &y, 1, &err) == 0,
                        "%s: %s", what, err.msg);
          double want[16];
          for (int i = 0; i < 16; i++) {
            /* pow in float64 of the base as stored (1e200 is inf in
             * float), rounded to the output's type (1e20^2 overflows). */
            const double x = kc_get(&a, i), p = pow(x, ev);
            want[i] = base == 0 ? (double)(float)p : p;
          }
          const int64_t out_dims[3] = {1, 2, 8};
          const int out_rank = b.rank > 2 ? b.rank : 2;
          kc_assert_close(&y, want, out_dims + (3 - out_rank), out_rank,
                          tol_for(a.dtype), 0, what);
          for (int i = 0; i < 16; i++) /* pow(-0, 0.5) is +0, not -0 */
            if (want[i] == 0.0)
              ck_assert_msg(signbit(kc_get(&y, i)) == signbit(want[i]),
                            "%s: element %d has the wrong sign of zero", what,
                            i);
          kc_tensors_free((ts_tensor[]){a, b, y}, 3);
        }
}
END_TEST

/* ---- variadic Max, Min, Sum and Where ------------------------------------ */

START_TEST(test_variadic) {
  static const struct {
    const char *op;
    ref2 f;
  } cases[] = {{"Max", r_max}, {"Min", r_min}, {"Sum", r_add}};
  kc_rng r = kc_rng_seed(5);
  for (int c = 0; c < 3; c++)
    for (int t = 0; t < 4; t++)
      for (int n = 1; n <= 4; n++) {
        int ranks[4];
        int64_t dims[4][8];
        ts_tensor x[4], y;
        const ts_tensor *in[4];
        ts_err err;
        rand_bcast(&r, n, ranks, dims, n == 3 && t == 0);
        for (int j = 0; j < n; j++) {
          kc_tensor_rand(&x[j], num_types[t], ranks[j], dims[j], &r, -9, 9);
          in[j] = &x[j];
        }
        int rc = kc_run_op(cases[c].op, "", 13, in, n, 0, &y, 1, &err);
        ck_assert_msg(rc == 0, "%s: %s", cases[c].op, err.msg);
        int64_t od[8];
        int orank = ref_bcast_shape(n, in, od);
        int64_t numel = ts_shape_numel(od, orank);
        double *ref = malloc((size_t)(numel + 1) * sizeof *ref);
        for (int64_t i = 0; i < numel; i++) {
          ref[i] = at(in[0], i, od, orank);
          for (int j = 1; j < n; j++)
            ref[i] = cases[c].f(ref[i], at(in[j], i, od, orank));
        }
        kc_assert_close(&y, ref, od, orank, tol_for(num_types[t]), 0,
                        cases[c].op);
        free(ref);
        kc_tensors_free(x, n);
        ts_tensor_free(&y);
      }
}
END_TEST

START_TEST(test_where) {
  kc_rng r = kc_rng_seed(6);
  const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_INT64, TS_DTYPE_BOOL,
                            TS_DTYPE_DOUBLE};
  for (int t = 0; t < 4; t++)
    for (int trial = 0; trial < 15; trial++) {
      int ranks[3];
      int64_t dims[3][8];
      ts_tensor c, a, b, y;
      ts_err err;
      rand_bcast(&r, 3, ranks, dims, trial == 0);
      kc_tensor_rand(&c, TS_DTYPE_BOOL, ranks[0], dims[0], &r, 0, 2);
      kc_tensor_rand(&a, types[t], ranks[1], dims[1], &r, -9, 9);
      kc_tensor_rand(&b, types[t], ranks[2], dims[2], &r, -9, 9);
      const ts_tensor *in[3] = {&c, &a, &b};
      int rc = kc_run_op("Where", "", 16, in, 3, trial & 7, &y, 1, &err);
      ck_assert_msg(rc == 0, "Where: %s", err.msg);
      int64_t od[8];
      int orank = ref_bcast_shape(3, in, od);
      int64_t numel = ts_shape_numel(od, orank);
      double *ref = malloc((size_t)(numel + 1) * sizeof *ref);
      for (int64_t i = 0; i < numel; i++)
        ref[i] = at(&c, i, od, orank) ? at(&a, i, od, orank)
                                      : at(&b, i, od, orank);
      ck_assert_int_eq(y.dtype, types[t]);
      kc_assert_close(&y, ref, od, orank, 0, 0, "Where");
      free(ref);
      kc_tensors_free((ts_tensor[]){c, a, b, y}, 4);
    }
}
END_TEST

/* ---- unary --------------------------------------------------------------- */

typedef double (*ref1)(double x);
static double r_relu(double x) { return x > 0 ? x : 0; }
static double r_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double r_neg(double x) { return -x; }
static double r_recip(double x) { return 1 / x; }

static const struct unary_case {
  const char *op;
  ref1 f;
  double lo, hi; /* input range */
  bool ints;     /* also int32 / int64 */
} unary_cases[] = {
    {"Relu", r_relu, -5, 5, true},     {"Sigmoid", r_sigmoid, -20, 20, false},
    {"Tanh", tanh, -5, 5, false},       {"Sqrt", sqrt, 0, 50, false},
    {"Exp", exp, -10, 10, false},       {"Log", log, 0.01, 100, false},
    {"Erf", erf, -3, 3, false},         {"Neg", r_neg, -5, 5, true},
    {"Reciprocal", r_recip, 0.1, 9, false}, {"Abs", fabs, -5, 5, true},
    {"Floor", floor, -5, 5, false},     {"Ceil", ceil, -5, 5, false},
};

START_TEST(test_unary) {
  kc_rng r = kc_rng_seed(7);
  for (size_t c = 0; c < sizeof unary_cases / sizeof unary_cases[0]; c++)
    for (int t = 0; t < 4; t++) {
      if (t >= 2 && !unary_cases[c].ints) continue;
      for (int trial = 0; trial < 4; trial++) {
        int64_t dims[8];
        int rank = (int)kc_randint(&r, 0, 4);
        kc_rand_dims(&r, rank, 1, 6, dims);
        if (trial == 3 && rank) dims[0] = 0;
        ts_tensor x, y;
        ts_err err;
        kc_tensor_rand(&x, num_types[t], rank, dims, &r, unary_cases[c].lo,
                       unary_cases[c].hi);
        const ts_tensor *in[1] = {&x};
        int rc = kc_run_op(unary_cases[c].op, "", 13, in, 1, trial & 1, &y,
                           1, &err);
        ck_assert_msg(rc == 0, "%s: %s", unary_cases[c].op, err.msg);
        int64_t n = ts_tensor_numel(&x);
        double *ref = malloc((size_t)(n + 1) * sizeof *ref);
        for (int64_t i = 0; i < n; i++)
          ref[i] = unary_cases[c].f(kc_get(&x, i));
        ck_assert_int_eq(y.dtype, x.dtype);
        kc_assert_close(&y, ref, dims, rank, tol_for(x.dtype), 1e-30,
                        unary_cases[c].op);
        free(ref);
        kc_tensors_free((ts_tensor[]){x, y}, 2);
      }
    }
}
END_TEST

/* Float Erf and Tanh do not call libm (they are polynomial and rational
 * fits): checked densely over the float range that matters, tiny values,
 * infinities and NaN included, against libm in double. */
START_TEST(test_erf_tanh_float_dense) {
  static const struct {
    const char *op;
    ref1 f;
    double rtol;
  } cases[] = {{"Erf", erf, 3e-7}, {"Tanh", tanh, 1.5e-7}};
  enum { N = 60001, M = 400 };
  double *v = malloc((N + 2 * M + 4) * sizeof *v);
  int n = 0;
  for (int i = 0; i < N; i++) v[n++] = -12 + 24.0 * i / (N - 1);
  for (int i = 0; i < M; i++) { /* 1e-37 .. 10, both signs */
    double x = pow(10, -37 + 38.0 * i / (M - 1));
    v[n++] = x;
    v[n++] = -x;
  }
  v[n++] = INFINITY;
  v[n++] = -INFINITY;
  v[n++] = NAN;
  v[n++] = 0;
  ts_tensor x, y;
  ts_err err;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 1, (int64_t[]){n}, v);
  const ts_tensor *in[1] = {&x};
  double *ref = malloc((size_t)n * sizeof *ref);
  for (int c = 0; c < 2; c++) {
    ck_assert_int_eq(kc_run_op(cases[c].op, "", 13, in, 1, 0, &y, 1, &err),
                     0);
    for (int i = 0; i < n; i++) ref[i] = cases[c].f(kc_get(&x, i));
    kc_assert_close(&y, ref, (int64_t[]){n}, 1, cases[c].rtol, 1e-44,
                    cases[c].op);
    ts_tensor_free(&y);
  }
  free(ref);
  free(v);
  ts_tensor_free(&x);
}
END_TEST

START_TEST(test_not) {
  ts_tensor x, y;
  ts_err err;
  kc_tensor_from(&x, TS_DTYPE_BOOL, 2, (int64_t[]){2, 2},
                 (double[]){1, 0, 0, 1});
  const ts_tensor *in[1] = {&x};
  ck_assert_int_eq(kc_run_op("Not", "", 13, in, 1, 0, &y, 1, &err), 0);
  kc_assert_close(&y, (double[]){0, 1, 1, 0}, (int64_t[]){2, 2}, 2, 0, 0,
                  "Not");
  kc_tensors_free((ts_tensor[]){x, y}, 2);
}
END_TEST

START_TEST(test_leaky_relu) {
  kc_rng r = kc_rng_seed(8);
  for (int t = 0; t < 2; t++) {
    ts_tensor x, y;
    ts_err err;
    kc_tensor_rand(&x, num_types[t], 3, (int64_t[]){2, 3, 5}, &r, -4, 4);
    const ts_tensor *in[1] = {&x};
    Onnx__NodeProto *node;
    Onnx__ModelProto *m = kc_op_model("LeakyRelu", "", 16, in, 1, 0, 1, &node);
    kc_attr_float(node, "alpha", 0.25f);
    ck_assert_int_eq(kc_model_run(m, in, 1, 0, &y, 1, &err), 0);
    double ref[30];
    for (int i = 0; i < 30; i++) {
      double v = kc_get(&x, i);
      ref[i] = v < 0 ? 0.25 * v : v;
    }
    kc_assert_close(&y, ref, x.dims, 3, tol_for(x.dtype), 0, "LeakyRelu");
    kc_model_free(m);
    kc_tensors_free((ts_tensor[]){x, y}, 2);
  }
}
END_TEST

/* Clip from opset 11 takes min and max as optional scalar inputs. */
START_TEST(test_clip_inputs) {
  kc_rng r = kc_rng_seed(9);
  for (int t = 0; t < 4; t++)
    for (int form = 0; form < 4; form++) { /* bit 0: min, bit 1: max */
      ts_tensor x, lo, hi, y;
      ts_err err;
      kc_tensor_rand(&x, num_types[t], 2, (int64_t[]){4, 7}, &r, -9, 9);
      kc_tensor_from(&lo, num_types[t], 0, NULL, (double[]){-3});
      kc_tensor_from(&hi, num_types[t], 0, NULL, (double[]){4});
      const ts_tensor *in[3] = {&x, form & 1 ? &lo : NULL,
                                form & 2 ? &hi : NULL};
      int rc = kc_run_op("Clip", "", 13, in, 3, form == 3 ? 6 : 0, &y, 1,
                         &err);
      ck_assert_msg(rc == 0, "Clip: %s", err.msg);
      double ref[28];
      for (int i = 0; i < 28; i++) {
        double v = kc_get(&x, i);
        if (form & 1 && v < -3) v = -3;
        if (form & 2 && v > 4) v = 4;
        ref[i] = v;
      }
      kc_assert_close(&y, ref, x.dims, 2, 0, 0, "Clip");
      kc_tensors_free((ts_tensor[]){x, lo, hi, y}, 4);
    }
}
END_TEST

START_TEST(test_clip_attributes) {
  kc_rng r = kc_rng_seed(10);
  ts_tensor x, y;
  ts_err err;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 1, (int64_t[]){33}, &r, -2, 2);
  const ts_tensor *in[1] = {&x};
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = kc_op_model("Clip", "", 9, in, 1, 0, 1, &node);
  kc_attr_float(node, "min", -0.5f);
  kc_attr_float(node, "max", 0.75f);
  ck_assert_int_eq(kc_model_run(m, in, 1, 0, &y, 1, &err), 0);
  double ref[33];
  for (int i = 0; i < 33; i++)
    ref[i] = fmin(fmax(kc_get(&x, i), -0.5), 0.75);
  kc_assert_close(&y, ref, x.dims, 1, 0, 0, "Clip opset 9");
  kc_model_free(m);
  kc_tensors_free((ts_tensor[]){x, y}, 2);
}
END_TEST

/* ---- Cast ---------------------------------------------------------------- */

START_TEST(test_cast_all_pairs) {
  const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE, TS_DTYPE_INT32,
                            TS_DTYPE_INT64, TS_DTYPE_BOOL,   TS_DTYPE_UINT8,
                            TS_DTYPE_INT8};
  /* Values every source type can hold exactly (fractions only in floats),
   * inside every destination's range once truncated, except where noted. */
  const double vals[] = {0, 1, 2.75, -2.75, 100.5, -100.5, 7, -0.5};
  for (int s = 0; s < 7; s++)
    for (int d = 0; d < 7; d++) {
      bool src_float = s < 2;
      double src[8];
      int n = 0;
      for (int i = 0; i < 8; i++) {
        double v = src_float ? vals[i] : trunc(vals[i]);
        if (types[s] == TS_DTYPE_BOOL) v = v != 0;
        if ((types[s] == TS_DTYPE_UINT8 || types[d] == TS_DTYPE_UINT8) &&
            v < 0)
          continue; /* negative to uint8 is not tested here */
        src[n++] = v;
      }
      ts_tensor x, y;
      ts_err err;
      kc_tensor_from(&x, types[s], 1, (int64_t[]){n}, src);
      const ts_tensor *in[1] = {&x};
      Onnx__NodeProto *node;
      Onnx__ModelProto *m = kc_op_model("Cast", "", 13, in, 1, 0, 1, &node);
      kc_attr_int(node, "to", types[d]);
      int rc = kc_model_run(m, in, 1, 0, &y, 1, &err);
      ck_assert_msg(rc == 0, "Cast %s -> %s: %s", ts_dtype_name(types[s]),
                    ts_dtype_name(types[d]), err.msg);
      double ref[8];
      for (int i = 0; i < n; i++) {
        double v = src[i];
        if (types[d] == TS_DTYPE_BOOL)
          v = v != 0;
        else if (d >= 2)
          v = trunc(v);
        else if (types[d] == TS_DTYPE_FLOAT)
          v = (float)v;
        ref[i] = v;
      }
      ck_assert_int_eq(y.dtype, types[d]);
      char what[64];
      snprintf(what, sizeof what, "Cast %s -> %s", ts_dtype_name(types[s]),
               ts_dtype_name(types[d]));
      kc_assert_close(&y, ref, (int64_t[]){n}, 1, 0, 0, what);
      kc_model_free(m);
      kc_tensors_free((ts_tensor[]){x, y}, 2);
    }
}
END_TEST

START_TEST(test_cast_float_edge_values) {
  /* NaN -> 0 and out-of-range -> saturated int64: defined, no trap. */
  ts_tensor x, y;
  ts_err err;
  kc_tensor_from(&x, TS_DTYPE_DOUBLE, 1, (int64_t[]){4},
                 (double[]){NAN, 1e300, -1e300, -3.99});
  const ts_tensor *in[1] = {&x};
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = kc_op_model("Cast", "", 13, in, 1, 0, 1, &node);
  kc_attr_int(node, "to", TS_DTYPE_INT64);
  ck_assert_int_eq(kc_model_run(m, in, 1, 0, &y, 1, &err), 0);
  const int64_t *v = y.data;
  ck_assert(v[0] == 0 && v[1] == INT64_MAX && v[2] == INT64_MIN && v[3] == -3);
  kc_model_free(m);
  kc_tensors_free((ts_tensor[]){x, y}, 2);
}
END_TEST

/* ---- Expand -------------------------------------------------------------- */

START_TEST(test_expand) {
  /* (input shape, target shape, numpy's result shape) */
  static const struct {
    int rx, rs, ry;
    int64_t x[4], s[4], y[4];
  } cases[] = {
      {2, 3, 3, {3, 1}, {2, 1, 4}, {2, 3, 4}},
      {1, 1, 1, {1}, {5}, {5}},
      {2, 1, 2, {3, 4}, {1}, {3, 4}}, /* target smaller: input wins */
      {0, 2, 2, {0}, {2, 3}, {2, 3}},
      {3, 3, 3, {1, 3, 1}, {2, 1, 0}, {2, 3, 0}},
      {2, 2, 2, {4, 1}, {4, 1}, {4, 1}},
  };
  kc_rng r = kc_rng_seed(11);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (unsigned mask = 0; mask < 4; mask++) {
      ts_tensor x, s, y;
      ts_err err;
      double sv[4];
      for (int k = 0; k < cases[c].rs; k++) sv[k] = (double)cases[c].s[k];
      kc_tensor_rand(&x, TS_DTYPE_INT32, cases[c].rx, cases[c].x, &r, -50,
                     50);
      kc_tensor_from(&s, TS_DTYPE_INT64, 1, (int64_t[]){cases[c].rs}, sv);
      const ts_tensor *in[2] = {&x, &s};
      int rc = kc_run_op("Expand", "", 13, in, 2, mask, &y, 1, &err);
      ck_assert_msg(rc == 0, "Expand case %zu: %s", c, err.msg);
      int64_t n = ts_shape_numel(cases[c].y, cases[c].ry);
      double ref[64];
      for (int64_t i = 0; i < n; i++)
        ref[i] = at(&x, i, cases[c].y, cases[c].ry);
      kc_assert_close(&y, ref, cases[c].y, cases[c].ry, 0, 0, "Expand");
      kc_tensors_free((ts_tensor[]){x, s, y}, 3);
    }
}
END_TEST

/* ---- symbolic dims: shapes known only at run time ------------------------ */

START_TEST(test_symbolic_batch) {
  /* y = x * w + b with x [N, 3] (N symbolic), then run with two N. */
  Onnx__ModelProto *m = kc_model_new(13);
  ts_tensor w, b;
  kc_tensor_from(&w, TS_DTYPE_FLOAT, 1, (int64_t[]){3}, (double[]){1, 2, 3});
  kc_tensor_from(&b, TS_DTYPE_FLOAT, 0, NULL, (double[]){0.5});
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, 3});
  kc_model_init(m, "w", &w);
  kc_model_init(m, "b", &b);
  kc_model_output(m, "y", TS_DTYPE_UNDEFINED, -1, NULL);
  kc_model_node(m, "Mul", "", "mul", "x,w", "t");
  kc_model_node(m, "Add", "", "add", "t,b", "y");
  ts_model *model;
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(kc_model_load(m, &model, &err), 0);
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  kc_rng r = kc_rng_seed(12);
  for (int64_t n = 1; n <= 5; n += 4) {
    ts_tensor x, y;
    kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, (int64_t[]){n, 3}, &r, -1, 1);
    const char *names[1] = {"x"};
    int rc = ts_exec_run(model, s, names, &x, 1, NULL, &y, 0, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    double ref[15];
    for (int64_t i = 0; i < n * 3; i++)
      ref[i] = kc_get(&x, i) * (double)(i % 3 + 1) + 0.5;
    kc_assert_close(&y, ref, (int64_t[]){n, 3}, 2, 1e-6, 0, "symbolic");
    ts_tensor_free(&x);
  }
  ts_session_free(s);
  ts_model_free(model);
  kc_model_free(m);
  kc_tensors_free((ts_tensor[]){w, b}, 2);
}
END_TEST

START_TEST(test_runtime_broadcast_mismatch) {
  /* Symbolic dims: the load cannot tell; the run names the node. */
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x0", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, -1});
  kc_model_input(m, "x1", TS_DTYPE_FLOAT, 1, (int64_t[]){-1});
  kc_model_output(m, "y0", TS_DTYPE_UNDEFINED, -1, NULL);
  kc_model_node(m, "Add", "", "add", "x0,x1", "y0");
  ts_tensor a, b, y;
  ts_err err;
  kc_tensor_from(&a, TS_DTYPE_FLOAT, 2, (int64_t[]){2, 3}, NULL);
  kc_tensor_from(&b, TS_DTYPE_FLOAT, 1, (int64_t[]){4}, NULL);
  const ts_tensor *in[2] = {&a, &b};
  ck_assert_int_eq(kc_model_run(m, in, 2, 0, &y, 1, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "add") != NULL, "message names the node: %s",
                err.msg);
  kc_tensors_free((ts_tensor[]){a, b}, 2);
  kc_model_free(m);
}
END_TEST

/* ---- bad models ---------------------------------------------------------- */


START_TEST(test_bad_models) {
  ts_tensor f, i64, f2;
  ts_err err;
  kc_tensor_from(&f, TS_DTYPE_FLOAT, 2, (int64_t[]){2, 3}, NULL);
  kc_tensor_from(&f2, TS_DTYPE_FLOAT, 1, (int64_t[]){4}, NULL);
  kc_tensor_from(&i64, TS_DTYPE_INT64, 2, (int64_t[]){2, 3}, NULL);
  Onnx__NodeProto *n;

  /* Mixed dtypes, shapes that do not broadcast. */
  ck_assert_int_eq(kc_load_code(kc_op_model("Add", "", 13,
                                         (const ts_tensor *[]){&f, &i64}, 2,
                                         0, 1, NULL), &err), TS_EINVAL);
  ck_assert_int_eq(kc_load_code(kc_op_model("Mul", "", 13,
                                         (const ts_tensor *[]){&f, &f2}, 2, 0,
                                         1, NULL), &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "Mul"), "names the op: %s", err.msg);
  /* Types an op does not take. */
  ck_assert_int_eq(kc_load_code(kc_op_model("Sqrt", "", 13,
                                         (const ts_tensor *[]){&i64}, 1, 0, 1,
                                         NULL), &err), TS_EUNSUPPORTED);
  ck_assert_int_eq(kc_load_code(kc_op_model("And", "", 13,
                                         (const ts_tensor *[]){&f, &f}, 2, 0,
                                         1, NULL), &err), TS_EUNSUPPORTED);
  ck_assert_int_eq(kc_load_code(kc_op_model("Where", "", 13,
                                         (const ts_tensor *[]){&f, &f, &f}, 3,
                                         0, 1, NULL), &err), TS_EINVAL);
  /* Unknown attributes (old-style broadcast, a typo). */
  Onnx__ModelProto *m = kc_op_model("Add", "", 13,
                                    (const ts_tensor *[]){&f, &f}, 2, 0, 1, &n);
  kc_attr_int(n, "broadcast", 1);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  ck_assert_msg(strstr(err.msg, "broadcast"), "names it: %s", err.msg);
  m = kc_op_model("Relu", "", 13, (const ts_tensor *[]){&f}, 1, 0, 1, &n);
  kc_attr_float(n, "alpha", 1);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  m = kc_op_model("Clip", "", 13, (const ts_tensor *[]){&f}, 1, 0, 1, &n);
  kc_attr_float(n, "min", 1); /* an attribute only before opset 11 */
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  /* Attributes of the wrong type. */
  m = kc_op_model("LeakyRelu", "", 13, (const ts_tensor *[]){&f}, 1, 0, 1, &n);
  kc_attr_int(n, "alpha", 2);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "'alpha'"), "names it: %s", err.msg);
  m = kc_op_model("Cast", "", 13, (const ts_tensor *[]){&f}, 1, 0, 1, &n);
  kc_attr_float(n, "to", 7);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  /* Cast: 'to' missing, or a type Tessera does not compute on. */
  m = kc_op_model("Cast", "", 13, (const ts_tensor *[]){&f}, 1, 0, 1, &n);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  m = kc_op_model("Cast", "", 13, (const ts_tensor *[]){&f}, 1, 0, 1, &n);
  kc_attr_int(n, "to", TS_DTYPE_STRING);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  ck_assert_msg(strstr(err.msg, "'to'"), "names the attribute: %s", err.msg);
  /* Clip before opset 11 has no bound inputs. */
  ts_tensor one;
  kc_tensor_from(&one, TS_DTYPE_FLOAT, 0, NULL, (double[]){1});
  ck_assert_int_eq(kc_load_code(kc_op_model("Clip", "", 9,
                                         (const ts_tensor *[]){&f, &one}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  ts_tensor_free(&one);
  /* Clip bounds must be scalars of the input's type. */
  ck_assert_int_eq(kc_load_code(kc_op_model("Clip", "", 13,
                                         (const ts_tensor *[]){&f, &f2}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  /* Expand to a negative dim, or to a shape that does not broadcast. */
  ts_tensor s;
  kc_tensor_from(&s, TS_DTYPE_INT64, 1, (int64_t[]){2}, (double[]){2, -3});
  ck_assert_int_eq(kc_load_code(kc_op_model("Expand", "", 13,
                                         (const ts_tensor *[]){&f, &s}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  kc_set(&s, 1, 4);
  ck_assert_int_eq(kc_load_code(kc_op_model("Expand", "", 13,
                                         (const ts_tensor *[]){&f, &s}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  kc_tensors_free((ts_tensor[]){f, f2, i64, s}, 4);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("kernels_elementwise");
  TCase *tc = ts_check_tcase(s, "kernels", 120, NULL, NULL);
  tcase_add_test(tc, test_binary_random);
  tcase_add_test(tc, test_binary_every_pattern);
  tcase_add_test(tc, test_integer_division);
  tcase_add_test(tc, test_integer_division_by_zero_does_not_trap);
  tcase_add_test(tc, test_logic);
  tcase_add_test(tc, test_pow);
  tcase_add_test(tc, test_pow_fixed_exponent);
  tcase_add_test(tc, test_variadic);
  tcase_add_test(tc, test_where);
  tcase_add_test(tc, test_unary);
  tcase_add_test(tc, test_erf_tanh_float_dense);
  tcase_add_test(tc, test_not);
  tcase_add_test(tc, test_leaky_relu);
  tcase_add_test(tc, test_clip_inputs);
  tcase_add_test(tc, test_clip_attributes);
  tcase_add_test(tc, test_cast_all_pairs);
  tcase_add_test(tc, test_cast_float_edge_values);
  tcase_add_test(tc, test_expand);
  tcase_add_test(tc, test_symbolic_batch);
  tcase_add_test(tc, test_runtime_broadcast_mismatch);
  tcase_add_test(tc, test_bad_models);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
