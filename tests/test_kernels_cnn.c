/*
 * test_kernels_cnn.c - Conv, MaxPool, AveragePool, GlobalAveragePool,
 * GlobalMaxPool, BatchNormalization, Pad, Resize and Upsample.
 *
 * Every kernel runs through the real loader and executor (ts_model_load +
 * ts_exec_run on a one-node ModelProto built here with protobuf-c) and is
 * compared with a naive reference written independently in this file from
 * the ONNX definitions: direct nested-loop convolution in float64, pooling
 * window by window, padding and nearest resizing index by index. Shapes are
 * random (odd sizes, unit dims, 1-3 spatial dims, strides 1-3, dilations
 * 1-2, asymmetric pads, every auto_pad, groups 1/2/depthwise, ceil_mode and
 * count_include_pad both ways), and the batch dim is declared symbolic in
 * the model and fed as 1 or 3, so load-time shape inference must leave it
 * symbolic while inferring every other output dim.
 *
 * Bad input: every unsupported attribute value must fail the load with
 * TS_EUNSUPPORTED naming the attribute, and inconsistent shapes with
 * TS_EINVAL (at load when the shapes are static, at run when a symbolic dim
 * hides them).
 *
 * The conv throughput of a 64->64 3x3 conv on 56x56 is printed (not
 * asserted) with the OpenBLAS kernel set in use.
 */
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "exec.h"
#include "graph.h"
#include "onnx.pb-c.h"

/* ------------------------------------------------------------------------ */
/* Random numbers                                                           */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state = 1;

static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull | 1; }

static uint64_t rng_next(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi]. */
static int64_t rng_int(int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next() % (uint64_t)(hi - lo + 1));
}

