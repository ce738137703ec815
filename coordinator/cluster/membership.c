/* membership.c - see membership.h. */
#include "membership.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exposition.h"
#include "health.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "worker.pb-c.h"

#define WORKER_SERVICE "/tessera.worker.v1.Worker/"
#define UPLOAD_CHUNK (1u << 20)

int ts_membership_init(ts_membership *c, const ts_rpc_creds *creds,
                       ts_err *err) {
  memset(c, 0, sizeof *c);
  c->creds = creds;
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->health_mu, NULL);
  pthread_cond_init(&c->health_answered, NULL);
  return ts_rpc_client_create(&c->client, err);
}

/* Asks the worker behind `channel` for its Status (deadline timeout_ms) and
 * fills the capacity fields of *w; w->up is left alone. */
static int ask_status(ts_rpc_channel *channel, ts_worker *w,
                      int64_t timeout_ms, ts_err *err) {
  Tessera__Worker__V1__StatusRequest req =
      TESSERA__WORKER__V1__STATUS_REQUEST__INIT;
  uint8_t buf[16];
  size_t len = tessera__worker__v1__status_request__pack(&req, buf);
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  int rc = ts_rpc_call_sync(channel, WORKER_SERVICE "Status", buf, len,
                            ts_now_ms() + timeout_ms, &resp, &resp_len, err);
  if (rc) return ts_err_prefix(err, "worker %s", w->address);
  Tessera__Worker__V1__StatusResponse *st =
      tessera__worker__v1__status_response__unpack(NULL, resp_len, resp);
  free(resp);
  if (!st)
    return ts_err_set(err, TS_EIO, "worker %s: malformed Status answer",
                      w->address);
  w->threads = st->threads > 0 ? (int)st->threads : 1;
  w->memory_limit = st->memory_limit;
  snprintf(w->blas_core, sizeof w->blas_core, "%s", st->blas_core);
  tessera__worker__v1__status_response__free_unpacked(st, NULL);
  return TS_OK;
}

int ts_membership_probe(ts_membership *c, int index, int64_t timeout_ms,
                        ts_err *err) {
  ts_worker *w = &c->workers[index];
  int rc = ask_status(w->channel, w, timeout_ms, err);
  atomic_store(&w->up, rc == TS_OK);
  return rc;
}

/* Sets up slot c->n for `address` over `channel` (taken over) and makes it
 * visible; under c->mu. TS_EEXHAUSTED (channel closed) when the table is
 * full. */
static int take_slot_locked(ts_membership *c, const char *address,
                            ts_rpc_channel *channel, const ts_worker *status,
                            int up, ts_err *err) {
  if (c->n == TS_MAX_WORKERS) {
    ts_rpc_channel_close(channel);
    return ts_err_set(err, TS_EEXHAUSTED, "more than %d workers",
                      TS_MAX_WORKERS);
  }
  ts_worker *w = &c->workers[c->n];
  memset(w, 0, sizeof *w);
  w->index = c->n;
  w->threads = status ? status->threads : 1;
  w->memory_limit = status ? status->memory_limit : 0;
  if (status) snprintf(w->blas_core, sizeof w->blas_core, "%s", status->blas_core);
  snprintf(w->address, sizeof w->address, "%s", address);
  w->channel = channel;
  atomic_store(&w->up, up);
  c->n++;
  return TS_OK;
}

int ts_membership_add(ts_membership *c, const char *address, ts_err *err) {
  int rc = ts_address_check(address, err);
  if (rc) return rc;
  ts_rpc_channel *channel = NULL;
  if ((rc = ts_rpc_channel_open(address, c->creds, &channel, err))) return rc;
  pthread_mutex_lock(&c->mu);
  int index = c->n;
  rc = take_slot_locked(c, address, channel, NULL, 0, err);
  pthread_mutex_unlock(&c->mu);
  if (rc) return rc;
  ts_worker *w = &c->workers[index];
  ts_err probe_err;
  if (ts_membership_probe(c, index, 5000, &probe_err) == TS_OK)
    ts_log_info("worker %d: %s up, %d threads, memory limit %llu, BLAS %s",
                w->index, w->address, w->threads, w->memory_limit,
                w->blas_core);
  else
    ts_log_warn("worker %d: %s is down: %s", w->index, w->address,
                probe_err.msg);
  return TS_OK;
}

