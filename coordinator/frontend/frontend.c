/* frontend.c - see frontend.h. */
#include "frontend.h"

#include "infer.h"
#include "model_api.h"
#include "reply.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inference.pb-c.h"
#include "log.h"
#include "rpc_message.h"
#include "rpc_table.h"
#include "ts_config.h"

#define SERVICE "/inference.GRPCInferenceService/"

/* ---- helpers ---------------------------------------------------------- */

static void reply_error(ts_rpc_call *call, const ts_err *err) {
  ts_rpc_call_fail(call, err->code, err->msg);
}

/* model_find, answering the call with the error. */
static ts_served_model *model_or_fail(ts_frontend *fe, ts_rpc_call *call,
                                      const char *name, const char *version,
                                      int need_ready) {
  ts_err err = {0};
  ts_served_model *m =
      ts_frontend_model_find(fe, name, version, need_ready, &err);
  if (!m) reply_error(call, &err);
  return m;
}

/* ---- health-ish and metadata ------------------------------------------ */

static void handle_server_live(ts_rpc_call *call, const ProtobufCMessage *msg,
                               void *user) {
  (void)msg;
  (void)user;
  Inference__ServerLiveResponse resp = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
  resp.live = 1;
  ts_rpc_call_reply_message(call, &resp.base);
}

static void handle_server_ready(ts_rpc_call *call, const ProtobufCMessage *msg,
                                void *user) {
  (void)msg;
  Inference__ServerReadyResponse resp = INFERENCE__SERVER_READY_RESPONSE__INIT;
  resp.ready = ts_frontend_ready(user);
  ts_rpc_call_reply_message(call, &resp.base);
}

static void handle_model_ready(ts_rpc_call *call, const ProtobufCMessage *msg,
                               void *user) {
  const Inference__ModelReadyRequest *req =
      (const Inference__ModelReadyRequest *)msg;
  ts_served_model *m = model_or_fail(user, call, req->name, req->version, 0);
  if (m) {
    Inference__ModelReadyResponse resp = INFERENCE__MODEL_READY_RESPONSE__INIT;
    resp.ready = m->state == TS_MODEL_READY;
    ts_rpc_call_reply_message(call, &resp.base);
    ts_served_model_release(m);
  }
}

static void handle_server_metadata(ts_rpc_call *call,
                                   const ProtobufCMessage *msg, void *user) {
  (void)msg;
  (void)user;
  Inference__ServerMetadataResponse resp =
      INFERENCE__SERVER_METADATA_RESPONSE__INIT;
  resp.name = "tessera";
  resp.version = TESSERA_VERSION;
  resp.n_extensions = TS_FRONTEND_N_EXTENSIONS;
  resp.extensions = (char **)ts_frontend_extensions;
  ts_rpc_call_reply_message(call, &resp.base);
}

typedef Inference__ModelMetadataResponse__TensorMetadata tensor_meta;

static void fill_meta(tensor_meta *tm, const ts_io_info *io) {
  inference__model_metadata_response__tensor_metadata__init(tm);
  tm->name = io->name;
  tm->datatype = (char *)(ts_dtype_kserve_name(io->dtype)
                              ? ts_dtype_kserve_name(io->dtype)
                              : "BYTES");
  tm->n_shape = (size_t)io->rank;
  tm->shape = (int64_t *)io->dims;
}

static void handle_model_metadata(ts_rpc_call *call,
                                  const ProtobufCMessage *msg, void *user) {
  const Inference__ModelMetadataRequest *req =
      (const Inference__ModelMetadataRequest *)msg;
  ts_served_model *m = model_or_fail(user, call, req->name, req->version, 0);
  if (!m) return;
  int n = m->n_inputs + m->n_outputs;
  tensor_meta *metas = calloc((size_t)(n ? n : 1), sizeof *metas);
  tensor_meta **ptrs = calloc((size_t)(n ? n : 1), sizeof *ptrs);
  if (!metas || !ptrs) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
  } else {
    for (int i = 0; i < m->n_inputs; i++) fill_meta(&metas[i], &m->inputs[i]);
    for (int i = 0; i < m->n_outputs; i++)
      fill_meta(&metas[m->n_inputs + i], &m->outputs[i]);
    for (int i = 0; i < n; i++) ptrs[i] = &metas[i];
    char served[TS_VERSION_STR_MAX];
    char *versions[] = {ts_model_config_version_str(&m->config, served)};
    Inference__ModelMetadataResponse resp =
        INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    resp.name = m->config.name;
    resp.n_versions = 1;
    resp.versions = versions;
    resp.platform = (char *)ts_frontend_platform(m);
    resp.n_inputs = (size_t)m->n_inputs;
    resp.inputs = ptrs;
    resp.n_outputs = (size_t)m->n_outputs;
    resp.outputs = ptrs + m->n_inputs;
    ts_rpc_call_reply_message(call, &resp.base);
  }
  free(metas);
  free(ptrs);
  ts_served_model_release(m);
}

