/*
 * rpc.h - Tessera's gRPC layer on the C core (grpc/grpc.h). No C++.
 *
 * Threads: one completion queue per process (the engine), shared by every
 * server and asynchronous client, polled by a few threads (the most any
 * server asked for; one by default). Handlers and completion callbacks run
 * on those threads, so none of them may block: a blocked callback stalls
 * every server and client of the process. With one poller a call's whole
 * life (request in, worker calls out and back, answer) stays on one thread,
 * which is what makes the request path cheap (no wake-ups between threads).
 *
 * Servers: a table of methods (unary or client-streaming) and a handler per
 * method. Handlers run on a poller thread and must not block or run kernels
 * there: they hand work to their own threads and answer later, from any
 * thread, exactly once, with ts_rpc_call_reply_owned() or ts_rpc_call_fail().
 * Calls to paths not in the table answer UNIMPLEMENTED. Every server answers
 * grpc.health.v1.Health/Check (see ts_rpc_server_set_serving).
 *
 * Clients: a ts_rpc_client makes asynchronous calls on the engine; their
 * completion callbacks run on a poller thread and must not block.
 * Synchronous helpers (unary and client streaming) use a queue of their own
 * and are for the CLI and the control plane, never for a poller thread.
 *
 * Credentials are passed in from the start (ts_rpc_creds): all fields NULL
 * means plaintext; cert+key makes a TLS server (add ca for mTLS, requiring
 * and verifying client certificates); on a client, ca verifies the server
 * and cert+key present a client certificate. The files are read once per
 * process and re-read by ts_rpc_creds_reload (SIGHUP): new handshakes of
 * servers and new calls of channels then use the new files, while
 * connections and calls already up finish with the old ones.
 *
 * Deadlines are absolute CLOCK_MONOTONIC milliseconds (ts_now_ms()).
 * TS_DEADLINE_NONE means none.
 *
 * Limits (docs/LIMITS.md): every message, sent or received, by servers and
 * channels alike, is at most the process's max_message (ts_rpc_set_limits;
 * 64 MiB unless set); each method caps its own requests lower
 * (ts_rpc_method.max_request), checked before a handler sees the bytes.
 * Nothing is sent compressed, and nothing received is decompressed: a
 * server refuses a compressed request, a client call a compressed answer
 * (UNIMPLEMENTED), unread.
 *
 * Ownership: request bytes handed to a handler are valid only during the
 * handler call. Reply buffers passed to *_owned functions must come from
 * malloc() and are freed by this layer.
 */
#ifndef TS_RPC_H
#define TS_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define TS_DEADLINE_NONE INT64_MAX

/* The health check every server answers (grpc.health.v1). */
#define TS_RPC_HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t ts_now_ms(void);

typedef struct ts_rpc_creds {
  const char *cert_file; /* PEM certificate chain */
  const char *key_file;  /* PEM private key */
  const char *ca_file;   /* PEM roots: server verifies clients, client verifies server */
  const char *token;     /* client: sent as "authorization: Bearer TOKEN"
                            (needs TLS: ca_file); NULL: none */
  int client_cert_optional; /* server with ca_file: a client may come
                               without a certificate (tokens, rpc_auth.h) */
  const char *cluster_secret; /* client: sent as TS_RPC_SECRET_METADATA on
                                 every call (daemon to daemon, rpc_auth.h);
                                 NULL: none. Servers ignore it */
} ts_rpc_creds;

/* Reads a whole PEM file (at most 1 MiB; `what` names it in messages)
 * into a NUL-terminated string the caller frees; *out is NULL for a NULL
 * path. For another server that serves the same certificate (the REST
 * port, rest.h). */
int ts_rpc_pem_read(const char *path, const char *what, char **out,
                    ts_err *err);

/* The call metadata key of the cluster secret. */
#define TS_RPC_SECRET_METADATA "tessera-cluster-secret"

/* Re-reads the PEM files of every server and channel of the process. Each
 * set that reads and parses (the certificate matches the key; the CA file
 * holds certificates) is used by new TLS handshakes and new calls from now
 * on; a set that does not keeps its old bytes, is logged, and its error is
 * returned (the first one, in err). Any thread. */
