/*
 * exec.c - sessions, kernel scratch and the executor (see exec.h).
 *
 * A run is keyed by (model serial, each graph input's dtype and dims, the
 * requested outputs). The first run for a key is a planning run: it executes
 * the needed nodes with one heap buffer per value (freed after the value's
 * last reader), records every value's shape, then assigns arena offsets by
 * liveness (greedy by size: largest first, lowest offset that overlaps no
 * value live at the same step) and moves the requested outputs into the
 * arena. Later runs for the key reuse the plan and allocate nothing: every
 * value's buffer is arena + offset. Each step still calls op->infer; if a
 * shape differs from the plan (a size that depends on input values, not
 * only input shapes), the plan is dropped and the run is redone as a
 * planning run. A session caches up to MAX_PLANS plans (LRU).
 *
 * Invariants: inputs are never written (kernels read the caller's bytes in
 * place); a node's outputs never share memory with its inputs or with each
 * other; requested outputs live until the next run on the session; the
 * model is only read, so any number of sessions may run it at once.
 *
 * Kernel scratch (ts_kctx_scratch) is a bump allocator over one 64-byte
 * aligned block owned by the session. A kernel may ask for scratch several
 * times; when the block is too small, extra blocks are malloc'd for the rest
 * of that kernel, and afterwards the block is regrown to the total seen, so
 * a warm session allocates nothing.
 *
 * Activation budget (ts_session_set_activation_limit): a run may hold at
 * most `limit` bytes of activations (every value a node produces, and the
 * requested outputs) plus kernel scratch. Nothing beyond the limit is ever
 * allocated; the run fails with TS_EEXHAUSTED instead, naming the node, the
 * bytes needed and the limit:
 *  - a planned run checks its plan's arena size before running anything;
 *  - a planning run first infers, without running anything, every shape
 *    that follows from the inputs (their shapes and values) and constants,
 *    and refuses when the values live at one of those steps exceed the
 *    limit (a huge batch is refused before its first layer runs);
 *  - then, as it runs, it checks after each node's infer and before
 *    allocating its outputs that the values live at that step plus the new
 *    outputs fit (this is where sizes computed from data, such as Range's
 *    limit, Tile's repeats or Expand's shape, are caught), and at the end
 *    the arena that liveness packing needs;
 *  - ts_kctx_scratch refuses a request beyond what the activations of the
 *    step leave free, and the kernel's failure becomes TS_EEXHAUSTED.
 * A planning run re-checks every output size infer gives (nbytes must equal
 * dims x element size without overflow) before allocating it, so an op's
 * shape arithmetic can never wrap into a small allocation; a planned run's
 * shapes must equal its plan's, so they were checked when it was made.
 */
#include "exec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
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
  size_t budget;       /* bytes one kernel may take (SIZE_MAX: no limit) */
  size_t refused;      /* bytes a refused request would have brought the
                          kernel to; 0 when none was refused */
  size_t *alloc_count; /* counts mallocs, for the buffer-reuse test hook */
} scratch;

struct ts_kctx {
  scratch *sc;
};

/* Where one value lives during a planned run, and its planned shape. */
typedef struct slot {
  int64_t offset; /* in the arena; -1 when the value is not in the arena */
  ts_dtype dtype;
  int rank;
  int64_t dims[TS_MAX_RANK];
  size_t nbytes;
} slot;

/* A buffer plan for one (model, input shapes, requested outputs) key. */
typedef struct plan {
  uint64_t serial;       /* ts_model_serial of the model */
  int n_inputs;          /* == graph.n_inputs */
  ts_tensor *in_shapes;  /* key: dtype/rank/dims per graph input (no data) */
  int n_req;
  int *req;              /* key: requested value indices, in request order */
  int n_steps;
  int *steps;            /* node indices to run, in order */
  int n_values;
  slot *slots;           /* per value */
  size_t arena_bytes;
  uint64_t last_used;    /* session tick, for LRU eviction */
} plan;

#define MAX_PLANS 8

struct ts_session {
  scratch sc;
  size_t limit;          /* activation bytes per run; 0: no limit */
  size_t alloc_count;
  uint8_t *arena;        /* 64-byte aligned */
  size_t arena_cap;
  plan *plans[MAX_PLANS];
  int n_plans;
  uint64_t tick;
  /* Per-run working space, grown to the largest model seen. */
  ts_tensor *vals;       /* one per value */
  int vals_cap;
  int *bind;             /* graph input i -> caller input index */
  int *req;              /* requested value indices */
  int ints_cap;          /* capacity of bind and req */
  const ts_tensor **in;  /* one node's inputs */
  ts_tensor *out;        /* one node's outputs */
  int io_cap;
};

