/*
 * test_membership.c - the workers a coordinator knows
 * (coordinator/membership.c), against a fake worker served here: an
 * in-process ts_rpc server that answers Status with fixed capacity,
 * HasShard with a chosen answer, and records every LoadShard chunk; its
 * grpc.health.v1 answer is the rpc library's (ts_rpc_server_set_serving).
 *
 * Checked: a worker's capacity comes from its Status; an unreachable one is
 * added as DOWN; find and the live count; the state names and placement
 * targets of UP, LEAVING, LEFT and DOWN; the prober's health of a serving,
 * a stopping and an unreachable worker in one round; a shard upload in
 * 1 MiB chunks (contiguous, size and label on the first), and none when
 * the worker already holds it; a probe of a worker that went away.
 */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "membership.h"
#include "worker.pb-c.h"

#define SVC "/tessera.worker.v1.Worker/"

/* ---- the fake worker ----------------------------------------------------- */

static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static int has_shard_answer;  /* what HasShard says */
static int load_calls, chunks;
static uint8_t *received;     /* LoadShard's bytes, at their offsets */
static size_t received_len, announced;
static char label[128];
static bool chunks_ok;        /* contiguous; size and label on the first only */

static void reply(ts_rpc_call *call, const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  protobuf_c_message_pack(m, buf);
  ts_rpc_call_reply_owned(call, buf, len);
}

static void fake_status(ts_rpc_call *call, const uint8_t *req, size_t len,
                        void *user) {
  (void)req, (void)len, (void)user;
  Tessera__Worker__V1__StatusResponse st =
      TESSERA__WORKER__V1__STATUS_RESPONSE__INIT;
  st.threads = 3;
  st.memory_limit = 123456789;
  st.blas_core = "FakeCore";
  reply(call, &st.base);
}

static void fake_has_shard(ts_rpc_call *call, const uint8_t *req, size_t len,
                           void *user) {
  (void)user;
  Tessera__Worker__V1__HasShardRequest *r =
      tessera__worker__v1__has_shard_request__unpack(NULL, len, req);
  ck_assert_ptr_nonnull(r);
  ck_assert_uint_eq(r->n_shard_ids, 1);
  tessera__worker__v1__has_shard_request__free_unpacked(r, NULL);
  protobuf_c_boolean present[1];
  pthread_mutex_lock(&fake_mu);
  present[0] = has_shard_answer;
  pthread_mutex_unlock(&fake_mu);
  Tessera__Worker__V1__HasShardResponse resp =
      TESSERA__WORKER__V1__HAS_SHARD_RESPONSE__INIT;
  resp.n_present = 1;
  resp.present = present;
  reply(call, &resp.base);
}

static int fake_chunk(ts_rpc_call *call, const uint8_t *msg, size_t len,
                      void *user, ts_err *err) {
  (void)call, (void)user;
  Tessera__Worker__V1__LoadShardChunk *c =
      tessera__worker__v1__load_shard_chunk__unpack(NULL, len, msg);
  if (!c) return ts_err_set(err, TS_EINVAL, "malformed chunk");
  pthread_mutex_lock(&fake_mu);
  if (chunks++ == 0) {
    announced = c->total_bytes;
    snprintf(label, sizeof label, "%s", c->label);
    received = malloc(announced ? announced : 1);
  } else if (c->total_bytes || c->label[0]) {
    chunks_ok = false;
  }
  if (c->offset != received_len || received_len + c->data.len > announced)
    chunks_ok = false;
  else
    memcpy(received + received_len, c->data.data, c->data.len);
  received_len += c->data.len;
  pthread_mutex_unlock(&fake_mu);
  tessera__worker__v1__load_shard_chunk__free_unpacked(c, NULL);
  return 0;
}

static void fake_load_end(ts_rpc_call *call, void *user, int cancelled) {
  (void)user;
  pthread_mutex_lock(&fake_mu);
  load_calls++;
  pthread_mutex_unlock(&fake_mu);
  if (cancelled) return;
  Tessera__Worker__V1__LoadShardResponse resp =
      TESSERA__WORKER__V1__LOAD_SHARD_RESPONSE__INIT;
  reply(call, &resp.base);
}

static const ts_rpc_method fake_methods[] = {
    {.path = SVC "Status", .kind = TS_RPC_UNARY, .unary = fake_status},
    {.path = SVC "HasShard", .kind = TS_RPC_UNARY, .unary = fake_has_shard},
    {.path = SVC "LoadShard",
     .kind = TS_RPC_CLIENT_STREAM,
     .on_message = fake_chunk,
     .on_end = fake_load_end},
};

static ts_rpc_server *fake;
static char fake_address[64];
static ts_membership members;

/* An address nothing listens on: a port bound, then released. */
static char dead_address[64];

static void setup(void) {
  ts_rpc_init();
  ts_err err = {0};
  int port = 0;
  ts_rpc_server_opts opts = {.listen = "127.0.0.1:0"};
  ck_assert_int_eq(ts_rpc_server_start(&opts, fake_methods, 3, &fake, &port,
                                       &err),
                   TS_OK);
  snprintf(fake_address, sizeof fake_address, "127.0.0.1:%d", port);
  ts_rpc_server *gone;
  ck_assert_int_eq(ts_rpc_server_start(&opts, fake_methods, 3, &gone, &port,
                                       &err),
                   TS_OK);
  ts_rpc_server_stop(gone, 0);
  snprintf(dead_address, sizeof dead_address, "127.0.0.1:%d", port);
  has_shard_answer = 0;
  load_calls = chunks = 0;
  received = NULL;
  received_len = announced = 0;
  chunks_ok = true;
  ck_assert_int_eq(ts_membership_init(&members, NULL, &err), TS_OK);
}

