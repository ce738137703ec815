/*
 * metrics.h - the worker's Prometheus metrics (--metrics-listen), served as
 * text at /metrics: shard runs and their time, runs refused for lack of
 * resources, shard bytes held and the memory limit (from the store at each
 * scrape), process CPU and resident memory. The run path records with
 * relaxed C11 atomics only.
 */
#ifndef TS_WORKER_METRICS_H
#define TS_WORKER_METRICS_H

#include "error.h"
#include "store.h"

struct ts_http_server;

/* One RunShard run finished with TS_E* `code` after `seconds`. */
void ts_worker_metrics_run(int code, double seconds);

/* Serves /metrics on listen ("HOST:PORT"), reading `store` (which must
 * outlive the server) at each scrape. Stop with ts_http_stop. */
int ts_worker_metrics_start(const char *listen, ts_store *store,
                            struct ts_http_server **out, int *bound_port,
                            ts_err *err);

#endif
