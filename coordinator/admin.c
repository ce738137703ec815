/* admin.c - see admin.h. */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "rpc_message.h"
#include "rpc_table.h"

#define SERVICE "/tessera.admin.v1.Admin/"

typedef Tessera__Admin__V1__WorkerState worker_state;
typedef Tessera__Admin__V1__ModelState model_state;
typedef Tessera__Admin__V1__ShardPlacement placement;

static const char *state_name(ts_model_state s) {
  static const char *const names[] = {"LOADING", "READY", "UNAVAILABLE"};
  return names[s];
}

static void handle_cluster_status(ts_rpc_call *call,
                                  const ProtobufCMessage *msg, void *user) {
  (void)msg;
  ts_admin *admin = user;
  ts_membership *c = admin->cluster;
  ts_served_model **models;
  int n_models;
  if (ts_registry_snapshot(admin->registry, &models, &n_models) != TS_OK) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  int n_workers = c->n, n_shards = 0;
  for (int i = 0; i < n_models; i++)
    for (int s = 0; models[i]->plan && s < models[i]->plan->n_stages; s++)
      n_shards += models[i]->plan->stages[s].n_shards;

  worker_state *ws = calloc((size_t)n_workers + 1, sizeof *ws);
  worker_state **wp = calloc((size_t)n_workers + 1, sizeof *wp);
  model_state *ms = calloc((size_t)n_models + 1, sizeof *ms);
  model_state **mp = calloc((size_t)n_models + 1, sizeof *mp);
  placement *ps = calloc((size_t)n_shards + 1, sizeof *ps);
  placement **pp = calloc((size_t)n_shards + 1, sizeof *pp);
  int32_t *replica_ids = calloc((size_t)n_shards * 64 + 1, sizeof *replica_ids);
  char **replica_states = calloc((size_t)n_shards * 64 + 1, sizeof(char *));
  if (!ws || !wp || !ms || !mp || !ps || !pp || !replica_ids ||
      !replica_states) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    goto done;
  }
  for (int i = 0; i < n_workers; i++) {
    ts_worker *w = &c->workers[i];
    tessera__admin__v1__worker_state__init(&ws[i]);
    ws[i].index = i;
    ws[i].address = w->address;
    ws[i].up = atomic_load(&w->up);
    ws[i].threads = w->threads;
    ws[i].memory_limit = w->memory_limit;
    ws[i].memory_planned = atomic_load(&w->memory_planned);
    ws[i].outstanding = atomic_load(&w->outstanding);
    ws[i].calls = atomic_load(&w->calls);
    ws[i].failures = atomic_load(&w->failures);
    ws[i].blas_core = w->blas_core;
    ws[i].state = (char *)ts_membership_state_name(c, i);
    int64_t since = atomic_load(&w->down_since_ms);
    ws[i].down_ms = !ws[i].up && since ? ts_now_ms() - since : 0;
    ts_link_stats link;
    ts_coord_metrics_worker_link(i, &link);
    ws[i].rtt_us = link.rtt_us;
    ws[i].throughput_bytes_per_s = link.bytes_per_s;
    wp[i] = &ws[i];
  }
  int k = 0;
  for (int i = 0; i < n_models; i++) {
    ts_served_model *m = models[i];
    tessera__admin__v1__model_state__init(&ms[i]);
    ms[i].name = m->config.name;
    ms[i].state = (char *)state_name(m->state);
    ms[i].requests = atomic_load(&ts_served_counts(m)->requests);
    ms[i].failures = atomic_load(&ts_served_counts(m)->failures);
    if (m->config.is_ensemble) {
      ms[i].strategy = "ensemble";
      ms[i].fuse = (char *)ts_fuse_name(m->config.fuse);
      ms[i].n_members = (size_t)m->config.n_members;
      ms[i].members = calloc((size_t)m->config.n_members, sizeof(char *));
      for (int j = 0; ms[i].members && j < m->config.n_members; j++)
        ms[i].members[j] = m->config.members[j];
      if (!ms[i].members) ms[i].n_members = 0;
    } else if (m->plan) {
      ms[i].strategy = (char *)ts_strategy_name(m->plan->strategy);
      ms[i].precision = (char *)ts_precision_name(m->config.precision);
      ms[i].stages = m->plan->n_stages;
      ms[i].replicas = m->n_replicas;
      ms[i].weight_bytes = m->plan->weight_bytes;
      for (int s = 0; s < m->plan->n_stages; s++)
        for (int j = 0; j < m->plan->stages[s].n_shards; j++, k++) {
          const ts_shard *sh = &m->plan->stages[s].shards[j];
          tessera__admin__v1__shard_placement__init(&ps[k]);
          ps[k].model = m->config.name;
          ps[k].stage = s;
          ps[k].shard = j;
          ps[k].label = (char *)sh->label;
          ps[k].shard_id = (char *)sh->id;
          ps[k].bytes = sh->len;
          int n_rep = m->n_replicas < 64 ? m->n_replicas : 64;
          ps[k].n_workers = (size_t)n_rep;
          ps[k].workers = &replica_ids[k * 64];
          ps[k].n_replica_states = (size_t)n_rep;
          ps[k].replica_states = &replica_states[k * 64];
          for (int r = 0; r < n_rep; r++) {
            int w = ts_served_model_replicas(m, s, j)[r];
            ps[k].workers[r] = w;
            ps[k].replica_states[r] = (char *)ts_membership_state_name(c, w);
          }
          ps[k].moves = m->moves ? m->moves[s][j] : 0;
          ms[i].moves += ps[k].moves;
          pp[k] = &ps[k];
        }
    }
    mp[i] = &ms[i];
  }
  Tessera__Admin__V1__ClusterStatusResponse resp =
      TESSERA__ADMIN__V1__CLUSTER_STATUS_RESPONSE__INIT;
  resp.n_workers = (size_t)n_workers;
  resp.workers = wp;
  resp.n_models = (size_t)n_models;
  resp.models = mp;
  resp.n_shards = (size_t)k;
  resp.shards = pp;
  ts_rpc_call_reply_message(call, &resp.base);
