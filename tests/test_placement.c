/*
 * test_placement.c - placement and re-placement decisions (placement.h) on
 * a cluster of workers that exist only in memory (no channel, no socket).
 *
 * Each rule of placement.h has its case: replicas on distinct workers,
 * fewest planned bytes first, memory limits, no target (the replica
 * stays), down and leaving workers never chosen, emptying a worker, and
 * rebalancing that moves only when the heavier worker strictly drops. A
 * randomized case compares ts_placement_pick with a naive reference written
 * here from the rules, and a simulated rebalance checks that every move
 * improves, bookings are conserved and it stops.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "placement.h"

enum { UP, DOWN, LEAVING };

/* A cluster of n workers in the given states, each with planned bytes and
 * a memory limit (0: none). Freed with free(). */
static ts_membership *cluster(int n, const int *state,
                              const unsigned long long *planned,
                              const unsigned long long *limit) {
  ts_membership *c = calloc(1, sizeof *c);
  ck_assert_ptr_nonnull(c);
  atomic_store(&c->n, n);
  for (int i = 0; i < n; i++) {
    ts_worker *w = &c->workers[i];
    w->index = i;
    int s = state ? state[i] : UP;
    atomic_store(&w->up, s != DOWN);
    atomic_store(&w->leaving, s == LEAVING);
    atomic_store(&w->memory_planned, planned ? planned[i] : 0);
    w->memory_limit = limit ? limit[i] : 0;
  }
  return c;
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

START_TEST(test_distinct_replicas_fewest_bytes_first) {
  unsigned long long start[] = {300, 100, 200, 0};
  ts_membership *c = cluster(4, NULL, start, NULL);
  int row[5];  /* room for the five replicas asked below */
  ck_assert_int_eq(ts_placement_place(c, 50, 2, row), TS_OK);
  ck_assert_int_eq(row[0], 3); /* 0 bytes */
  ck_assert_int_eq(row[1], 1); /* 100 bytes; 3 already holds one */
  ck_assert_uint_eq(planned(c, 3), 50);
  ck_assert_uint_eq(planned(c, 1), 150);
  /* Every worker once, never twice, for as many replicas as workers. */
  ck_assert_int_eq(ts_placement_place(c, 10, 4, row), TS_OK);
  assert_distinct(row, 4);
  ck_assert_uint_eq(total_planned(c), 600 + 2 * 50 + 4 * 10);
  /* A fifth replica would need a fifth worker: nothing booked. */
  unsigned long long before = total_planned(c);
  ck_assert_int_eq(ts_placement_place(c, 10, 5, row), TS_EEXHAUSTED);
  ck_assert_uint_eq(total_planned(c), before);
  free(c);
}
END_TEST

START_TEST(test_memory_limits_respected) {
  unsigned long long start[] = {0, 0, 900, 0};
  unsigned long long limit[] = {1000, 250, 1000, 0};
  ts_membership *c = cluster(4, NULL, start, limit);
  int row[2];
  /* 300 bytes fit neither worker 1 (limit 250) nor worker 2 (900 held):
   * the replicas go to 0 and 3, until 0 is full after three. */
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(ts_placement_place(c, 300, 2, row), TS_OK);
    for (int j = 0; j < 2; j++) ck_assert(row[j] == 0 || row[j] == 3);
  }
  ck_assert_uint_eq(planned(c, 0), 900);
  unsigned long long before = total_planned(c);
  ck_assert_int_eq(ts_placement_place(c, 300, 2, row), TS_EEXHAUSTED);
  ck_assert_uint_eq(total_planned(c), before);
  ck_assert_int_eq(ts_placement_place(c, 300, 1, row), TS_OK);
  ck_assert_int_eq(row[0], 3);
  for (int i = 0; i < 4; i++)
    if (limit[i]) ck_assert_uint_le(planned(c, i), limit[i]);
  /* Exactly at the limit fits; one byte over does not. */
  ts_membership *d = cluster(1, NULL, (unsigned long long[]){750},
                             (unsigned long long[]){1000});
  int one = ts_placement_pick(d, NULL, 0, 251, ~0ull);
  ck_assert_int_eq(one, -1);
  ck_assert_int_eq(ts_placement_pick(d, NULL, 0, 250, ~0ull), 0);
  free(d);
  free(c);
}
END_TEST

