/*
 * test_gemm.c - the packed small-M products (kernels/gemm_packed.c) and
 * their use by Gemm and MatMul.
 *
 * Every ISA version this CPU runs (forced through ts_gemm_packed_run_isa),
 * the plain C one included, is compared with a float64 naive product on odd
 * shapes: M 1..40, N and K not multiples of the panel width, B stored K x N
 * or N x K, alpha, accumulation into Y, and row strides wider than the
 * matrices. Then Gemm and MatMul models with a constant B (packed at load)
 * are run at M 1..40 and compared with the same reference, C broadcast in
 * every way Gemm allows, so that the packed kernel (M <=
 * TS_GEMM_PACKED_MAX_M) and sgemm over the packed panels above it are both
 * checked through the op. Last, a
 * large B that only its product reads is not kept twice after prepacking
 * (mincore) and runs packed at every M.
 *
 * Reduced-precision panels (float16, bfloat16, int8 with one scale or one
 * per column): every ISA against a float64 product with the dequantized B
 * (each element widened exactly, times its column's scale), M 1..17 and
 * beyond the sgemm threshold (reduced panels take the tiles for any M),
 * odd N and K, both layouts of B; and the float <-> half / bfloat16
 * conversions on their edge values.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check_main.h"
#include "gemm_packed.h"
#include "kernel_check.h"

#define RTOL 1e-4
#define ATOL 1e-5

/* The odd shapes of the ISA tests: row count m takes N = odd_n[m % 7] and
 * K = odd_k[m % 5]. */
static const int64_t odd_n[7] = {1, 7, 16, 31, 33, 50, 97};
static const int64_t odd_k[5] = {1, 3, 17, 65, 130};

static float *rand_floats(kc_rng *r, int64_t count) {
  float *x = malloc((size_t)(count > 0 ? count : 1) * sizeof *x);
  ck_assert_ptr_nonnull(x);
  for (int64_t i = 0; i < count; i++) x[i] = (float)kc_uniform(r, -1, 1);
  return x;
}

/* Runs p (the panels of b, K x N or under trans_b N x K, as floats) with
 * `isa` over a (m x k, row stride lda) into y (row stride ldy; y0: its
 * copy before the run) and compares with the float64 naive product; the
 * padding of each Y row beyond n must stay untouched. what names the case
 * in a failure. */
static void run_and_compare(ts_gemm_isa isa, const ts_gemm_packed *p,
                            int64_t m, int64_t n, int64_t k, const float *a,
                            int64_t lda, const float *b, bool trans_b,
                            float alpha, bool accumulate, float *y,
                            const float *y0, int64_t ldy, const char *what) {
  double *ref = malloc((size_t)(m * ldy) * sizeof *ref);
  ck_assert_ptr_nonnull(ref);
  ts_gemm_packed_run_isa(isa, p, m, a, lda, alpha, accumulate, y, ldy);
  kc_gemm_ref(m, n, k, a, lda, b, trans_b, alpha, accumulate, y0, ldy, ref);
  for (int64_t i = 0; i < m; i++) {
    for (int64_t j = 0; j < n; j++) {
      double want = ref[i * ldy + j], got = y[i * ldy + j];
      ck_assert_msg(fabs(got - want) <= ATOL + RTOL * fabs(want),
                    "%s: y[%lld][%lld] = %.7g, want %.7g", what, (long long)i,
                    (long long)j, got, want);
    }
    for (int64_t j = n; j < ldy; j++)
      ck_assert_msg(y[i * ldy + j] == y0[i * ldy + j],
                    "%s wrote past column %lld", what, (long long)n);
  }
  free(ref);
}

