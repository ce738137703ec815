/*
 * batcher.c - see batcher.h.
 *
 * When a batch closes. Each model has one open batch. It is dispatched,
 * on the submitting thread,
 *  1. when its rows reach max_batch (a request that would overflow it
 *     closes it first);
 *  2. at once, alone, if the model is quiet: nothing open, nothing in
 *     flight, and its last batch finished at least one window ago. After a
 *     quiet spell a lone request gains nothing by waiting; in a busy
 *     closed loop the clients of a batch that just finished come back
 *     together and fill the next one;
 *  3. otherwise batch_delay_us after its first request, by the loop's
 *     timer.
 * In the common case (1 and 2) no thread but the submitter is involved: no
 * hand-over and no wake-up per request. Measured with 32 closed-loop
 * clients on 2 busy cores, dispatching whenever the worker was idle (after
 * each completion) made batches of ~5 rows and cost ~20% of the throughput
 * that full batches give: the rows that would have filled the batch were
 * still in the sockets, unread, when the slot came free.
 *
 * Locks: b->mu guards every model_queue (items, rows, in_flight, last_done,
 * due), the queued count, `stopping` and `timer_due`. Batches are cut
 * under the lock and dispatched after it is released; nothing calls out
 * (dispatch, answers) with b->mu held, because dispatch may complete a batch
 * on the calling thread.
 *
 * The loop thread only runs the window timer: a submitter that opens a
 * batch sends one uv_async_send unless the timer is already armed for an
 * earlier time; the timer flushes batches whose window passed and re-arms
 * itself while some batch waits.
 *
 * Cancellation (ts_batcher_cancel, on an RPC poller thread): an item still
 * in its open batch leaves it under b->mu and is answered at once; an item
 * already cut into a batch is only flagged (its rows are dropped when the
 * batch answers), and a batch whose every item was cancelled has its
 * inference cancelled. An item's `cancelled`, `cancel_code` and `batch`,
 * and a batch's `n_cancelled` and `inf`, are under b->mu. Items stay valid
 * while a cancel runs: the frontend's answer waits for its cancellation
 * notice (rpc.h), and items are freed only after their answer.
 */
#include "batcher.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "exposition.h"
#include "fuse.h"
#include "log.h"
#include "metrics.h"

/* Outputs split without a heap allocation. */
#define STACK_OUTPUTS 8

typedef struct batch batch;

typedef struct ts_batch_item {
  struct ts_batch_item *next;
  ts_served_model *model;
  const ts_tensor *inputs;
  int64_t rows;
  int64_t deadline;
  ts_batch_done_fn done;
  void *user;
  bool cancelled;    /* under b->mu */
  int cancel_code;
  batch *batch;      /* the batch it was cut into; under b->mu */
  double submitted;  /* ts_metrics_now() at submit */
} item;

/* A model's open batch and its batches in flight (under b->mu). The queue
 * outlives every batch cut from it: queues are freed with the batcher. */
typedef struct model_queue {
  struct model_queue *next;
  const ts_served_model *model; /* key only: never dereferenced */
  item *head, *tail;
  int n;
  int64_t rows;
  int in_flight;
  int64_t last_done; /* ts_now_ms() when its last batch finished */
  int64_t due; /* ts_now_ms() when the open batch's window ends */
} model_queue;

/* A closed batch: items[0..n) in order, the rows of each, and the
 * concatenated inputs (n > 1). One allocation with the item pointers. */
struct batch {
  ts_batcher *b;
  model_queue *queue;
  ts_served_model *model;
  ts_tensor *concat;
  int n_concat;
  ts_dispatch *inf;   /* set under b->mu */
  int n_cancelled;    /* items cancelled once cut; under b->mu */
  double started;     /* ts_metrics_now() at dispatch */
  struct batch *next; /* batches cut together, dispatched in order */
  int n;
  item *items[];
};