/* Uniform in [-1, 1). */
static float rng_float(void) {
  return (float)((double)(rng_next() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *random_floats(int64_t n) {
  float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
  ck_assert_ptr_nonnull(v);
  for (int64_t i = 0; i < n; i++) v[i] = rng_float();
  return v;
}

/* ------------------------------------------------------------------------ */
/* One-node models                                                          */
/* ------------------------------------------------------------------------ */

/* A node input: a constant (initializer), a graph input fed at run time, or
 * omitted (name ""). Bit d of `sym` declares dim d symbolic in the model. */
typedef struct io {
  const char *name;
  ts_dtype dtype;
  int rank;
  int64_t dims[TS_MAX_RANK];
  const void *data;
  bool constant;
  unsigned sym;
} io;

enum { A_INT, A_FLOAT, A_STRING, A_INTS, A_FLOATS };
typedef struct attr {
  const char *name;
  int kind;
  int64_t i;
  float f;
  const char *s;
  const int64_t *ints;
  const float *floats;
  int n;
} attr;
#define AINT(nm, v) ((attr){.name = (nm), .kind = A_INT, .i = (v)})
#define AFLOAT(nm, v) ((attr){.name = (nm), .kind = A_FLOAT, .f = (v)})
#define ASTR(nm, v) ((attr){.name = (nm), .kind = A_STRING, .s = (v)})
#define AINTS(nm, v, c) ((attr){.name = (nm), .kind = A_INTS, .ints = (v), .n = (c)})
#define AFLOATS(nm, v, c) \
  ((attr){.name = (nm), .kind = A_FLOATS, .floats = (v), .n = (c)})

#define MAX_IO 8
#define MAX_ATTRS 16
static char *out_names[] = {"y0", "y1", "y2", "y3", "y4"};

/* Serializes a model with one node `op` (outputs y0..y{n_out-1}). Returns
 * malloc'd bytes. */
static uint8_t *model_bytes(const char *op, int64_t opset, const io *ins,
                            int n_in, int n_out, const attr *attrs, int n_attr,
                            size_t *len) {
  ck_assert_int_le(n_in, MAX_IO);
  ck_assert_int_le(n_attr, MAX_ATTRS);
  Onnx__NodeProto node = ONNX__NODE_PROTO__INIT;
  char *in_names[MAX_IO];
  Onnx__AttributeProto ap[MAX_ATTRS], *app[MAX_ATTRS];
  Onnx__TensorProto tp[MAX_IO], *tpp[MAX_IO];
  Onnx__ValueInfoProto vi[MAX_IO + 5], *in_vi[MAX_IO], *out_vi[5];
  Onnx__TypeProto ty[MAX_IO];
  Onnx__TypeProto__Tensor tt[MAX_IO];
  Onnx__TensorShapeProto sh[MAX_IO];
  Onnx__TensorShapeProto__Dimension dim[MAX_IO][TS_MAX_RANK],
      *dimp[MAX_IO][TS_MAX_RANK];
  char sym_names[MAX_IO][TS_MAX_RANK][16];
  int n_init = 0, n_gin = 0;
  for (int i = 0; i < n_in; i++) {
    in_names[i] = (char *)ins[i].name;
    if (!ins[i].name[0]) continue;
    if (ins[i].constant) {
      Onnx__TensorProto *t = &tp[n_init];
      onnx__tensor_proto__init(t);
      t->name = (char *)ins[i].name;
      t->n_dims = (size_t)ins[i].rank;
      t->dims = (int64_t *)ins[i].dims;
      t->has_data_type = 1;
      t->data_type = (int32_t)ins[i].dtype;
      t->has_raw_data = 1;
      t->raw_data.len = (size_t)ts_shape_nbytes(ins[i].dtype, ins[i].dims,
                                                ins[i].rank);
      t->raw_data.data = (uint8_t *)ins[i].data;
      tpp[n_init++] = t;
      continue;
    }
    const int k = n_gin++;
    onnx__value_info_proto__init(&vi[k]);
    onnx__type_proto__init(&ty[k]);
    onnx__type_proto__tensor__init(&tt[k]);
    onnx__tensor_shape_proto__init(&sh[k]);
    for (int d = 0; d < ins[i].rank; d++) {
      onnx__tensor_shape_proto__dimension__init(&dim[k][d]);
      if (ins[i].sym >> d & 1) {
        snprintf(sym_names[k][d], sizeof sym_names[k][d], "s%d_%d", i, d);
        dim[k][d].value_case =
            ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
        dim[k][d].dim_param = sym_names[k][d];
      } else {
        dim[k][d].value_case =
            ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        dim[k][d].dim_value = ins[i].dims[d];
      }
      dimp[k][d] = &dim[k][d];
    }
    sh[k].n_dim = (size_t)ins[i].rank;
    sh[k].dim = dimp[k];
    tt[k].has_elem_type = 1;
    tt[k].elem_type = (int32_t)ins[i].dtype;
    tt[k].shape = &sh[k];
    ty[k].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    ty[k].tensor_type = &tt[k];
    vi[k].name = (char *)ins[i].name;
    vi[k].type = &ty[k];
    in_vi[k] = &vi[k];
  }
  for (int j = 0; j < n_out; j++) {
    onnx__value_info_proto__init(&vi[MAX_IO + j]);
    vi[MAX_IO + j].name = out_names[j];
    out_vi[j] = &vi[MAX_IO + j];
  }
  for (int a = 0; a < n_attr; a++) {
    Onnx__AttributeProto *p = &ap[a];
    onnx__attribute_proto__init(p);
    p->name = (char *)attrs[a].name;
    p->has_type = 1;
    switch (attrs[a].kind) {
      case A_INT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        p->has_i = 1;
        p->i = attrs[a].i;
        break;
      case A_FLOAT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        p->has_f = 1;
        p->f = attrs[a].f;
        break;
      case A_STRING:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
        p->has_s = 1;
        p->s.len = strlen(attrs[a].s);
        p->s.data = (uint8_t *)attrs[a].s;
        break;
      case A_INTS:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        p->n_ints = (size_t)attrs[a].n;
        p->ints = (int64_t *)attrs[a].ints;
        break;
      default:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
        p->n_floats = (size_t)attrs[a].n;
        p->floats = (float *)attrs[a].floats;
        break;
    }
    app[a] = p;
  }
  node.name = "n0";
  node.op_type = (char *)op;
  node.n_input = (size_t)n_in;
  node.input = in_names;
  node.n_output = (size_t)n_out;
  node.output = out_names;
  node.n_attribute = (size_t)n_attr;
  node.attribute = app;
  Onnx__NodeProto *nodes[] = {&node};
  Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
  graph.name = "g";
  graph.n_node = 1;
  graph.node = nodes;
  graph.n_initializer = (size_t)n_init;
  graph.initializer = tpp;
  graph.n_input = (size_t)n_gin;
  graph.input = in_vi;
  graph.n_output = (size_t)n_out;
  graph.output = out_vi;
  Onnx__OperatorSetIdProto ops = ONNX__OPERATOR_SET_ID_PROTO__INIT;
  ops.domain = "";
  ops.has_version = 1;
  ops.version = opset;
  Onnx__OperatorSetIdProto *opsp[] = {&ops};
  Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
  model.has_ir_version = 1;
  model.ir_version = 8;
  model.n_opset_import = 1;
  model.opset_import = opsp;
  model.graph = &graph;
  *len = onnx__model_proto__get_packed_size(&model);
  uint8_t *bytes = malloc(*len ? *len : 1);
  ck_assert_ptr_nonnull(bytes);
  onnx__model_proto__pack(&model, bytes);
  return bytes;
}

static int load(const char *op, int64_t opset, const io *ins, int n_in,
                int n_out, const attr *attrs, int n_attr, ts_model **m,
                ts_err *err) {
  size_t len;
  uint8_t *bytes = model_bytes(op, opset, ins, n_in, n_out, attrs, n_attr, &len);
  ts_err_clear(err);
  *m = NULL;
  int rc = ts_model_load(bytes, len, m, err);
  free(bytes);
  return rc;
}

/* Runs m on the run-time inputs of ins; outs are views into s. */
static int run(const ts_model *m, ts_session *s, const io *ins, int n_in,
               int n_out, ts_tensor *outs, ts_err *err) {
  const char *names[MAX_IO];
  ts_tensor t[MAX_IO];
  int k = 0;
  for (int i = 0; i < n_in; i++) {
    if (ins[i].constant || !ins[i].name[0]) continue;
    names[k] = ins[i].name;
    ck_assert_int_eq(ts_tensor_view(&t[k], ins[i].dtype, ins[i].dims,
                                    ins[i].rank, (void *)ins[i].data, NULL),
                     0);
    k++;
  }
  memset(outs, 0, (size_t)n_out * sizeof *outs);
  return ts_exec_run(m, s, names, t, k, (const char *const *)out_names, outs,
                     n_out, err);
}

/* Loads and runs a model, expecting success; outs stay valid until the
 * session's next run. */
static void load_and_run(const char *op, int64_t opset, const io *ins, int n_in,
                         int n_out, const attr *attrs, int n_attr,
                         ts_model **m, ts_session *s, ts_tensor *outs) {
  ts_err err;
  int rc = load(op, opset, ins, n_in, n_out, attrs, n_attr, m, &err);
  ck_assert_msg(rc == 0, "%s load: %d %s", op, rc, err.msg);
  rc = run(*m, s, ins, n_in, n_out, outs, &err);
  ck_assert_msg(rc == 0, "%s run: %d %s", op, rc, err.msg);
}

/* Loads and (if that worked) runs; returns the first failure's code, with
 * the message in err. */
static int try_model(const char *op, int64_t opset, const io *ins, int n_in,
                     int n_out, const attr *attrs, int n_attr, ts_err *err) {
  ts_model *m;
  int rc = load(op, opset, ins, n_in, n_out, attrs, n_attr, &m, err);
  if (rc == 0) {
    ts_session *s;
    ck_assert_int_eq(ts_session_create(&s, NULL), 0);
    ts_tensor outs[5];
    rc = run(m, s, ins, n_in, n_out, outs, err);
    ts_session_free(s);
    ts_model_free(m);
  }
  return rc;
}

/* Expects try_model to fail with `code` and a message containing `needle`. */
static void expect_fail(const char *op, int64_t opset, const io *ins, int n_in,
                        int n_out, const attr *attrs, int n_attr, int code,
                        const char *needle) {
  ts_err err;
  int rc = try_model(op, opset, ins, n_in, n_out, attrs, n_attr, &err);
  ck_assert_msg(rc == code, "%s: expected %d (%s), got %d: %s", op, code,
                needle, rc, err.msg);
  ck_assert_msg(strstr(err.msg, needle), "%s: message '%s' lacks '%s'", op,
                err.msg, needle);
}

static io tensor_io(const char *name, ts_dtype dtype, int rank,
                    const int64_t *dims, const void *data, bool constant) {
  io v = {.name = name, .dtype = dtype, .rank = rank, .data = data,
          .constant = constant};
  memcpy(v.dims, dims, (size_t)rank * sizeof *dims);
  return v;
}

static const io omitted = {.name = ""};

/* The inferred (load-time) dims of graph output y0. */
static const ts_value *output_value(const ts_model *m) {
  int v = ts_graph_find_value(&m->graph, "y0");
  ck_assert_int_ge(v, 0);
  return &m->graph.values[v];
}

/* Checks got (float) against want (double) elementwise with the tolerance
 * rtol * mag[i] + atol, mag[i] being the sum of the magnitudes of the terms
 * (or |want[i]| when mag is NULL). */
static void expect_close(const ts_tensor *got, const double *want,
                         const double *mag, int64_t n, double rtol,
                         const char *what) {
  ck_assert_int_eq(got->dtype, TS_DTYPE_FLOAT);
  ck_assert_int_eq(ts_tensor_numel(got), n);
  const float *g = got->data;
  for (int64_t i = 0; i < n; i++) {
    const double tol = rtol * (mag ? mag[i] : fabs(want[i])) + 1e-6;
    if (!(fabs((double)g[i] - want[i]) <= tol) &&
        !(isinf(want[i]) && g[i] == want[i]))
      ck_abort_msg("%s: element %lld: got %.9g, want %.9g", what,
                   (long long)i, (double)g[i], want[i]);
  }
}

static void expect_dims(const ts_tensor *t, const int64_t *dims, int rank,
                        const char *what) {
  ck_assert_msg(t->rank == rank, "%s: rank %d, want %d", what, t->rank, rank);
  for (int d = 0; d < rank; d++)
    ck_assert_msg(t->dims[d] == dims[d], "%s: dim %d is %lld, want %lld", what,
                  d, (long long)t->dims[d], (long long)dims[d]);
}

/* ------------------------------------------------------------------------ */
/* Window geometry, from the ONNX spec                                      */
/* ------------------------------------------------------------------------ */

enum { NOTSET, SAME_UPPER, SAME_LOWER, VALID };
static const char *const auto_pad_str[] = {"NOTSET", "SAME_UPPER",
                                           "SAME_LOWER", "VALID"};

/* A windowed op's case, with leading unit dims up to 3 spatial dims. */
typedef struct wcase {
  int nsp, auto_pad;
  bool ceil, include_pad;
  bool give_strides, give_dilations, give_pads, give_auto_pad, give_kernel;
  int64_t in[3], k[3], s[3], d[3], pb[3], pe[3], out[3];
  int64_t batch;
} wcase;

static int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Output size and effective pads per the ONNX operator docs: explicit pads
 * with floor (or ceil_mode's ceil, a window having to start inside the input
 * or its left pad, as PyTorch and onnxruntime do); VALID
 * ceil((in - eff + 1) / s); SAME ceil(in / s) with the total pad split evenly,
 * the odd one at the end (UPPER) or the start (LOWER). */
static void ref_geometry(wcase *c) {
  for (int j = 0; j < 3; j++) {
    if (j < 3 - c->nsp) continue;
    const int64_t eff = (c->k[j] - 1) * c->d[j] + 1, in = c->in[j];
    if (c->auto_pad == NOTSET) {
      const int64_t span = in + c->pb[j] + c->pe[j] - eff;
      c->out[j] = floor_div(span, c->s[j]) + 1;
      if (c->ceil) {
        c->out[j] = -floor_div(-span, c->s[j]) + 1;
        if ((c->out[j] - 1) * c->s[j] >= in + c->pb[j]) c->out[j]--;
      }
    } else if (c->auto_pad == VALID) {
      c->pb[j] = c->pe[j] = 0;
      c->out[j] = -floor_div(-(in - eff + 1), c->s[j]);
    } else {
      c->out[j] = -floor_div(-in, c->s[j]);
      int64_t total = (c->out[j] - 1) * c->s[j] + eff - in;
      if (total < 0) total = 0;
      const int64_t small = total / 2;
      c->pb[j] = c->auto_pad == SAME_UPPER ? small : total - small;
      c->pe[j] = total - c->pb[j];
    }
  }
}

/* A random geometry. Pads stay below the dilated kernel extent for pools
 * (a window wholly in the padding is pathological); inputs are at least as
 * large as the kernel needs. */
static void random_window(wcase *c, bool pool) {
  memset(c, 0, sizeof *c);
  c->nsp = (int)rng_int(1, 3);
  const int64_t r = rng_int(0, 7);
  c->auto_pad = r < 4 ? NOTSET : (int)(r - 4);
  c->ceil = pool && rng_int(0, 1); /* Conv has no ceil_mode */
  c->include_pad = pool && rng_int(0, 1);
  c->give_strides = rng_int(0, 3) > 0;
  c->give_dilations = rng_int(0, 3) > 0;
  c->give_pads = c->auto_pad == NOTSET && rng_int(0, 5) > 0;
  c->give_auto_pad = c->auto_pad != NOTSET || rng_int(0, 1);
  c->give_kernel = pool || rng_int(0, 1);
  c->batch = rng_int(0, 1) ? 3 : 1;
  for (int j = 0; j < 3; j++) {
    c->in[j] = c->k[j] = c->s[j] = c->d[j] = c->out[j] = 1;
    c->pb[j] = c->pe[j] = 0;
    if (j < 3 - c->nsp) continue;
    const bool small = c->nsp == 3;
    c->k[j] = rng_int(1, small ? 2 : 3);
    c->s[j] = c->give_strides ? rng_int(1, 3) : 1;
    c->d[j] = c->give_dilations ? rng_int(1, 2) : 1;
    const int64_t eff = (c->k[j] - 1) * c->d[j] + 1;
    if (c->give_pads) {
      const int64_t most = pool ? eff - 1 : 2;
      c->pb[j] = rng_int(0, most);
      c->pe[j] = rng_int(0, most);
    }
    int64_t lo = eff - c->pb[j] - c->pe[j];
    if (c->auto_pad == VALID || lo < 1) lo = c->auto_pad == VALID ? eff : 1;
    c->in[j] = rng_int(lo, lo + (small ? 3 : 7));
  }
  ref_geometry(c);
}

/* The window attributes of c; int arrays live in store. */
static int window_attr_list(const wcase *c, bool pool, attr *a,
                            int64_t store[4][6]) {
  int n = 0, off = 3 - c->nsp;
  for (int i = 0; i < c->nsp; i++) {
    store[0][i] = c->k[off + i];
    store[1][i] = c->s[off + i];
    store[2][i] = c->d[off + i];
    store[3][i] = c->pb[off + i];
    store[3][c->nsp + i] = c->pe[off + i];
  }
  if (c->give_kernel) a[n++] = AINTS("kernel_shape", store[0], c->nsp);
  if (c->give_strides) a[n++] = AINTS("strides", store[1], c->nsp);
  if (c->give_dilations) a[n++] = AINTS("dilations", store[2], c->nsp);
  if (c->give_pads) a[n++] = AINTS("pads", store[3], 2 * c->nsp);
  if (c->give_auto_pad) a[n++] = ASTR("auto_pad", auto_pad_str[c->auto_pad]);
  if (pool && c->ceil) a[n++] = AINT("ceil_mode", 1);
  return n;
}

/* Fills dims = (batch, channels, spatial...) of a windowed op's input or
 * output (`sp` = in or out). */
static int nchw_dims(const wcase *c, int64_t channels, const int64_t *sp,
                     int64_t *dims) {
  dims[0] = c->batch;
  dims[1] = channels;
  for (int i = 0; i < c->nsp; i++) dims[2 + i] = sp[3 - c->nsp + i];
  return 2 + c->nsp;
}

/* Appends "in 5x7 k 3x3 s 1x2 d 1x1 pads 0,1/1,0" to buf. */
static void describe(const wcase *c, char *buf, size_t size) {
  size_t used = strlen(buf);
  const char *names[] = {"in", "k", "s", "d", "pb", "pe", "out"};
  const int64_t *vals[] = {c->in, c->k, c->s, c->d, c->pb, c->pe, c->out};
  for (int f = 0; f < 7 && used < size; f++) {
    used += (size_t)snprintf(buf + used, size - used, " %s", names[f]);
    for (int j = 3 - c->nsp; j < 3 && used < size; j++)
      used += (size_t)snprintf(buf + used, size - used, "%s%lld",
                               j > 3 - c->nsp ? "x" : " ", (long long)vals[f][j]);
  }
}

static int64_t vol3(const int64_t *v) { return v[0] * v[1] * v[2]; }

/* Checks that load-time inference left the batch dim symbolic and inferred
 * the rest. */
static void expect_symbolic_batch(const ts_model *m, const int64_t *dims,
                                  int rank, const char *what) {
  const ts_value *v = output_value(m);
  ck_assert_msg(v->rank == rank, "%s: inferred rank %d", what, v->rank);
  ck_assert_msg(v->dims[0] == -1, "%s: batch dim inferred as %lld", what,
                (long long)v->dims[0]);
  for (int d = 1; d < rank; d++)
    ck_assert_msg(v->dims[d] == dims[d],
                  "%s: inferred dim %d is %lld, want %lld", what, d,
                  (long long)v->dims[d], (long long)dims[d]);
}

/* ------------------------------------------------------------------------ */
/* Conv                                                                     */
/* ------------------------------------------------------------------------ */

/* Direct convolution by definition, in double, with mag = sum of |terms|. */
static void ref_conv(const wcase *c, int64_t C, int64_t M, int64_t G,
                     const float *x, const float *w, const float *b, double *y,
                     double *mag) {
  const int64_t cg = C / G, mg = M / G;
  for (int64_t n = 0; n < c->batch; n++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t o0 = 0; o0 < c->out[0]; o0++)
        for (int64_t o1 = 0; o1 < c->out[1]; o1++)
          for (int64_t o2 = 0; o2 < c->out[2]; o2++) {
            double acc = b ? b[m] : 0.0, abs_sum = b ? fabs(b[m]) : 0.0;
            for (int64_t ci = 0; ci < cg; ci++)
              for (int64_t k0 = 0; k0 < c->k[0]; k0++)
                for (int64_t k1 = 0; k1 < c->k[1]; k1++)
                  for (int64_t k2 = 0; k2 < c->k[2]; k2++) {
                    const int64_t i0 = o0 * c->s[0] - c->pb[0] + k0 * c->d[0];
                    const int64_t i1 = o1 * c->s[1] - c->pb[1] + k1 * c->d[1];
                    const int64_t i2 = o2 * c->s[2] - c->pb[2] + k2 * c->d[2];
                    if (i0 < 0 || i0 >= c->in[0] || i1 < 0 || i1 >= c->in[1] ||
                        i2 < 0 || i2 >= c->in[2])
                      continue;
                    const int64_t channel = (m / mg) * cg + ci;
                    const double xv =
                        x[(((n * C + channel) * c->in[0] + i0) * c->in[1] + i1) *
                              c->in[2] + i2];
                    const double wv =
                        w[(((m * cg + ci) * c->k[0] + k0) * c->k[1] + k1) *
                              c->k[2] + k2];
                    acc += xv * wv;
                    abs_sum += fabs(xv * wv);
                  }
            const int64_t at =
                (((n * M + m) * c->out[0] + o0) * c->out[1] + o1) * c->out[2] +
                o2;
            y[at] = acc;
            mag[at] = abs_sum;
          }
}

/* Builds, runs and checks one Conv case. runtime_weights feeds W and B as
 * graph inputs instead of initializers. */
static void check_conv(const wcase *c, int64_t C, int64_t M, int64_t G,
                       bool with_bias, bool runtime_weights, const char *what) {
  int64_t xd[5], wd[5], yd[5], bd[1] = {M};
  const int rank = nchw_dims(c, C, c->in, xd);
  nchw_dims(c, M, c->out, yd);
  wd[0] = M;
  wd[1] = C / G;
  for (int i = 0; i < c->nsp; i++) wd[2 + i] = c->k[3 - c->nsp + i];
  const int64_t nx = ts_shape_numel(xd, rank), nw = ts_shape_numel(wd, rank),
                ny = ts_shape_numel(yd, rank);
  float *x = random_floats(nx), *w = random_floats(nw), *b = random_floats(M);
  double *want = malloc((size_t)(ny + 1) * sizeof *want),
         *mag = malloc((size_t)(ny + 1) * sizeof *mag);
  ref_conv(c, C, M, G, x, w, with_bias ? b : NULL, want, mag);
  io ins[3] = {tensor_io("x", TS_DTYPE_FLOAT, rank, xd, x, false),
               tensor_io("w", TS_DTYPE_FLOAT, rank, wd, w, !runtime_weights),
               with_bias ? tensor_io("b", TS_DTYPE_FLOAT, 1, bd, b,
                                     !runtime_weights)
                         : omitted};
  ins[0].sym = 1; /* symbolic batch */
  attr a[MAX_ATTRS];
  int64_t store[4][6];
  int na = window_attr_list(c, false, a, store);
  if (G > 1 || rng_int(0, 1)) a[na++] = AINT("group", G);
  ts_model *m;
  ts_session *s;
  ts_tensor y;
  ck_assert_int_eq(ts_session_create(&s, NULL), 0);
  load_and_run("Conv", 13, ins, with_bias ? 3 : 2, 1, a, na, &m, s, &y);
  if (!runtime_weights) expect_symbolic_batch(m, yd, rank, what);
  expect_dims(&y, yd, rank, what);
  expect_close(&y, want, mag, ny, 2e-5, what);
  ts_session_free(s);
  ts_model_free(m);
  free(x), free(w), free(b), free(want), free(mag);
}

START_TEST(test_conv_random) {
  rng_seed(11);
  for (int it = 0; it < 300; it++) {
    wcase c;
    random_window(&c, false);
    const int64_t kind = rng_int(0, 2); /* group 1, 2, depthwise */
    int64_t G = kind == 0 ? 1 : kind == 1 ? 2 : rng_int(2, 4);
    int64_t cg = kind == 2 ? 1 : rng_int(1, 3),
            mg = kind == 2 ? rng_int(1, 2) : rng_int(1, 3);
    if (it % 7 == 0) { /* pointwise: a plain sgemm */
      c.auto_pad = NOTSET;
      c.give_pads = false;
      c.give_strides = rng_int(0, 1);
      for (int j = 0; j < 3; j++) {
        c.k[j] = c.s[j] = 1;
        c.pb[j] = c.pe[j] = 0;
      }
      ref_geometry(&c);
    }
    char what[320];
    snprintf(what, sizeof what,
             "conv case %d (G %lld, C %lld, M %lld, auto_pad %s;", it,
             (long long)G, (long long)(G * cg), (long long)(G * mg),
             auto_pad_str[c.auto_pad]);
    describe(&c, what, sizeof what - 1);
    strcat(what, ")");
    check_conv(&c, G * cg, G * mg, G, rng_int(0, 2) > 0, it % 5 == 4, what);
  }
}
END_TEST

/* An im2col buffer larger than one tile: several tiles per (image, group). */
START_TEST(test_conv_tiled) {
  rng_seed(12);
  wcase c;
  memset(&c, 0, sizeof c);
  c.nsp = 2;
  c.batch = 1;
  c.give_kernel = c.give_pads = c.give_strides = true;
  for (int j = 0; j < 3; j++)
    c.in[j] = c.k[j] = c.s[j] = c.d[j] = c.out[j] = 1;
  c.in[1] = 150;
  c.in[2] = 301;
  c.k[1] = c.k[2] = 3;
  c.pb[1] = c.pe[1] = c.pb[2] = 1;
  c.pe[2] = 2;
  ref_geometry(&c);
  /* K = 16 * 9 = 144; one output row is 144 * 302 * 4 bytes ~ 170 KiB, so an
   * 8 MiB tile holds ~48 of the 150 rows. */
  check_conv(&c, 16, 3, 1, true, false, "tiled conv");
}
END_TEST

/* Empty batch: a symbolic batch fed as 0 gives an empty output. */
START_TEST(test_conv_empty_batch) {
  int64_t xd[4] = {0, 2, 5, 5}, wd[4] = {3, 2, 3, 3};
  float w[54] = {0};
  io ins[2] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, NULL, false),
               tensor_io("w", TS_DTYPE_FLOAT, 4, wd, w, true)};
  ins[0].sym = 1;
  ts_model *m;
  ts_session *s;
  ts_tensor y;
  ck_assert_int_eq(ts_session_create(&s, NULL), 0);
  load_and_run("Conv", 13, ins, 2, 1, NULL, 0, &m, s, &y);
  const int64_t yd[4] = {0, 3, 3, 3};
  expect_dims(&y, yd, 4, "empty batch");
  ts_session_free(s);
  ts_model_free(m);
}
END_TEST

START_TEST(test_conv_bad) {
  float buf[4096] = {0};
  int64_t xd[4] = {1, 4, 5, 5}, wd[4] = {6, 2, 3, 3}, bd[1] = {6};
  const int64_t k33[] = {3, 3}, k22[] = {2, 2}, pads_bad[] = {1, 1, 1};
  const int64_t zero_one[] = {0, 1}, pads_negative[] = {-1, 0, 0, 0};
  io ins[3] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, buf, false),
               tensor_io("w", TS_DTYPE_FLOAT, 4, wd, buf, true),
               tensor_io("b", TS_DTYPE_FLOAT, 1, bd, buf, true)};
  attr g2 = AINT("group", 2);
  /* Sanity: the base case is valid. */
  ts_err err;
  ck_assert_int_eq(try_model("Conv", 13, ins, 3, 1, &g2, 1, &err), 0);
  /* Unsupported attribute and values. */
  attr a[2] = {g2, AINT("foo", 1)};
  expect_fail("Conv", 13, ins, 3, 1, a, 2, TS_EUNSUPPORTED, "'foo'");
  a[1] = ASTR("auto_pad", "SAME_MIDDLE");
  expect_fail("Conv", 13, ins, 3, 1, a, 2, TS_EUNSUPPORTED, "'auto_pad'");
  /* Malformed attribute values. */
  a[1] = AINTS("strides", zero_one, 2);
  expect_fail("Conv", 13, ins, 3, 1, a, 2, TS_EINVAL, "'strides'");
  a[1] = AINTS("pads", pads_negative, 4);
  expect_fail("Conv", 13, ins, 3, 1, a, 2, TS_EINVAL, "'pads'");
  a[1] = AINTS("pads", pads_bad, 3);
  expect_fail("Conv", 13, ins, 3, 1, a, 2, TS_EINVAL, "'pads'");
  a[1] = AINTS("kernel_shape", k22, 2);
  expect_fail("Conv", 13, ins, 3, 1, a, 2, TS_EINVAL, "'kernel_shape'");
  a[1] = AINTS("kernel_shape", k33, 2); /* consistent: fine */
  ck_assert_int_eq(try_model("Conv", 13, ins, 3, 1, a, 2, &err), 0);
  attr g0 = AINT("group", 0);
  expect_fail("Conv", 13, ins, 3, 1, &g0, 1, TS_EINVAL, "'group'");
  /* Channels not divisible by group. */
  attr g3 = AINT("group", 3);
  expect_fail("Conv", 13, ins, 3, 1, &g3, 1, TS_EINVAL, "group");
  /* Weight / input channel mismatch (group 1: W wants 2 channels, X has 4). */
  expect_fail("Conv", 13, ins, 3, 1, NULL, 0, TS_EINVAL, "input channels");
  /* Output channels not divisible by group. */
  ins[1].dims[0] = 5;
  expect_fail("Conv", 13, ins, 2, 1, &g2, 1, TS_EINVAL, "output channels");
  ins[1].dims[0] = 6;
  /* Bias of the wrong length. */
  ins[2].dims[0] = 5;
  expect_fail("Conv", 13, ins, 3, 1, &g2, 1, TS_EINVAL, "bias");
  ins[2].dims[0] = 6;
  /* Input smaller than the kernel. */
  ins[0].dims[2] = 2;
  expect_fail("Conv", 13, ins, 3, 1, &g2, 1, TS_EINVAL, "kernel extent");
  ins[0].dims[2] = 5;
  /* Weight rank differs from the input's. */
  ins[1].rank = 3;
  expect_fail("Conv", 13, ins, 3, 1, &g2, 1, TS_EINVAL, "rank");
  ins[1].rank = 4;
  /* Not float. */
  ins[0].dtype = TS_DTYPE_DOUBLE;
  expect_fail("Conv", 13, ins, 3, 1, &g2, 1, TS_EUNSUPPORTED, "float");
  ins[0].dtype = TS_DTYPE_FLOAT;
  /* Rank-2 input: no spatial dims. */
  io flat[2] = {tensor_io("x", TS_DTYPE_FLOAT, 2, xd, buf, false),
                tensor_io("w", TS_DTYPE_FLOAT, 2, wd, buf, true)};
  expect_fail("Conv", 13, flat, 2, 1, NULL, 0, TS_EINVAL, "rank");
  /* 4 spatial dims are beyond what is implemented. */
  int64_t x6[6] = {1, 1, 2, 2, 2, 2}, w6[6] = {1, 1, 1, 1, 1, 1};
  io six[2] = {tensor_io("x", TS_DTYPE_FLOAT, 6, x6, buf, false),
               tensor_io("w", TS_DTYPE_FLOAT, 6, w6, buf, true)};
  expect_fail("Conv", 13, six, 2, 1, NULL, 0, TS_EUNSUPPORTED, "rank");
  /* A symbolic channel dim hides the group mismatch until run time. */
  ins[0].sym = 1 << 1;
  expect_fail("Conv", 13, ins, 3, 1, &g3, 1, TS_EINVAL, "group");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* MaxPool, AveragePool                                                     */
