/* registry.c - see registry.h. */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "placement.h"

void ts_registry_init(ts_registry *r, ts_membership *cluster,
                      const char *repository) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->move_mu, NULL);
  r->cluster = cluster;
  if (repository) snprintf(r->repository, sizeof r->repository, "%s", repository);
}

static void io_free(ts_io_info *io, int n) {
  for (int i = 0; i < n; i++) free(io[i].name);
  free(io);
}

static void placement_free(ts_served_model *m) {
  for (int s = 0; m->plan && s < m->plan->n_stages; s++) {
    if (m->placement) free(m->placement[s]);
    if (m->moves) free(m->moves[s]);
  }
  free(m->placement);
  free(m->moves);
}

static void served_free(ts_served_model *m) {
  if (!m) return;
  placement_free(m);
  if (m->origin) {
    /* A re-placed copy: plan and io belong to the origin. */
    ts_served_model_release(m->origin);
    free(m);
    return;
  }
  io_free(m->inputs, m->n_inputs);
  io_free(m->outputs, m->n_outputs);
  if (m->plan) ts_plan_free(m->plan);
  for (int i = 0; i < TS_ENSEMBLE_MAX; i++)
    if (m->members[i]) ts_served_model_release(m->members[i]);
  free(m);
}

void ts_served_model_release(ts_served_model *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) served_free(m);
}

static int io_from_values(const ts_graph *g, const int *ids, int n,
                          ts_io_info **out, ts_err *err) {
  ts_io_info *io = calloc((size_t)(n ? n : 1), sizeof *io);
  if (!io) return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (int i = 0; i < n; i++) {
    const ts_value *v = &g->values[ids[i]];
    io[i].name = strdup(v->name);
    if (!io[i].name) {
      io_free(io, i);
      return ts_err_set(err, TS_ENOMEM, "out of memory");
    }
    io[i].dtype = v->dtype;
    io[i].rank = v->rank < 0 ? 0 : v->rank;
    for (int d = 0; d < io[i].rank; d++) io[i].dims[d] = v->dims[d];
  }
  *out = io;
  return TS_OK;
}

static int io_copy(const ts_io_info *src, int n, ts_io_info **out,
                   ts_err *err) {
  ts_io_info *io = calloc((size_t)(n ? n : 1), sizeof *io);
  if (!io) return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (int i = 0; i < n; i++) {
    io[i] = src[i];
    io[i].name = strdup(src[i].name);
    if (!io[i].name) {
      io_free(io, i);
      return ts_err_set(err, TS_ENOMEM, "out of memory");
    }
  }
  *out = io;
  return TS_OK;
}

/* Chooses `replicas` distinct placement targets with room for shard `s`
 * by the placement order (placement.h; `spread` counts the model's
 * bytes so far), and books the bytes on them. */
static int place_shard(ts_membership *c, const ts_shard *s, int replicas,
                       ts_placement_spread *spread, int *out, ts_err *err) {
  int targets = ts_placement_targets(c);
  if (targets < replicas)
    return ts_err_set(err, TS_EUNAVAILABLE,
                      "shard %s needs %d live workers for its replicas; %d "
                      "are live", s->label, replicas, targets);
  if (ts_placement_place(c, s->id, s->len, replicas, out, spread) != TS_OK)
    return ts_err_set(err, TS_EEXHAUSTED,
                      "no live worker has room for shard %s (%.1f MB) "
                      "under its --memory-limit", s->label,
                      (double)s->len / 1e6);
  return TS_OK;
}

/* Adds (sign 1) or removes (-1) the bookings of placement rows[stage]
 * of model m's plan. */
