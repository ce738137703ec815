/*
 * seeds.c - writes the fuzz targets' seed corpora, made at build time from
 * real requests and models (nothing binary is committed):
 *   fuzz_seeds OUTDIR SOURCE_ROOT
 * makes OUTDIR/<target>/ for every target in tests/fuzz/meson.build and
 * OUTDIR/run_shard.dict (the held shard's id, which a mutation cannot
 * guess). ONNX models come from the bundled example repository and from
 * tests/kernel_check.h's builders: an initializer in raw_data (the in-place
 * path), one with an external data reference, If subgraph attributes
 * nested two deep. Requests are packed with the generated protobuf-c code,
 * as the clients and the coordinator send them. kernel_check.h's builders
 * assert with Check, so the writing runs as the one test of a suite on the
 * shared runner (check_main.h), its arguments read before the suite.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check_main.h"
#include "hash.h"
#include "inference.pb-c.h"
#include "kernel_check.h"
#include "npy.h"
#include "wire.h"
#include "worker.pb-c.h"

static const char *outdir, *source_root;

static void put(const char *target, const char *name, const void *data,
                size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", outdir, target);
  if (mkdir(path, 0755) && errno != EEXIST) abort();
  snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
    fprintf(stderr, "fuzz_seeds: cannot write %s\n", path);
    exit(1);
  }
}

static uint8_t *slurp(const char *root, const char *rel, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  FILE *f = fopen(path, "rb");
  if (!f || fseek(f, 0, SEEK_END)) goto fail;
  long n = ftell(f);
  uint8_t *b = malloc((size_t)n + 1);
  if (n < 0 || !b || fseek(f, 0, SEEK_SET) ||
      fread(b, 1, (size_t)n, f) != (size_t)n)
    goto fail;
  fclose(f);
  b[n] = 0;
  *len = (size_t)n;
  return b;
fail:
  fprintf(stderr, "fuzz_seeds: cannot read %s\n", path);
  exit(1);
}

static void put_message(const char *target, const char *name,
                        const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(len + 1);
  protobuf_c_message_pack(m, b);
  put(target, name, b, len);
  free(b);
}

static void put_model(const char *name, Onnx__ModelProto *m) {
  size_t len;
  uint8_t *b = kc_model_pack(m, &len);
  put("onnx", name, b, len);
  free(b);
  kc_model_free(m);
}

/* ---- ONNX --------------------------------------------------------------- */

static Onnx__ModelProto *gemm_model(void) {
  static const int64_t xd[2] = {-1, 4}, yd[2] = {-1, 3};
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, xd);
  kc_model_output(m, "y", TS_DTYPE_FLOAT, 2, yd);
  ts_tensor w, b;
  kc_rng r = kc_rng_seed(1);
  kc_tensor_rand(&w, TS_DTYPE_FLOAT, 2, (int64_t[]){4, 3}, &r, -1, 1);
  kc_tensor_rand(&b, TS_DTYPE_FLOAT, 1, (int64_t[]){3}, &r, -1, 1);
  kc_model_init(m, "w", &w);
  kc_model_init(m, "b", &b);
  ts_tensor_free(&w);
  ts_tensor_free(&b);
  Onnx__NodeProto *n = kc_model_node(m, "Gemm", "", "gemm", "x,w,b", "h");
  kc_attr_float(n, "alpha", 1.0f);
  kc_model_node(m, "Relu", "", "relu", "h", "y");
  return m;
}

/* An If whose branches are graphs, the then-branch holding another If. */
static Onnx__GraphProto *branch(const char *out, int depth) {
  static const int64_t d[1] = {2};
  Onnx__ModelProto *m = kc_model_new(0);
  kc_model_output(m, out, TS_DTYPE_FLOAT, 1, d);
  ts_tensor t;
  kc_tensor_from(&t, TS_DTYPE_FLOAT, 1, d, (double[]){1, 2});
  Onnx__NodeProto *n = kc_model_node(m, "Constant", "", "c", "", out);
  kc_attr_tensor(n, "value", &t);
  ts_tensor_free(&t);
  if (depth > 0) {
    Onnx__NodeProto *inner = kc_model_node(m, "If", "", "inner", "cond",
                                           "unused");
    kc_attr_new(inner, "then_branch",
                ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH)->g =
        branch("t", depth - 1);
    kc_attr_new(inner, "else_branch",
                ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH)->g =
        branch("e", depth - 1);
  }
  Onnx__GraphProto *g = m->graph;
  m->graph = NULL;
  kc_model_free(m);
  return g;
}

