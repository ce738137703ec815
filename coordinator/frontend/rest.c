/*
 * rest.c - the KServe v2 REST API over the embedded HTTP server. See
 * rest.h.
 *
 * An infer request becomes an Inference__ModelInferRequest in the
 * request's arena with every input as raw contents: binary inputs are
 * views into the HTTP body, JSON data is converted to the datatype's
 * bytes; then infer.h validates and runs it exactly as for gRPC. The JSON
 * document (jansson) outlives the request, since names point into it.
 */
#include "rest.h"

#include "infer.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "log.h"
#include "registry.h"
#include "ts_config.h"

#define BINARY_HEADER "Inference-Header-Content-Length"
#define MAX_SEGMENTS 8
/* How often a waiting inference looks whether its client hung up. */
#define HANGUP_POLL_NS (100 * 1000000L)

typedef struct rest_server {
  ts_frontend *fe;
  ts_rpc_auth *auth;
} rest_server;

/* ---- answers -------------------------------------------------------------- */

/* HTTP status of each TS_E* code, indexed by -code. */
static const int http_status_of[] = {
    [-TS_OK] = 200,          [-TS_EINVAL] = 400,
    [-TS_ENOMEM] = 500,      [-TS_ENOTFOUND] = 404,
    [-TS_EUNSUPPORTED] = 501, [-TS_EUNAVAILABLE] = 503,
    [-TS_ETIMEDOUT] = 504,   [-TS_EIO] = 500,
    [-TS_EEXHAUSTED] = 429,  [-TS_EINTERNAL] = 500,
    [-TS_ECANCELLED] = 499,  [-TS_EPERM] = 403,
    [-TS_EUNAUTH] = 401,     [-TS_EEXISTS] = 409,
    [-TS_EPRECONDITION] = 400,
};

static int http_status(int code) {
  size_t i = (size_t)-code;
  return code <= 0 && i < sizeof http_status_of / sizeof *http_status_of &&
                 http_status_of[i]
             ? http_status_of[i]
             : 500;
}

/* Answers `status` with the JSON document v (consumed). */
static void answer_json(ts_http_response *r, int status, json_t *v) {
  r->status = status;
  r->content_type = "application/json";
  r->body = v ? json_dumps(v, JSON_COMPACT) : NULL;
  r->body_len = r->body ? strlen(r->body) : 0;
  if (v && !r->body) r->status = 500;
  json_decref(v);
}

/* Answers `status` with {"error": msg}. */
static void answer_message(ts_http_response *r, int status, const char *msg) {
  answer_json(r, status, json_pack("{ss}", "error", msg));
}

static void answer_error(ts_http_response *r, const ts_err *err) {
  answer_message(r, http_status(err->code), err->msg);
}

/* ---- tensors in JSON ------------------------------------------------------ */

/* Counts the scalars of a (nested) JSON array; -1 when it nests deeper
 * than any tensor's rank. */
static int64_t count_elements(const json_t *v, int depth) {
  if (!json_is_array(v)) return 1;
  if (depth >= TS_MAX_RANK) return -1;
  int64_t n = 0;
  size_t i;
  const json_t *x;
  json_array_foreach(v, i, x) {
    int64_t k = count_elements(x, depth + 1);
    if (k < 0) return -1;
    n += k;
  }
  return n;
}

/* Stores scalar v as element *at of dtype t in out; what went wrong in
 * err (naming input `name`). */
