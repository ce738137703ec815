/*
 * fake_worker.h - a worker for the coordinator's unit suites
 * (test_membership.c, test_registry.c), served in-process: a ts_rpc server
 * on 127.0.0.1:0 that answers Status with fixed capacity (3 threads, a
 * 123456789-byte limit, BLAS "FakeCore"), HasShard with has_shard_answer,
 * and records every LoadShard chunk (received, announced, label; chunks_ok
 * stays true while they are contiguous with size and label on the first
 * only). Its grpc.health.v1 answer is the rpc library's
 * (ts_rpc_server_set_serving). dead_address is a port nothing listens on.
 * Header-only like kernel_check.h.
 */
#ifndef TS_FAKE_WORKER_H
#define TS_FAKE_WORKER_H

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "worker.pb-c.h"

#define SVC "/tessera.worker.v1.Worker/"

static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static int has_shard_answer; /* what HasShard says */
static int load_calls, chunks;
static uint8_t *received; /* LoadShard's bytes, at their offsets */
static size_t received_len, announced;
static char label[128];
static bool chunks_ok; /* contiguous; size and label on the first only */

static inline void reply(ts_rpc_call *call, const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  protobuf_c_message_pack(m, buf);
  ts_rpc_call_reply_owned(call, buf, len);
}

static inline void fake_status(ts_rpc_call *call, const uint8_t *req,
                               size_t len, void *user) {
  (void)req, (void)len, (void)user;
  Tessera__Worker__V1__StatusResponse st =
      TESSERA__WORKER__V1__STATUS_RESPONSE__INIT;
  st.threads = 3;
  st.memory_limit = 123456789;
  st.blas_core = "FakeCore";
  reply(call, &st.base);
}

static inline void fake_has_shard(ts_rpc_call *call, const uint8_t *req,
                                  size_t len, void *user) {
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

static inline int fake_chunk(ts_rpc_call *call, const uint8_t *msg, size_t len,
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

static inline void fake_load_end(ts_rpc_call *call, void *user, int cancelled) {
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

/* An address nothing listens on: a port bound, then released. */
static char dead_address[64];

/* Starts the fake worker (and finds a dead address); gRPC initialised. */
static inline void fake_worker_start(void) {
  ts_rpc_init();
  ts_err err = {0};
  int port = 0;
  ts_rpc_server_opts opts = {.listen = "127.0.0.1:0"};
  ck_assert_int_eq(
      ts_rpc_server_start(&opts, fake_methods, 3, &fake, &port, &err), TS_OK);
  snprintf(fake_address, sizeof fake_address, "127.0.0.1:%d", port);
  ts_rpc_server *gone;
  ck_assert_int_eq(
      ts_rpc_server_start(&opts, fake_methods, 3, &gone, &port, &err), TS_OK);
  ts_rpc_server_stop(gone, 0);
  snprintf(dead_address, sizeof dead_address, "127.0.0.1:%d", port);
  has_shard_answer = 0;
  load_calls = chunks = 0;
  received = NULL;
  received_len = announced = 0;
  chunks_ok = true;
}

/* Stops the fake worker (unless a test did) and gRPC. */
static inline void fake_worker_stop(void) {
  if (fake) ts_rpc_server_stop(fake, 1000);
  fake = NULL;
  free(received);
  received = NULL;
  ts_rpc_shutdown();
}

#endif