/* x rounded up to ALIGN, or SIZE_MAX when that overflows. */
static size_t align_up(size_t x) {
  return x > SIZE_MAX - (ALIGN - 1) ? SIZE_MAX : ALIGN_UP(x);
}

/* a + b, or SIZE_MAX when that overflows. */
static size_t add_sat(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

void *ts_kctx_scratch(ts_kctx *ctx, size_t bytes) {
  scratch *sc = ctx->sc;
  size_t need = align_up(bytes ? bytes : 1);
  if (need == SIZE_MAX) return NULL;
  size_t held = sc->used + sc->overflow_bytes;
  if (add_sat(held, need) > sc->budget) {
    sc->refused = add_sat(held, need);
    return NULL;
  }
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
    uint8_t *b = aligned_alloc(ALIGN, align_up(want));
    if (b) {
      free(sc->block);
      sc->block = b;
      sc->cap = align_up(want);
      if (sc->alloc_count) (*sc->alloc_count)++;
    }
  }
  sc->used = 0;
  sc->refused = 0;
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
  s->sc.budget = SIZE_MAX;
  *out = s;
  return TS_OK;
}

static void plan_free(plan *p) {
  if (!p) return;
  free(p->in_shapes);
  free(p->req);
  free(p->steps);
  free(p->slots);
  free(p);
}

void ts_session_free(ts_session *s) {
  if (!s) return;
  scratch_free(&s->sc);
  for (int i = 0; i < s->n_plans; i++) plan_free(s->plans[i]);
  free(s->arena);
  free(s->vals);
  free(s->bind);
  free(s->req);
  free(s->in);
  free(s->out);
  free(s);
}

void ts_session_set_activation_limit(ts_session *s, size_t bytes) {
  s->limit = bytes;
}

size_t ts_session_activation_limit(const ts_session *s) { return s->limit; }

/* exec.h (test hooks). */
size_t ts_session_alloc_count(const ts_session *s) { return s->alloc_count; }

size_t ts_session_arena_bytes(const ts_session *s) { return s->arena_cap; }

/* ---- the executor -------------------------------------------------------- */

/* Returned by a planned run whose shapes left the plan (data-dependent
 * sizes): the caller re-plans and runs again. Positive: never a TS_E*. */
#define RESTART 1

/* Grows a session array to hold `want` elements of `size` bytes. */
static int grow(ts_session *s, void **arr, int *cap, int want, size_t size,
                ts_err *err) {
  if (want <= *cap) return TS_OK;
  int ncap = want < 16 ? 16 : want;
  void *p = realloc(*arr, (size_t)ncap * size);
  if (!p) return ts_err_set(err, TS_ENOMEM, "out of memory");
  s->alloc_count++;
  *arr = p;
  *cap = ncap;
  return TS_OK;
}

static int ensure_io(ts_session *s, const ts_node *n, ts_err *err) {
  int want = n->n_inputs > n->n_outputs ? n->n_inputs : n->n_outputs;
  if (want <= s->io_cap) return TS_OK;
  int cap_in = s->io_cap;
  int rc = grow(s, (void **)&s->in, &cap_in, want, sizeof *s->in, err);
  if (rc) return rc;
  return grow(s, (void **)&s->out, &s->io_cap, want, sizeof *s->out, err);
}

/* Resolves the requested outputs into s->req; returns their count. */
static int resolve_outputs(const ts_graph *g, ts_session *s,
                           const char *const *names, int n_names,
                           ts_err *err) {
  bool all = n_names == 0 && names == NULL;
  int n_req = all ? g->n_outputs : n_names;
  if (n_req < 0 || (!all && !names))
    return ts_err_set(err, TS_EINVAL, "bad output list");
  for (int i = 0; i < n_req; i++) {
    int v = -1;
    if (all) {
      v = g->outputs[i];
    } else {
      const char *name = names[i] ? names[i] : "";
      for (int k = 0; k < g->n_outputs && v < 0; k++)
        if (strcmp(g->values[g->outputs[k]].name, name) == 0)
          v = g->outputs[k];
      if (v < 0) v = ts_graph_find_value(g, name);
      if (v < 0)
        return ts_err_set(err, TS_EINVAL,
                          "requested output '%s' is not a tensor of the model",
                          name);
    }
    s->req[i] = v;
  }
  return n_req;
}