done:
  for (int i = 0; ms && i < n_models; i++) free(ms[i].members);
  free(ws);
  free(wp);
  free(ms);
  free(mp);
  free(ps);
  free(pp);
  free(replica_ids);
  free(replica_states);
  for (int i = 0; i < n_models; i++) ts_served_model_release(models[i]);
  free(models);
}

typedef struct join_job {
  ts_admin *admin;
  ts_rpc_call *call;
  char address[TS_ADDR_MAX];
} join_job;

/* Adding a worker probes it over the network: never on a poller thread. */
static void *join_thread(void *arg) {
  join_job *job = arg;
  ts_membership *c = job->admin->cluster;
  ts_err err = {0};
  Tessera__Admin__V1__RegisterWorkerResponse resp =
      TESSERA__ADMIN__V1__REGISTER_WORKER_RESPONSE__INIT;
  int index = -1, known = 0;
  /* Known: if it is down the prober restores its shards and brings it
   * back; nothing to do here. */
  if (ts_membership_join(c, job->address, &index, &known, &err) != TS_OK) {
    index = -1;
  } else if (known) {
    resp.known = 1;
  } else {
    ts_log_info("worker %s joined", job->address);
    /* Models waiting for workers load now; auto-replicated ones gain
     * their second replica. */
    ts_registry_retry_unavailable(job->admin->registry);
    ts_registry_top_up_replicas(job->admin->registry);
    /* It takes its share of the shards; shards of dead workers that found
     * no room are retried by the prober on its next round. */
    ts_registry_rebalance(job->admin->registry);
  }
  if (index < 0) {
    ts_rpc_call_fail(job->call, err.code ? err.code : TS_EINTERNAL, err.msg);
  } else {
    resp.index = index;
    ts_rpc_call_reply_message(job->call, &resp.base);
  }
  free(job);
  return NULL;
}

