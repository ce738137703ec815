/*
 * rpc_client.c - channels and client calls: asynchronous unary calls on the
 * engine, and the blocking unary call and client stream (see rpc.h).
 *
 * A ts_rpc_client holds a reference on the engine; async unary calls run as
 * one batch of six ops on its queue. Synchronous calls and client streams
 * use a pluck CQ of their own, so they never touch a poller.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "log.h"
#include "rpc.h"
#include "rpc_int.h"

/* ---- client ----------------------------------------------------------- */

/* A channel follows its keyset (rpc_creds.c): when the keyset's generation
 * moved, the next call made on it first replaces the gRPC channel with one
 * on the new credentials. Calls already running keep the old gRPC channel
 * alive (gRPC counts it) and finish on it. The replaced channel is kept one
 * generation longer, as destroying it fails its calls that are still
 * waiting for a connection. Every call sends the channel's metadata (the cluster secret). */
struct ts_rpc_channel {
  pthread_mutex_t mu;    /* channel and generation */
  grpc_channel *channel;
  grpc_channel *retired; /* the one before, kept for calls still picking
                            a connection on it; destroyed at the next
                            renewal or at close */
  unsigned generation;   /* of keys, when channel was made */
  rpc_keyset *keys;      /* NULL: plaintext */
  char *target;
  char *token;           /* bearer token, or NULL */
  grpc_metadata md[1];   /* sent with every call */
  size_t n_md;
};

struct ts_rpc_client {
  grpc_completion_queue *cq; /* the engine's */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int outstanding;
};

/* The receive side of a unary or client-streaming call, and its result. */
typedef struct recv_io {
  grpc_byte_buffer *response;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
  const char *error_string;
} recv_io;

static void recv_io_init(recv_io *io) {
  memset(io, 0, sizeof *io);
  grpc_metadata_array_init(&io->initial_md);
  grpc_metadata_array_init(&io->trailing_md);
  io->details = grpc_empty_slice();
}

static void recv_io_destroy(recv_io *io) {
  if (io->response) grpc_byte_buffer_destroy(io->response);
  grpc_metadata_array_destroy(&io->initial_md);
  grpc_metadata_array_destroy(&io->trailing_md);
  grpc_slice_unref(io->details);
  gpr_free((void *)io->error_string);
  memset(io, 0, sizeof *io);
}

/* Fills ops with RECV_INITIAL_METADATA + RECV_MESSAGE + RECV_STATUS. */
static size_t recv_io_ops(recv_io *io, grpc_op *ops) {
  memset(ops, 0, 3 * sizeof *ops);
  ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[0].data.recv_initial_metadata.recv_initial_metadata = &io->initial_md;
  ops[1].op = GRPC_OP_RECV_MESSAGE;
  ops[1].data.recv_message.recv_message = &io->response;
  ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[2].data.recv_status_on_client.trailing_metadata = &io->trailing_md;
  ops[2].data.recv_status_on_client.status = &io->status;
  ops[2].data.recv_status_on_client.status_details = &io->details;
  ops[2].data.recv_status_on_client.error_string = &io->error_string;
  return 3;
}

/* The outcome of a finished call. `data` gets the response bytes (unref
 * it); msg holds the status message. An OK status without a message is an
 * INTERNAL error: a unary answer always carries one. */
