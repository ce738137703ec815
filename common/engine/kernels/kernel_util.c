/*
 * kernel_util.c - the helpers of kernel_util.h, shared by every kernel
 * file: messages that name the node, attribute checks, integer inputs,
 * axes and dtype slots.
 */
#include <stdarg.h>
#include <stdio.h>

#include "kernel_util.h"

void ts_kernel_failf(const ts_node *n, ts_err *err, int code, const char *fmt,
                     ...) {
  char desc[192], msg[TS_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ts_err_setf(err, code, "%s: %s", ts_node_desc(n, desc, sizeof desc), msg);
}

int ts_kernel_check_attrs(const ts_node *n, const ts_attr_spec *specs,
                          ts_err *err) {
  static const char *const type_names[] = {
      [ATTR_INT] = "an int",          [ATTR_INTS] = "a list of ints",
      [ATTR_FLOAT] = "a float",       [ATTR_FLOATS] = "a list of floats",
      [ATTR_STRING] = "a string",     [ATTR_STRINGS] = "a list of strings",
      [ATTR_TENSOR] = "a tensor"};
  const char *names[16];
  int k = 0;
  for (; specs[k].name; k++) {
    TS_ASSERT(k < 15);
    names[k] = specs[k].name;
  }
  names[k] = NULL;
  int rc = ts_node_check_attrs(n, names, err);
  for (int i = 0; i < k && !rc; i++) {
    const Onnx__AttributeProto *a = ts_attr_find(n, specs[i].name);
    /* Old IR versions leave `type` unset; the ts_attr_* helpers then go by
     * which field is present. */
    if (a && a->has_type &&
        a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED &&
        a->type != specs[i].type)
      rc = ts_kernel_fail(
          n, err, TS_EINVAL, "attribute '%s' must be %s", specs[i].name,
          (size_t)specs[i].type < sizeof type_names / sizeof type_names[0] &&
                  type_names[specs[i].type]
              ? type_names[specs[i].type]
              : "of another type");
  }
  return rc;
}

int ts_kernel_check_form(const ts_node *n, int64_t inputs_from,
                         const ts_attr_spec *old_attrs,
                         const ts_attr_spec *new_attrs, ts_err *err) {
  bool old = n->opset < inputs_from;
  int rc = ts_kernel_check_attrs(n, old ? old_attrs : new_attrs, err);
  if (rc || !old || n->n_inputs <= 1) return rc;
  if (inputs_from == INT64_MAX)
    return ts_kernel_fail(n, err, TS_EINVAL, "takes one input, not %d",
                          n->n_inputs);
  return ts_kernel_fail(n, err, TS_EINVAL,
                        "%d inputs: inputs after the first need opset %lld "
                        "(the model imports %lld)",
                        n->n_inputs, (long long)inputs_from,
                        (long long)n->opset);
}

int ts_kernel_ints(const ts_node *n, const ts_tensor *t, const char *what,
                   int64_t *vals, size_t max, size_t *count, ts_err *err) {
  if (t->dtype != TS_DTYPE_INT64 && t->dtype != TS_DTYPE_INT32)
    return ts_kernel_fail(n, err, TS_EINVAL, "input '%s' must be int64, not %s",
                          what, ts_dtype_name(t->dtype));
  if (t->rank > 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' must be 1-D, not rank %d", what, t->rank);
  int64_t numel = ts_tensor_numel(t);
  if (numel < 0 || (uint64_t)numel > max)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "input '%s' has %lld values, at most %zu allowed",
                          what, (long long)numel, max);
  if (numel > 0 && !t->data) return TS_EAGAIN;
  for (int64_t i = 0; i < numel; i++) vals[i] = ts_kernel_int_at(t, i);
  *count = (size_t)numel;
  return TS_OK;
}

int ts_kernel_axis(const ts_node *n, int64_t axis, int rank, const char *what,
                   int *out, ts_err *err) {
  if (axis < -(int64_t)rank || axis >= rank)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "%s %lld is out of range for rank %d", what,
                          (long long)axis, rank);
  *out = (int)(axis < 0 ? axis + rank : axis);
  return TS_OK;
}

void ts_kernel_release_tensor(ts_node *n) {
  ts_tensor *t = n->params;
  if (t) ts_tensor_free(t);
  free(t);
  n->params = NULL;
}

/* ---- dtypes ------------------------------------------------------------ */

int ts_kernel_slot(ts_dtype t) {
#define X(s, T, D) \
  if (t == D) return TS_SLOT_##s;
  TS_KERNEL_SLOTS(X)
#undef X
  return -1;
}
