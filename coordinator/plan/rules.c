/*
 * rules.c - the split-rule lookup: each op's planner rule (split class,
 * row rule, default axis) and the ops that split their weights (Gemm,
 * MatMul, Conv) with their preconditions.
 */
#include "plan_int.h"

/* X(op_type, split class, row rule, default of attribute "axis") */
#define OP_RULES(X)                                        \
  X("Relu", SPLIT_ELEM, row_bcast, 0)                      \
  X("Tanh", SPLIT_ELEM, row_bcast, 0)                      \
  X("Sigmoid", SPLIT_ELEM, row_bcast, 0)                   \
  X("Erf", SPLIT_ELEM, row_bcast, 0)                       \
  X("Exp", SPLIT_ELEM, row_bcast, 0)                       \
  X("Log", SPLIT_ELEM, row_bcast, 0)                       \
  X("Abs", SPLIT_ELEM, row_bcast, 0)                       \
  X("Neg", SPLIT_ELEM, row_bcast, 0)                       \
  X("Sqrt", SPLIT_ELEM, row_bcast, 0)                      \
  X("Reciprocal", SPLIT_ELEM, row_bcast, 0)                \
  X("Floor", SPLIT_ELEM, row_bcast, 0)                     \
  X("Ceil", SPLIT_ELEM, row_bcast, 0)                      \
  X("Round", SPLIT_ELEM, row_bcast, 0)                     \
  X("Sign", SPLIT_ELEM, row_bcast, 0)                      \
  X("Sin", SPLIT_ELEM, row_bcast, 0)                       \
  X("Cos", SPLIT_ELEM, row_bcast, 0)                       \
  X("Not", SPLIT_ELEM, row_bcast, 0)                       \
  X("LeakyRelu", SPLIT_ELEM, row_bcast, 0)                 \
  X("Elu", SPLIT_ELEM, row_bcast, 0)                       \
  X("Selu", SPLIT_ELEM, row_bcast, 0)                      \
  X("Celu", SPLIT_ELEM, row_bcast, 0)                      \
  X("Softplus", SPLIT_ELEM, row_bcast, 0)                  \
  X("Softsign", SPLIT_ELEM, row_bcast, 0)                  \
  X("HardSigmoid", SPLIT_ELEM, row_bcast, 0)               \
  X("HardSwish", SPLIT_ELEM, row_bcast, 0)                 \
  X("Mish", SPLIT_ELEM, row_bcast, 0)                      \
  X("Gelu", SPLIT_ELEM, row_bcast, 0)                      \
  X("ThresholdedRelu", SPLIT_ELEM, row_bcast, 0)           \
  X("PRelu", SPLIT_ELEM, row_bcast, 0)                     \
  X("Clip", SPLIT_ELEM, row_bcast, 0)                      \
  X("Cast", SPLIT_ELEM, row_bcast, 0)                      \
  X("Identity", SPLIT_ELEM, row_bcast, 0)                  \
  X("Dropout", SPLIT_ELEM, row_bcast, 0)                   \
  X("Add", SPLIT_ELEM, row_bcast, 0)                       \
  X("Sub", SPLIT_ELEM, row_bcast, 0)                       \
  X("Mul", SPLIT_ELEM, row_bcast, 0)                       \
  X("Div", SPLIT_ELEM, row_bcast, 0)                       \
  X("Pow", SPLIT_ELEM, row_bcast, 0)                       \
  X("Max", SPLIT_ELEM, row_bcast, 0)                       \
  X("Min", SPLIT_ELEM, row_bcast, 0)                       \
  X("Sum", SPLIT_ELEM, row_bcast, 0)                       \
  X("Where", SPLIT_ELEM, row_bcast, 0)                     \
  X("Equal", SPLIT_ELEM, row_bcast, 0)                     \
  X("Less", SPLIT_ELEM, row_bcast, 0)                      \
  X("Greater", SPLIT_ELEM, row_bcast, 0)                   \
  X("LessOrEqual", SPLIT_ELEM, row_bcast, 0)               \
  X("GreaterOrEqual", SPLIT_ELEM, row_bcast, 0)            \
  X("And", SPLIT_ELEM, row_bcast, 0)                       \
  X("Or", SPLIT_ELEM, row_bcast, 0)                        \
  X("Xor", SPLIT_ELEM, row_bcast, 0)                       \
  X("BatchNormalization", SPLIT_CHANNEL, row_any, 0)       \
  X("InstanceNormalization", SPLIT_CHANNEL, row_any, 0)    \
  X("MaxPool", SPLIT_CHANNEL, row_any, 0)                  \
  X("AveragePool", SPLIT_CHANNEL, row_any, 0)              \
  X("GlobalAveragePool", SPLIT_CHANNEL, row_any, 0)        \
  X("GlobalMaxPool", SPLIT_CHANNEL, row_any, 0)            \
  X("Conv", SPLIT_NONE, row_any, 0)                        \
  X("LRN", SPLIT_NONE, row_any, 0)                         \
  X("Gemm", SPLIT_NONE, row_gemm, 0)                       \
  X("MatMul", SPLIT_NONE, row_matmul, 0)                   \
  X("Softmax", SPLIT_NONE, row_axis, -1)                   \
  X("LogSoftmax", SPLIT_NONE, row_axis, -1)                \
  X("Hardmax", SPLIT_NONE, row_axis, -1)                   \
  X("LayerNormalization", SPLIT_NONE, row_axis, -1)        \
  X("Flatten", SPLIT_NONE, row_axis, 1)                    \
  X("Split", SPLIT_NONE, row_axis, 0)                      \
  X("Concat", SPLIT_NONE, row_concat, 0)                   \
  X("Reshape", SPLIT_NONE, row_reshape, 0)                 \
  X("Transpose", SPLIT_NONE, row_transpose, 0)             \
  X("Gather", SPLIT_NONE, row_gather, 0)                   \
  X("Squeeze", SPLIT_NONE, row_axes, 0)                    \
  X("Unsqueeze", SPLIT_NONE, row_axes, 0)                  \
  X("Slice", SPLIT_NONE, row_axes, 0)                      \
  X("ReduceMean", SPLIT_NONE, row_axes, 0)                 \
  X("ReduceSum", SPLIT_NONE, row_axes, 0)                  \
  X("ReduceMax", SPLIT_NONE, row_axes, 0)                  \
  X("ReduceMin", SPLIT_NONE, row_axes, 0)                  \
  X("ReduceProd", SPLIT_NONE, row_axes, 0)                 \
  X("ReduceL2", SPLIT_NONE, row_axes, 0)

