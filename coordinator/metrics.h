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

/* One ModelInfer answered with TS_E* `code`, e2e_seconds after it arrived;
 * `rows` inferences (its batch rows; 1 for a model that does not batch). */
void ts_coord_metrics_request(const char *model, int code, int64_t rows,
                              double e2e_seconds);
/* A request's time validating its inputs and binding them to tensors. */
void ts_coord_metrics_compute_input(const char *model, double seconds);
/* A request's time waiting before its inference started (batcher queue). */
void ts_coord_metrics_queue(const char *model, double seconds);
/* A request's inference time, from dispatch to the fused answer. */
void ts_coord_metrics_compute(const char *model, double seconds);
/* A request's time packing its outputs into the answer. */
void ts_coord_metrics_compute_output(const char *model, double seconds);
/* One inference dispatched with `rows` rows (batch size; 1 unbatched). */
void ts_coord_metrics_batch(const char *model, int64_t rows);
/* A shard call retried on another replica after gRPC status `status`. */
void ts_coord_metrics_retry(int status);
/* A worker taken out of rotation by a failed call (a failover). */
void ts_coord_metrics_worker_down(int worker);
/* Bytes of one RunShard request sent to / answer received from a worker. */
void ts_coord_metrics_worker_bytes(int worker, uint64_t sent,
                                   uint64_t received);
/* Round-trip time of one health check of a worker (also smoothed). */
void ts_coord_metrics_worker_rtt(int worker, double seconds);
/* One answered RunShard call: `bytes` sent and received in `seconds` from
 * send to answer (compute included, so a lower bound on the link's rate). */
void ts_coord_metrics_worker_call(int worker, uint64_t bytes, double seconds);

/* A worker's link as measured: EWMA (weight 0.2 per sample) of the health
 * checks' round trips and of its RunShard calls' bytes per second. 0: not
 * measured yet. */
typedef struct ts_link_stats {
  uint64_t rtt_us;
  uint64_t bytes_per_s;
} ts_link_stats;
void ts_coord_metrics_worker_link(int worker, ts_link_stats *out);
/* The median over the n workers listed of each measured figure (workers
 * not measured yet left out; 0 when none is). */
void ts_coord_metrics_link_median(const int *worker, int n,
                                  ts_link_stats *out);

/* A count and the total of its durations, as Triton's StatisticDuration. */
typedef struct ts_duration_stat {
  uint64_t count;
  uint64_t ns;
} ts_duration_stat;

/* One model's cumulative statistics as Triton's ModelStatistics defines
 * them, read from the same counters /metrics exposes (one source): success
 * and fail are end-to-end times of answered requests by outcome;
 * compute_input, queue, compute_infer and compute_output are the phases
 * above (tessera_request_*_seconds). */
typedef struct ts_model_stats {
  uint64_t last_inference_ms; /* wall clock of the last answer; 0: never */
  uint64_t inference_count;   /* rows of successful requests */
  uint64_t execution_count;   /* inferences dispatched (a batch is one) */
  ts_duration_stat success, fail, queue, compute_input, compute_infer,
      compute_output;
} ts_model_stats;

/* Fills *out with the statistics of `model`; all zero for a model that no
 * request named yet. Lock-free; the fields are each monotonic but read one
 * by one, not as a snapshot. */
void ts_coord_metrics_model_stats(const char *model, ts_model_stats *out);

/* Serves /metrics on listen ("HOST:PORT"), reading the cluster, frontend
 * and batcher (NULL: none) at each scrape; they must outlive the server.
 * *bound_port gets the port. Stop with ts_http_stop. */
int ts_coord_metrics_start(const char *listen, struct ts_membership *cluster,
                           struct ts_frontend *fe, struct ts_batcher *batcher,
                           struct ts_http_server **out, int *bound_port,
                           ts_err *err);

#endif
