/*
 * gemm_packed.c - packing a constant B once and the small-M kernels over it
 * (contract in gemm_packed.h).
 *
 * A product walks the panels in order (each streamed from memory once per
 * call), and for each panel the rows of A in blocks of the ISA's MR rows: a
 * tile of MR rows x W columns (W = TS_GEMM_PANEL, or half of it for AVX2)
 * lives in registers for the whole K loop, so Y is written once and B is
 * read once per row block, from cache after the first block.
 *
 * Invariants:
 *  - panels are 64-byte aligned and each float panel row starts on a
 *    64-byte boundary (TS_GEMM_PANEL floats = 128 bytes), so the float
 *    tiles use aligned loads (reduced rows, 64 or 32 bytes, are loaded
 *    unaligned); padding columns are zero (int8: scale 0 too) and are never
 *    stored to Y;
 *  - a reduced panel row is widened to floats in registers and multiplied
 *    in float; int8 sums are scaled once per column at the store, so a
 *    reduced product is the float product over the dequantized B, up to
 *    the rounding of the sums;
 *  - the AVX-512 and AVX2 functions are compiled with target attributes and
 *    only called after __builtin_cpu_supports said yes, so the file builds
 *    for baseline x86-64 (and for other architectures without them).
 *
 * Intra-op parallelism (parallel.h): a product big enough to be worth it
 * is cut into tasks, chunks of panels (small M: each thread streams its
 * own share of B, which is what bounds a batch-1 product) and, on the
 * sgemm path with fewer panels than tasks, blocks of rows as well.
 */
#include "gemm_packed.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "parallel.h"
#include "tensor.h"

#if defined(__x86_64__) || defined(__i386__)
#define TS_GEMM_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#define PANEL TS_GEMM_PANEL

/* Y tile = alpha * acc + (accumulate ? Y : 0): the one store rule every
 * version applies, written out per ISA for its registers. A tile function
 * computes rows [0, mr) and columns [0, ncols) of a tile whose B columns
 * start at `panel` (row stride PANEL elements of the panel type); cscale,
 * when not NULL, holds the tile's column scales (int8 panels). */
typedef void tile_fn(int mr, const float *a, int64_t lda, const void *panel,
                     int64_t k, float alpha, const float *cscale,
                     bool accumulate, float *y, int64_t ldy, int ncols);

/* ---- packing ------------------------------------------------------------- */

/* Hands a source's pages back to the kernel as packing passes them: every
 * whole page between the source's start and `upto`, in steps. */
typedef struct discarder {
  uintptr_t page, done, end; /* done: first page not yet handed back */
} discarder;

static discarder discarder_for(const void *p, size_t len) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  return (discarder){page, ((uintptr_t)p + page - 1) & ~(page - 1),
                     ((uintptr_t)p + len) & ~(page - 1)};
}

static void discard_upto(discarder *d, const void *upto) {
  uintptr_t hi = (uintptr_t)upto & ~(d->page - 1);
  if (hi > d->end) hi = d->end;
  if (hi <= d->done) return;
  /* Advice only: a failure leaves the pages resident, which is no error. */
  (void)madvise((void *)d->done, hi - d->done, MADV_DONTNEED);
  d->done = hi;
}

/* Packed copies at least this big get pages of their own (mmap). */
#define MAP_MIN_BYTES ((size_t)1 << 20)

/* Rows of a row-major B packed between two discards of its pages. */
#define DISCARD_ROWS 64

size_t ts_gemm_elem_size(ts_gemm_elem elem) {
  static const size_t size[TS_GEMM_ELEM_COUNT] = {4, 2, 2, 1};
  return elem >= 0 && elem < TS_GEMM_ELEM_COUNT ? size[elem] : 0;
}

const char *ts_gemm_elem_name(ts_gemm_elem elem) {
  static const char *const name[TS_GEMM_ELEM_COUNT] = {"f32", "f16", "bf16",
                                                        "i8"};
  return elem >= 0 && elem < TS_GEMM_ELEM_COUNT ? name[elem] : "?";
}

/* Copies one element of esz bytes (1, 2 or 4: a typed copy, not memcpy, in
 * the transposed packing's inner loop). */
