/*
 * test_pool.c - the worker's kernel threads (worker/pool.c) in-process:
 * every submitted job gets exactly one callback; run() with its thread's
 * session; skip() with TS_ETIMEDOUT for a deadline that passed in the
 * queue, TS_ECANCELLED for a caller that gave up (seen when a thread picks
 * it, or at once through ts_pool_cancel), TS_EUNAVAILABLE for what is queued
 * when the pool stops; a full queue is TS_EEXHAUSTED and a closed pool
 * TS_EUNAVAILABLE, with no callback; idle and quiet waits; the counts. The
 * jobs only record what happened; a "gate" job holds the one kernel thread
 * until the test opens it, so what queues behind it is under control.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "check_main.h"
#include "pool.h"
#include "rpc.h"

typedef struct job {
  ts_pool_job base; /* first: the pool hands this back */
  atomic_int runs, skips;
  int code;
  ts_session *session;
  atomic_int cancelled;
  atomic_int *gate; /* run() waits until *gate != 0 */
} job;

static void job_run(ts_pool_job *j, ts_session *session) {
  job *t = (job *)j;
  t->session = session;
  while (t->gate && !atomic_load(t->gate)) {
    struct timespec nap = {0, 1000000L};
    nanosleep(&nap, NULL);
  }
  atomic_fetch_add(&t->runs, 1);
}

static void job_skip(ts_pool_job *j, int code, const char *why) {
  job *t = (job *)j;
  ck_assert_ptr_nonnull(why);
  t->code = code;
  atomic_fetch_add(&t->skips, 1);
}

static int job_is_cancelled(ts_pool_job *j) {
  return atomic_load(&((job *)j)->cancelled);
}

static void job_init(job *t, int64_t deadline) {
  memset(t, 0, sizeof *t);
  t->base.run = job_run;
  t->base.skip = job_skip;
  t->base.is_cancelled = job_is_cancelled;
  t->base.deadline = deadline;
}

static ts_pool *pool;
static atomic_int gate_open;
static job gate;

/* One kernel thread, a queue of 3, and the thread held by the gate job. */
static void setup(void) {
  ts_err err;
  ck_assert_int_eq(ts_pool_create(1, 3, &pool, &err), TS_OK);
  atomic_store(&gate_open, 0);
  job_init(&gate, TS_DEADLINE_NONE);
  gate.gate = &gate_open;
  ck_assert_int_eq(ts_pool_submit(pool, &gate.base, &err), TS_OK);
  int running = 0;
  for (int i = 0; i < 5000 && running == 0; i++) {
    ts_pool_stats(pool, NULL, NULL, &running);
    struct timespec nap = {0, 1000000L};
    nanosleep(&nap, NULL);
  }
  ck_assert_int_eq(running, 1);
}

static void teardown(void) {
  atomic_store(&gate_open, 1);
  ts_pool_free(pool);
}

/* Queues j[0..n) behind the gate, each with `deadline`. */
static void submit_jobs(job *j, int n, int64_t deadline) {
  ts_err err;
  for (int i = 0; i < n; i++) {
    job_init(&j[i], deadline);
    ck_assert_int_eq(ts_pool_submit(pool, &j[i].base, &err), TS_OK);
  }
}

static void open_gate_and_wait(void) {
  atomic_store(&gate_open, 1);
  ck_assert_int_eq(ts_pool_wait_idle(pool, ts_now_ms() + 10000), TS_OK);
}

START_TEST(bad_sizes) {
  ts_pool *p;
  ts_err err;
  ck_assert_int_eq(ts_pool_create(0, 1, &p, &err), TS_EINVAL);
  ck_assert_int_eq(ts_pool_create(1, 0, &p, &err), TS_EINVAL);
  ck_assert_ptr_null(p);
}
END_TEST

START_TEST(runs_in_order_with_a_session) {
  job j[3];
  submit_jobs(j, 3, ts_now_ms() + 60000);
  int threads, queued, running;
  ts_pool_stats(pool, &threads, &queued, &running);
  ck_assert_int_eq(threads, 1);
  ck_assert_int_eq(queued, 3);
  ck_assert_int_eq(running, 1);
  ck_assert_int_eq(ts_pool_wait_idle(pool, ts_now_ms() + 50), TS_ETIMEDOUT);
  open_gate_and_wait();
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(atomic_load(&j[i].runs), 1);
    ck_assert_int_eq(atomic_load(&j[i].skips), 0);
    ck_assert_ptr_nonnull(j[i].session);
    ck_assert_ptr_eq(j[i].session, gate.session); /* the one thread's */
  }
}
END_TEST

START_TEST(full_queue_and_closed_pool) {
  job j[5];
  ts_err err;
  submit_jobs(j, 3, TS_DEADLINE_NONE);
  job_init(&j[3], TS_DEADLINE_NONE);
  ck_assert_int_eq(ts_pool_submit(pool, &j[3].base, &err), TS_EEXHAUSTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "queue is full"));
  ts_pool_close(pool);
  job_init(&j[4], TS_DEADLINE_NONE);
  ck_assert_int_eq(ts_pool_submit(pool, &j[4].base, &err), TS_EUNAVAILABLE);
  open_gate_and_wait(); /* what was queued still runs */
  for (int i = 0; i < 3; i++) ck_assert_int_eq(atomic_load(&j[i].runs), 1);
  for (int i = 3; i < 5; i++) {
    ck_assert_int_eq(atomic_load(&j[i].runs), 0);
    ck_assert_int_eq(atomic_load(&j[i].skips), 0);
  }
}
END_TEST

