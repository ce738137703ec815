/*
 * service.c - the Worker methods of proto/worker.proto.
 *
 * Threads: handlers run on the RPC poller threads and never run kernels or
 * parse shards there. LoadShard copies each chunk into the upload buffer as
 * it arrives (a memcpy of at most 1 MiB) and hands hashing and parsing to
 * the pool; RunShard validates and queues; the pool thread runs the shard
 * and answers. HasShard, UnloadShard and Status are answered in place.
 *
 * Ownership: a RunShard request's unpacked message (in the job's arena),
 * the tensors viewing its bytes and the shard reference live in one
 * run_job, freed by whichever pool callback (run or skip) answers the call. Outputs are packed straight
 * from the session's arena into the malloc'd reply that common/rpc takes over.
 *
 * LoadShard state is per call; rpc.h gives handlers no per-call slot, so
 * uploads in progress sit in a short list keyed by the call pointer (as many
 * entries as concurrent uploads; common/rpc calls on_end exactly once, which
 * removes the entry before the call can be freed).
 *
 * Upload deadline: the reaper thread fails, DEADLINE_EXCEEDED, every upload
 * in the list whose last chunk is older than the upload timeout. It only
 * answers the call (under loads_mu, so the entry and its call are alive);
 * common/rpc then ends the stream and on_end(cancelled) aborts the upload
 * and returns its reservation, on the poller thread, as for any dead call.
 */
#include "service.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "exposition.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "request.h"
#include "rpc.h"
#include "rpc_message.h"
#include "rpc_table.h"
#include "wire.h"
#include "worker.pb-c.h"

/* One poller: a RunShard crosses the poller and a kernel thread; a second
 * poller only adds wake-ups between pollers (measured on 2 busy cores,
 * batch-1 MLP calls: ~42 -> ~27 us of worker CPU per call). */
#define RPC_POLL_THREADS 1

typedef struct load_call load_call;

#define WORKER_UNARY_METHODS 4

struct ts_worker_service {
  ts_store *store;
  ts_pool *pool;
  ts_rpc_server *server;
  char address[300];
  atomic_uint_fast64_t runs_total;
  atomic_uint_fast64_t runs_cancelled; /* dropped before they ran */
  atomic_uint_fast64_t runs_discarded; /* ran; the caller had gone */
  atomic_uint_fast64_t activation_limit; /* bytes per run; 0: none */
  pthread_mutex_t loads_mu;
  load_call *loads; /* LoadShard calls between their first chunk and on_end */
  atomic_int_fast64_t upload_timeout_ms; /* 0: none */
  pthread_t reaper;
  pthread_cond_t reaper_cv; /* with loads_mu: stop, or a new timeout */
  bool reaper_stop;
  ts_rpc_binding bindings[WORKER_UNARY_METHODS]; /* worker_table's */
};

/* ---- helpers ---------------------------------------------------------- */

static int fail_err(ts_rpc_call *call, const ts_err *err) {
  ts_rpc_call_fail(call, err->code, err->msg);
  return err->code;
}

/* A refused shard is worth a line in the log: the coordinator will retry
 * or give up, and the operator wants to know why. */
static void log_load_refused(ts_rpc_call *call, const ts_err *err) {
  char peer[128];
  ts_log_warn("LoadShard from %s refused (%s): %s",
              ts_rpc_call_peer(call, peer, sizeof peer)
                  ? peer : "unknown peer",
              ts_strerror(err->code), err->msg);
}

/* What every pool job of this service starts with: the job itself and the
 * call it answers, so one is_cancelled serves both kinds. */
typedef struct call_job {
  ts_pool_job job; /* first: the pool hands back &job */
  ts_rpc_call *call;
} call_job;

static int call_job_cancelled(ts_pool_job *job) {
  return ts_rpc_call_is_cancelled(((call_job *)job)->call);
}

/* ---- LoadShard -------------------------------------------------------- */

struct load_call {
  call_job base; /* the finish step, once the stream has ended */
  load_call *next;
  ts_worker_service *svc;
  ts_store_upload *upload;
  uint64_t chunks;
  atomic_int_fast64_t last_chunk_ms; /* ts_now_ms() of the latest chunk */
  bool expired;                      /* failed by the reaper (loads_mu) */
};

