/*
 * tessera-coordinator: options, wiring and the control-plane loop.
 *
 * Start-up order matters: local workers are forked before gRPC starts
 * (gRPC does not survive fork), models are loaded and their shards placed
 * before the frontend binds, and "listening on HOST:PORT" is printed only
 * once the server can answer. The libuv loop owns signals and the prober
 * (cluster/prober.h); request handling never runs on the loop (see
 * ARCHITECTURE.md, "Threads and the event loop").
 */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "batcher.h"
#include "config.h"
#include "frontend.h"
#include "http.h"
#include "metrics.h"
#include "rest.h"
#include "local_workers.h"
#include "log.h"
#include "membership.h"
#include "options.h"
#include "prober.h"
#include "registry.h"
#include "rpc.h"
#include "rpc_auth.h"
#include "ts_config.h"

#if TS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#define notify(s) sd_notify(0, s)
#else
#define notify(s) ((void)0)
#endif

#define MAX_SPECS 256
/* At SIGTERM, how long running control calls may still take: a
 * registration's Status probe (TS_JOIN_STATUS_TIMEOUT_MS) fits. */
#define CONTROL_STOP_MS (TS_JOIN_STATUS_TIMEOUT_MS + 500)

typedef struct options {
  const char *listen;
  const char *workers[TS_MAX_WORKERS];
  int n_workers;
  int local_workers;
  int worker_threads;
  uint64_t worker_memory_limit;
  long long worker_activation_limit; /* < 0: the worker's default */
  const char *fold_limit;     /* --fold-limit as given; NULL: the default */
  size_t fold_limit_bytes;    /* parsed: 0 default, SIZE_MAX none */
  const char *worker_binary;
  const char *models[MAX_SPECS];
  int n_models;
  const char *repository;
  long max_deadline_ms;
  int max_queue;
  long attempt_timeout_ms;
  long replace_after_ms;
  int round_robin;
  const char *metrics_listen; /* NULL: no /metrics (metrics.h) */
  const char *http_listen;    /* NULL: no KServe v2 REST (rest.h) */
  uint64_t http_max_body;     /* REST request bodies, at most */
  ts_security_opts security; /* TLS, tokens, the loopback rule */
} options;

static void usage(FILE *f) {
  fprintf(f,
"usage: tessera-coordinator --listen HOST:PORT [options]\n"
"\n"
"Serves ONNX models over the KServe v2 gRPC protocol, cut into shards that\n"
"run on tessera-worker daemons.\n"
"\n"
"  --listen HOST:PORT          address to serve on (port 0: pick a free one)\n"
"  --worker HOST:PORT          a worker to use (repeatable); workers may\n"
"                              also join later (tessera-worker --join)\n"
"  --local-workers N           start N worker processes on loopback\n"
"  --worker-threads N          kernel threads per local worker (default:\n"
"                              CPUs / N, at least 1)\n"
"  --worker-memory-limit BYTES memory limit of each local worker (bytes,\n"
"                              or K/M/G/T, e.g. 512M, 1GiB)\n"
"  --worker-activation-limit BYTES\n"
"                              activation memory of one run on a local\n"
"                              worker (K/M/G/T; 0: none; default: the\n"
"                              worker's, see tessera-worker --help)\n"
"  --fold-limit BYTES          cap on the constants one model's load folds,\n"
"                              here and on local workers (K/M/G/T; 0: none;\n"
"                              default: max(64M, 4 x the model's bytes))\n"
"  --worker-binary PATH        tessera-worker to start (default: beside this\n"
"                              program)\n"
"  --model NAME=FILE.onnx[,key=value...]\n"
"  --model NAME=ensemble:A+B[,fuse=mean|weighted_mean|vote][,weights=1+2]\n"
"                              serve a model (repeatable); keys: strategy=\n"
"                              data|tensor|pipeline|hybrid|auto|block,\n"
"                              shards=N, grid=RxC, stages=N, replicas=N,\n"
"                              max_batch=N,\n"
"                              batch_delay_us=N\n"
"  --model-repository DIR      serve DIR/NAME/model.onnx (+ config.ini)\n"
"  --max-deadline-ms N         cap on any request's deadline (default 60000)\n"
"  --max-queue N               requests waiting for a dynamic batch, at most\n"
"                              (default 1024; beyond: RESOURCE_EXHAUSTED)\n"
"  --attempt-timeout-ms N      one shard call's limit before it moves to\n"
"                              another replica (default 2000; 0: none)\n"
"  --replace-after-ms N        re-place a down worker's shards on other\n"
"                              workers once it has been down this long\n"
"                              (default 5000)\n"
"  --round-robin               schedule replicas round-robin instead of by\n"
"                              power of two choices\n"
"  --metrics-listen HOST:PORT  serve Prometheus metrics at /metrics\n"
"  --http-listen HOST:PORT     serve the KServe v2 REST API: HTTPS with\n"
"                              --tls-cert/--tls-key (needs\n"
"                              --auth-token-file), else plaintext HTTP,\n"
"                              loopback only unless --insecure\n"
"  --http-max-body BYTES       REST request bodies, at most (K/M/G;\n"
"                              default 64M; beyond: 413)\n"
"  --version                   print the version and exit\n"
"  --help                      this text\n"
"%s", ts_security_usage);
}