/* One packed product with `isa` against the naive one. */
static void check_kernel(kc_rng *r, ts_gemm_isa isa, int64_t m, int64_t n,
                         int64_t k, bool trans_b, float alpha,
                         bool accumulate) {
  int64_t lda = k + 3, ldy = n + 5;
  float *a = rand_floats(r, m * lda), *b = rand_floats(r, n * k);
  float *y = rand_floats(r, m * ldy), *y0 = malloc((size_t)(m * ldy) * 4);
  ck_assert_ptr_nonnull(y0);
  memcpy(y0, y, (size_t)(m * ldy) * sizeof *y);
  ts_gemm_packed *p = ts_gemm_pack(b, k, n, trans_b, false);
  ck_assert_ptr_nonnull(p);
  char what[160];
  snprintf(what, sizeof what, "%s m=%lld n=%lld k=%lld tB=%d alpha=%g acc=%d",
           ts_gemm_isa_name(isa), (long long)m, (long long)n, (long long)k,
           trans_b, alpha, accumulate);
  run_and_compare(isa, p, m, n, k, a, lda, b, trans_b, alpha, accumulate, y, y0,
                  ldy, what);
  ts_gemm_packed_free(p);
  free(a);
  free(b);
  free(y);
  free(y0);
}

/* Every ISA in turn: _i is the ISA (a loop test). */
START_TEST(kernel_odd_shapes) {
  ts_gemm_isa isa = (ts_gemm_isa)_i;
  if (!ts_gemm_isa_supported(isa)) return; /* this CPU cannot run it */
  kc_rng r = kc_rng_seed(10 + (uint64_t)_i);
  for (int64_t m = 1; m <= 40; m++) {
    int64_t n = odd_n[m % 7], k = odd_k[m % 5];
    check_kernel(&r, isa, m, n, k, m % 2 == 0, 1.0f, false);
    check_kernel(&r, isa, m, n + 2, k + 1, m % 2 == 1, 0.37f, true);
  }
  check_kernel(&r, isa, 3, 5, 0, false, 1.0f, true); /* K = 0 */
}
END_TEST

START_TEST(isa_best_is_supported) {
  ts_gemm_isa best = ts_gemm_isa_best();
  ck_assert(ts_gemm_isa_supported(best));
  ck_assert(ts_gemm_isa_supported(TS_GEMM_ISA_C));
  for (int i = best + 1; i < TS_GEMM_ISA_COUNT; i++)
    ck_assert(!ts_gemm_isa_supported((ts_gemm_isa)i));
  ck_assert_str_eq(ts_gemm_isa_name(TS_GEMM_ISA_AVX512), "avx512");
}
END_TEST

/* ---- reduced-precision panels -------------------------------------------- */

/* One product over a reduced B of type elem (random, in range) against
 * the float64 product with B dequantized; per_column: one int8 scale per
 * column, else one for all. */
static void check_reduced(kc_rng *r, ts_gemm_isa isa, ts_gemm_elem elem,
                          int64_t m, int64_t n, int64_t k, bool trans_b,
                          bool per_column, float alpha, bool accumulate) {
  int64_t lda = k + 1, ldy = n + 3, count = n * k;
  float *a = rand_floats(r, m * lda), *deq = rand_floats(r, count);
  float *y = rand_floats(r, m * ldy), *y0 = malloc((size_t)(m * ldy) * 4);
  float *scales = malloc((size_t)n * sizeof *scales);
  void *small = malloc((size_t)count * ts_gemm_elem_size(elem) + 1);
  ck_assert(y0 && scales && small);
  memcpy(y0, y, (size_t)(m * ldy) * sizeof *y);
  for (int64_t j = 0; j < n; j++)
    scales[j] = per_column || j == 0 ? (float)kc_uniform(r, 1e-3, 2e-2)
                                     : scales[0];
  for (int64_t i = 0; i < count; i++) {
    /* column of element i: B is N x K under trans_b, else K x N */
    int64_t col = trans_b ? i / k : i % n;
    if (elem == TS_GEMM_I8) {
      int8_t q = (int8_t)floor(kc_uniform(r, -127, 128));
      ((int8_t *)small)[i] = q;
      deq[i] = (float)q * scales[col];
    } else if (elem == TS_GEMM_F16) {
      uint16_t h = ts_float_to_half(deq[i]);
      ((uint16_t *)small)[i] = h;
      deq[i] = ts_half_to_float(h);
    } else {
      uint16_t h = ts_float_to_bf16(deq[i]);
      ((uint16_t *)small)[i] = h;
      deq[i] = ts_bf16_to_float(h);
    }
  }
  ts_gemm_packed *p = ts_gemm_pack_reduced(
      small, elem, elem == TS_GEMM_I8 ? scales : NULL,
      elem == TS_GEMM_I8 ? (per_column ? n : 1) : 0, k, n, trans_b, false);
  ck_assert_ptr_nonnull(p);
  char what[160];
  snprintf(what, sizeof what, "%s %s m=%lld n=%lld k=%lld tB=%d col=%d",
           ts_gemm_isa_name(isa), ts_gemm_elem_name(elem), (long long)m,
           (long long)n, (long long)k, trans_b, per_column);
  run_and_compare(isa, p, m, n, k, a, lda, deq, trans_b, alpha, accumulate, y,
                  y0, ldy, what);
  ts_gemm_packed_free(p);
  free(a);
  free(deq);
  free(y);
  free(y0);
  free(scales);
  free(small);
}