static void book_rows(ts_membership *c, const ts_served_model *m, int **rows,
                      int sign) {
  if (!m->plan || !rows) return;
  for (int s = 0; s < m->plan->n_stages; s++) {
    if (!rows[s]) continue;
    const ts_stage *st = &m->plan->stages[s];
    for (int k = 0; k < st->n_shards; k++)
      for (int r = 0; r < m->n_replicas; r++) {
        int w = rows[s][k * m->n_replicas + r];
        if (w < 0) continue;
        if (sign > 0)
          atomic_fetch_add(&c->workers[w].memory_planned, st->shards[k].len);
        else
          atomic_fetch_sub(&c->workers[w].memory_planned, st->shards[k].len);
      }
  }
}

static void unbook(ts_membership *c, ts_served_model *m) {
  book_rows(c, m, m->placement, -1);
}

static int load_plain(ts_registry *r, ts_served_model *m, ts_err *err) {
  ts_membership *c = r->cluster;
  ts_model *model = NULL;
  ts_load_opts load = {.fold_limit = r->fold_limit};
  int rc = ts_model_load_file_opts(m->config.path,
                                   r->fold_limit ? &load : NULL, &model, err);
  if (rc) return rc;
  rc = io_from_values(&model->graph, model->graph.inputs,
                      model->graph.n_inputs, &m->inputs, err);
  if (rc == TS_OK) m->n_inputs = model->graph.n_inputs;
  if (rc == TS_OK)
    rc = io_from_values(&model->graph, model->graph.outputs,
                        model->graph.n_outputs, &m->outputs, err);
  if (rc == TS_OK) m->n_outputs = model->graph.n_outputs;

  /* Leaving workers are live but take no new replicas: count targets. */
  int live = ts_placement_targets(c);
  int replicas = m->config.replicas;
  if (replicas == 0) replicas = live >= 2 ? 2 : 1;
  if (rc == TS_OK && live == 0)
    rc = ts_err_set(err, TS_EUNAVAILABLE, "model %s: no live worker",
                    m->config.name);
  if (rc == TS_OK && replicas > live)
    rc = ts_err_set(err, TS_EUNAVAILABLE,
                    "model %s: replicas=%d needs %d live workers; %d are live",
                    m->config.name, replicas, replicas, live);
  if (rc == TS_OK) {
    size_t min_limit = 0;
    int targets[TS_MAX_WORKERS], n_targets = 0;
    for (int i = 0; i < c->n; i++) {
      unsigned long long l = c->workers[i].memory_limit;
      if (!ts_membership_is_target(c, i)) continue;
      if (n_targets < TS_MAX_WORKERS) targets[n_targets++] = i;
      if (l && (!min_limit || l < min_limit)) min_limit = l;
    }
    /* auto weighs its candidates against the links of the workers it
     * places on: their median measured round trip and throughput. */
    ts_link_stats link;
    ts_coord_metrics_link_median(targets, n_targets, &link);
    ts_plan_opts opts = {
        .strategy = m->config.strategy,
        .stages = m->config.stages,
        .shards = m->config.shards,
        .grid_rows = m->config.grid_rows,
        .grid_cols = m->config.grid_cols,
        .replicas = replicas,
        .precision = m->config.precision,
        .n_workers = live,
        .worker_memory_limit = min_limit,
        .link_rtt_s = (double)link.rtt_us / 1e6,
        .link_bytes_per_s = (double)link.bytes_per_s,
        .model_name = m->config.name,
    };
    rc = ts_plan_build(model, &opts, &m->plan, err);
    if (rc) ts_err_prefix(err, "model %s: planning", m->config.name);
  }
  ts_model_free(model);
  if (rc) return rc;
  m->n_replicas = m->plan->replicas;

  m->placement = calloc((size_t)m->plan->n_stages, sizeof *m->placement);
  if (!m->placement) return ts_err_set(err, TS_ENOMEM, "out of memory");
  ts_placement_spread spread = {{0}};
  for (int s = 0; s < m->plan->n_stages && rc == TS_OK; s++) {
    const ts_stage *st = &m->plan->stages[s];
    m->placement[s] = malloc((size_t)st->n_shards * (size_t)m->n_replicas *
                             sizeof(int));
    if (!m->placement[s]) return ts_err_set(err, TS_ENOMEM, "out of memory");
    for (int i = 0; i < st->n_shards * m->n_replicas; i++)
      m->placement[s][i] = -1;
    for (int k = 0; k < st->n_shards && rc == TS_OK; k++)
      rc = place_shard(c, &st->shards[k], m->n_replicas, &spread,
                       &m->placement[s][k * m->n_replicas], err);
  }
  for (int s = 0; s < m->plan->n_stages && rc == TS_OK; s++) {
    const ts_stage *st = &m->plan->stages[s];
    for (int k = 0; k < st->n_shards && rc == TS_OK; k++)
      for (int j = 0; j < m->n_replicas && rc == TS_OK; j++)
        rc = ts_membership_upload(c, m->placement[s][k * m->n_replicas + j],
                                  &st->shards[k], err);
  }
  if (rc) {
    unbook(c, m);
    return rc;
  }
  ts_log_info("model %s: %s plan, %d stage(s), %d replica(s) per shard, "
              "%.1f MB of shards", m->config.name,
              ts_strategy_name(m->plan->strategy), m->plan->n_stages,
              m->n_replicas, (double)m->plan->weight_bytes / 1e6);
  for (int s = 0; s < m->plan->n_stages; s++) {
    const ts_stage *st = &m->plan->stages[s];
    for (int k = 0; k < st->n_shards; k++) {
      char where[512] = "";
      size_t off = 0;
      for (int j = 0; j < m->n_replicas && off < sizeof where; j++)
        off += (size_t)snprintf(
            where + off, sizeof where - off, "%s%s", j ? ", " : "",
            c->workers[m->placement[s][k * m->n_replicas + j]].address);
      ts_log_info("  %s (%.12s, %.1f MB) on %s", st->shards[k].label,
                  st->shards[k].id, (double)st->shards[k].len / 1e6, where);
    }
  }
  return TS_OK;
}

