/*
 * engine_int.h - calls between the engine's own modules (graph.c, load.c,
 * ops.c, exec.c, inplace.c). Not part of the engine's interface: nothing
 * outside common/engine/ includes it (SQLite's btreeInt.h habit).
 *
 *   graph.c (loader, constant folding) -> exec.c: ts_exec_node_eval
 *   graph.c (initializers)             -> ops.c:  ts_tensor_borrow_onnx
 *   exec.c  (plan cache key)           -> load.c: ts_model_serial
 *   load.c  (in-place loads)           -> inplace.c: ts_inplace_slim
 *   load.c  (entry points, free)       -> graph.c: ts_model_build,
 *                                                   ts_graph_free
 *   graph.c (constant folding), core.c (products' prepack)
 *                                      -> quant.c: ts_reduced_weight_keep,
 *                                                  ts_reduced_weight_of
 *   prepack.c                          -> graph.c: ts_graph_drop_unread
 */
#ifndef TS_ENGINE_INT_H
#define TS_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "onnx.pb-c.h"

/* exec.c: runs one node of graph g on its own, outside any session, for
 * load-time constant folding. Calls op->infer, then allocates each present
 * output (owned; the caller frees them with ts_tensor_free, also on
 * failure) and calls op->run. The outputs and the kernel's scratch together
 * may take at most `budget` bytes: past it, TS_EEXHAUSTED naming the node
 * and the bytes, before anything of that size is allocated. out[i] for an
 * omitted optional output (node->outputs[i] < 0) stays data-less. */
int ts_exec_node_eval(const ts_graph *g, const ts_node *node,
                      const ts_tensor *const *in, ts_tensor *out,
                      size_t budget, ts_err *err);

/* ops.c: like ts_tensor_from_onnx, but a tensor stored in raw_data is not
 * copied: out is a view (owned = false) into tp, which must outlive it. The
 * loader uses it for initializers, so weights are held once (the model keeps
 * its proto for the partitioner anyway). */
int ts_tensor_borrow_onnx(const Onnx__TensorProto *tp, ts_tensor *out,
                          ts_err *err);

/* load.c: the model's process-unique serial, or 0 for a ts_model that did
 * not come from ts_model_load. */
uint64_t ts_model_serial(const ts_model *m);

/* graph.c: runs the loader's passes (graph.c's opening comment) on
 * m->proto, an unpacked ModelProto, filling m->graph and the model's
 * totals; constant folding may allocate at most fold_limit bytes in all
 * (graph.h). On failure returns a negative TS_E* naming what is wrong, with
 * m->graph partly built: the caller frees it with ts_graph_free (as
 * ts_model_free does). */
int ts_model_build(ts_model *m, size_t fold_limit, ts_err *err);

/* graph.c: frees what ts_model_build put in g (nodes and their params,
 * values and constants, the input and output lists), not g itself. */
void ts_graph_free(ts_graph *g);

/* inplace.c: one large initializer payload of a model's bytes: the
 * initializer's index in GraphProto.initializer, where its raw_data lies
 * in the bytes, and where (aligned, at or before src) it is to move. */
typedef struct ts_inplace_payload {
  size_t initializer;
  size_t src, dst, len;
} ts_inplace_payload;

/* A model's bytes re-encoded without their large payloads. */
typedef struct ts_inplace {
  uint8_t *slim;   /* the slim encoding; owned */
  size_t slim_len;
  ts_inplace_payload *payloads; /* in the order of the bytes; owned */
  size_t n, cap;
} ts_inplace;

/* Writes the slim encoding of the ModelProto in bytes[0..len): each
 * initializer's raw_data of 4 KiB or more present but empty, and recorded
 * in *out. TS_EUNSUPPORTED (and *out empty) when there is none, or the
 * bytes are not what it expects; the caller then unpacks them as they are.
 * Reads the bytes only. */
int ts_inplace_slim(const uint8_t *bytes, size_t len, ts_inplace *out);
void ts_inplace_free(ts_inplace *s);

/* quant.c: the reduced-precision weight node `node` of g widens (a Cast of
 * a constant float16 / bfloat16 matrix to float, or a DequantizeLinear of a
 * constant int8 matrix with constant float scales, one or one per index of
 * an axis, and zero points that are all 0). value: the small constant;
 * dtype: its type; scales, n_scales: int8's scales (in the model; NULL, 0
 * otherwise); axis: the axis they run along, -1 for one scale. */
typedef struct ts_reduced_weight {
  int value;
  ts_dtype dtype;
  const float *scales;
  int64_t n_scales;
  int axis;
} ts_reduced_weight;

/* quant.c: fills *out and returns true when node `node` of g is such a
 * node; false (out unspecified) otherwise. */
bool ts_reduced_weight_of(const ts_graph *g, int node, ts_reduced_weight *out);

/* quant.c: true when node `node` is a reduced weight (ts_reduced_weight_of)
 * that only Gemm / MatMul read, each as a B it can pack small (no transA,
 * int8 scales along its output columns): the loader leaves it
 * unfolded so that the products may pack the small type (quant.c's opening
 * comment). */
bool ts_reduced_weight_keep(const ts_graph *g, int node);

/* graph.c: after the products' prepack, removes the reduced weight nodes
 * nothing reads any more (the products now read the small constants
 * directly) and recounts every value's consumers. */
void ts_graph_drop_unread(ts_model *m);

#endif
