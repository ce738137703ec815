/*
 * test_store.c - the worker's shard store (worker/store.c) in-process: a
 * shard streamed in chunks, checked against its SHA-256 id and parsed;
 * duplicate uploads; every bad stream (gap, overlap, past the end, short,
 * wrong hash, not a model); the memory limit with its reservation at
 * begin; references that outlive an unload; Status's counts and the list;
 * the upload caps (bytes in flight, count) and folded constants counted
 * against the fold and memory limits.
 * The shards are one-node ONNX models built with kernel_check.h. The same
 * store behind the real daemon's RPCs is test_worker.c's.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "hash.h"
#include "kernel_check.h"
#include "store.h"

/* A serialized one-node model (Relu over float[n]) and its id; `n` makes
 * shards of different bytes. */
typedef struct shard_bytes {
  uint8_t *data;
  size_t len;
  char id[TS_SHA256_HEX_LEN + 1];
} shard_bytes;

static shard_bytes make_shard(int64_t n) {
  ts_tensor x;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 1, (int64_t[]){n}, NULL);
  const ts_tensor *in[] = {&x};
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = kc_op_model("Relu", "", 13, in, 1, 0, 1, &node);
  shard_bytes s;
  s.data = kc_model_pack(m, &s.len);
  kc_model_free(m);
  ts_tensor_free(&x);
  ts_sha256_hex(s.data, s.len, s.id);
  return s;
}

static ts_store *store_new(uint64_t limit) {
  ts_store *st = NULL;
  ts_err err;
  ck_assert_int_eq(ts_store_create(limit, &st, &err), TS_OK);
  return st;
}

static uint64_t used(ts_store *st) {
  ts_store_stats s;
  ts_store_stats_get(st, &s);
  return s.memory_used;
}

/* Uploads s in chunks of `chunk` bytes; returns finish's code, *out the
 * reference on success. */
static int upload(ts_store *st, const shard_bytes *s, size_t chunk,
                  ts_stored_shard **out, ts_err *err) {
  ts_store_upload *up;
  int rc = ts_store_upload_begin(st, s->id, s->len, "test", &up, err);
  if (rc) return rc;
  for (size_t off = 0; off < s->len; off += chunk) {
    size_t len = s->len - off < chunk ? s->len - off : chunk;
    rc = ts_store_upload_write(up, off, s->data + off, len, err);
    if (rc) {
      ts_store_upload_abort(up);
      return rc;
    }
  }
  return ts_store_upload_finish(up, out, err);
}

/* Checked fixture: each test has a fresh store without a limit and one
 * shard's bytes. */
static ts_store *st;
static shard_bytes shard;

static void setup(void) {
  st = store_new(0);
  shard = make_shard(4);
}

static void teardown(void) {}

START_TEST(check_id) {
  ts_err err;
  ck_assert_int_eq(ts_store_check_id("shard_id", shard.id, &err), TS_OK);
  char upper[TS_SHA256_HEX_LEN + 1];
  memcpy(upper, shard.id, sizeof upper);
  upper[0] = 'A';
  const char *bad[] = {"", "abc", upper, NULL};
  for (int i = 0; bad[i]; i++) {
    ck_assert_int_eq(ts_store_check_id("shard_id", bad[i], &err), TS_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "shard_id"));
  }
  ck_assert_int_eq(ts_store_check_id("id", NULL, &err), TS_EINVAL);
}
END_TEST

START_TEST(upload_in_chunks_and_acquire) {
  ts_stored_shard *sh;
  ts_err err;
  ck_assert(!ts_store_has(st, shard.id));
  ck_assert_int_eq(upload(st, &shard, 7, &sh, &err), TS_OK);
  ck_assert_str_eq(sh->id, shard.id);
  ck_assert_str_eq(sh->label, "test");
  ck_assert_uint_eq(sh->bytes, shard.len);
  ck_assert_int_eq(sh->model->graph.n_nodes, 1);
  ck_assert(ts_store_has(st, shard.id));
  ck_assert_uint_eq(used(st), shard.len);
  ts_stored_shard *again = ts_store_acquire(st, shard.id);
  ck_assert_ptr_eq(again, sh);
  ts_store_release(st, again);
  ts_store_release(st, sh);
  static const char absent[] =
      "0000000000000000000000000000000000000000000000000000000000000000";
  ck_assert_ptr_null(ts_store_acquire(st, absent));
  ck_assert(!ts_store_has(st, absent));
}
END_TEST