/* _i = isa * 3 + (elem - 1): every ISA with every reduced type. */
START_TEST(kernel_reduced) {
  ts_gemm_isa isa = (ts_gemm_isa)(_i / 3);
  ts_gemm_elem elem = (ts_gemm_elem)(1 + _i % 3);
  if (!ts_gemm_isa_supported(isa)) return; /* this CPU cannot run it */
  kc_rng r = kc_rng_seed(40 + (uint64_t)_i);
  for (int64_t m = 1; m <= 17; m++) {
    int64_t n = odd_n[m % 7], k = odd_k[m % 5];
    check_reduced(&r, isa, elem, m, n, k, m % 2 == 0, m % 3 != 0, 1.0f, false);
    check_reduced(&r, isa, elem, m, n + 2, k + 1, m % 2 == 1, true, 0.37f,
                  true);
  }
  check_reduced(&r, isa, elem, 40, 45, 70, true, true, 1.0f, false);
  check_reduced(&r, isa, elem, 33, 64, 9, false, false, 1.0f, true);
  check_reduced(&r, isa, elem, 3, 5, 0, false, true, 1.0f, true); /* K = 0 */
}
END_TEST

static uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

START_TEST(half_conversions) {
  static const struct { float f; uint16_t half, bf16; } cases[] = {
      {0.0f, 0x0000, 0x0000},       {-0.0f, 0x8000, 0x8000},
      {1.0f, 0x3c00, 0x3f80},       {-2.5f, 0xc100, 0xc020},
      {65504.0f, 0x7bff, 0x4780},   {65520.0f, 0x7c00, 0x4780},
      {0x1p-24f, 0x0001, 0x3380},   {0x1p-25f, 0x0000, 0x3300},
      {0x1.8p-24f, 0x0002, 0x33c0}, {0x1p-14f, 0x0400, 0x3880},
      {1.0f + 0x1p-11f, 0x3c00, 0x3f80}, /* a tie: to even */
      {1.0f + 0x3p-11f, 0x3c02, 0x3f80}, /* a tie: to even, up */
      {1.0f + 0x1p-8f, 0x3c04, 0x3f80},  /* bf16's tie: to even */
      {1.0f + 0x3p-8f, 0x3c0c, 0x3f82},
      {INFINITY, 0x7c00, 0x7f80},   {-INFINITY, 0xfc00, 0xff80},
      {1e30f, 0x7c00, 0x714a},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ck_assert_msg(ts_float_to_half(cases[i].f) == cases[i].half,
                  "half(%a) = 0x%04x, want 0x%04x", (double)cases[i].f,
                  ts_float_to_half(cases[i].f), cases[i].half);
    ck_assert_msg(ts_float_to_bf16(cases[i].f) == cases[i].bf16,
                  "bf16(%a) = 0x%04x, want 0x%04x", (double)cases[i].f,
                  ts_float_to_bf16(cases[i].f), cases[i].bf16);
  }
  /* Every finite half widens to the float that narrows back to it. */
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00) continue;
    float f = ts_half_to_float((uint16_t)h);
    ck_assert_msg(ts_float_to_half(f) == h, "half 0x%04x -> %a -> 0x%04x", h,
                  (double)f, ts_float_to_half(f));
  }
  ck_assert(isnan(ts_half_to_float(ts_float_to_half(NAN))));
  ck_assert(isnan(ts_bf16_to_float(ts_float_to_bf16(NAN))));
  ck_assert_uint_eq(float_bits(ts_half_to_float(0x3555)), 0x3eaaa000u);
  ck_assert(ts_bf16_to_float(0x3f80) == 1.0f);
}
END_TEST