static void recv_io_result(recv_io *io, ts_rpc_result *r, grpc_slice *data,
                           char *msg, size_t msg_size) {
  *data = grpc_empty_slice();
  memset(r, 0, sizeof *r);
  r->status = io->status;
  if (io->status == GRPC_STATUS_OK && !io->response) {
    r->status = GRPC_STATUS_INTERNAL;
    rpc_copy_string(msg, msg_size, "response message missing",
                    strlen("response message missing"));
  } else if (io->status != GRPC_STATUS_OK) {
    size_t n = GRPC_SLICE_LENGTH(io->details);
    if (n > 0)
      rpc_copy_string(msg, msg_size,
                      (const char *)GRPC_SLICE_START_PTR(io->details), n);
    else
      snprintf(msg, msg_size, "%s",
               io->error_string ? io->error_string : "call failed");
  } else if (io->response->type != GRPC_BB_RAW ||
             io->response->data.raw.compression != GRPC_COMPRESS_NONE) {
    /* Not decompressed (channel_make): it could inflate to any size. */
    r->status = GRPC_STATUS_UNIMPLEMENTED;
    snprintf(msg, msg_size, "compressed answers are not accepted");
  } else {
    msg[0] = '\0';
    *data = rpc_buffer_to_slice(io->response);
  }
  r->code = ts_err_from_grpc_status(r->status);
  r->message = msg;
  r->data = GRPC_SLICE_START_PTR(*data);
  r->len = GRPC_SLICE_LENGTH(*data);
}

static grpc_channel *channel_make(const char *target,
                                   grpc_channel_credentials *cc);

/* Replaces ch->channel when its keyset has new bytes (ch->mu held). A
 * failure keeps the old channel: the bytes were checked when read, so only
 * memory can fail here. */
static void channel_follow_keys(ts_rpc_channel *ch) {
  if (!ch->keys || rpc_keyset_generation(ch->keys) == ch->generation) return;
  grpc_channel_credentials *cc;
  unsigned generation;
  ts_err err = {0};
  if (rpc_channel_creds(ch->keys, ch->token, ch->target, &cc, &generation,
                        &err) < 0) {
    ts_log_error("channel to %s keeps its old credentials: %s", ch->target,
                 err.msg);
    return;
  }
  grpc_channel *fresh = channel_make(ch->target, cc);
  grpc_channel_credentials_release(cc);
  if (ch->retired) grpc_channel_destroy(ch->retired);
  ch->retired = ch->channel;
  ch->channel = fresh;
  ch->generation = generation;
}

/* A call on the channel's current gRPC channel; *used gets that channel
 * (valid while the call lives). */
static grpc_call *call_create(ts_rpc_channel *ch, grpc_completion_queue *cq,
                              const char *method, int64_t deadline,
                              grpc_channel **used) {
  grpc_slice path = grpc_slice_from_copied_string(method);
  pthread_mutex_lock(&ch->mu);
  channel_follow_keys(ch);
  grpc_call *call =
      grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                               path, NULL, rpc_deadline_to_gpr(deadline), NULL);
  if (used) *used = ch->channel;
  pthread_mutex_unlock(&ch->mu);
  grpc_slice_unref(path);
  return call;
}

/* Fills ops with SEND_INITIAL_METADATA (the channel's) [+ SEND_MESSAGE]
 * [+ CLOSE]. */
static size_t send_ops(grpc_op *ops, ts_rpc_channel *ch,
                       grpc_byte_buffer *msg, bool close) {
  memset(ops, 0, 3 * sizeof *ops);
  size_t n = 0;
  ops[n].data.send_initial_metadata.count = ch->n_md;
  ops[n].data.send_initial_metadata.metadata = ch->n_md ? ch->md : NULL;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (msg) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = msg;
  }
  if (close) ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  return n;
}

struct ts_rpc_outcall {
  rpc_tag t;
  ts_rpc_client *client;
  grpc_call *call;
  grpc_byte_buffer *request;
  recv_io io;
  ts_rpc_done_fn done;
  void *user;
  grpc_call_error start_error; /* GRPC_CALL_OK unless the batch failed */
  char start_msg[TS_ERR_MSG_MAX]; /* why it failed to start */
};

