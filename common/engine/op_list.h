/*
 * op_list.h - the columns of the one op table.
 *
 * Every op the engine runs is one line of its family's list
 * (kernels/list_<family>.h):
 *
 *   E(X, domain, op_type, symbol, split, row, axis, weights)
 *
 *  - domain, op_type: the ONNX op ("" is the default domain);
 *  - symbol: the kernel file defines `const ts_op ts_op_<symbol>` (ops.h);
 *  - split, row, axis, weights: how the partitioner (coordinator/plan/) may
 *    split the op: TS_OP_SPLIT_<split>, TS_OP_ROW_<row>, the default of
 *    attribute "axis" (for TS_OP_ROW_AXIS), TS_OP_WEIGHTS_<weights>. The
 *    engine ignores these columns; they are plain enums so that it knows
 *    nothing of the planner, and they live on the kernel's line so that no
 *    op can have a split rule without a kernel, nor a kernel without a rule.
 *
 * Views: TS_OPS_<FAMILY>(X) expands X(domain, op_type, symbol) per op (the
 * kernels' and the op table's view); TS_OP_TABLE_<FAMILY>(E, X) expands the
 * whole lines, E receiving X first; TS_OP_TABLE(E, X) all families (include
 * every kernels/list_*.h before expanding it).
 */
#ifndef TS_OP_LIST_H
#define TS_OP_LIST_H

#include "error.h"

/* How an op behaves inside a tensor-parallel split group.
 *  ELEM: element-wise; runs on slices along any axis, constant operands
 *        sliced where they vary along it.
 *  CHANNEL: per-channel (pools, BatchNormalization, ...); runs on channel
 *        slices (axis 1); inputs after the first are [C] parameters.
 *  NONE: cannot run on a slice. */
typedef enum {
  TS_OP_SPLIT_NONE,
  TS_OP_SPLIT_ELEM,
  TS_OP_SPLIT_CHANNEL
} ts_op_split;

/* The row rule: when the op never mixes rows (dim 0) of its tensors, so a
 * stage of such ops may be cut along the batch (coordinator/plan/data.c).
 *  NONE: never; ANY: per sample on input 0 with constant parameters;
 *  BCAST: broadcasting, constants constant along dim 0; AXIS: attribute
 *  "axis" (default: the axis column) is not 0; GEMM, MATMUL: constant
 *  weights; RESHAPE: the constant shape keeps dim 0; TRANSPOSE: perm[0] is
 *  0; CONCAT: non-constant inputs, axis not 0; GATHER: an embedding table
 *  or constant indices away from axis 0; AXES: the "axes" list (attribute
 *  or constant input) avoids axis 0. */
typedef enum {
  TS_OP_ROW_NONE,
  TS_OP_ROW_ANY,
  TS_OP_ROW_BCAST,
  TS_OP_ROW_AXIS,
  TS_OP_ROW_GEMM,
  TS_OP_ROW_MATMUL,
  TS_OP_ROW_RESHAPE,
  TS_OP_ROW_TRANSPOSE,
  TS_OP_ROW_CONCAT,
  TS_OP_ROW_GATHER,
  TS_OP_ROW_AXES,
  TS_OP_ROW_COUNT
} ts_op_row;

/* How an op splits its constant weight (input 1) by output columns or input
 * features: NONE (it does not), or the layout of Gemm, MatMul or Conv. */
typedef enum {
  TS_OP_WEIGHTS_NONE,
  TS_OP_WEIGHTS_GEMM,
  TS_OP_WEIGHTS_MATMUL,
  TS_OP_WEIGHTS_CONV,
  TS_OP_WEIGHTS_COUNT
} ts_op_weights;

/* The kernels' view of a line. */
#define TS_OP_KERNEL(X, domain, op_type, symbol, split, row, axis, weights) \
  X(domain, op_type, symbol)

#define TS_OP_TABLE(E, X)                                    \
  TS_OP_TABLE_CORE(E, X) TS_OP_TABLE_ELEMENTWISE(E, X)       \
  TS_OP_TABLE_CNN(E, X) TS_OP_TABLE_TRANSFORMER(E, X)        \
  TS_OP_TABLE_ML(E, X) TS_OP_TABLE_QUANT(E, X)

/* Test hook (ops.c): checks every row of the engine's op table (unique,
 * agreeing with its ts_op, with infer and run); the number of rows, or a
 * negative TS_E* code naming the first bad row in *err. */
int ts_ops_selfcheck(ts_err *err);
/* Test hook (ops.c): the i-th op of the table, NULL past the end. */
struct ts_op;
const struct ts_op *ts_op_at(int i);

#endif