/* ---- through the ops ----------------------------------------------------- */

/* Gemm with B (and C) constant, so packed at load: M 1..40, transB both
 * ways, C of every shape Gemm broadcasts (kc_check_gemm's kinds in turn). */
START_TEST(gemm_constant_b) {
  kc_rng r = kc_rng_seed(20);
  for (int64_t m = 1; m <= 40; m++) {
    int64_t n = 1 + (m * 7) % 45, k = 1 + (m * 13) % 70;
    kc_check_gemm(&r, m, n, k, 0, (int)(m % 2), m % 3 ? 1.0f : 0.5f,
                  m % 4 ? 1.0f : -0.75f, (int)(m % 6), 0x6u, RTOL, ATOL);
  }
}
END_TEST

/* MatMul [2, M, K] x constant [K, N]: one product of 2M rows. */
START_TEST(matmul_constant_b) {
  kc_rng r = kc_rng_seed(21);
  for (int64_t m = 1; m <= 20; m += 3) {
    int64_t n = 2 + (m * 11) % 40, k = 3 + (m * 5) % 50;
    ts_tensor a, b, y;
    kc_tensor_rand(&a, TS_DTYPE_FLOAT, 3, (int64_t[]){2, m, k}, &r, -1, 1);
    kc_tensor_rand(&b, TS_DTYPE_FLOAT, 2, (int64_t[]){k, n}, &r, -1, 1);
    const ts_tensor *in[2] = {&a, &b};
    Onnx__NodeProto *node;
    Onnx__ModelProto *mp = kc_op_model("MatMul", "", 13, in, 2, 0x2u, 1,
                                       &node);
    ts_err err;
    int rc = kc_model_run(mp, in, 2, 0x2u, &y, 1, &err);
    kc_model_free(mp);
    ck_assert_msg(rc == 0, "matmul: %s", err.msg);
    double *ref = malloc((size_t)(2 * m * n) * sizeof *ref);
    ck_assert_ptr_nonnull(ref);
    kc_gemm_ref(2 * m, n, k, a.data, k, b.data, false, 1.0f, false, NULL, n, ref);
    kc_assert_close(&y, ref, (int64_t[]){2, m, n}, 3, RTOL, ATOL, "matmul");
    free(ref);
    ts_tensor_free(&a);
    ts_tensor_free(&b);
    ts_tensor_free(&y);
  }
}
END_TEST

/* Pages of [p, p + len) resident in memory, whole pages inside only. */
static size_t resident_pages(const void *p, size_t len, size_t *total) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
  uintptr_t hi = ((uintptr_t)p + len) & ~(page - 1);
  size_t n = hi > lo ? (hi - lo) / page : 0, in = 0;
  unsigned char *vec = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(vec);
  ck_assert_int_eq(mincore((void *)lo, hi - lo, vec), 0);
  for (size_t i = 0; i < n; i++) in += vec[i] & 1;
  free(vec);
  *total = n;
  return in;
}

