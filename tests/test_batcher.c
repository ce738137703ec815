/*
 * test_batcher.c - dynamic batching (coordinator/batcher.c) over a mock
 * dispatcher: this file defines the ts_dispatch_* functions batcher.c
 * calls (dispatch.h), so no worker, channel or plan is involved. The mock
 * "runs" a model y = 2 * x on whatever rows it is given, either inside
 * ts_dispatch_start (answered at once) or when the test says (held).
 *
 * Checked: which requests may batch; a quiet model's lone request goes at
 * once; requests queued behind a batch in flight close a batch at
 * max_batch, or at the window; an overflowing request closes the open
 * batch first; every request gets exactly its own rows; the queue's bound
 * (TS_EEXHAUSTED); a cancelled queued request is answered at once and
 * leaves the others alone; a request whose deadline passed while batched is
 * answered TS_ETIMEDOUT while the others get their rows; a failed batch
 * fails each of its requests with the dispatcher's code.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batcher.h"
#include "check_main.h"
#include "dispatch.h"

/* ---- the mock dispatcher ------------------------------------------------ */

#define MAX_STARTED 32

struct ts_dispatch {
  const ts_tensor *x; /* input "x", float [rows, F] */
  ts_tensor y;
  ts_err err;
  int64_t deadline;
  ts_dispatch_done_fn done;
  void *user;
  int cancel_code;
};

static pthread_mutex_t mock_mu = PTHREAD_MUTEX_INITIALIZER;
/* Every inference started, in order (the batcher frees one once it is
 * finished: only unclaimed ones may be dereferenced), and the rows and
 * deadline each started with. */
static ts_dispatch *started[MAX_STARTED];
static int64_t started_rows[MAX_STARTED], started_deadline[MAX_STARTED];
static bool claimed[MAX_STARTED]; /* finished, or being finished */
static int n_started;
static bool hold;     /* keep started inferences until finish_held() */
static int fail_code; /* nonzero: every inference fails with it */

ts_dispatch *ts_dispatch_new(ts_membership *cluster, ts_served_model *model,
                             const ts_dispatch_opts *opts, int64_t deadline,
                             const char *request_id) {
  (void)cluster, (void)model, (void)opts, (void)request_id;
  ts_dispatch *d = calloc(1, sizeof *d);
  if (d) d->deadline = deadline;
  return d;
}

int ts_dispatch_add_input(ts_dispatch *d, const char *name, const ts_tensor *t,
                          ts_err *err) {
  (void)err;
  ck_assert_str_eq(name, "x");
  d->x = t;
  return TS_OK;
}

static void finish(ts_dispatch *d) {
  if (d->cancel_code)
    ts_err_set(&d->err, d->cancel_code, "cancelled");
  else if (fail_code)
    ts_err_set(&d->err, fail_code, "mock failure");
  else {
    ck_assert_int_eq(
        ts_tensor_alloc(&d->y, TS_DTYPE_FLOAT, d->x->dims, d->x->rank, &d->err),
        TS_OK);
    const float *x = d->x->data;
    float *y = d->y.data;
    for (int64_t i = 0; i < ts_tensor_numel(&d->y); i++) y[i] = 2 * x[i];
  }
  d->done(d, d->user);
}

void ts_dispatch_start(ts_dispatch *d, ts_dispatch_done_fn done, void *user) {
  d->done = done;
  d->user = user;
  pthread_mutex_lock(&mock_mu);
  ck_assert_int_lt(n_started, MAX_STARTED);
  int i = n_started++;
  started[i] = d;
  started_rows[i] = d->x->dims[0];
  started_deadline[i] = d->deadline;
  bool now = claimed[i] = !hold;
  pthread_mutex_unlock(&mock_mu);
  if (now) finish(d);
}

void ts_dispatch_cancel(ts_dispatch *d, int code, const char *why) {
  (void)why;
  d->cancel_code = code;
}

const ts_err *ts_dispatch_error(const ts_dispatch *d) { return &d->err; }

const ts_tensor *ts_dispatch_value(const ts_dispatch *d, const char *name) {
  return strcmp(name, "y") == 0 && d->y.data ? &d->y : NULL;
}

void ts_dispatch_free(ts_dispatch *d) {
  ts_tensor_free(&d->y);
  free(d);
}

/* Finishes every held inference, in start order (one the batcher's timer
 * starts meanwhile included). */
static void finish_held(void) {
  for (;;) {
    ts_dispatch *d = NULL;
    pthread_mutex_lock(&mock_mu);
    for (int i = 0; i < n_started && !d; i++)
      if (!claimed[i]) claimed[i] = true, d = started[i];
    pthread_mutex_unlock(&mock_mu);
    if (!d) return;
    finish(d);
  }
}

/* ---- a model and its requests ------------------------------------------- */

enum { F = 3 };

static ts_io_info model_in = {
    .name = "x", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, F}};
static ts_io_info model_out = {
    .name = "y", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, F}};
