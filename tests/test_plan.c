/*
 * test_plan.c - the partitioner's invariant and its contract (plan.h).
 *
 * The invariant: for every strategy and N in {2, 3, 4}, running a model's
 * plan stage by stage (each shard loaded from its own bytes with
 * ts_model_load, run on its inputs taken from a name -> tensor map, partial
 * outputs fused with fuse.c as listed) gives the whole model's outputs
 * (ts_exec_run on the unsharded model) within 1e-5 relative error
 * (max |plan - whole| <= 1e-5 * max |whole| per output tensor).
 *
 * Models: MLPs and a residual DAG built here with protobuf-c, and PyTorch
 * exports (MLP, LeNet-style CNN, ResNet-style CNN with BatchNormalization
 * and residual adds, 2-layer TransformerEncoder with an Embedding front)
 * made once per run by /usr/bin/python3 with torch.onnx.export.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "fuse.h"
#include "graph.h"
#include "hash.h"
#include "plan.h"
#include "plan/plan_int.h"

/* ---- a name -> tensor map (owned copies) -------------------------------- */

typedef struct tmap {
  char **names;
  ts_tensor *t;
  int n, cap;
} tmap;

static void tmap_put(tmap *m, const char *name, const ts_tensor *src) {
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 16;
    m->names = realloc(m->names, (size_t)m->cap * sizeof *m->names);
    m->t = realloc(m->t, (size_t)m->cap * sizeof *m->t);
    ck_assert(m->names && m->t);
  }
  ts_err err;
  ts_tensor *d = &m->t[m->n];
  ck_assert_int_eq(ts_tensor_alloc(d, src->dtype, src->dims, src->rank, &err),
                   0);
  if (src->nbytes) memcpy(d->data, src->data, src->nbytes);
  m->names[m->n++] = strdup(name);
}

static const ts_tensor *tmap_get(const tmap *m, const char *name) {
  for (int i = m->n - 1; i >= 0; i--)
    if (strcmp(m->names[i], name) == 0) return &m->t[i];
  return NULL;
}

static void tmap_free(tmap *m) {
  for (int i = 0; i < m->n; i++) {
    free(m->names[i]);
    ts_tensor_free(&m->t[i]);
  }
  free(m->names);
  free(m->t);
  memset(m, 0, sizeof *m);
}

/* ---- random inputs ------------------------------------------------------ */

