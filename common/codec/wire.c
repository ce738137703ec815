/*
 * wire.c - worker.proto Tensor messages <-> ts_tensor, without copying bytes.
 *
 * Received tensors come from the network, so every field is checked before a
 * view is made: a view that passes ts_wire_tensor_view() satisfies the
 * ts_tensor invariant (nbytes == numel * element size, no negative dims,
 * rank <= TS_MAX_RANK) and its data pointer covers exactly data.len bytes.
 *
 * Alignment: kernels load elements through typed pointers (float, int64_t,
 * ...), which must be aligned to the element size. protobuf-c copies bytes
 * fields into malloc'd blocks, so a view is aligned in practice, but that is
 * the allocator's habit, not a guarantee of the format (a custom allocator
 * or a message whose bytes point into a larger buffer breaks it). A view
 * whose bytes are misaligned for its dtype is therefore made of an aligned
 * copy instead, owned by the view; misaligned bytes are never read as
 * elements.
 *
 * Outgoing tensors only borrow pointers; the caller keeps ownership and must
 * keep the tensor's bytes and the dims array alive until the message is
 * packed.
 */
#include "wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define COPY_ALIGN 64 /* as the executor's arena */

/* Name for messages: wire tensors may arrive unnamed. */
static const char *tensor_label(const Tessera__Worker__V1__Tensor *msg) {
  return msg->name && msg->name[0] ? msg->name : "(unnamed)";
}

int ts_wire_tensor_view(const Tessera__Worker__V1__Tensor *msg, ts_tensor *out,
                        ts_err *err) {
  memset(out, 0, sizeof *out);
  if (!msg) return ts_err_set(err, TS_EINVAL, "missing tensor message");
  const char *name = tensor_label(msg);
  ts_dtype dtype = (ts_dtype)msg->dtype;
  if (!ts_dtype_is_numeric(dtype))
    return ts_err_set(err, TS_EINVAL,
                      "tensor '%s': dtype %d is not a supported numeric "
                      "ONNX data type", name, (int)msg->dtype);
  if (msg->n_shape > TS_MAX_RANK)
    return ts_err_set(err, TS_EINVAL,
                      "tensor '%s': rank %zu is above the maximum of %d",
                      name, msg->n_shape, TS_MAX_RANK);
  int rank = (int)msg->n_shape;
  for (int i = 0; i < rank; i++)
    if (msg->shape[i] < 0)
      return ts_err_set(err, TS_EINVAL,
                        "tensor '%s': dim %d is negative (%lld)", name, i,
                        (long long)msg->shape[i]);
  char shape[160];
  int64_t nbytes = ts_shape_nbytes(dtype, msg->shape, rank);
  if (nbytes < 0)
    return ts_err_set(err, TS_EINVAL,
                      "tensor '%s': shape %s of %s overflows", name,
                      ts_shape_str(msg->shape, rank, shape, sizeof shape),
                      ts_dtype_name(dtype));
  if ((uint64_t)nbytes != (uint64_t)msg->data.len)
    return ts_err_set(err, TS_EINVAL,
                      "tensor '%s': shape %s of %s needs %lld bytes but data "
                      "has %zu", name,
                      ts_shape_str(msg->shape, rank, shape, sizeof shape),
                      ts_dtype_name(dtype), (long long)nbytes, msg->data.len);
  out->dtype = dtype;
  out->rank = rank;
  if (rank) memcpy(out->dims, msg->shape, (size_t)rank * sizeof out->dims[0]);
  out->data = msg->data.len ? msg->data.data : NULL;
  out->nbytes = (size_t)nbytes;
  out->owned = false;
  size_t esz = ts_dtype_size(dtype);
  if (out->data && (uintptr_t)out->data % esz != 0) {
    size_t cap = (out->nbytes + COPY_ALIGN - 1) / COPY_ALIGN * COPY_ALIGN;
    void *copy = aligned_alloc(COPY_ALIGN, cap);
    if (!copy) {
      memset(out, 0, sizeof *out);
      return ts_err_set(err, TS_ENOMEM,
                        "tensor '%s': cannot allocate %zu bytes to align it",
                        name, (size_t)nbytes);
    }
    memcpy(copy, msg->data.data, out->nbytes);
    out->data = copy;
    out->owned = true;
  }
  return TS_OK;
}

void ts_wire_tensor_fill(Tessera__Worker__V1__Tensor *msg, const char *name,
                         const ts_tensor *t, int64_t *dims) {
  /* protobuf-c takes non-const pointers but pack only reads them. */
  msg->name = (char *)(name ? name : "");
  msg->dtype = (int32_t)t->dtype;
  if (t->rank > 0) memcpy(dims, t->dims, (size_t)t->rank * sizeof dims[0]);
  msg->n_shape = (size_t)t->rank;
  msg->shape = t->rank > 0 ? dims : NULL;
  msg->data.data = (uint8_t *)t->data;
  msg->data.len = t->nbytes;
}