static ts_served_model model;
static ts_batcher *batcher;

/* One request: its rows (row r, column c holds base + r * F + c), and what
 * came back. */
typedef struct request {
  float x[8 * F];
  ts_tensor input;
  ts_batch_item *item;
  atomic_int answered;
  int code;
  bool rows_ok;
} request;

/* Requests outlive each test: the teardown's flush may still answer one. */
static request r[8];

static void on_done(void *user, const ts_err *err,
                    const ts_tensor *const *outputs, int n_outputs) {
  request *q = user;
  q->code = err->code;
  if (!err->code) {
    ck_assert_int_eq(n_outputs, 1);
    const ts_tensor *y = outputs[0];
    q->rows_ok =
        y->rank == 2 && y->dims[0] == q->input.dims[0] && y->dims[1] == F;
    for (int64_t i = 0; q->rows_ok && i < ts_tensor_numel(y); i++)
      q->rows_ok = ((const float *)y->data)[i] == 2 * q->x[i];
  }
  atomic_store(&q->answered, 1);
}

static int submit(request *q, int64_t rows, float base, int64_t deadline_ms) {
  for (int i = 0; i < rows * F; i++) q->x[i] = base + (float)i;
  ts_err err;
  ck_assert_int_eq(ts_tensor_view(&q->input, TS_DTYPE_FLOAT,
                                  (int64_t[]){rows, F}, 2, q->x, &err),
                   TS_OK);
  atomic_store(&q->answered, 0);
  return ts_batcher_submit(batcher, &model, &q->input,
                           ts_now_ms() + deadline_ms, on_done, q, &q->item,
                           &err);
}

/* Requests q[0..n) were answered with their own rows. */
static void expect_rows(const request *q, int n) {
  for (int i = 0; i < n; i++) {
    ck_assert_msg(atomic_load(&q[i].answered), "request %d unanswered", i);
    ck_assert_msg(q[i].code == TS_OK, "request %d: code %d", i, q[i].code);
    ck_assert_msg(q[i].rows_ok, "request %d got other rows", i);
  }
}

static bool wait_answered(request *q, int ms) {
  for (int i = 0; i < ms / 5 && !atomic_load(&q->answered); i++) usleep(5000);
  return atomic_load(&q->answered);
}

/* A model that batches up to 4 rows with a window of `window_us`, and a
 * batcher whose queue holds `max_queue` requests. */
static void start(int64_t window_us, int max_queue) {
  memset(&model, 0, sizeof model);
  snprintf(model.config.name, sizeof model.config.name, "m");
  model.config.max_batch = 4;
  model.config.batch_delay_us = window_us;
  model.inputs = &model_in;
  model.n_inputs = 1;
  model.outputs = &model_out;
  model.n_outputs = 1;
  ts_err err;
  ck_assert_int_eq(ts_batcher_create(NULL, NULL, max_queue, &batcher, &err),
                   TS_OK);
}

/* Every test starts from a quiet mock. */
static void setup(void) {
  n_started = 0;
  memset(claimed, 0, sizeof claimed);
  hold = false;
  fail_code = 0;
  memset(r, 0, sizeof r);
}

/* Answers everything still held or queued, then frees the batcher. */
static void teardown(void) {
  hold = false;
  finish_held();
  ts_batcher_free(batcher);
}

/* A batcher whose window (10 s) never closes a batch during a test, with
 * r[0] alone in flight and held: the quiet model's first request. */
