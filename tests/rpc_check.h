/*
 * rpc_check.h - the test server and fixture of the gRPC suites
 * (test_rpc.c, test_rpc_stream.c), over real sockets on 127.0.0.1.
 *
 * The server serves: Echo (unary), Later (answers from another thread
 * after a few ms), Fail (a fixed error), Never (parks the call; the test
 * answers it), Info (peer, user-agent and deadline as text) and Concat
 * (client streaming: answers with the chunks concatenated; a chunk starting
 * with "FAIL" is rejected), Watch (parks the call like Never, with a
 * cancellation notice registered) and Relay (calls Echo on the same server
 * asynchronously and answers from that call's callback, as a coordinator
 * does with its workers). Each test starts its own server on port 0
 * (start_plain, or start_server with credentials); setup and teardown are
 * the checked fixture of every test case.
 *
 * Header-only like kernel_check.h: each suite's executable has its own
 * server state.
 */
#ifndef TS_RPC_CHECK_H
#define TS_RPC_CHECK_H

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "health.pb-c.h"
#include "rpc.h"
#include "rpc_message.h"

#define ECHO "/test.Svc/Echo"
#define LATER "/test.Svc/Later"
#define FAIL "/test.Svc/Fail"
#define NEVER "/test.Svc/Never"
#define INFO "/test.Svc/Info"
#define CONCAT "/test.Svc/Concat"
#define WATCH "/test.Svc/Watch"
#define RELAY "/test.Svc/Relay"
#define HEALTH "/grpc.health.v1.Health/Check"
#define SMALL "/test.Svc/Small"             /* Echo, requests capped */
#define SMALL_CONCAT "/test.Svc/SmallConcat" /* Concat, messages capped */
#define SMALL_MAX 100
#define OFFLOAD "/test.Svc/Offload" /* echo from the control pool */
#define FAIL_MSG "tensor 'x': dim 1 is 3, expected 4"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline uint8_t *random_bytes(size_t n) {
  uint8_t *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    p[i] = (uint8_t)(rng_state >> 24);
  }
  return p;
}

static inline uint8_t *dup_bytes(const uint8_t *p, size_t n) {
  uint8_t *q = malloc(n ? n : 1);
  if (n) memcpy(q, p, n);
  return q;
}

static inline void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* ---- test server handlers -------------------------------------------- */

static inline void echo(ts_rpc_call *call, const uint8_t *req, size_t len,
                        void *user) {
  (void)user;
  ts_rpc_call_reply_owned(call, dup_bytes(req, len), len);
}

static atomic_int later_running;
static atomic_int later_started; /* never decremented: a 5 ms job is easy
                                    to miss by polling later_running */
typedef struct later_job {
  ts_rpc_call *call;
  uint8_t *data;
  size_t len;
} later_job;

static inline void *later_thread(void *arg) {
  later_job *job = arg;
  sleep_ms(5 + (int)(job->len % 20));
  ts_rpc_call_reply_owned(job->call, job->data, job->len);
  free(job);
  atomic_fetch_sub(&later_running, 1);
  return NULL;
}

static inline void later(ts_rpc_call *call, const uint8_t *req, size_t len,
                         void *user) {
  (void)user;
  later_job *job = malloc(sizeof *job);
  job->call = call;
  job->data = dup_bytes(req, len);
  job->len = len;
  atomic_fetch_add(&later_running, 1);
  atomic_fetch_add(&later_started, 1);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, later_thread, job), 0);
  pthread_detach(t);
}

static inline void fail_handler(ts_rpc_call *call, const uint8_t *req,
                                size_t len, void *user) {
  (void)req, (void)len, (void)user;
  ts_rpc_call_fail(call, TS_ENOTFOUND, FAIL_MSG);
}

/* Parked calls of Never, answered by the test. */
static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static ts_rpc_call *parked[16];
static int n_parked;

