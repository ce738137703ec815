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

/* Caps the activation memory of every later run on `s`: the bytes of the
 * values its nodes produce that are live at once (as the arena plan packs
 * them), plus kernel scratch. A run that would need more fails with
 * TS_EEXHAUSTED before the memory is allocated, naming the node (or the
 * arena), the bytes needed and the limit; the session stays usable. Sizes
 * that depend on input values (Range, Tile, Expand, ConstantOfShape,
 * Reshape of computed shapes, ...) are checked when they are known, after
 * the node's shape inference and before its outputs are allocated. 0 (the
 * default) means no limit. The caller's inputs are not counted. */
void ts_session_set_activation_limit(ts_session *s, size_t bytes);
size_t ts_session_activation_limit(const ts_session *s);

/* Runs `model` on named inputs and produces the named outputs (all graph
 * outputs when n_outputs == 0 and output_names == NULL; then `outputs` must
 * have room for model->graph.n_outputs tensors, in graph order).
 * Inputs are validated (known name, dtype, rank, static dims, byte length):
 * TS_EINVAL with a message naming the tensor and dim. Unknown output name:
 * TS_EINVAL naming it. Over the session's activation limit: TS_EEXHAUSTED
 * (see ts_session_set_activation_limit). A shape whose size overflows:
 * TS_EINVAL naming the node. Inputs are not modified and not retained. */
int ts_exec_run(const ts_model *model, ts_session *s,
                const char *const *input_names, const ts_tensor *inputs,
                int n_inputs, const char *const *output_names,
                ts_tensor *outputs, int n_outputs, ts_err *err);

/* Test hooks (tests/test_exec.c): how many blocks the session has malloc'd
 * so far (a warm session's count does not move), and its activation arena's
 * size in bytes (its high-water mark). */
size_t ts_session_alloc_count(const ts_session *s);
size_t ts_session_arena_bytes(const ts_session *s);

#endif