static const op_rule op_rules[] = {
#define TS_X(op, split, row, axis) {op, split, row, axis},
    OP_RULES(TS_X)
#undef TS_X
};

static bool default_domain(const ts_node *n) {
  return !n->domain || !n->domain[0] || strcmp(n->domain, "ai.onnx") == 0;
}

/* The rule of a default-domain op; NULL for unknown ops (never split, never
 * row-wise). */
const op_rule *plan_rule_find(const ts_node *n) {
  if (!default_domain(n)) return NULL;
  for (size_t i = 0; i < sizeof op_rules / sizeof op_rules[0]; i++)
    if (strcmp(op_rules[i].op_type, n->op_type) == 0) return &op_rules[i];
  return NULL;
}

/* True when output j >= 1 of n is absent or unused (only output 0 may be
 * read by anything). */
bool plan_single_output(const ctx *c, const ts_node *n) {
  if (n->n_outputs < 1 || n->outputs[0] < 0) return false;
  for (int j = 1; j < n->n_outputs; j++) {
    int v = n->outputs[j];
    if (v >= 0 && (c->cons_off[v + 1] > c->cons_off[v] ||
                   c->g->values[v].is_graph_output))
      return false;
  }
  return true;
}

/* Shared preconditions of the weight-splitting ops: input 0 non-constant,
 * weight constant of rank >= min_rank with a known element size, bias
 * absent or constant, and one output. */
static bool weights_usable(const ctx *c, const ts_node *n, int min_rank,
                           int bias) {
  int x = in_value(n, 0), w = in_value(n, 1);
  if (x < 0 || is_const(c, x) || !is_const(c, w)) return false;
  if (cst(c, w)->rank < min_rank || ts_dtype_size(cst(c, w)->dtype) == 0)
    return false;
  int b = bias >= 0 ? in_value(n, bias) : -1;
  if (b >= 0 && !is_const(c, b)) return false;
  return plan_single_output(c, n);
}

static bool gemm_usable(const ctx *c, const ts_node *n, bool row) {
  (void)row;
  return weights_usable(c, n, 2, 2) && cst(c, in_value(n, 1))->rank == 2;
}

static bool matmul_usable(const ctx *c, const ts_node *n, bool row) {
  (void)row;
  return weights_usable(c, n, 2, -1) && cst(c, in_value(n, 1))->rank == 2 &&
         val(c, in_value(n, 0))->rank >= 1;
}

static bool conv_usable(const ctx *c, const ts_node *n, bool row) {
  (void)row;
  return weights_usable(c, n, 3, 2) && ts_attr_int(n, "group", 1) == 1;
}

static int gemm_weight_axis(const ts_node *n, bool row) {
  bool tb = ts_attr_int(n, "transB", 0) != 0;
  return row ? (tb ? 1 : 0) : (tb ? 0 : 1);
}

static int matmul_weight_axis(const ts_node *n, bool row) {
  (void)n;
  return row ? 0 : 1;
}

static int conv_weight_axis(const ts_node *n, bool row) {
  (void)n;
  return row ? 1 : 0;
}

static int gemm_in_axis(const ts_node *n, int rank) {
  (void)rank;
  return ts_attr_int(n, "transA", 0) ? 0 : 1;
}

static int matmul_in_axis(const ts_node *n, int rank) {
  (void)n;
  return rank - 1;
}

static int conv_in_axis(const ts_node *n, int rank) {
  (void)n, (void)rank;
  return 1;
}

static const split_op split_ops[] = {
    {"Gemm", gemm_usable, gemm_weight_axis, gemm_in_axis, -1, 2},
    {"MatMul", matmul_usable, matmul_weight_axis, matmul_in_axis, -1, -1},
    {"Conv", conv_usable, conv_weight_axis, conv_in_axis, 1, 2},
};

const split_op *plan_split_op_find(const ts_node *n) {
  if (!default_domain(n)) return NULL;
  for (size_t i = 0; i < sizeof split_ops / sizeof split_ops[0]; i++)
    if (strcmp(split_ops[i].op_type, n->op_type) == 0) return &split_ops[i];
  return NULL;
}
