/*
 * test_rpc.c - the gRPC layer over real sockets on 127.0.0.1: status codes,
 * unary calls (sync and async), health, deadlines, cancellation and its
 * notices, stop, and bad server options. The test server is rpc_check.h's;
 * client streaming and TLS are in test_rpc_stream.c.
 */
#include <check.h>
#include <grpc/status.h>

#include "check_main.h"
#include "rpc_check.h"

/* ---- status codes ----------------------------------------------------- */

START_TEST(status_mapping) {
  static const int codes[] = {
#define TS_X(name, value, grpc, desc) value,
      TS_ERROR_LIST(TS_X)
#undef TS_X
  };
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    int status = ts_err_grpc_status(codes[i]);
    int back = ts_err_from_grpc_status(status);
    /* The way back lands on a code with the same status. */
    ck_assert_int_eq(ts_err_grpc_status(back), status);
  }
  /* The way in from each status a peer may send. */
  static const struct {
    int status, code;
  } in[] = {
      {GRPC_STATUS_OK, TS_OK},
      {GRPC_STATUS_INVALID_ARGUMENT, TS_EINVAL},
      {GRPC_STATUS_DEADLINE_EXCEEDED, TS_ETIMEDOUT},
      {GRPC_STATUS_NOT_FOUND, TS_ENOTFOUND},
      {GRPC_STATUS_RESOURCE_EXHAUSTED, TS_EEXHAUSTED},
      {GRPC_STATUS_UNIMPLEMENTED, TS_EUNSUPPORTED},
      {GRPC_STATUS_INTERNAL, TS_EINTERNAL},
      {GRPC_STATUS_UNAVAILABLE, TS_EUNAVAILABLE},
      {GRPC_STATUS_UNAUTHENTICATED, TS_EUNAUTH},
      {GRPC_STATUS_UNKNOWN, TS_EINTERNAL},
      {GRPC_STATUS_OUT_OF_RANGE, TS_EINVAL},
      {99, TS_EINTERNAL}, /* no such status */
  };
  for (size_t i = 0; i < sizeof in / sizeof *in; i++)
    ck_assert_msg(ts_err_from_grpc_status(in[i].status) == in[i].code,
                  "status %d: got %d, want %d", in[i].status,
                  ts_err_from_grpc_status(in[i].status), in[i].code);
}
END_TEST

START_TEST(now_is_monotonic_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t ref = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  int64_t now = ts_now_ms();
  ck_assert(now >= ref && now - ref < 1000);
  sleep_ms(30);
  ck_assert_int_ge(ts_now_ms() - now, 29);
}
END_TEST

/* ---- unary ------------------------------------------------------------ */

static const size_t sizes[] = {0, 1, 23, 4096, 1000003, (4u << 20) + 1,
                               8u << 20};
#define N_SIZES (sizeof sizes / sizeof *sizes)

START_TEST(sync_echo_sizes) {
  start_plain();
  for (size_t i = 0; i < N_SIZES; i++) {
    uint8_t *req = random_bytes(sizes[i]);
    uint8_t *resp = NULL;
    size_t len = 99;
    ts_err err = {0};
    int rc = ts_rpc_call_sync(chan, i % 2 ? LATER : ECHO, req, sizes[i],
                              in_ms(20000), &resp, &len, &err);
    ck_assert_msg(rc == 0, "size %zu: %d %s", sizes[i], rc, err.msg);
    ck_assert_uint_eq(len, sizes[i]);
    ck_assert_ptr_nonnull(resp);
    ck_assert(memcmp(req, resp, len) == 0);
    free(req);
    free(resp);
  }
}
END_TEST

typedef struct async_probe {
  atomic_int done;
  int status, code;
  char message[256];
  const uint8_t *expect;
  size_t expect_len;
  bool match;
} async_probe;

static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int n_done;

static void on_done(void *user, const ts_rpc_result *r) {
  async_probe *p = user;
  p->status = r->status;
  p->code = r->code;
  snprintf(p->message, sizeof p->message, "%s", r->message ? r->message : "");
  p->match = r->status == GRPC_STATUS_OK && r->len == p->expect_len &&
             (r->len == 0 || memcmp(r->data, p->expect, r->len) == 0);
  atomic_fetch_add(&p->done, 1);
  pthread_mutex_lock(&done_mu);
  n_done++;
  pthread_cond_broadcast(&done_cv);
  pthread_mutex_unlock(&done_mu);
}

static bool wait_done(int n, int64_t timeout_ms) {
  int64_t end = in_ms(timeout_ms);
  pthread_mutex_lock(&done_mu);
  while (n_done < n && ts_now_ms() < end) {
    pthread_mutex_unlock(&done_mu);
    sleep_ms(5);
    pthread_mutex_lock(&done_mu);
  }
  bool ok = n_done >= n;
  pthread_mutex_unlock(&done_mu);
  return ok;
}

