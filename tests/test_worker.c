/*
 * test_worker.c - the worker daemon serving one shared instance
 * (--threads 2 --memory-limit 512M): health, LoadShard (hashes, bad
 * streams, not-a-model, the memory limit), RunShard and its errors,
 * HasShard, Status, a model over the message size, and SIGTERM. The
 * harness is worker_check.h; one-kernel-thread scheduling, the command line
 * and systemd notification are in test_worker_scheduling.c.
 */
#include "check_main.h"
#include "worker_check.h"

/* ---- the shared worker and its tests ----------------------------------- */

static worker_proc main_worker; /* --threads 2 --memory-limit 512M */
static gemm small;              /* 256 x 128: 128 kB, two 64 KiB chunks+ */

static void main_worker_setup(void) {
  static const char *const args[] = {"--threads", "2", "--memory-limit",
                                     "512M", NULL};
  worker_start(&main_worker, args);
  gemm_make(&small, 256, 128, 7);
}

static void main_worker_teardown(void) {
  gemm_free(&small);
  if (main_worker.pid) worker_stop(&main_worker, 30000);
}

START_TEST(test_health_serving) {
  ck_assert_int_eq(health(&main_worker), SERVING);
}
END_TEST

START_TEST(test_load_and_run_small) {
  ck_assert(!has_shard(&main_worker, small.id));
  uint64_t before = memory_used(&main_worker);
  load_ok(&main_worker, &small, 64 * 1024, "gemm/s0/k0");
  ck_assert(has_shard(&main_worker, small.id));
  ck_assert_uint_eq(memory_used(&main_worker), before + small.len);
  run_and_check(&main_worker, &small, 4, 11);
  run_and_check(&main_worker, &small, 1, 12);
  run_and_check(&main_worker, &small, 33, 13);
}
END_TEST

START_TEST(test_second_load_is_cheap_success) {
  uint64_t before = memory_used(&main_worker);
  load_ok(&main_worker, &small, 64 * 1024, "gemm/s0/k0");
  ck_assert_uint_eq(memory_used(&main_worker), before);
}
END_TEST