static void onnx_seeds(const char *root) {
  size_t len;
  uint8_t *b = slurp(root, "examples/models/mlp/model.onnx", &len);
  put("onnx", "mlp.onnx", b, len);
  free(b);
  put_model("gemm.onnx", gemm_model());

  Onnx__ModelProto *ext = gemm_model();
  Onnx__TensorProto *w = ext->graph->initializer[0];
  w->has_raw_data = 0;
  w->has_data_location = 1;
  w->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  static const char *keys[3] = {"location", "offset", "length"};
  static const char *vals[3] = {"weights.bin", "0", "48"};
  for (int i = 0; i < 3; i++) {
    Onnx__StringStringEntryProto *e = malloc(sizeof *e);
    onnx__string_string_entry_proto__init(e);
    e->key = kc_strdup(keys[i]);
    e->value = kc_strdup(vals[i]);
    KC_PUSH(w->external_data, w->n_external_data, e);
  }
  put_model("external_data.onnx", ext);

  static const int64_t one[1] = {1}, two[1] = {2};
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "cond", TS_DTYPE_BOOL, 1, one);
  kc_model_output(m, "y", TS_DTYPE_FLOAT, 1, two);
  Onnx__NodeProto *n = kc_model_node(m, "If", "", "if", "cond", "y");
  kc_attr_new(n, "then_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH)
      ->g = branch("t", 2);
  kc_attr_new(n, "else_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH)
      ->g = branch("e", 1);
  put_model("if_subgraphs.onnx", m);
}

/* ---- .npy and config.ini ------------------------------------------------ */

static void npy_seeds(const char *root) {
  size_t len;
  uint8_t *b = slurp(root, "examples/models/mlp/input.npy", &len);
  put("npy", "mlp_input.npy", b, len);
  free(b);
  static const ts_dtype types[] = {
      TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE, TS_DTYPE_INT8,
      TS_DTYPE_INT16, TS_DTYPE_INT32, TS_DTYPE_INT64, TS_DTYPE_UINT8,
      TS_DTYPE_UINT16, TS_DTYPE_UINT32, TS_DTYPE_UINT64, TS_DTYPE_BOOL};
  kc_rng r = kc_rng_seed(2);
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    ts_tensor t;
    int rank = (int)(i % 4);
    kc_tensor_rand(&t, types[i], rank, (int64_t[]){2, 3, 1, 2}, &r, -1, 1);
    uint8_t *img;
    ts_err err = {0};
    if (ts_npy_encode(&t, &img, &len, &err)) abort();
    char name[32];
    snprintf(name, sizeof name, "%s_r%d.npy", ts_dtype_name(types[i]), rank);
    put("npy", name, img, len);
    free(img);
    ts_tensor_free(&t);
  }
}

static void config_seeds(const char *root) {
  static const char *examples[] = {"mlp", "mlp_ensemble", "mlp_tensor"};
  for (int i = 0; i < 3; i++) {
    char rel[128];
    size_t len;
    snprintf(rel, sizeof rel, "examples/models/%s/config.ini", examples[i]);
    uint8_t *b = slurp(root, rel, &len);
    put("config", examples[i], b, len);
    free(b);
  }
  static const char *more[] = {
      "[model]\nstrategy = block\ngrid = 2x3\nreplicas = 1\n",
      "strategy = hybrid\nshards = 4\nstages = 3\nversion = 7\n",
      "ensemble = a+b+c\nfuse = weighted_mean\nweights = 0.5+0.25+0.25\n",
      "ensemble = a+b\nfuse = vote\n",
      "strategy = pipeline\nstages = 2\nmax_batch = 8\nbatch_delay_us = 100\n",
      "strategy = auto\n; a comment\n# another\n",
  };
  for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
    char name[16];
    snprintf(name, sizeof name, "keys%zu", i);
    put("config", name, more[i], strlen(more[i]));
  }
}

/* ---- ModelInfer --------------------------------------------------------- */

typedef Inference__ModelInferRequest__InferInputTensor infer_input;

