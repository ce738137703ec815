/*
 * transformer_int.h - what the kernel files of the "transformer" family
 * (list_transformer.h) share: shape.c (Shape, Unsqueeze, Squeeze,
 * ConstantOfShape, Range), movement.c (Transpose, Gather, Concat, Slice,
 * Split, Tile) and reduce.c (Reduce*, LayerNormalization). Not a public
 * interface: these three files only.
 *
 * The family holds the shape, index and reduction kernels, as
 * torch.onnx.export writes them for transformer encoders (opsets 13-17,
 * most also earlier): Transpose, Shape, Gather, Unsqueeze, Squeeze, Concat,
 * Slice, Split, ConstantOfShape, Range, Tile, Reduce{Sum,Mean,Max,Min,Prod} and
 * LayerNormalization.
 *
 * Data movement is dtype-blind: kernels copy elements by size, so every
 * fixed-size dtype works. Transpose, Slice and Tile are one strided copy
 * (strided_copy) over a view of the input; Concat, Split and Gather copy
 * contiguous blocks.
 *
 * Shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat feeding Reshape,
 * Slice bounds, Split sizes, ...) runs on int64 tensors with the same code at
 * load time (constant folding, where the loader evaluates small integer
 * results) and at run time. infer() needs the *values* of some inputs
 * (Slice's starts, Unsqueeze's axes from opset 13, ...); while they are
 * unknown it returns TS_EAGAIN.
 *
 * Invariants: every index, axis, bound and size read from a model or a
 * request is validated before use (TS_EINVAL naming node and input); run()
 * recomputes what it needs from its inputs with the same helpers infer()
 * uses, so the two never disagree; only Reduce* uses scratch memory.
 */
#ifndef TS_TRANSFORMER_INT_H
#define TS_TRANSFORMER_INT_H

/* The build's -O2 (GCC 12) uses the "very cheap" vectorizer cost model,
 * which vectorizes no loop whose trip count is unknown: that is every
 * kernel loop here. Allow the cheap model for the files that include this
 * header (2-4x on the element-wise loops) until common/meson.build sets it for
 * the kernels. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=cheap")
#endif
#include <string.h>

#include "kernel_util.h"
#include "ops.h"

static const ts_attr_spec ts_transformer_no_attrs[] = {{NULL}};

/* Reads an integer list that is attribute `name` before opset `input_from`
 * and input `index` from then on. *present is false when it is absent (then
 * *count is 0). */
int ts_transformer_int_list(const ts_node *n, const ts_tensor *const *in,
                            const char *name, int index, int64_t input_from,
                            int64_t *vals, size_t max, size_t *count,
                            bool *present, ts_err *err);

/* Marks the axes vals[0..count) of a rank-`rank` tensor in mask[];
 * TS_EINVAL on an axis out of range or repeated. */
int ts_transformer_axes_mask(const ts_node *n, const int64_t *vals,
                             size_t count, int rank, bool *mask, ts_err *err);

static inline int64_t ts_transformer_dims_product(const int64_t *dims, int from,
                                                  int to) {
  int64_t p = 1;
  for (int k = from; k < to; k++) p *= dims[k];
  return p;
}

static inline int ts_transformer_prepare_plain(ts_node *n, const ts_graph *g,
                                               ts_err *err) {
  (void)g;
  return ts_kernel_check_attrs(n, ts_transformer_no_attrs, err);
}

/* Copies in to out (same bytes) unless the executor already aliased them. */
static inline int ts_transformer_copy_through(const ts_tensor *in,
                                              ts_tensor *out) {
  if (out->data != in->data && in->nbytes)
    memcpy(out->data, in->data, in->nbytes);
  return TS_OK;
}

/* The slot of a numeric dtype (Range and Reduce* take those); else -1. */
static inline int ts_transformer_num_slot(ts_dtype t) {
  int s = ts_kernel_slot(t);
  return s < TS_N_NUM_SLOTS ? s : -1;
}

#endif
