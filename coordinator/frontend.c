/* frontend.c - see frontend.h. */
#include "frontend.h"

#include "batcher.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inference.pb-c.h"
#include "log.h"
#include "rpc_message.h"
#include "ts_config.h"

#define SERVICE "/inference.GRPCInferenceService/"

/* ---- helpers ---------------------------------------------------------- */

static void reply_error(ts_rpc_call *call, const ts_err *err) {
  ts_rpc_call_fail(call, err->code, err->msg);
}

/* Unpacks a request or answers INVALID_ARGUMENT naming the message. */
/* The model named in a request, or answers NOT_FOUND / UNAVAILABLE. */
static ts_served_model *model_or_fail(ts_frontend *fe, ts_rpc_call *call,
                                      const char *name, const char *version,
                                      int need_ready) {
  ts_err err = {0};
  ts_served_model *m = NULL;
  if (version && version[0] && strcmp(version, "1") != 0)
    ts_err_set(&err, TS_ENOTFOUND, "model '%s' has no version '%s' (only 1)",
               name, version);
  else if (!(m = ts_registry_acquire(fe->registry, name)))
    ts_err_set(&err, TS_ENOTFOUND, "model '%s' is not loaded", name);
  else if (need_ready && m->state != TS_MODEL_READY)
    ts_err_set(&err, TS_EUNAVAILABLE, "model '%s' is not ready: %s", name,
               m->reason[0] ? m->reason : "loading");
  if (err.code) {
    if (m) ts_served_model_release(m);
    reply_error(call, &err);
    return NULL;
  }
  return m;
}

static const ts_io_info *find_io(const ts_io_info *io, int n,
                                 const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(io[i].name, name) == 0) return &io[i];
  return NULL;
}

static void list_names(const ts_io_info *io, int n, char *buf, size_t size) {
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && off < size; i++)
    off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? ", " : "",
                            io[i].name);
}

/* ---- health-ish and metadata ------------------------------------------ */

static void handle_server_live(ts_rpc_call *call, const uint8_t *data,
                               size_t len, void *user) {
  (void)user;
  ProtobufCMessage *req = ts_rpc_call_unpack(
      call, &inference__server_live_request__descriptor, data, len);
  if (!req) return;
  protobuf_c_message_free_unpacked(req, NULL);
  Inference__ServerLiveResponse resp = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
  resp.live = 1;
  ts_rpc_call_reply_message(call, &resp.base);
}

