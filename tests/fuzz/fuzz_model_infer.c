/*
 * fuzz_model_infer.c - a KServe ModelInferRequest from untrusted bytes, as
 * the coordinator's frontend takes it (coordinator/frontend/frontend.c):
 * unpacked into the request's arena, its model looked up by name, then
 * validated and bound (validate.c: ts_frontend_bind_inputs) and put in
 * the model's input order (ts_frontend_order_inputs). The models cover
 * every way inputs are bound: raw views, typed views, typed contents
 * narrowed into tensors of their own, symbolic and fixed dims.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"
#include "fuzz_message.h"
#include "validate.h"

static ts_io_info mlp_in[1] = {
    {.name = "embedding", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, 32}},
};
static ts_io_info mlp_out[1] = {
    {.name = "log_probs", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, 10}},
};
static ts_io_info mixed_in[5] = {
    {.name = "x", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, 3}},
    {.name = "flags", .dtype = TS_DTYPE_BOOL, .rank = 1, .dims = {2}},
    {.name = "ids", .dtype = TS_DTYPE_INT64, .rank = 1, .dims = {-1}},
    {.name = "small", .dtype = TS_DTYPE_INT8, .rank = 3, .dims = {-1, 2, -1}},
    {.name = "wide", .dtype = TS_DTYPE_UINT16, .rank = 1, .dims = {4}},
};
static ts_io_info mixed_out[2] = {
    {.name = "y", .dtype = TS_DTYPE_FLOAT, .rank = 2, .dims = {-1, 3}},
    {.name = "z", .dtype = TS_DTYPE_DOUBLE, .rank = 0, .dims = {0}},
};

static ts_served_model models[2];

static void models_init(void) {
  static int done;
  if (done) return;
  done = 1;
  snprintf(models[0].config.name, sizeof models[0].config.name, "mlp");
  models[0].inputs = mlp_in, models[0].n_inputs = 1;
  models[0].outputs = mlp_out, models[0].n_outputs = 1;
  snprintf(models[1].config.name, sizeof models[1].config.name, "mixed");
  models[1].inputs = mixed_in, models[1].n_inputs = 5;
  models[1].outputs = mixed_out, models[1].n_outputs = 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  models_init();
  ts_rpc_arena arena;
  Inference__ModelInferRequest *req = fuzz_message_unpack(
      &inference__model_infer_request__descriptor, &arena, data, size);
  if (req) {
    const ts_served_model *m = NULL;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
      if (strcmp(req->model_name, models[i].config.name) == 0) m = &models[i];
    if (!m) m = &models[req->model_name[0] & 1];
    ts_err err = {0};
    ts_tensor *inputs = NULL;
    int n_bound = 0;
    int rc = ts_frontend_bind_inputs(req, m, &arena, &inputs, &n_bound, &err);
    fuzz_check_refusal(rc, &err, "ts_frontend_bind_inputs");
    if (rc == TS_OK) {
      ts_tensor *ordered = NULL;
      rc = ts_frontend_order_inputs(req, m, inputs, &arena, &ordered, &err);
      fuzz_check_refusal(rc, &err, "ts_frontend_order_inputs");
      /* Every model input is bound, with the model's dtype and rank. */
      for (int i = 0; rc == TS_OK && i < m->n_inputs; i++) {
        const ts_tensor *t = &ordered[i];
        if (t->dtype != m->inputs[i].dtype || t->rank != m->inputs[i].rank ||
            t->nbytes != (size_t)ts_tensor_numel(t) * ts_dtype_size(t->dtype))
          abort();
        if (t->nbytes) {
          volatile uint8_t sink = ((const uint8_t *)t->data)[t->nbytes - 1];
          (void)sink;
        }
      }
    }
    for (int i = 0; i < n_bound; i++) ts_tensor_free(&inputs[i]);
  }
  ts_rpc_arena_release(&arena);
  return 0;
}