START_TEST(duplicate_upload_is_cheap) {
  ts_stored_shard *first, *second;
  ts_err err;
  ck_assert_int_eq(upload(st, &shard, shard.len, &first, &err), TS_OK);
  ts_store_upload *up;
  ck_assert_int_eq(
      ts_store_upload_begin(st, shard.id, shard.len, "again", &up, &err),
      TS_OK);
  ck_assert(ts_store_upload_is_duplicate(up));
  ck_assert_str_eq(ts_store_upload_id(up), shard.id);
  ck_assert_uint_eq(ts_store_upload_total(up), shard.len);
  ck_assert_uint_eq(used(st), shard.len); /* nothing reserved twice */
  ck_assert_int_eq(ts_store_upload_write(up, 0, shard.data, shard.len, &err),
                   TS_OK);
  ck_assert_int_eq(ts_store_upload_finish(up, &second, &err), TS_OK);
  ck_assert_ptr_eq(second, first);
  ck_assert_uint_eq(used(st), shard.len);
  ts_store_release(st, first);
  ts_store_release(st, second);
}
END_TEST

/* Every bad stream fails with TS_EINVAL, a message naming the fault, and
 * leaves nothing held or reserved. */
START_TEST(bad_streams) {
  shard_bytes other = make_shard(5);
  ts_store_upload *up;
  ts_stored_shard *sh;
  ts_err err;

  ck_assert_int_eq(ts_store_upload_begin(st, shard.id, 0, NULL, &up, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "total_bytes is 0"));
  ck_assert_ptr_null(up);
  ck_assert_int_eq(ts_store_upload_begin(st, "nothex", 10, NULL, &up, &err),
                   TS_EINVAL);

  ck_assert_int_eq(
      ts_store_upload_begin(st, shard.id, shard.len, NULL, &up, &err), TS_OK);
  ck_assert_int_eq(ts_store_upload_write(up, 1, shard.data, 1, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "gap"));
  ck_assert_int_eq(ts_store_upload_write(up, 0, shard.data, 2, &err), TS_OK);
  ck_assert_int_eq(ts_store_upload_write(up, 1, shard.data, 1, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "overlaps"));
  ck_assert_int_eq(ts_store_upload_write(up, 2, shard.data, shard.len, &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "runs past"));
  ck_assert_int_eq(ts_store_upload_finish(up, &sh, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "stream ended after 2"));
  ck_assert_ptr_null(sh);

  /* other's bytes under s's id: the hash does not match. */
  shard_bytes wrong = {other.data, other.len, {0}};
  memcpy(wrong.id, shard.id, sizeof wrong.id);
  ck_assert_int_eq(upload(st, &wrong, 64, &sh, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "does not match the SHA-256"));

  /* Bytes with the right hash that are not a model. */
  shard_bytes junk = {(uint8_t *)"\xff\xff\xff not onnx", 13, {0}};
  ts_sha256_hex(junk.data, junk.len, junk.id);
  ck_assert_int_eq(upload(st, &junk, 64, &sh, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "shard"));

  ck_assert(!ts_store_has(st, shard.id));
  ck_assert_uint_eq(used(st), 0);
  free(other.data);
}
END_TEST

/* The limit is checked at begin, before any allocation, counting uploads
 * in progress; an aborted upload returns its reservation. */
