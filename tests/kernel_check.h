/*
 * kernel_check.h - header-only helpers for kernel and graph tests.
 *
 * tests/meson.build builds every suite from one .c file, so this header is
 * all `static inline`: include it after <check.h> in any tests/test_*.c.
 * Everything is prefixed kc_.
 *
 * Random data (deterministic, seedable):
 *   kc_rng r = kc_rng_seed(42);
 *   double x = kc_uniform(&r, -1, 1);   int64_t i = kc_randint(&r, 1, 7);
 *   kc_rand_dims(&r, rank, lo, hi, dims);          random shape
 *   kc_tensor_rand(&t, TS_DTYPE_FLOAT, rank, dims, &r, -1, 1);   owned
 *   kc_tensor_from(&t, TS_DTYPE_INT64, rank, dims, (double[]){...});
 *
 * Element access and indexing for naive references:
 *   kc_get(t, i) / kc_set(t, i, v)     element i of any numeric dtype as double
 *   kc_unravel(flat, dims, rank, idx)  flat index -> multi-index
 *   kc_bcast_offset(idx, out_rank, dims, rank)   flat offset into a tensor of
 *                                      shape dims that broadcasts to the
 *                                      output at multi-index idx (numpy rules)
 *
 * Comparing against a float64 reference:
 *   kc_assert_close(&got, ref, ref_dims, ref_rank, rtol, atol, "what");
 *     checks the shape, then |got - ref| <= atol + rtol * |ref| elementwise
 *     (NaN must match NaN, inf must match inf), failing with the first bad
 *     index, both values and `what`.
 *
 * Building ONNX models in C (protobuf-c; every piece malloc'd, so
 * kc_model_free = onnx__model_proto__free_unpacked frees it all):
 *   Onnx__ModelProto *m = kc_model_new(13);        default-domain opset 13
 *   kc_model_opset(m, "ai.onnx.ml", 3);
 *   kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, 4}); -1 = "N"
 *   kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);  rank -1: no shape
 *   kc_model_init(m, "w", &tensor);                initializer (raw_data)
 *   Onnx__NodeProto *n = kc_model_node(m, "Gemm", "", "fc", "x,w,b", "y");
 *   kc_attr_int(n, "transB", 1);  kc_attr_float / kc_attr_string /
 *   kc_attr_ints / kc_attr_floats / kc_attr_strings / kc_attr_tensor
 *   uint8_t *bytes = kc_model_pack(m, &len);       malloc'd, caller frees
 *   int rc = kc_model_load(m, &model, &err);  pack, ts_model_load, prepack
 *   rc = kc_load_code(m, &err);       load, free both, return the code
 *   kc_model_free(m);
 *   Names in kc_model_node are comma-separated; an empty entry ("x,,b") is
 *   an omitted optional input/output.
 *
 * Running one op:
 *   const ts_tensor *in[] = {&a, &b, NULL};        NULL = omitted input
 *   Onnx__NodeProto *node;
 *   Onnx__ModelProto *m = kc_op_model("Gemm", "", 13, in, 3, 0, 1, &node);
 *   kc_attr_int(node, "transA", 1);
 *   ts_tensor y;  ts_err err;
 *   int rc = kc_model_run(m, in, 3, 0, &y, 1, &err);    y owned: free it
 *   kc_model_free(m);
 *   Inputs are named x0.. and outputs y0..; bit i of const_mask makes input
 *   i an initializer (a load-time constant) instead of a graph input. The
 *   op's own domain is imported at `opset`; a non-default domain also
 *   imports the default domain at 17.
 *   kc_run_op(...) does all of that in one call for ops without attributes.
 *
 * Suites have no main() of their own: check_main.h describes the runner.
 */
#ifndef TS_KERNEL_CHECK_H
#define TS_KERNEL_CHECK_H

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "graph.h"
#include "ops.h"
#include "tensor.h"

/* ---- random numbers (splitmix64) ----------------------------------------- */

typedef struct kc_rng {
  uint64_t s;
} kc_rng;

static inline kc_rng kc_rng_seed(uint64_t seed) {
  kc_rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
  return r;
}

static inline uint64_t kc_next(kc_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline double kc_uniform(kc_rng *r, double lo, double hi) {
  return lo + (hi - lo) * ((double)(kc_next(r) >> 11) / 9007199254740992.0);
}

/* Uniform integer in [lo, hi]. */
static inline int64_t kc_randint(kc_rng *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)(kc_next(r) % (uint64_t)(hi - lo + 1));
}

