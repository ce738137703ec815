/*
 * test_placement.c - placement and re-placement decisions (placement.h) on
 * a cluster of workers that exist only in memory (no channel, no socket).
 *
 * Each rule of placement.h has its case: rendezvous weights (checked
 * against SHA-256 values computed by Python's hashlib), replicas on
 * distinct workers in falling weight, the same choice whatever order the
 * workers joined in (two coordinators agree), memory limits (a full worker
 * is skipped, the next taken), no target (the replica stays), down and
 * leaving workers never chosen, a model's replicas spread over distinct
 * workers, emptying a worker, and moving a row to a fresh placement's. A
 * randomized case compares ts_placement_pick with a naive reference
 * written here from the rules.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "placement.h"

enum { UP, DOWN, LEAVING };

/* A cluster of n workers in the given states, each with planned bytes, a
 * memory limit (0: none) and the address "10.0.0.<id>:8001" where id is
 * ids[i] (i when ids is NULL). Freed with free(). */
static ts_membership *cluster_with(int n, const int *state,
                                   const unsigned long long *planned,
                                   const unsigned long long *limit,
                                   const int *ids) {
  ts_membership *c = calloc(1, sizeof *c);
  ck_assert_ptr_nonnull(c);
  atomic_store(&c->n, n);
  for (int i = 0; i < n; i++) {
    ts_worker *w = &c->workers[i];
    w->index = i;
    snprintf(w->address, sizeof w->address, "10.0.0.%d:8001",
             ids ? ids[i] : i);
    int s = state ? state[i] : UP;
    atomic_store(&w->up, s != DOWN);
    atomic_store(&w->leaving, s == LEAVING);
    atomic_store(&w->memory_planned, planned ? planned[i] : 0);
    w->memory_limit = limit ? limit[i] : 0;
  }
  return c;
}

static ts_membership *cluster(int n, const int *state,
                              const unsigned long long *planned,
                              const unsigned long long *limit) {
  return cluster_with(n, state, planned, limit, NULL);
}

static unsigned long long planned(ts_membership *c, int i) {
  return atomic_load(&c->workers[i].memory_planned);
}

static unsigned long long total_planned(ts_membership *c) {
  unsigned long long sum = 0;
  for (int i = 0; i < c->n; i++) sum += planned(c, i);
  return sum;
}

static void assert_distinct(const int *row, int n) {
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++) ck_assert_int_ne(row[i], row[j]);
}

static unsigned long long weight(ts_membership *c, const char *id, int i) {
  return ts_placement_weight(id, c->workers[i].address);
}

/* The workers of c in the shard's rendezvous order, by a plain sort (ties
 * by address), into order[0..n). */
static void rendezvous_order(ts_membership *c, const char *id, int *order) {
  int n = c->n;
  for (int i = 0; i < n; i++) order[i] = i;
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++) {
      unsigned long long wi = weight(c, id, order[i]),
                         wj = weight(c, id, order[j]);
      int swap = wj > wi ||
                 (wj == wi && strcmp(c->workers[order[j]].address,
                                     c->workers[order[i]].address) < 0);
      if (swap) {
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
    }
}

START_TEST(test_weight_is_sha256_of_id_and_address) {
  /* python3: hashlib.sha256(b"abc\n10.0.0.1:8001").hexdigest()[:16] */
  ck_assert_uint_eq(ts_placement_weight("abc", "10.0.0.1:8001"),
                    0xa8257f7cf21369dbull);
  char id[65];
  memset(id, 'a', 64);
  id[64] = '\0';
  ck_assert_uint_eq(ts_placement_weight(id, "w:1"), 0x533507aaac2a006eull);
}
END_TEST