START_TEST(memory_limit) {
  shard_bytes a = make_shard(3), b = make_shard(5);
  ts_store_free(st);
  st = store_new(a.len + b.len - 1);
  ts_store_upload *up_a, *up_b;
  ts_err err;
  ck_assert_int_eq(ts_store_upload_begin(st, a.id, a.len, "a", &up_a, &err),
                   TS_OK);
  ck_assert_uint_eq(used(st), a.len);
  ck_assert_int_eq(ts_store_upload_begin(st, b.id, b.len, "b", &up_b, &err),
                   TS_EEXHAUSTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "memory limit"));
  ck_assert_ptr_nonnull(strstr(err.msg, "'b'"));
  ck_assert_ptr_null(up_b);
  ts_store_upload_abort(up_a);
  ck_assert_uint_eq(used(st), 0);
  ts_stored_shard *sh;
  ck_assert_int_eq(upload(st, &b, 64, &sh, &err), TS_OK);
  ts_store_stats stats;
  ts_store_stats_get(st, &stats);
  ck_assert_uint_eq(stats.memory_used, b.len);
  ck_assert_uint_eq(stats.memory_limit, a.len + b.len - 1);
  ck_assert_int_eq(stats.shards, 1);
  ts_store_release(st, sh);
  free(a.data);
  free(b.data);
}
END_TEST

/* Uploads in flight are capped in bytes (also of one announcement) and in
 * number, whatever the memory limit; a duplicate counts in number only. */
START_TEST(upload_caps) {
  ts_store_set_limits(st, &(ts_store_limits){.upload_bytes = 100,
                                              .uploads = 2});
  static const char id1[] =
      "0000000000000000000000000000000000000000000000000000000000000001";
  static const char id2[] =
      "0000000000000000000000000000000000000000000000000000000000000002";
  ts_store_upload *a, *b, *c;
  ts_err err;
  ck_assert_int_eq(ts_store_upload_begin(st, id1, 60, "a", &a, &err), TS_OK);
  ck_assert_int_eq(ts_store_upload_begin(st, id2, 60, "b", &b, &err),
                   TS_EEXHAUSTED);
  ck_assert_ptr_null(b);
  ck_assert_str_eq(err.msg,
                   "shard 00000000.. 'b' announces 60 bytes (60 B) but 60 "
                   "bytes (60 B) of uploads in flight already count against "
                   "the worker's upload limit of 100 bytes (100 B, "
                   "--upload-limit)");
  ck_assert_int_eq(ts_store_upload_begin(st, id2, 101, "b", &b, &err),
                   TS_EEXHAUSTED);
  ck_assert_int_eq(ts_store_upload_begin(st, id2, 40, "b", &b, &err), TS_OK);
  ck_assert_uint_eq(used(st), 100);
  ck_assert_int_eq(ts_store_upload_begin(st, shard.id, 1, "c", &c, &err),
                   TS_EEXHAUSTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "'c': 2 uploads are in progress, "
                                        "the most this worker takes at once "
                                        "(--max-uploads)"));
  ck_assert_ptr_null(c);
  ts_store_upload_abort(a);
  ts_store_upload_abort(b);
  ck_assert_uint_eq(used(st), 0);
  /* a shard uploads, and a duplicate of it takes a place but no bytes */
  ts_stored_shard *sh, *dup;
  ck_assert_int_eq(upload(st, &shard, 64, &sh, &err), TS_OK);
  ck_assert_int_eq(ts_store_upload_begin(st, id1, 100, "a", &a, &err), TS_OK);
  ck_assert_int_eq(ts_store_upload_begin(st, shard.id, shard.len, "d", &c,
                                         &err), TS_OK);
  ck_assert(ts_store_upload_is_duplicate(c));
  ck_assert_int_eq(ts_store_upload_begin(st, id2, 1, "b", &b, &err),
                   TS_EEXHAUSTED);
  ck_assert_int_eq(ts_store_upload_write(c, 0, shard.data, shard.len, &err),
                   TS_OK);
  ck_assert_int_eq(ts_store_upload_finish(c, &dup, &err), TS_OK);
  ck_assert_ptr_eq(dup, sh);
  ts_store_upload_abort(a);
  ts_store_release(st, dup);
  ts_store_release(st, sh);
}
END_TEST

/* Packs kc_fold_model(ConstantOfShape, elems) as a shard. */
static shard_bytes make_fold_shard(int64_t elems) {
  Onnx__ModelProto *m = kc_fold_model(KC_FOLD_CONSTANT_OF_SHAPE, elems);
  shard_bytes s;
  s.data = kc_model_pack(m, &s.len);
  kc_model_free(m);
  ts_sha256_hex(s.data, s.len, s.id);
  return s;
}