static inline void copy_elem(uint8_t *dst, const uint8_t *src, size_t esz) {
  switch (esz) {
    case 1: *dst = *src; break;
    case 2: memcpy(dst, src, 2); break;
    default: memcpy(dst, src, 4); break;
  }
}

/* A new packed matrix of element type elem, its panels allocated, not yet
 * filled; NULL when out of memory. */
static ts_gemm_packed *packed_new(const void *b, ts_gemm_elem elem, int64_t k,
                                  int64_t n) {
  ts_gemm_packed *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->k = k;
  p->n = n;
  p->elem = elem;
  p->n_panels = (n + PANEL - 1) / PANEL;
  p->source = b;
  size_t elems = (size_t)p->n_panels * (size_t)k * PANEL;
  size_t bytes = elems ? elems * ts_gemm_elem_size(elem) : 64;
  bytes = (bytes + 63) & ~(size_t)63;
  if (bytes >= MAP_MIN_BYTES) {
    /* Pages of its own, faulted in as packing writes them: a malloc'd
     * block may be filled at once (MALLOC_PERTURB_, debugging allocators),
     * holding the whole copy beside the whole source. */
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p->panels = map == MAP_FAILED ? NULL : map;
    p->mapped = p->panels ? bytes : 0;
  } else {
    p->panels = aligned_alloc(64, bytes);
  }
  if (!p->panels) {
    free(p);
    return NULL;
  }
  return p;
}

/* Fills p's panels from b (K x N, or N x K when trans_b), elements of esz
 * bytes, handing b's pages back as they are passed when discard_source. */
static void pack_panels(ts_gemm_packed *p, const void *b, bool trans_b,
                        bool discard_source) {
  int64_t k = p->k, n = p->n;
  size_t esz = ts_gemm_elem_size(p->elem);
  const uint8_t *src0 = b;
  uint8_t *panels = p->panels;
  discarder d = discarder_for(b, (size_t)k * (size_t)n * esz);
  if (trans_b) {
    /* B is N x K: a panel is PANEL rows of B, each read contiguously, and
     * nothing reads those rows again once the panel is written. */
    for (int64_t j = 0; j < p->n_panels; j++) {
      uint8_t *dst = panels + (size_t)j * (size_t)k * PANEL * esz;
      int64_t c0 = j * PANEL;
      int cols = (int)(n - c0 < PANEL ? n - c0 : PANEL);
      if (cols < PANEL) memset(dst, 0, (size_t)k * PANEL * esz);
      for (int c = 0; c < cols; c++) {
        const uint8_t *src = src0 + (size_t)(c0 + c) * (size_t)k * esz;
        if (esz == 4) {
          float *df = (float *)(void *)dst;
          const float *sf = (const float *)(const void *)src;
          for (int64_t kk = 0; kk < k; kk++) df[kk * PANEL + c] = sf[kk];
        } else {
          for (int64_t kk = 0; kk < k; kk++)
            copy_elem(dst + ((size_t)kk * PANEL + (size_t)c) * esz,
                      src + (size_t)kk * esz, esz);
        }
      }
      if (discard_source)
        discard_upto(&d, src0 + (size_t)(c0 + cols) * (size_t)k * esz);
    }
    return;
  }
  /* B is K x N: row kk of B is row kk of every panel; rows go in order, so
   * the rows already packed can be discarded as they are passed. */
  int64_t last = p->n_panels - 1, tail = n - last * PANEL;
  for (int64_t kk = 0; kk < k; kk++) {
    const uint8_t *src = src0 + (size_t)kk * (size_t)n * esz;
    for (int64_t j = 0; j < p->n_panels; j++) {
      uint8_t *dst =
          panels + ((size_t)j * (size_t)k + (size_t)kk) * PANEL * esz;
      int cols = j == last ? (int)tail : PANEL;
      memcpy(dst, src + (size_t)(j * PANEL) * esz, (size_t)cols * esz);
      if (cols < PANEL)
        memset(dst + (size_t)cols * esz, 0, (size_t)(PANEL - cols) * esz);
    }
    if (discard_source && ((kk + 1) % DISCARD_ROWS == 0 || kk + 1 == k))
      discard_upto(&d, src0 + (size_t)(kk + 1) * (size_t)n * esz);
  }
}