/* _i = 1: the owned variant, which sends the caller's malloc'd bytes as
 * they are, and frees them also when it refuses a call (ASan would see a
 * leak otherwise). */
START_TEST(async_echo_sizes) {
  bool owned = _i == 1;
  start_plain();
  ts_rpc_client *client;
  ts_err err = {0};
  ck_assert_int_eq(ts_rpc_client_create(&client, &err), 0);
  n_done = 0;
  async_probe probes[N_SIZES];
  uint8_t *reqs[N_SIZES];
  memset(probes, 0, sizeof probes);
  for (size_t i = 0; i < N_SIZES; i++) {
    reqs[i] = random_bytes(sizes[i]);
    probes[i].expect = reqs[i];
    probes[i].expect_len = sizes[i];
    const char *m = i % 2 ? ECHO : LATER;
    int rc = owned ? ts_rpc_call_async_owned(client, chan, m,
                                             dup_bytes(reqs[i], sizes[i]),
                                             sizes[i], in_ms(20000), on_done,
                                             &probes[i], NULL)
                   : ts_rpc_call_async(client, chan, m, reqs[i], sizes[i],
                                       in_ms(20000), on_done, &probes[i],
                                       NULL);
    ck_assert_int_eq(rc, 0);
  }
  if (owned)
    ck_assert_int_eq(ts_rpc_call_async_owned(client, NULL, ECHO,
                                             dup_bytes(reqs[1], 1), 1,
                                             in_ms(1000), on_done, NULL, NULL),
                     TS_EINVAL);
  ck_assert(wait_done(N_SIZES, 30000));
  ts_rpc_client_free(client);
  for (size_t i = 0; i < N_SIZES; i++) {
    ck_assert_int_eq(atomic_load(&probes[i].done), 1);
    ck_assert_msg(probes[i].match, "size %zu: status %d %s", sizes[i],
                  probes[i].status, probes[i].message);
    free(reqs[i]);
  }
}
END_TEST

/* Starts an async call of `len` random bytes to m on chan, checked by p;
 * the bytes go to *req (the caller frees them). */
static void start_probe(ts_rpc_client *client, const char *m, async_probe *p,
                        uint8_t **req, size_t len) {
  *req = random_bytes(len);
  p->expect = *req;
  p->expect_len = len;
  ck_assert_int_eq(ts_rpc_call_async(client, chan, m, *req, len, in_ms(20000),
                                     on_done, p, NULL),
                   0);
}

/* _i = 1: every call goes to Relay, whose handler calls Echo on the same
 * server asynchronously and answers from that callback, all on the
 * process's one poller (servers and clients share it), as a coordinator
 * does with its workers. */
START_TEST(async_100_concurrent) {
  bool relayed = _i == 1;
  /* The relay's channel to its own server shares the test channel's
   * connection (gRPC pools subchannels per process): 100 relays and their
   * 100 echoes need more than the default 100 streams on it. */
  ts_rpc_limits limits = {.max_streams = 2 * 100};
  ck_assert_int_eq(ts_rpc_set_limits(&limits, NULL), 0);
  start_plain();
  if (relayed) {
    ck_assert_int_eq(ts_rpc_client_create(&relay_client, NULL), 0);
    relay_chan = open_channel(NULL);
  }
  ts_rpc_client *client;
  ck_assert_int_eq(ts_rpc_client_create(&client, NULL), 0);
  n_done = 0;
  enum { N = 100 };
  static async_probe probes[N];
  static uint8_t *reqs[N];
  memset(probes, 0, sizeof probes);
  for (int i = 0; i < N; i++) {
    const char *m = i % 3 == 0 ? FAIL : (i % 3 == 1 ? LATER : ECHO);
    start_probe(client, relayed ? RELAY : m, &probes[i], &reqs[i],
                (size_t)(i * 37 % 1000));
  }
  /* client_free waits for every callback. */
  ts_rpc_client_free(client);
  if (relayed) {
    ts_rpc_client_free(relay_client);
    ts_rpc_channel_close(relay_chan);
    relay_client = NULL;
    relay_chan = NULL;
  }
  ck_assert_int_eq(n_done, N);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(atomic_load(&probes[i].done), 1);
    if (i % 3 == 0 && !relayed) {
      ck_assert_int_eq(probes[i].status, GRPC_STATUS_NOT_FOUND);
      ck_assert_int_eq(probes[i].code, TS_ENOTFOUND);
      ck_assert_str_eq(probes[i].message, FAIL_MSG);
    } else {
      ck_assert_msg(probes[i].match, "call %d: %s", i, probes[i].message);
    }
    free(reqs[i]);
  }
}
END_TEST