static load_call *find_load(ts_worker_service *svc, ts_rpc_call *call,
                            int remove) {
  pthread_mutex_lock(&svc->loads_mu);
  load_call *found = NULL;
  for (load_call **p = &svc->loads; *p; p = &(*p)->next)
    if ((*p)->base.call == call) {
      found = *p;
      if (remove) *p = found->next;
      break;
    }
  pthread_mutex_unlock(&svc->loads_mu);
  return found;
}

/* Answers a LoadShard with the shard's interface (consumes the reference). */
static void reply_loaded(ts_worker_service *svc, ts_rpc_call *call,
                         ts_stored_shard *sh) {
  const ts_graph *g = &sh->model->graph;
  int n = g->n_inputs + g->n_outputs;
  Tessera__Worker__V1__TensorInfo *infos = calloc((size_t)n + 1,
                                                  sizeof *infos);
  Tessera__Worker__V1__TensorInfo **ptrs = calloc((size_t)n + 1,
                                                  sizeof *ptrs);
  if (!infos || !ptrs) {
    ts_rpc_call_fail(call, TS_ENOMEM, "cannot allocate the reply");
  } else {
    for (int i = 0; i < n; i++) {
      int v = i < g->n_inputs ? g->inputs[i] : g->outputs[i - g->n_inputs];
      const ts_value *val = &g->values[v];
      tessera__worker__v1__tensor_info__init(&infos[i]);
      infos[i].name = val->name;
      infos[i].dtype = (int32_t)val->dtype;
      /* Unknown rank (-1) has no encoding in TensorInfo: sent as no dims. */
      infos[i].n_shape = val->rank > 0 ? (size_t)val->rank : 0;
      infos[i].shape = (int64_t *)val->dims;
      ptrs[i] = &infos[i];
    }
    Tessera__Worker__V1__LoadShardResponse resp =
        TESSERA__WORKER__V1__LOAD_SHARD_RESPONSE__INIT;
    resp.shard_id = sh->id;
    resp.weight_bytes = sh->model->weight_bytes;
    resp.n_inputs = (size_t)g->n_inputs;
    resp.inputs = ptrs;
    resp.n_outputs = (size_t)g->n_outputs;
    resp.outputs = ptrs + g->n_inputs;
    ts_rpc_call_reply_message(call, &resp.base);
  }
  free(infos);
  free(ptrs);
  ts_store_release(svc->store, sh);
}

static void load_finish_run(ts_pool_job *job, ts_session *session) {
  (void)session;
  load_call *lc = (load_call *)job;
  ts_err err = {0};
  ts_stored_shard *sh = NULL;
  if (ts_store_upload_finish(lc->upload, &sh, &err) == TS_OK) {
    reply_loaded(lc->svc, lc->base.call, sh);
  } else {
    log_load_refused(lc->base.call, &err);
    fail_err(lc->base.call, &err);
  }
  free(lc);
}

static void load_finish_skip(ts_pool_job *job, int code, const char *why) {
  load_call *lc = (load_call *)job;
  char msg[256];
  snprintf(msg, sizeof msg, "shard %.8s..: not loaded: %s",
           ts_store_upload_id(lc->upload), why);
  ts_store_upload_abort(lc->upload);
  ts_rpc_call_fail(lc->base.call, code, msg);
  free(lc);
}

static int load_on_message(ts_rpc_call *call, const uint8_t *msg, size_t len,
                           void *user, ts_err *err) {
  ts_worker_service *svc = user;
  load_call *lc = find_load(svc, call, 0);
  ts_store_upload *up = lc ? lc->upload : NULL;
  int rc = ts_load_chunk_apply(svc->store, &up, lc ? lc->chunks : 0, msg,
                               len, err);
  if (rc == TS_OK && !lc) {
    /* First chunk: the upload begun, its state kept until on_end. */
    lc = calloc(1, sizeof *lc);
    if (!lc) {
      ts_store_upload_abort(up);
      rc = ts_err_set(err, TS_ENOMEM, "cannot allocate upload state");
    } else {
      lc->upload = up;
      lc->svc = svc;
      lc->base.call = call;
      atomic_init(&lc->last_chunk_ms, ts_now_ms());
      pthread_mutex_lock(&svc->loads_mu);
      lc->next = svc->loads;
      svc->loads = lc;
      pthread_mutex_unlock(&svc->loads_mu);
    }
  }
  if (rc == TS_OK) {
    lc->chunks++;
    atomic_store(&lc->last_chunk_ms, ts_now_ms());
    return TS_OK;
  }
  log_load_refused(call, err);
  if (lc) {
    /* The upload is aborted already (the memory given back before the
     * client hears of the failure); on_end(cancelled) then finds nothing
     * left to do. */
    find_load(svc, call, 1);
    free(lc);
  }
  return rc;
}