static inline void never(ts_rpc_call *call, const uint8_t *req, size_t len,
                         void *user) {
  (void)req, (void)len, (void)user;
  pthread_mutex_lock(&park_mu);
  ck_assert_int_lt(n_parked, 16);
  parked[n_parked++] = call;
  pthread_mutex_unlock(&park_mu);
}

/* Waits until n calls are parked (up to 5 s). */
static inline int wait_parked(int n) {
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&park_mu);
    int have = n_parked;
    pthread_mutex_unlock(&park_mu);
    if (have >= n) return have;
    sleep_ms(10);
  }
  return -1;
}

static inline ts_rpc_call *unpark(void) {
  pthread_mutex_lock(&park_mu);
  ts_rpc_call *c = n_parked ? parked[--n_parked] : NULL;
  pthread_mutex_unlock(&park_mu);
  return c;
}

/* Watch's cancellation notices: how many ran, on which call, and what the
 * notice does (notice_mode). */
enum { NOTICE_COUNT, NOTICE_ANSWERS, NOTICE_SLOW };
static atomic_int notice_mode, notices, notice_started, notice_finished;
static ts_rpc_call *noticed_call;

static inline void on_notice(ts_rpc_call *call, void *user) {
  ck_assert_ptr_eq(user, &notices);
  noticed_call = call;
  atomic_fetch_add(&notice_started, 1);
  if (atomic_load(&notice_mode) == NOTICE_ANSWERS)
    ts_rpc_call_fail(call, TS_ECANCELLED, "answered by the notice");
  if (atomic_load(&notice_mode) == NOTICE_SLOW) sleep_ms(300);
  atomic_fetch_add(&notice_finished, 1);
  atomic_fetch_add(&notices, 1);
}

static inline void watch(ts_rpc_call *call, const uint8_t *req, size_t len,
                         void *user) {
  ts_rpc_call_on_cancel(call, on_notice, &notices);
  never(call, req, len, user);
}

static inline void info(ts_rpc_call *call, const uint8_t *req, size_t len,
                        void *user) {
  (void)req, (void)len, (void)user;
  char peer[128], ua[128], missing[8];
  char *out = malloc(512);
  int n = snprintf(
      out, 512, "%s|%s|%lld|%s", ts_rpc_call_peer(call, peer, sizeof peer),
      ts_rpc_call_metadata(call, "user-agent", ua, sizeof ua),
      (long long)ts_rpc_call_deadline(call),
      ts_rpc_call_metadata(call, "x-absent", missing, sizeof missing)
          ? "present"
          : "absent");
  ts_rpc_call_reply_owned(call, (uint8_t *)out, (size_t)n);
}

/* Concat: per-call buffers, keyed by call. */
typedef struct concat_state {
  ts_rpc_call *call;
  uint8_t *buf;
  size_t len, cap;
} concat_state;
static concat_state concat_calls[16];
static atomic_int ends_ok, ends_cancelled;

static inline concat_state *concat_find(ts_rpc_call *call, bool create) {
  pthread_mutex_lock(&park_mu);
  concat_state *found = NULL;
  for (int i = 0; i < 16 && !found; i++)
    if (concat_calls[i].call == call) found = &concat_calls[i];
  for (int i = 0; i < 16 && !found && create; i++)
    if (!concat_calls[i].call) {
      found = &concat_calls[i];
      found->call = call;
    }
  pthread_mutex_unlock(&park_mu);
  return found;
}

static inline int concat_msg(ts_rpc_call *call, const uint8_t *msg, size_t len,
                             void *user, ts_err *err) {
  (void)user;
  if (len >= 4 && memcmp(msg, "FAIL", 4) == 0)
    return ts_err_set(err, TS_EINVAL, "chunk 'FAIL' rejected");
  concat_state *st = concat_find(call, true);
  ck_assert_ptr_nonnull(st);
  if (st->len + len > st->cap) {
    st->cap = (st->len + len) * 2;
    st->buf = realloc(st->buf, st->cap);
  }
  if (len) memcpy(st->buf + st->len, msg, len);
  st->len += len;
  return 0;
}

