#include "op_list.h"

/* Ops of the "ml" family, one line each (columns: op_list.h):
 * E(X, domain, op_type, symbol, split, row, axis, weights); the kernel
 * file defines `const ts_op ts_op_<symbol>`. */
#define TS_OP_TABLE_ML(E, X)                                                        \
  E(X, "ai.onnx.ml", "LinearRegressor", ml_linear_regressor, NONE, NONE, 0, NONE)   \
  E(X, "ai.onnx.ml", "LinearClassifier", ml_linear_classifier, NONE, NONE, 0, NONE) \
  E(X, "ai.onnx.ml", "SVMRegressor", ml_svm_regressor, NONE, NONE, 0, NONE)         \
  E(X, "ai.onnx.ml", "SVMClassifier", ml_svm_classifier, NONE, NONE, 0, NONE)       \
  E(X, "ai.onnx.ml", "Normalizer", ml_normalizer, NONE, NONE, 0, NONE)              \
  E(X, "ai.onnx.ml", "Scaler", ml_scaler, NONE, NONE, 0, NONE)
#define TS_OPS_ML(X) TS_OP_TABLE_ML(TS_OP_KERNEL, X)