static int all_models_ready(ts_frontend *fe) {
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

static void handle_server_ready(ts_rpc_call *call, const uint8_t *data,
                                size_t len, void *user) {
  ProtobufCMessage *req = ts_rpc_call_unpack(
      call, &inference__server_ready_request__descriptor, data, len);
  if (!req) return;
  protobuf_c_message_free_unpacked(req, NULL);
  Inference__ServerReadyResponse resp = INFERENCE__SERVER_READY_RESPONSE__INIT;
  resp.ready = all_models_ready(user);
  ts_rpc_call_reply_message(call, &resp.base);
}

static void handle_model_ready(ts_rpc_call *call, const uint8_t *data,
                               size_t len, void *user) {
  Inference__ModelReadyRequest *req = (Inference__ModelReadyRequest *)
      ts_rpc_call_unpack(call, &inference__model_ready_request__descriptor, data,
                     len);
  if (!req) return;
  ts_served_model *m = model_or_fail(user, call, req->name, req->version, 0);
  if (m) {
    Inference__ModelReadyResponse resp = INFERENCE__MODEL_READY_RESPONSE__INIT;
    resp.ready = m->state == TS_MODEL_READY;
    ts_rpc_call_reply_message(call, &resp.base);
    ts_served_model_release(m);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void handle_server_metadata(ts_rpc_call *call, const uint8_t *data,
                                   size_t len, void *user) {
  (void)user;
  ProtobufCMessage *req = ts_rpc_call_unpack(
      call, &inference__server_metadata_request__descriptor, data, len);
  if (!req) return;
  protobuf_c_message_free_unpacked(req, NULL);
  static char *extensions[] = {"model_repository", "tessera_sharding"};
  Inference__ServerMetadataResponse resp =
      INFERENCE__SERVER_METADATA_RESPONSE__INIT;
  resp.name = "tessera";
  resp.version = TESSERA_VERSION;
  resp.n_extensions = 2;
  resp.extensions = extensions;
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

static void handle_model_metadata(ts_rpc_call *call, const uint8_t *data,
                                  size_t len, void *user) {
  Inference__ModelMetadataRequest *req = (Inference__ModelMetadataRequest *)
      ts_rpc_call_unpack(call, &inference__model_metadata_request__descriptor,
                     data, len);
  if (!req) return;
  ts_served_model *m = model_or_fail(user, call, req->name, req->version, 0);
  protobuf_c_message_free_unpacked(&req->base, NULL);
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
    static char *versions[] = {"1"};
    Inference__ModelMetadataResponse resp =
        INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    resp.name = m->config.name;
    resp.n_versions = 1;
    resp.versions = versions;
    resp.platform = m->config.is_ensemble ? "ensemble" : "onnx_onnxv1";
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

/* ---- ModelInfer --------------------------------------------------------- */

typedef Inference__ModelInferRequest__InferInputTensor infer_input;
typedef Inference__InferTensorContents contents;

/* One in-flight ModelInfer. Its request is unpacked into the arena, and
 * the small arrays come from there too: one allocation per request unless
 * the request outgrows the arena's inline bytes. */
typedef struct infer_ctx {
  ts_frontend *fe;
  ts_rpc_call *call;
  Inference__ModelInferRequest *req; /* in arena */
  ts_served_model *model;
  ts_dispatch *inf;        /* unbatched: the inference */
  ts_batch_item *item;     /* batched: the request in the batcher */
  ts_tensor *inputs;       /* in arena: views into req, or owned widened
                              copies */
  int n_inputs;
  ts_tensor *ordered;      /* in arena: the same views in the model's input
                              order */
  ts_rpc_arena arena;      /* last: not zeroed */
} infer_ctx;

/* Typed contents: where the elements of each datatype live, and whether
 * they need narrowing into a tensor of their own. */
typedef struct typed_view {
  const void *data;
  size_t count;
  int narrow;              /* 32-bit (or bool) protocol field, smaller dtype */
} typed_view;

static typed_view typed_field(const contents *c, ts_dtype t) {
  typed_view v = {0};
  if (!c) return v;
  switch (t) {
    case TS_DTYPE_FLOAT: v = (typed_view){c->fp32_contents, c->n_fp32_contents, 0}; break;
    case TS_DTYPE_DOUBLE: v = (typed_view){c->fp64_contents, c->n_fp64_contents, 0}; break;
    case TS_DTYPE_INT64: v = (typed_view){c->int64_contents, c->n_int64_contents, 0}; break;
    case TS_DTYPE_INT32: v = (typed_view){c->int_contents, c->n_int_contents, 0}; break;
    case TS_DTYPE_INT16:
    case TS_DTYPE_INT8: v = (typed_view){c->int_contents, c->n_int_contents, 1}; break;
    case TS_DTYPE_UINT64: v = (typed_view){c->uint64_contents, c->n_uint64_contents, 0}; break;
    case TS_DTYPE_UINT32: v = (typed_view){c->uint_contents, c->n_uint_contents, 0}; break;
    case TS_DTYPE_UINT16:
    case TS_DTYPE_UINT8: v = (typed_view){c->uint_contents, c->n_uint_contents, 1}; break;
    case TS_DTYPE_BOOL: v = (typed_view){c->bool_contents, c->n_bool_contents, 1}; break;
    default: break;
  }
  return v;
}

static size_t typed_total(const contents *c) {
  if (!c) return 0;
  return c->n_bool_contents + c->n_int_contents + c->n_int64_contents +
         c->n_uint_contents + c->n_uint64_contents + c->n_fp32_contents +
         c->n_fp64_contents + c->n_bytes_contents;
}

/* Narrows 32-bit protocol values into t's own buffer (owned). */
static void narrow_copy(ts_tensor *t, const void *src, size_t count) {
  for (size_t i = 0; i < count; i++) {
    switch (t->dtype) {
      case TS_DTYPE_BOOL: ((uint8_t *)t->data)[i] = ((const protobuf_c_boolean *)src)[i] != 0; break;
      case TS_DTYPE_INT8: ((int8_t *)t->data)[i] = (int8_t)((const int32_t *)src)[i]; break;
      case TS_DTYPE_INT16: ((int16_t *)t->data)[i] = (int16_t)((const int32_t *)src)[i]; break;
      case TS_DTYPE_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)((const uint32_t *)src)[i]; break;
      case TS_DTYPE_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)((const uint32_t *)src)[i]; break;
      default: break;
    }
  }
}

/* Validates input `in` (index i) against `io` and binds its bytes to t. */
static int bind_input(const Inference__ModelInferRequest *req, size_t i,
                      const ts_io_info *io, ts_tensor *t, ts_err *err) {
  const infer_input *in = req->inputs[i];
  char got[160], want[160];
  ts_dtype dtype = ts_dtype_from_kserve(in->datatype);
  if (dtype == TS_DTYPE_UNDEFINED)
    return ts_err_set(err, TS_EINVAL, "input '%s': unknown datatype '%s'",
                      in->name, in->datatype);
  if (dtype != io->dtype)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': datatype %s does not match the model's %s",
                      in->name, in->datatype, ts_dtype_kserve_name(io->dtype));
  if (in->n_shape != (size_t)io->rank)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': shape %s has rank %zu but the model expects "
                      "rank %d, shape %s", in->name,
                      ts_shape_str(in->shape, (int)(in->n_shape > TS_MAX_RANK
                                                        ? TS_MAX_RANK
                                                        : in->n_shape),
                                   got, sizeof got),
                      in->n_shape, io->rank,
                      ts_shape_str(io->dims, io->rank, want, sizeof want));
  for (int d = 0; d < io->rank; d++) {
    if (in->shape[d] < 0)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': dim %d is %lld; dims must be >= 0",
                        in->name, d, (long long)in->shape[d]);
    if (io->dims[d] >= 0 && in->shape[d] != io->dims[d])
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': dim %d is %lld but the model expects "
                        "%lld (shape %s)", in->name, d,
                        (long long)in->shape[d], (long long)io->dims[d],
                        ts_shape_str(io->dims, io->rank, want, sizeof want));
  }
  int64_t numel = ts_shape_numel(in->shape, io->rank);
  int64_t nbytes = ts_shape_nbytes(dtype, in->shape, io->rank);
  if (numel < 0 || nbytes < 0)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': shape %s has too many elements (overflow)",
                      in->name, ts_shape_str(in->shape, io->rank, got,
                                             sizeof got));
  size_t typed = typed_total(in->contents);
  if (req->n_raw_input_contents) {
    const ProtobufCBinaryData *raw = &req->raw_input_contents[i];
    if (typed)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s' has both raw_input_contents and typed "
                        "contents; send one", in->name);
    if ((int64_t)raw->len != nbytes)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': raw_input_contents[%zu] holds %zu bytes "
                        "but shape %s of %s needs %lld", in->name, i, raw->len,
                        ts_shape_str(in->shape, io->rank, got, sizeof got),
                        in->datatype, (long long)nbytes);
    return ts_tensor_view(t, dtype, in->shape, io->rank, raw->data, err);
  }
  typed_view v = typed_field(in->contents, dtype);
  if (typed != v.count)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': typed contents must use the field for %s "
                      "only", in->name, in->datatype);
  if ((int64_t)v.count != numel)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': contents hold %zu elements but shape %s "
                      "needs %lld", in->name, v.count,
                      ts_shape_str(in->shape, io->rank, got, sizeof got),
                      (long long)numel);
  if (!v.narrow)
    return ts_tensor_view(t, dtype, in->shape, io->rank, (void *)v.data, err);
  int rc = ts_tensor_alloc(t, dtype, in->shape, io->rank, err);
  if (rc == TS_OK) narrow_copy(t, v.data, v.count);
  return rc;
}

