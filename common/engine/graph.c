/*
 * graph.c - the ONNX loader's passes and the graph IR (see graph.h). The
 * entry points (ts_model_load, ts_model_load_adopt, ts_model_load_file,
 * ts_model_free) and the box a model lives in are load.c's; it unpacks the
 * bytes and hands the proto to ts_model_build (engine_int.h) here.
 *
 * Loading is a fixed sequence of passes; each one leaves the IR a little
 * more checked, and any failure frees everything and names what is wrong:
 *
 *   unpack       protobuf-c parse (load.c); string attributes NUL-terminated
 *   versions     IR version, opset imports (default 7..17, ai.onnx.ml 1..3)
 *   values       initializers (constants), graph inputs, node outputs; one
 *                producer per name
 *   nodes        op lookup, opset, arity, input resolution, graph outputs
 *   sort         Kahn's algorithm; cycles and undefined inputs rejected
 *   prepare      op->prepare per node in topological order; a node whose
 *                inputs are all constants is run once (constant folding,
 *                through the executor's kernel path) and removed, so later
 *                nodes' prepare sees the folded values; what folding makes
 *                is counted against the fold limit (graph.h) before it is
 *                allocated; a reduced-precision weight that only products
 *                read as B stays (engine_int.h: ts_reduced_weight_keep),
 *                for them to pack it small
 *   fold_bn      an inference BatchNormalization with constant parameters
 *                that alone reads a Conv's output is folded into that
 *                Conv's weights and bias (float64, rounded once) and
 *                removed; see fold_conv_bn() for when it is not
 *   shapes       static shape inference, run twice with symbolic dims bound
 *                to two different sentinel sizes: a dim that comes out equal
 *                in both runs is static, one that differs is symbolic (-1).
 *                Small tensors computed from shapes (Shape -> Gather ->
 *                Concat chains feeding Reshape) are evaluated on the way.
 *                What inference cannot tell is taken from the model's
 *                value_info / graph outputs.
 *
 * Initializers stored as raw_data become views into the proto (which the
 * model keeps for the partitioner), so weights are held in memory once;
 * folded constants and typed-field initializers are owned copies. Loaded
 * with ts_model_load_adopt (as files and the worker's shards are), the
 * large raw_data fields are not even copied out of the received bytes
 * (inplace.c, load.c), so a load never holds the weights twice.
 */
#include "graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "ops.h"

#define IR_VERSION_MIN 3
#define IR_VERSION_MAX 10
#define OPSET_MIN 7
#define OPSET_MAX 17
#define ML_OPSET_MIN 1
#define ML_OPSET_MAX 3
/* Symbolic dims are bound to these two sizes during load-time inference. */
#define SENTINEL_A 64
#define SENTINEL_B 96
/* Results up to this size are computed during shape inference. */
#define SHAPE_DATA_MAX 4096
/* What evaluating one of them may take, kernel scratch included. */
#define SHAPE_EVAL_BUDGET TS_FOLD_LIMIT_MIN

/* ---- name index (open addressing, load time only) ------------------------ */

typedef struct name_index {
  int *slots; /* value index, -1 empty */
  size_t mask;
  const ts_value *values;
} name_index;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static int index_init(name_index *ix, size_t n, const ts_value *values) {
  size_t cap = 16;
  while (cap < 2 * n + 1) cap *= 2;
  ix->slots = malloc(cap * sizeof *ix->slots);
  if (!ix->slots) return TS_ENOMEM;
  memset(ix->slots, 0xff, cap * sizeof *ix->slots);
  ix->mask = cap - 1;
  ix->values = values;
  return TS_OK;
}

/* Returns the value index of name, or -1; *slot gets where it would go. */
static int index_find(const name_index *ix, const char *name, size_t *slot) {
  size_t i = hash_str(name) & ix->mask;
  while (ix->slots[i] >= 0) {
    if (strcmp(ix->values[ix->slots[i]].name, name) == 0) {
      if (slot) *slot = i;
      return ix->slots[i];
    }
    i = (i + 1) & ix->mask;
  }
  if (slot) *slot = i;
  return -1;
}

/* ---- small helpers ------------------------------------------------------- */

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static const char *canonical_domain(const char *d) {
  return (!d || strcmp(d, "ai.onnx") == 0) ? "" : d;
}

/* NUL-terminates a bytes field in place, so ts_attr_string can return it.
 * protobuf-c's default allocator is malloc, so realloc is legal here and
 * free_unpacked frees the result. */
static int nul_terminate(ProtobufCBinaryData *b) {
  uint8_t *d = realloc(b->data, b->len + 1);
  if (!d) return TS_ENOMEM;
  d[b->len] = '\0';
  b->data = d;
  return TS_OK;
}

static int normalize_strings(Onnx__GraphProto *g, ts_err *err) {
  for (size_t i = 0; i < g->n_node; i++) {
    Onnx__NodeProto *n = g->node[i];
    for (size_t j = 0; j < n->n_attribute; j++) {
      Onnx__AttributeProto *a = n->attribute[j];
      if (a->has_s && nul_terminate(&a->s))
        return ts_err_set(err, TS_ENOMEM, "out of memory reading attributes");
      for (size_t k = 0; k < a->n_strings; k++)
        if (nul_terminate(&a->strings[k]))
          return ts_err_set(err, TS_ENOMEM, "out of memory reading attributes");
    }
  }
  return TS_OK;
}

/* Reads a ValueInfo's tensor type into dtype/rank/dims (symbolic dims -1).
 * Unknown pieces stay UNDEFINED / -1. `what` names it in messages. */