static int same_io(const ts_io_info *a, const ts_io_info *b) {
  if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->rank != b->rank)
    return 0;
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return 0;
  return 1;
}

static int load_ensemble(ts_registry *r, ts_served_model *m, ts_err *err) {
  for (int i = 0; i < m->config.n_members; i++) {
    ts_served_model *mem = ts_registry_acquire(r, m->config.members[i]);
    if (!mem)
      return ts_err_set(err, TS_ENOTFOUND,
                        "ensemble %s: member model '%s' is not loaded (load "
                        "members first)", m->config.name, m->config.members[i]);
    m->members[i] = mem;
    if (mem->state != TS_MODEL_READY)
      return ts_err_set(err, TS_EUNAVAILABLE, "ensemble %s: member '%s' is "
                        "not ready", m->config.name, mem->config.name);
    if (mem->config.is_ensemble)
      return ts_err_set(err, TS_EINVAL, "ensemble %s: member '%s' is itself "
                        "an ensemble", m->config.name, mem->config.name);
  }
  const ts_served_model *first = m->members[0];
  for (int i = 1; i < m->config.n_members; i++) {
    const ts_served_model *o = m->members[i];
    int ok = o->n_inputs == first->n_inputs &&
             o->n_outputs == first->n_outputs;
    for (int j = 0; ok && j < first->n_inputs; j++)
      ok = same_io(&o->inputs[j], &first->inputs[j]);
    for (int j = 0; ok && j < first->n_outputs; j++)
      ok = o->outputs[j].rank == first->outputs[j].rank;
    if (!ok)
      return ts_err_set(err, TS_EINVAL,
                        "ensemble %s: members '%s' and '%s' differ in their "
                        "inputs or outputs", m->config.name,
                        first->config.name, o->config.name);
  }
  int rc = io_copy(first->inputs, first->n_inputs, &m->inputs, err);
  if (rc) return rc;
  m->n_inputs = first->n_inputs;
  rc = io_copy(first->outputs, first->n_outputs, &m->outputs, err);
  if (rc) return rc;
  m->n_outputs = first->n_outputs;
  if (m->config.fuse == TS_FUSE_VOTE)
    for (int j = 0; j < m->n_outputs; j++) {
      /* A vote answers labels: int64, and scores [..., C] lose their C. */
      ts_io_info *o = &m->outputs[j];
      if (o->dtype == TS_DTYPE_FLOAT || o->dtype == TS_DTYPE_DOUBLE) {
        if (o->rank > 1) o->rank--;
      }
      o->dtype = TS_DTYPE_INT64;
    }
  ts_log_info("ensemble %s: %d members, fuse=%s", m->config.name,
              m->config.n_members, ts_fuse_name(m->config.fuse));
  return TS_OK;
}