/* Request arenas: a small message unpacks into the inline bytes, a large
 * one spills into a block; both read back intact and release frees all. */
START_TEST(arena_unpack_inline_and_spilled) {
  static ts_rpc_arena arena;
  for (size_t n = 10; n <= 2 * TS_RPC_ARENA_INLINE; n *= 20) {
    char *name = malloc(n + 1);
    for (size_t i = 0; i < n; i++) name[i] = (char)('a' + i % 26);
    name[n] = '\0';
    Grpc__Health__V1__HealthCheckRequest req =
        GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = name;
    size_t len = grpc__health__v1__health_check_request__get_packed_size(&req);
    uint8_t *buf = malloc(len);
    grpc__health__v1__health_check_request__pack(&req, buf);
    ts_rpc_arena_init(&arena);
    Grpc__Health__V1__HealthCheckRequest *got =
        grpc__health__v1__health_check_request__unpack(&arena.allocator, len,
                                                       buf);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got->service, name);
    bool inline_bytes = (unsigned char *)got->service >= arena.first &&
                        (unsigned char *)got->service <
                            arena.first + TS_RPC_ARENA_INLINE;
    ck_assert_msg(inline_bytes == (n < TS_RPC_ARENA_INLINE / 2),
                  "%zu bytes: inline %d", n, inline_bytes);
    int64_t *zeros = ts_rpc_arena_calloc(&arena, 4 * sizeof *zeros);
    ck_assert_ptr_nonnull(zeros);
    ck_assert(zeros[0] == 0 && zeros[3] == 0);
    ck_assert_uint_eq((uintptr_t)zeros % alignof(max_align_t), 0);
    ts_rpc_arena_release(&arena);
    free(buf);
    free(name);
  }
}
END_TEST

START_TEST(fail_code_and_message) {
  start_plain();
  ts_err err = {0};
  ck_assert_int_eq(call_text(chan, FAIL, "a", in_ms(5000), NULL, 0, &err),
                   TS_ENOTFOUND);
  ck_assert_str_eq(err.msg, FAIL_MSG);
}
END_TEST

START_TEST(unknown_method_unimplemented) {
  start_plain();
  ts_err err = {0};
  ck_assert_int_eq(call_text(chan, "/test.Svc/Nope", "a", in_ms(5000), NULL,
                             0, &err),
                   TS_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "/test.Svc/Nope"));
  /* Health/Watch is not served either. */
  ck_assert_int_eq(call_text(chan, "/grpc.health.v1.Health/Watch", "",
                             in_ms(5000), NULL, 0, &err),
                   TS_EUNSUPPORTED);
}
END_TEST

START_TEST(peer_metadata_deadline) {
  start_plain();
  int64_t deadline = in_ms(7000);
  ts_err err = {0};
  char text[512];
  ck_assert_int_eq(
      call_text(chan, INFO, "", deadline, text, sizeof text, &err), 0);
  char peer[128], ua[128], absent[16];
  long long seen;
  ck_assert_int_eq(sscanf(text, "%127[^|]|%127[^|]|%lld|%15s", peer, ua,
                          &seen, absent),
                   4);
  ck_assert_msg(strncmp(peer, "ipv4:127.0.0.1:", 15) == 0, "peer %s", peer);
  ck_assert_msg(strstr(ua, "grpc-c") != NULL, "user-agent %s", ua);
  ck_assert_str_eq(absent, "absent");
  /* Same process, same clock: the server sees the client's deadline. */
  ck_assert_msg(llabs(seen - (long long)deadline) < 100,
                "deadline %lld vs %lld", seen, (long long)deadline);
  /* No deadline travels as none. */
  ck_assert_int_eq(
      call_text(chan, INFO, "", TS_DEADLINE_NONE, text, sizeof text, &err),
      0);
  ck_assert_int_eq(sscanf(text, "%127[^|]|%127[^|]|%lld|", peer, ua, &seen),
                   3);
  ck_assert_int_eq(seen, TS_DEADLINE_NONE);
}
END_TEST

/* ---- health ----------------------------------------------------------- */

static int health(const char *service, int *status) {
  Grpc__Health__V1__HealthCheckRequest rq =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  rq.service = (char *)service;
  uint8_t buf[256];
  size_t n = grpc__health__v1__health_check_request__pack(&rq, buf);
  uint8_t *resp;
  size_t len;
  ts_err err = {0};
  int rc = ts_rpc_call_sync(chan, HEALTH, buf, n, in_ms(5000), &resp, &len,
                            &err);
  if (rc < 0) return rc;
  Grpc__Health__V1__HealthCheckResponse *r =
      grpc__health__v1__health_check_response__unpack(NULL, len, resp);
  free(resp);
  ck_assert_ptr_nonnull(r);
  *status = r->status;
  grpc__health__v1__health_check_response__free_unpacked(r, NULL);
  return 0;
}

