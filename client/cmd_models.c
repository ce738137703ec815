/*
 * cmd_models.c - the repository commands: `tessera models` (RepositoryIndex),
 * `load` and `unload`.
 */
#include <stdio.h>

#include "client.h"

int cli_fetch_index(cli *c, Inference__RepositoryIndexResponse **index,
                    ts_err *err) {
  Inference__RepositoryIndexRequest req = INFERENCE__REPOSITORY_INDEX_REQUEST__INIT;
  return cli_call(c, KSERVE_SERVICE "RepositoryIndex", &req.base,
                  &inference__repository_index_response__descriptor,
                  (ProtobufCMessage **)index, err);
}

json_t *cli_index_json(const Inference__RepositoryIndexResponse *index) {
  json_t *rows = json_array();
  for (size_t i = 0; i < index->n_models; i++) {
    const Inference__RepositoryIndexResponse__ModelIndex *m = index->models[i];
    json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:s}", "name", m->name,
                                          "version", m->version, "state", m->state,
                                          "reason", m->reason));
  }
  return rows;
}

int cmd_models(cli *c, ts_err *err) {
  Inference__RepositoryIndexResponse *index;
  cli_out out;
  int rc = cli_fetch_index(c, &index, err);
  if (rc) return rc;
  cli_out_init(&out, c->opt->format);
  json_object_set_new(out.root, "models", cli_index_json(index));
  protobuf_c_message_free_unpacked(&index->base, NULL);
  return cli_out_print(&out, err);
}

/* RepositoryModelLoad and RepositoryModelUnload: requests of one layout
 * (repository_name, model_name, parameters), so one function fills either
 * through its descriptor. Sent to every --server, never failed over: each
 * server serves what it loaded itself, so a model loaded on only some
 * would be missing from the others. With one server it prints
 * "DONE NAME"; with several, "DONE NAME on SERVER" for each that did and
 * "tessera: SERVER: STATUS: message" on stderr for each that did not, and
 * fails (err naming how many) unless every one did. */
static int repository_action(cli *c, const char *method,
                             const ProtobufCMessageDescriptor *req_desc,
                             const ProtobufCMessageDescriptor *resp_desc,
                             const char *done, ts_err *err) {
  union {
    Inference__RepositoryModelLoadRequest load;
    Inference__RepositoryModelUnloadRequest unload;
  } req;
  ProtobufCMessage *resp;
  const ProtobufCFieldDescriptor *name =
      protobuf_c_message_descriptor_get_field_by_name(req_desc, "model_name");
  TS_ASSERT(name && req_desc->sizeof_message <= sizeof req);
  protobuf_c_message_init(req_desc, &req);
  *(const char **)((char *)&req + name->offset) = c->opt->model;
  if (c->n_servers == 1) {
    int rc = cli_call_on(c, 0, method, (const ProtobufCMessage *)&req,
                         resp_desc, &resp, err);
    if (rc) return rc;
    protobuf_c_message_free_unpacked(resp, NULL);
    printf("%s %s\n", done, c->opt->model);
    return TS_OK;
  }
  int failed = 0, first_rc = TS_OK;
  for (int i = 0; i < c->n_servers; i++) {
    ts_err one;
    ts_err_clear(&one);
    int rc = cli_call_on(c, i, method, (const ProtobufCMessage *)&req,
                         resp_desc, &resp, &one);
    if (rc == TS_OK) {
      protobuf_c_message_free_unpacked(resp, NULL);
      printf("%s %s on %s\n", done, c->opt->model, c->servers[i]);
      continue;
    }
    fprintf(stderr, "tessera: %s: %s: %s\n", c->servers[i],
            ts_rpc_status_name(ts_err_grpc_status(rc)), one.msg);
    if (failed++ == 0) first_rc = rc;
  }
  fflush(stdout);
  if (failed)
    return ts_err_set(err, first_rc, "model %s: %d of %d servers failed",
                      c->opt->model, failed, c->n_servers);
  return TS_OK;
}

int cmd_load(cli *c, ts_err *err) {
  return repository_action(
      c, KSERVE_SERVICE "RepositoryModelLoad",
      &inference__repository_model_load_request__descriptor,
      &inference__repository_model_load_response__descriptor, "loaded", err);
}

int cmd_unload(cli *c, ts_err *err) {
  return repository_action(
      c, KSERVE_SERVICE "RepositoryModelUnload",
      &inference__repository_model_unload_request__descriptor,
      &inference__repository_model_unload_response__descriptor, "unloaded",
      err);
}
