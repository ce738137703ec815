/*
 * main.c - tessera-worker: options, wiring, signals, orderly shutdown.
 *
 *   tessera-worker --listen HOST:PORT [--threads N] [--memory-limit BYTES]
 *                  [--activation-limit BYTES] [--fold-limit BYTES]
 *                  [--upload-limit BYTES] [--max-uploads N]
 *                  [--upload-timeout-ms N] [--join COORD[,COORD...]]
 *
 * Startup: pick OpenBLAS kernels (may re-exec), parse options, create the
 * store and the kernel pool, start the service, print exactly
 * "listening on HOST:PORT" (the bound port) on stdout, notify systemd.
 * The main thread then sleeps in a libuv loop that only waits for signals.
 *
 * SIGTERM/SIGINT is a graceful leave, bounded by GRACE_MS in all:
 *  1. health turns NOT_SERVING, but runs are still accepted: the
 *     coordinator keeps routing here until its shards are elsewhere;
 *  2. with --join, Admin/DeregisterWorker asks every coordinator to move
 *     this worker's shards and stop routing to it (each answers when done);
 *     without, the coordinators' probers see NOT_SERVING and do the same;
 *  3. once every coordinator answered DeregisterWorker (none routes
 *     here any more), or at once when this worker holds no shard, or else
 *     once no run has arrived for QUIET_MS (at most LEAVE_MS after the
 *     signal: without --join nobody confirms that routing stopped), the
 *     pool takes no new runs, queued and running jobs finish, the server
 *     stops and the process exits 0.
 * Runs still executing after the grace cannot be interrupted (kernels are
 * not cancellable), so the process then exits at once without tearing
 * down what they still use.
 */
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "blas.h"
#include "http.h"
#include "join.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "pool.h"
#include "rpc.h"
#include "rpc_auth.h"
#include "service.h"
#include "store.h"
#include "ts_config.h"

#if TS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#define GRACE_MS 10000       /* the whole leave after SIGTERM, at most */
#define LEAVE_MS 6000        /* of which moving the shards away, at most */
#define QUIET_MS 1000        /* no run for this long: routing has stopped */
#define QUEUE_CAPACITY 256   /* runs waiting for a kernel thread */
/* Default --max-streams beyond the runs it can hold (queued and running),
 * for uploads and status calls: the coordinator sends every call on one
 * connection, and a full queue must answer RESOURCE_EXHAUSTED (so the
 * coordinator tries another replica) before streams run out. */
#define STREAMS_BEYOND_RUNS 64
#define MAX_THREADS 4096
/* Default --activation-limit: this fraction of the memory left beside the
 * shards, per kernel thread. A thread's session may hold its arena (at most
 * the limit) and, while it plans a new shape, as much again in temporary
 * buffers, so all threads together stay within half of that memory. */
#define ACTIVATION_SHARE 4
#define ACTIVATION_MIN (16ull << 20) /* the default never goes below */
/* Default --upload-limit: this fraction of physical memory, for the
 * announced bytes of all uploads in flight together. */
#define UPLOAD_SHARE 2
#define MAX_UPLOADS 16           /* default --max-uploads */
#define UPLOAD_TIMEOUT_MS 60000  /* default --upload-timeout-ms */

typedef struct options {
  const char *listen;     /* required */
  int threads;            /* 0: one per CPU this process may use */
  uint64_t memory_limit;  /* 0: no limit */
  uint64_t activation_limit; /* per run; 0: no limit */
  bool activation_limit_set; /* false: derived (default_activation_limit) */
  uint64_t fold_limit;    /* per shard; 0: the engine's default;
                             UINT64_MAX: none */
  uint64_t upload_limit;  /* uploads in flight; 0: none */
  bool upload_limit_set;  /* false: physical memory / UPLOAD_SHARE */
  int max_uploads;        /* 0: none */
  long long upload_timeout_ms; /* 0: none */
  /* Coordinators to register with, comma-separated (every --join
   * joined); "": none. */
  char join[TS_JOIN_MAX * TS_ADDRESS_MAX];
  const char *metrics_listen; /* NULL: no /metrics (metrics.h) */
  const char *advertise;  /* address the coordinator dials; NULL: derived */
  ts_security_opts security; /* TLS and the loopback rule (rpc_auth.h) */
} options;

