#include "op_list.h"

/* Ops of the "elementwise" family, one line each (columns: op_list.h):
 * E(X, domain, op_type, symbol, split, row, axis, weights); the kernel
 * file defines `const ts_op ts_op_<symbol>`. */
#define TS_OP_TABLE_ELEMENTWISE(E, X)                              \
  E(X, "", "Add", Add, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Sub", Sub, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Mul", Mul, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Div", Div, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Pow", Pow, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Equal", Equal, ELEM, BCAST, 0, NONE)                   \
  E(X, "", "Less", Less, ELEM, BCAST, 0, NONE)                     \
  E(X, "", "Greater", Greater, ELEM, BCAST, 0, NONE)               \
  E(X, "", "LessOrEqual", LessOrEqual, ELEM, BCAST, 0, NONE)       \
  E(X, "", "GreaterOrEqual", GreaterOrEqual, ELEM, BCAST, 0, NONE) \
  E(X, "", "And", And, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Or", Or, ELEM, BCAST, 0, NONE)                         \
  E(X, "", "Xor", Xor, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Max", Max, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Min", Min, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Sum", Sum, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Relu", Relu, ELEM, BCAST, 0, NONE)                     \
  E(X, "", "Sigmoid", Sigmoid, ELEM, BCAST, 0, NONE)               \
  E(X, "", "Tanh", Tanh, ELEM, BCAST, 0, NONE)                     \
  E(X, "", "Sqrt", Sqrt, ELEM, BCAST, 0, NONE)                     \
  E(X, "", "Exp", Exp, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Log", Log, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Erf", Erf, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Neg", Neg, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Reciprocal", Reciprocal, ELEM, BCAST, 0, NONE)         \
  E(X, "", "Abs", Abs, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "Floor", Floor, ELEM, BCAST, 0, NONE)                   \
  E(X, "", "Ceil", Ceil, ELEM, BCAST, 0, NONE)                     \
  E(X, "", "Not", Not, ELEM, BCAST, 0, NONE)                       \
  E(X, "", "LeakyRelu", LeakyRelu, ELEM, BCAST, 0, NONE)           \
  E(X, "", "Clip", Clip, ELEM, BCAST, 0, NONE)                     \
  E(X, "", "Cast", Cast, ELEM, BCAST, 0, NONE)                     \
  E(X, "", "Where", Where, ELEM, BCAST, 0, NONE)                   \
  E(X, "", "Expand", Expand, NONE, NONE, 0, NONE)
#define TS_OPS_ELEMENTWISE(X) TS_OP_TABLE_ELEMENTWISE(TS_OP_KERNEL, X)