int ts_rpc_creds_reload(ts_err *err);

/* ---- limits ---------------------------------------------------------- */

#define TS_RPC_MAX_MESSAGE_DEFAULT (64u << 20) /* --max-message-size */
#define TS_RPC_MAX_MESSAGE_MIN (64u << 10)
#define TS_RPC_MAX_MESSAGE_MAX (1u << 30)
/* The cap on one request of a control method (registration, repository,
 * status, health): they carry names and addresses, never tensors. */
#define TS_RPC_CONTROL_MAX_REQUEST (64u << 10)
#define TS_RPC_MAX_STREAMS_DEFAULT 100 /* --max-streams */
#define TS_RPC_MAX_STREAMS_MAX 100000

typedef struct ts_rpc_limits {
  size_t max_message; /* bytes of any one message, either way; 0: default */
  int max_streams;    /* concurrent calls per connection to a server;
                         0: default */
} ts_rpc_limits;

/* Sets the process's limits (0 fields take the defaults): servers started
 * and channels opened afterwards use them. TS_EINVAL, and nothing changes,
 * when max_message is not in TS_RPC_MAX_MESSAGE_MIN..MAX or max_streams not
 * in 1..TS_RPC_MAX_STREAMS_MAX. Call from main, before any server or
 * channel exists. */
int ts_rpc_set_limits(const ts_rpc_limits *limits, ts_err *err);
/* The limits in force (the defaults unless set). */
ts_rpc_limits ts_rpc_get_limits(void);

/* A server's access policy (rpc_auth.h). */
typedef struct ts_rpc_auth ts_rpc_auth;

/* grpc_init() plus routing gRPC's log lines into log.h. Call once, before
 * any other function here, after any fork. ts_rpc_shutdown() undoes it. */
void ts_rpc_init(void);
void ts_rpc_shutdown(void);

/* The TS_E* code for a gRPC status code (inverse of ts_err_grpc_status,
 * derived from the same error table; statuses no TS_E* code produces map to
 * the nearest code, unknown numbers to TS_EINTERNAL). */
int ts_err_from_grpc_status(int status);
/* gRPC's name for a status code ("DEADLINE_EXCEEDED"); "UNKNOWN" for a
 * number gRPC does not define. */
const char *ts_rpc_status_name(int status);

/* ---- server ---------------------------------------------------------- */

typedef struct ts_rpc_server ts_rpc_server;
typedef struct ts_rpc_call ts_rpc_call;

typedef enum {
  TS_RPC_UNARY,
  TS_RPC_CLIENT_STREAM,
} ts_rpc_kind;

/* Unary: `req` is valid during the call only. */
typedef void (*ts_rpc_unary_fn)(ts_rpc_call *call, const uint8_t *req,
                                size_t len, void *user);
/* Client streaming: called once per message, in order, on a poller thread.
 * Return 0 to go on; a negative TS_E* code (with err set) ends the call with
 * that status, and on_end is then called with cancelled = 1 and must not
 * answer. */
typedef int (*ts_rpc_stream_msg_fn)(ts_rpc_call *call, const uint8_t *msg,
                                    size_t len, void *user, ts_err *err);
/* Client streaming: the client half-closed (cancelled = 0; the handler must
 * answer) or the call died / was failed (cancelled = 1; no answer possible,
 * release state). Called exactly once per call. */
typedef void (*ts_rpc_stream_end_fn)(ts_rpc_call *call, void *user,
                                     int cancelled);

typedef struct ts_rpc_method {
  const char *path; /* "/package.Service/Method" */
  ts_rpc_kind kind;
  ts_rpc_unary_fn unary;
  ts_rpc_stream_msg_fn on_message;
  ts_rpc_stream_end_fn on_end;
  void *user;
  unsigned roles; /* TS_ROLE_* bits admitted (rpc_auth.h); 0: anyone */
  size_t max_request; /* bytes of one request message (each message of a
                         stream); 0: the process's max_message. A bigger
                         one is RESOURCE_EXHAUSTED before the handler */
} ts_rpc_method;