static bool id_well_formed(const char *id) {
  if (strlen(id) != TS_SHA256_HEX_LEN) return false;
  for (const char *p = id; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
  return true;
}

/* Expects a LoadShard to fail with `code`, naming `what`, and to leave no
 * trace: the shard absent (unless held before) and memory unchanged. */
static void expect_load_fails(const char *id, uint64_t total,
                              const uint8_t *bytes, size_t len, size_t chunk,
                              int code, const char *what) {
  uint64_t before = memory_used(&main_worker);
  ts_err err = {0};
  int rc = load_shard(main_worker.ch, id, total, bytes, len, chunk, "bad",
                      NULL, &err);
  ck_assert_msg(rc == code, "LoadShard: want %d (%s), got %d: %s", code,
                ts_strerror(code), rc, err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "'%s' not in '%s'", what,
                err.msg);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  if (id_well_formed(id)) ck_assert(!has_shard(&main_worker, id));
}

START_TEST(test_load_wrong_hash) {
  gemm other;
  gemm_make(&other, 64, 32, 99);
  /* The bytes of `other` announced under the id of different bytes. */
  char wrong[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("not these bytes", 15, wrong);
  expect_load_fails(wrong, other.len, other.bytes, other.len, 64 * 1024,
                    TS_EINVAL, "SHA-256");
  gemm_free(&other);
}
END_TEST

/* Sends chunks of g's bytes at the given {offset, length} spans, each with
 * the full header; returns the stream's TS_E* code. */
static int load_spans(const gemm *g, const uint64_t (*spans)[2], int n,
                      ts_err *err) {
  ts_rpc_stream *st = NULL;
  int rc = ts_rpc_stream_open(main_worker.ch, SVC "LoadShard",
                              ts_now_ms() + CALL_MS, &st, err);
  if (rc) return rc;
  uint8_t *buf = malloc(MiB + 256);
  ck_assert_ptr_nonnull(buf);
  for (int i = 0; i < n; i++) {
    Tessera__Worker__V1__LoadShardChunk c =
        TESSERA__WORKER__V1__LOAD_SHARD_CHUNK__INIT;
    c.shard_id = (char *)g->id;
    c.total_bytes = g->len;
    c.offset = spans[i][0];
    c.data.data = g->bytes + spans[i][0];
    c.data.len = spans[i][1];
    size_t len = tessera__worker__v1__load_shard_chunk__pack(&c, buf);
    if (ts_rpc_stream_send(st, buf, len, err) != 0) break;
  }
  free(buf);
  return stream_finish(st, err);
}

/* Expects the spans to be refused with INVALID_ARGUMENT naming `what`. */
static void expect_spans_fail(const gemm *g, const uint64_t (*spans)[2],
                              int n, const char *what) {
  uint64_t before = memory_used(&main_worker);
  ts_err err = {0};
  int rc = load_spans(g, spans, n, &err);
  ck_assert_msg(rc == TS_EINVAL, "got %d: %s", rc, err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "'%s' not in '%s'", what,
                err.msg);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  ck_assert(!has_shard(&main_worker, g->id));
}

START_TEST(test_load_bad_streams) {
  gemm g;
  gemm_make(&g, 128, 256, 5); /* 128 kB */
  /* Out of order: the second 4 KiB first. */
  static const uint64_t swapped[][2] = {{4096, 4096}, {0, 4096}};
  expect_spans_fail(&g, swapped, 2, "expected offset 0");
  /* A gap. */
  static const uint64_t gap[][2] = {{0, 4096}, {8192, 4096}};
  expect_spans_fail(&g, gap, 2, "gap");
  /* Overlapping: the second chunk starts inside the first. */
  static const uint64_t overlap[][2] = {{0, 4096}, {2048, 4096}};
  expect_spans_fail(&g, overlap, 2, "overlaps");
  /* The same chunk twice. */
  static const uint64_t twice[][2] = {{0, 4096}, {0, 4096}};
  expect_spans_fail(&g, twice, 2, "overlaps");
  /* Announced smaller than what is sent: bytes past the end. */
  expect_load_fails(g.id, g.len - 100, g.bytes, g.len, 64 * 1024, TS_EINVAL,
                    "past");
  /* Stream ends before total_bytes arrived. */
  expect_load_fails(g.id, g.len, g.bytes, g.len - 1000, 64 * 1024, TS_EINVAL,
                    "ended after");
  /* No size announced. */
  expect_load_fails(g.id, 0, g.bytes, 1000, 1000, TS_EINVAL, "total_bytes");
  /* A chunk over the 1 MiB limit. */
  uint8_t *big = calloc(1, 2 * MiB);
  ck_assert_ptr_nonnull(big);
  char big_id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(big, 2 * MiB, big_id);
  expect_load_fails(big_id, 2 * MiB, big, 2 * MiB, 2 * MiB, TS_EINVAL,
                    "chunk limit");
  free(big);
  /* Malformed ids. */
  expect_load_fails("abc", g.len, g.bytes, g.len, 64 * 1024, TS_EINVAL,
                    "shard_id");
  char upper[TS_SHA256_HEX_LEN + 1];
  memcpy(upper, g.id, sizeof upper);
  for (char *p = upper; *p; p++)
    if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
  if (strcmp(upper, g.id) != 0)
    expect_load_fails(upper, g.len, g.bytes, g.len, 64 * 1024, TS_EINVAL,
                      "shard_id");
  /* A stream with no chunk at all. */
  {
    ts_err err = {0};
    ts_rpc_stream *st = NULL;
    ck_assert_int_eq(ts_rpc_stream_open(main_worker.ch, SVC "LoadShard",
                                        ts_now_ms() + CALL_MS, &st, &err),
                     0);
    ck_assert_int_eq(stream_finish(st, &err), TS_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "no chunk"));
  }
  /* Garbage that is not a LoadShardChunk. */
  {
    ts_err err = {0};
    ts_rpc_stream *st = NULL;
    ck_assert_int_eq(ts_rpc_stream_open(main_worker.ch, SVC "LoadShard",
                                        ts_now_ms() + CALL_MS, &st, &err),
                     0);
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    ts_rpc_stream_send(st, junk, sizeof junk, &err);
    ck_assert_int_eq(stream_finish(st, &err), TS_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "malformed"));
  }
  gemm_free(&g);
  /* The worker is fine after all that. */
  run_and_check(&main_worker, &small, 2, 21);
}
END_TEST

