#include "op_list.h"

/* Ops of the "quant" family, one line each (columns: op_list.h):
 * E(X, domain, op_type, symbol, split, row, axis, weights); the kernel
 * file (quant.c) defines `const ts_op ts_op_<symbol>`. DequantizeLinear
 * is not split: its scales may run along the split axis. */
#define TS_OP_TABLE_QUANT(E, X)                                    \
  E(X, "", "DequantizeLinear", DequantizeLinear, NONE, NONE, 0, NONE)
#define TS_OPS_QUANT(X) TS_OP_TABLE_QUANT(TS_OP_KERNEL, X)
