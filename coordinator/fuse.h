/*
 * fuse.h - combining partial outputs into one tensor.
 *
 * Used by plans (concat of column shards, sum of row shards, concat along
 * the batch of data shards) and by ensembles (mean, weighted mean, vote).
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

#endif
