#include "op_list.h"

/* Ops of the "core" family, one line each (columns: op_list.h):
 * E(X, domain, op_type, symbol, split, row, axis, weights); the kernel
 * file (core.c) defines `const ts_op ts_op_<symbol>`. */
#define TS_OP_TABLE_CORE(E, X)                             \
  E(X, "", "Gemm", Gemm, NONE, GEMM, 0, GEMM)              \
  E(X, "", "MatMul", MatMul, NONE, MATMUL, 0, MATMUL)      \
  E(X, "", "Softmax", Softmax, NONE, AXIS, -1, NONE)       \
  E(X, "", "LogSoftmax", LogSoftmax, NONE, AXIS, -1, NONE) \
  E(X, "", "Identity", Identity, ELEM, BCAST, 0, NONE)     \
  E(X, "", "Flatten", Flatten, NONE, AXIS, 1, NONE)        \
  E(X, "", "Reshape", Reshape, NONE, RESHAPE, 0, NONE)     \
  E(X, "", "Constant", Constant, NONE, NONE, 0, NONE)      \
  E(X, "", "Dropout", Dropout, ELEM, BCAST, 0, NONE)
#define TS_OPS_CORE(X) TS_OP_TABLE_CORE(TS_OP_KERNEL, X)
