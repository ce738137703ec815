/*
 * tensor.c - tensor-parallel layout: split groups grown from a column-split
 * op (element-wise followers, the Megatron row pairing, ROW_SLICE), and
 * the layout of a range of live nodes into split and whole stages.
 */
#include "plan_int.h"

/* How constant input j of node n (in a group split along `axis` of size
 * dim, split tensors of rank r) is sliced: sets *sl_axis to the constant's
 * axis to slice, or -1 to keep it whole. False when the constant varies
 * along the split axis in a way slices cannot follow. */
bool plan_elem_const_axis(const ctx *c, int v, int axis, int r, int64_t dim,
                          int *sl_axis) {
  const ts_tensor *t = cst(c, v);
  *sl_axis = -1;
  int a;
  if (axis < 0) {
    a = t->rank - 1;
  } else {
    if (t->rank > r) return false;
    a = axis - (r - t->rank);
  }
  if (a < 0) return true;
  if (t->dims[a] == 1) return true;
  if (t->dims[a] != dim || ts_dtype_size(t->dtype) == 0) return false;
  *sl_axis = a;
  return true;
}

/* True when node n can join split stage s as an element-wise (or
 * per-channel) op: all its non-constant inputs are split tensors of s of
 * one known rank, and its constants can be sliced to match. */
static bool elem_joins(const ctx *c, const ts_node *n, int s) {
  const op_rule *r = plan_rule_find(n);
  const lstage *st = &c->st[s];
  if (!r || r->split == TS_OP_SPLIT_NONE || !plan_single_output(c, n))
    return false;
  if (r->split == TS_OP_SPLIT_CHANNEL) {
    int x = in_value(n, 0);
    if (st->axis != 1 || x < 0 || c->value_stage[x] != s ||
        c->value_kind[x] != VK_SPLIT)
      return false;
    for (int j = 1; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      if (v < 0) continue;
      if (!is_const(c, v) || cst(c, v)->rank != 1 ||
          cst(c, v)->dims[0] != st->dim ||
          ts_dtype_size(cst(c, v)->dtype) == 0)
        return false;
    }
    return true;
  }
  int rank = -2;
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j];
    if (v < 0 || is_const(c, v)) continue;
    if (c->value_stage[v] != s || c->value_kind[v] != VK_SPLIT) return false;
    int rv = val(c, v)->rank;
    if (rv < 1 || (rank != -2 && rv != rank)) return false;
    rank = rv;
  }
  if (rank == -2) return false;
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j], a;
    if (is_const(c, v) &&
        !plan_elem_const_axis(c, v, st->axis, rank, st->dim, &a))
      return false;
  }
  return true;
}

/* True when node n can join split stage s as the row-split half of a
 * Megatron pair: a weight-splitting op reading a split tensor of s as
 * input 0 whose feature axis is the split axis. */
static bool row_joins(const ctx *c, const ts_node *n, int s) {
  const split_op *op = plan_split_op_find(n);
  const lstage *st = &c->st[s];
  int x = in_value(n, 0);
  if (!op || x < 0 || c->value_stage[x] != s || c->value_kind[x] != VK_SPLIT)
    return false;
  if (!op->usable(c, n, true) || op->out_axis != st->axis) return false;
  if (strcmp(n->op_type, "Gemm") == 0 && ts_attr_int(n, "transA", 0) != 0)
    return false;
  const ts_tensor *w = cst(c, in_value(n, 1));
  return w->dims[op->weight_axis(n, true)] == st->dim;
}

/* Grows a split group from its column-split op `a` (at live position pa),
 * within live positions [pa, hi). */
static int grow_group(ctx *c, int a, int s, int hi) {
  int rc = plan_stage_add(c, s, a, ROLE_COL);
  if (rc) return rc;
  int y = c->g->nodes[a].outputs[0];
  c->value_stage[y] = s;
  c->value_kind[y] = VK_SPLIT;
  /* Scan forward in topological order while some consumer of a split
   * tensor lies ahead: every node that may join is such a consumer. */
  int last = -1;
  for (int q = c->cons_off[y]; q < c->cons_off[y + 1]; q++)
    if (c->pos[c->cons[q]] > last) last = c->pos[c->cons[q]];
  for (int p = c->pos[a] + 1; p <= last && p < hi; p++) {
    int i = c->live[p];
    const ts_node *n = &c->g->nodes[i];
    if (c->node_stage[i] >= 0) continue;
    if (elem_joins(c, n, s)) {
      if ((rc = plan_stage_add(c, s, i, ROLE_ELEM))) return rc;
      int v = n->outputs[0];
      c->value_stage[v] = s;
      c->value_kind[v] = VK_SPLIT;
      for (int q = c->cons_off[v]; q < c->cons_off[v + 1]; q++)
        if (c->pos[c->cons[q]] > last) last = c->pos[c->cons[q]];
    } else if (row_joins(c, n, s)) {
      if ((rc = plan_stage_add(c, s, i, ROLE_ROW))) return rc;
      c->value_stage[n->outputs[0]] = s;
      c->value_kind[n->outputs[0]] = VK_PARTIAL;
    }
  }
  return TS_OK;
}

/* Tries to start a split group at node i with up to `ways` shards: by
 * output columns when there are at least two, else by input features. */
static int try_group(ctx *c, int i, int ways, int hi, bool *made) {
  const ts_node *n = &c->g->nodes[i];
  const split_op *op = plan_split_op_find(n);
  *made = false;
  if (!op || ways < 2 || !op->usable(c, n, false)) return TS_OK;
  const ts_tensor *w = cst(c, in_value(n, 1));
  int64_t cols = w->dims[op->weight_axis(n, false)];
  int64_t rows = w->dims[op->weight_axis(n, true)];
  role r = ROLE_COL;
  int64_t dim = cols;
  if (cols < 2) {
    int xr = val(c, in_value(n, 0))->rank;
    if (rows < 2 || !c->has_slice || xr < 1) return TS_OK;
    r = ROLE_ROW_SLICE;
    dim = rows;
  }
  int w_eff = dim < ways ? (int)dim : ways;
  int s = plan_stage_new(c, w_eff, op->out_axis, dim);
  if (s < 0) return TS_ENOMEM;
  *made = true;
  if (r == ROLE_COL) return grow_group(c, i, s, hi);
  int rc = plan_stage_add(c, s, i, ROLE_ROW_SLICE);
  if (rc) return rc;
  c->value_stage[n->outputs[0]] = s;
  c->value_kind[n->outputs[0]] = VK_PARTIAL;
  return TS_OK;
}

/* Lays out live positions [lo, hi): split groups with `ways` shards (or
 * block splits, with a grid) where possible (ways <= 1: never), consecutive
 * other nodes in whole stages. */
int plan_layout_range(ctx *c, int lo, int hi, int ways) {
  int whole = -1;
  for (int p = lo; p < hi; p++) {
    int i = c->live[p];
    if (c->node_stage[i] >= 0) continue;
    bool made = false;
    int rc = c->grid_rows ? plan_try_block(c, i, &made)
                          : try_group(c, i, ways, hi, &made);
    if (rc) return rc;
    if (made) {
      whole = -1;
      continue;
    }
    if (whole < 0 && (whole = plan_stage_new(c, 1, 0, 1)) < 0) return TS_ENOMEM;
    if ((rc = plan_stage_add(c, whole, i, ROLE_WHOLE))) return rc;
  }
  return TS_OK;
}