static uint64_t rng_state = 88172645463325252ull;
static double rnd(void) { /* xorshift64, uniform in [-1, 1) */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

/* Fills a map with one random tensor per graph input of m, with every
 * symbolic dim set to `batch`. Integer inputs get ids in [0, int_range). */
static void random_inputs(const ts_model *m, int64_t batch, int int_range,
                          tmap *out) {
  for (int i = 0; i < m->graph.n_inputs; i++) {
    const ts_value *v = &m->graph.values[m->graph.inputs[i]];
    int64_t dims[TS_MAX_RANK];
    for (int d = 0; d < v->rank; d++) dims[d] = v->dims[d] < 0 ? batch : v->dims[d];
    ts_tensor t;
    ts_err err;
    ck_assert_int_eq(ts_tensor_alloc(&t, v->dtype, dims, v->rank, &err), 0);
    int64_t n = ts_tensor_numel(&t);
    for (int64_t e = 0; e < n; e++) {
      if (v->dtype == TS_DTYPE_FLOAT)
        ((float *)t.data)[e] = (float)rnd();
      else if (v->dtype == TS_DTYPE_INT64)
        ((int64_t *)t.data)[e] = (int64_t)((rnd() + 1) / 2 * int_range);
      else
        ck_abort_msg("input '%s' has an unexpected dtype", v->name);
    }
    tmap_put(out, v->name, &t);
    ts_tensor_free(&t);
  }
}

/* ---- running models and plans ------------------------------------------- */

/* Runs `m` on the named inputs from `in` (those it declares) and puts the
 * listed outputs (all graph outputs when names == NULL) into `out`. */
static void run_model(const ts_model *m, const tmap *in,
                      const char *const *out_names, int n_out, tmap *out,
                      const char *what) {
  ts_session *s;
  ts_err err = {0};
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  int n_in = m->graph.n_inputs;
  const char **names = calloc((size_t)n_in + 1, sizeof *names);
  ts_tensor *tin = calloc((size_t)n_in + 1, sizeof *tin);
  for (int i = 0; i < n_in; i++) {
    names[i] = m->graph.values[m->graph.inputs[i]].name;
    const ts_tensor *t = tmap_get(in, names[i]);
    ck_assert_msg(t, "%s: input '%s' is not available", what, names[i]);
    tin[i] = *t;
  }
  int n = out_names ? n_out : m->graph.n_outputs;
  ts_tensor *touts = calloc((size_t)n + 1, sizeof *touts);
  int rc = ts_exec_run(m, s, names, tin, n_in, out_names, touts,
                       out_names ? n_out : 0, &err);
  ck_assert_msg(rc == 0, "%s: ts_exec_run failed: %s", what, err.msg);
  for (int i = 0; i < n; i++)
    tmap_put(out,
             out_names ? out_names[i]
                       : m->graph.values[m->graph.outputs[i]].name,
             &touts[i]);
  free(touts);
  free(names);
  free(tin);
  ts_session_free(s);
}

/* ts_fuse_stage's view of a tmap (stores copies; frees the fused tensor). */
static const ts_tensor *tmap_lookup(void *user, const char *name) {
  return tmap_get(user, name);
}

static int tmap_store(void *user, const char *name, ts_tensor *t,
                      ts_err *err) {
  (void)err;
  tmap_put(user, name, t);
  ts_tensor_free(t);
  return 0;
}

/* Runs the plan stage by stage: each shard loaded from its bytes, run on
 * its inputs from `env`, its outputs added to `env`, fusions applied in
 * order (nested ones reading earlier fusions' outputs). */
static void run_plan(const ts_plan *p, tmap *env) {
  for (int s = 0; s < p->n_stages; s++) {
    const ts_stage *st = &p->stages[s];
    ck_assert_int_ge(st->n_shards, 1);
    for (int i = 0; i < st->n_inputs; i++)
      ck_assert_msg(tmap_get(env, st->inputs[i]),
                    "stage %d input '%s' was not produced earlier", s,
                    st->inputs[i]);
    for (int k = 0; k < st->n_shards; k++) {
      const ts_shard *sh = &st->shards[k];
      ts_model *m = NULL;
      ts_err err = {0};
      int rc = ts_model_load(sh->bytes, sh->len, &m, &err);
      ck_assert_msg(rc == 0, "shard %s does not load: %s", sh->label, err.msg);
      ck_assert_int_eq(m->graph.n_inputs, sh->n_inputs);
      run_model(m, env, (const char *const *)sh->outputs, sh->n_outputs, env,
                sh->label);
      ts_model_free(m);
    }
    for (int f = 0; f < st->n_fusions; f++)
      ck_assert_int_le(st->fusions[f].n_parts, st->n_shards);
    ts_fuse_env fenv = {tmap_lookup, tmap_store, env};
    ts_err err = {0};
    int rc = ts_fuse_stage(st, &fenv, &err);
    ck_assert_msg(rc == 0, "stage %d fusions failed: %s", s, err.msg);
    for (int i = 0; i < st->n_outputs; i++)
      ck_assert_msg(tmap_get(env, st->outputs[i]),
                    "stage %d output '%s' was not produced", s,
                    st->outputs[i]);
  }
}

static double elem(const ts_tensor *t, int64_t i) {
  switch (t->dtype) {
    case TS_DTYPE_FLOAT: return ((const float *)t->data)[i];
    case TS_DTYPE_DOUBLE: return ((const double *)t->data)[i];
    case TS_DTYPE_INT64: return (double)((const int64_t *)t->data)[i];
    case TS_DTYPE_INT32: return ((const int32_t *)t->data)[i];
    default: ck_abort_msg("unexpected dtype %d", t->dtype);
  }
  return 0;
}

/* max |got - want| <= tol * max |want|, shapes and dtypes equal. */
static void expect_close(const ts_tensor *want, const ts_tensor *got,
                         double tol, const char *what) {
  ck_assert_msg(got, "%s: missing", what);
  ck_assert_msg(want->dtype == got->dtype && ts_tensor_same_shape(want, got),
                "%s: dtype/shape differ", what);
  int64_t n = ts_tensor_numel(want);
  double scale = 0, diff = 0;
  for (int64_t i = 0; i < n; i++) {
    scale = fmax(scale, fabs(elem(want, i)));
    diff = fmax(diff, fabs(elem(want, i) - elem(got, i)));
  }
  ck_assert_msg(diff <= tol * fmax(scale, 1e-30),
                "%s: max error %g vs scale %g exceeds %g relative", what, diff,
                scale, tol);
}

static ts_model *load_bytes(const uint8_t *b, size_t len, const char *what) {
  ts_model *m = NULL;
  ts_err err = {0};
  int rc = ts_model_load(b, len, &m, &err);
  ck_assert_msg(rc == 0, "%s does not load: %s", what, err.msg);
  return m;
}

/* A plan that must build. */
static ts_plan *build_opts(const ts_model *m, const ts_plan_opts *o) {
  ts_plan *p = NULL;
  ts_err err = {0};
  int rc = ts_plan_build(m, o, &p, &err);
  ck_assert_msg(rc == 0, "ts_plan_build(%s, stages %d, shards %d, grid %dx%d) "
                "failed: %s", ts_strategy_name(o->strategy), o->stages,
                o->shards, o->grid_rows, o->grid_cols, err.msg);
  return p;
}

static ts_plan *build(const ts_model *m, ts_strategy s, int stages, int shards,
                      int replicas) {
  ts_plan_opts o = {.strategy = s, .stages = stages, .shards = shards,
                    .replicas = replicas, .model_name = "m"};
  return build_opts(m, &o);
}

/* The invariant for one plan. */
static void check_plan(const ts_model *m, const ts_plan *p, int64_t batch,
                       int int_range, const char *what) {
  tmap in = {0}, whole = {0};
  random_inputs(m, batch, int_range, &in);
  run_model(m, &in, NULL, 0, &whole, what);
  run_plan(p, &in);
  for (int i = 0; i < m->graph.n_outputs; i++) {
    const char *name = m->graph.values[m->graph.outputs[i]].name;
    char w[256];
    snprintf(w, sizeof w, "%s output '%s'", what, name);
    expect_close(tmap_get(&whole, name), tmap_get(&in, name), 1e-5, w);
  }
  tmap_free(&in);
  tmap_free(&whole);
}

/* Every strategy, N in {2, 3, 4}. */
static void check_all_strategies(const ts_model *m, int int_range,
                                 const char *model) {
  static const ts_strategy strategies[] = {
      TS_STRATEGY_DATA, TS_STRATEGY_PIPELINE, TS_STRATEGY_TENSOR,
      TS_STRATEGY_HYBRID, TS_STRATEGY_BLOCK};
  for (size_t s = 0; s < sizeof strategies / sizeof strategies[0]; s++)
    for (int n = 2; n <= 4; n++) {
      ts_plan *p = build(m, strategies[s], n, n, n);
      char what[128];
      snprintf(what, sizeof what, "%s/%s/%d", model,
               ts_strategy_name(strategies[s]), n);
      ck_assert_int_eq(p->replicas, n);
      if (strategies[s] == TS_STRATEGY_PIPELINE)
        ck_assert_int_eq(p->n_stages, n);
      if (strategies[s] == TS_STRATEGY_DATA) {
        ck_assert_int_eq(p->n_stages, 1);
        ck_assert_int_eq(p->stages[0].n_shards, 1);
      }
      check_plan(m, p, 3, int_range, what);
      ts_plan_free(p);
    }
}

/* ---- models built with protobuf-c --------------------------------------- */

typedef struct mb {
  Onnx__NodeProto *nodes[64];
  int n_nodes;
  Onnx__TensorProto *inits[64];
  int n_inits;
  Onnx__ValueInfoProto *ins[8], *outs[8];
  int n_ins, n_outs;
  void *allocs[4096];
  int n_allocs;
} mb;

static void *mb_alloc(mb *b, size_t size) {
  ck_assert_int_lt(b->n_allocs, 4096);
  void *p = calloc(1, size);
  ck_assert(p);
  return b->allocs[b->n_allocs++] = p;
}

static char *mb_str(mb *b, const char *s) {
  char *d = mb_alloc(b, strlen(s) + 1);
  strcpy(d, s);
  return d;
}

/* A float ValueInfo; dims -1 become dim_param "N". */
static Onnx__ValueInfoProto *mb_vi(mb *b, const char *name, int rank,
                                   const int64_t *dims) {
  Onnx__ValueInfoProto *vi = mb_alloc(b, sizeof *vi);
  Onnx__TypeProto *tp = mb_alloc(b, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = mb_alloc(b, sizeof *tt);
  Onnx__TensorShapeProto *sh = mb_alloc(b, sizeof *sh);
  onnx__value_info_proto__init(vi);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sh);
  vi->name = mb_str(b, name);
  vi->type = tp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  tt->has_elem_type = 1;
  tt->elem_type = TS_DTYPE_FLOAT;
  tt->shape = sh;
  sh->n_dim = (size_t)rank;
  sh->dim = mb_alloc(b, (size_t)rank * sizeof *sh->dim + 1);
  for (int i = 0; i < rank; i++) {
    Onnx__TensorShapeProto__Dimension *d = mb_alloc(b, sizeof *d);
    onnx__tensor_shape_proto__dimension__init(d);
    if (dims[i] < 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = mb_str(b, "N");
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = dims[i];
    }
    sh->dim[i] = d;
  }
  return vi;
}

static void mb_input(mb *b, const char *name, int rank, const int64_t *dims) {
  b->ins[b->n_ins++] = mb_vi(b, name, rank, dims);
}

static void mb_output(mb *b, const char *name, int rank, const int64_t *dims) {
  b->outs[b->n_outs++] = mb_vi(b, name, rank, dims);
}

/* A float initializer with random values in [-scale, scale). */
static void mb_weight(mb *b, const char *name, int rank, const int64_t *dims,
                      double scale) {
  Onnx__TensorProto *t = mb_alloc(b, sizeof *t);
  onnx__tensor_proto__init(t);
  t->name = mb_str(b, name);
  t->has_data_type = 1;
  t->data_type = TS_DTYPE_FLOAT;
  t->n_dims = (size_t)rank;
  t->dims = mb_alloc(b, (size_t)rank * sizeof *t->dims + 1);
  memcpy(t->dims, dims, (size_t)rank * sizeof *dims);
  int64_t n = ts_shape_numel(dims, rank);
  t->n_float_data = (size_t)n;
  t->float_data = mb_alloc(b, (size_t)n * sizeof(float) + 1);
  for (int64_t i = 0; i < n; i++) t->float_data[i] = (float)(scale * rnd());
  b->inits[b->n_inits++] = t;
}

/* A node; `ins` and `outs` are comma-separated names ("" for none). */
static Onnx__NodeProto *mb_node(mb *b, const char *op, const char *ins,
                                const char *outs) {
  Onnx__NodeProto *n = mb_alloc(b, sizeof *n);
  onnx__node_proto__init(n);
  n->op_type = mb_str(b, op);
  n->name = mb_str(b, op);
  const char *lists[2] = {ins, outs};
  for (int l = 0; l < 2; l++) {
    char **arr = mb_alloc(b, 8 * sizeof *arr);
    size_t count = 0;
    char *copy = mb_str(b, lists[l]);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
      arr[count++] = tok;
    if (l == 0) {
      n->input = arr;
      n->n_input = count;
    } else {
      n->output = arr;
      n->n_output = count;
    }
  }
  b->nodes[b->n_nodes++] = n;
  return n;
}

static void mb_attr_int(mb *b, Onnx__NodeProto *n, const char *name,
                        int64_t v) {
  Onnx__AttributeProto *a = mb_alloc(b, sizeof *a);
  onnx__attribute_proto__init(a);
  a->name = mb_str(b, name);
  a->has_type = 1;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  a->has_i = 1;
  a->i = v;
  Onnx__AttributeProto **list =
      mb_alloc(b, (n->n_attribute + 1) * sizeof *list);
  if (n->n_attribute)
    memcpy(list, n->attribute, n->n_attribute * sizeof *list);
  list[n->n_attribute++] = a;
  n->attribute = list;
}

/* Serializes the model (opset `opset`) and frees the builder. */
static ts_model *mb_finish(mb *b, int64_t opset) {
  Onnx__OperatorSetIdProto op = ONNX__OPERATOR_SET_ID_PROTO__INIT;
  Onnx__OperatorSetIdProto *ops[1] = {&op};
  op.domain = "";
  op.has_version = 1;
  op.version = opset;
  Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
  g.name = "test";
  g.n_node = (size_t)b->n_nodes;
  g.node = b->nodes;
  g.n_initializer = (size_t)b->n_inits;
  g.initializer = b->inits;
  g.n_input = (size_t)b->n_ins;
  g.input = b->ins;
  g.n_output = (size_t)b->n_outs;
  g.output = b->outs;
  Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
  m.has_ir_version = 1;
  m.ir_version = 8;
  m.n_opset_import = 1;
  m.opset_import = ops;
  m.graph = &g;
  size_t len = onnx__model_proto__get_packed_size(&m);
  uint8_t *bytes = malloc(len);
  onnx__model_proto__pack(&m, bytes);
  for (int i = 0; i < b->n_allocs; i++) free(b->allocs[i]);
  free(b);
  ts_model *model = load_bytes(bytes, len, "built model");
  free(bytes);
  return model;
}

/* x[N, sizes[0]] -> Gemm -> act[0] -> Gemm -> act[1] -> ... -> y. Layer i
 * uses transB = i % 2 (so both weight layouts are split). `batch` < 0:
 * symbolic. */
static ts_model *mlp_model(int layers, const int *sizes, const char **acts,
                           int64_t batch, int64_t opset) {
  mb *b = calloc(1, sizeof *b);
  int64_t in_dims[2] = {batch, sizes[0]}, out_dims[2] = {batch, sizes[layers]};
  mb_input(b, "x", 2, in_dims);
  char prev[32] = "x";
  for (int i = 0; i < layers; i++) {
    char w[32], bias[32], h[32], a[32], ins[128];
    snprintf(w, sizeof w, "W%d", i);
    snprintf(bias, sizeof bias, "b%d", i);
    snprintf(h, sizeof h, i == layers - 1 && !acts[i] ? "y" : "h%d", i);
    int64_t wd[2] = {sizes[i + 1], sizes[i]};
    if (i % 2 == 0) wd[0] = sizes[i], wd[1] = sizes[i + 1];
    int64_t bd[1] = {sizes[i + 1]};
    mb_weight(b, w, 2, wd, 1.0 / sqrt(sizes[i]));
    mb_weight(b, bias, 1, bd, 0.5);
    snprintf(ins, sizeof ins, "%s,%s,%s", prev, w, bias);
    Onnx__NodeProto *n = mb_node(b, "Gemm", ins, h);
    mb_attr_int(b, n, "transB", i % 2);
    snprintf(prev, sizeof prev, "%s", h);
    if (acts[i]) {
      snprintf(a, sizeof a, i == layers - 1 ? "y" : "a%d", i);
      mb_node(b, acts[i], prev, a);
      snprintf(prev, sizeof prev, "%s", a);
    }
  }
  mb_output(b, "y", 2, out_dims);
  return mb_finish(b, opset);
}

/* The MLP of the brief: Gemm+Relu+Gemm+Tanh+Gemm with odd sizes. */
static ts_model *mlp_odd(void) {
  static const int sizes[] = {13, 17, 11, 5};
  static const char *acts[] = {"Relu", "Tanh", NULL};
  return mlp_model(3, sizes, acts, -1, 13);
}

/* 64 -> 256 -> 256 -> 64 with Relus: big enough for weight shares. */
static ts_model *mlp_big(void) {
  static const int sizes[] = {64, 256, 256, 64};
  static const char *acts[] = {"Relu", "Relu", NULL};
  return mlp_model(3, sizes, acts, -1, 13);
}

/* Declarative pieces of a model: weights, nodes and float outputs. */
typedef struct wspec {
  const char *name;
  int rank;
  int64_t dims[4];
  double scale;
} wspec;

typedef struct nspec {
  const char *op, *ins, *outs;
} nspec;

static void mb_weights(mb *b, const wspec *w, int n) {
  for (int i = 0; i < n; i++)
    mb_weight(b, w[i].name, w[i].rank, w[i].dims, w[i].scale);
}

static void mb_nodes(mb *b, const nspec *ns, int n) {
  for (int i = 0; i < n; i++) mb_node(b, ns[i].op, ns[i].ins, ns[i].outs);
}

static void mb_outputs(mb *b, const wspec *o, int n) {
  for (int i = 0; i < n; i++) mb_output(b, o[i].name, o[i].rank, o[i].dims);
}

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A DAG: tensors that cross several cuts (residual), MatMul + Add with a
 * per-column bias (Megatron pair through Add and Relu), a one-column Gemm
 * head (split by input rows with a Slice), and three graph outputs.
 *   h1 = Relu(x @ W1 + b1)        [N,16]
 *   h2 = h1 @ W2 + b2             [N,12]
 *   s  = Sigmoid(x + h2)          [N,12]
 *   y1 = Gemm(s, W3) + c3         [N,9]
 *   y2 = Gemm(s, W4^T) + c4       [N,1]
 *   y3 = s * h2                   [N,12] */
static ts_model *dag_model(int64_t opset) {
  static const wspec weights[] = {
      {"W1", 2, {12, 16}, 0.4}, {"b1", 1, {16}, 0.5}, {"W2", 2, {16, 12}, 0.3},
      {"b2", 1, {12}, 0.5},     {"W3", 2, {12, 9}, 0.3}, {"c3", 1, {9}, 0.5},
      {"W4", 2, {1, 12}, 0.3},  {"c4", 1, {1}, 0.5}};
  static const nspec nodes[] = {
      {"MatMul", "x,W1", "m1"}, {"Add", "m1,b1", "p1"}, {"Relu", "p1", "h1"},
      {"MatMul", "h1,W2", "m2"}, {"Add", "m2,b2", "h2"}, {"Add", "x,h2", "r"},
      {"Sigmoid", "r", "s"},     {"Gemm", "s,W3,c3", "y1"},
      {"Mul", "s,h2", "y3"}};
  static const wspec outputs[] = {
      {"y1", 2, {-1, 9}, 0}, {"y2", 2, {-1, 1}, 0}, {"y3", 2, {-1, 12}, 0}};
  mb *b = calloc(1, sizeof *b);
  int64_t x[2] = {-1, 12};
  mb_input(b, "x", 2, x);
  mb_weights(b, weights, COUNT(weights));
  mb_nodes(b, nodes, COUNT(nodes));
  mb_attr_int(b, mb_node(b, "Gemm", "s,W4,c4", "y2"), "transB", 1);
  mb_outputs(b, outputs, COUNT(outputs));
  return mb_finish(b, opset);
}

/* Convolutions: a channel-split pair (Conv -> Relu -> Conv, one sum), a
 * one-channel Conv (split by input channels with a Slice) and a grouped
 * Conv (never split).
 *   y1 = Conv(Relu(Conv(x, W1, B1)), W2, B2)   [N,5,4,4]
 *   y2 = Conv(x, W3, B3)                        [N,1,4,4]
 *   y3 = Conv(x, W4, group = 3)                 [N,3,4,4] */
static ts_model *conv_model(void) {
  static const wspec weights[] = {
      {"W1", 4, {7, 3, 3, 3}, 0.3}, {"B1", 1, {7}, 0.5},
      {"W2", 4, {5, 7, 1, 1}, 0.4}, {"B2", 1, {5}, 0.5},
      {"W3", 4, {1, 3, 3, 3}, 0.3}, {"B3", 1, {1}, 0.5},
      {"W4", 4, {3, 1, 3, 3}, 0.3}};
  static const nspec nodes[] = {{"Conv", "x,W1,B1", "c1"},
                                {"Relu", "c1", "r1"},
                                {"Conv", "r1,W2,B2", "y1"},
                                {"Conv", "x,W3,B3", "y2"}};
  static const wspec outputs[] = {{"y1", 4, {-1, 5, 4, 4}, 0},
                                  {"y2", 4, {-1, 1, 4, 4}, 0},
                                  {"y3", 4, {-1, 3, 4, 4}, 0}};
  mb *b = calloc(1, sizeof *b);
  int64_t x[4] = {-1, 3, 6, 6};
  mb_input(b, "x", 4, x);
  mb_weights(b, weights, COUNT(weights));
  mb_nodes(b, nodes, COUNT(nodes));
  mb_attr_int(b, mb_node(b, "Conv", "x,W4", "y3"), "group", 3);
  mb_outputs(b, outputs, COUNT(outputs));
  return mb_finish(b, 13);
}

/* ---- PyTorch exports ---------------------------------------------------- */

static char torch_dir[64];
static char torch_log[4096];
static int torch_rc = -1;

static const char torch_script[] =
    "import sys, torch, torch.nn as nn\n"
    "out = sys.argv[1]\n"
    "torch.manual_seed(0)\n"
    "class MLP(nn.Module):\n"
    "    def __init__(s):\n"
    "        super().__init__(); s.a=nn.Linear(20,37); s.b=nn.Linear(37,29); "
    "s.c=nn.Linear(29,7)\n"
    "    def forward(s,x): return s.c(torch.tanh(s.b(torch.relu(s.a(x)))))\n"
    "class LeNet(nn.Module):\n"
    "    def __init__(s):\n"
    "        super().__init__()\n"
    "        s.c1=nn.Conv2d(1,6,5,padding=2); s.c2=nn.Conv2d(6,16,5)\n"
    "        s.f1=nn.Linear(400,120); s.f2=nn.Linear(120,84); "
    "s.f3=nn.Linear(84,10)\n"
    "    def forward(s,x):\n"
    "        x=torch.max_pool2d(torch.relu(s.c1(x)),2)\n"
    "        x=torch.max_pool2d(torch.relu(s.c2(x)),2)\n"
    "        x=torch.flatten(x,1)\n"
    "        return s.f3(torch.relu(s.f2(torch.relu(s.f1(x)))))\n"
    "class Block(nn.Module):\n"
    "    def __init__(s,c):\n"
    "        super().__init__()\n"
    "        s.c1=nn.Conv2d(c,c,3,padding=1,bias=False); s.b1=nn.BatchNorm2d(c)\n"
    "        s.c2=nn.Conv2d(c,c,3,padding=1,bias=False); s.b2=nn.BatchNorm2d(c)\n"
    "    def forward(s,x):\n"
    "        return torch.relu(x+s.b2(s.c2(torch.relu(s.b1(s.c1(x))))))\n"
    "class ResNet(nn.Module):\n"
    "    def __init__(s):\n"
    "        super().__init__(); s.stem=nn.Conv2d(3,12,3,padding=1); "
    "s.bn=nn.BatchNorm2d(12)\n"
    "        s.l1=Block(12); s.l2=Block(12); s.fc=nn.Linear(12,5)\n"
    "    def forward(s,x):\n"
    "        x=torch.relu(s.bn(s.stem(x))); x=s.l2(s.l1(x))\n"
    "        x=torch.nn.functional.adaptive_avg_pool2d(x,1)\n"
    "        return s.fc(torch.flatten(x,1))\n"
    "class Tx(nn.Module):\n"
    "    def __init__(s):\n"
    "        super().__init__(); s.emb=nn.Embedding(50,32)\n"
    "        layer=nn.TransformerEncoderLayer(32,4,dim_feedforward=48,"
    "dropout=0.0,batch_first=True)\n"
    "        s.enc=nn.TransformerEncoder(layer,2,enable_nested_tensor=False)\n"
    "        s.head=nn.Linear(32,6)\n"
    "    def forward(s,ids): return s.head(s.enc(s.emb(ids)))\n"
    "def bn_randomize(m):\n"
    "    for mod in m.modules():\n"
    "        if isinstance(mod, nn.BatchNorm2d):\n"
    "            mod.running_mean.uniform_(-0.5,0.5); "
    "mod.running_var.uniform_(0.5,1.5)\n"
    "            mod.weight.data.uniform_(0.5,1.5); "
    "mod.bias.data.uniform_(-0.5,0.5)\n"
    "cases=[('mlp',MLP(),torch.randn(2,20)),\n"
    "       ('lenet',LeNet(),torch.randn(2,1,28,28)),\n"
    "       ('resnet',ResNet(),torch.randn(2,3,16,16)),\n"
    "       ('transformer',Tx(),torch.randint(0,50,(2,9)))]\n"
    "for name,m,x in cases:\n"
    "    bn_randomize(m); m.eval()\n"
    /* PRESERVE keeps BatchNormalization (EVAL folds it into Conv); grad
     * stays enabled so TransformerEncoderLayer avoids its fused fast path,
     * which has no ONNX export. */
    "    torch.onnx.export(m,(x,),f'{out}/{name}.onnx',input_names=['x'],\n"
    "        output_names=['y'],dynamic_axes={'x':{0:'N'},'y':{0:'N'}},\n"
    "        opset_version=13,do_constant_folding=True,\n"
    "        training=torch.onnx.TrainingMode.PRESERVE)\n";

/* Exports the PyTorch models once, in the parent process (an unchecked
 * fixture), into a temporary directory. */
static void torch_export(void) {
  snprintf(torch_dir, sizeof torch_dir, "/tmp/ts_test_plan_XXXXXX");
  if (!mkdtemp(torch_dir)) {
    snprintf(torch_log, sizeof torch_log, "mkdtemp failed");
    return;
  }
  char path[512], cmd[1024];
  snprintf(path, sizeof path, "%s/export.py", torch_dir);
  FILE *f = fopen(path, "w");
  if (!f) return;
  fputs(torch_script, f);
  fclose(f);
  snprintf(cmd, sizeof cmd,
           "PYTHONWARNINGS=ignore /usr/bin/python3 %s %s > %s/log.txt 2>&1",
           path, torch_dir, torch_dir);
  torch_rc = system(cmd);
  snprintf(path, sizeof path, "%s/log.txt", torch_dir);
  f = fopen(path, "r");
  if (f) {
    size_t n = fread(torch_log, 1, sizeof torch_log - 1, f);
    torch_log[n] = '\0';
    fclose(f);
  }
}

static void torch_cleanup(void) {
  char cmd[512];
  if (torch_dir[0]) {
    snprintf(cmd, sizeof cmd, "rm -rf %s", torch_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", torch_dir);
  }
}

/* Loads an exported model; fails loudly with the exporter's or the
 * loader's message. */
static ts_model *torch_model(const char *name) {
  ck_assert_msg(torch_rc == 0, "torch.onnx.export failed (%d): %s", torch_rc,
                torch_log);
  char path[512];
  snprintf(path, sizeof path, "%s/%s.onnx", torch_dir, name);
  ts_model *m = NULL;
  ts_err err = {0};
  int rc = ts_model_load_file(path, &m, &err);
  ck_assert_msg(rc == 0, "%s.onnx does not load (%s): %s", name,
                ts_strerror(rc), err.msg);
  return m;
}

/* ---- tests: the invariant ----------------------------------------------- */

static ts_model *dag13(void) { return dag_model(13); }
/* Opset 9: Gemm's C is required (row shards get zeros) and Slice takes
 * attributes. */
static ts_model *dag9(void) { return dag_model(9); }

static const struct {
  const char *name;
  ts_model *(*make)(void);
} built_models[] = {
    {"mlp_odd", mlp_odd}, {"dag13", dag13}, {"dag9", dag9},
    {"conv", conv_model}};

START_TEST(test_built_models) {
  ts_model *m = built_models[_i].make();
  check_all_strategies(m, 0, built_models[_i].name);
  ts_model_free(m);
}
END_TEST

START_TEST(test_conv_structure) {
  ts_model *m = conv_model();
  ts_plan *p = build(m, TS_STRATEGY_TENSOR, 1, 3, 1);
  /* [Conv Relu Conv] split, [Conv 1ch] split by input channels, [grouped
   * Conv] whole. */
  ck_assert_int_eq(p->n_stages, 3);
  ck_assert_int_eq(p->stages[0].n_shards, 3);
  ck_assert_int_eq(p->stages[0].fusions[0].kind, TS_FUSE_SUM);
  ck_assert_int_eq(p->stages[1].n_shards, 3);
  ck_assert_int_eq(p->stages[1].fusions[0].kind, TS_FUSE_SUM);
  ck_assert_int_eq(p->stages[2].n_shards, 1);
  ck_assert(p->stages[0].batch_splittable);
  ts_plan_free(p);
  ts_model_free(m);
}
END_TEST

static const char *const torch_models[] = {"mlp", "lenet", "resnet",
                                           "transformer"};

START_TEST(test_torch_models) {
  ts_model *m = torch_model(torch_models[_i]);
  check_all_strategies(m, 50, torch_models[_i]);
  ts_model_free(m);
}
END_TEST

/* ---- tests: plan structure ---------------------------------------------- */

/* Tensor plans of the MLP: the Megatron pair (Gemm col -> Relu -> Gemm row)
 * is one stage with one SUM fusion; stage I/O and labels are filled. */
START_TEST(test_tensor_structure) {
  ts_model *m = mlp_odd();
  ts_plan *p = build(m, TS_STRATEGY_TENSOR, 1, 4, 1);
  ck_assert_int_eq(p->n_stages, 3); /* [G0 Relu G1] [Tanh] [G2] */
  const ts_stage *s0 = &p->stages[0];
  ck_assert_int_eq(s0->n_shards, 4);
  ck_assert_int_eq(s0->n_fusions, 1);
  ck_assert_int_eq(s0->fusions[0].kind, TS_FUSE_SUM);
  ck_assert_str_eq(s0->fusions[0].name, "h1");
  ck_assert_str_eq(s0->fusions[0].parts[3], "h1.part3");
  ck_assert_int_eq(s0->n_inputs, 1);
  ck_assert_str_eq(s0->inputs[0], "x");
  ck_assert_str_eq(s0->shards[2].label, "m/s0/k2");
  ck_assert_int_eq(p->stages[1].n_shards, 1);
  ck_assert_int_eq(p->stages[1].n_fusions, 0);
  const ts_stage *s2 = &p->stages[2];
  ck_assert_int_eq(s2->n_shards, 4);
  ck_assert_int_eq(s2->fusions[0].kind, TS_FUSE_CONCAT);
  ck_assert_int_eq(s2->fusions[0].axis, -1);
  ck_assert_str_eq(s2->outputs[0], "y");
  ts_plan_free(p);
  ts_model_free(m);
}
END_TEST

/* A 4-way tensor split of a large MLP: each shard holds about a quarter of
 * the weights, and the shards together hold about all of them. */
START_TEST(test_weight_quarter) {
  ts_model *m = mlp_big();
  ts_plan *p = build(m, TS_STRATEGY_TENSOR, 1, 4, 1);
  double total = (double)m->weight_bytes;
  size_t sum = 0;
  for (int s = 0; s < p->n_stages; s++)
    for (int k = 0; k < p->stages[s].n_shards; k++) {
      sum += p->stages[s].shards[k].weight_bytes;
      if (p->stages[s].n_shards == 4) {
        ck_assert_msg(p->stages[s].shards[k].weight_bytes < 0.27 * total,
                      "shard %s holds %zu of %g bytes",
                      p->stages[s].shards[k].label,
                      p->stages[s].shards[k].weight_bytes, total);
      }
    }
  ck_assert_msg(fabs((double)sum - total) <= 0.01 * total,
                "shards hold %zu bytes, model %g", sum, total);
  ck_assert_uint_eq(p->weight_bytes, sum);
  /* Stage 0 is the pair W0|W1 split 4 ways: each shard ~1/4 of it. */
  size_t stage0 = 0;
  for (int k = 0; k < 4; k++) stage0 += p->stages[0].shards[k].weight_bytes;
  for (int k = 0; k < 4; k++) {
    double share = (double)p->stages[0].shards[k].weight_bytes / stage0;
    ck_assert_msg(share > 0.24 && share < 0.26, "share %g", share);
  }
  check_plan(m, p, 2, 0, "mlp256/tensor/4");
  ts_plan_free(p);
  ts_model_free(m);
}
END_TEST

/* Same model, same options -> same shard ids; an id is the SHA-256 of the
 * shard's bytes. */
START_TEST(test_ids_deterministic) {
  ts_model *m = dag_model(13);
  ts_model *m2 = dag_model(13);
  ts_plan *a = build(m, TS_STRATEGY_HYBRID, 2, 3, 1);
  ts_plan *b = build(m, TS_STRATEGY_HYBRID, 2, 3, 1);
  ck_assert_int_eq(a->n_stages, b->n_stages);
  for (int s = 0; s < a->n_stages; s++) {
    ck_assert_int_eq(a->stages[s].n_shards, b->stages[s].n_shards);
    for (int k = 0; k < a->stages[s].n_shards; k++) {
      const ts_shard *x = &a->stages[s].shards[k], *y = &b->stages[s].shards[k];
      ck_assert_str_eq(x->id, y->id);
      ck_assert_uint_eq(x->len, y->len);
      ck_assert(memcmp(x->bytes, y->bytes, x->len) == 0);
      char hex[TS_SHA256_HEX_LEN + 1];
      ts_sha256_hex(x->bytes, x->len, hex);
      ck_assert_str_eq(hex, x->id);
    }
  }
  /* A different model (other random weights) gives other ids. */
  ts_plan *c = build(m2, TS_STRATEGY_HYBRID, 2, 3, 1);
  ck_assert_str_ne(c->stages[0].shards[0].id, a->stages[0].shards[0].id);
  ts_plan_free(a);
  ts_plan_free(b);
  ts_plan_free(c);
  ts_model_free(m);
  ts_model_free(m2);
}
END_TEST

/* Pipeline stages of the DAG: every tensor crossing a cut is an output of
 * the stage that makes it and an input of every later stage that reads it
 * (several may cross one cut). */
START_TEST(test_pipeline_cuts) {
  ts_model *m = dag_model(13);
  for (int n = 2; n <= 8; n++) {
    ts_plan *p = build(m, TS_STRATEGY_PIPELINE, n, 1, 1);
    ck_assert_int_eq(p->n_stages, n);
    for (int s = 0; s < n; s++) {
      ck_assert_int_eq(p->stages[s].n_shards, 1);
      ck_assert_int_eq(p->stages[s].n_fusions, 0);
      for (int i = 0; i < p->stages[s].n_inputs; i++) {
        const char *in = p->stages[s].inputs[i];
        bool found = strcmp(in, "x") == 0;
        for (int e = 0; e < s && !found; e++)
          for (int o = 0; o < p->stages[e].n_outputs; o++)
            found |= strcmp(p->stages[e].outputs[o], in) == 0;
        ck_assert_msg(found, "stage %d reads '%s' that no earlier stage "
                      "exports", s, in);
      }
    }
    check_plan(m, p, 4, 0, "dag/pipeline");
    ts_plan_free(p);
  }
  ts_model_free(m);
}
END_TEST

/* Eight equal layers in four stages: two layers' weights per stage. */
START_TEST(test_pipeline_balance) {
  static const int sizes[] = {32, 32, 32, 32, 32, 32, 32, 32, 32};
  static const char *acts[] = {"Relu", "Relu", "Relu", "Relu",
                               "Relu", "Relu", "Relu", NULL};
  ts_model *m = mlp_model(8, sizes, acts, -1, 13);
  ts_plan *p = build(m, TS_STRATEGY_PIPELINE, 4, 1, 1);
  ck_assert_int_eq(p->n_stages, 4);
  for (int s = 0; s < 4; s++)
    ck_assert_uint_eq(p->stages[s].shards[0].weight_bytes,
                      2 * (32 * 32 + 32) * sizeof(float));
  ts_plan_free(p);
  ts_model_free(m);
}
END_TEST

/* A data plan is one whole-model shard; with a symbolic batch and row-wise
 * ops it is batch-splittable, and running the shard on two halves of the
 * batch and concatenating (axis 0) gives the whole answer. */
START_TEST(test_data_batch_split) {
  ts_model *m = mlp_odd();
  ts_plan *p = build(m, TS_STRATEGY_DATA, 1, 1, 3);
  ck_assert_int_eq(p->replicas, 3);
  ck_assert(p->stages[0].batch_splittable);
  tmap in = {0}, whole = {0}, h0 = {0}, h1 = {0};
  random_inputs(m, 5, 0, &in);
  run_model(m, &in, NULL, 0, &whole, "whole");
  const ts_tensor *x = tmap_get(&in, "x");
  ts_tensor a, b;
  int64_t da[2] = {2, 13}, db[2] = {3, 13};
  ts_err err;
  ck_assert_int_eq(ts_tensor_view(&a, TS_DTYPE_FLOAT, da, 2, x->data, &err), 0);
  ck_assert_int_eq(ts_tensor_view(&b, TS_DTYPE_FLOAT, db, 2,
                                  (float *)x->data + 26, &err),
                   0);
  tmap_put(&h0, "x", &a);
  tmap_put(&h1, "x", &b);
  run_plan(p, &h0);
  run_plan(p, &h1);
  const ts_tensor *parts[2] = {tmap_get(&h0, "y"), tmap_get(&h1, "y")};
  ts_tensor y;
  ck_assert_int_eq(ts_fuse_concat(parts, 2, 0, &y, &err), 0);
  expect_close(tmap_get(&whole, "y"), &y, 1e-5, "batch halves");
  ts_tensor_free(&y);
  tmap_free(&in), tmap_free(&whole), tmap_free(&h0), tmap_free(&h1);
  ts_plan_free(p);

  /* A fixed batch is not splittable. */
  static const int sizes[] = {13, 17, 11, 5};
  static const char *acts[] = {"Relu", "Tanh", NULL};
  ts_model *fixed = mlp_model(3, sizes, acts, 4, 13);
  p = build(fixed, TS_STRATEGY_DATA, 1, 1, 1);
  ck_assert(!p->stages[0].batch_splittable);
  ts_plan_free(p);
  ts_model_free(fixed);
  ts_model_free(m);
}
END_TEST

/* Row-mixing graphs are not batch-splittable: the transformer's attention
 * reshapes by Shape-derived sizes; the CNNs are. */
START_TEST(test_torch_batch_splittable) {
  static const bool expect[] = {true, true, true, false};
  for (int i = 0; i < 4; i++) {
    ts_model *m = torch_model(torch_models[i]);
    ts_plan *p = build(m, TS_STRATEGY_DATA, 1, 1, 1);
    ck_assert_msg(p->stages[0].batch_splittable == expect[i],
                  "%s: batch_splittable = %d", torch_models[i],
                  p->stages[0].batch_splittable);
    ts_plan_free(p);
    ts_model_free(m);
  }
}
END_TEST

/* ---- tests: options and auto ---------------------------------------------- */

START_TEST(test_bad_options) {
  ts_model *m = mlp_odd(); /* 5 nodes */
  struct {
    ts_plan_opts o;
  } cases[] = {
      {{.strategy = TS_STRATEGY_DATA, .replicas = 0}},
      {{.strategy = TS_STRATEGY_DATA, .replicas = -2}},
      {{.strategy = TS_STRATEGY_PIPELINE, .stages = 0, .replicas = 1}},
      {{.strategy = TS_STRATEGY_PIPELINE, .stages = 6, .replicas = 1}},
      {{.strategy = TS_STRATEGY_TENSOR, .shards = 0, .replicas = 1}},
      {{.strategy = TS_STRATEGY_HYBRID, .stages = 2, .shards = -1,
        .replicas = 1}},
      {{.strategy = TS_STRATEGY_HYBRID, .stages = 9, .shards = 2,
        .replicas = 1}},
      {{.strategy = (ts_strategy)42, .replicas = 1}},
      {{.strategy = TS_STRATEGY_AUTO, .replicas = 1, .n_workers = -1}},
      {{.strategy = TS_STRATEGY_BLOCK, .grid_rows = 0, .grid_cols = 2,
        .replicas = 1}},
      {{.strategy = TS_STRATEGY_BLOCK, .grid_rows = -1, .grid_cols = -1,
        .replicas = 1}},
      {{.strategy = TS_STRATEGY_BLOCK, .shards = 0, .replicas = 1}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ts_plan *p = (ts_plan *)1;
    ts_err err = {0};
    int rc = ts_plan_build(m, &cases[i].o, &p, &err);
    ck_assert_msg(rc == TS_EINVAL, "case %zu: rc %d", i, rc);
    ck_assert_ptr_null(p);
    ck_assert_msg(err.msg[0], "case %zu has no message", i);
  }
  ts_plan *p = NULL;
  ts_err err = {0};
  ck_assert_int_eq(ts_plan_build(m, NULL, &p, &err), TS_EINVAL);
  /* 5 stages for 5 nodes is fine. */
  p = build(m, TS_STRATEGY_PIPELINE, 5, 1, 1);
  ck_assert_int_eq(p->n_stages, 5);
  ts_plan_free(p);
  ts_model_free(m);
}
END_TEST

/* A graph output that no node computes (the input passed through) cannot
 * be produced by any stage: refused, naming it. */
START_TEST(test_passthrough_output) {
  mb *b = calloc(1, sizeof *b);
  int64_t x[2] = {-1, 4};
  mb_input(b, "x", 2, x);
  mb_node(b, "Relu", "x", "y");
  mb_output(b, "y", 2, x);
  mb_output(b, "x", 2, x);
  ts_model *m = mb_finish(b, 13);
  ts_plan_opts o = {.strategy = TS_STRATEGY_DATA, .replicas = 1};
  ts_plan *p = (ts_plan *)1;
  ts_err err = {0};
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), TS_EUNSUPPORTED);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err.msg, "'x'"), "%s", err.msg);
  ts_model_free(m);
}
END_TEST