/* Reports a bad option value (err says why) and returns the exit status 2. */
static int bad_option(const char *option, const ts_err *err) {
  fprintf(stderr, "tessera-coordinator: %s %s\n", option, err->msg);
  return 2;
}

/* An integer option in [lo, hi] into *out (of any integer type via v). */
#define INT_OPTION(option, lo, hi, field)                              \
  do {                                                                 \
    long long v;                                                       \
    if (ts_integer_parse(optarg, lo, hi, &v, &err))                    \
      return bad_option(option, &err);                                 \
    field = v;                                                         \
  } while (0)

/* Appends optarg to a repeatable option's list[*n] (max entries); 0, or the
 * exit status 2 once the list is full. */
static int append_option(const char **list, int *n, int max,
                         const char *option) {
  if (*n == max) {
    fprintf(stderr, "tessera-coordinator: too many %s\n", option);
    return 2;
  }
  list[(*n)++] = optarg;
  return 0;
}

static int parse_options(int argc, char **argv, options *o) {
  enum { O_LISTEN = 1, O_WORKER, O_LOCAL, O_THREADS, O_LIMIT, O_ACT, O_BINARY,
         O_MODEL, O_REPO, O_DEADLINE, O_QUEUE, O_ATTEMPT, O_REPLACE, O_RR, O_HELP,
         O_METRICS, O_FOLD, O_HTTP, O_HTTP_BODY };
  static const struct option longopts[] = {
      {"listen", required_argument, 0, O_LISTEN},
      {"worker", required_argument, 0, O_WORKER},
      {"local-workers", required_argument, 0, O_LOCAL},
      {"worker-threads", required_argument, 0, O_THREADS},
      {"worker-memory-limit", required_argument, 0, O_LIMIT},
      {"worker-activation-limit", required_argument, 0, O_ACT},
      {"worker-binary", required_argument, 0, O_BINARY},
      {"fold-limit", required_argument, 0, O_FOLD},
      {"model", required_argument, 0, O_MODEL},
      {"model-repository", required_argument, 0, O_REPO},
      {"max-deadline-ms", required_argument, 0, O_DEADLINE},
      {"max-queue", required_argument, 0, O_QUEUE},
      {"attempt-timeout-ms", required_argument, 0, O_ATTEMPT},
      {"replace-after-ms", required_argument, 0, O_REPLACE},
      {"round-robin", no_argument, 0, O_RR},
      {"help", no_argument, 0, O_HELP},
      {"metrics-listen", required_argument, 0, O_METRICS},
      {"http-listen", required_argument, 0, O_HTTP},
      {"http-max-body", required_argument, 0, O_HTTP_BODY},
      TS_SECURITY_LONGOPTS,
      {0, 0, 0, 0}};
  memset(o, 0, sizeof *o);
  o->worker_activation_limit = -1;
  o->max_deadline_ms = 60000;
  o->max_queue = 1024;
  o->attempt_timeout_ms = 2000;
  o->replace_after_ms = 5000;
  o->http_max_body = TS_REST_MAX_BODY_DEFAULT;
  int c;
  ts_err err = {0};
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case O_LISTEN: o->listen = optarg; break;
      case O_METRICS: o->metrics_listen = optarg; break;
      case O_HTTP: o->http_listen = optarg; break;
      case O_HTTP_BODY:
        if (ts_size_parse(optarg, &o->http_max_body, &err) ||
            o->http_max_body == 0 || o->http_max_body > SIZE_MAX / 2) {
          if (!err.code)
            ts_err_set(&err, TS_EINVAL, "'%s' is not a size in [1, %zu]",
                       optarg, SIZE_MAX / 2);
          return bad_option("--http-max-body", &err);
        }
        break;
      case O_WORKER:
        if (append_option(o->workers, &o->n_workers, TS_MAX_WORKERS,
                          "--worker"))
          return 2;
        break;
      case O_LOCAL: INT_OPTION("--local-workers", 0, 64, o->local_workers); break;
      case O_THREADS:
        INT_OPTION("--worker-threads", 1, 1024, o->worker_threads);
        break;
      case O_LIMIT:
        if (ts_size_parse(optarg, &o->worker_memory_limit, &err))
          return bad_option("--worker-memory-limit", &err);
        break;
      case O_ACT: {
        uint64_t v;
        if (ts_size_parse(optarg, &v, &err))
          return bad_option("--worker-activation-limit", &err);
        if (v > LLONG_MAX) {
          ts_err_set(&err, TS_EINVAL, "'%s' is too large a size", optarg);
          return bad_option("--worker-activation-limit", &err);
        }
        o->worker_activation_limit = (long long)v;
        break;
      }
      case O_BINARY: o->worker_binary = optarg; break;
      case O_FOLD: {
        uint64_t v;
        if (ts_size_parse(optarg, &v, &err))
          return bad_option("--fold-limit", &err);
        o->fold_limit = optarg;
        o->fold_limit_bytes = v == 0 || v > SIZE_MAX ? SIZE_MAX : (size_t)v;
        break;
      }
      case O_MODEL:
        if (append_option(o->models, &o->n_models, MAX_SPECS, "--model"))
          return 2;
        break;
      case O_REPO: o->repository = optarg; break;
      case O_DEADLINE:
        INT_OPTION("--max-deadline-ms", 1, LONG_MAX, o->max_deadline_ms);
        break;
      case O_QUEUE: INT_OPTION("--max-queue", 1, 1000000, o->max_queue); break;
      case O_ATTEMPT:
        INT_OPTION("--attempt-timeout-ms", 0, LONG_MAX, o->attempt_timeout_ms);
        break;
      case O_REPLACE:
        INT_OPTION("--replace-after-ms", 0, LONG_MAX, o->replace_after_ms);
        break;
      case O_RR: o->round_robin = 1; break;
      case O_HELP: usage(stdout); exit(0);
      default: {
        int taken = ts_security_option(&o->security, c, optarg, &err);
        if (taken < 0) {
          fprintf(stderr, "tessera-coordinator: %s\n", err.msg);
          return 2;
        }
        if (taken) break;
        usage(stderr);
        return 2;
      }
    }
  }
  if (optind < argc) {
    fprintf(stderr, "tessera-coordinator: unexpected argument '%s'\n",
            argv[optind]);
    return 2;
  }
  if (!o->listen) {
    fprintf(stderr, "tessera-coordinator: --listen HOST:PORT is required\n");
    usage(stderr);
    return 2;
  }
  if (ts_security_validate(&o->security, o->listen, &err) ||
      ts_security_validate_http(&o->security, o->metrics_listen,
                                "--metrics-listen", &err) ||
      (!o->security.tls_cert &&
       ts_security_validate_http(&o->security, o->http_listen,
                                 "--http-listen", &err))) {
    fprintf(stderr, "tessera-coordinator: %s\n", err.msg);
    return 2;
  }
  /* The REST port checks no client certificates: over TLS, tokens are
   * what keeps it from admitting everyone. */
  if (o->http_listen && o->security.tls_cert && !o->security.token_file) {
    fprintf(stderr, "tessera-coordinator: --http-listen with TLS needs "
                    "--auth-token-file (REST clients authenticate with bearer "
                    "tokens, not certificates)\n");
    return 2;
  }
  return 0;
}

