/*
 * emit.c - a layout as a ts_plan: each stage's inputs, outputs and
 * fusions, its shards (writer.c), and freeing a plan.
 */
#include "plan_int.h"

#include <stdio.h>

/* Stage index of the last reader of each value (n_st for graph outputs,
 * -1 for unread). */
static int *last_use(const ctx *c) {
  int *lu = malloc(((size_t)c->g->n_values + 1) * sizeof *lu);
  if (!lu) return NULL;
  for (int v = 0; v < c->g->n_values; v++) {
    lu[v] = c->g->values[v].is_graph_output ? c->n_st : -1;
    for (int q = c->cons_off[v]; q < c->cons_off[v + 1]; q++) {
      int s = c->node_stage[c->cons[q]];
      if (s > lu[v]) lu[v] = s;
    }
  }
  for (int i = 0; i < c->g->n_outputs; i++)
    if (c->g->outputs[i] >= 0) lu[c->g->outputs[i]] = c->n_st;
  return lu;
}

/* Appends fusion `name` = kind (on `axis`) of the n parts
 * "<base>.<suffix><first + q*step>", q < n. */
int plan_add_fusion(ts_stage *out, int *cap, const char *name,
                    ts_fuse_kind kind, int axis, const char *base,
                    const char *suffix, int first, int step, int n) {
  if (plan_grow(&out->fusions, cap, out->n_fusions + 1, sizeof *out->fusions))
    return TS_ENOMEM;
  ts_fusion *f = &out->fusions[out->n_fusions++];
  memset(f, 0, sizeof *f);
  f->name = plan_strdup(name);
  f->kind = kind;
  f->axis = kind == TS_FUSE_CONCAT ? axis : 0;
  f->parts = calloc((size_t)n, sizeof *f->parts);
  if (!f->name || !f->parts) return TS_ENOMEM;
  for (int q = 0; q < n; q++) {
    size_t len = strlen(base) + strlen(suffix) + 32;
    if (!(f->parts[q] = malloc(len))) return TS_ENOMEM;
    snprintf(f->parts[q], len, "%s.%s%d", base, suffix, first + q * step);
    f->n_parts = q + 1;
  }
  return TS_OK;
}

/* Fills the stage's inputs, outputs and fusions from the layout. */
static int fill_stage_io(const ctx *c, int s, const int *lu, ts_stage *out,
                         ts_err *err) {
  const lstage *st = &c->st[s];
  int cap_in = 0, cap_out = 0, cap_f = 0;
  for (int q = 0; q < st->n_nodes; q++) {
    const ts_node *n = &c->g->nodes[st->nodes[q]];
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      if (v < 0 || is_const(c, v)) continue;
      int p = val(c, v)->producer;
      if (p >= 0 && c->node_stage[p] == s) continue;
      bool dup = false;
      for (int e = 0; e < out->n_inputs && !dup; e++)
        dup = strcmp(out->inputs[e], val(c, v)->name) == 0;
      if (!dup && plan_names_push(&out->inputs, &out->n_inputs, &cap_in,
                                  val(c, v)->name))
        return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
    }
    for (int j = 0; j < n->n_outputs; j++) {
      int v = n->outputs[j];
      if (v < 0 || lu[v] <= s) continue;
      if (plan_names_push(&out->outputs, &out->n_outputs, &cap_out,
                          val(c, v)->name))
        return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
      if (st->ways < 2) continue;
      const char *name = val(c, v)->name;
      int rc =
          c->value_kind[v] == VK_BLOCK
              ? plan_block_fusions(c, s, v, out, &cap_f, err)
              : plan_add_fusion(out, &cap_f, name,
                                c->value_kind[v] == VK_PARTIAL ? TS_FUSE_SUM
                                                               : TS_FUSE_CONCAT,
                                st->axis, name, "part", 0, 1, st->ways);
      if (rc == TS_ENOMEM) return ts_err_set(err, rc, "plan: out of memory");
      if (rc) return rc;
    }
  }
  out->batch_splittable = plan_stage_batch_splittable(c, s);
  return TS_OK;
}

static void stage_free(ts_stage *st) {
  for (int k = 0; k < st->n_shards; k++) {
    ts_shard *sh = &st->shards[k];
    free(sh->bytes);
    plan_names_free(sh->inputs, sh->n_inputs);
    plan_names_free(sh->outputs, sh->n_outputs);
  }
  free(st->shards);
  for (int f = 0; f < st->n_fusions; f++) {
    free(st->fusions[f].name);
    plan_names_free(st->fusions[f].parts, st->fusions[f].n_parts);
  }
  free(st->fusions);
  plan_names_free(st->inputs, st->n_inputs);
  plan_names_free(st->outputs, st->n_outputs);
}

void ts_plan_free(ts_plan *plan) {
  if (!plan) return;
  for (int s = 0; s < plan->n_stages; s++) stage_free(&plan->stages[s]);
  free(plan->stages);
  free(plan);
}

/* Emits the current layout as a plan. */
int plan_emit(const ctx *c, const ts_plan_opts *opts, ts_strategy strategy,
              int replicas, ts_plan **out, ts_err *err) {
  ts_plan *p = calloc(1, sizeof *p);
  int *lu = last_use(c);
  if (!p || !lu || !(p->stages = calloc((size_t)c->n_st, sizeof *p->stages))) {
    free(p), free(lu);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  p->strategy = strategy;
  p->replicas = replicas;
  const char *name = opts->model_name ? opts->model_name : "model";
  int rc = TS_OK;
  for (int s = 0; s < c->n_st && !rc; s++) {
    ts_stage *st = &p->stages[s];
    p->n_stages = s + 1;
    if ((rc = fill_stage_io(c, s, lu, st, err))) break;
    st->shards = calloc((size_t)c->st[s].ways, sizeof *st->shards);
    if (!st->shards) {
      rc = ts_err_set(err, TS_ENOMEM, "plan: out of memory");
      break;
    }
    for (int k = 0; k < c->st[s].ways && !rc; k++) {
      st->n_shards = k + 1;
      rc = plan_build_shard(c, s, k, st, name, &st->shards[k], err);
      p->weight_bytes += st->shards[k].weight_bytes;
    }
  }
  free(lu);
  if (rc) {
    ts_plan_free(p);
    return rc;
  }
  *out = p;
  return TS_OK;
}