START_TEST(test_auto) {
  ts_model *m = mlp_big();
  ts_plan_opts o = {.strategy = TS_STRATEGY_AUTO, .replicas = 1,
                    .n_workers = 4, .model_name = "big"};
  ts_plan *p = NULL;
  ts_err err = {0};

  /* Fits one worker: data, replicated on every worker. */
  o.worker_memory_limit = m->weight_bytes + 1;
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), 0);
  ck_assert_int_eq(p->strategy, TS_STRATEGY_DATA);
  ck_assert_int_eq(p->replicas, 4);
  ts_plan_free(p);

  /* A third of the model per worker: split, every shard fits. */
  o.worker_memory_limit = m->weight_bytes / 3;
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), 0);
  ck_assert_int_ne(p->strategy, TS_STRATEGY_DATA);
  int max_shards = 0;
  for (int s = 0; s < p->n_stages; s++)
    for (int k = 0; k < p->stages[s].n_shards; k++) {
      ck_assert_uint_le(p->stages[s].shards[k].weight_bytes,
                        o.worker_memory_limit);
      if (p->stages[s].n_shards > max_shards)
        max_shards = p->stages[s].n_shards;
    }
  ck_assert_int_eq(max_shards, 3); /* the fewest ways that fit */
  check_plan(m, p, 2, 0, "auto");
  ts_plan_free(p);

  /* Impossible. */
  o.worker_memory_limit = 1;
  p = (ts_plan *)1;
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), TS_EEXHAUSTED);
  ck_assert_ptr_null(p);
  ts_model_free(m);
}
END_TEST

