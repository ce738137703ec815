/*
 * tessera.c - the `tessera` command line, a KServe v2 gRPC client.
 *
 *   tessera infer|models|load|unload|health|metadata|status|bench ...
 *
 * It speaks public protocols (proto/inference.proto, grpc.health.v1), so it
 * works against any KServe v2 server; `status` adds Tessera's own admin API
 * (proto/admin.proto: workers, model states, shard map) where the server
 * has it, and says so where it does not.
 *
 * Layout: OPTION_LIST is the one table of options; COMMAND_LIST says which
 * options each command accepts and requires, and which function runs it.
 * main() parses and dispatches, nothing else. A command gets a `cli` with
 * an open channel, makes calls through rpc_call() and prints; it returns 0
 * or a negative TS_E* code with a ts_err saying why.
 *
 * Exit status: 0 success; 1 when the server, the network or a file said no,
 * after printing "tessera: <gRPC status name>: <message>" on stderr; 2 on
 * bad usage.
 *
 * Tensors: inputs come from .npy files and travel as raw_input_contents, or
 * as typed InferTensorContents with --typed. Outputs are decoded from
 * whichever form the server used, checked against their datatype and shape,
 * then printed (NumPy style, summarized above PRINT_THRESHOLD elements) or
 * written to .npy files.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.pb-c.h"
#include "error.h"
#include "health.pb-c.h"
#include "inference.pb-c.h"
#include "npy.h"
#include "rpc.h"
#include "tensor.h"
#include "ts_config.h"

#define KSERVE_SERVICE "/inference.GRPCInferenceService/"
#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define ADMIN_SERVICE "/tessera.admin.v1.Admin/"
#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_REQUESTS 100
#define PRINT_THRESHOLD 1000 /* summarize above this many elements (NumPy's) */
#define PRINT_EDGE 3         /* elements shown at each end when summarizing */

#define EXIT_USAGE 2

/* Prints "tessera: <gRPC status name>: <message>" for a failed command. */
static void report(const ts_err *err) {
  fprintf(stderr, "tessera: %s: %s\n",
          ts_rpc_status_name(ts_err_grpc_status(err->code)),
          err->msg[0] ? err->msg : ts_strerror(err->code));
}

/* ---- options -------------------------------------------------------- */

typedef struct string_list {
  const char **items; /* point into argv */
  int n;
} string_list;

typedef struct options {
  const char *server, *model, *service, *ca, *cert, *key;
  string_list inputs, outputs;
  int typed, help;
  long timeout_ms, concurrency, requests;
} options;

typedef enum {
  ARG_NONE,   /* flag: int set to 1 */
  ARG_STRING, /* const char * */
  ARG_LIST,   /* string_list, repeatable */
  ARG_COUNT,  /* long, a positive integer */
} arg_kind;

/* X(id, long name, kind, options field, metavar, help) */
#define OPTION_LIST(X)                                                       \
  X(SERVER, "server", ARG_STRING, server, "ADDR",                           \
    "server address, HOST:PORT")                                            \
  X(MODEL, "model", ARG_STRING, model, "NAME", "model name")                \
  X(INPUT, "input", ARG_LIST, inputs, "NAME=FILE.npy",                      \
    "input tensor NAME from a .npy file; repeat for each input")            \
  X(OUTPUT, "output", ARG_LIST, outputs, "NAME[=FILE.npy]",                 \
    "ask for output NAME only (repeatable); with =FILE.npy, write it "      \
    "there instead of printing it")                                         \
  X(TYPED, "typed", ARG_NONE, typed, NULL,                                  \
    "send typed InferTensorContents instead of raw_input_contents")         \
  X(TIMEOUT, "timeout-ms", ARG_COUNT, timeout_ms, "N",                      \
    "deadline of each call in milliseconds (default 30000)")                \
  X(CONCURRENCY, "concurrency", ARG_COUNT, concurrency, "C",                \
    "requests in flight at once (default 1)")                               \
  X(REQUESTS, "requests", ARG_COUNT, requests, "N",                         \
    "requests to send in all (default 100)")                                \
  X(SERVICE, "service", ARG_STRING, service, "NAME",                        \
    "health-checked service (default \"\": the whole server)")              \
  X(CA, "ca", ARG_STRING, ca, "FILE",                                       \
    "PEM roots that verify the server; turns on TLS")                       \
  X(CERT, "cert", ARG_STRING, cert, "FILE",                                 \
    "PEM client certificate for mutual TLS (with --key)")                   \
  X(KEY, "key", ARG_STRING, key, "FILE", "PEM private key of --cert")       \
  X(HELP, "help", ARG_NONE, help, NULL, "show this help")

enum option_id {
#define TS_X(id, name, kind, field, metavar, help) OPT_##id,
  OPTION_LIST(TS_X)
#undef TS_X
      N_OPTIONS
};
#define O(id) (1u << OPT_##id)

static const struct option_info {
  const char *name;
  arg_kind kind;
  size_t offset;
  const char *metavar;
  const char *help;
} option_table[N_OPTIONS] = {
#define TS_X(id, name, kind, field, metavar, help) \
  {name, kind, offsetof(options, field), metavar, help},
    OPTION_LIST(TS_X)
#undef TS_X
};

/* ---- commands ------------------------------------------------------- */

typedef struct cli {
  const options *opt;
  ts_rpc_channel *channel;
} cli;

typedef int (*command_fn)(cli *c, ts_err *err);

#define CONNECTION (O(SERVER) | O(TIMEOUT) | O(CA) | O(CERT) | O(KEY) | O(HELP))

/* X(name, accepted options besides CONNECTION, required options, synopsis,
 *   description) */
#define COMMAND_LIST(X)                                                      \
  X(infer, O(MODEL) | O(INPUT) | O(OUTPUT) | O(TYPED),                       \
    O(SERVER) | O(MODEL) | O(INPUT),                                         \
    "--server ADDR --model NAME --input NAME=FILE.npy... "                   \
    "[--output NAME[=FILE.npy]]... [--typed] [--timeout-ms N]",              \
    "Runs one inference (ModelInfer) and prints each output tensor: name, "  \
    "datatype, shape and values, or writes it to a .npy file.")              \
  X(models, 0, O(SERVER), "--server ADDR",                                   \
    "Lists the server's models and their states (RepositoryIndex).")         \
  X(load, O(MODEL), O(SERVER) | O(MODEL), "--server ADDR --model NAME",      \
    "Loads a model from the server's repository (RepositoryModelLoad).")     \
  X(unload, O(MODEL), O(SERVER) | O(MODEL), "--server ADDR --model NAME",    \
    "Unloads a model (RepositoryModelUnload).")                              \
  X(health, O(SERVICE), O(SERVER), "--server ADDR [--service NAME]",         \
    "Asks grpc.health.v1 Check, then ServerLive and ServerReady. Exits 0 "   \
    "only if the server is serving, live and ready.")                        \
  X(metadata, O(MODEL), O(SERVER), "--server ADDR [--model NAME]",           \
    "Shows ServerMetadata, or ModelMetadata with --model (a dim of -1 is "   \
    "variable).")                                                            \
  X(status, 0, O(SERVER), "--server ADDR",                                   \
    "Shows the server, its models and each model's inputs and outputs, "    \
    "then (on Tessera) the workers, model states and the shard map.")     \
  X(bench, O(MODEL) | O(INPUT) | O(TYPED) | O(CONCURRENCY) | O(REQUESTS),   \
    O(SERVER) | O(MODEL) | O(INPUT),                                         \
    "--server ADDR --model NAME --input NAME=FILE.npy... "                   \
    "[--concurrency C] [--requests N] [--typed]",                            \
    "Closed-loop load: keeps C inferences in flight until N are done, then " \
    "prints throughput and p50/p90/p99 latency.")