struct ts_batcher {
  ts_membership *cluster;
  ts_dispatch_opts opts;
  int max_queue;
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t timer;
  pthread_t thread;
  pthread_mutex_t mu;
  model_queue *queues;
  int queued;       /* submitted, not yet answered */
  int stopping;
  int64_t timer_due; /* when the loop's timer fires (or is about to be
                        set to fire); 0: not armed */
  atomic_int in_flight; /* batches dispatched, not yet done */
};

int ts_batcher_accepts(const ts_served_model *m, const ts_tensor *inputs) {
  if (m->config.max_batch <= 0 || m->config.is_ensemble || m->n_inputs == 0)
    return 0;
  for (int i = 0; i < m->n_inputs; i++) {
    if (m->inputs[i].rank < 1 || m->inputs[i].dims[0] >= 0) return 0;
    if (inputs[i].dims[0] != inputs[0].dims[0]) return 0;
  }
  return inputs[0].dims[0] > 0 && inputs[0].dims[0] <= m->config.max_batch;
}

static int64_t window_ms(const ts_served_model *m) {
  return ((int64_t)m->config.batch_delay_us + 999) / 1000;
}

/* Fails every item of a list (no batch was dispatched for them). */
static void fail_items(ts_batcher *b, item *it, const ts_err *err) {
  int n = 0;
  for (item *next; it; it = next) {
    next = it->next;
    it->done(it->user, err, NULL, 0);
    free(it);
    n++;
  }
  pthread_mutex_lock(&b->mu);
  b->queued -= n;
  pthread_mutex_unlock(&b->mu);
}

/* Cuts q's open batch (b->mu held) and counts it in flight; NULL when the
 * batch is empty. On allocation failure the items are left on `*failed`. */
static batch *cut_locked(ts_batcher *b, model_queue *q, item **failed) {
  if (q->n == 0) return NULL;
  batch *bt = calloc(1, sizeof *bt + (size_t)q->n * sizeof bt->items[0]);
  if (!bt) {
    q->tail->next = *failed;
    *failed = q->head;
  } else {
    bt->b = b;
    bt->queue = q;
    bt->model = q->head->model;
    int i = 0;
    for (item *it = q->head; it; it = it->next) {
      bt->items[i++] = it;
      it->batch = bt;
    }
    bt->n = i;
    q->in_flight++;
    atomic_fetch_add(&b->in_flight, 1);
  }
  q->head = q->tail = NULL;
  q->n = 0;
  q->rows = 0;
  return bt;
}

static void on_batch_done(ts_dispatch *inf, void *user);

static void batch_free(batch *bt) {
  if (bt->inf) ts_dispatch_free(bt->inf);
  for (int i = 0; i < bt->n_concat; i++) ts_tensor_free(&bt->concat[i]);
  free(bt->concat);
  for (int i = 0; i < bt->n; i++) free(bt->items[i]);
  free(bt);
}

/* Frees a finished batch and counts it done in its queue. The caller
 * decrements b->in_flight once it no longer touches b (ts_batcher_free
 * waits on it). */
static void batch_release(batch *bt) {
  ts_batcher *b = bt->b;
  model_queue *q = bt->queue;
  int n = bt->n;
  batch_free(bt);
  pthread_mutex_lock(&b->mu);
  b->queued -= n;
  q->in_flight--;
  q->last_done = ts_now_ms();
  pthread_mutex_unlock(&b->mu);
}

/* Metrics (metrics.h): each request's wait, and the batch's rows. */
static void record_start(batch *bt) {
  int64_t rows = 0;
  bt->started = ts_metrics_now();
  for (int i = 0; i < bt->n; i++) {
    rows += bt->items[i]->rows;
    ts_coord_metrics_queue(bt->model->config.name,
                           bt->started - bt->items[i]->submitted);
  }
  ts_coord_metrics_batch(bt->model->config.name, rows);
}

/* Concatenates the inputs (n > 1) and starts the inference. On failure
 * answers every item and returns the error's batch for release. */
