/*
 * cmd_bench.c - `tessera bench`: load on ModelInfer, then throughput and
 * latency percentiles.
 *
 * Two loops:
 *
 *   closed (the default): --concurrency calls in flight; each completion
 *     starts the next call right there, on the client's poller thread, so
 *     the load generator adds no thread hand-over per request to what it
 *     measures. Latency runs from the call's start.
 *   open (--rate R): the main thread starts request k at t0 + k/R whatever
 *     has completed, with at most --concurrency in flight; a request whose
 *     time comes while all are busy is not sent and counts as `dropped`.
 *     Latency runs from the scheduled start, so time a request spent
 *     waiting for the generator (or the generator for the server) shows
 *     instead of being left out ("coordinated omission").
 *
 * Both run in two windows: requests started in the first --warmup seconds
 * are sent but not counted; then requests are counted until --requests have
 * started or --duration seconds have passed, and the run ends when the last
 * call in flight finishes. On a terminal, the main thread prints a progress
 * line on stderr once a second and erases it at the end.
 *
 * Threads: the main thread starts the first calls (closed loop) or every
 * call (open loop) and prints progress; completions run on the poller
 * thread. Everything under "guarded by lock" in `bench` is shared by them.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define DEFAULT_REQUESTS 100 /* without --requests and --duration */
#define NS_PER_S 1000000000LL
#define PROGRESS_INTERVAL_NS NS_PER_S

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static struct timespec timespec_of(int64_t ns) {
  return (struct timespec){.tv_sec = ns / NS_PER_S, .tv_nsec = ns % NS_PER_S};
}

/* One of --concurrency places for a call in flight. */
typedef struct bench_slot {
  struct bench *b;
  int64_t start_ns; /* when it started, or (open loop) was scheduled to */
  bool counted;     /* started after the warmup */
  int server;       /* of c->servers, where its call is being sent */
  int tries;        /* servers it was sent to: at most one try on each */
} bench_slot;

typedef struct bench {
  /* Fixed during the run. */
  cli *c;
  ts_rpc_client *client;
  const uint8_t *req;
  size_t len;
  bool open_loop;
  long limit;         /* counted requests to start; 0: until stop_ns */
  int64_t start_ns;   /* t0 */
  int64_t measure_ns; /* t0 + warmup: requests from here on count */
  int64_t stop_ns;    /* no request starts from here on; INT64_MAX: none */
  bench_slot *slots;  /* concurrency of them */

  pthread_mutex_t lock;
  pthread_cond_t changed; /* signalled when a call finishes */
  /* Guarded by lock. */
  long counted;         /* counted requests started, or dropped (open loop) */
  long warmup_requests; /* requests started in the warmup */
  long in_flight, errors, dropped, n_ok;
  long *free_slots; /* open loop: indices of idle slots, n_free of them */
  long n_free;
  double *latency_ms; /* one per counted success, in completion order */
  long latency_cap;
  bool out_of_memory;  /* latency_ms could not grow: nothing more starts */
  int64_t last_done_ns; /* when the last counted call finished */
  int first_status;
  char first_error[TS_ERR_MSG_MAX];
} bench;

/* Whether another request may start at time `at`; if so counts it (as
 * counted or as warmup) and sets *counted. Under b->lock. */
static bool bench_claim(bench *b, int64_t at, bool *counted) {
  if (at >= b->stop_ns || b->out_of_memory ||
      (b->limit && b->counted >= b->limit))
    return false;
  *counted = at >= b->measure_ns;
  if (*counted)
    b->counted++;
  else
    b->warmup_requests++;
  return true;
}

