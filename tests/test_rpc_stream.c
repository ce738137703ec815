/*
 * test_rpc_stream.c - the gRPC layer's client streams (Concat: sizes,
 * rejection, deadlines, unknown methods, sharing the poller with unary
 * calls, stop mid-stream) and TLS / mutual TLS, over real sockets on
 * 127.0.0.1 with rpc_check.h's test server.
 */
#include <check.h>

#include "check_main.h"
#include "rpc_check.h"

/* ---- client streaming ------------------------------------------------- */

static ts_rpc_stream *open_concat(int64_t timeout_ms) {
  ts_rpc_stream *st = NULL;
  ts_err err = {0};
  int rc = ts_rpc_stream_open(chan, CONCAT, in_ms(timeout_ms), &st, &err);
  ck_assert_msg(rc == 0, "open: %s", err.msg);
  return st;
}

static int send_text(ts_rpc_stream *st, const char *text, ts_err *err) {
  return ts_rpc_stream_send(st, (const uint8_t *)text, strlen(text), err);
}

/* Finishes the stream; the response goes to text when it succeeds. */
static int finish_text(ts_rpc_stream *st, char *text, size_t size,
                       ts_err *err) {
  uint8_t *resp = (uint8_t *)"unset";
  size_t len = 7;
  int rc = ts_rpc_stream_finish(st, &resp, &len, err);
  if (rc == 0) {
    snprintf(text, size, "%.*s", (int)len, (const char *)resp);
    free(resp);
  } else {
    ck_assert_ptr_null(resp);
    ck_assert_uint_eq(len, 0);
  }
  return rc;
}

/* The server's Concat handler (rpc_check.h) has ended ok streams normally
 * and cancelled streams cancelled. */
static void expect_ends(int ok, int cancelled) {
  ck_assert_int_eq(atomic_load(&ends_ok), ok);
  ck_assert_int_eq(atomic_load(&ends_cancelled), cancelled);
}

START_TEST(stream_20mib_in_1mib_chunks) {
  start_plain();
  size_t chunk = 1u << 20, total = 20u << 20;
  uint8_t *data = random_bytes(total);
  ts_err err = {0};
  ts_rpc_stream *st = open_concat(60000);
  for (size_t off = 0; off < total; off += chunk)
    ck_assert_msg(ts_rpc_stream_send(st, data + off, chunk, &err) == 0, "%s",
                  err.msg);
  uint8_t *resp = NULL;
  size_t len = 0;
  ck_assert_msg(ts_rpc_stream_finish(st, &resp, &len, &err) == 0, "%s",
                err.msg);
  ck_assert_uint_eq(len, total);
  ck_assert(memcmp(resp, data, total) == 0);
  free(resp);
  free(data);
  expect_ends(1, 0);
}
END_TEST

START_TEST(stream_empty_and_odd_chunks) {
  start_plain();
  ts_err err = {0};
  char text[16] = "unset";
  ck_assert_int_eq(finish_text(open_concat(5000), text, sizeof text, &err), 0);
  ck_assert_str_eq(text, "");
  ts_rpc_stream *st = open_concat(5000);
  ck_assert_int_eq(send_text(st, "ab", &err), 0);
  ck_assert_int_eq(send_text(st, "", &err), 0);
  ck_assert_int_eq(send_text(st, "cde", &err), 0);
  ck_assert_int_eq(finish_text(st, text, sizeof text, &err), 0);
  ck_assert_str_eq(text, "abcde");
  ck_assert_int_eq(atomic_load(&ends_ok), 2);
}
END_TEST