/* Checks the caller's inputs against the graph inputs and fills s->bind. */
static int bind_inputs(const ts_graph *g, ts_session *s,
                       const char *const *names, const ts_tensor *inputs,
                       int n_inputs, ts_err *err) {
  if (n_inputs < 0 || (n_inputs > 0 && (!names || !inputs)))
    return ts_err_set(err, TS_EINVAL, "bad input list");
  for (int i = 0; i < g->n_inputs; i++) s->bind[i] = -1;
  for (int k = 0; k < n_inputs; k++) {
    const char *name = names[k] ? names[k] : "";
    int gi = -1;
    for (int i = 0; i < g->n_inputs && gi < 0; i++)
      if (strcmp(g->values[g->inputs[i]].name, name) == 0) gi = i;
    if (gi < 0)
      return ts_err_set(err, TS_EINVAL, "unknown input '%s'", name);
    if (s->bind[gi] >= 0)
      return ts_err_set(err, TS_EINVAL, "input '%s' is given twice", name);
    s->bind[gi] = k;
    const ts_value *v = &g->values[g->inputs[gi]];
    const ts_tensor *t = &inputs[k];
    if (v->dtype != TS_DTYPE_UNDEFINED && t->dtype != v->dtype)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s' has data type %s; the model expects %s",
                        name, ts_dtype_name(t->dtype), ts_dtype_name(v->dtype));
    if (!ts_dtype_is_numeric(t->dtype))
      return ts_err_set(err, TS_EINVAL,
                        "input '%s' has unsupported data type %s", name,
                        ts_dtype_name(t->dtype));
    if (t->rank < 0 || t->rank > TS_MAX_RANK)
      return ts_err_set(err, TS_EINVAL, "input '%s' has bad rank %d", name,
                        t->rank);
    if (v->rank >= 0 && t->rank != v->rank)
      return ts_err_set(err, TS_EINVAL,
                        "input '%s' has rank %d; the model expects rank %d",
                        name, t->rank, v->rank);
    for (int d = 0; d < t->rank; d++) {
      if (t->dims[d] < 0)
        return ts_err_set(err, TS_EINVAL, "input '%s': dim %d is negative",
                          name, d);
      if (v->rank >= 0 && v->dims[d] >= 0 && t->dims[d] != v->dims[d])
        return ts_err_set(err, TS_EINVAL,
                          "input '%s': dim %d is %lld; the model expects %lld",
                          name, d, (long long)t->dims[d],
                          (long long)v->dims[d]);
    }
    int64_t nb = ts_shape_nbytes(t->dtype, t->dims, t->rank);
    if (nb < 0 || (uint64_t)nb != (uint64_t)t->nbytes) {
      char sh[128];
      return ts_err_set(err, TS_EINVAL,
                        "input '%s' holds %zu bytes; shape %s of %s needs "
                        "%lld",
                        name, t->nbytes,
                        ts_shape_str(t->dims, t->rank, sh, sizeof sh),
                        ts_dtype_name(t->dtype), (long long)nb);
    }
    if (t->nbytes && !t->data)
      return ts_err_set(err, TS_EINVAL, "input '%s' has no data", name);
  }
  for (int i = 0; i < g->n_inputs; i++)
    if (s->bind[i] < 0)
      return ts_err_set(err, TS_EINVAL, "input '%s' is missing",
                        g->values[g->inputs[i]].name);
  return TS_OK;
}

static bool plan_matches(const plan *p, uint64_t serial, const ts_graph *g,
                         const ts_tensor *inputs, const int *bind,
                         const int *req, int n_req) {
  if (p->serial != serial || p->n_req != n_req || p->n_inputs != g->n_inputs)
    return false;
  if (memcmp(p->req, req, (size_t)n_req * sizeof *req) != 0) return false;
  for (int i = 0; i < g->n_inputs; i++) {
    const ts_tensor *t = &inputs[bind[i]];
    if (t->dtype != p->in_shapes[i].dtype ||
        !ts_tensor_same_shape(t, &p->in_shapes[i]))
      return false;
  }
  return true;
}

/* Points s->vals at constants and the caller's inputs. */
static void set_sources(const ts_graph *g, ts_session *s,
                        const ts_tensor *inputs) {
  for (int v = 0; v < g->n_values; v++) {
    if (g->values[v].constant) {
      s->vals[v] = *g->values[v].constant;
      s->vals[v].owned = false;
    } else {
      memset(&s->vals[v], 0, sizeof s->vals[v]);
    }
  }
  for (int i = 0; i < g->n_inputs; i++) {
    s->vals[g->inputs[i]] = inputs[s->bind[i]];
    s->vals[g->inputs[i]].owned = false;
  }
}

/* Gathers node n's input pointers into s->in. */
static void gather_inputs(const ts_node *n, ts_session *s) {
  for (int j = 0; j < n->n_inputs; j++)
    s->in[j] = n->inputs[j] >= 0 ? &s->vals[n->inputs[j]] : NULL;
}

/* op->infer on s->in into s->out. At run time every input has data, so an
 * op asking for values (TS_EAGAIN) is a bug in that op. */
static int infer_at_run(const ts_node *n, ts_session *s, ts_err *err) {
  memset(s->out, 0, (size_t)n->n_outputs * sizeof *s->out);
  int rc = n->op->infer(n, s->in, s->out, err);
  if (rc == TS_EAGAIN) {
    char desc[256];
    rc = ts_err_set(err, TS_EINTERNAL, "%s: infer asked for values at run time",
                    ts_node_desc(n, desc, sizeof desc));
  }
  return rc;
}