/* ------------------------------------------------------------------------ */

/* Pooling by definition: for each output, the taps t = start + j * dilation
 * (start = o * stride - pad_begin); "valid" taps lie in the input, "padded"
 * ones in [-pad_begin, in + pad_end). max over valid taps (first maximum
 * wins; index row-major in the whole input); average = sum of valid taps /
 * (count_include_pad ? padded count : valid count). */
static void ref_pool(const wcase *c, int64_t C, bool is_max, const float *x,
                     double *y, double *mag, int64_t *idx) {
  const int64_t plane_in = vol3(c->in);
  int64_t at = 0;
  for (int64_t p = 0; p < c->batch * C; p++)
    for (int64_t o0 = 0; o0 < c->out[0]; o0++)
      for (int64_t o1 = 0; o1 < c->out[1]; o1++)
        for (int64_t o2 = 0; o2 < c->out[2]; o2++, at++) {
          double best = -INFINITY, sum = 0.0, abs_sum = 0.0;
          int64_t best_at = -1, valid = 0, padded = 1;
          const int64_t o[3] = {o0, o1, o2};
          for (int j = 0; j < 3; j++) {
            int64_t cnt = 0;
            for (int64_t t = 0; t < c->k[j]; t++)
              if (o[j] * c->s[j] - c->pb[j] + t * c->d[j] < c->in[j] + c->pe[j])
                cnt++;
            padded *= cnt;
          }
          for (int64_t k0 = 0; k0 < c->k[0]; k0++)
            for (int64_t k1 = 0; k1 < c->k[1]; k1++)
              for (int64_t k2 = 0; k2 < c->k[2]; k2++) {
                const int64_t i0 = o0 * c->s[0] - c->pb[0] + k0 * c->d[0];
                const int64_t i1 = o1 * c->s[1] - c->pb[1] + k1 * c->d[1];
                const int64_t i2 = o2 * c->s[2] - c->pb[2] + k2 * c->d[2];
                if (i0 < 0 || i0 >= c->in[0] || i1 < 0 || i1 >= c->in[1] ||
                    i2 < 0 || i2 >= c->in[2])
                  continue;
                const int64_t flat =
                    p * plane_in + (i0 * c->in[1] + i1) * c->in[2] + i2;
                const double v = x[flat];
                valid++;
                sum += v;
                abs_sum += fabs(v);
                if (v > best) {
                  best = v;
                  best_at = flat;
                }
              }
          const int64_t div = c->include_pad ? padded : valid;
          y[at] = is_max ? best : div ? sum / (double)div : 0.0;
          mag[at] = is_max ? 0.0 : div ? abs_sum / (double)div : 0.0;
          if (idx) idx[at] = best_at;
        }
}

