/*
 * plan_check.h - the harness the planner's suites (test_plan.c,
 * test_plan_strategies.c) share: a name -> tensor map, running a model and
 * a plan (shards loaded from their own bytes, fusions by fuse.c), the
 * invariant check, and models built with protobuf-c. Header-only (static
 * inline), like kernel_check.h; every helper fails the running test on
 * error.
 */
#ifndef TS_PLAN_CHECK_H
#define TS_PLAN_CHECK_H

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "fuse.h"
#include "graph.h"
#include "kernel_check.h"
#include "onnx.pb-c.h"
#include "plan.h"
#include "tensor.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- a name -> tensor map (owned copies) -------------------------------- */

typedef struct tmap {
  char **names;
  ts_tensor *t;
  int n, cap;
} tmap;

static inline void tmap_put(tmap *m, const char *name, const ts_tensor *src) {
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

static inline const ts_tensor *tmap_get(const tmap *m, const char *name) {
  for (int i = m->n - 1; i >= 0; i--)
    if (strcmp(m->names[i], name) == 0) return &m->t[i];
  return NULL;
}

static inline void tmap_free(tmap *m) {
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
static inline double rnd(void) { /* xorshift64, uniform in [-1, 1) */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

/* Fills a map with one random tensor per graph input of m, with every
 * symbolic dim set to `batch`. Integer inputs get ids in [0, int_range). */
static inline void random_inputs(const ts_model *m, int64_t batch,
                                 int int_range, tmap *out) {
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
static inline void run_model(const ts_model *m, const tmap *in,
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
static inline const ts_tensor *tmap_lookup(void *user, const char *name) {
  return tmap_get(user, name);
}

static inline int tmap_store(void *user, const char *name, ts_tensor *t,
                             ts_err *err) {
  (void)err;
  tmap_put(user, name, t);
  ts_tensor_free(t);
  return 0;
}

/* Runs the plan stage by stage: each shard loaded from its bytes, run on
 * its inputs from `env`, its outputs added to `env`, fusions applied in
 * order (nested ones reading earlier fusions' outputs). */
static inline void run_plan(const ts_plan *p, tmap *env) {
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

/* max |got - want| <= tol * max |want|, shapes and dtypes equal. */
static inline void expect_close(const ts_tensor *want, const ts_tensor *got,
                                double tol, const char *what) {
  ck_assert_msg(got, "%s: missing", what);
  ck_assert_msg(want->dtype == got->dtype && ts_tensor_same_shape(want, got),
                "%s: dtype/shape differ", what);
  int64_t n = ts_tensor_numel(want);
  double scale = 0, diff = 0;
  for (int64_t i = 0; i < n; i++) {
    scale = fmax(scale, fabs(kc_get(want, i)));
    diff = fmax(diff, fabs(kc_get(want, i) - kc_get(got, i)));
  }
  ck_assert_msg(diff <= tol * fmax(scale, 1e-30),
                "%s: max error %g vs scale %g exceeds %g relative", what, diff,
                scale, tol);
}

static inline ts_model *load_bytes(const uint8_t *b, size_t len,
                                   const char *what) {
  ts_model *m = NULL;
  ts_err err = {0};
  int rc = ts_model_load(b, len, &m, &err);
  ck_assert_msg(rc == 0, "%s does not load: %s", what, err.msg);
  return m;
}

/* A plan that must build. */
static inline ts_plan *build_opts(const ts_model *m, const ts_plan_opts *o) {
  ts_plan *p = NULL;
  ts_err err = {0};
  int rc = ts_plan_build(m, o, &p, &err);
  ck_assert_msg(rc == 0, "ts_plan_build(%s, stages %d, shards %d, grid %dx%d) "
                "failed: %s", ts_strategy_name(o->strategy), o->stages,
                o->shards, o->grid_rows, o->grid_cols, err.msg);
  return p;
}

static inline ts_plan *build(const ts_model *m, ts_strategy s, int stages,
                             int shards, int replicas) {
  ts_plan_opts o = {.strategy = s, .stages = stages, .shards = shards,
                    .replicas = replicas, .model_name = "m"};
  return build_opts(m, &o);
}

/* The invariant for one plan. */
static inline void check_plan(const ts_model *m, const ts_plan *p,
                              int64_t batch, int int_range, const char *what) {
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
static inline void check_all_strategies(const ts_model *m, int int_range,
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

static inline void *mb_alloc(mb *b, size_t size) {
  ck_assert_int_lt(b->n_allocs, 4096);
  void *p = calloc(1, size);
  ck_assert(p);
  return b->allocs[b->n_allocs++] = p;
}

static inline char *mb_str(mb *b, const char *s) {
  char *d = mb_alloc(b, strlen(s) + 1);
  strcpy(d, s);
  return d;
}

/* A float ValueInfo; dims -1 become dim_param "N". */
static inline Onnx__ValueInfoProto *mb_vi(mb *b, const char *name, int rank,
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

static inline void mb_input(mb *b, const char *name, int rank,
                            const int64_t *dims) {
  b->ins[b->n_ins++] = mb_vi(b, name, rank, dims);
}

static inline void mb_output(mb *b, const char *name, int rank,
                             const int64_t *dims) {
  b->outs[b->n_outs++] = mb_vi(b, name, rank, dims);
}

/* A float initializer with random values in [-scale, scale). */
static inline void mb_weight(mb *b, const char *name, int rank,
                             const int64_t *dims, double scale) {
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
static inline Onnx__NodeProto *mb_node(mb *b, const char *op, const char *ins,
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

static inline void mb_attr_int(mb *b, Onnx__NodeProto *n, const char *name,
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
static inline ts_model *mb_finish(mb *b, int64_t opset) {
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
static inline ts_model *mlp_model(int layers, const int *sizes,
                                  const char **acts, int64_t batch,
                                  int64_t opset) {
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
static inline ts_model *mlp_odd(void) {
  static const int sizes[] = {13, 17, 11, 5};
  static const char *acts[] = {"Relu", "Tanh", NULL};
  return mlp_model(3, sizes, acts, -1, 13);
}

/* 64 -> 256 -> 256 -> 64 with Relus: big enough for weight shares. */
static inline ts_model *mlp_big(void) {
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

static inline void mb_weights(mb *b, const wspec *w, int n) {
  for (int i = 0; i < n; i++)
    mb_weight(b, w[i].name, w[i].rank, w[i].dims, w[i].scale);
}

static inline void mb_nodes(mb *b, const nspec *ns, int n) {
  for (int i = 0; i < n; i++) mb_node(b, ns[i].op, ns[i].ins, ns[i].outs);
}

static inline void mb_outputs(mb *b, const wspec *o, int n) {
  for (int i = 0; i < n; i++) mb_output(b, o[i].name, o[i].rank, o[i].dims);
}

/* A DAG: tensors that cross several cuts (residual), MatMul + Add with a
 * per-column bias (Megatron pair through Add and Relu), a one-column Gemm
 * head (split by input rows with a Slice), and three graph outputs.
 *   h1 = Relu(x @ W1 + b1)        [N,16]
 *   h2 = h1 @ W2 + b2             [N,12]
 *   s  = Sigmoid(x + h2)          [N,12]
 *   y1 = Gemm(s, W3) + c3         [N,9]
 *   y2 = Gemm(s, W4^T) + c4       [N,1]
 *   y3 = s * h2                   [N,12] */
static inline ts_model *dag_model(int64_t opset) {
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
static inline ts_model *conv_model(void) {
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

#endif