typedef struct ts_rpc_server_opts {
  const char *listen;          /* "HOST:PORT"; port 0 picks a free one */
  const ts_rpc_creds *creds;   /* NULL: plaintext */
  ts_rpc_auth *auth;           /* NULL: no checks; else each method's roles
                                  are checked before its handler runs */
  int poll_threads;            /* engine pollers wanted (the process gets the
                                  most any server asked for); 0 means 1 */
} ts_rpc_server_opts;

/* Creates, binds and starts a server. `methods` is copied. *bound_port gets
 * the port actually bound. TS_EIO with a message when the address cannot be
 * bound (in use: SO_REUSEPORT is off), TS_EINVAL on bad credentials files. */
int ts_rpc_server_start(const ts_rpc_server_opts *opts,
                        const ts_rpc_method *methods, int n_methods,
                        ts_rpc_server **out, int *bound_port, ts_err *err);
/* What TS_RPC_HEALTH_CHECK_PATH answers for service "" (the whole server;
 * any other service name is NOT_FOUND): SERVING or NOT_SERVING. Starts as
 * SERVING. */
void ts_rpc_server_set_serving(ts_rpc_server *s, int serving);
/* Graceful stop: stops accepting new calls, waits up to grace_ms for calls in
 * flight to be answered, cancels the rest, waits for all its tags and frees
 * the server. Handlers' pending answers after this point are dropped safely only
 * if they happen before it returns; callers stop their own work first. */
void ts_rpc_server_stop(ts_rpc_server *s, int64_t grace_ms);

/* Answers the call with a serialized message (malloc'd; taken over). */
void ts_rpc_call_reply_owned(ts_rpc_call *call, uint8_t *resp, size_t len);
/* Answers the call with an error status: code is a TS_E* code, mapped by
 * ts_err_grpc_status(); message goes to the client as status details. */
void ts_rpc_call_fail(ts_rpc_call *call, int code, const char *message);
/* The call's deadline (absolute monotonic ms; TS_DEADLINE_NONE if none). */
int64_t ts_rpc_call_deadline(const ts_rpc_call *call);
/* First value of a request metadata key (lowercase), copied into buf;
 * returns buf or NULL when absent. */
const char *ts_rpc_call_metadata(const ts_rpc_call *call, const char *key,
                                 char *buf, size_t size);
/* The peer address ("ipv4:127.0.0.1:5555") into buf. */
const char *ts_rpc_call_peer(const ts_rpc_call *call, char *buf, size_t size);
/* Nonzero once the client cancelled or the deadline passed. */
int ts_rpc_call_is_cancelled(const ts_rpc_call *call);

/* Server-side cancellation notice: `fn` runs at most once, when the call
 * dies before it was answered: its client cancelled, its deadline passed,
 * its connection broke, or ts_rpc_server_stop cancelled it. It runs on a
 * poller thread, or at once on the caller's thread if the call is already
 * dead when it is registered. It must not block; it may answer the call.
 *
 * Answering the call unregisters it: once ts_rpc_call_reply_owned() or
 * ts_rpc_call_fail() has returned, `fn` is not running and never will, so
 * whatever `user` points to may be freed right after the answer (an answer
 * from another thread while `fn` runs waits for `fn` to return; so `fn`
 * must not wait for a thread that may be answering this call). Register
 * from the handler, or from any thread before the answer; a second
 * registration replaces the first. The client sees the status gRPC chose
 * (CANCELLED, DEADLINE_EXCEEDED); an answer after the cancel is dropped. */
typedef void (*ts_rpc_cancel_fn)(ts_rpc_call *call, void *user);
void ts_rpc_call_on_cancel(ts_rpc_call *call, ts_rpc_cancel_fn fn, void *user);

/* The control pool (rpc_offload.c): the threads that run offloaded
 * handlers, and how many such calls may wait for one. */
#define TS_RPC_OFFLOAD_THREADS 4
#define TS_RPC_OFFLOAD_QUEUE 32

/* Runs fn(arg) on a thread of the control pool: for handlers whose work
 * blocks on the network (loads, probes), which must never run on a poller
 * thread. arg comes from malloc and fn owns it (frees it). Jobs run in
 * arrival order, TS_RPC_OFFLOAD_THREADS at a time; when
 * TS_RPC_OFFLOAD_QUEUE already wait, the call is answered
 * RESOURCE_EXHAUSTED "control queue full: ..." (UNAVAILABLE once
 * ts_rpc_offload_stop ran) and nonzero is returned: the caller then still
 * owns arg. */