static void check_pool(const wcase *c, int64_t C, bool is_max,
                       bool want_indices, const char *what) {
  int64_t xd[5], yd[5];
  const int rank = nchw_dims(c, C, c->in, xd);
  nchw_dims(c, C, c->out, yd);
  const int64_t nx = ts_shape_numel(xd, rank), ny = ts_shape_numel(yd, rank);
  float *x = random_floats(nx);
  double *want = malloc((size_t)(ny + 1) * sizeof *want),
         *mag = malloc((size_t)(ny + 1) * sizeof *mag);
  int64_t *idx = malloc((size_t)(ny + 1) * sizeof *idx);
  ref_pool(c, C, is_max, x, want, mag, idx);
  io ins[1] = {tensor_io("x", TS_DTYPE_FLOAT, rank, xd, x, false)};
  ins[0].sym = 1;
  attr a[MAX_ATTRS];
  int64_t store[4][6];
  int na = window_attr_list(c, true, a, store);
  if (!is_max && (c->include_pad || rng_int(0, 1)))
    a[na++] = AINT("count_include_pad", c->include_pad);
  if (is_max && rng_int(0, 1)) a[na++] = AINT("storage_order", 0);
  ts_model *m;
  ts_session *s;
  ts_tensor y[2];
  ck_assert_int_eq(ts_session_create(&s, NULL), 0);
  load_and_run(is_max ? "MaxPool" : "AveragePool", 12, ins, 1,
               want_indices ? 2 : 1, a, na, &m, s, y);
  expect_symbolic_batch(m, yd, rank, what);
  expect_dims(&y[0], yd, rank, what);
  expect_close(&y[0], want, is_max ? NULL : mag, ny, is_max ? 0.0 : 2e-6,
               what);
  if (want_indices) {
    expect_dims(&y[1], yd, rank, what);
    ck_assert_int_eq(y[1].dtype, TS_DTYPE_INT64);
    const int64_t *got = y[1].data;
    for (int64_t i = 0; i < ny; i++)
      ck_assert_msg(got[i] == idx[i], "%s: index %lld is %lld, want %lld",
                    what, (long long)i, (long long)got[i], (long long)idx[i]);
  }
  ts_session_free(s);
  ts_model_free(m);
  free(x), free(want), free(mag), free(idx);
}

START_TEST(test_max_pool_random) {
  rng_seed(21);
  for (int it = 0; it < 300; it++) {
    wcase c;
    random_window(&c, true);
    char what[320];
    snprintf(what, sizeof what, "MaxPool case %d (auto_pad %s, ceil %d;", it,
             auto_pad_str[c.auto_pad], c.ceil);
    describe(&c, what, sizeof what - 1);
    strcat(what, ")");
    check_pool(&c, rng_int(1, 3), true, it % 3 == 0, what);
  }
}
END_TEST