/* Records the outcome of the call in `slot`. Under b->lock. */
static void bench_record(bench *b, bench_slot *slot, int status,
                         const char *message) {
  int64_t now = now_ns();
  b->in_flight--;
  pthread_cond_signal(&b->changed);
  if (!slot->counted) return;
  b->last_done_ns = now;
  if (status != 0) {
    if (b->errors++ == 0) {
      b->first_status = status;
      snprintf(b->first_error, sizeof b->first_error, "%s",
               message ? message : "");
    }
    return;
  }
  if (b->n_ok == b->latency_cap) {
    long cap = b->latency_cap ? 2 * b->latency_cap : 1024;
    double *grown = realloc(b->latency_ms, (size_t)cap * sizeof *grown);
    if (!grown) {
      b->out_of_memory = true;
      return;
    }
    b->latency_ms = grown;
    b->latency_cap = cap;
  }
  b->latency_ms[b->n_ok++] = (double)(now - slot->start_ns) / 1e6;
}

static void bench_done(void *user, const ts_rpc_result *r);

/* Sends the call of `slot` to slot->server: 0, or the code of a call that
 * cannot start (then the callback never runs). */
static int bench_try(bench_slot *slot) {
  bench *b = slot->b;
  slot->tries++;
  return ts_rpc_call_async(b->client, b->c->channels[slot->server],
                           KSERVE_SERVICE "ModelInfer", b->req, b->len,
                           cli_deadline(b->c), bench_done, slot, NULL);
}

/* Starts the call of `slot` (claimed, counted in in_flight) on the current
 * server. One that cannot start is recorded as failed; returns false
 * then. */
static bool bench_send(bench_slot *slot) {
  bench *b = slot->b;
  slot->server = atomic_load(&b->c->current);
  slot->tries = 0;
  int rc = bench_try(slot);
  if (rc == 0) return true;
  pthread_mutex_lock(&b->lock);
  bench_record(b, slot, ts_err_grpc_status(rc), "cannot start the call");
  if (b->open_loop) b->free_slots[b->n_free++] = slot - b->slots;
  pthread_mutex_unlock(&b->lock);
  return false;
}

/* Closed loop: the next call of `slot`, if one is left. Claiming under the
 * same lock hold as the outcome it follows keeps in_flight above zero
 * until the loop is over. `finished` is the outcome of the slot's last
 * call, or NULL for its first. */
static void bench_continue(bench_slot *slot, const ts_rpc_result *finished) {
  bench *b = slot->b;
  for (;;) {
    pthread_mutex_lock(&b->lock);
    if (finished) bench_record(b, slot, finished->status, finished->message);
    finished = NULL;
    int64_t now = now_ns();
    bool go = bench_claim(b, now, &slot->counted);
    if (go) {
      b->in_flight++;
      slot->start_ns = now;
    }
    pthread_mutex_unlock(&b->lock);
    if (!go || bench_send(slot)) return;
  }
}

/* A call that got UNAVAILABLE goes once to each other server in turn (as
 * cli_call does), its latency counted from the first try; the server that
 * answers becomes the current one for the calls that follow. */
