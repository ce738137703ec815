/* infer.c - one inference request in flight, for any transport. See
 * infer.h. */
#include "infer.h"

#include "batcher.h"
#include "exposition.h"
#include "metrics.h"
#include "validate.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* One request in flight. Its request is built in the arena, and the small
 * arrays come from there too: one allocation per request unless the
 * request outgrows the arena's inline bytes. */
struct ts_infer {
  ts_frontend *fe;
  ts_infer_answer_fn answer;
  void *user;
  Inference__ModelInferRequest *req; /* in arena, or the transport's */
  ts_served_model *model;
  ts_dispatch *inf;        /* unbatched: the inference */
  ts_batch_item *item;     /* batched: the request in the batcher */
  ts_tensor *inputs;       /* in arena: views into req, or owned widened
                              copies */
  int n_inputs;
  ts_tensor *ordered;      /* in arena: the same views in the model's input
                              order */
  int outcome;             /* the TS_E* code answered (metrics.h) */
  int64_t rows;            /* inferences in it: its batch rows if the model
                              batches, else 1 (metrics.h) */
  double arrived, bound, dispatched; /* ts_metrics_now() */
  ts_rpc_arena arena;      /* last: not zeroed */
};

static void infer_free(ts_infer *ctx) {
  ts_coord_metrics_request(ctx->req ? ctx->req->model_name : NULL,
                           ctx->outcome, ctx->rows,
                           ts_metrics_now() - ctx->arrived);
  atomic_fetch_sub(&ctx->fe->in_flight, 1);
  if (ctx->inf) ts_dispatch_free(ctx->inf);
  for (int i = 0; i < ctx->n_inputs; i++) ts_tensor_free(&ctx->inputs[i]);
  if (ctx->model) ts_served_model_release(ctx->model);
  ts_rpc_arena_release(&ctx->arena);
  free(ctx);
}

/* Answers through the transport and frees ctx. */
static void answer(ts_infer *ctx, const ts_err *err,
                   ts_frontend_lookup_fn lookup, const void *src) {
  ts_infer_result r = {err, ctx->req, ctx->model, &ctx->arena, lookup, src};
  double start = ts_metrics_now();
  ctx->outcome = ctx->answer(ctx->user, &r);
  if (!err->code && !ctx->outcome)
    ts_coord_metrics_compute_output(ctx->model->config.name,
                                    ts_metrics_now() - start);
  infer_free(ctx);
}

ts_infer *ts_infer_new(ts_frontend *fe, ts_infer_answer_fn fn, void *user,
                       ts_err *err) {
  ts_infer *ctx = malloc(sizeof *ctx);
  if (!ctx) {
    ts_err_set(err, TS_ENOMEM, "out of memory");
    return NULL;
  }
  memset(ctx, 0, offsetof(ts_infer, arena));
  ts_rpc_arena_init(&ctx->arena);
  ctx->fe = fe;
  ctx->answer = fn;
  ctx->user = user;
  ctx->arrived = ts_metrics_now();
  atomic_fetch_add(&fe->in_flight, 1);
  if (atomic_load(&fe->draining)) {
    ts_err_set(err, TS_EUNAVAILABLE, "the server is shutting down");
    ts_infer_abandon(ctx, TS_EUNAVAILABLE);
    return NULL;
  }
  return ctx;
}

ts_rpc_arena *ts_infer_arena(ts_infer *inf) { return &inf->arena; }

void ts_infer_abandon(ts_infer *inf, int code) {
  inf->outcome = code;
  infer_free(inf);
}

const char *ts_infer_id(const ts_infer *inf) {
  return inf->req ? inf->req->id : "";
}

const char *ts_infer_model_name(const ts_infer *inf) {
  return inf->model ? inf->model->config.name : "";
}

static const ts_tensor *infer_lookup(const void *src, const char *name) {
  return ts_dispatch_value(src, name);
}

/* Batched results: output k of the model is outputs[k]. */
typedef struct batched_results {
  const ts_served_model *model;
  const ts_tensor *const *outputs;
} batched_results;

static const ts_tensor *batched_lookup(const void *src, const char *name) {
  const batched_results *r = src;
  for (int k = 0; k < r->model->n_outputs; k++)
    if (strcmp(r->model->outputs[k].name, name) == 0) return r->outputs[k];
  return NULL;
}

static void on_infer_done(ts_dispatch *inf, void *user) {
  ts_infer *ctx = user;
  const ts_err *e = ts_dispatch_error(inf);
  const char *name = ctx->model->config.name;
  ts_coord_metrics_queue(name, ctx->dispatched - ctx->bound);
  ts_coord_metrics_compute(name, ts_metrics_now() - ctx->dispatched);
  if (e->code)
    ts_log_debug("request '%s' on %s failed: %s", ctx->req->id, name, e->msg);
  answer(ctx, e, infer_lookup, inf);
}

static void on_batched_done(void *user, const ts_err *err,
                            const ts_tensor *const *outputs, int n_outputs) {
  ts_infer *ctx = user;
  (void)n_outputs;
  batched_results r = {ctx->model, outputs};
  answer(ctx, err, batched_lookup, &r);
}

