/*
 * exec.h - running a loaded model.
 *
 * A ts_session is one thread's scratch space for running models: an
 * activation arena whose buffers are reused by liveness (planned once per
 * model and input shapes and cached), plus kernel scratch. Sessions are not
 * thread-safe; models are immutable and shared. A worker keeps one session
 * per kernel thread, so nothing is allocated per request once warm.
 *
 * Outputs of ts_exec_run point into the session's arena (owned = false):
 * they stay valid until the next ts_exec_run on that session or its free,
 * so the caller can serialize them straight into a response without a copy.
 */
#ifndef TS_EXEC_H
#define TS_EXEC_H

#include "graph.h"

typedef struct ts_session ts_session;

int ts_session_create(ts_session **out, ts_err *err);
void ts_session_free(ts_session *s);

/* Runs `model` on named inputs and produces the named outputs (all graph
 * outputs when n_outputs == 0 and output_names == NULL; then `outputs` must
 * have room for model->graph.n_outputs tensors, in graph order).
 * Inputs are validated (known name, dtype, rank, static dims, byte length):
 * TS_EINVAL with a message naming the tensor and dim. Unknown output name:
 * TS_EINVAL naming it. Inputs are not modified and not retained. */
int ts_exec_run(const ts_model *model, ts_session *s,
                const char *const *input_names, const ts_tensor *inputs,
                int n_inputs, const char *const *output_names,
                ts_tensor *outputs, int n_outputs, ts_err *err);

#endif
