/*
 * test_parallel.c - the kernel budget's helper threads (parallel.h) and the
 * packed products split over them.
 *
 * A region runs every task exactly once, on slots inside its team, never
 * more threads than the budget at once, and a region inside a task runs on
 * its caller alone; a thread that entered holds a place, so helpers come
 * only from places nobody holds. Then packed products big enough to be
 * split (small-M tiles and sgemm over panels with row blocks) are checked
 * against a float64 naive product with a budget of 1 and of 4 threads, and
 * the small-M tiles give the same bits with both.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check_main.h"
#include "gemm_packed.h"
#include "kernel_check.h"
#include "parallel.h"

#define N_TASKS 1000

typedef struct count_ctx {
  atomic_int runs[N_TASKS];
  atomic_int running, most_running;
  int team;
  atomic_int bad_slot;
  bool nest;
  atomic_int nested_tasks;
} count_ctx;

static void nested_task(void *ctx, int64_t t, int slot) {
  count_ctx *c = ctx;
  (void)t;
  if (slot != 0) atomic_fetch_add(&c->bad_slot, 1);
  atomic_fetch_add(&c->nested_tasks, 1);
}

static void count_task(void *ctx, int64_t t, int slot) {
  count_ctx *c = ctx;
  atomic_fetch_add(&c->runs[t], 1);
  if (slot < 0 || slot >= c->team) atomic_fetch_add(&c->bad_slot, 1);
  int now = atomic_fetch_add(&c->running, 1) + 1;
  int most = atomic_load(&c->most_running);
  while (now > most && !atomic_compare_exchange_weak(&c->most_running, &most,
                                                     now)) {
  }
  struct timespec nap = {0, 20000};
  nanosleep(&nap, NULL); /* let the helpers get some */
  if (c->nest) ts_parallel_for(3, 4, nested_task, c);
  atomic_fetch_sub(&c->running, 1);
}

/* Every task once, slots within the team, at most the budget at once. */
START_TEST(tasks_run_once) {
  ck_assert_int_eq(ts_parallel_set_threads(4), 4);
  ck_assert_int_eq(ts_parallel_threads(), 4);
  for (int round = 0; round < 20; round++) {
    count_ctx *c = calloc(1, sizeof *c);
    ck_assert_ptr_nonnull(c);
    c->nest = round % 2 == 1;
    ts_parallel_team team;
    ts_parallel_reserve(&team, 8);
    /* Nobody else holds a place: the caller and all 3 helpers. */
    ck_assert_int_eq(team.size, 4);
    c->team = team.size;
    ts_parallel_run(&team, N_TASKS, count_task, c);
    for (int t = 0; t < N_TASKS; t++)
      ck_assert_msg(atomic_load(&c->runs[t]) == 1, "task %d ran %d times", t,
                    atomic_load(&c->runs[t]));
    ck_assert_int_eq(atomic_load(&c->bad_slot), 0);
    ck_assert_int_le(atomic_load(&c->most_running), 4);
    if (c->nest) ck_assert_int_eq(atomic_load(&c->nested_tasks), 3 * N_TASKS);
    free(c);
  }
  ts_parallel_set_threads(1);
}
END_TEST

/* Budget 1: no helper at all; a region runs on its caller. */
START_TEST(budget_one_runs_alone) {
  ts_parallel_set_threads(1);
  ts_parallel_team team;
  ts_parallel_reserve(&team, 16);
  ck_assert_int_eq(team.size, 1);
  count_ctx *c = calloc(1, sizeof *c);
  ck_assert_ptr_nonnull(c);
  c->team = 1;
  ts_parallel_run(&team, 50, count_task, c);
  for (int t = 0; t < 50; t++) ck_assert_int_eq(atomic_load(&c->runs[t]), 1);
  ck_assert_int_eq(atomic_load(&c->most_running), 1);
  free(c);
  ck_assert_int_eq(ts_parallel_want((int64_t)1 << 40), 1);
}
END_TEST

/* Threads that entered hold their places: with 2 of a budget of 3 held by
 * entered threads, an entered caller gets no helper, then one once a place
 * is given back; a released team's places are free again. */
typedef struct holder {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int state; /* 0 start, 1 entered, 2 may leave, 3 left */
} holder;