static int put_element(const json_t *v, ts_dtype t, uint8_t *out, int64_t at,
                       const char *name, ts_err *err) {
  if (t == TS_DTYPE_BOOL) {
    if (!json_is_boolean(v))
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': data[%" PRId64 "] is not a boolean",
                        name, at);
    out[at] = json_is_true(v);
    return TS_OK;
  }
  if (t == TS_DTYPE_FLOAT || t == TS_DTYPE_DOUBLE) {
    if (!json_is_number(v))
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': data[%" PRId64 "] is not a number", name,
                        at);
    double d = json_number_value(v);
    if (t == TS_DTYPE_FLOAT)
      ((float *)out)[at] = (float)d;
    else
      ((double *)out)[at] = d;
    return TS_OK;
  }
  if (!json_is_integer(v))
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': data[%" PRId64 "] is not an integer",
                      name, at);
  json_int_t x = json_integer_value(v);
  long long lo, hi;
  switch (t) {
    case TS_DTYPE_INT8: lo = INT8_MIN; hi = INT8_MAX; break;
    case TS_DTYPE_INT16: lo = INT16_MIN; hi = INT16_MAX; break;
    case TS_DTYPE_INT32: lo = INT32_MIN; hi = INT32_MAX; break;
    case TS_DTYPE_UINT8: lo = 0; hi = UINT8_MAX; break;
    case TS_DTYPE_UINT16: lo = 0; hi = UINT16_MAX; break;
    case TS_DTYPE_UINT32: lo = 0; hi = UINT32_MAX; break;
    case TS_DTYPE_UINT64: lo = 0; hi = LLONG_MAX; break;
    default: lo = LLONG_MIN; hi = LLONG_MAX; break;
  }
  if (x < lo || x > hi)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': data[%" PRId64 "] = %lld is out of range "
                      "for %s", name, at, (long long)x,
                      ts_dtype_kserve_name(t));
  switch (t) {
    case TS_DTYPE_INT8: ((int8_t *)out)[at] = (int8_t)x; break;
    case TS_DTYPE_INT16: ((int16_t *)out)[at] = (int16_t)x; break;
    case TS_DTYPE_INT32: ((int32_t *)out)[at] = (int32_t)x; break;
    case TS_DTYPE_UINT8: out[at] = (uint8_t)x; break;
    case TS_DTYPE_UINT16: ((uint16_t *)out)[at] = (uint16_t)x; break;
    case TS_DTYPE_UINT32: ((uint32_t *)out)[at] = (uint32_t)x; break;
    case TS_DTYPE_UINT64: ((uint64_t *)out)[at] = (uint64_t)x; break;
    default: ((int64_t *)out)[at] = (int64_t)x; break;
  }
  return TS_OK;
}

/* Writes the scalars of v, row-major, from element *at on. */
static int flatten(const json_t *v, ts_dtype t, uint8_t *out, int64_t *at,
                   const char *name, ts_err *err) {
  if (!json_is_array(v)) return put_element(v, t, out, (*at)++, name, err);
  size_t i;
  const json_t *x;
  json_array_foreach(v, i, x) {
    int rc = flatten(x, t, out, at, name, err);
    if (rc) return rc;
  }
  return TS_OK;
}

/* Element i of tensor t as a JSON value (NULL: no memory). */
static json_t *element_json(const ts_tensor *t, int64_t i) {
  const void *d = t->data;
  switch (t->dtype) {
    case TS_DTYPE_FLOAT: return json_real(((const float *)d)[i]);
    case TS_DTYPE_DOUBLE: return json_real(((const double *)d)[i]);
    case TS_DTYPE_BOOL: return json_boolean(((const uint8_t *)d)[i] != 0);
    case TS_DTYPE_INT8: return json_integer(((const int8_t *)d)[i]);
    case TS_DTYPE_INT16: return json_integer(((const int16_t *)d)[i]);
    case TS_DTYPE_INT32: return json_integer(((const int32_t *)d)[i]);
    case TS_DTYPE_INT64: return json_integer(((const int64_t *)d)[i]);
    case TS_DTYPE_UINT8: return json_integer(((const uint8_t *)d)[i]);
    case TS_DTYPE_UINT16: return json_integer(((const uint16_t *)d)[i]);
    case TS_DTYPE_UINT32: return json_integer(((const uint32_t *)d)[i]);
    case TS_DTYPE_UINT64:
      return json_integer((json_int_t)((const uint64_t *)d)[i]);
    default: return NULL;
  }
}

static json_t *shape_json(const int64_t *dims, int rank) {
  json_t *a = json_array();
  for (int d = 0; a && d < rank; d++)
    json_array_append_new(a, json_integer(dims[d]));
  return a;
}

/* ---- infer ---------------------------------------------------------------- */

/* One REST inference: the handler's thread waits on `ready` until the
 * answer callback has filled `resp`, and cancels the request when its
 * client hangs up. As on gRPC (rpc_server.c), the cancellation never
 * starts after the answer was given, and an answer from another thread
 * waits for a cancellation in progress to return (the request is freed
 * right after its answer); an answer from inside it (same thread) goes
 * straight on. All under `lock`; `ready` signals both. */
