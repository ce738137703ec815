/*
 * fuzz_npy.c - .npy images (common/codec/npy.c) from untrusted bytes, as
 * the CLI and the tests read them: decode, and a decoded tensor encoded
 * again must decode to the same dtype, shape and bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ts_err err = {0};
  ts_tensor t;
  int rc = ts_npy_decode(data, size, "fuzz.npy", &t, &err);
  fuzz_check_refusal(rc, &err, "ts_npy_decode");
  if (rc) return 0;
  uint8_t *again = NULL;
  size_t len = 0;
  if (ts_npy_encode(&t, &again, &len, &err) == TS_OK) {
    ts_tensor u;
    if (ts_npy_decode(again, len, "again.npy", &u, &err) != TS_OK ||
        u.dtype != t.dtype || u.rank != t.rank || u.nbytes != t.nbytes ||
        memcmp(u.dims, t.dims, sizeof t.dims[0] * (size_t)t.rank) != 0 ||
        (t.nbytes && memcmp(u.data, t.data, t.nbytes) != 0))
      abort();
    ts_tensor_free(&u);
    free(again);
  }
  ts_tensor_free(&t);
  return 0;
}
