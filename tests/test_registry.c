/*
 * test_registry.c - the coordinator's served models
 * (coordinator/registry.c) over a real membership table whose workers are
 * fake_worker.h's in-process worker: a model file is loaded, planned
 * (strategy=data), placed and uploaded; its inputs and outputs come from the
 * graph.
 *
 * Checked: a load places every replica on a live worker and uploads it;
 * replicas=0 means min(2, live); a load that lacks workers keeps the model,
 * unavailable with the reason, and ts_registry_retry_unavailable loads it
 * once they are there; a missing file is TS_ENOTFOUND naming it and leaves
 * nothing; no live worker is TS_EUNAVAILABLE; unload (a reference outlives
 * it); the repository (DIR/NAME/model.onnx) and its bad names.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "fake_worker.h"
#include "kernel_check.h"
#include "registry.h"

static ts_membership members;
static ts_registry registry;
static char repo[64]; /* a repository holding model "m" */
static char model_path[128];

/* Writes a one-node model (Relu over float [N, 4]) to repo/m/model.onnx. */
static void write_model(void) {
  ts_check_tmpdir(repo, sizeof repo, "ts_registry");
  char dir[96];
  snprintf(dir, sizeof dir, "%s/m", repo);
  ck_assert_int_eq(mkdir(dir, 0700), 0);
  snprintf(model_path, sizeof model_path, "%s/model.onnx", dir);
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, 4});
  kc_model_node(m, "Relu", "", "relu", "x", "y");
  kc_model_output(m, "y", TS_DTYPE_FLOAT, -1, NULL);
  size_t len;
  uint8_t *bytes = kc_model_pack(m, &len);
  kc_model_free(m);
  FILE *f = fopen(model_path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
  fclose(f);
  free(bytes);
}

static void setup(void) {
  fake_worker_start();
  ts_err err;
  ck_assert_int_eq(ts_membership_init(&members, NULL, &err), TS_OK);
  write_model();
  ts_registry_init(&registry, &members, "");
}

static void teardown(void) {
  ts_registry_free(&registry);
  ts_membership_free(&members);
  fake_worker_stop();
  ts_check_rmtree(repo);
}

static void add_worker(const char *address) {
  ts_err err;
  ck_assert_int_eq(ts_membership_add(&members, address, &err), TS_OK);
}

/* Loads model_path as `name` with `replicas`; returns the code. */
static int load(const char *name, int replicas, ts_err *err) {
  ts_model_config c;
  ts_model_config_init(&c, name, model_path);
  c.replicas = replicas;
  return ts_registry_load(&registry, &c, err);
}

/* One worker (the fake), model "m" loaded with `replicas`: a reference. */
static ts_served_model *load_ready(int replicas) {
  add_worker(fake_address);
  ts_err err;
  ck_assert_msg(load("m", replicas, &err) == TS_OK, "%s", err.msg);
  ts_served_model *m = ts_registry_acquire(&registry, "m");
  ck_assert_ptr_nonnull(m);
  ck_assert_int_eq(m->state, TS_MODEL_READY);
  return m;
}