START_TEST(deadline_and_cancellation_in_the_queue) {
  job late, gone, fine;
  ts_err err;
  job_init(&late, ts_now_ms() + 20);
  job_init(&gone, TS_DEADLINE_NONE);
  job_init(&fine, ts_now_ms() + 60000);
  ck_assert_int_eq(ts_pool_submit(pool, &late.base, &err), TS_OK);
  ck_assert_int_eq(ts_pool_submit(pool, &gone.base, &err), TS_OK);
  ck_assert_int_eq(ts_pool_submit(pool, &fine.base, &err), TS_OK);
  atomic_store(&gone.cancelled, 1);
  struct timespec nap = {0, 50 * 1000000L};
  nanosleep(&nap, NULL);
  open_gate_and_wait();
  ck_assert_int_eq(atomic_load(&late.runs), 0);
  ck_assert_int_eq(atomic_load(&late.skips), 1);
  ck_assert_int_eq(late.code, TS_ETIMEDOUT);
  ck_assert_int_eq(atomic_load(&gone.runs), 0);
  ck_assert_int_eq(atomic_load(&gone.skips), 1);
  ck_assert_int_eq(gone.code, TS_ECANCELLED);
  ck_assert_int_eq(atomic_load(&fine.runs), 1);
}
END_TEST

START_TEST(cancel_takes_a_queued_job_only) {
  job a, b;
  ts_err err;
  job_init(&a, TS_DEADLINE_NONE);
  job_init(&b, TS_DEADLINE_NONE);
  ck_assert_int_eq(ts_pool_submit(pool, &a.base, &err), TS_OK);
  ck_assert_int_eq(ts_pool_submit(pool, &b.base, &err), TS_OK);
  ck_assert_int_eq(ts_pool_cancel(pool, &a.base, "client left"), 1);
  ck_assert_int_eq(atomic_load(&a.skips), 1); /* at once, on this thread */
  ck_assert_int_eq(a.code, TS_ECANCELLED);
  ck_assert_int_eq(ts_pool_cancel(pool, &a.base, "again"), 0);
  ck_assert_int_eq(ts_pool_cancel(pool, &gate.base, "running"), 0);
  int queued;
  ts_pool_stats(pool, NULL, &queued, NULL);
  ck_assert_int_eq(queued, 1);
  open_gate_and_wait();
  ck_assert_int_eq(atomic_load(&a.skips), 1);
  ck_assert_int_eq(atomic_load(&a.runs), 0);
  ck_assert_int_eq(atomic_load(&b.runs), 1);
  ck_assert_int_eq(atomic_load(&gate.runs), 1);
}
END_TEST

START_TEST(stopping_skips_the_queue) {
  job j[2];
  submit_jobs(j, 2, TS_DEADLINE_NONE);
  ts_pool_cancel_queued(pool);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(atomic_load(&j[i].skips), 1);
    ck_assert_int_eq(j[i].code, TS_EUNAVAILABLE);
  }
  open_gate_and_wait();
  for (int i = 0; i < 2; i++) ck_assert_int_eq(atomic_load(&j[i].runs), 0);
}
END_TEST

/* Quiet: nothing queued or running and no submission for quiet_ms. */
START_TEST(wait_quiet) {
  ck_assert_int_eq(ts_pool_wait_quiet(pool, 0, ts_now_ms() + 50),
                   TS_ETIMEDOUT); /* the gate runs */
  atomic_store(&gate_open, 1);
  ck_assert_int_eq(ts_pool_wait_quiet(pool, 100, ts_now_ms() + 10000), TS_OK);
  job j;
  ts_err err;
  job_init(&j, TS_DEADLINE_NONE);
  ck_assert_int_eq(ts_pool_submit(pool, &j.base, &err), TS_OK);
  int64_t t0 = ts_now_ms();
  ck_assert_int_eq(ts_pool_wait_quiet(pool, 100, ts_now_ms() + 10000), TS_OK);
  ck_assert_int_ge(ts_now_ms() - t0, 90);
  ck_assert_int_eq(atomic_load(&j.runs), 1);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("pool");
  TCase *plain = ts_check_tcase(s, "create", 0, NULL, NULL);
  tcase_add_test(plain, bad_sizes);
  TCase *tc = ts_check_tcase(s, "jobs", 30, setup, teardown);
  tcase_add_test(tc, runs_in_order_with_a_session);
  tcase_add_test(tc, full_queue_and_closed_pool);
  tcase_add_test(tc, deadline_and_cancellation_in_the_queue);
  tcase_add_test(tc, cancel_takes_a_queued_job_only);
  tcase_add_test(tc, stopping_skips_the_queue);
  tcase_add_test(tc, wait_quiet);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