static void infer_seeds(void) {
  /* mlp: input FP32 [2, 32], raw. */
  Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
  infer_input in[5], *ins[5];
  for (int i = 0; i < 5; i++) {
    inference__model_infer_request__infer_input_tensor__init(&in[i]);
    ins[i] = &in[i];
  }
  float x[64] = {0};
  for (int i = 0; i < 64; i++) x[i] = (float)i / 8;
  int64_t shape[2] = {2, 32};
  in[0].name = "embedding", in[0].datatype = "FP32", in[0].shape = shape;
  in[0].n_shape = 2;
  ProtobufCBinaryData raw[5] = {{sizeof x, (uint8_t *)x}};
  req.model_name = "mlp";
  req.id = "seed-1";
  req.inputs = ins, req.n_inputs = 1;
  req.raw_input_contents = raw, req.n_raw_input_contents = 1;
  put_message("model_infer", "mlp_raw", &req.base);
  /* The same with typed contents and a requested output. */
  Inference__InferTensorContents typed[5];
  for (int i = 0; i < 5; i++) inference__infer_tensor_contents__init(&typed[i]);
  typed[0].fp32_contents = x, typed[0].n_fp32_contents = 64;
  in[0].contents = &typed[0];
  req.n_raw_input_contents = 0;
  Inference__ModelInferRequest__InferRequestedOutputTensor out, *outs[1] = {&out};
  inference__model_infer_request__infer_requested_output_tensor__init(&out);
  out.name = "log_probs";
  req.outputs = outs, req.n_outputs = 1;
  put_message("model_infer", "mlp_typed", &req.base);

  /* mixed: every binding path, typed. */
  int64_t sx[2] = {1, 3}, sf[1] = {2}, si[1] = {3}, ss[3] = {1, 2, 2},
          sw[1] = {4};
  float fx[3] = {1, 2, 3};
  protobuf_c_boolean fb[2] = {1, 0};
  int64_t ids[3] = {-1, 0, 1LL << 40};
  int32_t small[4] = {-128, 127, 0, 1};
  uint32_t wide[4] = {0, 65535, 1, 2};
  const struct {
    const char *name, *datatype;
    int64_t *shape;
    size_t rank;
  } mixed[5] = {{"x", "FP32", sx, 2}, {"flags", "BOOL", sf, 1}, {"ids", "INT64", si, 1},
                {"small", "INT8", ss, 3}, {"wide", "UINT16", sw, 1}};
  in[0] = (infer_input)INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
  for (int i = 0; i < 5; i++) {
    in[i].name = (char *)mixed[i].name, in[i].datatype = (char *)mixed[i].datatype;
    in[i].shape = mixed[i].shape, in[i].n_shape = mixed[i].rank;
    in[i].contents = &typed[i];
  }
  typed[0].fp32_contents = fx, typed[0].n_fp32_contents = 3;
  typed[1].bool_contents = fb, typed[1].n_bool_contents = 2;
  typed[2].int64_contents = ids, typed[2].n_int64_contents = 3;
  typed[3].int_contents = small, typed[3].n_int_contents = 4;
  typed[4].uint_contents = wide, typed[4].n_uint_contents = 4;
  req.model_name = "mixed";
  req.inputs = ins, req.n_inputs = 5;
  req.n_outputs = 0;
  put_message("model_infer", "mixed_typed", &req.base);
  /* mixed, raw contents for all five. */
  uint8_t fb8[2] = {1, 0};
  int8_t small8[4] = {-128, 127, 0, 1};
  uint16_t wide16[4] = {0, 65535, 1, 2};
  raw[0] = (ProtobufCBinaryData){sizeof fx, (uint8_t *)fx};
  raw[1] = (ProtobufCBinaryData){sizeof fb8, fb8};
  raw[2] = (ProtobufCBinaryData){sizeof ids, (uint8_t *)ids};
  raw[3] = (ProtobufCBinaryData){sizeof small8, (uint8_t *)small8};
  raw[4] = (ProtobufCBinaryData){sizeof wide16, (uint8_t *)wide16};
  for (int i = 0; i < 5; i++) in[i].contents = NULL;
  req.raw_input_contents = raw, req.n_raw_input_contents = 5;
  put_message("model_infer", "mixed_raw", &req.base);
}

/* ---- LoadShard and RunShard --------------------------------------------- */

