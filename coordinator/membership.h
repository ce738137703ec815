/*
 * membership.h - the workers a coordinator knows: address, channel, state,
 * capacity and load. Also the shard upload path (HasShard, then LoadShard
 * streamed in 1 MiB chunks), since it is per worker.
 *
 * Thread model: workers are only ever added (ts_cluster_add, under the
 * cluster mutex; a slot is fully set up before n grows past it), never
 * removed: a worker that leaves is marked down. Per-worker counters are
 * atomics read by the scheduler on any thread.
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
  atomic_int outstanding;          /* RunShard calls in flight to it */
  atomic_ullong calls;             /* RunShard calls sent */
  atomic_ullong failures;          /* calls that failed at the transport */
  atomic_ullong memory_planned;    /* bytes of shards placed on it */
  int threads;                     /* capacity, from its Status */
  unsigned long long memory_limit; /* 0 = none, from its Status */
  char blas_core[32];
} ts_worker;

typedef struct ts_cluster {
  ts_worker workers[TS_MAX_WORKERS];
  atomic_int n;                    /* grows only; slots below n are set up */
  ts_rpc_client *client;           /* async calls (RunShard) */
  const ts_rpc_creds *creds;       /* credentials for worker channels */
  pthread_mutex_t mu;
} ts_cluster;

int ts_cluster_init(ts_cluster *c, const ts_rpc_creds *creds, ts_err *err);
/* Adds a worker by address and asks its Status (deadline 5 s). A worker that
 * does not answer is added as down (the model load then places around it). */
int ts_cluster_add(ts_cluster *c, const char *address, ts_err *err);
/* The index of the worker at `address`, or -1. */
int ts_cluster_find(ts_cluster *c, const char *address);
/* Asks one worker for its Status and updates capacity/state. */
int ts_cluster_probe(ts_cluster *c, int worker, int64_t timeout_ms,
                     ts_err *err);
int ts_cluster_live_count(ts_cluster *c);
/* Makes sure `worker` holds `shard`: HasShard, and LoadShard if absent. */
int ts_cluster_upload(ts_cluster *c, int worker, const ts_shard *shard,
                      ts_err *err);
void ts_cluster_free(ts_cluster *c);

#endif