#define TS_X(name, accepts, requires, synopsis, description) \
  static int cmd_##name(cli *c, ts_err *err);
COMMAND_LIST(TS_X)
#undef TS_X

static const struct command {
  const char *name;
  command_fn run;
  unsigned accepts, requires;
  const char *synopsis, *description;
} command_table[] = {
#define TS_X(name, accepts, requires, synopsis, description) \
  {#name, cmd_##name, (accepts) | CONNECTION, requires, synopsis, description},
    COMMAND_LIST(TS_X)
#undef TS_X
};
#define N_COMMANDS (sizeof command_table / sizeof command_table[0])

/* ---- calls ---------------------------------------------------------- */

static int64_t call_deadline(const cli *c) {
  return ts_now_ms() + c->opt->timeout_ms;
}

/* Calls `method` with a serialized request. On success *resp is the reply,
 * unpacked with resp_desc (free it with protobuf_c_message_free_unpacked).
 * On failure err->msg holds the server's status details. */
static int rpc_call_bytes(cli *c, const char *method, const uint8_t *req,
                          size_t len, const ProtobufCMessageDescriptor *resp_desc,
                          ProtobufCMessage **resp, ts_err *err) {
  uint8_t *bytes = NULL;
  size_t n = 0;
  *resp = NULL;
  int rc = ts_rpc_call_sync(c->channel, method, req, len, call_deadline(c),
                            &bytes, &n, err);
  if (rc) return rc;
  *resp = protobuf_c_message_unpack(resp_desc, NULL, n, bytes);
  free(bytes);
  if (!*resp)
    return ts_err_set(err, TS_EIO, "%s: cannot decode the server's %s",
                      method, resp_desc->name);
  return TS_OK;
}

/* rpc_call_bytes for a request message. */
static int rpc_call(cli *c, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCMessage **resp, ts_err *err) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return ts_err_set(err, TS_ENOMEM, "cannot allocate the request");
  protobuf_c_message_pack(req, buf);
  int rc = rpc_call_bytes(c, method, buf, len, resp_desc, resp, err);
  free(buf);
  return rc;
}

/* ---- tensors on the wire --------------------------------------------- */

/* Typed contents (InferTensorContents): X(dtype, contents field, C type of
 * the tensor's elements). FP16 and BYTES have no numeric field. */
#define TYPED_LIST(X)               \
  X(FLOAT, fp32_contents, float)    \
  X(DOUBLE, fp64_contents, double)  \
  X(INT8, int_contents, int8_t)     \
  X(INT16, int_contents, int16_t)   \
  X(INT32, int_contents, int32_t)   \
  X(INT64, int64_contents, int64_t) \
  X(UINT8, uint_contents, uint8_t)  \
  X(UINT16, uint_contents, uint16_t) \
  X(UINT32, uint_contents, uint32_t) \
  X(UINT64, uint64_contents, uint64_t) \
  X(BOOL, bool_contents, uint8_t)

/* put: copies t's elements into c's field (malloc'd; typed_free frees).
 * count: how many values c's field holds. get: copies them into t, whose
 * element count the caller has checked against count. */
