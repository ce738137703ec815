/*
 * metrics.c - the coordinator's Prometheus metrics. See metrics.h.
 *
 * Invariants: a model slot below `n_models` is fully written (name and
 * initialised histograms) before n_models is bumped with release order;
 * slots are never removed, so a pointer to one stays valid for the life of
 * the process.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batcher.h"
#include "frontend.h"
#include "http.h"
#include "membership.h"
#include "exposition.h"

#define GRPC_CODES 17

typedef struct model_metrics {
  char name[128];
  atomic_ullong requests[GRPC_CODES]; /* by gRPC status code */
  atomic_ullong ok_rows;              /* rows of OK requests */
  atomic_ullong ok_ns, fail_ns;       /* e2e of OK / failed requests */
  atomic_ullong last_ms;              /* wall clock of the last answer */
  ts_histogram input, queue, compute, output, e2e, batch;
} model_metrics;

typedef struct worker_metrics {
  atomic_ullong bytes_sent, bytes_received, down_events;
  atomic_ullong rtt_micro; /* last health check's round trip, x 1e6 */
  atomic_ullong rtt_ewma_micro; /* smoothed round trip, x 1e6; 0: none */
  atomic_ullong throughput;     /* smoothed RunShard bytes/s; 0: none */
} worker_metrics;

/* Weight of a new sample in the smoothed link figures. */
#define LINK_EWMA_ALPHA 0.2

static model_metrics models[TS_METRICS_MAX_MODELS];
static atomic_int n_models;
static pthread_mutex_t models_mu = PTHREAD_MUTEX_INITIALIZER;
static worker_metrics workers[TS_MAX_WORKERS];
static atomic_ullong retries[GRPC_CODES];

static void model_init(model_metrics *m, const char *name) {
  snprintf(m->name, sizeof m->name, "%s", name);
  for (int i = 0; i < GRPC_CODES; i++) atomic_init(&m->requests[i], 0);
  atomic_init(&m->ok_rows, 0);
  atomic_init(&m->ok_ns, 0);
  atomic_init(&m->fail_ns, 0);
  atomic_init(&m->last_ms, 0);
  ts_histogram_init(&m->input, &ts_histogram_seconds);
  ts_histogram_init(&m->output, &ts_histogram_seconds);
  ts_histogram_init(&m->queue, &ts_histogram_seconds);
  ts_histogram_init(&m->compute, &ts_histogram_seconds);
  ts_histogram_init(&m->e2e, &ts_histogram_seconds);
  ts_histogram_init(&m->batch, &ts_histogram_counts);
}

static model_metrics *find(const char *name, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(models[i].name, name) == 0) return &models[i];
  return NULL;
}

/* The slot of `name`, added on first use; the last slot is "_other". */
static model_metrics *model_slot(const char *name) {
  if (!name || !name[0]) name = "_none";
  model_metrics *m =
      find(name, atomic_load_explicit(&n_models, memory_order_acquire));
  if (m) return m;
  pthread_mutex_lock(&models_mu);
  int n = atomic_load(&n_models);
  if (!(m = find(name, n))) {
    if (n == TS_METRICS_MAX_MODELS - 1) name = "_other";
    if (!(m = find(name, n))) {
      m = &models[n];
      model_init(m, name);
      atomic_store_explicit(&n_models, n + 1, memory_order_release);
    }
  }
  pthread_mutex_unlock(&models_mu);
  return m;
}