static batch *batch_start(batch *bt) {
  ts_batcher *b = bt->b;
  ts_served_model *m = bt->model;
  ts_err err = {0};
  int rc = TS_OK;
  int n = bt->n;
  /* The batch runs as long as its latest request waits; earlier deadlines
   * are each request's own (item_gone), never the others'. */
  int64_t deadline = 0;
  for (int i = 0; i < n; i++)
    if (bt->items[i]->deadline > deadline) deadline = bt->items[i]->deadline;
  const ts_tensor *inputs = bt->items[0]->inputs;
  if (n > 1) {
    bt->concat = calloc((size_t)m->n_inputs, sizeof *bt->concat);
    const ts_tensor **parts = calloc((size_t)n, sizeof *parts);
    if (!bt->concat || !parts) rc = ts_err_set(&err, TS_ENOMEM, "out of memory");
    for (int k = 0; rc == TS_OK && k < m->n_inputs; k++) {
      for (int j = 0; j < n; j++) parts[j] = &bt->items[j]->inputs[k];
      rc = ts_fuse_concat(parts, n, 0, &bt->concat[k], &err);
      if (rc == TS_OK) bt->n_concat = k + 1;
    }
    free(parts);
    inputs = bt->concat;
  }
  ts_dispatch *inf = NULL;
  if (rc == TS_OK) {
    inf = ts_dispatch_new(b->cluster, m, &b->opts, deadline, "batch");
    if (!inf) rc = ts_err_set(&err, TS_ENOMEM, "out of memory");
  }
  for (int k = 0; rc == TS_OK && k < m->n_inputs; k++)
    rc = ts_dispatch_add_input(inf, m->inputs[k].name, &inputs[k], &err);
  pthread_mutex_lock(&b->mu);
  bt->inf = inf;
  bool all_cancelled = bt->n_cancelled == n;
  pthread_mutex_unlock(&b->mu);
  if (rc == TS_OK && all_cancelled)
    ts_dispatch_cancel(inf, TS_ECANCELLED,
                       "every request of the batch was cancelled");
  if (rc) {
    for (int j = 0; j < n; j++) bt->items[j]->done(bt->items[j]->user, &err,
                                                   NULL, 0);
    return bt;
  }
  ts_log_debug("batch of %d request(s) for %s", n, m->config.name);
  record_start(bt);
  ts_dispatch_start(bt->inf, on_batch_done, bt);
  return NULL;
}

/* Dispatches batches in order, and fails the items of `failed`. */
static void dispatch(ts_batcher *b, batch *bt, item *failed) {
  int released = 0;
  while (bt) {
    batch *rest = bt->next;
    batch *done = batch_start(bt);
    if (done) {
      batch_release(done);
      released++;
    }
    bt = rest;
  }
  if (failed) {
    ts_err err;
    ts_err_set(&err, TS_ENOMEM, "out of memory");
    fail_items(b, failed, &err);
  }
  atomic_fetch_sub(&b->in_flight, released);
}

/* Whether nobody waits for this item's rows any more: its client cancelled
 * (err gets the cancel's code) or its own deadline passed (TS_ETIMEDOUT). */
static bool item_gone(ts_batcher *b, item *it, int64_t now, ts_err *err) {
  pthread_mutex_lock(&b->mu);
  bool cancelled = it->cancelled;
  int code = it->cancel_code;
  pthread_mutex_unlock(&b->mu);
  if (cancelled)
    ts_err_set(err, code, "the request was cancelled");
  else if (now >= it->deadline)
    ts_err_set(err, TS_ETIMEDOUT, "deadline passed while batched");
  return err->code != TS_OK;
}

/* Hands each request its rows of every output (zero-copy views into the
 * batch's outputs). */
