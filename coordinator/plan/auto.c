/*
 * auto.c - the `auto` strategy: the cheapest plan whose every shard fits
 * the workers' memory.
 *
 * Weight bytes decide whether to split. If the largest shard of the data
 * plan (the whole model) fits worker_memory_limit (or there is no limit),
 * the plan is data with one replica per worker (or opts->replicas when
 * > 1), on any link: a split of a model that fits only adds traffic.
 * Otherwise auto builds up to three candidates that fit: the fewest tensor
 * ways 2..n_workers (64 without a worker count), cutting whole stages
 * greedily into pipeline pieces where they alone do not fit (strategy
 * hybrid then); the pipeline of whole stages cut the same way; and the
 * smallest block grid that fits (R >= 2, at most n_workers cells, fewest
 * cells first, then fewest rows: they fit where 1-D splits cannot when a
 * weight has fewer output columns than there are workers, or when a
 * Megatron pair's two weights together exceed the limit on one shard but
 * each alone, cut R x C, does not). The link decides among them: each
 * candidate's traffic per request (traffic.c) costs
 * round trips x rtt + bytes / bytes per second, with the link figures of
 * opts (the cluster's median measured ones) or 0.2 ms and 1 Gbit/s, and
 * the cheapest wins (on a tie the earlier, in the order above). The
 * choice and the numbers behind it are logged at info. TS_EEXHAUSTED when
 * one unsplittable node exceeds the limit, nothing fits, or all shards
 * together exceed n_workers * limit. Activation memory is not modelled.
 */
#include "plan_int.h"

#include <stdio.h>

#include "log.h"

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

/* A plan auto considered, its traffic per request and its description;
 * the plan is kept only while it is the best so far. */
typedef struct candidate {
  ts_plan *plan;
  ts_plan_traffic traffic;
  char desc[96];
} candidate;

#define MAX_CANDIDATES 3

/* "tensor 2 ways (2 shards of 84.0 MB)": what a candidate is, for the log. */
static void describe(const ts_plan *p, int ways, int grid_rows,
                     int grid_cols, char *out, size_t cap) {
  int shards = 0;
  size_t largest = 0;
  for (int s = 0; s < p->n_stages; s++)
    for (int k = 0; k < p->stages[s].n_shards; k++) {
      shards++;
      if (p->stages[s].shards[k].weight_bytes > largest)
        largest = p->stages[s].shards[k].weight_bytes;
    }
  const char *name = ts_strategy_name(p->strategy);
  if (p->strategy == TS_STRATEGY_BLOCK)
    snprintf(out, cap, "%s %dx%d (%d shards, largest %.1f MB)", name,
             grid_rows, grid_cols, shards, (double)largest / 1e6);
  else if (p->strategy == TS_STRATEGY_PIPELINE)
    snprintf(out, cap, "%s %d stages (largest %.1f MB)", name, p->n_stages,
             (double)largest / 1e6);
  else
    snprintf(out, cap, "%s %d ways (%d shards in %d stage%s, largest %.1f MB)",
             name, ways, shards, p->n_stages, p->n_stages == 1 ? "" : "s",
             (double)largest / 1e6);
}

/* Adds the plan fit_layout emitted into cand[*n] to the candidates and
 * keeps only the cheaper of it and the best so far (*best; -1: none), the
 * earlier on a tie, so that at most two plans' shards are held at once. */
static void add_candidate(const ctx *c, double rtt, double bps, int ways,
                          candidate *cand, int *n, int *best) {
  candidate *k = &cand[*n];
  ts_plan_traffic_estimate(k->plan, c->m, rtt, bps, &k->traffic);
  describe(k->plan, ways, c->grid_rows, c->grid_cols, k->desc,
           sizeof k->desc);
  if (*best < 0 || k->traffic.seconds < cand[*best].traffic.seconds) {
    if (*best >= 0) {
      ts_plan_free(cand[*best].plan);
      cand[*best].plan = NULL;
    }
    *best = *n;
  } else {
    ts_plan_free(k->plan);
    k->plan = NULL;
  }
  (*n)++;
}

/* Logs auto's choice among the candidates, with the numbers behind it. */
static void log_choice(const ts_plan_opts *opts, const candidate *cand, int n,
                       int best, double rtt, double bps) {
  char others[512] = "";
  size_t len = 0;
  for (int i = 0; i < n && len < sizeof others; i++) {
    if (i == best) continue;
    len += (size_t)snprintf(others + len, sizeof others - len,
                            "%s%s (~%.1f KB, %d round trip%s, %.2f ms)",
                            len ? ", " : " over ", cand[i].desc,
                            (double)cand[i].traffic.bytes / 1e3,
                            cand[i].traffic.hops,
                            cand[i].traffic.hops == 1 ? "" : "s",
                            cand[i].traffic.seconds * 1e3);
  }
  const ts_plan_traffic *t = &cand[best].traffic;
  ts_log_info("auto plan for %s: %s; ~%.1f KB per request, %d round trip%s, "
              "est. %.2f ms over the link (%.2f ms, %.0f Mbit/s)%s",
              opts->model_name ? opts->model_name : "model", cand[best].desc,
              (double)t->bytes / 1e3, t->hops, t->hops == 1 ? "" : "s",
              t->seconds * 1e3, rtt * 1e3,
              bps * 8 / 1e6, others);
}

