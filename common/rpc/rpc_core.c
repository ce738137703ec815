/*
 * rpc_core.c - what the rest of the rpc layer stands on: clocks and
 * deadlines, init and gRPC's log lines, the gRPC-status-to-TS_E* mapping,
 * byte buffers, the channel arguments both ends share, request arenas
 * (rpc_message.h) and the engine.
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
 */
#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "log.h"
#include "rpc.h"
#include "rpc_int.h"
#include "rpc_message.h"

#define KEEPALIVE_TIME_MS 10000
#define KEEPALIVE_TIMEOUT_MS 5000

/* ---- time ------------------------------------------------------------- */

int64_t ts_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* gpr's monotonic clock may have its own origin, so deadlines travel as
 * "time left" from now on both clocks, never as raw values. */
gpr_timespec rpc_deadline_to_gpr(int64_t deadline) {
  if (deadline == TS_DEADLINE_NONE) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  int64_t now = ts_now_ms();
  int64_t left = deadline > now ? deadline - now : 0;
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(left, GPR_TIMESPAN));
}

int64_t rpc_deadline_from_gpr(gpr_timespec d) {
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

/* gRPC's statuses (grpc/status.h), one line each, with the TS_E* code the
 * status reads back as where no entry of the error table (error.h)
 * produces it; 0 where one does: the error table decides those. */
#define GRPC_STATUS_LIST(X)                                                 \
  X(OK, 0)                                                                  \
  X(CANCELLED, 0)                                                           \
  X(UNKNOWN, TS_EINTERNAL)                                                  \
  X(INVALID_ARGUMENT, 0)                                                    \
  X(DEADLINE_EXCEEDED, 0)                                                   \
  X(NOT_FOUND, 0)                                                           \
  X(ALREADY_EXISTS, 0)                                                      \
  X(PERMISSION_DENIED, 0)                                                   \
  X(RESOURCE_EXHAUSTED, 0)                                                  \
  X(FAILED_PRECONDITION, 0)                                                 \
  X(ABORTED, TS_EUNAVAILABLE) /* worth a retry elsewhere */                 \
  X(OUT_OF_RANGE, TS_EINVAL)                                                \
  X(UNIMPLEMENTED, 0)                                                       \
  X(INTERNAL, 0)                                                            \
  X(UNAVAILABLE, 0)                                                         \
  X(DATA_LOSS, TS_EIO)                                                      \
  X(UNAUTHENTICATED, 0)

/* Indexed by status; -Woverride-init (in -Wextra) rejects a status listed
 * twice, and the count assert one left out. */
static const struct grpc_status_info {
  const char *name;
  int code;
} grpc_statuses[] = {
#define TS_X(name, code) [GRPC_STATUS_##name] = {#name, code},
    GRPC_STATUS_LIST(TS_X)
#undef TS_X
};
#define N_GRPC_STATUSES (sizeof grpc_statuses / sizeof *grpc_statuses)
enum {
#define TS_X(name, code) +1
  N_GRPC_STATUSES_LISTED = 0 GRPC_STATUS_LIST(TS_X)
#undef TS_X
};
_Static_assert(N_GRPC_STATUSES_LISTED == GRPC_STATUS_UNAUTHENTICATED + 1 &&
                   N_GRPC_STATUSES == N_GRPC_STATUSES_LISTED,
               "GRPC_STATUS_LIST has every status of grpc/status.h once");

int ts_err_from_grpc_status(int status) {
  /* Several codes share a status (RESOURCE_EXHAUSTED, INTERNAL); the last
   * in the error table is the general one (TS_EEXHAUSTED, TS_EINTERNAL)
   * and wins. */
  int code = 0;
  bool produced = false;
#define TS_X(name, value, grpc, desc) \
  if (status == (grpc)) {             \
    code = (value);                   \
    produced = true;                  \
  }
  TS_ERROR_LIST(TS_X)
#undef TS_X
  if (produced) return code;
  if (status >= 0 && (size_t)status < N_GRPC_STATUSES &&
      grpc_statuses[status].code != 0)
    return grpc_statuses[status].code;
  return TS_EINTERNAL; /* a status gRPC does not define */
}

const char *ts_rpc_status_name(int status) {
  if (status >= 0 && (size_t)status < N_GRPC_STATUSES)
    return grpc_statuses[status].name;
  return "UNKNOWN";
}

/* ---- small helpers ---------------------------------------------------- */

/* The bytes of a received buffer as one slice (the caller unrefs it). An
 * uncompressed message that arrived in one slice (most small ones) is
 * referenced, not copied. */
grpc_slice rpc_buffer_to_slice(grpc_byte_buffer *bb) {
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
grpc_byte_buffer *rpc_buffer_from_owned(uint8_t *data, size_t len) {
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

grpc_byte_buffer *rpc_buffer_from_copy(const uint8_t *data, size_t len) {
  grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

void rpc_copy_string(char *buf, size_t size, const char *s, size_t len) {
  if (size == 0) return;
  if (len >= size) len = size - 1;
  memcpy(buf, s, len);
  buf[len] = '\0';
}

/* The process's limits (ts_rpc_set_limits): set by main before any server
 * or channel exists, read when each is made. */
static ts_rpc_limits limits = {TS_RPC_MAX_MESSAGE_DEFAULT,
                               TS_RPC_MAX_STREAMS_DEFAULT};

int ts_rpc_set_limits(const ts_rpc_limits *l, ts_err *err) {
  ts_rpc_limits next = {
      .max_message = l->max_message ? l->max_message
                                    : TS_RPC_MAX_MESSAGE_DEFAULT,
      .max_streams = l->max_streams ? l->max_streams
                                    : TS_RPC_MAX_STREAMS_DEFAULT};
  if (next.max_message < TS_RPC_MAX_MESSAGE_MIN ||
      next.max_message > TS_RPC_MAX_MESSAGE_MAX)
    return ts_err_set(err, TS_EINVAL,
                      "max message size %zu is not in %u..%u bytes (64K..1G)",
                      next.max_message, TS_RPC_MAX_MESSAGE_MIN,
                      TS_RPC_MAX_MESSAGE_MAX);
  if (next.max_streams < 1 || next.max_streams > TS_RPC_MAX_STREAMS_MAX)
    return ts_err_set(err, TS_EINVAL, "max streams %d is not in 1..%d",
                      next.max_streams, TS_RPC_MAX_STREAMS_MAX);
  limits = next;
  return TS_OK;
}

ts_rpc_limits ts_rpc_get_limits(void) { return limits; }

/* Arguments both ends share: keepalive so dead peers are noticed, and
 * tolerance for the peer's keepalive pings. (The message limits and "never
 * compress" are put first by rpc_fill_args.) */
static const struct {
  const char *key;
  int value;
} common_args[] = {
    {GRPC_ARG_KEEPALIVE_TIME_MS, KEEPALIVE_TIME_MS},
    {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, KEEPALIVE_TIMEOUT_MS},
    {GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1},
    {GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0},
    {GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
     KEEPALIVE_TIME_MS / 2},
};
#define RPC_N_LIMIT_ARGS 3
_Static_assert(sizeof common_args / sizeof *common_args + RPC_N_LIMIT_ARGS ==
                   RPC_N_COMMON_ARGS,
               "RPC_N_COMMON_ARGS in rpc_int.h counts common_args and the "
               "limits");

grpc_arg rpc_int_arg(const char *key, int value) {
  return (grpc_arg){.type = GRPC_ARG_INTEGER,
                    .key = (char *)key,
                    .value.integer = value};
}

/* Fills args[0..RPC_N_COMMON_ARGS) and returns the channel args over `n` of
 * them (the caller may have put more after). The keys are static. Messages
 * are capped at the process's max_message both ways (gRPC refuses a bigger
 * one with RESOURCE_EXHAUSTED, after receiving it), and nothing is sent
 * compressed. */
grpc_channel_args rpc_fill_args(grpc_arg *args, size_t n) {
  int max = (int)limits.max_message; /* at most 1 GiB */
  args[0] = rpc_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, max);
  args[1] = rpc_int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, max);
  args[2] = rpc_int_arg(GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM,
                        GRPC_COMPRESS_NONE);
  for (size_t i = 0; i + RPC_N_LIMIT_ARGS < RPC_N_COMMON_ARGS; i++)
    args[RPC_N_LIMIT_ARGS + i] =
        rpc_int_arg(common_args[i].key, common_args[i].value);
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

/* Hands every completion to its tag until the queue shuts down, then counts
 * a server's tag done once its handler returned. */
static void *engine_poll(void *arg) {
  grpc_completion_queue *cq = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) return NULL;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    rpc_tag *t = ev.tag;
    ts_rpc_server *counted = t->counted; /* read before t may be freed */
    t->fn(t, ev.success);
    if (counted) rpc_server_tag_done(counted);
  }
}

static struct {
  pthread_mutex_t mu; /* guards all of the engine */
  grpc_completion_queue *cq;
  pthread_t threads[RPC_MAX_POLL_THREADS];
  int n_threads;
  int refs;
} engine = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Takes a reference on the engine, creating it if needed, with at least
 * `threads` pollers; *cq gets its queue. Undo with rpc_engine_release(). */
int rpc_engine_acquire(int threads, grpc_completion_queue **cq, ts_err *err) {
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
    rpc_engine_release();
    return ts_err_set(err, TS_ENOMEM, "cannot start a completion-queue "
                      "thread");
  }
  *cq = q;
  return 0;
}

/* Drops a reference; the last one shuts the queue down and joins its
 * pollers. Never called on a poller thread (servers and clients are freed
 * from their owners' threads). */
void rpc_engine_release(void) {
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
