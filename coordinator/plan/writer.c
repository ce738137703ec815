/*
 * writer.c - writing shards out: one shard of a stage as a serialized ONNX
 * ModelProto (renamed node copies, inserted Slices, sliced initializers,
 * typed graph inputs and outputs), named by the SHA-256 of its bytes.
 *
 * precision=fp16|bf16|int8 (plan.h): the B of each Gemm and MatMul that is
 * a constant float matrix of 4 KiB or more is stored in the small type and
 * widened in front of the product by an inserted Cast or DequantizeLinear
 * (int8: symmetric, one scale per output column, max |w| / 127, rounded to
 * nearest), so the shard stays standard ONNX; every other constant keeps
 * its type.
 */
#include "plan_int.h"

#include <math.h>
#include <stdio.h>

#include "hash.h"

/* Builder for one shard's GraphProto; everything lives in `a`. */
typedef struct shard_build {
  const ctx *c;
  int s, k;
  arena a;
  Onnx__NodeProto **nodes;
  int n_nodes, cap_nodes;
  init_spec *inits;
  int n_inits, cap_inits;
  Onnx__ValueInfoProto **inputs;
  int n_inputs, cap_inputs;
  Onnx__ValueInfoProto **outputs;
  int n_outputs, cap_outputs;
  ts_err *err;
} shard_build;

static int oom(shard_build *b) {
  return ts_err_set(b->err, TS_ENOMEM, "plan: out of memory building shard");
}

/* A generated name (NULL: out of memory, or refused); refused when the
 * model already uses it, since the shard would then mean two tensors by
 * one name. */
static const char *unused_name(shard_build *b, const char *name) {
  if (!name) return oom(b), NULL;
  if (ts_graph_find_value(b->c->g, name) >= 0) {
    ts_err_set(b->err, TS_EUNSUPPORTED,
               "tensor name '%s' is used by the model and by the "
               "partitioner's naming scheme",
               name);
    return NULL;
  }
  return name;
}

static const char *fresh_name(shard_build *b, const char *base,
                              const char *suffix, int k) {
  return unused_name(b, plan_arena_printf(&b->a, "%s.%s%d", base, suffix, k));
}

/* The shard-local name of value v: the part name for values split or
 * partial in this stage, the model's name otherwise. */
static const char *local_name(shard_build *b, int v) {
  const ctx *c = b->c;
  if (c->value_stage[v] == b->s && c->value_kind[v] != VK_NONE)
    return fresh_name(b, val(c, v)->name, "part", b->k);
  return val(c, v)->name;
}

/* A ValueInfo for name with the given dtype and dims (-1 -> dim_param
 * "<name>:d<i>"; rank < 0: no shape). */