static inline void concat_end(ts_rpc_call *call, void *user, int cancelled) {
  (void)user;
  concat_state *st = concat_find(call, true);
  uint8_t *buf = st->buf;
  size_t len = st->len;
  pthread_mutex_lock(&park_mu);
  memset(st, 0, sizeof *st);
  pthread_mutex_unlock(&park_mu);
  if (cancelled) {
    atomic_fetch_add(&ends_cancelled, 1);
    free(buf);
  } else {
    atomic_fetch_add(&ends_ok, 1);
    ts_rpc_call_reply_owned(call, buf, len);
  }
}

/* Relay: the server's own async client and a channel to itself, set by the
 * test that uses it. */
static ts_rpc_client *relay_client;
static ts_rpc_channel *relay_chan;

static inline void relay_done(void *user, const ts_rpc_result *r) {
  ts_rpc_call *call = user;
  if (r->status != 0)
    ts_rpc_call_fail(call, r->code, r->message);
  else
    ts_rpc_call_reply_owned(call, dup_bytes(r->data, r->len), r->len);
}

static inline void relay(ts_rpc_call *call, const uint8_t *req, size_t len,
                         void *user) {
  (void)user;
  if (!relay_client || !relay_chan) {
    ts_rpc_call_fail(call, TS_EUNAVAILABLE, "relay not set up");
    return;
  }
  uint8_t *copy = dup_bytes(req, len);
  int rc = ts_rpc_call_async_owned(relay_client, relay_chan, ECHO, copy, len,
                                   ts_now_ms() + 20000, relay_done, call, NULL);
  if (rc) ts_rpc_call_fail(call, rc, "relay: cannot start the call");
}

/* Offload: the echo runs on a control pool thread, which waits until the
 * test opens the gate. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static atomic_int offload_running;

typedef struct offload_echo {
  ts_rpc_call *call;
  size_t len;
  uint8_t bytes[];
} offload_echo;

static inline void *offload_thread(void *arg) {
  offload_echo *job = arg;
  atomic_fetch_add(&offload_running, 1);
  pthread_mutex_lock(&gate_mu);
  while (!gate_open) pthread_cond_wait(&gate_cv, &gate_mu);
  pthread_mutex_unlock(&gate_mu);
  ts_rpc_call_reply_owned(job->call, dup_bytes(job->bytes, job->len),
                          job->len);
  free(job);
  return NULL;
}

static inline void offload(ts_rpc_call *call, const uint8_t *req, size_t len,
                           void *user) {
  (void)user;
  offload_echo *job = malloc(sizeof *job + len);
  ck_assert_ptr_nonnull(job);
  job->call = call;
  job->len = len;
  if (len) memcpy(job->bytes, req, len);
  if (ts_rpc_call_offload(call, offload_thread, job) != 0) free(job);
}

static inline void open_gate(void) {
  pthread_mutex_lock(&gate_mu);
  gate_open = true;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
}

static const ts_rpc_method test_methods[] = {
    {.path = ECHO, .kind = TS_RPC_UNARY, .unary = echo},
    {.path = LATER, .kind = TS_RPC_UNARY, .unary = later},
    {.path = FAIL, .kind = TS_RPC_UNARY, .unary = fail_handler},
    {.path = NEVER, .kind = TS_RPC_UNARY, .unary = never},
    {.path = INFO, .kind = TS_RPC_UNARY, .unary = info},
    {.path = CONCAT,
     .kind = TS_RPC_CLIENT_STREAM,
     .on_message = concat_msg,
     .on_end = concat_end},
    {.path = WATCH, .kind = TS_RPC_UNARY, .unary = watch},
    {.path = RELAY, .kind = TS_RPC_UNARY, .unary = relay},
    {.path = OFFLOAD, .kind = TS_RPC_UNARY, .unary = offload},
    {.path = SMALL, .kind = TS_RPC_UNARY, .unary = echo,
     .max_request = SMALL_MAX},
    {.path = SMALL_CONCAT,
     .kind = TS_RPC_CLIENT_STREAM,
     .on_message = concat_msg,
     .on_end = concat_end,
     .max_request = SMALL_MAX},
};
#define N_TEST_METHODS ((int)(sizeof test_methods / sizeof *test_methods))

/* ---- fixture ---------------------------------------------------------- */

