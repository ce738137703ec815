/*
 * quant.c - the "quant" op family (list_quant.h): DequantizeLinear, and the
 * reduced-precision weights of products.
 *
 * DequantizeLinear runs as ONNX defines it for int8 and uint8 inputs:
 * y = (x - zero_point) * scale, with one scale (and zero point) for the
 * whole tensor, or from opset 13 one per index of attribute `axis`.
 *
 * Reduced-precision weights: a shard written with precision=int8|fp16|bf16
 * (coordinator/plan/writer.c) stores a product's weight W as a constant of
 * the small type and widens it with standard ONNX in front of the product:
 *   DequantizeLinear(W_int8, scale, [zero_point 0]) -> Gemm/MatMul input B
 *   Cast(W_fp16 or W_bf16, to = float)              -> Gemm/MatMul input B
 * Folding that node at load would bring back the float weight the shard
 * was made to avoid. ts_reduced_weight_keep() tells the loader to leave such
 * a node unfolded when every reader is a product that can fuse it (one
 * that cannot, e.g. scales along K or a non-zero zero point, is folded to
 * a float B as any constant subgraph is),
 * and ts_reduced_weight_of() tells the products' prepack what the node
 * holds, so that Gemm and MatMul pack the small type itself
 * (gemm_packed.h) and read their B from it directly.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine_int.h"
#include "kernel_util.h"
#include "ops.h"

/* ---- DequantizeLinear ---------------------------------------------------- */

static const ts_attr_spec dq_attrs_axis[] = {{"axis", ATTR_INT}, {NULL}};
static const ts_attr_spec dq_attrs_none[] = {{NULL}};

static int dq_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(n, n->opset >= 13 ? dq_attrs_axis
                                                 : dq_attrs_none, err);
}

/* The axis scales run along (-1: one scale), for x of rank `rank`. */
static int dq_axis(const ts_node *n, const ts_tensor *x, const ts_tensor *s,
                   int *axis, ts_err *err) {
  *axis = -1;
  if (s->rank == 0 || (s->rank == 1 && s->dims[0] == 1 && n->opset < 13))
    return TS_OK;
  if (s->rank != 1 || n->opset < 13)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "x_scale must be a scalar%s (it has rank %d)",
                          n->opset >= 13 ? " or 1-D" : "", s->rank);
  int rc = ts_kernel_axis(n, ts_attr_int(n, "axis", 1), x->rank, "axis", axis,
                          err);
  if (rc) return rc;
  if (s->dims[0] != x->dims[*axis])
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "x_scale has %lld values; x has %lld along axis %d",
                          (long long)s->dims[0], (long long)x->dims[*axis],
                          *axis);
  return TS_OK;
}

static int dq_infer(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0], *s = in[1];
  const ts_tensor *z = n->n_inputs > 2 ? in[2] : NULL;
  if (x->dtype != TS_DTYPE_INT8 && x->dtype != TS_DTYPE_UINT8)
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                          "x has dtype %s; int8 and uint8 are supported",
                          ts_dtype_name(x->dtype));
  if (s->dtype != TS_DTYPE_FLOAT)
    return ts_kernel_fail(n, err, TS_EINVAL, "x_scale has dtype %s, not float",
                          ts_dtype_name(s->dtype));
  int axis, rc = dq_axis(n, x, s, &axis, err);
  if (rc) return rc;
  if (z && (z->dtype != x->dtype || z->rank != s->rank ||
            (z->rank == 1 && z->dims[0] != s->dims[0])))
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "x_zero_point must have x's dtype and x_scale's "
                          "shape");
  return ts_tensor_set_shape(out, TS_DTYPE_FLOAT, x->dims, x->rank, err);
}

static int dq_run(const ts_node *n, const ts_tensor *const *in,
                  ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx;
  const ts_tensor *x = in[0], *s = in[1];
  const ts_tensor *z = n->n_inputs > 2 ? in[2] : NULL;
  int axis, rc = dq_axis(n, x, s, &axis, err);
  if (rc) return rc;
  int64_t count = ts_shape_numel(x->dims, x->rank);
  int64_t inner = 1, dim = 1;
  if (axis >= 0) {
    dim = x->dims[axis];
    for (int d = axis + 1; d < x->rank; d++) inner *= x->dims[d];
  }
  const float *scale = s->data;
  float *y = out->data;
  bool is_signed = x->dtype == TS_DTYPE_INT8;
  for (int64_t i = 0; i < count; i++) {
    int64_t c = axis >= 0 ? (i / inner) % dim : 0;
    int32_t q = is_signed ? ((const int8_t *)x->data)[i]
                          : ((const uint8_t *)x->data)[i];
    int32_t zp = !z ? 0
                 : is_signed ? ((const int8_t *)z->data)[c]
                             : ((const uint8_t *)z->data)[c];
    y[i] = (float)(q - zp) * scale[c];
  }
  return TS_OK;
}

