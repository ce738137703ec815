/* Ops of the "transformer" family: X(domain, op_type, symbol); the kernel file
 * defines `const ts_op ts_op_<symbol>`. One line per op. */
#define TS_OPS_TRANSFORMER(X)                        \
  X("", "Transpose", Transpose)                      \
  X("", "Shape", Shape)                              \
  X("", "Gather", Gather)                            \
  X("", "Unsqueeze", Unsqueeze)                      \
  X("", "Squeeze", Squeeze)                          \
  X("", "Concat", Concat)                            \
  X("", "Slice", Slice)                              \
  X("", "Split", Split)                              \
  X("", "ConstantOfShape", ConstantOfShape)          \
  X("", "Range", Range)                              \
  X("", "Tile", Tile)                                \
  X("", "ReduceSum", ReduceSum)                      \
  X("", "ReduceMean", ReduceMean)                    \
  X("", "ReduceMax", ReduceMax)                      \
  X("", "ReduceMin", ReduceMin)                      \
  X("", "ReduceProd", ReduceProd)                    \
  X("", "LayerNormalization", LayerNormalization)
