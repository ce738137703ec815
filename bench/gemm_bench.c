/*
 * gemm_bench.c - one thread's float products at inference shapes:
 * cblas_sgemm (which packs B on every call), cblas_sgemv (M = 1 only) and
 * the packed kernel of kernels/gemm_packed.c in every ISA this CPU runs.
 *
 * Shapes: 4096 x 4096, and the four big Gemm of export_models.py's
 * mlp_168mb (2048 -> 5120 and 5120 -> 2048, B stored N x K as torch exports
 * it, transB = 1), each at M = 1, 4, 16, 64 rows. Each case runs for a given
 * wall time after a warm-up and reports its fastest call (ms) and GFLOP/s
 * (2 M N K / time); the packed results are checked against cblas_sgemm.
 * With THREADS > 1 the packed products run on a kernel budget of that many
 * threads (parallel.h: split by panels and rows); sgemm and sgemv stay on
 * one. The same B packed in float16, bfloat16 and int8 (one scale per
 * column, precision= shards) runs on the best ISA as "packed f16" etc.,
 * its error taken against sgemm over the float B (the rounding of B
 * itself: up to ~1e-2 for int8). Not part of meson test; built with the
 * tree (bench/README.md):
 *
 *   ./build/bench/gemm_bench [SECONDS_PER_CASE [THREADS]]
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "gemm_packed.h"
#include "parallel.h"
#include "tensor.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct bench_case {
  int64_t m, k, n;
  const float *a, *b; /* A m x k, B n x k (transB) */
  const ts_gemm_packed *packed;
  float *y;
} bench_case;

typedef enum { RUN_SGEMM, RUN_SGEMV, RUN_PACKED } run_kind;

static void run_once(const bench_case *c, run_kind kind, ts_gemm_isa isa) {
  switch (kind) {
    case RUN_SGEMM:
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)c->m,
                  (blasint)c->n, (blasint)c->k, 1.0f, c->a, (blasint)c->k,
                  c->b, (blasint)c->k, 0.0f, c->y, (blasint)c->n);
      break;
    case RUN_SGEMV:
      cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)c->n, (blasint)c->k,
                  1.0f, c->b, (blasint)c->k, c->a, 1, 0.0f, c->y, 1);
      break;
    case RUN_PACKED:
      ts_gemm_packed_run_isa(isa, c->packed, c->m, c->a, c->k, 1.0f, false,
                             c->y, c->n);
      break;
  }
}

/* The fastest call in `seconds` of calls (at least 3), after one warm-up. */
static double time_case(const bench_case *c, run_kind kind, ts_gemm_isa isa,
                        double seconds) {
  run_once(c, kind, isa);
  double best = 1e30, start = now_s();
  for (int rep = 0; rep < 3 || now_s() - start < seconds; rep++) {
    double t0 = now_s();
    run_once(c, kind, isa);
    double t = now_s() - t0;
    if (t < best) best = t;
  }
  return best;
}

static void fill(float *x, size_t count, unsigned seed) {
  for (size_t i = 0; i < count; i++) {
    seed = seed * 1103515245u + 12345u;
    x[i] = (float)((seed >> 16) & 0x7fff) / 32768.0f - 0.5f;
  }
}

static void report(const char *shape, int64_t m, const char *what, double t,
                   double flops) {
  printf("%-16s M=%-3lld %-14s %9.3f ms %7.1f GFLOP/s\n", shape, (long long)m,
         what, t * 1e3, flops / t / 1e9);
  fflush(stdout);
}

/* B (N x K) packed in a reduced type: float16, bfloat16, or int8 with one
 * scale per row of B (an output column), max |b| / 127. */
static ts_gemm_packed *pack_reduced(const float *b, int64_t n, int64_t k,
                                    ts_gemm_elem elem) {
  size_t count = (size_t)(n * k);
  void *small = malloc(count * ts_gemm_elem_size(elem));
  float *scales = malloc((size_t)n * sizeof *scales);
  ts_gemm_packed *p = NULL;
  if (small && scales) {
    for (int64_t j = 0; j < n; j++) {
      const float *row = b + j * k;
      float top = 0;
      for (int64_t i = 0; i < k; i++) top = fmaxf(top, fabsf(row[i]));
      scales[j] = top > 0 ? top / 127.0f : 1.0f;
      for (int64_t i = 0; i < k; i++) {
        size_t at = (size_t)(j * k + i);
        if (elem == TS_GEMM_I8)
          ((int8_t *)small)[at] = (int8_t)rintf(row[i] / scales[j]);
        else
          ((uint16_t *)small)[at] = elem == TS_GEMM_F16
                                        ? ts_float_to_half(row[i])
                                        : ts_float_to_bf16(row[i]);
      }
    }
    p = ts_gemm_pack_reduced(small, elem, elem == TS_GEMM_I8 ? scales : NULL,
                             elem == TS_GEMM_I8 ? n : 0, k, n, true, false);
  }
  free(small);
  free(scales);
  return p;
}

