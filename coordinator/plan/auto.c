/*
 * auto.c - the `auto` strategy: the cheapest plan whose every shard fits
 * the workers' memory.
 *
 * Weight bytes decide. If the largest shard of the data plan (the
 * whole model) fits worker_memory_limit (or there is no limit), the plan is
 * data with one replica per worker (or opts->replicas when > 1). Otherwise
 * the fewest tensor ways 2..n_workers (64 without a worker count) whose
 * every shard fits, cutting whole stages greedily into pipeline pieces
 * where they alone do not fit (strategy hybrid then); pipeline pieces only
 * when no op splits. 1-D splits come first: for the same number of shards
 * they hold the same weight bytes with one fusion and R times less partial
 * output to send back. Only when no 1-D split fits does auto try block
 * grids (strategy block; R >= 2, at most n_workers cells, fewest cells
 * first): they fit where 1-D splits cannot when a weight has fewer output
 * columns than there are workers (a column split stops at the columns),
 * or when a Megatron pair's two weights together exceed the limit on one
 * shard but each alone, cut R x C, does not. TS_EEXHAUSTED when one
 * unsplittable node exceeds the limit, nothing fits, or all shards together
 * exceed n_workers * limit. Activation memory is not modelled.
 */
#include "plan_int.h"

/* Largest weight bytes of any shard of the layout, and their total. */
static int layout_weights(const ctx *c, size_t *max, size_t *total) {
  *max = *total = 0;
  for (int s = 0; s < c->n_st; s++)
    for (int k = 0; k < c->st[s].ways; k++) {
      size_t w;
      if (plan_shard_weight(c, s, k, &w)) return TS_ENOMEM;
      if (w > *max) *max = w;
      *total += w;
    }
  return TS_OK;
}

/* Cuts whole stages whose weights exceed `limit` into consecutive pieces
 * that fit, greedily. Sets *cut when any stage was cut; TS_EEXHAUSTED when
 * one node alone exceeds the limit. */
static int cut_whole_stages(ctx *c, size_t limit, bool *cut, ts_err *err) {
  lstage *old = c->st;
  int n_old = c->n_st;
  c->st = NULL;
  c->n_st = c->cap_st = 0;
  *cut = false;
  int *stamp = calloc((size_t)c->g->n_values + 1, sizeof *stamp);
  int *remap = malloc(((size_t)n_old + 1) * sizeof *remap);
  int rc = stamp && remap ? TS_OK : TS_ENOMEM, piece = 0;
  for (int s = 0; s < n_old && !rc; s++) {
    lstage *st = &old[s];
    size_t w = 0;
    if (st->ways > 1) {
      int ns = plan_stage_new(c, st->ways, st->axis, st->dim);
      if (ns < 0) {
        rc = TS_ENOMEM;
        break;
      }
      c->st[ns].rows = st->rows;
      c->st[ns].kdim = st->kdim;
      for (int q = 0; q < st->n_nodes && !rc; q++)
        rc = plan_stage_add(c, ns, st->nodes[q], c->node_role[st->nodes[q]]);
      remap[s] = ns;
      continue;
    }
    int cur = -1;
    for (int q = 0; q < st->n_nodes && !rc; q++) {
      int i = st->nodes[q];
      const ts_node *n = &c->g->nodes[i];
      /* Bytes this node adds to the current piece (distinct constants). */
      size_t add = 0;
      for (int j = 0; j < n->n_inputs; j++) {
        int v = n->inputs[j];
        if (is_const(c, v) && stamp[v] != piece + 1) add += cst(c, v)->nbytes;
      }
      if (cur >= 0 && w + add > limit) {
        cur = -1;
        *cut = true;
      }
      if (cur < 0) {
        if ((cur = plan_stage_new(c, 1, 0, 1)) < 0) {
          rc = TS_ENOMEM;
          break;
        }
        piece++;
        w = 0;
        add = (size_t)c->node_bytes[i];
      }
      if ((size_t)c->node_bytes[i] > limit) {
        char d[160];
        rc = ts_err_set(err, TS_EEXHAUSTED,
                        "%s alone needs %.0f weight bytes, above the worker "
                        "memory limit of %zu",
                        ts_node_desc(n, d, sizeof d), c->node_bytes[i], limit);
        break;
      }
      for (int j = 0; j < n->n_inputs; j++)
        if (is_const(c, n->inputs[j])) stamp[n->inputs[j]] = piece + 1;
      w += add;
      rc = plan_stage_add(c, cur, i, ROLE_WHOLE);
    }
  }
  /* Split values follow their stage (only split stages have any). */
  for (int v = 0; !rc && v < c->g->n_values; v++)
    if (c->value_stage[v] >= 0) c->value_stage[v] = remap[c->value_stage[v]];
  for (int s = 0; s < n_old; s++) free(old[s].nodes);
  free(old);
  free(stamp);
  free(remap);
  if (rc == TS_ENOMEM) ts_err_set(err, rc, "plan: out of memory");
  return rc;
}

