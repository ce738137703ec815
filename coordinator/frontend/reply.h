/*
 * reply.h - a ModelInfer answer packed from result tensors: the outputs
 * the request named (all of the model's when it named none), in that
 * order, as raw_output_contents that point at the result tensors' bytes
 * (packed once, by the rpc layer; no copy here). Depends on the generated
 * inference.pb-c.h, registry.h and rpc_message.h.
 */
#ifndef TS_FRONTEND_REPLY_H
#define TS_FRONTEND_REPLY_H

#include "inference.pb-c.h"
#include "registry.h"
#include "rpc_message.h"

/* Finds a result tensor by output name in `src`, or NULL. */
typedef const ts_tensor *(*ts_frontend_lookup_fn)(const void *src,
                                                  const char *name);

/* Answers `call` with the outputs found through lookup(src, name); the
 * response's small arrays come from `arena`. An output the model did not
 * produce answers INTERNAL; out of memory answers RESOURCE_EXHAUSTED. */
void ts_frontend_reply_outputs(ts_rpc_call *call,
                               const Inference__ModelInferRequest *req,
                               const ts_served_model *m, ts_rpc_arena *arena,
                               ts_frontend_lookup_fn lookup, const void *src);

#endif