static ts_rpc_server *srv;
static ts_rpc_channel *chan;
static int port;

static inline void start_server(const ts_rpc_creds *creds) {
  ts_err err = {0};
  ts_rpc_server_opts opts = {.listen = "127.0.0.1:0", .creds = creds};
  int rc = ts_rpc_server_start(&opts, test_methods, N_TEST_METHODS, &srv, &port,
                               &err);
  ck_assert_msg(rc == 0, "server start: %s", err.msg);
  ck_assert_int_gt(port, 0);
}

static inline ts_rpc_channel *open_channel(const ts_rpc_creds *creds) {
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  ts_rpc_channel *ch = NULL;
  ts_err err = {0};
  ck_assert_int_eq(ts_rpc_channel_open(target, creds, &ch, &err), 0);
  ck_assert_str_eq(ts_rpc_channel_target(ch), target);
  return ch;
}

static inline void setup(void) {
  ts_rpc_init();
  atomic_store(&later_running, 0);
  atomic_store(&later_started, 0);
  atomic_store(&ends_ok, 0);
  atomic_store(&ends_cancelled, 0);
  atomic_store(&notice_mode, NOTICE_COUNT);
  atomic_store(&notices, 0);
  atomic_store(&notice_started, 0);
  atomic_store(&notice_finished, 0);
  noticed_call = NULL;
  gate_open = false;
  atomic_store(&offload_running, 0);
  n_parked = 0;
  srv = NULL;
  chan = NULL;
}

static inline void teardown(void) {
  for (int i = 0; i < 500 && atomic_load(&later_running) > 0; i++) sleep_ms(10);
  if (chan) ts_rpc_channel_close(chan);
  if (srv) ts_rpc_server_stop(srv, 1000);
  ts_err err = {0};
  ck_assert_int_eq(ts_rpc_set_limits(&(ts_rpc_limits){0}, &err), 0);
  ts_rpc_shutdown();
}

static inline void start_plain(void) {
  start_server(NULL);
  chan = open_channel(NULL);
}

static inline int64_t in_ms(int64_t ms) { return ts_now_ms() + ms; }

/* A sync call with a text request on ch. On success the response goes to
 * text (NUL-terminated) when text is non-NULL; on failure the outputs are
 * checked to be cleared. */
static inline int call_text(ts_rpc_channel *ch, const char *method,
                            const char *req, int64_t deadline, char *text,
                            size_t text_size, ts_err *err) {
  uint8_t *resp = (uint8_t *)"unset";
  size_t len = 7;
  int rc = ts_rpc_call_sync(ch, method, (const uint8_t *)req, strlen(req),
                            deadline, &resp, &len, err);
  if (rc == 0) {
    ck_assert_ptr_nonnull(resp);
    if (text) snprintf(text, text_size, "%.*s", (int)len, (const char *)resp);
    free(resp);
  } else {
    ck_assert_ptr_null(resp);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(err->code, rc);
  }
  return rc;
}

/* Polls every 5 ms, up to 2 s. */
static inline bool wait_count(atomic_int *v, int at_least) {
  for (int i = 0; i < 400 && atomic_load(v) < at_least; i++) sleep_ms(5);
  return atomic_load(v) >= at_least;
}

static inline bool wait_cancelled(const ts_rpc_call *call) {
  for (int i = 0; i < 400 && !ts_rpc_call_is_cancelled(call); i++) sleep_ms(5);
  return ts_rpc_call_is_cancelled(call);
}

#endif
