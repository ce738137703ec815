/*
 * fuzz_load_shard.c - a worker's LoadShard stream from untrusted bytes
 * (worker/request.c: ts_load_chunk_apply over the shard store, store.c),
 * chunk after chunk as the gRPC stream delivers them, then finished as
 * on_end does (SHA-256 check and parse) or aborted.
 *
 * Input: a sequence of chunks, each a 4-byte little-endian length and that
 * many bytes of a LoadShardChunk message (a length past the end takes what
 * is left). The store holds the bundled MLP already, so a stream naming
 * its id takes the duplicate path; its memory limit (64 MiB) refuses
 * larger announced sizes, as a worker's --memory-limit does.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"
#include "fuzz_shard.h"
#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ts_store *st = NULL;
  ts_err err = {0};
  if (ts_store_create(64u << 20, &st, &err)) abort();
  char held[TS_SHA256_HEX_LEN + 1];
  fuzz_shard_load(st, held);
  ts_store_upload *up = NULL;
  uint64_t index = 0;
  int rc = TS_OK;
  while (size >= 4 && rc == TS_OK) {
    uint32_t n = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
                 (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
    data += 4, size -= 4;
    if (n > size) n = (uint32_t)size;
    memset(&err, 0, sizeof err);
    rc = ts_load_chunk_apply(st, &up, index++, data, n, &err);
    fuzz_check_refusal(rc, &err, "ts_load_chunk_apply");
    if (rc && up) abort(); /* a refused chunk leaves no upload */
    data += n, size -= n;
  }
  if (up) {
    ts_stored_shard *sh = NULL;
    memset(&err, 0, sizeof err);
    rc = ts_store_upload_finish(up, &sh, &err);
    fuzz_check_refusal(rc, &err, "ts_store_upload_finish");
    if (rc == TS_OK) ts_store_release(st, sh);
  }
  ts_store_free(st);
  return 0;
}