START_TEST(test_average_pool_random) {
  rng_seed(22);
  for (int it = 0; it < 300; it++) {
    wcase c;
    random_window(&c, true);
    char what[320];
    snprintf(what, sizeof what,
             "AveragePool case %d (auto_pad %s, ceil %d, count_include_pad "
             "%d;",
             it, auto_pad_str[c.auto_pad], c.ceil, c.include_pad);
    describe(&c, what, sizeof what - 1);
    strcat(what, ")");
    check_pool(&c, rng_int(1, 3), false, false, what);
  }
}
END_TEST

/* The ONNX operator docs' examples (averagepool_2d_ceil, maxpool_2d_ceil,
 * averagepool_2d_pads_count_include_pad corner), worked by hand. */
START_TEST(test_pool_documented) {
  float x[16];
  for (int i = 0; i < 16; i++) x[i] = (float)(i + 1);
  const int64_t xd[4] = {1, 1, 4, 4}, k3[] = {3, 3}, s2[] = {2, 2};
  io ins[1] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, x, false)};
  attr a[3] = {AINTS("kernel_shape", k3, 2), AINTS("strides", s2, 2),
               AINT("ceil_mode", 1)};
  ts_model *m;
  ts_session *s;
  ts_tensor y;
  ck_assert_int_eq(ts_session_create(&s, NULL), 0);
  load_and_run("AveragePool", 12, ins, 1, 1, a, 3, &m, s, &y);
  const double avg[] = {6, 7.5, 12, 13.5};
  expect_close(&y, avg, NULL, 4, 1e-6, "averagepool_2d_ceil");
  ts_model_free(m);
  load_and_run("MaxPool", 12, ins, 1, 1, a, 3, &m, s, &y);
  const double mx[] = {11, 12, 15, 16};
  expect_close(&y, mx, NULL, 4, 0.0, "maxpool_2d_ceil");
  ts_model_free(m);
  /* 2x2 kernel, pads 1 all round, count_include_pad: the corner output
   * averages x[0] = 1 with three padding zeros. */
  const int64_t k2[] = {2, 2}, p1[] = {1, 1, 1, 1};
  attr b[3] = {AINTS("kernel_shape", k2, 2), AINTS("pads", p1, 4),
               AINT("count_include_pad", 1)};
  load_and_run("AveragePool", 12, ins, 1, 1, b, 3, &m, s, &y);
  ck_assert_int_eq(y.dims[2], 5);
  ck_assert_float_eq_tol(((float *)y.data)[0], 0.25f, 1e-7f);
  ck_assert_float_eq_tol(((float *)y.data)[1], (1.0f + 2.0f) / 4.0f, 1e-7f);
  ts_model_free(m);
  ts_session_free(s);
}
END_TEST

START_TEST(test_pool_bad) {
  float buf[64] = {0};
  const int64_t xd[4] = {1, 2, 4, 4}, k2[] = {2, 2}, one_zero[] = {1, 0},
                ones3[] = {1, 1, 1};
  io ins[1] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, buf, false)};
  attr a[2] = {AINTS("kernel_shape", k2, 2), AINT("storage_order", 1)};
  ts_err err;
  /* storage_order 1 is fine without Indices, unsupported with them. */
  ck_assert_int_eq(try_model("MaxPool", 12, ins, 1, 1, a, 2, &err), 0);
  expect_fail("MaxPool", 12, ins, 1, 2, a, 2, TS_EUNSUPPORTED,
              "'storage_order'");
  expect_fail("MaxPool", 12, ins, 1, 1, NULL, 0, TS_EINVAL, "'kernel_shape'");
  a[1] = AINT("ceil_mode", 2);
  expect_fail("MaxPool", 12, ins, 1, 1, a, 2, TS_EINVAL, "'ceil_mode'");
  a[1] = AINT("count_include_pad", 1); /* not a MaxPool attribute */
  expect_fail("MaxPool", 12, ins, 1, 1, a, 2, TS_EUNSUPPORTED,
              "'count_include_pad'");
  a[1] = ASTR("auto_pad", "FULL");
  expect_fail("AveragePool", 12, ins, 1, 1, a, 2, TS_EUNSUPPORTED,
              "'auto_pad'");
  a[1] = AINTS("dilations", one_zero, 2);
  expect_fail("AveragePool", 12, ins, 1, 1, a, 2, TS_EINVAL, "'dilations'");
  a[1] = AINTS("strides", ones3, 3);
  expect_fail("AveragePool", 12, ins, 1, 1, a, 2, TS_EINVAL, "'strides'");
  const int64_t k3[] = {2, 2, 2};
  a[0] = AINTS("kernel_shape", k3, 3);
  expect_fail("AveragePool", 12, ins, 1, 1, a, 1, TS_EINVAL, "'kernel_shape'");
  const int64_t k9[] = {9, 2};
  a[0] = AINTS("kernel_shape", k9, 2);
  expect_fail("MaxPool", 12, ins, 1, 1, a, 1, TS_EINVAL, "kernel extent");
  a[0] = AINTS("kernel_shape", k2, 2);
  ins[0].dtype = TS_DTYPE_INT32;
  expect_fail("MaxPool", 12, ins, 1, 1, a, 1, TS_EUNSUPPORTED, "float");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* GlobalAveragePool, GlobalMaxPool                                         */
/* ------------------------------------------------------------------------ */

START_TEST(test_global_pools) {
  rng_seed(31);
  for (int it = 0; it < 60; it++) {
    const int rank = (int)rng_int(3, 5);
    int64_t xd[5], yd[5];
    xd[0] = yd[0] = rng_int(0, 1) ? 3 : 1;
    xd[1] = yd[1] = rng_int(1, 4);
    for (int d = 2; d < rank; d++) {
      xd[d] = rng_int(1, rank == 5 ? 4 : 9);
      yd[d] = 1;
    }
    const int64_t nx = ts_shape_numel(xd, rank), planes = xd[0] * xd[1],
                  plane = nx / planes;
    float *x = random_floats(nx);
    double *avg = malloc((size_t)planes * sizeof *avg),
           *mag = malloc((size_t)planes * sizeof *mag),
           *mx = malloc((size_t)planes * sizeof *mx);
    for (int64_t p = 0; p < planes; p++) {
      avg[p] = mag[p] = 0.0;
      mx[p] = -INFINITY;
      for (int64_t i = 0; i < plane; i++) {
        const double v = x[p * plane + i];
        avg[p] += v / (double)plane;
        mag[p] += fabs(v) / (double)plane;
        if (v > mx[p]) mx[p] = v;
      }
    }
    io ins[1] = {tensor_io("x", TS_DTYPE_FLOAT, rank, xd, x, false)};
    ins[0].sym = 1;
    ts_model *m;
    ts_session *s;
    ts_tensor y;
    ck_assert_int_eq(ts_session_create(&s, NULL), 0);
    load_and_run("GlobalAveragePool", 13, ins, 1, 1, NULL, 0, &m, s, &y);
    expect_symbolic_batch(m, yd, rank, "GlobalAveragePool");
    expect_dims(&y, yd, rank, "GlobalAveragePool");
    expect_close(&y, avg, mag, planes, 1e-6, "GlobalAveragePool");
    ts_model_free(m);
    load_and_run("GlobalMaxPool", 13, ins, 1, 1, NULL, 0, &m, s, &y);
    expect_dims(&y, yd, rank, "GlobalMaxPool");
    expect_close(&y, mx, NULL, planes, 0.0, "GlobalMaxPool");
    ts_model_free(m);
    ts_session_free(s);
    free(x), free(avg), free(mag), free(mx);
  }
  float buf[8] = {0};
  const int64_t d2[2] = {2, 4}, d0[4] = {1, 2, 0, 3};
  io flat[1] = {tensor_io("x", TS_DTYPE_FLOAT, 2, d2, buf, false)};
  expect_fail("GlobalAveragePool", 13, flat, 1, 1, NULL, 0, TS_EINVAL, "rank");
  io empty[1] = {tensor_io("x", TS_DTYPE_FLOAT, 4, d0, buf, false)};
  expect_fail("GlobalMaxPool", 13, empty, 1, 1, NULL, 0, TS_EINVAL, "empty");
  attr a = AINT("keepdims", 1);
  expect_fail("GlobalMaxPool", 13, flat, 1, 1, &a, 1, TS_EUNSUPPORTED,
              "'keepdims'");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* BatchNormalization                                                       */
/* ------------------------------------------------------------------------ */

START_TEST(test_batch_normalization) {
  rng_seed(41);
  for (int it = 0; it < 60; it++) {
    const int rank = (int)rng_int(2, 5);
    int64_t xd[5];
    xd[0] = rng_int(0, 1) ? 3 : 1;
    xd[1] = rng_int(1, 5);
    for (int d = 2; d < rank; d++) xd[d] = rng_int(1, 6);
    const int64_t nx = ts_shape_numel(xd, rank), C = xd[1],
                  plane = nx / (xd[0] * C);
    float *x = random_floats(nx), *p[4];
    for (int k = 0; k < 4; k++) p[k] = random_floats(C);
    for (int64_t c = 0; c < C; c++) p[3][c] = p[3][c] * p[3][c] + 0.1f;
    const bool give_eps = rng_int(0, 1);
    const float eps = give_eps ? 1e-2f : 1e-5f;
    double *want = malloc((size_t)nx * sizeof *want),
           *mag = malloc((size_t)nx * sizeof *mag);
    for (int64_t i = 0; i < nx; i++) {
      const int64_t c = i / plane % C;
      const double inv = 1.0 / sqrt((double)p[3][c] + (double)eps);
      want[i] = ((double)x[i] - p[2][c]) * inv * p[0][c] + p[1][c];
      mag[i] = (fabs(x[i]) + fabs(p[2][c])) * inv * fabs(p[0][c]) +
               fabs(p[1][c]);
    }
    const bool runtime = it % 2; /* parameters as graph inputs */
    const int64_t cd[1] = {C};
    io ins[5] = {tensor_io("x", TS_DTYPE_FLOAT, rank, xd, x, false),
                 tensor_io("scale", TS_DTYPE_FLOAT, 1, cd, p[0], !runtime),
                 tensor_io("bias", TS_DTYPE_FLOAT, 1, cd, p[1], !runtime),
                 tensor_io("mean", TS_DTYPE_FLOAT, 1, cd, p[2], !runtime),
                 tensor_io("var", TS_DTYPE_FLOAT, 1, cd, p[3], !runtime)};
    ins[0].sym = 1;
    attr a[2] = {AFLOAT("epsilon", eps), AFLOAT("momentum", 0.9f)};
    ts_model *m;
    ts_session *s;
    ts_tensor y;
    ck_assert_int_eq(ts_session_create(&s, NULL), 0);
    load_and_run("BatchNormalization", 15, ins, 5, 1, a + !give_eps,
                 give_eps ? 2 : 1, &m, s, &y);
    if (!runtime) expect_symbolic_batch(m, xd, rank, "BatchNormalization");
    expect_dims(&y, xd, rank, "BatchNormalization");
    expect_close(&y, want, mag, nx, 2e-6, "BatchNormalization");
    ts_session_free(s);
    ts_model_free(m);
    free(x), free(want), free(mag);
    for (int k = 0; k < 4; k++) free(p[k]);
  }
}
END_TEST

START_TEST(test_batch_normalization_bad) {
  float buf[64] = {0};
  const int64_t xd[4] = {1, 3, 2, 2}, cd[1] = {3}, c4[1] = {4};
  io ins[5] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, buf, false),
               tensor_io("scale", TS_DTYPE_FLOAT, 1, cd, buf, true),
               tensor_io("bias", TS_DTYPE_FLOAT, 1, cd, buf, true),
               tensor_io("mean", TS_DTYPE_FLOAT, 1, cd, buf, true),
               tensor_io("var", TS_DTYPE_FLOAT, 1, cd, buf, true)};
  ts_err err;
  ck_assert_int_eq(try_model("BatchNormalization", 15, ins, 5, 1, NULL, 0,
                             &err), 0);
  attr a = AINT("training_mode", 1);
  expect_fail("BatchNormalization", 15, ins, 5, 1, &a, 1, TS_EUNSUPPORTED,
              "'training_mode'");
  /* Training-mode outputs. */
  expect_fail("BatchNormalization", 15, ins, 5, 3, NULL, 0, TS_EUNSUPPORTED,
              "training mode");
  a = AINT("spatial", 0);
  expect_fail("BatchNormalization", 8, ins, 5, 1, &a, 1, TS_EUNSUPPORTED,
              "'spatial'");
  /* Parameter length differs from the channels, constant or fed at run. */
  ins[3].dims[0] = 4;
  expect_fail("BatchNormalization", 15, ins, 5, 1, NULL, 0, TS_EINVAL,
              "input_mean");
  ins[3].constant = false;
  ins[0].sym = 1 << 1; /* channels symbolic: caught at run */
  expect_fail("BatchNormalization", 15, ins, 5, 1, NULL, 0, TS_EINVAL,
              "input_mean");
  ins[3] = tensor_io("mean", TS_DTYPE_FLOAT, 1, c4, buf, true);
  ins[3].rank = 0;
  expect_fail("BatchNormalization", 15, ins, 5, 1, NULL, 0, TS_EINVAL,
              "input_mean");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Pad                                                                      */
