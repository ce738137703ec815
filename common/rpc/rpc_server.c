/*
 * rpc_server.c - servers: accepting calls, dispatching them to the method
 * table's handlers, answers, cancellation notices and the graceful stop
 * (see rpc.h for the contract, rpc_int.h for tags and the engine).
 *
 * Server threading and lock model:
 *  - Every tag of the server on the engine's queue except the shutdown tag
 *    is counted in srv->pending (atomic): +1 before a request or batch is
 *    posted, -1 by the poller after the tag's handler returned. Decrements
 *    broadcast srv->cv under srv->mu.
 *  - Lock order: srv->mu before call->mu. Nothing takes srv->mu while it
 *    holds a call->mu.
 *  - Per call, call->mu guards refs, answered, orphaned, and every
 *    grpc_call_start_batch on that call (start_batch is only
 *    thread-compatible; replies may come from any thread).
 *  - call->refs = outstanding batches + 1 while unanswered (the handler's
 *    answer) + short-lived guards. The struct is freed at zero. Every
 *    accepted call keeps a RECV_CLOSE_ON_SERVER outstanding until the call
 *    ends, so a client's cancel is seen (ts_rpc_call_is_cancelled).
 *  - Exactly one answer per accepted call: `answered` flips once; a second
 *    answer is dropped with a warning.
 *  - Cancellation notice (ts_rpc_call_on_cancel): cancel_fn is taken (set
 *    to NULL) under call->mu by whichever comes first of the answer, the
 *    RECV_CLOSE that reports cancelled, or a registration that finds the
 *    call already cancelled. So it runs at most once, never after the
 *    answer began; it runs without call->mu, flagged by cancel_running
 *    (and a guard reference), and an answer from another thread waits on
 *    cancel_cv until it returned. An answer from inside the callback (same
 *    thread) goes straight on.
 *  - Accepted calls sit on srv->calls until freed (or orphaned by stop).
 *
 * Stop: shutdown_and_notify; wait up to the grace for every call to finish;
 * else cancel_all_calls, wait for every batch, then "orphan" the calls whose
 * handler still has not answered: their grpc_call is released and a later
 * answer only frees the struct (never touches the server). A handler that
 * never answers leaks its small call struct, nothing else.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "log.h"
#include "rpc.h"
#include "rpc_int.h"

/* ---- server ----------------------------------------------------------- */

#define UNREGISTERED (-1)
/* A server's gRPC memory quota (its connections' buffers and calls), in
 * max messages: 1 GiB at the default 64 MiB. */
#define RPC_SERVER_QUOTA_MESSAGES 16

typedef struct method_entry {
  ts_rpc_method m; /* m.path is owned (strdup) */
  void *handle;    /* grpc_server_register_method's handle */
} method_entry;

struct ts_rpc_call {
  rpc_tag t_accept, t_close, t_recv, t_send;
  ts_rpc_server *srv;
  int method; /* index into srv->methods, or UNREGISTERED */
  grpc_call *call;
  gpr_timespec gpr_deadline; /* registered calls */
  grpc_call_details details; /* unregistered calls */
  grpc_metadata_array md;
  grpc_byte_buffer *payload;  /* unary request / last stream message */
  grpc_byte_buffer *response; /* until the answer batch completed */
  int close_cancelled;        /* RECV_CLOSE_ON_SERVER's out-parameter */
  int64_t deadline;
  atomic_int cancelled;
  bool stream_ended; /* on_end was called; recv chain only */
  pthread_mutex_t mu;
  int refs;
  bool answered, orphaned;
  bool close_cancelled_seen; /* on_close saw the call die; under mu */
  ts_rpc_cancel_fn cancel_fn; /* registered notice, until taken; under mu */
  void *cancel_user;
  bool cancel_running;        /* cancel_fn runs on cancel_thread */
  pthread_t cancel_thread;
  pthread_cond_t cancel_cv;   /* signalled when cancel_fn returned */
  struct ts_rpc_call *prev, *next; /* srv->calls, under srv->mu */
};

