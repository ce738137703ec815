/*
 * client.h - what the files of the `tessera` command line share: the parsed
 * options, the `cli` a command runs with, the calls it makes, tensors on the
 * wire, printing, and the commands themselves (one file each; main.c holds
 * the command table that names them).
 *
 * A command gets a `cli` with an open channel, makes calls through
 * cli_call() and prints; it returns 0 or a negative TS_E* code with a
 * ts_err saying why.
 */
#ifndef TS_CLIENT_H
#define TS_CLIENT_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "inference.pb-c.h"
#include "rpc.h"
#include "tensor.h"

#define KSERVE_SERVICE "/inference.GRPCInferenceService/"
#define ADMIN_SERVICE "/tessera.admin.v1.Admin/"

/* ---- options (main.c parses them) -------------------------------------- */

typedef struct string_list {
  const char **items; /* point into argv */
  int n;
} string_list;

typedef struct options {
  const char *server, *model, *service, *ca, *cert, *key, *token;
  string_list inputs, outputs;
  int typed, help;
  long timeout_ms, concurrency, requests;
} options;

/* ---- commands ------------------------------------------------------------ */

typedef struct cli {
  const options *opt;
  ts_rpc_channel *channel;
} cli;

int cmd_infer(cli *c, ts_err *err);    /* cmd_infer.c */
int cmd_models(cli *c, ts_err *err);   /* cmd_models.c */
int cmd_load(cli *c, ts_err *err);     /* cmd_models.c */
int cmd_unload(cli *c, ts_err *err);   /* cmd_models.c */
int cmd_health(cli *c, ts_err *err);   /* cmd_health.c */
int cmd_metadata(cli *c, ts_err *err); /* cmd_status.c */
int cmd_status(cli *c, ts_err *err);   /* cmd_status.c */
int cmd_bench(cli *c, ts_err *err);    /* cmd_bench.c */

/* ---- calls (call.c) ------------------------------------------------------ */

/* The absolute deadline of a call starting now (--timeout-ms). */
int64_t cli_deadline(const cli *c);
/* A blocking call with a serialized request; *resp is unpacked with
 * resp_desc (free it with protobuf_c_message_free_unpacked). */
int cli_call_bytes(cli *c, const char *method, const uint8_t *req,
                   size_t len, const ProtobufCMessageDescriptor *resp_desc,
                   ProtobufCMessage **resp, ts_err *err);
/* cli_call_bytes for a request message. */
int cli_call(cli *c, const char *method, const ProtobufCMessage *req,
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
/* Output i of resp as a tensor, checked (ts_tensor_free releases). */
int cli_decode_output(const Inference__ModelInferResponse *resp, size_t i,
                      ts_tensor *t, ts_err *err);

/* ---- printing (print.c) -------------------------------------------------- */

/* "NAME DATATYPE [dims]" and then the values, NumPy style. */
void cli_print_tensor(FILE *f, const char *name, const ts_tensor *t);

/* A table of text cells printed in left-aligned columns. Cells are added
 * row by row (row 0 is the header); each is a malloc'd copy, freed by
 * cli_table_print. An allocation failure drops the table, never crashes. */
#define TABLE_MAX_COLS 12
typedef struct text_table {
  int ncols, n, cap;
  char **cells;
  bool failed;
} text_table;

void cli_table_cell(text_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints the table (each line after `indent`) and frees its cells. */
void cli_table_print(text_table *t, const char *indent);

/* Starts a table whose columns are the given header cells. */
#define TABLE_HEADER(t, ...)                                                \
  do {                                                                      \
    static const char *const header_[] = {__VA_ARGS__};                    \
    (t)->ncols = (int)(sizeof header_ / sizeof header_[0]);                 \
    for (int i_ = 0; i_ < (t)->ncols; i_++)                                 \
      cli_table_cell((t), "%s", header_[i_]);                               \
  } while (0)

/* "1.5 MB" */
void cli_format_bytes(uint64_t bytes, char *buf, size_t size);

/* ---- the repository (cmd_models.c), shared with `status` ----------------- */

/* RepositoryIndex; free *index with protobuf_c_message_free_unpacked. */
int cli_fetch_index(cli *c, Inference__RepositoryIndexResponse **index,
                    ts_err *err);
/* The index as a table: NAME VERSION STATE REASON. */
void cli_print_index(const Inference__RepositoryIndexResponse *index);

#endif