int ts_membership_join(ts_membership *c, const char *address, int *index,
                       int *known, ts_err *err) {
  *known = 0;
  *index = ts_membership_find(c, address);
  if (*index >= 0) {
    *known = 1;
    return TS_OK;
  }
  int rc = ts_address_check(address, err);
  if (rc) return rc;
  ts_rpc_channel *channel = NULL;
  if ((rc = ts_rpc_channel_open(address, c->creds, &channel, err))) return rc;
  ts_worker status;
  memset(&status, 0, sizeof status);
  snprintf(status.address, sizeof status.address, "%s", address);
  if ((rc = ask_status(channel, &status, TS_JOIN_STATUS_TIMEOUT_MS, err))) {
    ts_rpc_channel_close(channel);
    char why[TS_ERR_MSG_MAX];
    snprintf(why, sizeof why, "%s", err ? err->msg : "no answer");
    return ts_err_set(err, TS_EUNAVAILABLE,
                      "%.300s; not registered: a worker is registered only "
                      "once it answers its Status (within %d ms)", why,
                      TS_JOIN_STATUS_TIMEOUT_MS);
  }
  pthread_mutex_lock(&c->mu);
  /* Another registration of the same address may have won meanwhile. */
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->workers[i].address, address) == 0) {
      *index = i;
      *known = 1;
    }
  if (*known) {
    pthread_mutex_unlock(&c->mu);
    ts_rpc_channel_close(channel);
    return TS_OK;
  }
  *index = c->n;
  rc = take_slot_locked(c, address, channel, &status, 1, err);
  pthread_mutex_unlock(&c->mu);
  if (rc == TS_OK)
    ts_log_info("worker %d: %s up, %d threads, memory limit %llu, BLAS %s",
                *index, address, status.threads, status.memory_limit,
                status.blas_core);
  return rc;
}

int ts_membership_find(ts_membership *c, const char *address) {
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->workers[i].address, address) == 0) return i;
  return -1;
}

int ts_membership_live_count(ts_membership *c) {
  int live = 0;
  for (int i = 0; i < c->n; i++) live += atomic_load(&c->workers[i].up);
  return live;
}

/* What a Health/Check answer says; UNREACHABLE when it is not one. */
static ts_health health_from_answer(const uint8_t *data, size_t len) {
  Grpc__Health__V1__HealthCheckResponse *r =
      grpc__health__v1__health_check_response__unpack(NULL, len, data);
  if (!r) return TS_HEALTH_UNREACHABLE;
  ts_health h =
      r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
          ? TS_HEALTH_SERVING
          : TS_HEALTH_NOT_SERVING;
  grpc__health__v1__health_check_response__free_unpacked(r, NULL);
  return h;
}

/* One health check out: the cluster and the worker it asks. */
typedef struct health_check {
  ts_membership *cluster;
  int worker;
  double sent; /* ts_metrics_now(): the round trip's start */
} health_check;

static void health_record(ts_membership *c, int worker, ts_health h) {
  pthread_mutex_lock(&c->health_mu);
  ts_worker *w = &c->workers[worker];
  w->health_answer = (int)h;
  w->health_fresh = 1;
  w->health_in_flight = 0;
  pthread_cond_broadcast(&c->health_answered);
  pthread_mutex_unlock(&c->health_mu);
}

/* On the client's poller thread: decode, record, wake the prober. */
static void health_done(void *user, const ts_rpc_result *res) {
  health_check *hc = user;
  if (res->status == 0)
    ts_coord_metrics_worker_rtt(hc->worker, ts_metrics_now() - hc->sent);
  health_record(hc->cluster, hc->worker,
                res->status == 0 ? health_from_answer(res->data, res->len)
                                 : TS_HEALTH_UNREACHABLE);
  free(hc);
}

int ts_membership_check_health_all(ts_membership *c, int64_t timeout_ms,
                                   int64_t wait_ms, ts_health *out) {
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = "";
  uint8_t buf[16];
  size_t len = grpc__health__v1__health_check_request__pack(&req, buf);
  int n = atomic_load(&c->n);
  int64_t now = ts_now_ms(), until = now + wait_ms;
  uint8_t started[TS_MAX_WORKERS] = {0};
  pthread_mutex_lock(&c->health_mu);
  for (int i = 0; i < n; i++)
    if (!c->workers[i].health_in_flight)
      started[i] = c->workers[i].health_in_flight = 1;
  pthread_mutex_unlock(&c->health_mu);
  for (int i = 0; i < n; i++) {
    if (!started[i]) continue;
    health_check *hc = malloc(sizeof *hc);
    if (hc)
      *hc = (health_check){.cluster = c, .worker = i, .sent = ts_metrics_now()};
    /* A call that cannot start never calls back: no answer is news too. */
    if (!hc || ts_rpc_call_async(c->client, c->workers[i].channel,
                                 "/grpc.health.v1.Health/Check", buf, len,
                                 now + timeout_ms, health_done, hc,
                                 NULL) != TS_OK) {
      free(hc);
      health_record(c, i, TS_HEALTH_UNREACHABLE);
    }
  }
  pthread_mutex_lock(&c->health_mu);
  for (;;) {
    int waiting = 0;
    for (int i = 0; i < n; i++)
      waiting |= started[i] && c->workers[i].health_in_flight;
    int64_t left = until - ts_now_ms();
    if (!waiting || left <= 0) break;
    /* The condition variable runs on CLOCK_REALTIME; wait in slices so a
     * clock jump cannot stretch the wait. */
    if (left > 50) left = 50;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)left * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&c->health_answered, &c->health_mu, &ts);
  }
  for (int i = 0; i < n; i++) {
    ts_worker *w = &c->workers[i];
    out[i] = w->health_fresh ? (ts_health)w->health_answer : TS_HEALTH_PENDING;
    w->health_fresh = 0;
  }
  pthread_mutex_unlock(&c->health_mu);
  return n;
}

