/*
 * test_graph.c - the ONNX loader and graph IR (graph.c, load.c; the op-table
 * helpers of ops.c are test_ops.c's): good models load, every class of bad file fails with its
 * exact code and a message naming the node/op/attribute/tensor, constants
 * are folded, shapes are inferred (static and symbolic), and real PyTorch
 * exports run and match torch's own outputs.
 */
#include <check.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "kernel_check.h"
#include "op_list.h"
#include "protowire.h"

#define D(...) (int64_t[]){__VA_ARGS__}


/* x[N,4] -> Gemm(W[4,3], b[3]) -> Softmax -> y */
static Onnx__ModelProto *mlp_model(void) {
  kc_rng r = kc_rng_seed(100);
  ts_tensor w, b;
  kc_tensor_rand(&w, TS_DTYPE_FLOAT, 2, D(4, 3), &r, -1, 1);
  kc_tensor_rand(&b, TS_DTYPE_FLOAT, 1, D(3), &r, -1, 1);
  Onnx__ModelProto *m = kc_mlp_model(&w, &b);
  ts_tensor_free(&w);
  ts_tensor_free(&b);
  return m;
}

static int load(Onnx__ModelProto *m, ts_model **out, ts_err *err) {
  ts_err_clear(err);
  int rc = kc_model_load(m, out, err);
  kc_model_free(m);
  return rc;
}

#define ASSERT_MSG_HAS(err, s) \
  ck_assert_msg(strstr((err).msg, (s)) != NULL, "message '%s' lacks '%s'", \
                (err).msg, (s))

START_TEST(good_model_loads) {
  ts_model *model;
  ts_err err;
  ck_assert_int_eq(load(mlp_model(), &model, &err), 0);
  const ts_graph *g = &model->graph;
  ck_assert_int_eq(model->opset, 13);
  ck_assert_int_eq(g->n_nodes, 2);
  ck_assert_int_eq(g->n_inputs, 1);
  ck_assert_int_eq(g->n_outputs, 1);
  ck_assert_str_eq(g->nodes[0].op_type, "Gemm");
  ck_assert_str_eq(g->nodes[0].name, "fc");
  ck_assert_ptr_nonnull(g->nodes[0].op);
  int x = ts_graph_find_value(g, "x"), h = ts_graph_find_value(g, "h");
  int w = ts_graph_find_value(g, "W"), y = ts_graph_find_value(g, "y");
  ck_assert_int_ge(x, 0);
  ck_assert_int_ge(h, 0);
  ck_assert_int_eq(ts_graph_find_value(g, "nope"), -1);
  ck_assert(g->values[x].is_graph_input);
  ck_assert(g->values[y].is_graph_output);
  ck_assert_ptr_nonnull(g->values[w].constant);
  ck_assert_int_eq(g->values[h].producer, 0);
  ck_assert_int_eq(g->values[y].producer, 1);
  ck_assert_int_eq(g->values[x].producer, -1);
  ck_assert_int_eq(g->values[h].n_consumers, 1);
  ck_assert_int_eq(g->values[y].n_consumers, 1);
  ck_assert_int_eq(g->nodes[0].inputs[0], x);
  /* inferred: h is [N,3] with N symbolic */
  ck_assert_int_eq(g->values[h].dtype, TS_DTYPE_FLOAT);
  ck_assert_int_eq(g->values[h].rank, 2);
  ck_assert_int_eq(g->values[h].dims[0], -1);
  ck_assert_int_eq(g->values[h].dims[1], 3);
  ck_assert_int_eq(g->values[x].dims[0], -1);
  ck_assert_uint_eq(model->weight_bytes, (4 * 3 + 3) * 4);
  /* Gemm: M*N*K with M symbolic = 1 -> 1*3*4; Softmax: output elems 3 */
  ck_assert_double_eq(ts_graph_node_flops(model, 0), 12.0);
  ck_assert_double_eq(ts_graph_node_flops(model, 1), 3.0);
  ck_assert_ptr_nonnull(model->proto);
  ts_model_free(model);
}
END_TEST

