/*
 * kernels/cnn.c - the convolutional-network ops: Conv, MaxPool, AveragePool,
 * GlobalAveragePool, GlobalMaxPool, BatchNormalization (inference), Pad,
 * Resize and Upsample (mode "nearest").
 *
 * Layout is NCHW: (N, C, D1, ..., Dn). The arithmetic ops compute in float32;
 * Pad and Resize only move elements and take any fixed-size type.
 *
 * Design and invariants:
 *  - The windowed ops (Conv and the two pools) handle 1-, 2- and 3-D spatial
 *    shapes with one code path: a geometry with fewer than SP_MAX spatial
 *    dims is padded at the front with unit dims (size 1, kernel 1, stride 1,
 *    dilation 1, no pads), which changes neither shapes nor results.
 *  - The geometry (output size, effective pads) is computed from the parsed
 *    attributes and the input shape by one function, window_resolve(), in
 *    both infer and run, so shape inference and the kernel cannot disagree.
 *    Likewise pad_resolve() and resize_resolve() for Pad and Resize. A dim
 *    that is not known at load time (negative, e.g. a symbolic batch)
 *    yields a negative output dim, never an error.
 *  - Conv is im2col + cblas_sgemm per (image, group), tiled over output rows
 *    so the column buffer stays near COL_TARGET bytes; a 1x1, stride-1,
 *    unpadded conv is a plain sgemm on the input; a depthwise conv (one input
 *    channel per group) is a direct loop. Each run asks ts_kctx_scratch()
 *    once at most; nothing is allocated per element. im2col copies the
 *    valid rows of a tap in one run where the conv keeps the width.
 *  - MaxPool/AveragePool of 1 or 2 spatial dims without dilation or
 *    Indices pool whole output rows, interior columns apart from the
 *    border (pool_plane_2d); every other case takes the generic N-d
 *    window code (pool_plane). Both visit taps in the same order.
 *  - A BatchNormalization after a Conv is usually gone by the time kernels
 *    run: the loader folds it into the Conv's weights (graph.c).
 *  - node->params is written by prepare only and read-only afterwards: one
 *    model is run by many threads at once.
 *
 * Semantics chosen where ONNX leaves room (they match PyTorch and current
 * onnxruntime):
 *  - ceil_mode applies to explicit pads (auto_pad NOTSET); a last window that
 *    would start in the right padding is dropped.
 *  - AveragePool's count_include_pad divisor counts the taps inside the
 *    padded input (so a ceil_mode window hanging past the right pad counts
 *    only up to it); without it, the taps inside the input.
 *  - A pooling window with no tap inside the input gives -inf (MaxPool, and
 *    index -1) or 0 (AveragePool).
 *  - With auto_pad other than NOTSET an explicit pads attribute is ignored.
 *  - Resize computes coordinates in float as the reference runtime does;
 *    opset-10 Resize and Upsample use asymmetric coordinates with truncation
 *    (ceil when downsampling), as onnxruntime does.
 */
/* GCC 12's -O2 vectorizes no loop of unknown trip count ("very cheap" cost
 * model): every row loop here. As in elementwise.c, allow the cheap model
 * for this file. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=cheap")
#endif
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "kernel_util.h"
#include "list_cnn.h"
#include "ops.h"

/* Declarations from the list, so that a list line without a definition here
 * (or a misspelt symbol) fails to compile in this file. */
#define X(domain, op_type, symbol) extern const ts_op ts_op_##symbol;
TS_OPS_CNN(X)
#undef X

/* Attribute value enumerations are X-macro lists X(prefix, value); these
 * items turn one into enum constants / functions (prefix##value) and a
 * name table ("value"). */
#define PASTE_ITEM(prefix, value) prefix##value,
#define NAME_ITEM(prefix, value) #value,

#ifndef ATTR_STRING
#define ATTR_STRING ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING
#endif
#ifndef ATTR_FLOATS
#define ATTR_FLOATS ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS
#endif

#define SP_MAX 3                      /* spatial dims of the windowed ops */
#define COL_BUDGET ((int64_t)8 << 20) /* most bytes of one im2col tile */
/* The im2col tile aims at COL_TARGET bytes, so that the column matrix is
 * still in cache when sgemm packs it (128 KB measured 8-15% faster than
 * 8 MB on the ResNet of the benchmarks), but keeps at least COL_MIN_COLUMNS
 * columns per sgemm call where COL_BUDGET allows, so that a deep kernel
 * does not end up with one call per output row. */
#define COL_TARGET ((int64_t)128 << 10)
#define COL_MIN_COLUMNS 256
#define ATTR_MAX ((int64_t)1 << 30)   /* bound on kernel/stride/dilation/pad */

/* ------------------------------------------------------------------------ */
/* Errors, inputs, attributes                                               */
/* ------------------------------------------------------------------------ */

/* The name of the tensor feeding input i, for messages. */
static const char *input_name(const ts_node *n, int i) {
  if (n->proto && i < (int)n->proto->n_input && n->proto->input[i])
    return n->proto->input[i];
  return "";
}

/* in[i], or NULL when the node has no input i or it is omitted. */
static const ts_tensor *input_at(const ts_node *n, const ts_tensor *const *in,
                                 int i) {
  return i < n->n_inputs && n->inputs[i] >= 0 ? in[i] : NULL;
}

static bool output_wanted(const ts_node *n, int i) {
  return i < n->n_outputs && n->outputs[i] >= 0;
}

/* Input i (ONNX name `role`) must be float32: EUNSUPPORTED otherwise. */
static int check_float(const ts_node *n, const ts_tensor *t, int i,
                       const char *role, ts_err *err) {
  if (t->dtype == TS_DTYPE_FLOAT) return 0;
  return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                        "input %s ('%s') has type %s; only float is supported",
                        role, input_name(n, i), ts_dtype_name(t->dtype));
}

/* Input i must have a rank in [lo, hi]: below lo is malformed (EINVAL),
 * above hi is beyond what Tessera implements (EUNSUPPORTED). */
static int check_rank(const ts_node *n, const ts_tensor *t, int i,
                      const char *role, int lo, int hi, ts_err *err) {
  if (t->rank >= lo && t->rank <= hi) return 0;
  return ts_kernel_fail(n, err, t->rank < lo ? TS_EINVAL : TS_EUNSUPPORTED,
                        "input %s ('%s') has rank %d; expected %d to %d", role,
                        input_name(n, i), t->rank, lo, hi);
}

static int set_shape(const ts_node *n, ts_tensor *t, ts_dtype dtype,
                     const int64_t *dims, int rank, ts_err *err) {
  char desc[160];
  int rc = ts_tensor_set_shape(t, dtype, dims, rank, err);
  if (rc < 0) ts_err_prefix(err, "%s", ts_node_desc(n, desc, sizeof desc));
  return rc;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Reads an ints attribute of at most `max` values, each in
 * [min_value, ATTR_MAX] unless min_value is INT64_MIN, into dst; *count is 0
 * when the attribute is absent. */
static int attr_ints_into(const ts_node *n, const char *name, int64_t *dst,
                          int max, int64_t min_value, int *count, ts_err *err) {
  const int64_t *v;
  size_t c;
  *count = 0;
  int rc = ts_attr_ints(n, name, &v, &c, err);
  if (rc == TS_ENOTFOUND) {
    if (err) ts_err_clear(err);
    return 0;
  }
  if (rc < 0) return rc;
  if (c > (size_t)max)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute '%s' has %zu values; at most %d are supported", name, c,
        max);
  for (size_t i = 0; i < c; i++) {
    if (min_value != INT64_MIN && (v[i] < min_value || v[i] > ATTR_MAX))
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute '%s'[%zu] is %lld; expected %lld to %lld", name, i,
          (long long)v[i], (long long)min_value, (long long)ATTR_MAX);
    dst[i] = v[i];
  }
  *count = (int)c;
  return 0;
}

/* An int attribute that must be 0 or 1. */
static int attr_flag(const ts_node *n, const char *name, bool *out,
                     ts_err *err) {
  int64_t v = ts_attr_int(n, name, 0);
  if (v != 0 && v != 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute '%s' is %lld; expected 0 or 1", name,
                          (long long)v);
  *out = v == 1;
  return 0;
}

/* A string attribute that must be one of names[0..count); *out is its index,
 * or dflt when absent. Any other value is EUNSUPPORTED, listing the ones
 * supported. */
static int attr_choice(const ts_node *n, const char *name,
                       const char *const *names, int count, int dflt, int *out,
                       ts_err *err) {
  const char *s = ts_attr_string(n, name, NULL);
  if (!s) {
    *out = dflt;
    return 0;
  }
  char list[256] = "";
  size_t used = 0;
  for (int i = 0; i < count; i++) {
    if (strcmp(s, names[i]) == 0) {
      *out = i;
      return 0;
    }
    int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                     names[i]);
    if (w > 0 && (size_t)w < sizeof list - used) used += (size_t)w;
  }
  return ts_kernel_fail(
      n, err, TS_EUNSUPPORTED,
      "attribute '%s' value '%s' is not supported (supported: %s)", name, s,
      list);
}

/* Allocates node->params as a copy of `size` bytes at src. */
static int params_store(ts_node *n, const void *src, size_t size, ts_err *err) {
  void *p = malloc(size);
  if (!p)
    return ts_kernel_fail(n, err, TS_ENOMEM, "out of memory for parameters");
  memcpy(p, src, size);
  n->params = p;
  return 0;
}

/* The release of every op here: params are one malloc'd block. */
static void params_release(ts_node *n) {
  free(n->params);
  n->params = NULL;
}

/* ------------------------------------------------------------------------ */
/* Window geometry (Conv, MaxPool, AveragePool)                             */
/* ------------------------------------------------------------------------ */

#define AUTO_PADS(X, P) \
  X(P, NOTSET) X(P, SAME_UPPER) X(P, SAME_LOWER) X(P, VALID)
