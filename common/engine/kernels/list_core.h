/* Ops of the "core" family: X(domain, op_type, symbol); the kernel file
 * (core.c) defines `const ts_op ts_op_<symbol>`. One line per op. */
#define TS_OPS_CORE(X)             \
  X("", "Gemm", Gemm)              \
  X("", "MatMul", MatMul)          \
  X("", "Softmax", Softmax)        \
  X("", "LogSoftmax", LogSoftmax)  \
  X("", "Identity", Identity)      \
  X("", "Flatten", Flatten)        \
  X("", "Reshape", Reshape)        \
  X("", "Constant", Constant)      \
  X("", "Dropout", Dropout)