int ts_membership_is_target(ts_membership *c, int index) {
  return atomic_load(&c->workers[index].up) &&
         !atomic_load(&c->workers[index].leaving);
}

const char *ts_membership_state_name(ts_membership *c, int index) {
  int up = atomic_load(&c->workers[index].up);
  if (atomic_load(&c->workers[index].leaving)) return up ? "LEAVING" : "LEFT";
  return up ? "UP" : "DOWN";
}

static int worker_has_shard(ts_worker *w, const ts_shard *shard, int *present,
                            ts_err *err) {
  Tessera__Worker__V1__HasShardRequest req =
      TESSERA__WORKER__V1__HAS_SHARD_REQUEST__INIT;
  char *ids[1] = {(char *)shard->id};
  req.n_shard_ids = 1;
  req.shard_ids = ids;
  uint8_t buf[128];
  size_t len = tessera__worker__v1__has_shard_request__pack(&req, buf);
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  int rc = ts_rpc_call_sync(w->channel, WORKER_SERVICE "HasShard", buf, len,
                            ts_now_ms() + 10000, &resp, &resp_len, err);
  if (rc) return rc;
  Tessera__Worker__V1__HasShardResponse *r =
      tessera__worker__v1__has_shard_response__unpack(NULL, resp_len, resp);
  free(resp);
  if (!r || r->n_present != 1) {
    if (r) tessera__worker__v1__has_shard_response__free_unpacked(r, NULL);
    return ts_err_set(err, TS_EIO, "malformed HasShard answer");
  }
  *present = r->present[0];
  tessera__worker__v1__has_shard_response__free_unpacked(r, NULL);
  return TS_OK;
}

int ts_membership_upload(ts_membership *c, int index, const ts_shard *shard,
                         ts_err *err) {
  ts_worker *w = &c->workers[index];
  int present = 0;
  int rc = worker_has_shard(w, shard, &present, err);
  if (rc) return ts_err_prefix(err, "worker %s", w->address);
  if (present) {
    ts_log_info("shard %.12s (%s) already on worker %s; not sent again",
                shard->id, shard->label, w->address);
    return TS_OK;
  }
  /* Generous deadline: 10 s plus 1 s per 20 MB. */
  int64_t deadline = ts_now_ms() + 10000 + (int64_t)(shard->len / 20000);
  ts_rpc_stream *st = NULL;
  rc = ts_rpc_stream_open(w->channel, WORKER_SERVICE "LoadShard", deadline,
                          &st, err);
  if (rc) return ts_err_prefix(err, "worker %s", w->address);
  uint8_t *buf = malloc(UPLOAD_CHUNK + 512);
  if (!buf) {
    uint8_t *ignored = NULL;
    size_t ignored_len = 0;
    ts_rpc_stream_finish(st, &ignored, &ignored_len, err);
    free(ignored);
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  size_t off = 0;
  do {
    size_t n = shard->len - off < UPLOAD_CHUNK ? shard->len - off : UPLOAD_CHUNK;
    Tessera__Worker__V1__LoadShardChunk chunk =
        TESSERA__WORKER__V1__LOAD_SHARD_CHUNK__INIT;
    chunk.shard_id = (char *)shard->id;
    chunk.offset = off;
    chunk.data.data = shard->bytes + off;
    chunk.data.len = n;
    if (off == 0) {
      chunk.total_bytes = shard->len;
      chunk.label = (char *)shard->label;
    }
    size_t len = tessera__worker__v1__load_shard_chunk__pack(&chunk, buf);
    rc = ts_rpc_stream_send(st, buf, len, err);
    off += n;
  } while (rc == TS_OK && off < shard->len);
  free(buf);
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  int frc = ts_rpc_stream_finish(st, &resp, &resp_len, err);
  free(resp);
  if (rc == TS_OK) rc = frc;
  if (rc) return ts_err_prefix(err, "loading shard %s on worker %s",
                               shard->label, w->address);
  ts_log_info("shard %.12s (%s, %.1f MB) loaded on worker %s", shard->id,
              shard->label, (double)shard->len / 1e6, w->address);
  return TS_OK;
}

void ts_membership_free(ts_membership *c) {
  if (c->client) ts_rpc_client_free(c->client);
  for (int i = 0; i < c->n; i++)
    if (c->workers[i].channel) ts_rpc_channel_close(c->workers[i].channel);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->health_mu);
  pthread_cond_destroy(&c->health_answered);
  c->n = 0;
  c->client = NULL;
}