/* True when some live node can split (at `ways` = 2). */
static bool any_splittable(ctx *c) {
  plan_layout_reset(c);
  bool any = false;
  if (plan_layout_range(c, 0, c->n_live, 2) == TS_OK)
    for (int s = 0; s < c->n_st; s++) any |= c->st[s].ways > 1;
  return any;
}

/* Lays out with `ways` (or the context's block grid), cuts whole stages
 * that exceed the worker memory limit, and emits the plan when every shard
 * fits (*done). TS_OK with !*done: try the next candidate. */
static int fit_layout(ctx *c, const ts_plan_opts *opts, int ways, bool splits,
                      ts_err *last_err, bool *done, ts_plan **out,
                      ts_err *err) {
  size_t limit = opts->worker_memory_limit, max = 0, total = 0;
  bool cut = false;
  *done = false;
  plan_layout_reset(c);
  int rc = plan_layout_range(c, 0, c->n_live, ways);
  if (rc) return ts_err_set(err, rc, "plan: out of memory");
  rc = cut_whole_stages(c, limit, &cut, last_err);
  if (rc == TS_EEXHAUSTED) return TS_OK;
  if (rc) return ts_err_set(err, rc, "%s", last_err->msg);
  if ((rc = layout_weights(c, &max, &total)))
    return ts_err_set(err, rc, "plan: out of memory");
  if (max > limit) return TS_OK;
  *done = true;
  /* Every shard fits some worker; all of them together must fit too. */
  if (opts->n_workers > 0 && total / (size_t)opts->n_workers > limit)
    return ts_err_set(err, TS_EEXHAUSTED,
                      "auto plan: shards of %zu weight bytes in all do not "
                      "fit %d workers of %zu bytes",
                      total, opts->n_workers, limit);
  ts_strategy strategy = c->grid_rows ? TS_STRATEGY_BLOCK
                         : !splits    ? TS_STRATEGY_PIPELINE
                         : cut        ? TS_STRATEGY_HYBRID
                                      : TS_STRATEGY_TENSOR;
  return plan_emit(c, opts, strategy, opts->replicas, out, err);
}

/* auto: data when the model fits one worker; else the fewest tensor ways
 * (whole stages cut further where they alone do not fit), or pipeline
 * stages when nothing splits; else the smallest block grid that fits (see
 * the file comment). A shard fits when its weight bytes are within the
 * limit. */
int plan_auto(ctx *c, const ts_plan_opts *opts, ts_plan **out, ts_err *err) {
  size_t limit = opts->worker_memory_limit, max = 0, total = 0;
  int rc;
  plan_layout_reset(c);
  if ((rc = plan_layout_range(c, 0, c->n_live, 1)) ||
      (rc = layout_weights(c, &max, &total)))
    return ts_err_set(err, rc, "plan: out of memory");
  if (limit == 0 || max <= limit) {
    int replicas = opts->replicas;
    if (replicas == 1 && opts->n_workers > 1) replicas = opts->n_workers;
    return plan_emit(c, opts, TS_STRATEGY_DATA, replicas, out, err);
  }
  int max_ways = opts->n_workers > 0 ? opts->n_workers : 64;
  bool splits = max_ways >= 2 && any_splittable(c);
  int first = splits ? 2 : 1, last = splits ? max_ways : 1;
  ts_err last_err = {0};
  bool done = false;
  for (int ways = first; ways <= last && !rc && !done; ways++)
    rc = fit_layout(c, opts, ways, splits, &last_err, &done, out, err);
  /* Block grids R x C (R >= 2) of at most max_ways cells, fewest cells
   * first, then fewest rows. */
  for (int cells = 2; splits && cells <= max_ways && !rc && !done; cells++)
    for (int r = 2; r <= cells && !rc && !done; r++) {
      if (cells % r) continue;
      c->grid_rows = r;
      c->grid_cols = cells / r;
      rc = fit_layout(c, opts, 1, splits, &last_err, &done, out, err);
    }
  c->grid_rows = c->grid_cols = 0;
  if (rc || done) return rc;
  if (last_err.code)
    return ts_err_set(err, TS_EEXHAUSTED, "auto plan: %s", last_err.msg);
  return ts_err_set(err, TS_EEXHAUSTED,
                    "auto plan: %zu weight bytes do not fit workers of %zu "
                    "bytes even split %d ways",
                    c->m->weight_bytes, limit, last);
}