START_TEST(stream_message_rejected) {
  start_plain();
  ts_err err = {0};
  ts_rpc_stream *st = open_concat(5000);
  ck_assert_int_eq(send_text(st, "ok", &err), 0);
  int rc = send_text(st, "FAIL", &err);
  /* The send itself may still be accepted by flow control; then the error
   * comes with a later send or with finish. */
  for (int i = 0; rc == 0 && i < 100; i++) {
    sleep_ms(5);
    rc = send_text(st, "more", &err);
  }
  ck_assert_int_eq(rc, TS_EINVAL);
  ck_assert_str_eq(err.msg, "chunk 'FAIL' rejected");
  ck_assert_int_eq(finish_text(st, NULL, 0, &err), TS_EINVAL);
  ck_assert_str_eq(err.msg, "chunk 'FAIL' rejected");
  ck_assert(wait_count(&ends_cancelled, 1));
  expect_ends(0, 1);
}
END_TEST

START_TEST(stream_deadline_mid_stream) {
  start_plain();
  ts_err err = {0};
  ts_rpc_stream *st = open_concat(300);
  ck_assert_int_eq(send_text(st, "ab", &err), 0);
  sleep_ms(500);
  ck_assert_int_eq(finish_text(st, NULL, 0, &err), TS_ETIMEDOUT);
  ck_assert(wait_count(&ends_cancelled, 1));
  expect_ends(0, 1);
}
END_TEST

START_TEST(stream_unknown_method) {
  start_plain();
  ts_rpc_stream *st = NULL;
  ts_err err = {0};
  int rc = ts_rpc_stream_open(chan, "/test.Svc/NoStream", in_ms(5000), &st,
                              &err);
  if (rc == 0) {
    rc = send_text(st, "x", &err);
    int rc2 = finish_text(st, NULL, 0, &err);
    if (rc == 0) rc = rc2;
  }
  ck_assert_int_eq(rc, TS_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "/test.Svc/NoStream"));
}
END_TEST

/* Each message of a stream is held to the method's cap; the handler
 * never sees the one over it. */
START_TEST(stream_message_over_cap) {
  start_plain();
  ts_rpc_stream *st = NULL;
  ts_err err = {0};
  ck_assert_int_eq(ts_rpc_stream_open(chan, SMALL_CONCAT, in_ms(5000), &st,
                                      &err), 0);
  char text[SMALL_MAX + 2];
  memset(text, 'x', SMALL_MAX + 1);
  text[SMALL_MAX + 1] = '\0';
  ck_assert_int_eq(send_text(st, "ab", &err), 0);
  int rc = send_text(st, text, &err); /* may fail once the server answered */
  ck_assert(rc == 0 || rc == TS_EEXHAUSTED || rc == TS_EUNAVAILABLE);
  ck_assert_int_eq(finish_text(st, NULL, 0, &err), TS_EEXHAUSTED);
  ck_assert_str_eq(err.msg, SMALL_CONCAT ": a request of 101 bytes is over "
                            "the method's limit of 100 bytes");
  ck_assert(wait_count(&ends_cancelled, 1));
  expect_ends(0, 1);
  /* A stream within the cap goes through. */
  ck_assert_int_eq(ts_rpc_stream_open(chan, SMALL_CONCAT, in_ms(5000), &st,
                                      &err), 0);
  ck_assert_int_eq(send_text(st, "ab", &err), 0);
  ck_assert_int_eq(send_text(st, "cd", &err), 0);
  ck_assert_int_eq(finish_text(st, text, sizeof text, &err), 0);
  ck_assert_str_eq(text, "abcd");
}
END_TEST

typedef struct stream_job {
  ts_rpc_channel *ch;
  int index;
  int rc;
  bool match;
} stream_job;

/* Streams 37 chunks of odd sizes and checks the echoed concatenation. */
static void *stream_worker(void *arg) {
  stream_job *job = arg;
  size_t total = 0, sizes_[37];
  for (int i = 0; i < 37; i++) total += sizes_[i] = (size_t)(i * 977 + job->index);
  uint8_t *data = random_bytes(total);
  ts_rpc_stream *st = NULL;
  ts_err err = {0};
  job->rc = ts_rpc_stream_open(job->ch, CONCAT, in_ms(30000), &st, &err);
  size_t off = 0;
  for (int i = 0; i < 37 && job->rc == 0; i++) {
    job->rc = ts_rpc_stream_send(st, data + off, sizes_[i], &err);
    off += sizes_[i];
  }
  uint8_t *resp = NULL;
  size_t len = 0;
  if (job->rc == 0) job->rc = ts_rpc_stream_finish(st, &resp, &len, &err);
  job->match = job->rc == 0 && len == total && memcmp(resp, data, len) == 0;
  free(resp);
  free(data);
  return NULL;
}

