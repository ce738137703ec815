/*
 * cnn_int.h - what the kernel files of the "cnn" family (list_cnn.h) share:
 * input and attribute checks, the window geometry of Conv and the pools,
 * and the op entry macro, defined in cnn_common.c. The ops live in conv.c
 * (Conv), pool.c (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool),
 * batch_norm.c (BatchNormalization, inference) and pad_resize.c (Pad,
 * Resize and Upsample, mode "nearest"). Not a public interface: these files
 * only.
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
 *    attributes and the input shape by one function, ts_cnn_window_resolve(),
 *    in both infer and run, so shape inference and the kernel cannot
 *    disagree. Likewise pad_resolve() and resize_resolve() for Pad and
 *    Resize. A dim that is not known at load time (negative, e.g. a symbolic
 *    batch) yields a negative output dim, never an error.
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
#ifndef TS_CNN_INT_H
#define TS_CNN_INT_H

/* GCC 12's -O2 vectorizes no loop of unknown trip count ("very cheap" cost
 * model): every row loop here. As in elementwise.c, allow the cheap model
 * for the files that include this header. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=cheap")
#endif
#include <stdbool.h>
#include <stdint.h>

#include "kernel_util.h"
#include "list_cnn.h"
#include "ops.h"

/* Declarations from the list, so that every definition in the family's
 * files has one (a misspelt symbol is an undeclared definition). */
#define X(domain, op_type, symbol) extern const ts_op ts_op_##symbol;
TS_OPS_CNN(X)
#undef X

/* Attribute value enumerations are X-macro lists X(prefix, value); these
 * items turn one into enum constants / functions (prefix##value) and a
 * name table ("value"). */
#define PASTE_ITEM(prefix, value) prefix##value,
#define NAME_ITEM(prefix, value) #value,

#define SP_MAX 3                    /* spatial dims of the windowed ops */
#define ATTR_MAX ((int64_t)1 << 30) /* bound on kernel/stride/dilation/pad */

/* ---- inputs and attributes (cnn_common.c) -------------------------------- */

/* The name of the tensor feeding input i, for messages. */
const char *ts_cnn_input_name(const ts_node *n, int i);

/* in[i], or NULL when the node has no input i or it is omitted. */
static inline const ts_tensor *ts_cnn_input_at(const ts_node *n,
                                               const ts_tensor *const *in,
                                               int i) {
  return i < n->n_inputs && n->inputs[i] >= 0 ? in[i] : NULL;
}

static inline bool ts_cnn_output_wanted(const ts_node *n, int i) {
  return i < n->n_outputs && n->outputs[i] >= 0;
}

/* Input i (ONNX name `role`) must be float32: EUNSUPPORTED otherwise. */
int ts_cnn_check_float(const ts_node *n, const ts_tensor *t, int i,
                       const char *role, ts_err *err);

/* Input i must have a rank in [lo, hi]: below lo is malformed (EINVAL),
 * above hi is beyond what Tessera implements (EUNSUPPORTED). */
int ts_cnn_check_rank(const ts_node *n, const ts_tensor *t, int i,
                      const char *role, int lo, int hi, ts_err *err);

/* ts_tensor_set_shape, the message prefixed with the node. */
int ts_cnn_set_shape(const ts_node *n, ts_tensor *t, ts_dtype dtype,
                     const int64_t *dims, int rank, ts_err *err);

static inline int64_t ts_cnn_ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

/* Reads an ints attribute of at most `max` values, each in
 * [min_value, ATTR_MAX] unless min_value is INT64_MIN, into dst; *count is 0
 * when the attribute is absent. */
int ts_cnn_attr_ints(const ts_node *n, const char *name, int64_t *dst, int max,
                     int64_t min_value, int *count, ts_err *err);

/* A string attribute that must be one of names[0..count); *out is its index,
 * or dflt when absent. Any other value is EUNSUPPORTED, listing the ones
 * supported. */
int ts_cnn_attr_choice(const ts_node *n, const char *name,
                       const char *const *names, int count, int dflt, int *out,
                       ts_err *err);

/* Allocates node->params as a copy of `size` bytes at src. */
int ts_cnn_params_store(ts_node *n, const void *src, size_t size, ts_err *err);

/* The release of every op here: params are one malloc'd block. */
void ts_cnn_params_release(ts_node *n);

/* Planes and plane size of a (N, C, spatial...) tensor. */
static inline void ts_cnn_planes_of(const ts_tensor *x, int64_t *planes,
                                    int64_t *plane) {
  *planes = x->dims[0] * x->dims[1];
  *plane = 1;
  for (int i = 2; i < x->rank; i++) *plane *= x->dims[i];
}

/* ---- window geometry: Conv, MaxPool, AveragePool (cnn_common.c) ---------- */

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

/* Checks the attributes against `known` and parses the window attributes
 * into *a; TS_EINVAL when kernel_shape is required and absent. */
int ts_cnn_window_parse(const ts_node *n, const ts_attr_spec *known,
                        bool kernel_required, window_attrs *a, ts_err *err);

/* Resolves the geometry of an input with nsp spatial dims `spatial` and a
 * kernel `kernel` (both may hold negative = unknown dims). */
int ts_cnn_window_resolve(const ts_node *n, const window_attrs *a,
                          const int64_t *spatial, int nsp,
                          const int64_t *kernel, window *w, ts_err *err);

/* The range [*lo, *hi) of o in [0, count) with 0 <= start + o*step < limit
 * (step >= 1); empty (lo == hi) when there is none. */
static inline void ts_cnn_valid_range(int64_t start, int64_t step,
                                      int64_t count, int64_t limit, int64_t *lo,
                                      int64_t *hi) {
  int64_t l = start >= 0 ? 0 : ts_cnn_ceil_div(-start, step);
  int64_t h = start >= limit ? 0 : ts_cnn_ceil_div(limit - start, step);
  if (h > count) h = count;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

static inline int64_t ts_cnn_prod3(const int64_t *v) {
  return v[0] * v[1] * v[2];
}

/* ---- the op entries ------------------------------------------------------ */

/* One op of the default domain: `const ts_op ts_op_<sym>`. */
#define CNN_OP(sym, opname, in_lo, in_hi, out_lo, out_hi, prep, rel, inf, rn) \
  const ts_op ts_op_##sym = {.domain = "",                                    \
                             .name = opname,                                  \
                             .min_inputs = in_lo,                             \
                             .max_inputs = in_hi,                             \
                             .min_outputs = out_lo,                           \
                             .max_outputs = out_hi,                           \
                             .prepare = prep,                                 \
                             .release = rel,                                  \
                             .infer = inf,                                    \
                             .run = rn}

#endif