static int find_locked(ts_registry *r, const char *name) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->models[i]->config.name, name) == 0) return i;
  return -1;
}

int ts_registry_load(ts_registry *r, const ts_model_config *config,
                     ts_err *err) {
  ts_served_model *m = calloc(1, sizeof *m);
  if (!m) return ts_err_set(err, TS_ENOMEM, "out of memory");
  m->config = *config;
  atomic_init(&m->refs, 1);
  m->state = TS_MODEL_LOADING;
  int rc = config->is_ensemble ? load_ensemble(r, m, err)
                               : load_plain(r, m, err);
  if (rc == TS_EUNAVAILABLE && !config->is_ensemble) {
    /* Workers are missing, the model is fine: keep it, unavailable, and
     * load it when workers come (ts_registry_retry_unavailable). */
    ts_log_warn_limited("model %s is unavailable for now: %s", config->name,
                        err->msg);
    unbook(r->cluster, m);
    placement_free(m);
    m->placement = NULL;
    m->moves = NULL;
    if (m->plan) ts_plan_free(m->plan);
    m->plan = NULL;
    m->state = TS_MODEL_FAILED;
    snprintf(m->reason, sizeof m->reason, "%s", err->msg);
  } else if (rc) {
    ts_log_error("model %s failed to load: %s", config->name, err->msg);
    served_free(m);
    return rc;
  } else {
    m->state = TS_MODEL_READY;
  }
  pthread_mutex_lock(&r->mu);
  int i = find_locked(r, config->name);
  ts_served_model *old = NULL;
  if (i >= 0) {
    old = r->models[i];
    r->models[i] = m;
  } else if (r->n < TS_MAX_MODELS) {
    r->models[r->n++] = m;
  } else {
    pthread_mutex_unlock(&r->mu);
    unbook(r->cluster, m);
    served_free(m);
    return ts_err_set(err, TS_EEXHAUSTED, "more than %d models",
                      TS_MAX_MODELS);
  }
  pthread_mutex_unlock(&r->mu);
  if (old) {
    unbook(r->cluster, old);
    ts_served_model_release(old);
  }
  if (rc == TS_OK) ts_log_info("model %s is ready", config->name);
  return rc;
}

int ts_registry_top_up_replicas(ts_registry *r) {
  ts_served_model **models;
  int n, reloaded = 0;
  int want = ts_membership_live_count(r->cluster) >= 2 ? 2 : 1;
  if (ts_registry_snapshot(r, &models, &n) != TS_OK) return 0;
  pthread_mutex_lock(&r->move_mu);
  for (int i = 0; i < n; i++) {
    ts_served_model *m = models[i];
    if (m->state == TS_MODEL_READY && !m->config.is_ensemble &&
        m->config.replicas == 0 && m->n_replicas < want) {
      ts_err err = {0};
      ts_model_config config = m->config;
      if (ts_registry_load(r, &config, &err) == TS_OK) reloaded++;
    }
    ts_served_model_release(m);
  }
  pthread_mutex_unlock(&r->move_mu);
  free(models);
  return reloaded;
}