START_TEST(health_check) {
  start_plain();
  int status = -1;
  ck_assert_int_eq(health("", &status), 0);
  ck_assert_int_eq(status,
                   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  ts_rpc_server_set_serving(srv, 0);
  ck_assert_int_eq(health("", &status), 0);
  ck_assert_int_eq(
      status,
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
  ts_rpc_server_set_serving(srv, 1);
  ck_assert_int_eq(health("", &status), 0);
  ck_assert_int_eq(status,
                   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  ck_assert_int_eq(health("tessera.Worker", &status), TS_ENOTFOUND);
  /* A malformed request is rejected, not crashed on. */
  uint8_t *resp;
  size_t len;
  ts_err err = {0};
  static const uint8_t junk[] = {0x0a, 0x7f, 0x01};
  ck_assert_int_eq(ts_rpc_call_sync(chan, HEALTH, junk, sizeof junk,
                                    in_ms(5000), &resp, &len, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "HealthCheckRequest"));
}
END_TEST

/* ---- deadlines, cancellation, stop ------------------------------------ */

START_TEST(deadline_exceeded) {
  start_plain();
  ts_err err = {0};
  int64_t t0 = ts_now_ms();
  int rc = call_text(chan, NEVER, "a", in_ms(200), NULL, 0, &err);
  int64_t took = ts_now_ms() - t0;
  ck_assert_int_eq(rc, TS_ETIMEDOUT);
  ck_assert_int_ge(took, 150);
  ck_assert_int_lt(took, 3000);
  ck_assert_int_eq(wait_parked(1), 1);
  ts_rpc_call *call = unpark();
  /* The server learned of the deadline too. */
  ck_assert(wait_cancelled(call));
  /* A late answer is harmless; the server still stops at once. */
  ts_rpc_call_reply_owned(call, dup_bytes((const uint8_t *)"late", 4), 4);
  ts_rpc_channel_close(chan);
  chan = NULL;
  t0 = ts_now_ms();
  ts_rpc_server_stop(srv, 5000);
  srv = NULL;
  ck_assert_int_lt(ts_now_ms() - t0, 2000);
}
END_TEST

/* A fresh client with one async call whose outcome lands in *p. */
static ts_rpc_client *start_one_async(const char *method, const uint8_t *req,
                                      size_t len, async_probe *p,
                                      ts_rpc_outcall **handle) {
  ts_rpc_client *client;
  ck_assert_int_eq(ts_rpc_client_create(&client, NULL), 0);
  n_done = 0;
  memset(p, 0, sizeof *p);
  p->expect = req;
  p->expect_len = len;
  ck_assert_int_eq(ts_rpc_call_async(client, chan, method, req, len,
                                     in_ms(20000), on_done, p, handle),
                   0);
  return client;
}

START_TEST(async_cancel) {
  start_plain();
  async_probe p;
  ts_rpc_outcall *h = NULL;
  ts_rpc_client *client =
      start_one_async(NEVER, (const uint8_t *)"", 0, &p, &h);
  ck_assert_ptr_nonnull(h);
  ck_assert_int_eq(wait_parked(1), 1);
  ts_rpc_outcall_cancel(h);
  ck_assert(wait_done(1, 5000));
  ck_assert_int_eq(p.status, GRPC_STATUS_CANCELLED);
  ck_assert_int_eq(p.code, TS_ECANCELLED);
  ts_rpc_client_free(client);
  ck_assert_int_eq(atomic_load(&p.done), 1);
  ts_rpc_call *call = unpark();
  ck_assert(wait_cancelled(call));
  ts_rpc_call_fail(call, TS_EINTERNAL, "too late");
}
END_TEST

START_TEST(stop_waits_for_call_in_flight) {
  start_plain();
  async_probe p;
  uint8_t data[40] = {1, 2, 3};
  ts_rpc_client *client = start_one_async(LATER, data, sizeof data, &p, NULL);
  ck_assert(wait_count(&later_started, 1));
  /* The answer comes within the grace period: the call succeeds. */
  ts_rpc_server_stop(srv, 5000);
  srv = NULL;
  ck_assert(wait_done(1, 5000));
  ck_assert_msg(p.match, "status %d %s", p.status, p.message);
  ts_rpc_client_free(client);
}
END_TEST

START_TEST(stop_cancels_unanswered_call) {
  start_plain();
  async_probe p;
  ts_rpc_client *client =
      start_one_async(NEVER, (const uint8_t *)"", 0, &p, NULL);
  ck_assert_int_eq(wait_parked(1), 1);
  int64_t t0 = ts_now_ms();
  ts_rpc_server_stop(srv, 200);
  srv = NULL;
  int64_t took = ts_now_ms() - t0;
  ck_assert_int_ge(took, 150);
  ck_assert_int_lt(took, 3000);
  ck_assert(wait_done(1, 5000));
  ck_assert_int_ne(p.status, GRPC_STATUS_OK);
  ts_rpc_client_free(client);
  /* The handler's answer after stop only frees the call. */
  ts_rpc_call *call = unpark();
  ck_assert(ts_rpc_call_is_cancelled(call));
  ts_rpc_call_reply_owned(call, dup_bytes((const uint8_t *)"x", 1), 1);
}
END_TEST

/* ---- server-side cancellation notices ---------------------------------- */

/* One async call with an empty request, parked by the server (Never or
 * Watch) before this returns. */
static ts_rpc_client *start_parked(const char *method, async_probe *p,
                                   ts_rpc_outcall **handle) {
  ts_rpc_client *client =
      start_one_async(method, (const uint8_t *)"", 0, p, handle);
  ck_assert_int_eq(wait_parked(1), 1);
  return client;
}

START_TEST(notice_on_client_cancel) {
  start_plain();
  async_probe p;
  ts_rpc_outcall *h = NULL;
  ts_rpc_client *client = start_parked(WATCH, &p, &h);
  sleep_ms(50);
  ck_assert_int_eq(atomic_load(&notices), 0); /* nothing before the cancel */
  ts_rpc_outcall_cancel(h);
  ck_assert(wait_done(1, 5000));
  ck_assert_int_eq(p.code, TS_ECANCELLED);
  ck_assert(wait_count(&notices, 1));
  ts_rpc_call *call = unpark();
  ck_assert_ptr_eq(noticed_call, call);
  ck_assert(ts_rpc_call_is_cancelled(call));
  /* The late answer is dropped; the notice never runs again. */
  ts_rpc_call_fail(call, TS_EINTERNAL, "too late");
  ts_rpc_client_free(client);
  sleep_ms(50);
  ck_assert_int_eq(atomic_load(&notices), 1);
}
END_TEST

START_TEST(notice_on_deadline) {
  start_plain();
  ts_err err = {0};
  ck_assert_int_eq(call_text(chan, WATCH, "a", in_ms(200), NULL, 0, &err),
                   TS_ETIMEDOUT);
  ck_assert(wait_count(&notices, 1));
  ts_rpc_call *call = unpark();
  ck_assert_ptr_eq(noticed_call, call);
  ts_rpc_call_reply_owned(call, dup_bytes((const uint8_t *)"late", 4), 4);
  ck_assert_int_eq(atomic_load(&notices), 1);
}
END_TEST

START_TEST(no_notice_after_answer) {
  start_plain();
  async_probe p;
  ts_rpc_client *client = start_one_async(WATCH, (const uint8_t *)"ok", 2, &p,
                                          NULL);
  ck_assert_int_eq(wait_parked(1), 1);
  ts_rpc_call_reply_owned(unpark(), dup_bytes((const uint8_t *)"ok", 2), 2);
  ck_assert(wait_done(1, 5000));
  ck_assert_msg(p.match, "status %d %s", p.status, p.message);
  ts_rpc_client_free(client);
  /* The call ended normally, then the server stops: no notice either way. */
  ts_rpc_server_stop(srv, 1000);
  srv = NULL;
  ck_assert_int_eq(atomic_load(&notices), 0);
}
END_TEST

START_TEST(notice_registered_late_runs_at_once) {
  start_plain();
  async_probe p;
  ts_rpc_outcall *h = NULL;
  ts_rpc_client *client = start_parked(NEVER, &p, &h);
  ts_rpc_outcall_cancel(h);
  ck_assert(wait_done(1, 5000));
  ts_rpc_call *call = unpark();
  ck_assert(wait_cancelled(call));
  sleep_ms(50); /* the close event follows the cancel flag closely */
  ts_rpc_call_on_cancel(call, on_notice, &notices);
  ck_assert_int_eq(atomic_load(&notices), 1); /* ran on this thread */
  ts_rpc_call_fail(call, TS_EINTERNAL, "too late");
  ts_rpc_client_free(client);
}
END_TEST

START_TEST(notice_may_answer_the_call) {
  start_plain();
  atomic_store(&notice_mode, NOTICE_ANSWERS);
  async_probe p;
  ts_rpc_outcall *h = NULL;
  ts_rpc_client *client = start_parked(WATCH, &p, &h);
  ts_rpc_outcall_cancel(h);
  ck_assert(wait_count(&notices, 1));
  ck_assert(wait_done(1, 5000));
  ts_rpc_client_free(client);
  unpark(); /* answered (and maybe freed) by the notice: not touched again */
  ts_rpc_server_stop(srv, 1000);
  srv = NULL;
  ck_assert_int_eq(atomic_load(&notices), 1);
}
END_TEST

/* An answer from another thread while the notice runs waits for it, so the
 * handler may free the notice's state right after answering. */
START_TEST(answer_waits_for_running_notice) {
  start_plain();
  atomic_store(&notice_mode, NOTICE_SLOW);
  async_probe p;
  ts_rpc_outcall *h = NULL;
  ts_rpc_client *client = start_parked(WATCH, &p, &h);
  ts_rpc_call *call = unpark();
  ts_rpc_outcall_cancel(h);
  ck_assert(wait_count(&notice_started, 1));
  ck_assert_int_eq(atomic_load(&notice_finished), 0);
  ts_rpc_call_fail(call, TS_EINTERNAL, "racing the notice");
  ck_assert_int_eq(atomic_load(&notice_finished), 1);
  ck_assert(wait_done(1, 5000));
  ts_rpc_client_free(client);
}
END_TEST

START_TEST(notice_on_server_stop) {
  start_plain();
  async_probe p;
  ts_rpc_client *client = start_parked(WATCH, &p, NULL);
  ts_rpc_server_stop(srv, 100);
  srv = NULL;
  ck_assert_int_eq(atomic_load(&notices), 1);
  ck_assert(wait_done(1, 5000));
  ck_assert_int_ne(p.status, GRPC_STATUS_OK);
  ts_rpc_client_free(client);
  ts_rpc_call *call = unpark();
  ck_assert_ptr_eq(noticed_call, call);
  ts_rpc_call_fail(call, TS_EINTERNAL, "after stop"); /* only frees it */
}
END_TEST

START_TEST(bind_in_use_fails) {
  start_plain();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  ts_rpc_server_opts opts = {.listen = listen};
  ts_rpc_server *other = NULL;
  ts_err err = {0};
  /* gRPC's own complaint is routed through ts_log: catch stderr. */
  FILE *log = tmpfile();
  int saved = dup(STDERR_FILENO);
  dup2(fileno(log), STDERR_FILENO);
  int rc = ts_rpc_server_start(&opts, test_methods, N_TEST_METHODS, &other,
                               NULL, &err);
  dup2(saved, STDERR_FILENO);
  close(saved);
  char logged[8192] = "";
  rewind(log);
  size_t n = fread(logged, 1, sizeof logged - 1, log);
  logged[n] = '\0';
  fclose(log);
  ck_assert_msg(strstr(logged, "ERROR") && strstr(logged, "grpc: ") &&
                    strstr(logged, "Address already in use"),
                "log: %s", logged);
  ck_assert_int_eq(rc, TS_EIO);
  ck_assert_ptr_null(other);
  ck_assert_ptr_nonnull(strstr(err.msg, listen));
  /* The first server is unharmed. */
  ck_assert_int_eq(call_text(chan, ECHO, "ok", in_ms(5000), NULL, 0, &err),
                   0);
}
END_TEST

START_TEST(bad_server_options) {
  ts_err err = {0};
  ts_rpc_server *s = NULL;
  ts_rpc_server_opts opts = {.listen = NULL};
  ck_assert_int_eq(ts_rpc_server_start(&opts, test_methods, N_TEST_METHODS,
                                       &s, NULL, &err),
                   TS_EINVAL);
  opts.listen = "127.0.0.1:0";
  opts.poll_threads = -1;
  ck_assert_int_eq(ts_rpc_server_start(&opts, test_methods, N_TEST_METHODS,
                                       &s, NULL, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "poll_threads"));
  opts.poll_threads = 1;
  ts_rpc_method bad[2] = {test_methods[0], test_methods[0]};
  ck_assert_int_eq(ts_rpc_server_start(&opts, bad, 2, &s, NULL, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, ECHO) != NULL, "%s", err.msg);
  bad[1].path = "noslash";
  ck_assert_int_eq(ts_rpc_server_start(&opts, bad, 2, &s, NULL, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "noslash"));
  bad[1] = test_methods[5];
  bad[1].on_end = NULL;
  ck_assert_int_eq(ts_rpc_server_start(&opts, bad, 2, &s, NULL, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, CONCAT));
  opts.listen = "not an address";
  ck_assert_int_eq(ts_rpc_server_start(&opts, test_methods, 1, &s, NULL,
                                       &err),
                   TS_EIO);
  ck_assert_ptr_null(s);
  ts_rpc_creds creds = {.cert_file = "/nonexistent/cert.pem",
                        .key_file = "/nonexistent/key.pem"};
  opts.listen = "127.0.0.1:0";
  opts.creds = &creds;
  ck_assert_int_eq(ts_rpc_server_start(&opts, test_methods, 1, &s, NULL,
                                       &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/cert.pem"));
  creds.key_file = NULL;
  ck_assert_int_eq(ts_rpc_server_start(&opts, test_methods, 1, &s, NULL,
                                       &err),
                   TS_EINVAL);
  ts_rpc_creds ca_only = {.ca_file = "/nonexistent/ca.pem"};
  ts_rpc_channel *ch = NULL;
  ck_assert_int_eq(ts_rpc_channel_open("127.0.0.1:1", &ca_only, &ch, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/ca.pem"));
  ck_assert_ptr_null(ch);
  ck_assert_int_eq(ts_rpc_channel_open("", NULL, &ch, &err), TS_EINVAL);
}
END_TEST

START_TEST(unreachable_server_unavailable) {
  /* Bind and stop a server to find a port nobody listens on. */
  start_server(NULL);
  ts_rpc_server_stop(srv, 0);
  srv = NULL;
  chan = open_channel(NULL);
  ts_err err = {0};
  ck_assert_int_eq(call_text(chan, ECHO, "a", in_ms(5000), NULL, 0, &err),
                   TS_EUNAVAILABLE);
  /* A malformed target makes a channel that fails every call. */
  ts_rpc_channel *bad = NULL;
  ck_assert_int_eq(ts_rpc_channel_open("bad::::target", NULL, &bad, &err), 0);
  int rc = call_text(bad, ECHO, "a", in_ms(5000), NULL, 0, &err);
  ts_rpc_channel_close(bad);
  ck_assert_int_eq(rc, TS_EUNAVAILABLE);
}
END_TEST

/* ---- limits ----------------------------------------------------------- */

START_TEST(method_request_cap) {
  start_plain();
  ts_err err = {0};
  char req[SMALL_MAX + 2], text[SMALL_MAX + 2];
  memset(req, 'a', SMALL_MAX);
  req[SMALL_MAX] = '\0';
  ck_assert_int_eq(call_text(chan, SMALL, req, in_ms(5000), text, sizeof text,
                             &err), 0);
  ck_assert_str_eq(text, req);
  strcat(req, "b"); /* one byte over */
  ck_assert_int_eq(call_text(chan, SMALL, req, in_ms(5000), NULL, 0, &err),
                   TS_EEXHAUSTED);
  ck_assert_str_eq(err.msg, SMALL ": a request of 101 bytes is over the "
                            "method's limit of 100 bytes");
  /* The health check is a control method: 64 KiB at most. */
  uint8_t *big = random_bytes(TS_RPC_CONTROL_MAX_REQUEST + 1);
  uint8_t *resp = NULL;
  size_t len = 0;
  ck_assert_int_eq(ts_rpc_call_sync(chan, HEALTH, big,
                                    TS_RPC_CONTROL_MAX_REQUEST + 1,
                                    in_ms(5000), &resp, &len, &err),
                   TS_EEXHAUSTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "limit of 65536 bytes"));
  free(big);
  /* The server goes on serving. */
  ck_assert_int_eq(call_text(chan, ECHO, "ok", in_ms(5000), text, sizeof text,
                             &err), 0);
  ck_assert_str_eq(text, "ok");
}
END_TEST

/* The process's max message size applies to every method: over it, gRPC
 * refuses the message (the client's channel does not even send it). */
START_TEST(process_max_message) {
  ts_err err = {0};
  ts_rpc_limits l = {.max_message = TS_RPC_MAX_MESSAGE_MIN};
  ck_assert_int_eq(ts_rpc_set_limits(&l, &err), 0);
  ck_assert_uint_eq(ts_rpc_get_limits().max_message, TS_RPC_MAX_MESSAGE_MIN);
  ck_assert_int_eq(ts_rpc_get_limits().max_streams,
                   TS_RPC_MAX_STREAMS_DEFAULT);
  start_plain();
  for (size_t n = TS_RPC_MAX_MESSAGE_MIN - 64; n <= TS_RPC_MAX_MESSAGE_MIN + 1;
       n += 65) {
    uint8_t *req = random_bytes(n), *resp = NULL;
    size_t len = 0;
    int rc = ts_rpc_call_sync(chan, ECHO, req, n, in_ms(5000), &resp, &len,
                              &err);
    if (n <= TS_RPC_MAX_MESSAGE_MIN) {
      ck_assert_msg(rc == 0, "%zu bytes: %s", n, err.msg);
      ck_assert_uint_eq(len, n);
      ck_assert(memcmp(req, resp, n) == 0);
    } else {
      ck_assert_int_eq(rc, TS_EEXHAUSTED);
    }
    free(req);
    free(resp);
  }
}
END_TEST

START_TEST(bad_limits_refused) {
  ts_err err = {0};
  ts_rpc_limits bad[] = {{.max_message = TS_RPC_MAX_MESSAGE_MIN - 1},
                         {.max_message = TS_RPC_MAX_MESSAGE_MAX + 1u},
                         {.max_streams = -1},
                         {.max_streams = TS_RPC_MAX_STREAMS_MAX + 1}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ck_assert_int_eq(ts_rpc_set_limits(&bad[i], &err), TS_EINVAL);
    ck_assert_uint_eq(ts_rpc_get_limits().max_message,
                      TS_RPC_MAX_MESSAGE_DEFAULT);
    ck_assert_int_eq(ts_rpc_get_limits().max_streams,
                     TS_RPC_MAX_STREAMS_DEFAULT);
  }
  ck_assert_ptr_nonnull(strstr(err.msg, "max streams"));
}
END_TEST

/* The control pool: TS_RPC_OFFLOAD_THREADS jobs run, TS_RPC_OFFLOAD_QUEUE
 * wait, one more is refused at once; every accepted call is answered once
 * the jobs may finish. _i = 1: ts_rpc_offload_stop answers the queued ones
 * UNAVAILABLE and refuses new ones, while the running ones still finish. */
START_TEST(offload_queue_bounded) {
  bool stop = _i == 1;
  start_plain();
  ts_rpc_client *client;
  ck_assert_int_eq(ts_rpc_client_create(&client, NULL), 0);
  n_done = 0;
  enum { RUN = TS_RPC_OFFLOAD_THREADS, WAIT = TS_RPC_OFFLOAD_QUEUE, OVER = 5,
         N = RUN + WAIT + OVER };
  static async_probe probes[N];
  static uint8_t *reqs[N];
  memset(probes, 0, sizeof probes);
  for (int i = 0; i < RUN; i++)
    start_probe(client, OFFLOAD, &probes[i], &reqs[i], 8);
  ck_assert(wait_count(&offload_running, RUN));
  for (int i = RUN; i < N; i++)
    start_probe(client, OFFLOAD, &probes[i], &reqs[i], 8);
  ck_assert(wait_done(OVER, 10000));
  sleep_ms(100);
  ck_assert_int_eq(n_done, OVER); /* the others wait for the gate */
  for (int i = RUN + WAIT; i < N; i++) {
    ck_assert_int_eq(probes[i].status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    ck_assert_str_eq(probes[i].message,
                     "control queue full: 4 control calls run and 32 wait; "
                     "try again later");
  }
  if (stop) {
    ts_rpc_offload_stop(100); /* the running ones are still held */
    ck_assert(wait_done(OVER + WAIT, 10000));
    for (int i = RUN; i < RUN + WAIT; i++) {
      ck_assert_int_eq(probes[i].status, GRPC_STATUS_UNAVAILABLE);
      ck_assert_str_eq(probes[i].message, "the daemon is stopping");
    }
    ts_err err = {0};
    ck_assert_int_eq(call_text(chan, OFFLOAD, "late", in_ms(5000), NULL, 0,
                               &err), TS_EUNAVAILABLE);
  }
  open_gate();
  ts_rpc_client_free(client); /* waits for every callback */
  for (int i = 0; i < (stop ? RUN : RUN + WAIT); i++)
    ck_assert_msg(probes[i].match, "call %d: %s", i, probes[i].message);
  for (int i = 0; i < N; i++) free(reqs[i]);
}
END_TEST

static void cases(Suite *s) {
  TCase *tc = TS_CHECK_CASE(
      s, "rpc", 120, setup, teardown, status_mapping, now_is_monotonic_ms,
      sync_echo_sizes, arena_unpack_inline_and_spilled, fail_code_and_message,
      unknown_method_unimplemented, peer_metadata_deadline, health_check,
      deadline_exceeded, async_cancel, stop_waits_for_call_in_flight,
      stop_cancels_unanswered_call, notice_on_client_cancel, notice_on_deadline,
      no_notice_after_answer, notice_registered_late_runs_at_once,
      notice_may_answer_the_call, answer_waits_for_running_notice,
      notice_on_server_stop, bind_in_use_fails, bad_server_options,
      unreachable_server_unavailable, method_request_cap, process_max_message,
      bad_limits_refused);
  tcase_add_loop_test(tc, async_echo_sizes, 0, 2);
  tcase_add_loop_test(tc, async_100_concurrent, 0, 2);
  tcase_add_loop_test(tc, offload_queue_bounded, 0, 2);
}

const ts_check_suite ts_check_this_suite = {.name = "rpc", .cases = cases};