static inline void kc_rand_dims(kc_rng *r, int rank, int64_t lo, int64_t hi,
                                int64_t *dims) {
  for (int i = 0; i < rank; i++) dims[i] = kc_randint(r, lo, hi);
}

/* ---- element access ------------------------------------------------------ */

static inline double kc_get(const ts_tensor *t, int64_t i) {
  const void *p = (const uint8_t *)t->data + (size_t)i * ts_dtype_size(t->dtype);
  switch (t->dtype) {
    case TS_DTYPE_FLOAT: return *(const float *)p;
    case TS_DTYPE_DOUBLE: return *(const double *)p;
    case TS_DTYPE_INT8: return *(const int8_t *)p;
    case TS_DTYPE_UINT8: return *(const uint8_t *)p;
    case TS_DTYPE_INT16: return *(const int16_t *)p;
    case TS_DTYPE_UINT16: return *(const uint16_t *)p;
    case TS_DTYPE_INT32: return *(const int32_t *)p;
    case TS_DTYPE_UINT32: return *(const uint32_t *)p;
    case TS_DTYPE_INT64: return (double)*(const int64_t *)p;
    case TS_DTYPE_UINT64: return (double)*(const uint64_t *)p;
    case TS_DTYPE_BOOL: return *(const uint8_t *)p ? 1 : 0;
    default: ck_abort_msg("kc_get: unsupported dtype %d", (int)t->dtype);
  }
  return 0;
}

/* v for an unsigned type: a negative value modulo 2^64 (then 2^bits, as
 * C's integer conversions do); a negative double cast straight to an
 * unsigned type is undefined. */
static inline uint64_t kc_unsigned(double v) {
  return v < 0 ? (uint64_t)(int64_t)v : (uint64_t)v;
}

static inline void kc_set(ts_tensor *t, int64_t i, double v) {
  void *p = (uint8_t *)t->data + (size_t)i * ts_dtype_size(t->dtype);
  switch (t->dtype) {
    case TS_DTYPE_FLOAT: *(float *)p = (float)v; break;
    case TS_DTYPE_DOUBLE: *(double *)p = v; break;
    case TS_DTYPE_INT8: *(int8_t *)p = (int8_t)v; break;
    case TS_DTYPE_UINT8: *(uint8_t *)p = (uint8_t)kc_unsigned(v); break;
    case TS_DTYPE_INT16: *(int16_t *)p = (int16_t)v; break;
    case TS_DTYPE_UINT16: *(uint16_t *)p = (uint16_t)kc_unsigned(v); break;
    case TS_DTYPE_INT32: *(int32_t *)p = (int32_t)v; break;
    case TS_DTYPE_UINT32: *(uint32_t *)p = (uint32_t)kc_unsigned(v); break;
    case TS_DTYPE_INT64: *(int64_t *)p = (int64_t)v; break;
    case TS_DTYPE_UINT64: *(uint64_t *)p = (uint64_t)kc_unsigned(v); break;
    case TS_DTYPE_BOOL: *(uint8_t *)p = v != 0; break;
    default: ck_abort_msg("kc_set: unsupported dtype %d", (int)t->dtype);
  }
}

/* Allocates t (owned) and fills it from vals (numel doubles). */
static inline void kc_tensor_from(ts_tensor *t, ts_dtype dtype, int rank,
                                  const int64_t *dims, const double *vals) {
  ts_err err;
  int rc = ts_tensor_alloc(t, dtype, dims, rank, &err);
  ck_assert_msg(rc == 0, "kc_tensor_from: %s", err.msg);
  int64_t n = ts_tensor_numel(t);
  for (int64_t i = 0; i < n && vals; i++) kc_set(t, i, vals[i]);
}

/* Allocates t (owned) with uniform values in [lo, hi) (integers rounded
 * down; bool 0/1). */
static inline void kc_tensor_rand(ts_tensor *t, ts_dtype dtype, int rank,
                                  const int64_t *dims, kc_rng *r, double lo,
                                  double hi) {
  kc_tensor_from(t, dtype, rank, dims, NULL);
  int64_t n = ts_tensor_numel(t);
  bool integral = dtype != TS_DTYPE_FLOAT && dtype != TS_DTYPE_DOUBLE;
  for (int64_t i = 0; i < n; i++) {
    double v = kc_uniform(r, lo, hi);
    kc_set(t, i, integral ? floor(v) : v);
  }
}