static void usage(FILE *f) {
  fprintf(f,
          "usage: tessera-worker --listen HOST:PORT [--threads N] "
          "[--memory-limit BYTES] [--activation-limit BYTES]\n"
          "                      [--fold-limit BYTES] [--upload-limit BYTES] "
          "[--max-uploads N]\n"
          "                      [--upload-timeout-ms N] [--join COORD[,COORD...] "
          "[--advertise HOST:PORT]]\n"
          "  --listen HOST:PORT     address to serve on; port 0 picks one\n"
          "  --threads N            kernel threads (default: number of "
          "CPUs)\n"
          "  --memory-limit BYTES   cap on shard memory: bytes, or K/M/G/T "
          "(e.g. 512M, 1GiB;\n"
          "                         default: none)\n"
          "  --activation-limit BYTES\n"
          "                         cap on one run's activation memory, "
          "K/M/G/T\n"
          "                         suffixes; 0: none (default: (physical "
          "memory -\n"
          "                         --memory-limit) / (4 x threads), at least "
          "16M)\n"
          "  --fold-limit BYTES     cap on the constants one shard's load "
          "folds, K/M/G/T;\n"
          "                         0: none (default: max(64M, 4 x the "
          "shard's bytes);\n"
          "                         within --memory-limit in any case)\n"
          "  --upload-limit BYTES   cap on the announced bytes of all "
          "uploads in flight\n"
          "                         (LoadShard), K/M/G/T; 0: none "
          "(default: half of\n"
          "                         physical memory)\n"
          "  --max-uploads N        uploads in flight at once, at most; 0: "
          "none (default 16)\n"
          "  --upload-timeout-ms N  end an upload that sent no chunk for N "
          "ms (default\n"
          "                         60000; 0: none)\n"
          "  --join COORD[,COORD...]\n"
          "                         register with each coordinator listed "
          "(at most 16;\n"
          "                         --join may be repeated) and keep "
          "re-registering\n"
          "                         every second, so a restarted "
          "coordinator finds\n"
          "                         this worker again\n"
          "  --advertise HOST:PORT  the address the coordinators should dial "
          "(default:\n"
          "                         the listen address; hostname for "
          "0.0.0.0)\n"
          "  --metrics-listen HOST:PORT\n"
          "                         serve Prometheus metrics at /metrics\n"
          "  --version              print the version and exit\n"
          "  --help                 this text\n"
          "%s",
          ts_security_usage);
}

