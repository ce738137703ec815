/*
 * cmd_status.c - `tessera metadata` (ServerMetadata, ModelMetadata) and
 * `tessera status`: the server, its models with their metadata, then on
 * Tessera the workers, model states and shard map (proto/admin.proto).
 * Each builds a document for format.c to print.
 */
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "admin.pb-c.h"

static json_t *string_array(char *const *items, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(items[i]));
  return a;
}

/* {server, version, extensions} */
static int server_metadata_json(cli *c, json_t **out, ts_err *err) {
  Inference__ServerMetadataRequest req = INFERENCE__SERVER_METADATA_REQUEST__INIT;
  Inference__ServerMetadataResponse *resp;
  int rc = cli_call(c, KSERVE_SERVICE "ServerMetadata", &req.base,
                    &inference__server_metadata_response__descriptor,
                    (ProtobufCMessage **)&resp, err);
  if (rc) return rc;
  *out = json_object();
  json_object_set_new(*out, "server", json_string(resp->name));
  json_object_set_new(*out, "version", json_string(resp->version));
  json_object_set_new(*out, "extensions",
                      string_array(resp->extensions, resp->n_extensions));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return TS_OK;
}

/* Rows {name, datatype, shape}; a dim of -1 is variable. */
static json_t *tensor_metadata_json(
    size_t n, Inference__ModelMetadataResponse__TensorMetadata *const *tensors) {
  json_t *rows = json_array();
  for (size_t i = 0; i < n; i++) {
    int rank = tensors[i]->n_shape > 64 ? 64 : (int)tensors[i]->n_shape;
    json_array_append_new(rows, json_pack("{s:s, s:s, s:o}", "name", tensors[i]->name,
                                          "datatype", tensors[i]->datatype, "shape",
                                          cli_shape_json(tensors[i]->shape, rank)));
  }
  return rows;
}

int cli_fetch_model_metadata(cli *c, const char *model,
                             Inference__ModelMetadataResponse **md,
                             ts_err *err) {
  Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
  req.name = (char *)model;
  return cli_call(c, KSERVE_SERVICE "ModelMetadata", &req.base,
                  &inference__model_metadata_response__descriptor,
                  (ProtobufCMessage **)md, err);
}

/* {model, platform, versions, inputs, outputs} */
static int model_metadata_json(cli *c, const char *model, json_t **out,
                               ts_err *err) {
  Inference__ModelMetadataResponse *resp;
  int rc = cli_fetch_model_metadata(c, model, &resp, err);
  if (rc) return rc;
  *out = json_object();
  json_object_set_new(*out, "model", json_string(resp->name));
  json_object_set_new(*out, "platform", json_string(resp->platform));
  json_object_set_new(*out, "versions",
                      string_array(resp->versions, resp->n_versions));
  json_object_set_new(*out, "inputs",
                      tensor_metadata_json(resp->n_inputs, resp->inputs));
  json_object_set_new(*out, "outputs",
                      tensor_metadata_json(resp->n_outputs, resp->outputs));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return TS_OK;
}

int cmd_metadata(cli *c, ts_err *err) {
  cli_out out;
  json_t *doc = NULL;
  int rc = c->opt->model ? model_metadata_json(c, c->opt->model, &doc, err)
                         : server_metadata_json(c, &doc, err);
  if (rc) return rc;
  out.format = c->opt->format;
  out.root = doc;
  return cli_out_print(&out, err);
}

/* `status` sections: the models, then each ready model's metadata. A model
 * whose metadata fails is listed with its error; the others still show. */
static int models_status_json(cli *c, json_t *root, ts_err *err) {
  Inference__RepositoryIndexResponse *index;
  int rc = cli_fetch_index(c, &index, err);
  if (rc) return rc;
  json_t *list = json_array();
  json_object_set_new(root, "models", cli_index_json(index));
  for (size_t i = 0; i < index->n_models; i++) {
    const Inference__RepositoryIndexResponse__ModelIndex *m = index->models[i];
    if (strcmp(m->state, "READY") != 0) continue;
    ts_err model_err;
    json_t *md = NULL;
    if (model_metadata_json(c, m->name, &md, &model_err)) {
      md = json_object();
      json_object_set_new(md, "model", json_string(m->name));
      json_object_set_new(md, "error", json_string(model_err.msg));
    }
    json_array_append_new(list, md);
  }
  json_object_set_new(root, "metadata", list);
  protobuf_c_message_free_unpacked(&index->base, NULL);
  return TS_OK;
}

