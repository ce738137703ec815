/*
 * pool.c - fixed kernel-thread pool with a bounded FIFO queue.
 *
 * Threads and locks: one mutex guards the queue, the counters and the flags;
 * `work` wakes kernel threads, `idle` wakes ts_pool_wait_idle(). Callbacks
 * always run without the mutex held, so they may take their time and may
 * call back into RPC code.
 *
 * Kernel budget: the N threads are also the budget of intra-op parallelism
 * (common/engine/parallel.h): a thread that runs a job holds one of the N
 * places; a job's big ops borrow the places of idle threads as helpers
 * (N - 1 helper threads, asleep when unused), so a lone run uses all N and
 * N concurrent runs one each; at most N threads ever run kernels.
 *
 * Invariants (under mu): queued == length of head..tail <= capacity;
 * running == threads inside a run() or skip() callback they dequeued.
 */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "log.h"
#include "parallel.h"
#include "rpc.h"

struct ts_pool {
  pthread_mutex_t mu;
  pthread_cond_t work;
  pthread_cond_t idle;
  ts_pool_job *head, *tail;
  int queued, running, capacity;
  int64_t last_submit_ms; /* ts_now_ms() of the last accepted job */
  int closed;   /* no more submissions */
  int stopping; /* threads exit once the queue is empty */
  int n_threads;  /* started */
  int n_sessions; /* created */
  pthread_t *threads;
  ts_session **sessions;
};

typedef struct thread_arg {
  ts_pool *pool;
  ts_session *session;
} thread_arg;

/* Runs or skips one dequeued job; the deadline and cancellation are checked
 * here, at the last moment before any kernel runs. */
static void dispatch(ts_pool_job *job, ts_session *session) {
  if (job->is_cancelled && job->is_cancelled(job)) {
    job->skip(job, TS_ECANCELLED, "the call was cancelled before it ran");
    return;
  }
  if (job->deadline != TS_DEADLINE_NONE && ts_now_ms() >= job->deadline) {
    job->skip(job, TS_ETIMEDOUT,
              "the deadline passed while the run waited for a kernel thread");
    return;
  }
  job->run(job, session);
}

static void *pool_thread(void *arg) {
  ts_pool *p = ((thread_arg *)arg)->pool;
  ts_session *session = ((thread_arg *)arg)->session;
  free(arg);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->head && !p->stopping) pthread_cond_wait(&p->work, &p->mu);
    ts_pool_job *job = p->head;
    if (!job) break; /* stopping and drained */
    p->head = job->next;
    if (!p->head) p->tail = NULL;
    p->queued--;
    p->running++;
    pthread_mutex_unlock(&p->mu);
    job->next = NULL;
    /* A run holds a place in the kernel budget; the places of idle kernel
     * threads are what its big ops borrow helpers from (parallel.h). */
    ts_parallel_enter();
    dispatch(job, session);
    ts_parallel_leave();
    pthread_mutex_lock(&p->mu);
    p->running--;
    if (p->running == 0 && p->queued == 0) pthread_cond_broadcast(&p->idle);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int ts_pool_create(int threads, int queue_capacity, ts_pool **out,
                   ts_err *err) {
  *out = NULL;
  if (threads < 1 || queue_capacity < 1)
    return ts_err_set(err, TS_EINVAL,
                      "pool needs at least one thread and one queue slot "
                      "(threads %d, queue %d)", threads, queue_capacity);
  ts_pool *p = calloc(1, sizeof *p);
  if (!p) return ts_err_set(err, TS_ENOMEM, "cannot allocate the pool");
  p->threads = calloc((size_t)threads, sizeof *p->threads);
  p->sessions = calloc((size_t)threads, sizeof *p->sessions);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work, NULL);
  pthread_cond_init(&p->idle, NULL);
  p->capacity = queue_capacity;
  int rc = TS_OK;
  if (!p->threads || !p->sessions)
    rc = ts_err_set(err, TS_ENOMEM, "cannot allocate %d threads", threads);
  for (int i = 0; rc == TS_OK && i < threads; i++) {
    rc = ts_session_create(&p->sessions[i], err);
    if (rc == TS_OK) p->n_sessions++;
  }
  /* The budget is the kernel threads: runs and the helpers their ops
   * borrow share it, and OpenBLAS adds none of its own. */
  ts_blas_set_threads(1);
  if (ts_parallel_set_threads(threads) < threads)
    ts_log_warn("only %d of %d kernel threads can help a run's ops",
                ts_parallel_threads(), threads);
  for (int i = 0; rc == TS_OK && i < threads; i++) {
    thread_arg *a = malloc(sizeof *a);
    if (!a) {
      rc = ts_err_set(err, TS_ENOMEM, "cannot start kernel thread %d", i);
      break;
    }
    a->pool = p;
    a->session = p->sessions[i];
    if (pthread_create(&p->threads[i], NULL, pool_thread, a) != 0) {
      free(a);
      rc = ts_err_set(err, TS_EINTERNAL, "cannot start kernel thread %d", i);
      break;
    }
    p->n_threads++;
  }
  if (rc) {
    ts_pool_free(p);
    return rc;
  }
  *out = p;
  return TS_OK;
}

