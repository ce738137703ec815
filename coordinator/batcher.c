/* batcher.c - see batcher.h.
 *
 * Cancellation: an item's `cancelled`, `cancel_code` and `batch`, a batch's
 * n_cancelled and inf, and the batcher's `cancels` are guarded by b->mu.
 * ts_batcher_cancel runs on an RPC poller thread: an item still queued
 * (batch == NULL) is only flagged, and the loop thread, woken, takes it out
 * of its queue (drop_cancelled) and answers it; an item in a batch is
 * counted, and the batch's inference is cancelled when all its items are.
 * Items stay valid while the cancel runs: the frontend's answer waits for
 * its cancellation notice (rpc.h), and items are freed only after their
 * answer. Nothing answers with b->mu held. */
#include "batcher.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "fuse.h"
#include "log.h"

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
  batch *batch;      /* the batch it went into; under b->mu */
} item;

/* An open batch per model, touched only on the batcher's loop thread. */
typedef struct model_queue {
  struct model_queue *next;
  ts_served_model *model;     /* key; not referenced (items hold refs) */
  uv_timer_t timer;
  item *head, *tail;
  int n;
  int64_t rows;
  ts_batcher *b;
} model_queue;

/* A closed batch in flight. */
struct batch {
  ts_batcher *b;
  ts_served_model *model;
  item **items;
  int n;
  int n_cancelled;            /* items cancelled since; under b->mu */
  ts_tensor *concat;          /* owned concatenated inputs (n > 1) */
  int n_concat;
  ts_infer *inf;              /* set under b->mu */
};

