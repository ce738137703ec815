/*
 * core.c - the "core" op family: Gemm, MatMul, Softmax, LogSoftmax, Identity,
 * Flatten, Reshape, Constant, Dropout (list in list_core.h).
 *
 * Each op follows ops.h: prepare validates attributes once at load (unknown
 * attribute -> TS_EUNSUPPORTED, wrongly typed or out-of-range value ->
 * TS_EINVAL, naming node and attribute); infer computes output shapes and
 * rejects mismatched inputs with TS_EINVAL naming the node and dims; run
 * computes into preallocated outputs and allocates nothing.
 *
 * Float matrix products go to OpenBLAS (cblas_sgemm / cblas_dgemm), except
 * those with a constant float B (Gemm's, or MatMul's when 2-D) in a model
 * a daemon packed (ts_model_prepack): their prepack column packs such a B once
 * (gemm_packed.h) and run goes over the packed panels (the small-M kernel,
 * or sgemm panel by panel for many rows) instead of letting sgemm re-pack B
 * on every call. A B that a reduced-precision weight node widens (a
 * precision=int8|fp16|bf16 shard: DequantizeLinear or Cast of a constant,
 * engine_int.h) is packed in its small type instead, the product then
 * reads that constant as its B and the node is dropped (ts_model_prepack),
 * so the float weight never exists. Integer MatMul uses a plain triple loop. Softmax subtracts the row maximum before
 * exponentiating and accumulates in double, so it neither overflows nor
 * loses the small terms.
 */
/* GCC 12's -O2 vectorizes no loop of unknown trip count ("very cheap" cost
 * model); as in elementwise.c, allow the cheap model for this file (the
 * Softmax loops). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=cheap")
#endif
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "gemm_packed.h"
#include "kernel_util.h"
#include "ops.h"

/* ---- shared helpers ------------------------------------------------------ */

#define DESC(n) ts_node_desc((n), desc, sizeof desc)

/* Fails with "node 'x' (Op): <message>". */
static int fail(const ts_node *n, ts_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(const ts_node *n, ts_err *err, int code, const char *fmt,
                ...) {
  char desc[200], msg[TS_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ts_err_set(err, code, "%s: %s", DESC(n), msg);
}

/* The optional scalar attribute `name` (ATTR_INT or ATTR_FLOAT), in *out
 * (NULL when absent), failing if it is present with another type or without
 * its value (ts_attr_int alone would silently fall back to the default). */
static int attr_scalar(const ts_node *n, const char *name,
                       Onnx__AttributeProto__AttributeType type,
                       const Onnx__AttributeProto **out, ts_err *err) {
  const Onnx__AttributeProto *a = ts_attr_find(n, name);
  bool is_int = type == ATTR_INT;
  *out = NULL;
  if (!a) return TS_OK;
  if (a->has_type && a->type != type)
    return fail(n, err, TS_EINVAL, "attribute '%s' must be %s", name,
                is_int ? "an int" : "a float");
  if (!(is_int ? a->has_i : a->has_f))
    return fail(n, err, TS_EINVAL, "attribute '%s' has no value", name);
  *out = a;
  return TS_OK;
}

/* An optional int attribute (attr_scalar), dflt when absent or wrong. */
static int attr_int(const ts_node *n, const char *name, int64_t dflt,
                    int64_t *out, ts_err *err) {
  const Onnx__AttributeProto *a;
  int rc = attr_scalar(n, name, ATTR_INT, &a, err);
  *out = a ? a->i : dflt;
  return rc;
}

/* An optional float attribute (attr_scalar), dflt when absent or wrong. */
static int attr_float(const ts_node *n, const char *name, float dflt,
                      float *out, ts_err *err) {
  const Onnx__AttributeProto *a;
  int rc = attr_scalar(n, name, ATTR_FLOAT, &a, err);
  *out = a ? a->f : dflt;
  return rc;
}

/* An int attribute that must be 0 or 1. */
static int attr_flag(const ts_node *n, const char *name, ts_err *err) {
  int64_t v;
  int rc = attr_int(n, name, 0, &v, err);
  if (rc) return rc;
  if (v != 0 && v != 1)
    return fail(n, err, TS_EINVAL, "attribute '%s' must be 0 or 1, not %lld",
                name, (long long)v);
  return TS_OK;
}

/* Normalizes axis into [0, rank) (or [0, rank] with inclusive_end). */
static int norm_axis(const ts_node *n, int64_t axis, int rank,
                     bool inclusive_end, int *out, ts_err *err) {
  int64_t hi = inclusive_end ? rank : rank - 1;
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a > hi)
    return fail(n, err, TS_EINVAL,
                "attribute 'axis' is %lld, out of range for rank %d",
                (long long)axis, rank);
  *out = (int)a;
  return TS_OK;
}

static int64_t prod(const int64_t *dims, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++) p *= dims[i];
  return p;
}

static int need_dtype(const ts_node *n, const ts_tensor *t, const char *what,
                      bool ok, ts_err *err) {
  if (ok) return TS_OK;
  return fail(n, err, TS_EUNSUPPORTED, "input %s has data type %s, which op %s "
              "does not support", what, ts_dtype_name(t->dtype), n->op_type);
}

static int copy_run(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)n, (void)ctx, (void)err;
  if (out[0].nbytes) memcpy(out[0].data, in[0]->data, out[0].nbytes);
  return TS_OK;
}

