/*
 * rpc.c - Tessera's gRPC layer on the C core (see rpc.h for the contract).
 *
 * Tags. Every batch and request carries a `tag`: the function that handles
 * its completion and the server whose srv->pending counts it (NULL for
 * client calls and the shutdown tag). The tag is embedded in the struct that
 * owns the batch's buffers, which is recovered with container_of.
 *
 * The engine: one completion queue per process, shared by every server and
 * every asynchronous client in it, polled by a few threads (the most any
 * server asked for; one by default). Sharing is what keeps the request path
 * cheap: a coordinator's poller that receives a worker's answer also sends
 * the client's answer, with no hand-over between threads, and with one
 * poller gRPC has no other thread to wake (kicks, futex wake-ups and gRPC's
 * executor offloads were most of a coordinator's CPU per request with a
 * queue and threads per server and per client). The engine is reference-
 * counted by its servers and clients and shut down with the last of them.
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
 *
 * Client: a ts_rpc_client holds a reference on the engine; async unary
 * calls run as one batch of six ops on its queue. Synchronous calls and
 * client streams use a pluck CQ of their own, so they never touch a poller.
 */
#include "rpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "health.pb-c.h"
#include "log.h"
#include "rpc_message.h"

#define container_of(ptr, type, member) \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

typedef struct tag {
  void (*fn)(struct tag *t, int ok);
  ts_rpc_server *counted; /* whose srv->pending counts this tag, or NULL */
} tag;

#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
#define PEM_MAX_BYTES (1 << 20)
#define KEEPALIVE_TIME_MS 10000
#define KEEPALIVE_TIMEOUT_MS 5000
#define MAX_POLL_THREADS 64

/* ---- time ------------------------------------------------------------- */

int64_t ts_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* gpr's monotonic clock may have its own origin, so deadlines travel as
 * "time left" from now on both clocks, never as raw values. */
static gpr_timespec deadline_to_gpr(int64_t deadline) {
  if (deadline == TS_DEADLINE_NONE) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  int64_t now = ts_now_ms();
  int64_t left = deadline > now ? deadline - now : 0;
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(left, GPR_TIMESPAN));
}

static int64_t deadline_from_gpr(gpr_timespec d) {
  if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
    return TS_DEADLINE_NONE;
  if (gpr_time_cmp(d, gpr_inf_past(d.clock_type)) == 0) return 0;
  d = gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC);
  gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
  const int64_t limit = (int64_t)1 << 40; /* seconds: ~35 000 years */
  if (left.tv_sec > limit) return TS_DEADLINE_NONE;
  if (left.tv_sec < -limit) return 0;
  return ts_now_ms() + left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

/* ---- init, logging, status codes -------------------------------------- */

static const ts_log_level grpc_severity_level[] = {
    [GPR_LOG_SEVERITY_DEBUG] = TS_LOG_DEBUG,
    [GPR_LOG_SEVERITY_INFO] = TS_LOG_INFO,
    [GPR_LOG_SEVERITY_ERROR] = TS_LOG_ERROR,
};

/* Runs on any gRPC thread; must not call into gRPC. */
static void grpc_log_hook(gpr_log_func_args *args) {
  ts_log_level level = TS_LOG_ERROR;
  if ((unsigned)args->severity <
      sizeof grpc_severity_level / sizeof grpc_severity_level[0])
    level = grpc_severity_level[args->severity];
  if (!ts_log_enabled(level)) return;
  const char *file = args->file ? strrchr(args->file, '/') : NULL;
  file = file ? file + 1 : (args->file ? args->file : "?");
  ts_log(level, "grpc: %s (%s:%d)", args->message, file, args->line);
}

void ts_rpc_init(void) {
  gpr_set_log_function(grpc_log_hook);
  grpc_init();
}

void ts_rpc_shutdown(void) { grpc_shutdown(); }