static void teardown(void) {
  ts_membership_free(&members);
  if (fake) ts_rpc_server_stop(fake, 1000);
  free(received);
  ts_rpc_shutdown();
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(add_reads_status) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_worker *w = &members.workers[0];
  ck_assert_int_eq(atomic_load(&w->up), 1);
  ck_assert_int_eq(w->threads, 3);
  ck_assert_uint_eq(w->memory_limit, 123456789);
  ck_assert_str_eq(w->blas_core, "FakeCore");
  ck_assert_int_eq(ts_membership_find(&members, fake_address), 0);
  ck_assert_int_eq(ts_membership_find(&members, dead_address), -1);
  ck_assert_int_eq(ts_membership_live_count(&members), 1);
}
END_TEST

START_TEST(unreachable_is_added_down) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ck_assert_int_eq(ts_membership_add(&members, dead_address, &err), TS_OK);
  ck_assert_int_eq(atomic_load(&members.n), 2);
  ck_assert_int_eq(atomic_load(&members.workers[1].up), 0);
  ck_assert_int_eq(members.workers[1].threads, 1);
  ck_assert_str_eq(ts_membership_state_name(&members, 1), "DOWN");
  ck_assert(!ts_membership_is_target(&members, 1));
  ck_assert_int_eq(ts_membership_find(&members, dead_address), 1);
  ck_assert_int_eq(ts_membership_live_count(&members), 1);
}
END_TEST

START_TEST(states) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_worker *w = &members.workers[0];
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "UP");
  ck_assert(ts_membership_is_target(&members, 0));
  atomic_store(&w->leaving, 1);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "LEAVING");
  ck_assert(!ts_membership_is_target(&members, 0));
  atomic_store(&w->up, 0);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "LEFT");
  ck_assert(!ts_membership_is_target(&members, 0));
  atomic_store(&w->leaving, 0);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "DOWN");
  /* A probe that answers brings it back. */
  ck_assert_int_eq(ts_membership_probe(&members, 0, 5000, &err), TS_OK);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "UP");
}
END_TEST

START_TEST(health_of_every_worker_in_one_round) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ck_assert_int_eq(ts_membership_add(&members, dead_address, &err), TS_OK);
  ts_health out[TS_MAX_WORKERS];
  ck_assert_int_eq(ts_membership_check_health_all(&members, 2000, 5000, out),
                   2);
  ck_assert_int_eq(out[0], TS_HEALTH_SERVING);
  ck_assert_int_eq(out[1], TS_HEALTH_UNREACHABLE);
  ts_rpc_server_set_serving(fake, 0);
  ck_assert_int_eq(ts_membership_check_health_all(&members, 2000, 5000, out),
                   2);
  ck_assert_int_eq(out[0], TS_HEALTH_NOT_SERVING);
}
END_TEST

START_TEST(upload_in_chunks_unless_held) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_shard shard;
  memset(&shard, 0, sizeof shard);
  snprintf(shard.id, sizeof shard.id, "%064d", 7);
  snprintf(shard.label, sizeof shard.label, "m/s0/k1");
  shard.len = (5u << 20) / 2; /* 2.5 MiB: three chunks */
  shard.bytes = malloc(shard.len);
  ck_assert_ptr_nonnull(shard.bytes);
  for (size_t i = 0; i < shard.len; i++) shard.bytes[i] = (uint8_t)(i * 7);
  ck_assert_int_eq(ts_membership_upload(&members, 0, &shard, &err), TS_OK);
  ck_assert_int_eq(load_calls, 1);
  ck_assert_int_eq(chunks, 3);
  ck_assert(chunks_ok);
  ck_assert_uint_eq(announced, shard.len);
  ck_assert_uint_eq(received_len, shard.len);
  ck_assert(memcmp(received, shard.bytes, shard.len) == 0);
  ck_assert_str_eq(label, "m/s0/k1");
  has_shard_answer = 1;
  ck_assert_int_eq(ts_membership_upload(&members, 0, &shard, &err), TS_OK);
  ck_assert_int_eq(load_calls, 1); /* held: nothing sent */
  free(shard.bytes);
}
END_TEST

START_TEST(probe_of_a_worker_gone) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_rpc_server_stop(fake, 1000);
  fake = NULL;
  ck_assert_int_ne(ts_membership_probe(&members, 0, 2000, &err), TS_OK);
  ck_assert_ptr_nonnull(strstr(err.msg, fake_address));
  ck_assert_int_eq(atomic_load(&members.workers[0].up), 0);
  ck_assert_int_eq(ts_membership_live_count(&members), 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("membership");
  TCase *tc = ts_check_tcase(s, "membership", 60, setup, teardown);
  tcase_add_test(tc, add_reads_status);
  tcase_add_test(tc, unreachable_is_added_down);
  tcase_add_test(tc, states);
  tcase_add_test(tc, health_of_every_worker_in_one_round);
  tcase_add_test(tc, upload_in_chunks_unless_held);
  tcase_add_test(tc, probe_of_a_worker_gone);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
