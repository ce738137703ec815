/*
 * fuzz_onnx.c - the ONNX loader (common/engine/load.c, nesting.c,
 * inplace.c, graph.c) on untrusted bytes, as a worker gets a shard: the
 * nesting check, then ts_model_load (copying) and ts_model_load_adopt
 * (in place) on the same bytes, which must agree on success or failure;
 * a model that loads is prepacked as the store does. External data
 * references and subgraph attributes come from the seeds (seeds.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "graph.h"

static void release_malloced(void *bytes, size_t len, void *ctx) {
  (void)len;
  (void)ctx;
  free(bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ts_err err = {0};
  int nest = ts_model_check_nesting(data, size, TS_MODEL_MAX_NESTING, &err);
  fuzz_check_refusal(nest, &err, "ts_model_check_nesting");
  ts_model *m = NULL;
  memset(&err, 0, sizeof err);
  int rc = ts_model_load(data, size, &m, &err);
  fuzz_check_refusal(rc, &err, "ts_model_load");
  if (rc == TS_OK) {
    memset(&err, 0, sizeof err);
    int prc = ts_model_prepack(m, &err);
    fuzz_check_refusal(prc, &err, "ts_model_prepack");
    ts_model_free(m);
  }
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  ts_model *a = NULL;
  memset(&err, 0, sizeof err);
  int arc = ts_model_load_adopt(copy, size, release_malloced, NULL, &a, &err);
  fuzz_check_refusal(arc, &err, "ts_model_load_adopt");
  if ((arc == TS_OK) != (rc == TS_OK)) abort();
  if (arc == TS_OK) ts_model_free(a);
  return 0;
}
