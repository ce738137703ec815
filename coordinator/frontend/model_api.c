/* model_api.c - see model_api.h. */
#include "model_api.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "batcher.h"
#include "metrics.h"

#define NEW(arena, type) ((type *)ts_rpc_arena_calloc((arena), sizeof(type)))
#define NEW_ARRAY(arena, type, n) \
  ((type *)ts_rpc_arena_calloc((arena), sizeof(type) * (size_t)((n) ? (n) : 1)))

/* Triton's DataType of a Tessera dtype: "TYPE_" + its KServe name (the
 * two name lists agree but for BYTES, which Triton calls STRING), looked
 * up in the generated enum so that no second table exists. */
static Inference__DataType data_type(ts_dtype t) {
  const char *kserve = ts_dtype_kserve_name(t);
  char name[32];
  if (!kserve || strcmp(kserve, "BYTES") == 0) kserve = "STRING";
  snprintf(name, sizeof name, "TYPE_%s", kserve);
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(
      &inference__data_type__descriptor, name);
  return v ? (Inference__DataType)v->value : INFERENCE__DATA_TYPE__TYPE_INVALID;
}

/* A printf'd string in the arena, or NULL. */
static char *arena_printf(ts_rpc_arena *arena, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(ts_rpc_arena *arena, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = n < 0 ? NULL : ts_rpc_arena_calloc(arena, (size_t)n + 1);
  if (s) {
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  return s;
}

typedef Inference__ModelConfig__ParametersEntry param_entry;

/* Room for the parameters a model reports. */
#define MAX_PARAMS 8

typedef struct params {
  param_entry **entries;
  size_t n;
  int oom;
} params;

static void param_add(params *p, ts_rpc_arena *arena, const char *key,
                      char *value) {
  param_entry *e = NEW(arena, param_entry);
  Inference__ModelParameter *v = NEW(arena, Inference__ModelParameter);
  if (!e || !v || !value || p->n >= MAX_PARAMS) {
    p->oom = 1;
    return;
  }
  inference__model_config__parameters_entry__init(e);
  inference__model_parameter__init(v);
  e->key = (char *)key;
  v->string_value = value;
  e->value = v;
  p->entries[p->n++] = e;
}

/* strategy, stages, shards (per stage, '+'-separated), replicas,
 * weight_bytes and a one-line summary, `plan`. */
static void plan_params(const ts_served_model *m, ts_rpc_arena *arena,
                        params *p) {
  const ts_plan *plan = m->plan;
  char shards[256] = "";
  size_t used = 0;
  int total = 0;
  for (int s = 0; s < plan->n_stages && used < sizeof shards; s++) {
    used += (size_t)snprintf(shards + used, sizeof shards - used, "%s%d",
                             s ? "+" : "", plan->stages[s].n_shards);
    total += plan->stages[s].n_shards;
  }
  const char *strategy = ts_strategy_name(plan->strategy);
  param_add(p, arena, "strategy", (char *)strategy);
  param_add(p, arena, "stages", arena_printf(arena, "%d", plan->n_stages));
  param_add(p, arena, "shards", arena_printf(arena, "%s", shards));
  param_add(p, arena, "replicas", arena_printf(arena, "%d", m->n_replicas));
  param_add(p, arena, "weight_bytes",
            arena_printf(arena, "%zu", plan->weight_bytes));
  param_add(p, arena, "plan",
            arena_printf(arena, "%s: %d stage(s), shards %s (%d), %d "
                         "replica(s) each, %zu weight bytes",
                         strategy, plan->n_stages, shards, total,
                         m->n_replicas, plan->weight_bytes));
}

static void ensemble_params(const ts_served_model *m, ts_rpc_arena *arena,
                            params *p) {
  char members[TS_ENSEMBLE_MAX * TS_MODEL_NAME_MAX] = "";
  size_t used = 0;
  for (int i = 0; i < m->config.n_members && used < sizeof members; i++)
    used += (size_t)snprintf(members + used, sizeof members - used, "%s%s",
                             i ? "+" : "", m->config.members[i]);
  param_add(p, arena, "members", arena_printf(arena, "%s", members));
  param_add(p, arena, "fuse", (char *)ts_fuse_name(m->config.fuse));
}

/* dims of io, without the batch dim when `batched`; in the arena. */
static int64_t *io_dims(const ts_io_info *io, int batched, size_t *n,
                        ts_rpc_arena *arena) {
  int skip = batched && io->rank > 0;
  *n = (size_t)(io->rank - skip);
  int64_t *dims = NEW_ARRAY(arena, int64_t, *n);
  if (dims) memcpy(dims, io->dims + skip, *n * sizeof *dims);
  return dims;
}

static Inference__ModelEnsembling *ensemble_steps(const ts_served_model *m,
                                                  ts_rpc_arena *arena) {
  Inference__ModelEnsembling *e = NEW(arena, Inference__ModelEnsembling);
  typedef Inference__ModelEnsembling__Step step;
  step **steps = NEW_ARRAY(arena, step *, m->config.n_members);
  if (!e || !steps) return NULL;
  inference__model_ensembling__init(e);
  for (int i = 0; i < m->config.n_members; i++) {
    if (!(steps[i] = NEW(arena, step))) return NULL;
    inference__model_ensembling__step__init(steps[i]);
    steps[i]->model_name = (char *)m->config.members[i];
    steps[i]->model_version = -1;
  }
  e->n_step = (size_t)m->config.n_members;
  e->step = steps;
  return e;
}

int ts_model_api_config(const ts_served_model *m, ts_rpc_arena *arena,
                        Inference__ModelConfig *out, ts_err *err) {
  inference__model_config__init(out);
  int batched = ts_batcher_batches(m);
  int oom = 0;
  out->name = (char *)m->config.name;
  out->platform = m->config.is_ensemble ? "ensemble" : "onnxruntime_onnx";
  out->backend = m->config.is_ensemble ? "" : "tessera";
  out->max_batch_size = batched ? m->config.max_batch : 0;

  Inference__ModelVersionPolicy *policy =
      NEW(arena, Inference__ModelVersionPolicy);
  Inference__ModelVersionPolicy__Latest *latest =
      NEW(arena, Inference__ModelVersionPolicy__Latest);
  if (policy && latest) {
    inference__model_version_policy__init(policy);
    inference__model_version_policy__latest__init(latest);
    latest->num_versions = 1;
    policy->policy_choice_case =
        INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST;
    policy->latest = latest;
    out->version_policy = policy;
  }
  oom |= !policy || !latest;

  out->input = NEW_ARRAY(arena, Inference__ModelInput *, m->n_inputs);
  oom |= !out->input;
  for (int i = 0; !oom && i < m->n_inputs; i++) {
    Inference__ModelInput *in = NEW(arena, Inference__ModelInput);
    if (!(oom = !in)) {
      inference__model_input__init(in);
      in->name = m->inputs[i].name;
      in->data_type = data_type(m->inputs[i].dtype);
      in->dims = io_dims(&m->inputs[i], batched, &in->n_dims, arena);
      oom = !in->dims;
      out->input[out->n_input++] = in;
    }
  }
  out->output = NEW_ARRAY(arena, Inference__ModelOutput *, m->n_outputs);
  oom |= !out->output;
  for (int i = 0; !oom && i < m->n_outputs; i++) {
    Inference__ModelOutput *o = NEW(arena, Inference__ModelOutput);
    if (!(oom = !o)) {
      inference__model_output__init(o);
      o->name = m->outputs[i].name;
      o->data_type = data_type(m->outputs[i].dtype);
      o->dims = io_dims(&m->outputs[i], batched, &o->n_dims, arena);
      oom = !o->dims;
      out->output[out->n_output++] = o;
    }
  }

  if (batched) {
    Inference__ModelDynamicBatching *db =
        NEW(arena, Inference__ModelDynamicBatching);
    if (db) {
      inference__model_dynamic_batching__init(db);
      db->max_queue_delay_microseconds = (uint64_t)m->config.batch_delay_us;
      out->scheduling_choice_case =
          INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING;
      out->dynamic_batching = db;
    }
    oom |= !db;
  } else if (m->config.is_ensemble) {
    Inference__ModelEnsembling *e = ensemble_steps(m, arena);
    if (e) {
      out->scheduling_choice_case =
          INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_ENSEMBLE_SCHEDULING;
      out->ensemble_scheduling = e;
    }
    oom |= !e;
  }

  params p = {NEW_ARRAY(arena, param_entry *, MAX_PARAMS), 0, 0};
  if (!p.entries) p.oom = 1;
  else if (m->plan) plan_params(m, arena, &p);
  else if (m->config.is_ensemble) ensemble_params(m, arena, &p);
  out->n_parameters = p.n;
  out->parameters = p.entries;
  if (oom || p.oom) return ts_err_set(err, TS_ENOMEM, "out of memory");
  return TS_OK;
}

static Inference__StatisticDuration *duration(const ts_duration_stat *d,
                                              ts_rpc_arena *arena) {
  Inference__StatisticDuration *s = NEW(arena, Inference__StatisticDuration);
  if (s) {
    inference__statistic_duration__init(s);
    s->count = d->count;
    s->ns = d->ns;
  }
  return s;
}

int ts_model_api_statistics(const ts_served_model *m, ts_rpc_arena *arena,
                            Inference__ModelStatistics *out, ts_err *err) {
  ts_model_stats st;
  ts_coord_metrics_model_stats(m->config.name, &st);
  inference__model_statistics__init(out);
  out->name = (char *)m->config.name;
  out->version = ts_model_config_version_str(
      &m->config, ts_rpc_arena_calloc(arena, TS_VERSION_STR_MAX));
  if (!out->version) return ts_err_set(err, TS_ENOMEM, "out of memory");
  out->last_inference = st.last_inference_ms;
  out->inference_count = st.inference_count;
  out->execution_count = st.execution_count;
  Inference__InferStatistics *is = NEW(arena, Inference__InferStatistics);
  if (!is) return ts_err_set(err, TS_ENOMEM, "out of memory");
  inference__infer_statistics__init(is);
  is->success = duration(&st.success, arena);
  is->fail = duration(&st.fail, arena);
  is->queue = duration(&st.queue, arena);
  is->compute_input = duration(&st.compute_input, arena);
  is->compute_infer = duration(&st.compute_infer, arena);
  is->compute_output = duration(&st.compute_output, arena);
  out->inference_stats = is;
  if (!is->success || !is->fail || !is->queue || !is->compute_input ||
      !is->compute_infer || !is->compute_output)
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  return TS_OK;
}