/* Bytes of physical memory (0 when the system does not say). */
static uint64_t physical_memory(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

/* The default --activation-limit (see ACTIVATION_SHARE): what physical
 * memory leaves beside the shards, split over the kernel threads. */
static uint64_t default_activation_limit(uint64_t memory_limit, int threads) {
  uint64_t phys = physical_memory();
  uint64_t left = memory_limit && memory_limit < phys ? phys - memory_limit
                                                       : phys;
  uint64_t per_thread = left / ACTIVATION_SHARE / (uint64_t)threads;
  return per_thread > ACTIVATION_MIN ? per_thread : ACTIVATION_MIN;
}

static int cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* Reports a bad option value (err says why) and returns the exit status 2. */
static int bad_option(const char *option, const ts_err *err) {
  fprintf(stderr, "tessera-worker: %s %s\n", option, err->msg);
  return 2;
}

/* Returns 0 to go on, or the exit status (0 for --help). */
static int parse_options(int argc, char **argv, options *o) {
  enum { OPT_LISTEN = 1, OPT_THREADS, OPT_MEMORY, OPT_ACTIVATION, OPT_JOIN,
         OPT_ADVERTISE, OPT_HELP, OPT_METRICS, OPT_FOLD, OPT_UPLOAD_LIMIT,
         OPT_MAX_UPLOADS, OPT_UPLOAD_TIMEOUT };
  static const struct option longopts[] = {
      {"listen", required_argument, NULL, OPT_LISTEN},
      {"threads", required_argument, NULL, OPT_THREADS},
      {"memory-limit", required_argument, NULL, OPT_MEMORY},
      {"activation-limit", required_argument, NULL, OPT_ACTIVATION},
      {"fold-limit", required_argument, NULL, OPT_FOLD},
      {"upload-limit", required_argument, NULL, OPT_UPLOAD_LIMIT},
      {"max-uploads", required_argument, NULL, OPT_MAX_UPLOADS},
      {"upload-timeout-ms", required_argument, NULL, OPT_UPLOAD_TIMEOUT},
      {"join", required_argument, NULL, OPT_JOIN},
      {"advertise", required_argument, NULL, OPT_ADVERTISE},
      {"help", no_argument, NULL, OPT_HELP},
      {"metrics-listen", required_argument, NULL, OPT_METRICS},
      TS_SECURITY_LONGOPTS,
      {NULL, 0, NULL, 0},
  };
  memset(o, 0, sizeof *o);
  o->max_uploads = MAX_UPLOADS;
  o->upload_timeout_ms = UPLOAD_TIMEOUT_MS;
  opterr = 0;
  int c;
  ts_err err = {0};
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case OPT_LISTEN:
        o->listen = optarg;
        break;
      case OPT_METRICS:
        o->metrics_listen = optarg;
        break;
      case OPT_THREADS: {
        long long n;
        if (ts_integer_parse(optarg, 1, MAX_THREADS, &n, &err))
          return bad_option("--threads", &err);
        o->threads = (int)n;
        break;
      }
      case OPT_MEMORY:
        if (ts_size_parse(optarg, &o->memory_limit, &err))
          return bad_option("--memory-limit", &err);
        break;
      case OPT_ACTIVATION:
        if (ts_size_parse(optarg, &o->activation_limit, &err))
          return bad_option("--activation-limit", &err);
        o->activation_limit_set = true;
        break;
      case OPT_FOLD:
        if (ts_size_parse(optarg, &o->fold_limit, &err))
          return bad_option("--fold-limit", &err);
        if (o->fold_limit == 0) o->fold_limit = UINT64_MAX;
        break;
      case OPT_UPLOAD_LIMIT:
        if (ts_size_parse(optarg, &o->upload_limit, &err))
          return bad_option("--upload-limit", &err);
        o->upload_limit_set = true;
        break;
      case OPT_MAX_UPLOADS: {
        long long n;
        if (ts_integer_parse(optarg, 0, 65536, &n, &err))
          return bad_option("--max-uploads", &err);
        o->max_uploads = (int)n;
        break;
      }
      case OPT_UPLOAD_TIMEOUT:
        if (ts_integer_parse(optarg, 0, 86400000, &o->upload_timeout_ms,
                             &err))
          return bad_option("--upload-timeout-ms", &err);
        break;
      case OPT_JOIN: {
        size_t used = strlen(o->join);
        if (used + 1 + strlen(optarg) >= sizeof o->join) {
          ts_err_set(&err, TS_EINVAL, "more than %d coordinators",
                     TS_JOIN_MAX);
          return bad_option("--join", &err);
        }
        snprintf(o->join + used, sizeof o->join - used, "%s%s",
                 used ? "," : "", optarg);
        break;
      }
      case OPT_ADVERTISE:
        o->advertise = optarg;
        break;
      case OPT_HELP:
        usage(stdout);
        return -1;
      default: {
        int taken = ts_security_option(&o->security, c, optarg, &err);
        if (taken < 0) {
          fprintf(stderr, "tessera-worker: %s\n", err.msg);
          return 2;
        }
        if (taken) break;
        fprintf(stderr, "tessera-worker: unknown or incomplete option '%s'\n",
                argv[optind - 1]);
        usage(stderr);
        return 2;
      }
    }
  }
  if (optind < argc) {
    fprintf(stderr, "tessera-worker: unexpected argument '%s'\n",
            argv[optind]);
    return 2;
  }
  if (!o->listen) {
    fprintf(stderr, "tessera-worker: --listen HOST:PORT is required\n");
    usage(stderr);
    return 2;
  }
  if (!strchr(o->listen, ':')) {
    fprintf(stderr, "tessera-worker: --listen '%s': expected HOST:PORT\n",
            o->listen);
    return 2;
  }
  if (o->join[0] && ts_join_check(o->join, &err))
    return bad_option("--join", &err);
  if (o->security.token_file) {
    fprintf(stderr, "tessera-worker: --auth-token-file is for the "
                    "coordinator (workers admit coordinator certificates)\n");
    return 2;
  }
  if (ts_security_validate(&o->security, o->listen, &err) ||
      ts_security_validate_http(&o->security, o->metrics_listen,
                                "--metrics-listen", &err)) {
    fprintf(stderr, "tessera-worker: %s\n", err.msg);
    return 2;
  }
  if (ts_security_load_secret(&o->security, false, &err)) {
    fprintf(stderr, "tessera-worker: %s\n", err.msg);
    return 2;
  }
  if (o->threads == 0) o->threads = cpu_count();
  if (o->security.limits.max_streams == 0)
    o->security.limits.max_streams =
        QUEUE_CAPACITY + o->threads + STREAMS_BEYOND_RUNS;
  if (!o->activation_limit_set)
    o->activation_limit = default_activation_limit(o->memory_limit, o->threads);
  if (!o->upload_limit_set) o->upload_limit = physical_memory() / UPLOAD_SHARE;
  return 0;
}

