/*
 * cmd_infer.c - `tessera infer`: one ModelInfer (of --input files, or of
 * inputs generated from the model's metadata); each output printed in the
 * --format asked for, or written to the .npy file its --output names.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "npy.h"

/* The FILE of the --output spec naming `name`, or NULL (print it). Sets
 * *requested when some spec names it. */
static const char *output_file(const options *opt, const char *name,
                               bool *requested) {
  size_t n = strlen(name);
  *requested = false;
  for (int j = 0; j < opt->outputs.n; j++) {
    const char *spec = opt->outputs.items[j];
    if (strncmp(spec, name, n) != 0 || (spec[n] != '=' && spec[n] != '\0'))
      continue;
    *requested = true;
    return spec[n] == '=' ? spec + n + 1 : NULL;
  }
  return NULL;
}

/* Prints or writes every output of resp, then checks that each requested
 * output came back. */
static int show_infer_response(const options *opt,
                               const Inference__ModelInferResponse *resp,
                               cli_out *out, ts_err *err) {
  json_t *rows = json_array();
  json_object_set_new(out->root, "model_name", json_string(resp->model_name));
  json_object_set_new(out->root, "model_version", json_string(resp->model_version));
  json_object_set_new(out->root, "id", json_string(resp->id));
  json_object_set_new(out->root, "outputs", rows);
  for (size_t i = 0; i < resp->n_outputs; i++) {
    ts_tensor t;
    int rc = cli_decode_output(resp, i, &t, err);
    if (rc) return rc;
    bool requested;
    const char *name = resp->outputs[i]->name;
    const char *file = output_file(opt, name, &requested);
    if (file) rc = ts_npy_write(file, &t, err);
    if (!rc) cli_out_tensor(out, rows, name, &t, file);
    ts_tensor_free(&t);
    if (rc) return rc;
  }
  for (int j = 0; j < opt->outputs.n; j++) {
    const char *spec = opt->outputs.items[j];
    size_t n = strcspn(spec, "=");
    size_t i = 0;
    while (i < resp->n_outputs &&
           (strlen(resp->outputs[i]->name) != n ||
            strncmp(resp->outputs[i]->name, spec, n) != 0))
      i++;
    if (i == resp->n_outputs)
      return ts_err_set(err, TS_EIO,
                        "the server did not return requested output '%.*s'",
                        (int)n, spec);
  }
  return TS_OK;
}

int cmd_infer(cli *c, ts_err *err) {
  uint8_t *req = NULL;
  size_t len = 0;
  ProtobufCMessage *resp = NULL;
  cli_out out;
  int rc = cli_prepare_infer_request(c, &req, &len, err);
  if (rc) return rc;
  /* A table shows each output as it is decoded; the other formats print
   * the whole document at the end. */
  cli_out_init(&out, c->opt->format);
  rc = cli_call_bytes(c, KSERVE_SERVICE "ModelInfer", req, len,
                      &inference__model_infer_response__descriptor, &resp, err);
  if (!rc)
    rc = show_infer_response(c->opt, (Inference__ModelInferResponse *)resp,
                             &out, err);
  if (!rc && c->opt->format != CLI_FORMAT_TABLE)
    rc = cli_out_print(&out, err);
  cli_out_free(&out);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  free(req);
  return rc;
}