static void load_on_end(ts_rpc_call *call, void *user, int cancelled) {
  ts_worker_service *svc = user;
  load_call *lc = find_load(svc, call, 1);
  /* An upload the reaper failed is answered already, even if the client
   * half-closed just after. */
  if (cancelled || (lc && lc->expired)) {
    if (lc) {
      ts_store_upload_abort(lc->upload);
      free(lc);
    }
    return;
  }
  if (!lc) {
    ts_rpc_call_fail(call, TS_EINVAL,
                     "LoadShard stream carried no chunk (the first must hold "
                     "shard_id and total_bytes)");
    return;
  }
  if (ts_store_upload_is_duplicate(lc->upload)) {
    /* Already held: nothing to hash or parse, answer right here. */
    load_finish_run(&lc->base.job, NULL);
    return;
  }
  lc->base.job.run = load_finish_run;
  lc->base.job.skip = load_finish_skip;
  lc->base.job.is_cancelled = call_job_cancelled;
  lc->base.job.deadline = ts_rpc_call_deadline(call);
  ts_err err = {0};
  if (ts_pool_submit(svc->pool, &lc->base.job, &err) != TS_OK) {
    ts_store_upload_abort(lc->upload);
    free(lc);
    fail_err(call, &err);
  }
}

/* Fails the uploads that have had no chunk for the upload timeout (see the
 * top of this file); returns how long to sleep before the next look. */
static int64_t reap_stalled_locked(ts_worker_service *svc) {
  int64_t timeout = atomic_load(&svc->upload_timeout_ms);
  if (timeout <= 0) return 1000;
  int64_t now = ts_now_ms();
  for (load_call *lc = svc->loads; lc; lc = lc->next) {
    int64_t idle = now - atomic_load(&lc->last_chunk_ms);
    if (lc->expired || idle < timeout) continue;
    lc->expired = true;
    char msg[256];
    snprintf(msg, sizeof msg,
             "shard %.8s..: upload stalled: no chunk for %lld ms, over the "
             "upload timeout of %lld ms (--upload-timeout-ms); its "
             "reservation of %llu bytes is released",
             ts_store_upload_id(lc->upload), (long long)idle,
             (long long)timeout,
             ts_store_upload_is_duplicate(lc->upload)
                 ? 0ull /* a held shard's: nothing reserved */
                 : (unsigned long long)ts_store_upload_total(lc->upload));
    ts_log_warn("LoadShard: %s", msg);
    ts_rpc_call_fail(lc->base.call, TS_ETIMEDOUT, msg);
  }
  int64_t period = timeout / 4;
  return period < 10 ? 10 : period > 1000 ? 1000 : period;
}

static void *reaper_main(void *arg) {
  ts_worker_service *svc = arg;
  pthread_mutex_lock(&svc->loads_mu);
  while (!svc->reaper_stop) {
    int64_t sleep_ms = reap_stalled_locked(svc);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += sleep_ms / 1000;
    until.tv_nsec += (sleep_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&svc->reaper_cv, &svc->loads_mu, &until);
  }
  pthread_mutex_unlock(&svc->loads_mu);
  return NULL;
}

/* ---- RunShard --------------------------------------------------------- */

/* One RunShard: the unpacked request and every per-tensor array live in
 * the job's arena (one malloc for a small request). */
typedef struct run_job {
  call_job base;
  ts_worker_service *svc;
  ts_stored_shard *shard;
  Tessera__Worker__V1__RunShardRequest *req; /* in arena */
  int n_inputs, n_outputs;
  ts_tensor *inputs;
  ts_tensor *outputs;
  const char **input_names;
  const char **output_names;  /* request's names, or the graph's outputs */
  Tessera__Worker__V1__Tensor *out_msgs;
  Tessera__Worker__V1__Tensor **out_ptrs;
  int64_t (*out_dims)[TS_MAX_RANK];
  ts_rpc_arena arena; /* last: not zeroed */
} run_job;

