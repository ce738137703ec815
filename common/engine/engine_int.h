/*
 * engine_int.h - calls between the engine's own modules (graph.c, ops.c,
 * exec.c). Not part of the engine's interface: nothing outside
 * common/engine/ includes it (SQLite's btreeInt.h habit).
 *
 *   graph.c (loader, constant folding) -> exec.c: ts_exec_node_eval
 *   graph.c (initializers)             -> ops.c:  ts_tensor_borrow_onnx
 *   exec.c  (plan cache key)           -> graph.c: ts_model_serial
 */
#ifndef TS_ENGINE_INT_H
#define TS_ENGINE_INT_H

#include <stdint.h>

#include "graph.h"
#include "onnx.pb-c.h"

/* exec.c: runs one node on its own, outside any session, for load-time
 * constant folding. Calls op->infer, then allocates each present output
 * (owned; the caller frees them with ts_tensor_free, also on failure) and
 * calls op->run. out[i] for an omitted optional output (node->outputs[i] <
 * 0) stays data-less. */
int ts_exec_node_eval(const ts_node *node, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err);

/* ops.c: like ts_tensor_from_onnx, but a tensor stored in raw_data is not
 * copied: out is a view (owned = false) into tp, which must outlive it. The
 * loader uses it for initializers, so weights are held once (the model keeps
 * its proto for the partitioner anyway). */
int ts_tensor_borrow_onnx(const Onnx__TensorProto *tp, ts_tensor *out,
                          ts_err *err);

/* graph.c: the model's process-unique serial, or 0 for a ts_model that did
 * not come from ts_model_load. */
uint64_t ts_model_serial(const ts_model *m);

#endif