/* A B of 2.4 MB that only its Gemm reads: prepacked, its original's pages
 * are handed back (mincore says they left memory) and every M, beyond
 * TS_GEMM_PACKED_MAX_M too (sgemm over the panels), runs on the packed copy
 * against the float64 reference. The same B read by two Gemms keeps its pages. */
START_TEST(large_b_not_kept_twice) {
  kc_rng r = kc_rng_seed(30);
  const int64_t k = 600, n = 1000;
  for (int tb = 0; tb <= 1; tb++) {
    ts_tensor b;
    kc_tensor_rand(&b, TS_DTYPE_FLOAT, 2,
                   tb ? (int64_t[]){n, k} : (int64_t[]){k, n}, &r, -1, 1);
    for (int shared = 0; shared <= 1; shared++) {
      Onnx__ModelProto *mp = kc_model_new(13);
      kc_model_input(mp, "x", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, k});
      kc_model_init(mp, "B", &b);
      Onnx__NodeProto *g1 = kc_model_node(mp, "Gemm", "", "g1", "x,B", "y");
      kc_attr_int(g1, "transB", tb);
      kc_model_output(mp, "y", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, n});
      if (shared) {
        Onnx__NodeProto *g2 = kc_model_node(mp, "Gemm", "", "g2", "x,B", "z");
        kc_attr_int(g2, "transB", tb);
        kc_model_output(mp, "z", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, n});
      }
      ts_model *model;
      ts_err err;
      ck_assert_msg(kc_model_load(mp, &model, &err) == 0, "%s", err.msg);
      const ts_tensor *kept =
          model->graph.values[ts_graph_find_value(&model->graph, "B")].constant;
      size_t total, in = resident_pages(kept->data, kept->nbytes, &total);
      ck_assert_uint_gt(total, 500);
      if (shared)
        ck_assert_msg(in == total, "tB=%d shared B: %zu of %zu pages left",
                      tb, in, total);
      else
        ck_assert_msg(in == 0, "tB=%d: %zu of %zu pages of B kept",
                      tb, in, total);
      ts_session *sess;
      ck_assert(ts_session_create(&sess, &err) == 0);
      for (int64_t m = 1; m <= 100; m += 39) {
        ts_tensor a;
        kc_tensor_rand(&a, TS_DTYPE_FLOAT, 2, (int64_t[]){m, k}, &r, -1, 1);
        const char *in_names[] = {"x"}, *out_names[] = {"y"};
        ts_tensor y;
        ck_assert_msg(ts_exec_run(model, sess, in_names, &a, 1, out_names, &y,
                                  1, &err) == 0, "%s", err.msg);
        double *ref = malloc((size_t)(m * n) * sizeof *ref);
        ck_assert_ptr_nonnull(ref);
        kc_gemm_ref(m, n, k, a.data, k, b.data, tb, 1.0f, false, NULL, n, ref);
        char what[96];
        snprintf(what, sizeof what, "gemm tB=%d shared=%d m=%lld", tb, shared,
                 (long long)m);
        /* Sums of 600 terms of magnitude ~1: float's rounding reaches a few
         * 1e-5 wherever the sum cancels to near 0. */
        kc_assert_close(&y, ref, (int64_t[]){m, n}, 2, RTOL, 2e-4, what);
        free(ref);
        ts_tensor_free(&a);
      }
      ts_session_free(sess);
      ts_model_free(model);
      kc_model_free(mp);
    }
    ts_tensor_free(&b);
  }
}
END_TEST

static void cases(Suite *s) {
  TCase *tc = TS_CHECK_CASE(s, "packed", 120, NULL, NULL,
                            isa_best_is_supported, gemm_constant_b,
                            matmul_constant_b, large_b_not_kept_twice,
                            half_conversions);
  tcase_add_loop_test(tc, kernel_odd_shapes, 0, TS_GEMM_ISA_COUNT);
  tcase_add_loop_test(tc, kernel_reduced, 0, 3 * TS_GEMM_ISA_COUNT);
}

const ts_check_suite ts_check_this_suite = {.name = "gemm", .cases = cases};
