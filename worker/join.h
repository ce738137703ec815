/*
 * join.h - a worker registering itself with its coordinators
 * (--join COORD[,COORD...]).
 *
 * One thread per coordinator calls tessera.admin.v1.Admin/RegisterWorker
 * at once and then every TS_JOIN_INTERVAL_MS as a heartbeat: a coordinator
 * that restarted (and lost its membership) learns the worker again within
 * one interval, with no manual step; shards it already holds are kept by
 * content hash and not sent again. The threads are independent, each with
 * its own channel, so a dead or stalled coordinator delays no other's
 * registration. Failures are logged (per coordinator, first failure and
 * recovery only) and retried; they never stop the worker.
 */
#ifndef TS_JOIN_H
#define TS_JOIN_H

#include <stdint.h>

#include "error.h"
#include "rpc.h"

#define TS_JOIN_INTERVAL_MS 1000
#define TS_JOIN_MAX 16 /* coordinators in one --join list */

typedef struct ts_join ts_join;

/* Whether `coordinators` is a list ts_join_start takes: TS_EINVAL naming
 * the item at fault otherwise. */
int ts_join_check(const char *coordinators, ts_err *err);
/* Starts registering `advertise` ("HOST:PORT", the address the coordinators
 * should dial) with every coordinator of `coordinators`, a comma-separated
 * list of at most TS_JOIN_MAX HOST:PORT addresses (ts_address_list_split,
 * each checked by ts_address_check: TS_EINVAL naming the one at fault),
 * calling with `creds` (NULL: plaintext; read at once). */
int ts_join_start(const char *coordinators, const char *advertise,
                  const ts_rpc_creds *creds, ts_join **out, ts_err *err);
/* A graceful leave: stops the heartbeats, then asks every coordinator at
 * once to move this worker's shards elsewhere and stop routing to it
 * (Admin/DeregisterWorker); each answers once done, or deadline (absolute
 * ts_now_ms()) passes. TS_OK only when every coordinator answered (only
 * then is nothing routed here any more); otherwise err names the first
 * that did not. *moved and *left, summed over those that answered:
 * replicas moved, and those that found no other worker with room. Call
 * ts_join_stop after. */
int ts_join_leave(ts_join *j, int64_t deadline, int *moved, int *left,
                  ts_err *err);
/* Stops the heartbeat threads and frees. */
void ts_join_stop(ts_join *j);

/* The address to advertise for a listen address and bound port: the listen
 * host, or this machine's hostname when it listens on a wildcard. */
void ts_join_advertise_address(const char *listen, int port, char *out,
                               size_t size);

#endif