/* x[N,256] -> Add(c0) -> Mul(c1) -> Add(c2) -> Sigmoid -> y: weights but
 * no op that splits them. */
static ts_model *chain_model(void) {
  static const wspec weights[] = {
      {"c0", 1, {256}, 1.0}, {"c1", 1, {256}, 1.0}, {"c2", 1, {256}, 1.0}};
  static const nspec nodes[] = {{"Add", "x,c0", "a"},
                                {"Mul", "a,c1", "m"},
                                {"Add", "m,c2", "r"},
                                {"Sigmoid", "r", "y"}};
  mb *b = calloc(1, sizeof *b);
  int64_t x[2] = {-1, 256};
  mb_input(b, "x", 2, x);
  mb_weights(b, weights, COUNT(weights));
  mb_nodes(b, nodes, COUNT(nodes));
  mb_output(b, "y", 2, x);
  return mb_finish(b, 13);
}

/* auto on a model where nothing splits falls back to pipeline stages. */
START_TEST(test_auto_pipeline) {
  ts_model *m = chain_model();
  ts_plan_opts o = {.strategy = TS_STRATEGY_AUTO, .replicas = 2,
                    .model_name = "p"};
  o.worker_memory_limit = 2 * 256 * sizeof(float);
  ts_plan *p = NULL;
  ts_err err = {0};
  int rc = ts_plan_build(m, &o, &p, &err);
  ck_assert_msg(rc == 0, "auto: %s", err.msg);
  ck_assert_int_eq(p->strategy, TS_STRATEGY_PIPELINE);
  ck_assert_int_eq(p->n_stages, 2);
  ck_assert_int_eq(p->replicas, 2);
  for (int s = 0; s < p->n_stages; s++)
    ck_assert_uint_le(p->stages[s].shards[0].weight_bytes,
                      o.worker_memory_limit);
  check_plan(m, p, 2, 0, "auto-pipeline");
  ts_plan_free(p);
  /* One constant per stage fits each worker, but two workers cannot hold
   * three stages' constants. */
  o.worker_memory_limit = 256 * sizeof(float);
  o.n_workers = 2;
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), TS_EEXHAUSTED);
  ck_assert_msg(strstr(err.msg, "2 workers"), "%s", err.msg);
  o.n_workers = 3;
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), 0);
  ck_assert_int_eq(p->n_stages, 3);
  ts_plan_free(p);
  /* A single constant above the limit. */
  o.worker_memory_limit = 256 * sizeof(float) - 1;
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), TS_EEXHAUSTED);
  ts_model_free(m);
}
END_TEST

