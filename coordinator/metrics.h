/*
 * metrics.h - the coordinator's Prometheus metrics (--metrics-listen),
 * served as text at /metrics.
 *
 * Process-wide, like a Prometheus client's default registry: the request
 * path records into static counters and histograms with relaxed C11
 * atomics (no lock, no allocation); a scrape reads them, plus what other
 * modules already count (membership's per-worker calls, failures and
 * outstanding calls, the frontend's in-flight count, the batcher's queue).
 *
 * Per-model series live in a fixed table of TS_METRICS_MAX_MODELS slots
 * found by name: a slot is filled under a mutex and published by bumping
 * an atomic count, so readers never lock. Models beyond the table share
 * the slot named "_other". Per-worker series are indexed by the
 * membership's worker index.
 *
 * This header depends on nothing of the coordinator's, so that every
 * module (cluster/, dispatch, batcher, frontend) may record into it.
 */
#ifndef TS_COORD_METRICS_H
#define TS_COORD_METRICS_H

#include <stdint.h>

#include "error.h"

#define TS_METRICS_MAX_MODELS 64

struct ts_membership;
struct ts_frontend;
struct ts_batcher;
struct ts_http_server;

/* One ModelInfer answered with TS_E* `code`, e2e_seconds after it arrived. */
void ts_coord_metrics_request(const char *model, int code, double e2e_seconds);
/* A request's time waiting before its inference started (batcher queue). */
void ts_coord_metrics_queue(const char *model, double seconds);
/* A request's inference time, from dispatch to the fused answer. */
void ts_coord_metrics_compute(const char *model, double seconds);
/* One inference dispatched with `rows` rows (batch size; 1 unbatched). */
void ts_coord_metrics_batch(const char *model, int64_t rows);
/* A shard call retried on another replica after gRPC status `status`. */
void ts_coord_metrics_retry(int status);
/* A worker taken out of rotation by a failed call (a failover). */
void ts_coord_metrics_worker_down(int worker);
/* Bytes of one RunShard request sent to / answer received from a worker. */
void ts_coord_metrics_worker_bytes(int worker, uint64_t sent,
                                   uint64_t received);
/* Round-trip time of one health check of a worker. */
void ts_coord_metrics_worker_rtt(int worker, double seconds);

/* Serves /metrics on listen ("HOST:PORT"), reading the cluster, frontend
 * and batcher (NULL: none) at each scrape; they must outlive the server.
 * *bound_port gets the port. Stop with ts_http_stop. */
int ts_coord_metrics_start(const char *listen, struct ts_membership *cluster,
                           struct ts_frontend *fe, struct ts_batcher *batcher,
                           struct ts_http_server **out, int *bound_port,
                           ts_err *err);

#endif