START_TEST(test_distinct_replicas_in_rendezvous_order) {
  /* Planned bytes play no part: only the weights order the workers. */
  unsigned long long start[] = {300, 100, 200, 0};
  ts_membership *c = cluster(4, NULL, start, NULL);
  int order[4], row[5]; /* room for the five replicas asked below */
  rendezvous_order(c, "shard-a", order);
  ck_assert_int_eq(ts_placement_place(c, "shard-a", 50, 2, row, NULL), TS_OK);
  ck_assert_int_eq(row[0], order[0]);
  ck_assert_int_eq(row[1], order[1]);
  ck_assert_uint_eq(planned(c, order[0]), start[order[0]] + 50);
  ck_assert_uint_eq(planned(c, order[1]), start[order[1]] + 50);
  /* Every worker once, never twice, for as many replicas as workers. */
  ck_assert_int_eq(ts_placement_place(c, "shard-b", 10, 4, row, NULL), TS_OK);
  assert_distinct(row, 4);
  rendezvous_order(c, "shard-b", order);
  for (int k = 0; k < 4; k++) ck_assert_int_eq(row[k], order[k]);
  ck_assert_uint_eq(total_planned(c), 600 + 2 * 50 + 4 * 10);
  /* A fifth replica would need a fifth worker: nothing booked. */
  unsigned long long before = total_planned(c);
  ck_assert_int_eq(ts_placement_place(c, "shard-c", 10, 5, row, NULL),
                   TS_EEXHAUSTED);
  ck_assert_uint_eq(total_planned(c), before);
  free(c);
}
END_TEST

/* Two coordinators that learnt the same workers in different orders (so
 * with other indices) place every shard on the same addresses, and a
 * shard's different ids spread over the workers. */
START_TEST(test_same_choice_whatever_the_join_order) {
  enum { N = 7, SHARDS = 200 };
  int forward[N], backward[N];
  for (int i = 0; i < N; i++) {
    forward[i] = i + 1;
    backward[i] = N - i;
  }
  int state_a[N] = {UP}, state_b[N];
  state_a[2] = DOWN; /* worker 10.0.0.3 down for both */
  for (int i = 0; i < N; i++) state_b[N - 1 - i] = state_a[i];
  ts_membership *a = cluster_with(N, state_a, NULL, NULL, forward);
  ts_membership *b = cluster_with(N, state_b, NULL, NULL, backward);
  int first[N] = {0};
  for (int s = 0; s < SHARDS; s++) {
    char id[16];
    snprintf(id, sizeof id, "shard-%d", s);
    int ra[3], rb[3];
    ck_assert_int_eq(ts_placement_place(a, id, 1, 3, ra, NULL), TS_OK);
    ck_assert_int_eq(ts_placement_place(b, id, 1, 3, rb, NULL), TS_OK);
    for (int k = 0; k < 3; k++) {
      ck_assert_str_eq(a->workers[ra[k]].address, b->workers[rb[k]].address);
      ck_assert_str_ne(a->workers[ra[k]].address, "10.0.0.3:8001");
    }
    first[ra[0]]++;
  }
  /* Each of the 6 live workers is first choice for some of the 200. */
  for (int i = 0; i < N; i++)
    if (i != 2) ck_assert_int_gt(first[i], 0);
  free(a);
  free(b);
}
END_TEST

START_TEST(test_memory_limits_respected) {
  /* The shard's preferred worker has no room: it is skipped and the next
   * in the order taken; exactly at the limit fits. */
  ts_membership *c = cluster(4, NULL, NULL, NULL);
  int order[4], row[2];
  rendezvous_order(c, "big", order);
  c->workers[order[0]].memory_limit = 299;
  c->workers[order[2]].memory_limit = 300;
  ck_assert_int_eq(ts_placement_place(c, "big", 300, 2, row, NULL), TS_OK);
  ck_assert_int_eq(row[0], order[1]);
  ck_assert_int_eq(row[1], order[2]);
  ck_assert_uint_eq(planned(c, order[0]), 0);
  /* order[2] is now full: the next replica goes to order[3]. */
  ck_assert_int_eq(ts_placement_pick(c, "big", row, 1, 300, NULL), order[3]);
  /* Nothing fits anywhere but order[3] and order[1]: a third is refused,
   * with nothing booked. */
  unsigned long long before = total_planned(c);
  int three[3];
  c->workers[order[1]].memory_limit = 600;
  ck_assert_int_eq(ts_placement_place(c, "big", 300, 3, three, NULL), TS_EEXHAUSTED);
  ck_assert_uint_eq(total_planned(c), before);
  ck_assert_int_eq(ts_placement_place(c, "big", 300, 2, three, NULL), TS_OK);
  ck_assert_int_eq(three[0], order[1]);
  ck_assert_int_eq(three[1], order[3]);
  for (int i = 0; i < 4; i++)
    if (c->workers[i].memory_limit)
      ck_assert_uint_le(planned(c, i), c->workers[i].memory_limit);
  free(c);
}
END_TEST

