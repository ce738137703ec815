/*
 * store.c - shard table, memory accounting and streamed uploads.
 *
 * Invariants (under st->mu):
 *  - table[0..n) holds one reference to each held shard, in load order, and
 *    no id twice;
 *  - used == sum of bytes of shards alive (held, or unloaded but still
 *    referenced) + sum of total_bytes of non-duplicate uploads in progress;
 *    an upload's reservation becomes its shard's bytes when it is held;
 *    a shard's bytes are its serialized size plus the constants its load
 *    folded, added when it is held;
 *  - used <= limit whenever limit != 0, because every reservation is
 *    checked before it is made;
 *  - uploading == sum of total_bytes of non-duplicate uploads in progress
 *    <= upload_limit, and n_uploads == the length of the uploads list <=
 *    max_uploads (when those are set);
 *  - uploads is the list of uploads in progress, so HasShard can answer
 *    "being loaded" and a finishing duplicate can be detected.
 * The mutex is never held across hashing, parsing or freeing a model.
 *
 * Memory: while a shard loads its bytes are held twice (parsing copies the
 * weights out of the upload buffer: protobuf-c owns its bytes fields). Two
 * things make sure that ends when the load does. The upload buffer is an
 * anonymous mapping, unmapped once the shard is parsed, so it goes back to
 * the system whatever glibc's dynamic mmap threshold would have made of a
 * malloc'd block of tens of MB; and the heap is trimmed after every shard
 * loaded or freed (return_free_memory). Measured on 4 workers holding 42 MB
 * of shards each (tests/python/test_memory.py, 12 workers per variant):
 * resident memory above an idle worker once loaded was 68-93 MB with a
 * malloc'd buffer and no trim, 50-68 with the mapping alone, 56-86 with the
 * trim alone, 47-54 with both.
 */
#include "store.h"

#include <ctype.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"

struct ts_store {
  pthread_mutex_t mu;
  uint64_t limit;
  uint64_t used;
  ts_store_limits limits; /* set before the store is shared */
  uint64_t uploading;
  int n_uploads;
  ts_stored_shard **table;
  int n, cap;
  ts_store_upload *uploads;
};

struct ts_store_upload {
  ts_store *st;
  ts_store_upload *next;  /* in st->uploads */
  char id[TS_SHA256_HEX_LEN + 1];
  char label[128];
  uint64_t total;
  uint64_t received;
  uint8_t *buf;           /* total bytes, mapped; NULL for a duplicate */
  ts_stored_shard *held;  /* duplicate: a reference to the held shard */
};

/* "1.2 MB": decimal units, for logs and messages. */
static const char *human_bytes(uint64_t n, char *buf, size_t size) {
  static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = (double)n;
  int u = 0;
  while (v >= 1000.0 && u < 4) {
    v /= 1000.0;
    u++;
  }
  if (u == 0)
    snprintf(buf, size, "%llu B", (unsigned long long)n);
  else
    snprintf(buf, size, "%.1f %s", v, units[u]);
  return buf;
}

/* Hands the heap's free pages back to the system after a shard is loaded or
 * freed: receiving a shard leaves megabytes of freed chunk copies (gRPC's
 * slices, the unpacked chunk messages) that glibc would otherwise keep in
 * the worker's resident memory. Once per shard; measured 0.01-3.4 ms. */
static void return_free_memory(void) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

/* Copies a client-supplied label for logs: printable ASCII only, truncated. */
static void copy_label(char *dst, size_t size, const char *src) {
  size_t i = 0;
  for (; src && src[i] && i + 1 < size; i++)
    dst[i] = isprint((unsigned char)src[i]) ? src[i] : '?';
  dst[i] = '\0';
}

/* First 8 hex digits of an id, for log lines. */
static const char *short_id(const char *id, char buf[12]) {
  snprintf(buf, 12, "%.8s..", id);
  return buf;
}