/* What a shard's load folds is its memory too: counted in its bytes and
 * Status, and held to the fold limit (the default, or set) and to what
 * the memory limit leaves, before it is allocated. */
START_TEST(folded_bytes_counted) {
  shard_bytes f = make_fold_shard(1000);
  size_t folded = 8 + 4 * 1000;
  ts_stored_shard *sh;
  ts_err err;
  ck_assert_int_eq(upload(st, &f, 64, &sh, &err), TS_OK);
  ck_assert_uint_eq(sh->bytes, f.len + folded);
  ck_assert_uint_eq(sh->model->folded_bytes, folded);
  ck_assert_uint_eq(used(st), f.len + folded);
  ck_assert(ts_store_unload(st, f.id));
  ts_store_release(st, sh);
  ck_assert_uint_eq(used(st), 0);

  ts_store_set_limits(st, &(ts_store_limits){.fold_limit = folded - 1});
  ck_assert_int_eq(upload(st, &f, 64, &sh, &err), TS_EEXHAUSTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "(fold limit: --fold-limit): "
                                        "constant folding at load (fold "
                                        "limit 4007 bytes"));
  ck_assert_ptr_nonnull(strstr(err.msg, "node 'bomb' (ConstantOfShape) "
                                        "needs 4000 bytes"));
  ck_assert_uint_eq(used(st), 0);

  ts_store_free(st);
  st = store_new(f.len + folded - 1);
  ck_assert_int_eq(upload(st, &f, 64, &sh, &err), TS_EEXHAUSTED);
  char want[160];
  snprintf(want, sizeof want, "(fold limit: what the memory limit of %zu "
           "bytes leaves beside %zu bytes in use)", f.len + folded - 1, f.len);
  ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
  ck_assert_uint_eq(used(st), 0);
  ts_store_free(st);
  st = store_new(f.len + folded);
  ck_assert_int_eq(upload(st, &f, 64, &sh, &err), TS_OK);
  ck_assert_uint_eq(used(st), f.len + folded);
  ts_store_release(st, sh);
  free(f.data);
}
END_TEST

/* Unload takes a shard out of the table at once; its memory stays counted
 * until the last reference goes. */
START_TEST(reference_outlives_unload) {
  ts_stored_shard *sh;
  ts_err err;
  ck_assert_int_eq(upload(st, &shard, 64, &sh, &err), TS_OK);
  ck_assert(ts_store_unload(st, shard.id));
  ck_assert(!ts_store_unload(st, shard.id));
  ck_assert(!ts_store_has(st, shard.id));
  ck_assert_ptr_null(ts_store_acquire(st, shard.id));
  ck_assert_uint_eq(used(st), shard.len);
  ck_assert_int_eq(sh->model->graph.n_nodes, 1); /* still usable */
  ts_store_release(st, sh);
  ck_assert_uint_eq(used(st), 0);
}
END_TEST

START_TEST(list_in_load_order) {
  shard_bytes shards[3] = {make_shard(3), make_shard(4), make_shard(5)};
  ts_stored_shard *sh;
  ts_err err;
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(upload(st, &shards[i], 64, &sh, &err), TS_OK);
    ts_store_release(st, sh);
  }
  ck_assert(ts_store_unload(st, shards[1].id));
  ts_stored_shard **list;
  int n;
  ck_assert_int_eq(ts_store_list(st, &list, &n, &err), TS_OK);
  ck_assert_int_eq(n, 2);
  ck_assert_str_eq(list[0]->id, shards[0].id);
  ck_assert_str_eq(list[1]->id, shards[2].id);
  for (int i = 0; i < n; i++) ts_store_release(st, list[i]);
  free(list);
  for (int i = 0; i < 3; i++) free(shards[i].data);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "store", 0, setup, teardown, check_id,
                upload_in_chunks_and_acquire, duplicate_upload_is_cheap,
                bad_streams, memory_limit, reference_outlives_unload,
                list_in_load_order, upload_caps, folded_bytes_counted);
}

const ts_check_suite ts_check_this_suite = {.name = "store", .cases = cases};