static run_job *run_job_new(void) {
  run_job *rj = malloc(sizeof *rj);
  if (!rj) return NULL;
  memset(rj, 0, offsetof(run_job, arena));
  ts_rpc_arena_init(&rj->arena);
  return rj;
}

/* Frees the job, its request and arrays; releases the shard if held.
 * Input views own their bytes only when the wire's were misaligned and
 * had to be copied (ts_wire_tensor_view). */
static void run_job_free(run_job *rj) {
  for (int i = 0; i < rj->n_inputs; i++) ts_tensor_free(&rj->inputs[i]);
  if (rj->shard) ts_store_release(rj->svc->store, rj->shard);
  ts_rpc_arena_release(&rj->arena);
  free(rj);
}

/* The per-tensor arrays, carved from one block of the job's arena. */
static int run_job_arrays(run_job *rj, int n_inputs, int n_outputs) {
  size_t ni = (size_t)n_inputs, no = (size_t)n_outputs;
  size_t size = (ni + no) * sizeof(ts_tensor) +
                no * sizeof(Tessera__Worker__V1__Tensor) +
                no * sizeof(int64_t[TS_MAX_RANK]) +
                (ni + no) * sizeof(char *) +
                no * sizeof(Tessera__Worker__V1__Tensor *);
  char *p = ts_rpc_arena_calloc(&rj->arena, size);
  if (!p) return TS_ENOMEM;
  /* Most-aligned arrays first. */
  rj->inputs = (ts_tensor *)p;
  p += ni * sizeof(ts_tensor);
  rj->outputs = (ts_tensor *)p;
  p += no * sizeof(ts_tensor);
  rj->out_msgs = (Tessera__Worker__V1__Tensor *)p;
  p += no * sizeof(Tessera__Worker__V1__Tensor);
  rj->out_dims = (int64_t(*)[TS_MAX_RANK])p;
  p += no * sizeof(int64_t[TS_MAX_RANK]);
  rj->input_names = (const char **)p;
  p += ni * sizeof(char *);
  rj->output_names = (const char **)p;
  p += no * sizeof(char *);
  rj->out_ptrs = (Tessera__Worker__V1__Tensor **)p;
  rj->n_inputs = n_inputs;
  rj->n_outputs = n_outputs;
  return TS_OK;
}

static void run_job_run(ts_pool_job *job, ts_session *session) {
  run_job *rj = (run_job *)job;
  ts_err err = {0};
  uint64_t limit = atomic_load_explicit(&rj->svc->activation_limit,
                                        memory_order_relaxed);
  ts_session_set_activation_limit(
      session, limit > SIZE_MAX ? SIZE_MAX : (size_t)limit);
  double started = ts_metrics_now();
  int rc = ts_exec_run(rj->shard->model, session, rj->input_names,
                       rj->inputs, rj->n_inputs, rj->output_names,
                       rj->outputs, rj->n_outputs, &err);
  ts_worker_metrics_run(rc, ts_metrics_now() - started);
  atomic_fetch_add(&rj->shard->runs, 1);
  atomic_fetch_add(&rj->svc->runs_total, 1);
  if (ts_rpc_call_is_cancelled(rj->base.call)) {
    /* Nobody waits for the answer: do not pack it. */
    atomic_fetch_add(&rj->svc->runs_discarded, 1);
    ts_rpc_call_fail(rj->base.call, TS_ECANCELLED,
                     "the call was cancelled while the shard ran");
  } else if (rc) {
    ts_err_prefix(&err, "shard %.8s.. '%s'", rj->shard->id, rj->shard->label);
    fail_err(rj->base.call, &err);
  } else {
    Tessera__Worker__V1__RunShardResponse resp =
        TESSERA__WORKER__V1__RUN_SHARD_RESPONSE__INIT;
    for (int i = 0; i < rj->n_outputs; i++) {
      tessera__worker__v1__tensor__init(&rj->out_msgs[i]);
      ts_wire_tensor_fill(&rj->out_msgs[i], rj->output_names[i],
                          &rj->outputs[i], rj->out_dims[i]);
      rj->out_ptrs[i] = &rj->out_msgs[i];
    }
    resp.n_outputs = (size_t)rj->n_outputs;
    resp.outputs = rj->out_ptrs;
    ts_rpc_call_reply_message(rj->base.call, &resp.base);
  }
  run_job_free(rj);
}