/* Re-checks the sizes infer gave node n's outputs before a planning run
 * allocates them (nbytes == dims x element size, without overflow). A
 * planned run needs no check: its shapes must equal the plan's, checked
 * here when the plan was made. */
static int check_output_sizes(const ts_graph *g, const ts_node *n,
                              const ts_tensor *out, ts_err *err) {
  for (int j = 0; j < n->n_outputs; j++) {
    const ts_tensor *t = &out[j];
    if (n->outputs[j] < 0) continue;
    int64_t nb = t->rank >= 0 && t->rank <= TS_MAX_RANK
                     ? ts_shape_nbytes(t->dtype, t->dims, t->rank)
                     : -1;
    if (nb >= 0 && (uint64_t)nb == (uint64_t)t->nbytes) continue;
    char desc[256], sh[160];
    ts_node_desc(n, desc, sizeof desc);
    if (nb < 0)
      return ts_err_set(err, TS_EINVAL,
                        "%s: output '%s' of shape %s of %s has a negative dim "
                        "or a size that overflows", desc,
                        g->values[n->outputs[j]].name,
                        ts_shape_str(t->dims, t->rank < 0 ? 0 : t->rank, sh,
                                     sizeof sh),
                        ts_dtype_name(t->dtype));
    return ts_err_set(err, TS_EINTERNAL,
                      "%s: output '%s' holds %zu bytes, not the %lld of its "
                      "shape", desc, g->values[n->outputs[j]].name, t->nbytes,
                      (long long)nb);
  }
  return TS_OK;
}

/* engine_int.h. The outputs are checked (check_output_sizes) and counted
 * against `budget` before any is allocated, and the kernel's scratch may
 * take only what they leave of it, so a fold never allocates past it. */
int ts_exec_node_eval(const ts_graph *g, const ts_node *node,
                      const ts_tensor *const *in, ts_tensor *out,
                      size_t budget, ts_err *err) {
  for (int i = 0; i < node->n_outputs; i++) memset(&out[i], 0, sizeof out[i]);
  int rc = node->op->infer(node, in, out, err);
  if (rc || (rc = check_output_sizes(g, node, out, err))) return rc;
  size_t need = 0;
  for (int i = 0; i < node->n_outputs; i++)
    if (node->outputs[i] >= 0) need = add_sat(need, out[i].nbytes);
  char desc[256];
  if (need > budget)
    return ts_err_set(err, TS_EEXHAUSTED,
                      "%s needs %zu bytes for its outputs, more than the %zu "
                      "bytes left", ts_node_desc(node, desc, sizeof desc),
                      need, budget);
  for (int i = 0; i < node->n_outputs; i++) {
    if (node->outputs[i] < 0) continue;
    out[i].data = calloc(1, out[i].nbytes ? out[i].nbytes : 1);
    if (!out[i].data)
      return ts_err_set(err, TS_ENOMEM, "cannot allocate %zu bytes",
                        out[i].nbytes);
    out[i].owned = true;
  }
  scratch sc = {.budget = budget - need};
  ts_kctx ctx = {.sc = &sc};
  rc = node->op->run(node, in, out, &ctx, err);
  size_t refused = sc.refused;
  scratch_free(&sc);
  if (rc && refused)
    return ts_err_set(err, TS_EEXHAUSTED,
                      "%s needs %zu bytes for its outputs and %zu bytes of "
                      "kernel scratch, more than the %zu bytes left",
                      ts_node_desc(node, desc, sizeof desc), need, refused,
                      budget);
  return rc;
}

/* The failure of a run that would hold `need` bytes of activations at once
 * (`what` says where). */
static int over_limit(const ts_session *s, const char *what, size_t need,
                      ts_err *err) {
  return ts_err_set(err, TS_EEXHAUSTED,
                    "activation memory exhausted: %s needs %zu bytes; the "
                    "limit is %zu bytes", what, need, s->limit);
}

/* Sets how much scratch the next kernels may take: what the limit leaves
 * beside `activations` bytes. */
static void scratch_budget(ts_session *s, size_t activations) {
  s->sc.budget = !s->limit ? SIZE_MAX
                 : activations < s->limit ? s->limit - activations
                                          : 0;
}