/* auto: data when the model fits one worker. Otherwise the candidates that
 * fit - the fewest tensor ways (whole stages cut further where they alone
 * do not fit; hybrid then), pipeline stages, and the smallest block grid
 * (see the file comment) - each with its traffic per request, and the one
 * of the lowest estimated link time wins (the earlier on a tie). A shard
 * fits when its weight bytes are within the limit. */
int plan_auto(ctx *c, const ts_plan_opts *opts, ts_plan **out, ts_err *err) {
  size_t limit = opts->worker_memory_limit, max = 0, total = 0;
  double rtt = opts->link_rtt_s > 0 ? opts->link_rtt_s : TS_PLAN_DEFAULT_RTT_S;
  double bps = opts->link_bytes_per_s > 0 ? opts->link_bytes_per_s
                                          : TS_PLAN_DEFAULT_BYTES_PER_S;
  int rc;
  plan_layout_reset(c);
  if ((rc = plan_layout_range(c, 0, c->n_live, 1)) ||
      (rc = layout_weights(c, &max, &total)))
    return ts_err_set(err, rc, "plan: out of memory");
  if (limit == 0 || max <= limit) {
    int replicas = opts->replicas;
    if (replicas == 1 && opts->n_workers > 1) replicas = opts->n_workers;
    rc = plan_emit(c, opts, TS_STRATEGY_DATA, replicas, out, err);
    if (rc == TS_OK) {
      ts_plan_traffic t;
      ts_plan_traffic_estimate(*out, c->m, rtt, bps, &t);
      ts_log_info("auto plan for %s: data, %d replicas (the model's %.1f MB "
                  "fit one worker; ~%.1f KB per request, est. %.2f ms over "
                  "the link)",
                  opts->model_name ? opts->model_name : "model", replicas,
                  (double)max / 1e6, (double)t.bytes / 1e3, t.seconds * 1e3);
    }
    return rc;
  }
  int max_ways = opts->n_workers > 0 ? opts->n_workers : 64;
  bool splits = max_ways >= 2 && any_splittable(c);
  int first = splits ? 2 : 1, last = splits ? max_ways : 1;
  ts_err last_err = {0};
  candidate cand[MAX_CANDIDATES] = {0};
  int n = 0, best = -1;
  bool done = false;
  for (int ways = first; ways <= last && !rc && !done; ways++)
    if (!(rc = fit_layout(c, opts, ways, splits, &last_err, &done,
                          &cand[n].plan, err)) && done)
      add_candidate(c, rtt, bps, ways, cand, &n, &best);
  /* Whole stages alone, cut where they do not fit: the pipeline. */
  if (splits && !rc &&
      !(rc = fit_layout(c, opts, 1, false, &last_err, &done, &cand[n].plan,
                        err)) && done)
    add_candidate(c, rtt, bps, 1, cand, &n, &best);
  /* Block grids R x C (R >= 2) of at most max_ways cells, fewest cells
   * first, then fewest rows. */
  done = false;
  for (int cells = 2; splits && cells <= max_ways && !rc && !done; cells++)
    for (int r = 2; r <= cells && !rc && !done; r++) {
      if (cells % r) continue;
      c->grid_rows = r;
      c->grid_cols = cells / r;
      if (!(rc = fit_layout(c, opts, 1, splits, &last_err, &done,
                            &cand[n].plan, err)) && done)
        add_candidate(c, rtt, bps, 1, cand, &n, &best);
    }
  c->grid_rows = c->grid_cols = 0;
  if (rc) {
    if (best >= 0) ts_plan_free(cand[best].plan);
    return rc;
  }
  if (best >= 0) {
    log_choice(opts, cand, n, best, rtt, bps);
    *out = cand[best].plan;
    return TS_OK;
  }
  if (last_err.code)
    return ts_err_set(err, TS_EEXHAUSTED, "auto plan: %s", last_err.msg);
  return ts_err_set(err, TS_EEXHAUSTED,
                    "auto plan: %zu weight bytes do not fit workers of %zu "
                    "bytes even split %d ways",
                    c->m->weight_bytes, limit, last);
}