static void on_batch_done(ts_dispatch *inf, void *user) {
  batch *bt = user;
  const ts_served_model *m = bt->model;
  ts_err err = *ts_dispatch_error(inf);
  int n_out = m->n_outputs;
  /* Per output: the batch's tensor, this request's view, its pointer. */
  struct out_slot {
    const ts_tensor *full;
    ts_tensor view;
  } stack[STACK_OUTPUTS], *outs = stack;
  const ts_tensor *stack_ptrs[STACK_OUTPUTS], **ptrs = stack_ptrs;
  if (n_out > STACK_OUTPUTS) {
    outs = malloc((size_t)n_out * sizeof *outs);
    ptrs = malloc((size_t)n_out * sizeof *ptrs);
    if (!err.code && (!outs || !ptrs))
      ts_err_set(&err, TS_ENOMEM, "out of memory");
  }
  int64_t total = 0;
  for (int i = 0; i < bt->n; i++) total += bt->items[i]->rows;
  for (int i = 0; i < bt->n; i++)
    ts_coord_metrics_compute(m->config.name, ts_metrics_now() - bt->started);
  for (int k = 0; !err.code && k < n_out; k++) {
    const ts_tensor *full = outs[k].full =
        ts_dispatch_value(inf, m->outputs[k].name);
    if (!full)
      ts_err_set(&err, TS_EINTERNAL, "the model produced no output '%s'",
                 m->outputs[k].name);
    else if (bt->n > 1 && (full->rank < 1 || full->dims[0] != total))
      ts_err_set(&err, TS_EINTERNAL,
                 "output '%s' does not keep the batch as its first dim; "
                 "model %s cannot be batched (set max_batch=0)",
                 m->outputs[k].name, m->config.name);
  }
  int64_t row0 = 0, now = ts_now_ms();
  for (int i = 0; i < bt->n; i++) {
    item *it = bt->items[i];
    ts_err own = {0};
    if (!err.code) item_gone(bt->b, it, now, &own);
    if (err.code || own.code) {
      it->done(it->user, err.code ? &err : &own, NULL, 0);
      row0 += it->rows;
      continue;
    }
    for (int k = 0; k < n_out; k++) {
      const ts_tensor *full = outs[k].full;
      ts_tensor *v = &outs[k].view;
      *v = *full;
      v->owned = false;
      if (bt->n > 1) {
        size_t row_bytes = full->dims[0] ? full->nbytes / (size_t)full->dims[0]
                                         : 0;
        v->dims[0] = it->rows;
        v->data = (uint8_t *)full->data + (size_t)row0 * row_bytes;
        v->nbytes = (size_t)it->rows * row_bytes;
      }
      ptrs[k] = v;
    }
    it->done(it->user, &err, ptrs, n_out);
    row0 += it->rows;
  }
  if (outs != stack) free(outs);
  if (ptrs != stack_ptrs) free(ptrs);
  /* The items' owners may have released the model by now: only the queue
   * and the batch itself are touched from here on. */
  ts_batcher *b = bt->b;
  batch_release(bt);
  atomic_fetch_sub(&b->in_flight, 1);
}

static model_queue *queue_for_locked(ts_batcher *b,
                                     const ts_served_model *m) {
  for (model_queue *q = b->queues; q; q = q->next)
    if (q->model == m) return q;
  model_queue *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  q->model = m;
  q->next = b->queues;
  b->queues = q;
  return q;
}

/* The earliest window end among waiting batches (b->mu held), or -1. */
static int64_t next_due_locked(ts_batcher *b) {
  int64_t due = -1;
  for (model_queue *q = b->queues; q; q = q->next)
    if (q->n && (due < 0 || q->due < due)) due = q->due;
  return due;
}