START_TEST(test_load_not_a_model) {
  /* Bytes whose SHA-256 is right but that are no ModelProto: the loader's
   * own error comes through. */
  uint8_t junk[5000];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 131 + 7);
  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(junk, sizeof junk, id);
  uint64_t before = memory_used(&main_worker);
  ts_err err = {0};
  int rc = load_shard(main_worker.ch, id, sizeof junk, junk, sizeof junk,
                      1024, "junk", NULL, &err);
  ck_assert_msg(rc == TS_EINVAL || rc == TS_EUNSUPPORTED,
                "got %d: %s", rc, err.msg);
  ck_assert_msg(strstr(err.msg, "junk") != NULL, "no label in '%s'",
                err.msg);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  ck_assert(!has_shard(&main_worker, id));
}
END_TEST

START_TEST(test_memory_limit) {
  /* 1 GiB announced against a 512 MiB limit: refused on the first chunk,
   * before the worker allocates anything. */
  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("huge", 4, id);
  uint8_t data[1024] = {0};
  expect_load_fails(id, 1ull << 30, data, sizeof data, sizeof data,
                    TS_EEXHAUSTED, "1073741824 bytes");
  ts_err err = {0};
  int rc = load_shard(main_worker.ch, id, 1ull << 30, data, sizeof data,
                      sizeof data, "huge/s0", NULL, &err);
  ck_assert_int_eq(rc, TS_EEXHAUSTED);
  ck_assert_msg(strstr(err.msg, "huge/s0") && strstr(err.msg, "536870912"),
                "message does not name the shard and the limit: %s", err.msg);
  /* The worker keeps serving. */
  ck_assert(has_shard(&main_worker, small.id));
  run_and_check(&main_worker, &small, 3, 31);
}
END_TEST

START_TEST(test_run_errors) {
  float x[4 * 256];
  fill(x, 4 * 256, 3);
  run_req r;
  char unknown[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("nobody loaded this", 18, unknown);
  run_req_init(&r, unknown, x, 4, 256);
  expect_run_fails(&main_worker, &r, TS_ENOTFOUND, unknown);

  run_req_init(&r, "xyz", x, 4, 256);
  expect_run_fails(&main_worker, &r, TS_EINVAL, "shard_id");

  /* Bad tensors, each class. */
  run_req_init(&r, small.id, x, 4, 256);
  r.x.dtype = 99;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  run_req_init(&r, small.id, x, 4, 256);
  r.x.data.len -= 4;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  run_req_init(&r, small.id, x, 4, 256);
  r.dims[0] = -4;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  run_req_init(&r, small.id, x, 4, 256);
  r.dims[0] = INT64_MAX / 2;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  {
    int64_t dims9[9] = {1, 1, 1, 1, 1, 1, 1, 4, 256};
    run_req_init(&r, small.id, x, 4, 256);
    r.x.n_shape = 9;
    r.x.shape = dims9;
    expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  }
  /* Well-formed tensors the shard cannot take: the executor says which. */
  run_req_init(&r, small.id, x, 8, 128); /* K is 256 */
  expect_run_fails(&main_worker, &r, TS_EINVAL, "X");
  run_req_init(&r, small.id, x, 4, 256);
  r.x.dtype = 6; /* int32 where the model wants float */
  expect_run_fails(&main_worker, &r, TS_EINVAL, "X");
  run_req_init(&r, small.id, x, 4, 256);
  r.x.name = "Z";
  expect_run_fails(&main_worker, &r, TS_EINVAL, "Z");
  /* Unknown output name. */
  run_req_init(&r, small.id, x, 4, 256);
  char *outs[] = {"nope"};
  r.req.n_outputs = 1;
  r.req.outputs = outs;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "nope");
  /* Naming the output explicitly works. */
  char *y[] = {"Y"};
  r.req.outputs = y;
  Tessera__Worker__V1__RunShardResponse *resp = NULL;
  ts_err err = {0};
  ck_assert_int_eq(run_shard(&main_worker, &r, &resp, ts_now_ms() + CALL_MS,
                             &err), 0);
  ck_assert_uint_eq(resp->n_outputs, 1);
  tessera__worker__v1__run_shard_response__free_unpacked(resp, NULL);

  /* Bytes that are no RunShardRequest. */
  const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff};
  uint8_t *out = NULL;
  size_t len = 0;
  ck_assert_int_eq(ts_rpc_call_sync(main_worker.ch, SVC "RunShard", junk,
                                    sizeof junk, ts_now_ms() + CALL_MS, &out,
                                    &len, &err),
                   TS_EINVAL);
  free(out);
}
END_TEST