int ts_registry_retry_unavailable(ts_registry *r) {
  ts_served_model **models;
  int n, loaded = 0;
  if (ts_registry_snapshot(r, &models, &n) != TS_OK) return 0;
  pthread_mutex_lock(&r->move_mu);
  for (int i = 0; i < n; i++) {
    if (models[i]->state == TS_MODEL_FAILED) {
      ts_err err = {0};
      ts_model_config config = models[i]->config;
      loaded += ts_registry_load(r, &config, &err) == TS_OK;
    }
    ts_served_model_release(models[i]);
  }
  pthread_mutex_unlock(&r->move_mu);
  free(models);
  return loaded;
}

int ts_registry_load_by_name(ts_registry *r, const char *name, ts_err *err) {
  ts_model_config config;
  ts_served_model *known = ts_registry_acquire(r, name);
  if (r->repository[0]) {
    int rc = ts_model_repository_entry(r->repository, name, &config, err);
    if (rc) {
      if (known) ts_served_model_release(known);
      return rc;
    }
  } else if (known) {
    config = known->config;
  } else {
    return ts_err_set(err, TS_ENOTFOUND,
                      "model '%s' is unknown and no --model-repository is "
                      "configured", name);
  }
  if (known) ts_served_model_release(known);
  return ts_registry_load(r, &config, err);
}

int ts_registry_unload(ts_registry *r, const char *name, ts_err *err) {
  pthread_mutex_lock(&r->mu);
  int i = find_locked(r, name);
  if (i < 0) {
    pthread_mutex_unlock(&r->mu);
    return ts_err_set(err, TS_ENOTFOUND, "model '%s' is not loaded", name);
  }
  ts_served_model *m = r->models[i];
  r->models[i] = r->models[--r->n];
  pthread_mutex_unlock(&r->mu);
  unbook(r->cluster, m);
  ts_served_model_release(m);
  ts_log_info("model %s unloaded", name);
  return TS_OK;
}

ts_served_model *ts_registry_acquire(ts_registry *r, const char *name) {
  pthread_mutex_lock(&r->mu);
  int i = find_locked(r, name);
  ts_served_model *m = i >= 0 ? r->models[i] : NULL;
  if (m) atomic_fetch_add(&m->refs, 1);
  pthread_mutex_unlock(&r->mu);
  return m;
}

int ts_registry_snapshot(ts_registry *r, ts_served_model ***out, int *n) {
  pthread_mutex_lock(&r->mu);
  *n = r->n;
  *out = calloc((size_t)(r->n ? r->n : 1), sizeof **out);
  if (!*out) {
    pthread_mutex_unlock(&r->mu);
    *n = 0;
    return TS_ENOMEM;
  }
  for (int i = 0; i < r->n; i++) {
    (*out)[i] = r->models[i];
    atomic_fetch_add(&r->models[i]->refs, 1);
  }
  pthread_mutex_unlock(&r->mu);
  return TS_OK;
}

void ts_registry_free(ts_registry *r) {
  /* Ensembles first: they hold references to their members. */
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < r->n; i++) {
      ts_served_model *m = r->models[i];
      if (m && m->config.is_ensemble == (pass == 0)) {
        ts_served_model_release(m);
        r->models[i] = NULL;
      }
    }
  r->n = 0;
  pthread_mutex_destroy(&r->move_mu);
  pthread_mutex_destroy(&r->mu);
}

int ts_registry_resync_worker(ts_registry *r, int w, ts_err *err) {
  ts_served_model **models;
  int n, rc = TS_OK;
  if (ts_registry_snapshot(r, &models, &n) != TS_OK)
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  for (int i = 0; i < n; i++) {
    ts_served_model *m = models[i];
    for (int s = 0; rc == TS_OK && m->plan && s < m->plan->n_stages; s++) {
      const ts_stage *st = &m->plan->stages[s];
      for (int k = 0; rc == TS_OK && k < st->n_shards; k++)
        for (int j = 0; rc == TS_OK && j < m->n_replicas; j++)
          if (m->placement[s][k * m->n_replicas + j] == w)
            rc = ts_membership_upload(r->cluster, w, &st->shards[k], err);
    }
    ts_served_model_release(m);
  }
  free(models);
  return rc;
}

