/*
 * cmd_status.c - `tessera metadata` (ServerMetadata, ModelMetadata) and
 * `tessera status`: the server, its models with their metadata, then on
 * Tessera the workers, model states and shard map (proto/admin.proto).
 */
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "admin.pb-c.h"

/* "label: a, b, c" on one line. */
static void print_list(const char *label, char *const *items, size_t n) {
  printf("%s:", label);
  for (size_t i = 0; i < n; i++) printf("%s %s", i ? "," : "", items[i]);
  printf("\n");
}

static int show_server_metadata(cli *c, ts_err *err) {
  Inference__ServerMetadataRequest req = INFERENCE__SERVER_METADATA_REQUEST__INIT;
  Inference__ServerMetadataResponse *resp;
  int rc = cli_call(c, KSERVE_SERVICE "ServerMetadata", &req.base,
                    &inference__server_metadata_response__descriptor,
                    (ProtobufCMessage **)&resp, err);
  if (rc) return rc;
  printf("server: %s %s\n", resp->name, resp->version);
  print_list("extensions", resp->extensions, resp->n_extensions);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return TS_OK;
}

static void print_tensor_metadata(
    const char *title, size_t n,
    Inference__ModelMetadataResponse__TensorMetadata *const *tensors) {
  text_table t = {0};
  printf("%s:\n", title);
  TABLE_HEADER(&t, "NAME", "DATATYPE", "SHAPE");
  for (size_t i = 0; i < n; i++) {
    char shape[256];
    int rank = tensors[i]->n_shape > 64 ? 64 : (int)tensors[i]->n_shape;
    cli_table_cell(&t, "%s", tensors[i]->name);
    cli_table_cell(&t, "%s", tensors[i]->datatype);
    cli_table_cell(&t, "%s",
                   ts_shape_str(tensors[i]->shape, rank, shape, sizeof shape));
  }
  cli_table_print(&t, "  ");
}

static int show_model_metadata(cli *c, const char *model, ts_err *err) {
  Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
  Inference__ModelMetadataResponse *resp;
  req.name = (char *)model;
  int rc = cli_call(c, KSERVE_SERVICE "ModelMetadata", &req.base,
                    &inference__model_metadata_response__descriptor,
                    (ProtobufCMessage **)&resp, err);
  if (rc) return rc;
  printf("model: %s\nplatform: %s\n", resp->name, resp->platform);
  print_list("versions", resp->versions, resp->n_versions);
  print_tensor_metadata("inputs", resp->n_inputs, resp->inputs);
  print_tensor_metadata("outputs", resp->n_outputs, resp->outputs);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return TS_OK;
}

int cmd_metadata(cli *c, ts_err *err) {
  if (c->opt->model) return show_model_metadata(c, c->opt->model, err);
  return show_server_metadata(c, err);
}

/* `status` sections: the models, then each ready model's metadata. A model
 * whose metadata fails is reported inline; the others still show. */
static int show_models_status(cli *c, ts_err *err) {
  Inference__RepositoryIndexResponse *index;
  int rc = cli_fetch_index(c, &index, err);
  if (rc) return rc;
  cli_print_index(index);
  for (size_t i = 0; i < index->n_models; i++) {
    const Inference__RepositoryIndexResponse__ModelIndex *m = index->models[i];
    if (strcmp(m->state, "READY") != 0) continue;
    ts_err model_err;
    printf("\n");
    if (show_model_metadata(c, m->name, &model_err))
      printf("model: %s\n  metadata unavailable: %s\n", m->name,
             model_err.msg);
  }
  protobuf_c_message_free_unpacked(&index->base, NULL);
  return TS_OK;
}

static void print_workers(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  text_table t = {0};
  TABLE_HEADER(&t, "WORKER", "ADDRESS", "STATE", "THREADS", "PLANNED", "LIMIT",
               "IN FLIGHT", "CALLS", "FAILURES");
  for (size_t i = 0; i < st->n_workers; i++) {
    const Tessera__Admin__V1__WorkerState *w = st->workers[i];
    char planned[32], limit[32];
    cli_format_bytes(w->memory_planned, planned, sizeof planned);
    cli_format_bytes(w->memory_limit, limit, sizeof limit);
    cli_table_cell(&t, "%d", w->index);
    cli_table_cell(&t, "%s", w->address);
    /* "up" stays lower case, as scripts read it; the others stand out. */
    if (w->state[0] && strcmp(w->state, "UP") != 0)
      cli_table_cell(&t, "%s", w->state);
    else
      cli_table_cell(&t, "%s", w->up ? "up" : "DOWN");
    cli_table_cell(&t, "%d", w->threads);
    cli_table_cell(&t, "%s", planned);
    cli_table_cell(&t, "%s", w->memory_limit ? limit : "none");
    cli_table_cell(&t, "%d", w->outstanding);
    cli_table_cell(&t, "%llu", (unsigned long long)w->calls);
    cli_table_cell(&t, "%llu", (unsigned long long)w->failures);
  }
  cli_table_print(&t, "");
}