/* gRPC statuses that no TS_E* code produces, and the code they map back to. */
static const struct {
  int status, code;
} extra_status_codes[] = {
    {2, TS_EINTERNAL},     /* UNKNOWN */
    {10, TS_EUNAVAILABLE}, /* ABORTED: worth a retry elsewhere */
    {11, TS_EINVAL},       /* OUT_OF_RANGE */
    {15, TS_EIO},          /* DATA_LOSS */
};

static const struct {
  int code, status;
} code_status[] = {
#define TS_X(name, value, grpc, desc) {value, grpc},
    TS_ERROR_LIST(TS_X)
#undef TS_X
};

int ts_err_from_grpc_status(int status) {
  int code = TS_EINTERNAL;
  for (size_t i = 0; i < sizeof extra_status_codes / sizeof *extra_status_codes;
       i++)
    if (extra_status_codes[i].status == status)
      code = extra_status_codes[i].code;
  /* Several codes share a status (RESOURCE_EXHAUSTED, INTERNAL); the last in
   * the table is the general one (TS_EEXHAUSTED, TS_EINTERNAL) and wins. */
  for (size_t i = 0; i < sizeof code_status / sizeof *code_status; i++)
    if (code_status[i].status == status) code = code_status[i].code;
  return code;
}

/* The status sent for a TS_E* code; TS_OK passed to a failure is UNKNOWN. */
static grpc_status_code status_for_code(int code) {
  int status = ts_err_grpc_status(code);
  return status == 0 ? GRPC_STATUS_UNKNOWN : (grpc_status_code)status;
}

/* ---- small helpers ---------------------------------------------------- */

/* The bytes of a received buffer as one slice (the caller unrefs it). An
 * uncompressed message that arrived in one slice (most small ones) is
 * referenced, not copied. */
static grpc_slice buffer_to_slice(grpc_byte_buffer *bb) {
  if (bb->type == GRPC_BB_RAW &&
      bb->data.raw.compression == GRPC_COMPRESS_NONE &&
      bb->data.raw.slice_buffer.count == 1)
    return grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, bb)) return grpc_empty_slice();
  grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  return all;
}