/* The window timer: cuts every batch whose window passed. */
static void on_timer(uv_timer_t *t) {
  ts_batcher *b = t->data;
  batch *head = NULL, **tail = &head;
  item *failed = NULL;
  int64_t now = ts_now_ms();
  pthread_mutex_lock(&b->mu);
  for (model_queue *q = b->queues; q; q = q->next) {
    if (!q->n || q->due > now) continue;
    batch *bt = cut_locked(b, q, &failed);
    if (bt) {
      *tail = bt;
      tail = &bt->next;
    }
  }
  int64_t due = next_due_locked(b);
  b->timer_due = due >= 0 ? due : 0;
  pthread_mutex_unlock(&b->mu);
  if (due >= 0)
    uv_timer_start(&b->timer, on_timer,
                   (uint64_t)(due > now ? due - now : 0), 0);
  dispatch(b, head, failed);
}

static void on_wake(uv_async_t *a) {
  ts_batcher *b = a->data;
  pthread_mutex_lock(&b->mu);
  int stopping = b->stopping;
  int64_t due = next_due_locked(b);
  if (!stopping) b->timer_due = due >= 0 ? due : 0;
  pthread_mutex_unlock(&b->mu);
  if (stopping) {
    uv_close((uv_handle_t *)&b->timer, NULL);
    uv_close((uv_handle_t *)&b->wake, NULL);
    return;
  }
  if (due < 0) {
    uv_timer_stop(&b->timer);
    return;
  }
  int64_t left = due - ts_now_ms();
  uv_timer_start(&b->timer, on_timer, (uint64_t)(left > 0 ? left : 0), 0);
}

static void *loop_thread(void *arg) {
  ts_batcher *b = arg;
  uv_run(&b->loop, UV_RUN_DEFAULT);
  return NULL;
}

int ts_batcher_create(ts_membership *cluster, const ts_dispatch_opts *opts,
                      int max_queue, ts_batcher **out, ts_err *err) {
  ts_batcher *b = calloc(1, sizeof *b);
  if (!b) return ts_err_set(err, TS_ENOMEM, "out of memory");
  b->cluster = cluster;
  if (opts) b->opts = *opts;
  b->max_queue = max_queue;
  pthread_mutex_init(&b->mu, NULL);
  if (uv_loop_init(&b->loop) != 0) {
    pthread_mutex_destroy(&b->mu);
    free(b);
    return ts_err_set(err, TS_EINTERNAL, "cannot create the batcher loop");
  }
  uv_async_init(&b->loop, &b->wake, on_wake);
  b->wake.data = b;
  uv_timer_init(&b->loop, &b->timer);
  b->timer.data = b;
  if (pthread_create(&b->thread, NULL, loop_thread, b) != 0) {
    uv_close((uv_handle_t *)&b->wake, NULL);
    uv_close((uv_handle_t *)&b->timer, NULL);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    pthread_mutex_destroy(&b->mu);
    free(b);
    return ts_err_set(err, TS_EINTERNAL, "cannot start the batcher thread");
  }
  *out = b;
  return TS_OK;
}

int ts_batcher_submit(ts_batcher *b, ts_served_model *m,
                      const ts_tensor *inputs, int64_t deadline,
                      ts_batch_done_fn done, void *user,
                      ts_batch_item **handle, ts_err *err) {
  item *it = malloc(sizeof *it);
  if (!it) return ts_err_set(err, TS_ENOMEM, "out of memory");
  *it = (item){.model = m, .inputs = inputs, .rows = inputs[0].dims[0],
               .deadline = deadline, .done = done, .user = user,
               .submitted = ts_metrics_now()};
  batch *head = NULL, *bt;
  item *failed = NULL;
  int wake = 0;
  pthread_mutex_lock(&b->mu);
  model_queue *q = NULL;
  if (b->stopping || b->queued >= b->max_queue ||
      !(q = queue_for_locked(b, m))) {
    int queued = b->queued, stopping = b->stopping;
    pthread_mutex_unlock(&b->mu);
    free(it);
    if (stopping)
      return ts_err_set(err, TS_EUNAVAILABLE, "the server is shutting down");
    if (queued < b->max_queue)
      return ts_err_set(err, TS_ENOMEM, "out of memory");
    return ts_err_set(err, TS_EEXHAUSTED,
                      "model %s: the batching queue is full (%d requests "
                      "waiting); retry later", m->config.name, queued);
  }
  b->queued++;
  if (handle) *handle = it; /* before anything can answer it */
  const ts_model_config *c = &m->config;
  int64_t now = ts_now_ms();
  /* Rule 2: a quiet model. */
  int quiet = q->n == 0 && q->in_flight == 0 &&
              now - q->last_done >= window_ms(m);
  /* Rule 1: a request that would overflow the open batch closes it. */
  if (q->n && q->rows + it->rows > c->max_batch)
    head = cut_locked(b, q, &failed);
  if (q->tail)
    q->tail->next = it;
  else
    q->head = it;
  q->tail = it;
  if (q->n++ == 0) q->due = now + window_ms(m);
  q->rows += it->rows;
  if (q->rows >= c->max_batch || quiet) {
    bt = cut_locked(b, q, &failed);
    if (head)
      head->next = bt;
    else
      head = bt;
  } else if (!b->timer_due || q->due < b->timer_due) {
    b->timer_due = q->due;
    wake = 1;
  }
  pthread_mutex_unlock(&b->mu);
  if (wake) uv_async_send(&b->wake);
  dispatch(b, head, failed);
  return TS_OK;
}