enum { AUTO_PADS(PASTE_ITEM, AUTO_PAD_) AUTO_PAD_COUNT };
static const char *const auto_pad_names[] = {AUTO_PADS(NAME_ITEM, )};

/* Window attributes as parsed by prepare; counts are 0 when absent. */
typedef struct window_attrs {
  int n_kernel, n_pads, n_strides, n_dilations;
  int64_t kernel[SP_MAX], pads[2 * SP_MAX], strides[SP_MAX], dilations[SP_MAX];
  int auto_pad;
  bool ceil_mode, count_include_pad, want_indices;
  int64_t group;
} window_attrs;

/* A resolved geometry, always SP_MAX dims (leading unit dims when the input
 * has fewer). in/out are negative where unknown. */
typedef struct window {
  int64_t in[SP_MAX], out[SP_MAX], k[SP_MAX], s[SP_MAX], d[SP_MAX];
  int64_t pb[SP_MAX], pe[SP_MAX]; /* pads before / after */
} window;

static const ts_attr_spec conv_attrs[] = {{"auto_pad", ATTR_STRING},
                                          {"dilations", ATTR_INTS},
                                          {"group", ATTR_INT},
                                          {"kernel_shape", ATTR_INTS},
                                          {"pads", ATTR_INTS},
                                          {"strides", ATTR_INTS},
                                          {NULL}};
static const ts_attr_spec max_pool_attrs[] = {
    {"auto_pad", ATTR_STRING}, {"ceil_mode", ATTR_INT},
    {"dilations", ATTR_INTS},  {"kernel_shape", ATTR_INTS},
    {"pads", ATTR_INTS},       {"storage_order", ATTR_INT},
    {"strides", ATTR_INTS},    {NULL}};
static const ts_attr_spec average_pool_attrs[] = {
    {"auto_pad", ATTR_STRING},       {"ceil_mode", ATTR_INT},
    {"count_include_pad", ATTR_INT}, {"dilations", ATTR_INTS},
    {"kernel_shape", ATTR_INTS},     {"pads", ATTR_INTS},
    {"strides", ATTR_INTS},          {NULL}};

static int window_parse(const ts_node *n, const ts_attr_spec *known,
                        bool kernel_required, window_attrs *a, ts_err *err) {
  int rc;
  memset(a, 0, sizeof *a);
  if ((rc = ts_kernel_check_attrs(n, known, err)) < 0 ||
      (rc = attr_ints_into(n, "kernel_shape", a->kernel, SP_MAX, 1,
                           &a->n_kernel, err)) < 0 ||
      (rc = attr_ints_into(n, "pads", a->pads, 2 * SP_MAX, 0, &a->n_pads,
                           err)) < 0 ||
      (rc = attr_ints_into(n, "strides", a->strides, SP_MAX, 1, &a->n_strides,
                           err)) < 0 ||
      (rc = attr_ints_into(n, "dilations", a->dilations, SP_MAX, 1,
                           &a->n_dilations, err)) < 0 ||
      (rc = attr_choice(n, "auto_pad", auto_pad_names, AUTO_PAD_COUNT,
                        AUTO_PAD_NOTSET, &a->auto_pad, err)) < 0 ||
      (rc = attr_flag(n, "ceil_mode", &a->ceil_mode, err)) < 0 ||
      (rc = attr_flag(n, "count_include_pad", &a->count_include_pad, err)) < 0)
    return rc;
  if (kernel_required && a->n_kernel == 0)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'kernel_shape' is required");
  a->group = ts_attr_int(n, "group", 1);
  if (a->group < 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'group' is %lld; expected >= 1",
                          (long long)a->group);
  return 0;
}

static int check_attr_count(const ts_node *n, const char *name, int have,
                            int want, int nsp, ts_err *err) {
  if (have == 0 || have == want) return 0;
  return ts_kernel_fail(
      n, err, TS_EINVAL,
      "attribute '%s' has %d values; expected %d for %d spatial dims", name,
      have, want, nsp);
}

/* Resolves the geometry of an input with nsp spatial dims `spatial` and a
 * kernel `kernel` (both may hold negative = unknown dims). */
static int window_resolve(const ts_node *n, const window_attrs *a,
                          const int64_t *spatial, int nsp,
                          const int64_t *kernel, window *w, ts_err *err) {
  int rc;
  if ((rc = check_attr_count(n, "pads", a->n_pads, 2 * nsp, nsp, err)) < 0 ||
      (rc = check_attr_count(n, "strides", a->n_strides, nsp, nsp, err)) < 0 ||
      (rc = check_attr_count(n, "dilations", a->n_dilations, nsp, nsp, err)) <
          0)
    return rc;
  for (int j = 0; j < SP_MAX; j++) {
    w->in[j] = w->out[j] = w->k[j] = w->s[j] = w->d[j] = 1;
    w->pb[j] = w->pe[j] = 0;
  }
  for (int i = 0; i < nsp; i++) {
    const int j = SP_MAX - nsp + i;
    const int64_t in = spatial[i], k = kernel[i];
    const int64_t s = a->n_strides ? a->strides[i] : 1;
    const int64_t d = a->n_dilations ? a->dilations[i] : 1;
    int64_t pb = a->n_pads ? a->pads[i] : 0,
            pe = a->n_pads ? a->pads[nsp + i] : 0;
    int64_t out = -1;
    if (k == 0 || k > ATTR_MAX)
      return ts_kernel_fail(n, err, TS_EINVAL, "kernel spatial dim %d is %lld",
                            i, (long long)k);
    const int64_t eff = (k - 1) * d + 1; /* extent of the dilated kernel */
    if (a->auto_pad == AUTO_PAD_SAME_UPPER ||
        a->auto_pad == AUTO_PAD_SAME_LOWER) {
      pb = pe = 0;
      if (in >= 0 && k > 0) {
        out = ceil_div(in, s);
        int64_t total = (out - 1) * s + eff - in;
        if (total < 0) total = 0;
        pb = a->auto_pad == AUTO_PAD_SAME_UPPER ? total / 2 : total - total / 2;
        pe = total - pb;
      }
    } else {
      if (a->auto_pad == AUTO_PAD_VALID) pb = pe = 0;
      if (in >= 0 && k > 0) {
        const int64_t span = in + pb + pe - eff;
        if (span < 0)
          return ts_kernel_fail(
              n, err, TS_EINVAL,
              "spatial dim %d of input X is %lld; with pads %lld+%lld "
              "it is smaller than the kernel extent %lld",
              i, (long long)in, (long long)pb, (long long)pe, (long long)eff);
        out = span / s + 1;
        if (a->ceil_mode && a->auto_pad == AUTO_PAD_NOTSET) {
          out = ceil_div(span, s) + 1;
          if ((out - 1) * s >= in + pb) out--;
        }
      }
    }
    w->in[j] = in;
    w->out[j] = out;
    w->k[j] = k;
    w->s[j] = s;
    w->d[j] = d;
    w->pb[j] = pb;
    w->pe[j] = pe;
  }
  return 0;
}

/* The range [*lo, *hi) of o in [0, count) with 0 <= start + o*step < limit
 * (step >= 1); empty (lo == hi) when there is none. */
static void valid_range(int64_t start, int64_t step, int64_t count,
                        int64_t limit, int64_t *lo, int64_t *hi) {
  int64_t l = start >= 0 ? 0 : ceil_div(-start, step);
  int64_t h = start >= limit ? 0 : ceil_div(limit - start, step);
  if (h > count) h = count;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

static int64_t prod3(const int64_t *v) { return v[0] * v[1] * v[2]; }

/* ------------------------------------------------------------------------ */
/* Conv                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct conv_geom {
  window w;
  int64_t n, c, m, g; /* batch, input channels, output channels, groups */
} conv_geom;

static int conv_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  window_attrs a;
  int rc = window_parse(n, conv_attrs, false, &a, err);
  if (rc < 0) return rc;
  return params_store(n, &a, sizeof a, err);
}

/* Validates X (N, C, spatial), W (M, C/group, kernel) and B (M) and resolves
 * the geometry. */
static int conv_resolve(const ts_node *n, const ts_tensor *const *in,
                        conv_geom *cg, ts_err *err) {
  const window_attrs *a = n->params;
  const ts_tensor *x = in[0], *w = in[1], *b = input_at(n, in, 2);
  int rc;
  if ((rc = check_float(n, x, 0, "X", err)) < 0 ||
      (rc = check_float(n, w, 1, "W", err)) < 0 ||
      (b && (rc = check_float(n, b, 2, "B", err)) < 0) ||
      (rc = check_rank(n, x, 0, "X", 3, 2 + SP_MAX, err)) < 0)
    return rc;
  const int nsp = x->rank - 2;
  if (w->rank != x->rank)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "weight W ('%s') has rank %d; input X has rank %d",
                          input_name(n, 1), w->rank, x->rank);
  cg->n = x->dims[0];
  cg->c = x->dims[1];
  cg->m = w->dims[0];
  cg->g = a->group;
  if (cg->c >= 0 && cg->c % cg->g != 0)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "input X has %lld channels, not divisible by group %lld",
        (long long)cg->c, (long long)cg->g);
  if (cg->c >= 0 && w->dims[1] >= 0 && w->dims[1] != cg->c / cg->g)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "weight W ('%s') has %lld input channels per group; input X "
        "has %lld channels in %lld groups",
        input_name(n, 1), (long long)w->dims[1], (long long)cg->c,
        (long long)cg->g);
  if (cg->m >= 0 && cg->m % cg->g != 0)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "weight W ('%s') has %lld output channels, not divisible by "
        "group %lld",
        input_name(n, 1), (long long)cg->m, (long long)cg->g);
  if (a->n_kernel && a->n_kernel != nsp)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'kernel_shape' has %d values; input X has %d "
        "spatial dims",
        a->n_kernel, nsp);
  for (int i = 0; i < a->n_kernel; i++)
    if (w->dims[2 + i] >= 0 && a->kernel[i] != w->dims[2 + i])
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'kernel_shape'[%d] is %lld; weight W has %lld", i,
          (long long)a->kernel[i], (long long)w->dims[2 + i]);
  if (b &&
      (b->rank != 1 || (cg->m >= 0 && b->dims[0] >= 0 && b->dims[0] != cg->m)))
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "bias B ('%s') must have shape [%lld] (rank %d given)",
        input_name(n, 2), (long long)cg->m, b->rank);
  return window_resolve(n, a, x->dims + 2, nsp, w->dims + 2, &cg->w, err);
}