/* A byte buffer holding `data` (malloc'd, taken over and freed by gRPC). */
static grpc_byte_buffer *buffer_from_owned(uint8_t *data, size_t len) {
  grpc_slice s;
  if (len == 0) {
    free(data);
    s = grpc_empty_slice();
  } else {
    s = grpc_slice_new(data, len, free);
  }
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

static grpc_byte_buffer *buffer_from_copy(const uint8_t *data, size_t len) {
  grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

static void copy_string(char *buf, size_t size, const char *s, size_t len) {
  if (size == 0) return;
  if (len >= size) len = size - 1;
  memcpy(buf, s, len);
  buf[len] = '\0';
}

/* Reads a whole PEM file into a NUL-terminated malloc'd string. */
static int read_pem(const char *path, const char *what, char **out,
                    ts_err *err) {
  *out = NULL;
  if (!path) return 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return ts_err_set(err, TS_EINVAL, "cannot read %s file '%s': %s", what,
                      path, strerror(errno));
  char *buf = malloc(PEM_MAX_BYTES + 1);
  if (!buf) {
    fclose(f);
    return ts_err_set(err, TS_ENOMEM, "no memory for %s file '%s'", what,
                      path);
  }
  size_t n = fread(buf, 1, PEM_MAX_BYTES + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || n == 0 || n > PEM_MAX_BYTES) {
    free(buf);
    return ts_err_set(err, TS_EINVAL, "cannot read %s file '%s': %s", what,
                      path,
                      bad ? "read error"
                          : (n == 0 ? "empty file" : "larger than 1 MiB"));
  }
  buf[n] = '\0';
  *out = buf;
  return 0;
}

typedef struct pem_set {
  char *cert, *key, *ca;
} pem_set;

static void pem_free(pem_set *p) {
  free(p->cert);
  free(p->key);
  free(p->ca);
  memset(p, 0, sizeof *p);
}

/* Loads the files named by creds; cert and key come together or not at all.
 * Returns 0 with an empty set for NULL / all-NULL creds (plaintext). */
static int pem_load(const ts_rpc_creds *creds, pem_set *p, ts_err *err) {
  memset(p, 0, sizeof *p);
  if (!creds) return 0;
  if (!creds->cert_file != !creds->key_file)
    return ts_err_set(err, TS_EINVAL,
                      "creds: cert_file and key_file go together (got %s)",
                      creds->cert_file ? "cert_file only" : "key_file only");
  int rc = read_pem(creds->cert_file, "certificate", &p->cert, err);
  if (rc == 0) rc = read_pem(creds->key_file, "private key", &p->key, err);
  if (rc == 0) rc = read_pem(creds->ca_file, "CA", &p->ca, err);
  if (rc < 0) pem_free(p);
  return rc;
}

/* Arguments both ends share: no message limits, keepalive so dead peers are
 * noticed, and tolerance for the peer's keepalive pings. */
static const struct {
  const char *key;
  int value;
} common_args[] = {
    {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, -1},
    {GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, -1},
    {GRPC_ARG_KEEPALIVE_TIME_MS, KEEPALIVE_TIME_MS},
    {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, KEEPALIVE_TIMEOUT_MS},
    {GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1},
    {GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0},
    {GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
     KEEPALIVE_TIME_MS / 2},
};
#define N_COMMON_ARGS (sizeof common_args / sizeof *common_args)

/* Fills args[0..N_COMMON_ARGS) and returns the channel args over `n` of
 * them (the caller may have put more after). The keys are static. */
static grpc_channel_args fill_args(grpc_arg *args, size_t n) {
  for (size_t i = 0; i < N_COMMON_ARGS; i++) {
    memset(&args[i], 0, sizeof args[i]);
    args[i].type = GRPC_ARG_INTEGER;
    args[i].key = (char *)common_args[i].key;
    args[i].value.integer = common_args[i].value;
  }
  return (grpc_channel_args){n, args};
}

/* ---- request arenas (rpc_message.h) ------------------------------------ */

#define ARENA_ALIGN alignof(max_align_t)

static void *arena_alloc(void *data, size_t size) {
  ts_rpc_arena *a = data;
  size = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
  if (size <= TS_RPC_ARENA_INLINE - a->used) {
    void *p = a->first + a->used;
    a->used += size;
    return p;
  }
  if (size > SIZE_MAX - ARENA_ALIGN) return NULL;
  void **block = malloc(ARENA_ALIGN + size);
  if (!block) return NULL;
  *block = a->blocks;
  a->blocks = block;
  return (unsigned char *)block + ARENA_ALIGN;
}

static void arena_free(void *data, void *p) {
  (void)data; /* everything goes at ts_rpc_arena_release */
  (void)p;
}

void ts_rpc_arena_init(ts_rpc_arena *a) {
  a->allocator = (ProtobufCAllocator){arena_alloc, arena_free, a};
  a->used = 0;
  a->blocks = NULL;
}

void *ts_rpc_arena_calloc(ts_rpc_arena *a, size_t size) {
  void *p = arena_alloc(a, size ? size : 1);
  if (p) memset(p, 0, size);
  return p;
}

void ts_rpc_arena_release(ts_rpc_arena *a) {
  for (void **block = a->blocks, **next; block; block = next) {
    next = *block;
    free(block);
  }
  a->blocks = NULL;
  a->used = 0;
}

/* ---- the engine: the process's completion queue and its pollers -------- */

static void server_tag_done(ts_rpc_server *s);
static void engine_release(void);

/* Hands every completion to its tag until the queue shuts down, then counts
 * a server's tag done once its handler returned. */
static void *engine_poll(void *arg) {
  grpc_completion_queue *cq = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) return NULL;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    tag *t = ev.tag;
    ts_rpc_server *counted = t->counted; /* read before t may be freed */
    t->fn(t, ev.success);
    if (counted) server_tag_done(counted);
  }
}