static int parse_value_info(const Onnx__ValueInfoProto *vi, const char *what,
                            ts_dtype *dtype, int *rank, int64_t *dims,
                            ts_err *err) {
  const char *name = str_or_empty(vi->name);
  *dtype = TS_DTYPE_UNDEFINED;
  *rank = -1;
  const Onnx__TypeProto *tp = vi->type;
  if (!tp || tp->value_case == ONNX__TYPE_PROTO__VALUE__NOT_SET) return TS_OK;
  if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "%s '%s' is not a dense tensor (sequence, map, optional "
                      "and sparse types are not supported)",
                      what, name);
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  if (tt->has_elem_type && tt->elem_type != 0) {
    if (!ts_dtype_is_numeric((ts_dtype)tt->elem_type))
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "%s '%s' has element type %d (%s), which is not "
                        "supported",
                        what, name, (int)tt->elem_type,
                        ts_dtype_name((ts_dtype)tt->elem_type));
    *dtype = (ts_dtype)tt->elem_type;
  }
  if (!tt->shape) return TS_OK;
  if (tt->shape->n_dim > TS_MAX_RANK)
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "%s '%s' has rank %zu, above the maximum of %d", what,
                      name, tt->shape->n_dim, TS_MAX_RANK);
  for (size_t i = 0; i < tt->shape->n_dim; i++) {
    const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      if (d->dim_value < 0)
        return ts_err_set(err, TS_EINVAL, "%s '%s': dim %zu is negative (%lld)",
                          what, name, i, (long long)d->dim_value);
      dims[i] = d->dim_value;
    } else {
      dims[i] = -1;
    }
  }
  *rank = (int)tt->shape->n_dim;
  return TS_OK;
}

/* ---- loading ------------------------------------------------------------- */

typedef struct loader {
  ts_model *m;
  const Onnx__GraphProto *gp;
  name_index ix;
  int cap_values;
} loader;

static int check_versions(ts_model *m, ts_err *err) {
  const Onnx__ModelProto *p = m->proto;
  if (!p->has_ir_version || p->ir_version < IR_VERSION_MIN ||
      p->ir_version > IR_VERSION_MAX)
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "ONNX IR version %lld is not supported (%d..%d)",
                      p->has_ir_version ? (long long)p->ir_version : 0LL,
                      IR_VERSION_MIN, IR_VERSION_MAX);
  for (size_t i = 0; i < p->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = p->opset_import[i];
    const char *d = canonical_domain(o->domain);
    int64_t v = o->has_version ? o->version : 0;
    int64_t *slot = NULL, lo = 0, hi = 0;
    if (strcmp(d, "") == 0) {
      slot = &m->opset, lo = OPSET_MIN, hi = OPSET_MAX;
    } else if (strcmp(d, "ai.onnx.ml") == 0) {
      slot = &m->ml_opset, lo = ML_OPSET_MIN, hi = ML_OPSET_MAX;
    } else {
      continue; /* other domains matter only if a node uses them */
    }
    if (*slot)
      return ts_err_set(err, TS_EINVAL,
                        "opset_import lists domain '%s' twice", d);
    if (v < lo || v > hi)
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "opset %lld of domain '%s' is not supported "
                        "(%lld..%lld)",
                        (long long)v, d[0] ? d : "ai.onnx", (long long)lo,
                        (long long)hi);
    *slot = v;
  }
  return TS_OK;
}

/* The model's opset for `domain`, 0 when it is not imported. */
static int64_t opset_for(const ts_model *m, const char *domain) {
  if (!domain[0]) return m->opset;
  if (strcmp(domain, "ai.onnx.ml") == 0) return m->ml_opset;
  for (size_t i = 0; i < m->proto->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = m->proto->opset_import[i];
    if (strcmp(canonical_domain(o->domain), domain) == 0 && o->has_version)
      return o->version;
  }
  return 0;
}

/* Appends a value named `name`; TS_EINVAL if the name is taken. */
static int add_value(loader *L, const char *name, int *index, ts_err *err) {
  ts_graph *g = &L->m->graph;
  size_t slot;
  if (index_find(&L->ix, name, &slot) >= 0)
    return ts_err_set(err, TS_EINVAL, "tensor '%s' is defined more than once",
                      name);
  TS_ASSERT(g->n_values < L->cap_values);
  ts_value *v = &g->values[g->n_values];
  memset(v, 0, sizeof *v);
  v->name = strdup(name);
  if (!v->name) return ts_err_set(err, TS_ENOMEM, "out of memory");
  v->dtype = TS_DTYPE_UNDEFINED;
  v->rank = -1;
  v->producer = -1;
  L->ix.slots[slot] = g->n_values;
  *index = g->n_values++;
  return TS_OK;
}

static int load_values(loader *L, ts_err *err) {
  ts_model *m = L->m;
  ts_graph *g = &m->graph;
  const Onnx__GraphProto *gp = L->gp;
  size_t cap = gp->n_initializer + gp->n_input;
  for (size_t i = 0; i < gp->n_node; i++) cap += gp->node[i]->n_output;
  if (cap > (size_t)INT32_MAX / 2)
    return ts_err_set(err, TS_EINVAL, "graph is too large");
  L->cap_values = (int)cap;
  g->values = calloc(cap ? cap : 1, sizeof *g->values);
  g->inputs = calloc(gp->n_input ? gp->n_input : 1, sizeof *g->inputs);
  if (!g->values || !g->inputs || index_init(&L->ix, cap, g->values))
    return ts_err_set(err, TS_ENOMEM, "out of memory");

  for (size_t i = 0; i < gp->n_initializer; i++) {
    const Onnx__TensorProto *tp = gp->initializer[i];
    if (!tp->name || !tp->name[0])
      return ts_err_set(err, TS_EINVAL, "initializer #%zu has no name", i);
    int vi;
    int rc = add_value(L, tp->name, &vi, err);
    if (rc) return rc;
    ts_value *v = &g->values[vi];
    v->constant = calloc(1, sizeof *v->constant);
    if (!v->constant) return ts_err_set(err, TS_ENOMEM, "out of memory");
    rc = ts_tensor_borrow_onnx(tp, v->constant, err);
    if (rc) return ts_err_prefix(err, "initializer");
    v->dtype = v->constant->dtype;
    v->rank = v->constant->rank;
    memcpy(v->dims, v->constant->dims, sizeof v->dims);
  }
  if (gp->n_sparse_initializer)
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "sparse initializers are not supported");

  for (size_t i = 0; i < gp->n_input; i++) {
    const Onnx__ValueInfoProto *vp = gp->input[i];
    if (!vp->name || !vp->name[0])
      return ts_err_set(err, TS_EINVAL, "graph input #%zu has no name", i);
    int existing = index_find(&L->ix, vp->name, NULL);
    if (existing >= 0 && g->values[existing].constant)
      continue; /* IR < 4: initializers are listed as inputs too */
    int vi;
    int rc = add_value(L, vp->name, &vi, err);
    if (rc) return rc;
    ts_value *v = &g->values[vi];
    v->is_graph_input = true;
    rc = parse_value_info(vp, "graph input", &v->dtype, &v->rank, v->dims,
                          err);
    if (rc) return rc;
    g->inputs[g->n_inputs++] = vi;
  }
  return TS_OK;
}