START_TEST(corrupt_and_truncated_bytes) {
  ts_model *model = NULL;
  ts_err err;
  const uint8_t garbage[] = {0x07, 0xff, 0x13, 0x00, 0x42};
  ck_assert_int_eq(ts_model_load(garbage, sizeof garbage, &model, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "not a valid ONNX model");
  ck_assert_ptr_null(model);
  Onnx__ModelProto *m = mlp_model();
  size_t len;
  uint8_t *bytes = kc_model_pack(m, &len);
  kc_model_free(m);
  ck_assert_int_eq(ts_model_load(bytes, len - 1, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "corrupt or truncated");
  ck_assert_int_eq(ts_model_load(bytes, len / 2, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "corrupt or truncated");
  /* every prefix fails cleanly (never crashes, never leaks) */
  for (size_t cut = 0; cut < len; cut += 7) {
    int rc = ts_model_load(bytes, cut, &model, &err);
    ck_assert_msg(rc == TS_EINVAL || rc == TS_EUNSUPPORTED,
                  "prefix %zu: rc %d", cut, rc);
  }
  /* flipped bytes fail or load, never crash */
  for (size_t i = 0; i < len; i += 3) {
    uint8_t saved = bytes[i];
    bytes[i] ^= 0x5a;
    if (ts_model_load(bytes, len, &model, &err) == 0) ts_model_free(model);
    bytes[i] = saved;
  }
  ck_assert_int_eq(ts_model_load(bytes, len, &model, &err), 0);
  ts_model_free(model);
  free(bytes);
}
END_TEST

/* ---- nesting (nesting.c) ------------------------------------------------ */

/* Wraps buf[0..*len) as field `number` (length-delimited) in place: the
 * buffer is reallocated, the tag and length put in front. */
static uint8_t *wire_wrap(uint8_t *buf, size_t *len, uint64_t number) {
  uint8_t head[2 * TS_WIRE_VARINT_MAX];
  size_t h = ts_wire_put_varint(head, number << 3 | TS_WT_LEN);
  h += ts_wire_put_varint(head + h, *len);
  uint8_t *out = malloc(*len + h);
  ck_assert_ptr_nonnull(out);
  memcpy(out, head, h);
  if (*len) memcpy(out + h, buf, *len);
  free(buf);
  *len += h;
  return out;
}

/* ModelProto bytes whose graph nests `levels` graphs in If-style attribute
 * subgraphs (Model.graph -> Graph.node -> Node.attribute -> Attribute.g ->
 * ...): 1 + 3 * levels + 1 messages deep. */
static uint8_t *nested_graph_bytes(int levels, size_t *len) {
  uint8_t *b = NULL;
  *len = 0;
  for (int i = 0; i < levels; i++) {
    b = wire_wrap(b, len, 6); /* Attribute.g */
    b = wire_wrap(b, len, 5); /* Node.attribute */
    b = wire_wrap(b, len, 1); /* Graph.node */
  }
  return wire_wrap(b, len, 7); /* Model.graph */
}

START_TEST(nesting_limit) {
  ts_err err;
  size_t len;
  /* depth = 2 + 3 * levels: 11 levels = 35, 12 = 38 */
  uint8_t *b = nested_graph_bytes(11, &len);
  ck_assert_int_eq(ts_model_check_nesting(b, len, 35, &err), TS_OK);
  ck_assert_int_eq(ts_model_check_nesting(b, len, 34, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "limit of 34");
  free(b);
  /* a type nested in sequences: Model.graph.input[0].type.sequence_type
   * .elem_type... (ValueInfo.type = 2, Type.sequence_type = 4,
   * Sequence.elem_type = 1) */
  b = NULL;
  len = 0;
  for (int i = 0; i < 40; i++) {
    b = wire_wrap(b, &len, 1);
    b = wire_wrap(b, &len, 4);
  }
  b = wire_wrap(b, &len, 2);
  b = wire_wrap(b, &len, 11);
  b = wire_wrap(b, &len, 7);
  ck_assert_int_eq(ts_model_check_nesting(b, len, 100, &err), TS_OK);
  ck_assert_int_eq(ts_model_check_nesting(b, len, 50, &err), TS_EINVAL);
  /* unreadable bytes are left to protobuf-c */
  ck_assert_int_eq(ts_model_check_nesting(b, len - 1, 50, &err), TS_OK);
  free(b);
  /* non-message fields are not descended into: a deep structure inside
   * a string (Graph.name = 2) is just bytes */
  b = nested_graph_bytes(60, &len);
  b = wire_wrap(b, &len, 2);
  b = wire_wrap(b, &len, 7);
  ck_assert_int_eq(ts_model_check_nesting(b, len, 10, &err), TS_OK);
  free(b);
}
END_TEST

/* ts_wire_put_varint against the protobuf encoding guide's examples and
 * the 64-bit extremes, read back by ts_wire_varint. */
START_TEST(varint_encoding) {
  static const struct {
    uint64_t v;
    size_t n;
    uint8_t bytes[TS_WIRE_VARINT_MAX];
  } cases[] = {
      {0, 1, {0x00}},
      {1, 1, {0x01}},
      {127, 1, {0x7f}},
      {150, 2, {0x96, 0x01}},
      {300, 2, {0xac, 0x02}},
      {UINT64_MAX, 10,
       {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t b[TS_WIRE_VARINT_MAX];
    ck_assert_uint_eq(ts_wire_put_varint(b, cases[i].v), cases[i].n);
    ck_assert_mem_eq(b, cases[i].bytes, cases[i].n);
    ts_wire_cursor c = {b, b + cases[i].n};
    uint64_t back = 0;
    ck_assert(ts_wire_varint(&c, &back));
    ck_assert_uint_eq(back, cases[i].v);
    ck_assert_ptr_eq(c.p, c.end);
  }
}
END_TEST

/* The attack of issue 12: 3000 levels (a 63 KB file) crashed protobuf-c;
 * both loaders now refuse it before unpacking. */
START_TEST(deep_model_refused_by_loaders) {
  ts_err err;
  size_t len;
  ts_model *model = NULL;
  uint8_t *b = nested_graph_bytes(3000, &len);
  ck_assert_int_eq(ts_model_load(b, len, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "limit of 100");
  ck_assert_ptr_null(model);
  ck_assert_int_eq(ts_model_load_adopt(b, len, NULL, NULL, &model, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "limit of 100");
  free(b);
  /* within the limit, the load goes on to its usual checks */
  b = nested_graph_bytes(5, &len);
  ck_assert_int_ne(ts_model_load(b, len, &model, &err), TS_OK);
  ck_assert_ptr_null(strstr(err.msg, "limit of"));
  free(b);
}
END_TEST

START_TEST(unknown_op) {
  ts_model *model;
  ts_err err;
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 1, D(3));
  kc_model_node(m, "FooBar", "", "weird", "x", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  ck_assert_int_eq(load(m, &model, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "node 'weird' (FooBar): op FooBar (domain ai.onnx)");
  m = kc_model_new(13);
  kc_model_opset(m, "com.example", 1);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 1, D(3));
  kc_model_node(m, "Gemm", "com.example", "", "x", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  ck_assert_int_eq(load(m, &model, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "domain com.example");
  ASSERT_MSG_HAS(err, "producing 'y'");
}
END_TEST

START_TEST(bad_attributes) {
  ts_model *model;
  ts_err err;
  Onnx__ModelProto *m = mlp_model();
  kc_attr_float(m->graph->node[0], "gamma", 2);
  ck_assert_int_eq(load(m, &model, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "node 'fc' (Gemm)");
  ASSERT_MSG_HAS(err, "attribute 'gamma'");
  m = mlp_model();
  kc_attr_int(m->graph->node[0], "transB", 7);
  ck_assert_int_eq(load(m, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "node 'fc' (Gemm)");
  ASSERT_MSG_HAS(err, "transB");
  m = mlp_model();
  kc_attr_string(m->graph->node[1], "axis", "last");
  ck_assert_int_eq(load(m, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "node 'sm' (Softmax)");
  ASSERT_MSG_HAS(err, "axis");
}
END_TEST

/* A graph with input x (float, [3] or [3,3]), up to three nodes and one
 * output, that must fail to load with `code` and a message holding `text`. */
typedef struct node_spec {
  const char *op, *name, *inputs, *outputs;
} node_spec;

typedef struct bad_graph {
  int x_rank;
  node_spec nodes[3];
  const char *output;
  int code;
  const char *text;
} bad_graph;

static const bad_graph bad_graphs[] = {
    {1, /* cycle: a = Identity(b), b = Identity(a) */
     {{"Identity", "n1", "b", "a"}, {"Identity", "n2", "a", "b"},
      {"Identity", "n3", "x", "y"}},
     "y", TS_EINVAL, "(Identity) is part of a cycle"},
    {1, {{"MatMul", "self", "x,y", "y"}}, "y", TS_EINVAL,
     "node 'self' (MatMul) is part of a cycle"},
    {1, {{"MatMul", "mm", "x,ghost", "y"}}, "y", TS_EINVAL,
     "node 'mm' (MatMul): input 'ghost' is not defined"},
    {1, {{"Identity", "p1", "x", "y"}, {"Identity", "p2", "x", "y"}}, "y",
     TS_EINVAL, "node 'p2' (Identity): output 'y'"},
    {1, {{"Identity", "i", "x", "y"}}, "z", TS_EINVAL, "graph output 'z'"},
    {2, {{"MatMul", "mm", "x", "y"}}, "y", TS_EINVAL,
     "node 'mm' (MatMul): has 1 inputs"},
    {2, {{"MatMul", "mm", ",x", "y"}}, "y", TS_EINVAL, "required input 0"},
    {2, {{"Dropout", "d", "x", ",y"}}, "y", TS_EINVAL, "required output 0"},
};

START_TEST(structure_errors) {
  ts_model *model;
  ts_err err;
  for (size_t i = 0; i < sizeof bad_graphs / sizeof *bad_graphs; i++) {
    const bad_graph *b = &bad_graphs[i];
    Onnx__ModelProto *m = kc_model_new(13);
    kc_model_input(m, "x", TS_DTYPE_FLOAT, b->x_rank, D(3, 3));
    for (int k = 0; k < 3 && b->nodes[k].op; k++)
      kc_model_node(m, b->nodes[k].op, "", b->nodes[k].name,
                    b->nodes[k].inputs, b->nodes[k].outputs);
    kc_model_output(m, b->output, TS_DTYPE_FLOAT, -1, NULL);
    ck_assert_msg(load(m, &model, &err) == b->code, "case %zu: %s", i,
                  err.msg);
    ASSERT_MSG_HAS(err, b->text);
  }
  /* no graph */
  Onnx__ModelProto *m = kc_model_new(13);
  onnx__graph_proto__free_unpacked(m->graph, NULL);
  m->graph = NULL;
  ck_assert_int_eq(load(m, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "no graph");
  /* static shapes that cannot work fail at load */
  m = kc_model_new(13);
  kc_model_input(m, "a", TS_DTYPE_FLOAT, 2, D(2, 3));
  kc_model_input(m, "b", TS_DTYPE_FLOAT, 2, D(4, 5));
  kc_model_node(m, "MatMul", "", "mm", "a,b", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  ck_assert_int_eq(load(m, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "node 'mm' (MatMul)");
  /* ...but symbolic ones wait for run time */
  m = kc_model_new(13);
  kc_model_input(m, "a", TS_DTYPE_FLOAT, 2, D(2, -1));
  kc_model_input(m, "b", TS_DTYPE_FLOAT, 2, D(-1, 5));
  kc_model_node(m, "MatMul", "", "mm", "a,b", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  ck_assert_int_eq(load(m, &model, &err), 0);
  int y = ts_graph_find_value(&model->graph, "y");
  ck_assert_int_eq(model->graph.values[y].dims[0], 2);
  ck_assert_int_eq(model->graph.values[y].dims[1], 5);
  ts_model_free(model);
}
END_TEST

START_TEST(versions) {
  ts_model *model;
  ts_err err;
  Onnx__ModelProto *m = mlp_model();
  m->opset_import[0]->version = 6;
  ck_assert_int_eq(load(m, &model, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "opset 6");
  m = mlp_model();
  m->opset_import[0]->version = 18;
  ck_assert_int_eq(load(m, &model, &err), TS_EUNSUPPORTED);
  m = mlp_model();
  kc_model_opset(m, "ai.onnx.ml", 4);
  ck_assert_int_eq(load(m, &model, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "ai.onnx.ml");
  m = mlp_model();
  m->ir_version = 2;
  ck_assert_int_eq(load(m, &model, &err), TS_EUNSUPPORTED);
  ASSERT_MSG_HAS(err, "IR version 2");
  m = mlp_model();
  kc_model_opset(m, "", 13);
  ck_assert_int_eq(load(m, &model, &err), TS_EINVAL);
  m = mlp_model(); /* no default-domain import, but default-domain nodes */
  free(m->opset_import[0]->domain);
  m->opset_import[0]->domain = kc_strdup("ai.onnx.ml");
  m->opset_import[0]->version = 2;
  ck_assert_int_eq(load(m, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "imports no opset");
  m = mlp_model(); /* "ai.onnx" is the default domain too */
  free(m->opset_import[0]->domain);
  m->opset_import[0]->domain = kc_strdup("ai.onnx");
  ck_assert_int_eq(load(m, &model, &err), 0);
  ck_assert_int_eq(model->opset, 13);
  ts_model_free(model);
}
END_TEST

/* c = Constant([2,3]); c2 = Identity(c); y = Reshape(x, c2): the Constant
 * and the Identity fold at load, Reshape's output shape is then static. */
START_TEST(constant_folding) {
  ts_model *model;
  ts_err err;
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 1, D(6));
  Onnx__NodeProto *c = kc_model_node(m, "Constant", "", "c", "", "shape0");
  kc_attr_ints(c, "value_ints", 2, D(2, 3));
  kc_model_node(m, "Identity", "", "id", "shape0", "shape1");
  kc_model_node(m, "Reshape", "", "rs", "x,shape1", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  ck_assert_int_eq(load(m, &model, &err), 0);
  const ts_graph *g = &model->graph;
  ck_assert_int_eq(g->n_nodes, 1);
  ck_assert_str_eq(g->nodes[0].op_type, "Reshape");
  int s1 = ts_graph_find_value(g, "shape1");
  ck_assert_ptr_nonnull(g->values[s1].constant);
  ck_assert_int_eq(g->values[s1].producer, -1);
  kc_assert_close(g->values[s1].constant, (double[]){2, 3}, D(2), 1, 0, 0,
                  "folded shape");
  int y = ts_graph_find_value(g, "y");
  ck_assert_int_eq(g->values[y].rank, 2);
  ck_assert_int_eq(g->values[y].dims[0], 2);
  ck_assert_int_eq(g->values[y].dims[1], 3);
  ck_assert_int_eq(g->values[y].producer, 0);
  /* the folded model runs */
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  ts_tensor x, out;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 1, D(6), (double[]){1, 2, 3, 4, 5, 6});
  const char *names[] = {"x"};
  ck_assert_int_eq(ts_exec_run(model, s, names, &x, 1, NULL, &out, 0, &err),
                   0);
  kc_assert_close(&out, (double[]){1, 2, 3, 4, 5, 6}, D(2, 3), 2, 0, 0, "y");
  ts_tensor_free(&x);
  ts_session_free(s);
  ts_model_free(model);
}
END_TEST

static void release_free(void *bytes, size_t len, void *ctx) {
  (void)len;
  (void)ctx;
  free(bytes);
}

/* Loads m in place with fold limit `limit` (SIZE_MAX - 1: the default). */
static int load_with_fold_limit(Onnx__ModelProto *m, size_t limit,
                                ts_model **out, ts_err *err) {
  size_t len;
  uint8_t *b = kc_model_pack(m, &len);
  kc_model_free(m);
  ts_err_clear(err);
  ts_load_opts opts = {.fold_limit = limit};
  return ts_model_load_adopt_opts(b, len, release_free, NULL,
                                  limit == SIZE_MAX - 1 ? NULL : &opts, out,
                                  err);
}

/* Load-time folding is held to the fold limit: a 1 GiB (and a 4 TiB)
 * constant from a tiny model is refused with TS_EEXHAUSTED, naming the
 * node and the bytes, before anything that size is allocated (4 TiB could
 * not be: a try would be ENOMEM); so are Expand, Tile and Range. */
START_TEST(fold_limit_refuses_bombs) {
  ts_model *model = NULL;
  ts_err err;
  ck_assert_uint_eq(ts_fold_limit_default(100), 64u << 20);
  ck_assert_uint_eq(ts_fold_limit_default(100u << 20), 400u << 20);
  ck_assert_uint_eq(ts_fold_limit_default(SIZE_MAX / 2), SIZE_MAX);
  static const struct {
    kc_fold_op op;
    const char *desc;
  } bombs[] = {
      {KC_FOLD_CONSTANT_OF_SHAPE, "node 'bomb' (ConstantOfShape) needs "},
      {KC_FOLD_EXPAND, "node 'bomb' (Expand) needs "},
      {KC_FOLD_TILE, "node 'bomb' (Tile) needs "},
      {KC_FOLD_RANGE, "node 'bomb' (Range) needs "},
  };
  for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++) {
    int64_t elems = (int64_t)1 << 28; /* 1 GiB of float */
    ck_assert_int_eq(load_with_fold_limit(kc_fold_model(bombs[i].op, elems),
                                          SIZE_MAX - 1, &model, &err),
                     TS_EEXHAUSTED);
    ck_assert_ptr_null(model);
    ASSERT_MSG_HAS(err, bombs[i].desc);
    ASSERT_MSG_HAS(err, "needs 1073741824 bytes for its outputs");
    ASSERT_MSG_HAS(err, "constant folding at load (fold limit 67108864 bytes");
  }
  /* 4 TiB through the copying loader too */
  Onnx__ModelProto *m = kc_fold_model(KC_FOLD_CONSTANT_OF_SHAPE, (int64_t)1 << 40);
  ck_assert_int_eq(load(m, &model, &err), TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "needs 4398046511104 bytes for its outputs");
}
END_TEST

/* The limit is on all folded constants together: with a limit of 6 MiB a
 * 4 MiB constant folds, and a second 4 MiB one is refused, naming what the
 * first one took. Within the limit the model loads, counts what it folded
 * (folded_bytes, part of weight_bytes) and runs. */
START_TEST(fold_limit_counts_every_folded_constant) {
  ts_model *model = NULL;
  ts_err err;
  int64_t elems = 1 << 20; /* 4 MiB of float */
  Onnx__ModelProto *m = kc_fold_model(KC_FOLD_CONSTANT_OF_SHAPE, elems);
  Onnx__NodeProto *c = kc_model_node(m, "Constant", "", "dims2", "", "shape2");
  kc_attr_ints(c, "value_ints", 1, D(elems));
  kc_model_node(m, "ConstantOfShape", "", "bomb2", "shape2", "big2");
  kc_model_node(m, "Add", "", "use2", "x,big2", "y2");
  kc_model_output(m, "y2", TS_DTYPE_FLOAT, -1, NULL);
  size_t len;
  uint8_t *b = kc_model_pack(m, &len);
  Onnx__ModelProto *copy = onnx__model_proto__unpack(NULL, len, b);
  free(b);
  ck_assert_int_eq(load_with_fold_limit(m, 6u << 20, &model, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "(fold limit 6291456 bytes, 4194320 taken by earlier "
                      "folded constants): node 'bomb2' (ConstantOfShape) "
                      "needs 4194304 bytes for its outputs, more than the "
                      "2097136 bytes left");
  /* the same model within a limit of 9 MiB: both shapes (8 bytes each) and
   * both constants are folded */
  ck_assert_int_eq(load_with_fold_limit(copy, 9u << 20, &model, &err), TS_OK);
  ck_assert_uint_eq(model->folded_bytes, 2 * (4u << 20) + 2 * 8);
  ck_assert_uint_ge(model->weight_bytes, model->folded_bytes);
  ck_assert_int_eq(model->graph.n_nodes, 2); /* the two Adds */
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  ts_tensor x, out[2];
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 1, D(1), (double[]){2.5});
  const char *names[] = {"x"};
  ck_assert_int_eq(ts_exec_run(model, s, names, &x, 1, NULL, out, 0, &err),
                   0);
  kc_assert_shape(&out[0], D(elems), 1, "y");
  ck_assert(((float *)out[0].data)[0] == 2.5f);
  ck_assert(((float *)out[1].data)[elems - 1] == 2.5f);
  ts_tensor_free(&x);
  ts_session_free(s);
  ts_model_free(model);
}
END_TEST

START_TEST(nodes_out_of_order_are_sorted) {
  ts_model *model;
  ts_err err;
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, D(2, 3));
  kc_model_node(m, "Softmax", "", "last", "b", "y");
  kc_model_node(m, "Identity", "", "mid", "a", "b");
  kc_model_node(m, "Identity", "", "first", "x", "a");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  ck_assert_int_eq(load(m, &model, &err), 0);
  ck_assert_str_eq(model->graph.nodes[0].name, "first");
  ck_assert_str_eq(model->graph.nodes[1].name, "mid");
  ck_assert_str_eq(model->graph.nodes[2].name, "last");
  for (int i = 0; i < 3; i++) {
    int out = model->graph.nodes[i].outputs[0];
    ck_assert_int_eq(model->graph.values[out].producer, i);
    ck_assert_int_eq(model->graph.values[out].rank, 2); /* all static */
    ck_assert_int_eq(model->graph.values[out].dims[1], 3);
  }
  ts_model_free(model);
}
END_TEST

/* Shape -> Gather -> Unsqueeze -> Concat -> Reshape with a symbolic batch:
 * the shape arithmetic is evaluated during inference, so y is [N, 6]. */
START_TEST(shape_arithmetic_inference) {
  ts_model *model;
  ts_err err;
  if (!ts_op_find("", "Shape") || !ts_op_find("", "Gather") ||
      !ts_op_find("", "Unsqueeze") || !ts_op_find("", "Concat"))
    ck_abort_msg("Shape/Gather/Unsqueeze/Concat are not in the op table");
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 3, D(-1, 2, 3));
  ts_tensor zero, minus1, axes;
  kc_tensor_from(&zero, TS_DTYPE_INT64, 0, NULL, (double[]){0});
  kc_tensor_from(&minus1, TS_DTYPE_INT64, 1, D(1), (double[]){-1});
  kc_tensor_from(&axes, TS_DTYPE_INT64, 1, D(1), (double[]){0});
  kc_model_init(m, "zero", &zero);
  kc_model_init(m, "minus1", &minus1);
  kc_model_init(m, "axes", &axes);
  kc_model_node(m, "Shape", "", "shape", "x", "s");
  kc_model_node(m, "Gather", "", "gather", "s,zero", "n");
  kc_model_node(m, "Unsqueeze", "", "unsq", "n,axes", "n1");
  Onnx__NodeProto *cat = kc_model_node(m, "Concat", "", "cat", "n1,minus1",
                                       "target");
  kc_attr_int(cat, "axis", 0);
  kc_model_node(m, "Reshape", "", "rs", "x,target", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  ck_assert_int_eq(load(m, &model, &err), 0);
  const ts_graph *g = &model->graph;
  int y = ts_graph_find_value(g, "y"), t = ts_graph_find_value(g, "target");
  ck_assert_int_eq(g->values[t].rank, 1);
  ck_assert_int_eq(g->values[t].dims[0], 2);
  ck_assert_int_eq(g->values[y].rank, 2);
  ck_assert_int_eq(g->values[y].dims[0], -1);
  ck_assert_int_eq(g->values[y].dims[1], 6);
  ck_assert_int_eq(g->values[y].dtype, TS_DTYPE_FLOAT);
  ts_tensor_free(&zero);
  ts_tensor_free(&minus1);
  ts_tensor_free(&axes);
  ts_model_free(model);
}
END_TEST

START_TEST(output_shape_from_value_info) {
  ts_model *model;
  ts_err err;
  /* Reshape to a shape given at run time: inference cannot tell, so the
   * graph output's declared shape is used. */
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 1, D(6));
  kc_model_input(m, "s", TS_DTYPE_INT64, 1, D(2));
  kc_model_node(m, "Reshape", "", "rs", "x,s", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, 2, D(-1, 3));
  ck_assert_int_eq(load(m, &model, &err), 0);
  int y = ts_graph_find_value(&model->graph, "y");
  ck_assert_int_eq(model->graph.values[y].rank, 2);
  ck_assert_int_eq(model->graph.values[y].dims[0], -1);
  ck_assert_int_eq(model->graph.values[y].dims[1], 3);
  ts_model_free(model);
}
END_TEST

START_TEST(load_file) {
  ts_model *model;
  ts_err err;
  ck_assert_int_eq(ts_model_load_file("/nonexistent/dir/m.onnx", &model, &err),
                   TS_ENOTFOUND);
  ASSERT_MSG_HAS(err, "/nonexistent/dir/m.onnx");
  char path[] = "/tmp/test_graph_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, "\x07\xff\x13", 3), 3);
  close(fd);
  ck_assert_int_eq(ts_model_load_file(path, &model, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, path);
  ASSERT_MSG_HAS(err, "not a valid ONNX model");
  Onnx__ModelProto *m = mlp_model();
  size_t len;
  uint8_t *bytes = kc_model_pack(m, &len);
  kc_model_free(m);
  FILE *f = fopen(path, "wb");
  ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
  fclose(f);
  free(bytes);
  ck_assert_int_eq(ts_model_load_file(path, &model, &err), 0);
  ck_assert_int_eq(model->graph.n_nodes, 2);
  ts_model_free(model);
  unlink(path);
}
END_TEST

/* ts_model_load_adopt: y = MatMul(Gemm(x, W1, b), W2) with W1 (24 KiB) and
 * W2 (12 KiB) large enough to stay in place and b small. The weights end up
 * inside the adopted buffer, 64-byte aligned; the answer equals a float64
 * reference; the buffer is released once, when the model is freed (or at
 * once, when the bytes do not load). */
typedef struct release_count {
  int calls;
  const void *bytes;
} release_count;

static void count_release(void *bytes, size_t len, void *ctx) {
  (void)len;
  release_count *c = ctx;
  c->calls++;
  c->bytes = bytes;
  free(bytes);
}

START_TEST(load_in_place) {
  enum { N = 3, K = 96, H = 64, O = 48 };
  kc_rng r = kc_rng_seed(5);
  ts_tensor x, w1, b, w2;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(N, K), &r, -1, 1);
  kc_tensor_rand(&w1, TS_DTYPE_FLOAT, 2, D(K, H), &r, -1, 1);
  kc_tensor_rand(&b, TS_DTYPE_FLOAT, 1, D(H), &r, -1, 1);
  kc_tensor_rand(&w2, TS_DTYPE_FLOAT, 2, D(H, O), &r, -1, 1);
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, D(N, K));
  kc_model_init(m, "w1", &w1);
  kc_model_init(m, "b", &b);
  kc_model_init(m, "w2", &w2);
  kc_model_node(m, "Gemm", "", "fc", "x,w1,b", "h");
  kc_model_node(m, "MatMul", "", "mm", "h,w2", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, 2, D(N, O));
  size_t len;
  uint8_t *bytes = kc_model_pack(m, &len);
  kc_model_free(m);

  ts_model *model;
  ts_err err;
  release_count rel = {0};
  ck_assert_int_eq(ts_model_load_adopt(bytes, len, count_release, &rel,
                                       &model, &err), 0);
  ck_assert_int_eq(rel.calls, 0);
  const ts_graph *g = &model->graph;
  const char *in_place[] = {"w1", "w2"};
  for (int i = 0; i < 2; i++) {
    const ts_tensor *c = g->values[ts_graph_find_value(g, in_place[i])].constant;
    ck_assert_msg((const uint8_t *)c->data >= bytes &&
                      (const uint8_t *)c->data + c->nbytes <= bytes + len,
                  "%s is not inside the adopted buffer", in_place[i]);
    ck_assert_uint_eq((uintptr_t)c->data % 64, 0);
  }
  const ts_tensor *bc = g->values[ts_graph_find_value(g, "b")].constant;
  ck_assert_msg(!((const uint8_t *)bc->data >= bytes &&
                  (const uint8_t *)bc->data < bytes + len),
                "a small initializer was not copied");

  double ref[N * O];
  for (int i = 0; i < N; i++)
    for (int o = 0; o < O; o++) {
      double acc = 0;
      for (int j = 0; j < H; j++) {
        double h = kc_get(&b, j);
        for (int k = 0; k < K; k++)
          h += kc_get(&x, i * K + k) * kc_get(&w1, k * H + j);
        acc += h * kc_get(&w2, j * O + o);
      }
      ref[i * O + o] = acc;
    }
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  ts_tensor y;
  const char *names[] = {"x"};
  ck_assert_int_eq(ts_exec_run(model, s, names, &x, 1, NULL, &y, 0, &err), 0);
  kc_assert_close(&y, ref, D(N, O), 2, 1e-4, 1e-4, "y");
  ts_session_free(s);
  ts_model_free(model);
  ck_assert_int_eq(rel.calls, 1);
  ck_assert_ptr_eq(rel.bytes, bytes);

  /* bytes that are no model: the plain path's error; released at once */
  uint8_t *bad = malloc(3);
  memcpy(bad, "\x07\xff\x13", 3);
  rel = (release_count){0};
  ck_assert_int_eq(ts_model_load_adopt(bad, 3, count_release, &rel, &model,
                                       &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "not a valid ONNX model");
  ck_assert_int_eq(rel.calls, 1);
  /* a model the in-place walk accepts but whose graph fails to load */
  m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, D(N, K));
  kc_model_init(m, "w1", &w1);
  kc_model_node(m, "NoSuchOp", "", "bad", "x,w1", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  bytes = kc_model_pack(m, &len);
  kc_model_free(m);
  rel = (release_count){0};
  ck_assert_int_eq(ts_model_load_adopt(bytes, len, count_release, &rel,
                                       &model, &err), TS_EUNSUPPORTED);
  ck_assert_int_eq(rel.calls, 1);
  ts_tensor_free(&x);
  ts_tensor_free(&w1);
  ts_tensor_free(&b);
  ts_tensor_free(&w2);
}
END_TEST

/* ---- BatchNormalization folded into the Conv before it ------------------ */

/* x[2, C, 5, 6] -> Conv(W[M, C/group, 3, 3] [, B], pads 1) -> h ->
 * BatchNormalization(scale, bias, mean, var; epsilon 1e-3) -> y. */
typedef struct conv_bn {
  int64_t c, m, group;
  bool bias;
  bool mean_is_input; /* mean fed at run time: not constant */
  bool h_is_output;   /* the Conv's output is also a graph output */
  bool w_shared;      /* a second Conv reads W too: h2 */
  ts_tensor x, w, b, bn[4];
} conv_bn;

static const char *const bn_names[4] = {"scale", "beta", "mean", "var"};

static Onnx__ModelProto *conv_bn_model(conv_bn *c, kc_rng *r) {
  Onnx__ModelProto *m = kc_model_new(13);
  const int64_t cpg = c->c / c->group;
  kc_tensor_rand(&c->x, TS_DTYPE_FLOAT, 4, D(2, c->c, 5, 6), r, -1, 1);
  kc_tensor_rand(&c->w, TS_DTYPE_FLOAT, 4, D(c->m, cpg, 3, 3), r, -1, 1);
  kc_tensor_rand(&c->b, TS_DTYPE_FLOAT, 1, D(c->m), r, -1, 1);
  const double lo[4] = {0.5, -0.5, -0.5, 0.5}, hi[4] = {1.5, 0.5, 0.5, 2.0};
  for (int i = 0; i < 4; i++)
    kc_tensor_rand(&c->bn[i], TS_DTYPE_FLOAT, 1, D(c->m), r, lo[i], hi[i]);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 4, D(-1, c->c, 5, 6));
  kc_model_init(m, "W", &c->w);
  if (c->bias) kc_model_init(m, "B", &c->b);
  for (int i = 0; i < 4; i++) {
    if (i == 2 && c->mean_is_input)
      kc_model_input(m, "mean", TS_DTYPE_FLOAT, 1, D(c->m));
    else
      kc_model_init(m, bn_names[i], &c->bn[i]);
  }
  Onnx__NodeProto *conv =
      kc_model_node(m, "Conv", "", "conv", c->bias ? "x,W,B" : "x,W", "h");
  kc_attr_ints(conv, "pads", 4, D(1, 1, 1, 1));
  kc_attr_int(conv, "group", c->group);
  Onnx__NodeProto *bn = kc_model_node(m, "BatchNormalization", "", "bn",
                                      "h,scale,beta,mean,var", "y");
  kc_attr_float(bn, "epsilon", 1e-3f);
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  if (c->h_is_output) kc_model_output(m, "h", TS_DTYPE_FLOAT, -1, NULL);
  if (c->w_shared) {
    conv = kc_model_node(m, "Conv", "", "conv2", "x,W", "h2");
    kc_attr_ints(conv, "pads", 4, D(1, 1, 1, 1));
    kc_attr_int(conv, "group", c->group);
    kc_model_output(m, "h2", TS_DTYPE_FLOAT, -1, NULL);
  }
  return m;
}

static void conv_bn_free(conv_bn *c) {
  ts_tensor_free(&c->x), ts_tensor_free(&c->w), ts_tensor_free(&c->b);
  for (int i = 0; i < 4; i++) ts_tensor_free(&c->bn[i]);
}

/* The Conv (h) and BatchNormalization (y) of c in float64, straight from
 * the ONNX definitions. */
static void conv_bn_reference(const conv_bn *c, double *h, double *y) {
  const float *x = c->x.data, *w = c->w.data, *b = c->b.data;
  const float *scale = c->bn[0].data, *beta = c->bn[1].data,
              *mean = c->bn[2].data, *var = c->bn[3].data;
  const int64_t cpg = c->c / c->group, mpg = c->m / c->group;
  for (int64_t n = 0; n < 2; n++)
    for (int64_t m = 0; m < c->m; m++)
      for (int64_t i = 0; i < 5; i++)
        for (int64_t j = 0; j < 6; j++) {
          double acc = c->bias ? b[m] : 0.0;
          for (int64_t ci = 0; ci < cpg; ci++)
            for (int64_t ki = 0; ki < 3; ki++)
              for (int64_t kj = 0; kj < 3; kj++) {
                const int64_t ii = i + ki - 1, jj = j + kj - 1;
                if (ii < 0 || ii >= 5 || jj < 0 || jj >= 6) continue;
                const int64_t chan = m / mpg * cpg + ci;
                acc += (double)x[((n * c->c + chan) * 5 + ii) * 6 + jj] *
                       w[((m * cpg + ci) * 3 + ki) * 3 + kj];
              }
          const int64_t at = ((n * c->m + m) * 5 + i) * 6 + j;
          h[at] = acc;
          y[at] = (acc - mean[m]) / sqrt((double)var[m] + (double)1e-3f) *
                      scale[m] +
                  beta[m];
        }
}

/* Loads c's model, expects `nodes` nodes after loading, runs it and
 * compares y (and h when it is an output) with the reference. Returns the
 * model; the caller frees it. */
static ts_model *conv_bn_check(conv_bn *c, kc_rng *r, int nodes,
                               const char *what) {
  ts_model *model;
  ts_err err;
  ck_assert_msg(load(conv_bn_model(c, r), &model, &err) == 0, "%s: %s", what,
                err.msg);
  const ts_graph *g = &model->graph;
  ck_assert_msg(g->n_nodes == nodes, "%s: %d nodes, want %d", what,
                g->n_nodes, nodes);
  double h[2 * 8 * 30], y[2 * 8 * 30];
  ck_assert_int_le(c->m, 8);
  conv_bn_reference(c, h, y);
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  const char *in_names[] = {"x", "mean"};
  const ts_tensor feeds[2] = {c->x, c->bn[2]};
  const char *out_names[] = {"y", "h"};
  ts_tensor out[2];
  ck_assert_msg(ts_exec_run(model, s, in_names, feeds,
                            c->mean_is_input ? 2 : 1, out_names, out,
                            c->h_is_output ? 2 : 1, &err) == 0,
                "%s: %s", what, err.msg);
  kc_assert_close(&out[0], y, D(2, c->m, 5, 6), 4, 1e-5, 1e-6, what);
  if (c->h_is_output)
    kc_assert_close(&out[1], h, D(2, c->m, 5, 6), 4, 1e-5, 1e-6, what);
  for (int i = 0; i < (c->h_is_output ? 2 : 1); i++) ts_tensor_free(&out[i]);
  ts_session_free(s);
  return model;
}

/* Conv + inference BatchNormalization with constant parameters load as one
 * Conv whose weights and bias are the fold computed in float64 and rounded
 * once, with and without a Conv bias, grouped or not; the folded model
 * matches the float64 reference of the two ops at rtol 1e-5. */
START_TEST(batch_norm_folds_into_conv) {
  kc_rng r = kc_rng_seed(110);
  for (int bias = 0; bias < 2; bias++)
    for (int64_t group = 1; group <= 2; group++) {
      conv_bn c = {.c = 4, .m = 6, .group = group, .bias = bias};
      char what[64];
      snprintf(what, sizeof what, "fold (bias %d, group %lld)", bias,
               (long long)group);
      ts_model *model = conv_bn_check(&c, &r, 1, what);
      /* The folded constants, against the formula in float64. */
      const ts_graph *g = &model->graph;
      const ts_node *conv = &g->nodes[0];
      ck_assert_str_eq(conv->op_type, "Conv");
      ck_assert_int_eq(conv->n_inputs, 3);
      ck_assert_int_eq(conv->outputs[0], ts_graph_find_value(g, "y"));
      const ts_tensor *w = g->values[conv->inputs[1]].constant,
                      *b = g->values[conv->inputs[2]].constant;
      ck_assert_ptr_nonnull(w);
      ck_assert_ptr_nonnull(b);
      const float *w0 = c.w.data, *b0 = c.b.data, *sc = c.bn[0].data,
                  *be = c.bn[1].data, *mu = c.bn[2].data, *va = c.bn[3].data;
      const int64_t per = ts_tensor_numel(&c.w) / c.m;
      for (int64_t m = 0; m < c.m; m++) {
        const double k = (double)sc[m] / sqrt((double)va[m] + (double)1e-3f);
        for (int64_t i = 0; i < per; i++)
          ck_assert_float_eq(((const float *)w->data)[m * per + i],
                             (float)(w0[m * per + i] * k));
        ck_assert_float_eq(((const float *)b->data)[m],
                           (float)(((bias ? b0[m] : 0.0) - mu[m]) * k + be[m]));
      }
      ts_model_free(model);
      conv_bn_free(&c);
    }
}
END_TEST

/* No fold where it would be wrong or visible: a parameter that is not
 * constant, the Conv's output read elsewhere (here: a graph output), the
 * Conv's weight shared with another Conv. Both ops stay and the answers
 * still match the reference. */
START_TEST(batch_norm_not_folded) {
  kc_rng r = kc_rng_seed(111);
  conv_bn a = {.c = 4, .m = 6, .group = 1, .bias = true, .mean_is_input = true};
  ts_model_free(conv_bn_check(&a, &r, 2, "mean not constant"));
  conv_bn_free(&a);
  conv_bn b = {.c = 4, .m = 6, .group = 2, .h_is_output = true};
  ts_model_free(conv_bn_check(&b, &r, 2, "conv output also a graph output"));
  conv_bn_free(&b);
  conv_bn c = {.c = 4, .m = 6, .group = 1, .w_shared = true};
  ts_model_free(conv_bn_check(&c, &r, 3, "weight shared by two convs"));
  conv_bn_free(&c);
}
END_TEST

/* ---- a real PyTorch export ------------------------------------------------ */

static const char *export_script =
    "import sys, torch, numpy as np\n"
    "d = sys.argv[1]\n"
    "torch.manual_seed(0)\n"
    "class Net(torch.nn.Module):\n"
    "    def __init__(s):\n"
    "        super().__init__()\n"
    "        s.l1 = torch.nn.Linear(6, 16)\n"
    "        s.l2 = torch.nn.Linear(16, 5)\n"
    "    def forward(s, x):\n"
    "        x = x.reshape(x.shape[0], -1)\n"
    "        return s.l2(torch.relu(s.l1(x)))\n"
    "m = Net().eval()\n"
    "x = torch.randn(3, 2, 3)\n"
    "torch.onnx.export(m, x, d + '/mlp.onnx', opset_version=13,\n"
    "    input_names=['x'], output_names=['y'],\n"
    "    dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}})\n"
    "for n in (3, 7):\n"
    "    x = torch.randn(n, 2, 3)\n"
    "    x.numpy().astype('<f4').tofile(d + '/x%d.bin' % n)\n"
    "    with torch.no_grad():\n"
    "        m(x).numpy().astype('<f4').tofile(d + '/y%d.bin' % n)\n";

static void *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  void *b = malloc(*len + 1);
  ck_assert_uint_eq(fread(b, 1, *len, f), *len);
  fclose(f);
  return b;
}

/* Runs a torch export script with a fresh directory (dir, a mkdtemp
 * template) as its argument; fails the test with the script's stderr. */
/* Runs model (input "x") in session s on dir/x_file (float32, shape xd)
 * and compares the output with torch's in dir/y_file (shape yd) at rtol
 * 1e-5. */
static void expect_torch_output(const ts_model *model, ts_session *s,
                                const char *dir, const char *x_file,
                                const int64_t *xd, int x_rank,
                                const char *y_file, const int64_t *yd,
                                int y_rank, const char *what) {
  char path[300];
  size_t xl, yl;
  snprintf(path, sizeof path, "%s/%s", dir, x_file);
  float *xv = read_all(path, &xl);
  snprintf(path, sizeof path, "%s/%s", dir, y_file);
  float *yv = read_all(path, &yl);
  const int64_t ny = ts_shape_numel(yd, y_rank);
  ck_assert_uint_eq(xl, (size_t)ts_shape_numel(xd, x_rank) * 4);
  ck_assert_uint_eq(yl, (size_t)ny * 4);
  ts_tensor x, out;
  ts_err err;
  ck_assert_int_eq(ts_tensor_view(&x, TS_DTYPE_FLOAT, xd, x_rank, xv, &err),
                   0);
  const char *names[] = {"x"};
  ck_assert_msg(ts_exec_run(model, s, names, &x, 1, NULL, &out, 0, &err) == 0,
                "%s: %s", what, err.msg);
  double *ref = malloc((size_t)ny * sizeof *ref);
  ck_assert_ptr_nonnull(ref);
  for (int64_t i = 0; i < ny; i++) ref[i] = yv[i];
  kc_assert_close(&out, ref, yd, y_rank, 1e-5, 1e-6, what);
  free(ref);
  free(xv);
  free(yv);
}

static void run_torch_script(const char *text, char *dir) {
  ck_assert_msg(access("/usr/bin/python3", X_OK) == 0,
                "/usr/bin/python3 is missing: cannot export the PyTorch model");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char script[256], cmd[768];
  snprintf(script, sizeof script, "%s/export.py", dir);
  FILE *f = fopen(script, "w");
  fputs(text, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s 2>%s/err.txt", script,
           dir, dir);
  int st = system(cmd);
  if (st != 0) {
    char ep[300];
    snprintf(ep, sizeof ep, "%s/err.txt", dir);
    size_t el;
    char *e = read_all(ep, &el);
    e[el] = '\0';
    ck_abort_msg("torch export failed (%d): %.400s", st, e);
  }
}

START_TEST(pytorch_mlp_matches_torch) {
  char dir[] = "/tmp/test_graph_torch_XXXXXX";
  run_torch_script(export_script, dir);
  char path[300];
  snprintf(path, sizeof path, "%s/mlp.onnx", dir);
  ts_model *model;
  ts_err err;
  ck_assert_msg(ts_model_load_file(path, &model, &err) == 0, "%s", err.msg);
  int y = ts_graph_find_value(&model->graph, "y");
  ck_assert_int_eq(model->graph.values[y].rank, 2);
  ck_assert_int_eq(model->graph.values[y].dims[0], -1);
  ck_assert_int_eq(model->graph.values[y].dims[1], 5);
  /* torch exports the reshape as Shape/Gather/Unsqueeze/Concat -> Reshape;
   * inference must see through it: [batch, 6] */
  int reshaped = -1;
  for (int i = 0; i < model->graph.n_nodes; i++)
    if (strcmp(model->graph.nodes[i].op_type, "Reshape") == 0)
      reshaped = model->graph.nodes[i].outputs[0];
  ck_assert_int_ge(reshaped, 0);
  ck_assert_int_eq(model->graph.values[reshaped].rank, 2);
  ck_assert_int_eq(model->graph.values[reshaped].dims[0], -1);
  ck_assert_int_eq(model->graph.values[reshaped].dims[1], 6);
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  const int batches[] = {3, 7, 3};
  for (int bi = 0; bi < 3; bi++) {
    int n = batches[bi];
    char xf[16], yf[16];
    snprintf(xf, sizeof xf, "x%d.bin", n);
    snprintf(yf, sizeof yf, "y%d.bin", n);
    expect_torch_output(model, s, dir, xf, D(n, 2, 3), 3, yf, D(n, 5), 2,
                        "torch mlp");
  }
  ts_session_free(s);
  ts_model_free(model);
  ts_check_rmtree(dir);
}
END_TEST

/* Conv -> BatchNorm -> ReLU -> Conv(stride 2, bias) -> BatchNorm, exported
 * with the BatchNorms kept (training=PRESERVE in eval mode, no constant
 * folding), as export_models.py exports its ResNet. */
static const char *conv_bn_script =
    "import sys, torch\n"
    "d = sys.argv[1]\n"
    "torch.manual_seed(0)\n"
    "m = torch.nn.Sequential(\n"
    "    torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),\n"
    "    torch.nn.BatchNorm2d(8), torch.nn.ReLU(),\n"
    "    torch.nn.Conv2d(8, 4, 3, stride=2, padding=1),\n"
    "    torch.nn.BatchNorm2d(4))\n"
    "for b in (m[1], m[4]):\n"
    "    with torch.no_grad():\n"
    "        b.running_mean.uniform_(-0.5, 0.5)\n"
    "        b.running_var.uniform_(0.5, 2.0)\n"
    "        b.weight.uniform_(0.5, 1.5)\n"
    "        b.bias.uniform_(-0.2, 0.2)\n"
    "m.eval()\n"
    "x = torch.randn(2, 3, 9, 10)\n"
    "torch.onnx.export(m, x, d + '/cbn.onnx', opset_version=13,\n"
    "    input_names=['x'], output_names=['y'], do_constant_folding=False,\n"
    "    training=torch.onnx.TrainingMode.PRESERVE)\n"
    "x.numpy().astype('<f4').tofile(d + '/x.bin')\n"
    "with torch.no_grad():\n"
    "    m(x).numpy().astype('<f4').tofile(d + '/y.bin')\n";

/* A real torch export with Conv + BatchNorm pairs: both BatchNorms are
 * folded at load and the folded model matches torch at rtol 1e-5. */
START_TEST(pytorch_conv_bn_folds_and_matches_torch) {
  char dir[] = "/tmp/test_graph_torch_XXXXXX", path[300];
  run_torch_script(conv_bn_script, dir);
  snprintf(path, sizeof path, "%s/cbn.onnx", dir);
  ts_model *model;
  ts_err err;
  ck_assert_msg(ts_model_load_file(path, &model, &err) == 0, "%s", err.msg);
  int convs = 0;
  for (int i = 0; i < model->graph.n_nodes; i++) {
    const char *op = model->graph.nodes[i].op_type;
    ck_assert_msg(strcmp(op, "BatchNormalization") != 0,
                  "BatchNormalization node %d was not folded", i);
    convs += strcmp(op, "Conv") == 0;
  }
  ck_assert_int_eq(convs, 2);
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  expect_torch_output(model, s, dir, "x.bin", D(2, 3, 9, 10), 4, "y.bin",
                      D(2, 4, 5, 5), 4, "torch conv+bn");
  ts_session_free(s);
  ts_model_free(model);
  ts_check_rmtree(dir);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(
      s, "load", 120, NULL, NULL, good_model_loads, corrupt_and_truncated_bytes,
      nesting_limit, deep_model_refused_by_loaders, unknown_op, bad_attributes,
      structure_errors, versions, constant_folding, fold_limit_refuses_bombs,
      fold_limit_counts_every_folded_constant, batch_norm_folds_into_conv,
      batch_norm_not_folded, nodes_out_of_order_are_sorted,
      shape_arithmetic_inference, output_shape_from_value_info, load_file,
      load_in_place, pytorch_mlp_matches_torch, pytorch_conv_bn_folds_and_matches_torch);
  TS_CHECK_CASE(s, "wire", 30, NULL, NULL, varint_encoding);
}

const ts_check_suite ts_check_this_suite = {.name = "graph", .cases = cases};
