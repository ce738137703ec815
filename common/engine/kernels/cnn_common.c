/*
 * cnn_common.c - the helpers of cnn_int.h shared by the kernel files of the
 * cnn family: input and attribute checks, the parameter block, and the
 * window geometry of Conv, MaxPool and AveragePool.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn_int.h"

/* ------------------------------------------------------------------------ */
/* Errors, inputs, attributes                                               */
/* ------------------------------------------------------------------------ */

/* The name of the tensor feeding input i, for messages. */
const char *ts_cnn_input_name(const ts_node *n, int i) {
  if (n->proto && i < (int)n->proto->n_input && n->proto->input[i])
    return n->proto->input[i];
  return "";
}

/* Input i (ONNX name `role`) must be float32: EUNSUPPORTED otherwise. */
int ts_cnn_check_float(const ts_node *n, const ts_tensor *t, int i,
                       const char *role, ts_err *err) {
  if (t->dtype == TS_DTYPE_FLOAT) return 0;
  return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                        "input %s ('%s') has type %s; only float is supported",
                        role, ts_cnn_input_name(n, i), ts_dtype_name(t->dtype));
}

/* Input i must have a rank in [lo, hi]: below lo is malformed (EINVAL),
 * above hi is beyond what Tessera implements (EUNSUPPORTED). */
int ts_cnn_check_rank(const ts_node *n, const ts_tensor *t, int i,
                      const char *role, int lo, int hi, ts_err *err) {
  if (t->rank >= lo && t->rank <= hi) return 0;
  return ts_kernel_fail(n, err, t->rank < lo ? TS_EINVAL : TS_EUNSUPPORTED,
                        "input %s ('%s') has rank %d; expected %d to %d", role,
                        ts_cnn_input_name(n, i), t->rank, lo, hi);
}

int ts_cnn_set_shape(const ts_node *n, ts_tensor *t, ts_dtype dtype,
                     const int64_t *dims, int rank, ts_err *err) {
  char desc[160];
  int rc = ts_tensor_set_shape(t, dtype, dims, rank, err);
  if (rc < 0) ts_err_prefix(err, "%s", ts_node_desc(n, desc, sizeof desc));
  return rc;
}

/* Reads an ints attribute of at most `max` values, each in
 * [min_value, ATTR_MAX] unless min_value is INT64_MIN, into dst; *count is 0
 * when the attribute is absent. */
int ts_cnn_attr_ints(const ts_node *n, const char *name, int64_t *dst, int max,
                     int64_t min_value, int *count, ts_err *err) {
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
int ts_cnn_attr_choice(const ts_node *n, const char *name,
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
int ts_cnn_params_store(ts_node *n, const void *src, size_t size, ts_err *err) {
  void *p = malloc(size);
  if (!p)
    return ts_kernel_fail(n, err, TS_ENOMEM, "out of memory for parameters");
  memcpy(p, src, size);
  n->params = p;
  return 0;
}

/* The release of every op here: params are one malloc'd block. */
void ts_cnn_params_release(ts_node *n) {
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

int ts_cnn_window_parse(const ts_node *n, const ts_attr_spec *known,
                        bool kernel_required, window_attrs *a, ts_err *err) {
  int rc;
  memset(a, 0, sizeof *a);
  if ((rc = ts_kernel_check_attrs(n, known, err)) < 0 ||
      (rc = ts_cnn_attr_ints(n, "kernel_shape", a->kernel, SP_MAX, 1,
                             &a->n_kernel, err)) < 0 ||
      (rc = ts_cnn_attr_ints(n, "pads", a->pads, 2 * SP_MAX, 0, &a->n_pads,
                             err)) < 0 ||
      (rc = ts_cnn_attr_ints(n, "strides", a->strides, SP_MAX, 1, &a->n_strides,
                             err)) < 0 ||
      (rc = ts_cnn_attr_ints(n, "dilations", a->dilations, SP_MAX, 1,
                             &a->n_dilations, err)) < 0 ||
      (rc = ts_cnn_attr_choice(n, "auto_pad", auto_pad_names, AUTO_PAD_COUNT,
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
int ts_cnn_window_resolve(const ts_node *n, const window_attrs *a,
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
        out = ts_cnn_ceil_div(in, s);
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
          out = ts_cnn_ceil_div(span, s) + 1;
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
