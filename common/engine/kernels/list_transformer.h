#include "op_list.h"

/* Ops of the "transformer" family, one line each (columns: op_list.h):
 * E(X, domain, op_type, symbol, split, row, axis, weights); the kernel
 * file defines `const ts_op ts_op_<symbol>`. */
#define TS_OP_TABLE_TRANSFORMER(E, X)                               \
  E(X, "", "Transpose", Transpose, NONE, TRANSPOSE, 0, NONE)        \
  E(X, "", "Shape", Shape, NONE, NONE, 0, NONE)                     \
  E(X, "", "Gather", Gather, NONE, GATHER, 0, NONE)                 \
  E(X, "", "Unsqueeze", Unsqueeze, NONE, AXES, 0, NONE)             \
  E(X, "", "Squeeze", Squeeze, NONE, AXES, 0, NONE)                 \
  E(X, "", "Concat", Concat, NONE, CONCAT, 0, NONE)                 \
  E(X, "", "Slice", Slice, NONE, AXES, 0, NONE)                     \
  E(X, "", "Split", Split, NONE, AXIS, 0, NONE)                     \
  E(X, "", "ConstantOfShape", ConstantOfShape, NONE, NONE, 0, NONE) \
  E(X, "", "Range", Range, NONE, NONE, 0, NONE)                     \
  E(X, "", "Tile", Tile, NONE, NONE, 0, NONE)                       \
  E(X, "", "ReduceSum", ReduceSum, NONE, AXES, 0, NONE)             \
  E(X, "", "ReduceMean", ReduceMean, NONE, AXES, 0, NONE)           \
  E(X, "", "ReduceMax", ReduceMax, NONE, AXES, 0, NONE)             \
  E(X, "", "ReduceMin", ReduceMin, NONE, AXES, 0, NONE)             \
  E(X, "", "ReduceProd", ReduceProd, NONE, AXES, 0, NONE)           \
  E(X, "", "LayerNormalization", LayerNormalization, NONE, AXIS, -1, NONE)
#define TS_OPS_TRANSFORMER(X) TS_OP_TABLE_TRANSFORMER(TS_OP_KERNEL, X)