static int load_nodes(loader *L, ts_err *err) {
  ts_model *m = L->m;
  ts_graph *g = &m->graph;
  const Onnx__GraphProto *gp = L->gp;
  char desc[256];
  g->nodes = calloc(gp->n_node ? gp->n_node : 1, sizeof *g->nodes);
  if (!g->nodes) return ts_err_set(err, TS_ENOMEM, "out of memory");

  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    ts_node *n = &g->nodes[g->n_nodes++];
    n->proto = np;
    n->name = str_or_empty(np->name);
    n->op_type = str_or_empty(np->op_type);
    n->domain = canonical_domain(np->domain);
    if (!n->op_type[0])
      return ts_err_set(err, TS_EINVAL, "node #%zu ('%s') has no op_type", i,
                        n->name);
    n->op = ts_op_find(n->domain, n->op_type);
    if (!n->op)
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "%s: op %s (domain %s) is not supported",
                        ts_node_desc(n, desc, sizeof desc), n->op_type,
                        n->domain[0] ? n->domain : "ai.onnx");
    n->opset = opset_for(m, n->domain);
    if (n->opset <= 0)
      return ts_err_set(err, TS_EINVAL,
                        "%s: the model imports no opset for domain '%s'",
                        ts_node_desc(n, desc, sizeof desc),
                        n->domain[0] ? n->domain : "ai.onnx");
    if ((int64_t)np->n_input < n->op->min_inputs ||
        (int64_t)np->n_input > n->op->max_inputs)
      return ts_err_set(err, TS_EINVAL,
                        "%s: has %zu inputs; op %s takes %d to %d",
                        ts_node_desc(n, desc, sizeof desc), np->n_input,
                        n->op_type, n->op->min_inputs, n->op->max_inputs);
    if ((int64_t)np->n_output < n->op->min_outputs ||
        (int64_t)np->n_output > n->op->max_outputs)
      return ts_err_set(err, TS_EINVAL,
                        "%s: has %zu outputs; op %s gives %d to %d",
                        ts_node_desc(n, desc, sizeof desc), np->n_output,
                        n->op_type, n->op->min_outputs, n->op->max_outputs);
    n->n_inputs = (int)np->n_input;
    n->n_outputs = (int)np->n_output;
    n->inputs = malloc((np->n_input ? np->n_input : 1) * sizeof(int));
    n->outputs = malloc((np->n_output ? np->n_output : 1) * sizeof(int));
    if (!n->inputs || !n->outputs)
      return ts_err_set(err, TS_ENOMEM, "out of memory");
    for (int j = 0; j < n->n_inputs; j++) n->inputs[j] = -1;
    for (int j = 0; j < n->n_outputs; j++) {
      const char *out = str_or_empty(np->output[j]);
      n->outputs[j] = -1;
      if (!out[0]) {
        if (j < n->op->min_outputs)
          return ts_err_set(err, TS_EINVAL, "%s: required output %d is empty",
                            ts_node_desc(n, desc, sizeof desc), j);
        continue;
      }
      int rc = add_value(L, out, &n->outputs[j], err);
      if (rc == TS_ENOMEM) return rc;
      if (rc)
        return ts_err_set(err, TS_EINVAL,
                          "%s: output '%s' is already defined (by a graph "
                          "input, an initializer or another node)",
                          ts_node_desc(n, desc, sizeof desc), out);
      g->values[n->outputs[j]].producer = (int)i;
    }
  }

  /* Inputs resolve only now: a node may read an output of a later node in
   * file order (the sort below fixes the order). */
  for (int i = 0; i < g->n_nodes; i++) {
    ts_node *n = &g->nodes[i];
    for (int j = 0; j < n->n_inputs; j++) {
      const char *in = str_or_empty(n->proto->input[j]);
      if (!in[0]) {
        if (j < n->op->min_inputs)
          return ts_err_set(err, TS_EINVAL, "%s: required input %d is empty",
                            ts_node_desc(n, desc, sizeof desc), j);
        continue;
      }
      n->inputs[j] = index_find(&L->ix, in, NULL);
      if (n->inputs[j] < 0)
        return ts_err_set(err, TS_EINVAL,
                          "%s: input '%s' is not defined (no graph input, "
                          "initializer or node produces it)",
                          ts_node_desc(n, desc, sizeof desc), in);
    }
  }

  g->outputs = calloc(gp->n_output ? gp->n_output : 1, sizeof *g->outputs);
  if (!g->outputs) return ts_err_set(err, TS_ENOMEM, "out of memory");
  if (gp->n_output == 0)
    return ts_err_set(err, TS_EINVAL, "graph has no outputs");
  for (size_t i = 0; i < gp->n_output; i++) {
    const char *name = str_or_empty(gp->output[i]->name);
    int vi = index_find(&L->ix, name, NULL);
    if (vi < 0)
      return ts_err_set(err, TS_EINVAL,
                        "graph output '%s' is not produced by any node, "
                        "input or initializer",
                        name);
    g->values[vi].is_graph_output = true;
    g->outputs[g->n_outputs++] = vi;
  }
  return TS_OK;
}