/* The shard store with the memory, fold and upload limits of the options. */
static int store_create(const options *o, ts_store **out, ts_err *err) {
  int rc = ts_store_create(o->memory_limit, out, err);
  if (rc == TS_OK)
    ts_store_set_limits(*out, &(ts_store_limits){
                                  .fold_limit = o->fold_limit,
                                  .upload_bytes = o->upload_limit,
                                  .uploads = o->max_uploads});
  return rc;
}

static void notify(const char *state) {
#if TS_HAVE_SYSTEMD
  sd_notify(0, state);
#else
  (void)state;
#endif
}

static void on_signal(uv_signal_t *handle, int signum) {
  ts_log_info("%s: shutting down", strsignal(signum));
  uv_stop(handle->loop);
}

/* SIGTERM/SIGINT handling. The handlers are installed before anything
 * starts and never removed: OpenBLAS starts its threads before main() runs,
 * with no signal blocked, so any thread may take the signal, and without a
 * handler the default action would kill the process instead of draining it.
 * libuv's handler only records the signal; the main thread sees it in
 * stop_signals_wait(). A second signal during the drain is recorded and
 * ignored: the drain is bounded by its grace already. */
typedef struct stop_signals {
  uv_loop_t loop;
  uv_signal_t term, intr, hup;
  ts_rpc_auth *auth; /* SIGHUP re-reads credentials (set once started) */
} stop_signals;

/* SIGHUP: re-read certificates, key and CA (ts_security_reload); before
 * the service started there is nothing to re-read yet. */
static void on_reload(uv_signal_t *handle, int signum) {
  (void)signum;
  stop_signals *s = handle->data;
  ts_security_reload(s->auth);
}

static int stop_signals_install(stop_signals *s) {
  int rc = uv_loop_init(&s->loop);
  if (!rc) rc = uv_signal_init(&s->loop, &s->term);
  if (!rc) rc = uv_signal_init(&s->loop, &s->intr);
  if (!rc) rc = uv_signal_init(&s->loop, &s->hup);
  s->hup.data = s;
  if (!rc) rc = uv_signal_start(&s->term, on_signal, SIGTERM);
  if (!rc) rc = uv_signal_start(&s->intr, on_signal, SIGINT);
  if (!rc) rc = uv_signal_start(&s->hup, on_reload, SIGHUP);
  return rc;
}

/* Sleeps until a stop signal arrives (or arrived since the install). The
 * loop and its handles stay alive until the process exits, on purpose. */
