/*
 * graph.h - the graph IR: an ONNX model loaded, checked and prepared.
 *
 * ts_model_load() parses ModelProto bytes (protobuf-c on the system's
 * onnx.proto), builds the IR below, resolves every node to an op (ops.h),
 * lets each op parse and validate its attributes once (op->prepare), sorts
 * the nodes topologically, folds constant subgraphs, and infers static
 * shapes where the inputs allow. Any op, attribute value or structure that
 * Tessera does not support fails the load with a message naming the node,
 * the op and the attribute: never a crash, never a silently wrong answer.
 *
 * Invariants after a successful load:
 *  - nodes[] is topologically sorted; every node input is a graph input, an
 *    initializer/constant, or an output of an earlier node (or -1: omitted
 *    optional input);
 *  - every value has exactly one producer (a node, or none for graph inputs
 *    and constants);
 *  - a ts_model is immutable: any number of threads may run it at once,
 *    each with its own ts_session (exec.h).
 *
 * The IR is public because the coordinator's planner reads it (FLOPs,
 * weight bytes, producers and consumers) to cut the model into shards.
 */
#ifndef TS_GRAPH_H
#define TS_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tensor.h"

/* The IR holds its ONNX protos opaquely: users of the IR (scheduler,
 * fusion, placement, the worker's store and pool) do not see the generated
 * schema. The loader, ops.h's attribute access and the planner's shard
 * writer include "onnx.pb-c.h" for the full types. */
struct Onnx__NodeProto;
struct Onnx__ModelProto;
struct ts_op;

typedef struct ts_value {
  char *name;
  ts_dtype dtype;             /* TS_DTYPE_UNDEFINED when not known statically */
  int rank;                   /* -1 when not known statically */
  int64_t dims[TS_MAX_RANK];  /* -1 for dynamic (symbolic) dims */
  ts_tensor *constant;        /* initializers and folded constants; owned */
  int producer;               /* node index; -1 for graph inputs, constants */
  int n_consumers;            /* nodes reading it (+1 if a graph output) */
  bool is_graph_input;
  bool is_graph_output;
} ts_value;

typedef struct ts_node {
  const char *name;           /* points into proto; may be "" */
  const char *op_type;
  const char *domain;         /* "" for ai.onnx, "ai.onnx.ml", ... */
  int64_t opset;              /* the model's opset for this node's domain */
  const struct ts_op *op;     /* resolved at load */
  int n_inputs;
  int *inputs;                /* value indices; -1 = omitted optional input */
  int n_outputs;
  int *outputs;               /* value indices; -1 = omitted optional output */
  const struct Onnx__NodeProto *proto; /* attributes; owned by the model */
  void *params;               /* op-private, from op->prepare; op->release frees */
} ts_node;

typedef struct ts_graph {
  ts_value *values;
  int n_values;
  ts_node *nodes;             /* topologically sorted */
  int n_nodes;
  int *inputs;                /* value indices of graph inputs (no initializers) */
  int n_inputs;
  int *outputs;               /* value indices of graph outputs */
  int n_outputs;
} ts_graph;

typedef struct ts_model {
  struct Onnx__ModelProto *proto; /* owned; the planner cuts shards from it */
  ts_graph graph;
  int64_t opset;              /* default-domain opset */
  int64_t ml_opset;           /* ai.onnx.ml opset, 0 if not imported */
  size_t weight_bytes;        /* bytes of all constants */
  size_t folded_bytes;        /* of which constant folding made at load */
} ts_model;

/* Load-time constant folding allocates the constants it computes, which can
 * be far larger than the model (a 145-byte ConstantOfShape of a huge shape):
 * all of a model's folded constants together may take at most its fold
 * limit. A load past it fails with TS_EEXHAUSTED naming the node and the
 * bytes, before the node's outputs are allocated. Without a limit given
 * (ts_load_opts), a model of N bytes may fold max(TS_FOLD_LIMIT_MIN,
 * TS_FOLD_LIMIT_FACTOR x N) bytes. */
