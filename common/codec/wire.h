/*
 * wire.h - tensors to and from worker.proto's Tensor message.
 *
 * Both directions avoid copying tensor bytes: a received Tensor is viewed in
 * place (the view lives as long as the unpacked message; only bytes that
 * are misaligned for their dtype are copied), and an outgoing
 * Tensor points at the ts_tensor's data until it is packed.
 */
#ifndef TS_WIRE_H
#define TS_WIRE_H

#include "tensor.h"
#include "worker.pb-c.h"

/* Validates a received Tensor (known numeric dtype, rank <= TS_MAX_RANK, no
 * negative dims, numel * size == data.len without overflow) and makes *out a
 * view of its bytes: non-owning, valid as long as the message, when they are
 * aligned for the dtype (always so for messages protobuf-c unpacked with its
 * default allocator); otherwise an aligned copy that *out owns. Finish every
 * view with ts_tensor_free(), which frees only such a copy. TS_EINVAL with a
 * message naming the tensor; TS_ENOMEM when the copy cannot be allocated. */
int ts_wire_tensor_view(const Tessera__Worker__V1__Tensor *msg, ts_tensor *out,
                        ts_err *err);

/* Fills an initialized Tensor message to describe `t` named `name`, pointing
 * at t->data and at `dims` (caller storage of TS_MAX_RANK int64s that must
 * outlive the message; both stay owned by the caller). */
void ts_wire_tensor_fill(Tessera__Worker__V1__Tensor *msg, const char *name,
                         const ts_tensor *t, int64_t *dims);

#endif