#define TS_X(dtype, field, ctype)                                           \
  static int typed_put_##dtype(const ts_tensor *t,                          \
                               Inference__InferTensorContents *c) {         \
    size_t n = (size_t)ts_tensor_numel(t);                                  \
    c->field = malloc((n ? n : 1) * sizeof *c->field);                      \
    if (!c->field) return TS_ENOMEM;                                        \
    for (size_t i = 0; i < n; i++)                                          \
      c->field[i] = ((const ctype *)t->data)[i];                            \
    c->n_##field = n;                                                       \
    return TS_OK;                                                           \
  }                                                                         \
  static size_t typed_count_##dtype(const Inference__InferTensorContents *c) { \
    return c->n_##field;                                                    \
  }                                                                         \
  static void typed_get_##dtype(const Inference__InferTensorContents *c,    \
                                ts_tensor *t) {                             \
    for (size_t i = 0; i < c->n_##field; i++)                               \
      ((ctype *)t->data)[i] = (ctype)c->field[i];                           \
  }
TYPED_LIST(TS_X)
#undef TS_X

static const struct typed_codec {
  ts_dtype dtype;
  const char *field;
  int (*put)(const ts_tensor *t, Inference__InferTensorContents *c);
  size_t (*count)(const Inference__InferTensorContents *c);
  void (*get)(const Inference__InferTensorContents *c, ts_tensor *t);
} typed_codecs[] = {
#define TS_X(dtype, field, ctype) \
  {TS_DTYPE_##dtype, #field, typed_put_##dtype, typed_count_##dtype, typed_get_##dtype},
    TYPED_LIST(TS_X)
#undef TS_X
};

static const struct typed_codec *typed_codec_find(ts_dtype dtype) {
  for (size_t i = 0; i < sizeof typed_codecs / sizeof typed_codecs[0]; i++)
    if (typed_codecs[i].dtype == dtype) return &typed_codecs[i];
  return NULL;
}

/* Frees what typed_put_* allocated. */
static void typed_free(Inference__InferTensorContents *c) {
  free(c->bool_contents);
  free(c->int_contents);
  free(c->int64_contents);
  free(c->uint_contents);
  free(c->uint64_contents);
  free(c->fp32_contents);
  free(c->fp64_contents);
}

/* Named tensors loaded from NAME=FILE.npy specs. */
typedef struct tensor_set {
  int n;
  char **names;       /* malloc'd */
  ts_tensor *tensors; /* each owns its data */
} tensor_set;

static void tensor_set_free(tensor_set *s) {
  for (int i = 0; i < s->n; i++) {
    free(s->names[i]);
    ts_tensor_free(&s->tensors[i]);
  }
  free(s->names);
  free(s->tensors);
  memset(s, 0, sizeof *s);
}

/* Splits "NAME=FILE" (or "NAME" when file_optional): *name is malloc'd
 * (caller frees), *file points into spec or is NULL. */
static int split_spec(const char *spec, bool file_optional, char **name,
                      const char **file, ts_err *err) {
  const char *eq = strchr(spec, '=');
  *name = NULL;
  *file = eq ? eq + 1 : NULL;
  size_t n = eq ? (size_t)(eq - spec) : strlen(spec);
  if (n == 0 || (eq && !eq[1]) || (!eq && !file_optional))
    return ts_err_set(err, TS_EINVAL, "'%s' is not of the form NAME=FILE%s",
                      spec, file_optional ? " or NAME" : "");
  *name = strndup(spec, n);
  if (!*name) return ts_err_set(err, TS_ENOMEM, "out of memory");
  return TS_OK;
}

/* Loads every --input NAME=FILE.npy into *s (tensor_set_free releases). */
static int load_inputs(const string_list *specs, tensor_set *s, ts_err *err) {
  memset(s, 0, sizeof *s);
  s->names = calloc((size_t)specs->n + 1, sizeof *s->names);
  s->tensors = calloc((size_t)specs->n + 1, sizeof *s->tensors);
  if (!s->names || !s->tensors) {
    tensor_set_free(s);
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  for (int i = 0; i < specs->n; i++) {
    const char *file;
    int rc = split_spec(specs->items[i], false, &s->names[i], &file, err);
    if (!rc) rc = ts_npy_read(file, &s->tensors[i], err);
    s->n = i + 1;
    if (rc) {
      if (rc == TS_EINVAL || rc == TS_EUNSUPPORTED)
        ts_err_prefix(err, "input '%s'", s->names[i] ? s->names[i] : "?");
      tensor_set_free(s);
      return rc;
    }
  }
  return TS_OK;
}

/* Serializes a ModelInferRequest: the inputs as raw_input_contents (or typed
 * contents when `typed`), and one requested output per --output spec.
 * *out is malloc'd (caller frees). */
static int encode_infer_request(const options *opt, const tensor_set *in,
                                uint8_t **out, size_t *out_len, ts_err *err) {
  size_t n = (size_t)in->n, m = (size_t)opt->outputs.n;
  Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
  Inference__ModelInferRequest__InferInputTensor *inputs =
      calloc(n + 1, sizeof *inputs);
  Inference__ModelInferRequest__InferInputTensor **input_ptrs =
      calloc(n + 1, sizeof *input_ptrs);
  Inference__InferTensorContents *contents = calloc(n + 1, sizeof *contents);
  ProtobufCBinaryData *raw = calloc(n + 1, sizeof *raw);
  Inference__ModelInferRequest__InferRequestedOutputTensor *outputs =
      calloc(m + 1, sizeof *outputs);
  Inference__ModelInferRequest__InferRequestedOutputTensor **output_ptrs =
      calloc(m + 1, sizeof *output_ptrs);
  char **output_names = calloc(m + 1, sizeof *output_names);
  int rc = TS_OK;
  *out = NULL;
  if (!inputs || !input_ptrs || !contents || !raw || !outputs ||
      !output_ptrs || !output_names) {
    rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    const ts_tensor *t = &in->tensors[i];
    Inference__ModelInferRequest__InferInputTensor *x = &inputs[i];
    inference__model_infer_request__infer_input_tensor__init(x);
    inference__infer_tensor_contents__init(&contents[i]);
    x->name = in->names[i];
    x->datatype = (char *)ts_dtype_kserve_name(t->dtype);
    x->n_shape = (size_t)t->rank;
    x->shape = (int64_t *)t->dims;
    input_ptrs[i] = x;
    if (!opt->typed) {
      raw[i].len = t->nbytes;
      raw[i].data = t->data;
      continue;
    }
    const struct typed_codec *codec = typed_codec_find(t->dtype);
    if (!codec) {
      rc = ts_err_set(err, TS_EUNSUPPORTED,
                      "input '%s': %s has no typed contents field in KServe "
                      "v2; send it without --typed",
                      x->name, x->datatype);
      goto done;
    }
    if (codec->put(t, &contents[i])) {
      rc = ts_err_set(err, TS_ENOMEM, "input '%s': out of memory", x->name);
      goto done;
    }
    x->contents = &contents[i];
  }
  for (size_t j = 0; j < m; j++) {
    const char *file;
    rc = split_spec(opt->outputs.items[j], true, &output_names[j], &file, err);
    if (rc) goto done;
    inference__model_infer_request__infer_requested_output_tensor__init(
        &outputs[j]);
    outputs[j].name = output_names[j];
    output_ptrs[j] = &outputs[j];
  }
  req.model_name = (char *)opt->model;
  req.n_inputs = n;
  req.inputs = input_ptrs;
  req.n_outputs = m;
  req.outputs = output_ptrs;
  if (!opt->typed) {
    req.n_raw_input_contents = n;
    req.raw_input_contents = raw;
  }
  *out_len = inference__model_infer_request__get_packed_size(&req);
  *out = malloc(*out_len ? *out_len : 1);
  if (!*out) {
    rc = ts_err_set(err, TS_ENOMEM, "cannot allocate %zu bytes", *out_len);
    goto done;
  }
  inference__model_infer_request__pack(&req, *out);
done:
  for (size_t i = 0; contents && i < n; i++) typed_free(&contents[i]);
  for (size_t j = 0; output_names && j < m; j++) free(output_names[j]);
  free(inputs);
  free(input_ptrs);
  free(contents);
  free(raw);
  free(outputs);
  free(output_ptrs);
  free(output_names);
  return rc;
}

/* Output i of resp as a tensor: a view of resp's raw bytes, or an owned
 * copy of its typed contents. Checks datatype, shape and sizes; the caller
 * has checked that raw_output_contents is empty or one per output. */
static int decode_output(const Inference__ModelInferResponse *resp, size_t i,
                         ts_tensor *t, ts_err *err) {
  const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
  ts_dtype dtype = ts_dtype_from_kserve(o->datatype);
  char shape[256];
  memset(t, 0, sizeof *t);
  if (!ts_dtype_is_numeric(dtype))
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "output '%s': datatype '%s' is not supported", o->name,
                      o->datatype);
  if (o->n_shape > TS_MAX_RANK)
    return ts_err_set(err, TS_EIO, "output '%s': rank %zu is above %d",
                      o->name, o->n_shape, TS_MAX_RANK);
  int rank = (int)o->n_shape;
  ts_shape_str(o->shape, rank, shape, sizeof shape);
  int64_t nbytes = ts_shape_nbytes(dtype, o->shape, rank);
  if (nbytes < 0)
    return ts_err_set(err, TS_EIO, "output '%s': shape %s is invalid",
                      o->name, shape);
  if (resp->n_raw_output_contents) {
    const ProtobufCBinaryData *raw = &resp->raw_output_contents[i];
    if ((int64_t)raw->len != nbytes)
      return ts_err_set(err, TS_EIO,
                        "output '%s': %zu raw bytes where %s %s needs %lld",
                        o->name, raw->len, o->datatype, shape,
                        (long long)nbytes);
    return ts_tensor_view(t, dtype, o->shape, rank, raw->data, err);
  }
  const struct typed_codec *codec = typed_codec_find(dtype);
  if (!o->contents || !codec)
    return ts_err_set(err, TS_EIO, "output '%s' has no contents", o->name);
  int64_t numel = ts_shape_numel(o->shape, rank);
  if ((int64_t)codec->count(o->contents) != numel)
    return ts_err_set(err, TS_EIO,
                      "output '%s': %zu values in %s where shape %s needs %lld",
                      o->name, codec->count(o->contents), codec->field, shape,
                      (long long)numel);
  int rc = ts_tensor_alloc(t, dtype, o->shape, rank, err);
  if (rc) return rc;
  codec->get(o->contents, t);
  return TS_OK;
}

/* ---- printing tensors ------------------------------------------------- */

typedef void (*format_fn)(const void *data, int64_t i, char *buf, size_t size);

/* X(dtype, C type, printf format, type it is printed as) */
#define FORMAT_LIST(X)                         \
  X(FLOAT, float, "%.7g", double)              \
  X(DOUBLE, double, "%.16g", double)           \
  X(INT8, int8_t, "%d", int)                   \
  X(INT16, int16_t, "%d", int)                 \
  X(INT32, int32_t, "%d", int)                 \
  X(INT64, int64_t, "%lld", long long)         \
  X(UINT8, uint8_t, "%u", unsigned)            \
  X(UINT16, uint16_t, "%u", unsigned)          \
  X(UINT32, uint32_t, "%u", unsigned)          \
  X(UINT64, uint64_t, "%llu", unsigned long long)

#define TS_X(dtype, ctype, fmt, as)                                   \
  static void format_##dtype(const void *data, int64_t i, char *buf,  \
                             size_t size) {                           \
    snprintf(buf, size, fmt, (as)((const ctype *)data)[i]);           \
  }
FORMAT_LIST(TS_X)
#undef TS_X

static void format_BOOL(const void *data, int64_t i, char *buf, size_t size) {
  snprintf(buf, size, "%s", ((const uint8_t *)data)[i] ? "True" : "False");
}

/* IEEE 754 binary16 to double, for printing only. */
static void format_FLOAT16(const void *data, int64_t i, char *buf,
                           size_t size) {
  uint16_t h = ((const uint16_t *)data)[i];
  int exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  double v;
  if (exp == 0x1f)
    v = frac ? NAN : INFINITY;
  else if (exp)
    v = ldexp(1.0 + frac / 1024.0, exp - 15);
  else
    v = ldexp(frac / 1024.0, -14);
  snprintf(buf, size, "%.5g", (h >> 15) ? -v : v);
}

static const struct formatter {
  ts_dtype dtype;
  format_fn format;
} formatters[] = {
#define TS_X(dtype, ctype, fmt, as) {TS_DTYPE_##dtype, format_##dtype},
    FORMAT_LIST(TS_X)
#undef TS_X
    {TS_DTYPE_BOOL, format_BOOL},
    {TS_DTYPE_FLOAT16, format_FLOAT16},
};

static format_fn formatter_find(ts_dtype dtype) {
  for (size_t i = 0; i < sizeof formatters / sizeof formatters[0]; i++)
    if (formatters[i].dtype == dtype) return formatters[i].format;
  return NULL;
}

/* Prints dims[dim..] of t starting at element `offset`, NumPy style:
 * nested brackets, one innermost row per line, and when summarizing only
 * PRINT_EDGE entries at each end of a long dim. */
static void print_dim(FILE *f, const ts_tensor *t, format_fn format, int dim,
                      int64_t offset, bool summarize) {
  int64_t n = t->dims[dim], stride = 1;
  for (int d = dim + 1; d < t->rank; d++) stride *= t->dims[d];
  bool innermost = dim == t->rank - 1;
  fputc('[', f);
  for (int64_t i = 0; i < n; i++) {
    if (i) {
      if (innermost)
        fputs(", ", f);
      else
        fprintf(f, ",\n%*s", dim + 1, "");
    }
    if (summarize && n > 2 * PRINT_EDGE && i == PRINT_EDGE) {
      fputs("...", f);
      i = n - PRINT_EDGE - 1;
      continue;
    }
    if (innermost) {
      char buf[64];
      format(t->data, offset + i, buf, sizeof buf);
      fputs(buf, f);
    } else {
      print_dim(f, t, format, dim + 1, offset + i * stride, summarize);
    }
  }
  fputc(']', f);
}

/* "NAME DATATYPE [dims]" and then the values. */
static void print_tensor(FILE *f, const char *name, const ts_tensor *t) {
  char shape[256];
  format_fn format = formatter_find(t->dtype);
  fprintf(f, "%s %s %s\n", name, ts_dtype_kserve_name(t->dtype),
          ts_shape_str(t->dims, t->rank, shape, sizeof shape));
  if (!format) return;
  if (t->rank == 0) {
    char buf[64];
    format(t->data, 0, buf, sizeof buf);
    fputs(buf, f);
  } else {
    print_dim(f, t, format, 0, 0, ts_tensor_numel(t) > PRINT_THRESHOLD);
  }
  fputc('\n', f);
}

/* A table of text cells printed in left-aligned columns. Cells are added
 * row by row (row 0 is the header); each is a malloc'd copy, freed by
 * table_print. An allocation failure drops the table, never crashes. */
#define TABLE_MAX_COLS 12
typedef struct text_table {
  int ncols, n, cap;
  char **cells;
  bool failed;
} text_table;

static void table_cell(text_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void table_cell(text_table *t, const char *fmt, ...) {
  if (t->failed) return;
  if (t->n == t->cap) {
    int cap = t->cap ? 2 * t->cap : 64;
    char **cells = realloc(t->cells, (size_t)cap * sizeof *cells);
    if (!cells) {
      t->failed = true;
      return;
    }
    t->cells = cells;
    t->cap = cap;
  }
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&t->cells[t->n], fmt, ap) < 0)
    t->failed = true;
  else
    t->n++;
  va_end(ap);
}