/* Largest |packed - sgemm| relative to the largest |sgemm|. */
static double packed_error(const bench_case *c, ts_gemm_isa isa, float *ref) {
  run_once(c, RUN_SGEMM, isa);
  size_t count = (size_t)(c->m * c->n);
  memcpy(ref, c->y, count * sizeof *ref);
  run_once(c, RUN_PACKED, isa);
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < count; i++) {
    worst = fmax(worst, fabs((double)c->y[i] - ref[i]));
    scale = fmax(scale, fabs((double)ref[i]));
  }
  return worst / scale;
}

int main(int argc, char **argv) {
  ts_blas_select_kernels(argc, argv);
  ts_blas_set_threads(1);
  double seconds = argc > 1 ? atof(argv[1]) : 0.3;
  int threads = ts_parallel_set_threads(argc > 2 ? atoi(argv[2]) : 1);
  static const struct {
    const char *name;
    int64_t k, n;
  } shapes[] = {{"4096x4096", 4096, 4096},
                {"mlp 2048->5120", 2048, 5120},
                {"mlp 5120->2048", 5120, 2048}};
  static const int64_t ms[] = {1, 4, 16, 64};
  printf("gemm_bench: %d kernel thread(s) for the packed products, OpenBLAS "
         "core %s (1 thread), packed ISA %s, best of %.2f s per case\n",
         threads, ts_blas_core_name(), ts_gemm_isa_name(ts_gemm_isa_best()),
         seconds);
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    int64_t k = shapes[s].k, n = shapes[s].n, max_m = 64;
    float *a = malloc((size_t)(max_m * k) * sizeof *a);
    float *b = malloc((size_t)(n * k) * sizeof *b);
    float *y = malloc((size_t)(max_m * n) * sizeof *y);
    float *ref = malloc((size_t)(max_m * n) * sizeof *ref);
    ts_gemm_packed *packed = b ? (fill(b, (size_t)(n * k), 7),
                                  ts_gemm_pack(b, k, n, true, false))
                               : NULL;
    ts_gemm_packed *reduced[TS_GEMM_ELEM_COUNT] = {packed};
    for (int e = TS_GEMM_F16; e < TS_GEMM_ELEM_COUNT && packed; e++)
      if (!(reduced[e] = pack_reduced(b, n, k, (ts_gemm_elem)e))) packed = NULL;
    if (!a || !b || !y || !ref || !packed) {
      fprintf(stderr, "gemm_bench: out of memory\n");
      return 1;
    }
    fill(a, (size_t)(max_m * k), 3);
    for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
      bench_case c = {ms[mi], k, n, a, b, packed, y};
      double flops = 2.0 * (double)(c.m * n) * (double)k;
      report(shapes[s].name, c.m, "cblas_sgemm",
             time_case(&c, RUN_SGEMM, TS_GEMM_ISA_C, seconds), flops);
      if (c.m == 1)
        report(shapes[s].name, c.m, "cblas_sgemv",
               time_case(&c, RUN_SGEMV, TS_GEMM_ISA_C, seconds), flops);
      for (int isa = TS_GEMM_ISA_COUNT - 1; isa >= 0; isa--) {
        if (!ts_gemm_isa_supported((ts_gemm_isa)isa)) continue;
        char what[32];
        snprintf(what, sizeof what, "packed %s",
                 ts_gemm_isa_name((ts_gemm_isa)isa));
        double err = packed_error(&c, (ts_gemm_isa)isa, ref);
        if (err > 1e-4) {
          fprintf(stderr, "gemm_bench: %s is wrong (relative error %g)\n",
                  what, err);
          return 1;
        }
        report(shapes[s].name, c.m, what,
               time_case(&c, RUN_PACKED, (ts_gemm_isa)isa, seconds), flops);
      }
      for (int e = TS_GEMM_F16; e < TS_GEMM_ELEM_COUNT; e++) {
        bench_case r = c;
        r.packed = reduced[e];
        char what[32];
        snprintf(what, sizeof what, "packed %s", ts_gemm_elem_name(e));
        double err = packed_error(&r, ts_gemm_isa_best(), ref);
        if (err > 2e-2) {
          fprintf(stderr, "gemm_bench: %s is wrong (relative error %g)\n",
                  what, err);
          return 1;
        }
        report(shapes[s].name, c.m, what,
               time_case(&r, RUN_PACKED, ts_gemm_isa_best(), seconds), flops);
      }
    }
    for (int e = TS_GEMM_F16; e < TS_GEMM_ELEM_COUNT; e++)
      ts_gemm_packed_free(reduced[e]);
    ts_gemm_packed_free(packed);
    free(a);
    free(b);
    free(y);
    free(ref);
  }
  return 0;
}
