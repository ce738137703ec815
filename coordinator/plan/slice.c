/*
 * slice.c - weight slicing: how shard k of a stage cuts each constant its
 * nodes read (or drops it: a bias outside shard 0), and the weight bytes
 * that leaves the shard.
 */
#include "plan_int.h"

static void cut_add(const_cut *ct, int axis, int64_t start, int64_t end) {
  ct->axis[ct->n] = axis;
  ct->start[ct->n] = start;
  ct->end[ct->n] = end;
  ct->n++;
}

static bool cut_equal(const const_cut *a, const const_cut *b) {
  if (a->n != b->n) return false;
  for (int q = 0; q < a->n; q++)
    if (a->axis[q] != b->axis[q] || a->start[q] != b->start[q] ||
        a->end[q] != b->end[q])
      return false;
  return true;
}

/* Bytes of a (possibly sliced) constant. */
size_t plan_spec_bytes(const ctx *c, const init_spec *sp) {
  if (sp->value < 0) {
    return (size_t)ts_shape_nbytes(sp->dtype, sp->dims, sp->rank);
  }
  const ts_tensor *t = cst(c, sp->value);
  size_t bytes = t->nbytes;
  for (int q = 0; q < sp->cut.n; q++) {
    int64_t d = t->dims[sp->cut.axis[q]];
    if (d == 0) return 0;
    bytes = bytes / (size_t)d * (size_t)(sp->cut.end[q] - sp->cut.start[q]);
  }
  return bytes;
}

/* What shard k must do with input j of node i (in stage s): keep the
 * value, cut a constant (ct->n > 0), or drop it (returns false: the bias of
 * a ROW op outside shard 0, of a block outside grid row 0). */
bool plan_input_slice(const ctx *c, int s, int k, int i, int j, const_cut *ct) {
  const lstage *st = &c->st[s];
  const ts_node *n = &c->g->nodes[i];
  int v = n->inputs[j];
  memset(ct, 0, sizeof *ct);
  if (st->ways < 2 || !is_const(c, v)) return true;
  int64_t start, end;
  plan_split_range(st, k, &start, &end);
  role r = c->node_role[i];
  if (r == ROLE_ELEM) {
    const op_rule *rule = plan_rule_find(n);
    int axis = 0;
    if (!rule || rule->split != TS_OP_SPLIT_CHANNEL) {
      int rank = -1;
      for (int q = 0; q < n->n_inputs && rank < 0; q++)
        if (n->inputs[q] >= 0 && !is_const(c, n->inputs[q]))
          rank = val(c, n->inputs[q])->rank;
      plan_elem_const_axis(c, v, st->axis, rank, st->dim, &axis);
    }
    if (axis >= 0) cut_add(ct, axis, start, end);
    return true;
  }
  const split_op *op = plan_split_op_find(n);
  bool row = r == ROLE_ROW || r == ROLE_ROW_SLICE;
  /* A block cuts its weight's features by grid row (R > 1) and its columns
   * by grid column (C > 1); row i > 0 drops the bias. */
  bool block_rows = r == ROLE_BLOCK && st->rows > 1;
  bool block_cols = r == ROLE_BLOCK && split_ways(st) > 1;
  if (j == 1) {
    if (block_rows) {
      int64_t a, b;
      plan_feature_range(st, r, k, &a, &b);
      cut_add(ct, op->weight_axis(n, true), a, b);
    }
    if (r != ROLE_BLOCK || block_cols)
      cut_add(ct, op->weight_axis(n, row), start, end);
  } else if (j == op->bias) {
    if (row) return k == 0;
    if (r == ROLE_BLOCK && k >= split_ways(st)) return false;
    /* Column split: slice the bias's last axis where it has the columns. */
    const ts_tensor *b = cst(c, v);
    if ((r != ROLE_BLOCK || block_cols) && b->rank >= 1 &&
        b->dims[b->rank - 1] == st->dim)
      cut_add(ct, b->rank - 1, start, end);
  }
  return true;
}

/* Finds or adds the spec (v, cut) in list; returns its index or -1 when out
 * of memory. */
int plan_spec_intern(init_spec **list, int *n, int *cap, int v,
                     const const_cut *ct) {
  for (int q = 0; q < *n; q++) {
    init_spec *sp = &(*list)[q];
    if (sp->value == v && cut_equal(&sp->cut, ct)) return q;
  }
  if (plan_grow(list, cap, *n + 1, sizeof **list)) return -1;
  init_spec *sp = &(*list)[*n];
  memset(sp, 0, sizeof *sp);
  sp->value = v;
  sp->cut = *ct;
  return (*n)++;
}

/* The weight bytes of shard k of stage s (its distinct sliced constants). */
int plan_shard_weight(const ctx *c, int s, int k, size_t *bytes) {
  init_spec *list = NULL;
  int n = 0, cap = 0;
  *bytes = 0;
  const lstage *st = &c->st[s];
  for (int q = 0; q < st->n_nodes; q++) {
    const ts_node *node = &c->g->nodes[st->nodes[q]];
    for (int j = 0; j < node->n_inputs; j++) {
      int v = node->inputs[j];
      const_cut ct;
      if (!is_const(c, v)) continue;
      if (!plan_input_slice(c, s, k, st->nodes[q], j, &ct)) continue;
      int before = n;
      int idx = plan_spec_intern(&list, &n, &cap, v, &ct);
      if (idx < 0) {
        free(list);
        return TS_ENOMEM;
      }
      if (n > before) *bytes += plan_spec_bytes(c, &list[idx]);
    }
  }
  free(list);
  return TS_OK;
}