/* ---- tests: block (2-D) splits ------------------------------------------ */

/* x[N, K] -> Gemm(x, W, b) -> y[N, M] (transB: W is [M, K]), or, with
 * `seq` > 0, x[N, seq, K] -> MatMul(x, W[K, M]) -> Add(b) -> y[N, seq, M]. */
static ts_model *linear_model(int64_t k, int64_t m, bool trans_b, int64_t seq,
                              int64_t opset) {
  mb *b = calloc(1, sizeof *b);
  int64_t x2[2] = {-1, k}, y2[2] = {-1, m};
  int64_t x3[3] = {-1, seq, k}, y3[3] = {-1, seq, m};
  int64_t wd[2] = {k, m}, bd[1] = {m};
  if (trans_b) wd[0] = m, wd[1] = k;
  mb_weight(b, "W", 2, wd, 1.0 / sqrt((double)k));
  mb_weight(b, "b", 1, bd, 0.5);
  if (seq > 0) {
    mb_input(b, "x", 3, x3);
    mb_node(b, "MatMul", "x,W", "h");
    mb_node(b, "Add", "h,b", "y");
    mb_output(b, "y", 3, y3);
  } else {
    mb_input(b, "x", 2, x2);
    mb_attr_int(b, mb_node(b, "Gemm", "x,W,b", "y"), "transB", trans_b);
    mb_output(b, "y", 2, y2);
  }
  return mb_finish(b, opset);
}