static int run_kernel(const ts_node *n, ts_session *s, ts_err *err) {
  ts_kctx ctx = {.sc = &s->sc};
  int rc = n->op->run(n, s->in, s->out, &ctx, err);
  size_t refused = s->sc.refused;
  scratch_reset(&s->sc);
  if (rc && refused) {
    char desc[256], what[320];
    snprintf(what, sizeof what, "%s, with %zu bytes of kernel scratch on "
             "top of the activations,", ts_node_desc(n, desc, sizeof desc),
             refused);
    return over_limit(s, what, add_sat(s->limit - s->sc.budget, refused),
                      err);
  }
  if (rc && err && !err->msg[0]) {
    char desc[256];
    ts_err_set(err, rc, "%s: kernel failed",
               ts_node_desc(n, desc, sizeof desc));
  }
  return rc;
}

/* Copies requested outputs that are graph inputs into their arena slots, so
 * every non-constant output lives in the arena. */
static void copy_passthrough(const ts_graph *g, ts_session *s, const plan *p) {
  for (int i = 0; i < p->n_req; i++) {
    int v = p->req[i];
    const slot *sl = &p->slots[v];
    if (!g->values[v].is_graph_input || sl->offset < 0) continue;
    ts_tensor *t = &s->vals[v];
    if (t->nbytes) memcpy(s->arena + sl->offset, t->data, t->nbytes);
    t->data = s->arena + sl->offset;
  }
}

/* Runs a cached plan. Allocates nothing (the kernels' scratch aside, which
 * is warm after the planning run). RESTART when a shape left the plan. */
static int run_planned(const ts_model *m, ts_session *s, const plan *p,
                       const ts_tensor *inputs, ts_err *err) {
  const ts_graph *g = &m->graph;
  if (s->limit && p->arena_bytes > s->limit)
    return over_limit(s, "the run's activation arena", p->arena_bytes, err);
  scratch_budget(s, p->arena_bytes);
  set_sources(g, s, inputs);
  for (int v = 0; v < g->n_values; v++) {
    const slot *sl = &p->slots[v];
    if (sl->offset < 0 || g->values[v].is_graph_input) continue;
    ts_tensor *t = &s->vals[v];
    t->dtype = sl->dtype;
    t->rank = sl->rank;
    memcpy(t->dims, sl->dims, sizeof t->dims);
    t->nbytes = sl->nbytes;
    t->data = s->arena + sl->offset;
    t->owned = false;
  }
  for (int k = 0; k < p->n_steps; k++) {
    const ts_node *n = &g->nodes[p->steps[k]];
    int rc = ensure_io(s, n, err);
    if (rc) return rc;
    gather_inputs(n, s);
    if ((rc = infer_at_run(n, s, err))) return rc;
    for (int j = 0; j < n->n_outputs; j++) {
      int v = n->outputs[j];
      if (v < 0) {
        s->out[j].data = NULL;
        continue;
      }
      const slot *sl = &p->slots[v];
      if (s->out[j].dtype != sl->dtype || s->out[j].rank != sl->rank ||
          memcmp(s->out[j].dims, sl->dims,
                 (size_t)sl->rank * sizeof sl->dims[0]) != 0)
        return RESTART;
      s->out[j].data = s->arena + sl->offset;
      s->out[j].owned = false;
    }
    if ((rc = run_kernel(n, s, err))) return rc;
  }
  copy_passthrough(g, s, p);
  return TS_OK;
}

/* Marks the nodes needed for the requested values; returns their count and
 * writes their indices, in order, into steps. needed_val is scratch. */
static int needed_steps(const ts_graph *g, const int *req, int n_req,
                        bool *needed_val, int *steps) {
  memset(needed_val, 0, (size_t)g->n_values * sizeof *needed_val);
  for (int i = 0; i < n_req; i++) needed_val[req[i]] = true;
  int n = 0;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    const ts_node *nd = &g->nodes[i];
    bool need = false;
    for (int j = 0; j < nd->n_outputs && !need; j++)
      need = nd->outputs[j] >= 0 && needed_val[nd->outputs[j]];
    if (!need) continue;
    steps[n++] = i;
    for (int j = 0; j < nd->n_inputs; j++)
      if (nd->inputs[j] >= 0) needed_val[nd->inputs[j]] = true;
  }
  for (int i = 0; i < n / 2; i++) { /* collected backwards */
    int t = steps[i];
    steps[i] = steps[n - 1 - i];
    steps[n - 1 - i] = t;
  }
  return n;
}

/* A value to place in the arena: live from step `def` to step `last`. */
typedef struct placement {
  int value;
  int def, last;
  size_t size;
  int64_t offset;
} placement;

static int by_size_desc(const void *a, const void *b) {
  const placement *x = a, *y = b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  return x->def - y->def;
}

