/*
 * test_scheduler.c - which replica serves a shard call
 * (coordinator/scheduler.c): over a membership table filled in here (no
 * channels, no prober), the pick is always a live, non-excluded replica;
 * -1 when there is none; round-robin visits every candidate in turn; power
 * of two choices never takes the more loaded of two candidates, weighs
 * outstanding calls by threads, and over many picks sends a loaded worker
 * less than an idle one.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "scheduler.h"

static ts_membership *members;

/* 8 workers, all up, one thread each, nothing outstanding. */
static void setup(void) {
  members = calloc(1, sizeof *members);
  ck_assert_ptr_nonnull(members);
  for (int i = 0; i < 8; i++) {
    members->workers[i].index = i;
    members->workers[i].threads = 1;
    atomic_store(&members->workers[i].up, 1);
  }
  atomic_store(&members->n, 8);
}

static void teardown(void) { free(members); }

static void set_load(int worker, int outstanding, int threads) {
  atomic_store(&members->workers[worker].outstanding, outstanding);
  members->workers[worker].threads = threads;
}

START_TEST(only_live_and_not_excluded) {
  const int replicas[4] = {3, 1, 6, 2};
  for (int policy = TS_SCHED_P2C; policy <= TS_SCHED_ROUND_ROBIN; policy++) {
    atomic_store(&members->workers[1].up, 0);
    for (int k = 0; k < 200; k++) {
      /* Position 0 excluded (it failed this request), worker 1 down. */
      int pos = ts_sched_pick(members, replicas, 4, 1u << 0, policy);
      ck_assert_msg(pos == 2 || pos == 3, "policy %d picked %d", policy, pos);
    }
    atomic_store(&members->workers[6].up, 0);
    atomic_store(&members->workers[2].up, 0);
    ck_assert_int_eq(ts_sched_pick(members, replicas, 4, 0, policy), 0);
    ck_assert_int_eq(ts_sched_pick(members, replicas, 4, 1u << 0, policy), -1);
    ck_assert_int_eq(ts_sched_pick(members, replicas, 0, 0, policy), -1);
    for (int w = 0; w < 8; w++) atomic_store(&members->workers[w].up, 1);
  }
}
END_TEST

START_TEST(round_robin_visits_each_in_turn) {
  const int replicas[3] = {0, 4, 5};
  int seen[3] = {0, 0, 0};
  int first = ts_sched_pick(members, replicas, 3, 0, TS_SCHED_ROUND_ROBIN);
  ck_assert_int_ge(first, 0);
  seen[first]++;
  for (int k = 1; k < 30; k++) {
    int pos = ts_sched_pick(members, replicas, 3, 0, TS_SCHED_ROUND_ROBIN);
    ck_assert_int_eq(pos, (first + k) % 3);
    seen[pos]++;
  }
  for (int i = 0; i < 3; i++) ck_assert_int_eq(seen[i], 10);
}
END_TEST

/* With two candidates both are sampled: the less loaded per thread wins,
 * every time. (outstanding + 1) / threads: 3 calls on 4 threads (1.0)
 * beats 1 call on 1 thread (2.0). */
START_TEST(p2c_takes_the_less_loaded_of_two) {
  const int replicas[2] = {2, 5};
  set_load(2, 5, 1);
  for (int k = 0; k < 100; k++)
    ck_assert_int_eq(ts_sched_pick(members, replicas, 2, 0, TS_SCHED_P2C), 1);
  set_load(2, 3, 4);
  set_load(5, 1, 1);
  for (int k = 0; k < 100; k++)
    ck_assert_int_eq(ts_sched_pick(members, replicas, 2, 0, TS_SCHED_P2C), 0);
}
END_TEST

/* Among 4 replicas, one with a deep queue is the worse of any pair it is
 * sampled in, so it is never picked; the other three share the calls
 * (about 1000 each of 3000). */
START_TEST(p2c_spreads_over_the_idle) {
  const int replicas[4] = {0, 1, 2, 3};
  set_load(3, 50, 1);
  int count[4] = {0, 0, 0, 0};
  for (int k = 0; k < 3000; k++) {
    int pos = ts_sched_pick(members, replicas, 4, 0, TS_SCHED_P2C);
    ck_assert(pos >= 0 && pos < 4);
    count[pos]++;
  }
  ck_assert_int_eq(count[3], 0);
  for (int i = 0; i < 3; i++)
    ck_assert_msg(count[i] > 500, "replica %d got %d of 3000", i, count[i]);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("scheduler");
  TCase *tc = ts_check_tcase(s, "pick", 0, setup, teardown);
  tcase_add_test(tc, only_live_and_not_excluded);
  tcase_add_test(tc, round_robin_visits_each_in_turn);
  tcase_add_test(tc, p2c_takes_the_less_loaded_of_two);
  tcase_add_test(tc, p2c_spreads_over_the_idle);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
