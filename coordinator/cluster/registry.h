/*
 * registry.h - the models a coordinator serves, and where their shards live.
 *
 * Loading a model: read and check the ONNX file (ts_model_load), compile it
 * into a plan (ts_plan_build), place every shard on `replicas` distinct live
 * workers with room (the model's bytes spread evenly, ties by each
 * shard's rendezvous order: placement.h, so coordinators sharing workers
 * agree; --memory-limit respected),
 * upload the shards (skipped where a worker already holds the same bytes),
 * and publish the model as READY. An ensemble's members must be loaded
 * first; its inputs are its first member's, checked against the others.
 *
 * Lifetime: a served model is reference-counted. Requests hold a reference
 * (ts_registry_acquire / ts_served_model_release), so unloading or
 * replacing a model never frees state under a request in flight.
 *
 * A model that cannot be placed for lack of live workers is kept, FAILED
 * with its reason (requests get UNAVAILABLE), and loaded again when
 * workers come (ts_registry_retry_unavailable); a bad model file is an
 * error instead.
 *
 * Re-placement: a placement is never edited in place (requests in flight
 * index into it). Moving replicas (off a dead or leaving worker, or onto
 * a returning one) builds a copy of the served model that shares the
 * original's plan and tensor info (it references the original, `origin`),
 * uploads the shards to their new workers, and swaps the copy into the
 * registry under the mutex only if the model was not replaced meanwhile.
 * Requests holding the old copy finish on it: its workers still hold the
 * shards (nothing is unloaded), or are down and routed around. Moves are
 * serialized by `move_mu`; ensembles that reference a moved member are
 * rebuilt on the new one.
 */
#ifndef TS_REGISTRY_H
#define TS_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>

#include "config.h"
#include "graph.h"
#include "membership.h"
#include "plan.h"

#define TS_MAX_MODELS 256

typedef enum {
  TS_MODEL_LOADING,
  TS_MODEL_READY,
  TS_MODEL_FAILED,
} ts_model_state;

/* A tensor as a client sees it: name, dtype, dims (-1 = any). */
typedef struct ts_io_info {
  char *name;
  ts_dtype dtype;
  int rank;
  int64_t dims[TS_MAX_RANK];
} ts_io_info;

typedef struct ts_served_model {
  ts_model_config config;
  atomic_int refs;
  ts_model_state state;
  char reason[TS_ERR_MSG_MAX];   /* why FAILED */
  ts_io_info *inputs;
  int n_inputs;
  ts_io_info *outputs;
  int n_outputs;
  ts_plan *plan;                 /* NULL for ensembles */
  int n_replicas;                /* per shard */
  int **placement;               /* [stage][shard * n_replicas + r] = worker */
  struct ts_served_model *members[TS_ENSEMBLE_MAX]; /* ensembles; referenced */
  struct ts_served_model *origin; /* owns plan and io of a re-placed copy;
                                     referenced; NULL when this is it */
  unsigned **moves;              /* [stage][shard] replicas re-placed since
                                    load; NULL when none ever moved */
  atomic_ullong requests;        /* counted on the origin: ts_served_counts */
  atomic_ullong failures;
} ts_served_model;

typedef struct ts_registry {
  pthread_mutex_t mu;
  pthread_mutex_t move_mu;       /* one re-placement / top-up at a time */
  ts_served_model *models[TS_MAX_MODELS];
  int n;
  ts_membership *cluster;
  char repository[PATH_MAX];     /* "" when none */
  size_t fold_limit;             /* bytes a model's load may fold
                                    (graph.h); 0: the engine's default;
                                    SIZE_MAX: none. Set after init */
} ts_registry;

void ts_registry_init(ts_registry *r, ts_membership *cluster,
                      const char *repository);
/* Loads (or replaces) a model synchronously. Errors name the file, node or
 * worker at fault: TS_EINVAL/TS_EUNSUPPORTED (bad model), TS_ENOTFOUND
 * (missing file or ensemble member), TS_EUNAVAILABLE (too few live
 * workers), TS_EEXHAUSTED (no room). */
int ts_registry_load(ts_registry *r, const ts_model_config *config,
                     ts_err *err);
/* Loads NAME from the repository (DIR/NAME), or reloads a known model. */
int ts_registry_load_by_name(ts_registry *r, const char *name, ts_err *err);
/* Removes a model; requests in flight finish on their reference. */
int ts_registry_unload(ts_registry *r, const char *name, ts_err *err);
/* A referenced model, or NULL when no model has that name. */
ts_served_model *ts_registry_acquire(ts_registry *r, const char *name);
void ts_served_model_release(ts_served_model *m);
/* Snapshot of all models (referenced; release each, free the array). */
int ts_registry_snapshot(ts_registry *r, ts_served_model ***out, int *n);
/* Frees every model (at shutdown, with no request in flight). */
void ts_registry_free(ts_registry *r);

/* The replicas (worker indices) of shard k of stage s. */
static inline const int *ts_served_model_replicas(const ts_served_model *m,
                                                  int stage, int shard) {
  return &m->placement[stage][shard * m->n_replicas];
}

/* The copy that counts the model's requests and failures: its origin,
 * shared by every re-placed copy, so that requests still starting on a
 * replaced copy are counted with the others. */
static inline ts_served_model *ts_served_counts(ts_served_model *m) {
  return m->origin ? m->origin : m;
}



/* Retries loading the models left unavailable for lack of workers;
 * returns how many became ready. */
int ts_registry_retry_unavailable(ts_registry *r);

/* Re-plans models whose replica count was left to Tessera (replicas=0)
 * and is below min(2, live workers), e.g. after a worker joined; the new
 * placement replaces the old one atomically. Returns how many moved. */
int ts_registry_top_up_replicas(ts_registry *r);

/* Makes sure worker `w` holds every shard placed on it (after it came back
 * up, possibly restarted and empty). Returns the first upload error. */
int ts_registry_resync_worker(ts_registry *r, int w, ts_err *err);

/* How many shard replicas (of all models) are placed on worker `w`. */
int ts_registry_replicas_on(ts_registry *r, int w);

/* Re-places every shard replica on worker `w` (down past its grace, or
 * leaving) on another placement target (ts_membership_is_target) that holds
 * no replica of that shard and has room under its memory limit, the first
 * by the placement order (placement.h); uploads it and swaps the new
 * placement in. Returns the number of replicas moved; *left gets the
 * number still on `w` for want of a worker with room (retry when
 * membership changes). */
int ts_registry_move_off_worker(ts_registry *r, int w, int *left);

/* Gives returning and new workers shards: moves every row of every model
 * to where a fresh placement on the live workers puts it (placement.h),
 * replicas already there staying. Returns the number of replicas moved. */
int ts_registry_rebalance(ts_registry *r);

#endif
