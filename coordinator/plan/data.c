/*
 * data.c - data parallelism: the per-op row rules (the row column of the
 * op table) and the proof that a stage may be cut along its batch.
 *
 * Data parallelism (batch_splittable) is a conservative proof: every
 * non-constant tensor a stage reads or writes has a symbolic dim 0, and
 * every node passes its op's row rule (the row column of the op table,
 * kernels/list_*.h): row-wise ops
 * (element-wise with constants that do not vary along dim 0, Gemm/MatMul
 * with constant weights, Conv, pools, normalizations over axes != 0,
 * Softmax on axis != 0, Flatten with axis >= 1, Reshape whose constant shape
 * keeps dim 0 (0, or -1 with static rest of equal size), Transpose with
 * perm[0] == 0, Concat/Split/Slice/Squeeze/Unsqueeze/Reduce* away from
 * axis 0, Gather of an embedding table). Anything else (Shape, attention's
 * dynamic reshapes, ...) makes the stage not batch-splittable.
 */
#include "plan_int.h"

static bool dim0_symbolic(const ctx *c, int v) {
  return val(c, v)->rank >= 1 && val(c, v)->dims[0] < 0;
}

/* Normalizes axis for rank; -1 when out of range. */
static int norm_axis(int64_t axis, int rank) {
  if (axis < 0) axis += rank;
  return axis >= 0 && axis < rank ? (int)axis : -1;
}

static int out_rank(const ctx *c, const ts_node *n) {
  return n->n_outputs > 0 && n->outputs[0] >= 0 ? val(c, n->outputs[0])->rank
                                                : -1;
}

/* TS_OP_ROW_NONE: the op may mix rows (Shape, Range, ...). */
static bool row_none(const ctx *c, const ts_node *n) {
  (void)c, (void)n;
  return false;
}

/* Ops that work per sample on input 0 with constant parameters (Conv,
 * pools, normalizations): any non-constant input after the first would be
 * a batched tensor used as a parameter. */
static bool row_any(const ctx *c, const ts_node *n) {
  for (int j = 1; j < n->n_inputs; j++)
    if (n->inputs[j] >= 0 && !is_const(c, n->inputs[j])) return false;
  return true;
}

/* Broadcasting ops: non-constant inputs have the output's rank (their
 * dim 0 is the batch); constants do not vary along dim 0. */
static bool row_bcast(const ctx *c, const ts_node *n) {
  int r = out_rank(c, n);
  if (r < 1) return false;
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j];
    if (v < 0) continue;
    if (!is_const(c, v)) {
      if (val(c, v)->rank != r) return false;
    } else if (cst(c, v)->rank == r && cst(c, v)->dims[0] != 1) {
      return false;
    }
  }
  return true;
}

static bool row_axis(const ctx *c, const ts_node *n) {
  const op_rule *r = plan_rule_find(n);
  int x = in_value(n, 0);
  if (x < 0) return false;
  int a = norm_axis(ts_attr_int(n, "axis", r->default_axis), val(c, x)->rank);
  return a > 0;
}

static bool row_gemm(const ctx *c, const ts_node *n) {
  int b = in_value(n, 1), bias = in_value(n, 2);
  if (ts_attr_int(n, "transA", 0) != 0 || !is_const(c, b)) return false;
  if (bias >= 0 && (!is_const(c, bias) ||
                    (cst(c, bias)->rank == 2 && cst(c, bias)->dims[0] != 1)))
    return false;
  return true;
}

static bool row_matmul(const ctx *c, const ts_node *n) {
  int a = in_value(n, 0), b = in_value(n, 1);
  if (a < 0 || b < 0 || is_const(c, a)) return false;
  if (is_const(c, b)) return cst(c, b)->rank <= 2 && val(c, a)->rank >= 2;
  return val(c, a)->rank >= 3 && val(c, a)->rank == val(c, b)->rank;
}

/* Reshape keeps dim 0 when its constant shape starts with 0 (copy, without
 * allowzero), or with -1 when every other dim is static and the input's
 * non-batch elements equal the output's. */
static bool row_reshape(const ctx *c, const ts_node *n) {
  int x = in_value(n, 0), sv = in_value(n, 1);
  if (x < 0 || !is_const(c, sv)) return false;
  const ts_tensor *s = cst(c, sv);
  if (s->dtype != TS_DTYPE_INT64 || s->rank != 1 || s->dims[0] < 1)
    return false;
  const int64_t *shape = s->data;
  if (shape[0] == 0) return ts_attr_int(n, "allowzero", 0) == 0;
  if (shape[0] != -1) return false;
  const ts_value *xi = val(c, x);
  if (xi->rank < 1) return false;
  int64_t in_rest = ts_shape_numel(xi->dims + 1, xi->rank - 1);
  int64_t out_rest = 1;
  for (int64_t i = 1; i < s->dims[0]; i++) {
    if (shape[i] <= 0) return false;
    out_rest *= shape[i];
  }
  return in_rest > 0 && in_rest == out_rest;
}

