/*
 * request.c - LoadShard chunks and RunShard requests decoded and checked.
 * See request.h.
 */
#include "request.h"

#include <stdbool.h>
#include <string.h>

#include "options.h"
#include "wire.h"

#define SHOWN_NAME_MAX 512 /* a name of 100 bytes, escaped */

int ts_load_chunk_apply(ts_store *store, ts_store_upload **upload,
                        uint64_t index, const uint8_t *msg, size_t len,
                        ts_err *err) {
  int rc = TS_OK;
  Tessera__Worker__V1__LoadShardChunk *chunk =
      tessera__worker__v1__load_shard_chunk__unpack(NULL, len, msg);
  if (!chunk) {
    rc = ts_err_set(err, TS_EINVAL, "chunk %llu: malformed LoadShardChunk "
                    "(%zu bytes)", (unsigned long long)index, len);
    goto out;
  }
  if (!*upload) {
    /* First chunk: the header. */
    rc = ts_store_upload_begin(store, chunk->shard_id, chunk->total_bytes,
                               chunk->label, upload, err);
    if (rc) {
      *upload = NULL;
      goto out;
    }
  } else {
    /* Later chunks may repeat the header; if they do it must agree. */
    const char *id = ts_store_upload_id(*upload);
    if (chunk->shard_id[0] && strcmp(chunk->shard_id, id) != 0) {
      rc = ts_err_set(err, TS_EINVAL,
                      "chunk %llu: shard_id '%.80s' differs from the first "
                      "chunk's %s", (unsigned long long)index,
                      chunk->shard_id, id);
      goto out;
    }
    uint64_t total = ts_store_upload_total(*upload);
    if (chunk->total_bytes && chunk->total_bytes != total) {
      rc = ts_err_set(err, TS_EINVAL,
                      "chunk %llu: total_bytes %llu differs from the first "
                      "chunk's %llu", (unsigned long long)index,
                      (unsigned long long)chunk->total_bytes,
                      (unsigned long long)total);
      goto out;
    }
  }
  if (chunk->data.len > TS_LOAD_CHUNK_MAX_BYTES) {
    rc = ts_err_set(err, TS_EINVAL,
                    "chunk %llu: data of %zu bytes is over the %u-byte chunk "
                    "limit", (unsigned long long)index, chunk->data.len,
                    TS_LOAD_CHUNK_MAX_BYTES);
    goto out;
  }
  rc = ts_store_upload_write(*upload, chunk->offset, chunk->data.data,
                             chunk->data.len, err);
out:
  if (rc && *upload) {
    ts_store_upload_abort(*upload);
    *upload = NULL;
  }
  if (chunk) tessera__worker__v1__load_shard_chunk__free_unpacked(chunk, NULL);
  return rc;
}

int ts_run_request_open(ts_store *store,
                        const Tessera__Worker__V1__RunShardRequest *req,
                        ts_stored_shard **shard, int *n_outputs,
                        ts_err *err) {
  *shard = NULL;
  int rc = ts_store_check_id("shard_id", req->shard_id, err);
  if (rc) return rc;
  ts_stored_shard *sh = *shard = ts_store_acquire(store, req->shard_id);
  if (!sh)
    return ts_err_set(err, TS_ENOTFOUND,
                      "shard %s is not loaded on this worker", req->shard_id);
  const ts_graph *g = &sh->model->graph;
  if (req->n_inputs > (size_t)g->n_values ||
      req->n_outputs > (size_t)g->n_values)
    return ts_err_set(err, TS_EINVAL,
                      "%zu inputs and %zu outputs requested; shard %.8s.. has "
                      "%d values", req->n_inputs, req->n_outputs, sh->id,
                      g->n_values);
  *n_outputs = req->n_outputs ? (int)req->n_outputs : g->n_outputs;
  return TS_OK;
}

/* Whether value v (-1: none) is one of the graph's outputs: the only
 * tensors a run may return (an initializer's name would return weights). */
static bool is_graph_output(const ts_graph *g, int v) {
  for (int i = 0; v >= 0 && i < g->n_outputs; i++)
    if (g->outputs[i] == v) return true;
  return false;
}

int ts_run_request_bind(const ts_stored_shard *shard,
                        const Tessera__Worker__V1__RunShardRequest *req,
                        int n_outputs, ts_tensor *inputs,
                        const char **input_names, const char **output_names,
                        ts_err *err) {
  const ts_graph *g = &shard->model->graph;
  for (size_t i = 0; i < req->n_inputs; i++) {
    if (ts_wire_tensor_view(req->inputs[i], &inputs[i], err))
      return ts_err_prefix(err, "inputs[%zu]", i);
    input_names[i] = req->inputs[i]->name;
  }
  for (int i = 0; i < n_outputs; i++) {
    if (req->n_outputs) {
      const char *name = req->outputs[i];
      if (!is_graph_output(g, ts_graph_find_value(g, name))) {
        char shown[SHOWN_NAME_MAX];
        ts_text_escape(name, 100, shown, sizeof shown);
        return ts_err_set(err, TS_EINVAL,
                          "outputs[%d]: '%s' is not an output of shard "
                          "%.8s.. '%s' (a run returns only the shard's graph "
                          "outputs, never its weights or intermediate "
                          "values)", i, shown, shard->id, shard->label);
      }
      output_names[i] = name;
    } else {
      output_names[i] = g->values[g->outputs[i]].name;
    }
  }
  return TS_OK;
}