START_TEST(streams_and_unary_one_poller) {
  ts_err err = {0};
  ts_rpc_server_opts opts = {.listen = "127.0.0.1:0", .poll_threads = 1};
  ck_assert_int_eq(ts_rpc_server_start(&opts, test_methods, N_TEST_METHODS,
                                       &srv, &port, &err),
                   0);
  chan = open_channel(NULL);
  enum { N = 4 };
  pthread_t threads[N];
  stream_job jobs[N];
  for (int i = 0; i < N; i++) {
    jobs[i] = (stream_job){.ch = chan, .index = i};
    ck_assert_int_eq(pthread_create(&threads[i], NULL, stream_worker, &jobs[i]),
                     0);
  }
  for (int i = 0; i < 20; i++) {
    uint8_t *resp;
    size_t len;
    uint8_t req[3] = {(uint8_t)i, 7, 9};
    ck_assert_int_eq(ts_rpc_call_sync(chan, i % 2 ? ECHO : LATER, req, 3,
                                      in_ms(20000), &resp, &len, &err),
                     0);
    ck_assert(len == 3 && memcmp(resp, req, 3) == 0);
    free(resp);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(threads[i], NULL);
    ck_assert_msg(jobs[i].rc == 0 && jobs[i].match, "stream %d: rc %d", i,
                  jobs[i].rc);
  }
  expect_ends(N, 0);
}
END_TEST

START_TEST(stop_mid_stream) {
  start_plain();
  ts_err err = {0};
  ts_rpc_stream *st = open_concat(10000);
  ck_assert_int_eq(send_text(st, "ab", &err), 0);
  for (int i = 0; i < 200 && !concat_calls[0].call; i++) sleep_ms(5);
  int64_t t0 = ts_now_ms();
  ts_rpc_server_stop(srv, 100);
  srv = NULL;
  ck_assert_int_lt(ts_now_ms() - t0, 3000);
  expect_ends(0, 1);
  send_text(st, "cd", &err); /* may or may not fail yet */
  ck_assert_int_lt(finish_text(st, NULL, 0, &err), 0);
  ck_assert_int_lt(ts_now_ms() - t0, 5000);
}
END_TEST

/* ---- TLS -------------------------------------------------------------- */

static char tls_dir[64];

/* Makes a CA, a server certificate for 127.0.0.1 and a client certificate
 * with the openssl CLI. Returns 0 when openssl is missing. */
static int make_certs(void) {
  snprintf(tls_dir, sizeof tls_dir, "/tmp/ts_rpc_tls_XXXXXX");
  if (!mkdtemp(tls_dir)) return 0;
  char cmd[4096];
  snprintf(
      cmd, sizeof cmd,
      "cd %s && "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem "
      "-days 2 -subj /CN=ts-test-ca >/dev/null 2>&1 && "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
      "-subj /CN=localhost >/dev/null 2>&1 && "
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial -out server.pem -days 2 -extfile san.ext "
      ">/dev/null 2>&1 && "
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
      "-subj /CN=ts-client >/dev/null 2>&1 && "
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial -out client.pem -days 2 >/dev/null 2>&1 && "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key "
      "-out other.pem -days 2 -subj /CN=intruder >/dev/null 2>&1",
      tls_dir);
  return system(cmd) == 0;
}

static void remove_certs(void) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
  ck_assert_int_eq(system(cmd), 0);
}

#define TLS_PATH(buf, name) \
  (snprintf(buf, sizeof buf, "%s/%s", tls_dir, name), buf)