/* The options every --local-workers child gets: this coordinator's
 * certificate (it serves worker RPCs to the coordinator role, which this
 * certificate carries), trust domain, gRPC limits and fold limit (its
 * shards fold what its models did). */
static void local_worker_args(const options *o, const char **args,
                              char (*limit_buf)[24]) {
  int a = ts_security_limit_args(&o->security, args, limit_buf);
  if (o->security.tls_cert) {
    args[a++] = "--tls-cert";
    args[a++] = o->security.tls_cert;
    args[a++] = "--tls-key";
    args[a++] = o->security.tls_key;
    args[a++] = "--tls-ca";
    args[a++] = o->security.tls_ca;
  }
  if (o->security.trust_domain) {
    args[a++] = "--trust-domain";
    args[a++] = o->security.trust_domain;
  }
  if (o->fold_limit) {
    args[a++] = "--fold-limit";
    args[a++] = o->fold_limit;
  }
  args[a] = NULL;
}

/* ---- model loading order: plain models, repository, then ensembles ---- */

static int load_models(ts_registry *reg, const options *o) {
  ts_model_config *configs = calloc(MAX_SPECS, sizeof *configs);
  ts_model_config *repo = NULL;
  int n_repo = 0, rc = TS_OK;
  ts_err err = {0};
  if (!configs) {
    fprintf(stderr, "tessera-coordinator: no memory for the model list\n");
    return TS_ENOMEM;
  }
  for (int i = 0; i < o->n_models && rc == TS_OK; i++)
    rc = ts_model_config_parse_spec(o->models[i], &configs[i], &err);
  if (rc == TS_OK && o->repository)
    rc = ts_model_repository_scan(o->repository, &repo, &n_repo, &err);
  for (int pass = 0; pass < 2 && rc == TS_OK; pass++) {
    for (int i = 0; i < o->n_models + n_repo && rc == TS_OK; i++) {
      ts_model_config *c = i < o->n_models ? &configs[i]
                                           : &repo[i - o->n_models];
      if (c->is_ensemble != pass) continue;
      rc = ts_registry_load(reg, c, &err);
      /* Missing workers are not fatal: the model waits for them. */
      if (rc == TS_EUNAVAILABLE) rc = TS_OK;
    }
  }
  if (rc) fprintf(stderr, "tessera-coordinator: %s\n", err.msg);
  free(configs);
  free(repo);
  return rc;
}