/* ---- Triton's model APIs (model_api.h) -------------------------------- */

static void handle_model_config(ts_rpc_call *call, const ProtobufCMessage *msg,
                                void *user) {
  const Inference__ModelConfigRequest *req =
      (const Inference__ModelConfigRequest *)msg;
  ts_served_model *m = model_or_fail(user, call, req->name, req->version, 0);
  if (!m) return;
  ts_rpc_arena arena;
  ts_rpc_arena_init(&arena);
  ts_err err = {0};
  Inference__ModelConfig config;
  if (ts_model_api_config(m, &arena, &config, &err) == TS_OK) {
    Inference__ModelConfigResponse resp = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
    resp.config = &config;
    ts_rpc_call_reply_message(call, &resp.base);
  } else {
    reply_error(call, &err);
  }
  ts_rpc_arena_release(&arena);
  ts_served_model_release(m);
}

/* One model's statistics when the request names it, else every model's
 * (Triton's rule for an empty name). */
static void handle_model_statistics(ts_rpc_call *call,
                                    const ProtobufCMessage *msg, void *user) {
  const Inference__ModelStatisticsRequest *req =
      (const Inference__ModelStatisticsRequest *)msg;
  ts_served_model **models = NULL;
  int n = 0;
  if (req->name[0]) {
    ts_served_model *m = model_or_fail(user, call, req->name, req->version, 0);
    if (!m) return;
    if (!(models = malloc(sizeof *models))) {
      ts_served_model_release(m);
      ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
      return;
    }
    models[n++] = m;
  } else if (ts_registry_snapshot(((ts_frontend *)user)->registry, &models,
                                  &n) != TS_OK) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  ts_rpc_arena arena;
  ts_rpc_arena_init(&arena);
  ts_err err = {0};
  Inference__ModelStatistics *stats =
      ts_rpc_arena_calloc(&arena, sizeof *stats * (size_t)(n ? n : 1));
  Inference__ModelStatistics **ptrs =
      ts_rpc_arena_calloc(&arena, sizeof *ptrs * (size_t)(n ? n : 1));
  if (!stats || !ptrs) ts_err_set(&err, TS_ENOMEM, "out of memory");
  for (int i = 0; !err.code && i < n; i++) {
    ts_model_api_statistics(models[i], &arena, &stats[i], &err);
    ptrs[i] = &stats[i];
  }
  if (!err.code) {
    Inference__ModelStatisticsResponse resp =
        INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
    resp.n_model_stats = (size_t)n;
    resp.model_stats = ptrs;
    ts_rpc_call_reply_message(call, &resp.base);
  } else {
    reply_error(call, &err);
  }
  ts_rpc_arena_release(&arena);
  for (int i = 0; i < n; i++) ts_served_model_release(models[i]);
  free(models);
}

/* ---- ModelInfer --------------------------------------------------------- */

/* Whether the client's deadline has passed (a call without one never
 * expires). */
static int deadline_passed(ts_rpc_call *call) {
  int64_t deadline = ts_rpc_call_deadline(call);
  return deadline != TS_DEADLINE_NONE && ts_now_ms() >= deadline;
}

/* The answer of a ModelInfer (infer.h): the outputs as raw_output_contents,
 * or the error. A client that is gone gets no outputs packed; the status
 * says why, so that a client whose deadline passed reads DEADLINE_EXCEEDED
 * even when this answer reaches it before its own timer fires. */