/* ------------------------------------------------------------------------ */

enum { P_CONSTANT, P_REFLECT, P_EDGE, P_WRAP };
static const char *const pad_mode_str[] = {"constant", "reflect", "edge",
                                           "wrap"};

/* The source index of output index o along an axis of length len, by
 * folding the index back into range step by step; -1 for the constant. */
static int64_t ref_pad_index(int mode, int64_t o, int64_t pb, int64_t len) {
  int64_t i = o - pb;
  if (i >= 0 && i < len) return i;
  switch (mode) {
    case P_CONSTANT: return -1;
    case P_EDGE: return i < 0 ? 0 : len - 1;
    case P_WRAP:
      while (i < 0) i += len;
      while (i >= len) i -= len;
      return i;
    default: /* reflect about the first and last element */
      while (i < 0 || i >= len) {
        if (len == 1) return 0;
        i = i < 0 ? -i : 2 * (len - 1) - i;
      }
      return i;
  }
}

/* Element size dispatch by copying bytes: the reference is type-blind. */
static void ref_pad(int mode, const uint8_t *x, const int64_t *xd, int rank,
                    const int64_t *pb, const int64_t *yd, size_t esize,
                    const uint8_t *fill, uint8_t *y) {
  const int64_t ny = ts_shape_numel(yd, rank);
  for (int64_t flat = 0; flat < ny; flat++) {
    int64_t rest = flat, src = 0, stride = 1;
    bool constant = false;
    for (int d = rank - 1; d >= 0; d--) {
      const int64_t o = rest % yd[d];
      rest /= yd[d];
      const int64_t i = ref_pad_index(mode, o, pb[d], xd[d]);
      if (i < 0) constant = true;
      src += i * stride;
      stride *= xd[d];
    }
    memcpy(y + flat * (int64_t)esize, constant ? fill : x + src * (int64_t)esize,
           esize);
  }
}

START_TEST(test_pad_random) {
  rng_seed(51);
  static const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_INT64,
                                   TS_DTYPE_UINT8, TS_DTYPE_INT16};
  for (int it = 0; it < 300; it++) {
    const int rank = (int)rng_int(1, 4), mode = (int)rng_int(0, 3);
    const ts_dtype dt = types[rng_int(0, 3)];
    const size_t esize = ts_dtype_size(dt);
    int64_t xd[4], yd[4], pads[8], pb[4];
    for (int d = 0; d < rank; d++) {
      xd[d] = rng_int(mode == P_CONSTANT ? 0 : 1, 5);
      const int64_t most = mode == P_REFLECT ? xd[d] - 1
                           : mode == P_WRAP  ? xd[d]
                                             : 3;
      pads[d] = rng_int(-xd[d] / 2, most);
      pads[rank + d] = rng_int(-(xd[d] + pads[d]) / 2, most);
      pb[d] = pads[d];
      yd[d] = xd[d] + pads[d] + pads[rank + d];
    }
    const int64_t nx = ts_shape_numel(xd, rank), ny = ts_shape_numel(yd, rank);
    uint8_t *x = malloc((size_t)nx * esize + 1),
            *want = malloc((size_t)ny * esize + 1), fill[8] = {0};
    for (int64_t i = 0; i < nx * (int64_t)esize; i++) x[i] = (uint8_t)rng_next();
    const bool give_value = rng_int(0, 1), runtime_pads = rng_int(0, 1);
    if (give_value)
      for (size_t i = 0; i < esize; i++) fill[i] = (uint8_t)rng_next();
    ref_pad(mode, x, xd, rank, pb, yd, esize, fill, want);
    const int64_t pd[1] = {2 * rank}, vd[1] = {1};
    io ins[3] = {tensor_io("x", dt, rank, xd, x, false),
                 tensor_io("pads", TS_DTYPE_INT64, 1, pd, pads, !runtime_pads),
                 give_value ? tensor_io("value", dt, rng_int(0, 1), vd, fill,
                                        true)
                            : omitted};
    ins[0].sym = 1;
    attr a = ASTR("mode", pad_mode_str[mode]);
    const bool give_mode = mode != P_CONSTANT || rng_int(0, 1);
    ts_model *m;
    ts_session *s;
    ts_tensor y;
    char what[128];
    snprintf(what, sizeof what, "Pad case %d (%s, rank %d, %s)", it,
             pad_mode_str[mode], rank, ts_dtype_name(dt));
    ck_assert_int_eq(ts_session_create(&s, NULL), 0);
    load_and_run("Pad", 13, ins, give_value ? 3 : 2, 1, &a, give_mode, &m, s,
                 &y);
    if (!runtime_pads && xd[0] + pads[0] + pads[rank] > 0) {
      const ts_value *v = output_value(m);
      ck_assert_int_eq(v->rank, rank);
      for (int d = 1; d < rank; d++) ck_assert_int_eq(v->dims[d], yd[d]);
    }
    expect_dims(&y, yd, rank, what);
    ck_assert_int_eq(y.dtype, dt);
    ck_assert_msg(ny == 0 || memcmp(y.data, want, (size_t)ny * esize) == 0,
                  "%s: wrong values", what);
    ts_session_free(s);
    ts_model_free(m);
    free(x), free(want);
  }
}
END_TEST

/* Opset < 11: pads and value are attributes. */
START_TEST(test_pad_attribute_form) {
  rng_seed(52);
  const int64_t xd[2] = {3, 4}, pads[4] = {1, 0, 2, 3}, yd[2] = {6, 7};
  float *x = random_floats(12), want[42];
  const float value = 2.5f;
  ref_pad(P_CONSTANT, (const uint8_t *)x, xd, 2, pads, yd, 4,
          (const uint8_t *)&value, (uint8_t *)want);
  io ins[1] = {tensor_io("x", TS_DTYPE_FLOAT, 2, xd, x, false)};
  attr a[3] = {AINTS("pads", pads, 4), AFLOAT("value", value),
               ASTR("mode", "constant")};
  ts_model *m;
  ts_session *s;
  ts_tensor y;
  ck_assert_int_eq(ts_session_create(&s, NULL), 0);
  load_and_run("Pad", 10, ins, 1, 1, a, 3, &m, s, &y);
  expect_dims(&y, yd, 2, "Pad-2");
  ck_assert_int_eq(memcmp(y.data, want, sizeof want), 0);
  ts_model_free(m);
  a[2] = ASTR("mode", "edge");
  ref_pad(P_EDGE, (const uint8_t *)x, xd, 2, pads, yd, 4, NULL,
          (uint8_t *)want);
  load_and_run("Pad", 10, ins, 1, 1, a, 3, &m, s, &y);
  ck_assert_int_eq(memcmp(y.data, want, sizeof want), 0);
  ts_model_free(m);
  ts_session_free(s);
  free(x);
  /* The attribute form's errors. */
  expect_fail("Pad", 10, ins, 1, 1, a + 1, 2, TS_EINVAL, "'pads'");
  a[0] = AINTS("pads", pads, 3);
  expect_fail("Pad", 10, ins, 1, 1, a, 3, TS_EINVAL, "'pads'");
}
END_TEST

