/*
 * fuse.c - combining partial outputs into one tensor (see fuse.h), a
 * stage's (possibly nested) fusions, and the name tables of plan.h
 * (strategies and fusion kinds).
 *
 * Invariants:
 *  - every part is validated (non-NULL, known numeric dtype, rank, data
 *    present, nbytes consistent with its shape) before any byte is read, so
 *    mismatched or truncated parts fail with TS_EINVAL naming the part index
 *    and the dim, never an out-of-bounds read;
 *  - the output is allocated here (owned); on failure *out is left zeroed;
 *  - arithmetic over float parts accumulates in double, so the result does
 *    not depend on the order of the parts beyond double rounding.
 */
#include "fuse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- name tables (plan.h) ---------------------------------------------- */

static const char *const strategy_names[] = {
#define TS_X(name, str) [TS_STRATEGY_##name] = str,
    TS_STRATEGY_LIST(TS_X)
#undef TS_X
};

static const char *const fuse_names[] = {
#define TS_X(name, str) [TS_FUSE_##name] = str,
    TS_FUSE_LIST(TS_X)
#undef TS_X
};

static const char *const precision_names[] = {
#define TS_X(name, str) [TS_PRECISION_##name] = str,
    TS_PRECISION_LIST(TS_X)
#undef TS_X
};

#define N_PRECISIONS ((int)(sizeof precision_names / sizeof precision_names[0]))
#define N_STRATEGIES ((int)(sizeof strategy_names / sizeof strategy_names[0]))
#define N_FUSE_KINDS ((int)(sizeof fuse_names / sizeof fuse_names[0]))

/* Index of s in a name table, -1 when absent (or s is NULL). */
static int name_lookup(const char *const *names, int n, const char *s) {
  if (!s) return -1;
  for (int i = 0; i < n; i++)
    if (names[i] && strcmp(names[i], s) == 0) return i;
  return -1;
}

int ts_strategy_parse(const char *s) {
  return name_lookup(strategy_names, N_STRATEGIES, s);
}

const char *ts_strategy_name(ts_strategy s) {
  if ((int)s < 0 || (int)s >= N_STRATEGIES) return "unknown";
  return strategy_names[s];
}

int ts_precision_parse(const char *s) {
  return name_lookup(precision_names, N_PRECISIONS, s);
}

const char *ts_precision_name(ts_precision p) {
  if ((int)p < 0 || (int)p >= N_PRECISIONS) return "unknown";
  return precision_names[p];
}

int ts_fuse_parse(const char *s) {
  return name_lookup(fuse_names, N_FUSE_KINDS, s);
}

const char *ts_fuse_name(ts_fuse_kind f) {
  if ((int)f < 0 || (int)f >= N_FUSE_KINDS) return "unknown";
  return fuse_names[f];
}

/* ---- element access tables --------------------------------------------- */

/* Reads element i of a typed buffer as double / int64, and writes one. One
 * line per dtype; the fusions below only index these tables. */
#define NUMERIC_TYPES(X)         \
  X(FLOAT, float, 1, 0)          \
  X(DOUBLE, double, 1, 0)        \
  X(INT32, int32_t, 0, 1)        \
  X(INT64, int64_t, 0, 1)        \
  X(INT8, int8_t, 0, 1)          \
  X(UINT8, uint8_t, 0, 1)        \
  X(INT16, int16_t, 0, 1)        \
  X(UINT16, uint16_t, 0, 1)      \
  X(UINT32, uint32_t, 0, 1)      \
  X(UINT64, uint64_t, 0, 1)

typedef struct elem_ops {
  ts_dtype dtype;
  bool is_float;   /* float, double: mean and score votes */
  bool is_label;   /* integers: label votes */
  double (*get_f)(const void *p, int64_t i);
  int64_t (*get_i)(const void *p, int64_t i);
  void (*put_f)(void *p, int64_t i, double v);
  void (*put_i)(void *p, int64_t i, int64_t v);
} elem_ops;