/* ---- Gemm ---------------------------------------------------------------- */

/* params of Gemm and MatMul: the attributes, parsed once, and B packed when
 * it is a constant float matrix and the model is packed (ts_model_prepack). */
typedef struct product_params {
  bool trans_a, trans_b;
  float alpha, beta;
  int b_value;            /* B's value when it may be packed; -1: never */
  ts_gemm_packed *packed; /* NULL until packed */
  bool reduced;           /* packed from a reduced-precision B, which is
                             now input 1 itself (int8, float16, bfloat16) */
} product_params;

/* A B at least this big that only its product reads is not kept twice: its
 * pages are handed back as it is packed. Smaller ones keep their original
 * (too few pages to matter). */
#define PRODUCT_DISCARD_MIN_BYTES ((size_t)1 << 20)

static void product_release(ts_node *n) {
  product_params *p = n->params;
  ts_gemm_packed_free(p->packed);
  free(p);
  n->params = NULL;
}

/* Allocates n->params and notes input 1 for packing when it is a constant
 * float matrix, A is not constant (a fully constant node is folded at load
 * and never run again) and A is not transposed (the packed kernel reads A
 * by rows). trans_b says how B is stored. */
static int product_params_init(ts_node *n, const ts_graph *g, bool trans_a,
                               bool trans_b, ts_err *err) {
  product_params *p = calloc(1, sizeof *p);
  if (!p) return ts_err_set(err, TS_ENOMEM, "out of memory");
  n->params = p;
  p->trans_a = trans_a;
  p->trans_b = trans_b;
  p->b_value = -1;
  int va = n->inputs[0], vb = n->inputs[1];
  const ts_tensor *b = vb >= 0 ? g->values[vb].constant : NULL;
  if (b && b->dtype == TS_DTYPE_FLOAT && b->rank == 2 && !trans_a &&
      !(va >= 0 && g->values[va].constant))
    p->b_value = vb;
  return TS_OK;
}

/* The panel type of a reduced weight's dtype. */
static ts_gemm_elem reduced_elem(ts_dtype t) {
  return t == TS_DTYPE_INT8      ? TS_GEMM_I8
         : t == TS_DTYPE_FLOAT16 ? TS_GEMM_F16
                                 : TS_GEMM_BF16;
}

/* Packs a B that a reduced-precision weight node widens (engine_int.h), in
 * its small type, when its scales run along B's output columns (or there
 * is one), and makes the small constant input 1; the node is dropped once
 * nothing reads it (ts_model_prepack). Not fused (TS_OK, nothing done):
 * A transposed or constant, or int8 scales along K; the node then runs. */
static int product_prepack_reduced(ts_node *n, ts_graph *g, ts_err *err) {
  product_params *p = n->params;
  int vb = n->inputs[1], va = n->inputs[0];
  int producer = g->values[vb].producer;
  ts_reduced_weight rw;
  if (producer < 0 || p->trans_a || (va >= 0 && g->values[va].constant) ||
      !ts_reduced_weight_of(g, producer, &rw))
    return TS_OK;
  int col_axis = !p->trans_b; /* the axis of B holding output columns */
  if (rw.axis >= 0 && rw.axis != col_axis) return TS_OK;
  const ts_value *w = &g->values[rw.value];
  const ts_tensor *b = w->constant;
  bool sole = w->n_consumers == 1 && g->values[vb].n_consumers == 1 &&
              b->nbytes >= PRODUCT_DISCARD_MIN_BYTES;
  int64_t k = b->dims[p->trans_b], nn = b->dims[!p->trans_b];
  p->packed = ts_gemm_pack_reduced(b->data, reduced_elem(rw.dtype), rw.scales,
                                   rw.n_scales, k, nn, p->trans_b, sole);
  if (!p->packed)
    return fail(n, err, TS_ENOMEM, "out of memory packing B (%lld x %lld)",
                (long long)k, (long long)nn);
  p->reduced = true;
  n->inputs[1] = rw.value;
  return TS_OK;
}

/* The prepack column of Gemm and MatMul: packs the B product_params_init
 * noted, discarding its original when only this node reads it and it is
 * big enough to matter, or a reduced-precision B in its small type. */
static int product_prepack(ts_node *n, ts_graph *g, ts_err *err) {
  product_params *p = n->params;
  if (!p || p->packed) return TS_OK;
  if (p->b_value < 0)
    return n->inputs[1] >= 0 ? product_prepack_reduced(n, g, err) : TS_OK;
  const ts_value *v = &g->values[p->b_value];
  ts_tensor *b = v->constant;
  bool sole = v->n_consumers == 1 && !v->is_graph_output &&
              b->nbytes >= PRODUCT_DISCARD_MIN_BYTES;
  int64_t k = b->dims[p->trans_b], nn = b->dims[!p->trans_b];
  p->packed = ts_gemm_pack(b->data, k, nn, p->trans_b, sole);
  if (!p->packed)
    return fail(n, err, TS_ENOMEM, "out of memory packing B (%lld x %lld)",
                (long long)k, (long long)nn);
  return TS_OK;
}

/* True when B is the reduced-precision constant node n packed: the one B
 * of another dtype than float a product takes. */