static int echo_once(ts_rpc_channel *ch, ts_err *err) {
  char text[16];
  int rc = call_text(ch, ECHO, "tls", in_ms(5000), text, sizeof text, err);
  if (rc == 0) ck_assert_str_eq(text, "tls");
  return rc;
}

START_TEST(tls_and_mtls) {
  if (!make_certs()) {
    fprintf(stderr, "tls_and_mtls: openssl CLI failed; test skipped\n");
    return;
  }
  char ca[128], scert[128], skey[128], ccert[128], ckey[128], ocert[128],
      okey[128];
  TLS_PATH(ca, "ca.pem");
  TLS_PATH(scert, "server.pem");
  TLS_PATH(skey, "server.key");
  TLS_PATH(ccert, "client.pem");
  TLS_PATH(ckey, "client.key");
  TLS_PATH(ocert, "other.pem");
  TLS_PATH(okey, "other.key");
  ts_err err = {0};

  /* TLS: the client verifies the server with the CA. */
  ts_rpc_creds server_tls = {.cert_file = scert, .key_file = skey};
  ts_rpc_creds client_ca = {.ca_file = ca};
  start_server(&server_tls);
  ts_rpc_channel *ch = open_channel(&client_ca);
  ck_assert_msg(echo_once(ch, &err) == 0, "%s", err.msg);
  ts_rpc_channel_close(ch);
  ch = open_channel(NULL); /* plaintext to a TLS port */
  ck_assert_int_eq(echo_once(ch, &err), TS_EUNAVAILABLE);
  ts_rpc_channel_close(ch);
  ts_rpc_server_stop(srv, 1000);

  /* mTLS: the server requires a client certificate signed by the CA. */
  ts_rpc_creds server_mtls = {.cert_file = scert, .key_file = skey,
                              .ca_file = ca};
  ts_rpc_creds client_cert = {.cert_file = ccert, .key_file = ckey,
                              .ca_file = ca};
  ts_rpc_creds client_other = {.cert_file = ocert, .key_file = okey,
                               .ca_file = ca};
  start_server(&server_mtls);
  ch = open_channel(&client_cert);
  ck_assert_msg(echo_once(ch, &err) == 0, "%s", err.msg);
  ts_rpc_channel_close(ch);
  ch = open_channel(&client_ca); /* no client certificate */
  ck_assert_int_eq(echo_once(ch, &err), TS_EUNAVAILABLE);
  ts_rpc_channel_close(ch);
  ch = open_channel(&client_other); /* a certificate from another CA */
  ck_assert_int_eq(echo_once(ch, &err), TS_EUNAVAILABLE);
  ts_rpc_channel_close(ch);
  ts_rpc_server_stop(srv, 1000);
  srv = NULL;
  remove_certs();
}
END_TEST

/* Rotation (ts_rpc_creds_reload): a server moves to a certificate from a
 * new CA with a bundle of both CAs, a stream open across the reload
 * finishes, a channel follows its rewritten CA file, and a bad file keeps
 * the old bytes in force. */