static int conv_infer(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  conv_geom cg;
  int rc = conv_resolve(n, in, &cg, err);
  if (rc < 0) return rc;
  int64_t dims[2 + SP_MAX] = {cg.n, cg.m};
  const int nsp = in[0]->rank - 2;
  for (int i = 0; i < nsp; i++) dims[2 + i] = cg.w.out[SP_MAX - nsp + i];
  return set_shape(n, &out[0], TS_DTYPE_FLOAT, dims, in[0]->rank, err);
}

/* Zeroes `count` floats (a plain loop: the runs here are short). */
static void zero_floats(float *dst, int64_t count) {
  for (int64_t i = 0; i < count; i++) dst[i] = 0.0f;
}

/* Writes the column matrix of one group's input planes x (channels planes
 * of w->in) for output rows [r0, r1), a row being one (out0, out1) pair:
 * col[channels * kernel volume][(r1 - r0) * out2], 0 where a tap falls into
 * the padding.
 *
 * For each tap, the rows of one out0 plane are cut into the padding rows
 * above, the valid rows and the padding rows below. Where the conv keeps
 * the width (stride 1 on the last two dims, out2 == in2: a "same" conv),
 * the valid rows of a tap are one contiguous run of the input, shifted by
 * the tap's column offset: one copy, then the few columns that fall into
 * the padding zeroed per row. Otherwise each row is copied on its own. */
static void im2col(const float *x, int64_t channels, const window *w,
                   int64_t r0, int64_t r1, float *col) {
  const int64_t ow_n = w->out[2], plane = prod3(w->in), s2 = w->s[2];
  const int64_t out1 = w->out[1];
  const bool dense = s2 == 1 && w->s[1] == 1 && ow_n == w->in[2];
  float *dst = col;
  for (int64_t c = 0; c < channels; c++) {
    const float *xc = x + c * plane;
    for (int64_t k0 = 0; k0 < w->k[0]; k0++)
      for (int64_t k1 = 0; k1 < w->k[1]; k1++)
        for (int64_t k2 = 0; k2 < w->k[2]; k2++) {
          const int64_t iw0 = k2 * w->d[2] - w->pb[2];
          const int64_t ih0 = k1 * w->d[1] - w->pb[1];
          int64_t lo, hi, v_lo, v_hi; /* valid columns, valid out1 rows */
          valid_range(iw0, s2, ow_n, w->in[2], &lo, &hi);
          valid_range(ih0, w->s[1], out1, w->in[1], &v_lo, &v_hi);
          for (int64_t r = r0; r < r1;) {
            const int64_t o0 = r / out1, first = r % out1;
            const int64_t end = (o0 + 1) * out1 < r1 ? (o0 + 1) * out1 : r1;
            const int64_t last = first + (end - r); /* out1 [first, last) */
            float *d = dst + (r - r0) * ow_n;
            const int64_t i0 = o0 * w->s[0] - w->pb[0] + k0 * w->d[0];
            r = end;
            if (i0 < 0 || i0 >= w->in[0]) {
              zero_floats(d, (last - first) * ow_n);
              continue;
            }
            int64_t a = v_lo > first ? v_lo : first;
            int64_t b = v_hi < last ? v_hi : last;
            if (b < a) b = a;
            zero_floats(d, (a - first) * ow_n);
            zero_floats(d + (b - first) * ow_n, (last - b) * ow_n);
            if (b == a) continue;
            const float *src =
                xc + (i0 * w->in[1] + ih0 + a * w->s[1]) * w->in[2] + iw0;
            float *dv = d + (a - first) * ow_n;
            if (dense && hi > lo) {
              /* rows a..b of the input are contiguous, as are their
               * destinations: copy [lo of the first, hi of the last). */
              memcpy(dv + lo, src + lo,
                     (size_t)((b - a) * ow_n - lo - (ow_n - hi)) *
                         sizeof *dv);
              for (int64_t q = 0; q < b - a; q++) {
                zero_floats(dv + q * ow_n, lo);
                zero_floats(dv + q * ow_n + hi, ow_n - hi);
              }
              continue;
            }
            for (int64_t q = 0; q < b - a; q++, dv += ow_n) {
              const float *sr = src + q * w->s[1] * w->in[2];
              zero_floats(dv, lo);
              if (s2 == 1)
                for (int64_t o = lo; o < hi; o++) dv[o] = sr[o];
              else if (s2 == 2) /* a constant stride: vectorised */
                for (int64_t o = lo; o < hi; o++) dv[o] = sr[o * 2];
              else
                for (int64_t o = lo; o < hi; o++) dv[o] = sr[o * s2];
              zero_floats(dv + hi, ow_n - hi);
            }
          }
          dst += (r1 - r0) * ow_n;
        }
  }
}

/* Fills `count` output planes of `plane` floats with the bias of their
 * channel (bias may be NULL: zeros). */
static void fill_bias(float *y, const float *bias, int64_t count,
                      int64_t plane) {
  for (int64_t m = 0; m < count; m++) {
    const float v = bias ? bias[m] : 0.0f;
    for (int64_t p = 0; p < plane; p++) y[m * plane + p] = v;
  }
}

/* Depthwise conv (one input channel per group): each output channel m reads
 * input channel m / (M/G). Loops tap by tap over the output so the inner
 * loop is a contiguous axpy for stride 1. */
static void conv_depthwise(const conv_geom *cg, const float *x, const float *wt,
                           const float *bias, float *y) {
  const window *w = &cg->w;
  const int64_t kvol = prod3(w->k), plane_in = prod3(w->in),
                plane_out = prod3(w->out), per_group = cg->m / cg->g;
  for (int64_t b = 0; b < cg->n; b++)
    for (int64_t m = 0; m < cg->m; m++) {
      const float *xp = x + (b * cg->c + m / per_group) * plane_in;
      float *yp = y + (b * cg->m + m) * plane_out;
      fill_bias(yp, bias ? bias + m : NULL, 1, plane_out);
      for (int64_t t = 0; t < kvol; t++) {
        const int64_t k0 = t / (w->k[1] * w->k[2]), k1 = t / w->k[2] % w->k[1],
                      k2 = t % w->k[2];
        const float wv = wt[m * kvol + t];
        const int64_t st0 = k0 * w->d[0] - w->pb[0],
                      st1 = k1 * w->d[1] - w->pb[1],
                      st2 = k2 * w->d[2] - w->pb[2];
        int64_t lo0, hi0, lo1, hi1, lo2, hi2;
        valid_range(st0, w->s[0], w->out[0], w->in[0], &lo0, &hi0);
        valid_range(st1, w->s[1], w->out[1], w->in[1], &lo1, &hi1);
        valid_range(st2, w->s[2], w->out[2], w->in[2], &lo2, &hi2);
        for (int64_t o0 = lo0; o0 < hi0; o0++)
          for (int64_t o1 = lo1; o1 < hi1; o1++) {
            const float *xr =
                xp + ((st0 + o0 * w->s[0]) * w->in[1] + st1 + o1 * w->s[1]) *
                         w->in[2];
            float *yr = yp + (o0 * w->out[1] + o1) * w->out[2];
            if (w->s[2] == 1)
              for (int64_t o2 = lo2; o2 < hi2; o2++)
                yr[o2] += wv * xr[st2 + o2];
            else
              for (int64_t o2 = lo2; o2 < hi2; o2++)
                yr[o2] += wv * xr[st2 + o2 * w->s[2]];
          }
      }
    }
}

static int conv_run(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  conv_geom cg;
  int rc = conv_resolve(n, in, &cg, err);
  if (rc < 0) return rc;
  const window *w = &cg.w;
  const float *x = in[0]->data, *wt = in[1]->data;
  const ts_tensor *bt = input_at(n, in, 2);
  const float *bias = bt ? bt->data : NULL;
  float *y = out[0].data;
  const int64_t plane_in = prod3(w->in), plane_out = prod3(w->out);
  const int64_t cpg = cg.c / cg.g, mpg = cg.m / cg.g; /* per group */
  const int64_t kdim = cpg * prod3(w->k);             /* gemm K */
  if (cg.n == 0 || cg.m == 0 || plane_out == 0) return 0;
  if (cpg == 1 && cg.g > 1) {
    conv_depthwise(&cg, x, wt, bias, y);
    return 0;
  }
  const bool pointwise = prod3(w->k) == 1 && w->s[0] == 1 && w->s[1] == 1 &&
                         w->s[2] == 1 && w->pb[0] == 0 && w->pb[1] == 0 &&
                         w->pb[2] == 0 && w->pe[0] == 0 && w->pe[1] == 0 &&
                         w->pe[2] == 0;
  const int64_t rows = w->out[0] * w->out[1], row_len = w->out[2];
  int64_t tile = 0;
  float *col = NULL;
  if (kdim > INT_MAX || mpg > INT_MAX || plane_out > INT_MAX)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "convolution too large for BLAS (K %lld, M %lld, pixels %lld)",
        (long long)kdim, (long long)mpg, (long long)plane_out);
  if (!pointwise && kdim > 0) {
    const int64_t row_bytes = kdim * row_len * (int64_t)sizeof(float);
    tile = COL_TARGET / row_bytes;
    if (tile * row_len < COL_MIN_COLUMNS)
      tile = ceil_div(COL_MIN_COLUMNS, row_len);
    if (tile > COL_BUDGET / row_bytes) tile = COL_BUDGET / row_bytes;
    if (tile < 1) tile = 1;
    if (tile > rows) tile = rows;
    col = ts_kctx_scratch(ctx, (size_t)(kdim * tile * row_len) * sizeof *col);
    if (!col)
      return ts_kernel_fail(n, err, TS_ENOMEM,
                            "out of memory for a %lld x %lld im2col "
                            "buffer",
                            (long long)kdim, (long long)(tile * row_len));
  }
  for (int64_t b = 0; b < cg.n; b++)
    for (int64_t g = 0; g < cg.g; g++) {
      const float *xg = x + (b * cg.c + g * cpg) * plane_in;
      const float *wg = wt + g * mpg * kdim;
      float *yg = y + (b * cg.m + g * mpg) * plane_out;
      const float *bg = bias ? bias + g * mpg : NULL;
      /* The bias is the gemm's C operand (beta 1); without one, beta 0. */
      if (bg || kdim == 0) fill_bias(yg, bg, mpg, plane_out);
      if (kdim == 0) continue;
      const float beta = bg ? 1.0f : 0.0f;
      if (pointwise) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mpg,
                    (int)plane_out, (int)kdim, 1.0f, wg, (int)kdim, xg,
                    (int)plane_out, beta, yg, (int)plane_out);
        continue;
      }
      for (int64_t r0 = 0; r0 < rows; r0 += tile) {
        const int64_t r1 = r0 + tile < rows ? r0 + tile : rows;
        const int ncols = (int)((r1 - r0) * row_len);
        im2col(xg, cpg, w, r0, r1, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mpg, ncols,
                    (int)kdim, 1.0f, wg, (int)kdim, col, ncols, beta,
                    yg + r0 * row_len, (int)plane_out);
      }
    }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* MaxPool, AveragePool                                                     */
