/*
 * rpc_offload.c - the control pool behind ts_rpc_call_offload
 * (rpc_message.h): a few threads and a bounded queue for the handlers
 * whose work blocks on the network (worker registration, model loads),
 * instead of a thread per call.
 *
 * Why bounded: each such call may block for seconds (a registration waits
 * up to 5 s for the worker's Status; a load uploads shards), so one
 * detached thread per call let any caller start threads without bound.
 * Now at most TS_RPC_OFFLOAD_THREADS run at once and TS_RPC_OFFLOAD_QUEUE
 * wait, in
 * arrival order; one more is refused at once with RESOURCE_EXHAUSTED
 * "control queue full", and the daemon goes on serving everything else
 * (inference never passes through this pool).
 *
 * Threads and locks: one mutex guards the ring, the counters and the
 * stopping flag. The threads start on first use, never exit and are
 * never joined: they live as long as the process. ts_rpc_offload_stop
 * answers the jobs still queued UNAVAILABLE (freeing their argument, which
 * comes from malloc) and waits a bounded time for the running ones, so
 * that a daemon can free what they use after.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "rpc.h"

typedef struct offload_job {
  ts_rpc_call *call;
  void *(*fn)(void *);
  void *arg;
} offload_job;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t work; /* a job was queued, or stop began */
  pthread_cond_t idle; /* a job finished */
  offload_job ring[TS_RPC_OFFLOAD_QUEUE];
  int head, queued;    /* ring[head] is the oldest of `queued` jobs */
  int threads, running;
  bool stopping;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .work = PTHREAD_COND_INITIALIZER,
          .idle = PTHREAD_COND_INITIALIZER};

static void *offload_thread(void *unused) {
  (void)unused;
  pthread_mutex_lock(&pool.mu);
  for (;;) {
    while (pool.queued == 0) pthread_cond_wait(&pool.work, &pool.mu);
    offload_job job = pool.ring[pool.head];
    pool.head = (pool.head + 1) % TS_RPC_OFFLOAD_QUEUE;
    pool.queued--;
    pool.running++;
    pthread_mutex_unlock(&pool.mu);
    job.fn(job.arg);
    pthread_mutex_lock(&pool.mu);
    pool.running--;
    pthread_cond_broadcast(&pool.idle);
  }
  return NULL;
}

/* Starts threads up to OFFLOAD_THREADS; pool.mu held. 0 when at least
 * one runs. */
static int start_threads_locked(void) {
  while (pool.threads < TS_RPC_OFFLOAD_THREADS) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, offload_thread, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) break;
    pool.threads++;
  }
  return pool.threads > 0 ? 0 : -1;
}

int ts_rpc_call_offload(ts_rpc_call *call, void *(*fn)(void *), void *arg) {
  pthread_mutex_lock(&pool.mu);
  char refused[160] = "";
  int code = TS_EEXHAUSTED;
  if (pool.stopping) {
    snprintf(refused, sizeof refused, "the daemon is stopping");
    code = TS_EUNAVAILABLE;
  } else if (start_threads_locked() != 0) {
    snprintf(refused, sizeof refused, "cannot start a control thread");
  } else if (pool.queued == TS_RPC_OFFLOAD_QUEUE) {
    snprintf(refused, sizeof refused,
             "control queue full: %d control calls run and %d wait; try "
             "again later", TS_RPC_OFFLOAD_THREADS, TS_RPC_OFFLOAD_QUEUE);
  } else {
    pool.ring[(pool.head + pool.queued) % TS_RPC_OFFLOAD_QUEUE] =
        (offload_job){call, fn, arg};
    pool.queued++;
    pthread_cond_signal(&pool.work);
  }
  pthread_mutex_unlock(&pool.mu);
  if (!refused[0]) return 0;
  ts_rpc_call_fail(call, code, refused);
  return -1;
}

void ts_rpc_offload_stop(int64_t wait_ms) {
  pthread_mutex_lock(&pool.mu);
  pool.stopping = true;
  int dropped = pool.queued;
  offload_job jobs[TS_RPC_OFFLOAD_QUEUE];
  for (int i = 0; i < dropped; i++)
    jobs[i] = pool.ring[(pool.head + i) % TS_RPC_OFFLOAD_QUEUE];
  pool.queued = 0;
  int64_t until = ts_now_ms() + wait_ms;
  while (pool.running > 0 && ts_now_ms() < until) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&pool.idle, &pool.mu, &ts);
  }
  int running = pool.running;
  pthread_mutex_unlock(&pool.mu);
  for (int i = 0; i < dropped; i++) {
    ts_rpc_call_fail(jobs[i].call, TS_EUNAVAILABLE, "the daemon is stopping");
    free(jobs[i].arg);
  }
  if (dropped || running)
    ts_log_warn("control pool stopped: %d queued call(s) answered "
                "UNAVAILABLE, %d still running", dropped, running);
}