START_TEST(test_down_and_leaving_never_chosen) {
  int state[] = {UP, DOWN, LEAVING, UP};
  ts_membership *c = cluster(4, state, NULL, NULL);
  ck_assert_int_eq(ts_placement_targets(c), 2);
  int row[3];
  ck_assert_int_eq(ts_placement_place(c, "s", 10, 2, row, NULL), TS_OK);
  ck_assert(row[0] == 0 || row[0] == 3);
  ck_assert(row[1] == 0 || row[1] == 3);
  assert_distinct(row, 2);
  unsigned long long before = total_planned(c);
  ck_assert_int_eq(ts_placement_place(c, "s", 10, 3, row, NULL),
                   TS_EEXHAUSTED);
  ck_assert_uint_eq(total_planned(c), before);
  /* Emptying worker 0: the only other target (3) already holds one. */
  int shard[] = {0, 3};
  ts_placement_move moved[2];
  int unplaced = 0;
  ck_assert_int_eq(ts_placement_move_row(c, 0, "s", shard, 2, 10, NULL, moved,
                                         &unplaced), 0);
  ck_assert_int_eq(unplaced, 1);
  ck_assert_int_eq(shard[0], 0);
  /* Rebalancing never moves a replica off a down or leaving worker. */
  int on_down[] = {1}, on_leaving[] = {2}, want[] = {3};
  ck_assert_int_eq(ts_placement_move_row_to(c, on_down, 1, want, 10, moved), 0);
  ck_assert_int_eq(ts_placement_move_row_to(c, on_leaving, 1, want, 10, moved),
                   0);
  ck_assert_int_eq(on_down[0], 1);
  ck_assert_int_eq(on_leaving[0], 2);
  free(c);
}
END_TEST

START_TEST(test_empty_worker_moves_its_replicas) {
  int state[] = {DOWN, UP, UP, UP, UP};
  ts_membership *c = cluster(5, state, (unsigned long long[]){100, 100, 0,
                                                              100, 0}, NULL);
  int order[5];
  rendezvous_order(c, "s", order);
  /* A 100-byte shard on 1, 0 and 3: 0's replica goes to the better of 2
   * and 4 for this shard. */
  int row[] = {1, 0, 3};
  int want = -1;
  for (int k = 0; k < 5 && want < 0; k++)
    if (order[k] == 2 || order[k] == 4) want = order[k];
  ts_placement_move moved[4];
  int unplaced = 0;
  ck_assert_int_eq(ts_placement_move_row(c, 0, "s", row, 3, 100, NULL, moved,
                                         &unplaced), 1);
  ck_assert_int_eq(row[0], 1);
  ck_assert_int_eq(row[1], want);
  ck_assert_int_eq(row[2], 3);
  ck_assert_int_eq(moved[0].slot, 1);
  ck_assert_int_eq(moved[0].from, 0);
  ck_assert_int_eq(moved[0].to, want);
  ck_assert_int_eq(unplaced, 0);
  ck_assert_uint_eq(planned(c, 0), 0);
  ck_assert_uint_eq(planned(c, want), 100);
  ck_assert_uint_eq(total_planned(c), 300);
  /* The model's bytes count before the weights: with `want` holding 200
   * bytes of the model and the other none, the other is chosen and the
   * bytes follow the move. */
  int other = want == 2 ? 4 : 2;
  ts_placement_spread spread = {{0}};
  spread.bytes[want] = 200;
  spread.bytes[0] = 100;
  int again[] = {1, 0, 3};
  atomic_store(&c->workers[0].memory_planned, 100);
  ck_assert_int_eq(ts_placement_move_row(c, 0, "s", again, 3, 100, &spread,
                                         moved, &unplaced), 1);
  ck_assert_int_eq(again[1], other);
  ck_assert_uint_eq(spread.bytes[0], 0);
  ck_assert_uint_eq(spread.bytes[other], 100);
  /* The other has no room: a replica on 0 stays, counted as unplaced,
   * nothing rebooked. */
  c->workers[other].memory_limit = 50;
  int full[] = {want, 0, 1, 3};
  atomic_store(&c->workers[0].memory_planned, 100);
  atomic_store(&c->workers[other].memory_planned, 0);
  unsigned long long total = total_planned(c);
  ck_assert_int_eq(ts_placement_move_row(c, 0, "s", full, 4, 100, NULL, moved,
                                         &unplaced), 0);
  ck_assert_int_eq(unplaced, 1);
  ck_assert_int_eq(full[1], 0);
  ck_assert_uint_eq(total_planned(c), total);
  free(c);
}
END_TEST