/* Starts a table whose columns are the given header cells. */
#define TABLE_HEADER(t, ...)                                               \
  do {                                                                      \
    static const char *const header_[] = {__VA_ARGS__};                    \
    (t)->ncols = (int)(sizeof header_ / sizeof header_[0]);                 \
    for (int i_ = 0; i_ < (t)->ncols; i_++) table_cell((t), "%s", header_[i_]); \
  } while (0)

/* Prints the table (each line after `indent`) and frees its cells. */
static void table_print(text_table *t, const char *indent) {
  size_t width[TABLE_MAX_COLS] = {0};
  TS_ASSERT(t->ncols > 0 && t->ncols <= TABLE_MAX_COLS);
  if (t->failed) fprintf(stdout, "%s(out of memory)\n", indent);
  for (int i = 0; !t->failed && i < t->n; i++) {
    size_t w = strlen(t->cells[i]);
    if (w > width[i % t->ncols]) width[i % t->ncols] = w;
  }
  for (int i = 0; !t->failed && i < t->n; i++) {
    int col = i % t->ncols;
    if (col == 0) fputs(indent, stdout);
    if (col == t->ncols - 1 || i == t->n - 1)
      printf("%s\n", t->cells[i]);
    else
      printf("%-*s  ", (int)width[col], t->cells[i]);
  }
  for (int i = 0; i < t->n; i++) free(t->cells[i]);
  free(t->cells);
  memset(t, 0, sizeof *t);
}

/* "1.5 MB" */
static void format_bytes(uint64_t bytes, char *buf, size_t size) {
  static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = (double)bytes;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024;
    u++;
  }
  snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

/* ---- infer ------------------------------------------------------------ */

/* The FILE of the --output spec naming `name`, or NULL (print it). Sets
 * *requested when some spec names it. */
static const char *output_file(const options *opt, const char *name,
                               bool *requested) {
  size_t n = strlen(name);
  *requested = false;
  for (int j = 0; j < opt->outputs.n; j++) {
    const char *spec = opt->outputs.items[j];
    if (strncmp(spec, name, n) != 0 || (spec[n] != '=' && spec[n] != '\0'))
      continue;
    *requested = true;
    return spec[n] == '=' ? spec + n + 1 : NULL;
  }
  return NULL;
}