/* Kahn's algorithm, FIFO in file order, so an already sorted file keeps its
 * order. Rewrites g->nodes and every value's producer. */
static int sort_nodes(ts_graph *g, ts_err *err) {
  int n = g->n_nodes;
  int *indeg = calloc((size_t)n + 1, sizeof(int));
  int *queue = malloc(((size_t)n + 1) * sizeof(int));
  int *first = calloc((size_t)g->n_values + 1, sizeof(int)); /* CSR offsets */
  int n_edges = 0;
  for (int i = 0; i < n; i++) n_edges += g->nodes[i].n_inputs;
  int *edges = malloc(((size_t)n_edges + 1) * sizeof(int));
  ts_node *sorted = malloc(((size_t)n + 1) * sizeof *sorted);
  int rc = TS_OK;
  if (!indeg || !queue || !first || !edges || !sorted) {
    rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    goto done;
  }
  /* consumers of value v: edges[first[v] .. first[v+1]) */
  for (int i = 0; i < n; i++)
    for (int j = 0; j < g->nodes[i].n_inputs; j++) {
      int v = g->nodes[i].inputs[j];
      if (v >= 0 && g->values[v].producer >= 0) {
        first[v + 1]++;
        indeg[i]++;
      }
    }
  for (int v = 0; v < g->n_values; v++) first[v + 1] += first[v];
  int *cursor = malloc(((size_t)g->n_values + 1) * sizeof(int));
  if (!cursor) {
    rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    goto done;
  }
  memcpy(cursor, first, (size_t)g->n_values * sizeof(int));
  for (int i = 0; i < n; i++)
    for (int j = 0; j < g->nodes[i].n_inputs; j++) {
      int v = g->nodes[i].inputs[j];
      if (v >= 0 && g->values[v].producer >= 0) edges[cursor[v]++] = i;
    }
  free(cursor);

  int head = 0, tail = 0;
  for (int i = 0; i < n; i++)
    if (indeg[i] == 0) queue[tail++] = i;
  while (head < tail) {
    int i = queue[head++];
    const ts_node *nd = &g->nodes[i];
    for (int k = 0; k < nd->n_outputs; k++) {
      int v = nd->outputs[k];
      if (v < 0) continue;
      for (int e = first[v]; e < first[v + 1]; e++)
        if (--indeg[edges[e]] == 0) queue[tail++] = edges[e];
    }
  }
  if (tail < n) {
    /* Any unsorted node lies on or behind a cycle; name one input that is
     * still waiting for its producer. */
    for (int i = 0; i < n; i++) {
      if (indeg[i] == 0) continue;
      const ts_node *nd = &g->nodes[i];
      const char *via = "?";
      for (int j = 0; j < nd->n_inputs; j++) {
        int v = nd->inputs[j];
        if (v >= 0 && g->values[v].producer >= 0 &&
            indeg[g->values[v].producer] > 0) {
          via = g->values[v].name;
          break;
        }
      }
      char desc[256];
      rc = ts_err_set(err, TS_EINVAL,
                      "%s is part of a cycle (input '%s' depends on its own "
                      "output)",
                      ts_node_desc(nd, desc, sizeof desc), via);
      goto done;
    }
  }
  for (int k = 0; k < n; k++) sorted[k] = g->nodes[queue[k]];
  memcpy(g->nodes, sorted, (size_t)n * sizeof *sorted);
  for (int k = 0; k < n; k++)
    for (int j = 0; j < g->nodes[k].n_outputs; j++)
      if (g->nodes[k].outputs[j] >= 0)
        g->values[g->nodes[k].outputs[j]].producer = k;
done:
  free(indeg);
  free(queue);
  free(first);
  free(edges);
  free(sorted);
  return rc;
}

/* Removes the nodes i with drop[i] (releasing their params) and renumbers
 * the producers of the values the others compute. */
static void drop_nodes(ts_graph *g, const bool *drop) {
  int k = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    ts_node *n = &g->nodes[i];
    if (drop[i]) {
      if (n->op->release && n->params) n->op->release(n);
      free(n->inputs);
      free(n->outputs);
      continue;
    }
    g->nodes[k] = *n;
    for (int j = 0; j < g->nodes[k].n_outputs; j++)
      if (g->nodes[k].outputs[j] >= 0)
        g->values[g->nodes[k].outputs[j]].producer = k;
    k++;
  }
  g->n_nodes = k;
}

/* Runs op->prepare on every node in order and folds nodes whose inputs are
 * all constants; folded nodes are removed from the graph. The constants
 * folded take at most fold_limit bytes together (m->folded_bytes): a node
 * whose outputs would pass it fails the load before they are allocated. */
