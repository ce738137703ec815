/*
 * pool.h - the worker's kernel threads: a fixed budget of N threads, each
 * with its own ts_session, fed from one bounded FIFO queue.
 *
 * OpenBLAS is set to one thread, so N kernel threads use exactly N cores;
 * the budget is never exceeded by BLAS's own threads. The N threads are
 * shared by requests: a job holds one place of the engine's kernel budget
 * (common/engine/parallel.h) while it runs, and its big ops (Gemm, MatMul,
 * Conv) borrow the places of idle kernel threads, so a lone request runs
 * on all N cores and N concurrent requests on one each.
 *
 * Jobs are intrusive (the caller embeds a ts_pool_job in its own request
 * state), so submitting allocates nothing. Every submitted job gets exactly
 * one of its two callbacks, on a pool thread (or, for jobs still queued when
 * ts_pool_cancel_queued() runs, on the caller's thread):
 *  - run(), when a thread picks it up in time;
 *  - skip(code), instead of run, when its deadline passed (TS_ETIMEDOUT),
 *    its caller gave up (TS_ECANCELLED: seen by is_cancelled when a thread
 *    picks it up, or at once through ts_pool_cancel) or the pool is
 *    stopping (TS_EUNAVAILABLE). A skipped job never ran.
 * After either callback the pool does not touch the job again.
 */
#ifndef TS_WORKER_POOL_H
#define TS_WORKER_POOL_H

#include <stdint.h>

#include "error.h"
#include "exec.h"

typedef struct ts_pool ts_pool;
typedef struct ts_pool_job ts_pool_job;

struct ts_pool_job {
  void (*run)(ts_pool_job *job, ts_session *session);
  void (*skip)(ts_pool_job *job, int code, const char *why);
  /* Optional: nonzero once nobody waits for the answer any more. */
  int (*is_cancelled)(ts_pool_job *job);
  int64_t deadline; /* absolute ts_now_ms(); TS_DEADLINE_NONE for none */
  ts_pool_job *next; /* the pool's, while queued */
};

/* Starts `threads` kernel threads (each creates its session first) with a
 * queue of at most queue_capacity waiting jobs. */
int ts_pool_create(int threads, int queue_capacity, ts_pool **out,
                   ts_err *err);
/* Queues a job. TS_EEXHAUSTED when the queue is full, TS_EUNAVAILABLE once
 * the pool is closed; then no callback will run and the caller still owns
 * the job. */
int ts_pool_submit(ts_pool *p, ts_pool_job *job, ts_err *err);
/* Refuses further submissions; queued and running jobs go on. */
void ts_pool_close(ts_pool *p);
/* Waits until no job is queued or running, or until deadline (absolute
 * ts_now_ms()). 0 when idle, TS_ETIMEDOUT otherwise. */
int ts_pool_wait_idle(ts_pool *p, int64_t deadline);
/* Waits until no job was submitted for quiet_ms and none is queued or
 * running, or until deadline (absolute ts_now_ms()). 0 when quiet,
 * TS_ETIMEDOUT otherwise. A leaving worker uses it to see that the
 * coordinator stopped sending it work. */
int ts_pool_wait_quiet(ts_pool *p, int64_t quiet_ms, int64_t deadline);
/* Takes `job` out of the queue if it is still there and skips it with
 * TS_ECANCELLED and `why` on this thread; returns 1 then, 0 when the job is
 * not queued (running, finished, or never submitted: nothing happens). */
int ts_pool_cancel(ts_pool *p, ts_pool_job *job, const char *why);
/* Skips every queued job with TS_EUNAVAILABLE (on this thread). */
void ts_pool_cancel_queued(ts_pool *p);
void ts_pool_stats(ts_pool *p, int *threads, int *queued, int *running);
/* Closes, skips what is still queued, joins the threads (running jobs
 * finish first) and frees the sessions and the pool. */
void ts_pool_free(ts_pool *p);

#endif