static bool product_reduced_b(const ts_node *n, const ts_tensor *b) {
  const product_params *p = n->params;
  return p && p->reduced && p->packed && p->packed->source == b->data;
}

/* The packed B of node n when the product runs with the constant it
 * packed; NULL when there is none. */
static const ts_gemm_packed *product_packed(const ts_node *n,
                                            const ts_tensor *b) {
  const product_params *p = n->params;
  if (!p->packed || p->packed->source != b->data) return NULL;
  return p->packed;
}

static int gemm_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const char *const known[] = {"alpha", "beta", "transA", "transB",
                                      NULL};
  float alpha, beta;
  int rc;
  if ((rc = ts_node_check_attrs(n, known, err)) ||
      (rc = attr_flag(n, "transA", err)) || (rc = attr_flag(n, "transB", err)) ||
      (rc = attr_float(n, "alpha", 1.0f, &alpha, err)) ||
      (rc = attr_float(n, "beta", 1.0f, &beta, err)) ||
      (rc = product_params_init(n, g, ts_attr_int(n, "transA", 0) != 0,
                                ts_attr_int(n, "transB", 0) != 0, err)))
    return rc;
  product_params *p = n->params;
  p->alpha = alpha;
  p->beta = beta;
  return TS_OK;
}

static int gemm_infer(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  const ts_tensor *a = in[0], *b = in[1], *c = n->n_inputs > 2 ? in[2] : NULL;
  int rc;
  if ((rc = need_dtype(n, a, "A", a->dtype == TS_DTYPE_FLOAT, err)) ||
      (rc = need_dtype(n, b, "B",
                       b->dtype == TS_DTYPE_FLOAT || product_reduced_b(n, b),
                       err)) ||
      (c && (rc = need_dtype(n, c, "C", c->dtype == TS_DTYPE_FLOAT, err))))
    return rc;
  if (a->rank != 2 || b->rank != 2)
    return fail(n, err, TS_EINVAL, "A and B must be matrices (ranks %d, %d)",
                a->rank, b->rank);
  const product_params *p = n->params;
  bool ta = p->trans_a, tb = p->trans_b;
  int64_t m = a->dims[ta], k = a->dims[!ta];
  int64_t kb = b->dims[tb], nn = b->dims[!tb];
  if (k != kb)
    return fail(n, err, TS_EINVAL,
                "inner dims differ: A gives K=%lld, B gives K=%lld",
                (long long)k, (long long)kb);
  if (c) {
    int64_t want[2] = {m, nn};
    if (c->rank > 2)
      return fail(n, err, TS_EINVAL, "C has rank %d; at most 2", c->rank);
    for (int i = 0; i < c->rank; i++) {
      int64_t d = c->dims[i], w = want[2 - c->rank + i];
      if (d != w && d != 1)
        return fail(n, err, TS_EINVAL,
                    "C dim %d is %lld; it must be 1 or %lld to broadcast to "
                    "[%lld,%lld]",
                    i, (long long)d, (long long)w, (long long)m, (long long)nn);
    }
  }
  int64_t dims[2] = {m, nn};
  return ts_tensor_set_shape(&out[0], TS_DTYPE_FLOAT, dims, 2, err);
}

/* Y = beta * broadcast(C), the starting value gemm accumulates into. */
static void gemm_fill_c(const ts_tensor *c, float beta, float *y, int64_t m,
                        int64_t nn) {
  const float *cd = c->data;
  int64_t cm = c->rank == 2 ? c->dims[0] : 1;
  int64_t cn = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
  for (int64_t i = 0; i < m; i++) {
    const float *row = cd + (cm == 1 ? 0 : i) * cn;
    float *yr = y + i * nn;
    if (cn == 1) {
      for (int64_t j = 0; j < nn; j++) yr[j] = beta * row[0];
    } else {
      for (int64_t j = 0; j < nn; j++) yr[j] = beta * row[j];
    }
  }
}

static int gemm_run(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx, (void)err;
  const ts_tensor *a = in[0], *b = in[1], *c = n->n_inputs > 2 ? in[2] : NULL;
  const product_params *p = n->params;
  bool ta = p->trans_a, tb = p->trans_b;
  float alpha = p->alpha, beta = p->beta;
  int64_t m = out[0].dims[0], nn = out[0].dims[1];
  int64_t k = a->dims[!ta];
  float *y = out[0].data;
  if (m == 0 || nn == 0) return TS_OK;
  bool use_c = c && beta != 0.0f;
  if (use_c)
    gemm_fill_c(c, beta, y, m, nn);
  else
    memset(y, 0, (size_t)(m * nn) * sizeof *y);
  if (k == 0) return TS_OK;
  const ts_gemm_packed *packed = ta ? NULL : product_packed(n, b);
  if (packed) {
    ts_gemm_packed_run(packed, m, a->data, k, alpha, use_c, y, nn);
    return TS_OK;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)nn,
              (blasint)k, alpha, a->data, (blasint)a->dims[1], b->data,
              (blasint)b->dims[1], use_c ? 1.0f : 0.0f, y, (blasint)nn);
  return TS_OK;
}

const ts_op ts_op_Gemm = {
    .domain = "", .name = "Gemm",
    .min_inputs = 2, .max_inputs = 3, .min_outputs = 1, .max_outputs = 1,
    .prepare = gemm_prepare, .prepack = product_prepack,
    .release = product_release,
    .infer = gemm_infer, .run = gemm_run,
};