static struct {
  pthread_mutex_t mu; /* guards all of the engine */
  grpc_completion_queue *cq;
  pthread_t threads[MAX_POLL_THREADS];
  int n_threads;
  int refs;
} engine = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Takes a reference on the engine, creating it if needed, with at least
 * `threads` pollers; *cq gets its queue. Undo with engine_release(). */
static int engine_acquire(int threads, grpc_completion_queue **cq,
                          ts_err *err) {
  pthread_mutex_lock(&engine.mu);
  if (!engine.cq) engine.cq = grpc_completion_queue_create_for_next(NULL);
  while (engine.n_threads < threads &&
         pthread_create(&engine.threads[engine.n_threads], NULL, engine_poll,
                        engine.cq) == 0)
    engine.n_threads++;
  int started = engine.n_threads;
  engine.refs++;
  grpc_completion_queue *q = engine.cq;
  pthread_mutex_unlock(&engine.mu);
  if (started == 0) {
    engine_release();
    return ts_err_set(err, TS_ENOMEM, "cannot start a completion-queue "
                      "thread");
  }
  *cq = q;
  return 0;
}

/* Drops a reference; the last one shuts the queue down and joins its
 * pollers. Never called on a poller thread (servers and clients are freed
 * from their owners' threads). */
static void engine_release(void) {
  pthread_mutex_lock(&engine.mu);
  if (--engine.refs == 0) {
    grpc_completion_queue_shutdown(engine.cq);
    for (int i = 0; i < engine.n_threads; i++)
      pthread_join(engine.threads[i], NULL);
    grpc_completion_queue_destroy(engine.cq);
    engine.cq = NULL;
    engine.n_threads = 0;
  }
  pthread_mutex_unlock(&engine.mu);
}

/* ---- server ----------------------------------------------------------- */

#define UNREGISTERED (-1)

typedef struct method_entry {
  ts_rpc_method m; /* m.path is owned (strdup) */
  void *handle;    /* grpc_server_register_method's handle */
} method_entry;

struct ts_rpc_call {
  tag t_accept, t_close, t_recv, t_send;
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
  atomic_int serving;
  atomic_long pending;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stopping, shutdown_done;
  int live;
  ts_rpc_call *calls;
  tag t_shutdown;
};

static void on_accept(tag *t, int ok);
static void on_close(tag *t, int ok);
static void on_recv(tag *t, int ok);
static void on_send(tag *t, int ok);