static void start_busy(int max_queue) {
  start(10 * 1000 * 1000, max_queue);
  hold = true;
  ck_assert_int_eq(submit(&r[0], 1, 0, 5000), TS_OK);
  ck_assert_int_eq(n_started, 1);
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(accepts) {
  start(1000, 16);
  ts_tensor *in = &r[0].input;
  ck_assert_int_eq(
      ts_tensor_view(in, TS_DTYPE_FLOAT, (int64_t[]){4, F}, 2, r[0].x, NULL),
      TS_OK);
  ck_assert(ts_batcher_accepts(&model, in));
  in->dims[0] = 5; /* more rows than max_batch */
  ck_assert(!ts_batcher_accepts(&model, in));
  in->dims[0] = 0;
  ck_assert(!ts_batcher_accepts(&model, in));
  in->dims[0] = 2;
  model_in.dims[0] = 2; /* a static first dim */
  ck_assert(!ts_batcher_accepts(&model, in));
  model_in.dims[0] = -1;
  model.config.max_batch = 0;
  ck_assert(!ts_batcher_accepts(&model, in));
}
END_TEST

/* The first request finds the model quiet and goes alone, at once; the
 * ones behind it (its batch still in flight) fill a batch of 4 rows, which
 * goes the moment it is full. */
START_TEST(full_batch_goes_at_once) {
  start_busy(16);
  ck_assert_int_eq(submit(&r[1], 1, 200, 5000), TS_OK);
  ck_assert_int_eq(submit(&r[2], 2, 300, 5000), TS_OK);
  ck_assert_int_eq(n_started, 1); /* 3 rows wait */
  ck_assert_int_eq(submit(&r[3], 1, 400, 5000), TS_OK);
  ck_assert_int_eq(n_started, 2);
  ck_assert_int_eq(started_rows[0], 1);
  ck_assert_int_eq(started_rows[1], 4);
  finish_held();
  expect_rows(r, 4);
}
END_TEST

START_TEST(overflow_closes_the_open_batch) {
  start_busy(16);
  ck_assert_int_eq(submit(&r[1], 3, 10, 5000), TS_OK);
  ck_assert_int_eq(submit(&r[2], 2, 20, 5000), TS_OK); /* 3 + 2 > 4 */
  ck_assert_int_eq(n_started, 2);
  ck_assert_int_eq(started_rows[1], 3);
  ck_assert_int_eq(submit(&r[3], 2, 30, 5000), TS_OK); /* 2 + 2 = 4 */
  ck_assert_int_eq(n_started, 3);
  ck_assert_int_eq(started_rows[2], 4);
  finish_held();
  expect_rows(r, 4);
}
END_TEST

/* Requests that do not fill a batch go when the window ends. */
START_TEST(window_closes_a_batch) {
  start(50 * 1000, 16); /* 50 ms */
  hold = true;
  ck_assert_int_eq(submit(&r[0], 1, 0, 5000), TS_OK); /* alone */
  ck_assert_int_eq(submit(&r[1], 1, 10, 5000), TS_OK);
  ck_assert_int_eq(submit(&r[2], 1, 20, 5000), TS_OK);
  hold = false;
  finish_held();
  ck_assert(wait_answered(&r[2], 5000));
  expect_rows(r, 3);
  ck_assert_int_eq(n_started, 2);
  ck_assert_int_eq(started_rows[1], 2);
}
END_TEST

START_TEST(queue_bound) {
  start_busy(2);
  ck_assert_int_eq(submit(&r[1], 1, 10, 5000), TS_OK);
  ck_assert_int_eq(submit(&r[2], 1, 20, 5000), TS_EEXHAUSTED);
  finish_held();
  ck_assert(!atomic_load(&r[2].answered)); /* refused: done never runs */
}
END_TEST

START_TEST(cancel_while_queued) {
  start_busy(16);
  ck_assert_int_eq(submit(&r[1], 1, 10, 5000), TS_OK);
  ck_assert_int_eq(submit(&r[2], 1, 20, 5000), TS_OK);
  ts_batcher_cancel(batcher, r[1].item, TS_ECANCELLED);
  ck_assert(atomic_load(&r[1].answered));
  ck_assert_int_eq(r[1].code, TS_ECANCELLED);
  /* Its row left the batch: three more fill it. */
  ck_assert_int_eq(submit(&r[3], 3, 30, 5000), TS_OK);
  ck_assert_int_eq(n_started, 2);
  ck_assert_int_eq(started_rows[1], 4);
  finish_held();
  expect_rows(r, 1);
  expect_rows(&r[2], 2);
}
END_TEST

START_TEST(deadline_passed_while_batched) {
  start_busy(16);
  ck_assert_int_eq(submit(&r[1], 1, 10, 5000), TS_OK);
  ck_assert_int_eq(submit(&r[2], 1, 20, 1), TS_OK); /* 1 ms */
  ck_assert_int_eq(submit(&r[3], 2, 30, 5000), TS_OK);
  ck_assert_int_eq(n_started, 2);
  /* The batch runs to its latest deadline. */
  ck_assert_int_ge(started_deadline[1], ts_now_ms() + 1000);
  usleep(20 * 1000);
  finish_held();
  expect_rows(r, 2);
  ck_assert_int_eq(r[2].code, TS_ETIMEDOUT);
  expect_rows(&r[3], 1);
}
END_TEST

START_TEST(failed_batch_fails_each_request) {
  start_busy(16);
  ck_assert_int_eq(submit(&r[1], 2, 10, 5000), TS_OK);
  ck_assert_int_eq(submit(&r[2], 2, 20, 5000), TS_OK);
  fail_code = TS_EUNAVAILABLE;
  finish_held();
  for (int i = 0; i < 3; i++) {
    ck_assert(atomic_load(&r[i].answered));
    ck_assert_int_eq(r[i].code, TS_EUNAVAILABLE);
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("batcher");
  TCase *tc = ts_check_tcase(s, "batcher", 30, setup, teardown);
  tcase_add_test(tc, accepts);
  tcase_add_test(tc, full_batch_goes_at_once);
  tcase_add_test(tc, overflow_closes_the_open_batch);
  tcase_add_test(tc, window_closes_a_batch);
  tcase_add_test(tc, queue_bound);
  tcase_add_test(tc, cancel_while_queued);
  tcase_add_test(tc, deadline_passed_while_batched);
  tcase_add_test(tc, failed_batch_fails_each_request);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