/* ------------------------------------------------------------------------ */

static int pool_prepare(ts_node *n, const ts_attr_spec *known, ts_err *err) {
  window_attrs a;
  int rc = window_parse(n, known, true, &a, err);
  if (rc < 0) return rc;
  a.want_indices = output_wanted(n, 1);
  if (a.want_indices && ts_attr_int(n, "storage_order", 0) != 0)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'storage_order' = %lld with output Indices is not "
        "supported (only 0, row-major)",
        (long long)ts_attr_int(n, "storage_order", 0));
  return params_store(n, &a, sizeof a, err);
}

static int max_pool_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return pool_prepare(n, max_pool_attrs, err);
}

static int average_pool_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  return pool_prepare(n, average_pool_attrs, err);
}

static int pool_resolve(const ts_node *n, const ts_tensor *x, window *w,
                        ts_err *err) {
  const window_attrs *a = n->params;
  int rc;
  if ((rc = check_float(n, x, 0, "X", err)) < 0 ||
      (rc = check_rank(n, x, 0, "X", 3, 2 + SP_MAX, err)) < 0)
    return rc;
  const int nsp = x->rank - 2;
  if (a->n_kernel != nsp)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'kernel_shape' has %d values; input X has %d "
        "spatial dims",
        a->n_kernel, nsp);
  return window_resolve(n, a, x->dims + 2, nsp, a->kernel, w, err);
}

static int pool_infer(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  window w;
  int rc = pool_resolve(n, in[0], &w, err);
  if (rc < 0) return rc;
  const int rank = in[0]->rank, nsp = rank - 2;
  int64_t dims[2 + SP_MAX] = {in[0]->dims[0], in[0]->dims[1]};
  for (int i = 0; i < nsp; i++) dims[2 + i] = w.out[SP_MAX - nsp + i];
  if ((rc = set_shape(n, &out[0], TS_DTYPE_FLOAT, dims, rank, err)) < 0)
    return rc;
  if (output_wanted(n, 1))
    rc = set_shape(n, &out[1], TS_DTYPE_INT64, dims, rank, err);
  return rc;
}

/* The taps of a window along one spatial dim: window start (in input
 * coordinates), the range [lo, hi) of tap numbers inside the input, and how
 * many taps lie inside the padded input. */
typedef struct taps {
  int64_t start, lo, hi, padded;
} taps;

static taps taps_at(const window *w, int j, int64_t o) {
  taps t;
  int64_t plo, phi;
  t.start = o * w->s[j] - w->pb[j];
  valid_range(t.start, w->d[j], w->k[j], w->in[j], &t.lo, &t.hi);
  valid_range(t.start + w->pb[j], w->d[j], w->k[j],
              w->in[j] + w->pb[j] + w->pe[j], &plo, &phi);
  t.padded = phi - plo;
  return t;
}

/* Pools one (N, C) plane x into y. For MaxPool with indices, idx receives
 * the row-major index into the whole input (plane offset `base`). */
static void pool_plane(const window *w, bool is_max, bool include_pad,
                       const float *x, float *y, int64_t *idx, int64_t base) {
  for (int64_t o0 = 0; o0 < w->out[0]; o0++) {
    const taps t0 = taps_at(w, 0, o0);
    for (int64_t o1 = 0; o1 < w->out[1]; o1++) {
      const taps t1 = taps_at(w, 1, o1);
      for (int64_t o2 = 0; o2 < w->out[2]; o2++, y++) {
        const taps t2 = taps_at(w, 2, o2);
        float best = -INFINITY, sum = 0.0f;
        int64_t best_at = -1;
        for (int64_t a = t0.lo; a < t0.hi; a++)
          for (int64_t b = t1.lo; b < t1.hi; b++) {
            const int64_t row =
                ((t0.start + a * w->d[0]) * w->in[1] + t1.start + b * w->d[1]) *
                    w->in[2] +
                t2.start;
            for (int64_t c = t2.lo; c < t2.hi; c++) {
              const int64_t at = row + c * w->d[2];
              const float v = x[at];
              sum += v;
              if (best_at < 0 || v > best || isnan(v)) {
                best = v;
                best_at = at;
              }
            }
          }
        if (is_max) {
          *y = best;
          if (idx) *idx++ = best_at < 0 ? -1 : base + best_at;
        } else {
          const int64_t div =
              include_pad ? t0.padded * t1.padded * t2.padded
                          : (t0.hi - t0.lo) * (t1.hi - t1.lo) * (t2.hi - t2.lo);
          *y = div > 0 ? sum / (float)div : 0.0f;
        }
      }
    }
  }
}

/* The fast path of pool_plane() for the common case: one spatial plane
 * (1-D or 2-D pooling, w->k[0] == w->in[0] == 1), no dilation, no Indices.
 * The columns whose window lies inside the input (interior) are found once
 * per plane and pooled a whole output row at a time, tap by tap (a
 * vectorised loop over the row; stride 1 and 2 are specialised so that
 * the compiler sees the constant stride); only the border columns clamp
 * their windows one by one. Taps are visited row by row, column by
 * column, as pool_plane() does, so sums round the same way and NaN wins
 * the max. */
static bool pool_fast_applies(const window *w, bool want_indices) {
  return !want_indices && w->in[0] == 1 && w->k[0] == 1 && w->pb[0] == 0 &&
         w->pe[0] == 0 && w->d[1] == 1 && w->d[2] == 1;
}

/* Max or sum of x over rows [r0, r1), columns [c0, c1) of a row length
 * `width`: NaN wins the max, an empty window gives -inf / 0. */
static float pool_window(const float *x, int64_t width, int64_t r0, int64_t r1,
                         int64_t c0, int64_t c1, bool is_max) {
  float best = -INFINITY, sum = 0.0f;
  for (int64_t r = r0; r < r1; r++) {
    const float *row = x + r * width;
    for (int64_t c = c0; c < c1; c++) {
      const float v = row[c];
      sum += v;
      if (v > best || v != v) best = v;
    }
  }
  return is_max ? best : sum;
}

/* y[o] = max or sum over the taps of input rows [r0, r1) (row length
 * `width`) and kw columns from x[o * stride + c], for o in [0, count): the
 * interior of one output row. */
static inline void pool_row(const float *x, int64_t width, int64_t r0,
                            int64_t r1, int64_t kw, int64_t stride,
                            int64_t count, bool is_max, float *y) {
  const float init = is_max ? -INFINITY : 0.0f;
  for (int64_t o = 0; o < count; o++) y[o] = init;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = 0; c < kw; c++) {
      const float *xs = x + r * width + c;
      if (is_max)
        for (int64_t o = 0; o < count; o++) {
          const float v = xs[o * stride];
          y[o] = (v > y[o]) | (v != v) ? v : y[o];
        }
      else
        for (int64_t o = 0; o < count; o++) y[o] += xs[o * stride];
    }
}

/* One plane's rows, with the window geometry of one output row. */
typedef struct pool_rows {
  int64_t r0, r1; /* the rows of the window inside the input */
  int64_t padded; /* rows of the window inside the padded input */
} pool_rows;

/* Output o2 of a row whose window is clamped to the input (a border
 * column): the generic arithmetic, for one element. */
static float pool_border(const window *w, bool is_max, bool include_pad,
                         const float *x, const pool_rows *pr, int64_t o2) {
  const int64_t width = w->in[2], kw = w->k[2];
  const int64_t ws = o2 * w->s[2] - w->pb[2];
  const int64_t c0 = ws > 0 ? ws : 0;
  int64_t c1 = ws + kw < width ? ws + kw : width;
  if (c1 < c0) c1 = c0;
  const float v = pool_window(x, width, pr->r0, pr->r1, c0, c1, is_max);
  if (is_max) return v;
  const int64_t cols_padded =
      (ws + kw < width + w->pe[2] ? ws + kw : width + w->pe[2]) - ws;
  const int64_t div = include_pad ? pr->padded * cols_padded
                                  : (pr->r1 - pr->r0) * (c1 - c0);
  return div > 0 ? v / (float)div : 0.0f;
}