static void *hold_place(void *arg) {
  holder *h = arg;
  ts_parallel_enter();
  pthread_mutex_lock(&h->mu);
  h->state = 1;
  pthread_cond_broadcast(&h->cv);
  while (h->state != 2) pthread_cond_wait(&h->cv, &h->mu);
  pthread_mutex_unlock(&h->mu);
  ts_parallel_leave();
  pthread_mutex_lock(&h->mu);
  h->state = 3;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static void wait_state(holder *h, int state) {
  pthread_mutex_lock(&h->mu);
  while (h->state != state) pthread_cond_wait(&h->cv, &h->mu);
  pthread_mutex_unlock(&h->mu);
}

START_TEST(entered_threads_hold_places) {
  ck_assert_int_eq(ts_parallel_set_threads(3), 3);
  ts_parallel_enter();
  holder h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, hold_place, &h), 0);
  wait_state(&h, 1);
  ts_parallel_team team;
  ts_parallel_reserve(&team, 3);
  ck_assert_int_eq(team.size, 2); /* 3 places: me, the holder, one helper */
  ts_parallel_team none;
  ts_parallel_reserve(&none, 3);
  ck_assert_int_eq(none.size, 1); /* all 3 held now */
  ts_parallel_release(&team);
  pthread_mutex_lock(&h.mu);
  h.state = 2;
  pthread_cond_broadcast(&h.cv);
  pthread_mutex_unlock(&h.mu);
  wait_state(&h, 3);
  pthread_join(th, NULL);
  ts_parallel_reserve(&team, 3);
  ck_assert_int_eq(team.size, 3);
  ts_parallel_release(&team);
  ts_parallel_leave();
  ts_parallel_set_threads(1);
}
END_TEST

/* ---- packed products over the budget ------------------------------------- */

static float *rand_floats(kc_rng *r, int64_t count) {
  float *x = malloc((size_t)count * sizeof *x);
  ck_assert_ptr_nonnull(x);
  for (int64_t i = 0; i < count; i++) x[i] = (float)kc_uniform(r, -1, 1);
  return x;
}

/* Y = A . B with budgets 1 and 4, both within tolerance of the float64
 * product; on the small-M tiles (same_bits) also the same bits: a tile's
 * sum runs in the same order on any thread. (sgemm's row blocks may not:
 * OpenBLAS picks other kernels for fewer rows, so there the cut, and thus
 * the bits, follow the budget, never the load.) */
static void check_split(kc_rng *r, int64_t m, int64_t n, int64_t k,
                        bool trans_b, bool same_bits) {
  float *a = rand_floats(r, m * k), *b = rand_floats(r, n * k);
  float *y1 = calloc((size_t)(m * n), sizeof *y1);
  float *y4 = calloc((size_t)(m * n), sizeof *y4);
  ck_assert(y1 && y4);
  ts_gemm_packed *p = ts_gemm_pack(b, k, n, trans_b, false);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_gt(m * k * n / TS_PARALLEL_GRAIN, 1); /* it is split */
  ts_parallel_set_threads(1);
  ts_gemm_packed_run(p, m, a, k, 1.0f, false, y1, n);
  ck_assert_int_eq(ts_parallel_set_threads(4), 4);
  ts_gemm_packed_run(p, m, a, k, 1.0f, false, y4, n);
  ts_parallel_set_threads(1);
  double *ref = malloc((size_t)(m * n) * sizeof *ref);
  ck_assert_ptr_nonnull(ref);
  kc_gemm_ref(m, n, k, a, k, b, trans_b, 1.0f, false, NULL, n, ref);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = ref[i * n + j];
      float g1 = y1[i * n + j], g4 = y4[i * n + j];
      ck_assert_msg(!same_bits || memcmp(&g1, &g4, sizeof g1) == 0,
                    "m=%lld n=%lld k=%lld y[%lld][%lld]: 1 thread %.9g, "
                    "4 threads %.9g",
                    (long long)m, (long long)n, (long long)k, (long long)i,
                    (long long)j, g1, g4);
      ck_assert_msg(fabs(g1 - s) <= 1e-4 + 1e-4 * fabs(s) &&
                        fabs(g4 - s) <= 1e-4 + 1e-4 * fabs(s),
                    "m=%lld n=%lld k=%lld y[%lld][%lld] = %.7g / %.7g (1 / 4 "
                    "threads), want %.7g",
                    (long long)m, (long long)n, (long long)k, (long long)i,
                    (long long)j, g1, g4, s);
    }
  free(ref);
  ts_gemm_packed_free(p);
  free(a), free(b), free(y1), free(y4);
}

START_TEST(packed_same_bits_any_budget) {
  kc_rng r = kc_rng_seed(77);
  check_split(&r, 1, 1000, 700, false, true); /* batch 1: panels split */
  check_split(&r, 7, 517, 300, true, true);   /* tail panel */
  check_split(&r, 40, 300, 250, false, false); /* sgemm: panels and rows */
  check_split(&r, 200, 40, 300, true, false);  /* sgemm: 2 panels, rows */
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "parallel", 120, NULL, NULL, tasks_run_once,
                budget_one_runs_alone, entered_threads_hold_places,
                packed_same_bits_any_budget);
}

const ts_check_suite ts_check_this_suite = {.name = "parallel",
                                            .cases = cases};