typedef struct rest_infer {
  pthread_mutex_t lock;
  pthread_cond_t ready;
  int done;
  int cancelled;         /* ts_infer_cancel was called */
  int cancel_running;    /* ... and has not returned yet, on `canceller` */
  pthread_t canceller;
  ts_http_response *resp;
  int *binary_output;    /* per requested output (or per model output when
                            none was named): answer as binary */
  int binary_default;    /* parameters.binary_data_output */
} rest_infer;

/* The outputs of r (infer.h) into resp: JSON, and the binary ones after
 * it. */
static int answer_outputs(rest_infer *ri, const ts_infer_result *r) {
  const Inference__ModelInferRequest *req = r->req;
  const ts_served_model *m = r->model;
  int n = req->n_outputs ? (int)req->n_outputs : m->n_outputs;
  ts_err err = {0};
  char version[TS_VERSION_STR_MAX];
  json_t *outs = json_array();
  json_t *doc = json_pack("{ss ss so}", "model_name", m->config.name,
                          "model_version",
                          ts_model_config_version_str(&m->config, version),
                          "outputs", outs);
  if (doc && req->id[0]) json_object_set_new(doc, "id", json_string(req->id));
  size_t binary_bytes = 0;
  const ts_tensor **binary = ts_rpc_arena_calloc(
      r->arena, (size_t)(n + 1) * sizeof *binary);
  int n_binary = 0;
  if (!doc || !binary) ts_err_set(&err, TS_ENOMEM, "out of memory");
  for (int i = 0; !err.code && i < n; i++) {
    const char *name = req->n_outputs ? req->outputs[i]->name
                                      : m->outputs[i].name;
    const ts_tensor *t = r->lookup(r->src, name);
    if (!t) {
      ts_err_set(&err, TS_EINTERNAL, "the model produced no output '%s'",
                 name);
      break;
    }
    int as_binary = req->n_outputs ? ri->binary_output[i] : ri->binary_default;
    json_t *o = json_pack("{ss ss so}", "name", name, "datatype",
                          ts_dtype_kserve_name(t->dtype), "shape",
                          shape_json(t->dims, t->rank));
    if (!o) {
      ts_err_set(&err, TS_ENOMEM, "out of memory");
      break;
    }
    json_array_append_new(outs, o);
    if (as_binary) {
      json_object_set_new(o, "parameters",
                          json_pack("{sI}", "binary_data_size",
                                    (json_int_t)t->nbytes));
      binary[n_binary++] = t;
      binary_bytes += t->nbytes;
      continue;
    }
    int64_t numel = ts_shape_numel(t->dims, t->rank);
    json_t *data = json_array();
    json_object_set_new(o, "data", data);
    for (int64_t k = 0; data && k < numel; k++) {
      json_t *x = element_json(t, k);
      if (!x) {
        /* json_real refuses NaN and infinities, which JSON cannot hold. */
        if (t->dtype == TS_DTYPE_FLOAT || t->dtype == TS_DTYPE_DOUBLE)
          ts_err_set(&err, TS_EUNSUPPORTED,
                     "output '%s': element %lld is NaN or infinite, which "
                     "JSON cannot hold; ask for it as binary "
                     "(parameters.binary_data)", name, (long long)k);
        else
          ts_err_set(&err, TS_EUNSUPPORTED,
                     "output '%s': %s has no JSON form; ask for it as binary "
                     "(parameters.binary_data)", name,
                     ts_dtype_kserve_name(t->dtype));
        break;
      }
      json_array_append_new(data, x);
    }
  }
  if (err.code) {
    json_decref(doc);
    answer_error(ri->resp, &err);
    return err.code;
  }
  char *head = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  size_t head_len = head ? strlen(head) : 0;
  char *body = head && n_binary ? realloc(head, head_len + binary_bytes + 1)
                                : head;
  if (!body) {
    free(head);
    ts_err_set(&err, TS_ENOMEM, "out of memory");
    answer_error(ri->resp, &err);
    return err.code;
  }
  size_t off = head_len;
  for (int i = 0; i < n_binary; i++) {
    memcpy(body + off, binary[i]->data, binary[i]->nbytes);
    off += binary[i]->nbytes;
  }
  ts_http_response *resp = ri->resp;
  resp->status = 200;
  resp->body = body;
  resp->body_len = off;
  resp->content_type = n_binary ? "application/octet-stream"
                                : "application/json";
  if (n_binary) {
    resp->extra_name = BINARY_HEADER;
    snprintf(resp->extra_value_buf, sizeof resp->extra_value_buf, "%zu",
             head_len);
  }
  return TS_OK;
}

