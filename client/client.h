/*
 * client.h - what the files of the `tessera` command line share: the parsed
 * options, the `cli` a command runs with, the calls it makes, tensors on the
 * wire, printing, and the commands themselves (one file each; main.c holds
 * the command table that names them).
 *
 * A command gets a `cli` with an open channel, makes calls through
 * cli_call(), builds its answer as a cli_out document and prints it in the
 * --format asked for (format.c); it returns 0 or a negative TS_E* code with
 * a ts_err saying why.
 */
#ifndef TS_CLIENT_H
#define TS_CLIENT_H

#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "error.h"
#include "inference.pb-c.h"
#include "options.h"
#include "rpc.h"
#include "tensor.h"

#define KSERVE_SERVICE "/inference.GRPCInferenceService/"
#define ADMIN_SERVICE "/tessera.admin.v1.Admin/"

/* ---- options (main.c parses them) -------------------------------------- */

typedef struct string_list {
  const char **items; /* point into argv */
  int n;
} string_list;

/* How a command's answer is printed (--format; format.c). */
typedef enum { CLI_FORMAT_TABLE, CLI_FORMAT_JSON, CLI_FORMAT_CSV } cli_format;

typedef struct options {
  const char *server, *model, *service, *ca, *cert, *key, *token;
  const char *format_name;
  const char *labels, *reference; /* eval */
  string_list inputs, outputs;
  int typed, help;
  long timeout_ms, concurrency, seed;
  long requests, batch;          /* 0 when not given */
  double duration, warmup, rate; /* s, s, per s; 0 when not given */
  cli_format format; /* from format_name */
} options;

/* ---- commands ------------------------------------------------------------ */

/* --server takes a comma-separated list of at most CLI_SERVERS_MAX
 * servers: calls fail over between them (cli_call), and load / unload go
 * to each (cli_call_on). */
#define CLI_SERVERS_MAX 16

typedef struct cli {
  const options *opt;
  int n_servers;
  char servers[CLI_SERVERS_MAX][TS_ADDRESS_MAX]; /* gRPC targets */
  ts_rpc_channel *channels[CLI_SERVERS_MAX];     /* one per server */
  atomic_int current; /* the server calls try first: the last that answered */
} cli;

int cmd_infer(cli *c, ts_err *err);    /* cmd_infer.c */
int cmd_models(cli *c, ts_err *err);   /* cmd_models.c */
int cmd_load(cli *c, ts_err *err);     /* cmd_models.c */
int cmd_unload(cli *c, ts_err *err);   /* cmd_models.c */
int cmd_health(cli *c, ts_err *err);   /* cmd_health.c */
int cmd_metadata(cli *c, ts_err *err); /* cmd_status.c */
int cmd_status(cli *c, ts_err *err);   /* cmd_status.c */
int cmd_bench(cli *c, ts_err *err);    /* cmd_bench.c */
int cmd_eval(cli *c, ts_err *err);     /* cmd_eval.c */

/* ---- calls (call.c) ------------------------------------------------------ */

/* The absolute deadline of a call starting now (--timeout-ms). */
int64_t cli_deadline(const cli *c);
/* A blocking call with a serialized request; *resp is unpacked with
 * resp_desc (free it with protobuf_c_message_free_unpacked). With several
 * servers it goes to c->current first and, on UNAVAILABLE, once to each
 * other server in turn; the one that answers becomes c->current. When all
 * are UNAVAILABLE, err names the last one tried. */
int cli_call_bytes(cli *c, const char *method, const uint8_t *req,
                   size_t len, const ProtobufCMessageDescriptor *resp_desc,
                   ProtobufCMessage **resp, ts_err *err);
/* cli_call_bytes for a request message. */
int cli_call(cli *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp, ts_err *err);
/* cli_call to server `server` only, never failing over: for what every
 * server must do (load, unload). */
int cli_call_on(cli *c, int server, const char *method,
                const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc,
                ProtobufCMessage **resp, ts_err *err);

/* ---- tensors on the wire (tensors.c) ------------------------------------- */

/* Named tensors loaded from NAME=FILE.npy specs. */
typedef struct tensor_set {
  int n;
  char **names;       /* malloc'd */
  ts_tensor *tensors; /* each owns its data */
} tensor_set;