START_TEST(test_down_and_leaving_never_chosen) {
  int state[] = {UP, DOWN, LEAVING, UP};
  unsigned long long start[] = {500, 0, 0, 400};
  ts_membership *c = cluster(4, state, start, NULL);
  ck_assert_int_eq(ts_placement_targets(c), 2);
  int row[3];
  ck_assert_int_eq(ts_placement_place(c, 10, 2, row), TS_OK);
  ck_assert_int_eq(row[0], 3);
  ck_assert_int_eq(row[1], 0);
  unsigned long long before = total_planned(c);
  ck_assert_int_eq(ts_placement_place(c, 10, 3, row), TS_EEXHAUSTED);
  ck_assert_uint_eq(total_planned(c), before);
  /* Emptying worker 0: the only other target (3) already holds one. */
  int shard[] = {0, 3};
  ts_placement_move moved[2];
  int unplaced = 0;
  ck_assert_int_eq(ts_placement_move_row(c, 0, shard, 2, 10, moved, &unplaced),
                   0);
  ck_assert_int_eq(unplaced, 1);
  /* Rebalancing never moves a replica off a down or leaving worker, nor
   * onto one, however light. */
  int on_down[] = {1}, on_leaving[] = {2}, on_heavy[] = {0};
  atomic_store(&c->workers[1].memory_planned, 10000);
  atomic_store(&c->workers[2].memory_planned, 10000);
  unplaced = 0;
  ck_assert_int_eq(ts_placement_move_row(c, -1, on_down, 1, 10, moved,
                                         &unplaced), 0);
  ck_assert_int_eq(ts_placement_move_row(c, -1, on_leaving, 1, 10, moved,
                                         &unplaced), 0);
  atomic_store(&c->workers[1].memory_planned, 0);
  atomic_store(&c->workers[2].memory_planned, 0);
  ck_assert_int_eq(ts_placement_move_row(c, -1, on_heavy, 1, 10, moved,
                                         &unplaced), 1);
  ck_assert_int_eq(moved[0].to, 3);
  ck_assert_int_eq(unplaced, 0);
  free(c);
}
END_TEST

START_TEST(test_empty_worker_moves_its_replicas) {
  int state[] = {DOWN, UP, UP, UP};
  unsigned long long start[] = {200, 300, 100, 200};
  ts_membership *c = cluster(4, state, start, NULL);
  int row[] = {1, 0, 2};  /* a 100-byte shard with a replica on 0 */
  ts_placement_move moved[3];
  int unplaced = 0;
  ck_assert_int_eq(ts_placement_move_row(c, 0, row, 3, 100, moved, &unplaced),
                   1);
  /* Worker 3 is the only target not holding the shard. */
  ck_assert_int_eq(row[0], 1);
  ck_assert_int_eq(row[1], 3);
  ck_assert_int_eq(row[2], 2);
  ck_assert_int_eq(moved[0].slot, 1);
  ck_assert_int_eq(moved[0].from, 0);
  ck_assert_int_eq(moved[0].to, 3);
  ck_assert_int_eq(unplaced, 0);
  ck_assert_uint_eq(planned(c, 0), 100);
  ck_assert_uint_eq(planned(c, 3), 300);
  unsigned long long before = total_planned(c);
  ck_assert_uint_eq(before, 800);
  /* Another shard, on 2, 0 and 3: the only other target (1) has no room,
   * so its replica stays on 0, counted as unplaced, nothing rebooked. */
  int full[] = {2, 0, 3};
  c->workers[1].memory_limit = 350;
  before = total_planned(c);
  ck_assert_int_eq(ts_placement_move_row(c, 0, full, 3, 100, moved, &unplaced),
                   0);
  ck_assert_int_eq(unplaced, 1);
  ck_assert_int_eq(full[1], 0);
  ck_assert_uint_eq(planned(c, 0), 100);
  ck_assert_uint_eq(total_planned(c), before);
  free(c);
}
END_TEST

