/*
 * pad_resize.c - Pad, Resize and Upsample (mode "nearest") (list in
 * list_cnn.h; invariants and semantics in cnn_int.h). Both only move
 * elements, so they take any fixed-size type: each computes one index map
 * per output axis (pad_resolve(), resize_resolve() give the shapes, in
 * infer and run alike) and gather_axes() copies along them.
 */
#include <math.h>
#include <string.h>

#include "cnn_int.h"

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
  if (rc < 0 ||
      (rc = ts_cnn_attr_choice(n, "mode", pad_mode_names, PAD_MODE_COUNT,
                               PAD_constant, &p.mode, err)) < 0)
    return rc;
  if (!p.attr_form) {
    if (n->n_inputs < 2 || n->inputs[1] < 0)
      return ts_kernel_fail(n, err, TS_EINVAL, "input 'pads' is required");
    return ts_cnn_params_store(n, &p, sizeof p, err);
  }
  if (n->n_inputs != 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "opset %lld Pad takes one input; %d given",
                          (long long)n->opset, n->n_inputs);
  const char *name = ts_attr_find(n, "pads") ? "pads" : "paddings";
  if ((rc = ts_cnn_attr_ints(n, name, p.pads, 2 * TS_MAX_RANK, INT64_MIN,
                             &p.n_pads, err)) < 0)
    return rc;
  if (p.n_pads == 0 || p.n_pads % 2)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'pads' must hold 2 values per axis (%d given)", p.n_pads);
  p.value = ts_attr_float(n, "value", 0.0f);
  return ts_cnn_params_store(n, &p, sizeof p, err);
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
    const ts_tensor *pt = in[1], *at = ts_cnn_input_at(n, in, 3),
                    *cv = ts_cnn_input_at(n, in, 2);
    if (at && (rc = read_axes(n, at, rank, axes, &naxes, err)) != 0) return rc;
    if (pt->dtype != TS_DTYPE_INT64)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input 'pads' ('%s') must be int64",
                            ts_cnn_input_name(n, 1));
    if (pt->rank != 1 || pt->dims[0] != 2 * naxes)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input 'pads' ('%s') must be 1-D with %d values",
                            ts_cnn_input_name(n, 1), 2 * naxes);
    if (cv && (cv->dtype != x->dtype || ts_tensor_numel(cv) > 1))
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "input 'constant_value' ('%s') must be one %s",
                            ts_cnn_input_name(n, 2), ts_dtype_name(x->dtype));
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
  return ts_cnn_set_shape(n, &out[0], in[0]->dtype, dims, in[0]->rank, err);
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
  const ts_tensor *cv = p->attr_form ? NULL : ts_cnn_input_at(n, in, 2);
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

#define COORD_MODES(X, P)  \
  X(P, half_pixel)         \
  X(P, pytorch_half_pixel) \
  X(P, align_corners)      \
  X(P, asymmetric) X(P, tf_half_pixel_for_nearest) X(P, half_pixel_symmetric)
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
      (rc = ts_cnn_attr_choice(n, "mode", resize_mode_names, 1, 0, &mode,
                               err)) < 0)
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
    if ((rc = ts_cnn_attr_choice(n, "coordinate_transformation_mode",
                                 coord_names, COORD_COUNT, COORD_half_pixel,
                                 &p.coord, err)) < 0 ||
        (rc = ts_cnn_attr_choice(n, "nearest_mode", nearest_names,
                                 NEAREST_PUBLIC, NEAREST_round_prefer_floor,
                                 &p.nearest, err)) < 0 ||
        (rc = ts_cnn_attr_choice(n, "keep_aspect_ratio_policy", aspect_names,
                                 ASPECT_COUNT, ASPECT_stretch, &p.aspect,
                                 err)) < 0 ||
        (rc = ts_cnn_attr_ints(n, "axes", p.axes, TS_MAX_RANK, INT64_MIN,
                               &p.n_axes, err)) < 0)
      return rc;
  }
  return ts_cnn_params_store(n, &p, sizeof p, err);
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
      p->scales_in >= 0 ? ts_cnn_input_at(n, in, p->scales_in) : NULL;
  const ts_tensor *zt =
      p->sizes_in >= 0 ? ts_cnn_input_at(n, in, p->sizes_in) : NULL;
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
          st ? "scales" : "sizes", ts_cnn_input_name(n, i), ts_dtype_name(want),
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
  return ts_cnn_set_shape(n, &out[0], in[0]->dtype, dims, in[0]->rank, err);
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

CNN_OP(pad, "Pad", 1, 4, 1, 1, pad_prepare, ts_cnn_params_release, pad_infer,
       pad_run);
CNN_OP(resize, "Resize", 1, 4, 1, 1, resize_prepare, ts_cnn_params_release,
       resize_infer, resize_run);
CNN_OP(upsample, "Upsample", 1, 2, 1, 1, resize_prepare, ts_cnn_params_release,
       resize_infer, resize_run);
