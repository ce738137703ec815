/*
 * test_membership.c - the workers a coordinator knows
 * (coordinator/membership.c), against fake_worker.h's worker served
 * in-process.
 *
 * Checked: a worker's capacity comes from its Status; an unreachable one is
 * added as DOWN; find and the live count; the state names and placement
 * targets of UP, LEAVING, LEFT and DOWN; the prober's health of a serving,
 * a stopping and an unreachable worker in one round; a shard upload in
 * 1 MiB chunks (contiguous, size and label on the first), and none when
 * the worker already holds it; a probe of a worker that went away; a
 * registration (join) takes a slot only from a worker that answers.
 */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "fake_worker.h"
#include "membership.h"

static ts_membership members;

static void setup(void) {
  fake_worker_start();
  ts_err err;
  ck_assert_int_eq(ts_membership_init(&members, NULL, &err), TS_OK);
}

static void teardown(void) {
  ts_membership_free(&members);
  fake_worker_stop();
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(add_reads_status) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_worker *w = &members.workers[0];
  ck_assert_int_eq(atomic_load(&w->up), 1);
  ck_assert_int_eq(w->threads, 3);
  ck_assert_uint_eq(w->memory_limit, 123456789);
  ck_assert_str_eq(w->blas_core, "FakeCore");
  ck_assert_int_eq(ts_membership_find(&members, fake_address), 0);
  ck_assert_int_eq(ts_membership_find(&members, dead_address), -1);
  ck_assert_int_eq(ts_membership_live_count(&members), 1);
}
END_TEST

START_TEST(unreachable_is_added_down) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ck_assert_int_eq(ts_membership_add(&members, dead_address, &err), TS_OK);
  ck_assert_int_eq(atomic_load(&members.n), 2);
  ck_assert_int_eq(atomic_load(&members.workers[1].up), 0);
  ck_assert_int_eq(members.workers[1].threads, 1);
  ck_assert_str_eq(ts_membership_state_name(&members, 1), "DOWN");
  ck_assert(!ts_membership_is_target(&members, 1));
  ck_assert_int_eq(ts_membership_find(&members, dead_address), 1);
  ck_assert_int_eq(ts_membership_live_count(&members), 1);
}
END_TEST

START_TEST(states) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_worker *w = &members.workers[0];
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "UP");
  ck_assert(ts_membership_is_target(&members, 0));
  atomic_store(&w->leaving, 1);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "LEAVING");
  ck_assert(!ts_membership_is_target(&members, 0));
  atomic_store(&w->up, 0);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "LEFT");
  ck_assert(!ts_membership_is_target(&members, 0));
  atomic_store(&w->leaving, 0);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "DOWN");
  /* A probe that answers brings it back. */
  ck_assert_int_eq(ts_membership_probe(&members, 0, 5000, &err), TS_OK);
  ck_assert_str_eq(ts_membership_state_name(&members, 0), "UP");
}
END_TEST

START_TEST(health_of_every_worker_in_one_round) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ck_assert_int_eq(ts_membership_add(&members, dead_address, &err), TS_OK);
  ts_health out[TS_MAX_WORKERS];
  ck_assert_int_eq(ts_membership_check_health_all(&members, 2000, 5000, out),
                   2);
  ck_assert_int_eq(out[0], TS_HEALTH_SERVING);
  ck_assert_int_eq(out[1], TS_HEALTH_UNREACHABLE);
  ts_rpc_server_set_serving(fake, 0);
  ck_assert_int_eq(ts_membership_check_health_all(&members, 2000, 5000, out),
                   2);
  ck_assert_int_eq(out[0], TS_HEALTH_NOT_SERVING);
}
END_TEST

START_TEST(upload_in_chunks_unless_held) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_shard shard;
  memset(&shard, 0, sizeof shard);
  snprintf(shard.id, sizeof shard.id, "%064d", 7);
  snprintf(shard.label, sizeof shard.label, "m/s0/k1");
  shard.len = (5u << 20) / 2; /* 2.5 MiB: three chunks */
  shard.bytes = malloc(shard.len);
  ck_assert_ptr_nonnull(shard.bytes);
  for (size_t i = 0; i < shard.len; i++) shard.bytes[i] = (uint8_t)(i * 7);
  ck_assert_int_eq(ts_membership_upload(&members, 0, &shard, &err), TS_OK);
  ck_assert_int_eq(load_calls, 1);
  ck_assert_int_eq(chunks, 3);
  ck_assert(chunks_ok);
  ck_assert_uint_eq(announced, shard.len);
  ck_assert_uint_eq(received_len, shard.len);
  ck_assert(memcmp(received, shard.bytes, shard.len) == 0);
  ck_assert_str_eq(label, "m/s0/k1");
  has_shard_answer = 1;
  ck_assert_int_eq(ts_membership_upload(&members, 0, &shard, &err), TS_OK);
  ck_assert_int_eq(load_calls, 1); /* held: nothing sent */
  free(shard.bytes);
}
END_TEST

START_TEST(probe_of_a_worker_gone) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, fake_address, &err), TS_OK);
  ts_rpc_server_stop(fake, 1000);
  fake = NULL;
  ck_assert_int_ne(ts_membership_probe(&members, 0, 2000, &err), TS_OK);
  ck_assert_ptr_nonnull(strstr(err.msg, fake_address));
  ck_assert_int_eq(atomic_load(&members.workers[0].up), 0);
  ck_assert_int_eq(ts_membership_live_count(&members), 0);
}
END_TEST

/* A registration takes a slot only once the worker answered its Status: a
 * dead address is UNAVAILABLE and holds none, however often it comes; a
 * live one joins UP; the same address again is known, not a new slot; an
 * address that is not HOST:PORT is refused before any dial. */
START_TEST(join_needs_a_healthy_worker) {
  ts_err err = {0};
  int index = -2, known = -1;
  for (int i = 0; i < TS_MAX_WORKERS + 20; i++) {
    ck_assert_int_eq(ts_membership_join(&members, dead_address, &index, &known,
                                        &err), TS_EUNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(err.msg, "not registered"));
    ck_assert_ptr_nonnull(strstr(err.msg, dead_address));
  }
  ck_assert_int_eq(atomic_load(&members.n), 0);
  ck_assert_int_eq(ts_membership_join(&members, fake_address, &index, &known,
                                      &err), TS_OK);
  ck_assert_int_eq(index, 0);
  ck_assert_int_eq(known, 0);
  ck_assert_int_eq(atomic_load(&members.workers[0].up), 1);
  ck_assert_int_eq(members.workers[0].threads, 3);
  ck_assert_str_eq(members.workers[0].blas_core, "FakeCore");
  ck_assert_int_eq(ts_membership_join(&members, fake_address, &index, &known,
                                      &err), TS_OK);
  ck_assert_int_eq(index, 0);
  ck_assert_int_eq(known, 1);
  ck_assert_int_eq(atomic_load(&members.n), 1);
  ck_assert_int_eq(ts_membership_join(&members, "unix:/tmp/x", &index, &known,
                                      &err), TS_EINVAL);
  ck_assert_int_eq(ts_membership_add(&members, "h\n:1", &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "'h\\x0a:1'"));
  ck_assert_int_eq(atomic_load(&members.n), 1);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "membership", 60, setup, teardown, add_reads_status,
                unreachable_is_added_down, states,
                health_of_every_worker_in_one_round,
                upload_in_chunks_unless_held, probe_of_a_worker_gone,
                join_needs_a_healthy_worker);
}

const ts_check_suite ts_check_this_suite = {.name = "membership",
                                            .cases = cases};
