/*
 * service.h - the tessera.worker.v1.Worker gRPC service (proto/worker.proto)
 * on common/rpc.h, over a shard store and a kernel-thread pool.
 *
 * Handlers on the RPC poller threads only decode, validate and answer cheap
 * questions (HasShard, Status, UnloadShard) and copy LoadShard chunks; every
 * run and every shard parse is handed to the pool, whose threads answer.
 */
#ifndef TS_WORKER_SERVICE_H
#define TS_WORKER_SERVICE_H

#include <stdint.h>

#include "error.h"
#include "pool.h"
#include "rpc.h"
#include "store.h"

typedef struct ts_worker_service ts_worker_service;

/* Starts serving on `listen` ("HOST:PORT"; port 0 picks one) with the
 * server credentials `creds` (NULL: plaintext) and access policy `auth`
 * (NULL: none; rpc_auth.h). creds, auth, store and pool stay owned by the
 * caller and must outlive the service. *bound_port gets the port bound.
 * TS_EIO when the address cannot be bound. */
int ts_worker_service_start(const char *listen, const ts_rpc_creds *creds,
                            ts_rpc_auth *auth, ts_store *store, ts_pool *pool,
                            ts_worker_service **out, int *bound_port,
                            ts_err *err);
/* Caps the activation memory of each run (ts_session_set_activation_limit
 * on the kernel thread's session before every run; 0: no limit). A run
 * over it is answered RESOURCE_EXHAUSTED naming the shard. Safe to call
 * while serving; runs that start afterwards see the new limit. */
void ts_worker_service_set_activation_limit(ts_worker_service *svc,
                                            uint64_t bytes);
/* Ends an upload (LoadShard stream) that has had no chunk for `ms`
 * milliseconds (0: never): the call is answered DEADLINE_EXCEEDED and the
 * upload's reservation returned. Safe to call while serving. */
void ts_worker_service_set_upload_timeout(ts_worker_service *svc,
                                          int64_t ms);
/* "HOST:PORT" with the port actually bound (what Status reports). */
const char *ts_worker_service_address(const ts_worker_service *svc);
/* Health for grpc.health.v1: 1 SERVING, 0 NOT_SERVING. */
void ts_worker_service_set_serving(ts_worker_service *svc, int serving);
/* Stops accepting calls, waits up to grace_ms for calls in flight to be
 * answered, cancels the rest and frees the service. Call it only once the
 * pool has no job running (jobs answer calls). */
void ts_worker_service_stop(ts_worker_service *svc, int64_t grace_ms);

#endif