/* A malloc'd copy of t's elements as doubles (caller frees). */
static inline double *kc_to_f64(const ts_tensor *t) {
  int64_t n = ts_tensor_numel(t);
  double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
  ck_assert(d != NULL);
  for (int64_t i = 0; i < n; i++) d[i] = kc_get(t, i);
  return d;
}

static inline void kc_unravel(int64_t flat, const int64_t *dims, int rank,
                              int64_t *idx) {
  for (int i = rank - 1; i >= 0; i--) {
    idx[i] = dims[i] ? flat % dims[i] : 0;
    flat = dims[i] ? flat / dims[i] : 0;
  }
}

/* Flat offset into a tensor of shape dims[rank] that broadcasts (numpy
 * rules, right-aligned, size-1 dims repeat) to an output of rank out_rank,
 * at output multi-index idx. */
static inline int64_t kc_bcast_offset(const int64_t *idx, int out_rank,
                                      const int64_t *dims, int rank) {
  int64_t off = 0;
  for (int i = 0; i < rank; i++) {
    int64_t j = idx[out_rank - rank + i];
    off = off * dims[i] + (dims[i] == 1 ? 0 : j);
  }
  return off;
}

/* ---- comparison ---------------------------------------------------------- */

static inline void kc_assert_shape(const ts_tensor *got, const int64_t *dims,
                                   int rank, const char *what) {
  char a[128], b[128];
  ck_assert_msg(got->rank == rank &&
                    (rank == 0 ||
                     memcmp(got->dims, dims, (size_t)rank * sizeof *dims) == 0),
                "%s: shape %s, expected %s", what,
                ts_shape_str(got->dims, got->rank, a, sizeof a),
                ts_shape_str(dims, rank, b, sizeof b));
}

static inline void kc_assert_close(const ts_tensor *got, const double *ref,
                                   const int64_t *dims, int rank, double rtol,
                                   double atol, const char *what) {
  kc_assert_shape(got, dims, rank, what);
  int64_t n = ts_shape_numel(dims, rank);
  ck_assert_msg(got->nbytes == (size_t)n * ts_dtype_size(got->dtype),
                "%s: nbytes %zu does not match the shape", what, got->nbytes);
  for (int64_t i = 0; i < n; i++) {
    double g = kc_get(got, i), r = ref[i];
    bool ok;
    if (isnan(r))
      ok = isnan(g);
    else if (isinf(r))
      ok = g == r;
    else
      ok = fabs(g - r) <= atol + rtol * fabs(r);
    if (!ok) {
      int64_t idx[TS_MAX_RANK];
      char s[128];
      kc_unravel(i, dims, rank, idx);
      ck_abort_msg("%s: element %lld %s is %.9g, reference %.9g (rtol %g, "
                   "atol %g)",
                   what, (long long)i, ts_shape_str(idx, rank, s, sizeof s), g,
                   r, rtol, atol);
    }
  }
}

/* ---- building models ----------------------------------------------------- */

static inline char *kc_strdup(const char *s) {
  char *d = strdup(s ? s : "");
  ck_assert(d != NULL);
  return d;
}

/* Appends item to a protobuf-c repeated field (array + count). */
static inline void kc_push(void ***arr, size_t *n, void *item) {
  void **a = realloc(*arr, (*n + 1) * sizeof *a);
  ck_assert(a != NULL);
  a[(*n)++] = item;
  *arr = a;
}
#define KC_PUSH(arr, n, item) kc_push((void ***)&(arr), &(n), (item))

/* Imports `domain` at `version` into m. */
static inline void kc_model_opset(Onnx__ModelProto *m, const char *domain,
                                  int64_t version) {
  Onnx__OperatorSetIdProto *o = malloc(sizeof *o);
  ck_assert(o != NULL);
  onnx__operator_set_id_proto__init(o);
  o->domain = kc_strdup(domain);
  o->has_version = 1;
  o->version = version;
  KC_PUSH(m->opset_import, m->n_opset_import, o);
}