/* The answer callback (infer.h): fills the response and wakes the
 * connection's thread. */
static int rest_answer(void *user, const ts_infer_result *r) {
  rest_infer *ri = user;
  int code = r->err->code;
  if (code)
    answer_error(ri->resp, r->err);
  else
    code = answer_outputs(ri, r);
  pthread_mutex_lock(&ri->lock);
  while (ri->cancel_running && !pthread_equal(ri->canceller, pthread_self()))
    pthread_cond_wait(&ri->ready, &ri->lock);
  ri->done = 1;
  pthread_cond_broadcast(&ri->ready);
  pthread_mutex_unlock(&ri->lock);
  return code;
}

typedef Inference__ModelInferRequest__InferInputTensor infer_input;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor
    requested_output;

/* A boolean parameter of a JSON object's "parameters" (0 when absent). */
static int bool_parameter(const json_t *obj, const char *key) {
  return json_is_true(json_object_get(json_object_get(obj, "parameters"), key));
}

/* Input i of the JSON document into in and raw (bytes of the JSON data
 * from the arena, or the next binary_data_size bytes of the body at
 * *binary). */
static int parse_input(const json_t *v, size_t i, ts_rpc_arena *a,
                       infer_input *in, ProtobufCBinaryData *raw,
                       const uint8_t **binary, size_t *binary_left,
                       ts_err *err) {
  inference__model_infer_request__infer_input_tensor__init(in);
  const char *name = json_string_value(json_object_get(v, "name"));
  const char *datatype = json_string_value(json_object_get(v, "datatype"));
  const json_t *shape = json_object_get(v, "shape");
  if (!json_is_object(v))
    return ts_err_set(err, TS_EINVAL, "inputs[%zu] is not an object", i);
  if (!name)
    return ts_err_set(err, TS_EINVAL, "inputs[%zu]: 'name' is missing or "
                                      "not a string", i);
  if (!datatype)
    return ts_err_set(err, TS_EINVAL, "input '%s': 'datatype' is missing or "
                                      "not a string", name);
  if (!json_is_array(shape) || json_array_size(shape) > TS_MAX_RANK)
    return ts_err_set(err, TS_EINVAL, "input '%s': 'shape' is missing or not "
                      "an array of at most %d integers", name, TS_MAX_RANK);
  in->name = (char *)name;
  in->datatype = (char *)datatype;
  in->n_shape = json_array_size(shape);
  in->shape = ts_rpc_arena_calloc(a, (in->n_shape + 1) * sizeof *in->shape);
  if (!in->shape) return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (size_t d = 0; d < in->n_shape; d++) {
    const json_t *x = json_array_get(shape, d);
    if (!json_is_integer(x))
      return ts_err_set(err, TS_EINVAL, "input '%s': shape[%zu] is not an "
                        "integer", name, d);
    in->shape[d] = json_integer_value(x);
  }
  const json_t *size = json_object_get(json_object_get(v, "parameters"),
                                       "binary_data_size");
  const json_t *data = json_object_get(v, "data");
  if (size) {
    json_int_t n = json_integer_value(size);
    if (!json_is_integer(size) || n < 0)
      return ts_err_set(err, TS_EINVAL, "input '%s': binary_data_size is not "
                        "an integer >= 0", name);
    if (data)
      return ts_err_set(err, TS_EINVAL, "input '%s' has both 'data' and "
                        "binary_data_size; send one", name);
    if ((size_t)n > *binary_left)
      return ts_err_set(err, TS_EINVAL, "input '%s': binary_data_size %lld "
                        "goes past the end of the body (%zu bytes of binary "
                        "data left)", name, (long long)n, *binary_left);
    raw->data = (uint8_t *)*binary;
    raw->len = (size_t)n;
    *binary += n;
    *binary_left -= (size_t)n;
    return TS_OK;
  }
  if (!data)
    return ts_err_set(err, TS_EINVAL, "input '%s': 'data' is missing (or give "
                      "parameters.binary_data_size)", name);
  ts_dtype t = ts_dtype_from_kserve(datatype);
  if (t == TS_DTYPE_UNDEFINED) return TS_OK; /* validate.h names it */
  if (t == TS_DTYPE_STRING || t == TS_DTYPE_FLOAT16)
    return ts_err_set(err, TS_EUNSUPPORTED, "input '%s': %s has no JSON form "
                      "here; send it as binary (binary_data_size)", name,
                      datatype);
  int64_t count = count_elements(data, 0);
  int64_t numel = ts_shape_numel(in->shape, (int)in->n_shape);
  if (count < 0)
    return ts_err_set(err, TS_EINVAL, "input '%s': 'data' nests deeper than "
                      "rank %d", name, TS_MAX_RANK);
  if (numel < 0) return TS_OK; /* negative dims, overflow: validate.h */
  if (count != numel) {
    char got[160];
    return ts_err_set(err, TS_EINVAL, "input '%s': 'data' holds %lld "
                      "elements but shape %s needs %lld", name,
                      (long long)count,
                      ts_shape_str(in->shape, (int)in->n_shape, got,
                                   sizeof got), (long long)numel);
  }
  raw->len = (size_t)count * ts_dtype_size(t);
  raw->data = ts_rpc_arena_calloc(a, raw->len + 1);
  if (!raw->data) return ts_err_set(err, TS_ENOMEM, "out of memory");
  int64_t at = 0;
  return flatten(data, t, raw->data, &at, name, err);
}

