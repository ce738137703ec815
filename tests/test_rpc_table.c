/*
 * test_rpc_table.c - method tables (rpc_table.h) on a loopback server: a
 * typed entry gets its request unpacked, bad bytes are answered
 * INVALID_ARGUMENT naming the message type without reaching the handler,
 * a raw entry gets the bytes as sent, and every entry is bound to the
 * service's user pointer.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "health.pb-c.h"
#include "rpc_table.h"

#define TYPED "/test.Table/Typed"
#define RAW "/test.Table/Raw"

static atomic_int typed_calls;
static int service_user; /* its address is the service's user pointer */

static void reply_text(ts_rpc_call *call, const char *text) {
  size_t n = strlen(text);
  uint8_t *buf = malloc(n ? n : 1);
  memcpy(buf, text, n);
  ts_rpc_call_reply_owned(call, buf, n);
}

/* Answers the request's `service` field, or FAILED_PRECONDITION when the
 * user pointer is not the service's. */
static void handle_typed(ts_rpc_call *call, const ProtobufCMessage *msg,
                         void *user) {
  atomic_fetch_add(&typed_calls, 1);
  const Grpc__Health__V1__HealthCheckRequest *req =
      (const Grpc__Health__V1__HealthCheckRequest *)msg;
  if (user != &service_user) {
    ts_rpc_call_fail(call, TS_EPRECONDITION, "wrong user pointer");
    return;
  }
  reply_text(call, req->service);
}

/* Answers the number of bytes it was given. */
static void handle_raw(ts_rpc_call *call, const uint8_t *data, size_t len,
                       void *user) {
  (void)data;
  char text[32];
  snprintf(text, sizeof text, "%zu%s", len, user == &service_user ? "" : "!");
  reply_text(call, text);
}

static const ts_rpc_handler table[] = {
    {TYPED, &grpc__health__v1__health_check_request__descriptor, handle_typed,
     NULL},
    {RAW, &grpc__health__v1__health_check_request__descriptor, NULL,
     handle_raw},
};
#define N_ENTRIES ((int)(sizeof table / sizeof table[0]))

static ts_rpc_binding bindings[N_ENTRIES];
static ts_rpc_server *srv;
static ts_rpc_channel *chan;

static void setup(void) {
  ts_rpc_init();
  atomic_store(&typed_calls, 0);
  ts_rpc_method methods[N_ENTRIES];
  ck_assert_int_eq(
      ts_rpc_table_methods(table, N_ENTRIES, &service_user, bindings, methods),
      N_ENTRIES);
  ts_err err = {0};
  ts_rpc_server_opts opts = {.listen = "127.0.0.1:0"};
  int port = 0;
  ck_assert_msg(ts_rpc_server_start(&opts, methods, N_ENTRIES, &srv, &port,
                                    &err) == TS_OK,
                "server start: %s", err.msg);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  ck_assert_int_eq(ts_rpc_channel_open(target, NULL, &chan, &err), TS_OK);
}

static void teardown(void) {
  ts_rpc_channel_close(chan);
  ts_rpc_server_stop(srv, 1000);
  ts_rpc_shutdown();
}

/* A sync call; on success the answer as text in `text`. */
static int call(const char *method, const uint8_t *req, size_t len,
                char *text, size_t size, ts_err *err) {
  uint8_t *resp = NULL;
  size_t n = 0;
  int rc = ts_rpc_call_sync(chan, method, req, len, ts_now_ms() + 5000, &resp,
                            &n, err);
  if (rc == TS_OK) {
    snprintf(text, size, "%.*s", (int)n, (const char *)resp);
    free(resp);
  }
  return rc;
}

START_TEST(test_typed_gets_its_message) {
  Grpc__Health__V1__HealthCheckRequest rq =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  rq.service = "tessera.Worker";
  uint8_t buf[64];
  size_t n = grpc__health__v1__health_check_request__pack(&rq, buf);
  char text[64];
  ts_err err = {0};
  ck_assert_int_eq(call(TYPED, buf, n, text, sizeof text, &err), TS_OK);
  ck_assert_str_eq(text, "tessera.Worker");
  /* The empty message is a valid request too. */
  ck_assert_int_eq(call(TYPED, buf, 0, text, sizeof text, &err), TS_OK);
  ck_assert_str_eq(text, "");
  ck_assert_int_eq(atomic_load(&typed_calls), 2);
}
END_TEST

START_TEST(test_bad_bytes_never_reach_the_handler) {
  static const uint8_t junk[][3] = {{0x0a, 0x7f, 0x01}, {0xff, 0xff, 0xff}};
  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
    char text[64];
    ts_err err = {0};
    ck_assert_int_eq(call(TYPED, junk[i], 3, text, sizeof text, &err),
                     TS_EINVAL);
    ck_assert_msg(strstr(err.msg,
                         "malformed grpc.health.v1.HealthCheckRequest (3 "
                         "bytes)"),
                  "message: %s", err.msg);
  }
  ck_assert_int_eq(atomic_load(&typed_calls), 0);
}
END_TEST

START_TEST(test_raw_gets_the_bytes) {
  static const uint8_t junk[] = {0x0a, 0x7f, 0x01};
  char text[64];
  ts_err err = {0};
  ck_assert_int_eq(call(RAW, junk, sizeof junk, text, sizeof text, &err),
                   TS_OK);
  ck_assert_str_eq(text, "3");
}
END_TEST

START_TEST(test_bindings) {
  ts_rpc_method out[N_ENTRIES];
  ts_rpc_binding b[N_ENTRIES];
  int user;
  ck_assert_int_eq(ts_rpc_table_methods(table, N_ENTRIES, &user, b, out),
                   N_ENTRIES);
  for (int i = 0; i < N_ENTRIES; i++) {
    ck_assert_str_eq(out[i].path, table[i].path);
    ck_assert_int_eq(out[i].kind, TS_RPC_UNARY);
    ck_assert_ptr_eq(b[i].handler, &table[i]);
    ck_assert_ptr_eq(b[i].user, &user);
  }
  ck_assert_ptr_eq(out[0].user, &b[0]);      /* typed: through the binding */
  ck_assert_ptr_eq(out[1].unary, handle_raw); /* raw: called directly */
  ck_assert_ptr_eq(out[1].user, &user);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("rpc_table");
  TCase *tc = ts_check_tcase(s, "dispatch", 30, setup, teardown);
  tcase_add_test(tc, test_typed_gets_its_message);
  tcase_add_test(tc, test_bad_bytes_never_reach_the_handler);
  tcase_add_test(tc, test_raw_gets_the_bytes);
  TCase *pure = ts_check_tcase(s, "bindings", 0, NULL, NULL);
  tcase_add_test(pure, test_bindings);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
