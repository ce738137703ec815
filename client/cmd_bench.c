/*
 * cmd_bench.c - `tessera bench`: closed-loop load on ModelInfer, then
 * throughput and latency percentiles.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "client.h"

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A closed loop of `concurrency` calls: the main thread starts the first
 * ones, and each completion (on the client's poller thread) records its
 * outcome and starts the next call right there, so the load generator adds
 * no thread hand-over per request to what it measures. Counters below
 * `lock` are guarded by it; the rest is fixed during the run. */
typedef struct bench {
  pthread_mutex_t lock;
  pthread_cond_t finished;
  long started, completed, errors;
  long n_ok;
  double *latency_ms; /* one per successful call, in completion order */
  int first_status;
  char first_error[TS_ERR_MSG_MAX];
  cli *c;
  ts_rpc_client *client;
  const uint8_t *req;
  size_t len;
  struct bench_call *calls; /* one per request */
} bench;

typedef struct bench_call {
  bench *b;
  int64_t start_ns;
  int server; /* of c->servers, where it is being sent */
  int tries;  /* servers it was sent to: at most one try on each */
} bench_call;

/* Records one outcome; returns nonzero once every request has finished. */
static int bench_record(bench *b, int64_t start_ns, int status,
                        const char *message) {
  double ms = (double)(now_ns() - start_ns) / 1e6;
  pthread_mutex_lock(&b->lock);
  if (status == 0) {
    b->latency_ms[b->n_ok++] = ms;
  } else if (b->errors++ == 0) {
    b->first_status = status;
    snprintf(b->first_error, sizeof b->first_error, "%s",
             message ? message : "");
  }
  int all = ++b->completed == b->c->opt->requests;
  if (all) pthread_cond_signal(&b->finished);
  pthread_mutex_unlock(&b->lock);
  return all;
}

static void bench_done(void *user, const ts_rpc_result *r);

/* Sends `call` to its server; 0, or the code of a call that cannot start
 * (then the callback never runs). */
static int bench_send(bench *b, bench_call *call) {
  call->tries++;
  return ts_rpc_call_async(b->client, b->c->channels[call->server],
                           KSERVE_SERVICE "ModelInfer", b->req, b->len,
                           cli_deadline(b->c), bench_done, call, NULL);
}

/* Starts the next request, if any is left, on the current server; a call
 * that cannot start is counted as failed and the next one is tried. */
static void bench_start_next(bench *b) {
  for (;;) {
    pthread_mutex_lock(&b->lock);
    long i = b->started < b->c->opt->requests ? b->started++ : -1;
    pthread_mutex_unlock(&b->lock);
    if (i < 0) return;
    bench_call *call = &b->calls[i];
    call->b = b;
    call->start_ns = now_ns();
    call->server = atomic_load(&b->c->current);
    int rc = bench_send(b, call);
    if (rc == 0) return;
    bench_record(b, call->start_ns, ts_err_grpc_status(rc),
                 "cannot start the call");
  }
}

/* A request that got UNAVAILABLE goes once to each other server in turn
 * (as cli_call does), its latency counted from the first try; the server
 * that answers becomes the current one for the requests that follow. */
static void bench_done(void *user, const ts_rpc_result *r) {
  bench_call *call = user;
  bench *b = call->b;
  cli *c = b->c;
  if (r->status == ts_err_grpc_status(TS_EUNAVAILABLE) &&
      call->tries < c->n_servers) {
    call->server = (call->server + 1) % c->n_servers;
    if (bench_send(b, call) == 0) return;
  }
  if (r->status == 0) atomic_store(&c->current, call->server);
  if (!bench_record(b, call->start_ns, r->status, r->message))
    bench_start_next(b);
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of n sorted values (n > 0). */
static double percentile(const double *sorted, long n, double p) {
  long k = (long)ceil(p / 100.0 * (double)n);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

/* Runs the closed loop until `requests` have finished. */
static void bench_run(bench *b) {
  for (long i = 0; i < b->c->opt->concurrency; i++) bench_start_next(b);
  pthread_mutex_lock(&b->lock);
  while (b->completed < b->c->opt->requests)
    pthread_cond_wait(&b->finished, &b->lock);
  pthread_mutex_unlock(&b->lock);
}

/* The run as a document: its settings, outcomes and latency figures. */
static json_t *bench_json(const cli *c, bench *b, double seconds) {
  json_t *doc = json_object();
  json_object_set_new(doc, "model", json_string(c->opt->model));
  json_object_set_new(doc, "requests", json_integer(c->opt->requests));
  json_object_set_new(doc, "concurrency", json_integer(c->opt->concurrency));
  json_object_set_new(doc, "ok", json_integer(b->n_ok));
  json_object_set_new(doc, "errors", json_integer(b->errors));
  json_object_set_new(doc, "duration_s", json_real(seconds));
  json_object_set_new(doc, "throughput_rps",
                      json_real(seconds > 0 ? (double)b->n_ok / seconds : 0.0));
  if (b->n_ok == 0) return doc;
  qsort(b->latency_ms, (size_t)b->n_ok, sizeof b->latency_ms[0],
        compare_double);
  double sum = 0;
  for (long i = 0; i < b->n_ok; i++) sum += b->latency_ms[i];
  json_t *latency = json_object();
  json_object_set_new(latency, "mean", json_real(sum / (double)b->n_ok));
  json_object_set_new(latency, "p50", json_real(percentile(b->latency_ms, b->n_ok, 50)));
  json_object_set_new(latency, "p90", json_real(percentile(b->latency_ms, b->n_ok, 90)));
  json_object_set_new(latency, "p99", json_real(percentile(b->latency_ms, b->n_ok, 99)));
  json_object_set_new(latency, "max", json_real(b->latency_ms[b->n_ok - 1]));
  json_object_set_new(doc, "latency_ms", latency);
  return doc;
}

int cmd_bench(cli *c, ts_err *err) {
  tensor_set in;
  uint8_t *req = NULL;
  size_t len = 0;
  ts_rpc_client *client = NULL;
  bench b = {.lock = PTHREAD_MUTEX_INITIALIZER,
             .finished = PTHREAD_COND_INITIALIZER,
             .c = c};
  bench_call *calls = NULL;
  int rc = cli_prepare_inputs(c, &in, err);
  if (rc) return rc;
  rc = cli_encode_infer_request(c->opt, &in, &req, &len, err);
  cli_tensor_set_free(&in);
  if (rc) return rc;
  calls = calloc((size_t)c->opt->requests, sizeof *calls);
  b.latency_ms = calloc((size_t)c->opt->requests, sizeof *b.latency_ms);
  if (!calls || !b.latency_ms)
    rc = ts_err_set(err, TS_ENOMEM, "cannot track %ld requests",
                    c->opt->requests);
  if (!rc) rc = ts_rpc_client_create(&client, err);
  if (!rc) {
    b.client = client;
    b.req = req;
    b.len = len;
    b.calls = calls;
    int64_t start = now_ns();
    bench_run(&b);
    double seconds = (double)(now_ns() - start) / 1e9;
    ts_rpc_client_free(client);
    cli_out out = {c->opt->format, bench_json(c, &b, seconds)};
    int print_rc = cli_out_print(&out, err);
    if (b.errors)
      rc = ts_err_set(err, ts_err_from_grpc_status(b.first_status),
                      "%ld of %ld requests failed; the first with %s: %s",
                      b.errors, c->opt->requests,
                      ts_rpc_status_name(b.first_status), b.first_error);
    else
      rc = print_rc;
  }
  free(calls);
  free(b.latency_ms);
  free(req);
  return rc;
}
