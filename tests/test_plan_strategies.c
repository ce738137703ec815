/*
 * test_plan_strategies.c - the partitioner's strategies beyond one split
 * (plan.h): pipeline cuts and their balance, data parallelism's
 * batch_splittable, `auto` (data, tensor, hybrid, pipeline, block), and block
 * (2-D) grids with their nested fusions. Each plan is also checked against
 * the invariant (test_plan.c; the harness in plan_check.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "exec.h"
#include "fuse.h"
#include "graph.h"
#include "plan.h"
#include "plan_check.h"

/* ---- tests: pipeline and data ------------------------------------------ */


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

/* ---- tests: auto -------------------------------------------------------- */


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

/* x[N,512] -> Gemm W0 [512,64] -> Relu -> Gemm W1 (64 -> 512) -> y: wide
 * ends, a narrow middle. Per request (batch 1, float): tensor 2 ways is one
 * stage whose two shards each read x (2048 bytes) and answer a partial sum
 * of y (2048): 8192 bytes, 1 round trip; pipeline 2 stages sends x (2048)
 * and h (256) to stage 0's answer and stage 1's request, then y (2048):
 * 4608 bytes, 2 round trips; data sends x and y once: 4096, 1. */
static ts_model *wide_ends_model(void) {
  static const int sizes[] = {512, 64, 512};
  static const char *acts[] = {"Relu", NULL};
  return mlp_model(2, sizes, acts, -1, 13);
}

static void expect_traffic(const ts_model *m, ts_strategy s, int n,
                           size_t bytes, int hops) {
  ts_plan *p = build(m, s, s == TS_STRATEGY_PIPELINE ? n : 1,
                     s == TS_STRATEGY_TENSOR ? n : 1, 1);
  ts_plan_traffic t;
  ts_plan_traffic_estimate(p, m, 0.001, 1e6, &t);
  ck_assert_uint_eq(t.bytes, bytes);
  ck_assert_int_eq(t.hops, hops);
  ck_assert_double_eq_tol(t.seconds, hops * 0.001 + (double)bytes / 1e6,
                          1e-12);
  ts_plan_free(p);
}

START_TEST(test_traffic_estimate) {
  ts_model *m = wide_ends_model();
  expect_traffic(m, TS_STRATEGY_DATA, 1, 4096, 1);
  expect_traffic(m, TS_STRATEGY_TENSOR, 2, 8192, 1);
  expect_traffic(m, TS_STRATEGY_PIPELINE, 2, 4608, 2);
  ts_model_free(m);
}
END_TEST

/* The model does not fit one worker (264448 weight bytes, limit 140000);
 * tensor 2 ways and pipeline 2 stages both fit, and the link decides:
 * with the default link (0.2 ms, 1 Gbit/s) and with a high round trip
 * tensor's single round trip wins, over a narrow, low-latency link
 * pipeline's fewer bytes do. A model that fits stays data on any link. */
START_TEST(test_auto_link) {
  ts_model *m = wide_ends_model();
  ts_plan_opts o = {.strategy = TS_STRATEGY_AUTO, .replicas = 1,
                    .n_workers = 2, .worker_memory_limit = 140000,
                    .model_name = "wide"};
  static const struct {
    double rtt_s, bytes_per_s;
    ts_strategy want;
    int stages, shards;
  } links[] = {
      {0, 0, TS_STRATEGY_TENSOR, 1, 2},
      {0.05, 1e9, TS_STRATEGY_TENSOR, 1, 2},
      {1e-6, 1e6, TS_STRATEGY_PIPELINE, 2, 1},
  };
  for (size_t i = 0; i < COUNT(links); i++) {
    o.link_rtt_s = links[i].rtt_s;
    o.link_bytes_per_s = links[i].bytes_per_s;
    ts_plan *p = build_opts(m, &o);
    ck_assert_msg(p->strategy == links[i].want, "link %zu: %s", i,
                  ts_strategy_name(p->strategy));
    ck_assert_int_eq(p->n_stages, links[i].stages);
    ck_assert_int_eq(p->stages[0].n_shards, links[i].shards);
    check_plan(m, p, 2, 0, "auto-link");
    ts_plan_free(p);
  }
  o.worker_memory_limit = m->weight_bytes;
  o.link_rtt_s = 0.05;
  ts_plan *p = build_opts(m, &o);
  ck_assert_int_eq(p->strategy, TS_STRATEGY_DATA);
  ts_plan_free(p);
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

TS_CHECK_ONE_CASE_SUITE("plan_strategies", "strategies", 240, NULL, NULL,
                        test_pipeline_cuts, test_pipeline_balance,
                        test_data_batch_split, test_auto, test_auto_pipeline,
                        test_block_grids, test_block_clamp_and_share,
                        test_auto_block, test_traffic_estimate, test_auto_link);