static int bind_inputs(infer_ctx *ctx, ts_err *err) {
  const Inference__ModelInferRequest *req = ctx->req;
  const ts_served_model *m = ctx->model;
  char names[512];
  if (req->n_raw_input_contents &&
      req->n_raw_input_contents != req->n_inputs)
    return ts_err_set(err, TS_EINVAL,
                      "raw_input_contents has %zu entries but the request "
                      "has %zu inputs; they must match",
                      req->n_raw_input_contents, req->n_inputs);
  ctx->inputs = ts_rpc_arena_calloc(&ctx->arena,
                                    req->n_inputs * sizeof *ctx->inputs);
  if (!ctx->inputs) return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (size_t i = 0; i < req->n_inputs; i++) {
    const infer_input *in = req->inputs[i];
    const ts_io_info *io = find_io(m->inputs, m->n_inputs, in->name);
    if (!io) {
      list_names(m->inputs, m->n_inputs, names, sizeof names);
      return ts_err_set(err, TS_EINVAL,
                        "unknown input '%s' (model %s expects: %s)", in->name,
                        m->config.name, names);
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp(req->inputs[j]->name, in->name) == 0)
        return ts_err_set(err, TS_EINVAL, "input '%s' appears twice",
                          in->name);
    int rc = bind_input(req, i, io, &ctx->inputs[i], err);
    ctx->n_inputs = (int)i + 1;
    if (rc) return rc;
  }
  for (int k = 0; k < m->n_inputs; k++) {
    int found = 0;
    for (size_t i = 0; i < req->n_inputs && !found; i++)
      found = strcmp(req->inputs[i]->name, m->inputs[k].name) == 0;
    if (!found)
      return ts_err_set(err, TS_EINVAL, "missing input '%s' (datatype %s)",
                        m->inputs[k].name,
                        ts_dtype_kserve_name(m->inputs[k].dtype));
  }
  for (size_t o = 0; o < req->n_outputs; o++) {
    const char *name = req->outputs[o]->name;
    if (!find_io(m->outputs, m->n_outputs, name)) {
      list_names(m->outputs, m->n_outputs, names, sizeof names);
      return ts_err_set(err, TS_EINVAL,
                        "unknown output '%s' requested (model %s has: %s)",
                        name, m->config.name, names);
    }
    for (size_t j = 0; j < o; j++)
      if (strcmp(req->outputs[j]->name, name) == 0)
        return ts_err_set(err, TS_EINVAL, "output '%s' requested twice",
                          name);
  }
  return TS_OK;
}

