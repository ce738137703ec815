/*
 * infer.h - one inference request in flight, whatever transport carried
 * it (gRPC ModelInfer in frontend.c, KServe v2 REST in rest.c), and the
 * lookups both transports answer from.
 *
 * The request path: find the model (ready), validate and bind the inputs
 * (validate.h), cap the deadline at max_deadline_ms, then hand the inputs
 * to the batcher or the dispatcher; the transport's answer callback runs
 * exactly once, with the outputs or with an error (ts_err code + message).
 * A transport that learns that its client went away calls
 * ts_infer_cancel. Metrics (metrics.h) are recorded here, once per
 * request, with the outcome the transport answered.
 *
 * Lifetime: ts_infer_new makes the request (and its arena, in which the
 * transport builds the Inference__ModelInferRequest); ts_infer_run or
 * ts_infer_abandon consumes it. It is freed right after the answer
 * callback returns, which may happen inside ts_infer_run.
 */
#ifndef TS_FRONTEND_INFER_H
#define TS_FRONTEND_INFER_H

#include "frontend.h"
#include "inference.pb-c.h"
#include "registry.h"
#include "reply.h"
#include "rpc_message.h"

typedef struct ts_infer ts_infer;

/* What the answer callback gets. err->code is 0 for success, when
 * lookup(src, NAME) finds each output of the model; req and model are
 * those of the request (model NULL when it was not found); arena is the
 * request's, for the answer's small arrays. */
typedef struct ts_infer_result {
  const ts_err *err;
  const Inference__ModelInferRequest *req;
  const ts_served_model *model;
  ts_rpc_arena *arena;
  ts_frontend_lookup_fn lookup;
  const void *src;
} ts_infer_result;

/* Answers the client; returns the TS_E* code it answered (0: the
 * outputs), for the metrics. Runs on any thread, exactly once. */
typedef int (*ts_infer_answer_fn)(void *user, const ts_infer_result *r);

/* A new request on fe, answered through answer(user, ...). NULL with *err
 * set (UNAVAILABLE while draining, RESOURCE_EXHAUSTED) when none can be
 * accepted; that refusal is counted in the metrics already. */
ts_infer *ts_infer_new(ts_frontend *fe, ts_infer_answer_fn answer, void *user,
                       ts_err *err);

/* The arena the transport builds the request in; it lives as long as the
 * request. */
ts_rpc_arena *ts_infer_arena(ts_infer *inf);

/* Runs `req` (in the request's arena, or outliving the answer) under the
 * client's deadline (TS_DEADLINE_NONE: none; either way capped at
 * max_deadline_ms). Returns 1 while the request is in flight (the caller
 * may register for cancellation; the answer may have come already), 0 when
 * it was answered with an error and freed before returning. */
int ts_infer_run(ts_infer *inf, Inference__ModelInferRequest *req,
                 int64_t client_deadline);

/* Frees a request that never ran (its transport refused it with `code`),
 * counting it in the metrics. */
void ts_infer_abandon(ts_infer *inf, int code);

/* The client went away (code TS_ECANCELLED or TS_ETIMEDOUT): the worker
 * calls are cancelled, or the request leaves the batcher. Only while the
 * answer has not been given (the transport guarantees it). */
void ts_infer_cancel(ts_infer *inf, int code, const char *why);

/* The request's id and model name, for the transport's logs. */
const char *ts_infer_id(const ts_infer *inf);
const char *ts_infer_model_name(const ts_infer *inf);

/* ---- lookups shared by the transports ---------------------------------- */

/* The model named in a request (a reference the caller releases), or NULL
 * with *err set to NOT_FOUND (unknown name or version) or, when need_ready,
 * UNAVAILABLE (not ready). version NULL or "": the served one. */
ts_served_model *ts_frontend_model_find(ts_frontend *fe, const char *name,
                                        const char *version, int need_ready,
                                        ts_err *err);

/* Whether the server is ready: a live worker and every model ready. */
int ts_frontend_ready(ts_frontend *fe);

/* The protocol extensions the server metadata lists. */
extern const char *const ts_frontend_extensions[];
#define TS_FRONTEND_N_EXTENSIONS 2

/* The repository index's name of a model state ("READY", ...). */
const char *ts_frontend_state_name(ts_model_state s);

/* The platform a model's metadata names ("onnx_onnxv1", "ensemble"). */
const char *ts_frontend_platform(const ts_served_model *m);

#endif