ts_gemm_packed *ts_gemm_pack(float *b, int64_t k, int64_t n, bool trans_b,
                             bool discard_source) {
  ts_gemm_packed *p = packed_new(b, TS_GEMM_F32, k, n);
  if (p) pack_panels(p, b, trans_b, discard_source);
  return p;
}

ts_gemm_packed *ts_gemm_pack_reduced(const void *b, ts_gemm_elem elem,
                                     const float *scales, int64_t n_scales,
                                     int64_t k, int64_t n, bool trans_b,
                                     bool discard_source) {
  ts_gemm_packed *p = packed_new(b, elem, k, n);
  if (!p) return NULL;
  if (elem == TS_GEMM_I8) {
    size_t cols = (size_t)p->n_panels * PANEL;
    p->scales = aligned_alloc(64, ((cols * sizeof(float)) + 63) & ~(size_t)63);
    if (!p->scales) {
      ts_gemm_packed_free(p);
      return NULL;
    }
    for (size_t j = 0; j < cols; j++)
      p->scales[j] = (int64_t)j >= n ? 0.0f : scales[n_scales == 1 ? 0 : j];
  }
  pack_panels(p, b, trans_b, discard_source);
  return p;
}

void ts_gemm_packed_free(ts_gemm_packed *p) {
  if (!p) return;
  if (p->mapped)
    munmap(p->panels, p->mapped);
  else
    free(p->panels);
  free(p->scales);
  free(p);
}

/* ---- plain C ------------------------------------------------------------- */

#define C_MR 4

/* One element of a panel row as a float, per panel type. */
#define LOAD_C_F32(row, c) (((const float *)(row))[c])
#define LOAD_C_F16(row, c) ts_half_to_float(((const uint16_t *)(row))[c])
#define LOAD_C_BF16(row, c) ts_bf16_to_float(((const uint16_t *)(row))[c])
#define LOAD_C_I8(row, c) ((float)((const int8_t *)(row))[c])

/* The C tile of a panel type T: each panel row is widened to floats once,
 * then multiplied into every row's accumulators; the column scale (int8)
 * applies to the finished sums. */
#define TILE_C(SUF, T, LOAD)                                                 \
  static void tile_c_##SUF(int mr, const float *a, int64_t lda,              \
                           const void *panel, int64_t k, float alpha,        \
                           const float *cscale, bool accumulate, float *y,   \
                           int64_t ldy, int ncols) {                         \
    float acc[C_MR][PANEL], brow[PANEL];                                     \
    const T *pb = panel;                                                     \
    memset(acc, 0, sizeof acc);                                              \
    for (int64_t kk = 0; kk < k; kk++) {                                     \
      for (int c = 0; c < PANEL; c++) brow[c] = LOAD(pb + kk * PANEL, c);    \
      for (int r = 0; r < mr; r++) {                                         \
        float av = a[r * lda + kk];                                          \
        for (int c = 0; c < PANEL; c++) acc[r][c] += av * brow[c];           \
      }                                                                      \
    }                                                                        \
    for (int r = 0; r < mr; r++) {                                           \
      float *yr = y + r * ldy;                                               \
      for (int c = 0; c < ncols; c++)                                        \
        yr[c] = (cscale ? alpha * cscale[c] : alpha) * acc[r][c] +           \
                (accumulate ? yr[c] : 0.0f);                                 \
    }                                                                        \
  }
TILE_C(f32, float, LOAD_C_F32)
TILE_C(f16, uint16_t, LOAD_C_F16)
TILE_C(bf16, uint16_t, LOAD_C_BF16)
TILE_C(i8, int8_t, LOAD_C_I8)

/* Expands the body of a tile function for every mr in [1, MR] so that each
 * copy has a constant row count: its loops over rows unroll and its
 * accumulators stay in registers. */
/* Row loops of the vector tiles are unrolled completely, whatever -O level
 * the build uses: an accumulator array indexed by a loop variable would
 * live in memory. */
#define ROWS_UNROLLED _Pragma("GCC unroll 8")

#define TILE_CASES_6(BODY, ...)        \
  case 1: BODY(1, __VA_ARGS__); break; \
  case 2: BODY(2, __VA_ARGS__); break; \
  case 3: BODY(3, __VA_ARGS__); break; \
  case 4: BODY(4, __VA_ARGS__); break; \
  case 5: BODY(5, __VA_ARGS__); break; \
  case 6: BODY(6, __VA_ARGS__); break;
