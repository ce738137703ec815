/*
 * validate.h - a ModelInfer request checked against its model, and its
 * inputs bound to tensors, before anything is dispatched. Every bad input
 * class is refused with TS_EINVAL and a message naming the tensor and the
 * field: unknown, repeated or missing inputs; datatype, rank, dims, byte
 * length or typed count that disagree with the model; raw and typed
 * contents mixed; unknown or repeated requested outputs. Nothing here
 * asserts on request bytes.
 *
 * Bytes move by reference: a bound input is a view into the request's raw
 * or typed contents, except typed BOOL/INT8/INT16/UINT8/UINT16 contents,
 * which the protocol widens to 32 bits and are narrowed into a tensor of
 * their own (owned). Depends on the generated inference.pb-c.h, registry.h
 * (the model's tensor info) and rpc_message.h (the request's arena); no
 * RPC call, so it is unit-testable without sockets.
 */
#ifndef TS_FRONTEND_VALIDATE_H
#define TS_FRONTEND_VALIDATE_H

#include "inference.pb-c.h"
#include "registry.h"
#include "rpc_message.h"

/* Validates every input and requested output of `req` against model `m`
 * and binds input i to (*inputs)[i]. The array (req->n_inputs tensors)
 * comes from `arena`; *n_bound counts the tensors bound so far, also on
 * failure: the caller frees those with ts_tensor_free (owned narrowed
 * copies) before releasing the arena. */
int ts_frontend_bind_inputs(const Inference__ModelInferRequest *req,
                            const ts_served_model *m, ts_rpc_arena *arena,
                            ts_tensor **inputs, int *n_bound, ts_err *err);

/* The bound inputs in the model's input order, as views (nothing owned),
 * in an array from `arena`. Only after ts_frontend_bind_inputs succeeded
 * (it checked that each model input appears exactly once). */
int ts_frontend_order_inputs(const Inference__ModelInferRequest *req,
                             const ts_served_model *m,
                             const ts_tensor *inputs, ts_rpc_arena *arena,
                             ts_tensor **ordered, ts_err *err);

#endif