static ts_rpc_call *call_new(ts_rpc_server *s, int method) {
  ts_rpc_call *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->t_accept = (tag){on_accept, s};
  c->t_close = (tag){on_close, s};
  c->t_recv = (tag){on_recv, s};
  c->t_send = (tag){on_send, s};
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
                             tag *t) {
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

void ts_rpc_call_reply_owned(ts_rpc_call *call, uint8_t *resp, size_t len) {
  if (!resp && len > 0) {
    call_answer(call, GRPC_STATUS_INTERNAL, "reply buffer missing", NULL);
    return;
  }
  call_answer(call, GRPC_STATUS_OK, NULL, buffer_from_owned(resp, len));
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
      copy_string(buf, size, (const char *)GRPC_SLICE_START_PTR(v),
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
      copy_string(buf, size, peer, strlen(peer));
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

static void dispatch_unary(ts_rpc_call *c, method_entry *me) {
  if (!c->payload) {
    ts_rpc_call_fail(c, TS_EINVAL, "request message missing");
    return;
  }
  grpc_slice req = buffer_to_slice(c->payload);
  grpc_byte_buffer_destroy(c->payload);
  c->payload = NULL;
  me->m.unary(c, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), me->m.user);
  grpc_slice_unref(req);
}

static void on_accept(tag *t, int ok) {
  ts_rpc_call *c = container_of(t, ts_rpc_call, t_accept);
  ts_rpc_server *s = c->srv;
  if (!ok) { /* the server is shutting down; this request never matched */
    call_free(c);
    return;
  }
  post_request(s, c->method);
  c->deadline = deadline_from_gpr(
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

  if (c->method == UNREGISTERED) {
    char *path = grpc_slice_to_c_string(c->details.method);
    char msg[TS_ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "unknown method %s", path);
    gpr_free(path);
    ts_rpc_call_fail(c, TS_EUNSUPPORTED, msg);
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
static void on_close(tag *t, int ok) {
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

static void on_send(tag *t, int ok) {
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
static void on_recv(tag *t, int ok) {
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
    grpc_slice msg = buffer_to_slice(bb);
    grpc_byte_buffer_destroy(bb);
    ts_err err;
    ts_err_clear(&err);
    int rc = me->m.on_message(c, GRPC_SLICE_START_PTR(msg),
                              GRPC_SLICE_LENGTH(msg), me->m.user, &err);
    grpc_slice_unref(msg);
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

static void on_shutdown(tag *t, int ok) {
  (void)ok;
  ts_rpc_server *s = container_of(t, ts_rpc_server, t_shutdown);
  pthread_mutex_lock(&s->mu);
  s->shutdown_done = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void server_tag_done(ts_rpc_server *s) {
  pthread_mutex_lock(&s->mu);
  atomic_fetch_sub(&s->pending, 1);
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Built-in grpc.health.v1.Health/Check: "" is the whole server. */
static void health_check(ts_rpc_call *call, const uint8_t *req, size_t len,
                         void *user) {
  ts_rpc_server *s = user;
  Grpc__Health__V1__HealthCheckRequest *rq =
      grpc__health__v1__health_check_request__unpack(NULL, len, req);
  if (!rq) {
    ts_rpc_call_fail(call, TS_EINVAL,
                     "malformed grpc.health.v1.HealthCheckRequest");
    return;
  }
  if (rq->service[0] != '\0') {
    char msg[TS_ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "unknown service '%.200s'", rq->service);
    grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
    ts_rpc_call_fail(call, TS_ENOTFOUND, msg);
    return;
  }
  grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
  Grpc__Health__V1__HealthCheckResponse resp =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status =
      atomic_load(&s->serving)
          ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  size_t n = grpc__health__v1__health_check_response__get_packed_size(&resp);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) {
    ts_rpc_call_fail(call, TS_ENOMEM, "no memory for the health answer");
    return;
  }
  grpc__health__v1__health_check_response__pack(&resp, buf);
  ts_rpc_call_reply_owned(call, buf, n);
}

void ts_rpc_server_set_serving(ts_rpc_server *s, int serving) {
  atomic_store(&s->serving, serving ? 1 : 0);
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
    if (strcmp(m->path, HEALTH_CHECK_PATH) == 0) has_health = true;
  }
  int total = n + (has_health ? 0 : 1);
  s->methods = calloc((size_t)total, sizeof *s->methods);
  if (!s->methods) return ts_err_set(err, TS_ENOMEM, "methods: no memory");
  for (int i = 0; i < total; i++) {
    ts_rpc_method m = {.path = HEALTH_CHECK_PATH,
                       .kind = TS_RPC_UNARY,
                       .unary = health_check,
                       .user = s};
    if (i < n) m = methods[i];
    s->methods[i].m = m;
    s->methods[i].m.path = strdup(m.path);
    s->n_methods = i + 1;
    if (!s->methods[i].m.path)
      return ts_err_set(err, TS_ENOMEM, "methods: no memory");
  }
  return 0;
}

/* The server's credentials into *out (release them); reads the files. */
static int server_creds(const ts_rpc_creds *creds,
                        grpc_server_credentials **out, ts_err *err) {
  pem_set pem;
  *out = NULL;
  int rc = pem_load(creds, &pem, err);
  if (rc < 0) return rc;
  if (!pem.cert) {
    if (pem.ca) {
      pem_free(&pem);
      return ts_err_set(err, TS_EINVAL,
                        "creds: a TLS server needs cert_file and key_file, "
                        "not only ca_file");
    }
    *out = grpc_insecure_server_credentials_create();
    return 0;
  }
  grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key,
                                     .cert_chain = pem.cert};
  grpc_server_credentials *sc = grpc_ssl_server_credentials_create_ex(
      pem.ca, &pair, 1,
      pem.ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
             : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
      NULL);
  pem_free(&pem);
  *out = sc;
  if (!sc)
    return ts_err_set(err, TS_EINVAL,
                      "creds: certificate '%s' or key '%s' rejected",
                      creds->cert_file, creds->key_file);
  return 0;
}

/* Frees a server that never started (no listener, nothing posted). */
static void server_discard(ts_rpc_server *s) {
  if (s->server) grpc_server_destroy(s->server);
  if (s->cq) engine_release();
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
  if (threads < 0 || threads > MAX_POLL_THREADS)
    return ts_err_set(err, TS_EINVAL, "poll_threads: %d is not in 0..%d",
                      opts->poll_threads, MAX_POLL_THREADS);
  ts_rpc_server *s = calloc(1, sizeof *s);
  if (!s) return ts_err_set(err, TS_ENOMEM, "server: no memory");
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  atomic_init(&s->serving, 1);
  atomic_init(&s->pending, 0);
  s->t_shutdown = (tag){on_shutdown, NULL};
  /* Requests posted per method: a burst of calls up to this many is
   * matched at once; more wait in gRPC until a slot is re-posted. */
  s->slots = threads * 4 > 16 ? threads * 4 : 16;
  grpc_server_credentials *sc = NULL;
  int rc = methods_copy(s, methods, n_methods, err);
  if (rc == 0) rc = server_creds(opts->creds, &sc, err);
  if (rc < 0) {
    server_discard(s);
    return rc;
  }

  /* SO_REUSEPORT off, so a port in use is an error, not a shared port. */
  grpc_arg args[N_COMMON_ARGS + 1];
  args[N_COMMON_ARGS] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                                   .key = GRPC_ARG_ALLOW_REUSEPORT,
                                   .value.integer = 0};
  grpc_channel_args chargs = fill_args(args, N_COMMON_ARGS + 1);
  s->server = grpc_server_create(&chargs, NULL);
  rc = engine_acquire(threads, &s->cq, err);
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

/* ---- client ----------------------------------------------------------- */

struct ts_rpc_channel {
  grpc_channel *channel;
  char *target;
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
    copy_string(msg, msg_size, "response message missing",
                strlen("response message missing"));
  } else if (io->status != GRPC_STATUS_OK) {
    size_t n = GRPC_SLICE_LENGTH(io->details);
    if (n > 0)
      copy_string(msg, msg_size, (const char *)GRPC_SLICE_START_PTR(io->details),
                  n);
    else
      snprintf(msg, msg_size, "%s",
               io->error_string ? io->error_string : "call failed");
  } else {
    msg[0] = '\0';
    *data = buffer_to_slice(io->response);
  }
  r->code = ts_err_from_grpc_status(r->status);
  r->message = msg;
  r->data = GRPC_SLICE_START_PTR(*data);
  r->len = GRPC_SLICE_LENGTH(*data);
}

static grpc_call *call_create(ts_rpc_channel *ch, grpc_completion_queue *cq,
                              const char *method, int64_t deadline) {
  grpc_slice path = grpc_slice_from_copied_string(method);
  grpc_call *call =
      grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                               path, NULL, deadline_to_gpr(deadline), NULL);
  grpc_slice_unref(path);
  return call;
}

/* Fills ops with SEND_INITIAL_METADATA [+ SEND_MESSAGE] [+ CLOSE]. */
static size_t send_ops(grpc_op *ops, grpc_byte_buffer *msg, bool close) {
  memset(ops, 0, 3 * sizeof *ops);
  size_t n = 0;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (msg) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = msg;
  }
  if (close) ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  return n;
}

struct ts_rpc_outcall {
  tag t;
  ts_rpc_client *client;
  grpc_call *call;
  grpc_byte_buffer *request;
  recv_io io;
  ts_rpc_done_fn done;
  void *user;
  grpc_call_error start_error; /* GRPC_CALL_OK unless the batch failed */
  char start_msg[TS_ERR_MSG_MAX]; /* why it failed to start */
};

static void on_outcall(tag *t, int ok) {
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
  int rc = engine_acquire(1, &c->cq, err);
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
  engine_release();
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

int ts_rpc_channel_open(const char *target, const ts_rpc_creds *creds,
                        ts_rpc_channel **out, ts_err *err) {
  *out = NULL;
  if (!target || !target[0])
    return ts_err_set(err, TS_EINVAL, "target: address missing");
  pem_set pem;
  int rc = pem_load(creds, &pem, err);
  if (rc < 0) return rc;
  grpc_channel_credentials *cc;
  if (pem.cert || pem.ca) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key,
                                       .cert_chain = pem.cert};
    cc = grpc_ssl_credentials_create_ex(pem.ca, pem.cert ? &pair : NULL, NULL,
                                        NULL);
  } else {
    cc = grpc_insecure_credentials_create();
  }
  pem_free(&pem);
  if (!cc)
    return ts_err_set(err, TS_EINVAL, "creds: TLS credentials for %s rejected",
                      target);
  ts_rpc_channel *ch = calloc(1, sizeof *ch);
  if (ch) ch->target = strdup(target);
  if (!ch || !ch->target) {
    grpc_channel_credentials_release(cc);
    free(ch);
    return ts_err_set(err, TS_ENOMEM, "channel to %s: no memory", target);
  }
  /* No gRPC retries: Tessera retries where it knows better (dispatch picks
   * another replica), and the retry filter buffers every message it sends
   * (about 10% of a small call's client CPU). */
  grpc_arg args[N_COMMON_ARGS + 1];
  args[N_COMMON_ARGS] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                                   .key = GRPC_ARG_ENABLE_RETRIES,
                                   .value.integer = 0};
  grpc_channel_args chargs = fill_args(args, N_COMMON_ARGS + 1);
  ch->channel = grpc_channel_create(target, cc, &chargs);
  grpc_channel_credentials_release(cc);
  *out = ch;
  return 0;
}

void ts_rpc_channel_close(ts_rpc_channel *ch) {
  if (!ch) return;
  grpc_channel_destroy(ch->channel);
  free(ch->target);
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
  oc->t = (tag){on_outcall, NULL};
  oc->client = c;
  oc->done = done;
  oc->user = user;
  recv_io_init(&oc->io);
  oc->request = request;
  oc->call = call_create(ch, c->cq, method, deadline);
  pthread_mutex_lock(&c->mu);
  c->outstanding++;
  pthread_mutex_unlock(&c->mu);
  if (handle) *handle = oc;
  grpc_op ops[6];
  size_t n = send_ops(ops, oc->request, true);
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
        grpc_channel_check_connectivity_state(ch->channel, 0);
    grpc_channel_watch_connectivity_state(
        ch->channel, st, gpr_inf_past(GPR_CLOCK_MONOTONIC), c->cq, &oc->t);
  }
  return 0;
}

int ts_rpc_call_async(ts_rpc_client *c, ts_rpc_channel *ch, const char *method,
                      const uint8_t *req, size_t len, int64_t deadline,
                      ts_rpc_done_fn done, void *user,
                      ts_rpc_outcall **handle) {
  if (handle) *handle = NULL;
  if (!c || !ch || !method || !done || (len > 0 && !req)) return TS_EINVAL;
  return outcall_start(c, ch, method, buffer_from_copy(req, len), deadline,
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
  return outcall_start(c, ch, method, buffer_from_owned(req, len), deadline,
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
  grpc_call *call = call_create(ch, cq, method, deadline);
  grpc_byte_buffer *request = buffer_from_copy(req, len);
  recv_io io;
  recv_io_init(&io);
  grpc_op ops[6];
  size_t n = send_ops(ops, request, true);
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
  st->call = call_create(ch, st->cq, method, deadline);
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
  n = send_ops(ops, NULL, false);
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
  grpc_byte_buffer *bb = buffer_from_copy(msg, len);
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
