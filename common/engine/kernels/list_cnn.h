#include "op_list.h"

/* Ops of the "cnn" family, one line each (columns: op_list.h):
 * E(X, domain, op_type, symbol, split, row, axis, weights); the kernel
 * file defines `const ts_op ts_op_<symbol>`. */
#define TS_OP_TABLE_CNN(E, X)                                                \
  E(X, "", "Conv", conv, NONE, ANY, 0, CONV)                                 \
  E(X, "", "MaxPool", max_pool, CHANNEL, ANY, 0, NONE)                       \
  E(X, "", "AveragePool", average_pool, CHANNEL, ANY, 0, NONE)               \
  E(X, "", "GlobalAveragePool", global_average_pool, CHANNEL, ANY, 0, NONE)  \
  E(X, "", "GlobalMaxPool", global_max_pool, CHANNEL, ANY, 0, NONE)          \
  E(X, "", "BatchNormalization", batch_normalization, CHANNEL, ANY, 0, NONE) \
  E(X, "", "Pad", pad, NONE, NONE, 0, NONE)                                  \
  E(X, "", "Resize", resize, NONE, NONE, 0, NONE)                            \
  E(X, "", "Upsample", upsample, NONE, NONE, 0, NONE)
#define TS_OPS_CNN(X) TS_OP_TABLE_CNN(TS_OP_KERNEL, X)