static int grpc_code(int ts_code) {
  int c = ts_err_grpc_status(ts_code);
  return c >= 0 && c < GRPC_CODES ? c : 2;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ts_coord_metrics_request(const char *model, int code, int64_t rows,
                              double e2e) {
  model_metrics *m = model_slot(model);
  unsigned long long ns = (unsigned long long)(e2e > 0 ? e2e * 1e9 + 0.5 : 0);
  if (code == TS_OK) {
    atomic_fetch_add_explicit(&m->ok_rows,
                              (unsigned long long)(rows > 0 ? rows : 1),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->ok_ns, ns, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&m->fail_ns, ns, memory_order_relaxed);
  }
  atomic_store_explicit(&m->last_ms, wall_ms(), memory_order_relaxed);
  atomic_fetch_add_explicit(&m->requests[grpc_code(code)], 1,
                            memory_order_relaxed);
  ts_histogram_observe(&m->e2e, e2e);
}

void ts_coord_metrics_compute_input(const char *model, double seconds) {
  ts_histogram_observe(&model_slot(model)->input, seconds);
}

void ts_coord_metrics_compute_output(const char *model, double seconds) {
  ts_histogram_observe(&model_slot(model)->output, seconds);
}

void ts_coord_metrics_queue(const char *model, double seconds) {
  ts_histogram_observe(&model_slot(model)->queue, seconds);
}

void ts_coord_metrics_compute(const char *model, double seconds) {
  ts_histogram_observe(&model_slot(model)->compute, seconds);
}

void ts_coord_metrics_batch(const char *model, int64_t rows) {
  ts_histogram_observe(&model_slot(model)->batch, (double)rows);
}

void ts_coord_metrics_retry(int status) {
  if (status < 0 || status >= GRPC_CODES) status = 2;
  atomic_fetch_add_explicit(&retries[status], 1, memory_order_relaxed);
}

void ts_coord_metrics_worker_down(int worker) {
  if (worker >= 0 && worker < TS_MAX_WORKERS)
    atomic_fetch_add_explicit(&workers[worker].down_events, 1,
                              memory_order_relaxed);
}

void ts_coord_metrics_worker_bytes(int worker, uint64_t sent,
                                   uint64_t received) {
  if (worker < 0 || worker >= TS_MAX_WORKERS) return;
  atomic_fetch_add_explicit(&workers[worker].bytes_sent, sent,
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&workers[worker].bytes_received, received,
                            memory_order_relaxed);
}

/* Folds `sample` into the EWMA at *v (0: no sample yet, the first one
 * sets it). A CAS loop: calls finish on several pollers at once. */
static void ewma_update(atomic_ullong *v, double sample) {
  if (sample < 1) sample = 1; /* 0 means "not measured" */
  unsigned long long old = atomic_load_explicit(v, memory_order_relaxed), nv;
  do {
    double next = old ? LINK_EWMA_ALPHA * sample +
                            (1 - LINK_EWMA_ALPHA) * (double)old
                      : sample;
    nv = (unsigned long long)(next + 0.5);
  } while (!atomic_compare_exchange_weak_explicit(
      v, &old, nv, memory_order_relaxed, memory_order_relaxed));
}

void ts_coord_metrics_worker_rtt(int worker, double seconds) {
  if (worker < 0 || worker >= TS_MAX_WORKERS) return;
  atomic_store_explicit(&workers[worker].rtt_micro,
                        (unsigned long long)(seconds * 1e6),
                        memory_order_relaxed);
  ewma_update(&workers[worker].rtt_ewma_micro, seconds * 1e6);
}

void ts_coord_metrics_worker_call(int worker, uint64_t bytes, double seconds) {
  if (worker < 0 || worker >= TS_MAX_WORKERS || seconds <= 0) return;
  ewma_update(&workers[worker].throughput, (double)bytes / seconds);
}

void ts_coord_metrics_worker_link(int worker, ts_link_stats *out) {
  *out = (ts_link_stats){0};
  if (worker < 0 || worker >= TS_MAX_WORKERS) return;
  out->rtt_us = atomic_load_explicit(&workers[worker].rtt_ewma_micro,
                                     memory_order_relaxed);
  out->bytes_per_s = atomic_load_explicit(&workers[worker].throughput,
                                          memory_order_relaxed);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* The median of the n non-zero values of v (sorted in place); 0 if none. */
static uint64_t median_measured(uint64_t *v, int n) {
  int k = 0;
  for (int i = 0; i < n; i++)
    if (v[i]) v[k++] = v[i];
  if (!k) return 0;
  qsort(v, (size_t)k, sizeof *v, cmp_u64);
  return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

void ts_coord_metrics_link_median(const int *worker, int n,
                                  ts_link_stats *out) {
  uint64_t rtt[TS_MAX_WORKERS], bps[TS_MAX_WORKERS];
  if (n > TS_MAX_WORKERS) n = TS_MAX_WORKERS;
  for (int i = 0; i < n; i++) {
    ts_link_stats l;
    ts_coord_metrics_worker_link(worker[i], &l);
    rtt[i] = l.rtt_us;
    bps[i] = l.bytes_per_s;
  }
  out->rtt_us = median_measured(rtt, n);
  out->bytes_per_s = median_measured(bps, n);
}

/* A seconds histogram's count and sum (kept in ns: exposition.h). */
static ts_duration_stat duration_of(const ts_histogram *h) {
  return (ts_duration_stat){atomic_load(&h->count), atomic_load(&h->sum)};
}

void ts_coord_metrics_model_stats(const char *model, ts_model_stats *out) {
  memset(out, 0, sizeof *out);
  if (!model) return;
  model_metrics *m =
      find(model, atomic_load_explicit(&n_models, memory_order_acquire));
  if (!m) return;
  out->last_inference_ms = atomic_load(&m->last_ms);
  out->inference_count = atomic_load(&m->ok_rows);
  out->execution_count = atomic_load(&m->batch.count);
  out->success.count = atomic_load(&m->requests[0]);
  out->success.ns = atomic_load(&m->ok_ns);
  for (int c = 1; c < GRPC_CODES; c++)
    out->fail.count += atomic_load(&m->requests[c]);
  out->fail.ns = atomic_load(&m->fail_ns);
  out->compute_input = duration_of(&m->input);
  out->queue = duration_of(&m->queue);
  out->compute_infer = duration_of(&m->compute);
  out->compute_output = duration_of(&m->output);
}

/* ---- the scrape ---------------------------------------------------------- */

typedef struct exporter {
  ts_membership *cluster;
  ts_frontend *fe;
  ts_batcher *batcher;
} exporter;

static void write_models(ts_metrics_text *t) {
  int n = atomic_load_explicit(&n_models, memory_order_acquire);
  char label[300];
  ts_metrics_family(t, "tessera_requests_total", "counter",
                    "ModelInfer requests answered, by model and gRPC code.");
  for (int i = 0; i < n; i++) {
    ts_metrics_escape(models[i].name, label, sizeof label);
    for (int c = 0; c < GRPC_CODES; c++) {
      unsigned long long v = atomic_load(&models[i].requests[c]);
      if (v || c == 0)
        ts_metrics_printf(t, "tessera_requests_total{model=\"%s\",code=\"%s\"}"
                          " %llu\n", label, ts_metrics_grpc_code_name(c), v);
    }
  }
  static const struct {
    const char *name, *help;
    size_t offset;
  } hists[] = {
      {"tessera_request_compute_input_seconds",
       "Time validating a request's inputs and binding them to tensors.",
       offsetof(model_metrics, input)},
      {"tessera_request_queue_seconds",
       "Time a request waited before its inference started.",
       offsetof(model_metrics, queue)},
      {"tessera_request_compute_seconds",
       "Time of a request's inference across the cluster.",
       offsetof(model_metrics, compute)},
      {"tessera_request_compute_output_seconds",
       "Time packing a request's outputs into its answer.",
       offsetof(model_metrics, output)},
      {"tessera_request_duration_seconds",
       "End-to-end time of a ModelInfer request, arrival to answer.",
       offsetof(model_metrics, e2e)},
      {"tessera_batch_size", "Rows of each inference dispatched.",
       offsetof(model_metrics, batch)},
  };
  for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
    ts_metrics_family(t, hists[h].name, "histogram", hists[h].help);
    for (int i = 0; i < n; i++) {
      char labels[320];
      ts_metrics_escape(models[i].name, label, sizeof label);
      snprintf(labels, sizeof labels, "model=\"%s\"", label);
      ts_metrics_histogram(t, hists[h].name, labels,
                           (const ts_histogram *)((const char *)&models[i] +
                                                  hists[h].offset));
    }
  }
}

static void write_workers(ts_metrics_text *t, ts_membership *c) {
  int n = atomic_load(&c->n);
  static const char *const names[][2] = {
      {"tessera_worker_up", "1 while the worker is live (routed to)."},
      {"tessera_worker_outstanding_calls",
       "RunShard calls in flight to the worker (its load)."},
      {"tessera_worker_calls_total", "RunShard calls sent to the worker."},
      {"tessera_worker_call_failures_total",
       "RunShard calls to the worker that failed at the transport."},
      {"tessera_worker_failovers_total",
       "Times a failed call took the worker out of rotation."},
      {"tessera_worker_sent_bytes_total", "RunShard request bytes sent."},
      {"tessera_worker_received_bytes_total",
       "RunShard answer bytes received."},
      {"tessera_worker_rtt_seconds",
       "Round-trip time of the last health check."},
      {"tessera_worker_rtt_smoothed_seconds",
       "Health checks' round-trip time, smoothed (EWMA)."},
      {"tessera_worker_throughput_bytes_per_second",
       "RunShard bytes sent and received per second of call, smoothed."},
      {"tessera_worker_planned_memory_bytes",
       "Bytes of shards placed on the worker."},
  };
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    int counter = strstr(names[k][0], "_total") != NULL;
    ts_metrics_family(t, names[k][0], counter ? "counter" : "gauge",
                      names[k][1]);
    for (int i = 0; i < n && i < TS_MAX_WORKERS; i++) {
      ts_worker *w = &c->workers[i];
      worker_metrics *m = &workers[i];
      double v = 0;
      switch (k) {
        case 0: v = atomic_load(&w->up); break;
        case 1: v = atomic_load(&w->outstanding); break;
        case 2: v = (double)atomic_load(&w->calls); break;
        case 3: v = (double)atomic_load(&w->failures); break;
        case 4: v = (double)atomic_load(&m->down_events); break;
        case 5: v = (double)atomic_load(&m->bytes_sent); break;
        case 6: v = (double)atomic_load(&m->bytes_received); break;
        case 7: v = (double)atomic_load(&m->rtt_micro) / 1e6; break;
        case 8: v = (double)atomic_load(&m->rtt_ewma_micro) / 1e6; break;
        case 9: v = (double)atomic_load(&m->throughput); break;
        default: v = (double)atomic_load(&w->memory_planned); break;
      }
      char label[300];
      ts_metrics_escape(w->address, label, sizeof label);
      ts_metrics_printf(t, "%s{worker=\"%s\"} %.17g\n", names[k][0], label, v);
    }
  }
}

static void write_all(void *user, ts_metrics_text *t) {
  exporter *x = user;
  write_models(t);
  ts_metrics_family(t, "tessera_in_flight_requests", "gauge",
                    "ModelInfer requests accepted, not yet answered.");
  ts_metrics_printf(t, "tessera_in_flight_requests %d\n",
                    x->fe ? atomic_load(&x->fe->in_flight) : 0);
  ts_metrics_family(t, "tessera_queue_depth", "gauge",
                    "Requests waiting in the dynamic batcher.");
  ts_metrics_printf(t, "tessera_queue_depth %d\n",
                    x->batcher ? ts_batcher_queued(x->batcher) : 0);
  ts_metrics_family(t, "tessera_retries_total", "counter",
                    "Shard calls retried on another replica, by the gRPC "
                    "code that failed.");
  for (int c = 0; c < GRPC_CODES; c++) {
    unsigned long long v = atomic_load(&retries[c]);
    if (v || c == 14)
      ts_metrics_printf(t, "tessera_retries_total{code=\"%s\"} %llu\n",
                        ts_metrics_grpc_code_name(c), v);
  }
  write_workers(t, x->cluster);
}

int ts_coord_metrics_start(const char *listen, ts_membership *cluster,
                           ts_frontend *fe, ts_batcher *batcher,
                           ts_http_server **out, int *bound_port,
                           ts_err *err) {
  static exporter x;
  x = (exporter){cluster, fe, batcher};
  return ts_metrics_serve(listen, write_all, &x, out, bound_port, err);
}