/* ---- MatMul -------------------------------------------------------------- */

/* The numpy view of a MatMul: batch dims broadcast, each operand promoted to
 * a matrix ([K] -> [1,K] for A, [K] -> [K,1] for B). */
typedef struct mm_shape {
  int64_t m, k, n;
  int batch_rank;
  int64_t batch[TS_MAX_RANK];     /* broadcast batch dims */
  int64_t a_stride[TS_MAX_RANK];  /* per batch dim, in matrices; 0 = bcast */
  int64_t b_stride[TS_MAX_RANK];
  int64_t n_batch;
} mm_shape;

static int mm_analyze(const ts_node *n, const ts_tensor *a, const ts_tensor *b,
                      mm_shape *s, int64_t *out_dims, int *out_rank,
                      ts_err *err) {
  if (a->rank < 1 || b->rank < 1)
    return fail(n, err, TS_EINVAL, "inputs must have rank >= 1 (%d, %d)",
                a->rank, b->rank);
  s->m = a->rank == 1 ? 1 : a->dims[a->rank - 2];
  s->k = a->dims[a->rank - 1];
  int64_t kb = b->rank == 1 ? b->dims[0] : b->dims[b->rank - 2];
  s->n = b->rank == 1 ? 1 : b->dims[b->rank - 1];
  if (s->k != kb) {
    char sa[128], sb[128];
    return fail(n, err, TS_EINVAL,
                "shapes %s and %s do not multiply: K is %lld vs %lld",
                ts_shape_str(a->dims, a->rank, sa, sizeof sa),
                ts_shape_str(b->dims, b->rank, sb, sizeof sb),
                (long long)s->k, (long long)kb);
  }
  int ra = a->rank > 2 ? a->rank - 2 : 0, rb = b->rank > 2 ? b->rank - 2 : 0;
  int r = ra > rb ? ra : rb;
  s->batch_rank = r;
  int64_t sa_acc = 1, sb_acc = 1;
  for (int i = r - 1; i >= 0; i--) {
    int ia = i - (r - ra), ib = i - (r - rb);
    int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
    if (da != db && da != 1 && db != 1)
      return fail(n, err, TS_EINVAL,
                  "batch dims do not broadcast: %lld vs %lld at batch dim %d",
                  (long long)da, (long long)db, i);
    s->batch[i] = da == 1 ? db : da;
    s->a_stride[i] = da == 1 ? 0 : sa_acc;
    s->b_stride[i] = db == 1 ? 0 : sb_acc;
    sa_acc *= da;
    sb_acc *= db;
  }
  s->n_batch = prod(s->batch, 0, r);
  int orank = 0;
  for (int i = 0; i < r; i++) out_dims[orank++] = s->batch[i];
  if (a->rank > 1) out_dims[orank++] = s->m;
  if (b->rank > 1) out_dims[orank++] = s->n;
  *out_rank = orank;
  return TS_OK;
}

static bool mm_dtype_ok(ts_dtype t) {
  return t == TS_DTYPE_FLOAT || t == TS_DTYPE_DOUBLE || t == TS_DTYPE_INT32 ||
         t == TS_DTYPE_INT64;
}

static int matmul_infer(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_err *err) {
  const ts_tensor *a = in[0], *b = in[1];
  int rc;
  if ((rc = need_dtype(n, a, "A", mm_dtype_ok(a->dtype), err))) return rc;
  if (a->dtype != b->dtype &&
      !(a->dtype == TS_DTYPE_FLOAT && product_reduced_b(n, b)))
    return fail(n, err, TS_EINVAL, "inputs have different data types (%s, %s)",
                ts_dtype_name(a->dtype), ts_dtype_name(b->dtype));
  mm_shape s;
  int64_t dims[TS_MAX_RANK];
  int rank;
  if ((rc = mm_analyze(n, a, b, &s, dims, &rank, err))) return rc;
  return ts_tensor_set_shape(&out[0], a->dtype, dims, rank, err);
}

/* Naive integer matrix product for one batch element. */
#define MM_NAIVE(T)                                                        \
  static void mm_naive_##T(const T *a, const T *b, T *y, int64_t m,       \
                           int64_t k, int64_t nn) {                       \
    for (int64_t i = 0; i < m; i++)                                       \
      for (int64_t j = 0; j < nn; j++) {                                  \
        T acc = 0;                                                        \
        for (int64_t p = 0; p < k; p++)                                   \
          acc = (T)((uint64_t)acc + (uint64_t)a[i * k + p] * (uint64_t)b[p * nn + j]); \
        y[i * nn + j] = acc;                                              \
      }                                                                   \
  }
MM_NAIVE(int32_t)
MM_NAIVE(int64_t)
#undef MM_NAIVE

static void mm_one(ts_dtype t, const void *a, const void *b, void *y,
                   int64_t m, int64_t k, int64_t nn) {
  switch (t) {
    case TS_DTYPE_FLOAT:
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m,
                  (blasint)nn, (blasint)k, 1.0f, a, (blasint)k, b, (blasint)nn,
                  0.0f, y, (blasint)nn);
      break;
    case TS_DTYPE_DOUBLE:
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m,
                  (blasint)nn, (blasint)k, 1.0, a, (blasint)k, b, (blasint)nn,
                  0.0, y, (blasint)nn);
      break;
    case TS_DTYPE_INT32: mm_naive_int32_t(a, b, y, m, k, nn); break;
    case TS_DTYPE_INT64: mm_naive_int64_t(a, b, y, m, k, nn); break;
    default: break;
  }
}