#define TS_X(name, ctype, isf, isl)                                       \
  static double get_f_##name(const void *p, int64_t i) {                  \
    return (double)((const ctype *)p)[i];                                 \
  }                                                                       \
  static int64_t get_i_##name(const void *p, int64_t i) {                 \
    return (int64_t)((const ctype *)p)[i];                                \
  }                                                                       \
  static void put_f_##name(void *p, int64_t i, double v) {                \
    ((ctype *)p)[i] = (ctype)v;                                           \
  }                                                                       \
  static void put_i_##name(void *p, int64_t i, int64_t v) {               \
    ((ctype *)p)[i] = (ctype)v;                                           \
  }
NUMERIC_TYPES(TS_X)
#undef TS_X

static const elem_ops elem_table[] = {
#define TS_X(name, ctype, isf, isl)                                   \
  {TS_DTYPE_##name, isf, isl, get_f_##name, get_i_##name, put_f_##name, \
   put_i_##name},
    NUMERIC_TYPES(TS_X)
#undef TS_X
};

static const elem_ops *elem_find(ts_dtype t) {
  for (size_t i = 0; i < sizeof elem_table / sizeof elem_table[0]; i++)
    if (elem_table[i].dtype == t) return &elem_table[i];
  return NULL;
}

/* ---- validation -------------------------------------------------------- */

/* Checks that part i is a well-formed tensor: non-NULL, numeric dtype, rank
 * in range, nbytes matching the shape, data present when nbytes > 0. */
static int check_part(const ts_tensor *const *parts, int i, ts_err *err) {
  const ts_tensor *p = parts[i];
  if (!p) return ts_err_set(err, TS_EINVAL, "part %d is missing", i);
  if (!ts_dtype_is_numeric(p->dtype))
    return ts_err_set(err, TS_EINVAL, "part %d has dtype %s, not numeric", i,
                      ts_dtype_name(p->dtype));
  if (p->rank < 0 || p->rank > TS_MAX_RANK)
    return ts_err_set(err, TS_EINVAL, "part %d has rank %d", i, p->rank);
  int64_t nb = ts_shape_nbytes(p->dtype, p->dims, p->rank);
  if (nb < 0 || (size_t)nb != p->nbytes) {
    char s[128];
    return ts_err_set(err, TS_EINVAL,
                      "part %d: shape %s of %s does not match its %zu bytes",
                      i, ts_shape_str(p->dims, p->rank, s, sizeof s),
                      ts_dtype_name(p->dtype), p->nbytes);
  }
  if (p->nbytes > 0 && !p->data)
    return ts_err_set(err, TS_EINVAL, "part %d has no data", i);
  return TS_OK;
}

/* Validates n >= 1 parts, and that every part has part 0's dtype and rank
 * and the same dims except `skip_axis` (-1: none). */
static int check_parts(const ts_tensor *const *parts, int n, int skip_axis,
                       ts_err *err) {
  if (!parts || n < 1)
    return ts_err_set(err, TS_EINVAL, "fusion needs at least one part, got %d",
                      n);
  for (int i = 0; i < n; i++) {
    int rc = check_part(parts, i, err);
    if (rc) return rc;
    const ts_tensor *p = parts[i], *p0 = parts[0];
    if (p->dtype != p0->dtype)
      return ts_err_set(err, TS_EINVAL, "part %d has dtype %s, part 0 has %s",
                        i, ts_dtype_name(p->dtype), ts_dtype_name(p0->dtype));
    if (p->rank != p0->rank)
      return ts_err_set(err, TS_EINVAL, "part %d has rank %d, part 0 has %d",
                        i, p->rank, p0->rank);
    for (int d = 0; d < p->rank; d++)
      if (d != skip_axis && p->dims[d] != p0->dims[d])
        return ts_err_set(err, TS_EINVAL,
                          "part %d has dim %d = %lld, part 0 has %lld", i, d,
                          (long long)p->dims[d], (long long)p0->dims[d]);
  }
  return TS_OK;
}

/* ---- concat ------------------------------------------------------------ */

int ts_fuse_concat(const ts_tensor *const *parts, int n, int axis,
                   ts_tensor *out, ts_err *err) {
  memset(out, 0, sizeof *out);
  if (!parts || n < 1 || !parts[0])
    return ts_err_set(err, TS_EINVAL, "concat needs at least one part");
  int rank = parts[0]->rank;
  int ax = axis < 0 ? axis + rank : axis;
  if (rank < 1 || ax < 0 || ax >= rank)
    return ts_err_set(err, TS_EINVAL,
                      "concat axis %d is out of range for rank %d of part 0",
                      axis, rank);
  int rc = check_parts(parts, n, ax, err);
  if (rc) return rc;

  int64_t dims[TS_MAX_RANK];
  memcpy(dims, parts[0]->dims, sizeof dims);
  dims[ax] = 0;
  for (int i = 0; i < n; i++) {
    if (dims[ax] > INT64_MAX - parts[i]->dims[ax])
      return ts_err_set(err, TS_EINVAL, "concat: dim %d overflows at part %d",
                        ax, i);
    dims[ax] += parts[i]->dims[ax];
  }
  rc = ts_tensor_alloc(out, parts[0]->dtype, dims, rank, err);
  if (rc) return rc;

  /* Row-major: for each of `outer` blocks, part i contributes a contiguous
   * run of dims[ax] * inner elements. */
  size_t esz = ts_dtype_size(parts[0]->dtype);
  int64_t outer = ts_shape_numel(dims, ax);
  int64_t inner = ts_shape_numel(dims + ax + 1, rank - ax - 1);
  uint8_t *dst = out->data;
  for (int64_t o = 0; o < outer; o++)
    for (int i = 0; i < n; i++) {
      size_t run = (size_t)(parts[i]->dims[ax] * inner) * esz;
      memcpy(dst, (const uint8_t *)parts[i]->data + (size_t)o * run, run);
      dst += run;
    }
  return TS_OK;
}

/* ---- sum, mean --------------------------------------------------------- */

int ts_fuse_sum(const ts_tensor *const *parts, int n, ts_tensor *out,
                ts_err *err) {
  memset(out, 0, sizeof *out);
  int rc = check_parts(parts, n, -1, err);
  if (rc) return rc;
  const ts_tensor *p0 = parts[0];
  const elem_ops *ops = elem_find(p0->dtype);
  if (!ops || !(p0->dtype == TS_DTYPE_FLOAT || p0->dtype == TS_DTYPE_DOUBLE ||
                p0->dtype == TS_DTYPE_INT32 || p0->dtype == TS_DTYPE_INT64))
    return ts_err_set(err, TS_EINVAL,
                      "sum: part 0 has dtype %s; float, double, int32 or "
                      "int64 expected",
                      ts_dtype_name(p0->dtype));
  rc = ts_tensor_alloc(out, p0->dtype, p0->dims, p0->rank, err);
  if (rc) return rc;
  int64_t numel = ts_tensor_numel(p0);
  for (int64_t e = 0; e < numel; e++) {
    if (ops->is_float) {
      double acc = 0;
      for (int i = 0; i < n; i++) acc += ops->get_f(parts[i]->data, e);
      ops->put_f(out->data, e, acc);
    } else {
      /* Two's-complement wrap-around, as integer tensors add in ONNX. */
      uint64_t acc = 0;
      for (int i = 0; i < n; i++)
        acc += (uint64_t)ops->get_i(parts[i]->data, e);
      ops->put_i(out->data, e, (int64_t)acc);
    }
  }
  return TS_OK;
}

int ts_fuse_mean(const ts_tensor *const *parts, int n, const double *weights,
                 ts_tensor *out, ts_err *err) {
  memset(out, 0, sizeof *out);
  int rc = check_parts(parts, n, -1, err);
  if (rc) return rc;
  const ts_tensor *p0 = parts[0];
  const elem_ops *ops = elem_find(p0->dtype);
  if (!ops || !ops->is_float)
    return ts_err_set(err, TS_EINVAL,
                      "mean: part 0 has dtype %s; float or double expected",
                      ts_dtype_name(p0->dtype));
  double wsum = 0;
  if (weights) {
    for (int i = 0; i < n; i++) {
      if (!isfinite(weights[i]) || weights[i] < 0)
        return ts_err_set(err, TS_EINVAL,
                          "weighted mean: weight of part %d is %g; finite "
                          "and >= 0 expected",
                          i, weights[i]);
      wsum += weights[i];
    }
    if (!(wsum > 0) || !isfinite(wsum))
      return ts_err_set(err, TS_EINVAL,
                        "weighted mean: weights sum to %g; positive expected",
                        wsum);
  }
  rc = ts_tensor_alloc(out, p0->dtype, p0->dims, p0->rank, err);
  if (rc) return rc;
  int64_t numel = ts_tensor_numel(p0);
  for (int64_t e = 0; e < numel; e++) {
    double acc = 0;
    for (int i = 0; i < n; i++)
      acc += (weights ? weights[i] / wsum : 1.0) *
             ops->get_f(parts[i]->data, e);
    ops->put_f(out->data, e, weights ? acc : acc / n);
  }
  return TS_OK;
}

/* ---- vote -------------------------------------------------------------- */

/* The majority among n labels, ties to the smallest label. O(n^2) without
 * allocation: n is the number of ensemble members, small. */
static int64_t majority(const int64_t *labels, int n) {
  int64_t best = labels[0];
  int best_count = 0;
  for (int i = 0; i < n; i++) {
    int count = 0;
    for (int j = 0; j < n; j++) count += labels[j] == labels[i];
    if (count > best_count || (count == best_count && labels[i] < best)) {
      best = labels[i];
      best_count = count;
    }
  }
  return best;
}

/* Index of the largest of row[0..c) (first one on ties; NaN never wins). */
static int64_t argmax_row(const elem_ops *ops, const void *data, int64_t base,
                          int64_t c) {
  int64_t best = 0;
  double best_v = ops->get_f(data, base);
  for (int64_t j = 1; j < c; j++) {
    double v = ops->get_f(data, base + j);
    if (v > best_v || (isnan(best_v) && !isnan(v))) {
      best_v = v;
      best = j;
    }
  }
  return best;
}

/* Most ensembles are small; votes beyond this many members are refused
 * rather than allocating per element. */
#define VOTE_MAX_PARTS 256

int ts_fuse_vote(const ts_tensor *const *parts, int n, ts_tensor *out,
                 ts_err *err) {
  memset(out, 0, sizeof *out);
  int rc = check_parts(parts, n, -1, err);
  if (rc) return rc;
  if (n > VOTE_MAX_PARTS)
    return ts_err_set(err, TS_EINVAL, "vote: %d parts, at most %d supported",
                      n, VOTE_MAX_PARTS);
  const ts_tensor *p0 = parts[0];
  const elem_ops *ops = elem_find(p0->dtype);
  if (!ops)
    return ts_err_set(err, TS_EINVAL, "vote: part 0 has unsupported dtype %s",
                      ts_dtype_name(p0->dtype));
  int64_t labels[VOTE_MAX_PARTS];

  if (ops->is_label) {
    rc = ts_tensor_alloc(out, p0->dtype, p0->dims, p0->rank, err);
    if (rc) return rc;
    int64_t numel = ts_tensor_numel(p0);
    for (int64_t e = 0; e < numel; e++) {
      for (int i = 0; i < n; i++) labels[i] = ops->get_i(parts[i]->data, e);
      ops->put_i(out->data, e, majority(labels, n));
    }
    return TS_OK;
  }

  /* Scores [..., C]: each member votes for its argmax class per row. */
  if (p0->rank < 1 || p0->dims[p0->rank - 1] < 1)
    return ts_err_set(err, TS_EINVAL,
                      "vote: score part 0 needs a last dim of classes >= 1 "
                      "(rank %d)",
                      p0->rank);
  int64_t c = p0->dims[p0->rank - 1];
  rc = ts_tensor_alloc(out, TS_DTYPE_INT64, p0->dims, p0->rank - 1, err);
  if (rc) return rc;
  int64_t rows = ts_shape_numel(p0->dims, p0->rank - 1);
  int64_t *dst = out->data;
  for (int64_t r = 0; r < rows; r++) {
    for (int i = 0; i < n; i++)
      labels[i] = argmax_row(ops, parts[i]->data, r * c, c);
    dst[r] = majority(labels, n);
  }
  return TS_OK;
}

/* ---- dispatch ---------------------------------------------------------- */

/* One handler per fusion kind, indexed by ts_fuse_kind; NULL: not a fusion. */
typedef int (*fuse_fn)(const ts_tensor *const *parts, int n, int axis,
                       const double *weights, ts_tensor *out, ts_err *err);

static int fuse_concat(const ts_tensor *const *parts, int n, int axis,
                       const double *weights, ts_tensor *out, ts_err *err) {
  (void)weights;
  return ts_fuse_concat(parts, n, axis, out, err);
}

static int fuse_sum(const ts_tensor *const *parts, int n, int axis,
                    const double *weights, ts_tensor *out, ts_err *err) {
  (void)axis, (void)weights;
  return ts_fuse_sum(parts, n, out, err);
}

static int fuse_mean(const ts_tensor *const *parts, int n, int axis,
                     const double *weights, ts_tensor *out, ts_err *err) {
  (void)axis, (void)weights;
  return ts_fuse_mean(parts, n, NULL, out, err);
}

static int fuse_weighted_mean(const ts_tensor *const *parts, int n, int axis,
                              const double *weights, ts_tensor *out,
                              ts_err *err) {
  (void)axis;
  if (!weights) {
    memset(out, 0, sizeof *out);
    return ts_err_set(err, TS_EINVAL, "weighted mean needs weights");
  }
  return ts_fuse_mean(parts, n, weights, out, err);
}

static int fuse_vote(const ts_tensor *const *parts, int n, int axis,
                     const double *weights, ts_tensor *out, ts_err *err) {
  (void)axis, (void)weights;
  return ts_fuse_vote(parts, n, out, err);
}

static const fuse_fn fuse_table[] = {
    [TS_FUSE_NONE] = NULL,
    [TS_FUSE_CONCAT] = fuse_concat,
    [TS_FUSE_SUM] = fuse_sum,
    [TS_FUSE_MEAN] = fuse_mean,
    [TS_FUSE_WEIGHTED_MEAN] = fuse_weighted_mean,
    [TS_FUSE_VOTE] = fuse_vote,
};
_Static_assert(sizeof fuse_table / sizeof fuse_table[0] == N_FUSE_KINDS,
               "one handler per fusion kind");

int ts_fuse(ts_fuse_kind kind, const ts_tensor *const *parts, int n, int axis,
            const double *weights, ts_tensor *out, ts_err *err) {
  if ((int)kind >= 0 && (int)kind < N_FUSE_KINDS && fuse_table[kind])
    return fuse_table[kind](parts, n, axis, weights, out, err);
  memset(out, 0, sizeof *out);
  return ts_err_set(err, TS_EINVAL,
                    "fusion kind %d (%s) does not combine parts", (int)kind,
                    ts_fuse_name(kind));
}

/* ---- a stage's fusions --------------------------------------------------- */

/* Index of the fusion of `st` named `name` at or after `from`, -1: none. */
static int fusion_at_or_after(const ts_stage *st, int from, const char *name) {
  for (int f = from; f < st->n_fusions; f++)
    if (strcmp(st->fusions[f].name, name) == 0) return f;
  return -1;
}

int ts_fuse_stage(const ts_stage *st, const ts_fuse_env *env, ts_err *err) {
  int rc = TS_OK;
  for (int f = 0; f < st->n_fusions && rc == TS_OK; f++) {
    const ts_fusion *fu = &st->fusions[f];
    const ts_tensor **parts = calloc((size_t)fu->n_parts + 1, sizeof *parts);
    if (!parts) return ts_err_set(err, TS_ENOMEM, "out of memory");
    for (int p = 0; p < fu->n_parts && rc == TS_OK; p++) {
      int later = fusion_at_or_after(st, f, fu->parts[p]);
      if (later >= 0)
        rc = ts_err_set(err, TS_EINVAL,
                        "fusion '%s': part '%s' is the output of fusion %d, "
                        "not of an earlier one",
                        fu->name, fu->parts[p], later);
      else if (!(parts[p] = env->lookup(env->user, fu->parts[p])))
        rc = ts_err_set(err, TS_EIO,
                        "fusion '%s': no shard or earlier fusion produced "
                        "'%s'",
                        fu->name, fu->parts[p]);
    }
    ts_tensor out;
    if (rc == TS_OK)
      rc = ts_fuse(fu->kind, parts, fu->n_parts, fu->axis, NULL, &out, err);
    free(parts);
    if (rc == TS_OK) rc = env->store(env->user, fu->name, &out, err);
  }
  return rc;
}