static Onnx__ValueInfoProto *value_info(shard_build *b, const char *name,
                                        ts_dtype dtype, int rank,
                                        const int64_t *dims) {
  if (dtype == TS_DTYPE_UNDEFINED) {
    ts_err_set(b->err, TS_EUNSUPPORTED,
               "tensor '%s' crosses a shard boundary but its dtype is not "
               "known statically",
               name);
    return NULL;
  }
  Onnx__ValueInfoProto *vi = plan_arena_alloc(&b->a, sizeof *vi);
  Onnx__TypeProto *tp = plan_arena_alloc(&b->a, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = plan_arena_alloc(&b->a, sizeof *tt);
  if (!vi || !tp || !tt) return oom(b), NULL;
  onnx__value_info_proto__init(vi);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  vi->name = (char *)name;
  vi->type = tp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  tt->has_elem_type = 1;
  tt->elem_type = (int32_t)dtype;
  if (rank < 0) return vi;
  Onnx__TensorShapeProto *sh = plan_arena_alloc(&b->a, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dl =
      plan_arena_alloc(&b->a, (size_t)(rank + 1) * sizeof *dl);
  if (!sh || !dl) return oom(b), NULL;
  onnx__tensor_shape_proto__init(sh);
  for (int i = 0; i < rank; i++) {
    dl[i] = plan_arena_alloc(&b->a, sizeof *dl[i]);
    if (!dl[i]) return oom(b), NULL;
    onnx__tensor_shape_proto__dimension__init(dl[i]);
    if (dims[i] >= 0) {
      dl[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      dl[i]->dim_value = dims[i];
    } else {
      dl[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      dl[i]->dim_param = plan_arena_printf(&b->a, "%s:d%d", name, i);
      if (!dl[i]->dim_param) return oom(b), NULL;
    }
  }
  sh->n_dim = (size_t)rank;
  sh->dim = dl;
  tt->shape = sh;
  return vi;
}

/* ValueInfo of model value v under `name`; for a split value, the split
 * axis holds this shard's width. */
static Onnx__ValueInfoProto *value_info_of(shard_build *b, int v,
                                           const char *name) {
  const ctx *c = b->c;
  const ts_value *x = val(c, v);
  int64_t dims[TS_MAX_RANK];
  int rank = x->rank;
  if (rank > TS_MAX_RANK) rank = -1;
  if (rank > 0) memcpy(dims, x->dims, (size_t)rank * sizeof dims[0]);
  if (rank > 0 && c->value_stage[v] == b->s &&
      (c->value_kind[v] == VK_SPLIT || c->value_kind[v] == VK_BLOCK)) {
    const lstage *st = &c->st[b->s];
    int a = st->axis < 0 ? rank - 1 : st->axis;
    int64_t start, end;
    plan_split_range(st, b->k, &start, &end);
    if (a < rank && dims[a] >= 0) dims[a] = end - start;
  }
  return value_info(b, name, x->dtype, rank, dims);
}

/* Adds a graph input for external value v once. */
static int add_input(shard_build *b, int v) {
  const char *name = val(b->c, v)->name;
  for (int q = 0; q < b->n_inputs; q++)
    if (strcmp(b->inputs[q]->name, name) == 0) return TS_OK;
  Onnx__ValueInfoProto *vi = value_info_of(b, v, name);
  if (!vi) return b->err->code;
  if (plan_grow(&b->inputs, &b->cap_inputs, b->n_inputs + 1, sizeof *b->inputs))
    return oom(b);
  b->inputs[b->n_inputs++] = vi;
  return TS_OK;
}

static int add_node(shard_build *b, Onnx__NodeProto *np) {
  if (plan_grow(&b->nodes, &b->cap_nodes, b->n_nodes + 1, sizeof *b->nodes))
    return oom(b);
  b->nodes[b->n_nodes++] = np;
  return TS_OK;
}

/* The model's name of constant v with ".slice<axis>_<start>_<end>" per
 * axis ct cuts; NULL when out of memory. */
static const char *cut_name(shard_build *b, int v, const const_cut *ct) {
  const char *name = val(b->c, v)->name;
  for (int e = 0; e < ct->n && name; e++)
    name = plan_arena_printf(&b->a, "%s.slice%d_%lld_%lld", name, ct->axis[e],
                             (long long)ct->start[e], (long long)ct->end[e]);
  if (!name) oom(b);
  return name;
}

/* Name of a constant input after cutting (interned in the shard's list). */
static const char *const_name(shard_build *b, int v, const const_cut *ct) {
  int before = b->n_inits;
  int q = plan_spec_intern(&b->inits, &b->n_inits, &b->cap_inits, v, ct);
  if (q < 0) return oom(b), NULL;
  init_spec *sp = &b->inits[q];
  if (b->n_inits > before && !(sp->name = cut_name(b, v, ct))) return NULL;
  return sp->name;
}

/* Adds a synthesized initializer (int64 vector or zeros) named `name`. */
static int add_synth(shard_build *b, const char *name, ts_dtype dtype,
                     int rank, const int64_t *dims, const void *data) {
  if (plan_grow(&b->inits, &b->cap_inits, b->n_inits + 1, sizeof *b->inits))
    return oom(b);
  init_spec *sp = &b->inits[b->n_inits];
  memset(sp, 0, sizeof *sp);
  sp->value = -1;
  sp->name = name;
  sp->dtype = dtype;
  sp->rank = rank;
  memcpy(sp->dims, dims, (size_t)rank * sizeof dims[0]);
  size_t nb = (size_t)ts_shape_nbytes(dtype, dims, rank);
  sp->data = plan_arena_alloc(&b->a, nb);
  if (!sp->data) return oom(b);
  if (data) memcpy(sp->data, data, nb);
  b->n_inits++;
  return TS_OK;
}

/* An INTS attribute. */
static Onnx__AttributeProto *ints_attr(shard_build *b, const char *name,
                                       int64_t value) {
  Onnx__AttributeProto *at = plan_arena_alloc(&b->a, sizeof *at);
  int64_t *vals = plan_arena_alloc(&b->a, sizeof *vals);
  if (!at || !vals) return NULL;
  onnx__attribute_proto__init(at);
  at->name = (char *)name;
  at->has_type = 1;
  at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  vals[0] = value;
  at->n_ints = 1;
  at->ints = vals;
  return at;
}

/* An INT attribute. */
static Onnx__AttributeProto *int_attr(shard_build *b, const char *name,
                                      int64_t value) {
  Onnx__AttributeProto *at = plan_arena_alloc(&b->a, sizeof *at);
  if (!at) return NULL;
  onnx__attribute_proto__init(at);
  at->name = (char *)name;
  at->has_type = 1;
  at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  at->has_i = 1;
  at->i = value;
  return at;
}

/* Emits a Slice taking [start, end) of x along `axis` into `out`: inputs
 * (opset >= 10) or attributes (older opsets). */
static int emit_slice(shard_build *b, const char *x, const char *out, int axis,
                      int64_t start, int64_t end) {
  Onnx__NodeProto *np = plan_arena_alloc(&b->a, sizeof *np);
  char **in = plan_arena_alloc(&b->a, 4 * sizeof *in);
  char **outs = plan_arena_alloc(&b->a, sizeof *outs);
  if (!np || !in || !outs) return oom(b);
  onnx__node_proto__init(np);
  np->op_type = "Slice";
  np->name = (char *)out;
  np->domain = "";
  in[0] = (char *)x;
  outs[0] = (char *)out;
  np->n_input = 1;
  np->input = in;
  np->n_output = 1;
  np->output = outs;
  int64_t vals[3] = {start, end, axis};
  if (b->c->m->opset >= 10) {
    static const char *const suffix[3] = {"starts", "ends", "axes"};
    int64_t one = 1;
    for (int q = 0; q < 3; q++) {
      in[q + 1] = plan_arena_printf(&b->a, "%s.%s", out, suffix[q]);
      if (!in[q + 1]) return oom(b);
      int rc = add_synth(b, in[q + 1], TS_DTYPE_INT64, 1, &one, &vals[q]);
      if (rc) return rc;
    }
    np->n_input = 4;
  } else {
    static const char *const names[3] = {"starts", "ends", "axes"};
    Onnx__AttributeProto **attrs = plan_arena_alloc(&b->a, 3 * sizeof *attrs);
    if (!attrs) return oom(b);
    for (int q = 0; q < 3; q++)
      if (!(attrs[q] = ints_attr(b, names[q], vals[q]))) return oom(b);
    np->n_attribute = 3;
    np->attribute = attrs;
  }
  return add_node(b, np);
}

static bool reduces(const shard_build *b, const ts_node *n, int j, int v);
static const char *emit_reduced(shard_build *b, const ts_node *n, int v,
                                const const_cut *ct);

/* Copies node i into the shard with its inputs and outputs renamed and its
 * constants sliced for shard k (and its B widened from a reduced
 * precision, see the opening comment). */
static int emit_node(shard_build *b, int i) {
  const ctx *c = b->c;
  const ts_node *n = &c->g->nodes[i];
  Onnx__NodeProto *np = plan_arena_alloc(&b->a, sizeof *np);
  char **in = plan_arena_alloc(&b->a, ((size_t)n->n_inputs + 1) * sizeof *in);
  char **out =
      plan_arena_alloc(&b->a, ((size_t)n->n_outputs + 1) * sizeof *out);
  if (!np || !in || !out) return oom(b);
  *np = *n->proto; /* attributes, name, domain: shared with the model */
  np->input = in;
  np->output = out;
  np->n_input = (size_t)n->n_inputs;
  np->n_output = (size_t)n->n_outputs;
  const lstage *st = &c->st[b->s];
  int rc;
  role r = c->node_role[i];
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j];
    const_cut ct;
    if (v < 0) {
      in[j] = "";
    } else if (is_const(c, v)) {
      if (!plan_input_slice(c, b->s, b->k, i, j, &ct)) {
        /* The bias of a ROW op belongs to shard 0 only. Gemm needs its C
         * before opset 11: give it zeros there. */
        if (strcmp(n->op_type, "Gemm") == 0 && c->m->opset < 11) {
          int64_t one = 1;
          in[j] = (char *)fresh_name(b, val(c, v)->name, "zero", b->k);
          if (!in[j]) return b->err->code;
          rc = add_synth(b, in[j], cst(c, v)->dtype, 1, &one, NULL);
          if (rc) return rc;
        } else {
          np->n_input = (size_t)j; /* the bias is the last input */
          break;
        }
      } else if (!(in[j] = (char *)(reduces(b, n, j, v)
                                          ? emit_reduced(b, n, v, &ct)
                                          : const_name(b, v, &ct)))) {
        return b->err->code;
      }
    } else if (j == 0 && (r == ROLE_ROW_SLICE ||
                          (r == ROLE_BLOCK && st->rows > 1))) {
      /* The shard's features of the whole input. */
      const split_op *op = plan_split_op_find(n);
      int ax = op->in_axis(n, val(c, v)->rank);
      int64_t start, end;
      plan_feature_range(st, r, b->k, &start, &end);
      in[j] = (char *)fresh_name(b, val(c, v)->name, "rows", b->k);
      if (!in[j]) return b->err->code;
      if ((rc = add_input(b, v))) return rc;
      rc = emit_slice(b, val(c, v)->name, in[j], ax, start, end);
      if (rc) return rc;
    } else {
      if (!(in[j] = (char *)local_name(b, v))) return b->err->code;
      int p = val(c, v)->producer;
      if ((p < 0 || c->node_stage[p] != b->s) && (rc = add_input(b, v)))
        return rc;
    }
  }
  for (int j = 0; j < n->n_outputs; j++) {
    int v = n->outputs[j];
    out[j] = v < 0 ? "" : (char *)local_name(b, v);
    if (!out[j]) return b->err->code;
  }
  return add_node(b, np);
}

/* Copies the box [lo, hi) of a row-major tensor (dims, rank, element size
 * esz) to dst, one contiguous run per index of the axes outside the
 * innermost cut axis `a` (axes after `a` are whole). */
static void box_copy(uint8_t *dst, const uint8_t *src, const int64_t *dims,
                     int rank, size_t esz, const int64_t *lo,
                     const int64_t *hi, int a) {
  int64_t stride[TS_MAX_RANK], idx[TS_MAX_RANK];
  int64_t s = (int64_t)esz;
  for (int d = rank - 1; d >= 0; d--) {
    stride[d] = s;
    s *= dims[d];
  }
  size_t run = (size_t)((hi[a] - lo[a]) * stride[a]);
  for (int d = 0; d < a; d++) idx[d] = lo[d];
  for (;;) {
    int64_t off = lo[a] * stride[a];
    for (int d = 0; d < a; d++) off += idx[d] * stride[d];
    memcpy(dst, src + off, run);
    dst += run;
    int d = a - 1;
    while (d >= 0 && ++idx[d] == hi[d]) idx[d] = lo[d], d--;
    if (d < 0) return;
  }
}

/* The bytes of a model constant's spec sp and its dims (cut data copied
 * into the arena, whole constants referenced); NULL when out of memory. */
static const void *spec_payload(shard_build *b, const init_spec *sp,
                                int64_t *dims, size_t *len) {
  const ts_tensor *t = cst(b->c, sp->value);
  memcpy(dims, t->dims, (size_t)t->rank * sizeof *dims);
  if (sp->cut.n == 0) {
    *len = t->nbytes;
    return t->data ? t->data : (const void *)"";
  }
  int64_t lo[TS_MAX_RANK] = {0}, hi[TS_MAX_RANK];
  int inner = 0;
  memcpy(hi, t->dims, (size_t)t->rank * sizeof *hi);
  for (int q = 0; q < sp->cut.n; q++) {
    int a = sp->cut.axis[q];
    lo[a] = sp->cut.start[q];
    hi[a] = sp->cut.end[q];
    dims[a] = hi[a] - lo[a];
    if (a > inner) inner = a;
  }
  *len = plan_spec_bytes(b->c, sp);
  uint8_t *data = plan_arena_alloc(&b->a, *len ? *len : 1);
  if (!data) return oom(b), NULL;
  if (*len)
    box_copy(data, t->data, t->dims, t->rank, ts_dtype_size(t->dtype), lo, hi,
             inner);
  return data;
}

/* Builds the TensorProto of one initializer spec; cut data is copied into
 * the arena, whole constants are referenced. */
static Onnx__TensorProto *tensor_proto(shard_build *b, const init_spec *sp) {
  const ctx *c = b->c;
  Onnx__TensorProto *tp = plan_arena_alloc(&b->a, sizeof *tp);
  int64_t *dims = plan_arena_alloc(&b->a, TS_MAX_RANK * sizeof *dims);
  if (!tp || !dims) return oom(b), NULL;
  onnx__tensor_proto__init(tp);
  tp->name = (char *)sp->name;
  tp->has_data_type = 1;
  tp->has_raw_data = 1;
  if (sp->value < 0) {
    tp->data_type = (int32_t)sp->dtype;
    memcpy(dims, sp->dims, (size_t)sp->rank * sizeof *dims);
    tp->n_dims = (size_t)sp->rank;
    tp->dims = dims;
    tp->raw_data.data = sp->data;
    tp->raw_data.len = plan_spec_bytes(c, sp);
    return tp;
  }
  const ts_tensor *t = cst(c, sp->value);
  size_t esz = ts_dtype_size(t->dtype);
  if (esz == 0) {
    ts_err_set(b->err, TS_EUNSUPPORTED,
               "constant '%s' has dtype %s, which shards cannot carry",
               val(c, sp->value)->name, ts_dtype_name(t->dtype));
    return NULL;
  }
  tp->data_type = (int32_t)t->dtype;
  tp->n_dims = (size_t)t->rank;
  tp->dims = dims;
  size_t len;
  const void *data = spec_payload(b, sp, dims, &len);
  if (!data) return NULL;
  tp->raw_data.data = (uint8_t *)data;
  tp->raw_data.len = len;
  return tp;
}

/* ---- reduced-precision weights ------------------------------------------ */

/* Weights smaller than this stay float: the widening node and the names
 * would cost more than the bytes saved. */
#define REDUCE_MIN_BYTES 4096

/* Whether input j (value v) of node n is a weight this shard stores in a
 * reduced precision: the B of a Gemm or MatMul, a constant float matrix of
 * at least REDUCE_MIN_BYTES (before cutting). */
static bool reduces(const shard_build *b, const ts_node *n, int j, int v) {
  if (b->c->precision == TS_PRECISION_FP32 || j != 1 || n->domain[0] ||
      (strcmp(n->op_type, "Gemm") != 0 && strcmp(n->op_type, "MatMul") != 0))
    return false;
  const ts_tensor *t = cst(b->c, v);
  return t->dtype == TS_DTYPE_FLOAT && t->rank == 2 &&
         t->nbytes >= REDUCE_MIN_BYTES;
}

/* Symmetric int8 of a K x N (axis 1) or N x K (axis 0) float matrix w, one
 * scale per index of `axis` (the output columns): scale = max |w| / 127
 * (1 for an all-zero column), q = round(w / scale). TS_EUNSUPPORTED for a
 * non-finite weight, which no scale can hold. */
static int quantize_int8(shard_build *b, const char *name, const float *w,
                         const int64_t *dims, int axis, int8_t *q,
                         float *scale) {
  int64_t rows = dims[0], cols = dims[1], n = dims[axis];
  for (int64_t c = 0; c < n; c++) scale[c] = 0.0f;
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      float x = w[i * cols + j];
      if (!isfinite(x))
        return ts_err_set(b->err, TS_EUNSUPPORTED,
                          "precision=int8: weight '%s' holds a non-finite "
                          "value at [%lld, %lld]",
                          name, (long long)i, (long long)j);
      float *m = &scale[axis ? j : i];
      if (fabsf(x) > *m) *m = fabsf(x);
    }
  for (int64_t c = 0; c < n; c++) scale[c] = scale[c] > 0 ? scale[c] / 127.0f : 1.0f;
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      float r = rintf(w[i * cols + j] / scale[axis ? j : i]);
      q[i * cols + j] = (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : r);
    }
  return TS_OK;
}