static void run_job_skip(ts_pool_job *job, int code, const char *why) {
  run_job *rj = (run_job *)job;
  if (code == TS_ECANCELLED || code == TS_ETIMEDOUT)
    atomic_fetch_add(&rj->svc->runs_cancelled, 1);
  char msg[256];
  snprintf(msg, sizeof msg, "shard %.8s.. '%s' not run: %s", rj->shard->id,
           rj->shard->label, why);
  ts_rpc_call_fail(rj->base.call, code, msg);
  run_job_free(rj);
}

/* The caller cancelled (or its deadline passed): a run still queued leaves
 * the queue at once (skipped, counted); a running one finishes and its
 * result is discarded (run_job_run). */
static void run_job_cancel(ts_rpc_call *call, void *user) {
  (void)call;
  run_job *rj = user;
  ts_pool_cancel(rj->svc->pool, &rj->base.job,
                 "the call was cancelled while it waited for a kernel "
                 "thread");
}

static void handle_run_shard(ts_rpc_call *call, const uint8_t *reqb,
                             size_t len, void *user) {
  ts_worker_service *svc = user;
  run_job *rj = run_job_new();
  if (!rj) {
    ts_rpc_call_fail(call, TS_ENOMEM, "cannot allocate the run");
    return;
  }
  rj->svc = svc;
  Tessera__Worker__V1__RunShardRequest *req =
      (Tessera__Worker__V1__RunShardRequest *)ts_rpc_call_unpack_with(
          call, &tessera__worker__v1__run_shard_request__descriptor,
          &rj->arena.allocator, reqb, len);
  if (!req) {
    run_job_free(rj);
    return;
  }
  ts_err err = {0};
  int n_out = 0;
  if (ts_run_request_open(svc->store, req, &rj->shard, &n_out, &err))
    goto fail;
  if (run_job_arrays(rj, (int)req->n_inputs, n_out) != TS_OK) {
    ts_err_set(&err, TS_ENOMEM, "cannot allocate the run");
    goto fail;
  }
  if (ts_run_request_bind(rj->shard, req, n_out, rj->inputs, rj->input_names,
                          rj->output_names, &err))
    goto fail;
  rj->base.call = call;
  rj->req = req;
  rj->base.job.run = run_job_run;
  rj->base.job.skip = run_job_skip;
  rj->base.job.is_cancelled = call_job_cancelled;
  rj->base.job.deadline = ts_rpc_call_deadline(call);
  if (ts_pool_submit(svc->pool, &rj->base.job, &err) == TS_OK) {
    /* After the submit: if the run already answered, this is a no-op. */
    ts_rpc_call_on_cancel(call, run_job_cancel, rj);
    return;
  }
fail:
  run_job_free(rj);
  fail_err(call, &err);
}

/* ---- HasShard, UnloadShard, Status ------------------------------------ */

static void handle_has_shard(ts_rpc_call *call, const ProtobufCMessage *msg,
                             void *user) {
  ts_worker_service *svc = user;
  const Tessera__Worker__V1__HasShardRequest *req =
      (const Tessera__Worker__V1__HasShardRequest *)msg;
  protobuf_c_boolean *present =
      calloc(req->n_shard_ids + 1, sizeof *present);
  if (!present) {
    ts_rpc_call_fail(call, TS_ENOMEM, "cannot allocate the reply");
    goto out;
  }
  for (size_t i = 0; i < req->n_shard_ids; i++) {
    char field[40];
    snprintf(field, sizeof field, "shard_ids[%zu]", i);
    ts_err err = {0};
    if (ts_store_check_id(field, req->shard_ids[i], &err)) {
      fail_err(call, &err);
      goto out;
    }
    present[i] = ts_store_has(svc->store, req->shard_ids[i]);
  }
  Tessera__Worker__V1__HasShardResponse resp =
      TESSERA__WORKER__V1__HAS_SHARD_RESPONSE__INIT;
  resp.n_present = req->n_shard_ids;
  resp.present = present;
  ts_rpc_call_reply_message(call, &resp.base);
out:
  free(present);
}