static const float *const_data(const ts_model *m, const char *name) {
  int v = ts_graph_find_value(&m->graph, name);
  ck_assert_msg(v >= 0 && m->graph.values[v].constant, "no constant %s", name);
  return m->graph.values[v].constant->data;
}

/* The float64 reference y = x.W + b from the model's constants, compared
 * with the plan's float32 y: max |y - ref| <= 1e-5 * max |ref|. */
static void expect_linear(const ts_model *m, const tmap *env, int64_t k,
                          int64_t cols, bool trans_b, const char *what) {
  const ts_tensor *x = tmap_get(env, "x"), *y = tmap_get(env, "y");
  ck_assert_msg(y && y->dtype == TS_DTYPE_FLOAT, "%s: no float y", what);
  const float *w = const_data(m, "W"), *bias = const_data(m, "b");
  int64_t rows = ts_tensor_numel(x) / k;
  ck_assert_int_eq(ts_tensor_numel(y), rows * cols);
  ck_assert_int_eq(y->dims[y->rank - 1], cols);
  double scale = 0, diff = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < cols; o++) {
      double acc = bias[o];
      for (int64_t q = 0; q < k; q++)
        acc += (double)((const float *)x->data)[r * k + q] *
               (double)w[trans_b ? o * k + q : q * cols + o];
      scale = fmax(scale, fabs(acc));
      diff = fmax(diff, fabs(acc - ((const float *)y->data)[r * cols + o]));
    }
  ck_assert_msg(diff <= 1e-5 * scale, "%s: max error %g vs scale %g", what,
                diff, scale);
}

