/* dispatch.c - see dispatch.h. */
#include "dispatch.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exposition.h"
#include "fuse.h"
#include "log.h"
#include "metrics.h"
#include "wire.h"
#include "worker.pb-c.h"

#define RUN_SHARD "/tessera.worker.v1.Worker/RunShard"

typedef struct value {
  const char *name;   /* points into the request, the plan or a response */
  ts_tensor t;        /* owned only for fused tensors */
} value;

typedef struct subcall {
  ts_dispatch *inf;
  int shard;          /* index in the stage */
  int64_t row0, rows; /* batch slice; rows < 0: the whole batch */
  int replica;        /* position among the shard's replicas */
  uint64_t tried;     /* positions that failed this call */
  int attempts;
  uint8_t *req;       /* packed request until sent (gRPC takes it over) */
  size_t req_len;
  double sent_at;     /* ts_metrics_now() when the last attempt started */
  Tessera__Worker__V1__RunShardResponse *resp;
  ts_rpc_outcall *handle; /* while the call is out; under inf->mu */
} subcall;

struct ts_dispatch {
  ts_membership *cluster;
  ts_served_model *model;
  ts_dispatch_opts opts;
  int64_t deadline;
  char request_id[64];
  value *values;
  int n_values, cap_values;
  /* Guards err, cancelled, and (against ts_dispatch_cancel) the calls and
   * children arrays and each call's handle. */
  pthread_mutex_t mu;
  ts_err err;
  bool cancelled;     /* no call is started any more */
  atomic_int pending;
  int stage;
  subcall *calls;
  int n_calls;
  int split;          /* current stage is cut into batch slices */
  Tessera__Worker__V1__RunShardResponse **responses;
  int n_responses, cap_responses;
  ts_dispatch **children;
  int n_children;
  ts_dispatch_done_fn done;
  void *user;
};

static void stage_start(ts_dispatch *inf);

ts_dispatch *ts_dispatch_new(ts_membership *cluster, ts_served_model *model,
                             const ts_dispatch_opts *opts, int64_t deadline,
                             const char *request_id) {
  ts_dispatch *inf = calloc(1, sizeof *inf);
  if (!inf) return NULL;
  inf->cluster = cluster;
  inf->model = model;
  if (opts) inf->opts = *opts;
  inf->deadline = deadline;
  snprintf(inf->request_id, sizeof inf->request_id, "%s",
           request_id ? request_id : "");
  pthread_mutex_init(&inf->mu, NULL);
  return inf;
}

static int add_value(ts_dispatch *inf, const char *name, const ts_tensor *t,
                     ts_err *err) {
  if (inf->n_values == inf->cap_values) {
    int cap = inf->cap_values ? inf->cap_values * 2 : 16;
    value *grown = realloc(inf->values, (size_t)cap * sizeof *grown);
    if (!grown) return ts_err_set(err, TS_ENOMEM, "out of memory");
    inf->values = grown;
    inf->cap_values = cap;
  }
  inf->values[inf->n_values].name = name;
  inf->values[inf->n_values].t = *t;
  inf->n_values++;
  return TS_OK;
}

int ts_dispatch_add_input(ts_dispatch *inf, const char *name,
                          const ts_tensor *t, ts_err *err) {
  ts_tensor view = *t;
  view.owned = false;
  return add_value(inf, name, &view, err);
}

const ts_tensor *ts_dispatch_value(const ts_dispatch *inf, const char *name) {
  /* Latest first: a fused tensor shadows nothing, but be safe. */
  for (int i = inf->n_values - 1; i >= 0; i--)
    if (strcmp(inf->values[i].name, name) == 0) return &inf->values[i].t;
  return NULL;
}

const ts_err *ts_dispatch_error(const ts_dispatch *inf) { return &inf->err; }