static int by_offset(const void *a, const void *b) {
  const placement *x = *(placement *const *)a, *y = *(placement *const *)b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Greedy-by-size offset assignment (largest first, each at the lowest
 * offset that does not overlap a placed value live at the same time).
 * Returns the arena size, or -1 when out of memory. */
static int64_t assign_offsets(placement *pl, int n) {
  qsort(pl, (size_t)n, sizeof *pl, by_size_desc);
  placement **live = malloc(((size_t)n + 1) * sizeof *live);
  if (!live) return -1;
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    int n_live = 0;
    for (int k = 0; k < i; k++)
      if (pl[k].def <= pl[i].last && pl[i].def <= pl[k].last)
        live[n_live++] = &pl[k];
    qsort(live, (size_t)n_live, sizeof *live, by_offset);
    int64_t off = 0;
    for (int k = 0; k < n_live; k++) {
      if (live[k]->offset >= off + (int64_t)pl[i].size) break;
      int64_t end = live[k]->offset + (int64_t)live[k]->size;
      if (end > off) off = end;
    }
    pl[i].offset = off;
    if (off + (int64_t)pl[i].size > total) total = off + (int64_t)pl[i].size;
  }
  free(live);
  return total;
}

/* Checks that node n's outputs (shaped in s->out) fit beside the `*live`
 * bytes already held, and adds them to *live. TS_EEXHAUSTED naming the node
 * and its largest output otherwise; nothing is allocated either way. */
static int reserve_outputs(const ts_graph *g, const ts_node *n, ts_session *s,
                           size_t *live, ts_err *err) {
  size_t need = *live;
  int largest = -1;
  for (int j = 0; j < n->n_outputs; j++) {
    if (n->outputs[j] < 0) continue;
    need = add_sat(need, align_up(s->out[j].nbytes));
    if (largest < 0 || s->out[j].nbytes > s->out[largest].nbytes) largest = j;
  }
  if (s->limit && need > s->limit && largest >= 0) {
    const ts_tensor *t = &s->out[largest];
    char desc[256], sh[160], what[600];
    snprintf(what, sizeof what,
             "%s (output '%s' %s of %s is %zu bytes, beside %zu bytes of "
             "live activations)", ts_node_desc(n, desc, sizeof desc),
             g->values[n->outputs[largest]].name,
             ts_shape_str(t->dims, t->rank, sh, sizeof sh),
             ts_dtype_name(t->dtype), t->nbytes, *live);
    return over_limit(s, what, need, err);
  }
  *live = need;
  return TS_OK;
}

/* Before a planning run executes anything: infers the steps' shapes from
 * the inputs' shapes and values and the constants alone (computed values
 * have no data yet), as far as that goes, and refuses the run if the values
 * live at one of those steps exceed the limit. A step whose shape needs a
 * computed value (infer says TS_EAGAIN), or fails, ends the dry pass; the
 * run itself checks the rest, and reports any error. last[v] is the last
 * step reading value v. Leaves s->vals to be reset by set_sources. */
static int dry_run_budget(const ts_graph *g, ts_session *s, const plan *p,
                          const ts_tensor *inputs, const int *last,
                          ts_err *err) {
  if (!s->limit) return TS_OK;
  set_sources(g, s, inputs);
  size_t live = 0;
  ts_err ignored;
  for (int k = 0; k < p->n_steps; k++) {
    const ts_node *n = &g->nodes[p->steps[k]];
    if (ensure_io(s, n, &ignored)) return TS_OK;
    gather_inputs(n, s);
    memset(s->out, 0, (size_t)n->n_outputs * sizeof *s->out);
    if (n->op->infer(n, s->in, s->out, &ignored) != TS_OK ||
        check_output_sizes(g, n, s->out, &ignored) != TS_OK)
      return TS_OK;
    int rc = reserve_outputs(g, n, s, &live, err);
    if (rc) return rc;
    for (int j = 0; j < n->n_outputs; j++)
      if (n->outputs[j] >= 0) {
        s->vals[n->outputs[j]] = s->out[j];
        s->vals[n->outputs[j]].data = NULL;
      }
    for (int j = 0; j < n->n_inputs + n->n_outputs; j++) {
      int v = j < n->n_inputs ? n->inputs[j] : n->outputs[j - n->n_inputs];
      if (v >= 0 && last[v] == k && g->values[v].producer >= 0) {
        live -= align_up(s->vals[v].nbytes);
        s->vals[v].nbytes = 0; /* a repeated input is freed once */
      }
    }
  }
  return TS_OK;
}

/* Planning run: executes with one heap buffer per value (freed after its
 * last reader), records every shape, then builds the plan, sizes the arena
 * and moves the requested outputs into it. */
