/*
 * rules.c - the split-rule lookup: each op's planner rule (split class,
 * row rule, default axis) and the ops that split their weights (Gemm,
 * MatMul, Conv) with their preconditions.
 */
#include "plan_int.h"

#include "list_cnn.h"
#include "list_core.h"
#include "list_elementwise.h"
#include "list_ml.h"
#include "list_quant.h"
#include "list_transformer.h"
#include "op_list.h"

/* The planner's columns of the one op table (op_list.h): a rule for every
 * op that has a kernel, and for no other op. */
#define RULE(X, domain, op_type, symbol, split, row, axis, weights) \
  {domain, op_type, TS_OP_SPLIT_##split, TS_OP_ROW_##row, axis,      \
   TS_OP_WEIGHTS_##weights},
static const op_rule op_rules[] = {TS_OP_TABLE(RULE, )};
#undef RULE

/* "" for the default domain (NULL, "" or "ai.onnx"), as the engine reads
 * it (ops.h). */
static const char *canonical_domain(const char *domain) {
  return !domain || strcmp(domain, "ai.onnx") == 0 ? "" : domain;
}

const op_rule *plan_rule_find(const ts_node *n) {
  const char *d = canonical_domain(n->domain);
  for (size_t i = 0; i < sizeof op_rules / sizeof op_rules[0]; i++)
    if (strcmp(op_rules[i].op_type, n->op_type) == 0 &&
        strcmp(op_rules[i].domain, d) == 0)
      return &op_rules[i];
  return NULL;
}

const op_rule *plan_rules(int *count) {
  *count = (int)(sizeof op_rules / sizeof op_rules[0]);
  return op_rules;
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

/* Indexed by the weights column of the op table. */
static const split_op split_ops[] = {
    [TS_OP_WEIGHTS_NONE] = {NULL, NULL, NULL, 0, 0},
    [TS_OP_WEIGHTS_GEMM] = {gemm_usable, gemm_weight_axis, gemm_in_axis, -1, 2},
    [TS_OP_WEIGHTS_MATMUL] = {matmul_usable, matmul_weight_axis, matmul_in_axis,
                              -1, -1},
    [TS_OP_WEIGHTS_CONV] = {conv_usable, conv_weight_axis, conv_in_axis, 1, 2},
};
_Static_assert(sizeof split_ops / sizeof split_ops[0] == TS_OP_WEIGHTS_COUNT,
               "one split_ops entry per ts_op_weights value");

const split_op *plan_split_op_find(const ts_node *n) {
  const op_rule *r = plan_rule_find(n);
  if (!r || r->weights == TS_OP_WEIGHTS_NONE) return NULL;
  return &split_ops[r->weights];
}