#define TILE_CASES_8(BODY, ...)        \
  TILE_CASES_6(BODY, __VA_ARGS__)      \
  case 7: BODY(7, __VA_ARGS__); break; \
  case 8: BODY(8, __VA_ARGS__); break;

#ifdef TS_GEMM_X86

/* ---- AVX-512F: tiles of up to 8 rows x 32 columns (16 zmm accumulators) -- */

#define AVX512_MR 8

/* 16 elements of a panel row as floats, per panel type. */
#define LOAD512_F32(p) _mm512_load_ps(p)
#define LOAD512_F16(p) \
  _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define LOAD512_BF16(p)                                            \
  _mm512_castsi512_ps(_mm512_slli_epi32(                           \
      _mm512_cvtepu16_epi32(                                       \
          _mm256_loadu_si256((const __m256i *)(const void *)(p))), \
      16))
#define LOAD512_I8(p)     \
  _mm512_cvtepi32_ps(     \
      _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))))

#define TILE_AVX512(SUF, T, LOAD)                                              \
  static inline __attribute__((always_inline, target("avx512f"))) void        \
  tile_avx512_rows_##SUF(const int mr, const float *a, int64_t lda,           \
                         const void *panel, int64_t k, float alpha,           \
                         const float *cscale, bool accumulate, float *y,      \
                         int64_t ldy, int ncols) {                            \
    const T *pb = panel;                                                       \
    __m512 c0[AVX512_MR], c1[AVX512_MR];                                       \
    ROWS_UNROLLED                                                              \
    for (int r = 0; r < mr; r++) c0[r] = c1[r] = _mm512_setzero_ps();          \
    for (int64_t kk = 0; kk < k; kk++) {                                       \
      __m512 b0 = LOAD(pb + kk * PANEL);                                       \
      __m512 b1 = LOAD(pb + kk * PANEL + 16);                                  \
      ROWS_UNROLLED                                                            \
      for (int r = 0; r < mr; r++) {                                           \
        __m512 av = _mm512_set1_ps(a[r * lda + kk]);                           \
        c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);                                \
        c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);                                \
      }                                                                        \
    }                                                                          \
    __mmask16 m0 = ncols >= 16 ? 0xffff : (__mmask16)((1u << ncols) - 1);      \
    __mmask16 m1 = ncols >= 32   ? 0xffff                                      \
                   : ncols <= 16 ? 0                                           \
                                 : (__mmask16)((1u << (ncols - 16)) - 1);      \
    __m512 va0 = _mm512_set1_ps(alpha), va1 = va0;                             \
    if (cscale) {                                                              \
      va0 = _mm512_mul_ps(va0, _mm512_loadu_ps(cscale));                       \
      va1 = _mm512_mul_ps(va1, _mm512_loadu_ps(cscale + 16));                  \
    }                                                                          \
    ROWS_UNROLLED                                                              \
    for (int r = 0; r < mr; r++) {                                             \
      float *yr = y + r * ldy;                                                 \
      __m512 v0 = _mm512_mul_ps(va0, c0[r]), v1 = _mm512_mul_ps(va1, c1[r]);   \
      if (accumulate) {                                                        \
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, yr));                 \
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, yr + 16));            \
      }                                                                        \
      _mm512_mask_storeu_ps(yr, m0, v0);                                       \
      _mm512_mask_storeu_ps(yr + 16, m1, v1);                                  \
    }                                                                          \
  }                                                                            \
                                                                               \
  static __attribute__((target("avx512f"))) void tile_avx512_##SUF(            \
      int mr, const float *a, int64_t lda, const void *panel, int64_t k,       \
      float alpha, const float *cscale, bool accumulate, float *y,             \
      int64_t ldy, int ncols) {                                                \
    switch (mr) {                                                              \
      TILE_CASES_8(tile_avx512_rows_##SUF, a, lda, panel, k, alpha, cscale,    \
                   accumulate, y, ldy, ncols)                                  \
      default: break;                                                          \
    }                                                                          \
  }