static int prepare_and_fold(ts_model *m, size_t fold_limit, ts_err *err) {
  ts_graph *g = &m->graph;
  int max_io = 1;
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].n_inputs > max_io) max_io = g->nodes[i].n_inputs;
    if (g->nodes[i].n_outputs > max_io) max_io = g->nodes[i].n_outputs;
  }
  const ts_tensor **in = calloc((size_t)max_io, sizeof *in);
  ts_tensor *out = calloc((size_t)max_io, sizeof *out);
  bool *folded = calloc((size_t)g->n_nodes + 1, sizeof *folded);
  int rc = TS_OK;
  if (!in || !out || !folded) {
    rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    goto done;
  }
  for (int i = 0; i < g->n_nodes && !rc; i++) {
    ts_node *n = &g->nodes[i];
    if (n->op->prepare && (rc = n->op->prepare(n, g, err))) break;
    bool all_const = true;
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      in[j] = v >= 0 ? g->values[v].constant : NULL;
      if (v >= 0 && !in[j]) all_const = false;
    }
    /* A reduced-precision weight stays small (engine_int.h). */
    if (!all_const || ts_reduced_weight_keep(g, i)) continue;
    rc = ts_exec_node_eval(g, n, in, out, fold_limit - m->folded_bytes, err);
    for (int k = 0; k < n->n_outputs; k++) {
      int v = n->outputs[k];
      if (rc == TS_OK && v >= 0) {
        ts_value *val = &g->values[v];
        val->constant = malloc(sizeof *val->constant);
        if (!val->constant) {
          rc = ts_err_set(err, TS_ENOMEM, "out of memory");
        } else {
          *val->constant = out[k];
          m->folded_bytes += out[k].nbytes;
          memset(&out[k], 0, sizeof out[k]);
          val->dtype = val->constant->dtype;
          val->rank = val->constant->rank;
          memcpy(val->dims, val->constant->dims, sizeof val->dims);
          val->producer = -1;
        }
      }
      ts_tensor_free(&out[k]);
    }
    if (rc) {
      char desc[256];
      if (rc == TS_EAGAIN)
        rc = ts_err_set(err, TS_EINTERNAL,
                        "%s: shape inference needs values although all "
                        "inputs are constant",
                        ts_node_desc(n, desc, sizeof desc));
      else if (rc == TS_EEXHAUSTED)
        ts_err_prefix(err, "constant folding at load (fold limit %zu bytes, "
                      "%zu taken by earlier folded constants)", fold_limit,
                      m->folded_bytes);
      break;
    }
    folded[i] = true;
  }
  if (rc) goto done;
  drop_nodes(g, folded);
done:
  free(in);
  free(out);
  free(folded);
  return rc;
}

/* ---- folding BatchNormalization into the Conv before it ----------------- */

/* Nodes reading value v (each node once), +1 if v is a graph output. */
static int consumers_of(const ts_graph *g, int v) {
  int count = g->values[v].is_graph_output ? 1 : 0;
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < g->nodes[i].n_inputs; j++)
      if (g->nodes[i].inputs[j] == v) {
        count++;
        break;
      }
  return count;
}

static bool is_op(const ts_node *n, const char *op_type) {
  return n->domain[0] == '\0' && strcmp(n->op_type, op_type) == 0;
}

/* The constant float32 vector [channels] that value v holds, or NULL. */
static const float *channel_vector(const ts_graph *g, int v,
                                   int64_t channels) {
  const ts_tensor *t = v >= 0 ? g->values[v].constant : NULL;
  if (!t || t->dtype != TS_DTYPE_FLOAT || t->rank != 1 ||
      t->dims[0] != channels)
    return NULL;
  return t->data;
}

/* v when it is a constant read by exactly one node (and not a graph
 * output), so that node may have it rewritten; -1 otherwise. */
static int private_constant(const ts_graph *g, int v) {
  if (v < 0 || !g->values[v].constant || g->values[v].is_graph_output ||
      consumers_of(g, v) != 1)
    return -1;
  return v;
}

/* Adds a constant value `name` (a fresh name derived from it when taken)
 * holding t (moved in). Returns its index, or a negative TS_E* code. */