static bool id_valid(const char *id) {
  if (!id) return false;
  for (int i = 0; i < TS_SHA256_HEX_LEN; i++) {
    char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return id[TS_SHA256_HEX_LEN] == '\0';
}

int ts_store_check_id(const char *field, const char *id, ts_err *err) {
  if (id_valid(id)) return TS_OK;
  return ts_err_set(err, TS_EINVAL,
                    "%s '%.80s' is not a lowercase hex SHA-256 (64 "
                    "characters)", field, id ? id : "");
}

int ts_store_create(uint64_t memory_limit, ts_store **out, ts_err *err) {
  ts_store *st = calloc(1, sizeof *st);
  if (!st) return ts_err_set(err, TS_ENOMEM, "cannot allocate the shard store");
  pthread_mutex_init(&st->mu, NULL);
  st->limit = memory_limit;
  *out = st;
  return TS_OK;
}

void ts_store_set_limits(ts_store *st, const ts_store_limits *limits) {
  st->limits = *limits;
}

static void shard_destroy(ts_stored_shard *sh) {
  ts_model_free(sh->model);
  free(sh);
}

void ts_store_free(ts_store *st) {
  if (!st) return;
  TS_ASSERT(st->uploads == NULL);
  for (int i = 0; i < st->n; i++) {
    TS_ASSERT(st->table[i]->refs == 1);
    shard_destroy(st->table[i]);
  }
  free(st->table);
  pthread_mutex_destroy(&st->mu);
  free(st);
}

/* Index of `id` in the table, or -1. Caller holds st->mu. */
static int find_locked(const ts_store *st, const char *id) {
  for (int i = 0; i < st->n; i++)
    if (strcmp(st->table[i]->id, id) == 0) return i;
  return -1;
}

ts_stored_shard *ts_store_acquire(ts_store *st, const char *id) {
  if (!id) return NULL;
  pthread_mutex_lock(&st->mu);
  int i = find_locked(st, id);
  ts_stored_shard *sh = i >= 0 ? st->table[i] : NULL;
  if (sh) sh->refs++;
  pthread_mutex_unlock(&st->mu);
  return sh;
}

void ts_store_release(ts_store *st, ts_stored_shard *sh) {
  if (!sh) return;
  pthread_mutex_lock(&st->mu);
  TS_ASSERT(sh->refs > 0);
  int last = --sh->refs == 0;
  if (last) {
    TS_ASSERT(sh->unloaded);
    st->used -= sh->bytes;
  }
  pthread_mutex_unlock(&st->mu);
  if (last) {
    char sid[12], size[32];
    ts_log_info("freed shard %s '%s': %s", short_id(sh->id, sid), sh->label,
                human_bytes(sh->bytes, size, sizeof size));
    shard_destroy(sh);
    return_free_memory();
  }
}

bool ts_store_has(ts_store *st, const char *id) {
  if (!id) return false;
  pthread_mutex_lock(&st->mu);
  bool found = find_locked(st, id) >= 0;
  for (ts_store_upload *up = st->uploads; up && !found; up = up->next)
    found = strcmp(up->id, id) == 0;
  pthread_mutex_unlock(&st->mu);
  return found;
}

bool ts_store_unload(ts_store *st, const char *id) {
  if (!id) return false;
  pthread_mutex_lock(&st->mu);
  int i = find_locked(st, id);
  ts_stored_shard *sh = NULL;
  if (i >= 0) {
    sh = st->table[i];
    memmove(&st->table[i], &st->table[i + 1],
            (size_t)(st->n - i - 1) * sizeof st->table[0]);
    st->n--;
    sh->unloaded = true;
  }
  pthread_mutex_unlock(&st->mu);
  if (!sh) return false;
  char sid[12];
  ts_log_info("unloaded shard %s '%s'%s", short_id(sh->id, sid), sh->label,
              sh->refs > 1 ? " (freed when its runs finish)" : "");
  ts_store_release(st, sh); /* the table's reference */
  return true;
}

void ts_store_stats_get(ts_store *st, ts_store_stats *out) {
  pthread_mutex_lock(&st->mu);
  out->memory_used = st->used;
  out->memory_limit = st->limit;
  out->shards = st->n;
  pthread_mutex_unlock(&st->mu);
}

int ts_store_list(ts_store *st, ts_stored_shard ***out, int *n, ts_err *err) {
  pthread_mutex_lock(&st->mu);
  ts_stored_shard **list = malloc(((size_t)st->n + 1) * sizeof *list);
  if (!list) {
    pthread_mutex_unlock(&st->mu);
    return ts_err_set(err, TS_ENOMEM, "cannot list %d shards", st->n);
  }
  for (int i = 0; i < st->n; i++) {
    list[i] = st->table[i];
    list[i]->refs++;
  }
  *n = st->n;
  pthread_mutex_unlock(&st->mu);
  *out = list;
  return TS_OK;
}

/* Adds sh (one reference, the table's) to the table. Caller holds st->mu
 * and has checked the id is absent. */
static int insert_locked(ts_store *st, ts_stored_shard *sh) {
  if (st->n == st->cap) {
    int cap = st->cap ? st->cap * 2 : 16;
    ts_stored_shard **t = realloc(st->table, (size_t)cap * sizeof *t);
    if (!t) return TS_ENOMEM;
    st->table = t;
    st->cap = cap;
  }
  st->table[st->n++] = sh;
  return TS_OK;
}

/* ---- uploads ---------------------------------------------------------- */

static void unlink_upload_locked(ts_store *st, ts_store_upload *up) {
  for (ts_store_upload **p = &st->uploads; *p; p = &(*p)->next)
    if (*p == up) {
      *p = up->next;
      st->n_uploads--;
      if (!up->held) st->uploading -= up->total;
      return;
    }
}

/* Why an upload of total_bytes may not begin (TS_EEXHAUSTED, with err
 * set), or TS_OK. Caller holds st->mu; `duplicate`: the shard is held, so
 * the upload reserves nothing. */
static int upload_refusal_locked(const ts_store *st, const ts_store_upload *up,
                                 bool duplicate, ts_err *err) {
  char need[32], in_use[32], lim[32];
  const ts_store_limits *l = &st->limits;
  if (l->uploads && st->n_uploads >= l->uploads)
    return ts_err_set(err, TS_EEXHAUSTED,
                      "shard %.8s.. '%s': %d uploads are in progress, the "
                      "most this worker takes at once (--max-uploads)",
                      up->id, up->label, st->n_uploads);
  if (duplicate) return TS_OK;
  if (l->upload_bytes && (st->uploading > l->upload_bytes ||
                          up->total > l->upload_bytes - st->uploading))
    return ts_err_set(
        err, TS_EEXHAUSTED,
        "shard %.8s.. '%s' announces %llu bytes (%s) but %llu bytes (%s) of "
        "uploads in flight already count against the worker's upload limit "
        "of %llu bytes (%s, --upload-limit)", up->id, up->label,
        (unsigned long long)up->total, human_bytes(up->total, need, sizeof need),
        (unsigned long long)st->uploading,
        human_bytes(st->uploading, in_use, sizeof in_use),
        (unsigned long long)l->upload_bytes,
        human_bytes(l->upload_bytes, lim, sizeof lim));
  if (st->limit && (st->used > st->limit || up->total > st->limit - st->used))
    return ts_err_set(
        err, TS_EEXHAUSTED,
        "shard %.8s.. '%s' needs %llu bytes (%s) but %llu bytes (%s) of the "
        "worker's memory limit of %llu bytes (%s) are in use", up->id,
        up->label, (unsigned long long)up->total,
        human_bytes(up->total, need, sizeof need),
        (unsigned long long)st->used, human_bytes(st->used, in_use, sizeof in_use),
        (unsigned long long)st->limit, human_bytes(st->limit, lim, sizeof lim));
  return TS_OK;
}

int ts_store_upload_begin(ts_store *st, const char *id, uint64_t total_bytes,
                          const char *label, ts_store_upload **out,
                          ts_err *err) {
  *out = NULL;
  int rc = ts_store_check_id("shard_id", id, err);
  if (rc) return rc;
  if (total_bytes == 0)
    return ts_err_set(err, TS_EINVAL,
                      "shard %.8s..: total_bytes is 0 (the first chunk must "
                      "announce the shard's size)", id);
  if (total_bytes > (uint64_t)SIZE_MAX / 2)
    return ts_err_set(err, TS_EINVAL, "shard %.8s..: total_bytes %llu is not "
                      "addressable", id, (unsigned long long)total_bytes);
  ts_store_upload *up = calloc(1, sizeof *up);
  if (!up) return ts_err_set(err, TS_ENOMEM, "cannot allocate an upload");
  up->st = st;
  memcpy(up->id, id, sizeof up->id);
  copy_label(up->label, sizeof up->label, label);
  up->total = total_bytes;

  pthread_mutex_lock(&st->mu);
  int i = find_locked(st, id);
  if ((rc = upload_refusal_locked(st, up, i >= 0, err)) != TS_OK) {
    pthread_mutex_unlock(&st->mu);
    free(up);
    return rc;
  }
  if (i >= 0) {
    up->held = st->table[i];
    up->held->refs++;
  } else {
    st->used += total_bytes; /* reserved before the allocation below */
    st->uploading += total_bytes;
  }
  up->next = st->uploads;
  st->uploads = up;
  st->n_uploads++;
  pthread_mutex_unlock(&st->mu);

  if (!up->held) {
    void *map = mmap(NULL, (size_t)total_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    up->buf = map == MAP_FAILED ? NULL : map;
    if (!up->buf) {
      ts_store_upload_abort(up);
      char need[32];
      return ts_err_set(err, TS_ENOMEM,
                        "shard %.8s..: cannot allocate %llu bytes (%s)", id,
                        (unsigned long long)total_bytes,
                        human_bytes(total_bytes, need, sizeof need));
    }
  }
  *out = up;
  return TS_OK;
}

int ts_store_upload_write(ts_store_upload *up, uint64_t offset,
                          const uint8_t *data, size_t len, ts_err *err) {
  if (offset > up->received)
    return ts_err_set(err, TS_EINVAL,
                      "shard %.8s..: chunk at offset %llu leaves a gap: "
                      "expected offset %llu (chunks must arrive in order)",
                      up->id, (unsigned long long)offset,
                      (unsigned long long)up->received);
  if (offset < up->received)
    return ts_err_set(err, TS_EINVAL,
                      "shard %.8s..: chunk at offset %llu overlaps the %llu "
                      "bytes already received", up->id,
                      (unsigned long long)offset,
                      (unsigned long long)up->received);
  if (len > up->total - up->received)
    return ts_err_set(err, TS_EINVAL,
                      "shard %.8s..: chunk of %zu bytes at offset %llu runs "
                      "past total_bytes %llu", up->id, len,
                      (unsigned long long)offset,
                      (unsigned long long)up->total);
  if (up->buf && len) memcpy(up->buf + up->received, data, len);
  up->received += len;
  return TS_OK;
}

static void unmap_bytes(void *bytes, size_t len, void *ctx) {
  (void)ctx;
  munmap(bytes, len);
}

/* Frees an upload's buffer and unlinks it; returns its reservation unless
 * `keep_bytes` (its bytes now belong to a held shard). */
static void upload_end(ts_store_upload *up, bool keep_bytes) {
  ts_store *st = up->st;
  if (up->buf) munmap(up->buf, (size_t)up->total);
  up->buf = NULL;
  pthread_mutex_lock(&st->mu);
  unlink_upload_locked(st, up);
  if (!up->held && !keep_bytes) st->used -= up->total;
  pthread_mutex_unlock(&st->mu);
}

void ts_store_upload_abort(ts_store_upload *up) {
  if (!up) return;
  upload_end(up, false);
  if (up->held) ts_store_release(up->st, up->held);
  free(up);
}

bool ts_store_upload_is_duplicate(const ts_store_upload *up) {
  return up->held != NULL;
}

const char *ts_store_upload_id(const ts_store_upload *up) { return up->id; }

uint64_t ts_store_upload_total(const ts_store_upload *up) { return up->total; }

/* Finish for a shard that was already held when the upload began: hand out
 * the reference taken then, putting the shard back in the table if it was
 * unloaded meanwhile (its bytes are still accounted: it was referenced). */
static int finish_duplicate(ts_store_upload *up, ts_stored_shard **out) {
  ts_store *st = up->st;
  ts_stored_shard *sh = up->held;
  pthread_mutex_lock(&st->mu);
  unlink_upload_locked(st, up);
  if (sh->unloaded && find_locked(st, sh->id) < 0 &&
      insert_locked(st, sh) == TS_OK) {
    sh->unloaded = false;
    sh->refs++; /* the table's reference again */
  }
  pthread_mutex_unlock(&st->mu);
  free(up);
  *out = sh;
  return TS_OK;
}

/* The fold limit of a shard of shard_bytes bytes whose reservation is
 * made: the store's fold limit (or the engine's default), and no more than
 * the memory limit leaves. `why` says which it is, for the message. */
static size_t fold_budget(ts_store *st, uint64_t shard_bytes, char *why,
                          size_t size) {
  uint64_t cap = st->limits.fold_limit;
  if (cap == UINT64_MAX)
    snprintf(why, size, "no fold limit");
  else if (cap)
    snprintf(why, size, "fold limit: --fold-limit");
  else {
    cap = ts_fold_limit_default(shard_bytes > SIZE_MAX ? SIZE_MAX
                                                       : (size_t)shard_bytes);
    snprintf(why, size, "fold limit: max(%zu MiB, %d x the shard's %llu "
             "bytes)", TS_FOLD_LIMIT_MIN >> 20, TS_FOLD_LIMIT_FACTOR,
             (unsigned long long)shard_bytes);
  }
  pthread_mutex_lock(&st->mu);
  uint64_t left = !st->limit ? UINT64_MAX
                  : st->used < st->limit ? st->limit - st->used : 0;
  uint64_t used = st->used, limit = st->limit;
  pthread_mutex_unlock(&st->mu);
  if (left < cap) {
    cap = left;
    snprintf(why, size, "fold limit: what the memory limit of %llu bytes "
             "leaves beside %llu bytes in use", (unsigned long long)limit,
             (unsigned long long)used);
  }
  return cap > SIZE_MAX ? SIZE_MAX : (size_t)cap;
}

int ts_store_upload_finish(ts_store_upload *up, ts_stored_shard **out,
                           ts_err *err) {
  *out = NULL;
  ts_store *st = up->st;
  int rc;
  if (up->received != up->total) {
    rc = ts_err_set(err, TS_EINVAL,
                    "shard %.8s..: stream ended after %llu of %llu bytes "
                    "(total_bytes)", up->id,
                    (unsigned long long)up->received,
                    (unsigned long long)up->total);
    ts_store_upload_abort(up);
    return rc;
  }
  if (up->held) return finish_duplicate(up, out);

  char digest[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(up->buf, (size_t)up->total, digest);
  if (strcmp(digest, up->id) != 0) {
    rc = ts_err_set(err, TS_EINVAL,
                    "shard_id %s does not match the SHA-256 of the %llu bytes "
                    "received (%s)", up->id, (unsigned long long)up->total,
                    digest);
    ts_store_upload_abort(up);
    return rc;
  }

  ts_stored_shard *sh = calloc(1, sizeof *sh);
  if (!sh) {
    ts_store_upload_abort(up);
    return ts_err_set(err, TS_ENOMEM, "cannot allocate a shard");
  }
  /* The model adopts the received bytes (its weights stay where they
   * arrived: the shard is held once, never twice) and unmaps them when it
   * is freed, also when the load fails. */
  uint8_t *bytes = up->buf;
  up->buf = NULL;
  char why[160];
  ts_load_opts opts = {.fold_limit = fold_budget(st, up->total, why,
                                                 sizeof why)};
  rc = ts_model_load_adopt_opts(bytes, (size_t)up->total, unmap_bytes, NULL,
                                &opts, &sh->model, err);
  /* Constant weights in the kernels' layout, once, before the first run;
   * a weight only its product reads is not kept twice (graph.h). */
  if (rc == TS_OK && (rc = ts_model_prepack(sh->model, err)) != TS_OK) {
    ts_model_free(sh->model);
    sh->model = NULL;
  }
  if (rc) {
    if (rc == TS_EEXHAUSTED)
      ts_err_prefix(err, "shard %.8s.. '%s' (%s)", up->id, up->label, why);
    else
      ts_err_prefix(err, "shard %.8s.. '%s'", up->id, up->label);
    free(sh);
    ts_store_upload_abort(up);
    return rc;
  }
  memcpy(sh->id, up->id, sizeof sh->id);
  memcpy(sh->label, up->label, sizeof sh->label);
  uint64_t folded = sh->model->folded_bytes;
  sh->bytes = up->total + folded;
  atomic_init(&sh->runs, 0);
  sh->refs = 2; /* the table's and the caller's */

  ts_stored_shard *existing = NULL;
  pthread_mutex_lock(&st->mu);
  int i = find_locked(st, sh->id);
  if (i >= 0) {
    /* A concurrent upload of the same bytes finished first: keep that one
     * and let our reservation go. */
    existing = st->table[i];
    existing->refs++;
  } else if (st->limit && (st->used > st->limit ||
                           folded > st->limit - st->used)) {
    /* Other uploads took what the fold budget counted on meanwhile. */
    uint64_t used = st->used;
    pthread_mutex_unlock(&st->mu);
    ts_model_free(sh->model);
    free(sh);
    rc = ts_err_set(err, TS_EEXHAUSTED,
                    "shard %.8s.. '%s': its load folded %llu bytes of "
                    "constants but %llu bytes of the worker's memory limit "
                    "of %llu bytes are in use", up->id, up->label,
                    (unsigned long long)folded, (unsigned long long)used,
                    (unsigned long long)st->limit);
    ts_store_upload_abort(up);
    return rc;
  } else if (insert_locked(st, sh) != TS_OK) {
    pthread_mutex_unlock(&st->mu);
    ts_model_free(sh->model);
    free(sh);
    ts_store_upload_abort(up);
    return ts_err_set(err, TS_ENOMEM, "cannot grow the shard table");
  } else {
    st->used += folded;
  }
  pthread_mutex_unlock(&st->mu);
  upload_end(up, existing == NULL);

  if (existing) {
    ts_model_free(sh->model);
    free(sh);
    sh = existing;
  } else {
    char sid[12], size[32];
    ts_log_info("loaded shard %s '%s': %s, %d nodes", short_id(sh->id, sid),
                sh->label, human_bytes(sh->bytes, size, sizeof size),
                sh->model->graph.n_nodes);
  }
  free(up);
  return_free_memory();
  *out = sh;
  return TS_OK;
}
