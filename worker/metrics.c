/*
 * metrics.c - the worker's Prometheus metrics. See metrics.h.
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "exposition.h"
#include "http.h"

static ts_histogram run_seconds = {.bounds = &ts_histogram_seconds}; /* zero counts */
static atomic_ullong runs_failed, runs_refused;

void ts_worker_metrics_run(int code, double seconds) {
  ts_histogram_observe(&run_seconds, seconds);
  if (code == TS_EEXHAUSTED || code == TS_ENOMEM)
    atomic_fetch_add_explicit(&runs_refused, 1, memory_order_relaxed);
  else if (code)
    atomic_fetch_add_explicit(&runs_failed, 1, memory_order_relaxed);
}

static void write_all(void *user, ts_metrics_text *t) {
  ts_store_stats st;
  ts_store_stats_get(user, &st);
  ts_metrics_family(t, "tessera_worker_run_seconds", "histogram",
                    "Time of each RunShard run on the kernel pool.");
  ts_metrics_histogram(t, "tessera_worker_run_seconds", "", &run_seconds);
  ts_metrics_family(t, "tessera_worker_runs_refused_total", "counter",
                    "Runs refused for lack of memory (activation limit).");
  ts_metrics_printf(t, "tessera_worker_runs_refused_total %llu\n",
                    (unsigned long long)atomic_load(&runs_refused));
  ts_metrics_family(t, "tessera_worker_runs_failed_total", "counter",
                    "Runs that failed for another reason.");
  ts_metrics_printf(t, "tessera_worker_runs_failed_total %llu\n",
                    (unsigned long long)atomic_load(&runs_failed));
  ts_metrics_family(t, "tessera_worker_shard_memory_bytes", "gauge",
                    "Shard bytes held, uploading or still referenced.");
  ts_metrics_printf(t, "tessera_worker_shard_memory_bytes %llu\n",
                    (unsigned long long)st.memory_used);
  ts_metrics_family(t, "tessera_worker_memory_limit_bytes", "gauge",
                    "The shard memory limit (0: none).");
  ts_metrics_printf(t, "tessera_worker_memory_limit_bytes %llu\n",
                    (unsigned long long)st.memory_limit);
  ts_metrics_family(t, "tessera_worker_shards", "gauge", "Shards held.");
  ts_metrics_printf(t, "tessera_worker_shards %d\n", st.shards);
}

int ts_worker_metrics_start(const char *listen, ts_store *store,
                            struct ts_http_server **out, int *bound_port,
                            ts_err *err) {
  return ts_metrics_serve(listen, write_all, store, out, bound_port, err);
}