static int add_constant(ts_graph *g, const char *name, ts_tensor *t,
                        ts_err *err) {
  char fresh[512];
  snprintf(fresh, sizeof fresh, "%s", name);
  for (int k = 1; ts_graph_find_value(g, fresh) >= 0; k++)
    snprintf(fresh, sizeof fresh, "%s.%d", name, k);
  ts_value *values =
      realloc(g->values, ((size_t)g->n_values + 1) * sizeof *values);
  if (!values) return ts_err_set(err, TS_ENOMEM, "out of memory");
  g->values = values;
  ts_value *val = &g->values[g->n_values];
  memset(val, 0, sizeof *val);
  val->name = strdup(fresh);
  val->constant = malloc(sizeof *val->constant);
  if (!val->name || !val->constant) {
    free(val->name);
    free(val->constant);
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  *val->constant = *t;
  memset(t, 0, sizeof *t);
  val->dtype = val->constant->dtype;
  val->rank = val->constant->rank;
  memcpy(val->dims, val->constant->dims, sizeof val->dims);
  val->producer = -1;
  return g->n_values++;
}

/* Replaces the constant of value v by t (moved in). */
static void replace_constant(ts_graph *g, int v, ts_tensor *t) {
  ts_tensor_free(g->values[v].constant);
  *g->values[v].constant = *t;
  memset(t, 0, sizeof *t);
}

/* Folds BatchNormalization node `bn` into Conv node `conv` when the fold is
 * exact and nothing else sees the difference; returns 1 when it folded
 * (the caller drops bn), 0 when it left both alone, or a negative TS_E*
 * (out of memory).
 *
 * Conditions: bn is inference BatchNormalization (only output Y used)
 * reading the Conv's only output, which nothing else reads (nor is a graph
 * output); scale, B, mean and var are constant float32 [M] (M = the Conv's
 * output channels); the Conv's W (and B when given) are float32 constants
 * read by this Conv only, so they can be rewritten in place. Then, per
 * output channel m, in float64 and rounded once:
 *   s = scale[m] / sqrt(var[m] + epsilon)
 *   W'[m, ...] = W[m, ...] * s
 *   B'[m] = (B[m] - mean[m]) * s + bias[m]      (B[m] = 0 without B)
 * and the Conv computes bn's Y directly. */
static int fold_conv_bn(ts_graph *g, int conv_i, int bn_i, ts_err *err) {
  ts_node *conv = &g->nodes[conv_i], *bn = &g->nodes[bn_i];
  if (conv->n_outputs != 1 || bn->n_inputs != 5 || bn->inputs[0] < 0 ||
      bn->inputs[0] != conv->outputs[0])
    return 0;
  for (int k = 1; k < bn->n_outputs; k++)
    if (bn->outputs[k] >= 0) return 0;
  if (ts_attr_int(bn, "training_mode", 0) != 0 ||
      consumers_of(g, conv->outputs[0]) != 1)
    return 0;
  const int w_v = private_constant(g, conv->inputs[1]);
  const int b_v = conv->n_inputs > 2 && conv->inputs[2] >= 0
                      ? private_constant(g, conv->inputs[2])
                      : -1;
  if (w_v < 0 || (conv->n_inputs > 2 && conv->inputs[2] >= 0 && b_v < 0))
    return 0;
  const ts_tensor *w = g->values[w_v].constant;
  if (w->dtype != TS_DTYPE_FLOAT || w->rank < 3 || w->dims[0] < 1) return 0;
  const int64_t channels = w->dims[0];
  const int64_t per_channel = ts_tensor_numel(w) / channels;
  const float *scale = channel_vector(g, bn->inputs[1], channels),
              *beta = channel_vector(g, bn->inputs[2], channels),
              *mean = channel_vector(g, bn->inputs[3], channels),
              *var = channel_vector(g, bn->inputs[4], channels),
              *bias = b_v >= 0 ? channel_vector(g, b_v, channels) : NULL;
  if (!scale || !beta || !mean || !var || (b_v >= 0 && !bias)) return 0;

  const double eps = (double)ts_attr_float(bn, "epsilon", 1e-5f);
  ts_tensor nw, nb;
  int rc = ts_tensor_alloc(&nw, TS_DTYPE_FLOAT, w->dims, w->rank, err);
  if (rc) return rc;
  if ((rc = ts_tensor_alloc(&nb, TS_DTYPE_FLOAT, &channels, 1, err))) {
    ts_tensor_free(&nw);
    return rc;
  }
  const float *wv = w->data;
  float *nwv = nw.data, *nbv = nb.data;
  for (int64_t m = 0; m < channels; m++) {
    const double s = (double)scale[m] / sqrt((double)var[m] + eps);
    for (int64_t i = m * per_channel; i < (m + 1) * per_channel; i++)
      nwv[i] = (float)((double)wv[i] * s);
    nbv[m] = (float)(((bias ? (double)bias[m] : 0.0) - (double)mean[m]) * s +
                     (double)beta[m]);
  }
  replace_constant(g, w_v, &nw);
  if (b_v >= 0) {
    replace_constant(g, b_v, &nb);
  } else {
    char name[256];
    snprintf(name, sizeof name, "%s.folded_bias",
             g->values[bn->outputs[0]].name);
    int v = add_constant(g, name, &nb, err);
    ts_tensor_free(&nb);
    if (v < 0) return v;
    int *inputs = realloc(conv->inputs, 3 * sizeof *inputs);
    if (!inputs) return ts_err_set(err, TS_ENOMEM, "out of memory");
    conv->inputs = inputs;
    if (conv->n_inputs < 3) conv->n_inputs = 3;
    conv->inputs[2] = v;
  }
  /* The Conv now computes Y; its old output is read by nothing. */
  g->values[conv->outputs[0]].producer = -1;
  conv->outputs[0] = bn->outputs[0];
  g->values[bn->outputs[0]].producer = conv_i;
  return 1;
}

/* Folds every inference BatchNormalization that follows a Conv into the
 * Conv's weights and bias (fold_conv_bn says when), as ONNX Runtime does
 * at session creation: one pass over the activations less, and the
 * planner then cuts the folded Conv. Runs after constant folding, so
 * parameters computed from constants count as constant. */
static int fold_batch_norms(loader *L, ts_err *err) {
  ts_graph *g = &L->m->graph;
  bool *drop = calloc((size_t)g->n_nodes + 1, sizeof *drop);
  if (!drop) return ts_err_set(err, TS_ENOMEM, "out of memory");
  int rc = TS_OK, folded = 0;
  for (int i = 0; i < g->n_nodes && rc == TS_OK; i++) {
    const ts_node *bn = &g->nodes[i];
    if (!is_op(bn, "BatchNormalization") || bn->n_inputs < 1 ||
        bn->inputs[0] < 0)
      continue;
    const int p = g->values[bn->inputs[0]].producer;
    if (p < 0 || !is_op(&g->nodes[p], "Conv")) continue;
    int r = fold_conv_bn(g, p, i, err);
    if (r < 0) rc = r;
    if (r > 0) drop[i] = true, folded++;
  }
  if (rc == TS_OK && folded) drop_nodes(g, drop);
  free(drop);
  /* add_constant() may have moved the values; the name index (still used
   * by apply_value_info) points at them. The added values are not in it,
   * so a value_info naming one is skipped like any unknown name. */
  L->ix.values = g->values;
  return rc;
}

/* ---- static shape inference ---------------------------------------------- */

/* What one inference pass knows about a value. */
typedef struct shape_info {
  bool known;
  ts_tensor t;    /* dtype, rank, dims, nbytes; data for constants/computed */
  bool own_data;  /* data was computed in this pass */
} shape_info;

static bool info_equal(const shape_info *a, const shape_info *b) {
  if (a->known != b->known) return false;
  if (!a->known) return true;
  if (a->t.dtype != b->t.dtype || !ts_tensor_same_shape(&a->t, &b->t))
    return false;
  if ((a->t.data == NULL) != (b->t.data == NULL)) return false;
  return !a->t.data || a->t.nbytes == 0 ||
         memcmp(a->t.data, b->t.data, a->t.nbytes) == 0;
}

/* Ops whose kernels read only the input's shape, never its data. */
static bool reads_shape_only(const ts_node *n) {
  return !n->domain[0] &&
         (strcmp(n->op_type, "Shape") == 0 || strcmp(n->op_type, "Size") == 0);
}

/* Infers node n's outputs in one pass. Returns 0 (outputs known or not),
 * or the op's error code when infer fails for a reason other than EAGAIN. */
static int infer_node(const ts_graph *g, const ts_node *n, shape_info *info,
                      const ts_tensor **in, ts_tensor *out, ts_err *err) {
  bool have_data = true;
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j];
    in[j] = NULL;
    if (v < 0) continue;
    if (!info[v].known) return TS_OK;
    in[j] = &info[v].t;
    if (!info[v].t.data && !(j == 0 && reads_shape_only(n))) have_data = false;
  }
  for (int k = 0; k < n->n_outputs; k++) memset(&out[k], 0, sizeof out[k]);
  int rc = n->op->infer(n, in, out, err);
  if (rc == TS_EAGAIN) return TS_OK;
  if (rc) return rc;
  size_t total = 0;
  for (int k = 0; k < n->n_outputs; k++) {
    int v = n->outputs[k];
    if (v < 0) continue;
    info[v].known = true;
    info[v].t = out[k];
    info[v].t.data = NULL;
    info[v].t.owned = false;
    /* Saturating: huge outputs must never wrap into "small enough". */
    total = out[k].nbytes > SIZE_MAX - total ? SIZE_MAX : total + out[k].nbytes;
  }
  /* Evaluate small results computed from known values (shape arithmetic,
   * possibly through Cast and float math) so that Reshape and friends
   * downstream can infer. Failures only mean "not known". */
  if (have_data && total <= SHAPE_DATA_MAX) {
    ts_err ignored;
    if (ts_exec_node_eval(g, n, in, out, SHAPE_EVAL_BUDGET, &ignored) ==
        TS_OK) {
      for (int k = 0; k < n->n_outputs; k++) {
        int v = n->outputs[k];
        if (v < 0) continue;
        info[v].t.data = out[k].data;
        info[v].own_data = true;
        out[k].owned = false;
      }
    }
    for (int k = 0; k < n->n_outputs; k++) ts_tensor_free(&out[k]);
  }
  return TS_OK;
}