/* A graceful leave: the worker stays up (and routed to) while its shards
 * move, then leaves the rotation; only then does the answer go back, so
 * the worker knows it may stop. Never on a poller thread (uploads). */
static void *leave_thread(void *arg) {
  join_job *job = arg;
  ts_membership *c = job->admin->cluster;
  int index = ts_membership_find(c, job->address);
  if (index < 0) {
    char msg[TS_ADDR_MAX + 64];
    snprintf(msg, sizeof msg, "worker %s is not registered", job->address);
    ts_rpc_call_fail(job->call, TS_ENOTFOUND, msg);
    free(job);
    return NULL;
  }
  ts_worker *w = &c->workers[index];
  atomic_store(&w->leaving, 1);
  ts_log_info("worker %s is leaving (DeregisterWorker); moving its shards",
              w->address);
  Tessera__Admin__V1__DeregisterWorkerResponse resp =
      TESSERA__ADMIN__V1__DEREGISTER_WORKER_RESPONSE__INIT;
  int left = 0;
  resp.moved = ts_registry_move_off_worker(job->admin->registry, index, &left);
  resp.left = left;
  if (atomic_exchange(&w->up, 0))
    atomic_store(&w->down_since_ms, ts_now_ms());
  ts_log_info("worker %s left the rotation: %d shard replica(s) moved, %d "
              "found no other worker with room", w->address, resp.moved,
              resp.left);
  ts_rpc_call_reply_message(job->call, &resp.base);
  free(job);
  return NULL;
}

/* RegisterWorker and DeregisterWorker: both requests are one wire shape
 * (field 1: the worker's address), so one decoder serves both. */
static void handle_worker_address(ts_rpc_call *call,
                                  const ProtobufCMessage *msg, void *user,
                                  void *(*thread)(void *)) {
  const Tessera__Admin__V1__RegisterWorkerRequest *req =
      (const Tessera__Admin__V1__RegisterWorkerRequest *)msg;
  ts_err err = {0};
  /* Only a TCP HOST:PORT: the coordinator dials what it is told, so a
   * unix: path or other scheme would make it connect wherever a caller
   * likes, and a control character would forge a log line. */
  if (ts_address_check(req->address, &err) != TS_OK) {
    ts_rpc_call_fail(call, err.code, err.msg);
    return;
  }
  join_job *job = calloc(1, sizeof *job);
  if (!job) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  job->admin = user;
  job->call = call;
  snprintf(job->address, sizeof job->address, "%s", req->address);
  if (ts_rpc_call_offload(call, thread, job) != 0) free(job);
}

static void handle_register_worker(ts_rpc_call *call,
                                   const ProtobufCMessage *msg, void *user) {
  handle_worker_address(call, msg, user, join_thread);
}

static void handle_deregister_worker(ts_rpc_call *call,
                                     const ProtobufCMessage *msg, void *user) {
  handle_worker_address(call, msg, user, leave_thread);
}

/* The service's method table (rpc_table.h). RegisterWorker and
 * DeregisterWorker requests are one wire shape (see above). Every request
 * is an address or nothing: each is capped at the control limit. */
#define CONTROL TS_RPC_CONTROL_MAX_REQUEST
static const ts_rpc_handler admin_table[TS_ADMIN_METHODS] = {
    {SERVICE "ClusterStatus",
     &tessera__admin__v1__cluster_status_request__descriptor,
     handle_cluster_status, NULL, TS_ROLE_ADMIN, CONTROL},
    {SERVICE "RegisterWorker",
     &tessera__admin__v1__register_worker_request__descriptor,
     handle_register_worker, NULL, TS_ROLE_WORKER, CONTROL},
    {SERVICE "DeregisterWorker",
     &tessera__admin__v1__register_worker_request__descriptor,
     handle_deregister_worker, NULL, TS_ROLE_WORKER, CONTROL},
};

#undef CONTROL

int ts_admin_methods(ts_admin *admin, ts_rpc_method *out) {
  return ts_rpc_table_methods(admin_table, TS_ADMIN_METHODS, admin,
                              admin->bindings, out);
}
