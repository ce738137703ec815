/*
 * admin.h - tessera.admin.v1.Admin on the coordinator: ClusterStatus (the
 * shard map, workers and their load, for `tessera status`) and
 * RegisterWorker (for `tessera-worker --join`; workers repeat it as a
 * heartbeat, so a restarted coordinator learns them again) and
 * DeregisterWorker (a worker's graceful leave: its shards move first).
 */
#ifndef TS_ADMIN_H
#define TS_ADMIN_H

#include "registry.h"
#include "rpc.h"

typedef struct ts_admin {
  ts_registry *registry;
  ts_membership *cluster;
} ts_admin;

#define TS_ADMIN_METHODS 3

int ts_admin_methods(ts_admin *admin, ts_rpc_method *out);

#endif