static bool row_transpose(const ctx *c, const ts_node *n) {
  (void)c;
  const int64_t *perm;
  size_t count;
  if (ts_attr_ints(n, "perm", &perm, &count, NULL)) return false;
  return count >= 1 && perm[0] == 0;
}

static bool row_concat(const ctx *c, const ts_node *n) {
  for (int j = 0; j < n->n_inputs; j++)
    if (n->inputs[j] < 0 || is_const(c, n->inputs[j])) return false;
  return norm_axis(ts_attr_int(n, "axis", 0), out_rank(c, n)) > 0;
}

/* Gather rows of a constant table (embedding: the batch is the indices'),
 * or constant indices away from axis 0 of a batched tensor. */
static bool row_gather(const ctx *c, const ts_node *n) {
  int d = in_value(n, 0), i = in_value(n, 1);
  if (d < 0 || i < 0) return false;
  int64_t axis = ts_attr_int(n, "axis", 0);
  if (is_const(c, d) && !is_const(c, i))
    return norm_axis(axis, cst(c, d)->rank) == 0;
  if (!is_const(c, d) && is_const(c, i))
    return norm_axis(axis, val(c, d)->rank) > 0;
  return false;
}

/* Ops with an "axes" list (attribute, or constant input 1 / 3 for Slice):
 * row-wise when the axes are given and none is 0. Unsqueeze's axes index
 * the output. */
static bool row_axes(const ctx *c, const ts_node *n) {
  bool slice = strcmp(n->op_type, "Slice") == 0;
  bool unsq = strcmp(n->op_type, "Unsqueeze") == 0;
  int x = in_value(n, 0);
  if (x < 0) return false;
  int rank = unsq ? out_rank(c, n) : val(c, x)->rank;
  const int64_t *axes = NULL;
  size_t count = 0;
  int av = in_value(n, slice ? 3 : 1);
  if (ts_attr_ints(n, "axes", &axes, &count, NULL) != 0) {
    if (slice && n->n_inputs < 2) return false; /* opset < 10, no axes */
    if (!is_const(c, av) || cst(c, av)->dtype != TS_DTYPE_INT64 ||
        cst(c, av)->rank != 1)
      return false;
    axes = cst(c, av)->data;
    count = (size_t)cst(c, av)->dims[0];
  }
  if (slice)
    for (int j = 1; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0 && !is_const(c, n->inputs[j])) return false;
  if (count == 0 || rank < 1) return false;
  for (size_t q = 0; q < count; q++)
    if (norm_axis(axes[q], rank) <= 0) return false;
  return true;
}

/* The row rules, indexed by the row column of the op table. */
typedef bool (*row_rule)(const ctx *c, const ts_node *n);
static const row_rule row_rules[] = {
    [TS_OP_ROW_NONE] = row_none,       [TS_OP_ROW_ANY] = row_any,
    [TS_OP_ROW_BCAST] = row_bcast,     [TS_OP_ROW_AXIS] = row_axis,
    [TS_OP_ROW_GEMM] = row_gemm,       [TS_OP_ROW_MATMUL] = row_matmul,
    [TS_OP_ROW_RESHAPE] = row_reshape, [TS_OP_ROW_TRANSPOSE] = row_transpose,
    [TS_OP_ROW_CONCAT] = row_concat,   [TS_OP_ROW_GATHER] = row_gather,
    [TS_OP_ROW_AXES] = row_axes,
};
_Static_assert(sizeof row_rules / sizeof row_rules[0] == TS_OP_ROW_COUNT,
               "one row rule per ts_op_row value");

/* See the file comment: every non-constant tensor read or written has a
 * symbolic dim 0 and every node passes its op's row rule. */
bool plan_stage_batch_splittable(const ctx *c, int s) {
  const lstage *st = &c->st[s];
  for (int q = 0; q < st->n_nodes; q++) {
    const ts_node *n = &c->g->nodes[st->nodes[q]];
    const op_rule *r = plan_rule_find(n);
    if (!r || !row_rules[r->row](c, n)) return false;
    for (int j = 0; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0 && !is_const(c, n->inputs[j]) &&
          !dim0_symbolic(c, n->inputs[j]))
        return false;
    for (int j = 0; j < n->n_outputs; j++) {
      int v = n->outputs[j];
      if (v >= 0 && (c->cons_off[v + 1] > c->cons_off[v] ||
                     val(c, v)->is_graph_output) &&
          !dim0_symbolic(c, v))
        return false;
    }
  }
  return true;
}