/* Prints or writes every output of resp, then checks that each requested
 * output came back. */
static int show_infer_response(const options *opt,
                               const Inference__ModelInferResponse *resp,
                               ts_err *err) {
  if (resp->n_raw_output_contents &&
      resp->n_raw_output_contents != resp->n_outputs)
    return ts_err_set(err, TS_EIO,
                      "response has %zu raw_output_contents for %zu outputs",
                      resp->n_raw_output_contents, resp->n_outputs);
  for (size_t i = 0; i < resp->n_outputs; i++) {
    ts_tensor t;
    int rc = decode_output(resp, i, &t, err);
    if (rc) return rc;
    bool requested;
    const char *name = resp->outputs[i]->name;
    const char *file = output_file(opt, name, &requested);
    if (file) {
      rc = ts_npy_write(file, &t, err);
      if (!rc) {
        char shape[256];
        printf("%s %s %s -> %s\n", name, ts_dtype_kserve_name(t.dtype),
               ts_shape_str(t.dims, t.rank, shape, sizeof shape), file);
      }
    } else {
      print_tensor(stdout, name, &t);
    }
    ts_tensor_free(&t);
    if (rc) return rc;
  }
  for (int j = 0; j < opt->outputs.n; j++) {
    const char *spec = opt->outputs.items[j];
    size_t n = strcspn(spec, "=");
    size_t i = 0;
    while (i < resp->n_outputs &&
           (strlen(resp->outputs[i]->name) != n ||
            strncmp(resp->outputs[i]->name, spec, n) != 0))
      i++;
    if (i == resp->n_outputs)
      return ts_err_set(err, TS_EIO,
                        "the server did not return requested output '%.*s'",
                        (int)n, spec);
  }
  return TS_OK;
}

static int cmd_infer(cli *c, ts_err *err) {
  tensor_set in;
  uint8_t *req = NULL;
  size_t len = 0;
  ProtobufCMessage *resp = NULL;
  int rc = load_inputs(&c->opt->inputs, &in, err);
  if (rc) return rc;
  rc = encode_infer_request(c->opt, &in, &req, &len, err);
  if (!rc)
    rc = rpc_call_bytes(c, KSERVE_SERVICE "ModelInfer", req, len,
                        &inference__model_infer_response__descriptor, &resp,
                        err);
  if (!rc)
    rc = show_infer_response(c->opt, (Inference__ModelInferResponse *)resp,
                             err);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  free(req);
  tensor_set_free(&in);
  return rc;
}

/* ---- repository --------------------------------------------------------- */

static int fetch_index(cli *c, Inference__RepositoryIndexResponse **index,
                       ts_err *err) {
  Inference__RepositoryIndexRequest req = INFERENCE__REPOSITORY_INDEX_REQUEST__INIT;
  return rpc_call(c, KSERVE_SERVICE "RepositoryIndex", &req.base,
                  &inference__repository_index_response__descriptor,
                  (ProtobufCMessage **)index, err);
}

static void print_index(const Inference__RepositoryIndexResponse *index) {
  text_table t = {0};
  TABLE_HEADER(&t, "NAME", "VERSION", "STATE", "REASON");
  for (size_t i = 0; i < index->n_models; i++) {
    const Inference__RepositoryIndexResponse__ModelIndex *m = index->models[i];
    table_cell(&t, "%s", m->name);
    table_cell(&t, "%s", m->version[0] ? m->version : "-");
    table_cell(&t, "%s", m->state[0] ? m->state : "-");
    table_cell(&t, "%s", m->reason);
  }
  table_print(&t, "");
}

static int cmd_models(cli *c, ts_err *err) {
  Inference__RepositoryIndexResponse *index;
  int rc = fetch_index(c, &index, err);
  if (rc) return rc;
  print_index(index);
  protobuf_c_message_free_unpacked(&index->base, NULL);
  return TS_OK;
}

/* RepositoryModelLoad and RepositoryModelUnload: requests of one layout
 * (repository_name, model_name, parameters), so one function fills either
 * through its descriptor. */
static int repository_action(cli *c, const char *method,
                             const ProtobufCMessageDescriptor *req_desc,
                             const ProtobufCMessageDescriptor *resp_desc,
                             const char *done, ts_err *err) {
  union {
    Inference__RepositoryModelLoadRequest load;
    Inference__RepositoryModelUnloadRequest unload;
  } req;
  ProtobufCMessage *resp;
  const ProtobufCFieldDescriptor *name =
      protobuf_c_message_descriptor_get_field_by_name(req_desc, "model_name");
  TS_ASSERT(name && req_desc->sizeof_message <= sizeof req);
  protobuf_c_message_init(req_desc, &req);
  *(const char **)((char *)&req + name->offset) = c->opt->model;
  int rc = rpc_call(c, method, (const ProtobufCMessage *)&req, resp_desc,
                    &resp, err);
  if (rc) return rc;
  protobuf_c_message_free_unpacked(resp, NULL);
  printf("%s %s\n", done, c->opt->model);
  return TS_OK;
}

static int cmd_load(cli *c, ts_err *err) {
  return repository_action(
      c, KSERVE_SERVICE "RepositoryModelLoad",
      &inference__repository_model_load_request__descriptor,
      &inference__repository_model_load_response__descriptor, "loaded", err);
}

static int cmd_unload(cli *c, ts_err *err) {
  return repository_action(
      c, KSERVE_SERVICE "RepositoryModelUnload",
      &inference__repository_model_unload_request__descriptor,
      &inference__repository_model_unload_response__descriptor, "unloaded",
      err);
}

/* ---- health -------------------------------------------------------------- */

/* Asks a KServe yes/no question (ServerLive, ServerReady). *answer is -1 if
 * the server has no KServe service (UNIMPLEMENTED), e.g. a worker. */
static int ask_flag(cli *c, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, int *answer,
                    ts_err *err) {
  ProtobufCMessage *resp;
  int rc = rpc_call(c, method, req, resp_desc, &resp, err);
  *answer = -1;
  if (rc == TS_EUNSUPPORTED) return TS_OK;
  if (rc) return rc;
  /* Both replies are { bool = 1; }: read it through the descriptor. */
  const ProtobufCFieldDescriptor *field = &resp_desc->fields[0];
  *answer = *(const protobuf_c_boolean *)((const char *)resp + field->offset);
  protobuf_c_message_free_unpacked(resp, NULL);
  return TS_OK;
}

static const char *flag_text(int answer) {
  return answer < 0 ? "n/a (no KServe service)" : answer ? "true" : "false";
}