static int matmul_run(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx;
  const ts_tensor *a = in[0], *b = in[1];
  mm_shape s;
  int64_t dims[TS_MAX_RANK];
  int rank;
  int rc = mm_analyze(n, a, b, &s, dims, &rank, err);
  if (rc) return rc;
  if (out[0].nbytes == 0) return TS_OK;
  size_t es = ts_dtype_size(a->dtype);
  if (s.k == 0) {
    memset(out[0].data, 0, out[0].nbytes);
    return TS_OK;
  }
  const uint8_t *ad = a->data, *bd = b->data;
  uint8_t *yd = out[0].data;
  size_t a_mat = (size_t)(s.m * s.k) * es, b_mat = (size_t)(s.k * s.n) * es;
  size_t y_mat = (size_t)(s.m * s.n) * es;
  bool b_shared = true, a_full = true;
  for (int i = 0; i < s.batch_rank; i++) {
    if (s.b_stride[i] != 0 && s.batch[i] != 1) b_shared = false;
    if (s.a_stride[i] == 0 && s.batch[i] != 1) a_full = false;
  }
  if (b_shared && a_full) {
    /* One B for all batches and A laid out densely: one big product. */
    const ts_gemm_packed *packed =
        a->dtype == TS_DTYPE_FLOAT ? product_packed(n, b) : NULL;
    if (packed)
      ts_gemm_packed_run(packed, s.m * s.n_batch, a->data, s.k, 1.0f, false,
                         out[0].data, s.n);
    else
      mm_one(a->dtype, ad, bd, yd, s.m * s.n_batch, s.k, s.n);
    return TS_OK;
  }
  int64_t idx[TS_MAX_RANK] = {0};
  for (int64_t bi = 0; bi < s.n_batch; bi++) {
    int64_t ao = 0, bo = 0;
    for (int i = 0; i < s.batch_rank; i++) {
      ao += idx[i] * s.a_stride[i];
      bo += idx[i] * s.b_stride[i];
    }
    mm_one(a->dtype, ad + (size_t)ao * a_mat, bd + (size_t)bo * b_mat,
           yd + (size_t)bi * y_mat, s.m, s.k, s.n);
    for (int i = s.batch_rank - 1; i >= 0; i--) {
      if (++idx[i] < s.batch[i]) break;
      idx[i] = 0;
    }
  }
  return TS_OK;
}

static int no_attrs_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  static const char *const known[] = {NULL};
  return ts_node_check_attrs(n, known, err);
}

static int matmul_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  int rc = no_attrs_prepare(n, g, err);
  return rc ? rc : product_params_init(n, g, false, false, err);
}

const ts_op ts_op_MatMul = {
    .domain = "", .name = "MatMul",
    .min_inputs = 2, .max_inputs = 2, .min_outputs = 1, .max_outputs = 1,
    .prepare = matmul_prepare, .prepack = product_prepack,
    .release = product_release,
    .infer = matmul_infer, .run = matmul_run,
};

/* ---- Softmax / LogSoftmax ------------------------------------------------ */

/* prepare of ops whose one attribute is an int `axis` (Softmax, LogSoftmax,
 * Flatten); its range is checked by infer, once the rank is known. */
static int axis_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  static const char *const known[] = {"axis", NULL};
  int64_t axis;
  int rc = ts_node_check_attrs(n, known, err);
  if (!rc) rc = attr_int(n, "axis", 0, &axis, err);
  return rc;
}

/* Splits the input into outer x len x inner around the softmax axis: opset
 * 13 normalizes along one axis; older opsets flatten to 2-D at `axis`. */
static int softmax_layout(const ts_node *n, const ts_tensor *x, int64_t *outer,
                          int64_t *len, int64_t *inner, ts_err *err) {
  bool v13 = n->opset >= 13;
  int axis;
  int64_t raw = ts_attr_int(n, "axis", v13 ? -1 : 1);
  int rc = norm_axis(n, raw, x->rank, !v13, &axis, err);
  if (rc) return rc;
  if (x->rank == 0)
    return fail(n, err, TS_EINVAL, "input must have rank >= 1");
  *outer = prod(x->dims, 0, axis);
  if (v13) {
    *len = x->dims[axis];
    *inner = prod(x->dims, axis + 1, x->rank);
  } else {
    *len = prod(x->dims, axis, x->rank);
    *inner = 1;
  }
  return TS_OK;
}

static int softmax_infer(const ts_node *n, const ts_tensor *const *in,
                         ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0];
  int rc = need_dtype(n, x, "input", x->dtype == TS_DTYPE_FLOAT, err);
  if (rc) return rc;
  int64_t o, l, i;
  if ((rc = softmax_layout(n, x, &o, &l, &i, err))) return rc;
  return ts_tensor_set_shape(&out[0], x->dtype, x->dims, x->rank, err);
}

