/*
 * exposition.c - Prometheus exposition helpers. See exposition.h.
 */
#include "exposition.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "http.h"

const ts_histogram_bounds ts_histogram_seconds = {
    15, {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
         0.1, 0.25, 0.5, 1, 5, 30}, 1e9};
const ts_histogram_bounds ts_histogram_counts = {
    11, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}, 1};

double ts_metrics_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void ts_histogram_init(ts_histogram *h, const ts_histogram_bounds *bounds) {
  h->bounds = bounds;
  for (int i = 0; i <= TS_HISTOGRAM_MAX_BUCKETS; i++)
    atomic_init(&h->buckets[i], 0);
  atomic_init(&h->count, 0);
  atomic_init(&h->sum, 0);
}

void ts_histogram_observe(ts_histogram *h, double value) {
  int i = 0;
  while (i < h->bounds->n && value > h->bounds->le[i]) i++;
  atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
  double scaled = value > 0 ? value * h->bounds->scale + 0.5 : 0;
  atomic_fetch_add_explicit(&h->sum, (unsigned long long)scaled,
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void ts_metrics_printf(ts_metrics_text *t, const char *fmt, ...) {
  if (t->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf ? t->buf + t->len : NULL,
                      t->buf ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (t->buf && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    if (ts_array_reserve(&t->buf, &t->cap, t->len + (size_t)n + 1, 1, 16384)) {
      t->oom = 1;
      return;
    }
  }
}

void ts_metrics_family(ts_metrics_text *t, const char *name, const char *type,
                       const char *help) {
  ts_metrics_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ts_metrics_histogram(ts_metrics_text *t, const char *name,
                          const char *labels, const ts_histogram *h) {
  const char *sep = labels[0] ? "," : "";
  unsigned long long cumulative = 0;
  for (int i = 0; i <= h->bounds->n; i++) {
    cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    if (i < h->bounds->n)
      ts_metrics_printf(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                        h->bounds->le[i], cumulative);
    else
      ts_metrics_printf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels,
                        sep, cumulative);
  }
  /* _count equals the +Inf bucket as read, so the two never disagree. */
  ts_metrics_printf(t, "%s_sum{%s} %.9f\n", name, labels,
                    (double)atomic_load(&h->sum) / h->bounds->scale);
  ts_metrics_printf(t, "%s_count{%s} %llu\n", name, labels, cumulative);
}

void ts_metrics_process(ts_metrics_text *t) {
  long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  unsigned long long utime = 0, stime = 0, start = 0;
  long rss = 0;
  FILE *f = fopen("/proc/self/stat", "r");
  if (f) {
    char line[1024];
    if (fgets(line, sizeof line, f)) {
      /* Fields after the command name, which may hold spaces: from ')'. */
      char *p = strrchr(line, ')');
      if (p &&
          sscanf(p + 2,
                 "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d "
                 "%*d %*d %*d %*d %*d %llu %*u %ld",
                 &utime, &stime, &start, &rss) != 4)
        utime = stime = start = 0, rss = 0;
    }
    fclose(f);
  }
  double boot = 0;
  f = fopen("/proc/stat", "r");
  if (f) {
    char line[256];
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "btime %lf", &boot) == 1) break;
    fclose(f);
  }
  ts_metrics_family(t, "process_cpu_seconds_total", "counter",
                    "User and system CPU time spent, in seconds.");
  ts_metrics_printf(t, "process_cpu_seconds_total %.2f\n",
                    (double)(utime + stime) / (double)tick);
  ts_metrics_family(t, "process_resident_memory_bytes", "gauge",
                    "Resident memory size, in bytes.");
  ts_metrics_printf(t, "process_resident_memory_bytes %lld\n",
                    (long long)rss * page);
  ts_metrics_family(t, "process_start_time_seconds", "gauge",
                    "Start time of the process since the Unix epoch, in "
                    "seconds.");
  ts_metrics_printf(t, "process_start_time_seconds %.2f\n",
                    boot + (double)start / (double)tick);
}

void ts_metrics_escape(const char *s, char *out, size_t size) {
  size_t o = 0;
  for (; *s && o + 3 < size; s++) {
    if (*s == '\\' || *s == '"') {
      out[o++] = '\\';
      out[o++] = *s;
    } else if (*s == '\n') {
      out[o++] = '\\';
      out[o++] = 'n';
    } else {
      out[o++] = *s;
    }
  }
  out[o] = '\0';
}

const char *ts_metrics_grpc_code_name(int code) {
  static const char *const names[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  if (code < 0 || code >= (int)(sizeof names / sizeof names[0]))
    return "UNKNOWN";
  return names[code];
}

typedef struct exporter {
  ts_metrics_write_fn write;
  void *user;
} exporter;

static void scrape(void *user, const ts_http_request *req,
                   ts_http_response *resp) {
  const exporter *x = user;
  if (strcmp(req->url, "/metrics") != 0) {
    resp->status = 404;
    resp->body = strdup("not found; metrics are at /metrics\n");
    resp->body_len = resp->body ? strlen(resp->body) : 0;
    return;
  }
  ts_metrics_text t = {0};
  x->write(x->user, &t);
  ts_metrics_process(&t);
  resp->status = t.oom ? 500 : 200;
  resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  resp->body = t.oom ? NULL : t.buf;
  resp->body_len = t.oom ? 0 : t.len;
  if (t.oom) free(t.buf);
}

int ts_metrics_serve(const char *listen, ts_metrics_write_fn write,
                     void *user, struct ts_http_server **out,
                     int *bound_port, ts_err *err) {
  exporter *x = malloc(sizeof *x); /* freed by ts_http_stop */
  if (!x) return ts_err_set(err, TS_ENOMEM, "out of memory");
  *x = (exporter){write, user};
  return ts_http_start(listen, 4096, scrape, x, free, out, bound_port, err);
}
