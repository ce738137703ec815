/* join.c - see join.h. */
#include "join.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "log.h"
#include "options.h"
#include "rpc.h"

struct ts_join {
  char coordinator[256];
  char advertise[256];
  ts_rpc_channel *channel;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int stopping;
  int joined;   /* the heartbeat thread has been joined */
};

/* Calls Admin/`method` with `req` (which holds at most this worker's
 * address); the caller frees *resp. */
static int call_admin(ts_join *j, const char *method,
                      const ProtobufCMessage *req, int64_t deadline,
                      uint8_t **resp, size_t *resp_len, ts_err *err) {
  char path[64];
  snprintf(path, sizeof path, "/tessera.admin.v1.Admin/%s", method);
  uint8_t buf[300];
  size_t len = protobuf_c_message_pack(req, buf);
  *resp = NULL;
  *resp_len = 0;
  return ts_rpc_call_sync(j->channel, path, buf, len, deadline, resp,
                          resp_len, err);
}

static int register_once(ts_join *j, ts_err *err) {
  Tessera__Admin__V1__RegisterWorkerRequest req =
      TESSERA__ADMIN__V1__REGISTER_WORKER_REQUEST__INIT;
  req.address = j->advertise;
  uint8_t *resp;
  size_t resp_len;
  int rc = call_admin(j, "RegisterWorker", &req.base, ts_now_ms() + 5000,
                      &resp, &resp_len, err);
  free(resp);
  return rc;
}

static void *heartbeat(void *arg) {
  ts_join *j = arg;
  int registered = -1; /* unknown */
  pthread_mutex_lock(&j->mu);
  while (!j->stopping) {
    pthread_mutex_unlock(&j->mu);
    ts_err err = {0};
    int ok = register_once(j, &err) == TS_OK;
    if (ok && registered != 1)
      ts_log_info("registered with coordinator %s as %s", j->coordinator,
                  j->advertise);
    else if (!ok && registered != 0)
      ts_log_warn("cannot register with coordinator %s (retrying every "
                  "%d ms): %s", j->coordinator, TS_JOIN_INTERVAL_MS, err.msg);
    registered = ok;
    pthread_mutex_lock(&j->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)TS_JOIN_INTERVAL_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    if (!j->stopping) pthread_cond_timedwait(&j->cond, &j->mu, &until);
  }
  pthread_mutex_unlock(&j->mu);
  return NULL;
}

int ts_join_start(const char *coordinator, const char *advertise,
                  const ts_rpc_creds *creds, ts_join **out, ts_err *err) {
  ts_join *j = calloc(1, sizeof *j);
  if (!j) return ts_err_set(err, TS_ENOMEM, "out of memory");
  if (strlen(coordinator) >= sizeof j->coordinator ||
      strlen(advertise) >= sizeof j->advertise) {
    free(j);
    return ts_err_set(err, TS_EINVAL, "--join: address too long");
  }
  snprintf(j->coordinator, sizeof j->coordinator, "%s", coordinator);
  snprintf(j->advertise, sizeof j->advertise, "%s", advertise);
  int rc = ts_rpc_channel_open(coordinator, creds, &j->channel, err);
  if (rc) {
    free(j);
    return rc;
  }
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cond, NULL);
  if (pthread_create(&j->thread, NULL, heartbeat, j) != 0) {
    ts_rpc_channel_close(j->channel);
    free(j);
    return ts_err_set(err, TS_EINTERNAL, "cannot start the join thread");
  }
  *out = j;
  return TS_OK;
}

static void stop_heartbeat(ts_join *j) {
  if (j->joined) return;
  pthread_mutex_lock(&j->mu);
  j->stopping = 1;
  pthread_cond_signal(&j->cond);
  pthread_mutex_unlock(&j->mu);
  pthread_join(j->thread, NULL);
  j->joined = 1;
}

int ts_join_leave(ts_join *j, int64_t deadline, int *moved, int *left,
                  ts_err *err) {
  stop_heartbeat(j);
  Tessera__Admin__V1__DeregisterWorkerRequest req =
      TESSERA__ADMIN__V1__DEREGISTER_WORKER_REQUEST__INIT;
  req.address = j->advertise;
  uint8_t *resp;
  size_t resp_len;
  int rc = call_admin(j, "DeregisterWorker", &req.base, deadline, &resp,
                      &resp_len, err);
  if (rc) {
    free(resp);
    return ts_err_prefix(err, "DeregisterWorker at %s", j->coordinator);
  }
  Tessera__Admin__V1__DeregisterWorkerResponse *r =
      tessera__admin__v1__deregister_worker_response__unpack(NULL, resp_len,
                                                             resp);
  free(resp);
  if (!r)
    return ts_err_set(err, TS_EIO, "coordinator %s: malformed "
                      "DeregisterWorker answer", j->coordinator);
  *moved = r->moved;
  *left = r->left;
  tessera__admin__v1__deregister_worker_response__free_unpacked(r, NULL);
  return TS_OK;
}

void ts_join_stop(ts_join *j) {
  if (!j) return;
  stop_heartbeat(j);
  ts_rpc_channel_close(j->channel);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cond);
  free(j);
}

void ts_join_advertise_address(const char *listen, int port, char *out,
                               size_t size) {
  size_t host_len = ts_hostport_host_length(listen);
  char host[256];
  if (host_len >= sizeof host) host_len = sizeof host - 1;
  memcpy(host, listen, host_len);
  host[host_len] = '\0';
  if (host_len == 0 || strcmp(host, "0.0.0.0") == 0 ||
      strcmp(host, "[::]") == 0) {
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
  }
  snprintf(out, size, "%s:%d", host, port);
}
