/*
 * fuzz_run_shard.c - a worker's RunShardRequest from untrusted bytes, as
 * handle_run_shard takes it (worker/service.c): unpacked into an arena,
 * checked and bound (worker/request.c: ts_run_request_open and
 * ts_run_request_bind over the shard store), then run (ts_exec_run on the
 * bundled MLP, with a 64 MiB activation limit as a worker sets one).
 * The seeds (seeds.c) name the held shard's id; the dictionary too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "fuzz_check.h"
#include "fuzz_message.h"
#include "fuzz_shard.h"
#include "request.h"

static ts_store *store;
static ts_session *session;

static void setup(void) {
  if (store) return;
  ts_err err = {0};
  char id[TS_SHA256_HEX_LEN + 1];
  if (ts_store_create(0, &store, &err) || ts_session_create(&session, &err))
    abort();
  ts_session_set_activation_limit(session, 64u << 20);
  fuzz_shard_load(store, id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  ts_rpc_arena arena;
  Tessera__Worker__V1__RunShardRequest *req = fuzz_message_unpack(
      &tessera__worker__v1__run_shard_request__descriptor, &arena, data, size);
  if (!req) goto out;
  ts_err err = {0};
  ts_stored_shard *sh = NULL;
  int n_out = 0;
  int rc = ts_run_request_open(store, req, &sh, &n_out, &err);
  fuzz_check_refusal(rc, &err, "ts_run_request_open");
  if (rc == TS_OK) {
    size_t ni = req->n_inputs, no = (size_t)n_out;
    ts_tensor *inputs = calloc(ni + 1, sizeof *inputs);
    ts_tensor *outputs = calloc(no + 1, sizeof *outputs);
    const char **in_names = calloc(ni + 1, sizeof *in_names);
    const char **out_names = calloc(no + 1, sizeof *out_names);
    if (!inputs || !outputs || !in_names || !out_names) abort();
    rc = ts_run_request_bind(sh, req, n_out, inputs, in_names, out_names,
                             &err);
    fuzz_check_refusal(rc, &err, "ts_run_request_bind");
    if (rc == TS_OK) {
      rc = ts_exec_run(sh->model, session, in_names, inputs, (int)ni,
                       out_names, outputs, n_out, &err);
      fuzz_check_refusal(rc, &err, "ts_exec_run");
    }
    for (size_t i = 0; i < ni; i++) ts_tensor_free(&inputs[i]);
    free(inputs);
    free(outputs);
    free(in_names);
    free(out_names);
  }
  if (sh) ts_store_release(store, sh);
out:
  ts_rpc_arena_release(&arena);
  return 0;
}