/* The request of an infer body (JSON header of head_len bytes, then the
 * binary data), built in arena a; ri gets the output flags. */
static int parse_infer(const json_t *doc, const uint8_t *binary,
                       size_t binary_len, ts_rpc_arena *a, rest_infer *ri,
                       Inference__ModelInferRequest *req, ts_err *err) {
  if (!json_is_object(doc))
    return ts_err_set(err, TS_EINVAL, "the body is not a JSON object");
  const json_t *id = json_object_get(doc, "id");
  if (id && !json_is_string(id))
    return ts_err_set(err, TS_EINVAL, "'id' is not a string");
  if (id) req->id = (char *)json_string_value(id);
  ri->binary_default = bool_parameter(doc, "binary_data_output");
  const json_t *inputs = json_object_get(doc, "inputs");
  if (!json_is_array(inputs))
    return ts_err_set(err, TS_EINVAL, "'inputs' is missing or not an array");
  size_t n = json_array_size(inputs);
  req->n_inputs = req->n_raw_input_contents = n;
  req->inputs = ts_rpc_arena_calloc(a, (n + 1) * sizeof *req->inputs);
  infer_input *ins = ts_rpc_arena_calloc(a, (n + 1) * sizeof *ins);
  req->raw_input_contents =
      ts_rpc_arena_calloc(a, (n + 1) * sizeof *req->raw_input_contents);
  if (!req->inputs || !ins || !req->raw_input_contents)
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    req->inputs[i] = &ins[i];
    int rc = parse_input(json_array_get(inputs, i), i, a, &ins[i],
                         &req->raw_input_contents[i], &binary, &binary_len,
                         err);
    if (rc) return rc;
  }
  if (binary_len)
    return ts_err_set(err, TS_EINVAL, "the body holds %zu bytes of binary "
                      "data beyond the inputs' binary_data_size", binary_len);
  const json_t *outputs = json_object_get(doc, "outputs");
  if (outputs && !json_is_array(outputs))
    return ts_err_set(err, TS_EINVAL, "'outputs' is not an array");
  size_t k = json_array_size(outputs);
  req->n_outputs = k;
  req->outputs = ts_rpc_arena_calloc(a, (k + 1) * sizeof *req->outputs);
  requested_output *outs = ts_rpc_arena_calloc(a, (k + 1) * sizeof *outs);
  ri->binary_output = ts_rpc_arena_calloc(a, (k + 1) * sizeof(int));
  if (!req->outputs || !outs || !ri->binary_output)
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (size_t o = 0; o < k; o++) {
    const json_t *v = json_array_get(outputs, o);
    const char *name = json_string_value(json_object_get(v, "name"));
    if (!name)
      return ts_err_set(err, TS_EINVAL, "outputs[%zu]: 'name' is missing or "
                        "not a string", o);
    inference__model_infer_request__infer_requested_output_tensor__init(
        &outs[o]);
    outs[o].name = (char *)name;
    req->outputs[o] = &outs[o];
    const json_t *p = json_object_get(json_object_get(v, "parameters"),
                                      "binary_data");
    ri->binary_output[o] = p ? json_is_true(p) : ri->binary_default;
  }
  return TS_OK;
}