static void pool_plane_2d(const window *w, bool is_max, bool include_pad,
                          const float *x, float *y) {
  const int64_t height = w->in[1], width = w->in[2];
  const int64_t kh = w->k[1], kw = w->k[2], sw = w->s[2];
  const int64_t out_w = w->out[2];
  /* Interior columns [c_lo, c_hi): o * sw - pb >= 0 and o * sw - pb + kw
   * <= width. */
  int64_t c_lo = ceil_div(w->pb[2], sw);
  int64_t c_hi =
      width + w->pb[2] - kw >= 0 ? (width + w->pb[2] - kw) / sw + 1 : 0;
  if (c_hi > out_w) c_hi = out_w;
  if (c_lo > c_hi) c_lo = c_hi;
  const int64_t count = c_hi - c_lo;
  for (int64_t o1 = 0; o1 < w->out[1]; o1++, y += out_w) {
    const int64_t hs = o1 * w->s[1] - w->pb[1];
    const int64_t end = hs + kh, padded_end = height + w->pe[1];
    pool_rows pr = {.r0 = hs > 0 ? hs : 0,
                    .r1 = end < height ? end : height,
                    .padded = (end < padded_end ? end : padded_end) - hs};
    if (pr.r1 < pr.r0) pr.r1 = pr.r0;
    if (count > 0) {
      const float *xi = x + c_lo * sw - w->pb[2]; /* first interior window */
      float *yi = y + c_lo;
      if (sw == 1)
        pool_row(xi, width, pr.r0, pr.r1, kw, 1, count, is_max, yi);
      else if (sw == 2)
        pool_row(xi, width, pr.r0, pr.r1, kw, 2, count, is_max, yi);
      else
        pool_row(xi, width, pr.r0, pr.r1, kw, sw, count, is_max, yi);
      if (!is_max) {
        const int64_t div = (include_pad ? pr.padded : pr.r1 - pr.r0) * kw;
        for (int64_t o = 0; o < count; o++)
          yi[o] = div > 0 ? yi[o] / (float)div : 0.0f;
      }
    }
    for (int64_t o2 = 0; o2 < c_lo; o2++)
      y[o2] = pool_border(w, is_max, include_pad, x, &pr, o2);
    for (int64_t o2 = c_hi; o2 < out_w; o2++)
      y[o2] = pool_border(w, is_max, include_pad, x, &pr, o2);
  }
}

static int pool_run(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, bool is_max, ts_err *err) {
  const window_attrs *a = n->params;
  window w;
  int rc = pool_resolve(n, in[0], &w, err);
  if (rc < 0) return rc;
  const int64_t planes = in[0]->dims[0] * in[0]->dims[1];
  const int64_t plane_in = prod3(w.in), plane_out = prod3(w.out);
  const float *x = in[0]->data;
  float *y = out[0].data;
  int64_t *idx = is_max && output_wanted(n, 1) ? out[1].data : NULL;
  if (pool_fast_applies(&w, idx != NULL)) {
    for (int64_t p = 0; p < planes; p++)
      pool_plane_2d(&w, is_max, a->count_include_pad, x + p * plane_in,
                    y + p * plane_out);
    return 0;
  }
  for (int64_t p = 0; p < planes; p++)
    pool_plane(&w, is_max, a->count_include_pad, x + p * plane_in,
               y + p * plane_out, idx ? idx + p * plane_out : NULL,
               p * plane_in);
  return 0;
}

static int max_pool_run(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx;
  return pool_run(n, in, out, true, err);
}

static int average_pool_run(const ts_node *n, const ts_tensor *const *in,
                            ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)ctx;
  return pool_run(n, in, out, false, err);
}

/* ------------------------------------------------------------------------ */
/* GlobalAveragePool, GlobalMaxPool                                         */
/* ------------------------------------------------------------------------ */

static int global_pool_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const ts_attr_spec known[] = {{NULL}};
  (void)g;
  return ts_kernel_check_attrs(n, known, err);
}

static int global_pool_infer(const ts_node *n, const ts_tensor *const *in,
                             ts_tensor *out, ts_err *err) {
  const ts_tensor *x = in[0];
  int rc;
  if ((rc = check_float(n, x, 0, "X", err)) < 0 ||
      (rc = check_rank(n, x, 0, "X", 3, TS_MAX_RANK, err)) < 0)
    return rc;
  int64_t dims[TS_MAX_RANK];
  for (int i = 0; i < x->rank; i++) {
    dims[i] = i < 2 ? x->dims[i] : 1;
    if (i >= 2 && x->dims[i] == 0)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "input X has an empty spatial dim %d; nothing to pool", i);
  }
  return set_shape(n, &out[0], TS_DTYPE_FLOAT, dims, x->rank, err);
}

/* Planes and plane size of a (N, C, spatial...) tensor. */
static void planes_of(const ts_tensor *x, int64_t *planes, int64_t *plane) {
  *planes = x->dims[0] * x->dims[1];
  *plane = 1;
  for (int i = 2; i < x->rank; i++) *plane *= x->dims[i];
}

/* Reductions of one plane of count >= 1 floats. */
static float plane_mean(const float *x, int64_t count) {
  double sum = 0.0; /* planes can be large: accumulate in double */
  for (int64_t i = 0; i < count; i++) sum += x[i];
  return (float)(sum / (double)count);
}

static float plane_max(const float *x, int64_t count) {
  float best = x[0];
  for (int64_t i = 1; i < count; i++)
    if (x[i] > best || isnan(x[i])) best = x[i];
  return best;
}

static void global_pool(const ts_tensor *x, ts_tensor *y,
                        float (*reduce)(const float *, int64_t)) {
  int64_t planes, plane;
  planes_of(x, &planes, &plane);
  const float *xv = x->data;
  float *yv = y->data;
  for (int64_t p = 0; p < planes; p++) yv[p] = reduce(xv + p * plane, plane);
}

static int global_average_pool_run(const ts_node *n, const ts_tensor *const *in,
                                   ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)n, (void)ctx, (void)err;
  global_pool(in[0], &out[0], plane_mean);
  return 0;
}

static int global_max_pool_run(const ts_node *n, const ts_tensor *const *in,
                               ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  (void)n, (void)ctx, (void)err;
  global_pool(in[0], &out[0], plane_max);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* BatchNormalization (inference)                                           */
/* ------------------------------------------------------------------------ */

/* Parameters; scale/shift (channels floats each, in the same block) are set
 * when prepare found scale, B, mean and var constant, NULL otherwise. */
typedef struct bn_params {
  float epsilon;
  int64_t channels;
  float *scale, *shift;
} bn_params;

static const char *const bn_roles[] = {"X", "scale", "B", "input_mean",
                                       "input_var"};

/* Checks the four per-channel inputs against `channels` (negative: not
 * known, any length). */
static int bn_check_params(const ts_node *n, const ts_tensor *const *p,
                           int64_t channels, ts_err *err) {
  for (int i = 1; i < 5; i++) {
    int rc = check_float(n, p[i], i, bn_roles[i], err);
    if (rc < 0) return rc;
    if (p[i]->rank != 1 ||
        (channels >= 0 && p[i]->dims[0] >= 0 && p[i]->dims[0] != channels))
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "input %s ('%s') must have shape [%lld] (the channels of X)",
          bn_roles[i], input_name(n, i), (long long)channels);
  }
  return 0;
}

/* y = x * scale + shift per channel, folded from the inference formula
 * y = (x - mean) / sqrt(var + eps) * gamma + beta, in double. */
static void bn_fold(const ts_tensor *const *p, float eps, int64_t channels,
                    float *scale, float *shift) {
  const float *gamma = p[1]->data, *beta = p[2]->data, *mean = p[3]->data,
              *var = p[4]->data;
  for (int64_t c = 0; c < channels; c++) {
    const double s = (double)gamma[c] / sqrt((double)var[c] + (double)eps);
    scale[c] = (float)s;
    shift[c] = (float)((double)beta[c] - (double)mean[c] * s);
  }
}

static int bn_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const ts_attr_spec known[] = {{"epsilon", ATTR_FLOAT},
                                       {"momentum", ATTR_FLOAT},
                                       {"training_mode", ATTR_INT},
                                       {"spatial", ATTR_INT},
                                       {"is_test", ATTR_INT},
                                       {"consumed_inputs", ATTR_INTS},
                                       {NULL}};
  int rc = ts_kernel_check_attrs(n, known, err);
  if (rc < 0) return rc;
  if (ts_attr_int(n, "training_mode", 0) != 0)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'training_mode' = 1 is not supported (inference "
        "only)");
  if (ts_attr_int(n, "spatial", 1) != 1)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'spatial' = %lld is not supported (only 1)",
        (long long)ts_attr_int(n, "spatial", 1));
  for (int i = 1; i < n->n_outputs; i++)
    if (output_wanted(n, i))
      return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                            "output %d is produced in training mode only; not "
                            "supported",
                            i);
  bn_params p = {.epsilon = ts_attr_float(n, "epsilon", 1e-5f), .channels = -1};
  const ts_tensor *cst[5] = {NULL};
  bool constant = true;
  for (int i = 1; i < 5 && i < n->n_inputs; i++) {
    const int v = n->inputs[i];
    cst[i] = v >= 0 && v < g->n_values ? g->values[v].constant : NULL;
    if (!cst[i]) constant = false;
  }
  if (!constant || n->n_inputs < 5) return params_store(n, &p, sizeof p, err);
  p.channels = cst[1]->rank == 1 ? cst[1]->dims[0] : -1;
  if ((rc = bn_check_params(n, cst, p.channels, err)) < 0) return rc;
  const size_t size = sizeof p + 2 * (size_t)p.channels * sizeof(float);
  bn_params *q = malloc(size);
  if (!q)
    return ts_kernel_fail(n, err, TS_ENOMEM, "out of memory for parameters");
  *q = p;
  q->scale = (float *)(q + 1);
  q->shift = q->scale + p.channels;
  bn_fold(cst, p.epsilon, p.channels, q->scale, q->shift);
  n->params = q;
  return 0;
}

static int bn_check(const ts_node *n, const ts_tensor *const *in, ts_err *err) {
  const ts_tensor *x = in[0];
  int rc;
  if ((rc = check_float(n, x, 0, "X", err)) < 0 ||
      (rc = check_rank(n, x, 0, "X", 2, TS_MAX_RANK, err)) < 0)
    return rc;
  return bn_check_params(n, in, x->dims[1], err);
}