static void info_init(const ts_graph *g, shape_info *info, int64_t sentinel) {
  for (int v = 0; v < g->n_values; v++) {
    const ts_value *val = &g->values[v];
    shape_info *s = &info[v];
    memset(s, 0, sizeof *s);
    if (val->constant) {
      s->known = true;
      s->t = *val->constant;
      s->t.owned = false;
    } else if (val->is_graph_input && val->rank >= 0 &&
               val->dtype != TS_DTYPE_UNDEFINED) {
      s->known = true;
      s->t.dtype = val->dtype;
      s->t.rank = val->rank;
      for (int d = 0; d < val->rank; d++)
        s->t.dims[d] = val->dims[d] < 0 ? sentinel : val->dims[d];
      int64_t nb = ts_shape_nbytes(val->dtype, s->t.dims, val->rank);
      s->t.nbytes = nb > 0 ? (size_t)nb : 0;
    }
  }
}

static void info_free(const ts_graph *g, shape_info *info) {
  if (!info) return;
  for (int v = 0; v < g->n_values; v++)
    if (info[v].own_data) free(info[v].t.data);
  free(info);
}

/* Fills dtype/rank/dims of every node output that inference can tell; see
 * the file comment for the two-pass scheme. */
static int infer_shapes(ts_model *m, ts_err *err) {
  ts_graph *g = &m->graph;
  int max_io = 1;
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].n_inputs > max_io) max_io = g->nodes[i].n_inputs;
    if (g->nodes[i].n_outputs > max_io) max_io = g->nodes[i].n_outputs;
  }
  shape_info *a = calloc((size_t)g->n_values + 1, sizeof *a);
  shape_info *b = calloc((size_t)g->n_values + 1, sizeof *b);
  const ts_tensor **in = calloc((size_t)max_io, sizeof *in);
  ts_tensor *out = calloc((size_t)max_io, sizeof *out);
  int rc = TS_OK;
  if (!a || !b || !in || !out) {
    rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    goto done;
  }
  info_init(g, a, SENTINEL_A);
  info_init(g, b, SENTINEL_B);
  for (int i = 0; i < g->n_nodes; i++) {
    const ts_node *n = &g->nodes[i];
    bool same_inputs = true;
    for (int j = 0; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0 && !info_equal(&a[n->inputs[j]], &b[n->inputs[j]]))
        same_inputs = false;
    ts_err ea, eb;
    ts_err_clear(&ea);
    int ra = infer_node(g, n, a, in, out, &ea);
    int rb = infer_node(g, n, b, in, out, &eb);
    if (ra && same_inputs) {
      /* Nothing symbolic reached this node: it fails for every input. */
      if (err) *err = ea;
      rc = ra;
      goto done;
    }
    (void)rb;
  }
  for (int v = 0; v < g->n_values; v++) {
    ts_value *val = &g->values[v];
    if (val->constant || val->is_graph_input) continue;
    if (!a[v].known || !b[v].known || a[v].t.dtype != b[v].t.dtype ||
        a[v].t.rank != b[v].t.rank)
      continue;
    val->dtype = a[v].t.dtype;
    val->rank = a[v].t.rank;
    for (int d = 0; d < val->rank; d++)
      val->dims[d] = a[v].t.dims[d] == b[v].t.dims[d] ? a[v].t.dims[d] : -1;
  }
done:
  info_free(g, a);
  info_free(g, b);
  free(in);
  free(out);
  return rc;
}

/* Takes dtype and shape from the model's value_info and graph outputs for
 * values that inference left unknown. */
static int apply_value_info(loader *L, ts_err *err) {
  ts_graph *g = &L->m->graph;
  const Onnx__GraphProto *gp = L->gp;
  for (int pass = 0; pass < 2; pass++) {
    size_t count = pass ? gp->n_output : gp->n_value_info;
    Onnx__ValueInfoProto **list = pass ? gp->output : gp->value_info;
    for (size_t i = 0; i < count; i++) {
      const char *name = str_or_empty(list[i]->name);
      int v = index_find(&L->ix, name, NULL);
      if (v < 0 || g->values[v].constant || g->values[v].is_graph_input)
        continue;
      ts_value *val = &g->values[v];
      ts_dtype dt;
      int rank;
      int64_t dims[TS_MAX_RANK];
      int rc = parse_value_info(list[i], pass ? "graph output" : "value_info",
                                &dt, &rank, dims, err);
      if (rc) {
        if (pass == 0) continue; /* intermediate annotations are optional */
        return rc;
      }
      if (val->dtype == TS_DTYPE_UNDEFINED) val->dtype = dt;
      if (val->rank < 0 && rank >= 0) {
        val->rank = rank;
        memcpy(val->dims, dims, (size_t)rank * sizeof dims[0]);
      }
    }
  }
  return TS_OK;
}