/* The Softmax loops are compiled without -ftrapping-math: with it GCC may
 * not evaluate exp_nonpositive()'s arithmetic for every lane under its
 * selects, and vectorises nothing. Tessera never reads the floating-point
 * exception flags, and values do not change. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

/* e^x for x <= 0, -inf or NaN (Softmax's x - max), in straight-line float
 * code that the compiler vectorises, where a call to expf per element
 * does not. Cephes' expf: x = n ln2 + r with n = round(x / ln2) and ln2
 * in two parts (n ln2_hi is exact), e^r by a degree-7 polynomial on
 * |r| <= ln2 / 2, times 2^n applied as two halves so that results below
 * FLT_MIN come out as correctly scaled subnormals. Within 2 ulp of expf
 * over [-104, 0]; below -104 the result rounds to 0 (e^-104 < 2^-149 / 2),
 * -inf gives 0 and NaN stays NaN. */
static inline float exp_nonpositive(float x) {
  const float xc = x >= -110.0f ? x : -110.0f; /* NaN, -inf: -110 */
  const float magic = 12582912.0f;             /* 1.5 * 2^23: rounds */
  const float fn = (xc * 1.44269504088896341f + magic) - magic;
  const float r = (xc - fn * 0.693359375f) - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t n = (int32_t)fn, n1 = n / 2, n2 = n - n1;
  const int32_t b1 = (n1 + 127) * (1 << 23), b2 = (n2 + 127) * (1 << 23);
  float s1, s2; /* 2^n1, 2^n2 */
  memcpy(&s1, &b1, sizeof s1);
  memcpy(&s2, &b2, sizeof s2);
  const float y = e * s1 * s2;
  return x == x ? y : x;
}

/* Sum in double of v[0..len), in 8 independent partial sums (vectorised;
 * the order differs from a serial sum only within double precision). */
static double sum_double(const float *v, int64_t len) {
  double part[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= len; j += 8)
    for (int l = 0; l < 8; l++) part[l] += v[j + l];
  for (; j < len; j++) part[0] += v[j];
  double sum = 0;
  for (int l = 0; l < 8; l++) sum += part[l];
  return sum;
}

/* One contiguous lane (inner == 1): max, exp into y, sum in double, then
 * normalise (or log-normalise) in place. */
static void softmax_row(const float *x, float *y, int64_t len, bool log_out) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < len; j++)
    if (x[j] > mx) mx = x[j];
  if (isinf(mx)) mx = mx < 0 ? 0 : mx; /* all -inf: avoid inf - inf */
  for (int64_t j = 0; j < len; j++) y[j] = exp_nonpositive(x[j] - mx);
  const double sum = sum_double(y, len);
  if (log_out) {
    const float ls = (float)log(sum);
    for (int64_t j = 0; j < len; j++) y[j] = x[j] - mx - ls;
  } else {
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < len; j++) y[j] *= inv;
  }
}

/* A [len, inner] block normalized along len, walking rows so that memory is
 * read contiguously; mx and sum hold one entry per lane (scratch). */
static void softmax_block(const float *x, float *y, int64_t len, int64_t inner,
                          float *mx, double *sum, bool log_out) {
  for (int64_t i = 0; i < inner; i++) mx[i] = -INFINITY, sum[i] = 0;
  for (int64_t j = 0; j < len; j++)
    for (int64_t i = 0; i < inner; i++)
      if (x[j * inner + i] > mx[i]) mx[i] = x[j * inner + i];
  for (int64_t i = 0; i < inner; i++)
    if (isinf(mx[i])) mx[i] = mx[i] < 0 ? 0 : mx[i];
  for (int64_t j = 0; j < len; j++)
    for (int64_t i = 0; i < inner; i++) {
      const float e = exp_nonpositive(x[j * inner + i] - mx[i]);
      if (!log_out) y[j * inner + i] = e;
      sum[i] += e;
    }
  for (int64_t i = 0; i < inner; i++)
    sum[i] = log_out ? log(sum[i]) : 1.0 / sum[i];
  for (int64_t j = 0; j < len; j++)
    for (int64_t i = 0; i < inner; i++) {
      size_t k = (size_t)(j * inner + i);
      y[k] = log_out ? x[k] - mx[i] - (float)sum[i] : y[k] * (float)sum[i];
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

static int softmax_common(const ts_node *n, const ts_tensor *const *in,
                          ts_tensor *out, ts_kctx *ctx, ts_err *err,
                          bool log_out) {
  int64_t outer, len, inner;
  int rc = softmax_layout(n, in[0], &outer, &len, &inner, err);
  if (rc) return rc;
  const float *x = in[0]->data;
  float *y = out[0].data;
  if (len == 0 || inner == 0 || outer == 0) return TS_OK;
  if (inner == 1) {
    for (int64_t o = 0; o < outer; o++)
      softmax_row(x + o * len, y + o * len, len, log_out);
    return TS_OK;
  }
  float *mx = ts_kctx_scratch(ctx, (size_t)inner * sizeof *mx);
  double *sum = ts_kctx_scratch(ctx, (size_t)inner * sizeof *sum);
  if (!mx || !sum)
    return fail(n, err, TS_ENOMEM, "no scratch memory for %lld lanes",
                (long long)inner);
  for (int64_t o = 0; o < outer; o++)
    softmax_block(x + o * len * inner, y + o * len * inner, len, inner, mx,
                  sum, log_out);
  return TS_OK;
}

static int softmax_run(const ts_node *n, const ts_tensor *const *in,
                       ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  return softmax_common(n, in, out, ctx, err, false);
}

static int log_softmax_run(const ts_node *n, const ts_tensor *const *in,
                           ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  return softmax_common(n, in, out, ctx, err, true);
}

const ts_op ts_op_Softmax = {
    .domain = "", .name = "Softmax",
    .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
    .prepare = axis_prepare, .infer = softmax_infer, .run = softmax_run,
};

const ts_op ts_op_LogSoftmax = {
    .domain = "", .name = "LogSoftmax",
    .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
    .prepare = axis_prepare, .infer = softmax_infer, .run = log_softmax_run,
};

/* ---- Identity ------------------------------------------------------------ */

static int identity_infer(const ts_node *n, const ts_tensor *const *in,
                          ts_tensor *out, ts_err *err) {
  (void)n;
  return ts_tensor_set_shape(&out[0], in[0]->dtype, in[0]->dims, in[0]->rank,
                             err);
}

const ts_op ts_op_Identity = {
    .domain = "", .name = "Identity",
    .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
    .prepare = no_attrs_prepare, .infer = identity_infer, .run = copy_run,
};

/* ---- Flatten ------------------------------------------------------------- */

static int flatten_infer(const ts_node *n, const ts_tensor *const *in,
                         ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0];
  int axis;
  int rc = norm_axis(n, ts_attr_int(n, "axis", 1), x->rank, true, &axis, err);
  if (rc) return rc;
  int64_t dims[2] = {prod(x->dims, 0, axis), prod(x->dims, axis, x->rank)};
  return ts_tensor_set_shape(&out[0], x->dtype, dims, 2, err);
}

const ts_op ts_op_Flatten = {
    .domain = "", .name = "Flatten",
    .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
    .prepare = axis_prepare, .infer = flatten_infer, .run = copy_run,
};

/* ---- Reshape ------------------------------------------------------------- */

static int reshape_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  static const char *const known[] = {"allowzero", NULL};
  int rc = ts_node_check_attrs(n, known, err);
  if (!rc) rc = attr_flag(n, "allowzero", err);
  return rc;
}

