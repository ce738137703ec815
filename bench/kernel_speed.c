/*
 * kernel_speed.c - GFLOP/s of the two kernels most models spend their time
 * in, with the OpenBLAS kernel set in use:
 *
 *   - a 64->64 3x3 Conv (pads 1) on 1x64x56x56, the shape of a ResNet
 *     stage-1 block, through the real loader and executor, for >= 1 s
 *     (OpenBLAS's default thread count);
 *   - sgemm 1024^3 on one thread (the worker's per-kernel-thread budget),
 *     best of 3 after a warm-up.
 *
 * Wall time, so run it on a quiet machine; it asserts nothing (the kernels'
 * correctness is tests/test_blas.c's and tests/test_kernels_cnn.c's). The
 * kernel set is chosen as in the daemons; OPENBLAS_CORETYPE=PRESCOTT forces
 * the generic kernels a misdetected CPU would get (bench/README.md).
 *
 *   build/bench/kernel_speed
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "exec.h"
#include "graph.h"
#include "onnx.pb-c.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Deterministic values in [-0.5, 0.5). */
static void fill(float *v, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    v[i] = (float)((seed >> 16) & 0x7fff) / 32768.0f - 0.5f;
  }
}

static int sgemm_speed(int n) {
  size_t nn = (size_t)n * (size_t)n;
  float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b),
        *c = malloc(nn * sizeof *c);
  if (!a || !b || !c) {
    free(a), free(b), free(c);
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  fill(a, nn, 1), fill(b, nn, 2);
  ts_blas_set_threads(1);
  double best = 1e30;
  for (int rep = 0; rep < 4; rep++) { /* rep 0 warms up */
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
                b, n, 0.0f, c, n);
    double t = now_s() - t0;
    if (rep > 0 && t < best) best = t;
  }
  printf("sgemm %d^3, 1 thread, core %s: %.1f GFLOP/s\n", n,
         ts_blas_core_name(), 2.0 * n * (double)n * n / best / 1e9);
  free(a), free(b), free(c);
  return 0;
}

/* A float initializer over the caller's arrays (they must outlive every
 * use of the returned message; nothing is copied or freed). */
static Onnx__TensorProto initializer(const char *name, int64_t *dims,
                                     size_t rank, float *data, size_t n) {
  Onnx__TensorProto t = ONNX__TENSOR_PROTO__INIT;
  t.name = (char *)name;
  t.has_data_type = 1, t.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  t.n_dims = rank;
  t.dims = dims;
  t.has_raw_data = 1;
  t.raw_data.data = (uint8_t *)data;
  t.raw_data.len = n * sizeof *data;
  return t;
}

