/*
 * context.c - the planner's context: live nodes in topological order,
 * consumer lists, per-node constant bytes, and the layout stages that
 * the strategies fill (shard ranges of a stage's split dim included).
 */
#include "plan_int.h"

/* Shard k's range [*start, *end) of the split dim: shard k of a 1-D split,
 * column j = k % C of a block grid. */
void plan_split_range(const lstage *st, int k, int64_t *start, int64_t *end) {
  int ways = split_ways(st), j = k % ways;
  *start = part_start(st->dim, ways, j);
  *end = part_start(st->dim, ways, j + 1);
}

/* Shard k's range of input features it reads: a ROW_SLICE stage's split
 * dim, or row i = k / C of a block grid. */
void plan_feature_range(const lstage *st, role r, int k, int64_t *start,
                        int64_t *end) {
  if (r != ROLE_BLOCK) {
    plan_split_range(st, k, start, end);
    return;
  }
  int i = k / split_ways(st);
  *start = part_start(st->kdim, st->rows, i);
  *end = part_start(st->kdim, st->rows, i + 1);
}

/* Share of the node's work (and of its weight) shard k does. */
double plan_shard_share(const lstage *st, int k) {
  int64_t a, b;
  if (st->ways < 2) return 1.0;
  plan_split_range(st, k, &a, &b);
  double share = (double)(b - a) / (double)st->dim;
  if (st->rows > 1) {
    plan_feature_range(st, ROLE_BLOCK, k, &a, &b);
    share *= (double)(b - a) / (double)st->kdim;
  }
  return share;
}

/* Rejects nodes whose attributes hold subgraphs: they may read outer-scope
 * tensors implicitly, which a cut cannot see. */
static int check_no_subgraph(const ts_node *n, ts_err *err) {
  if (!n->proto) return TS_OK;
  for (size_t i = 0; i < n->proto->n_attribute; i++) {
    const Onnx__AttributeProto *a = n->proto->attribute[i];
    if (a && (a->g || a->n_graphs)) {
      char d[160];
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "%s: attribute '%s' holds a subgraph; models with "
                        "control flow cannot be partitioned",
                        ts_node_desc(n, d, sizeof d), a->name ? a->name : "");
    }
  }
  return TS_OK;
}