static int reshape_infer(const ts_node *n, const ts_tensor *const *in,
                         ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0], *shape = in[1];
  if (shape->dtype != TS_DTYPE_INT64 || shape->rank != 1)
    return fail(n, err, TS_EINVAL, "input 'shape' must be a 1-D int64 tensor");
  if (shape->dims[0] > TS_MAX_RANK)
    return fail(n, err, TS_EUNSUPPORTED, "target rank %lld is above %d",
                (long long)shape->dims[0], TS_MAX_RANK);
  if (!shape->data && shape->dims[0] > 0) return TS_EAGAIN;
  bool allowzero = ts_attr_int(n, "allowzero", 0) != 0;
  const int64_t *want = shape->data;
  int rank = (int)shape->dims[0];
  int64_t dims[TS_MAX_RANK];
  int infer_at = -1;
  int64_t known = 1;
  bool has_zero = false;
  for (int i = 0; i < rank; i++) {
    int64_t d = want[i];
    if (d == -1) {
      if (infer_at >= 0)
        return fail(n, err, TS_EINVAL, "target shape has more than one -1");
      infer_at = i;
      continue;
    }
    if (d < -1)
      return fail(n, err, TS_EINVAL, "target dim %d is %lld", i, (long long)d);
    if (d == 0 && !allowzero) {
      if (i >= x->rank)
        return fail(n, err, TS_EINVAL,
                    "target dim %d is 0 (copy) but the input has rank %d", i,
                    x->rank);
      d = x->dims[i];
    }
    if (d == 0) has_zero = true;
    dims[i] = d;
    if (d && known > INT64_MAX / d)
      return fail(n, err, TS_EINVAL, "target shape overflows");
    known *= d;
  }
  int64_t numel = ts_tensor_numel(x);
  if (infer_at >= 0) {
    if (has_zero || known == 0)
      return fail(n, err, TS_EINVAL,
                  "target shape has -1 and a 0 dim; the -1 cannot be inferred");
    if (numel % known != 0) {
      char s[128];
      return fail(n, err, TS_EINVAL,
                  "cannot reshape %lld elements of shape %s: not a multiple "
                  "of %lld",
                  (long long)numel, ts_shape_str(x->dims, x->rank, s, sizeof s),
                  (long long)known);
    }
    dims[infer_at] = numel / known;
    known = numel;
  }
  if (known != numel) {
    char s[128], t[128];
    return fail(n, err, TS_EINVAL, "cannot reshape %s (%lld elements) to %s",
                ts_shape_str(x->dims, x->rank, s, sizeof s), (long long)numel,
                ts_shape_str(dims, rank, t, sizeof t));
  }
  return ts_tensor_set_shape(&out[0], x->dtype, dims, rank, err);
}

const ts_op ts_op_Reshape = {
    .domain = "", .name = "Reshape",
    .min_inputs = 2, .max_inputs = 2, .min_outputs = 1, .max_outputs = 1,
    .prepare = reshape_prepare, .infer = reshape_infer, .run = copy_run,
};

/* ---- Constant ------------------------------------------------------------ */