static int cmd_health(cli *c, ts_err *err) {
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp;
  req.service = (char *)(c->opt->service ? c->opt->service : "");
  int rc = rpc_call(c, HEALTH_CHECK, &req.base,
                    &grpc__health__v1__health_check_response__descriptor,
                    (ProtobufCMessage **)&resp, err);
  if (rc) return rc;
  int status = resp->status;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
      &grpc__health__v1__health_check_response__serving_status__descriptor,
      status);
  const char *status_text = v ? v->name : "UNKNOWN";
  printf("health: %s\n", status_text);

  Inference__ServerLiveRequest live_req = INFERENCE__SERVER_LIVE_REQUEST__INIT;
  Inference__ServerReadyRequest ready_req = INFERENCE__SERVER_READY_REQUEST__INIT;
  int live, ready = -1;
  rc = ask_flag(c, KSERVE_SERVICE "ServerLive", &live_req.base,
                &inference__server_live_response__descriptor, &live, err);
  if (!rc && live >= 0)
    rc = ask_flag(c, KSERVE_SERVICE "ServerReady", &ready_req.base,
                  &inference__server_ready_response__descriptor, &ready, err);
  if (rc) return rc;
  printf("live: %s\nready: %s\n", flag_text(live), flag_text(ready));
  if (status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    return ts_err_set(err, TS_EUNAVAILABLE, "health status is %s",
                      status_text);
  if (live == 0 || ready == 0)
    return ts_err_set(err, TS_EUNAVAILABLE, "the server is %s",
                      live == 0 ? "not live" : "not ready");
  return TS_OK;
}

/* ---- metadata and status ------------------------------------------------ */

/* "label: a, b, c" on one line. */
static void print_list(const char *label, char *const *items, size_t n) {
  printf("%s:", label);
  for (size_t i = 0; i < n; i++) printf("%s %s", i ? "," : "", items[i]);
  printf("\n");
}

static int show_server_metadata(cli *c, ts_err *err) {
  Inference__ServerMetadataRequest req = INFERENCE__SERVER_METADATA_REQUEST__INIT;
  Inference__ServerMetadataResponse *resp;
  int rc = rpc_call(c, KSERVE_SERVICE "ServerMetadata", &req.base,
                    &inference__server_metadata_response__descriptor,
                    (ProtobufCMessage **)&resp, err);
  if (rc) return rc;
  printf("server: %s %s\n", resp->name, resp->version);
  print_list("extensions", resp->extensions, resp->n_extensions);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return TS_OK;
}

static void print_tensor_metadata(
    const char *title, size_t n,
    Inference__ModelMetadataResponse__TensorMetadata *const *tensors) {
  text_table t = {0};
  printf("%s:\n", title);
  TABLE_HEADER(&t, "NAME", "DATATYPE", "SHAPE");
  for (size_t i = 0; i < n; i++) {
    char shape[256];
    int rank = tensors[i]->n_shape > 64 ? 64 : (int)tensors[i]->n_shape;
    table_cell(&t, "%s", tensors[i]->name);
    table_cell(&t, "%s", tensors[i]->datatype);
    table_cell(&t, "%s",
               ts_shape_str(tensors[i]->shape, rank, shape, sizeof shape));
  }
  table_print(&t, "  ");
}

static int show_model_metadata(cli *c, const char *model, ts_err *err) {
  Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
  Inference__ModelMetadataResponse *resp;
  req.name = (char *)model;
  int rc = rpc_call(c, KSERVE_SERVICE "ModelMetadata", &req.base,
                    &inference__model_metadata_response__descriptor,
                    (ProtobufCMessage **)&resp, err);
  if (rc) return rc;
  printf("model: %s\nplatform: %s\n", resp->name, resp->platform);
  print_list("versions", resp->versions, resp->n_versions);
  print_tensor_metadata("inputs", resp->n_inputs, resp->inputs);
  print_tensor_metadata("outputs", resp->n_outputs, resp->outputs);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return TS_OK;
}

static int cmd_metadata(cli *c, ts_err *err) {
  if (c->opt->model) return show_model_metadata(c, c->opt->model, err);
  return show_server_metadata(c, err);
}

/* `status` sections: the models, then each ready model's metadata. A model
 * whose metadata fails is reported inline; the others still show. */
static int show_models_status(cli *c, ts_err *err) {
  Inference__RepositoryIndexResponse *index;
  int rc = fetch_index(c, &index, err);
  if (rc) return rc;
  print_index(index);
  for (size_t i = 0; i < index->n_models; i++) {
    const Inference__RepositoryIndexResponse__ModelIndex *m = index->models[i];
    if (strcmp(m->state, "READY") != 0) continue;
    ts_err model_err;
    printf("\n");
    if (show_model_metadata(c, m->name, &model_err))
      printf("model: %s\n  metadata unavailable: %s\n", m->name,
             model_err.msg);
  }
  protobuf_c_message_free_unpacked(&index->base, NULL);
  return TS_OK;
}

static void print_workers(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  text_table t = {0};
  TABLE_HEADER(&t, "WORKER", "ADDRESS", "STATE", "THREADS", "PLANNED", "LIMIT",
               "IN FLIGHT", "CALLS", "FAILURES");
  for (size_t i = 0; i < st->n_workers; i++) {
    const Tessera__Admin__V1__WorkerState *w = st->workers[i];
    char planned[32], limit[32];
    format_bytes(w->memory_planned, planned, sizeof planned);
    format_bytes(w->memory_limit, limit, sizeof limit);
    table_cell(&t, "%d", w->index);
    table_cell(&t, "%s", w->address);
    /* "up" stays lower case, as scripts read it; the others stand out. */
    if (w->state[0] && strcmp(w->state, "UP") != 0)
      table_cell(&t, "%s", w->state);
    else
      table_cell(&t, "%s", w->up ? "up" : "DOWN");
    table_cell(&t, "%d", w->threads);
    table_cell(&t, "%s", planned);
    table_cell(&t, "%s", w->memory_limit ? limit : "none");
    table_cell(&t, "%d", w->outstanding);
    table_cell(&t, "%llu", (unsigned long long)w->calls);
    table_cell(&t, "%llu", (unsigned long long)w->failures);
  }
  table_print(&t, "");
}

static void print_model_states(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  text_table t = {0};
  TABLE_HEADER(&t, "MODEL", "STATE", "STRATEGY", "STAGES", "REPLICAS",
               "WEIGHTS", "REQUESTS", "FAILURES");
  for (size_t i = 0; i < st->n_models; i++) {
    const Tessera__Admin__V1__ModelState *m = st->models[i];
    char weights[32];
    format_bytes(m->weight_bytes, weights, sizeof weights);
    table_cell(&t, "%s", m->name);
    table_cell(&t, "%s", m->state);
    if (m->n_members) {
      table_cell(&t, "ensemble(%s) of %zu", m->fuse, m->n_members);
    } else {
      table_cell(&t, "%s", m->strategy);
    }
    table_cell(&t, "%d", m->stages);
    table_cell(&t, "%d", m->replicas);
    table_cell(&t, "%s", weights);
    table_cell(&t, "%llu", (unsigned long long)m->requests);
    table_cell(&t, "%llu", (unsigned long long)m->failures);
  }
  table_print(&t, "");
}