/* Input j of node n (constant v, cut as ct) stored in the shard's reduced
 * precision: the small constant (and int8's scales) as initializers, the
 * Cast or DequantizeLinear that widens it, once per shard; the widened
 * name the product reads, or NULL with b->err set. */
static const char *emit_reduced(shard_build *b, const ts_node *n, int v,
                                const const_cut *ct) {
  ts_precision prec = b->c->precision;
  const char *base = cut_name(b, v, ct);
  if (!base) return NULL;
  const char *out = unused_name(b, plan_arena_printf(&b->a, "%s.float", base));
  const char *small = unused_name(
      b, plan_arena_printf(&b->a, "%s.%s", base, ts_precision_name(prec)));
  if (!out || !small) return NULL;
  for (int q = 0; q < b->n_inits; q++)
    if (strcmp(b->inits[q].name, small) == 0) return out; /* emitted */
  init_spec whole = {.value = v, .cut = *ct};
  int64_t dims[TS_MAX_RANK];
  size_t len;
  const float *w = spec_payload(b, &whole, dims, &len);
  if (!w) return NULL;
  int64_t numel = dims[0] * dims[1];
  Onnx__NodeProto *np = plan_arena_alloc(&b->a, sizeof *np);
  char **in = plan_arena_alloc(&b->a, 2 * sizeof *in);
  char **outs = plan_arena_alloc(&b->a, sizeof *outs);
  Onnx__AttributeProto **attrs = plan_arena_alloc(&b->a, sizeof *attrs);
  if (!np || !in || !outs || !attrs) return oom(b), NULL;
  onnx__node_proto__init(np);
  np->name = (char *)out;
  np->domain = "";
  in[0] = (char *)small;
  outs[0] = (char *)out;
  np->input = in;
  np->n_input = 1;
  np->output = outs;
  np->n_output = 1;
  np->attribute = attrs;
  np->n_attribute = 1;
  /* add_synth zeroes its data when given none: the small types are
   * written straight into the initializers. */
  if (prec == TS_PRECISION_INT8) {
    /* The output columns: B is K x N, or N x K under Gemm's transB. */
    int axis = strcmp(n->op_type, "Gemm") == 0 && ts_attr_int(n, "transB", 0)
                   ? 0 : 1;
    const char *sname =
        unused_name(b, plan_arena_printf(&b->a, "%s.scale", base));
    if (!sname || add_synth(b, small, TS_DTYPE_INT8, 2, dims, NULL))
      return NULL;
    int8_t *q = b->inits[b->n_inits - 1].data;
    if (add_synth(b, sname, TS_DTYPE_FLOAT, 1, &dims[axis], NULL)) return NULL;
    float *scale = b->inits[b->n_inits - 1].data;
    if (quantize_int8(b, base, w, dims, axis, q, scale)) return NULL;
    np->op_type = "DequantizeLinear";
    in[1] = (char *)sname;
    np->n_input = 2;
    attrs[0] = int_attr(b, "axis", axis);
  } else {
    bool half = prec == TS_PRECISION_FP16;
    if (add_synth(b, small, half ? TS_DTYPE_FLOAT16 : TS_DTYPE_BFLOAT16, 2,
                  dims, NULL))
      return NULL;
    uint16_t *h = b->inits[b->n_inits - 1].data;
    for (int64_t i = 0; i < numel; i++)
      h[i] = half ? ts_float_to_half(w[i]) : ts_float_to_bf16(w[i]);
    np->op_type = "Cast";
    attrs[0] = int_attr(b, "to", TS_DTYPE_FLOAT);
  }
  if (!attrs[0]) return oom(b), NULL;
  if (add_node(b, np)) return NULL;
  return out;
}