static void handle_unload_shard(ts_rpc_call *call,
                                const ProtobufCMessage *msg, void *user) {
  ts_worker_service *svc = user;
  const Tessera__Worker__V1__UnloadShardRequest *req =
      (const Tessera__Worker__V1__UnloadShardRequest *)msg;
  ts_err err = {0};
  if (ts_store_check_id("shard_id", req->shard_id, &err)) {
    fail_err(call, &err);
  } else {
    Tessera__Worker__V1__UnloadShardResponse resp =
        TESSERA__WORKER__V1__UNLOAD_SHARD_RESPONSE__INIT;
    resp.was_loaded = ts_store_unload(svc->store, req->shard_id);
    ts_rpc_call_reply_message(call, &resp.base);
  }
}

static void handle_status(ts_rpc_call *call, const ProtobufCMessage *msg,
                          void *user) {
  (void)msg;
  ts_worker_service *svc = user;
  ts_err err = {0};
  ts_stored_shard **list = NULL;
  int n = 0;
  if (ts_store_list(svc->store, &list, &n, &err)) {
    fail_err(call, &err);
    return;
  }
  Tessera__Worker__V1__ShardInfo *infos = calloc((size_t)n + 1,
                                                 sizeof *infos);
  Tessera__Worker__V1__ShardInfo **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
  if (!infos || !ptrs) {
    ts_rpc_call_fail(call, TS_ENOMEM, "cannot allocate the reply");
  } else {
    for (int i = 0; i < n; i++) {
      tessera__worker__v1__shard_info__init(&infos[i]);
      infos[i].shard_id = list[i]->id;
      infos[i].label = list[i]->label;
      infos[i].bytes = list[i]->bytes;
      infos[i].runs = atomic_load(&list[i]->runs);
      ptrs[i] = &infos[i];
    }
    ts_store_stats stats;
    ts_store_stats_get(svc->store, &stats);
    int threads = 0, queued = 0, running = 0;
    ts_pool_stats(svc->pool, &threads, &queued, &running);
    Tessera__Worker__V1__StatusResponse resp =
        TESSERA__WORKER__V1__STATUS_RESPONSE__INIT;
    resp.memory_used = stats.memory_used;
    resp.memory_limit = stats.memory_limit;
    resp.threads = (uint32_t)threads;
    resp.queue_depth = (uint32_t)queued;
    resp.in_flight = (uint32_t)running;
    resp.n_shards = (size_t)n;
    resp.shards = ptrs;
    resp.runs_total = atomic_load(&svc->runs_total);
    resp.runs_cancelled = atomic_load(&svc->runs_cancelled);
    resp.runs_discarded = atomic_load(&svc->runs_discarded);
    resp.blas_core = (char *)ts_blas_core_name();
    resp.listen = svc->address;
    ts_rpc_call_reply_message(call, &resp.base);
  }
  free(infos);
  free(ptrs);
  for (int i = 0; i < n; i++) ts_store_release(svc->store, list[i]);
  free(list);
}

/* ---- the server ------------------------------------------------------- */

#define WORKER_PATH "/tessera.worker.v1.Worker/"

/* The unary methods' table (rpc_table.h). RunShard is raw: its request
 * lives in the run's arena until the run is answered. LoadShard, a client
 * stream, is registered beside the table. RunShard requests and LoadShard
 * chunks carry tensors (the process's max message); the others, shard ids,
 * the control limit. */
#define CONTROL TS_RPC_CONTROL_MAX_REQUEST
static const ts_rpc_handler worker_table[WORKER_UNARY_METHODS] = {
    {WORKER_PATH "HasShard", &tessera__worker__v1__has_shard_request__descriptor,
     handle_has_shard, NULL, TS_ROLE_COORDINATOR, CONTROL},
    {WORKER_PATH "RunShard", &tessera__worker__v1__run_shard_request__descriptor,
     NULL, handle_run_shard, TS_ROLE_COORDINATOR, 0},
    {WORKER_PATH "UnloadShard",
     &tessera__worker__v1__unload_shard_request__descriptor,
     handle_unload_shard, NULL, TS_ROLE_COORDINATOR, CONTROL},
    {WORKER_PATH "Status", &tessera__worker__v1__status_request__descriptor,
     handle_status, NULL, TS_ROLE_COORDINATOR, CONTROL},
};
#undef CONTROL