static void count_consumers(ts_model *m) {
  ts_graph *g = &m->graph;
  for (int v = 0; v < g->n_values; v++)
    g->values[v].n_consumers = g->values[v].is_graph_output ? 1 : 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const ts_node *n = &g->nodes[i];
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      bool seen = false;
      for (int k = 0; k < j && !seen; k++) seen = n->inputs[k] == v;
      if (v >= 0 && !seen) g->values[v].n_consumers++;
    }
  }
  m->weight_bytes = 0;
  for (int v = 0; v < g->n_values; v++)
    if (g->values[v].constant) m->weight_bytes += g->values[v].constant->nbytes;
}

/* engine_int.h: drops the reduced weight nodes the products absorbed. */
void ts_graph_drop_unread(ts_model *m) {
  ts_graph *g = &m->graph;
  bool *drop = calloc((size_t)g->n_nodes + 1, sizeof *drop);
  if (!drop) return; /* they stay, unread: nothing runs them */
  int dropped = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    ts_reduced_weight rw;
    if (ts_reduced_weight_of(g, i, &rw) &&
        consumers_of(g, g->nodes[i].outputs[0]) == 0)
      drop[i] = true, dropped++;
  }
  if (dropped) {
    for (int i = 0; i < g->n_nodes; i++)
      if (drop[i]) g->values[g->nodes[i].outputs[0]].producer = -1;
    drop_nodes(g, drop);
    count_consumers(m);
  }
  free(drop);
}

/* engine_int.h: the passes after unpack, in the order the file comment
 * lists them. */
int ts_model_build(ts_model *m, size_t fold_limit, ts_err *err) {
  loader L = {.m = m};
  int rc = check_versions(m, err);
  if (rc) return rc;
  L.gp = m->proto->graph;
  if (!L.gp) return ts_err_set(err, TS_EINVAL, "model has no graph");
  if ((rc = normalize_strings(m->proto->graph, err))) return rc;
  if (!(rc = load_values(&L, err)) && !(rc = load_nodes(&L, err)) &&
      !(rc = sort_nodes(&m->graph, err)) && !(rc = prepare_and_fold(m, fold_limit, err)) &&
      !(rc = fold_batch_norms(&L, err)) && !(rc = infer_shapes(m, err)) &&
      !(rc = apply_value_info(&L, err)))
    count_consumers(m);
  free(L.ix.slots);
  return rc;
}


/* engine_int.h: frees what the passes put in g, and the nodes' params. */
void ts_graph_free(ts_graph *g) {
  for (int i = 0; i < g->n_nodes; i++) {
    ts_node *n = &g->nodes[i];
    if (n->op && n->op->release && n->params) n->op->release(n);
    free(n->inputs);
    free(n->outputs);
  }
  for (int v = 0; v < g->n_values; v++) {
    free(g->values[v].name);
    if (g->values[v].constant) {
      ts_tensor_free(g->values[v].constant);
      free(g->values[v].constant);
    }
  }
  free(g->values);
  free(g->nodes);
  free(g->inputs);
  free(g->outputs);
}

int ts_graph_find_value(const ts_graph *g, const char *name) {
  if (!g || !name) return -1;
  for (int v = 0; v < g->n_values; v++)
    if (strcmp(g->values[v].name, name) == 0) return v;
  return -1;
}

/* Product of a value's dims with unknown dims taken as 1. */
static double value_elems(const ts_graph *g, int v) {
  if (v < 0 || g->values[v].rank < 0) return 1;
  double n = 1;
  for (int d = 0; d < g->values[v].rank; d++)
    n *= g->values[v].dims[d] < 0 ? 1 : (double)g->values[v].dims[d];
  return n;
}

static double value_dim(const ts_graph *g, int v, int d) {
  if (v < 0) return 1;
  const ts_value *val = &g->values[v];
  if (val->rank <= 0) return 1;
  if (d < 0) d += val->rank;
  if (d < 0 || d >= val->rank || val->dims[d] < 0) return 1;
  return (double)val->dims[d];
}

double ts_graph_node_flops(const ts_model *m, int node) {
  const ts_graph *g = &m->graph;
  if (node < 0 || node >= g->n_nodes) return 0;
  const ts_node *n = &g->nodes[node];
  double out = 0;
  for (int k = 0; k < n->n_outputs; k++)
    if (n->outputs[k] >= 0) out += value_elems(g, n->outputs[k]);
  if (n->domain[0]) return out;
  int a = n->n_inputs > 0 ? n->inputs[0] : -1;
  int w = n->n_inputs > 1 ? n->inputs[1] : -1;
  if (strcmp(n->op_type, "Gemm") == 0) {
    /* out [M,N] * K, K from A's dims (transposed if transA) */
    bool ta = ts_attr_int(n, "transA", 0) != 0;
    return out * value_dim(g, a, ta ? 0 : 1);
  }
  if (strcmp(n->op_type, "MatMul") == 0) return out * value_dim(g, a, -1);
  if (strcmp(n->op_type, "Conv") == 0 || strcmp(n->op_type, "ConvTranspose") == 0) {
    /* W is [M, C/groups, k...] for Conv: C/groups * kernel = numel(W) / M */
    if (w < 0 || g->values[w].rank < 1) return out;
    double per_out = value_elems(g, w) / value_dim(g, w, 0);
    if (strcmp(n->op_type, "ConvTranspose") == 0) {
      /* W is [C, M/groups, k...]: C/groups * kernel per output element */
      int64_t groups = ts_attr_int(n, "group", 1);
      per_out = value_elems(g, w) / value_dim(g, w, 1) /
                (double)(groups > 0 ? groups : 1);
    }
    return out * per_out;
  }
  return out;
}
