/*
 * fuse.h - combining partial outputs into one tensor.
 *
 * Used by plans (concat of column shards, sum of row shards, both nested
 * for block splits, concat along the batch of data shards) and by
 * ensembles (mean, weighted mean, vote).
 * All functions validate shapes and dtypes and fail with TS_EINVAL naming the
 * part at fault; they never read out of bounds on mismatched inputs.
 * The output is allocated by the callee (owned) and freed by the caller with
 * ts_tensor_free().
 */
#ifndef TS_FUSE_H
#define TS_FUSE_H

#include "plan.h"
#include "tensor.h"

/* Concatenate along `axis` (negative counts from the end). */
int ts_fuse_concat(const ts_tensor *const *parts, int n, int axis,
                   ts_tensor *out, ts_err *err);
/* Element-wise sum (float, double, int32, int64). */
int ts_fuse_sum(const ts_tensor *const *parts, int n, ts_tensor *out,
                ts_err *err);
/* Element-wise mean, or weighted mean when weights != NULL (weights are
 * normalized by their sum). Float and double only. */
int ts_fuse_mean(const ts_tensor *const *parts, int n, const double *weights,
                 ts_tensor *out, ts_err *err);
/* Majority vote. Integer parts (labels) vote per element, ties to the
 * smallest label. Float parts of shape [..., C] (scores) vote by argmax over
 * the last axis and the answer is the int64 winning class per row. */
int ts_fuse_vote(const ts_tensor *const *parts, int n, ts_tensor *out,
                 ts_err *err);
/* Dispatch on kind (weights only for WEIGHTED_MEAN). */
int ts_fuse(ts_fuse_kind kind, const ts_tensor *const *parts, int n, int axis,
            const double *weights, ts_tensor *out, ts_err *err);

/* Where ts_fuse_stage finds parts and leaves fused tensors. `lookup`
 * returns the tensor named `name` (a shard's output, or a fused tensor
 * stored earlier), NULL when there is none; `store` takes ownership of the
 * fused tensor `t` under `name` (a string of the plan, which outlives the
 * store), freeing it itself when it fails. */
typedef struct ts_fuse_env {
  const ts_tensor *(*lookup)(void *user, const char *name);
  int (*store)(void *user, const char *name, ts_tensor *t, ts_err *err);
  void *user;
} ts_fuse_env;

/* Applies a stage's fusions in list order, storing each fused tensor
 * before the next fusion runs, so that a fusion's parts may be the outputs
 * of earlier fusions (plan.h, "Fusions nest": a block split's column sums,
 * then their concat). A part naming the fusion itself or a later one is a
 * broken plan (TS_EINVAL); a part nobody produced is TS_EIO. */
int ts_fuse_stage(const ts_stage *st, const ts_fuse_env *env, ts_err *err);

#endif