/* A LoadShard stream of `bytes` as the coordinator sends it (a header in
 * the first chunk, then `chunk`-byte pieces), in fuzz_load_shard's framing:
 * each message after its 4-byte little-endian length. */
static void put_stream(const char *name, const uint8_t *bytes, size_t len,
                       size_t chunk, const char *label) {
  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(bytes, len, id);
  size_t cap = len + 4096 + (len / chunk + 1) * 256, used = 0;
  uint8_t *out = malloc(cap);
  for (size_t off = 0; off < len; off += chunk) {
    Tessera__Worker__V1__LoadShardChunk c =
        TESSERA__WORKER__V1__LOAD_SHARD_CHUNK__INIT;
    if (off == 0) {
      c.shard_id = id;
      c.total_bytes = len;
      c.label = (char *)label;
    }
    c.offset = off;
    c.data.data = (uint8_t *)bytes + off;
    c.data.len = len - off < chunk ? len - off : chunk;
    size_t n = tessera__worker__v1__load_shard_chunk__get_packed_size(&c);
    for (int i = 0; i < 4; i++) out[used++] = (uint8_t)(n >> (8 * i));
    used += tessera__worker__v1__load_shard_chunk__pack(&c, out + used);
  }
  put("load_shard", name, out, used);
  free(out);
}

static void shard_seeds(const char *root) {
  size_t len;
  uint8_t *mlp = slurp(root, "examples/models/mlp/model.onnx", &len);
  put_stream("mlp_held", mlp, len, 8192, "mlp");
  Onnx__ModelProto *m = gemm_model();
  size_t glen;
  uint8_t *g = kc_model_pack(m, &glen);
  kc_model_free(m);
  put_stream("gemm_new", g, glen, 64, "gemm");
  put_stream("gemm_one_chunk", g, glen, glen, "gemm");
  free(g);

  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(mlp, len, id);
  free(mlp);
  char dict[128];
  int n = snprintf(dict, sizeof dict, "id=\"%s\"\n", id);
  char path[4096];
  snprintf(path, sizeof path, "%s/run_shard.dict", outdir);
  FILE *f = fopen(path, "w");
  if (!f || fwrite(dict, 1, (size_t)n, f) != (size_t)n || fclose(f)) exit(1);

  /* RunShard on the MLP: input [B, 32], outputs by default or named. */
  for (int batch = 1; batch <= 3; batch += 2) {
    ts_tensor x;
    kc_rng r = kc_rng_seed((uint64_t)batch);
    kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, (int64_t[]){batch, 32}, &r, -1, 1);
    Tessera__Worker__V1__Tensor t = TESSERA__WORKER__V1__TENSOR__INIT, *ts[1] = {&t};
    int64_t dims[TS_MAX_RANK];
    ts_wire_tensor_fill(&t, "embedding", &x, dims);
    Tessera__Worker__V1__RunShardRequest req =
        TESSERA__WORKER__V1__RUN_SHARD_REQUEST__INIT;
    req.shard_id = id;
    req.inputs = ts, req.n_inputs = 1;
    char name[32];
    snprintf(name, sizeof name, "mlp_b%d", batch);
    put_message("run_shard", name, &req.base);
    char *outs[1] = {"log_probs"};
    req.outputs = outs, req.n_outputs = 1;
    snprintf(name, sizeof name, "mlp_b%d_named", batch);
    put_message("run_shard", name, &req.base);
    ts_tensor_free(&x);
  }
}

static int before(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fuzz_seeds OUTDIR SOURCE_ROOT\n");
    return 2;
  }
  outdir = argv[1];
  source_root = argv[2];
  return mkdir(outdir, 0755) && errno != EEXIST ? 1 : -1;
}

START_TEST(write_seeds) {
  onnx_seeds(source_root);
  npy_seeds(source_root);
  config_seeds(source_root);
  infer_seeds();
  shard_seeds(source_root);
  char stamp[4096];
  snprintf(stamp, sizeof stamp, "%s.stamp", outdir);
  FILE *f = fopen(stamp, "w");
  ck_assert(f && fclose(f) == 0);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "seeds", 60, NULL, NULL, write_seeds);
}

const ts_check_suite ts_check_this_suite = {
    .name = "fuzz_seeds", .cases = cases, .before = before};
