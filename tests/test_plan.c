/*
 * test_plan.c - the partitioner's invariant and its contract (plan.h): plan
 * structure, options, fusion order, names, the one op table. Pipeline, data,
 * auto and block plans: test_plan_strategies.c; the shared harness:
 * plan_check.h.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "exec.h"
#include "fuse.h"
#include "graph.h"
#include "hash.h"
#include "plan.h"
#include "plan/plan_int.h"
#include "plan_check.h"

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

/* Nodes of op_type in a loaded shard. */
static int count_ops(const ts_model *m, const char *op_type) {
  int n = 0;
  for (int i = 0; i < m->graph.n_nodes; i++)
    n += strcmp(m->graph.nodes[i].op_type, op_type) == 0;
  return n;
}

/* precision=fp16|bf16|int8: every product's B is stored small and widened
 * by a Cast / DequantizeLinear in each shard (one per Gemm), the shards
 * hold about 1/2 or 1/4 of the float32 plan's weight bytes, and the plan
 * run shard by shard (the widening nodes as ops; the worker's fused path
 * is test_quant's and test_precision's) stays within the precision's
 * tolerance of the float32 model. int8 and bf16 need opset >= 13. */
START_TEST(test_precision_shards) {
  ts_model *m = mlp_big();
  static const struct {
    ts_precision p;
    const char *op;
    double ratio, tol;
  } cases[] = {{TS_PRECISION_FP16, "Cast", 0.5, 1e-3},
               {TS_PRECISION_BF16, "Cast", 0.5, 1e-2},
               {TS_PRECISION_INT8, "DequantizeLinear", 0.25, 1e-2}};
  for (int st = 0; st < 2; st++) {
    ts_plan_opts o = {.strategy = st ? TS_STRATEGY_TENSOR : TS_STRATEGY_DATA,
                      .shards = 2, .replicas = 1, .model_name = "m"};
    ts_plan *full = build_opts(m, &o);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
      o.precision = cases[c].p;
      ts_plan *p = build_opts(m, &o);
      const char *name = ts_precision_name(cases[c].p);
      /* 64x256, 256x256, 256x64 weights; biases 256 + 256 + 64 floats;
       * int8: one float scale per output column. */
      size_t small = cases[c].p == TS_PRECISION_INT8 ? 1 : 2;
      size_t want = 98304 * small + 576 * 4 +
                    (cases[c].p == TS_PRECISION_INT8 ? 576 * 4 : 0);
      if (!st) ck_assert_uint_eq(p->weight_bytes, want);
      double ratio = (double)p->weight_bytes / (double)full->weight_bytes;
      ck_assert_msg(ratio >= cases[c].ratio && ratio < 1.07 * cases[c].ratio,
                    "%s: weights %g of float32's", name, ratio);
      int widen = 0, products = 0;
      for (int s = 0; s < p->n_stages; s++)
        for (int k = 0; k < p->stages[s].n_shards; k++) {
          const ts_shard *sh = &p->stages[s].shards[k];
          ts_model *sm = load_bytes(sh->bytes, sh->len, sh->label);
          widen += count_ops(sm, cases[c].op);
          products += count_ops(sm, "Gemm");
          ts_model_free(sm);
        }
      ck_assert_int_eq(widen, products);
      ck_assert_int_eq(products, st ? 6 : 3);
      tmap in = {0}, whole = {0};
      random_inputs(m, 3, 0, &in);
      run_model(m, &in, NULL, 0, &whole, name);
      run_plan(p, &in);
      expect_close(tmap_get(&whole, "y"), tmap_get(&in, "y"), cases[c].tol,
                   name);
      tmap_free(&in);
      tmap_free(&whole);
      ts_plan_free(p);
    }
    ts_plan_free(full);
  }
  ts_model_free(m);

  static const int sizes[] = {8, 6, 4};
  static const char *acts[] = {"Relu", NULL};
  ts_model *old = mlp_model(2, sizes, acts, -1, 11);
  for (int q = 0; q < 3; q++) {
    ts_plan_opts o = {.strategy = TS_STRATEGY_DATA, .replicas = 1,
                      .precision = (ts_precision[]){TS_PRECISION_INT8,
                                                    TS_PRECISION_BF16,
                                                    TS_PRECISION_FP16}[q]};
    ts_plan *p = NULL;
    ts_err err = {0};
    int rc = ts_plan_build(old, &o, &p, &err);
    if (q == 2) {
      ck_assert_msg(rc == 0, "fp16 at opset 11: %s", err.msg);
      ts_plan_free(p);
      continue;
    }
    ck_assert_int_eq(rc, TS_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "needs opset >= 13"));
    ck_assert_ptr_nonnull(strstr(err.msg, "opset 11"));
  }
  ts_model_free(old);
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

/* ---- tests: options ---------------------------------------------------- */

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

static void cases(Suite *s) {
  TCase *tc = TS_CHECK_CASE(s, "plan", 240, NULL, NULL, test_names,
                            test_op_rules, test_conv_structure,
                            test_tensor_structure, test_weight_quarter, test_precision_shards,
                            test_ids_deterministic, test_bad_options,
                            test_passthrough_output, test_fuse_stage_order);
  tcase_add_loop_test(tc, test_built_models, 0, COUNT(built_models));
  TCase *tt = ts_check_tcase(s, "torch", 280, NULL, NULL);
  tcase_add_unchecked_fixture(tt, torch_export, torch_cleanup);
  tcase_add_loop_test(tt, test_torch_models, 0, 4);
  tcase_add_test(tt, test_torch_batch_splittable);
}

const ts_check_suite ts_check_this_suite = {.name = "plan", .cases = cases};
