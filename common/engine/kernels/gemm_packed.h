/*
 * gemm_packed.h - float matrix products over a constant B packed once.
 *
 * OpenBLAS's sgemm packs B on every call; for the small-M products of
 * inference (batch 1 to a few dozen rows) that packing costs more than the
 * product itself. Gemm and MatMul with a constant B therefore pack it once,
 * when a daemon that runs the model asks (ts_model_prepack), into panels of TS_GEMM_PANEL output columns, each
 * panel K rows of TS_GEMM_PANEL contiguous floats, 64-byte aligned, the last
 * panel zero-padded. A product then streams the panels once per call with a
 * register-blocked microkernel: rows of A broadcast, FMA over a panel row.
 *
 * The microkernel exists in three versions (ISA): AVX-512F, AVX2 + FMA and
 * plain C; the best one the CPU supports is chosen once, at run time, so a
 * baseline x86-64 build runs everywhere and fast where it can. The packed
 * layout is the same for every version.
 *
 * Reduced-precision B (precision=fp16|bf16|int8 shards): the panels may
 * hold float16, bfloat16 or int8 elements instead of floats, in the same
 * layout, and the tiles widen each panel row to floats in registers as
 * they stream it (int8: the column's scale applied once, to the finished
 * sum), so B stays 2x / 4x smaller in memory and in what a product reads.
 * Reduced panels always take the tiles, whatever M (sgemm cannot read
 * them); the float result is the same as a float B holding the widened
 * (dequantized) values, up to float rounding of the sums.
 *
 * A packed B is immutable after ts_gemm_pack: any number of threads may run
 * products over it at once.
 */
#ifndef TS_GEMM_PACKED_H
#define TS_GEMM_PACKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Output columns per panel: two AVX-512 registers, four AVX2 ones. */
#define TS_GEMM_PANEL 32

/* Products with at most this many rows take the packed kernel; bigger ones
 * go to cblas_sgemm over the packed panels, one panel at a time, since
 * sgemm is faster there (bench/gemm_bench.c). */
#define TS_GEMM_PACKED_MAX_M 32

typedef enum {
  TS_GEMM_ISA_C,      /* plain C, any CPU */
  TS_GEMM_ISA_AVX2,   /* AVX2 + FMA */
  TS_GEMM_ISA_AVX512, /* AVX-512F */
  TS_GEMM_ISA_COUNT
} ts_gemm_isa;

/* The element type of a packed B's panels. */
typedef enum {
  TS_GEMM_F32,  /* float */
  TS_GEMM_F16,  /* IEEE half (uint16 bits) */
  TS_GEMM_BF16, /* bfloat16 (uint16 bits: a float's high half) */
  TS_GEMM_I8,   /* int8, times a per-column scale */
  TS_GEMM_ELEM_COUNT
} ts_gemm_elem;

typedef struct ts_gemm_packed {
  int64_t k, n;         /* B is K x N (after transB) */
  int64_t n_panels;     /* ceil(n / TS_GEMM_PANEL) */
  ts_gemm_elem elem;    /* what the panels hold */
  void *panels;         /* n_panels * k * TS_GEMM_PANEL elements */
  float *scales;        /* I8: n_panels * TS_GEMM_PANEL column scales
                           (padding 0); NULL for the other types */
  const void *source;   /* the B it was packed from (not owned) */
  size_t mapped;        /* bytes mmap'd for panels; 0: aligned_alloc'd */
} ts_gemm_packed;

/* Packs B (K x N row-major, or N x K when trans_b) into a new packed matrix
 * the caller frees with ts_gemm_packed_free; NULL when out of memory. The
 * packed copy does not refer to b's data except as `source`, an identity
 * that lets a kernel check it runs with the B it packed.
 *
 * discard_source: B's pages are handed back to the kernel as they are
 * packed (madvise MADV_DONTNEED on the whole pages inside b), so that a
 * model holds its weights once and packing peaks at one B plus a few pages,
 * not two Bs. b's memory stays mapped and valid but reads as zeros (or as
 * the file it maps) afterwards: only for a B that nothing else reads. */
ts_gemm_packed *ts_gemm_pack(float *b, int64_t k, int64_t n, bool trans_b,
                             bool discard_source);
/* ts_gemm_pack for a reduced-precision B of element type `elem` (F16,
 * BF16 or I8; b holds K x N, or N x K, elements of that type). For I8,
 * `scales` holds n_scales floats: 1 (one scale for all of B) or N (one per
 * output column); B's value at (kk, j) is then b[kk, j] * scale[j]. For
 * the other types scales must be NULL. NULL when out of memory. */
ts_gemm_packed *ts_gemm_pack_reduced(const void *b, ts_gemm_elem elem,
                                     const float *scales, int64_t n_scales,
                                     int64_t k, int64_t n, bool trans_b,
                                     bool discard_source);
void ts_gemm_packed_free(ts_gemm_packed *p);

/* Element size and name ("f32", "f16", "bf16", "i8") of a panel type. */
size_t ts_gemm_elem_size(ts_gemm_elem elem);
const char *ts_gemm_elem_name(ts_gemm_elem elem);


/* Y = alpha * A . B + (accumulate ? Y : 0), for A m x k (row stride lda) and
 * Y m x n (row stride ldy): the best ISA of this CPU up to
 * TS_GEMM_PACKED_MAX_M rows, cblas_sgemm over the panels above (float
 * panels only; reduced ones take the tiles for any M). A product
 * of enough multiply-adds is split over the free threads of the kernel
 * budget (parallel.h), by panels and, for many rows, by rows; the result
 * is the same bits whatever the team size. Allocates nothing itself. */
void ts_gemm_packed_run(const ts_gemm_packed *p, int64_t m, const float *a,
                        int64_t lda, float alpha, bool accumulate, float *y,
                        int64_t ldy);

/* The ISA ts_gemm_packed_run uses: the best one this CPU supports. */
ts_gemm_isa ts_gemm_isa_best(void);
/* Whether this CPU (and OS) can run `isa`. */
bool ts_gemm_isa_supported(ts_gemm_isa isa);
/* "avx512", "avx2", "c". */
const char *ts_gemm_isa_name(ts_gemm_isa isa);

/* Test and bench hook: ts_gemm_packed_run with a given ISA, which must be
 * supported (ts_gemm_isa_supported). */
void ts_gemm_packed_run_isa(ts_gemm_isa isa, const ts_gemm_packed *p,
                            int64_t m, const float *a, int64_t lda,
                            float alpha, bool accumulate, float *y,
                            int64_t ldy);

#endif
