/*
 * store.h - the worker's shard store: loaded model shards by SHA-256 id.
 *
 * A shard arrives as a stream of chunks (ts_store_upload_*) into one buffer
 * of its announced size, is checked against its id (the SHA-256 of its
 * bytes), parsed with ts_model_load, and then held until UnloadShard.
 *
 * Memory: every shard held, every upload in progress and every unloaded
 * shard still referenced by a run counts its serialized size against the
 * limit (0: none). The check happens when an upload begins, before its
 * buffer is allocated, so a too-large shard fails at once with
 * TS_EEXHAUSTED and nothing else is disturbed. A shard's bytes also count
 * the constants its load folded (graph.h): folding may take at most the
 * fold limit and what the memory limit leaves, checked before they are
 * allocated.
 *
 * Uploads (ts_store_limits): the announced bytes of all uploads in flight
 * together, and their number, are capped whether or not there is a memory
 * limit, so announcing sizes reserves no more than the operator allows.
 *
 * Lifetime: shards are reference counted. ts_store_acquire() gives a
 * reference that keeps the model alive even if the shard is unloaded
 * meanwhile; the last ts_store_release() frees it. All functions are
 * thread-safe (one mutex; nothing slow runs under it).
 */
#ifndef TS_WORKER_STORE_H
#define TS_WORKER_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "graph.h"
#include "hash.h"

typedef struct ts_store ts_store;

/* A held shard. The fields are read-only for users of the store; refs is
 * the store's business (guarded by its mutex). */
typedef struct ts_stored_shard {
  char id[TS_SHA256_HEX_LEN + 1];
  char label[128];          /* printable, truncated copy of the client's label */
  ts_model *model;          /* immutable; shared by all runs */
  uint64_t bytes;           /* serialized size: what counts against the limit */
  atomic_uint_fast64_t runs;
  int refs;
  bool unloaded;            /* no longer in the table */
} ts_stored_shard;

/* A snapshot of the store for Status. */
typedef struct ts_store_stats {
  uint64_t memory_used;     /* held + uploading + unloaded-but-referenced */
  uint64_t memory_limit;    /* 0: no limit */
  int shards;               /* shards in the table */
} ts_store_stats;

/* memory_limit 0 means no limit. *out is freed with ts_store_free. */
int ts_store_create(uint64_t memory_limit, ts_store **out, ts_err *err);

/* What the store takes beyond its memory limit. A new store has
 * fold_limit 0 and no upload caps. */
typedef struct ts_store_limits {
  uint64_t fold_limit;   /* bytes one shard's folded constants may take;
                            0: ts_fold_limit_default of the shard's bytes;
                            UINT64_MAX: none */
  uint64_t upload_bytes; /* announced bytes of all uploads in flight
                            together (so also of one); 0: none */
  int uploads;           /* uploads in flight at once; 0: none */
} ts_store_limits;
/* Sets the limits; before the store is shared (not thread-safe). */
void ts_store_set_limits(ts_store *st, const ts_store_limits *limits);
/* Frees the store and every shard it holds. Uploads and references must all
 * have been finished or released. */
void ts_store_free(ts_store *st);

/* TS_OK when `id` is a lowercase hex SHA-256 (64 chars); else TS_EINVAL
 * with a message naming `field` (the request field it came from). */
int ts_store_check_id(const char *field, const char *id, ts_err *err);

/* A reference to shard `id`, or NULL when it is not held. */
ts_stored_shard *ts_store_acquire(ts_store *st, const char *id);
void ts_store_release(ts_store *st, ts_stored_shard *shard);
/* Whether `id` is held or being uploaded. */
bool ts_store_has(ts_store *st, const char *id);
/* Removes `id` from the table; its memory is returned once the last run
 * using it has released it. Returns true when it was held. */
bool ts_store_unload(ts_store *st, const char *id);
void ts_store_stats_get(ts_store *st, ts_store_stats *out);
/* References to every held shard, in load order: *out is a malloc'd array
 * the caller frees after releasing each shard. */
int ts_store_list(ts_store *st, ts_stored_shard ***out, int *n, ts_err *err);

/* ---- streamed upload ------------------------------------------------ */

typedef struct ts_store_upload ts_store_upload;

/* Starts receiving shard `id` of total_bytes bytes. Past the uploads cap it
 * is TS_EEXHAUSTED. If the shard is already held the upload only counts
 * bytes, allocates nothing and finishes with the held shard (a cheap
 * success). Otherwise the bytes are reserved against the upload limit and
 * the memory limit (TS_EEXHAUSTED naming the shard, its size, the bytes in
 * use and the limit) and a buffer is allocated. TS_EINVAL on a malformed id or a
 * zero size. `label` (may be NULL) is for logs. *out must be finished with
 * ts_store_upload_finish or ts_store_upload_abort. */
int ts_store_upload_begin(ts_store *st, const char *id, uint64_t total_bytes,
                          const char *label, ts_store_upload **out,
                          ts_err *err);
/* Copies `len` bytes received at `offset`. Chunks must arrive in order,
 * contiguous and inside the announced size: a gap, an overlap or bytes past
 * the end are TS_EINVAL. */
int ts_store_upload_write(ts_store_upload *up, uint64_t offset,
                          const uint8_t *data, size_t len, ts_err *err);
/* Checks that every byte arrived and that their SHA-256 is the id
 * (TS_EINVAL otherwise), parses them with ts_model_load (its code and
 * message pass through, prefixed with the shard; folding past the fold
 * limit or the memory limit is TS_EEXHAUSTED), and holds the shard. On
 * success *out is a reference the caller releases. Slow for big shards
 * (hash + parse): call it off the RPC poller threads. Consumes `up` in every
 * case. */
int ts_store_upload_finish(ts_store_upload *up, ts_stored_shard **out,
                           ts_err *err);
/* Drops an upload (client went away, bad chunk): frees its buffer and
 * returns its reservation. */
void ts_store_upload_abort(ts_store_upload *up);
/* True when the upload is for a shard already held (no bytes are kept). */
bool ts_store_upload_is_duplicate(const ts_store_upload *up);
const char *ts_store_upload_id(const ts_store_upload *up);
uint64_t ts_store_upload_total(const ts_store_upload *up);

#endif