START_TEST(test_pad_bad) {
  float buf[64] = {0};
  const int64_t xd[2] = {3, 4}, pd[1] = {4}, p3[1] = {3};
  int64_t pads[4] = {1, 1, 1, 1};
  io ins[3] = {tensor_io("x", TS_DTYPE_FLOAT, 2, xd, buf, false),
               tensor_io("pads", TS_DTYPE_INT64, 1, pd, pads, true), omitted};
  ts_err err;
  ck_assert_int_eq(try_model("Pad", 13, ins, 2, 1, NULL, 0, &err), 0);
  attr a = ASTR("mode", "symmetric");
  expect_fail("Pad", 13, ins, 2, 1, &a, 1, TS_EUNSUPPORTED, "'mode'");
  /* reflect beyond one reflection: refused rather than guessed. */
  pads[2] = 3;
  a = ASTR("mode", "reflect");
  expect_fail("Pad", 13, ins, 2, 1, &a, 1, TS_EUNSUPPORTED, "reflect");
  pads[2] = 1;
  /* Cropping below zero. */
  pads[1] = -3;
  pads[3] = -2;
  expect_fail("Pad", 13, ins, 2, 1, NULL, 0, TS_EINVAL, "pads");
  pads[1] = pads[3] = 1;
  /* Wrong number of pads, wrong type, constant_value of another type. */
  ins[1].dims[0] = 3;
  expect_fail("Pad", 13, ins, 2, 1, NULL, 0, TS_EINVAL, "'pads'");
  ins[1] = tensor_io("pads", TS_DTYPE_INT32, 1, pd, pads, true);
  expect_fail("Pad", 13, ins, 2, 1, NULL, 0, TS_EINVAL, "int64");
  ins[1] = tensor_io("pads", TS_DTYPE_INT64, 1, pd, pads, true);
  const int64_t one[1] = {1};
  ins[2] = tensor_io("value", TS_DTYPE_INT64, 1, one, pads, true);
  expect_fail("Pad", 13, ins, 3, 1, NULL, 0, TS_EINVAL, "constant_value");
  ins[2] = tensor_io("value", TS_DTYPE_FLOAT, 1, p3, buf, true);
  expect_fail("Pad", 13, ins, 3, 1, NULL, 0, TS_EINVAL, "constant_value");
  /* pads missing in the input form; an attribute in the input form. */
  expect_fail("Pad", 13, ins, 1, 1, NULL, 0, TS_EINVAL, "'pads'");
  a = AINTS("pads", pads, 4);
  expect_fail("Pad", 13, ins, 2, 1, &a, 1, TS_EUNSUPPORTED, "'pads'");
  /* Runtime pads with bad values are caught at run. */
  pads[1] = -9;
  ins[1].constant = false;
  expect_fail("Pad", 13, ins, 2, 1, NULL, 0, TS_EINVAL, "pads");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Resize, Upsample                                                         */
/* ------------------------------------------------------------------------ */

enum { C_HALF_PIXEL, C_PYTORCH_HALF_PIXEL, C_ALIGN_CORNERS, C_ASYMMETRIC,
       C_TF_HALF_PIXEL_FOR_NEAREST, C_HALF_PIXEL_SYMMETRIC };
static const char *const coord_str[] = {
    "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
    "tf_half_pixel_for_nearest", "half_pixel_symmetric"};
enum { N_ROUND_PREFER_FLOOR, N_ROUND_PREFER_CEIL, N_FLOOR, N_CEIL, N_LEGACY };
static const char *const nearest_str[] = {"round_prefer_floor",
                                          "round_prefer_ceil", "floor", "ceil"};

/* Input index for output index o per the Resize docs. Coordinates are float
 * arithmetic, as in the ONNX reference; N_LEGACY is opset-10 Resize and
 * Upsample: asymmetric, truncated (ceil when downsampling). */
static int64_t ref_resize_index(int coord, int nearest, int64_t o, float scale,
                                int64_t in, int64_t out) {
  const float xo = (float)o, li = (float)in, lo = (float)out;
  float c;
  switch (nearest == N_LEGACY ? C_ASYMMETRIC : coord) {
    case C_HALF_PIXEL: c = (xo + 0.5f) / scale - 0.5f; break;
    case C_PYTORCH_HALF_PIXEL:
      c = out > 1 ? (xo + 0.5f) / scale - 0.5f : 0.0f;
      break;
    case C_ALIGN_CORNERS: c = out == 1 ? 0.0f : xo * (li - 1) / (lo - 1); break;
    case C_ASYMMETRIC: c = xo / scale; break;
    case C_TF_HALF_PIXEL_FOR_NEAREST: c = (xo + 0.5f) / scale; break;
    default: {
      const float adj = lo / (scale * li);
      c = li / 2 * (1 - adj) + (xo + 0.5f) / scale - 0.5f;
    }
  }
  const float f = floorf(c), frac = c - f;
  int64_t i;
  switch (nearest) {
    case N_ROUND_PREFER_FLOOR: i = (int64_t)f + (frac > 0.5f); break;
    case N_ROUND_PREFER_CEIL: i = (int64_t)f + (frac >= 0.5f); break;
    case N_FLOOR: i = (int64_t)f; break;
    case N_CEIL: i = (int64_t)ceilf(c); break;
    default: i = scale < 1.0f ? (int64_t)ceilf(c) : (int64_t)truncf(c);
  }
  return i < 0 ? 0 : i >= in ? in - 1 : i;
}

/* y[o] = x[index(o)] along every axis. */
static void ref_resize(int coord, int nearest, const float *x,
                       const int64_t *xd, int rank, const float *scales,
                       const int64_t *yd, float *y) {
  const int64_t ny = ts_shape_numel(yd, rank);
  for (int64_t flat = 0; flat < ny; flat++) {
    int64_t rest = flat, src = 0, stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
      const int64_t o = rest % yd[d];
      rest /= yd[d];
      src += ref_resize_index(coord, nearest, o, scales[d], xd[d], yd[d]) *
             stride;
      stride *= xd[d];
    }
    y[flat] = x[src];
  }
}

START_TEST(test_resize_random) {
  rng_seed(61);
  static const float scale_set[] = {0.5f, 0.6f, 0.75f, 1.0f,
                                    1.5f, 1.7f, 2.0f,  3.0f};
  for (int it = 0; it < 300; it++) {
    const int rank = (int)rng_int(3, 4);
    const int coord = (int)rng_int(0, 5), nearest = (int)rng_int(0, 3);
    const bool by_sizes = rng_int(0, 1);
    int64_t xd[4], yd[4], sizes[4];
    float scales[4];
    xd[0] = rng_int(0, 1) ? 3 : 1;
    xd[1] = rng_int(1, 3);
    for (int d = 0; d < rank; d++) {
      if (d >= 2) xd[d] = rng_int(1, 7);
      scales[d] = d < 2 ? 1.0f : scale_set[rng_int(0, 7)];
      yd[d] = (int64_t)floorf((float)xd[d] * scales[d]);
      if (by_sizes) {
        yd[d] = sizes[d] = d < 2 ? xd[d] : rng_int(1, 2 * xd[d] + 2);
        scales[d] = (float)yd[d] / (float)xd[d];
      }
    }
    const int64_t nx = ts_shape_numel(xd, rank), ny = ts_shape_numel(yd, rank);
    float *x = random_floats(nx), *want = malloc((size_t)(ny + 1) * 4);
    ref_resize(coord, nearest, x, xd, rank, scales, yd, want);
    const int64_t rd[1] = {rank};
    io ins[4] = {tensor_io("x", TS_DTYPE_FLOAT, rank, xd, x, false), omitted,
                 by_sizes ? omitted
                          : tensor_io("scales", TS_DTYPE_FLOAT, 1, rd, scales,
                                      true),
                 by_sizes ? tensor_io("sizes", TS_DTYPE_INT64, 1, rd, sizes,
                                      true)
                          : omitted};
    ins[0].sym = by_sizes ? 0 : 1;
    attr a[3] = {ASTR("mode", "nearest"),
                 ASTR("coordinate_transformation_mode", coord_str[coord]),
                 ASTR("nearest_mode", nearest_str[nearest])};
    ts_model *m;
    ts_session *s;
    ts_tensor y;
    char what[160];
    snprintf(what, sizeof what, "Resize case %d (%s, %s, by %s)", it,
             coord_str[coord], nearest_str[nearest],
             by_sizes ? "sizes" : "scales");
    ck_assert_int_eq(ts_session_create(&s, NULL), 0);
    load_and_run("Resize", 13, ins, by_sizes ? 4 : 3, 1, a, 3, &m, s, &y);
    if (!by_sizes) expect_symbolic_batch(m, yd, rank, what);
    expect_dims(&y, yd, rank, what);
    ck_assert_msg(memcmp(y.data, want, (size_t)ny * 4) == 0, "%s: wrong values",
                  what);
    ts_session_free(s);
    ts_model_free(m);
    free(x), free(want);
  }
}
END_TEST

/* Resize-10 and Upsample-7/9: scales only, legacy nearest. Also non-float
 * data (nearest only moves elements). */