/* params: the ts_tensor built from whichever value attribute is present. */
static int constant_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  static const char *const known[] = {"value", "value_float", "value_floats",
                                      "value_int", "value_ints", NULL};
  static const char *const unsupported[] = {"sparse_value", "value_string",
                                            "value_strings"};
  for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
    if (ts_attr_find(n, unsupported[i]))
      return fail(n, err, TS_EUNSUPPORTED,
                  "attribute '%s' is not supported (numeric tensors only)",
                  unsupported[i]);
  int rc = ts_node_check_attrs(n, known, err);
  if (rc) return rc;
  if (!n->proto || n->proto->n_attribute != 1)
    return fail(n, err, TS_EINVAL, "needs exactly one value attribute, has %zu",
                n->proto ? n->proto->n_attribute : 0);
  const Onnx__AttributeProto *a = n->proto->attribute[0];
  ts_tensor *t = calloc(1, sizeof *t);
  if (!t) return ts_err_set(err, TS_ENOMEM, "out of memory");
  n->params = t;
  const char *name = a->name;
  int64_t len;
  if (strcmp(name, "value") == 0) {
    if (!a->t)
      return fail(n, err, TS_EINVAL, "attribute 'value' must be a tensor");
    rc = ts_tensor_from_onnx(a->t, t, err);
    if (rc) return ts_err_prefix(err, "node '%s' (Constant)", n->name);
  } else if (strcmp(name, "value_float") == 0 ||
             strcmp(name, "value_int") == 0) {
    bool is_f = name[6] == 'f';
    if (is_f ? !a->has_f : !a->has_i)
      return fail(n, err, TS_EINVAL, "attribute '%s' has no value", name);
    rc = ts_tensor_alloc(t, is_f ? TS_DTYPE_FLOAT : TS_DTYPE_INT64, NULL, 0,
                         err);
    if (rc) return rc;
    if (is_f)
      *(float *)t->data = a->f;
    else
      *(int64_t *)t->data = a->i;
  } else {
    bool is_f = name[6] == 'f';
    len = (int64_t)(is_f ? a->n_floats : a->n_ints);
    rc = ts_tensor_alloc(t, is_f ? TS_DTYPE_FLOAT : TS_DTYPE_INT64, &len, 1,
                         err);
    if (rc) return rc;
    if (len) memcpy(t->data, is_f ? (void *)a->floats : (void *)a->ints,
                    t->nbytes);
  }
  return TS_OK;
}

static int constant_infer(const ts_node *n, const ts_tensor *const *in,
                          ts_tensor *out, ts_err *err) {
  (void)in;
  const ts_tensor *t = n->params;
  if (!t) return fail(n, err, TS_EINTERNAL, "not prepared");
  return ts_tensor_set_shape(&out[0], t->dtype, t->dims, t->rank, err);
}

static int constant_run(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)in, (void)ctx, (void)err;
  const ts_tensor *t = n->params;
  if (t->nbytes) memcpy(out[0].data, t->data, t->nbytes);
  return TS_OK;
}

const ts_op ts_op_Constant = {
    .domain = "", .name = "Constant",
    .min_inputs = 0, .max_inputs = 0, .min_outputs = 1, .max_outputs = 1,
    .prepare = constant_prepare, .release = ts_kernel_release_tensor,
    .infer = constant_infer, .run = constant_run,
};

/* ---- Dropout ------------------------------------------------------------- */

/* At inference Dropout is the identity and its mask is all true. Training
 * mode (a true training_mode input) is rejected: it would need randomness. */
static int dropout_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const char *const known[] = {"ratio", "seed", "is_test", NULL};
  int rc = ts_node_check_attrs(n, known, err);
  if (rc) return rc;
  int64_t is_test;
  if ((rc = attr_int(n, "is_test", 1, &is_test, err))) return rc;
  if (!is_test)
    return fail(n, err, TS_EUNSUPPORTED,
                "attribute 'is_test' = 0 (training) is not supported");
  if (n->n_inputs > 2 && n->inputs[2] >= 0) {
    const ts_tensor *tm = g->values[n->inputs[2]].constant;
    if (tm && tm->nbytes >= 1 && ((const uint8_t *)tm->data)[0])
      return fail(n, err, TS_EUNSUPPORTED,
                  "input 'training_mode' is true; training is not supported");
  }
  return TS_OK;
}

static int dropout_infer(const ts_node *n, const ts_tensor *const *in,
                         ts_tensor *out, ts_err *err) {
  int rc = ts_tensor_set_shape(&out[0], in[0]->dtype, in[0]->dims,
                               in[0]->rank, err);
  if (!rc && n->n_outputs > 1)
    rc = ts_tensor_set_shape(&out[1], TS_DTYPE_BOOL, in[0]->dims, in[0]->rank,
                             err);
  return rc;
}

static int dropout_run(const ts_node *n, const ts_tensor *const *in,
                       ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  if (n->n_inputs > 2 && in[2] && in[2]->nbytes >= 1 &&
      ((const uint8_t *)in[2]->data)[0])
    return fail(n, err, TS_EUNSUPPORTED,
                "input 'training_mode' is true; training is not supported");
  copy_run(n, in, out, ctx, err);
  if (n->n_outputs > 1 && out[1].data) memset(out[1].data, 1, out[1].nbytes);
  return TS_OK;
}

const ts_op ts_op_Dropout = {
    .domain = "", .name = "Dropout",
    .min_inputs = 1, .max_inputs = 3, .min_outputs = 1, .max_outputs = 2,
    .prepare = dropout_prepare, .infer = dropout_infer, .run = dropout_run,
};