static inline Onnx__ModelProto *kc_model_new(int64_t opset) {
  Onnx__ModelProto *m = malloc(sizeof *m);
  ck_assert(m != NULL);
  onnx__model_proto__init(m);
  m->has_ir_version = 1;
  m->ir_version = 8;
  m->producer_name = kc_strdup("kernel_check");
  m->graph = malloc(sizeof *m->graph);
  ck_assert(m->graph != NULL);
  onnx__graph_proto__init(m->graph);
  m->graph->name = kc_strdup("kc");
  if (opset > 0) kc_model_opset(m, "", opset);
  return m;
}

/* A ValueInfo; dtype UNDEFINED: no type at all; rank < 0: no shape; dims
 * below 0 become symbolic ("N0", "N1", ...). */
static inline Onnx__ValueInfoProto *kc_value_info(const char *name,
                                                  ts_dtype dtype, int rank,
                                                  const int64_t *dims) {
  Onnx__ValueInfoProto *v = malloc(sizeof *v);
  ck_assert(v != NULL);
  onnx__value_info_proto__init(v);
  v->name = kc_strdup(name);
  if (dtype == TS_DTYPE_UNDEFINED) return v;
  v->type = malloc(sizeof *v->type);
  onnx__type_proto__init(v->type);
  Onnx__TypeProto__Tensor *tt = malloc(sizeof *tt);
  onnx__type_proto__tensor__init(tt);
  v->type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  v->type->tensor_type = tt;
  tt->has_elem_type = 1;
  tt->elem_type = (int32_t)dtype;
  if (rank < 0) return v;
  tt->shape = malloc(sizeof *tt->shape);
  onnx__tensor_shape_proto__init(tt->shape);
  for (int i = 0; i < rank; i++) {
    Onnx__TensorShapeProto__Dimension *d = malloc(sizeof *d);
    onnx__tensor_shape_proto__dimension__init(d);
    if (dims[i] >= 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = dims[i];
    } else {
      char p[16];
      snprintf(p, sizeof p, "N%d", i);
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = kc_strdup(p);
    }
    KC_PUSH(tt->shape->dim, tt->shape->n_dim, d);
  }
  return v;
}

static inline void kc_model_input(Onnx__ModelProto *m, const char *name,
                                  ts_dtype dtype, int rank,
                                  const int64_t *dims) {
  KC_PUSH(m->graph->input, m->graph->n_input,
          kc_value_info(name, dtype, rank, dims));
}

static inline void kc_model_output(Onnx__ModelProto *m, const char *name,
                                   ts_dtype dtype, int rank,
                                   const int64_t *dims) {
  KC_PUSH(m->graph->output, m->graph->n_output,
          kc_value_info(name, dtype, rank, dims));
}

/* A TensorProto holding a copy of t in raw_data. */
static inline Onnx__TensorProto *kc_tensor_proto(const char *name,
                                                 const ts_tensor *t) {
  Onnx__TensorProto *tp = malloc(sizeof *tp);
  ck_assert(tp != NULL);
  onnx__tensor_proto__init(tp);
  tp->name = kc_strdup(name);
  tp->has_data_type = 1;
  tp->data_type = (int32_t)t->dtype;
  tp->n_dims = (size_t)t->rank;
  tp->dims = malloc(((size_t)t->rank + 1) * sizeof *tp->dims);
  if (t->rank) memcpy(tp->dims, t->dims, (size_t)t->rank * sizeof *tp->dims);
  tp->has_raw_data = 1;
  tp->raw_data.len = t->nbytes;
  tp->raw_data.data = malloc(t->nbytes + 1);
  if (t->nbytes) memcpy(tp->raw_data.data, t->data, t->nbytes);
  return tp;
}

static inline void kc_model_init(Onnx__ModelProto *m, const char *name,
                                 const ts_tensor *t) {
  KC_PUSH(m->graph->initializer, m->graph->n_initializer,
          kc_tensor_proto(name, t));
}

/* Splits "a,b,,c" into a malloc'd array of malloc'd strings. */
static inline void kc_split_names(const char *list, char ***out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (!list || !list[0]) return;
  const char *p = list;
  for (;;) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    char *s = malloc(len + 1);
    ck_assert(s != NULL);
    memcpy(s, p, len);
    s[len] = '\0';
    KC_PUSH(*out, *n, s);
    if (!c) break;
    p = c + 1;
  }
}