static void print_shards(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  text_table t = {0};
  TABLE_HEADER(&t, "MODEL", "STAGE", "SHARD", "LABEL", "BYTES", "WORKERS",
               "MOVES");
  for (size_t i = 0; i < st->n_shards; i++) {
    const Tessera__Admin__V1__ShardPlacement *s = st->shards[i];
    char bytes[32], workers[256] = "";
    size_t off = 0;
    format_bytes(s->bytes, bytes, sizeof bytes);
    for (size_t w = 0; w < s->n_workers && off < sizeof workers; w++)
      off += (size_t)snprintf(
          workers + off, sizeof workers - off, "%s%d%s%s%s", w ? "," : "",
          s->workers[w], w < s->n_replica_states ? "(" : "",
          w < s->n_replica_states ? s->replica_states[w] : "",
          w < s->n_replica_states ? ")" : "");
    table_cell(&t, "%s", s->model);
    table_cell(&t, "%d", s->stage);
    table_cell(&t, "%d", s->shard);
    table_cell(&t, "%s", s->label);
    table_cell(&t, "%s", bytes);
    table_cell(&t, "%s", workers);
    table_cell(&t, "%u", s->moves);
  }
  table_print(&t, "");
}

/* Tessera's own admin API (proto/admin.proto): workers, model states and
 * the shard map. Other KServe servers lack it; that is not an error. */
static int show_cluster_status(cli *c, ts_err *err) {
  Tessera__Admin__V1__ClusterStatusRequest req =
      TESSERA__ADMIN__V1__CLUSTER_STATUS_REQUEST__INIT;
  Tessera__Admin__V1__ClusterStatusResponse *st;
  int rc = rpc_call(c, ADMIN_SERVICE "ClusterStatus", &req.base,
                    &tessera__admin__v1__cluster_status_response__descriptor,
                    (ProtobufCMessage **)&st, err);
  if (rc == TS_EUNSUPPORTED) {
    printf("(this server has no Tessera admin API)\n");
    return TS_OK;
  }
  if (rc) return rc;
  print_workers(st);
  printf("\n");
  print_model_states(st);
  printf("\n");
  print_shards(st);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  return TS_OK;
}

/* Sections of `tessera status`, in order. */
static const struct status_section {
  const char *title;
  int (*show)(cli *c, ts_err *err);
} status_sections[] = {
    {"server", show_server_metadata},
    {"models", show_models_status},
    {"cluster", show_cluster_status},
};

static int cmd_status(cli *c, ts_err *err) {
  for (size_t i = 0; i < sizeof status_sections / sizeof status_sections[0];
       i++) {
    printf("%s== %s ==\n", i ? "\n" : "", status_sections[i].title);
    int rc = status_sections[i].show(c, err);
    if (rc) return rc;
  }
  return TS_OK;
}