/* ---- control plane ------------------------------------------------------ */

typedef struct control {
  uv_loop_t *loop;
  uv_signal_t sigterm, sigint, sighup;
  ts_prober prober;
  ts_rpc_auth *auth;
} control;

/* SIGHUP: re-read certificates, keys, CA and the token file; a bad file
 * keeps the old one in force. */
static void on_reload(uv_signal_t *s, int signum) {
  (void)signum;
  control *ctl = s->data;
  ts_security_reload(ctl->auth);
}

static void on_signal(uv_signal_t *s, int signum) {
  control *ctl = s->data;
  ts_log_info("received %s; shutting down", strsignal(signum));
  notify("STOPPING=1");
  uv_signal_stop(&ctl->sigterm);
  uv_signal_stop(&ctl->sigint);
  uv_signal_stop(&ctl->sighup);
  ts_prober_stop(&ctl->prober);
  uv_close((uv_handle_t *)&ctl->sigterm, NULL);
  uv_close((uv_handle_t *)&ctl->sigint, NULL);
  uv_close((uv_handle_t *)&ctl->sighup, NULL);
}

static void print_listening(const char *listen, int port) {
  int host_len = (int)ts_hostport_host_length(listen);
  printf("listening on %.*s:%d\n", host_len, listen, port);
  fflush(stdout);
}