void ts_infer_cancel(ts_infer *inf, int code, const char *why) {
  if (inf->inf)
    ts_dispatch_cancel(inf->inf, code, why);
  else if (inf->item)
    ts_batcher_cancel(inf->fe->batcher, inf->item, code);
}

int ts_infer_run(ts_infer *ctx, Inference__ModelInferRequest *req,
                 int64_t client_deadline) {
  ts_frontend *fe = ctx->fe;
  ts_err err = {0};
  ctx->req = req;
  ctx->model = ts_frontend_model_find(fe, req->model_name, req->model_version,
                                      1, &err);
  if (!ctx->model) {
    answer(ctx, &err, NULL, NULL);
    return 0;
  }
  int64_t now = ts_now_ms();
  int64_t deadline = client_deadline;
  if (deadline == TS_DEADLINE_NONE || deadline - now > fe->max_deadline_ms)
    deadline = now + fe->max_deadline_ms;
  int rc = ts_frontend_bind_inputs(req, ctx->model, &ctx->arena, &ctx->inputs,
                                   &ctx->n_inputs, &err);
  if (rc == TS_OK && deadline <= now)
    rc = ts_err_set(&err, TS_ETIMEDOUT, "deadline passed before dispatch");
  if (rc == TS_OK && fe->batcher)
    rc = ts_frontend_order_inputs(req, ctx->model, ctx->inputs, &ctx->arena,
                                  &ctx->ordered, &err);
  if (rc == TS_OK) {
    ctx->rows = ts_batcher_batches(ctx->model) && ctx->n_inputs &&
                        ctx->inputs[0].rank
                    ? ctx->inputs[0].dims[0]
                    : 1;
    ctx->bound = ts_metrics_now();
    ts_coord_metrics_compute_input(ctx->model->config.name,
                                   ctx->bound - ctx->arrived);
  }
  if (rc == TS_OK && fe->batcher &&
      ts_batcher_accepts(ctx->model, ctx->ordered)) {
    rc = ts_batcher_submit(fe->batcher, ctx->model, ctx->ordered, deadline,
                           on_batched_done, ctx, &ctx->item, &err);
    /* ctx may be answered and freed already: the caller's cancellation
     * registration on an answered request does nothing. */
    if (rc == TS_OK) return 1;
  }
  if (rc == TS_OK) {
    ctx->inf = ts_dispatch_new(fe->cluster, ctx->model, &fe->dispatch, deadline,
                               req->id);
    if (!ctx->inf) rc = ts_err_set(&err, TS_ENOMEM, "out of memory");
  }
  for (int i = 0; rc == TS_OK && i < ctx->n_inputs; i++)
    rc = ts_dispatch_add_input(ctx->inf, req->inputs[i]->name,
                               &ctx->inputs[i], &err);
  if (rc) {
    answer(ctx, &err, NULL, NULL);
    return 0;
  }
  ts_coord_metrics_batch(ctx->model->config.name,
                         ctx->n_inputs && ctx->inputs[0].rank
                             ? ctx->inputs[0].dims[0] : 1);
  ctx->dispatched = ts_metrics_now();
  ts_dispatch_start(ctx->inf, on_infer_done, ctx); /* may answer at once */
  return 1;
}

/* ---- lookups ------------------------------------------------------------ */

ts_served_model *ts_frontend_model_find(ts_frontend *fe, const char *name,
                                        const char *version, int need_ready,
                                        ts_err *err) {
  ts_served_model *m = ts_registry_acquire(fe->registry, name);
  char served[TS_VERSION_STR_MAX];
  if (!m)
    ts_err_set(err, TS_ENOTFOUND, "model '%s' is not loaded", name);
  else if (version && version[0] &&
           strcmp(version, ts_model_config_version_str(&m->config, served)))
    ts_err_set(err, TS_ENOTFOUND, "model '%s' has no version '%s' (only %s)",
               name, version, served);
  else if (need_ready && m->state != TS_MODEL_READY)
    ts_err_set(err, TS_EUNAVAILABLE, "model '%s' is not ready: %s", name,
               m->reason[0] ? m->reason : "loading");
  if (err->code && m) {
    ts_served_model_release(m);
    m = NULL;
  }
  return m;
}

int ts_frontend_ready(ts_frontend *fe) {
  ts_served_model **models;
  int n, ready = ts_membership_live_count(fe->cluster) > 0;
  if (ts_registry_snapshot(fe->registry, &models, &n) != TS_OK) return 0;
  for (int i = 0; i < n; i++) {
    ready &= models[i]->state == TS_MODEL_READY;
    ts_served_model_release(models[i]);
  }
  free(models);
  return ready;
}

const char *const ts_frontend_extensions[TS_FRONTEND_N_EXTENSIONS] = {
    "model_repository", "tessera_sharding"};

const char *ts_frontend_state_name(ts_model_state s) {
  static const char *const names[] = {"LOADING", "READY", "UNAVAILABLE"};
  return names[s];
}

const char *ts_frontend_platform(const ts_served_model *m) {
  return m->config.is_ensemble ? "ensemble" : "onnx_onnxv1";
}
