/*
 * request.h - the worker's decoding and validation of the untrusted bytes
 * of its two big methods, apart from the gRPC handlers (service.c) so that
 * unit suites and the fuzz targets (tests/fuzz/) call exactly what the
 * daemon runs: one LoadShard chunk applied to an upload, and a RunShard
 * request checked against its shard and bound to tensors. Nothing here
 * answers a call, takes a lock of its own or asserts on request bytes.
 */
#ifndef TS_WORKER_REQUEST_H
#define TS_WORKER_REQUEST_H

#include <stdint.h>

#include "error.h"
#include "store.h"
#include "tensor.h"
#include "worker.pb-c.h"

/* The most data one LoadShard chunk may carry (worker.proto's contract). */
#define TS_LOAD_CHUNK_MAX_BYTES (1u << 20)

/* Decodes chunk number `index` (0 for the first) of a LoadShard stream
 * from msg[0..len) and applies it to *upload. The first chunk (*upload
 * NULL) is the header: it begins the upload (ts_store_upload_begin) and
 * sets *upload. A later chunk may repeat shard_id and total_bytes, which
 * must then agree with the first's. Every chunk's data (at most
 * TS_LOAD_CHUNK_MAX_BYTES) is written at its offset. On failure (TS_EINVAL
 * naming the chunk, or the store's code and message) an upload in progress
 * is aborted and *upload is NULL: the caller has nothing left to free. On
 * success the caller owns *upload (finish or abort it). */
int ts_load_chunk_apply(ts_store *store, ts_store_upload **upload,
                        uint64_t index, const uint8_t *msg, size_t len,
                        ts_err *err);

/* The first half of a RunShard: checks req's shard_id, acquires the shard
 * (*shard: a reference the caller releases, set also when a later check
 * fails; TS_ENOTFOUND when it is not held) and checks the numbers of
 * inputs and outputs against its graph. *n_outputs gets the number of
 * outputs to compute: the request's, or the graph's when it names none. */
int ts_run_request_open(ts_store *store,
                        const Tessera__Worker__V1__RunShardRequest *req,
                        ts_stored_shard **shard, int *n_outputs, ts_err *err);

/* The second half: binds req's inputs to inputs[0..req->n_inputs) (views
 * of the request's bytes, ts_wire_tensor_view: finish each with
 * ts_tensor_free, zeroed ones included) with their names in input_names,
 * and fills output_names[0..n_outputs) with the requested outputs, each
 * checked to be one of the shard's graph outputs (an initializer's or an
 * intermediate value's name is INVALID_ARGUMENT), or with the graph's
 * outputs. The
 * arrays are the caller's; names point into req or the shard's graph. */
int ts_run_request_bind(const ts_stored_shard *shard,
                        const Tessera__Worker__V1__RunShardRequest *req,
                        int n_outputs, ts_tensor *inputs,
                        const char **input_names, const char **output_names,
                        ts_err *err);

#endif
