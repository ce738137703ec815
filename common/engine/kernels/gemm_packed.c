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
 *  - panels are 64-byte aligned and each panel row starts on a 64-byte
 *    boundary (TS_GEMM_PANEL floats = 128 bytes), so the vector kernels use
 *    aligned loads; padding columns are zero and are never stored to Y;
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

#if defined(__x86_64__) || defined(__i386__)
#define TS_GEMM_X86 1
#include <immintrin.h>
#endif

#define PANEL TS_GEMM_PANEL

/* Y tile = alpha * acc + (accumulate ? Y : 0): the one store rule every
 * version applies, written out per ISA for its registers. A tile function
 * computes rows [0, mr) and columns [0, ncols) of a tile whose B columns
 * start at `panel` (row stride PANEL floats). */
typedef void tile_fn(int mr, const float *a, int64_t lda, const float *panel,
                     int64_t k, float alpha, bool accumulate, float *y,
                     int64_t ldy, int ncols);

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

ts_gemm_packed *ts_gemm_pack(float *b, int64_t k, int64_t n, bool trans_b,
                             bool discard_source) {
  ts_gemm_packed *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->k = k;
  p->n = n;
  p->n_panels = (n + PANEL - 1) / PANEL;
  p->source = b;
  size_t floats = (size_t)p->n_panels * (size_t)k * PANEL;
  size_t bytes = floats ? floats * sizeof(float) : 64;
  if (bytes >= MAP_MIN_BYTES) {
    /* Pages of its own, faulted in as packing writes them: a malloc'd
     * block may be filled at once (MALLOC_PERTURB_, debugging allocators),
     * holding the whole copy beside the whole source. */
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p->panels = map == MAP_FAILED ? NULL : map;
    p->mapped = p->panels ? bytes : 0;
  } else {
    /* aligned_alloc wants a multiple of the alignment; PANEL floats are. */
    p->panels = aligned_alloc(64, bytes);
  }
  if (!p->panels) {
    free(p);
    return NULL;
  }
  discarder d = discarder_for(b, (size_t)k * (size_t)n * sizeof *b);
  if (trans_b) {
    /* B is N x K: a panel is PANEL rows of B, each read contiguously, and
     * nothing reads those rows again once the panel is written. */
    for (int64_t j = 0; j < p->n_panels; j++) {
      float *dst = p->panels + (size_t)j * (size_t)k * PANEL;
      int64_t c0 = j * PANEL;
      int cols = (int)(n - c0 < PANEL ? n - c0 : PANEL);
      if (cols < PANEL) memset(dst, 0, (size_t)k * PANEL * sizeof *dst);
      for (int c = 0; c < cols; c++) {
        const float *src = b + (size_t)(c0 + c) * (size_t)k;
        for (int64_t kk = 0; kk < k; kk++) dst[kk * PANEL + c] = src[kk];
      }
      if (discard_source) discard_upto(&d, b + (size_t)(c0 + cols) * (size_t)k);
    }
    return p;
  }
  /* B is K x N: row kk of B is row kk of every panel; rows go in order, so
   * the rows already packed can be discarded as they are passed. */
  int64_t last = p->n_panels - 1, tail = n - last * PANEL;
  for (int64_t kk = 0; kk < k; kk++) {
    const float *src = b + (size_t)kk * (size_t)n;
    for (int64_t j = 0; j < p->n_panels; j++) {
      float *dst = p->panels + ((size_t)j * (size_t)k + (size_t)kk) * PANEL;
      int cols = j == last ? (int)tail : PANEL;
      memcpy(dst, src + j * PANEL, (size_t)cols * sizeof *dst);
      if (cols < PANEL) memset(dst + cols, 0, (size_t)(PANEL - cols) * 4);
    }
    if (discard_source && ((kk + 1) % DISCARD_ROWS == 0 || kk + 1 == k))
      discard_upto(&d, b + (size_t)(kk + 1) * (size_t)n);
  }
  return p;
}

void ts_gemm_packed_free(ts_gemm_packed *p) {
  if (!p) return;
  if (p->mapped)
    munmap(p->panels, p->mapped);
  else
    free(p->panels);
  free(p);
}

/* ---- plain C ------------------------------------------------------------- */

#define C_MR 4

static void tile_c(int mr, const float *a, int64_t lda, const float *panel,
                   int64_t k, float alpha, bool accumulate, float *y,
                   int64_t ldy, int ncols) {
  float acc[C_MR][PANEL];
  memset(acc, 0, sizeof acc);
  for (int64_t kk = 0; kk < k; kk++) {
    const float *brow = panel + kk * PANEL;
    for (int r = 0; r < mr; r++) {
      float av = a[r * lda + kk];
      for (int c = 0; c < PANEL; c++) acc[r][c] += av * brow[c];
    }
  }
  for (int r = 0; r < mr; r++) {
    float *yr = y + r * ldy;
    for (int c = 0; c < ncols; c++)
      yr[c] = alpha * acc[r][c] + (accumulate ? yr[c] : 0.0f);
  }
}

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