/* Builds and packs shard k of stage s into out. */
int plan_build_shard(const ctx *c, int s, int k, const ts_stage *stage,
                     const char *model_name, ts_shard *out, ts_err *err) {
  shard_build b = {.c = c, .s = s, .k = k, .err = err};
  const lstage *st = &c->st[s];
  int rc = TS_OK;
  Onnx__TensorProto **inits = NULL;
  Onnx__GraphProto gp;
  Onnx__ModelProto mp;
  int len = snprintf(out->label, sizeof out->label, "%s/s%d/k%d", model_name,
                     s, k);
  if (len < 0 || (size_t)len >= sizeof out->label)
    snprintf(out->label, sizeof out->label, "%.96s.../s%d/k%d", model_name, s,
             k);

  double flops = 0;
  for (int q = 0; q < st->n_nodes && !rc; q++) {
    rc = emit_node(&b, st->nodes[q]);
    double f =
        ts_graph_node_flops(c->m, st->nodes[q]) * plan_shard_share(st, k);
    flops += f > 0 ? f : 0;
  }
  if (rc) goto done;

  /* Outputs: the part names of the fusions, or the stage's outputs. */
  for (int q = 0; q < stage->n_outputs; q++) {
    int v = ts_graph_find_value(c->g, stage->outputs[q]);
    const char *name = st->ways > 1 ? local_name(&b, v) : val(c, v)->name;
    Onnx__ValueInfoProto *vi = name ? value_info_of(&b, v, name) : NULL;
    if (!vi) {
      rc = err->code;
      goto done;
    }
    if (plan_grow(&b.outputs, &b.cap_outputs, b.n_outputs + 1,
                  sizeof *b.outputs)) {
      rc = oom(&b);
      goto done;
    }
    b.outputs[b.n_outputs++] = vi;
  }

  inits = calloc((size_t)b.n_inits + 1, sizeof *inits);
  if (!inits) {
    rc = oom(&b);
    goto done;
  }
  out->weight_bytes = 0;
  for (int q = 0; q < b.n_inits; q++) {
    if (!(inits[q] = tensor_proto(&b, &b.inits[q]))) {
      rc = err->code;
      goto done;
    }
    out->weight_bytes += inits[q]->raw_data.len;
  }

  onnx__graph_proto__init(&gp);
  gp.name = out->label;
  gp.n_node = (size_t)b.n_nodes;
  gp.node = b.nodes;
  gp.n_initializer = (size_t)b.n_inits;
  gp.initializer = inits;
  gp.n_input = (size_t)b.n_inputs;
  gp.input = b.inputs;
  gp.n_output = (size_t)b.n_outputs;
  gp.output = b.outputs;
  onnx__model_proto__init(&mp);
  const Onnx__ModelProto *src = c->m->proto;
  mp.has_ir_version = src->has_ir_version;
  mp.ir_version = src->ir_version;
  mp.n_opset_import = src->n_opset_import;
  mp.opset_import = src->opset_import;
  mp.producer_name = "tessera-plan";
  mp.graph = &gp;
  out->len = onnx__model_proto__get_packed_size(&mp);
  out->bytes = malloc(out->len ? out->len : 1);
  if (!out->bytes) {
    rc = oom(&b);
    goto done;
  }
  onnx__model_proto__pack(&mp, out->bytes);
  ts_sha256_hex(out->bytes, out->len, out->id);
  out->flops = flops;

  /* The shard's own input and output names. */
  int cap = 0;
  for (int q = 0; q < b.n_inputs && !rc; q++)
    rc = plan_names_push(&out->inputs, &out->n_inputs, &cap, b.inputs[q]->name);
  cap = 0;
  for (int q = 0; q < b.n_outputs && !rc; q++)
    rc = plan_names_push(&out->outputs, &out->n_outputs, &cap,
                         b.outputs[q]->name);
  if (rc) rc = oom(&b);

done:
  free(inits);
  free(b.nodes);
  free(b.inits);
  free(b.inputs);
  free(b.outputs);
  plan_arena_free(&b.a);
  return rc;
}