static void ctx_free(infer_ctx *ctx) {
  atomic_fetch_sub(&ctx->fe->in_flight, 1);
  if (ctx->inf) ts_dispatch_free(ctx->inf);
  for (int i = 0; i < ctx->n_inputs; i++) ts_tensor_free(&ctx->inputs[i]);
  if (ctx->model) ts_served_model_release(ctx->model);
  ts_rpc_arena_release(&ctx->arena);
  free(ctx);
}

typedef Inference__ModelInferResponse__InferOutputTensor output_tensor;

/* Finds a result tensor by output name. */
typedef const ts_tensor *(*result_lookup)(const void *src, const char *name);

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

static void reply_outputs(infer_ctx *ctx, result_lookup lookup,
                          const void *src) {
  const ts_served_model *m = ctx->model; /* names are read, not written */
  const Inference__ModelInferRequest *req = ctx->req;
  int n = req->n_outputs ? (int)req->n_outputs : m->n_outputs;
  ts_rpc_arena *a = &ctx->arena;
  output_tensor *outs = ts_rpc_arena_calloc(a, (size_t)n * sizeof *outs);
  output_tensor **ptrs = ts_rpc_arena_calloc(a, (size_t)n * sizeof *ptrs);
  ProtobufCBinaryData *raw = ts_rpc_arena_calloc(a, (size_t)n * sizeof *raw);
  int64_t(*dims)[TS_MAX_RANK] = ts_rpc_arena_calloc(a,
                                                    (size_t)n * sizeof *dims);
  if (!outs || !ptrs || !raw || !dims) {
    ts_rpc_call_fail(ctx->call, TS_ENOMEM, "out of memory");
    return;
  }
  for (int i = 0; i < n; i++) {
    const char *name = req->n_outputs ? req->outputs[i]->name
                                      : m->outputs[i].name;
    const ts_tensor *t = lookup(src, name);
    if (!t) {
      char msg[256];
      snprintf(msg, sizeof msg, "the model produced no output '%s'", name);
      ts_rpc_call_fail(ctx->call, TS_EINTERNAL, msg);
      return;
    }
    inference__model_infer_response__infer_output_tensor__init(&outs[i]);
    outs[i].name = (char *)name;
    outs[i].datatype = (char *)ts_dtype_kserve_name(t->dtype);
    memcpy(dims[i], t->dims, sizeof t->dims);
    outs[i].n_shape = (size_t)t->rank;
    outs[i].shape = dims[i];
    raw[i].data = t->data;
    raw[i].len = t->nbytes;
    ptrs[i] = &outs[i];
  }
  Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
  resp.model_name = ctx->model->config.name;
  resp.model_version = "1";
  resp.id = req->id;
  resp.n_outputs = (size_t)n;
  resp.outputs = ptrs;
  resp.n_raw_output_contents = (size_t)n;
  resp.raw_output_contents = raw;
  ts_rpc_call_reply_message(ctx->call, &resp.base);
}