static ts_plan *build_grid(const ts_model *m, int rows, int cols) {
  ts_plan_opts o = {.strategy = TS_STRATEGY_BLOCK, .grid_rows = rows,
                    .grid_cols = cols, .replicas = 1, .model_name = "m"};
  return build_opts(m, &o);
}

/* The block stage's structure: R*C shards, shard i*C+j holding exactly the
 * weight block [K_i, M_j] and the bias of M_j in row 0 (rows below: a zero
 * scalar C before opset 11), plus, when R > 1, its Slice's int64 starts,
 * ends and axes from opset 10 (attributes before); fusions "y.col<j>"
 * = sum over i of "y.part<i*C+j>" then y = concat of the columns (one
 * fusion when R or C is 1). */
static void expect_block_stage(const ts_stage *st, int r, int c, int64_t k,
                               int64_t cols, int64_t opset) {
  ck_assert_int_eq(st->n_shards, r * c);
  for (int i = 0; i < r; i++)
    for (int j = 0; j < c; j++) {
      int64_t ki = (k * (i + 1)) / r - (k * i) / r;
      int64_t mj = (cols * (j + 1)) / c - (cols * j) / c;
      size_t want = (size_t)(ki * mj + (i == 0 ? mj : opset < 11)) *
                        sizeof(float) +
                    (r > 1 && opset >= 10 ? 3 * sizeof(int64_t) : 0);
      ck_assert_msg(st->shards[i * c + j].weight_bytes == want,
                    "shard (%d,%d) of %dx%d holds %zu bytes, want %zu", i, j,
                    r, c, st->shards[i * c + j].weight_bytes, want);
    }
  const ts_fusion *last = &st->fusions[st->n_fusions - 1];
  ck_assert_str_eq(last->name, "y");
  if (r == 1 || c == 1) {
    ck_assert_int_eq(st->n_fusions, 1);
    ck_assert_int_eq(last->kind, c > 1 ? TS_FUSE_CONCAT : TS_FUSE_SUM);
    ck_assert_int_eq(last->n_parts, r * c);
    return;
  }
  ck_assert_int_eq(st->n_fusions, c + 1);
  for (int j = 0; j < c; j++) {
    const ts_fusion *f = &st->fusions[j];
    char name[32];
    snprintf(name, sizeof name, "y.col%d", j);
    ck_assert_str_eq(f->name, name);
    ck_assert_int_eq(f->kind, TS_FUSE_SUM);
    ck_assert_int_eq(f->n_parts, r);
    for (int i = 0; i < r; i++) {
      snprintf(name, sizeof name, "y.part%d", i * c + j);
      ck_assert_str_eq(f->parts[i], name);
    }
    ck_assert_str_eq(last->parts[j], f->name);
  }
  ck_assert_int_eq(last->kind, TS_FUSE_CONCAT);
  ck_assert_int_eq(last->axis, -1);
  ck_assert_int_eq(last->n_parts, c);
}

static const int grids[][2] = {{1, 2}, {2, 1}, {2, 2}, {3, 2}, {2, 3}, {3, 3}};

/* Gemm (both weight layouts, opsets 13 and 9) and a batched 3-D MatMul
 * with uneven dims (K = 13, M = 7) on every grid, against float64. */
START_TEST(test_block_grids) {
  static const struct {
    bool trans_b;
    int64_t seq, opset;
  } models[] = {{false, 0, 13}, {true, 0, 13}, {true, 0, 9}, {false, 4, 13}};
  const int64_t k = 13, cols = 7;
  for (int t = 0; t < COUNT(models); t++) {
    ts_model *m = linear_model(k, cols, models[t].trans_b, models[t].seq,
                               models[t].opset);
    for (int g = 0; g < COUNT(grids); g++) {
      int r = grids[g][0], c = grids[g][1];
      char what[96];
      snprintf(what, sizeof what, "model %d grid %dx%d", t, r, c);
      ts_plan *p = build_grid(m, r, c);
      ck_assert_int_eq(p->strategy, TS_STRATEGY_BLOCK);
      /* The MatMul's Add runs whole after the block stage. */
      ck_assert_int_eq(p->n_stages, models[t].seq ? 2 : 1);
      if (!models[t].seq)
        expect_block_stage(&p->stages[0], r, c, k, cols, models[t].opset);
      ck_assert_int_eq(p->stages[0].n_shards, r * c);
      for (int64_t batch = 1; batch <= 3; batch += 2) {
        tmap in = {0};
        random_inputs(m, batch, 0, &in);
        run_plan(p, &in);
        expect_linear(m, &in, k, cols, models[t].trans_b, what);
        tmap_free(&in);
      }
      ts_plan_free(p);
    }
    ts_model_free(m);
  }
}
END_TEST

/* A grid larger than the weight is clamped to its dims; a weight's share
 * of a large layer is 1/(R*C); ops that cannot split run whole. */
START_TEST(test_block_clamp_and_share) {
  ts_model *small = linear_model(3, 2, false, 0, 13);
  ts_plan *p = build_grid(small, 8, 8);
  expect_block_stage(&p->stages[0], 3, 2, 3, 2, 13);
  ts_plan_free(p);
  ts_model_free(small);

  ts_model *m = mlp_big(); /* Gemm Relu Gemm Relu Gemm: 64-256-256-64 */
  p = build_grid(m, 2, 2);
  ck_assert_int_eq(p->n_stages, 5);
  for (int s = 0; s < 5; s++)
    ck_assert_int_eq(p->stages[s].n_shards, s % 2 == 0 ? 4 : 1);
  size_t w1 = 256 * 256 * sizeof(float); /* bias and Slice: < 0.2% */
  for (int k = 0; k < 4; k++) {
    double share = (double)p->stages[2].shards[k].weight_bytes / (double)w1;
    ck_assert_msg(share > 0.249 && share < 0.253, "share %g", share);
  }
  check_plan(m, p, 3, 0, "mlp256/block/2x2");
  ts_plan_free(p);
  ts_model_free(m);

  int r, c;
  static const int want[][3] = {{1, 1, 1}, {2, 1, 2}, {3, 1, 3}, {4, 2, 2},
                                {6, 2, 3}, {7, 1, 7}, {12, 3, 4}, {64, 8, 8},
                                {0, 0, 0}, {-3, 0, 0}};
  for (int i = 0; i < COUNT(want); i++) {
    ts_plan_grid(want[i][0], &r, &c);
    ck_assert_msg(r == want[i][1] && c == want[i][2], "%d -> %dx%d",
                  want[i][0], r, c);
  }
}
END_TEST

/* auto falls back to a block grid when no 1-D split fits: a 64 x 2 weight
 * splits by columns only 2 ways (260 bytes a shard, over the 170-byte
 * limit); 2x1 and 3x1 grids do not fit either, 2x2 (132 bytes) does. */
