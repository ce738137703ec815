/* Ops of the "ml" family: X(domain, op_type, symbol); the kernel file
 * defines `const ts_op ts_op_<symbol>`. One line per op. */
#define TS_OPS_ML(X)                                        \
  X("ai.onnx.ml", "LinearRegressor", ml_linear_regressor)   \
  X("ai.onnx.ml", "LinearClassifier", ml_linear_classifier) \
  X("ai.onnx.ml", "SVMRegressor", ml_svm_regressor)         \
  X("ai.onnx.ml", "SVMClassifier", ml_svm_classifier)       \
  X("ai.onnx.ml", "Normalizer", ml_normalizer)              \
  X("ai.onnx.ml", "Scaler", ml_scaler)