static int conv_speed(void) {
  enum { C = 64, H = 56, K = 3 };
  static float w[C * C * K * K], bias[C];
  fill(w, sizeof w / sizeof *w, 3), fill(bias, C, 4);
  int64_t wd[4] = {C, C, K, K}, bd[1] = {C}, xd[4] = {1, C, H, H},
          pads[4] = {1, 1, 1, 1};
  Onnx__TensorProto wt = initializer("w", wd, 4, w, sizeof w / sizeof *w),
                    bt = initializer("b", bd, 1, bias, C);
  Onnx__TensorProto *inits[2] = {&wt, &bt};

  Onnx__TensorShapeProto__Dimension dim[4], *dimp[4];
  for (int d = 0; d < 4; d++) {
    Onnx__TensorShapeProto__Dimension z =
        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
    dim[d] = z;
    dim[d].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    dim[d].dim_value = xd[d];
    dimp[d] = &dim[d];
  }
  Onnx__TensorShapeProto shape = ONNX__TENSOR_SHAPE_PROTO__INIT;
  shape.n_dim = 4, shape.dim = dimp;
  Onnx__TypeProto__Tensor tt = ONNX__TYPE_PROTO__TENSOR__INIT;
  tt.has_elem_type = 1, tt.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt.shape = &shape;
  Onnx__TypeProto type = ONNX__TYPE_PROTO__INIT;
  type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, type.tensor_type = &tt;
  Onnx__ValueInfoProto x = ONNX__VALUE_INFO_PROTO__INIT,
                       y = ONNX__VALUE_INFO_PROTO__INIT;
  x.name = "x", x.type = &type;
  y.name = "y";
  Onnx__ValueInfoProto *xs[1] = {&x}, *ys[1] = {&y};

  Onnx__AttributeProto pad = ONNX__ATTRIBUTE_PROTO__INIT;
  pad.name = "pads", pad.has_type = 1;
  pad.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  pad.n_ints = 4, pad.ints = pads;
  Onnx__AttributeProto *attrs[1] = {&pad};
  char *node_in[3] = {"x", "w", "b"}, *node_out[1] = {"y"};
  Onnx__NodeProto node = ONNX__NODE_PROTO__INIT;
  node.op_type = "Conv", node.name = "conv";
  node.n_input = 3, node.input = node_in;
  node.n_output = 1, node.output = node_out;
  node.n_attribute = 1, node.attribute = attrs;
  Onnx__NodeProto *nodes[1] = {&node};

  Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
  graph.name = "conv";
  graph.n_node = 1, graph.node = nodes;
  graph.n_initializer = 2, graph.initializer = inits;
  graph.n_input = 1, graph.input = xs;
  graph.n_output = 1, graph.output = ys;
  Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
  opset.domain = "", opset.has_version = 1, opset.version = 13;
  Onnx__OperatorSetIdProto *opsets[1] = {&opset};
  Onnx__ModelProto mp = ONNX__MODEL_PROTO__INIT;
  mp.has_ir_version = 1, mp.ir_version = 8;
  mp.n_opset_import = 1, mp.opset_import = opsets;
  mp.graph = &graph;

  size_t len = onnx__model_proto__get_packed_size(&mp);
  uint8_t *bytes = malloc(len);
  ts_model *m = NULL;
  ts_session *s = NULL;
  ts_tensor in = {0}, out;
  ts_err err;
  int rc = bytes ? 0 : TS_ENOMEM;
  if (!rc) onnx__model_proto__pack(&mp, bytes);
  if (!rc) rc = ts_model_load(bytes, len, &m, &err);
  free(bytes);
  if (!rc) rc = ts_tensor_alloc(&in, TS_DTYPE_FLOAT, xd, 4, &err);
  if (!rc) fill(in.data, (size_t)ts_tensor_numel(&in), 5);
  if (!rc) rc = ts_session_create(&s, &err);
  const char *in_name = "x", *out_name = "y";
  /* The first run plans the session's arena; it is not timed. */
  if (!rc) rc = ts_exec_run(m, s, &in_name, &in, 1, &out_name, &out, 1, &err);
  int iters = 0;
  const double start = now_s();
  double elapsed = 0.0;
  while (!rc && (elapsed < 1.0 || iters < 3)) {
    rc = ts_exec_run(m, s, &in_name, &in, 1, &out_name, &out, 1, &err);
    iters++;
    elapsed = now_s() - start;
  }
  if (rc) {
    fprintf(stderr, "conv: %s\n", err.msg);
  } else {
    const double flops = 2.0 * C * C * K * K * H * H;
    printf(
        "conv 64->64 3x3 on 56x56: %.1f GFLOP/s (%.2f ms/run, %d runs; "
        "OpenBLAS core %s, %d threads)\n",
        flops * iters / elapsed * 1e-9, elapsed / iters * 1e3, iters,
        ts_blas_core_name(), openblas_get_num_threads());
  }
  ts_session_free(s);
  ts_tensor_free(&in);
  ts_model_free(m);
  return rc ? 1 : 0;
}

int main(int argc, char **argv) {
  ts_blas_select_kernels(argc, argv); /* may re-exec with faster kernels */
  int rc = conv_speed(); /* first: with the library's default threads */
  return sgemm_speed(1024) || rc;
}
