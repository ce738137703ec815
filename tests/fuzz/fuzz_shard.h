/*
 * fuzz_shard.h - the shard the worker targets hold: the bundled MLP
 * (examples/models/mlp/model.onnx, path given at build time as
 * TS_FUZZ_MODEL), read once and uploaded into a store as LoadShard
 * would, under its SHA-256 id.
 */
#ifndef TS_FUZZ_SHARD_H
#define TS_FUZZ_SHARD_H

#include <stdio.h>
#include <stdlib.h>

#include "hash.h"
#include "store.h"

/* The model's bytes (read once; never freed) and their length. */
static inline const uint8_t *fuzz_shard_bytes(size_t *len) {
  static uint8_t *bytes;
  static size_t n;
  if (!bytes) {
    FILE *f = fopen(TS_FUZZ_MODEL, "rb");
    if (!f || fseek(f, 0, SEEK_END) || (n = (size_t)ftell(f)) == 0 ||
        fseek(f, 0, SEEK_SET) || !(bytes = malloc(n)) ||
        fread(bytes, 1, n, f) != n) {
      fprintf(stderr, "cannot read %s\n", TS_FUZZ_MODEL);
      abort();
    }
    fclose(f);
  }
  *len = n;
  return bytes;
}

/* Uploads the model into st; id gets its hex SHA-256. Aborts on failure
 * (the fuzz target cannot run without it). */
static inline void fuzz_shard_load(ts_store *st, char id[TS_SHA256_HEX_LEN + 1]) {
  size_t len;
  const uint8_t *bytes = fuzz_shard_bytes(&len);
  ts_sha256_hex(bytes, len, id);
  ts_err err = {0};
  ts_store_upload *up = NULL;
  ts_stored_shard *sh = NULL;
  if (ts_store_upload_begin(st, id, len, "mlp", &up, &err) ||
      ts_store_upload_write(up, 0, bytes, len, &err) ||
      ts_store_upload_finish(up, &sh, &err)) {
    fprintf(stderr, "cannot load %s: %s\n", TS_FUZZ_MODEL, err.msg);
    abort();
  }
  ts_store_release(st, sh);
}

#endif
