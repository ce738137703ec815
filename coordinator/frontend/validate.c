/*
 * validate.c - a ModelInfer request checked against its model and bound to
 * tensors. See validate.h.
 */
#include "validate.h"

#include <stdio.h>
#include <string.h>

typedef Inference__ModelInferRequest__InferInputTensor infer_input;
typedef Inference__InferTensorContents contents;

static const ts_io_info *find_io(const ts_io_info *io, int n,
                                 const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(io[i].name, name) == 0) return &io[i];
  return NULL;
}

static void list_names(const ts_io_info *io, int n, char *buf, size_t size) {
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && off < size; i++)
    off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? ", " : "",
                            io[i].name);
}

/* Typed contents: where the elements of each datatype live, and whether
 * they need narrowing into a tensor of their own. */
typedef struct typed_view {
  const void *data;
  size_t count;
  int narrow;              /* 32-bit (or bool) protocol field, smaller dtype */
} typed_view;

static typed_view typed_field(const contents *c, ts_dtype t) {
  typed_view v = {0};
  if (!c) return v;
  switch (t) {
    case TS_DTYPE_FLOAT: v = (typed_view){c->fp32_contents, c->n_fp32_contents, 0}; break;
    case TS_DTYPE_DOUBLE: v = (typed_view){c->fp64_contents, c->n_fp64_contents, 0}; break;
    case TS_DTYPE_INT64: v = (typed_view){c->int64_contents, c->n_int64_contents, 0}; break;
    case TS_DTYPE_INT32: v = (typed_view){c->int_contents, c->n_int_contents, 0}; break;
    case TS_DTYPE_INT16:
    case TS_DTYPE_INT8: v = (typed_view){c->int_contents, c->n_int_contents, 1}; break;
    case TS_DTYPE_UINT64: v = (typed_view){c->uint64_contents, c->n_uint64_contents, 0}; break;
    case TS_DTYPE_UINT32: v = (typed_view){c->uint_contents, c->n_uint_contents, 0}; break;
    case TS_DTYPE_UINT16:
    case TS_DTYPE_UINT8: v = (typed_view){c->uint_contents, c->n_uint_contents, 1}; break;
    case TS_DTYPE_BOOL: v = (typed_view){c->bool_contents, c->n_bool_contents, 1}; break;
    default: break;
  }
  return v;
}

static size_t typed_total(const contents *c) {
  if (!c) return 0;
  return c->n_bool_contents + c->n_int_contents + c->n_int64_contents +
         c->n_uint_contents + c->n_uint64_contents + c->n_fp32_contents +
         c->n_fp64_contents + c->n_bytes_contents;
}

/* Narrows 32-bit protocol values into t's own buffer (owned). */
static void narrow_copy(ts_tensor *t, const void *src, size_t count) {
  for (size_t i = 0; i < count; i++) {
    switch (t->dtype) {
      case TS_DTYPE_BOOL: ((uint8_t *)t->data)[i] = ((const protobuf_c_boolean *)src)[i] != 0; break;
      case TS_DTYPE_INT8: ((int8_t *)t->data)[i] = (int8_t)((const int32_t *)src)[i]; break;
      case TS_DTYPE_INT16: ((int16_t *)t->data)[i] = (int16_t)((const int32_t *)src)[i]; break;
      case TS_DTYPE_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)((const uint32_t *)src)[i]; break;
      case TS_DTYPE_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)((const uint32_t *)src)[i]; break;
      default: break;
    }
  }
}