const ts_op ts_op_DequantizeLinear = {
    .domain = "", .name = "DequantizeLinear",
    .min_inputs = 2, .max_inputs = 3, .min_outputs = 1, .max_outputs = 1,
    .prepare = dq_prepare, .infer = dq_infer, .run = dq_run,
};

/* ---- reduced-precision weights of products ------------------------------- */

static const ts_tensor *const_in(const ts_graph *g, const ts_node *n, int j) {
  int v = j < n->n_inputs ? n->inputs[j] : -1;
  return v >= 0 ? g->values[v].constant : NULL;
}

bool ts_reduced_weight_of(const ts_graph *g, int node, ts_reduced_weight *out) {
  const ts_node *n = &g->nodes[node];
  const ts_tensor *w = const_in(g, n, 0);
  if (!w || w->rank != 2 || n->n_outputs != 1 || n->outputs[0] < 0)
    return false;
  memset(out, 0, sizeof *out);
  out->value = n->inputs[0];
  out->dtype = w->dtype;
  out->axis = -1;
  if (strcmp(n->op_type, "Cast") == 0 && n->domain[0] == '\0')
    return (w->dtype == TS_DTYPE_FLOAT16 || w->dtype == TS_DTYPE_BFLOAT16) &&
           ts_attr_int(n, "to", 0) == TS_DTYPE_FLOAT;
  if (strcmp(n->op_type, "DequantizeLinear") != 0 || n->domain[0] != '\0' ||
      w->dtype != TS_DTYPE_INT8)
    return false;
  const ts_tensor *s = const_in(g, n, 1);
  const ts_tensor *z = const_in(g, n, 2);
  if (!s || s->dtype != TS_DTYPE_FLOAT || s->rank > 1) return false;
  if (n->n_inputs > 2 && n->inputs[2] >= 0 && !z) return false;
  int64_t count = s->rank == 0 ? 1 : s->dims[0];
  if (s->rank == 1 && count != 1) {
    int64_t a = n->opset >= 13 ? ts_attr_int(n, "axis", 1) : -100;
    if (a < 0) a += 2;
    if ((a != 0 && a != 1) || w->dims[a] != count) return false;
    out->axis = (int)a;
  }
  if (z) {
    if (z->dtype != TS_DTYPE_INT8 || ts_shape_numel(z->dims, z->rank) != count)
      return false;
    for (int64_t i = 0; i < count; i++)
      if (((const int8_t *)z->data)[i] != 0) return false;
  }
  out->scales = s->data;
  out->n_scales = count;
  return true;
}

/* True when node n is a product that can read reduced weight rw (value
 * v) as its packed B: a Gemm without transA or a MatMul, reading v only as
 * B, rw's scales (if per axis) along B's output columns. The products'
 * prepack (core.c) fuses exactly these. */
static bool fuses(const ts_node *n, int v, const ts_reduced_weight *rw) {
  if (n->domain[0] != '\0') return false;
  int col_axis = 1;
  if (strcmp(n->op_type, "Gemm") == 0) {
    if (ts_attr_int(n, "transA", 0)) return false;
    col_axis = ts_attr_int(n, "transB", 0) ? 0 : 1;
  } else if (strcmp(n->op_type, "MatMul") != 0) {
    return false;
  }
  if (rw->axis >= 0 && rw->axis != col_axis) return false;
  for (int j = 0; j < n->n_inputs; j++)
    if (n->inputs[j] == v && j != 1) return false;
  return true;
}

bool ts_reduced_weight_keep(const ts_graph *g, int node) {
  ts_reduced_weight rw;
  if (!ts_reduced_weight_of(g, node, &rw)) return false;
  int v = g->nodes[node].outputs[0];
  if (g->values[v].is_graph_output) return false;
  int readers = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const ts_node *c = &g->nodes[i];
    bool reads = false;
    for (int j = 0; j < c->n_inputs && !reads; j++) reads = c->inputs[j] == v;
    if (!reads) continue;
    if (!fuses(c, v, &rw)) return false;
    readers++;
  }
  return readers > 0;
}