#define TS_FOLD_LIMIT_MIN ((size_t)64 << 20)
#define TS_FOLD_LIMIT_FACTOR 4
/* max(TS_FOLD_LIMIT_MIN, TS_FOLD_LIMIT_FACTOR x model_bytes), saturating. */
size_t ts_fold_limit_default(size_t model_bytes);

/* What a load may take beyond the model's own bytes. */
typedef struct ts_load_opts {
  size_t fold_limit; /* bytes of all folded constants (SIZE_MAX: no limit) */
} ts_load_opts;

/* Parses and prepares a model from serialized ModelProto bytes (the bytes are
 * not retained). On success *out is a new model the caller frees with
 * ts_model_free(). On failure returns TS_EINVAL (corrupt, truncated or
 * inconsistent file), TS_EUNSUPPORTED (op/attribute not supported) or
 * TS_EEXHAUSTED (folding past the fold limit) with a message naming the
 * node, op and attribute. The fold limit is the default, from len. */
int ts_model_load(const uint8_t *bytes, size_t len, ts_model **out,
                  ts_err *err);
/* How deep a model's messages may nest (the model is level 1; each graph
 * in an attribute adds three: graph, node, attribute). The loaders refuse
 * deeper bytes before unpacking them, since protobuf-c recurses without a
 * limit; protobuf's own default recursion limit is the same 100. */
#define TS_MODEL_MAX_NESTING 100
/* TS_EINVAL, naming the limit, when the ModelProto in bytes[0..len) nests
 * messages deeper than `limit` levels; TS_OK otherwise (also for bytes it
 * cannot read, which protobuf-c then rejects). Reads the bytes only. */
int ts_model_check_nesting(const uint8_t *bytes, size_t len, int limit,
                           ts_err *err);
/* Releases a buffer a model adopted: munmap, free, ... */
typedef void (*ts_bytes_release)(void *bytes, size_t len, void *ctx);

/* Like ts_model_load, but the model takes over `bytes` (the caller no longer
 * touches them): the raw_data of large initializers is moved, aligned,
 * within the buffer and the model's weights point there instead of into
 * copies, so a load holds the weights once, not twice. The model calls
 * release(bytes, len, ctx) (if non-NULL) when it is freed; on failure
 * release has been called before this returns. Bytes the in-place path does
 * not understand load as with ts_model_load (then released at once). */
int ts_model_load_adopt(uint8_t *bytes, size_t len, ts_bytes_release release,
                        void *ctx, ts_model **out, ts_err *err);
/* ts_model_load_adopt with the limits in opts (NULL: the defaults). */
int ts_model_load_adopt_opts(uint8_t *bytes, size_t len,
                             ts_bytes_release release, void *ctx,
                             const ts_load_opts *opts, ts_model **out,
                             ts_err *err);
/* Reads a file and loads it in place (ts_model_load_adopt); messages name
 * the path. */
int ts_model_load_file(const char *path, ts_model **out, ts_err *err);
/* ts_model_load_file with the limits in opts (NULL: the defaults). */
int ts_model_load_file_opts(const char *path, const ts_load_opts *opts,
                            ts_model **out, ts_err *err);
void ts_model_free(ts_model *model);
/* Packs the model's constant weights once for the kernels that run them
 * (each op's prepack, ops.h): Gemm and MatMul with a constant float B get it
 * in the packed kernel's panels (kernels/gemm_packed.h), and a B that only
 * its product reads is not kept twice; a B that a reduced-precision weight
 * node widens (float16, bfloat16, int8: engine_int.h) is packed in its
 * small type and the node is dropped. For a daemon that will run the
 * model, before its first run; a model the planner cuts is left as loaded.
 * TS_ENOMEM with a message when a packed copy cannot be allocated (the
 * model stays usable, unpacked nodes run as before). Not thread-safe:
 * call it before the model is shared. */
int ts_model_prepack(ts_model *model, ts_err *err);

/* Value lookup by name; -1 when absent. */
int ts_graph_find_value(const ts_graph *g, const char *name);

/* Multiply-adds (approximate FLOPs / 2) of node `i`, with symbolic dims taken
 * as 1; used to balance pipeline stages. */
double ts_graph_node_flops(const ts_model *m, int node);

#endif