TILE_AVX512(f32, float, LOAD512_F32)
TILE_AVX512(f16, uint16_t, LOAD512_F16)
TILE_AVX512(bf16, uint16_t, LOAD512_BF16)
TILE_AVX512(i8, int8_t, LOAD512_I8)

/* ---- AVX2 + FMA (+ F16C): tiles of up to 6 rows x 16 columns (12 ymm) --- */

#define AVX2_MR 6
#define AVX2_W 16

/* 8 elements of a panel row as floats, per panel type. */
#define LOAD256_F32(p) _mm256_load_ps(p)
#define LOAD256_F16(p) \
  _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define LOAD256_BF16(p)                                                  \
  _mm256_castsi256_ps(_mm256_slli_epi32(                                 \
      _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))), \
      16))
#define LOAD256_I8(p) \
  _mm256_cvtepi32_ps( \
      _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))

#define TILE_AVX2(SUF, T, LOAD)                                                \
  static inline                                                               \
      __attribute__((always_inline, target("avx2,fma,f16c"))) void            \
      tile_avx2_rows_##SUF(const int mr, const float *a, int64_t lda,         \
                           const void *panel, int64_t k, float alpha,         \
                           const float *cscale, bool accumulate, float *y,    \
                           int64_t ldy, int ncols) {                          \
    const T *pb = panel;                                                       \
    __m256 c0[AVX2_MR], c1[AVX2_MR];                                           \
    ROWS_UNROLLED                                                              \
    for (int r = 0; r < mr; r++) c0[r] = c1[r] = _mm256_setzero_ps();          \
    for (int64_t kk = 0; kk < k; kk++) {                                       \
      __m256 b0 = LOAD(pb + kk * PANEL);                                       \
      __m256 b1 = LOAD(pb + kk * PANEL + 8);                                   \
      ROWS_UNROLLED                                                            \
      for (int r = 0; r < mr; r++) {                                           \
        __m256 av = _mm256_broadcast_ss(a + r * lda + kk);                     \
        c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);                                \
        c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);                                \
      }                                                                        \
    }                                                                          \
    __m256 va0 = _mm256_set1_ps(alpha), va1 = va0;                             \
    if (cscale) {                                                              \
      va0 = _mm256_mul_ps(va0, _mm256_loadu_ps(cscale));                       \
      va1 = _mm256_mul_ps(va1, _mm256_loadu_ps(cscale + 8));                   \
    }                                                                          \
    ROWS_UNROLLED                                                              \
    for (int r = 0; r < mr; r++) {                                             \
      float *yr = y + r * ldy;                                                 \
      float tile[AVX2_W] __attribute__((aligned(32)));                         \
      float *dst = ncols == AVX2_W ? yr : tile;                                \
      __m256 v0 = _mm256_mul_ps(va0, c0[r]), v1 = _mm256_mul_ps(va1, c1[r]);   \
      if (accumulate && ncols == AVX2_W) {                                     \
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(yr));                           \
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(yr + 8));                       \
      }                                                                        \
      _mm256_storeu_ps(dst, v0);                                               \
      _mm256_storeu_ps(dst + 8, v1);                                           \
      if (dst == tile)                                                         \
        for (int c = 0; c < ncols; c++)                                        \
          yr[c] = tile[c] + (accumulate ? yr[c] : 0.0f);                       \
    }                                                                          \
  }                                                                            \
                                                                               \
  static __attribute__((target("avx2,fma,f16c"))) void tile_avx2_##SUF(        \
      int mr, const float *a, int64_t lda, const void *panel, int64_t k,       \
      float alpha, const float *cscale, bool accumulate, float *y,             \
      int64_t ldy, int ncols) {                                                \
    switch (mr) {                                                              \
      TILE_CASES_6(tile_avx2_rows_##SUF, a, lda, panel, k, alpha, cscale,      \
                   accumulate, y, ldy, ncols)                                  \
      default: break;                                                          \
    }                                                                          \
  }
TILE_AVX2(f32, float, LOAD256_F32)
TILE_AVX2(f16, uint16_t, LOAD256_F16)
TILE_AVX2(bf16, uint16_t, LOAD256_BF16)
TILE_AVX2(i8, int8_t, LOAD256_I8)

#endif /* TS_GEMM_X86 */

/* ---- dispatch ------------------------------------------------------------ */

