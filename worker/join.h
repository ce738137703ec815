/*
 * join.h - a worker registering itself with a coordinator (--join COORD).
 *
 * A thread calls tessera.admin.v1.Admin/RegisterWorker at once and then
 * every TS_JOIN_INTERVAL_MS as a heartbeat: a coordinator that restarted
 * (and lost its membership) learns the worker again within one interval,
 * with no manual step; shards it already holds are kept by content hash and
 * not sent again. Failures are logged (first failure and recovery only)
 * and retried; they never stop the worker.
 */
#ifndef TS_JOIN_H
#define TS_JOIN_H

#include <stdint.h>

#include "error.h"
#include "rpc.h"

#define TS_JOIN_INTERVAL_MS 1000

typedef struct ts_join ts_join;

/* Starts registering `advertise` ("HOST:PORT", the address the coordinator
 * should dial) with the coordinator at `coordinator`, calling with `creds`
 * (NULL: plaintext; read at once). */
int ts_join_start(const char *coordinator, const char *advertise,
                  const ts_rpc_creds *creds, ts_join **out, ts_err *err);
/* A graceful leave: stops the heartbeat, then asks the coordinator to move
 * this worker's shards elsewhere and stop routing to it
 * (Admin/DeregisterWorker); it answers once done, or deadline (absolute
 * ts_now_ms()) passes. *moved and *left: replicas moved, and those that
 * found no other worker with room. Call ts_join_stop after. */
int ts_join_leave(ts_join *j, int64_t deadline, int *moved, int *left,
                  ts_err *err);
/* Stops the heartbeat thread and frees. */
void ts_join_stop(ts_join *j);

/* The address to advertise for a listen address and bound port: the listen
 * host, or this machine's hostname when it listens on a wildcard. */
void ts_join_advertise_address(const char *listen, int port, char *out,
                               size_t size);

#endif