START_TEST(test_auto_block) {
  ts_model *m = linear_model(64, 2, false, 0, 13);
  ts_plan_opts o = {.strategy = TS_STRATEGY_AUTO, .replicas = 1,
                    .n_workers = 4, .worker_memory_limit = 170,
                    .model_name = "narrow"};
  ts_plan *p = build_opts(m, &o);
  ck_assert_int_eq(p->strategy, TS_STRATEGY_BLOCK);
  ck_assert_int_eq(p->n_stages, 1);
  expect_block_stage(&p->stages[0], 2, 2, 64, 2, 13);
  tmap in = {0};
  random_inputs(m, 3, 0, &in);
  run_plan(p, &in);
  expect_linear(m, &in, 64, 2, false, "auto block");
  tmap_free(&in);
  ts_plan_free(p);
  /* Three workers cannot hold a 2x2 grid; 3x1 does not fit: exhausted. */
  ts_err err = {0};
  o.n_workers = 3;
  ck_assert_int_eq(ts_plan_build(m, &o, &p, &err), TS_EEXHAUSTED);
  ts_model_free(m);
}
END_TEST

/* Fusions run in list order; a part naming the fusion itself or a later
 * one is a broken plan, a part nobody produced an I/O error. */
START_TEST(test_fuse_stage_order) {
  char *sum_parts[] = {"p0", "p1"}, *bad_parts[] = {"p0", "late"};
  char *self_parts[] = {"p0", "self"}, *missing[] = {"p0", "nobody"};
  ts_fusion ok[2] = {{"s", TS_FUSE_SUM, 0, sum_parts, 2},
                     {"c", TS_FUSE_CONCAT, 0, (char *[]){"s", "p0"}, 2}};
  ts_fusion later[2] = {{"early", TS_FUSE_SUM, 0, bad_parts, 2},
                        {"late", TS_FUSE_SUM, 0, sum_parts, 2}};
  ts_fusion self[1] = {{"self", TS_FUSE_SUM, 0, self_parts, 2}};
  ts_fusion absent[1] = {{"a", TS_FUSE_SUM, 0, missing, 2}};
  tmap env = {0};
  int64_t d[1] = {2};
  ts_tensor t;
  ts_err err = {0};
  ck_assert_int_eq(ts_tensor_alloc(&t, TS_DTYPE_FLOAT, d, 1, &err), 0);
  ((float *)t.data)[0] = 1, ((float *)t.data)[1] = 2;
  tmap_put(&env, "p0", &t);
  ((float *)t.data)[0] = 10, ((float *)t.data)[1] = 20;
  tmap_put(&env, "p1", &t);
  ts_tensor_free(&t);
  ts_fuse_env fenv = {tmap_lookup, tmap_store, &env};
  ts_stage st = {.fusions = ok, .n_fusions = 2};
  ck_assert_int_eq(ts_fuse_stage(&st, &fenv, &err), 0);
  const ts_tensor *c = tmap_get(&env, "c");
  ck_assert_int_eq(c->dims[0], 4);
  static const float want[4] = {11, 22, 1, 2};
  for (int i = 0; i < 4; i++)
    ck_assert_float_eq(((const float *)c->data)[i], want[i]);
  st.fusions = later;
  ck_assert_int_eq(ts_fuse_stage(&st, &fenv, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "'late'"), "%s", err.msg);
  st.fusions = self;
  st.n_fusions = 1;
  ck_assert_int_eq(ts_fuse_stage(&st, &fenv, &err), TS_EINVAL);
  st.fusions = absent;
  ck_assert_int_eq(ts_fuse_stage(&st, &fenv, &err), TS_EIO);
  ck_assert_msg(strstr(err.msg, "'nobody'"), "%s", err.msg);
  tmap_free(&env);
}
END_TEST

/* The one op table (op_list.h): the planner has one rule per op the engine
 * runs, each naming an op with a kernel, with the columns of its line. */
START_TEST(test_op_rules) {
  ts_err err = {0};
  int n = 0;
  const op_rule *rules = plan_rules(&n);
  ck_assert_int_eq(n, ts_ops_selfcheck(&err));
  const op_rule *gemm = NULL, *relu = NULL, *pool = NULL, *shape = NULL;
  for (int i = 0; i < n; i++) {
    const op_rule *r = &rules[i];
    ck_assert_msg(ts_op_find(r->domain, r->op_type), "%s has no kernel",
                  r->op_type);
    for (int j = 0; j < i; j++)
      ck_assert_msg(strcmp(rules[j].op_type, r->op_type) != 0 ||
                        strcmp(rules[j].domain, r->domain) != 0,
                    "two rules for %s", r->op_type);
    if (!r->domain[0] && strcmp(r->op_type, "Gemm") == 0) gemm = r;
    if (!r->domain[0] && strcmp(r->op_type, "Relu") == 0) relu = r;
    if (!r->domain[0] && strcmp(r->op_type, "MaxPool") == 0) pool = r;
    if (!r->domain[0] && strcmp(r->op_type, "Shape") == 0) shape = r;
  }
  ck_assert(gemm && gemm->split == TS_OP_SPLIT_NONE &&
            gemm->row == TS_OP_ROW_GEMM &&
            gemm->weights == TS_OP_WEIGHTS_GEMM);
  ck_assert(relu && relu->split == TS_OP_SPLIT_ELEM &&
            relu->row == TS_OP_ROW_BCAST &&
            relu->weights == TS_OP_WEIGHTS_NONE);
  ck_assert(pool && pool->split == TS_OP_SPLIT_CHANNEL &&
            pool->row == TS_OP_ROW_ANY);
  ck_assert(shape && shape->split == TS_OP_SPLIT_NONE &&
            shape->row == TS_OP_ROW_NONE &&
            shape->weights == TS_OP_WEIGHTS_NONE);
}
END_TEST

START_TEST(test_names) {
  ck_assert_int_eq(ts_strategy_parse("hybrid"), TS_STRATEGY_HYBRID);
  ck_assert_int_eq(ts_strategy_parse("data"), TS_STRATEGY_DATA);
  ck_assert_int_eq(ts_strategy_parse("auto"), TS_STRATEGY_AUTO);
  ck_assert_int_eq(ts_strategy_parse("block"), TS_STRATEGY_BLOCK);
  ck_assert_int_eq(ts_strategy_parse("Data"), -1);
  ck_assert_int_eq(ts_strategy_parse(""), -1);
  ck_assert_int_eq(ts_strategy_parse(NULL), -1);
  ck_assert_str_eq(ts_strategy_name(TS_STRATEGY_PIPELINE), "pipeline");
  ck_assert_str_eq(ts_strategy_name((ts_strategy)99), "unknown");
  ck_assert_int_eq(ts_fuse_parse("weighted_mean"), TS_FUSE_WEIGHTED_MEAN);
  ck_assert_int_eq(ts_fuse_parse("vote"), TS_FUSE_VOTE);
  ck_assert_int_eq(ts_fuse_parse("avg"), -1);
  ck_assert_str_eq(ts_fuse_name(TS_FUSE_CONCAT), "concat");
  ck_assert_str_eq(ts_fuse_name((ts_fuse_kind)-1), "unknown");
}
END_TEST

static Suite *plan_suite(void) {
  Suite *s = suite_create("plan");
  TCase *tc = tcase_create("plan");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, test_names);
  tcase_add_test(tc, test_op_rules);
  tcase_add_loop_test(tc, test_built_models, 0, COUNT(built_models));
  tcase_add_test(tc, test_conv_structure);
  tcase_add_test(tc, test_tensor_structure);
  tcase_add_test(tc, test_weight_quarter);
  tcase_add_test(tc, test_ids_deterministic);
  tcase_add_test(tc, test_pipeline_cuts);
  tcase_add_test(tc, test_pipeline_balance);
  tcase_add_test(tc, test_data_batch_split);
  tcase_add_test(tc, test_bad_options);
  tcase_add_test(tc, test_passthrough_output);
  tcase_add_test(tc, test_auto);
  tcase_add_test(tc, test_auto_pipeline);
  tcase_add_test(tc, test_block_grids);
  tcase_add_test(tc, test_block_clamp_and_share);
  tcase_add_test(tc, test_fuse_stage_order);
  tcase_add_test(tc, test_auto_block);
  suite_add_tcase(s, tc);
  TCase *tt = tcase_create("torch");
  tcase_set_timeout(tt, 280);
  tcase_add_unchecked_fixture(tt, torch_export, torch_cleanup);
  tcase_add_loop_test(tt, test_torch_models, 0, 4);
  tcase_add_test(tt, test_torch_batch_splittable);
  suite_add_tcase(s, tt);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(plan_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