int ts_pool_submit(ts_pool *p, ts_pool_job *job, ts_err *err) {
  pthread_mutex_lock(&p->mu);
  int rc = TS_OK;
  if (p->closed) {
    rc = ts_err_set(err, TS_EUNAVAILABLE,
                    "worker is shutting down and takes no new runs");
  } else if (p->queued >= p->capacity) {
    rc = ts_err_set(err, TS_EEXHAUSTED,
                    "run queue is full (%d runs waiting for %d kernel "
                    "threads)", p->queued, p->n_threads);
  } else {
    job->next = NULL;
    if (p->tail)
      p->tail->next = job;
    else
      p->head = job;
    p->tail = job;
    p->queued++;
    p->last_submit_ms = ts_now_ms();
    pthread_cond_signal(&p->work);
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void ts_pool_close(ts_pool *p) {
  pthread_mutex_lock(&p->mu);
  p->closed = 1;
  pthread_mutex_unlock(&p->mu);
}

int ts_pool_wait_idle(ts_pool *p, int64_t deadline) {
  pthread_mutex_lock(&p->mu);
  int rc = TS_OK;
  while (p->queued > 0 || p->running > 0) {
    int64_t left = deadline - ts_now_ms();
    if (left <= 0) {
      rc = TS_ETIMEDOUT;
      break;
    }
    /* The condition variable runs on CLOCK_REALTIME; wait in slices so a
     * clock jump cannot stretch the wait. */
    if (left > 100) left = 100;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    ts.tv_sec += left / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&p->idle, &p->mu, &ts);
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int ts_pool_cancel(ts_pool *p, ts_pool_job *job, const char *why) {
  pthread_mutex_lock(&p->mu);
  ts_pool_job *prev = NULL, *it = p->head;
  while (it && it != job) {
    prev = it;
    it = it->next;
  }
  if (it) {
    if (prev)
      prev->next = job->next;
    else
      p->head = job->next;
    if (p->tail == job) p->tail = prev;
    p->queued--;
    if (p->running == 0 && p->queued == 0) pthread_cond_broadcast(&p->idle);
  }
  pthread_mutex_unlock(&p->mu);
  if (!it) return 0;
  job->next = NULL;
  job->skip(job, TS_ECANCELLED, why);
  return 1;
}

void ts_pool_cancel_queued(ts_pool *p) {
  pthread_mutex_lock(&p->mu);
  ts_pool_job *list = p->head;
  p->head = p->tail = NULL;
  p->queued = 0;
  if (p->running == 0) pthread_cond_broadcast(&p->idle);
  pthread_mutex_unlock(&p->mu);
  while (list) {
    ts_pool_job *next = list->next;
    list->next = NULL;
    list->skip(list, TS_EUNAVAILABLE, "the worker is shutting down");
    list = next;
  }
}

int ts_pool_wait_quiet(ts_pool *p, int64_t quiet_ms, int64_t deadline) {
  for (;;) {
    pthread_mutex_lock(&p->mu);
    int64_t now = ts_now_ms();
    int quiet = p->queued == 0 && p->running == 0 &&
                now - p->last_submit_ms >= quiet_ms;
    pthread_mutex_unlock(&p->mu);
    if (quiet) return TS_OK;
    if (now >= deadline) return TS_ETIMEDOUT;
    struct timespec nap = {0, 20 * 1000000L};
    nanosleep(&nap, NULL);
  }
}

void ts_pool_stats(ts_pool *p, int *threads, int *queued, int *running) {
  pthread_mutex_lock(&p->mu);
  if (threads) *threads = p->n_threads;
  if (queued) *queued = p->queued;
  if (running) *running = p->running;
  pthread_mutex_unlock(&p->mu);
}

void ts_pool_free(ts_pool *p) {
  if (!p) return;
  ts_pool_close(p);
  ts_pool_cancel_queued(p);
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
  for (int i = 0; i < p->n_sessions; i++) ts_session_free(p->sessions[i]);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->idle);
  pthread_mutex_destroy(&p->mu);
  free(p->threads);
  free(p->sessions);
  free(p);
}