/* Expects loading `path` as `name` to fail with `code`, naming `needle`. */
static void expect_load_fails(const char *name, const char *path, int replicas,
                              int code, const char *needle) {
  ts_err err;
  ts_model_config c;
  ts_model_config_init(&c, name, path);
  c.replicas = replicas;
  ck_assert_int_eq(ts_registry_load(&registry, &c, &err), code);
  ck_assert_msg(strstr(err.msg, needle), "'%s' not in '%s'", needle, err.msg);
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(load_places_and_uploads) {
  ts_served_model *m = load_ready(1);
  ck_assert_int_eq(m->n_inputs, 1);
  ck_assert_str_eq(m->inputs[0].name, "x");
  ck_assert_int_eq(m->inputs[0].rank, 2);
  ck_assert_int_lt(m->inputs[0].dims[0], 0); /* the batch stays dynamic */
  ck_assert_int_eq(m->inputs[0].dims[1], 4);
  ck_assert_int_eq(m->n_outputs, 1);
  ck_assert_str_eq(m->outputs[0].name, "y");
  ck_assert_int_eq(m->n_replicas, 1);
  ck_assert_int_eq(m->plan->n_stages, 1);
  ck_assert_int_eq(ts_served_model_replicas(m, 0, 0)[0], 0);
  /* The shard went to the worker, whole and in order. */
  const ts_shard *sh = &m->plan->stages[0].shards[0];
  ck_assert_int_eq(load_calls, 1);
  ck_assert(chunks_ok);
  ck_assert_uint_eq(received_len, sh->len);
  ck_assert(memcmp(received, sh->bytes, sh->len) == 0);
  ck_assert_int_eq(ts_registry_replicas_on(&registry, 0), 1);
  ts_served_model_release(m);
  ts_served_model **all;
  int n;
  ck_assert_int_eq(ts_registry_snapshot(&registry, &all, &n), TS_OK);
  ck_assert_int_eq(n, 1);
  ts_served_model_release(all[0]);
  free(all);
}
END_TEST

START_TEST(auto_replicas) {
  ts_served_model *m = load_ready(0);
  ck_assert_int_eq(m->n_replicas, 1); /* min(2, one live worker) */
  ts_served_model_release(m);
}
END_TEST

/* Too few workers: the model is kept, unavailable, until they come. */
START_TEST(unavailable_then_retried) {
  add_worker(fake_address);
  expect_load_fails("m", model_path, 2, TS_EUNAVAILABLE, "replicas=2");
  ts_served_model *m = ts_registry_acquire(&registry, "m");
  ck_assert_ptr_nonnull(m);
  ck_assert_int_eq(m->state, TS_MODEL_FAILED);
  ck_assert_ptr_nonnull(strstr(m->reason, "replicas=2"));
  ts_served_model_release(m);
  ck_assert_int_eq(ts_registry_retry_unavailable(&registry), 0);
  add_worker(fake_address); /* a second worker slot (the same fake) */
  ck_assert_int_eq(ts_registry_retry_unavailable(&registry), 1);
  m = ts_registry_acquire(&registry, "m");
  ck_assert_int_eq(m->state, TS_MODEL_READY);
  ck_assert_int_eq(m->n_replicas, 2);
  const int *where = ts_served_model_replicas(m, 0, 0);
  ck_assert_int_ne(where[0], where[1]); /* distinct workers */
  ts_served_model_release(m);
}
END_TEST

START_TEST(no_live_worker) {
  add_worker(dead_address);
  expect_load_fails("m", model_path, 1, TS_EUNAVAILABLE, "no live worker");
  ck_assert_int_eq(load_calls, 0);
}
END_TEST

START_TEST(missing_file) {
  add_worker(fake_address);
  expect_load_fails("gone", "/nonexistent/model.onnx", 1, TS_ENOTFOUND,
                    "/nonexistent/model.onnx");
  ck_assert_ptr_null(ts_registry_acquire(&registry, "gone"));
}
END_TEST

START_TEST(unload_keeps_references) {
  ts_served_model *m = load_ready(1);
  ts_err err;
  ck_assert_int_eq(ts_registry_unload(&registry, "m", &err), TS_OK);
  ck_assert_ptr_null(ts_registry_acquire(&registry, "m"));
  ck_assert_int_eq(ts_registry_unload(&registry, "m", &err), TS_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(err.msg, "'m'"));
  ck_assert_int_eq(m->state, TS_MODEL_READY); /* still ours */
  ck_assert_str_eq(m->inputs[0].name, "x");
  ts_served_model_release(m);
}
END_TEST

START_TEST(repository) {
  add_worker(fake_address);
  ts_err err;
  ck_assert_int_eq(ts_registry_load_by_name(&registry, "m", &err),
                   TS_ENOTFOUND); /* no repository configured */
  ts_registry_free(&registry);
  ts_registry_init(&registry, &members, repo);
  ck_assert_msg(ts_registry_load_by_name(&registry, "m", &err) == TS_OK, "%s",
                err.msg);
  ts_served_model *m = ts_registry_acquire(&registry, "m");
  ck_assert_ptr_nonnull(m);
  ck_assert_int_eq(m->state, TS_MODEL_READY);
  ts_served_model_release(m);
  ck_assert_int_eq(ts_registry_load_by_name(&registry, "nope", &err),
                   TS_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(err.msg, repo));
  ck_assert_int_eq(ts_registry_load_by_name(&registry, "m/../m", &err),
                   TS_EINVAL);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "registry", 60, setup, teardown, load_places_and_uploads,
                auto_replicas, unavailable_then_retried, no_live_worker,
                missing_file, unload_keeps_references, repository);
}

const ts_check_suite ts_check_this_suite = {.name = "registry", .cases = cases};