/* A row moves to the fresh placement's workers: replicas already there
 * stay in their slots, the others take the missing workers. */
START_TEST(test_move_row_to_fresh_row) {
  ts_membership *c = cluster(4, NULL, (unsigned long long[]){10, 10, 0, 0},
                             NULL);
  ts_placement_move moved[2];
  int same[] = {0, 1}, swapped[] = {1, 0};
  ck_assert_int_eq(ts_placement_move_row_to(c, same, 2, swapped, 10, moved), 0);
  int row[] = {0, 1}, want[] = {2, 1};
  ck_assert_int_eq(ts_placement_move_row_to(c, row, 2, want, 10, moved), 1);
  ck_assert_int_eq(row[0], 2);
  ck_assert_int_eq(row[1], 1);
  ck_assert_int_eq(moved[0].slot, 0);
  ck_assert_int_eq(moved[0].from, 0);
  ck_assert_int_eq(moved[0].to, 2);
  ck_assert_uint_eq(planned(c, 0), 0);
  ck_assert_uint_eq(planned(c, 2), 10);
  int both[] = {2, 1}, other[] = {3, 0};
  ck_assert_int_eq(ts_placement_move_row_to(c, both, 2, other, 10, moved), 2);
  ck_assert(both[0] == 3 || both[0] == 0);
  ck_assert(both[1] == 3 || both[1] == 0);
  assert_distinct(both, 2);
  ck_assert_uint_eq(total_planned(c), 20);
  free(c);
}
END_TEST

static uint64_t rng = 0x2545f4914f6cdd1dull;
static unsigned rnd(unsigned n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned)(rng % n);
}

/* The rules of placement.h, written out naively: the eligible workers,
 * then the fewest bytes of the model, then the highest weight (the
 * smaller address on ties). */
static int reference_pick(ts_membership *c, const int *state,
                          const unsigned long long *planned_bytes,
                          const unsigned long long *limit, const int *row,
                          int n, unsigned long long len, const char *id,
                          const unsigned long long *bytes) {
  int order[12];
  rendezvous_order(c, id, order);
  int best = -1;
  for (int k = 0; k < c->n; k++) {
    int i = order[k], in_row = 0;
    for (int j = 0; j < n; j++)
      if (row[j] == i) in_row = 1;
    if (state[i] == UP && !in_row &&
        (limit[i] == 0 || planned_bytes[i] + len <= limit[i]) &&
        (best < 0 || bytes[i] < bytes[best]))
      best = i;
  }
  return best;
}

