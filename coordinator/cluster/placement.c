/* placement.c - see placement.h. */
#include "placement.h"

#include <stdio.h>
#include <string.h>

#include "hash.h"

int ts_placement_targets(ts_membership *c) {
  int n = 0;
  for (int i = 0; i < c->n; i++) n += ts_membership_is_target(c, i);
  return n;
}

unsigned long long ts_placement_weight(const char *shard_id,
                                       const char *address) {
  /* SHA-256 rather than a fast hash: weights are computed only when
   * placing (never per request), and every bit of it is well mixed, so no
   * address pattern (ports in a row) skews which worker a shard prefers. */
  char key[TS_SHA256_HEX_LEN + 1 + TS_ADDR_MAX + 1];
  int len = snprintf(key, sizeof key, "%s\n%s", shard_id, address);
  char hex[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(key, len > 0 ? (size_t)len : 0, hex);
  unsigned long long w = 0;
  for (int i = 0; i < 16; i++) {
    char d = hex[i];
    w = w << 4 | (unsigned long long)(d <= '9' ? d - '0' : d - 'a' + 10);
  }
  return w;
}

/* A worker as the placement order sees it for one shard. */
typedef struct rank {
  int worker;
  unsigned long long bytes;  /* of the model it holds */
  unsigned long long weight;
} rank;

/* Whether a ranks before b: fewer bytes of the model, then higher
 * weight, then the smaller address. */
static int ranks_before(ts_membership *c, const rank *a, const rank *b) {
  if (a->bytes != b->bytes) return a->bytes < b->bytes;
  if (a->weight != b->weight) return a->weight > b->weight;
  return strcmp(c->workers[a->worker].address,
                c->workers[b->worker].address) < 0;
}

int ts_placement_pick(ts_membership *c, const char *shard_id, const int *row,
                      int n, size_t len, const ts_placement_spread *spread) {
  rank best = {.worker = -1};
  for (int i = 0; i < c->n; i++) {
    ts_worker *w = &c->workers[i];
    int taken = 0;
    for (int j = 0; j < n; j++) taken |= row[j] == i;
    if (taken || !ts_membership_is_target(c, i)) continue;
    unsigned long long planned = atomic_load(&w->memory_planned);
    if (w->memory_limit && planned + len > w->memory_limit) continue;
    rank r = {i, spread ? spread->bytes[i] : 0,
              ts_placement_weight(shard_id, w->address)};
    if (best.worker < 0 || ranks_before(c, &r, &best)) best = r;
  }
  return best.worker;
}

int ts_placement_place(ts_membership *c, const char *shard_id, size_t len,
                       int replicas, int *row, ts_placement_spread *spread) {
  for (int k = 0; k < replicas; k++) {
    row[k] = ts_placement_pick(c, shard_id, row, k, len, spread);
    if (row[k] < 0) {
      for (int j = 0; j < k; j++) {
        atomic_fetch_sub(&c->workers[row[j]].memory_planned, len);
        if (spread) spread->bytes[row[j]] -= len;
      }
      return TS_EEXHAUSTED;
    }
    atomic_fetch_add(&c->workers[row[k]].memory_planned, len);
    if (spread) spread->bytes[row[k]] += len;
  }
  return TS_OK;
}

void ts_placement_rebook(ts_membership *c, int from, int to, size_t len) {
  atomic_fetch_sub(&c->workers[from].memory_planned, len);
  atomic_fetch_add(&c->workers[to].memory_planned, len);
}

/* Moves the replica in row[slot] to `to`: rebooks and records it. */
static void move_slot(ts_membership *c, int *row, int slot, int to,
                      size_t len, ts_placement_move *moved, int *count) {
  ts_placement_rebook(c, row[slot], to, len);
  moved[(*count)++] = (ts_placement_move){.slot = slot, .from = row[slot],
                                          .to = to};
  row[slot] = to;
}

int ts_placement_move_row(ts_membership *c, int from, const char *shard_id,
                          int *row, int n, size_t len,
                          ts_placement_spread *spread,
                          ts_placement_move *moved, int *unplaced) {
  int count = 0;
  for (int j = 0; j < n; j++) {
    if (row[j] != from) continue;
    int to = ts_placement_pick(c, shard_id, row, n, len, spread);
    if (to < 0) {
      (*unplaced)++;
      continue;
    }
    if (spread) {
      spread->bytes[from] -= len;
      spread->bytes[to] += len;
    }
    move_slot(c, row, j, to, len, moved, &count);
  }
  return count;
}

static int in_row(const int *row, int n, int worker) {
  for (int j = 0; j < n; j++)
    if (row[j] == worker) return 1;
  return 0;
}

int ts_placement_move_row_to(ts_membership *c, int *row, int n,
                             const int *want, size_t len,
                             ts_placement_move *moved) {
  int count = 0;
  for (int j = 0; j < n; j++) {
    if (!ts_membership_is_target(c, row[j]) || in_row(want, n, row[j]))
      continue;
    int to = -1;
    for (int k = 0; k < n && to < 0; k++)
      if (!in_row(row, n, want[k])) to = want[k];
    if (to < 0) break;
    move_slot(c, row, j, to, len, moved, &count);
  }
  return count;
}