struct ts_batcher {
  ts_cluster *cluster;
  ts_dispatch_opts opts;
  int max_queue;
  uv_loop_t loop;
  uv_async_t wake;
  pthread_t thread;
  pthread_mutex_t mu;         /* guards incoming, queued, stopping, cancels */
  item *incoming_head, *incoming_tail;
  int queued;                 /* submitted, not yet answered */
  int stopping;
  int cancels;                /* items cancelled while queued, not dropped */
  model_queue *queues;
  atomic_int in_flight;       /* batches dispatched, not yet done */
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

static void answer(item *it, const ts_err *err, const ts_tensor *const *outs,
                   int n) {
  it->done(it->user, err, outs, n);
}

static void batch_free(batch *bt) {
  if (bt->inf) ts_infer_free(bt->inf);
  for (int i = 0; i < bt->n_concat; i++) ts_tensor_free(&bt->concat[i]);
  free(bt->concat);
  for (int i = 0; i < bt->n; i++) free(bt->items[i]);
  free(bt->items);
  free(bt);
}

static void release_slots(ts_batcher *b, int n) {
  pthread_mutex_lock(&b->mu);
  b->queued -= n;
  pthread_mutex_unlock(&b->mu);
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

/* Takes the cancelled items out of q and answers them (loop thread). */
static void drop_cancelled(model_queue *q) {
  ts_batcher *b = q->b;
  item *dropped = NULL;
  int n = 0;
  pthread_mutex_lock(&b->mu);
  item **link = &q->head;
  q->tail = NULL;
  while (*link) {
    item *it = *link;
    if (it->cancelled) {
      *link = it->next;
      it->next = dropped;
      dropped = it;
      q->n--;
      q->rows -= it->rows;
      n++;
    } else {
      q->tail = it;
      link = &it->next;
    }
  }
  pthread_mutex_unlock(&b->mu);
  if (q->n == 0) uv_timer_stop(&q->timer);
  for (item *it = dropped, *next; it; it = next) {
    next = it->next;
    ts_err err = {0};
    item_gone(b, it, ts_now_ms(), &err);
    answer(it, &err, NULL, 0);
    free(it);
  }
  if (n) release_slots(b, n);
}

/* Hands each request its rows of every output. */
static void on_batch_done(ts_infer *inf, void *user) {
  batch *bt = user;
  ts_batcher *b = bt->b;
  const ts_served_model *m = bt->model;
  const ts_err *e = ts_infer_error(inf);
  ts_err err = *e;
  int n_out = m->n_outputs;
  const ts_tensor **full = calloc((size_t)n_out + 1, sizeof *full);
  ts_tensor *views = calloc((size_t)n_out + 1, sizeof *views);
  const ts_tensor **ptrs = calloc((size_t)n_out + 1, sizeof *ptrs);
  if (!err.code && (!full || !views || !ptrs))
    ts_err_set(&err, TS_ENOMEM, "out of memory");
  int64_t total = 0;
  for (int i = 0; i < bt->n; i++) total += bt->items[i]->rows;
  for (int k = 0; !err.code && k < n_out; k++) {
    full[k] = ts_infer_value(inf, m->outputs[k].name);
    if (!full[k])
      ts_err_set(&err, TS_EINTERNAL, "the model produced no output '%s'",
                 m->outputs[k].name);
    else if (bt->n > 1 && (full[k]->rank < 1 || full[k]->dims[0] != total))
      ts_err_set(&err, TS_EINTERNAL,
                 "output '%s' does not keep the batch as its first dim; "
                 "model %s cannot be batched (set max_batch=0)",
                 m->outputs[k].name, m->config.name);
  }
  int64_t row0 = 0, now = ts_now_ms();
  for (int i = 0; i < bt->n; i++) {
    item *it = bt->items[i];
    ts_err own = {0};
    if (!err.code) item_gone(b, it, now, &own);
    if (err.code || own.code) {
      answer(it, err.code ? &err : &own, NULL, 0);
      row0 += it->rows;
      continue;
    }
    for (int k = 0; k < n_out; k++) {
      views[k] = *full[k];
      views[k].owned = false;
      if (bt->n > 1) {
        size_t row_bytes = full[k]->dims[0] ? full[k]->nbytes /
                                                  (size_t)full[k]->dims[0]
                                            : 0;
        views[k].dims[0] = it->rows;
        views[k].data = (uint8_t *)full[k]->data + (size_t)row0 * row_bytes;
        views[k].nbytes = (size_t)it->rows * row_bytes;
      }
      ptrs[k] = &views[k];
    }
    answer(it, &err, ptrs, n_out);
    row0 += it->rows;
  }
  free(full);
  free(views);
  free(ptrs);
  int n = bt->n;
  batch_free(bt);
  release_slots(b, n);
  atomic_fetch_sub(&b->in_flight, 1);
}

/* Closes the open batch of q and dispatches it (loop thread). */
static void flush(model_queue *q) {
  ts_batcher *b = q->b;
  uv_timer_stop(&q->timer);
  drop_cancelled(q);
  if (q->n == 0) return;
  batch *bt = calloc(1, sizeof *bt);
  item **items = calloc((size_t)q->n, sizeof *items);
  ts_err err = {0};
  int n = q->n;
  if (!bt || !items) {
    free(bt);
    free(items);
    ts_err_set(&err, TS_ENOMEM, "out of memory");
    for (item *it = q->head, *next; it; it = next) {
      next = it->next;
      answer(it, &err, NULL, 0);
      free(it);
    }
    q->head = q->tail = NULL;
    q->n = 0;
    q->rows = 0;
    release_slots(b, n);
    return;
  }
  bt->b = b;
  bt->model = q->model;
  bt->items = items;
  bt->n = n;
  /* The batch runs as long as its latest request waits; earlier deadlines
   * are each request's own (item_gone), never the others'. */
  int64_t deadline = 0;
  int i = 0;
  pthread_mutex_lock(&b->mu);
  for (item *it = q->head; it; it = it->next) {
    items[i++] = it;
    it->batch = bt;
    if (it->cancelled) bt->n_cancelled++; /* cancelled since the drop */
    if (it->deadline > deadline) deadline = it->deadline;
  }
  pthread_mutex_unlock(&b->mu);
  q->head = q->tail = NULL;
  q->n = 0;
  q->rows = 0;

  const ts_served_model *m = bt->model;
  int rc = TS_OK;
  const ts_tensor *inputs = items[0]->inputs;
  if (n > 1) {
    bt->concat = calloc((size_t)m->n_inputs, sizeof *bt->concat);
    const ts_tensor **parts = calloc((size_t)n, sizeof *parts);
    if (!bt->concat || !parts) rc = ts_err_set(&err, TS_ENOMEM, "out of memory");
    for (int k = 0; rc == TS_OK && k < m->n_inputs; k++) {
      for (int j = 0; j < n; j++) parts[j] = &items[j]->inputs[k];
      rc = ts_fuse_concat(parts, n, 0, &bt->concat[k], &err);
      if (rc == TS_OK) bt->n_concat = k + 1;
    }
    free(parts);
    inputs = bt->concat;
  }
  ts_infer *inf = NULL;
  if (rc == TS_OK) {
    inf = ts_infer_new(b->cluster, bt->model, &b->opts, deadline, "batch");
    if (!inf) rc = ts_err_set(&err, TS_ENOMEM, "out of memory");
  }
  for (int k = 0; rc == TS_OK && k < m->n_inputs; k++)
    rc = ts_infer_add_input(inf, m->inputs[k].name, &inputs[k], &err);
  pthread_mutex_lock(&b->mu);
  bt->inf = inf;
  bool all_cancelled = bt->n_cancelled == n;
  pthread_mutex_unlock(&b->mu);
  if (rc == TS_OK && all_cancelled)
    ts_infer_cancel(inf, TS_ECANCELLED, "every request of the batch was "
                    "cancelled");
  if (rc) {
    for (int j = 0; j < n; j++) answer(items[j], &err, NULL, 0);
    batch_free(bt);
    release_slots(b, n);
    return;
  }
  atomic_fetch_add(&b->in_flight, 1);
  ts_log_debug("batch of %d request(s) for %s", n, m->config.name);
  ts_infer_start(bt->inf, on_batch_done, bt);
}

static void on_timer(uv_timer_t *t) { flush(t->data); }

static model_queue *queue_for(ts_batcher *b, ts_served_model *m) {
  for (model_queue *q = b->queues; q; q = q->next)
    if (q->model == m) return q;
  model_queue *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  q->model = m;
  q->b = b;
  uv_timer_init(&b->loop, &q->timer);
  q->timer.data = q;
  q->next = b->queues;
  b->queues = q;
  return q;
}

static void on_wake(uv_async_t *a) {
  ts_batcher *b = a->data;
  pthread_mutex_lock(&b->mu);
  item *it = b->incoming_head;
  b->incoming_head = b->incoming_tail = NULL;
  int stopping = b->stopping;
  pthread_mutex_unlock(&b->mu);
  pthread_mutex_lock(&b->mu);
  bool scan = b->cancels > 0;
  b->cancels = 0;
  pthread_mutex_unlock(&b->mu);
  for (item *next; it; it = next) {
    next = it->next;
    it->next = NULL;
    model_queue *q = queue_for(b, it->model);
    if (!q) {
      ts_err err;
      ts_err_set(&err, TS_ENOMEM, "out of memory");
      answer(it, &err, NULL, 0);
      free(it);
      release_slots(b, 1);
      continue;
    }
    const ts_model_config *c = &it->model->config;
    if (q->n && q->rows + it->rows > c->max_batch) flush(q);
    if (q->tail)
      q->tail->next = it;
    else
      q->head = it;
    q->tail = it;
    q->n++;
    q->rows += it->rows;
    if (q->rows >= c->max_batch)
      flush(q);
    else if (q->n == 1)
      uv_timer_start(&q->timer, on_timer,
                     (uint64_t)(c->batch_delay_us + 999) / 1000, 0);
  }
  if (scan)
    for (model_queue *q = b->queues; q; q = q->next) drop_cancelled(q);
  if (stopping) {
    for (model_queue *q = b->queues; q; q = q->next) {
      flush(q);
      uv_close((uv_handle_t *)&q->timer, NULL);
    }
    uv_close((uv_handle_t *)&b->wake, NULL);
  }
}

static void *loop_thread(void *arg) {
  ts_batcher *b = arg;
  uv_run(&b->loop, UV_RUN_DEFAULT);
  return NULL;
}

int ts_batcher_create(ts_cluster *cluster, const ts_dispatch_opts *opts,
                      int max_queue, ts_batcher **out, ts_err *err) {
  ts_batcher *b = calloc(1, sizeof *b);
  if (!b) return ts_err_set(err, TS_ENOMEM, "out of memory");
  b->cluster = cluster;
  if (opts) b->opts = *opts;
  b->max_queue = max_queue;
  pthread_mutex_init(&b->mu, NULL);
  if (uv_loop_init(&b->loop) != 0) {
    free(b);
    return ts_err_set(err, TS_EINTERNAL, "cannot create the batcher loop");
  }
  uv_async_init(&b->loop, &b->wake, on_wake);
  b->wake.data = b;
  if (pthread_create(&b->thread, NULL, loop_thread, b) != 0) {
    uv_close((uv_handle_t *)&b->wake, NULL);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
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
  item *it = calloc(1, sizeof *it);
  if (!it) return ts_err_set(err, TS_ENOMEM, "out of memory");
  it->model = m;
  it->inputs = inputs;
  it->rows = inputs[0].dims[0];
  it->deadline = deadline;
  it->done = done;
  it->user = user;
  pthread_mutex_lock(&b->mu);
  if (b->stopping || b->queued >= b->max_queue) {
    int queued = b->queued, stopping = b->stopping;
    pthread_mutex_unlock(&b->mu);
    free(it);
    if (stopping)
      return ts_err_set(err, TS_EUNAVAILABLE, "the server is shutting down");
    return ts_err_set(err, TS_EEXHAUSTED,
                      "model %s: the batching queue is full (%d requests "
                      "waiting); retry later", m->config.name, queued);
  }
  b->queued++;
  if (handle) *handle = it; /* before the loop thread can see it */
  if (b->incoming_tail)
    b->incoming_tail->next = it;
  else
    b->incoming_head = it;
  b->incoming_tail = it;
  pthread_mutex_unlock(&b->mu);
  uv_async_send(&b->wake);
  return TS_OK;
}

void ts_batcher_cancel(ts_batcher *b, ts_batch_item *it, int code) {
  ts_infer *stop = NULL;
  bool wake = false;
  pthread_mutex_lock(&b->mu);
  if (!it->cancelled) {
    it->cancelled = true;
    it->cancel_code = code;
    if (!it->batch) {
      b->cancels++;
      wake = !b->stopping;
    } else if (++it->batch->n_cancelled == it->batch->n) {
      stop = it->batch->inf; /* NULL until flush made it; flush checks */
    }
  }
  pthread_mutex_unlock(&b->mu);
  if (wake) uv_async_send(&b->wake);
  if (stop)
    ts_infer_cancel(stop, code, "every request of the batch was cancelled");
}

void ts_batcher_free(ts_batcher *b) {
  if (!b) return;
  pthread_mutex_lock(&b->mu);
  b->stopping = 1;
  pthread_mutex_unlock(&b->mu);
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