static int run_planning(const ts_model *m, ts_session *s,
                        const ts_tensor *inputs, int n_req, plan **out,
                        ts_err *err) {
  const ts_graph *g = &m->graph;
  int nv = g->n_values;
  plan *p = calloc(1, sizeof *p);
  bool *needed_val = calloc((size_t)nv + 1, sizeof *needed_val);
  int *last = malloc(((size_t)nv + 1) * sizeof *last);
  int *def = malloc(((size_t)nv + 1) * sizeof *def);
  void **temp = calloc((size_t)nv + 1, sizeof *temp);
  placement *pl = NULL;
  int rc = TS_OK;
  s->alloc_count += 5;
  if (!p || !needed_val || !last || !def || !temp) goto oom;
  p->serial = ts_model_serial(m);
  p->n_inputs = g->n_inputs;
  p->n_req = n_req;
  p->n_values = nv;
  p->in_shapes = calloc((size_t)g->n_inputs + 1, sizeof *p->in_shapes);
  p->req = malloc(((size_t)n_req + 1) * sizeof *p->req);
  p->steps = malloc(((size_t)g->n_nodes + 1) * sizeof *p->steps);
  p->slots = calloc((size_t)nv + 1, sizeof *p->slots);
  s->alloc_count += 4;
  if (!p->in_shapes || !p->req || !p->steps || !p->slots) goto oom;
  for (int i = 0; i < g->n_inputs; i++) {
    p->in_shapes[i] = inputs[s->bind[i]];
    p->in_shapes[i].data = NULL;
    p->in_shapes[i].owned = false;
  }
  memcpy(p->req, s->req, (size_t)n_req * sizeof *p->req);
  p->n_steps = needed_steps(g, p->req, n_req, needed_val, p->steps);
  for (int v = 0; v < nv; v++) {
    p->slots[v].offset = -1;
    def[v] = last[v] = -1;
  }
  for (int k = 0; k < p->n_steps; k++) {
    const ts_node *n = &g->nodes[p->steps[k]];
    for (int j = 0; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0) last[n->inputs[j]] = k;
    for (int j = 0; j < n->n_outputs; j++)
      if (n->outputs[j] >= 0) def[n->outputs[j]] = last[n->outputs[j]] = k;
  }
  for (int i = 0; i < n_req; i++) last[p->req[i]] = p->n_steps;
  if ((rc = dry_run_budget(g, s, p, inputs, last, err))) goto fail;

  set_sources(g, s, inputs);
  size_t live = 0; /* bytes of the values held in temp[] */
  for (int k = 0; k < p->n_steps && !rc; k++) {
    const ts_node *n = &g->nodes[p->steps[k]];
    if ((rc = ensure_io(s, n, err))) break;
    gather_inputs(n, s);
    if ((rc = infer_at_run(n, s, err)) ||
        (rc = check_output_sizes(g, n, s->out, err)) ||
        (rc = reserve_outputs(g, n, s, &live, err)))
      break;
    scratch_budget(s, live);
    for (int j = 0; j < n->n_outputs && !rc; j++) {
      int v = n->outputs[j];
      if (v < 0) {
        s->out[j].data = NULL;
        continue;
      }
      temp[v] = aligned_alloc(ALIGN, align_up(s->out[j].nbytes + 1));
      s->alloc_count++;
      if (!temp[v]) {
        rc = ts_err_set(err, TS_ENOMEM, "cannot allocate %zu bytes for '%s'",
                        s->out[j].nbytes, g->values[v].name);
        break;
      }
      memset(temp[v], 0, s->out[j].nbytes);
      s->out[j].data = temp[v];
      s->out[j].owned = false;
      slot *sl = &p->slots[v];
      sl->dtype = s->out[j].dtype;
      sl->rank = s->out[j].rank;
      memcpy(sl->dims, s->out[j].dims, sizeof sl->dims);
      sl->nbytes = s->out[j].nbytes;
      s->vals[v] = s->out[j];
    }
    if (rc || (rc = run_kernel(n, s, err))) break;
    /* Free what no later step reads. */
    for (int j = 0; j < n->n_inputs + n->n_outputs; j++) {
      int v = j < n->n_inputs ? n->inputs[j] : n->outputs[j - n->n_inputs];
      if (v >= 0 && last[v] == k && temp[v]) {
        free(temp[v]);
        temp[v] = NULL;
        live -= align_up(p->slots[v].nbytes);
      }
    }
  }
  if (rc) goto fail;

  /* Place every produced value, and requested graph inputs (copied). */
  int n_pl = 0;
  pl = malloc(((size_t)nv + 1) * sizeof *pl);
  s->alloc_count++;
  if (!pl) goto oom;
  for (int v = 0; v < nv; v++) {
    bool passthrough = g->values[v].is_graph_input && last[v] == p->n_steps;
    if (def[v] < 0 && !passthrough) continue;
    if (passthrough) {
      slot *sl = &p->slots[v];
      const ts_tensor *t = &s->vals[v];
      sl->dtype = t->dtype;
      sl->rank = t->rank;
      memcpy(sl->dims, t->dims, sizeof sl->dims);
      sl->nbytes = t->nbytes;
    }
    pl[n_pl++] = (placement){.value = v,
                             .def = passthrough ? p->n_steps : def[v],
                             .last = last[v],
                             .size = align_up(p->slots[v].nbytes)};
  }
  int64_t total = assign_offsets(pl, n_pl);
  if (total < 0) goto oom;
  if (s->limit && (uint64_t)total > s->limit) {
    rc = over_limit(s, "the run's activation arena (packed by liveness)",
                    (size_t)total, err);
    goto fail;
  }
  for (int i = 0; i < n_pl; i++) p->slots[pl[i].value].offset = pl[i].offset;
  p->arena_bytes = (size_t)total;
  if (p->arena_bytes > s->arena_cap || !s->arena) {
    size_t cap = ALIGN_UP(p->arena_bytes + 1);
    uint8_t *a = aligned_alloc(ALIGN, cap);
    s->alloc_count++;
    if (!a) {
      rc = ts_err_set(err, TS_ENOMEM, "cannot allocate a %zu-byte arena", cap);
      goto fail;
    }
    free(s->arena);
    s->arena = a;
    s->arena_cap = cap;
  }
  /* Requested outputs move into the arena; the rest are dead. */
  for (int i = 0; i < n_req; i++) {
    int v = p->req[i];
    if (!temp[v]) continue;
    memcpy(s->arena + p->slots[v].offset, temp[v], p->slots[v].nbytes);
    free(temp[v]);
    temp[v] = NULL;
    s->vals[v].data = s->arena + p->slots[v].offset;
  }
  copy_passthrough(g, s, p);
  *out = p;
  p = NULL;
  goto fail; /* frees the scratch arrays, rc == 0 */
oom:
  rc = ts_err_set(err, TS_ENOMEM, "out of memory planning a run");
fail:
  if (temp)
    for (int v = 0; v < nv; v++) free(temp[v]);
  free(temp);
  free(needed_val);
  free(last);
  free(def);
  free(pl);
  plan_free(p);
  return rc;
}