static void on_outcall(rpc_tag *t, int ok) {
  (void)ok; /* RECV_STATUS always succeeds; the status tells */
  ts_rpc_outcall *oc = container_of(t, ts_rpc_outcall, t);
  ts_rpc_client *c = oc->client;
  ts_rpc_result r;
  grpc_slice data = grpc_empty_slice();
  char msg[TS_ERR_MSG_MAX];
  if (oc->start_error != GRPC_CALL_OK) {
    memset(&r, 0, sizeof r);
    r.status = GRPC_STATUS_INTERNAL;
    r.code = TS_EINTERNAL;
    r.message = oc->start_msg;
  } else {
    recv_io_result(&oc->io, &r, &data, msg, sizeof msg);
  }
  oc->done(oc->user, &r);
  grpc_slice_unref(data);
  recv_io_destroy(&oc->io);
  grpc_byte_buffer_destroy(oc->request);
  grpc_call_unref(oc->call);
  free(oc);
  pthread_mutex_lock(&c->mu);
  c->outstanding--;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

int ts_rpc_client_create(ts_rpc_client **out, ts_err *err) {
  *out = NULL;
  ts_rpc_client *c = calloc(1, sizeof *c);
  if (!c) return ts_err_set(err, TS_ENOMEM, "client: no memory");
  int rc = rpc_engine_acquire(1, &c->cq, err);
  if (rc < 0) {
    free(c);
    return rc;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  *out = c;
  return 0;
}

/* Must not run on a poller thread (inside a `done` callback or a handler). */
void ts_rpc_client_free(ts_rpc_client *c) {
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  while (c->outstanding > 0) pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
  rpc_engine_release();
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* A gRPC channel to target on cc (not taken). */
static grpc_channel *channel_make(const char *target,
                                   grpc_channel_credentials *cc) {
  /* No gRPC retries: Tessera retries where it knows better (dispatch picks
   * another replica), and the retry filter buffers every message it sends
   * (about 10% of a small call's client CPU). */
  /* Answers are never decompressed: recv_io_result refuses a compressed
   * one unread (a small gzip can inflate to any size), and peers are told
   * that only identity is accepted. */
  grpc_arg args[RPC_N_COMMON_ARGS + 3];
  args[RPC_N_COMMON_ARGS] = rpc_int_arg(GRPC_ARG_ENABLE_RETRIES, 0);
  args[RPC_N_COMMON_ARGS + 1] = rpc_int_arg(
      GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET,
      1 << GRPC_COMPRESS_NONE);
  args[RPC_N_COMMON_ARGS + 2] =
      rpc_int_arg(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
  grpc_channel_args chargs =
      rpc_fill_args(args, sizeof args / sizeof args[0]);
  return grpc_channel_create(target, cc, &chargs);
}

int ts_rpc_channel_open(const char *target, const ts_rpc_creds *creds,
                        ts_rpc_channel **out, ts_err *err) {
  *out = NULL;
  if (!target || !target[0])
    return ts_err_set(err, TS_EINVAL, "target: address missing");
  ts_rpc_channel *ch = calloc(1, sizeof *ch);
  if (!ch) return ts_err_set(err, TS_ENOMEM, "channel to %s: no memory", target);
  pthread_mutex_init(&ch->mu, NULL);
  const char *token = creds ? creds->token : NULL;
  const char *secret = creds ? creds->cluster_secret : NULL;
  ch->target = strdup(target);
  ch->token = token ? strdup(token) : NULL;
  int rc = !ch->target || (token && !ch->token)
               ? ts_err_set(err, TS_ENOMEM, "channel to %s: no memory", target)
               : rpc_keyset_get(creds, &ch->keys, err);
  grpc_channel_credentials *cc = NULL;
  if (rc == 0)
    rc = rpc_channel_creds(ch->keys, ch->token, target, &cc, &ch->generation,
                           err);
  if (rc < 0) {
    ts_rpc_channel_close(ch);
    return rc;
  }
  if (secret) {
    ch->md[0].key = grpc_slice_from_static_string(TS_RPC_SECRET_METADATA);
    ch->md[0].value = grpc_slice_from_copied_string(secret);
    ch->n_md = 1;
  }
  ch->channel = channel_make(target, cc);
  grpc_channel_credentials_release(cc);
  *out = ch;
  return 0;
}

void ts_rpc_channel_close(ts_rpc_channel *ch) {
  if (!ch) return;
  if (ch->channel) grpc_channel_destroy(ch->channel);
  if (ch->retired) grpc_channel_destroy(ch->retired);
  for (size_t i = 0; i < ch->n_md; i++) {
    grpc_slice_unref(ch->md[i].key);
    grpc_slice_unref(ch->md[i].value);
  }
  rpc_keyset_put(ch->keys);
  free(ch->token);
  free(ch->target);
  pthread_mutex_destroy(&ch->mu);
  free(ch);
}

const char *ts_rpc_channel_target(const ts_rpc_channel *ch) {
  return ch->target;
}

/* Starts an asynchronous call sending `request` (taken over). */
static int outcall_start(ts_rpc_client *c, ts_rpc_channel *ch,
                         const char *method, grpc_byte_buffer *request,
                         int64_t deadline, ts_rpc_done_fn done, void *user,
                         ts_rpc_outcall **handle) {
  ts_rpc_outcall *oc = calloc(1, sizeof *oc);
  if (!oc) {
    grpc_byte_buffer_destroy(request);
    return TS_ENOMEM;
  }
  oc->t = (rpc_tag){on_outcall, NULL};
  oc->client = c;
  oc->done = done;
  oc->user = user;
  recv_io_init(&oc->io);
  oc->request = request;
  grpc_channel *used = NULL;
  oc->call = call_create(ch, c->cq, method, deadline, &used);
  pthread_mutex_lock(&c->mu);
  c->outstanding++;
  pthread_mutex_unlock(&c->mu);
  if (handle) *handle = oc;
  grpc_op ops[6];
  size_t n = send_ops(ops, ch, oc->request, true);
  n += recv_io_ops(&oc->io, ops + n);
  /* Once the batch started, another poller may complete it and free oc
   * before start_batch returns: oc is touched again only if it failed. */
  grpc_call_error e = grpc_call_start_batch(oc->call, ops, n, &oc->t, NULL);
  if (e != GRPC_CALL_OK) {
    oc->start_error = e;
    snprintf(oc->start_msg, sizeof oc->start_msg, "cannot start call %s: %s",
             method, grpc_call_error_to_string(e));
    /* No event will come for the batch. A connectivity watch that expires
     * at once delivers the tag on the client's poller instead, so `done`
     * still runs there. */
    grpc_connectivity_state st =
        grpc_channel_check_connectivity_state(used, 0);
    grpc_channel_watch_connectivity_state(
        used, st, gpr_inf_past(GPR_CLOCK_MONOTONIC), c->cq, &oc->t);
  }
  return 0;
}

int ts_rpc_call_async(ts_rpc_client *c, ts_rpc_channel *ch, const char *method,
                      const uint8_t *req, size_t len, int64_t deadline,
                      ts_rpc_done_fn done, void *user,
                      ts_rpc_outcall **handle) {
  if (handle) *handle = NULL;
  if (!c || !ch || !method || !done || (len > 0 && !req)) return TS_EINVAL;
  return outcall_start(c, ch, method, rpc_buffer_from_copy(req, len), deadline,
                       done, user, handle);
}

int ts_rpc_call_async_owned(ts_rpc_client *c, ts_rpc_channel *ch,
                            const char *method, uint8_t *req, size_t len,
                            int64_t deadline, ts_rpc_done_fn done, void *user,
                            ts_rpc_outcall **handle) {
  if (handle) *handle = NULL;
  if (!c || !ch || !method || !done || (len > 0 && !req)) {
    free(req);
    return TS_EINVAL;
  }
  return outcall_start(c, ch, method, rpc_buffer_from_owned(req, len), deadline,
                       done, user, handle);
}

void ts_rpc_outcall_cancel(ts_rpc_outcall *call) {
  if (call && call->call) grpc_call_cancel(call->call, NULL);
}

/* Runs one batch on a pluck CQ and waits for it. Returns the event's
 * success, or -1 when the batch could not start (err set). */
static int pluck_batch(grpc_call *call, grpc_completion_queue *cq,
                       const grpc_op *ops, size_t n, void *t, ts_err *err) {
  grpc_call_error e = grpc_call_start_batch(call, ops, n, t, NULL);
  if (e != GRPC_CALL_OK) {
    ts_err_set(err, TS_EINTERNAL, "cannot start call batch: %s",
               grpc_call_error_to_string(e));
    return -1;
  }
  grpc_event ev =
      grpc_completion_queue_pluck(cq, t, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                  NULL);
  return ev.success;
}

/* Copies a finished call's outcome to the caller: *resp malloc'd on OK. */
static int take_result(recv_io *io, uint8_t **resp, size_t *resp_len,
                       ts_err *err) {
  ts_rpc_result r;
  grpc_slice data;
  char msg[TS_ERR_MSG_MAX];
  recv_io_result(io, &r, &data, msg, sizeof msg);
  int rc = 0;
  if (r.status != GRPC_STATUS_OK) {
    rc = ts_err_set(err, r.code, "%s", msg);
  } else {
    uint8_t *out = malloc(r.len ? r.len : 1);
    if (!out) {
      rc = ts_err_set(err, TS_ENOMEM, "response of %zu bytes: no memory",
                      r.len);
    } else {
      if (r.len) memcpy(out, r.data, r.len);
      *resp = out;
      *resp_len = r.len;
    }
  }
  grpc_slice_unref(data);
  return rc;
}

int ts_rpc_call_sync(ts_rpc_channel *ch, const char *method,
                     const uint8_t *req, size_t len, int64_t deadline,
                     uint8_t **resp, size_t *resp_len, ts_err *err) {
  *resp = NULL;
  *resp_len = 0;
  if (!ch || !method || (len > 0 && !req))
    return ts_err_set(err, TS_EINVAL, "call: channel, method or request "
                                      "missing");
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call *call = call_create(ch, cq, method, deadline, NULL);
  grpc_byte_buffer *request = rpc_buffer_from_copy(req, len);
  recv_io io;
  recv_io_init(&io);
  grpc_op ops[6];
  size_t n = send_ops(ops, ch, request, true);
  n += recv_io_ops(&io, ops + n);
  char t;
  int rc = pluck_batch(call, cq, ops, n, &t, err);
  if (rc >= 0) rc = take_result(&io, resp, resp_len, err);
  else rc = TS_EINTERNAL;
  recv_io_destroy(&io);
  grpc_byte_buffer_destroy(request);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_destroy(cq);
  return rc;
}

struct ts_rpc_stream {
  grpc_completion_queue *cq;
  grpc_call *call;
  recv_io io;
  bool recv_posted; /* the receive batch is outstanding */
  bool status_in;   /* ... and has completed */
  char t_send, t_recv;
};

/* Waits for the status (the receive batch), then returns its TS_E* code,
 * or 0 on OK. */
static int stream_status(ts_rpc_stream *st, ts_err *err) {
  if (st->recv_posted && !st->status_in) {
    grpc_completion_queue_pluck(st->cq, &st->t_recv,
                                gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    st->status_in = true;
  }
  if (!st->status_in)
    return ts_err_set(err, TS_EINTERNAL, "stream: no status was received");
  if (st->io.status == GRPC_STATUS_OK) return 0;
  size_t n = GRPC_SLICE_LENGTH(st->io.details);
  if (n > 0)
    return ts_err_set(err, ts_err_from_grpc_status(st->io.status), "%.*s",
                      (int)(n < TS_ERR_MSG_MAX ? n : TS_ERR_MSG_MAX - 1),
                      (const char *)GRPC_SLICE_START_PTR(st->io.details));
  return ts_err_set(err, ts_err_from_grpc_status(st->io.status), "%s",
                    st->io.error_string ? st->io.error_string
                                        : "stream failed");
}

static void stream_free(ts_rpc_stream *st) {
  if (st->recv_posted && !st->status_in) {
    grpc_call_cancel(st->call, NULL);
    grpc_completion_queue_pluck(st->cq, &st->t_recv,
                                gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  }
  recv_io_destroy(&st->io);
  grpc_call_unref(st->call);
  grpc_completion_queue_shutdown(st->cq);
  grpc_completion_queue_destroy(st->cq);
  free(st);
}

int ts_rpc_stream_open(ts_rpc_channel *ch, const char *method,
                       int64_t deadline, ts_rpc_stream **out, ts_err *err) {
  *out = NULL;
  if (!ch || !method)
    return ts_err_set(err, TS_EINVAL, "stream: channel or method missing");
  ts_rpc_stream *st = calloc(1, sizeof *st);
  if (!st) return ts_err_set(err, TS_ENOMEM, "stream %s: no memory", method);
  st->cq = grpc_completion_queue_create_for_pluck(NULL);
  st->call = call_create(ch, st->cq, method, deadline, NULL);
  recv_io_init(&st->io);
  grpc_op ops[3];
  size_t n = recv_io_ops(&st->io, ops);
  grpc_call_error e = grpc_call_start_batch(st->call, ops, n, &st->t_recv,
                                            NULL);
  if (e != GRPC_CALL_OK) {
    stream_free(st);
    return ts_err_set(err, TS_EINTERNAL, "stream %s: cannot start: %s",
                      method, grpc_call_error_to_string(e));
  }
  st->recv_posted = true;
  n = send_ops(ops, ch, NULL, false);
  int ok = pluck_batch(st->call, st->cq, ops, n, &st->t_send, err);
  if (ok <= 0) {
    int rc = ok < 0 ? TS_EINTERNAL : stream_status(st, err);
    if (rc == 0)
      rc = ts_err_set(err, TS_EUNAVAILABLE, "stream %s: closed at open",
                      method);
    stream_free(st);
    return rc;
  }
  *out = st;
  return 0;
}

int ts_rpc_stream_send(ts_rpc_stream *st, const uint8_t *msg, size_t len,
                       ts_err *err) {
  if (!st || (len > 0 && !msg))
    return ts_err_set(err, TS_EINVAL, "stream: message missing");
  if (st->status_in) {
    int rc = stream_status(st, err);
    return rc < 0 ? rc
                  : ts_err_set(err, TS_EUNAVAILABLE,
                               "stream: the server already answered");
  }
  grpc_byte_buffer *bb = rpc_buffer_from_copy(msg, len);
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = bb;
  int ok = pluck_batch(st->call, st->cq, &op, 1, &st->t_send, err);
  grpc_byte_buffer_destroy(bb);
  if (ok < 0) return TS_EINTERNAL;
  if (ok == 0) { /* the call ended early; the status says why */
    int rc = stream_status(st, err);
    return rc < 0 ? rc
                  : ts_err_set(err, TS_EUNAVAILABLE,
                               "stream: the server answered before the end");
  }
  return 0;
}

int ts_rpc_stream_finish(ts_rpc_stream *st, uint8_t **resp, size_t *resp_len,
                         ts_err *err) {
  *resp = NULL;
  *resp_len = 0;
  if (!st) return ts_err_set(err, TS_EINVAL, "stream: missing");
  if (!st->status_in) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (pluck_batch(st->call, st->cq, &op, 1, &st->t_send, err) < 0) {
      stream_free(st);
      return TS_EINTERNAL;
    }
  }
  int rc = stream_status(st, err);
  if (rc == 0) rc = take_result(&st->io, resp, resp_len, err);
  stream_free(st);
  return rc;
}