/* Liveness, positions, consumer lists and per-node constant bytes. */
int plan_ctx_init(ctx *c, const ts_model *m, ts_err *err) {
  memset(c, 0, sizeof *c);
  c->m = m;
  c->g = &m->graph;
  const ts_graph *g = c->g;
  int nv = g->n_values, nn = g->n_nodes;
  bool *needed = calloc((size_t)nv + 1, sizeof *needed);
  c->live = calloc((size_t)nn + 1, sizeof *c->live);
  c->pos = malloc(((size_t)nn + 1) * sizeof *c->pos);
  c->cons_off = calloc((size_t)nv + 1, sizeof *c->cons_off);
  c->node_bytes = calloc((size_t)nn + 1, sizeof *c->node_bytes);
  c->node_stage = malloc(((size_t)nn + 1) * sizeof *c->node_stage);
  c->node_role = calloc((size_t)nn + 1, 1);
  c->value_stage = malloc(((size_t)nv + 1) * sizeof *c->value_stage);
  c->value_kind = calloc((size_t)nv + 1, 1);
  if (!needed || !c->live || !c->pos || !c->cons_off || !c->node_bytes ||
      !c->node_stage || !c->node_role || !c->value_stage || !c->value_kind) {
    free(needed);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  c->has_slice = ts_op_find("", "Slice") != NULL;

  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    if (v < 0 || v >= nv) continue;
    if (g->values[v].producer < 0) {
      free(needed);
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "graph output '%s' is %s, not computed by a node; "
                        "such models cannot be partitioned",
                        g->values[v].name,
                        g->values[v].constant ? "a constant" : "a graph input");
    }
    needed[v] = true;
  }
  /* Backwards: a node is live when it computes a needed, non-constant
   * value; its non-constant inputs become needed. */
  bool *is_live = calloc((size_t)nn + 1, sizeof *is_live);
  if (!is_live) {
    free(needed);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  for (int i = nn - 1; i >= 0; i--) {
    const ts_node *n = &g->nodes[i];
    bool live = false;
    for (int j = 0; j < n->n_outputs; j++) {
      int v = n->outputs[j];
      if (v >= 0 && needed[v] && !is_const(c, v)) live = true;
    }
    if (!live) continue;
    is_live[i] = true;
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      if (v >= 0 && !is_const(c, v)) needed[v] = true;
    }
  }
  free(needed);
  int rc = TS_OK;
  for (int i = 0; i < nn; i++) {
    c->pos[i] = -1;
    if (!is_live[i]) continue;
    rc = check_no_subgraph(&g->nodes[i], err);
    if (rc) break;
    c->pos[i] = c->n_live;
    c->live[c->n_live++] = i;
  }
  free(is_live);
  if (rc) return rc;

  /* Consumer lists (CSR over live nodes, each node once per value). */
  for (int p = 0; p < c->n_live; p++) {
    const ts_node *n = &g->nodes[c->live[p]];
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      bool dup = false;
      for (int q = 0; q < j; q++) dup |= n->inputs[q] == v;
      if (v >= 0 && !dup) c->cons_off[v + 1]++;
    }
  }
  for (int v = 0; v < nv; v++) c->cons_off[v + 1] += c->cons_off[v];
  c->cons = malloc(((size_t)c->cons_off[nv] + 1) * sizeof *c->cons);
  int *fill = calloc((size_t)nv + 1, sizeof *fill);
  if (!c->cons || !fill) {
    free(fill);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  for (int p = 0; p < c->n_live; p++) {
    const ts_node *n = &g->nodes[c->live[p]];
    double bytes = 0;
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      bool dup = false;
      for (int q = 0; q < j; q++) dup |= n->inputs[q] == v;
      if (v < 0 || dup) continue;
      c->cons[c->cons_off[v] + fill[v]++] = c->live[p];
      if (is_const(c, v)) bytes += (double)cst(c, v)->nbytes;
    }
    c->node_bytes[c->live[p]] = bytes;
  }
  free(fill);
  return TS_OK;
}

void plan_layout_reset(ctx *c) {
  for (int i = 0; i < c->n_st; i++) free(c->st[i].nodes);
  c->n_st = 0;
  for (int i = 0; i < c->g->n_nodes; i++) {
    c->node_stage[i] = -1;
    c->node_role[i] = ROLE_WHOLE;
  }
  for (int v = 0; v < c->g->n_values; v++) {
    c->value_stage[v] = -1;
    c->value_kind[v] = VK_NONE;
  }
}

void plan_ctx_free(ctx *c) {
  /* plan_ctx_init may have failed with only some of the arrays made */
  if (c->node_stage && c->node_role && c->value_stage && c->value_kind)
    plan_layout_reset(c);
  free(c->st);
  free(c->live);
  free(c->pos);
  free(c->cons_off);
  free(c->cons);
  free(c->node_bytes);
  free(c->node_stage);
  free(c->node_role);
  free(c->value_stage);
  free(c->value_kind);
  memset(c, 0, sizeof *c);
}

int plan_stage_new(ctx *c, int ways, int axis, int64_t dim) {
  if (plan_grow(&c->st, &c->cap_st, c->n_st + 1, sizeof *c->st)) return -1;
  lstage *s = &c->st[c->n_st];
  memset(s, 0, sizeof *s);
  s->ways = ways;
  s->axis = axis;
  s->dim = dim;
  s->rows = 1;
  return c->n_st++;
}

int plan_stage_add(ctx *c, int s, int node, role r) {
  lstage *st = &c->st[s];
  if (plan_grow(&st->nodes, &st->cap, st->n_nodes + 1, sizeof *st->nodes))
    return TS_ENOMEM;
  st->nodes[st->n_nodes++] = node;
  c->node_stage[node] = s;
  c->node_role[node] = (uint8_t)r;
  return TS_OK;
}