static int bn_infer(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_err *err) {
  int rc = bn_check(n, in, err);
  if (rc < 0) return rc;
  return set_shape(n, &out[0], TS_DTYPE_FLOAT, in[0]->dims, in[0]->rank, err);
}

static int bn_run(const ts_node *n, const ts_tensor *const *in, ts_tensor *out,
                  ts_kctx *ctx, ts_err *err) {
  const bn_params *p = n->params;
  int rc = bn_check(n, in, err);
  if (rc < 0) return rc;
  const int64_t channels = in[0]->dims[1];
  const float *scale = p->scale, *shift = p->shift;
  if (channels == 0) return 0;
  if (!scale) {
    float *buf = ts_kctx_scratch(ctx, 2 * (size_t)channels * sizeof(float));
    if (!buf)
      return ts_kernel_fail(n, err, TS_ENOMEM,
                            "out of memory for %lld channels",
                            (long long)channels);
    bn_fold(in, p->epsilon, channels, buf, buf + channels);
    scale = buf;
    shift = buf + channels;
  }
  int64_t planes, plane;
  planes_of(in[0], &planes, &plane);
  const float *x = in[0]->data;
  float *y = out[0].data;
  for (int64_t q = 0; q < planes; q++) {
    const float s = scale[q % channels], t = shift[q % channels];
    for (int64_t i = 0; i < plane; i++)
      y[q * plane + i] = x[q * plane + i] * s + t;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Gathering along axes (the engine under Pad and Resize)                   */
/* ------------------------------------------------------------------------ */

/* Copies one output row: dst[j] = src[map[j]], or *fill where map[j] < 0.
 * One function per element size, so each element is one move. */
typedef void (*row_gather_fn)(uint8_t *dst, const uint8_t *src,
                              const int64_t *map, int64_t count,
                              const uint8_t *fill);
#define ROW_GATHER(size)                                                     \
  static void row_gather_##size(uint8_t *dst, const uint8_t *src,            \
                                const int64_t *map, int64_t count,           \
                                const uint8_t *fill) {                       \
    for (int64_t j = 0; j < count; j++)                                      \
      memcpy(dst + j * size, map[j] < 0 ? fill : src + map[j] * size, size); \
  }
ROW_GATHER(1)
ROW_GATHER(2)
ROW_GATHER(4)
ROW_GATHER(8)
#undef ROW_GATHER

static row_gather_fn row_gather_for(size_t esize) {
  static const row_gather_fn table[9] = {[1] = row_gather_1,
                                         [2] = row_gather_2,
                                         [4] = row_gather_4,
                                         [8] = row_gather_8};
  return esize < 9 ? table[esize] : NULL;
}

/* out[o_0, ..., o_{r-1}] = in[map_0[o_0], ..., map_{r-1}[o_{r-1}]], or *fill
 * where any map entry is negative. Rows whose source equals the previous
 * row's are copied from it (upsampling, padding). esize must be 1, 2, 4
 * or 8. */
static void gather_axes(const uint8_t *src, const int64_t *in_dims,
                        uint8_t *dst, const int64_t *out_dims, int rank,
                        size_t esize, int64_t *const *maps,
                        const uint8_t *fill) {
  if (rank == 0) {
    memcpy(dst, src, esize);
    return;
  }
  const row_gather_fn gather = row_gather_for(esize);
  int64_t stride[TS_MAX_RANK], at[TS_MAX_RANK] = {0}, rows = 1;
  stride[rank - 1] = 1;
  for (int d = rank - 2; d >= 0; d--)
    stride[d] = stride[d + 1] * in_dims[d + 1];
  for (int d = 0; d < rank - 1; d++) rows *= out_dims[d];
  const int64_t inner = out_dims[rank - 1];
  const size_t row_bytes = (size_t)inner * esize;
  int64_t prev = -2;
  for (int64_t r = 0; r < rows; r++, dst += row_bytes) {
    int64_t off = 0;
    for (int d = 0; d < rank - 1 && off >= 0; d++) {
      const int64_t m = maps[d][at[d]];
      off = m < 0 ? -1 : off + m * stride[d];
    }
    if (r > 0 && off == prev)
      memcpy(dst, dst - row_bytes, row_bytes);
    else if (off < 0)
      for (int64_t j = 0; j < inner; j++) memcpy(dst + j * esize, fill, esize);
    else
      gather(dst, src + off * (int64_t)esize, maps[rank - 1], inner, fill);
    prev = off;
    for (int d = rank - 2; d >= 0 && ++at[d] == out_dims[d]; d--) at[d] = 0;
  }
}

/* ------------------------------------------------------------------------ */
/* Pad                                                                      */
/* ------------------------------------------------------------------------ */

/* Where an index i outside [0, len) reads from (len >= 1); -1: the constant. */
typedef int64_t (*pad_index_fn)(int64_t i, int64_t len);

static int64_t pad_constant(int64_t i, int64_t len) {
  (void)i, (void)len;
  return -1;
}
static int64_t pad_reflect(int64_t i, int64_t len) {
  if (len == 1) return 0;
  const int64_t period = 2 * (len - 1);
  int64_t m = i % period;
  if (m < 0) m += period;
  return m < len ? m : period - m;
}
static int64_t pad_edge(int64_t i, int64_t len) { return i < 0 ? 0 : len - 1; }
static int64_t pad_wrap(int64_t i, int64_t len) {
  const int64_t m = i % len;
  return m < 0 ? m + len : m;
}

#define PAD_MODES(X, P) X(P, constant) X(P, reflect) X(P, edge) X(P, wrap)
enum { PAD_MODES(PASTE_ITEM, PAD_) PAD_MODE_COUNT };
static const char *const pad_mode_names[] = {PAD_MODES(NAME_ITEM, )};
static const pad_index_fn pad_mode_fns[] = {PAD_MODES(PASTE_ITEM, pad_)};

typedef struct pad_params {
  int mode;
  bool attr_form; /* opset < 11: pads and value are attributes */
  int n_pads;
  int64_t pads[2 * TS_MAX_RANK];
  float value;
} pad_params;

static int pad_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const ts_attr_spec known_attr[] = {{"mode", ATTR_STRING},
                                            {"pads", ATTR_INTS},
                                            {"paddings", ATTR_INTS},
                                            {"value", ATTR_FLOAT},
                                            {NULL}};
  static const ts_attr_spec known_input[] = {{"mode", ATTR_STRING}, {NULL}};
  (void)g;
  pad_params p = {.attr_form = n->opset < 11};
  int rc =
      ts_kernel_check_attrs(n, p.attr_form ? known_attr : known_input, err);
  if (rc < 0 || (rc = attr_choice(n, "mode", pad_mode_names, PAD_MODE_COUNT,
                                  PAD_constant, &p.mode, err)) < 0)
    return rc;
  if (!p.attr_form) {
    if (n->n_inputs < 2 || n->inputs[1] < 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "input 'pads' is required");
    return params_store(n, &p, sizeof p, err);
  }
  if (n->n_inputs != 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "opset %lld Pad takes one input; %d given",
                          (long long)n->opset, n->n_inputs);
  const char *name = ts_attr_find(n, "pads") ? "pads" : "paddings";
  if ((rc = attr_ints_into(n, name, p.pads, 2 * TS_MAX_RANK, INT64_MIN,
                           &p.n_pads, err)) < 0)
    return rc;
  if (p.n_pads == 0 || p.n_pads % 2)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'pads' must hold 2 values per axis (%d given)", p.n_pads);
  p.value = ts_attr_float(n, "value", 0.0f);
  return params_store(n, &p, sizeof p, err);
}

/* Maps count axis values in [-rank, rank) to axes in [0, rank), rejecting
 * repeats; `what` names their source in messages. */
static int normalize_axes(const ts_node *n, const int64_t *vals, int count,
                          int rank, const char *what, int64_t *axes,
                          ts_err *err) {
  for (int k = 0; k < count; k++) {
    int a;
    int rc = ts_kernel_axis(n, vals[k], rank, what, &a, err);
    if (rc < 0) return rc;
    axes[k] = a;
    for (int j = 0; j < k; j++)
      if (axes[j] == a)
        return ts_kernel_fail(n, err, TS_EINVAL, "%s repeats axis %d", what, a);
  }
  return 0;
}

/* Reads Pad's axes input (int32 or int64) into non-negative axes. */
static int read_axes(const ts_node *n, const ts_tensor *t, int rank,
                     int64_t *axes, int *count, ts_err *err) {
  int64_t vals[TS_MAX_RANK];
  size_t c;
  int rc = ts_kernel_ints(n, t, "axes", vals, (size_t)rank, &c, err);
  if (rc != 0) return rc; /* TS_EAGAIN: values not known yet */
  *count = (int)c;
  return normalize_axes(n, vals, (int)c, rank, "input 'axes'", axes, err);
}