int ts_rpc_call_offload(ts_rpc_call *call, void *(*fn)(void *), void *arg);

/* Refuses further offloads (UNAVAILABLE), answers the jobs still queued
 * UNAVAILABLE "the daemon is stopping" (freeing their arg), and waits up
 * to wait_ms for the running ones to return. Call before freeing what the
 * jobs use; any thread but a pool thread. */
void ts_rpc_offload_stop(int64_t wait_ms);

/* ---- client ---------------------------------------------------------- */

typedef struct ts_rpc_client ts_rpc_client;
typedef struct ts_rpc_channel ts_rpc_channel;
typedef struct ts_rpc_outcall ts_rpc_outcall;

/* One asynchronous call's outcome, valid during the callback only. status is
 * the gRPC status code (0 = OK); code the matching TS_E* code. */
typedef struct ts_rpc_result {
  int status;
  int code;
  const char *message;
  const uint8_t *data;
  size_t len;
} ts_rpc_result;

typedef void (*ts_rpc_done_fn)(void *user, const ts_rpc_result *result);

/* A client for asynchronous calls on the engine (started if needed). */
int ts_rpc_client_create(ts_rpc_client **out, ts_err *err);
/* Waits for every outstanding call's callback, then frees. Not on a poller
 * thread. */
void ts_rpc_client_free(ts_rpc_client *c);

/* A channel to target ("HOST:PORT"); connects lazily. Thread-safe. */
int ts_rpc_channel_open(const char *target, const ts_rpc_creds *creds,
                        ts_rpc_channel **out, ts_err *err);
void ts_rpc_channel_close(ts_rpc_channel *ch);
const char *ts_rpc_channel_target(const ts_rpc_channel *ch);

/* Starts a unary call. `req` is copied before return. `done` runs exactly
 * once on a poller thread (also for failures to start). If `handle` is non-NULL it receives a handle valid until
 * `done` has returned, for ts_rpc_outcall_cancel. */
int ts_rpc_call_async(ts_rpc_client *c, ts_rpc_channel *ch, const char *method,
                      const uint8_t *req, size_t len, int64_t deadline,
                      ts_rpc_done_fn done, void *user, ts_rpc_outcall **handle);
/* The same, sending `req` without a copy: req comes from malloc() and is
 * taken over in every case (freed by gRPC once sent, or here on failure). */
int ts_rpc_call_async_owned(ts_rpc_client *c, ts_rpc_channel *ch,
                            const char *method, uint8_t *req, size_t len,
                            int64_t deadline, ts_rpc_done_fn done, void *user,
                            ts_rpc_outcall **handle);
/* Cancels a call started by ts_rpc_call_async; its `done` still runs (with
 * CANCELLED unless it had already completed). Only valid before `done`
 * returned. */
void ts_rpc_outcall_cancel(ts_rpc_outcall *call);

/* Blocking unary call. On OK, *resp is malloc'd (caller frees) and 0 is
 * returned; otherwise the TS_E* code with err->msg holding the server's
 * status details (or the transport's reason). */
int ts_rpc_call_sync(ts_rpc_channel *ch, const char *method,
                     const uint8_t *req, size_t len, int64_t deadline,
                     uint8_t **resp, size_t *resp_len, ts_err *err);

/* Blocking client-streaming call: open, send messages, finish. */
typedef struct ts_rpc_stream ts_rpc_stream;
int ts_rpc_stream_open(ts_rpc_channel *ch, const char *method,
                       int64_t deadline, ts_rpc_stream **out, ts_err *err);
/* Sends one message (copied); blocks until gRPC accepted it. */
int ts_rpc_stream_send(ts_rpc_stream *st, const uint8_t *msg, size_t len,
                       ts_err *err);
/* Half-closes, waits for the answer, frees the stream (also on error). */
int ts_rpc_stream_finish(ts_rpc_stream *st, uint8_t **resp, size_t *resp_len,
                         ts_err *err);

#endif