START_TEST(test_unknown_method) {
  uint8_t *out = NULL;
  size_t len = 0;
  ts_err err = {0};
  int rc = ts_rpc_call_sync(main_worker.ch, SVC "Explode",
                            (const uint8_t *)"", 0, ts_now_ms() + CALL_MS,
                            &out, &len, &err);
  ck_assert_int_eq(rc, TS_EUNSUPPORTED); /* UNIMPLEMENTED */
  free(out);
}
END_TEST

START_TEST(test_has_shard_bad_id) {
  char *ids[] = {small.id, "NOT-HEX"};
  Tessera__Worker__V1__HasShardRequest req =
      TESSERA__WORKER__V1__HAS_SHARD_REQUEST__INIT;
  req.n_shard_ids = 2;
  req.shard_ids = ids;
  ts_err err = {0};
  int rc = call_unary(main_worker.ch, SVC "HasShard", &req.base, NULL, NULL,
                      ts_now_ms() + CALL_MS, &err);
  ck_assert_int_eq(rc, TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "shard_ids[1] 'NOT-HEX'"));

  Tessera__Worker__V1__UnloadShardRequest unload =
      TESSERA__WORKER__V1__UNLOAD_SHARD_REQUEST__INIT;
  unload.shard_id = "xyz";
  rc = call_unary(main_worker.ch, SVC "UnloadShard", &unload.base, NULL, NULL,
                  ts_now_ms() + CALL_MS, &err);
  ck_assert_int_eq(rc, TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "shard_id 'xyz' is not a lowercase hex"),
                "%s", err.msg);
}
END_TEST

START_TEST(test_big_model) {
  /* One 50M-float initializer: a 200 MB shard in 1 MiB chunks. */
  gemm big;
  gemm_make(&big, 10000, 5000, 42);
  ck_assert_uint_gt(big.len, 200000000);
  ck_assert(!has_shard(&main_worker, big.id));
  uint64_t before = memory_used(&main_worker);
  int64_t t0 = ts_now_ms();
  load_ok(&main_worker, &big, MiB, "big/s0/k0");
  printf("200 MB shard loaded in %lld ms\n", (long long)(ts_now_ms() - t0));
  ck_assert(has_shard(&main_worker, big.id));
  ck_assert_uint_eq(memory_used(&main_worker), before + big.len);
  run_and_check(&main_worker, &big, 2, 43);

  /* With 200 MB held, 400 MB more no longer fits under 512 MiB. */
  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("another", 7, id);
  uint8_t data[16] = {0};
  expect_load_fails(id, 400ull * 1000 * 1000, data, sizeof data, sizeof data,
                    TS_EEXHAUSTED, "in use");

  /* Unload returns the memory. */
  Tessera__Worker__V1__UnloadShardRequest req =
      TESSERA__WORKER__V1__UNLOAD_SHARD_REQUEST__INIT;
  req.shard_id = big.id;
  ProtobufCMessage *resp = NULL;
  ts_err err = {0};
  ck_assert_int_eq(
      call_unary(main_worker.ch, SVC "UnloadShard", &req.base,
                 &tessera__worker__v1__unload_shard_response__descriptor,
                 &resp, ts_now_ms() + CALL_MS, &err),
      0);
  ck_assert(((Tessera__Worker__V1__UnloadShardResponse *)resp)->was_loaded);
  protobuf_c_message_free_unpacked(resp, NULL);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  ck_assert(!has_shard(&main_worker, big.id));
  /* A second unload finds nothing; a run is NOT_FOUND. */
  ck_assert_int_eq(
      call_unary(main_worker.ch, SVC "UnloadShard", &req.base,
                 &tessera__worker__v1__unload_shard_response__descriptor,
                 &resp, ts_now_ms() + CALL_MS, &err),
      0);
  ck_assert(!((Tessera__Worker__V1__UnloadShardResponse *)resp)->was_loaded);
  protobuf_c_message_free_unpacked(resp, NULL);
  float x[10000];
  fill(x, 10000, 1);
  run_req r;
  run_req_init(&r, big.id, x, 1, 10000);
  expect_run_fails(&main_worker, &r, TS_ENOTFOUND, big.id);
  gemm_free(&big);
}
END_TEST