/* Per-axis pads before (pb) and after (pe) and the output dims. */
static int pad_resolve(const ts_node *n, const ts_tensor *const *in,
                       int64_t *pb, int64_t *pe, int64_t *out_dims,
                       ts_err *err) {
  const pad_params *p = n->params;
  const ts_tensor *x = in[0];
  const int rank = x->rank;
  int64_t axes[TS_MAX_RANK];
  int naxes = rank, rc;
  const int64_t *pads = p->pads;
  if (!ts_dtype_is_numeric(x->dtype))
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED, "input data has type %s",
                          ts_dtype_name(x->dtype));
  for (int d = 0; d < rank; d++) axes[d] = d;
  if (p->attr_form) {
    if (p->mode == PAD_constant && p->value != 0.0f &&
        x->dtype != TS_DTYPE_FLOAT)
      return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                            "attribute 'value' with %s data is not supported",
                            ts_dtype_name(x->dtype));
    if (p->n_pads != 2 * rank)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'pads' has %d values; input data has rank %d", p->n_pads,
          rank);
  } else {
    const ts_tensor *pt = in[1], *at = input_at(n, in, 3),
                    *cv = input_at(n, in, 2);
    if (at && (rc = read_axes(n, at, rank, axes, &naxes, err)) != 0) return rc;
    if (pt->dtype != TS_DTYPE_INT64)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input 'pads' ('%s') must be int64",
                            input_name(n, 1));
    if (pt->rank != 1 || pt->dims[0] != 2 * naxes)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input 'pads' ('%s') must be 1-D with %d values",
                            input_name(n, 1), 2 * naxes);
    if (cv && (cv->dtype != x->dtype || ts_tensor_numel(cv) > 1))
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input 'constant_value' ('%s') must be one %s",
                            input_name(n, 2), ts_dtype_name(x->dtype));
    if (!pt->data) return TS_EAGAIN;
    pads = pt->data;
  }
  for (int d = 0; d < rank; d++) pb[d] = pe[d] = 0;
  for (int k = 0; k < naxes; k++) {
    pb[axes[k]] = pads[k];
    pe[axes[k]] = pads[naxes + k];
  }
  for (int d = 0; d < rank; d++) {
    const int64_t len = x->dims[d];
    if (len < 0) {
      out_dims[d] = -1;
      continue;
    }
    if (pb[d] < -len - ATTR_MAX || pb[d] > ATTR_MAX ||
        pe[d] < -len - ATTR_MAX || pe[d] > ATTR_MAX || len + pb[d] + pe[d] < 0)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "pads %lld, %lld on axis %d (size %lld) give a negative or "
          "huge size",
          (long long)pb[d], (long long)pe[d], d, (long long)len);
    out_dims[d] = len + pb[d] + pe[d];
    if (len == 0 && out_dims[d] > 0 && p->mode != PAD_constant)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "mode '%s' cannot pad the empty axis %d",
                            pad_mode_names[p->mode], d);
    /* Beyond one reflection (one period for wrap) implementations disagree
     * (numpy pads iteratively), so such pads are refused, not guessed. */
    const int64_t most = p->mode == PAD_reflect ? len - 1
                         : p->mode == PAD_wrap  ? len
                                                : INT64_MAX;
    if (len > 0 && (pb[d] > most || pe[d] > most))
      return ts_kernel_fail(
          n, err, TS_EUNSUPPORTED,
          "mode '%s' pads %lld, %lld on axis %d of size %lld: at most "
          "%lld is supported",
          pad_mode_names[p->mode], (long long)pb[d], (long long)pe[d], d,
          (long long)len, (long long)most);
  }
  return 0;
}

static int pad_infer(const ts_node *n, const ts_tensor *const *in,
                     ts_tensor *out, ts_err *err) {
  int64_t pb[TS_MAX_RANK], pe[TS_MAX_RANK], dims[TS_MAX_RANK];
  int rc = pad_resolve(n, in, pb, pe, dims, err);
  if (rc < 0) return rc;
  return set_shape(n, &out[0], in[0]->dtype, dims, in[0]->rank, err);
}

/* int64 maps for every output axis, carved from one scratch request. */
static int64_t **maps_alloc(const ts_node *n, ts_kctx *ctx,
                            const int64_t *out_dims, int rank, ts_err *err) {
  size_t total = 0;
  for (int d = 0; d < rank; d++) total += (size_t)out_dims[d];
  int64_t **maps = ts_kctx_scratch(
      ctx, TS_MAX_RANK * sizeof(int64_t *) + (total + 1) * sizeof(int64_t));
  if (!maps) {
    ts_kernel_fail(n, err, TS_ENOMEM, "out of memory for index maps");
    return NULL;
  }
  int64_t *next = (int64_t *)(maps + TS_MAX_RANK);
  for (int d = 0; d < rank; d++) {
    maps[d] = next;
    next += out_dims[d];
  }
  return maps;
}

static int pad_run(const ts_node *n, const ts_tensor *const *in, ts_tensor *out,
                   ts_kctx *ctx, ts_err *err) {
  const pad_params *p = n->params;
  const ts_tensor *x = in[0];
  int64_t pb[TS_MAX_RANK], pe[TS_MAX_RANK], dims[TS_MAX_RANK];
  int rc = pad_resolve(n, in, pb, pe, dims, err);
  if (rc < 0) return rc;
  if (ts_shape_numel(dims, x->rank) == 0) return 0;
  const size_t esize = ts_dtype_size(x->dtype);
  uint8_t fill[8] = {0};
  const ts_tensor *cv = p->attr_form ? NULL : input_at(n, in, 2);
  if (p->attr_form)
    memcpy(fill, &p->value, sizeof p->value);
  else if (cv && ts_tensor_numel(cv) == 1)
    memcpy(fill, cv->data, esize);
  int64_t **maps = maps_alloc(n, ctx, dims, x->rank, err);
  if (!maps) return TS_ENOMEM;
  for (int d = 0; d < x->rank; d++)
    for (int64_t o = 0; o < dims[d]; o++) {
      const int64_t i = o - pb[d];
      maps[d][o] =
          i >= 0 && i < x->dims[d] ? i : pad_mode_fns[p->mode](i, x->dims[d]);
    }
  gather_axes(x->data, x->dims, out[0].data, dims, x->rank, esize, maps, fill);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Resize, Upsample (nearest)                                               */
/* ------------------------------------------------------------------------ */

/* Coordinate transforms: output index x -> input coordinate, in float. */
typedef float (*coord_fn)(float x, float scale, float in_len, float out_len);

static float coord_half_pixel(float x, float scale, float in_len,
                              float out_len) {
  (void)in_len, (void)out_len;
  return (x + 0.5f) / scale - 0.5f;
}
static float coord_pytorch_half_pixel(float x, float scale, float in_len,
                                      float out_len) {
  (void)in_len;
  return out_len > 1.0f ? (x + 0.5f) / scale - 0.5f : 0.0f;
}
static float coord_align_corners(float x, float scale, float in_len,
                                 float out_len) {
  (void)scale;
  return out_len == 1.0f ? 0.0f : x * (in_len - 1.0f) / (out_len - 1.0f);
}
static float coord_asymmetric(float x, float scale, float in_len,
                              float out_len) {
  (void)in_len, (void)out_len;
  return x / scale;
}
static float coord_tf_half_pixel_for_nearest(float x, float scale, float in_len,
                                             float out_len) {
  (void)in_len, (void)out_len;
  return (x + 0.5f) / scale;
}
static float coord_half_pixel_symmetric(float x, float scale, float in_len,
                                        float out_len) {
  const float adjustment = out_len / (scale * in_len);
  const float offset = in_len / 2.0f * (1.0f - adjustment);
  return offset + (x + 0.5f) / scale - 0.5f;
}

#define COORD_MODES(X, P)                                              \
  X(P, half_pixel)                                                     \
  X(P, pytorch_half_pixel)                                             \
  X(P, align_corners) X(P, asymmetric) X(P, tf_half_pixel_for_nearest) \
      X(P, half_pixel_symmetric)
enum { COORD_MODES(PASTE_ITEM, COORD_) COORD_COUNT };
static const char *const coord_names[] = {COORD_MODES(NAME_ITEM, )};
static const coord_fn coord_fns[] = {COORD_MODES(PASTE_ITEM, coord_)};

/* Rounding of an input coordinate to an index (clamped afterwards). */
typedef int64_t (*nearest_fn)(float x, bool downsampling);

static int64_t nearest_round_prefer_floor(float x, bool down) {
  (void)down;
  return (int64_t)(floorf(x) + 0.5f == x ? floorf(x) : roundf(x));
}
static int64_t nearest_round_prefer_ceil(float x, bool down) {
  (void)down;
  return (int64_t)(ceilf(x) - 0.5f == x ? ceilf(x) : roundf(x));
}
static int64_t nearest_floor(float x, bool down) {
  (void)down;
  return (int64_t)floorf(x);
}
static int64_t nearest_ceil(float x, bool down) {
  (void)down;
  return (int64_t)ceilf(x);
}
/* opset-10 Resize and Upsample: truncate, or ceil when downsampling. */
static int64_t nearest_simple(float x, bool down) {
  return (int64_t)(down ? ceilf(x) : truncf(x));
}

/* The first NEAREST_PUBLIC modes are the attribute's values; "simple" is
 * internal. */
#define NEAREST_MODES(X, P) \
  X(P, round_prefer_floor)  \
  X(P, round_prefer_ceil) X(P, floor) X(P, ceil) X(P, simple)
enum { NEAREST_MODES(PASTE_ITEM, NEAREST_) NEAREST_PUBLIC = NEAREST_simple };
static const char *const nearest_names[] = {NEAREST_MODES(NAME_ITEM, )};
static const nearest_fn nearest_fns[] = {NEAREST_MODES(PASTE_ITEM, nearest_)};

#define ASPECT_POLICIES(X, P) X(P, stretch) X(P, not_larger) X(P, not_smaller)
enum { ASPECT_POLICIES(PASTE_ITEM, ASPECT_) ASPECT_COUNT };
static const char *const aspect_names[] = {ASPECT_POLICIES(NAME_ITEM, )};

static const char *const resize_mode_names[] = {"nearest"};

typedef struct resize_params {
  int coord, nearest, aspect;
  int scales_in, sizes_in; /* input indices; -1: this form has none */
  int n_axes;
  int64_t axes[TS_MAX_RANK];
  int n_attr_scales; /* Upsample-7: scales attribute */
  float attr_scales[TS_MAX_RANK];
} resize_params;

static int resize_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const ts_attr_spec known_resize[] = {
      {"mode", ATTR_STRING},
      {"coordinate_transformation_mode", ATTR_STRING},
      {"nearest_mode", ATTR_STRING},
      {"cubic_coeff_a", ATTR_FLOAT},
      {"exclude_outside", ATTR_INT},
      {"extrapolation_value", ATTR_FLOAT},
      {"antialias", ATTR_INT},
      {"axes", ATTR_INTS},
      {"keep_aspect_ratio_policy", ATTR_STRING},
      {NULL}};
  static const ts_attr_spec known_legacy[] = {
      {"mode", ATTR_STRING}, {"scales", ATTR_FLOATS}, {NULL}};
  (void)g;
  const bool upsample = strcmp(n->op_type, "Upsample") == 0;
  const bool legacy = upsample || n->opset < 11; /* Upsample, Resize-10 */
  resize_params p = {.coord = COORD_asymmetric,
                     .nearest = NEAREST_simple,
                     .aspect = ASPECT_stretch,
                     .scales_in = 1,
                     .sizes_in = -1};
  int mode, rc;
  if ((rc = ts_kernel_check_attrs(n, legacy ? known_legacy : known_resize,
                                  err)) < 0 ||
      (rc = attr_choice(n, "mode", resize_mode_names, 1, 0, &mode, err)) < 0)
    return rc;
  if (upsample && n->opset < 9) {
    const float *v;
    size_t c;
    p.scales_in = -1;
    rc = ts_attr_floats(n, "scales", &v, &c, err);
    if (rc == TS_ENOTFOUND)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'scales' is required");
    if (rc < 0) return rc;
    if (c > TS_MAX_RANK)
      return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                            "attribute 'scales' has %zu values", c);
    memcpy(p.attr_scales, v, c * sizeof *v);
    p.n_attr_scales = (int)c;
  } else if (legacy && (n->n_inputs < 2 || n->inputs[1] < 0)) {
    return ts_kernel_fail(n, err, TS_EINVAL, "input 'scales' is required");
  } else if (!legacy) {
    p.scales_in = 2;
    p.sizes_in = 3;
    if ((rc = attr_choice(n, "coordinate_transformation_mode", coord_names,
                          COORD_COUNT, COORD_half_pixel, &p.coord, err)) < 0 ||
        (rc = attr_choice(n, "nearest_mode", nearest_names, NEAREST_PUBLIC,
                          NEAREST_round_prefer_floor, &p.nearest, err)) < 0 ||
        (rc = attr_choice(n, "keep_aspect_ratio_policy", aspect_names,
                          ASPECT_COUNT, ASPECT_stretch, &p.aspect, err)) < 0 ||
        (rc = attr_ints_into(n, "axes", p.axes, TS_MAX_RANK, INT64_MIN,
                             &p.n_axes, err)) < 0)
      return rc;
  }
  return params_store(n, &p, sizeof p, err);
}

