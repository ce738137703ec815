/*
 * traffic.c - what a plan sends over the links per request (plan.h:
 * ts_plan_traffic_estimate), for `auto` to weigh candidate plans.
 *
 * Every shard of a stage is sent each of its inputs whole (a row slice or
 * block input is cut on the worker) and answers its outputs; a stage is one
 * round trip, and stages run in sequence. Sizes come from the model's
 * static shapes at batch 1 (a symbolic dim counts as 1; an unknown dtype
 * as 4 bytes per element). A partial output "<t>.part<k>" is sized by its
 * fusion: a sum's part is as big as the sum, a concat's parts share the
 * concatenated tensor equally.
 */
#include "plan_int.h"

/* Bytes of model tensor v at batch 1. */
static double value_bytes(const ts_value *v) {
  double n = 1;
  for (int d = 0; d < v->rank; d++)
    if (v->dims[d] > 0) n *= (double)v->dims[d];
  size_t e = ts_dtype_size(v->dtype);
  return n * (double)(e ? e : 4);
}

/* Bytes of `name` as a shard of stage `st` reads or answers it: a model
 * tensor, or a part of one of the stage's fusions (nested at most
 * n_fusions deep, plan.h). 0 for a name neither knows. */
static double tensor_bytes(const ts_stage *st, const ts_graph *g,
                           const char *name, int depth) {
  int v = ts_graph_find_value(g, name);
  if (v >= 0) return value_bytes(&g->values[v]);
  for (int f = 0; f < st->n_fusions && depth <= st->n_fusions; f++) {
    const ts_fusion *fu = &st->fusions[f];
    for (int q = 0; q < fu->n_parts; q++) {
      if (strcmp(fu->parts[q], name) != 0) continue;
      double whole = tensor_bytes(st, g, fu->name, depth + 1);
      return fu->kind == TS_FUSE_CONCAT ? whole / fu->n_parts : whole;
    }
  }
  return 0;
}

void ts_plan_traffic_estimate(const ts_plan *plan, const ts_model *model,
                              double rtt_s, double bytes_per_s,
                              ts_plan_traffic *out) {
  double bytes = 0;
  for (int s = 0; s < plan->n_stages; s++) {
    const ts_stage *st = &plan->stages[s];
    for (int k = 0; k < st->n_shards; k++) {
      const ts_shard *sh = &st->shards[k];
      for (int j = 0; j < sh->n_inputs; j++)
        bytes += tensor_bytes(st, &model->graph, sh->inputs[j], 0);
      for (int j = 0; j < sh->n_outputs; j++)
        bytes += tensor_bytes(st, &model->graph, sh->outputs[j], 0);
    }
  }
  out->bytes = (size_t)(bytes + 0.5);
  out->hops = plan->n_stages;
  out->seconds = out->hops * rtt_s +
                 (bytes_per_s > 0 ? (double)out->bytes / bytes_per_s : 0);
}