/* Whether the client's deadline has passed (a call without one never
 * expires). */
static int deadline_passed(ts_rpc_call *call) {
  int64_t deadline = ts_rpc_call_deadline(call);
  return deadline != TS_DEADLINE_NONE && ts_now_ms() >= deadline;
}

/* The client is gone: packing a response would be wasted. The status says
 * why, so that a client whose deadline passed reads DEADLINE_EXCEEDED even
 * when this answer reaches it before its own timer fires. */
static int client_gone(infer_ctx *ctx) {
  if (!ts_rpc_call_is_cancelled(ctx->call)) return 0;
  if (deadline_passed(ctx->call))
    ts_rpc_call_fail(ctx->call, TS_ETIMEDOUT, "the client's deadline passed");
  else
    ts_rpc_call_fail(ctx->call, TS_ECANCELLED, "the client went away");
  return 1;
}

static void on_infer_done(ts_dispatch *inf, void *user) {
  infer_ctx *ctx = user;
  const ts_err *e = ts_dispatch_error(inf);
  if (client_gone(ctx)) {
    /* answered already: nobody listens for the outputs */
  } else if (e->code) {
    ts_log_debug("request '%s' on %s failed: %s", ctx->req->id,
                 ctx->model->config.name, e->msg);
    ts_rpc_call_fail(ctx->call, e->code, e->msg);
  } else {
    reply_outputs(ctx, infer_lookup, inf);
  }
  ctx_free(ctx);
}

static void on_batched_done(void *user, const ts_err *err,
                            const ts_tensor *const *outputs, int n_outputs) {
  infer_ctx *ctx = user;
  (void)n_outputs;
  if (client_gone(ctx)) {
    /* answered already: nobody listens for the outputs */
  } else if (err->code) {
    ts_rpc_call_fail(ctx->call, err->code, err->msg);
  } else {
    batched_results r = {ctx->model, outputs};
    reply_outputs(ctx, batched_lookup, &r);
  }
  ctx_free(ctx);
}

/* The request's inputs in the model's input order (bind_inputs checked
 * that each model input appears exactly once). */
static int order_inputs(infer_ctx *ctx, ts_err *err) {
  const ts_served_model *m = ctx->model;
  ctx->ordered = ts_rpc_arena_calloc(
      &ctx->arena, (size_t)m->n_inputs * sizeof *ctx->ordered);
  if (!ctx->ordered) return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (int k = 0; k < m->n_inputs; k++)
    for (int i = 0; i < ctx->n_inputs; i++)
      if (strcmp(ctx->req->inputs[i]->name, m->inputs[k].name) == 0)
        ctx->ordered[k] = ctx->inputs[i];
  return TS_OK;
}