/* Records the first failure; later ones are dropped. */
static void fail(ts_dispatch *inf, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(ts_dispatch *inf, int code, const char *fmt, ...) {
  pthread_mutex_lock(&inf->mu);
  if (inf->err.code == TS_OK) {
    va_list ap;
    va_start(ap, fmt);
    inf->err.code = code;
    vsnprintf(inf->err.msg, sizeof inf->err.msg, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&inf->mu);
}

static int failed(ts_dispatch *inf) {
  pthread_mutex_lock(&inf->mu);
  int code = inf->err.code;
  pthread_mutex_unlock(&inf->mu);
  return code;
}

static void finish(ts_dispatch *inf) {
  if (inf->err.code)
    atomic_fetch_add(&ts_served_counts(inf->model)->failures, 1);
  inf->done(inf, inf->user);
}

/* ---- one shard call ------------------------------------------------- */

static const ts_stage *current_stage(const ts_dispatch *inf) {
  return &inf->model->plan->stages[inf->stage];
}

static const int *call_replicas(const subcall *sc) {
  return ts_served_model_replicas(sc->inf->model, sc->inf->stage, sc->shard);
}

static ts_worker *call_worker(const subcall *sc) {
  return &sc->inf->cluster->workers[call_replicas(sc)[sc->replica]];
}

/* Packs the RunShard request of `sc` (inputs viewed, sliced if asked). */
static int build_request(ts_dispatch *inf, subcall *sc, ts_err *err) {
  const ts_shard *shard = &current_stage(inf)->shards[sc->shard];
  int n = shard->n_inputs;
  Tessera__Worker__V1__Tensor *msgs = calloc((size_t)(n ? n : 1), sizeof *msgs);
  Tessera__Worker__V1__Tensor **ptrs = calloc((size_t)(n ? n : 1), sizeof *ptrs);
  int64_t(*dims)[TS_MAX_RANK] = calloc((size_t)(n ? n : 1), sizeof *dims);
  int rc = TS_OK;
  if (!msgs || !ptrs || !dims) rc = ts_err_set(err, TS_ENOMEM, "out of memory");
  for (int i = 0; i < n && rc == TS_OK; i++) {
    const ts_tensor *t = ts_dispatch_value(inf, shard->inputs[i]);
    if (!t) {
      rc = ts_err_set(err, TS_EINTERNAL, "shard %s needs tensor '%s', which "
                      "no earlier stage produced", shard->label,
                      shard->inputs[i]);
      break;
    }
    ts_tensor slice = *t;
    if (sc->rows >= 0 && t->rank > 0 && t->dims[0] > 0) {
      size_t row_bytes = t->nbytes / (size_t)t->dims[0];
      slice.dims[0] = sc->rows;
      slice.data = (uint8_t *)t->data + (size_t)sc->row0 * row_bytes;
      slice.nbytes = (size_t)sc->rows * row_bytes;
    }
    tessera__worker__v1__tensor__init(&msgs[i]);
    ts_wire_tensor_fill(&msgs[i], shard->inputs[i], &slice, dims[i]);
    ptrs[i] = &msgs[i];
  }
  if (rc == TS_OK) {
    Tessera__Worker__V1__RunShardRequest req =
        TESSERA__WORKER__V1__RUN_SHARD_REQUEST__INIT;
    req.shard_id = (char *)shard->id;
    req.n_inputs = (size_t)n;
    req.inputs = ptrs;
    req.n_outputs = (size_t)shard->n_outputs;
    req.outputs = shard->outputs;
    req.request_id = inf->request_id;
    sc->req_len = tessera__worker__v1__run_shard_request__get_packed_size(&req);
    sc->req = malloc(sc->req_len ? sc->req_len : 1);
    if (!sc->req)
      rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    else
      tessera__worker__v1__run_shard_request__pack(&req, sc->req);
  }
  free(msgs);
  free(ptrs);
  free(dims);
  return rc;
}

static void on_call_done(void *user, const ts_rpc_result *res);
static int live_replicas(ts_dispatch *inf, int shard);

/* Starts the call of `sc` on its replica. Returns false, with the failure
 * recorded, when it did not start (the inference was cancelled, or no
 * memory); then `done` will not run for it and the caller accounts for it. */
static bool send_call(subcall *sc) {
  ts_dispatch *inf = sc->inf;
  ts_worker *w = call_worker(sc);
  int64_t deadline = inf->deadline;
  /* The attempt limit only helps where another replica can take over; a
   * lone replica gets the whole deadline (a big shard may be slow). */
  if (inf->opts.attempt_timeout_ms > 0 && live_replicas(inf, sc->shard) > 1 &&
      ts_now_ms() + inf->opts.attempt_timeout_ms < deadline)
    deadline = ts_now_ms() + inf->opts.attempt_timeout_ms;
  /* Under inf->mu, so ts_dispatch_cancel sees either no call or its handle;
   * `done` runs on a poller and takes inf->mu first, so inf outlives
   * this. Once started, `done` always runs (also for calls that fail to
   * start in gRPC). The packed bytes go to gRPC as they are (no copy); a
   * retry packs them again; a cancelled request's stay for free_calls. */
  pthread_mutex_lock(&inf->mu);
  int rc = TS_ECANCELLED;
  if (!inf->cancelled) {
    sc->attempts++;
    atomic_fetch_add(&w->outstanding, 1);
    atomic_fetch_add(&w->calls, 1);
    ts_coord_metrics_worker_bytes(w->index, sc->req_len, 0);
    sc->sent_at = ts_metrics_now();
    uint8_t *req = sc->req;
    sc->req = NULL;
    rc = ts_rpc_call_async_owned(inf->cluster->client, w->channel, RUN_SHARD,
                                 req, sc->req_len, deadline, on_call_done, sc,
                                 &sc->handle);
    if (rc != TS_OK) atomic_fetch_sub(&w->outstanding, 1);
  }
  pthread_mutex_unlock(&inf->mu);
  if (rc != TS_OK && rc != TS_ECANCELLED)
    fail(inf, rc, "cannot start the call of shard %s on %s",
         current_stage(inf)->shards[sc->shard].label, w->address);
  return rc == TS_OK;
}

/* UNAVAILABLE: the worker is gone; RESOURCE_EXHAUSTED: its queue is full;
 * NOT_FOUND: it restarted and lost the shard (re-sent when it is back);
 * DEADLINE_EXCEEDED before the request's own deadline: the attempt timed
 * out on a stalled worker; CANCELLED: the worker's server stopped under
 * the call (it is leaving). The caller retries only an inference that has
 * not failed, so a call the coordinator cancelled itself is never retried. */
static int retryable(const ts_dispatch *inf, int status) {
  return status == 14 || status == 8 || status == 5 || status == 1 ||
         (status == 4 && ts_now_ms() < inf->deadline);
}

/* Statuses after which the worker is taken out of rotation. */
static int takes_worker_down(int status) {
  return status == 14 || status == 5 || status == 4;
}

static void stage_finish(ts_dispatch *inf);

static void on_call_done(void *user, const ts_rpc_result *res) {
  subcall *sc = user;
  ts_dispatch *inf = sc->inf;
  pthread_mutex_lock(&inf->mu);
  sc->handle = NULL; /* invalid once this returns */
  pthread_mutex_unlock(&inf->mu);
  ts_worker *w = call_worker(sc);
  const ts_shard *shard = &current_stage(inf)->shards[sc->shard];
  atomic_fetch_sub(&w->outstanding, 1);
  ts_coord_metrics_worker_bytes(w->index, 0, res->len);
  if (res->status == 0) {
    ts_coord_metrics_worker_call(w->index, sc->req_len + res->len,
                                 ts_metrics_now() - sc->sent_at);
    sc->resp = tessera__worker__v1__run_shard_response__unpack(NULL, res->len,
                                                               res->data);
    if (!sc->resp)
      fail(inf, TS_EIO, "worker %s answered shard %s with a malformed message",
           w->address, shard->label);
  } else if (retryable(inf, res->status) && !failed(inf)) {
    if (takes_worker_down(res->status)) {
      /* Down until the prober sees it again and re-sends its shards. */
      atomic_fetch_add(&w->failures, 1);
      if (atomic_exchange(&w->up, 0)) {
        ts_coord_metrics_worker_down(w->index);
        ts_log_warn("worker %s marked down: %s", w->address, res->message);
      }
    }
    if (sc->replica < 64) sc->tried |= 1ull << sc->replica;
    int next = -1;
    if (sc->attempts < TS_RETRY_BUDGET && ts_now_ms() < inf->deadline)
      next = ts_sched_pick(inf->cluster, call_replicas(sc),
                           inf->model->n_replicas, sc->tried, inf->opts.policy);
    ts_err err = {0};
    if (next >= 0 && build_request(inf, sc, &err) == TS_OK) {
      ts_log_info("retrying shard %s of request '%s' on %s after: %s",
                  shard->label, inf->request_id,
                  inf->cluster->workers[call_replicas(sc)[next]].address,
                  res->message);
      sc->replica = next;
      ts_coord_metrics_retry(res->status);
      if (send_call(sc)) return;
    } else if (next >= 0) {
      fail(inf, err.code, "%s", err.msg);
    } else if (res->status == 8) {
      /* Every replica tried refused for lack of resources (a full queue,
       * or a run beyond its activation limit): the client's status. */
      fail(inf, TS_EEXHAUSTED, "no replica of shard %s had the resources to "
           "run it (last: %s: %s)", shard->label, w->address, res->message);
    } else {
      fail(inf, TS_EUNAVAILABLE,
           "no live replica of shard %s could answer (last: %s: %s)",
           shard->label, w->address, res->message);
    }
  } else {
    fail(inf, res->code, "%s", res->message);
  }
  if (atomic_fetch_sub(&inf->pending, 1) == 1) stage_finish(inf);
}

/* ---- stages ---------------------------------------------------------- */

/* Rows of the batch common to every stage input; -1 when they disagree. */
static int64_t stage_batch(ts_dispatch *inf, const ts_stage *st) {
  int64_t batch = -1;
  for (int i = 0; i < st->n_inputs; i++) {
    const ts_tensor *t = ts_dispatch_value(inf, st->inputs[i]);
    if (!t || t->rank == 0) return -1;
    if (batch >= 0 && t->dims[0] != batch) return -1;
    batch = t->dims[0];
  }
  return batch;
}

static int live_replicas(ts_dispatch *inf, int shard) {
  const int *reps = ts_served_model_replicas(inf->model, inf->stage, shard);
  int live = 0;
  for (int r = 0; r < inf->model->n_replicas; r++)
    live += atomic_load(&inf->cluster->workers[reps[r]].up);
  return live;
}

static void stage_start(ts_dispatch *inf) {
  const ts_stage *st = current_stage(inf);
  int pieces = 1;
  int64_t batch = -1;
  if (st->batch_splittable && st->n_shards == 1 && inf->model->n_replicas > 1) {
    batch = stage_batch(inf, st);
    if (batch >= 2 * TS_SPLIT_MIN_ROWS) {
      int live = live_replicas(inf, 0);
      int64_t most = batch / TS_SPLIT_MIN_ROWS;
      pieces = live < most ? live : (int)most;
      if (pieces < 1) pieces = 1;
    }
  }
  inf->split = pieces > 1;
  int n_calls = inf->split ? pieces : st->n_shards;
  subcall *new_calls = calloc((size_t)n_calls, sizeof *new_calls);
  pthread_mutex_lock(&inf->mu);
  inf->calls = new_calls;
  inf->n_calls = new_calls ? n_calls : 0;
  pthread_mutex_unlock(&inf->mu);
  if (!inf->calls) {
    fail(inf, TS_ENOMEM, "out of memory");
    finish(inf);
    return;
  }
  ts_err err = {0};
  uint64_t chosen = 0;
  for (int i = 0; i < inf->n_calls; i++) {
    subcall *sc = &inf->calls[i];
    sc->inf = inf;
    sc->shard = inf->split ? 0 : i;
    sc->rows = -1;
    if (inf->split) {
      sc->row0 = batch * i / pieces;
      sc->rows = batch * (i + 1) / pieces - sc->row0;
    }
    int rc = build_request(inf, sc, &err);
    if (rc) {
      fail(inf, rc, "%s", err.msg);
      finish(inf);
      return;
    }
    /* Slices go to distinct replicas while there are enough. */
    const int *reps = call_replicas(sc);
    int pick = ts_sched_pick(inf->cluster, reps, inf->model->n_replicas,
                             inf->split ? chosen : 0, inf->opts.policy);
    if (pick < 0 && inf->split)
      pick = ts_sched_pick(inf->cluster, reps, inf->model->n_replicas, 0,
                           inf->opts.policy);
    if (pick < 0) {
      fail(inf, TS_EUNAVAILABLE, "no live worker holds shard %s",
           st->shards[sc->shard].label);
      finish(inf);
      return;
    }
    if (pick < 64) chosen |= 1ull << pick;
    sc->replica = pick;
  }
  atomic_store(&inf->pending, inf->n_calls);
  int n = inf->n_calls;
  subcall *calls = inf->calls;
  /* After the last send `inf` may already be finished and freed. A call
   * that did not start counts as done; until the last one, the calls not
   * yet sent keep `pending` above zero, so nobody else finishes inf. */
  for (int i = 0; i < n; i++)
    if (!send_call(&calls[i]) && atomic_fetch_sub(&inf->pending, 1) == 1)
      stage_finish(inf);
}

static int keep_response(ts_dispatch *inf,
                         Tessera__Worker__V1__RunShardResponse *resp) {
  if (inf->n_responses == inf->cap_responses) {
    int cap = inf->cap_responses ? inf->cap_responses * 2 : 8;
    void *grown = realloc(inf->responses, (size_t)cap * sizeof *inf->responses);
    if (!grown) return TS_ENOMEM;
    inf->responses = grown;
    inf->cap_responses = cap;
  }
  inf->responses[inf->n_responses++] = resp;
  return TS_OK;
}

static const Tessera__Worker__V1__Tensor *
response_output(const Tessera__Worker__V1__RunShardResponse *r,
                const char *name) {
  for (size_t i = 0; i < r->n_outputs; i++)
    if (strcmp(r->outputs[i]->name, name) == 0) return r->outputs[i];
  return NULL;
}

/* ts_fuse_stage's view of the inference's values: fused tensors become
 * values, so later (nested) fusions of the stage find them. */
static const ts_tensor *fuse_lookup(void *user, const char *name) {
  return ts_dispatch_value(user, name);
}

static int fuse_store(void *user, const char *name, ts_tensor *t,
                      ts_err *err) {
  int rc = add_value(user, name, t, err);
  if (rc) ts_tensor_free(t);
  return rc;
}

/* Adds the stage's results as values: worker outputs viewed in place, batch
 * slices concatenated, plan fusions applied in order. */
static int collect_stage(ts_dispatch *inf, ts_err *err) {
  const ts_stage *st = current_stage(inf);
  int rc = TS_OK;
  for (int i = 0; i < inf->n_calls; i++) {
    if (keep_response(inf, inf->calls[i].resp) != TS_OK)
      return ts_err_set(err, TS_ENOMEM, "out of memory");
    inf->calls[i].resp = NULL;
  }
  Tessera__Worker__V1__RunShardResponse **resps =
      &inf->responses[inf->n_responses - inf->n_calls];
  if (inf->split) {
    const ts_shard *shard = &st->shards[0];
    ts_tensor *parts = calloc((size_t)inf->n_calls, sizeof *parts);
    const ts_tensor **ptrs = calloc((size_t)inf->n_calls, sizeof *ptrs);
    if (!parts || !ptrs) rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    for (int o = 0; o < shard->n_outputs && rc == TS_OK; o++) {
      for (int i = 0; i < inf->n_calls && rc == TS_OK; i++) {
        const Tessera__Worker__V1__Tensor *m =
            response_output(resps[i], shard->outputs[o]);
        if (!m)
          rc = ts_err_set(err, TS_EIO, "worker answer lacks output '%s'",
                          shard->outputs[o]);
        else
          rc = ts_wire_tensor_view(m, &parts[i], err);
        ptrs[i] = &parts[i];
      }
      ts_tensor out;
      if (rc == TS_OK)
        rc = ts_fuse_concat(ptrs, inf->n_calls, 0, &out, err);
      if (rc == TS_OK) {
        rc = add_value(inf, shard->outputs[o], &out, err);
        if (rc) ts_tensor_free(&out);
      }
      /* A view owns a copy only where the wire's bytes were misaligned. */
      for (int i = 0; i < inf->n_calls; i++) {
        ts_tensor_free(&parts[i]);
        memset(&parts[i], 0, sizeof parts[i]);
      }
    }
    free(parts);
    free(ptrs);
    return rc;
  }
  for (int i = 0; i < inf->n_calls && rc == TS_OK; i++)
    for (size_t o = 0; o < resps[i]->n_outputs && rc == TS_OK; o++) {
      ts_tensor t;
      rc = ts_wire_tensor_view(resps[i]->outputs[o], &t, err);
      if (rc == TS_OK) {
        rc = add_value(inf, resps[i]->outputs[o]->name, &t, err);
        if (rc) ts_tensor_free(&t);
      }
    }
  if (rc == TS_OK) {
    ts_fuse_env env = {fuse_lookup, fuse_store, inf};
    rc = ts_fuse_stage(st, &env, err);
  }
  return rc;
}

static void free_calls(ts_dispatch *inf) {
  pthread_mutex_lock(&inf->mu);
  subcall *calls = inf->calls;
  int n = inf->n_calls;
  inf->calls = NULL;
  inf->n_calls = 0;
  pthread_mutex_unlock(&inf->mu);
  for (int i = 0; i < n; i++) {
    free(calls[i].req);
    if (calls[i].resp)
      tessera__worker__v1__run_shard_response__free_unpacked(calls[i].resp,
                                                             NULL);
  }
  free(calls);
}

static void stage_finish(ts_dispatch *inf) {
  if (!failed(inf)) {
    ts_err err = {0};
    if (collect_stage(inf, &err) != TS_OK) fail(inf, err.code, "%s", err.msg);
  }
  free_calls(inf);
  if (failed(inf) || ++inf->stage == inf->model->plan->n_stages) {
    finish(inf);
    return;
  }
  stage_start(inf);
}

/* ---- ensembles -------------------------------------------------------- */

static void ensemble_finish(ts_dispatch *inf) {
  const ts_served_model *m = inf->model;
  ts_err err = {0};
  int rc = TS_OK;
  const ts_tensor *parts[TS_ENSEMBLE_MAX];
  for (int j = 0; j < m->n_outputs && rc == TS_OK; j++) {
    for (int i = 0; i < inf->n_children && rc == TS_OK; i++) {
      parts[i] =
          ts_dispatch_value(inf->children[i], m->members[i]->outputs[j].name);
      if (!parts[i])
        rc = ts_err_set(&err, TS_EIO, "member %s produced no '%s'",
                        m->members[i]->config.name,
                        m->members[i]->outputs[j].name);
    }
    ts_tensor out;
    if (rc == TS_OK)
      rc = ts_fuse(m->config.fuse, parts, inf->n_children, 0,
                   m->config.fuse == TS_FUSE_WEIGHTED_MEAN ? m->config.weights
                                                           : NULL,
                   &out, &err);
    if (rc == TS_OK) {
      rc = add_value(inf, m->outputs[j].name, &out, &err);
      if (rc) ts_tensor_free(&out);
    }
  }
  if (rc) fail(inf, rc, "ensemble %s: %s", m->config.name, err.msg);
  finish(inf);
}

static void on_member_done(ts_dispatch *child, void *user) {
  ts_dispatch *inf = user;
  const ts_err *e = ts_dispatch_error(child);
  if (e->code)
    fail(inf, e->code, "ensemble member %s: %s", child->model->config.name,
         e->msg);
  if (atomic_fetch_sub(&inf->pending, 1) == 1) {
    if (failed(inf))
      finish(inf);
    else
      ensemble_finish(inf);
  }
}

static void ensemble_start(ts_dispatch *inf) {
  const ts_served_model *m = inf->model;
  int n = m->config.n_members;
  inf->children = calloc((size_t)n, sizeof *inf->children);
  if (!inf->children) {
    fail(inf, TS_ENOMEM, "out of memory");
    finish(inf);
    return;
  }
  ts_err err = {0};
  for (int i = 0; i < n; i++) {
    ts_dispatch *child =
        ts_dispatch_new(inf->cluster, m->members[i], &inf->opts, inf->deadline,
                        inf->request_id);
    int rc = child ? TS_OK : ts_err_set(&err, TS_ENOMEM, "out of memory");
    for (int v = 0; v < inf->n_values && rc == TS_OK; v++)
      rc = ts_dispatch_add_input(child, inf->values[v].name, &inf->values[v].t,
                                 &err);
    if (rc) {
      if (child) ts_dispatch_free(child);
      for (int j = 0; j < i; j++) ts_dispatch_free(inf->children[j]);
      inf->n_children = 0;
      fail(inf, rc, "%s", err.msg);
      finish(inf);
      return;
    }
    inf->children[i] = child;
  }
  pthread_mutex_lock(&inf->mu);
  inf->n_children = n;
  bool cancelled = inf->cancelled;
  pthread_mutex_unlock(&inf->mu);
  /* A cancel that came before the children were listed reaches them now. */
  if (cancelled)
    for (int i = 0; i < n; i++)
      ts_dispatch_cancel(inf->children[i], ts_dispatch_error(inf)->code,
                         ts_dispatch_error(inf)->msg);
  atomic_store(&inf->pending, n);
  ts_dispatch **children = inf->children;
  for (int i = 0; i < n; i++)
    ts_dispatch_start(children[i], on_member_done, inf);
}

void ts_dispatch_start(ts_dispatch *inf, ts_dispatch_done_fn done, void *user) {
  inf->done = done;
  inf->user = user;
  atomic_fetch_add(&ts_served_counts(inf->model)->requests, 1);
  if (failed(inf)) /* cancelled before it started */
    finish(inf);
  else if (inf->model->config.is_ensemble)
    ensemble_start(inf);
  else
    stage_start(inf);
}

void ts_dispatch_cancel(ts_dispatch *inf, int code, const char *why) {
  fail(inf, code, "%s", why);
  pthread_mutex_lock(&inf->mu);
  inf->cancelled = true;
  for (int i = 0; i < inf->n_calls; i++)
    if (inf->calls[i].handle) ts_rpc_outcall_cancel(inf->calls[i].handle);
  for (int i = 0; i < inf->n_children; i++)
    ts_dispatch_cancel(inf->children[i], code, why);
  pthread_mutex_unlock(&inf->mu);
}

void ts_dispatch_free(ts_dispatch *inf) {
  if (!inf) return;
  free_calls(inf);
  for (int i = 0; i < inf->n_children; i++) ts_dispatch_free(inf->children[i]);
  free(inf->children);
  for (int i = 0; i < inf->n_values; i++) ts_tensor_free(&inf->values[i].t);
  free(inf->values);
  for (int i = 0; i < inf->n_responses; i++)
    tessera__worker__v1__run_shard_response__free_unpacked(inf->responses[i],
                                                           NULL);
  free(inf->responses);
  pthread_mutex_destroy(&inf->mu);
  free(inf);
}
