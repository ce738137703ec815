/*
 * reply.c - a ModelInfer answer packed from result tensors. See reply.h.
 */
#include "reply.h"

#include <stdio.h>
#include <string.h>

#include "rpc_message.h"

typedef Inference__ModelInferResponse__InferOutputTensor output_tensor;

void ts_frontend_reply_outputs(ts_rpc_call *call,
                               const Inference__ModelInferRequest *req,
                               const ts_served_model *m, ts_rpc_arena *a,
                               ts_frontend_lookup_fn lookup, const void *src) {
  int n = req->n_outputs ? (int)req->n_outputs : m->n_outputs;
  output_tensor *outs = ts_rpc_arena_calloc(a, (size_t)n * sizeof *outs);
  output_tensor **ptrs = ts_rpc_arena_calloc(a, (size_t)n * sizeof *ptrs);
  ProtobufCBinaryData *raw = ts_rpc_arena_calloc(a, (size_t)n * sizeof *raw);
  int64_t(*dims)[TS_MAX_RANK] = ts_rpc_arena_calloc(a,
                                                    (size_t)n * sizeof *dims);
  if (!outs || !ptrs || !raw || !dims) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  for (int i = 0; i < n; i++) {
    const char *name = req->n_outputs ? req->outputs[i]->name
                                      : m->outputs[i].name;
    const ts_tensor *t = lookup(src, name);
    if (!t) {
      char msg[256];
      snprintf(msg, sizeof msg, "the model produced no output '%s'", name);
      ts_rpc_call_fail(call, TS_EINTERNAL, msg);
      return;
    }
    inference__model_infer_response__infer_output_tensor__init(&outs[i]);
    outs[i].name = (char *)name;
    outs[i].datatype = (char *)ts_dtype_kserve_name(t->dtype);
    memcpy(dims[i], t->dims, sizeof t->dims);
    outs[i].n_shape = (size_t)t->rank;
    outs[i].shape = dims[i];
    raw[i].data = t->data;
    raw[i].len = t->nbytes;
    ptrs[i] = &outs[i];
  }
  Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
  resp.model_name = (char *)m->config.name; /* read, never written */
  resp.model_version = "1";
  resp.id = req->id;
  resp.n_outputs = (size_t)n;
  resp.outputs = ptrs;
  resp.n_raw_output_contents = (size_t)n;
  resp.raw_output_contents = raw;
  ts_rpc_call_reply_message(call, &resp.base);
}

