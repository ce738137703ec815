/*
 * ops.h - the operator table and the kernel interface.
 *
 * Every supported op is one line of the one op table (kernels/list_*.h, one
 * list per op family; op_list.h names the columns): its domain, ONNX
 * op_type, a C symbol, and how the planner may split it. The kernel file
 * defines `const ts_op ts_op_<symbol>`. Adding an op is that line plus its
 * kernel and a test against a naive float64 reference.
 *
 * Contract of each op:
 *  - prepare (load time, may be NULL): validate the node's attributes and
 *    inputs that are known at load time (constants), parse them into
 *    node->params. Any attribute or value not supported fails with
 *    TS_EUNSUPPORTED and a message naming node, op and attribute; malformed
 *    ones with TS_EINVAL. ts_node_check_attrs() rejects unknown attributes.
 *  - prepack (may be NULL): turn constants the node reads into the layout its
 *    run wants (pre-packed weights), once, when the daemon that will run
 *    the model asks (ts_model_prepack); a model only planned is never packed.
 *    It may discard the original of a constant that only this node reads
 *    (graph values' n_consumers).
 *  - release (may be NULL): free node->params.
 *  - infer: from the input tensors, set each output's dtype, rank and dims
 *    (ts_tensor_set_shape). Inputs that are constants or were computed at run
 *    time have data; at load-time shape inference an input's data may be NULL
 *    (only its shape is known): an op that needs values (Reshape's shape,
 *    Slice's starts, ...) returns TS_EAGAIN then. Shape errors at run time
 *    (mismatched dims) are TS_EINVAL with the node named.
 *  - run: compute. Outputs arrive shaped and with data allocated (nbytes);
 *    scratch memory comes from ts_kctx_scratch(). Inputs are read-only.
 *    in[i] is NULL for an omitted optional input; out[i] for an omitted
 *    optional output is a tensor with data == NULL that must be skipped.
 */
#ifndef TS_OPS_H
#define TS_OPS_H

#include "graph.h"
#include "onnx.pb-c.h"

/* infer: not enough is known yet (load-time inference only). */
#define TS_EAGAIN (-100)

typedef struct ts_kctx ts_kctx;

/* Scratch memory valid until the kernel returns; NULL when out of memory.
 * 64-byte aligned. */
void *ts_kctx_scratch(ts_kctx *ctx, size_t bytes);

typedef struct ts_op {
  const char *domain;
  const char *name;
  int min_inputs, max_inputs;
  int min_outputs, max_outputs;
  int (*prepare)(ts_node *node, const ts_graph *g, ts_err *err);
  void (*release)(ts_node *node);
  int (*infer)(const ts_node *node, const ts_tensor *const *in, ts_tensor *out,
               ts_err *err);
  int (*run)(const ts_node *node, const ts_tensor *const *in, ts_tensor *out,
             ts_kctx *ctx, ts_err *err);
  int (*prepack)(ts_node *node, ts_graph *g, ts_err *err);
} ts_op;

/* The op for (domain, op_type); NULL when not supported. "" and "ai.onnx"
 * name the default domain. */
const ts_op *ts_op_find(const char *domain, const char *op_type);

/* Attribute access. The *_get functions return 0 when present, TS_ENOTFOUND
 * when absent, TS_EINVAL when present with the wrong type (message names
 * node, op and attribute). Arrays point into the model proto. */
const Onnx__AttributeProto *ts_attr_find(const ts_node *n, const char *name);
int64_t ts_attr_int(const ts_node *n, const char *name, int64_t dflt);
float ts_attr_float(const ts_node *n, const char *name, float dflt);
const char *ts_attr_string(const ts_node *n, const char *name,
                           const char *dflt);
int ts_attr_ints(const ts_node *n, const char *name, const int64_t **vals,
                 size_t *count, ts_err *err);
int ts_attr_floats(const ts_node *n, const char *name, const float **vals,
                   size_t *count, ts_err *err);
/* Fails (TS_EUNSUPPORTED, naming node, op and attribute) on any attribute
 * not in the NULL-terminated list `known`. */
int ts_node_check_attrs(const ts_node *n, const char *const *known,
                        ts_err *err);
/* "node 'fc1' (Gemm)" into buf, for messages. */
const char *ts_node_desc(const ts_node *n, char *buf, size_t size);

/* Converts an ONNX TensorProto (raw_data or typed fields, little-endian) into
 * an owned tensor. TS_EINVAL on inconsistent sizes; TS_EUNSUPPORTED on
 * external data or unsupported types. */
int ts_tensor_from_onnx(const Onnx__TensorProto *tp, ts_tensor *out,
                        ts_err *err);

/* Broadcasting helper (numpy rules): output shape of a and b. */
int ts_broadcast_shape(const ts_tensor *a, const ts_tensor *b, int64_t *dims,
                       int *rank, ts_err *err);

#endif