static int grpc_answer(void *user, const ts_infer_result *r) {
  ts_rpc_call *call = user;
  if (ts_rpc_call_is_cancelled(call)) {
    int code = deadline_passed(call) ? TS_ETIMEDOUT : TS_ECANCELLED;
    ts_rpc_call_fail(call, code, code == TS_ETIMEDOUT
                                     ? "the client's deadline passed"
                                     : "the client went away");
    return code;
  }
  if (r->err->code) {
    reply_error(call, r->err);
    return r->err->code;
  }
  ts_frontend_reply_outputs(call, r->req, r->model, r->arena, r->lookup,
                            r->src);
  return TS_OK;
}

/* Cancellation notice (rpc.h) of a ModelInfer in flight. The request is
 * alive: its answer, which comes before it is freed, waits for this to
 * return. */
static void on_client_gone(ts_rpc_call *call, void *user) {
  ts_infer *inf = user;
  int expired = deadline_passed(call);
  ts_log_debug("request '%s' on %s: %s", ts_infer_id(inf),
               ts_infer_model_name(inf),
               expired ? "the client's deadline passed"
                       : "the client cancelled");
  ts_infer_cancel(inf, expired ? TS_ETIMEDOUT : TS_ECANCELLED,
                  expired ? "the client's deadline passed"
                          : "the client cancelled the request");
}

static void handle_model_infer(ts_rpc_call *call, const uint8_t *data,
                               size_t len, void *user) {
  ts_err err = {0};
  ts_infer *inf = ts_infer_new(user, grpc_answer, call, &err);
  if (!inf) {
    reply_error(call, &err);
    return;
  }
  Inference__ModelInferRequest *req =
      (Inference__ModelInferRequest *)ts_rpc_call_unpack_with(
          call, &inference__model_infer_request__descriptor,
          &ts_infer_arena(inf)->allocator, data, len);
  if (!req) {
    ts_infer_abandon(inf, TS_EINVAL);
    return;
  }
  /* Registering on an answered call does nothing (the call itself lives
   * until this returns), so an answer given already is harmless. */
  if (ts_infer_run(inf, req, ts_rpc_call_deadline(call)))
    ts_rpc_call_on_cancel(call, on_client_gone, inf);
}

/* ---- repository --------------------------------------------------------- */

static void handle_repository_index(ts_rpc_call *call,
                                    const ProtobufCMessage *msg, void *user) {
  ts_frontend *fe = user;
  int ready_only = ((const Inference__RepositoryIndexRequest *)msg)->ready;
  ts_served_model **models;
  int n;
  if (ts_registry_snapshot(fe->registry, &models, &n) != TS_OK) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  typedef Inference__RepositoryIndexResponse__ModelIndex model_index;
  model_index *idx = calloc((size_t)(n ? n : 1), sizeof *idx);
  char(*versions)[TS_VERSION_STR_MAX] =
      calloc((size_t)(n ? n : 1), sizeof *versions);
  model_index **ptrs = calloc((size_t)(n ? n : 1), sizeof *ptrs);
  if (!idx || !ptrs || !versions) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
  } else {
    size_t k = 0;
    for (int i = 0; i < n; i++) {
      if (ready_only && models[i]->state != TS_MODEL_READY) continue;
      inference__repository_index_response__model_index__init(&idx[k]);
      idx[k].name = models[i]->config.name;
      idx[k].version =
          ts_model_config_version_str(&models[i]->config, versions[k]);
      idx[k].state = (char *)ts_frontend_state_name(models[i]->state);
      idx[k].reason = models[i]->reason;
      ptrs[k] = &idx[k];
      k++;
    }
    Inference__RepositoryIndexResponse resp =
        INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
    resp.n_models = k;
    resp.models = ptrs;
    ts_rpc_call_reply_message(call, &resp.base);
  }
  free(idx);
  free(ptrs);
  free(versions);
  for (int i = 0; i < n; i++) ts_served_model_release(models[i]);
  free(models);
}

typedef struct load_job {
  ts_frontend *fe;
  ts_rpc_call *call;
  char name[TS_MODEL_NAME_MAX];
} load_job;