START_TEST(test_status) {
  Tessera__Worker__V1__StatusResponse *s = status(&main_worker);
  ck_assert_uint_eq(s->threads, 2);
  ck_assert_uint_eq(s->memory_limit, 512ull * MiB);
  ck_assert_str_eq(s->listen, main_worker.addr);
  ck_assert(s->blas_core && s->blas_core[0]);
  /* Nothing queued; a pool thread may still be leaving the last run it
   * answered, so in_flight is at most that one. */
  ck_assert_uint_eq(s->queue_depth, 0);
  ck_assert_uint_le(s->in_flight, 1);
  /* Only the small shard is held now, and memory is exactly its bytes. */
  ck_assert_uint_eq(s->n_shards, 1);
  ck_assert_str_eq(s->shards[0]->shard_id, small.id);
  ck_assert_str_eq(s->shards[0]->label, "gemm/s0/k0");
  ck_assert_uint_eq(s->shards[0]->bytes, small.len);
  ck_assert_uint_eq(s->memory_used, small.len);
  /* Runs that succeeded so far on it: 3 + 1 + 1 + 1 (see the tests above)
   * plus the executor-rejected ones, which ran and failed; at least 6. */
  ck_assert_uint_ge(s->shards[0]->runs, 6);
  ck_assert_uint_ge(s->runs_total, s->shards[0]->runs);
  printf("worker status: %llu runs, OpenBLAS core %s\n",
         (unsigned long long)s->runs_total, s->blas_core);
  tessera__worker__v1__status_response__free_unpacked(s, NULL);
}
END_TEST

START_TEST(test_sigterm_exit_zero) {
  ck_assert_int_eq(worker_stop(&main_worker, 30000), 0);
  main_worker.pid = 0;
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("worker");
  TCase *tc = ts_check_tcase(s, "daemon", 280, NULL, NULL);
  tcase_add_unchecked_fixture(tc, main_worker_setup, main_worker_teardown);
  tcase_add_test(tc, test_health_serving);
  tcase_add_test(tc, test_load_and_run_small);
  tcase_add_test(tc, test_second_load_is_cheap_success);
  tcase_add_test(tc, test_load_wrong_hash);
  tcase_add_test(tc, test_load_bad_streams);
  tcase_add_test(tc, test_load_not_a_model);
  tcase_add_test(tc, test_memory_limit);
  tcase_add_test(tc, test_run_errors);
  tcase_add_test(tc, test_unknown_method);
  tcase_add_test(tc, test_has_shard_bad_id);
  tcase_add_test(tc, test_big_model);
  tcase_add_test(tc, test_status);
  tcase_add_test(tc, test_sigterm_exit_zero);
  return s;
}

/* No fork: the unchecked fixture's worker serves every test of its case. */
const ts_check_suite ts_check_this_suite = WORKER_CHECK_SUITE(suite);
