/*
 * prepack.c - ts_model_prepack: each node's op packs the constants it reads
 * (ops.h, the prepack column), once, for a daemon that will run the model;
 * then drops the reduced-precision weight nodes the products absorbed.
 */
#include "engine_int.h"
#include "graph.h"
#include "ops.h"

int ts_model_prepack(ts_model *model, ts_err *err) {
  ts_graph *g = &model->graph;
  for (int i = 0; i < g->n_nodes; i++) {
    ts_node *n = &g->nodes[i];
    int rc;
    if (n->op && n->op->prepack && (rc = n->op->prepack(n, g, err))) return rc;
  }
  ts_graph_drop_unread(model);
  return TS_OK;
}