static inline __attribute__((always_inline, target("avx512f"))) void
tile_avx512_rows(const int mr, const float *a, int64_t lda, const float *panel,
                 int64_t k, float alpha, bool accumulate, float *y,
                 int64_t ldy, int ncols) {
  __m512 c0[AVX512_MR], c1[AVX512_MR];
  ROWS_UNROLLED
  for (int r = 0; r < mr; r++) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < k; kk++) {
    __m512 b0 = _mm512_load_ps(panel + kk * PANEL);
    __m512 b1 = _mm512_load_ps(panel + kk * PANEL + 16);
    ROWS_UNROLLED
    for (int r = 0; r < mr; r++) {
      __m512 av = _mm512_set1_ps(a[r * lda + kk]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
  __mmask16 m0 = ncols >= 16 ? 0xffff : (__mmask16)((1u << ncols) - 1);
  __mmask16 m1 = ncols >= 32   ? 0xffff
                 : ncols <= 16 ? 0
                               : (__mmask16)((1u << (ncols - 16)) - 1);
  __m512 va = _mm512_set1_ps(alpha);
  ROWS_UNROLLED
  for (int r = 0; r < mr; r++) {
    float *yr = y + r * ldy;
    __m512 v0 = _mm512_mul_ps(va, c0[r]), v1 = _mm512_mul_ps(va, c1[r]);
    if (accumulate) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, yr));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, yr + 16));
    }
    _mm512_mask_storeu_ps(yr, m0, v0);
    _mm512_mask_storeu_ps(yr + 16, m1, v1);
  }
}

static __attribute__((target("avx512f"))) void tile_avx512(
    int mr, const float *a, int64_t lda, const float *panel, int64_t k,
    float alpha, bool accumulate, float *y, int64_t ldy, int ncols) {
  switch (mr) {
    TILE_CASES_8(tile_avx512_rows, a, lda, panel, k, alpha, accumulate, y,
                 ldy, ncols)
    default: break;
  }
}

/* ---- AVX2 + FMA: tiles of up to 6 rows x 16 columns (12 ymm accumulators) */

#define AVX2_MR 6
#define AVX2_W 16

static inline __attribute__((always_inline, target("avx2,fma"))) void
tile_avx2_rows(const int mr, const float *a, int64_t lda, const float *panel,
               int64_t k, float alpha, bool accumulate, float *y, int64_t ldy,
               int ncols) {
  __m256 c0[AVX2_MR], c1[AVX2_MR];
  ROWS_UNROLLED
  for (int r = 0; r < mr; r++) c0[r] = c1[r] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < k; kk++) {
    __m256 b0 = _mm256_load_ps(panel + kk * PANEL);
    __m256 b1 = _mm256_load_ps(panel + kk * PANEL + 8);
    ROWS_UNROLLED
    for (int r = 0; r < mr; r++) {
      __m256 av = _mm256_broadcast_ss(a + r * lda + kk);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
  __m256 va = _mm256_set1_ps(alpha);
  ROWS_UNROLLED
  for (int r = 0; r < mr; r++) {
    float *yr = y + r * ldy;
    float tile[AVX2_W] __attribute__((aligned(32)));
    float *dst = ncols == AVX2_W ? yr : tile;
    __m256 v0 = _mm256_mul_ps(va, c0[r]), v1 = _mm256_mul_ps(va, c1[r]);
    if (accumulate && ncols == AVX2_W) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(yr));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(yr + 8));
    }
    _mm256_storeu_ps(dst, v0);
    _mm256_storeu_ps(dst + 8, v1);
    if (dst == tile)
      for (int c = 0; c < ncols; c++)
        yr[c] = tile[c] + (accumulate ? yr[c] : 0.0f);
  }
}

static __attribute__((target("avx2,fma"))) void tile_avx2(
    int mr, const float *a, int64_t lda, const float *panel, int64_t k,
    float alpha, bool accumulate, float *y, int64_t ldy, int ncols) {
  switch (mr) {
    TILE_CASES_6(tile_avx2_rows, a, lda, panel, k, alpha, accumulate, y, ldy,
                 ncols)
    default: break;
  }
}

#endif /* TS_GEMM_X86 */

/* ---- dispatch ------------------------------------------------------------ */

/* Per ISA: its tile function, rows per tile and columns per tile. */
static const struct {
  const char *name;
  tile_fn *tile;
  int mr, width;
} isas[TS_GEMM_ISA_COUNT] = {
    [TS_GEMM_ISA_C] = {"c", tile_c, C_MR, PANEL},
#ifdef TS_GEMM_X86
    [TS_GEMM_ISA_AVX2] = {"avx2", tile_avx2, AVX2_MR, AVX2_W},
    [TS_GEMM_ISA_AVX512] = {"avx512", tile_avx512, AVX512_MR, PANEL},
#else
    [TS_GEMM_ISA_AVX2] = {"avx2", NULL, 0, 0},
    [TS_GEMM_ISA_AVX512] = {"avx512", NULL, 0, 0},
#endif
};

bool ts_gemm_isa_supported(ts_gemm_isa isa) {
  switch (isa) {
    case TS_GEMM_ISA_C: return true;
#ifdef TS_GEMM_X86
    case TS_GEMM_ISA_AVX2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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
  tile_fn *tile = isas[pr->isa].tile;
  int mr = isas[pr->isa].mr, width = isas[pr->isa].width;
  for (int64_t j = j0; j < j1; j++) {
    const float *panel = p->panels + (size_t)j * (size_t)p->k * PANEL;
    for (int h = 0; h < PANEL && j * PANEL + h < p->n; h += width) {
      int64_t c0 = j * PANEL + h;
      int ncols = (int)(p->n - c0 < width ? p->n - c0 : width);
      for (int64_t i = i0; i < i1; i += mr) {
        int rows = (int)(i1 - i < mr ? i1 - i : mr);
        tile(rows, pr->a + i * pr->lda, pr->lda, panel + h, p->k, pr->alpha,
             pr->accumulate, pr->y + i * pr->ldy + c0, pr->ldy, ncols);
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
                (blasint)pr->lda, p->panels + (size_t)j * (size_t)p->k * PANEL,
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
                .sgemm = m > TS_GEMM_PACKED_MAX_M && p->k > 0,
                .isa = ts_gemm_isa_best()};
  run_product(&pr);
}
