/*
 * exec.c - sessions, kernel scratch and the executor (see exec.h).
 *
 * Kernel scratch (ts_kctx_scratch) is a bump allocator over one 64-byte
 * aligned block owned by the session. A kernel may ask for scratch several
 * times; when the block is too small, extra blocks are malloc'd for the rest
 * of that kernel, and afterwards the block is regrown to the total seen, so
 * a warm session allocates nothing.
 */
#include "exec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define ALIGN 64
#define ALIGN_UP(x) (((x) + (ALIGN - 1)) & ~(size_t)(ALIGN - 1))
#define MAX_OVERFLOW 32

/* Scratch area: `block` of `cap` bytes, bump pointer `used`; blocks beyond it
 * (`overflow`) live only until the kernel returns. */
typedef struct scratch {
  uint8_t *block;
  size_t cap;
  size_t used;
  void *overflow[MAX_OVERFLOW];
  int n_overflow;
  size_t overflow_bytes;
  size_t *alloc_count; /* counts mallocs, for the buffer-reuse test hook */
} scratch;

struct ts_kctx {
  scratch *sc;
};

struct ts_session {
  scratch sc;
  size_t alloc_count;
};

void *ts_kctx_scratch(ts_kctx *ctx, size_t bytes) {
  scratch *sc = ctx->sc;
  size_t need = ALIGN_UP(bytes ? bytes : 1);
  if (need < bytes) return NULL;
  if (sc->block && sc->cap - sc->used >= need) {
    void *p = sc->block + sc->used;
    sc->used += need;
    return p;
  }
  if (sc->n_overflow == MAX_OVERFLOW) return NULL;
  void *p = aligned_alloc(ALIGN, need);
  if (!p) return NULL;
  if (sc->alloc_count) (*sc->alloc_count)++;
  sc->overflow[sc->n_overflow++] = p;
  sc->overflow_bytes += need;
  return p;
}

/* Ends one kernel's use of the scratch area: frees overflow blocks and, if
 * there were any, regrows the main block to hold everything next time. */
static void scratch_reset(scratch *sc) {
  if (sc->n_overflow) {
    size_t want = sc->used + sc->overflow_bytes;
    for (int i = 0; i < sc->n_overflow; i++) free(sc->overflow[i]);
    sc->n_overflow = 0;
    sc->overflow_bytes = 0;
    uint8_t *b = aligned_alloc(ALIGN, ALIGN_UP(want));
    if (b) {
      free(sc->block);
      sc->block = b;
      sc->cap = ALIGN_UP(want);
      if (sc->alloc_count) (*sc->alloc_count)++;
    }
  }
  sc->used = 0;
}

static void scratch_free(scratch *sc) {
  scratch_reset(sc);
  free(sc->block);
  memset(sc, 0, sizeof *sc);
}

int ts_session_create(ts_session **out, ts_err *err) {
  ts_session *s = calloc(1, sizeof *s);
  if (!s) return ts_err_set(err, TS_ENOMEM, "cannot allocate a session");
  s->sc.alloc_count = &s->alloc_count;
  *out = s;
  return TS_OK;
}

void ts_session_free(ts_session *s) {
  if (!s) return;
  scratch_free(&s->sc);
  free(s);
}

/* Test hook (not in exec.h; tests declare it): how many blocks the session
 * has malloc'd so far. A warm session's count does not move. */
size_t ts_session_alloc_count(const ts_session *s) { return s->alloc_count; }

/* Internal to the library (graph.c declares it): runs one node on its own,
 * outside any session, for load-time constant folding. Calls op->infer, then
 * allocates each present output (owned; the caller frees them with
 * ts_tensor_free, also on failure) and calls op->run. out[i] for an omitted
 * optional output (node->outputs[i] < 0) stays data-less. */
int ts_exec_node_eval(const ts_node *node, const ts_tensor *const *in,
                      ts_tensor *out, ts_err *err) {
  for (int i = 0; i < node->n_outputs; i++) memset(&out[i], 0, sizeof out[i]);
  int rc = node->op->infer(node, in, out, err);
  if (rc) return rc;
  for (int i = 0; i < node->n_outputs; i++) {
    if (node->outputs[i] < 0) continue;
    out[i].data = calloc(1, out[i].nbytes ? out[i].nbytes : 1);
    if (!out[i].data)
      return ts_err_set(err, TS_ENOMEM, "cannot allocate %zu bytes",
                        out[i].nbytes);
    out[i].owned = true;
  }
  scratch sc = {0};
  ts_kctx ctx = {.sc = &sc};
  rc = node->op->run(node, in, out, &ctx, err);
  scratch_free(&sc);
  return rc;
}

int ts_exec_run(const ts_model *model, ts_session *s,
                const char *const *input_names, const ts_tensor *inputs,
                int n_inputs, const char *const *output_names,
                ts_tensor *outputs, int n_outputs, ts_err *err) {
  (void)model, (void)s, (void)input_names, (void)inputs, (void)n_inputs;
  (void)output_names, (void)outputs, (void)n_outputs;
  return ts_err_set(err, TS_EUNSUPPORTED, "executor not implemented yet");
}