/* Output dims and per-axis scales of a Resize/Upsample. */
static int resize_resolve(const ts_node *n, const ts_tensor *const *in,
                          int64_t *out_dims, float *scales, ts_err *err) {
  const resize_params *p = n->params;
  const ts_tensor *x = in[0];
  const int rank = x->rank;
  int64_t axes[TS_MAX_RANK];
  int naxes = rank;
  if (!ts_dtype_is_numeric(x->dtype))
    return ts_kernel_fail(n, err, TS_EUNSUPPORTED, "input X has type %s",
                          ts_dtype_name(x->dtype));
  if (rank < 1) return ts_kernel_fail(n, err, TS_EINVAL, "input X is a scalar");
  for (int d = 0; d < rank; d++) axes[d] = d;
  if (p->n_axes) {
    naxes = p->n_axes;
    int rc =
        normalize_axes(n, p->axes, naxes, rank, "attribute 'axes'", axes, err);
    if (rc < 0) return rc;
  }
  const ts_tensor *st =
      p->scales_in >= 0 ? input_at(n, in, p->scales_in) : NULL;
  const ts_tensor *zt = p->sizes_in >= 0 ? input_at(n, in, p->sizes_in) : NULL;
  if (st && ts_tensor_numel(st) == 0) st = NULL;
  if (zt && ts_tensor_numel(zt) == 0) zt = NULL;
  const float *sv = p->attr_scales;
  const int64_t *zv = NULL;
  if (p->n_attr_scales) {
    if (p->n_attr_scales != rank)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'scales' has %d values; input X has rank %d",
          p->n_attr_scales, rank);
  } else if ((st != NULL) == (zt != NULL)) {
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "exactly one of the inputs 'scales' and 'sizes' must be given");
  } else {
    const ts_tensor *t = st ? st : zt;
    const int i = st ? p->scales_in : p->sizes_in;
    const ts_dtype want = st ? TS_DTYPE_FLOAT : TS_DTYPE_INT64;
    if (t->dtype != want || t->rank != 1 || t->dims[0] != naxes)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "input '%s' ('%s') must be a 1-D %s tensor of %d values",
          st ? "scales" : "sizes", input_name(n, i), ts_dtype_name(want),
          naxes);
    if (!t->data) return TS_EAGAIN;
    sv = st ? st->data : NULL;
    zv = zt ? zt->data : NULL;
  }
  for (int d = 0; d < rank; d++) {
    out_dims[d] = x->dims[d];
    scales[d] = 1.0f;
  }
  float common = zv && p->aspect == ASPECT_not_larger ? INFINITY : 0.0f;
  for (int k = 0; k < naxes; k++) {
    const int d = (int)axes[k];
    const int64_t len = x->dims[d];
    if (sv) {
      if (!(sv[k] > 0.0f) || !isfinite(sv[k]))
        return ts_kernel_fail(n, err, TS_EINVAL,
                              "scale %g for axis %d is not positive",
                              (double)sv[k], d);
      scales[d] = sv[k];
      if (len < 0) continue;
      const float o = floorf((float)len * sv[k]);
      if (o > (float)ATTR_MAX * (float)ATTR_MAX)
        return ts_kernel_fail(n, err, TS_EINVAL,
                              "scale %g makes axis %d too large", (double)sv[k],
                              d);
      out_dims[d] = (int64_t)o;
      continue;
    }
    if (zv[k] < 0 || (len == 0 && zv[k] > 0))
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "size %lld for axis %d (input size %lld) is not valid",
          (long long)zv[k], d, (long long)len);
    out_dims[d] = zv[k];
    scales[d] = len > 0 ? (float)zv[k] / (float)len : 1.0f;
    if (p->aspect == ASPECT_not_larger && scales[d] < common)
      common = scales[d];
    if (p->aspect == ASPECT_not_smaller && scales[d] > common)
      common = scales[d];
  }
  if (zv && p->aspect != ASPECT_stretch)
    for (int k = 0; k < naxes; k++) {
      const int d = (int)axes[k];
      const float o = roundf(common * (float)x->dims[d]);
      /* A float beyond int64 must not be converted (undefined). */
      if (x->dims[d] >= 0 && !(o < 0x1p62f))
        return ts_kernel_fail(n, err, TS_EINVAL,
                              "sizes make axis %d too large (%g)", d,
                              (double)o);
      scales[d] = common;
      out_dims[d] = x->dims[d] < 0 ? -1 : (int64_t)o;
    }
  return 0;
}

static int resize_infer(const ts_node *n, const ts_tensor *const *in,
                        ts_tensor *out, ts_err *err) {
  int64_t dims[TS_MAX_RANK];
  float scales[TS_MAX_RANK];
  int rc = resize_resolve(n, in, dims, scales, err);
  if (rc < 0) return rc;
  return set_shape(n, &out[0], in[0]->dtype, dims, in[0]->rank, err);
}

static int resize_run(const ts_node *n, const ts_tensor *const *in,
                      ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const resize_params *p = n->params;
  const ts_tensor *x = in[0];
  int64_t dims[TS_MAX_RANK];
  float scales[TS_MAX_RANK];
  int rc = resize_resolve(n, in, dims, scales, err);
  if (rc < 0) return rc;
  if (ts_shape_numel(dims, x->rank) == 0) return 0;
  int64_t **maps = maps_alloc(n, ctx, dims, x->rank, err);
  if (!maps) return TS_ENOMEM;
  for (int d = 0; d < x->rank; d++) {
    const int64_t len = x->dims[d], olen = dims[d];
    for (int64_t o = 0; o < olen; o++) {
      const float c =
          coord_fns[p->coord]((float)o, scales[d], (float)len, (float)olen);
      int64_t i = nearest_fns[p->nearest](c, scales[d] < 1.0f);
      maps[d][o] = i < 0 ? 0 : i >= len ? len - 1 : i;
    }
  }
  gather_axes(x->data, x->dims, out[0].data, dims, x->rank,
              ts_dtype_size(x->dtype), maps, NULL);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The op table entries                                                     */
/* ------------------------------------------------------------------------ */

#define OP(sym, opname, in_lo, in_hi, out_lo, out_hi, prep, rel, inf, rn) \
  const ts_op ts_op_##sym = {.domain = "",                                \
                             .name = opname,                              \
                             .min_inputs = in_lo,                         \
                             .max_inputs = in_hi,                         \
                             .min_outputs = out_lo,                       \
                             .max_outputs = out_hi,                       \
                             .prepare = prep,                             \
                             .release = rel,                              \
                             .infer = inf,                                \
                             .run = rn};
OP(conv, "Conv", 2, 3, 1, 1, conv_prepare, params_release, conv_infer, conv_run)
OP(max_pool, "MaxPool", 1, 1, 1, 2, max_pool_prepare, params_release,
   pool_infer, max_pool_run)
OP(average_pool, "AveragePool", 1, 1, 1, 1, average_pool_prepare,
   params_release, pool_infer, average_pool_run)
OP(global_average_pool, "GlobalAveragePool", 1, 1, 1, 1, global_pool_prepare,
   NULL, global_pool_infer, global_average_pool_run)
OP(global_max_pool, "GlobalMaxPool", 1, 1, 1, 1, global_pool_prepare, NULL,
   global_pool_infer, global_max_pool_run)
OP(batch_normalization, "BatchNormalization", 5, 5, 1, 5, bn_prepare,
   params_release, bn_infer, bn_run)
OP(pad, "Pad", 1, 4, 1, 1, pad_prepare, params_release, pad_infer, pad_run)
OP(resize, "Resize", 1, 4, 1, 1, resize_prepare, params_release, resize_infer,
   resize_run)
OP(upsample, "Upsample", 1, 2, 1, 1, resize_prepare, params_release,
   resize_infer, resize_run)
#undef OP
