/*
 * plan_fixtures.h - what the planner's suites (test_plan.c,
 * test_plan_strategies.c) share: a name -> tensor map, running a model and
 * a plan, the invariant check, models built with protobuf-c and the
 * PyTorch exports. Every helper fails the running test (Check) on error.
 */
#ifndef TS_TEST_PLAN_FIXTURES_H
#define TS_TEST_PLAN_FIXTURES_H

#include <stdbool.h>
#include <stdint.h>

#include "graph.h"
#include "plan.h"
#include "tensor.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- a name -> tensor map (owned copies) -------------------------------- */

typedef struct tmap {
  char **names;
  ts_tensor *t;
  int n, cap;
} tmap;

void tmap_put(tmap *m, const char *name, const ts_tensor *src);
const ts_tensor *tmap_get(const tmap *m, const char *name);
void tmap_free(tmap *m);
/* ts_fuse_env callbacks over a tmap (user = the tmap). */
const ts_tensor *tmap_lookup(void *user, const char *name);
int tmap_store(void *user, const char *name, ts_tensor *t, ts_err *err);

/* ---- running models and plans ------------------------------------------- */

/* Random inputs for every graph input of m (batch for symbolic dim 0;
 * integers in [0, int_range) when int_range > 0). */
void random_inputs(const ts_model *m, int64_t batch, int int_range, tmap *out);
void run_model(const ts_model *m, const tmap *in, const char *const *out_names,
               int n_out, tmap *out, const char *what);
void run_plan(const ts_plan *p, tmap *env);
void expect_close(const ts_tensor *want, const ts_tensor *got, double tol,
                  const char *what);
/* Plans that must build (the test fails otherwise). */
ts_plan *build_opts(const ts_model *m, const ts_plan_opts *o);
ts_plan *build(const ts_model *m, ts_strategy s, int stages, int shards,
               int replicas);
/* The invariant on one plan, and on every strategy with N in {2, 3, 4}. */
void check_plan(const ts_model *m, const ts_plan *p, int64_t batch,
                int int_range, const char *what);
void check_all_strategies(const ts_model *m, int int_range, const char *model);

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

void mb_input(mb *b, const char *name, int rank, const int64_t *dims);
void mb_output(mb *b, const char *name, int rank, const int64_t *dims);
void mb_weight(mb *b, const char *name, int rank, const int64_t *dims,
               double scale);
Onnx__NodeProto *mb_node(mb *b, const char *op, const char *ins,
                         const char *outs);
void mb_attr_int(mb *b, Onnx__NodeProto *n, const char *name, int64_t v);
ts_model *mb_finish(mb *b, int64_t opset);
void mb_weights(mb *b, const wspec *w, int n);
void mb_nodes(mb *b, const nspec *ns, int n);
/* The models of the invariant (see test_plan.c). */
ts_model *mlp_model(int layers, const int *sizes, const char **acts,
                    int64_t batch, int64_t opset);
ts_model *mlp_odd(void);
ts_model *mlp_big(void);
ts_model *dag_model(int64_t opset);
ts_model *conv_model(void);

/* ---- PyTorch exports (an unchecked fixture of the "torch" test case) --- */

void torch_export(void);
void torch_cleanup(void);
ts_model *torch_model(const char *name);

#endif