int ts_registry_replicas_on(ts_registry *r, int w) {
  ts_served_model **models;
  int n, count = 0;
  if (ts_registry_snapshot(r, &models, &n) != TS_OK) return 0;
  for (int i = 0; i < n; i++) {
    ts_served_model *m = models[i];
    for (int s = 0; m->plan && m->placement && s < m->plan->n_stages; s++)
      for (int j = 0; j < m->plan->stages[s].n_shards * m->n_replicas; j++)
        count += m->placement[s][j] == w;
    ts_served_model_release(m);
  }
  free(models);
  return count;
}

/* ---- re-placement ------------------------------------------------------ */

/* What a pass moves: every replica on `from` (from >= 0), or, to
 * rebalance (from < 0), every replica a fresh placement of its model puts
 * elsewhere (placement.h). */
typedef struct mover {
  int from;
} mover;

/* One replica moved: slot `slot` of stage `stage` went `from` -> `to`. */
typedef struct move {
  int stage, shard, slot, from, to;
} move;

/* A copy of plain model `m` that shares its plan, io and request counts
 * (see registry.h) with its own placement and move counts. NULL when out of memory. */
static ts_served_model *clone_placement(ts_served_model *m) {
  ts_served_model *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->config = m->config;
  atomic_init(&c->refs, 1);
  c->state = m->state;
  c->inputs = m->inputs;
  c->n_inputs = m->n_inputs;
  c->outputs = m->outputs;
  c->n_outputs = m->n_outputs;
  c->plan = m->plan;
  c->n_replicas = m->n_replicas;
  c->origin = m->origin ? m->origin : m;
  atomic_fetch_add(&c->origin->refs, 1);
  int stages = m->plan->n_stages, ok = stages > 0;
  c->placement = calloc((size_t)stages, sizeof *c->placement);
  c->moves = calloc((size_t)stages, sizeof *c->moves);
  ok = ok && c->placement && c->moves;
  for (int s = 0; ok && s < stages; s++) {
    size_t shards = (size_t)m->plan->stages[s].n_shards;
    size_t slots = shards * (size_t)m->n_replicas;
    c->placement[s] = malloc(slots * sizeof(int));
    c->moves[s] = calloc(shards, sizeof(unsigned));
    ok = c->placement[s] && c->moves[s];
    if (!ok) break;
    memcpy(c->placement[s], m->placement[s], slots * sizeof(int));
    if (m->moves) memcpy(c->moves[s], m->moves[s], shards * sizeof(unsigned));
  }
  if (ok) return c;
  served_free(c);
  return NULL;
}

static void rows_free(int **rows, int stages) {
  for (int s = 0; rows && s < stages; s++) free(rows[s]);
  free(rows);
}

/* Where a fresh placement of plain model m on the live workers puts each
 * replica (placement.h: what rebalancing moves towards), as rows
 * [stage][shard * n_replicas + r] the caller frees with rows_free; NULL
 * when too few workers have room (or out of memory). Bookings are as
 * before on return: m's own are set aside while its fresh placement is
 * chosen, so they do not push it elsewhere. */