/* Adds p to the session's cache, evicting the least recently used plan. */
static void cache_plan(ts_session *s, plan *p) {
  p->last_used = ++s->tick;
  if (s->n_plans < MAX_PLANS) {
    s->plans[s->n_plans++] = p;
    return;
  }
  int lru = 0;
  for (int i = 1; i < s->n_plans; i++)
    if (s->plans[i]->last_used < s->plans[lru]->last_used) lru = i;
  plan_free(s->plans[lru]);
  s->plans[lru] = p;
}

static void drop_plan(ts_session *s, int i) {
  plan_free(s->plans[i]);
  s->plans[i] = s->plans[--s->n_plans];
}

int ts_exec_run(const ts_model *model, ts_session *s,
                const char *const *input_names, const ts_tensor *inputs,
                int n_inputs, const char *const *output_names,
                ts_tensor *outputs, int n_outputs, ts_err *err) {
  if (!model || !s || (!outputs && (n_outputs > 0 || !output_names)))
    return ts_err_set(err, TS_EINVAL, "missing model, session or outputs");
  const ts_graph *g = &model->graph;
  int rc;
  int want_ints = g->n_inputs > g->n_outputs ? g->n_inputs : g->n_outputs;
  if (n_outputs > want_ints) want_ints = n_outputs;
  int cap = s->ints_cap;
  if ((rc = grow(s, (void **)&s->bind, &cap, want_ints, sizeof(int), err)) ||
      (rc = grow(s, (void **)&s->req, &s->ints_cap, want_ints, sizeof(int),
                 err)))
    return rc;
  if ((rc = grow(s, (void **)&s->vals, &s->vals_cap, g->n_values,
                 sizeof *s->vals, err)))
    return rc;
  int n_req = resolve_outputs(g, s, output_names, n_outputs, err);
  if (n_req < 0) return n_req;
  if ((rc = bind_inputs(g, s, input_names, inputs, n_inputs, err))) return rc;

  uint64_t serial = ts_model_serial(model);
  plan *p = NULL;
  int found = -1;
  for (int i = 0; i < s->n_plans && serial; i++)
    if (plan_matches(s->plans[i], serial, g, inputs, s->bind, s->req, n_req)) {
      found = i;
      break;
    }
  if (found >= 0) {
    p = s->plans[found];
    p->last_used = ++s->tick;
    rc = run_planned(model, s, p, inputs, err);
    if (rc == RESTART) {
      drop_plan(s, found); /* a data-dependent size changed: plan again */
      p = NULL;
    } else if (rc) {
      return rc;
    }
  }
  if (!p) {
    if ((rc = run_planning(model, s, inputs, n_req, &p, err))) return rc;
    if (serial)
      cache_plan(s, p);
    else
      plan_free(p); /* slots already copied into s->vals */
  }
  for (int i = 0; i < n_req; i++) {
    outputs[i] = s->vals[s->req[i]];
    outputs[i].owned = false;
  }
  return TS_OK;
}