static json_t *workers_json(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  json_t *rows = json_array();
  for (size_t i = 0; i < st->n_workers; i++) {
    const Tessera__Admin__V1__WorkerState *w = st->workers[i];
    /* "up" stays lower case, as scripts read it; the others stand out. */
    const char *state = w->state[0] && strcmp(w->state, "UP") != 0 ? w->state
                        : w->up ? "up" : "DOWN";
    json_array_append_new(
        rows, json_pack("{s:i, s:s, s:s, s:i, s:I, s:o, s:i, s:I, s:I, s:I, s:I}",
                        "worker",
                        w->index, "address", w->address, "state", state, "threads",
                        w->threads, "planned_bytes", (json_int_t)w->memory_planned,
                        "limit_bytes",
                        w->memory_limit ? json_integer((json_int_t)w->memory_limit)
                                        : json_null(),
                        "in_flight", w->outstanding, "calls", (json_int_t)w->calls,
                        "failures", (json_int_t)w->failures, "rtt_us",
                        (json_int_t)w->rtt_us, "throughput_bytes_per_s",
                        (json_int_t)w->throughput_bytes_per_s));
  }
  return rows;
}

static json_t *model_states_json(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  json_t *rows = json_array();
  for (size_t i = 0; i < st->n_models; i++) {
    const Tessera__Admin__V1__ModelState *m = st->models[i];
    json_t *strategy = m->n_members
                           ? json_sprintf("ensemble(%s) of %zu", m->fuse, m->n_members)
                           : json_string(m->strategy);
    json_t *precision = m->n_members ? json_null() : json_string(m->precision);
    json_array_append_new(
        rows, json_pack("{s:s, s:s, s:o, s:o, s:i, s:i, s:I, s:I, s:I}", "model", m->name,
                        "state", m->state, "strategy", strategy, "precision", precision,
                        "stages", m->stages, "replicas", m->replicas, "weight_bytes",
                        (json_int_t)m->weight_bytes, "requests",
                        (json_int_t)m->requests, "failures",
                        (json_int_t)m->failures));
  }
  return rows;
}

static json_t *shards_json(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  json_t *rows = json_array();
  for (size_t i = 0; i < st->n_shards; i++) {
    const Tessera__Admin__V1__ShardPlacement *s = st->shards[i];
    json_t *workers = json_array();
    for (size_t w = 0; w < s->n_workers; w++) {
      json_t *replica = json_object();
      json_object_set_new(replica, "worker", json_integer(s->workers[w]));
      if (w < s->n_replica_states)
        json_object_set_new(replica, "state", json_string(s->replica_states[w]));
      json_array_append_new(workers, replica);
    }
    json_array_append_new(
        rows, json_pack("{s:s, s:i, s:i, s:s, s:I, s:o, s:I}", "model", s->model,
                        "stage", s->stage, "shard", s->shard, "label", s->label,
                        "bytes", (json_int_t)s->bytes, "workers", workers, "moves",
                        (json_int_t)s->moves));
  }
  return rows;
}

/* Tessera's own admin API (proto/admin.proto): workers, model states and
 * the shard map. Other KServe servers lack it; that is not an error, and
 * admin_api says which it was. */
static int cluster_status_json(cli *c, json_t *root, ts_err *err) {
  Tessera__Admin__V1__ClusterStatusRequest req =
      TESSERA__ADMIN__V1__CLUSTER_STATUS_REQUEST__INIT;
  Tessera__Admin__V1__ClusterStatusResponse *st;
  json_t *cluster = json_object();
  json_object_set_new(root, "cluster", cluster);
  int rc = cli_call(c, ADMIN_SERVICE "ClusterStatus", &req.base,
                    &tessera__admin__v1__cluster_status_response__descriptor,
                    (ProtobufCMessage **)&st, err);
  json_object_set_new(cluster, "admin_api", json_boolean(rc != TS_EUNSUPPORTED));
  if (rc == TS_EUNSUPPORTED) return TS_OK;
  if (rc) return rc;
  json_object_set_new(cluster, "workers", workers_json(st));
  json_object_set_new(cluster, "models", model_states_json(st));
  json_object_set_new(cluster, "shards", shards_json(st));
  protobuf_c_message_free_unpacked(&st->base, NULL);
  return TS_OK;
}

int cmd_status(cli *c, ts_err *err) {
  cli_out out;
  json_t *server = NULL;
  int rc = server_metadata_json(c, &server, err);
  if (rc) return rc;
  cli_out_init(&out, c->opt->format);
  json_object_set_new(out.root, "server", server);
  rc = models_status_json(c, out.root, err);
  if (!rc) rc = cluster_status_json(c, out.root, err);
  if (rc) {
    cli_out_free(&out);
    return rc;
  }
  return cli_out_print(&out, err);
}