static inline Onnx__NodeProto *kc_model_node(Onnx__ModelProto *m,
                                             const char *op_type,
                                             const char *domain,
                                             const char *name,
                                             const char *inputs,
                                             const char *outputs) {
  Onnx__NodeProto *n = malloc(sizeof *n);
  ck_assert(n != NULL);
  onnx__node_proto__init(n);
  n->op_type = kc_strdup(op_type);
  if (domain && domain[0]) n->domain = kc_strdup(domain);
  n->name = kc_strdup(name);
  kc_split_names(inputs, &n->input, &n->n_input);
  kc_split_names(outputs, &n->output, &n->n_output);
  KC_PUSH(m->graph->node, m->graph->n_node, n);
  return n;
}

static inline Onnx__AttributeProto *kc_attr_new(Onnx__NodeProto *n,
                                                const char *name,
                                                Onnx__AttributeProto__AttributeType type) {
  Onnx__AttributeProto *a = malloc(sizeof *a);
  ck_assert(a != NULL);
  onnx__attribute_proto__init(a);
  a->name = kc_strdup(name);
  a->has_type = 1;
  a->type = type;
  KC_PUSH(n->attribute, n->n_attribute, a);
  return a;
}

static inline void kc_attr_int(Onnx__NodeProto *n, const char *name,
                               int64_t v) {
  Onnx__AttributeProto *a =
      kc_attr_new(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  a->has_i = 1;
  a->i = v;
}

static inline void kc_attr_float(Onnx__NodeProto *n, const char *name,
                                 float v) {
  Onnx__AttributeProto *a =
      kc_attr_new(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  a->has_f = 1;
  a->f = v;
}

static inline void kc_attr_string(Onnx__NodeProto *n, const char *name,
                                  const char *v) {
  Onnx__AttributeProto *a =
      kc_attr_new(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
  a->has_s = 1;
  a->s.len = strlen(v);
  a->s.data = (uint8_t *)kc_strdup(v);
}

/* A malloc'd copy of count elements of `size` bytes (room for one even when
 * count is 0). */
static inline void *kc_copy_array(const void *v, size_t count, size_t size) {
  void *copy = malloc((count + 1) * size);
  ck_assert(copy != NULL);
  if (count) memcpy(copy, v, count * size);
  return copy;
}

static inline void kc_attr_ints(Onnx__NodeProto *n, const char *name,
                                size_t count, const int64_t *v) {
  Onnx__AttributeProto *a =
      kc_attr_new(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  a->n_ints = count;
  a->ints = kc_copy_array(v, count, sizeof *v);
}

static inline void kc_attr_floats(Onnx__NodeProto *n, const char *name,
                                  size_t count, const float *v) {
  Onnx__AttributeProto *a =
      kc_attr_new(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
  a->n_floats = count;
  a->floats = kc_copy_array(v, count, sizeof *v);
}

static inline void kc_attr_strings(Onnx__NodeProto *n, const char *name,
                                   size_t count, const char *const *v) {
  Onnx__AttributeProto *a =
      kc_attr_new(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
  a->n_strings = count;
  a->strings = malloc((count + 1) * sizeof *a->strings);
  for (size_t i = 0; i < count; i++) {
    a->strings[i].len = strlen(v[i]);
    a->strings[i].data = (uint8_t *)kc_strdup(v[i]);
  }
}

static inline void kc_attr_tensor(Onnx__NodeProto *n, const char *name,
                                  const ts_tensor *t) {
  Onnx__AttributeProto *a =
      kc_attr_new(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
  a->t = kc_tensor_proto(name, t);
}

/* Serializes m; the caller frees the bytes. */
static inline uint8_t *kc_model_pack(const Onnx__ModelProto *m, size_t *len) {
  *len = onnx__model_proto__get_packed_size(m);
  uint8_t *b = malloc(*len + 1);
  ck_assert(b != NULL);
  onnx__model_proto__pack(m, b);
  return b;
}

/* Packs m, loads it with ts_model_load and prepacks its weights as a
 * worker does (ts_model_prepack), so kernels run as they do there. */
static inline int kc_model_load(const Onnx__ModelProto *m, ts_model **out,
                                ts_err *err) {
  size_t len;
  uint8_t *b = kc_model_pack(m, &len);
  int rc = ts_model_load(b, len, out, err);
  free(b);
  if (rc == TS_OK && (rc = ts_model_prepack(*out, err)) != TS_OK) {
    ts_model_free(*out);
    *out = NULL;
  }
  return rc;
}

static inline void kc_model_free(Onnx__ModelProto *m) {
  onnx__model_proto__free_unpacked(m, NULL);
}

/* ---- running one op ------------------------------------------------------ */

static inline Onnx__ModelProto *kc_op_model(const char *op_type,
                                            const char *domain, int64_t opset,
                                            const ts_tensor *const *in,
                                            int n_in, unsigned const_mask,
                                            int n_out,
                                            Onnx__NodeProto **node) {
  bool dflt = !domain || !domain[0] || strcmp(domain, "ai.onnx") == 0;
  Onnx__ModelProto *m = kc_model_new(dflt ? opset : 17);
  if (!dflt) kc_model_opset(m, domain, opset);
  char ins[512] = "", outs[512] = "";
  size_t off = 0;
  for (int i = 0; i < n_in; i++) {
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    off += (size_t)snprintf(ins + off, sizeof ins - off, "%s%s", i ? "," : "",
                            in[i] ? name : "");
    if (!in[i]) continue;
    if (const_mask & (1u << i))
      kc_model_init(m, name, in[i]);
    else
      kc_model_input(m, name, in[i]->dtype, in[i]->rank, in[i]->dims);
  }
  off = 0;
  for (int i = 0; i < n_out; i++) {
    char name[16];
    snprintf(name, sizeof name, "y%d", i);
    off += (size_t)snprintf(outs + off, sizeof outs - off, "%s%s",
                            i ? "," : "", name);
    kc_model_output(m, name, TS_DTYPE_UNDEFINED, -1, NULL);
  }
  Onnx__NodeProto *n = kc_model_node(m, op_type, domain, "op", ins, outs);
  if (node) *node = n;
  return m;
}

/* Loads m, runs it once feeding the inputs that are not in const_mask as
 * x<i> on a session whose activation limit is `limit` bytes (0: none), and
 * stores owned copies of y0..y{n_out-1} in out[]. On failure out[] is zeroed
 * and err says why. */
static inline int kc_model_run_limited(const Onnx__ModelProto *m,
                                       const ts_tensor *const *in, int n_in,
                                       unsigned const_mask, ts_tensor *out,
                                       int n_out, size_t limit, ts_err *err) {
  ts_model *model = NULL;
  ts_session *s = NULL;
  for (int i = 0; i < n_out; i++) memset(&out[i], 0, sizeof out[i]);
  int rc = kc_model_load(m, &model, err);
  if (rc) return rc;
  rc = ts_session_create(&s, err);
  if (rc) {
    ts_model_free(model);
    return rc;
  }
  ts_session_set_activation_limit(s, limit);
  char names[16][16];
  const char *in_names[16], *out_names[16];
  ts_tensor feeds[16], results[16];
  int n_feed = 0;
  ck_assert(n_in <= 16 && n_out <= 16);
  for (int i = 0; i < n_in; i++) {
    if (!in[i] || (const_mask & (1u << i))) continue;
    snprintf(names[n_feed], sizeof names[n_feed], "x%d", i);
    in_names[n_feed] = names[n_feed];
    feeds[n_feed++] = *in[i];
  }
  char onames[16][16];
  for (int i = 0; i < n_out; i++) {
    snprintf(onames[i], sizeof onames[i], "y%d", i);
    out_names[i] = onames[i];
  }
  rc = ts_exec_run(model, s, in_names, feeds, n_feed, out_names, results,
                   n_out, err);
  for (int i = 0; i < n_out && rc == 0; i++) {
    rc = ts_tensor_alloc(&out[i], results[i].dtype, results[i].dims,
                         results[i].rank, err);
    if (!rc && results[i].nbytes)
      memcpy(out[i].data, results[i].data, results[i].nbytes);
  }
  if (rc)
    for (int i = 0; i < n_out; i++) ts_tensor_free(&out[i]);
  ts_session_free(s);
  ts_model_free(model);
  return rc;
}

/* kc_model_run_limited under a limit no test reaches (1 TiB), so that every
 * kernel test also goes through the executor's budget checks (the shape
 * dry run before a planning run, the per-step and scratch checks). */
static inline int kc_model_run(const Onnx__ModelProto *m,
                               const ts_tensor *const *in, int n_in,
                               unsigned const_mask, ts_tensor *out, int n_out,
                               ts_err *err) {
  return kc_model_run_limited(m, in, n_in, const_mask, out, n_out,
                              (size_t)1 << 40, err);
}

/* x[N,4] -> Gemm(W = w [4,3], b [3]) = h -> Softmax -> y, at opset 13: the
 * MLP of the graph and exec suites (w and b are copied into initializers). */
static inline Onnx__ModelProto *kc_mlp_model(const ts_tensor *w,
                                             const ts_tensor *b) {
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, 4});
  kc_model_init(m, "W", w);
  kc_model_init(m, "b", b);
  kc_model_node(m, "Gemm", "", "fc", "x,W,b", "h");
  kc_model_node(m, "Softmax", "", "sm", "h", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, 3});
  return m;
}

/* Loads m and returns the load's code; frees m and the loaded model. */
static inline int kc_load_code(Onnx__ModelProto *m, ts_err *err) {
  ts_model *model = NULL;
  int rc = kc_model_load(m, &model, err);
  ts_model_free(model);
  kc_model_free(m);
  return rc;
}

/* Frees t[0..n) (each as ts_tensor_free does). */
static inline void kc_tensors_free(ts_tensor *t, int n) {
  for (int i = 0; i < n; i++) ts_tensor_free(&t[i]);
}

/* kc_op_model + kc_model_run + kc_model_free, for ops without attributes. */
static inline int kc_run_op(const char *op_type, const char *domain,
                            int64_t opset, const ts_tensor *const *in,
                            int n_in, unsigned const_mask, ts_tensor *out,
                            int n_out, ts_err *err) {
  Onnx__ModelProto *m =
      kc_op_model(op_type, domain, opset, in, n_in, const_mask, n_out, NULL);
  int rc = kc_model_run(m, in, n_in, const_mask, out, n_out, err);
  kc_model_free(m);
  return rc;
}

/* ---- Gemm against a float64 product ------------------------------------- */

/* C shapes tried for an [M,N] output (kc_c_shape's rank; -1 = no C). */
enum { KC_C_NONE, KC_C_SCALAR, KC_C_N, KC_C_1N, KC_C_M1, KC_C_MN, KC_C_11,
       KC_C_COUNT };

static inline int kc_c_shape(int kind, int64_t m, int64_t n, int64_t *dims) {
  switch (kind) {
    case KC_C_SCALAR: return 0;
    case KC_C_N: dims[0] = n; return 1;
    case KC_C_1N: dims[0] = 1, dims[1] = n; return 2;
    case KC_C_M1: dims[0] = m, dims[1] = 1; return 2;
    case KC_C_MN: dims[0] = m, dims[1] = n; return 2;
    case KC_C_11: dims[0] = 1, dims[1] = 1; return 2;
    default: return -1;
  }
}

/* One Gemm node (transA ta, transB tb, alpha, beta, C of kind ckind) on
 * random inputs, bit i of const_mask making input i an initializer, run
 * through the executor and compared with a float64 product. */
static inline void kc_check_gemm(kc_rng *r, int64_t m, int64_t n, int64_t k,
                                 int ta, int tb, float alpha, float beta,
                                 int ckind, unsigned const_mask, double rtol,
                                 double atol) {
  ts_tensor a, b, c, y;
  int64_t ad[2] = {ta ? k : m, ta ? m : k}, bd[2] = {tb ? n : k, tb ? k : n};
  kc_tensor_rand(&a, TS_DTYPE_FLOAT, 2, ad, r, -1, 1);
  kc_tensor_rand(&b, TS_DTYPE_FLOAT, 2, bd, r, -1, 1);
  int64_t cd[2];
  int crank = kc_c_shape(ckind, m, n, cd);
  if (crank >= 0) kc_tensor_rand(&c, TS_DTYPE_FLOAT, crank, cd, r, -1, 1);
  const ts_tensor *in[3] = {&a, &b, crank >= 0 ? &c : NULL};
  Onnx__NodeProto *node;
  int n_in = crank >= 0 ? 3 : 2;
  Onnx__ModelProto *mp =
      kc_op_model("Gemm", "", 13, in, n_in, const_mask, 1, &node);
  kc_attr_int(node, "transA", ta);
  kc_attr_int(node, "transB", tb);
  kc_attr_float(node, "alpha", alpha);
  kc_attr_float(node, "beta", beta);
  ts_err err;
  int rc = kc_model_run(mp, in, n_in, const_mask, &y, 1, &err);
  kc_model_free(mp);
  ck_assert_msg(rc == 0, "gemm %lldx%lldx%lld: %s", (long long)m,
                (long long)n, (long long)k, err.msg);

  double *ref = calloc((size_t)(m * n + 1), sizeof *ref);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0;
      for (int64_t p = 0; p < k; p++) {
        double av = kc_get(&a, ta ? p * m + i : i * k + p);
        double bv = kc_get(&b, tb ? j * k + p : p * n + j);
        acc += av * bv;
      }
      double cv = 0;
      if (crank >= 0) {
        int64_t idx[2] = {i, j};
        cv = kc_get(&c, kc_bcast_offset(idx, 2, cd, crank));
      }
      ref[i * n + j] = alpha * acc + beta * cv;
    }
  char what[160];
  snprintf(what, sizeof what, "gemm m=%lld n=%lld k=%lld tA=%d tB=%d "
           "alpha=%g beta=%g C=%d", (long long)m, (long long)n, (long long)k,
           ta, tb, alpha, beta, ckind);
  int64_t yd[2] = {m, n};
  kc_assert_close(&y, ref, yd, 2, rtol, atol, what);
  free(ref);
  ts_tensor_free(&a);
  ts_tensor_free(&b);
  if (crank >= 0) ts_tensor_free(&c);
  ts_tensor_free(&y);
}

/* y[i*ldy + j] = alpha * sum_p a[i*lda + p] * B(p, j) + (acc ? y0 : 0) in
 * float64, B(p, j) = b[p*n + j], or b[j*k + p] when trans_b. */
static inline void kc_gemm_ref(int64_t m, int64_t n, int64_t k, const float *a,
                               int64_t lda, const float *b, bool trans_b,
                               float alpha, bool accumulate, const float *y0,
                               int64_t ldy, double *ref) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t p = 0; p < k; p++)
        s += (double)a[i * lda + p] *
             (double)(trans_b ? b[j * k + p] : b[p * n + j]);
      ref[i * ldy + j] =
          (double)alpha * s + (accumulate ? (double)y0[i * ldy + j] : 0.0);
    }
}