START_TEST(test_pick_matches_reference) {
  for (int trial = 0; trial < 3000; trial++) {
    int n = 1 + (int)rnd(12);
    int state[12], row[12];
    unsigned long long start[12], limit[12];
    ts_placement_spread spread = {{0}};
    for (int i = 0; i < n; i++) {
      state[i] = rnd(5) == 0 ? DOWN : rnd(6) == 0 ? LEAVING : UP;
      start[i] = rnd(8) * 100;
      limit[i] = rnd(3) == 0 ? 0 : 100 + rnd(10) * 100;
      spread.bytes[i] = rnd(3) * 100;
    }
    int k = (int)rnd((unsigned)n + 1);
    for (int j = 0; j < k; j++) row[j] = (int)rnd((unsigned)n);
    unsigned long long len = 1 + rnd(300);
    char id[16];
    snprintf(id, sizeof id, "t%d", trial);
    ts_membership *c = cluster(n, state, start, limit);
    int got = ts_placement_pick(c, id, row, k, len, &spread);
    int want = reference_pick(c, state, start, limit, row, k, len, id,
                              spread.bytes);
    ck_assert_msg(got == want, "trial %d: picked %d, the rules say %d", trial,
                  got, want);
    for (int i = 0; i < n; i++) /* picking books nothing */
      ck_assert_uint_eq(planned(c, i), start[i]);
    free(c);
  }
}
END_TEST

/* A model's replicas spread evenly: 4 tensor shards on 4 workers, one
 * each; 4 shards x 2 replicas on 4 workers, two each; 10 shards x 2
 * replicas on 4 workers, 5 each; and shards of unequal sizes (60 and 20
 * bytes, four of each) share their bytes evenly, one of each per worker.
 * The same on a cluster that learnt the workers in another order. */
START_TEST(test_model_spreads_evenly) {
  static const struct { int shards, replicas, each; } cases[] = {
      {4, 1, 1}, {4, 2, 2}, {10, 2, 5}};
  int ids[4] = {3, 2, 1, 0};
  for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
    ts_membership *a = cluster(4, NULL, NULL, NULL);
    ts_membership *b = cluster_with(4, NULL, NULL, NULL, ids);
    ts_placement_spread sa = {{0}}, sb = {{0}};
    for (int k = 0; k < cases[t].shards; k++) {
      char id[16];
      snprintf(id, sizeof id, "m%zu-%d", t, k);
      int ra[4], rb[4];
      ck_assert_int_eq(ts_placement_place(a, id, 10, cases[t].replicas, ra,
                                          &sa), TS_OK);
      ck_assert_int_eq(ts_placement_place(b, id, 10, cases[t].replicas, rb,
                                          &sb), TS_OK);
      for (int r = 0; r < cases[t].replicas; r++)
        ck_assert_str_eq(a->workers[ra[r]].address, b->workers[rb[r]].address);
    }
    for (int i = 0; i < 4; i++) {
      ck_assert_uint_eq(sa.bytes[i], 10ull * (unsigned)cases[t].each);
      ck_assert_uint_eq(planned(a, i), 10ull * (unsigned)cases[t].each);
    }
    free(a);
    free(b);
  }
  ts_membership *c = cluster(4, NULL, NULL, NULL);
  ts_placement_spread spread = {{0}};
  for (int k = 0; k < 8; k++) {
    char id[16];
    snprintf(id, sizeof id, "u%d", k);
    int row[1];
    ck_assert_int_eq(ts_placement_place(c, id, k < 4 ? 60 : 20, 1, row,
                                        &spread), TS_OK);
  }
  for (int i = 0; i < 4; i++) ck_assert_uint_eq(spread.bytes[i], 80);
  free(c);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(
      s, "core", 0, NULL, NULL, test_weight_is_sha256_of_id_and_address,
      test_distinct_replicas_in_rendezvous_order,
      test_same_choice_whatever_the_join_order, test_memory_limits_respected,
      test_down_and_leaving_never_chosen,
      test_empty_worker_moves_its_replicas, test_move_row_to_fresh_row,
      test_pick_matches_reference, test_model_spreads_evenly);
}

const ts_check_suite ts_check_this_suite = {.name = "placement",
                                            .cases = cases};
