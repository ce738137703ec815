/*
 * batcher.h - dynamic batching, Triton-style.
 *
 * Requests to a model with max_batch > 0 (and a dynamic first dim on every
 * input) are queued; the queue of each model closes a batch when its rows
 * reach max_batch or batch_delay_us after its first request (a request
 * after a quiet spell of a window goes at once), concatenates the inputs
 * into one contiguous tensor per input (a lone request is sent as it is),
 * runs one inference, and hands each request a view of its own rows of
 * every output (no copy).
 * Batching never changes an answer: rows are independent by the model's
 * contract, and each request gets exactly the rows it sent.
 *
 * Deadlines and cancellation never leak across requests: a batch runs to
 * the latest deadline of its requests, and a request whose own deadline
 * passed (or whose client cancelled) is answered on its own, without
 * failing or cancelling the others' work.
 *
 * Back-pressure: at most max_queue requests wait at once across all models;
 * beyond that submit answers TS_EEXHAUSTED (RESOURCE_EXHAUSTED) at once
 * instead of letting latency and memory grow without bound.
 *
 * Threads: submitters queue under a mutex and dispatch full (or quiet)
 * batches themselves; a libuv loop on the batcher's own thread only runs
 * the window timer, woken by uv_async_send when a batch opens. `done`
 * callbacks run on an RPC poller thread (or, for a batch that fails to
 * start, on the thread that dispatched it, possibly inside submit).
 */
#ifndef TS_BATCHER_H
#define TS_BATCHER_H

#include "dispatch.h"
#include "registry.h"

typedef struct ts_batcher ts_batcher;
/* One submitted request, for ts_batcher_cancel; valid until its `done`
 * returned. */
typedef struct ts_batch_item ts_batch_item;

/* One request's answer: output k is model->outputs[k], rows of this request
 * only (views valid during the callback). On failure err->code != 0. */
typedef void (*ts_batch_done_fn)(void *user, const ts_err *err,
                                  const ts_tensor *const *outputs,
                                  int n_outputs);

int ts_batcher_create(ts_membership *cluster, const ts_dispatch_opts *opts,
                      int max_queue, ts_batcher **out, ts_err *err);
/* Whether this request can be batched: the model batches and every input's
 * first dim is dynamic in the model and equal across the request. */
int ts_batcher_accepts(const ts_served_model *m, const ts_tensor *inputs);
/* Queues a request. `inputs` are in model->inputs order and must stay valid
 * until `done`; the caller holds a reference to `m` until then. *item (may
 * be NULL) gets the request's handle before it is queued. Returns
 * TS_EEXHAUSTED when the queue is full (done is then not called). */
int ts_batcher_submit(ts_batcher *b, ts_served_model *m,
                      const ts_tensor *inputs, int64_t deadline,
                      ts_batch_done_fn done, void *user,
                      ts_batch_item **item, ts_err *err);
/* The request's client went away (cancelled, or its deadline passed); from
 * any thread, before its `done` returned, not from inside `done`. Still
 * queued: it leaves the queue and is answered `code` at once (its `done`
 * runs on the calling thread). Already in a batch: the batch runs on for the
 * others and this request's rows are dropped; a batch whose every request was
 * cancelled is itself cancelled (ts_dispatch_cancel). */
void ts_batcher_cancel(ts_batcher *b, ts_batch_item *item, int code);
/* Requests submitted and not yet answered (for /metrics). */
int ts_batcher_queued(ts_batcher *b);
/* Flushes what is queued, waits for batches in flight, stops the thread. */
void ts_batcher_free(ts_batcher *b);

#endif