/* Per ISA: its tile function per panel type, rows per tile and columns
 * per tile. */
#define TILES(isa) {tile_##isa##_f32, tile_##isa##_f16, tile_##isa##_bf16, \
                    tile_##isa##_i8}
static const struct {
  const char *name;
  tile_fn *tile[TS_GEMM_ELEM_COUNT];
  int mr, width;
} isas[TS_GEMM_ISA_COUNT] = {
    [TS_GEMM_ISA_C] = {"c", TILES(c), C_MR, PANEL},
#ifdef TS_GEMM_X86
    [TS_GEMM_ISA_AVX2] = {"avx2", TILES(avx2), AVX2_MR, AVX2_W},
    [TS_GEMM_ISA_AVX512] = {"avx512", TILES(avx512), AVX512_MR, PANEL},
#else
    [TS_GEMM_ISA_AVX2] = {"avx2", {NULL}, 0, 0},
    [TS_GEMM_ISA_AVX512] = {"avx512", {NULL}, 0, 0},
#endif
};
#undef TILES

#ifdef TS_GEMM_X86
/* F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports
 * does not know "f16c". */
static bool has_f16c(void) {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

bool ts_gemm_isa_supported(ts_gemm_isa isa) {
  switch (isa) {
    case TS_GEMM_ISA_C: return true;
#ifdef TS_GEMM_X86
    case TS_GEMM_ISA_AVX2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             has_f16c();
    case TS_GEMM_ISA_AVX512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f");
#endif
    default: return false;
  }
}

static ts_gemm_isa best_isa = TS_GEMM_ISA_C;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static void choose_best(void) {
  for (int i = TS_GEMM_ISA_COUNT - 1; i > TS_GEMM_ISA_C; i--)
    if (ts_gemm_isa_supported((ts_gemm_isa)i)) {
      best_isa = (ts_gemm_isa)i;
      return;
    }
}

ts_gemm_isa ts_gemm_isa_best(void) {
  pthread_once(&best_once, choose_best);
  return best_isa;
}

const char *ts_gemm_isa_name(ts_gemm_isa isa) {
  return isa >= 0 && isa < TS_GEMM_ISA_COUNT ? isas[isa].name : "?";
}

/* One product, and how a parallel run cuts it: row blocks of `rows` rows
 * times chunks of `panels` panels, task t being block t / n_chunks, chunk
 * t % n_chunks. Each output element belongs to exactly one task and is
 * computed as the serial loop computes it, so the team size never changes
 * a result. */
typedef struct product {
  const ts_gemm_packed *p;
  int64_t m, lda, ldy;
  const float *a;
  float *y;
  float alpha;
  bool accumulate, sgemm;
  ts_gemm_isa isa;
  int64_t rows, panels, n_chunks;
} product;

/* Rows [i0, i1) x panels [j0, j1) of the product with the ISA's tiles. */
static void part_tiles(const product *pr, int64_t i0, int64_t i1, int64_t j0,
                       int64_t j1) {
  const ts_gemm_packed *p = pr->p;
  tile_fn *tile = isas[pr->isa].tile[p->elem];
  int mr = isas[pr->isa].mr, width = isas[pr->isa].width;
  size_t esz = ts_gemm_elem_size(p->elem);
  for (int64_t j = j0; j < j1; j++) {
    const uint8_t *panel =
        (const uint8_t *)p->panels + (size_t)j * (size_t)p->k * PANEL * esz;
    for (int h = 0; h < PANEL && j * PANEL + h < p->n; h += width) {
      int64_t c0 = j * PANEL + h;
      int ncols = (int)(p->n - c0 < width ? p->n - c0 : width);
      const float *cscale = p->scales ? p->scales + c0 : NULL;
      for (int64_t i = i0; i < i1; i += mr) {
        int rows = (int)(i1 - i < mr ? i1 - i : mr);
        tile(rows, pr->a + i * pr->lda, pr->lda, panel + (size_t)h * esz, p->k,
             pr->alpha, cscale, pr->accumulate, pr->y + i * pr->ldy + c0,
             pr->ldy, ncols);
      }
    }
  }
}

/* Products of many rows: each panel is a K x PANEL row-major matrix, so
 * sgemm runs over it as B (ldb PANEL). Its own packing of a panel costs
 * K x PANEL against M x K x PANEL multiply-adds, small once M is large. */
static void part_sgemm(const product *pr, int64_t i0, int64_t i1, int64_t j0,
                       int64_t j1) {
  const ts_gemm_packed *p = pr->p;
  for (int64_t j = j0; j < j1; j++) {
    int64_t c0 = j * PANEL;
    int64_t cols = p->n - c0 < PANEL ? p->n - c0 : PANEL;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)(i1 - i0),
                (blasint)cols, (blasint)p->k, pr->alpha, pr->a + i0 * pr->lda,
                (blasint)pr->lda,
                (const float *)p->panels + (size_t)j * (size_t)p->k * PANEL,
                PANEL, pr->accumulate ? 1.0f : 0.0f, pr->y + i0 * pr->ldy + c0,
                (blasint)pr->ldy);
  }
}