START_TEST(test_resize_legacy) {
  rng_seed(62);
  static const float scale_set[] = {0.5f, 0.6f, 1.0f, 1.5f, 2.0f, 3.0f};
  for (int it = 0; it < 90; it++) {
    const int form = it % 3; /* Resize-10, Upsample-9, Upsample-7 */
    int64_t xd[4] = {1, 2, rng_int(1, 6), rng_int(1, 6)}, yd[4];
    float scales[4] = {1, 1, scale_set[rng_int(0, 5)], scale_set[rng_int(0, 5)]};
    if (form > 0) /* Upsample: scales >= 1 */
      for (int d = 2; d < 4; d++)
        if (scales[d] < 1.0f) scales[d] = 1.0f / scales[d];
    for (int d = 0; d < 4; d++)
      yd[d] = (int64_t)floorf((float)xd[d] * scales[d]);
    float *x = random_floats(16 * 6 * 6), want[2 * 18 * 18];
    ref_resize(0, N_LEGACY, x, xd, 4, scales, yd, want);
    const int64_t rd[1] = {4};
    io ins[2] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, x, false),
                 tensor_io("scales", TS_DTYPE_FLOAT, 1, rd, scales, true)};
    attr a[2] = {ASTR("mode", "nearest"), AFLOATS("scales", scales, 4)};
    ts_model *m;
    ts_session *s;
    ts_tensor y;
    ck_assert_int_eq(ts_session_create(&s, NULL), 0);
    if (form == 0)
      load_and_run("Resize", 10, ins, 2, 1, a, 1, &m, s, &y);
    else if (form == 1)
      load_and_run("Upsample", 9, ins, 2, 1, a, 1, &m, s, &y);
    else
      load_and_run("Upsample", 7, ins, 1, 1, a, 2, &m, s, &y);
    expect_dims(&y, yd, 4, "legacy resize");
    ck_assert_msg(memcmp(y.data, want, (size_t)ts_shape_numel(yd, 4) * 4) == 0,
                  "legacy resize form %d case %d: wrong values", form, it);
    ts_session_free(s);
    ts_model_free(m);
    free(x);
  }
  /* The ONNX docs' resize_downsample_scales_nearest: [[1,2,3,4],[5,6,7,8]]
   * scaled by 0.6 gives [[1, 3]] (opset 10 and, with defaults, opset 13). */
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, sc[4] = {1, 1, 0.6f, 0.6f};
  const int64_t xd[4] = {1, 1, 2, 4}, rd[1] = {4}, yd[4] = {1, 1, 1, 2};
  const double want[2] = {1, 3};
  io ins[3] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, x, false), omitted,
               tensor_io("scales", TS_DTYPE_FLOAT, 1, rd, sc, true)};
  ts_model *m;
  ts_session *s;
  ts_tensor y;
  ck_assert_int_eq(ts_session_create(&s, NULL), 0);
  load_and_run("Resize", 13, ins, 3, 1, NULL, 0, &m, s, &y);
  expect_dims(&y, yd, 4, "resize_downsample_scales_nearest");
  expect_close(&y, want, NULL, 2, 0.0, "resize_downsample_scales_nearest");
  ts_model_free(m);
  /* uint8 data, upsampled by 2 with asymmetric/floor: each element twice. */
  uint8_t u[6] = {1, 2, 3, 4, 5, 6};
  const int64_t ud[3] = {1, 2, 3}, u3[1] = {3};
  float us[3] = {1, 1, 2};
  io uin[3] = {tensor_io("x", TS_DTYPE_UINT8, 3, ud, u, false), omitted,
               tensor_io("scales", TS_DTYPE_FLOAT, 1, u3, us, true)};
  attr ua[2] = {ASTR("coordinate_transformation_mode", "asymmetric"),
                ASTR("nearest_mode", "floor")};
  load_and_run("Resize", 13, uin, 3, 1, ua, 2, &m, s, &y);
  const uint8_t uw[12] = {1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6};
  ck_assert_int_eq(y.dtype, TS_DTYPE_UINT8);
  ck_assert_int_eq(y.dims[2], 6);
  ck_assert_int_eq(memcmp(y.data, uw, 12), 0);
  ts_model_free(m);
  ts_session_free(s);
}
END_TEST

START_TEST(test_resize_bad) {
  float buf[64] = {0}, sc[4] = {1, 1, 2, 2};
  int64_t sizes[4] = {1, 1, 4, 4};
  const int64_t xd[4] = {1, 1, 2, 2}, rd[1] = {4};
  io ins[4] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, buf, false), omitted,
               tensor_io("scales", TS_DTYPE_FLOAT, 1, rd, sc, true),
               tensor_io("sizes", TS_DTYPE_INT64, 1, rd, sizes, true)};
  ts_err err;
  ck_assert_int_eq(try_model("Resize", 13, ins, 3, 1, NULL, 0, &err), 0);
  attr a = ASTR("mode", "linear");
  expect_fail("Resize", 13, ins, 3, 1, &a, 1, TS_EUNSUPPORTED, "'mode'");
  a = ASTR("mode", "cubic");
  expect_fail("Resize", 13, ins, 3, 1, &a, 1, TS_EUNSUPPORTED, "'mode'");
  a = ASTR("coordinate_transformation_mode", "tf_crop_and_resize");
  expect_fail("Resize", 13, ins, 3, 1, &a, 1, TS_EUNSUPPORTED,
              "'coordinate_transformation_mode'");
  a = ASTR("nearest_mode", "simple");
  expect_fail("Resize", 13, ins, 3, 1, &a, 1, TS_EUNSUPPORTED,
              "'nearest_mode'");
  a = AINT("bogus", 1);
  expect_fail("Resize", 13, ins, 3, 1, &a, 1, TS_EUNSUPPORTED, "'bogus'");
  a = ASTR("mode", "linear");
  expect_fail("Resize", 10, ins, 3, 1, &a, 1, TS_EUNSUPPORTED, "'mode'");
  io up[2] = {ins[0], ins[2]};
  a = ASTR("mode", "bilinear");
  expect_fail("Upsample", 9, up, 2, 1, &a, 1, TS_EUNSUPPORTED, "'mode'");
  /* Both scales and sizes, neither, wrong length, bad values. */
  expect_fail("Resize", 13, ins, 4, 1, NULL, 0, TS_EINVAL, "sizes");
  expect_fail("Resize", 13, ins, 2, 1, NULL, 0, TS_EINVAL, "scales");
  ins[2].dims[0] = 3;
  expect_fail("Resize", 13, ins, 3, 1, NULL, 0, TS_EINVAL, "'scales'");
  ins[2].dims[0] = 4;
  sc[2] = -1.0f;
  expect_fail("Resize", 13, ins, 3, 1, NULL, 0, TS_EINVAL, "scale");
  sc[2] = 2.0f;
  sizes[3] = -4;
  ins[2] = omitted;
  expect_fail("Resize", 13, ins, 4, 1, NULL, 0, TS_EINVAL, "size");
  /* Upsample-7 without its scales attribute; Upsample-9 without scales. */
  expect_fail("Upsample", 7, ins, 1, 1, NULL, 0, TS_EINVAL, "'scales'");
  expect_fail("Upsample", 9, ins, 1, 1, NULL, 0, TS_EINVAL, "'scales'");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Throughput                                                               */
/* ------------------------------------------------------------------------ */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Prints the GFLOP/s of a 64->64 3x3 conv on 56x56 (pads 1), the shape of a
 * ResNet stage-1 block; not asserted, machines differ. */
START_TEST(test_conv_throughput) {
  rng_seed(71);
  const int64_t xd[4] = {1, 64, 56, 56}, wd[4] = {64, 64, 3, 3}, bd[1] = {64};
  float *x = random_floats(64 * 56 * 56), *w = random_floats(64 * 64 * 9),
        *b = random_floats(64);
  io ins[3] = {tensor_io("x", TS_DTYPE_FLOAT, 4, xd, x, false),
               tensor_io("w", TS_DTYPE_FLOAT, 4, wd, w, true),
               tensor_io("b", TS_DTYPE_FLOAT, 1, bd, b, true)};
  const int64_t pads[4] = {1, 1, 1, 1};
  attr a = AINTS("pads", pads, 4);
  ts_model *m;
  ts_session *s;
  ts_tensor y;
  ck_assert_int_eq(ts_session_create(&s, NULL), 0);
  load_and_run("Conv", 13, ins, 3, 1, &a, 1, &m, s, &y); /* warm-up */
  ts_err err;
  int iters = 0;
  const double start = now_s();
  double elapsed = 0.0;
  while (elapsed < 1.0 || iters < 3) {
    ck_assert_int_eq(run(m, s, ins, 3, 1, &y, &err), 0);
    iters++;
    elapsed = now_s() - start;
  }
  const double flops = 2.0 * 64 * 64 * 9 * 56 * 56;
  printf("conv 64->64 3x3 on 56x56: %.1f GFLOP/s (%.2f ms/run, %d runs; "
         "OpenBLAS core %s)\n",
         flops * iters / elapsed * 1e-9, elapsed / iters * 1e3, iters,
         openblas_get_corename());
  fflush(stdout);
  ts_session_free(s);
  ts_model_free(m);
  free(x), free(w), free(b);
}
END_TEST

static Suite *cnn_suite(void) {
  Suite *s = suite_create("kernels_cnn");
  TCase *tc = tcase_create("cnn");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_conv_random);
  tcase_add_test(tc, test_conv_tiled);
  tcase_add_test(tc, test_conv_empty_batch);
  tcase_add_test(tc, test_conv_bad);
  tcase_add_test(tc, test_max_pool_random);
  tcase_add_test(tc, test_average_pool_random);
  tcase_add_test(tc, test_pool_documented);
  tcase_add_test(tc, test_pool_bad);
  tcase_add_test(tc, test_global_pools);
  tcase_add_test(tc, test_batch_normalization);
  tcase_add_test(tc, test_batch_normalization_bad);
  tcase_add_test(tc, test_pad_random);
  tcase_add_test(tc, test_pad_attribute_form);
  tcase_add_test(tc, test_pad_bad);
  tcase_add_test(tc, test_resize_random);
  tcase_add_test(tc, test_resize_legacy);
  tcase_add_test(tc, test_resize_bad);
  tcase_add_test(tc, test_conv_throughput);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) {
  ts_blas_select_kernels(argc, argv); /* may re-exec with fast kernels */
  printf("OpenBLAS core: %s\n", ts_blas_core_name());
  SRunner *sr = srunner_create(cnn_suite());
  srunner_run_all(sr, CK_NORMAL);
  const int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
