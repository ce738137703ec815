/* placement.c - see placement.h. */
#include "placement.h"

int ts_placement_targets(ts_membership *c) {
  int n = 0;
  for (int i = 0; i < c->n; i++) n += ts_membership_is_target(c, i);
  return n;
}

int ts_placement_pick(ts_membership *c, const int *row, int n, size_t len,
                      unsigned long long below) {
  int best = -1;
  unsigned long long best_planned = 0;
  for (int i = 0; i < c->n; i++) {
    ts_worker *w = &c->workers[i];
    int taken = 0;
    for (int j = 0; j < n; j++) taken |= row[j] == i;
    if (taken || !ts_membership_is_target(c, i)) continue;
    unsigned long long planned = atomic_load(&w->memory_planned);
    if (planned >= below) continue;
    if (w->memory_limit && planned + len > w->memory_limit) continue;
    if (best < 0 || planned < best_planned) {
      best = i;
      best_planned = planned;
    }
  }
  return best;
}

int ts_placement_place(ts_membership *c, size_t len, int replicas, int *row) {
  for (int k = 0; k < replicas; k++) {
    row[k] = ts_placement_pick(c, row, k, len, ~0ull);
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

/* Where the replica on `worker` should go; -1 to keep it. *wanted says
 * whether it should move at all (emptying `from`: every replica on it). */
static int choose_target(ts_membership *c, int from, int worker, const int *row,
                         int n, size_t len, int *wanted) {
  *wanted = 0;
  if (from >= 0) {
    if (worker != from) return -1;
    *wanted = 1;
    return ts_placement_pick(c, row, n, len, ~0ull);
  }
  if (!ts_membership_is_target(c, worker)) return -1;
  unsigned long long planned = atomic_load(&c->workers[worker].memory_planned);
  if (planned <= len) return -1;
  return ts_placement_pick(c, row, n, len, planned - len);
}

int ts_placement_move_row(ts_membership *c, int from, int *row, int n,
                          size_t len, ts_placement_move *moved, int *unplaced) {
  int count = 0;
  for (int j = 0; j < n; j++) {
    int wanted, was = row[j];
    int to = choose_target(c, from, was, row, n, len, &wanted);
    if (to < 0) {
      *unplaced += wanted;
      continue;
    }
    ts_placement_rebook(c, was, to, len);
    row[j] = to;
    moved[count++] = (ts_placement_move){.slot = j, .from = was, .to = to};
  }
  return count;
}