/* A model whose load folds float[elems] (a memory bomb when elems is
 * large): shape = Constant([elems]); big = OP(constants) of float[elems]
 * (zeros for ConstantOfShape, ones for Expand and Tile, 0..elems-1 for
 * Range); y = Add(x, big), x float[1], so the
 * folded tensor is used. The model is a few hundred bytes whatever elems
 * is; its load folds 8 bytes (shape) + 4 x elems, plus the scalar inputs
 * of Expand, Tile and Range. */
typedef enum {
  KC_FOLD_CONSTANT_OF_SHAPE,
  KC_FOLD_EXPAND,
  KC_FOLD_TILE,
  KC_FOLD_RANGE
} kc_fold_op;

static inline Onnx__ModelProto *kc_fold_model(kc_fold_op op, int64_t elems) {
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 1, (int64_t[]){1});
  Onnx__NodeProto *c = kc_model_node(m, "Constant", "", "dims", "", "shape");
  kc_attr_ints(c, "value_ints", 1, (int64_t[]){elems});
  switch (op) {
    case KC_FOLD_CONSTANT_OF_SHAPE:
      kc_model_node(m, "ConstantOfShape", "", "bomb", "shape", "big");
      break;
    case KC_FOLD_EXPAND: {
      Onnx__NodeProto *one = kc_model_node(m, "Constant", "", "one", "",
                                           "scalar");
      kc_attr_floats(one, "value_floats", 1, (float[]){1});
      kc_model_node(m, "Expand", "", "bomb", "scalar,shape", "big");
      break;
    }
    case KC_FOLD_TILE: {
      Onnx__NodeProto *one = kc_model_node(m, "Constant", "", "one", "",
                                           "scalar");
      kc_attr_floats(one, "value_floats", 1, (float[]){1});
      kc_model_node(m, "Tile", "", "bomb", "scalar,shape", "big");
      break;
    }
    case KC_FOLD_RANGE: {
      Onnx__NodeProto *n = kc_model_node(m, "Constant", "", "lo", "", "start");
      kc_attr_float(n, "value_float", 0);
      n = kc_model_node(m, "Constant", "", "hi", "", "limit");
      kc_attr_float(n, "value_float", (float)elems);
      n = kc_model_node(m, "Constant", "", "step", "", "delta");
      kc_attr_float(n, "value_float", 1);
      kc_model_node(m, "Range", "", "bomb", "start,limit,delta", "big");
      break;
    }
  }
  kc_model_node(m, "Add", "", "use", "x,big", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  return m;
}


#endif