struct ts_rpc_server {
  grpc_server *server;
  grpc_completion_queue *cq;
  method_entry *methods;
  int n_methods;
  int slots; /* outstanding requests per method */
  ts_rpc_auth *auth; /* NULL: no access checks */
  rpc_server_tls *tls; /* NULL: plaintext; freed after the server */
  atomic_int serving;
  atomic_long pending;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stopping, shutdown_done;
  int live;
  ts_rpc_call *calls;
  rpc_tag t_shutdown;
};

static void on_accept(rpc_tag *t, int ok);
static void on_close(rpc_tag *t, int ok);
static void on_recv(rpc_tag *t, int ok);
static void on_send(rpc_tag *t, int ok);

static ts_rpc_call *call_new(ts_rpc_server *s, int method) {
  ts_rpc_call *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->t_accept = (rpc_tag){on_accept, s};
  c->t_close = (rpc_tag){on_close, s};
  c->t_recv = (rpc_tag){on_recv, s};
  c->t_send = (rpc_tag){on_send, s};
  c->srv = s;
  c->method = method;
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->md);
  atomic_init(&c->cancelled, 0);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cancel_cv, NULL);
  return c;
}

/* Releases what the call holds from gRPC. Idempotent. */
static void call_release_grpc(ts_rpc_call *c) {
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  if (c->response) grpc_byte_buffer_destroy(c->response);
  c->payload = c->response = NULL;
  grpc_metadata_array_destroy(&c->md);
  grpc_metadata_array_init(&c->md);
  grpc_call_details_destroy(&c->details);
  grpc_call_details_init(&c->details);
  if (c->call) grpc_call_unref(c->call);
  c->call = NULL;
}

