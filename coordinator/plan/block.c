/*
 * block.c - block (2-D) splits: one Gemm, MatMul or Conv on an R x C grid
 * (shard k = i*C + j holds the weight block [K_i, N_j]), and the nested
 * fusions that sum each column and concatenate the columns (plan.h).
 */
#include "plan_int.h"

#include <stdio.h>

/* Tries a block split of node i on the context's grid, clamped to the
 * weight's dims (R <= input features, C <= output columns; R = 1 when the
 * input cannot be sliced): a stage of the node alone, R * C >= 2 shards.
 * Shard k = i*C + j reads features K_i of input 0 (an inserted Slice when
 * R > 1) and holds the weight block [K_i, N_j]. */
int plan_try_block(ctx *c, int i, bool *made) {
  const ts_node *n = &c->g->nodes[i];
  const split_op *op = plan_split_op_find(n);
  *made = false;
  if (!op || !op->usable(c, n, true)) return TS_OK;
  const ts_tensor *w = cst(c, in_value(n, 1));
  int64_t cols = w->dims[op->weight_axis(n, false)];
  int64_t rows = w->dims[op->weight_axis(n, true)];
  int r = rows < c->grid_rows ? (int)rows : c->grid_rows;
  int k = cols < c->grid_cols ? (int)cols : c->grid_cols;
  if (!c->has_slice || val(c, in_value(n, 0))->rank < 1) r = 1;
  if (r < 1 || k < 1 || r * k < 2) return TS_OK;
  int s = plan_stage_new(c, r * k, op->out_axis, cols);
  if (s < 0) return TS_ENOMEM;
  c->st[s].rows = r;
  c->st[s].kdim = rows;
  *made = true;
  int rc = plan_stage_add(c, s, i, ROLE_BLOCK);
  if (rc) return rc;
  c->value_stage[n->outputs[0]] = s;
  c->value_kind[n->outputs[0]] = VK_BLOCK;
  return TS_OK;
}

/* The fusions of block-split value v of stage s (see plan.h, "Fusions
 * nest"): one row or one column needs one fusion; a full grid sums each
 * column's R parts into "<v>.col<j>", then concatenates the columns. */
int plan_block_fusions(const ctx *c, int s, int v, ts_stage *out, int *cap,
                       ts_err *err) {
  const lstage *st = &c->st[s];
  const char *name = val(c, v)->name;
  int cols = split_ways(st);
  if (st->rows == 1 || cols == 1)
    return plan_add_fusion(out, cap, name,
                           cols > 1 ? TS_FUSE_CONCAT : TS_FUSE_SUM, st->axis,
                           name, "part", 0, 1, st->ways);
  for (int j = 0; j < cols; j++) {
    char col[512];
    snprintf(col, sizeof col, "%s.col%d", name, j);
    if (ts_graph_find_value(c->g, col) >= 0)
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "tensor name '%s' is used by the model and by the "
                        "partitioner's naming scheme",
                        col);
    int rc = plan_add_fusion(out, cap, col, TS_FUSE_SUM, 0, name, "part", j,
                             cols, st->rows);
    if (rc) return rc;
  }
  return plan_add_fusion(out, cap, name, TS_FUSE_CONCAT, st->axis, name, "col",
                         0, 1, cols);
}