/* ---- bench ---------------------------------------------------------------- */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A closed loop of `concurrency` calls: the main thread starts the first
 * ones, and each completion (on the client's poller thread) records its
 * outcome and starts the next call right there, so the load generator adds
 * no thread hand-over per request to what it measures. Counters below
 * `lock` are guarded by it; the rest is fixed during the run. */
typedef struct bench {
  pthread_mutex_t lock;
  pthread_cond_t finished;
  long started, completed, errors;
  long n_ok;
  double *latency_ms; /* one per successful call, in completion order */
  int first_status;
  char first_error[TS_ERR_MSG_MAX];
  cli *c;
  ts_rpc_client *client;
  const uint8_t *req;
  size_t len;
  struct bench_call *calls; /* one per request */
} bench;

typedef struct bench_call {
  bench *b;
  int64_t start_ns;
} bench_call;

/* Records one outcome; returns nonzero once every request has finished. */
static int bench_record(bench *b, int64_t start_ns, int status,
                        const char *message) {
  double ms = (double)(now_ns() - start_ns) / 1e6;
  pthread_mutex_lock(&b->lock);
  if (status == 0) {
    b->latency_ms[b->n_ok++] = ms;
  } else if (b->errors++ == 0) {
    b->first_status = status;
    snprintf(b->first_error, sizeof b->first_error, "%s",
             message ? message : "");
  }
  int all = ++b->completed == b->c->opt->requests;
  if (all) pthread_cond_signal(&b->finished);
  pthread_mutex_unlock(&b->lock);
  return all;
}

static void bench_done(void *user, const ts_rpc_result *r);

/* Starts the next request, if any is left; a call that cannot start is
 * counted as failed and the next one is tried. */
static void bench_start_next(bench *b) {
  for (;;) {
    pthread_mutex_lock(&b->lock);
    long i = b->started < b->c->opt->requests ? b->started++ : -1;
    pthread_mutex_unlock(&b->lock);
    if (i < 0) return;
    bench_call *call = &b->calls[i];
    call->b = b;
    call->start_ns = now_ns();
    /* On a non-zero return the callback never runs. */
    int rc = ts_rpc_call_async(b->client, b->c->channel,
                               KSERVE_SERVICE "ModelInfer", b->req, b->len,
                               call_deadline(b->c), bench_done, call, NULL);
    if (rc == 0) return;
    bench_record(b, call->start_ns, ts_err_grpc_status(rc),
                 "cannot start the call");
  }
}

static void bench_done(void *user, const ts_rpc_result *r) {
  bench_call *call = user;
  bench *b = call->b;
  if (!bench_record(b, call->start_ns, r->status, r->message))
    bench_start_next(b);
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of n sorted values (n > 0). */
static double percentile(const double *sorted, long n, double p) {
  long k = (long)ceil(p / 100.0 * (double)n);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

/* Runs the closed loop until `requests` have finished. */
static void bench_run(bench *b) {
  for (long i = 0; i < b->c->opt->concurrency; i++) bench_start_next(b);
  pthread_mutex_lock(&b->lock);
  while (b->completed < b->c->opt->requests)
    pthread_cond_wait(&b->finished, &b->lock);
  pthread_mutex_unlock(&b->lock);
}

static void bench_print(const cli *c, bench *b, double seconds) {
  printf("model: %s  requests: %ld  concurrency: %ld\n", c->opt->model,
         c->opt->requests, c->opt->concurrency);
  printf("ok: %ld  errors: %ld\n", b->n_ok, b->errors);
  printf("duration: %.3f s\n", seconds);
  printf("throughput: %.1f req/s\n",
         seconds > 0 ? (double)b->n_ok / seconds : 0.0);
  if (b->n_ok == 0) return;
  qsort(b->latency_ms, (size_t)b->n_ok, sizeof b->latency_ms[0],
        compare_double);
  double sum = 0;
  for (long i = 0; i < b->n_ok; i++) sum += b->latency_ms[i];
  printf("latency ms: mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
         sum / (double)b->n_ok, percentile(b->latency_ms, b->n_ok, 50),
         percentile(b->latency_ms, b->n_ok, 90),
         percentile(b->latency_ms, b->n_ok, 99), b->latency_ms[b->n_ok - 1]);
}

static int cmd_bench(cli *c, ts_err *err) {
  tensor_set in;
  uint8_t *req = NULL;
  size_t len = 0;
  ts_rpc_client *client = NULL;
  bench b = {.lock = PTHREAD_MUTEX_INITIALIZER,
             .finished = PTHREAD_COND_INITIALIZER,
             .c = c};
  bench_call *calls = NULL;
  int rc = load_inputs(&c->opt->inputs, &in, err);
  if (rc) return rc;
  rc = encode_infer_request(c->opt, &in, &req, &len, err);
  tensor_set_free(&in);
  if (rc) return rc;
  calls = calloc((size_t)c->opt->requests, sizeof *calls);
  b.latency_ms = calloc((size_t)c->opt->requests, sizeof *b.latency_ms);
  if (!calls || !b.latency_ms)
    rc = ts_err_set(err, TS_ENOMEM, "cannot track %ld requests",
                    c->opt->requests);
  if (!rc) rc = ts_rpc_client_create(&client, err);
  if (!rc) {
    b.client = client;
    b.req = req;
    b.len = len;
    b.calls = calls;
    int64_t start = now_ns();
    bench_run(&b);
    double seconds = (double)(now_ns() - start) / 1e9;
    ts_rpc_client_free(client);
    bench_print(c, &b, seconds);
    if (b.errors)
      rc = ts_err_set(err, ts_err_from_grpc_status(b.first_status),
                      "%ld of %ld requests failed; the first with %s: %s",
                      b.errors, c->opt->requests,
                      ts_rpc_status_name(b.first_status), b.first_error);
  }
  free(calls);
  free(b.latency_ms);
  free(req);
  return rc;
}

/* ---- command line ----------------------------------------------------------- */

static int set_flag(void *field, const char *arg) {
  (void)arg;
  *(int *)field = 1;
  return 0;
}

static int set_string(void *field, const char *arg) {
  *(const char **)field = arg;
  return 0;
}

static int set_list(void *field, const char *arg) {
  string_list *list = field;
  const char **items = realloc(list->items, (size_t)(list->n + 1) * sizeof *items);
  if (!items) return -1;
  items[list->n++] = arg;
  list->items = items;
  return 0;
}

static int set_count(void *field, const char *arg) {
  char *end;
  errno = 0;
  long v = strtol(arg, &end, 10);
  if (errno || end == arg || *end || v <= 0 || v > INT32_MAX) return -1;
  *(long *)field = v;
  return 0;
}

/* By arg_kind: stores arg into the field; -1 when arg is not acceptable. */
static int (*const option_setters[])(void *field, const char *arg) = {
    [ARG_NONE] = set_flag,
    [ARG_STRING] = set_string,
    [ARG_LIST] = set_list,
    [ARG_COUNT] = set_count,
};

static bool option_given(const options *opt, int id) {
  const struct option_info *info = &option_table[id];
  const char *field = (const char *)opt + info->offset;
  switch (info->kind) {
    case ARG_STRING: return *(const char *const *)field != NULL;
    case ARG_LIST: return ((const string_list *)field)->n > 0;
    default: return true;
  }
}

static void options_free(options *opt) {
  free(opt->inputs.items);
  free(opt->outputs.items);
}

static void print_overview(FILE *f) {
  fprintf(f, "usage: tessera COMMAND [OPTIONS]\n\ncommands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-9s %s\n", command_table[i].name,
            command_table[i].synopsis);
  fprintf(f, "\nRun 'tessera COMMAND --help' for details.\n");
}

static void print_command_help(const struct command *cmd, FILE *f) {
  fprintf(f, "usage: tessera %s %s\n\n%s\n\noptions:\n", cmd->name,
          cmd->synopsis, cmd->description);
  for (int id = 0; id < N_OPTIONS; id++) {
    if (!(cmd->accepts & (1u << id))) continue;
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", option_table[id].name,
             option_table[id].metavar ? " " : "",
             option_table[id].metavar ? option_table[id].metavar : "");
    fprintf(f, "  %-26s %s\n", left, option_table[id].help);
  }
}

/* Fails the command line: prints why and a hint; returns EXIT_USAGE. */
static int usage_error(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const struct command *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "tessera %s: ", cmd->name);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'tessera %s --help'.\n", cmd->name);
  return EXIT_USAGE;
}

/* Parses argv (argv[0] is the command's name) into *opt, which
 * options_free releases. Returns 0 or EXIT_USAGE after saying why. */
static int parse_options(const struct command *cmd, int argc, char **argv,
                         options *opt) {
  struct option longopts[N_OPTIONS + 1];
  memset(opt, 0, sizeof *opt);
  opt->timeout_ms = DEFAULT_TIMEOUT_MS;
  opt->concurrency = 1;
  opt->requests = DEFAULT_REQUESTS;
  for (int id = 0; id < N_OPTIONS; id++)
    longopts[id] = (struct option){
        option_table[id].name,
        option_table[id].kind == ARG_NONE ? no_argument : required_argument,
        NULL, 256 + id};
  memset(&longopts[N_OPTIONS], 0, sizeof longopts[N_OPTIONS]);
  opterr = 0;
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (ch == 'h') {
      opt->help = 1;
      continue;
    }
    if (ch == '?')
      return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    if (ch == ':')
      return usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
    int id = ch - 256;
    const struct option_info *info = &option_table[id];
    if (!(cmd->accepts & (1u << id)))
      return usage_error(cmd, "--%s does not apply to this command",
                         info->name);
    if (option_setters[info->kind]((char *)opt + info->offset, optarg))
      return usage_error(cmd, "--%s: '%s' is not a positive integer",
                         info->name, optarg);
  }
  if (optind < argc)
    return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (opt->help) return 0;
  for (int id = 0; id < N_OPTIONS; id++)
    if ((cmd->requires & (1u << id)) && !option_given(opt, id))
      return usage_error(cmd, "--%s is required", option_table[id].name);
  if (!opt->cert != !opt->key)
    return usage_error(cmd, "--cert and --key go together");
  for (int i = 0; i < opt->inputs.n; i++) {
    const char *spec = opt->inputs.items[i], *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
      return usage_error(cmd, "--input '%s' is not NAME=FILE.npy", spec);
  }
  for (int i = 0; i < opt->outputs.n; i++) {
    const char *spec = opt->outputs.items[i], *eq = strchr(spec, '=');
    if (eq == spec || !spec[0] || (eq && !eq[1]))
      return usage_error(cmd, "--output '%s' is not NAME or NAME=FILE.npy", spec);
  }
  return 0;
}

/* Opens the channel, runs the command, reports its error. Returns the
 * process exit status. */
static int run_command(const struct command *cmd, const options *opt) {
  ts_err err;
  ts_rpc_creds creds = {opt->cert, opt->key, opt->ca};
  cli c = {opt, NULL};
  ts_err_clear(&err);
  ts_rpc_init();
  int rc = ts_rpc_channel_open(opt->server, &creds, &c.channel, &err);
  if (!rc) rc = cmd->run(&c, &err);
  if (c.channel) ts_rpc_channel_close(c.channel);
  ts_rpc_shutdown();
  fflush(stdout);
  if (rc) {
    report(&err);
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_overview(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    print_overview(stdout);
    return EXIT_SUCCESS;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("tessera %s\n", TESSERA_VERSION);
    return EXIT_SUCCESS;
  }
  const struct command *cmd = NULL;
  for (size_t i = 0; i < N_COMMANDS && !cmd; i++)
    if (!strcmp(argv[1], command_table[i].name)) cmd = &command_table[i];
  if (!cmd) {
    fprintf(stderr, "tessera: unknown command '%s'\n\n", argv[1]);
    print_overview(stderr);
    return EXIT_USAGE;
  }
  options opt;
  int rc = parse_options(cmd, argc - 1, argv + 1, &opt);
  if (!rc && opt.help)
    print_command_help(cmd, stdout);
  else if (!rc)
    rc = run_command(cmd, &opt);
  options_free(&opt);
  return rc;
}