static void part(const product *pr, int64_t i0, int64_t i1, int64_t j0,
                 int64_t j1) {
  if (i1 > pr->m) i1 = pr->m;
  if (j1 > pr->p->n_panels) j1 = pr->p->n_panels;
  if (i0 >= i1 || j0 >= j1) return;
  (pr->sgemm ? part_sgemm : part_tiles)(pr, i0, i1, j0, j1);
}

static void product_task(void *ctx, int64_t t, int slot) {
  (void)slot;
  const product *pr = ctx;
  int64_t rb = t / pr->n_chunks, pc = t % pr->n_chunks;
  part(pr, rb * pr->rows, (rb + 1) * pr->rows, pc * pr->panels,
       (pc + 1) * pr->panels);
}

/* Tasks per thread of the budget: some slack so that a slow thread does
 * not hold the region up. */
#define TASKS_PER_THREAD 4
/* Fewest rows in a row block of the sgemm path. */
#define MIN_BLOCK_ROWS 16

/* The cut depends on the budget, never on how many threads are free: the
 * same product is cut the same way under any load, so its bits do not
 * depend on the load (the small-M tiles would not care; sgemm's row blocks
 * might). */
static void run_product(product *pr) {
  const ts_gemm_packed *p = pr->p;
  int want = ts_parallel_want(pr->m * p->k * p->n_panels * PANEL);
  if (want <= 1) {
    part(pr, 0, pr->m, 0, p->n_panels);
    return;
  }
  int64_t target = (int64_t)want * TASKS_PER_THREAD, blocks = 1;
  if (pr->sgemm && p->n_panels < target) {
    blocks = (target + p->n_panels - 1) / p->n_panels;
    if (blocks > pr->m / MIN_BLOCK_ROWS) blocks = pr->m / MIN_BLOCK_ROWS;
    if (blocks < 1) blocks = 1;
  }
  int64_t chunks = (target + blocks - 1) / blocks;
  if (chunks > p->n_panels) chunks = p->n_panels;
  pr->rows = (pr->m + blocks - 1) / blocks;
  pr->panels = (p->n_panels + chunks - 1) / chunks;
  pr->n_chunks = (p->n_panels + pr->panels - 1) / pr->panels;
  blocks = (pr->m + pr->rows - 1) / pr->rows;
  ts_parallel_for(blocks * pr->n_chunks, want, product_task, pr);
}

void ts_gemm_packed_run_isa(ts_gemm_isa isa, const ts_gemm_packed *p,
                            int64_t m, const float *a, int64_t lda,
                            float alpha, bool accumulate, float *y,
                            int64_t ldy) {
  product pr = {.p = p, .m = m, .lda = lda, .ldy = ldy, .a = a, .y = y,
                .alpha = alpha, .accumulate = accumulate, .isa = isa};
  run_product(&pr);
}

void ts_gemm_packed_run(const ts_gemm_packed *p, int64_t m, const float *a,
                        int64_t lda, float alpha, bool accumulate, float *y,
                        int64_t ldy) {
  product pr = {.p = p, .m = m, .lda = lda, .ldy = ldy, .a = a, .y = y,
                .alpha = alpha, .accumulate = accumulate,
                .sgemm = m > TS_GEMM_PACKED_MAX_M && p->k > 0 &&
                         p->elem == TS_GEMM_F32,
                .isa = ts_gemm_isa_best()};
  run_product(&pr);
}