START_TEST(tls_reload) {
  if (!make_certs()) {
    ck_abort_msg("tls_reload: openssl CLI failed");
  }
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "cd %s && cp server.pem rot.pem && cp server.key rot.key && "
           "cp ca.pem rot_ca.pem && cp ca.pem cli_ca.pem && "
           "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca2.key "
           "-out ca2.pem -days 2 -subj /CN=ts-test-ca2 >/dev/null 2>&1 && "
           "openssl req -newkey rsa:2048 -nodes -keyout server2.key "
           "-out server2.csr -subj /CN=localhost >/dev/null 2>&1 && "
           "openssl x509 -req -in server2.csr -CA ca2.pem -CAkey ca2.key "
           "-CAcreateserial -out server2.pem -days 2 -extfile san.ext "
           ">/dev/null 2>&1",
           tls_dir);
  ck_assert_int_eq(system(cmd), 0);
  char rot[128], rotkey[128], rotca[128], cca[128], ccert[128], ckey[128],
      ca2[128];
  TLS_PATH(rot, "rot.pem");
  TLS_PATH(rotkey, "rot.key");
  TLS_PATH(rotca, "rot_ca.pem");
  TLS_PATH(cca, "cli_ca.pem");
  TLS_PATH(ccert, "client.pem");
  TLS_PATH(ckey, "client.key");
  TLS_PATH(ca2, "ca2.pem");
  ts_err err = {0};
  ts_rpc_creds server = {.cert_file = rot, .key_file = rotkey,
                         .ca_file = rotca};
  ts_rpc_creds client = {.cert_file = ccert, .key_file = ckey, .ca_file = cca};
  ts_rpc_creds client_ca2 = {.cert_file = ccert, .key_file = ckey,
                             .ca_file = ca2};
  start_server(&server);
  ts_rpc_channel *ch = open_channel(&client);
  ck_assert_msg(echo_once(ch, &err) == 0, "%s", err.msg);

  /* A bad certificate file: the reload fails, the old one stays. */
  snprintf(cmd, sizeof cmd, "cd %s && echo garbage > rot.pem", tls_dir);
  ck_assert_int_eq(system(cmd), 0);
  ck_assert_int_eq(ts_rpc_creds_reload(&err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "rot.pem"));
  ts_rpc_channel *fresh = open_channel(&client);
  ck_assert_msg(echo_once(fresh, &err) == 0, "%s", err.msg);
  ts_rpc_channel_close(fresh);

  /* The new CA's certificate, roots of both CAs; a stream spans it. */
  ts_rpc_stream *st = NULL;
  ck_assert_int_eq(ts_rpc_stream_open(ch, CONCAT, in_ms(10000), &st, &err), 0);
  ck_assert_int_eq(send_text(st, "before ", &err), 0);
  snprintf(cmd, sizeof cmd,
           "cd %s && cp server2.pem rot.pem && cp server2.key rot.key && "
           "cat ca.pem ca2.pem > rot_ca.pem", tls_dir);
  ck_assert_int_eq(system(cmd), 0);
  ck_assert_msg(ts_rpc_creds_reload(&err) == 0, "%s", err.msg);
  ck_assert_int_eq(send_text(st, "after", &err), 0);
  char text[64];
  ck_assert_msg(finish_text(st, text, sizeof text, &err) == 0, "%s", err.msg);
  ck_assert_str_eq(text, "before after");
  /* New handshakes present the new certificate: only CA2 verifies it. */
  fresh = open_channel(&client_ca2);
  ck_assert_msg(echo_once(fresh, &err) == 0, "%s", err.msg);
  ts_rpc_channel_close(fresh);
  fresh = open_channel(&client);
  ck_assert_int_eq(echo_once(fresh, &err), TS_EUNAVAILABLE);
  ts_rpc_channel_close(fresh);
  /* The old channel keeps its connection (made before); once its CA file
   * names CA2 it renews itself and serves on a new one. */
  ck_assert_msg(echo_once(ch, &err) == 0, "%s", err.msg);
  snprintf(cmd, sizeof cmd, "cd %s && cp ca2.pem cli_ca.pem", tls_dir);
  ck_assert_int_eq(system(cmd), 0);
  ck_assert_msg(ts_rpc_creds_reload(&err) == 0, "%s", err.msg);
  ck_assert_msg(echo_once(ch, &err) == 0, "%s", err.msg);
  ts_rpc_channel_close(ch);
  ts_rpc_server_stop(srv, 1000);
  srv = NULL;
  remove_certs();
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "stream", 120, setup, teardown, stream_20mib_in_1mib_chunks,
                stream_empty_and_odd_chunks, stream_message_rejected,
                stream_deadline_mid_stream, stream_unknown_method,
                stream_message_over_cap,
                streams_and_unary_one_poller, stop_mid_stream, tls_and_mtls,
                tls_reload);
}

const ts_check_suite ts_check_this_suite = {.name = "rpc_stream",
                                            .cases = cases};
