/*
 * exposition.h - Prometheus text exposition (format 0.0.4): lock-free
 * histograms for the hot path, a growing text buffer for a scrape, and the
 * process's own CPU and resident memory.
 *
 * Hot path: ts_histogram_observe is three relaxed atomic adds and a short
 * scan of the bucket bounds; nothing locks or allocates. A scrape reads the
 * atomics one by one, so one histogram's buckets, _sum and _count may be a
 * few observations apart, which Prometheus tolerates; each cumulative
 * bucket is written as the running sum so it never decreases.
 */
#ifndef TS_EXPOSITION_H
#define TS_EXPOSITION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define TS_HISTOGRAM_MAX_BUCKETS 20

/* Bucket upper bounds (ascending; +Inf is implied). */
typedef struct ts_histogram_bounds {
  int n;
  double le[TS_HISTOGRAM_MAX_BUCKETS];
} ts_histogram_bounds;

/* Latencies in seconds, 100 us to 30 s. */
extern const ts_histogram_bounds ts_histogram_seconds;
/* Counts (batch sizes), 1 to 1024 in powers of two. */
extern const ts_histogram_bounds ts_histogram_counts;

typedef struct ts_histogram {
  const ts_histogram_bounds *bounds;
  atomic_ullong buckets[TS_HISTOGRAM_MAX_BUCKETS + 1]; /* last: +Inf */
  atomic_ullong count;
  atomic_ullong sum_micro; /* sum of observations x 1e6 */
} ts_histogram;

void ts_histogram_init(ts_histogram *h, const ts_histogram_bounds *bounds);
/* Records one value (seconds or a count); lock-free, any thread. */
void ts_histogram_observe(ts_histogram *h, double value);

/* CLOCK_MONOTONIC in seconds: for latencies. */
double ts_metrics_now(void);

/* A scrape's text. Writing never fails visibly: out of memory sets oom
 * and the scrape answers 500. */
typedef struct ts_metrics_text {
  char *buf; /* malloc'd; the caller takes it (free) */
  size_t len, cap;
  int oom;
} ts_metrics_text;

void ts_metrics_printf(ts_metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "# HELP name help\n# TYPE name type\n". */
void ts_metrics_family(ts_metrics_text *t, const char *name, const char *type,
                       const char *help);
/* One histogram's samples: name_bucket{labels,le=...}, name_sum, name_count.
 * labels is "" or `key="value",...` without braces. */
void ts_metrics_histogram(ts_metrics_text *t, const char *name,
                          const char *labels, const ts_histogram *h);
/* process_cpu_seconds_total, process_resident_memory_bytes,
 * process_start_time_seconds (the names every Prometheus client library
 * uses), from /proc/self. */
void ts_metrics_process(ts_metrics_text *t);
struct ts_http_server;
/* Writes a daemon's own families into t (a scrape; any thread). */
typedef void (*ts_metrics_write_fn)(void *user, ts_metrics_text *t);
/* Serves /metrics on listen ("HOST:PORT"): write(user, t) then the process
 * metrics, as text format 0.0.4; other paths answer 404. user must outlive
 * the server; stop it with ts_http_stop. */
int ts_metrics_serve(const char *listen, ts_metrics_write_fn write,
                     void *user, struct ts_http_server **out,
                     int *bound_port, ts_err *err);
/* Copies s into out (size bytes) escaped for a label value (\\, \", \n). */
void ts_metrics_escape(const char *s, char *out, size_t size);
/* The canonical name of gRPC status code `code` ("OK", "NOT_FOUND", ...),
 * "UNKNOWN" when out of range. */
const char *ts_metrics_grpc_code_name(int code);

#endif