void cli_tensor_set_free(tensor_set *s);
/* Every --input NAME=FILE.npy into *s (cli_tensor_set_free releases). */
int cli_load_inputs(const string_list *specs, tensor_set *s, ts_err *err);
/* A serialized ModelInferRequest of `in` and --output; *out malloc'd. */
int cli_encode_infer_request(const options *opt, const tensor_set *in,
                             uint8_t **out, size_t *out_len, ts_err *err);
/* Output i of resp as a tensor, checked (ts_tensor_free releases); also
 * refuses a response whose raw_output_contents are not one per output. */
int cli_decode_output(const Inference__ModelInferResponse *resp, size_t i,
                      ts_tensor *t, ts_err *err);
/* The tensors --input names, or, without --input, inputs generated from
 * the model's metadata (cli_generate_inputs). */
int cli_prepare_inputs(cli *c, tensor_set *s, ts_err *err);
/* The serialized ModelInferRequest of `infer` and `bench`: the tensors of
 * cli_prepare_inputs and --output; *out malloc'd. */
int cli_prepare_infer_request(cli *c, uint8_t **out, size_t *out_len,
                              ts_err *err);
/* Random inputs of each input's datatype and shape: a dynamic leading dim
 * is `batch` (--batch, 1 when not given), other dynamic dims 1; floats uniform in [-1, 1), integers in
 * [0, 16), booleans either; the same `seed` gives the same data. */
int cli_generate_inputs(const Inference__ModelMetadataResponse *md,
                        long batch, uint64_t seed, tensor_set *s, ts_err *err);

/* Element i of a numeric tensor as a double (NaN for no number type) or an
 * int64 (uint64 above INT64_MAX wraps; floats truncate, NaN gives 0). */
double cli_tensor_double(const ts_tensor *t, int64_t i);
int64_t cli_tensor_int64(const ts_tensor *t, int64_t i);
/* FP16, FP32, FP64. */
bool cli_dtype_is_float(ts_dtype dtype);

/* ---- printing (print.c) -------------------------------------------------- */

/* "NAME DATATYPE [dims]" and then the values, NumPy style. */
void cli_print_tensor(FILE *f, const char *name, const ts_tensor *t);
/* "1.5 MB" */
void cli_format_bytes(uint64_t bytes, char *buf, size_t size);

/* ---- output formats (format.c) -------------------------------------------- */

/* A command's answer: the command fills root (a JSON object; see format.c
 * for how its shape maps to a table and to CSV), then prints it once. */
typedef struct cli_out {
  cli_format format;
  json_t *root; /* NULL after an allocation failure or once printed */
} cli_out;

/* "table", "json", "csv" into *out; -1 for another name. */
int cli_format_parse(const char *name, cli_format *out);
void cli_out_init(cli_out *o, cli_format format);
/* Prints root in o->format and frees it. */
int cli_out_print(cli_out *o, ts_err *err);
/* Frees root unprinted (a command that failed). */
void cli_out_free(cli_out *o);
/* A tensor: printed NumPy style at once in a table (or its "-> file" line
 * when written to `file`), else appended to rows as {name, datatype,
 * shape, data} (or {name, datatype, shape, file}). */
void cli_out_tensor(cli_out *o, json_t *rows, const char *name,
                    const ts_tensor *t, const char *file);
/* A number as JSON; NaN and infinities, which JSON has no numbers for, as
 * the strings "NaN", "Infinity", "-Infinity". */
json_t *cli_real_json(double d);
/* [d0, d1, ...] as a new JSON array. */
json_t *cli_shape_json(const int64_t *dims, int rank);

/* ---- the repository (cmd_models.c), shared with `status` ----------------- */

/* RepositoryIndex; free *index with protobuf_c_message_free_unpacked. */
int cli_fetch_index(cli *c, Inference__RepositoryIndexResponse **index,
                    ts_err *err);
/* The index as rows {name, version, state, reason} (a new JSON array). */
json_t *cli_index_json(const Inference__RepositoryIndexResponse *index);

/* ---- metadata (cmd_status.c), shared with the generated inputs and eval --- */

/* ModelMetadata; free *md with protobuf_c_message_free_unpacked. */
int cli_fetch_model_metadata(cli *c, const char *model,
                             Inference__ModelMetadataResponse **md,
                             ts_err *err);

#endif