static void call_free(ts_rpc_call *c) {
  call_release_grpc(c);
  pthread_cond_destroy(&c->cancel_cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* Takes c off srv->calls; s->mu must be held. */
static void call_unlink_locked(ts_rpc_server *s, ts_rpc_call *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    s->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  s->live--;
}

/* The last reference is gone: leave the server's list (unless stop already
 * orphaned the call) and free. */
static void call_destroy(ts_rpc_call *c, bool orphaned) {
  if (!orphaned) {
    ts_rpc_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    call_unlink_locked(s, c);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  call_free(c);
}

/* Drops one reference; frees the call at zero. */
static void call_unref(ts_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  int left = --c->refs;
  bool orphaned = c->orphaned;
  pthread_mutex_unlock(&c->mu);
  if (left == 0) call_destroy(c, orphaned);
}

/* Starts a batch on an accepted call; c->mu must be held. Counts the batch
 * in refs and srv->pending on success. */
static int call_start_locked(ts_rpc_call *c, const grpc_op *ops, size_t n,
                             rpc_tag *t) {
  atomic_fetch_add(&c->srv->pending, 1);
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
  if (e != GRPC_CALL_OK) {
    atomic_fetch_sub(&c->srv->pending, 1);
    ts_log_error("rpc: start_batch on a server call failed: %s",
                 grpc_call_error_to_string(e));
    return TS_EINTERNAL;
  }
  c->refs++;
  return 0;
}

/* The one answer of a call: a message with OK (response != NULL) or an error
 * status. Takes over `response`. Drops the "unanswered" reference. */
static void call_answer(ts_rpc_call *c, grpc_status_code status,
                        const char *message, grpc_byte_buffer *response) {
  pthread_mutex_lock(&c->mu);
  if (c->answered) {
    pthread_mutex_unlock(&c->mu);
    if (response) grpc_byte_buffer_destroy(response);
    ts_log_warn("rpc: a call was answered twice; the second answer is dropped");
    return;
  }
  c->answered = true;
  c->cancel_fn = NULL; /* taken: the notice can no longer start */
  while (c->cancel_running && !pthread_equal(c->cancel_thread, pthread_self()))
    pthread_cond_wait(&c->cancel_cv, &c->mu);
  if (!c->orphaned) {
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (response) {
      ops[n].op = GRPC_OP_SEND_MESSAGE;
      ops[n++].data.send_message.send_message = response;
    }
    grpc_slice details = grpc_slice_from_copied_string(message ? message : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n++].data.send_status_from_server.status_details = &details;
    c->response = response;
    if (call_start_locked(c, ops, n, &c->t_send) < 0 && c->response) {
      grpc_byte_buffer_destroy(c->response);
      c->response = NULL;
    }
    grpc_slice_unref(details);
  } else if (response) {
    grpc_byte_buffer_destroy(response);
  }
  int left = --c->refs;
  bool orphaned = c->orphaned;
  pthread_mutex_unlock(&c->mu);
  if (left == 0) call_destroy(c, orphaned);
}

/* The status sent for a TS_E* code; TS_OK passed to a failure is UNKNOWN. */
static grpc_status_code status_for_code(int code) {
  int status = ts_err_grpc_status(code);
  return status == 0 ? GRPC_STATUS_UNKNOWN : (grpc_status_code)status;
}

void ts_rpc_call_reply_owned(ts_rpc_call *call, uint8_t *resp, size_t len) {
  if (!resp && len > 0) {
    call_answer(call, GRPC_STATUS_INTERNAL, "reply buffer missing", NULL);
    return;
  }
  call_answer(call, GRPC_STATUS_OK, NULL, rpc_buffer_from_owned(resp, len));
}

void ts_rpc_call_fail(ts_rpc_call *call, int code, const char *message) {
  call_answer(call, status_for_code(code),
              message ? message : ts_strerror(code), NULL);
}

int64_t ts_rpc_call_deadline(const ts_rpc_call *call) {
  return call->deadline;
}

const char *ts_rpc_call_metadata(const ts_rpc_call *call, const char *key,
                                 char *buf, size_t size) {
  ts_rpc_call *c = (ts_rpc_call *)call; /* the mutex is not logical state */
  const char *found = NULL;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->md.count; i++) {
    if (grpc_slice_str_cmp(c->md.metadata[i].key, key) == 0) {
      grpc_slice v = c->md.metadata[i].value;
      rpc_copy_string(buf, size, (const char *)GRPC_SLICE_START_PTR(v),
                      GRPC_SLICE_LENGTH(v));
      found = size ? buf : NULL;
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return found;
}

const char *ts_rpc_call_peer(const ts_rpc_call *call, char *buf, size_t size) {
  ts_rpc_call *c = (ts_rpc_call *)call;
  const char *out = NULL;
  pthread_mutex_lock(&c->mu);
  if (c->call && size > 0) {
    char *peer = grpc_call_get_peer(c->call);
    if (peer) {
      rpc_copy_string(buf, size, peer, strlen(peer));
      gpr_free(peer);
      out = buf;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return out;
}

int ts_rpc_call_is_cancelled(const ts_rpc_call *call) {
  if (atomic_load(&call->cancelled)) return 1;
  return call->deadline != TS_DEADLINE_NONE && ts_now_ms() >= call->deadline;
}

/* Runs the registered notice, if any and if the call is unanswered; c->mu
 * is held on entry and on return (released while the notice runs). Returns
 * true when it ran: the caller then drops the guard reference it took,
 * after releasing c->mu (the notice may have answered, so it can be the
 * last one). */
static bool run_cancel_locked(ts_rpc_call *c) {
  ts_rpc_cancel_fn fn = c->cancel_fn;
  void *user = c->cancel_user;
  if (!fn || c->answered) return false;
  c->cancel_fn = NULL;
  c->cancel_running = true;
  c->cancel_thread = pthread_self();
  c->refs++; /* the notice may answer, which must not free c under us */
  pthread_mutex_unlock(&c->mu);
  fn(c, user);
  pthread_mutex_lock(&c->mu);
  c->cancel_running = false;
  pthread_cond_broadcast(&c->cancel_cv);
  return true;
}

void ts_rpc_call_on_cancel(ts_rpc_call *call, ts_rpc_cancel_fn fn,
                           void *user) {
  bool ran = false;
  pthread_mutex_lock(&call->mu);
  if (!call->answered) {
    call->cancel_fn = fn;
    call->cancel_user = user;
    if (call->close_cancelled_seen) ran = run_cancel_locked(call);
  }
  pthread_mutex_unlock(&call->mu);
  if (ran) call_unref(call);
}

/* Posts one request for `method` (or for unregistered paths). */
static int post_request(ts_rpc_server *s, int method) {
  ts_rpc_call *c = call_new(s, method);
  if (!c) {
    ts_log_error("rpc: no memory to accept calls");
    return TS_ENOMEM;
  }
  pthread_mutex_lock(&s->mu);
  if (s->stopping) {
    pthread_mutex_unlock(&s->mu);
    call_free(c);
    return 0;
  }
  atomic_fetch_add(&s->pending, 1);
  grpc_call_error e;
  if (method == UNREGISTERED) {
    e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md,
                                 s->cq, s->cq, &c->t_accept);
  } else {
    method_entry *me = &s->methods[method];
    e = grpc_server_request_registered_call(
        s->server, me->handle, &c->call, &c->gpr_deadline, &c->md,
        me->m.kind == TS_RPC_UNARY ? &c->payload : NULL, s->cq, s->cq,
        &c->t_accept);
  }
  if (e != GRPC_CALL_OK) atomic_fetch_sub(&s->pending, 1);
  pthread_mutex_unlock(&s->mu);
  if (e != GRPC_CALL_OK) {
    ts_log_error("rpc: cannot request calls for %s: %s",
                 method == UNREGISTERED ? "unregistered methods"
                                        : s->methods[method].m.path,
                 grpc_call_error_to_string(e));
    call_free(c);
    return TS_EINTERNAL;
  }
  return 0;
}

/* Starts the next RECV_MESSAGE of a client stream; c->mu must be held. */
static int start_recv_locked(ts_rpc_call *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->payload;
  return call_start_locked(c, &op, 1, &c->t_recv);
}

/* Whether a request message may reach the method's handler: it must come
 * uncompressed (gRPC was told not to decompress: a small compressed
 * message can inflate to any size) and within the method's cap. 0, or the
 * TS_E* code with the reason in msg. The bytes are not read. */
static int request_admitted(const method_entry *me, grpc_byte_buffer *bb,
                            char *msg, size_t size) {
  if (bb->type != GRPC_BB_RAW ||
      bb->data.raw.compression != GRPC_COMPRESS_NONE) {
    snprintf(msg, size, "%s: compressed requests are not accepted (send "
             "them uncompressed)", me->m.path);
    return TS_EUNSUPPORTED;
  }
  size_t cap = me->m.max_request ? me->m.max_request
                                 : ts_rpc_get_limits().max_message;
  size_t len = grpc_byte_buffer_length(bb);
  if (len <= cap) return 0;
  snprintf(msg, size, "%s: a request of %zu bytes is over the method's limit "
           "of %zu bytes", me->m.path, len, cap);
  return TS_EEXHAUSTED;
}

static void dispatch_unary(ts_rpc_call *c, method_entry *me) {
  if (!c->payload) {
    ts_rpc_call_fail(c, TS_EINVAL, "request message missing");
    return;
  }
  char msg[TS_ERR_MSG_MAX];
  int refused = request_admitted(me, c->payload, msg, sizeof msg);
  if (refused < 0) {
    ts_rpc_call_fail(c, refused, msg);
    return;
  }
  grpc_slice req = rpc_buffer_to_slice(c->payload);
  grpc_byte_buffer_destroy(c->payload);
  c->payload = NULL;
  me->m.unary(c, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), me->m.user);
  grpc_slice_unref(req);
}

static void on_accept(rpc_tag *t, int ok) {
  ts_rpc_call *c = container_of(t, ts_rpc_call, t_accept);
  ts_rpc_server *s = c->srv;
  if (!ok) { /* the server is shutting down; this request never matched */
    call_free(c);
    return;
  }
  post_request(s, c->method);
  c->deadline = rpc_deadline_from_gpr(
      c->method == UNREGISTERED ? c->details.deadline : c->gpr_deadline);
  c->refs = 2; /* the answer, and this function's guard */
  pthread_mutex_lock(&s->mu);
  c->next = s->calls;
  if (s->calls) s->calls->prev = c;
  s->calls = c;
  s->live++;
  pthread_mutex_unlock(&s->mu);

  grpc_op close_op;
  memset(&close_op, 0, sizeof close_op);
  close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  close_op.data.recv_close_on_server.cancelled = &c->close_cancelled;
  pthread_mutex_lock(&c->mu);
  call_start_locked(c, &close_op, 1, &c->t_close);
  pthread_mutex_unlock(&c->mu);

  char msg[TS_ERR_MSG_MAX];
  int denied;
  if (c->method == UNREGISTERED) {
    char *path = grpc_slice_to_c_string(c->details.method);
    snprintf(msg, sizeof msg, "unknown method %s", path);
    gpr_free(path);
    ts_rpc_call_fail(c, TS_EUNSUPPORTED, msg);
  } else if ((denied = rpc_auth_check(s->auth, c->call, &c->md,
                                      s->methods[c->method].m.roles, msg,
                                      sizeof msg)) < 0) {
    ts_rpc_call_fail(c, denied, msg); /* the handler never sees the call */
  } else if (s->methods[c->method].m.kind == TS_RPC_UNARY) {
    dispatch_unary(c, &s->methods[c->method]);
  } else {
    pthread_mutex_lock(&c->mu);
    int rc = start_recv_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (rc < 0) {
      ts_rpc_call_fail(c, TS_EINTERNAL, "cannot read the request stream");
      c->stream_ended = true;
      s->methods[c->method].m.on_end(c, s->methods[c->method].m.user, 1);
    }
  }
  call_unref(c);
}

/* The call ended. Cancelled (by its client, its deadline, a broken
 * connection or the server's stop) before an answer: tell the handler. */
static void on_close(rpc_tag *t, int ok) {
  ts_rpc_call *c = container_of(t, ts_rpc_call, t_close);
  if (!ok || c->close_cancelled) {
    atomic_store(&c->cancelled, 1);
    pthread_mutex_lock(&c->mu);
    c->close_cancelled_seen = true;
    bool ran = run_cancel_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (ran) call_unref(c);
  }
  call_unref(c);
}

static void on_send(rpc_tag *t, int ok) {
  (void)ok; /* a failed send means the client is gone; nothing to do */
  ts_rpc_call *c = container_of(t, ts_rpc_call, t_send);
  pthread_mutex_lock(&c->mu);
  if (c->response) grpc_byte_buffer_destroy(c->response);
  c->response = NULL;
  pthread_mutex_unlock(&c->mu);
  call_unref(c);
}

/* One step of a client stream's receive chain: a message (hand it over and
 * read the next), a half-close (on_end 0), or the end of a dead call. */
static void on_recv(rpc_tag *t, int ok) {
  ts_rpc_call *c = container_of(t, ts_rpc_call, t_recv);
  method_entry *me = &c->srv->methods[c->method];
  grpc_byte_buffer *bb = c->payload;
  c->payload = NULL;
  int end = -1; /* -1 go on, 0 half-closed, 1 cancelled or failed */
  pthread_mutex_lock(&c->mu);
  bool answered_early = c->answered;
  pthread_mutex_unlock(&c->mu);
  if (bb && answered_early) { /* the handler already failed the call */
    grpc_byte_buffer_destroy(bb);
    end = 1;
  } else if (bb) {
    ts_err err;
    ts_err_clear(&err);
    int rc = request_admitted(me, bb, err.msg, sizeof err.msg);
    if (rc == 0) {
      grpc_slice msg = rpc_buffer_to_slice(bb);
      rc = me->m.on_message(c, GRPC_SLICE_START_PTR(msg),
                            GRPC_SLICE_LENGTH(msg), me->m.user, &err);
      grpc_slice_unref(msg);
    }
    grpc_byte_buffer_destroy(bb);
    if (rc < 0) {
      ts_rpc_call_fail(c, rc, err.msg[0] ? err.msg : ts_strerror(rc));
      end = 1;
    } else {
      pthread_mutex_lock(&c->mu);
      bool answered = c->answered;
      int started = answered ? 0 : start_recv_locked(c);
      pthread_mutex_unlock(&c->mu);
      if (answered) end = 1;
      if (started < 0) {
        ts_rpc_call_fail(c, TS_EINTERNAL, "cannot read the request stream");
        end = 1;
      }
    }
  } else if (!ok || grpc_call_failed_before_recv_message(c->call)) {
    ts_rpc_call_fail(c, TS_ECANCELLED, "call cancelled"); /* no-op if done */
    atomic_store(&c->cancelled, 1);
    end = 1;
  } else {
    pthread_mutex_lock(&c->mu);
    end = c->answered ? 1 : 0;
    pthread_mutex_unlock(&c->mu);
  }
  if (end >= 0 && !c->stream_ended) {
    c->stream_ended = true;
    me->m.on_end(c, me->m.user, end);
  }
  call_unref(c);
}

static void on_shutdown(rpc_tag *t, int ok) {
  (void)ok;
  ts_rpc_server *s = container_of(t, ts_rpc_server, t_shutdown);
  pthread_mutex_lock(&s->mu);
  s->shutdown_done = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void rpc_server_tag_done(ts_rpc_server *s) {
  pthread_mutex_lock(&s->mu);
  atomic_fetch_sub(&s->pending, 1);
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void ts_rpc_server_set_serving(ts_rpc_server *s, int serving) {
  atomic_store(&s->serving, serving ? 1 : 0);
}

int rpc_server_serving(const ts_rpc_server *s) {
  return atomic_load(&s->serving);
}

static void methods_free(method_entry *methods, int n) {
  for (int i = 0; i < n; i++) free((char *)methods[i].m.path);
  free(methods);
}

/* Validates and copies the method table, adding the health check unless the
 * caller serves it. */
static int methods_copy(ts_rpc_server *s, const ts_rpc_method *methods, int n,
                        ts_err *err) {
  if (n < 0 || (n > 0 && !methods))
    return ts_err_set(err, TS_EINVAL, "methods: bad table (n_methods %d)", n);
  bool has_health = false;
  for (int i = 0; i < n; i++) {
    const ts_rpc_method *m = &methods[i];
    if (!m->path || m->path[0] != '/')
      return ts_err_set(err, TS_EINVAL,
                        "methods[%d]: path must start with '/' (got %s)", i,
                        m->path ? m->path : "NULL");
    if (m->kind == TS_RPC_UNARY ? !m->unary
                                : m->kind != TS_RPC_CLIENT_STREAM ||
                                      !m->on_message || !m->on_end)
      return ts_err_set(err, TS_EINVAL,
                        "methods[%d] %s: missing handler for its kind", i,
                        m->path);
    if (strcmp(m->path, TS_RPC_HEALTH_CHECK_PATH) == 0) has_health = true;
  }
  int total = n + (has_health ? 0 : 1);
  s->methods = calloc((size_t)total, sizeof *s->methods);
  if (!s->methods) return ts_err_set(err, TS_ENOMEM, "methods: no memory");
  for (int i = 0; i < total; i++) {
    ts_rpc_method m = {.path = TS_RPC_HEALTH_CHECK_PATH,
                       .kind = TS_RPC_UNARY,
                       .unary = rpc_health_check,
                       .user = s,
                       .max_request = TS_RPC_CONTROL_MAX_REQUEST};
    if (i < n) m = methods[i];
    s->methods[i].m = m;
    s->methods[i].m.path = strdup(m.path);
    s->n_methods = i + 1;
    if (!s->methods[i].m.path)
      return ts_err_set(err, TS_ENOMEM, "methods: no memory");
  }
  return 0;
}

/* Frees a server that never started (no listener, nothing posted). */
static void server_discard(ts_rpc_server *s) {
  if (s->server) grpc_server_destroy(s->server);
  rpc_server_tls_free(s->tls);
  if (s->cq) rpc_engine_release();
  methods_free(s->methods, s->n_methods);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

int ts_rpc_server_start(const ts_rpc_server_opts *opts,
                        const ts_rpc_method *methods, int n_methods,
                        ts_rpc_server **out, int *bound_port, ts_err *err) {
  *out = NULL;
  if (!opts || !opts->listen)
    return ts_err_set(err, TS_EINVAL, "listen: address missing");
  int threads = opts->poll_threads ? opts->poll_threads : 1;
  if (threads < 0 || threads > RPC_MAX_POLL_THREADS)
    return ts_err_set(err, TS_EINVAL, "poll_threads: %d is not in 0..%d",
                      opts->poll_threads, RPC_MAX_POLL_THREADS);
  ts_rpc_server *s = calloc(1, sizeof *s);
  if (!s) return ts_err_set(err, TS_ENOMEM, "server: no memory");
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  atomic_init(&s->serving, 1);
  atomic_init(&s->pending, 0);
  s->t_shutdown = (rpc_tag){on_shutdown, NULL};
  /* Requests posted per method: a burst of calls up to this many is
   * matched at once; more wait in gRPC until a slot is re-posted. */
  s->slots = threads * 4 > 16 ? threads * 4 : 16;
  s->auth = opts->auth;
  grpc_server_credentials *sc = NULL;
  int rc = methods_copy(s, methods, n_methods, err);
  if (rc == 0) rc = rpc_server_creds(opts->creds, &sc, &s->tls, err);
  if (rc < 0) {
    server_discard(s);
    return rc;
  }

  /* SO_REUSEPORT off, so a port in use is an error, not a shared port.
   * Messages are not decompressed: request_admitted refuses compressed
   * ones unread. Each connection may have max_streams calls at once (a
   * client's next one waits for a free stream), and gRPC's own buffers of
   * all of them together are bounded by a memory quota. */
  ts_rpc_limits limits = ts_rpc_get_limits();
  grpc_resource_quota *quota = grpc_resource_quota_create("tessera-server");
  grpc_resource_quota_resize(quota, RPC_SERVER_QUOTA_MESSAGES *
                                        limits.max_message);
  grpc_arg args[RPC_N_COMMON_ARGS + 4];
  args[RPC_N_COMMON_ARGS] = rpc_int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0);
  args[RPC_N_COMMON_ARGS + 1] =
      rpc_int_arg(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
  args[RPC_N_COMMON_ARGS + 2] =
      rpc_int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, limits.max_streams);
  args[RPC_N_COMMON_ARGS + 3] =
      (grpc_arg){.type = GRPC_ARG_POINTER,
                 .key = GRPC_ARG_RESOURCE_QUOTA,
                 .value.pointer = {quota, grpc_resource_quota_arg_vtable()}};
  grpc_channel_args chargs =
      rpc_fill_args(args, sizeof args / sizeof args[0]);
  s->server = grpc_server_create(&chargs, NULL);
  grpc_resource_quota_unref(quota); /* the server holds its own reference */
  rc = rpc_engine_acquire(threads, &s->cq, err);
  if (rc < 0) {
    grpc_server_credentials_release(sc);
    server_discard(s);
    return rc;
  }
  grpc_server_register_completion_queue(s->server, s->cq, NULL);
  for (int i = 0; i < s->n_methods; i++) {
    method_entry *me = &s->methods[i];
    me->handle = grpc_server_register_method(
        s->server, me->m.path, NULL,
        me->m.kind == TS_RPC_UNARY ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER
                                   : GRPC_SRM_PAYLOAD_NONE,
        0);
    if (!me->handle) {
      ts_err_set(err, TS_EINVAL, "methods: %s registered twice", me->m.path);
      grpc_server_credentials_release(sc);
      server_discard(s);
      return TS_EINVAL;
    }
  }
  int port = grpc_server_add_http2_port(s->server, opts->listen, sc);
  grpc_server_credentials_release(sc);
  if (port == 0) {
    server_discard(s);
    return ts_err_set(err, TS_EIO,
                      "listen: cannot bind %s (address in use or invalid)",
                      opts->listen);
  }
  grpc_server_start(s->server);
  for (int i = 0; i < s->n_methods; i++)
    for (int k = 0; k < s->slots; k++) post_request(s, i);
  for (int k = 0; k < s->slots; k++) post_request(s, UNREGISTERED);
  if (bound_port) *bound_port = port;
  *out = s;
  return 0;
}

/* One bounded wait on s->cv (s->mu held): until signalled, 100 ms pass, or
 * the absolute monotonic deadline comes, whichever is first. */
static void server_wait(ts_rpc_server *s, int64_t deadline) {
  int64_t step = deadline - ts_now_ms();
  if (step <= 0) return;
  if (step > 100) step = 100;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_nsec += (long)step * 1000000;
  until.tv_sec += until.tv_nsec / 1000000000;
  until.tv_nsec %= 1000000000;
  pthread_cond_timedwait(&s->cv, &s->mu, &until);
}

/* Every call finished and every tag (the shutdown tag too) delivered. */
static bool server_idle(ts_rpc_server *s) {
  return s->shutdown_done && s->live == 0 && atomic_load(&s->pending) == 0;
}

/* After cancel_all_calls: wait for every batch, orphan the calls whose
 * handler has not answered, wait for the batches answers started meanwhile,
 * then release the orphans' gRPC state. */
static void server_orphan_unanswered(ts_rpc_server *s) {
  ts_rpc_call *orphans = NULL;
  int n = 0;
  pthread_mutex_lock(&s->mu);
  while (atomic_load(&s->pending) > 0) pthread_cond_wait(&s->cv, &s->mu);
  for (ts_rpc_call *c = s->calls, *next; c; c = next) {
    next = c->next;
    pthread_mutex_lock(&c->mu);
    if (!c->answered) {
      c->orphaned = true;
      c->refs++; /* held until its gRPC state is released below */
      call_unlink_locked(s, c);
      c->next = orphans;
      orphans = c;
      n++;
    }
    pthread_mutex_unlock(&c->mu);
  }
  while (atomic_load(&s->pending) > 0 || s->live > 0)
    pthread_cond_wait(&s->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
  if (n > 0)
    ts_log_warn("rpc: %d call(s) still unanswered at server stop; cancelled",
                n);
  while (orphans) {
    ts_rpc_call *c = orphans;
    orphans = c->next;
    pthread_mutex_lock(&c->mu);
    call_release_grpc(c);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) call_free(c);
  }
}

void ts_rpc_server_stop(ts_rpc_server *s, int64_t grace_ms) {
  if (!s) return;
  pthread_mutex_lock(&s->mu);
  s->stopping = true;
  pthread_mutex_unlock(&s->mu);
  grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
  int64_t grace_end = ts_now_ms() + (grace_ms > 0 ? grace_ms : 0);
  pthread_mutex_lock(&s->mu);
  while (!server_idle(s) && ts_now_ms() < grace_end) server_wait(s, grace_end);
  bool clean = server_idle(s);
  pthread_mutex_unlock(&s->mu);
  if (!clean) {
    grpc_server_cancel_all_calls(s->server);
    server_orphan_unanswered(s);
  }
  pthread_mutex_lock(&s->mu);
  int64_t warn_at = ts_now_ms() + 5000;
  while (!s->shutdown_done) {
    server_wait(s, warn_at);
    if (!s->shutdown_done && ts_now_ms() >= warn_at) {
      ts_log_warn("rpc: server shutdown still waiting for connections");
      warn_at = ts_now_ms() + 5000;
    }
  }
  pthread_mutex_unlock(&s->mu);
  /* Every tag of this server has been delivered: the engine's queue goes
   * on serving the process's other servers and clients. */
  server_discard(s);
}
