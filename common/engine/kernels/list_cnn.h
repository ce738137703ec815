/* Ops of the "cnn" family: X(domain, op_type, symbol); the kernel file
 * defines `const ts_op ts_op_<symbol>`. One line per op. */
#define TS_OPS_CNN(X)                              \
  X("", "Conv", conv)                              \
  X("", "MaxPool", max_pool)                       \
  X("", "AveragePool", average_pool)               \
  X("", "GlobalAveragePool", global_average_pool)  \
  X("", "GlobalMaxPool", global_max_pool)          \
  X("", "BatchNormalization", batch_normalization) \
  X("", "Pad", pad)                                \
  X("", "Resize", resize)                          \
  X("", "Upsample", upsample)