START_TEST(test_rebalance_only_strict_improvement) {
  ts_placement_move moved[1];
  int unplaced = 0;
  /* Equal bytes: a move would only swap who is heavier. */
  ts_membership *c = cluster(2, NULL, (unsigned long long[]){500, 500}, NULL);
  int row[] = {0};
  ck_assert_int_eq(ts_placement_move_row(c, -1, row, 1, 100, moved, &unplaced),
                   0);
  free(c);
  /* A gap of exactly the shard's bytes: after the move the other worker
   * would be as heavy as this one was; no strict improvement. */
  c = cluster(2, NULL, (unsigned long long[]){500, 400}, NULL);
  ck_assert_int_eq(ts_placement_move_row(c, -1, row, 1, 100, moved, &unplaced),
                   0);
  free(c);
  /* One byte more: the heavier of the two drops from 500 to 499. */
  c = cluster(2, NULL, (unsigned long long[]){500, 399}, NULL);
  ck_assert_int_eq(ts_placement_move_row(c, -1, row, 1, 100, moved, &unplaced),
                   1);
  ck_assert_int_eq(row[0], 1);
  ck_assert_uint_eq(planned(c, 0), 400);
  ck_assert_uint_eq(planned(c, 1), 499);
  ck_assert_int_eq(unplaced, 0);
  free(c);
  /* A worker that holds only this replica never gives it away. */
  c = cluster(2, NULL, (unsigned long long[]){100, 0}, NULL);
  row[0] = 0;
  ck_assert_int_eq(ts_placement_move_row(c, -1, row, 1, 100, moved, &unplaced),
                   0);
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
 * then the fewest planned bytes, the lowest index on ties. */
static int reference_pick(int n_workers, const int *state,
                          const unsigned long long *planned_bytes,
                          const unsigned long long *limit, const int *row,
                          int n, unsigned long long len,
                          unsigned long long below) {
  int best = -1;
  for (int i = 0; i < n_workers; i++) {
    int in_row = 0;
    for (int j = 0; j < n; j++)
      if (row[j] == i) in_row = 1;
    int eligible = state[i] == UP && !in_row && planned_bytes[i] < below &&
                   (limit[i] == 0 || planned_bytes[i] + len <= limit[i]);
    if (eligible && (best < 0 || planned_bytes[i] < planned_bytes[best]))
      best = i;
  }
  return best;
}

START_TEST(test_pick_matches_reference) {
  for (int trial = 0; trial < 5000; trial++) {
    int n = 1 + (int)rnd(12);
    int state[12], row[12];
    unsigned long long start[12], limit[12];
    for (int i = 0; i < n; i++) {
      state[i] = rnd(5) == 0 ? DOWN : rnd(6) == 0 ? LEAVING : UP;
      start[i] = rnd(8) * 100;
      limit[i] = rnd(3) == 0 ? 0 : 100 + rnd(10) * 100;
    }
    int k = (int)rnd((unsigned)n + 1);
    for (int j = 0; j < k; j++) row[j] = (int)rnd((unsigned)n);
    unsigned long long len = 1 + rnd(300);
    unsigned long long below = rnd(2) ? ~0ull : rnd(9) * 100;
    ts_membership *c = cluster(n, state, start, limit);
    int got = ts_placement_pick(c, row, k, len, below);
    int want = reference_pick(n, state, start, limit, row, k, len, below);
    ck_assert_msg(got == want, "trial %d: picked %d, the rules say %d", trial,
                  got, want);
    for (int i = 0; i < n; i++) /* picking books nothing */
      ck_assert_uint_eq(planned(c, i), start[i]);
    free(c);
  }
}
END_TEST

/* Places shards on 3 workers, adds an empty fourth, and rebalances pass
 * after pass as the registry does: every move must lower the heavier of
 * its two workers, bookings are conserved, rows stay distinct, and it
 * stops with the newcomer holding something. */
START_TEST(test_rebalance_converges) {
  enum { SHARDS = 40, REPLICAS = 2 };
  ts_membership *c = cluster(3, NULL, NULL, NULL);
  int rows[SHARDS][REPLICAS];
  size_t len[SHARDS];
  unsigned long long total = 0;
  for (int s = 0; s < SHARDS; s++) {
    len[s] = 1 + rnd(1000);
    ck_assert_int_eq(ts_placement_place(c, len[s], REPLICAS, rows[s]), TS_OK);
    total += REPLICAS * len[s];
  }
  atomic_store(&c->n, 4);
  c->workers[3].index = 3;
  atomic_store(&c->workers[3].up, 1);
  int passes = 0, moves = 0, step;
  do {
    step = 0;
    for (int s = 0; s < SHARDS; s++) {
      unsigned long long before[4];
      for (int i = 0; i < 4; i++) before[i] = planned(c, i);
      ts_placement_move moved[REPLICAS];
      int unplaced = 0;
      int n = ts_placement_move_row(c, -1, rows[s], REPLICAS, len[s], moved,
                                    &unplaced);
      ck_assert_int_eq(unplaced, 0);
      for (int m = 0; m < n; m++) {
        /* The receiver ends lighter than the giver was. */
        ck_assert_uint_lt(before[moved[m].to] + len[s],
                          before[moved[m].from]);
        before[moved[m].from] -= len[s];  /* as the next decision saw it */
        before[moved[m].to] += len[s];
      }
      assert_distinct(rows[s], REPLICAS);
      step += n;
    }
    moves += step;
    ck_assert_uint_eq(total_planned(c), total);
    ck_assert_int_lt(++passes, 100);
  } while (step > 0);
  ck_assert_int_gt(moves, 0);
  ck_assert_uint_gt(planned(c, 3), 0);
  /* Each worker's bookings are what its rows say. */
  unsigned long long held[4] = {0};
  for (int s = 0; s < SHARDS; s++)
    for (int r = 0; r < REPLICAS; r++) held[rows[s][r]] += len[s];
  for (int i = 0; i < 4; i++) ck_assert_uint_eq(held[i], planned(c, i));
  free(c);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("placement");
  TCase *tc = ts_check_tcase(s, "core", 0, NULL, NULL);
  tcase_add_test(tc, test_distinct_replicas_fewest_bytes_first);
  tcase_add_test(tc, test_memory_limits_respected);
  tcase_add_test(tc, test_down_and_leaving_never_chosen);
  tcase_add_test(tc, test_empty_worker_moves_its_replicas);
  tcase_add_test(tc, test_rebalance_only_strict_improvement);
  tcase_add_test(tc, test_pick_matches_reference);
  tcase_add_test(tc, test_rebalance_converges);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
