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

/* One coordinator of the list: its channel, heartbeat thread, and the
 * answer of its DeregisterWorker. */
typedef struct join_link {
  struct ts_join *owner;
  char coordinator[TS_ADDRESS_MAX];
  ts_rpc_channel *channel;
  pthread_t thread;
  int running;           /* thread started and not yet joined */
  int64_t leave_deadline;
  int leave_rc, moved, left;
  ts_err leave_err;
} join_link;

struct ts_join {
  char advertise[256];
  join_link links[TS_JOIN_MAX];
  int n;
  pthread_mutex_t mu;
  pthread_cond_t cond;   /* signalled when stopping */
  int stopping;
};

/* Calls Admin/`method` with `req` (which holds at most this worker's
 * address); the caller frees *resp. */
static int call_admin(join_link *l, const char *method,
                      const ProtobufCMessage *req, int64_t deadline,
                      uint8_t **resp, size_t *resp_len, ts_err *err) {
  char path[64];
  snprintf(path, sizeof path, "/tessera.admin.v1.Admin/%s", method);
  uint8_t buf[300];
  size_t len = protobuf_c_message_pack(req, buf);
  *resp = NULL;
  *resp_len = 0;
  return ts_rpc_call_sync(l->channel, path, buf, len, deadline, resp,
                          resp_len, err);
}

static int register_once(join_link *l, ts_err *err) {
  Tessera__Admin__V1__RegisterWorkerRequest req =
      TESSERA__ADMIN__V1__REGISTER_WORKER_REQUEST__INIT;
  req.address = l->owner->advertise;
  uint8_t *resp;
  size_t resp_len;
  int rc = call_admin(l, "RegisterWorker", &req.base, ts_now_ms() + 5000,
                      &resp, &resp_len, err);
  free(resp);
  return rc;
}

static void *heartbeat(void *arg) {
  join_link *l = arg;
  ts_join *j = l->owner;
  int registered = -1; /* unknown */
  pthread_mutex_lock(&j->mu);
  while (!j->stopping) {
    pthread_mutex_unlock(&j->mu);
    ts_err err = {0};
    int ok = register_once(l, &err) == TS_OK;
    if (ok && registered != 1)
      ts_log_info("registered with coordinator %s as %s", l->coordinator,
                  j->advertise);
    else if (!ok && registered != 0)
      ts_log_warn("cannot register with coordinator %s (retrying every "
                  "%d ms): %s", l->coordinator, TS_JOIN_INTERVAL_MS, err.msg);
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

/* Stops every thread still running (heartbeats, or deregistrations). */
static void join_threads(ts_join *j) {
  pthread_mutex_lock(&j->mu);
  j->stopping = 1;
  pthread_cond_broadcast(&j->cond);
  pthread_mutex_unlock(&j->mu);
  for (int i = 0; i < j->n; i++)
    if (j->links[i].running) {
      pthread_join(j->links[i].thread, NULL);
      j->links[i].running = 0;
    }
}

/* Splits and checks `coordinators` into list[0..*n). */
static int split_list(const char *coordinators,
                      char list[TS_JOIN_MAX][TS_ADDRESS_MAX], int *n,
                      ts_err *err) {
  int rc = ts_address_list_split(coordinators, TS_JOIN_MAX, list, n, err);
  for (int i = 0; rc == TS_OK && i < *n; i++)
    rc = ts_address_check(list[i], err);
  return rc;
}

int ts_join_check(const char *coordinators, ts_err *err) {
  char list[TS_JOIN_MAX][TS_ADDRESS_MAX];
  int n;
  return split_list(coordinators, list, &n, err);
}

int ts_join_start(const char *coordinators, const char *advertise,
                  const ts_rpc_creds *creds, ts_join **out, ts_err *err) {
  ts_join *j = calloc(1, sizeof *j);
  if (!j) return ts_err_set(err, TS_ENOMEM, "out of memory");
  if (strlen(advertise) >= sizeof j->advertise) {
    free(j);
    return ts_err_set(err, TS_EINVAL, "--advertise: address too long");
  }
  snprintf(j->advertise, sizeof j->advertise, "%s", advertise);
  char list[TS_JOIN_MAX][TS_ADDRESS_MAX];
  int n = 0;
  int rc = split_list(coordinators, list, &n, err);
  if (rc) {
    free(j);
    return rc;
  }
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cond, NULL);
  for (int i = 0; rc == TS_OK && i < n; i++) {
    join_link *l = &j->links[i];
    l->owner = j;
    memcpy(l->coordinator, list[i], sizeof l->coordinator);
    rc = ts_rpc_channel_open(l->coordinator, creds, &l->channel, err);
    if (rc) break;
    j->n++;
    if (pthread_create(&l->thread, NULL, heartbeat, l) != 0)
      rc = ts_err_set(err, TS_EINTERNAL, "cannot start the join thread");
    else
      l->running = 1;
  }
  if (rc) {
    ts_join_stop(j);
    return rc;
  }
  *out = j;
  return TS_OK;
}

static void *deregister(void *arg) {
  join_link *l = arg;
  Tessera__Admin__V1__DeregisterWorkerRequest req =
      TESSERA__ADMIN__V1__DEREGISTER_WORKER_REQUEST__INIT;
  req.address = l->owner->advertise;
  uint8_t *resp;
  size_t resp_len;
  ts_err *err = &l->leave_err;
  l->leave_rc = call_admin(l, "DeregisterWorker", &req.base,
                           l->leave_deadline, &resp, &resp_len, err);
  if (l->leave_rc) {
    free(resp);
    ts_err_prefix(err, "DeregisterWorker at %s", l->coordinator);
    return NULL;
  }
  Tessera__Admin__V1__DeregisterWorkerResponse *r =
      tessera__admin__v1__deregister_worker_response__unpack(NULL, resp_len,
                                                             resp);
  free(resp);
  if (!r) {
    l->leave_rc = ts_err_set(err, TS_EIO, "coordinator %s: malformed "
                             "DeregisterWorker answer", l->coordinator);
    return NULL;
  }
  l->moved = (int)r->moved;
  l->left = (int)r->left;
  tessera__admin__v1__deregister_worker_response__free_unpacked(r, NULL);
  return NULL;
}

int ts_join_leave(ts_join *j, int64_t deadline, int *moved, int *left,
                  ts_err *err) {
  join_threads(j);
  /* At once to all: a coordinator that is down costs no other's time. */
  for (int i = 0; i < j->n; i++) {
    join_link *l = &j->links[i];
    l->leave_deadline = deadline;
    if (pthread_create(&l->thread, NULL, deregister, l) == 0) {
      l->running = 1;
    } else {
      l->leave_rc = ts_err_set(&l->leave_err, TS_EINTERNAL,
                               "cannot start a thread to deregister from %s",
                               l->coordinator);
    }
  }
  join_threads(j);
  int rc = TS_OK;
  *moved = *left = 0;
  for (int i = 0; i < j->n; i++) {
    join_link *l = &j->links[i];
    if (l->leave_rc == TS_OK) {
      *moved += l->moved;
      *left += l->left;
    } else if (rc == TS_OK) {
      rc = l->leave_rc;
      if (err) *err = l->leave_err;
    }
  }
  return rc;
}

void ts_join_stop(ts_join *j) {
  if (!j) return;
  join_threads(j);
  for (int i = 0; i < j->n; i++) ts_rpc_channel_close(j->links[i].channel);
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