int main(int argc, char **argv) {
  /* Before anything else, so it answers even where options are wrong. */
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("tessera-coordinator %s\n", TESSERA_VERSION);
    return 0;
  }
  options o;
  int rc = parse_options(argc, argv, &o);
  if (rc) return rc;
  signal(SIGPIPE, SIG_IGN);
  ts_log_set_component("coordinator");
  ts_log_init_from_env();

  /* Without certificates, a random secret shuts other local users out of
   * the local workers and RegisterWorker; they get it in their
   * environment, never in argv. */
  ts_err serr = {0};
  if (ts_security_load_secret(&o.security,
                              o.local_workers > 0 && !o.security.tls_cert,
                              &serr) != TS_OK) {
    fprintf(stderr, "tessera-coordinator: %s\n", serr.msg);
    return 2;
  }
  if (o.security.secret[0] && o.local_workers > 0)
    setenv(TS_CLUSTER_SECRET_ENV, o.security.secret, 1);
  ts_local_workers local = {0};
  if (o.local_workers > 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o.worker_threads
                      ? o.worker_threads
                      : (int)(cpus / o.local_workers > 0
                                  ? cpus / o.local_workers
                                  : 1);
    ts_err err = {0};
    const char *extra[TS_LOCAL_EXTRA_ARGS + 1];
    char limit_buf[2][24];
    local_worker_args(&o, extra, limit_buf);
    if (ts_local_workers_start(&local, o.local_workers, threads,
                               o.worker_memory_limit,
                               o.worker_activation_limit, o.worker_binary,
                               extra, &err) != TS_OK) {
      fprintf(stderr, "tessera-coordinator: %s\n", err.msg);
      return 1;
    }
  }
  unsetenv(TS_CLUSTER_SECRET_ENV);

  ts_rpc_init();
  ts_membership cluster;
  ts_registry registry;
  ts_err err = {0};
  ts_rpc_server *server = NULL;
  ts_rpc_auth *auth = NULL;
  int exit_code = 1;
  ts_rpc_set_limits(&o.security.limits, &err); /* checked by the parser */
  /* One set of credentials for the client port and every worker channel:
   * with tokens, clients may come without a certificate; the worker
   * channels present this coordinator's either way. */
  ts_rpc_creds creds = ts_security_creds(&o.security);
  if (ts_security_auth(&o.security, true, &auth, &err) != TS_OK ||
      ts_membership_init(&cluster, &creds, &err) != TS_OK) {
    fprintf(stderr, "tessera-coordinator: %s\n", err.msg);
    goto out_rpc;
  }
  for (int i = 0; i < o.n_workers; i++)
    if (ts_membership_add(&cluster, o.workers[i], &err) != TS_OK) {
      fprintf(stderr, "tessera-coordinator: worker %s: %s\n", o.workers[i],
              err.msg);
      goto out_cluster;
    }
  for (int i = 0; i < local.n; i++)
    if (ts_membership_add(&cluster, local.addresses[i], &err) != TS_OK) {
      fprintf(stderr, "tessera-coordinator: %s\n", err.msg);
      goto out_cluster;
    }
  ts_registry_init(&registry, &cluster, o.repository);
  registry.fold_limit = o.fold_limit_bytes;
  if (load_models(&registry, &o) != TS_OK) goto out_registry;

  ts_frontend fe = {
      .registry = &registry,
      .cluster = &cluster,
      .dispatch = {.policy = o.round_robin ? TS_SCHED_ROUND_ROBIN
                                           : TS_SCHED_P2C,
                   .attempt_timeout_ms = o.attempt_timeout_ms},
      .max_deadline_ms = o.max_deadline_ms,
  };
  if (ts_batcher_create(&cluster, &fe.dispatch, o.max_queue, &fe.batcher,
                        &err) != TS_OK) {
    fprintf(stderr, "tessera-coordinator: %s\n", err.msg);
    goto out_registry;
  }
  ts_admin admin = {.registry = &registry, .cluster = &cluster};
  ts_rpc_method methods[TS_FRONTEND_METHODS + TS_ADMIN_METHODS];
  int n_methods = ts_frontend_methods(&fe, methods);
  n_methods += ts_admin_methods(&admin, methods + n_methods);
  ts_rpc_server_opts sopts = {
      .listen = o.listen, .creds = &creds, .auth = auth, .poll_threads = 1};
  int port = 0;
  if (ts_rpc_server_start(&sopts, methods, n_methods, &server, &port, &err) !=
      TS_OK) {
    fprintf(stderr, "tessera-coordinator: cannot serve on %s: %s\n", o.listen,
            err.msg);
    goto out_batcher;
  }
  ts_log_info("serving %d model(s) on port %d with %d worker(s)", registry.n,
              port, (int)cluster.n);
  if (cluster.n == 0)
    ts_log_warn("no workers yet: models wait until workers join "
                "(tessera-worker --join %s)", o.listen);
  ts_http_server *metrics = NULL;
  int metrics_port = 0;
  if (o.metrics_listen &&
      ts_coord_metrics_start(o.metrics_listen, &cluster, &fe, fe.batcher,
                             &metrics, &metrics_port, &err) != TS_OK) {
    fprintf(stderr, "tessera-coordinator: --metrics-listen %s\n", err.msg);
    ts_rpc_server_stop(server, 1000);
    goto out_batcher;
  }
  if (metrics) ts_log_info("metrics on port %d at /metrics", metrics_port);
  ts_http_server *rest = NULL;
  int rest_port = 0;
  ts_rest_opts rest_opts = {.listen = o.http_listen,
                            .max_body = (size_t)o.http_max_body,
                            .auth = auth,
                            .tls_cert = o.security.tls_cert,
                            .tls_key = o.security.tls_key};
  if (o.http_listen &&
      ts_rest_start(&fe, &rest_opts, &rest, &rest_port, &err) != TS_OK) {
    fprintf(stderr, "tessera-coordinator: --http-listen %s\n", err.msg);
    ts_http_stop(metrics);
    ts_rpc_server_stop(server, 1000);
    goto out_batcher;
  }
  if (rest)
    ts_log_info("KServe v2 REST (%s) on port %d at /v2",
                o.security.tls_cert ? "HTTPS" : "HTTP", rest_port);
  if (!o.security.tls_cert && o.security.secret[0])
    ts_log_info("plaintext on %s; worker registration and the workers "
                "need the cluster secret", o.listen);
  else if (!o.security.tls_cert)
    ts_log_warn("plaintext on %s: any process that reaches it may call "
                "every method (see --tls-cert, docs/SECURITY.md)", o.listen);
  /* The signals are ours before anyone is told we listen: a SIGTERM right
   * after "listening on" (or READY=1) drains and exits 0, never 143. */
  control ctl = {.loop = uv_default_loop(), .auth = auth};
  uv_signal_init(ctl.loop, &ctl.sigterm);
  uv_signal_init(ctl.loop, &ctl.sigint);
  uv_signal_init(ctl.loop, &ctl.sighup);
  ctl.sigterm.data = ctl.sigint.data = ctl.sighup.data = &ctl;
  uv_signal_start(&ctl.sigterm, on_signal, SIGTERM);
  uv_signal_start(&ctl.sigint, on_signal, SIGINT);
  uv_signal_start(&ctl.sighup, on_reload, SIGHUP);
  print_listening(o.listen, port);
  notify("READY=1");
  ts_prober_start(&ctl.prober, ctl.loop, &cluster, &registry,
                  o.replace_after_ms);
  uv_run(ctl.loop, UV_RUN_DEFAULT);
  uv_loop_close(ctl.loop);

  /* Health says NOT_SERVING, new requests get UNAVAILABLE, requests in
   * flight finish (10 s at most); only then does the server stop, so no
   * accepted request is ever cancelled by the shutdown itself. */
  ts_rpc_server_set_serving(server, 0);
  int left = ts_frontend_drain(&fe, 10000);
  if (left) ts_log_warn("%d request(s) still in flight after 10 s", left);
  /* Control calls (registrations, loads) still queued are answered
   * UNAVAILABLE; running ones get a few seconds to finish before the
   * registry and the membership they use are freed. */
  ts_rpc_offload_stop(CONTROL_STOP_MS);
  ts_rpc_server_stop(server, 1000);
  ts_http_stop(rest);
  ts_http_stop(metrics);
  exit_code = 0;
out_batcher:
  ts_batcher_free(fe.batcher);
out_registry:
  ts_registry_free(&registry);
out_cluster:
  ts_membership_free(&cluster);
out_rpc:
  ts_rpc_auth_free(auth);
  ts_rpc_shutdown();
  /* A local worker that crashed or failed its own shutdown fails the
   * coordinator's exit status too, so systemd and tests see it. */
  if (local.n && ts_local_workers_stop(&local, 10000) > 0) exit_code = 1;
  ts_log_info("stopped");
  return exit_code;
}
