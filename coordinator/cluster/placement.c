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

/* Whether worker a ranks before worker b for the shard whose weights are
 * wa and wb: higher weight first, then the smaller address. */
static int ranks_before(ts_membership *c, int a, unsigned long long wa, int b,
                        unsigned long long wb) {
  if (wa != wb) return wa > wb;
  return strcmp(c->workers[a].address, c->workers[b].address) < 0;
}

int ts_placement_pick(ts_membership *c, const char *shard_id, const int *row,
                      int n, size_t len) {
  int best = -1;
  unsigned long long best_weight = 0;
  for (int i = 0; i < c->n; i++) {
    ts_worker *w = &c->workers[i];
    int taken = 0;
    for (int j = 0; j < n; j++) taken |= row[j] == i;
    if (taken || !ts_membership_is_target(c, i)) continue;
    unsigned long long planned = atomic_load(&w->memory_planned);
    if (w->memory_limit && planned + len > w->memory_limit) continue;
    unsigned long long weight = ts_placement_weight(shard_id, w->address);
    if (best < 0 || ranks_before(c, i, weight, best, best_weight)) {
      best = i;
      best_weight = weight;
    }
  }
  return best;
}

int ts_placement_place(ts_membership *c, const char *shard_id, size_t len,
                       int replicas, int *row) {
  for (int k = 0; k < replicas; k++) {
    row[k] = ts_placement_pick(c, shard_id, row, k, len);
    if (row[k] < 0) {
      for (int j = 0; j < k; j++)
        atomic_fetch_sub(&c->workers[row[j]].memory_planned, len);
      return TS_EEXHAUSTED;
    }
    atomic_fetch_add(&c->workers[row[k]].memory_planned, len);
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

/* Rebalancing one row: while the best target outside the row outranks the
 * row's lowest-ranked replica on a target, that replica moves there. The
 * replica moved in outranks every target left outside, so no slot moves
 * twice: at most n moves (moved[] has room for n). */
static int rebalance_row(ts_membership *c, const char *shard_id, int *row,
                         int n, size_t len, ts_placement_move *moved) {
  int count = 0;
  while (count < n) {
    int to = ts_placement_pick(c, shard_id, row, n, len);
    if (to < 0) break;
    unsigned long long to_weight =
        ts_placement_weight(shard_id, c->workers[to].address);
    int worst = -1;
    unsigned long long worst_weight = 0;
    for (int j = 0; j < n; j++) {
      if (!ts_membership_is_target(c, row[j])) continue;
      unsigned long long w =
          ts_placement_weight(shard_id, c->workers[row[j]].address);
      if (worst < 0 || ranks_before(c, row[worst], worst_weight, row[j], w)) {
        worst = j;
        worst_weight = w;
      }
    }
    if (worst < 0 || !ranks_before(c, to, to_weight, row[worst], worst_weight))
      break;
    move_slot(c, row, worst, to, len, moved, &count);
  }
  return count;
}

int ts_placement_move_row(ts_membership *c, int from, const char *shard_id,
                          int *row, int n, size_t len,
                          ts_placement_move *moved, int *unplaced) {
  if (from < 0) return rebalance_row(c, shard_id, row, n, len, moved);
  int count = 0;
  for (int j = 0; j < n; j++) {
    if (row[j] != from) continue;
    int to = ts_placement_pick(c, shard_id, row, n, len);
    if (to < 0) {
      (*unplaced)++;
      continue;
    }
    move_slot(c, row, j, to, len, moved, &count);
  }
  return count;
}
