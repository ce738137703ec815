/*
 * dispatch.h - running one inference across the cluster.
 *
 * A ts_dispatch walks its model's plan: for each stage, one RunShard call per
 * shard to a replica chosen by the scheduler (or, for a batch-splittable
 * stage with several replicas and a large batch, one call per batch slice
 * to distinct replicas); when a stage's calls are all back, partial outputs
 * are fused (plan fusions, or concat on the batch axis for slices) and the
 * next stage starts. Ensembles run their members as child inferences and
 * fuse their outputs by mean, weighted mean or vote.
 *
 * Failures: a call that fails at the transport (UNAVAILABLE), finds the
 * worker's queue full (RESOURCE_EXHAUSTED), finds the shard missing
 * (NOT_FOUND: the worker restarted) or outlives its attempt timeout is
 * retried on another replica of the same shard while the request's deadline
 * allows (at most TS_RETRY_BUDGET tries per call); the worker is marked
 * down on UNAVAILABLE, NOT_FOUND and timeouts, until the prober sees it
 * again. Other errors end the inference with the worker's status and
 * message. A cancelled inference (ts_dispatch_cancel: its client went away)
 * cancels its calls out and retries nothing.
 *
 * Threads: ts_dispatch_start may be called on any thread; everything after it
 * runs on the cluster client's poller thread. `done` is called exactly once.
 * Tensor bytes: request inputs are views (the caller keeps them alive until
 * done); worker answers are unpacked once and viewed in place; only fusion
 * allocates, once per fused tensor.
 */
#ifndef TS_DISPATCH_H
#define TS_DISPATCH_H

#include "membership.h"
#include "registry.h"
#include "scheduler.h"

#define TS_RETRY_BUDGET 3
/* A batch-splittable stage is cut into slices of at least this many rows. */
#define TS_SPLIT_MIN_ROWS 8

typedef struct ts_dispatch ts_dispatch;
typedef void (*ts_dispatch_done_fn)(ts_dispatch *inf, void *user);

typedef struct ts_dispatch_opts {
  ts_sched_policy policy;
  /* One shard call may take at most this long (0: no limit but the
   * request's deadline). A worker that does not answer in time (stalled,
   * SIGSTOPped, partitioned) is marked down and the call moves on to
   * another replica while the request's deadline allows. */
  int64_t attempt_timeout_ms;
} ts_dispatch_opts;

/* A new inference of `model` (which the caller holds a reference to until
 * done). Inputs are added with ts_dispatch_add_input before start. */
ts_dispatch *ts_dispatch_new(ts_membership *cluster, ts_served_model *model,
                             const ts_dispatch_opts *opts, int64_t deadline,
                             const char *request_id);
/* Adds a named input view (not copied; must outlive the inference). */
int ts_dispatch_add_input(ts_dispatch *inf, const char *name,
                          const ts_tensor *t, ts_err *err);
/* Starts; `done` runs exactly once (maybe before this returns). */
void ts_dispatch_start(ts_dispatch *inf, ts_dispatch_done_fn done, void *user);
/* Cancels the inference from any thread, between ts_dispatch_new and the end
 * of `done`: records code/why as its outcome (unless it already failed),
 * cancels every shard call out (ts_rpc_outcall_cancel), and starts no call,
 * retry, stage or ensemble member after. `done` still runs exactly once,
 * when the calls out are back (at once if none is out). Must not be called
 * with a lock that `done` takes. */
void ts_dispatch_cancel(ts_dispatch *inf, int code, const char *why);
/* After done: the outcome (TS_OK or a TS_E* code with its message). */
const ts_err *ts_dispatch_error(const ts_dispatch *inf);
/* After a successful done: the tensor named `name`, or NULL. Valid until
 * ts_dispatch_free. */
const ts_tensor *ts_dispatch_value(const ts_dispatch *inf, const char *name);
void ts_dispatch_free(ts_dispatch *inf);

#endif
