/*
 * membership.h - the workers a coordinator knows: address, channel, state,
 * capacity and load. Also the shard upload path (HasShard, then LoadShard
 * streamed in 1 MiB chunks), since it is per worker.
 *
 * Thread model: workers are only ever added (ts_membership_add, under the
 * cluster mutex; a slot is fully set up before n grows past it), never
 * removed: a worker that leaves is marked down. Per-worker counters are
 * atomics read by the scheduler on any thread.
 *
 * A worker's life, as the prober and the scheduler see it:
 *
 *   UP       live: the scheduler routes to it; a placement target.
 *   LEAVING  up, but it said it is going (DeregisterWorker, or its health
 *            answers NOT_SERVING): still routed to while its shards are
 *            re-placed elsewhere, never a placement target.
 *   LEFT     its shards moved away; no longer routed to (up = 0).
 *   DOWN     a call or probes failed; after the re-placement grace its
 *            shards are re-placed on other workers.
 *
 * `up` is what the scheduler reads; `leaving` and `down_since_ms` are what
 * the prober and the registry's re-placement read.
 */
#ifndef TS_MEMBERSHIP_H
#define TS_MEMBERSHIP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "error.h"
#include "plan.h"
#include "rpc.h"

#define TS_ADDR_MAX 256
#define TS_MAX_WORKERS 256

typedef struct ts_worker {
  int index;
  char address[TS_ADDR_MAX];
  ts_rpc_channel *channel;
  atomic_int up;                   /* 1 while live */
  atomic_int leaving;              /* 1 once it said it is going */
  atomic_llong down_since_ms;      /* ts_now_ms() it was first seen down; 0 up */
  int probe_failures;              /* failed health checks in a row (prober) */
  int health_in_flight;            /* a health check is out (health_mu) */
  int health_fresh;                /* an answer not yet taken (health_mu) */
  int health_answer;               /* a ts_health (health_mu) */
  atomic_int outstanding;          /* RunShard calls in flight to it */
  atomic_ullong calls;             /* RunShard calls sent */
  atomic_ullong failures;          /* calls that failed at the transport */
  atomic_ullong memory_planned;    /* bytes of shards placed on it */
  int threads;                     /* capacity, from its Status */
  unsigned long long memory_limit; /* 0 = none, from its Status */
  char blas_core[32];
} ts_worker;

typedef struct ts_membership {
  ts_worker workers[TS_MAX_WORKERS];
  atomic_int n;                    /* grows only; slots below n are set up */
  ts_rpc_client *client;           /* async calls (RunShard) */
  const ts_rpc_creds *creds;       /* credentials for worker channels */
  pthread_mutex_t mu;
  pthread_mutex_t health_mu;       /* the health_* fields of every worker */
  pthread_cond_t health_answered;  /* a health check finished */
} ts_membership;

int ts_membership_init(ts_membership *c, const ts_rpc_creds *creds,
                       ts_err *err);
/* Adds a worker by address and asks its Status (deadline 5 s). A worker that
 * does not answer is added as down (the model load then places around it):
 * for the operator's --worker and --local-workers, which may start later.
 * TS_EINVAL for an address that is not HOST:PORT (ts_address_check). */
int ts_membership_add(ts_membership *c, const char *address, ts_err *err);

/* A worker's own registration (Admin/RegisterWorker): unlike
 * ts_membership_add, the worker must answer its Status within
 * TS_JOIN_STATUS_TIMEOUT_MS before it takes a slot, so an address that
 * never becomes healthy never holds one and a flood of bogus registrations
 * cannot fill the table (TS_EUNAVAILABLE, naming why; the worker's --join
 * retries). An address already known is not added again: *known = 1 and
 * *index its slot. TS_EINVAL for an address that is not HOST:PORT,
 * TS_EEXHAUSTED when TS_MAX_WORKERS healthy workers hold every slot. */
#define TS_JOIN_STATUS_TIMEOUT_MS 5000
int ts_membership_join(ts_membership *c, const char *address, int *index,
                       int *known, ts_err *err);
/* The index of the worker at `address`, or -1. */
int ts_membership_find(ts_membership *c, const char *address);
/* Asks one worker for its Status and updates capacity/state. */
int ts_membership_probe(ts_membership *c, int worker, int64_t timeout_ms,
                        ts_err *err);
int ts_membership_live_count(ts_membership *c);

/* What a worker's grpc.health.v1 answers. */
typedef enum {
  TS_HEALTH_UNREACHABLE,   /* no answer, or not a health answer */
  TS_HEALTH_SERVING,
  TS_HEALTH_NOT_SERVING,   /* alive but stopping: a graceful leave */
  TS_HEALTH_PENDING,       /* the check is still out: no news yet */
} ts_health;

/* The prober's heartbeat: asks grpc.health.v1.Health/Check of every worker
 * at once, asynchronously on the cluster's client, so a stalled worker
 * delays nobody else's check. A check goes out to each worker that has
 * none in flight (each with timeout_ms); then this waits until every check
 * it started has answered, or wait_ms passed. out[i] (room for TS_MAX_WORKERS)
 * gets worker i's answer that arrived since the previous call, or
 * TS_HEALTH_PENDING when its check is still out; an answer that arrives
 * later is kept for the next call. Returns the number of workers covered.
 * One caller at a time (the prober); answers arrive on the client's poller
 * thread under health_mu. */
int ts_membership_check_health_all(ts_membership *c, int64_t timeout_ms,
                                   int64_t wait_ms, ts_health *out);
/* Whether new shard replicas may be placed on the worker: up, not leaving. */
int ts_membership_is_target(ts_membership *c, int worker);
/* The worker's state by the table above: "UP", "LEAVING", "LEFT", "DOWN". */
const char *ts_membership_state_name(ts_membership *c, int worker);
/* Makes sure `worker` holds `shard`: HasShard, and LoadShard if absent. */
int ts_membership_upload(ts_membership *c, int worker, const ts_shard *shard,
                         ts_err *err);
void ts_membership_free(ts_membership *c);

#endif
