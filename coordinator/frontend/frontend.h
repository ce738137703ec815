/*
 * frontend.h - the client-facing KServe v2 / Open Inference Protocol
 * service (inference.GRPCInferenceService) on the coordinator.
 *
 * ModelInfer decodes the request, validates every input against the
 * model's metadata (name, datatype, rank, dims, byte length or typed count,
 * raw vs typed contents) and every requested output (validate.h), answers
 * INVALID_ARGUMENT / NOT_FOUND with a message naming the tensor and field,
 * and otherwise hands views of the request's bytes to the batcher or the
 * dispatcher (no copy, except typed BOOL/INT8/INT16/UINT8/UINT16 contents,
 * which the protocol widens to 32 bits). Outputs go back as
 * raw_output_contents (reply.h). The handlers are one method table
 * (rpc_table.h): a malformed request never reaches them.
 * Deadlines: a missing or too distant client deadline is capped at
 * max_deadline_ms.
 */
#ifndef TS_FRONTEND_H
#define TS_FRONTEND_H

#include <stdatomic.h>

#include "dispatch.h"
#include "registry.h"
#include "rpc.h"
#include "rpc_table.h"

#define TS_FRONTEND_METHODS 9

typedef struct ts_frontend {
  ts_registry *registry;
  ts_membership *cluster;
  ts_dispatch_opts dispatch;
  int64_t max_deadline_ms;   /* cap on any request's deadline */
  struct ts_batcher *batcher; /* dynamic batching; NULL: none */
  atomic_int draining;       /* shutting down: new requests get UNAVAILABLE */
  atomic_int in_flight;      /* ModelInfer calls accepted, not yet answered */
  ts_rpc_binding bindings[TS_FRONTEND_METHODS]; /* ts_frontend_methods */
} ts_frontend;

/* Graceful shutdown, first half: from now on new ModelInfer calls answer
 * UNAVAILABLE; waits up to timeout_ms for the accepted ones to be answered.
 * Returns the number still in flight. */
int ts_frontend_drain(ts_frontend *fe, int64_t timeout_ms);

/* Fills `out` (room for TS_FRONTEND_METHODS) with the service's methods,
 * bound to fe (which must outlive the server). */
int ts_frontend_methods(ts_frontend *fe, ts_rpc_method *out);

#endif