static void handle_infer(rest_server *s, const ts_http_request *hr,
                         const char *model, const char *version,
                         ts_http_response *resp) {
  ts_err err = {0};
  /* An unknown model or version answers 404 whatever the body (as on
   * gRPC, where the model is looked up first). */
  ts_served_model *m = ts_frontend_model_find(s->fe, model, version, 0, &err);
  if (!m) {
    answer_error(resp, &err);
    return;
  }
  ts_served_model_release(m);
  size_t head_len = hr->body_len;
  const char *header = ts_http_header(hr, BINARY_HEADER);
  if (header) {
    char *end;
    unsigned long long v = strtoull(header, &end, 10);
    if (!header[0] || *end || v > hr->body_len || header[0] == '-') {
      ts_err_set(&err, TS_EINVAL, BINARY_HEADER " '%s' is not a length "
                 "within the body's %zu bytes", header, hr->body_len);
      answer_error(resp, &err);
      return;
    }
    head_len = (size_t)v;
  }
  json_error_t jerr;
  json_t *doc = json_loadb((const char *)hr->body, head_len, 0, &jerr);
  if (!doc) {
    ts_err_set(&err, TS_EINVAL, "the body is not JSON: %s (line %d, column "
               "%d)", jerr.text, jerr.line, jerr.column);
    answer_error(resp, &err);
    return;
  }
  rest_infer ri = {.resp = resp};
  ts_infer *inf = ts_infer_new(s->fe, rest_answer, &ri, &err);
  if (!inf) {
    json_decref(doc);
    answer_error(resp, &err);
    return;
  }
  ts_rpc_arena *a = ts_infer_arena(inf);
  Inference__ModelInferRequest *req = ts_rpc_arena_calloc(a, sizeof *req);
  if (req) {
    inference__model_infer_request__init(req);
    req->model_name = (char *)model;
    req->model_version = (char *)(version ? version : "");
    parse_infer(doc, hr->body + head_len, hr->body_len - head_len, a, &ri, req,
                &err);
  } else {
    ts_err_set(&err, TS_ENOMEM, "out of memory");
  }
  if (err.code) {
    ts_infer_abandon(inf, err.code);
    json_decref(doc);
    answer_error(resp, &err);
    return;
  }
  pthread_mutex_init(&ri.lock, NULL);
  pthread_cond_init(&ri.ready, NULL);
  ts_infer_run(inf, req, TS_DEADLINE_NONE);
  pthread_mutex_lock(&ri.lock);
  while (!ri.done) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += HANGUP_POLL_NS;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&ri.ready, &ri.lock, &until);
    if (ri.done || ri.cancelled || !ts_http_peer_gone(hr)) continue;
    ri.cancelled = ri.cancel_running = 1;
    ri.canceller = pthread_self();
    pthread_mutex_unlock(&ri.lock);
    ts_log_debug("REST request on %s: the client hung up", model);
    ts_infer_cancel(inf, TS_ECANCELLED, "the client went away");
    pthread_mutex_lock(&ri.lock);
    ri.cancel_running = 0;
    pthread_cond_broadcast(&ri.ready);
  }
  pthread_mutex_unlock(&ri.lock);
  pthread_cond_destroy(&ri.ready);
  pthread_mutex_destroy(&ri.lock);
  json_decref(doc);
}

/* ---- health, metadata, repository ----------------------------------------- */

static void handle_server_metadata(ts_http_response *resp) {
  json_t *ext = json_array();
  for (int i = 0; ext && i < TS_FRONTEND_N_EXTENSIONS; i++)
    json_array_append_new(ext, json_string(ts_frontend_extensions[i]));
  answer_json(resp, 200, json_pack("{ss ss so}", "name", "tessera", "version",
                                   TESSERA_VERSION, "extensions", ext));
}