static int **fresh_placement(ts_membership *c, ts_served_model *m) {
  int stages = m->plan->n_stages;
  if (stages <= 0) return NULL;
  int **rows = calloc((size_t)stages, sizeof *rows);
  int ok = rows != NULL;
  for (int s = 0; ok && s < stages; s++) {
    size_t slots = (size_t)m->plan->stages[s].n_shards * (size_t)m->n_replicas;
    rows[s] = malloc(slots * sizeof(int));
    ok = rows[s] != NULL;
    for (size_t i = 0; ok && i < slots; i++) rows[s][i] = -1;
  }
  if (!ok) {
    rows_free(rows, stages);
    return NULL;
  }
  book_rows(c, m, m->placement, -1);
  ts_placement_spread spread = {{0}};
  for (int s = 0; ok && s < stages; s++) {
    const ts_stage *st = &m->plan->stages[s];
    for (int k = 0; ok && k < st->n_shards; k++) {
      int *row = &rows[s][k * m->n_replicas];
      ok = ts_placement_place(c, st->shards[k].id, st->shards[k].len,
                              m->n_replicas, row, &spread) == TS_OK;
      if (!ok) /* it booked nothing of this row */
        for (int j = 0; j < m->n_replicas; j++) row[j] = -1;
    }
  }
  book_rows(c, m, rows, -1); /* what was placed; -1 slots are skipped */
  book_rows(c, m, m->placement, 1);
  if (ok) return rows;
  rows_free(rows, stages);
  return NULL;
}

/* The bytes of plain model m each worker holds. */
static void model_spread(const ts_served_model *m, ts_placement_spread *out) {
  memset(out, 0, sizeof *out);
  for (int s = 0; s < m->plan->n_stages; s++)
    for (int j = 0; j < m->plan->stages[s].n_shards * m->n_replicas; j++) {
      int w = m->placement[s][j];
      if (w >= 0 && w < TS_MAX_WORKERS)
        out->bytes[w] += m->plan->stages[s].shards[j / m->n_replicas].len;
    }
}

/* Applies `mv` to plain model `m` (referenced by the caller): chooses new
 * workers, uploads, and swaps the new placement in if `m` is still the
 * registry's. Returns the replicas moved; adds to *unplaced those `mv`
 * wanted moved but found no target for. Caller holds move_mu. */
static int move_model(ts_registry *r, ts_served_model *m, const mover *mv,
                      int *unplaced) {
  ts_membership *c = r->cluster;
  if (m->config.is_ensemble || !m->plan || !m->placement ||
      m->state != TS_MODEL_READY)
    return 0;
  int slots = 0;
  for (int s = 0; s < m->plan->n_stages; s++)
    slots += m->plan->stages[s].n_shards * m->n_replicas;
  /* Rebalancing moves rows to a fresh placement's; with none (no room),
   * nothing moves. */
  int **want = mv->from < 0 ? fresh_placement(c, m) : NULL;
  if (mv->from < 0 && !want) return 0;
  ts_served_model *next = clone_placement(m);
  move *moves = calloc((size_t)slots, sizeof *moves);
  ts_placement_move *row_moves =
      calloc((size_t)m->n_replicas, sizeof *row_moves);
  int n_moves = 0;
  if (!next || !moves || !row_moves) {
    ts_log_warn("model %s: out of memory re-placing its shards",
                m->config.name);
    if (next) served_free(next);
    free(moves);
    free(row_moves);
    rows_free(want, m->plan->n_stages);
    return 0;
  }
  ts_placement_spread spread;
  model_spread(m, &spread);
  for (int s = 0; s < m->plan->n_stages; s++) {
    const ts_stage *st = &m->plan->stages[s];
    for (int k = 0; k < st->n_shards; k++) {
      int *row = &next->placement[s][k * m->n_replicas];
      int moved =
          want ? ts_placement_move_row_to(c, row, m->n_replicas,
                                          &want[s][k * m->n_replicas],
                                          st->shards[k].len, row_moves)
               : ts_placement_move_row(c, mv->from, st->shards[k].id, row,
                                       m->n_replicas, st->shards[k].len,
                                       &spread, row_moves, unplaced);
      for (int j = 0; j < moved; j++)
        moves[n_moves++] = (move){s, k, row_moves[j].slot, row_moves[j].from,
                                  row_moves[j].to};
    }
  }
  free(row_moves);
  rows_free(want, m->plan->n_stages);
  /* Upload outside the registry mutex: requests keep being served from the
   * current placement meanwhile. A failed upload keeps the old replica. */
  int uploaded = 0;
  for (int i = 0; i < n_moves; i++) {
    move *mo = &moves[i];
    const ts_shard *sh = &m->plan->stages[mo->stage].shards[mo->shard];
    ts_err err = {0};
    if (ts_membership_upload(c, mo->to, sh, &err) != TS_OK) {
      ts_log_warn("model %s: shard %s not moved to %s: %s", m->config.name,
                  sh->label, c->workers[mo->to].address, err.msg);
      ts_placement_rebook(c, mo->to, mo->from, sh->len);
      next->placement[mo->stage][mo->shard * m->n_replicas + mo->slot] =
          mo->from;
      *unplaced += mv->from >= 0;
      mo->to = -1;
    } else {
      next->moves[mo->stage][mo->shard]++;
      uploaded++;
    }
  }
  int swapped = 0;
  if (uploaded) {
    pthread_mutex_lock(&r->mu);
    int i = find_locked(r, m->config.name);
    if (i >= 0 && r->models[i] == m) {
      r->models[i] = next;
      swapped = 1;
    }
    pthread_mutex_unlock(&r->mu);
  }
  for (int i = 0; i < n_moves; i++) {
    const move *mo = &moves[i];
    if (mo->to < 0) continue;
    const ts_shard *sh = &m->plan->stages[mo->stage].shards[mo->shard];
    if (swapped)
      ts_log_info("model %s: shard %s re-placed from %s to %s",
                  m->config.name, sh->label, c->workers[mo->from].address,
                  c->workers[mo->to].address);
    else
      ts_placement_rebook(c, mo->to, mo->from, sh->len);
  }
  free(moves);
  if (swapped) {
    ts_served_model_release(m); /* the registry's reference */
    return uploaded;
  }
  if (uploaded)
    ts_log_info("model %s was replaced while its shards moved; the moves "
                "are dropped", m->config.name);
  served_free(next);
  return 0;
}