/* Cancellation notice (rpc.h) of a ModelInfer in flight: its worker calls
 * are cancelled, or it leaves the batcher. ctx is alive: its answer, which
 * comes before ctx_free, waits for this to return. */
static void on_client_gone(ts_rpc_call *call, void *user) {
  infer_ctx *ctx = user;
  int expired = deadline_passed(call);
  int code = expired ? TS_ETIMEDOUT : TS_ECANCELLED;
  ts_log_debug("request '%s' on %s: %s", ctx->req->id,
               ctx->model->config.name,
               expired ? "the client's deadline passed"
                       : "the client cancelled");
  if (ctx->inf)
    ts_dispatch_cancel(ctx->inf, code,
                       expired ? "the client's deadline passed"
                               : "the client cancelled the request");
  else if (ctx->item)
    ts_batcher_cancel(ctx->fe->batcher, ctx->item, code);
}

static void handle_model_infer(ts_rpc_call *call, const uint8_t *data,
                               size_t len, void *user) {
  ts_frontend *fe = user;
  infer_ctx *ctx = malloc(sizeof *ctx);
  if (!ctx) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  memset(ctx, 0, offsetof(infer_ctx, arena));
  ts_rpc_arena_init(&ctx->arena);
  ctx->fe = fe;
  ctx->call = call;
  atomic_fetch_add(&fe->in_flight, 1);
  if (atomic_load(&fe->draining)) {
    ts_rpc_call_fail(call, TS_EUNAVAILABLE, "the server is shutting down");
    ctx_free(ctx);
    return;
  }
  ctx->req = (Inference__ModelInferRequest *)ts_rpc_call_unpack_with(
      call, &inference__model_infer_request__descriptor,
      &ctx->arena.allocator, data, len);
  if (!ctx->req) {
    ctx_free(ctx);
    return;
  }
  ctx->model = model_or_fail(fe, call, ctx->req->model_name,
                             ctx->req->model_version, 1);
  if (!ctx->model) {
    ctx_free(ctx);
    return;
  }
  ts_err err = {0};
  int64_t now = ts_now_ms();
  int64_t deadline = ts_rpc_call_deadline(call);
  if (deadline == TS_DEADLINE_NONE || deadline - now > fe->max_deadline_ms)
    deadline = now + fe->max_deadline_ms;
  int rc = bind_inputs(ctx, &err);
  if (rc == TS_OK && deadline <= now)
    rc = ts_err_set(&err, TS_ETIMEDOUT, "deadline passed before dispatch");
  if (rc == TS_OK && fe->batcher) rc = order_inputs(ctx, &err);
  if (rc == TS_OK && fe->batcher &&
      ts_batcher_accepts(ctx->model, ctx->ordered)) {
    rc = ts_batcher_submit(fe->batcher, ctx->model, ctx->ordered, deadline,
                           on_batched_done, ctx, &ctx->item, &err);
    /* ctx may be answered and freed already: registering on an answered
     * call does nothing (the call itself lives until this returns). */
    if (rc == TS_OK) ts_rpc_call_on_cancel(call, on_client_gone, ctx);
    if (rc == TS_OK) return;
  }
  if (rc == TS_OK) {
    ctx->inf = ts_dispatch_new(fe->cluster, ctx->model, &fe->dispatch, deadline,
                               ctx->req->id);
    if (!ctx->inf) rc = ts_err_set(&err, TS_ENOMEM, "out of memory");
  }
  for (int i = 0; rc == TS_OK && i < ctx->n_inputs; i++)
    rc = ts_dispatch_add_input(ctx->inf, ctx->req->inputs[i]->name,
                               &ctx->inputs[i], &err);
  if (rc) {
    reply_error(call, &err);
    ctx_free(ctx);
    return;
  }
  ts_dispatch_start(ctx->inf, on_infer_done, ctx); /* may answer at once */
  ts_rpc_call_on_cancel(call, on_client_gone, ctx);
}

/* ---- repository --------------------------------------------------------- */

static const char *state_name(ts_model_state s) {
  static const char *const names[] = {"LOADING", "READY", "UNAVAILABLE"};
  return names[s];
}