static void print_model_states(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  text_table t = {0};
  TABLE_HEADER(&t, "MODEL", "STATE", "STRATEGY", "STAGES", "REPLICAS",
               "WEIGHTS", "REQUESTS", "FAILURES");
  for (size_t i = 0; i < st->n_models; i++) {
    const Tessera__Admin__V1__ModelState *m = st->models[i];
    char weights[32];
    cli_format_bytes(m->weight_bytes, weights, sizeof weights);
    cli_table_cell(&t, "%s", m->name);
    cli_table_cell(&t, "%s", m->state);
    if (m->n_members) {
      cli_table_cell(&t, "ensemble(%s) of %zu", m->fuse, m->n_members);
    } else {
      cli_table_cell(&t, "%s", m->strategy);
    }
    cli_table_cell(&t, "%d", m->stages);
    cli_table_cell(&t, "%d", m->replicas);
    cli_table_cell(&t, "%s", weights);
    cli_table_cell(&t, "%llu", (unsigned long long)m->requests);
    cli_table_cell(&t, "%llu", (unsigned long long)m->failures);
  }
  cli_table_print(&t, "");
}

static void print_shards(const Tessera__Admin__V1__ClusterStatusResponse *st) {
  text_table t = {0};
  TABLE_HEADER(&t, "MODEL", "STAGE", "SHARD", "LABEL", "BYTES", "WORKERS",
               "MOVES");
  for (size_t i = 0; i < st->n_shards; i++) {
    const Tessera__Admin__V1__ShardPlacement *s = st->shards[i];
    char bytes[32], workers[256] = "";
    size_t off = 0;
    cli_format_bytes(s->bytes, bytes, sizeof bytes);
    for (size_t w = 0; w < s->n_workers && off < sizeof workers; w++)
      off += (size_t)snprintf(
          workers + off, sizeof workers - off, "%s%d%s%s%s", w ? "," : "",
          s->workers[w], w < s->n_replica_states ? "(" : "",
          w < s->n_replica_states ? s->replica_states[w] : "",
          w < s->n_replica_states ? ")" : "");
    cli_table_cell(&t, "%s", s->model);
    cli_table_cell(&t, "%d", s->stage);
    cli_table_cell(&t, "%d", s->shard);
    cli_table_cell(&t, "%s", s->label);
    cli_table_cell(&t, "%s", bytes);
    cli_table_cell(&t, "%s", workers);
    cli_table_cell(&t, "%u", s->moves);
  }
  cli_table_print(&t, "");
}

/* Tessera's own admin API (proto/admin.proto): workers, model states and
 * the shard map. Other KServe servers lack it; that is not an error. */
static int show_cluster_status(cli *c, ts_err *err) {
  Tessera__Admin__V1__ClusterStatusRequest req =
      TESSERA__ADMIN__V1__CLUSTER_STATUS_REQUEST__INIT;
  Tessera__Admin__V1__ClusterStatusResponse *st;
  int rc = cli_call(c, ADMIN_SERVICE "ClusterStatus", &req.base,
                    &tessera__admin__v1__cluster_status_response__descriptor,
                    (ProtobufCMessage **)&st, err);
  if (rc == TS_EUNSUPPORTED) {
    printf("(this server has no Tessera admin API)\n");
    return TS_OK;
  }
  if (rc) return rc;
  print_workers(st);
  printf("\n");
  print_model_states(st);
  printf("\n");
  print_shards(st);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  return TS_OK;
}

/* Sections of `tessera status`, in order. */
static const struct status_section {
  const char *title;
  int (*show)(cli *c, ts_err *err);
} status_sections[] = {
    {"server", show_server_metadata},
    {"models", show_models_status},
    {"cluster", show_cluster_status},
};

int cmd_status(cli *c, ts_err *err) {
  for (size_t i = 0; i < sizeof status_sections / sizeof status_sections[0];
       i++) {
    printf("%s== %s ==\n", i ? "\n" : "", status_sections[i].title);
    int rc = status_sections[i].show(c, err);
    if (rc) return rc;
  }
  return TS_OK;
}