static void bench_done(void *user, const ts_rpc_result *r) {
  bench_slot *slot = user;
  bench *b = slot->b;
  cli *c = b->c;
  if (r->status == ts_err_grpc_status(TS_EUNAVAILABLE) &&
      slot->tries < c->n_servers) {
    slot->server = (slot->server + 1) % c->n_servers;
    if (bench_try(slot) == 0) return;
  }
  if (r->status == 0) atomic_store(&c->current, slot->server);
  if (!b->open_loop) {
    bench_continue(slot, r);
    return;
  }
  pthread_mutex_lock(&b->lock);
  bench_record(b, slot, r->status, r->message);
  b->free_slots[b->n_free++] = slot - b->slots;
  pthread_mutex_unlock(&b->lock);
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

/* ---- progress ----------------------------------------------------------- */

/* The live line on a terminal: elapsed time, counted requests finished,
 * and the rate and p50 latency of the last interval. */
typedef struct progress {
  bool on;          /* stderr is a terminal */
  bool printed;     /* a line is on the screen */
  int64_t next_ns;  /* when the next line is due */
  int64_t last_ns;  /* when the last one was printed */
  long last_done;   /* counted requests finished then */
  long last_ok;     /* latencies recorded then */
  double *recent;   /* the latencies since, sorted for the p50 */
  long recent_cap;
} progress;

/* Prints the line if it is due at `now`. Takes b->lock. */
static void progress_tick(progress *p, bench *b, int64_t now) {
  if (!p->on || now < p->next_ns) return;
  pthread_mutex_lock(&b->lock);
  long done = b->n_ok + b->errors, ok = b->n_ok, n = ok - p->last_ok;
  if (n > p->recent_cap) {
    double *grown = realloc(p->recent, (size_t)n * sizeof *grown);
    if (grown) {
      p->recent = grown;
      p->recent_cap = n;
    }
  }
  if (n > p->recent_cap) n = 0; /* no room: no p50 this time */
  if (n) memcpy(p->recent, b->latency_ms + p->last_ok, (size_t)n * sizeof *p->recent);
  pthread_mutex_unlock(&b->lock);
  double interval = (double)(now - p->last_ns) / 1e9;
  char p50[32] = "-";
  if (n) {
    qsort(p->recent, (size_t)n, sizeof *p->recent, compare_double);
    snprintf(p50, sizeof p50, "%.2f ms", percentile(p->recent, n, 50));
  }
  fprintf(stderr, "\r\033[K%6.1f s%s  %ld requests  %.1f req/s  p50 %s",
          (double)(now - b->start_ns) / 1e9,
          now < b->measure_ns ? " (warmup)" : "", done,
          interval > 0 ? (double)(done - p->last_done) / interval : 0.0, p50);
  fflush(stderr);
  p->printed = true;
  p->last_ns = now;
  p->last_done = done;
  p->last_ok = ok;
  p->next_ns += PROGRESS_INTERVAL_NS;
  if (p->next_ns <= now) p->next_ns = now + PROGRESS_INTERVAL_NS;
}

/* Erases the line (when one was printed) and frees what it kept. */
static void progress_end(progress *p) {
  if (p->printed) {
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
  }
  free(p->recent);
}

/* ---- the loops ---------------------------------------------------------- */

/* Sleeps until `until` (monotonic ns), printing progress on the way. */
static void bench_wait(bench *b, progress *p, int64_t until) {
  for (;;) {
    int64_t now = now_ns();
    progress_tick(p, b, now);
    if (now >= until) return;
    int64_t wake = p->on && p->next_ns < until ? p->next_ns : until;
    struct timespec ts = timespec_of(wake);
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
  }
}

/* Waits for every call in flight to finish, printing progress. */
static void bench_drain(bench *b, progress *p) {
  pthread_mutex_lock(&b->lock);
  while (b->in_flight > 0) {
    struct timespec ts = timespec_of(p->on ? p->next_ns : now_ns() + NS_PER_S);
    pthread_cond_timedwait(&b->changed, &b->lock, &ts);
    pthread_mutex_unlock(&b->lock);
    progress_tick(p, b, now_ns());
    pthread_mutex_lock(&b->lock);
  }
  pthread_mutex_unlock(&b->lock);
}

/* Open loop: request k is due at t0 + k/rate. */
static void bench_schedule(bench *b, progress *p) {
  double interval_ns = (double)NS_PER_S / b->c->opt->rate;
  for (long k = 0;; k++) {
    int64_t due = b->start_ns + (int64_t)((double)k * interval_ns);
    /* Only this thread claims in an open loop: `counted` is its own. */
    if (due >= b->stop_ns || (b->limit && b->counted >= b->limit)) return;
    bench_wait(b, p, due);
    pthread_mutex_lock(&b->lock);
    bool counted = false, go = bench_claim(b, due, &counted);
    bench_slot *slot = NULL;
    if (go && b->n_free == 0) {
      if (counted) b->dropped++;
    } else if (go) {
      slot = &b->slots[b->free_slots[--b->n_free]];
      slot->start_ns = due;
      slot->counted = counted;
      b->in_flight++;
    }
    pthread_mutex_unlock(&b->lock);
    if (!go) return;
    if (slot) bench_send(slot);
  }
}

static void bench_run(bench *b) {
  progress p = {.on = isatty(STDERR_FILENO) == 1};
  long concurrency = b->c->opt->concurrency;
  b->start_ns = now_ns();
  b->measure_ns = b->start_ns + (int64_t)(b->c->opt->warmup * 1e9);
  b->stop_ns = b->c->opt->duration
                   ? b->measure_ns + (int64_t)(b->c->opt->duration * 1e9)
                   : INT64_MAX;
  p.last_ns = b->start_ns;
  p.next_ns = b->start_ns + PROGRESS_INTERVAL_NS;
  for (long i = 0; i < concurrency; i++) {
    b->slots[i].b = b;
    b->free_slots[i] = concurrency - 1 - i;
  }
  b->n_free = concurrency;
  if (b->open_loop) {
    bench_schedule(b, &p);
  } else {
    for (long i = 0; i < concurrency; i++) bench_continue(&b->slots[i], NULL);
  }
  bench_drain(b, &p);
  progress_end(&p);
}

/* The run as a document: its settings, outcomes and latency figures. */
static json_t *bench_json(const cli *c, bench *b) {
  const options *opt = c->opt;
  double seconds =
      b->last_done_ns > b->measure_ns
          ? (double)(b->last_done_ns - b->measure_ns) / 1e9 : 0.0;
  json_t *doc = json_object();
  json_object_set_new(doc, "model", json_string(opt->model));
  json_object_set_new(doc, "mode", json_string(b->open_loop ? "open" : "closed"));
  json_object_set_new(doc, "concurrency", json_integer(opt->concurrency));
  if (b->open_loop) json_object_set_new(doc, "rate_rps", json_real(opt->rate));
  json_object_set_new(doc, "warmup_s", json_real(opt->warmup));
  json_object_set_new(doc, "requests", json_integer(b->n_ok + b->errors));
  json_object_set_new(doc, "ok", json_integer(b->n_ok));
  json_object_set_new(doc, "errors", json_integer(b->errors));
  json_object_set_new(doc, "dropped", json_integer(b->dropped));
  json_object_set_new(doc, "warmup_requests", json_integer(b->warmup_requests));
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
  const options *opt = c->opt;
  uint8_t *req = NULL;
  size_t len = 0;
  bench b = {.c = c,
             .open_loop = opt->rate > 0,
             .limit = opt->requests ? opt->requests
                      : opt->duration ? 0 : DEFAULT_REQUESTS,
             .lock = PTHREAD_MUTEX_INITIALIZER};
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&b.changed, &attr);
  pthread_condattr_destroy(&attr);
  int rc = cli_prepare_infer_request(c, &req, &len, err);
  if (!rc) {
    b.slots = calloc((size_t)opt->concurrency, sizeof *b.slots);
    b.free_slots = calloc((size_t)opt->concurrency, sizeof *b.free_slots);
    if (!b.slots || !b.free_slots)
      rc = ts_err_set(err, TS_ENOMEM, "cannot track %ld calls",
                      opt->concurrency);
  }
  if (!rc) rc = ts_rpc_client_create(&b.client, err);
  if (!rc) {
    b.req = req;
    b.len = len;
    bench_run(&b);
    ts_rpc_client_free(b.client);
    cli_out out = {opt->format, bench_json(c, &b)};
    int print_rc = cli_out_print(&out, err);
    if (b.out_of_memory)
      rc = ts_err_set(err, TS_ENOMEM,
                      "no memory for more latencies after %ld requests; "
                      "the run stopped there", b.n_ok);
    else if (b.errors)
      rc = ts_err_set(err, ts_err_from_grpc_status(b.first_status),
                      "%ld of %ld requests failed; the first with %s: %s",
                      b.errors, b.n_ok + b.errors,
                      ts_rpc_status_name(b.first_status), b.first_error);
    else
      rc = print_rc;
  }
  pthread_cond_destroy(&b.changed);
  free(b.slots);
  free(b.free_slots);
  free(b.latency_ms);
  free(req);
  return rc;
}