int ts_worker_service_start(const char *listen, const ts_rpc_creds *creds,
                            ts_rpc_auth *auth, ts_store *store, ts_pool *pool,
                            ts_worker_service **out, int *bound_port,
                            ts_err *err) {
  *out = NULL;
  ts_worker_service *svc = calloc(1, sizeof *svc);
  if (!svc) return ts_err_set(err, TS_ENOMEM, "cannot allocate the service");
  svc->store = store;
  svc->pool = pool;
  atomic_init(&svc->runs_total, 0);
  atomic_init(&svc->runs_cancelled, 0);
  atomic_init(&svc->runs_discarded, 0);
  atomic_init(&svc->upload_timeout_ms, 0);
  pthread_mutex_init(&svc->loads_mu, NULL);
  pthread_condattr_t cattr;
  pthread_condattr_init(&cattr);
  pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
  pthread_cond_init(&svc->reaper_cv, &cattr);
  pthread_condattr_destroy(&cattr);
  ts_rpc_method methods[WORKER_UNARY_METHODS + 1] = {
      {.path = WORKER_PATH "LoadShard",
       .kind = TS_RPC_CLIENT_STREAM,
       .on_message = load_on_message,
       .on_end = load_on_end,
       .user = svc,
       .roles = TS_ROLE_COORDINATOR},
  };
  ts_rpc_table_methods(worker_table, WORKER_UNARY_METHODS, svc, svc->bindings,
                       methods + 1);
  ts_rpc_server_opts opts = {
      .listen = listen,
      .creds = creds,
      .auth = auth,
      .poll_threads = RPC_POLL_THREADS};
  int port = 0;
  int rc = ts_rpc_server_start(&opts, methods,
                               (int)(sizeof methods / sizeof methods[0]),
                               &svc->server, &port, err);
  if (rc == TS_OK && pthread_create(&svc->reaper, NULL, reaper_main, svc)) {
    ts_rpc_server_stop(svc->server, 0);
    rc = ts_err_set(err, TS_ENOMEM, "cannot start the upload reaper thread");
  }
  if (rc) {
    pthread_cond_destroy(&svc->reaper_cv);
    pthread_mutex_destroy(&svc->loads_mu);
    free(svc);
    return rc;
  }
  /* HOST is everything before the last ':' ("[::]:0" keeps its brackets). */
  int host_len = (int)ts_hostport_host_length(listen);
  snprintf(svc->address, sizeof svc->address, "%.*s:%d", host_len, listen,
           port);
  *bound_port = port;
  *out = svc;
  return TS_OK;
}

void ts_worker_service_set_activation_limit(ts_worker_service *svc,
                                            uint64_t bytes) {
  atomic_store(&svc->activation_limit, bytes);
}

void ts_worker_service_set_upload_timeout(ts_worker_service *svc,
                                          int64_t ms) {
  atomic_store(&svc->upload_timeout_ms, ms);
  pthread_mutex_lock(&svc->loads_mu);
  pthread_cond_signal(&svc->reaper_cv);
  pthread_mutex_unlock(&svc->loads_mu);
}

const char *ts_worker_service_address(const ts_worker_service *svc) {
  return svc->address;
}

void ts_worker_service_set_serving(ts_worker_service *svc, int serving) {
  ts_rpc_server_set_serving(svc->server, serving);
}

void ts_worker_service_stop(ts_worker_service *svc, int64_t grace_ms) {
  if (!svc) return;
  pthread_mutex_lock(&svc->loads_mu);
  svc->reaper_stop = true;
  pthread_cond_signal(&svc->reaper_cv);
  pthread_mutex_unlock(&svc->loads_mu);
  pthread_join(svc->reaper, NULL);
  ts_rpc_server_stop(svc->server, grace_ms);
  /* common/rpc ended every call (on_end), so no upload should be left; drop any
   * that is, rather than leak it. */
  while (svc->loads) {
    load_call *lc = svc->loads;
    svc->loads = lc->next;
    ts_store_upload_abort(lc->upload);
    free(lc);
  }
  pthread_cond_destroy(&svc->reaper_cv);
  pthread_mutex_destroy(&svc->loads_mu);
  free(svc);
}