static json_t *tensors_json(const ts_io_info *io, int n) {
  json_t *a = json_array();
  for (int i = 0; a && i < n; i++) {
    const char *dt = ts_dtype_kserve_name(io[i].dtype);
    json_array_append_new(a, json_pack("{ss ss so}", "name", io[i].name,
                                       "datatype", dt ? dt : "BYTES", "shape",
                                       shape_json(io[i].dims, io[i].rank)));
  }
  return a;
}

static void handle_model_metadata(const ts_served_model *m,
                                  ts_http_response *resp) {
  char version[TS_VERSION_STR_MAX];
  answer_json(resp, 200,
              json_pack("{ss s[s] ss so so}", "name", m->config.name,
                        "versions",
                        ts_model_config_version_str(&m->config, version),
                        "platform", ts_frontend_platform(m), "inputs",
                        tensors_json(m->inputs, m->n_inputs), "outputs",
                        tensors_json(m->outputs, m->n_outputs)));
}

static void handle_repository_index(rest_server *s, const ts_http_request *hr,
                                    ts_http_response *resp) {
  int ready_only = 0;
  if (hr->body_len) {
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)hr->body, hr->body_len, 0, &jerr);
    if (!json_is_object(doc)) {
      json_decref(doc);
      answer_message(resp, 400, "the body is not a JSON object");
      return;
    }
    ready_only = json_is_true(json_object_get(doc, "ready"));
    json_decref(doc);
  }
  ts_served_model **models;
  int n;
  if (ts_registry_snapshot(s->fe->registry, &models, &n) != TS_OK) {
    answer_message(resp, 500, "out of memory");
    return;
  }
  json_t *a = json_array();
  for (int i = 0; a && i < n; i++) {
    char version[TS_VERSION_STR_MAX];
    if (!ready_only || models[i]->state == TS_MODEL_READY)
      json_array_append_new(
          a, json_pack("{ss ss ss ss}", "name", models[i]->config.name,
                       "version",
                       ts_model_config_version_str(&models[i]->config,
                                                   version),
                       "state", ts_frontend_state_name(models[i]->state),
                       "reason", models[i]->reason));
    ts_served_model_release(models[i]);
  }
  free(models);
  answer_json(resp, 200, a);
}

/* ---- routing -------------------------------------------------------------- */

/* The path's segments (at most MAX_SEGMENTS) into seg, in buf. */
static int split_path(const char *url, char *buf, size_t size,
                      char **seg) {
  if (strlen(url) >= size) return -1;
  snprintf(buf, size, "%s", url);
  int n = 0;
  for (char *save, *p = strtok_r(buf, "/", &save); p;
       p = strtok_r(NULL, "/", &save)) {
    if (n == MAX_SEGMENTS) return -1;
    seg[n++] = p;
  }
  return n;
}

/* Token check for a route admitting `roles`; 0 or answered. */
static int authorize(rest_server *s, const ts_http_request *hr,
                     unsigned roles, ts_http_response *resp) {
  const char *v = ts_http_header(hr, "Authorization");
  char msg[256];
  int rc = ts_rpc_auth_check_bearer(s->auth, v, v ? strlen(v) : 0, roles, msg,
                                    sizeof msg);
  if (rc) answer_message(resp, http_status(rc), msg);
  return rc;
}

/* Whether hr uses `method`; else answered 405. */
static int method_is(const ts_http_request *hr, const char *method,
                     ts_http_response *resp) {
  if (strcmp(hr->method, method) == 0) return 1;
  char msg[128];
  snprintf(msg, sizeof msg, "%s %s: use %s", hr->method, hr->url, method);
  answer_message(resp, 405, msg);
  resp->extra_name = "Allow";
  snprintf(resp->extra_value_buf, sizeof resp->extra_value_buf, "%s", method);
  return 0;
}