static void handle_repository_index(ts_rpc_call *call, const uint8_t *data,
                                    size_t len, void *user) {
  ts_frontend *fe = user;
  Inference__RepositoryIndexRequest *req = (Inference__RepositoryIndexRequest *)
      ts_rpc_call_unpack(call, &inference__repository_index_request__descriptor,
                     data, len);
  if (!req) return;
  int ready_only = req->ready;
  protobuf_c_message_free_unpacked(&req->base, NULL);
  ts_served_model **models;
  int n;
  if (ts_registry_snapshot(fe->registry, &models, &n) != TS_OK) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  typedef Inference__RepositoryIndexResponse__ModelIndex model_index;
  model_index *idx = calloc((size_t)(n ? n : 1), sizeof *idx);
  model_index **ptrs = calloc((size_t)(n ? n : 1), sizeof *ptrs);
  if (!idx || !ptrs) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
  } else {
    size_t k = 0;
    for (int i = 0; i < n; i++) {
      if (ready_only && models[i]->state != TS_MODEL_READY) continue;
      inference__repository_index_response__model_index__init(&idx[k]);
      idx[k].name = models[i]->config.name;
      idx[k].version = "1";
      idx[k].state = (char *)state_name(models[i]->state);
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

static void handle_repository_load(ts_rpc_call *call, const uint8_t *data,
                                   size_t len, void *user) {
  Inference__RepositoryModelLoadRequest *req =
      (Inference__RepositoryModelLoadRequest *)ts_rpc_call_unpack(
          call, &inference__repository_model_load_request__descriptor, data,
          len);
  if (!req) return;
  load_job *job = calloc(1, sizeof *job);
  if (!job || strlen(req->model_name) >= sizeof job->name ||
      !req->model_name[0]) {
    ts_rpc_call_fail(call, job ? TS_EINVAL : TS_ENOMEM,
                     job ? "model_name is empty or too long" : "out of memory");
    free(job);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return;
  }
  job->fe = user;
  job->call = call;
  snprintf(job->name, sizeof job->name, "%s", req->model_name);
  protobuf_c_message_free_unpacked(&req->base, NULL);
  if (ts_rpc_call_offload(call, load_thread, job) != 0) free(job);
}

static void handle_repository_unload(ts_rpc_call *call, const uint8_t *data,
                                     size_t len, void *user) {
  ts_frontend *fe = user;
  Inference__RepositoryModelUnloadRequest *req =
      (Inference__RepositoryModelUnloadRequest *)ts_rpc_call_unpack(
          call, &inference__repository_model_unload_request__descriptor, data,
          len);
  if (!req) return;
  ts_err err = {0};
  if (ts_registry_unload(fe->registry, req->model_name, &err) == TS_OK) {
    Inference__RepositoryModelUnloadResponse resp =
        INFERENCE__REPOSITORY_MODEL_UNLOAD_RESPONSE__INIT;
    ts_rpc_call_reply_message(call, &resp.base);
  } else {
    reply_error(call, &err);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
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

int ts_frontend_methods(ts_frontend *fe, ts_rpc_method *out) {
  static const struct {
    const char *path;
    ts_rpc_unary_fn fn;
  } table[TS_FRONTEND_METHODS] = {
      {SERVICE "ServerLive", handle_server_live},
      {SERVICE "ServerReady", handle_server_ready},
      {SERVICE "ModelReady", handle_model_ready},
      {SERVICE "ServerMetadata", handle_server_metadata},
      {SERVICE "ModelMetadata", handle_model_metadata},
      {SERVICE "ModelInfer", handle_model_infer},
      {SERVICE "RepositoryIndex", handle_repository_index},
      {SERVICE "RepositoryModelLoad", handle_repository_load},
      {SERVICE "RepositoryModelUnload", handle_repository_unload},
  };
  for (int i = 0; i < TS_FRONTEND_METHODS; i++)
    out[i] = (ts_rpc_method){.path = table[i].path,
                             .kind = TS_RPC_UNARY,
                             .unary = table[i].fn,
                             .user = fe};
  return TS_FRONTEND_METHODS;
}