/* Validates input `in` (index i) against `io` and binds its bytes to t. */
static int bind_input(const Inference__ModelInferRequest *req, size_t i,
                      const ts_io_info *io, ts_tensor *t, ts_err *err) {
  const infer_input *in = req->inputs[i];
  char got[160], want[160];
  ts_dtype dtype = ts_dtype_from_kserve(in->datatype);
  if (dtype == TS_DTYPE_UNDEFINED)
    return ts_err_set(err, TS_EINVAL, "input '%s': unknown datatype '%s'",
                      in->name, in->datatype);
  if (dtype != io->dtype)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': datatype %s does not match the model's %s",
                      in->name, in->datatype, ts_dtype_kserve_name(io->dtype));
  if (in->n_shape != (size_t)io->rank)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': shape %s has rank %zu but the model expects "
                      "rank %d, shape %s", in->name,
                      ts_shape_str(in->shape, (int)(in->n_shape > TS_MAX_RANK
                                                        ? TS_MAX_RANK
                                                        : in->n_shape),
                                   got, sizeof got),
                      in->n_shape, io->rank,
                      ts_shape_str(io->dims, io->rank, want, sizeof want));
  for (int d = 0; d < io->rank; d++) {
    if (in->shape[d] < 0)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': dim %d is %lld; dims must be >= 0",
                        in->name, d, (long long)in->shape[d]);
    if (io->dims[d] >= 0 && in->shape[d] != io->dims[d])
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': dim %d is %lld but the model expects "
                        "%lld (shape %s)", in->name, d,
                        (long long)in->shape[d], (long long)io->dims[d],
                        ts_shape_str(io->dims, io->rank, want, sizeof want));
  }
  int64_t numel = ts_shape_numel(in->shape, io->rank);
  int64_t nbytes = ts_shape_nbytes(dtype, in->shape, io->rank);
  if (numel < 0 || nbytes < 0)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': shape %s has too many elements (overflow)",
                      in->name, ts_shape_str(in->shape, io->rank, got,
                                             sizeof got));
  size_t typed = typed_total(in->contents);
  if (req->n_raw_input_contents) {
    const ProtobufCBinaryData *raw = &req->raw_input_contents[i];
    if (typed)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s' has both raw_input_contents and typed "
                        "contents; send one", in->name);
    if ((int64_t)raw->len != nbytes)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s': raw_input_contents[%zu] holds %zu bytes "
                        "but shape %s of %s needs %lld", in->name, i, raw->len,
                        ts_shape_str(in->shape, io->rank, got, sizeof got),
                        in->datatype, (long long)nbytes);
    return ts_tensor_view(t, dtype, in->shape, io->rank, raw->data, err);
  }
  typed_view v = typed_field(in->contents, dtype);
  if (typed != v.count)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': typed contents must use the field for %s "
                      "only", in->name, in->datatype);
  if ((int64_t)v.count != numel)
    return ts_err_set(err, TS_EINVAL,
                      "input '%s': contents hold %zu elements but shape %s "
                      "needs %lld", in->name, v.count,
                      ts_shape_str(in->shape, io->rank, got, sizeof got),
                      (long long)numel);
  if (!v.narrow)
    return ts_tensor_view(t, dtype, in->shape, io->rank, (void *)v.data, err);
  int rc = ts_tensor_alloc(t, dtype, in->shape, io->rank, err);
  if (rc == TS_OK) narrow_copy(t, v.data, v.count);
  return rc;
}

int ts_frontend_bind_inputs(const Inference__ModelInferRequest *req,
                            const ts_served_model *m, ts_rpc_arena *arena,
                            ts_tensor **inputs, int *n_bound, ts_err *err) {
  char names[512];
  *n_bound = 0;
  if (req->n_raw_input_contents &&
      req->n_raw_input_contents != req->n_inputs)
    return ts_err_set(err, TS_EINVAL,
                      "raw_input_contents has %zu entries but the request "
                      "has %zu inputs; they must match",
                      req->n_raw_input_contents, req->n_inputs);
  ts_tensor *bound = ts_rpc_arena_calloc(arena, req->n_inputs * sizeof *bound);
  if (!bound) return ts_err_set(err, TS_ENOMEM, "out of memory");
  *inputs = bound;
  for (size_t i = 0; i < req->n_inputs; i++) {
    const infer_input *in = req->inputs[i];
    const ts_io_info *io = find_io(m->inputs, m->n_inputs, in->name);
    if (!io) {
      list_names(m->inputs, m->n_inputs, names, sizeof names);
      return ts_err_set(err, TS_EINVAL,
                        "unknown input '%s' (model %s expects: %s)", in->name,
                        m->config.name, names);
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp(req->inputs[j]->name, in->name) == 0)
        return ts_err_set(err, TS_EINVAL, "input '%s' appears twice",
                          in->name);
    int rc = bind_input(req, i, io, &bound[i], err);
    *n_bound = (int)i + 1;
    if (rc) return rc;
  }
  for (int k = 0; k < m->n_inputs; k++) {
    int found = 0;
    for (size_t i = 0; i < req->n_inputs && !found; i++)
      found = strcmp(req->inputs[i]->name, m->inputs[k].name) == 0;
    if (!found)
      return ts_err_set(err, TS_EINVAL, "missing input '%s' (datatype %s)",
                        m->inputs[k].name,
                        ts_dtype_kserve_name(m->inputs[k].dtype));
  }
  for (size_t o = 0; o < req->n_outputs; o++) {
    const char *name = req->outputs[o]->name;
    if (!find_io(m->outputs, m->n_outputs, name)) {
      list_names(m->outputs, m->n_outputs, names, sizeof names);
      return ts_err_set(err, TS_EINVAL,
                        "unknown output '%s' requested (model %s has: %s)",
                        name, m->config.name, names);
    }
    for (size_t j = 0; j < o; j++)
      if (strcmp(req->outputs[j]->name, name) == 0)
        return ts_err_set(err, TS_EINVAL, "output '%s' requested twice",
                          name);
  }
  return TS_OK;
}

int ts_frontend_order_inputs(const Inference__ModelInferRequest *req,
                             const ts_served_model *m,
                             const ts_tensor *inputs, ts_rpc_arena *arena,
                             ts_tensor **ordered, ts_err *err) {
  ts_tensor *out = ts_rpc_arena_calloc(arena,
                                       (size_t)m->n_inputs * sizeof *out);
  if (!out) return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (int k = 0; k < m->n_inputs; k++)
    for (size_t i = 0; i < req->n_inputs; i++)
      if (strcmp(req->inputs[i]->name, m->inputs[k].name) == 0)
        out[k] = inputs[i];
  *ordered = out;
  return TS_OK;
}