/* Takes `it` out of its model's open batch (b->mu held); false when it is
 * not there. */
static bool unqueue_locked(ts_batcher *b, item *it) {
  for (model_queue *q = b->queues; q; q = q->next) {
    if (q->model != it->model) continue;
    item *prev = NULL;
    for (item *x = q->head; x; prev = x, x = x->next) {
      if (x != it) continue;
      if (prev)
        prev->next = it->next;
      else
        q->head = it->next;
      if (q->tail == it) q->tail = prev;
      q->n--;
      q->rows -= it->rows;
      it->next = NULL;
      return true;
    }
  }
  return false;
}

void ts_batcher_cancel(ts_batcher *b, ts_batch_item *it, int code) {
  ts_dispatch *stop = NULL;
  bool dropped = false;
  pthread_mutex_lock(&b->mu);
  if (!it->cancelled) {
    it->cancelled = true;
    it->cancel_code = code;
    if (!it->batch) {
      dropped = unqueue_locked(b, it);
      if (dropped) b->queued--;
    } else if (++it->batch->n_cancelled == it->batch->n) {
      stop = it->batch->inf; /* NULL until batch_start made it; it checks */
    }
  }
  pthread_mutex_unlock(&b->mu);
  if (dropped) {
    /* Its window timer may still fire: an empty queue is skipped. */
    ts_err err;
    ts_err_set(&err, code, "the request was cancelled");
    it->done(it->user, &err, NULL, 0);
    free(it);
  }
  if (stop)
    ts_dispatch_cancel(stop, code, "every request of the batch was cancelled");
}

int ts_batcher_queued(ts_batcher *b) {
  pthread_mutex_lock(&b->mu);
  int n = b->queued;
  pthread_mutex_unlock(&b->mu);
  return n;
}

void ts_batcher_free(ts_batcher *b) {
  if (!b) return;
  batch *head = NULL, **tail = &head;
  item *failed = NULL;
  pthread_mutex_lock(&b->mu);
  b->stopping = 1;
  for (model_queue *q = b->queues; q; q = q->next) {
    batch *bt = cut_locked(b, q, &failed);
    if (bt) {
      *tail = bt;
      tail = &bt->next;
    }
  }
  pthread_mutex_unlock(&b->mu);
  dispatch(b, head, failed);
  uv_async_send(&b->wake);
  pthread_join(b->thread, NULL);
  /* Batches still running answer on the client's poller thread. */
  while (atomic_load(&b->in_flight) > 0) uv_sleep(5);
  uv_loop_close(&b->loop);
  for (model_queue *q = b->queues, *next; q; q = next) {
    next = q->next;
    free(q);
  }
  pthread_mutex_destroy(&b->mu);
  free(b);
}