/* Loading uploads shards over the network: never on a poller thread. */
static void *load_thread(void *arg) {
  load_job *job = arg;
  ts_err err = {0};
  if (ts_registry_load_by_name(job->fe->registry, job->name, &err) == TS_OK) {
    Inference__RepositoryModelLoadResponse resp =
        INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
    ts_rpc_call_reply_message(job->call, &resp.base);
  } else {
    reply_error(job->call, &err);
  }
  free(job);
  return NULL;
}

static void handle_repository_load(ts_rpc_call *call,
                                   const ProtobufCMessage *msg, void *user) {
  const Inference__RepositoryModelLoadRequest *req =
      (const Inference__RepositoryModelLoadRequest *)msg;
  load_job *job = calloc(1, sizeof *job);
  if (!job || strlen(req->model_name) >= sizeof job->name ||
      !req->model_name[0]) {
    ts_rpc_call_fail(call, job ? TS_EINVAL : TS_ENOMEM,
                     job ? "model_name is empty or too long" : "out of memory");
    free(job);
    return;
  }
  job->fe = user;
  job->call = call;
  snprintf(job->name, sizeof job->name, "%s", req->model_name);
  if (ts_rpc_call_offload(call, load_thread, job) != 0) free(job);
}

static void handle_repository_unload(ts_rpc_call *call,
                                     const ProtobufCMessage *msg, void *user) {
  ts_frontend *fe = user;
  const Inference__RepositoryModelUnloadRequest *req =
      (const Inference__RepositoryModelUnloadRequest *)msg;
  ts_err err = {0};
  if (ts_registry_unload(fe->registry, req->model_name, &err) == TS_OK) {
    Inference__RepositoryModelUnloadResponse resp =
        INFERENCE__REPOSITORY_MODEL_UNLOAD_RESPONSE__INIT;
    ts_rpc_call_reply_message(call, &resp.base);
  } else {
    reply_error(call, &err);
  }
}

int ts_frontend_drain(ts_frontend *fe, int64_t timeout_ms) {
  atomic_store(&fe->draining, 1);
  int64_t until = ts_now_ms() + timeout_ms;
  while (atomic_load(&fe->in_flight) > 0 && ts_now_ms() < until) {
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return atomic_load(&fe->in_flight);
}

/* The service's method table (rpc_table.h). ModelInfer is raw: its
 * request lives in the request's own arena until the answer, and only it
 * carries tensors: every other request (names, versions) is capped at the
 * control limit. */
#define TYPED(method, message, fn, roles)                                \
  {SERVICE method, &inference__##message##__descriptor, fn, NULL, roles, \
   TS_RPC_CONTROL_MAX_REQUEST}
static const ts_rpc_handler frontend_table[TS_FRONTEND_METHODS] = {
    TYPED("ServerLive", server_live_request, handle_server_live, TS_ROLES_INFER),
    TYPED("ServerReady", server_ready_request, handle_server_ready, TS_ROLES_INFER),
    TYPED("ModelReady", model_ready_request, handle_model_ready, TS_ROLES_INFER),
    TYPED("ServerMetadata", server_metadata_request, handle_server_metadata, TS_ROLES_INFER),
    TYPED("ModelMetadata", model_metadata_request, handle_model_metadata, TS_ROLES_INFER),
    {SERVICE "ModelInfer", &inference__model_infer_request__descriptor, NULL,
     handle_model_infer, TS_ROLES_INFER, 0},
    TYPED("ModelConfig", model_config_request, handle_model_config, TS_ROLES_INFER),
    TYPED("ModelStatistics", model_statistics_request, handle_model_statistics,
          TS_ROLES_INFER),
    TYPED("RepositoryIndex", repository_index_request,
          handle_repository_index, TS_ROLE_ADMIN),
    TYPED("RepositoryModelLoad", repository_model_load_request,
          handle_repository_load, TS_ROLE_ADMIN),
    TYPED("RepositoryModelUnload", repository_model_unload_request,
          handle_repository_unload, TS_ROLE_ADMIN),
};
#undef TYPED

int ts_frontend_methods(ts_frontend *fe, ts_rpc_method *out) {
  return ts_rpc_table_methods(frontend_table, TS_FRONTEND_METHODS, fe,
                              fe->bindings, out);
}
