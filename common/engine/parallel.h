/*
 * parallel.h - intra-op parallelism: one kernel's work split over a
 * process-wide budget of kernel threads.
 *
 * The budget is B threads (ts_parallel_set_threads; 1, the default, means
 * every kernel runs on its caller alone). The process keeps B - 1 helper
 * threads, started once and asleep when unused; a kernel borrows idle ones
 * for one parallel region and gives them back when the region ends, and the
 * calling thread always takes part, so no thread is created per call.
 *
 * The budget is shared by requests (the worker's policy, worker/pool.c):
 *  - a thread that runs a request holds one of the B places for the
 *    request's whole run (ts_parallel_enter / ts_parallel_leave); a helper
 *    holds one only while it works in a region;
 *  - a region gets as helpers only places nobody holds and nobody waits
 *    for: a lone request gets all B threads for each of its big ops, B
 *    concurrent requests get one thread each, and a request that arrives
 *    while helpers work waits in ts_parallel_enter at most until the region
 *    they work in ends (one op), before any later region takes them again;
 *  - so at most B threads run kernels at any moment. A thread that never
 *    entered (tests, benches, the coordinator's constant folding) is
 *    counted as holding a place for the region's duration.
 * OpenBLAS runs single-threaded inside this budget (ts_blas_set_threads(1)):
 * a region's tasks may call cblas_sgemm, each on its own thread.
 *
 * Regions do not nest: a region started inside a region's task runs on its
 * caller alone. Results never depend on the team size as long as each
 * output element is computed by one task with the same order of operations
 * as the serial loop (every kernel here splits that way).
 */
#ifndef TS_PARALLEL_H
#define TS_PARALLEL_H

#include <stdint.h>

/* Most threads of a budget. */
#define TS_PARALLEL_MAX_THREADS 256

/* One task of a region: `task` in [0, n_tasks), `slot` in [0, team size)
 * names the thread that runs it (0: the caller), for per-thread scratch. */
typedef void ts_parallel_fn(void *ctx, int64_t task, int slot);

/* A team reserved for one region: the caller plus `size - 1` helpers. */
typedef struct ts_parallel_team {
  int size;
  int first_helper; /* the reserved helpers, linked; -1: none */
} ts_parallel_team;

/* Sets the budget to `threads` (clamped to [1, TS_PARALLEL_MAX_THREADS]) and
 * starts the helpers it needs that are not running yet (helpers are never
 * stopped; a smaller budget leaves the extra ones asleep). Returns the
 * budget in force: fewer than asked when a helper thread cannot start.
 * Call it when no region runs (start-up, between tests). */
int ts_parallel_set_threads(int threads);
/* The budget. */
int ts_parallel_threads(void);

/* Multiply-adds (or comparable steps) one more thread must get to be worth
 * waking: its wake-up costs microseconds; this is ~10-20 us on one core. */
#define TS_PARALLEL_GRAIN ((int64_t)1 << 18)

/* How many threads a kernel of `work` steps should ask for: work /
 * TS_PARALLEL_GRAIN, within [1, the budget]. Kernels cut their work by
 * this number, not by the team they get, so that a result's bits do not
 * depend on how busy the process is. */
int ts_parallel_want(int64_t work);

/* A request thread takes its place in the budget for a run, waiting while
 * all B are held; ts_parallel_leave gives it back. Not nested. */
void ts_parallel_enter(void);
void ts_parallel_leave(void);

/* Reserves a team of at most `want` threads (the caller included) from the
 * places free now; always at least the caller (size 1). The caller may then
 * size per-slot scratch by team->size before it runs the region. */
void ts_parallel_reserve(ts_parallel_team *team, int want);
/* Runs fn(ctx, task, slot) for every task in [0, n_tasks) on the team (the
 * caller takes part; tasks are handed out in order, one at a time), returns
 * once all have run, and gives the helpers back. */
void ts_parallel_run(ts_parallel_team *team, int64_t n_tasks,
                     ts_parallel_fn *fn, void *ctx);
/* Gives a reserved team back without running anything. */
void ts_parallel_release(ts_parallel_team *team);
/* ts_parallel_reserve + ts_parallel_run. */
void ts_parallel_for(int64_t n_tasks, int want, ts_parallel_fn *fn, void *ctx);

#endif