/* /v2/models/NAME[/versions/V][/ready|/infer] (seg[2] on). */
static void route_model(rest_server *s, const ts_http_request *hr, char **seg,
                        int n, ts_http_response *resp) {
  const char *name = seg[2], *version = NULL;
  int rest = 3;
  if (n >= 5 && strcmp(seg[3], "versions") == 0) {
    version = seg[4];
    rest = 5;
  }
  const char *action = n == rest + 1 ? seg[rest] : n == rest ? "" : NULL;
  if (!action || (action[0] && strcmp(action, "ready") &&
                  strcmp(action, "infer"))) {
    answer_message(resp, 404, "no such endpoint");
    return;
  }
  if (authorize(s, hr, TS_ROLES_INFER, resp)) return;
  if (strcmp(action, "infer") == 0) {
    if (method_is(hr, "POST", resp)) handle_infer(s, hr, name, version, resp);
    return;
  }
  if (!method_is(hr, "GET", resp)) return;
  ts_err err = {0};
  ts_served_model *m = ts_frontend_model_find(s->fe, name, version, 0, &err);
  if (!m) {
    answer_error(resp, &err);
    return;
  }
  if (action[0]) {
    int ready = m->state == TS_MODEL_READY;
    answer_json(resp, ready ? 200 : 503,
                json_pack("{ss sb}", "name", m->config.name, "ready", ready));
  } else {
    handle_model_metadata(m, resp);
  }
  ts_served_model_release(m);
}

/* /v2/repository/... (seg[2] on); admin only. */
static void route_repository(rest_server *s, const ts_http_request *hr,
                             char **seg, int n, ts_http_response *resp) {
  int index = n == 3 && strcmp(seg[2], "index") == 0;
  int load = n == 5 && strcmp(seg[2], "models") == 0 &&
             strcmp(seg[4], "load") == 0;
  int unload = n == 5 && strcmp(seg[2], "models") == 0 &&
               strcmp(seg[4], "unload") == 0;
  if (!index && !load && !unload) {
    answer_message(resp, 404, "no such endpoint");
    return;
  }
  if (authorize(s, hr, TS_ROLE_ADMIN, resp) || !method_is(hr, "POST", resp))
    return;
  if (index) {
    handle_repository_index(s, hr, resp);
    return;
  }
  ts_err err = {0};
  int rc = load ? ts_registry_load_by_name(s->fe->registry, seg[3], &err)
                : ts_registry_unload(s->fe->registry, seg[3], &err);
  if (rc)
    answer_error(resp, &err);
  else
    answer_json(resp, 200, json_object());
}

static void on_request(void *user, const ts_http_request *hr,
                       ts_http_response *resp) {
  rest_server *s = user;
  char buf[1024], *seg[MAX_SEGMENTS];
  int n = split_path(hr->url, buf, sizeof buf, seg);
  if (n < 1 || strcmp(seg[0], "v2") != 0) {
    answer_message(resp, 404, "no such endpoint (the API is under /v2)");
  } else if (n == 1) {
    if (!authorize(s, hr, TS_ROLES_INFER, resp) && method_is(hr, "GET", resp))
      handle_server_metadata(resp);
  } else if (n == 3 && strcmp(seg[1], "health") == 0 &&
             (strcmp(seg[2], "live") == 0 || strcmp(seg[2], "ready") == 0)) {
    if (!method_is(hr, "GET", resp)) return;
    int ok = strcmp(seg[2], "live") == 0 || ts_frontend_ready(s->fe);
    answer_json(resp, ok ? 200 : 503, json_pack("{sb}", seg[2], ok));
  } else if (n >= 3 && strcmp(seg[1], "models") == 0) {
    route_model(s, hr, seg, n, resp);
  } else if (n >= 3 && strcmp(seg[1], "repository") == 0) {
    route_repository(s, hr, seg, n, resp);
  } else {
    answer_message(resp, 404, "no such endpoint");
  }
}

int ts_rest_start(ts_frontend *fe, const ts_rest_opts *opts,
                  ts_http_server **out, int *bound_port, ts_err *err) {
  rest_server *s = calloc(1, sizeof *s);
  if (!s) return ts_err_set(err, TS_ENOMEM, "out of memory");
  s->fe = fe;
  s->auth = opts->auth;
  char *cert = NULL, *key = NULL; /* PEM text, copied by the server */
  int rc = ts_rpc_pem_read(opts->tls_cert, "certificate", &cert, err);
  if (rc == TS_OK)
    rc = ts_rpc_pem_read(opts->tls_key, "private key", &key, err);
  ts_http_tls tls = {cert, key};
  if (rc == TS_OK)
    rc = ts_http_start_tls(opts->listen, cert ? &tls : NULL, opts->max_body,
                           on_request, s, free, out, bound_port, err);
  else
    free(s);
  free(cert);
  free(key);
  return rc;
}