static void stop_signals_wait(stop_signals *s) {
  uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* Whether nothing here could serve a run: no shard held, being uploaded,
 * or still referenced by a run. */
static int holds_nothing(ts_store *store) {
  ts_store_stats st;
  ts_store_stats_get(store, &st);
  return st.shards == 0 && st.memory_used == 0;
}

/* Steps 2 and 3 of a graceful leave (see the top of this file): the
 * coordinators move this worker's shards while it keeps serving, then the
 * runs stop arriving. The quiet wait is only for when nobody can say that
 * they stopped: once every coordinator answered DeregisterWorker none routes
 * nothing here any more, and a worker that holds no shard has nothing a
 * run could use; either stops as soon as its runs in flight are done. */
static void leave(ts_join *join, ts_pool *pool, ts_store *store,
                  int64_t deadline) {
  if (join) {
    ts_err err = {0};
    int moved = 0, left = 0;
    if (ts_join_leave(join, deadline, &moved, &left, &err) == TS_OK) {
      ts_log_info("deregistered: every coordinator moved %d shard replica(s) "
                  "to other workers%s and routes nothing here; stopping "
                  "once the runs in flight are done", moved,
                  left ? " (some found no room and stay here)" : "");
      return;
    }
    ts_log_warn("leaving without every coordinator's word: %s", err.msg);
  }
  if (holds_nothing(store)) {
    ts_log_info("no shard held: stopping once the runs in flight are done");
    return;
  }
  if (ts_pool_wait_quiet(pool, QUIET_MS, deadline) != TS_OK)
    ts_log_warn("runs still arrive %d ms after the stop signal; stopping "
                "anyway", LEAVE_MS);
}

int main(int argc, char **argv) {
  /* Before anything else, so it answers even where options are wrong. */
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("tessera-worker %s\n", TESSERA_VERSION);
    return 0;
  }
  ts_log_set_component("worker");
  ts_log_init_from_env();
  ts_blas_select_kernels(argc, argv);

  options opt;
  int status = parse_options(argc, argv, &opt);
  if (status) return status < 0 ? 0 : status;

  signal(SIGPIPE, SIG_IGN);
  static stop_signals signals;
  int rc = stop_signals_install(&signals);
  if (rc) {
    ts_log_error("cannot install signal handlers: %s", uv_strerror(rc));
    return 1;
  }
  ts_rpc_init();

  ts_err err = {0};
  ts_rpc_set_limits(&opt.security.limits, &err); /* checked by the parser */
  ts_store *store = NULL;
  ts_pool *pool = NULL;
  ts_worker_service *svc = NULL;
  ts_rpc_auth *auth = NULL;
  int port = 0;
  ts_rpc_creds creds = ts_security_creds(&opt.security);
  if (ts_security_auth(&opt.security, false, &auth, &err) ||
      store_create(&opt, &store, &err) ||
      ts_pool_create(opt.threads, QUEUE_CAPACITY, &pool, &err) ||
      ts_worker_service_start(opt.listen, &creds, auth, store, pool, &svc,
                              &port, &err)) {
    ts_log_error("cannot start: %s", err.msg);
    ts_rpc_auth_free(auth);
    ts_pool_free(pool);
    ts_store_free(store);
    ts_rpc_shutdown();
    return 1;
  }
  ts_worker_service_set_upload_timeout(svc, opt.upload_timeout_ms);
  ts_log_info("serving on %s: %d kernel threads, memory limit %" PRIu64
              " bytes%s, OpenBLAS core %s",
              ts_worker_service_address(svc), opt.threads, opt.memory_limit,
              opt.memory_limit ? "" : " (none)", ts_blas_core_name());
  ts_worker_service_set_activation_limit(svc, opt.activation_limit);
  ts_log_info("activation limit %" PRIu64 " bytes per run%s",
              opt.activation_limit,
              opt.activation_limit ? "" : " (none)");
  ts_log_info("uploads: at most %d at once, %" PRIu64 " bytes in flight%s, "
              "timeout %lld ms", opt.max_uploads, opt.upload_limit,
              opt.upload_limit ? "" : " (no limit)", opt.upload_timeout_ms);
  ts_http_server *metrics = NULL;
  if (opt.metrics_listen &&
      ts_worker_metrics_start(opt.metrics_listen, store, &metrics, NULL,
                              &err) != TS_OK)
    ts_log_error("--metrics-listen: %s", err.msg);
  if (!opt.security.tls_cert && !opt.security.secret[0])
    ts_log_warn("plaintext and no cluster secret on %s: any process that "
                "reaches it may call every method (see --tls-cert, "
                "--cluster-secret-file, docs/SECURITY.md)", opt.listen);
  printf("listening on %s\n", ts_worker_service_address(svc));
  fflush(stdout);
  ts_join *join = NULL;
  if (opt.join[0]) {
    char advertise[300];
    if (opt.advertise)
      snprintf(advertise, sizeof advertise, "%s", opt.advertise);
    else
      ts_join_advertise_address(opt.listen, port, advertise, sizeof advertise);
    if (ts_join_start(opt.join, advertise, &creds, &join, &err) != TS_OK)
      ts_log_error("--join %s: %s", opt.join, err.msg);
  }
  signals.auth = auth;
  notify("READY=1");

  stop_signals_wait(&signals);

  notify("STOPPING=1");
  int64_t deadline = ts_now_ms() + GRACE_MS;
  ts_worker_service_set_serving(svc, 0);
  leave(join, pool, store, ts_now_ms() + LEAVE_MS);
  ts_join_stop(join);
  ts_pool_close(pool);
  if (ts_pool_wait_idle(pool, deadline) != TS_OK) {
    ts_pool_cancel_queued(pool);
    int running = 0;
    ts_pool_stats(pool, NULL, NULL, &running);
    if (running > 0) {
      ts_log_warn("%d runs still executing after the %d ms grace; exiting "
                  "without waiting for them", running, GRACE_MS);
      fflush(stdout);
      _exit(0);
    }
  }
  int64_t left = deadline - ts_now_ms();
  ts_worker_service_stop(svc, left > 1000 ? left : 1000);
  ts_http_stop(metrics);
  ts_pool_free(pool);
  ts_store_free(store);
  ts_rpc_auth_free(auth);
  ts_rpc_shutdown();
  ts_log_info("stopped");
  return 0;
}
