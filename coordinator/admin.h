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
#include "rpc_table.h"

#define TS_ADMIN_METHODS 3

typedef struct ts_admin {
  ts_registry *registry;
  ts_membership *cluster;
  ts_rpc_binding bindings[TS_ADMIN_METHODS]; /* ts_admin_methods */
} ts_admin;

/* Fills `out` (room for TS_ADMIN_METHODS) with the service's methods,
 * bound to admin (which must outlive the server). */
int ts_admin_methods(ts_admin *admin, ts_rpc_method *out);

#endif