/* Rebuilds the ensembles that still reference a member that was moved
 * (replaced in the registry since the ensemble was built). */
static void refresh_ensembles(ts_registry *r) {
  ts_served_model **models;
  int n;
  if (ts_registry_snapshot(r, &models, &n) != TS_OK) return;
  for (int i = 0; i < n; i++) {
    ts_served_model *e = models[i];
    int stale = 0;
    for (int j = 0; e->config.is_ensemble && j < e->config.n_members; j++) {
      ts_served_model *now = ts_registry_acquire(r, e->config.members[j]);
      stale |= now != e->members[j];
      ts_served_model_release(now);
    }
    if (stale) {
      ts_err err = {0};
      ts_model_config config = e->config;
      if (ts_registry_load(r, &config, &err) != TS_OK)
        ts_log_warn("ensemble %s not rebuilt on its moved members: %s",
                    config.name, err.msg);
    }
    ts_served_model_release(e);
  }
  free(models);
}

static int move_all(ts_registry *r, const mover *mv, int *unplaced) {
  ts_served_model **models;
  int n, moved = 0;
  *unplaced = 0;
  if (ts_registry_snapshot(r, &models, &n) != TS_OK) return 0;
  pthread_mutex_lock(&r->move_mu);
  for (int i = 0; i < n; i++) {
    moved += move_model(r, models[i], mv, unplaced);
    ts_served_model_release(models[i]);
  }
  if (moved) refresh_ensembles(r);
  pthread_mutex_unlock(&r->move_mu);
  free(models);
  return moved;
}

int ts_registry_move_off_worker(ts_registry *r, int w, int *left) {
  mover mv = {.from = w};
  return move_all(r, &mv, left);
}

int ts_registry_rebalance(ts_registry *r) {
  mover mv = {.from = -1};
  int unplaced, moved = 0, step;
  /* A pass leaves every row where a fresh placement puts it; a later pass
   * moves only what failed uploads or room kept back. */
  for (int pass = 0; pass < 8 && (step = move_all(r, &mv, &unplaced)) > 0;
       pass++)
    moved += step;
  return moved;
}
